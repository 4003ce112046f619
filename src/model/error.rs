//! Errors of profile loading and model analysis. Each names the key,
//! tensor or file at fault so the user can find it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the GGUF model {path}")]
    Gguf {
        path: PathBuf,
        #[source]
        source: crate::gguf::GgufError,
    },
    /// TOML syntax or schema error; the source carries line and column.
    #[error("invalid model profile {path}")]
    Toml {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid model profile {path}: {problem}")]
    Profile { path: PathBuf, problem: String },
    #[error("model has no 'general.architecture' key")]
    NoArchitecture,
    #[error("metadata key '{key}': {problem}")]
    BadKey { key: String, problem: String },
    #[error("tensor '{name}': {problem}")]
    BadTensor { name: String, problem: String },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
}
