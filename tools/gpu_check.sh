#!/usr/bin/env bash
# Everything that needs a GPU, in one command: the unit tests (backend-parametrized cases run on CuPy here),
# every notebook under nbval in lax mode with TINYGRAD_BIRNN_BACKEND=cupy (floats differ on a GPU; the asserts
# in the cells still hold), then the GPU benchmark and the breakdown of one captured step. Writes logs and a
# summary to $OUT (or gpu_results/).
#
#   bash tools/gpu_check.sh            # on a machine with an NVIDIA GPU, cupy and (optionally) torch
#   bash tools/gpu_check.sh --no-bench # the tests and notebooks only
#
# Without network, carry the Jupyter kernel stack and nbval as wheels in .whl/ (see ../shared/gpu/README.md
# or `bash tools/gpu_wheels.sh`): they are installed into .site/ and put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.site" .whl/*.whl \
    && export PYTHONPATH="$PWD/.site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
start=$(date +%s)
python3 - <<'PY' | tee "$out/device.txt"
import cupy, numpy, tinygrad_birnn as tg
props = cupy.cuda.runtime.getDeviceProperties(0)
print("GPU:", props["name"].decode(), "| cupy", cupy.__version__, "| numpy", numpy.__version__,
      "| backends:", tg.backend.available_backends())
PY

xdist=""
python3 -c "import xdist" 2>/dev/null && xdist="-n ${GPU_CHECK_WORKERS:-8}"

bench=0
if [ "${1:-}" != "--no-bench" ]; then
  echo "== benchmark =="
  timeout 300 python3 benchmarks/bench_gpu_rnn.py --repeats 10 --cpu-max M --cells rnn lstm gru --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench.log"
  bench=${PIPESTATUS[0]}
  echo "== inside one captured step =="
  timeout 180 python3 benchmarks/gpu_step_breakdown.py --json "$out/gpu_breakdown.json" 2>&1 | tee "$out/breakdown.log"
  [ "${PIPESTATUS[0]}" = 0 ] || bench=1
else
  echo "benchmark skipped (--no-bench)" > "$out/bench.log"
fi

echo "== unit tests (numpy and cupy cases) =="
timeout 150 python3 -m pytest tests -q -rs $xdist -o addopts="-p no:cacheprovider --ignore=tests/browser" \
  2>&1 | tee "$out/unit.log"
unit=${PIPESTATUS[0]}

echo "== notebooks on cupy (nbval-lax) =="
# --dist loadfile keeps each notebook's cells in one worker, so they run in order in one kernel. Four workers:
# with eight, one of eight kernels starting at once died before its first reply (seen once on an H200).
nb_workers=""
[ -n "$xdist" ] && nb_workers="-n ${GPU_CHECK_NOTEBOOK_WORKERS:-4} --dist loadfile"
TINYGRAD_BIRNN_BACKEND=cupy timeout 300 python3 -m pytest book -q $nb_workers \
  -o addopts="-p no:cacheprovider --nbval-lax --nbval-current-env --nbval-kernel-startup-timeout=120" \
  2>&1 | tee "$out/notebooks.log"
notebooks=${PIPESTATUS[0]}

{
  echo "== summary ($(( $(date +%s) - start )) s) =="
  cat "$out/device.txt"
  echo "unit tests: exit $unit | $(grep -E '[0-9]+ (passed|failed)' "$out/unit.log" | tail -1)"
  echo "notebooks:  exit $notebooks | $(grep -E '[0-9]+ (passed|failed)' "$out/notebooks.log" | tail -1)"
  echo "benchmark:  exit $bench"
  grep -E '^(RNN|LSTM|GRU) |^  ' "$out/bench.log" || true
  [ -f "$out/breakdown.log" ] && grep -A7 '^RNN L ' "$out/breakdown.log"
  grep -E '^(FAILED|ERROR)' "$out/unit.log" "$out/notebooks.log" | head -40 || true
} | tee "$out/summary.txt"
[ "$unit" = 0 ] && [ "$notebooks" = 0 ] && [ "$bench" = 0 ]
