// out (b, rows) = x (b, cols) · wᵀ for a weight matrix stored as its GGUF blocks; the
// variant for adapters without subgroup operations.
//
// One workgroup per output row (and per group of NC activation rows): each thread walks
// the row in chunks of eight weights, dequantizes a chunk once (`DEQUANT`, chosen per
// format when the pipeline is built) and dots it with the same eight elements of each of
// its NC activation rows; the workgroup then adds its threads' sums in shared memory. The
// weight bytes are read as they lie in the file (blocks of 18, 22, 110 ... bytes, not
// 4-aligned), through the byte helpers in `bytes.wgsl`.

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
        dot_chunk(DEQUANT(row_base, c), c, col0, &acc);
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
        put(row, col0 + tid, partial[tid * WG]);
    }
}
