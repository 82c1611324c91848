// The input of the float kernels: activation rows as f32s (rounded as the CPU rounds
// them for the weights' format), read four at a time.

// Activation rows start at multiples of eight elements (cols is one), so vec4 loads align.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;

// Adds one chunk of eight weights times the same eight elements of each of the
// workgroup's NC activation rows (those that exist) to `acc`.
fn dot_chunk(wq: W8, c: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    for (var j = 0u; j < NC; j++) {
        if col0 + j < p.b {
            let xo = (p.x_off + (col0 + j) * p.cols + c * 8u) / 4u;
            (*acc)[j] += dot(wq.lo, x[xo]) + dot(wq.hi, x[xo + 1u]);
        }
    }
}

// A unit of eight weights (UNIT = 8): dequantized once for the NC activation rows. The
// formats with a wide dot (`wide.wgsl`) name theirs as DOT instead, a whole block each.
fn chunk_dot(row_base: u32, c: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    dot_chunk(DEQUANT(row_base, c), c, col0, acc);
}
