#!/usr/bin/env python3
"""How fast an admin write reaches every worker, and whether any request fails meanwhile.

Starts an nginx backend with two servers (answering "A" and "B"), tidegate with 2 workers
and its admin API, and wrk against tidegate for the whole run at a steady RATE (requests
per second, paced with wrk's delay(); RATE=0: as fast as it can, which also measures the
queueing of a saturated 2-CPU machine). Then makes UPDATES
upstream writes (each swaps the upstream between A and B) and PUSHES Lua module pushes
(each a new version string), every INTERVAL seconds. After each write's 2xx it probes
every worker on a keepalive connection of its own until that worker answers with the new
state, and records the time from the 2xx to the last worker's first new answer.

Prints the distribution of those times and wrk's failures (non-2xx, socket errors); the
goals (issue "Admin API"): under 5 ms, and zero failed requests.

Usage: python3 bench/admin_propagation.py   (env: TIDEGATE, NGINX, UPDATES=100,
PUSHES=20, INTERVAL=0.1, CONNS=20, RATE=5000). Needs wrk and nginx (bench/run.sh installs them).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIDEGATE = os.path.abspath(os.environ.get("TIDEGATE", os.path.join(ROOT, "build/tidegate")))
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
UPDATES = int(os.environ.get("UPDATES", "100"))
PUSHES = int(os.environ.get("PUSHES", "20"))
INTERVAL = float(os.environ.get("INTERVAL", "0.1"))
CONNS = int(os.environ.get("CONNS", "20"))
RATE = int(os.environ.get("RATE", "5000"))
TOKEN = "bench-token-0123456789abcdef0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Conn:
    """One keepalive HTTP/1.1 connection; request() returns (status, headers, body)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method, path, body=b"", headers=None):
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.recv()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self.buf += self.recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, data.decode()

    def recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("closed")
        return d


def wait_port(port, proc, what):
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"bench: {what} did not listen on {port}")


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    for tool in ("wrk", NGINX, TIDEGATE):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"bench: {tool} not found (bench/run.sh installs wrk and nginx; build tidegate first)")
    tmp = tempfile.mkdtemp(prefix="tidegate-adminbench.")
    procs = []
    try:
        pa, pb, port, admin = free_port(), free_port(), free_port(), free_port()
        os.makedirs(f"{tmp}/backend/logs")
        with open(f"{tmp}/backend/nginx.conf", "w") as f:
            f.write(f"""daemon off; worker_processes 1; error_log {tmp}/backend/logs/error.log warn;
pid {tmp}/backend/nginx.pid; events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{pa}; location / {{ return 200 "A"; }} }}
  server {{ listen 127.0.0.1:{pb}; location / {{ return 200 "B"; }} }} }}
""")
        backend = subprocess.Popen([NGINX, "-p", f"{tmp}/backend/", "-c", f"{tmp}/backend/nginx.conf"],
                                   stderr=subprocess.DEVNULL)
        procs.append(backend)
        wait_port(pb, backend, "nginx")
        os.makedirs(f"{tmp}/tg/logs")
        with open(f"{tmp}/tg/tidegate.conf", "w") as f:
            f.write(f"""daemon off; worker_processes 2; error_log {tmp}/tg/logs/error.log warn;
pid {tmp}/tg/logs/tidegate.pid; events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  admin_listen 127.0.0.1:{admin}; admin_token {TOKEN}; state_dir {tmp}/tg/state;
  upstream dyn {{ server 127.0.0.1:{pa}; }}
  header_filter_by_lua_block {{ ngx.header["X-Worker"] = ngx.worker.pid() }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://dyn; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location /lua {{ content_by_lua_block {{ ngx.print(require("benchmod").v) }} }}
  }}
}}
""")
        tg = subprocess.Popen([TIDEGATE, "-p", f"{tmp}/tg", "-c", f"{tmp}/tg/tidegate.conf"], stderr=subprocess.DEVNULL)
        procs.append(tg)
        wait_port(admin, tg, "tidegate")
        api = Conn(admin)
        auth = {"X-API-KEY": TOKEN, "Content-Type": "application/json"}

        def put_upstream(p):
            body = json.dumps({"servers": [{"host": "127.0.0.1", "port": p}]}).encode()
            status, _, text = api.request("PUT", "/upstreams/dyn", body, auth)
            if status >= 300:
                sys.exit(f"bench: PUT /upstreams/dyn -> {status} {text}")

        def push(v):
            status, _, text = api.request("PUT", "/lua/benchmod", f"return {{v = '{v}'}}".encode(),
                                          {"X-API-KEY": TOKEN})
            if status >= 300:
                sys.exit(f"bench: PUT /lua/benchmod -> {status} {text}")

        put_upstream(pa)
        push("v0")
        # One keepalive connection per worker, found by the pid each answers with.
        workers = {}
        tries = 0
        while len(workers) < 2:
            tries += 1
            if tries > 200:
                sys.exit("bench: could not reach both workers")
            c = Conn(port)
            _, h, _ = c.request("GET", "/")
            workers.setdefault(h["x-worker"], c)
        cmd = ["wrk", "-t1", f"-c{CONNS}", "-d600s"]
        if RATE > 0:
            # Each connection waits CONNS/RATE s between requests: RATE req/s in all.
            with open(f"{tmp}/pace.lua", "w") as f:
                f.write(f"function delay() return {1000.0 * CONNS / RATE:.3f} end\n")
            cmd += ["-s", f"{tmp}/pace.lua"]
        wrk = subprocess.Popen(cmd + [f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(wrk)
        time.sleep(1)

        def propagation(path, want):
            t0 = time.perf_counter()
            pending = dict(workers)
            last = t0
            while pending:
                for pid, c in list(pending.items()):
                    status, h, body = c.request("GET", path)
                    if status != 200:
                        sys.exit(f"bench: probe {path} -> {status}")
                    if body == want:
                        last = time.perf_counter()
                        del pending[pid]
                if time.perf_counter() - t0 > 5:
                    sys.exit(f"bench: {path} did not show {want!r} on every worker within 5 s")
            return (last - t0) * 1000

        upd, lua = [], []
        for i in range(UPDATES):
            target, want = (pb, "B") if i % 2 == 0 else (pa, "A")
            put_upstream(target)
            upd.append(propagation("/", want))
            time.sleep(INTERVAL)
        for i in range(PUSHES):
            push(f"v{i + 1}")
            lua.append(propagation("/lua", f"v{i + 1}"))
            time.sleep(INTERVAL)
        wrk.send_signal(signal.SIGINT)
        out = wrk.communicate(timeout=10)[0]
        non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
        sock = re.search(r"Socket errors: (.*)", out)
        reqs = re.search(r"(\d+) requests in", out)
        pace = f"{RATE} req/s" if RATE > 0 else "full speed"
        print(f"admin propagation: 2 workers, wrk -c{CONNS} at {pace} throughout ({reqs[1] if reqs else '?'} requests)")
        for name, v in (("upstream writes", upd), ("Lua pushes", lua)):
            if v:
                print(f"  {name} ({len(v)}): 2xx -> every worker serves it: median {percentile(v, 50):.2f} ms, "
                      f"p99 {percentile(v, 99):.2f} ms, max {max(v):.2f} ms (goal < 5 ms)")
        print(f"  failed requests under load: non-2xx {non2xx}, socket errors {sock[1] if sock else 'none'} (goal 0)")
        with open(f"{tmp}/tg/logs/error.log") as f:
            bad = [l for l in f if re.search(r"\[(error|crit|alert|emerg)\]", l)]
        if bad:
            print(f"  WARNING: {len(bad)} error lines in tidegate's log; the first: {bad[0].strip()}")
        return 0 if non2xx == 0 and not sock and not bad else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                # wrk stops on SIGINT; nginx and tidegate drain on SIGQUIT.
                p.send_signal(signal.SIGINT if p.args[0] == "wrk" else signal.SIGQUIT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
