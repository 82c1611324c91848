//! Shared by the GGUF tests: a small valid file holding every metadata value type, and a
//! map of where its structural fields sit so tests can damage them precisely.
#![allow(dead_code)]

use std::borrow::Cow;

use loupe_gguf::{Array, GgufWriter, Metadata, TensorToWrite, Value};
use loupe_quant::GgmlType;

/// Metadata with every value type, nested arrays, and a few keys a model would have.
pub fn every_value_metadata() -> Metadata {
    let mut m = Metadata::default();
    m.push("general.architecture", Value::String("llama".into()));
    m.push("general.name", Value::String("tiny ünïcode model".into()));
    m.push("t.u8", Value::U8(200));
    m.push("t.i8", Value::I8(-100));
    m.push("t.u16", Value::U16(60000));
    m.push("t.i16", Value::I16(-30000));
    m.push("t.u32", Value::U32(4_000_000_000));
    m.push("t.i32", Value::I32(-2_000_000_000));
    m.push("t.f32", Value::F32(-1.5e-7));
    m.push("t.bool", Value::Bool(true));
    m.push("t.string", Value::String(String::new()));
    m.push("t.u64", Value::U64(u64::MAX));
    m.push("t.i64", Value::I64(i64::MIN));
    m.push("t.f64", Value::F64(std::f64::consts::PI));
    m.push("t.arr.u8", Value::Array(Array::U8(vec![0, 1, 255])));
    m.push("t.arr.i8", Value::Array(Array::I8(vec![-128, 127])));
    m.push("t.arr.u16", Value::Array(Array::U16(vec![1, 65535])));
    m.push("t.arr.i16", Value::Array(Array::I16(vec![-1, 2])));
    m.push("t.arr.u32", Value::Array(Array::U32(vec![7; 5])));
    m.push("t.arr.i32", Value::Array(Array::I32(vec![-7, 0, 7])));
    m.push("t.arr.f32", Value::Array(Array::F32(vec![0.5, -0.0, 1e30])));
    m.push(
        "t.arr.bool",
        Value::Array(Array::Bool(vec![true, false, true])),
    );
    m.push(
        "t.arr.string",
        Value::Array(Array::String(vec!["a".into(), "".into(), "<0x0A>".into()])),
    );
    m.push("t.arr.u64", Value::Array(Array::U64(vec![u64::MAX, 0])));
    m.push(
        "t.arr.i64",
        Value::Array(Array::I64(vec![i64::MIN, i64::MAX])),
    );
    m.push(
        "t.arr.f64",
        Value::Array(Array::F64(vec![f64::MIN_POSITIVE, -2.0])),
    );
    m.push("t.arr.empty", Value::Array(Array::String(vec![])));
    m.push(
        "t.arr.nested",
        Value::Array(Array::Array(vec![
            Array::U32(vec![1, 2]),
            Array::Array(vec![Array::String(vec!["deep".into()]), Array::F32(vec![])]),
            Array::Bool(vec![]),
        ])),
    );
    m
}

/// Tensors of several types; the last has a type loupe cannot decode (IQ2_XXS).
pub fn sample_tensors() -> Vec<TensorToWrite<'static>> {
    let t = |name: &str, ty: GgmlType, dims: Vec<u64>, fill: u8| {
        let n: u64 = dims.iter().product();
        let bytes = ty.row_bytes(n).unwrap() as usize;
        // Small byte values keep f16 scales finite.
        let data: Vec<u8> = (0..bytes)
            .map(|i| (i as u8).wrapping_mul(fill) & 0x3b)
            .collect();
        TensorToWrite {
            name: name.into(),
            ty,
            dims,
            data: Cow::Owned(data),
        }
    };
    vec![
        t("norm.weight", GgmlType::F32, vec![64], 3),
        t("attn.weight", GgmlType::Q8_0, vec![64, 3], 5),
        t("ffn.weight", GgmlType::Q4_K, vec![256, 2], 7),
        t("odd.weight", GgmlType::IQ2_XXS, vec![256], 11),
    ]
}

pub fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new(every_value_metadata());
    for t in sample_tensors() {
        w.add_tensor(t);
    }
    w.to_bytes().unwrap()
}

/// What a structural field is, for damaging it on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Magic,
    Version,
    TensorCount,
    KvCount,
    /// A string's u64 length (keys, string values, tensor names).
    StringLen,
    /// A metadata value's or array element's u32 type tag.
    ValueType,
    ArrayLen,
    /// A bool value byte.
    BoolByte,
    NDims,
    Dim,
    TensorType,
    TensorOffset,
}

/// (byte offset, width in bytes, kind) of every structural field of a valid GGUF, and the
/// offset where tensor data starts.
pub fn field_map(b: &[u8]) -> (Vec<(usize, usize, Field)>, usize) {
    let rd = |p: usize, n: usize| -> u64 {
        let mut v = 0u64;
        for i in 0..n {
            v |= (b[p + i] as u64) << (8 * i);
        }
        v
    };
    let mut f = vec![
        (0, 4, Field::Magic),
        (4, 4, Field::Version),
        (8, 8, Field::TensorCount),
        (16, 8, Field::KvCount),
    ];
    let n_tensors = rd(8, 8);
    let n_kv = rd(16, 8);
    let mut p = 24;
    fn string(p: &mut usize, f: &mut Vec<(usize, usize, Field)>, rd: &dyn Fn(usize, usize) -> u64) {
        f.push((*p, 8, Field::StringLen));
        *p += 8 + rd(*p, 8) as usize;
    }
    fn value(
        ty: u64,
        p: &mut usize,
        f: &mut Vec<(usize, usize, Field)>,
        rd: &dyn Fn(usize, usize) -> u64,
    ) {
        match ty {
            0 | 1 => *p += 1,
            7 => {
                f.push((*p, 1, Field::BoolByte));
                *p += 1
            }
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => string(p, f, rd),
            9 => {
                f.push((*p, 4, Field::ValueType));
                let et = rd(*p, 4);
                *p += 4;
                f.push((*p, 8, Field::ArrayLen));
                let n = rd(*p, 8);
                *p += 8;
                for _ in 0..n {
                    value(et, p, f, rd);
                }
            }
            _ => panic!("bad type {ty}"),
        }
    }
    for _ in 0..n_kv {
        string(&mut p, &mut f, &rd);
        f.push((p, 4, Field::ValueType));
        let ty = rd(p, 4);
        p += 4;
        value(ty, &mut p, &mut f, &rd);
    }
    for _ in 0..n_tensors {
        string(&mut p, &mut f, &rd);
        f.push((p, 4, Field::NDims));
        let nd = rd(p, 4);
        p += 4;
        for _ in 0..nd {
            f.push((p, 8, Field::Dim));
            p += 8;
        }
        f.push((p, 4, Field::TensorType));
        p += 4;
        f.push((p, 8, Field::TensorOffset));
        p += 8;
    }
    let data = p.div_ceil(32) * 32;
    (f, data)
}

/// Overwrite `width` bytes at `at` with `value`, little-endian.
pub fn patch(b: &mut [u8], at: usize, width: usize, value: u64) {
    for i in 0..width {
        b[at + i] = (value >> (8 * i)) as u8;
    }
}
