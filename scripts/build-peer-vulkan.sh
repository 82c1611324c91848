#!/usr/bin/env bash
# Builds the peer with llama.cpp's Vulkan backend, for `scripts/gpu-check.sh --peer`: llama.cpp
# on the same GPU as loupe. On Debian bookworm as root; installs what is missing.
#
#   scripts/build-peer-vulkan.sh        # then: peer/target/vulkan/release/peer gpu
#
# The binary is built for a baseline x86-64 CPU (x86-64-v3: AVX2, FMA, F16C) rather than
# this one, so it runs on the GPU machine it is taken to; it links libvulkan.so.1 and
# libstdc++. ggml-vulkan needs newer Vulkan headers than bookworm's (1.3.239 lacks
# VK_EXT_layer_settings), so the headers come from Debian trixie's libvulkan-dev, unpacked
# beside the build (not installed: its loader needs trixie's libc) and checked against
# trixie's package index; bookworm's loader is what the binary links.
set -euo pipefail
cd "$(dirname "$0")/.."

# What every peer build needs (a C++ compiler, cmake, libclang) comes from install-deps.sh;
# here only what the Vulkan backend adds, and the tools to fetch the headers.
scripts/install-deps.sh
need=()
for p in libvulkan-dev glslc spirv-headers curl xz-utils; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi

sdk=peer/target/vulkan-sdk
if [ ! -f "$sdk/include/vulkan/vulkan_hpp_macros.hpp" ] \
  || ! grep -q LayerSettingEXT "$sdk/include/vulkan/vulkan_structs.hpp"; then
  mirror=http://deb.debian.org/debian
  index=$(mktemp)
  trap 'rm -f "$index"' EXIT
  curl -fsS "$mirror/dists/trixie/main/binary-amd64/Packages.xz" | xz -d > "$index"
  entry=$(awk '/^Package: libvulkan-dev$/{p=1} p&&/^(Filename|SHA256):/{print $2} p&&/^$/{exit}' "$index")
  file=$(echo "$entry" | sed -n 1p); sum=$(echo "$entry" | sed -n 2p)
  [ -n "$file" ] && [ -n "$sum" ] || { echo "build-peer-vulkan: libvulkan-dev not in trixie's index" >&2; exit 1; }
  rm -rf "$sdk" && mkdir -p "$sdk/unpacked" "$sdk/lib"
  curl -fsS -o "$sdk/libvulkan-dev.deb" "$mirror/$file"
  echo "$sum  $sdk/libvulkan-dev.deb" | sha256sum -c --quiet
  dpkg-deb -x "$sdk/libvulkan-dev.deb" "$sdk/unpacked"
  ln -s unpacked/usr/include "$sdk/include"
  # The loader to link is bookworm's (installed with libvulkan-dev above).
  ln -s /usr/lib/x86_64-linux-gnu/libvulkan.so "$sdk/lib/libvulkan.so"
  echo "Vulkan headers: $(basename "$file")"
fi

# VULKAN_SDK: cmake's FindVulkan takes the headers and library from it (glslc from PATH).
cd peer
VULKAN_SDK=$(cd target/vulkan-sdk && pwd) RUSTFLAGS="-C target-cpu=x86-64-v3" \
  CARGO_TARGET_DIR=target/vulkan cargo build --release --features vulkan --bin peer
ls -l target/vulkan/release/peer
