// out (b, rows) = x (b, cols) · wᵀ for prompt batches: a tiled matmul that every adapter
// runs (shared memory and barriers, no subgroup operations).
//
// A workgroup owns a tile of TM weight rows by NC activation rows. It walks the columns
// TK at a time: its threads dequantize the tile's TM × TK weights once (`DEQUANT`, eight
// at a time, the format's own function) and load the NC × TK activations, both into shared
// memory; then each thread adds the products for its 8 × 4 outputs from there. So a
// weight is dequantized once per NC activation rows (the mat-vec kernels: once per row
// or per eight), and the activations are read once per TM rows. TK keeps the tiles
// within 16 KiB of shared memory.

// The tile's shape (TM, WG, TX, TY) and the outputs' type are `tiled_tile.wgsl`'s.
const TK: u32 = 16u;

// Column-major by k, so the threads of a step read consecutive words.
var<workgroup> wt: array<f32, TK * TM>;
var<workgroup> xt: array<f32, TK * NC>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    // Uniform per workgroup, so the barriers below are reached by all threads or none.
    let row0 = (wid.x + wid.y * p.groups_x) * TM;
    if row0 >= p.rows {
        return;
    }
    let col0 = wid.z * NC;
    let chunks = p.cols / 8u;
    let tx = tid % TX;
    let ty = tid / TX;
    var acc: Outputs;
    for (var k0 = 0u; k0 < p.cols; k0 += TK) {
        // TM rows × TK/8 chunks of weights, zero past the matrix's rows or columns.
        for (var r = 0u; r < TM * (TK / 8u) / WG; r++) {
            let q = tid + r * WG;
            let m = q / (TK / 8u);
            let cc = q % (TK / 8u);
            let c = k0 / 8u + cc;
            var wq = W8(vec4<f32>(0.0), vec4<f32>(0.0));
            if row0 + m < p.rows && c < chunks {
                wq = DEQUANT((row0 + m) * p.row_bytes, c);
            }
            for (var e = 0u; e < 4u; e++) {
                wt[(cc * 8u + e) * TM + m] = wq.lo[e];
                wt[(cc * 8u + 4u + e) * TM + m] = wq.hi[e];
            }
        }
        // NC rows × TK/4 vec4s of activations, zero past the batch or the columns.
        for (var r = 0u; r < NC * (TK / 4u) / WG; r++) {
            let q = tid + r * WG;
            let n = q / (TK / 4u);
            let kv = q % (TK / 4u);
            var v = vec4<f32>(0.0);
            if col0 + n < p.b && k0 + kv * 4u < p.cols {
                v = x[(p.x_off + (col0 + n) * p.cols + k0) / 4u + kv];
            }
            for (var e = 0u; e < 4u; e++) {
                xt[(kv * 4u + e) * NC + n] = v[e];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < TK; k++) {
            let xk = k * NC + ty;
            let v = vec4<f32>(xt[xk], xt[xk + TY], xt[xk + 2u * TY], xt[xk + 3u * TY]);
            let wk = k * TM + tx;
            acc.r0 = fma(vec4<f32>(wt[wk]), v, acc.r0);
            acc.r1 = fma(vec4<f32>(wt[wk + TX]), v, acc.r1);
            acc.r2 = fma(vec4<f32>(wt[wk + 2u * TX]), v, acc.r2);
            acc.r3 = fma(vec4<f32>(wt[wk + 3u * TX]), v, acc.r3);
            acc.r4 = fma(vec4<f32>(wt[wk + 4u * TX]), v, acc.r4);
            acc.r5 = fma(vec4<f32>(wt[wk + 5u * TX]), v, acc.r5);
            acc.r6 = fma(vec4<f32>(wt[wk + 6u * TX]), v, acc.r6);
            acc.r7 = fma(vec4<f32>(wt[wk + 7u * TX]), v, acc.r7);
        }
        workgroupBarrier();
    }
    put_outputs(acc, row0, col0, tx, ty);
}
