//! Speed goals of `ggplan plan` (issue #7): a whole plan for a 48-layer,
//! 512-expert hybrid MoE on 2 GPUs + host ≤ 50 ms; a `--sweep` of 1,000
//! combinations ≤ 1 s. The model is the shipped Qwen3-Coder-Next Q5_K_M
//! profile (and its synthetic look-alike, `solver::synthetic`), the machine
//! the domain brief's RTX 4090 + RTX 5070 Ti workstation.
//!
//! `cargo bench --bench plan`; `sweep_1000_one_thread` is the sweep's CPU
//! time, `exact_check_qwen3_coder_next` the price of one feedback check.
//! Numbers (and how they moved) in the README, Planning → Performance.

use ggplan::gguf::GgmlType;
use ggplan::hardware::{presets, Hardware};
use ggplan::model::Model;
use ggplan::solver::exact::LlamaCppSimulator;
use ggplan::solver::plan::{CtxRequest, Planner, Request};
use ggplan::solver::sim::{PlanningSimulator, Simulator};
use ggplan::solver::synthetic::{build, Spec};

fn main() {
    divan::main();
}

fn setup() -> (Model, Hardware) {
    let (hw, _) = presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
    (build(&Spec::qwen3_next_like()), hw)
}

fn profile_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/qwen3-coder-next-q5_k_m.toml")
}

/// The shipped Qwen3-Coder-Next Q5_K_M profile (48 blocks, 512 experts,
/// mixed Q5_K/Q6_K experts): load the profile, analyse, plan, simulate —
/// everything `ggplan plan models/qwen3-coder-next-q5_k_m.toml --hw
/// rtx4090-rtx5070ti --ctx 131072` does but parsing argv and printing,
/// checked by the exact llama.cpp simulator.
#[divan::bench]
fn plan_qwen3_coder_next_profile(bencher: divan::Bencher) {
    let (_, hw) = setup();
    let path = profile_path();
    let req = Request {
        ctx: CtxRequest::Fixed(131072),
        ..Request::default()
    };
    bencher.bench(|| {
        let model = Model::load(&path).unwrap();
        let p = Planner::new(&model, &hw, None).unwrap();
        p.plan(&req, &LlamaCppSimulator::default()).unwrap().argv
    });
}

/// Model analysis + search + flag synthesis + simulation, as `ggplan plan --ctx 65536` does.
#[divan::bench]
fn plan_hybrid_moe_2gpu(bencher: divan::Bencher) {
    let (model, hw) = setup();
    let req = Request {
        ctx: CtxRequest::Fixed(65536),
        ..Request::default()
    };
    bencher.bench(|| {
        let p = Planner::new(&model, &hw, None).unwrap();
        p.plan(&req, &PlanningSimulator).unwrap()
    });
}

/// `--max-ctx`: a binary search over contexts, then the plan.
#[divan::bench]
fn plan_max_ctx_hybrid_moe_2gpu(bencher: divan::Bencher) {
    let (model, hw) = setup();
    let req = Request {
        ctx: CtxRequest::Max,
        ..Request::default()
    };
    bencher.bench(|| {
        let p = Planner::new(&model, &hw, None).unwrap();
        p.plan(&req, &PlanningSimulator).unwrap()
    });
}

fn sweep_axes() -> (Vec<(GgmlType, GgmlType)>, Vec<u32>, [u64; 10]) {
    let t = |n: &str| GgmlType::from_name(n).unwrap();
    let kv: Vec<(GgmlType, GgmlType)> = [
        ("f16", "f16"),
        ("q8_0", "q8_0"),
        ("q4_0", "q4_0"),
        ("q8_0", "f16"),
        ("q4_0", "f16"),
        ("q5_0", "q5_0"),
        ("q5_1", "q5_1"),
        ("q4_1", "q4_1"),
        ("bf16", "bf16"),
        ("q8_0", "q4_0"),
    ]
    .iter()
    .map(|(k, v)| (t(k), t(v)))
    .collect();
    let slots: Vec<u32> = (1..=10).collect();
    let ubs = [64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 4096];
    (kv, slots, ubs)
}

/// 10 KV type pairs × 10 slot counts × 10 micro-batches = 1,000 rows, each
/// the largest context that fits plus its plan, checked by the exact
/// simulator; rows spread over all cores.
#[divan::bench(sample_count = 5)]
fn sweep_1000(bencher: divan::Bencher) {
    sweep_bench(bencher, None);
}

/// [`sweep_1000`] on one thread: the CPU time of a sweep.
#[divan::bench(sample_count = 3)]
fn sweep_1000_one_thread(bencher: divan::Bencher) {
    sweep_bench(bencher, Some(1));
}

/// The 1,000-row sweep on `threads` threads (`None`: every core).
fn sweep_bench(bencher: divan::Bencher, threads: Option<usize>) {
    let (_, hw) = setup();
    let model = Model::load(&profile_path()).unwrap();
    let (kv, slots, ubs) = sweep_axes();
    let sim = LlamaCppSimulator::default();
    bencher.bench(|| {
        let p = Planner::new(&model, &hw, None).unwrap();
        let req = Request::default();
        let rows = match threads {
            Some(n) => p.sweep_on(&req, &kv, &slots, &ubs, &sim, n),
            None => p.sweep(&req, &kv, &slots, &ubs, &sim),
        };
        assert_eq!(rows.len(), 1000);
        rows
    });
}

/// One exact-simulator check of a plan's flags (what every sweep row and
/// every feedback round pays): the shipped Qwen3-Coder-Next profile at
/// 131,072 tokens on the RTX 4090 + RTX 5070 Ti.
#[divan::bench]
fn exact_check_qwen3_coder_next(bencher: divan::Bencher) {
    let (_, hw) = setup();
    let model = Model::load(&profile_path()).unwrap();
    let p = Planner::new(&model, &hw, None).unwrap();
    let req = Request {
        ctx: CtxRequest::Fixed(131072),
        ..Request::default()
    };
    let argv = p.plan(&req, &PlanningSimulator).unwrap().argv;
    let sim = LlamaCppSimulator::default();
    bencher.bench(|| sim.simulate(&model, &hw, divan::black_box(&argv)).unwrap());
}
