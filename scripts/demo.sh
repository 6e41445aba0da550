#!/usr/bin/env bash
# The README's demo command: set up, render the built-in demo dataset, train the `demo` preset on
# the CPU for a few minutes, and export a sample grid, an orbit video and a mesh into demo-out/.
# Extra arguments go to train.py (e.g. `bash scripts/demo.sh --kimg 2` for a shorter run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
py=.venv/bin/python
out=demo-out
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

echo "== demo: rendering the demo dataset (cached after the first run)"
$py scripts/dataset_tool.py demo --dest data/demo

echo "== demo: training the demo preset on the CPU"
start=$(date +%s)
$py train.py --outdir "$out/runs" --cfg demo --desc demo "$@"
end=$(date +%s)
run=$(ls -d "$out"/runs/*/ | sort | tail -n 1)
snapshot=$(ls "$run"network-snapshot-*.pt | sort | tail -n 1)
echo "demo: trained in $((end - start)) s; run directory $run"

if $py gen_samples.py images --help >/dev/null 2>&1; then
    echo "== demo: exporting samples, an orbit video and a mesh from $snapshot"
    $py gen_samples.py images --network "$snapshot" --seeds 0-15 --outdir "$out"
    $py gen_samples.py video --network "$snapshot" --seeds 0-3 --trajectory orbit --outdir "$out"
    $py gen_samples.py geometry --network "$snapshot" --seeds 0 --outdir "$out"
else
    cp "$(ls "$run"fakes*.png | sort | tail -n 1)" "$out/samples.png"
    echo "demo: gen_samples.py has no exporters yet; copied the last training grid to $out/samples.png"
fi
echo "demo: done; results in $out/"
