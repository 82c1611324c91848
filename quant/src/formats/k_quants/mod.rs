//! The K-quants: super-blocks of `QK_K` = 256 weights split into sub-blocks of 16 or 32,
//! each sub-block with its own small integer scale (and minimum) that is itself scaled by
//! f16 super-block factors. Q8_K is the activation format they are all dotted with.

pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5_k;
pub mod q6_k;
pub mod q8_k;
pub mod scale_min;

pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_k::BlockQ4K;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_k::BlockQ8K;

/// Weights per super-block.
pub const QK_K: usize = 256;

/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;
