//! llama.cpp semantics, keyed by build: what a llama-server started with a
//! set of flags allocates on each device. The one module that knows how
//! llama.cpp places and sizes things; every rule cites the llama.cpp
//! function it mirrors (see shared/notes/llamacpp-internals.md).
//!
//! Entry point: [`simulate`] (model + devices + flags → [`Simulation`]).

pub mod build;
pub mod context;
pub mod device;
pub mod error;
pub mod fit;
pub mod flags;
pub mod graph;
pub mod kv;
pub mod options;
pub mod overrides;
pub mod place;
pub mod tensor_split;

use std::collections::BTreeMap;

use serde::Serialize;

pub use build::{LlamaBuild, FIXTURE_BUILD};
pub use context::CtxParams;
pub use device::{BackendKind, Device};
pub use error::{FlagError, SimError};
pub use flags::{Flags, TensorOverride, Tool};
pub use place::{Buft, HostCpu, Placement};

use crate::model::{Model, TensorGroup};
use flags::{KvValue, LoadMode};
use kv::KvLayout;

/// The warning [`simulate`] gives when `--fit` is on: it simulates the flags
/// as given, without fit's changes ([`fit::fit`] computes those).
pub const FIT_NOT_APPLIED: &str = "--fit is on (llama.cpp's default): if this does not fit, llama.cpp changes the unset -c/-ngl/-ts/-ot at load; pass -fit off to pin them";

/// How to run a simulation besides the flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub build: LlamaBuild,
    /// `llama_model_params.no_alloc` (llama-fit-params, the oracle's dry
    /// runs): forces `load_mode = none`, so host weights are plain buffers.
    pub no_alloc: bool,
    pub host_cpu: HostCpu,
}

/// One buffer type's bytes, as `llama_get_memory_breakdown` reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BufferUse {
    pub buft: String,
    /// Owning device name (`CPU` for host buffer types).
    pub device: String,
    pub model: u64,
    pub context: u64,
    pub compute: u64,
}

/// One device's totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceUse {
    pub name: String,
    /// `cpu`, `cuda`, `rpc`, …
    pub kind: String,
    pub model_bytes: u64,
    pub context_bytes: u64,
    pub compute_bytes: u64,
    pub output_bytes: u64,
    pub total_bytes: u64,
    /// Device memory (`None` for the host here; the CLI fills it from the hardware file).
    pub memory_bytes: Option<u64>,
    /// Numbers for this backend not yet checked against a real run (CUDA …).
    pub unverified: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerUse {
    pub index: u32,
    pub device: String,
}

/// The simulated allocation.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub build: LlamaBuild,
    pub ctx: CtxParams,
    pub layout: KvLayout,
    pub buffers: Vec<BufferUse>,
    /// Hardware devices in the given order, then `CPU`.
    pub devices: Vec<DeviceUse>,
    pub layers: Vec<LayerUse>,
    pub splits_pp: u32,
    pub splits_tg: u32,
    /// (buffer type, bytes) of the logits/embeddings output buffer.
    pub output_buffer: (String, u64),
    pub warnings: Vec<String>,
}

impl Simulation {
    pub fn device(&self, name: &str) -> Option<&DeviceUse> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// Apply `--override-kv` entries that change memory or compute
/// (`llama_model_loader` reads overridden keys instead of the file's).
fn apply_kv_overrides(
    model: &Model,
    flags: &Flags,
    warnings: &mut Vec<String>,
) -> Result<Option<Model>, SimError> {
    if flags.kv_overrides.is_empty() {
        return Ok(None);
    }
    let mut m = model.clone();
    let arch = m.profile.arch.clone();
    for ov in &flags.kv_overrides {
        let suffix = ov.key.strip_prefix(&format!("{arch}.")).unwrap_or("");
        let int = match &ov.value {
            KvValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        };
        let bad = |reason: &str| SimError::KvOverride {
            key: ov.key.clone(),
            reason: reason.to_string(),
        };
        match suffix {
            "expert_used_count" => {
                let n = int.ok_or_else(|| bad("needs a non-negative int"))?;
                if n == 0 || n > u64::from(m.hparams.n_expert.max(1)) {
                    return Err(bad("must be between 1 and expert_count"));
                }
                m.hparams.n_expert_used = n as u32;
            }
            "context_length" => {
                m.hparams.n_ctx_train = int.ok_or_else(|| bad("needs a non-negative int"))?;
            }
            _ => warnings.push(format!(
                "--override-kv {}: no modelled effect on memory",
                ov.key
            )),
        }
    }
    Ok(Some(m))
}

/// Simulate llama.cpp loading `model` onto `devices` with `flags`.
/// `draft`: the `-md` model, if any (weights, KV and compute added per device).
pub fn simulate(
    model: &Model,
    draft: Option<&Model>,
    devices: &[Device],
    flags: &Flags,
    opts: &Options,
) -> Result<Simulation, SimError> {
    simulate_placed(model, draft, devices, flags, opts).map(|(sim, _)| sim)
}

/// [`simulate`], with the main model's [`Placement`] (the planner reads
/// its per-layer devices and per-tensor places back; placing again would
/// cost as much as a tenth of a check).
pub fn simulate_placed(
    model: &Model,
    draft: Option<&Model>,
    devices: &[Device],
    flags: &Flags,
    opts: &Options,
) -> Result<(Simulation, Placement), SimError> {
    let (mut sim, placement) = simulate_one(model, devices, flags, opts)?;
    if let (Some(dm), Some(df)) = (draft, flags.draft.as_ref()) {
        let (d, _) = simulate_one(dm, devices, &draft_flags(flags, df), opts)?;
        for (a, b) in sim.devices.iter_mut().zip(&d.devices) {
            a.model_bytes += b.model_bytes;
            a.context_bytes += b.context_bytes;
            a.compute_bytes += b.compute_bytes;
            a.output_bytes += b.output_bytes;
            a.total_bytes += b.total_bytes;
        }
        for b in d.buffers {
            match sim.buffers.iter_mut().find(|x| x.buft == b.buft) {
                Some(x) => {
                    x.model += b.model;
                    x.context += b.context;
                    x.compute += b.compute;
                }
                None => sim.buffers.push(b),
            }
        }
        if flags.n_draft() == 0 {
            sim.warnings.push(
                "-md without --spec-type draft-simple: llama-server loads the draft model and its context but does not draft with it".into(),
            );
        }
    }
    if draft.is_none() && flags.draft.is_some() {
        sim.warnings
            .push("-md given but no draft model to simulate: its memory is not counted".into());
    }
    Ok((sim, placement))
}

/// The flags of llama-server's draft context (b11434,
/// common/speculative.cpp `common_base_params_to_speculative`): a copy of
/// the main parameters (same `-c`, `-np`, `-kvu`, `-b`, `-ub`, `-fa`, `-ts`,
/// load mode) with the draft's `-devd` (if given), `-ngld`, `-otd` and its
/// cache types (`-ctkd/-ctvd`, default f16, *not* the main `-ctk/-ctv`);
/// one `-devd` device forces `-sm layer`; no speculation of its own, so its
/// graph reserves `n_parallel` outputs. `-cd` (older builds) sets its context.
pub fn draft_flags(flags: &Flags, df: &flags::DraftFlags) -> Flags {
    let mut f = flags.clone();
    f.gpu_layers = df.gpu_layers;
    f.gpu_layers_set = true;
    if let Some(c) = df.ctx {
        f.ctx = Some(c);
    }
    if let Some(d) = &df.devices {
        f.devices = Some(d.clone());
        if d.len() == 1 {
            f.split_mode = flags::SplitMode::Layer;
        }
    }
    f.cache_type_k = df.cache_type_k.unwrap_or(crate::gguf::GgmlType::F16);
    f.cache_type_v = df.cache_type_v.unwrap_or(crate::gguf::GgmlType::F16);
    f.overrides = df.overrides.clone();
    f.draft = None;
    f.spec_types.clear();
    f.draft_max_legacy = false;
    f
}

fn simulate_one(
    model: &Model,
    devices: &[Device],
    flags: &Flags,
    opts: &Options,
) -> Result<(Simulation, Placement), SimError> {
    let mut warnings = Vec::new();
    // -sm tensor: llama_init_from_model turns -fa auto on before anything
    // else ("enabling flash_attn since it is required for SPLIT_MODE_TENSOR"),
    // so the FA auto probe never runs.
    let fa_forced;
    let flags = if flags.split_mode == flags::SplitMode::Tensor
        && flags.flash_attn == flags::FlashAttn::Auto
    {
        let mut f = flags.clone();
        f.flash_attn = flags::FlashAttn::On;
        fa_forced = f;
        &fa_forced
    } else {
        flags
    };
    let overridden = apply_kv_overrides(model, flags, &mut warnings)?;
    let model = overridden.as_ref().unwrap_or(model);
    let build = opts.build;
    let ctx = CtxParams::resolve(flags, build, model.hparams.n_ctx_train);
    kv::check_cache_types(model, flags, &ctx)?;
    // -sm tensor: one Meta device over `tensor_group`; simulated on its first
    // device, then weights and KV are split (tensor_split).
    let tensor_group = if flags.split_mode == flags::SplitMode::Tensor {
        Some(tensor_split::check(model, devices, flags)?)
    } else {
        None
    };
    let load_mode = if opts.no_alloc {
        LoadMode::None
    } else {
        flags.load_mode
    };
    let placement = place::place(
        model,
        devices,
        flags,
        build,
        opts.host_cpu,
        load_mode.uses_mmap(),
    )?;
    let mut placement = placement;
    let layout = kv::layout(model, &ctx, flags, build);
    let mut context = kv::context_bytes(model, flags, &layout, &placement.layer_device, devices);
    let comp = graph::compute(&graph::ComputeInput {
        model,
        flags,
        ctx: &ctx,
        layout: &layout,
        placement: &placement,
        devices,
    });

    if let Some(group) = &tensor_group {
        tensor_split::split_weights(model, devices, group, &flags.tensor_split, &mut placement);
        tensor_split::split_context(
            model,
            flags,
            &layout,
            &placement.layer_device,
            devices,
            group,
            &mut context,
        );
    }
    // llama_context::resolve_fused_ops: report the flash-attention setting
    // llama.cpp ends up using (the -fa auto probe may turn it off).
    if ctx.flash_attn && !comp.flash_attn {
        warnings.push(
            "-fa auto: flash attention turned off (a FLASH_ATTN_EXT node would run on another device than its layer's, llama_context::resolve_fused_ops)".into(),
        );
    }
    let ctx = CtxParams {
        flash_attn: comp.flash_attn,
        ..ctx
    };

    // Compute buffer types: each model device's default buft; the CPU
    // backend uses the host buft of model.devices[0] if it has one
    // (llama_context ctor).
    let cpu_compute_buft = placement
        .model_devices
        .first()
        .filter(|&&d| devices[d].kind.host_buft().is_some())
        .map_or(Buft::Cpu, |&d| Buft::Host(d));
    let mut rows: BTreeMap<Buft, [u64; 3]> = BTreeMap::new();
    for (b, v) in &placement.weights {
        rows.entry(*b).or_default()[0] += v;
    }
    for (b, v) in &context {
        rows.entry(*b).or_default()[1] += v;
    }
    for (i, &d) in placement.model_devices.iter().enumerate() {
        let c = comp.device_bytes.get(i).copied().unwrap_or(0);
        if c > 0 {
            // -sm tensor: the Meta backend's compute buffer is allocated with
            // the Meta graph's size on every simple device
            // (ggml_backend_meta_buffer_type_alloc_buffer).
            let on: &[usize] = match &tensor_group {
                Some(g) => g,
                None => std::slice::from_ref(&d),
            };
            for &g in on {
                rows.entry(Buft::Dev(g)).or_default()[2] += c;
            }
        }
    }
    if comp.cpu_bytes > 0 {
        rows.entry(cpu_compute_buft).or_default()[2] += comp.cpu_bytes;
    }

    // Output buffer (llama_context::output_reserve): logits for n_seq_max
    // outputs, in the output device's host buft or CPU.
    let out_dev = placement.layer_device.last().copied().flatten();
    let out_buft = out_dev
        .filter(|&d| devices[d].kind.host_buft().is_some())
        .map_or(Buft::Cpu, Buft::Host);
    let output_bytes = 4 * model.hparams.n_vocab * ctx.n_seq_max;

    let buffers: Vec<BufferUse> = rows
        .iter()
        .map(|(b, v)| BufferUse {
            buft: b.name(devices),
            device: b
                .device()
                .map_or_else(|| "CPU".to_string(), |d| devices[d].name.clone()),
            model: v[0],
            context: v[1],
            compute: v[2],
        })
        .collect();

    let mut dev_rows: Vec<DeviceUse> = devices
        .iter()
        .map(|d| DeviceUse {
            name: d.name.clone(),
            kind: serde_json::to_value(d.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            model_bytes: 0,
            context_bytes: 0,
            compute_bytes: 0,
            output_bytes: 0,
            total_bytes: 0,
            memory_bytes: Some(d.total_bytes),
            unverified: !d.kind.verified(),
        })
        .collect();
    dev_rows.push(DeviceUse {
        name: "CPU".into(),
        kind: "cpu".into(),
        model_bytes: 0,
        context_bytes: 0,
        compute_bytes: 0,
        output_bytes,
        total_bytes: 0,
        memory_bytes: None,
        unverified: false,
    });
    let cpu_row = dev_rows.len() - 1;
    for (b, v) in &rows {
        let r = b.device().unwrap_or(cpu_row);
        dev_rows[r].model_bytes += v[0];
        dev_rows[r].context_bytes += v[1];
        dev_rows[r].compute_bytes += v[2];
    }
    for d in dev_rows.iter_mut() {
        d.total_bytes = d.model_bytes + d.context_bytes + d.compute_bytes + d.output_bytes;
    }
    let meta = tensor_group
        .as_ref()
        .map(|g| tensor_split::meta_name(devices, g));
    let cpu_name = |d: Option<usize>| match (d, &meta) {
        (None, _) => "CPU".to_string(),
        (Some(_), Some(m)) => m.clone(),
        (Some(d), None) => devices[d].name.clone(),
    };
    let layers = placement
        .layer_device
        .iter()
        .enumerate()
        .map(|(i, d)| LayerUse {
            index: i as u32,
            device: cpu_name(*d),
        })
        .collect();
    if flags.fit {
        // common_fit_params (common/fit.cpp) runs before the load and may
        // rewrite unset -c, -ngl, -ts and -ot when the projection does not
        // fit; `simulate` takes the flags as given, [`fit::fit`] applies it
        // (`ggplan mem` does).
        warnings.push(FIT_NOT_APPLIED.into());
    }
    if tensor_group.is_some() {
        if tensor_split::load_aborts(&model.profile.arch) {
            warnings.push(format!(
                "-sm tensor on {}: llama.cpp b11434's real load aborted (GGML_ASSERT \"tensor write out of bounds\") in the oracle recording; its dry run passes",
                model.profile.arch
            ));
        }
        if tensor_split::unverified_arch(&model.profile.arch) {
            warnings.push(format!(
                "-sm tensor on {}: its fused/recurrent tensor split is modelled from the source, unverified",
                model.profile.arch
            ));
        }
        if let Some(group) = &tensor_group {
            if group.len() == 1 {
                // llama_init_from_model's own warning.
                warnings.push(
                    "-sm tensor: SPLIT_MODE_TENSOR being used for a single device is not recommended"
                        .into(),
                );
            }
            let (steps, bytes) = tensor_split::allreduce_buffers(model, group.len(), ctx.n_ubatch);
            if steps > 0 {
                warnings.push(format!(
                    "-sm tensor: at the first decode each device also allocates {steps} all-reduce buffer(s) of {bytes} B (not in compute_bytes: llama.cpp's breakdown does not have them)"
                ));
            }
        }
    }
    if model
        .blocks
        .iter()
        .any(|b| b.recurrent || b.bytes.contains_key(&TensorGroup::Recurrent))
    {
        warnings.push("recurrent layers: compute buffer approximated".into());
    }
    let sim = Simulation {
        build,
        ctx,
        layout,
        buffers,
        devices: dev_rows,
        layers,
        splits_pp: comp.splits_pp,
        splits_tg: comp.splits_tg,
        output_buffer: (out_buft.name(devices), output_bytes),
        warnings,
    };
    Ok((sim, placement))
}

#[cfg(test)]
mod testmodel;
#[cfg(test)]
mod tests;
