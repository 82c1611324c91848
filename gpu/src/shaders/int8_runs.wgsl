// Sixteen weights of a row as signed bytes q with one affine map w = a·q + b, for the
// tiled int8 matmul (`matmul_tiled_int8.wgsl`): run h16 of a row is its weights
// 16·h16 … 16·h16 + 15, within one scale of every quantized format. Each format's
// function is named `i8_` and the format.

struct I8Run {
    q: vec4<u32>,
    ab: vec2<f32>,
}

// Each byte of `q` (below 0x80) minus the same `offset` (below 0x80), as a signed byte: the
// high bit set first keeps every subtraction inside its byte. The formats whose quants sit
// above zero by a fixed offset give the integers the CPU dots, so no f32 product of the
// offset has to cancel against the sum.
fn minus(q: vec4<u32>, offset: u32) -> vec4<u32> {
    let high = vec4<u32>(0x80808080u);
    return ((q | high) - vec4<u32>(offset * ONES)) ^ high;
}

// The nibbles at `shift` (0 or 4) of sixteen bytes.
fn nibbles16(v: vec4<u32>, shift: u32) -> vec4<u32> {
    return (v >> vec4<u32>(shift)) & vec4<u32>(LOW_NIBBLES);
}

// The 32-weight blocks: run h16 is half h of block h16 / 2 (low nibbles, then high).
fn i8_q4_0(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 18u;
    let q = minus(nibbles16(bytes16(ob + 2u), 4u * (h16 & 1u)), 8u);
    return I8Run(q, vec2<f32>(f16_at(ob), 0.0));
}

fn i8_q4_1(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 20u;
    return I8Run(nibbles16(bytes16(ob + 4u), 4u * (h16 & 1u)), vec2<f32>(f16_at(ob), f16_at(ob + 2u)));
}

// Q5_0 and Q5_1: the nibbles with their fifth bits from the block's 32 high bits.
fn q5_run(qh: u32, qs: u32, h: u32) -> vec4<u32> {
    var q = nibbles16(bytes16(qs), 4u * h);
    for (var k = 0u; k < 4u; k++) {
        q[k] |= q5_high(qh, 16u * h + 4u * k);
    }
    return q;
}

fn i8_q5_0(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 22u;
    let q = minus(q5_run(u32_at(ob + 2u), ob + 6u, h16 & 1u), 16u);
    return I8Run(q, vec2<f32>(f16_at(ob), 0.0));
}

fn i8_q5_1(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 24u;
    return I8Run(q5_run(u32_at(ob + 4u), ob + 8u, h16 & 1u), vec2<f32>(f16_at(ob), f16_at(ob + 2u)));
}

fn i8_q8_0(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 34u;
    return I8Run(bytes16(ob + 2u + 16u * (h16 & 1u)), vec2<f32>(f16_at(ob), 0.0));
}

fn iq4_run(v: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(iq4_bytes(v.x), iq4_bytes(v.y), iq4_bytes(v.z), iq4_bytes(v.w));
}

fn i8_iq4_nl(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 1u) * 18u;
    let q = iq4_run(nibbles16(bytes16(ob + 2u), 4u * (h16 & 1u)));
    return I8Run(q, vec2<f32>(f16_at(ob), 0.0));
}

// The 256-weight super-blocks: run h16 starts at weight e = 16 · (h16 % 16) of super-block
// h16 / 16.

fn i8_iq4_xs(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 4u) * 136u;
    let ib = (h16 >> 1u) & 7u;
    let dl = f16_at(ob) * f32(iq4_xs_scale(ob, ib));
    let q = iq4_run(nibbles16(bytes16(ob + 8u + 16u * ib), 4u * (h16 & 1u)));
    return I8Run(q, vec2<f32>(dl, 0.0));
}

// Q2_K and Q3_K: run h16 % 16 of super-block h16 / 16, where `site2` says its bytes and
// its scale lie (a scale per 16).
fn i8_q2_k(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 4u) * 84u;
    let at = site2(16u * (h16 & 15u));
    let sc = u8_at(ob + site2_scale(at));
    let q = (bytes16(ob + 16u + 32u * at.n + at.l) >> vec4<u32>(2u * at.j)) & vec4<u32>(0x03030303u);
    let a = f16_at(ob + 80u) * f32(sc & 15u);
    return I8Run(q, vec2<f32>(a, -f16_at(ob + 82u) * f32(sc >> 4u)));
}

fn i8_q3_k(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 4u) * 110u;
    let at = site2(16u * (h16 & 15u));
    let low = (bytes16(ob + 32u + 32u * at.n + at.l) >> vec4<u32>(2u * at.j)) & vec4<u32>(0x03030303u);
    let high = (bytes16(ob + at.l) >> vec4<u32>(4u * at.n + at.j)) & vec4<u32>(ONES);
    let a = f16_at(ob + 108u) * q3_k_scale(ob + 96u, site2_scale(at));
    // A clear high bit means 4 lower: low + 4·high is 4 above the weight.
    return I8Run(minus(low | (high << vec4<u32>(2u)), 4u), vec2<f32>(a, 0.0));
}

// Q4_K and Q5_K: weight e is in 64-weight group g = e / 64, nibble half hh = (e % 64) / 32
// (sub-block 2g + hh), byte e % 32 of the group's 32 quant bytes from byte `qs` of the
// super-block (of `block_bytes`); Q5_K's fifth bits are bit 2g + hh of bytes 16 … 47.
fn k4_run(row_base: u32, h16: u32, block_bytes: u32, qs: u32, five: bool) -> I8Run {
    let ob = row_base + (h16 >> 4u) * block_bytes;
    let e = 16u * (h16 & 15u);
    let g = e >> 6u;
    let hh = (e & 63u) >> 5u;
    let sm = k4_scale_min(ob + 4u, 2u * g + hh);
    var q = nibbles16(bytes16(ob + qs + 32u * g + (e & 31u)), 4u * hh);
    if five {
        let high = (bytes16(ob + 16u + (e & 31u)) >> vec4<u32>(2u * g + hh)) & vec4<u32>(ONES);
        q |= high << vec4<u32>(4u);
    }
    return I8Run(q, vec2<f32>(f16_at(ob) * sm.x, -f16_at(ob + 2u) * sm.y));
}

fn i8_q4_k(row_base: u32, h16: u32) -> I8Run {
    return k4_run(row_base, h16, 144u, 16u, false);
}

fn i8_q5_k(row_base: u32, h16: u32) -> I8Run {
    return k4_run(row_base, h16, 176u, 48u, true);
}

// Q6_K: weight e is quarter k4 = (e % 128) / 32 of half n = e / 128 (four bits of ql, two
// of qh), 32 above the weight; a signed scale per 16.
fn i8_q6_k(row_base: u32, h16: u32) -> I8Run {
    let ob = row_base + (h16 >> 4u) * 210u;
    let e = 16u * (h16 & 15u);
    let n = e >> 7u;
    let k4 = (e & 127u) >> 5u;
    let l0 = e & 31u;
    let low = nibbles16(bytes16(ob + 64u * n + 32u * (k4 & 1u) + l0), 4u * (k4 >> 1u));
    let high = (bytes16(ob + 128u + 32u * n + l0) >> vec4<u32>(2u * k4)) & vec4<u32>(0x03030303u);
    let sc = i8_at(ob + 192u + 8u * n + 2u * k4 + (l0 >> 4u));
    let a = f16_at(ob + 208u) * f32(sc);
    return I8Run(minus(low | (high << vec4<u32>(4u)), 32u), vec2<f32>(a, 0.0));
}
