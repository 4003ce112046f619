//! Baselines shown by `--explain`: what llama.cpp's own `--fit` would choose
//! on the same hardware, and a plain `-ngl` split, each simulated and
//! predicted like the plan.
//!
//! `--fit` is [`crate::llamacpp::fit`] — the one implementation of
//! common/fit.cpp `common_params_fit_impl` — with the planner's
//! [`Simulator`] as fit's dry-run probe and the plan's context flags given
//! (so fit keeps the plan's `-c` and the placements compare at equal memory
//! demand). With the exact simulator (`ggplan plan`) that includes fit's
//! partial overflow layers; the planning simulator cannot express a layer
//! whose FFN is split, so with it such probes count as not fitting.

use serde::Serialize;

use super::costs::Costs;
use super::flags::{argv, llama_layer_devices, Plan};
use super::layout::{memory, Layout};
use super::plan::{DraftPlace, Planner};
use super::sim::{SimReport, Simulator};
use super::speed::Prediction;
use crate::llamacpp::{device, fit, Flags, Options};
use crate::units::Bytes;

/// `--fit-target` default (common/common.h).
pub const FIT_TARGET: Bytes = Bytes(crate::llamacpp::fit::FIT_TARGET_DEFAULT);

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

/// The plan's flags without its placement (`-ngl`, `-ts`, `-ot`, `-dev`,
/// `-sm`, `-fit`): what fit starts from.
fn ctx_argv(plan: &Plan) -> Vec<String> {
    let all = argv(plan);
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        if ["-ngl", "-ts", "-ot", "-dev", "-sm", "-fit"].contains(&all[i].as_str()) {
            i += 2;
            continue;
        }
        out.push(all[i].clone());
        i += 1;
    }
    out
}

/// What `--fit` chooses for the plan's context on the planner's hardware.
#[derive(Clone, Debug)]
pub struct FitBaseline {
    /// The llama-server flags llama.cpp ends up with (the context flags and
    /// fit's `-ngl`/`-ts`/`-ot`, then `-fit off` to pin them).
    pub argv: Vec<String>,
    pub solution: fit::FitSolution,
    /// The placement in the planner's terms (a partial layer counts as on
    /// its device unless its whole FFN went to the CPU).
    pub layout: Layout,
}

/// Run llama.cpp's `--fit` ([`fit::solve`]) for the plan's context flags with `sim` as its
/// dry-run probe and the default `--fit-target`. `None` when the flags
/// cannot be simulated at all.
pub fn fit_baseline(p: &Planner, plan: &Plan, sim: &dyn Simulator) -> Option<FitBaseline> {
    let base = ctx_argv(plan);
    let flags = Flags::parse(&base).ok()?;
    let devices = device::from_hardware(p.hw);
    let opts = Options::default();
    let (pb, model_devs) = fit::problem(p.model, &devices, &flags, &opts, None).ok()?;
    let n = p.model.hparams.n_layer as usize;
    // A probe that the simulator refuses (the planning model cannot split
    // a layer's FFN) is reported as not fitting anywhere.
    let refused = fit::Measured {
        model: vec![0; model_devs.len()],
        total: vec![u64::MAX / 4; model_devs.len()],
        host_total: u64::MAX / 4,
    };
    let probe_args = |n_ctx: u64, l: &fit::FitLayout| {
        let mut a = base.clone();
        if let Some(i) = a.iter().position(|x| x == "-c") {
            a[i + 1] = n_ctx.to_string();
        }
        a.extend(fit::probe_argv(pb.hp_ngl, l, &devices, &model_devs));
        a.extend(["-fit".to_string(), "off".to_string()]);
        a
    };
    let mut measure = |n_ctx: u64, l: &fit::FitLayout| -> Result<fit::Measured, ()> {
        let Ok(r) = sim.simulate(p.model, p.hw, &probe_args(n_ctx, l)) else {
            return Ok(refused.clone());
        };
        let dev = |d: usize| &r.devices[d];
        Ok(fit::Measured {
            model: model_devs.iter().map(|&d| dev(d).model_bytes).collect(),
            total: model_devs
                .iter()
                .map(|&d| dev(d).model_bytes + dev(d).context_bytes + dev(d).compute_bytes)
                .collect(),
            host_total: r.host.model_bytes + r.host.context_bytes + r.host.compute_bytes,
        })
    };
    let solution = fit::solve(&pb, &mut measure).ok()?;
    let layout_of =
        solution
            .layers
            .clone()
            .map_or(fit::FitLayout::Given, |(per_device, overflow)| {
                fit::FitLayout::Layers {
                    per_device,
                    overflow,
                }
            });
    let argv = probe_args(solution.n_ctx, &layout_of);
    // The placement in the planner's terms: from the simulator when it can
    // express it, else from fit's layer counts.
    let layout = match sim.simulate(p.model, p.hw, &argv) {
        Ok(r) => Layout {
            layer_dev: r.layer_dev,
            ffn_host: r.ffn_host,
        },
        Err(_) => {
            let mut l = Layout::cpu_only(n);
            if let Some(pl) = solution.placement(pb.hp_ngl) {
                let mut il = (n + 1).saturating_sub(pl.n_gpu_layers as usize);
                for (d, &k) in pl.tensor_split.iter().enumerate() {
                    for _ in 0..k {
                        if il <= n {
                            l.layer_dev[il] = Some(model_devs[d]);
                        }
                        il += 1;
                    }
                }
                for &(il, f, to) in &pl.overrides {
                    let il = il as usize;
                    if il < n && (f == fit::Fraction::Moe || to == fit::OverflowTo::Cpu) {
                        l.ffn_host[il] = l.layer_dev[il].is_some();
                    }
                }
            }
            l
        }
    };
    Some(FitBaseline {
        argv,
        solution,
        layout,
    })
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
    let (mut caps, _) = p.capacities(margin);
    // The plan's draft keeps its place in the baseline's flags: reserve
    // what it takes there before choosing -ngl, as the planner does.
    if let Some(d) = &plan.draft {
        let place = d.device.map_or(DraftPlace::Host, DraftPlace::Device);
        let all: Vec<usize> = (0..p.hw.devices.len()).collect();
        if let Some((devs, _)) = p.draft_use(&plan.ctx, place, &all) {
            for (c, u) in caps.iter_mut().zip(&devs) {
                *c = c.saturating_sub(*u);
            }
        }
    }
    let fitted = fit_baseline(p, plan, sim);
    let mut candidates = Vec::new();
    if let Some(f) = fitted {
        candidates.push((
            "fit",
            "llama.cpp --fit on the same hardware (common/fit.cpp replayed with the simulator: back-to-front fill, experts to the CPU first, one partial layer per device)",
            f.layout,
            Some(f.argv),
        ));
    }
    candidates.push((
        "ngl",
        "plain -ngl with the default split by free memory (largest -ngl that fits)",
        ngl_layout(p, &c, ub, &caps),
        None,
    ));
    let mut out = Vec::new();
    for (name, description, layout, fit_args) in candidates {
        let b_plan = Plan {
            layout,
            ..plan.clone()
        };
        let args = fit_args.unwrap_or_else(|| argv(&b_plan));
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

    /// With a draft, the plain -ngl baseline reserves the draft's memory
    /// where the plan put it (its flags keep the draft): it fits.
    #[test]
    fn ngl_baseline_reserves_the_draft() {
        use crate::solver::exact::LlamaCppDraftSimulator;
        use crate::solver::plan::tests::{draft3, laptop_llama_with_draft};
        let (m, d, hw, req) = laptop_llama_with_draft();
        let p = Planner::new(&m, &hw, None).unwrap().with_draft(draft3(&d));
        let sim = LlamaCppDraftSimulator {
            opts: Default::default(),
            draft: &d,
        };
        let out = p.plan(&req, &sim).unwrap();
        assert_eq!(out.draft.as_ref().unwrap().device, "CUDA0");
        let bs = baselines(&p, &out.plan, req.margin, &sim);
        let ngl = bs.iter().find(|b| b.name == "ngl").unwrap();
        assert!(ngl.argv.join(" ").contains("-devd CUDA0"), "{:?}", ngl.argv);
        assert!(ngl.fits, "{:?}", ngl.argv);
        // Without the reservation -ngl 18 was chosen, ~2.4 GiB over.
        let on_gpu = ngl.plan.layout.layer_dev.iter().flatten().count();
        assert!(on_gpu < 18, "{on_gpu}");
    }
}
