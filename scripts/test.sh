#!/usr/bin/env bash
# The test command (README, CI): locked install, Mosquitto for the control-plane
# tests, lint, type check, then the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PATH:/usr/sbin:/usr/local/sbin"  # Debian puts the broker in sbin
if ! command -v mosquitto >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
  else
    echo "scripts/test.sh: the control-plane tests need Mosquitto: sudo apt-get install -y mosquitto" >&2
    exit 1
  fi
fi
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
