//! The WGSL sources: one matmul skeleton (`matmul.wgsl`) specialized per weight format by
//! naming that format's dequantize function, and per number of activation rows each
//! workgroup carries.

use loupe_quant::GgmlType;

const MATMUL: &str = include_str!("shaders/matmul.wgsl");
const BYTES: &str = include_str!("shaders/bytes.wgsl");
const FLOAT: &str = include_str!("shaders/float.wgsl");
const LEGACY: &str = include_str!("shaders/legacy.wgsl");
const K_QUANTS: &str = include_str!("shaders/k_quants.wgsl");

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

/// The matmul shader for `ty` with `nc` activation rows per workgroup; `None` for a
/// format the kernels do not read.
pub fn shader_source(ty: GgmlType, nc: u32) -> Option<String> {
    let (name, file) = dequant_fn(ty)?;
    Some(format!(
        "const NC: u32 = {nc}u;\n{}\n{BYTES}\n{file}\n",
        MATMUL.replace("DEQUANT", name)
    ))
}
