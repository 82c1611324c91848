#!/usr/bin/env bash
# loupe's ARM64 tests on an x86_64 machine, under user-mode emulation (qemu-aarch64):
#  1. the quant crate's tests, kernels included, for three CPU models: qemu's `max`
#     (NEON, dotprod, i8mm), `neoverse-n1` (dotprod, no i8mm) and `cortex-a72` (plain
#     NEON), so every kernel tier and every fallback runs;
#  2. the whole model: the gemma test model's logits for one prompt and its first 8
#     greedy tokens (engine/examples/logit_bits.rs), on ARM with the i8mm, dotprod and
#     neon tables (on the same three CPU models), must equal bit for bit what the x86
#     build computes with its scalar kernels (the ARM tiers give the scalar reference's
#     bits, and the float code around them is the same Rust on both).
# Emulated SIMD is 10-15x slower than native: these are correctness tests, never timings.
#
#   scripts/test-aarch64.sh            # the tests above
#   scripts/test-aarch64.sh --clippy   # clippy for aarch64 instead (quant and engine:
#                                      # the ARM kernels compile only there)
#
# Installs what is missing (as root, from Debian): the arm64 architecture in dpkg,
# Debian's Rust 1.96 (rustc-web, cargo-web) with its arm64 standard library (rustup's
# toolchain cannot use Debian's std, so the ARM build runs Debian's rustc), the aarch64
# cross gcc as linker, and qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-aarch64: $*" >&2; exit 1; }
say() { echo "test-aarch64: $*"; }

host=$(uname -m)
[ "$host" = x86_64 ] || die "runs on x86_64 hosts (this is $host); on an ARM64 machine run cargo test -p loupe-quant natively"

mode="${1:-test}"
case "$mode" in test|--clippy) ;; *) die "unknown option '$mode' (expected --clippy or nothing)";; esac

packages=(rustc-web cargo-web rust-web-clippy libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
  libc6-dev-arm64-cross qemu-user)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run this script as root to install them"
  say "installing ${missing[*]}"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

target=aarch64-unknown-linux-gnu
# Debian's rustc and rustdoc for the ARM build, in a target folder of its own (its host
# artifacts must not mix with rustup's), gcc as linker and qemu as the runner. The runner
# takes no -L: the program loads the arm64 libc that dpkg installed for arm64.
arm=(env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR=target/aarch64
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64)

if [ "$mode" = --clippy ]; then
  # Debian's cargo runs Debian's clippy, which matches Debian's rustc and arm64 std.
  PATH="/usr/bin:$PATH" CARGO_TARGET_DIR=target/aarch64 /usr/bin/cargo clippy -q \
    --target "$target" -p loupe-quant -p loupe-engine --no-default-features --all-targets -- -D warnings
  say "clippy for $target: clean"
  exit 0
fi

say "building the quant tests and the logit_bits example for $target"
"${arm[@]}" cargo build -q --target "$target" -p loupe-quant --lib --tests
"${arm[@]}" cargo build -q --target "$target" -p loupe-engine --no-default-features --example logit_bits

for cpu in max neoverse-n1 cortex-a72; do
  say "quant tests on qemu's $cpu CPU"
  QEMU_CPU=$cpu "${arm[@]}" cargo test -q --target "$target" -p loupe-quant --lib --tests
done

models="${LOUPE_MODELS:-$HOME/.cache/loupe/models}"
model="$models/gemma-3-270m-Q4_K_M.gguf"
[ -f "$model" ] || scripts/fetch-models.sh gemma

say "the whole model: x86 scalar kernels against ARM i8mm, dotprod and neon"
cargo build -q -p loupe-engine --example logit_bits
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
LOUPE_KERNELS=scalar target/debug/examples/logit_bits "$model" >"$out/x86"
arm_bin="target/aarch64/$target/debug/examples/logit_bits"
QEMU_CPU=max qemu-aarch64 "$arm_bin" "$model" >"$out/i8mm"
QEMU_CPU=neoverse-n1 qemu-aarch64 "$arm_bin" "$model" >"$out/dotprod"
QEMU_CPU=cortex-a72 qemu-aarch64 "$arm_bin" "$model" >"$out/neon"
cat "$out/x86"
status=0
for tier in i8mm dotprod neon; do
  # The first line names the kernel table; everything after it must match.
  head -n1 "$out/$tier" | grep -qx "kernels $tier" \
    || die "the ARM run on the $tier CPU used $(head -n1 "$out/$tier")"
  if diff <(tail -n +2 "$out/x86") <(tail -n +2 "$out/$tier") >"$out/diff"; then
    say "ARM $tier: the same logits bits and tokens as x86 scalar"
  else
    echo "test-aarch64: ARM $tier differs from x86 scalar (< x86, > ARM):" >&2
    cat "$out/diff" >&2
    status=1
  fi
done
exit $status
