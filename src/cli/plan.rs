//! `ggplan plan MODEL --hw FILE [--ctx N | --max-ctx] [--json] [--explain] [--sweep]`:
//! the placement with the best predicted speed that fits every device, and
//! the llama-server flags that produce exactly it.
//!
//! JSON (stable field names): `{ fits, model, hardware, n_ctx, slots,
//! kv_unified, ubatch, batch, flash_attn, type_k, type_v,
//! devices: [{ name, kind, model_bytes, context_bytes, compute_bytes,
//! output_bytes, total_bytes, memory_bytes, capacity_bytes, headroom_bytes,
//! time_share }], predicted: { decode_tps, prefill_tps, splits_tg,
//! splits_pp, shares: [{ name, decode_s, share }] } | null, solver_status,
//! solver_ms, rounds, simulator, argv, draft, baselines?, sweep? }`. The host
//! is the last `devices` row (`name` = `CPU`). `draft` is null without
//! `--draft`, else `{ device, n_max, accept, tokens_per_step,
//! draft_decode_tps, verify_s, target_decode_tps, effective_decode_tps }`;
//! with a draft `predicted.decode_tps` is the effective speed of
//! speculative decoding and `devices[]` include the draft's memory. `predicted` is null when the hardware
//! file lacks bandwidths. A request that cannot fit exits with code 3 and
//! `{ fits: false, short: [{ target, need, capacity }], nearest: [{ change,
//! n_ctx, decode_tps, argv }] }`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::cli::exit;
use crate::cli::table::new_table;
use crate::gguf::GgmlType;
use crate::hardware::{presets, Hardware};
use crate::model::Model;
use crate::solver::baseline::{baselines, why, Baseline};
use crate::solver::exact::{LlamaCppDraftSimulator, LlamaCppSimulator};
use crate::solver::milp::Limits;
use crate::solver::plan::{
    CtxRequest, DraftModel, DraftPlace, Outcome, PlanError, Planner, Request, SolverChoice,
    SweepRow,
};
use crate::solver::sim::{SimReport, Simulator};
use crate::solver::synthetic;
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: a GGUF file or a saved profile (`synthetic:qwen3-next`,
    /// `synthetic:llama-8b`, `synthetic:qwen3-30b` are built in for tests).
    pub model: String,
    /// Hardware file or preset name.
    #[arg(long)]
    pub hw: String,
    /// Context size (`-c`, total over all slots).
    #[arg(long, conflicts_with = "max_ctx")]
    pub ctx: Option<u64>,
    /// Plan the largest context that fits.
    #[arg(long)]
    pub max_ctx: bool,
    /// Parallel slots (`-np`).
    #[arg(long, default_value_t = 1)]
    pub np: u32,
    /// One KV cache shared by all slots (`-kvu`).
    #[arg(long)]
    pub kvu: bool,
    /// Micro-batch candidates (`-ub`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512")]
    pub ub: Vec<u64>,
    /// Logical batch (`-b`). Default: searched from {2048, 4096, ub}, at
    /// least the micro-batch and, with --draft, -np × (1 + --draft-max).
    #[arg(short = 'b', long)]
    pub batch: Option<u64>,
    /// Flash attention candidates: on, off.
    #[arg(long, value_delimiter = ',', default_value = "on")]
    pub fa: Vec<String>,
    /// Allowed KV cache types: `f16`, `q8_0`, or `K/V` pairs like `q8_0/f16`.
    #[arg(long, value_delimiter = ',', default_value = "f16")]
    pub kv_types: Vec<String>,
    /// Memory left free on every device (MiB): CUDA context and pools.
    #[arg(long, default_value_t = 1024)]
    pub margin_mib: u64,
    /// Use only these devices, in this order.
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<String>>,
    /// Never move routed experts (dense models: FFNs) to the host.
    #[arg(long)]
    pub no_ffn_host: bool,
    /// Placement solver: auto (the DP; the MILP where the DP's plan is not proven within --gap), dp, milp.
    #[arg(long, default_value = "auto")]
    pub solver: String,
    /// MILP time limit in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub time_limit: f64,
    /// Relative gap at which a plan counts as proven (MILP, or the DP against its lower bound).
    #[arg(long, default_value_t = 0.02)]
    pub gap: f32,
    /// Table of the largest context per KV type × slots × micro-batch.
    #[arg(long)]
    pub sweep: bool,
    /// Slots for --sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub sweep_np: Vec<u32>,
    /// Micro-batches for --sweep.
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
    pub sweep_ub: Vec<u64>,
    /// KV types for --sweep.
    #[arg(long, value_delimiter = ',', default_value = "f16,q8_0,q4_0")]
    pub sweep_kv: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Show the --fit and plain -ngl baselines and why the plan differs.
    #[arg(long)]
    pub explain: bool,
    /// Print the plan as a deploy config instead of the table: shell, models-conf, llama-swap, preset.
    #[arg(long, value_name = "FORMAT")]
    pub emit: Option<String>,
    /// Entry name for --emit (default: the model file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// The GGUF path llama-server loads (`-m` in the printed command and
    /// --emit); default: MODEL. Set it when MODEL is a profile .toml, which
    /// llama-server cannot load.
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<String>,
    /// A draft model for speculative decoding (GGUF or profile .toml; a
    /// small model of the same family). Its memory is reserved where the
    /// plan puts it and `-md … --spec-type draft-simple` is emitted.
    #[arg(long, value_name = "MODEL")]
    pub draft: Option<String>,
    /// The draft GGUF path llama-server loads (`-md`); default: --draft.
    #[arg(long, value_name = "PATH", requires = "draft")]
    pub draft_path: Option<String>,
    /// Tokens drafted per step (`--spec-draft-n-max`; llama.cpp's default
    /// 3), or `auto`: the count in 1..=16 with the best predicted speed.
    #[arg(long, default_value = "3", requires = "draft")]
    pub draft_max: String,
    /// Assumed probability that the target accepts a drafted token (speed
    /// model only; llama-server logs the measured `draft acceptance`).
    #[arg(long, default_value_t = 0.7, requires = "draft")]
    pub draft_accept: f64,
    /// Put the draft on this device (or `CPU`); default: the fastest plan
    /// over every GPU and the host.
    #[arg(long, value_name = "DEV", requires = "draft")]
    pub draft_dev: Option<String>,
    /// Keep the hardware file's device order (by default the planner also
    /// tries each device last in `-dev`, where it holds the output layer).
    #[arg(long)]
    pub no_reorder: bool,
    /// Leave the solver's run time out of the table output (reproducible
    /// text, e.g. the examples in generated/).
    #[arg(long)]
    pub no_timing: bool,
}

impl Args {
    /// The `-m` path for llama-server.
    fn gguf_path(&self) -> &str {
        self.model_path.as_deref().unwrap_or(&self.model)
    }
}

/// Load the model: a GGUF (any shard) or a profile TOML, or one of the
/// built-in synthetic models (tests, benches).
fn load_model(spec: &str) -> anyhow::Result<Model> {
    let s = match spec {
        "synthetic:qwen3-next" => synthetic::Spec::qwen3_next_like(),
        "synthetic:llama-8b" => synthetic::Spec::llama_8b_like(),
        "synthetic:qwen3-30b" => synthetic::Spec::qwen3_30b_like(),
        _ => return Ok(Model::load(std::path::Path::new(spec))?),
    };
    Ok(synthetic::build(&s))
}

/// The simulator plans are checked with: the exact llama.cpp simulator.
fn simulator() -> Box<dyn Simulator> {
    Box::new(LlamaCppSimulator::default())
}

fn kv_pair(s: &str) -> anyhow::Result<(GgmlType, GgmlType)> {
    let (k, v) = s.split_once('/').unwrap_or((s, s));
    let t = |x: &str| {
        GgmlType::from_name(x).with_context(|| format!("--kv-types: unknown cache type {x:?}"))
    };
    Ok((t(k)?, t(v)?))
}

fn request(a: &Args) -> anyhow::Result<Request> {
    let fa =
        a.fa.iter()
            .map(|f| match f.as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => bail!("--fa: expected on or off, got {f:?}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    let solver = match a.solver.as_str() {
        "auto" => SolverChoice::Auto,
        "dp" => SolverChoice::Dp,
        "milp" => SolverChoice::Milp,
        s => bail!("--solver: expected auto, dp or milp, got {s:?}"),
    };
    if a.ub.contains(&0) || a.np == 0 {
        bail!("--ub and --np must be positive");
    }
    if a.time_limit.is_nan() || a.time_limit <= 0.0 || a.gap.is_nan() || a.gap < 0.0 {
        bail!("--time-limit must be positive and --gap non-negative");
    }
    Ok(Request {
        ctx: if a.max_ctx {
            CtxRequest::Max
        } else {
            CtxRequest::Fixed(a.ctx.unwrap_or(4096))
        },
        slots: a.np,
        kv_unified: a.kvu,
        ubatch: a.ub.clone(),
        batch: a.batch,
        flash_attn: fa,
        kv_types: a
            .kv_types
            .iter()
            .map(|s| kv_pair(s))
            .collect::<anyhow::Result<_>>()?,
        margin: Bytes::from_mib(a.margin_mib),
        devices: a.devices.clone(),
        allow_ffn_host: !a.no_ffn_host,
        solver,
        limits: Limits {
            time_limit_s: a.time_limit,
            mip_gap: a.gap,
        },
        draft_place: None,
        reorder: !a.no_reorder,
        dev_order: None,
    })
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
    memory_bytes: Option<u64>,
    capacity_bytes: u64,
    headroom_bytes: i64,
    time_share: Option<f64>,
}

fn device_rows(
    hw: &Hardware,
    r: &SimReport,
    o: Option<&crate::solver::speed::Prediction>,
    margin: Bytes,
) -> Vec<DeviceRow> {
    let share = |name: &str| {
        o.and_then(|p| p.shares.iter().find(|s| s.name == name))
            .map_or(Some(0.0), |s| Some(s.share))
    };
    let mut rows: Vec<DeviceRow> = hw
        .devices
        .iter()
        .zip(&r.devices)
        .map(|(d, x)| {
            let cap = hw.effective_capacity(d).saturating_sub(margin).0;
            DeviceRow {
                name: d.name.clone(),
                kind: d.kind.as_str().into(),
                model_bytes: x.model_bytes,
                context_bytes: x.context_bytes,
                compute_bytes: x.compute_bytes,
                output_bytes: x.output_bytes,
                total_bytes: x.total(),
                memory_bytes: Some(d.memory().0),
                capacity_bytes: cap,
                headroom_bytes: cap as i64 - x.total() as i64,
                time_share: if o.is_some() { share(&d.name) } else { None },
            }
        })
        .collect();
    let h = &r.host;
    let unified: u64 = hw
        .devices
        .iter()
        .zip(&r.devices)
        .filter(|(d, _)| d.draws_from_host())
        .map(|(_, x)| x.total())
        .sum();
    let cap = hw.host_capacity().0;
    rows.push(DeviceRow {
        name: "CPU".into(),
        kind: "cpu".into(),
        model_bytes: h.model_bytes,
        context_bytes: h.context_bytes,
        compute_bytes: h.compute_bytes,
        output_bytes: h.output_bytes,
        total_bytes: h.total(),
        memory_bytes: Some(hw.host.memory().0),
        capacity_bytes: cap,
        headroom_bytes: cap as i64 - h.total() as i64 - unified as i64,
        time_share: if o.is_some() { share("CPU") } else { None },
    });
    rows
}

fn signed(b: i64) -> String {
    if b < 0 {
        format!("-{}", Bytes(b.unsigned_abs()))
    } else {
        Bytes(b as u64).to_string()
    }
}

fn device_table(rows: &[DeviceRow]) -> comfy_table::Table {
    let mut t = new_table([
        "device",
        "model",
        "KV",
        "compute",
        "output",
        "total",
        "headroom",
        "time share",
    ]);
    for r in rows {
        t.add_row(vec![
            r.name.clone(),
            Bytes(r.model_bytes).to_string(),
            Bytes(r.context_bytes).to_string(),
            Bytes(r.compute_bytes).to_string(),
            Bytes(r.output_bytes).to_string(),
            Bytes(r.total_bytes).to_string(),
            signed(r.headroom_bytes),
            r.time_share
                .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        ]);
    }
    t
}

/// A shell-quoted argv line.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.,/=:".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Serialize)]
struct BaselineJson<'a> {
    name: &'a str,
    description: &'a str,
    fits: bool,
    argv: &'a [String],
    devices: Vec<DeviceRow>,
    predicted: Option<Predicted>,
    why: Vec<String>,
}

#[derive(Serialize)]
struct Predicted {
    decode_tps: f64,
    prefill_tps: f64,
    splits_tg: u32,
    splits_pp: u32,
    shares: Vec<crate::solver::speed::Share>,
}

fn predicted(p: &crate::solver::speed::Prediction) -> Predicted {
    Predicted {
        decode_tps: p.decode_tps,
        prefill_tps: p.prefill_tps,
        splits_tg: p.splits_tg,
        splits_pp: p.splits_pp,
        shares: p.shares.clone(),
    }
}

fn type_name(t: GgmlType) -> String {
    t.name().unwrap_or("?").to_ascii_lowercase()
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let (hw, source) = presets::load_file_or_preset(&a.hw)?;
    let model = load_model(&a.model)?;
    let mut req = request(a)?;
    let draft_model = match &a.draft {
        Some(d) => Some(load_model(d).with_context(|| format!("--draft {d}"))?),
        None => None,
    };
    let mut planner = Planner::new(&model, &hw, req.devices.as_deref())?;
    let sim: Box<dyn Simulator + '_> = match &draft_model {
        Some(dm) => {
            if !(0.0..=1.0).contains(&a.draft_accept) {
                bail!("--draft-accept must be between 0 and 1");
            }
            let (n_max, auto) = match a.draft_max.as_str() {
                "auto" => (16, true),
                n => match n.parse::<u32>() {
                    Ok(n) if n > 0 => (n, false),
                    _ => bail!("--draft-max: expected a positive count or auto, got {n:?}"),
                },
            };
            req.draft_place = match a.draft_dev.as_deref() {
                None => None,
                Some("CPU") | Some("cpu") => Some(DraftPlace::Host),
                Some(n) => Some(DraftPlace::Device(
                    hw.devices
                        .iter()
                        .position(|d| d.name == n)
                        .with_context(|| format!("--draft-dev: no device named {n}"))?,
                )),
            };
            planner = planner.with_draft(DraftModel {
                model: dm,
                path: a
                    .draft_path
                    .clone()
                    .unwrap_or_else(|| a.draft.clone().unwrap_or_default()),
                n_max,
                auto,
                accept: a.draft_accept,
            });
            Box::new(LlamaCppDraftSimulator {
                opts: Default::default(),
                draft: dm,
            })
        }
        None => simulator(),
    };
    if a.sweep {
        return sweep(a, &planner, &req, sim.as_ref());
    }
    let out = match planner.plan(&req, sim.as_ref()) {
        Ok(o) => o,
        Err(PlanError::DoesNotFit { short, nearest }) => {
            if a.json {
                #[derive(Serialize)]
                struct NoFit<'a> {
                    fits: bool,
                    short: &'a [crate::hardware::Overflow],
                    nearest: &'a [crate::solver::plan::Nearest],
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&NoFit {
                        fits: false,
                        short: &short,
                        nearest: &nearest
                    })?
                );
            } else {
                for s in &short {
                    eprintln!("error: does not fit: {s}");
                }
                if nearest.is_empty() {
                    eprintln!("no nearby request fits either (smaller context, quantized KV, one slot, experts on the host)");
                } else {
                    eprintln!("nearest plans that fit:");
                    for n in &nearest {
                        eprintln!(
                            "  {:<22} -c {:<7} {:>7.1} t/s   {}",
                            n.change,
                            n.n_ctx,
                            n.decode_tps,
                            shell_line(&n.argv)
                        );
                    }
                }
            }
            return Ok(ExitCode::from(exit::DOES_NOT_FIT));
        }
        Err(e) => return Err(e.into()),
    };
    let pred = planner.rates.complete.then_some(&out.prediction);
    let rows = device_rows(&hw, &out.report, pred, req.margin);
    let bases: Vec<Baseline> = if a.explain {
        baselines(&planner, &out.plan, req.margin, sim.as_ref())
    } else {
        Vec::new()
    };
    if a.json {
        let done = Done {
            hw: &hw,
            source: &source,
            model: &model,
            out: &out,
            bases: &bases,
            margin: req.margin,
        };
        return json(a, &done, rows);
    }
    if let Some(f) = &a.emit {
        print!("{}", emit(a, f, &source, &out, &rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_plan(a, &model, &source, &out, &rows);
    if a.explain {
        explain(&hw, &planner, &out, &bases, req.margin);
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan as a deploy config (`crate::emit`), with the prediction in its comment block.
fn emit(
    a: &Args,
    format: &str,
    source: &str,
    out: &Outcome,
    rows: &[DeviceRow],
) -> anyhow::Result<String> {
    use crate::emit::{render, Deployment, DevicePrediction, Format, PlanSummary, Speed};
    let f = Format::ALL
        .into_iter()
        .find(|f| f.as_str() == format)
        .with_context(|| {
            let all: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
            format!(
                "--emit: unknown format {format:?} (one of {})",
                all.join(", ")
            )
        })?;
    let name = a.name.clone().unwrap_or_else(|| {
        std::path::Path::new(a.gguf_path())
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .trim_start_matches("synthetic:")
            .to_string()
    });
    let mut d = Deployment::new(name, a.gguf_path().to_string(), out.argv.clone());
    d.summary = Some(PlanSummary {
        ggplan_version: env!("CARGO_PKG_VERSION").to_string(),
        hardware_file: Some(source.to_string()),
        devices: rows
            .iter()
            .map(|r| DevicePrediction {
                device: r.name.clone(),
                predicted: Bytes(r.total_bytes),
                capacity: Some(Bytes(r.capacity_bytes)),
            })
            .collect(),
        tokens_per_s: out.rates_complete.then_some(Speed {
            prompt: out.prediction.prefill_tps,
            generation: out.prediction.decode_tps,
        }),
    });
    Ok(render(f, &d)?)
}

fn print_plan(a: &Args, model: &Model, source: &str, out: &Outcome, rows: &[DeviceRow]) {
    let c = &out.plan.ctx;
    println!(
        "{} on {source}: -c {} -np {}{} -b {} -ub {} -fa {} -ctk {} -ctv {}",
        model.profile.name,
        c.n_ctx,
        c.n_seq,
        if c.kv_unified { " -kvu" } else { "" },
        c.batch,
        c.ubatch,
        if c.flash_attn { "on" } else { "off" },
        type_name(c.type_k),
        type_name(c.type_v)
    );
    println!("{}", device_table(rows));
    if out.rates_complete {
        println!(
            "predicted: decode {:.1} t/s, prefill {:.0} t/s ({} graph splits in decode, {} in prefill)",
            out.prediction.decode_tps,
            out.prediction.prefill_tps,
            out.prediction.splits_tg,
            out.prediction.splits_pp
        );
    } else {
        println!(
            "predicted: - (the hardware file lacks bandwidths; plans were ranked with defaults)"
        );
    }
    if let Some(d) = &out.draft {
        if out.rates_complete {
            println!(
                "draft on {}: {} tokens per step at {:.0} % acceptance (assumed) = {:.2} tokens per verify; draft {:.1} t/s, target alone {:.1} t/s -> effective {:.1} t/s",
                d.device,
                d.n_max,
                d.accept * 100.0,
                d.tokens_per_step,
                d.draft_decode_tps,
                d.target_decode_tps,
                d.effective_decode_tps
            );
            if d.effective_decode_tps < d.target_decode_tps {
                println!(
                    "note: the draft slows decoding here (verifying {} tokens reads more of the target than it saves); plan without --draft",
                    d.n_max + 1
                );
            }
        } else {
            println!("draft on {}: {} tokens per step", d.device, d.n_max);
        }
    }
    println!(
        "solver: {}{}{}; checked by: {}{}",
        out.status.as_str(),
        if out.status == crate::solver::milp::Status::Gap {
            format!(" (within {:.1} % of optimal)", a.gap * 100.0)
        } else {
            String::new()
        },
        if a.no_timing {
            String::new()
        } else {
            format!(" in {:.1} ms", out.solver_ms)
        },
        out.report.simulator,
        if out.rounds > 1 {
            format!(
                " (re-planned {} times after the simulator's feedback)",
                out.rounds - 1
            )
        } else {
            String::new()
        }
    );
    println!();
    println!(
        "llama-server -m {} {}",
        shell_line(&[a.gguf_path().to_string()]),
        shell_line(&out.argv)
    );
}

fn explain(hw: &Hardware, planner: &Planner, out: &Outcome, bases: &[Baseline], margin: Bytes) {
    println!();
    let mut t = new_table(["", "plan", "--fit (simulated)", "plain -ngl"]);
    let cell = |f: &dyn Fn(&SimReport) -> String, r: Option<&SimReport>| r.map_or("-".into(), f);
    let reports: Vec<Option<&SimReport>> = std::iter::once(Some(&out.report))
        .chain(bases.iter().map(|b| b.report.as_ref()))
        .collect();
    for (i, d) in hw.devices.iter().enumerate() {
        let mut row = vec![d.name.clone()];
        for r in &reports {
            row.push(cell(
                &|r: &SimReport| Bytes(r.devices[i].total()).to_string(),
                *r,
            ));
        }
        t.add_row(row);
    }
    let mut row = vec!["CPU".to_string()];
    for r in &reports {
        row.push(cell(&|r: &SimReport| Bytes(r.host.total()).to_string(), *r));
    }
    t.add_row(row);
    let layers = |l: &crate::solver::layout::Layout| {
        let gpu: Vec<String> = l
            .used_devices()
            .iter()
            .map(|&d| {
                format!(
                    "{}:{}",
                    hw.devices[d].name,
                    l.layer_dev.iter().filter(|x| **x == Some(d)).count()
                )
            })
            .collect();
        format!(
            "CPU:{} {} / FFN on host: {}",
            l.n_cpu_layers(),
            gpu.join(" "),
            l.ffn_host.iter().filter(|&&h| h).count()
        )
    };
    let mut row = vec!["layers".to_string(), layers(&out.plan.layout)];
    row.extend(bases.iter().map(|b| layers(&b.plan.layout)));
    t.add_row(row);
    let mut row = vec!["fits".to_string(), "yes".to_string()];
    row.extend(bases.iter().map(|b| {
        if b.fits {
            "yes".into()
        } else {
            "no".to_string()
        }
    }));
    t.add_row(row);
    if planner.rates.complete {
        let mut row = vec![
            "decode t/s".to_string(),
            format!("{:.1}", out.prediction.decode_tps),
        ];
        row.extend(
            bases
                .iter()
                .map(|b| format!("{:.1}", b.prediction.decode_tps)),
        );
        t.add_row(row);
        let mut row = vec![
            "prefill t/s".to_string(),
            format!("{:.0}", out.prediction.prefill_tps),
        ];
        row.extend(
            bases
                .iter()
                .map(|b| format!("{:.0}", b.prediction.prefill_tps)),
        );
        t.add_row(row);
    }
    println!("{t}");
    for b in bases {
        for s in why(&out.plan, &out.prediction, b) {
            println!("- {s}");
        }
        println!("  {}: {}", b.name, shell_line(&b.argv));
    }
    println!();
    println!(
        "How: every device keeps {margin} free; the DP searches every contiguous split (CPU prefix, \
         then one range per device in order) and, where a range does not fit, moves the routed \
         experts (dense models: FFN) of its first blocks to the host; the MILP covers models whose \
         blocks differ; with bandwidths it also tries other -dev orders, and with --draft every \
         place of the draft (its memory reserved first). Decode time = Σ bytes read per token ÷ \
         bandwidth + 20 µs per graph split (with a draft: accepted tokens per draft-and-verify \
         step); prefill = FLOPs ÷ TFLOPS + host weights copied per micro-batch (README \"Speed model\")."
    );
    if let Some(p) = planner.rates.complete.then_some(&out.prediction) {
        let shares: Vec<String> = p
            .shares
            .iter()
            .map(|s| format!("{} {:.0}%", s.name, s.share * 100.0))
            .collect();
        println!("decode time: {}", shares.join(", "));
    }
}

/// What the JSON report is built from.
struct Done<'a> {
    hw: &'a Hardware,
    source: &'a str,
    model: &'a Model,
    out: &'a Outcome,
    bases: &'a [Baseline],
    margin: Bytes,
}

fn json(a: &Args, done: &Done, rows: Vec<DeviceRow>) -> anyhow::Result<ExitCode> {
    let Done {
        hw,
        source,
        model,
        out,
        bases,
        margin,
    } = *done;
    #[derive(Serialize)]
    struct Report<'a> {
        fits: bool,
        model: &'a str,
        hardware: &'a str,
        n_ctx: u64,
        slots: u32,
        kv_unified: bool,
        ubatch: u64,
        batch: u64,
        flash_attn: bool,
        type_k: String,
        type_v: String,
        devices: Vec<DeviceRow>,
        predicted: Option<Predicted>,
        solver_status: &'static str,
        solver_ms: f64,
        rounds: u32,
        simulator: &'a str,
        argv: &'a [String],
        draft: Option<&'a crate::solver::plan::DraftPrediction>,
        #[serde(skip_serializing_if = "Option::is_none")]
        baselines: Option<Vec<BaselineJson<'a>>>,
    }
    let c = &out.plan.ctx;
    let pred = out.rates_complete.then(|| predicted(&out.prediction));
    let baselines = a.explain.then(|| {
        bases
            .iter()
            .map(|b| BaselineJson {
                name: &b.name,
                description: &b.description,
                fits: b.fits,
                argv: &b.argv,
                devices: b
                    .report
                    .as_ref()
                    .map(|r| {
                        device_rows(hw, r, out.rates_complete.then_some(&b.prediction), margin)
                    })
                    .unwrap_or_default(),
                predicted: out.rates_complete.then(|| predicted(&b.prediction)),
                why: why(&out.plan, &out.prediction, b),
            })
            .collect()
    });
    let r = Report {
        fits: true,
        model: &model.profile.name,
        hardware: source,
        n_ctx: c.n_ctx,
        slots: c.n_seq,
        kv_unified: c.kv_unified,
        ubatch: c.ubatch,
        batch: c.batch,
        flash_attn: c.flash_attn,
        type_k: type_name(c.type_k),
        type_v: type_name(c.type_v),
        devices: rows,
        predicted: pred,
        solver_status: match out.status {
            crate::solver::milp::Status::Optimal | crate::solver::milp::Status::DpExact => {
                "optimal"
            }
            crate::solver::milp::Status::Gap => "gap",
            crate::solver::milp::Status::TimeLimit => "time_limit",
            crate::solver::milp::Status::DpFallback => "heuristic",
        },
        solver_ms: out.solver_ms,
        rounds: out.rounds,
        simulator: &out.report.simulator,
        argv: &out.argv,
        draft: out.draft.as_ref(),
        baselines,
    };
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(ExitCode::SUCCESS)
}

fn sweep(
    a: &Args,
    planner: &Planner,
    req: &Request,
    sim: &dyn Simulator,
) -> anyhow::Result<ExitCode> {
    let kv = a
        .sweep_kv
        .iter()
        .map(|s| kv_pair(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows: Vec<SweepRow> = planner.sweep(req, &kv, &a.sweep_np, &a.sweep_ub, sim);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = new_table([
        "-ctk",
        "-ctv",
        "-np",
        "-ub",
        "max -c",
        "decode t/s",
        "prefill t/s",
    ]);
    for r in &rows {
        t.add_row(vec![
            r.type_k.clone(),
            r.type_v.clone(),
            r.slots.to_string(),
            r.ubatch.to_string(),
            r.max_ctx.map_or("does not fit".into(), |c| c.to_string()),
            r.decode_tps.map_or("-".into(), |x| format!("{x:.1}")),
            r.prefill_tps.map_or("-".into(), |x| format!("{x:.0}")),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
