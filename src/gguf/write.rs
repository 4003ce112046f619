//! A small GGUF header writer: the reader's test partner (proptest
//! round-trips, fuzz seeds, doc examples) and a way to write header-only
//! *sparse* files whose data region is a hole.
//!
//! It writes exactly what it is told — including lies (duplicate names, odd
//! dims), which is what tests need. Tensor offsets are laid out in order,
//! each tensor padded to the alignment, as gguf-py and llama.cpp do.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{GgmlType, Value, ValueType};
use crate::units::pad;

/// Builder for a GGUF header.
#[derive(Clone, Debug)]
pub struct Writer {
    pub version: u32,
    pub big_endian: bool,
    pub alignment: u64,
    kvs: Vec<(Vec<u8>, KvBody)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, u64)>,
    next_offset: u64,
}

#[derive(Clone, Debug)]
enum KvBody {
    Value(Value),
    RawString(Vec<u8>),
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            version: 3,
            big_endian: false,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
            next_offset: 0,
        }
    }

    /// Add a metadata pair. (`general.alignment` is honoured when a `U32`.)
    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        if key == super::KEY_ALIGNMENT {
            if let Some(a) = value.as_u64().filter(|a| a.is_power_of_two()) {
                self.alignment = a;
            }
        }
        self.kvs
            .push((key.as_bytes().to_vec(), KvBody::Value(value)));
        self
    }

    /// Add a string value given as raw (possibly invalid UTF-8) bytes.
    pub fn kv_raw_string(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        self.kvs
            .push((key.as_bytes().to_vec(), KvBody::RawString(bytes.to_vec())));
        self
    }

    /// Add a tensor info at the next aligned offset. Unknown types get a
    /// nominal 1 byte per element for the layout.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> &mut Self {
        let n = ty
            .nbytes(dims)
            .unwrap_or_else(|| dims.iter().fold(1u64, |a, &d| a.saturating_mul(d)));
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, self.next_offset));
        self.next_offset = self.next_offset.saturating_add(pad(n, self.alignment));
        self
    }

    /// Size of the data region the tensors describe.
    pub fn data_len(&self) -> u64 {
        self.next_offset
    }

    fn put_u32(&self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn put_u64(&self, out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn put_str(&self, out: &mut Vec<u8>, s: &[u8]) {
        self.put_u64(out, s.len() as u64);
        out.extend_from_slice(s);
    }

    fn put_value(&self, out: &mut Vec<u8>, v: &Value) {
        let be = self.big_endian;
        macro_rules! num {
            ($x:expr) => {
                out.extend_from_slice(&if be {
                    $x.to_be_bytes()
                } else {
                    $x.to_le_bytes()
                })
            };
        }
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => num!(x),
            Value::I16(x) => num!(x),
            Value::U32(x) => num!(x),
            Value::I32(x) => num!(x),
            Value::F32(x) => num!(x),
            Value::Bool(x) => out.push(u8::from(*x)),
            Value::String(s) => self.put_str(out, s.as_bytes()),
            Value::U64(x) => num!(x),
            Value::I64(x) => num!(x),
            Value::F64(x) => num!(x),
            Value::Array(items) => {
                let elem = items.first().map_or(ValueType::U8, Value::value_type);
                self.put_u32(out, type_id(elem));
                self.put_u64(out, items.len() as u64);
                for it in items {
                    self.put_value(out, it);
                }
            }
            Value::SkippedArray { elem, len } => {
                // Written as zero-filled elements (strings: empty).
                self.put_u32(out, type_id(*elem));
                self.put_u64(out, *len);
                let sz = elem.fixed_size().unwrap_or(8);
                out.resize(out.len() + (sz * len) as usize, 0);
            }
        }
    }

    /// The header bytes, padded to the alignment (no tensor data).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        self.put_u32(&mut out, self.version);
        self.put_u64(&mut out, self.tensors.len() as u64);
        self.put_u64(&mut out, self.kvs.len() as u64);
        for (k, body) in &self.kvs {
            self.put_str(&mut out, k);
            match body {
                KvBody::Value(v) => {
                    self.put_u32(&mut out, type_id(v.value_type()));
                    self.put_value(&mut out, v);
                }
                KvBody::RawString(s) => {
                    self.put_u32(&mut out, type_id(ValueType::String));
                    self.put_str(&mut out, s);
                }
            }
        }
        for (name, dims, ty, off) in &self.tensors {
            self.put_str(&mut out, name.as_bytes());
            self.put_u32(&mut out, dims.len() as u32);
            for d in dims {
                self.put_u64(&mut out, *d);
            }
            self.put_u32(&mut out, ty.0);
            self.put_u64(&mut out, *off);
        }
        let padded = pad(out.len() as u64, self.alignment) as usize;
        out.resize(padded, 0);
        out
    }

    /// Write the header and extend the file to its full apparent size: the
    /// data region is a hole (sparse file), so a "20 GB model" costs a few KB.
    pub fn write_sparse(&self, path: &Path) -> io::Result<()> {
        let header = self.finish();
        let mut f = File::create(path)?;
        f.write_all(&header)?;
        f.set_len(header.len() as u64 + self.data_len())?;
        Ok(())
    }
}

fn type_id(t: ValueType) -> u32 {
    use ValueType::*;
    match t {
        U8 => 0,
        I8 => 1,
        U16 => 2,
        I16 => 3,
        U32 => 4,
        I32 => 5,
        F32 => 6,
        Bool => 7,
        String => 8,
        Array => 9,
        U64 => 10,
        I64 => 11,
        F64 => 12,
    }
}

/// A two-tensor llama header used in docs and tests.
pub fn tiny_example() -> Vec<u8> {
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.embedding_length", Value::U32(64))
        .tensor("token_embd.weight", &[64, 4], GgmlType::F16)
        .tensor("output_norm.weight", &[64], GgmlType::F32);
    w.finish()
}
