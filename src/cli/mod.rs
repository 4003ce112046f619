//! The command-line front: clap argument structs (only what the user typed),
//! one file per subcommand, tables through comfy-table and `--json` through
//! serde. Nothing outside this module sees clap types.
//!
//! Each subcommand module exposes `Args` (clap) and `run(&Args) -> anyhow::Result<ExitCode>`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod detect;
pub mod emit;
pub mod exit;
pub mod header;
pub mod hw;
pub mod inspect;
pub mod mem;
pub mod plan;
pub mod profile;
pub mod table;
pub mod tp;

/// Plan where an LLM's tensors live before you deploy it.
#[derive(Debug, Parser)]
#[command(name = "ggplan", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's layout: per block attention kind, KV widths, bytes by group; totals.
    Inspect(inspect::Args),
    /// Save a model's profile (tensor table + planner metadata) as TOML.
    Profile(profile::Args),
    /// Show a GGUF file's raw header: metadata, tensor types and sizes.
    Header(header::Args),
    /// Show a hardware file's (or preset's) effective capacity per device.
    Hw(hw::Args),
    /// Write a hardware file for this machine (NVIDIA GPUs through NVML, RAM and cores from the OS).
    Detect(detect::Args),
    /// What llama.cpp allocates per device for a set of llama-server flags.
    Mem(mem::Args),
    /// Render llama-server flags as a shell line, models.conf section,
    /// llama-swap entry or router preset; or update one entry of a file.
    Emit(Box<emit::Args>),
    /// vLLM tensor/pipeline-parallel validity, KV budget and the `vllm serve` line.
    Tp(tp::Args),
    /// Find the fastest placement that fits and print the llama-server flags for it.
    Plan(Box<plan::Args>),
}

/// Parse `std::env::args`, run, and turn the outcome into an exit code.
/// Errors print their whole cause chain (`{:#}`) on stderr; a closed pipe
/// (`ggplan … | head`) is success, as ripgrep does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(exit::code_for(&err))
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Header(a) => header::run(a),
        Command::Hw(a) => hw::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Mem(a) => mem::run(a),
        Command::Emit(a) => emit::run(a),
        Command::Tp(a) => tp::run(a),
        Command::Plan(a) => plan::run(a),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
