//! `ggplan mem` end to end: JSON shape, exit codes, flag errors.

use assert_cmd::Command;

const LLAMA8B: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/llama-3.1-8b-q8_0.toml");

fn mem(args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("ggplan")
        .unwrap()
        .arg("mem")
        .args(args)
        .assert()
}

#[test]
fn json_has_the_documented_fields_and_consistent_totals() {
    let out = mem(&[
        LLAMA8B,
        "--hardware",
        "rtx4090-rtx5070ti",
        "--json",
        "--",
        "-c",
        "8192",
        "-ngl",
        "all",
        "-fit",
        "off",
    ])
    .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["llama_build"], 11434);
    let devs = v["devices"].as_array().unwrap();
    let names: Vec<&str> = devs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["CUDA0", "CUDA1", "CPU"]);
    for d in devs {
        let sum = [
            "model_bytes",
            "context_bytes",
            "compute_bytes",
            "output_bytes",
        ]
        .iter()
        .map(|k| d[*k].as_u64().unwrap())
        .sum::<u64>();
        assert_eq!(d["total_bytes"].as_u64().unwrap(), sum);
        assert!(d["capacity_bytes"].as_u64().unwrap() > 0);
    }
    // 32 blocks + output; full offload splits the 33 "layers" by free memory.
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 33);
    assert!(layers.iter().all(|l| l["device"] != "CPU"));
    // KV: 32 layers x 8192 cells x (1024 + 1024) x 2 bytes = 1 GiB, split over the GPUs.
    let kv: u64 = devs
        .iter()
        .map(|d| d["context_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(kv, 32 * 8192 * 2048 * 2);
    assert!(v["graph_splits"].as_u64().unwrap() >= 3);
    assert_eq!(
        devs[0]["unverified"], true,
        "CUDA terms are labelled unverified"
    );
}

#[test]
fn unknown_flag_is_an_input_error_naming_it() {
    let out = mem(&[LLAMA8B, "--", "-c", "4096", "--frobnicate"]).code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn over_capacity_exits_3_and_names_the_device() {
    let out = mem(&[
        LLAMA8B,
        "--hardware",
        "laptop-rtx4060",
        "--",
        "-c",
        "131072",
        "-ngl",
        "all",
        "-fit",
        "off",
    ])
    .code(3);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("over capacity: CUDA0"), "{stdout}");
}

/// `-fa auto` with `-nkvo`: llama.cpp's probe (llama_context::resolve_fused_ops)
/// turns flash attention off for lfm2 ("layer 2 is assigned to device RPC0
/// but Flash Attention is assigned to device CPU", b11434 dry run); the
/// report must say what llama.cpp ends up using, not what was asked for.
#[test]
fn reported_flash_attn_is_the_resolved_setting() {
    const LFM2: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/oracle/models/lfm2-tiny.toml"
    );
    let fa = |extra: &[&str]| {
        let mut args = vec![
            LFM2,
            "--hardware",
            "rtx4090-rtx5070ti",
            "--json",
            "--",
            "-c",
            "4096",
            "-np",
            "1",
            "-ngl",
            "99",
            "-fit",
            "off",
        ];
        args.extend_from_slice(extra);
        let out = mem(&args).success();
        let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let warned = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("flash attention turned off"));
        (v["context"]["flash_attn"].as_bool().unwrap(), warned)
    };
    assert_eq!(fa(&["-nkvo"]), (false, true), "auto FA resolved off");
    assert_eq!(fa(&["-nkvo", "-fa", "on"]), (true, false), "-fa on is kept");
    assert_eq!(fa(&[]), (true, false), "KV offloaded: auto FA stays on");
}
