#!/usr/bin/env bash
# Create or refresh the project's virtual environment, picking a torch build for this machine.
#
#   scripts/setup-venv.sh [VENV_DIR]        (default .venv)
#
# torch is installed before the project so that the project's loose `torch>=...` requirement is
# already met and pip never swaps in a different build:
#   - with a working NVIDIA driver (nvidia-smi lists a GPU): the default PyPI build, which is CUDA;
#   - otherwise: the CPU build. WINNOW_TORCH_CPU names the version (default 2.13.0, whose CPU wheel
#     this project's machines keep on local disk); WINNOW_TORCH_INDEX, if set, is used as pip's
#     index for it (e.g. https://download.pytorch.org/whl/cpu on a machine without that wheel).
set -euo pipefail

venv=${1:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "winnow: creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "winnow: NVIDIA GPU found, installing the CUDA build of torch"
    "${pip[@]}" install torch
  else
    version=${WINNOW_TORCH_CPU:-2.13.0}
    echo "winnow: no GPU found, installing the CPU build of torch $version"
    if [ -n "${WINNOW_TORCH_INDEX:-}" ]; then
      "${pip[@]}" install "torch==$version" --index-url "$WINNOW_TORCH_INDEX"
    else
      "${pip[@]}" install "torch==$version"
    fi
  fi
fi

echo "winnow: installing winnow, its dependencies and the export formats' (the export extra)"
"${pip[@]}" install -e ".[dev,export]"
touch "$venv/.winnow-installed"
