#!/usr/bin/env bash
# Where the time of a fresh `srgan-med enhance` command goes on a GPU machine (issue #7): Python and
# torch start-up, the package's imports, CUDA initialisation, then the whole command twice (the second
# with a warm file cache). Input: a synthetic 128x128x300 int16 CT NIfTI and a random-init x4 SRResNet
# (16 blocks, 64 channels), made by benchmarks/enhance_common.py. Run from the repo root:
#   bash benchmarks/cold_start.sh [WORKDIR]
set -eu
WORK=${1:-/tmp/srgan_med_cold}
mkdir -p "$WORK"
python3 - "$WORK" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from enhance_common import random_bundle, write_synthetic_ct
work = Path(sys.argv[1])
random_bundle(work / "x4.safetensors", 4, 16, 64)
write_synthetic_ct(work / "ct.nii", (128, 128, 300))
PY
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); python3 -c "print(f'{$t1 - $t0:.2f}')"; }
echo "python start-up:                 $(seconds python3 -c pass) s"
echo "import torch:                    $(seconds python3 -c 'import torch') s"
echo "import torch + CUDA init:        $(seconds python3 -c 'import torch; torch.zeros(1, device="cuda")') s"
echo "import srgan_med enhance path:   $(seconds python3 -c 'import srgan_med.cli, srgan_med.enhance.run, srgan_med.enhance.engine, monai.data, nibabel') s"
for run in 1 2; do
  rm -rf "$WORK/out$run.nii" "$WORK/out$run.nii.json"
  echo "srgan-med enhance, run $run:        $(seconds python3 -m srgan_med enhance "$WORK/ct.nii" -o "$WORK/out$run.nii" --model "$WORK/x4.safetensors" --device cuda -q) s"
  python3 -c "import json; r = json.load(open('$WORK/out$run.nii.json')); print('  in-command report:', {k: r[k] for k in ('seconds', 'precision', 'batch_size')})"
done
