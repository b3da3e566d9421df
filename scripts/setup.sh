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
# The official `openai` npm client for tests/node (test_openai_node), pinned by tests/node/package-lock.json.
# Without npm (or without network) that one test is skipped with a message; the build does not need it.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/node"
if [ ! -d "$node_dir/node_modules/openai" ]; then
  if command -v npm >/dev/null 2>&1; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "setup: 'npm ci' in tests/node failed; test_openai_node will be skipped" >&2
  else
    echo "setup: npm not found; test_openai_node (the openai client against heavykv serve) will be skipped" >&2
  fi
fi
