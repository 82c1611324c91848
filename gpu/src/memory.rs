//! What loupe keeps on the device, counted, and the budget it may fill.
//!
//! wgpu reports no size for an adapter's memory: the device says "out of memory" when an
//! allocation fails. A budget (`LOUPE_GPU_MEMORY=6GiB`, or [`crate::GpuOptions`]) caps what
//! loupe allocates below that, for a GPU shared with a desktop or another program, and
//! lets the tests run the out-of-memory paths on a software adapter with gigabytes free.
//! The weights and the whole-layer buffers (activations, KV cache) are charged against it;
//! each [`Charge`] gives its bytes back when the buffers it paid for are dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{GpuError, Result};

/// Bytes in use on one device, and the budget when there is one.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    budget: Option<u64>,
    used: AtomicU64,
}

/// Bytes paid for out of a [`Ledger`], returned when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    ledger: Arc<Ledger>,
    bytes: u64,
}

impl Ledger {
    pub(crate) fn new(budget: Option<u64>) -> Arc<Ledger> {
        Arc::new(Ledger {
            budget,
            used: AtomicU64::new(0),
        })
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` for `what` on `adapter`, or an out-of-memory error when the budget
    /// would be exceeded (nothing is taken then).
    pub(crate) fn charge(self: &Arc<Self>, bytes: u64, adapter: &str) -> Result<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if let Some(budget) = self.budget.filter(|&b| after > b) {
                return Err(GpuError::OutOfMemory {
                    adapter: adapter.to_string(),
                    bytes,
                    reason: format!(
                        "{used} of the {budget}-byte budget (LOUPE_GPU_MEMORY) are in use"
                    ),
                });
            }
            match self
                .used
                .compare_exchange(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        Ok(Charge {
            ledger: Arc::clone(self),
            bytes,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.ledger.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A size as `LOUPE_GPU_MEMORY` takes it: bytes, or a number with K, M, G (or KiB, MiB,
/// GiB; powers of 1024) after it, a fraction allowed ("1.5G").
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return None,
    };
    let x: f64 = number.parse().ok()?;
    let bytes = x * scale as f64;
    (x.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_written() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("6GiB"), Some(6 << 30));
        assert_eq!(parse_bytes("1.5 g"), Some(3 << 29));
        for bad in ["", "G", "-1G", "1T", "0", "1e3", "x"] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn charges_stay_within_the_budget_and_come_back() {
        let ledger = Ledger::new(Some(100));
        let a = ledger.charge(60, "test").unwrap();
        let err = ledger.charge(41, "test").unwrap_err().to_string();
        assert!(
            err.contains("41 more bytes") && err.contains("60 of the 100"),
            "{err}"
        );
        let b = ledger.charge(40, "test").unwrap();
        assert_eq!(ledger.used(), 100);
        drop(a);
        assert_eq!(ledger.used(), 40);
        drop(b);
        assert_eq!(ledger.used(), 0);
        let free = Ledger::new(None);
        let _big = free.charge(u64::MAX / 2, "test").unwrap();
    }
}
