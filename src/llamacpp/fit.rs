//! `--fit` (on by default in llama-server): llama.cpp's adjustment of the
//! *unset* parameters (`-c`, `-ngl`, `-ts`, `-ot`) to the devices' free
//! memory before the model is loaded, as `common_params_fit_impl`
//! (common/fit.cpp:178-876, build b11434) does it. Internals notes §5.2.
//!
//! The algorithm ([`solve`]) is written once, against an abstract probe
//! (`common_get_device_memory_data_impl`, fit.cpp:29-166: a no-alloc dry
//! run returning each device's model/context/compute bytes). [`fit`] plays
//! that probe with this module's exact simulator; the planner's baseline
//! (`solver::baseline`) plays it with its planning model.
//!
//! Steps (fit.cpp line numbers):
//! 1. measure the given parameters; with `-c` unset the context is
//!    `n_ctx_train · n_streams` (l.268-276); every device keeps at least its
//!    `--fit-target` free → nothing changes (l.347-367);
//! 2. `-c` unset and a global deficit: measure at `--fit-ctx · n_streams`
//!    and interpolate linearly to the context whose total use meets
//!    `Σ free − Σ margin` (minus `(nd+1)·model_per_layer/(dense ? 2 : 6)` on
//!    several devices), rounded down to `256 · n_streams` (l.371-448); one
//!    device: done;
//! 3. give up (keeping that context) when `-ngl`, `-ts`, `-ot`/`--cpu-moe`
//!    or `-sm row` were set (l.452-476);
//! 4. MoE: measure with every expert on the CPU (l.613-640);
//! 5. fill devices back to front with layers (MoE: dense-only layers, the
//!    experts on the CPU) by false position on each device's layer count
//!    (l.660-733);
//! 6. MoE with a surplus: convert dense-only layers into full layers front
//!    to back (false position again), then try one extra partial layer per
//!    device whose FFN overflows to the next device or the CPU: up+gate+down
//!    stay except gate/down (`UP`), then only down leaves (`GATE`), else the
//!    whole FFN leaves (`ATTN`) (l.738-871);
//! 7. the result becomes `-ngl` (Σ layers incl. the output), `-ts` (layers
//!    per device, several devices) and one `-ot` per partial layer
//!    (`set_ngl_tensor_split_tbo`, l.539-582).

use std::collections::HashMap;

use serde::Serialize;

use super::flags::{GpuLayers, SplitMode};
use super::overrides::OverridePattern;
use super::{place, Device, Flags, Options, SimError, Simulation, TensorOverride};
use crate::model::Model;

/// `--fit-target` default per device (common/common.h `fit_params_target`).
pub const FIT_TARGET_DEFAULT: u64 = 1024 * 1024 * 1024;
/// `--fit-ctx` default (common/common.h `fit_params_min_ctx`).
pub const FIT_CTX_DEFAULT: u64 = 4096;

/// Which part of a layer stays on its device; the rest of its FFN overflows
/// (fit.cpp `common_layer_fraction_t`, l.17-24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fraction {
    /// Attention only: `ffn_(gate|up|gate_up|down).*` leaves.
    Attn,
    /// Attention + up: `ffn_(gate|gate_up|down).*` leaves.
    Up,
    /// Attention + up + gate: `ffn_down.*` leaves.
    Gate,
    /// Everything but the routed experts: `ffn_(up|down|gate_up|gate)_(ch|)exps` leave.
    Moe,
}

impl Fraction {
    /// `get_overflow_pattern` (fit.cpp:471-506): the tensors of layer `il`
    /// that leave the device.
    pub fn pattern(self, il: u32) -> String {
        match self {
            Fraction::Attn => format!("blk\\.{il}\\.ffn_(gate|up|gate_up|down).*"),
            Fraction::Up => format!("blk\\.{il}\\.ffn_(gate|gate_up|down).*"),
            Fraction::Gate => format!("blk\\.{il}\\.ffn_down.*"),
            Fraction::Moe => format!("blk\\.{il}\\.ffn_(up|down|gate_up|gate)_(ch|)exps"),
        }
    }
}

/// fit.cpp `ngl_t` (l.508-520): layers of one device, the output layer
/// counting as one; the last `n_part` of them are partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct DeviceLayers {
    pub n_layer: u32,
    pub n_part: u32,
    /// What the first partial layer keeps; later partial ones are `Moe`.
    pub overflow: Fraction,
}

impl Default for DeviceLayers {
    fn default() -> Self {
        DeviceLayers {
            n_layer: 0,
            n_part: 0,
            overflow: Fraction::Moe,
        }
    }
}

impl DeviceLayers {
    pub fn n_full(&self) -> u32 {
        self.n_layer.saturating_sub(self.n_part)
    }
}

/// Where a device's first partial layer overflows to (fit.cpp `overflow_bufts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowTo {
    Cpu,
    /// A model device (index into the model devices).
    Device(usize),
}

/// The parameters one probe measures.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FitLayout {
    /// The parameters as given (only the context may differ).
    Given,
    /// As given plus every routed expert on the CPU (fit.cpp:613-640).
    AllExpertsOnCpu,
    /// fit's own placement (`set_ngl_tensor_split_tbo`).
    Layers {
        per_device: Vec<DeviceLayers>,
        overflow: Vec<OverflowTo>,
    },
}

/// One probe's answer: per model device (fit's order) the bytes of model
/// buffers and of model + context + compute; and the host's total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    pub model: Vec<u64>,
    pub total: Vec<u64>,
    pub host_total: u64,
}

/// What fit starts from.
#[derive(Clone, Debug)]
pub struct FitProblem {
    /// Free memory per model device (`ggml_backend_dev_memory`).
    pub free: Vec<u64>,
    /// Host memory (CPU device `total`); used only without devices.
    pub host_total: Option<u64>,
    /// `--fit-target` per model device (bytes; one entry without devices).
    pub margins: Vec<u64>,
    /// `-c` (None: unset or 0, fit chooses).
    pub n_ctx: Option<u64>,
    /// `--fit-ctx` (u32::MAX after `-c 0`: never reduce).
    pub n_ctx_min: u64,
    /// `kv_unified ? 1 : n_seq_max`.
    pub n_streams: u64,
    /// `llama_model_n_layer` (trunk layers, NextN excluded).
    pub hp_ngl: u32,
    pub hp_nct: u64,
    pub hp_nex: u32,
    /// `-ngl N` or `all` (`n_gpu_layers != -1`).
    pub user_ngl: Option<u32>,
    /// Why fit cannot change the placement (user-set `-ngl`, `-ts`, `-ot`,
    /// `-sm row`), fit.cpp:452-476 in that order.
    pub locked: Option<String>,
    /// `-sm tensor`: fit throws before doing anything (fit.cpp:182).
    pub split_tensor: bool,
}

/// How fit ended (`common_params_fit_status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum FitStatus {
    /// Every device keeps its target free with the given parameters.
    Unchanged,
    /// Parameters changed (`successfully fit params`).
    Fitted,
    /// fit gave up (`failed to fit params`): a context change made before
    /// giving up is kept (llama.cpp changes `cparams.n_ctx` in place).
    Failed(String),
}

/// fit's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitSolution {
    pub status: FitStatus,
    /// The context llama.cpp is then created with (`cparams.n_ctx`).
    pub n_ctx: u64,
    /// fit's placement, when it set one.
    pub layers: Option<(Vec<DeviceLayers>, Vec<OverflowTo>)>,
    /// Number of probes (dry runs) it took.
    pub probes: usize,
}

impl FitSolution {
    /// `-ngl`, `-ts` (several devices) and the `-ot` list
    /// (`set_ngl_tensor_split_tbo`, fit.cpp:539-582): patterns with their
    /// target. None without a placement.
    pub fn placement(&self, hp_ngl: u32) -> Option<FitPlacement> {
        let (per_device, overflow) = self.layers.as_ref()?;
        Some(placement_of(hp_ngl, per_device, overflow))
    }
}

/// `-ngl`, `-ts` and `-ot` of one fit placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitPlacement {
    pub n_gpu_layers: u32,
    /// Layers per model device (written only with several devices).
    pub tensor_split: Vec<u32>,
    /// (layer, part kept, target) per partial layer, in fit's order.
    pub overrides: Vec<(u32, Fraction, OverflowTo)>,
}

fn placement_of(hp_ngl: u32, per_device: &[DeviceLayers], overflow: &[OverflowTo]) -> FitPlacement {
    let ngl: u32 = per_device.iter().map(|d| d.n_layer).sum();
    let mut il0 = (hp_ngl + 1).saturating_sub(ngl);
    let mut ov = Vec::new();
    for (id, d) in per_device.iter().enumerate() {
        il0 += d.n_full();
        for il in il0..il0 + d.n_part {
            if il == il0 {
                ov.push((il, d.overflow, overflow[id]));
            } else {
                ov.push((il, Fraction::Moe, OverflowTo::Cpu));
            }
        }
        il0 += d.n_part;
    }
    FitPlacement {
        n_gpu_layers: ngl,
        tensor_split: per_device.iter().map(|d| d.n_layer).collect(),
        overrides: ov,
    }
}

/// `common_params_fit_impl` (fit.cpp:178-876) against `measure`
/// (`common_get_device_memory_data_impl`: context size and layout → bytes).
/// Counts follow fit.cpp's `uint32_t` arithmetic; where fit.cpp asserts
/// a difference is non-negative it saturates here instead of panicking on
/// an inconsistent probe.
pub fn solve<E>(
    pb: &FitProblem,
    measure: &mut dyn FnMut(u64, &FitLayout) -> Result<Measured, E>,
) -> Result<FitSolution, E> {
    let mut probes = 0usize;
    let mut m = |n_ctx: u64, l: &FitLayout| {
        probes += 1;
        measure(n_ctx, l)
    };
    let nd = pb.free.len();
    let u32max = u64::from(u32::MAX);
    let n_ctx_auto = pb.n_ctx.is_none();
    // fit.cpp:266-267, saturating like the u32 maths there.
    let n_ctx_max = (pb.hp_nct * pb.n_streams).min(u32max);
    let n_ctx_min_total = (pb.n_ctx_min * pb.n_streams).min(u32max);
    let mut n_ctx = pb.n_ctx.unwrap_or(n_ctx_max);
    let done = |status, n_ctx, layers, probes| FitSolution {
        status,
        n_ctx,
        layers,
        probes,
    };
    if pb.split_tensor {
        let s =
            FitStatus::Failed("llama_params_fit is not implemented for SPLIT_MODE_TENSOR".into());
        return Ok(done(s, n_ctx, None, 0));
    }
    let margin = |id: usize| -> i64 {
        pb.margins
            .get(id)
            .copied()
            .unwrap_or(FIT_TARGET_DEFAULT)
            .min(i64::MAX as u64) as i64
    };

    // Step 1 (fit.cpp:263-368).
    let full = m(n_ctx, &FitLayout::Given)?;
    let mut sum_free: i64 = 0;
    let sum_projected_used: i64;
    let sum_projected_free: i64;
    let mut sum_projected_model: i64 = 0;
    if nd == 0 {
        let Some(host) = pb.host_total else {
            // Host size unknown: nothing to compare with.
            return Ok(done(FitStatus::Unchanged, n_ctx, None, probes));
        };
        sum_projected_used = full.host_total as i64;
        sum_free = host as i64;
        sum_projected_free = sum_free - sum_projected_used;
        if sum_projected_free >= margin(0) {
            return Ok(done(FitStatus::Unchanged, n_ctx, None, probes));
        }
    } else {
        let mut used = 0i64;
        let mut pfree = 0i64;
        let mut all_ok = true;
        for id in 0..nd {
            let u = full.total[id] as i64;
            let f = pb.free[id] as i64 - u;
            sum_free += pb.free[id] as i64;
            used += u;
            pfree += f;
            sum_projected_model += full.model[id] as i64;
            all_ok &= f >= margin(id);
        }
        sum_projected_used = used;
        sum_projected_free = pfree;
        if all_ok {
            return Ok(done(FitStatus::Unchanged, n_ctx, None, probes));
        }
    }

    // Step 2: reduce the context (fit.cpp:371-448).
    let sum_margins: i64 = if nd == 0 {
        margin(0)
    } else {
        (0..nd).map(margin).sum()
    };
    let global_surplus = sum_projected_free - sum_margins;
    if global_surplus < 0 && n_ctx_auto && n_ctx_max > n_ctx_min_total {
        let mut sum_used_target = sum_free - sum_margins;
        if nd > 1 {
            // "for dense models only whole layers can be assigned …, for MoE
            // only whole tensors (≈ 1/3 of a layer); on average 0.5 wasted per device"
            let div = u64::from(pb.hp_ngl)
                .min(pb.user_ngl.map_or(u64::MAX, u64::from))
                .max(1) as i64;
            let model_per_layer = sum_projected_model / div;
            let k = if pb.hp_nex == 0 { 2 } else { 6 };
            sum_used_target -= (nd as i64 + 1) * model_per_layer / k;
        }
        n_ctx = n_ctx_min_total;
        let min_ctx = m(n_ctx, &FitLayout::Given)?;
        let used_min: i64 = if nd == 0 {
            min_ctx.host_total as i64
        } else {
            min_ctx.total.iter().map(|&b| b as i64).sum()
        };
        if sum_used_target > used_min {
            let num = (n_ctx_max - n_ctx_min_total) as i128 * (sum_used_target - used_min) as i128;
            let den = (sum_projected_used - used_min).max(1) as i128;
            // `cparams->n_ctx += …` on a uint32_t.
            n_ctx = (n_ctx + (num / den) as u64) & u32max;
            let align = 256 * pb.n_streams;
            n_ctx = (n_ctx - n_ctx % align).max(n_ctx_min_total);
            if nd <= 1 {
                return Ok(done(FitStatus::Fitted, n_ctx, None, probes));
            }
        }
    }
    if nd == 0 {
        let s = FitStatus::Failed(
            "was unable to fit model into system memory by reducing context".into(),
        );
        return Ok(done(s, n_ctx, None, probes));
    }
    if let Some(why) = &pb.locked {
        return Ok(done(FitStatus::Failed(why.clone()), n_ctx, None, probes));
    }

    // Step 3 (fit.cpp:613-733).
    let moe = pb.hp_nex > 0;
    let mut global_surplus_cpu_moe: i64 = 0;
    if moe {
        let cm = m(n_ctx, &FitLayout::AllExpertsOnCpu)?;
        for id in 0..nd {
            global_surplus_cpu_moe += pb.free[id] as i64;
            global_surplus_cpu_moe -= cm.total[id] as i64 + margin(id);
        }
    }
    let targets: Vec<i64> = (0..nd).map(|id| pb.free[id] as i64 - margin(id)).collect();
    let mut overflow = vec![OverflowTo::Cpu; nd];
    let mut ngl = vec![DeviceLayers::default(); nd];
    let mut probe = |n: &[DeviceLayers], o: &[OverflowTo]| -> Result<Vec<i64>, E> {
        let r = m(
            n_ctx,
            &FitLayout::Layers {
                per_device: n.to_vec(),
                overflow: o.to_vec(),
            },
        )?;
        Ok(r.total.iter().map(|&b| b as i64).collect())
    };
    let mut mem = probe(&ngl, &overflow)?;
    let hp_ngl = pb.hp_ngl;
    for id in (0..nd).rev() {
        let mut n_unassigned = hp_ngl + 1;
        for d in &ngl[id + 1..] {
            n_unassigned = n_unassigned.saturating_sub(d.n_layer);
        }
        let mut high = ngl.clone();
        high[id].n_layer = n_unassigned;
        if moe {
            high[id].n_part = if id < nd - 1 {
                high[id].n_layer
            } else {
                high[id].n_layer.saturating_sub(1)
            };
        }
        if high[id].n_layer > 0 {
            let mut mem_high = probe(&high, &overflow)?;
            if mem_high[id] > targets[id] {
                let mut delta = high[id].n_layer.saturating_sub(ngl[id].n_layer);
                while delta > 1 {
                    let step = false_position_step(delta, targets[id], mem[id], mem_high[id]);
                    let mut test = ngl.clone();
                    test[id].n_layer += step;
                    if moe {
                        // the first layer of the last device is the output layer, always full
                        test[id].n_part += if id == nd - 1 && test[id].n_part == 0 {
                            step.saturating_sub(1)
                        } else {
                            step
                        };
                    }
                    let mem_test = probe(&test, &overflow)?;
                    if mem_test[id] <= targets[id] {
                        ngl = test;
                        mem = mem_test;
                    } else {
                        high = test;
                        mem_high = mem_test;
                    }
                    delta = high[id].n_layer.saturating_sub(ngl[id].n_layer);
                }
            } else {
                ngl = high;
                mem = mem_high;
            }
        }
    }
    if !moe || global_surplus_cpu_moe <= 0 {
        return Ok(done(
            FitStatus::Fitted,
            n_ctx,
            Some((ngl, overflow)),
            probes,
        ));
    }

    // Step 4 (fit.cpp:738-871): dense-only → full layers, front to back.
    let mut id_dense_start = nd;
    for id in (0..nd).rev() {
        if ngl[id].n_layer > 0 {
            id_dense_start = id;
            continue;
        }
        break;
    }
    let mut id = 0;
    while id <= id_dense_start && id_dense_start < nd {
        let mut high = ngl.clone();
        for jd in id_dense_start..nd {
            let n_move = if jd < nd - 1 {
                high[jd].n_layer
            } else {
                high[jd].n_layer.saturating_sub(1)
            };
            high[id].n_layer += n_move;
            high[jd].n_layer -= n_move;
            high[jd].n_part = 0;
        }
        let id_dense_start_high = nd - 1;
        let mut mem_high = probe(&high, &overflow)?;
        if mem_high[id] > targets[id] {
            let mut delta = high[id].n_full().saturating_sub(ngl[id].n_full());
            while delta > 1 {
                let step = false_position_step(delta, targets[id], mem[id], mem_high[id]);
                let mut test = ngl.clone();
                let mut ids_test = id_dense_start;
                let mut n_converted = 0;
                while ids_test < nd {
                    let n_convert = step.saturating_sub(n_converted).min(test[ids_test].n_part);
                    test[ids_test].n_layer = test[ids_test].n_layer.saturating_sub(n_convert);
                    test[ids_test].n_part -= n_convert;
                    test[id].n_layer += n_convert;
                    n_converted += n_convert;
                    if test[ids_test].n_part > 0 {
                        break;
                    }
                    ids_test += 1;
                }
                let mem_test = probe(&test, &overflow)?;
                if mem_test[id] <= targets[id] {
                    ngl = test;
                    mem = mem_test;
                    id_dense_start = ids_test;
                } else {
                    // (fit.cpp also records `id_dense_start_high` here; it is
                    // never read afterwards.)
                    high = test;
                    mem_high = mem_test;
                }
                delta = high[id].n_full().saturating_sub(ngl[id].n_full());
            }
        } else {
            ngl = high;
            mem = mem_high;
            id_dense_start = id_dense_start_high;
        }

        // "try to fit at least part of one more layer"
        if id_dense_start < nd && ngl[id_dense_start].n_layer > u32::from(id >= nd - 1) {
            // u32 arithmetic as in fit.cpp: when `id` is the dense start
            // itself with no partial layer left, n_part wraps and comes back.
            let mut test = ngl.clone();
            let mut ids_test = id_dense_start;
            test[ids_test].n_layer = test[ids_test].n_layer.wrapping_sub(1);
            test[ids_test].n_part = test[ids_test].n_part.wrapping_sub(1);
            test[id].n_layer = test[id].n_layer.wrapping_add(1);
            test[id].n_part = test[id].n_part.wrapping_add(1);
            if test[ids_test].n_part == 0 {
                ids_test += 1;
            }
            test[id].overflow = Fraction::Up;
            let mut overflow_test = overflow.clone();
            if id < nd - 1 {
                overflow_test[id] = OverflowTo::Device(id + 1);
            }
            let ok =
                |mt: &[i64]| mt[id] < targets[id] && (id + 1 == nd || mt[id + 1] < targets[id + 1]);
            let mem_test = probe(&test, &overflow_test)?;
            if ok(&mem_test) {
                ngl = test.clone();
                overflow = overflow_test.clone();
                mem = mem_test;
                id_dense_start = ids_test;
                test[id].overflow = Fraction::Gate;
                let mem_test = probe(&test, &overflow_test)?;
                if ok(&mem_test) {
                    ngl = test;
                    overflow = overflow_test;
                    mem = mem_test;
                    id_dense_start = ids_test;
                }
            } else {
                test[id].overflow = Fraction::Attn;
                let mem_test = probe(&test, &overflow_test)?;
                if ok(&mem_test) {
                    ngl = test;
                    overflow = overflow_test;
                    mem = mem_test;
                    id_dense_start = ids_test;
                }
            }
        }
        id += 1;
    }
    let _ = mem;
    Ok(done(
        FitStatus::Fitted,
        n_ctx,
        Some((ngl, overflow)),
        probes,
    ))
}

/// fit.cpp's false-position step: `delta·(target − mem_low)/(mem_high −
/// mem_low)` clamped to `[1, delta − 1]` (u32 arithmetic).
fn false_position_step(delta: u32, target: i64, low: i64, high: i64) -> u32 {
    let den = high - low;
    let raw = if den == 0 {
        0
    } else {
        i64::from(delta) * (target - low) / den
    };
    // `uint32_t step_size = int64_t(...)`: a negative value wraps.
    let step = raw as u32;
    step.max(1).min(delta - 1)
}

/// What `--fit` did to a llama-server invocation.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    pub status: FitStatus,
    /// The flags llama.cpp loads with (the given ones with fit's changes).
    pub flags: Flags,
    /// fit's changes as llama-server flags (`-c N -ngl N [-ts a,b] [-ot "…"]`,
    /// the form `llama-fit-params` prints); empty when nothing changed.
    pub argv: Vec<String>,
    /// `-c` fit chose, if it changed the context.
    pub n_ctx: Option<u64>,
    /// The context llama.cpp is created with afterwards (`cparams.n_ctx`,
    /// what `llama-fit-params` prints as `-c`): the given `-c`, else
    /// `n_ctx_train · n_streams` or fit's reduction of it.
    pub final_ctx: u64,
    pub placement: Option<FitPlacement>,
    pub probes: usize,
}

/// The problem for `flags` on `devices` (model devices in llama.cpp's
/// order, as `llama_model_get_device` lists them).
pub fn problem(
    model: &Model,
    devices: &[Device],
    flags: &Flags,
    opts: &Options,
    host_total: Option<u64>,
) -> Result<(FitProblem, Vec<usize>), SimError> {
    let model_devs = place::model_devices(devices, flags)?;
    let nd = model_devs.len();
    let ctx = super::CtxParams::resolve(flags, opts.build, model.hparams.n_ctx_train);
    let n_streams = if ctx.kv_unified {
        1
    } else {
        ctx.n_seq_max.max(1)
    };
    let margins = (0..nd.max(1)).map(|i| flags.fit_margin(i)).collect();
    let user_ngl = match flags.gpu_layers {
        GpuLayers::Auto => None,
        GpuLayers::All => Some(u32::MAX - 1),
        GpuLayers::N(n) => Some(n),
    };
    let ts_set = flags.tensor_split.iter().take(nd).any(|&x| x != 0.0);
    let locked = if flags.gpu_layers_set {
        Some(match flags.gpu_layers {
            GpuLayers::N(n) => format!("n_gpu_layers already set by user to {n}"),
            _ => "n_gpu_layers already set by user to -2".to_string(),
        })
    } else if nd > 1 && ts_set {
        Some("model_params::tensor_split already set by user".into())
    } else if nd > 1 && flags.split_mode == SplitMode::Row {
        Some("changing weight allocation for LLAMA_SPLIT_MODE_ROW not implemented".into())
    } else if !flags.overrides.is_empty() {
        Some("model_params::tensor_buft_overrides already set by user".into())
    } else {
        None
    };
    let pb = FitProblem {
        free: model_devs.iter().map(|&d| devices[d].free_bytes).collect(),
        host_total,
        margins,
        n_ctx: flags.ctx.filter(|&c| c > 0),
        n_ctx_min: flags.fit_ctx,
        n_streams,
        hp_ngl: model.hparams.n_layer.saturating_sub(model.hparams.n_nextn),
        hp_nct: model.hparams.n_ctx_train,
        hp_nex: model.hparams.n_expert,
        user_ngl,
        locked,
        split_tensor: flags.split_mode == SplitMode::Tensor,
    };
    Ok((pb, model_devs))
}

/// Compiled `-ot` patterns, so repeated probes do not recompile them.
#[derive(Default)]
struct PatternCache {
    map: HashMap<(Vec<u32>, Fraction), OverridePattern>,
    all_experts: Option<OverridePattern>,
}

impl PatternCache {
    /// [`Fraction::pattern`] for several layers at once:
    /// `blk\.(a|b|…)\.<rest>` selects exactly the union of the per-layer
    /// patterns.
    fn get(&mut self, layers: &[u32], f: Fraction) -> Result<OverridePattern, SimError> {
        let key = (layers.to_vec(), f);
        if let Some(p) = self.map.get(&key) {
            return Ok(p.clone());
        }
        let src = match layers {
            [il] => f.pattern(*il),
            _ => {
                let alt: Vec<String> = layers.iter().map(u32::to_string).collect();
                let one = f.pattern(0);
                let rest = one.strip_prefix("blk\\.0").unwrap_or(&one);
                format!("blk\\.({}){rest}", alt.join("|"))
            }
        };
        let p = OverridePattern::new(&src)?;
        self.map.insert(key, p.clone());
        Ok(p)
    }
}

/// The pattern fit uses for "every MoE tensor" (fit.cpp:615).
const PATTERN_MOE_ALL: &str = "blk\\.\\d+\\.ffn_(up|down|gate_up|gate)_(ch|)exps";

fn target_name(o: OverflowTo, devices: &[Device], model_devs: &[usize]) -> String {
    match o {
        OverflowTo::Cpu => "CPU".to_string(),
        OverflowTo::Device(i) => devices[model_devs[i]].buft.clone(),
    }
}

/// Apply a fit placement to `flags` (what `mparams` holds after
/// `set_ngl_tensor_split_tbo`).
fn apply(
    flags: &mut Flags,
    pl: &FitPlacement,
    nd: usize,
    devices: &[Device],
    model_devs: &[usize],
    cache: &mut PatternCache,
    merge: bool,
) -> Result<(), SimError> {
    flags.gpu_layers = GpuLayers::N(pl.n_gpu_layers);
    flags.gpu_layers_set = true;
    if nd > 1 {
        flags.tensor_split = pl.tensor_split.iter().map(|&n| f64::from(n)).collect();
    }
    flags.overrides.clear();
    if !merge {
        for &(il, f, to) in &pl.overrides {
            flags.overrides.push(TensorOverride {
                pattern: cache.get(&[il], f)?,
                target: target_name(to, devices, model_devs),
            });
        }
        return Ok(());
    }
    // Each pattern names one layer, so no tensor matches two of them and
    // their order does not matter: one alternation per (part, target)
    // selects the same tensors with one regex search per tensor instead of
    // one per layer (the probe's cost with ~50 per-layer patterns).
    let mut groups: Vec<((Fraction, OverflowTo), Vec<u32>)> = Vec::new();
    for &(il, f, to) in &pl.overrides {
        match groups.iter_mut().find(|(k, _)| *k == (f, to)) {
            Some((_, v)) => v.push(il),
            None => groups.push(((f, to), vec![il])),
        }
    }
    for ((f, to), layers) in groups {
        flags.overrides.push(TensorOverride {
            pattern: cache.get(&layers, f)?,
            target: target_name(to, devices, model_devs),
        });
    }
    Ok(())
}

/// Run `--fit` for `flags` with the simulator as fit's dry-run probe.
/// `host_total`: host memory, compared only when there are no devices.
/// With `-fit off` the flags come back unchanged.
pub fn fit(
    model: &Model,
    draft: Option<&Model>,
    devices: &[Device],
    flags: &Flags,
    opts: &Options,
    host_total: Option<u64>,
) -> Result<FitOutcome, SimError> {
    if !flags.fit {
        return Ok(FitOutcome {
            status: FitStatus::Unchanged,
            flags: flags.clone(),
            argv: Vec::new(),
            n_ctx: None,
            final_ctx: flags.ctx.unwrap_or(0),
            placement: None,
            probes: 0,
        });
    }
    let (pb, model_devs) = problem(model, devices, flags, opts, host_total)?;
    let nd = model_devs.len();
    // fit measures with `no_alloc` and `load_mode = NONE` (fit.cpp:57-58).
    let probe_opts = Options {
        no_alloc: true,
        ..*opts
    };
    let mut cache = PatternCache::default();
    let mut memo: HashMap<(u64, FitLayout), Measured> = HashMap::new();
    let mut measure = |n_ctx: u64, l: &FitLayout| -> Result<Measured, SimError> {
        if let Some(r) = memo.get(&(n_ctx, l.clone())) {
            return Ok(r.clone());
        }
        let mut f = flags.clone();
        f.ctx = Some(n_ctx);
        match l {
            FitLayout::Given => {}
            FitLayout::AllExpertsOnCpu => {
                let p = match &cache.all_experts {
                    Some(p) => p.clone(),
                    None => {
                        let p = OverridePattern::new(PATTERN_MOE_ALL)?;
                        cache.all_experts = Some(p.clone());
                        p
                    }
                };
                f.overrides = vec![TensorOverride {
                    pattern: p,
                    target: "CPU".into(),
                }];
            }
            FitLayout::Layers {
                per_device,
                overflow,
            } => {
                let pl = placement_of(pb.hp_ngl, per_device, overflow);
                apply(&mut f, &pl, nd, devices, &model_devs, &mut cache, true)?;
            }
        }
        let sim = super::simulate(model, draft, devices, &f, &probe_opts)?;
        let r = measured(&sim, &model_devs);
        memo.insert((n_ctx, l.clone()), r.clone());
        Ok(r)
    };
    let sol = solve(&pb, &mut measure)?;
    let mut out = flags.clone();
    // With `-c` unset fit writes the context it resolved into
    // `cparams.n_ctx` before anything else (fit.cpp:270-276), so even
    // "no changes needed" turns n_ctx = 0 into n_ctx_train · n_streams,
    // which differs from llama_context's own n_ctx_train with several
    // streams. `-sm tensor` throws before that.
    let ctx_by_fit = pb.n_ctx.is_none() && !pb.split_tensor;
    let n_ctx_changed = ctx_by_fit && sol.n_ctx != pb.hp_nct;
    let mut argv = Vec::new();
    if ctx_by_fit {
        out.ctx = Some(sol.n_ctx);
    }
    if n_ctx_changed {
        argv.extend(["-c".to_string(), sol.n_ctx.to_string()]);
    }
    let placement = sol.placement(pb.hp_ngl);
    if let Some(pl) = &placement {
        apply(&mut out, pl, nd, devices, &model_devs, &mut cache, false)?;
        argv.extend(placement_argv(pl, nd, devices, &model_devs, false));
    }
    Ok(FitOutcome {
        status: sol.status,
        flags: out,
        argv,
        n_ctx: n_ctx_changed.then_some(sol.n_ctx),
        final_ctx: if pb.split_tensor {
            pb.n_ctx.unwrap_or(0)
        } else {
            sol.n_ctx
        },
        placement,
        probes: sol.probes,
    })
}

/// `-ngl N [-ts a,b,…] [-ot "pat=BUFT,…"]`: fit's placement as llama-server
/// flags. `printed`: exactly as `llama-fit-params` prints them
/// (tools/fit-params/fit-params.cpp drops trailing zero splits, so `5,0`
/// prints no `-ts` at all); otherwise every device's count, which reproduces
/// the placement when passed back to llama.cpp.
pub fn placement_argv(
    pl: &FitPlacement,
    nd: usize,
    devices: &[Device],
    model_devs: &[usize],
    printed: bool,
) -> Vec<String> {
    let mut a = vec!["-ngl".to_string(), pl.n_gpu_layers.to_string()];
    if nd > 1 {
        let mut n = pl.tensor_split.len();
        while printed && n > 1 && pl.tensor_split[n - 1] == 0 {
            n -= 1;
        }
        if n > 1 {
            let ts: Vec<String> = pl.tensor_split[..n].iter().map(u32::to_string).collect();
            a.push("-ts".into());
            a.push(ts.join(","));
        }
    }
    if !pl.overrides.is_empty() {
        let ot: Vec<String> = pl
            .overrides
            .iter()
            .map(|&(il, f, to)| {
                format!("{}={}", f.pattern(il), target_name(to, devices, model_devs))
            })
            .collect();
        a.push("-ot".into());
        a.push(ot.join(","));
    }
    a
}

/// The flags one probe adds to the given ones (for a probe that goes
/// through argv, e.g. the planner's `Simulator`): nothing, fit's
/// all-experts-on-CPU override, or fit's placement.
pub fn probe_argv(
    hp_ngl: u32,
    layout: &FitLayout,
    devices: &[Device],
    model_devs: &[usize],
) -> Vec<String> {
    match layout {
        FitLayout::Given => Vec::new(),
        FitLayout::AllExpertsOnCpu => vec!["-ot".into(), format!("{PATTERN_MOE_ALL}=CPU")],
        FitLayout::Layers {
            per_device,
            overflow,
        } => {
            let pl = placement_of(hp_ngl, per_device, overflow);
            placement_argv(&pl, model_devs.len(), devices, model_devs, false)
        }
    }
}

/// A simulation as fit's probe sees it (`llama_get_memory_breakdown`:
/// model, context and compute; the output buffer is not part of it).
fn measured(sim: &Simulation, model_devs: &[usize]) -> Measured {
    let cpu = sim.devices.last();
    Measured {
        model: model_devs
            .iter()
            .map(|&d| sim.devices[d].model_bytes)
            .collect(),
        total: model_devs
            .iter()
            .map(|&d| {
                let x = &sim.devices[d];
                x.model_bytes + x.context_bytes + x.compute_bytes
            })
            .collect(),
        host_total: cpu.map_or(0, |c| c.model_bytes + c.context_bytes + c.compute_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(free: Vec<u64>, margin: u64, n_ctx: Option<u64>, hp_nex: u32) -> FitProblem {
        FitProblem {
            margins: vec![margin; free.len().max(1)],
            free,
            host_total: None,
            n_ctx,
            n_ctx_min: FIT_CTX_DEFAULT,
            n_streams: 1,
            hp_ngl: 10,
            hp_nct: 32768,
            hp_nex,
            user_ngl: None,
            locked: None,
            split_tensor: false,
        }
    }

    /// Bytes of a dense model of 10 blocks + output at 100 bytes each, 10
    /// bytes of compute on every device with layers; the given parameters
    /// split all 11 layers 7:4 (by free memory).
    fn dense(l: &FitLayout, nd: usize) -> Measured {
        let layers: Vec<u64> = match l {
            FitLayout::Given | FitLayout::AllExpertsOnCpu => vec![7, 4],
            FitLayout::Layers { per_device, .. } => {
                per_device.iter().map(|d| u64::from(d.n_layer)).collect()
            }
        };
        let total: Vec<u64> = (0..nd)
            .map(|d| layers[d] * 100 + if layers[d] > 0 { 10 } else { 0 })
            .collect();
        Measured {
            model: layers.iter().map(|&n| n * 100).collect(),
            total,
            host_total: 0,
        }
    }

    #[test]
    fn dense_layers_fill_devices_back_to_front_by_false_position() {
        // Targets 600 and 300: the last device takes 2 layers (210), the
        // first the 5 that fit (510); the 4 first blocks stay on the CPU.
        let pb = problem(vec![700, 400], 100, Some(4096), 0);
        let sol = solve(&pb, &mut |_, l| Ok::<_, ()>(dense(l, 2))).unwrap();
        assert_eq!(sol.status, FitStatus::Fitted);
        assert_eq!(sol.n_ctx, 4096);
        let pl = sol.placement(10).unwrap();
        assert_eq!(pl.n_gpu_layers, 7);
        assert_eq!(pl.tensor_split, [5, 2]);
        assert!(pl.overrides.is_empty());
        // Every probe after the first is a bisection step, not a linear scan.
        assert!(sol.probes <= 8, "{} probes", sol.probes);

        // Enough room: nothing changes, one probe.
        let pb = problem(vec![2000, 2000], 100, Some(4096), 0);
        let sol = solve(&pb, &mut |_, l| Ok::<_, ()>(dense(l, 2))).unwrap();
        assert_eq!((sol.status, sol.probes), (FitStatus::Unchanged, 1));

        // A user-set -ngl stops fit after the context step.
        let mut pb = problem(vec![700, 400], 100, Some(4096), 0);
        pb.locked = Some("n_gpu_layers already set by user to 5".into());
        let sol = solve(&pb, &mut |_, l| Ok::<_, ()>(dense(l, 2))).unwrap();
        assert!(matches!(sol.status, FitStatus::Failed(_)));
        assert!(sol.layers.is_none());
    }

    #[test]
    fn unset_context_is_interpolated_and_rounded_to_256() {
        // total = 1000 + 10 bytes per cell; 200000 free, 10000 margin:
        // 4096 + 28672·(190000 − 41960)/(328680 − 41960) = 18900 → 18688.
        let pb = problem(vec![200_000], 10_000, None, 0);
        let mut seen = Vec::new();
        let sol = solve(&pb, &mut |n_ctx, _| {
            seen.push(n_ctx);
            Ok::<_, ()>(Measured {
                model: vec![1000],
                total: vec![1000 + 10 * n_ctx],
                host_total: 0,
            })
        })
        .unwrap();
        assert_eq!(seen, [32768, 4096]);
        assert_eq!(sol.status, FitStatus::Fitted);
        assert_eq!(sol.n_ctx, 18688);
        assert!(sol.layers.is_none());
    }

    #[test]
    fn overflow_patterns_match_fit_cpp() {
        assert_eq!(
            Fraction::Attn.pattern(7),
            r"blk\.7\.ffn_(gate|up|gate_up|down).*"
        );
        assert_eq!(
            Fraction::Up.pattern(7),
            r"blk\.7\.ffn_(gate|gate_up|down).*"
        );
        assert_eq!(Fraction::Gate.pattern(7), r"blk\.7\.ffn_down.*");
        assert_eq!(
            Fraction::Moe.pattern(7),
            r"blk\.7\.ffn_(up|down|gate_up|gate)_(ch|)exps"
        );
        // set_ngl_tensor_split_tbo: full layers first on each device, the
        // first partial one overflows to its target, the rest go to the CPU.
        let per_device = [
            DeviceLayers {
                n_layer: 3,
                n_part: 1,
                overflow: Fraction::Up,
            },
            DeviceLayers {
                n_layer: 5,
                n_part: 3,
                overflow: Fraction::Moe,
            },
        ];
        let pl = placement_of(10, &per_device, &[OverflowTo::Device(1), OverflowTo::Cpu]);
        assert_eq!(pl.n_gpu_layers, 8);
        assert_eq!(
            pl.overrides,
            [
                (5, Fraction::Up, OverflowTo::Device(1)),
                (8, Fraction::Moe, OverflowTo::Cpu),
                (9, Fraction::Moe, OverflowTo::Cpu),
                (10, Fraction::Moe, OverflowTo::Cpu),
            ]
        );
    }
}
