// One layer's KV cache on the device and attention over it. The cache holds each
// position's heads in turn, each head's row in the cache's format, as the CPU's cache
// stores a row, padded to whole words (`k_row`, `v_row` bytes): keys in `kc`, values in
// `vc`. The formats are the constants K_TYPE and V_TYPE the host puts before this source
// (one pipeline per pair): 0 f16, 1 f32, 2 Q8_0 blocks, 3 Q4_0 blocks.

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
    k_row: u32,      // bytes of one head's keys (values) at one position
    v_row: u32,
    rope_table: u32, // the cos/sin table in `a` when keys and queries are turned as read
    rope: u32,       // rotated dimensions << 1 | the pairs' layout (1 NeoX halves), or NO_ROPE
    new_k: u32,      // `attend` of one token over an f16 or f32 cache: its new keys and
    new_v: u32,      // values in `a`, which it writes into the cache itself; else NO_ROPE
    slots: u32,      // `attend`'s query heads per workgroup | its tokens per workgroup << 16
}

const WG: u32 = 64u;
// Keys scored per step: one per thread.
const TILE: u32 = 64u;
// Widest head the kernel holds. (QB, the most queries an `attend` workgroup takes, the
// host puts before this source.)
const MAX_HEAD: u32 = 256u;
// Below every score: exp of it minus a real score is 0.
const LOW: f32 = -3.0e38;
const F16: u32 = 0u;
const F32: u32 = 1u;
const Q8_0: u32 = 2u;
const Q4_0: u32 = 3u;

const NO_ROPE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> kc: array<u32>;
@group(0) @binding(2) var<storage, read_write> vc: array<u32>;
@group(0) @binding(3) var<storage, read> consts: array<f32>;
@group(0) @binding(4) var<uniform> p: Attn;

fn f16_round(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

// Element `j` of token `t`'s head at `base` in `a`, turned by RoPE when `p.rope` asks
// for it, as the `rope` op (`ops.wgsl`) turns it in place (`rope.wgsl`).
fn roped(base: u32, j: u32, t: u32) -> f32 {
    let n_rot = p.rope >> 1u;
    if p.rope == NO_ROPE || j >= n_rot {
        return a[base + j];
    }
    let halves = (p.rope & 1u) == 1u;
    let i = select(j / 2u, j % (n_rot / 2u), halves);
    let ij = rope_pair(i, n_rot, halves);
    let cs = p.rope_table + t * n_rot + 2u * i;
    let y = rope_turn(a[base + ij.x], a[base + ij.y], a[cs], a[cs + 1u]);
    return select(y.y, y.x, j == ij.x);
}

// Element `e` of the new keys (`turn`, RoPE as `roped`) or values at `src` in `a`: n
// tokens' heads of `d`.
fn new_elem(src: u32, e: u32, d: u32, turn: bool) -> f32 {
    if !turn || p.rope == NO_ROPE {
        return a[src + e];
    }
    let j = e % d;
    return roped(src + e - j, j, e / (p.n_kv_head * d));
}

// ---- writing: each thread writes its unit's words straight into the cache ----

// The word being filled, how many of its bytes are, where it goes and into which cache:
// a head's row of blocks is written a byte at a time in order, a whole word per store.
// (Scalars, not an array of the row: a private array indexed at run time is scratch
// memory, which a software driver sets up for every dispatch of a kernel that has one.)
var<private> out_word: u32;
var<private> out_fill: u32;
var<private> out_at: u32;
var<private> out_values: bool;

fn put_word(at: u32, w: u32, values: bool) {
    if values {
        vc[at] = w;
    } else {
        kc[at] = w;
    }
}

fn put_byte(v: u32) {
    out_word |= (v & 0xffu) << (8u * out_fill);
    out_fill++;
    if out_fill == 4u {
        put_word(out_at, out_word, out_values);
        out_at++;
        out_word = 0u;
        out_fill = 0u;
    }
}

fn put_f16(x: f32) {
    let bits = pack2x16float(vec2<f32>(x, 0.0));
    put_byte(bits);
    put_byte(bits >> 8u);
}

// The `d` elements from `e0` of the new keys or values at `src` (see `new_elem`) as
// blocks from cache word `at`, as the CPU's cache quantizes them: Q8_0 as activations
// (scale amax/127 stored as f16, quants rounded half to even, `quantize_activation`),
// Q4_0 by ggml's reference (scale max/-8 where max is the first element of largest
// magnitude, quants min(15, trunc(x/scale + 8.5))). The last word's spare bytes are 0.
fn put_blocks(ty: u32, src: u32, e0: u32, d: u32, turn: bool, at: u32, values: bool) {
    out_word = 0u;
    out_fill = 0u;
    out_at = at;
    out_values = values;
    for (var b = 0u; b < d / 32u; b++) {
        let x0 = e0 + 32u * b;
        var amax = 0.0;
        var top = 0.0;
        for (var j = 0u; j < 32u; j++) {
            let v = new_elem(src, x0 + j, d, turn);
            if abs(v) > amax {
                amax = abs(v);
                top = v;
            }
        }
        if ty == Q8_0 {
            put_f16(amax / 127.0);
            var inv = 0.0;
            if amax != 0.0 {
                inv = 127.0 / amax;
            }
            for (var j = 0u; j < 32u; j++) {
                let v = new_elem(src, x0 + j, d, turn);
                put_byte(bitcast<u32>(i32(round(v * inv))));
            }
        } else {
            let scale = top / -8.0;
            put_f16(scale);
            var inv = 0.0;
            if scale != 0.0 {
                inv = 1.0 / scale;
            }
            for (var j = 0u; j < 16u; j++) {
                let lo = min(15u, u32(i32(new_elem(src, x0 + j, d, turn) * inv + 8.5)));
                let hi = min(15u, u32(i32(new_elem(src, x0 + j + 16u, d, turn) * inv + 8.5)));
                put_byte(lo | (hi << 4u));
            }
        }
    }
    if out_fill > 0u {
        put_word(out_at, out_word, out_values);
    }
}

// Unit `i` of n tokens' keys (`keys`: turned by RoPE as `new_elem` turns them, into `kc`)
// or values (into `vc`), heads of `d`, `row_bytes` apart, at `src` in `a`: a pair of
// f16s, an f32, or a head's blocks; nothing past the last unit.
fn put_unit(ty: u32, src: u32, d: u32, row_bytes: u32, i: u32, keys: bool) {
    let heads = p.n * p.n_kv_head;
    let first_word = p.pos * p.n_kv_head * row_bytes / 4u;
    switch ty {
        case F16: {
            if i < heads * d / 2u {
                let x = vec2<f32>(new_elem(src, 2u * i, d, keys), new_elem(src, 2u * i + 1u, d, keys));
                put_word(first_word + i, pack2x16float(x), !keys);
            }
        }
        case F32: {
            if i < heads * d {
                put_word(first_word + i, bitcast<u32>(new_elem(src, i, d, keys)), !keys);
            }
        }
        default: {
            if i < heads {
                put_blocks(ty, src, i * d, d, keys, first_word + i * row_bytes / 4u, !keys);
            }
        }
    }
}

// The new keys (at `q`) and values (at `out`) of n tokens into the cache.
@compute @workgroup_size(64)
fn store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * p.groups_x) * WG + tid;
    put_unit(K_TYPE, p.q, p.head_dim, p.k_row, i, true);
    put_unit(V_TYPE, p.out, p.head_dim_v, p.v_row, i, false);
}

// ---- reading ----

// The queries being attended, as the key dot takes them (f16-rounded, as is, or Q8_0
// quants as integers with their block scales in `qd`): up to QB (eight), held
// dimension-major so that one vector read gives a dimension of four queries, and a key's
// dot with every query takes one pass over the key: element d of query slot s at
// `qs[d * 2 + s / 4][s % 4]`, the scale of its block b at `qd[b * 2 + s / 4][s % 4]`.
const_assert QB == 8u;
var<workgroup> qs: array<vec4<f32>, MAX_HEAD * 2u>;
var<workgroup> qd: array<vec4<f32>, 16u>;
// The scores of a tile of keys, query i's from `i * TILE`.
var<workgroup> scores: array<f32, QB * TILE>;
// The token's own key and value as the cache holds them, when `attend` writes them.
var<workgroup> nk: array<f32, MAX_HEAD>;
var<workgroup> nv: array<f32, MAX_HEAD>;

fn k_word(o: u32) -> u32 {
    let s = (o & 3u) * 8u;
    if s == 0u {
        return kc[o >> 2u];
    }
    return (kc[o >> 2u] >> s) | (kc[(o >> 2u) + 1u] << (32u - s));
}

fn v_word(o: u32) -> u32 {
    let s = (o & 3u) * 8u;
    if s == 0u {
        return vc[o >> 2u];
    }
    return (vc[o >> 2u] >> s) | (vc[(o >> 2u) + 1u] << (32u - s));
}

// Each byte of a word as a signed 8-bit value.
fn signed4(v: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

fn nibbles4(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u)) - 8.0;
}

fn q_at(slot: u32, d: u32) -> f32 {
    return qs[d * 2u + slot / 4u][slot % 4u];
}

// A key's dots with the workgroup's query slots 0-3 (`lo`) and 4-7 (`hi`, computed only
// where `both`).
struct KeyDots {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Element e of a key (`k`) times element e of each query, added to `dots`: with `pair`,
// elements e and e + 1 (k.x, k.y) as one step.
fn dot_step(dots: ptr<function, KeyDots>, e: u32, k: vec2<f32>, pair: bool, both: bool) {
    if pair {
        (*dots).lo = (*dots).lo + (qs[e * 2u] * k.x + qs[e * 2u + 2u] * k.y);
        if both {
            (*dots).hi = (*dots).hi + (qs[e * 2u + 1u] * k.x + qs[e * 2u + 3u] * k.y);
        }
    } else {
        (*dots).lo = (*dots).lo + qs[e * 2u] * k.x;
        if both {
            (*dots).hi = (*dots).hi + qs[e * 2u + 1u] * k.x;
        }
    }
}

// Four block-key elements `k` (integers) times elements e … e + 3 of each query, summed:
// integer products and sums far below 2^24, exact in f32 in any order.
fn block_step(sums: ptr<function, KeyDots>, e: u32, k: vec4<f32>, both: bool) {
    (*sums).lo += qs[e * 2u] * k.x + qs[e * 2u + 2u] * k.y + qs[e * 2u + 4u] * k.z + qs[e * 2u + 6u] * k.w;
    if both {
        (*sums).hi += qs[e * 2u + 1u] * k.x + qs[e * 2u + 3u] * k.y + qs[e * 2u + 5u] * k.z + qs[e * 2u + 7u] * k.w;
    }
}

// The dots of the workgroup's queries with the key row at byte `o` of `kc`, as ggml's CPU
// dots each: in f32 over f16 or f32 keys, a pair or an element a step in order; over
// blocks, each block's integer sum times the product of the two scales, added block by
// block.
fn key_dots(o: u32, both: bool) -> KeyDots {
    var dots = KeyDots(vec4<f32>(0.0), vec4<f32>(0.0));
    switch K_TYPE {
        case F16: {
            for (var d = 0u; d < p.head_dim; d += 2u) {
                dot_step(&dots, d, unpack2x16float(kc[(o >> 2u) + d / 2u]), true, both);
            }
        }
        case F32: {
            for (var d = 0u; d < p.head_dim; d++) {
                dot_step(&dots, d, vec2<f32>(bitcast<f32>(kc[(o >> 2u) + d]), 0.0), false, both);
            }
        }
        default: {
            let q8 = K_TYPE == Q8_0;
            let block_bytes = select(18u, 34u, q8);
            for (var b = 0u; b < p.head_dim / 32u; b++) {
                let ob = o + block_bytes * b;
                let dk = unpack2x16float(k_word(ob) & 0xffffu).x;
                var sums = KeyDots(vec4<f32>(0.0), vec4<f32>(0.0));
                if q8 {
                    for (var w = 0u; w < 8u; w++) {
                        block_step(&sums, 32u * b + 4u * w, signed4(k_word(ob + 2u + 4u * w)), both);
                    }
                } else {
                    for (var w = 0u; w < 4u; w++) {
                        let q = k_word(ob + 2u + 4u * w);
                        block_step(&sums, 32u * b + 4u * w, nibbles4(q, 0u), both);
                        block_step(&sums, 32u * b + 16u + 4u * w, nibbles4(q, 4u), both);
                    }
                }
                dots.lo += sums.lo * (dk * qd[b * 2u]);
                if both {
                    dots.hi += sums.hi * (dk * qd[b * 2u + 1u]);
                }
            }
        }
    }
    return dots;
}

// Query slot `s`'s dot from `dots`.
fn slot_dot(dots: KeyDots, s: u32) -> f32 {
    return select(dots.hi[s % 4u], dots.lo[s % 4u], s < 4u);
}

// The dots of the workgroup's queries with the token's own key in `nk` (f16 or f32 keys),
// through the same steps as `key_dots` takes a cached one.
fn new_key_dots(both: bool) -> KeyDots {
    var dots = KeyDots(vec4<f32>(0.0), vec4<f32>(0.0));
    if K_TYPE == F16 {
        for (var d = 0u; d < p.head_dim; d += 2u) {
            dot_step(&dots, d, vec2<f32>(nk[d], nk[d + 1u]), true, both);
        }
    } else {
        for (var d = 0u; d < p.head_dim; d++) {
            dot_step(&dots, d, vec2<f32>(nk[d], 0.0), false, both);
        }
    }
    return dots;
}

// A key's score from its dot: scaled, and soft-capped where the model caps.
fn score(dot: f32) -> f32 {
    var s = dot * p.s_scale;
    if p.cap > 0.0 {
        s = tanh(s) * p.cap;
    }
    return s;
}

// Element `d` of the value row at byte `o` of `vc`.
fn value(o: u32, d: u32) -> f32 {
    switch V_TYPE {
        case F16: {
            let pair = unpack2x16float(vc[(o >> 2u) + d / 2u]);
            return select(pair.x, pair.y, (d & 1u) == 1u);
        }
        case F32: {
            return bitcast<f32>(vc[(o >> 2u) + d]);
        }
        case Q8_0: {
            let ob = o + 34u * (d / 32u);
            let scale = unpack2x16float(v_word(ob) & 0xffffu).x;
            let q = (v_word(ob + 2u + (d & 31u)) << 24u);
            return scale * f32(bitcast<i32>(q) >> 24u);
        }
        default: {
            let ob = o + 18u * (d / 32u);
            let scale = unpack2x16float(v_word(ob) & 0xffffu).x;
            let j = d & 31u;
            let q = (v_word(ob + 2u + (j & 15u)) >> (4u * (j >> 4u))) & 15u;
            return scale * (f32(q) - 8.0);
        }
    }
}

// Elements `d` … `d + 3` of the value row at byte `o` of `vc` (`d` a multiple of four;
// those past the row are whatever the bytes there make, and go unused).
fn value4(o: u32, d: u32) -> vec4<f32> {
    switch V_TYPE {
        case F16: {
            let w = (o >> 2u) + d / 2u;
            return vec4<f32>(unpack2x16float(vc[w]), unpack2x16float(vc[w + 1u]));
        }
        case F32: {
            let w = (o >> 2u) + d;
            return bitcast<vec4<f32>>(vec4<u32>(vc[w], vc[w + 1u], vc[w + 2u], vc[w + 3u]));
        }
        default: {
            return vec4<f32>(value(o, d), value(o, d + 1u), value(o, d + 2u), value(o, d + 3u));
        }
    }
}

// Four elements rounded to f16 (two to a conversion).
fn f16_round4(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        unpack2x16float(pack2x16float(x.xy)),
        unpack2x16float(pack2x16float(x.zw)),
    );
}

// The queries of a workgroup of `attend`: `nt` tokens from `t0` by `nh` heads from `h0`,
// query slot s holding head `h0 + s % hs` of token `t0 + s / hs` (`hs`: the heads' slots,
// `nh` rounded up to a power of two; a slot past either count holds nothing).
struct Queries {
    t0: u32,
    nt: u32,
    h0: u32,
    nh: u32,
    hs: u32,
}

fn holds(w: Queries, s: u32) -> bool {
    return s % w.hs < w.nh && s / w.hs < w.nt;
}

// The queries of `w` into `qs` as the key dot takes them: turned by RoPE where `p.rope`
// asks, scaled, then rounded to f16 for f16 keys or cut into Q8_0 blocks for block keys,
// as the CPU quantizes activations (`pack_blocks`).
fn take_queries(w: Queries, tid: u32) {
    let slots = w.hs * w.nt;
    for (var e = tid; e < slots * p.head_dim; e += WG) {
        let s = e / p.head_dim;
        let d = e % p.head_dim;
        let t = w.t0 + s / w.hs;
        let h = w.h0 + s % w.hs;
        if holds(w, s) {
            let x = roped(p.q + t * p.n_head * p.head_dim + h * p.head_dim, d, t) * p.q_scale;
            qs[d * 2u + s / 4u][s % 4u] = select(x, f16_round(x), K_TYPE == F16);
        }
    }
    workgroupBarrier();
    if K_TYPE >= Q8_0 {
        // Each block's scale, and the inverse it divides by in `scores` for a moment.
        let nb = p.head_dim / 32u;
        if tid < slots * nb && holds(w, tid / nb) {
            let slot = tid / nb;
            let b = tid % nb;
            var amax = 0.0;
            for (var j = 0u; j < 32u; j++) {
                amax = max(amax, abs(q_at(slot, 32u * b + j)));
            }
            qd[b * 2u + slot / 4u][slot % 4u] = f16_round(amax / 127.0);
            scores[tid] = select(0.0, 127.0 / amax, amax != 0.0);
        }
        workgroupBarrier();
        for (var e = tid; e < slots * p.head_dim; e += WG) {
            let s = e / p.head_dim;
            let d = e % p.head_dim;
            if holds(w, s) {
                qs[d * 2u + s / 4u][s % 4u] = round(q_at(s, d) * scores[s * nb + d / 32u]);
            }
        }
        workgroupBarrier();
    }
}

// The first position query position `qpos` sees: the window's start, else 0.
fn window_start(qpos: u32) -> u32 {
    if p.window > 0u && qpos + 1u > p.window {
        return qpos + 1u - p.window;
    }
    return 0u;
}

// The positions query position `qpos` takes in chunk `z` of a split: [x, y).
fn key_range(qpos: u32, z: u32) -> vec2<u32> {
    let first = window_start(qpos);
    return vec2<u32>(first + z * p.chunk, min(first + (z + 1u) * p.chunk, qpos + 1u));
}

// The most value dimensions one thread holds, as vectors of four (a query's slot has at
// least TPQ_MIN threads); thread `lane` of a query's `tpq` holds dimensions 4 · (lane +
// r · tpq) onward.
const TPQ_MIN: u32 = WG / QB;
const DPT4: u32 = MAX_HEAD / TPQ_MIN / 4u;

// Queries over the cached positions each sees (causal, and within the window), as ggml's
// CPU flash attention computes one query: the query converted to the keys' dot format
// (f16 for f16 keys, Q8_0 for block keys), each score a dot in f32, then an online
// softmax key by key whose value sums are rounded to f16 at every step over f16 values
// and kept in f32 over the others.
//
// A workgroup takes up to QB queries that share a KV head (`p.slots`: heads per
// workgroup, and tokens per workgroup << 16): a prompt's tokens eight at a time for one
// head, or one token's query heads of a group together. It scores a tile of keys once
// for all its queries (a thread a key), then the WG / (its slots) threads of each query
// walk the tile in order, each with every such-th value dimension: a key's row and
// value are read once for all the workgroup's queries.
//
// With a split (one token), workgroup z takes the z-th chunk of the keys and leaves its
// maximum, sum and unnormalized values for the merge (flash decoding, as ggml's CPU path
// splits one query's keys across threads). With `new_k` (one token over an f16 or f32
// cache), the workgroups whose keys end at the token's own position take its key and
// value from the arena, rounded as the cache holds them, last (after the tiles), and
// those holding the last query head of a group write them into the cache, where no
// workgroup of this dispatch reads them: no `store` step before. (The last head, so that
// a driver running the heads in order would show a head that read the cache there.)
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let qh = p.slots & 0xffffu;
    let qt = p.slots >> 16u;
    var hs = 1u;
    while hs < qh {
        hs *= 2u;
    }
    let blocks = (p.group + qh - 1u) / qh;
    let kvh = wid.x / blocks;
    let h0 = kvh * p.group + (wid.x % blocks) * qh;
    let t0 = wid.y * qt;
    let w = Queries(t0, min(qt, p.n - t0), h0, min(qh, (kvh + 1u) * p.group - h0), hs);
    let z = wid.z;
    take_queries(w, tid);
    let slots = hs * w.nt;
    // Where the workgroup's keys start and end: its first token's start, its last
    // token's end (each token's range is the same or further on than the one before).
    let qlast = p.pos + t0 + w.nt - 1u;
    let lo = key_range(p.pos + t0, z).x;
    var hi = key_range(qlast, z).y;
    // One token's own key, when taken from the arena, comes after the tiles.
    let fresh = p.new_k != NO_ROPE && lo <= qlast && qlast < hi;
    if fresh {
        take_new(kvh, h0 + w.nh == (kvh + 1u) * p.group, tid);
        hi = qlast;
    }
    // This thread's query and value dimensions, and the keys it takes.
    let tpq = WG / slots;
    let s = tid / tpq;
    let lane = tid % tpq;
    let mine = s < slots && holds(w, s);
    let qpos = p.pos + t0 + s / hs;
    let range = key_range(qpos, z);
    let end = select(range.y, qpos, fresh);
    var m = LOW;
    var l = 0.0;
    var acc: array<vec4<f32>, DPT4>;
    let k_pos = p.n_kv_head * p.k_row;
    let v_pos = p.n_kv_head * p.v_row;
    for (var j0 = lo; j0 < hi; j0 += TILE) {
        let j = j0 + tid;
        if j < hi {
            let dots = key_dots(j * k_pos + kvh * p.k_row, slots > 4u);
            for (var qi = 0u; qi < slots; qi++) {
                if holds(w, qi) {
                    scores[qi * TILE + tid] = score(slot_dot(dots, qi));
                }
            }
        }
        workgroupBarrier();
        if mine {
            for (var jj = max(j0, range.x); jj < min(j0 + TILE, end); jj++) {
                soft_step(&m, &l, &acc, scores[s * TILE + jj - j0], jj * v_pos + kvh * p.v_row, lane, tpq, false);
            }
        }
        workgroupBarrier();
    }
    if fresh && mine {
        soft_step(&m, &l, &acc, score(slot_dot(new_key_dots(slots > 4u), s)), 0u, lane, tpq, true);
    }
    if !mine {
        return;
    }
    let h = h0 + s % hs;
    let t = t0 + s / hs;
    if p.split > 1u {
        let pb = p.part + ((t * p.n_head + h) * p.split + z) * (2u + p.head_dim_v);
        if lane == 0u {
            a[pb] = m;
            a[pb + 1u] = l;
        }
        for (var r = 0u; r < DPT4; r++) {
            let d = 4u * (lane + r * tpq);
            for (var e = 0u; e < 4u; e++) {
                if d + e < p.head_dim_v {
                    a[pb + 2u + d + e] = acc[r][e];
                }
            }
        }
        return;
    }
    let o = p.out + t * p.n_head * p.head_dim_v + h * p.head_dim_v;
    for (var r = 0u; r < DPT4; r++) {
        let d = 4u * (lane + r * tpq);
        for (var e = 0u; e < 4u; e++) {
            if d + e < p.head_dim_v {
                a[o + d + e] = acc[r][e] / l;
            }
        }
    }
}

// One key of score `sc` taken into a query's online softmax (maximum `m`, sum `l`), as
// ggml's CPU path takes it: this thread's value dimensions `lane + r * tpq` of the value
// row at byte `v0` of `vc`, or with `own` of the token's own value in `nv`.
fn soft_step(
    m: ptr<function, f32>,
    l: ptr<function, f32>,
    acc: ptr<function, array<vec4<f32>, DPT4>>,
    sc: f32,
    v0: u32,
    lane: u32,
    tpq: u32,
    own: bool,
) {
    var ms = 1.0;
    var vs = 1.0;
    if sc > *m {
        ms = exp(*m - sc);
        *m = sc;
    } else {
        vs = exp(sc - *m);
    }
    *l = *l * ms + vs;
    for (var r = 0u; r < DPT4; r++) {
        let d = 4u * (lane + r * tpq);
        if d >= p.head_dim_v {
            break;
        }
        var v: vec4<f32>;
        if own {
            v = vec4<f32>(nv[d], nv[d + 1u], nv[d + 2u], nv[d + 3u]);
        } else {
            v = value4(v0, d);
        }
        if V_TYPE == F16 {
            (*acc)[r] = f16_round4(f16_round4((*acc)[r] * ms) + v * vs);
        } else {
            (*acc)[r] = (*acc)[r] * ms + v * vs;
        }
    }
}

// KV head `kvh` of the one token's new keys and values (at `p.new_k`, `p.new_v`) into
// `nk` and `nv` as an f16 or f32 cache holds them, read as `store` reads them
// (`new_elem`: keys turned by RoPE), and with `write` into the cache at the token's
// position, as `store` writes them.
fn take_new(kvh: u32, write: bool, tid: u32) {
    for (var d = tid; d < p.head_dim; d += WG) {
        let x = new_elem(p.new_k, kvh * p.head_dim + d, p.head_dim, true);
        nk[d] = select(x, f16_round(x), K_TYPE == F16);
    }
    for (var d = tid; d < p.head_dim_v; d += WG) {
        let x = new_elem(p.new_v, kvh * p.head_dim_v + d, p.head_dim_v, false);
        nv[d] = select(x, f16_round(x), V_TYPE == F16);
    }
    workgroupBarrier();
    if write {
        let at = p.pos * p.n_kv_head + kvh;
        put_new(K_TYPE, p.head_dim, at * p.k_row / 4u, false, tid);
        put_new(V_TYPE, p.head_dim_v, at * p.v_row / 4u, true, tid);
    }
}

// Element `d` of the token's own key (or, `values`, value) as `take_new` holds it.
fn new_at(values: bool, d: u32) -> f32 {
    if values {
        return nv[d];
    }
    return nk[d];
}

// The token's own key (or value) row of `d` elements into the cache (of `ty`, f16 or
// f32) from word `at`, by the workgroup's threads.
fn put_new(ty: u32, d: u32, at: u32, values: bool, tid: u32) {
    if ty == F16 {
        for (var i = tid; i < d / 2u; i += WG) {
            let pair = vec2<f32>(new_at(values, 2u * i), new_at(values, 2u * i + 1u));
            put_word(at + i, pack2x16float(pair), values);
        }
    } else {
        for (var e = tid; e < d; e += WG) {
            put_word(at + e, bitcast<u32>(new_at(values, e)), values);
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
