//! `ggplan profile MODEL [-o models/NAME.toml]`: save a model's profile —
//! every tensor's name, type, dims and offset plus the metadata a planner
//! reads — so planning works without the multi-GB file.
//!
//! A GGUF written from public configs (a sparse oracle file) is *not* a real
//! model: pass `--synthetic DESCRIPTION --source URL…` so the profile's
//! `provenance` says so. A sparse input file without `--synthetic` gets a
//! warning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::model::{Model, ModelProfile, Provenance};
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf file (any shard of a split model) or a profile .toml.
    pub model: PathBuf,
    /// Write the profile here (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Profile name (default: general.name, else the file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Mark the profile synthetic: built from public configs and llama.cpp's
    /// quantization rules, not read from a real model file.
    #[arg(long, value_name = "DESCRIPTION")]
    pub synthetic: Option<String>,
    /// A source of a synthetic profile's numbers (repeatable).
    #[arg(long = "source", value_name = "SOURCE", requires = "synthetic")]
    pub sources: Vec<String>,
}

/// Whether a file's allocated blocks cover much less than its length (a
/// header-only sparse GGUF whose data region is a hole).
#[cfg(unix)]
fn looks_sparse(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.len() > (1 << 20) && m.blocks() * 512 < m.len() / 2)
}

#[cfg(not(unix))]
fn looks_sparse(_path: &Path) -> bool {
    false
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let synthetic = args.synthetic.as_ref().map(|d| Provenance::Synthetic {
        description: d.clone(),
        sources: args.sources.clone(),
    });
    if synthetic.is_some() && args.sources.is_empty() {
        bail!("--synthetic needs at least one --source naming where its numbers come from");
    }
    let mut profile = ModelProfile::load(&args.model)?;
    let from_gguf = matches!(profile.provenance, Provenance::GgufHeader { .. })
        && !args
            .model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if let Some(p) = synthetic {
        profile.provenance = p;
    } else if from_gguf && looks_sparse(&args.model) {
        eprintln!(
            "warning: {} is sparse (a header-only file?); if it was generated from public \
             configs, pass --synthetic DESCRIPTION --source SOURCE so the profile says so",
            args.model.display()
        );
    }
    if let Some(n) = &args.name {
        profile.name = n.clone();
    }
    // Refuse to save what cannot be analysed.
    let model = Model::from_profile(profile)
        .with_context(|| format!("analysing {}", args.model.display()))?;
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    let text = model.profile.to_toml();
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {}: {} tensors, {} ({} B), {} bytes of TOML",
                path.display(),
                model.tensors.len(),
                Bytes(model.tensor_bytes()),
                model.tensor_bytes(),
                text.len()
            );
        }
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
