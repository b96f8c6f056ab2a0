#!/usr/bin/env bash
# Installs the Debian packages tidegate needs to build and test.
# Idempotent: when every package is present it prints nothing and touches no network.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libluajit2-5.1-dev libuv1-dev node-llhttp libssl-dev nlohmann-json3-dev
  libpcre2-dev googletest libgtest-dev libbenchmark-dev
  curl python3
  # Debian's OpenResty libraries that tests/integration/lua_libraries_test.cc runs
  # (docs/libraries.md), and the servers it starts for them on ports of its own.
  lua-nginx-redis lua-nginx-memcached lua-resty-lrucache lua-cjson lua-nginx-string
  lua-nginx-cookie lua-nginx-websocket lua-nginx-dns redis-server memcached
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# redis-server, memcached and nginx (nginx-extras: lua-nginx-redis, -memcached and
# -websocket depend on it) start system services when installed. Nothing here needs
# them (the tests start their own servers on free ports), so a policy-rc.d that exits
# 101 keeps invoke-rc.d and deb-systemd-invoke from starting them. A policy already
# present (Docker's Debian images ship one) is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap '$SUDO rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
