// HttpServer::retire and reapNow: a retired task lives until the server
// frees it, at the end of the loop turn or earlier where a handler says no
// task is on the stack (the proxy, at the end of its upstream read
// callbacks, so that a finished request's memory is freed while in cache).
#include <gtest/gtest.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "conf/loader.h"
#include "http/content_handler.h"
#include "http/http_server.h"

namespace tidegate::http {
namespace {

conf::ConfigPtr load(const std::string& text) {
  conf::ConfigPtr cfg;
  conf::ConfError err;
  EXPECT_TRUE(conf::loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message();
  return cfg;
}

// Counts its destruction; may retire another task from its destructor and
// ask for a reap there, as a destructor that ends a Lua task could.
struct CountedTask : ContentTask {
  CountedTask(int* freed, HttpServer* server) : freed(freed), server(server) {}
  ~CountedTask() override {
    ++*freed;
    if (child) server->retire(std::move(child));
    server->reapNow();
  }
  int* freed;
  HttpServer* server;
  std::unique_ptr<ContentTask> child;
};

struct RecordingProxy : ProxyHandler {
  std::unique_ptr<ContentTask> start(Request&, ContentSink&, ContentTask*) override { return nullptr; }
  void shutdown() override {}
  void setReaper(std::function<void()> reap) override { reaper = std::move(reap); }
  std::function<void()> reaper;
};

class HttpServerReapTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  uv_loop_t loop_;
  conf::ConfigPtr cfg_ = load("http { server { listen 127.0.0.1:8080; } }");
};

TEST_F(HttpServerReapTest, ReapNowFreesWhatWasRetiredAndNothingInsideADestructor) {
  HttpServer server(&loop_, cfg_);
  int freed = 0;
  auto parent = std::make_unique<CountedTask>(&freed, &server);
  parent->child = std::make_unique<CountedTask>(&freed, &server);
  server.retire(std::move(parent));
  EXPECT_EQ(freed, 0);  // retired is not freed
  server.reapNow();
  // The parent went; the child it retired from its destructor waits: the
  // reap that destructor asked for found one under way and left it.
  EXPECT_EQ(freed, 1);
  server.reapNow();
  EXPECT_EQ(freed, 2);
  server.reapNow();  // nothing left: nothing happens
  EXPECT_EQ(freed, 2);
}

TEST_F(HttpServerReapTest, TheProxyGetsTheReaperAndLosesItWithTheServer) {
  RecordingProxy proxy;
  int freed = 0;
  {
    HttpServer server(&loop_, cfg_);
    server.setProxyHandler(&proxy);
    ASSERT_TRUE(proxy.reaper);
    server.retire(std::make_unique<CountedTask>(&freed, &server));
    proxy.reaper();  // what the proxy calls where its read callbacks end
    EXPECT_EQ(freed, 1);
  }
  EXPECT_FALSE(proxy.reaper);  // the proxy outlives the server: no dangling call
}

}  // namespace
}  // namespace tidegate::http
