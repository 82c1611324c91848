#!/usr/bin/env bash
# loupe beside llama.cpp on this machine: pp and tg tokens/s for each model at 1 and 2
# threads, at each cache depth (llama-bench's -d) and KV cache type, alternating the two
# engines for several rounds, and tg as a fraction of the memory-bandwidth limit
# (bandwidth ÷ bytes read per token: the weights, plus the KV cache at that depth).
#
#   scripts/bench-vs-llamacpp.sh [--rounds 3] [--reps 5] [-p 512] [-n 128] [--threads "1 2"]
#                                [-d "0 4096"] [--synthetic-depth] [--kv-types "f16 q8_0"]
#                                [MODEL...]
#
# -d lists depths (default 0), measured in one call of each engine; --synthetic-depth fills
# them with the same made-up keys and values in both engines instead of evaluating a prompt
# (minutes instead of an hour for an 8B model at 16K; not for sliding-window models, whose
# llama.cpp cache the peer does not fill); --kv-types lists KV
# cache types, each for keys and values (default f16). llama.cpp runs with flash attention,
# the path loupe's attention follows. Models default to the two test models
# (scripts/fetch-models.sh). loupe is built as its users get it (a plain
# `cargo build --release`, into $CARGO_TARGET_DIR when set: runtime kernel dispatch, no
# native flag); llama.cpp through the peer, natively (peer/.cargo/config.toml sets
# target-cpu=native, which turns on GGML_NATIVE), in its own target directory. Needs python3
# for the table.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 REPS=5 P=512 N=128 THREADS="1 2" DEPTHS="0" KV_TYPES="f16" SYNTHETIC=()
MODELS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        -p) P=$2; shift 2 ;;
        -n) N=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        -d|--n-depth) DEPTHS=$2; shift 2 ;;
        --kv-types) KV_TYPES=$2; shift 2 ;;
        --synthetic-depth) SYNTHETIC=(--synthetic-depth); shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) MODELS+=("$1"); shift ;;
    esac
done
MODELS_DIR=${LOUPE_MODELS:-$HOME/.cache/loupe/models}
if [ ${#MODELS[@]} -eq 0 ]; then
    MODELS=("$MODELS_DIR/gemma-3-270m-Q4_K_M.gguf" "$MODELS_DIR/qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf")
fi
for m in "${MODELS[@]}"; do
    [ -f "$m" ] || { echo "model $m not found (scripts/fetch-models.sh fetches the test models)" >&2; exit 1; }
done

echo "building loupe (cargo build --release) and the peer (native llama.cpp) ..." >&2
cargo build --release --quiet
(cd peer && env -u CARGO_TARGET_DIR cargo build --release --quiet)
LOUPE=${CARGO_TARGET_DIR:-$PWD/target}/release/loupe
PEER=$PWD/peer/target/release/peer
# Both engines take a comma list of depths and measure each in one call.
DEPTH_LIST=$(echo $DEPTHS | tr ' ' ',')

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
NCPU=$(nproc)
echo "measuring memory read bandwidth ..." >&2
for t in $(echo "1 $NCPU" | tr ' ' '\n' | sort -un); do
    "$LOUPE" bench --bandwidth -t "$t" --json >>"$OUT/bandwidth.jsonl"
done

for m in "${MODELS[@]}"; do
    for t in $THREADS; do
        for kv in $KV_TYPES; do
            for r in $(seq 1 "$ROUNDS"); do
                echo "$(basename "$m") -t $t KV $kv -d $DEPTH_LIST round $r/$ROUNDS ..." >&2
                # Alternate which engine goes first, so neither always runs on a warmer machine.
                if [ $((r % 2)) -eq 1 ]; then order="peer loupe"; else order="loupe peer"; fi
                for e in $order; do
                    if [ "$e" = peer ]; then
                        cmd=("$PEER" -t "$t" bench)
                    else
                        cmd=("$LOUPE" bench -t "$t")
                    fi
                    "${cmd[@]}" "$m" -p "$P" -n "$N" -d "$DEPTH_LIST" --kv-type "$kv" \
                        --reps "$REPS" ${SYNTHETIC[@]+"${SYNTHETIC[@]}"} --json 2>>"$OUT/stderr.log" \
                        | sed "s/^/$e\t/" >>"$OUT/runs.tsv"
                done
            done
        done
    done
done
if grep -q "load average" "$OUT/stderr.log"; then
    echo "note: some runs started on a busy machine (load average > 0.5); numbers are noisy" >&2
fi

python3 - "$OUT" "$P" "$N" "$ROUNDS" "$REPS" <<'PY'
import json, statistics, sys, os
out, p, n, rounds, reps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
bw = {}
for line in open(os.path.join(out, "bandwidth.jsonl")):
    j = json.loads(line)
    bw[j["threads"]] = j["read_bytes_per_s"]
limit_bw = max(bw.values())  # the best any thread count reached
runs = {}
wbytes, kvbytes = {}, {}
def kv_name(j):
    k, v = j.get("type_k", "f16"), j.get("type_v", "f16")
    return k if k == v else f"k {k}, v {v}"
for line in open(os.path.join(out, "runs.tsv")):
    engine, js = line.rstrip("\n").split("\t", 1)
    j = json.loads(js)
    key = (j["model"], j["threads"], kv_name(j), j.get("n_depth", 0))
    runs.setdefault(key, {}).setdefault(engine, []).append(j)
    if engine == "loupe":
        wbytes[j["model"]] = j["weight_bytes_per_token"]
        kvbytes[(j["model"], kv_name(j))] = j.get("kv_bytes_per_token", 0)
pp, tg = f"pp{p}", f"tg{n}"
def med(rs, k):
    xs = [r[k]["median"] for r in rs if k in r]
    return statistics.median(xs) if xs else float("nan")
def name(test, d):
    return f"{test} @ d{d}" if d else test
print(f"memory read bandwidth: " + ", ".join(f"{bw[t]/1e9:.2f} GB/s at {t} thread(s)" for t in sorted(bw))
      + f"; tg limit = {limit_bw/1e9:.2f} GB/s / (weight bytes + depth × KV bytes) per token")
print(f"{rounds} rounds × {reps} reps each, alternating; figures are the median over rounds of each run's median (tokens/s); ratio = loupe / llama.cpp")
hdr = ("model", "t", "KV", "pp test", "llama", "loupe", "ratio", "tg test", "llama", "loupe", "ratio",
       "MiB/token", "tg limit", "llama %lim", "loupe %lim")
rows = []
for (model, t, kv, d), e in sorted(runs.items()):
    lp, ll = e.get("peer", []), e.get("loupe", [])
    if not lp or not ll:
        continue
    read = wbytes[model] + d * kvbytes.get((model, kv), 0)
    limit = limit_bw / read
    ppl, ppo, tgl, tgo = med(lp, pp), med(ll, pp), med(lp, tg), med(ll, tg)
    rows.append((os.path.basename(model), str(t), kv, name(pp, d), f"{ppl:.1f}", f"{ppo:.1f}", f"{ppo/ppl:.2f}",
                 name(tg, d), f"{tgl:.2f}", f"{tgo:.2f}", f"{tgo/tgl:.2f}", f"{read/2**20:.0f}", f"{limit:.1f}",
                 f"{100*tgl/limit:.0f}%", f"{100*tgo/limit:.0f}%"))
w = [max(len(r[i]) for r in rows + [hdr]) for i in range(len(hdr))]
fmt = lambda r: " | ".join(c.ljust(w[i]) if i in (0, 2) else c.rjust(w[i]) for i, c in enumerate(r))
print(fmt(hdr))
print("-+-".join("-" * x for x in w))
for r in rows:
    print(fmt(r))
PY
