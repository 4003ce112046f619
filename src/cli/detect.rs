//! `ggplan detect [-o FILE] [--force] [--ignore-used] [--json]`: write a
//! hardware file for this machine. NVIDIA GPUs come from NVML (loaded at run
//! time; without a driver the result is a CPU-only file and exit 0), host
//! RAM and cores from the OS. `--probe-fixture FILE` replays a recorded
//! probe instead (tests, and reproducing a user's report).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::hardware::{
    detect, render, write_atomic, DetectOptions, FixtureProbe, GpuProbe, HostProbe, NvmlProbe,
    OsHost,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the hardware file here (atomically) instead of to stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Do not count memory in use now as reserved (GPU: keep only the
    /// driver's reserve; host: reserve nothing).
    #[arg(long)]
    pub ignore_used: bool,
    /// Print the hardware as JSON (the `Hardware` type's serde form) instead of TOML.
    #[arg(long)]
    pub json: bool,
    /// Replay a recorded probe (TOML: `[host]` plus `[[gpus]]` or `nvml_error`) instead of
    /// asking NVML and the OS.
    #[arg(long, value_name = "FILE", hide = true)]
    pub probe_fixture: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let opts = DetectOptions {
        ignore_used: args.ignore_used,
        cuda_device_order: std::env::var("CUDA_DEVICE_ORDER").ok(),
        cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
    };
    let fixture;
    let (gpu, host): (&dyn GpuProbe, &dyn HostProbe) = match &args.probe_fixture {
        Some(path) => {
            fixture = FixtureProbe::from_path(path)?;
            (&fixture, &fixture)
        }
        None => (&NvmlProbe, &OsHost),
    };
    let detected = detect(gpu, host, &opts)?;
    // The loader must accept what we write; fail here rather than hand the
    // user a file every other command rejects.
    detected.hardware.validate()?;
    let mut stderr = std::io::stderr();
    for note in &detected.notes {
        writeln!(stderr, "note: {note}")?;
    }
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&detected.hardware)?;
        s.push('\n');
        s
    } else {
        render(&detected)
    };
    match &args.output {
        Some(path) => {
            write_atomic(path, text.as_bytes(), args.force)?;
            writeln!(
                stderr,
                "wrote {} ({} device{})",
                path.display(),
                detected.hardware.devices.len(),
                if detected.hardware.devices.len() == 1 {
                    ""
                } else {
                    "s"
                }
            )?;
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
