//! vLLM TP/PP rules: one test per rule and per worked example of
//! `shared/notes/vllm-tp-rules.md`, and every model of `model-configs.toml`
//! (copied to tests/fixtures/vllm/, included at compile time).

use assert_cmd::Command;
use ggplan::vllm::config::ArchConfig;
use ggplan::vllm::memory::{self, KvDtype, MemoryOptions};
use ggplan::vllm::plan::{resolve_quant, QuantChoice, Status};
use ggplan::vllm::rules::{self, Rule, Target, Verdict};
use ggplan::vllm::{plan, GpuSpec, Plan, PlanOptions, QuantScheme, VllmVersion};

const MODELS: &str = include_str!("../fixtures/vllm/model-configs.toml");
const EXAONE_AWQ: &str = include_str!("../fixtures/vllm/exaone-3.5-32b-awq.json");
const GLM_AIR_FP8: &str = include_str!("../fixtures/vllm/glm-4.5-air-fp8.json");
const GLM_45V: &str = include_str!("../fixtures/vllm/glm-4.5v.json");
const GIB: u64 = 1 << 30;

fn models() -> toml::Table {
    toml::from_str(MODELS).expect("fixture parses")
}

fn model(key: &str) -> ArchConfig {
    let t = models();
    let table = t[key].as_table().expect("table");
    ArchConfig::from_notes_table(table, key).expect("config")
}

fn json(text: &str) -> ArchConfig {
    ArchConfig::from_hf_json(text, "fixture").expect("config")
}

fn opts(gpus: u32, quant: QuantScheme) -> PlanOptions {
    PlanOptions {
        gpus: GpuSpec {
            count: gpus,
            mem_bytes: None,
            compute_capability: None,
        },
        quant,
        version: VllmVersion::LATEST,
        fp8_native: Some(true),
        expert_parallel: false,
        gpu_memory_utilization: 0.9,
        kv_cache_dtype: KvDtype::Auto,
        max_model_len: None,
        max_num_batched_tokens: None,
        overhead_bytes: None,
    }
}

fn tps(p: &Plan, status: Status) -> Vec<u64> {
    p.candidates
        .iter()
        .filter(|c| c.pp == 1 && c.status == status)
        .map(|c| c.tp)
        .collect()
}

fn target(tp: u64, quant: QuantScheme) -> Target {
    Target {
        tp,
        pp: 1,
        quant,
        version: VllmVersion::LATEST,
        fp8_native: Some(true),
        expert_parallel: false,
    }
}

/// The vLLM error text of the first invalid finding of `rule` at `tp`.
fn error_of(p: &Plan, tp: u64, rule: Rule) -> Option<String> {
    p.candidates
        .iter()
        .find(|c| c.tp == tp && c.pp == 1)?
        .reasons
        .iter()
        .find_map(|f| match (&f.verdict, f.rule == rule) {
            (Verdict::Invalid { vllm_error }, true) => Some(vllm_error.clone()),
            _ => None,
        })
}

// ---------------------------------------------------------------- §1 heads

#[test]
fn twenty_heads_cap_tp_at_4_glm_4_7_flash() {
    let p = plan(&model("glm_4_7_flash"), &opts(8, QuantScheme::Bf16));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4]);
    assert_eq!(p.recommended_tp, Some(4));
    assert_eq!(
        error_of(&p, 8, Rule::AttentionHeads).as_deref(),
        Some("ValueError: Total number of attention heads (20) must be divisible by tensor parallel size (8).")
    );
    // TP 5 divides 20 heads but not the 1536-wide experts.
    assert!(error_of(&p, 5, Rule::AttentionHeads).is_none());
    assert!(error_of(&p, 5, Rule::MoeIntermediate).is_some());
}

#[test]
fn kv_heads_partition_or_replicate() {
    let c = model("qwen3_next_80b_a3b"); // 2 KV heads
    let q = QuantScheme::Bf16;
    assert_eq!(rules::kv_heads(&c, &target(2, q)).verdict, Verdict::Ok);
    assert_eq!(rules::kv_heads(&c, &target(8, q)).verdict, Verdict::Ok);
    assert_eq!(
        rules::kv_heads(&c, &target(3, q)).verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: 3 is not divisible by 2".into()
        }
    );
    let c = model("qwen3_32b"); // 8 KV heads: tp 3 < 8 must divide 8
    assert_eq!(
        rules::kv_heads(&c, &target(3, q)).verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: 8 is not divisible by 3".into()
        }
    );
    assert_eq!(rules::replicates_kv(&c, 8), Some(false));
    assert_eq!(rules::replicates_kv(&c, 16), Some(true));
}

#[test]
fn qwen3_next_two_kv_heads_replicate_beyond_tp_2() {
    let p = plan(&model("qwen3_next_80b_a3b"), &opts(8, QuantScheme::Bf16));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4, 8]);
    assert_eq!(p.max_valid_tp, Some(8));
    assert_eq!(p.recommended_tp, Some(2));
    let c8 = p
        .candidates
        .iter()
        .find(|c| c.tp == 8 && c.pp == 1)
        .unwrap();
    assert_eq!(c8.replicates_kv, Some(true));
    assert!(c8
        .reasons
        .iter()
        .any(|f| f.rule == Rule::KvReplication && f.is_warn()));
    let note = p
        .notes
        .iter()
        .find(|n| n.contains("replicates KV heads"))
        .expect("waste note");
    assert!(
        note.contains("TP 4, 8") && note.contains("beyond TP 2"),
        "{note}"
    );
    // GDN (16 key / 32 value heads) allows TP 16: it is not what limits TP.
    let t16 = target(16, QuantScheme::Bf16);
    assert!(rules::gdn(&model("qwen3_next_80b_a3b"), &t16)
        .iter()
        .all(|f| f.verdict == Verdict::Ok));
}

#[test]
fn mla_is_limited_by_heads_only() {
    let c = model("deepseek_v3_1");
    let p = plan(&c, &opts(16, QuantScheme::Bf16));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4, 8, 16]);
    assert_eq!(p.recommended_tp, Some(16));
    assert!(p.candidates.iter().all(|c| c.replicates_kv == Some(false)));
}

#[test]
fn vision_heads_must_divide_tp_glm_4_5v() {
    let c = json(GLM_45V);
    assert_eq!(c.num_attention_heads, Some(96)); // text_config unwrapped
    let p = plan(&c, &opts(8, QuantScheme::Bf16));
    assert_eq!(
        error_of(&p, 8, Rule::VisionHeads).as_deref(),
        Some("AssertionError: 12 is not divisible by 8")
    );
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4]);
}

#[test]
fn pipeline_stages_follow_get_pp_indices() {
    let p = plan(&model("qwen3_32b"), &opts(8, QuantScheme::Bf16));
    let pp: Vec<(u64, u64)> = p
        .candidates
        .iter()
        .filter(|c| c.pp > 1)
        .map(|c| (c.tp, c.pp))
        .collect();
    assert_eq!(pp, vec![(4, 2), (2, 4), (1, 8)]);
    let c = p
        .candidates
        .iter()
        .find(|c| c.tp == 2 && c.pp == 4)
        .unwrap();
    let f = c
        .reasons
        .iter()
        .find(|f| f.rule == Rule::PipelineStages)
        .unwrap();
    assert!(f.message.contains("16/16/16/16"), "{}", f.message);
    assert_eq!(rules::pp_partition(47, 2), vec![24, 23]);
}

// ---------------------------------------------------------------- §2 linears, quantisation

#[test]
fn dense_intermediate_must_divide() {
    let c = json(
        r#"{"num_hidden_layers":2,"hidden_size":4096,"num_attention_heads":24,"num_key_value_heads":24,"intermediate_size":10000,"vocab_size":32000}"#,
    );
    let f = rules::dense_intermediate(&c, &target(3, QuantScheme::Bf16)).unwrap();
    assert_eq!(
        f.verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: 10000 is not divisible by 3".into()
        }
    );
}

#[test]
fn awq_27392_group_128_fails_beyond_tp_2() {
    let c = json(EXAONE_AWQ);
    let (q, _) = resolve_quant(None, None, &c);
    assert_eq!(
        q,
        QuantScheme::Awq {
            bits: 4,
            group: Some(128)
        }
    );
    let p = plan(&c, &opts(8, q));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2]);
    let awq = "ValueError: The input size is not aligned with the quantized weight shape. This can be caused by too large tensor parallel size.";
    assert_eq!(error_of(&p, 4, Rule::QuantGroup).as_deref(), Some(awq));
    assert_eq!(error_of(&p, 8, Rule::QuantGroup).as_deref(), Some(awq));
    let f = p
        .candidates
        .iter()
        .find(|c| c.tp == 4 && c.pp == 1)
        .unwrap();
    let m = &f
        .reasons
        .iter()
        .find(|f| f.rule == Rule::QuantGroup)
        .unwrap()
        .message;
    assert!(m.contains("6848") && m.contains("= 64"), "{m}");
    // The same model in BF16: heads allow TP 8 (40 / 8).
    let p = plan(&c, &opts(8, QuantScheme::Bf16));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4, 8]);
}

#[test]
fn compressed_tensors_group_error_text() {
    let c = json(EXAONE_AWQ);
    let (q, _) = resolve_quant(Some(QuantChoice::CompressedTensors), Some(128), &c);
    let f = rules::quant_group(&c, &target(4, q)).unwrap();
    match f.verdict {
        Verdict::Invalid { vllm_error } => assert!(
            vllm_error.starts_with("ValueError: Weight input_size_per_partition=6848 is not divisible by group_size=128."),
            "{vllm_error}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_group_size_is_unknown_not_guessed() {
    let c = model("hermes_3_llama_3_1_8b");
    let (q, _) = resolve_quant(Some(QuantChoice::Gptq), None, &c);
    let f = rules::quant_group(&c, &target(2, q)).unwrap();
    assert!(f.is_unknown());
    assert!(f.message.contains("group_size"), "{}", f.message);
}

#[test]
fn marlin_tiles_fall_back_before_0_24_and_pad_after() {
    // 27392 / 4 = 6848: whole groups of 64, but not a multiple of Marlin's 128-wide K tile.
    let c = json(EXAONE_AWQ);
    let q = QuantScheme::Awq {
        bits: 4,
        group: Some(64),
    };
    let mut t = target(4, q);
    t.version = VllmVersion::new(0, 23);
    let f = rules::marlin_tiles(&c, &t).unwrap();
    assert!(f.is_warn(), "{f:?}");
    assert!(
        f.message
            .contains("Falling back to unoptimized AWQ kernels"),
        "{}",
        f.message
    );
    assert_eq!(rules::quant_group(&c, &t).unwrap().verdict, Verdict::Ok);
    t.version = VllmVersion::new(0, 24);
    let f = rules::marlin_tiles(&c, &t).unwrap();
    assert_eq!(f.verdict, Verdict::Ok);
    assert!(f.message.contains("marlin_padded_nk"), "{}", f.message);
}

#[test]
fn moe_marlin_falls_back_to_wna16_before_0_25() {
    // Qwen3-30B-A3B-AWQ at TP 4: 768 / 4 = 192, not a multiple of 128 (vllm#17604).
    let c = model("qwen3_30b_a3b");
    let q = QuantScheme::Awq {
        bits: 4,
        group: Some(128),
    };
    let mut t = target(4, q);
    t.version = VllmVersion::new(0, 11);
    let f = rules::moe_marlin(&c, &t).unwrap();
    assert!(f.is_warn());
    assert!(f.message.contains("Falling back to Moe WNA16") && f.message.contains("vllm#17604"));
    t.version = VllmVersion::new(0, 25);
    assert_eq!(rules::moe_marlin(&c, &t).unwrap().verdict, Verdict::Ok);
    t.tp = 2; // 384 = 3 × 128
    t.version = VllmVersion::new(0, 11);
    assert_eq!(rules::moe_marlin(&c, &t).unwrap().verdict, Verdict::Ok);
}

#[test]
fn moe_wna16_group_below_32_fails() {
    // GLM-4.5-Air experts 1408 / 8 = 176 = 16 · 11: g128 → 64 → 32 → 16 < 32.
    let c = model("glm_4_5_air");
    let mut t = target(
        8,
        QuantScheme::Awq {
            bits: 4,
            group: Some(128),
        },
    );
    t.version = VllmVersion::new(0, 11);
    let f = rules::moe_marlin(&c, &t).unwrap();
    assert_eq!(
        f.verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError (moe_wna16.py MoeWNA16Method.create_weights: assert group_size >= 32)".into()
        }
    );
    t.tp = 4; // 352 = 32 · 11: g 32 fits, a slower fallback only
    assert!(rules::moe_marlin(&c, &t).unwrap().is_warn());
}

#[test]
fn expert_parallel_allows_an_uneven_split() {
    let c = model("gpt_oss_20b"); // 32 experts
    let mut t = target(3, QuantScheme::Bf16);
    t.expert_parallel = true;
    let f = rules::expert_parallel(&c, &t).unwrap();
    assert!(f.is_warn());
    assert!(
        f.message.contains("10 or 11 per rank") && f.message.contains("EPLB"),
        "{}",
        f.message
    );
    t.tp = 4;
    assert_eq!(rules::expert_parallel(&c, &t).unwrap().verdict, Verdict::Ok);
    let dense = model("qwen3_32b");
    assert!(rules::expert_parallel(&dense, &t).unwrap().is_warn());
}

#[test]
fn glm_4_5_air_fp8_marlin_without_native_fp8() {
    let c = json(GLM_AIR_FP8);
    let (q, _) = resolve_quant(None, None, &c);
    assert_eq!(q, QuantScheme::Fp8); // channel-wise compressed-tensors
    let mut o = opts(8, q);
    o.fp8_native = Some(false);
    o.version = VllmVersion::new(0, 23);
    let p = plan(&c, &o);
    assert_eq!(tps(&p, Status::Valid), vec![1, 2]);
    assert_eq!(
        error_of(&p, 4, Rule::Fp8Marlin).as_deref(),
        Some("RuntimeError: size_n = 5472 is not divisible by tile_n_size = 64")
    );
    assert_eq!(
        error_of(&p, 8, Rule::Fp8Marlin).as_deref(),
        Some("RuntimeError: size_n = 2736 is not divisible by tile_n_size = 64")
    );
    // Native FP8, or vLLM ≥ 0.24 padding: the BF16 rules apply (practical max 8 = KV heads).
    o.fp8_native = Some(true);
    assert_eq!(tps(&plan(&c, &o), Status::Valid), vec![1, 2, 4, 8]);
    o.fp8_native = Some(false);
    o.version = VllmVersion::new(0, 24);
    let p = plan(&c, &o);
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4, 8]);
    assert_eq!(p.recommended_tp, Some(8));
    // Unknown GPU: the rule says so instead of guessing.
    o.fp8_native = None;
    o.version = VllmVersion::new(0, 11);
    let p = plan(&c, &o);
    assert_eq!(tps(&p, Status::Unknown), vec![1, 2, 4, 8]);
}

#[test]
fn fp8_block_moe_qwen3_30b_fails_at_tp4_and_235b_at_tp8() {
    let blk = QuantScheme::Fp8Block {
        block_n: 128,
        block_k: 128,
    };
    let p = plan(&model("qwen3_30b_a3b"), &opts(8, blk));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2]);
    assert_eq!(
        error_of(&p, 4, Rule::Fp8BlockMoe).as_deref(),
        Some("ValueError: The output_size of gate's and up's weight = 192 is not divisible by weight quantization block_n = 128.")
    );
    let p = plan(&model("qwen3_235b_a22b"), &opts(8, blk));
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4]);
    assert!(error_of(&p, 8, Rule::Fp8BlockMoe)
        .unwrap()
        .contains("= 192 "));
    // Expert parallel keeps experts whole: TP 4 works for the 30B.
    let mut o = opts(8, blk);
    o.expert_parallel = true;
    let p = plan(&model("qwen3_30b_a3b"), &o);
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4, 8]);
}

#[test]
fn fp8_block_qwen3_next_shared_expert_fails_at_tp8_even_with_ep() {
    let blk = QuantScheme::Fp8Block {
        block_n: 128,
        block_k: 128,
    };
    let c = model("qwen3_next_80b_a3b");
    let mut o = opts(8, blk);
    o.expert_parallel = true;
    let p = plan(&c, &o);
    // 0.33 skips the merged gate_up; the row-parallel down_proj (512 / 8 = 64) still fails.
    assert_eq!(
        error_of(&p, 8, Rule::Fp8Block).as_deref(),
        Some("ValueError: Weight input_size_per_partition = 64 is not divisible by weight quantization block_k = 128.")
    );
    // 0.11 has no merged skip: gate_up fails first.
    o.version = VllmVersion::new(0, 11);
    let p = plan(&c, &o);
    assert_eq!(
        error_of(&p, 8, Rule::Fp8Block).as_deref(),
        Some("ValueError: Weight output_partition_size = 64 is not divisible by weight quantization block_n = 128.")
    );
    assert_eq!(tps(&p, Status::Valid), vec![1, 2, 4]);
}

#[test]
fn fp8_block_deepseek_at_tp32_fails_on_576() {
    let blk = QuantScheme::Fp8Block {
        block_n: 128,
        block_k: 128,
    };
    let p = plan(&model("deepseek_v3_1"), &opts(32, blk));
    assert_eq!(
        error_of(&p, 32, Rule::Fp8Block).as_deref(),
        Some("ValueError: Weight input_size_per_partition = 576 is not divisible by weight quantization block_k = 128.")
    );
    assert!(tps(&p, Status::Valid).contains(&16));
}

#[test]
fn compressed_tensors_schemes_map_to_rules() {
    // W8A8-FP8 block (compressed_tensors_w8a8_fp8.py → validate_fp8_block_shape)
    let c = json(
        r#"{"quantization_config":{"quant_method":"compressed-tensors","config_groups":{"g":{"weights":
        {"num_bits":8,"type":"float","strategy":"block","block_structure":[128,128]}}}}}"#,
    );
    assert_eq!(
        resolve_quant(None, None, &c).0,
        QuantScheme::Fp8Block {
            block_n: 128,
            block_k: 128
        }
    );
    // W4A16 channel-wise: no group rule
    let c = json(
        r#"{"num_attention_heads":8,"num_key_value_heads":8,"head_dim":128,"hidden_size":1024,"intermediate_size":3000,
        "quantization_config":{"quant_method":"compressed-tensors","config_groups":{"g":{"weights":
        {"num_bits":4,"type":"int","strategy":"channel","group_size":null}}}}}"#,
    );
    let (q, _) = resolve_quant(None, None, &c);
    assert_eq!(
        q,
        QuantScheme::CtWna16 {
            bits: 4,
            group: Some(-1)
        }
    );
    assert_eq!(
        rules::quant_group(&c, &target(8, q)).unwrap().verdict,
        Verdict::Ok
    );
    // --quant overrides the checkpoint and says so
    let (q, notes) = resolve_quant(Some(QuantChoice::Bf16), None, &c);
    assert_eq!(q, QuantScheme::Bf16);
    assert_eq!(notes.len(), 1);
}

// ---------------------------------------------------------------- §3 vocab, MoE, Mamba, GDN

#[test]
fn mxfp4_experts_round_up_instead_of_failing() {
    let c = model("gpt_oss_20b"); // 2880-wide experts
    let f = rules::moe_intermediate(&c, &target(7, QuantScheme::Mxfp4)).unwrap();
    assert_eq!(f.verdict, Verdict::Ok);
    assert!(rules::moe_intermediate(&c, &target(7, QuantScheme::Bf16))
        .unwrap()
        .is_invalid());
}

#[test]
fn mamba2_state_per_sequence() {
    // 1 Mamba2 layer + 1 attention layer; fp32 SSM state as Nemotron sets it.
    let c = json(
        r#"{"hybrid_override_pattern":"M*","mamba_num_heads":64,"mamba_head_dim":64,"n_groups":8,
        "ssm_state_size":128,"conv_kernel":4,"mamba_ssm_cache_dtype":"float32",
        "num_attention_heads":32,"num_key_value_heads":2,"head_dim":128,"hidden_size":2688,"vocab_size":131072}"#,
    );
    let r = memory::estimate(&c, &target(2, QuantScheme::Bf16), &mem(80)).unwrap();
    // conv: (4096 + 2·8·128)/2 × 3 × 2 B; ssm: 64/2 × 64 × 128 × 4 B
    assert_eq!(
        r.state_bytes_per_seq,
        (4096 + 2 * 8 * 128) / 2 * 3 * 2 + 32 * 64 * 128 * 4
    );
    assert_eq!(r.kv_bytes_per_token, 2 * 128 * 2); // 2 KV heads / tp 2 = 1
}

#[test]
fn vocab_is_padded_to_64_before_the_split() {
    // 100030 % 3 != 0, but the padded 100032 divides by 3.
    let c = json(
        r#"{"num_attention_heads":3,"num_key_value_heads":3,"hidden_size":384,"intermediate_size":999,"vocab_size":100030}"#,
    );
    assert_eq!(
        rules::vocab(&c, &target(3, QuantScheme::Bf16)).verdict,
        Verdict::Ok
    );
    let c = model("qwen3_32b"); // 151936 = 2^7 · 1187
    assert_eq!(
        rules::vocab(&c, &target(3, QuantScheme::Bf16)).verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: 151936 is not divisible by 3".into()
        }
    );
    // Without a vocab, TPs dividing 64 are still decided; others are unknown.
    let c = model("exaone_4_0_32b");
    assert_eq!(
        rules::vocab(&c, &target(8, QuantScheme::Bf16)).verdict,
        Verdict::Ok
    );
    assert!(rules::vocab(&c, &target(5, QuantScheme::Bf16)).is_unknown());
}

#[test]
fn moe_intermediate_and_shared_expert() {
    let c = model("glm_4_5_air"); // moe 1408, shared 1 × 1408
    let f = rules::moe_intermediate(&c, &target(3, QuantScheme::Bf16)).unwrap();
    assert!(f.is_invalid());
    let f = rules::shared_expert(&c, &target(3, QuantScheme::Bf16)).unwrap();
    assert_eq!(
        f.verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: 1408 is not divisible by 3".into()
        }
    );
    let mut t = target(3, QuantScheme::Bf16);
    t.expert_parallel = true;
    assert_eq!(
        rules::moe_intermediate(&c, &t).unwrap().verdict,
        Verdict::Ok
    );
    assert!(rules::shared_expert(&c, &t).unwrap().is_invalid()); // shared stays TP-split
                                                                 // Qwen3-MoE has no shared expert and no dense layers (intermediate_size unused).
    let q = model("qwen3_30b_a3b");
    assert!(rules::shared_expert(&q, &target(8, QuantScheme::Bf16)).is_none());
    assert!(rules::dense_intermediate(&q, &target(8, QuantScheme::Bf16)).is_none());
}

#[test]
fn mamba2_heads_groups_and_inner() {
    let c = model("nemotron_3_nano_30b_a3b"); // 64 heads × 64, 8 groups
    let f = rules::mamba2(&c, &target(8, QuantScheme::Bf16));
    assert!(f.iter().all(|f| f.verdict == Verdict::Ok), "{f:?}");
    // TP 16 divides the 64 heads but not the 8 groups.
    let f = rules::mamba2(&c, &target(16, QuantScheme::Bf16));
    assert_eq!(f[0].verdict, Verdict::Ok);
    assert!(f[1].is_invalid());
    let f = rules::mamba2(&c, &target(3, QuantScheme::Bf16));
    assert_eq!(
        f[0].verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: Tensor parallel world size must divide num heads.".into()
        }
    );
    assert!(f[1].is_invalid());
    let g = json(
        r#"{"hybrid_override_pattern":"M*","mamba_num_heads":48,"mamba_head_dim":64,"n_groups":8,
        "num_attention_heads":48,"num_key_value_heads":16,"hidden_size":3072,"vocab_size":1024}"#,
    );
    let f = rules::mamba2(&g, &target(16, QuantScheme::Bf16));
    assert_eq!(f[0].verdict, Verdict::Ok); // 48 / 16
    assert_eq!(
        f[1].verdict,
        Verdict::Invalid {
            vllm_error: "AssertionError: If tensor parallel world size does not divide num_groups, then num_groups must equal 1.".into()
        }
    );
    let one = json(
        r#"{"hybrid_override_pattern":"M","mamba_num_heads":48,"mamba_head_dim":64,"n_groups":1}"#,
    );
    assert_eq!(
        rules::mamba2(&one, &target(16, QuantScheme::Bf16))[1].verdict,
        Verdict::Ok
    );
}

#[test]
fn gated_deltanet_heads() {
    let c = model("qwen3_next_80b_a3b");
    let f = rules::gdn(&c, &target(32, QuantScheme::Bf16));
    assert_eq!(f[0].verdict, Verdict::Ok); // 32 value heads
    assert!(f[1].is_invalid()); // 16 key heads
}

// ---------------------------------------------------------------- §4 memory

fn mem(gib: u64) -> MemoryOptions {
    MemoryOptions {
        gpu_mem_bytes: gib * GIB,
        gpu_memory_utilization: 0.9,
        kv_cache_dtype: KvDtype::Auto,
        max_model_len: None,
        max_num_batched_tokens: None,
        max_num_seqs: 256,
        overhead_bytes: None,
    }
}

#[test]
fn kv_bytes_per_token_qwen3_32b() {
    let c = model("qwen3_32b");
    let per = |tp, dt| {
        let mut m = mem(80);
        m.kv_cache_dtype = dt;
        memory::estimate(&c, &target(tp, QuantScheme::Bf16), &m)
            .unwrap()
            .kv_bytes_per_token
    };
    assert_eq!(per(1, KvDtype::Auto), 262_144);
    assert_eq!(per(2, KvDtype::Auto), 131_072);
    assert_eq!(per(8, KvDtype::Auto), 32_768);
    assert_eq!(per(16, KvDtype::Auto), 32_768); // replication
    assert_eq!(per(8, KvDtype::Fp8), 16_384);
}

#[test]
fn mla_latent_is_not_split_by_tp() {
    let glm = model("glm_4_7_flash");
    let ds = model("deepseek_v3_1");
    for tp in [1, 2, 4] {
        let t = target(tp, QuantScheme::Bf16);
        assert_eq!(
            memory::estimate(&glm, &t, &mem(80))
                .unwrap()
                .kv_bytes_per_token,
            54_144
        );
        assert_eq!(
            memory::estimate(&ds, &t, &mem(80))
                .unwrap()
                .kv_bytes_per_token,
            70_272
        );
    }
}

#[test]
fn sliding_window_layers_are_capped() {
    let c = model("gpt_oss_20b"); // 12 sliding (128) + 12 full, 8 KV heads × 64
    let mut m = mem(80);
    m.max_model_len = Some(131_072);
    let r = memory::estimate(&c, &target(1, QuantScheme::Mxfp4), &m).unwrap();
    let per_layer = 2 * 8 * 64 * 2;
    assert_eq!(r.kv_bytes_per_token, 24 * per_layer);
    // full layers hold all 131072 tokens; sliding ones 127 + 8192 batched, in 16-blocks, + 1 block
    let swa_tokens = (127u64 + 8192).div_ceil(16) * 16 + 16;
    assert_eq!(
        r.bytes_per_seq,
        Some(12 * per_layer * 131_072 + 12 * per_layer * swa_tokens)
    );
    let conc = r.max_concurrency.unwrap();
    assert!((conc - r.kv_pool_bytes as f64 / r.bytes_per_seq.unwrap() as f64).abs() < 1e-9);
}

#[test]
fn recurrent_state_is_per_sequence() {
    let c = model("qwen3_next_80b_a3b");
    let r = memory::estimate(&c, &target(2, QuantScheme::Bf16), &mem(141)).unwrap();
    // 36 GDN layers: conv (2·16·128 + 32·128)/2 × 3 + recurrent 16 × 128 × 128, BF16
    let conv_dim = 2 * 16 * 128 + 32 * 128;
    assert_eq!(
        r.state_bytes_per_seq,
        36 * (conv_dim / 2 * 3 + 16 * 128 * 128) * 2
    );
    // only the 12 full-attention layers have KV: 1 KV head per rank × 256
    assert_eq!(r.kv_bytes_per_token, 12 * 2 * 256 * 2);
    // Nemotron lacks ssm_state_size: memory is unknown, not guessed.
    let n = model("nemotron_3_nano_30b_a3b");
    let e = memory::estimate(&n, &target(2, QuantScheme::Bf16), &mem(80)).unwrap_err();
    assert!(e == "vocab_size" || e == "ssm_state_size", "{e}");
}

#[test]
fn kv_budget_and_concurrency_on_16_gib_gpus() {
    let c = model("qwen3_32b");
    let mut o = opts(8, QuantScheme::Bf16);
    o.gpus.mem_bytes = Some(16 * GIB);
    o.max_model_len = Some(32_768);
    let p = plan(&c, &o);
    let c8 = p
        .candidates
        .iter()
        .find(|c| c.tp == 8 && c.pp == 1)
        .unwrap();
    let m = c8.memory.as_ref().unwrap();
    assert_eq!(m.requested_bytes, (16.0 * GIB as f64 * 0.9).ceil() as u64);
    assert_eq!(
        m.kv_pool_bytes,
        m.requested_bytes - m.weights_bytes - m.activation_bytes - m.overhead_bytes
    );
    // ~32.8 B params in BF16 over 8 GPUs: 7.6-8 GiB each
    assert!(
        m.weights_bytes > 7 * GIB && m.weights_bytes < 8 * GIB,
        "{}",
        m.weights_bytes
    );
    assert_eq!(m.kv_tokens, (m.max_concurrency.unwrap() * 32_768.0) as u64);
    // TP 1 cannot hold 64 GB of weights
    let c1 = p.candidates.iter().find(|c| c.tp == 1).unwrap();
    assert!(!c1.memory.as_ref().unwrap().fits);
    let serve = p.serve.expect("serve line");
    let seqs = (m.max_concurrency.unwrap().floor() as u64).clamp(1, 256);
    assert_eq!(
        serve,
        format!("vllm serve Qwen/Qwen3-32B --tensor-parallel-size 8 --pipeline-parallel-size 1 --max-model-len 32768 --max-num-seqs {seqs} --gpu-memory-utilization 0.9 --kv-cache-dtype auto")
    );
    // fp8 KV doubles the tokens (same pool, half the bytes per token)
    let mut o2 = o.clone();
    o2.kv_cache_dtype = KvDtype::Fp8;
    let p2 = plan(&model("qwen3_32b"), &o2);
    let m2 = p2
        .candidates
        .iter()
        .find(|c| c.tp == 8 && c.pp == 1)
        .unwrap()
        .memory
        .clone()
        .unwrap();
    assert_eq!(m2.kv_pool_bytes, m.kv_pool_bytes);
    assert!((m2.kv_tokens as i64 - 2 * m.kv_tokens as i64).abs() <= 2);
}

#[test]
fn vllm_errors_when_the_pool_is_too_small() {
    let c = model("qwen3_32b");
    // TP 1 on 80 GiB: weights ~61 GiB, some KV left but not 40960 tokens × 256 KiB = 10 GiB.
    let mut m = mem(80);
    m.max_model_len = Some(40_960);
    m.gpu_memory_utilization = 0.9;
    let r = memory::estimate(&c, &target(1, QuantScheme::Bf16), &m).unwrap();
    let fit = r.max_model_len_fit.unwrap();
    assert!(fit > 0 && fit < 40_960, "{fit}");
    // the estimated length is the largest whose KV fits: 16-token blocks of 262144 B/token
    assert!(fit.div_ceil(16) * 16 * 262_144 <= r.kv_pool_bytes);
    assert!((fit + 16).div_ceil(16) * 16 * 262_144 > r.kv_pool_bytes);
    let e = r.vllm_error.unwrap();
    assert!(e.starts_with("ValueError: To serve at least one request with the model's max seq len (40960), (10.00 GiB KV cache is needed"), "{e}");
    assert!(
        e.contains(&format!("the estimated maximum model length is {fit}.")),
        "{e}"
    );
    // TP 1 on 16 GiB: nothing left at all.
    let r = memory::estimate(&c, &target(1, QuantScheme::Bf16), &mem(16)).unwrap();
    assert!(!r.fits);
    assert_eq!(
        r.vllm_error.as_deref(),
        Some("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.")
    );
}

// ---------------------------------------------------------------- every model of model-configs.toml

/// Valid TPs (PP 1) on 8 GPUs in BF16 and the recommendation, worked out by
/// hand from the notes' rules for each model.
const EXPECTED: &[(&str, &[u64], Option<u64>)] = &[
    ("devstral_2_123b", &[], None),
    ("magistral_small_2506", &[1, 2, 4, 8], Some(8)),
    ("qwen3_32b", &[1, 2, 4, 8], Some(8)),
    ("deepseek_r1_distill_qwen_32b", &[1, 2, 4, 8], Some(8)),
    ("deepseek_r1_distill_llama_70b", &[1, 2, 4, 8], Some(8)),
    ("seed_oss_36b", &[1, 2, 4, 8], Some(8)),
    ("nemotron_3_nano_30b_a3b", &[1, 2, 4, 8], Some(2)),
    ("devstral_small_2_24b", &[], None),
    ("gpt_oss_20b", &[1, 2, 4, 8], Some(8)),
    ("gpt_oss_120b", &[1, 2, 4, 8], Some(8)),
    ("qwen3_30b_a3b", &[1, 2, 4, 8], Some(4)),
    ("qwen3_coder_30b_a3b", &[1, 2, 4, 8], Some(4)),
    ("glm_4_7_flash", &[1, 2, 4], Some(4)),
    ("nanbeige4_1_3b", &[], None),
    ("exaone_4_0_32b", &[1, 2, 4, 8], Some(8)),
    ("qwen3_next_80b_a3b", &[1, 2, 4, 8], Some(2)),
    ("qwen3_coder_next", &[1, 2, 4, 8], Some(2)),
    ("glm_4_5_air", &[1, 2, 4, 8], Some(8)),
    ("qwen3_235b_a22b", &[1, 2, 4, 8], Some(4)),
    ("qwen3_coder_480b_a35b", &[], None),
    ("deepseek_v3_1", &[1, 2, 4, 8], Some(8)),
    ("llama_4_scout", &[1, 2, 4, 8], Some(8)),
    ("gemma_3_27b", &[], None),
    ("gemma_4", &[], None),
    ("hermes_3_llama_3_1_8b", &[1, 2, 4, 8], Some(8)),
    ("mistral_large_2407", &[1, 2, 4, 8], Some(8)),
];

#[test]
fn every_model_of_model_configs() {
    let t = models();
    let keys: Vec<&String> = t.keys().collect();
    assert_eq!(
        keys.len(),
        EXPECTED.len(),
        "a model was added to the fixture: {keys:?}"
    );
    for key in keys {
        let (_, valid, rec) = EXPECTED
            .iter()
            .find(|(k, ..)| k == key)
            .unwrap_or_else(|| panic!("{key} not in EXPECTED"));
        let c = model(key);
        let p = plan(&c, &opts(8, QuantScheme::Bf16));
        assert_eq!(tps(&p, Status::Valid), *valid, "{key}");
        assert_eq!(p.recommended_tp, *rec, "{key}");
        // No candidate is ever "valid" while a rule is unknown.
        for cand in &p.candidates {
            if cand.status == Status::Valid {
                assert!(cand.reasons.iter().all(|f| !f.is_unknown()), "{key}");
            }
        }
    }
}

#[test]
fn not_found_fields_give_unknown_verdicts() {
    let t = models();
    for (key, v) in &t {
        let nf = v.get("not_found").and_then(|x| x.as_array());
        let Some(nf) = nf else { continue };
        let c = model(key);
        let mut o = opts(8, QuantScheme::Bf16);
        o.gpus.mem_bytes = Some(16 * GIB);
        let p = plan(&c, &o);
        let mut said: Vec<String> = p
            .candidates
            .iter()
            .flat_map(|c| {
                c.reasons
                    .iter()
                    .map(|f| f.message.clone())
                    .chain(c.memory_unknown.clone())
            })
            .filter(|m| m.starts_with("unknown because "))
            .collect();
        said.extend(
            p.notes
                .iter()
                .filter(|n| n.starts_with("unknown because "))
                .cloned(),
        );
        let fields: Vec<String> = nf
            .iter()
            .filter_map(|x| x.as_str())
            .map(|s| {
                s.split(|ch: char| ch.is_whitespace() || ch == '(')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let all = fields.iter().any(|f| f == "all");
        assert!(
            said.iter().any(|m| all
                || fields.iter().any(
                    |f| m.contains(&format!("{f} is missing")) || m.contains(&format!("{f},"))
                )),
            "{key}: not_found {fields:?} but messages {said:?}"
        );
        // No memory figure is invented for them.
        for cand in &p.candidates {
            if cand.status != Status::Invalid {
                assert!(
                    cand.memory.is_none()
                        || !fields
                            .iter()
                            .any(|f| f == "num_hidden_layers" || f == "vocab_size"),
                    "{key}"
                );
            }
        }
        // Head counts missing: no TP is decided, not even TP 1.
        if fields
            .iter()
            .any(|f| f == "num_attention_heads" || f == "all")
        {
            assert!(
                p.candidates.iter().all(|c| c.status == Status::Unknown),
                "{key}"
            );
            assert!(p.candidates.iter().all(|c| c
                .reasons
                .iter()
                .any(|f| f.message == "unknown because num_attention_heads is missing")));
            assert_eq!(p.serve, None);
        }
    }
}

#[test]
fn nanbeige_20_heads_4_kv_unknown_below_the_cap() {
    let p = plan(&model("nanbeige4_1_3b"), &opts(8, QuantScheme::Bf16));
    assert_eq!(tps(&p, Status::Unknown), vec![1, 2, 4]);
    assert_eq!(tps(&p, Status::Invalid), vec![3, 5, 6, 7, 8]);
    let c = p.candidates.iter().find(|c| c.tp == 4).unwrap();
    assert!(c
        .reasons
        .iter()
        .any(|f| f.message == "unknown because intermediate_size is missing"));
}

// ---------------------------------------------------------------- CLI

#[test]
fn cli_json_fields() {
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/model-configs.toml",
            "--entry",
            "qwen3_next_80b_a3b",
            "--gpus",
            "8",
            "--json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["recommended_tp"], 2);
    assert_eq!(v["max_valid_tp"], 8);
    let c = &v["candidates"][7];
    assert_eq!((c["tp"].as_u64(), c["pp"].as_u64()), (Some(8), Some(1)));
    assert_eq!(c["valid"], true);
    assert_eq!(c["replicates_kv"], true);
    assert_eq!(c["reasons"][0]["rule"], "attention_heads");
    assert_eq!(c["reasons"][0]["status"], "ok");
    let bad = &v["candidates"][2];
    assert_eq!(bad["valid"], false);
    assert!(bad["reasons"].as_array().unwrap().iter().any(|r| r["status"] == "invalid"
        && r["vllm_error"] == "ValueError: Total number of attention heads (16) must be divisible by tensor parallel size (3)."));
    assert!(v["serve"]
        .as_str()
        .unwrap()
        .contains("--tensor-parallel-size 2"));
}

#[test]
fn cli_table_awq_and_exit_codes() {
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/exaone-3.5-32b-awq.json",
            "--gpus",
            "4",
            "--gpu-mem-gib",
            "16",
            "--max-model-len",
            "8192",
        ])
        .assert()
        .success();
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(s.contains("[FAIL] QuantGroup"), "{s}");
    assert!(s.contains("recommended (*): TP 2 × PP 1"), "{s}");
    assert!(
        s.contains("vllm serve LGAI-EXAONE/EXAONE-3.5-32B-Instruct-AWQ --tensor-parallel-size 2 --pipeline-parallel-size 1 --max-model-len 8192 --max-num-seqs "),
        "{s}"
    );
    // Missing heads: exit 2 (bad input), not a guess.
    Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/model-configs.toml",
            "--entry",
            "gemma_3_27b",
            "--gpus",
            "2",
        ])
        .assert()
        .code(2)
        .stdout(predicates::str::contains(
            "unknown because num_attention_heads is missing",
        ));
    // Several models and no --entry: a clear error.
    Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/model-configs.toml",
            "--gpus",
            "2",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--entry"));
    // Does not fit: 80B BF16 on 2 × 16 GiB.
    Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/model-configs.toml",
            "--entry",
            "qwen3_next_80b_a3b",
            "--gpus",
            "2",
            "--gpu-mem-gib",
            "16",
        ])
        .assert()
        .code(3);
}

#[test]
fn cli_compute_capability_decides_fp8_marlin() {
    let run = |cc: &str, v: &str| {
        let out = Command::cargo_bin("ggplan")
            .unwrap()
            .args([
                "tp",
                "tests/fixtures/vllm/glm-4.5-air-fp8.json",
                "--gpus",
                "8",
                "--json",
            ])
            .args(["--compute-capability", cc, "--vllm", v])
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()
    };
    let v = run("8.6", "0.23"); // RTX 3090 / A4000: FP8 Marlin, no padding
    assert_eq!(v["recommended_tp"], 2);
    assert_eq!(v["fp8_native"], false);
    assert_eq!(run("8.9", "0.23")["recommended_tp"], 8);
    assert_eq!(run("8.6", "0.24")["recommended_tp"], 8);
}

#[test]
fn cli_reads_a_profile_toml() {
    use ggplan::model::{MetaValue, ModelProfile, Provenance};
    let mut metadata = std::collections::BTreeMap::new();
    for (k, v) in [
        ("glm4moe.block_count", 47),
        ("glm4moe.nextn_predict_layers", 1),
        ("glm4moe.embedding_length", 4096),
        ("glm4moe.attention.head_count", 96),
        ("glm4moe.attention.head_count_kv", 8),
        ("glm4moe.attention.key_length", 128),
        ("glm4moe.feed_forward_length", 10944),
        ("glm4moe.expert_feed_forward_length", 1408),
        ("glm4moe.expert_count", 128),
        ("glm4moe.expert_used_count", 8),
        ("glm4moe.expert_shared_count", 1),
        ("glm4moe.leading_dense_block_count", 1),
        ("glm4moe.context_length", 131072),
    ] {
        metadata.insert(k.to_string(), MetaValue::Int(v));
    }
    metadata.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Len { len: 151552 },
    );
    let p = ModelProfile {
        name: "GLM-4.5-Air".into(),
        provenance: Provenance::Synthetic {
            description: "test".into(),
            sources: vec!["model-configs.toml [glm_4_5_air]".into()],
        },
        arch: "glm4moe".into(),
        alignment: 32,
        metadata,
        files: vec![],
        tensors: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("glm.toml");
    std::fs::write(&path, toml::to_string(&p).unwrap()).unwrap();
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            path.to_str().unwrap(),
            "--gpus",
            "8",
            "--quant",
            "fp8",
            "--fp8-native=false",
            "--vllm",
            "0.11",
            "--json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    // the same answer as the config.json route: FP8 Marlin caps TP at 2 (block_count 47 − 1 nextn = 46 layers)
    assert_eq!(v["recommended_tp"], 2);
    let c4 = &v["candidates"][3];
    assert!(c4["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["vllm_error"]
            == "RuntimeError: size_n = 5472 is not divisible by tile_n_size = 64"));
    let c2 = &v["candidates"][1];
    assert!(c2["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "ok"));
}

#[test]
fn cli_reads_a_gguf_header() {
    use ggplan::gguf::{write::Writer, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hermes.gguf");
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("llama".into()))
        .kv(
            "general.name",
            Value::String("Hermes-3-Llama-3.1-8B".into()),
        )
        .kv("llama.block_count", Value::U32(32))
        .kv("llama.embedding_length", Value::U32(4096))
        .kv("llama.attention.head_count", Value::U32(32))
        .kv("llama.attention.head_count_kv", Value::U32(8))
        .kv("llama.feed_forward_length", Value::U32(14336))
        .kv("llama.context_length", Value::U32(131072))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("t".into()); 128256]),
        );
    std::fs::write(&path, w.finish()).unwrap();
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .args(["tp", path.to_str().unwrap(), "--gpus", "8", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["recommended_tp"], 8);
    assert_eq!(v["model"], "Hermes-3-Llama-3.1-8B");
    // head_dim is derived the way vLLM derives it (4096 / 32) and said so
    assert!(v["derivations"][0].as_str().unwrap().contains("= 128"));
}

// ---------------------------------------------------------------- robustness

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Any config (zeros, huge values, odd shapes) gives a plan, never a panic,
    /// and a valid candidate never carries an unknown or invalid finding.
    #[test]
    fn any_config_plans_without_panicking(
        dims in proptest::collection::vec(0u64..(1 << 21), 14),
        layers in 0u64..200,
        big in proptest::bool::ANY,
        gpus in 1u32..12,
        q in 0usize..5,
    ) {
        let scale = if big { 1u64 << 20 } else { 1 };
        let d = |i: usize| dims[i].saturating_mul(scale);
        let j = format!(
            r#"{{"num_hidden_layers":{layers},"hidden_size":{},"num_attention_heads":{},"num_key_value_heads":{},
            "head_dim":{},"intermediate_size":{},"vocab_size":{},"moe_intermediate_size":{},"num_experts":{},
            "num_experts_per_tok":{},"shared_expert_intermediate_size":{},{}"qk_rope_head_dim":{},
            "qk_nope_head_dim":{},"v_head_dim":{},"max_position_embeddings":4096,"sliding_window":{},"first_k_dense_replace":1}}"#,
            d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7) % 300, d(8) % 16, d(9),
            if dims[10] % 2 == 0 { format!(r#""kv_lora_rank":{},"#, d(10)) } else { String::new() },
            d(11), d(12), d(13), d(0) % 5000,
        );
        let c = ArchConfig::from_hf_json(&j, "prop").unwrap();
        let quant = [
            QuantScheme::Bf16,
            QuantScheme::Fp8Block { block_n: 128, block_k: 128 },
            QuantScheme::Awq { bits: 4, group: Some(128) },
            QuantScheme::CtWna16 { bits: 8, group: Some(-1) },
            QuantScheme::Mxfp4,
        ][q];
        let mut o = opts(gpus, quant);
        o.gpus.mem_bytes = Some(24 * GIB);
        o.fp8_native = Some(false);
        o.version = VllmVersion::new(0, 11);
        let p = plan(&c, &o);
        for cand in &p.candidates {
            if cand.status == Status::Valid {
                proptest::prop_assert!(cand.reasons.iter().all(|f| !f.is_unknown() && !f.is_invalid()));
            }
        }
    }
}

/// `--hw` takes the GPU count, memory and compute capability from a hardware
/// preset: 8× A4000 (SM 8.6, no native FP8) → TP 8 for Qwen3-32B; the
/// 4090 + 5070 Ti box has two CUDA devices, so TP is capped at 2.
#[test]
fn tp_takes_gpus_from_a_hardware_preset() {
    let run = |hw: &str, code: i32| -> serde_json::Value {
        let out = Command::cargo_bin("ggplan")
            .unwrap()
            .args([
                "tp",
                "tests/fixtures/vllm/model-configs.toml",
                "--entry",
                "qwen3_32b",
            ])
            .args(["--hw", hw, "--max-model-len", "32768", "--json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a4000 = run("8x-rtx-a4000-epyc-7532", 0);
    assert_eq!(a4000["gpus"], 8);
    assert_eq!(a4000["recommended_tp"], 8);
    assert_eq!(a4000["fp8_native"], false);
    // 64 GB of bf16 weights do not fit 2 × 24/16 GB: exit 3 (does not fit).
    let pair = run("rtx4090-rtx5070ti", 3);
    assert_eq!(pair["gpus"], 2);
    assert_eq!(pair["max_valid_tp"], 2);
    // SM 8.9 (4090) and 12.0 (5070 Ti): the lower one decides, both native FP8.
    assert_eq!(pair["fp8_native"], true);
    // A CPU-only box has nothing to run vLLM on.
    Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "tp",
            "tests/fixtures/vllm/model-configs.toml",
            "--entry",
            "qwen3_32b",
        ])
        .args(["--hw", "epyc-9655-cpu"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("no CUDA or ROCm device"));
}
