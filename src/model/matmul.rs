//! Matrix times a batch of activation rows, the way ggml does it on a CPU: each activation
//! row is quantized once to the weight format's partner (Q8_0, Q8_K, …), then every weight
//! row is dotted with it in integer arithmetic by `loupe-quant`'s kernels. Weight rows are
//! split across the thread pool; each weight row is reused for all activation rows while
//! it is in cache.

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::weights::Tensor;
use crate::gguf::GgufFile;

pub struct Matmul {
    qact: Vec<u8>, // (B, partner bytes of the widest input row)
    /// What `qact` holds: (partner type, row length, rows), for reuse by
    /// [`Matmul::run_same_input`].
    loaded: Option<(loupe_quant::GgmlType, usize, usize)>,
    tmp: Vec<f32>, // (weight rows, activation rows of a group): results before transposing
}

impl Matmul {
    /// Buffers for up to `max_batch` rows of at most `max_cols` inputs, into matrices of
    /// at most `max_rows` rows, plus the output projection of `vocab` rows.
    pub fn new(max_batch: usize, max_cols: usize, max_rows: usize, vocab: usize) -> Matmul {
        Matmul {
            // f32 is the widest partner format: 4 bytes per element.
            qact: vec![0; max_batch * max_cols * 4],
            loaded: None,
            tmp: vec![0.0; (max_rows * max_batch).max(vocab)],
        }
    }

    /// out (b, w.rows) = x (b, w.cols) · wᵀ.
    pub fn run(
        &mut self,
        file: &GgufFile,
        w: &Tensor,
        x: &[f32],
        b: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.loaded = None;
        self.run_same_input(file, w, x, b, out)
    }

    /// Like [`Matmul::run`] for a matrix fed the same `x` as the previous call (Q, K and V;
    /// gate and up): the activation rows are quantized once and reused while the partner
    /// format is the same.
    pub fn run_same_input(
        &mut self,
        file: &GgufFile,
        w: &Tensor,
        x: &[f32],
        b: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (cols, rows) = (w.cols, w.rows);
        let partner = loupe_quant::vec_dot_type(w.ty)
            .with_context(|| format!("no matmul kernel for {} weights", w.ty))?;
        let act_bytes = partner
            .row_bytes(cols as u64)
            .context("activation row size")? as usize;
        if self.loaded != Some((partner, cols, b)) {
            let (x, qact) = (&x[..b * cols], &mut self.qact[..b * act_bytes]);
            if b == 1 {
                loupe_quant::quantize_activation(partner, x, qact)?;
            } else {
                x.par_chunks_exact(cols)
                    .zip(qact.par_chunks_exact_mut(act_bytes))
                    .try_for_each(|(xr, qr)| loupe_quant::quantize_activation(partner, xr, qr))?;
            }
            self.loaded = Some((partner, cols, b));
        }
        let data = w.data(file);
        // Read once: the background repack may publish between two reads.
        let packed = w.packed();
        let qact = &self.qact[..b * act_bytes];
        // Activation rows go through in groups small enough for `tmp` (the output
        // projection of a long batch is vocab × batch).
        let group = (self.tmp.len() / rows).clamp(1, b);
        let threads = rayon::current_num_threads();
        // One token: small chunks balance the threads. A batch: one chunk per thread, a
        // whole number of the batch kernels' tiles, since each chunk prepares the
        // activation rows again.
        // Packed weights: every chunk starts on a packed tile.
        let chunk_rows = if b == 1 {
            let n = rows.div_ceil(threads * 4).max(1);
            if packed.is_some() {
                n.next_multiple_of(loupe_quant::packed::PACKED_ROWS)
            } else {
                n
            }
        } else {
            rows.div_ceil(threads)
                .next_multiple_of(loupe_quant::BATCH_TILE_ROWS)
        };
        for a0 in (0..b).step_by(group) {
            let g = group.min(b - a0);
            let act = &qact[a0 * act_bytes..(a0 + g) * act_bytes];
            // Each chunk of weight rows r0..r1 fills its own tile, (g, r1 - r0).
            let dst: &mut [f32] = if b == 1 {
                &mut out[..rows]
            } else {
                &mut self.tmp[..rows * g]
            };
            dst.par_chunks_mut(chunk_rows * g)
                .enumerate()
                .try_for_each(|(ci, tile)| {
                    let r0 = ci * chunk_rows;
                    let r1 = r0 + tile.len() / g;
                    match packed {
                        Some(p) => loupe_quant::kernels().matmul_packed(p, act, g, r0..r1, tile),
                        None => loupe_quant::matmul(w.ty, data, rows, cols, act, g, r0..r1, tile),
                    }
                })?;
            if b > 1 {
                // Each output row gathers its part from every chunk's tile, rows in
                // parallel (a serial copy here was 5% of a prompt on two threads).
                let tmp = &self.tmp[..rows * g];
                out[a0 * rows..(a0 + g) * rows]
                    .par_chunks_exact_mut(rows)
                    .enumerate()
                    .for_each(|(a, orow)| {
                        for (ci, tile) in tmp.chunks(chunk_rows * g).enumerate() {
                            let n = tile.len() / g;
                            orow[ci * chunk_rows..][..n].copy_from_slice(&tile[a * n..][..n]);
                        }
                    });
            }
        }
        Ok(())
    }
}
