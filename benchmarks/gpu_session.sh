#!/usr/bin/env bash
# Issue #7's GPU benchmarks in one call, for a lent GPU whose time is short (run from the repo root).
#
# Each stage runs under its own time limit, so one that hangs or fails leaves the others their time;
# the reports' JSON files and one log are collected in $OUT (the device tool brings at most 8 files
# back); `python benchmarks/render_reports.py DIR` turns the JSON files back into the Markdown tables.
#
# On the device machine (Python 3.12 with torch, no MONAI/nibabel/pydicom): wheels made by
# ../shared/tools/gpu-wheels.sh travel in .whl/, and the public scans in .gpudata/scans (both ignored
# by git). Elsewhere: OUT=bench_out bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-bench_out}
WORK=${WORK:-/tmp/srgan_med_bench}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
SCANS=${SCANS:-../shared/data/scans}
[ -d .gpudata/scans ] && SCANS=.gpudata/scans

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "=== $name: limit ${limit}s, start $(date -u +%FT%TZ): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $name: exit $? at $(date -u +%FT%TZ)" | tee -a "$LOG"
}

collect() {  # collect SOURCE NAME: a stage's report into $OUT at once, so a call cut short keeps it
  cp "$WORK/$1" "$OUT/$2" 2>/dev/null
}

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu \
    --format=csv
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda)"
} >>"$LOG" 2>&1

# COMPILE_MODES="default max-autotune-no-cudagraphs" adds torch.compile modes to the inference stage.
# STAGES picks stages (all by default). Together they need about 12 minutes, more than one device
# call allows (10), and a session's device time (15 min) also pays the machine's start-up. The H100
# runs of 2026-11-26 measured everything (docs/benchmarks.md); the second one (11:42Z) measured the
# output convolution's forms: compiled x4 inference at 4,062 and 4,057 slices/s with
# "fused-shift-sum", now prepare_for_inference's CUDA default in bf16. Open after it: the PSNR of
# that form compiled (the run measured it eager and compiled with the unfold first convolution),
# and `srgan-med enhance --compile` end to end, in one call (about 7 minutes; timeout_s 480):
#   STAGES="inference enhance" T_INFERENCE=240 T_ENHANCE=150 ENHANCE_ARGS="--compile"
#   INFERENCE_ARGS="--skip-throughput --variants 'bf16 fused-shift-sum' 'bf16 fused-shift-sum compiled'"
# Then, with time left, on the same warm machine (it goes back 30 s after a call), the compiled
# forms at smaller batches replayed as CUDA graphs (an activation of a batch of 16 is 34 MB, within
# the H100's 50 MB L2):
#   STAGES="inference" COMPILE_MODES="reduce-overhead" T_INFERENCE=300
#   INFERENCE_ARGS="--batches 256 --compile-batches 16 64 256 --skip-precision"
# Further options: COMPILE_MODES="triton-convs" (Inductor's Triton convolutions, whose epilogues can
# take those passes; unlikely to pay: for kernels other than 1x1 its template runs at most 4 warps
# with a rolled loop over the taps, torch/_inductor/kernel/conv.py), and STAGES="compile"
# COMPILE_BATCHES=256 T_COMPILE=240 (training compiled at batch 256 with each output convolution).
STAGES=${STAGES:-tests traffic inference enhance overhead train compile cold}
want() { [[ " $STAGES " == *" $1 "* ]]; }
# COMPILE_BATCHES: the batches of the compiled training rows (each compiles from empty caches);
# COMPILE_ROWS: train_speed.py's rows (e.g. compile_reduce_overhead: CUDA graphs at batch 16).
want compile && stage train_compile "${T_COMPILE:-220}" env TORCH_LOGS=recompiles python3 \
  benchmarks/train_speed.py --profile --rows ${COMPILE_ROWS:-batches shift_sum} \
  --batch-sizes ${COMPILE_BATCHES:-256 128} \
  --out "$WORK/train_compile"
want compile && collect train_compile/train_speed.json train_speed_compile.json
want traffic && stage traffic "${T_TRAFFIC:-60}" python3 benchmarks/traffic.py --device cuda --out "$WORK/traffic"
want traffic && collect traffic/traffic.json traffic.json
# INFERENCE_ARGS, e.g. "--batches 256 --skip-precision", narrows the inference stage.
# (eval: INFERENCE_ARGS may quote variant names that hold spaces)
want inference && eval stage inference "${T_INFERENCE:-150}" python3 benchmarks/gpu_inference.py \
  --out "$WORK/inference" --scans "$SCANS" --compile --profile --compile-modes ${COMPILE_MODES:-default} \
  "${INFERENCE_ARGS:-}"
want inference && collect inference/gpu_inference.json gpu_inference.json
want enhance && stage enhance "${T_ENHANCE:-80}" python3 benchmarks/enhance_speed.py --skip-cpu \
  --out "$WORK/enhance" ${ENHANCE_ARGS:-}
want enhance && collect enhance/enhance_speed.json enhance_speed.json
want overhead && stage overhead "${T_OVERHEAD:-60}" python3 benchmarks/enhance_overhead.py --device cuda \
  --out "$WORK/overhead"
want overhead && collect overhead/enhance_overhead.json enhance_overhead.json
want train && stage train "${T_TRAIN:-200}" python3 benchmarks/train_speed.py --no-compile --profile \
  --batch-sizes 32 64 128 256 --out "$WORK/train"
want train && collect train/train_speed.json train_speed.json
want tests && stage gpu_tests "${T_TESTS:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_degrade_batch.py tests/test_benchmark_train.py tests/test_enhance_engine.py tests/test_nets.py \
  tests/test_prelu_matmul.py
# The wheels were unpacked without bytecode (--no-compile, to save the other stages' time): compile it
# first, as a normal installation does, so the cold start measures imports, not compiling them.
want cold && stage bytecode 60 python3 -m compileall -q -j 0 /tmp/site
want cold && stage cold_start "${T_COLD:-90}" bash benchmarks/cold_start.sh "$WORK/cold"

grep -E "^=== |x[0-9.]+ |patches/s|slices/s" "$LOG" | tail -60
ls -la "$OUT"
