//! Per-architecture analysis tests on headers built with the GGUF writer,
//! using llama.cpp's real tensor names and shapes at toy sizes.

use std::path::PathBuf;

use super::*;
use crate::gguf::shard::Shard;
use crate::gguf::write::Writer;
use crate::gguf::{read_header, Options, Value};

/// Builder for a tiny model of one architecture.
struct G {
    w: Writer,
    arch: &'static str,
}

impl G {
    fn new(arch: &'static str) -> G {
        let mut w = Writer::new();
        w.kv("general.architecture", Value::String(arch.into()));
        G { w, arch }
    }
    fn u(&mut self, key: &str, v: u32) -> &mut Self {
        self.w.kv(&format!("{}.{key}", self.arch), Value::U32(v));
        self
    }
    fn arr(&mut self, key: &str, v: &[u32]) -> &mut Self {
        self.w.kv(
            &format!("{}.{key}", self.arch),
            Value::Array(v.iter().map(|&x| Value::U32(x)).collect()),
        );
        self
    }
    fn t(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> &mut Self {
        self.w.tensor(name, dims, ty);
        self
    }
    fn profile(&self) -> ModelProfile {
        let bytes = self.w.finish();
        let header = read_header(&bytes[..], &Options::default()).unwrap();
        let shard = Shard {
            path: PathBuf::from(format!("{}-tiny.gguf", self.arch)),
            header,
            file_len: bytes.len() as u64 + self.w.data_len(),
        };
        ModelProfile::from_shards(&[shard], &ProfileOptions::default()).unwrap()
    }
    fn model(&self) -> Model {
        Model::from_profile(self.profile()).unwrap()
    }
}

const F32: GgmlType = GgmlType::F32;
const Q8: GgmlType = GgmlType::Q8_0;
const Q4K: GgmlType = GgmlType::Q4_K;

fn nb(ty: GgmlType, dims: &[u64]) -> u64 {
    ty.nbytes(dims).unwrap()
}

fn kinds(m: &Model) -> Vec<AttentionKind> {
    m.blocks.iter().map(|b| b.attention).collect()
}

/// Standard attention tensors of one block.
fn attn(g: &mut G, il: u32, e: u64, q: u64, kv: u64) {
    g.t(&format!("blk.{il}.attn_norm.weight"), &[e], F32)
        .t(&format!("blk.{il}.attn_q.weight"), &[e, q], Q8)
        .t(&format!("blk.{il}.attn_k.weight"), &[e, kv], Q8)
        .t(&format!("blk.{il}.attn_v.weight"), &[e, kv], Q8)
        .t(&format!("blk.{il}.attn_output.weight"), &[q, e], Q8);
}

fn dense_ffn(g: &mut G, il: u32, e: u64, ff: u64) {
    g.t(&format!("blk.{il}.ffn_norm.weight"), &[e], F32)
        .t(&format!("blk.{il}.ffn_gate.weight"), &[e, ff], Q8)
        .t(&format!("blk.{il}.ffn_up.weight"), &[e, ff], Q8)
        .t(&format!("blk.{il}.ffn_down.weight"), &[ff, e], Q8);
}

fn moe_ffn(g: &mut G, il: u32, e: u64, ff: u64, n_exp: u64, shared: bool) {
    // Q4_K needs rows of whole 256-element blocks.
    let q = if e % 256 == 0 { Q4K } else { Q8 };
    g.t(&format!("blk.{il}.ffn_norm.weight"), &[e], F32)
        .t(&format!("blk.{il}.ffn_gate_inp.weight"), &[e, n_exp], F32)
        .t(
            &format!("blk.{il}.ffn_gate_exps.weight"),
            &[e, ff, n_exp],
            q,
        )
        .t(&format!("blk.{il}.ffn_up_exps.weight"), &[e, ff, n_exp], q)
        .t(
            &format!("blk.{il}.ffn_down_exps.weight"),
            &[ff, e, n_exp],
            Q8,
        );
    if shared {
        g.t(&format!("blk.{il}.ffn_gate_shexp.weight"), &[e, ff], Q8)
            .t(&format!("blk.{il}.ffn_up_shexp.weight"), &[e, ff], Q8)
            .t(&format!("blk.{il}.ffn_down_shexp.weight"), &[ff, e], Q8);
    }
}

fn embed(g: &mut G, e: u64, vocab: u64, tied: bool) {
    g.t("token_embd.weight", &[e, vocab], Q8)
        .t("output_norm.weight", &[e], F32);
    if !tied {
        g.t("output.weight", &[e, vocab], Q8);
    }
}

#[test]
fn llama_dense_full_attention() {
    let mut g = G::new("llama");
    g.u("block_count", 2)
        .u("embedding_length", 256)
        .u("attention.head_count", 8)
        .u("attention.head_count_kv", 2)
        .u("feed_forward_length", 512)
        .u("context_length", 8192);
    embed(&mut g, 256, 1000, false);
    for il in 0..2 {
        attn(&mut g, il, 256, 256, 64);
        dense_ffn(&mut g, il, 256, 512);
    }
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(kinds(&m), vec![AttentionKind::Full; 2]);
    // head_dim = 256 / 8 = 32; K = V = 32 × 2 heads = 64 elements.
    assert_eq!(m.hparams.head_dim_k, vec![32, 32]);
    assert_eq!((m.blocks[0].k_width, m.blocks[0].v_width), (64, 64));
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * 2 * (64 + 64));
    assert_eq!(
        m.kv_bytes_per_token(GgmlType::Q8_0, GgmlType::Q8_0),
        Some(2 * 2 * 68)
    );
    assert!(!m.hparams.tied_embeddings);
    assert_eq!(m.hparams.n_vocab, 1000);
    let b = &m.blocks[1];
    // Q8_0: 34 bytes per 32 elements. q,o: 256×256; k,v: 256×64.
    assert_eq!(
        b.group_bytes(TensorGroup::Attention),
        2 * 69_632 + 2 * 17_408
    );
    assert_eq!(b.group_bytes(TensorGroup::FfnDense), 3 * 139_264);
    assert_eq!(b.group_bytes(TensorGroup::Norm), 2 * 1024);
    assert_eq!(m.input_bytes(), nb(Q8, &[256, 1000]));
    assert_eq!(m.output_bytes(), nb(Q8, &[256, 1000]) + 1024);
    assert_eq!(
        m.tensor_bytes(),
        m.profile
            .tensors
            .iter()
            .map(|t| t.n_bytes().unwrap())
            .sum::<u64>()
    );
    assert_eq!(m.recurrent_bytes_per_seq(), 0);
}

#[test]
fn qwen3moe_groups_router_and_experts() {
    let mut g = G::new("qwen3moe");
    g.u("block_count", 1)
        .u("embedding_length", 256)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 2)
        .u("attention.key_length", 128)
        .u("attention.value_length", 128)
        .u("expert_count", 8)
        .u("expert_used_count", 2)
        .u("expert_feed_forward_length", 256);
    embed(&mut g, 256, 500, true);
    attn(&mut g, 0, 256, 512, 256);
    moe_ffn(&mut g, 0, 256, 256, 8, false);
    let m = g.model();
    let b = &m.blocks[0];
    assert_eq!(b.k_width, 256);
    assert_eq!(
        b.group_bytes(TensorGroup::FfnRouted),
        2 * nb(Q4K, &[256, 256, 8]) + nb(Q8, &[256, 256, 8])
    );
    assert_eq!(b.group_bytes(TensorGroup::Router), 256 * 8 * 4);
    assert_eq!(b.group_bytes(TensorGroup::FfnDense), 0);
    assert_eq!((m.hparams.n_expert, m.hparams.n_expert_used), (8, 2));
    assert_eq!(m.hparams.n_ff_exp, 256);
    assert!(m.hparams.tied_embeddings);
}

#[test]
fn qwen3next_interval_4_with_mtp_block() {
    // 4 main blocks + 1 MTP block: GDN at 0,1,2; full attention at 3.
    let (e, nv, dk) = (256u64, 2u64, 64u64);
    let (d_conv, d_state, n_group, d_inner) = (4u32, 32u32, 4u32, 256u32);
    let conv_dim = u64::from(d_inner + 2 * n_group * d_state);
    let mut g = G::new("qwen3next");
    g.u("block_count", 5)
        .u("nextn_predict_layers", 1)
        .u("embedding_length", e as u32)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", nv as u32)
        .u("attention.key_length", dk as u32)
        .u("attention.value_length", dk as u32)
        .u("full_attention_interval", 4)
        .u("ssm.conv_kernel", d_conv)
        .u("ssm.state_size", d_state)
        .u("ssm.group_count", n_group)
        .u("ssm.inner_size", d_inner)
        .u("ssm.time_step_rank", 8)
        .u("expert_count", 8)
        .u("expert_used_count", 2)
        .u("expert_feed_forward_length", 256)
        .u("expert_shared_feed_forward_length", 256);
    embed(&mut g, e, 300, false);
    for il in 0..5u32 {
        g.t(&format!("blk.{il}.attn_norm.weight"), &[e], F32);
        if il < 3 {
            g.t(&format!("blk.{il}.attn_qkv.weight"), &[e, conv_dim], Q8)
                .t(&format!("blk.{il}.attn_gate.weight"), &[e, 256], Q8)
                .t(&format!("blk.{il}.ssm_conv1d.weight"), &[4, conv_dim], F32)
                .t(&format!("blk.{il}.ssm_dt.bias"), &[8], F32)
                .t(&format!("blk.{il}.ssm_a"), &[8], F32)
                .t(&format!("blk.{il}.ssm_ba.weight"), &[e, 16], Q8)
                .t(&format!("blk.{il}.ssm_norm.weight"), &[32], F32)
                .t(&format!("blk.{il}.ssm_out.weight"), &[256, e], Q8);
        } else {
            g.t(&format!("blk.{il}.attn_q.weight"), &[e, 2 * 4 * dk], Q8)
                .t(&format!("blk.{il}.attn_k.weight"), &[e, nv * dk], Q8)
                .t(&format!("blk.{il}.attn_v.weight"), &[e, nv * dk], Q8)
                .t(&format!("blk.{il}.attn_output.weight"), &[4 * dk, e], Q8)
                .t(&format!("blk.{il}.attn_q_norm.weight"), &[dk], F32)
                .t(&format!("blk.{il}.attn_k_norm.weight"), &[dk], F32);
        }
        moe_ffn(&mut g, il, e, 256, 8, true);
        g.t(&format!("blk.{il}.ffn_gate_inp_shexp.weight"), &[e], F32);
    }
    g.t("blk.4.nextn.eh_proj.weight", &[2 * e, e], Q8)
        .t("blk.4.nextn.enorm.weight", &[e], F32)
        .t("blk.4.nextn.hnorm.weight", &[e], F32);
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    use AttentionKind::*;
    assert_eq!(kinds(&m), vec![Recurrent, Recurrent, Recurrent, Full, Full]);
    let has_kv: Vec<bool> = m.blocks.iter().map(|b| b.has_kv).collect();
    assert_eq!(has_kv, vec![false, false, false, true, false]);
    let rec: Vec<bool> = m.blocks.iter().map(|b| b.recurrent).collect();
    assert_eq!(rec, vec![true, true, true, false, false]);
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * 2 * nv * dk);
    // n_embd_r = (d_conv-1)(d_inner + 2·n_group·d_state) = 3·512; n_embd_s = 32·256.
    assert_eq!((m.hparams.n_embd_r, m.hparams.n_embd_s), (1536, 8192));
    assert_eq!(m.recurrent_bytes_per_seq(), 3 * 4 * (1536 + 8192));
    // GDN's attn_qkv / attn_gate are recurrent mixer weights, not attention.
    let b0 = &m.blocks[0];
    assert_eq!(b0.group_bytes(TensorGroup::Attention), 0);
    assert!(b0.group_bytes(TensorGroup::Recurrent) > nb(Q8, &[e, conv_dim]));
    assert_eq!(
        b0.group_bytes(TensorGroup::FfnShared),
        3 * nb(Q8, &[256, 256]) + 4 * e
    );
    // The MTP block is counted in block_count but not allocated.
    let mtp = &m.blocks[4];
    assert!(mtp.nextn && mtp.bytes.is_empty() && mtp.skipped_bytes > 0);
    assert_eq!(m.skipped_bytes(), mtp.skipped_bytes);
    assert_eq!(m.n_layer_main(), 4);
    assert_eq!(m.hparams.n_expert_shared, 1);
}

#[test]
fn qwen3next_explicit_recurrent_layers_override_interval() {
    let mut g = G::new("qwen3next");
    g.u("block_count", 4)
        .u("embedding_length", 64)
        .u("attention.head_count", 2)
        .arr("attention.recurrent_layers", &[1, 0, 1, 0]);
    let m = g.model();
    use AttentionKind::*;
    assert_eq!(kinds(&m), vec![Recurrent, Full, Recurrent, Full]);
}

#[test]
fn deepseek2_mla_with_nextn_block() {
    // GLM-4.7-Flash layout at toy size: 1 leading dense block, MoE blocks,
    // one NextN block; MLA latent = kv_lora_rank 64 + rope 16 = 80.
    let e = 128u64;
    let mut g = G::new("deepseek2");
    g.u("block_count", 3)
        .u("nextn_predict_layers", 1)
        .u("leading_dense_block_count", 1)
        .u("embedding_length", e as u32)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 1)
        .u("attention.key_length", 80)
        .u("attention.value_length", 64)
        .u("attention.key_length_mla", 48)
        .u("attention.value_length_mla", 32)
        .u("attention.kv_lora_rank", 64)
        .u("attention.q_lora_rank", 96)
        .u("rope.dimension_count", 16)
        .u("expert_count", 4)
        .u("expert_used_count", 2)
        .u("expert_shared_count", 1)
        .u("expert_feed_forward_length", 64)
        .u("feed_forward_length", 256);
    embed(&mut g, e, 400, false);
    for il in 0..3u32 {
        g.t(&format!("blk.{il}.attn_norm.weight"), &[e], F32)
            .t(&format!("blk.{il}.attn_q_a.weight"), &[e, 96], Q8)
            .t(&format!("blk.{il}.attn_q_a_norm.weight"), &[96], F32)
            .t(&format!("blk.{il}.attn_q_b.weight"), &[96, 4 * 48], Q8)
            .t(&format!("blk.{il}.attn_kv_a_mqa.weight"), &[e, 80], Q8)
            .t(&format!("blk.{il}.attn_kv_a_norm.weight"), &[64], F32)
            .t(&format!("blk.{il}.attn_k_b.weight"), &[32, 64, 4], Q8)
            .t(&format!("blk.{il}.attn_v_b.weight"), &[64, 32, 4], Q8)
            .t(&format!("blk.{il}.attn_output.weight"), &[4 * 32, e], Q8);
        if il == 0 {
            dense_ffn(&mut g, il, e, 256);
        } else {
            moe_ffn(&mut g, il, e, 64, 4, true);
            g.t(&format!("blk.{il}.exp_probs_b.bias"), &[4], F32);
        }
    }
    g.t("blk.2.nextn.eh_proj.weight", &[2 * e, e], Q8).t(
        "blk.2.nextn.shared_head_norm.weight",
        &[e],
        F32,
    );
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(kinds(&m), vec![AttentionKind::Mla; 3]);
    // K only: 80 elements; V absent. b11434's create_memory filters il < n_layer():
    // the NextN block keeps its widths but gets no KV cells.
    for b in &m.blocks {
        assert_eq!((b.k_width, b.v_width, b.has_kv), (80, 0, !b.nextn));
    }
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * 80 * 2);
    assert!(m.blocks[2].nextn && m.blocks[2].bytes.is_empty());
    assert_eq!(m.blocks[1].group_bytes(TensorGroup::Router), e * 4 * 4 + 16);
    assert!(m.blocks[0].group_bytes(TensorGroup::FfnDense) > 0);
    assert_eq!(m.blocks[0].group_bytes(TensorGroup::FfnRouted), 0);
    let skipped: u64 = m
        .profile
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.2."))
        .map(|t| t.n_bytes().unwrap())
        .sum();
    assert_eq!(m.skipped_bytes(), skipped);
}

#[test]
fn deepseek2_without_mla_keys_is_full_attention() {
    // Old converters: no key_length_mla → llama.cpp's non-MLA path, KV per head.
    let mut g = G::new("deepseek2");
    g.u("block_count", 1)
        .u("embedding_length", 128)
        .u("attention.head_count", 4)
        .u("attention.key_length", 48)
        .u("attention.value_length", 32);
    let m = g.model();
    assert_eq!(kinds(&m), vec![AttentionKind::Full]);
    assert_eq!((m.blocks[0].k_width, m.blocks[0].v_width), (4 * 48, 4 * 32));
}

#[test]
fn glm4moe_nextn_weights_skipped_but_kv_allocated() {
    let mut g = G::new("glm4moe");
    g.u("block_count", 2)
        .u("nextn_predict_layers", 1)
        .u("embedding_length", 128)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 2)
        .u("attention.key_length", 32)
        .u("attention.value_length", 32);
    for il in 0..2 {
        attn(&mut g, il, 128, 128, 64);
    }
    let m = g.model();
    assert_eq!(
        m.blocks.iter().map(|b| b.has_kv).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * 128);
    assert_eq!(m.blocks[1].k_width, 64);
    assert!(m.tensors.iter().filter(|t| t.skipped).count() == 5);
}

#[test]
fn gemma3_period_6_and_window() {
    let mut g = G::new("gemma3");
    g.u("block_count", 8)
        .u("embedding_length", 128)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 1)
        .u("attention.key_length", 64)
        .u("attention.value_length", 64)
        .u("attention.sliding_window", 512);
    embed(&mut g, 128, 256, true);
    for il in 0..8 {
        attn(&mut g, il, 128, 256, 64);
    }
    let m = g.model();
    use AttentionKind::*;
    let w = Swa { window: 512 };
    assert_eq!(kinds(&m), vec![w, w, w, w, w, Full, w, w]);
    assert_eq!(m.kv_bytes_per_token_f16(), 8 * 2 * 128);
    assert!(m.hparams.tied_embeddings);

    // sliding_window absent: gemma3 has no SWA at all.
    let mut g = G::new("gemma3");
    g.u("block_count", 2)
        .u("embedding_length", 128)
        .u("attention.head_count", 4);
    assert_eq!(kinds(&g.model()), vec![Full, Full]);

    // An explicit period key wins over the default.
    let mut g = G::new("gemma3");
    g.u("block_count", 4)
        .u("embedding_length", 128)
        .u("attention.head_count", 4)
        .u("attention.sliding_window", 1024)
        .u("attention.sliding_window_pattern", 2);
    let w = Swa { window: 1024 };
    assert_eq!(kinds(&g.model()), vec![w, Full, w, Full]);
}

#[test]
fn gpt_oss_alternates_swa_and_gemma2_defaults_window() {
    let mut g = G::new("gpt-oss");
    g.u("block_count", 4)
        .u("embedding_length", 128)
        .u("attention.head_count", 8)
        .u("attention.head_count_kv", 2)
        .u("attention.key_length", 16)
        .u("attention.value_length", 16)
        .u("attention.sliding_window", 128);
    for il in 0..4 {
        attn(&mut g, il, 128, 128, 32);
        g.t(&format!("blk.{il}.attn_sinks.weight"), &[8], F32);
        g.t(
            &format!("blk.{il}.ffn_gate_up_exps.weight"),
            &[128, 64, 4],
            GgmlType::MXFP4,
        )
        .t(&format!("blk.{il}.ffn_down_exps.bias"), &[128, 4], F32);
    }
    let m = g.model();
    use AttentionKind::*;
    let w = Swa { window: 128 };
    assert_eq!(kinds(&m), vec![w, Full, w, Full]);
    assert_eq!(
        m.blocks[0].group_bytes(TensorGroup::FfnRouted),
        nb(GgmlType::MXFP4, &[128, 64, 4]) + 128 * 4 * 4
    );
    assert!(m.blocks[0].group_bytes(TensorGroup::Attention) > 8 * 4);

    let mut g = G::new("gemma2");
    g.u("block_count", 2)
        .u("embedding_length", 64)
        .u("attention.head_count", 2);
    assert_eq!(kinds(&g.model()), vec![Swa { window: 4096 }, Full]);
}

#[test]
fn mistral3_has_no_swa() {
    let mut g = G::new("mistral3");
    g.u("block_count", 2)
        .u("embedding_length", 64)
        .u("attention.head_count", 2)
        .u("attention.sliding_window", 4096);
    assert_eq!(kinds(&g.model()), vec![AttentionKind::Full; 2]);
}

fn mamba2_mixer(g: &mut G, il: u32, e: u64, d_inner: u64, conv_ch: u64) {
    g.t(&format!("blk.{il}.attn_norm.weight"), &[e], F32)
        .t(
            &format!("blk.{il}.ssm_in.weight"),
            &[e, 2 * d_inner + 64],
            Q8,
        )
        .t(&format!("blk.{il}.ssm_conv1d.weight"), &[4, conv_ch], F32)
        .t(&format!("blk.{il}.ssm_a"), &[1, 4], F32)
        .t(&format!("blk.{il}.ssm_d"), &[1, 4], F32)
        .t(&format!("blk.{il}.ssm_norm.weight"), &[d_inner / 2, 2], F32)
        .t(&format!("blk.{il}.ssm_out.weight"), &[d_inner, e], Q8);
}

#[test]
fn nemotron_h_per_layer_arrays() {
    // "M*EM": mamba, attention, MoE-only, mamba.
    let (e, d_inner, d_state, n_group) = (128u64, 256u64, 16u64, 2u64);
    let conv_ch = d_inner + 2 * n_group * d_state;
    let mut g = G::new("nemotron_h_moe");
    g.u("block_count", 4)
        .u("embedding_length", e as u32)
        .u("attention.head_count", 4)
        .arr("attention.head_count_kv", &[0, 2, 0, 0])
        .arr("feed_forward_length", &[0, 0, 64, 0])
        .u("attention.key_length", 32)
        .u("attention.value_length", 32)
        .u("ssm.conv_kernel", 4)
        .u("ssm.inner_size", d_inner as u32)
        .u("ssm.state_size", d_state as u32)
        .u("ssm.group_count", n_group as u32)
        .u("ssm.time_step_rank", 4)
        .u("expert_count", 4)
        .u("expert_used_count", 2);
    embed(&mut g, e, 100, false);
    mamba2_mixer(&mut g, 0, e, d_inner, conv_ch);
    attn(&mut g, 1, e, 128, 64);
    moe_ffn(&mut g, 2, e, 64, 4, true);
    mamba2_mixer(&mut g, 3, e, d_inner, conv_ch);
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    use AttentionKind::*;
    assert_eq!(kinds(&m), vec![Recurrent, Full, None, Recurrent]);
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * (64 + 64));
    assert_eq!(m.hparams.n_embd_r, 3 * conv_ch);
    assert_eq!(m.hparams.n_embd_s, d_state * d_inner);
    assert_eq!(
        m.recurrent_bytes_per_seq(),
        2 * 4 * (3 * conv_ch + d_state * d_inner)
    );
    assert_eq!(m.blocks[2].group_bytes(TensorGroup::Attention), 0);
    assert!(m.blocks[2].group_bytes(TensorGroup::FfnRouted) > 0);
    assert_eq!(m.hparams.n_head_kv, vec![0, 2, 0, 0]);

    // An MTP block with n_ff 0: nemotron's attention filter has no il < n_layer()
    // bound, so its KV is allocated; its recurrent state is not (il < n_layer()).
    let mut g = G::new("nemotron_h");
    g.u("block_count", 3)
        .u("nextn_predict_layers", 1)
        .u("embedding_length", 64)
        .u("attention.head_count", 4)
        .arr("attention.head_count_kv", &[0, 2, 0])
        .arr("feed_forward_length", &[0, 0, 0]);
    let m = g.model();
    assert_eq!(kinds(&m), vec![Recurrent, Full, Full]);
    let has_kv: Vec<bool> = m.blocks.iter().map(|b| b.has_kv).collect();
    assert_eq!(has_kv, vec![false, true, true]);
    assert!(!m.blocks[2].recurrent);

    // head_count 0 in layer 0: llama.cpp reads no head sizes at all.
    let mut g = G::new("nemotron_h");
    g.u("block_count", 2)
        .u("embedding_length", 64)
        .arr("attention.head_count", &[0, 4])
        .arr("attention.head_count_kv", &[0, 2])
        .u("attention.key_length", 16);
    assert_eq!(g.model().blocks[1].k_width, 0);
}

#[test]
fn granitehybrid_and_lfm2_mark_recurrent_layers_by_zero_kv_heads() {
    let mut g = G::new("granitehybrid");
    g.u("block_count", 3)
        .u("embedding_length", 64)
        .u("attention.head_count", 4)
        .arr("attention.head_count_kv", &[0, 0, 2])
        .u("ssm.conv_kernel", 4)
        .u("ssm.inner_size", 128)
        .u("ssm.state_size", 16)
        .u("ssm.group_count", 1);
    let m = g.model();
    use AttentionKind::*;
    assert_eq!(kinds(&m), vec![Recurrent, Recurrent, Full]);
    assert_eq!(m.blocks[2].k_width, 2 * 16);

    // LFM2 short conv: R = n_embd · (l_cache − 1), S = 0; conv weight [l_cache, n_embd].
    let mut g = G::new("lfm2");
    g.u("block_count", 3)
        .u("embedding_length", 64)
        .u("attention.head_count", 4)
        .arr("attention.head_count_kv", &[0, 2, 0])
        .u("shortconv.l_cache", 3);
    for il in [0, 2] {
        g.t(&format!("blk.{il}.shortconv.conv.weight"), &[3, 64], F32)
            .t(
                &format!("blk.{il}.shortconv.in_proj.weight"),
                &[64, 192],
                Q8,
            )
            .t(
                &format!("blk.{il}.shortconv.out_proj.weight"),
                &[64, 64],
                Q8,
            );
    }
    g.t("token_embd_norm.weight", &[64], F32);
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(kinds(&m), vec![Recurrent, Full, Recurrent]);
    assert_eq!((m.hparams.n_embd_r, m.hparams.n_embd_s), (128, 0));
    assert_eq!(m.recurrent_bytes_per_seq(), 2 * 4 * 128);
    assert_eq!(m.output_bytes(), 256);
}

#[test]
fn mamba2_is_all_recurrent() {
    let mut g = G::new("mamba2");
    g.u("block_count", 2)
        .u("embedding_length", 64)
        .u("ssm.conv_kernel", 4)
        .u("ssm.inner_size", 128)
        .u("ssm.state_size", 16)
        .u("ssm.group_count", 2);
    for il in 0..2 {
        mamba2_mixer(&mut g, il, 64, 128, 128 + 64);
    }
    let m = g.model();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(kinds(&m), vec![AttentionKind::Recurrent; 2]);
    assert_eq!(m.kv_bytes_per_token_f16(), 0);
    assert_eq!(m.recurrent_bytes_per_seq(), 2 * 4 * (3 * 192 + 16 * 128));
}

#[test]
fn unknown_arch_inspects_with_generic_rules() {
    let mut g = G::new("frobnicator");
    g.u("block_count", 2)
        .u("embedding_length", 64)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 4);
    embed(&mut g, 64, 50, false);
    attn(&mut g, 0, 64, 64, 64);
    dense_ffn(&mut g, 1, 64, 128);
    let m = g.model();
    assert!(
        m.warnings.iter().any(|w| w.contains("generic")),
        "{:?}",
        m.warnings
    );
    assert_eq!(kinds(&m), vec![AttentionKind::Full, AttentionKind::None]);
    assert_eq!(m.kv_bytes_per_token_f16(), 2 * 128);
    assert_eq!(
        m.tensor_bytes(),
        m.profile
            .tensors
            .iter()
            .map(|t| t.n_bytes().unwrap())
            .sum::<u64>()
    );
}

#[test]
fn tensor_shapes_override_and_warn_on_disagreeing_metadata() {
    let mut g = G::new("llama");
    g.u("block_count", 1)
        .u("embedding_length", 128)
        .u("attention.head_count", 4)
        .u("attention.head_count_kv", 4);
    attn(&mut g, 0, 128, 128, 64); // attn_k has 64 columns, metadata says 4 × 32 = 128
    let m = g.model();
    assert_eq!(m.blocks[0].k_width, 64);
    assert_eq!(m.hparams.n_head_kv, vec![2]);
    assert!(
        m.warnings.iter().any(|w| w.contains("attn_k")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut g = G::new("llama");
    g.u("block_count", 3)
        .arr("attention.head_count_kv", &[1, 2]);
    let err = Model::from_profile(g.profile()).unwrap_err();
    assert!(err.to_string().contains("head_count_kv"), "{err}");

    let mut g = G::new("llama");
    g.u("block_count", 1)
        .t("blk.5.attn_q.weight", &[32, 32], F32);
    let err = Model::from_profile(g.profile()).unwrap_err();
    assert!(err.to_string().contains("block_count is 1"), "{err}");

    let mut g = G::new("llama");
    g.u("block_count", 1)
        .t("blk.0.attn_q.weight", &[32, 32], GgmlType(99));
    let err = Model::from_profile(g.profile()).unwrap_err();
    assert!(err.to_string().contains("unknown ggml type id 99"), "{err}");

    let mut p = G::new("llama").profile();
    p.tensors.push(TensorEntry {
        name: "x".into(),
        ty: F32,
        dims: vec![1],
        file: 0,
        offset: 0,
    });
    p.tensors.push(p.tensors[0].clone());
    assert!(matches!(
        Model::from_profile(p),
        Err(ModelError::DuplicateTensor { .. })
    ));
}

#[test]
fn profile_keeps_planner_metadata_only() {
    let mut g = G::new("llama");
    g.u("block_count", 1);
    g.w.kv("general.license", Value::String("mit".into()));
    g.w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    g.w.kv("llama.rope.freq_base", Value::F32(500000.0));
    g.w.kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let p = g.profile();
    assert!(p.meta("general.license").is_none());
    assert_eq!(
        p.meta("tokenizer.ggml.tokens"),
        Some(&MetaValue::Len { len: 2 })
    );
    assert_eq!(
        p.meta("llama.attention.layer_norm_rms_epsilon"),
        Some(&MetaValue::Float(1e-5))
    );
    assert_eq!(p.name, "llama-tiny");
    assert!(matches!(p.provenance, Provenance::GgufHeader { .. }));
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    const SUFFIXES: &[&str] = &[
        "block_count",
        "nextn_predict_layers",
        "embedding_length",
        "context_length",
        "vocab_size",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
        "attention.key_length_swa",
        "attention.key_length_mla",
        "attention.value_length_mla",
        "attention.sliding_window",
        "attention.sliding_window_pattern",
        "attention.recurrent_layers",
        "full_attention_interval",
        "ssm.conv_kernel",
        "ssm.inner_size",
        "ssm.state_size",
        "ssm.group_count",
        "shortconv.l_cache",
        "wkv.head_size",
        "token_shift_count",
        "expert_count",
        "expert_used_count",
        "expert_feed_forward_length",
    ];

    fn value() -> impl Strategy<Value = MetaValue> {
        let int = prop_oneof![
            Just(0i64),
            Just(-1),
            Just(i64::MAX),
            Just(u32::MAX as i64),
            0i64..10
        ];
        prop_oneof![
            int.clone().prop_map(MetaValue::Int),
            proptest::collection::vec(int, 0..6).prop_map(MetaValue::Ints),
            proptest::collection::vec(any::<bool>(), 1..6).prop_map(MetaValue::Bools),
            Just(MetaValue::Str("x".into())),
            Just(MetaValue::Float(0.5)),
            Just(MetaValue::Len { len: 3 }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any metadata on a real-shaped tensor table: an error or a model, never a panic.
        #[test]
        fn hostile_metadata_never_panics(
            arch in proptest::sample::select(vec![
                "llama", "gemma3", "gpt-oss", "deepseek2", "qwen3next", "nemotron_h_moe",
                "lfm2", "mamba2", "rwkv7", "granitehybrid", "falcon-h1", "weird",
            ]),
            kvs in proptest::collection::vec(
                (proptest::sample::select(SUFFIXES.to_vec()), value()), 0..12),
        ) {
            let mut g = G::new("x");
            embed(&mut g, 64, 10, false);
            attn(&mut g, 0, 64, 64, 32);
            mamba2_mixer(&mut g, 1, 64, 64, 96);
            g.t("blk.2.ffn_up_exps.weight", &[64, 32, 4], Q8);
            let mut p = g.profile();
            p.arch = arch.to_string();
            p.metadata.clear();
            for (k, v) in kvs {
                p.metadata.insert(format!("{arch}.{k}"), v);
            }
            if let Ok(m) = Model::from_profile(p) {
                let _ = (m.kv_bytes_per_token_f16(), m.recurrent_bytes_per_seq(), m.params());
                let _ = m.kv_bytes_per_token(GgmlType::Q8_0, GgmlType::Q4_0);
            }
        }

        /// Random edits of a real profile's TOML: an error with a message, or a model.
        #[test]
        fn mutated_profile_toml_never_panics(
            at in 0usize..16_000,
            len in 0usize..40,
            with in "[-0-9a-z\\[\\]{}=\",. \n#]{0,40}",
        ) {
            let text = include_str!("../../models/gemma-3-270m-Q4_K_M.toml");
            let at = at.min(text.len());
            let end = (at + len).min(text.len());
            if !text.is_char_boundary(at) || !text.is_char_boundary(end) {
                return Ok(());
            }
            let mutated = format!("{}{}{}", &text[..at], with, &text[end..]);
            match ModelProfile::from_toml_str(&mutated, std::path::Path::new("m.toml")) {
                Ok(p) => {
                    let _ = Model::from_profile(p);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn absurd_block_count_is_refused() {
        let mut g = G::new("llama");
        g.u("block_count", u32::MAX);
        let err = Model::from_profile(g.profile()).unwrap_err();
        assert!(err.to_string().contains("LLAMA_MAX_LAYERS"), "{err}");
    }
}
