//! Matrix times a batch of activation rows, the way ggml does it on a CPU: each activation
//! row is quantized once to the weight format's partner (Q8_0, Q8_K, …), then every weight
//! row is dotted with it in integer arithmetic by `loupe-quant`'s kernels. Weight rows are
//! split across the thread pool; each weight row is reused for all activation rows while
//! it is in cache.
//!
//! Matrices fed the same input (Q, K and V; gate and up) go in one call
//! ([`Matmul::run_shared`]), which quantizes the input once per partner format: the reuse
//! is a property of the call, not of what an earlier call left behind.

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::memory::product;
use super::ops::all_finite;
use super::weights::Matrix;

pub struct Matmul {
    qact: Vec<u8>, // (B, partner bytes of the widest input row)
    tmp: Vec<f32>, // (weight rows, activation rows of a group): results before transposing
    /// One token's input quantized for up to three matrices ([`Matmul::token_qkv`]).
    token: Vec<u8>,
}

impl Matmul {
    /// Buffers for up to `max_batch` rows of at most `max_cols` inputs, into matrices of
    /// at most `max_rows` rows, plus the output projection of `vocab` rows.
    pub fn new(max_batch: usize, max_cols: usize, max_rows: usize, vocab: usize) -> Matmul {
        Matmul {
            // f32 is the widest partner format: 4 bytes per element.
            qact: vec![0; max_batch * max_cols * 4],
            tmp: vec![0.0; (max_rows * max_batch).max(vocab)],
            token: vec![0; 3 * max_cols * 4],
        }
    }

    /// Bytes [`Matmul::new`] allocates with these arguments; `None` past 64 bits.
    pub fn bytes(max_batch: usize, max_cols: usize, max_rows: usize, vocab: usize) -> Option<u64> {
        let qact = product(&[max_batch, max_cols, 4])?;
        let tmp = product(&[max_rows, max_batch])?
            .max(vocab as u64)
            .checked_mul(4)?;
        let token = product(&[3, max_cols, 4])?;
        qact.checked_add(tmp)?.checked_add(token)
    }

    /// out (b, w.rows) = x (b, w.cols) · wᵀ.
    pub fn run(&mut self, w: Matrix<'_>, x: &[f32], b: usize, out: &mut [f32]) -> Result<()> {
        self.run_shared(x, b, [(w, out)])
    }

    /// Several matrices fed the same `x` (b rows): Q, K and V; gate and up. The rows are
    /// quantized once per partner format the matrices need, then each matrix is
    /// multiplied as [`Matmul::run`] would (the same bits).
    pub fn run_shared<const N: usize>(
        &mut self,
        x: &[f32],
        b: usize,
        jobs: [(Matrix<'_>, &mut [f32]); N],
    ) -> Result<()> {
        let mut jobs = jobs.map(Some);
        for i in 0..N {
            let Some((w, _)) = &jobs[i] else { continue };
            let (ty, act_bytes) = partner(w)?;
            self.quantize_rows(ty, act_bytes, x, b, w.cols)?;
            // Every job left that dots with this partner format, in order.
            for job in jobs[i..].iter_mut() {
                if let Some((wj, _)) = job {
                    if partner(wj)?.0 == ty {
                        let (wj, out) = job.take().context("job")?;
                        self.multiply(wj, act_bytes, b, &mut *out)?;
                        keep_non_finite(x, b, wj.cols, out, wj.rows);
                    }
                }
            }
        }
        Ok(())
    }

    /// `x` (b rows of `cols`) quantized to `partner` into `qact`.
    fn quantize_rows(
        &mut self,
        partner: loupe_quant::GgmlType,
        act_bytes: usize,
        x: &[f32],
        b: usize,
        cols: usize,
    ) -> Result<()> {
        anyhow::ensure!(
            x.len() >= b * cols,
            "{b} input rows of {cols} need {} values, got {}",
            b * cols,
            x.len()
        );
        let (x, qact) = (&x[..b * cols], &mut self.qact[..b * act_bytes]);
        if b == 1 {
            loupe_quant::quantize_activation(partner, x, qact)?;
        } else {
            x.par_chunks_exact(cols)
                .zip(qact.par_chunks_exact_mut(act_bytes))
                .try_for_each(|(xr, qr)| loupe_quant::quantize_activation(partner, xr, qr))?;
        }
        Ok(())
    }

    /// out (b, w.rows) = the b quantized rows in `qact` · wᵀ.
    fn multiply(
        &mut self,
        m: Matrix<'_>,
        act_bytes: usize,
        b: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let rows = m.rows;
        let qact = &self.qact[..b * act_bytes];
        // Activation rows go through in groups small enough for `tmp` (the output
        // projection of a long batch is vocab × batch).
        let group = (self.tmp.len() / rows).clamp(1, b);
        let threads = rayon::current_num_threads();
        // One token: small chunks balance the threads. A batch: one chunk per thread, a
        // whole number of the batch kernels' tiles, since each chunk prepares the
        // activation rows again.
        let chunk_rows = if b == 1 {
            m.token_chunk(threads)
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
                    m.dot(act, g, r0..r0 + tile.len() / g, tile)
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

impl Matmul {
    /// One token through Q, K and V (fed the same `x`) in one parallel region, where
    /// three regions made the threads meet three times. Each output gets `ws[i].rows`
    /// values; the same bits as three [`Matmul::run`]s.
    pub fn token_qkv(
        &mut self,
        ws: [Matrix<'_>; 3],
        x: &[f32],
        outs: [&mut [f32]; 3],
    ) -> Result<()> {
        let acts = self.quantize_token(x, ws)?;
        let m = ws;
        let threads = rayon::current_num_threads();
        let c = m.each_ref().map(|m| m.token_chunk(threads));
        let [o0, o1, o2] = outs;
        o0[..ws[0].rows]
            .par_chunks_mut(c[0])
            .enumerate()
            .map(|(i, t)| (0, i * c[0], t))
            .chain(
                o1[..ws[1].rows]
                    .par_chunks_mut(c[1])
                    .enumerate()
                    .map(|(i, t)| (1, i * c[1], t)),
            )
            .chain(
                o2[..ws[2].rows]
                    .par_chunks_mut(c[2])
                    .enumerate()
                    .map(|(i, t)| (2, i * c[2], t)),
            )
            .try_for_each(|(j, r0, t)| m[j].dot(acts[j], 1, r0..r0 + t.len(), t))?;
        for (w, o) in ws.iter().zip([o0, o1, o2]) {
            keep_non_finite(x, 1, w.cols, o, w.rows);
        }
        Ok(())
    }

    /// One token through the gate and up projections (fed the same `x`, the same rows)
    /// and the gated activation, in one parallel region: each task computes rows
    /// `r0..r1` of both and leaves `act(gate) * up` in `out` (`up_out` holds the up rows).
    /// The same bits as two [`Matmul::run`]s and the activation after.
    pub fn token_gated(
        &mut self,
        [gate, up]: [Matrix<'_>; 2],
        x: &[f32],
        out: &mut [f32],
        up_out: &mut [f32],
        act: fn(f32) -> f32,
    ) -> Result<()> {
        anyhow::ensure!(
            gate.rows == up.rows && gate.cols == up.cols,
            "gate ({} x {}) and up ({} x {}) projections differ in shape",
            gate.rows,
            gate.cols,
            up.rows,
            up.cols
        );
        let [ag, au] = self.quantize_token(x, [gate, up])?;
        let (mg, mu) = (gate, up);
        let threads = rayon::current_num_threads();
        let c = mg.token_chunk(threads).max(mu.token_chunk(threads));
        let rows = gate.rows;
        out[..rows]
            .par_chunks_mut(c)
            .zip(up_out[..rows].par_chunks_mut(c))
            .enumerate()
            .try_for_each(|(i, (g, u))| {
                let r = i * c..i * c + g.len();
                mg.dot(ag, 1, r.clone(), g)?;
                mu.dot(au, 1, r, u)?;
                for (g, &u) in g.iter_mut().zip(u.iter()) {
                    *g = act(*g) * u;
                }
                Ok::<_, loupe_quant::QuantError>(())
            })?;
        keep_non_finite(x, 1, gate.cols, out, rows);
        keep_non_finite(x, 1, up.cols, up_out, rows);
        Ok(())
    }

    /// `x` (one row) quantized to each matrix's partner format, once per format.
    fn quantize_token<const N: usize>(
        &mut self,
        x: &[f32],
        ws: [Matrix<'_>; N],
    ) -> Result<[&[u8]; N]> {
        let cols = ws[0].cols;
        anyhow::ensure!(
            ws.iter().all(|w| w.cols == cols) && x.len() >= cols,
            "matrices fed one input must have its width ({cols})"
        );
        let mut partners = [(loupe_quant::GgmlType::F32, 0); N];
        let mut spans = [(0, 0); N];
        let mut at = 0;
        for (i, w) in ws.iter().enumerate() {
            partners[i] = partner(w)?;
            let (ty, n) = partners[i];
            spans[i] = match (0..i).find(|&j| partners[j].0 == ty) {
                Some(j) => spans[j],
                None => {
                    let dst = &mut self.token[at..at + n];
                    loupe_quant::quantize_activation(ty, &x[..cols], dst)?;
                    at += n;
                    (at - n, at)
                }
            };
        }
        Ok(spans.map(|(a, b)| &self.token[a..b]))
    }
}

/// Make NaN the rows of `out` (`b` rows of `rows`) whose input row of `x` (`b` rows of
/// `cols`) holds a NaN or an infinity. The integer kernels quantize a NaN to some integer
/// and answer a number, so a NaN upstream (a weight, an epsilon, the cache) would vanish
/// into plausible logits, and a sampler would draw from them as if they were the model's;
/// NaN goes on to the logits instead, where generation and perplexity see it. One pass
/// over the input row, against the matmul's pass over every weight.
fn keep_non_finite(x: &[f32], b: usize, cols: usize, out: &mut [f32], rows: usize) {
    for (xr, or) in x[..b * cols]
        .chunks_exact(cols)
        .zip(out[..b * rows].chunks_exact_mut(rows))
    {
        if !all_finite(xr) {
            or.fill(f32::NAN);
        }
    }
}

/// The format `w`'s activation rows are quantized to, and the bytes of one such row.
fn partner(w: &Matrix<'_>) -> Result<(loupe_quant::GgmlType, usize)> {
    let partner = loupe_quant::vec_dot_type(w.ty)
        .with_context(|| format!("no matmul kernel for {} weights", w.ty))?;
    let bytes = partner
        .row_bytes(w.cols as u64)
        .context("activation row size")? as usize;
    Ok((partner, bytes))
}

impl Matrix<'_> {
    /// Rows `rows` times `g` activation rows `act` into `tile` (g, rows.len()).
    fn dot(
        &self,
        act: &[u8],
        g: usize,
        rows: std::ops::Range<usize>,
        tile: &mut [f32],
    ) -> Result<(), loupe_quant::QuantError> {
        match self.packed {
            Some(p) => loupe_quant::kernels().matmul_packed(p, act, g, rows, tile),
            None => {
                loupe_quant::matmul(self.ty, self.data, self.rows, self.cols, act, g, rows, tile)
            }
        }
    }

    /// Rows per chunk of one token's work: four chunks per thread so the threads stay
    /// balanced; packed, whole tiles.
    fn token_chunk(&self, threads: usize) -> usize {
        let n = self.rows.div_ceil(threads * 4).max(1);
        if self.packed.is_some() {
            n.next_multiple_of(loupe_quant::packed::PACKED_ROWS)
        } else {
            n
        }
    }
}
