// What every matmul kernel binds: the weight part, the activations, the results and
// the shape of this dispatch.

struct Params {
    rows: u32,       // rows in this part of the matrix
    cols: u32,       // elements per row (a multiple of 8)
    row_bytes: u32,  // bytes per row in the file
    b: u32,          // activation rows
    out_stride: u32, // elements per output row (all rows of the matrix)
    row0: u32,       // the first row of this part
    groups_x: u32,   // workgroups along x in this dispatch (rows wrap into y)
    x_off: u32,      // the first element of x (in f32s, a multiple of 4)
    bias: u32,       // where the matrix's bias lies in `biases` (in f32s), or NONE
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> w: array<u32>;
// Activation rows start at multiples of eight elements (cols is one), so vec4 loads align.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
// The layer constants (norm weights and biases) for whole layers; any buffer otherwise.
@group(0) @binding(4) var<storage, read> biases: array<f32>;

// The value written for row `row` of this part: its sum plus the row's bias, if any
// (the same f32 addition as adding the bias afterwards).
fn result(row: u32, sum: f32) -> f32 {
    if p.bias == NONE {
        return sum;
    }
    return sum + biases[p.bias + p.row0 + row];
}

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
