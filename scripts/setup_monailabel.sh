#!/usr/bin/env bash
# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
#
# Create (or reuse) the virtual environment that runs the MONAI Label server for our bundles.
#
# MONAI Label 0.8.5 needs pins that conflict with the project environment (numpy<2, pydicom<3, ...), so it
# lives in its own venv. See ../shared/ECOSYSTEM.md section 4.4 for why each pin is there.
#
#   scripts/setup_monailabel.sh [VENV_DIR]
#
# VENV_DIR defaults to $MONAILABEL_VENV, else <repo>/.venv-monailabel. A complete venv (marker file written
# after a successful install and import check, with the same pins) is reused in a few seconds.
#
# Environment:
#   MONAILABEL_VENV      where the venv goes (when no argument is given)
#   MONAILABEL_PYTHON    interpreter that creates the venv (default: python3)
#   MONAILABEL_TORCH     torch/torchvision requirement pair; the two builds must match (default below)
#
# Exit status: 0 ready, 2 usage or interpreter problem, 3 pip could not reach the package registries,
# 1 anything else. The last line printed on success is the venv path.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${MONAILABEL_VENV:-$REPO/.venv-monailabel}}"
PYTHON="${MONAILABEL_PYTHON:-python3}"
TORCH_SPEC="${MONAILABEL_TORCH:-torch==2.14.1 torchvision==0.29.1}"
# shellcheck disable=SC2206  # word splitting of the pin list is intended
PINS=($TORCH_SPEC "monailabel==0.8.5" "monai==1.6.1" "pydicom<3" "pynetdicom<3" "dicomweb-client<0.60" "numpy<2" "setuptools")
MARKER="$VENV/.ssl-monai-bundles-monailabel"
WANT="${PINS[*]}"

# the venv is installed without bytecode (--no-compile, below): its imports here must be free to cache theirs
unset PYTHONDONTWRITEBYTECODE

log() { echo "[setup_monailabel] $*" >&2; }

ready() {
    [[ -f "$MARKER" && -x "$VENV/bin/python" && "$(cat "$MARKER")" == "$WANT" ]] || return 1
    "$VENV/bin/python" -c "import monailabel, torchvision" >/dev/null 2>&1
}

if ready; then
    log "reusing $VENV"
    echo "$VENV"
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "interpreter '$PYTHON' not found (set MONAILABEL_PYTHON)"
    exit 2
fi

mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
MARKER="$VENV/.ssl-monai-bundles-monailabel"

# one installer at a time for this venv (two pytest sessions may start together)
LOCK="${TMPDIR:-/tmp}/setup_monailabel-$(printf '%s' "$VENV" | md5sum | cut -c1-12).lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    flock 9
    if ready; then
        log "reusing $VENV (made while waiting for the lock)"
        echo "$VENV"
        exit 0
    fi
fi

start=$SECONDS
rm -f "$MARKER"
if [[ -e "$VENV" && ! -x "$VENV/bin/python" ]]; then
    if [[ -f "$VENV/pyvenv.cfg" ]]; then
        log "removing the broken venv $VENV"
        rm -rf "$VENV"
    else
        log "$VENV exists and is not a virtual environment; choose another folder"
        exit 2
    fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

log "installing ${WANT} (several minutes and about 8 GB the first time)"
PIP_LOG="$(mktemp)"
trap 'rm -f "$PIP_LOG"' EXIT
# --no-compile: byte-compiling every installed module costs about a minute of CPU (python -m compileall on the venv:
# 58 s); Python compiles what the server imports on first use instead (`import monailabel, torchvision, monai`
# took 18 s instead of 10 s the first time; the first server start in the test suite about 27 s longer). That
# bytecode must be written even where PYTHONDONTWRITEBYTECODE is set (as on this project's machines, see the unset
# at the top; the tests' servers drop it too), or every later start compiles the same modules from source again.
if ! "$VENV/bin/python" -m pip install --no-compile --disable-pip-version-check --progress-bar off "${PINS[@]}" >"$PIP_LOG" 2>&1; then
    tail -n 40 "$PIP_LOG" >&2
    if grep -qiE "NewConnectionError|ConnectTimeout|Temporary failure in name resolution|Network is unreachable|Max retries exceeded|ProxyError|Connection refused" "$PIP_LOG"; then
        log "pip cannot reach the package registries"
        exit 3
    fi
    log "pip install failed"
    exit 1
fi

# the server imports torchvision at start-up: a torch/torchvision build mismatch fails here, not later
if ! "$VENV/bin/python" -c "import monailabel, torchvision, monai; print('monailabel', monailabel.__version__, '| monai', monai.__version__, '| torch', __import__('torch').__version__, '| torchvision', torchvision.__version__)" >&2; then
    log "the venv was installed but 'import monailabel, torchvision' fails"
    exit 1
fi

echo "$WANT" >"$MARKER"
log "ready in $((SECONDS - start)) s: $VENV (activate it, or put $VENV/bin first on PATH, before running 'monailabel')"
echo "$VENV"
