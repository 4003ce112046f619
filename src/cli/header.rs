//! `ggplan header MODEL`: the raw GGUF header — metadata and tensor table
//! summary — as the reader sees it. A debugging aid beside `inspect`, which
//! interprets the header as a model. MODEL is a local file or an http(s)://
//! URL, read with range requests (only the header bytes are fetched).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::gguf::{shard, Header, Options, Value};
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf file or an http(s):// URL of one (any shard of a split model).
    /// URLs are read with HTTP range requests: only the header is fetched.
    #[arg(value_name = "MODEL")]
    pub file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// List every tensor, not only the totals per type.
    #[arg(long)]
    pub tensors: bool,
}

#[derive(Serialize)]
struct Report {
    files: Vec<FileReport>,
    metadata: BTreeMap<String, String>,
    tensor_count: usize,
    tensor_bytes: u64,
    unknown_size_tensors: usize,
    bytes_by_type: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tensors: Vec<TensorRow>,
}

#[derive(Serialize)]
struct FileReport {
    path: PathBuf,
    version: u32,
    big_endian: bool,
    alignment: u64,
    header_bytes: u64,
    data_offset: u64,
    file_bytes: u64,
    /// Remote reads only: HTTP range requests made and body bytes received.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_fetched: Option<u64>,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    ty: String,
    dims: Vec<u64>,
    bytes: Option<u64>,
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() <= 16 => {
            let parts: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Array(items) => format!("[{} items]", items.len()),
        Value::SkippedArray { elem, len } => format!("[{len} × {elem}, skipped]"),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other
            .as_i64()
            .map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

/// One file's header, wherever it came from.
struct Loaded {
    path: PathBuf,
    header: Header,
    file_len: u64,
    fetch: Option<(u64, u64)>,
}

fn load(args: &Args) -> anyhow::Result<Vec<Loaded>> {
    let arg = args.file.to_string_lossy();
    if crate::gguf::is_url(&arg) {
        return load_url(&arg);
    }
    Ok(shard::read_model(&args.file, &Options::default())?
        .into_iter()
        .map(|s| Loaded {
            path: s.path,
            header: s.header,
            file_len: s.file_len,
            fetch: None,
        })
        .collect())
}

#[cfg(feature = "remote")]
fn load_url(url: &str) -> anyhow::Result<Vec<Loaded>> {
    use crate::gguf::remote::{read_model_url, RemoteOptions};
    Ok(read_model_url(url, &RemoteOptions::default())?
        .into_iter()
        .map(|s| Loaded {
            path: PathBuf::from(s.url),
            header: s.header,
            file_len: s.file_len,
            fetch: Some((s.stats.requests, s.stats.bytes_fetched)),
        })
        .collect())
}

#[cfg(not(feature = "remote"))]
fn load_url(url: &str) -> anyhow::Result<Vec<Loaded>> {
    anyhow::bail!(
        "{url}: this ggplan was built without the `remote` feature, so it cannot read URLs"
    )
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let shards = load(args)?;
    let mut metadata = BTreeMap::new();
    let mut bytes_by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = Vec::new();
    let (mut total, mut unknown, mut count) = (0u64, 0usize, 0usize);
    for s in &shards {
        for (k, v) in &s.header.metadata {
            metadata.entry(k.clone()).or_insert_with(|| show(v));
        }
        for t in &s.header.tensors {
            count += 1;
            let b = t.n_bytes();
            match b {
                Some(b) => {
                    total += b;
                    *bytes_by_type.entry(t.ty.to_string()).or_default() += b;
                }
                None => unknown += 1,
            }
            if args.tensors {
                rows.push(TensorRow {
                    name: t.name.clone(),
                    ty: t.ty.to_string(),
                    dims: t.dims.clone(),
                    bytes: b,
                });
            }
        }
    }
    let report = Report {
        files: shards
            .iter()
            .map(|s| FileReport {
                path: s.path.clone(),
                version: s.header.version,
                big_endian: s.header.big_endian,
                alignment: s.header.alignment,
                header_bytes: s.header.bytes_read,
                data_offset: s.header.data_offset,
                file_bytes: s.file_len,
                requests: s.fetch.map(|f| f.0),
                bytes_fetched: s.fetch.map(|f| f.1),
            })
            .collect(),
        metadata,
        tensor_count: count,
        tensor_bytes: total,
        unknown_size_tensors: unknown,
        bytes_by_type,
        tensors: rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let remote = report.files.iter().any(|f| f.requests.is_some());
    let mut cols = vec!["file", "GGUF", "alignment", "header bytes", "file bytes"];
    if remote {
        cols.extend(["requests", "bytes fetched"]);
    }
    let mut t = super::table::new_table(cols);
    for f in &report.files {
        let mut row = vec![
            f.path.display().to_string(),
            format!("v{}{}", f.version, if f.big_endian { " BE" } else { "" }),
            f.alignment.to_string(),
            f.header_bytes.to_string(),
            f.file_bytes.to_string(),
        ];
        if remote {
            row.push(f.requests.unwrap_or(0).to_string());
            row.push(f.bytes_fetched.unwrap_or(0).to_string());
        }
        t.add_row(row);
    }
    println!("{t}");
    let mut t = super::table::new_table(["key", "value"]);
    for (k, v) in &report.metadata {
        t.add_row([k.as_str(), v.as_str()]);
    }
    println!("{t}");
    let mut t = super::table::new_table(["type", "bytes"]);
    for (ty, b) in &report.bytes_by_type {
        t.add_row([ty.clone(), Bytes(*b).to_string()]);
    }
    t.add_row([
        format!("total ({} tensors)", report.tensor_count),
        Bytes(report.tensor_bytes).to_string(),
    ]);
    if report.unknown_size_tensors > 0 {
        t.add_row([
            format!("{} tensors of unknown type", report.unknown_size_tensors),
            "size unknown".into(),
        ]);
    }
    println!("{t}");
    if args.tensors {
        let mut t = super::table::new_table(["tensor", "type", "dims", "bytes"]);
        for r in &report.tensors {
            t.add_row([
                r.name.clone(),
                r.ty.clone(),
                format!("{:?}", r.dims),
                r.bytes.map_or("size unknown".into(), |b| b.to_string()),
            ]);
        }
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
