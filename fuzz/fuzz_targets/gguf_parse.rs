//! Any bytes through the GGUF reader: it must return, never panic, hang or over-allocate
//! (run with `-rss_limit_mb` and `-malloc_limit_mb`, see fuzz/README.md). When a file
//! parses, every tensor's data range must slice cleanly and metadata must survive a
//! write-read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe_gguf::{parse, GgufWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = parse(data) else { return };
    for t in &dir.tensors {
        let start = (dir.data_offset + t.offset) as usize;
        let _ = &data[start..start + t.n_bytes() as usize];
    }
    let again = GgufWriter::new(dir.metadata.clone()).to_bytes().expect("metadata re-encodes");
    let back = parse(&again).expect("re-encoded metadata parses");
    assert_eq!(back.metadata.len(), dir.metadata.len());
});
