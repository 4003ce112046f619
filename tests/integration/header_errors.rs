//! `ggplan header` on hostile files (issue #2 "Bad input"): each case exits
//! 2 with a message naming what, which key or tensor, and where — never a
//! panic.

use assert_cmd::Command;
use ggplan::gguf::write::Writer;
use ggplan::gguf::{GgmlType, Value};

/// Offset of the first kv's value, for a file whose first key is `key`.
fn first_value_at(key: &str) -> usize {
    24 + 8 + key.len() + 4
}

fn base() -> Writer {
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String("llama".into()));
    w
}

fn cases() -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    let mut out = Vec::new();

    let b = base().finish();
    out.push((
        "truncated",
        b[..30].to_vec(),
        vec!["metadata count at byte 16 is 1", "truncated file"],
    ));

    let mut b = base().finish();
    b[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    out.push((
        "lying tensor count",
        b,
        vec!["tensor count at byte 8", "9223372036854775808"],
    ));

    let mut b = base().finish();
    let at = first_value_at("general.architecture");
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    out.push((
        "string length 2^40",
        b,
        vec!["general.architecture at byte", "1099511627776 bytes"],
    ));

    let mut w = Writer::new();
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(vec![Value::F32(0.0); 3]),
    );
    let mut b = w.finish();
    let at = first_value_at("tokenizer.ggml.scores") + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    out.push((
        "array longer than the file",
        b,
        vec!["tokenizer.ggml.scores at byte"],
    ));

    let mut w = base();
    w.tensor("t", &[1024, 1024], GgmlType::F32);
    out.push((
        "tensor past the end",
        w.finish(),
        vec!["tensor 't'", "past the end of the file"],
    ));

    let mut w = base();
    w.tensor("a", &[32], GgmlType::F32);
    w.tensor("a", &[32], GgmlType::F32);
    let mut b = w.finish();
    b.resize(b.len() + 256, 0);
    out.push((
        "duplicate tensor",
        b,
        vec!["duplicate tensor name 'a' at byte"],
    ));

    let mut w = base();
    w.tensor("huge", &[1 << 40, 1 << 40], GgmlType::F32);
    out.push((
        "dims overflow",
        w.finish(),
        vec!["tensor 'huge' (info at byte", "overflow"],
    ));

    let mut w = base();
    w.tensor("q", &[100, 2], GgmlType::Q4_K);
    out.push((
        "ne0 not a multiple of the block",
        w.finish(),
        vec![
            "tensor 'q' (info at byte",
            "row length 100",
            "block size 256",
        ],
    ));

    let mut w = Writer::new();
    w.kv("key", Value::U8(1));
    let mut b = w.finish();
    b[32] = 0xff;
    out.push((
        "invalid UTF-8 key",
        b,
        vec!["metadata key at byte 24 is not valid UTF-8"],
    ));
    out
}

#[test]
fn hostile_headers_exit_2_with_a_located_message() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, bytes, needles)) in cases().into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let out = Command::cargo_bin("ggplan")
            .unwrap()
            .arg("header")
            .arg(&path)
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(!err.contains("panicked"), "{what}: {err}");
        for n in needles {
            assert!(err.contains(n), "{what}: {err:?} lacks {n:?}");
        }
    }
}
