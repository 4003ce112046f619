//! `ggplan emit`: rendering, in-place updates that keep every other byte,
//! refusal of unparsable files, permissions, dry runs.

use std::fs;
use std::path::Path;

use assert_cmd::Command;

fn ggplan() -> Command {
    Command::cargo_bin("ggplan").unwrap()
}

const FLAGS: &[&str] = &[
    "-c", "32768", "-np", "1", "-fit", "off", "-ngl", "99", "-fa", "on",
];

fn emit(format: &str, name: &str, file: Option<&Path>, extra: &[&str]) -> Command {
    let mut c = ggplan();
    c.args([
        "emit",
        "--format",
        format,
        "--name",
        name,
        "--model",
        "/models/q.gguf",
    ]);
    if let Some(f) = file {
        c.arg("--update").arg(f);
    }
    c.args(extra).arg("--").args(FLAGS);
    c
}

fn stdout(c: &mut Command) -> String {
    String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
}

#[test]
fn prints_each_format() {
    let shell = stdout(&mut emit("shell", "q", None, &[]));
    assert_eq!(
        shell,
        "llama-server -m /models/q.gguf -c 32768 -np 1 -fit off -ngl 99 -fa on\n"
    );
    let conf = stdout(&mut emit("models-conf", "q", None, &[]));
    assert!(
        conf.contains("[q]\nCTX_SIZE=32768\nN_GPU_LAYERS=99\nFIT=off\nEXTRA_ARGS=-np 1 -fa on\n"),
        "{conf}"
    );
    let ini = stdout(&mut emit("preset", "q", None, &[]));
    assert!(
        ini.contains("[q]\nmodel = /models/q.gguf\nctx-size = 32768\nparallel = 1\nfit = off\n"),
        "{ini}"
    );
    let yaml = stdout(&mut emit(
        "llama-swap",
        "q",
        None,
        &["--ttl", "60", "--visible-devices", "0,1"],
    ));
    let doc: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(doc["models"]["q"]["ttl"].as_u64(), Some(60));
    assert_eq!(
        doc["models"]["q"]["env"][0].as_str(),
        Some("CUDA_VISIBLE_DEVICES=0,1")
    );

    let json = stdout(&mut emit("shell", "q", None, &["--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], "shell");
    assert_eq!(v["text"].as_str(), Some(shell.as_str()));
}

#[test]
fn update_keeps_untouched_bytes_crlf_and_no_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("models.conf");
    // CRLF, a comment in front of the section, and no newline at the end.
    let head = "; profiles\r\n[glm]\r\nCTX_SIZE=8192\r\n\r\n# hand-tuned, keep\r\n";
    let tail = "\r\n[gpt-oss]\r\nCTX_SIZE=65536";
    fs::write(
        &f,
        format!("{head}[q]\r\nCTX_SIZE=10240\r\nEXTRA_ARGS=-b 512\r\n{tail}"),
    )
    .unwrap();
    stdout(&mut emit("models-conf", "q", Some(&f), &[]));
    let after = fs::read_to_string(&f).unwrap();
    assert_eq!(
        after,
        format!(
            "{head}# ggplan plan for /models/q.gguf\r\n[q]\r\nCTX_SIZE=32768\r\nN_GPU_LAYERS=99\r\nFIT=off\r\nEXTRA_ARGS=-np 1 -fa on\r\n{tail}"
        )
    );
    // Running it again changes nothing and says so.
    let json = stdout(&mut emit("models-conf", "q", Some(&f), &["--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["action"], "unchanged");
    assert_eq!(v["written"], false);
    assert_eq!(fs::read_to_string(&f).unwrap(), after);
}

#[test]
fn unparsable_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (format, name, body) in [
        (
            "models-conf",
            "models.conf",
            &b"[a]\nthis is not a key line\n"[..],
        ),
        ("preset", "presets.ini", &b"[a]\n  indented = 1\n"[..]),
        (
            "llama-swap",
            "config.yaml",
            &b"models:\n  a: {cmd: [unclosed\n"[..],
        ),
        ("llama-swap", "flow.yaml", &b"models: {a: {cmd: x}}\n"[..]),
        ("models-conf", "latin1.conf", &b"[caf\xe9]\n"[..]),
    ] {
        let f = dir.path().join(name);
        fs::write(&f, body).unwrap();
        emit(format, "q", Some(&f), &[]).assert().code(2);
        assert_eq!(fs::read(&f).unwrap(), body, "{name} was modified");
    }
    let entries = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 5, "a temp file was left behind");
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yaml");
    let body =
        "# my config\nmodels:\n  q:\n    cmd: old\n    ttl: 5 # short\n\n  other:\n    cmd: x\n";
    fs::write(&f, body).unwrap();
    let out = stdout(&mut emit("llama-swap", "q", Some(&f), &["--dry-run"]));
    assert!(out.starts_with("--- a/"), "{out}");
    assert!(
        out.contains("-    cmd: old\n-    ttl: 5 # short\n+    cmd: |-\n"),
        "{out}"
    );
    assert!(out.contains(" \n   other:\n"), "{out}");
    assert_eq!(fs::read_to_string(&f).unwrap(), body);
    // Shell output is not a file.
    emit("shell", "q", Some(&f), &[]).assert().code(2);
}

#[cfg(unix)]
#[test]
fn update_keeps_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("presets.ini");
    fs::write(&f, "version = 1\n\n[*]\nc = 8192\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let table = stdout(&mut emit("preset", "q", Some(&f), &[]));
    assert!(table.contains("added"), "{table}");
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&f).unwrap();
    assert!(
        text.starts_with("version = 1\n\n[*]\nc = 8192\n\n# ggplan plan for /models/q.gguf\n[q]\n"),
        "{text}"
    );
}

#[test]
fn reads_a_deployment_json_with_a_plan_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.json");
    fs::write(
        &f,
        r#"{"name": "glm", "model_path": "/m/glm.gguf", "argv": ["-c", "8192", "-ngl", "48", "-fit", "off"],
            "summary": {"ggplan_version": "0.1.0", "hardware_file": "hw.toml",
                        "devices": [{"device": "CUDA0", "predicted": 1073741824, "capacity": 2147483648}],
                        "tokens_per_s": {"prompt": 100.0, "generation": 20.5}}}"#,
    )
    .unwrap();
    let out = stdout(
        ggplan()
            .args(["emit", "--format", "models-conf", "--deployment"])
            .arg(&f),
    );
    assert_eq!(
        out,
        "# ggplan 0.1.0 plan for /m/glm.gguf\n# hardware: hw.toml\n#   CUDA0    1.00 GiB predicted of 2.00 GiB\n\
         # speed: 100.0 tok/s prompt, 20.5 tok/s generation (predicted)\n[glm]\nCTX_SIZE=8192\nN_GPU_LAYERS=48\nFIT=off\n"
    );
    // Flags and --deployment do not mix.
    ggplan()
        .args(["emit", "--format", "shell", "--name", "x", "--deployment"])
        .arg(&f)
        .assert()
        .code(2);
}

#[test]
fn writes_a_fleet_config_with_groups() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let g = dir.path().join("g.json");
    fs::write(
        &a,
        r#"{"name": "chat", "model_path": "/m/chat.gguf", "argv": ["-c", "8192"], "ttl": 600}"#,
    )
    .unwrap();
    fs::write(&b, r#"{"name": "embed", "model_path": "/m/e.gguf", "argv": ["-c", "512"], "visible_devices": [1]}"#).unwrap();
    fs::write(
        &g,
        r#"{"together": {"swap": false, "exclusive": false, "members": ["chat", "embed"]}}"#,
    )
    .unwrap();
    let out = stdout(
        ggplan()
            .args(["emit", "--format", "llama-swap", "--deployment"])
            .arg(&a)
            .arg("--deployment")
            .arg(&b)
            .arg("--groups")
            .arg(&g),
    );
    let doc: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
    assert_eq!(doc["models"]["chat"]["ttl"].as_u64(), Some(600));
    assert_eq!(
        doc["models"]["embed"]["env"][0].as_str(),
        Some("CUDA_VISIBLE_DEVICES=1")
    );
    assert_eq!(doc["routing"]["router"]["use"].as_str(), Some("group"));
    let grp = &doc["routing"]["router"]["settings"]["groups"]["together"];
    assert_eq!(grp["swap"].as_bool(), Some(false));
    assert_eq!(grp["persistent"].as_bool(), Some(false));
    assert_eq!(grp["members"][1].as_str(), Some("embed"));
    // A group naming an unknown model is refused.
    fs::write(&g, r#"{"x": {"members": ["nope"]}}"#).unwrap();
    ggplan()
        .args(["emit", "--format", "llama-swap", "--deployment"])
        .arg(&a)
        .arg("--groups")
        .arg(&g)
        .assert()
        .code(2);
}
