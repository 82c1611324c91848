// One layer's KV cache on the device and attention over it. The cache holds f16 pairs
// position by position: keys (n_ctx, kv_dim) in `kc`, values (n_ctx, kv_dim_v) in `vc`.

struct Attn {
    q: u32,          // the queries in `a`: (n, n_head * head_dim); the new keys for `store`
    out: u32,        // the output in `a`: (n, n_head * head_dim_v); the new values for `store`
    pos: u32,        // position of the batch's first token
    n: u32,          // tokens in the batch
    group: u32,      // query heads per KV head
    head_dim: u32,
    head_dim_v: u32,
    n_head: u32,
    n_kv_head: u32,
    window: u32,     // sliding window in tokens, 0 for none
    q_scale: f32,    // queries are multiplied by this first (gemma)
    s_scale: f32,    // dots by this (divided by the cap when there is one)
    cap: f32,        // soft-cap of the scores, 0 for none
    groups_x: u32,
    split: u32,      // workgroups per query head (z), each over `chunk` keys; 1: no split
    chunk: u32,
    part: u32,       // with a split: the partial results in `a`, (n, n_head, split, 2 + head_dim_v)
}

const WG: u32 = 64u;
// Keys scored per step: one per thread.
const TILE: u32 = 64u;
// Widest head the kernel holds (four value dimensions per thread).
const MAX_HEAD: u32 = 256u;
// Below every score: exp of it minus a real score is 0.
const LOW: f32 = -3.0e38;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> kc: array<u32>;
@group(0) @binding(2) var<storage, read_write> vc: array<u32>;
@group(0) @binding(3) var<storage, read> consts: array<f32>;
@group(0) @binding(4) var<uniform> p: Attn;

// The new keys (at `q`) and values (at `out`) of n tokens into the cache, rounded to f16:
// one thread per pair of elements.
@compute @workgroup_size(64)
fn store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * p.groups_x) * WG + tid;
    let kv_dim = p.n_kv_head * p.head_dim;
    let kv_dim_v = p.n_kv_head * p.head_dim_v;
    let k_pairs = p.n * kv_dim / 2u;
    let v_pairs = p.n * kv_dim_v / 2u;
    if i < k_pairs {
        let s = p.q + 2u * i;
        kc[p.pos * kv_dim / 2u + i] = pack2x16float(vec2<f32>(a[s], a[s + 1u]));
    }
    if i < v_pairs {
        let s = p.out + 2u * i;
        vc[p.pos * kv_dim_v / 2u + i] = pack2x16float(vec2<f32>(a[s], a[s + 1u]));
    }
}

var<workgroup> qs: array<f32, MAX_HEAD>;
var<workgroup> scores: array<f32, TILE>;

fn f16_round(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

fn value(i: u32) -> f32 {
    let pair = unpack2x16float(vc[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Query head `wid.x` of token `wid.y` over the cached positions it sees (causal, and
// within the window), as ggml's CPU flash attention computes one query over an f16
// cache: the query rounded to f16, each score a dot in f32, then an online softmax key
// by key whose value accumulator is rounded to f16 at every step. The threads score a
// tile of keys (one each), then each walks the tile in order for its value dimensions
// (the running maximum and sum are the same in every thread), loading the values of
// eight keys before it uses them. With a split, workgroup z takes the z-th chunk of the
// keys and leaves its maximum, sum and unnormalized values for `merge` (flash decoding,
// as ggml's CPU path splits one query's keys across threads).
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.x;
    let t = wid.y;
    let z = wid.z;
    let kvh = h / p.group;
    let kv_dim = p.n_kv_head * p.head_dim;
    let kv_dim_v = p.n_kv_head * p.head_dim_v;
    let qpos = p.pos + t;
    var first = 0u;
    if p.window > 0u && qpos + 1u > p.window {
        first = qpos + 1u - p.window;
    }
    let lo = first + z * p.chunk;
    let hi = min(first + (z + 1u) * p.chunk, qpos + 1u);
    let q0 = p.q + t * p.n_head * p.head_dim + h * p.head_dim;
    for (var d = tid; d < p.head_dim; d += WG) {
        qs[d] = f16_round(a[q0 + d] * p.q_scale);
    }
    workgroupBarrier();
    var m = LOW;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    let v_head = kvh * p.head_dim_v;
    for (var j0 = lo; j0 < hi; j0 += TILE) {
        let j = j0 + tid;
        if j < hi {
            let kb = (j * kv_dim + kvh * p.head_dim) / 2u;
            var dot = 0.0;
            for (var d = 0u; d < p.head_dim; d += 2u) {
                let k2 = unpack2x16float(kc[kb + d / 2u]);
                dot += qs[d] * k2.x + qs[d + 1u] * k2.y;
            }
            var s = dot * p.s_scale;
            if p.cap > 0.0 {
                s = tanh(s) * p.cap;
            }
            scores[tid] = s;
        }
        workgroupBarrier();
        let count = min(TILE, hi - j0);
        for (var g0 = 0u; g0 < count; g0 += 8u) {
            var vals: array<vec4<f32>, 8>;
            for (var i = 0u; i < 8u; i++) {
                let v0 = (j0 + g0 + min(i, count - 1u - g0)) * kv_dim_v + v_head;
                for (var r = 0u; r < 4u; r++) {
                    let d = min(tid + r * WG, p.head_dim_v - 1u);
                    vals[i][r] = value(v0 + d);
                }
            }
            for (var i = 0u; i < min(8u, count - g0); i++) {
                let s = scores[g0 + i];
                var ms = 1.0;
                var vs = 1.0;
                if s > m {
                    ms = exp(m - s);
                    m = s;
                } else {
                    vs = exp(s - m);
                }
                l = l * ms + vs;
                for (var r = 0u; r < 4u; r++) {
                    acc[r] = f16_round(f16_round(acc[r] * ms) + vals[i][r] * vs);
                }
            }
        }
        workgroupBarrier();
    }
    if p.split > 1u {
        let pb = p.part + ((t * p.n_head + h) * p.split + z) * (2u + p.head_dim_v);
        if tid == 0u {
            a[pb] = m;
            a[pb + 1u] = l;
        }
        for (var r = 0u; r < 4u; r++) {
            let d = tid + r * WG;
            if d < p.head_dim_v {
                a[pb + 2u + d] = acc[r];
            }
        }
        return;
    }
    let o = p.out + t * p.n_head * p.head_dim_v + h * p.head_dim_v;
    for (var r = 0u; r < 4u; r++) {
        let d = tid + r * WG;
        if d < p.head_dim_v {
            a[o + d] = acc[r] / l;
        }
    }
}

// The `split` partial results of query head `wid.x` of token `wid.y` joined: each
// chunk's values and sum scaled from its maximum to the largest, in f32.
@compute @workgroup_size(64)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.x;
    let t = wid.y;
    let stride = 2u + p.head_dim_v;
    let base = p.part + (t * p.n_head + h) * p.split * stride;
    var m = LOW;
    for (var z = 0u; z < p.split; z++) {
        m = max(m, a[base + z * stride]);
    }
    var l = 0.0;
    for (var z = 0u; z < p.split; z++) {
        l += a[base + z * stride + 1u] * exp(a[base + z * stride] - m);
    }
    let o = p.out + t * p.n_head * p.head_dim_v + h * p.head_dim_v;
    for (var d = tid; d < p.head_dim_v; d += WG) {
        var sum = 0.0;
        for (var z = 0u; z < p.split; z++) {
            sum += a[base + z * stride + 2u + d] * exp(a[base + z * stride] - m);
        }
        a[o + d] = sum / l;
    }
}
