// out (b, rows) = x (b, cols) · wᵀ for a weight matrix stored as its GGUF blocks.
//
// One workgroup per output row (and per group of NC activation rows): each thread walks
// the row in chunks of eight weights, dequantizes a chunk once (`DEQUANT`, chosen per
// format when the pipeline is built) and dots it with the same eight elements of each of
// its NC activation rows; the workgroup then adds its threads' sums. The weight bytes are
// read as they lie in the file (blocks of 18, 22, 110 ... bytes, not 4-aligned), through
// the byte helpers in `bytes.wgsl`.

struct Params {
    rows: u32,       // rows in this part of the matrix
    cols: u32,       // elements per row (a multiple of 8)
    row_bytes: u32,  // bytes per row in the file
    b: u32,          // activation rows
    out_stride: u32, // elements per output row (all rows of the matrix)
    row0: u32,       // the first row of this part
    groups_x: u32,   // workgroups along x in this dispatch (rows wrap into y)
    x_off: u32,      // the first element of x (in f32s)
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG * NC>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * p.groups_x;
    let col0 = wid.z * NC;
    // Uniform per workgroup, so the barriers below are reached by all threads or none.
    if row >= p.rows {
        return;
    }
    let row_base = row * p.row_bytes;
    let chunks = p.cols / 8u;
    var acc: array<f32, NC>;
    for (var c = tid; c < chunks; c += WG) {
        let wq = DEQUANT(row_base, c);
        for (var j = 0u; j < NC; j++) {
            if col0 + j < p.b {
                let xo = p.x_off + (col0 + j) * p.cols + c * 8u;
                let x0 = vec4<f32>(x[xo], x[xo + 1u], x[xo + 2u], x[xo + 3u]);
                let x1 = vec4<f32>(x[xo + 4u], x[xo + 5u], x[xo + 6u], x[xo + 7u]);
                acc[j] += dot(wq.lo, x0) + dot(wq.hi, x1);
            }
        }
    }
    for (var j = 0u; j < NC; j++) {
        partial[j * WG + tid] = acc[j];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if tid < s {
            for (var j = 0u; j < NC; j++) {
                partial[j * WG + tid] += partial[j * WG + tid + s];
            }
        }
        workgroupBarrier();
    }
    if tid < NC && col0 + tid < p.b {
        out[(col0 + tid) * p.out_stride + p.row0 + row] = partial[tid * WG];
    }
}
