#!/usr/bin/env bash
# One short GPU verification run (< 8 min on one GPU): build the CUDA twins, run every `gpu`-marked test,
# and time the paper-config training step in bf16 and fp32. Prints one summary at the end.
#
#   bash scripts/gpu_check.sh              # on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --dry-run    # anywhere: print the plan, run nothing
#   bash scripts/gpu_check.sh --cpu-smoke  # on a CPU: every stage but the build, with the demo bench on
#                                          # the CPU (the gpu tests skip), to check the script itself
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_OUT (default a temp folder:
# logs and bench JSON). The bench is scripts/bench.py's training_step_paper (batch 4, the README's case).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${GPU_CHECK_OUT:-$(mktemp -d -t pgrf-gpu-check.XXXXXX)}"
DRY_RUN=0
DEVICE=cuda
CASE=training_step_paper
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  --cpu-smoke) DEVICE=cpu CASE=training_step_demo ;;
  "") ;;
  *) echo "gpu_check: unknown argument '$1' (use --dry-run or --cpu-smoke)" >&2; exit 2 ;;
esac

# Per-stage wall-clock limits (seconds): 60 + 180 + 2 x 100 = 440 s of the 8-minute budget, plus start-up.
BUILD_LIMIT=60
TEST_LIMIT=180
BENCH_LIMIT=100

declare -a SUMMARY=()
FAILED=0

note() { SUMMARY+=("$1"); }

run_stage() {  # run_stage NAME LIMIT_S LOG CMD...: run with a time limit, log to LOG, record pass/fail.
  local name="$1" limit="$2" log="$3"
  shift 3
  if ((DRY_RUN)); then
    echo "[dry-run] $name (limit ${limit}s): $*"
    return 0
  fi
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS rc=0
  timeout "$limit" "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    note "PASS  $name (${took}s)"
  else
    FAILED=1
    if ((rc == 124)); then
      note "FAIL  $name: timed out after ${limit}s (log: $log)"
    else
      note "FAIL  $name: exit $rc (log: $log)"
    fi
  fi
  return "$rc"
}

check_gpu() {
  if [[ "$DEVICE" == cpu ]]; then
    echo "CPU smoke run: $("$PYTHON" -c 'import torch; print("torch", torch.__version__)')" | tee "$OUT/device.txt"
    return 0
  fi
  if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    if ((DRY_RUN)); then
      echo "[dry-run] no CUDA device here: a real run would stop at this point"
      return 0
    fi
    echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
  fi
  "$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")' \
    | tee "$OUT/device.txt"
}

gpu_tests() {  # pytest -m gpu, one PASS/FAIL line per test in the summary
  local log="$OUT/gpu_tests.log" junit="$OUT/gpu_tests.xml"
  run_stage "gpu-marked tests" "$TEST_LIMIT" "$log" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml "$junit" tests
  ((DRY_RUN)) && return 0
  [[ -f "$junit" ]] || return 0
  while IFS= read -r line; do note "      $line"; done < <("$PYTHON" - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET

for case in ET.parse(sys.argv[1]).getroot().iter('testcase'):
    name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
    kinds = [child.tag for child in case]
    status = 'FAIL' if {'failure', 'error'} & set(kinds) else 'SKIP' if 'skipped' in kinds else 'pass'
    print(f'{status:4s}  {name}')
EOF
  )
}

bench_step() {  # bench_step PRECISION: the training step (paper config on cuda), one JSON line kept in $OUT
  local precision="$1" json="$OUT/bench_$1.json"
  run_stage "$CASE on $DEVICE, $precision" "$BENCH_LIMIT" "$OUT/bench_$1.log" \
    "$PYTHON" scripts/bench.py --case "^$CASE\$" --device "$DEVICE" --repeat 2 --precision "$precision"
  ((DRY_RUN)) && return 0
  grep '^{' "$OUT/bench_$1.log" | tail -n 1 >"$json" || true
}

bench_summary() {
  ((DRY_RUN)) && return 0
  "$PYTHON" - "$OUT" <<'EOF'
import json
import os
import sys

rows = {}
for precision in ('bf16', 'fp32'):
    path = os.path.join(sys.argv[1], f'bench_{precision}.json')
    try:
        with open(path) as f:
            rows[precision] = json.loads(f.read())
    except (OSError, ValueError):
        continue
for precision, r in rows.items():
    if 'error' in r:
        print(f'bench {precision}: {r["error"]}')
        continue
    phases = ', '.join(f'{k} {v:.0f} ms' for k, v in r['phase_ms'].items())
    print(f'bench {precision}: {r["images_per_s"]:.2f} images/s, step {r["step_ms"]:.0f} ms ({phases}), '
          f'peak {r["peak_memory_gb"]:.2f} GB')
if {'bf16', 'fp32'} <= rows.keys() and all('step_ms' in r for r in rows.values()):
    print(f'bench bf16 vs fp32: {rows["fp32"]["step_ms"] / rows["bf16"]["step_ms"]:.2f}x faster')
EOF
}

main() {
  mkdir -p "$OUT"
  echo "gpu_check: python $PYTHON, output in $OUT"
  check_gpu
  [[ "$DEVICE" == cuda ]] && run_stage "build CUDA twins" "$BUILD_LIMIT" "$OUT/build.log" "$PYTHON" -m torch_utils.custom_ops bias_act upfirdn2d volume_render
  gpu_tests
  bench_step bf16
  bench_step fp32
  echo
  echo "==================== gpu_check summary ===================="
  [[ -f "$OUT/device.txt" ]] && cat "$OUT/device.txt"
  for line in "${SUMMARY[@]}"; do echo "$line"; done
  bench_summary
  if ((DRY_RUN)); then
    echo "dry run: nothing was executed"
    return 0
  fi
  if ((FAILED)); then echo "RESULT: FAIL (logs in $OUT)"; else echo "RESULT: PASS (logs in $OUT)"; fi
  return "$FAILED"
}

main "$@"
