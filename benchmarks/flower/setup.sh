#!/usr/bin/env bash
# The Flower benchmark's own venv (.venv-flower at the repository root), from its lock
# (benchmarks/flower/requirements.lock). flwr is a benchmark-only dependency: it needs
# protobuf<7, the project pins protobuf 7 (collab/proto), so it never enters .venv.
#   benchmarks/flower/setup.sh          create or refresh .venv-flower from the lock
#   benchmarks/flower/setup.sh --lock   re-resolve requirements.in into the lock first
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ "${1-}" = "--lock" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install -q pip-tools
  (cd "$here" && CUSTOM_COMPILE_COMMAND="benchmarks/flower/setup.sh --lock" \
    "$tmp/venv/bin/pip-compile" --quiet --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements.lock requirements.in)
fi
[ -x "$root/.venv-flower/bin/python" ] || python3 -m venv "$root/.venv-flower"
"$root/.venv-flower/bin/pip" install -q -r "$here/requirements.lock"
echo ".venv-flower: flwr $("$root/.venv-flower/bin/python" -c 'import flwr; print(flwr.__version__)')"
