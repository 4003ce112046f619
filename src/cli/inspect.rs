//! `ggplan inspect MODEL [--json]`: the analysed layout of a model — per
//! block its attention kind, KV widths and bytes by group — and totals
//! (params, bytes per ggml type, KV bytes/token, recurrent bytes/sequence).
//! MODEL is a `.gguf` (any shard) or a profile `.toml`. The `--json` fields
//! are documented in the README ("inspect --json").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::model::{AttentionKind, Block, Model, Provenance, TensorGroup, KNOWN_ARCHS};
use crate::units::Bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .gguf file (any shard of a split model) or a profile .toml.
    pub model: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also say which llama.cpp rule and metadata key produced the layout.
    #[arg(long)]
    pub explain: bool,
}

/// The `--json` document (stable field names; README "inspect --json").
/// With `--explain`, `explain` carries the same lines as the text output.
#[derive(Serialize)]
pub struct Report {
    pub name: String,
    pub arch: String,
    /// Whether ggplan implements this architecture's layout rules.
    pub arch_known: bool,
    pub provenance: Provenance,
    pub block_count: u32,
    pub n_nextn: u32,
    pub n_embd: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    pub tied_embeddings: bool,
    pub params: u64,
    pub tensor_count: usize,
    /// Sum over every tensor (NextN weights included).
    pub tensor_bytes: u64,
    /// What llama.cpp allocates (tensor_bytes − skipped_bytes).
    pub allocated_bytes: u64,
    pub skipped_bytes: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub bytes_by_type: BTreeMap<String, u64>,
    pub kv_bytes_per_token_f16: u64,
    pub recurrent_bytes_per_seq: u64,
    pub n_embd_r: u64,
    pub n_embd_s: u64,
    pub experts: Experts,
    pub blocks: Vec<BlockReport>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<String>,
}

#[derive(Serialize)]
pub struct Experts {
    pub count: u32,
    pub used: u32,
    pub ff_length: u64,
    pub shared_count: u32,
    pub shared_ff_length: u64,
}

#[derive(Serialize)]
pub struct BlockReport {
    pub index: u32,
    /// `full|swa|mla|recurrent|none`.
    pub attention: &'static str,
    /// SWA window in tokens (null unless `attention` is `swa`).
    pub window: Option<u32>,
    pub nextn: bool,
    pub has_kv: bool,
    pub recurrent: bool,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub k_width: u64,
    pub v_width: u64,
    /// Allocated bytes of the block (skipped NextN weights excluded).
    pub bytes: u64,
    pub skipped_bytes: u64,
    pub bytes_by_group: BTreeMap<&'static str, u64>,
    pub kv_bytes_per_token_f16: u64,
}

/// Build the report for an analysed model.
pub fn report(m: &Model) -> Report {
    let hp = &m.hparams;
    let blocks = m
        .blocks
        .iter()
        .map(|b| {
            let i = b.index as usize;
            BlockReport {
                index: b.index,
                attention: b.attention.as_str(),
                window: match b.attention {
                    AttentionKind::Swa { window } => Some(window),
                    _ => None,
                },
                nextn: b.nextn,
                has_kv: b.has_kv,
                recurrent: b.recurrent,
                n_head: hp.n_head[i],
                n_head_kv: hp.n_head_kv[i],
                head_dim_k: hp.head_dim_k[i],
                head_dim_v: hp.head_dim_v[i],
                k_width: b.k_width,
                v_width: b.v_width,
                bytes: b.total_bytes(),
                skipped_bytes: b.skipped_bytes,
                bytes_by_group: b.bytes.iter().map(|(g, v)| (g.as_str(), *v)).collect(),
                kv_bytes_per_token_f16: b.kv_bytes_per_token_f16(),
            }
        })
        .collect();
    let tensor_bytes = m.tensor_bytes();
    let skipped = m.skipped_bytes();
    Report {
        name: m.profile.name.clone(),
        arch: m.profile.arch.clone(),
        arch_known: KNOWN_ARCHS.contains(&m.profile.arch.as_str()),
        provenance: m.profile.provenance.clone(),
        block_count: hp.n_layer,
        n_nextn: hp.n_nextn,
        n_embd: hp.n_embd,
        n_vocab: hp.n_vocab,
        n_ctx_train: hp.n_ctx_train,
        tied_embeddings: hp.tied_embeddings,
        params: m.params(),
        tensor_count: m.tensors.len(),
        tensor_bytes,
        allocated_bytes: tensor_bytes - skipped,
        skipped_bytes: skipped,
        input_bytes: m.input_bytes(),
        output_bytes: m.output_bytes(),
        bytes_by_type: m
            .bytes_by_type()
            .into_iter()
            .map(|(t, b)| (t.to_string(), b))
            .collect(),
        kv_bytes_per_token_f16: m.kv_bytes_per_token_f16(),
        recurrent_bytes_per_seq: m.recurrent_bytes_per_seq(),
        n_embd_r: hp.n_embd_r,
        n_embd_s: hp.n_embd_s,
        experts: Experts {
            count: hp.n_expert,
            used: hp.n_expert_used,
            ff_length: hp.n_ff_exp,
            shared_count: hp.n_expert_shared,
            shared_ff_length: hp.n_ff_shexp,
        },
        blocks,
        warnings: m.warnings.clone(),
        explain: Vec::new(),
    }
}

fn layout(m: &Model, b: &Block) -> String {
    let hp = &m.hparams;
    let i = b.index as usize;
    let heads = format!(
        "{}q/{}kv × {}",
        hp.n_head[i], hp.n_head_kv[i], hp.head_dim_k[i]
    );
    let mut s = match b.attention {
        AttentionKind::Full => format!("full {heads}"),
        AttentionKind::Swa { window } => format!("SWA {window} {heads}"),
        AttentionKind::Mla => format!("MLA latent {} (K only)", b.k_width),
        AttentionKind::Recurrent => format!("recurrent R {} + S {}", hp.n_embd_r, hp.n_embd_s),
        AttentionKind::None => "none (FFN only)".into(),
    };
    if b.recurrent && b.attention != AttentionKind::Recurrent {
        s.push_str(" + recurrent");
    }
    if b.nextn {
        s.push_str(if b.skipped_bytes > 0 {
            " [NextN, skipped]"
        } else {
            " [NextN]"
        });
    }
    if !b.has_kv
        && matches!(
            b.attention,
            AttentionKind::Full | AttentionKind::Swa { .. } | AttentionKind::Mla
        )
    {
        s.push_str(" (no KV)");
    }
    s
}

fn b(x: u64) -> String {
    if x == 0 {
        "-".into()
    } else {
        Bytes(x).to_string()
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let m = Model::load(&args.model)?;
    for w in &m.warnings {
        eprintln!("warning: {w}");
    }
    let mut r = report(&m);
    if args.explain {
        r.explain = m.explain();
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let prov = match &r.provenance {
        Provenance::GgufHeader { files } => format!("GGUF header of {}", files.join(", ")),
        Provenance::Synthetic { description, .. } => {
            // The full text (and its sources) is in --json and in the profile.
            let short: String = description.chars().take(100).collect();
            let more = if short.len() < description.len() {
                "…"
            } else {
                ""
            };
            format!("SYNTHETIC (built from public configs, not a real file): {short}{more}")
        }
    };
    writeln!(out, "{} ({}) — {prov}", r.name, r.arch)?;
    let mut t = super::table::new_table([
        "blk",
        "attention",
        "attn",
        "norm",
        "ffn",
        "experts",
        "shexp",
        "router",
        "recur",
        "other",
        "total",
        "KV B/tok f16",
    ]);
    for blk in &m.blocks {
        let g = |grp: TensorGroup| b(blk.group_bytes(grp));
        let total = if blk.skipped_bytes > 0 {
            format!(
                "{} (+{} skipped)",
                b(blk.total_bytes()),
                b(blk.skipped_bytes)
            )
        } else {
            b(blk.total_bytes())
        };
        t.add_row([
            blk.index.to_string(),
            layout(&m, blk),
            g(TensorGroup::Attention),
            g(TensorGroup::Norm),
            g(TensorGroup::FfnDense),
            g(TensorGroup::FfnRouted),
            g(TensorGroup::FfnShared),
            g(TensorGroup::Router),
            g(TensorGroup::Recurrent),
            g(TensorGroup::Other),
            total,
            blk.kv_bytes_per_token_f16().to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    let mut t = super::table::new_table(["total", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("blocks", format!("{} ({} NextN)", r.block_count, r.n_nextn)),
        ("n_embd / n_vocab", format!("{} / {}", r.n_embd, r.n_vocab)),
        ("params", r.params.to_string()),
        ("tensors", r.tensor_count.to_string()),
        (
            "tensor bytes",
            format!("{} ({} B)", Bytes(r.tensor_bytes), r.tensor_bytes),
        ),
        (
            "allocated by llama.cpp",
            format!("{} ({} B)", Bytes(r.allocated_bytes), r.allocated_bytes),
        ),
        ("input (token_embd, CPU)", Bytes(r.input_bytes).to_string()),
        ("output", Bytes(r.output_bytes).to_string()),
        (
            "tied embeddings",
            if r.tied_embeddings {
                "yes (output reuses token_embd; a GPU output layer holds a copy)".into()
            } else {
                "no".into()
            },
        ),
        ("KV bytes/token (f16)", r.kv_bytes_per_token_f16.to_string()),
        (
            "recurrent bytes/sequence",
            format!(
                "{} (R {} + S {} f32 per layer)",
                r.recurrent_bytes_per_seq, r.n_embd_r, r.n_embd_s
            ),
        ),
        (
            "experts",
            if r.experts.count == 0 {
                "-".into()
            } else {
                format!(
                    "{} × ff {} ({} used), shared {} × ff {}",
                    r.experts.count,
                    r.experts.ff_length,
                    r.experts.used,
                    r.experts.shared_count,
                    r.experts.shared_ff_length
                )
            },
        ),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    writeln!(out, "{t}")?;
    let mut t = super::table::new_table(["type", "bytes"]);
    for (ty, by) in &r.bytes_by_type {
        t.add_row([ty.clone(), format!("{} ({by} B)", Bytes(*by))]);
    }
    writeln!(out, "{t}")?;
    if args.explain {
        writeln!(out, "why:")?;
        for line in m.explain() {
            writeln!(out, "  - {line}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
