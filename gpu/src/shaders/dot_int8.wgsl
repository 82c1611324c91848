// The one-token mat-vec's dots over the packed int8 copy of its input, which the rounding
// in `ops.wgsl` writes beside the f32 one: each 32-element block of an activation row is
// nine words, eight of four signed bytes and then the block's scale as an f32 (Q8_0's f16
// scale widened, or Q8_K's, repeated in each of its eight blocks). The weights' integers
// meet the input's in `dot4I8Packed` (four products and their sum in one instruction where
// the adapter has one, a few otherwise), and the scales multiply each block's exact integer
// sum once, as the CPU's kernels do. A unit is what `wide.wgsl` calls one (NC is 1).

@group(0) @binding(1) var<storage, read> xq: array<u32>;

// Four bytes of one, to sum a word's four signed bytes with dot4I8Packed.
const ONES: u32 = 0x01010101u;
const LOW_NIBBLES: u32 = 0x0f0f0f0fu;

// The first word of the input block that holds element e of activation row col0.
fn xq_block(col0: u32, e: u32) -> u32 {
    return 9u * ((p.x_off + col0 * p.cols + e) / 32u);
}

fn xq_scale(block: u32) -> f32 {
    return bitcast<f32>(xq[block + 8u]);
}

// Word k of a 32-weight block's 16 quant bytes `q` against the block's input at `xb`
// (low nibbles weights 4k.., high 16 + 4k..): (Σ q·x, Σ x).
fn nibble_word(q: u32, k: u32, xb: u32) -> vec2<i32> {
    let lo = xq[xb + k];
    let hi = xq[xb + 4u + k];
    let s = dot4I8Packed(q & LOW_NIBBLES, lo) + dot4I8Packed((q >> 4u) & LOW_NIBBLES, hi);
    return vec2<i32>(s, dot4I8Packed(ONES, lo) + dot4I8Packed(ONES, hi));
}

// The nibbles of a 32-weight block's 16 quant bytes `q` (low: weights 0..15, high:
// 16..31) against the block's input: (Σ q·x, Σ x).
fn nibble_sums(q: vec4<u32>, xb: u32) -> vec2<i32> {
    var s = vec2<i32>(0);
    for (var k = 0u; k < 4u; k++) {
        s += nibble_word(q[k], k, xb);
    }
    return s;
}

// Q4_0 · Q8_0: the nibbles are 8 above the weight.
fn dot8_q4_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 18u;
    let xb = xq_block(col0, u * 32u);
    let s = nibble_sums(bytes16(ob + 2u), xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s.x - 8 * s.y);
}

// Q8_0 · Q8_0: signed bytes against signed bytes.
fn dot8_q8_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 34u;
    let q0 = bytes16(ob + 2u);
    let q1 = bytes16(ob + 18u);
    let xb = xq_block(col0, u * 32u);
    var s = 0;
    for (var k = 0u; k < 4u; k++) {
        s += dot4I8Packed(q0[k], xq[xb + k]) + dot4I8Packed(q1[k], xq[xb + 4u + k]);
    }
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s);
}

// Q4_K and Q5_K · Q8_K: the n words from k0 of the 64-weight group g of the super-block at ob
// (`block_bytes` long; quants from byte `qs`, Q5_K's fifth bits at byte 16: bit 2g for
// the low nibbles, 2g + 1 for the high), `sb` its index in the row: low nibbles weights
// 4k.. of sub-block 2g, high nibbles the same of 2g + 1, each d · scale · Σ q·x − dmin ·
// min · Σ x. A unit is a whole group here (words 0..8), a run of four words in
// `dot_int8_words.wgsl`.
fn k4_words(ob: u32, sb: u32, g: u32, k0: u32, n: u32, col0: u32, qs: u32, five: bool) -> f32 {
    let dm = unpack2x16float(w[ob >> 2u]);
    let s0 = vec2<i32>(k4_scale_min(ob + 4u, 2u * g));
    let s1 = vec2<i32>(k4_scale_min(ob + 4u, 2u * g + 1u));
    let qi = (ob + qs + 32u * g) >> 2u;
    let xb0 = xq_block(col0, sb * 256u + 64u * g);
    let xb1 = xb0 + 9u;
    var q0 = 0;
    var q1 = 0;
    var x0 = 0;
    var x1 = 0;
    // A constant count (once inlined), so that compilers unroll the loop.
    for (var i = 0u; i < n; i++) {
        let k = k0 + i;
        let v = w[qi + k];
        var lo = v & LOW_NIBBLES;
        var hi = (v >> 4u) & LOW_NIBBLES;
        if five {
            let h = w[((ob + 16u) >> 2u) + k];
            lo |= ((h >> (2u * g)) & ONES) << 4u;
            hi |= ((h >> (2u * g + 1u)) & ONES) << 4u;
        }
        let a = xq[xb0 + k];
        let b = xq[xb1 + k];
        q0 += dot4I8Packed(lo, a);
        q1 += dot4I8Packed(hi, b);
        x0 += dot4I8Packed(ONES, a);
        x1 += dot4I8Packed(ONES, b);
    }
    let sums = s0.x * q0 + s1.x * q1;
    let mins = s0.y * x0 + s1.y * x1;
    return xq_scale(xb0) * (dm.x * f32(sums) - dm.y * f32(mins));
}

// A unit being the 64-weight group u % 4 of super-block u / 4.
fn k4_group(row_base: u32, u: u32, col0: u32, block_bytes: u32, qs: u32, five: bool) -> f32 {
    let sb = u >> 2u;
    return k4_words(row_base + sb * block_bytes, sb, u & 3u, 0u, 8u, col0, qs, five);
}

fn dot8_q4_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    (*acc)[0] += k4_group(row_base, u, col0, 144u, 16u, false);
}

fn dot8_q5_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    (*acc)[0] += k4_group(row_base, u, col0, 176u, 48u, true);
}

// Q6_K · Q8_K, a unit being the quarter k4 of the 128-weight half n of a super-block: two
// runs of 16 weights, each with its signed scale; the 6-bit quants are 32 above the weight.
fn dot8_q6_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 210u;
    let n = (u >> 2u) & 1u;
    let k4 = u & 3u;
    let sc = ob + 192u + 8u * n + 2u * k4;
    let qlo = ob + 64u * n + 32u * (k4 & 1u);
    let qho = ob + 128u + 32u * n;
    let ls = 4u * (k4 >> 1u);
    let hs = 2u * k4;
    let xb = xq_block(col0, u * 32u);
    var total = 0;
    for (var half = 0u; half < 2u; half++) {
        let ql = bytes16(qlo + 16u * half);
        let qh = bytes16(qho + 16u * half);
        var s = 0;
        var sx = 0;
        for (var k = 0u; k < 4u; k++) {
            let q = ((ql[k] >> ls) & LOW_NIBBLES) | (((qh[k] >> hs) & 0x03030303u) << 4u);
            let xv = xq[xb + 4u * half + k];
            s += dot4I8Packed(q, xv);
            sx += dot4I8Packed(ONES, xv);
        }
        let scale = i8_at(sc + half);
        total += scale * (s - 32 * sx);
    }
    (*acc)[0] += f16_at(ob + 208u) * xq_scale(xb) * f32(total);
}

// Q4_1 · Q8_1: weights d·q + m with q 0..15, so d · Σ q·x + m · Σ x.
fn dot8_q4_1(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 20u;
    let xb = xq_block(col0, u * 32u);
    let s = nibble_sums(bytes16(ob + 4u), xb);
    (*acc)[0] += xq_scale(xb) * (f16_at(ob) * f32(s.x) + f16_at(ob + 2u) * f32(s.y));
}

// Bits `first..first + 4` of a Q5 block's 32 high bits as bit 4 of four bytes: the fifth
// bit of the four weights whose nibbles share a word.
fn q5_high(qh: u32, first: u32) -> u32 {
    let h = (qh >> first) & 15u;
    return ((h & 1u) | ((h & 2u) << 7u) | ((h & 4u) << 14u) | ((h & 8u) << 21u)) << 4u;
}

// Word k of the nibbles `q` of a Q5_0 or Q5_1 block with its high bits `qh` against the
// block's input: (Σ q·x, Σ x), q 0..31.
fn q5_word(qh: u32, q: u32, k: u32, xb: u32) -> vec2<i32> {
    let lo = xq[xb + k];
    let hi = xq[xb + 4u + k];
    let s = dot4I8Packed((q & LOW_NIBBLES) | q5_high(qh, 4u * k), lo)
        + dot4I8Packed(((q >> 4u) & LOW_NIBBLES) | q5_high(qh, 16u + 4u * k), hi);
    return vec2<i32>(s, dot4I8Packed(ONES, lo) + dot4I8Packed(ONES, hi));
}

// The 5-bit quants (0..31) of a Q5_0 or Q5_1 block with its high bits `qh` and nibbles
// `q` against the block's input: (Σ q·x, Σ x).
fn q5_sums(qh: u32, q: vec4<u32>, xb: u32) -> vec2<i32> {
    var s = vec2<i32>(0);
    for (var k = 0u; k < 4u; k++) {
        s += q5_word(qh, q[k], k, xb);
    }
    return s;
}

// Q5_0 · Q8_0: the quants are 16 above the weight.
fn dot8_q5_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 22u;
    let xb = xq_block(col0, u * 32u);
    let s = q5_sums(u32_at(ob + 2u), bytes16(ob + 6u), xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s.x - 16 * s.y);
}

// Q5_1 · Q8_1: weights d·q + m.
fn dot8_q5_1(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 24u;
    let xb = xq_block(col0, u * 32u);
    let s = q5_sums(u32_at(ob + 4u), bytes16(ob + 8u), xb);
    (*acc)[0] += xq_scale(xb) * (f16_at(ob) * f32(s.x) + f16_at(ob + 2u) * f32(s.y));
}

// IQ4_NL's codebook as signed bytes, four to a word (entry n in byte n % 4 of word n / 4):
// -127 -104 -83 -65, -49 -35 -22 -10, 1 13 25 38, 53 69 89 113.
const IQ4_BYTES = array<u32, 4>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);

// The codebook bytes of the four 4-bit indices in the bytes of `v`.
fn iq4_bytes(v: u32) -> u32 {
    var r = 0u;
    for (var i = 0u; i < 4u; i++) {
        let n = (v >> (8u * i)) & 15u;
        r |= ((IQ4_BYTES[n >> 2u] >> (8u * (n & 3u))) & 0xffu) << (8u * i);
    }
    return r;
}

// Σ codebook(q)·x over word k of a 32-weight block's indices `q` (low nibbles weights
// 4k.., high 16 + 4k..) against the block's input at `xb`.
fn iq4_word(q: u32, k: u32, xb: u32) -> i32 {
    return dot4I8Packed(iq4_bytes(q & LOW_NIBBLES), xq[xb + k])
        + dot4I8Packed(iq4_bytes((q >> 4u) & LOW_NIBBLES), xq[xb + 4u + k]);
}

// Σ codebook(q)·x over 32 weights whose indices are the nibbles of `q` (low: the first 16).
fn iq4_sum(q: vec4<u32>, xb: u32) -> i32 {
    var s = 0;
    for (var k = 0u; k < 4u; k++) {
        s += iq4_word(q[k], k, xb);
    }
    return s;
}

// IQ4_NL · Q8_0.
fn dot8_iq4_nl(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 18u;
    let xb = xq_block(col0, u * 32u);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(iq4_sum(bytes16(ob + 2u), xb));
}

// IQ4_XS · Q8_K, a unit being sub-block ib of a 136-byte super-block: its 6-bit scale
// (32 above the multiplier) and 32 codebook indices.
fn dot8_iq4_xs(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 136u;
    let ib = u & 7u;
    let ls = iq4_xs_scale(ob, ib);
    let xb = xq_block(col0, u * 32u);
    let s = iq4_sum(bytes16(ob + 8u + 16u * ib), xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(ls * s);
}

// Q2_K and Q3_K: a unit is the 32 weights of one 2-bit field (shift 2j) of the 32 bytes
// of half n of a super-block, two runs of 16 with a scale each.

// Q2_K · Q8_K: weights d · (sc & 15) · q − dmin · (sc >> 4), q 0..3.
fn dot8_q2_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 84u;
    let n = (u >> 2u) & 1u;
    let j = u & 3u;
    let qi = (ob + 16u + 32u * n) >> 2u;
    let xb = xq_block(col0, u * 32u);
    var sums = 0;
    var mins = 0;
    for (var half = 0u; half < 2u; half++) {
        let sc = u8_at(ob + 8u * n + 2u * j + half);
        var s = 0;
        var sx = 0;
        for (var k = 4u * half; k < 4u * half + 4u; k++) {
            let xv = xq[xb + k];
            s += dot4I8Packed((w[qi + k] >> (2u * j)) & 0x03030303u, xv);
            sx += dot4I8Packed(ONES, xv);
        }
        sums += i32(sc & 15u) * s;
        mins += i32(sc >> 4u) * sx;
    }
    let dm = unpack2x16float(w[(ob + 80u) >> 2u]);
    (*acc)[0] += xq_scale(xb) * (dm.x * f32(sums) - dm.y * f32(mins));
}

// Q3_K · Q8_K: q = the 2-bit field plus 4 × the hmask bit (4n + j), 4 above the weight;
// signed 6-bit scales.
fn dot8_q3_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 110u;
    let n = (u >> 2u) & 1u;
    let j = u & 3u;
    let xb = xq_block(col0, u * 32u);
    var total = 0;
    for (var half = 0u; half < 2u; half++) {
        let q = bytes16(ob + 32u + 32u * n + 16u * half);
        let h = bytes16(ob + 16u * half);
        var s = 0;
        var sx = 0;
        for (var k = 0u; k < 4u; k++) {
            let v = ((q[k] >> (2u * j)) & 0x03030303u) | (((h[k] >> (4u * n + j)) & ONES) << 2u);
            let xv = xq[xb + 4u * half + k];
            s += dot4I8Packed(v, xv);
            sx += dot4I8Packed(ONES, xv);
        }
        total += i32(q3_k_scale(ob + 96u, 8u * n + 2u * j + half)) * (s - 4 * sx);
    }
    (*acc)[0] += f16_at(ob + 108u) * xq_scale(xb) * f32(total);
}
