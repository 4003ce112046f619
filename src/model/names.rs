//! Tensor name → class and group, as llama.cpp names tensors
//! (`LLM_TENSOR_NAMES` in `src/llama-arch.cpp`) and classifies them
//! (`llm_tensor_info_for`, `LLM_TENSOR_INFOS`).

use std::sync::OnceLock;

use regex::Regex;

use super::{TensorClass, TensorGroup};

/// llama.cpp's routed-expert pattern (`LLM_FFN_EXPS_REGEX` in common/common.h),
/// the one `--cpu-moe` / `-ot exps=CPU` style overrides rely on. Matched
/// anywhere in the name, as `std::regex_search` does.
pub const FFN_EXPS_REGEX: &str = crate::llamacpp::overrides::LLM_FFN_EXPS_REGEX;

fn exps_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // A constant pattern, compiled by the tests below: it cannot fail.
    RE.get_or_init(|| Regex::new(FFN_EXPS_REGEX).expect("constant regex"))
}

/// Whether llama.cpp's MoE override regex matches this tensor name.
pub fn is_routed_expert_name(name: &str) -> bool {
    exps_regex().is_match(name)
}

/// Split `blk.N.rest` into `(N, rest)`.
pub fn split_block_name(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (num, tail) = rest.split_once('.')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, tail))
}

/// The tensor's base name without `.weight` / `.bias` / `.scale` suffixes.
fn base(tail: &str) -> &str {
    for suffix in [".weight", ".bias", ".scale", ".scales"] {
        if let Some(b) = tail.strip_suffix(suffix) {
            return b;
        }
    }
    tail
}

/// Group of a `blk.N.*` tensor from its name alone. The analysis may move
/// `attn_*` tensors of purely recurrent layers into [`TensorGroup::Recurrent`]
/// (qwen3next's Gated DeltaNet layers use `attn_qkv`/`attn_gate`).
pub fn group_for(full_name: &str, tail: &str) -> TensorGroup {
    let b = base(tail);
    if let Some(n) = b.strip_prefix("nextn.") {
        return if n.contains("norm") {
            TensorGroup::Norm
        } else {
            TensorGroup::Other
        };
    }
    if is_routed_expert_name(full_name) || (b.starts_with("ffn_") && b.ends_with("exps")) {
        return TensorGroup::FfnRouted;
    }
    if b.contains("_shexp") {
        return TensorGroup::FfnShared;
    }
    if matches!(b, "ffn_gate_inp" | "exp_probs_b" | "ffn_exp_probs_b") {
        return TensorGroup::Router;
    }
    if b.contains("norm") {
        return TensorGroup::Norm;
    }
    if b.starts_with("attn_") || b.starts_with("attn.") {
        return TensorGroup::Attention;
    }
    if b.starts_with("ssm_")
        || b.starts_with("shortconv")
        || b.starts_with("time_mix")
        || b.starts_with("conv")
    {
        return TensorGroup::Recurrent;
    }
    if b.starts_with("ffn_") || b.starts_with("channel_mix") {
        return TensorGroup::FfnDense;
    }
    TensorGroup::Other
}

/// Class of a tensor as `llm_tensor_info_for` assigns it.
///
/// * `blk.N.*` → repeating layer N.
/// * `token_embd`, `position_embd`, `token_types`, `per_layer_token_embd`
///   → input (always CPU).
/// * `token_embd_norm` → layer 0 (LLM_TENSOR_INFOS: REPEATING, "do the norms
///   on the first layer"), except LFM2's, which is its output norm.
/// * `rope_freqs` / `rope_factors_*` are created per layer with
///   `TENSOR_DUPLICATED` for `il != 0`; the first copy belongs to layer 0.
/// * every other top-level tensor (`output`, `output_norm`, `cls*`, …) → output.
pub fn classify_name(arch: &str, name: &str) -> TensorClass {
    if let Some((layer, tail)) = split_block_name(name) {
        return TensorClass::Layer {
            layer,
            group: group_for(name, tail),
        };
    }
    let b = base(name);
    match b {
        // LFM2's output norm is stored under this name (LLM_TENSOR_OUTPUT_NORM_LFM2).
        "token_embd_norm" if arch.starts_with("lfm2") => TensorClass::Output,
        // LLM_TENSOR_TOKEN_EMBD_NORM is REPEATING: "do the norms on the first layer".
        "token_embd_norm" => TensorClass::Layer {
            layer: 0,
            group: TensorGroup::Norm,
        },
        "token_embd" | "position_embd" | "token_types" | "per_layer_token_embd" => {
            TensorClass::Input
        }
        _ if b.starts_with("rope_freqs") || b.starts_with("rope_factors") => TensorClass::Layer {
            layer: 0,
            group: TensorGroup::Other,
        },
        _ => TensorClass::Output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> TensorGroup {
        match classify_name("x", name) {
            TensorClass::Layer { group, .. } => group,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn groups_follow_llama_cpp_names() {
        assert_eq!(g("blk.0.attn_q.weight"), TensorGroup::Attention);
        assert_eq!(g("blk.0.attn_q.bias"), TensorGroup::Attention);
        assert_eq!(g("blk.0.attn_kv_a_mqa.weight"), TensorGroup::Attention);
        assert_eq!(g("blk.0.attn_sinks.weight"), TensorGroup::Attention);
        assert_eq!(g("blk.0.attn_kv_a_norm.weight"), TensorGroup::Norm);
        assert_eq!(g("blk.0.post_ffw_norm.weight"), TensorGroup::Norm);
        assert_eq!(g("blk.3.ffn_up.weight"), TensorGroup::FfnDense);
        assert_eq!(g("blk.3.ffn_up_exps.weight"), TensorGroup::FfnRouted);
        assert_eq!(g("blk.3.ffn_gate_up_exps.weight"), TensorGroup::FfnRouted);
        assert_eq!(g("blk.3.ffn_down_exps.bias"), TensorGroup::FfnRouted);
        assert_eq!(g("blk.3.ffn_down_shexp.weight"), TensorGroup::FfnShared);
        assert_eq!(g("blk.3.ffn_gate_inp_shexp.weight"), TensorGroup::FfnShared);
        assert_eq!(g("blk.3.ffn_gate_inp.weight"), TensorGroup::Router);
        assert_eq!(g("blk.3.exp_probs_b.bias"), TensorGroup::Router);
        assert_eq!(g("blk.3.ssm_conv1d.weight"), TensorGroup::Recurrent);
        assert_eq!(g("blk.3.shortconv.in_proj.weight"), TensorGroup::Recurrent);
        assert_eq!(g("blk.46.nextn.eh_proj.weight"), TensorGroup::Other);
        assert_eq!(g("blk.46.nextn.enorm.weight"), TensorGroup::Norm);
        assert_eq!(g("blk.46.layer_output_scale.weight"), TensorGroup::Other);
    }

    #[test]
    fn top_level_classes() {
        assert_eq!(
            classify_name("llama", "token_embd.weight"),
            TensorClass::Input
        );
        assert_eq!(classify_name("llama", "output.weight"), TensorClass::Output);
        assert_eq!(
            classify_name("llama", "output_norm.weight"),
            TensorClass::Output
        );
        assert_eq!(
            classify_name("lfm2", "token_embd_norm.weight"),
            TensorClass::Output
        );
        assert_eq!(
            classify_name("bloom", "token_embd_norm.weight"),
            TensorClass::Layer {
                layer: 0,
                group: TensorGroup::Norm
            }
        );
        assert_eq!(
            classify_name("llama", "rope_freqs.weight"),
            TensorClass::Layer {
                layer: 0,
                group: TensorGroup::Other
            }
        );
        assert_eq!(split_block_name("blk.x.attn_q.weight"), None);
        assert_eq!(split_block_name("blk.12.a"), Some((12, "a")));
    }

    #[test]
    fn exps_regex_matches_like_llama_cpp() {
        assert!(is_routed_expert_name("blk.12.ffn_down_exps.weight"));
        assert!(is_routed_expert_name("blk.0.ffn_gate_up_exps.weight"));
        assert!(is_routed_expert_name("blk.0.ffn_up_chexps.weight"));
        assert!(!is_routed_expert_name("blk.0.ffn_up_shexp.weight"));
        assert!(!is_routed_expert_name("blk.0.ffn_up.weight"));
    }
}
