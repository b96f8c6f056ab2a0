#!/usr/bin/env bash
# Installs the Debian packages tidegate needs to build and test.
# Idempotent: when every package is present it prints nothing and touches no network.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libluajit2-5.1-dev libuv1-dev node-llhttp libssl-dev nlohmann-json3-dev
  libpcre2-dev googletest libgtest-dev libbenchmark-dev
  curl python3
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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
