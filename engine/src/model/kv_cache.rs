//! The key/value cache: every layer's keys and values for every position so far,
//! allocated once for the context length and kept across calls (and turns).
//!
//! Layout: per layer, per KV head, `n_ctx` rows of `head_dim` elements. A head's keys are
//! contiguous, so attention reads them in place as a small matrix (one row per position)
//! in the cache's own element type: f16 (llama.cpp's default), f32, or the Q8_0 and Q4_0
//! block formats (a block of 32 never straddles two heads).

use std::fmt;
use std::ops::Range;

use anyhow::{bail, Result};
use loupe_quant::{GgmlType, F16};
use rayon::prelude::*;

use super::config::Config;
use super::hadamard::KvRotation;
use super::memory::product;

/// Element type of the keys or the values in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub const ALL: [KvType; 4] = [KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0];

    pub fn parse(s: &str) -> Result<KvType> {
        let t = s.to_ascii_lowercase();
        match KvType::ALL.into_iter().find(|k| k.name() == t) {
            Some(k) => Ok(k),
            None => bail!("KV cache type {s:?} is not supported (f16, f32, q8_0 or q4_0)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::F32 => GgmlType::F32,
            KvType::Q8_0 => GgmlType::Q8_0,
            KvType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// Bytes of a row of `n` elements; `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let ty = self.ggml();
        let block = ty.block_elems();
        n.is_multiple_of(block)
            .then(|| n / block * ty.block_bytes())
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The element types of the keys and of the values (llama.cpp's `-ctk`/`-ctv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl KvTypes {
    pub const F16: KvTypes = KvTypes::same(KvType::F16);

    pub const fn same(t: KvType) -> KvTypes {
        KvTypes { k: t, v: t }
    }

    /// Bytes one position takes in the cache, all layers, keys and values.
    pub fn bytes_per_token(self, c: &Config) -> Option<u64> {
        let k = self.k.row_bytes(c.head_dim)?.checked_mul(c.n_kv_head)?;
        let v = self.v.row_bytes(c.head_dim_v)?.checked_mul(c.n_kv_head)?;
        product(&[c.n_layer, k.checked_add(v)?])
    }

    /// Why these types cannot hold this model's heads, if they cannot.
    pub fn check(self, c: &Config) -> Result<()> {
        for (what, t, d) in [
            ("keys", self.k, c.head_dim),
            ("values", self.v, c.head_dim_v),
        ] {
            if t.row_bytes(d).is_none() {
                bail!(
                    "a {t} KV cache stores {what} in blocks of {}, and this model's heads \
                     have {d} {what} elements; use f16 or f32",
                    t.ggml().block_elems()
                );
            }
        }
        Ok(())
    }
}

/// "f16" when keys and values share a type, "k q8_0, v f16" otherwise.
impl fmt::Display for KvTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.k == self.v {
            write!(f, "{}", self.k)
        } else {
            write!(f, "k {}, v {}", self.k, self.v)
        }
    }
}

/// One head's rows, in the cache's element type: what attention reads in place.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F16(&'a [F16]),
    F32(&'a [f32]),
    /// Q8_0 or Q4_0 blocks, `row_bytes` per row.
    Blocks(GgmlType, &'a [u8]),
}

impl Rows<'_> {
    /// The rows widened to f32 (`out` holds as many elements as the rows).
    fn decode(self, out: &mut [f32]) {
        match self {
            Rows::F16(s) => loupe_quant::attn::f16_to_f32(s, out),
            Rows::F32(s) => out.copy_from_slice(s),
            Rows::Blocks(t, s) => {
                loupe_quant::dequantize_row(t, s, out).expect("whole rows of blocks")
            }
        }
    }
}

/// Keys or values of every layer.
enum Store {
    F16(Vec<F16>),
    F32(Vec<f32>),
    Blocks(GgmlType, Vec<u8>),
}

/// Keys or values: the storage and its shape.
struct Part {
    store: Store,
    ty: KvType,
    n_head: usize,
    head_dim: usize,
    /// Bytes (blocks) or elements (f16, f32) of one row.
    row: usize,
    n_ctx: usize,
}

impl Part {
    fn new(ty: KvType, n_layer: usize, n_ctx: usize, n_head: usize, head_dim: usize) -> Part {
        let n = n_layer * n_head * n_ctx * head_dim;
        let (store, row) = match ty {
            KvType::F16 => (Store::F16(vec![F16::ZERO; n]), head_dim),
            KvType::F32 => (Store::F32(vec![0.0; n]), head_dim),
            KvType::Q8_0 | KvType::Q4_0 => {
                let row = ty.row_bytes(head_dim).expect("checked by KvTypes::check");
                let bytes = n_layer * n_head * n_ctx * row;
                (Store::Blocks(ty.ggml(), vec![0; bytes]), row)
            }
        };
        Part {
            store,
            ty,
            n_head,
            head_dim,
            row,
            n_ctx,
        }
    }

    /// Index of the first unit (element or byte) of `(layer, head, pos)`.
    fn at(&self, layer: usize, head: usize, pos: usize) -> usize {
        ((layer * self.n_head + head) * self.n_ctx + pos) * self.row
    }

    /// Rows `range` of one head of one layer.
    fn rows(&self, layer: usize, head: usize, range: Range<usize>) -> Rows<'_> {
        let (a, b) = (
            self.at(layer, head, range.start),
            self.at(layer, head, range.end),
        );
        match &self.store {
            Store::F16(s) => Rows::F16(&s[a..b]),
            Store::F32(s) => Rows::F32(&s[a..b]),
            Store::Blocks(t, s) => Rows::Blocks(*t, &s[a..b]),
        }
    }

    /// Store `x` (all heads of one position) at `pos` of `layer`.
    fn write(&mut self, layer: usize, pos: usize, x: &[f32]) {
        for (h, xh) in x.chunks_exact(self.head_dim).enumerate() {
            let a = self.at(layer, h, pos);
            let (ty, row) = (self.ty, self.row);
            self.store.as_mut().write(ty, a, row, xh);
        }
    }

    /// Row `pos` of `head` of `layer` as its bytes (little-endian elements, or the blocks)
    /// into the start of `out`.
    fn read_bytes(&self, layer: usize, head: usize, pos: usize, out: &mut [u8]) {
        match self.rows(layer, head, pos..pos + 1) {
            Rows::F16(r) => out
                .chunks_exact_mut(2)
                .zip(r)
                .for_each(|(o, x)| o.copy_from_slice(&x.0.to_le_bytes())),
            Rows::F32(r) => out
                .chunks_exact_mut(4)
                .zip(r)
                .for_each(|(o, x)| o.copy_from_slice(&x.to_le_bytes())),
            Rows::Blocks(_, r) => out[..r.len()].copy_from_slice(r),
        }
    }

    /// The inverse of [`Part::read_bytes`].
    fn write_bytes(&mut self, layer: usize, head: usize, pos: usize, src: &[u8]) {
        let (a, row) = (self.at(layer, head, pos), self.row);
        match &mut self.store {
            Store::F16(s) => s[a..a + row]
                .iter_mut()
                .zip(src.chunks_exact(2))
                .for_each(|(o, b)| *o = F16(u16::from_le_bytes([b[0], b[1]]))),
            Store::F32(s) => s[a..a + row]
                .iter_mut()
                .zip(src.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Store::Blocks(_, s) => s[a..a + row].copy_from_slice(&src[..row]),
        }
    }

    /// Row `pos` of `head` of `layer` as f32.
    #[cfg(test)]
    fn read(&self, layer: usize, head: usize, pos: usize, out: &mut [f32]) {
        self.rows(layer, head, pos..pos + 1).decode(out)
    }

    /// Units of one layer (all heads, all positions).
    fn layer_len(&self) -> usize {
        self.n_head * self.n_ctx * self.row
    }

    fn unit_bytes(&self) -> usize {
        match self.store {
            Store::F16(_) => 2,
            Store::F32(_) => 4,
            Store::Blocks(..) => 1,
        }
    }

    /// Move rows `from..from + n` of every head of every layer to `to..to + n`.
    fn move_rows(&mut self, from: usize, to: usize, n: usize) {
        let (row, n_ctx) = (self.row, self.n_ctx);
        let span = (from * row)..((from + n) * row);
        let dest = to * row;
        let chunk = n_ctx * row; // one head of one layer
        match &mut self.store {
            Store::F16(s) => s
                .chunks_exact_mut(chunk)
                .for_each(|h| h.copy_within(span.clone(), dest)),
            Store::F32(s) => s
                .chunks_exact_mut(chunk)
                .for_each(|h| h.copy_within(span.clone(), dest)),
            Store::Blocks(_, s) => s
                .chunks_exact_mut(chunk)
                .for_each(|h| h.copy_within(span.clone(), dest)),
        }
    }
}

pub struct KvCache {
    pub types: KvTypes,
    /// The turn heads take before they are stored (quantized caches, as llama.cpp).
    pub rotation: KvRotation,
    pub n_ctx: usize,
    n_layer: usize,
    k: Part,
    v: Part,
    /// Counts the changes made other than by storing new positions (a context shift, a
    /// loaded session): a device's copy of the cache is stale when this moved.
    edits: u64,
}

impl KvCache {
    /// A cache of `n_ctx` positions for model `c`; an error when the types cannot hold
    /// its heads (block formats need whole blocks per head).
    pub fn new(types: KvTypes, c: &Config, n_ctx: usize) -> Result<KvCache> {
        types.check(c)?;
        Ok(KvCache {
            types,
            rotation: KvRotation::for_cache(types, c),
            n_ctx,
            n_layer: c.n_layer,
            k: Part::new(types.k, c.n_layer, n_ctx, c.n_kv_head, c.head_dim),
            v: Part::new(types.v, c.n_layer, n_ctx, c.n_kv_head, c.head_dim_v),
            edits: 0,
        })
    }

    /// How many times the cache was changed other than by [`KvCache::store`] and
    /// [`KvCache::store_rows`]: positions moved, keys re-rotated, a session loaded.
    pub fn edits(&self) -> u64 {
        self.edits
    }

    /// Counts a change made through [`KvCache::store`] outside a forward pass that keeps
    /// a device's copy (made-up positions, a pass that ran its attention on the CPU), so
    /// that the copy is written again.
    pub fn mark_edited(&mut self) {
        self.edits += 1;
    }

    /// Positions `pos..pos + n` of `layer` as bytes, position by position: each head's
    /// row as the cache holds it (little-endian f16 or f32 elements, or the blocks) in
    /// `strides.0` bytes for keys and `strides.1` for values, the padding zero. The
    /// layout a device's copy of the cache keeps.
    pub fn read_rows(
        &self,
        layer: usize,
        (pos, n): (usize, usize),
        strides: (usize, usize),
        k: &mut Vec<u8>,
        v: &mut Vec<u8>,
    ) {
        for (part, stride, out) in [(&self.k, strides.0, k), (&self.v, strides.1, v)] {
            out.clear();
            out.resize(n * part.n_head * stride, 0);
            for (i, dst) in out.chunks_exact_mut(stride).enumerate() {
                let (t, h) = (i / part.n_head, i % part.n_head);
                part.read_bytes(layer, h, pos + t, dst);
            }
        }
    }

    /// The inverse of [`KvCache::read_rows`]: stores positions `pos..pos + n` of `layer`
    /// from a device's bytes (it computed and rounded them).
    pub fn store_rows(
        &mut self,
        layer: usize,
        (pos, n): (usize, usize),
        strides: (usize, usize),
        k: &[u8],
        v: &[u8],
    ) {
        for (part, stride, src) in [(&mut self.k, strides.0, k), (&mut self.v, strides.1, v)] {
            let heads = part.n_head;
            for (i, row) in src.chunks_exact(stride).take(n * heads).enumerate() {
                part.write_bytes(layer, i % heads, pos + i / heads, row);
            }
        }
    }

    /// Bytes the cache takes: what `--ctx` costs; `None` past 64 bits or when the types
    /// cannot hold the model's heads.
    pub fn bytes(types: KvTypes, c: &Config, n_ctx: usize) -> Option<u64> {
        types.bytes_per_token(c)?.checked_mul(n_ctx as u64)
    }

    /// Store one position's keys `k` (kv_dim) and values `v` (kv_dim_v) of `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.k.write(layer, pos, k);
        self.v.write(layer, pos, v);
    }

    /// Keys of positions `range` of one KV head of `layer`, in place.
    pub fn keys(&self, layer: usize, head: usize, range: Range<usize>) -> Rows<'_> {
        self.k.rows(layer, head, range)
    }

    /// Values of positions `range` of one KV head of `layer`, in place.
    pub fn values(&self, layer: usize, head: usize, range: Range<usize>) -> Rows<'_> {
        self.v.rows(layer, head, range)
    }

    /// Keys of positions `0..n` of `layer` as f32 into `out`, head by head: head `h`'s
    /// key `j` at `(h * n + j) * head_dim`.
    pub fn read_keys(&self, layer: usize, n: usize, out: &mut [f32]) {
        read_heads(&self.k, layer, n, out)
    }

    /// Values of positions `0..n` of `layer` as f32, laid out as [`KvCache::read_keys`].
    pub fn read_values(&self, layer: usize, n: usize, out: &mut [f32]) {
        read_heads(&self.v, layer, n, out)
    }
}

fn read_heads(p: &Part, layer: usize, n: usize, out: &mut [f32]) {
    let d = p.head_dim;
    for (h, head) in out[..p.n_head * n * d].chunks_exact_mut(n * d).enumerate() {
        p.rows(layer, h, 0..n).decode(head);
    }
}

/// Context shift: moving positions and re-rotating keys in place.
impl KvCache {
    /// Positions `from..from + n` of every layer move to `to..to + n` (keys and values as
    /// stored, no rounding); `to < from`, so the cache's front can be dropped.
    pub fn move_positions(&mut self, from: usize, to: usize, n: usize) {
        assert!(
            to <= from && from + n <= self.n_ctx,
            "move {n} positions from {from} to {to} in a cache of {}",
            self.n_ctx
        );
        if n > 0 && from != to {
            self.edits += 1;
            self.k.move_rows(from, to, n);
            self.v.move_rows(from, to, n);
        }
    }

    /// For every layer, KV head and position in `range`: the key row (head_dim values, as
    /// f32) handed to `f(layer, pos, row)`, which may change it, then stored back rounded
    /// to the cache type. Layers run in parallel.
    pub fn update_keys(
        &mut self,
        range: Range<usize>,
        f: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        self.edits += 1;
        let (d, n_head) = (self.k.head_dim, self.k.n_head);
        let (ty, n_ctx, row) = (self.k.ty, self.n_ctx, self.k.row);
        let layer_len = self.k.layer_len();
        let each = |layer: usize, layer_store: LayerMut<'_>| {
            let mut x = vec![0f32; d];
            let mut layer_store = layer_store;
            for h in 0..n_head {
                for pos in range.clone() {
                    let a = (h * n_ctx + pos) * row;
                    layer_store.read(ty, a, row, &mut x);
                    f(layer, pos, &mut x);
                    layer_store.write(ty, a, row, &x);
                }
            }
        };
        match &mut self.k.store {
            Store::F16(s) => s
                .par_chunks_exact_mut(layer_len)
                .enumerate()
                .for_each(|(l, s)| each(l, LayerMut::F16(s))),
            Store::F32(s) => s
                .par_chunks_exact_mut(layer_len)
                .enumerate()
                .for_each(|(l, s)| each(l, LayerMut::F32(s))),
            Store::Blocks(_, s) => s
                .par_chunks_exact_mut(layer_len)
                .enumerate()
                .for_each(|(l, s)| each(l, LayerMut::Blocks(s))),
        }
    }
}

impl Store {
    /// The whole store, writable, as [`LayerMut`] (offsets then count from its start).
    fn as_mut(&mut self) -> LayerMut<'_> {
        match self {
            Store::F16(s) => LayerMut::F16(s),
            Store::F32(s) => LayerMut::F32(s),
            Store::Blocks(_, s) => LayerMut::Blocks(s),
        }
    }
}

/// One layer's keys (or a whole store), writable. Rows are written with the quantizers
/// llama.cpp writes its cache with (ggml-cpu's `from_float`: the run-time quantizer for
/// Q8_0, the reference one for Q4_0).
enum LayerMut<'a> {
    F16(&'a mut [F16]),
    F32(&'a mut [f32]),
    Blocks(&'a mut [u8]),
}

impl LayerMut<'_> {
    fn read(&self, ty: KvType, a: usize, row: usize, out: &mut [f32]) {
        match self {
            LayerMut::F16(s) => Rows::F16(&s[a..a + row]),
            LayerMut::F32(s) => Rows::F32(&s[a..a + row]),
            LayerMut::Blocks(s) => Rows::Blocks(ty.ggml(), &s[a..a + row]),
        }
        .decode(out)
    }

    fn write(&mut self, ty: KvType, a: usize, row: usize, x: &[f32]) {
        match self {
            LayerMut::F16(s) => loupe_quant::attn::f32_to_f16(x, &mut s[a..a + row]),
            LayerMut::F32(s) => s[a..a + row].copy_from_slice(x),
            LayerMut::Blocks(s) => loupe_quant::quantize_kv_row(ty.ggml(), x, &mut s[a..a + row])
                .expect("a whole row of blocks"),
        }
    }
}

/// Saving and restoring positions `0..n` (chat sessions resume without evaluating again).
impl KvCache {
    /// Bytes `to_bytes(n)` produces: every layer's keys then values of `n` positions.
    pub fn saved_len(&self, n: usize) -> usize {
        let per_pos = (self.k.n_head * self.k.row * self.k.unit_bytes())
            + (self.v.n_head * self.v.row * self.v.unit_bytes());
        self.n_layer * n * per_pos
    }

    /// Positions `0..n` as little-endian bytes: for each layer its keys (n positions, each
    /// all heads' rows), then its values alike, in the cache's own element type (no
    /// rounding).
    pub fn to_bytes(&self, n: usize) -> Vec<u8> {
        assert!(
            n <= self.n_ctx,
            "{n} positions in a cache of {}",
            self.n_ctx
        );
        let mut out = Vec::with_capacity(self.saved_len(n));
        for layer in 0..self.n_layer {
            for part in [&self.k, &self.v] {
                for pos in 0..n {
                    for h in 0..part.n_head {
                        match part.rows(layer, h, pos..pos + 1) {
                            Rows::F16(s) => s.iter().for_each(|x| out.extend(x.0.to_le_bytes())),
                            Rows::F32(s) => s.iter().for_each(|x| out.extend(x.to_le_bytes())),
                            Rows::Blocks(_, s) => out.extend_from_slice(s),
                        }
                    }
                }
            }
        }
        out
    }

    /// The inverse of `to_bytes(n)`: positions `0..n` from `bytes`, which must have been
    /// written by a cache of the same types and shape.
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
        self.edits += 1;
        let mut at = 0;
        for layer in 0..self.n_layer {
            for part in [&mut self.k, &mut self.v] {
                let row = part.row;
                for pos in 0..n {
                    for h in 0..part.n_head {
                        let a = part.at(layer, h, pos);
                        match &mut part.store {
                            Store::F16(s) => {
                                for (d, b) in
                                    s[a..a + row].iter_mut().zip(bytes[at..].chunks_exact(2))
                                {
                                    *d = F16(u16::from_le_bytes([b[0], b[1]]));
                                }
                                at += 2 * row;
                            }
                            Store::F32(s) => {
                                for (d, b) in
                                    s[a..a + row].iter_mut().zip(bytes[at..].chunks_exact(4))
                                {
                                    *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                                }
                                at += 4 * row;
                            }
                            Store::Blocks(_, s) => {
                                s[a..a + row].copy_from_slice(&bytes[at..at + row]);
                                at += row;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_token_is_the_arithmetic() {
        // 2 KV heads of 64, 24 layers (qwen2.5 0.5B's shape).
        let c = Config::for_tests(24, 2, 64);
        let want = |k: usize, v: usize| (24 * 2 * (k + v)) as u64;
        let f16 = KvTypes::F16.bytes_per_token(&c);
        assert_eq!(f16, Some(want(128, 128)));
        let q8 = KvTypes::same(KvType::Q8_0).bytes_per_token(&c);
        assert_eq!(q8, Some(want(2 * 34, 2 * 34)));
        let q4 = KvTypes::same(KvType::Q4_0).bytes_per_token(&c);
        assert_eq!(q4, Some(want(2 * 18, 2 * 18)));
        let mixed = KvTypes {
            k: KvType::Q8_0,
            v: KvType::F32,
        }
        .bytes_per_token(&c);
        assert_eq!(mixed, Some(want(68, 256)));
    }

    #[test]
    fn blocks_need_whole_blocks_per_head() {
        let c = Config::for_tests(2, 1, 48);
        assert!(KvTypes::same(KvType::Q8_0).check(&c).is_err());
        assert!(KvTypes::F16.check(&c).is_ok());
    }

    #[test]
    fn save_restore_move_and_update_round_trip() {
        for t in KvType::ALL {
            let c = Config::for_tests(2, 2, 32);
            let types = KvTypes::same(t);
            let mut a = KvCache::new(types, &c, 8).unwrap();
            let row = |p: usize| {
                (0..64)
                    .map(|i| (i as f32 - 30.0) * 0.1 + p as f32)
                    .collect::<Vec<_>>()
            };
            for l in 0..2 {
                for p in 0..5 {
                    a.store(l, p, &row(p), &row(p + 10));
                }
            }
            let bytes = a.to_bytes(5);
            assert_eq!(bytes.len(), a.saved_len(5));
            let mut b = KvCache::new(types, &c, 8).unwrap();
            b.load_bytes(5, &bytes).unwrap();
            assert_eq!(b.to_bytes(5), bytes, "{t}");

            // Dropping positions 1..3: 3..5 move to 1..3, as stored.
            let (mut k3, mut k1) = (vec![0f32; 32], vec![0f32; 32]);
            a.k.read(1, 1, 3, &mut k3);
            a.move_positions(3, 1, 2);
            a.k.read(1, 1, 1, &mut k1);
            assert_eq!(k3, k1, "{t}");

            // update_keys sees each row once and stores what it returns.
            let seen = std::sync::atomic::AtomicUsize::new(0);
            a.update_keys(1..3, |_, _, r| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                r.iter_mut().for_each(|x| *x = 0.5);
            });
            assert_eq!(seen.into_inner(), 2 * 2 * 2);
            let mut k = vec![0f32; 32];
            a.k.read(0, 1, 2, &mut k);
            assert!(k.iter().all(|&x| (x - 0.5).abs() < 1e-3), "{t}: {k:?}");
        }
    }

    /// A device's layout (position by position, each head's row padded) carries the
    /// cache's own bytes both ways, for every type.
    #[test]
    fn rows_go_to_a_device_layout_and_back() {
        for t in KvType::ALL {
            let c = Config::for_tests(2, 2, 32);
            let types = KvTypes::same(t);
            let mut a = KvCache::new(types, &c, 8).unwrap();
            for p in 0..6 {
                let row: Vec<f32> = (0..64)
                    .map(|i| (i * 7 % 13) as f32 - 6.0 + p as f32)
                    .collect();
                a.store(1, p, &row, &row);
            }
            let pad = t.row_bytes(32).unwrap().next_multiple_of(4) + 4;
            let (mut k, mut v) = (Vec::new(), Vec::new());
            a.read_rows(1, (2, 3), (pad, pad), &mut k, &mut v);
            assert_eq!(k.len(), 3 * 2 * pad, "{t}");
            let mut b = KvCache::new(types, &c, 8).unwrap();
            b.store_rows(1, (2, 3), (pad, pad), &k, &v);
            // Positions 2..5 came across; the others stored in `a` did not.
            for p in 0..6 {
                for h in 0..2 {
                    let (mut x, mut y) = (vec![0f32; 32], vec![0f32; 32]);
                    a.k.read(1, h, p, &mut x);
                    b.k.read(1, h, p, &mut y);
                    let moved = (2..5).contains(&p);
                    assert_eq!(moved, x == y, "{t}: head {h} at {p}");
                }
            }
            // The padding stays zero.
            assert!(k.chunks_exact(pad).all(|r| r[pad - 4..] == [0; 4]), "{t}");
        }
    }
}
