// What every matmul kernel binds besides its input (`input_f32.wgsl` or `dot_int8.wgsl`):
// the weight part, the results and the shape of this dispatch.

struct Params {
    rows: u32,       // rows in this part of the matrix
    cols: u32,       // elements per row (a multiple of 8)
    row_bytes: u32,  // bytes per row in the file
    b: u32,          // activation rows
    out_stride: u32, // rows of the whole matrix (all its parts and stacked matrices)
    row0: u32,       // the first row of this part
    groups_x: u32,   // workgroups along x in this dispatch (rows wrap into y)
    x_off: u32,      // the first element of x (in f32s, a multiple of 4)
    // A stacked matrix's rows go to up to three outputs (see `put`): the rows where the
    // second and third matrices start (out_stride when absent), each one's output (f32s
    // into `out`) and bias (f32s into `biases`, or NONE).
    start1: u32,
    start2: u32,
    out0: u32,
    out1: u32,
    out2: u32,
    bias0: u32,
    bias1: u32,
    bias2: u32,
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
// The layer constants (norm weights and biases) for whole layers; any buffer otherwise.
@group(0) @binding(4) var<storage, read> biases: array<f32>;

// Writes the sum of row `row` of this part for activation row `col`, plus the row's bias
// if it has one (the same f32 addition as adding the bias afterwards): into the output of
// the stacked matrix the row belongs to, (b, that matrix's rows).
fn put(row: u32, col: u32, sum: f32) {
    let r = p.row0 + row;
    var start = 0u;
    var end = p.start1;
    var at = p.out0;
    var bias = p.bias0;
    if r >= p.start2 {
        start = p.start2;
        end = p.out_stride;
        at = p.out2;
        bias = p.bias2;
    } else if r >= p.start1 {
        start = p.start1;
        end = p.start2;
        at = p.out1;
        bias = p.bias1;
    }
    var v = sum;
    if bias != NONE {
        v += biases[bias + r - start];
    }
    out[at + col * (end - start) + r - start] = v;
}
