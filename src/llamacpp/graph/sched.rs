//! The scheduler and allocator pass over a built graph:
//! `ggml_backend_sched_split_graph` (backends, splits, split-input copies)
//! then `ggml_gallocr_alloc_graph` per backend (high-water marks).

use super::alloc::{weight_copy_size, DynAlloc};
use super::*;

pub(super) fn simulate(
    input: &ComputeInput,
    lookup: &Lookup,
    t: u64,
    o: u64,
    alloc: bool,
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
            flash_attn: input.ctx.flash_attn,
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
        flash_attn: input.ctx.flash_attn,
    }
}
