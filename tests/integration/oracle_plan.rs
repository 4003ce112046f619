//! Plans fed to a real llama.cpp: for each case of
//! tests/fixtures/oracle-plan/cases.txt, `ggplan plan` on the oracle's fake
//! RPC GPUs (rpc-fake.toml) must emit exactly the argv that
//! `oracle/record_plans.sh` passed to llama.cpp b11434's own argument parser
//! and dry-run load (a recorded fixture = llama.cpp accepted the argv), and
//! predict what llama.cpp allocated: weights and KV per device exactly,
//! compute within 5 %, the output buffer exactly.

use std::path::PathBuf;

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

/// (case, device): compute errors above 5 % measured when the case was
/// recorded. The test fails when one of them comes within 5 % (remove it).
/// Empty since qwen3codernext-c64k-q8 RPC2 (-10.0 %, experts on the CPU)
/// was fixed by modelling the Gated DeltaNet block's views as built.
const COMPUTE_OUTLIERS: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    slug: String,
    model: String,
    profile: String,
    opts: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = root().join("tests/fixtures/oracle-plan");
    std::fs::read_to_string(dir.join("cases.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(f.len(), 4, "cases.txt: {l}");
            Case {
                slug: f[0].into(),
                model: f[1].into(),
                profile: f[2].into(),
                opts: f[3].split_whitespace().map(String::from).collect(),
            }
        })
        .collect()
}

fn plan(c: &Case) -> Value {
    let out = std::process::Command::cargo_bin("ggplan")
        .unwrap()
        .current_dir(root())
        .args([
            "plan",
            &c.profile,
            "--hw",
            "tests/fixtures/oracle-plan/rpc-fake.toml",
        ])
        .args(&c.opts)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        c.slug,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn llama_cpp_accepts_the_planned_argv_and_allocates_what_the_plan_predicted() {
    let cases = cases();
    assert!(cases.len() >= 6);
    let plans: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = cases.iter().map(|c| s.spawn(move || plan(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut errors = Vec::new();
    let mut outliers_seen = Vec::new();
    for (c, p) in cases.iter().zip(&plans) {
        let path = root()
            .join("tests/fixtures/oracle-plan")
            .join(&c.model)
            .join(format!("{}.json", c.slug));
        let fx: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (run oracle/record_plans.sh)", path.display())
            }))
            .unwrap();
        assert_eq!(
            fx["args"], p["argv"],
            "{}: ggplan plan now emits other flags than were recorded; re-record with oracle/record_plans.sh",
            c.slug
        );
        // Bytes llama.cpp reported, per device (host buffer types under CPU).
        let recorded = |dev: &str, key: &str| -> u64 {
            fx["buffers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["device"] == dev)
                .map(|b| b[key].as_u64().unwrap())
                .sum()
        };
        for d in p["devices"].as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            for (pk, rk) in [("model_bytes", "model"), ("context_bytes", "context")] {
                let (want, got) = (recorded(name, rk), d[pk].as_u64().unwrap());
                if want != got {
                    errors.push(format!(
                        "{} {name} {rk}: llama.cpp {want}, plan {got}",
                        c.slug
                    ));
                }
            }
            let (want, got) = (
                recorded(name, "compute"),
                d["compute_bytes"].as_u64().unwrap(),
            );
            let within = if want == 0 {
                got == 0
            } else {
                (got as f64 - want as f64).abs() / want as f64 <= 0.05
            };
            let known = COMPUTE_OUTLIERS.contains(&(c.slug.as_str(), name));
            if known {
                outliers_seen.push((c.slug.clone(), name.to_string(), within));
            } else if !within {
                errors.push(format!(
                    "{} {name} compute: llama.cpp {want}, plan {got} (more than 5 % off)",
                    c.slug
                ));
            }
            let out_want = if name == "CPU" {
                fx["output_buffer"]["bytes"].as_u64().unwrap()
            } else {
                0
            };
            if d["output_bytes"].as_u64().unwrap() != out_want {
                errors.push(format!(
                    "{} {name} output: llama.cpp {out_want}, plan {}",
                    c.slug, d["output_bytes"]
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(outliers_seen.len(), COMPUTE_OUTLIERS.len());
    for (slug, dev, within) in outliers_seen {
        assert!(
            !within,
            "{slug} {dev}: compute is now within 5 %; remove it from COMPUTE_OUTLIERS"
        );
    }
}
