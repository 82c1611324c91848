//! llama.cpp's saved state of one sequence's KV cache, read and written as bytes, so the
//! bench can start "@ dD" tests from D made-up positions (loupe's `--synthetic-depth`)
//! instead of evaluating D tokens, most of an hour for an 8B model at 16K on two cores.
//!
//! The layout is `llama_kv_cache::state_write` (llama-kv-cache.cpp of llama-cpp-sys-2
//! 0.1.161), after `llama_state_seq_get_data`'s magic and sequence id:
//!
//! ```text
//! u32 n_stream (1) · u32 cell_count
//! per cell:  i32 pos · u32 n_seq_id (1) · i32 seq_id
//! u32 v_trans · u32 n_layer · u32 n_rot_k · u32 n_rot_v
//! per layer: i32 key type · u64 key row bytes · cell_count key rows
//! per layer: i32 value type · u64 value row bytes · cell_count value rows
//! ```
//!
//! [`Layout::of_one_cell`] learns the types and row sizes from a one-position state that
//! llama.cpp wrote itself and refuses anything else (several streams, cells with extra
//! fields, transposed values, sliding-window models, which keep their layers in two
//! caches), so a layout change in llama.cpp fails loudly instead of loading garbage.

use anyhow::{bail, ensure, Context, Result};

/// Type and row size of one layer's keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// The ggml type id.
    pub ggml_type: i32,
    /// Bytes of one position's row.
    pub row_bytes: usize,
}

/// What a one-position state says about the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Magic and sequence id, as `llama_state_seq_get_data` writes them.
    prefix: [u8; 8],
    /// n_rot_k and n_rot_v (checked by the reader against the cache's own).
    rot: [u8; 8],
    pub keys: Vec<Rows>,
    pub values: Vec<Rows>,
}

/// Reads little-endian fields in order, naming the field that runs past the end.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let bytes = self
            .buf
            .get(self.at..self.at + N)
            .with_context(|| format!("state ends at {} inside {field}", self.buf.len()))?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }
    fn u32(&mut self, field: &str) -> Result<u32> {
        self.take::<4>(field).map(u32::from_le_bytes)
    }
    fn rows(&mut self, what: &str, layer: usize) -> Result<Rows> {
        let ggml_type = i32::from_le_bytes(self.take::<4>(what)?);
        let row_bytes = u64::from_le_bytes(self.take::<8>(what)?);
        let row_bytes = usize::try_from(row_bytes)?;
        let field = format!("layer {layer}'s {what} row");
        self.at = self
            .at
            .checked_add(row_bytes)
            .filter(|&end| end <= self.buf.len())
            .with_context(|| format!("state ends at {} inside {field}", self.buf.len()))?;
        Ok(Rows {
            ggml_type,
            row_bytes,
        })
    }
}

impl Layout {
    /// The layout of `state`, which must hold exactly one position (0) of sequence 0 of
    /// a model with `n_layer` layers.
    pub fn of_one_cell(state: &[u8], n_layer: usize) -> Result<Layout> {
        let mut r = Reader { buf: state, at: 0 };
        let prefix = r.take::<8>("magic and sequence id")?;
        let n_stream = r.u32("n_stream")?;
        ensure!(n_stream == 1, "the cache has {n_stream} streams, not 1");
        let cells = r.u32("cell_count")?;
        ensure!(cells == 1, "the state holds {cells} cells, not 1");
        let (pos, n_seq) = (r.u32("pos")?, r.u32("n_seq_id")?);
        let seq = r.u32("seq_id")?;
        ensure!(
            (pos, n_seq, seq) == (0, 1, 0),
            "cell fields (pos {pos}, n_seq_id {n_seq}, seq_id {seq}) are not (0, 1, 0): \
             cells with extra fields are not supported"
        );
        let v_trans = r.u32("v_trans")?;
        ensure!(
            v_trans == 0,
            "values are stored transposed (flash attention off); not supported"
        );
        let layers = r.u32("n_layer")? as usize;
        ensure!(
            layers == n_layer,
            "the state has {layers} layers, the model {n_layer} (a sliding-window model keeps \
             its layers in two caches); not supported"
        );
        let rot = r.take::<8>("n_rot_k and n_rot_v")?;
        let keys = (0..n_layer)
            .map(|l| r.rows("key", l))
            .collect::<Result<Vec<_>>>()?;
        let values = (0..n_layer)
            .map(|l| r.rows("value", l))
            .collect::<Result<Vec<_>>>()?;
        if r.at != state.len() {
            bail!(
                "{} bytes follow the single cache's state (a second cache?); not supported",
                state.len() - r.at
            );
        }
        Ok(Layout {
            prefix,
            rot,
            keys,
            values,
        })
    }

    /// A state of positions `0..n` of sequence 0, each layer's rows written by
    /// `fill(layer, keys, values)` (`n` rows each, back to back).
    pub fn build(&self, n: usize, mut fill: impl FnMut(usize, &mut [u8], &mut [u8])) -> Vec<u8> {
        let rows: usize = self
            .keys
            .iter()
            .chain(&self.values)
            .map(|r| 12 + n * r.row_bytes)
            .sum();
        let mut out = Vec::with_capacity(8 + 8 + 12 * n + 16 + rows);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for pos in 0..n as u32 {
            out.extend_from_slice(&pos.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.rot);
        // Where each layer's rows go, then the rows themselves.
        let mut at = Vec::with_capacity(2 * self.keys.len());
        for r in self.keys.iter().chain(&self.values) {
            out.extend_from_slice(&r.ggml_type.to_le_bytes());
            out.extend_from_slice(&(r.row_bytes as u64).to_le_bytes());
            at.push(out.len());
            out.resize(out.len() + n * r.row_bytes, 0);
        }
        let n_layer = self.keys.len();
        for layer in 0..n_layer {
            let (k0, v0) = (at[layer], at[n_layer + layer]);
            let (head, tail) = out.split_at_mut(v0);
            let keys = &mut head[k0..k0 + n * self.keys[layer].row_bytes];
            let values = &mut tail[..n * self.values[layer].row_bytes];
            fill(layer, keys, values);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-cell state of two layers as llama.cpp writes it.
    fn one_cell() -> Vec<u8> {
        let mut s = vec![1, 2, 3, 4, 0, 0, 0, 0];
        for x in [1u32, 1, 0, 1, 0, 0, 2, 0, 0] {
            s.extend_from_slice(&x.to_le_bytes());
        }
        for (t, row) in [(1i32, 4u64), (1, 4), (8, 2), (8, 2)] {
            s.extend_from_slice(&t.to_le_bytes());
            s.extend_from_slice(&row.to_le_bytes());
            s.extend(std::iter::repeat_n(0xAB, row as usize));
        }
        s
    }

    #[test]
    fn a_built_state_of_one_cell_is_llamas() {
        let state = one_cell();
        let layout = Layout::of_one_cell(&state, 2).unwrap();
        assert_eq!(
            layout.keys[1],
            Rows {
                ggml_type: 1,
                row_bytes: 4
            }
        );
        assert_eq!(
            layout.values[0],
            Rows {
                ggml_type: 8,
                row_bytes: 2
            }
        );
        let built = layout.build(1, |_, k, v| {
            k.fill(0xAB);
            v.fill(0xAB);
        });
        assert_eq!(built, state);
    }

    #[test]
    fn rows_land_in_their_layer() {
        let layout = Layout::of_one_cell(&one_cell(), 2).unwrap();
        let built = layout.build(3, |l, k, v| {
            k.fill(0x10 + l as u8);
            v.fill(0x20 + l as u8);
        });
        // The built state of three cells reads back cell by cell as the layout says.
        let data = 8 + 8 + 3 * 12 + 16;
        let key_rows = |l: usize| data + l * (12 + 12) + 12;
        assert_eq!(&built[key_rows(0)..key_rows(0) + 12], &[0x10; 12]);
        assert_eq!(&built[key_rows(1)..key_rows(1) + 12], &[0x11; 12]);
        let values = data + 2 * 24;
        assert_eq!(&built[values + 12..values + 18], &[0x20; 6]);
        assert_eq!(&built[values + 18 + 12..], &[0x21; 6]);
    }

    #[test]
    fn other_layouts_are_refused() {
        let state = one_cell();
        let mut extra = state.clone();
        extra.push(0);
        let mut transposed = state.clone();
        transposed[28..32].copy_from_slice(&1u32.to_le_bytes());
        for (bad, why) in [
            (&extra[..], "1 bytes follow"),
            (&transposed[..], "transposed"),
            (&state[..state.len() - 1], "inside layer 1's value row"),
        ] {
            let err = Layout::of_one_cell(bad, 2).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let err = Layout::of_one_cell(&state, 3).unwrap_err().to_string();
        assert!(err.contains("2 layers, the model 3"), "{err}");
    }
}
