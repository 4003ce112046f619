//! The exact llama.cpp simulator ([`crate::llamacpp`]) as the planner's
//! [`Simulator`]: the argv as emitted is parsed by llama.cpp's flag rules,
//! placed and sized by the simulator, and its per-tensor placement is read
//! back into a [`Layout`](super::layout::Layout) so the planner can check
//! that the flags produce the intended placement.

use super::plan::layout_from_tensors;
use super::sim::{DeviceReport, SimError, SimReport, Simulator};
use crate::hardware::Hardware;
use crate::llamacpp::{self, device, place, DeviceUse, Flags, Options};
use crate::model::Model;

/// [`llamacpp::simulate`] behind the planner's [`Simulator`] trait.
#[derive(Clone, Copy, Debug, Default)]
pub struct LlamaCppSimulator(pub Options);

fn row(u: &DeviceUse) -> DeviceReport {
    DeviceReport {
        name: u.name.clone(),
        model_bytes: u.model_bytes,
        context_bytes: u.context_bytes,
        compute_bytes: u.compute_bytes,
        output_bytes: u.output_bytes,
    }
}

impl Simulator for LlamaCppSimulator {
    fn simulate(
        &self,
        model: &Model,
        hw: &Hardware,
        argv: &[String],
    ) -> Result<SimReport, SimError> {
        simulate_argv(&self.0, model, None, hw, argv)
    }
}

/// [`LlamaCppSimulator`] with the `-md` draft model loaded too: its
/// weights, KV and compute are added per device (`llamacpp::simulate`).
#[derive(Clone, Copy, Debug)]
pub struct LlamaCppDraftSimulator<'a> {
    pub opts: Options,
    pub draft: &'a Model,
}

impl Simulator for LlamaCppDraftSimulator<'_> {
    fn simulate(
        &self,
        model: &Model,
        hw: &Hardware,
        argv: &[String],
    ) -> Result<SimReport, SimError> {
        simulate_argv(&self.opts, model, Some(self.draft), hw, argv)
    }
}

fn simulate_argv(
    opts: &Options,
    model: &Model,
    draft: Option<&Model>,
    hw: &Hardware,
    argv: &[String],
) -> Result<SimReport, SimError> {
    {
        let err = |e: &dyn std::fmt::Display| SimError::Other(format!("llama.cpp simulator: {e}"));
        let flags = Flags::parse(argv).map_err(|e| err(&e))?;
        let devices = device::from_hardware(hw);
        // One placement serves the simulation and the layout read-back.
        let (sim, pl) =
            llamacpp::simulate_placed(model, draft, &devices, &flags, opts).map_err(|e| err(&e))?;
        let layout = layout_from_tensors(model, pl.layer_device, |i| {
            pl.tensor_buft.get(i).copied().flatten().map(|b| b.device())
        });
        let n = hw.devices.len();
        let host = sim
            .devices
            .get(n)
            .map(row)
            .ok_or_else(|| SimError::Other("llama.cpp simulator: no host row".into()))?;
        Ok(SimReport {
            devices: sim.devices.iter().take(n).map(row).collect(),
            host,
            layer_dev: layout.layer_dev,
            ffn_host: layout.ffn_host,
            splits_tg: sim.splits_tg,
            splits_pp: sim.splits_pp,
            simulator: format!("llama.cpp simulator (build {})", sim.build),
        })
    }
}

/// The plan's speed prediction for hand-written flags already simulated
/// (`ggplan mem … --json` reports it as `predicted`), with the simulator's
/// graph-split counts. `None` when the hardware file lacks bandwidths or the
/// placement cannot be re-derived.
pub fn predict_simulated(
    model: &Model,
    hw: &Hardware,
    flags: &Flags,
    sim: &llamacpp::Simulation,
    opts: &Options,
) -> Option<super::speed::Prediction> {
    let rates = super::speed::Rates::from_hardware(hw);
    if !rates.complete {
        return None;
    }
    let devices = device::from_hardware(hw);
    let mmap = !opts.no_alloc && flags.load_mode.uses_mmap();
    let pl = place::place(model, &devices, flags, opts.build, opts.host_cpu, mmap).ok()?;
    let layout = layout_from_tensors(model, pl.layer_device.clone(), |i| {
        pl.tensor_buft.get(i).copied().flatten().map(|b| b.device())
    });
    let cfg = super::costs::CtxConfig {
        n_ctx: sim.ctx.n_ctx,
        n_seq: u32::try_from(sim.ctx.n_seq_max).unwrap_or(u32::MAX),
        kv_unified: sim.ctx.kv_unified,
        ubatch: sim.ctx.n_ubatch,
        batch: sim.ctx.n_batch,
        flash_attn: sim.ctx.flash_attn,
        type_k: flags.cache_type_k,
        type_v: flags.cache_type_v,
    };
    let c = super::costs::costs(model, &cfg);
    let mut s = super::layout::summary(
        &c,
        &layout,
        hw.devices.len(),
        flags.op_offload,
        cfg.pp_tokens(),
    );
    s.splits_tg = sim.splits_tg;
    s.splits_pp = sim.splits_pp;
    Some(super::speed::predict(&s, &rates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::plan::{CtxRequest, Planner, Request};
    use std::path::Path;

    /// The shipped Qwen3-Coder-Next profile on the domain brief's workstation:
    /// the exact simulator places the emitted flags exactly as planned, and
    /// every device fits with the margin.
    #[test]
    fn plans_pass_the_exact_simulator_with_the_intended_placement() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen3-coder-next-q5_k_m.toml");
        let m = Model::load(&path).unwrap();
        let (hw, _) = crate::hardware::presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
        let p = Planner::new(&m, &hw, None).unwrap();
        for ctx in [32768, 131072] {
            let req = Request {
                ctx: CtxRequest::Fixed(ctx),
                ..Request::default()
            };
            let sim = LlamaCppSimulator::default();
            let out = p.plan(&req, &sim).unwrap();
            assert_eq!(out.report.layer_dev, out.plan.layout.layer_dev);
            assert_eq!(out.report.ffn_host, out.plan.layout.ffn_host);
            assert!(out.report.simulator.starts_with("llama.cpp simulator"));
            assert!(p.overflows(&out.report, req.margin).is_empty());
            // The planning model agrees with the simulator on weights and KV.
            let planning = crate::solver::sim::PlanningSimulator
                .simulate(&m, &hw, &out.argv)
                .unwrap();
            for (a, b) in planning.devices.iter().zip(&out.report.devices) {
                assert_eq!(a.model_bytes, b.model_bytes, "{}", a.name);
                assert_eq!(a.context_bytes, b.context_bytes, "{}", a.name);
            }
            assert_eq!(planning.splits_tg, out.report.splits_tg);
        }
    }

    #[test]
    fn hand_written_flags_get_a_prediction() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/llama-3.1-8b-q8_0.toml");
        let m = Model::load(&path).unwrap();
        let (hw, _) = crate::hardware::presets::load_file_or_preset("laptop-rtx4060").unwrap();
        let opts = Options::default();
        let pred = |args: &[&str]| {
            let flags = Flags::parse(args).unwrap();
            let sim =
                llamacpp::simulate(&m, None, &device::from_hardware(&hw), &flags, &opts).unwrap();
            predict_simulated(&m, &hw, &flags, &sim, &opts).unwrap()
        };
        let full = pred(&["-c", "4096", "-np", "1", "-ngl", "99"]);
        let half = pred(&["-c", "4096", "-np", "1", "-ngl", "16"]);
        // Half the blocks on a 89.6 GB/s host instead of a 256 GB/s GPU: slower.
        assert!(
            full.decode_tps > 1.5 * half.decode_tps,
            "{} vs {}",
            full.decode_tps,
            half.decode_tps
        );
    }
}
