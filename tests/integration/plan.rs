//! `ggplan plan` end to end on the built-in synthetic models and the shipped
//! hardware presets (no GGUF, no GPU).

use assert_cmd::Command;

fn ggplan() -> Command {
    Command::cargo_bin("ggplan").unwrap()
}

fn json(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

#[test]
fn plan_json_has_the_documented_fields_and_flags() {
    let out = ggplan()
        .args([
            "plan",
            "synthetic:qwen3-next",
            "--hw",
            "rtx4090-rtx5070ti",
            "--ctx",
            "65536",
            "--json",
        ])
        .assert()
        .success();
    let v = json(&out);
    assert_eq!(v["fits"], true);
    assert_eq!(v["n_ctx"], 65536);
    assert_eq!(v["solver_status"], "optimal");
    assert!(v["simulator"]
        .as_str()
        .unwrap()
        .starts_with("llama.cpp simulator"));
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    assert_eq!(devs[2]["name"], "CPU");
    for d in devs {
        let parts: u64 = [
            "model_bytes",
            "context_bytes",
            "compute_bytes",
            "output_bytes",
        ]
        .iter()
        .map(|k| d[k].as_u64().unwrap())
        .sum();
        assert_eq!(d["total_bytes"].as_u64().unwrap(), parts);
        assert!(d["headroom_bytes"].as_i64().unwrap() >= 0, "{d}");
    }
    let p = &v["predicted"];
    assert!(p["decode_tps"].as_f64().unwrap() > 10.0);
    assert!(p["prefill_tps"].as_f64().unwrap() > 100.0);
    let argv: Vec<&str> = v["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let line = argv.join(" ");
    for f in [
        "-c 65536", "-np 1", "-ngl 49", "-fa on", "-ctk f16", "-ctv f16", "-fit off", "-ts ",
    ] {
        assert!(line.contains(f), "{f} missing in {line}");
    }
    let ot = argv[argv.iter().position(|a| *a == "-ot").unwrap() + 1];
    assert!(
        ot.starts_with(r"blk\.") && ot.ends_with(r"ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"),
        "{ot}"
    );
}

#[test]
fn a_request_that_cannot_fit_exits_3_naming_the_host_and_nearest_plans() {
    // 45 GB of weights on an 8 GB P4 and 32 GB of RAM.
    let out = ggplan()
        .args([
            "plan",
            "synthetic:qwen3-next",
            "--hw",
            "tesla-p4-i7-4770k",
            "--json",
        ])
        .assert()
        .code(3);
    let v = json(&out);
    assert_eq!(v["fits"], false);
    assert_eq!(v["short"][0]["target"], "host");
    // Llama-8B at 128K on a laptop: the nearest plans shrink the context or quantize the KV.
    let out = ggplan()
        .args([
            "plan",
            "synthetic:llama-8b",
            "--hw",
            "laptop-rtx4060",
            "--ctx",
            "131072",
            "--np",
            "4",
            "--no-ffn-host",
        ])
        .assert()
        .code(3);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("does not fit: host needs"), "{err}");
    assert!(err.contains("nearest plans that fit"), "{err}");
    assert!(
        err.contains("-ctk q8_0 -ctv q8_0") || err.contains("-c "),
        "{err}"
    );
}

#[test]
fn explain_shows_both_baselines() {
    let out = ggplan()
        .args([
            "plan",
            "synthetic:qwen3-next",
            "--hw",
            "rtx4090-rtx5070ti",
            "--ctx",
            "32768",
            "--explain",
        ])
        .assert()
        .success();
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        s.contains("--fit (simulated)") && s.contains("plain -ngl"),
        "{s}"
    );
    assert!(
        s.contains("llama-server -m synthetic:qwen3-next -c 32768"),
        "{s}"
    );
    assert!(s.contains("- ngl: "), "{s}");
}

#[test]
fn sweep_lists_every_combination() {
    let out = ggplan()
        .args([
            "plan",
            "synthetic:llama-8b",
            "--hw",
            "laptop-rtx4060",
            "--sweep",
            "--sweep-np",
            "1,4",
            "--sweep-ub",
            "512,2048",
            "--sweep-kv",
            "f16,q8_0",
            "--json",
        ])
        .assert()
        .success();
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let ctx = |k: &str, np: u64, ub: u64| {
        rows.iter()
            .find(|r| r["type_k"] == k && r["slots"] == np && r["ubatch"] == ub)
            .unwrap()["max_ctx"]
            .as_u64()
            .unwrap()
    };
    // A q8_0 cache holds more context than f16 in the same memory.
    assert!(ctx("q8_0", 1, 512) > ctx("f16", 1, 512));
    assert!(ctx("f16", 1, 512) % 256 == 0 && ctx("f16", 4, 512) % 1024 == 0);
}

#[test]
fn no_bandwidths_no_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let hw = dir.path().join("hw.toml");
    std::fs::write(
        &hw,
        "[host]\nmemory_mib = 65536\n[[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 24576\n",
    )
    .unwrap();
    let out = ggplan()
        .args([
            "plan",
            "synthetic:llama-8b",
            "--hw",
            hw.to_str().unwrap(),
            "--json",
        ])
        .assert()
        .success();
    let v = json(&out);
    assert!(v["predicted"].is_null());
    assert!(v["devices"][0]["time_share"].is_null());
}

#[test]
fn shipped_profile_plans_within_the_gap_and_emits_a_models_conf_section() {
    let args = [
        "plan",
        "models/qwen3-coder-next-q5_k_m.toml",
        "--hw",
        "rtx4090-rtx5070ti",
        "--ctx",
        "131072",
    ];
    let out = ggplan().args(args).arg("--json").assert().success();
    let v = json(&out);
    let status = v["solver_status"].as_str().unwrap();
    assert!(status == "gap" || status == "optimal", "{status}");
    assert_eq!(v["devices"][0]["name"], "CUDA0");
    let out = ggplan()
        .args(args)
        .args(["--emit", "models-conf", "--name", "qwen3-coder-next"])
        .assert()
        .success();
    let s = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for want in [
        "[qwen3-coder-next]",
        "CTX_SIZE=131072",
        "N_GPU_LAYERS=49",
        "FIT=off",
        "-fa on",
        "predicted",
    ] {
        assert!(s.contains(want), "{want} missing:\n{s}");
    }
}

#[test]
fn unified_igpu_takes_every_layer_when_decode_ties_with_the_host() {
    // Strix Halo: the CPU and the Vulkan iGPU read one LPDDR5X pool at one
    // bandwidth, so decode time cannot choose; prefill (59 TFLOPS vs 16
    // cores) must put the whole model on Vulkan0, as `-ngl 999` would.
    let out = ggplan()
        .args([
            "plan",
            "models/gpt-oss-120b-mxfp4.toml",
            "--hw",
            "ryzen-ai-max-395-128gb",
            "--ctx",
            "131072",
            "--json",
        ])
        .assert()
        .success();
    let v = json(&out);
    let argv: Vec<&str> = v["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let at = |flag: &str| argv.iter().position(|a| *a == flag).map(|i| argv[i + 1]);
    // 36 blocks + the output layer.
    assert_eq!(at("-ngl"), Some("37"), "{argv:?}");
    assert_eq!(at("-dev"), Some("Vulkan0"), "{argv:?}");
    assert!(!argv.contains(&"-ot"), "{argv:?}");
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs[0]["name"], "Vulkan0");
    assert!(
        devs[0]["model_bytes"].as_u64().unwrap() > 55 << 30,
        "{}",
        devs[0]
    );
    // Only the token embeddings stay on the host.
    assert_eq!(devs[1]["name"], "CPU");
    assert!(
        devs[1]["model_bytes"].as_u64().unwrap() < 1 << 30,
        "{}",
        devs[1]
    );
    // Decode is bandwidth-bound either way; prompts run on the GPU.
    let p = &v["predicted"];
    assert!(p["decode_tps"].as_f64().unwrap() > 25.0, "{p}");
    assert!(p["prefill_tps"].as_f64().unwrap() > 1000.0, "{p}");
}

#[test]
fn simulator_feedback_converges_on_a_tesla_p4_at_long_contexts() {
    // These made the feedback loop re-emit the same flags until it gave up
    // (exit 2, "CUDA0 … MiB short"): a valid request must plan (0) or not fit (3).
    for ctx in ["170000", "176128", "200000"] {
        let out = ggplan()
            .args([
                "plan",
                "models/llama-3.1-8b-q8_0.toml",
                "--hw",
                "tesla-p4-i7-4770k",
                "--ctx",
                ctx,
                "--json",
            ])
            .assert()
            .success();
        let v = json(&out);
        assert_eq!(v["fits"], true, "{ctx}");
        let devs = v["devices"].as_array().unwrap();
        assert_eq!(devs[0]["name"], "CUDA0");
        for d in devs {
            assert!(d["headroom_bytes"].as_i64().unwrap() >= 0, "{ctx}: {d}");
        }
        // Part of the model on the P4, re-planned after the simulator's feedback.
        assert!(
            devs[0]["model_bytes"].as_u64().unwrap() > 512 << 20,
            "{ctx}"
        );
        assert!(v["rounds"].as_u64().unwrap() >= 2, "{ctx}: {v}");
    }
}

/// `--draft` end to end: Llama-3.1-8B with the shipped Llama-3.2-1B draft
/// profile on the laptop preset. The JSON reports the draft and the
/// effective speed, the argv carries the draft flags, and a draft whose
/// vocabulary llama-server would refuse is bad input (exit 2).
#[test]
fn draft_plan_reports_the_draft_and_emits_its_flags() {
    let out = ggplan()
        .args([
            "plan",
            "models/llama-3.1-8b-q8_0.toml",
            "--hw",
            "laptop-rtx4060",
            "--ctx",
            "32768",
            "--draft",
            "models/llama-3.2-1b-q8_0.toml",
            "--draft-path",
            "/models/llama-3.2-1b-q8_0.gguf",
            "--json",
        ])
        .assert()
        .success();
    let v = json(&out);
    assert_eq!(v["draft"]["device"], "CUDA0");
    assert_eq!(v["draft"]["n_max"], 3);
    assert_eq!(v["batch"], 2048);
    let eff = v["draft"]["effective_decode_tps"].as_f64().unwrap();
    let target = v["draft"]["target_decode_tps"].as_f64().unwrap();
    assert_eq!(v["predicted"]["decode_tps"].as_f64().unwrap(), eff);
    assert!(eff > 1.5 * target, "{eff} vs {target}");
    let argv: Vec<&str> = v["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let a = argv.join(" ");
    assert!(
        a.contains("-md /models/llama-3.2-1b-q8_0.gguf --spec-type draft-simple --spec-draft-n-max 3 -ngld all -devd CUDA0"),
        "{a}"
    );
    // Gemma's 262144-token vocabulary against Llama's 128256.
    ggplan()
        .args([
            "plan",
            "models/llama-3.1-8b-q8_0.toml",
            "--hw",
            "laptop-rtx4060",
            "--draft",
            "models/gemma-3-270m-Q4_K_M.toml",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("vocabulary"));
}
