//! Remote headers over HTTP range requests, against a loopback server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use ggplan::gguf::remote::{read_model_url, read_url, RemoteOptions};
use ggplan::gguf::write::Writer;
use ggplan::gguf::{read_file, GgmlType, GgufError, Options, Value};

use crate::http_server::{Mode, Server, VFile};

/// A llama-like header with a 20k-token vocab (~0.5 MB header).
fn model_writer(split: Option<(u16, u16)>) -> Writer {
    let mut w = Writer::new();
    let n_vocab = 20_000;
    if split.is_none_or(|(no, _)| no == 0) {
        w.kv("general.architecture", Value::String("llama".into()));
        w.kv("llama.block_count", Value::U32(4));
        let toks = (0..n_vocab)
            .map(|i| Value::String(format!("tok{i}")))
            .collect();
        w.kv("tokenizer.ggml.tokens", Value::Array(toks));
        w.kv(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(0.5); n_vocab]),
        );
    }
    if let Some((no, count)) = split {
        w.kv("split.no", Value::U16(no));
        w.kv("split.count", Value::U16(count));
        if no == 0 {
            w.kv("split.tensors.count", Value::I32(4 * i32::from(count)));
        }
    }
    let base = split.map_or(0, |(no, _)| u32::from(no) * 4);
    for b in base..base + 4 {
        w.tensor(
            &format!("blk.{b}.ffn_up.weight"),
            &[4096, 11008],
            GgmlType::Q4_K,
        );
    }
    w
}

fn vfile(w: &Writer) -> VFile {
    let head = w.finish();
    let len = head.len() as u64 + w.data_len();
    VFile {
        head: Arc::new(head),
        len,
    }
}

fn small_chunks() -> RemoteOptions {
    RemoteOptions {
        chunk: 64 << 10,
        max_chunk: 256 << 10,
        timeout: Duration::from_secs(10),
        ..RemoteOptions::default()
    }
}

#[test]
fn remote_header_equals_local_and_fetches_only_the_header() {
    let w = model_writer(None);
    let f = vfile(&w);
    let dir = tempfile::tempdir().unwrap();
    let local_path = dir.path().join("m.gguf");
    w.write_sparse(&local_path).unwrap();
    let local = read_file(&local_path, &Options::default()).unwrap();

    let server = Server::start(HashMap::from([("/m.gguf".into(), f.clone())]), Mode::Range);
    let url = format!("{}/m.gguf", server.base);
    let remote = read_url(&url, &small_chunks()).unwrap();
    assert_eq!(remote.header, local);
    assert_eq!(remote.file_len, f.len);

    // Chunks of 64, 128, 256, 256… KiB until the header is covered.
    let header_len = local.bytes_read;
    let mut covered = 0u64;
    let mut sizes = Vec::new();
    let mut chunk = 64u64 << 10;
    while covered < header_len {
        sizes.push(chunk);
        covered += chunk;
        chunk = (chunk * 2).min(256 << 10);
    }
    assert_eq!(remote.stats.requests, sizes.len() as u64);
    assert_eq!(remote.stats.bytes_fetched, covered);
    assert!(remote.stats.bytes_fetched < header_len + (256 << 10));
    assert!(
        remote.stats.bytes_fetched * 100 < f.len,
        "{} of {}",
        remote.stats.bytes_fetched,
        f.len
    );
    // The server saw consecutive ranges from byte 0.
    let seen = server.requests();
    let mut next = 0;
    for (s, size) in seen.iter().zip(&sizes) {
        assert_eq!(s.range, Some((next, next + size - 1)));
        next += size;
    }
}

#[test]
fn remote_profile_equals_local_profile() {
    use ggplan::gguf::shard::Shard;
    use ggplan::model::{ModelProfile, ProfileOptions};
    let w = model_writer(None);
    let dir = tempfile::tempdir().unwrap();
    let local_path = dir.path().join("m.gguf");
    w.write_sparse(&local_path).unwrap();
    let server = Server::start(HashMap::from([("/m.gguf".into(), vfile(&w))]), Mode::Range);
    let shards: Vec<Shard> = read_model_url(
        &format!("{}/m.gguf", server.base),
        &RemoteOptions::default(),
    )
    .unwrap()
    .into_iter()
    .map(Shard::from)
    .collect();
    let opts = ProfileOptions::default();
    let remote = ModelProfile::from_shards(&shards, &opts).unwrap();
    let local = ModelProfile::from_gguf(&local_path, &opts).unwrap();
    assert_eq!(remote, local);
    assert_eq!(remote.tensors.len(), 4);
}

#[test]
fn redirects_keep_the_range() {
    let w = model_writer(None);
    let server = Server::start(
        HashMap::from([("/m.gguf".into(), vfile(&w))]),
        Mode::Redirect,
    );
    let remote = read_url(
        &format!("{}/m.gguf", server.base),
        &RemoteOptions::default(),
    )
    .unwrap();
    assert_eq!(remote.header.tensors.len(), 4);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path, "/cdn/m.gguf");
    assert_eq!(seen[1].range, Some((0, (2 << 20) - 1)));
}

#[test]
fn split_model_by_url_from_any_shard() {
    let files: HashMap<String, VFile> = (0..3u16)
        .map(|no| {
            let w = model_writer(Some((no, 3)));
            (
                format!("/repo/M-Q4_K_M-{:05}-of-00003.gguf", no + 1),
                vfile(&w),
            )
        })
        .collect();
    let server = Server::start(files, Mode::Range);
    let url = format!(
        "{}/repo/M-Q4_K_M-00002-of-00003.gguf?download=true",
        server.base
    );
    let shards = read_model_url(&url, &RemoteOptions::default()).unwrap();
    assert_eq!(shards.len(), 3);
    assert!(shards[0]
        .url
        .ends_with("-00001-of-00003.gguf?download=true"));
    let names: Vec<&str> = shards
        .iter()
        .flat_map(|s| s.header.tensors.iter().map(|t| t.name.as_str()))
        .collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[11], "blk.11.ffn_up.weight");
    // Shards 2 and 3 have tiny headers: one 2 MiB request each.
    assert_eq!(shards[2].stats.requests, 1);
    assert_eq!(shards[2].stats.bytes_fetched, 2 << 20);
    let mut paths: Vec<String> = server.requests().into_iter().map(|s| s.path).collect();
    paths.dedup();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths[2].starts_with("/repo/M-Q4_K_M-00003-of-00003.gguf?"));
}

#[test]
fn missing_shard_is_a_remote_error() {
    let w = model_writer(Some((0, 2)));
    let files = HashMap::from([("/M-00001-of-00002.gguf".to_string(), vfile(&w))]);
    let server = Server::start(files, Mode::Range);
    let err = read_model_url(
        &format!("{}/M-00001-of-00002.gguf", server.base),
        &RemoteOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GgufError::Remote { .. }), "{msg}");
    assert!(
        msg.contains("00002-of-00002") && msg.contains("404"),
        "{msg}"
    );
}

fn error_with(mode: Mode, opts: &RemoteOptions) -> String {
    let w = model_writer(None);
    let server = Server::start(HashMap::from([("/m.gguf".into(), vfile(&w))]), mode);
    let err = read_url(&format!("{}/m.gguf", server.base), opts).unwrap_err();
    assert!(matches!(err, GgufError::Remote { .. }), "{err}");
    err.to_string()
}

#[test]
fn server_without_range_support_is_a_clear_error() {
    let msg = error_with(Mode::IgnoreRange, &RemoteOptions::default());
    assert!(msg.contains("does not support range requests"), "{msg}");
}

#[test]
fn missing_content_range_is_a_clear_error() {
    let msg = error_with(Mode::NoContentRange, &RemoteOptions::default());
    assert!(msg.contains("no Content-Range"), "{msg}");
    assert!(msg.contains("bytes 0-2097151"), "{msg}");
}

#[test]
fn a_header_larger_than_max_fetch_stops() {
    let opts = RemoteOptions {
        max_fetch: 100_000,
        ..small_chunks()
    };
    let w = model_writer(None);
    let server = Server::start(HashMap::from([("/m.gguf".into(), vfile(&w))]), Mode::Range);
    let err = read_url(&format!("{}/m.gguf", server.base), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than the 100000 bytes"), "{err}");
    // 64 KiB, then the 34,464 bytes left under the cap.
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].range, Some((65_536, 99_999)));
}

#[test]
fn slow_server_times_out() {
    let opts = RemoteOptions {
        timeout: Duration::from_millis(300),
        ..RemoteOptions::default()
    };
    let msg = error_with(Mode::Slow(Duration::from_secs(2)), &opts);
    assert!(msg.contains("timeout"), "{msg}");
}

#[test]
fn header_command_reads_urls() {
    let w = model_writer(None);
    let dir = tempfile::tempdir().unwrap();
    let local_path = dir.path().join("m.gguf");
    w.write_sparse(&local_path).unwrap();
    let server = Server::start(HashMap::from([("/m.gguf".into(), vfile(&w))]), Mode::Range);
    let url = format!("{}/m.gguf", server.base);

    let json = |arg: &str| -> serde_json::Value {
        let out = Command::cargo_bin("ggplan")
            .unwrap()
            .args(["header", arg, "--json"])
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    let remote = json(&url);
    let local = json(local_path.to_str().unwrap());
    for key in ["metadata", "tensor_count", "tensor_bytes", "bytes_by_type"] {
        assert_eq!(remote[key], local[key], "{key}");
    }
    let file = &remote["files"][0];
    assert_eq!(file["path"], url.as_str());
    assert_eq!(file["requests"], 1);
    assert_eq!(file["bytes_fetched"], 2 << 20);
    assert_eq!(file["file_bytes"], local["files"][0]["file_bytes"]);
}

#[test]
fn header_command_remote_failure_exits_4() {
    let w = model_writer(None);
    let server = Server::start(
        HashMap::from([("/m.gguf".into(), vfile(&w))]),
        Mode::IgnoreRange,
    );
    Command::cargo_bin("ggplan")
        .unwrap()
        .args(["header", &format!("{}/m.gguf", server.base)])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("does not support range requests"));
}
