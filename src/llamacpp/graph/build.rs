//! The worst-case graph as the model builders make it (`src/models/*.cpp`,
//! `llm_graph_context::build_*`), node by node with F32 activation sizes.

use super::*;

pub(super) struct Builder<'a> {
    pub(super) model: &'a Model,
    pub(super) flags: &'a Flags,
    pub(super) ctx: &'a CtxParams,
    pub(super) layout: &'a KvLayout,
    pub(super) placement: &'a Placement,
    /// Backend index of a hardware device (model devices first, CPU last).
    pub(super) backend_of_dev: FastMap<usize, usize>,
    pub(super) cpu: usize,
    pub(super) lookup: &'a Lookup<'a>,
    /// The next Mamba2 layer's conv-state gather, built early: llama.cpp
    /// expands it before the current layer's output part (graph order).
    pub(super) pending_gather: Option<Id>,
    /// The s_copy input of hybrid/recurrent models (llm_graph_input_rs).
    pub(super) rs_copy: Option<Id>,
    /// s_copy_main / s_copy_tail views of rs_copy (shared by all layers).
    pub(super) rs_views: Option<(Id, Id)>,
    /// The graph builders' own backend pins
    /// (`ggml_backend_sched_set_tensor_backend`) are still in force when the
    /// graph is split. They are for the generation graph and the FA probe
    /// (`graph_reserve(.., split_only)` → `ggml_backend_sched_split_graph`),
    /// not for the dry run's prompt graph: `ggml_backend_sched_reserve_size`
    /// starts with `ggml_backend_sched_reset`, which clears every pin the
    /// builder made (hv_tensor_backend_ids = -1).
    pub(super) user_pins: bool,
    pub(super) nodes: Vec<Node>,
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
            srcs: Srcs::from_slice(srcs),
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

    /// A view with its own ggml_nbytes (what a split-input copy of it
    /// allocates: ggml_dup_tensor_layout keeps the view's strides).
    fn view_sized(&mut self, src: Id, size: u64) -> Id {
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
        let mut srcs = Srcs::new();
        srcs.push(src);
        srcs.extend_from_slice(others);
        self.push(Self::node(Op::Inplace, size, &srcs))
    }

    /// build_attn_mha, non-FA path: with `-nkvo` the merged attention
    /// output (`ggml_cont_2d` of kqv) is pinned to the CPU backend
    /// ("all nodes between the KV store and the attention output are run on
    /// the CPU"). The pin only stops the GPU expansion there: kq / softmax /
    /// kqv still follow their neighbours, so a layer gains a CPU split for
    /// the cont and a GPU split after it (when pins are in force).
    fn pin_kqv_out(&mut self, c: Id) {
        if self.flags.no_kv_offload && self.user_pins {
            self.nodes[c].forced = Some(self.cpu);
        }
    }

    fn other(&mut self, size: u64, srcs: &[Id]) -> Id {
        self.push(Self::node(Op::Other, size, srcs))
    }

    pub(super) fn backend_of_buft(&self, b: Buft) -> usize {
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

    pub(super) fn build(&mut self, t: u64, o: u64) {
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
                // The cache stores are not sources: the attention reads
                // the K/V views of the cache (`cache` / `cache_v`), so a
                // store on another backend is no split input (not even a
                // zero-size one, which ggml-alloc would not see).
                let _ = (k_store, v_store);
                let deps = [q, mask];
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
                    // build_attn_mha with a cache made for FA (V not
                    // transposed; -fa auto turned off later):
                    // v = ggml_cont(ggml_transpose(v)), kqv's src0, so it
                    // is visited (allocated) before kq.
                    let v_cont = (!self.ctx.v_trans).then(|| {
                        let mut vc = Self::node(Op::Other, v_view_bytes, &[]);
                        vc.cache = Some((kvb, v_view_bytes));
                        self.push(vc)
                    });
                    let mut kq = Self::node(Op::Other, 4 * cells * cur_t * h, &deps);
                    kq.cache = Some((kvb, k_view_bytes));
                    let kq = self.push(kq);
                    // ggml_soft_max_add_sinks: gpt-oss's attn_sinks weight
                    // is a source of the softmax, so the scheduler puts it
                    // on the sinks' backend (backend_id_from_cur, 1.wgt).
                    let mut sm = Self::node(Op::Inplace, 4 * cells * cur_t * h, &[kq, mask]);
                    sm.weight = self.lw(il, "attn_sinks.weight");
                    let sm = self.push(sm);
                    let kqv = match v_cont {
                        Some(vc) => self.other(4 * dv_e * h * cur_t, &[vc, sm]),
                        None => {
                            let mut kqv = Self::node(Op::Other, 4 * dv_e * h * cur_t, &[sm]);
                            kqv.cache = Some((kvb, v_view_bytes));
                            self.push(kqv)
                        }
                    };
                    let pv = self.view(kqv);
                    let c = self.other(4 * dv_e * h * cur_t, &[pv]);
                    self.pin_kqv_out(c);
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
        // lfm2 loads its output norm as LLM_TENSOR_OUTPUT_NORM_LFM2, named
        // "token_embd_norm" (llama-arch.cpp): an output-layer weight, so the
        // final norm's MUL runs on the output device.
        let w_norm = self.weight("output_norm.weight").or_else(|| {
            residual_first
                .then(|| self.weight("token_embd_norm.weight"))
                .flatten()
        });
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
            // exp_probs_b: the selection scores are ggml_add(probs, bias),
            // a new tensor (probs is still read by the weights' get_rows).
            let selection = match self.lw(il, "exp_probs_b.bias") {
                Some(b) => {
                    let mut n = Self::node(Op::Inplace, 4 * ne * t, &[probs]);
                    n.weight = Some(b);
                    self.push(n)
                }
                None => probs,
            };
            let argsort = self.other(4 * ne * t, &[selection]);
            let sel = self.view(argsort);
            let mut wts = self.other(4 * nu * t, &[probs, sel]);
            let (norm_w, scale_w) = self.lookup.moe_ops;
            if norm_w {
                // sum_rows of the reshaped weights, clamp (in place), div:
                // the div's parents are a view and the [1, T] sum, so it
                // allocates; the result is reshaped back (a view).
                let wv = self.view(wts);
                let sum = self.other(4 * t, &[wv]);
                let clamp = self.inplace(sum, &[]);
                let div = self.push(Self::node(Op::Inplace, 4 * nu * t, &[wv, clamp]));
                wts = self.view(div);
            }
            if scale_w {
                // ggml_scale: in place unless its input is that reshape.
                wts = self.push(Self::node(Op::Inplace, 4 * nu * t, &[wts]));
            }
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
        // V is the first kv_lora columns of the same latent rows
        // (ggml_view_4d of the K view, llama_kv_cache::get_v with MLA): its
        // ggml_nbytes ends after the last row's kv_lora part, and the
        // scheduler's split-input copy keeps that layout
        // (ggml_dup_tensor_layout).
        let v_view = k_view
            .saturating_sub(kt.row_size(k_width).unwrap_or(0))
            .saturating_add(kt.row_size(kv_lora).unwrap_or(0));
        let wvb = self.lw(il, "attn_v_b.weight");
        let merged = if self.ctx.flash_attn {
            let mut fa = Self::node(Op::Other, 4 * kv_lora * h * t, &[qcur, mask]);
            fa.cache = Some((kvb, k_view));
            // ggml_flash_attn_ext(q, k, v): the V view is a second split
            // input when the cache lives elsewhere (-nkvo).
            fa.cache_v = v_view;
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
            let _ = kstore;
            let mut kq = Self::node(Op::Other, 4 * cells * t * h, &[qcur]);
            kq.cache = Some((kvb, k_view));
            let kq = self.push(kq);
            let sm = self.inplace(kq, &[mask]);
            // V is a view of the latent K cache, not transposed:
            // cont(transpose(v)) in the cache type.
            let mut vt = Self::node(
                Op::Other,
                kt.row_size(kv_lora).unwrap_or(0) * cells * ns,
                &[],
            );
            vt.cache = Some((kvb, v_view));
            let vt = self.push(vt);
            let kqv = self.other(4 * kv_lora * t * h, &[vt, sm]);
            let mut dec = Self::node(Op::MulMat, 4 * v_head * t * h, &[kqv]);
            dec.weight = wvb;
            dec.batch = t;
            let dec = self.push(dec);
            let decv = self.view(dec);
            let c = self.other(4 * v_head * h * t, &[decv]);
            self.pin_kqv_out(c);
            c
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
        let rg = self.rs_gather(il, 4 * n_embd_r * g.n_seqs, rs_copy);
        let wqkv = self.lw(il, "attn_qkv.weight");
        let qkv = self.matmul(wqkv, g.conv_ch, t, x);
        let rv = self.view(rg);
        let qv = self.view(qkv);
        let concat = self.other(4 * ((g.d_conv - 1) * g.n_seqs + t) * g.conv_ch, &[rv, qv]);
        let last = self.view(concat);
        let mut st = Self::node(Op::Store, 0, &[last]);
        st.forced = Some(kvb);
        self.push(st);
        let sg = self.rs_gather(il, 4 * n_embd_s * g.n_seqs, rs_copy);
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

    /// llm_graph_input_rs's s_copy_main (the first n_seqs ids) and
    /// s_copy_tail (the rest: none in a reserve ubatch) views of s_copy:
    /// made once (build_rs_inp_impl), so every layer shares one split-input
    /// copy of each per backend.
    fn rs_copy_views(&mut self, rs_copy: Id, n_seqs: u64) -> (Id, Id) {
        if let Some(v) = self.rs_views {
            return v;
        }
        let main = self.view_sized(rs_copy, 4 * n_seqs);
        let tail = self.view_sized(rs_copy, 0);
        self.rs_views = Some((main, tail));
        (main, tail)
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

    /// `build_rs` without a custom getter (llama-graph.cpp): the in-place
    /// clear of one state, then the sequences' states gathered by s_copy
    /// (`ggml_get_rows`, `bytes` = state size × n_seqs) and the extra states
    /// copied back into the cache (a copy on the cache's backend). Shared by
    /// the Mamba2, short-conv and Gated DeltaNet state reads.
    fn rs_gather(&mut self, il: usize, bytes: u64, rs_copy: Id) -> Id {
        self.rs_zero(il);
        let g = self.other(bytes, &[rs_copy]);
        let mut st = Self::node(Op::Store, 0, &[g]);
        st.forced = Some(self.kv_backend(il));
        self.push(st);
        g
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
        let ns = self.ctx.n_seq_max.max(1);
        self.rs_gather(il, 4 * self.model.hparams.n_embd_r * ns, rs_copy)
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
        let out = self.matmul(wo, e, t, y);
        // y = ggml_reshape_2d(y, ..): the block returns a view, and a view
        // is never "own" in ggml_gallocr_allocate_node, so the residual add
        // (ggml_add(prev_cur, y)) can only run in place on prev_cur; when
        // that is a split input it gets a new buffer.
        self.view(out)
    }

    fn mamba2_gather(&mut self, il: usize, m: Mamba2, rs_copy: Id) -> Id {
        self.rs_gather(il, 4 * (m.d_conv - 1) * m.conv_ch * m.n_seqs, rs_copy)
    }

    /// `build_mamba2_layer` (src/models/mamba-base.cpp): in_proj,
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
        // last_conv = ggml_view_3d(conv_x, d_conv - 1, conv_ch, n_seqs,
        // nb1, nb2, ..): a strided view whose ggml_nbytes spans all but the
        // tail of the window (what a split-input copy of it allocates).
        let seq_tokens = t / m.n_seqs.max(1);
        let nb1 = 4 * (m.d_conv - 1 + seq_tokens);
        let last = self.view_sized(
            concat,
            4 * (m.d_conv - 1)
                + m.conv_ch.saturating_sub(1) * nb1
                + m.n_seqs.saturating_sub(1) * nb1 * m.conv_ch,
        );
        let mut st = Self::node(Op::Store, 0, &[last]);
        st.forced = Some(kvb);
        self.push(st);
        // build_rs of the SSM states: its in-place clear of one state is
        // expanded here, before the scan's inputs (ssm_conv …) are visited.
        self.rs_zero(il);
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
        // build_rs with get_ssm_rows (src/models/mamba-base.cpp,
        // llm_graph_context::build_rs): ssm_scan reads the whole state cache
        // (reshape_4d, one state per slot) with the s_copy_main view as ids;
        // then the extra states (n_rs - n_seqs rows: none in a reserve
        // ubatch) are gathered with the s_copy_tail view and copied back.
        // With -nkvo the cache is on the host: the scan and that gather each
        // take their own split-input copy of the states (source order:
        // states, then ids).
        let states = 4 * m.d_state * m.d_inner * m.n_seqs;
        let (ids, tail) = self.rs_copy_views(rs_copy, m.n_seqs);
        let mut scan = Self::node(
            Op::Other,
            4 * (m.d_inner * t + m.d_state * m.d_inner * m.n_seqs),
            &[xs, dtb, bs, cs, ids],
        );
        scan.weight = self.lw(il, "ssm_a");
        scan.cache = Some((kvb, states));
        let scan = self.push(scan);
        let mut extra = Self::node(Op::Other, 0, &[tail]);
        extra.cache = Some((kvb, states));
        let extra = self.push(extra);
        let ev = self.view_sized(extra, 0);
        let mut st = Self::node(Op::Store, 0, &[ev]);
        st.forced = Some(kvb);
        self.push(st);
        // The final states: view_3d(y_ssm, D, n_seqs, 1) after the y part.
        let sv = self.view_sized(scan, states);
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
