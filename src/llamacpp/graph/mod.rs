//! Compute buffers and graph splits: a small re-enactment of what
//! `llama_context::sched_reserve` does with the worst-case prompt graph.
//!
//! 1. Build the graph the model builders would (`src/models/llama.cpp`,
//!    `llm_graph_context::build_attn_mha`, `build_moe_ffn`, `build_ffn`),
//!    node by node with F32 activation sizes, for `n_tokens = pp_tokens`.
//! 2. Assign every node to a backend as `ggml_backend_sched_split_graph`
//!    does: inputs on the CPU, weight ops on the weight's backend (op offload
//!    of host weights to the first GPU for batch ≥ 32), the rest expanded
//!    from GPU neighbours first, then any neighbour.
//! 3. Cut splits (backend change, or an incompatible weight with inputs
//!    already in the split), add split-input copies.
//! 4. Run ggml-alloc's dynamic allocator (best fit, free after last use,
//!    in-place reuse) per backend and take each buffer's high-water mark.
//!
//! Approximations (documented, checked against the fixtures): element-wise
//! details of non-llama architectures (extra norms, biases), recurrent mixer
//! internals (one block of intermediates sized from the layer's weights),
//! MLA attention (modelled as plain attention over the latent cache), and
//! tiny tensors (top-k ids, sums) are kept but not exact.

use std::collections::HashMap;

use crate::gguf::GgmlType;
use crate::model::{AttentionKind, Model, TensorGroup};
use crate::units::pad;

use super::context::CtxParams;
use super::device::{BackendKind, Device};
use super::flags::{Flags, FlashAttn};
use super::kv::{layer_cells, KvLayout};
use super::place::{Buft, Placement, HOST_ALIGNMENT};

type Id = usize;

/// FxHash-style hasher for the small integer keys of the simulation: the
/// std SipHash dominated the run time (the bench goal is ≤ 1 ms).
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Input,
    View,
    MulMat,
    MulMatId,
    GetRows,
    /// In-place capable element-wise op (ADD, MUL, SCALE, RMS_NORM, ROPE,
    /// SOFT_MAX, UNARY …: `ggml_op_can_inplace`).
    Inplace,
    /// Any other op that allocates its result (GLU, CPY/CONT, FLASH_ATTN_EXT …).
    Other,
    /// A write into a pre-allocated KV/recurrent buffer (SET_ROWS, CPY into
    /// a cache view): no allocation, runs where the cache lives.
    Store,
}

#[derive(Clone, Debug)]
struct Weight {
    buft: Buft,
    ty: GgmlType,
    dims: [u64; 4],
    nbytes: u64,
}

/// A node's sources: up to four inline (every builder op but the recurrent
/// mixers' convolutions), so building a graph allocates no memory per node.
type Srcs = smallvec::SmallVec<[Id; 4]>;

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    size: u64,
    srcs: Srcs,
    weight: Option<Weight>,
    /// Reads a cache (K/V view or recurrent state) living on this backend,
    /// with this many bytes viewed.
    cache: Option<(usize, u64)>,
    /// A second cache view read from the same backend (flash attention's V
    /// next to its K): its own split input, copied after the K view.
    cache_v: u64,
    /// A flash-attention node: the backend of its layer's device, for the
    /// FA auto check (llama_context::resolve_fused_ops).
    fa_layer: Option<usize>,
    /// Batch size for op offload (`ne[1]` of MUL_MAT, `ne[2]` of MUL_MAT_ID).
    batch: u64,
    /// Backend forced by the graph builder (`ggml_backend_sched_set_tensor_backend`)
    /// or by a pre-allocated destination.
    forced: Option<usize>,
    /// Extra allocation on CUDA (FA F16 copies of non-F16 K/V).
    cuda_extra: u64,
    /// A graph output (`ggml_set_output`: t_embd, t_logits): never freed,
    /// never reused in place.
    output: bool,
}

/// Compute bytes per backend and split counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComputeResult {
    /// Per model device (same order as `Placement::model_devices`).
    pub device_bytes: Vec<u64>,
    /// The CPU backend's compute buffer.
    pub cpu_bytes: u64,
    /// Splits of the prompt graph (bs = n_ubatch) and of the generation graph (bs = n_seq_max).
    pub splits_pp: u32,
    pub splits_tg: u32,
    /// Nodes of the prompt graph (diagnostics).
    pub nodes_pp: usize,
    /// A flash-attention node was scheduled on another backend than its
    /// layer's device (resolve_fused_ops then turns auto FA off).
    pub fa_off_device: bool,
    /// Flash attention as the graphs were built: `ctx.flash_attn` unless
    /// the `-fa auto` probe turned it off (llama_context::resolve_fused_ops
    /// sets cparams.flash_attn = false; the cache keeps its FA layout).
    pub flash_attn: bool,
}

mod alloc;
mod build;
mod sched;

use build::Builder;
use sched::{simulate, Scratch};

#[derive(Clone, Copy)]
pub struct ComputeInput<'a> {
    pub model: &'a Model,
    pub flags: &'a Flags,
    pub ctx: &'a CtxParams,
    pub layout: &'a KvLayout,
    pub placement: &'a Placement,
    pub devices: &'a [Device],
}

/// Simulate `sched_reserve`: prompt graph for the buffers and splits, the
/// generation graph (bs = n_seq_max) for its split count; buffers are the
/// max of both.
pub fn compute(input: &ComputeInput) -> ComputeResult {
    let lookup = Lookup::new(input.model);
    // The node list (thousands of nodes) keeps its capacity from one
    // simulation to the next on this thread: a planner checks thousands.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }
    let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    // llama_context::resolve_fused_ops: with -fa auto, a probe graph (one
    // token per sequence) is reserved and flash attention is turned off if
    // the scheduler put any FLASH_ATTN_EXT node on another device than its
    // layer's (e.g. -nkvo when the neighbouring ops land on the CPU). The
    // cache was already created for FA (V not transposed). Two things can
    // move it: -nkvo, and a hybrid model's next recurrent layer on a GPU
    // after an attention layer on the CPU (lfm2: the next layer's build_rs
    // state gather is expanded right after build_attn_mha's output and
    // pinned to its cache's device, so the scheduler's upward GPU pass
    // gives the FA node that device). Otherwise the K/V stores just before
    // the FA node are pinned to the layer's device and the scheduler's
    // first (GPU, downward) pass gives the FA node that device; skipping
    // the probe keeps one evaluation near 1 ms.
    let resolved;
    let fa_ctx;
    let input = if input.flags.flash_attn == FlashAttn::Auto
        && input.ctx.flash_attn
        && (input.flags.no_kv_offload || input.model.blocks.iter().any(|b| b.recurrent))
    {
        let s = input.ctx.n_seq_max.max(1);
        if simulate(input, &lookup, s, s, false, &mut scratch).fa_off_device {
            fa_ctx = CtxParams {
                flash_attn: false,
                ..*input.ctx
            };
            resolved = ComputeInput {
                ctx: &fa_ctx,
                ..*input
            };
            &resolved
        } else {
            input
        }
    } else {
        input
    };
    let pp = simulate(
        input,
        &lookup,
        input.ctx.pp_tokens(),
        input.ctx.pp_outputs(),
        true,
        &mut scratch,
    );
    let s = input.ctx.n_seq_max;
    // The generation graph (bs = n_seq_max ≤ n_tokens) only matters for its
    // split count: every activation scales with the batch, so its buffers
    // never exceed the prompt graph's.
    let tg = simulate(input, &lookup, s, s, false, &mut scratch);
    SCRATCH.with(|s| *s.borrow_mut() = scratch);
    ComputeResult {
        device_bytes: pp
            .device_bytes
            .iter()
            .zip(&tg.device_bytes)
            .map(|(a, b)| *a.max(b))
            .collect(),
        cpu_bytes: pp.cpu_bytes.max(tg.cpu_bytes),
        splits_pp: pp.splits_pp,
        splits_tg: tg.splits_pp,
        nodes_pp: pp.nodes_pp,
        fa_off_device: pp.fa_off_device,
        flash_attn: input.ctx.flash_attn,
    }
}

/// Pipeline parallelism (llama_context ctor): several devices, the output
/// layer offloaded, `-sm layer`, KV offloaded, no tensor overrides, and
/// every device with async compute and events (CUDA and RPC have both).
/// The scheduler then keeps `GGML_SCHED_MAX_COPIES` = 4 copies of every
/// graph input and split input, allocated up front and never freed.
pub fn pipeline_parallel(input: &ComputeInput) -> bool {
    let pl = input.placement;
    let n_layer = input.model.hparams.n_layer;
    let ngl_over_l = match input.flags.gpu_layers {
        super::flags::GpuLayers::Auto | super::flags::GpuLayers::All => true,
        super::flags::GpuLayers::N(n) => n > n_layer,
    };
    pl.model_devices.len() > 1
        && ngl_over_l
        && input.flags.split_mode == super::flags::SplitMode::Layer
        && !input.flags.no_kv_offload
        && input.flags.overrides.is_empty()
        && pl
            .model_devices
            .iter()
            .all(|&d| input.devices[d].kind != BackendKind::Metal)
}

const SCHED_MAX_COPIES: u64 = 4;

/// Weight lookup tables built once per simulation: full names, and per
/// block the `blk.N.` tails in file order.
pub struct Lookup<'a> {
    global: Names<'a>,
    layers: Vec<Vec<(&'a str, usize)>>,
    /// [`Lookup::moe_weight_ops`] of the model (read per MoE layer per graph).
    moe_ops: (bool, bool),
}

/// Full tensor names → position in `model.tensors`. The builders look up a
/// handful of non-block names (token_embd, output…) and reach block tensors
/// through the per-layer tails, so no hash table is built per simulation:
/// the few other names are scanned, a `blk.` name goes through its layer.
struct Names<'a> {
    other: Vec<(&'a str, usize)>,
    blocks: Vec<(&'a str, usize)>,
}

impl Names<'_> {
    fn get(&self, name: &str) -> Option<&usize> {
        let list = if name.starts_with("blk.") {
            &self.blocks
        } else {
            &self.other
        };
        list.iter().find(|(n, _)| *n == name).map(|(_, i)| i)
    }
}

impl<'a> Lookup<'a> {
    pub fn new(model: &'a Model) -> Lookup<'a> {
        let mut global = Names {
            other: Vec::new(),
            blocks: Vec::with_capacity(model.tensors.len()),
        };
        // Sized up front: growing each layer's list one tensor at a time was
        // most of building this table, once per simulation.
        let per_layer = model.tensors.len() / model.blocks.len().max(1) + 4;
        let mut layers: Vec<Vec<(&str, usize)>> = (0..model.blocks.len())
            .map(|_| Vec::with_capacity(per_layer))
            .collect();
        for (i, t) in model.tensors.iter().enumerate() {
            let name = model.profile.tensors[t.index].name.as_str();
            if let Some(rest) = name.strip_prefix("blk.") {
                global.blocks.push((name, i));
                if let Some((num, tail)) = rest.split_once('.') {
                    if let Ok(il) = num.parse::<usize>() {
                        if il >= layers.len() {
                            layers.resize(il + 1, Vec::new());
                        }
                        layers[il].push((tail, i));
                    }
                }
            } else {
                global.other.push((name, i));
            }
        }
        Lookup {
            global,
            layers,
            moe_ops: Self::moe_weight_ops(model),
        }
    }

    /// build_moe_ffn's `norm_w` and `w_scale` as each arch's builder passes
    /// them (src/models/*.cpp): qwen3moe / qwen3next / qwen35moe and llama
    /// (Mixtral) normalise unconditionally, qwen2moe and gpt-oss never, the
    /// rest (deepseek2, glm4moe, nemotron_h_moe …) follow
    /// `<arch>.expert_weights_norm`; the weights are scaled when
    /// `<arch>.expert_weights_scale` is neither 0 nor 1 (llama passes 0).
    fn moe_weight_ops(model: &Model) -> (bool, bool) {
        let p = &model.profile;
        let norm = match p.arch.as_str() {
            "qwen3moe" | "qwen3next" | "qwen35moe" | "qwen3vlmoe" | "llama" => true,
            "qwen2moe" | "gpt-oss" => false,
            _ => p
                .arch_meta("expert_weights_norm")
                .and_then(|v| v.as_u64())
                .is_some_and(|v| v != 0),
        };
        let scale = p.arch != "llama"
            && p.arch_meta("expert_weights_scale")
                .and_then(|v| v.as_f64())
                .is_some_and(|w| w != 0.0 && w != 1.0);
        (norm, scale)
    }
}
