//! Small hand-built models with real llama.cpp tensor layouts, for unit
//! tests until profiles load through `crate::model`.

use std::collections::BTreeMap;

use crate::gguf::GgmlType;
use crate::model::{
    AttentionKind, Block, FileInfo, HParams, Model, ModelProfile, Provenance, Tensor, TensorClass,
    TensorEntry, TensorGroup,
};
use crate::units::pad;

pub struct Spec {
    pub arch: &'static str,
    pub n_embd: u64,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    pub wtype: GgmlType,
    pub tied: bool,
    /// (n_expert, n_expert_used, n_ff_exp)
    pub moe: Option<(u32, u32, u64)>,
    /// (window, period): layer il is SWA iff il % period < period - 1.
    pub swa: Option<(u32, u32)>,
}

impl Spec {
    /// The §9 verification model: llama E=512, L=4, H=8, Hkv=4, d=64, F=1024, V=2048.
    pub fn tiny_llama() -> Spec {
        Spec {
            arch: "llama",
            n_embd: 512,
            n_layer: 4,
            n_head: 8,
            n_head_kv: 4,
            head_dim: 64,
            n_ff: 1024,
            n_vocab: 2048,
            n_ctx_train: 4096,
            wtype: GgmlType::F16,
            tied: false,
            moe: None,
            swa: None,
        }
    }

    pub fn tiny_moe() -> Spec {
        Spec {
            arch: "qwen3moe",
            n_embd: 256,
            n_layer: 4,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            n_ff: 0,
            n_vocab: 1024,
            n_ctx_train: 4096,
            wtype: GgmlType::Q4_K,
            tied: false,
            moe: Some((8, 2, 256)),
            swa: None,
        }
    }
}

pub fn build(s: &Spec) -> Model {
    let mut tensors: Vec<TensorEntry> = Vec::new();
    let mut classes: Vec<TensorClass> = Vec::new();
    let mut off = 0u64;
    let mut add = |name: String, ty: GgmlType, dims: Vec<u64>, class: TensorClass| {
        let nb = ty.nbytes(&dims).unwrap();
        tensors.push(TensorEntry {
            name,
            ty,
            dims,
            file: 0,
            offset: off,
        });
        classes.push(class);
        off += pad(nb, 32);
    };
    let e = s.n_embd;
    let (h, hkv, d) = (
        u64::from(s.n_head),
        u64::from(s.n_head_kv),
        u64::from(s.head_dim),
    );
    add(
        "token_embd.weight".into(),
        s.wtype,
        vec![e, s.n_vocab],
        TensorClass::Input,
    );
    let mut blocks = Vec::new();
    for il in 0..s.n_layer {
        let p = format!("blk.{il}.");
        let l = |g| TensorClass::Layer {
            layer: il,
            group: g,
        };
        let mut bytes: BTreeMap<TensorGroup, u64> = BTreeMap::new();
        let mut put = |name: &str, ty: GgmlType, dims: Vec<u64>, g: TensorGroup| {
            *bytes.entry(g).or_default() += ty.nbytes(&dims).unwrap();
            add(format!("{p}{name}"), ty, dims, l(g));
        };
        put(
            "attn_norm.weight",
            GgmlType::F32,
            vec![e],
            TensorGroup::Norm,
        );
        put(
            "attn_q.weight",
            s.wtype,
            vec![e, h * d],
            TensorGroup::Attention,
        );
        put(
            "attn_k.weight",
            s.wtype,
            vec![e, hkv * d],
            TensorGroup::Attention,
        );
        put(
            "attn_v.weight",
            s.wtype,
            vec![e, hkv * d],
            TensorGroup::Attention,
        );
        put(
            "attn_output.weight",
            s.wtype,
            vec![h * d, e],
            TensorGroup::Attention,
        );
        put("ffn_norm.weight", GgmlType::F32, vec![e], TensorGroup::Norm);
        match s.moe {
            None => {
                put(
                    "ffn_gate.weight",
                    s.wtype,
                    vec![e, s.n_ff],
                    TensorGroup::FfnDense,
                );
                put(
                    "ffn_up.weight",
                    s.wtype,
                    vec![e, s.n_ff],
                    TensorGroup::FfnDense,
                );
                put(
                    "ffn_down.weight",
                    s.wtype,
                    vec![s.n_ff, e],
                    TensorGroup::FfnDense,
                );
            }
            Some((ne, _, nff)) => {
                let ne = u64::from(ne);
                put(
                    "ffn_gate_inp.weight",
                    GgmlType::F32,
                    vec![e, ne],
                    TensorGroup::Router,
                );
                put(
                    "ffn_gate_exps.weight",
                    s.wtype,
                    vec![e, nff, ne],
                    TensorGroup::FfnRouted,
                );
                put(
                    "ffn_up_exps.weight",
                    s.wtype,
                    vec![e, nff, ne],
                    TensorGroup::FfnRouted,
                );
                put(
                    "ffn_down_exps.weight",
                    s.wtype,
                    vec![nff, e, ne],
                    TensorGroup::FfnRouted,
                );
            }
        }
        let attention = match s.swa {
            Some((w, period)) if il % period < period - 1 => AttentionKind::Swa { window: w },
            _ => AttentionKind::Full,
        };
        blocks.push(Block {
            index: il,
            attention,
            nextn: false,
            has_kv: true,
            k_width: hkv * d,
            v_width: hkv * d,
            recurrent: false,
            bytes,
            skipped_bytes: 0,
        });
    }
    add(
        "output_norm.weight".into(),
        GgmlType::F32,
        vec![e],
        TensorClass::Output,
    );
    if !s.tied {
        add(
            "output.weight".into(),
            s.wtype,
            vec![e, s.n_vocab],
            TensorClass::Output,
        );
    }
    let n = s.n_layer as usize;
    let (ne, nu, nffe) = s.moe.unwrap_or((0, 0, 0));
    let hparams = HParams {
        n_layer: s.n_layer,
        n_nextn: 0,
        n_embd: e,
        n_vocab: s.n_vocab,
        n_ctx_train: s.n_ctx_train,
        n_head: vec![s.n_head; n],
        n_head_kv: vec![s.n_head_kv; n],
        head_dim_k: vec![s.head_dim; n],
        head_dim_v: vec![s.head_dim; n],
        n_ff: vec![s.n_ff; n],
        n_expert: ne,
        n_expert_used: nu,
        n_ff_exp: nffe,
        n_expert_shared: 0,
        n_ff_shexp: 0,
        n_embd_r: 0,
        n_embd_s: 0,
        tied_embeddings: s.tied,
    };
    let model_tensors = classes
        .iter()
        .enumerate()
        .map(|(i, c)| Tensor {
            index: i,
            class: *c,
            skipped: false,
            bytes: tensors[i].n_bytes().unwrap(),
        })
        .collect();
    Model {
        profile: ModelProfile {
            name: s.arch.into(),
            provenance: Provenance::Synthetic {
                description: "unit test".into(),
                sources: vec![],
            },
            arch: s.arch.into(),
            alignment: 32,
            metadata: BTreeMap::new(),
            files: vec![FileInfo {
                name: "t.gguf".into(),
                data_offset: 0,
                len: off,
            }],
            tensors,
        },
        hparams,
        blocks,
        tensors: model_tensors,
        warnings: vec![],
    }
}
