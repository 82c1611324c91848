#!/usr/bin/env bash
# Every test loupe has: the main workspace, then the differential tests against llama.cpp
# in peer/ (its own workspace, always --release: ggml must be built optimised).
# Fetches the test models first (a no-op when they are present and verified).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-models.sh
cargo test --workspace
(cd peer && cargo test --release)
