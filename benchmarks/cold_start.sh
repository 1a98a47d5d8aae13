#!/usr/bin/env bash
# Where the time of a fresh `srgan-med enhance` command goes (issue #7): Python and torch start-up,
# the package's imports, CUDA initialisation (where there is CUDA), then the whole command twice (the
# second with warm file and bytecode caches). Input: a synthetic 128x128x300 int16 CT NIfTI and a
# random-init x4 SRResNet (16 blocks, 64 channels), made by benchmarks/enhance_common.py; SHAPE="I J K"
# changes the volume (e.g. "128 128 8" for a quick look on a CPU). Run from the repo root:
#   bash benchmarks/cold_start.sh [WORKDIR]          # DEVICE=cpu|cuda (default: cuda if available)
set -eu
WORK=${1:-/tmp/srgan_med_cold}
SHAPE=${SHAPE:-128 128 300}
DEVICE=${DEVICE:-$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
mkdir -p "$WORK"
python3 - "$WORK" $SHAPE <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from enhance_common import random_bundle, write_synthetic_ct
work = Path(sys.argv[1])
random_bundle(work / "x4.safetensors", 4, 16, 64)
write_synthetic_ct(work / "ct.nii", tuple(int(v) for v in sys.argv[2:5]))
PY
echo "device: $DEVICE; volume: $SHAPE; $(date -u +%FT%TZ)"
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); python3 -c "print(f'{$t1 - $t0:.2f}')"; }
echo "python start-up:                 $(seconds python3 -c pass) s"
echo "import torch:                    $(seconds python3 -c 'import torch') s"
[ "$DEVICE" = cuda ] && echo "import torch + CUDA init:        $(seconds python3 -c 'import torch; torch.zeros(1, device="cuda")') s"
echo "import monai:                    $(seconds python3 -c 'import monai') s"
echo "import srgan_med enhance path:   $(seconds python3 -c 'import srgan_med.cli, srgan_med.enhance.run, srgan_med.enhance.engine, monai.data, nibabel') s"
for run in 1 2; do
  rm -rf "$WORK/out$run.nii" "$WORK/out$run.nii.json"
  echo "srgan-med enhance, run $run:        $(seconds python3 -m srgan_med enhance "$WORK/ct.nii" -o "$WORK/out$run.nii" --model "$WORK/x4.safetensors" --device "$DEVICE" -q) s"
  python3 -c "import json; r = json.load(open('$WORK/out$run.nii.json')); print('  in-command report:', {k: r[k] for k in ('seconds', 'seconds_by_stage', 'precision', 'batch_size')})"
done
