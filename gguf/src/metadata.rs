//! The key-value metadata of a GGUF file, in file order, with typed getters whose errors
//! name the key and what was found.

use std::collections::HashMap;

use super::error::{GgufError, Result};
use super::value::{Array, Value};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

macro_rules! int_getter {
    ($name:ident, $opt:ident, $t:ty, $expected:literal) => {
        /// The key as this integer type; any integer type whose value fits is accepted.
        pub fn $name(&self, key: &str) -> Result<$t> {
            self.$opt(key)?.ok_or_else(|| missing(key))
        }
        pub fn $opt(&self, key: &str) -> Result<Option<$t>> {
            let Some(v) = self.get(key) else {
                return Ok(None);
            };
            v.as_i128()
                .and_then(|i| <$t>::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| wrong(key, $expected, v))
        }
    };
}

impl Metadata {
    /// Append a pair, or replace the value of a key already present (keeping its place).
    pub fn push(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    int_getter!(get_u32, get_opt_u32, u32, "an unsigned 32-bit integer");
    int_getter!(get_u64, get_opt_u64, u64, "an unsigned 64-bit integer");
    int_getter!(get_i64, get_opt_i64, i64, "a signed 64-bit integer");

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_opt_str(key)?.ok_or_else(|| missing(key))
    }
    pub fn get_opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(key, "a string", v)),
        }
    }

    /// A float key; f32 and f64 values are accepted (f64 narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_opt_f32(key)?.ok_or_else(|| missing(key))
    }
    pub fn get_opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(f)) => Ok(Some(*f)),
            Some(Value::F64(f)) => Ok(Some(*f as f32)),
            Some(v) => Err(wrong(key, "a float", v)),
        }
    }

    pub fn get_opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong(key, "a bool", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&Array> {
        self.get_opt_array(key)?.ok_or_else(|| missing(key))
    }
    pub fn get_opt_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(wrong(key, "an array", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.get_array(key)? {
            Array::String(v) => Ok(v),
            a => Err(wrong_array(key, "an array of strings", a)),
        }
    }
}

fn missing(key: &str) -> GgufError {
    GgufError::MissingKey { key: key.into() }
}

fn wrong(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.into(),
        expected,
        found: found.describe(),
    }
}

fn wrong_array(key: &str, expected: &'static str, found: &Array) -> GgufError {
    GgufError::WrongType {
        key: key.into(),
        expected,
        found: format!("array of {} {}", found.len(), found.elem_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_name_the_key_and_what_was_found() {
        let mut m = Metadata::default();
        m.push("a.count", Value::U64(7));
        m.push("a.neg", Value::I32(-1));
        m.push("a.name", Value::String("x".into()));
        assert_eq!(m.get_u32("a.count").unwrap(), 7);
        let e = m.get_u32("a.neg").unwrap_err().to_string();
        assert!(e.contains("a.neg") && e.contains("i32 -1"), "{e}");
        let e = m.get_str("a.count").unwrap_err().to_string();
        assert!(e.contains("a.count") && e.contains("u64 7"), "{e}");
        let e = m.get_f32("nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\" is missing"), "{e}");
        assert_eq!(m.get_opt_str("nope").unwrap(), None);
    }

    #[test]
    fn push_replaces_and_remove_keeps_the_index_right() {
        let mut m = Metadata::default();
        m.push("a", Value::U8(1));
        m.push("b", Value::U8(2));
        m.push("c", Value::U8(3));
        m.push("a", Value::U8(9));
        assert_eq!(m.remove("a"), Some(Value::U8(9)));
        assert_eq!(m.get("c"), Some(&Value::U8(3)));
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "c"]);
    }
}
