// out (b, rows) = x (b, cols) · wᵀ for a weight matrix stored as its GGUF blocks; the
// variant for adapters with subgroup operations (the default where they exist).
//
// Each subgroup computes whole rows: its lanes walk the row in chunks of eight weights
// (`DEQUANT` dequantizes a chunk once, for all NC activation rows the workgroup carries)
// and one subgroupAdd per activation row sums the lanes. No barriers and no shared
// memory, which is what makes it fast on GPUs and on CPU drivers alike. A workgroup owns
// ROWS consecutive rows and its subgroups take them in turn, so the kernel is right for
// any subgroup size the driver picks.

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
    let chunks = p.cols / 8u;
    for (var r = sg; r < ROWS; r += n_sg) {
        let row = first + r;
        if row >= p.rows {
            break;
        }
        let row_base = row * p.row_bytes;
        var acc: array<f32, NC>;
        for (var c = lane; c < chunks; c += sg_size) {
            dot_chunk(DEQUANT(row_base, c), c, col0, &acc);
        }
        for (var j = 0u; j < NC; j++) {
            let sum = subgroupAdd(acc[j]);
            if lane == 0u && col0 + j < p.b {
                out[(col0 + j) * p.out_stride + p.row0 + row] = sum;
            }
        }
    }
}
