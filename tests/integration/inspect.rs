//! `ggplan inspect` / `ggplan profile` end to end, on the shipped gemma-3-270m
//! profile (read from the real file's header) and on generated GGUFs.

use std::path::Path;

use assert_cmd::Command;
use ggplan::gguf::{write::Writer, GgmlType, Value};
use serde_json::Value as J;

const GEMMA: &str = "models/gemma-3-270m-Q4_K_M.toml";

fn ggplan() -> Command {
    Command::cargo_bin("ggplan").unwrap()
}

fn inspect_json(path: &Path) -> J {
    let out = ggplan()
        .args(["inspect", "--json"])
        .arg(path)
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn gemma_270m_profile_numbers() {
    let j = inspect_json(Path::new(GEMMA));
    assert_eq!(j["arch"], "gemma3");
    assert_eq!(j["provenance"]["kind"], "gguf_header");
    assert_eq!(j["block_count"], 18);
    assert_eq!(j["tensor_count"], 236);
    // The data region of the real file is exactly the tensors (each already
    // a multiple of the 32-byte alignment): 253,113,024 − 6,525,120.
    let text = std::fs::read_to_string(GEMMA).unwrap();
    assert!(text.contains("data_offset = 6525120, len = 253113024"));
    assert_eq!(j["tensor_bytes"], 253_113_024u64 - 6_525_120);
    assert_eq!(j["tensor_bytes"], 246_587_904u64);
    assert_eq!(j["allocated_bytes"], j["tensor_bytes"]);
    // 18 layers × (K 256 + V 256) × 2 bytes: 1 KV head of 256, SWA or not.
    assert_eq!(j["kv_bytes_per_token_f16"], 18 * 2 * 512);
    assert_eq!(j["recurrent_bytes_per_seq"], 0);
    assert_eq!(j["tied_embeddings"], true);
    assert_eq!(j["n_vocab"], 262_144);
    // token_embd Q8_0 [640, 262144]: 640/32·34 bytes per row.
    assert_eq!(j["input_bytes"], 680 * 262_144);
    let blocks = j["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 18);
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|b| b["attention"].as_str().unwrap())
        .collect();
    for (i, k) in kinds.iter().enumerate() {
        // gemma3: period 6, every 6th layer (5, 11, 17) is global.
        assert_eq!(*k, if i % 6 == 5 { "full" } else { "swa" }, "block {i}");
    }
    assert_eq!(blocks[0]["window"], 512);
    assert_eq!(blocks[5]["window"], J::Null);
    let sum: u64 = blocks.iter().map(|b| b["bytes"].as_u64().unwrap()).sum();
    let by_type: u64 = j["bytes_by_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_type, 246_587_904);
    assert_eq!(
        sum + j["input_bytes"].as_u64().unwrap() + j["output_bytes"].as_u64().unwrap(),
        246_587_904
    );
    for b in blocks {
        assert_eq!(b["kv_bytes_per_token_f16"], 1024);
    }
}

#[test]
fn gemma_table_shows_layout_and_totals() {
    let out = ggplan().args(["inspect", GEMMA]).assert().success();
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(s.contains("SWA 512 4q/1kv × 256"), "{s}");
    assert!(s.contains("18432"), "{s}");
    assert!(s.contains("246587904"), "{s}");
    let out = ggplan()
        .args(["inspect", "--explain", GEMMA])
        .assert()
        .success();
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        s.contains("SWA on 15 of 18 layers from llama.cpp's default period 6"),
        "{s}"
    );
}

fn tiny_gguf(path: &Path) {
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("qwen3".into()))
        .kv("qwen3.block_count", Value::U32(2))
        .kv("qwen3.embedding_length", Value::U32(256))
        .kv("qwen3.attention.head_count", Value::U32(4))
        .kv("qwen3.attention.head_count_kv", Value::U32(2))
        .kv("qwen3.attention.key_length", Value::U32(64))
        .kv("qwen3.attention.value_length", Value::U32(64))
        .tensor("token_embd.weight", &[256, 100], GgmlType::Q8_0)
        .tensor("output_norm.weight", &[256], GgmlType::F32);
    for il in 0..2 {
        w.tensor(
            &format!("blk.{il}.attn_q.weight"),
            &[256, 256],
            GgmlType::Q4_K,
        )
        .tensor(
            &format!("blk.{il}.attn_k.weight"),
            &[256, 128],
            GgmlType::Q4_K,
        )
        .tensor(
            &format!("blk.{il}.attn_v.weight"),
            &[256, 128],
            GgmlType::Q6_K,
        )
        .tensor(
            &format!("blk.{il}.ffn_up.weight"),
            &[256, 512],
            GgmlType::Q4_K,
        );
    }
    w.write_sparse(path).unwrap();
}

#[test]
fn profile_round_trip_gives_the_same_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let toml = dir.path().join("tiny.toml");
    tiny_gguf(&gguf);
    ggplan()
        .args(["profile"])
        .arg(&gguf)
        .arg("-o")
        .arg(&toml)
        .assert()
        .success();
    let a = inspect_json(&gguf);
    let b = inspect_json(&toml);
    assert_eq!(a, b);
    assert_eq!(a["kv_bytes_per_token_f16"], 2 * 2 * (128 + 128));
    assert_eq!(a["tied_embeddings"], true);
    // Synthetic provenance is recorded as such.
    let syn = dir.path().join("syn.toml");
    ggplan()
        .args([
            "profile",
            "--synthetic",
            "toy layout",
            "--source",
            "unit test",
        ])
        .arg(&gguf)
        .arg("-o")
        .arg(&syn)
        .assert()
        .success();
    let j = inspect_json(&syn);
    assert_eq!(j["provenance"]["kind"], "synthetic");
    assert_eq!(j["provenance"]["sources"][0], "unit test");
    assert_eq!(j["tensor_bytes"], a["tensor_bytes"]);
}

#[test]
fn bad_input_exits_nonzero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    // Missing file: I/O (4).
    let out = ggplan()
        .args(["inspect", "/nonexistent/model.gguf"])
        .assert()
        .code(4);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    // Neither GGUF nor TOML: bad input (2).
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model \x00\x01").unwrap();
    ggplan().arg("inspect").arg(&junk).assert().code(2);
    // A profile with an unknown key: line number in the message.
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(GEMMA).unwrap().replacen(
        "alignment = 32",
        "alignment = 32\nflavour = 1",
        1,
    );
    std::fs::write(&bad, text).unwrap();
    let out = ggplan().arg("inspect").arg(&bad).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("flavour") && err.contains("line 7"), "{err}");
    // A truncated GGUF header.
    let gguf = dir.path().join("t.gguf");
    tiny_gguf(&gguf);
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..200]).unwrap();
    let out = ggplan().arg("inspect").arg(&gguf).assert().code(2);
    assert!(!String::from_utf8_lossy(&out.get_output().stderr).contains("panicked"));
    // --source without --synthetic is a usage error.
    ggplan()
        .args(["profile", GEMMA, "--source", "x"])
        .assert()
        .code(2);
}

fn kinds(j: &J) -> Vec<String> {
    j["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["attention"].as_str().unwrap().to_string())
        .collect()
}

/// The shipped full-size profiles against their public configs
/// (shared/notes/model-configs.toml): KV widths, layer kinds, recurrent state.
#[test]
fn shipped_profiles_match_public_configs() {
    let load = |name: &str| inspect_json(Path::new(&format!("models/{name}.toml")));

    let j = load("llama-3.1-8b-q8_0");
    // 32 layers, 8 KV heads × 128, K + V at 2 bytes.
    assert_eq!(j["kv_bytes_per_token_f16"], 32 * 2 * (8 * 128 * 2));
    assert_eq!(kinds(&j), vec!["full"; 32]);

    let j = load("qwen3-30b-a3b-q4_k_m");
    assert_eq!(j["kv_bytes_per_token_f16"], 48 * 2 * (4 * 128 * 2));
    assert_eq!(j["experts"]["count"], 128);
    assert_eq!(j["experts"]["used"], 8);
    assert_eq!(j["experts"]["ff_length"], 768);
    assert!(
        j["blocks"][0]["bytes_by_group"]["ffn_routed"]
            .as_u64()
            .unwrap()
            > 0
    );

    let j = load("gpt-oss-120b-mxfp4");
    assert_eq!(j["kv_bytes_per_token_f16"], 36 * 2 * (8 * 64 * 2));
    for (i, k) in kinds(&j).iter().enumerate() {
        assert_eq!(k, if i % 2 == 0 { "swa" } else { "full" }, "block {i}");
    }
    assert_eq!(j["blocks"][0]["window"], 128);
    assert!(j["bytes_by_type"]["MXFP4"].as_u64().unwrap() > 50_000_000_000);

    let j = load("glm-4.7-flash-q4_k_m");
    // 47 layers (the published GGUF has no MTP block); MLA caches
    // kv_lora_rank 512 + rope 64 in K only.
    assert_eq!(j["block_count"], 47);
    assert_eq!(j["n_nextn"], 0);
    assert_eq!(kinds(&j), vec!["mla"; 47]);
    assert_eq!(j["kv_bytes_per_token_f16"], 47 * 2 * (512 + 64));
    assert_eq!(j["blocks"][46]["k_width"], 576);
    assert_eq!(j["blocks"][46]["v_width"], 0);
    assert_eq!(j["experts"]["count"], 64);
    assert_eq!(j["experts"]["shared_count"], 1);
    // Layer 0 is the one leading dense block.
    assert!(
        j["blocks"][0]["bytes_by_group"]["ffn_dense"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(j["blocks"][0]["bytes_by_group"].get("ffn_routed"), None);

    let j = load("qwen3-coder-next-q5_k_m");
    // full_attention_interval 4: layers 3, 7, …, 47 attend (2 KV heads × 256).
    for (i, k) in kinds(&j).iter().enumerate() {
        assert_eq!(
            k,
            if i % 4 == 3 { "full" } else { "recurrent" },
            "block {i}"
        );
    }
    assert_eq!(j["kv_bytes_per_token_f16"], 12 * 2 * (2 * 256 * 2));
    // GDN: d_conv 4, d_inner 32×128, 16 groups of state 128.
    let r = 3 * (4096 + 2 * 16 * 128);
    let s = 128 * 4096;
    assert_eq!(j["n_embd_r"], r);
    assert_eq!(j["recurrent_bytes_per_seq"], 36 * 4 * (r + s));

    let j = load("nemotron-3-nano-30b-a3b-q4_k_m");
    let pattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME";
    let want: Vec<&str> = pattern
        .chars()
        .map(|c| match c {
            'M' => "recurrent",
            '*' => "full",
            _ => "none",
        })
        .collect();
    assert_eq!(kinds(&j), want);
    assert_eq!(j["kv_bytes_per_token_f16"], 6 * 2 * (2 * 128 * 2));
    // Mamba2: 64 heads × 64 = d_inner 4096, 8 groups, state 128, conv 4.
    let r = 3 * (4096 + 2 * 8 * 128);
    assert_eq!(j["recurrent_bytes_per_seq"], 23 * 4 * (r + 128 * 4096));

    for name in [
        "llama-3.1-8b-q8_0",
        "qwen3-30b-a3b-q4_k_m",
        "gpt-oss-120b-mxfp4",
        "glm-4.7-flash-q4_k_m",
        "qwen3-coder-next-q5_k_m",
        "nemotron-3-nano-30b-a3b-q4_k_m",
    ] {
        let j = load(name);
        assert_eq!(j["provenance"]["kind"], "synthetic", "{name}");
        assert_eq!(j["warnings"].as_array().unwrap().len(), 0, "{name}");
        let by_type: u64 = j["bytes_by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(j["tensor_bytes"], by_type, "{name}");
    }
}

/// Every oracle test-model profile loads and analyses without warnings.
#[test]
fn oracle_fixture_profiles_load() {
    let dir = Path::new("tests/fixtures/oracle/models");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let j = inspect_json(&p);
            assert_eq!(j["provenance"]["kind"], "synthetic", "{}", p.display());
            assert!(
                j["warnings"].as_array().unwrap().is_empty(),
                "{}",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} fixture profiles");
}

/// A model split in two shards: any shard inspects as the whole model, and
/// the profile records both files and which file holds each tensor.
#[test]
fn split_model_profiles_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2u16 {
        let mut w = Writer::new();
        if i == 0 {
            w.kv("general.architecture", Value::String("llama".into()))
                .kv("llama.block_count", Value::U32(2))
                .kv("llama.embedding_length", Value::U32(256))
                .kv("llama.attention.head_count", Value::U32(4))
                .kv("split.tensors.count", Value::I32(4));
        }
        w.kv("split.no", Value::U16(i))
            .kv("split.count", Value::U16(2));
        let il = u32::from(i);
        w.tensor(
            &format!("blk.{il}.attn_k.weight"),
            &[256, 256],
            GgmlType::Q8_0,
        )
        .tensor(
            &format!("blk.{il}.attn_v.weight"),
            &[256, 256],
            GgmlType::Q8_0,
        );
        w.write_sparse(&dir.path().join(format!("m-{:05}-of-00002.gguf", i + 1)))
            .unwrap();
    }
    let second = dir.path().join("m-00002-of-00002.gguf");
    let j = inspect_json(&second);
    assert_eq!(j["tensor_count"], 4);
    assert_eq!(j["tensor_bytes"], 4 * 256 * 8 * 34);
    assert_eq!(j["kv_bytes_per_token_f16"], 2 * 2 * (256 + 256));
    let toml = dir.path().join("m.toml");
    ggplan()
        .arg("profile")
        .arg(&second)
        .arg("-o")
        .arg(&toml)
        .assert()
        .success();
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("m-00001-of-00002.gguf") && text.contains("m-00002-of-00002.gguf"));
    assert!(text.contains("[\"blk.1.attn_v.weight\", \"Q8_0\", [256, 256], 1, 69632]"));
    assert_eq!(inspect_json(&toml)["blocks"], j["blocks"]);
}

/// llama.cpp b11434's own numbers for the oracle's GGUFs: `llama-fit-params -nr
/// --fit-print on -c 4096` (one sequence, n_ubatch 512) printed `Host <model>
/// <context> <compute>` MiB, recorded by oracle-gen in /work/cache/oracle-gguf/INDEX.txt.
/// The profiles must reproduce model (allocated weights) and context (KV at
/// f16 over 4096 cells, SWA layers over PAD(min(4096, window + 512), 256)
/// cells, plus recurrent state) to the MiB.
#[test]
fn profiles_reproduce_llama_cpp_fit_params() {
    const MIB: u64 = 1 << 20;
    let cases: &[(&str, u64, u64)] = &[
        ("tests/fixtures/oracle/models/deepseek2-mla-tiny", 30, 11),
        ("tests/fixtures/oracle/models/gemma3-270m-q4_k_m", 235, 27),
        ("tests/fixtures/oracle/models/gemma3-tiny", 49, 18),
        ("tests/fixtures/oracle/models/glm4moe-tiny", 27, 16),
        ("tests/fixtures/oracle/models/gpt-oss-tiny", 34, 4),
        ("tests/fixtures/oracle/models/lfm2-tiny", 21, 6),
        ("tests/fixtures/oracle/models/llama-tiny-tied", 67, 24),
        ("tests/fixtures/oracle/models/llama-tiny", 36, 32),
        ("tests/fixtures/oracle/models/mamba2-tiny", 11, 1),
        ("tests/fixtures/oracle/models/nemotron-h-moe-tiny", 28, 5),
        ("tests/fixtures/oracle/models/qwen3-tiny", 288, 96),
        ("tests/fixtures/oracle/models/qwen3moe-tiny", 184, 64),
        ("tests/fixtures/oracle/models/qwen3next-tiny", 54, 8),
        ("models/gemma-3-270m-Q4_K_M", 235, 27),
        ("models/glm-4.7-flash-q4_k_m", 17283, 211),
        ("models/gpt-oss-120b-mxfp4", 60438, 171),
        ("models/llama-3.1-8b-q8_0", 8137, 512),
        ("models/nemotron-3-nano-30b-a3b-q4_k_m", 23371, 71),
        ("models/qwen3-30b-a3b-q4_k_m", 17691, 384),
        ("models/qwen3-coder-next-q5_k_m", 54115, 171),
    ];
    for &(path, model_mib, context_mib) in cases {
        let j = inspect_json(Path::new(&format!("{path}.toml")));
        assert_eq!(
            j["allocated_bytes"].as_u64().unwrap() / MIB,
            model_mib,
            "{path} model"
        );
        let mut ctx = j["recurrent_bytes_per_seq"].as_u64().unwrap();
        for b in j["blocks"].as_array().unwrap() {
            let cells = match b["window"].as_u64() {
                Some(w) => (w + 512).min(4096).div_ceil(256) * 256,
                None => 4096,
            };
            ctx += b["kv_bytes_per_token_f16"].as_u64().unwrap() * cells;
        }
        assert_eq!(ctx / MIB, context_mib, "{path} context");
    }
}
