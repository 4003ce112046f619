//! Hand-built [`Model`]s with llama.cpp's real tensor names, for the
//! solver's tests and benches (no GGUF, no profile loader needed).
//!
//! The shapes follow the public configs of the models they imitate
//! (`shared/notes/model-configs.toml`); the types are one quant for the
//! routed experts and one for everything else, which is all the planner
//! needs to exercise its choices.

use std::collections::BTreeMap;

use crate::gguf::GgmlType;
use crate::model::{
    AttentionKind, Block, FileInfo, HParams, Model, ModelProfile, Provenance, Tensor, TensorClass,
    TensorEntry, TensorGroup,
};

/// The shape of a synthetic model.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub arch: String,
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_vocab: u64,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    /// Dense FFN width (dense models, and the leading dense layers of MoE models).
    pub n_ff: u64,
    /// 0 for a dense model.
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_ff_exp: u64,
    /// 0: no shared expert.
    pub n_ff_shexp: u64,
    /// Every `full_attn_every`-th layer (1-based: layers 3, 7, … for 4) has
    /// full attention; the others are recurrent (Gated DeltaNet). 1 = all full.
    pub full_attn_every: u32,
    /// Leading layers with a dense FFN instead of experts (DeepSeek-style).
    pub n_dense_lead: u32,
    pub expert_type: GgmlType,
    pub weight_type: GgmlType,
    pub n_ctx_train: u64,
}

impl Spec {
    /// A Qwen3-Coder-Next-like hybrid MoE: 48 layers, 3 of every 4 Gated
    /// DeltaNet, 512 experts / 10 used + 1 shared, 2 KV heads of 256.
    pub fn qwen3_next_like() -> Spec {
        Spec {
            name: "synthetic-qwen3-next-80b-a3b".into(),
            arch: "qwen3next".into(),
            n_layer: 48,
            n_embd: 2048,
            n_vocab: 151_936,
            n_head: 16,
            n_head_kv: 2,
            head_dim: 256,
            n_ff: 5120,
            n_expert: 512,
            n_expert_used: 10,
            n_ff_exp: 512,
            n_ff_shexp: 512,
            full_attn_every: 4,
            n_dense_lead: 0,
            expert_type: GgmlType::Q4_K,
            weight_type: GgmlType::Q8_0,
            n_ctx_train: 262_144,
        }
    }

    /// A Llama-3.1-8B-like dense model (32 layers, GQA 8 KV heads).
    pub fn llama_8b_like() -> Spec {
        Spec {
            name: "synthetic-llama-8b".into(),
            arch: "llama".into(),
            n_layer: 32,
            n_embd: 4096,
            n_vocab: 128_256,
            n_head: 32,
            n_head_kv: 8,
            head_dim: 128,
            n_ff: 14_336,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            n_ff_shexp: 0,
            full_attn_every: 1,
            n_dense_lead: 0,
            expert_type: GgmlType::Q8_0,
            weight_type: GgmlType::Q8_0,
            n_ctx_train: 131_072,
        }
    }

    /// A Qwen3-30B-A3B-like MoE (48 layers, 128 experts / 8, all full attention).
    pub fn qwen3_30b_like() -> Spec {
        Spec {
            name: "synthetic-qwen3-30b-a3b".into(),
            arch: "qwen3moe".into(),
            n_layer: 48,
            n_embd: 2048,
            n_vocab: 151_936,
            n_head: 32,
            n_head_kv: 4,
            head_dim: 128,
            n_ff: 6144,
            n_expert: 128,
            n_expert_used: 8,
            n_ff_exp: 768,
            n_ff_shexp: 0,
            full_attn_every: 1,
            n_dense_lead: 0,
            expert_type: GgmlType::Q4_K,
            weight_type: GgmlType::Q8_0,
            n_ctx_train: 40_960,
        }
    }
}

struct Builder {
    tensors: Vec<TensorEntry>,
    classes: Vec<TensorClass>,
    offset: u64,
}

impl Builder {
    fn add(&mut self, name: String, ty: GgmlType, dims: Vec<u64>, class: TensorClass) -> u64 {
        // Norms and 1-D tensors are F32 in every real GGUF, and so is any
        // tensor whose rows are not whole quant blocks (ssm_conv1d).
        let whole = dims.first().is_some_and(|&d| ty.row_size(d).is_some());
        let ty = if dims.len() == 1 || !whole {
            GgmlType::F32
        } else {
            ty
        };
        let n = ty.nbytes(&dims).unwrap_or(0);
        self.tensors.push(TensorEntry {
            name,
            ty,
            dims,
            file: 0,
            offset: self.offset,
        });
        self.classes.push(class);
        self.offset += crate::units::pad(n, 32);
        n
    }
}

/// Build the model described by `spec`.
pub fn build(spec: &Spec) -> Model {
    let e = spec.n_embd;
    let hd = u64::from(spec.head_dim);
    let (h, hkv) = (u64::from(spec.n_head), u64::from(spec.n_head_kv));
    let mut b = Builder {
        tensors: Vec::new(),
        classes: Vec::new(),
        offset: 0,
    };
    let wt = spec.weight_type;
    b.add(
        "token_embd.weight".into(),
        wt,
        vec![e, spec.n_vocab],
        TensorClass::Input,
    );
    let mut blocks = Vec::new();
    // Gated DeltaNet widths (qwen3next: d_inner 4096, d_state 128, conv 4).
    let (d_inner, d_state, d_conv, n_group) = (4096u64, 128u64, 4u64, 16u64);
    let conv_ch = d_inner + 2 * n_group * d_state;
    for il in 0..spec.n_layer {
        let mut bytes: BTreeMap<TensorGroup, u64> = BTreeMap::new();
        let full = (il + 1) % spec.full_attn_every.max(1) == 0;
        let mut add =
            |b: &mut Builder, tail: &str, ty: GgmlType, dims: Vec<u64>, g: TensorGroup| {
                let n = b.add(
                    format!("blk.{il}.{tail}"),
                    ty,
                    dims,
                    TensorClass::Layer {
                        layer: il,
                        group: g,
                    },
                );
                *bytes.entry(g).or_default() += n;
            };
        use TensorGroup as G;
        add(&mut b, "attn_norm.weight", wt, vec![e], G::Norm);
        if full {
            add(&mut b, "attn_q.weight", wt, vec![e, h * hd], G::Attention);
            add(&mut b, "attn_k.weight", wt, vec![e, hkv * hd], G::Attention);
            add(&mut b, "attn_v.weight", wt, vec![e, hkv * hd], G::Attention);
            add(
                &mut b,
                "attn_output.weight",
                wt,
                vec![h * hd, e],
                G::Attention,
            );
            add(&mut b, "attn_q_norm.weight", wt, vec![hd], G::Norm);
            add(&mut b, "attn_k_norm.weight", wt, vec![hd], G::Norm);
        } else {
            add(
                &mut b,
                "attn_qkv.weight",
                wt,
                vec![e, conv_ch],
                G::Recurrent,
            );
            add(
                &mut b,
                "attn_gate.weight",
                wt,
                vec![e, d_inner],
                G::Recurrent,
            );
            add(
                &mut b,
                "ssm_conv1d.weight",
                wt,
                vec![d_conv, conv_ch],
                G::Recurrent,
            );
            add(&mut b, "ssm_a", wt, vec![32], G::Recurrent);
            add(&mut b, "ssm_dt.bias", wt, vec![32], G::Recurrent);
            add(&mut b, "ssm_norm.weight", wt, vec![d_state], G::Norm);
            add(&mut b, "ssm_out.weight", wt, vec![d_inner, e], G::Recurrent);
        }
        add(&mut b, "ffn_norm.weight", wt, vec![e], G::Norm);
        if spec.n_expert > 0 && il >= spec.n_dense_lead {
            let (x, f, ne) = (spec.expert_type, spec.n_ff_exp, u64::from(spec.n_expert));
            add(
                &mut b,
                "ffn_gate_inp.weight",
                GgmlType::F32,
                vec![e, ne],
                G::Router,
            );
            add(
                &mut b,
                "ffn_gate_exps.weight",
                x,
                vec![e, f, ne],
                G::FfnRouted,
            );
            add(
                &mut b,
                "ffn_up_exps.weight",
                x,
                vec![e, f, ne],
                G::FfnRouted,
            );
            add(
                &mut b,
                "ffn_down_exps.weight",
                x,
                vec![f, e, ne],
                G::FfnRouted,
            );
            if spec.n_ff_shexp > 0 {
                let s = spec.n_ff_shexp;
                add(
                    &mut b,
                    "ffn_gate_inp_shexp.weight",
                    wt,
                    vec![e],
                    G::FfnShared,
                );
                add(
                    &mut b,
                    "ffn_gate_shexp.weight",
                    wt,
                    vec![e, s],
                    G::FfnShared,
                );
                add(&mut b, "ffn_up_shexp.weight", wt, vec![e, s], G::FfnShared);
                add(
                    &mut b,
                    "ffn_down_shexp.weight",
                    wt,
                    vec![s, e],
                    G::FfnShared,
                );
            }
        } else {
            let f = spec.n_ff;
            add(&mut b, "ffn_gate.weight", wt, vec![e, f], G::FfnDense);
            add(&mut b, "ffn_up.weight", wt, vec![e, f], G::FfnDense);
            add(&mut b, "ffn_down.weight", wt, vec![f, e], G::FfnDense);
        }
        let width = hkv * hd;
        blocks.push(Block {
            index: il,
            attention: if full {
                AttentionKind::Full
            } else {
                AttentionKind::Recurrent
            },
            nextn: false,
            has_kv: full,
            k_width: if full { width } else { 0 },
            v_width: if full { width } else { 0 },
            recurrent: !full,
            bytes,
            skipped_bytes: 0,
        });
    }
    b.add(
        "output_norm.weight".into(),
        wt,
        vec![e],
        TensorClass::Output,
    );
    b.add(
        "output.weight".into(),
        GgmlType::Q6_K,
        vec![e, spec.n_vocab],
        TensorClass::Output,
    );
    let n = spec.n_layer as usize;
    let hparams = HParams {
        n_layer: spec.n_layer,
        n_nextn: 0,
        n_embd: e,
        n_vocab: spec.n_vocab,
        n_ctx_train: spec.n_ctx_train,
        n_head: vec![spec.n_head; n],
        n_head_kv: vec![spec.n_head_kv; n],
        head_dim_k: vec![spec.head_dim; n],
        head_dim_v: vec![spec.head_dim; n],
        n_ff: vec![spec.n_ff; n],
        n_expert: spec.n_expert,
        n_expert_used: spec.n_expert_used,
        n_ff_exp: spec.n_ff_exp,
        n_expert_shared: u32::from(spec.n_ff_shexp > 0),
        n_ff_shexp: spec.n_ff_shexp,
        n_embd_r: if spec.full_attn_every > 1 {
            (d_conv - 1) * conv_ch
        } else {
            0
        },
        n_embd_s: if spec.full_attn_every > 1 {
            d_state * d_inner
        } else {
            0
        },
        tied_embeddings: false,
    };
    let tensors = b
        .classes
        .iter()
        .zip(&b.tensors)
        .enumerate()
        .map(|(index, (&class, e))| Tensor {
            index,
            class,
            skipped: false,
            bytes: e.n_bytes().unwrap_or(0),
        })
        .collect();
    let profile = ModelProfile {
        name: spec.name.clone(),
        provenance: Provenance::Synthetic {
            description: "ggplan solver test model".into(),
            sources: vec![],
        },
        arch: spec.arch.clone(),
        alignment: 32,
        metadata: BTreeMap::new(),
        files: vec![FileInfo {
            name: format!("{}.gguf", spec.name),
            data_offset: 0,
            len: b.offset,
        }],
        tensors: b.tensors,
    };
    Model {
        profile,
        hparams,
        blocks,
        tensors,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_next_like_has_the_expected_layout() {
        let m = build(&Spec::qwen3_next_like());
        assert_eq!(m.blocks.len(), 48);
        assert_eq!(m.blocks.iter().filter(|b| b.has_kv).count(), 12);
        // One expert tensor: 2048 × 512 × 512 Q4_K (144 bytes per 256) = 301,989,888 bytes.
        let up = m
            .profile
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.ffn_up_exps.weight")
            .unwrap();
        assert_eq!(up.n_bytes(), Some(2048 / 256 * 144 * 512 * 512));
        assert_eq!(
            m.blocks[0].bytes[&TensorGroup::FfnRouted],
            3 * 2048 / 256 * 144 * 512 * 512
        );
        // ~45 GB: an 80B model at ~4.5 bits.
        let total: u64 = m.profile.tensors.iter().filter_map(|t| t.n_bytes()).sum();
        assert!((40e9..50e9).contains(&(total as f64)), "{total}");
    }
}
