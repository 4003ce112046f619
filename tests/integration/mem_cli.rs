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

const GPT_OSS_120B: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/gpt-oss-120b-mxfp4.toml"
);

fn mem_json(args: &[&str]) -> serde_json::Value {
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .arg("mem")
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

const GIB: u64 = 1 << 30;

/// gpt-oss-120b (61 GiB) on a 24 + 16 GiB pair with -c 32768: the flags as
/// given do not fit, so llama.cpp's --fit (on by default) places 14 + 23
/// layers, sends one partial layer per device onward (layer 13's gate/down
/// to CUDA1, layer 19's to the CPU) and the experts of layers 20-36 to the
/// CPU, leaving at least the 1 GiB --fit-target free on each GPU.
#[test]
fn fit_on_applies_llama_cpp_fit_and_shows_the_fitted_memory() {
    let v = mem_json(&[
        GPT_OSS_120B,
        "--hw",
        "rtx4090-rtx5070ti",
        "--json",
        "--",
        "-c",
        "32768",
    ]);
    let f = &v["fit"];
    assert_eq!(f["applied"], true);
    assert_eq!(f["status"], "fitted");
    assert_eq!(f["changed"]["c"], serde_json::Value::Null, "-c was given");
    assert_eq!(f["changed"]["ngl"], 37);
    assert_eq!(f["changed"]["ts"], serde_json::json!([14, 23]));
    let ot: Vec<&str> = f["changed"]["ot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(ot.len(), 19);
    assert_eq!(ot[0], r"blk\.13\.ffn_(gate|gate_up|down).*=CUDA1");
    assert_eq!(ot[1], r"blk\.19\.ffn_(gate|gate_up|down).*=CPU");
    assert_eq!(ot[2], r"blk\.20\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU");
    assert_eq!(f["argv"][0], "-ngl");
    assert_eq!(f["argv"][3], "14,23");
    // The devices shown are the fitted configuration's.
    assert_eq!(v["context"]["n_ctx"], 32768);
    let devs = v["devices"].as_array().unwrap();
    for d in &devs[..2] {
        let (t, c) = (
            d["total_bytes"].as_u64().unwrap(),
            d["capacity_bytes"].as_u64().unwrap(),
        );
        assert!(c - t >= GIB, "{}: {t} of {c}", d["name"]);
        assert!(c - t < 2 * GIB, "{}: fit fills the device", d["name"]);
    }
    assert_eq!(v["layers"][13]["device"], "CUDA0");
    assert_eq!(v["layers"][14]["device"], "CUDA1");
    // The CPU holds the experts of 17 layers plus parts of two.
    assert!(devs[2]["model_bytes"].as_u64().unwrap() > 50 * GIB);
    assert!(!v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("--fit is on")));

    // -fit off: the flags as given (every layer on the GPUs) do not fit.
    let out = Command::cargo_bin("ggplan")
        .unwrap()
        .args([
            "mem",
            GPT_OSS_120B,
            "--hw",
            "rtx4090-rtx5070ti",
            "--json",
            "--",
            "-c",
            "32768",
            "-fit",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fit"], serde_json::Value::Null);
    assert!(v["devices"][0]["total_bytes"].as_u64().unwrap() > 40 * GIB);
}

/// llama-3.1-8b Q8_0 (8 GiB of weights, 128 Ki context) on an 8 GiB laptop
/// GPU with no flags: fit first cuts the unset context to its 4096 floor,
/// then keeps 27 of 33 layers (output included) on the GPU. A user-set
/// `-ngl` makes fit give up, and the table says so.
#[test]
fn fit_reduces_an_unset_context_and_respects_user_set_flags() {
    let v = mem_json(&[LLAMA8B, "--hw", "laptop-rtx4060", "--json", "--"]);
    let f = &v["fit"];
    assert_eq!(f["status"], "fitted");
    assert_eq!(f["argv"], serde_json::json!(["-c", "4096", "-ngl", "27"]));
    assert_eq!(f["changed"]["c"], 4096);
    assert_eq!(f["changed"]["ts"], serde_json::Value::Null);
    assert_eq!(v["context"]["n_ctx"], 4096);
    let cpu_layers = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["device"] == "CPU")
        .count();
    assert_eq!(cpu_layers, 6);
    let gpu = &v["devices"][0];
    assert!(gpu["capacity_bytes"].as_u64().unwrap() - gpu["total_bytes"].as_u64().unwrap() >= GIB);

    let out = mem(&[
        LLAMA8B,
        "--hw",
        "laptop-rtx4060",
        "--",
        "-c",
        "8192",
        "-ngl",
        "all",
    ])
    .code(3);
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.contains("fit: failed (n_gpu_layers already set by user to -2)"),
        "{stdout}"
    );
}

/// With `-c` unset and 2 non-unified slots, fit resolves the context to
/// n_ctx_train × 2 streams before anything else (fit.cpp "resolve the
/// context before measuring anything else"), even when nothing else needs
/// changing; llama_context alone would split n_ctx_train over the slots.
#[test]
fn fit_resolves_an_unset_context_per_stream() {
    let v = mem_json(&[LLAMA8B, "--json", "--", "-np", "2"]);
    assert_eq!(v["fit"]["status"], "unchanged");
    assert_eq!(v["fit"]["changed"]["c"], 262144);
    assert_eq!(v["context"]["n_ctx"], 262144);
    assert_eq!(v["context"]["n_ctx_seq"], 131072);
    let v = mem_json(&[LLAMA8B, "--json", "--", "-np", "2", "-fit", "off"]);
    assert_eq!(v["context"]["n_ctx"], 131072);
    assert_eq!(v["fit"], serde_json::Value::Null);
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
