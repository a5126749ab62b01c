#!/usr/bin/env bash
# Refresh the lock (constraints.txt): every transitive dependency of '.[all,dev]',
# resolved from pyproject.toml by pip-tools and pinned. Run it after changing a
# dependency in pyproject.toml; tests/test_lock.py fails while the lock is stale.
# torch resolves to the CPU wheel this machine kind provides (torch==2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
pins=()
[ -f constraints.txt ] && pins=(-c constraints.txt)
"$tmp/venv/bin/pip" install -q "${pins[@]}" pip-tools
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tmp/venv/bin/pip-compile" --quiet --extra all --extra dev --strip-extras --allow-unsafe \
  --no-emit-index-url --no-emit-find-links \
  --output-file constraints.txt pyproject.toml
# the project's own self-reference (dev -> edgecollab[all]) is a path on this machine
python3 - <<'PY'
import re
text = open("constraints.txt").read()
open("constraints.txt", "w").write(re.sub(r"(?m)^edgecollab @ .*\n(    #.*\n)*", "", text))
PY
echo "constraints.txt: $(grep -c '^[A-Za-z0-9]' constraints.txt) pinned packages"
