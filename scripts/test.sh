#!/usr/bin/env bash
# Every test loupe has: the main workspace, the ARM64 build's tests under emulation
# (scripts/test-aarch64.sh), then the differential tests against llama.cpp in peer/ (its
# own workspace, always --release: ggml must be built optimised).
# Installs what is missing first (scripts/install-deps.sh: cmake, libclang, a C++ compiler,
# pip) and fetches the test models (a no-op when they are present and verified).
#
# The peer's tests run one at a time: llama.cpp's worker threads spin while they wait,
# so two model tests sharing two cores slow each other down many times over.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/fetch-models.sh
cargo test --workspace
scripts/test-aarch64.sh
(cd peer && cargo test --release -- --test-threads 1)
