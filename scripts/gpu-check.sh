#!/usr/bin/env bash
# What loupe's GPU backend does on this machine's GPU, from a prebuilt `loupe` binary
# alone: nothing installed and no model needed (the models are synthesized).
#
#   scripts/gpu-check.sh [--reps N] [--types Q4_K_M,Q4_0] [--shape llama3-8b] [--dir DIR]
#                        [--vocab-from MODEL] [--gpu WHICH] [--depth N] [--peer PEER] [LOUPE]
#
# Prints the adapters and the chosen adapter's copy bandwidth, checks that the GPU agrees
# with the CPU (a synthetic small model of each type scored against the CPU path by
# `loupe compare --offload all` over the prompt, batch and one-token paths and two cache
# types; status 3 at the end when it does not), then for a synthetic
# llama3-8b of each type: `loupe bench -p 512 -n 128` with every layer and the output on
# the GPU and on the CPU alone, tg as a fraction of the bandwidth limit (weights read per
# token over the copy bandwidth), the GPU/CPU ratios, the device time per pass of the
# 512-token prompt and per generated token by kernel (each dispatch timed with timestamp
# queries; each matmul's weights read per second of its time, for each variant below too)
# with the share of the
# device's span spent between dispatches, tg with the float mat-vecs instead of the int8
# ones (LOUPE_GPU_INT8=off), with the int8 mat-vecs giving a lane a block rather than a word
# (LOUPE_GPU_WORDS=off), with a subgroup per row of the mat-vecs rather than a workgroup
# (LOUPE_GPU_SPLIT=off), with one dispatch per matrix instead of stacked Q/K/V and
# gate/up (LOUPE_GPU_STACK=off), and tg at depth 0 and --depth (default 4096, a synthetic
# cache) over an f16 and a q8_0 KV cache with every layer on the GPU. With `--peer PEER` (the
# peer from scripts/build-peer-vulkan.sh) llama.cpp's Vulkan backend runs the same
# benchmarks on the same GPU and models, and loupe's figures are also given as ratios to
# it. The synthetic models are kept in DIR (default /tmp/loupe-gpu-check) for a rerun.
# `--gpu software --shape tiny` runs the script's plumbing on a software driver (a
# functional check, never a speed).
#
# Needs a Vulkan driver (the GPU vendor's, with the Vulkan loader libvulkan.so.1); on
# macOS, Metal. Without one it says so and exits with status 2.
set -euo pipefail

reps=3
types=Q4_K_M,Q4_0
dir=/tmp/loupe-gpu-check
vocab=generated
shape=llama3-8b
gpu=auto
depth=4096
loupe=
peer=
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --vocab-from) vocab=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --depth) depth=$2; shift 2 ;;
    --peer) peer=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) loupe=$1; shift ;;
  esac
done
if [ -z "$loupe" ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  for c in "$here/target/release/loupe" "$(command -v loupe || true)"; do
    [ -n "$c" ] && [ -x "$c" ] && { loupe=$c; break; }
  done
fi
[ -n "$loupe" ] && [ -x "$loupe" ] || { echo "gpu-check: no loupe binary (give its path)" >&2; exit 1; }
mkdir -p "$dir"
if [ -n "$peer" ]; then
  [ -x "$peer" ] || { echo "gpu-check: --peer $peer is not an executable" >&2; exit 1; }
  # llama.cpp's Vulkan backend skips software drivers unless picked by index; on a machine
  # whose only Vulkan device is lavapipe, that is index 0.
  [ "$gpu" = software ] && export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
fi

# A field of a one-line JSON object: number, string or bool (no jq on a bare machine).
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -1; }
# The median of a test ("tg128") in bench's JSON line.
median() { sed -n "s/.*\"$1\":{\"max\":[^,]*,\"median\":\([^,}]*\).*/\1/p;s/.*\"$1\":{\"median\":\([^,}]*\).*/\1/p" | head -1; }
# The matmuls' lines (device time and weight rate) and the dispatch total of a profiled
# tg16 of $model with the environment settings given, to see which kernels a variant
# changes.
tg_profile() {
  env "$@" LOUPE_GPU_PROFILE=1 "$loupe" bench --reps 1 -p 0 -n 16 --gpu-layers all --gpu "$gpu" "$model" 2>&1 \
    | grep -E '^  (matmul|all dispatches)' || true
}

echo "== loupe $("$loupe" --version | awk '{print $2}') on $(uname -srm), $(nproc) CPUs"
echo "== adapters"
"$loupe" gpu
if [ -n "$peer" ]; then
  echo "== llama.cpp's GPUs (peer)"
  "$peer" gpu || { echo "gpu-check: the peer did not start (it links libvulkan.so.1 and libstdc++)" >&2; exit 1; }
fi
if [ "$gpu" = auto ] && ! "$loupe" gpu --json | grep -q '"kind":"\(discrete\|integrated\)"'; then
  if ! { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; } && [ "$(uname)" = Linux ]; then
    echo "gpu-check: no Vulkan loader (libvulkan.so.1): install the GPU driver's Vulkan support (Debian: libvulkan1 and the vendor's driver)" >&2
  else
    echo "gpu-check: no hardware GPU adapter found (no Vulkan/Metal/DirectX 12 driver for a GPU here)" >&2
    # Seen on an NVIDIA machine with a bare userland: the loader alone found no adapter;
    # with Debian's libglvnd packages beside it, NVIDIA's Vulkan driver loaded.
    if compgen -G "/usr/share/vulkan/icd.d/nvidia*.json" >/dev/null \
      || compgen -G "/etc/vulkan/icd.d/nvidia*.json" >/dev/null \
      || compgen -G "/usr/local/nvidia/share/vulkan/icd.d/nvidia*.json" >/dev/null; then
      ldconfig -p 2>/dev/null | grep -q 'libGLdispatch' \
        || echo "gpu-check: NVIDIA's Vulkan driver needs libglvnd (Debian: libglvnd0 libglx0 libegl1)" >&2
    fi
  fi
  exit 2
fi

echo "== bandwidth"
bw_json=$("$loupe" gpu --bandwidth --json --gpu "$gpu")
echo "$bw_json"
gbps=$(echo "$bw_json" | field gb_per_s)
echo "copy bandwidth: $gbps GB/s (read + write)"

# Agreement first: speed from kernels that disagree with the CPU would mean nothing. A
# synthetic `small` model of each type (random weights whose likeliest tokens stand
# apart) is scored with every layer on the GPU against the CPU (`loupe compare
# --offload`): each chunk at once (the prompt path), in batches of 8, and token by token
# (the generation path), over an f16 and a q8_0 cache. It agrees at a mean KLD up to
# 0.002: lavapipe gives 2e-4 to 5e-4, as far as the CPU's own batch and one-token paths
# lie apart on this model, and a planted kernel error (one key's score per head off by
# 0.5) gave 0.0048. Same top is shown, not judged: near ties swap.
echo "== agreement with the CPU: synthetic small models, every layer on the GPU"
disagree=0
for ty in ${types//,/ }; do
  small="$dir/small-$ty.gguf"
  [ -s "$small" ] || "$loupe" synth --shape small --type "$ty" --vocab-from generated "$small" >/dev/null
  for kv in f16 q8_0; do
    for b in 128 8 1; do
      if ! j=$("$loupe" compare "$small" --offload all --gpu "$gpu" --kv-type "$kv" --batch "$b" \
        --ctx 128 --chunks 2 --no-speed --json 2>"$dir/compare.err"); then
        echo "  small $ty, $kv cache, batch $b: compare failed: $(tail -1 "$dir/compare.err")"
        disagree=1
        continue
      fi
      kld=$(echo "$j" | field kld_mean); top=$(echo "$j" | field same_top)
      verdict=$(awk -v k="$kld" -v t="$top" 'BEGIN { print (k <= 0.002) ? "agrees" : "DISAGREES" }')
      [ "$verdict" = agrees ] || disagree=1
      awk -v ty="$ty" -v kv="$kv" -v b="$b" -v k="$kld" -v t="$top" -v v="$verdict" \
        'BEGIN { printf "  small %s, %s cache, batch %s: mean KLD %.5f, same top %.1f%%: %s\n", ty, kv, b, k, 100 * t, v }'
    done
  done
done

for ty in ${types//,/ }; do
  model="$dir/$shape-$ty.gguf"
  if [ ! -s "$model" ]; then
    echo "== synth $shape $ty"
    t0=$(date +%s)
    "$loupe" synth --shape "$shape" --type "$ty" --vocab-from "$vocab" "$model"
    echo "synthesized in $(( $(date +%s) - t0 )) s"
  fi
  echo "== $shape $ty: GPU (all layers and the output)"
  gpu_json=$("$loupe" bench --json --reps "$reps" -p 512 -n 128 --gpu-layers all --gpu "$gpu" "$model")
  echo "$gpu_json"
  peer_json=
  if [ -n "$peer" ]; then
    echo "== $shape $ty: llama.cpp's Vulkan backend (peer, all layers and the output, flash attention)"
    peer_json=$("$peer" bench --json --reps "$reps" -p 512 -n 128 --gpu-layers all "$model")
    echo "$peer_json"
  fi
  echo "== $shape $ty: where the GPU's time goes per pass of a 512-token prompt and per generated token (LOUPE_GPU_PROFILE=1)"
  LOUPE_GPU_PROFILE=1 "$loupe" bench --reps 1 -p 512 -n 32 --gpu-layers all --gpu "$gpu" "$model" 2>&1 \
    | sed -n '/on the GPU:/,/^load/p' | sed '$d'
  echo "== $shape $ty: GPU tg128 with the float mat-vecs (LOUPE_GPU_INT8=off)"
  float_json=$(LOUPE_GPU_INT8=off "$loupe" bench --json --reps "$reps" -p 0 -n 128 --gpu-layers all --gpu "$gpu" "$model")
  echo "$float_json"
  tg_profile LOUPE_GPU_INT8=off
  echo "== $shape $ty: GPU tg128 with a lane per block in the int8 mat-vecs (LOUPE_GPU_WORDS=off)"
  blocks_json=$(LOUPE_GPU_WORDS=off "$loupe" bench --json --reps "$reps" -p 0 -n 128 --gpu-layers all --gpu "$gpu" "$model")
  echo "$blocks_json"
  tg_profile LOUPE_GPU_WORDS=off
  echo "== $shape $ty: GPU tg128 with a subgroup per row in the mat-vecs (LOUPE_GPU_SPLIT=off)"
  rows_json=$(LOUPE_GPU_SPLIT=off "$loupe" bench --json --reps "$reps" -p 0 -n 128 --gpu-layers all --gpu "$gpu" "$model")
  echo "$rows_json"
  tg_profile LOUPE_GPU_SPLIT=off
  echo "== $shape $ty: GPU tg128 with one dispatch per matrix (LOUPE_GPU_STACK=off)"
  single_json=$(LOUPE_GPU_STACK=off "$loupe" bench --json --reps "$reps" -p 0 -n 128 --gpu-layers all --gpu "$gpu" "$model")
  echo "$single_json"
  tg_profile LOUPE_GPU_STACK=off
  echo "== $shape $ty: CPU alone"
  cpu_json=$("$loupe" bench --json --reps "$reps" -p 512 -n 128 --gpu off "$model")
  echo "$cpu_json"
  wb=$(echo "$gpu_json" | field weight_bytes_per_token)
  g_pp=$(echo "$gpu_json" | median pp512); g_tg=$(echo "$gpu_json" | median tg128)
  c_pp=$(echo "$cpu_json" | median pp512); c_tg=$(echo "$cpu_json" | median tg128)
  f_tg=$(echo "$float_json" | median tg128)
  s_tg=$(echo "$single_json" | median tg128)
  b_tg=$(echo "$blocks_json" | median tg128)
  r_tg=$(echo "$rows_json" | median tg128)
  awk -v ty="$ty" -v shape="$shape" -v wb="$wb" -v gbps="$gbps" -v gpp="$g_pp" -v gtg="$g_tg" -v cpp="$c_pp" -v ctg="$c_tg" -v ftg="$f_tg" -v stg="$s_tg" -v btg="$b_tg" -v rtg="$r_tg" 'BEGIN {
    limit = gbps * 1e9 / wb;
    printf "%s %s: weights %.2f GiB read per token\n", shape, ty, wb / 2^30;
    printf "  GPU pp512 %.1f tok/s, tg128 %.1f tok/s = %.1f%% of the bandwidth limit (%.0f tok/s)\n", gpp, gtg, 100 * gtg / limit, limit;
    printf "  CPU pp512 %.1f tok/s, tg128 %.1f tok/s\n", cpp, ctg;
    printf "  GPU / CPU: pp512 %.2fx, tg128 %.2fx\n", gpp / cpp, gtg / ctg;
    printf "  GPU tg128 with int8 mat-vecs / float ones: %.1f / %.1f tok/s = %.2fx\n", gtg, ftg, gtg / ftg;
    printf "  GPU tg128 as by default (int8 mat-vecs a lane per word on a hardware adapter) / a lane per block: %.1f / %.1f tok/s = %.2fx\n", gtg, btg, gtg / btg;
    printf "  GPU tg128 as by default (a workgroup per mat-vec row on a hardware adapter) / a subgroup per row: %.1f / %.1f tok/s = %.2fx\n", gtg, rtg, gtg / rtg;
    printf "  GPU tg128 with stacked Q/K/V and gate/up / one dispatch per matrix: %.1f / %.1f tok/s = %.2fx\n", gtg, stg, gtg / stg;
  }'
  if [ -n "$peer_json" ]; then
    l_pp=$(echo "$peer_json" | median pp512); l_tg=$(echo "$peer_json" | median tg128)
    awk -v wb="$wb" -v gbps="$gbps" -v gpp="$g_pp" -v gtg="$g_tg" -v lpp="$l_pp" -v ltg="$l_tg" 'BEGIN {
      limit = gbps * 1e9 / wb;
      printf "  llama.cpp Vulkan pp512 %.1f tok/s, tg128 %.1f tok/s = %.1f%% of the bandwidth limit\n", lpp, ltg, 100 * ltg / limit;
      printf "  loupe GPU / llama.cpp Vulkan: pp512 %.2fx, tg128 %.2fx\n", gpp / lpp, gtg / ltg;
    }'
  fi
  for kv in f16 q8_0; do
    echo "== $shape $ty: GPU tg32 at depth 0 and $depth, $kv KV cache"
    "$loupe" bench --reps "$reps" -p 0 -n 32 -d "0,$depth" --synthetic-depth --kv-type "$kv" \
      --gpu-layers all --gpu "$gpu" "$model" 2>&1 | grep -E '^ *tg|^gpu:' || true
    if [ -n "$peer" ]; then
      echo "   llama.cpp's Vulkan backend, the same synthetic cache:"
      "$peer" bench --reps "$reps" -p 0 -n 32 -d "0,$depth" --synthetic-depth --kv-type "$kv" \
        --gpu-layers all "$model" 2>&1 | grep -E '^ *tg' || true
    fi
  done
done
if [ "$disagree" != 0 ]; then
  echo "gpu-check: the GPU disagrees with the CPU (see the agreement section): its speed figures are not to be trusted" >&2
  exit 3
fi
