// out (b, rows) = x (b, cols) · wᵀ for a weight matrix stored as its GGUF blocks; the
// variant for adapters with subgroup operations (the default where they exist).
//
// Each subgroup computes whole rows: its lanes walk the row a unit of UNIT weights at a
// time (`DOT`: eight weights dequantized once for all NC activation rows the workgroup
// carries, `chunk_dot` in `input_f32.wgsl`; for one row of a format in `wide.wgsl` a whole
// block, its scales decoded once and its quants read as whole words; or, over the packed
// int8 input, a block's integer dot in `dot_int8.wgsl`) and one subgroupAdd per activation
// row sums the lanes. No barriers and no shared memory, which is what makes it fast on
// GPUs and on CPU drivers alike. A workgroup owns ROWS consecutive rows and its subgroups
// take them in turn, so the kernel is right for any subgroup size the driver picks.

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let first = (wid.x + wid.y * p.groups_x) * ROWS;
    let col0 = wid.z * NC;
    let units = p.cols / UNIT;
    for (var r = sg; r < ROWS; r += n_sg) {
        let row = first + r;
        if row >= p.rows {
            break;
        }
        let row_base = row * p.row_bytes;
        var acc: array<f32, NC>;
        for (var u = lane; u < units; u += sg_size) {
            DOT(row_base, u, col0, &acc);
        }
        for (var j = 0u; j < NC; j++) {
            let sum = subgroupAdd(acc[j]);
            if lane == 0u && col0 + j < p.b {
                put(row, col0 + j, sum);
            }
        }
    }
}
