#!/usr/bin/env bash
# The README's test command: set up, lint, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
py=.venv/bin/python

echo "== ruff (lint + format check)"
$py -m ruff check .
$py -m ruff format --check .

echo "== pytest"
set +e
$py -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's 5 means nothing was collected: never a pass, and not a crash either.
    echo "test: pytest collected no tests (exit 5) — the suite is empty or the selection matched nothing." >&2
    exit 3
fi
exit "$rc"
