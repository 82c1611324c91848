// RoPE's arithmetic, shared by the `rope` op (`ops.wgsl`) and the attention kernels that
// turn keys and queries as they read them (`attention.wgsl`), so both make the same bits.

// The indexes in a head of rotation pair `i` of the `n_rot` turned dimensions: adjacent
// elements, or (`halves`, NeoX) element i of each half.
fn rope_pair(i: u32, n_rot: u32, halves: bool) -> vec2<u32> {
    if halves {
        return vec2<u32>(i, i + n_rot / 2u);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// The pair (x0, x1) turned by the angle whose cosine is `c` and sine `s`.
fn rope_turn(x0: f32, x1: f32, c: f32, s: f32) -> vec2<f32> {
    return vec2<f32>(x0 * c - x1 * s, x0 * s + x1 * c);
}
