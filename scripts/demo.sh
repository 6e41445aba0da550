#!/usr/bin/env bash
# The README's demo command: set up, render the built-in demo dataset, train the `demo` preset on
# the CPU, and export samples, an orbit video and a mesh into demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
py=.venv/bin/python
$py train.py --help >/dev/null
echo "demo: the environment is ready; training and export arrive with their issues."
