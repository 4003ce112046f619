//! The scheduler and allocator pass over a built graph:
//! `ggml_backend_sched_split_graph` (backends, splits, split-input copies)
//! then `ggml_gallocr_alloc_graph` per backend (high-water marks).

use super::alloc::{weight_copy_size, DynAlloc};
use super::*;

/// Buffers reused between the graphs of one `compute` (probe, prompt,
/// generation): the node list is the bulk of a simulation's allocations.
#[derive(Default)]
pub(super) struct Scratch {
    nodes: Vec<Node>,
}

/// "No copy" in the dense copy tables.
const NONE: u32 = u32::MAX;

pub(super) fn simulate(
    input: &ComputeInput,
    lookup: &Lookup,
    t: u64,
    o: u64,
    alloc: bool,
    scratch: &mut Scratch,
) -> ComputeResult {
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
    let mut nodes = std::mem::take(&mut scratch.nodes);
    nodes.clear();
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
        rs_views: None,
        // Only the allocating (prompt) pass runs after a sched reset.
        user_pins: !alloc,
        nodes,
    };
    b.build(t, o);
    let nodes = std::mem::take(&mut b.nodes);
    let r = schedule(input, &b, &nodes, pp_copies, alloc);
    scratch.nodes = nodes;
    r
}

fn schedule(
    input: &ComputeInput,
    b: &Builder,
    nodes: &[Node],
    pp_copies: u64,
    alloc: bool,
) -> ComputeResult {
    let pl = input.placement;
    let n_dev = pl.model_devices.len();
    let cpu = n_dev;
    let kinds: Vec<BackendKind> = pl
        .model_devices
        .iter()
        .map(|&d| input.devices[d].kind)
        .collect();

    // The passes below walk the graph many times: they read the op, size
    // and sources from compact arrays (sources as ranges of one list)
    // instead of the ~200-byte nodes, which keeps them in cache.
    let n = nodes.len();
    let mut ops: Vec<Op> = Vec::with_capacity(n);
    let mut sizes: Vec<u64> = Vec::with_capacity(n);
    let mut src_off: Vec<u32> = Vec::with_capacity(n + 1);
    let mut src_ids: Vec<u32> = Vec::with_capacity(2 * n);
    src_off.push(0);
    // Flash-attention nodes and their layer's backend.
    let mut fa_nodes: Vec<(usize, usize)> = Vec::new();
    // --- pass 1: pre-assigned nodes (ggml_backend_sched_backend_id_from_cur)
    let mut be: Vec<Option<usize>> = vec![None; n];
    for (i, n) in nodes.iter().enumerate() {
        ops.push(n.op);
        sizes.push(n.size);
        src_ids.extend(n.srcs.iter().map(|&s| s as u32));
        src_off.push(src_ids.len() as u32);
        if let Some(lb) = n.fa_layer {
            fa_nodes.push((i, lb));
        }
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
    let srcs = |i: usize| {
        src_ids[src_off[i] as usize..src_off[i + 1] as usize]
            .iter()
            .map(|&s| s as usize)
    };
    // Views follow their source (pass 4); resolve after expansion.
    // --- pass 2: expand GPU assignments down then up, then everything.
    let is_view = |i: usize| ops[i] == Op::View;
    // skip[i]: inputs and views take no part in expansion and splitting.
    let skip: Vec<bool> = ops
        .iter()
        .map(|op| matches!(op, Op::View | Op::Input))
        .collect();
    fn expand(
        be: &mut [Option<usize>],
        skip: &[bool],
        order: impl Iterator<Item = usize>,
        gpu_only: bool,
        cpu: usize,
    ) {
        let mut cur: Option<usize> = None;
        for i in order {
            if skip[i] {
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
    }
    expand(&mut be, &skip, 0..n, true, cpu);
    expand(&mut be, &skip, (0..n).rev(), true, cpu);
    expand(&mut be, &skip, 0..n, false, cpu);
    expand(&mut be, &skip, (0..n).rev(), false, cpu);
    for (i, b) in be.iter_mut().enumerate() {
        if b.is_none() && !is_view(i) {
            *b = Some(cpu);
        }
    }
    // Views: backend of the viewed tensor. base[i]: the non-view tensor a
    // view chain ends in (sources precede their consumers).
    let mut base: Vec<Id> = (0..n).collect();
    for i in 0..n {
        if is_view(i) {
            let s = base[src_ids[src_off[i] as usize] as usize];
            base[i] = s;
            be[i] = be[s];
        }
    }
    let base_of = |i: usize| base[i];
    let bk = |i: usize| be[i].unwrap_or(cpu);
    let fa_off_device = fa_nodes.iter().any(|&(i, lb)| bk(i) != lb);

    // --- pass 5: splits and their inputs.
    // A src is used directly if it lives on the node's backend, or it is a
    // weight in a buffer the backend can read (host bufts for the CPU).
    // Split-input copies per (src, backend), created in the split that first
    // needs them, numbered in creation order (so by split); looked up through
    // dense tables rather than hashing: node sources by (node, backend),
    // weight and cache copies by their consumer (always on its own backend).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Src {
        Node(Id),
        Weight(Id),
        Cache(Id),
        CacheV(Id),
    }
    struct SplitInput {
        src: Src,
        backend: usize,
        size: u64,
        split: u32,
        /// Source references to it (a node using it twice counts twice).
        users: u32,
    }
    let n_be = n_dev + 1;
    let mut split_of = vec![0u32; n];
    let mut n_splits = 0u32;
    let mut cur_b: Option<usize> = None;
    let mut split_has_inputs = false;
    let mut copies: Vec<SplitInput> = Vec::new();
    // The split count alone needs no copy bookkeeping (generation graph).
    let (mut node_copy, mut own_copy) = if alloc {
        (vec![NONE; n * n_be], vec![[NONE; 3]; n])
    } else {
        (Vec::new(), Vec::new())
    };
    for i in 0..n {
        let nd = &nodes[i];
        if skip[i] {
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
        let mut add_copy = |slot: &mut u32, src: Src, size: u64| {
            if *slot == NONE {
                *slot = copies.len() as u32;
                copies.push(SplitInput {
                    src,
                    backend: nb,
                    size,
                    split: n_splits,
                    users: 0,
                });
            }
            copies[*slot as usize].users += 1;
        };
        // The cache views come first among the op's sources (flash_attn_ext
        // and mul_mat(k, q) take K first, ssm_scan its state): split inputs
        // are created in source order (ggml_backend_sched_split_graph).
        if let Some((cb, bytes)) = nd.cache {
            if cb != nb && bytes > 0 {
                split_has_inputs = true;
                if alloc {
                    add_copy(&mut own_copy[i][1], Src::Cache(i), bytes);
                }
            }
            if cb != nb && nd.cache_v > 0 {
                split_has_inputs = true;
                if alloc {
                    add_copy(&mut own_copy[i][2], Src::CacheV(i), nd.cache_v);
                }
            }
        }
        for s in srcs(i) {
            if bk(base_of(s)) != nb {
                split_has_inputs = true;
                if alloc {
                    add_copy(&mut node_copy[s * n_be + nb], Src::Node(s), sizes[s]);
                }
            }
        }
        if let Some(w) = &nd.weight {
            let wb = b.backend_of_buft(w.buft);
            let readable = wb == nb || (nb == cpu && w.buft.device().is_none());
            if !readable {
                split_has_inputs = true;
                if alloc {
                    let kind = (nb < cpu).then(|| kinds[nb]);
                    add_copy(
                        &mut own_copy[i][0],
                        Src::Weight(i),
                        weight_copy_size(w, kind),
                    );
                }
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
            flash_attn: input.ctx.flash_attn,
        };
    }
    let node_copy_of = |s: Id, backend: usize| node_copy[s * n_be + backend];

    // --- allocation order (graph_copy): per split, its new input copies,
    // then its nodes. Graph inputs are allocated first (gallocr allocates
    // INPUT tensors while counting children).
    #[derive(Clone, Copy)]
    enum Ev {
        /// A split-input copy (index into `copies`).
        Copy(u32),
        Node(Id),
    }
    // Split inputs in the order the split's nodes reach them (pass 5):
    // `copies` is already in that order, and grouped by split.
    let mut order: Vec<Ev> = Vec::with_capacity(n + copies.len());
    let mut last_split = 0;
    let mut next_copy = 0usize;
    for i in 0..n {
        if skip[i] {
            continue;
        }
        let s = split_of[i];
        if s != last_split {
            while next_copy < copies.len() && copies[next_copy].split < s {
                next_copy += 1;
            }
            while next_copy < copies.len() && copies[next_copy].split == s {
                order.push(Ev::Copy(next_copy as u32));
                next_copy += 1;
            }
            last_split = s;
        }
        order.push(Ev::Node(i));
    }

    // Children counts: views pass uses to their base; copies are consumers of
    // their source; a node using a copy consumes the copy instead.
    let mut children = vec![0u32; n];
    let mut copy_children = vec![0u32; copies.len()];
    for ev in &order {
        match *ev {
            Ev::Copy(c) => {
                let cp = &copies[c as usize];
                if let Src::Node(s) = cp.src {
                    children[base_of(s)] += 1;
                }
                copy_children[c as usize] = cp.users;
            }
            Ev::Node(i) => {
                let nb = bk(i);
                for s in srcs(i) {
                    if node_copy_of(s, nb) == NONE || bk(base_of(s)) == nb {
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
    let mut pos_of = vec![usize::MAX; n];
    for (pos, ev) in order.iter().enumerate() {
        let Ev::Node(i) = *ev else { continue };
        pos_of[i] = pos;
        for s in srcs(i) {
            let p = base_of(s);
            if ops[p] == Op::Input && first_use[p] == usize::MAX {
                first_use[p] = pos;
            }
        }
    }
    // Position of the next graph node created at or after each node.
    let mut next_pos = usize::MAX;
    for i in (0..n).rev() {
        if pos_of[i] != usize::MAX {
            next_pos = pos_of[i];
        }
        if ops[i] == Op::Input {
            let r = if first_use[i] != usize::MAX {
                first_use[i]
            } else {
                next_pos
            };
            rank.push((r, i));
        }
    }
    rank.sort_unstable();
    if pp_copies > 1 {
        // ggml_backend_sched_split_graph, pass 6 and graph_copy leafs: every
        // graph input and every split input exists n_copies times, flagged
        // input+output: allocated first, never freed.
        for &(_, p) in &rank {
            for _ in 0..pp_copies {
                allocs[cpu].alloc(sizes[p]);
            }
        }
        let mut keys: Vec<&SplitInput> = copies.iter().collect();
        keys.sort_by_key(|c| (c.split, c.backend));
        for c in keys {
            for _ in 0..pp_copies {
                allocs[c.backend].alloc(c.size);
            }
        }
    } else {
        for &(_, p) in &rank {
            let off = allocs[cpu].alloc(sizes[p]);
            where_[p] = Some((cpu, off, sizes[p]));
        }
    }
    // Where each copy lives while allocated (offset, size).
    let mut copy_at: Vec<Option<(u64, u64)>> = vec![None; copies.len()];
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
            Ev::Copy(c) => {
                let cp = &copies[c as usize];
                if pp_copies == 1 {
                    let off = allocs[cp.backend].alloc(cp.size);
                    copy_at[c as usize] = Some((off, cp.size));
                }
                if let Src::Node(s) = cp.src {
                    let bs = base_of(s);
                    children[bs] = children[bs].saturating_sub(1);
                    if children[bs] == 0 {
                        release(&mut allocs, &mut where_, bs);
                    }
                }
            }
            Ev::Node(i) => {
                let nb = bk(i);
                let op = ops[i];
                if op != Op::Store {
                    let size = node_size(i, nb);
                    // In place: take over src[0]'s memory if it has no other
                    // consumer, lives on this backend and has the same size.
                    let mut took = false;
                    // ggml_gallocr_allocate_node: a parent that is a view is
                    // never "own" (views are not allocated), so ops on views
                    // never run in place; inputs and outputs are not reused.
                    if op == Op::Inplace {
                        for p in srcs(i) {
                            // A split-input copy is an own tensor (even of a
                            // view): reusable when this node is its last user.
                            if bk(base_of(p)) != nb {
                                let c = node_copy_of(p, nb);
                                if c != NONE && copy_children[c as usize] == 1 {
                                    if let Some((off, csize)) = copy_at[c as usize] {
                                        if csize == size {
                                            copy_at[c as usize] = None;
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
                                && ops[p] != Op::Input
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
                                op,
                                live.join(" | ")
                            );
                        }
                    }
                }
                for s in srcs(i) {
                    let c = node_copy_of(s, nb);
                    if bk(base_of(s)) != nb && c != NONE {
                        let cc = &mut copy_children[c as usize];
                        *cc = cc.saturating_sub(1);
                        if *cc == 0 {
                            if let Some((off, size)) = copy_at[c as usize].take() {
                                allocs[nb].release(off, size);
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
                for c in own_copy[i] {
                    if c != NONE {
                        if let Some((off, size)) = copy_at[c as usize].take() {
                            allocs[nb].release(off, size);
                        }
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
        flash_attn: input.ctx.flash_attn,
    }
}
