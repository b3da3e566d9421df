#!/usr/bin/env bash
# Installs the Debian 12 packages heavykv needs to build and test. Safe to re-run.
set -euo pipefail
pkgs="build-essential cmake clang pkg-config libcjson-dev libutf8proc-dev libmicrohttpd-dev libclang-rt-14-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
