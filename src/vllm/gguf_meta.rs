//! GGUF headers and ggplan profiles as vLLM configs: llama.cpp metadata keys
//! (`<arch>.attention.head_count`, …) mapped onto the HF field names that
//! [`ArchConfig::from_object`] reads (mapping: `shared/notes/vllm-tp-rules.md` §5).
//!
//! Quantisation is not read from the GGUF (vLLM serves the HF checkpoint);
//! give `--quant`.

use serde_json::{Map, Value as J};

use super::config::ArchConfig;
use crate::gguf::{Header, Value};
use crate::model::{MetaValue, ModelProfile};

/// One metadata value, reduced to what the mapping needs.
enum M {
    Int(u64),
    Ints(Vec<u64>),
    Str(String),
    Len(u64),
    Bools(Vec<bool>),
}

fn from_gguf(v: &Value) -> Option<M> {
    match v {
        Value::String(s) => Some(M::Str(s.clone())),
        Value::SkippedArray { len, .. } => Some(M::Len(*len)),
        Value::Array(items) => {
            if items.iter().all(|i| matches!(i, Value::Bool(_))) && !items.is_empty() {
                return Some(M::Bools(items.iter().filter_map(Value::as_bool).collect()));
            }
            let ints: Option<Vec<u64>> = items.iter().map(Value::as_u64).collect();
            Some(ints.map_or(M::Len(items.len() as u64), M::Ints))
        }
        other => other.as_u64().map(M::Int),
    }
}

fn from_profile(v: &MetaValue) -> Option<M> {
    match v {
        MetaValue::Int(i) => u64::try_from(*i).ok().map(M::Int),
        MetaValue::Ints(a) => a
            .iter()
            .map(|&i| u64::try_from(i).ok())
            .collect::<Option<Vec<_>>>()
            .map(M::Ints),
        MetaValue::Str(s) => Some(M::Str(s.clone())),
        MetaValue::Len { len } => Some(M::Len(*len)),
        MetaValue::Bools(b) => Some(M::Bools(b.clone())),
        MetaValue::Bool(_) | MetaValue::Float(_) | MetaValue::Floats(_) => None,
    }
}

/// Build the HF-style object from a metadata lookup.
fn hf_object(get: &dyn Fn(&str) -> Option<M>, name: &str) -> (Map<String, J>, String) {
    let mut o = Map::new();
    let arch = match get("general.architecture") {
        Some(M::Str(s)) => s,
        _ => String::new(),
    };
    let k = |suffix: &str| format!("{arch}.{suffix}");
    let int = |key: &str| match get(key) {
        Some(M::Int(v)) => Some(v),
        // per-layer arrays: the largest non-zero entry (the attention / FFN layers)
        Some(M::Ints(a)) => a.into_iter().filter(|&x| x > 0).max(),
        _ => None,
    };
    let ints = |key: &str| match get(key) {
        Some(M::Ints(a)) => Some(a),
        _ => None,
    };
    let put = |o: &mut Map<String, J>, field: &str, v: Option<u64>| {
        if let Some(v) = v {
            o.insert(field.into(), J::from(v));
        }
    };
    o.insert("model_type".into(), J::from(arch.replace('-', "_")));
    let nextn = int(&k("nextn_predict_layers")).unwrap_or(0);
    let blocks = int(&k("block_count"));
    put(
        &mut o,
        "num_hidden_layers",
        blocks.map(|b| b.saturating_sub(nextn)),
    );
    put(&mut o, "hidden_size", int(&k("embedding_length")));
    put(
        &mut o,
        "num_attention_heads",
        int(&k("attention.head_count")),
    );
    put(
        &mut o,
        "num_key_value_heads",
        int(&k("attention.head_count_kv")),
    );
    put(&mut o, "max_position_embeddings", int(&k("context_length")));
    put(&mut o, "num_experts", int(&k("expert_count")));
    put(&mut o, "num_experts_per_tok", int(&k("expert_used_count")));
    put(
        &mut o,
        "moe_intermediate_size",
        int(&k("expert_feed_forward_length")),
    );
    put(
        &mut o,
        "first_k_dense_replace",
        int(&k("leading_dense_block_count")),
    );
    put(
        &mut o,
        "full_attention_interval",
        int(&k("full_attention_interval")),
    );
    put(
        &mut o,
        "sliding_window",
        int(&k("attention.sliding_window")),
    );
    let n_exp = int(&k("expert_count")).unwrap_or(0);
    if let Some(s) = int(&k("expert_shared_feed_forward_length")) {
        o.insert("shared_expert_intermediate_size".into(), J::from(s));
    } else if let Some(n) = int(&k("expert_shared_count")) {
        o.insert("n_shared_experts".into(), J::from(n));
    }
    if n_exp > 0 && int(&k("expert_feed_forward_length")).is_none() {
        // Mixtral-style: the FFN length is the expert width.
        o.insert("num_local_experts".into(), J::from(n_exp));
        o.remove("num_experts");
    }
    put(&mut o, "intermediate_size", int(&k("feed_forward_length")));
    match get("tokenizer.ggml.tokens") {
        Some(M::Len(n)) => put(&mut o, "vocab_size", Some(n)),
        Some(M::Ints(a)) => put(&mut o, "vocab_size", Some(a.len() as u64)),
        _ => {}
    }
    // MLA (deepseek2 / glm4-moe-lite): latent rank, rope dim, and the
    // un-absorbed head sizes (`key_length_mla` / `value_length_mla` in newer files).
    if let Some(kvl) = int(&k("attention.kv_lora_rank")) {
        o.insert("kv_lora_rank".into(), J::from(kvl));
        put(&mut o, "q_lora_rank", int(&k("attention.q_lora_rank")));
        let rope = int(&k("rope.dimension_count"));
        put(&mut o, "qk_rope_head_dim", rope);
        let key = int(&k("attention.key_length_mla")).or_else(|| int(&k("attention.key_length")));
        put(
            &mut o,
            "qk_nope_head_dim",
            key.zip(rope).map(|(k, r)| k.saturating_sub(r)),
        );
        put(
            &mut o,
            "v_head_dim",
            int(&k("attention.value_length_mla")).or_else(|| int(&k("attention.value_length"))),
        );
    } else {
        put(&mut o, "head_dim", int(&k("attention.key_length")));
    }
    // Recurrent layers.
    let conv = int(&k("ssm.conv_kernel"));
    let state = int(&k("ssm.state_size"));
    let groups = int(&k("ssm.group_count"));
    let heads = int(&k("ssm.time_step_rank"));
    let inner = int(&k("ssm.inner_size"));
    if arch == "qwen3next" || arch == "qwen35" || arch == "qwen35moe" {
        // llama.cpp qwen3next: d_state = head_k_dim, n_group = num_k_heads,
        // dt_rank = num_v_heads, d_inner = head_v_dim × num_v_heads.
        put(&mut o, "linear_num_key_heads", groups);
        put(&mut o, "linear_num_value_heads", heads);
        put(&mut o, "linear_key_head_dim", state);
        put(
            &mut o,
            "linear_value_head_dim",
            inner.zip(heads).and_then(|(i, h)| i.checked_div(h)),
        );
        put(&mut o, "linear_conv_kernel_dim", conv);
    } else if heads.is_some() && arch.starts_with("nemotron_h") {
        put(&mut o, "mamba_num_heads", heads);
        put(
            &mut o,
            "mamba_head_dim",
            inner.zip(heads).and_then(|(i, h)| i.checked_div(h)),
        );
        put(&mut o, "n_groups", groups);
        put(&mut o, "ssm_state_size", state);
        put(&mut o, "conv_kernel", conv);
        // nemotron-h.cpp: a layer is recurrent iff n_head_kv(i) == 0 && n_ff(i) == 0.
        if let (Some(kv), Some(ff)) = (
            ints(&k("attention.head_count_kv")),
            ints(&k("feed_forward_length")),
        ) {
            let moe = n_exp > 0;
            let p: String = kv
                .iter()
                .zip(&ff)
                .map(|(&kv, &ff)| match (kv > 0, ff > 0) {
                    (true, _) => '*',
                    (false, true) if moe => 'E',
                    (false, true) => '-',
                    (false, false) => 'M',
                })
                .collect();
            o.insert("hybrid_override_pattern".into(), J::from(p));
            o.insert("mamba_ssm_cache_dtype".into(), J::from("float32"));
        }
    }
    // Sliding-window layouts llama.cpp knows per arch.
    if o.contains_key("sliding_window") {
        match get(&k("attention.sliding_window_pattern")) {
            Some(M::Bools(b)) => {
                let types: Vec<J> = b
                    .iter()
                    .map(|&swa| {
                        J::from(if swa {
                            "sliding_attention"
                        } else {
                            "full_attention"
                        })
                    })
                    .collect();
                o.insert("layer_types".into(), J::Array(types));
            }
            Some(M::Int(n)) => put(&mut o, "sliding_window_pattern", Some(n)),
            _ => match arch.as_str() {
                // llama-model.cpp: set_swa_pattern(6) for gemma3, (2) for gemma2
                "gemma3" => put(&mut o, "sliding_window_pattern", Some(6)),
                "gemma2" => put(&mut o, "sliding_window_pattern", Some(2)),
                "gpt-oss" => {}
                _ => {
                    // Which layers slide is not in the file: leave the layout unknown.
                    o.insert("layer_types".into(), J::from("unknown"));
                }
            },
        }
    }
    let name = match get("general.name") {
        Some(M::Str(s)) if !s.is_empty() => s,
        _ => name.to_string(),
    };
    (o, name)
}

/// A GGUF header as a vLLM config.
pub fn from_gguf_header(h: &Header, name: &str) -> ArchConfig {
    let get = |key: &str| h.get(key).and_then(from_gguf);
    let (o, name) = hf_object(&get, name);
    ArchConfig::from_object(&o, &name, Vec::new())
}

/// A ggplan profile (its stored metadata keys) as a vLLM config.
pub fn from_model_profile(p: &ModelProfile) -> ArchConfig {
    let get = |key: &str| {
        if key == "general.architecture" {
            return Some(M::Str(p.arch.clone()));
        }
        p.metadata.get(key).and_then(from_profile)
    };
    let (o, name) = hf_object(&get, &p.name);
    ArchConfig::from_object(&o, &name, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{read_header, write::Writer, Options};

    #[test]
    fn gguf_keys_map_to_hf_fields() {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String("qwen3".into()))
            .kv("qwen3.block_count", Value::U32(64))
            .kv("qwen3.embedding_length", Value::U32(5120))
            .kv("qwen3.attention.head_count", Value::U32(64))
            .kv("qwen3.attention.head_count_kv", Value::U32(8))
            .kv("qwen3.attention.key_length", Value::U32(128))
            .kv("qwen3.feed_forward_length", Value::U32(25600))
            .kv("qwen3.context_length", Value::U32(40960))
            .kv(
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("a".into()); 151936]),
            );
        let bytes = w.finish();
        let h = read_header(&bytes[..], &Options::default()).unwrap();
        let c = from_gguf_header(&h, "qwen3-32b");
        assert_eq!(c.num_hidden_layers, Some(64));
        assert_eq!(c.num_attention_heads, Some(64));
        assert_eq!(c.num_key_value_heads, Some(8));
        assert_eq!(c.head_dim, Some(128));
        assert_eq!(c.dense_intermediate, Some(25600));
        assert_eq!(c.vocab_size, Some(151936));
        assert_eq!(c.max_position_embeddings, Some(40960));
    }

    #[test]
    fn nemotron_h_per_layer_arrays_become_a_pattern() {
        use std::collections::BTreeMap;
        let mut m = BTreeMap::new();
        let a = "nemotron_h_moe";
        m.insert(format!("{a}.block_count"), MetaValue::Int(4));
        m.insert(format!("{a}.embedding_length"), MetaValue::Int(2688));
        m.insert(
            format!("{a}.attention.head_count"),
            MetaValue::Ints(vec![0, 0, 32, 0]),
        );
        m.insert(
            format!("{a}.attention.head_count_kv"),
            MetaValue::Ints(vec![0, 0, 2, 0]),
        );
        m.insert(
            format!("{a}.feed_forward_length"),
            MetaValue::Ints(vec![0, 1856, 0, 1856]),
        );
        m.insert(format!("{a}.expert_count"), MetaValue::Int(128));
        m.insert(
            format!("{a}.expert_feed_forward_length"),
            MetaValue::Int(1856),
        );
        m.insert(format!("{a}.ssm.time_step_rank"), MetaValue::Int(64));
        m.insert(format!("{a}.ssm.inner_size"), MetaValue::Int(4096));
        m.insert(format!("{a}.ssm.group_count"), MetaValue::Int(8));
        m.insert(format!("{a}.ssm.state_size"), MetaValue::Int(128));
        m.insert(format!("{a}.ssm.conv_kernel"), MetaValue::Int(4));
        let p = ModelProfile {
            name: "nemotron".into(),
            provenance: crate::model::Provenance::GgufHeader { files: vec![] },
            arch: a.into(),
            alignment: 32,
            metadata: m,
            files: vec![],
            tensors: vec![],
        };
        let c = from_model_profile(&p);
        use crate::vllm::config::{Ffn, Mixer};
        let layout = c.layout.clone().unwrap();
        assert_eq!(
            layout,
            vec![
                (Mixer::Mamba, Ffn::None),
                (Mixer::None, Ffn::Moe),
                (Mixer::Full, Ffn::None),
                (Mixer::None, Ffn::Moe)
            ]
        );
        let mamba = c.mamba.unwrap();
        assert_eq!(
            (mamba.num_heads, mamba.head_dim, mamba.n_groups),
            (Some(64), Some(64), Some(8))
        );
        assert_eq!(mamba.ssm_dtype_bytes, Some(4));
        assert_eq!(c.num_key_value_heads, Some(2));
    }
}
