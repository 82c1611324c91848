//! Dot products and matmuls of quantized rows, the way ggml computes them on the CPU.
//!
//! An activation row is quantized once to the weight format's partner type
//! ([`crate::vec_dot_type`]: Q8_0, Q8_1, Q8_K, or the float type itself) with
//! [`Kernels::quantize_activation`], then dotted with each weight row in integer arithmetic
//! by the format's kernel. The kernels are collected in a [`Kernels`] table of function
//! pointers: the scalar references from `formats/` (always compiled, on every target), and
//! on x86_64 an AVX2 + FMA (+ F16C) table with SIMD code for every format, an AVX-VNNI
//! table (the AVX2 one with `dpbusd` in the 32-weight formats' row and tile kernels, for
//! CPUs without AVX-512), and an AVX-512 table that adds VNNI to the tiled kernels; on
//! aarch64 a NEON table, a `dotprod` (`sdot`) table and an `i8mm` table (`dotprod` plus
//! `smmla` batch kernels), all giving the scalar reference's bits exactly (`neon.rs` for
//! the 32-weight and float formats, `neon_k.rs` for the K-quants and IQ4_XS, `i8mm.rs` for
//! the batches). A batch of two or more activation rows takes the tiled kernels
//! (`tiled.rs`, `tiled_k.rs`, `tiled_float.rs` for F16 and BF16 on x86_64, `i8mm.rs` on
//! aarch64) where the table has them; they give the row kernels' bits. The table is
//! chosen once per process ([`kernels`]); `LOUPE_KERNELS=scalar|avx2|avxvnni|avx512|auto`
//! (x86_64) or `scalar|neon|dotprod|i8mm|auto` (aarch64) forces a choice.
//!
//! Rows are byte slices as they sit in the memory map or a scratch buffer; they become
//! blocks in [`crate::cast`], which borrows when the address suits the block's alignment
//! (at most 4 bytes: a memory-mapped tensor or a `Vec<u32>`-backed buffer) and copies
//! otherwise.

use std::ops::Range;
use std::sync::OnceLock;

use crate::formats::*;
use crate::packed::{PackedRows, PACKED_ROWS};
use crate::{cast, BlockFormat, GgmlType, QuantError};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod interleaved;
#[cfg(target_arch = "x86_64")]
mod interleaved_k;
#[cfg(target_arch = "x86_64")]
mod tiled;
#[cfg(target_arch = "x86_64")]
mod tiled_float;
#[cfg(target_arch = "x86_64")]
mod tiled_k;
#[cfg(target_arch = "x86_64")]
pub use tiled::TiledIsa;

#[cfg(target_arch = "aarch64")]
mod i8mm;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_k;

/// A dot product of a weight row (blocks `W`) with an activation row (blocks `A`) of the
/// same number of elements.
pub type DotFn<W, A> = fn(&[W], &[A]) -> f32;

/// An activation quantizer: `x` (a whole number of blocks) into `out` (that many blocks).
pub type QuantizeFn<B> = fn(&[f32], &mut [B]);

/// One implementation of every dot product, and of the Q8_0 activation quantizer.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    name: &'static str,
    pub f32: DotFn<BlockF32, BlockF32>,
    pub f16: DotFn<BlockF16, BlockF16>,
    pub bf16: DotFn<BlockBf16, BlockBf16>,
    pub q4_0: DotFn<BlockQ4_0, BlockQ8_0>,
    pub q4_1: DotFn<BlockQ4_1, BlockQ8_1>,
    pub q5_0: DotFn<BlockQ5_0, BlockQ8_0>,
    pub q5_1: DotFn<BlockQ5_1, BlockQ8_1>,
    pub q8_0: DotFn<BlockQ8_0, BlockQ8_0>,
    pub iq4_nl: DotFn<BlockIq4Nl, BlockQ8_0>,
    pub q2_k: DotFn<BlockQ2K, BlockQ8K>,
    pub q3_k: DotFn<BlockQ3K, BlockQ8K>,
    pub q4_k: DotFn<BlockQ4K, BlockQ8K>,
    pub q5_k: DotFn<BlockQ5K, BlockQ8K>,
    pub q6_k: DotFn<BlockQ6K, BlockQ8K>,
    pub iq4_xs: DotFn<BlockIq4Xs, BlockQ8K>,
    /// Activations to Q8_0 as ggml-cpu does at run time on x86 (see
    /// [`q8_0::quantize_activation`]). Q8_1 and Q8_K activations are always scalar: one
    /// per row, cheap next to the dot products.
    pub quantize_q8_0: QuantizeFn<BlockQ8_0>,
    /// The matmul for batches of activation rows (`tiled.rs`, `tiled_k.rs`,
    /// `interleaved.rs`), where this table has one: it gives the same bits as `vec_dot`
    /// row by row, only faster.
    #[cfg(target_arch = "x86_64")]
    tiled: Option<TiledIsa>,
    /// Whether batches take the `smmla` kernels (`i8mm.rs`), which give the same bits as
    /// `vec_dot` row by row.
    #[cfg(target_arch = "aarch64")]
    smmla: bool,
}

fn quantize_q8_0_scalar(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK32)) {
        *b = q8_0::quantize_activation(x);
    }
}

/// The scalar references, on every target.
const SCALAR: Kernels = Kernels {
    name: "scalar",
    f32: f32::vec_dot,
    f16: f16::vec_dot,
    bf16: bf16::vec_dot,
    q4_0: q4_0::vec_dot,
    q4_1: q4_1::vec_dot,
    q5_0: q5_0::vec_dot,
    q5_1: q5_1::vec_dot,
    q8_0: q8_0::vec_dot,
    iq4_nl: iq4_nl::vec_dot,
    q2_k: k_quants::q2_k::vec_dot,
    q3_k: k_quants::q3_k::vec_dot,
    q4_k: k_quants::q4_k::vec_dot,
    q5_k: k_quants::q5_k::vec_dot,
    q6_k: k_quants::q6_k::vec_dot,
    iq4_xs: iq4_xs::vec_dot,
    quantize_q8_0: quantize_q8_0_scalar,
    #[cfg(target_arch = "x86_64")]
    tiled: None,
    #[cfg(target_arch = "aarch64")]
    smmla: false,
};
static SCALAR_TABLE: Kernels = SCALAR;

/// AVX2 + FMA where written, scalar elsewhere. Never hand this out without detecting
/// both features (see `avx2.rs`).
#[cfg(target_arch = "x86_64")]
static AVX2_TABLE: Kernels = Kernels {
    name: "avx2",
    q4_0: avx2::q4_0_q8_0,
    q4_1: avx2::q4_1_q8_1,
    q5_0: avx2::q5_0_q8_0,
    q5_1: avx2::q5_1_q8_1,
    q8_0: avx2::q8_0_q8_0,
    iq4_nl: avx2::iq4_nl_q8_0,
    q2_k: avx2::q2_k_q8_k,
    q3_k: avx2::q3_k_q8_k,
    q4_k: avx2::q4_k_q8_k,
    q5_k: avx2::q5_k_q8_k,
    q6_k: avx2::q6_k_q8_k,
    iq4_xs: avx2::iq4_xs_q8_k,
    quantize_q8_0: avx2::quantize_q8_0,
    f16: avx2::f16_f16,
    bf16: avx2::bf16_bf16,
    tiled: Some(TiledIsa::Avx2),
    ..SCALAR
};

/// The AVX2 table with AVX-VNNI's 256-bit `dpbusd` (VEX) for `maddubs` + `madd` in the
/// 32-weight formats' row and tile kernels: the same i32 sums, so the same bits (tested
/// through the AVX-512 VL instantiation of the same code, `AVX2_VL_TABLE`). For CPUs
/// with AVX-VNNI but not AVX-512 (Alder Lake on). The K-quants keep AVX2: their `madd` by
/// per-group i16 scales needs the i16 pair sums that `dpbusd` skips. Never hand this out
/// without detecting every feature (see [`cpu_has_avxvnni`]).
#[cfg(target_arch = "x86_64")]
static AVXVNNI_TABLE: Kernels = Kernels {
    name: "avxvnni",
    q4_0: avx2::q4_0_q8_0_avxvnni,
    q4_1: avx2::q4_1_q8_1_avxvnni,
    q5_0: avx2::q5_0_q8_0_avxvnni,
    q5_1: avx2::q5_1_q8_1_avxvnni,
    q8_0: avx2::q8_0_q8_0_avxvnni,
    iq4_nl: avx2::iq4_nl_q8_0_avxvnni,
    tiled: Some(TiledIsa::AvxVnni),
    ..AVX2_TABLE
};

/// [`AVXVNNI_TABLE`]'s code with AVX-512 VL's encoding of `dpbusd` (EVEX), for the tests:
/// it runs on AVX-512 machines and shares every line but the instruction with the
/// AVX-VNNI table, which such machines may lack. Handed out only with the AVX-512 table's
/// features (see [`cpu_has_avx512`]).
#[cfg(all(test, target_arch = "x86_64"))]
static AVX2_VL_TABLE: Kernels = Kernels {
    name: "avx2-vl",
    q4_0: avx2::q4_0_q8_0_vl,
    q4_1: avx2::q4_1_q8_1_vl,
    q5_0: avx2::q5_0_q8_0_vl,
    q5_1: avx2::q5_1_q8_1_vl,
    q8_0: avx2::q8_0_q8_0_vl,
    iq4_nl: avx2::iq4_nl_q8_0_vl,
    tiled: Some(TiledIsa::Avx512VlVnni),
    ..AVX2_TABLE
};

/// The AVX2 row kernels, with the batch kernels on AVX-512 VNNI (`dpbusd`, 32 vector
/// registers) giving the same bits. (A 512-bit row kernel, two blocks per register, ran
/// no faster than AVX2: a lone row is bound by its per-block scale work, which only
/// repacking removes, see `packed.rs`. Nor did the 32-weight row kernels with VL's 256-bit
/// `dpbusd` for `maddubs` + `madd`, `AVX2_VL_TABLE`'s: `gemm_bench 4096 4096 1` and
/// `dot_bench`, one thread, differed by less than the run-to-run noise of a shared
/// machine, ±30%.) Never hand this out without detecting every feature (see
/// [`cpu_has_avx512`]).
#[cfg(target_arch = "x86_64")]
static AVX512_TABLE: Kernels = Kernels {
    name: "avx512",
    tiled: Some(TiledIsa::Avx512Vnni),
    ..AVX2_TABLE
};

/// NEON, the aarch64 baseline: a kernel for every format, each giving the scalar
/// reference's bits (see `neon.rs` and `neon_k.rs`).
#[cfg(target_arch = "aarch64")]
static NEON_TABLE: Kernels = Kernels {
    name: "neon",
    q4_0: neon::q4_0_q8_0,
    q8_0: neon::q8_0_q8_0,
    q4_1: neon::q4_1_q8_1,
    q5_0: neon::q5_0_q8_0,
    q5_1: neon::q5_1_q8_1,
    iq4_nl: neon::iq4_nl_q8_0,
    f32: neon::f32_f32,
    f16: neon::f16_f16,
    bf16: neon::bf16_bf16,
    quantize_q8_0: neon::quantize_q8_0,
    q2_k: neon_k::q2_k_q8_k,
    q3_k: neon_k::q3_k_q8_k,
    q4_k: neon_k::q4_k_q8_k,
    q5_k: neon_k::q5_k_q8_k,
    q6_k: neon_k::q6_k_q8_k,
    iq4_xs: neon_k::iq4_xs_q8_k,
    smmla: false,
};

/// The NEON table with `sdot` (Armv8.2 dot product) where it pays: the formats whose
/// reference sums a block's products in one integer (Q2_K folds its scales into the
/// quants first; the other K-quants keep eight lanes by element index, which `sdot`'s
/// groups of four consecutive bytes would mix, see `neon_k.rs`). Never hand this out without
/// detecting the feature (see [`cpu_has_dotprod`]).
#[cfg(target_arch = "aarch64")]
static DOTPROD_TABLE: Kernels = Kernels {
    name: "dotprod",
    q4_0: neon::q4_0_q8_0_sdot,
    q8_0: neon::q8_0_q8_0_sdot,
    q4_1: neon::q4_1_q8_1_sdot,
    q5_0: neon::q5_0_q8_0_sdot,
    q5_1: neon::q5_1_q8_1_sdot,
    iq4_nl: neon::iq4_nl_q8_0_sdot,
    q2_k: neon_k::q2_k_q8_k_sdot,
    iq4_xs: neon_k::iq4_xs_q8_k_sdot,
    ..NEON_TABLE
};

/// The `dotprod` table with batch kernels on `smmla` (Armv8.6 int8 matrix multiply) for
/// the formats whose partner is Q8_0 or Q8_1, and IQ4_XS, giving the same bits (see
/// `i8mm.rs`). Never hand this out without detecting both features (see
/// [`cpu_has_i8mm`]).
#[cfg(target_arch = "aarch64")]
static I8MM_TABLE: Kernels = Kernels {
    name: "i8mm",
    smmla: true,
    ..DOTPROD_TABLE
};

/// Whether this CPU runs the `dotprod` table (aarch64 with `sdot`).
pub fn cpu_has_dotprod() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// Whether this CPU runs the `i8mm` table (aarch64 with `sdot` and `smmla`).
pub fn cpu_has_i8mm() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        cpu_has_dotprod() && std::arch::is_aarch64_feature_detected!("i8mm")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

/// The NEON table, on every aarch64 CPU.
pub fn neon() -> Option<&'static Kernels> {
    #[cfg(target_arch = "aarch64")]
    return Some(&NEON_TABLE);
    #[allow(unreachable_code)]
    None
}

/// The `dotprod` table when this CPU can run it.
pub fn dotprod() -> Option<&'static Kernels> {
    #[cfg(target_arch = "aarch64")]
    if cpu_has_dotprod() {
        return Some(&DOTPROD_TABLE);
    }
    None
}

/// The `i8mm` table when this CPU can run it.
pub fn i8mm() -> Option<&'static Kernels> {
    #[cfg(target_arch = "aarch64")]
    if cpu_has_i8mm() {
        return Some(&I8MM_TABLE);
    }
    None
}

/// Whether this CPU runs the AVX2 table.
pub fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-512 table: the AVX2 table's features plus AVX-512 F,
/// BW, VL, DQ and VNNI.
pub fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpu_has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-VNNI table: the AVX2 table's features plus AVX-VNNI.
pub fn cpu_has_avxvnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpu_has_avx2() && is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The scalar reference table, on any CPU.
pub fn scalar() -> &'static Kernels {
    &SCALAR_TABLE
}

/// The AVX2 table when this CPU can run it.
pub fn avx2() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx2() {
        return Some(&AVX2_TABLE);
    }
    None
}

/// The AVX-VNNI table when this CPU can run it.
pub fn avxvnni() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avxvnni() {
        return Some(&AVXVNNI_TABLE);
    }
    None
}

/// The tests' AVX-512 VL instantiation of the AVX-VNNI table's code, when this CPU runs
/// the AVX-512 table (x86_64 only: its test does not exist elsewhere).
#[cfg(all(test, target_arch = "x86_64"))]
fn avx2_vl() -> Option<&'static Kernels> {
    cpu_has_avx512().then_some(&AVX2_VL_TABLE)
}

/// The AVX-512 table when this CPU can run it.
pub fn avx512() -> Option<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx512() {
        return Some(&AVX512_TABLE);
    }
    None
}

/// Every table this CPU runs, slowest first: scalar, then avx2, avxvnni and avx512
/// (x86_64) or neon, dotprod and i8mm (aarch64) where present.
pub fn available() -> Vec<&'static Kernels> {
    std::iter::once(scalar())
        .chain(avx2())
        .chain(avxvnni())
        .chain(avx512())
        .chain(neon())
        .chain(dotprod())
        .chain(i8mm())
        .collect()
}

/// The names `LOUPE_KERNELS` accepts besides `auto` on this architecture.
#[cfg(target_arch = "x86_64")]
const TABLE_NAMES: &[&str] = &["scalar", "avx2", "avxvnni", "avx512"];
#[cfg(target_arch = "aarch64")]
const TABLE_NAMES: &[&str] = &["scalar", "neon", "dotprod", "i8mm"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TABLE_NAMES: &[&str] = &["scalar"];

/// The table this process uses, chosen on first call: the fastest the CPU runs, unless
/// `LOUPE_KERNELS` asks for one by name (`scalar`, `avx2`, `avxvnni`, `avx512` on x86_64;
/// `scalar`, `neon`, `dotprod`, `i8mm` on aarch64). An unknown value, or a table
/// this CPU cannot run, falls back to the fastest available, with a warning kept in
/// [`kernels_note`] for the application to show.
pub fn kernels() -> &'static Kernels {
    selection().0
}

/// Why the table in use differs from what `LOUPE_KERNELS` asked for, if it does.
pub fn kernels_note() -> Option<&'static str> {
    selection().1.as_deref()
}

fn selection() -> &'static (&'static Kernels, Option<String>) {
    static SELECTED: OnceLock<(&'static Kernels, Option<String>)> = OnceLock::new();
    SELECTED.get_or_init(|| {
        let request = std::env::var("LOUPE_KERNELS").ok();
        select(request.as_deref(), &available())
    })
}

/// The choice [`kernels`] makes for the value of `LOUPE_KERNELS` (`None` when unset),
/// given the tables this CPU runs (slowest first, never empty): the table, and a warning
/// when the request could not be honoured.
fn select(
    request: Option<&str>,
    available: &[&'static Kernels],
) -> (&'static Kernels, Option<String>) {
    let best = available.last().copied().unwrap_or(&SCALAR_TABLE);
    match request.map(str::trim) {
        None | Some("") | Some("auto") => (best, None),
        Some(name) => match available.iter().find(|k| k.name == name) {
            Some(k) => (k, None),
            None if TABLE_NAMES.contains(&name) => (
                best,
                Some(format!(
                    "LOUPE_KERNELS={name}, but this CPU lacks the features it needs; using {} kernels",
                    best.name
                )),
            ),
            None => (
                best,
                Some(format!(
                    "LOUPE_KERNELS={name:?} is not one of auto, {}; using {} kernels",
                    TABLE_NAMES.join(", "),
                    best.name
                )),
            ),
        },
    }
}

/// Run `$body` with `$f` bound to the table's kernel for weight type `$ty` (each arm is
/// its own instantiation, so `$body` may be generic over the block types).
macro_rules! with_dot {
    ($k:expr, $ty:expr, |$f:ident| $body:expr) => {{
        use GgmlType::*;
        match $ty {
            F32 => {
                let $f = $k.f32;
                $body
            }
            F16 => {
                let $f = $k.f16;
                $body
            }
            BF16 => {
                let $f = $k.bf16;
                $body
            }
            Q4_0 => {
                let $f = $k.q4_0;
                $body
            }
            Q4_1 => {
                let $f = $k.q4_1;
                $body
            }
            Q5_0 => {
                let $f = $k.q5_0;
                $body
            }
            Q5_1 => {
                let $f = $k.q5_1;
                $body
            }
            Q8_0 => {
                let $f = $k.q8_0;
                $body
            }
            IQ4_NL => {
                let $f = $k.iq4_nl;
                $body
            }
            Q2_K => {
                let $f = $k.q2_k;
                $body
            }
            Q3_K => {
                let $f = $k.q3_k;
                $body
            }
            Q4_K => {
                let $f = $k.q4_k;
                $body
            }
            Q5_K => {
                let $f = $k.q5_k;
                $body
            }
            Q6_K => {
                let $f = $k.q6_k;
                $body
            }
            IQ4_XS => {
                let $f = $k.iq4_xs;
                $body
            }
            ty => Err(QuantError::Unsupported { ty }),
        }
    }};
}

impl Kernels {
    /// Whether [`Kernels::matmul_packed`] runs on this table (AVX-512 VNNI): loaders
    /// repack matrices into [`PackedRows`] only then.
    pub fn runs_packed(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.tiled == Some(TiledIsa::Avx512Vnni)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// out (n_act_rows, rows.len()) = act · wᵀ for rows `rows` of a matrix repacked at
    /// load (Q4_0, Q5_0, Q4_K or Q6_K), against activation rows in its partner type (Q8_0,
    /// Q8_K): one token or a batch. `rows` starts on a [`PACKED_ROWS`] boundary. Every dot is bit for
    /// bit this table's `vec_dot` of the row before repacking: repacking changes where the
    /// bytes are, not the results.
    pub fn matmul_packed(
        &self,
        w: &PackedRows,
        act: &[u8],
        n_act_rows: usize,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let (n_rows, n_cols, ty) = (w.rows(), w.cols(), w.ty());
        let partner = crate::vec_dot_type(ty).ok_or(QuantError::Unsupported { ty })?;
        check_rows(partner, n_cols, n_act_rows, act.len())?;
        check_rows_and_out(&rows, n_rows, n_act_rows, out.len())?;
        if !rows.start.is_multiple_of(PACKED_ROWS) {
            return Err(QuantError::PackedRowsUnaligned {
                start: rows.start,
                end: rows.end,
                tile: PACKED_ROWS,
            });
        }
        if !self.runs_packed() {
            return Err(QuantError::NoPackedKernel { table: self.name });
        }
        if n_cols == 0 || rows.is_empty() || n_act_rows == 0 {
            out.fill(0.0);
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (k, n, b) = (n_cols / ty.block_elems(), rows.len(), ACT_BLOCK_BYTES);
            if n_act_rows >= decode_packed_from(ty) {
                let w = tiled::Weights::Packed {
                    w,
                    from: rows.start,
                    n,
                };
                return match ty {
                    GgmlType::Q5_0 => {
                        interleaved::matmul::<BlockQ5_0, BlockQ8_0>(w, n_cols, act, out, b)
                    }
                    GgmlType::Q6_K => interleaved_k::matmul::<BlockQ6K>(w, n_cols, act, out, b),
                    _ => Err(QuantError::Unsupported { ty }),
                };
            }
            use crate::packed::{BlockQ4Kx16, BlockQ4_0x16, BlockQ5_0x16, BlockQ6Kx16};
            let q8k = || cast::as_blocks::<BlockQ8K>(act);
            let q8_0 = || cast::as_blocks::<BlockQ8_0>(act);
            match ty {
                GgmlType::Q4_K => {
                    let tiles: &[BlockQ4Kx16] = w.tiles(rows);
                    interleaved_k::matmul_kx16(tiles, k, n, &q8k()?, out, b)
                }
                GgmlType::Q6_K => {
                    let tiles: &[BlockQ6Kx16] = w.tiles(rows);
                    interleaved_k::matmul_kx16(tiles, k, n, &q8k()?, out, b)
                }
                GgmlType::Q5_0 => {
                    let tiles: &[BlockQ5_0x16] = w.tiles(rows);
                    interleaved::matmul_x16(tiles, k, n, &q8_0()?, out, b)
                }
                _ => {
                    let tiles: &[BlockQ4_0x16] = w.tiles(rows);
                    interleaved::matmul_x16(tiles, k, n, &q8_0()?, out, b)
                }
            }
        }
        Ok(())
    }

    /// "scalar", "avx2", "avxvnni", "avx512", "neon", "dotprod" or "i8mm".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The dot product of one weight row of type `ty` with one activation row already in
    /// [`crate::vec_dot_type`]`(ty)`, both `n` elements. Errors (never panics) when `ty`
    /// has no kernel, `n` is not a whole number of blocks, or a row has the wrong length.
    pub fn vec_dot(
        &self,
        ty: GgmlType,
        n: usize,
        w_row: &[u8],
        act_row: &[u8],
    ) -> Result<f32, QuantError> {
        let act_ty = dot_partner(ty)?;
        check_rows(ty, n, 1, w_row.len())?;
        check_rows(act_ty, n, 1, act_row.len())?;
        with_dot!(self, ty, |f| dot_bytes(f, w_row, act_row))
    }

    /// `out[a * rows.len() + (r - rows.start)] = dot(weight row r, activation row a)` for
    /// every weight row `r` in `rows` and activation row `a` in `0..n_act_rows`.
    ///
    /// `w` is the whole weight matrix, `n_rows` rows of `n_cols` elements of type `ty`;
    /// `act` holds `n_act_rows` rows of `n_cols` elements in `vec_dot_type(ty)`. `out` is
    /// the tile for `rows`: with `rows = 0..n_rows` it is the full `(n_act_rows, n_rows)`
    /// result, and with one activation row it is `result[rows]`, so a thread pool hands
    /// each thread a disjoint `rows` and its own slice. Everything is validated once, up
    /// front; the loop itself allocates nothing (unless `w` or `act` is misaligned for its
    /// blocks, see [`crate::cast`]).
    ///
    /// The weight row is the outer loop, so each row is read from memory once and reused
    /// from cache for every activation row.
    #[allow(clippy::too_many_arguments)] // the shapes are the interface; a struct would only rename them
    pub fn matmul(
        &self,
        ty: GgmlType,
        w: &[u8],
        n_rows: usize,
        n_cols: usize,
        act: &[u8],
        n_act_rows: usize,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        self.matmul_in_blocks(
            ty,
            w,
            n_rows,
            n_cols,
            act,
            n_act_rows,
            rows,
            out,
            ACT_BLOCK_BYTES,
        )
    }

    /// [`Kernels::matmul`] with the tiled kernels' activation block size as a parameter,
    /// so tests can cross block edges with a few rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_in_blocks(
        &self,
        ty: GgmlType,
        w: &[u8],
        n_rows: usize,
        n_cols: usize,
        act: &[u8],
        n_act_rows: usize,
        rows: Range<usize>,
        out: &mut [f32],
        act_block_bytes: usize,
    ) -> Result<(), QuantError> {
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = act_block_bytes; // no batch kernels here
        let act_ty = dot_partner(ty)?;
        let w_row_bytes = check_rows(ty, n_cols, n_rows, w.len())?;
        check_rows(act_ty, n_cols, n_act_rows, act.len())?;
        check_rows_and_out(&rows, n_rows, n_act_rows, out.len())?;
        if n_cols == 0 || rows.is_empty() || n_act_rows == 0 {
            out.fill(0.0);
            return Ok(());
        }
        let w = &w[rows.start * w_row_bytes..rows.end * w_row_bytes];
        #[cfg(target_arch = "x86_64")]
        if let (Some(isa), true) = (self.tiled, n_act_rows >= MIN_TILED_ACT_ROWS) {
            use GgmlType::*;
            type TiledFn =
                fn(TiledIsa, &[u8], usize, &[u8], &mut [f32], usize) -> Result<(), QuantError>;
            let tiled: Option<TiledFn> = match ty {
                Q4_0 => Some(tiled::matmul::<BlockQ4_0, BlockQ8_0>),
                Q5_0 => Some(tiled::matmul::<BlockQ5_0, BlockQ8_0>),
                Q8_0 => Some(tiled::matmul::<BlockQ8_0, BlockQ8_0>),
                Q4_1 => Some(tiled::matmul::<BlockQ4_1, BlockQ8_1>),
                Q5_1 => Some(tiled::matmul::<BlockQ5_1, BlockQ8_1>),
                IQ4_NL => Some(tiled::matmul::<BlockIq4Nl, BlockQ8_0>),
                Q2_K => Some(tiled_k::matmul::<BlockQ2K>),
                Q3_K => Some(tiled_k::matmul::<BlockQ3K>),
                Q4_K => Some(tiled_k::matmul::<BlockQ4K>),
                Q5_K => Some(tiled_k::matmul::<BlockQ5K>),
                Q6_K => Some(tiled_k::matmul::<BlockQ6K>),
                F16 => Some(tiled_float::matmul::<BlockF16>),
                BF16 => Some(tiled_float::matmul::<BlockBf16>),
                IQ4_XS => Some(tiled_k::matmul::<BlockIq4Xs>),
                _ => None,
            };
            if let Some(tiled) = tiled {
                return tiled(isa, w, n_cols, act, out, act_block_bytes);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if self.smmla && n_act_rows >= MIN_TILED_ACT_ROWS {
            use GgmlType::*;
            type BatchFn = fn(&[u8], usize, &[u8], &mut [f32], usize) -> Result<(), QuantError>;
            let batch: Option<BatchFn> = match ty {
                Q4_0 => Some(i8mm::matmul::<BlockQ4_0>),
                Q4_1 => Some(i8mm::matmul::<BlockQ4_1>),
                Q5_0 => Some(i8mm::matmul::<BlockQ5_0>),
                Q5_1 => Some(i8mm::matmul::<BlockQ5_1>),
                Q8_0 => Some(i8mm::matmul::<BlockQ8_0>),
                IQ4_NL => Some(i8mm::matmul::<BlockIq4Nl>),
                IQ4_XS => Some(i8mm::matmul::<BlockIq4Xs>),
                _ => None,
            };
            if let Some(batch) = batch {
                return batch(w, n_cols, act, out, act_block_bytes);
            }
        }
        with_dot!(self, ty, |f| matmul_blocks(f, w, n_cols, act, out))
    }

    /// Quantize one or more activation rows (`x`, a whole number of blocks) to `ty`, the
    /// partner format of some weight type, into `out` (exactly `ty.row_bytes(x.len())`
    /// bytes). Q8_0 and Q8_1 follow ggml-cpu's x86 run-time quantizer (not the `_ref` one:
    /// see [`q8_0::quantize_activation`]); Q8_K, F16, BF16 and F32 are
    /// [`crate::quantize_row`], which is what ggml-cpu runs for them too.
    pub fn quantize_activation(
        &self,
        ty: GgmlType,
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), QuantError> {
        use GgmlType::*;
        match ty {
            Q8_0 => {
                check_rows(ty, x.len(), 1, out.len())?;
                cast::with_blocks_mut::<BlockQ8_0, _>(out, |b| (self.quantize_q8_0)(x, b))
            }
            Q8_1 => {
                check_rows(ty, x.len(), 1, out.len())?;
                cast::with_blocks_mut::<BlockQ8_1, _>(out, |blocks| {
                    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK32)) {
                        *b = q8_1::quantize_activation(x);
                    }
                })
            }
            Q8_K | F32 | F16 | BF16 => crate::quantize_row(ty, x, out),
            _ => Err(QuantError::Unsupported { ty }),
        }
    }
}

/// The smallest batch that takes the tiled matmul: with one activation row there is
/// nothing to share a decoded weight block with.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const MIN_TILED_ACT_ROWS: usize = 2;

/// Weight rows the batch kernels decode together (one per i32 lane of the AVX-512
/// kernel): a thread's share of a batched matmul should be a whole number of them, or
/// its last tile is partly padding.
pub const BATCH_TILE_ROWS: usize = 16;
const _: () = assert!(BATCH_TILE_ROWS.is_multiple_of(PACKED_ROWS));

/// Prepared activation bytes the tiled kernels hold in one block while every weight tile
/// passes over it: about one core's share of an L3 cache. At 2 MB a 4096 x 14336 Q8_0
/// matmul of 512 rows runs at 48 MAC/ns (one thread), at 4 MB 61, at 8 MB 55, unblocked
/// 24 (`gemm_bench 4096 14336 512`).
const ACT_BLOCK_BYTES: usize = 4 << 20;

/// [`Kernels::vec_dot`] with the table [`kernels`] chose.
pub fn vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act_row: &[u8]) -> Result<f32, QuantError> {
    kernels().vec_dot(ty, n, w_row, act_row)
}

/// [`Kernels::matmul`] with the table [`kernels`] chose.
#[allow(clippy::too_many_arguments)] // see Kernels::matmul
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    n_cols: usize,
    act: &[u8],
    n_act_rows: usize,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    kernels().matmul(ty, w, n_rows, n_cols, act, n_act_rows, rows, out)
}

/// [`Kernels::quantize_activation`] with the table [`kernels`] chose (every table
/// produces the same bytes).
pub fn quantize_activation(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    kernels().quantize_activation(ty, x, out)
}

/// The activation type of a weight type that has a dot kernel.
fn dot_partner(ty: GgmlType) -> Result<GgmlType, QuantError> {
    match crate::vec_dot_type(ty) {
        Some(p) if !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K) => Ok(p),
        _ => Err(QuantError::Unsupported { ty }),
    }
}

/// `n_rows` rows of `n` elements of `ty` must be whole blocks and exactly `bytes` long;
/// returns the bytes of one row.
/// `rows` lies within a matrix of `n_rows` rows, and the output holds exactly one value
/// per (activation row, weight row).
fn check_rows_and_out(
    rows: &Range<usize>,
    n_rows: usize,
    n_act_rows: usize,
    out_len: usize,
) -> Result<(), QuantError> {
    if rows.start > rows.end || rows.end > n_rows {
        return Err(QuantError::RowsOutOfRange {
            start: rows.start,
            end: rows.end,
            n_rows,
        });
    }
    let expected = n_act_rows * rows.len();
    if out_len != expected {
        return Err(QuantError::WrongOutputLength {
            expected,
            got: out_len,
        });
    }
    Ok(())
}

fn check_rows(ty: GgmlType, n: usize, n_rows: usize, bytes: usize) -> Result<usize, QuantError> {
    if !n.is_multiple_of(ty.block_elems()) {
        return Err(QuantError::NotWholeBlocks { ty, elems: n });
    }
    let row = n / ty.block_elems() * ty.block_bytes();
    let elems = n.checked_mul(n_rows);
    let expected = row.checked_mul(n_rows);
    match (elems, expected) {
        (Some(_), Some(e)) if e == bytes => Ok(row),
        _ => Err(QuantError::WrongByteLength {
            ty,
            elems: elems.unwrap_or(usize::MAX),
            expected: expected.unwrap_or(usize::MAX),
            got: bytes,
        }),
    }
}

fn dot_bytes<W: BlockFormat, A: BlockFormat>(
    dot: DotFn<W, A>,
    w: &[u8],
    a: &[u8],
) -> Result<f32, QuantError> {
    let w = cast::as_blocks::<W>(w)?;
    let a = cast::as_blocks::<A>(a)?;
    Ok(dot(&w, &a))
}

/// The matmul loop over validated, non-empty inputs: `w` holds exactly the rows of the
/// tile, `act` every activation row, `out` the tile.
fn matmul_blocks<W: BlockFormat, A: BlockFormat>(
    dot: DotFn<W, A>,
    w: &[u8],
    n_cols: usize,
    act: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let w = cast::as_blocks::<W>(w)?;
    let act = cast::as_blocks::<A>(act)?;
    let w_blocks = n_cols / W::ELEMS;
    let a_blocks = n_cols / A::ELEMS;
    let n_tile = w.len() / w_blocks;
    for (r, w_row) in w.chunks_exact(w_blocks).enumerate() {
        for (a, act_row) in act.chunks_exact(a_blocks).enumerate() {
            out[a * n_tile + r] = dot(w_row, act_row);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// From how many activation rows a matmul by packed weights of type `ty` runs the batch
/// kernel on its tiles put back and decoded, rather than the packed kernel: decoding
/// once per tile beats the packed kernel's unpacking per pair of activation rows once
/// enough rows share it. `gemm_bench 4096 4096 BATCH`, one thread, packed vs put back
/// (MAC/ns): Q5_0 at 32 rows 66 vs 60, 64: 66 vs 74, 512: 68 vs 93; Q6_K at 64 rows 66 vs
/// 48, 128: 67 vs 68, 512: 66 vs 81; Q4_K never gains (512: 80 vs 82), Q4_0 has nothing
/// to decode.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the packed kernels are x86's
fn decode_packed_from(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q5_0 => 64,
        GgmlType::Q6_K => 128,
        _ => usize::MAX,
    }
}
