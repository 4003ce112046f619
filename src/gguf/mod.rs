//! Reading GGUF headers — metadata and tensor infos — never tensor data.
//!
//! A GGUF file is: magic `GGUF`, a `u32` version, a tensor count and a
//! metadata count (`u64` since v2), the metadata key/value pairs, one tensor
//! info per tensor (name, dims in ggml order, type id, offset into the data
//! region), padding to `general.alignment`, then the data. Everything a planner
//! needs is in front of the data, so [`read_header`] works on any [`BufRead`](std::io::BufRead):
//! a file, an in-memory prefix, or an HTTP range reader ([`remote`]).
//!
//! Why in-house: the crates measured for this project (gguf-rs, ggus, gguf,
//! candle) give wrong sizes for BF16/IQ4_NL/MXFP4, panic on type 40, or reject
//! current ids (see the README). This reader keeps unknown type ids as data
//! ([`GgmlType`]) and reports their size as unknown instead of failing.
//!
//! Defences against hostile input: every length is checked against the bytes
//! that remain (when the file length is known); strings grow only as their
//! bytes arrive and array pre-allocation is capped otherwise, so a lying
//! count can never cause an allocation larger than the bytes actually
//! present; nesting depth is limited; dims follow ggml's int64 rules
//! (`gguf_init_from_file_impl`); keys and tensor names must be UTF-8 (values
//! are decoded lossily: real vocabularies contain invalid UTF-8 tokens).
//! `tests/integration/gguf_roundtrip.rs` (proptest) and `fuzz/` (cargo-fuzz)
//! check that no input panics.
//!
//! Bytes touched: [`read_file`] reads 4 KiB, then doubling ([`FIRST_READ`],
//! [`MAX_READ`]), so one shard of a split model costs its header rounded up
//! to a page or so ([`read_file_counted`] reports it); [`CountingReader`]
//! counts what any reader delivers. Remote reads report requests and bytes
//! fetched (`remote::FetchStats`).
//!
//! ```
//! use ggplan::gguf::{read_header, Options};
//! # let bytes: Vec<u8> = ggplan::gguf::write::tiny_example();
//! let header = read_header(&bytes[..], &Options::default()).unwrap();
//! assert_eq!(header.architecture(), Some("llama"));
//! ```

mod count;
mod error;
mod read;
#[cfg(feature = "remote")]
pub mod remote;
pub mod shard;
mod types;
mod value;
pub mod write;

pub use count::CountingReader;
pub use error::GgufError;
pub use read::{
    read_file, read_file_counted, read_header, Options, FIRST_READ, MAX_DEPTH_CAP, MAX_READ,
};
pub use types::{GgmlType, TypeTraits};
pub use value::{Value, ValueType};

use serde::{Deserialize, Serialize};

/// Metadata key of the file data alignment (`GGUF_KEY_GENERAL_ALIGNMENT`).
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// Metadata key naming the architecture (`llama`, `qwen3moe`, `gpt-oss`, …).
pub const KEY_ARCHITECTURE: &str = "general.architecture";
/// Multi-file keys (`LLM_KV_SPLIT_*` in llama-arch.cpp; gguf-py `Keys.Split`).
pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
/// Default data alignment when the key is absent (`GGUF_DEFAULT_ALIGNMENT`, gguf.h).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dims (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Whether a model argument names a remote file (`http://` or `https://`,
/// any case) rather than a path: read it with `remote::read_model_url`.
pub fn is_url(s: &str) -> bool {
    let head = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://")
}

/// One tensor info record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data region.
    pub offset: u64,
}

impl TensorInfo {
    /// `ggml_nbytes` for a contiguous tensor; `None` when the type is unknown.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.nbytes(&self.dims)
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed header: everything in front of the tensor data.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub big_endian: bool,
    /// Key/value pairs in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment` (default 32).
    pub alignment: u64,
    /// Absolute file offset where the data region starts.
    pub data_offset: u64,
    /// Bytes consumed from the reader (header proper, before the alignment padding).
    pub bytes_read: u64,
}

impl Header {
    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get(KEY_ARCHITECTURE).and_then(Value::as_str)
    }

    /// Sum of the known tensor sizes, and how many tensors have an unknown size.
    pub fn tensor_bytes(&self) -> (u64, usize) {
        let mut sum = 0u64;
        let mut unknown = 0;
        for t in &self.tensors {
            match t.n_bytes() {
                Some(b) => sum = sum.saturating_add(b),
                None => unknown += 1,
            }
        }
        (sum, unknown)
    }

    /// End of the data region implied by the tensor table (absolute offset):
    /// `data_offset + max(offset + PAD(nbytes, alignment))`.
    pub fn data_end(&self) -> Option<u64> {
        let mut end = self.data_offset;
        for t in &self.tensors {
            let n = t.n_bytes()?;
            let e = self
                .data_offset
                .checked_add(t.offset)?
                .checked_add(crate::units::pad(n, self.alignment))?;
            end = end.max(e);
        }
        Some(end)
    }
}
