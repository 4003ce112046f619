//! The TP/PP validity rules, one function per rule. Each mirrors a vLLM
//! function (cited in its doc comment and in [`Finding::source`]) and, when it
//! fails, carries the text vLLM raises. Citations are to the 0.33.0 wheel
//! unless marked 0.11; `shared/notes/vllm-tp-rules.md` quotes each one.

use serde::Serialize;

use super::config::{ArchConfig, Mixer};
use super::{round_up, QuantScheme, VllmVersion};

/// What one candidate is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub tp: u64,
    pub pp: u64,
    pub quant: QuantScheme,
    pub version: VllmVersion,
    /// GPU has native FP8 (SM ≥ 8.9); `None` = not known.
    pub fp8_native: Option<bool>,
    pub expert_parallel: bool,
}

/// Which rule a finding comes from (stable JSON names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    AttentionHeads,
    VisionHeads,
    KvHeads,
    KvReplication,
    DenseIntermediate,
    MoeIntermediate,
    SharedExpert,
    Vocab,
    Mamba2Heads,
    Mamba2Groups,
    Mamba2Inner,
    GdnValueHeads,
    GdnKeyHeads,
    QuantGroup,
    MarlinTiles,
    MoeMarlin,
    Fp8Marlin,
    Fp8Block,
    Fp8BlockMoe,
    ExpertParallel,
    PipelineStages,
}

/// The verdict of one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Verdict {
    Ok,
    /// Legal but costly (KV replication, a slower fallback kernel, padding).
    Warn,
    /// vLLM refuses this: `vllm_error` is what it raises.
    Invalid {
        vllm_error: String,
    },
    /// A field the rule needs is missing from the config.
    Unknown {
        missing_field: String,
    },
}

/// One rule's answer for one candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What was checked, with the numbers.
    pub message: String,
    /// The vLLM file and function the rule mirrors.
    pub source: &'static str,
}

impl Finding {
    pub fn is_invalid(&self) -> bool {
        matches!(self.verdict, Verdict::Invalid { .. })
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self.verdict, Verdict::Unknown { .. })
    }
    pub fn is_warn(&self) -> bool {
        matches!(self.verdict, Verdict::Warn)
    }
}

/// A field a rule needed but the config lacks.
struct Missing(String);

fn need(v: Option<u64>, field: &str) -> Result<u64, Missing> {
    v.ok_or_else(|| Missing(field.to_string()))
}

enum Outcome {
    Ok(String),
    Warn(String),
    Invalid { message: String, error: String },
}

fn finding(rule: Rule, source: &'static str, r: Result<Outcome, Missing>) -> Finding {
    let (verdict, message) = match r {
        Ok(Outcome::Ok(m)) => (Verdict::Ok, m),
        Ok(Outcome::Warn(m)) => (Verdict::Warn, m),
        Ok(Outcome::Invalid { message, error }) => {
            (Verdict::Invalid { vllm_error: error }, message)
        }
        Err(Missing(f)) => (
            Verdict::Unknown {
                missing_field: f.clone(),
            },
            format!("unknown because {f} is missing"),
        ),
    };
    Finding {
        rule,
        verdict,
        message,
        source,
    }
}

/// `divide()` / `ensure_divisibility` (vllm/distributed/utils.py:130).
fn divide_err(num: u64, den: u64) -> String {
    format!("AssertionError: {num} is not divisible by {den}")
}

fn divides(what: &str, num: u64, tp: u64) -> Outcome {
    if num % tp == 0 {
        Outcome::Ok(format!("{what} {num} / tp {tp} = {}", num / tp))
    } else {
        Outcome::Invalid {
            message: format!("{what} {num} is not divisible by tp {tp}"),
            error: divide_err(num, tp),
        }
    }
}

// ------------------------------------------------------------------ heads

/// Query heads must divide TP: `ModelConfig.verify_with_parallel_config`
/// (vllm/config/model.py:1545; same in 0.11). For MLA "heads" is `num_attention_heads`.
pub fn attention_heads(cfg: &ArchConfig, t: &Target) -> Finding {
    finding(
        Rule::AttentionHeads,
        "vllm/config/model.py: ModelConfig.verify_with_parallel_config",
        (|| {
            let h = need(cfg.num_attention_heads, "num_attention_heads")?;
            Ok(if h % t.tp == 0 {
                Outcome::Ok(format!("{h} attention heads / tp {} = {}", t.tp, h / t.tp))
            } else {
                Outcome::Invalid {
                    message: format!("{h} attention heads are not divisible by tp {}", t.tp),
                    error: format!(
                        "ValueError: Total number of attention heads ({h}) must be divisible by tensor parallel size ({}).",
                        t.tp
                    ),
                }
            })
        })(),
    )
}

/// Vision-tower heads are split the same way (vllm#24004: GLM-4.5V at TP 8,
/// `AssertionError: 12 is not divisible by 8`). Only when the config has a vision tower.
pub fn vision_heads(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let h = cfg.vision_heads?;
    Some(finding(
        Rule::VisionHeads,
        "vision encoder attention: divide(num_heads, tp) (vllm#24004)",
        Ok(divides("vision attention heads", h, t.tp)),
    ))
}

/// KV heads: partitioned when `tp < kv` (need `kv % tp == 0`), replicated when
/// `tp >= kv` (need `tp % kv == 0`): `QKVParallelLinear.__init__`
/// (model_executor/layers/linear.py, class line 1011). MLA caches one latent
/// per token and has no KV-head split.
pub fn kv_heads(cfg: &ArchConfig, t: &Target) -> Finding {
    finding(
        Rule::KvHeads,
        "vllm/model_executor/layers/linear.py: QKVParallelLinear.__init__",
        (|| {
            if cfg.is_mla() {
                return Ok(Outcome::Ok(
                    "MLA: one latent per token on every rank, no KV-head split".into(),
                ));
            }
            let kv = need(cfg.num_key_value_heads, "num_key_value_heads")?;
            if kv == 0 {
                return Err(Missing("num_key_value_heads (0)".into()));
            }
            Ok(if t.tp < kv {
                if kv % t.tp == 0 {
                    Outcome::Ok(format!(
                        "{kv} KV heads / tp {} = {} per rank",
                        t.tp,
                        kv / t.tp
                    ))
                } else {
                    Outcome::Invalid {
                        message: format!("{kv} KV heads are not divisible by tp {}", t.tp),
                        error: divide_err(kv, t.tp),
                    }
                }
            } else if t.tp % kv == 0 {
                Outcome::Ok(format!(
                    "tp {} ≥ {kv} KV heads: 1 KV head per rank, {} replicas each",
                    t.tp,
                    t.tp / kv
                ))
            } else {
                Outcome::Invalid {
                    message: format!("tp {} ≥ {kv} KV heads but is not a multiple of it", t.tp),
                    error: divide_err(t.tp, kv),
                }
            })
        })(),
    )
}

/// Whether `tp` replicates KV heads (legal, but the per-GPU KV cache stops
/// shrinking: `ModelConfig.get_num_kv_heads` = `max(1, kv // tp)`). `None` when unknown.
pub fn replicates_kv(cfg: &ArchConfig, tp: u64) -> Option<bool> {
    if cfg.is_mla() {
        return Some(false);
    }
    cfg.num_key_value_heads.map(|kv| tp > kv)
}

/// The KV-replication warning (not a failure): `ModelConfig.get_num_kv_heads`.
pub fn kv_replication(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    if replicates_kv(cfg, t.tp) != Some(true) {
        return None;
    }
    let kv = cfg.num_key_value_heads?;
    if kv == 0 || t.tp % kv != 0 {
        return None; // the KV-head rule itself fails
    }
    Some(finding(
        Rule::KvReplication,
        "vllm/config/model.py: ModelConfig.get_num_kv_heads (max(1, kv // tp))",
        Ok(Outcome::Warn(format!(
            "legal but wastes KV memory: tp {} > {kv} KV heads, every rank keeps 1 KV head per layer and {} ranks hold identical copies; the per-GPU KV cache stops shrinking beyond tp {kv}",
            t.tp,
            t.tp / kv
        ))),
    ))
}

// ------------------------------------------------------------------ MLP / MoE

/// Dense MLP width must divide TP: `MergedColumnParallelLinear` /
/// `RowParallelLinear.__init__` call `divide()` (linear.py ~500, 1653).
pub fn dense_intermediate(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    if !cfg.has_dense_ffn {
        return None;
    }
    Some(finding(
        Rule::DenseIntermediate,
        "vllm/model_executor/layers/linear.py: MergedColumnParallelLinear / RowParallelLinear (divide)",
        (|| {
            let i = need(cfg.dense_intermediate, cfg.dense_field)?;
            Ok(divides("dense intermediate size", i, t.tp))
        })(),
    ))
}

/// Routed experts are TP-sharded along the intermediate dim without EP:
/// `FusedMoEConfig.__post_init__` (fused_moe/config.py:1348, a bare assert;
/// 0.11: `FusedMoE.__init__`). With `--enable-expert-parallel` experts stay
/// whole (`FusedMoEParallelConfig.make`: tp_size = 1). MXFP4 rounds the per-rank
/// width up (`mxfp4_round_up_hidden_size_and_intermediate_size`), no error.
pub fn moe_intermediate(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let moe = cfg.moe.as_ref()?;
    Some(finding(
        Rule::MoeIntermediate,
        "vllm/model_executor/layers/fused_moe/config.py: FusedMoEConfig.__post_init__",
        (|| {
            if t.expert_parallel {
                return Ok(Outcome::Ok(
                    "expert parallel: experts stay whole (tp_size = 1 inside FusedMoE)".into(),
                ));
            }
            let i = need(moe.intermediate, moe.intermediate_field)?;
            if t.quant == QuantScheme::Mxfp4 {
                return Ok(Outcome::Ok(format!(
                    "MXFP4 experts: {i} / tp {} is rounded up per backend, no TP error",
                    t.tp
                )));
            }
            Ok(if i % t.tp == 0 {
                Outcome::Ok(format!(
                    "expert intermediate {i} / tp {} = {}",
                    t.tp,
                    i / t.tp
                ))
            } else {
                Outcome::Invalid {
                    message: format!("expert intermediate {i} is not divisible by tp {}", t.tp),
                    error: format!(
                        "AssertionError (assert self.intermediate_size % tp_size == 0; intermediate_size={i}, tp_size={})",
                        t.tp
                    ),
                }
            })
        })(),
    ))
}

/// Shared experts are ordinary TP layers even under EP (sglang#10852), so
/// their width must divide TP (`divide()` in the merged/row linears).
pub fn shared_expert(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let moe = cfg.moe.as_ref().filter(|m| m.has_shared)?;
    Some(finding(
        Rule::SharedExpert,
        "vllm/model_executor/layers/linear.py: MergedColumnParallelLinear / RowParallelLinear (divide), shared expert",
        (|| {
            let s = need(moe.shared_intermediate, moe.shared_field)?;
            Ok(divides("shared-expert intermediate", s, t.tp))
        })(),
    ))
}

/// The vocab is padded to 64 (`pad_vocab_size`, `DEFAULT_VOCAB_PADDING_SIZE`)
/// then split: `VocabParallelEmbedding` (vocab_parallel_embedding.py:304).
/// A TP dividing 64 always passes, whatever the vocab.
pub fn vocab(cfg: &ArchConfig, t: &Target) -> Finding {
    finding(
        Rule::Vocab,
        "vllm/model_executor/layers/vocab_parallel_embedding.py: VocabParallelEmbedding (pad to 64, divide)",
        (|| {
            if 64 % t.tp == 0 && cfg.vocab_size.is_none() {
                return Ok(Outcome::Ok(format!(
                    "vocab padded to a multiple of 64 always divides by tp {}",
                    t.tp
                )));
            }
            let v = need(cfg.vocab_size, "vocab_size")?;
            let padded = round_up(v, 64);
            Ok(divides("padded vocab", padded, t.tp))
        })(),
    )
}

// ------------------------------------------------------------------ Mamba2 / GDN

/// Mamba2 asserts in `MambaMixer2.__init__` and `Mixer2RMSNormGated`
/// (model_executor/layers/mamba/mamba_mixer2.py, class line 266, 117).
pub fn mamba2(cfg: &ArchConfig, t: &Target) -> Vec<Finding> {
    let Some(m) = cfg.mamba.as_ref() else {
        return Vec::new();
    };
    const SRC: &str = "vllm/model_executor/layers/mamba/mamba_mixer2.py: MambaMixer2.__init__";
    let tp = t.tp;
    vec![
        finding(
            Rule::Mamba2Heads,
            SRC,
            (|| {
                let h = need(m.num_heads, "mamba_num_heads")?;
                Ok(if h % tp == 0 {
                    Outcome::Ok(format!("{h} Mamba2 heads / tp {tp} = {}", h / tp))
                } else {
                    Outcome::Invalid {
                        message: format!("{h} Mamba2 heads are not divisible by tp {tp}"),
                        error: "AssertionError: Tensor parallel world size must divide num heads."
                            .into(),
                    }
                })
            })(),
        ),
        finding(
            Rule::Mamba2Groups,
            SRC,
            (|| {
                let g = need(m.n_groups, "n_groups")?;
                Ok(if g % tp == 0 || g == 1 {
                    Outcome::Ok(format!("{g} Mamba2 groups with tp {tp}"))
                } else {
                    Outcome::Invalid {
                        message: format!("{g} Mamba2 groups are neither 1 nor divisible by tp {tp}"),
                        error: "AssertionError: If tensor parallel world size does not divide num_groups, then num_groups must equal 1.".into(),
                    }
                })
            })(),
        ),
        finding(
            Rule::Mamba2Inner,
            "vllm/model_executor/layers/mamba/mamba_mixer2.py: Mixer2RMSNormGated.__init__",
            (|| {
                need(m.num_heads, "mamba_num_heads")?;
                let inner = need(m.inner(), "mamba_head_dim")?;
                Ok(if inner % tp == 0 {
                    Outcome::Ok(format!(
                        "Mamba2 inner size {inner} / tp {tp} = {}",
                        inner / tp
                    ))
                } else {
                    Outcome::Invalid {
                        message: format!("Mamba2 inner size {inner} is not divisible by tp {tp}"),
                        error:
                            "AssertionError: Tensor parallel world size must divide hidden size."
                                .into(),
                    }
                })
            })(),
        ),
    ]
}

/// Gated DeltaNet: `A_log = torch.empty(divide(num_v_heads, tp))` and the
/// forward reshapes by `num_k_heads // tp` (`QwenGatedDeltaNetAttention.__init__`,
/// mamba/gdn/qwen_gdn_linear_attn.py).
pub fn gdn(cfg: &ArchConfig, t: &Target) -> Vec<Finding> {
    let Some(g) = cfg.gdn.as_ref() else {
        return Vec::new();
    };
    const SRC: &str =
        "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py: QwenGatedDeltaNetAttention.__init__";
    vec![
        finding(
            Rule::GdnValueHeads,
            SRC,
            (|| {
                let v = need(g.num_v_heads, "linear_num_value_heads")?;
                Ok(divides("Gated-DeltaNet value heads", v, t.tp))
            })(),
        ),
        finding(
            Rule::GdnKeyHeads,
            SRC,
            (|| {
                let k = need(g.num_k_heads, "linear_num_key_heads")?;
                Ok(if k % t.tp == 0 {
                    Outcome::Ok(format!(
                        "Gated-DeltaNet key heads {k} / tp {} = {}",
                        t.tp,
                        k / t.tp
                    ))
                } else {
                    Outcome::Invalid {
                        message: format!("Gated-DeltaNet key heads {k} are not divisible by tp {}", t.tp),
                        error: "no explicit check: the forward reshapes q/k by num_k_heads // tp_size and fails".into(),
                    }
                })
            })(),
        ),
    ]
}

// ------------------------------------------------------------------ quantised linears

/// One linear layer as one rank sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RankLinear {
    name: &'static str,
    /// Per-rank output shards (one for plain layers, several for merged ones).
    shards: Vec<u64>,
    /// Per-rank input size.
    k: u64,
    row: bool,
    merged: bool,
}

impl RankLinear {
    fn n(&self) -> u64 {
        self.shards.iter().sum()
    }
}

/// The TP-split linears of one decoder layer of each kind, per rank, in the
/// order vLLM builds them (attention, then MLP). A width that does not divide
/// `tp` is left out: its divide() rule has already failed.
fn rank_linears(cfg: &ArchConfig, tp: u64) -> Result<Vec<RankLinear>, Missing> {
    let hidden = need(cfg.hidden_size, "hidden_size")?;
    let heads = need(cfg.num_attention_heads, "num_attention_heads")?;
    let mut out = Vec::new();
    let has_attention = cfg
        .count_mixers(|m| matches!(m, Mixer::Full | Mixer::Swa { .. } | Mixer::Mla))
        .is_none_or(|n| n > 0);
    if heads % tp == 0 && has_attention {
        if let Some(mla) = &cfg.mla {
            let rope = need(mla.qk_rope_head_dim, "qk_rope_head_dim")?;
            let nope = need(mla.qk_nope_head_dim, "qk_nope_head_dim")?;
            let v = need(mla.v_head_dim, "v_head_dim")?;
            let kv_lora = need(mla.kv_lora_rank, "kv_lora_rank")?;
            let h = heads / tp;
            out.push(RankLinear {
                name: if mla.q_lora_rank.is_some() {
                    "q_b_proj"
                } else {
                    "q_proj"
                },
                shards: vec![h * (nope + rope)],
                k: mla.q_lora_rank.unwrap_or(hidden),
                row: false,
                merged: false,
            });
            out.push(RankLinear {
                name: "kv_b_proj",
                shards: vec![h * (nope + v)],
                k: kv_lora,
                row: false,
                merged: false,
            });
            out.push(RankLinear {
                name: "o_proj",
                shards: vec![hidden],
                k: h * v,
                row: true,
                merged: false,
            });
        } else {
            let kv = need(cfg.num_key_value_heads, "num_key_value_heads")?;
            let hd = need(cfg.head_dim, "head_dim")?;
            if kv > 0 && (if tp < kv { kv % tp == 0 } else { tp % kv == 0 }) {
                let kvr = (kv / tp).max(1);
                out.push(RankLinear {
                    name: "qkv_proj",
                    shards: vec![heads / tp * hd, kvr * hd, kvr * hd],
                    k: hidden,
                    row: false,
                    merged: true,
                });
            }
            out.push(RankLinear {
                name: "o_proj",
                shards: vec![hidden],
                k: heads * hd / tp,
                row: true,
                merged: false,
            });
        }
    }
    let mut mlp = |name_gu: &'static str, name_d: &'static str, i: u64| {
        if i % tp == 0 {
            out.push(RankLinear {
                name: name_gu,
                shards: vec![i / tp, i / tp],
                k: hidden,
                row: false,
                merged: true,
            });
            out.push(RankLinear {
                name: name_d,
                shards: vec![hidden],
                k: i / tp,
                row: true,
                merged: false,
            });
        }
    };
    if cfg.has_dense_ffn {
        mlp(
            "mlp.gate_up_proj",
            "mlp.down_proj",
            need(cfg.dense_intermediate, cfg.dense_field)?,
        );
    }
    if let Some(m) = cfg.moe.as_ref().filter(|m| m.has_shared) {
        mlp(
            "shared_expert.gate_up_proj",
            "shared_expert.down_proj",
            need(m.shared_intermediate, m.shared_field)?,
        );
    }
    if let Some(g) = &cfg.gdn {
        let k = need(g.num_v_heads, "linear_num_value_heads")?
            * need(g.v_head_dim, "linear_value_head_dim")?;
        if k % tp == 0 {
            out.push(RankLinear {
                name: "linear_attn.out_proj",
                shards: vec![hidden],
                k: k / tp,
                row: true,
                merged: false,
            });
        }
    }
    if let Some(m) = &cfg.mamba {
        need(m.num_heads, "mamba_num_heads")?;
        let inner = need(m.inner(), "mamba_head_dim")?;
        if inner % tp == 0 {
            out.push(RankLinear {
                name: "mixer.out_proj",
                shards: vec![hidden],
                k: inner / tp,
                row: true,
                merged: false,
            });
        }
    }
    Ok(out)
}

/// AWQ/GPTQ/compressed-tensors group alignment on every row-parallel layer:
/// `(K / tp) % group_size == 0`, and the packed output `N / tp % (32 / bits)`.
/// `BaseAWQLinearMethod.create_weights` (auto_awq.py:803; 0.11 awq.py, gptq.py:209)
/// and `verify_group_size_divides_partition` (distributed/utils.py:137) for compressed-tensors.
pub fn quant_group(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let (bits, group) = t.quant.int_group()?;
    let ct = matches!(t.quant, QuantScheme::CtWna16 { .. });
    let source = if ct {
        "vllm/distributed/utils.py: verify_group_size_divides_partition (compressed_tensors_wNa16.py:171)"
    } else {
        "vllm/model_executor/layers/quantization/auto_awq.py: BaseAWQLinearMethod.create_weights (0.11 awq.py / gptq.py:209)"
    };
    Some(finding(
        Rule::QuantGroup,
        source,
        (|| {
            let g = group.ok_or_else(|| Missing("group_size (pass --group-size)".into()))?;
            let layers = rank_linears(cfg, t.tp)?;
            let pack = if bits > 0 && 32 % bits == 0 {
                32 / bits
            } else {
                1
            };
            if !ct {
                for l in layers.iter().filter(|l| !l.row) {
                    if l.n() % pack != 0 {
                        return Ok(Outcome::Invalid {
                            message: format!(
                                "{}: per-rank output {} is not a multiple of the pack factor {pack}",
                                l.name,
                                l.n()
                            ),
                            error: "ValueError: The output size is not aligned with the quantized weight shape. This can be caused by too large tensor parallel size.".into(),
                        });
                    }
                }
            }
            if g <= 0 {
                return Ok(Outcome::Ok(
                    "channel-wise scales (group_size -1): no group alignment".into(),
                ));
            }
            let g = g as u64;
            for l in layers.iter().filter(|l| l.row) {
                if l.k % g != 0 {
                    let error = if ct {
                        format!(
                            "ValueError: Weight input_size_per_partition={} is not divisible by group_size={g}. This happens when tensor_parallel_size splits the layer input into shards that are not a whole number of quant groups. Consider reducing tensor_parallel_size ...",
                            l.k
                        )
                    } else {
                        "ValueError: The input size is not aligned with the quantized weight shape. This can be caused by too large tensor parallel size.".into()
                    };
                    return Ok(Outcome::Invalid {
                        message: format!(
                            "{}: input per rank {} is not a whole number of {g}-wide quant groups ({} % {g} = {})",
                            l.name,
                            l.k,
                            l.k,
                            l.k % g
                        ),
                        error,
                    });
                }
            }
            let ks: Vec<String> = layers
                .iter()
                .filter(|l| l.row)
                .map(|l| format!("{} {}", l.name, l.k))
                .collect();
            Ok(Outcome::Ok(format!(
                "row-parallel inputs per rank are whole groups of {g}: {}",
                ks.join(", ")
            )))
        })(),
    ))
}

/// Marlin thread tiles for int-weight layers: `verify_marlin_supports_shape`
/// (0.11 marlin_utils.py:115: N % 64, K % 128, K % g). Before 0.24 a miss makes
/// AWQ fall back to the unoptimised kernel (then [`quant_group`] decides) and
/// GPTQ/compressed-tensors try other kernels; from 0.24 `marlin_padded_nk` pads.
pub fn marlin_tiles(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    t.quant.int_group()?;
    Some(finding(
        Rule::MarlinTiles,
        "vllm/model_executor/layers/quantization/utils/marlin_utils.py: verify_marlin_supports_shape / marlin_padded_nk",
        (|| {
            let layers = rank_linears(cfg, t.tp)?;
            let bad = layers.iter().find(|l| l.n() % 64 != 0 || l.k % 128 != 0);
            let Some(l) = bad else {
                return Ok(Outcome::Ok("every per-rank N is a multiple of 64 and K of 128".into()));
            };
            let what = format!("{}: per-rank N = {}, K = {} (need N % 64 == 0, K % 128 == 0)", l.name, l.n(), l.k);
            if t.version.marlin_pads_dense() {
                return Ok(Outcome::Ok(format!(
                    "{what}; vLLM {} zero-pads to the Marlin tile (marlin_padded_nk): costs speed, does not fail",
                    t.version
                )));
            }
            Ok(Outcome::Warn(match t.quant {
                QuantScheme::Awq { .. } => format!(
                    "{what}; vLLM {} logs \"Layer '…{}' is not supported by AWQMarlin. Falling back to unoptimized AWQ kernels.\"",
                    t.version, l.name
                ),
                _ => format!(
                    "{what}; vLLM {} skips Marlin for this layer (choose_mp_linear_kernel tries the other kernels; if none fits: \"Failed to find a kernel that can implement the WNA16 linear layer.\")",
                    t.version
                ),
            }))
        })(),
    ))
}

/// MoE Marlin for int-weight experts (0.11 `check_moe_marlin_supports_layer`:
/// `hidden % 128 == 0 and I_rank % max(64, g) == 0`), else the MoeWNA16
/// fallback, which halves the group size until it divides (`assert group_size
/// >= 32`, 0.11 moe_wna16.py:196). From 0.25 `marlin_moe_padded_intermediate` pads.
pub fn moe_marlin(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let (_, group) = t.quant.int_group()?;
    let moe = cfg.moe.as_ref()?;
    Some(finding(
        Rule::MoeMarlin,
        "vllm/model_executor/layers/quantization/utils/marlin_utils.py: check_moe_marlin_supports_layer (0.11) / marlin_moe_padded_intermediate (0.25)",
        (|| {
            let i = need(moe.intermediate, moe.intermediate_field)?;
            let hidden = need(cfg.hidden_size, "hidden_size")?;
            let g = group.ok_or_else(|| Missing("group_size (pass --group-size)".into()))?;
            let split = if t.expert_parallel { 1 } else { t.tp };
            if i % split != 0 {
                return Ok(Outcome::Ok("expert width does not divide tp (see moe_intermediate)".into()));
            }
            let ir = i / split;
            let gmin = if g > 0 { (g as u64).max(64) } else { 64 };
            if hidden % 128 == 0 && ir % gmin == 0 {
                return Ok(Outcome::Ok(format!("expert intermediate per rank {ir} is a multiple of {gmin}")));
            }
            if t.version.marlin_pads_moe() {
                return Ok(Outcome::Ok(format!(
                    "expert intermediate per rank {ir} is not a multiple of {gmin}; vLLM {} pads it (marlin_moe_padded_intermediate)",
                    t.version
                )));
            }
            // MoeWNA16Method.create_weights: `while I_rank % g or hidden % g:
            // g //= 2; assert g >= 32`.
            if g > 0 {
                let mut gg = g as u64;
                while gg > 0 && (ir % gg != 0 || hidden % gg != 0) {
                    gg /= 2;
                }
                if gg < 32 {
                    return Ok(Outcome::Invalid {
                        message: format!(
                            "expert intermediate per rank {ir}: Marlin needs a multiple of {gmin}, and MoeWNA16 cannot find a group size ≥ 32 dividing it"
                        ),
                        error: "AssertionError (moe_wna16.py MoeWNA16Method.create_weights: assert group_size >= 32)".into(),
                    });
                }
            }
            Ok(Outcome::Warn(format!(
                "expert intermediate per rank {ir} is not a multiple of {gmin}: vLLM {} logs \"Layer '…' is not supported by AWQMoeMarlin/GPTQMoeMarlin. Falling back to Moe WNA16 kernels.\"; that path has failed at run time with \"RuntimeError: size_k must divisible by BLOCK_SIZE_K\" (vllm#17604, Qwen3-30B-A3B-AWQ at TP 4)",
                t.version
            )))
        })(),
    ))
}

/// FP8 weight-only Marlin on GPUs without native FP8 (SM < 8.9) before 0.24:
/// `prepare_fp8_layer_for_marlin` (0.11 marlin_utils_fp8.py) calls
/// `gptq_marlin_repack` with the per-rank (merged) N and K, whose
/// `TORCH_CHECK`s (csrc/quantization/gptq_marlin/awq_marlin_repack.cu) need
/// N % 64 (`tile_n_size`) and K % 16 (`tile_k_size`). Experts are not modelled.
pub fn fp8_marlin(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    if !t.quant.is_fp8() {
        return None;
    }
    Some(finding(
        Rule::Fp8Marlin,
        "vllm/model_executor/layers/quantization/utils/marlin_utils_fp8.py: prepare_fp8_layer_for_marlin (0.11) → gptq_marlin_repack",
        (|| {
            let native = t
                .fp8_native
                .ok_or_else(|| Missing("GPU compute capability (pass --fp8-native or --compute-capability)".into()))?;
            if native {
                return Ok(Outcome::Ok("native FP8 GEMMs (SM ≥ 8.9): no Marlin repack".into()));
            }
            let layers = rank_linears(cfg, t.tp)?;
            for l in &layers {
                let (n, k) = (l.n(), l.k);
                let err = if n % 64 != 0 {
                    Some((format!("size_n = {n} is not divisible by tile_n_size = 64"), "N", n))
                } else if k % 16 != 0 {
                    Some((format!("size_k = {k} is not divisible by tile_k_size = 16"), "K", k))
                } else {
                    None
                };
                if let Some((text, dim, v)) = err {
                    if t.version.marlin_pads_dense() {
                        return Ok(Outcome::Ok(format!(
                            "{}: per-rank {dim} = {v} is off the Marlin tile; vLLM {} pads it (marlin_padded_nk)",
                            l.name, t.version
                        )));
                    }
                    return Ok(Outcome::Invalid {
                        message: format!(
                            "no native FP8: weights go through FP8 Marlin; {} per-rank {dim} = {v} is off the tile",
                            l.name
                        ),
                        error: format!("RuntimeError: {text}"),
                    });
                }
            }
            Ok(Outcome::Ok("no native FP8: every per-rank N % 64 == 0 and K % 16 == 0 for FP8 Marlin".into()))
        })(),
    ))
}

/// FP8 block quantisation: `validate_fp8_block_shape` (quantization/utils/
/// fp8_utils.py:1296; 0.11:750): row-parallel `K/tp % block_k`, each column
/// shard `N/tp % block_n` (0.33 skips misaligned merged layers:
/// `LinearBase._maybe_allow_fp8_block_shape_mismatch`, linear.py:562).
pub fn fp8_block(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let QuantScheme::Fp8Block { block_n, block_k } = t.quant else {
        return None;
    };
    Some(finding(
        Rule::Fp8Block,
        "vllm/model_executor/layers/quantization/utils/fp8_utils.py: validate_fp8_block_shape",
        (|| {
            let layers = rank_linears(cfg, t.tp)?;
            let mut skipped = Vec::new();
            for l in &layers {
                if l.row {
                    if l.k % block_k != 0 {
                        return Ok(Outcome::Invalid {
                            message: format!("{}: input per rank {} is not a multiple of block_k {block_k}", l.name, l.k),
                            error: format!(
                                "ValueError: Weight input_size_per_partition = {} is not divisible by weight quantization block_k = {block_k}.",
                                l.k
                            ),
                        });
                    }
                } else if let Some(&n) = l.shards.iter().find(|&&n| n % block_n != 0) {
                    if l.merged && t.version.skips_merged_fp8_block() {
                        skipped.push(format!("{} shard {n}", l.name));
                        continue;
                    }
                    return Ok(Outcome::Invalid {
                        message: format!("{}: output shard per rank {n} is not a multiple of block_n {block_n}", l.name),
                        error: format!(
                            "ValueError: Weight output_partition_size = {n} is not divisible by weight quantization block_n = {block_n}."
                        ),
                    });
                }
            }
            if skipped.is_empty() {
                Ok(Outcome::Ok(format!("every dense/attention shard per rank is a multiple of the {block_n}×{block_k} block")))
            } else {
                Ok(Outcome::Warn(format!(
                    "vLLM {} allows misaligned merged layers ({}): block scales straddle ranks",
                    t.version,
                    skipped.join(", ")
                )))
            }
        })(),
    ))
}

/// FP8 block quantisation of routed experts: `validate_fp8_block_shape_moe`
/// (fp8_utils.py:1347; 0.11 inline in fp8.py:508): `I/tp` must be a multiple of
/// block_n (gate/up) and block_k (down). Under EP experts stay whole.
pub fn fp8_block_moe(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    let QuantScheme::Fp8Block { block_n, block_k } = t.quant else {
        return None;
    };
    let moe = cfg.moe.as_ref()?;
    Some(finding(
        Rule::Fp8BlockMoe,
        "vllm/model_executor/layers/quantization/utils/fp8_utils.py: validate_fp8_block_shape_moe",
        (|| {
            let i = need(moe.intermediate, moe.intermediate_field)?;
            let split = if t.expert_parallel { 1 } else { t.tp };
            if i % split != 0 {
                return Ok(Outcome::Ok(
                    "expert width does not divide tp (see moe_intermediate)".into(),
                ));
            }
            let ir = i / split;
            if ir % block_n != 0 {
                return Ok(Outcome::Invalid {
                    message: format!("expert intermediate per rank {ir} is not a multiple of block_n {block_n}"),
                    error: format!(
                        "ValueError: The output_size of gate's and up's weight = {ir} is not divisible by weight quantization block_n = {block_n}."
                    ),
                });
            }
            if ir % block_k != 0 {
                return Ok(Outcome::Invalid {
                    message: format!("expert intermediate per rank {ir} is not a multiple of block_k {block_k}"),
                    error: format!(
                        "ValueError: The input_size of down's weight = {ir} is not divisible by weight quantization block_k = {block_k}."
                    ),
                });
            }
            Ok(Outcome::Ok(format!(
                "expert intermediate per rank {ir} is a multiple of {block_n}"
            )))
        })(),
    ))
}

/// `--enable-expert-parallel`: `FusedMoEParallelConfig.make` (fused_moe/config.py:1117)
/// sets ep_size = tp; `determine_expert_map` allows an uneven split.
pub fn expert_parallel(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    if !t.expert_parallel {
        return None;
    }
    Some(finding(
        Rule::ExpertParallel,
        "vllm/model_executor/layers/fused_moe/config.py: FusedMoEParallelConfig.make / determine_expert_map",
        match &cfg.moe {
            None => Ok(Outcome::Warn("the model has no routed experts: --enable-expert-parallel changes nothing".into())),
            Some(m) => (|| {
                let e = need(m.num_experts, "num_experts")?;
                let ep = t.tp;
                Ok(if e % ep == 0 {
                    Outcome::Ok(format!("{e} experts over ep {ep}: {} per rank", e / ep))
                } else {
                    Outcome::Warn(format!(
                        "{e} experts over ep {ep}: uneven ({} or {} per rank); EPLB would refuse (\"EPLB currently only supports even distribution of experts across ranks.\")",
                        e / ep,
                        e.div_ceil(ep)
                    ))
                })
            })(),
        },
    ))
}

/// Decoder layers per pipeline stage, as `get_pp_indices` splits them
/// (distributed/utils.py:198): `L // pp` each, the remainder to the stages
/// before the last (`partitions[-i] += 1` for i in 2..).
pub fn pp_partition(layers: u64, pp: u64) -> Vec<u64> {
    let pp = pp.max(1) as usize;
    let per = layers / pp as u64;
    let mut parts = vec![per; pp];
    let rem = (layers % pp as u64) as usize;
    for i in 2..rem + 2 {
        // rem < pp, so i <= pp and the index stays in range.
        if let Some(p) = parts.get_mut(pp - i) {
            *p += 1;
        }
    }
    parts
}

/// Pipeline parallelism has no divisibility rule (`get_pp_indices`); a stage
/// without layers is pointless and reported as a warning.
pub fn pipeline(cfg: &ArchConfig, t: &Target) -> Option<Finding> {
    if t.pp <= 1 {
        return None;
    }
    Some(finding(
        Rule::PipelineStages,
        "vllm/distributed/utils.py: get_pp_indices",
        (|| {
            let l = need(cfg.num_hidden_layers, "num_hidden_layers")?;
            let parts = pp_partition(l, t.pp);
            let split: Vec<String> = parts.iter().map(u64::to_string).collect();
            Ok(if parts.contains(&0) {
                Outcome::Warn(format!(
                    "{l} layers over {} stages leaves a stage empty ({})",
                    t.pp,
                    split.join("/")
                ))
            } else {
                Outcome::Ok(format!(
                    "{l} layers over {} stages: {}",
                    t.pp,
                    split.join("/")
                ))
            })
        })(),
    ))
}

/// Every rule for one candidate, in the order vLLM would hit them.
pub fn check(cfg: &ArchConfig, t: &Target) -> Vec<Finding> {
    let mut out = vec![attention_heads(cfg, t)];
    out.extend(vision_heads(cfg, t));
    out.push(kv_heads(cfg, t));
    out.extend(kv_replication(cfg, t));
    out.push(vocab(cfg, t));
    out.extend(dense_intermediate(cfg, t));
    out.extend(moe_intermediate(cfg, t));
    out.extend(shared_expert(cfg, t));
    out.extend(expert_parallel(cfg, t));
    out.extend(mamba2(cfg, t));
    out.extend(gdn(cfg, t));
    out.extend(quant_group(cfg, t));
    out.extend(marlin_tiles(cfg, t));
    out.extend(moe_marlin(cfg, t));
    out.extend(fp8_marlin(cfg, t));
    out.extend(fp8_block(cfg, t));
    out.extend(fp8_block_moe(cfg, t));
    out.extend(pipeline(cfg, t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pp_partition_matches_get_pp_indices() {
        // 48 / 5 = 9 rem 3: partitions[-2], [-3], [-4] get one more.
        assert_eq!(pp_partition(48, 5), vec![9, 10, 10, 10, 9]);
        assert_eq!(pp_partition(64, 4), vec![16, 16, 16, 16]);
        // rem = pp - 1: every stage but the last gets one more.
        assert_eq!(pp_partition(47, 4), vec![12, 12, 12, 11]);
        assert_eq!(pp_partition(2, 4), vec![0, 1, 1, 0]);
        assert_eq!(pp_partition(47, 4).iter().sum::<u64>(), 47);
    }
}
