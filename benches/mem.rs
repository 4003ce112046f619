//! `ggplan mem` speed goals (issue #5): one simulation of a 48-layer MoE on
//! 3 devices ≤ 1 ms in-process; a whole `ggplan mem` process ≤ 30 ms.
//!
//! `cargo bench --bench mem` (numbers in the README's `ggplan mem` section).

use std::path::Path;
use std::process::Command;

use ggplan::llamacpp::{self, BackendKind, Device, Flags, Options};
use ggplan::model::Model;

fn main() {
    divan::main();
}

const QWEN3_30B: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/qwen3-30b-a3b-q4_k_m.toml"
);

fn devices() -> Vec<Device> {
    vec![
        Device::new("CUDA0", BackendKind::Cuda, 24 << 30),
        Device::new("CUDA1", BackendKind::Cuda, 16 << 30),
        Device::new("RPC0", BackendKind::Rpc, 32 << 30),
    ]
}

/// Qwen3-30B-A3B (48 layers, 128 experts) on 3 devices, experts of the
/// first 8 layers on the CPU.
#[divan::bench]
fn simulate_48_layer_moe_3_devices(bencher: divan::Bencher) {
    let model = Model::load(Path::new(QWEN3_30B)).expect("shipped profile");
    let devs = devices();
    let flags =
        Flags::parse(&["-c", "32768", "-np", "2", "-fa", "on", "--n-cpu-moe", "8"]).expect("flags");
    let opts = Options::default();
    bencher.bench_local(|| {
        llamacpp::simulate(
            divan::black_box(&model),
            None,
            &devs,
            divan::black_box(&flags),
            &opts,
        )
        .expect("simulate")
    });
}

/// Runs `ggplan mem MODEL --hardware rtx4090-rtx5070ti -- -c 32768` as a
/// process; `fits` asserts success (else "does not fit", exit 3, is fine).
fn mem_process(bencher: divan::Bencher, model: &str, fits: bool) {
    let exe = env!("CARGO_BIN_EXE_ggplan");
    bencher.bench_local(|| {
        let out = Command::new(exe)
            .args([
                "mem",
                model,
                "--hardware",
                "rtx4090-rtx5070ti",
                "--",
                "-c",
                "32768",
            ])
            .output()
            .expect("run ggplan");
        assert!(out.status.success() || (!fits && out.status.code() == Some(3)));
    });
}

/// The whole `ggplan mem` process (profile load + simulation + table).
#[divan::bench(sample_count = 20)]
fn ggplan_mem_process(bencher: divan::Bencher) {
    mem_process(bencher, QWEN3_30B, false);
}

/// Placement alone (device list, layer map, -ot matching, weight bytes).
#[divan::bench]
fn placement_only_48_layer_moe(bencher: divan::Bencher) {
    let model = Model::load(Path::new(QWEN3_30B)).expect("shipped profile");
    let devs = devices();
    let flags =
        Flags::parse(&["-c", "32768", "-np", "2", "-fa", "on", "--n-cpu-moe", "8"]).expect("flags");
    bencher.bench_local(|| {
        llamacpp::place::place(
            divan::black_box(&model),
            &devs,
            &flags,
            llamacpp::FIXTURE_BUILD,
            llamacpp::HostCpu::default(),
            true,
        )
        .expect("place")
    });
}

const GPT_OSS_120B: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/gpt-oss-120b-mxfp4.toml"
);

/// `--fit` active: gpt-oss-120b (36 layers, 128 experts, 61 GiB) on a
/// 24 + 16 GiB pair with `-c 32768`: the whole fit replay (14 dry runs:
/// back-to-front fill, conversion, partial overflow layers).
#[divan::bench(sample_count = 20)]
fn fit_gpt_oss_120b_2_gpus(bencher: divan::Bencher) {
    let model = Model::load(Path::new(GPT_OSS_120B)).expect("shipped profile");
    let devs = vec![
        Device::new("CUDA0", BackendKind::Cuda, 24 << 30),
        Device::new("CUDA1", BackendKind::Cuda, 16 << 30),
    ];
    let flags = Flags::parse(&["-c", "32768"]).expect("flags");
    let opts = Options::default();
    bencher.bench_local(|| {
        let out = llamacpp::fit::fit(
            divan::black_box(&model),
            None,
            &devs,
            divan::black_box(&flags),
            &opts,
            None,
        )
        .expect("fit");
        assert!(out.placement.is_some());
        out
    });
}

/// A whole `ggplan mem` process with `--fit` active (the case above on the
/// rtx4090-rtx5070ti preset).
#[divan::bench(sample_count = 20)]
fn ggplan_mem_process_with_fit(bencher: divan::Bencher) {
    mem_process(bencher, GPT_OSS_120B, true);
}
