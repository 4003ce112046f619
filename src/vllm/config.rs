//! A typed, normalised view of a model's architecture, as vLLM reads it from
//! a Hugging Face `config.json`.
//!
//! Every field a rule needs is an `Option`: a missing field stays missing and
//! the rule that needs it answers "unknown because X is missing" — nothing is
//! filled in by guessing. The only fallbacks applied are the ones vLLM itself
//! applies (`head_dim = hidden_size / num_attention_heads` in
//! `ModelConfig.get_head_size`, `num_key_value_heads = num_attention_heads` in
//! `ModelConfig.get_total_num_kv_heads`), and each is recorded in
//! [`ArchConfig::derivations`].
//!
//! Inputs:
//! * a HF `config.json` ([`ArchConfig::from_hf_json`]); multimodal wrappers
//!   are unwrapped through `text_config` (vLLM `hf_text_config`), the vision
//!   tower's head count is kept for the vision-head rule;
//! * a table in the style of `shared/notes/model-configs.toml` (HF field names
//!   plus `not_found`, `hf_id`, `gguf_arch`; [`ArchConfig::from_notes_table`]);
//! * a GGUF header or a ggplan profile, through [`super::gguf_meta`], which maps
//!   llama.cpp metadata keys onto the same HF field names.

use serde::Serialize;
use serde_json::{Map, Value};

use super::VllmError;

/// What the mixer of one decoder layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mixer {
    /// Full causal attention (KV cache grows with the context).
    Full,
    /// Sliding-window or chunked-local attention: KV bounded by the window.
    Swa { window: u64 },
    /// Multi-head latent attention: one latent per token, not split by TP.
    Mla,
    /// Gated DeltaNet (Qwen3-Next / Qwen3.5 linear attention): constant state.
    Gdn,
    /// Mamba2 mixer: constant state.
    Mamba,
    /// No mixer (Nemotron-H MLP/MoE-only layers).
    None,
}

/// What the feed-forward part of one decoder layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ffn {
    Dense,
    Moe,
    None,
}

/// Multi-head latent attention dims (DeepSeek-V2/V3, GLM-4.7-Flash, Kimi).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mla {
    pub kv_lora_rank: Option<u64>,
    pub q_lora_rank: Option<u64>,
    pub qk_rope_head_dim: Option<u64>,
    pub qk_nope_head_dim: Option<u64>,
    pub v_head_dim: Option<u64>,
}

/// Mixture-of-experts dims.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Moe {
    pub num_experts: Option<u64>,
    pub experts_per_tok: Option<u64>,
    /// Per-expert intermediate width (`moe_intermediate_size`, or
    /// `intermediate_size` for Mixtral-style configs with `num_local_experts`).
    pub intermediate: Option<u64>,
    /// Shared-expert width (one MLP; DeepSeek's `n_shared_experts ×
    /// moe_intermediate_size`), `Some(0)`-free: `None` when the model has none.
    pub shared_intermediate: Option<u64>,
    /// Whether the model has a shared expert at all.
    pub has_shared: bool,
    /// The config field each width comes from (for "unknown because X is missing").
    pub intermediate_field: &'static str,
    pub shared_field: &'static str,
}

/// Mamba2 mixer dims (Nemotron-H).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mamba2 {
    pub num_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub n_groups: Option<u64>,
    pub state_size: Option<u64>,
    pub conv_kernel: Option<u64>,
    /// Bytes of one SSM-state element (`mamba_ssm_cache_dtype`; fp32 = 4).
    pub ssm_dtype_bytes: Option<u64>,
}

impl Mamba2 {
    /// Mamba inner width: `mamba_num_heads × mamba_head_dim` (vLLM
    /// `nemotron_h.py` builds `MambaMixer2(intermediate_size = heads × head_dim)`).
    pub fn inner(&self) -> Option<u64> {
        Some(self.num_heads? * self.head_dim?)
    }
}

/// Gated-DeltaNet dims (Qwen3-Next).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gdn {
    pub num_k_heads: Option<u64>,
    pub num_v_heads: Option<u64>,
    pub k_head_dim: Option<u64>,
    pub v_head_dim: Option<u64>,
    pub conv_kernel: Option<u64>,
}

impl Gdn {
    /// `conv_dim = 2·k_heads·k_dim + v_heads·v_dim` (`QwenGatedDeltaNetAttention`).
    pub fn conv_dim(&self) -> Option<u64> {
        Some(2 * self.num_k_heads? * self.k_head_dim? + self.num_v_heads? * self.v_head_dim?)
    }
}

/// The checkpoint's own quantisation, from `quantization_config`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum CheckpointQuant {
    Fp8 {
        /// `weight_block_size` (`[n, k]`); `None` = per-channel/per-tensor.
        block: Option<(u64, u64)>,
    },
    Awq {
        bits: Option<u64>,
        group_size: Option<i64>,
    },
    Gptq {
        bits: Option<u64>,
        group_size: Option<i64>,
    },
    /// compressed-tensors, reduced to the scheme of its weight group.
    CompressedTensors {
        /// `int` or `float`.
        weight_type: Option<String>,
        bits: Option<u64>,
        /// `group`, `channel`, `block`, `tensor`.
        strategy: Option<String>,
        group_size: Option<i64>,
        block: Option<(u64, u64)>,
    },
    Mxfp4,
    /// Any other `quant_method` (kept by name, no rule applied).
    Other {
        name: String,
    },
}

/// The normalised architecture.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArchConfig {
    /// A short name for reports (`hf_id`, `_name_or_path`, or the file stem).
    pub name: String,
    /// `model_type` of the text config (or the notes' `gguf_arch`).
    pub model_type: Option<String>,
    pub num_hidden_layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub num_attention_heads: Option<u64>,
    pub num_key_value_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub vocab_size: Option<u64>,
    pub max_position_embeddings: Option<u64>,
    pub tie_word_embeddings: bool,
    /// Dense MLP width, when the model has dense-MLP layers.
    pub dense_intermediate: Option<u64>,
    /// Whether any layer has a dense MLP.
    pub has_dense_ffn: bool,
    /// The field the dense width comes from (`intermediate_size_mlp` for Llama-4).
    pub dense_field: &'static str,
    pub moe: Option<Moe>,
    pub mla: Option<Mla>,
    pub mamba: Option<Mamba2>,
    pub gdn: Option<Gdn>,
    /// Sliding window (tokens) when the model has sliding/chunked layers.
    pub sliding_window: Option<u64>,
    /// One entry per decoder layer; `Err(field)` names what is missing to know the layout.
    #[serde(skip)]
    pub layout: Result<Vec<(Mixer, Ffn)>, String>,
    /// Vision tower attention heads (must divide TP too; vllm#24004).
    pub vision_heads: Option<u64>,
    pub quant: Option<CheckpointQuant>,
    /// Fields the source says it could not find (`not_found` in the notes).
    pub not_found: Vec<String>,
    /// Fallbacks vLLM applies that were used here, in words.
    pub derivations: Vec<String>,
}

fn get_u64(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

fn get_i64(obj: &Map<String, Value>, key: &str) -> Option<i64> {
    obj.get(key)?.as_i64()
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)?.as_str()
}

fn get_block(obj: &Map<String, Value>, key: &str) -> Option<(u64, u64)> {
    let arr = obj.get(key)?.as_array()?;
    match arr.as_slice() {
        [n, k] => Some((n.as_u64()?, k.as_u64()?))
            .filter(|&(n, k)| n > 0 && k > 0 && n <= 1 << 16 && k <= 1 << 16),
        _ => None,
    }
}

/// The largest value accepted for a dimension: far above any real model
/// (2^20 = 1,048,576), low enough that products of a few dims stay in u64.
const MAX_DIM: u64 = 1 << 20;

/// Per-field limits above [`MAX_DIM`] (lengths and vocabularies are larger).
fn field_limit(key: &str) -> u64 {
    match key {
        "vocab_size" => 1 << 24,
        "max_position_embeddings" | "sliding_window" | "attention_chunk_size" => 1 << 32,
        _ => MAX_DIM,
    }
}

/// Drop numeric fields beyond their limit (a hostile or broken config must not
/// overflow the byte maths); each drop is recorded, and the field then reads
/// as missing.
fn sanitise(obj: &Map<String, Value>, notes: &mut Vec<String>) -> Map<String, Value> {
    let mut out = obj.clone();
    for (k, v) in obj {
        let bad = match v {
            Value::Number(n) => match n.as_u64() {
                Some(x) => x > field_limit(k),
                None => n.as_f64().is_some_and(|f| f > field_limit(k) as f64),
            },
            _ => false,
        };
        if bad {
            notes.push(format!(
                "{k} = {v} is out of range (> {}): treated as missing",
                field_limit(k)
            ));
            out.remove(k);
        }
    }
    out
}

fn parse_quant(q: &Map<String, Value>) -> CheckpointQuant {
    let method = get_str(q, "quant_method")
        .unwrap_or("")
        .to_ascii_lowercase();
    match method.as_str() {
        "fp8" => CheckpointQuant::Fp8 {
            block: get_block(q, "weight_block_size"),
        },
        "awq" | "awq_marlin" => CheckpointQuant::Awq {
            bits: get_u64(q, "bits").or_else(|| get_u64(q, "w_bit")),
            group_size: get_i64(q, "group_size").or_else(|| get_i64(q, "q_group_size")),
        },
        "gptq" | "gptq_marlin" => CheckpointQuant::Gptq {
            bits: get_u64(q, "bits"),
            group_size: get_i64(q, "group_size"),
        },
        "mxfp4" => CheckpointQuant::Mxfp4,
        "compressed-tensors" | "compressed_tensors" => {
            // The scheme of the first config group's weights (the one that
            // targets Linear layers in every checkpoint seen).
            let w = q
                .get("config_groups")
                .and_then(Value::as_object)
                .and_then(|g| g.values().next())
                .and_then(Value::as_object)
                .and_then(|g| g.get("weights"))
                .and_then(Value::as_object);
            match w {
                Some(w) => CheckpointQuant::CompressedTensors {
                    weight_type: get_str(w, "type").map(str::to_string),
                    bits: get_u64(w, "num_bits"),
                    strategy: get_str(w, "strategy").map(str::to_string),
                    group_size: get_i64(w, "group_size"),
                    block: get_block(w, "block_structure"),
                },
                None => CheckpointQuant::CompressedTensors {
                    weight_type: None,
                    bits: None,
                    strategy: None,
                    group_size: None,
                    block: None,
                },
            }
        }
        other => CheckpointQuant::Other {
            name: other.to_string(),
        },
    }
}

/// The field name of a `not_found` entry: its first word (`"vocab_size (4.0-specific…)"` → `vocab_size`).
fn not_found_field(entry: &str) -> String {
    entry
        .split(|c: char| c.is_whitespace() || c == '(')
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string()
}

impl ArchConfig {
    /// Parse a HF `config.json` text.
    pub fn from_hf_json(text: &str, name: &str) -> Result<ArchConfig, VllmError> {
        let v: Value = serde_json::from_str(text).map_err(|e| VllmError::Json {
            what: name.to_string(),
            source: e,
        })?;
        let obj = v.as_object().ok_or_else(|| VllmError::Shape {
            what: name.to_string(),
            detail: "config.json is not a JSON object".into(),
        })?;
        Ok(Self::from_object(obj, name, Vec::new()))
    }

    /// Parse one table of a `model-configs.toml`-style file (HF field names,
    /// plus `hf_id`, `gguf_arch`, `not_found`).
    pub fn from_notes_table(table: &toml::Table, key: &str) -> Result<ArchConfig, VllmError> {
        let v = serde_json::to_value(table).map_err(|e| VllmError::Json {
            what: key.to_string(),
            source: e,
        })?;
        let obj = v.as_object().cloned().unwrap_or_default();
        let not_found: Vec<String> = obj
            .get("not_found")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(not_found_field)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let name = get_str(&obj, "hf_id").unwrap_or(key).to_string();
        let mut obj = obj;
        // The notes name the llama.cpp arch; vLLM keys layouts on model_type.
        if !obj.contains_key("model_type") {
            if let Some(arch) = get_str(&obj, "gguf_arch") {
                let first = arch.split_whitespace().next().unwrap_or("").to_string();
                obj.insert("model_type".into(), Value::String(first.replace('-', "_")));
            }
        }
        Ok(Self::from_object(&obj, &name, not_found))
    }

    /// Whether the source declared `field` as not found (or "all" fields).
    fn declared_missing(not_found: &[String], field: &str) -> bool {
        not_found.iter().any(|f| f == field || f == "all")
    }

    /// Build from a HF-style object (top level of config.json).
    pub fn from_object(top: &Map<String, Value>, name: &str, not_found: Vec<String>) -> ArchConfig {
        let mut derivations = Vec::new();
        let top = &sanitise(top, &mut derivations);
        // vLLM reads the text part of multimodal wrappers (`hf_text_config`).
        let text_owned = top
            .get("text_config")
            .and_then(Value::as_object)
            .map(|t| sanitise(t, &mut derivations));
        let text = text_owned.as_ref().unwrap_or(top);
        let model_type = get_str(text, "model_type")
            .or_else(|| get_str(top, "model_type"))
            .map(str::to_string);
        let mt = model_type.as_deref().unwrap_or("");

        let name = get_str(top, "_name_or_path")
            .filter(|s| !s.is_empty())
            .map_or_else(|| name.to_string(), str::to_string);

        let layers = get_u64(text, "num_hidden_layers");
        let hidden = get_u64(text, "hidden_size");
        let heads = get_u64(text, "num_attention_heads");
        // ModelConfig.get_total_num_kv_heads: the first of these attributes,
        // else num_attention_heads (MHA).
        let kv_heads = ["num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"]
            .iter()
            .find_map(|k| get_u64(text, k))
            .or_else(|| {
                if Self::declared_missing(&not_found, "num_key_value_heads") {
                    return None;
                }
                let h = heads?;
                derivations.push(format!(
                    "num_key_value_heads absent: vLLM uses num_attention_heads = {h} (ModelConfig.get_total_num_kv_heads)"
                ));
                Some(h)
            });
        let is_mla = get_u64(text, "kv_lora_rank").is_some();
        let head_dim = get_u64(text, "head_dim").or_else(|| {
            // MLA sizes its heads from qk_*_head_dim / kv_lora_rank instead.
            if is_mla || Self::declared_missing(&not_found, "head_dim") {
                return None;
            }
            let (h, n) = (hidden?, heads?);
            if n == 0 {
                return None;
            }
            derivations.push(format!(
                "head_dim absent: vLLM uses hidden_size / num_attention_heads = {} (ModelConfig.get_head_size)",
                h / n
            ));
            Some(h / n)
        });

        // ---- MLA
        let mla = get_u64(text, "kv_lora_rank").map(|kv_lora| Mla {
            kv_lora_rank: Some(kv_lora),
            q_lora_rank: get_u64(text, "q_lora_rank"),
            qk_rope_head_dim: get_u64(text, "qk_rope_head_dim"),
            qk_nope_head_dim: get_u64(text, "qk_nope_head_dim"),
            v_head_dim: get_u64(text, "v_head_dim"),
        });

        // ---- MoE
        let num_experts = ["num_experts", "n_routed_experts", "num_local_experts"]
            .iter()
            .find_map(|k| get_u64(text, k))
            .filter(|&e| e > 0);
        let mixtral_style = get_u64(text, "moe_intermediate_size").is_none()
            && get_u64(text, "num_local_experts").is_some();
        let is_llama4 = mt.starts_with("llama4");
        let moe = num_experts.map(|e| {
            let intermediate = if mixtral_style {
                get_u64(text, "intermediate_size")
            } else {
                get_u64(text, "moe_intermediate_size")
            };
            let (has_shared, shared, shared_field) =
                if let Some(s) = get_u64(text, "shared_expert_intermediate_size") {
                    (
                        s > 0,
                        Some(s).filter(|&s| s > 0),
                        "shared_expert_intermediate_size",
                    )
                } else if let Some(s) = get_u64(text, "moe_shared_expert_intermediate_size") {
                    (
                        s > 0,
                        Some(s).filter(|&s| s > 0),
                        "moe_shared_expert_intermediate_size",
                    )
                } else if let Some(n) = get_u64(text, "n_shared_experts") {
                    // DeepSeek/GLM: one MLP of n_shared × moe_intermediate (deepseek_v2.py).
                    (
                        n > 0,
                        get_u64(text, "moe_intermediate_size")
                            .map(|i| i * n)
                            .filter(|_| n > 0),
                        "moe_intermediate_size",
                    )
                } else if is_llama4 {
                    // Llama4MoE always has a shared expert of intermediate_size (llama4.py).
                    (
                        true,
                        get_u64(text, "intermediate_size"),
                        "intermediate_size",
                    )
                } else {
                    (false, None, "shared_expert_intermediate_size")
                };
            Moe {
                num_experts: Some(e),
                experts_per_tok: get_u64(text, "num_experts_per_tok"),
                intermediate,
                shared_intermediate: shared,
                has_shared,
                intermediate_field: if mixtral_style {
                    "intermediate_size"
                } else {
                    "moe_intermediate_size"
                },
                shared_field,
            }
        });

        // ---- Mamba2 / GDN
        let pattern = get_str(text, "hybrid_override_pattern").map(str::to_string);
        let mamba = if pattern.as_deref().is_some_and(|p| p.contains('M'))
            || get_u64(text, "mamba_num_heads").is_some()
        {
            Some(Mamba2 {
                num_heads: get_u64(text, "mamba_num_heads"),
                head_dim: get_u64(text, "mamba_head_dim"),
                n_groups: get_u64(text, "n_groups"),
                state_size: get_u64(text, "ssm_state_size"),
                conv_kernel: get_u64(text, "conv_kernel"),
                ssm_dtype_bytes: match get_str(text, "mamba_ssm_cache_dtype") {
                    Some("float32") => Some(4),
                    Some("bfloat16" | "float16" | "auto") | None => Some(2),
                    Some(_) => None,
                },
            })
        } else {
            None
        };
        let gdn = get_u64(text, "linear_num_value_heads").map(|v| Gdn {
            num_k_heads: get_u64(text, "linear_num_key_heads"),
            num_v_heads: Some(v),
            k_head_dim: get_u64(text, "linear_key_head_dim"),
            v_head_dim: get_u64(text, "linear_value_head_dim"),
            conv_kernel: get_u64(text, "linear_conv_kernel_dim"),
        });

        // ---- sliding window
        let sliding_window = get_u64(text, "sliding_window")
            .or_else(|| get_u64(text, "attention_chunk_size"))
            .filter(|&w| w > 0);

        // ---- dense FFN presence and width
        let first_k_dense = get_u64(text, "first_k_dense_replace").unwrap_or(0);
        let mlp_only = text
            .get("mlp_only_layers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let sparse_step = get_u64(text, "decoder_sparse_step").unwrap_or(1);
        let interleave = get_u64(text, "interleave_moe_layer_step").unwrap_or(1);
        let has_dense_ffn = match (&pattern, &moe) {
            (Some(p), _) => p.contains('-'),
            (None, None) => true,
            (None, Some(_)) => {
                first_k_dense > 0 || mlp_only > 0 || sparse_step > 1 || interleave > 1
            }
        };
        let dense_intermediate = if !has_dense_ffn {
            None
        } else if is_llama4 {
            get_u64(text, "intermediate_size_mlp")
        } else {
            get_u64(text, "intermediate_size")
        };

        // ---- layout per layer
        let layout = Self::layout(
            text,
            mt,
            layers,
            &pattern,
            &moe,
            &mla,
            &gdn,
            sliding_window,
            first_k_dense,
            sparse_step,
            interleave,
        );

        // ---- vision tower heads
        let vision_heads = top
            .get("vision_config")
            .and_then(Value::as_object)
            .and_then(|v| get_u64(v, "num_attention_heads").or_else(|| get_u64(v, "num_heads")))
            .filter(|&h| h <= MAX_DIM);

        let quant = top
            .get("quantization_config")
            .or_else(|| text.get("quantization_config"))
            .and_then(Value::as_object)
            .map(parse_quant);

        let tie = text
            .get("tie_word_embeddings")
            .or_else(|| top.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

        ArchConfig {
            name,
            model_type,
            num_hidden_layers: layers,
            hidden_size: hidden,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: get_u64(text, "vocab_size"),
            max_position_embeddings: get_u64(text, "max_position_embeddings"),
            tie_word_embeddings: tie,
            dense_intermediate,
            has_dense_ffn,
            dense_field: if is_llama4 {
                "intermediate_size_mlp"
            } else {
                "intermediate_size"
            },
            moe,
            mla,
            mamba,
            gdn,
            sliding_window,
            layout,
            vision_heads,
            quant,
            not_found,
            derivations,
        }
    }

    /// Per-layer (mixer, ffn), mirroring how each vLLM model file decides.
    #[allow(clippy::too_many_arguments)]
    fn layout(
        text: &Map<String, Value>,
        mt: &str,
        layers: Option<u64>,
        pattern: &Option<String>,
        moe: &Option<Moe>,
        mla: &Option<Mla>,
        gdn: &Option<Gdn>,
        window: Option<u64>,
        first_k_dense: u64,
        sparse_step: u64,
        interleave: u64,
    ) -> Result<Vec<(Mixer, Ffn)>, String> {
        // Nemotron-H: one char per layer (nemotron_h.py ALL_DECODER_LAYER_TYPES).
        if let Some(p) = pattern {
            return p
                .chars()
                .map(|c| match c {
                    'M' => Ok((Mixer::Mamba, Ffn::None)),
                    '*' => Ok((Mixer::Full, Ffn::None)),
                    '-' => Ok((Mixer::None, Ffn::Dense)),
                    'E' => Ok((Mixer::None, Ffn::Moe)),
                    other => Err(format!(
                        "hybrid_override_pattern (unknown layer char {other:?})"
                    )),
                })
                .collect();
        }
        let n = layers.ok_or_else(|| "num_hidden_layers".to_string())?;
        let n_usize = usize::try_from(n).map_err(|_| "num_hidden_layers".to_string())?;
        if n_usize > 100_000 {
            return Err("num_hidden_layers (implausibly large)".into());
        }
        let layer_types: Option<Vec<String>> =
            text.get("layer_types").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("").to_string())
                    .collect()
            });
        let swa = |w: Option<u64>| -> Result<Mixer, String> {
            w.map(|window| Mixer::Swa { window })
                .ok_or_else(|| "sliding_window".to_string())
        };
        let attn = if mla.is_some() {
            Mixer::Mla
        } else {
            Mixer::Full
        };
        let mut mixers = Vec::with_capacity(n_usize);
        for i in 0..n {
            let m = if let Some(types) = &layer_types {
                match types.get(i as usize).map(String::as_str) {
                    Some("full_attention") => attn,
                    Some("sliding_attention" | "chunked_attention") => swa(window)?,
                    Some("linear_attention") => Mixer::Gdn,
                    Some("mamba") => Mixer::Mamba,
                    _ => return Err(format!("layer_types (entry {i} missing or unknown)")),
                }
            } else if gdn.is_some() {
                // Qwen3-Next: full attention on every full_attention_interval-th layer.
                let k = get_u64(text, "full_attention_interval")
                    .filter(|&k| k > 0)
                    .ok_or_else(|| "full_attention_interval".to_string())?;
                if (i + 1) % k == 0 {
                    attn
                } else {
                    Mixer::Gdn
                }
            } else if let Some(p) = get_str(text, "sliding_window_pattern") {
                // EXAONE-4: "LLLG" — L local (sliding), G global.
                let c = p.chars().nth((i as usize) % p.chars().count().max(1));
                match c {
                    Some('L') => swa(window)?,
                    Some('G') => attn,
                    _ => return Err("sliding_window_pattern (not L/G)".into()),
                }
            } else if let Some(k) = get_u64(text, "sliding_window_pattern").filter(|&k| k > 0) {
                // Gemma-3: every k-th layer global.
                if (i + 1) % k == 0 {
                    attn
                } else {
                    swa(window)?
                }
            } else if mt == "gpt_oss" {
                // vllm gpt_oss.py: sliding window on layer_idx % 2 == 0.
                if i % 2 == 0 {
                    swa(window)?
                } else {
                    attn
                }
            } else if mt.starts_with("llama4") && get_u64(text, "attention_chunk_size").is_some() {
                // llama4.py: chunked-local attention on RoPE layers; HF default
                // no_rope_layers marks every 4th layer NoPE (global).
                let rope = text
                    .get("no_rope_layers")
                    .and_then(Value::as_array)
                    .map(|a| a.get(i as usize).and_then(Value::as_u64).unwrap_or(1) != 0)
                    .unwrap_or((i + 1) % 4 != 0);
                if rope {
                    swa(window)?
                } else {
                    attn
                }
            } else if window.is_some() && text.get("layer_types").is_some_and(Value::is_string) {
                // A prose/unknown layer_types: which layers slide is not given.
                return Err("layer_types (which layers use the sliding window)".into());
            } else if window.is_some()
                && get_u64(text, "attention_chunk_size").is_none()
                && text.get("use_sliding_window").and_then(Value::as_bool) != Some(false)
            {
                // Mistral-style: one window on every layer.
                swa(window)?
            } else {
                attn
            };
            let f = match moe {
                None => Ffn::Dense,
                Some(_) => {
                    let dense = i < first_k_dense
                        || text
                            .get("mlp_only_layers")
                            .and_then(Value::as_array)
                            .is_some_and(|a| a.iter().any(|v| v.as_u64() == Some(i)))
                        || (i + 1) % sparse_step.max(1) != 0
                        || (mt.starts_with("llama4") && (i + 1) % interleave.max(1) != 0);
                    if dense {
                        Ffn::Dense
                    } else {
                        Ffn::Moe
                    }
                }
            };
            mixers.push((m, f));
        }
        Ok(mixers)
    }

    /// Whether this model uses MLA (the KV-head rule does not apply).
    pub fn is_mla(&self) -> bool {
        self.mla.is_some()
    }

    /// Layers of each mixer kind, when the layout is known.
    pub fn count_mixers(&self, pred: impl Fn(Mixer) -> bool) -> Option<u64> {
        self.layout
            .as_ref()
            .ok()
            .map(|l| l.iter().filter(|(m, _)| pred(*m)).count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_config_is_unwrapped_and_vision_heads_kept() {
        let j = r#"{"model_type":"glm4v_moe","vision_config":{"num_heads":12},
            "text_config":{"model_type":"glm4v_moe_text","num_hidden_layers":46,"hidden_size":4096,
            "num_attention_heads":96,"num_key_value_heads":8,"head_dim":128,"vocab_size":151552}}"#;
        let c = ArchConfig::from_hf_json(j, "glm45v").unwrap();
        assert_eq!(c.num_attention_heads, Some(96));
        assert_eq!(c.num_key_value_heads, Some(8));
        assert_eq!(c.vision_heads, Some(12));
        assert_eq!(c.model_type.as_deref(), Some("glm4v_moe_text"));
    }

    #[test]
    fn vllm_fallbacks_are_recorded() {
        let j = r#"{"num_hidden_layers":2,"hidden_size":4096,"num_attention_heads":32,"intermediate_size":11008,"vocab_size":32000}"#;
        let c = ArchConfig::from_hf_json(j, "llama2").unwrap();
        assert_eq!(c.num_key_value_heads, Some(32));
        assert_eq!(c.head_dim, Some(128));
        assert_eq!(c.derivations.len(), 2);
    }

    #[test]
    fn not_found_field_takes_first_word() {
        assert_eq!(
            not_found_field("vocab_size (4.0-specific; x)"),
            "vocab_size"
        );
        assert_eq!(
            not_found_field("num_hidden_layers for Scout"),
            "num_hidden_layers"
        );
        assert_eq!(not_found_field("all fields (none)"), "all");
    }

    #[test]
    fn quantization_configs() {
        let j = r#"{"quantization_config":{"quant_method":"fp8","weight_block_size":[128,128]}}"#;
        let c = ArchConfig::from_hf_json(j, "x").unwrap();
        assert_eq!(
            c.quant,
            Some(CheckpointQuant::Fp8 {
                block: Some((128, 128))
            })
        );
        let j = r#"{"quantization_config":{"quant_method":"compressed-tensors","config_groups":{"group_0":
            {"targets":["Linear"],"weights":{"num_bits":4,"type":"int","strategy":"group","group_size":128}}}}}"#;
        let c = ArchConfig::from_hf_json(j, "x").unwrap();
        match c.quant {
            Some(CheckpointQuant::CompressedTensors {
                bits, group_size, ..
            }) => {
                assert_eq!((bits, group_size), (Some(4), Some(128)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_sizes_are_dropped_not_overflowed() {
        let j = r#"{"num_hidden_layers":2,"hidden_size":1e30,"num_attention_heads":18446744073709551615,
            "num_key_value_heads":8,"intermediate_size":4096,"vocab_size":32000,
            "quantization_config":{"quant_method":"fp8","weight_block_size":[0,128]}}"#;
        let c = ArchConfig::from_hf_json(j, "x").unwrap();
        assert_eq!(c.hidden_size, None);
        assert_eq!(c.num_attention_heads, None);
        assert_eq!(c.quant, Some(CheckpointQuant::Fp8 { block: None }));
        assert!(c
            .derivations
            .iter()
            .any(|d| d.starts_with("hidden_size = ")));
    }

    #[test]
    fn not_json_is_an_error_not_a_panic() {
        assert!(ArchConfig::from_hf_json("[1,2]", "x").is_err());
        assert!(ArchConfig::from_hf_json("{", "x").is_err());
    }
}
