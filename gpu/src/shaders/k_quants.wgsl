// The 256-weight K-quant super-blocks. A chunk of eight weights (c) is the 1/32 of a
// super-block that starts at weight e0 = 8 * (c % 32); all eight share one sub-block
// scale, and their bytes are consecutive in each field.

// Where weight e (0..255) of a Q2_K or Q3_K super-block lies: in half n = e / 128 of the
// quants, in the 2-bit field j = (e % 128) / 32 of byte l = e % 32 of that half; its
// scale is number 8n + 2j + l / 16.
struct Site2 {
    n: u32,
    j: u32,
    l: u32,
}

fn site2(e: u32) -> Site2 {
    return Site2(e >> 7u, (e & 127u) >> 5u, e & 31u);
}

fn site2_scale(s: Site2) -> u32 {
    return 8u * s.n + 2u * s.j + (s.l >> 4u);
}

fn dq_q2_k(row_base: u32, c: u32) -> W8 {
    let ob = row_base + (c >> 5u) * 84u;
    let at = site2(8u * (c & 31u));
    let sc = u8_at(ob + site2_scale(at));
    let dl = f16_at(ob + 80u) * f32(sc & 15u);
    let ml = f16_at(ob + 82u) * f32(sc >> 4u);
    let q = u64_at(ob + 16u + 32u * at.n + at.l);
    return W8(dl * fields4(q.x, 2u * at.j, 3u) - ml, dl * fields4(q.y, 2u * at.j, 3u) - ml);
}

// Sub-block scale `is` (0..15) of Q3_K: four low bits in bytes 0..7 (two per byte), two
// high bits in bytes 8..11 (four per byte); stored with a bias of 32.
fn q3_k_scale(scales: u32, is: u32) -> f32 {
    let low = (u8_at(scales + (is & 7u)) >> (4u * (is >> 3u))) & 15u;
    let high = (u8_at(scales + 8u + (is & 3u)) >> (2u * (is >> 2u))) & 3u;
    return f32(low | (high << 4u)) - 32.0;
}

fn dq_q3_k(row_base: u32, c: u32) -> W8 {
    let ob = row_base + (c >> 5u) * 110u;
    let at = site2(8u * (c & 31u));
    let dl = f16_at(ob + 108u) * q3_k_scale(ob + 96u, site2_scale(at));
    let q = u64_at(ob + 32u + 32u * at.n + at.l);
    let h = u64_at(ob + at.l);
    let bit = 4u * at.n + at.j;
    // A clear high bit means the 2-bit value is 4 lower.
    let lo = fields4(q.x, 2u * at.j, 3u) + 4.0 * fields4(h.x, bit, 1u) - 4.0;
    let hi = fields4(q.y, 2u * at.j, 3u) + 4.0 * fields4(h.y, bit, 1u) - 4.0;
    return W8(dl * lo, dl * hi);
}

// Q4_K and Q5_K: scale and min of sub-block j (0..7), 6 bits each, packed into 12 bytes.
fn k4_scale_min(scales: u32, j: u32) -> vec2<f32> {
    if j < 4u {
        return vec2<f32>(f32(u8_at(scales + j) & 63u), f32(u8_at(scales + j + 4u) & 63u));
    }
    let b = u8_at(scales + j + 4u);
    let sc = (b & 15u) | ((u8_at(scales + j - 4u) >> 6u) << 4u);
    let m = (b >> 4u) | ((u8_at(scales + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Where a chunk of a Q4_K or Q5_K super-block (`block_bytes` long) lies: the block's
// offset, its 64-weight group g, which half h of the group's bytes' nibbles, and the
// first of its 32 bytes l0; and the chunk's scale and min, d and dmin applied.
struct K4Chunk {
    ob: u32,
    g: u32,
    h: u32,
    l0: u32,
    dl: f32,
    ml: f32,
}

fn k4_chunk(row_base: u32, c: u32, block_bytes: u32) -> K4Chunk {
    let ob = row_base + (c >> 5u) * block_bytes;
    let e0 = 8u * (c & 31u);
    let g = e0 >> 6u;
    let h = (e0 & 63u) >> 5u;
    let sm = k4_scale_min(ob + 4u, 2u * g + h);
    return K4Chunk(ob, g, h, e0 & 31u, f16_at(ob) * sm.x, f16_at(ob + 2u) * sm.y);
}

fn dq_q4_k(row_base: u32, c: u32) -> W8 {
    let k = k4_chunk(row_base, c, 144u);
    let q = u64_at(k.ob + 16u + 32u * k.g + k.l0);
    return W8(k.dl * fields4(q.x, 4u * k.h, 15u) - k.ml, k.dl * fields4(q.y, 4u * k.h, 15u) - k.ml);
}

fn dq_q5_k(row_base: u32, c: u32) -> W8 {
    let k = k4_chunk(row_base, c, 176u);
    let q = u64_at(k.ob + 48u + 32u * k.g + k.l0);
    let qh = u64_at(k.ob + 16u + k.l0);
    let bit = 2u * k.g + k.h;
    let lo = fields4(q.x, 4u * k.h, 15u) + 16.0 * fields4(qh.x, bit, 1u);
    let hi = fields4(q.y, 4u * k.h, 15u) + 16.0 * fields4(qh.y, bit, 1u);
    return W8(k.dl * lo - k.ml, k.dl * hi - k.ml);
}

fn dq_q6_k(row_base: u32, c: u32) -> W8 {
    let ob = row_base + (c >> 5u) * 210u;
    let e0 = 8u * (c & 31u);
    let n = e0 >> 7u;
    let k4 = (e0 & 127u) >> 5u;
    let l0 = e0 & 31u;
    let sc = i8_at(ob + 192u + 8u * n + (l0 >> 4u) + 2u * k4);
    let dl = f16_at(ob + 208u) * f32(sc);
    let ql = u64_at(ob + 64u * n + l0 + 32u * (k4 & 1u));
    let qh = u64_at(ob + 128u + 32u * n + l0);
    let s = 4u * (k4 >> 1u);
    let lo = fields4(ql.x, s, 15u) + 16.0 * fields4(qh.x, 2u * k4, 3u) - 32.0;
    let hi = fields4(ql.y, s, 15u) + 16.0 * fields4(qh.y, 2u * k4, 3u) - 32.0;
    return W8(dl * lo, dl * hi);
}
