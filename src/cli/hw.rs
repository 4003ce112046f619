//! `ggplan hw FILE|PRESET [--json] [--explain]`: the effective capacity of
//! every device of a hardware file, as the planners will use it.
//!
//! JSON (stable field names): `{ name, source, host: { memory_mib,
//! reserved_mib, capacity_bytes, bandwidth_gbs, cores, numa_nodes },
//! devices: [{ index, name, kind, model, memory_mib, reserved_mib,
//! capacity_bytes, effective_capacity_bytes, pool, unified, bandwidth_gbs,
//! fp16_tflops, link_gbs, endpoint }], total_capacity_bytes, warnings }`.
//! `pool` is `"own"` or `"host"`; absent optional values are `null`.

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::table::new_table;
use crate::hardware::{presets, Hardware, Pool};
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A hardware file, or the name of a preset (see `hardware/`, e.g. h100-sxm-80gb).
    pub file: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Explain how each capacity is computed (unified memory, reserves).
    #[arg(long)]
    pub explain: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    name: Option<&'a str>,
    source: String,
    host: HostRow,
    devices: Vec<DeviceRow<'a>>,
    total_capacity_bytes: u64,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct HostRow {
    memory_mib: u64,
    reserved_mib: u64,
    capacity_bytes: u64,
    bandwidth_gbs: Option<f64>,
    cores: Option<u32>,
    numa_nodes: Option<u32>,
}

#[derive(Serialize)]
struct DeviceRow<'a> {
    index: usize,
    name: &'a str,
    kind: &'static str,
    model: Option<&'a str>,
    memory_mib: u64,
    reserved_mib: u64,
    capacity_bytes: u64,
    effective_capacity_bytes: u64,
    pool: Pool,
    unified: bool,
    bandwidth_gbs: Option<f64>,
    fp16_tflops: Option<f64>,
    link_gbs: Option<f64>,
    endpoint: Option<&'a str>,
}

fn opt(x: Option<f64>, unit: &str) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v} {unit}"))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (hw, source) = presets::load_file_or_preset(&args.file)?;
    let h = &hw.host;
    let report = Report {
        name: hw.name.as_deref(),
        source,
        host: HostRow {
            memory_mib: h.memory_mib,
            reserved_mib: h.reserved_mib,
            capacity_bytes: hw.host_capacity().0,
            bandwidth_gbs: h.bandwidth_gbs,
            cores: h.cores,
            numa_nodes: h.numa_nodes,
        },
        devices: hw
            .devices
            .iter()
            .enumerate()
            .map(|(index, d)| DeviceRow {
                index,
                name: &d.name,
                kind: d.kind.as_str(),
                model: d.model.as_deref(),
                memory_mib: d.memory_mib,
                reserved_mib: d.reserved_mib,
                capacity_bytes: d.capacity().0,
                effective_capacity_bytes: hw.effective_capacity(d).0,
                pool: d.pool(),
                unified: d.unified,
                bandwidth_gbs: d.bandwidth_gbs,
                fp16_tflops: d.fp16_tflops,
                link_gbs: d.link_gbs,
                endpoint: d.endpoint.as_deref(),
            })
            .collect(),
        total_capacity_bytes: hw.total_capacity().0,
        warnings: hw.warnings(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }

    let title = report.name.map_or(report.source.clone(), |n| {
        format!("{n} ({})", report.source)
    });
    println!("{title}");
    let mut t = new_table([
        "device",
        "kind",
        "memory",
        "reserved",
        "capacity",
        "pool",
        "bandwidth",
        "link",
        "fp16",
    ]);
    let cores = h.cores.map_or(String::new(), |c| format!(", {c} cores"));
    t.add_row(vec![
        "CPU (host)".to_string(),
        format!("host{cores}"),
        Bytes::from_mib(h.memory_mib).to_string(),
        Bytes::from_mib(h.reserved_mib).to_string(),
        hw.host_capacity().to_string(),
        "host".to_string(),
        opt(h.bandwidth_gbs, "GB/s"),
        "-".to_string(),
        "-".to_string(),
    ]);
    for (d, row) in hw.devices.iter().zip(&report.devices) {
        let mut cap = Bytes(row.effective_capacity_bytes).to_string();
        if row.effective_capacity_bytes < row.capacity_bytes {
            cap.push_str(" (host-capped)");
        }
        let name = match &d.model {
            Some(m) => format!("{} ({m})", d.name),
            None => d.name.clone(),
        };
        t.add_row(vec![
            name,
            d.kind.to_string(),
            d.memory().to_string(),
            d.reserved().to_string(),
            cap,
            match d.pool() {
                Pool::Host => "host (unified)".to_string(),
                Pool::Own if d.endpoint.is_some() => {
                    format!("own ({})", d.endpoint.as_deref().unwrap_or_default())
                }
                Pool::Own => "own".to_string(),
            },
            opt(d.bandwidth_gbs, "GB/s"),
            opt(d.link_gbs, "GB/s"),
            opt(d.fp16_tflops, "TFLOPS"),
        ]);
    }
    println!("{t}");
    println!(
        "total capacity (shared RAM counted once): {}",
        hw.total_capacity()
    );
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if args.explain {
        println!();
        print!("{}", explain(&hw));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--explain` text: how each number above was derived.
fn explain(hw: &Hardware) -> String {
    let mut out = String::new();
    let h = &hw.host;
    out.push_str(&format!(
        "host: capacity = memory {} MiB - reserved {} MiB = {} (RAM for CPU-placed tensors, \
         KV and buffers, and for every unified device).\n",
        h.memory_mib,
        h.reserved_mib,
        hw.host_capacity()
    ));
    for d in &hw.devices {
        let own = format!(
            "{}: capacity = memory {} MiB - reserved {} MiB = {}",
            d.name,
            d.memory_mib,
            d.reserved_mib,
            d.capacity()
        );
        if d.draws_from_host() {
            out.push_str(&format!(
                "{own}; unified: this memory is the host's RAM, so the device holds at most \
                 min({}, host {}) = {}, and the host plus all unified devices together hold at \
                 most the host's {}. It adds nothing to the total.\n",
                d.capacity(),
                hw.host_capacity(),
                hw.effective_capacity(d),
                hw.host_capacity()
            ));
        } else if let Some(ep) = &d.endpoint {
            out.push_str(&format!(
                "{own}; remote memory on the rpc-server at {ep}, separate from this host's RAM; \
                 tensors reach it over a {} link.\n",
                opt(d.link_gbs, "GB/s")
            ));
        } else {
            out.push_str(&format!("{own}; memory of its own.\n"));
        }
    }
    out.push_str(&format!(
        "total = host {} + devices with their own memory = {}.\n",
        hw.host_capacity(),
        hw.total_capacity()
    ));
    out.push_str(
        "Reserves are what llama.cpp cannot use (display, other processes); the planners \
         add llama.cpp's own buffers (compute, KV, CUDA context) on top.\n",
    );
    out
}
