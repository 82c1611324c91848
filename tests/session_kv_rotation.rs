//! Sessions saved with a quantized KV cache keep its heads as the cache holds them:
//! Hadamard-rotated, as llama.cpp stores a quantized cache. A file from before the
//! rotation (its header has no `kv_rotation`) holds unturned heads, which the rotated
//! attention would read as noise: it is refused by name, while an f16 file of that age
//! (nothing turned either way) still loads.

use loupe::store::QWEN25_CODER_05B;
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{Context, Model, RunOptions};
use loupe_engine::session::Session;
use loupe_engine::tokenizer::Tokenizer;
use loupe_gguf::atomic::Overwrite;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn session(model: &Model, kv: KvType) -> Session<'_> {
    let opts = RunOptions {
        n_ctx: 64,
        kv_type: KvTypes::same(kv),
        threads: 1,
        batch: 64,
    };
    Session::new(Context::new(model, opts).unwrap())
}

/// `from`'s session file with its header changed by `edit` and the checksum made good
/// again (layout: magic, version u32, header length u64, header JSON, the rest, SHA-256).
fn edit_header(from: &std::path::Path, to: &std::path::Path, edit: impl Fn(&mut Value)) {
    let bytes = std::fs::read(from).unwrap();
    let body = &bytes[..bytes.len() - 32];
    let hlen = u64::from_le_bytes(body[12..20].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&body[20..20 + hlen]).unwrap();
    edit(&mut header);
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = body[..12].to_vec();
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body[20 + hlen..]);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    std::fs::write(to, out).unwrap();
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
        edit_header(&file, &old, |h| {
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
