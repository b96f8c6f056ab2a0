// The receive patterns every cosocket shares (ngx.socket.tcp in
// ngx_socket.cc, ngx.req.socket in ngx_req_socket.cc): the arguments of
// receive / receiveany / receiveuntil and its iterator, and the taking of
// an answer out of a socket's read buffer. Pure buffer logic: no I/O here.
#pragma once

#include <lua.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tidegate::lua {

enum class ReadMode { kLine, kAll, kBytes, kAny, kUntil };

// A receiveuntil iterator's state: its closure's second upvalue (the third
// holds the pattern string, which `pat` points into). `found`: the
// boundary is in the buffer, `region` bytes of data still precede it (its
// end, when inclusive) and `skip` bytes of pattern follow them.
struct Until {
  const char* pat;
  size_t plen;
  bool inclusive;
  bool found;
  size_t region, skip;
  size_t scan_from;  // no match starts before this offset of the buffer
};

// What one receive call asks for. n: the byte count (kBytes, kAny) or the
// iterator's size argument (kUntil; 0: none).
struct ReadSpec {
  ReadMode mode = ReadMode::kLine;
  size_t n = 0;
  Until* until = nullptr;
};

// Pushes the result of a receive that the buffer `in` can satisfy now
// (consuming it) and returns the number of values; 0 if more bytes are
// needed. Stack of L: [] -> [data] or [].
int takeBuffered(lua_State* L, std::string& in, const ReadSpec& r);

// A receive that cannot complete: nil, err and (but for receiveany) the
// partial data, which is consumed. Stack of L: [] -> [nil, err(, partial)].
int pushReadFailure(lua_State* L, std::string& in, const ReadSpec& r, const char* err);

// --- arguments (the socket is at index 1 and already checked) ---

// sock:receive(pattern?): "*l" (default), "*a" or a byte count, into *r.
// Returns 0, or 1 with "" pushed for receive(0), which needs no bytes.
// A bad pattern raises OpenResty's argument error.
int receiveArgs(lua_State* L, ReadSpec* r);
// sock:receiveany(max): *r asks for at most max bytes (max > 0).
void receiveAnyArgs(lua_State* L, ReadSpec* r);
// sock:receiveuntil(pattern, {inclusive = bool}?): pushes the iterator, a
// closure of `iter` over [sock, its Until state, the pattern], and returns
// 1; or nil, "pattern is empty" and returns 2.
int pushUntilIterator(lua_State* L, lua_CFunction iter);
// Inside `iter`: rearranges its stack to [sock, size?] (the socket from
// the first upvalue) and returns what this call asks for.
ReadSpec untilIteratorArgs(lua_State* L);

}  // namespace tidegate::lua
