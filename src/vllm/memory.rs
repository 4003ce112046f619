//! Per-GPU memory under vLLM: weights per rank, KV bytes per token per rank,
//! the KV pool left at `--gpu-memory-utilization`, and the concurrency it
//! allows at `--max-model-len`.
//!
//! Budget, after `gpu_worker.py: determine_available_memory` (notes §4.2):
//! `requested = ceil(total × utilization)`, `kv = requested − weights −
//! activation peak − (CUDA graphs + NCCL/cuBLAS)`. The activation peak and the
//! fixed reserve are *estimates* (documented below), not profiled; weights are
//! counted from the config's shapes.
//!
//! KV, after `v1/kv_cache_interface.py` (notes §4.1): full attention
//! `2 × max(1, kv/tp) × head_dim × bytes` per token per layer; MLA
//! `(kv_lora_rank + qk_rope_head_dim) × bytes`, **not** divided by TP; sliding
//! layers hold at most `window − 1 + max_num_batched_tokens` tokens per request
//! (`SlidingWindowSpec`); Mamba2 / Gated-DeltaNet keep a constant state per
//! request (`mamba2_state_shape`, `gated_delta_net_state_shape`).

use serde::Serialize;

use super::config::{ArchConfig, Ffn, Mixer};
use super::rules::{pp_partition, Target};
use super::{round_up, QuantScheme};
use crate::units::GIB;

/// `--kv-cache-dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvDtype {
    /// The model dtype (BF16: 2 bytes).
    Auto,
    /// fp8 / fp8_e4m3 / fp8_e5m2: 1 byte.
    Fp8,
}

impl KvDtype {
    pub fn bytes(self) -> u64 {
        match self {
            KvDtype::Auto => 2,
            KvDtype::Fp8 => 1,
        }
    }
    pub fn flag(self) -> &'static str {
        match self {
            KvDtype::Auto => "auto",
            KvDtype::Fp8 => "fp8",
        }
    }
}

/// What the memory estimate needs besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryOptions {
    /// Total memory of one GPU.
    pub gpu_mem_bytes: u64,
    /// `--gpu-memory-utilization` (0 < u ≤ 1).
    pub gpu_memory_utilization: f64,
    pub kv_cache_dtype: KvDtype,
    /// `--max-model-len` (else `max_position_embeddings`).
    pub max_model_len: Option<u64>,
    /// `--max-num-batched-tokens` (else vLLM's default for this GPU size).
    pub max_num_batched_tokens: Option<u64>,
    /// Rows of the dummy sampler run (`--max-num-seqs`, vLLM default 256).
    pub max_num_seqs: u64,
    /// Fixed reserve for CUDA graphs and NCCL/cuBLAS buffers (default 1 GiB).
    pub overhead_bytes: Option<u64>,
}

/// Default fixed reserve: CUDA-graph pool (estimated by default since vLLM 0.21,
/// `VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`) plus non-torch allocations.
/// An estimate, not a measurement; override with `--overhead-gib`.
pub const DEFAULT_OVERHEAD_BYTES: u64 = GIB;

/// vLLM's default `max_num_batched_tokens` for `vllm serve` by GPU memory
/// (engine/arg_utils.py): ≥ 160 GiB → 16384, ≥ 70 GiB → 8192, else 2048.
/// (A100s keep 2048 at 80 GB; not modelled.)
pub fn default_max_num_batched_tokens(gpu_mem_bytes: u64) -> u64 {
    if gpu_mem_bytes >= 160 * GIB {
        16384
    } else if gpu_mem_bytes >= 70 * GIB {
        8192
    } else {
        2048
    }
}

/// The memory picture of one candidate on its fullest GPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryReport {
    /// Weights on the fullest GPU (the fullest pipeline stage, one TP rank).
    pub weights_bytes: u64,
    /// Estimated activation peak of the profile run.
    pub activation_bytes: u64,
    /// Fixed reserve (CUDA graphs, NCCL/cuBLAS).
    pub overhead_bytes: u64,
    /// `ceil(total × gpu_memory_utilization)`.
    pub requested_bytes: u64,
    /// What is left for the KV cache (0 when nothing is).
    pub kv_pool_bytes: u64,
    /// KV bytes per token on one GPU over the stage's attention layers (as if every layer were full attention).
    pub kv_bytes_per_token: u64,
    /// Recurrent state bytes per request on one GPU (Mamba2 / Gated DeltaNet).
    pub state_bytes_per_seq: u64,
    /// Bytes one request of `max_model_len` tokens needs (SWA capped, state added).
    pub bytes_per_seq: Option<u64>,
    /// KV tokens the pool holds (vLLM 0.33 log: `int(max_concurrency × max_model_len)`;
    /// without a max_model_len: pool / kv_bytes_per_token).
    pub kv_tokens: u64,
    /// Requests of `max_model_len` tokens that fit at once.
    pub max_concurrency: Option<f64>,
    pub max_model_len: Option<u64>,
    pub max_num_batched_tokens: u64,
    /// Whether weights + reserves fit under the requested memory.
    pub fits: bool,
    /// The longest context one request can have in this pool (vLLM's
    /// "estimated maximum model length"), up to `max_model_len`.
    pub max_model_len_fit: Option<u64>,
    /// What vLLM raises at start-up when the pool is empty or one
    /// max_model_len request does not fit (`kv_cache_planning.py`, `gpu_worker.py`).
    pub vllm_error: Option<String>,
}

/// Bytes per parameter as a fraction (num / den) for a TP-split linear weight.
fn linear_cost(q: QuantScheme, expert: bool) -> (u64, u64) {
    match q {
        QuantScheme::Bf16 => (2, 1),
        QuantScheme::Fp8 => (1, 1),
        // one f32 scale per block
        QuantScheme::Fp8Block { block_n, block_k } => {
            let b = block_n.max(1) * block_k.max(1);
            (b + 4, b)
        }
        // bits/8 per weight + an fp16 scale and a packed zero point per group
        QuantScheme::Awq { bits, group }
        | QuantScheme::Gptq { bits, group }
        | QuantScheme::CtWna16 { bits, group } => match group {
            Some(g) if g > 0 => {
                let g = g as u64;
                (bits * g + 16 + bits, 8 * g)
            }
            _ => (bits, 8),
        },
        // MXFP4 experts: 4 bits + one E8M0 scale per 32; the rest stays BF16.
        QuantScheme::Mxfp4 if expert => (17, 32),
        QuantScheme::Mxfp4 => (2, 1),
    }
}

fn cost(params: u64, c: (u64, u64)) -> u64 {
    let b = (params as u128 * c.0 as u128).div_ceil(c.1.max(1) as u128);
    u64::try_from(b).unwrap_or(u64::MAX)
}

fn need(v: Option<u64>, f: &str) -> Result<u64, String> {
    v.ok_or_else(|| f.to_string())
}

/// Per-rank bytes of one layer's weights, KV bytes per token, and state bytes per request.
struct LayerCost {
    weights: u64,
    kv_per_token: u64,
    state_per_seq: u64,
}

fn layer_cost(
    cfg: &ArchConfig,
    t: &Target,
    kv_bytes: u64,
    mixer: Mixer,
    ffn: Ffn,
) -> Result<LayerCost, String> {
    let tp = t.tp;
    let hidden = need(cfg.hidden_size, "hidden_size")?;
    let lin = linear_cost(t.quant, false);
    let bf16 = (2, 1);
    let mut w = 0u64;
    let mut kv = 0u64;
    let mut state = 0u64;
    match mixer {
        Mixer::Full | Mixer::Swa { .. } => {
            let q = need(cfg.num_attention_heads, "num_attention_heads")?;
            let n_kv = need(cfg.num_key_value_heads, "num_key_value_heads")?;
            let hd = need(cfg.head_dim, "head_dim")?;
            let kvr = (n_kv / tp).max(1);
            w = w.saturating_add(cost(
                hidden * (q / tp) * hd * 2 + hidden * 2 * kvr * hd,
                lin,
            ));
            kv += 2 * kvr * hd * kv_bytes;
        }
        Mixer::Mla => {
            let m = cfg.mla.as_ref().ok_or("kv_lora_rank")?;
            let h = need(cfg.num_attention_heads, "num_attention_heads")? / tp;
            let rope = need(m.qk_rope_head_dim, "qk_rope_head_dim")?;
            let nope = need(m.qk_nope_head_dim, "qk_nope_head_dim")?;
            let v = need(m.v_head_dim, "v_head_dim")?;
            let kvl = need(m.kv_lora_rank, "kv_lora_rank")?;
            let q_params = match m.q_lora_rank {
                // q_a replicated on every rank, q_b split
                Some(ql) => hidden * ql + ql * h * (nope + rope),
                None => hidden * h * (nope + rope),
            };
            w = w.saturating_add(cost(
                q_params + hidden * (kvl + rope) + kvl * h * (nope + v) + h * v * hidden,
                lin,
            ));
            kv += (kvl + rope) * kv_bytes;
        }
        Mixer::Gdn => {
            let g = cfg.gdn.as_ref().ok_or("linear_num_value_heads")?;
            let kh = need(g.num_k_heads, "linear_num_key_heads")?;
            let vh = need(g.num_v_heads, "linear_num_value_heads")?;
            let kd = need(g.k_head_dim, "linear_key_head_dim")?;
            let vd = need(g.v_head_dim, "linear_value_head_dim")?;
            let ck = need(g.conv_kernel, "linear_conv_kernel_dim")?;
            let conv_dim = 2 * kh * kd + vh * vd;
            w = w.saturating_add(cost(
                hidden * (2 * kh * kd + 2 * vh * vd + 2 * vh) / tp + vh * vd * hidden / tp,
                lin,
            ));
            w = w.saturating_add(cost(conv_dim * ck / tp, bf16));
            // gated_delta_net_state_shape: conv (conv_dim/tp × (k−1)) + recurrent (v_heads/tp × v_dim × k_dim), model dtype
            state += (conv_dim / tp * ck.saturating_sub(1) + vh / tp * vd * kd) * 2;
        }
        Mixer::Mamba => {
            let m = cfg.mamba.as_ref().ok_or("mamba_num_heads")?;
            let heads = need(m.num_heads, "mamba_num_heads")?;
            let inner = need(m.inner(), "mamba_head_dim")?;
            let hd = need(m.head_dim, "mamba_head_dim")?;
            let g = need(m.n_groups, "n_groups")?;
            let ss = need(m.state_size, "ssm_state_size")?;
            let ck = need(m.conv_kernel, "conv_kernel")?;
            let ssm_b = need(m.ssm_dtype_bytes, "mamba_ssm_cache_dtype")?;
            let conv_dim = inner + 2 * g * ss;
            w = w.saturating_add(cost(
                hidden * (inner + conv_dim + heads) / tp + inner * hidden / tp,
                lin,
            ));
            w = w.saturating_add(cost(conv_dim * ck / tp, bf16));
            // mamba2_state_shape: conv ((inner + 2·g·state)/tp × (k−1)) + ssm (heads/tp × head_dim × state)
            state += conv_dim / tp * ck.saturating_sub(1) * 2 + heads / tp * hd * ss * ssm_b;
        }
        Mixer::None => {}
    }
    match ffn {
        Ffn::Dense => {
            let i = need(cfg.dense_intermediate, cfg.dense_field)?;
            w = w.saturating_add(cost(3 * hidden * (i / tp), lin));
        }
        Ffn::Moe => {
            let m = cfg.moe.as_ref().ok_or("num_experts")?;
            let e = need(m.num_experts, "num_experts")?;
            let i = need(m.intermediate, m.intermediate_field)?;
            let experts = if t.expert_parallel {
                e.div_ceil(tp) * 3 * hidden * i
            } else {
                e * 3 * hidden * (i / tp)
            };
            w = w.saturating_add(cost(experts, linear_cost(t.quant, true)));
            w = w.saturating_add(cost(hidden * e, bf16)); // router, replicated
            if m.has_shared {
                let s = need(m.shared_intermediate, m.shared_field)?;
                w = w.saturating_add(cost(3 * hidden * (s / tp), lin));
            }
        }
        Ffn::None => {}
    }
    Ok(LayerCost {
        weights: w,
        kv_per_token: kv,
        state_per_seq: state,
    })
}

/// Tokens one request keeps in a layer: full attention all `len` (in 16-token
/// blocks), a sliding layer at most `window − 1 + batched` plus one block
/// (`SlidingWindowSpec.max_memory_usage_bytes`).
fn tokens_held(mixer: Mixer, len: u64, batched: u64) -> u64 {
    const BLOCK: u64 = 16;
    match mixer {
        Mixer::Swa { window } => {
            let toks = window.saturating_sub(1).saturating_add(batched).min(len);
            (toks.div_ceil(BLOCK) + 1) * BLOCK
        }
        _ => round_up(len, BLOCK),
    }
}

/// The memory estimate for one candidate; `Err(field)` names what is missing.
pub fn estimate(cfg: &ArchConfig, t: &Target, o: &MemoryOptions) -> Result<MemoryReport, String> {
    let layout = cfg.layout.as_ref().map_err(Clone::clone)?;
    let hidden = need(cfg.hidden_size, "hidden_size")?;
    let vocab = need(cfg.vocab_size, "vocab_size")?;
    let tp = t.tp.max(1);
    let kvb = o.kv_cache_dtype.bytes();
    let costs = layout
        .iter()
        .map(|&(m, f)| layer_cost(cfg, t, kvb, m, f))
        .collect::<Result<Vec<_>, _>>()?;
    let padded_vocab = round_up(vocab, 64);
    let embed = cost(padded_vocab / tp * hidden, (2, 1));
    let batched = o
        .max_num_batched_tokens
        .unwrap_or_else(|| default_max_num_batched_tokens(o.gpu_mem_bytes));
    let max_len = o.max_model_len.or(cfg.max_position_embeddings);

    // Activation peak of the profile run (estimate): a dummy forward of
    // `batched` tokens keeps the residual stream and the widest per-rank
    // MLP/MoE intermediates in BF16; the dummy sampler run holds fp32 logits
    // and probabilities for max_num_seqs rows.
    let mut widest = 0u64;
    if cfg.has_dense_ffn {
        widest = widest.max(3 * cfg.dense_intermediate.unwrap_or(0) / tp);
    }
    if let Some(m) = &cfg.moe {
        let i = m.intermediate.unwrap_or(0);
        let ir = if t.expert_parallel { i } else { i / tp };
        widest = widest.max(m.experts_per_tok.unwrap_or(1) * (3 * ir + hidden));
        widest = widest.max(3 * m.shared_intermediate.unwrap_or(0) / tp);
    }
    let activation = batched
        .saturating_mul((4 * hidden + widest) * 2)
        .saturating_add(o.max_num_seqs.saturating_mul(padded_vocab * 8));
    let overhead = o.overhead_bytes.unwrap_or(DEFAULT_OVERHEAD_BYTES);
    let requested = (o.gpu_mem_bytes as f64 * o.gpu_memory_utilization).ceil() as u64;

    // The worst pipeline stage decides: vLLM sizes one KV pool per worker and
    // takes the smallest block count.
    let parts = pp_partition(layout.len() as u64, t.pp);
    let mut start = 0usize;
    let mut worst: Option<MemoryReport> = None;
    for (s, &n) in parts.iter().enumerate() {
        let stage = &costs[start..start + n as usize];
        let mixers = &layout[start..start + n as usize];
        start += n as usize;
        let mut weights = stage.iter().fold(0u64, |a, c| a.saturating_add(c.weights));
        if s == 0 {
            weights = weights.saturating_add(embed);
        }
        if s + 1 == parts.len() && (!cfg.tie_word_embeddings || parts.len() > 1) {
            weights = weights.saturating_add(embed); // lm_head
        }
        let kv_per_token = stage
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.kv_per_token));
        let state = stage
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.state_per_seq));
        let non_kv = weights.saturating_add(activation).saturating_add(overhead);
        let pool = requested.saturating_sub(non_kv);
        // Bytes one request of `len` tokens needs on this GPU.
        let seq_bytes = |len: u64| -> u64 {
            stage.iter().zip(mixers).fold(state, |acc, (c, (m, _))| {
                acc.saturating_add(c.kv_per_token.saturating_mul(tokens_held(*m, len, batched)))
            })
        };
        let per_seq = max_len.map(seq_bytes);
        // Largest length whose request fits (bytes grow with the length).
        let max_model_len_fit = max_len.map(|len| {
            let (mut lo, mut hi) = (0u64, len);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if seq_bytes(mid) <= pool {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        });
        let vllm_error = if non_kv >= requested || pool == 0 {
            Some("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.".to_string())
        } else {
            match (max_len, per_seq, max_model_len_fit) {
                (Some(len), Some(need), Some(fit)) if need > pool => Some(format!(
                    "ValueError: To serve at least one request with the model's max seq len ({len}), ({:.2} GiB KV cache is needed, which is larger than the available KV cache memory ({:.2} GiB). Based on the available memory, the estimated maximum model length is {fit}. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                    need as f64 / GIB as f64,
                    pool as f64 / GIB as f64
                )),
                _ => None,
            }
        };
        let conc = per_seq.filter(|&b| b > 0).map(|b| pool as f64 / b as f64);
        let tokens = match (conc, max_len) {
            (Some(c), Some(len)) => (c * len as f64) as u64,
            _ => pool.checked_div(kv_per_token).unwrap_or(0),
        };
        let r = MemoryReport {
            weights_bytes: weights,
            activation_bytes: activation,
            overhead_bytes: overhead,
            requested_bytes: requested,
            kv_pool_bytes: pool,
            kv_bytes_per_token: kv_per_token,
            state_bytes_per_seq: state,
            bytes_per_seq: per_seq,
            kv_tokens: tokens,
            max_concurrency: conc,
            max_model_len: max_len,
            max_num_batched_tokens: batched,
            fits: non_kv < requested,
            max_model_len_fit,
            vllm_error,
        };
        let worse = match &worst {
            None => true,
            Some(w) => (r.fits, r.kv_tokens) < (w.fits, w.kv_tokens),
        };
        if worse {
            worst = Some(r);
        }
    }
    worst.ok_or_else(|| "num_hidden_layers".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_batched_tokens_by_gpu_size() {
        assert_eq!(default_max_num_batched_tokens(16 * GIB), 2048);
        assert_eq!(default_max_num_batched_tokens(80 * GIB), 8192);
        assert_eq!(default_max_num_batched_tokens(141 * GIB), 8192);
        assert_eq!(default_max_num_batched_tokens(180 * GIB), 16384);
    }

    #[test]
    fn sliding_layers_are_capped_at_the_window() {
        let swa = Mixer::Swa { window: 128 };
        // 127 + 2048 tokens, in 16-token blocks, plus one block
        assert_eq!(
            tokens_held(swa, 131072, 2048),
            (2175u64.div_ceil(16) + 1) * 16
        );
        assert_eq!(tokens_held(swa, 100, 2048), (100u64.div_ceil(16) + 1) * 16);
        assert_eq!(tokens_held(Mixer::Full, 131072, 2048), 131072);
    }

    #[test]
    fn quant_costs() {
        // AWQ 4-bit g128: 0.5 B + (2 + 0.5)/128 B per weight
        let c = linear_cost(
            QuantScheme::Awq {
                bits: 4,
                group: Some(128),
            },
            false,
        );
        assert_eq!(cost(128 * 1000, c), 64_000 + 2_500);
        assert_eq!(cost(1000, linear_cost(QuantScheme::Bf16, false)), 2000);
        assert_eq!(cost(32, linear_cost(QuantScheme::Mxfp4, true)), 17);
    }
}
