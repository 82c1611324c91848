//! The CPU backend: `loupe-quant`'s kernels for the matmuls ([`Matmul`]), and attention
//! over the cache read back as f32 ([`super::attention`]). All buffers are allocated once,
//! in [`CpuBackend::new`]; the token path allocates nothing.

use anyhow::Result;
use rayon::prelude::*;

use super::attention::{cache_and_attend, AttentionScratch};
use super::backend::{AttentionInput, Backend};
use super::config::Config;
use super::kv_cache::KvCache;
use super::matmul::Matmul;
use super::weights::Matrix;

pub struct CpuBackend {
    mm: Matmul,
    att: AttentionScratch,
}

impl CpuBackend {
    /// Buffers for batches of up to `max_batch` tokens in a context of `n_ctx`, over a pool
    /// of `n_threads`.
    pub fn new(c: &Config, n_ctx: usize, max_batch: usize, n_threads: usize) -> CpuBackend {
        let (widest_in, widest_out) = widths(c);
        CpuBackend {
            mm: Matmul::new(max_batch, widest_in, widest_out, c.vocab_size),
            att: AttentionScratch::new(c, n_ctx, n_threads),
        }
    }
}

impl CpuBackend {
    /// Bytes [`CpuBackend::new`] allocates with these arguments; `None` past 64 bits.
    pub fn bytes(c: &Config, n_ctx: usize, max_batch: usize, n_threads: usize) -> Option<u64> {
        let (widest_in, widest_out) = widths(c);
        Matmul::bytes(max_batch, widest_in, widest_out, c.vocab_size)?
            .checked_add(AttentionScratch::bytes(c, n_ctx, n_threads)?)
    }
}

/// The widest input and output rows of the layers' matmuls.
fn widths(c: &Config) -> (usize, usize) {
    let widest_in = c
        .dim
        .max(c.hidden_dim)
        .max(c.q_dim())
        .max(c.n_head * c.head_dim_v);
    let widest_out = c.dim.max(c.hidden_dim).max(c.q_dim());
    (widest_in, widest_out)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn matmul(&mut self, w: Matrix<'_>, x: &[f32], b: usize, out: &mut [f32]) -> Result<()> {
        self.mm.run(w, x, b, out)
    }

    fn qkv(
        &mut self,
        [wq, wk, wv]: [Matrix<'_>; 3],
        x: &[f32],
        b: usize,
        [q, k, v]: [&mut [f32]; 3],
    ) -> Result<()> {
        if b == 1 {
            // One parallel region for the three, where three made the threads meet thrice.
            self.mm.token_qkv([wq, wk, wv], x, [q, k, v])
        } else {
            self.mm.run_shared(x, b, [(wq, q), (wk, k), (wv, v)])
        }
    }

    fn gated(
        &mut self,
        [gate, up]: [Matrix<'_>; 2],
        x: &[f32],
        b: usize,
        act: fn(f32) -> f32,
        out: &mut [f32],
        up_out: &mut [f32],
    ) -> Result<()> {
        if b == 1 {
            return self.mm.token_gated([gate, up], x, out, up_out, act);
        }
        self.mm
            .run_shared(x, b, [(gate, &mut *out), (up, &mut *up_out)])?;
        let n = b * gate.rows;
        out[..n]
            .par_iter_mut()
            .zip(&up_out[..n])
            .for_each(|(g, &u)| *g = act(*g) * u);
        Ok(())
    }

    fn attention(
        &mut self,
        a: AttentionInput<'_>,
        cache: &mut KvCache,
        out: &mut [f32],
    ) -> Result<()> {
        let (c, l) = (a.config, a.layer);
        cache_and_attend(c, l, cache, &mut self.att, (a.q, a.k, a.v), a.pos, a.n, out);
        Ok(())
    }
}
