//! The packed 6-bit (scale, min) pairs of Q4_K and Q5_K: eight sub-blocks, 8 × 2 × 6 = 96
//! bits in 12 bytes.
//!
//! Bytes 0..4 hold scales 0..3 in their low 6 bits, bytes 4..8 hold mins 0..3 likewise.
//! Pairs 4..7 keep their low 4 bits in bytes 8..12 (scale in the low nibble, min in the
//! high nibble) and their top 2 bits in the spare top bits of bytes 0..4 (scale) and
//! 4..8 (min).

use super::K_SCALE_SIZE;

/// The (scale, min) of sub-block `j` (0..8), each 0..=63.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// The inverse of [`scale_min_k4`] for all eight pairs (values must fit in 6 bits).
pub fn pack_scale_min_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_by_hand_layout() {
        // Pair 5: scale 0b11_0110 (54), min 0b10_1001 (41).
        let mut q = [0u8; 12];
        q[9] = 0b0110 | (0b1001 << 4); // low 4 bits of both, byte 8 + 1
        q[1] = 0b11 << 6; // top bits of scale 5 above scale 1
        q[5] = 0b10 << 6; // top bits of min 5 above min 1
        assert_eq!(scale_min_k4(5, &q), (54, 41));
        assert_eq!(scale_min_k4(1, &q), (0, 0)); // the top bits do not leak into pair 1
        q[2] = 0b11_1111;
        q[6] = 0b00_0001;
        assert_eq!(scale_min_k4(2, &q), (63, 1));
    }

    #[test]
    fn pack_round_trips() {
        let sc = [0, 1, 17, 63, 32, 5, 48, 63];
        let m = [63, 2, 0, 40, 33, 15, 16, 7];
        let q = pack_scale_min_k4(sc, m);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], m[j]), "pair {j}");
        }
    }
}
