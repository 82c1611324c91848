//! Row-level tests: round trips within ggml's error bounds, the byte-length and type
//! errors, and the agreement of the type tables with the block types.

use super::*;

/// A tiny seeded xorshift64* generator, so no test depends on a rand crate.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// ggml test-quantize-fns' synthetic data: `0.1 + amplitude * cos(i + offset)`.
fn ggml_synthetic(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + amplitude * (i as f32 + offset).cos())
        .collect()
}

/// ggml test-quantize-fns' error measure: sqrt of the summed squared error, divided by n.
fn ggml_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

/// Random rows with varied block magnitudes, a few zero blocks and outliers.
fn random_row(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift(seed);
    let mut x = Vec::with_capacity(n);
    for block in 0..n.div_ceil(32) {
        let scale = match block % 5 {
            0 => 0.0,
            1 => 1e-3,
            2 => 1.0,
            3 => 30.0,
            _ => 1e4,
        };
        for _ in 0..32 {
            let mut v = rng.unit() * scale;
            if rng.next_u64().is_multiple_of(17) {
                v *= 4.0;
            }
            x.push(v);
        }
    }
    x.truncate(n);
    x
}

fn round_trip(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![0.0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    (q, y)
}

const QUANTIZABLE: [GgmlType; 10] = {
    use GgmlType::*;
    [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K]
};

#[test]
fn synthetic_round_trip_within_ggml_bound() {
    // ggml's MAX_QUANTIZATION_TOTAL_ERROR on its own 4096-element test signal.
    let x = ggml_synthetic(0.0, 32 * 128, 2.0);
    for ty in QUANTIZABLE {
        let (_, y) = round_trip(ty, &x);
        let err = ggml_rmse(&x, &y);
        println!("{ty:>6}: ggml total error {err:.6}");
        assert!(err < 0.002, "{ty}: total error {err}");
    }
}

/// The largest error a value may have after a round trip, given its block's extremes.
/// The scale is rounded to f16 before the quants are decoded with it, which adds up to
/// `levels * |d - f16(d)|` on top of half a step; f16 keeps 11 significant bits, fewer
/// below 2^-14 where its absolute error stays under 2^-25.
fn element_bound(ty: GgmlType, v: f32, block: &[f32]) -> f32 {
    use GgmlType::*;
    let amax = block.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let min = block.iter().fold(f32::MAX, |a, &v| a.min(v));
    let max = block.iter().fold(-f32::MAX, |a, &v| a.max(v));
    let f16_err = |d: f32| (d.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
    let slack = 1e-6 * amax;
    match ty {
        F32 => 0.0,
        F16 => f16_err(v),
        BF16 => v.abs() * 2f32.powi(-8),
        // The extreme's opposite gets clamped one step short: a whole step of error.
        Q4_0 => amax / 8.0 + 8.0 * f16_err(amax / 8.0) + slack,
        Q5_0 => amax / 16.0 + 16.0 * f16_err(amax / 16.0) + slack,
        Q4_1 | Q5_1 => {
            let levels = if ty == Q4_1 { 15.0 } else { 31.0 };
            let step = (max - min) / levels;
            0.5 * step + levels * f16_err(step) + f16_err(min) + slack
        }
        Q8_0 | Q8_1 => {
            let step = amax / 127.0;
            0.5 * step + 127.0 * f16_err(step) + slack
        }
        Q8_K => 0.5 * amax / 127.0 + slack,
        _ => unreachable!(),
    }
}

#[test]
fn random_round_trip_error_per_element() {
    for ty in QUANTIZABLE {
        let x = random_row(256 * 10, 0x5EED_0000 + ty.id() as u64);
        let (_, y) = round_trip(ty, &x);
        let bs = ty.block_elems();
        let mut worst = 0.0f32;
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            let block = &x[i / bs * bs..(i / bs + 1) * bs];
            let bound = element_bound(ty, a, block);
            let err = (a - b).abs();
            assert!(
                err <= bound,
                "{ty}: element {i}: {a} came back as {b} (bound {bound})"
            );
            if bound > 0.0 {
                worst = worst.max(err / bound);
            }
        }
        println!("{ty:>6}: largest error / bound = {worst:.3}");
    }
}

#[test]
fn zero_blocks_round_trip_to_zero() {
    for ty in QUANTIZABLE {
        let x = vec![0.0f32; 512];
        let (_, y) = round_trip(ty, &x);
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
}

#[test]
fn q8_k_bsums_and_q8_1_sum_are_consistent() {
    let x = random_row(256 * 4, 7);
    let (q, _) = round_trip(GgmlType::Q8_K, &x);
    for b in cast::as_blocks::<BlockQ8K>(&q).unwrap().iter() {
        for (g, &s) in b.bsums.iter().enumerate() {
            let sum: i32 = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(sum, s as i32);
        }
    }
    let (q, _) = round_trip(GgmlType::Q8_1, &x);
    for b in cast::as_blocks::<BlockQ8_1>(&q).unwrap().iter() {
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        let d = b.d.to_f32();
        let s = b.s.to_f32();
        // s was computed from the f32 d, then rounded to f16 (which is coarse below 2^-14).
        let want = sum as f32 * d;
        let tol = want.abs() * 2e-3 + 2f32.powi(-24) * (1.0 + sum.abs() as f32);
        assert!((s - want).abs() <= tol, "s {s} vs {want}");
    }
}

#[test]
fn misaligned_buffers_give_the_same_results() {
    let x = random_row(512, 99);
    for ty in QUANTIZABLE
        .into_iter()
        .chain([GgmlType::Q4_K, GgmlType::IQ4_XS])
    {
        let n = ty.row_bytes(512).unwrap() as usize;
        // Quantizable types make real data; the rest take arbitrary bytes.
        let mut aligned = vec![0u64; n / 8 + 2];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
        if can_quantize(ty) {
            quantize_row(ty, &x, &mut bytes[..n]).unwrap();
            let mut shifted = vec![0u8; n + 1];
            quantize_row(ty, &x, &mut shifted[1..]).unwrap();
            assert_eq!(&shifted[1..], &bytes[..n], "{ty}: quantize");
        } else {
            let mut rng = XorShift(3);
            for b in bytes.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            // Keep the f16 scales finite so the comparison below is meaningful.
            for b in bytes.iter_mut() {
                *b &= 0xBF;
            }
        }
        let mut y0 = vec![0.0f32; 512];
        dequantize_row(ty, &bytes[..n], &mut y0).unwrap();
        let mut copy = vec![0u8; n + 3];
        copy[3..].copy_from_slice(&bytes[..n]);
        let mut y1 = vec![0.0f32; 512];
        dequantize_row(ty, &copy[3..], &mut y1).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y0), bits(&y1), "{ty}: dequantize");
    }
}

#[test]
fn multi_block_rows_decode_block_by_block() {
    let mut rng = XorShift(11);
    let mut bytes = vec![0u8; 3 * 144];
    for b in bytes.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    // Sane f16 scales: d = 0.5, dmin = 0.25 in every block.
    for blk in bytes.chunks_exact_mut(144) {
        blk[0..2].copy_from_slice(&F16::from_f32(0.5).0.to_le_bytes());
        blk[2..4].copy_from_slice(&F16::from_f32(0.25).0.to_le_bytes());
    }
    let mut row = vec![0.0f32; 768];
    dequantize_row(GgmlType::Q4_K, &bytes, &mut row).unwrap();
    for (i, blk) in bytes.chunks_exact(144).enumerate() {
        let b: BlockQ4K = bytemuck::pod_read_unaligned(blk);
        let mut y = [0.0f32; 256];
        b.dequantize(&mut y);
        assert_eq!(&row[256 * i..256 * (i + 1)], &y[..]);
    }
}

#[test]
fn length_errors() {
    let mut dst = vec![0.0f32; 64];
    assert_eq!(
        dequantize_row(GgmlType::Q4_0, &[0u8; 35], &mut dst),
        Err(QuantError::WrongByteLength {
            ty: GgmlType::Q4_0,
            elems: 64,
            expected: 36,
            got: 35
        })
    );
    let mut dst = vec![0.0f32; 100];
    assert_eq!(
        dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut dst),
        Err(QuantError::NotWholeBlocks {
            ty: GgmlType::Q4_K,
            elems: 100
        })
    );
    assert_eq!(
        quantize_row(GgmlType::Q8_0, &[0.0; 40], &mut [0u8; 34])
            .unwrap_err()
            .to_string(),
        "Q8_0: 40 elements is not a whole number of 32-element blocks"
    );
    assert_eq!(
        quantize_row(GgmlType::Q8_0, &[0.0; 64], &mut [0u8; 70])
            .unwrap_err()
            .to_string(),
        "Q8_0: 64 elements need 68 bytes, got 70"
    );
    assert_eq!(
        dequantize_row(GgmlType::F32, &[0u8; 8], &mut [0.0; 3]),
        Err(QuantError::WrongByteLength {
            ty: GgmlType::F32,
            elems: 3,
            expected: 12,
            got: 8
        })
    );
    // Empty rows are fine.
    dequantize_row(GgmlType::Q6_K, &[], &mut []).unwrap();
    quantize_row(GgmlType::Q4_1, &[], &mut []).unwrap();
}

#[test]
fn unsupported_types_name_themselves() {
    let err = dequantize_row(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0.0; 256]).unwrap_err();
    assert_eq!(
        err,
        QuantError::Unsupported {
            ty: GgmlType::IQ2_XXS
        }
    );
    assert_eq!(err.to_string(), "type IQ2_XXS (id 16) is not supported");
    assert_eq!(
        quantize_row(GgmlType::IQ2_XS, &[0.0; 256], &mut [0u8; 74])
            .unwrap_err()
            .to_string(),
        "type IQ2_XS (id 17) is not supported"
    );
    for ty in [
        GgmlType::TQ1_0,
        GgmlType::MXFP4,
        GgmlType::I8,
        GgmlType::F64,
    ] {
        let n = ty.block_elems();
        let mut dst = vec![0.0; n];
        let src = vec![0u8; ty.block_bytes()];
        assert_eq!(
            dequantize_row(ty, &src, &mut dst),
            Err(QuantError::Unsupported { ty })
        );
    }
}

#[test]
fn type_tables_agree_with_the_row_functions() {
    for ty in ALL_TYPES {
        let n = ty.block_elems();
        let mut dst = vec![0.0f32; n];
        let src = vec![0u8; ty.block_bytes()];
        let dequantized = dequantize_row(ty, &src, &mut dst);
        assert_eq!(dequantized.is_ok(), ty.is_supported(), "{ty}: is_supported");
        let mut out = vec![0u8; ty.block_bytes()];
        let quantized = quantize_row(ty, &dst, &mut out);
        assert_eq!(quantized.is_ok(), can_quantize(ty), "{ty}: can_quantize");
        assert!(!can_quantize(ty) || ty.is_supported());
        assert_eq!(
            vec_dot_type(ty).is_some(),
            ty.is_supported() && ty != GgmlType::Q8_K
        );
    }
}

#[test]
fn block_types_match_the_type_table() {
    fn check<B: BlockFormat>(dot: Option<GgmlType>) {
        assert_eq!(B::BYTES, B::TYPE.block_bytes(), "{}", B::TYPE);
        assert_eq!(B::ELEMS, B::TYPE.block_elems(), "{}", B::TYPE);
        assert_eq!(B::VEC_DOT_TYPE, dot, "{}", B::TYPE);
        assert_eq!(vec_dot_type(B::TYPE), dot, "{}", B::TYPE);
    }
    use GgmlType::*;
    check::<BlockF32>(Some(F32));
    check::<BlockF16>(Some(F16));
    check::<BlockBf16>(Some(BF16));
    check::<BlockQ4_0>(Some(Q8_0));
    check::<BlockQ4_1>(Some(Q8_1));
    check::<BlockQ5_0>(Some(Q8_0));
    check::<BlockQ5_1>(Some(Q8_1));
    check::<BlockQ8_0>(Some(Q8_0));
    check::<BlockQ8_1>(Some(Q8_1));
    check::<BlockQ2K>(Some(Q8_K));
    check::<BlockQ3K>(Some(Q8_K));
    check::<BlockQ4K>(Some(Q8_K));
    check::<BlockQ5K>(Some(Q8_K));
    check::<BlockQ6K>(Some(Q8_K));
    check::<BlockQ8K>(None);
    check::<BlockIq4Nl>(Some(Q8_0));
    check::<BlockIq4Xs>(Some(Q8_K));
}

#[test]
fn float_rows_convert_like_ggml() {
    let x = [
        1.0f32,
        -0.0,
        65520.0,
        f32::from_bits(0x7FC1_2345),
        1.0 + 2f32.powi(-8),
    ];
    let mut h = [0u8; 10];
    quantize_row(GgmlType::F16, &x, &mut h).unwrap();
    assert_eq!(
        h.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<_>>(),
        [0x3C00, 0x8000, 0x7C00, 0x7E00, 0x3C04]
    );
    let mut b = [0u8; 10];
    quantize_row(GgmlType::BF16, &x, &mut b).unwrap();
    assert_eq!(
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<_>>(),
        [0x3F80, 0x8000, 0x4780, 0x7FC1, 0x3F80]
    );
    let mut f = [0u8; 20];
    quantize_row(GgmlType::F32, &x, &mut f).unwrap();
    let mut y = [0.0f32; 5];
    dequantize_row(GgmlType::F32, &f, &mut y).unwrap();
    assert_eq!(y.map(f32::to_bits), x.map(f32::to_bits));
}
