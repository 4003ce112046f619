//! Baselines shown by `--explain`: what llama.cpp's own `--fit` would choose
//! on the same hardware, and a plain `-ngl` split, each simulated and
//! predicted like the plan.
//!
//! `--fit` (common/fit.cpp `common_params_fit_impl`, internals notes §5.2),
//! with the context held at the plan's (as when `-c` is given):
//!
//! 1. full offload with the default split (free memory) fits → keep it;
//! 2. MoE: all routed experts on the CPU, then fill devices **back to
//!    front** with these dense-only layers (the last device also holds the
//!    output), the rest on the CPU; then convert dense-only layers to full
//!    layers **front to back** while their device has room;
//! 3. dense: fill devices back to front with whole layers.
//!
//! Each device keeps `--fit-target` (1 GiB) free. Not modelled: the one
//! partial layer per device fit may add (attention-only, +up, +gate
//! overflow). The `--explain` baseline keeps the plan's context so the
//! placements compare at equal memory demand; [`fit_params`] also plays
//! fit's context resolution and reduction (`-c` unset) and measures with
//! llama-completion semantics as `llama-fit-params` does; it is checked
//! against 160 recorded `llama-fit-params` answers in
//! tests/integration/fit_oracle.rs.

use serde::Serialize;

use super::costs::{Costs, CtxConfig};
use super::flags::{argv, llama_layer_devices, Plan};
use super::layout::{memory, Layout};
use super::plan::Planner;
use super::sim::{SimReport, Simulator};
use super::speed::Prediction;
use crate::units::{Bytes, MIB};

/// `--fit-target` default (common/common.h).
pub const FIT_TARGET: Bytes = Bytes(1024 * MIB);

/// One baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    /// `fit` or `ngl`.
    pub name: String,
    pub description: String,
    pub argv: Vec<String>,
    #[serde(skip)]
    pub plan: Plan,
    pub report: Option<SimReport>,
    pub prediction: Prediction,
    /// Simulated within every device's capacity (minus the plan's margin).
    pub fits: bool,
    pub n_cpu_layers: usize,
    pub n_host_ffn_layers: usize,
}

fn fits_devices(p: &Planner, c: &Costs, l: &Layout, ub: u64, caps: &[u64]) -> bool {
    let (_, d) = memory(c, l, p.hw.devices.len(), true, ub);
    d.iter().zip(caps).all(|(m, &cap)| m.total() <= cap)
}

/// The layout llama.cpp's `--fit` would choose (see the module docs), with
/// the default `--fit-target` on every device.
pub fn fit_layout(p: &Planner, c: &Costs, ub: u64) -> Layout {
    let margins = vec![FIT_TARGET.0; p.hw.devices.len()];
    fit_layout_with(p, c, ub, &margins).0
}

/// `--fit` with per-device margins (`-fitt a,b,…`, bytes). Also says whether
/// full offload fitted at once (fit then prints `-ngl -1` and no `-ts`).
pub fn fit_layout_with(p: &Planner, c: &Costs, ub: u64, margins: &[u64]) -> (Layout, bool) {
    let nd = p.hw.devices.len();
    let measure = |l: &Layout| -> Vec<u64> {
        memory(c, l, nd, true, ub)
            .1
            .iter()
            .map(|m| m.total())
            .collect()
    };
    let moe = c.movable == Some(super::costs::Movable::Experts);
    fit_layout_by(p, c.n_layer(), moe, margins, &measure)
}

/// Bytes per hardware device of a layout: what fit's probe
/// (`common_get_device_memory_data_impl`) returns.
pub type Measure<'m> = dyn Fn(&Layout) -> Vec<u64> + 'm;

/// [`fit_layout_with`] with memory measured by `measure` (the planning
/// model, or the llama.cpp simulator as fit's own dry-run probe).
pub fn fit_layout_by(
    p: &Planner,
    n: usize,
    moe: bool,
    margins: &[u64],
    measure: &Measure,
) -> (Layout, bool) {
    let nd = p.hw.devices.len();
    let caps: Vec<u64> =
        p.hw.devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let m = margins.get(i).copied().unwrap_or(FIT_TARGET.0);
                p.hw.effective_capacity(d).0.saturating_sub(m)
            })
            .collect();
    // 1. Full offload with the default split by free memory.
    let ts: Vec<f32> = caps.iter().map(|&c| c as f32).collect();
    let full = Layout {
        layer_dev: llama_layer_devices(n as u32, n as u32 + 1, &ts, nd),
        ffn_host: vec![false; n],
    };
    if nd == 0 {
        return (Layout::cpu_only(n), true);
    }
    let fits = |l: &Layout| measure(l).iter().zip(&caps).all(|(&m, &cap)| m <= cap);
    if fits(&full) {
        return (full, true);
    }
    // Per device: layers (the output counts as one) and how many of them
    // are dense-only (experts on the CPU); a device's full layers come
    // first (`set_ngl_tensor_split_tbo`).
    let mut n_layer = vec![0usize; nd];
    let mut n_part = vec![0usize; nd];
    let build = |n_layer: &[usize], n_part: &[usize]| {
        let ngl: usize = n_layer.iter().sum();
        let mut l = Layout::cpu_only(n);
        let mut il = n + 1 - ngl;
        for d in 0..nd {
            let full = n_layer[d] - n_part[d];
            for k in 0..n_layer[d] {
                l.layer_dev[il] = Some(d);
                if il < n {
                    l.ffn_host[il] = moe && k >= full;
                }
                il += 1;
            }
        }
        l
    };
    // Step 3: back to front, dense-only layers (the last device's first layer
    // is the output, always full).
    for d in (0..nd).rev() {
        let unassigned = n + 1 - n_layer.iter().sum::<usize>();
        for _ in 0..unassigned {
            n_layer[d] += 1;
            let output_only = d == nd - 1 && n_layer[d] == 1;
            if moe && !output_only {
                n_part[d] += 1;
            }
            if !fits(&build(&n_layer, &n_part)) {
                n_layer[d] -= 1;
                if moe && !output_only {
                    n_part[d] -= 1;
                }
                break;
            }
        }
    }
    // Step 4 (MoE, every layer placed): front to back, convert dense-only
    // layers of the first dense device onwards into full layers of device
    // `id` while it has room.
    if moe && n_layer.iter().sum::<usize>() == n + 1 {
        let mut start = nd;
        for d in (0..nd).rev() {
            if n_layer[d] > 0 {
                start = d;
            } else {
                break;
            }
        }
        for id in 0..=start.min(nd - 1) {
            while let Some(donor) = (start..nd).find(|&j| n_part[j] > 0) {
                let (mut tl, mut tp) = (n_layer.clone(), n_part.clone());
                tl[donor] -= 1;
                tp[donor] -= 1;
                tl[id] += 1;
                let l = build(&tl, &tp);
                if measure(&l)[id] > caps[id] {
                    break;
                }
                n_layer = tl;
                n_part = tp;
            }
        }
    }
    (build(&n_layer, &n_part), false)
}

/// What `llama-fit-params` answers: the context and the placement.
#[derive(Clone, Debug)]
pub struct FitChoice {
    /// `-c` (the user's, or the one fit resolved with `-c` unset).
    pub n_ctx: u64,
    pub layout: Layout,
    /// Full offload fitted with the default split: fit leaves `-ngl` at
    /// auto (prints `-ngl -1`) and writes no `-ts`.
    pub untouched: bool,
}

/// `--fit-ctx` default (common/common.h): the context fit never goes below.
pub const FIT_CTX_MIN: u64 = 4096;

/// fit measures with llama-completion's context parameters
/// (`common_get_device_memory_data_impl` builds them from the same
/// `common_params`): `n_outputs_max = n_batch`, so the output layer's graph
/// computes logits for the whole micro-batch (`llama_context::graph_reserve`
/// with `n_outputs = n_tokens`), not one per sequence as llama-server does.
pub fn fit_costs(p: &Planner, cfg: &CtxConfig) -> Costs {
    let mut c = p.costs(cfg);
    let t = cfg.pp_tokens();
    let (v, e) = (p.model.hparams.n_vocab, p.model.hparams.n_embd);
    c.output_act = 4 * v * t + 8 * e * t;
    c.output_buffer = 4 * v * cfg.batch.max(t);
    c
}

/// `common_params_fit_impl` (common/fit.cpp) for the context `base` with
/// `-c` given (`n_ctx`) or unset (`None`), and per-device margins in bytes.
///
/// With `-c` unset the context starts at `n_ctx_train · n_streams` (fit.cpp
/// "resolve the context before measuring anything else"). When full offload
/// leaves less than the margins free in total (step 2, `global_surplus < 0`)
/// fit measures again at `--fit-ctx · n_streams` and interpolates linearly
/// between the two for the context whose total use meets
/// `sum(free) - sum(margins)`, on several devices minus
/// `(nd + 1) · model_per_layer / (dense ? 2 : 6)` of expected waste,
/// rounded down to `256 · n_streams`. One device: that context is the
/// answer; several: the layers are then placed at it
/// ([`fit_layout_with`]).
pub fn fit_params(p: &Planner, base: &CtxConfig, n_ctx: Option<u64>, margins: &[u64]) -> FitChoice {
    let nd = p.hw.devices.len();
    let measure = |n_ctx: u64, l: &Layout| -> Vec<u64> {
        let cfg = CtxConfig { n_ctx, ..*base };
        let c = fit_costs(p, &cfg);
        memory(&c, l, nd, true, cfg.pp_tokens())
            .1
            .iter()
            .map(|m| m.total())
            .collect()
    };
    fit_params_by(p, base, n_ctx, margins, &measure)
}

/// [`fit_params`] with fit's probe (`-c`, layout → bytes per device) given:
/// the planning model, or the llama.cpp simulator with completion semantics.
pub fn fit_params_by(
    p: &Planner,
    base: &CtxConfig,
    n_ctx: Option<u64>,
    margins: &[u64],
    measure: &dyn Fn(u64, &Layout) -> Vec<u64>,
) -> FitChoice {
    let nd = p.hw.devices.len();
    let n_streams = base.n_stream();
    let n = p.model.hparams.n_layer as usize;
    let c0 = p.costs(base);
    let moe = c0.movable == Some(super::costs::Movable::Experts);
    let place = |n_ctx: u64| fit_layout_by(p, n, moe, margins, &|l: &Layout| measure(n_ctx, l));
    let auto = n_ctx.is_none();
    let n_ctx_max = p.model.hparams.n_ctx_train * n_streams;
    let mut n_ctx = n_ctx.unwrap_or(n_ctx_max);
    let free: Vec<u64> =
        p.hw.devices
            .iter()
            .map(|d| p.hw.effective_capacity(d).0)
            .collect();
    let margin = |i: usize| margins.get(i).copied().unwrap_or(FIT_TARGET.0);
    let (full, fitted) = place(n_ctx);
    if fitted || nd == 0 {
        return FitChoice {
            n_ctx,
            layout: full,
            untouched: true,
        };
    }
    // Step 2: reduce the context (only when fit chose it).
    let n_ctx_min_total = FIT_CTX_MIN * n_streams;
    let ts: Vec<f32> = free.iter().map(|&f| f as f32).collect();
    let full = Layout {
        layer_dev: llama_layer_devices(n as u32, n as u32 + 1, &ts, nd),
        ffn_host: vec![false; n],
    };
    let used = |n_ctx: u64| measure(n_ctx, &full).iter().map(|&b| b as i64).sum::<i64>();
    let sum_used = used(n_ctx);
    let sum_free: i64 = free.iter().map(|&f| f as i64).sum();
    let sum_margin: i64 = (0..nd).map(|i| margin(i) as i64).sum();
    if auto && sum_free - sum_used - sum_margin < 0 && n_ctx_max > n_ctx_min_total {
        let mut target = sum_free - sum_margin;
        if nd > 1 {
            // Weights at full offload per layer (the output counts as one):
            // fit.cpp `model_per_layer`, from the planning model's weights.
            let sum_model: i64 = memory(&c0, &full, nd, true, base.pp_tokens())
                .1
                .iter()
                .map(|m| m.model as i64)
                .sum();
            let per_layer = sum_model / (n as i64 + 1);
            target -= (nd as i64 + 1) * per_layer / if moe { 6 } else { 2 };
        }
        let used_min = used(n_ctx_min_total);
        n_ctx = n_ctx_min_total;
        if target > used_min {
            n_ctx += ((n_ctx_max - n_ctx_min_total) as i128 * (target - used_min) as i128
                / (sum_used - used_min).max(1) as i128) as u64;
            let align = 256 * n_streams;
            n_ctx = (n_ctx - n_ctx % align).max(n_ctx_min_total);
            if nd <= 1 {
                let (l, _) = place(n_ctx);
                return FitChoice {
                    n_ctx,
                    layout: l,
                    untouched: true,
                };
            }
        }
    }
    let (l, _) = place(n_ctx);
    FitChoice {
        n_ctx,
        layout: l,
        untouched: false,
    }
}

/// The flags of one fit probe of `layout` (`-c`, `-np`, `-ngl`, `-ts`
/// counting layers with the output, and one `-ot …exps=CPU` per block whose
/// experts are on the host, as fit.cpp writes them), for a simulator that
/// plays fit's dry run.
pub fn fit_probe_argv(n_ctx: u64, n_seq: u32, layout: &Layout, nd: usize) -> Vec<String> {
    let ngl = layout.layer_dev.iter().filter(|d| d.is_some()).count();
    let mut a: Vec<String> = vec![
        "-c".into(),
        n_ctx.to_string(),
        "-np".into(),
        n_seq.to_string(),
        "-ngl".into(),
        ngl.to_string(),
    ];
    if nd > 1 && ngl > 0 {
        let ts: Vec<String> = (0..nd)
            .map(|d| {
                layout
                    .layer_dev
                    .iter()
                    .filter(|x| **x == Some(d))
                    .count()
                    .to_string()
            })
            .collect();
        a.push("-ts".into());
        a.push(ts.join(","));
    }
    for (i, _) in layout.ffn_host.iter().enumerate().filter(|(_, h)| **h) {
        a.push("-ot".into());
        a.push(format!(
            "blk\\.{i}\\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU"
        ));
    }
    a
}

/// Plain `-ngl N` with the default split by free memory: the largest `N` that fits.
pub fn ngl_layout(p: &Planner, c: &Costs, ub: u64, caps: &[u64]) -> Layout {
    let n = c.n_layer();
    let nd = p.hw.devices.len();
    let ts: Vec<f32> =
        p.hw.devices
            .iter()
            .map(|d| p.hw.effective_capacity(d).0 as f32)
            .collect();
    for ngl in (0..=n as u32 + 1).rev() {
        let l = Layout {
            layer_dev: llama_layer_devices(n as u32, ngl, &ts, nd),
            ffn_host: vec![false; n],
        };
        if fits_devices(p, c, &l, ub, caps) {
            return l;
        }
    }
    Layout::cpu_only(n)
}

/// Both baselines for `plan`'s context, simulated.
pub fn baselines(p: &Planner, plan: &Plan, margin: Bytes, sim: &dyn Simulator) -> Vec<Baseline> {
    let c = p.costs(&plan.ctx);
    let ub = plan.ctx.pp_tokens();
    let (caps, _) = p.capacities(margin);
    let mut out = Vec::new();
    for (name, description, layout) in [
        (
            "fit",
            "llama.cpp --fit on the same hardware (simulated: back-to-front fill, experts to the CPU first)",
            fit_layout(p, &c, ub),
        ),
        (
            "ngl",
            "plain -ngl with the default split by free memory (largest -ngl that fits)",
            ngl_layout(p, &c, ub, &caps),
        ),
    ] {
        let b_plan = Plan {
            layout,
            ..plan.clone()
        };
        let args = argv(&b_plan);
        let report = sim.simulate(p.model, p.hw, &args).ok();
        let fits = report
            .as_ref()
            .is_some_and(|r| p.overflows(r, margin).is_empty());
        out.push(Baseline {
            name: name.into(),
            description: description.into(),
            prediction: p.predict(&b_plan),
            n_cpu_layers: b_plan.layout.n_cpu_layers(),
            n_host_ffn_layers: b_plan.layout.ffn_host.iter().filter(|&&h| h).count(),
            argv: args,
            plan: b_plan,
            report,
            fits,
        });
    }
    out
}

/// Sentences on why the plan differs from a baseline.
pub fn why(plan: &Plan, pred: &Prediction, b: &Baseline) -> Vec<String> {
    let mut out = Vec::new();
    let l = &plan.layout;
    let (pc, bc) = (l.n_cpu_layers(), b.n_cpu_layers);
    let (ph, bh) = (
        l.ffn_host.iter().filter(|&&h| h).count(),
        b.n_host_ffn_layers,
    );
    if bc > pc {
        out.push(format!(
            "{}: {bc} whole blocks (weights and KV) on the CPU vs {pc} in the plan; the plan keeps attention and KV on the GPUs and moves only FFN weights ({ph} blocks).",
            b.name
        ));
    } else if bh != ph {
        out.push(format!(
            "{}: FFN weights of {bh} blocks on the host vs {ph} in the plan.",
            b.name
        ));
    }
    let counts = |x: &Layout| {
        x.used_devices()
            .iter()
            .map(|&d| {
                format!(
                    "{}×{}",
                    x.layer_dev.iter().filter(|y| **y == Some(d)).count(),
                    plan.device_names[d]
                )
            })
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let (a, bb) = (counts(l), counts(&b.plan.layout));
    if a != bb {
        let how = if b.name == "fit" {
            "--fit fills the last device first, then converts layers front to back, blind to device speed"
        } else {
            "-ngl splits by free memory, blind to device speed"
        };
        out.push(format!(
            "{}: layers {} vs the plan's {} (the plan weighs each device's bandwidth; {how}).",
            b.name,
            if bb.is_empty() {
                "none on GPUs".to_string()
            } else {
                bb
            },
            a,
        ));
    }
    if !b.fits {
        out.push(format!("{}: does not fit (simulated).", b.name));
    }
    let r = pred.decode_tps / b.prediction.decode_tps.max(1e-9);
    out.push(format!(
        "{}: predicted decode {:.1} t/s vs the plan's {:.1} ({r:.2}×).",
        b.name, b.prediction.decode_tps, pred.decode_tps
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Hardware;
    use crate::solver::plan::{CtxRequest, Request};
    use crate::solver::sim::PlanningSimulator;
    use crate::solver::synthetic::{build, Spec};

    #[test]
    fn the_plan_is_never_slower_than_the_baselines_that_fit() {
        let m = build(&Spec::qwen3_next_like());
        let hw = Hardware::from_toml_str(
            "[host]\nmemory_mib = 131072\nreserved_mib = 8192\nbandwidth_gbs = 80\n\
             [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 24576\nbandwidth_gbs = 1008\n\
             [[devices]]\nname = \"CUDA1\"\nkind = \"cuda\"\nmemory_mib = 16384\nreserved_mib = 3500\nbandwidth_gbs = 448\n",
        )
        .unwrap();
        let p = Planner::new(&m, &hw, None).unwrap();
        let req = Request {
            ctx: CtxRequest::Fixed(32768),
            ..Request::default()
        };
        let out = p.plan(&req, &PlanningSimulator).unwrap();
        let bs = baselines(&p, &out.plan, req.margin, &PlanningSimulator);
        assert_eq!(bs.len(), 2);
        let fit = &bs[0];
        // --fit keeps whole layers on GPUs with the output on the last device.
        assert_eq!(fit.plan.layout.layer_dev[48], Some(1));
        assert!(fit.n_host_ffn_layers > 0);
        // plain -ngl spills whole blocks to the CPU.
        assert!(bs[1].n_cpu_layers > 0);
        for b in &bs {
            assert!(b.fits, "{} {:?}", b.name, b.argv);
            assert!(
                out.prediction.decode_tps >= b.prediction.decode_tps * 0.999,
                "{}: {} > plan {}",
                b.name,
                b.prediction.decode_tps,
                out.prediction.decode_tps
            );
            assert!(!why(&out.plan, &out.prediction, b).is_empty());
        }
        assert!(out.prediction.decode_tps > bs[1].prediction.decode_tps * 1.2);
    }
}
