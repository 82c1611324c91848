// out (b, rows) = x (b, cols) · wᵀ for the formats with a wide dot (`wide.wgsl`): the
// subgroup kernel's layout (a subgroup per row, one subgroupAdd per activation row), but
// each lane takes a whole unit of UNIT weights at a time (a block or sub-block), so a
// block's scales are decoded once and its quants read as whole words.

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
                out[(col0 + j) * p.out_stride + p.row0 + row] = sum;
            }
        }
    }
}
