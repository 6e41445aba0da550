#!/usr/bin/env bash
# The README's demo command: set up, render the built-in demo dataset, train the `demo` preset on
# the CPU for a few minutes, export a sample grid, an orbit video and a mesh into demo-out/, and measure
# FID (1000 fakes against the demo dataset, the FID Inception weights) of every snapshot: printed, and
# plotted as demo-out/fid1k.png. Extra arguments go to train.py (e.g. `bash scripts/demo.sh --kimg 2`, or
# `--cfg demo_classic` for the harder first demo dataset: 8 shapes x 4 colourings from the whole sphere).
# PGRF_DEMO_METRIC: the metric of that curve (default fid1k_full; 'none' skips it, e.g. with no weights).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PGRF_PYTHON:-}" ]; then
    bash scripts/setup_env.sh
fi
py=${PGRF_PYTHON:-.venv/bin/python}  # PGRF_PYTHON: use an existing environment instead of .venv
out=demo-out

echo "== demo: rendering the demo datasets (cached after the first run)"
$py scripts/dataset_tool.py demo --set shapes --dest data/demo  # the demo preset's
$py scripts/dataset_tool.py demo --set classic --dest data/demo_classic  # `bash scripts/demo.sh --cfg demo_classic`

# One 1-thread process (the preset's `threads: 1`): two gloo processes were 1.25x faster on one evening's
# probes but slower inside demo.sh and on the next day's (README, Benchmarks). `--gpus 2` opts in.
# The preset's 18 kimg, or fewer on a slow machine: training (the log's `time`) stops at 9.5 minutes.
echo "== demo: training the demo preset on the CPU (at most 9.5 minutes)"
start=$(date +%s)
$py train.py --outdir "$out/runs" --cfg demo --desc demo --max-minutes 9.5 "$@"
end=$(date +%s)
run=$(ls -d "$out"/runs/*/ | sort | tail -n 1)
snapshot=$(ls "$run"network-snapshot-*.pt | sort | tail -n 1)
kimg=$($py -c "from training.loop import run_dir; print(f'{run_dir.snapshot_nimg(\"$snapshot\") / 1000:g}')")
echo "demo: trained $kimg kimg in $((end - start)) s ($($py -c "print(f'{$kimg * 1000 / max($end - $start, 1):.1f}')") images/s, start-up included); run: $run"
cp "$(ls "$run"fakes*.png | sort | tail -n 1)" "$out/training-grid.png"

# G trains on the data's 32^2 images; a radiance field renders any size: 64^2 (2x) for the eye.
echo "== demo: exporting samples, an orbit video and a mesh from $snapshot"
$py gen_samples.py images --network "$snapshot" --seeds 0-15 --camera random:1 --resolution 64 --outdir "$out/images"
$py gen_samples.py video --network "$snapshot" --seeds 0-3 --trajectory orbit --frames 60 --fps 20 --resolution 64 --outdir "$out/video"
$py gen_samples.py geometry --network "$snapshot" --seeds 0 --resolution 128 --outdir "$out/mesh"
metric=${PGRF_DEMO_METRIC:-fid1k_full}
curve=""
if [ "$metric" != none ]; then
    echo "== demo: $metric of every snapshot against the demo dataset"
    $py calc_metrics.py --run "$run" --snapshots all --metrics "$metric" --quiet
    curve="${metric%%_*}.png"
    $py scripts/demo_report.py "$run" --metric "$metric" --out "$out/$curve" --target 90
fi
echo "demo: done; results in $out/ (training-grid.png, images/, video/, mesh/${curve:+, $curve})"
