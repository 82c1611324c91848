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

// The byte at o as a signed 8-bit value.
fn i8_at(o: u32) -> i32 {
    return bitcast<i32>(u8_at(o) << 24u) >> 24u;
}

// The scale of sub-block ib of the IQ4_XS super-block at ob: 6 bits (the low four in
// its scale bytes, the high two in its 16-bit word), 32 above the multiplier.
fn iq4_xs_scale(ob: u32, ib: u32) -> i32 {
    let low = (u8_at(ob + 4u + (ib >> 1u)) >> (4u * (ib & 1u))) & 15u;
    let high = (u16_at(ob + 2u) >> (2u * ib)) & 3u;
    return i32(low | (high << 4u)) - 32;
}

fn u16_at(o: u32) -> u32 {
    return u32_at(o) & 0xffffu;
}

fn f16_at(o: u32) -> f32 {
    return unpack2x16float(u16_at(o)).x;
}

// The eight bytes at o as two words.
fn u64_at(o: u32) -> vec2<u32> {
    return vec2<u32>(u32_at(o), u32_at(o + 4u));
}

// Bits `shift..shift+width` of each byte of a word (width given as a mask), as four
// floats: four weights' fields in one vector step.
fn fields4(v: u32, shift: u32, mask: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(mask));
}

// Each byte of a word as a signed 8-bit value.
fn signed4(v: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Bits `first..first+4` of a word, one per lane.
fn bits4(v: u32, first: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u));
}

// 16 bytes from byte offset o (any alignment) as four words, the first byte lowest.
fn bytes16(o: u32) -> vec4<u32> {
    let i = o >> 2u;
    let a = vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
    let s = (o & 3u) * 8u;
    if s == 0u {
        return a;
    }
    let b = vec4<u32>(w[i + 1u], w[i + 2u], w[i + 3u], w[i + 4u]);
    return (a >> vec4<u32>(s)) | (b << vec4<u32>(32u - s));
}
