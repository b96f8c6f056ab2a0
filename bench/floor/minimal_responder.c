/* The floor for bench/run.sh's scenarios: a single-threaded epoll loop that
 * makes exactly one read and one write per keepalive request and does nothing
 * else (no parsing, no timers, no logs). What it costs per request is, near
 * enough, the kernel's share; tidegate cannot go below it.
 * With REDIS_PORT (the "redis" scenario), each request also sends one GET to
 * redis on a connection of its own client connection's and answers with the
 * value: one more write and read per request, as any server doing that pays.
 * Usage: minimal_responder PORT [REDIS_PORT] (127.0.0.1). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char kResponse[] =
    "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Sun, 29 Nov 2026 16:20:00 GMT\r\n"
    "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

static const char kGet[] = "*2\r\n$3\r\nGET\r\n$5\r\nbench\r\n";
enum { kMaxFd = 65536 };
static int g_peer[kMaxFd];      /* client fd -> its redis fd, redis fd -> its client */
static char g_is_redis[kMaxFd];

static int connect_redis(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || fd >= kMaxFd || connect(fd, (struct sockaddr*)&a, sizeof(a)) != 0) exit(1);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

/* Answers the client with redis's reply ("$N\r\nVALUE\r\n") as the body. */
static void answer_from_redis(int rfd, const char* reply, ssize_t len) {
  const char* v = memchr(reply, '\n', (size_t)len);
  int client = g_peer[rfd];
  if (!v || reply[0] != '$') exit(1);
  v++;
  int vlen = atoi(reply + 1);
  char out[512];
  int n = snprintf(out, sizeof(out),
                   "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Sun, 29 Nov 2026 16:20:00 GMT\r\n"
                   "Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%.*s\n",
                   vlen + 1, vlen, v);
  if (write(client, out, (size_t)n) < 0) close(client);
}

static void on_quit(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) return 2;
  int redis_port = argc == 3 ? atoi(argv[2]) : 0;
  /* Started in the background by a script, it inherits SIGQUIT ignored; run.sh stops
   * its servers with SIGQUIT. */
  signal(SIGQUIT, on_quit);
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(argv[1]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(ls, 511) != 0) return 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[512];
  char buf[1024];
  for (;;) {
    int n = epoll_wait(ep, evs, 512, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= kMaxFd) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof(buf));
      if (g_is_redis[fd]) {
        if (r <= 0) exit(1);
        answer_from_redis(fd, buf, r);
        continue;
      }
      if (r <= 0) {
        if (g_peer[fd]) {
          close(g_peer[fd]);
          g_is_redis[g_peer[fd]] = 0;
          g_peer[fd] = 0;
        }
        close(fd);
        continue;
      }
      if (!memmem(buf, (size_t)r, "\r\n\r\n", 4)) continue;
      if (!redis_port) {
        if (write(fd, kResponse, sizeof(kResponse) - 1) < 0) close(fd);
        continue;
      }
      if (!g_peer[fd]) {
        int rfd = connect_redis(redis_port);
        g_peer[fd] = rfd;
        g_peer[rfd] = fd;
        g_is_redis[rfd] = 1;
        struct epoll_event e = {.events = EPOLLIN, .data.fd = rfd};
        epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &e);
      }
      if (write(g_peer[fd], kGet, sizeof(kGet) - 1) < 0) exit(1);
    }
  }
}
