// Dot products of whole blocks (the subgroup kernel's DOT for one activation row of these
// formats): unit u of a row against the
// same UNIT elements of each of the NC activation rows, added to `acc`. Reads past the
// batch's last activation row are harmless (their sums are never written).

const BYTE_SHIFTS = vec4<u32>(0u, 8u, 16u, 24u);

// The nibbles (`shift` 0: low, 4: high) of a word's four bytes.
fn nibbles(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (BYTE_SHIFTS + shift)) & vec4<u32>(15u));
}

// The first vec4 of activation row col0 + j at element e.
fn x_at(col0: u32, j: u32, e: u32) -> u32 {
    return (p.x_off + (col0 + j) * p.cols + e) / 4u;
}

// Q4_0: a block of 32 (18 bytes): low nibbles weights 0..15, high 16..31, minus 8.
fn dot_q4_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 18u;
    let d = f16_at(ob);
    let q = bytes16(ob + 2u);
    var part: array<f32, NC>;
    for (var k = 0u; k < 4u; k++) {
        let lo = nibbles(q[k], 0u) - 8.0;
        let hi = nibbles(q[k], 4u) - 8.0;
        for (var j = 0u; j < NC; j++) {
            let xo = x_at(col0, j, u * 32u);
            part[j] += dot(lo, x[xo + k]) + dot(hi, x[xo + 4u + k]);
        }
    }
    for (var j = 0u; j < NC; j++) {
        (*acc)[j] += d * part[j];
    }
}

// Q8_0: a block of 32 (34 bytes), signed bytes.
fn dot_q8_0(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + u * 34u;
    let d = f16_at(ob);
    let q0 = bytes16(ob + 2u);
    let q1 = bytes16(ob + 18u);
    var part: array<f32, NC>;
    for (var k = 0u; k < 4u; k++) {
        let a = signed4(q0[k]);
        let b = signed4(q1[k]);
        for (var j = 0u; j < NC; j++) {
            let xo = x_at(col0, j, u * 32u);
            part[j] += dot(a, x[xo + k]) + dot(b, x[xo + 4u + k]);
        }
    }
    for (var j = 0u; j < NC; j++) {
        (*acc)[j] += d * part[j];
    }
}

// Q4_K: a unit is one 64-weight group g of a 144-byte super-block (whose offset is a
// multiple of four): 32 bytes, low nibbles sub-block 2g, high nibbles 2g + 1.
fn dot_q4_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 2u) * 144u;
    let g = u & 3u;
    let dm = unpack2x16float(w[ob >> 2u]);
    let s0 = k4_scale_min(ob + 4u, 2u * g);
    let s1 = k4_scale_min(ob + 4u, 2u * g + 1u);
    let qi = (ob + 16u + 32u * g) >> 2u;
    let d0 = vec4<f32>(dm.x * s0.x);
    let m0 = vec4<f32>(-dm.y * s0.y);
    let d1 = vec4<f32>(dm.x * s1.x);
    let m1 = vec4<f32>(-dm.y * s1.y);
    var part: array<f32, NC>;
    for (var k = 0u; k < 8u; k++) {
        let v = w[qi + k];
        // Each weight as the file defines it, d·q − m, shared by the NC rows.
        let a = fma(nibbles(v, 0u), d0, m0);
        let b = fma(nibbles(v, 4u), d1, m1);
        for (var j = 0u; j < NC; j++) {
            let xo = x_at(col0, j, u * 64u);
            part[j] += dot(a, x[xo + k]) + dot(b, x[xo + 8u + k]);
        }
    }
    for (var j = 0u; j < NC; j++) {
        (*acc)[j] += part[j];
    }
}

// Q6_K: a unit is a quarter k4 of one 128-weight half n of a 210-byte super-block:
// 32 weights, four bits from ql and two from qh, two signed scales (for l < 16, l ≥ 16).
fn dot_q6_k(row_base: u32, u: u32, col0: u32, acc: ptr<function, array<f32, NC>>) {
    let ob = row_base + (u >> 3u) * 210u;
    let n = (u >> 2u) & 1u;
    let k4 = u & 3u;
    let d = f16_at(ob + 208u);
    let sc = ob + 192u + 8u * n + 2u * k4;
    let qlo = ob + 64u * n + 32u * (k4 & 1u);
    let qho = ob + 128u + 32u * n;
    let ls = 4u * (k4 >> 1u);
    let hs = 2u * k4;
    for (var half = 0u; half < 2u; half++) {
        let scale = d * f32(i8_at(sc + half));
        let ql = bytes16(qlo + 16u * half);
        let qh = bytes16(qho + 16u * half);
        var part: array<f32, NC>;
        for (var k = 0u; k < 4u; k++) {
            let l4 = (vec4<u32>(ql[k]) >> (BYTE_SHIFTS + ls)) & vec4<u32>(15u);
            let h4 = (vec4<u32>(qh[k]) >> (BYTE_SHIFTS + hs)) & vec4<u32>(3u);
            let wv = vec4<f32>(l4 | (h4 << vec4<u32>(4u))) - 32.0;
            for (var j = 0u; j < NC; j++) {
                part[j] += dot(wv, x[x_at(col0, j, u * 32u) + 4u * half + k]);
            }
        }
        for (var j = 0u; j < NC; j++) {
            (*acc)[j] += scale * part[j];
        }
    }
}
