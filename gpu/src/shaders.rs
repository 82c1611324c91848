//! The WGSL sources: four matmul skeletons (`matmul_subgroup.wgsl` for one token and small
//! batches, `matmul_split.wgsl` for the same with a workgroup per row, `matmul_shared.wgsl`
//! for those on adapters without subgroup operations, and
//! `matmul_tiled.wgsl` for prompt batches on every adapter), each specialized per weight
//! format by naming that format's dequantize function, and per number of activation rows
//! a workgroup carries. The float kernels read their input as f32s (`input_f32.wgsl`); for
//! the quantized formats ([`int8_dot`]) the one-token mat-vec and the tiled matmul have
//! variants that read its packed int8 copy instead (`dot_int8.wgsl`,
//! `matmul_tiled_int8.wgsl`).

use loupe_quant::GgmlType;

const BINDINGS: &str = include_str!("shaders/bindings.wgsl");
const INPUT_F32: &str = include_str!("shaders/input_f32.wgsl");
const DOT_INT8: &str = include_str!("shaders/dot_int8.wgsl");
const DOT_INT8_WORDS: &str = include_str!("shaders/dot_int8_words.wgsl");
const INT8_RUNS: &str = include_str!("shaders/int8_runs.wgsl");
const MATMUL_TILED_INT8: &str = include_str!("shaders/matmul_tiled_int8.wgsl");
const MATMUL_SUBGROUP: &str = include_str!("shaders/matmul_subgroup.wgsl");
const MATMUL_SPLIT: &str = include_str!("shaders/matmul_split.wgsl");
const MATMUL_SHARED: &str = include_str!("shaders/matmul_shared.wgsl");
const MATMUL_TILED: &str = include_str!("shaders/matmul_tiled.wgsl");
const TILED_TILE: &str = include_str!("shaders/tiled_tile.wgsl");
const BYTES: &str = include_str!("shaders/bytes.wgsl");
const FLOAT: &str = include_str!("shaders/float.wgsl");
const LEGACY: &str = include_str!("shaders/legacy.wgsl");
const K_QUANTS: &str = include_str!("shaders/k_quants.wgsl");
const WIDE: &str = include_str!("shaders/wide.wgsl");
/// The copy kernel that measures bandwidth ([`crate::Bandwidth`]).
pub(crate) const COPY: &str = include_str!("shaders/copy.wgsl");

/// Rows of activations one mat-vec workgroup carries: the variants the crate builds.
pub const BATCH_WIDTHS: [u32; 3] = [1, 4, 8];

/// Rows of activations one tiled-matmul workgroup carries (its tile is `TILE_ROWS` weight
/// rows by these); batches wider than the widest of [`BATCH_WIDTHS`] take that kernel.
pub const TILE_WIDTH: u32 = 32;

/// Weight rows one tiled-matmul workgroup computes (`TM`, put before the tiled kernels'
/// source; `tiled_tile.wgsl` gives each thread 8 of them, so 8 × 16 threads across).
pub const TILE_ROWS: u32 = 128;

/// The activation rows per workgroup of the kernel a batch of `b` rows takes: the
/// narrowest mat-vec width that holds it, else the tiled matmul's.
pub fn batch_width(b: usize) -> u32 {
    BATCH_WIDTHS
        .into_iter()
        .find(|&w| b <= w as usize)
        .unwrap_or(TILE_WIDTH)
}

/// Weight rows one workgroup of the width-`nc` kernel computes under `red`.
pub fn rows_per_group(nc: u32, red: Reduction) -> u32 {
    match red {
        _ if nc == TILE_WIDTH => TILE_ROWS,
        Reduction::Subgroup { rows } => rows,
        Reduction::SplitRow | Reduction::Shared => 1,
    }
}

/// Every weight format the GPU kernels read.
pub const SHADER_TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
    ]
};

pub fn supported(ty: GgmlType) -> bool {
    dequant_fn(ty).is_some()
}

/// The WGSL function that dequantizes eight weights of `ty`, and the file it lives in.
fn dequant_fn(ty: GgmlType) -> Option<(&'static str, &'static str)> {
    use GgmlType::*;
    Some(match ty {
        F32 => ("dq_f32", FLOAT),
        F16 => ("dq_f16", FLOAT),
        BF16 => ("dq_bf16", FLOAT),
        Q4_0 => ("dq_q4_0", LEGACY),
        Q4_1 => ("dq_q4_1", LEGACY),
        Q5_0 => ("dq_q5_0", LEGACY),
        Q5_1 => ("dq_q5_1", LEGACY),
        Q8_0 => ("dq_q8_0", LEGACY),
        IQ4_NL => ("dq_iq4_nl", LEGACY),
        IQ4_XS => ("dq_iq4_xs", LEGACY),
        Q2_K => ("dq_q2_k", K_QUANTS),
        Q3_K => ("dq_q3_k", K_QUANTS),
        Q4_K => ("dq_q4_k", K_QUANTS),
        Q5_K => ("dq_q5_k", K_QUANTS),
        Q6_K => ("dq_q6_k", K_QUANTS),
        _ => return None,
    })
}

/// The WGSL function that dots a whole unit of `ty` weights (see `wide.wgsl`) and the
/// unit's size, for the formats that have one.
fn wide_fn(ty: GgmlType) -> Option<(&'static str, u32)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => ("dot_q4_0", 32),
        Q8_0 => ("dot_q8_0", 32),
        Q4_K => ("dot_q4_k", 64),
        Q6_K => ("dot_q6_k", 32),
        _ => return None,
    })
}

/// The WGSL function that dots a unit of `ty` weights with the packed int8 input (see
/// `dot_int8.wgsl`) and the unit's size: every quantized format (the CPU rounds their
/// activations to Q8_0, Q8_1 or Q8_K); `None` for the float ones.
pub fn int8_dot(ty: GgmlType) -> Option<(&'static str, u32)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => ("dot8_q4_0", 32),
        Q4_1 => ("dot8_q4_1", 32),
        Q5_0 => ("dot8_q5_0", 32),
        Q5_1 => ("dot8_q5_1", 32),
        Q8_0 => ("dot8_q8_0", 32),
        IQ4_NL => ("dot8_iq4_nl", 32),
        Q2_K => ("dot8_q2_k", 32),
        Q3_K => ("dot8_q3_k", 32),
        Q4_K => ("dot8_q4_k", 64),
        Q5_K => ("dot8_q5_k", 64),
        Q6_K => ("dot8_q6_k", 32),
        IQ4_XS => ("dot8_iq4_xs", 32),
        _ => return None,
    })
}

/// The lane-per-word variant of [`int8_dot`]'s one-token dot (see `dot_int8_words.wgsl`)
/// and its unit: every quantized format.
pub fn int8_word_dot(ty: GgmlType) -> Option<(&'static str, u32)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => ("word8_q4_0", 8),
        Q4_1 => ("word8_q4_1", 8),
        Q5_0 => ("word8_q5_0", 8),
        Q5_1 => ("word8_q5_1", 8),
        Q8_0 => ("word8_q8_0", 8),
        IQ4_NL => ("word8_iq4_nl", 8),
        Q2_K => ("word8_q2_k", 16),
        Q3_K => ("word8_q3_k", 16),
        Q4_K => ("word8_q4_k", 32),
        Q5_K => ("word8_q5_k", 32),
        Q6_K => ("word8_q6_k", 32),
        IQ4_XS => ("word8_iq4_xs", 8),
        _ => return None,
    })
}

/// Whether [`int8_source`] has a kernel for `ty` at width `nc` under `red`.
pub fn has_int8(ty: GgmlType, nc: u32, red: Reduction) -> bool {
    int8_dot(ty).is_some() && (nc == TILE_WIDTH || (nc == 1 && red.subgroups()))
}

/// The kernel for `ty` over the packed int8 input at width `nc`: the one-token mat-vec
/// (`nc` 1, with subgroup sums, `red`'s rows a workgroup) or the tiled matmul for prompt
/// batches ([`TILE_WIDTH`], any reduction); `None` for a format without int8 dots or
/// another width. `words` picks the mat-vec's lane-per-word dot where the format has one
/// ([`int8_word_dot`]).
pub fn int8_source(ty: GgmlType, nc: u32, red: Reduction, words: bool) -> Option<String> {
    let (mut dot, mut unit) = int8_dot(ty)?;
    let common = format!("{BINDINGS}\n{DOT_INT8}\n{DOT_INT8_WORDS}\n{BYTES}\n{K_QUANTS}\n");
    match (nc, red) {
        // Each format's runs (`int8_runs.wgsl`) are named as its dot, `i8_` for `dot8_`.
        (TILE_WIDTH, _) => Some(format!(
            "const NC: u32 = {nc}u;\nconst TM: u32 = {TILE_ROWS}u;\n{common}\n{INT8_RUNS}\n\
             {TILED_TILE}\n{}",
            MATMUL_TILED_INT8.replace("DEQUANT8", &dot.replace("dot8_", "i8_"))
        )),
        (1, _) if red.subgroups() => {
            if let Some(word) = int8_word_dot(ty).filter(|_| words) {
                (dot, unit) = word;
            }
            Some(format!(
                "const UNIT: u32 = {unit}u;\nconst NC: u32 = 1u;\n{common}\n{}",
                subgroup_skeleton(red, dot)
            ))
        }
        _ => None,
    }
}

/// How a matmul kernel adds up the partial sums of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// The lanes of a subgroup, with `subgroupAdd`; each workgroup owns `rows` rows, a
    /// subgroup each (`matmul_subgroup.wgsl`).
    Subgroup { rows: u32 },
    /// The 64 threads of a workgroup on one row, each subgroup's lanes with `subgroupAdd`
    /// and the subgroups' sums in shared memory (`matmul_split.wgsl`): more reads in
    /// flight per row, for GPUs whose memory needs them.
    SplitRow,
    /// The 64 threads of a workgroup (one row), in shared memory with barriers: for
    /// adapters without subgroup operations.
    Shared,
}

impl Reduction {
    /// Whether the kernels use subgroup operations (and so have the one-token dots).
    pub fn subgroups(self) -> bool {
        !matches!(self, Reduction::Shared)
    }
}

/// The subgroup mat-vec skeleton `red` names with `dot` as its unit's dot, its constants
/// but UNIT and NC put before it.
fn subgroup_skeleton(red: Reduction, dot: &str) -> String {
    match red {
        Reduction::Subgroup { rows } => {
            format!(
                "const ROWS: u32 = {rows}u;\n{}",
                MATMUL_SUBGROUP.replace("DOT", dot)
            )
        }
        _ => MATMUL_SPLIT.replace("DOT", dot),
    }
}

/// The matmul shader for `ty` with `nc` activation rows per workgroup (the tiled matmul
/// for [`TILE_WIDTH`]), summing by `red`; `None` for a format the kernels do not read.
pub fn shader_source(ty: GgmlType, nc: u32, red: Reduction) -> Option<String> {
    let (name, file) = dequant_fn(ty)?;
    if nc == TILE_WIDTH {
        return Some(
            format!(
                "const NC: u32 = {nc}u;\nconst TM: u32 = {TILE_ROWS}u;\n{BINDINGS}\n{INPUT_F32}\n\
                 {TILED_TILE}\n{}\n{BYTES}\n{file}\n",
                MATMUL_TILED
            )
            .replace("DEQUANT", name),
        );
    }
    let source = match red {
        Reduction::Subgroup { .. } | Reduction::SplitRow => {
            // The wide kernels serve one activation row (generation); batches keep the
            // chunked one, which dequantizes eight weights once for all its rows.
            let (dot, unit, wide) = match wide_fn(ty).filter(|_| nc == 1) {
                // The wide Q4_K dot reuses the K-quant scale helpers.
                Some((dot, unit)) if file == K_QUANTS => (dot, unit, WIDE.to_string()),
                Some((dot, unit)) => (dot, unit, format!("{K_QUANTS}\n{WIDE}")),
                None => ("chunk_dot", 8, String::new()),
            };
            format!(
                "const UNIT: u32 = {unit}u;\nconst NC: u32 = {nc}u;\n\
                 {BINDINGS}\n{INPUT_F32}\n{}\n{BYTES}\n{file}\n{wide}\n",
                subgroup_skeleton(red, dot)
            )
        }
        Reduction::Shared => format!(
            "const NC: u32 = {nc}u;\n{BINDINGS}\n{INPUT_F32}\n{MATMUL_SHARED}\n{BYTES}\n{file}\n"
        ),
    };
    Some(source.replace("DEQUANT", name))
}

/// One of each kind of [`Reduction`], for [`all_sources`].
const REDUCTIONS: [Reduction; 3] = [
    Reduction::Subgroup { rows: 8 },
    Reduction::SplitRow,
    Reduction::Shared,
];

/// (name, WGSL) of every shader the crate can build: each format's mat-vec at each batch
/// width with each reduction and its tiled matmul, the layer ops, attention and the copy
/// kernel. For the translation tests.
pub fn all_sources() -> Vec<(String, String)> {
    let mut all = vec![("copy".to_string(), COPY.to_string())];
    all.extend(crate::resident::op_sources());
    for ty in SHADER_TYPES {
        for nc in BATCH_WIDTHS {
            for red in REDUCTIONS {
                let source = shader_source(ty, nc, red).expect("every listed type has a shader");
                all.push((format!("{ty} x{nc} {red:?}"), source));
            }
        }
        let tiled = shader_source(ty, TILE_WIDTH, Reduction::Shared).expect("listed type");
        all.push((format!("{ty} tiled"), tiled));
        for red in REDUCTIONS.into_iter().filter(|r| r.subgroups()) {
            if let Some(int8) = int8_source(ty, 1, red, false) {
                all.push((format!("{ty} x1 int8 {red:?}"), int8));
            }
            if int8_word_dot(ty).is_some() {
                let words = int8_source(ty, 1, red, true);
                all.push((
                    format!("{ty} x1 int8 words {red:?}"),
                    words.expect("quantized"),
                ));
            }
        }
        if let Some(int8) = int8_source(ty, TILE_WIDTH, Reduction::Shared, false) {
            all.push((format!("{ty} tiled int8"), int8));
        }
    }
    all
}
