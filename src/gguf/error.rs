//! Errors of the GGUF reader. Every variant says what was wrong, where
//! (key, tensor, byte offset) — enough to find the problem with a hex dump.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("i/o error at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file ends at byte {offset} while reading {what} (truncated file?)")]
    Truncated { offset: u64, what: String },
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion { version: u32 },
    #[error("metadata key at byte {offset} is not valid UTF-8")]
    KeyNotUtf8 { offset: u64 },
    #[error("tensor name at byte {offset} is not valid UTF-8")]
    NameNotUtf8 { offset: u64 },
    #[error("key '{key}' at byte {offset}: unknown value type id {id}")]
    BadValueType { key: String, offset: u64, id: u32 },
    #[error("{what} at byte {offset} claims {len} bytes but only {remaining} remain in the file")]
    LengthPastEnd {
        what: String,
        offset: u64,
        len: u64,
        remaining: u64,
    },
    #[error("{what} at byte {offset} is {count}, but the rest of the file can hold at most {limit} (truncated file or corrupt count)")]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        limit: u64,
    },
    #[error("key '{key}': arrays nested deeper than {max} levels")]
    TooDeep { key: String, max: usize },
    #[error("duplicate metadata key '{key}' at byte {offset}")]
    DuplicateKey { key: String, offset: u64 },
    #[error("duplicate tensor name '{name}' at byte {offset}")]
    DuplicateTensor { name: String, offset: u64 },
    /// `at`: byte offset of the tensor's info record in the header.
    #[error("tensor '{name}' (info at byte {at}) has {n_dims} dimensions (ggml allows at most 4)")]
    TooManyDims { name: String, n_dims: u64, at: u64 },
    #[error("tensor '{name}' (info at byte {at}): dimensions {dims:?} overflow ggml's 64-bit signed element count or byte size")]
    DimsOverflow {
        name: String,
        dims: Vec<u64>,
        at: u64,
    },
    #[error("tensor '{name}' (info at byte {at}): row length {ne0} is not a multiple of {ty}'s block size {block}")]
    BlockMisaligned {
        name: String,
        ne0: u64,
        ty: String,
        block: u64,
        at: u64,
    },
    #[error("tensor '{name}' (info at byte {at}): data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        name: String,
        offset: u64,
        alignment: u64,
        at: u64,
    },
    #[error(
        "tensor '{name}': data ends at byte {end}, past the end of the file ({file_len} bytes)"
    )]
    TensorPastEnd {
        name: String,
        end: u64,
        file_len: u64,
    },
    #[error("general.alignment = {value} is not a power of two")]
    BadAlignment { value: u64 },
    #[error("key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("shard {path}: {problem}")]
    Shard { path: PathBuf, problem: String },
    #[error("remote read of {url} failed: {message}")]
    Remote { url: String, message: String },
}

impl GgufError {
    /// Whether the failure is I/O (a file that cannot be read, a remote
    /// that does not answer) rather than bad GGUF: exit code 4, not 2.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            GgufError::Io { .. } | GgufError::Open { .. } | GgufError::Remote { .. }
        )
    }
}
