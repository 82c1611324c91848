//! Sessions saved with a quantized KV cache keep its heads as the cache holds them:
//! Hadamard-rotated, as llama.cpp stores a quantized cache. A file from before the
//! rotation (its header has no `kv_rotation`) holds unturned heads, which the rotated
//! attention would read as noise: it is refused by name, while an f16 file of that age
//! (nothing turned either way) still loads.

mod common;

use loupe::store::QWEN25_CODER_05B;
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{Context, Model, RunOptions};
use loupe_engine::session::Session;
use loupe_engine::tokenizer::Tokenizer;
use loupe_gguf::atomic::Overwrite;
use serde_json::json;

fn session(model: &Model, kv: KvType) -> Session<'_> {
    let opts = RunOptions {
        n_ctx: 64,
        kv_type: KvTypes::same(kv),
        threads: 1,
        batch: 64,
    };
    Session::new(Context::new(model, opts).unwrap())
}

#[test]
fn rotated_caches_round_trip_and_unrotated_files_are_refused() {
    let model = Model::load(QWEN25_CODER_05B.path()).unwrap();
    let tok = Tokenizer::from_metadata(model.file.metadata()).unwrap();
    let tokens = tok.encode("The capital of France is", true, false);
    let dir = tempfile::tempdir().unwrap();

    for kv in [KvType::Q8_0, KvType::F16] {
        let mut s = session(&model, kv);
        let want = s.sync(&tokens).unwrap().1.to_vec();
        let file = dir.path().join(format!("{kv}.session"));
        s.save(&file, &json!({}), Overwrite::SameKind).unwrap();

        // The same loupe reads it back: the same cache, so the same next-token logits.
        let mut back = session(&model, kv);
        back.load(&file).unwrap();
        let got = back
            .push(tok.encode(" Paris", false, false)[0])
            .unwrap()
            .to_vec();
        let again = s
            .push(tok.encode(" Paris", false, false)[0])
            .unwrap()
            .to_vec();
        assert_eq!(got, again, "{kv}: a restored cache computes otherwise");
        assert_ne!(want, got);

        // A file as an older loupe wrote it: no rotation recorded.
        let old = dir.path().join(format!("{kv}-old.session"));
        common::edit_session_header(&file, &old, |h| {
            h.as_object_mut().unwrap().remove("kv_rotation");
        });
        let loaded = session(&model, kv).load(&old);
        match kv {
            KvType::F16 => {
                loaded.unwrap();
            }
            _ => {
                let err = format!("{:#}", loaded.unwrap_err());
                assert!(
                    err.contains("heads as they are")
                        && err.contains("Hadamard-rotated")
                        && err.contains("start the conversation again"),
                    "{err}"
                );
            }
        }
    }
}
