//! Parsing a GGUF header, metadata and tensor directory out of a byte slice.
//!
//! Every length read from the file is checked against the bytes that remain before it is
//! used to allocate or slice, with overflow-checked arithmetic, so no input can make the
//! parser panic or allocate more than a small multiple of the input's size.

use std::collections::HashSet;

use byteorder::{ByteOrder, LittleEndian as LE};
use loupe_quant::GgmlType;

use super::error::{GgufError, Result};
use super::metadata::Metadata;
use super::value::{Array, Value, ValueType};
use super::TensorInfo;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused rather than recursed into.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// What the header and directory say; tensor data stays in the caller's bytes.
#[derive(Debug, Clone)]
pub struct Directory {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the tensor data section.
    pub data_offset: u64,
}

/// Parse `bytes` (a whole GGUF file) and validate its tensor directory against its size.
pub fn parse(bytes: &[u8]) -> Result<Directory> {
    let mut c = Cursor { bytes, pos: 0 };

    let magic = c.take(4, "the magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: [magic[0], magic[1], magic[2], magic[3]],
        });
    }
    let version = c.u32("the version")?;
    if version & 0xffff == 0 && version != 0 {
        // A small version number written big-endian reads as a huge little-endian one.
        return Err(GgufError::BigEndian { raw: version });
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let tensor_count_at = c.pos;
    let tensor_count = c.u64("the tensor count")?;
    let kv_count_at = c.pos;
    let kv_count = c.u64("the metadata count")?;

    // Each key-value pair takes at least 13 bytes, each tensor entry at least 32.
    c.check_count(kv_count, 13, kv_count_at, "metadata count")?;
    c.check_count(tensor_count, 32, tensor_count_at, "tensor count")?;

    let mut metadata = Metadata::default();
    for _ in 0..kv_count {
        let key_at = c.pos;
        let key = c.string("a metadata key")?;
        let value = c.value_tagged(&key)?;
        if metadata.get(&key).is_some() {
            return Err(GgufError::Malformed {
                offset: key_at as u64,
                what: format!("metadata key {key:?} appears twice"),
            });
        }
        metadata.push(key, value);
    }

    let alignment = match metadata.get(ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(other) => {
            return Err(GgufError::WrongType {
                key: ALIGNMENT_KEY.into(),
                expected: "a u32 power of two",
                found: other.describe(),
            })
        }
    };

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        tensors.push(c.tensor_info()?);
    }

    let data_offset = align_up(c.pos as u64, alignment).ok_or_else(|| GgufError::Malformed {
        offset: c.pos as u64,
        what: "data offset overflows".into(),
    })?;
    validate_tensors(&tensors, data_offset, bytes.len() as u64, alignment)?;

    Ok(Directory {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// `x` rounded up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Types, sizes, bounds, alignment, overlap and name uniqueness of every tensor.
fn validate_tensors(
    tensors: &[TensorInfo],
    data_offset: u64,
    file_len: u64,
    align: u64,
) -> Result<()> {
    let data_len = file_len.saturating_sub(data_offset);
    let mut names = HashSet::with_capacity(tensors.len());
    let mut spans = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let err = |field, problem: String| GgufError::Tensor {
            name: t.name.clone(),
            field,
            offset: t.entry_offset,
            problem,
        };
        if !names.insert(t.name.as_str()) {
            return Err(err("name", "appears twice in the tensor directory".into()));
        }
        if t.offset % align != 0 {
            return Err(err(
                "offset",
                format!(
                    "data offset {} is not a multiple of the alignment {align}",
                    t.offset
                ),
            ));
        }
        let n_bytes = t.n_bytes();
        let end = t.offset.checked_add(n_bytes).filter(|&e| e <= data_len).ok_or_else(|| {
            err(
                "offset",
                format!(
                    "data at {}..+{} runs past the end of the file (data section is {data_len} bytes from byte {data_offset})",
                    t.offset, n_bytes
                ),
            )
        })?;
        spans.push((t.offset, end, i));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            let t = &tensors[b];
            return Err(GgufError::Tensor {
                name: t.name.clone(),
                field: "offset",
                offset: t.entry_offset,
                problem: format!(
                    "data at {b_start} overlaps tensor {:?}, which ends at {a_end}",
                    tensors[a].name
                ),
            });
        }
    }
    Ok(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.pos as u64,
                what: what.to_string(),
                need: n,
                have: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// Refuse a count whose elements, at `min_len` bytes each, could not fit in what remains.
    fn check_count(&self, count: u64, min_len: u64, at: usize, what: &str) -> Result<()> {
        match count.checked_mul(min_len) {
            Some(need) if need <= self.remaining() => Ok(()),
            _ => Err(GgufError::Malformed {
                offset: at as u64,
                what: format!(
                    "{what} {count} cannot fit in the {} bytes that remain",
                    self.remaining()
                ),
            }),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(LE::read_u16(self.take(2, what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(LE::read_u32(self.take(4, what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(LE::read_u64(self.take(8, what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| GgufError::Malformed {
            offset: at,
            what: format!(
                "{what} is not valid UTF-8 (bad byte at +{})",
                e.utf8_error().valid_up_to()
            ),
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos as u64;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::Malformed {
                offset: at,
                what: format!("{what}: bool byte is {b}, expected 0 or 1"),
            }),
        }
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType> {
        let at = self.pos as u64;
        let id = self.u32("a value type")?;
        ValueType::from_id(id).ok_or_else(|| GgufError::Malformed {
            offset: at,
            what: format!("metadata key {key:?}: unknown value type {id}"),
        })
    }

    fn value_tagged(&mut self, key: &str) -> Result<Value> {
        let ty = self.value_type(key)?;
        self.value(ty, key)
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value> {
        let what = || format!("the value of {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(&what())?),
            ValueType::I8 => Value::I8(self.u8(&what())? as i8),
            ValueType::U16 => Value::U16(self.u16(&what())?),
            ValueType::I16 => Value::I16(self.u16(&what())? as i16),
            ValueType::U32 => Value::U32(self.u32(&what())?),
            ValueType::I32 => Value::I32(self.u32(&what())? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(&what())?)),
            ValueType::Bool => Value::Bool(self.bool(&what())?),
            ValueType::String => Value::String(self.string(&what())?),
            ValueType::Array => Value::Array(self.array(key, 1)?),
            ValueType::U64 => Value::U64(self.u64(&what())?),
            ValueType::I64 => Value::I64(self.u64(&what())? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(&what())?)),
        })
    }

    fn array(&mut self, key: &str, depth: u32) -> Result<Array> {
        let at = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::Malformed {
                offset: at as u64,
                what: format!("metadata key {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            });
        }
        let elem = self.value_type(key)?;
        let count_at = self.pos;
        let count = self.u64("an array length")?;
        self.check_count(
            count,
            elem.min_encoded_len(),
            count_at,
            &format!("metadata key {key:?}: array length"),
        )?;
        let n = count as usize;
        let what = format!("an element of {key:?}");
        // Fixed-size elements are read from one checked slice.
        macro_rules! fixed {
            ($variant:ident, $size:expr, $read:expr) => {{
                let raw = self.take(count * $size, &what)?;
                Array::$variant(raw.chunks_exact($size).map($read).collect())
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(count, &what)?.to_vec()),
            ValueType::I8 => fixed!(I8, 1, |b| b[0] as i8),
            ValueType::U16 => fixed!(U16, 2, LE::read_u16),
            ValueType::I16 => fixed!(I16, 2, LE::read_i16),
            ValueType::U32 => fixed!(U32, 4, LE::read_u32),
            ValueType::I32 => fixed!(I32, 4, LE::read_i32),
            ValueType::F32 => fixed!(F32, 4, LE::read_f32),
            ValueType::U64 => fixed!(U64, 8, LE::read_u64),
            ValueType::I64 => fixed!(I64, 8, LE::read_i64),
            ValueType::F64 => fixed!(F64, 8, LE::read_f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(&what)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(&what)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let entry_offset = self.pos as u64;
        let name = self.string("a tensor name")?;
        let err = |field, problem: String| GgufError::Tensor {
            name: name.clone(),
            field,
            offset: entry_offset,
            problem,
        };
        let n_dims = self.u32("a tensor's dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(err(
                "n_dims",
                format!("{n_dims} dimensions, expected 1 to {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for i in 0..n_dims {
            let d = self.u64("a tensor dimension")?;
            // ggml holds dimensions as i64.
            if d == 0 || d > i64::MAX as u64 {
                return Err(err("dims", format!("dimension {i} is {d}")));
            }
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| err("dims", format!("element count overflows at dimension {i}")))?;
            dims.push(d);
        }
        let type_at = self.pos as u64;
        let type_id = self.u32("a tensor type")?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::Tensor {
            name: name.clone(),
            field: "type",
            offset: type_at,
            problem: format!("unknown type id {type_id}"),
        })?;
        if dims[0] % ty.block_elems() as u64 != 0 {
            return Err(err(
                "dims",
                format!(
                    "row length {} is not a multiple of {ty}'s block of {}",
                    dims[0],
                    ty.block_elems()
                ),
            ));
        }
        if ty.row_bytes(n_elements).is_none() {
            return Err(err(
                "dims",
                format!("byte size of {n_elements} {ty} elements overflows"),
            ));
        }
        let offset = self.u64("a tensor offset")?;
        Ok(TensorInfo {
            name,
            ty,
            dims,
            offset,
            entry_offset,
            part: 0,
        })
    }
}
