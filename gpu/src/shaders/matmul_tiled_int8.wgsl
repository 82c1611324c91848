// out (b, rows) = x (b, cols) · wᵀ for prompt batches over the packed int8 input: the
// tiled matmul of `matmul_tiled.wgsl` with integer dots (every adapter runs it; no
// subgroup operations).
//
// A workgroup owns TM weight rows by NC activation rows and walks the columns one
// 32-element input block at a time. Its threads turn the tile's weights into signed
// bytes with one affine map per run of 16 (`DEQUANT8`: w = a·q + b, see
// `int8_runs.wgsl`) and copy the NC rows' packed input words with their scales and
// per-run sums into shared memory; then each thread's 4 × 4 outputs take, per run,
// four `dot4I8Packed` and x's scale · (a · Σq·x + b · Σx).

const TM: u32 = 64u;
const WG: u32 = 128u;
const TX: u32 = 16u;
const TY: u32 = WG / TX;

// Word k of a block's two runs (k / 4 the run), column-major so that a step's threads
// read consecutive words; the runs' maps; the input rows' words, and per run its scale
// and the sum of its bytes.
var<workgroup> wt: array<u32, 8u * TM>;
var<workgroup> wab: array<vec2<f32>, 2u * TM>;
var<workgroup> xt: array<u32, 8u * NC>;
var<workgroup> xs: array<vec2<f32>, 2u * NC>;

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
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.cols; k0 += 32u) {
        // One run of one weight row per thread (2 · TM = WG), zero past the rows.
        {
            let m = tid % TM;
            let h = tid / TM;
            var run = I8Run(vec4<u32>(0u), vec2<f32>(0.0));
            if row0 + m < p.rows {
                run = DEQUANT8((row0 + m) * p.row_bytes, k0 / 16u + h);
            }
            for (var k = 0u; k < 4u; k++) {
                wt[(4u * h + k) * TM + m] = run.q[k];
            }
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
            var sum = 0;
            for (var k = 0u; k < 4u; k++) {
                xt[(4u * h + k) * NC + n] = v[k];
                sum += dot4I8Packed(ONES, v[k]);
            }
            xs[h * NC + n] = vec2<f32>(scale, f32(sum));
        }
        workgroupBarrier();
        for (var h = 0u; h < 2u; h++) {
            var a: array<vec4<u32>, 4>;
            var v: array<vec4<u32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                for (var k = 0u; k < 4u; k++) {
                    a[i][k] = wt[(4u * h + k) * TM + tx + TX * i];
                    v[i][k] = xt[(4u * h + k) * NC + ty + TY * i];
                }
            }
            for (var i = 0u; i < 4u; i++) {
                let ab = wab[h * TM + tx + TX * i];
                for (var j = 0u; j < 4u; j++) {
                    var s = 0;
                    for (var k = 0u; k < 4u; k++) {
                        s += dot4I8Packed(a[i][k], v[j][k]);
                    }
                    let x = xs[h * NC + ty + TY * j];
                    acc[i][j] += x.x * (ab.x * f32(s) + ab.y * x.y);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + tx + TX * i;
        for (var j = 0u; j < 4u; j++) {
            let n = col0 + ty + TY * j;
            if row < p.rows && n < p.b {
                put(row, n, acc[i][j]);
            }
        }
    }
}
