//! The one place where bytes become blocks.
//!
//! Tensor data arrives as `&[u8]` borrowed from a memory map (or a scratch buffer) at any
//! offset. Turning it into `&[Block]` is only sound when the length is a whole number of
//! blocks and the address suits the block's alignment; `bytemuck::try_cast_slice` checks
//! both, and every block type is `Pod` (any bit pattern is a valid value), so no `unsafe`
//! is needed here. When the address is misaligned the bytes are copied into an aligned
//! buffer instead of failing: rows of GGUF tensors are aligned in practice, so the copy is
//! the rare path, not the hot one.

use std::borrow::Cow;

use bytemuck::PodCastError;

use crate::{BlockFormat, QuantError};

/// View `bytes` as blocks of `B`, borrowing when the address is aligned for `B` and
/// copying otherwise. Fails only when `bytes` is not a whole number of blocks.
pub fn as_blocks<B: BlockFormat>(bytes: &[u8]) -> Result<Cow<'_, [B]>, QuantError> {
    check_whole::<B>(bytes.len())?;
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => Ok(Cow::Borrowed(blocks)),
        Err(PodCastError::TargetAlignmentGreaterAndInputNotAligned) => Ok(Cow::Owned(
            bytes
                .chunks_exact(B::BYTES)
                .map(bytemuck::pod_read_unaligned::<B>)
                .collect(),
        )),
        Err(e) => unreachable!("length was checked, yet the cast failed: {e:?}"),
    }
}

/// Run `f` over `bytes` viewed as mutable blocks of `B`. When `bytes` is misaligned for `B`,
/// `f` works on an aligned copy that is written back afterwards.
pub fn with_blocks_mut<B: BlockFormat, R>(
    bytes: &mut [u8],
    f: impl FnOnce(&mut [B]) -> R,
) -> Result<R, QuantError> {
    check_whole::<B>(bytes.len())?;
    match bytemuck::try_cast_slice_mut::<u8, B>(bytes) {
        Ok(blocks) => Ok(f(blocks)),
        Err(PodCastError::TargetAlignmentGreaterAndInputNotAligned) => {
            let mut tmp: Vec<B> = bytes
                .chunks_exact(B::BYTES)
                .map(bytemuck::pod_read_unaligned::<B>)
                .collect();
            let r = f(&mut tmp);
            bytes.copy_from_slice(bytemuck::cast_slice(&tmp));
            Ok(r)
        }
        Err(e) => unreachable!("length was checked, yet the cast failed: {e:?}"),
    }
}

fn check_whole<B: BlockFormat>(len: usize) -> Result<(), QuantError> {
    if len.is_multiple_of(B::BYTES) {
        Ok(())
    } else {
        Err(QuantError::PartialBlock {
            ty: B::TYPE,
            bytes: len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{BlockQ4_0, BlockQ8K};
    use crate::F16;

    #[test]
    fn aligned_bytes_are_borrowed_and_misaligned_ones_copied() {
        // A u32 buffer is 4-aligned; offset 0 borrows, offset 1 must copy.
        let mut words = vec![0u32; 2 * 292 / 4 + 1];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let aligned = &bytes[..2 * 292];
        let got = as_blocks::<BlockQ8K>(aligned).unwrap();
        assert!(matches!(got, Cow::Borrowed(_)));
        assert_eq!(got.len(), 2);

        let shifted = &bytes[1..1 + 2 * 292];
        let got = as_blocks::<BlockQ8K>(shifted).unwrap();
        assert!(matches!(got, Cow::Owned(_)));
        assert_eq!(bytemuck::cast_slice::<BlockQ8K, u8>(&got), shifted);
    }

    #[test]
    fn partial_blocks_are_rejected() {
        let bytes = [0u8; 19];
        assert_eq!(
            as_blocks::<BlockQ4_0>(&bytes).unwrap_err(),
            QuantError::PartialBlock {
                ty: crate::GgmlType::Q4_0,
                bytes: 19
            }
        );
    }

    #[test]
    fn misaligned_writes_land_in_the_bytes() {
        let mut words = vec![0u16; 19];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let dst = &mut bytes[1..1 + 36];
        with_blocks_mut::<BlockQ4_0, _>(dst, |blocks| {
            assert_eq!(blocks.len(), 2);
            blocks[1].d = F16(0x1234);
            blocks[1].qs[15] = 0xAB;
        })
        .unwrap();
        assert_eq!(&dst[18..20], &0x1234u16.to_ne_bytes());
        assert_eq!(dst[35], 0xAB);
    }
}
