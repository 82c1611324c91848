//! peer: llama.cpp and ggml (through `llama-cpp-sys-2`) as loupe's reference.
//!
//! - [`ggml_rows`]: ggml's dequantize/quantize of one row, for bit-exact block-format tests;
//! - [`llama`]: a model + context on the CPU: tokenize, logits, greedy, perplexity;
//! - [`kv_state`]: llama.cpp's saved KV state of a sequence, to fill a cache with made-up rows;
//! - [`bench`]: prompt processing (pp) and token generation (tg) speed, like llama-bench.
//!
//! All `unsafe` of the crate lives in these modules, each block with its `SAFETY` line.
//! Build it with `--release` only: the C++ is compiled as an unoptimised Debug build
//! otherwise.

pub mod bench;
pub mod ggml_rows;
pub mod kv_state;
pub mod llama;

pub use llama_cpp_sys_2 as sys;

use std::ffi::{c_char, c_void};
use std::sync::Once;

static INIT: Once = Once::new();

/// Initializes llama.cpp's backends once per process, and silences its logging unless
/// `PEER_VERBOSE` is set in the environment.
pub fn init() {
    INIT.call_once(|| {
        if std::env::var_os("PEER_VERBOSE").is_none() {
            // SAFETY: `quiet` has the callback's signature and ignores its pointers; a
            // null user_data is allowed. llama_log_set also installs it as ggml's logger.
            unsafe { sys::llama_log_set(Some(quiet), std::ptr::null_mut()) };
        }
        // SAFETY: called once per process (guarded by the Once), before any model loads.
        // ggml_cpu_init fills ggml-cpu's tables (idempotent), which the CPU type traits'
        // quantizers may use outside of any llama.cpp context.
        unsafe {
            sys::llama_backend_init();
            sys::ggml_cpu_init();
        }
    });
}

unsafe extern "C" fn quiet(_level: sys::ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

/// The llama.cpp system line: which SIMD features ggml was built with.
pub fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static, NUL-terminated buffer inside llama.cpp.
    let p = unsafe { sys::llama_print_system_info() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated (above); copied out before any other call.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
