//! Header-read speed (issue #2: "header of a 150k-token vocab + 1,500
//! tensors: ≤ 10 ms median to a profile"): the reader alone, the reader
//! plus the profile, and a materialise-everything reference.
//!
//! The header is built in memory with the crate's writer: a Qwen-sized
//! vocabulary (151,936 tokens + scores + token types + 151,387 merges, the
//! arrays a planner skips) and 1,500 tensor infos — about 6 MB, the shape of
//! a large MoE GGUF's first shard. Reading from memory measures the parser,
//! not the disk.
//!
//! Run: `cargo bench --bench header` (add `--no-default-features` to skip
//! building ureq/NVML).

use std::path::PathBuf;
use std::sync::LazyLock;

use divan::{black_box, Bencher};
use ggplan::gguf::shard::Shard;
use ggplan::gguf::write::Writer;
use ggplan::gguf::{read_header, GgmlType, Header, Options, Value};
use ggplan::model::{ModelProfile, ProfileOptions};

fn main() {
    divan::main();
}

const N_VOCAB: usize = 151_936;
const N_MERGES: usize = 151_387;
const N_TENSORS: usize = 1_500;

/// Per-layer tensors of a MoE block: (name, dims, type).
const BLOCK: &[(&str, &[u64], GgmlType)] = &[
    ("attn_norm.weight", &[4096], GgmlType::F32),
    ("attn_q.weight", &[4096, 8192], GgmlType::Q4_K),
    ("attn_k.weight", &[4096, 512], GgmlType::Q4_K),
    ("attn_v.weight", &[4096, 512], GgmlType::Q6_K),
    ("attn_output.weight", &[8192, 4096], GgmlType::Q4_K),
    ("attn_q_norm.weight", &[128], GgmlType::F32),
    ("attn_k_norm.weight", &[128], GgmlType::F32),
    ("ffn_norm.weight", &[4096], GgmlType::F32),
    ("ffn_gate_inp.weight", &[4096, 128], GgmlType::F32),
    ("ffn_gate_exps.weight", &[4096, 1536, 128], GgmlType::Q4_K),
    ("ffn_up_exps.weight", &[4096, 1536, 128], GgmlType::Q4_K),
    ("ffn_down_exps.weight", &[1536, 4096, 128], GgmlType::Q6_K),
    ("ffn_gate_shexp.weight", &[4096, 1536], GgmlType::Q4_K),
    ("ffn_up_shexp.weight", &[4096, 1536], GgmlType::Q4_K),
    ("ffn_down_shexp.weight", &[1536, 4096], GgmlType::Q6_K),
];

/// The header bytes (built once, outside the timed region).
static HEADER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("qwen3moe".into()))
        .kv("general.name", Value::String("Bench-MoE".into()))
        .kv("qwen3moe.block_count", Value::U32(100))
        .kv("qwen3moe.context_length", Value::U32(262_144))
        .kv("qwen3moe.embedding_length", Value::U32(4096))
        .kv("qwen3moe.attention.head_count", Value::U32(64))
        .kv("qwen3moe.attention.head_count_kv", Value::U32(4))
        .kv("qwen3moe.expert_count", Value::U32(128))
        .kv("qwen3moe.expert_used_count", Value::U32(8))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::String("qwen2".into()));
    // Byte-level BPE tokens: mostly short pieces with a space marker.
    let tokens = (0..N_VOCAB)
        .map(|i| Value::String(format!("Ġpiece{i}")))
        .collect();
    w.kv("tokenizer.ggml.tokens", Value::Array(tokens));
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(1); N_VOCAB]),
    );
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(vec![Value::F32(0.0); N_VOCAB]),
    );
    let merges = (0..N_MERGES)
        .map(|i| Value::String(format!("Ġp{} iece{}", i % 97, i)))
        .collect();
    w.kv("tokenizer.ggml.merges", Value::Array(merges));
    w.kv("tokenizer.ggml.eos_token_id", Value::U32(151_645));
    w.tensor("token_embd.weight", &[4096, N_VOCAB as u64], GgmlType::Q4_K);
    let mut n = 1;
    'layers: for layer in 0.. {
        for (name, dims, ty) in BLOCK {
            if n == N_TENSORS - 2 {
                break 'layers;
            }
            w.tensor(&format!("blk.{layer}.{name}"), dims, *ty);
            n += 1;
        }
    }
    w.tensor("output_norm.weight", &[4096], GgmlType::F32);
    w.tensor("output.weight", &[4096, N_VOCAB as u64], GgmlType::Q6_K);
    w.finish()
});

fn check(h: &Header) {
    assert_eq!(h.tensors.len(), N_TENSORS);
    assert_eq!(
        h.get("tokenizer.ggml.tokens").and_then(Value::array_len),
        Some(N_VOCAB as u64)
    );
}

/// The planner's read: long arrays skipped, lengths checked against the
/// file length (as `read_file` does).
#[divan::bench]
fn read_header_150k_vocab_1500_tensors(bencher: Bencher) {
    let bytes: &[u8] = &HEADER;
    check(&read_header(bytes, &Options::default()).unwrap());
    // The data region is absent here: claim a file long enough for the
    // tensor bounds check to pass, as a real file would.
    let opts = Options {
        file_len: Some(bytes.len() as u64 + (1 << 40)),
        ..Options::default()
    };
    bencher
        .counter(divan::counter::BytesCount::new(bytes.len()))
        .bench(|| read_header(black_box(bytes), &opts).unwrap());
}

/// Reference: every array materialised (450k `Value::String`s) — what a
/// reader without skipping pays.
#[divan::bench(sample_count = 20)]
fn read_header_materialise_everything(bencher: Bencher) {
    let bytes: &[u8] = &HEADER;
    let opts = Options {
        max_array_len: u64::MAX,
        ..Options::default()
    };
    bencher.bench(|| read_header(black_box(bytes), &opts).unwrap());
}

/// The budget: header of a 150k-token vocab + 1,500 tensors to a
/// profile, ≤ 10 ms median (`ModelProfile::from_shards`, as `ggplan
/// profile`/`inspect` do after `read_model`).
#[divan::bench]
fn header_to_profile_150k_vocab_1500_tensors(bencher: Bencher) {
    let bytes: &[u8] = &HEADER;
    let opts = Options {
        file_len: Some(bytes.len() as u64 + (1 << 40)),
        ..Options::default()
    };
    bencher.bench(|| {
        let header = read_header(black_box(bytes), &opts).unwrap();
        let shard = Shard {
            path: PathBuf::from("bench-00001-of-00001.gguf"),
            file_len: bytes.len() as u64 + (1 << 40),
            header,
        };
        ModelProfile::from_shards(&[shard], &ProfileOptions::default()).unwrap()
    });
}
