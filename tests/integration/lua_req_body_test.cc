// The request body kept for Lua: a large body goes to a temp file with the
// worker's memory bounded by client_body_buffer_size, and the file is
// deleted when the request ends or the client leaves mid-body. The access
// log after ngx.exec and ngx.req.set_* (original request line, final
// status, the changed headers and method).
#include <dirent.h>
#include <gtest/gtest.h>

#include <string>

#include "harness.h"

namespace tidegate::test {
namespace {

constexpr size_t kBigBody = 5 * 1024 * 1024;

// Files in a directory (0 if it does not exist).
int fileCount(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  int n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n;
}

const char* kUpload = R"(
    client_max_body_size 10m;
    location /up {
        content_by_lua_block {
            ngx.req.read_body()
            local path = ngx.req.get_body_file()
            -- Looked at without reading it all: the test measures the
            -- worker's memory, which a 5 MB Lua string would spoil.
            local f = io.open(path, "rb")
            local size = f:seek("end")
            f:seek("set", size - 16)
            local tail = f:read(16)
            f:seek("set", 0)
            local head = f:read(16)
            f:close()
            local ok = head == "0123456789abcdef" and tail == head
            ngx.say(path, " ", size, " ", ok, " ", tostring(ngx.req.get_body_data()))
        }
    }
)";

TEST(LuaReqBodyTest, LargeBodyGoesToATempFileWithBoundedMemoryAndIsDeletedAfterTheRequest) {
  Gateway gw;
  gw.setSimpleConf(kUpload);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(gw.workerPids().size(), 1u);
  pid_t worker = gw.workerPids()[0];
  std::string chunk;
  for (int i = 0; i < 4096; i++) chunk += "0123456789abcdef";  // 64 KB
  {
    // The same path once with a small body (it goes to a temp file too):
    // buffers, the Lua code and its first allocations are paid for here.
    RawClient warm(gw.port());
    ASSERT_TRUE(warm.send("POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " +
                          std::to_string(chunk.size()) + "\r\n\r\n" + chunk));
    ASSERT_EQ(warm.readResponse(Ms(20000)).status, 200) << gw.errorLog();
  }
  long peak_before = procStatusKb(worker, "VmHWM");
  ASSERT_GT(peak_before, 0);

  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " +
                     std::to_string(kBigBody) + "\r\n\r\n"));
  for (size_t sent = 0; sent < kBigBody; sent += chunk.size()) ASSERT_TRUE(c.send(chunk));
  Response r = c.readResponse(Ms(20000));
  ASSERT_EQ(r.status, 200) << gw.errorLog();
  std::string temp_dir = gw.path("client_body_temp");
  ASSERT_EQ(r.body.rfind(temp_dir + "/", 0), 0u) << r.body;
  EXPECT_NE(r.body.find(" 5242880 true nil\n"), std::string::npos) << r.body;
  std::string path = r.body.substr(0, r.body.find(' '));

  // The body never sat in the worker's memory: its peak grew by far less
  // than the 5 MB that went through it.
  long peak_after = procStatusKb(worker, "VmHWM");
  EXPECT_LT(peak_after - peak_before, 2048) << "worker peak RSS grew from " << peak_before << " kB to "
                                           << peak_after << " kB";
  // The request ended: the file is gone.
  EXPECT_TRUE(waitFor([&] { return !gw.prefix().exists("client_body_temp/" + path.substr(temp_dir.size() + 1)); }));
  EXPECT_EQ(fileCount(temp_dir), 0);
  EXPECT_TRUE(gw.waitLog("a client request body is buffered to a temporary file " + path));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaReqBodyTest, TempFileIsDeletedWhenTheClientLeavesMidBody) {
  Gateway gw;
  gw.setSimpleConf(kUpload);
  ASSERT_TRUE(gw.start());
  std::string temp_dir = gw.path("client_body_temp");
  {
    RawClient c(gw.port());
    ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(kBigBody) + "\r\n\r\n"));
    ASSERT_TRUE(c.send(std::string(256 * 1024, 'x')));
    // The body spilled to a file while it was being read.
    ASSERT_TRUE(waitFor([&] { return fileCount(temp_dir) == 1; })) << gw.errorLog();
  }  // the client leaves with most of the body unsent
  EXPECT_TRUE(waitFor([&] { return fileCount(temp_dir) == 0; }));
  EXPECT_TRUE(gw.waitLog("client prematurely closed connection while reading client request body"));
  // The worker serves on.
  EXPECT_EQ(httpGet(gw.port(), "/nothing").status, 404);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaReqBodyTest, AccessLogShowsTheOriginalRequestLineTheFinalStatusAndTheChangedRequest) {
  Gateway gw;
  gw.setSimpleConf(R"(
    access_log logs/req.log req;
    location /t {
        rewrite_by_lua_block {
            ngx.req.set_header("X-Tag", "changed")
            ngx.req.set_method(ngx.HTTP_PUT)
            ngx.req.read_body()
            ngx.exec("/final", "z=1")
        }
    }
    location /final { content_by_lua_block { ngx.status = 201 ngx.say("done") } }
)",
                   "log_format req '\"$request\" $status $uri $args $request_method $http_x_tag [$request_body]';");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /t?a=1 HTTP/1.1\r\nHost: a\r\nX-Tag: original\r\nConnection: close\r\n"
                     "Content-Length: 4\r\n\r\nbody"));
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, "done\n");
  std::string want = "\"POST /t?a=1 HTTP/1.1\" 201 /final z=1 PUT changed [body]";
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/req.log").find(want) != std::string::npos; }))
      << gw.prefix().read("logs/req.log");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
