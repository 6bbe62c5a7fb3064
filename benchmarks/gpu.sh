#!/usr/bin/env bash
# The GPU run (issue 13) on a fresh GPU machine, from the repository root:
#
#   benchmarks/gpu.sh OUT [--dry-run] [options of benchmarks/gpu.py]
#
# installs what is missing (torch for CUDA from the package index, never the CPU pin of
# the Makefile; then the project's test extra) into .venv-gpu, which sees the system's
# packages, so a CUDA torch already there is used as it is, then runs benchmarks/gpu.py:
# the CUDA tests, the kernels' speed and thresholds, nanoGPT's GPU configuration for gpt
# and nesterov, the tree benchmark if time remains, every figure as JSON under OUT, within
# 10 minutes of wall time counted from here (installation included). See docs/gpu.md.
#
# --dry-run installs nothing and rehearses the same steps on the CPU at toy sizes with the
# Python of .venv (or $PYTHON). Without a GPU and without --dry-run: one line, status 2.
set -euo pipefail
GPU_SH_START=$(date +%s)
export GPU_SH_START
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ $# -lt 1 ] || [[ "$1" == -* && "$1" != "-h" && "$1" != "--help" ]]; then
    echo "usage: benchmarks/gpu.sh OUT [--dry-run] [options of benchmarks/gpu.py]" >&2
    exit 2
fi
dry=0
for arg in "$@"; do
    if [ "$arg" = "--dry-run" ] || [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then dry=1; fi
done
if [ "$dry" = 1 ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=$PYTHON; fi
    exec "$py" benchmarks/gpu.py "$@"
fi
if ! nvidia-smi -L 2>/dev/null | grep -q "GPU"; then
    echo "gpu.sh: no NVIDIA GPU on this machine (nvidia-smi lists none); 'benchmarks/gpu.sh OUT --dry-run' rehearses the steps on the CPU" >&2
    exit 2
fi
VENV=${GPU_VENV:-.venv-gpu}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
py=$VENV/bin/python
cuda_torch() { "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
if ! cuda_torch; then
    echo "gpu.sh: installing torch for CUDA from the package index"
    # the project's range, unpinned: PyPI's Linux wheels are the CUDA builds
    "$py" -m pip install --quiet "torch>=2.5,<2.14" || {
        echo "gpu.sh: could not install torch (no network, or no wheel for this machine)" >&2; exit 2; }
fi
if ! "$py" -c "import torch_geometric, networkx, numpy, tqdm, matplotlib, pytest, hypothesis, ray" 2>/dev/null; then
    echo "gpu.sh: installing the project and its test and study extras"
    "$py" -m pip install --quiet -e ".[test,study]" || {
        echo "gpu.sh: could not install the project's dependencies" >&2; exit 2; }
fi
if ! cuda_torch; then
    echo "gpu.sh: torch $("$py" -c 'import torch; print(torch.__version__)') in $VENV sees no GPU (a CPU build, or a CUDA build newer than the driver)" >&2
    exit 2
fi
echo "gpu.sh: $("$py" -c 'import torch; print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")'), set up in $(( $(date +%s) - GPU_SH_START )) s"
exec "$py" benchmarks/gpu.py "$@"
