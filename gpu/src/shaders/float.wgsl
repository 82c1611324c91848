// Unquantized rows: eight f32 (32 bytes), f16 or bf16 (16 bytes) per chunk.

fn dq_f32(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 32u;
    var v: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        v[k] = bitcast<f32>(u32_at(o + 4u * k));
    }
    return w8_from(v);
}

fn dq_f16(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 16u;
    var v: array<f32, 8>;
    for (var k = 0u; k < 4u; k++) {
        let pair = unpack2x16float(u32_at(o + 4u * k));
        v[2u * k] = pair.x;
        v[2u * k + 1u] = pair.y;
    }
    return w8_from(v);
}

// bf16 is the top half of an f32.
fn dq_bf16(row_base: u32, c: u32) -> W8 {
    let o = row_base + c * 16u;
    var v: array<f32, 8>;
    for (var k = 0u; k < 4u; k++) {
        let pair = u32_at(o + 4u * k);
        v[2u * k] = bitcast<f32>(pair << 16u);
        v[2u * k + 1u] = bitcast<f32>(pair & 0xffff0000u);
    }
    return w8_from(v);
}
