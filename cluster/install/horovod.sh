#!/usr/bin/env bash
# Install Horovod 0.28.1 (its last release) into a venv, reproducibly.
#
# Why this exists: the 0.28.1 sdist hardcodes C++14 and does not compile against torch >= 2.1 headers,
# and there are no wheels. We download the sdist (sha256-pinned), switch CMAKE_CXX_STANDARD 14 -> 17 in
# CMakeLists.txt and in horovod/torch/CMakeLists.txt (there to C++20 when torch's headers demand it, as
# torch 2.14's do), build a wheel once and cache it per (horovod, torch, python) version, so later
# installs take seconds.
#
# Usage: cluster/install/horovod.sh PYTHON        (PYTHON = the venv's python, e.g. .venv/bin/python)
#
# Build flavour: by default CPU collectives over gloo only (no MPI/TensorFlow/MXNet, no CUDA code). With a
# CUDA torch, Horovod's CMake turns on CUDA support whenever torch sees *any* CUDA_HOME (nvcc on PATH or
# /usr/local/cuda) and then needs a full toolkit, so the CPU build also forces Pytorch_CUDA FALSE in
# cmake/Modules/FindPytorch.cmake. For NCCL collectives, on a machine with a CUDA toolkit and NCCL, run
#   HOROVOD_GPU_OPERATIONS=NCCL cluster/install/horovod.sh PYTHON
# (then HOROVOD_GPU, HOROVOD_CUDA_HOME, HOROVOD_NCCL_* and HOROVOD_BUILD_CUDA_CC_LIST are passed through,
# and CUDA_HOME must point at a full toolkit; UNTESTED: no GPU where this was written); such wheels are
# cached under a separate "-gpu-nccl" key. Other HOROVOD_* variables in the caller's environment are
# ignored by the build.
# Cache root: $BIGBATCH_WHEEL_CACHE (default ~/.cache/bigbatch/wheels). Runtime deps are installed with
# the repo's constraints.txt.
set -euo pipefail

HVD_VERSION=0.28.1
HVD_SDIST_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
# Horovod's install_requires (setup.py require_list; cffi because the torch extension is built).
HVD_RUNTIME_DEPS=(cloudpickle psutil pyyaml packaging 'cffi>=1.4.0')

die() { echo "horovod.sh: error: $*" >&2; exit 1; }
log() { echo "horovod.sh: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: $0 PYTHON"
PYTHON=$1
[[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null || die "not an executable: $PYTHON"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONSTRAINTS=$REPO_ROOT/constraints.txt
[[ -f $CONSTRAINTS ]] || die "missing $CONSTRAINTS"

GPU_OPS=${HOROVOD_GPU_OPERATIONS:-}
[[ -z $GPU_OPS || $GPU_OPS == NCCL ]] || die "HOROVOD_GPU_OPERATIONS must be NCCL or unset (MPI is not built)"

installed_ok() {  # right version importable, with NCCL if NCCL was asked for
    "$PYTHON" - "$HVD_VERSION" "$GPU_OPS" <<'EOF' >/dev/null 2>&1
import sys
import cloudpickle, psutil, yaml  # noqa: F401  (horovodrun / horovod.ray need these)
import horovod, horovod.torch
sys.exit(0 if horovod.__version__ == sys.argv[1] and (sys.argv[2] != "NCCL" or horovod.torch.nccl_built())
         else 1)
EOF
}

if installed_ok; then
    log "horovod $HVD_VERSION already installed for $PYTHON"
    exit 0
fi

# ---- cache key: horovod version, torch version, python tag (+ GPU flavour if requested) ----
read -r TORCH_VER PY_TAG TORCH_DIR < <("$PYTHON" -c 'import os, sys, torch
print(torch.__version__, "cp%d%d" % sys.version_info[:2], os.path.dirname(torch.__file__))') \
    || die "cannot import torch with $PYTHON (install torch first)"
KEY="horovod-$HVD_VERSION-torch-${TORCH_VER}-$PY_TAG${GPU_OPS:+-gpu-${GPU_OPS,,}}"
KEY=${KEY//[^A-Za-z0-9._-]/_}
CACHE_DIR=${BIGBATCH_WHEEL_CACHE:-$HOME/.cache/bigbatch/wheels}/$KEY

install_wheel() {
    local whl=$1
    log "installing runtime deps (-c constraints.txt): ${HVD_RUNTIME_DEPS[*]}"
    "$PYTHON" -m pip install -q -c "$CONSTRAINTS" "${HVD_RUNTIME_DEPS[@]}"
    log "installing $whl"
    "$PYTHON" -m pip install -q --no-deps --force-reinstall "$whl"
    installed_ok || die "installed $whl but 'import horovod.torch' (version $HVD_VERSION) still fails"
    log "done: horovod $HVD_VERSION from $whl"
}

cached_wheel() {
    local w
    for w in "$CACHE_DIR"/horovod-"$HVD_VERSION"-*.whl; do
        [[ -f $w ]] && { echo "$w"; return 0; }
    done
    return 1
}

if whl=$(cached_wheel); then
    log "cache hit: $CACHE_DIR"
    install_wheel "$whl"
    exit 0
fi

# ---- build ----
log "no cached wheel in $CACHE_DIR; building horovod $HVD_VERSION from source (takes minutes)"
# The build needs cmake and a C++ compiler: Debian's packages when missing (root, or sudo).
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
if ((${#missing[@]})); then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    log "installing build tools: ${missing[*]}"
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; } \
        || die "cannot install ${missing[*]} (needed to build horovod)"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bigbatch-horovod.XXXXXX")
PARTIAL=
trap 'rm -rf "$TMP" ${PARTIAL:+"$PARTIAL"}' EXIT

"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$TMP/dl" "horovod==$HVD_VERSION"
SDIST=$TMP/dl/horovod-$HVD_VERSION.tar.gz
[[ -f $SDIST ]] || die "pip download did not produce $SDIST"
echo "$HVD_SDIST_SHA256  $SDIST" | sha256sum -c --quiet - || die "sha256 mismatch for $SDIST"
tar -xzf "$SDIST" -C "$TMP"
SRC=$TMP/horovod-$HVD_VERSION

# patch_src FILE ERE REPLACEMENT WHAT: sed -E 's/ERE/REPLACEMENT/' on FILE; dies unless ERE matched and the
# file changed (a silent no-op patch must not happen).
patch_src() {
    local f=$1 ere=$2 repl=$3 what=$4 before
    grep -Eq "$ere" "$f" || die "patch failed ($what): no line matching '$ere' in ${f#"$SRC"/}"
    before=$(cksum <"$f")
    sed -E -i "s/$ere/$repl/" "$f"
    [[ $(cksum <"$f") != "$before" ]] || die "patch failed ($what): ${f#"$SRC"/} unchanged"
    log "patched ${f#"$SRC"/}: $what"
}
# torch >= 2.1 headers need C++17; newer ones (2.14) refuse anything below C++20 (#error in ATen.h).
TORCH_CXX_STD=17
! grep -q '__cplusplus < 202002L' "$TORCH_DIR/include/ATen/ATen.h" || TORCH_CXX_STD=20
CXX14_ERE='^([[:space:]]*)set\(CMAKE_CXX_STANDARD 14\)[[:space:]]*$'
patch_src "$SRC/CMakeLists.txt" "$CXX14_ERE" '\1set(CMAKE_CXX_STANDARD 17)' 'C++14 -> C++17'
patch_src "$SRC/horovod/torch/CMakeLists.txt" "$CXX14_ERE" "\\1set(CMAKE_CXX_STANDARD $TORCH_CXX_STD)" \
    "C++14 -> C++$TORCH_CXX_STD"
if [[ -z $GPU_OPS ]]; then
    # CPU build: with a CUDA torch, FindPytorch sets Pytorch_CUDA whenever torch finds any CUDA_HOME (any
    # nvcc on PATH or /usr/local/cuda), and the torch extension then insists on a full CUDA toolkit.
    patch_src "$SRC/cmake/Modules/FindPytorch.cmake" \
        '^(string\(TOUPPER "\$\{Pytorch_CUDA\}" Pytorch_CUDA\))$' \
        '\1\nset(Pytorch_CUDA FALSE)  # bigbatch: CPU\/gloo-only build' 'Pytorch_CUDA forced FALSE'
fi

# Build with a controlled HOROVOD_* environment: drop everything but the GPU pass-through variables.
build_env=(-u HOROVOD_WITHOUT_GLOO)
while IFS= read -r v; do
    case $v in
        HOROVOD_GPU_OPERATIONS | HOROVOD_GPU | HOROVOD_CUDA_HOME | HOROVOD_NCCL_* \
            | HOROVOD_BUILD_CUDA_CC_LIST)
            [[ -n $GPU_OPS ]] || build_env+=(-u "$v") ;;
        *) build_env+=(-u "$v") ;;
    esac
done < <(compgen -e | grep '^HOROVOD_' || true)
build_env+=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
            HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1)
[[ -z $GPU_OPS ]] || build_env+=("HOROVOD_GPU_OPERATIONS=$GPU_OPS")

start=$SECONDS
env "${build_env[@]}" "$PYTHON" -m pip wheel --no-build-isolation --no-deps --no-cache-dir \
    -w "$TMP/wheel" "$SRC"
built=("$TMP"/wheel/horovod-"$HVD_VERSION"-*.whl)
[[ -f ${built[0]} ]] || die "pip wheel produced no horovod wheel"
log "built $(basename "${built[0]}") in $((SECONDS - start))s"

# Publish atomically: copy under a hidden temp name in the cache dir, then rename.
mkdir -p "$CACHE_DIR"
name=$(basename "${built[0]}")
PARTIAL=$CACHE_DIR/.$name.tmp.$$
cp "${built[0]}" "$PARTIAL"
mv -f "$PARTIAL" "$CACHE_DIR/$name"
PARTIAL=
log "cached $CACHE_DIR/$name"

install_wheel "$CACHE_DIR/$name"
