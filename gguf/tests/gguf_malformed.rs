//! A corpus of malformed GGUF files, made from a valid one: truncation at every byte,
//! byte flips across the header and directory, counts and lengths up to u64::MAX,
//! misaligned and overlapping tensors, unknown type ids, wrong magic and version.
//! Every case must end in an error (or, for harmless flips, a valid parse) without a
//! panic, and no parse may allocate more than a small multiple of the input's size.
//!
//! Allocations are counted per thread, so tests running beside each other do not mix.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{field_map, patch, Field};
use loupe_gguf::{parse, GgufError};

struct Counting;

thread_local! {
    // Const-initialised cells without destructors: safe to touch from the allocator.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts bytes per thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.with(|c| {
            c.set(c.get() + l.size() as isize);
            c.get()
        });
        PEAK.with(|p| p.set(p.get().max(now)));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // Memory freed on another thread than it was allocated on can make a thread's
        // count negative; only differences within one parse matter.
        LIVE.with(|c| c.set(c.get() - l.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Parse `bytes`, returning the result and the bytes allocated at peak during the parse.
fn parse_counted(bytes: &[u8]) -> (Result<(), GgufError>, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = parse(bytes).map(drop);
    (r, (PEAK.with(Cell::get) - base).max(0) as usize)
}

/// Allocation allowed for a parse of `len` bytes: a small multiple plus a constant for
/// the fixed-size tables.
fn budget(len: usize) -> usize {
    8 * len + 64 * 1024
}

struct Tally {
    cases: usize,
    errors: usize,
}

impl Tally {
    fn check(&mut self, label: &str, bytes: &[u8], must_fail: bool) {
        self.cases += 1;
        let (r, peak) = parse_counted(bytes);
        assert!(
            peak <= budget(bytes.len()),
            "{label}: parse of {} bytes allocated {peak} bytes",
            bytes.len()
        );
        match r {
            Err(e) => {
                self.errors += 1;
                let msg = e.to_string();
                assert!(msg.len() > 10, "{label}: error message too thin: {msg:?}");
            }
            Ok(()) => assert!(!must_fail, "{label}: parsed without error"),
        }
    }
}

#[test]
fn malformed_corpus_errors_cleanly() {
    let good = common::sample_file();
    let (fields, data_start) = field_map(&good);
    assert!(parse(&good).is_ok());
    let last_tensor_end = {
        let d = parse(&good).unwrap();
        let t = d.tensors.iter().max_by_key(|t| t.offset).unwrap();
        (d.data_offset + t.offset + t.n_bytes()) as usize
    };
    let mut tally = Tally {
        cases: 0,
        errors: 0,
    };

    // 1. Truncation at every byte: anything short of the last tensor's end is an error.
    for cut in 0..good.len() {
        tally.check(
            &format!("truncated to {cut}"),
            &good[..cut],
            cut < last_tensor_end,
        );
    }

    // 2. Byte flips across the header and directory (any outcome but a panic or a big
    //    allocation is fine: a flipped letter in a name is still a valid file).
    for at in 0..data_start {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= mask;
            tally.check(&format!("byte {at} ^ {mask:#x}"), &b, false);
        }
    }

    // 3. Every count and length field set to huge and off-by-one values.
    for &(at, width, kind) in &fields {
        let huge: &[u64] = match width {
            8 => &[
                u64::MAX,
                u64::MAX / 2,
                1 << 63,
                1 << 32,
                good.len() as u64,
                good.len() as u64 + 1,
            ],
            4 => &[u32::MAX as u64, 1 << 31, 0x0100_0000, 5, 0],
            _ => &[2, 0xff],
        };
        for &v in huge {
            let mut b = good.clone();
            patch(&mut b, at, width, v);
            let must_fail = match kind {
                // Every candidate value is larger than the whole file, or not a valid value.
                Field::TensorCount | Field::KvCount | Field::StringLen | Field::ArrayLen => true,
                Field::Magic | Field::Version | Field::NDims | Field::BoolByte => true,
                Field::Dim => v >= 1 << 32,
                Field::TensorOffset => v >= good.len() as u64,
                // A different but valid type may still parse.
                Field::ValueType | Field::TensorType => false,
            };
            tally.check(&format!("{kind:?} at {at} = {v}"), &b, must_fail);
        }
    }

    // 4. Tensor placement: misaligned, overlapping, past the end.
    let offsets: Vec<usize> = fields
        .iter()
        .filter(|f| f.2 == Field::TensorOffset)
        .map(|f| f.0)
        .collect();
    let second_offset = u64::from_le_bytes(good[offsets[1]..offsets[1] + 8].try_into().unwrap());
    for (label, at, v) in [
        ("misaligned", offsets[1], second_offset + 1),
        ("overlapping", offsets[1], 0),
        ("overlapping by one block", offsets[2], second_offset),
        ("past the end", offsets[3], good.len() as u64),
    ] {
        let mut b = good.clone();
        patch(&mut b, at, 8, v);
        tally.check(label, &b, true);
        let msg = parse(&b).unwrap_err().to_string();
        assert!(
            msg.contains("tensor \"") && msg.contains("offset"),
            "{label}: {msg}"
        );
    }

    // 5. Unknown type ids, zero dims, too many dims.
    let types: Vec<usize> = fields
        .iter()
        .filter(|f| f.2 == Field::TensorType)
        .map(|f| f.0)
        .collect();
    for id in [4u64, 5, 31, 33, 36, 43, 999, u32::MAX as u64] {
        let mut b = good.clone();
        patch(&mut b, types[0], 4, id);
        tally.check(&format!("type id {id}"), &b, true);
        let msg = parse(&b).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("unknown type id {id}")) && msg.contains("norm.weight"),
            "{msg}"
        );
    }
    let dims: Vec<usize> = fields
        .iter()
        .filter(|f| f.2 == Field::Dim)
        .map(|f| f.0)
        .collect();
    let mut b = good.clone();
    patch(&mut b, dims[0], 8, 0);
    tally.check("zero dim", &b, true);
    assert!(parse(&b)
        .unwrap_err()
        .to_string()
        .contains("dimension 0 is 0"));

    // 6. Magic and version.
    for (label, at, width, v, expect) in [
        (
            "magic",
            0,
            4,
            u32::from_le_bytes(*b"GGUG") as u64,
            "not a GGUF file",
        ),
        ("version 1", 4, 4, 1, "version 1 is not supported"),
        ("version 4", 4, 4, 4, "version 4 is not supported"),
        ("big-endian", 4, 4, 0x0300_0000, "big-endian"),
    ] {
        let mut b = good.clone();
        patch(&mut b, at, width, v);
        tally.check(label, &b, true);
        let msg = parse(&b).unwrap_err().to_string();
        assert!(msg.contains(expect), "{label}: {msg}");
    }

    // 7. Metadata-level damage: unknown value type, bad alignment, deep nesting.
    let vt = fields.iter().find(|f| f.2 == Field::ValueType).unwrap().0;
    let mut b = good.clone();
    patch(&mut b, vt, 4, 13);
    tally.check("value type 13", &b, true);
    assert!(parse(&b)
        .unwrap_err()
        .to_string()
        .contains("unknown value type 13"));

    eprintln!(
        "{} malformed cases, {} rejected, none panicked",
        tally.cases, tally.errors
    );
    assert!(tally.errors > tally.cases / 2);
}

#[test]
fn deep_nesting_and_lying_counts_are_bounded() {
    // An array of arrays nested far deeper than any model needs: refused, not recursed.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes());
    for _ in 0..10_000 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    let msg = parse(&b).unwrap_err().to_string();
    assert!(msg.contains("nested deeper"), "{msg}");

    // A string array claiming u64::MAX / 8 elements in a tiny file.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((u64::MAX / 8).to_le_bytes());
    let (r, peak) = parse_counted(&b);
    assert!(r.unwrap_err().to_string().contains("array length"));
    assert!(peak < budget(b.len()));
}
