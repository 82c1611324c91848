// The 32-weight block formats. A chunk of eight weights is a quarter of a block: the
// low nibbles of bytes 0..15 are weights 0..15, the high nibbles weights 16..31.

// (block byte offset, the chunk's first nibble byte (0 or 8), nibble shift (0 or 4))
fn nibble_chunk(row_base: u32, c: u32, block_bytes: u32) -> vec3<u32> {
    let q = c & 3u;
    return vec3<u32>(row_base + (c >> 2u) * block_bytes, 8u * (q & 1u), 4u * (q >> 1u));
}

fn dq_q4_0(row_base: u32, c: u32) -> W8 {
    let at = nibble_chunk(row_base, c, 18u);
    let d = f16_at(at.x);
    let q = u64_at(at.x + 2u + at.y);
    return W8(d * (fields4(q.x, at.z, 15u) - 8.0), d * (fields4(q.y, at.z, 15u) - 8.0));
}

fn dq_q4_1(row_base: u32, c: u32) -> W8 {
    let at = nibble_chunk(row_base, c, 20u);
    let d = f16_at(at.x);
    let m = f16_at(at.x + 2u);
    let q = u64_at(at.x + 4u + at.y);
    return W8(d * fields4(q.x, at.z, 15u) + m, d * fields4(q.y, at.z, 15u) + m);
}

// Weight i of a Q5 block takes bit i of the block's 32 high bits.
fn dq_q5_0(row_base: u32, c: u32) -> W8 {
    let at = nibble_chunk(row_base, c, 22u);
    let d = f16_at(at.x);
    let qh = u32_at(at.x + 2u) >> ((c & 3u) * 8u);
    let q = u64_at(at.x + 6u + at.y);
    let lo = fields4(q.x, at.z, 15u) + 16.0 * bits4(qh, 0u);
    let hi = fields4(q.y, at.z, 15u) + 16.0 * bits4(qh, 4u);
    return W8(d * (lo - 16.0), d * (hi - 16.0));
}

fn dq_q5_1(row_base: u32, c: u32) -> W8 {
    let at = nibble_chunk(row_base, c, 24u);
    let d = f16_at(at.x);
    let m = f16_at(at.x + 2u);
    let qh = u32_at(at.x + 4u) >> ((c & 3u) * 8u);
    let q = u64_at(at.x + 8u + at.y);
    let lo = fields4(q.x, at.z, 15u) + 16.0 * bits4(qh, 0u);
    let hi = fields4(q.y, at.z, 15u) + 16.0 * bits4(qh, 4u);
    return W8(d * lo + m, d * hi + m);
}

fn dq_q8_0(row_base: u32, c: u32) -> W8 {
    let ob = row_base + (c >> 2u) * 34u;
    let d = f16_at(ob);
    let q = u64_at(ob + 2u + 8u * (c & 3u));
    return W8(d * signed4(q.x), d * signed4(q.y));
}

// The non-linear 4-bit codebook of IQ4_NL and IQ4_XS.
const IQ4_VALUES = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
    1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

// The codebook values of four 4-bit indices (as fields4 gives them).
fn iq4_values(i: vec4<f32>) -> vec4<f32> {
    let u = vec4<u32>(i);
    return vec4<f32>(IQ4_VALUES[u.x], IQ4_VALUES[u.y], IQ4_VALUES[u.z], IQ4_VALUES[u.w]);
}

fn dq_iq4_nl(row_base: u32, c: u32) -> W8 {
    let at = nibble_chunk(row_base, c, 18u);
    let d = f16_at(at.x);
    let q = u64_at(at.x + 2u + at.y);
    return W8(d * iq4_values(fields4(q.x, at.z, 15u)), d * iq4_values(fields4(q.y, at.z, 15u)));
}

// 256-weight super-blocks of eight IQ4_NL-like sub-blocks with 6-bit scales.
fn dq_iq4_xs(row_base: u32, c: u32) -> W8 {
    let ob = row_base + (c >> 5u) * 136u;
    let ib = (c & 31u) >> 2u;
    let q = c & 3u;
    let d = f16_at(ob);
    let dl = d * f32(iq4_xs_scale(ob, ib));
    let v = u64_at(ob + 8u + 16u * ib + 8u * (q & 1u));
    let shift = 4u * (q >> 1u);
    return W8(dl * iq4_values(fields4(v.x, shift, 15u)), dl * iq4_values(fields4(v.y, shift, 15u)));
}
