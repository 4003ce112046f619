//! The check every plan passes before it is shown: its argv, as emitted,
//! run through a [`Simulator`] of llama.cpp.
//!
//! The exact simulator is [`super::exact::LlamaCppSimulator`]
//! (`crate::llamacpp`), which `ggplan plan` uses. [`PlanningSimulator`] is
//! the planner's own model behind the same trait, for tests, benches and
//! cross-checks: it parses the flags the planner emits, re-derives the
//! placement from them with llama.cpp's rules (`-ngl/-ts/-dev/-sm` through
//! [`llama_layer_devices`], `-ot` by first-match regex search over the
//! model's real tensor names) and sizes it with the planning model.

use regex::Regex;
use serde::Serialize;
use thiserror::Error;

use super::costs::{costs, CtxConfig};
use super::flags::llama_layer_devices;
use super::layout::{memory, summary, Layout};
use crate::gguf::GgmlType;
use crate::hardware::Hardware;
use crate::model::{Model, TensorClass, TensorGroup};

/// One place's simulated memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub model_bytes: u64,
    pub context_bytes: u64,
    pub compute_bytes: u64,
    pub output_bytes: u64,
}

impl DeviceReport {
    pub fn total(&self) -> u64 {
        self.model_bytes + self.context_bytes + self.compute_bytes + self.output_bytes
    }
}

/// What a simulator reports for one argv.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    /// Hardware devices, in hardware order.
    pub devices: Vec<DeviceReport>,
    pub host: DeviceReport,
    /// Where the simulator put blocks 0..L and the output (hardware index; `None` = CPU).
    pub layer_dev: Vec<Option<usize>>,
    /// Blocks whose movable FFN the simulator put on the host.
    pub ffn_host: Vec<bool>,
    pub splits_tg: u32,
    pub splits_pp: u32,
    /// Which simulator produced this (shown with the plan).
    pub simulator: String,
}

/// Why a simulation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("flag {flag}: {reason}")]
    Flag { flag: String, reason: String },
    #[error("-ot pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("block {layer}: {reason} (not expressible in the planning model)")]
    Unsupported { layer: u32, reason: String },
    #[error("{0}")]
    Other(String),
}

/// A llama.cpp simulator: what `llama-server` started with `argv` (no `-m`)
/// would allocate on each device of `hw`.
pub trait Simulator: Sync {
    fn simulate(
        &self,
        model: &Model,
        hw: &Hardware,
        argv: &[String],
    ) -> Result<SimReport, SimError>;
}

/// The stand-in simulator (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanningSimulator;

struct Parsed {
    ctx: CtxConfig,
    ngl: Option<u32>,
    devices: Option<Vec<String>>,
    sm_none: bool,
    ts: Vec<f32>,
    ot: Vec<(String, String)>,
    op_offload: bool,
}

fn bad(flag: &str, reason: impl Into<String>) -> SimError {
    SimError::Flag {
        flag: flag.to_string(),
        reason: reason.into(),
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, SimError> {
    v.parse()
        .map_err(|_| bad(flag, format!("bad number {v:?}")))
}

fn parse(argv: &[String], n_ctx_train: u64) -> Result<Parsed, SimError> {
    let mut p = Parsed {
        ctx: CtxConfig::llama_defaults(n_ctx_train),
        ngl: None,
        devices: None,
        sm_none: false,
        ts: Vec::new(),
        ot: Vec::new(),
        op_offload: true,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        if matches!(f, "-kvu" | "--kv-unified") {
            p.ctx.kv_unified = true;
            continue;
        }
        if f == "--no-op-offload" {
            p.op_offload = false;
            continue;
        }
        let v = it.next().ok_or_else(|| bad(f, "needs a value"))?;
        match f {
            "-c" | "--ctx-size" => {
                let c: u64 = num(f, v)?;
                p.ctx.n_ctx = if c == 0 { n_ctx_train } else { c };
            }
            "-np" | "--parallel" => p.ctx.n_seq = num(f, v)?,
            "-b" | "--batch-size" => p.ctx.batch = num(f, v)?,
            "-ub" | "--ubatch-size" => p.ctx.ubatch = num(f, v)?,
            "-ngl" | "--gpu-layers" | "--n-gpu-layers" => {
                p.ngl = match v.as_str() {
                    "auto" | "all" => None,
                    _ => Some(num(f, v)?),
                }
            }
            "-sm" | "--split-mode" => match v.as_str() {
                "none" => p.sm_none = true,
                "layer" => p.sm_none = false,
                _ => return Err(bad(f, "only none|layer are modelled")),
            },
            "-dev" | "--device" => p.devices = Some(v.split(',').map(str::to_string).collect()),
            "-ts" | "--tensor-split" => {
                p.ts = v
                    .split([',', '/'])
                    .map(|x| num::<f32>(f, x))
                    .collect::<Result<_, _>>()?
            }
            "-ot" | "--override-tensor" => {
                for e in v.split(',') {
                    let (pat, buft) = e
                        .split_once('=')
                        .ok_or_else(|| bad(f, format!("entry {e:?} has no '='")))?;
                    p.ot.push((pat.to_string(), buft.to_string()));
                }
            }
            "-fa" | "--flash-attn" => {
                p.ctx.flash_attn = match v.as_str() {
                    "on" | "1" | "true" => true,
                    "off" | "0" | "false" => false,
                    _ => return Err(bad(f, "only on|off are modelled")),
                }
            }
            "-ctk" | "--cache-type-k" => {
                p.ctx.type_k =
                    GgmlType::from_name(v).ok_or_else(|| bad(f, format!("unknown type {v:?}")))?
            }
            "-ctv" | "--cache-type-v" => {
                p.ctx.type_v =
                    GgmlType::from_name(v).ok_or_else(|| bad(f, format!("unknown type {v:?}")))?
            }
            "-fit" | "--fit" => {}
            // Sizes here are tensor sums: the mmap span (`CPU_Mapped`) is
            // the exact simulator's business.
            "-lm" | "--load-mode" => {}
            _ => return Err(bad(f, "not modelled by the planning simulator")),
        }
    }
    // llama_context: n_ubatch ≤ n_batch ≤ n_ctx.
    p.ctx.batch = p.ctx.batch.min(p.ctx.n_ctx);
    p.ctx.ubatch = p.ctx.ubatch.min(p.ctx.batch);
    Ok(p)
}

impl Simulator for PlanningSimulator {
    fn simulate(
        &self,
        model: &Model,
        hw: &Hardware,
        argv: &[String],
    ) -> Result<SimReport, SimError> {
        let p = parse(argv, model.hparams.n_ctx_train)?;
        let n = model.hparams.n_layer;
        // llama_prepare_model_devices: -dev list, else every device; -sm none keeps the first.
        let mut model_devs: Vec<usize> = match &p.devices {
            Some(names) => names
                .iter()
                .map(|nm| {
                    hw.devices
                        .iter()
                        .position(|d| &d.name == nm)
                        .ok_or_else(|| bad("-dev", format!("no device {nm}")))
                })
                .collect::<Result<_, _>>()?,
            None => (0..hw.devices.len()).collect(),
        };
        if p.sm_none {
            model_devs.truncate(1);
        }
        let ngl = p.ngl.unwrap_or(n + 1);
        let ts: Vec<f32> = if p.ts.iter().any(|&x| x != 0.0) {
            p.ts.clone()
        } else {
            model_devs
                .iter()
                .map(|&d| hw.effective_capacity(&hw.devices[d]).0 as f32)
                .collect()
        };
        let layer_dev: Vec<Option<usize>> = llama_layer_devices(n, ngl, &ts, model_devs.len())
            .into_iter()
            .map(|k| k.map(|k| model_devs[k]))
            .collect();
        let ot: Vec<(Regex, Option<usize>)> =
            p.ot.iter()
                .map(|(pat, buft)| {
                    let re = Regex::new(pat).map_err(|e| SimError::Pattern {
                        pattern: pat.clone(),
                        source: Box::new(e),
                    })?;
                    let target = if buft == "CPU" {
                        None
                    } else {
                        Some(
                            hw.devices
                                .iter()
                                .position(|d| &d.name == buft)
                                .ok_or_else(|| bad("-ot", format!("unknown buffer type {buft}")))?,
                        )
                    };
                    Ok((re, target))
                })
                .collect::<Result<_, SimError>>()?;
        let c = costs(model, &p.ctx);
        let movable_group = match c.movable {
            Some(super::costs::Movable::Experts) => Some(TensorGroup::FfnRouted),
            Some(super::costs::Movable::DenseFfn) => Some(TensorGroup::FfnDense),
            None => None,
        };
        // Per block: where its movable tensors went (None = not seen yet).
        let mut ffn_place: Vec<Option<Option<usize>>> = vec![None; n as usize];
        for t in &model.tensors {
            if t.skipped {
                continue;
            }
            let Some(e) = model.profile.tensors.get(t.index) else {
                continue;
            };
            let TensorClass::Layer { layer, group } = t.class else {
                continue;
            };
            let base = layer_dev.get(layer as usize).copied().flatten();
            // llama_model_loader::create_tensor: first matching override wins.
            let place = ot
                .iter()
                .find(|(re, _)| re.is_match(&e.name))
                .map_or(base, |(_, tgt)| *tgt);
            if Some(group) == movable_group {
                let slot = &mut ffn_place[layer as usize];
                if slot.is_some_and(|s| s != place) {
                    return Err(SimError::Unsupported {
                        layer,
                        reason: "its FFN tensors are split between places".into(),
                    });
                }
                *slot = Some(place);
                if place.is_some() && place != base {
                    return Err(SimError::Unsupported {
                        layer,
                        reason: format!("FFN on {} away from its layer", e.name),
                    });
                }
            } else if place != base {
                return Err(SimError::Unsupported {
                    layer,
                    reason: format!("{} placed away from its layer", e.name),
                });
            }
        }
        let layout = Layout {
            ffn_host: (0..n as usize)
                .map(|il| layer_dev[il].is_some() && ffn_place[il] == Some(None))
                .collect(),
            layer_dev,
        };
        let ub = p.ctx.pp_tokens();
        let (h, devs) = memory(&c, &layout, hw.devices.len(), p.op_offload, ub);
        let s = summary(&c, &layout, hw.devices.len(), p.op_offload, ub);
        let row = |name: &str, m: &super::layout::Mem| DeviceReport {
            name: name.to_string(),
            model_bytes: m.model,
            context_bytes: m.context,
            compute_bytes: m.compute,
            output_bytes: m.output,
        };
        Ok(SimReport {
            devices: hw.devices.iter().zip(&devs).map(|(d, m)| row(&d.name, m)).collect(),
            host: row("CPU", &h),
            layer_dev: layout.layer_dev,
            ffn_host: layout.ffn_host,
            splits_tg: s.splits_tg,
            splits_pp: s.splits_pp,
            simulator: "planning model (llama.cpp placement rules; sizes approximate until the exact simulator is wired)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::flags::{argv, Plan};
    use crate::solver::synthetic::{build, Spec};
    use proptest::prelude::*;

    fn hw3() -> Hardware {
        Hardware::from_toml_str(
            "[host]\nmemory_mib = 262144\n\
             [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 24576\n\
             [[devices]]\nname = \"CUDA1\"\nkind = \"cuda\"\nmemory_mib = 16384\n\
             [[devices]]\nname = \"CUDA2\"\nkind = \"cuda\"\nmemory_mib = 8192\n",
        )
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// argv → llama.cpp's placement rules → the same layout: any CPU
        /// prefix, any ordered subset of devices with any counts, any set of
        /// host-FFN blocks.
        #[test]
        fn argv_round_trips_through_the_placement_rules(
            n_cpu in 0usize..=49,
            mask in 1u8..8,
            cuts in proptest::collection::vec(0usize..50, 2),
            host in proptest::collection::vec(any::<bool>(), 48),
        ) {
            let m = build(&Spec::qwen3_next_like());
            let n = 48;
            let devs: Vec<usize> = (0..3).filter(|d| mask & (1 << d) != 0).collect();
            let gpu = n + 1 - n_cpu;
            // Cut the GPU range into one non-empty run per device (drop devices if too few layers).
            let mut pts: Vec<usize> = cuts.iter().map(|c| c * gpu / 50).collect();
            pts.truncate(devs.len() - 1);
            pts.sort();
            pts.dedup();
            pts.retain(|&p| p > 0 && p < gpu);
            let mut layer_dev = vec![None; n_cpu];
            let mut prev = 0;
            for (k, end) in pts.iter().copied().chain([gpu]).enumerate() {
                layer_dev.extend(std::iter::repeat_n(Some(devs[k]), end - prev));
                prev = end;
            }
            let ffn_host: Vec<bool> = (0..n).map(|i| host[i] && layer_dev[i].is_some()).collect();
            let cfg = crate::solver::costs::CtxConfig {
                n_ctx: 8192, n_seq: 2, kv_unified: false, ubatch: 256, batch: 1024,
                flash_attn: true, type_k: GgmlType::Q8_0, type_v: GgmlType::Q8_0,
            };
            let plan = Plan {
                layout: Layout { layer_dev: layer_dev.clone(), ffn_host: ffn_host.clone() },
                ctx: cfg,
                device_names: vec!["CUDA0".into(), "CUDA1".into(), "CUDA2".into()],
                movable: Some(crate::solver::costs::Movable::Experts),
                draft: None,
            };
            let args = argv(&plan);
            let r = PlanningSimulator.simulate(&m, &hw3(), &args).unwrap();
            prop_assert_eq!(&r.layer_dev, &layer_dev, "{}", args.join(" "));
            prop_assert_eq!(&r.ffn_host, &ffn_host, "{}", args.join(" "));
            // The sizes are the planning model's for the same layout and context.
            let c = costs(&m, &cfg);
            let (h, d) = memory(&c, &plan.layout, 3, true, 256);
            prop_assert_eq!(r.host.total(), h.total());
            prop_assert_eq!(r.devices.iter().map(|x| x.total()).collect::<Vec<_>>(), d.iter().map(|x| x.total()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn unknown_flags_and_devices_are_errors() {
        let m = build(&Spec::llama_8b_like());
        let e = PlanningSimulator
            .simulate(&m, &hw3(), &["--mlock".into(), "x".into()])
            .unwrap_err();
        assert!(e.to_string().contains("--mlock"), "{e}");
        let e = PlanningSimulator
            .simulate(&m, &hw3(), &["-dev".into(), "CUDA9".into()])
            .unwrap_err();
        assert_eq!(e.to_string(), "flag -dev: no device CUDA9");
    }
}
