//! Model profiles as TOML: `ggplan profile MODEL -o models/NAME.toml`.
//!
//! The layout keeps a 1,500-tensor profile readable and small: scalar keys
//! first, one inline array per tensor (`[name, type, dims, file, offset]`),
//! then the `[provenance]` and `[metadata]` tables. Loading is strict:
//! unknown keys are rejected and every error carries a line number.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::fsutil::toml_string as quote;
use toml::Spanned;

use super::{FileInfo, MetaValue, ModelError, ModelProfile, Provenance, TensorEntry};
use crate::gguf::{GgmlType, MAX_DIMS};

/// Version of the profile layout written and read by this ggplan.
pub const PROFILE_FORMAT: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    format: Spanned<u32>,
    name: String,
    arch: Spanned<String>,
    alignment: Spanned<u64>,
    files: Vec<Spanned<FileInfo>>,
    tensors: Vec<Spanned<RawTensor>>,
    provenance: Provenance,
    #[serde(default)]
    metadata: BTreeMap<String, MetaValue>,
}

/// `[name, type, dims, file, offset]`.
#[derive(Deserialize)]
struct RawTensor(String, String, Vec<u64>, u16, u64);

fn float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        // Debug always has a '.' or an exponent, so it reads back as a float.
        format!("{f:?}")
    }
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let parts: Vec<String> = items.iter().map(f).collect();
    format!("[{}]", parts.join(", "))
}

fn meta_toml(v: &MetaValue) -> String {
    match v {
        MetaValue::Bool(b) => b.to_string(),
        MetaValue::Int(i) => i.to_string(),
        MetaValue::Float(f) => float(*f),
        MetaValue::Str(s) => quote(s),
        MetaValue::Ints(v) => list(v, |i| i.to_string()),
        MetaValue::Bools(v) => list(v, |b| b.to_string()),
        MetaValue::Floats(v) => list(v, |f| float(*f)),
        MetaValue::Len { len } => format!("{{ len = {len} }}"),
    }
}

fn type_name(ty: GgmlType) -> String {
    // Display gives `Q4_K` for known ids and `type#99` otherwise; both parse back.
    ty.to_string()
}

fn parse_type(s: &str) -> Option<GgmlType> {
    if let Some(id) = s.strip_prefix("type#") {
        return id.parse().ok().map(GgmlType);
    }
    GgmlType::from_name(s)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl ModelProfile {
    /// The profile as TOML text (see the module docs for the layout).
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let kind = match &self.provenance {
            Provenance::GgufHeader { .. } => "read from a real GGUF header",
            Provenance::Synthetic { .. } => {
                "SYNTHETIC: built from public configs, not from a real file (see [provenance])"
            }
        };
        let _ = writeln!(s, "# ggplan model profile: {kind}.");
        let _ = writeln!(
            s,
            "# `ggplan inspect THIS.toml` reads it like the GGUF it describes."
        );
        let _ = writeln!(s, "format = {PROFILE_FORMAT}");
        let _ = writeln!(s, "name = {}", quote(&self.name));
        let _ = writeln!(s, "arch = {}", quote(&self.arch));
        let _ = writeln!(s, "alignment = {}", self.alignment);
        let _ = writeln!(s, "files = [");
        for f in &self.files {
            let _ = writeln!(
                s,
                "  {{ name = {}, data_offset = {}, len = {} }},",
                quote(&f.name),
                f.data_offset,
                f.len
            );
        }
        let _ = writeln!(s, "]");
        let _ = writeln!(
            s,
            "# [name, ggml type, dims (ggml order: row length first), file index, offset in that file's data region]"
        );
        let _ = writeln!(s, "tensors = [");
        for t in &self.tensors {
            let _ = writeln!(
                s,
                "  [{}, {}, {}, {}, {}],",
                quote(&t.name),
                quote(&type_name(t.ty)),
                list(&t.dims, |d| d.to_string()),
                t.file,
                t.offset
            );
        }
        let _ = writeln!(s, "]");
        let _ = writeln!(s);
        let _ = writeln!(s, "[provenance]");
        match &self.provenance {
            Provenance::GgufHeader { files } => {
                let _ = writeln!(s, "kind = \"gguf_header\"");
                let _ = writeln!(s, "files = {}", list(files, |f| quote(f)));
            }
            Provenance::Synthetic {
                description,
                sources,
            } => {
                let _ = writeln!(s, "kind = \"synthetic\"");
                let _ = writeln!(s, "description = {}", quote(description));
                let _ = writeln!(s, "sources = [");
                for src in sources {
                    let _ = writeln!(s, "  {},", quote(src));
                }
                let _ = writeln!(s, "]");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "[metadata]");
        for (k, v) in &self.metadata {
            let _ = writeln!(s, "{} = {}", quote(k), meta_toml(v));
        }
        s
    }

    /// Parse and validate profile TOML. `path` only labels errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<ModelProfile, ModelError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| ModelError::Toml {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        let bad = |span: std::ops::Range<usize>, problem: String| ModelError::Profile {
            path: path.to_path_buf(),
            problem: format!("line {}: {problem}", line_of(text, span.start)),
        };
        if *raw.format.get_ref() != PROFILE_FORMAT {
            return Err(bad(
                raw.format.span(),
                format!(
                    "format = {} is not supported (this ggplan reads format {PROFILE_FORMAT})",
                    raw.format.get_ref()
                ),
            ));
        }
        if raw.arch.get_ref().is_empty() {
            return Err(bad(raw.arch.span(), "arch is empty".into()));
        }
        let alignment = *raw.alignment.get_ref();
        if !alignment.is_power_of_two() {
            return Err(bad(
                raw.alignment.span(),
                format!("alignment = {alignment} is not a power of two"),
            ));
        }
        if raw.files.is_empty() {
            return Err(ModelError::Profile {
                path: path.to_path_buf(),
                problem: "files is empty (a profile describes at least one file)".into(),
            });
        }
        let files: Vec<FileInfo> = raw.files.into_iter().map(Spanned::into_inner).collect();
        let mut seen = HashSet::new();
        let mut tensors = Vec::with_capacity(raw.tensors.len());
        for sp in raw.tensors {
            let span = sp.span();
            let RawTensor(name, ty, dims, file, offset) = sp.into_inner();
            let ty = parse_type(&ty).ok_or_else(|| {
                bad(
                    span.clone(),
                    format!("tensor '{name}': unknown ggml type '{ty}'"),
                )
            })?;
            if dims.is_empty() || dims.len() > MAX_DIMS {
                return Err(bad(
                    span,
                    format!(
                        "tensor '{name}': {} dims (ggml allows 1 to {MAX_DIMS})",
                        dims.len()
                    ),
                ));
            }
            if usize::from(file) >= files.len() {
                return Err(bad(
                    span,
                    format!(
                        "tensor '{name}': file index {file} but only {} file(s) are listed",
                        files.len()
                    ),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(bad(span, format!("duplicate tensor name '{name}'")));
            }
            tensors.push(TensorEntry {
                name,
                ty,
                dims,
                file,
                offset,
            });
        }
        let arch = raw.arch.into_inner();
        if let Some(a) = raw.metadata.get(crate::gguf::KEY_ARCHITECTURE) {
            if a.as_str() != Some(arch.as_str()) {
                return Err(ModelError::Profile {
                    path: path.to_path_buf(),
                    problem: format!(
                        "arch = \"{arch}\" but metadata general.architecture = {}",
                        a.show()
                    ),
                });
            }
        }
        Ok(ModelProfile {
            name: raw.name,
            provenance: raw.provenance,
            arch,
            alignment,
            metadata: raw.metadata,
            files,
            tensors,
        })
    }

    /// Read a profile `.toml`.
    pub fn load_toml(path: &Path) -> Result<ModelProfile, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Write the profile as TOML, atomically (replacing `path`).
    pub fn save_toml(&self, path: &Path) -> Result<(), ModelError> {
        crate::fsutil::write_atomic(
            path,
            self.to_toml().as_bytes(),
            crate::fsutil::Mode::Replace,
        )
        .map_err(|source| ModelError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ModelProfile {
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "general.architecture".into(),
            MetaValue::Str("llama".into()),
        );
        metadata.insert("llama.block_count".into(), MetaValue::Int(2));
        metadata.insert(
            "llama.attention.layer_norm_rms_epsilon".into(),
            MetaValue::Float(1e-5),
        );
        metadata.insert(
            "llama.attention.head_count_kv".into(),
            MetaValue::Ints(vec![8, 0]),
        );
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            MetaValue::Len { len: 128256 },
        );
        ModelProfile {
            name: "tiny \"quoted\"".into(),
            provenance: Provenance::Synthetic {
                description: "built by hand".into(),
                sources: vec!["https://example.org/config.json".into()],
            },
            arch: "llama".into(),
            alignment: 32,
            metadata,
            files: vec![FileInfo {
                name: "m.gguf".into(),
                data_offset: 4096,
                len: 1 << 20,
            }],
            tensors: vec![
                TensorEntry {
                    name: "token_embd.weight".into(),
                    ty: GgmlType::Q4_K,
                    dims: vec![256, 10],
                    file: 0,
                    offset: 0,
                },
                TensorEntry {
                    name: "blk.0.weird".into(),
                    ty: GgmlType(99),
                    dims: vec![3],
                    file: 0,
                    offset: 1440,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let p = sample();
        let text = p.to_toml();
        let back = ModelProfile::from_toml_str(&text, Path::new("x.toml")).unwrap();
        assert_eq!(back, p);
        let bad = text.replace("alignment = 32", "alignment = 32\ncolour = \"red\"");
        let err = ModelProfile::from_toml_str(&bad, Path::new("x.toml")).unwrap_err();
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(msg.contains("colour") && msg.contains("line 7"), "{msg}");
    }

    #[test]
    fn bad_tensor_rows_name_their_line() {
        let text = sample().to_toml().replace("\"Q4_K\"", "\"Q9_Z\"");
        let err = ModelProfile::from_toml_str(&text, Path::new("x.toml")).unwrap_err();
        let msg = err.to_string();
        let line = text.lines().position(|l| l.contains("Q9_Z")).unwrap() + 1;
        assert!(
            msg.contains(&format!("line {line}")) && msg.contains("Q9_Z"),
            "{msg}"
        );
        let text = sample()
            .to_toml()
            .replace("[256, 10], 0, 0]", "[256, 10], 3, 0]");
        let err = ModelProfile::from_toml_str(&text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("file index 3"), "{err}");
        let text = sample().to_toml().replace("format = 1", "format = 7");
        let err = ModelProfile::from_toml_str(&text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("line 3: format = 7"), "{err}");
    }

    fn meta_strategy() -> impl Strategy<Value = MetaValue> {
        prop_oneof![
            any::<bool>().prop_map(MetaValue::Bool),
            any::<i64>().prop_map(MetaValue::Int),
            (-1e30f64..1e30).prop_map(MetaValue::Float),
            "[ -~\\n\\t\"\\\\é]{0,12}".prop_map(MetaValue::Str),
            proptest::collection::vec(any::<i64>(), 0..6).prop_map(MetaValue::Ints),
            proptest::collection::vec(any::<bool>(), 1..6).prop_map(MetaValue::Bools),
            proptest::collection::vec(-1e6f64..1e6, 1..6).prop_map(MetaValue::Floats),
            (0u64..i64::MAX as u64).prop_map(|len| MetaValue::Len { len }),
        ]
    }

    proptest! {
        #[test]
        fn any_profile_round_trips(
            name in "[ -~]{0,20}",
            meta in proptest::collection::btree_map("[a-z.]{1,12}", meta_strategy(), 0..8),
            tensors in proptest::collection::vec(
                (proptest::sample::select(GgmlType::known().collect::<Vec<_>>()),
                 proptest::collection::vec(1u64..5000, 1..=4),
                 0u64..(1 << 40)),
                0..20),
            synthetic in any::<bool>(),
        ) {
            let provenance = if synthetic {
                Provenance::Synthetic { description: name.clone(), sources: vec![name.clone()] }
            } else {
                Provenance::GgufHeader { files: vec!["a.gguf".into()] }
            };
            let p = ModelProfile {
                name,
                provenance,
                arch: "qwen3".into(),
                alignment: 32,
                metadata: meta,
                files: vec![FileInfo { name: "a.gguf".into(), data_offset: 64, len: 128 }],
                tensors: tensors
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ty, dims, offset))| TensorEntry {
                        name: format!("blk.{i}.t.weight"),
                        ty,
                        dims,
                        file: 0,
                        offset,
                    })
                    .collect(),
            };
            let back = ModelProfile::from_toml_str(&p.to_toml(), Path::new("p.toml")).unwrap();
            prop_assert_eq!(back, p);
        }
    }
}
