//! `ggplan mem MODEL [--hardware FILE|PRESET] [--json] -- <llama-server flags>`:
//! what llama.cpp allocates on each device for these flags (weights,
//! KV/recurrent state, compute buffer, output buffer), against capacity.
//!
//! JSON (stable field names):
//! `{ "llama_build": 11434, "tool": "server",
//!    "devices": [{ "name", "kind", "model_bytes", "context_bytes",
//!                  "compute_bytes", "output_bytes", "total_bytes",
//!                  "capacity_bytes", "unverified" }],
//!    "layers": [{ "index", "device" }], "graph_splits": 3, "graph_splits_tg": 3,
//!    "buffers": [{ "buft", "device", "model", "context", "compute" }],
//!    "context": { "n_ctx", "n_ctx_seq", "n_stream", "n_seq_max", "n_batch",
//!                 "n_ubatch", "n_outputs_max", "kv_unified", "flash_attn", "cells_swa" },
//!    "output_buffer": { "buft", "bytes" },
//!    "fit": { "applied", "status", "reason", "argv", "changed": { "c", "ngl", "ts", "ot" },
//!             "probes" } | null,
//!    "warnings": [..] }`.
//! With `-fit on` (llama.cpp's default) the memory shown is that of the
//! flags after `--fit` (`llamacpp::fit`, common/fit.cpp): fit only changes
//! parameters the user left unset, and only when the given ones leave less
//! than `--fit-target` free on some device. `fit` is null with `-fit off`.
//! The host is one device `CPU` summing every host buffer type;
//! `context_bytes` is KV plus recurrent state; `capacity_bytes` is memory
//! minus reserve (`null` when unknown). `unverified`: sizes of this backend
//! follow llama.cpp's code but were not measured (CUDA alignment and row
//! padding, FA temporaries, pipeline-parallel copies).
//! Exit code 3 when a device is over capacity.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{Cell, Color};
use serde::Serialize;

use crate::cli::exit;
use crate::cli::table::new_table;
use crate::hardware::presets;
use crate::llamacpp::{self, device, fit, Flags, LlamaBuild, Options, Tool};
use crate::model::Model;
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf (any shard) or a model profile .toml.
    pub model: PathBuf,
    /// Hardware file or preset name; without it, CPU only.
    #[arg(long = "hw", visible_alias = "hardware", value_name = "FILE|PRESET")]
    pub hardware: Option<String>,
    /// Output semantics of the tool that runs the flags: `server` (outputs
    /// reserved per slot) or `completion` (llama-completion, llama-bench,
    /// llama-fit-params: the whole batch).
    #[arg(long, default_value = "server", value_parser = ["server", "completion"])]
    pub tool: String,
    /// The llama.cpp build to mirror (older builds differ in -ngl counting,
    /// the server's -np default, output reservation, -sm row).
    #[arg(long, default_value_t = llamacpp::FIXTURE_BUILD.0)]
    pub llama_build: u32,
    /// Simulate llama.cpp's no-alloc dry run (llama-fit-params): host weights
    /// in plain buffers instead of the mmap span.
    #[arg(long)]
    pub no_alloc: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also print every buffer type and the context parameters.
    #[arg(long)]
    pub explain: bool,
    /// llama-server flags, after `--`.
    #[arg(last = true, allow_hyphen_values = true)]
    pub flags: Vec<String>,
}

#[derive(Serialize)]
struct DeviceRow {
    name: String,
    kind: String,
    model_bytes: u64,
    context_bytes: u64,
    compute_bytes: u64,
    output_bytes: u64,
    total_bytes: u64,
    capacity_bytes: Option<u64>,
    unverified: bool,
}

#[derive(Serialize)]
struct ContextRow {
    n_ctx: u64,
    n_ctx_seq: u64,
    n_stream: u64,
    n_seq_max: u64,
    n_batch: u64,
    n_ubatch: u64,
    n_outputs_max: u64,
    kv_unified: bool,
    flash_attn: bool,
    cells_swa: Option<u64>,
}

#[derive(Serialize)]
struct OutputRow {
    buft: String,
    bytes: u64,
}

/// What `--fit` changed (the parameters llama.cpp then loads with).
#[derive(Serialize)]
struct FitChanged {
    /// `-c` fit chose (only when `-c` was unset).
    c: Option<u64>,
    /// `-ngl` fit chose.
    ngl: Option<u32>,
    /// `-ts` fit chose (layers per device, several devices).
    ts: Option<Vec<u32>>,
    /// `-ot` entries fit added (`pattern=BUFT`).
    ot: Vec<String>,
}

#[derive(Serialize)]
struct FitReport {
    /// fit changed something; the devices above show the fitted flags.
    applied: bool,
    /// `unchanged` (the flags leave every target free), `fitted` or `failed`.
    status: &'static str,
    /// Why fit gave up (`failed`), as llama.cpp words it.
    reason: Option<String>,
    /// fit's changes as llama-server flags (`-c N -ngl N -ts a,b -ot …`).
    argv: Vec<String>,
    changed: FitChanged,
    /// Dry runs fit made (each a full simulation here).
    probes: usize,
}

#[derive(Serialize)]
struct Report {
    llama_build: u32,
    tool: String,
    devices: Vec<DeviceRow>,
    layers: Vec<llamacpp::LayerUse>,
    graph_splits: u32,
    graph_splits_tg: u32,
    buffers: Vec<llamacpp::BufferUse>,
    context: ContextRow,
    output_buffer: OutputRow,
    /// The planner's speed prediction for these flags (`ggplan plan`'s
    /// model, README "Speed model"); null without bandwidths in `--hw`.
    predicted: Option<crate::solver::speed::Prediction>,
    /// `--fit` (null with `-fit off`).
    fit: Option<FitReport>,
    warnings: Vec<String>,
}

fn mib(b: u64) -> String {
    format!("{:.2}", Bytes(b).as_mib_f64())
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut flags = Flags::parse(&args.flags)?;
    flags.tool = if args.tool == "completion" {
        Tool::Completion
    } else {
        Tool::Server
    };
    let model = Model::load(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let draft = match &flags.draft {
        Some(d) if !d.model.is_empty() => Some(
            Model::load(std::path::Path::new(&d.model))
                .with_context(|| format!("loading draft model {}", d.model))?,
        ),
        _ => None,
    };
    let hw = match &args.hardware {
        Some(h) => Some(presets::load_file_or_preset(h)?.0),
        None => None,
    };
    let devices = hw.as_ref().map(device::from_hardware).unwrap_or_default();
    let opts = Options {
        build: LlamaBuild(args.llama_build),
        no_alloc: args.no_alloc,
        ..Options::default()
    };
    // `--fit` (common_fit_params, run by common_init_from_params before the
    // model is loaded): the host's total memory matters only without devices.
    let host_total = hw
        .as_ref()
        .map(|h| h.host.memory_mib.saturating_mul(crate::units::MIB));
    let fitted = if flags.fit {
        Some(fit::fit(
            &model,
            draft.as_ref(),
            &devices,
            &flags,
            &opts,
            host_total,
        )?)
    } else {
        None
    };
    let flags = fitted.as_ref().map_or(flags, |f| f.flags.clone());
    let mut sim = llamacpp::simulate(&model, draft.as_ref(), &devices, &flags, &opts)?;
    let fit_report = fitted.as_ref().map(fit_report);
    if fitted.is_some() {
        sim.warnings.retain(|w| w != llamacpp::FIT_NOT_APPLIED);
    }

    let capacity = |name: &str| -> Option<u64> {
        let hw = hw.as_ref()?;
        if name == "CPU" {
            return Some(hw.host_capacity().0);
        }
        hw.device(name).map(|d| hw.effective_capacity(d).0)
    };
    let rows: Vec<DeviceRow> = sim
        .devices
        .iter()
        .map(|d| DeviceRow {
            name: d.name.clone(),
            kind: d.kind.clone(),
            model_bytes: d.model_bytes,
            context_bytes: d.context_bytes,
            compute_bytes: d.compute_bytes,
            output_bytes: d.output_bytes,
            total_bytes: d.total_bytes,
            capacity_bytes: capacity(&d.name),
            unverified: d.unverified,
        })
        .collect();
    let over: Vec<&DeviceRow> = rows
        .iter()
        .filter(|r| r.capacity_bytes.is_some_and(|c| r.total_bytes > c))
        .collect();
    let over_names: Vec<String> = over.iter().map(|r| r.name.clone()).collect();

    let report = Report {
        llama_build: args.llama_build,
        tool: args.tool.clone(),
        devices: rows,
        layers: sim.layers.clone(),
        graph_splits: sim.splits_pp,
        graph_splits_tg: sim.splits_tg,
        buffers: sim.buffers.clone(),
        context: ContextRow {
            n_ctx: sim.ctx.n_ctx,
            n_ctx_seq: sim.ctx.n_ctx_seq,
            n_stream: sim.ctx.n_stream,
            n_seq_max: sim.ctx.n_seq_max,
            n_batch: sim.ctx.n_batch,
            n_ubatch: sim.ctx.n_ubatch,
            n_outputs_max: sim.ctx.n_outputs_max,
            kv_unified: sim.ctx.kv_unified,
            flash_attn: sim.ctx.flash_attn,
            cells_swa: sim.layout.cells_swa,
        },
        output_buffer: OutputRow {
            buft: sim.output_buffer.0.clone(),
            bytes: sim.output_buffer.1,
        },
        predicted: hw.as_ref().and_then(|hw| {
            crate::solver::exact::predict_simulated(&model, hw, &flags, &sim, &opts)
        }),
        fit: fit_report,
        warnings: sim.warnings.clone(),
    };

    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let mut t = new_table([
            "device",
            "model MiB",
            "KV/state MiB",
            "compute MiB",
            "output MiB",
            "total MiB",
            "capacity MiB",
            "headroom MiB",
        ]);
        for r in &report.devices {
            let name = if r.unverified {
                format!("{} ({})*", r.name, r.kind)
            } else {
                format!("{} ({})", r.name, r.kind)
            };
            let (cap, head) = match r.capacity_bytes {
                Some(c) => {
                    let h = c as i128 - r.total_bytes as i128;
                    let hs = format!("{:.2}", h as f64 / crate::units::MIB as f64);
                    let cell = if h < 0 {
                        Cell::new(hs).fg(Color::Red)
                    } else {
                        Cell::new(hs)
                    };
                    (Cell::new(mib(c)), cell)
                }
                None => (Cell::new("?"), Cell::new("?")),
            };
            let total = if r.capacity_bytes.is_some_and(|c| r.total_bytes > c) {
                Cell::new(mib(r.total_bytes)).fg(Color::Red)
            } else {
                Cell::new(mib(r.total_bytes))
            };
            t.add_row(vec![
                Cell::new(name),
                Cell::new(mib(r.model_bytes)),
                Cell::new(mib(r.context_bytes)),
                Cell::new(mib(r.compute_bytes)),
                Cell::new(mib(r.output_bytes)),
                total,
                cap,
                head,
            ]);
        }
        writeln!(out, "{t}")?;
        let mut layer_line = String::new();
        let mut i = 0;
        while i < report.layers.len() {
            let d = &report.layers[i].device;
            let mut j = i;
            while j + 1 < report.layers.len() && &report.layers[j + 1].device == d {
                j += 1;
            }
            let last = report.layers.len() - 1;
            let span = |k: usize| {
                if k == last {
                    "output".to_string()
                } else {
                    k.to_string()
                }
            };
            let part = if i == j {
                span(i)
            } else {
                format!("{}-{}", span(i), span(j))
            };
            if !layer_line.is_empty() {
                layer_line.push_str(", ");
            }
            layer_line.push_str(&format!("{part} → {d}"));
            i = j + 1;
        }
        writeln!(out, "layers: {layer_line}")?;
        writeln!(
            out,
            "graph splits: {} (bs={}), {} (bs={}); n_ctx {}, {} slot(s){}, flash attention {}",
            report.graph_splits,
            sim.ctx.pp_tokens(),
            report.graph_splits_tg,
            sim.ctx.n_seq_max,
            report.context.n_ctx,
            report.context.n_seq_max,
            if report.context.kv_unified {
                " (unified KV)"
            } else {
                ""
            },
            if report.context.flash_attn {
                "on"
            } else {
                "off"
            },
        )?;
        if report
            .devices
            .iter()
            .any(|d| d.unverified && d.total_bytes > 0)
        {
            writeln!(
                out,
                "* unverified: backend-specific terms (alignment, row padding, FA temporaries, pipeline copies) follow llama.cpp's code but were not measured"
            )?;
        }
        if args.explain {
            let mut b = new_table([
                "buffer type",
                "device",
                "model MiB",
                "context MiB",
                "compute MiB",
            ]);
            for r in &report.buffers {
                b.add_row(vec![
                    r.buft.clone(),
                    r.device.clone(),
                    mib(r.model),
                    mib(r.context),
                    mib(r.compute),
                ]);
            }
            writeln!(out, "{b}")?;
            writeln!(
                out,
                "output buffer: {} MiB in {}",
                mib(report.output_buffer.bytes),
                report.output_buffer.buft
            )?;
        }
        if let Some(f) = &report.fit {
            writeln!(out, "{}", fit_line(f, args.explain))?;
        }
        for w in &report.warnings {
            writeln!(out, "warning: {w}")?;
        }
        if !over_names.is_empty() {
            writeln!(out, "over capacity: {}", over_names.join(", "))?;
        }
    }
    Ok(if over_names.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::DOES_NOT_FIT)
    })
}

fn fit_report(o: &fit::FitOutcome) -> FitReport {
    let (status, reason) = match &o.status {
        fit::FitStatus::Unchanged => ("unchanged", None),
        fit::FitStatus::Fitted => ("fitted", None),
        fit::FitStatus::Failed(r) => ("failed", Some(r.clone())),
    };
    let ot = o
        .argv
        .iter()
        .position(|a| a == "-ot")
        .and_then(|i| o.argv.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let pl = o.placement.as_ref();
    FitReport {
        applied: !o.argv.is_empty(),
        status,
        reason,
        argv: o.argv.clone(),
        changed: FitChanged {
            c: o.n_ctx,
            ngl: pl.map(|p| p.n_gpu_layers),
            ts: pl
                .filter(|p| p.tensor_split.len() > 1)
                .map(|p| p.tensor_split.clone()),
            ot,
        },
        probes: o.probes,
    }
}

/// The table's note on `--fit`: what it changed, in llama-server flags
/// (`-ot` lists shortened to a count unless `--explain`).
fn fit_line(f: &FitReport, explain: bool) -> String {
    let mut shown = Vec::new();
    let mut i = 0;
    while i < f.argv.len() {
        let a = &f.argv[i];
        let v = f.argv.get(i + 1).cloned().unwrap_or_default();
        if a == "-ot" && !explain && f.changed.ot.len() > 2 {
            shown.push(format!(
                "-ot <{} patterns, see --explain or --json>",
                f.changed.ot.len()
            ));
        } else if a == "-ot" {
            shown.push(format!("-ot \"{v}\""));
        } else {
            shown.push(format!("{a} {v}"));
        }
        i += 2;
    }
    let how = shown.join(" ");
    match (f.status, &f.reason) {
        ("unchanged", _) if how.is_empty() => format!(
            "fit: no changes needed (every device keeps its --fit-target free; {} dry run(s))",
            f.probes
        ),
        ("unchanged", _) => format!(
            "fit: {how} (the unset context becomes n_ctx_train × KV streams; nothing else needed changing)"
        ),
        ("failed", Some(r)) if how.is_empty() => {
            format!("fit: failed ({r}); memory shown for the flags as given")
        }
        ("failed", Some(r)) => {
            format!("fit: failed ({r}) after setting {how}; memory shown with that change")
        }
        _ => format!(
            "fit: applied {how} ({} dry run(s)); memory shown for the fitted flags (-fit off keeps the flags as given)",
            f.probes
        ),
    }
}
