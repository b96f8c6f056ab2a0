# Shared by the bench scripts that start their servers themselves
# (instructions.sh, cache_misses.sh): sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_tmp NAME: TMP, a new directory under /tmp, and PIDS, for the processes
# the script starts. At exit, an interrupt's too, they are killed and the
# directory removed; with KEEP_TMP=1 the directory stays (its path is printed),
# for a look at what the tools wrote there.
bench_tmp() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  # (waited for, so that bash does not report the killed jobs)
  for p in "${PIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  if [ -n "${KEEP_TMP:-}" ]; then echo "bench: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
