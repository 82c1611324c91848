// Reading the weight buffer `w` (u32 words, little-endian) at any byte offset: GGUF blocks
// are packed back to back with sizes that are not multiples of four. The buffer is padded
// with one spare word, so a read that straddles the last word stays inside it.

// Eight dequantized weights.
struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn u8_at(o: u32) -> u32 {
    return (w[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

// Four bytes from byte offset o, the first in the low bits.
fn u32_at(o: u32) -> u32 {
    let s = (o & 3u) * 8u;
    let a = w[o >> 2u];
    if s == 0u {
        return a;
    }
    return (a >> s) | (w[(o >> 2u) + 1u] << (32u - s));
}

fn u16_at(o: u32) -> u32 {
    return u32_at(o) & 0xffffu;
}

fn f16_at(o: u32) -> f32 {
    return unpack2x16float(u16_at(o)).x;
}

// Byte k (0..3) of a word.
fn byte_of(v: u32, k: u32) -> u32 {
    return (v >> (k * 8u)) & 0xffu;
}

// The eight bytes at o as two words.
fn u64_at(o: u32) -> vec2<u32> {
    return vec2<u32>(u32_at(o), u32_at(o + 4u));
}

// Byte k (0..7) of eight bytes.
fn byte8(v: vec2<u32>, k: u32) -> u32 {
    return byte_of(select(v.y, v.x, k < 4u), k & 3u);
}

// Byte k of each of the eight bytes, shifted right and masked: one field per weight.
fn fields8(v: vec2<u32>, shift: u32, mask: u32) -> array<u32, 8> {
    var f: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        f[k] = (byte8(v, k) >> shift) & mask;
    }
    return f;
}

fn w8_from(v: array<f32, 8>) -> W8 {
    return W8(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}
