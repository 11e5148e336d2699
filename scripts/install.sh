#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install sith-lens into it.
#
#   bash scripts/install.sh [VENV_DIR] [EXTRAS]   (defaults: .venv, dev)
#
# torch is installed first, and only when none is importable in that environment:
# an existing torch (for example a CUDA build) is kept. TORCH_SPEC overrides the pin
# (default torch==2.13.0, a CPU wheel from local disk on the project machines, the
# default CUDA wheel from PyPI elsewhere); TORCH_SPEC=none leaves torch to pip's resolver
# (the OpenCLIP environment: torchvision decides which torch it needs).
set -euo pipefail
venv="${1:-.venv}"
extras="${2:-dev}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
python="${PYTHON:-python3}"

quiet_pip() {  # pip prints one harmless "Location ... is ignored" line per local index entry
    "$venv/bin/python" -m pip "$@" 2>&1 | grep -v "is ignored" || true
    return "${PIPESTATUS[0]}"
}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "install: keeping torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
elif [ "$torch_spec" = none ]; then
    echo "install: torch left to the resolver"
else
    echo "install: no torch importable, installing $torch_spec"
    quiet_pip install -q "$torch_spec"
fi
quiet_pip install -q -e ".[$extras]"
"$venv/bin/python" -c "import sith_lens, torch; print(f'install: sith_lens {sith_lens.__version__}, torch {torch.__version__}')"
