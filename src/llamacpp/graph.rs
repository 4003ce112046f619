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

#[derive(Clone, Debug)]
struct Node {
    op: Op,
    size: u64,
    srcs: Vec<Id>,
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
}

struct Builder<'a> {
    model: &'a Model,
    flags: &'a Flags,
    ctx: &'a CtxParams,
    layout: &'a KvLayout,
    placement: &'a Placement,
    /// Backend index of a hardware device (model devices first, CPU last).
    backend_of_dev: FastMap<usize, usize>,
    cpu: usize,
    lookup: &'a Lookup<'a>,
    /// The next Mamba2 layer's conv-state gather, built early: llama.cpp
    /// expands it before the current layer's output part (graph order).
    pending_gather: Option<Id>,
    /// The s_copy input of hybrid/recurrent models (llm_graph_input_rs).
    rs_copy: Option<Id>,
    nodes: Vec<Node>,
}

impl<'a> Builder<'a> {
    fn push(&mut self, n: Node) -> Id {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn node(op: Op, size: u64, srcs: &[Id]) -> Node {
        Node {
            op,
            size,
            srcs: srcs.to_vec(),
            weight: None,
            cache: None,
            cache_v: 0,
            fa_layer: None,
            batch: 0,
            forced: None,
            cuda_extra: 0,
            output: false,
        }
    }

    fn input(&mut self, bytes: u64) -> Id {
        self.push(Self::node(Op::Input, bytes, &[]))
    }

    fn view(&mut self, src: Id) -> Id {
        let size = self.nodes[src].size;
        self.push(Self::node(Op::View, size, &[src]))
    }

    /// llama_mul_mat_hadamard (src/llama-impl.h): mul_mat(rot, reshape_2d(x))
    /// allocates, and the result comes back through reshape_4d, a view. So a
    /// following in-place op (qwen3next's gated `ggml_mul(cur, gate)`)
    /// cannot take the rotation's memory and reuses its other operand's
    /// (ggml_gallocr_allocate_node skips view parents).
    fn hadamard(&mut self, size: u64, x: Id, rot: Id) -> Id {
        let r = self.other(size, &[x, rot]);
        self.view(r)
    }

    fn inplace(&mut self, src: Id, others: &[Id]) -> Id {
        let size = self.nodes[src].size;
        let mut srcs = vec![src];
        srcs.extend_from_slice(others);
        self.push(Self::node(Op::Inplace, size, &srcs))
    }

    fn other(&mut self, size: u64, srcs: &[Id]) -> Id {
        self.push(Self::node(Op::Other, size, srcs))
    }

    fn backend_of_buft(&self, b: Buft) -> usize {
        match b.device() {
            Some(d) => self.backend_of_dev.get(&d).copied().unwrap_or(self.cpu),
            None => self.cpu,
        }
    }

    fn layer_backend(&self, il: usize) -> usize {
        match self.placement.layer_device.get(il).copied().flatten() {
            Some(d) => self.backend_of_dev.get(&d).copied().unwrap_or(self.cpu),
            None => self.cpu,
        }
    }

    fn kv_backend(&self, il: usize) -> usize {
        if self.flags.no_kv_offload {
            self.cpu
        } else {
            self.layer_backend(il)
        }
    }

    /// `blk.<il>.<tail>`, through the per-layer table (no string building).
    fn lw(&self, il: usize, tail: &str) -> Option<Weight> {
        let pos = self
            .lookup
            .layers
            .get(il)?
            .iter()
            .find(|(t, _)| *t == tail)?
            .1;
        self.weight_at(pos)
    }

    /// The weight tensor `name`, if the model has it and it is allocated.
    fn weight(&self, name: &str) -> Option<Weight> {
        let &pos = self.lookup.global.get(name)?;
        self.weight_at(pos)
    }

    fn weight_at(&self, pos: usize) -> Option<Weight> {
        let t = &self.model.tensors[pos];
        let buft = self.placement.tensor_buft.get(pos).copied().flatten()?;
        let e = &self.model.profile.tensors[t.index];
        let mut dims = [1u64; 4];
        for (i, d) in e.dims.iter().take(4).enumerate() {
            dims[i] = *d;
        }
        Some(Weight {
            buft,
            ty: e.ty,
            dims,
            nbytes: e.n_bytes().unwrap_or(0),
        })
    }

    /// `mul_mat(w, x)`: result [rows, n] F32, or a stand-in on the layer's
    /// device when the model lacks the tensor.
    fn matmul(&mut self, w: Option<Weight>, rows: u64, n: u64, x: Id) -> Id {
        let mut node = Self::node(Op::MulMat, 4 * rows * n, &[x]);
        node.batch = n;
        node.weight = w;
        self.push(node)
    }

    fn mul_mat_id(
        &mut self,
        w: Option<Weight>,
        rows: u64,
        used: u64,
        t: u64,
        x: Id,
        ids: Id,
    ) -> Id {
        let mut node = Self::node(Op::MulMatId, 4 * rows * used * t, &[x, ids]);
        node.batch = t;
        node.weight = w;
        self.push(node)
    }

    /// rms_norm + mul(norm weight): the norm allocates unless its input has
    /// one consumer (decided by the allocator), the mul is in place.
    fn norm(&mut self, x: Id, w: Option<Weight>) -> Id {
        let n = self.push(Self::node(Op::Inplace, self.nodes[x].size, &[x]));
        let mut m = Self::node(Op::Inplace, self.nodes[x].size, &[n]);
        m.weight = w;
        self.push(m)
    }

    fn build(&mut self, t: u64, o: u64) {
        let hp = &self.model.hparams;
        let e = hp.n_embd;
        let ns = self.ctx.n_stream;
        let fa = self.ctx.flash_attn;
        let n_main = hp.n_layer.saturating_sub(hp.n_nextn) as usize;

        // Graph inputs (llm_graph_input_*): token ids, positions, output ids,
        // per cache a KQ mask [n_kv, T/ns, 1, ns] (F16 with FA, F32 without)
        // and K/V row indices (I64; V indices per element when V is transposed).
        let tokens = self.input(4 * t);
        let pos = self.input(4 * t);
        let out_ids = self.input(4 * o);
        // llm_graph_input_rs: s_copy (I32 per recurrent row).
        let has_rs = self.model.blocks.iter().any(|b| b.recurrent);
        let rs_copy = if has_rs {
            let r = self.input(4 * self.ctx.n_seq_max.max(1));
            self.rs_copy = Some(r);
            r
        } else {
            tokens
        };
        let mask_bytes =
            |cells: u64| cells * ns * t.div_ceil(ns) * if fa { 2 } else { 4 } / ns * ns;
        let has_full = self
            .model
            .blocks
            .iter()
            .take(n_main)
            .any(|b| b.has_kv && !matches!(b.attention, AttentionKind::Swa { .. }));
        let has_swa = self
            .model
            .blocks
            .iter()
            .take(n_main)
            .any(|b| b.has_kv && matches!(b.attention, AttentionKind::Swa { .. }));
        let v_idx_w = |w: u64| if self.ctx.v_trans { w } else { 1 };
        let vw_full = self
            .model
            .blocks
            .iter()
            .filter(|b| b.has_kv && b.v_width > 0)
            .map(|b| self.layout.v_width_max.unwrap_or(b.v_width))
            .max()
            .unwrap_or(0);
        // attn_rot_k: quantized K and every layer's K head size equal and a
        // multiple of 64 (n_rot_k = largest power of two ≥ 64 dividing it);
        // attn_rot_v: quantized V, V head % 64 == 0 (n_rot_v = 64). MLA
        // caches are left out (their rotation is not modelled).
        let all_eq = |v: &[u32]| -> u64 {
            let first = v.first().copied().unwrap_or(0);
            if v.iter().all(|&x| x == first) {
                u64::from(first)
            } else {
                0
            }
        };
        let any_mla = self
            .model
            .blocks
            .iter()
            .any(|b| b.attention == AttentionKind::Mla);
        let hk = all_eq(&self.model.hparams.head_dim_k);
        let hv = all_eq(&self.model.hparams.head_dim_v);
        let n_rot_k =
            if self.flags.cache_type_k.is_quantized() && hk > 0 && hk % 64 == 0 && !any_mla {
                let mut n = 64;
                while hk % (2 * n) == 0 {
                    n *= 2;
                }
                n
            } else {
                0
            };
        let n_rot_v =
            if self.flags.cache_type_v.is_quantized() && hv > 0 && hv % 64 == 0 && !any_mla {
                64
            } else {
                0
            };
        let mk_inputs = |b: &mut Self, cells: u64| {
            let mask = b.input(mask_bytes(cells));
            let kidx = b.input(8 * t);
            // K-only caches (MLA, build_attn_inp_k) have no V indices.
            let vidx = if vw_full > 0 {
                b.input(8 * t * v_idx_w(vw_full))
            } else {
                kidx
            };
            // Hadamard rotations for quantized caches (llama_kv_cache ctor:
            // attn_rot_k/v; inputs self_k_rot/self_v_rot, F32 n×n).
            let krot = (n_rot_k > 0).then(|| b.input(4 * n_rot_k * n_rot_k));
            let vrot = (n_rot_v > 0).then(|| b.input(4 * n_rot_v * n_rot_v));
            (mask, kidx, vidx, krot, vrot)
        };
        let full_in = has_full.then(|| mk_inputs(self, self.layout.cells));
        let swa_in =
            has_swa.then(|| mk_inputs(self, self.layout.cells_swa.unwrap_or(self.layout.cells)));

        // build_inp_embd: ggml_build_forward_select adds every branch to the
        // graph and ggml-alloc allocates them all: the token path
        // get_rows(token_embd, tokens), the vector-embeddings input [E, T],
        // and (archs with mixed batches) set_rows(dup(mixed_embd),
        // get_rows(token_embd, mixed_tokens), mixed_slots).
        let mut emb = Self::node(Op::GetRows, 4 * e * t, &[tokens]);
        emb.weight = self.weight("token_embd.weight");
        let mut inp_l = self.push(emb);
        self.input(4 * e * t);
        let arch = self.model.profile.arch.as_str();
        let mixed = !matches!(
            arch,
            "cogvlm" | "deepseek4" | "granite-switch" | "eagle3" | "dflash" | "gemma4-assistant"
        );
        if mixed {
            // Visit order of set_rows' sources: get_rows, slots, dup.
            let m_tokens = self.input(4 * t);
            let mut gr = Self::node(Op::GetRows, 4 * e * t, &[m_tokens]);
            gr.weight = self.weight("token_embd.weight");
            let gr = self.push(gr);
            let m_slots = self.input(8 * t);
            let m_embd = self.input(4 * e * t);
            let dup = self.other(4 * e * t, &[m_embd]);
            // set_rows writes into dup (a view of it keeps it alive).
            self.nodes[dup].output = true;
            self.push(Self::node(Op::Store, 0, &[gr, m_slots, dup]));
        }
        let mut cur_t = t;

        let nemotron = self.model.profile.arch.starts_with("nemotron_h");
        // Archs whose last layer only drops the non-output rows when
        // `cparams.embeddings_nextn_masked` (false by default,
        // llama_context ctor): the last layer runs on every token and the
        // rows are selected after the final norm (t_h_nextn = the norm,
        // output), e.g. qwen3next.cpp / qwen35moe.cpp graph ctor; gpt-oss
        // (openai-moe.cpp) selects them just before the final norm, with
        // t_h_nextn = the pre-norm residual.
        let rows_after_norm = nemotron
            || matches!(
                arch,
                "qwen3next" | "qwen35" | "qwen35moe" | "gemma4" | "cohere2moe" | "bailingmoe3"
            );
        let rows_before_norm = arch == "gpt-oss";
        let residual_first = arch == "lfm2";
        // llama_model_rope_type (src/llama-model.cpp): these archs build
        // attention without ggml_rope_ext on Q and K.
        let rope = !matches!(
            arch,
            "clip"
                | "gpt2"
                | "gptj"
                | "mpt"
                | "refact"
                | "bloom"
                | "mamba"
                | "mamba2"
                | "jamba"
                | "jina-bert-v2"
                | "t5"
                | "t5encoder"
                | "jais"
                | "rwkv6"
                | "rwkv6qwen2"
                | "rwkv7"
                | "arwkv7"
                | "wavtokenizer-dec"
                | "nemotron_h"
                | "nemotron_h_moe"
                | "kimi-linear"
                | "kimi-k3"
                | "glm5-next"
        );
        for il in 0..n_main {
            let b = &self.model.blocks[il];
            let last = il + 1 == n_main;
            let h = u64::from(hp.n_head.get(il).copied().unwrap_or(0));
            let hkv = u64::from(hp.n_head_kv.get(il).copied().unwrap_or(0));
            let dk = u64::from(hp.head_dim_k.get(il).copied().unwrap_or(0));
            let dv = u64::from(hp.head_dim_v.get(il).copied().unwrap_or(0));
            let inp_sa = inp_l;
            // build_rs: the conv states of the sequences are gathered from
            // the cache (get_rows by s_copy) before the layer's norm.
            let mamba2 = self.mamba2_dims(il);
            let shortconv = mamba2.is_none() && self.shortconv_layer(il);
            let r_rows = match self.pending_gather.take() {
                Some(g) => Some(g),
                None if shortconv => Some(self.shortconv_gather(il, rs_copy)),
                None => mamba2.map(|m| self.mamba2_gather(il, m, rs_copy)),
            };
            let w_norm = self.lw(il, "attn_norm.weight");
            let mut cur = self.norm(inp_l, w_norm);

            let attn_kind = b.attention;
            let has_attn = b.has_kv && b.k_width > 0 && h > 0;
            if has_attn {
                let (mask, kidx, vidx, krot, vrot) =
                    if matches!(attn_kind, AttentionKind::Swa { .. }) {
                        swa_in.or(full_in)
                    } else {
                        full_in.or(swa_in)
                    }
                    .unwrap_or((tokens, tokens, tokens, None, None));
                let kvb = self.kv_backend(il);
                let cells = layer_cells(attn_kind, self.layout);
                let mla = attn_kind == AttentionKind::Mla;
                if mla && self.lw(il, "attn_k_b.weight").is_some() {
                    let out = self.mla_attention(il, cur, cur_t, mask, kidx, pos);
                    let wo = self.lw(il, "attn_output.weight");
                    cur = self.matmul(wo, e, cur_t, out);
                    let mut res = inp_sa;
                    if last {
                        cur = self.other(4 * e * o, &[cur, out_ids]);
                        res = self.other(4 * e * o, &[inp_sa, out_ids]);
                        cur_t = o;
                    }
                    let ffn_inp = self.inplace(cur, &[res]);
                    let ffn_out = if self.has_ffn(il) {
                        let w_norm = self.lw(il, "ffn_norm.weight");
                        let fcur = self.norm(ffn_inp, w_norm);
                        self.ffn(il, fcur, cur_t)
                    } else {
                        None
                    };
                    inp_l = match ffn_out {
                        Some(f) => self.inplace(f, &[ffn_inp]),
                        None => ffn_inp,
                    };
                    continue;
                }
                // MLA: the latent cache (k_width = kv_lora + rope) stands in
                // for K and V (V is a view of K), one KV head.
                let (qw, kw, vw, hkv_e, dk_e, dv_e) = if mla {
                    let dkl = b.k_width;
                    let dvl = dkl.saturating_sub(64).max(1);
                    (h * dkl, dkl, 0, 1, dkl, dvl)
                } else {
                    (h * dk, hkv * dk, hkv * dv, hkv, dk, dv)
                };
                // build_attn: q, v, k are expanded in this order, then the
                // cache stores (cpy_k, cpy_v).
                let wq = self.lw(il, "attn_q.weight");
                // Gated attention (qwen3next/qwen3.5) projects q and its
                // gate together: size the matmul from the weight.
                let q_rows = wq.as_ref().map_or(qw, |w| w.dims[1].max(qw));
                let q_full = self.matmul(wq, q_rows, cur_t, cur);
                let q = self.view(q_full);
                let q = if rope {
                    self.push(Self::node(Op::Inplace, 4 * qw * cur_t, &[q, pos]))
                } else {
                    q
                };
                let q = match krot {
                    Some(r) => self.hadamard(4 * qw * cur_t, q, r),
                    None => q,
                };
                let v = (vw > 0).then(|| {
                    let wv = self.lw(il, "attn_v.weight");
                    let v = self.matmul(wv, vw, cur_t, cur);
                    match vrot {
                        Some(r) => self.hadamard(4 * vw * cur_t, v, r),
                        None => v,
                    }
                });
                let wk = self
                    .lw(il, "attn_k.weight")
                    .or_else(|| self.lw(il, "attn_kv_a_mqa.weight"));
                let k = self.matmul(wk, kw, cur_t, cur);
                let k = self.view(k);
                let k = if rope { self.inplace(k, &[pos]) } else { k };
                let k = match krot {
                    Some(r) => self.hadamard(4 * kw * cur_t, k, r),
                    None => k,
                };
                let mut ks = Self::node(Op::Store, 0, &[k, kidx]);
                ks.forced = Some(kvb);
                let k_store = self.push(ks);
                let v_store = v.map(|v| {
                    let mut vs = Self::node(Op::Store, 0, &[v, vidx]);
                    vs.forced = Some(kvb);
                    self.push(vs)
                });
                let kt = self.flags.cache_type_k;
                let vt = self.flags.cache_type_v;
                let k_view_bytes = kt.row_size(kw).unwrap_or(0) * cells * ns;
                let v_view_bytes = if mla {
                    0
                } else {
                    vt.row_size(self.layout.v_width_max.unwrap_or(vw))
                        .unwrap_or(0)
                        * cells
                        * ns
                };
                let mut deps = vec![q, mask, k_store];
                if let Some(vs) = v_store {
                    deps.push(vs);
                }
                let attn_out = if fa {
                    let mut n = Self::node(Op::Other, 4 * dv_e * h * cur_t, &deps);
                    // ggml_flash_attn_ext(q, k, v, mask): the K and V
                    // views are two split inputs when the cache lives on
                    // another backend (-nkvo).
                    n.cache = Some((kvb, k_view_bytes));
                    n.cache_v = v_view_bytes;
                    n.fa_layer = Some(self.layer_backend(il));
                    // CUDA FA converts non-F16 K/V to F16 temporaries inside the
                    // node's allocation (ggml_cuda_flash_attn_ext_get_alloc_size).
                    let mut extra = 0;
                    if kt != GgmlType::F16 {
                        extra += pad(2 * cells * ns * hkv_e * dk_e, 128);
                    }
                    if vt != GgmlType::F16 && !mla {
                        extra += pad(2 * cells * ns * hkv_e * dv_e, 128);
                    }
                    n.cuda_extra = extra;
                    let fa_node = self.push(n);
                    self.view(fa_node)
                } else {
                    // kq = mul_mat(k, q) [n_kv, T/ns, H, ns]; soft_max in place;
                    // kqv = mul_mat(v, kq) [dv, T/ns, H, ns]; cont → [H·dv, T].
                    let mut kq = Self::node(Op::Other, 4 * cells * cur_t * h, &deps);
                    kq.cache = Some((kvb, k_view_bytes));
                    let kq = self.push(kq);
                    let sm = self.inplace(kq, &[mask]);
                    let mut kqv = Self::node(Op::Other, 4 * dv_e * h * cur_t, &[sm]);
                    kqv.cache = Some((kvb, v_view_bytes));
                    let kqv = self.push(kqv);
                    let pv = self.view(kqv);
                    let c = self.other(4 * dv_e * h * cur_t, &[pv]);
                    // build_attn_mha pins the merged output to the CPU with
                    // -nkvo (ggml_backend_sched_set_tensor_backend), but the
                    // oracle shows kq/kqv/cont on the layer's device in the
                    // reserve graphs (the assignment is reset by
                    // ggml_backend_sched_reset before the split): modelled as
                    // not pinned; the host KV views become split inputs.
                    let _ = (kq, sm, kqv);
                    c
                };
                let attn_out = match vrot {
                    Some(r) => self.hadamard(4 * dv_e * h * cur_t, attn_out, r),
                    None => attn_out,
                };
                // Gated attention: sigmoid(gate view of q_full) · attn.
                let attn_out = if q_rows > qw {
                    let gv = self.view(q_full);
                    let gs = self.push(Self::node(Op::Inplace, 4 * dv_e * h * cur_t, &[gv]));
                    self.push(Self::node(
                        Op::Inplace,
                        4 * dv_e * h * cur_t,
                        &[attn_out, gs],
                    ))
                } else {
                    attn_out
                };
                // build_attn_mha expands the attention output: a next
                // recurrent layer's state gather comes right after it.
                if let Some(rs) = self.rs_copy {
                    self.gather_next_recurrent(il, rs);
                }
                let wo = self.lw(il, "attn_output.weight");
                cur = self.matmul(wo, e, cur_t, attn_out);
            } else if b.recurrent || attn_kind == AttentionKind::Recurrent {
                cur = match (mamba2, r_rows) {
                    (Some(m), Some(g)) => self.mamba2_mixer(il, m, g, rs_copy, cur, cur_t),
                    (None, Some(g)) if shortconv => {
                        self.shortconv_mixer(il, g, rs_copy, cur, cur_t)
                    }
                    _ => match self.gdn_dims(il) {
                        Some(g) => self.gdn_mixer(il, g, rs_copy, cur, cur_t),
                        None => self.recurrent_mixer(il, cur, cur_t),
                    },
                };
            }

            if nemotron {
                // nemotron-h (src/models/nemotron-h.cpp): each block is one of
                // mamba2 / attention / FFN, then the residual add; the output
                // rows are selected after the final norm.
                if !has_attn && !b.recurrent && self.has_ffn(il) {
                    if let Some(f) = self.ffn(il, cur, cur_t) {
                        cur = f;
                    }
                }
                inp_l = self.inplace(cur, &[inp_sa]);
                continue;
            }
            let mut res = inp_sa;
            if last && !rows_after_norm && !rows_before_norm {
                // The last layer keeps only the output rows.
                cur = self.other(4 * e * o, &[cur, out_ids]);
                res = self.other(4 * e * o, &[inp_sa, out_ids]);
                cur_t = o;
            }
            // lfm2.cpp adds the residual as the first operand (ggml_add(prev,
            // cur), ggml_add(cur, ffn_out)): the in-place add then reuses
            // the residual's buffer instead of the branch output's.
            let ffn_inp = if residual_first {
                self.inplace(res, &[cur])
            } else {
                self.inplace(cur, &[res])
            };
            let ffn_out = if self.has_ffn(il) {
                let w_norm = self.lw(il, "ffn_norm.weight");
                let fcur = self.norm(ffn_inp, w_norm);
                self.ffn(il, fcur, cur_t)
            } else {
                None
            };
            cur = match ffn_out {
                Some(f) if residual_first => self.inplace(ffn_inp, &[f]),
                Some(f) => self.inplace(f, &[ffn_inp]),
                None => ffn_inp,
            };
            inp_l = cur;
        }

        let cur = if n_main == 0 {
            self.other(4 * e * o, &[inp_l, out_ids])
        } else if rows_before_norm {
            self.nodes[inp_l].output = true; // res->t_h_nextn
            self.other(4 * e * o, &[inp_l, out_ids])
        } else {
            inp_l
        };
        let w_norm = self.weight("output_norm.weight");
        let mut cur = self.norm(cur, w_norm);
        self.nodes[cur].output = true; // res->t_embd (or t_h_nextn)
        if rows_after_norm && n_main > 0 {
            cur = self.other(4 * e * o, &[cur, out_ids]);
            self.nodes[cur].output = true; // res->t_embd
        }
        let wout = match self.weight("output.weight") {
            Some(w) => Some(w),
            None => self.tied_output_buft(self.weight("token_embd.weight")),
        };
        let logits = self.matmul(wout, hp.n_vocab, o, cur);
        self.nodes[logits].output = true; // res->t_logits
    }

    fn tied_output_buft(&self, w: Option<Weight>) -> Option<Weight> {
        let mut w = w?;
        if self.model.hparams.tied_embeddings {
            if let Some(d) = self.placement.layer_device.last().copied().flatten() {
                w.buft = Buft::Dev(d);
            }
        }
        Some(w)
    }

    /// Dense gated FFN, MoE (+ shared experts), or nothing.
    fn has_ffn(&self, il: usize) -> bool {
        let hp = &self.model.hparams;
        let b = &self.model.blocks[il];
        let routed = b.bytes.get(&TensorGroup::FfnRouted).copied().unwrap_or(0) > 0;
        (routed && hp.n_expert > 0) || hp.n_ff.get(il).copied().unwrap_or(0) > 0
    }

    fn ffn(&mut self, il: usize, x: Id, t: u64) -> Option<Id> {
        let hp = &self.model.hparams;
        let e = hp.n_embd;
        let b = &self.model.blocks[il];
        let routed = b.bytes.get(&TensorGroup::FfnRouted).copied().unwrap_or(0) > 0;
        if routed && hp.n_expert > 0 {
            let ne = u64::from(hp.n_expert);
            let nu = u64::from(hp.n_expert_used.max(1));
            let nff = hp.n_ff_exp;
            // build_moe_ffn: router logits, probs (in place), top-k ids,
            // weights = get_rows(probs), experts up/gate/glu/down, weighting,
            // sum of the experts' views.
            let wr = self.lw(il, "ffn_gate_inp.weight");
            let logits = self.matmul(wr, ne, t, x);
            let probs = self.inplace(logits, &[]);
            let argsort = self.other(4 * ne * t, &[probs]);
            let sel = self.view(argsort);
            let wts = self.other(4 * nu * t, &[probs, sel]);
            let (up, gate) = if let Some(wgu) = self.lw(il, "ffn_gate_up_exps.weight") {
                let gu = self.mul_mat_id(Some(wgu), 2 * nff, nu, t, x, sel);
                (gu, None)
            } else {
                let wu = self.lw(il, "ffn_up_exps.weight");
                let wg = self.lw(il, "ffn_gate_exps.weight");
                let up = self.mul_mat_id(wu, nff, nu, t, x, sel);
                let gate = wg.map(|w| self.mul_mat_id(Some(w), nff, nu, t, x, sel));
                (up, gate)
            };
            // Gated experts: swiglu/geglu (not in place); ungated (nemotron-h
            // relu², plain silu): unary ops in place on `up`.
            let glu = match gate {
                Some(g) => self.other(4 * nff * nu * t, &[g, up]),
                None if self.lw(il, "ffn_gate_up_exps.weight").is_some() => {
                    let v0 = self.view(up);
                    let v1 = self.view(up);
                    self.other(4 * nff * nu * t, &[v0, v1])
                }
                None => self.inplace(up, &[]),
            };
            let wd = self.lw(il, "ffn_down_exps.weight");
            let down = self.mul_mat_id(wd, e, nu, t, glu, sel);
            let weighted = self.inplace(down, &[wts]);
            let mut moe = weighted;
            if nu > 1 {
                let v0 = self.view(weighted);
                let v1 = self.view(weighted);
                moe = self.other(4 * e * t, &[v0, v1]);
                for _ in 2..nu {
                    let vi = self.view(weighted);
                    moe = self.inplace(moe, &[vi]);
                }
            }
            if let Some(rs) = self.rs_copy {
                self.gather_next_recurrent(il, rs);
            }
            let shexp = self.lw(il, "ffn_up_shexp.weight").map(|w| w.dims[1]);
            if let Some(nsh) = shexp {
                let sh = self.gated(
                    il,
                    [
                        "ffn_up_shexp.weight",
                        "ffn_gate_shexp.weight",
                        "ffn_down_shexp.weight",
                    ],
                    nsh,
                    x,
                    t,
                );
                moe = self.inplace(moe, &[sh]);
            }
            return Some(moe);
        }
        let nff = hp.n_ff.get(il).copied().unwrap_or(0);
        if nff == 0 {
            return None;
        }
        Some(self.gated(
            il,
            ["ffn_up.weight", "ffn_gate.weight", "ffn_down.weight"],
            nff,
            x,
            t,
        ))
    }

    /// up, gate, glu (not in place), down.
    fn gated(&mut self, il: usize, tails: [&str; 3], nff: u64, x: Id, t: u64) -> Id {
        let e = self.model.hparams.n_embd;
        let wu = self.lw(il, tails[0]);
        let up = self.matmul(wu, nff, t, x);
        let wg = self.lw(il, tails[1]);
        let act = if wg.is_some() {
            let gate = self.matmul(wg, nff, t, x);
            self.other(4 * nff * t, &[gate, up])
        } else {
            self.inplace(up, &[])
        };
        let wd = self.lw(il, tails[2]);
        self.matmul(wd, e, t, act)
    }

    /// MLA attention with the absorbed K projection (src/models/deepseek2.cpp,
    /// `is_mla` branch): q (through the q LoRA if present), the compressed
    /// KV + rope part, q_nope absorbed by wk_b, concatenated Q and K, the
    /// K-only latent cache, attention over it and the wv_b decompression.
    fn mla_attention(&mut self, il: usize, x: Id, t: u64, mask: Id, kidx: Id, pos: Id) -> Id {
        let h = u64::from(self.model.hparams.n_head.get(il).copied().unwrap_or(1));
        let b = &self.model.blocks[il];
        let k_width = b.k_width;
        let kv_lora = self
            .lw(il, "attn_kv_a_norm.weight")
            .map_or(k_width, |w| w.dims[0]);
        let rope = k_width.saturating_sub(kv_lora);
        let v_head = self
            .lw(il, "attn_v_b.weight")
            .map_or(kv_lora, |w| w.dims[1]);
        let kvb = self.kv_backend(il);
        let cells = layer_cells(b.attention, self.layout);
        let ns = self.ctx.n_stream;
        // q
        let q = if let Some(wqa) = self.lw(il, "attn_q_a.weight") {
            let q_lora = wqa.dims[1];
            let qa = self.matmul(Some(wqa), q_lora, t, x);
            let wn = self.lw(il, "attn_q_a_norm.weight");
            let qn = self.norm(qa, wn);
            let wqb = self.lw(il, "attn_q_b.weight");
            let rows = wqb.as_ref().map_or(h * k_width, |w| w.dims[1]);
            self.matmul(wqb, rows, t, qn)
        } else {
            let wq = self.lw(il, "attn_q.weight");
            let rows = wq.as_ref().map_or(h * k_width, |w| w.dims[1]);
            self.matmul(wq, rows, t, x)
        };
        let qv = self.view(q);
        let qn_v = self.view(qv);
        let wkb = self.lw(il, "attn_k_b.weight");
        let mut qabs = Self::node(Op::MulMat, 4 * kv_lora * t * h, &[qn_v]);
        qabs.weight = wkb;
        qabs.batch = t;
        let qabs = self.push(qabs);
        let qpe_v = self.view(qv);
        let mut qpe = Self::node(Op::Inplace, 4 * rope * h * t, &[qpe_v, pos]);
        qpe.forced = None;
        let qpe = self.push(qpe);
        let qabs_v = self.view(qabs);
        let qcur = self.other(4 * k_width * h * t, &[qabs_v, qpe]);
        // compressed kv + rope part
        let wkva = self.lw(il, "attn_kv_a_mqa.weight");
        let kvp = self.matmul(wkva, k_width, t, x);
        let kvc_v = self.view(kvp);
        let kvc_n = self.push(Self::node(Op::Inplace, 4 * kv_lora * t, &[kvc_v]));
        let mut kvc = Self::node(Op::Inplace, 4 * kv_lora * t, &[kvc_n]);
        kvc.weight = self.lw(il, "attn_kv_a_norm.weight");
        let kvc = self.push(kvc);
        let kpe_v = self.view(kvp);
        let kpe = self.push(Self::node(Op::Inplace, 4 * rope * t, &[kpe_v, pos]));
        let kvc_r = self.view(kvc);
        let kcur = self.other(4 * k_width * t, &[kvc_r, kpe]);
        let mut ks = Self::node(Op::Store, 0, &[kcur, kidx]);
        ks.forced = Some(kvb);
        let kstore = self.push(ks);
        let kt = self.flags.cache_type_k;
        let k_view = kt.row_size(k_width).unwrap_or(0) * cells * ns;
        let wvb = self.lw(il, "attn_v_b.weight");
        let merged = if self.ctx.flash_attn {
            let mut fa = Self::node(Op::Other, 4 * kv_lora * h * t, &[qcur, mask, kstore]);
            fa.cache = Some((kvb, k_view));
            if kt != GgmlType::F16 {
                fa.cuda_extra = pad(2 * cells * ns * k_width, 128);
            }
            let fa = self.push(fa);
            let fav = self.view(fa);
            let mut dec = Self::node(Op::MulMat, 4 * v_head * t * h, &[fav]);
            dec.weight = wvb;
            dec.batch = t;
            let dec = self.push(dec);
            let decv = self.view(dec);
            self.other(4 * v_head * h * t, &[decv])
        } else {
            let mut kq = Self::node(Op::Other, 4 * cells * t * h, &[qcur, kstore]);
            kq.cache = Some((kvb, k_view));
            let kq = self.push(kq);
            let sm = self.inplace(kq, &[mask]);
            // V is a view of the latent K cache, not transposed:
            // cont(transpose(v)) in the cache type.
            let mut vt = Self::node(
                Op::Other,
                kt.row_size(kv_lora).unwrap_or(0) * cells * ns,
                &[kstore],
            );
            vt.cache = Some((kvb, k_view));
            let vt = self.push(vt);
            let kqv = self.other(4 * kv_lora * t * h, &[vt, sm]);
            let mut dec = Self::node(Op::MulMat, 4 * v_head * t * h, &[kqv]);
            dec.weight = wvb;
            dec.batch = t;
            let dec = self.push(dec);
            let decv = self.view(dec);
            self.other(4 * v_head * h * t, &[decv])
        };
        self.view(merged)
    }

    /// Gated DeltaNet dimensions (qwen3next / qwen3.5 linear-attention
    /// layers): attn_qkv [E, conv_ch], ssm_out [d_inner, E], ssm_a [H_v],
    /// state n_embd_s = dk·dv·H_v.
    fn gdn_dims(&self, il: usize) -> Option<Gdn> {
        let b = self.model.blocks.get(il)?;
        if !b.recurrent {
            return None;
        }
        let qkv = self.lw(il, "attn_qkv.weight")?;
        let out = self.lw(il, "ssm_out.weight")?;
        let a = self.lw(il, "ssm_a")?;
        let conv = self.lw(il, "ssm_conv1d.weight")?;
        let d_inner = out.dims[0];
        let h_v = a.dims[0].max(1);
        if d_inner == 0 {
            return None;
        }
        let dk = self.model.hparams.n_embd_s / d_inner;
        Some(Gdn {
            d_conv: conv.dims[0].max(1),
            conv_ch: qkv.dims[1],
            d_inner,
            // conv channels = 2·H_k·dk (q, k) + d_inner (v)
            qk: qkv.dims[1].saturating_sub(d_inner) / 2,
            qk_rep: dk * h_v,
            h_v,
            n_seqs: self.ctx.n_seq_max.max(1),
        })
    }

    /// `build_layer_attn_linear` of qwen3next (b11434): conv states and
    /// recurrent state gathered, qkv projection, conv window, ssm_conv +
    /// silu, l2-normed and repeated q/k, beta/alpha gates, the fused
    /// GATED_DELTA_NET op, gated RMS norm with z, out projection.
    fn gdn_mixer(&mut self, il: usize, g: Gdn, rs_copy: Id, x: Id, t: u64) -> Id {
        let e = self.model.hparams.n_embd;
        let kvb = self.kv_backend(il);
        let n_embd_r = self.model.hparams.n_embd_r;
        let n_embd_s = self.model.hparams.n_embd_s;
        self.rs_zero(il);
        let rg = self.other(4 * n_embd_r * g.n_seqs, &[rs_copy]);
        let mut st = Self::node(Op::Store, 0, &[rg]);
        st.forced = Some(kvb);
        self.push(st);
        let wqkv = self.lw(il, "attn_qkv.weight");
        let qkv = self.matmul(wqkv, g.conv_ch, t, x);
        let rv = self.view(rg);
        let qv = self.view(qkv);
        let concat = self.other(4 * ((g.d_conv - 1) * g.n_seqs + t) * g.conv_ch, &[rv, qv]);
        let last = self.view(concat);
        let mut st = Self::node(Op::Store, 0, &[last]);
        st.forced = Some(kvb);
        self.push(st);
        self.rs_zero(il);
        let sg = self.other(4 * n_embd_s * g.n_seqs, &[rs_copy]);
        let mut st = Self::node(Op::Store, 0, &[sg]);
        st.forced = Some(kvb);
        self.push(st);
        let mut conv = Self::node(Op::Other, 4 * g.conv_ch * t, &[concat]);
        conv.weight = self.lw(il, "ssm_conv1d.weight");
        let conv = self.push(conv);
        let silu = self.inplace(conv, &[]);
        let mut qk = [0usize; 2];
        for slot in &mut qk {
            // build_gdn_l2_norm: scale(rms_norm(view)); rms_norm of a view
            // allocates the view's shape [dk, H_k, T] (not the whole conv
            // output), the scale runs in place on it. ggml_repeat_4d to the
            // value heads only when H_k != H_v (qwen3next.cpp).
            let v = self.view(silu);
            let n = self.push(Self::node(Op::Inplace, 4 * g.qk * t, &[v]));
            let sc = self.inplace(n, &[]);
            *slot = if g.qk_rep != g.qk {
                self.other(4 * g.qk_rep * t, &[sc])
            } else {
                sc
            };
        }
        let wba = self.lw(il, "ssm_ba.weight");
        let ba = self.matmul(wba, 2 * g.h_v, t, x);
        let av = self.view(ba);
        let a = self.other(4 * g.h_v * t, &[av]);
        let mut adt = Self::node(Op::Inplace, 4 * g.h_v * t, &[a]);
        adt.weight = self.lw(il, "ssm_dt.bias");
        let adt = self.push(adt);
        let asp = self.inplace(adt, &[]);
        let mut gate = Self::node(Op::Inplace, 4 * g.h_v * t, &[asp]);
        gate.weight = self.lw(il, "ssm_a");
        let gate = self.push(gate);
        let bv = self.view(ba);
        let b = self.other(4 * g.h_v * t, &[bv]);
        let beta = self.inplace(b, &[]);
        let vv = self.view(silu);
        let mut gdn = Self::node(
            Op::Other,
            4 * (g.d_inner * t + n_embd_s * g.n_seqs),
            &[qk[0], qk[1], vv, gate, beta, sg],
        );
        gdn.cache = Some((kvb, 0));
        let gdn = self.push(gdn);
        let sv = self.view(gdn);
        let mut st = Self::node(Op::Store, 0, &[sv]);
        st.forced = Some(kvb);
        self.push(st);
        // The output view [dv, H_v, T] of the fused result (output then
        // state): its rms_norm allocates d_inner·T, not the whole node.
        let ov = self.view(gdn);
        let on = self.push(Self::node(Op::Inplace, 4 * g.d_inner * t, &[ov]));
        let mut om = Self::node(Op::Inplace, 4 * g.d_inner * t, &[on]);
        om.weight = self.lw(il, "ssm_norm.weight");
        let om = self.push(om);
        let wz = self.lw(il, "attn_gate.weight");
        let z = self.matmul(wz, g.d_inner, t, x);
        let zs = self.inplace(z, &[]);
        let gated = self.inplace(om, &[zs]);
        let gv = self.view(gated);
        let wo = self.lw(il, "ssm_out.weight");
        let out = self.matmul(wo, e, t, gv);
        // build_layer_attn_linear returns ggml_reshape_2d(linear_attn_out):
        // a view, so the residual add reuses inpSA's buffer, not the
        // projection's (ggml_gallocr_allocate_node skips view parents).
        self.view(out)
    }

    /// Mamba2 dimensions from the layer's tensors (ssm_conv1d [d_conv,
    /// conv_ch], ssm_norm [d_inner/ng, ng], ssm_a [1, n_head]).
    fn mamba2_dims(&self, il: usize) -> Option<Mamba2> {
        let b = self.model.blocks.get(il)?;
        if !b.recurrent {
            return None;
        }
        let conv = self.lw(il, "ssm_conv1d.weight")?;
        let norm = self.lw(il, "ssm_norm.weight")?;
        let a = self.lw(il, "ssm_a")?;
        self.lw(il, "ssm_in.weight")?;
        let d_inner = norm.dims[0] * norm.dims[1];
        if d_inner == 0 {
            return None;
        }
        let d_state = self.model.hparams.n_embd_s / d_inner;
        Some(Mamba2 {
            d_conv: conv.dims[0].max(1),
            conv_ch: conv.dims[1],
            d_inner,
            d_state,
            n_head: a.dims[1],
            n_seqs: self.ctx.n_seq_max.max(1),
        })
    }

    /// The next layer's conv-state gather (`build_rs` at the start of
    /// `build_mamba2_layer`, src/models/mamba-base.cpp, and of lfm2's
    /// `build_shortconv_block`) only reads the cache and s_copy, so
    /// `ggml_build_forward_expand` places it right after the last node the
    /// current layer expanded explicitly: the state stores of a Mamba2 or
    /// short-conv layer, the expert sum of `build_moe_ffn`, the attention
    /// output of `build_attn_mha` (llama-graph.cpp). Everything the current
    /// layer builds after that point is only reached later, through the
    /// next layer's inputs.
    /// build_rs (llama-graph.cpp) first clears one state in place:
    /// ggml_scale_inplace(view of the cache, 0), a node on the cache's
    /// backend (its view_src's buffer). It comes right before the state
    /// gather, so the gather expands from it onto the cache's device even
    /// after a node that ran elsewhere (experts moved with -ot).
    fn rs_zero(&mut self, il: usize) {
        let kvb = self.kv_backend(il);
        let mut z = Self::node(Op::Store, 0, &[]);
        z.forced = Some(kvb);
        self.push(z);
    }

    fn gather_next_recurrent(&mut self, il: usize, rs_copy: Id) {
        let n_main = self
            .model
            .hparams
            .n_layer
            .saturating_sub(self.model.hparams.n_nextn) as usize;
        if il + 1 < n_main && self.pending_gather.is_none() {
            if let Some(next) = self.mamba2_dims(il + 1) {
                self.pending_gather = Some(self.mamba2_gather(il + 1, next, rs_copy));
            } else if self.shortconv_layer(il + 1) {
                self.pending_gather = Some(self.shortconv_gather(il + 1, rs_copy));
            }
        }
    }

    /// An lfm2 short-conv layer (`build_shortconv_block`, src/models/lfm2.cpp).
    fn shortconv_layer(&self, il: usize) -> bool {
        self.model.blocks.get(il).is_some_and(|b| b.recurrent)
            && self.lw(il, "shortconv.in_proj.weight").is_some()
            && self.lw(il, "shortconv.conv.weight").is_some()
    }

    /// `build_rs` of a short-conv layer: the conv states (n_embd_r per
    /// sequence) gathered by s_copy, on the cache's backend.
    fn shortconv_gather(&mut self, il: usize, rs_copy: Id) -> Id {
        self.rs_zero(il);
        let ns = self.ctx.n_seq_max.max(1);
        let g = self.other(4 * self.model.hparams.n_embd_r * ns, &[rs_copy]);
        let kvb = self.kv_backend(il);
        let mut st = Self::node(Op::Store, 0, &[g]);
        st.forced = Some(kvb);
        self.push(st);
        g
    }

    /// `build_shortconv_block` (src/models/lfm2.cpp): in_proj into b, c, x
    /// chunks, b·x (a new tensor: both are views), the conv state gathered
    /// and concatenated in front, the last d_conv columns stored back,
    /// ssm_conv, c·conv (in place on the conv output), out_proj.
    fn shortconv_mixer(&mut self, il: usize, rows: Id, rs_copy: Id, x: Id, t: u64) -> Id {
        let e = self.model.hparams.n_embd;
        let kvb = self.kv_backend(il);
        let ns = self.ctx.n_seq_max.max(1);
        let w_in = self.lw(il, "shortconv.in_proj.weight");
        let d_in = w_in.as_ref().map_or(3 * e, |w| w.dims[1]);
        let chunk = d_in / 3;
        let bcx = self.matmul(w_in, d_in, t, x);
        let bv = self.view(bcx);
        let xv = self.view(bcx);
        let bx = self.other(4 * chunk * t, &[bv, xv]);
        let bxt = self.view(bx);
        let d_conv = self.model.hparams.n_embd_r / chunk.max(1);
        let rv = self.view(rows);
        let concat = self.other(4 * (d_conv * ns + t) * chunk, &[rv, bxt]);
        let snap = self.view(concat);
        let mut st = Self::node(Op::Store, 0, &[snap]);
        st.forced = Some(kvb);
        self.push(st);
        self.gather_next_recurrent(il, rs_copy);
        let mut conv = Self::node(Op::Other, 4 * chunk * t, &[concat]);
        conv.weight = self.lw(il, "shortconv.conv.weight");
        let conv = self.push(conv);
        let cv = self.view(bcx);
        let y = self.push(Self::node(Op::Inplace, 4 * chunk * t, &[cv, conv]));
        let wo = self.lw(il, "shortconv.out_proj.weight");
        self.matmul(wo, e, t, y)
    }

    fn mamba2_gather(&mut self, il: usize, m: Mamba2, rs_copy: Id) -> Id {
        self.rs_zero(il);
        let g = self.other(4 * (m.d_conv - 1) * m.conv_ch * m.n_seqs, &[rs_copy]);
        let kvb = self.kv_backend(il);
        let mut st = Self::node(Op::Store, 0, &[g]);
        st.forced = Some(kvb);
        self.push(st);
        g
    }

    /// `build_mamba2_layer` (src/models/graph-context-mamba.cpp): in_proj,
    /// conv window concat, ssm_conv + bias + silu, dt + bias, ssm_scan
    /// (y and final states), D skip, gated group norm, out_proj.
    fn mamba2_mixer(&mut self, il: usize, m: Mamba2, r_rows: Id, rs_copy: Id, x: Id, t: u64) -> Id {
        let e = self.model.hparams.n_embd;
        let kvb = self.kv_backend(il);
        let w_in = self.lw(il, "ssm_in.weight");
        let d_in_proj = w_in.as_ref().map_or(0, |w| w.dims[1]);
        let zxbcdt = self.matmul(w_in, d_in_proj, t, x);
        let rv = self.view(r_rows);
        let xbc_v = self.view(zxbcdt);
        let concat = self.other(
            4 * ((m.d_conv - 1) * m.n_seqs + t) * m.conv_ch,
            &[rv, xbc_v],
        );
        let last = self.view(concat);
        let mut st = Self::node(Op::Store, 0, &[last]);
        st.forced = Some(kvb);
        self.push(st);
        let mut conv = Self::node(Op::Other, 4 * m.conv_ch * t, &[concat]);
        conv.weight = self.lw(il, "ssm_conv1d.weight");
        let conv = self.push(conv);
        let mut bias = Self::node(Op::Inplace, 4 * m.conv_ch * t, &[conv]);
        bias.weight = self.lw(il, "ssm_conv1d.bias");
        let bias = self.push(bias);
        let silu = self.inplace(bias, &[]);
        let dt_v = self.view(zxbcdt);
        // dt = ggml_add(ggml_cont(dt), ssm_dt_b): the add runs in place on
        // the cont (no view in between; build_mamba2_layer).
        let dt = self.other(4 * m.n_head * t, &[dt_v]);
        let mut dtb = Self::node(Op::Inplace, 4 * m.n_head * t, &[dt]);
        dtb.weight = self.lw(il, "ssm_dt.bias");
        let dtb = self.push(dtb);
        let xs = self.view(silu);
        let bs = self.view(silu);
        let cs = self.view(silu);
        let mut scan = Self::node(
            Op::Other,
            4 * (m.d_inner * t + m.d_state * m.d_inner * m.n_seqs),
            &[xs, dtb, bs, cs, rs_copy],
        );
        scan.weight = self.lw(il, "ssm_a");
        scan.cache = Some((kvb, 4 * m.d_state * m.d_inner * m.n_seqs));
        let scan = self.push(scan);
        let sv = self.view(scan);
        let mut st = Self::node(Op::Store, 0, &[sv]);
        st.forced = Some(kvb);
        self.push(st);
        self.gather_next_recurrent(il, rs_copy);
        let zv = self.view(zxbcdt);
        let z = self.other(4 * m.d_inner * t, &[zv]);
        let xv = self.view(silu);
        let mut xd = Self::node(Op::Inplace, 4 * m.d_inner * t, &[xv]);
        xd.weight = self.lw(il, "ssm_d");
        let xd = self.push(xd);
        // y = ggml_add(view(y_ssm), x·D) is [d_inner, T] (the scan's view
        // leaves out the final states): ggml-alloc cannot reuse a view, so
        // the add takes over x·D, which has the same layout.
        let yv = self.view(scan);
        let y = self.push(Self::node(Op::Inplace, 4 * m.d_inner * t, &[yv, xd]));
        let zr = self.view(z);
        let g = self.other(4 * m.d_inner * t, &[zr, y]);
        let gv = self.view(g);
        let gn = self.inplace(gv, &[]);
        let mut gm = Self::node(Op::Inplace, 4 * m.d_inner * t, &[gn]);
        gm.weight = self.lw(il, "ssm_norm.weight");
        let gm = self.push(gm);
        let gmv = self.view(gm);
        let wo = self.lw(il, "ssm_out.weight");
        self.matmul(wo, e, t, gmv)
    }

    /// Recurrent mixer (Mamba2 / Gated DeltaNet / short conv / RWKV),
    /// approximated: every recurrent-group matmul's output alive at once,
    /// a conv window, the state read and written, then the output projection.
    fn recurrent_mixer(&mut self, il: usize, x: Id, t: u64) -> Id {
        let hp = &self.model.hparams;
        let e = hp.n_embd;
        let rows: Vec<(usize, u64)> = self
            .lookup
            .layers
            .get(il)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter(|(tail, _)| {
                tail.ends_with(".weight")
                    && (tail.starts_with("ssm_in")
                        || tail.starts_with("attn_qkv")
                        || tail.starts_with("attn_gate")
                        || tail.starts_with("shortconv.in_proj")
                        || tail.starts_with("ssm_alpha")
                        || tail.starts_with("ssm_beta"))
            })
            .filter_map(|&(_, pos)| {
                let w = self.weight_at(pos)?;
                (w.dims[1] > 1).then_some((pos, w.dims[1]))
            })
            .collect();
        let mut cur = x;
        let mut outs = Vec::new();
        for (pos, r) in rows {
            let w = self.weight_at(pos);
            outs.push(self.matmul(w, r, t, x));
        }
        let width: u64 = outs
            .iter()
            .map(|&o| self.nodes[o].size / 4 / t.max(1))
            .sum();
        let ns = self.ctx.n_seq_max.max(1);
        let kvb = self.kv_backend(il);
        let state = 4 * (hp.n_embd_r + hp.n_embd_s) * ns;
        let mut srcs = outs.clone();
        srcs.push(cur);
        let mut conv = Self::node(Op::Other, 4 * width * t + 4 * hp.n_embd_r * ns, &srcs);
        conv.cache = Some((kvb, state));
        let conv = self.push(conv);
        let scan = self.other(4 * width * t + 4 * hp.n_embd_s * ns, &[conv]);
        let mut st = Self::node(Op::Store, 0, &[scan]);
        st.forced = Some(kvb);
        let st = self.push(st);
        cur = self.other(4 * width.min(4 * e).max(e) * t, &[scan, st]);
        let wo = self
            .lw(il, "ssm_out.weight")
            .or_else(|| self.lw(il, "attn_output.weight"))
            .or_else(|| self.lw(il, "shortconv.out_proj.weight"));
        self.matmul(wo, e, t, cur)
    }
}

#[derive(Clone, Copy, Debug)]
struct Gdn {
    d_conv: u64,
    conv_ch: u64,
    d_inner: u64,
    /// q/k width as convolved: H_k·dk.
    qk: u64,
    /// q/k width after repeating to the value heads: H_v·dk.
    qk_rep: u64,
    h_v: u64,
    n_seqs: u64,
}

#[derive(Clone, Copy, Debug)]
struct Mamba2 {
    d_conv: u64,
    conv_ch: u64,
    d_inner: u64,
    d_state: u64,
    n_head: u64,
    n_seqs: u64,
}

/// Allocation size of a weight copied into a backend's compute buffer
/// (op offload): CUDA row padding included.
fn weight_copy_size(w: &Weight, kind: Option<BackendKind>) -> u64 {
    let mut size = w.nbytes;
    if let Some(rp) = kind.and_then(|k| k.quant_row_padding()) {
        if w.ty.is_quantized() && w.dims[0] % rp != 0 {
            size += w.ty.row_size(rp - w.dims[0] % rp).unwrap_or(0);
        }
    }
    size
}

/// ggml-alloc's dynamic allocator (`ggml_dyn_tallocr`): best fit among the
/// free blocks except the last, else the (unbounded) last block; freed
/// blocks merge with their neighbours.
struct DynAlloc {
    align: u64,
    free: Vec<(u64, u64)>,
    max: u64,
}

impl DynAlloc {
    fn new(align: u64) -> DynAlloc {
        DynAlloc {
            align,
            free: vec![(0, u64::MAX / 2)],
            max: 0,
        }
    }

    fn alloc(&mut self, size: u64) -> u64 {
        let size = pad(size, self.align);
        let n = self.free.len();
        let mut best: Option<usize> = None;
        let mut best_size = u64::MAX;
        for i in 0..n - 1 {
            let s = self.free[i].1;
            if s >= size && s <= best_size {
                best = Some(i);
                best_size = s;
            }
        }
        let i = best.unwrap_or(n - 1);
        let off = self.free[i].0;
        self.free[i].0 += size;
        self.free[i].1 -= size;
        if self.free[i].1 == 0 && i != n - 1 {
            self.free.remove(i);
        }
        self.max = self.max.max(off + size);
        off
    }

    fn release(&mut self, off: u64, size: u64) {
        let size = pad(size, self.align);
        if size == 0 {
            return;
        }
        for i in 0..self.free.len() {
            let (bo, bs) = self.free[i];
            if bo + bs == off {
                self.free[i].1 += size;
                if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0
                {
                    self.free[i].1 += self.free[i + 1].1;
                    self.free.remove(i + 1);
                }
                return;
            }
            if off + size == bo {
                self.free[i].0 = off;
                self.free[i].1 += size;
                if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == off {
                    self.free[i - 1].1 += self.free[i].1;
                    self.free.remove(i);
                }
                return;
            }
        }
        let pos = self
            .free
            .iter()
            .position(|&(bo, _)| bo > off)
            .unwrap_or(self.free.len());
        self.free.insert(pos, (off, size));
    }
}

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
    // llama_context::resolve_fused_ops: with -fa auto, a probe graph (one
    // token per sequence) is reserved and flash attention is turned off if
    // the scheduler put any FLASH_ATTN_EXT node on another device than its
    // layer's (e.g. -nkvo when the neighbouring ops land on the CPU). The
    // cache was already created for FA (V not transposed). Only -nkvo can
    // move it: otherwise the K/V stores just before the FA node are pinned
    // to the layer's device and the scheduler's first (GPU, downward) pass
    // gives the FA node that device; skipping the probe keeps one
    // evaluation near 1 ms.
    let resolved;
    let fa_ctx;
    let input = if input.flags.flash_attn == FlashAttn::Auto
        && input.ctx.flash_attn
        && input.flags.no_kv_offload
    {
        let s = input.ctx.n_seq_max.max(1);
        if simulate(input, &lookup, s, s, false).fa_off_device {
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
    );
    let s = input.ctx.n_seq_max;
    // The generation graph (bs = n_seq_max ≤ n_tokens) only matters for its
    // split count: every activation scales with the batch, so its buffers
    // never exceed the prompt graph's.
    let tg = simulate(input, &lookup, s, s, false);
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
    global: HashMap<&'a str, usize>,
    layers: Vec<Vec<(&'a str, usize)>>,
}

impl<'a> Lookup<'a> {
    pub fn new(model: &'a Model) -> Lookup<'a> {
        let mut global = HashMap::with_capacity(model.tensors.len());
        let mut layers: Vec<Vec<(&str, usize)>> = vec![Vec::new(); model.blocks.len()];
        for (i, t) in model.tensors.iter().enumerate() {
            let name = model.profile.tensors[t.index].name.as_str();
            global.insert(name, i);
            if let Some(rest) = name.strip_prefix("blk.") {
                if let Some((num, tail)) = rest.split_once('.') {
                    if let Ok(il) = num.parse::<usize>() {
                        if il >= layers.len() {
                            layers.resize(il + 1, Vec::new());
                        }
                        layers[il].push((tail, i));
                    }
                }
            }
        }
        Lookup { global, layers }
    }
}

fn simulate(input: &ComputeInput, lookup: &Lookup, t: u64, o: u64, alloc: bool) -> ComputeResult {
    let pl = input.placement;
    let pp_copies = if pipeline_parallel(input) {
        SCHED_MAX_COPIES
    } else {
        1
    };
    let n_dev = pl.model_devices.len();
    let cpu = n_dev;
    let backend_of_dev: FastMap<usize, usize> = pl
        .model_devices
        .iter()
        .enumerate()
        .map(|(i, &d)| (d, i))
        .collect();
    let mut b = Builder {
        model: input.model,
        flags: input.flags,
        ctx: input.ctx,
        layout: input.layout,
        placement: pl,
        backend_of_dev,
        cpu,
        lookup,
        pending_gather: None,
        rs_copy: None,
        nodes: Vec::new(),
    };
    b.build(t, o);
    let nodes = std::mem::take(&mut b.nodes);
    let kinds: Vec<BackendKind> = pl
        .model_devices
        .iter()
        .map(|&d| input.devices[d].kind)
        .collect();

    // --- pass 1: pre-assigned nodes (ggml_backend_sched_backend_id_from_cur)
    let mut be: Vec<Option<usize>> = vec![None; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        be[i] = if n.op == Op::Input {
            Some(cpu)
        } else if let Some(f) = n.forced {
            Some(f)
        } else if let Some(w) = &n.weight {
            let wb = b.backend_of_buft(w.buft);
            // Op offload: a host weight's MUL_MAT(_ID) moves to the first GPU
            // backend whose offload_op accepts the batch (CUDA: ≥ 32).
            let host = matches!(w.buft, Buft::Host(_) | Buft::Cpu | Buft::Mapped);
            let eligible = wb == cpu
                && host
                && input.flags.op_offload
                && matches!(n.op, Op::MulMat | Op::MulMatId);
            let offload = if eligible {
                kinds
                    .iter()
                    .position(|k| k.op_offload_min_batch().is_some_and(|m| n.batch >= m))
            } else {
                None
            };
            Some(offload.unwrap_or(wb))
        } else {
            None
        };
        if matches!(n.op, Op::View) {
            be[i] = None;
        }
    }
    // Views follow their source (pass 4); resolve after expansion.
    // --- pass 2: expand GPU assignments down then up, then everything.
    let is_view = |i: usize| nodes[i].op == Op::View;
    let expand =
        |be: &mut Vec<Option<usize>>, order: &mut dyn Iterator<Item = usize>, gpu_only: bool| {
            let mut cur: Option<usize> = None;
            for i in order {
                if is_view(i) || nodes[i].op == Op::Input {
                    continue;
                }
                match be[i] {
                    Some(x) => {
                        cur = if gpu_only && x == cpu { None } else { Some(x) };
                    }
                    None => {
                        if let Some(c) = cur {
                            be[i] = Some(c);
                        }
                    }
                }
            }
        };
    let n = nodes.len();
    expand(&mut be, &mut (0..n), true);
    expand(&mut be, &mut (0..n).rev(), true);
    expand(&mut be, &mut (0..n), false);
    expand(&mut be, &mut (0..n).rev(), false);
    for (i, b) in be.iter_mut().enumerate() {
        if b.is_none() && !is_view(i) {
            *b = Some(cpu);
        }
    }
    // Views: backend of the viewed tensor.
    for i in 0..n {
        if is_view(i) {
            let mut s = nodes[i].srcs[0];
            while is_view(s) {
                s = nodes[s].srcs[0];
            }
            be[i] = be[s];
        }
    }
    let bk = |i: usize| be[i].unwrap_or(cpu);
    let fa_off_device = nodes
        .iter()
        .enumerate()
        .any(|(i, nd)| nd.fa_layer.is_some_and(|lb| bk(i) != lb));

    // --- pass 5: splits and their inputs.
    // A src is used directly if it lives on the node's backend, or it is a
    // weight in a buffer the backend can read (host bufts for the CPU).
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Src {
        Node(Id),
        Weight(Id),
        Cache(Id),
        CacheV(Id),
    }
    let mut split_of = vec![0u32; n];
    let mut n_splits = 0u32;
    let mut cur_b: Option<usize> = None;
    let mut split_has_inputs = false;
    // Copies per (src, backend), created in the split that first needs them.
    let mut copies: FastMap<(Src, usize), (u64, u32)> = FastMap::default();
    let mut copy_users: FastMap<(Src, usize), Vec<Id>> = FastMap::default();
    let mut copy_order: Vec<(Src, usize)> = Vec::new();
    for i in 0..n {
        let nd = &nodes[i];
        if nd.op == Op::Input || is_view(i) {
            continue;
        }
        let nb = bk(i);
        let mut need_new = false;
        if Some(nb) == cur_b && split_has_inputs {
            if let Some(w) = &nd.weight {
                let wb = b.backend_of_buft(w.buft);
                if wb != nb && !(nb == cpu && w.buft.device().is_none()) {
                    need_new = true;
                }
            }
        }
        if Some(nb) != cur_b || need_new {
            n_splits += 1;
            cur_b = Some(nb);
            split_has_inputs = false;
        }
        split_of[i] = n_splits;
        let mut add_copy = |key: (Src, usize), size: u64, has: &mut bool| {
            copies.entry(key).or_insert_with(|| {
                copy_order.push(key);
                (size, n_splits)
            });
            copy_users.entry(key).or_default().push(i);
            *has = true;
        };
        // The cache views come first among the op's sources (flash_attn_ext
        // and mul_mat(k, q) take K first, ssm_scan its state): split inputs
        // are created in source order (ggml_backend_sched_split_graph).
        if let Some((cb, bytes)) = nd.cache {
            if cb != nb && bytes > 0 {
                add_copy((Src::Cache(i), nb), bytes, &mut split_has_inputs);
            }
            if cb != nb && nd.cache_v > 0 {
                add_copy((Src::CacheV(i), nb), nd.cache_v, &mut split_has_inputs);
            }
        }
        for &s in &nd.srcs {
            let mut base = s;
            while is_view(base) {
                base = nodes[base].srcs[0];
            }
            if bk(base) != nb {
                add_copy((Src::Node(s), nb), nodes[s].size, &mut split_has_inputs);
            }
        }
        if let Some(w) = &nd.weight {
            let wb = b.backend_of_buft(w.buft);
            let readable = wb == nb || (nb == cpu && w.buft.device().is_none());
            if !readable {
                let kind = (nb < cpu).then(|| kinds[nb]);
                add_copy(
                    (Src::Weight(i), nb),
                    weight_copy_size(w, kind),
                    &mut split_has_inputs,
                );
            }
        }
    }

    if !alloc {
        return ComputeResult {
            device_bytes: vec![0; n_dev],
            cpu_bytes: 0,
            splits_pp: n_splits,
            splits_tg: n_splits,
            nodes_pp: n,
            fa_off_device,
        };
    }

    // --- allocation order (graph_copy): per split, its new input copies,
    // then its nodes. Graph inputs are allocated first (gallocr allocates
    // INPUT tensors while counting children).
    #[derive(Clone, Copy)]
    enum Ev {
        Copy((Src, usize)),
        Node(Id),
    }
    let mut by_split: FastMap<u32, Vec<(Src, usize)>> = FastMap::default();
    // Split inputs in the order the split's nodes reach them (pass 5).
    let keys: Vec<(u32, (Src, usize))> = copy_order.iter().map(|k| (copies[k].1, *k)).collect();
    for (s, k) in keys {
        by_split.entry(s).or_default().push(k);
    }
    let mut order: Vec<Ev> = Vec::with_capacity(n + copies.len());
    let mut last_split = 0;
    for i in 0..n {
        if nodes[i].op == Op::Input || is_view(i) {
            continue;
        }
        let s = split_of[i];
        if s != last_split {
            if let Some(ks) = by_split.get(&s) {
                order.extend(ks.iter().map(|k| Ev::Copy(*k)));
            }
            last_split = s;
        }
        order.push(Ev::Node(i));
    }

    // Children counts: views pass uses to their base; copies are consumers of
    // their source; a node using a copy consumes the copy instead.
    let base_of = |mut i: usize| {
        while is_view(i) {
            i = nodes[i].srcs[0];
        }
        i
    };
    let mut children = vec![0u32; n];
    let mut copy_children: FastMap<(Src, usize), u32> = FastMap::default();
    for ev in &order {
        match *ev {
            Ev::Copy(k) => {
                if let Src::Node(s) = k.0 {
                    children[base_of(s)] += 1;
                }
                copy_children.insert(k, copy_users.get(&k).map_or(0, |v| v.len() as u32));
            }
            Ev::Node(i) => {
                let nb = bk(i);
                for &s in &nodes[i].srcs {
                    if !copies.contains_key(&(Src::Node(s), nb)) || bk(base_of(s)) == nb {
                        children[base_of(s)] += 1;
                    }
                }
            }
        }
    }

    let align = |backend: usize| {
        if backend == cpu {
            HOST_ALIGNMENT
        } else {
            kinds[backend].alignment()
        }
    };
    let debug = std::env::var_os("GGPLAN_ALLOC_DEBUG").is_some();
    let mut allocs: Vec<DynAlloc> = (0..=n_dev).map(|x| DynAlloc::new(align(x))).collect();
    let mut where_: Vec<Option<(usize, u64, u64)>> = vec![None; n];
    // Graph inputs are leafs: allocated before any node, in the order the
    // graph first reaches them (ggml_gallocr_alloc_graph_impl, leafs loop).
    // Rank: the first consumer's position, or the input's own position when
    // nothing consumes it (unused select branches are leafs too).
    let mut rank: Vec<(usize, usize)> = Vec::new();
    let mut first_use = vec![usize::MAX; n];
    for (pos, ev) in order.iter().enumerate() {
        let Ev::Node(i) = *ev else { continue };
        for &s in &nodes[i].srcs {
            let p = base_of(s);
            if nodes[p].op == Op::Input && first_use[p] == usize::MAX {
                first_use[p] = pos;
            }
        }
    }
    let mut pos_of = vec![usize::MAX; n];
    for (pos, ev) in order.iter().enumerate() {
        if let Ev::Node(i) = ev {
            pos_of[*i] = pos;
        }
    }
    for i in 0..n {
        if nodes[i].op == Op::Input {
            let r = if first_use[i] != usize::MAX {
                first_use[i]
            } else {
                // Position of the next graph node created after it.
                (i..n)
                    .find_map(|j| (pos_of[j] != usize::MAX).then_some(pos_of[j]))
                    .unwrap_or(usize::MAX)
            };
            rank.push((r, i));
        }
    }
    rank.sort();
    if pp_copies > 1 {
        // ggml_backend_sched_split_graph, pass 6 and graph_copy leafs: every
        // graph input and every split input exists n_copies times, flagged
        // input+output: allocated first, never freed.
        for &(_, p) in &rank {
            for _ in 0..pp_copies {
                allocs[cpu].alloc(nodes[p].size);
            }
        }
        let mut keys: Vec<_> = copies.iter().collect();
        keys.sort_by_key(|(k, v)| (v.1, k.1));
        for (k, (size, _)) in keys {
            for _ in 0..pp_copies {
                allocs[k.1].alloc(*size);
            }
        }
    } else {
        for (_, p) in rank {
            let off = allocs[cpu].alloc(nodes[p].size);
            where_[p] = Some((cpu, off, nodes[p].size));
        }
    }
    let mut copy_at: FastMap<(Src, usize), (u64, u64)> = FastMap::default();
    let node_size = |i: usize, backend: usize| {
        let nd = &nodes[i];
        if backend < cpu && kinds[backend] == BackendKind::Cuda {
            nd.size + nd.cuda_extra
        } else {
            nd.size
        }
    };
    let release = |allocs: &mut Vec<DynAlloc>, w: &mut Vec<Option<(usize, u64, u64)>>, i: usize| {
        if let Some((bkd, off, size)) = w[i].take() {
            allocs[bkd].release(off, size);
        }
    };
    for ev in &order {
        match *ev {
            Ev::Copy(k) => {
                let (size, _) = copies[&k];
                if pp_copies == 1 {
                    let off = allocs[k.1].alloc(size);
                    copy_at.insert(k, (off, size));
                }
                if let Src::Node(s) = k.0 {
                    let bs = base_of(s);
                    children[bs] = children[bs].saturating_sub(1);
                    if children[bs] == 0 {
                        release(&mut allocs, &mut where_, bs);
                    }
                }
            }
            Ev::Node(i) => {
                let nb = bk(i);
                let nd = &nodes[i];
                if nd.op != Op::Store {
                    let size = node_size(i, nb);
                    // In place: take over src[0]'s memory if it has no other
                    // consumer, lives on this backend and has the same size.
                    let mut took = false;
                    // ggml_gallocr_allocate_node: a parent that is a view is
                    // never "own" (views are not allocated), so ops on views
                    // never run in place; inputs and outputs are not reused.
                    if nd.op == Op::Inplace {
                        for &p in &nd.srcs {
                            // A split-input copy is an own tensor (even of a
                            // view): reusable when this node is its last user.
                            let key = (Src::Node(p), nb);
                            if bk(base_of(p)) != nb {
                                if copy_children.get(&key) == Some(&1) {
                                    if let Some(&(off, csize)) = copy_at.get(&key) {
                                        if csize == size {
                                            copy_at.remove(&key);
                                            where_[i] = Some((nb, off, size));
                                            took = true;
                                            break;
                                        }
                                    }
                                }
                                continue;
                            }
                            if is_view(p) {
                                continue;
                            }
                            if children[p] == 1
                                && nodes[p].op != Op::Input
                                && !nodes[p].output
                                && where_[p].is_some_and(|(pb, _, ps)| pb == nb && ps == size)
                            {
                                where_[i] = where_[p].take();
                                took = true;
                                break;
                            }
                        }
                    }
                    if !took {
                        let before = allocs[nb].max;
                        let off = allocs[nb].alloc(size);
                        where_[i] = Some((nb, off, size));
                        if debug && allocs[nb].max > before {
                            let mut live: Vec<String> = where_
                                .iter()
                                .enumerate()
                                .filter_map(|(j, w)| {
                                    w.filter(|x| x.0 == nb).map(|(_, o, sz)| {
                                        (
                                            o,
                                            format!(
                                                "#{j}:{:?}@{:x}+{:.2}",
                                                nodes[j].op,
                                                o,
                                                sz as f64 / 1048576.0
                                            ),
                                        )
                                    })
                                })
                                .map(|(_, s)| s)
                                .collect();
                            live.sort();
                            eprintln!(
                                "max[{nb}] = {:.2} MB after #{i} {:?}: {}",
                                allocs[nb].max as f64 / 1048576.0,
                                nd.op,
                                live.join(" | ")
                            );
                        }
                    }
                }
                for &s in &nd.srcs {
                    let key = (Src::Node(s), nb);
                    if bk(base_of(s)) != nb && copies.contains_key(&key) {
                        if let Some(c) = copy_children.get_mut(&key) {
                            *c = c.saturating_sub(1);
                            if *c == 0 {
                                if let Some((off, size)) = copy_at.remove(&key) {
                                    allocs[nb].release(off, size);
                                }
                            }
                        }
                        continue;
                    }
                    let p = base_of(s);
                    children[p] = children[p].saturating_sub(1);
                    if children[p] == 0 && !nodes[p].output {
                        release(&mut allocs, &mut where_, p);
                    }
                }
                for key in [
                    (Src::Weight(i), nb),
                    (Src::Cache(i), nb),
                    (Src::CacheV(i), nb),
                ] {
                    if let Some((off, size)) = copy_at.remove(&key) {
                        allocs[nb].release(off, size);
                    }
                }
            }
        }
    }

    ComputeResult {
        device_bytes: allocs[..n_dev].iter().map(|a| a.max).collect(),
        cpu_bytes: allocs[cpu].max,
        splits_pp: n_splits,
        splits_tg: n_splits,
        nodes_pp: n,
        fa_off_device,
    }
}
