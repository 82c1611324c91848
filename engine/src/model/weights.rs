//! Weight lookup: every tensor the forward pass uses, found by its GGUF name and checked
//! against the config's shapes once, at load. Weights stay in the memory map; a
//! [`Tensor`] says where in the model's file, and the model hands out a [`Matrix`] view
//! of it, borrowed from the map, for the kernels (`Model::matrix`). On CPUs with the AVX-512 kernels,
//! Q4_0, Q5_0, Q4_K and Q6_K matrices are repacked after load into sixteen-row tiles
//! ([`PackedRows`], [`super::repack`]) and their pages of the map released, so they take
//! the same memory once.

use std::cell::RefCell;
use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use loupe_quant::packed::{self, PackedRows};
use loupe_quant::GgmlType;

use super::config::{Config, ConfigError};
use super::repack::{Job, PackSlot, Repack};
use loupe_gguf::GgufFile;

/// A tensor of the model file: its type and shape (innermost first) and where its bytes are.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub ty: GgmlType,
    /// Elements per row.
    pub cols: usize,
    /// Rows (product of the outer dimensions).
    pub rows: usize,
    /// Index in the file's tensor directory.
    index: usize,
    /// Where the rows repacked for the matmul kernels will be (see [`super::repack`]).
    pub pack: Option<PackSlot>,
}

impl Tensor {
    /// The view the kernels read, over `file`, the file this tensor was found in (the
    /// model's own: see `Model::matrix`).
    pub(super) fn view<'f>(&'f self, file: &'f GgufFile) -> Matrix<'f> {
        Matrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: file.tensor_data(&file.tensors()[self.index]),
            packed: self.pack.as_ref().and_then(|p| p.get()),
        }
    }
}

/// A weight matrix as the kernels read it: (rows, cols) of blocks of type `ty`, borrowed
/// from the model's memory map, and the repacked copy once the background repack has
/// published it. Made for each operation, so all the chunks of one matmul agree on where
/// the rows are even if the repack publishes meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'m> {
    pub ty: GgmlType,
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// The rows as stored in the file, `rows * row_bytes()` bytes.
    pub data: &'m [u8],
    pub packed: Option<&'m PackedRows>,
}

impl Matrix<'_> {
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }
}

/// One transformer block's tensors. Optional ones depend on the architecture.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,              // (dim)
    pub wq: Tensor,                       // (q_dim, dim)
    pub wk: Tensor,                       // (kv_dim, dim)
    pub wv: Tensor,                       // (kv_dim_v, dim)
    pub bq: Option<Vec<f32>>,             // (q_dim), qwen2
    pub bk: Option<Vec<f32>>,             // (kv_dim)
    pub bv: Option<Vec<f32>>,             // (kv_dim_v)
    pub q_norm: Option<Vec<f32>>,         // (head_dim), qwen3, gemma3
    pub k_norm: Option<Vec<f32>>,         // (head_dim)
    pub wo: Tensor,                       // (dim, q_dim)
    pub bo: Option<Vec<f32>>,             // (dim)
    pub attn_post_norm: Option<Vec<f32>>, // (dim), gemma
    pub ffn_norm: Vec<f32>,               // (dim)
    pub w_gate: Tensor,                   // (hidden, dim)
    pub w_up: Tensor,                     // (hidden, dim)
    pub w_down: Tensor,                   // (dim, hidden)
    pub ffn_post_norm: Option<Vec<f32>>,  // (dim), gemma
}

#[derive(Clone, Debug)]
pub struct Weights {
    pub token_embd: Tensor, // (vocab, dim)
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>, // (dim)
    /// The output projection; the token embedding when the model ties them.
    pub output: Tensor, // (vocab, dim)
    /// Llama-3 RoPE frequency factors, (n_rot / 2).
    pub rope_freqs: Option<Vec<f32>>,
}

/// Finds the model's tensors by name, checks each against the shape the configuration
/// implies, and remembers which it found, so that a tensor nothing uses is an error too.
struct Finder<'a> {
    file: &'a GgufFile,
    used: RefCell<Vec<bool>>, // (n_tensors) found by some lookup
}

impl Finder<'_> {
    /// The tensor `name`, if the file has it, of `shape` (innermost first); `why` says
    /// which configuration values imply the shape, for the error.
    fn opt(&self, name: &str, shape: &[usize], why: impl Fn() -> String) -> Result<Option<Tensor>> {
        let Some((index, t)) = self
            .file
            .tensors()
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
        else {
            return Ok(None);
        };
        self.used.borrow_mut()[index] = true;
        // Trailing 1-sized dimensions are the same shape to ggml.
        let trim = |d: &[u64]| {
            let mut v = d.to_vec();
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if trim(&t.dims) != trim(&want) {
            return Err(ConfigError::Shape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: shape.to_vec(),
                why: why(),
            }
            .into());
        }
        if !t.ty.is_supported() {
            bail!(
                "tensor {name:?}: type {} (id {}) is not supported",
                t.ty,
                t.ty.id()
            );
        }
        Ok(Some(Tensor {
            ty: t.ty,
            cols: shape[0],
            rows: shape[1..].iter().product(),
            index,
            pack: None,
        }))
    }

    fn req(&self, name: &str, shape: &[usize], why: impl Fn() -> String) -> Result<Tensor> {
        match self.opt(name, shape, &why)? {
            Some(t) => Ok(t),
            None => Err(ConfigError::MissingTensor {
                name: name.to_string(),
                why: format!("{} make it {shape:?}", why()),
            }
            .into()),
        }
    }

    /// A 1-D f32 vector (norm weights, biases), read into memory: they are small and the
    /// forward pass wants them as f32.
    fn vec(&self, name: &str, n: usize, why: impl Fn() -> String) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.opt(name, &[n], why)? else {
            return Ok(None);
        };
        ensure!(
            t.ty == GgmlType::F32,
            "tensor {name:?} is {}, expected F32",
            t.ty
        );
        Ok(Some(
            t.view(self.file)
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    }

    fn req_vec(&self, name: &str, n: usize, why: impl Fn() -> String) -> Result<Vec<f32>> {
        match self.vec(name, n, &why)? {
            Some(v) => Ok(v),
            None => Err(ConfigError::MissingTensor {
                name: name.to_string(),
                why: format!("{} make it [{n}]", why()),
            }
            .into()),
        }
    }

    /// The first tensor of the file no lookup found.
    fn first_unused(&self) -> Option<&str> {
        let used = self.used.borrow();
        self.file
            .tensors()
            .iter()
            .zip(used.iter())
            .find(|(_, &u)| !u)
            .map(|(t, _)| t.name.as_str())
    }
}

/// Which configuration values imply each tensor's shape, in the words of the file's keys,
/// for the errors.
struct Why<'c> {
    c: &'c Config,
    arch: &'static str,
    /// Where the vocabulary size came from.
    vocab: String,
}

impl Why<'_> {
    fn dim(&self) -> String {
        format!("{}.embedding_length = {}", self.arch, self.c.dim)
    }

    fn vocab(&self) -> String {
        format!("{} and {}", self.dim(), self.vocab)
    }

    fn heads(&self, kv: bool) -> String {
        let (key, n) = if kv {
            ("head_count_kv", self.c.n_kv_head)
        } else {
            ("head_count", self.c.n_head)
        };
        format!(
            "{}, {}.attention.{key} = {n} and a head size of {}",
            self.dim(),
            self.arch,
            self.c.head_dim
        )
    }

    fn ffn(&self) -> String {
        format!(
            "{} and {}.feed_forward_length = {}",
            self.dim(),
            self.arch,
            self.c.hidden_dim
        )
    }

    fn head(&self) -> String {
        format!("a head size of {}", self.c.head_dim)
    }

    fn rope(&self) -> String {
        format!("{}.rope.dimension_count = {}", self.arch, self.c.n_rot)
    }
}

impl Weights {
    /// Every tensor the configuration implies, each of the shape it implies, and no other:
    /// a tensor left over means the file is not the model its metadata describes.
    pub fn load(file: &GgufFile, c: &Config) -> Result<Weights> {
        let f = Finder {
            file,
            used: RefCell::new(vec![false; file.tensors().len()]),
        };
        let arch = c.arch.name();
        let vocab_key = format!("{arch}.vocab_size");
        let why = Why {
            c,
            arch,
            vocab: if file.metadata().get(&vocab_key).is_some() {
                format!("{vocab_key} = {}", c.vocab_size)
            } else {
                format!("the {} tokens of tokenizer.ggml.tokens", c.vocab_size)
            },
        };
        let (dim, hidden) = (c.dim, c.hidden_dim);
        let token_embd = f.req("token_embd.weight", &[dim, c.vocab_size], || why.vocab())?;
        let output = f
            .opt("output.weight", &[dim, c.vocab_size], || why.vocab())?
            .unwrap_or_else(|| token_embd.clone());
        let output_norm = f.req_vec("output_norm.weight", dim, || why.dim())?;
        let rope_freqs = f.vec("rope_freqs.weight", c.n_rot / 2, || why.rope())?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let (q, kv) = (|| why.heads(false), || why.heads(true));
            let (d, ffn, head) = (|| why.dim(), || why.ffn(), || why.head());
            layers.push(LayerWeights {
                attn_norm: f.req_vec(&n("attn_norm.weight"), dim, d)?,
                wq: f.req(&n("attn_q.weight"), &[dim, c.q_dim()], q)?,
                wk: f.req(&n("attn_k.weight"), &[dim, c.kv_dim()], kv)?,
                wv: f.req(&n("attn_v.weight"), &[dim, c.kv_dim_v()], kv)?,
                bq: f.vec(&n("attn_q.bias"), c.q_dim(), q)?,
                bk: f.vec(&n("attn_k.bias"), c.kv_dim(), kv)?,
                bv: f.vec(&n("attn_v.bias"), c.kv_dim_v(), kv)?,
                q_norm: f.vec(&n("attn_q_norm.weight"), c.head_dim, head)?,
                k_norm: f.vec(&n("attn_k_norm.weight"), c.head_dim, head)?,
                wo: f.req(&n("attn_output.weight"), &[c.n_head * c.head_dim_v, dim], q)?,
                bo: f.vec(&n("attn_output.bias"), dim, d)?,
                attn_post_norm: f.vec(&n("post_attention_norm.weight"), dim, d)?,
                ffn_norm: f.req_vec(&n("ffn_norm.weight"), dim, d)?,
                w_gate: f.req(&n("ffn_gate.weight"), &[dim, hidden], ffn)?,
                w_up: f.req(&n("ffn_up.weight"), &[dim, hidden], ffn)?,
                w_down: f.req(&n("ffn_down.weight"), &[hidden, dim], ffn)?,
                ffn_post_norm: f.vec(&n("post_ffw_norm.weight"), dim, d)?,
            });
        }
        if let Some(name) = f.first_unused() {
            return Err(ConfigError::Unused {
                name: name.to_string(),
                arch: c.arch.name(),
            }
            .into());
        }
        let w = Weights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
        };
        w.check_arch(c)?;
        Ok(w)
    }

    /// Start repacking, in the background ([`Repack`]), every Q4_0, Q5_0, Q4_K and Q6_K
    /// matrix the forward pass multiplies by (not the token embedding, which is read a row
    /// at a time, nor an output projection tied to it), where the kernels run packed weights
    /// (AVX-512 VNNI) and `LOUPE_NO_REPACK` is not set to something other than `0`: the
    /// kernels then read each matrix in one sequential pass per token, sixteen rows at a
    /// time. `None` when nothing is repacked.
    ///
    /// Only the matrices the CPU runs are repacked: the first `cpu_layers` layers', and
    /// the output projection's when `output_on_cpu` (a GPU's layers would only cost
    /// memory that cannot be paged out). Every other tensor loses its packed copy.
    pub fn start_repack(
        &mut self,
        file: &Arc<GgufFile>,
        cpu_layers: usize,
        output_on_cpu: bool,
    ) -> Result<Option<Repack>> {
        for t in self.matrices_mut(usize::MAX, true) {
            t.pack = None;
        }
        if super::repack::disabled_by_env() || !loupe_quant::kernels().runs_packed() {
            return Ok(None);
        }
        let embd = self.token_embd.index;
        let todo: Vec<&mut Tensor> = self
            .matrices_mut(cpu_layers, output_on_cpu)
            .filter(|t| packed::packs(t.ty) && t.index != embd)
            .collect();
        if todo.is_empty() {
            return Ok(None);
        }
        let jobs = todo
            .iter()
            .map(|t| Job {
                tensor: t.index,
                ty: t.ty,
                rows: t.rows,
                cols: t.cols,
            })
            .collect();
        let (repack, slots) = Repack::start(file.clone(), jobs)?;
        for (t, slot) in todo.into_iter().zip(slots) {
            t.pack = Some(slot);
        }
        Ok(Some(repack))
    }

    /// The matrices a matmul reads: the projections of the first `layers` layers, then
    /// the output projection if `output`.
    fn matrices_mut(&mut self, layers: usize, output: bool) -> impl Iterator<Item = &mut Tensor> {
        self.layers
            .iter_mut()
            .take(layers)
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.w_gate,
                    &mut l.w_up,
                    &mut l.w_down,
                ]
            })
            .chain(output.then_some(&mut self.output))
    }

    /// The optional tensors (biases, QK-norms, post-norms) must be in every layer or in
    /// none, and those an architecture needs (gemma's post-norms, qwen3's and gemma3's
    /// QK-norms) in every layer, so a wrong file fails at load rather than computing
    /// nonsense.
    fn check_arch(&self, c: &Config) -> Result<()> {
        use super::config::Arch;
        let has = |l: &LayerWeights| {
            [
                ("attn_q.bias", l.bq.is_some()),
                ("attn_k.bias", l.bk.is_some()),
                ("attn_v.bias", l.bv.is_some()),
                ("attn_q_norm.weight", l.q_norm.is_some()),
                ("attn_k_norm.weight", l.k_norm.is_some()),
                ("attn_output.bias", l.bo.is_some()),
                ("post_attention_norm.weight", l.attn_post_norm.is_some()),
                ("post_ffw_norm.weight", l.ffn_post_norm.is_some()),
            ]
        };
        const POST: [&str; 2] = ["post_attention_norm.weight", "post_ffw_norm.weight"];
        const QK: [&str; 2] = ["attn_q_norm.weight", "attn_k_norm.weight"];
        let needs: &[&str] = match c.arch {
            Arch::Gemma2 => &POST,
            Arch::Gemma3 => &[POST[0], POST[1], QK[0], QK[1]],
            Arch::Qwen3 => &QK,
            Arch::Llama | Arch::Qwen2 => &[],
        };
        let first = has(&self.layers[0]);
        for (i, l) in self.layers.iter().enumerate() {
            for (&(name, present), &(_, in_first)) in has(l).iter().zip(&first) {
                let missing = |layer: usize, why: String| -> anyhow::Error {
                    ConfigError::MissingTensor {
                        name: format!("blk.{layer}.{name}"),
                        why,
                    }
                    .into()
                };
                if !present && needs.contains(&name) {
                    return Err(missing(
                        i,
                        format!("{} needs it in every layer", c.arch.name()),
                    ));
                }
                if present != in_first {
                    let (without, with) = if present { (0, i) } else { (i, 0) };
                    return Err(missing(
                        without,
                        format!("blk.{with} has one, so every layer must"),
                    ));
                }
            }
        }
        Ok(())
    }
}
