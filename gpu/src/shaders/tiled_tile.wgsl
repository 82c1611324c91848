// What the two tiled matmuls (`matmul_tiled.wgsl`, `matmul_tiled_int8.wgsl`) share: the
// tile's shape and each thread's outputs.

// A workgroup's tile is TM weight rows by NC activation rows (the host puts both before
// this source: `TILE_ROWS`, `TILE_WIDTH`); its threads, TX across the weight rows and TY
// across the activation rows.
const WG: u32 = 128u;
const TX: u32 = 16u;
const TY: u32 = WG / TX;

// A thread's 8 × 4 outputs: `r`i holds weight row tx + TX·i against activation rows
// ty + TY·j, j = 0..4. Named members, not an indexed array, which a driver may keep in
// memory instead of registers (lavapipe did: the int8 kernel ran three times slower).
struct Outputs {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
    r4: vec4<f32>,
    r5: vec4<f32>,
    r6: vec4<f32>,
    r7: vec4<f32>,
}

// A thread's outputs written where they exist (rows and activation rows past the
// matrix's are not).
fn put_outputs(o: Outputs, row0: u32, col0: u32, tx: u32, ty: u32) {
    let rows = array<vec4<f32>, 8>(o.r0, o.r1, o.r2, o.r3, o.r4, o.r5, o.r6, o.r7);
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + tx + TX * i;
        for (var j = 0u; j < 4u; j++) {
            let n = col0 + ty + TY * j;
            if row < p.rows && n < p.b {
                put(row, n, rows[i][j]);
            }
        }
    }
}
