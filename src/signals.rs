//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: the process removes the temporary files it is
//! writing (a half-written quantization can be hundreds of MB) and then ends as the
//! signal's default would (the parent sees "killed by SIGTERM").
//!
//! One exception: while the chat REPL runs it asks that Ctrl-C only stop the reply being
//! written ([`ctrl_c_sets`]); SIGTERM and SIGHUP still end it. The signals are watched on a
//! thread of their own (signal-hook's iterator), so the cleaning runs as ordinary code,
//! not inside a signal handler; it tells SIGINT from SIGTERM, which a single ctrlc handler
//! cannot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Set by Ctrl-C instead of ending the process, once the REPL has asked.
static CTRL_C_FLAG: OnceLock<&'static AtomicBool> = OnceLock::new();

/// Watch the signals (once, at start). A failure leaves the default actions, which end
/// the process without cleaning: it is reported, not fatal.
pub fn install() {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loupe: cannot watch for Ctrl-C and SIGTERM ({e}): temporary files would stay if interrupted");
            return;
        }
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGINT {
                    if let Some(flag) = CTRL_C_FLAG.get() {
                        flag.store(true, Ordering::SeqCst);
                        continue;
                    }
                }
                loupe_gguf::atomic::remove_temporaries();
                // Ends the process as the signal would have; exit is the fallback.
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        })
        .map_or_else(
            |e| eprintln!("loupe: cannot watch for Ctrl-C and SIGTERM ({e})"),
            |_| (),
        );
}

/// From now on Ctrl-C sets `flag` instead of ending the process (the chat REPL: it stops
/// the reply being written).
pub fn ctrl_c_sets(flag: &'static AtomicBool) {
    let _ = CTRL_C_FLAG.set(flag);
}
