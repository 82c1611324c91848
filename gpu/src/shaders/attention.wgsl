// One layer's KV cache on the device and attention over it. The cache holds each
// position's heads in turn, each head's row in the cache's format, as the CPU's cache
// stores a row, padded to whole words (`k_row`, `v_row` bytes): keys in `kc`, values in
// `vc`. The formats are the constants K_TYPE and V_TYPE the host puts before this source
// (one pipeline per pair): 0 f16, 1 f32, 2 Q8_0 blocks, 3 Q4_0 blocks. One token
// attends in `attend` (a workgroup per query head, its keys split among several where
// they are many), a prompt's tokens in `attend_rows` (a workgroup per QB of them).

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
}

const WG: u32 = 64u;
// Keys scored per step: one per thread.
const TILE: u32 = 64u;
// Threads per query in `attend_rows`, whose workgroups take QB queries (consecutive
// tokens of one head; the host puts QB before this source).
const TPQ: u32 = WG / QB;
// Widest head the kernel holds (four value dimensions per thread).
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
// quants as integers with their block scales in `qd`): `attend` holds one, `attend_rows`
// up to QB, query i from `i * MAX_HEAD` (its scales from `8 * i`).
var<workgroup> qs: array<f32, QB * MAX_HEAD>;
var<workgroup> qd: array<f32, QB * 8>;
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

// Elements `d`.. of the query whose elements start at `qi` in `qs`.
fn qs4(qi: u32, d: u32) -> vec4<f32> {
    return vec4<f32>(qs[qi + d], qs[qi + d + 1u], qs[qi + d + 2u], qs[qi + d + 3u]);
}

// One step of the query's dot with an f16 key (a pair of elements from `d`) or an f32
// key (element `d`): the cache's keys and the token's own (`new_key_dot`) go through
// the same arithmetic.
fn dot_pair(total: f32, d: u32, k2: vec2<f32>) -> f32 {
    return total + (qs[d] * k2.x + qs[d + 1u] * k2.y);
}

fn dot_one(total: f32, d: u32, k: f32) -> f32 {
    return total + qs[d] * k;
}

// The dot of query `i` in `qs` with the key row at byte `o` of `kc`, as ggml's CPU dots
// them: in f32 over f16 or f32 keys; over blocks, each block's integer sum times the
// product of the two scales, added block by block.
fn key_dot(o: u32, i: u32) -> f32 {
    var total = 0.0;
    let qi = i * MAX_HEAD;
    switch K_TYPE {
        case F16: {
            for (var d = 0u; d < p.head_dim; d += 2u) {
                total = dot_pair(total, qi + d, unpack2x16float(kc[(o >> 2u) + d / 2u]));
            }
        }
        case F32: {
            for (var d = 0u; d < p.head_dim; d++) {
                total = dot_one(total, qi + d, bitcast<f32>(kc[(o >> 2u) + d]));
            }
        }
        case Q8_0: {
            for (var b = 0u; b < p.head_dim / 32u; b++) {
                let ob = o + 34u * b;
                let dk = unpack2x16float(k_word(ob) & 0xffffu).x;
                var sum = 0.0;
                for (var w = 0u; w < 8u; w++) {
                    sum += dot(signed4(k_word(ob + 2u + 4u * w)), qs4(qi, 32u * b + 4u * w));
                }
                total += sum * (dk * qd[8u * i + b]);
            }
        }
        default: {
            for (var b = 0u; b < p.head_dim / 32u; b++) {
                let ob = o + 18u * b;
                let dk = unpack2x16float(k_word(ob) & 0xffffu).x;
                var sum = 0.0;
                for (var w = 0u; w < 4u; w++) {
                    let q = k_word(ob + 2u + 4u * w);
                    sum += dot(nibbles4(q, 0u), qs4(qi, 32u * b + 4u * w));
                    sum += dot(nibbles4(q, 4u), qs4(qi, 32u * b + 16u + 4u * w));
                }
                total += sum * (dk * qd[8u * i + b]);
            }
        }
    }
    return total;
}

// The dot of the query with the token's own key in `nk` (f16 or f32 keys), as `key_dot`
// dots a cached one.
fn new_key_dot() -> f32 {
    var total = 0.0;
    if K_TYPE == F16 {
        for (var d = 0u; d < p.head_dim; d += 2u) {
            total = dot_pair(total, d, vec2<f32>(nk[d], nk[d + 1u]));
        }
    } else {
        for (var d = 0u; d < p.head_dim; d++) {
            total = dot_one(total, d, nk[d]);
        }
    }
    return total;
}

// A key's score from its dot: scaled, and soft-capped where the model caps.
fn score(dot: f32) -> f32 {
    var s = dot * p.s_scale;
    if p.cap > 0.0 {
        s = tanh(s) * p.cap;
    }
    return s;
}

// The online softmax of `attend`: the running maximum and sum (the same in every
// thread) and this thread's value sums, of dimensions `tid + r * WG` for r below
// `run_dims` (up to four; a head narrower than 256 leaves the others out).
var<private> run_max: f32;
var<private> run_sum: f32;
var<private> run_acc: vec4<f32>;
var<private> run_dims: u32;

// One key of score `s` and (this thread's four dimensions of) value `v` taken into the
// softmax, as ggml's CPU path takes it.
fn soft_step(s: f32, v: vec4<f32>) {
    var ms = 1.0;
    var vs = 1.0;
    if s > run_max {
        ms = exp(run_max - s);
        run_max = s;
    } else {
        vs = exp(s - run_max);
    }
    run_sum = run_sum * ms + vs;
    for (var r = 0u; r < run_dims; r++) {
        if V_TYPE == F16 {
            run_acc[r] = f16_round(f16_round(run_acc[r] * ms) + v[r] * vs);
        } else {
            run_acc[r] = run_acc[r] * ms + v[r] * vs;
        }
    }
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

// Query head `h` of the `nq` tokens from `t0` into `qs` as the key dot takes them:
// turned by RoPE where `p.rope` asks, scaled, then rounded to f16 for f16 keys or cut
// into Q8_0 blocks for block keys, as the CPU quantizes activations (`pack_blocks`).
fn take_queries(h: u32, t0: u32, nq: u32, tid: u32) {
    for (var e = tid; e < nq * p.head_dim; e += WG) {
        let i = e / p.head_dim;
        let d = e % p.head_dim;
        let t = t0 + i;
        let x = roped(p.q + t * p.n_head * p.head_dim + h * p.head_dim, d, t) * p.q_scale;
        qs[i * MAX_HEAD + d] = select(x, f16_round(x), K_TYPE == F16);
    }
    workgroupBarrier();
    if K_TYPE >= Q8_0 {
        // Each block's scale, and the inverse it divides by in `scores` for a moment.
        let nb = p.head_dim / 32u;
        if tid < nq * nb {
            let q0 = (tid / nb) * MAX_HEAD + 32u * (tid % nb);
            var amax = 0.0;
            for (var j = 0u; j < 32u; j++) {
                amax = max(amax, abs(qs[q0 + j]));
            }
            qd[8u * (tid / nb) + tid % nb] = f16_round(amax / 127.0);
            scores[tid] = select(0.0, 127.0 / amax, amax != 0.0);
        }
        workgroupBarrier();
        for (var e = tid; e < nq * p.head_dim; e += WG) {
            let i = e / p.head_dim;
            let d = e % p.head_dim;
            qs[i * MAX_HEAD + d] = round(qs[i * MAX_HEAD + d] * scores[i * nb + d / 32u]);
        }
        workgroupBarrier();
    }
}

// Query head `wid.x` of token `wid.y` over the cached positions it sees (causal, and
// within the window), as ggml's CPU flash attention computes one query: the query
// converted to the keys' dot format (f16 for f16 keys, Q8_0 for block keys), each
// score a dot in f32, then an online softmax key by key whose value accumulator is
// rounded to f16 at every step over f16 values and kept in f32 over the others. The
// threads score a tile of keys (one each), then each walks the tile in order for its
// value dimensions (the running maximum and sum are the same in every thread), loading
// the values of eight keys before it uses them. With a split, workgroup z takes the z-th
// chunk of the keys and leaves its maximum, sum and unnormalized values for `merge`
// (flash decoding, as ggml's CPU path splits one query's keys across threads).
// With `new_k` (one token over an f16 or f32 cache), the workgroups whose keys end at the
// token's own position take its key and value from the arena, rounded as the cache holds
// them, last (after the tiles), and the last query head of each group writes them into
// the cache, where no workgroup of this dispatch reads them: no `store` step before.
// (The last head, so that a driver running the heads in order would show a head that
// read the cache there.)
@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.x;
    let t = wid.y;
    let z = wid.z;
    let kvh = h / p.group;
    let qpos = p.pos + t;
    let first = window_start(qpos);
    let lo = first + z * p.chunk;
    let hi = min(first + (z + 1u) * p.chunk, qpos + 1u);
    take_queries(h, t, 1u, tid);
    let fresh = p.new_k != NO_ROPE && lo <= qpos && qpos < hi;
    if fresh {
        take_new(kvh, h % p.group == p.group - 1u, tid);
    }
    run_max = LOW;
    run_sum = 0.0;
    run_acc = vec4<f32>(0.0);
    run_dims = min(4u, (p.head_dim_v + WG - 1u) / WG);
    let k_pos = p.n_kv_head * p.k_row;
    let v_pos = p.n_kv_head * p.v_row;
    // The token's own key, when it is taken from the arena, comes after the tiles (it
    // is the last key in order).
    let end = select(hi, qpos, fresh);
    for (var j0 = lo; j0 < end; j0 += TILE) {
        let j = j0 + tid;
        if j < end {
            scores[tid] = score(key_dot(j * k_pos + kvh * p.k_row, 0u));
        }
        workgroupBarrier();
        let count = min(TILE, end - j0);
        for (var g0 = 0u; g0 < count; g0 += 8u) {
            var vals: array<vec4<f32>, 8>;
            for (var i = 0u; i < 8u; i++) {
                let v0 = (j0 + g0 + min(i, count - 1u - g0)) * v_pos + kvh * p.v_row;
                for (var r = 0u; r < run_dims; r++) {
                    let d = min(tid + r * WG, p.head_dim_v - 1u);
                    vals[i][r] = value(v0, d);
                }
            }
            for (var i = 0u; i < min(8u, count - g0); i++) {
                soft_step(scores[g0 + i], vals[i]);
            }
        }
        workgroupBarrier();
    }
    if fresh {
        var v = vec4<f32>(0.0);
        for (var r = 0u; r < run_dims; r++) {
            v[r] = nv[min(tid + r * WG, p.head_dim_v - 1u)];
        }
        soft_step(score(new_key_dot()), v);
    }
    if p.split > 1u {
        let pb = p.part + ((t * p.n_head + h) * p.split + z) * (2u + p.head_dim_v);
        if tid == 0u {
            a[pb] = run_max;
            a[pb + 1u] = run_sum;
        }
        for (var r = 0u; r < 4u; r++) {
            let d = tid + r * WG;
            if d < p.head_dim_v {
                a[pb + 2u + d] = run_acc[r];
            }
        }
        return;
    }
    let o = p.out + t * p.n_head * p.head_dim_v + h * p.head_dim_v;
    for (var r = 0u; r < 4u; r++) {
        let d = tid + r * WG;
        if d < p.head_dim_v {
            a[o + d] = run_acc[r] / run_sum;
        }
    }
}

// The most value dimensions one thread of `attend_rows` holds.
const DPT: u32 = MAX_HEAD / TPQ;

// The first position query position `qpos` sees: the window's start, else 0.
fn window_start(qpos: u32) -> u32 {
    if p.window > 0u && qpos + 1u > p.window {
        return qpos + 1u - p.window;
    }
    return 0u;
}

// Query head `wid.x` of the QB tokens from `QB * wid.y` (a prompt's), each over the
// positions it sees, with the arithmetic of `attend` key by key: the same score of each
// key, the same online softmax step in the same order. What changes is who does it: the
// workgroup scores a tile of keys once for all its queries (a key's row is read once,
// not once per query), and TPQ threads take each query, each holding every TPQ-th value
// dimension, so a key's value is read once per workgroup and its weight's exponential
// once per thread, where `attend` spent a workgroup on one query.
@compute @workgroup_size(64)
fn attend_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wid.x;
    let t0 = wid.y * QB;
    let nq = min(QB, p.n - t0);
    let kvh = h / p.group;
    take_queries(h, t0, nq, tid);
    // This thread's query and its share of the value dimensions.
    let i = tid / TPQ;
    let lane = tid % TPQ;
    let qpos = p.pos + t0 + i;
    let first = window_start(qpos);
    let end = p.pos + t0 + nq;
    var m = LOW;
    var l = 0.0;
    var acc: array<f32, DPT>;
    let k_pos = p.n_kv_head * p.k_row;
    let v_pos = p.n_kv_head * p.v_row;
    for (var j0 = window_start(p.pos + t0); j0 < end; j0 += TILE) {
        let j = j0 + tid;
        if j < end {
            let o = j * k_pos + kvh * p.k_row;
            for (var qi = 0u; qi < nq; qi++) {
                scores[qi * TILE + tid] = score(key_dot(o, qi));
            }
        }
        workgroupBarrier();
        if i < nq {
            for (var jj = max(j0, first); jj < min(j0 + TILE, qpos + 1u); jj++) {
                let s = scores[i * TILE + jj - j0];
                var ms = 1.0;
                var vs = 1.0;
                if s > m {
                    ms = exp(m - s);
                    m = s;
                } else {
                    vs = exp(s - m);
                }
                l = l * ms + vs;
                let v0 = jj * v_pos + kvh * p.v_row;
                for (var r = 0u; r < DPT; r++) {
                    let d = lane + r * TPQ;
                    if d >= p.head_dim_v {
                        break;
                    }
                    if V_TYPE == F16 {
                        acc[r] = f16_round(f16_round(acc[r] * ms) + value(v0, d) * vs);
                    } else {
                        acc[r] = acc[r] * ms + value(v0, d) * vs;
                    }
                }
            }
        }
        workgroupBarrier();
    }
    if i < nq {
        let o = p.out + (t0 + i) * p.n_head * p.head_dim_v + h * p.head_dim_v;
        for (var r = 0u; r < DPT; r++) {
            let d = lane + r * TPQ;
            if d < p.head_dim_v {
                a[o + d] = acc[r] / l;
            }
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
