//! One token's fused matmuls (Q/K/V in one parallel region; gate, up and the gated
//! activation in another) give the bits of the separate matmuls they replace, on every
//! layer of both test models, packed (after the background repack) and not.

use loupe::store::{GEMMA3_270M, QWEN25_CODER_05B};
use loupe_engine::model::matmul::Matmul;
use loupe_engine::model::ops::silu;
use loupe_engine::model::Model;

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fused_token_matmuls_give_the_separate_ones_bits() {
    for known in [GEMMA3_270M, QWEN25_CODER_05B] {
        let path = known.path();
        assert!(
            path.is_file(),
            "test model {} is missing: run scripts/fetch-models.sh",
            path.display()
        );
        for packed in [false, true] {
            let model = if packed {
                let m = Model::load(&path).unwrap();
                m.wait_repacked();
                m
            } else {
                Model::load_without_repacking(&path).unwrap()
            };
            let (file, w) = (&*model.file, &model.weights);
            let l0 = &w.layers[0];
            let (dim, hid) = (l0.wq.cols, l0.w_gate.rows);
            let widest = l0.wq.rows.max(hid).max(l0.w_down.cols);
            let mut mm = Matmul::new(1, widest, widest, 0);
            // A seeded input with both signs and a spread of magnitudes.
            let x: Vec<f32> = (0..dim)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 7) as f32))
                .collect();
            for (l, lw) in w.layers.iter().enumerate() {
                let what = format!("{} layer {l} packed {packed}", path.display());
                let ws = [&lw.wq, &lw.wk, &lw.wv];
                let mut sep: Vec<Vec<f32>> = ws.iter().map(|t| vec![0.0; t.rows]).collect();
                for (t, out) in ws.iter().zip(&mut sep) {
                    mm.run(file, t, &x, 1, out).unwrap();
                }
                let mut fused: Vec<Vec<f32>> = ws.iter().map(|t| vec![f32::NAN; t.rows]).collect();
                let [q, k, v] = &mut fused[..] else {
                    unreachable!()
                };
                mm.token_qkv(file, ws, &x, [q, k, v]).unwrap();
                for (a, b) in sep.iter().zip(&fused) {
                    assert_eq!(bits(a), bits(b), "{what}: Q/K/V");
                }

                let (mut gate, mut up) = (vec![0.0; hid], vec![0.0; hid]);
                mm.run(file, &lw.w_gate, &x, 1, &mut gate).unwrap();
                mm.run(file, &lw.w_up, &x, 1, &mut up).unwrap();
                let want: Vec<f32> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect();
                let (mut got, mut up2) = (vec![f32::NAN; hid], vec![f32::NAN; hid]);
                let gate_up = [&lw.w_gate, &lw.w_up];
                mm.token_gated(file, gate_up, &x, &mut got, &mut up2, silu)
                    .unwrap();
                assert_eq!(bits(&want), bits(&got), "{what}: gate, up, activation");
                assert_eq!(bits(&up), bits(&up2), "{what}: up");
            }
        }
    }
}
