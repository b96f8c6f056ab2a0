/* The floor for bench/run.sh's "hello" scenario: a single-threaded epoll
 * loop that makes exactly one read and one write per keepalive request and
 * does nothing else (no parsing, no timers, no logs). What it costs per
 * request is, near enough, the kernel's share; tidegate cannot go below it.
 * Usage: minimal_responder PORT (binds 127.0.0.1). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char kResponse[] =
    "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Sun, 29 Nov 2026 16:20:00 GMT\r\n"
    "Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

static void on_quit(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
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
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof(buf));
      if (r <= 0) {
        close(fd);
        continue;
      }
      if (memmem(buf, (size_t)r, "\r\n\r\n", 4) && write(fd, kResponse, sizeof(kResponse) - 1) < 0) close(fd);
    }
  }
}
