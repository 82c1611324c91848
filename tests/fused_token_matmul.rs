//! Matmuls fed one input give the bits of separate matmuls, on every layer of both test
//! models, packed (after the background repack) and not: one token's fused paths (Q/K/V
//! in one parallel region; gate, up and the gated activation in another), and a batch's
//! Q/K/V through `run_shared` (the input quantized once per partner format).

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
            let w = &model.weights;
            let m = |t| model.matrix(t);
            let l0 = &w.layers[0];
            let (dim, hid) = (l0.wq.cols, l0.w_gate.rows);
            let widest = l0.wq.rows.max(hid).max(l0.w_down.cols);
            const B: usize = 3;
            let mut mm = Matmul::new(B, widest, widest, 0);
            // A seeded input with both signs and a spread of magnitudes.
            let x: Vec<f32> = (0..dim)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 7) as f32))
                .collect();
            for (l, lw) in w.layers.iter().enumerate() {
                let what = format!("{} layer {l} packed {packed}", path.display());
                let ws = [&lw.wq, &lw.wk, &lw.wv].map(m);
                let mut sep: Vec<Vec<f32>> = ws.iter().map(|t| vec![0.0; t.rows]).collect();
                for (t, out) in ws.iter().zip(&mut sep) {
                    mm.run(*t, &x, 1, out).unwrap();
                }
                let mut fused: Vec<Vec<f32>> = ws.iter().map(|t| vec![f32::NAN; t.rows]).collect();
                let [q, k, v] = &mut fused[..] else {
                    unreachable!()
                };
                mm.token_qkv(ws, &x, [q, k, v]).unwrap();
                for (a, b) in sep.iter().zip(&fused) {
                    assert_eq!(bits(a), bits(b), "{what}: Q/K/V");
                }

                // A batch of B rows: shared input against each matrix alone.
                let xb: Vec<f32> = (0..B * dim)
                    .map(|i| x[i % dim] * (1.0 + (i / dim) as f32))
                    .collect();
                let mut sep: Vec<Vec<f32>> = ws.iter().map(|t| vec![0.0; B * t.rows]).collect();
                for (t, out) in ws.iter().zip(&mut sep) {
                    mm.run(*t, &xb, B, out).unwrap();
                }
                let mut shared: Vec<Vec<f32>> =
                    ws.iter().map(|t| vec![f32::NAN; B * t.rows]).collect();
                let [q, k, v] = &mut shared[..] else {
                    unreachable!()
                };
                let [wq, wk, wv] = ws;
                mm.run_shared(&xb, B, [(wq, q), (wk, k), (wv, v)]).unwrap();
                for (a, b) in sep.iter().zip(&shared) {
                    assert_eq!(bits(a), bits(b), "{what}: Q/K/V of a batch");
                }

                let (mut gate, mut up) = (vec![0.0; hid], vec![0.0; hid]);
                mm.run(m(&lw.w_gate), &x, 1, &mut gate).unwrap();
                mm.run(m(&lw.w_up), &x, 1, &mut up).unwrap();
                let want: Vec<f32> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect();
                let (mut got, mut up2) = (vec![f32::NAN; hid], vec![f32::NAN; hid]);
                let gate_up = [&lw.w_gate, &lw.w_up].map(m);
                mm.token_gated(gate_up, &x, &mut got, &mut up2, silu)
                    .unwrap();
                assert_eq!(bits(&want), bits(&got), "{what}: gate, up, activation");
                assert_eq!(bits(&up), bits(&up2), "{what}: up");
            }
        }
    }
}
