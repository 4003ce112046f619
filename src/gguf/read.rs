//! The streaming header parser.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead};
use std::path::Path;

use super::count::CountingReader;
use super::{
    GgmlType, GgufError, Header, TensorInfo, Value, ValueType, DEFAULT_ALIGNMENT, KEY_ALIGNMENT,
    MAX_DIMS,
};
use crate::units::pad;

/// Reader limits.
#[derive(Clone, Debug)]
pub struct Options {
    /// Arrays longer than this are skipped ([`Value::SkippedArray`]): the
    /// tokenizer's `tokens`, `merges`, `scores` and `token_type` arrays hold
    /// 100k+ entries that a planner never needs.
    pub max_array_len: u64,
    /// Total length of the input when known (a local file, a remote
    /// Content-Range). Lets every length field be checked before use.
    pub file_len: Option<u64>,
    /// Maximum nesting depth of arrays of arrays (capped at
    /// [`MAX_DEPTH_CAP`]: the parser recurses once per level).
    pub max_depth: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_array_len: 4096,
            file_len: None,
            max_depth: 8,
        }
    }
}

/// Hard limit on array nesting whatever [`Options::max_depth`] says: each
/// level is a recursive call, and a file of nested empty arrays (12 bytes a
/// level) could otherwise overflow the stack. Real files nest at most 1.
pub const MAX_DEPTH_CAP: usize = 64;

/// Upper bound on tensor and key counts when the file length is unknown.
/// Real models have < 10k tensors; the bound only caps pre-allocation.
const PREALLOC_CAP: u64 = 1 << 16;
/// Upper bound on the elements pre-allocated for one materialised array: the
/// vector grows past it only as elements actually parse, so a huge
/// `max_array_len` cannot turn a lying count into a huge allocation.
const ARRAY_PREALLOC_CAP: u64 = 1 << 12;

struct Cursor<R> {
    r: R,
    pos: u64,
    big_endian: bool,
    file_len: Option<u64>,
}

impl<R: BufRead> Cursor<R> {
    fn io_err(&self, e: io::Error, what: &str) -> GgufError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            GgufError::Truncated {
                offset: self.pos,
                what: what.to_string(),
            }
        } else {
            GgufError::Io {
                offset: self.pos,
                source: e,
            }
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.io_err(e, what))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.bytes::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        let b = self.bytes::<2>(what)?;
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let b = self.bytes::<4>(what)?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let b = self.bytes::<8>(what)?;
        Ok(if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    fn remaining(&self) -> Option<u64> {
        self.file_len.map(|l| l.saturating_sub(self.pos))
    }

    /// Check that `len` bytes can still follow.
    fn check_len(&self, len: u64, what: &str) -> Result<(), GgufError> {
        if let Some(rem) = self.remaining() {
            if len > rem {
                return Err(GgufError::LengthPastEnd {
                    what: what.to_string(),
                    offset: self.pos,
                    len,
                    remaining: rem,
                });
            }
        }
        Ok(())
    }

    /// A length-prefixed string's raw bytes. The buffer grows only as bytes
    /// actually arrive (copied straight out of the reader's buffer), so a
    /// lying length — 2^40 in a 100-byte input — allocates at most what is
    /// present, whether or not the file length is known.
    fn raw_string(&mut self, what: &str) -> Result<Vec<u8>, GgufError> {
        let len = self.u64(what)?;
        self.check_len(len, what)?;
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let pos = self.pos;
            let buf = match self.r.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e, what)),
            };
            if buf.is_empty() {
                return Err(GgufError::Truncated {
                    offset: pos,
                    what: what.to_string(),
                });
            }
            let k = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(&buf[..k]);
            self.r.consume(k);
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(out)
    }

    /// Skip `n` bytes without keeping them.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        self.check_len(n, what)?;
        let mut left = n;
        while left > 0 {
            let pos = self.pos;
            let avail = match self.r.fill_buf() {
                Ok(buf) => buf.len() as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e, what)),
            };
            if avail == 0 {
                return Err(GgufError::Truncated {
                    offset: pos,
                    what: what.to_string(),
                });
            }
            let k = avail.min(left) as usize;
            self.r.consume(k);
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(())
    }

    fn value(
        &mut self,
        ty: ValueType,
        key: &str,
        depth: usize,
        opts: &Options,
    ) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(key)?),
            ValueType::I8 => Value::I8(self.u8(key)? as i8),
            ValueType::U16 => Value::U16(self.u16(key)?),
            ValueType::I16 => Value::I16(self.u16(key)? as i16),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(self.u32(key)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(key)?)),
            ValueType::Bool => Value::Bool(self.u8(key)? != 0),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(self.u64(key)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(key)?)),
            ValueType::String => {
                let raw = self.raw_string(key)?;
                Value::String(String::from_utf8_lossy(&raw).into_owned())
            }
            ValueType::Array => {
                if depth >= opts.max_depth.min(MAX_DEPTH_CAP) {
                    return Err(GgufError::TooDeep {
                        key: key.to_string(),
                        max: opts.max_depth.min(MAX_DEPTH_CAP),
                    });
                }
                let at = self.pos;
                let id = self.u32(key)?;
                let elem = ValueType::from_id(id).ok_or(GgufError::BadValueType {
                    key: key.to_string(),
                    offset: at,
                    id,
                })?;
                let len = self.u64(key)?;
                // Every element takes at least one byte (strings: 8), so a
                // count larger than the rest of the file is a lie.
                let min_elem = elem.fixed_size().unwrap_or(8);
                self.check_len(len.saturating_mul(min_elem), key)?;
                if len > opts.max_array_len {
                    match elem.fixed_size() {
                        Some(sz) => self.skip(len.saturating_mul(sz), key)?,
                        None => {
                            for _ in 0..len {
                                self.skip_value(elem, key, depth + 1, opts)?;
                            }
                        }
                    }
                    Value::SkippedArray { elem, len }
                } else {
                    // `len` is at most `max_array_len`, which a caller may set to
                    // u64::MAX: never trust it for the allocation.
                    let cap = len.min(ARRAY_PREALLOC_CAP).min(
                        self.remaining()
                            .map_or(u64::MAX, |rem| rem / min_elem.max(1)),
                    );
                    let mut v = Vec::with_capacity(cap as usize);
                    for _ in 0..len {
                        v.push(self.value(elem, key, depth + 1, opts)?);
                    }
                    Value::Array(v)
                }
            }
        })
    }

    fn skip_value(
        &mut self,
        ty: ValueType,
        key: &str,
        depth: usize,
        opts: &Options,
    ) -> Result<(), GgufError> {
        match ty.fixed_size() {
            Some(sz) => self.skip(sz, key),
            None if ty == ValueType::String => {
                let len = self.u64(key)?;
                self.skip(len, key)
            }
            None => {
                if depth >= opts.max_depth.min(MAX_DEPTH_CAP) {
                    return Err(GgufError::TooDeep {
                        key: key.to_string(),
                        max: opts.max_depth.min(MAX_DEPTH_CAP),
                    });
                }
                let at = self.pos;
                let id = self.u32(key)?;
                let elem = ValueType::from_id(id).ok_or(GgufError::BadValueType {
                    key: key.to_string(),
                    offset: at,
                    id,
                })?;
                let len = self.u64(key)?;
                self.check_len(len.saturating_mul(elem.fixed_size().unwrap_or(8)), key)?;
                match elem.fixed_size() {
                    Some(sz) => self.skip(len.saturating_mul(sz), key),
                    None => {
                        for _ in 0..len {
                            self.skip_value(elem, key, depth + 1, opts)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Parse a GGUF header from `r`, stopping after the last tensor info.
/// Never reads tensor data.
pub fn read_header<R: BufRead>(r: R, opts: &Options) -> Result<Header, GgufError> {
    let mut c = Cursor {
        r,
        pos: 0,
        big_endian: false,
        file_len: opts.file_len,
    };
    let magic = c.bytes::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    // The magic is byte order independent; a big-endian file's version reads
    // as e.g. 0x03000000 in little endian (gguf-py writes it so).
    let raw = c.bytes::<4>("version")?;
    let le = u32::from_le_bytes(raw);
    let (version, big_endian) = if le & 0xFFFF == 0 && le != 0 {
        (u32::from_be_bytes(raw), true)
    } else {
        (le, false)
    };
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    c.big_endian = big_endian;

    let at = c.pos;
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A tensor info takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a kv at least 8+4+1.
    c.check_len(n_tensors.saturating_mul(24), "tensor count")
        .map_err(|_| GgufError::CountTooLarge {
            what: "tensor count".into(),
            offset: at,
            count: n_tensors,
            limit: c.remaining().unwrap_or(0) / 24,
        })?;
    c.check_len(n_kv.saturating_mul(13), "metadata count")
        .map_err(|_| GgufError::CountTooLarge {
            what: "metadata count".into(),
            offset: at + 8,
            count: n_kv,
            limit: c.remaining().unwrap_or(0) / 13,
        })?;

    let mut metadata = Vec::with_capacity(n_kv.min(PREALLOC_CAP) as usize);
    let mut seen_keys = HashSet::new();
    for _ in 0..n_kv {
        let key_at = c.pos;
        let raw = c.raw_string("metadata key")?;
        let key = String::from_utf8(raw).map_err(|_| GgufError::KeyNotUtf8 { offset: key_at })?;
        let ty_at = c.pos;
        let id = c.u32(&key)?;
        let ty = ValueType::from_id(id).ok_or(GgufError::BadValueType {
            key: key.clone(),
            offset: ty_at,
            id,
        })?;
        let value = c.value(ty, &key, 0, opts)?;
        if !seen_keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_at,
            });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            // gguf_init_from_file_impl accepts only a u32 here; a bool or a
            // string would otherwise sneak in through `as_u64`.
            let a = match v {
                Value::U32(a) => u64::from(*a),
                _ => {
                    return Err(GgufError::WrongType {
                        key: KEY_ALIGNMENT.into(),
                        found: v.value_type().to_string(),
                        expected: "u32",
                    })
                }
            };
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment { value: a });
            }
            a
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors.min(PREALLOC_CAP) as usize);
    let mut seen_names = HashSet::new();
    for _ in 0..n_tensors {
        let name_at = c.pos;
        let raw = c.raw_string("tensor name")?;
        let name =
            String::from_utf8(raw).map_err(|_| GgufError::NameNotUtf8 { offset: name_at })?;
        let n_dims = c.u32(&name)? as u64;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                n_dims,
                at: name_at,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty = GgmlType(c.u32(&name)?);
        let offset = c.u64(&name)?;
        // ggml keeps `ne` as int64: gguf_init_from_file_impl rejects a negative
        // dim and a running element count above INT64_MAX (in dim order, so a
        // later zero dim does not excuse an earlier overflow).
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| {
                acc.checked_mul(d)
                    .filter(|&n| n <= i64::MAX as u64 && d <= i64::MAX as u64)
            })
            .is_none()
        {
            return Err(GgufError::DimsOverflow {
                name,
                dims,
                at: name_at,
            });
        }
        if let Some(tr) = ty.traits() {
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % tr.block_elems != 0 {
                return Err(GgufError::BlockMisaligned {
                    name,
                    ne0,
                    ty: ty.to_string(),
                    block: tr.block_elems,
                    at: name_at,
                });
            }
            if ty.nbytes(&dims).is_none() {
                return Err(GgufError::DimsOverflow {
                    name,
                    dims,
                    at: name_at,
                });
            }
        }
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                name,
                offset,
                alignment,
                at: name_at,
            });
        }
        if !seen_names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                name,
                offset: name_at,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    let bytes_read = c.pos;
    let header = Header {
        version,
        big_endian,
        metadata,
        tensors,
        alignment,
        data_offset: pad(bytes_read, alignment),
        bytes_read,
    };
    if let Some(file_len) = opts.file_len {
        check_tensor_bounds(&header, file_len)?;
    }
    Ok(header)
}

/// Every tensor of known size must end inside the file. (An unknown type's
/// size is unknown, so only its offset is checked.)
pub(crate) fn check_tensor_bounds(h: &Header, file_len: u64) -> Result<(), GgufError> {
    for t in &h.tensors {
        let n = t.n_bytes().unwrap_or(0);
        let end = h
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(n));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorPastEnd {
                    name: t.name.clone(),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    Ok(())
}

/// Read the header of a local file, checking lengths and tensor bounds
/// against the file size.
pub fn read_file(path: &Path, opts: &Options) -> Result<Header, GgufError> {
    read_file_counted(path, opts).map(|(h, _)| h)
}

/// First read of a local file: one page. A shard's header (a few hundred
/// tensor infos, no vocabulary) usually fits, so reading it touches one or
/// two pages and never the tensor data behind it.
pub const FIRST_READ: usize = 4096;
/// Reads double from [`FIRST_READ`] up to this, so a 7 MB vocabulary header
/// still takes only a handful of system calls.
pub const MAX_READ: usize = 1 << 20;

/// [`read_file`], also returning how many bytes were read from the file
/// (the I/O, counted under the buffer). Reads start at [`FIRST_READ`] bytes
/// and double, so the bytes touched past the header are fewer than the
/// header itself (or one page, whichever is more).
pub fn read_file_counted(path: &Path, opts: &Options) -> Result<(Header, u64), GgufError> {
    let f = File::open(path).map_err(|source| GgufError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let len = f
        .metadata()
        .map_err(|source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let opts = Options {
        file_len: Some(len),
        ..opts.clone()
    };
    let mut r = GrowingBufReader::new(CountingReader::new(f));
    let header = read_header(&mut r, &opts)?;
    Ok((header, r.inner.count()))
}

/// A `BufReader` whose reads grow: [`FIRST_READ`], then twice as much each
/// refill up to [`MAX_READ`]. std's `BufReader` reads a fixed capacity, which
/// is either many system calls (small) or many bytes past a small header (large).
struct GrowingBufReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    next_read: usize,
}

impl<R: io::Read> GrowingBufReader<R> {
    fn new(inner: R) -> Self {
        GrowingBufReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            next_read: FIRST_READ,
        }
    }
}

impl<R: io::Read> io::Read for GrowingBufReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: io::Read> BufRead for GrowingBufReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            self.buf.resize(self.next_read, 0);
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(n);
            self.pos = 0;
            self.next_read = (self.next_read * 2).min(MAX_READ);
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write::{tiny_example, Writer};

    fn parse(b: &[u8]) -> Result<Header, GgufError> {
        read_header(
            b,
            &Options {
                file_len: Some(b.len() as u64),
                ..Options::default()
            },
        )
    }

    #[test]
    fn reads_the_tiny_example() {
        let b = tiny_example();
        let h = read_header(&b[..], &Options::default()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].name, "token_embd.weight");
        assert_eq!(h.tensors[0].n_bytes(), Some(64 * 4 * 2));
        assert_eq!(h.data_offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = tiny_example();
        let h = read_header(&b[..], &Options::default()).unwrap();
        for cut in 0..h.bytes_read as usize {
            let err = read_header(&b[..cut], &Options::default()).unwrap_err();
            assert!(
                matches!(err, GgufError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn lying_counts_are_rejected_without_allocating() {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()));
        let mut b = w.finish();
        // n_tensors is at byte 8
        b[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(matches!(err, GgufError::CountTooLarge { .. }), "{err}");
        // Without a known length the reader must fail on EOF, not allocate 2^63.
        let err = read_header(&b[..], &Options::default()).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    }

    #[test]
    fn huge_string_length_is_rejected() {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()));
        let mut b = w.finish();
        // first key length at byte 24
        b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = parse(&b).unwrap_err();
        assert!(matches!(err, GgufError::LengthPastEnd { .. }), "{err}");
        let err = read_header(&b[..], &Options::default()).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    }

    #[test]
    fn array_longer_than_file_is_rejected() {
        let mut w = Writer::new();
        w.kv(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(1.0); 3]),
        );
        let mut b = w.finish();
        // key "tokenizer.ggml.scores" (21) at 24..32+21, type u32, elem type u32, len u64
        let len_at = 24 + 8 + 21 + 4 + 4;
        b[len_at..len_at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(matches!(
            parse(&b).unwrap_err(),
            GgufError::LengthPastEnd { .. }
        ));
    }

    #[test]
    fn bad_tensors_are_named() {
        let mut w = Writer::new();
        w.tensor("a", &[4096, 2], GgmlType::F32);
        w.tensor("a", &[4096, 2], GgmlType::F32);
        let err = parse(&w.finish()).unwrap_err();
        assert!(
            matches!(&err, GgufError::DuplicateTensor { name, .. } if name == "a"),
            "{err}"
        );

        let mut w = Writer::new();
        w.tensor("q", &[100, 2], GgmlType::Q4_K);
        let err = parse(&w.finish()).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");

        let mut w = Writer::new();
        w.tensor("big", &[u64::MAX / 2, 4], GgmlType::F32);
        assert!(matches!(
            parse(&w.finish()).unwrap_err(),
            GgufError::DimsOverflow { .. }
        ));
    }

    #[test]
    fn tensor_past_end_of_file() {
        let mut w = Writer::new();
        w.tensor("t", &[1024, 1024], GgmlType::F32);
        let b = w.finish(); // header only: data region absent
        let err = parse(&b).unwrap_err();
        assert!(matches!(err, GgufError::TensorPastEnd { .. }), "{err}");
        // Without a file length (a header prefix) it parses.
        assert!(read_header(&b[..], &Options::default()).is_ok());
    }

    #[test]
    fn unknown_type_is_kept_as_data() {
        let mut w = Writer::new();
        w.tensor("x", &[256, 4], GgmlType(99));
        w.tensor("y", &[256, 4], GgmlType::MXFP4);
        let b = w.finish();
        let h = read_header(&b[..], &Options::default()).unwrap();
        assert_eq!(h.tensors[0].ty, GgmlType(99));
        assert_eq!(h.tensors[0].n_bytes(), None);
        assert_eq!(h.tensors[1].n_bytes(), Some(8 * 17 * 4));
        assert_eq!(h.tensor_bytes(), (8 * 17 * 4, 1));
    }

    #[test]
    fn invalid_utf8_key_is_an_error_value_is_lossy() {
        let mut w = Writer::new();
        w.kv("tok", Value::String("ok".into()));
        let mut b = w.finish();
        b[32] = 0xff; // first byte of the key
        assert!(matches!(
            parse(&b).unwrap_err(),
            GgufError::KeyNotUtf8 { offset: 24 }
        ));
        let mut w = Writer::new();
        w.kv_raw_string("k", &[0x61, 0xff, 0x62]);
        let h = parse(&w.finish()).unwrap();
        assert_eq!(h.get("k").unwrap().as_str(), Some("a\u{fffd}b"));
    }

    #[test]
    fn big_endian_files_read() {
        let mut w = Writer::new();
        w.big_endian = true;
        w.kv("general.architecture", Value::String("llama".into()));
        w.kv("llama.block_count", Value::U32(32));
        w.tensor("t", &[32, 2], GgmlType::F16);
        let h = read_header(&w.finish()[..], &Options::default()).unwrap();
        assert!(h.big_endian);
        assert_eq!(h.get("llama.block_count").unwrap().as_u64(), Some(32));
        assert_eq!(h.tensors[0].dims, vec![32, 2]);
    }

    #[test]
    fn long_arrays_are_skipped_but_counted() {
        let mut w = Writer::new();
        let toks: Vec<Value> = (0..5000).map(|i| Value::String(format!("t{i}"))).collect();
        w.kv("tokenizer.ggml.tokens", Value::Array(toks));
        w.kv(
            "nested",
            Value::Array(vec![Value::Array(vec![Value::U8(1)]), Value::Array(vec![])]),
        );
        let b = w.finish();
        let h = parse(&b).unwrap();
        let v = h.get("tokenizer.ggml.tokens").unwrap();
        assert_eq!(
            *v,
            Value::SkippedArray {
                elem: ValueType::String,
                len: 5000
            }
        );
        assert_eq!(h.get("nested").unwrap().as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_version_and_magic() {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("llama".into()));
        let mut b = w.finish();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            parse(&b).unwrap_err(),
            GgufError::UnsupportedVersion { version: 1 }
        ));
        b[0] = b'X';
        assert!(matches!(parse(&b).unwrap_err(), GgufError::BadMagic { .. }));
    }

    /// Offset of the first value byte of the first (and only) kv, whose key is `key`.
    fn first_value_at(key: &str) -> usize {
        24 + 8 + key.len() + 4
    }

    #[test]
    fn huge_max_array_len_does_not_trust_the_count() {
        // An array claiming 2^60 u8 elements, with max_array_len = u64::MAX so
        // the reader tries to materialise it: this used to be
        // Vec::with_capacity(2^60) (a capacity-overflow panic).
        let mut w = Writer::new();
        w.kv("a", Value::Array(vec![Value::U8(1), Value::U8(2)]));
        let mut b = w.finish();
        let len_at = first_value_at("a") + 4;
        b[len_at..len_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let opts = Options {
            max_array_len: u64::MAX,
            ..Options::default()
        };
        let err = read_header(&b[..], &opts).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
        let err = read_header(
            &b[..],
            &Options {
                file_len: Some(b.len() as u64),
                ..opts
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, GgufError::LengthPastEnd { what, .. } if what == "a"),
            "{err}"
        );
    }

    #[test]
    fn lying_string_lengths_inside_string_arrays() {
        // 3 strings, the 2nd claims 2^40 bytes: both when materialised and
        // when skipped (max_array_len 1), with and without the file length.
        let mut w = Writer::new();
        let items = ["ab", "cd", "ef"].map(|t| Value::String(t.into())).to_vec();
        w.kv("toks", Value::Array(items));
        let mut b = w.finish();
        let second = first_value_at("toks") + 4 + 8 + (8 + 2);
        b[second..second + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        for max_array_len in [1, 4096] {
            let opts = Options {
                max_array_len,
                ..Options::default()
            };
            let err = read_header(&b[..], &opts).unwrap_err();
            assert!(
                matches!(&err, GgufError::Truncated { what, .. } if what == "toks"),
                "{err}"
            );
            let known = Options {
                file_len: Some(b.len() as u64),
                ..opts
            };
            let err = read_header(&b[..], &known).unwrap_err();
            assert!(
                matches!(&err, GgufError::LengthPastEnd { what, offset, len, .. }
                    if what == "toks" && *offset == second as u64 + 8 && *len == 1 << 40),
                "{err}"
            );
        }
    }

    #[test]
    fn dims_beyond_int64_are_rejected_like_ggml() {
        // ggml's ne is int64: a dim of 2^63 fits u64 but not ggml.
        let mut w = Writer::new();
        w.tensor("neg", &[1 << 63], GgmlType(99));
        let err = parse(&w.finish()).unwrap_err();
        assert!(
            matches!(&err, GgufError::DimsOverflow { name, .. } if name == "neg"),
            "{err}"
        );
        // 2^61 * 4 overflows int64 before the zero dim could excuse it
        // (gguf_init_from_file_impl multiplies in dim order).
        let mut w = Writer::new();
        w.tensor("order", &[1 << 61, 4, 0], GgmlType::F32);
        assert!(matches!(
            parse(&w.finish()).unwrap_err(),
            GgufError::DimsOverflow { .. }
        ));
        // A zero dim after small ones is a valid empty tensor.
        let mut w = Writer::new();
        w.tensor("empty", &[64, 0], GgmlType::F32);
        let h = parse(&w.finish()).unwrap();
        assert_eq!(h.tensors[0].n_bytes(), Some(0));
    }

    #[test]
    fn alignment_must_be_a_u32_power_of_two() {
        let mut w = Writer::new();
        w.kv(KEY_ALIGNMENT, Value::Bool(true));
        let err = parse(&w.finish()).unwrap_err();
        assert!(
            matches!(&err, GgufError::WrongType { found, .. } if found == "bool"),
            "{err}"
        );
        let mut w = Writer::new();
        w.kv(KEY_ALIGNMENT, Value::U32(48));
        assert!(matches!(
            parse(&w.finish()).unwrap_err(),
            GgufError::BadAlignment { value: 48 }
        ));
    }

    #[test]
    fn huge_alignment_neither_panics_nor_allocates() {
        // Patch general.alignment to 2^31 after writing (the writer would
        // otherwise pad the header to 2 GiB).
        let mut w = Writer::new();
        w.kv(KEY_ALIGNMENT, Value::U32(32));
        w.tensor("t", &[32], GgmlType::F32);
        let mut b = w.finish();
        let at = first_value_at(KEY_ALIGNMENT);
        b[at..at + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
        let h = read_header(&b[..], &Options::default()).unwrap();
        assert_eq!(h.alignment, 1 << 31);
        assert_eq!(h.data_offset, 1 << 31);
        assert_eq!(h.data_end(), Some((1 << 31) + (1 << 31)));
        let err = parse(&b).unwrap_err();
        assert!(
            matches!(&err, GgufError::TensorPastEnd { name, end, .. } if name == "t" && *end == (1 << 31) + 128),
            "{err}"
        );
    }

    #[test]
    fn bytes_read_stops_before_the_padding() {
        let b = tiny_example();
        let h = read_header(&b[..], &Options::default()).unwrap();
        assert!(h.bytes_read <= b.len() as u64);
        assert_eq!(h.data_offset, b.len() as u64, "the writer pads to 32");
        assert_eq!(h.data_offset, pad(h.bytes_read, 32));
        assert!(b[h.bytes_read as usize..].iter().all(|&x| x == 0));
        // The reader consumed exactly bytes_read: nothing of the padding.
        let mut r = CountingReader::new(&b[..]);
        read_header(&mut r, &Options::default()).unwrap();
        assert_eq!(r.count(), h.bytes_read);
    }

    #[test]
    fn big_endian_nested_arrays() {
        let mut w = Writer::new();
        w.big_endian = true;
        w.version = 2;
        let nested = Value::Array(vec![
            Value::Array(vec![Value::I16(-2), Value::I16(300)]),
            Value::Array(vec![Value::F64(1.5)]),
        ]);
        w.kv("n", nested.clone());
        w.kv("s", Value::Array(vec![Value::String("x".into()); 9]));
        let b = w.finish();
        let h = read_header(
            &b[..],
            &Options {
                max_array_len: 8,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!((h.version, h.big_endian), (2, true));
        assert_eq!(h.get("n"), Some(&nested));
        assert_eq!(
            h.get("s"),
            Some(&Value::SkippedArray {
                elem: ValueType::String,
                len: 9
            })
        );
    }

    #[test]
    fn local_reads_grow_and_stop_near_the_header() {
        // A 1.3 MB header (60k-token vocab) in front of a 300 MB sparse file.
        let mut w = Writer::new();
        let toks = (0..60_000)
            .map(|i| Value::String(format!("tok{i:08}")))
            .collect();
        w.kv("tokenizer.ggml.tokens", Value::Array(toks));
        for i in 0..100 {
            w.tensor(&format!("blk.{i}.w"), &[4096, 4096], GgmlType::Q4_K);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.gguf");
        w.write_sparse(&path).unwrap();
        let (h, io) = read_file_counted(&path, &Options::default()).unwrap();
        let bytes = w.finish();
        assert_eq!(h, read_header(&bytes[..], &Options::default()).unwrap());
        // Reads of 4, 8, …, 1024, 1024 KiB: the first n of them that cover the header.
        let mut want = 0u64;
        let mut next = FIRST_READ as u64;
        while want < h.bytes_read {
            want += next;
            next = (next * 2).min(MAX_READ as u64);
        }
        assert_eq!(io, want);
        assert!(
            io < 2 * h.bytes_read,
            "{io} for a {} byte header",
            h.bytes_read
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 100k levels of "array of 1 array": 12 bytes each.
        let mut w = Writer::new();
        w.kv("deep", Value::U8(0));
        let mut b = w.finish();
        let at = first_value_at("deep") - 4;
        b.truncate(at);
        b.extend_from_slice(&9u32.to_le_bytes()); // the kv's type: array
        for _ in 0..100_000 {
            b.extend_from_slice(&9u32.to_le_bytes()); // elements: arrays
            b.extend_from_slice(&1u64.to_le_bytes()); // one of them
        }
        for max_array_len in [0, 4096] {
            let opts = Options {
                max_depth: usize::MAX,
                max_array_len,
                ..Options::default()
            };
            let err = read_header(&b[..], &opts).unwrap_err();
            assert!(
                matches!(&err, GgufError::TooDeep { key, max: MAX_DEPTH_CAP } if key == "deep"),
                "{err}"
            );
        }
    }
}
