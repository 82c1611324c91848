// Unquantized rows: eight f32 (32 bytes), f16 or bf16 (16 bytes) per chunk.

fn f32x4_at(o: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(u32_at(o), u32_at(o + 4u), u32_at(o + 8u), u32_at(o + 12u)));
}

fn dq_f32(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 32u;
    return W8(f32x4_at(o), f32x4_at(o + 16u));
}

fn f16x4_at(o: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(u32_at(o)), unpack2x16float(u32_at(o + 4u)));
}

fn dq_f16(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 16u;
    return W8(f16x4_at(o), f16x4_at(o + 8u));
}

// bf16 is the top half of an f32.
fn bf16x4_at(o: u32) -> vec4<f32> {
    let a = u32_at(o);
    let b = u32_at(o + 4u);
    return bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
}

fn dq_bf16(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 16u;
    return W8(bf16x4_at(o), bf16x4_at(o + 8u));
}
