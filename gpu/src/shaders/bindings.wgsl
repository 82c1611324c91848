// What every matmul kernel binds besides its input (`input_f32.wgsl` or `dot_int8.wgsl`):
// the weight part, the results and the shape of this dispatch.

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
