// out (b, rows) = x (b, cols) · wᵀ for prompt batches over the packed int8 input: the
// tiled matmul of `matmul_tiled.wgsl` with integer dots (every adapter runs it; no
// subgroup operations).
//
// A workgroup owns TM weight rows by NC activation rows and walks the columns one
// 32-element input block at a time. Its threads turn the tile's weights into signed
// bytes with one affine map per run of 16 (`DEQUANT8`: w = a·q + b, see
// `int8_runs.wgsl`) and copy the NC rows' packed input words with their scales and
// per-run sums into shared memory; then each thread's 8 × 4 outputs take, per run,
// four `dot4I8Packed` and x's scale · (a · Σq·x + b · Σx). A step's inputs live in
// named vectors, as the outputs do (see `tiled_tile.wgsl`, which gives the tile's shape),
// and a thread reads a run's four words as one vector.

// Per run (a block's two halves, h) and weight row m, its 16 quants as four words and
// its map; per run and input row n, its four words and its scale with the sum of its
// bytes.
var<workgroup> wt: array<vec4<u32>, 2u * TM>;
var<workgroup> wab: array<vec2<f32>, 2u * TM>;
var<workgroup> xt: array<vec4<u32>, 2u * NC>;
var<workgroup> xs: array<vec2<f32>, 2u * NC>;

// The integer dot of two runs' sixteen signed bytes.
fn dot16(a: vec4<u32>, v: vec4<u32>) -> i32 {
    return dot4I8Packed(a.x, v.x) + dot4I8Packed(a.y, v.y) + dot4I8Packed(a.z, v.z) + dot4I8Packed(a.w, v.w);
}

// One weight run against the four input runs of a thread's tokens, scaled:
// x's scale · (a · Σq·x + b · Σx) for each token.
fn run4(
    a: vec4<u32>,
    ab: vec2<f32>,
    v0: vec4<u32>,
    v1: vec4<u32>,
    v2: vec4<u32>,
    v3: vec4<u32>,
    sc: vec4<f32>,
    sums: vec4<f32>,
) -> vec4<f32> {
    let s = vec4<f32>(f32(dot16(a, v0)), f32(dot16(a, v1)), f32(dot16(a, v2)), f32(dot16(a, v3)));
    return sc * (ab.x * s + ab.y * sums);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    // Uniform per workgroup, so the barriers below are reached by all threads or none.
    let row0 = (wid.x + wid.y * p.groups_x) * TM;
    if row0 >= p.rows {
        return;
    }
    let col0 = wid.z * NC;
    let tx = tid % TX;
    let ty = tid / TX;
    var acc: Outputs;
    for (var k0 = 0u; k0 < p.cols; k0 += 32u) {
        // The 2 · TM runs of weight rows, 2 · TM / WG a thread, zero past the rows.
        for (var r = 0u; r < 2u * TM / WG; r++) {
            let t = tid + r * WG;
            let m = t % TM;
            let h = t / TM;
            var run = I8Run(vec4<u32>(0u), vec2<f32>(0.0));
            if row0 + m < p.rows {
                run = DEQUANT8((row0 + m) * p.row_bytes, k0 / 16u + h);
            }
            wt[h * TM + m] = run.q;
            wab[h * TM + m] = run.ab;
        }
        // One run of one input row per thread of the first 2 · NC, zero past the batch.
        if tid < 2u * NC {
            let n = tid >> 1u;
            let h = tid & 1u;
            var v = vec4<u32>(0u);
            var scale = 0.0;
            if col0 + n < p.b {
                let xb = xq_block(col0 + n, k0);
                v = vec4<u32>(xq[xb + 4u * h], xq[xb + 4u * h + 1u], xq[xb + 4u * h + 2u], xq[xb + 4u * h + 3u]);
                scale = xq_scale(xb);
            }
            xt[h * NC + n] = v;
            xs[h * NC + n] = vec2<f32>(scale, f32(dot16(vec4<u32>(ONES), v)));
        }
        workgroupBarrier();
        for (var h = 0u; h < 2u; h++) {
            let x0 = xs[h * NC + ty];
            let x1 = xs[h * NC + ty + TY];
            let x2 = xs[h * NC + ty + 2u * TY];
            let x3 = xs[h * NC + ty + 3u * TY];
            let sc = vec4<f32>(x0.x, x1.x, x2.x, x3.x);
            let sums = vec4<f32>(x0.y, x1.y, x2.y, x3.y);
            let v0 = xt[h * NC + ty];
            let v1 = xt[h * NC + ty + TY];
            let v2 = xt[h * NC + ty + 2u * TY];
            let v3 = xt[h * NC + ty + 3u * TY];
            let r = h * TM + tx;
            acc.r0 += run4(wt[r], wab[r], v0, v1, v2, v3, sc, sums);
            acc.r1 += run4(wt[r + TX], wab[r + TX], v0, v1, v2, v3, sc, sums);
            acc.r2 += run4(wt[r + 2u * TX], wab[r + 2u * TX], v0, v1, v2, v3, sc, sums);
            acc.r3 += run4(wt[r + 3u * TX], wab[r + 3u * TX], v0, v1, v2, v3, sc, sums);
            acc.r4 += run4(wt[r + 4u * TX], wab[r + 4u * TX], v0, v1, v2, v3, sc, sums);
            acc.r5 += run4(wt[r + 5u * TX], wab[r + 5u * TX], v0, v1, v2, v3, sc, sums);
            acc.r6 += run4(wt[r + 6u * TX], wab[r + 6u * TX], v0, v1, v2, v3, sc, sums);
            acc.r7 += run4(wt[r + 7u * TX], wab[r + 7u * TX], v0, v1, v2, v3, sc, sums);
        }
        workgroupBarrier();
    }
    put_outputs(acc, row0, col0, tx, ty);
}
