#!/usr/bin/env bash
# Create (or refresh) .venv with exactly the locked dependencies (constraints.txt):
# a fresh machine gets what CI tested. EXTRAS selects the install (default: dev,
# which includes every extra); e.g. EXTRAS= scripts/setup.sh for the bare edge install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${EXTRAS-dev}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
