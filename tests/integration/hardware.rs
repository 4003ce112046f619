//! `ggplan hw` and `ggplan detect` end to end, with files only (no GPU).

use std::path::PathBuf;

use assert_cmd::Command;
use ggplan::hardware::Hardware;

fn ggplan() -> Command {
    let mut c = Command::cargo_bin("ggplan").unwrap();
    // detect reads these; keep the tests independent of the caller's shell.
    c.env_remove("CUDA_DEVICE_ORDER")
        .env_remove("CUDA_VISIBLE_DEVICES");
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/probe")
        .join(name)
}

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(out.get_output().stderr.clone()).unwrap()
}

#[test]
fn hw_json_reports_effective_capacity() {
    let out = ggplan()
        .args(["hw", "ryzen-ai-max-395-128gb", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mib = 1u64 << 20;
    assert_eq!(v["host"]["capacity_bytes"], (131072 - 8192) * mib);
    let dev = &v["devices"][0];
    assert_eq!(dev["name"], "Vulkan0");
    assert_eq!(dev["pool"], "host");
    assert_eq!(dev["capacity_bytes"], 126976 * mib);
    // capped by the host pool: the same RAM
    assert_eq!(dev["effective_capacity_bytes"], (131072 - 8192) * mib);
    assert_eq!(v["total_capacity_bytes"], (131072 - 8192) * mib);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 0);
}

#[test]
fn hw_table_and_explain_for_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box.toml");
    std::fs::write(
        &path,
        "[host]\nmemory_mib = 32768\nreserved_mib = 2048\n\
         [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\nreserved_mib = 1024\n",
    )
    .unwrap();
    let out = ggplan()
        .arg("hw")
        .arg(&path)
        .arg("--explain")
        .assert()
        .success();
    let s = stdout(&out);
    assert!(s.contains("7.00 GiB"), "{s}"); // 8192 - 1024 MiB
    assert!(
        s.contains("total capacity (shared RAM counted once): 37.00 GiB"),
        "{s}"
    );
    assert!(
        s.contains("CUDA0: capacity = memory 8192 MiB - reserved 1024 MiB = 7.00 GiB"),
        "{s}"
    );
}

#[test]
fn hw_rejects_a_bad_file_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[host]\nmemory_mib = 1024\n[[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8\nreserved_mib = 9\n").unwrap();
    let out = ggplan().arg("hw").arg(&path).assert().code(2);
    let e = stderr(&out);
    assert!(
        e.contains("devices[0] \"CUDA0\": reserved_mib (9) exceeds memory_mib (8)"),
        "{e}"
    );

    let out = ggplan().args(["hw", "no-such-preset"]).assert().code(2);
    assert!(stderr(&out).contains("h100-sxm-80gb"), "lists the presets");

    let out = ggplan().args(["hw", "/no/such/file.toml"]).assert().code(4);
    assert!(stderr(&out).contains("cannot read hardware file"));
}

#[test]
fn detect_from_a_probe_fixture_round_trips() {
    let out = ggplan()
        .args(["detect", "--probe-fixture"])
        .arg(fixture("two-gpus.toml"))
        .assert()
        .success();
    let text = stdout(&out);
    let hw = Hardware::from_toml_str(&text).unwrap();
    assert_eq!(hw.host.memory_mib, 65536);
    assert_eq!(hw.host.reserved_mib, 4096);
    assert_eq!(hw.host.cores, Some(16));
    let (a, b) = (&hw.devices[0], &hw.devices[1]);
    assert_eq!(
        (a.name.as_str(), a.memory_mib, a.reserved_mib),
        ("CUDA0", 24564, 500)
    );
    assert_eq!(
        (b.name.as_str(), b.memory_mib, b.reserved_mib),
        ("CUDA1", 16303, 3503)
    );
    assert_eq!(a.link_gbs, Some(31.51));
    assert_eq!(b.link_gbs, Some(31.51)); // Gen5 at x8
    assert_eq!(a.bandwidth_gbs, Some(1008.1));
    assert_eq!(b.bandwidth_gbs, Some(896.06));
    // Two GPUs and no CUDA_DEVICE_ORDER: warned on stderr and in the file.
    assert!(stderr(&out).contains("CUDA_DEVICE_ORDER=PCI_BUS_ID"));
    assert!(text.contains("# NOTE: GPUs are listed in NVML (PCI bus) order"));
}

#[test]
fn detect_ignore_used_keeps_the_driver_reserve_only() {
    let out = ggplan()
        .args(["detect", "--ignore-used", "--json", "--probe-fixture"])
        .arg(fixture("two-gpus.toml"))
        .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        .assert()
        .success();
    let hw: Hardware = serde_json::from_str(&stdout(&out)).unwrap();
    hw.validate().unwrap();
    assert_eq!(hw.devices[0].reserved_mib, 300);
    assert_eq!(hw.devices[1].reserved_mib, 200);
    assert_eq!(hw.host.reserved_mib, 0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn detect_without_a_driver_writes_a_cpu_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let out = ggplan()
        .args(["detect", "--probe-fixture"])
        .arg(fixture("no-driver.toml"))
        .arg("-o")
        .arg(&path)
        .assert()
        .success();
    let e = stderr(&out);
    assert!(
        e.contains("no NVIDIA GPU found") && e.contains("libnvidia-ml.so.1"),
        "{e}"
    );
    let hw = Hardware::from_path(&path).unwrap();
    assert!(hw.devices.is_empty());
    assert_eq!((hw.host.memory_mib, hw.host.reserved_mib), (32768, 4096));

    // A second run must not overwrite without --force.
    let out = ggplan()
        .args(["detect", "--probe-fixture"])
        .arg(fixture("two-gpus.toml"))
        .arg("-o")
        .arg(&path)
        .assert()
        .code(2);
    assert!(stderr(&out).contains("already exists (pass --force"));
    assert!(Hardware::from_path(&path).unwrap().devices.is_empty());
    ggplan()
        .args(["detect", "--force", "--probe-fixture"])
        .arg(fixture("two-gpus.toml"))
        .arg("-o")
        .arg(&path)
        .assert()
        .success();
    assert_eq!(Hardware::from_path(&path).unwrap().devices.len(), 2);
}

/// The real probe on this machine (Linux: /proc/meminfo): whatever is (not) installed, detect
/// exits 0 and writes a file the loader accepts.
#[test]
#[cfg(target_os = "linux")]
fn detect_on_this_machine_succeeds() {
    let out = ggplan().arg("detect").assert().success();
    let hw = Hardware::from_toml_str(&stdout(&out)).unwrap();
    assert!(hw.host.memory_mib > 0);
}
