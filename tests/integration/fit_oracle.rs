//! ggplan's `--fit` simulation (`solver::baseline::fit_params`, shown by
//! `ggplan plan --explain`) against what the real `llama-fit-params`
//! (b11434) chose in every tests/fixtures/oracle-fit/<model>/<case>.json:
//! same model profile, same fake devices (free memory), same `-c`/`-np`
//! and `-fitt` margins. Compares the printed `-c`, `-ngl`, `-ts` and `-ot`
//! and prints an agreement table (`cargo test fit_oracle -- --nocapture`).
//!
//! The floors below are a regression guard just under what the simulation
//! reaches; the mismatches and their causes are listed at `FLOORS`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use ggplan::gguf::GgmlType;
use ggplan::hardware::Hardware;
use ggplan::llamacpp::{self, BackendKind, Device, Flags, LlamaBuild, Options, Tool};
use ggplan::model::Model;
use ggplan::solver::baseline::{fit_params, fit_params_by, fit_probe_argv, FitChoice};
use ggplan::solver::costs::CtxConfig;
use ggplan::solver::layout::Layout;
use ggplan::solver::plan::Planner;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    case: String,
    model: String,
    args: Vec<String>,
    devices: Vec<FxDevice>,
    margin_bytes: Vec<u64>,
    fitted: Fitted,
}

#[derive(Deserialize)]
struct FxDevice {
    name: String,
    buft: String,
    free_bytes: u64,
}

#[derive(Deserialize)]
struct Fitted {
    raw: String,
    c: u64,
    ngl: i64,
    ts: Option<Vec<u64>>,
    ot: Vec<String>,
}

/// Exact matches out of 160 (-c, -ngl, -ts, -ot, all four) the simulation
/// must keep with the planning model as fit's probe. Remaining mismatches
/// (60), by cause:
/// * the one partial layer per device fit adds (fit.cpp
///   `common_params_fit_impl` step 3: `ffn_(gate|up|gate_up|down).*`,
///   `ffn_(gate|gate_up|down).*` or `ffn_down.*` of one block sent to the
///   next device or the CPU) is not modelled: every MoE case that spills
///   (gpt-oss-120b, qwen3-30b-a3b, qwen3-coder-next, nemotron-3-nano,
///   glm-4.7-flash: 8/8 each, plus the tight tiny MoE cases) differs in `-ot`
///   and mostly in `-ts` by the layer that overflow buys;
/// * the planning model's compute buffers on the fake RPC devices are
///   20-60 % below llama.cpp's on the tiny models, so in the tight cases
///   (≈60 % of full offload) `-ngl` lands one or more layers off (with the
///   llama.cpp simulator as the probe -ngl rises from 138 to 148, see
///   `FLOORS_SIM`);
/// * `-c` unset on 2 devices (glm-4.7-flash 10752, qwen3-30b-a3b 4096):
///   the interpolation is fed the planning model's bytes (exact with the
///   simulator probe); llama-3.1-8b `-c 74752 -ts 12,21` vs 80896 / 13,20
///   for the same reason.
const FLOORS: [usize; 5] = [158, 138, 119, 110, 100];
/// The same with the llama.cpp simulator as fit's probe (measured 160, 148,
/// 124, 110, 106): the planning model's coarse compute buffers on the fake
/// RPC devices (20-60 % low on the tiny models) were the cause of most
/// `-ngl` misses in the tight cases.
const FLOORS_SIM: [usize; 5] = [160, 148, 124, 110, 106];

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn profile_path(model: &str) -> PathBuf {
    let b = base();
    let p = b.join(format!("tests/fixtures/oracle/models/{model}.toml"));
    if p.exists() {
        return p;
    }
    let p = b.join(format!("models/{model}.toml"));
    if p.exists() {
        return p;
    }
    b.join("models/gemma-3-270m-Q4_K_M.toml")
}

fn fixtures() -> Vec<Fixture> {
    let root = base().join("tests/fixtures/oracle-fit");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect::<Vec<_>>()
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|f: &PathBuf| {
            serde_json::from_str(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect()
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn hardware(fx: &Fixture) -> Hardware {
    let mut t = String::from("[host]\nmemory_mib = 1048576\nreserved_mib = 0\n");
    for d in &fx.devices {
        t.push_str(&format!(
            "[[devices]]\nname = \"{}\"\nkind = \"rpc\"\nendpoint = \"{}\"\nmemory_mib = {}\n",
            d.name,
            d.buft
                .split_once('[')
                .map_or("", |(_, e)| e.trim_end_matches(']')),
            d.free_bytes / (1 << 20)
        ));
    }
    Hardware::from_toml_str(&t).unwrap()
}

/// fit's `-ot` patterns as `layer:what@device` (fit.cpp writes one per layer).
fn norm_ot(ot: &str, fx: &Fixture) -> String {
    let (pat, target) = ot.rsplit_once('=').unwrap();
    let dev = fx
        .devices
        .iter()
        .find(|d| d.buft == target)
        .map_or(target, |d| d.name.as_str());
    let layer = pat
        .strip_prefix("blk\\.")
        .and_then(|r| r.split_once("\\."))
        .map_or("?", |(l, _)| l);
    let what = if pat.ends_with("_(ch|)exps") {
        "exps"
    } else if pat.contains("ffn_(gate|up|gate_up|down)") {
        "ffn"
    } else if pat.contains("ffn_(gate|gate_up|down)") {
        "gate+down"
    } else if pat.contains("ffn_down") {
        "down"
    } else {
        pat
    };
    format!("{layer}:{what}@{dev}")
}

/// The simulation's answer in fit's printed form.
fn printed(ch: &FitChoice, nd: usize) -> (i64, Option<Vec<u64>>, Vec<String>) {
    if ch.untouched {
        return (-1, None, Vec::new());
    }
    let l = &ch.layout;
    let ngl = l.layer_dev.iter().filter(|d| d.is_some()).count();
    let mut ts: Vec<u64> = (0..nd)
        .map(|d| l.layer_dev.iter().filter(|x| **x == Some(d)).count() as u64)
        .collect();
    while ts.last() == Some(&0) {
        ts.pop();
    }
    let ts = (nd > 1 && ngl > 0).then_some(ts);
    let ot = l
        .ffn_host
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(i, _)| format!("{i}:exps@CPU"))
        .collect();
    (ngl as i64, ts, ot)
}

/// The fast guard: fit's probe played by the planning model (what
/// `ggplan plan --explain` shows).
#[test]
fn fit_simulation_agrees_with_llama_fit_params() {
    agreement(false, FLOORS);
}

/// fit's probe played by the llama.cpp simulator (no-alloc dry run with
/// llama-completion's context). Several minutes on the 2-core CI machine (a
/// full simulation per probe, thousands of probes), hence ignored:
/// `cargo test fit_oracle -- --ignored --nocapture`.
#[test]
#[ignore]
fn fit_simulation_with_the_llama_cpp_probe_agrees_with_llama_fit_params() {
    agreement(true, FLOORS_SIM);
}

fn agreement(use_sim: bool, floors: [usize; 5]) {
    let all = fixtures();
    assert_eq!(all.len(), 160);
    let mut models: HashMap<String, Model> = HashMap::new();
    let mut ok = [0usize; 5];
    let mut per_model: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for fx in &all {
        let model: &Model = models.entry(fx.model.clone()).or_insert_with(|| {
            let p = profile_path(&fx.model);
            Model::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        });
        let hw = hardware(fx);
        let p = Planner::new(model, &hw, None).unwrap();
        let n_seq = flag(&fx.args, "-np").unwrap_or(1) as u32;
        let base = CtxConfig {
            n_ctx: 4096,
            n_seq,
            kv_unified: false,
            ubatch: 512,
            batch: 2048,
            flash_attn: true,
            type_k: GgmlType::F16,
            type_v: GgmlType::F16,
        };
        let devices: Vec<Device> = fx
            .devices
            .iter()
            .map(|d| Device {
                name: d.name.clone(),
                buft: d.buft.clone(),
                kind: BackendKind::Rpc,
                total_bytes: d.free_bytes,
                free_bytes: d.free_bytes,
            })
            .collect();
        let nd = devices.len();
        // fit's probe played by the llama.cpp simulator: a no-alloc dry run
        // with llama-completion's context parameters.
        let probe = |n_ctx: u64, l: &Layout| -> Vec<u64> {
            let argv = fit_probe_argv(n_ctx, n_seq, l, nd);
            let mut flags = Flags::parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            flags.tool = Tool::Completion;
            let opts = Options {
                build: LlamaBuild(11434),
                no_alloc: true,
                ..Options::default()
            };
            let sim = llamacpp::simulate(model, None, &devices, &flags, &opts)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            sim.devices.iter().take(nd).map(|d| d.total_bytes).collect()
        };
        let c_flag = flag(&fx.args, "-c");
        let ch = if use_sim {
            fit_params_by(&p, &base, c_flag, &fx.margin_bytes, &probe)
        } else {
            fit_params(&p, &base, c_flag, &fx.margin_bytes)
        };
        let (ngl, ts, mut ot) = printed(&ch, fx.devices.len());
        let mut want_ot: Vec<String> = fx.fitted.ot.iter().map(|o| norm_ot(o, fx)).collect();
        ot.sort();
        want_ot.sort();
        let m = [
            ch.n_ctx == fx.fitted.c,
            ngl == fx.fitted.ngl,
            ts == fx.fitted.ts,
            ot == want_ot,
        ];
        let all_ok = m.iter().all(|&x| x);
        for (k, &x) in m.iter().chain([all_ok].iter()).enumerate() {
            ok[k] += usize::from(x);
        }
        let e = per_model.entry(fx.model.clone()).or_default();
        e.0 += usize::from(all_ok);
        e.1 += 1;
        if !all_ok {
            misses.push(format!(
                "{}: fit -c {} -ngl {} -ts {:?} -ot {:?}\n    sim -c {} -ngl {ngl} -ts {ts:?} -ot {ot:?}",
                fx.case, fx.fitted.c, fx.fitted.ngl, fx.fitted.ts, want_ot, ch.n_ctx
            ));
        }
    }
    let n = all.len();
    let how = if use_sim {
        "llama.cpp simulator"
    } else {
        "planning model"
    };
    println!("llama-fit-params vs ggplan's --fit simulation, probe = {how} ({n} cases)");
    for (name, k) in ["-c", "-ngl", "-ts", "-ot", "all four"].iter().zip(ok) {
        println!(
            "  {name:<9} {k:>4}/{n}  ({:.1} %)",
            100.0 * k as f64 / n as f64
        );
    }
    for (m, (a, t)) in &per_model {
        println!("  {m:<32} {a}/{t}");
    }
    for l in &misses {
        println!("{l}");
    }
    for (k, (&got, &floor)) in ok.iter().zip(&floors).enumerate() {
        assert!(
            got >= floor,
            "field {k}: {got} exact matches, floor {floor}"
        );
    }
}

/// `llamacpp::fit::fit` (fit.cpp's algorithm with the exact simulator as
/// its dry-run probe) against every fixture: the printed `-c`, `-ngl`, `-ts`
/// and `-ot` compared verbatim.
#[test]
fn llamacpp_fit_agrees_with_llama_fit_params() {
    let all = fixtures();
    assert_eq!(all.len(), 160);
    let mut models: HashMap<String, Model> = HashMap::new();
    let mut ok = [0usize; 5];
    let mut per_model: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut probes = 0;
    let t0 = std::time::Instant::now();
    for fx in &all {
        let model: &Model = models.entry(fx.model.clone()).or_insert_with(|| {
            let p = profile_path(&fx.model);
            Model::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        });
        let devices: Vec<Device> = fx
            .devices
            .iter()
            .map(|d| Device {
                name: d.name.clone(),
                buft: d.buft.clone(),
                kind: BackendKind::Rpc,
                total_bytes: d.free_bytes,
                free_bytes: d.free_bytes,
            })
            .collect();
        let mut flags = Flags::parse(&fx.args).unwrap();
        flags.tool = Tool::Completion;
        let opts = Options {
            build: LlamaBuild(11434),
            no_alloc: true,
            ..Options::default()
        };
        let tc = std::time::Instant::now();
        let out = llamacpp::fit::fit(model, None, &devices, &flags, &opts, None)
            .unwrap_or_else(|e| panic!("{}: {e}", fx.case));
        if std::env::var("FIT_TIMES").is_ok() {
            println!(
                "{:<50} {:>3} probes {:>7.1} ms",
                fx.case,
                out.probes,
                tc.elapsed().as_secs_f64() * 1e3
            );
        }
        probes += out.probes;
        let ngl = out
            .placement
            .as_ref()
            .map_or(-1, |p| i64::from(p.n_gpu_layers));
        let argv = out
            .placement
            .as_ref()
            .map(|p| {
                let md: Vec<usize> = (0..devices.len()).collect();
                llamacpp::fit::placement_argv(p, devices.len(), &devices, &md)
            })
            .unwrap_or_default();
        let after = |f: &str| {
            argv.iter()
                .position(|a| a == f)
                .and_then(|i| argv.get(i + 1))
                .cloned()
        };
        let ts: Option<Vec<u64>> =
            after("-ts").map(|t| t.split(',').map(|x| x.parse().unwrap()).collect());
        let ot: Vec<String> = after("-ot")
            .map(|t| t.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let m = [
            out.final_ctx == fx.fitted.c,
            ngl == fx.fitted.ngl,
            ts == fx.fitted.ts,
            ot == fx.fitted.ot,
        ];
        let all_ok = m.iter().all(|&x| x);
        for (k, &x) in m.iter().chain([all_ok].iter()).enumerate() {
            ok[k] += usize::from(x);
        }
        let e = per_model.entry(fx.model.clone()).or_default();
        e.0 += usize::from(all_ok);
        e.1 += 1;
        if !all_ok {
            misses.push(format!(
                "{} [{:?}]:\n    fit {}\n    sim -c {} {}",
                fx.case,
                out.status,
                fx.fitted.raw,
                out.final_ctx,
                argv.join(" ")
            ));
        }
    }
    let n = all.len();
    println!(
        "llama-fit-params vs llamacpp::fit ({n} cases, {probes} probes, {:.2} s)",
        t0.elapsed().as_secs_f64()
    );
    for (name, k) in ["-c", "-ngl", "-ts", "-ot", "all four"].iter().zip(ok) {
        println!(
            "  {name:<9} {k:>4}/{n}  ({:.1} %)",
            100.0 * k as f64 / n as f64
        );
    }
    for (m, (a, t)) in &per_model {
        println!("  {m:<32} {a}/{t}");
    }
    for l in &misses {
        println!("{l}");
    }
    for (k, (&got, &floor)) in ok.iter().zip(&FLOORS_FIT).enumerate() {
        assert!(
            got >= floor,
            "field {k}: {got} exact matches, floor {floor}"
        );
    }
}

/// Floors for [`llamacpp_fit_agrees_with_llama_fit_params`].
const FLOORS_FIT: [usize; 5] = [160, 156, 158, 158, 156];
