//! Every TP in 1..=N (PP 1) and every TP × PP = N with PP > 1, each checked
//! against all rules, with memory when the GPU size is known; then the
//! recommendation: the largest valid TP without KV replication (MLA: limited
//! by heads only), and the `vllm serve` line.

use serde::Serialize;

use super::config::{ArchConfig, CheckpointQuant};
use super::memory::{self, KvDtype, MemoryOptions, MemoryReport};
use super::rules::{self, Finding, Target};
use super::serve::{self, ServeArgs};
use super::{GpuSpec, QuantScheme, VllmVersion};

/// `--quant`: the weight format the user says will be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuantChoice {
    Bf16,
    Fp8,
    Fp8Block,
    Awq,
    Gptq,
    CompressedTensors,
    Mxfp4,
}

/// Combine `--quant`/`--group-size` with the checkpoint's `quantization_config`.
/// Returns the scheme and notes on what was taken from where.
pub fn resolve_quant(
    flag: Option<QuantChoice>,
    group_flag: Option<i64>,
    cfg: &ArchConfig,
) -> (QuantScheme, Vec<String>) {
    let mut notes = Vec::new();
    let ckpt = cfg.quant.as_ref();
    let ckpt_group = match ckpt {
        Some(
            CheckpointQuant::Awq { group_size, .. } | CheckpointQuant::Gptq { group_size, .. },
        ) => *group_size,
        Some(CheckpointQuant::CompressedTensors {
            group_size,
            strategy,
            ..
        }) => group_size.or(match strategy.as_deref() {
            Some("channel") => Some(-1),
            _ => None,
        }),
        _ => None,
    };
    let group = group_flag.or(ckpt_group);
    let ckpt_bits = match ckpt {
        Some(CheckpointQuant::Awq { bits, .. } | CheckpointQuant::Gptq { bits, .. }) => *bits,
        Some(CheckpointQuant::CompressedTensors { bits, .. }) => *bits,
        _ => None,
    };
    let bits = ckpt_bits.unwrap_or(4);
    let ckpt_block = match ckpt {
        Some(CheckpointQuant::Fp8 { block })
        | Some(CheckpointQuant::CompressedTensors { block, .. }) => *block,
        _ => None,
    };
    let ct_scheme = |c: &CheckpointQuant| -> Option<QuantScheme> {
        let CheckpointQuant::CompressedTensors {
            weight_type,
            bits,
            strategy,
            block,
            ..
        } = c
        else {
            return None;
        };
        Some(match (weight_type.as_deref(), bits) {
            (Some("float"), Some(8)) => match (strategy.as_deref(), block) {
                (Some("block"), Some((n, k))) => QuantScheme::Fp8Block {
                    block_n: *n,
                    block_k: *k,
                },
                _ => QuantScheme::Fp8,
            },
            _ => QuantScheme::CtWna16 {
                bits: bits.unwrap_or(4),
                group,
            },
        })
    };
    let scheme = match flag {
        None => match ckpt {
            None => QuantScheme::Bf16,
            Some(CheckpointQuant::Fp8 {
                block: Some((n, k)),
            }) => QuantScheme::Fp8Block {
                block_n: *n,
                block_k: *k,
            },
            Some(CheckpointQuant::Fp8 { block: None }) => QuantScheme::Fp8,
            Some(CheckpointQuant::Awq { .. }) => QuantScheme::Awq { bits, group },
            Some(CheckpointQuant::Gptq { .. }) => QuantScheme::Gptq { bits, group },
            Some(c @ CheckpointQuant::CompressedTensors { .. }) => {
                ct_scheme(c).unwrap_or(QuantScheme::Bf16)
            }
            Some(CheckpointQuant::Mxfp4) => QuantScheme::Mxfp4,
            Some(CheckpointQuant::Other { name }) => {
                notes.push(format!(
                    "quantization_config quant_method {name:?} is not modelled: rules for BF16 applied"
                ));
                QuantScheme::Bf16
            }
        },
        Some(QuantChoice::Bf16) => QuantScheme::Bf16,
        Some(QuantChoice::Fp8) => QuantScheme::Fp8,
        Some(QuantChoice::Fp8Block) => {
            let (n, k) = ckpt_block.unwrap_or((128, 128));
            QuantScheme::Fp8Block {
                block_n: n,
                block_k: k,
            }
        }
        Some(QuantChoice::Awq) => QuantScheme::Awq { bits, group },
        Some(QuantChoice::Gptq) => QuantScheme::Gptq { bits, group },
        Some(QuantChoice::CompressedTensors) => ckpt
            .and_then(ct_scheme)
            .unwrap_or(QuantScheme::CtWna16 { bits, group }),
        Some(QuantChoice::Mxfp4) => QuantScheme::Mxfp4,
    };
    if flag.is_some() && ckpt.is_some() {
        notes.push(format!(
            "--quant given: checked as {} (the checkpoint's quantization_config says {:?})",
            scheme.label(),
            ckpt
        ));
    }
    (scheme, notes)
}

/// Everything a plan needs besides the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanOptions {
    pub gpus: GpuSpec,
    pub quant: QuantScheme,
    pub version: VllmVersion,
    /// `--fp8-native`, else derived from the compute capability.
    pub fp8_native: Option<bool>,
    pub expert_parallel: bool,
    pub gpu_memory_utilization: f64,
    pub kv_cache_dtype: KvDtype,
    pub max_model_len: Option<u64>,
    pub max_num_batched_tokens: Option<u64>,
    pub overhead_bytes: Option<u64>,
}

/// valid / invalid / unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Valid,
    Invalid,
    Unknown,
}

/// One TP × PP layout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub tp: u64,
    pub pp: u64,
    pub status: Status,
    /// `true`/`false`, `null` when a needed field is missing.
    pub valid: Option<bool>,
    /// `null` when the KV-head count is missing.
    pub replicates_kv: Option<bool>,
    /// Every rule's finding (ok, warn, invalid, unknown).
    pub reasons: Vec<Finding>,
    pub memory: Option<MemoryReport>,
    /// Why memory could not be estimated ("X is missing", "no --gpu-mem-gib").
    pub memory_unknown: Option<String>,
}

impl Candidate {
    /// The findings that decide the status (invalid, unknown) and warnings.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.reasons
            .iter()
            .filter(|f| f.is_invalid() || f.is_unknown())
    }
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    pub quant: String,
    pub vllm_version: String,
    pub gpus: u32,
    pub fp8_native: Option<bool>,
    pub expert_parallel: bool,
    /// Largest valid TP (PP 1) that does not replicate KV heads.
    pub recommended_tp: Option<u64>,
    /// PP chosen with it (so the model fits, when memory is known).
    pub recommended_pp: Option<u64>,
    /// Largest valid TP (PP 1), replication allowed.
    pub max_valid_tp: Option<u64>,
    pub candidates: Vec<Candidate>,
    /// The `vllm serve` line for the recommendation.
    pub serve: Option<String>,
    /// Plain-language conclusions (KV waste, unknowns, memory).
    pub notes: Vec<String>,
    /// vLLM fallbacks applied to the config (head_dim, KV heads).
    pub derivations: Vec<String>,
}

fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn candidate(cfg: &ArchConfig, o: &PlanOptions, tp: u64, pp: u64) -> Candidate {
    let t = Target {
        tp,
        pp,
        quant: o.quant,
        version: o.version,
        fp8_native: o.fp8_native,
        expert_parallel: o.expert_parallel,
    };
    let reasons = rules::check(cfg, &t);
    let status = if reasons.iter().any(Finding::is_invalid) {
        Status::Invalid
    } else if reasons.iter().any(Finding::is_unknown) {
        Status::Unknown
    } else {
        Status::Valid
    };
    let (memory, memory_unknown) = match o.gpus.mem_bytes {
        None => (
            None,
            Some("no GPU memory given (--gpu-mem-gib)".to_string()),
        ),
        Some(_) if status == Status::Invalid => (None, None),
        Some(mem) => {
            let mo = MemoryOptions {
                gpu_mem_bytes: mem,
                gpu_memory_utilization: o.gpu_memory_utilization,
                kv_cache_dtype: o.kv_cache_dtype,
                max_model_len: o.max_model_len,
                max_num_batched_tokens: o.max_num_batched_tokens,
                max_num_seqs: 256,
                overhead_bytes: o.overhead_bytes,
            };
            match memory::estimate(cfg, &t, &mo) {
                Ok(r) if r.max_model_len.is_none() => (
                    Some(r),
                    Some(
                        "unknown because max_position_embeddings is missing: max concurrency needs --max-model-len"
                            .into(),
                    ),
                ),
                Ok(r) => (Some(r), None),
                Err(f) => (None, Some(format!("unknown because {f} is missing"))),
            }
        }
    };
    Candidate {
        tp,
        pp,
        status,
        valid: match status {
            Status::Valid => Some(true),
            Status::Invalid => Some(false),
            Status::Unknown => None,
        },
        replicates_kv: rules::replicates_kv(cfg, tp),
        reasons,
        memory,
        memory_unknown,
    }
}

/// Whether a candidate's memory allows serving: weights fit and at least one
/// request of max_model_len fits (when that is known).
fn fits(c: &Candidate) -> Option<bool> {
    let m = c.memory.as_ref()?;
    Some(m.fits && m.kv_pool_bytes > 0 && m.max_concurrency.is_none_or(|x| x >= 1.0))
}

/// Check every candidate and pick the recommendation.
pub fn plan(cfg: &ArchConfig, o: &PlanOptions) -> Plan {
    let n = u64::from(o.gpus.count.max(1));
    let mut candidates: Vec<Candidate> = (1..=n).map(|tp| candidate(cfg, o, tp, 1)).collect();
    for tp in (1..n).rev() {
        if n % tp == 0 && n / tp > 1 {
            candidates.push(candidate(cfg, o, tp, n / tp));
        }
    }
    let pp1 = |c: &&Candidate| c.pp == 1;
    let valid: Vec<u64> = candidates
        .iter()
        .filter(pp1)
        .filter(|c| c.status == Status::Valid)
        .map(|c| c.tp)
        .collect();
    let max_valid_tp = valid.iter().copied().max();
    let recommended_tp = candidates
        .iter()
        .filter(pp1)
        .filter(|c| c.status == Status::Valid && c.replicates_kv == Some(false))
        .map(|c| c.tp)
        .max();

    let mut notes = Vec::new();
    if let (Some(r), Some(kv)) = (recommended_tp, cfg.num_key_value_heads) {
        let wasteful: Vec<u64> = valid.iter().copied().filter(|&t| t > r).collect();
        if !wasteful.is_empty() && !cfg.is_mla() {
            notes.push(format!(
                "TP {} is legal but replicates KV heads (the model has {kv}): each GPU keeps a full KV head per layer, so KV memory per GPU stops shrinking beyond TP {kv} and {}",
                list(&wasteful),
                if wasteful.len() == 1 { "that copy is waste" } else { "those copies are waste" }
            ));
        }
    }
    if cfg.is_mla() {
        notes.push(
            "MLA: the KV latent is one per token, replicated on every TP rank; TP is limited by the heads only".into(),
        );
    }
    let invalid: Vec<u64> = candidates
        .iter()
        .filter(pp1)
        .filter(|c| c.status == Status::Invalid)
        .map(|c| c.tp)
        .collect();
    if !invalid.is_empty() {
        notes.push(format!("TP {} invalid (see reasons)", list(&invalid)));
    }
    let mut missing: Vec<String> = candidates
        .iter()
        .flat_map(|c| c.reasons.iter())
        .filter_map(|f| match &f.verdict {
            rules::Verdict::Unknown { missing_field } => Some(missing_field.clone()),
            _ => None,
        })
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        let unknown: Vec<u64> = candidates
            .iter()
            .filter(pp1)
            .filter(|c| c.status == Status::Unknown)
            .map(|c| c.tp)
            .collect();
        notes.push(format!(
            "unknown because {} {} missing{}",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if unknown.is_empty() {
                String::new()
            } else {
                format!(" (TP {} cannot be decided)", list(&unknown))
            }
        ));
    }

    // The layout to serve: the recommended TP at PP 1, else with the PP that
    // uses all GPUs; when neither fits in memory, the valid candidate that
    // fits with the most KV tokens.
    let find = |tp: u64, pp: u64| candidates.iter().find(|c| c.tp == tp && c.pp == pp);
    let mut chosen: Option<&Candidate> = None;
    if let Some(r) = recommended_tp {
        let first = find(r, 1);
        let all_gpus = if n % r == 0 && n / r > 1 {
            find(r, n / r)
        } else {
            None
        };
        chosen = match (first.and_then(fits), all_gpus) {
            (None, _) | (Some(true), _) => first,
            (Some(false), Some(c)) if c.status == Status::Valid && fits(c) == Some(true) => {
                notes.push(format!(
                    "TP {r} alone does not fit in memory: pipeline parallel {} uses all {n} GPUs",
                    c.pp
                ));
                Some(c)
            }
            (Some(false), _) => None,
        };
    }
    if chosen.is_none() && o.gpus.mem_bytes.is_some() {
        let best = candidates
            .iter()
            .filter(|c| c.status == Status::Valid && fits(c) == Some(true))
            .max_by_key(|c| c.memory.as_ref().map_or(0, |m| m.kv_tokens));
        match (best, recommended_tp) {
            (Some(b), Some(r)) => notes.push(format!(
                "TP {r} does not fit in memory; TP {} × PP {} does{}",
                b.tp,
                b.pp,
                if b.replicates_kv == Some(true) {
                    " (with KV replication)"
                } else {
                    ""
                }
            )),
            (None, _) if max_valid_tp.is_some() => {
                notes.push(
                    "no valid layout fits in GPU memory (weights + reserves, and one max-model-len request)".into(),
                );
                // What vLLM would say for the recommended (or largest valid) TP.
                let tp = recommended_tp.or(max_valid_tp);
                if let Some(m) = tp.and_then(|t| find(t, 1)).and_then(|c| c.memory.as_ref()) {
                    if let Some(e) = &m.vllm_error {
                        notes.push(format!("vLLM at TP {}: {e}", tp.unwrap_or(0)));
                    }
                }
            }
            _ => {}
        }
        chosen = best;
    }
    let recommended_pp = chosen.map(|c| c.pp);
    let serve = chosen.map(|c| {
        let max_model_len = c
            .memory
            .as_ref()
            .and_then(|m| m.max_model_len)
            .or(o.max_model_len)
            .or(cfg.max_position_embeddings);
        let max_num_seqs = c
            .memory
            .as_ref()
            .and_then(|m| m.max_concurrency)
            .map(|x| (x.floor() as u64).clamp(1, 256));
        serve::command(&ServeArgs {
            model: cfg.name.clone(),
            tp: c.tp,
            pp: c.pp,
            max_model_len,
            max_num_seqs,
            gpu_memory_utilization: o.gpu_memory_utilization,
            kv_cache_dtype: o.kv_cache_dtype,
            expert_parallel: o.expert_parallel,
        })
    });
    Plan {
        model: cfg.name.clone(),
        quant: o.quant.label(),
        vllm_version: o.version.to_string(),
        gpus: o.gpus.count,
        fp8_native: o.fp8_native,
        expert_parallel: o.expert_parallel,
        recommended_tp,
        recommended_pp,
        max_valid_tp,
        candidates,
        serve,
        notes,
        derivations: cfg.derivations.clone(),
    }
}
