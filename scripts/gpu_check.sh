#!/usr/bin/env bash
# GPU readiness check (issue 12, item 7): four parts, each printing one 'gpu_check <part>:' line and,
# when $OUT is set, writing $OUT/gpu_check_<part>.json (scripts/gpu_check.py does each part):
#   step      GLCNet training step, ResNet-50 @ 224 px, bf16, 128 pairs (GPU_CHECK_BATCH): images/s,
#             FLOPs counted with torch.utils.flop_counter.FlopCounterMode, achieved TFLOP/s and MFU
#             against the dense bf16 peak (H200: 989.4 TFLOP/s, NVIDIA's datasheet figure of 1,979
#             with sparsity halved; GPU_PEAK_TFLOPS overrides), and the bf16 matmul ceiling measured
#   loader    pretraining loader pairs/s with every core as workers (sample tiles read from GeoTIFF)
#   pretrain  200-step GLCNet pretraining through the real CLI (scripts/pretrain.py ...
#             trainer.max_steps=200), time, pairs/s and loss from its TensorBoard events
#   protocol  python scripts/protocol.py experiment=protocol_cpu protocol.pretrain_steps=<10x its
#             default>, with whatever time is left (the table goes to $OUT too)
# Whole run within 8 minutes on one H200 (GPU_CHECK_BUDGET_S, default 450 s after the install).
#
# On the lent GPU machine, which lacks some packages (see scripts/gpu_wheels.sh), in one call:
#   here:    bash scripts/gpu_wheels.sh                     (once; .whl/ is git-ignored)
#   device:  run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# The script installs the wheels itself when hydra & co. are missing:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# On a CPU, GPU_CHECK_SMOKE=1 shrinks every part to seconds (tests/test_gpu_check.py runs that).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
SMOKE=${GPU_CHECK_SMOKE:-0}
MODE=$([ "$SMOKE" = 1 ] && echo smoke || echo full)
WORK=${GPU_CHECK_WORK:-/tmp/glcnet_gpu_check_$MODE}  # sample data and run folders
BUDGET=${GPU_CHECK_BUDGET_S:-450}

if ! $PY -c "import hydra, segmentation_models_pytorch, albumentations, rasterio" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: packages missing and no .whl/ (run 'bash scripts/gpu_wheels.sh' first)" >&2
    exit 2
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export GLCNET_PROJECT_ROOT="$WORK" PYTHONUNBUFFERED=1
mkdir -p "$WORK"
deadline=$(($(date +%s) + BUDGET))
smoke=()
[ "$SMOKE" = 1 ] && smoke=(--smoke)
echo "gpu_check ($MODE) in $WORK; $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())')"

failed=0
for part in step loader pretrain protocol; do
  $PY scripts/gpu_check.py "$part" --deadline "$deadline" "${smoke[@]}" || failed=$((failed + 1))
done
echo "gpu_check: done, $failed part(s) failed"
[ "$failed" -eq 0 ]
