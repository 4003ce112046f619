//! Building a [`ModelProfile`] from GGUF headers, and reading it back
//! (typed metadata access, loading either a `.gguf` or a profile `.toml`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::{FileInfo, MetaValue, ModelError, ModelProfile, Provenance, TensorEntry};
use crate::gguf::shard::{read_model, Shard};
use crate::gguf::{Options, Value};

/// `general.*` and `tokenizer.*` keys kept in a profile (besides every
/// `<arch>.*` key): what inspect, the planner and the emitters read.
pub const PLANNER_GENERAL_KEYS: &[&str] = &[
    "general.architecture",
    "general.name",
    "general.basename",
    "general.size_label",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
];

/// How to label a profile built from a GGUF.
#[derive(Clone, Debug, Default)]
pub struct ProfileOptions {
    /// Profile name; default `general.name`, else the file stem.
    pub name: Option<String>,
    /// Provenance; default [`Provenance::GgufHeader`] naming the files read.
    /// Pass [`Provenance::Synthetic`] for a GGUF written from public configs
    /// (a sparse oracle file): a profile never claims to come from a real
    /// file it did not come from.
    pub provenance: Option<Provenance>,
}

/// A metadata value as kept in a profile; `None` for values a planner
/// cannot use (an unsigned integer above `i64::MAX`).
fn meta_value(v: &Value) -> Option<MetaValue> {
    Some(match v {
        Value::Bool(b) => MetaValue::Bool(*b),
        // f32 → shortest decimal → f64, so 1e-6 stays 1e-6 in TOML
        // instead of 9.999999747378752e-7.
        Value::F32(x) => MetaValue::Float(x.to_string().parse().unwrap_or(f64::from(*x))),
        Value::F64(x) => MetaValue::Float(*x),
        Value::String(s) => MetaValue::Str(s.clone()),
        Value::SkippedArray { len, .. } => MetaValue::Len { len: *len },
        Value::Array(items) => array_value(items),
        other => MetaValue::Int(other.as_i64()?),
    })
}

fn array_value(items: &[Value]) -> MetaValue {
    let len = items.len() as u64;
    if items.iter().all(|v| matches!(v, Value::Bool(_))) && !items.is_empty() {
        return MetaValue::Bools(items.iter().filter_map(Value::as_bool).collect());
    }
    if items
        .iter()
        .all(|v| matches!(v, Value::F32(_) | Value::F64(_)))
        && !items.is_empty()
    {
        let f: Vec<f64> = items
            .iter()
            .filter_map(|v| match meta_value(v) {
                Some(MetaValue::Float(f)) => Some(f),
                _ => None,
            })
            .collect();
        return MetaValue::Floats(f);
    }
    let ints: Option<Vec<i64>> = items
        .iter()
        .map(|v| match v {
            Value::Bool(_) | Value::F32(_) | Value::F64(_) => None,
            other => other.as_i64(),
        })
        .collect();
    match ints {
        Some(i) => MetaValue::Ints(i),
        None => MetaValue::Len { len },
    }
}

impl ModelProfile {
    /// Read a GGUF model (any shard of a split model) into a profile.
    pub fn from_gguf(path: &Path, opts: &ProfileOptions) -> Result<ModelProfile, ModelError> {
        let shards = read_model(path, &Options::default()).map_err(|source| ModelError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_shards(&shards, opts)
    }

    /// Build a profile from headers already read (shard order).
    pub fn from_shards(
        shards: &[Shard],
        opts: &ProfileOptions,
    ) -> Result<ModelProfile, ModelError> {
        let first = shards.first().ok_or(ModelError::NoArchitecture)?;
        let arch = first
            .header
            .architecture()
            .ok_or(ModelError::NoArchitecture)?
            .to_string();
        let prefix = format!("{arch}.");
        let mut metadata = BTreeMap::new();
        for (k, v) in &first.header.metadata {
            if k.starts_with(&prefix) || PLANNER_GENERAL_KEYS.contains(&k.as_str()) {
                if let Some(mv) = meta_value(v) {
                    metadata.insert(k.clone(), mv);
                }
            }
        }
        let mut files = Vec::with_capacity(shards.len());
        let mut tensors = Vec::new();
        for (i, s) in shards.iter().enumerate() {
            let file = u16::try_from(i).map_err(|_| ModelError::Profile {
                path: s.path.clone(),
                problem: "more than 65535 shards".into(),
            })?;
            files.push(FileInfo {
                name: s.path.file_name().map_or_else(
                    || s.path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                ),
                data_offset: s.header.data_offset,
                len: s.file_len,
            });
            for t in &s.header.tensors {
                tensors.push(TensorEntry {
                    name: t.name.clone(),
                    ty: t.ty,
                    dims: t.dims.clone(),
                    file,
                    offset: t.offset,
                });
            }
        }
        let name = opts.name.clone().unwrap_or_else(|| {
            first
                .header
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    first
                        .path
                        .file_stem()
                        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into())
                })
        });
        let provenance = opts
            .provenance
            .clone()
            .unwrap_or_else(|| Provenance::GgufHeader {
                files: files.iter().map(|f| f.name.clone()).collect(),
            });
        Ok(ModelProfile {
            name,
            provenance,
            arch,
            alignment: first.header.alignment,
            metadata,
            files,
            tensors,
        })
    }

    /// Load a model description from a `.gguf` (any shard) or a profile
    /// `.toml`, told apart by the `GGUF` magic, not the extension.
    pub fn load(path: &Path) -> Result<ModelProfile, ModelError> {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|source| ModelError::Read {
                path: path.to_path_buf(),
                source,
            })?
            == 4
            && &magic == b"GGUF";
        if is_gguf {
            Self::from_gguf(path, &ProfileOptions::default())
        } else {
            Self::load_toml(path)
        }
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// `<arch>.<suffix>`.
    pub fn arch_meta(&self, suffix: &str) -> Option<&MetaValue> {
        self.metadata.get(&format!("{}.{suffix}", self.arch))
    }

    /// Index of a tensor by name.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Sum of all tensor sizes (`None` if one has an unknown type or overflows).
    pub fn tensor_bytes(&self) -> Option<u64> {
        self.tensors
            .iter()
            .try_fold(0u64, |acc, t| acc.checked_add(t.n_bytes()?))
    }
}

impl MetaValue {
    /// A non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(i) => u64::try_from(*i).ok(),
            MetaValue::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(f) => Some(*f),
            MetaValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Length of an array value (kept or skipped).
    pub fn len(&self) -> Option<u64> {
        match self {
            MetaValue::Ints(v) => Some(v.len() as u64),
            MetaValue::Bools(v) => Some(v.len() as u64),
            MetaValue::Floats(v) => Some(v.len() as u64),
            MetaValue::Len { len } => Some(*len),
            _ => None,
        }
    }

    /// Whether an array value is empty (`None` for scalars).
    pub fn is_empty(&self) -> Option<bool> {
        self.len().map(|l| l == 0)
    }

    /// Short human form for tables.
    pub fn show(&self) -> String {
        match self {
            MetaValue::Bool(b) => b.to_string(),
            MetaValue::Int(i) => i.to_string(),
            MetaValue::Float(f) => f.to_string(),
            MetaValue::Str(s) => s.clone(),
            MetaValue::Ints(v) => format!("{v:?}"),
            MetaValue::Bools(v) => format!("{v:?}"),
            MetaValue::Floats(v) => format!("{v:?}"),
            MetaValue::Len { len } => format!("[{len} items]"),
        }
    }
}
