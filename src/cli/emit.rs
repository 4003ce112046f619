//! `ggplan emit`: render llama-server flags as a deploy config, or update
//! one entry of an existing config file.
//!
//! ```text
//! ggplan emit --format models-conf --name qwen --model /m/q.gguf -- -c 32768 -ngl 99 -fit off
//! ggplan emit --format llama-swap --name qwen --model /m/q.gguf --update config.yaml --dry-run -- …
//! ```
//!
//! Without `--update` the entry is printed on stdout (`--json`:
//! `{"format", "name", "text"}`). With `--update FILE` only the entry
//! `--name` of FILE is replaced or added and a summary table is printed
//! (`--json`: `{"file", "format", "name", "action", "written",
//! "bytes_before", "bytes_after"}`, `action` one of `added`, `replaced`,
//! `unchanged`); with `--dry-run` nothing is written and the unified diff is
//! printed instead (`--json` adds `"diff"`). A FILE that does not exist is
//! created. A FILE that does not parse is an error (exit 2) and is not
//! touched. Several `--deployment` files with `--format llama-swap` (and
//! optionally `--groups`) print one whole config.yaml with co-residency
//! groups. The planner will call [`crate::emit`] directly; this command
//! takes the flags after `--` as already decided.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::emit::{self, write, Action, Deployment, Format};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    /// A POSIX shell command line.
    Shell,
    /// A models.conf section (CTX_SIZE, N_GPU_LAYERS, FIT, EXTRA_ARGS).
    ModelsConf,
    /// A llama-swap config.yaml model entry.
    LlamaSwap,
    /// A llama-server --models-preset INI section.
    Preset,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Shell => Format::Shell,
            FormatArg::ModelsConf => Format::ModelsConf,
            FormatArg::LlamaSwap => Format::LlamaSwap,
            FormatArg::Preset => Format::Preset,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// Entry name: section name, llama-swap model id.
    #[arg(long, required_unless_present = "deployment")]
    pub name: Option<String>,
    /// The GGUF file the server loads (-m).
    #[arg(long, required_unless_present = "deployment")]
    pub model: Option<PathBuf>,
    /// Read the whole deployment (the `emit::Deployment` JSON: name,
    /// model_path, argv, visible_devices, ttl, aliases, summary) from FILE
    /// instead of the flags; `-` reads stdin. Repeat it with --format
    /// llama-swap to write one config.yaml for several models.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "model", "flags", "visible_devices", "ttl", "aliases", "server_bin"])]
    pub deployment: Vec<PathBuf>,
    /// llama-swap, several models: co-residency groups as JSON
    /// (`{"group": {"swap": false, "exclusive": true, "persistent": false,
    /// "members": ["a", "b"]}}`), written to `routing.router.settings.groups`.
    #[arg(long, value_name = "FILE", conflicts_with = "update")]
    pub groups: Option<PathBuf>,
    /// Replace or add only this entry in FILE, keeping every other byte.
    #[arg(long, value_name = "FILE")]
    pub update: Option<PathBuf>,
    /// With --update: print the unified diff instead of writing.
    #[arg(long, requires = "update")]
    pub dry_run: bool,
    /// Restrict the server to these CUDA devices (CUDA_VISIBLE_DEVICES), e.g. 0,1.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub visible_devices: Option<Vec<u32>>,
    /// llama-swap: unload after this many idle seconds.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// llama-swap: another name the model answers to (repeatable).
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,
    /// Server executable to write instead of llama-server.
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<String>,
    /// Print JSON instead of text / tables.
    #[arg(long)]
    pub json: bool,
    /// llama-server flags after `--`, as the plan decided them (no -m).
    #[arg(last = true, allow_hyphen_values = true, value_name = "FLAGS")]
    pub flags: Vec<String>,
}

#[derive(Serialize)]
struct Rendered<'a> {
    format: Format,
    name: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct UpdateReport<'a> {
    file: &'a std::path::Path,
    format: Format,
    name: &'a str,
    action: Action,
    written: bool,
    bytes_before: usize,
    bytes_after: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<&'a str>,
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<T> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not {what}", path.display()))
}

fn deployments(args: &Args) -> anyhow::Result<Vec<Deployment>> {
    if !args.deployment.is_empty() {
        return args
            .deployment
            .iter()
            .map(|p| read_json(p, "a deployment JSON"))
            .collect();
    }
    let (Some(name), Some(model)) = (&args.name, &args.model) else {
        anyhow::bail!("--name and --model are required without --deployment");
    };
    let model = model
        .to_str()
        .with_context(|| format!("model path {model:?} is not UTF-8"))?;
    let mut d = Deployment::new(name.clone(), model, args.flags.clone());
    d.visible_devices = args.visible_devices.clone();
    d.ttl = args.ttl;
    d.aliases = args.aliases.clone();
    d.server_bin = args.server_bin.clone().unwrap_or_default();
    Ok(vec![d])
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let format = Format::from(args.format);
    let mut ds = deployments(args)?;
    let mut out = std::io::stdout().lock();

    if ds.len() > 1 || args.groups.is_some() {
        if format != Format::LlamaSwap || args.update.is_some() {
            anyhow::bail!(
                "several deployments or --groups need --format llama-swap without --update"
            );
        }
        let groups = match &args.groups {
            Some(p) => read_json(p, "a groups JSON")?,
            None => Default::default(),
        };
        let text = emit::llama_swap::render_config(&ds, &groups)?;
        out.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(d) = ds.pop() else {
        anyhow::bail!("no deployment given");
    };

    let Some(file) = &args.update else {
        let text = emit::render(format, &d)?;
        if args.json {
            serde_json::to_writer_pretty(
                &mut out,
                &Rendered {
                    format,
                    name: &d.name,
                    text: &text,
                },
            )?;
            writeln!(out)?;
        } else {
            out.write_all(text.as_bytes())?;
        }
        return Ok(ExitCode::SUCCESS);
    };

    let existing = match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not UTF-8 text; it was left untouched",
                file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let updated = emit::update(format, &existing, &d)
        .with_context(|| format!("cannot update {}", file.display()))?;
    let shown = file.display().to_string();
    let diff = args
        .dry_run
        .then(|| write::unified_diff(&shown, &existing, &updated.text));
    let written = !args.dry_run && updated.action != Action::Unchanged;
    if written {
        write::write_atomic(file, updated.text.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }

    let report = UpdateReport {
        file,
        format,
        name: &d.name,
        action: updated.action,
        written,
        bytes_before: existing.len(),
        bytes_after: updated.text.len(),
        diff: diff.as_deref(),
    };
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if let Some(diff) = &diff {
        out.write_all(diff.as_bytes())?;
    } else {
        let mut t = super::table::new_table([
            "file",
            "format",
            "entry",
            "action",
            "bytes before",
            "bytes after",
        ]);
        t.add_row([
            shown,
            format.to_string(),
            d.name.clone(),
            if written || updated.action == Action::Unchanged {
                updated.action.to_string()
            } else {
                format!("{} (not written)", updated.action)
            },
            report.bytes_before.to_string(),
            report.bytes_after.to_string(),
        ]);
        writeln!(out, "{t}")?;
    }
    Ok(ExitCode::SUCCESS)
}
