//! Where do loupe and llama.cpp drift apart? Runs one prompt through both, capturing
//! llama.cpp's intermediate tensors with its eval callback and loupe's with
//! `Context::set_capture`, and prints the largest difference per tensor and layer.
//! `cargo run --release --example capture -- MODEL "text" [LAYERS]`; with `CAPTURE_LAST=1`
//! the text's last token is decoded on its own after the others (the generation path)
//! and only that step is compared.
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::sync::{Arc, Mutex};

use llama_cpp_sys_2 as sys;
use loupe_engine::model::kv_cache::KvTypes;
use loupe_engine::model::{Context, Logits, Model, RunOptions};

/// (name, shape, values) of each tensor llama.cpp computed.
type Captured = (String, Vec<i64>, Vec<f32>);
static LLAMA: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

unsafe extern "C" fn cb(t: *mut sys::ggml_tensor, ask: bool, _u: *mut c_void) -> bool {
    // SAFETY: ggml hands us a live tensor for the duration of the call.
    let t = unsafe { &*t };
    if ask {
        return true;
    }
    // SAFETY: the name is a NUL-terminated array inside the tensor.
    let name = unsafe { CStr::from_ptr(t.name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let n: i64 = t.ne.iter().product();
    let contiguous =
        t.nb[0] == 4 && t.nb[1] == 4 * t.ne[0] as usize && t.nb[2] == t.nb[1] * t.ne[1] as usize;
    if t.type_ == sys::GGML_TYPE_F32 && contiguous && !t.data.is_null() {
        // SAFETY: a contiguous f32 tensor of n elements on the CPU backend.
        let v = unsafe { std::slice::from_raw_parts(t.data as *const f32, n as usize) }.to_vec();
        LLAMA.lock().unwrap().push((name, t.ne.to_vec(), v));
    }
    true
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, text) = (&args[1], &args[2]);
    let layers: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    peer::init();
    let c_path = CString::new(path.as_str()).unwrap();
    // SAFETY: plain FFI calls with valid arguments; pointers checked for null.
    let (model, ctx, vocab) = unsafe {
        let mut mp = sys::llama_model_default_params();
        mp.n_gpu_layers = 0;
        let model = sys::llama_model_load_from_file(c_path.as_ptr(), mp);
        assert!(!model.is_null());
        let mut cp = sys::llama_context_default_params();
        cp.n_ctx = 512;
        cp.n_batch = 512;
        cp.n_ubatch = 512;
        cp.n_threads = 2;
        cp.n_threads_batch = 2;
        cp.cb_eval = Some(cb);
        let ctx = sys::llama_init_from_model(model, cp);
        assert!(!ctx.is_null());
        (model, ctx, sys::llama_model_get_vocab(model))
    };
    let ctext = CString::new(text.as_str()).unwrap();
    let mut toks = vec![0i32; 512];
    // SAFETY: buffers sized as passed.
    let n = unsafe {
        sys::llama_tokenize(
            vocab,
            ctext.as_ptr(),
            text.len() as i32,
            toks.as_mut_ptr(),
            512,
            true,
            false,
        )
    };
    toks.truncate(n as usize);
    // SAFETY: allocates a batch of 512 tokens, freed below.
    let mut batch = unsafe { sys::llama_batch_init(512, 0, 1) };
    let last_alone = std::env::var("CAPTURE_LAST").is_ok_and(|v| v == "1");
    let split = if last_alone {
        toks.len() - 1
    } else {
        toks.len()
    };
    let parts: Vec<std::ops::Range<usize>> = [0..split, split..toks.len()]
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect();
    for r in &parts {
        // Only the last decode's tensors are compared.
        LLAMA.lock().unwrap().clear();
        // SAFETY: batch has room for 512 tokens with one sequence id each.
        unsafe {
            for (j, i) in r.clone().enumerate() {
                *batch.token.add(j) = toks[i];
                *batch.pos.add(j) = i as i32;
                *batch.n_seq_id.add(j) = 1;
                *(*batch.seq_id.add(j)) = 0;
                *batch.logits.add(j) = 1;
            }
            batch.n_tokens = r.len() as i32;
            assert_eq!(sys::llama_decode(ctx, batch), 0);
        }
    }

    let m = Model::load(path).unwrap();
    let mut lctx = Context::new(
        &m,
        RunOptions {
            n_ctx: 512,
            kv_type: KvTypes::F16,
            threads: 2,
            batch: 512,
        },
    )
    .unwrap();
    let ours: Arc<Mutex<HashMap<String, Vec<f32>>>> = Arc::default();
    let o2 = ours.clone();
    lctx.set_capture(Some(Box::new(move |name, l, x| {
        o2.lock().unwrap().insert(format!("{name}-{l}"), x.to_vec());
    })));
    let input: Vec<u32> = toks.iter().map(|&t| t as u32).collect();
    for r in &parts {
        ours.lock().unwrap().clear();
        lctx.eval(&input[r.clone()], Logits::From(0)).unwrap();
    }
    let ours = ours.lock().unwrap();
    println!("{} tokens", toks.len());
    // The last tensor of each name is the finished value (Qcur is named before and after RoPE).
    let all = LLAMA.lock().unwrap();
    let mut last: Vec<&Captured> = Vec::new();
    for e in all.iter() {
        last.retain(|x| x.0 != e.0);
        last.push(e);
    }
    for (name, ne, v) in last.into_iter().map(|e| (&e.0, &e.1, &e.2)) {
        let layer: Option<usize> = name.rsplit('-').next().and_then(|s| s.parse().ok());
        if layer.is_some_and(|l| l >= layers) {
            continue;
        }
        let mine = ours.get(name.as_str());
        let diff = mine.filter(|m| m.len() == v.len()).map(|m| {
            let d = m
                .iter()
                .zip(v)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let mag = v.iter().map(|a| a.abs()).fold(0f32, f32::max);
            format!("max|diff| {d:.3e} (max|x| {mag:.3e})")
        });
        println!("{name:24} {ne:?} {}", diff.unwrap_or_else(|| "-".into()));
    }
    // SAFETY: freeing what we created, context first.
    unsafe {
        sys::llama_batch_free(batch);
        sys::llama_free(ctx);
        sys::llama_model_free(model);
    }
}
