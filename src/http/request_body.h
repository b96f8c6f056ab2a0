// A request body kept for Lua (ngx.req.get_body_data, get_body_file,
// set_body_*, init/append/finish_body, $request_body): in memory up to a
// limit (client_body_buffer_size); past it, everything goes to a temp file
// under client_body_temp_path, written with plain blocking write() in
// limit-sized pieces as nginx does, so memory stays bounded by the limit.
//
// Owns its temp file: reset() and the destructor delete it (the request
// ended, the client went away, the worker stops). A file handed over by
// ngx.req.set_body_file is deleted only when asked (auto_clean).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tidegate::http {

class RequestBody {
 public:
  RequestBody() = default;
  ~RequestBody() { reset(); }
  RequestBody(const RequestBody&) = delete;
  RequestBody& operator=(const RequestBody&) = delete;

  // Keeps what append() is given from now on: up to `memory_limit` bytes in
  // memory, then in a new file under `temp_dir` (made if missing). Drops
  // what was kept before (and its file). `temp_dir` must outlive the body
  // (it is the conf's).
  void start(uint64_t memory_limit, const std::string* temp_dir);
  bool keeping() const { return keeping_; }
  // False once writing failed (error() says why; nothing more is kept).
  bool append(std::string_view data);
  // Writes what still waits in memory to the file, if the body went to
  // one. False on a write error.
  bool flush();
  // No more append() until the next start(); closes the file (the path
  // stays, for get_body_file).
  void seal();
  // The body went to a file during the last append() (for nginx's
  // "buffered to a temporary file" warning); cleared by the call.
  bool takeSpilled();
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

  // Lua's view of the body: "read" once ngx.req.read_body ran (or
  // lua_need_request_body is on); "discarded" after ngx.req.discard_body.
  bool read() const { return read_; }
  void markRead() {
    read_ = true;
    dirty_ = true;
  }
  bool discarded() const { return discarded_; }
  void discard();

  bool inFile() const { return !path_.empty(); }
  const std::string& data() const { return data_; }  // when !inFile()
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // ngx.req.set_body_data: the body becomes `data`, in memory.
  void setData(std::string_view data);
  // ngx.req.set_body_file: the body becomes the file at `path`; with
  // `clean`, it is deleted when the request ends. False with *err
  // ("open() \"path\" failed (2: No such file or directory)").
  bool setFile(const std::string& path, bool clean, std::string* err);

  // Forgets the body and deletes the file if it is ours. Between
  // requests; strings keep a bounded capacity.
  void reset();

 private:
  bool openTempFile();
  bool writeAll(std::string_view data);
  void dropFile();

  // Anything changed since reset(): start() resets only then. The fields
  // start() and reset() read first come first, so that a request whose body was reset at
  // the end of the last one touches one cache line of it here (with many
  // connections that line is cold; bench/cache_misses.sh).
  bool dirty_ = false;
  bool keeping_ = false;
  bool spilled_ = false;
  bool failed_ = false;
  bool read_ = false;
  bool discarded_ = false;
  bool clean_ = true;  // delete path_ when done
  int fd_ = -1;
  uint64_t limit_ = 0;
  const std::string* temp_dir_ = nullptr;
  std::string path_;  // with fd_, what reset() reads first
  uint64_t size_ = 0;
  std::string data_;  // the body, or the part not yet written to the file
  std::string error_;
};

}  // namespace tidegate::http
