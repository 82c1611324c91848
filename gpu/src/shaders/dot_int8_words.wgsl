// The one-token mat-vec's dots over the packed int8 input with a lane per word of quants,
// or per run of four words for Q4_K, Q5_K and Q6_K: unit u of a row is the u-th 32-bit
// word (or run) of its quants (two words for Q8_0's bytes; Q2_K's and Q3_K's words hold
// four 2-bit fields), so the lanes of a subgroup, which take units one after another,
// read neighbouring words of the weights and, for each nibble half or field, of the
// input. The per-block kernels in `dot_int8.wgsl` give each lane a whole block (or a
// 64-weight group) instead, and a subgroup's load then touches as many 32-byte pieces of
// memory as it has lanes (GPUs fetch memory for a whole subgroup's load at once, and pay
// for every piece it touches). The price is that every lane decodes its block's scales
// for its word or run alone: a few dozen instructions, which for a single word of a
// K-quant outweigh what the GPU needs to read the word (hence the runs there).
// Uses the helpers of `dot_int8.wgsl` (`xq_block`, `xq_scale`, the per-word sums);
// each unit's integer sums are scaled once, as the CPU scales each block's.

// Q4_0 · Q8_0, UNIT 8: the nibbles are 8 above the weight.
fn word8_q4_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 18u;
    let k = u & 3u;
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = nibble_word(u32_at(ob + 2u + 4u * k), k, xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s.x - 8 * s.y);
}

// Q4_1 · Q8_1, UNIT 8: weights d·q + m.
fn word8_q4_1(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 20u;
    let k = u & 3u;
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = nibble_word(u32_at(ob + 4u + 4u * k), k, xb);
    (*acc)[0] += xq_scale(xb) * (f16_at(ob) * f32(s.x) + f16_at(ob + 2u) * f32(s.y));
}

// Q5_0 · Q8_0, UNIT 8: quants 16 above the weight.
fn word8_q5_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 22u;
    let k = u & 3u;
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = q5_word(u32_at(ob + 2u), u32_at(ob + 6u + 4u * k), k, xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s.x - 16 * s.y);
}

// Q5_1 · Q8_1, UNIT 8: weights d·q + m.
fn word8_q5_1(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 24u;
    let k = u & 3u;
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = q5_word(u32_at(ob + 4u), u32_at(ob + 8u + 4u * k), k, xb);
    (*acc)[0] += xq_scale(xb) * (f16_at(ob) * f32(s.x) + f16_at(ob + 2u) * f32(s.y));
}

// IQ4_NL · Q8_0, UNIT 8: as Q4_0, each index through the codebook.
fn word8_iq4_nl(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 18u;
    let k = u & 3u;
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = iq4_word(u32_at(ob + 2u + 4u * k), k, xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s);
}

// IQ4_XS · Q8_K, UNIT 8: word k of a super-block's 32 words of indices, word k % 4 of
// sub-block k / 4 (low nibbles its first 16 weights, high its last 16).
fn word8_iq4_xs(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 5u) * 136u;
    let k = u & 31u;
    let ib = k >> 2u;
    let kw = k & 3u;
    let xb = xq_block(col0, (u >> 5u) * 256u + 32u * ib);
    let s = iq4_word(w[(ob >> 2u) + 2u + k], kw, xb);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(iq4_xs_scale(ob, ib) * s);
}

// Q8_0 · Q8_0, UNIT 8: words 2k and 2k + 1 of a block's 32 signed bytes.
fn word8_q8_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 34u;
    let k = u & 3u;
    let q = u64_at(ob + 2u + 8u * k);
    let xb = xq_block(col0, (u >> 2u) * 32u);
    let s = dot4I8Packed(q.x, xq[xb + 2u * k]) + dot4I8Packed(q.y, xq[xb + 2u * k + 1u]);
    (*acc)[0] += f16_at(ob) * xq_scale(xb) * f32(s);
}

// The K-quants with a lane per run of four words (UNIT 32): a lane's per-word share of
// decoding a super-block's scales would cost a GPU more time than reading its word, and
// the run's 16 bytes still lie next to its neighbours' (eight lanes read a super-block's
// quants whole).

// Q4_K and Q5_K · Q8_K: run j of a super-block's eight (at byte `qs`), words 4(j % 2)..
// of its 64-weight group j / 2 (see `k4_words`).
fn k4_word_run(row_base: u32, u: u32, col0: u32, block_bytes: u32, qs: u32, five: bool) -> f32 {
    let sb = u >> 3u;
    let j = u & 7u;
    let k0 = 4u * (j & 1u);
    return k4_words(row_base + sb * block_bytes, sb, j >> 1u, k0, 4u, col0, qs, five);
}

fn word8_q4_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    (*acc)[0] += k4_word_run(row_base, u, col0, 144u, 16u, false);
}

fn word8_q5_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    (*acc)[0] += k4_word_run(row_base, u, col0, 176u, 48u, true);
}

// Q6_K · Q8_K: run r of the t-th 32 bytes of half n's low bits (64n + 32t), words l4 =
// 4r..4r + 3: low nibbles weights 4·l4.. of quarter t of the half, high nibbles the same
// of quarter t + 2; their top two bits in word l4 of the half's 32 high-bit bytes (bits
// 2q for quarter q), their signed scales bytes 2t + r and 2t + r + 4 of the half's eight
// (one 16-weight run of each quarter).
fn word8_q6_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 210u;
    let n = (u >> 2u) & 1u;
    let t = (u >> 1u) & 1u;
    let r = u & 1u;
    let xb = xq_block(col0, (u >> 3u) * 256u + 128u * n + 32u * t);
    var s_lo = 0;
    var s_hi = 0;
    for (var i = 0u; i < 4u; i++) {
        let l4 = 4u * r + i;
        let ql = u32_at(ob + 64u * n + 32u * t + 4u * l4);
        let qh = u32_at(ob + 128u + 32u * n + 4u * l4);
        let lo = (ql & LOW_NIBBLES) | (((qh >> (2u * t)) & 0x03030303u) << 4u);
        let hi = ((ql >> 4u) & LOW_NIBBLES) | (((qh >> (2u * t + 4u)) & 0x03030303u) << 4u);
        let a = xq[xb + l4];
        let b = xq[xb + 18u + l4];
        s_lo += dot4I8Packed(lo, a) - 32 * dot4I8Packed(ONES, a);
        s_hi += dot4I8Packed(hi, b) - 32 * dot4I8Packed(ONES, b);
    }
    let sc = ob + 192u + 8u * n + 2u * t + r;
    let total = i8_at(sc) * s_lo + i8_at(sc + 4u) * s_hi;
    (*acc)[0] += f16_at(ob + 208u) * xq_scale(xb) * f32(total);
}

// Q2_K and Q3_K, UNIT 16: word kw of the 32 quant bytes of half n of a super-block (bytes
// l = 4kw.., each holding a 2-bit field j for weight 128n + 32j + l of the super-block),
// all four fields: four runs of four weights, each in its own 32-weight block of input.

// Q2_K · Q8_K: weights d · (sc & 15) · q − dmin · (sc >> 4), q 0..3.
fn word8_q2_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 4u) * 84u;
    let n = (u >> 3u) & 1u;
    let kw = u & 7u;
    let v = w[((ob + 16u) >> 2u) + 8u * n + kw];
    let xb = xq_block(col0, (u >> 4u) * 256u + 128u * n);
    var sums = 0;
    var mins = 0;
    for (var j = 0u; j < 4u; j++) {
        let sc = u8_at(ob + 8u * n + 2u * j + (kw >> 2u));
        let xv = xq[xb + 9u * j + kw];
        sums += i32(sc & 15u) * dot4I8Packed((v >> (2u * j)) & 0x03030303u, xv);
        mins += i32(sc >> 4u) * dot4I8Packed(ONES, xv);
    }
    let dm = unpack2x16float(w[(ob + 80u) >> 2u]);
    (*acc)[0] += xq_scale(xb) * (dm.x * f32(sums) - dm.y * f32(mins));
}

// Q3_K · Q8_K: q = the 2-bit field plus 4 × the hmask bit (4n + j) of byte l, 4 above
// the weight; signed 6-bit scales.
fn word8_q3_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 4u) * 110u;
    let n = (u >> 3u) & 1u;
    let kw = u & 7u;
    let v = u32_at(ob + 32u + 32u * n + 4u * kw);
    let h = u32_at(ob + 4u * kw);
    let xb = xq_block(col0, (u >> 4u) * 256u + 128u * n);
    var total = 0;
    for (var j = 0u; j < 4u; j++) {
        let q = ((v >> (2u * j)) & 0x03030303u) | (((h >> (4u * n + j)) & ONES) << 2u);
        let xv = xq[xb + 9u * j + kw];
        let s = dot4I8Packed(q, xv) - 4 * dot4I8Packed(ONES, xv);
        total += i32(q3_k_scale(ob + 96u, 8u * n + 2u * j + (kw >> 2u))) * s;
    }
    (*acc)[0] += f16_at(ob + 108u) * xq_scale(xb) * f32(total);
}
