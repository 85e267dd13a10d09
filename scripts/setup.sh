#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the project needs, from the repo's files.
# torch is installed explicitly first (a bare `torch` requirement resolved by pip with no torch
# present pulls a multi-GB CUDA build). torch 2.14.1 + torchvision 0.29.1 are preferred (the vision
# tests run); torch 2.13.0 alone is the fallback (torchvision tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || python -m pip install -q "torch==2.13.0"
fi
extras="scripts,test,data,docs"  # scripts: matplotlib + tqdm for figures/theory/benchmarks; docs: the site generator, so tests/test_docs.py builds it
# torchvision is optional: only named when it already imports beside this torch, so pip can
# never swap torch for another build to satisfy it.
python -c "import torchvision" >/dev/null 2>&1 && extras="$extras,vision,official-examples"
python -m pip install -q -e ".[$extras]"
# the official momentumnet 0.10 (optional: compat tests and the memory benchmark compare with it);
# --no-deps: its hard torchvision / vit-pytorch requirements are not needed for that
python -m pip install -q --no-deps "momentumnet==0.10" >/dev/null 2>&1 || echo "momentumnet not installed (optional)"
python -c "import torch, secondorder; print('secondorder', secondorder.__version__, 'torch', torch.__version__)"
