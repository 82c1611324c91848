//! The key/value cache: every layer's keys and values for every position so far,
//! allocated once for the context length and kept across calls (and, later, turns).

use anyhow::{bail, Result};

use super::memory::product;
use super::ops::{f16_bits_to_f32, f32_to_f16_bits};

/// Element type of the cache. f16 halves its size and is what llama.cpp uses by default,
/// so the rounding of keys and values matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
    pub fn parse(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            other => bail!("KV cache type {other:?} is not supported (f16 or f32)"),
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

enum Store {
    F16(Vec<u16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(ty: KvType, n: usize) -> Store {
        match ty {
            KvType::F16 => Store::F16(vec![0; n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Store::F16(s) => {
                for (d, &v) in s[at..at + x.len()].iter_mut().zip(x) {
                    *d = f32_to_f16_bits(v);
                }
            }
            Store::F32(s) => s[at..at + x.len()].copy_from_slice(x),
        }
    }

    fn read(&self, at: usize, out: &mut [f32]) {
        match self {
            Store::F16(s) => {
                let n = out.len();
                for (o, &h) in out.iter_mut().zip(&s[at..at + n]) {
                    *o = f16_bits_to_f32(h);
                }
            }
            Store::F32(s) => out.copy_from_slice(&s[at..at + out.len()]),
        }
    }
}

pub struct KvCache {
    pub ty: KvType,
    pub n_ctx: usize,
    kv_dim: usize,
    kv_dim_v: usize,
    k: Store, // (n_layer, n_ctx, kv_dim)
    v: Store, // (n_layer, n_ctx, kv_dim_v)
}

impl KvCache {
    pub fn new(
        ty: KvType,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        kv_dim_v: usize,
    ) -> KvCache {
        KvCache {
            ty,
            n_ctx,
            kv_dim,
            kv_dim_v,
            k: Store::new(ty, n_layer * n_ctx * kv_dim),
            v: Store::new(ty, n_layer * n_ctx * kv_dim_v),
        }
    }

    /// Bytes the cache takes: what `--ctx` costs; `None` past 64 bits.
    pub fn bytes(
        ty: KvType,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        kv_dim_v: usize,
    ) -> Option<u64> {
        product(&[n_layer, n_ctx, kv_dim.checked_add(kv_dim_v)?, ty.bytes()])
    }

    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let base = layer * self.n_ctx + pos;
        self.k.write(base * self.kv_dim, k);
        self.v.write(base * self.kv_dim_v, v);
    }

    /// Keys of positions `0..n` of one layer, as f32, into `out` (n, kv_dim).
    pub fn read_keys(&self, layer: usize, n: usize, out: &mut [f32]) {
        self.k.read(
            layer * self.n_ctx * self.kv_dim,
            &mut out[..n * self.kv_dim],
        );
    }

    /// Values of positions `0..n` of one layer, as f32, into `out` (n, kv_dim_v).
    pub fn read_values(&self, layer: usize, n: usize, out: &mut [f32]) {
        self.v.read(
            layer * self.n_ctx * self.kv_dim_v,
            &mut out[..n * self.kv_dim_v],
        );
    }
}

/// Saving and restoring positions `0..n` (chat sessions resume without evaluating again).
impl KvCache {
    /// Bytes `to_bytes(n)` produces: every layer's keys then values of `n` positions.
    pub fn saved_len(&self, n: usize) -> usize {
        self.n_layer() * n * (self.kv_dim + self.kv_dim_v) * self.ty.bytes()
    }

    fn n_layer(&self) -> usize {
        let len = match &self.k {
            Store::F16(s) => s.len(),
            Store::F32(s) => s.len(),
        };
        len / (self.n_ctx * self.kv_dim).max(1)
    }

    /// Positions `0..n` as little-endian bytes: for each layer its keys (n, kv_dim), then
    /// its values (n, kv_dim_v), in the cache's own element type (no rounding).
    pub fn to_bytes(&self, n: usize) -> Vec<u8> {
        assert!(
            n <= self.n_ctx,
            "{n} positions in a cache of {}",
            self.n_ctx
        );
        let mut out = Vec::with_capacity(self.saved_len(n));
        for layer in 0..self.n_layer() {
            for (store, dim) in [(&self.k, self.kv_dim), (&self.v, self.kv_dim_v)] {
                let range = layer * self.n_ctx * dim..(layer * self.n_ctx + n) * dim;
                match store {
                    Store::F16(s) => s[range].iter().for_each(|h| out.extend(h.to_le_bytes())),
                    Store::F32(s) => s[range].iter().for_each(|x| out.extend(x.to_le_bytes())),
                }
            }
        }
        out
    }

    /// The inverse of `to_bytes(n)`: positions `0..n` from `bytes`, which must have been
    /// written by a cache of the same type and shape.
    pub fn load_bytes(&mut self, n: usize, bytes: &[u8]) -> Result<()> {
        if n > self.n_ctx {
            bail!(
                "the saved cache holds {n} positions, more than --ctx {}",
                self.n_ctx
            );
        }
        if bytes.len() != self.saved_len(n) {
            bail!(
                "the saved cache is {} bytes, {} expected for {n} positions",
                bytes.len(),
                self.saved_len(n)
            );
        }
        let mut at = 0;
        let (n_ctx, kv_dim, kv_dim_v) = (self.n_ctx, self.kv_dim, self.kv_dim_v);
        for layer in 0..self.n_layer() {
            for (store, dim) in [(&mut self.k, kv_dim), (&mut self.v, kv_dim_v)] {
                let range = layer * n_ctx * dim..(layer * n_ctx + n) * dim;
                match store {
                    Store::F16(s) => {
                        for d in &mut s[range] {
                            *d = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
                            at += 2;
                        }
                    }
                    Store::F32(s) => {
                        for d in &mut s[range] {
                            let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
                            *d = f32::from_le_bytes(b);
                            at += 4;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
