//! `ggplan tp CONFIG --gpus N`: which tensor/pipeline-parallel sizes vLLM
//! accepts for a model, why the others fail (with vLLM's own error text), the
//! KV budget per GPU, and the `vllm serve` line for the recommended layout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::exit;
use crate::units::GIB;
use crate::vllm::memory::KvDtype;
use crate::vllm::plan::{resolve_quant, QuantChoice, Status};
use crate::vllm::rules::Verdict;
use crate::vllm::{plan, ArchConfig, GpuSpec, Plan, PlanOptions, VllmError, VllmVersion};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QuantArg {
    Bf16,
    Fp8,
    Fp8Block,
    Awq,
    Gptq,
    CompressedTensors,
    Mxfp4,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KvDtypeArg {
    Auto,
    Bfloat16,
    Fp8,
    Fp8E4m3,
    Fp8E5m2,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A HF config.json (or its directory), a .gguf file, a ggplan profile
    /// (.toml), or a model-configs.toml-style file (with --entry).
    pub config: PathBuf,
    /// The table to use from a file of several model configs.
    #[arg(long)]
    pub entry: Option<String>,
    /// Number of GPUs (TP 1..N and every TP × PP = N are checked). With
    /// `--hw`, the first N CUDA/ROCm devices of the file (default: all).
    #[arg(long, required_unless_present = "hw")]
    pub gpus: Option<u32>,
    /// A hardware file or preset name: GPU count, memory and compute
    /// capability come from its CUDA/ROCm devices.
    #[arg(long, visible_alias = "hardware", value_name = "FILE|PRESET")]
    pub hw: Option<String>,
    /// Memory of one GPU in GiB (enables the KV budget).
    #[arg(long)]
    pub gpu_mem_gib: Option<f64>,
    /// CUDA compute capability, e.g. 8.6 (FP8 is native from 8.9).
    #[arg(long)]
    pub compute_capability: Option<String>,
    /// The GPUs run FP8 natively (SM ≥ 8.9); `--fp8-native=false` for older GPUs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub fp8_native: Option<bool>,
    /// Weight format served (default: from the config's quantization_config, else bf16).
    #[arg(long, value_enum)]
    pub quant: Option<QuantArg>,
    /// AWQ/GPTQ/compressed-tensors group size (default: from quantization_config).
    #[arg(long, allow_negative_numbers = true)]
    pub group_size: Option<i64>,
    /// Target vLLM version (rules changed in 0.24, 0.25 and 0.33).
    #[arg(long = "vllm", default_value = "0.33")]
    pub vllm_version: String,
    /// --enable-expert-parallel: experts stay whole, only dense and shared layers are split.
    #[arg(long)]
    pub expert_parallel: bool,
    /// --gpu-memory-utilization.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// --kv-cache-dtype.
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_cache_dtype: KvDtypeArg,
    /// --max-model-len (default: max_position_embeddings).
    #[arg(long)]
    pub max_model_len: Option<u64>,
    /// --max-num-batched-tokens (default: vLLM's for the GPU size).
    #[arg(long)]
    pub max_num_batched_tokens: Option<u64>,
    /// Fixed reserve for CUDA graphs and NCCL/cuBLAS, GiB (default 1).
    #[arg(long)]
    pub overhead_gib: Option<f64>,
    /// Print JSON (fields: recommended_tp, max_valid_tp, candidates[] with tp,
    /// pp, valid, replicates_kv, reasons[], memory).
    #[arg(long)]
    pub json: bool,
    /// Show every rule's finding, not only the failures and warnings.
    #[arg(long)]
    pub explain: bool,
}

/// Read CONFIG as whichever format it is.
pub fn load_config(path: &Path, entry: Option<&str>) -> anyhow::Result<ArchConfig> {
    let path = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let what = path.display().to_string();
    let stem = path
        .file_stem()
        .map_or_else(|| what.clone(), |s| s.to_string_lossy().into_owned());
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "gguf" {
        let h = crate::gguf::read_file(&path, &crate::gguf::Options::default()).map_err(|e| {
            VllmError::Gguf {
                what: what.clone(),
                source: e,
            }
        })?;
        return Ok(crate::vllm::gguf_meta::from_gguf_header(&h, &stem));
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {what}"))?;
    if ext == "toml" {
        let table: toml::Table = toml::from_str(&text).map_err(|e| VllmError::Toml {
            what: what.clone(),
            source: e,
        })?;
        if table.contains_key("arch") && table.contains_key("metadata") {
            let p: crate::model::ModelProfile =
                toml::from_str(&text).map_err(|e| VllmError::Toml {
                    what: what.clone(),
                    source: e,
                })?;
            return Ok(crate::vllm::gguf_meta::from_model_profile(&p));
        }
        let tables: Vec<&String> = table
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k)
            .collect();
        return match entry {
            Some(e) => {
                let t = table
                    .get(e)
                    .and_then(toml::Value::as_table)
                    .with_context(|| {
                        format!("{what}: no table [{e}] (tables: {})", join(&tables))
                    })?;
                Ok(ArchConfig::from_notes_table(t, e)?)
            }
            None if tables.is_empty() || table.contains_key("num_attention_heads") => {
                Ok(ArchConfig::from_notes_table(&table, &stem)?)
            }
            None => bail!(
                "{what} holds several models: pick one with --entry ({})",
                join(&tables)
            ),
        };
    }
    Ok(ArchConfig::from_hf_json(&text, &stem)?)
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn parse_cc(s: &str) -> anyhow::Result<(u32, u32)> {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => bail!("--compute-capability {s:?}: expected MAJOR.MINOR such as 8.6 or 9.0"),
    }
}

fn gib_to_bytes(flag: &str, g: f64) -> anyhow::Result<u64> {
    if !(g.is_finite() && g > 0.0 && g < 1e6) {
        bail!("{flag} {g}: expected a positive number of GiB");
    }
    Ok((g * GIB as f64) as u64)
}

/// The GPUs vLLM would use from a hardware file: its CUDA/ROCm devices in
/// order (the first `limit` of them), the smallest total memory among them
/// (vLLM sizes every rank alike: `gpu_memory_utilization × total`), and the
/// lowest compute capability (FP8 is native only if every rank has it).
fn gpus_from_hardware(
    arg: &str,
    limit: Option<u32>,
    utilization: f64,
    notes: &mut Vec<String>,
) -> anyhow::Result<GpuSpec> {
    use crate::hardware::{load_file_or_preset, DeviceKind};
    let (hw, label) = load_file_or_preset(arg)?;
    let mut gpus: Vec<_> = hw
        .devices
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::Cuda | DeviceKind::Rocm))
        .collect();
    if gpus.is_empty() {
        bail!("--hw {label}: no CUDA or ROCm device to run vLLM on");
    }
    if let Some(n) = limit {
        if n as usize > gpus.len() {
            bail!(
                "--gpus {n}: {label} has only {} CUDA/ROCm devices",
                gpus.len()
            );
        }
        gpus.truncate(n as usize);
    }
    let mem_mib = gpus.iter().map(|d| d.memory_mib).min().unwrap_or(0);
    for d in &gpus {
        // vLLM refuses to start when less than utilization × total is free.
        let free = d.memory_mib.saturating_sub(d.reserved_mib) as f64;
        if free < utilization * d.memory_mib as f64 {
            notes.push(format!(
                "{}: {} MiB reserved leaves {:.0} MiB free, less than --gpu-memory-utilization {} × {} MiB; vLLM would refuse to start",
                d.name, d.reserved_mib, free, utilization, d.memory_mib
            ));
        }
    }
    let cc = gpus
        .iter()
        .map(|d| d.compute_capability())
        .collect::<Option<Vec<_>>>();
    notes.push(format!("{} GPUs from {label}", gpus.len()));
    Ok(GpuSpec {
        count: gpus.len() as u32,
        mem_bytes: Some(mem_mib * crate::units::MIB),
        compute_capability: cc.and_then(|v| v.into_iter().min()),
    })
}

/// Turn the flags into plan options (the seam a hardware file will fill instead).
pub fn options(args: &Args, cfg: &ArchConfig) -> anyhow::Result<(PlanOptions, Vec<String>)> {
    if let Some(n) = args.gpus {
        if n == 0 || n > 1024 {
            bail!("--gpus {n}: expected 1 to 1024");
        }
    }
    let u = args.gpu_memory_utilization;
    if !(u > 0.0 && u <= 1.0) {
        bail!("--gpu-memory-utilization {u}: expected a fraction in (0, 1]");
    }
    if args.max_model_len == Some(0) {
        bail!("--max-model-len 0: expected a positive token count");
    }
    let version: VllmVersion = args.vllm_version.parse()?;
    let mut hw_notes = Vec::new();
    let from_hw = match &args.hw {
        Some(arg) => Some(gpus_from_hardware(arg, args.gpus, u, &mut hw_notes)?),
        None => None,
    };
    let gpus = GpuSpec {
        count: from_hw.map_or(args.gpus.unwrap_or(1), |g| g.count),
        mem_bytes: match args.gpu_mem_gib {
            Some(g) => Some(gib_to_bytes("--gpu-mem-gib", g)?),
            None => from_hw.and_then(|g| g.mem_bytes),
        },
        compute_capability: match args.compute_capability.as_deref() {
            Some(cc) => Some(parse_cc(cc)?),
            None => from_hw.and_then(|g| g.compute_capability),
        },
    };
    let quant = args.quant.map(|q| match q {
        QuantArg::Bf16 => QuantChoice::Bf16,
        QuantArg::Fp8 => QuantChoice::Fp8,
        QuantArg::Fp8Block => QuantChoice::Fp8Block,
        QuantArg::Awq => QuantChoice::Awq,
        QuantArg::Gptq => QuantChoice::Gptq,
        QuantArg::CompressedTensors => QuantChoice::CompressedTensors,
        QuantArg::Mxfp4 => QuantChoice::Mxfp4,
    });
    let (quant, mut notes) = resolve_quant(quant, args.group_size, cfg);
    notes.extend(hw_notes);
    Ok((
        PlanOptions {
            gpus,
            quant,
            version,
            fp8_native: args.fp8_native.or_else(|| gpus.fp8_native()),
            expert_parallel: args.expert_parallel,
            gpu_memory_utilization: u,
            kv_cache_dtype: match args.kv_cache_dtype {
                KvDtypeArg::Auto | KvDtypeArg::Bfloat16 => KvDtype::Auto,
                KvDtypeArg::Fp8 | KvDtypeArg::Fp8E4m3 | KvDtypeArg::Fp8E5m2 => KvDtype::Fp8,
            },
            max_model_len: args.max_model_len,
            max_num_batched_tokens: args.max_num_batched_tokens,
            overhead_bytes: args
                .overhead_gib
                .map(|g| gib_to_bytes("--overhead-gib", g))
                .transpose()?,
        },
        notes,
    ))
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / GIB as f64)
}

fn print_plan(p: &Plan, explain: bool) {
    println!(
        "{}: {} on {} GPU(s), vLLM {}{}{}",
        p.model,
        p.quant,
        p.gpus,
        p.vllm_version,
        match p.fp8_native {
            Some(true) => ", native FP8",
            Some(false) => ", no native FP8",
            None => "",
        },
        if p.expert_parallel {
            ", expert parallel"
        } else {
            ""
        }
    );
    let mut t = super::table::new_table([
        "TP",
        "PP",
        "valid",
        "replicates KV",
        "weights/GPU",
        "KV tokens/GPU",
        "max concurrency",
        "reasons",
    ]);
    for c in &p.candidates {
        let valid = match c.status {
            Status::Valid => "yes",
            Status::Invalid => "NO",
            Status::Unknown => "unknown",
        };
        let shown: Vec<String> = c
            .reasons
            .iter()
            .filter(|f| explain || !matches!(f.verdict, Verdict::Ok))
            .map(|f| {
                let tag = match &f.verdict {
                    Verdict::Ok => "ok",
                    Verdict::Warn => "warn",
                    Verdict::Invalid { .. } => "FAIL",
                    Verdict::Unknown { .. } => "unknown",
                };
                let mut s = format!("[{tag}] {:?}: {}", f.rule, f.message);
                if let Verdict::Invalid { vllm_error } = &f.verdict {
                    s.push_str(&format!("\n    vLLM: {vllm_error}"));
                }
                if explain {
                    s.push_str(&format!("\n    ({})", f.source));
                }
                s
            })
            .collect();
        let mut shown = shown;
        if let Some(e) = c.memory.as_ref().and_then(|m| m.vllm_error.as_ref()) {
            shown.push(format!("[memory] vLLM: {e}"));
        }
        let (w, tok, conc) = match (&c.memory, &c.memory_unknown) {
            (Some(m), _) => (
                if m.fits {
                    gib(m.weights_bytes)
                } else {
                    format!("{} (does not fit)", gib(m.weights_bytes))
                },
                m.kv_tokens.to_string(),
                m.max_concurrency.map_or("?".into(), |x| format!("{x:.2}x")),
            ),
            (None, Some(why)) if c.status != Status::Invalid => {
                ("?".into(), why.clone(), "?".into())
            }
            _ => ("".into(), "".into(), "".into()),
        };
        let chosen = Some(c.tp) == p.recommended_tp && Some(c.pp) == p.recommended_pp;
        t.add_row([
            if chosen {
                format!("{} *", c.tp)
            } else {
                c.tp.to_string()
            },
            c.pp.to_string(),
            valid.to_string(),
            yes_no(c.replicates_kv).to_string(),
            w,
            tok,
            conc,
            shown.join("\n"),
        ]);
    }
    println!("{t}");
    for n in &p.derivations {
        println!("note: {n}");
    }
    for n in &p.notes {
        println!("{n}");
    }
    match (p.recommended_tp, p.max_valid_tp) {
        (Some(r), _) => println!(
            "recommended (*): TP {r}{}",
            p.recommended_pp.map_or_else(
                || " (no layout fits in GPU memory)".to_string(),
                |pp| format!(" × PP {pp}")
            )
        ),
        (None, Some(m)) => println!("no TP without KV replication is valid; largest valid TP: {m}"),
        (None, None) => println!("no valid TP could be established"),
    }
    if explain {
        let chosen = p
            .candidates
            .iter()
            .find(|c| Some(c.tp) == p.recommended_tp && Some(c.pp) == p.recommended_pp);
        if let Some(m) = chosen.and_then(|c| c.memory.as_ref()) {
            println!(
                "memory per GPU: requested {} = weights {} + activation peak {} (estimate, {} batched tokens) + CUDA graphs/NCCL {} (estimate) + KV pool {}",
                gib(m.requested_bytes),
                gib(m.weights_bytes),
                gib(m.activation_bytes),
                m.max_num_batched_tokens,
                gib(m.overhead_bytes),
                gib(m.kv_pool_bytes)
            );
            println!(
                "KV per token per GPU {} B; recurrent state per request {} B; per request at max-model-len {}",
                m.kv_bytes_per_token,
                m.state_bytes_per_seq,
                m.bytes_per_seq.map_or("?".into(), gib)
            );
        }
    }
    if let Some(s) = &p.serve {
        println!("{s}");
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&args.config, args.entry.as_deref())?;
    let (opts, quant_notes) = options(args, &cfg)?;
    let mut p = plan(&cfg, &opts);
    p.notes.extend(quant_notes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print_plan(&p, args.explain);
    }
    let code = if p.serve.is_some() {
        exit::OK
    } else if p.max_valid_tp.is_none() && p.candidates.iter().any(|c| c.status == Status::Unknown) {
        exit::INPUT
    } else {
        exit::DOES_NOT_FIT
    };
    Ok(ExitCode::from(code))
}
