//! Weights repacked in the background give the same logits, bit for bit, as the map's
//! rows: before, during and after the switch a generation computes the same numbers.

use loupe::store::{GEMMA3_270M, QWEN25_CODER_05B};
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};

/// Past the activation row count from which packed Q5_0 and Q6_K weights are decoded
/// for the batch kernels.
const BATCH: usize = 130;

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let opts = RunOptions {
        n_ctx: 192,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: BATCH,
    };
    let mut ctx = Context::new(model, opts).unwrap();
    // A small batch (the packed kernels), a big one (packed Q5_0 and Q6_K tiles put back
    // for the batch kernels) and then single tokens (the token path).
    let mut all = ctx.eval(&tokens[..8], Logits::From(0)).unwrap().to_vec();
    let big = &tokens[8..8 + BATCH];
    all.extend_from_slice(ctx.eval(big, Logits::From(BATCH - 4)).unwrap());
    for &t in &tokens[8 + BATCH..] {
        all.extend_from_slice(ctx.eval(&[t], Logits::Last).unwrap());
    }
    all
}

#[test]
fn repacked_weights_give_the_map_rows_bits() {
    let tokens: Vec<u32> = (0..8 + BATCH as u32 + 6).map(|i| 100 + 37 * i).collect();
    for known in [GEMMA3_270M, QWEN25_CODER_05B] {
        let path = known.path();
        assert!(
            path.is_file(),
            "test model {} is missing: run scripts/fetch-models.sh",
            path.display()
        );
        let packed = Model::load(&path).unwrap();
        let packs = packed.wait_repacked();
        let has_packable = packed.weights.layers.iter().any(|l| {
            [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                .iter()
                .any(|t| loupe_quant::packed::packs(t.ty))
        });
        let env_off = loupe_engine::model::repack::disabled_by_env();
        assert_eq!(
            packs,
            loupe_quant::kernels().runs_packed() && has_packable && !env_off,
            "{}: repacked",
            path.display()
        );
        let plain = Model::load_without_repacking(&path).unwrap();
        assert!(!plain.wait_repacked());
        let (a, b) = (logits(&packed, &tokens), logits(&plain, &tokens));
        assert_eq!(a.len(), b.len());
        let differ = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(differ, 0, "{}: {differ} logits differ", path.display());
    }
}
