//! Model profiles and their layout: what a planner needs to know about a
//! model without its weights.
//!
//! Two levels:
//!
//! * [`ModelProfile`] — the *stored* description: metadata keys the planner
//!   reads plus every tensor's name, type, dims and file position. It is
//!   what `ggplan profile MODEL -o models/NAME.toml` saves, so planning works
//!   without the multi-GB file. Built from a GGUF header (one or more
//!   shards) or loaded from TOML.
//! * [`Model`] — the *analysed* layout derived from a profile: hyper-
//!   parameters ([`HParams`]), every tensor classified ([`TensorClass`],
//!   [`TensorGroup`]) and one [`Block`] per `blk.N` with its attention kind,
//!   KV widths and bytes per group. Nothing in it is stored; it is recomputed
//!   from the profile by [`Model::from_profile`].
//!
//! The per-architecture rules mirror llama.cpp's `load_arch_hparams` /
//! `load_arch_tensors` (`src/models/<arch>.cpp`) and `llama_hparams`
//! (`src/llama-hparams.cpp`); see `shared/notes/llamacpp-internals.md` §3, §8.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gguf::GgmlType;

mod analyse;
mod error;
mod names;
mod profile;
mod toml_io;

#[cfg(test)]
mod tests;

pub use analyse::KNOWN_ARCHS;
pub use error::ModelError;
pub use names::{classify_name, is_routed_expert_name, split_block_name, FFN_EXPS_REGEX};
pub use profile::{ProfileOptions, PLANNER_GENERAL_KEYS};
pub use toml_io::PROFILE_FORMAT;

/// Where a profile's numbers come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Provenance {
    /// Read from a real GGUF header (file name(s) and total size recorded).
    GgufHeader { files: Vec<String> },
    /// Built from public configs and llama.cpp's quantisation rules (e.g. a
    /// sparse GGUF written by `oracle/` from a spec), not from a real file.
    Synthetic {
        description: String,
        sources: Vec<String>,
    },
}

/// A metadata value as stored in a profile (the subset a planner needs;
/// long arrays become their length).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetaValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Ints(Vec<i64>),
    Bools(Vec<bool>),
    Floats(Vec<f64>),
    /// A skipped long array (tokenizer tokens …): only its length matters.
    Len {
        len: u64,
    },
}

/// One file of the model (split models have several).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    pub name: String,
    /// Absolute offset of the data region in this file.
    pub data_offset: u64,
    /// File length in bytes.
    pub len: u64,
}

/// One tensor as stored in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// Index into [`ModelProfile::files`].
    pub file: u16,
    /// Offset relative to the file's data region (needed for mmap spans,
    /// llama.cpp `get_mapping_range`).
    pub offset: u64,
}

impl TensorEntry {
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.nbytes(&self.dims)
    }
}

/// The stored, serialisable description of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Short name (`general.name` or the file stem).
    pub name: String,
    pub provenance: Provenance,
    /// `general.architecture`.
    pub arch: String,
    /// `general.alignment` (32 by default).
    pub alignment: u64,
    /// Metadata keys the planner reads (`<arch>.*`, a few `general.*`,
    /// tokenizer model and vocab length).
    pub metadata: BTreeMap<String, MetaValue>,
    pub files: Vec<FileInfo>,
    pub tensors: Vec<TensorEntry>,
}

/// Attention kind of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Full causal attention with a standard K/V cache.
    Full,
    /// Sliding-window attention (window in tokens).
    Swa { window: u32 },
    /// Multi-head latent attention: K-only latent cache, no V cache.
    Mla,
    /// Recurrent state instead of a KV cache (Mamba2, Gated DeltaNet, LFM2 short conv, RWKV).
    Recurrent,
    /// Neither (MLP-only layers of nemotron_h).
    None,
}

/// Which part of a block a tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorGroup {
    Attention,
    Norm,
    /// Dense FFN (`ffn_up/gate/down` without `_exps`/`_shexp`).
    FfnDense,
    /// Routed experts (`ffn_*_exps`, matched by llama.cpp's `LLM_FFN_EXPS_REGEX`).
    FfnRouted,
    /// Shared experts (`ffn_*_shexp`).
    FfnShared,
    /// Router / gating (`ffn_gate_inp`, `exp_probs_b`).
    Router,
    /// Recurrent mixer weights (SSM, GDN, short conv, RWKV time mix).
    Recurrent,
    Other,
}

/// Layer class as llama.cpp's `llm_tensor_info_for` assigns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "class")]
pub enum TensorClass {
    /// Always on the CPU (`token_embd`, `position_embd`, …).
    Input,
    /// Follows the output "layer" (`output`, `output_norm`, …).
    Output,
    /// `blk.<layer>.*`.
    Layer { layer: u32, group: TensorGroup },
}

/// A tensor with its classification.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Index into [`ModelProfile::tensors`].
    pub index: usize,
    pub class: TensorClass,
    /// Not allocated by llama.cpp in the main model (NextN/MTP weights
    /// without `load_mtp`: `TENSOR_SKIP`).
    pub skipped: bool,
    /// `ggml_nbytes` of the tensor (known for every analysed tensor).
    pub bytes: u64,
}

/// Hyperparameters, per layer where llama.cpp has per-layer arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HParams {
    /// `block_count` = n_layer_all, includes NextN/MTP blocks.
    pub n_layer: u32,
    /// `nextn_predict_layers` (the last `n_nextn` blocks).
    pub n_nextn: u32,
    pub n_embd: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// Per layer (len = n_layer).
    pub n_head: Vec<u32>,
    pub n_head_kv: Vec<u32>,
    /// K/V head sizes per layer (SWA layers may differ).
    pub head_dim_k: Vec<u32>,
    pub head_dim_v: Vec<u32>,
    pub n_ff: Vec<u64>,
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_ff_exp: u64,
    pub n_expert_shared: u32,
    pub n_ff_shexp: u64,
    /// Recurrent state widths (F32 elements per sequence per recurrent layer):
    /// `n_embd_r()` (conv/shift) and `n_embd_s()` (ssm/wkv), llama-hparams.cpp.
    pub n_embd_r: u64,
    pub n_embd_s: u64,
    /// `output.weight` absent: the output reuses `token_embd` (duplicated on a GPU).
    pub tied_embeddings: bool,
}

/// One `blk.N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub index: u32,
    pub attention: AttentionKind,
    /// A NextN/MTP block (weights skipped unless `load_mtp`).
    pub nextn: bool,
    /// Whether llama.cpp (b11434) allocates KV cells for this layer in the main
    /// context. NextN/MTP blocks get none (`create_memory` filters
    /// `il < n_layer()`), except nemotron_h(_moe) MTP blocks with `n_ff == 0`.
    /// Older builds (llamacpp-internals §3.7 snapshot) also allocated the
    /// NextN blocks of deepseek2/glm4moe: `nextn && k_width > 0` finds them.
    pub has_kv: bool,
    /// K elements per token per cell: head_dim_k × n_head_kv (MLA: kv_lora_rank
    /// plus the rope dim). Set for every layer that attends, NextN blocks
    /// included; count it only where `has_kv`. 0 for recurrent-only and
    /// FFN-only layers.
    pub k_width: u64,
    /// V elements per token per cell (0 for MLA, recurrent, none). Count it only where `has_kv`.
    pub v_width: u64,
    /// Whether the layer keeps recurrent state (R and S of `n_embd_r/s`).
    pub recurrent: bool,
    /// Bytes per group of the allocated (non-skipped) tensors of this block.
    pub bytes: BTreeMap<TensorGroup, u64>,
    /// Bytes of this block's tensors that llama.cpp does not allocate
    /// (`TENSOR_SKIP`: NextN/MTP weights without `load_mtp`).
    #[serde(default)]
    pub skipped_bytes: u64,
}

/// The analysed model.
#[derive(Clone, Debug)]
pub struct Model {
    pub profile: ModelProfile,
    pub hparams: HParams,
    pub blocks: Vec<Block>,
    /// Same order as `profile.tensors`.
    pub tensors: Vec<Tensor>,
    /// Warnings from the analysis (e.g. an unknown architecture: generic layout rules).
    pub warnings: Vec<String>,
}
