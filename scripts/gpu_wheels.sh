#!/usr/bin/env bash
# Download the Python packages glcnet needs that the lent GPU machine (nvidia-h200: Python 3.12,
# x86-64, torch 2.11, lightning, torchmetrics, timm, opencv, tensorboard, no network) lacks, as
# cp312 manylinux / pure-Python wheels into .whl/ (git-ignored), for scripts/gpu_check.sh.
#
#   bash scripts/gpu_wheels.sh            # here, where PyPI is reachable; prints the total size
#
# The device call then carries .whl and installs them first (gpu_check.sh does this itself when
# hydra is missing):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# i.e. run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540).
#
# Versions are the ones the test suite runs with here. --no-deps: every package the device lacks is
# named below (checked against each wheel's Requires-Dist): attrs, certifi, click, pyparsing,
# numpy, scipy, PyYAML, pillow, tqdm, safetensors, huggingface-hub, timm, torchvision and
# opencv-python-headless are on the device already. pip accepts pure-Python (py3-none-any) wheels
# under the --platform list below without a '--platform any' (its tag list for a platform ends
# with the 'none-any' tags). antlr4-python3-runtime 4.9.3 (pinned by omegaconf) is published as
# an sdist only, so it is built into a pure-Python wheel here with `pip wheel`.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-python3 -m pip}
DEST=${WHEEL_DIR:-.whl}
LIMIT_MIB=64  # the device call carries at most 64 MiB of working tree, wheels included

BINARY=(
  segmentation-models-pytorch==0.6.0
  hydra-core==1.3.8
  omegaconf==2.3.1
  albumentations==2.0.8
  albucore==0.0.24
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  simsimd==6.5.16
  stringzilla==5.3.2
  rasterio==1.4.4
  affine==3.0.1
  cligj==0.7.2
  click-plugins==1.1.1.2
)
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)

rm -rf "$DEST"
mkdir -p "$DEST"
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${BINARY[@]}"
$PIP wheel -q --no-deps --no-build-isolation -w "$DEST" "${SOURCE_ONLY[@]}"

ls -1 "$DEST"
count=$(find "$DEST" -type f -name '*.whl' | wc -l)
expected=$((${#BINARY[@]} + ${#SOURCE_ONLY[@]}))
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu_wheels: $count wheels, $mib MiB in $DEST (limit $LIMIT_MIB MiB with the working tree)"
if [ "$count" -ne "$expected" ]; then
  echo "gpu_wheels: expected $expected wheels, got $count" >&2
  exit 1
fi
if [ "$bytes" -ge $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels: $mib MiB is over the $LIMIT_MIB MiB a device call carries" >&2
  exit 1
fi
