#!/usr/bin/env bash
# Runs one of bench/run.sh's scenarios (default "hello") with a third side beside nginx
# and tidegate, in the same interleaved rounds: the minimal epoll responder of
# bench/floor/, which only reads each request and writes a fixed answer while nginx does
# the scenario's work. Its ratio to nginx ("floor/nginx") is the floor on this machine at
# this moment for that scenario; "tidegate/floor" says how far tidegate is above it,
# measured in the same rounds, so the host's drift between runs cancels out.
# Usage: bench/floor.sh [scenario]   (env as for run.sh: ROUNDS, CONNS, DURATION)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=1 exec bash bench/run.sh "${1:-hello}"
