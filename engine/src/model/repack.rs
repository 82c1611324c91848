//! Weights repacked for the AVX-512 kernels ([`PackedRows`]), built on a background
//! thread after load. Until the whole set is ready every matmul reads the map's rows
//! through the row kernels; after, the packed copy. Both give the same bits (the kernels'
//! tests), so switching in the middle of a generation changes speed, never a result.
//! Repacking costs a pass over the weights and fresh memory for the copy (seconds on an
//! 8B model where the machine must first back that memory), so it stays off the path to
//! the first token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use loupe_quant::packed::{self, PackedArena, PackedRows};
use loupe_quant::GgmlType;

use loupe_gguf::GgufFile;

/// Whether `LOUPE_NO_REPACK` turns repacking off (set to anything but empty or `0`).
pub fn disabled_by_env() -> bool {
    std::env::var("LOUPE_NO_REPACK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The repacked matrices of one model, published all at once.
#[derive(Debug, Default)]
pub struct PackTable {
    ready: OnceLock<Vec<PackedRows>>,
    /// Set when the model is dropped: an unfinished repack stops.
    cancel: AtomicBool,
    /// Why the repack gave up, if it did (the map's rows keep serving).
    failed: OnceLock<String>,
}

/// Where one tensor's packed rows will be.
#[derive(Clone, Debug)]
pub struct PackSlot {
    table: Arc<PackTable>,
    index: usize,
}

impl PackSlot {
    /// The packed rows, once the background repack has published them.
    pub fn get(&self) -> Option<&PackedRows> {
        self.table.ready.get().map(|v| &v[self.index])
    }
}

/// One matrix to repack: its index in the file's tensor directory, type and shape.
pub struct Job {
    pub tensor: usize,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

/// The background repack of a model.
#[derive(Debug)]
pub struct Repack {
    table: Arc<PackTable>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Bytes of the matrices it repacks, as they lie in the file.
    bytes: u64,
}

impl Repack {
    /// Start repacking `jobs` on a thread of its own; slot `i` of the returned list is
    /// job `i`'s.
    pub fn start(file: Arc<GgufFile>, jobs: Vec<Job>) -> Result<(Repack, Vec<PackSlot>)> {
        let table = Arc::new(PackTable::default());
        let slots = (0..jobs.len())
            .map(|index| PackSlot {
                table: table.clone(),
                index,
            })
            .collect();
        let bytes = jobs
            .iter()
            .filter_map(|j| Some(j.ty.row_bytes(j.cols as u64)? * j.rows as u64))
            .sum();
        let t = table.clone();
        let thread = std::thread::Builder::new()
            .name("loupe-repack".into())
            .spawn(move || {
                if let Err(e) = run(&file, &jobs, &t) {
                    let _ = t.failed.set(format!("{e:#}"));
                }
            })
            .context("cannot start the repacking thread")?;
        let repack = Repack {
            table,
            thread: Mutex::new(Some(thread)),
            bytes,
        };
        Ok((repack, slots))
    }

    /// Block until the repack has finished (or given up): for benchmarks, which time the
    /// model as it runs once loaded.
    pub fn wait(&self) {
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Why the repack gave up, if it did: the row kernels then keep running on the map's
    /// rows (slower, the same results).
    pub fn failure(&self) -> Option<&str> {
        self.table.failed.get().map(String::as_str)
    }

    /// Bytes of the matrices repacked (in the file's layout).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the packed matrices are in use.
    pub fn is_ready(&self) -> bool {
        self.table.ready.get().is_some()
    }
}

impl Drop for Repack {
    fn drop(&mut self) {
        self.table.cancel.store(true, Ordering::Relaxed);
        self.wait();
    }
}

/// Bytes of a tensor repacked between releases of their pages of the map (whole tiles of
/// rows, at least one): what may be resident twice. Each release costs a TLB flush, so
/// not too few (1024-row bands made an 8B repack 2 s slower).
const BAND_BYTES: usize = 64 << 20;

/// Pack every job into one arena, publish it, then hand the map's pages of those tensors
/// back (the packed copy replaces them; a matmul still reading the map faults the same
/// bytes back in from the page cache). Releasing is best effort and never changes bytes.
fn run(file: &GgufFile, jobs: &[Job], table: &PackTable) -> Result<()> {
    let shapes: Vec<_> = jobs.iter().map(|j| (j.ty, j.rows, j.cols)).collect();
    let mut arena = PackedArena::new(&shapes)?;
    for (job, slot) in jobs.iter().zip(arena.slots_mut()) {
        if table.cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let t = &file.tensors()[job.tensor];
        let data = file.tensor_data(t);
        // A band of rows at a time, each band's map pages released once packed: a large
        // matrix (an 8B model's output projection, 0.4 GB) is never resident twice whole.
        let row_bytes = data.len() / job.rows.max(1);
        let tile = packed::PACKED_ROWS;
        let band = (BAND_BYTES / (tile * row_bytes).max(1)).max(1) * tile;
        let band_bytes = packed::packed_bytes(job.ty, band, job.cols);
        for (i, dst) in slot.chunks_mut(band_bytes.max(1)).enumerate() {
            let rows = i * band..((i + 1) * band).min(job.rows);
            let src = &data[rows.start * row_bytes..rows.end * row_bytes];
            packed::fill(job.ty, src, rows.len(), job.cols, dst)
                .with_context(|| format!("repacking tensor {} rows {rows:?}", t.name))?;
            // Not needed until a matmul reads it again: while nothing runs the model (a
            // benchmark waiting, a chat waiting for its user) the copy replaces the rows.
            file.release(src);
        }
    }
    let arena = Arc::new(arena);
    let rows = (0..jobs.len()).map(|i| arena.rows(i)).collect();
    let _ = table.ready.set(rows);
    for job in jobs {
        file.release(file.tensor_data(&file.tensors()[job.tensor]));
    }
    Ok(())
}
