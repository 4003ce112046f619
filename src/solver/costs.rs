//! Per-layer costs the solvers optimise over: weight bytes and parameters
//! split into what must stay with the layer and what may move to the host
//! (routed experts; the FFN of dense models), KV bytes at a context, and an
//! analytic compute-buffer estimate.
//!
//! These are the *planning* numbers: close to llama.cpp's, cheap to sum.
//! Every plan is re-checked by a [`Simulator`](super::sim::Simulator)
//! before it is shown.

use crate::gguf::GgmlType;
use crate::model::{AttentionKind, Model, TensorClass, TensorGroup};

/// The context-side choices of a plan (everything but placement).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CtxConfig {
    /// `-c`: total cells (a multiple of 256, and of 256·n_seq without `-kvu`).
    pub n_ctx: u64,
    /// `-np`.
    pub n_seq: u32,
    /// `-kvu`.
    pub kv_unified: bool,
    /// `-ub`.
    pub ubatch: u64,
    /// `-b`.
    pub batch: u64,
    /// `-fa on` (true) / `off`.
    pub flash_attn: bool,
    pub type_k: GgmlType,
    pub type_v: GgmlType,
}

impl CtxConfig {
    /// llama-server's defaults at `n_ctx` cells: one slot, `-ub 512`,
    /// `-b 2048`, flash attention, f16 K and V (common/common.h
    /// `common_params`).
    pub fn llama_defaults(n_ctx: u64) -> CtxConfig {
        CtxConfig {
            n_ctx,
            n_seq: 1,
            kv_unified: false,
            ubatch: 512,
            batch: 2048,
            flash_attn: true,
            type_k: GgmlType::F16,
            type_v: GgmlType::F16,
        }
    }

    /// Number of KV streams: 1 with a unified cache, else one per slot
    /// (`llama_context`: `n_stream = kv_unified ? 1 : n_seq_max`).
    pub fn n_stream(&self) -> u64 {
        if self.kv_unified {
            1
        } else {
            u64::from(self.n_seq.max(1))
        }
    }

    /// Cells one sequence can use (`n_ctx_seq`).
    pub fn n_ctx_seq(&self) -> u64 {
        if self.kv_unified {
            self.n_ctx
        } else {
            self.n_ctx / u64::from(self.n_seq.max(1))
        }
    }

    /// Tokens in the worst-case prompt-processing graph:
    /// `min(n_ctx, n_ubatch)` (`sched_reserve`).
    pub fn pp_tokens(&self) -> u64 {
        self.n_ctx.min(self.ubatch).max(1)
    }
}

/// What can move off a layer's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Movable {
    /// Routed experts (`-ot blk\.N\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU`).
    Experts,
    /// The dense FFN (`-ot blk\.N\.ffn_(up|down|gate|gate_up)\.=CPU`).
    DenseFfn,
}

/// One `blk.N`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerCost {
    /// Bytes that always sit on the layer's device (attention, norms,
    /// router, shared experts, recurrent mixer, a MoE model's dense FFN).
    pub fixed_bytes: u64,
    /// Matmul parameters among them (2 FLOP each per token).
    pub fixed_params: u64,
    /// Bytes of the movable FFN (0 if none).
    pub ffn_bytes: u64,
    pub ffn_params: u64,
    /// Fraction of the movable FFN read per token: `n_expert_used / n_expert`
    /// for routed experts, 1 for a dense FFN.
    pub ffn_read: f64,
    /// Largest single movable tensor (the op-offload copy, §4.5).
    pub ffn_largest: u64,
    /// Largest single tensor of the layer (op-offload copy of a CPU layer).
    pub largest: u64,
    /// KV cache / recurrent state bytes allocated at the context.
    pub kv_bytes: u64,
    /// KV / state bytes read per decoded token of one sequence at a full slot.
    pub kv_read_bytes: u64,
    /// Peak F32 activations of this layer in the pp graph (attention or FFN phase).
    pub act_peak: u64,
}

/// The whole model at one context.
#[derive(Clone, Debug)]
pub struct Costs {
    pub layers: Vec<LayerCost>,
    pub movable: Option<Movable>,
    /// `output` + `output_norm` (the output "layer", index L).
    pub output_bytes: u64,
    pub output_params: u64,
    /// `token_embd` and other input tensors (always on the host).
    pub input_bytes: u64,
    /// Logits and final norm activations in the pp graph (output device).
    pub output_act: u64,
    /// Graph-wide compute terms every device with layers pays: the KQ mask
    /// and the residual stream.
    pub act_base: u64,
    /// The host's own compute buffer (embeddings `get_rows`, inputs).
    pub host_compute: u64,
    /// Logits buffer on the host (`output_reserve`: `4·n_vocab·n_seq`).
    pub output_buffer: u64,
    /// One token's activations crossing a device boundary (`4·n_embd`).
    pub act_bytes_per_token: u64,
}

impl Costs {
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Bytes a layer puts on its device when its FFN stays (`ffn_host` false) or moves.
    pub fn layer_device_bytes(&self, il: usize, ffn_host: bool) -> u64 {
        let l = &self.layers[il];
        l.fixed_bytes + l.kv_bytes + if ffn_host { 0 } else { l.ffn_bytes }
    }
}

fn elements(dims: &[u64]) -> u64 {
    dims.iter().product()
}

/// Compute [`Costs`] for `model` at `cfg`. Per-layer bytes come from the
/// tensors (skipped NextN tensors excluded), KV widths from the blocks.
pub fn costs(model: &Model, cfg: &CtxConfig) -> Costs {
    at_context(model, &weights(model), cfg)
}

/// The context-independent part of [`costs`] (one pass over the tensors),
/// to reuse across many contexts.
pub fn weights(model: &Model) -> Costs {
    let hp = &model.hparams;
    let n = model.blocks.len().max(hp.n_layer as usize);
    let mut layers = vec![LayerCost::default(); n];
    let movable = if hp.n_expert > 0 {
        Some(Movable::Experts)
    } else if model
        .blocks
        .iter()
        .any(|b| b.bytes.get(&TensorGroup::FfnDense).is_some_and(|&x| x > 0))
    {
        Some(Movable::DenseFfn)
    } else {
        None
    };
    let routed_read = if hp.n_expert > 0 {
        f64::from(hp.n_expert_used) / f64::from(hp.n_expert)
    } else {
        1.0
    };
    let mut output_bytes = 0;
    let mut output_params = 0;
    let mut input_bytes = 0;
    for t in &model.tensors {
        if t.skipped {
            continue;
        }
        let Some(e) = model.profile.tensors.get(t.index) else {
            continue;
        };
        let bytes = e.n_bytes().unwrap_or(0);
        let params = if e.dims.len() >= 2 {
            elements(&e.dims)
        } else {
            0
        };
        match t.class {
            TensorClass::Input => input_bytes += bytes,
            TensorClass::Output => {
                output_bytes += bytes;
                output_params += params;
            }
            TensorClass::Layer { layer, group } => {
                let Some(l) = layers.get_mut(layer as usize) else {
                    continue;
                };
                l.largest = l.largest.max(bytes);
                let moves = match movable {
                    Some(Movable::Experts) => group == TensorGroup::FfnRouted,
                    Some(Movable::DenseFfn) => group == TensorGroup::FfnDense,
                    None => false,
                };
                if moves {
                    l.ffn_bytes += bytes;
                    l.ffn_params += params;
                    l.ffn_largest = l.ffn_largest.max(bytes);
                    l.ffn_read = if group == TensorGroup::FfnRouted {
                        routed_read
                    } else {
                        1.0
                    };
                } else {
                    l.fixed_bytes += bytes;
                    l.fixed_params += params;
                }
            }
        }
    }
    if hp.tied_embeddings {
        // The output reuses token_embd; a GPU output gets its own copy.
        output_bytes += input_bytes;
    }
    Costs {
        layers,
        movable,
        output_bytes,
        output_params,
        input_bytes,
        output_act: 0,
        act_base: 0,
        host_compute: 0,
        output_buffer: 0,
        act_bytes_per_token: 4 * hp.n_embd,
    }
}

/// [`costs`] from precomputed [`weights`]: only the KV and compute terms
/// are recomputed.
pub fn at_context(model: &Model, weights: &Costs, cfg: &CtxConfig) -> Costs {
    let hp = &model.hparams;
    let mut c = weights.clone();

    let t = cfg.pp_tokens();
    let e = hp.n_embd;
    let n_stream = cfg.n_stream();
    let n_ctx_seq = cfg.n_ctx_seq();
    let nkv = if cfg.kv_unified { cfg.n_ctx } else { n_ctx_seq };
    let row = |ty: GgmlType, w: u64| ty.row_size(w).unwrap_or(w * 2);
    for (il, b) in model.blocks.iter().enumerate() {
        let Some(l) = c.layers.get_mut(il) else {
            continue;
        };
        l.kv_bytes = 0;
        l.kv_read_bytes = 0;
        let h = u64::from(hp.n_head.get(il).copied().unwrap_or(0));
        let hkv = u64::from(hp.n_head_kv.get(il).copied().unwrap_or(0));
        let dk = u64::from(hp.head_dim_k.get(il).copied().unwrap_or(0));
        let dv = u64::from(hp.head_dim_v.get(il).copied().unwrap_or(0));
        let cell = row(cfg.type_k, b.k_width)
            + if b.v_width > 0 {
                row(cfg.type_v, b.v_width)
            } else {
                0
            };
        if b.has_kv {
            // llama_kv_cache: n_stream × n_ctx_seq cells (SWA: window + ubatch, padded to 256).
            let (cells_total, cells_seq) = match b.attention {
                AttentionKind::Swa { window } => {
                    let per = crate::llamacpp::kv::swa_cells(
                        n_ctx_seq,
                        u64::from(window),
                        cfg.kv_unified,
                        u64::from(cfg.n_seq),
                        cfg.ubatch,
                        256,
                    );
                    (n_stream * per, u64::from(window).min(n_ctx_seq))
                }
                _ => (n_stream * n_ctx_seq, n_ctx_seq),
            };
            l.kv_bytes = cells_total * cell;
            l.kv_read_bytes = cells_seq * cell;
        }
        if b.recurrent {
            // llama_memory_recurrent: F32 R and S state per sequence.
            let per_seq = 4 * (hp.n_embd_r + hp.n_embd_s);
            l.kv_bytes += per_seq * u64::from(cfg.n_seq.max(1));
            // Read and written once per token.
            l.kv_read_bytes += 2 * per_seq;
        }
        // §4.4: attention phase (FA: Q/K/V/out activations; no FA: KQ scores
        // 4·nkv·T·H) and FFN phase (up, gate, glu: 3 × 4·width·T).
        let attn = if b.has_kv {
            let base = 4 * t * (h * dk + 2 * hkv * dk + h * dv);
            if cfg.flash_attn {
                let conv = if cfg.type_k != GgmlType::F16 || cfg.type_v != GgmlType::F16 {
                    2 * nkv * n_stream * hkv * (dk + dv)
                } else {
                    0
                };
                base + conv
            } else {
                base + 4 * nkv * t * h
            }
        } else {
            // Recurrent mixers: projections of width ~2·n_embd_r/3 per token.
            4 * t * (e * 6)
        };
        let ffn_w = if hp.n_expert > 0 && b.bytes.contains_key(&TensorGroup::FfnRouted) {
            hp.n_ff_exp * u64::from(hp.n_expert_used) + hp.n_ff_shexp + u64::from(hp.n_expert)
        } else {
            hp.n_ff.get(il).copied().unwrap_or(0)
        };
        l.act_peak = attn.max(12 * ffn_w * t);
    }
    let mask = nkv * t * if cfg.flash_attn { 2 } else { 4 };
    let outputs = t.min(u64::from(cfg.n_seq.max(1)));
    c.output_act = output_act(model, t, outputs);
    c.act_base = mask + 8 * e * t;
    c.host_compute = 4 * e * t + mask + 8 * t;
    c.output_buffer = 4 * hp.n_vocab * u64::from(cfg.n_seq.max(1));
    c
}

/// Logits and final-norm activations of the pp graph on the output device
/// for `t` tokens with `outputs` of them kept (`n_outputs` in the graph).
pub fn output_act(model: &Model, t: u64, outputs: u64) -> u64 {
    let hp = &model.hparams;
    4 * hp.n_vocab * outputs + 4 * hp.n_embd * outputs + 4 * hp.n_embd * t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::synthetic::{build, Spec};

    fn cfg(n_ctx: u64) -> CtxConfig {
        CtxConfig::llama_defaults(n_ctx)
    }

    #[test]
    fn hybrid_layers_split_fixed_movable_and_kv() {
        let m = build(&Spec::qwen3_next_like());
        let c = costs(&m, &cfg(32768));
        assert_eq!(c.movable, Some(Movable::Experts));
        let expert_tensor = 2048 / 256 * 144 * 512 * 512u64;
        assert_eq!(c.layers[0].ffn_bytes, 3 * expert_tensor);
        assert_eq!(c.layers[0].ffn_largest, expert_tensor);
        assert!((c.layers[0].ffn_read - 10.0 / 512.0).abs() < 1e-12);
        // Layer 3 has full attention: 32768 cells × (512 + 512) f16 = 64 MiB.
        assert_eq!(c.layers[3].kv_bytes, 32768 * 2 * 512 * 2);
        // Layer 0 is recurrent: F32 state only.
        assert_eq!(
            c.layers[0].kv_bytes,
            4 * (m.hparams.n_embd_r + m.hparams.n_embd_s)
        );
        let total: u64 = c
            .layers
            .iter()
            .map(|l| l.fixed_bytes + l.ffn_bytes)
            .sum::<u64>()
            + c.output_bytes
            + c.input_bytes;
        let file: u64 = m.profile.tensors.iter().filter_map(|t| t.n_bytes()).sum();
        assert_eq!(total, file);
    }

    #[test]
    fn kv_scales_with_context_and_type() {
        let m = build(&Spec::llama_8b_like());
        let a = costs(&m, &cfg(8192));
        let b = costs(&m, &cfg(16384));
        assert_eq!(b.layers[5].kv_bytes, 2 * a.layers[5].kv_bytes);
        // 8 KV heads × 128 × 2 (K, V) × 2 bytes = 4 KiB per cell.
        assert_eq!(a.layers[5].kv_bytes, 8192 * 4096);
        let mut q = cfg(8192);
        q.type_k = GgmlType::Q8_0;
        q.type_v = GgmlType::Q8_0;
        // q8_0: 34 bytes per 32 elements.
        assert_eq!(costs(&m, &q).layers[5].kv_bytes, 8192 * 2 * 1024 / 32 * 34);
        assert_eq!(a.movable, Some(Movable::DenseFfn));
    }
}
