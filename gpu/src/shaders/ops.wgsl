// The steps of a transformer layer besides its matmuls, over the activation arena `a`:
// one f32 buffer holding every run buffer of the batch at offsets the host picks.
// Every kernel binds the same five things (see `resident/workspace.rs`); each uses what
// it needs.
//
// `b1`: the matmul input buffer (the `quantize` kernel writes it), or a layer's keys;
// `b2`: the packed int8 copy of the matmul input (see `put_input`), or a layer's values;
// `consts`: norm weights (and the biases the matmuls add).

struct Op {
    n: u32,     // elements, rows or pairs: what the kernel walks
    width: u32, // elements per row
    src: u32,   // offsets into `a` (or `b1` for the quantized copy)
    dst: u32,
    c: u32,     // offset into `consts`, or NONE
    mode: u32,  // the kernel's variant (activation, rounding format, RoPE style)
    groups_x: u32,
    eps: f32,
    xin: u32,     // `residual`: where in `b1` the rounded copy of the new norm goes;
                  // `quantize`: a split attention's partial results in `a`, or NONE
    variant: u32, // `residual`: that copy's rounding (as `quantize`'s mode); `quantize`:
                  // the gate's activation when `c` holds the up projection's offset, the
                  // split's parts << 16 | the heads' width when `xin` holds the results
}

const NONE: u32 = 0xffffffffu;
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<u32>;
@group(0) @binding(3) var<storage, read> consts: array<f32>;
@group(0) @binding(4) var<uniform> p: Op;

fn flat(wid: vec3<u32>, tid: u32) -> u32 {
    return (wid.x + wid.y * p.groups_x) * WG + tid;
}

var<workgroup> red: array<f32, WG>;

// The row kernels (`rmsnorm`, `residual`) give a whole row one workgroup of RW threads
// (the host puts RW before this source). For one token that row is all the dispatch has,
// so what they cost is round trips to memory: RW is 256 there, and each thread reads 16
// elements of a row at once (elements i, i + RW, …, i + 15·RW: one trip for a 4096-wide
// row) before writing any. Many rows fill the device by themselves, and there RW is 64:
// fewer threads a row to wait at each barrier. The norm's sum of squares keeps the order
// of a 64-thread walk (thread t adds elements t, t + 64, … in turn, then a tree), which
// is the order the ops tests hold these kernels to: the row is read into `held` a piece
// at a time, and the first 64 threads walk it there.
const PIECE: u32 = 8u * RW;
var<workgroup> held: array<f32, PIECE>;

fn row_at(base: u32, i: u32) -> f32 {
    if i < p.width {
        return a[base + i];
    }
    return 0.0;
}

// Elements i, i + RW, i + 2·RW and i + 3·RW of the row at `base` (zeros past its end).
fn row4(base: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(
        row_at(base, i),
        row_at(base, i + RW),
        row_at(base, i + 2u * RW),
        row_at(base, i + 3u * RW),
    );
}

// The norm weights (or any constants) at `base` for the same four elements.
fn consts_row4(base: u32, i: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k++) {
        if i + k * RW < p.width {
            v[k] = consts[base + i + k * RW];
        }
    }
    return v;
}

fn put_row4(base: u32, i: u32, v: vec4<f32>) {
    for (var k = 0u; k < 4u; k++) {
        if i + k * RW < p.width {
            a[base + i + k * RW] = v[k];
        }
    }
}

// 1 / √(mean(x²) + eps) of the row of `width` at `s` (see above). Every thread gets it;
// the barrier at the end frees `red` and `held` for the next call.
fn row_scale(s: u32, tid: u32) -> f32 {
    var sum = 0.0;
    for (var start = 0u; start < p.width; start += PIECE) {
        let i = start + tid;
        let v0 = row4(s, i);
        let v1 = row4(s, i + 4u * RW);
        for (var k = 0u; k < 4u; k++) {
            held[tid + k * RW] = v0[k];
            held[tid + (4u + k) * RW] = v1[k];
        }
        workgroupBarrier();
        if tid < WG {
            let end = min(PIECE, p.width - start);
            for (var j = tid; j < end; j += WG) {
                let x = held[j];
                sum += x * x;
            }
        }
        workgroupBarrier();
    }
    if tid < WG {
        red[tid] = sum;
    }
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if tid < h {
            red[tid] += red[tid + h];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(red[0] / f32(p.width) + p.eps);
    workgroupBarrier();
    return scale;
}

// The row at `s` times `scale` (and the weight at `c` when there is one) into `d`, which
// may be `s`: each element (x · scale) · weight.
fn scale_row(s: u32, d: u32, scale: f32, c: u32, tid: u32) {
    for (var i = tid; i < p.width; i += 16u * RW) {
        var v: array<vec4<f32>, 4>;
        for (var q = 0u; q < 4u; q++) {
            v[q] = row4(s, i + 4u * q * RW) * scale;
            if c != NONE {
                v[q] *= consts_row4(c, i + 4u * q * RW);
            }
        }
        for (var q = 0u; q < 4u; q++) {
            put_row4(d, i + 4u * q * RW, v[q]);
        }
    }
}

// Rows of `width` at `src` normalized into `dst` (in place when equal): x / √(mean(x²) +
// eps), times the weight at `c` when there is one. One workgroup per row. Rows from
// `mode` on are a second set, normalized in place at `xin` by the weight at `variant`
// (QK-norm's key heads beside its query heads, one dispatch for both).
@compute @workgroup_size(RW)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * p.groups_x;
    if row >= p.n {
        return;
    }
    var s = p.src + row * p.width;
    var d = p.dst + row * p.width;
    var c = p.c;
    if row >= p.mode {
        s = p.xin + (row - p.mode) * p.width;
        d = s;
        c = p.variant;
    }
    scale_row(s, d, row_scale(s, tid), c, tid);
}

// A block's end, one workgroup per row: the block's output rows at `src` (first
// normalized in place by the post-norm weight at `c`, when there is one) added to the
// residual stream at `dst`; then, when `mode` holds the next norm's weight, the new
// stream normalized by it back into `src` and rounded for the next matmuls into `xin`
// in `b1` (by `variant`). The same operations in the same order as `rmsnorm`, add,
// `rmsnorm`, `quantize` one after another, in one dispatch instead of four. Each
// thread writes only elements it reads itself until the rounding.
@compute @workgroup_size(RW)
fn residual(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * p.groups_x;
    if row >= p.n {
        return;
    }
    let s = p.src + row * p.width;
    let d = p.dst + row * p.width;
    if p.c != NONE {
        scale_row(s, s, row_scale(s, tid), p.c, tid);
    }
    for (var i = tid; i < p.width; i += 16u * RW) {
        var v: array<vec4<f32>, 4>;
        for (var q = 0u; q < 4u; q++) {
            v[q] = row4(d, i + 4u * q * RW) + row4(s, i + 4u * q * RW);
        }
        for (var q = 0u; q < 4u; q++) {
            put_row4(d, i + 4u * q * RW, v[q]);
        }
    }
    if p.mode == NONE {
        return;
    }
    let scale = row_scale(d, tid);
    // The threads' elements change to four in a row (as `round4` takes them), so the
    // stream's new values must be visible across the workgroup.
    storageBarrier();
    // Each step takes RW / 64 pieces of 256 elements, one per 64 threads (four in a row
    // each), which `round4` rounds side by side.
    let pieces = (p.width + 255u) / 256u;
    for (var first = 0u; first < pieces; first += RW / WG) {
        let e0 = (first + tid / WG) * 256u + 4u * (tid % WG);
        var v = vec4<f32>(0.0);
        if e0 < p.width {
            let x = vec4<f32>(a[d + e0], a[d + e0 + 1u], a[d + e0 + 2u], a[d + e0 + 3u]);
            let m = p.mode + e0;
            let g = vec4<f32>(consts[m], consts[m + 1u], consts[m + 2u], consts[m + 3u]);
            v = x * scale * g;
            for (var k = 0u; k < 4u; k++) {
                a[s + e0 + k] = v[k];
            }
        }
        let r = round4(v, tid, p.variant);
        if e0 < p.width {
            put_input(p.xin + row * p.width + e0, r, p.variant);
        }
    }
}

// ggml's tanh-approximated GELU as its CPU backend tabulates it: input and output rounded
// to f16, identity above 10 and zero below -10.
fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
    let g = 0.5 * h * (1.0 + tanh(0.7978846 * h * (1.0 + 0.044715 * h * h)));
    return unpack2x16float(pack2x16float(vec2<f32>(g, 0.0))).x;
}

// The gated feed-forward's join of a gate value g and an up value u: act(g) · u, for
// `act` 0 SiLU, 1 GELU.
fn glu(g: f32, u: f32, act: u32) -> f32 {
    var v: f32;
    if act == 0u {
        v = g / (1.0 + exp(-g));
    } else {
        v = gelu(g);
    }
    return v * u;
}

// RoPE over the query and key heads of n tokens: the x of `groups` is the pair, y the
// head (query heads first, then key heads), z the token. `src` holds the queries, `dst`
// the keys, `c` (in `a`) the cos/sin table of each token ((n, width) interleaved), `eps`
// the query heads' count as bits, `mode` the style (0 adjacent pairs, 1 NeoX halves) and
// the rotated dimensions in its upper bits.
@compute @workgroup_size(64)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wid.x * WG + tid;
    let n_rot = p.mode >> 1u;
    if i >= n_rot / 2u {
        return;
    }
    let head = wid.y;
    let t = wid.z;
    let n_q = bitcast<u32>(p.eps);
    var base: u32;
    if head < n_q {
        base = p.src + t * n_q * p.width + head * p.width;
    } else {
        let n_k = nwg.y - n_q;
        base = p.dst + t * n_k * p.width + (head - n_q) * p.width;
    }
    let ij = rope_pair(i, n_rot, (p.mode & 1u) == 1u);
    let cs = p.c + t * n_rot + 2u * i;
    let y = rope_turn(a[base + ij.x], a[base + ij.y], a[cs], a[cs + 1u]);
    a[base + ij.x] = y.x;
    a[base + ij.y] = y.y;
}

// Four rounded activations into the matmul input at `at` (a multiple of four). The 8-bit
// roundings (modes 1 and 2) also go into the packed copy in `b2` that the int8 mat-vecs
// read (`dot_int8.wgsl`): each 32-element block of the input as nine words, its integers
// four to a word, then its scale as an f32, at block (at / 32) · 9 whatever row the
// element is in, so a matmul finds its input's blocks from the input's own offset.
fn put_input(at: u32, r: Rounded, mode: u32) {
    b1[at] = r.v.x;
    b1[at + 1u] = r.v.y;
    b1[at + 2u] = r.v.z;
    b1[at + 3u] = r.v.w;
    if mode == 1u || mode == 2u {
        let block = 9u * (at / 32u);
        let bytes = bitcast<vec4<u32>>(vec4<i32>(r.q)) & vec4<u32>(0xffu);
        b2[block + (at % 32u) / 4u] = bytes.x | (bytes.y << 8u) | (bytes.z << 16u) | (bytes.w << 24u);
        if at % 32u == 0u {
            b2[block + 8u] = bitcast<u32>(r.scale);
        }
    }
}

// Four activations as `round4` rounds them: the values the float kernels read, and for
// the 8-bit modes the integers (as floats) and the block's scale they are the product of.
struct Rounded {
    v: vec4<f32>,
    q: vec4<f32>,
    scale: f32,
}

// Activations rounded as the CPU quantizes them for a matmul: mode 0 as they are, 1
// Q8_0/Q8_1 (blocks of 32: scale amax/127 stored as f16, quants rounded half to even), 2
// Q8_K (blocks of 256: the first element of largest magnitude maps to -127, scale kept in
// f32), 3 f16, 4 bf16. `v`: elements 4t … 4t + 3 (t = tid % 64) of a 256-element piece
// of a row, each 64 threads their own piece (zeros past its end); each block's extreme is
// found in shared memory, so every thread of the workgroup calls this together.
var<workgroup> ext_abs: array<f32, RW>;
var<workgroup> ext_val: array<f32, RW>;

fn round4(v: vec4<f32>, tid: u32, mode: u32) -> Rounded {
    var m = abs(v.x);
    var mv = v.x;
    for (var k = 1u; k < 4u; k++) {
        if abs(v[k]) > m {
            m = abs(v[k]);
            mv = v[k];
        }
    }
    ext_abs[tid] = m;
    ext_val[tid] = mv;
    workgroupBarrier();
    // Threads per block: 8 (32 elements) or 64 (256); the earlier element wins a tie.
    var span = 8u;
    if mode == 2u {
        span = 64u;
    }
    for (var h = span / 2u; h > 0u; h >>= 1u) {
        if (tid & (span - 1u)) < h && ext_abs[tid + h] > ext_abs[tid] {
            ext_abs[tid] = ext_abs[tid + h];
            ext_val[tid] = ext_val[tid + h];
        }
        workgroupBarrier();
    }
    let lead = tid & ~(span - 1u);
    let amax = ext_abs[lead];
    let lead_val = ext_val[lead];
    // Before a next call writes the extremes again.
    workgroupBarrier();
    var r = Rounded(v, vec4<f32>(0.0), 0.0);
    switch mode {
        case 1u: {
            r.scale = unpack2x16float(pack2x16float(vec2<f32>(amax / 127.0, 0.0))).x;
            var inv = 0.0;
            if amax != 0.0 {
                inv = 127.0 / amax;
            }
            r.q = round(v * inv);
            r.v = r.scale * r.q;
        }
        case 2u: {
            r.v = vec4<f32>(0.0);
            if amax != 0.0 {
                let iscale = -127.0 / lead_val;
                r.scale = 1.0 / iscale;
                r.q = min(round(iscale * v), vec4<f32>(127.0));
                r.v = r.scale * r.q;
            }
        }
        case 3u: {
            r.v = vec4<f32>(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw)));
        }
        case 4u: {
            let u = bitcast<vec4<u32>>(v);
            r.v = bitcast<vec4<f32>>((u + 0x7fffu + ((u >> vec4<u32>(16u)) & vec4<u32>(1u))) & vec4<u32>(0xffff0000u));
        }
        default: {}
    }
    return r;
}

// Elements e0 … e0 + 3 (in one head) of attention output row `row`, merged from the
// partial results of a split at `p.xin` (see `attend` in `attention.wgsl`) as `merge`
// merges them there: each part's values and sum scaled from its maximum to the largest.
fn merged(row: u32, e0: u32) -> vec4<f32> {
    let hd = p.variant & 0xffffu;
    let parts = p.variant >> 16u;
    let stride = 2u + hd;
    let base = p.xin + (row * (p.width / hd) + e0 / hd) * parts * stride;
    let d = base + 2u + e0 % hd;
    var m = -3.0e38;
    for (var z = 0u; z < parts; z++) {
        m = max(m, a[base + z * stride]);
    }
    var l = 0.0;
    var sum = vec4<f32>(0.0);
    for (var z = 0u; z < parts; z++) {
        let scale = exp(a[base + z * stride] - m);
        l += a[base + z * stride + 1u] * scale;
        let at = d + z * stride;
        sum += vec4<f32>(a[at], a[at + 1u], a[at + 2u], a[at + 3u]) * scale;
    }
    return sum / l;
}

// Rows (n of `width`, a multiple of 32) at `src` in `a` rounded by `mode` (see `round4`)
// into `dst` in `b1`. First, and written back to `src`: when `c` holds an offset, the
// gated join of the gates at `src` with the up projections at `c` (in `a`), by the
// activation in `variant`; when `xin` does, the attention outputs merged from a split's
// partial results there (`merged`). A workgroup takes 256 elements of a row, four per
// thread.
@compute @workgroup_size(64)
fn quantize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let chunks = (p.width + 255u) / 256u;
    let g = wid.x + wid.y * p.groups_x;
    if g >= p.n * chunks {
        return;
    }
    let row = g / chunks;
    let e0 = (g % chunks) * 256u + 4u * tid;
    let valid = e0 < p.width;
    let s = p.src + row * p.width + e0;
    var v = vec4<f32>(0.0);
    if valid {
        if p.xin != NONE {
            v = merged(row, e0);
            for (var k = 0u; k < 4u; k++) {
                a[s + k] = v[k];
            }
        } else {
            v = vec4<f32>(a[s], a[s + 1u], a[s + 2u], a[s + 3u]);
        }
        if p.c != NONE {
            // The up values read before any write, so the reads are in flight together.
            let u = p.c + row * p.width + e0;
            let up = vec4<f32>(a[u], a[u + 1u], a[u + 2u], a[u + 3u]);
            for (var k = 0u; k < 4u; k++) {
                v[k] = glu(v[k], up[k], p.variant);
                a[s + k] = v[k];
            }
        }
    }
    let r = round4(v, tid, p.mode);
    if valid {
        put_input(p.dst + row * p.width + e0, r, p.mode);
    }
}

// The Walsh–Hadamard turn of n pieces of `width` (a power of two) in place: the first
// `c` pieces at `src`, the rest at `dst`. One thread per piece, with the CPU's operations
// in its order (every element times the scale in `eps`, then for spans 1, 2, 4, … each
// pair (u, v) made (u + v, u − v)), so the same bits.
@compute @workgroup_size(64)
fn hadamard(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let i = flat(wid, tid);
    if i >= p.n {
        return;
    }
    var base = p.src + i * p.width;
    if i >= p.c {
        base = p.dst + (i - p.c) * p.width;
    }
    for (var j = 0u; j < p.width; j++) {
        a[base + j] *= p.eps;
    }
    for (var len = 1u; len < p.width; len <<= 1u) {
        for (var j = 0u; j < p.width; j++) {
            if (j & len) == 0u {
                let u = a[base + j];
                let v = a[base + j + len];
                a[base + j] = u + v;
                a[base + j + len] = u - v;
            }
        }
    }
}
