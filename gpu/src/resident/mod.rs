//! Whole layers on the device: a [`Workspace`] holds the run buffers of a batch (one f32
//! arena), the matmul input, the norm weights and biases, the KV cache of each offloaded
//! layer and the logits; a [`Batch`] records the steps of a forward pass over it (norms,
//! matmuls, RoPE, the cache, attention, activations, residuals) and [`Workspace::run`]
//! submits them at once, so a token crosses the bus once each way instead of once per
//! matmul.
//!
//! Offsets into the arena are in f32s; the host lays the buffers out (see the engine's GPU
//! backend). The matmul kernels are those of [`crate::Gpu::matmul`], bound to the arena instead
//! of per-call buffers.

mod batch;
mod workspace;

pub use batch::Batch;
pub use workspace::Workspace;

use loupe_quant::GgmlType;

use crate::device::Part;

const OPS: &str = include_str!("../shaders/ops.wgsl");
const ATTENTION: &str = include_str!("../shaders/attention.wgsl");
const ROPE: &str = include_str!("../shaders/rope.wgsl");

/// Threads a row kernel (`rmsnorm`, `residual`) gives each row: for a few rows, 256, so
/// that each thread's reads of a row go out at once; for [`MANY_ROWS`] or more, which
/// keep the device busy by themselves, 64, so that fewer threads wait at each barrier.
const FEW_ROWS_THREADS: u32 = 256;
const MANY_ROWS_THREADS: u32 = 64;
const MANY_ROWS: u32 = 16;

/// The layer ops' WGSL, with `row_threads` threads a row in the row kernels.
fn ops_source(row_threads: u32) -> String {
    format!("const RW: u32 = {row_threads}u;\n{OPS}\n{ROPE}")
}

/// The most queries a workgroup of the attention kernel takes (a prompt's tokens of one
/// head, or one token's query heads of a group): each key's row and value is read once
/// for all of them.
const ROW_QUERIES: u32 = 8;

/// The query heads one attention workgroup takes of one token's `group` heads that share a
/// KV head (a group wider than [`ROW_QUERIES`] takes several workgroups).
fn token_heads(group: u32) -> u32 {
    group.clamp(1, ROW_QUERIES)
}

/// The attention kernels' WGSL for a cache whose keys and values are in the formats
/// `formats` (see [`formats_code`]): the formats are constants, so each pair's pipeline
/// carries only its own reads and writes.
fn attention_source(formats: u32) -> String {
    format!(
        "const K_TYPE: u32 = {}u;\nconst V_TYPE: u32 = {}u;\nconst QB: u32 = {ROW_QUERIES}u;\n\
         {ATTENTION}\n{ROPE}",
        formats >> 2,
        formats & 3
    )
}

/// The WGSL of the non-matmul kernels (for the translation tests): (name, source), the
/// attention kernels for every pair of cache formats.
pub fn op_sources() -> Vec<(String, String)> {
    let mut all = vec![
        ("ops".to_string(), ops_source(FEW_ROWS_THREADS)),
        ("ops, many rows".to_string(), ops_source(MANY_ROWS_THREADS)),
    ];
    for formats in 0..16 {
        all.push((format!("attention {formats}"), attention_source(formats)));
    }
    all
}

/// Dispatches one [`Batch`] may hold (each takes a 256-byte parameter slot).
const MAX_STEPS: usize = 16384;
/// Steps timed per submission when profiling (two timestamps each; a query set holds
/// at most 4096).
const MAX_TIMED: usize = 2048;
/// Steps recorded per submission (see [`Workspace::run`]).
const STEPS_PER_SUBMIT: usize = 64;
/// Matmul bind groups kept at most (one per weight part, output and batch size).
const MAX_BINDS: usize = 8192;
/// Threads per workgroup of the op kernels.
const WG: u32 = 64;
/// `consts` offset meaning "no weight".
pub(crate) const NONE: u32 = u32::MAX;

/// The sizes a [`Workspace`] is made with.
pub struct WorkspaceSpec<'a> {
    /// f32s of the activation arena.
    pub arena: usize,
    /// f32s of the matmul input (activations as the CPU's kernels would round them).
    pub xin: usize,
    /// f32s of the logits buffer (0: the output projection is not on the device).
    pub logits: usize,
    /// Norm weights and biases, read by the op kernels (norms) and the matmuls (biases, added
    /// to their sums) at offsets the host keeps.
    pub consts: &'a [f32],
    /// Bytes of each offloaded layer's keys and values.
    pub kv: Vec<(u64, u64)>,
}

/// How the activations of a matmul are rounded before it, as the CPU kernels quantize
/// them for weights of some format (see `loupe_quant::vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActRounding {
    None = 0,
    /// Q8_0 and Q8_1: blocks of 32, an f16 scale.
    Q8Blocks32 = 1,
    /// Q8_K: blocks of 256, an f32 scale.
    Q8K = 2,
    F16 = 3,
    Bf16 = 4,
}

impl ActRounding {
    /// The rounding the CPU applies to activations multiplied with `ty` weights.
    pub fn for_weights(ty: GgmlType) -> Option<ActRounding> {
        use GgmlType::*;
        Some(match loupe_quant::vec_dot_type(ty)? {
            F32 => ActRounding::None,
            Q8_0 | Q8_1 => ActRounding::Q8Blocks32,
            Q8_K => ActRounding::Q8K,
            F16 => ActRounding::F16,
            BF16 => ActRounding::Bf16,
            _ => return None,
        })
    }
}

/// The two gated activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    Silu = 0,
    Gelu = 1,
}

/// What the rows a [`Batch::quantize`] rounds are made of first, written back where they
/// lie before they are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// Gates, joined with the up projections at this offset by this activation.
    Glu(u32, Glu),
    /// Attention outputs (heads of `head_dim_v`) still in the partial results of a
    /// `split` ([`Batch::attend_parts`]), merged as `merge` would merge them.
    Merge { split: Split, head_dim_v: u32 },
}

/// What a block's last step ([`Batch::residual`]) prepares for the next block: the
/// stream normalized by the norm weight at `weight` (in the constants), rounded by
/// `rounding` into the matmul input at `xin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextNorm {
    pub weight: u32,
    pub xin: u32,
    pub rounding: ActRounding,
}

/// The two RoPE layouts: adjacent pairs, or the two halves of the rotated part (NeoX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    Adjacent = 0,
    Halves = 1,
}

/// RoPE as the attention kernels apply it while they read: `store` turns the new keys
/// and `attend` the queries, each element computed as [`Batch::rope`] computes it, so a
/// layer needs no RoPE step of its own (where nothing else, such as the Hadamard turn of
/// a quantized cache, comes between the turn and the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnRope {
    /// The cos/sin table in the arena, as [`Batch::rope`] takes it.
    pub table: u32,
    /// Dimensions turned from each head's start (even, at most the head's width).
    pub n_rot: u32,
    pub pairs: RopePairs,
}

/// Shape of one layer's attention (see `attention.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Element types of the cached keys and values: F16, F32, Q8_0 or Q4_0 (see
    /// [`cache_row_bytes`]).
    pub k_type: GgmlType,
    pub v_type: GgmlType,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    /// Sliding window in tokens, 0 for none.
    pub window: u32,
    /// Queries are multiplied by this first (gemma), else 1.
    pub q_scale: f32,
    /// Dots are multiplied by this (already divided by the cap).
    pub s_scale: f32,
    /// Score soft-cap, 0 for none.
    pub cap: f32,
    /// RoPE applied as queries and keys are read, or `None` where they come turned.
    pub rope: Option<AttnRope>,
}

impl AttnShape {
    /// The widest head the attention kernel takes (keys or values).
    pub const MAX_HEAD: u32 = 256;
}

/// The cache formats the attention kernels read, as `attention.wgsl` numbers them.
fn cache_code(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F16 => 0,
        GgmlType::F32 => 1,
        GgmlType::Q8_0 => 2,
        GgmlType::Q4_0 => 3,
        _ => return None,
    })
}

/// The keys' and values' formats as one number: the attention pipeline's key.
fn formats_code(k: GgmlType, v: GgmlType) -> Option<u32> {
    Some(cache_code(k)? << 2 | cache_code(v)?)
}

/// Bytes one head of `head_dim` elements takes in a device cache of `ty`: the head's row
/// as the CPU's cache stores it (f16 or f32 elements, or Q8_0/Q4_0 blocks), padded to
/// whole words so that each head's row is written by one thread. `None` for a format the
/// kernel does not read or a head that is not a whole number of its blocks (or of pairs,
/// for f16).
pub fn cache_row_bytes(ty: GgmlType, head_dim: u32) -> Option<u32> {
    cache_code(ty)?;
    let (block, bytes) = match ty {
        GgmlType::F16 => (2, 4),
        _ => (ty.block_elems() as u32, ty.block_bytes() as u32),
    };
    if head_dim == 0 || head_dim > AttnShape::MAX_HEAD || !head_dim.is_multiple_of(block) {
        return None;
    }
    Some((head_dim / block * bytes).next_multiple_of(4))
}

/// How attention divides each query's keys among workgroups (flash decoding): `parts`
/// chunks of `chunk` keys, their partial results at `at` in the arena ((n, n_head,
/// parts, 2 + head_dim_v) f32s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub parts: u32,
    pub chunk: u32,
    pub at: u32,
}

impl Split {
    /// One workgroup per query head and token, over all its keys.
    pub const NONE: Split = Split {
        parts: 1,
        chunk: 1 << 30,
        at: 0,
    };
    /// The most chunks a query's keys are cut into, whatever the heads.
    pub const MAX_PARTS: u32 = 32 * ROW_QUERIES;

    /// The most chunks a query's keys are cut into where `group` query heads share a KV
    /// head: 32 for each head an attention workgroup takes (the workgroups of a grouped
    /// model's token are fewer, so its keys are cut finer to keep as many at work).
    pub fn max_parts(group: u32) -> u32 {
        32 * token_heads(group)
    }

    /// Chunks for one query over `keys` positions where `group` query heads share a KV
    /// head: whole tiles of 64 keys, about 128 keys a chunk times the heads of a workgroup
    /// ([`Split::max_parts`] at most), and at least a tile; partial results at `at`.
    pub fn for_keys(keys: u32, group: u32, at: u32) -> Split {
        let parts = (keys.div_ceil(128).min(32) * token_heads(group)).min(keys.div_ceil(64));
        if parts <= 1 {
            return Split::NONE;
        }
        let chunk = keys.div_ceil(parts).next_multiple_of(64);
        Split {
            parts: keys.div_ceil(chunk),
            chunk,
            at,
        }
    }
}

/// Where a matmul writes: the arena at an offset (f32s, a multiple of 64), or the
/// logits buffer at one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Arena(u32),
    Logits(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    RmsNorm,
    Residual,
    /// The row kernels for [`MANY_ROWS`] or more.
    RmsNormRows,
    ResidualRows,
    Rope,
    Quantize,
    Store,
    Attend,
    Merge,
    Hadamard,
}

impl Kernel {
    const ALL: [Kernel; 10] = [
        Kernel::RmsNorm,
        Kernel::Residual,
        Kernel::RmsNormRows,
        Kernel::ResidualRows,
        Kernel::Rope,
        Kernel::Quantize,
        Kernel::Store,
        Kernel::Attend,
        Kernel::Merge,
        Kernel::Hadamard,
    ];

    /// The kernel's entry point, and whether it lives in `attention.wgsl` (else `ops.wgsl`).
    fn entry(self) -> (&'static str, bool) {
        match self {
            Kernel::RmsNorm | Kernel::RmsNormRows => ("rmsnorm", false),
            Kernel::Residual | Kernel::ResidualRows => ("residual", false),
            Kernel::Rope => ("rope", false),
            Kernel::Quantize => ("quantize", false),
            Kernel::Store => ("store", true),
            Kernel::Attend => ("attend", true),
            Kernel::Merge => ("merge", true),
            Kernel::Hadamard => ("hadamard", false),
        }
    }

    /// The WGSL the kernel is built from, for a cache of `formats`.
    fn source(self, formats: u32) -> String {
        match self {
            _ if self.entry().1 => attention_source(formats),
            Kernel::RmsNormRows | Kernel::ResidualRows => ops_source(MANY_ROWS_THREADS),
            _ => ops_source(FEW_ROWS_THREADS),
        }
    }

    /// The kernel that runs this row kernel over `rows` rows.
    fn for_rows(self, rows: u32) -> Kernel {
        match self {
            Kernel::RmsNorm if rows >= MANY_ROWS => Kernel::RmsNormRows,
            Kernel::Residual if rows >= MANY_ROWS => Kernel::ResidualRows,
            k => k,
        }
    }
}

/// Which buffers an op binds besides the arena: the matmul input, or a layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Binds {
    Plain,
    Cache(usize),
}

enum Step<'w> {
    Op {
        kernel: Kernel,
        /// The cache's formats ([`formats_code`]) for the attention kernels, else 0.
        formats: u32,
        binds: Binds,
        groups: [u32; 3],
    },
    Matmul {
        part: &'w Part,
        pipeline: (GgmlType, u32),
        /// Whether the packed int8 copy of its input is current, so that the int8 kernel
        /// may run it (see [`Batch::matmul`]).
        int8: bool,
        target: Target,
        out_len: u64,
        groups: [u32; 3],
        /// The bytes of weights the part holds (for the profile's rates).
        weight_bytes: u64,
    },
}

impl Step<'_> {
    /// What a profile calls this step: the kernel, or the matmul's format and width (and
    /// "int8" when it runs on the packed input: `int8` says whether the workspace allows it).
    fn name(&self, int8: bool) -> String {
        match self {
            Step::Op { kernel, .. } => kernel.entry().0.to_string(),
            Step::Matmul {
                pipeline,
                int8: packed,
                ..
            } => {
                let kind = if int8 && *packed { " int8" } else { "" };
                format!("matmul {} x{}{kind}", pipeline.0, pipeline.1)
            }
        }
    }

    /// The weight bytes a matmul step reads; 0 for the others.
    fn weight_bytes(&self) -> u64 {
        match self {
            Step::Op { .. } => 0,
            Step::Matmul { weight_bytes, .. } => *weight_bytes,
        }
    }
}

/// What [`Workspace::run`] copies back, in order.
#[derive(Clone, Copy)]
enum Read {
    Arena {
        off: u64,
        bytes: u64,
    },
    Input {
        off: u64,
        bytes: u64,
    },
    Logits {
        off: u64,
        bytes: u64,
    },
    Cache {
        layer: usize,
        values: bool,
        off: u64,
        bytes: u64,
    },
}

impl Read {
    fn bytes(&self) -> u64 {
        match *self {
            Read::Arena { bytes, .. }
            | Read::Input { bytes, .. }
            | Read::Logits { bytes, .. }
            | Read::Cache { bytes, .. } => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Split;

    /// (keys, group) → (parts, chunk): about 128 keys a chunk per head a workgroup takes,
    /// at least a tile of 64, 32 parts per such head at most.
    #[test]
    fn keys_are_cut_finer_for_grouped_heads() {
        let cut = |keys, group| {
            let s = Split::for_keys(keys, group, 0);
            (s.parts, s.chunk)
        };
        assert_eq!(cut(64, 4), (1, 1 << 30));
        assert_eq!(cut(128, 1), (1, 1 << 30));
        assert_eq!(cut(129, 1), (2, 128));
        assert_eq!(cut(601, 2), (10, 64));
        assert_eq!(cut(16384, 1), (32, 512));
        assert_eq!(cut(16384, 4), (128, 128));
        assert_eq!(cut(65536, 16), (256, 256));
        for group in 1..=16 {
            for keys in [1, 65, 300, 4097, 100_000] {
                let s = Split::for_keys(keys, group, 0);
                assert!(s.parts <= Split::max_parts(group) && s.parts <= Split::MAX_PARTS);
                assert!(
                    s.parts == 1 || (s.parts - 1) * s.chunk < keys && keys <= s.parts * s.chunk
                );
            }
        }
    }
}
