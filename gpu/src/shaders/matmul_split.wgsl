// out (b, rows) = x (b, cols) · wᵀ with every subgroup of a workgroup on one row (hardware
// adapters' default): the workgroup's threads walk the row a unit of UNIT weights at a
// time (`DOT`, as in `matmul_subgroup.wgsl`), each subgroup adds its lanes with one
// subgroupAdd per activation row, and the first thread adds the subgroups' sums, in
// subgroup order, through shared memory. A GPU keeps its memory busy only with many reads
// in flight; with a subgroup per row, a matrix of a few thousand rows (an 8B model's
// stacked Q/K/V, attention output and down projections) has too few subgroups on the
// device, each waiting for one read before the next, to do that.

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG * NC>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let row = wid.x + wid.y * p.groups_x;
    let col0 = wid.z * NC;
    // Uniform per workgroup, so the barrier below is reached by all threads or none.
    if row >= p.rows {
        return;
    }
    let row_base = row * p.row_bytes;
    let units = p.cols / UNIT;
    var acc: array<f32, NC>;
    for (var u = tid; u < units; u += WG) {
        DOT(row_base, u, col0, &acc);
    }
    for (var j = 0u; j < NC; j++) {
        let sum = subgroupAdd(acc[j]);
        if lane == 0u {
            partial[j * WG + sg] = sum;
        }
    }
    workgroupBarrier();
    if tid < NC && col0 + tid < p.b {
        var sum = 0.0;
        for (var s = 0u; s < n_sg; s++) {
            sum += partial[tid * WG + s];
        }
        put(row, col0 + tid, sum);
    }
}
