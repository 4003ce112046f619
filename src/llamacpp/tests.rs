//! Simulation tests against the numbers verified on a CPU build (§9 of the
//! internals notes) and hand-derived placements.

use super::testmodel::{build, Spec};
use super::*;
use crate::units::MIB;

fn sim(spec: &Spec, devices: &[Device], args: &[&str], tool: Tool) -> Simulation {
    let model = build(spec);
    let mut f = Flags::parse(args).unwrap();
    f.tool = tool;
    let opts = Options {
        no_alloc: true,
        ..Options::default()
    };
    simulate(&model, None, devices, &f, &opts).unwrap()
}

fn mib(x: u64) -> f64 {
    x as f64 / MIB as f64
}

fn rpc(n: usize, gib: u64) -> Vec<Device> {
    (0..n)
        .map(|i| {
            let mut d = Device::new(&format!("RPC{i}"), BackendKind::Rpc, gib << 30);
            d.buft = format!("RPC0[127.0.0.1:{}]", 50052 + i);
            d
        })
        .collect()
}

fn cuda(n: usize, gib: u64) -> Vec<Device> {
    (0..n)
        .map(|i| Device::new(&format!("CUDA{i}"), BackendKind::Cuda, gib << 30))
        .collect()
}

fn layer_devs(r: &Simulation) -> Vec<&str> {
    r.layers.iter().map(|l| l.device.as_str()).collect()
}

#[test]
fn kv_sizes_match_verified_cpu_runs() {
    let s = Spec::tiny_llama();
    let ctx = |args: &[&str]| {
        sim(&s, &[], args, Tool::Completion)
            .device("CPU")
            .unwrap()
            .context_bytes
    };
    // §9: f16, c=4096, S=1 -> 16 MiB; c=5000 pads to 5120 -> 20 MiB.
    assert_eq!(ctx(&["-c", "4096", "-np", "1"]), 16 * MIB);
    assert_eq!(ctx(&["-c", "5000", "-np", "1"]), 20 * MIB);
    // q8_0 K+V (FA auto): row_size(q8_0, 256) = 272 B -> 8.5 MiB.
    assert_eq!(
        ctx(&["-c", "4096", "-np", "1", "-ctk", "q8_0", "-ctv", "q8_0"]),
        8 * MIB + MIB / 2
    );
    // q8_0 K + f16 V with FA off is allowed: 12.25 MiB.
    assert_eq!(
        ctx(&["-c", "4096", "-np", "1", "-ctk", "q8_0", "-fa", "off"]),
        12 * MIB + MIB / 4
    );
}

#[test]
fn quantized_v_without_fa_is_refused() {
    let model = build(&Spec::tiny_llama());
    let f = Flags::parse(&["-ctv", "q8_0", "-fa", "off"]).unwrap();
    let e = simulate(&model, None, &[], &f, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("flash_attn"), "{e}");
}

#[test]
fn swa_cache_cells() {
    let mut s = Spec::tiny_llama();
    s.n_layer = 8;
    s.swa = Some((256, 4));
    let r = sim(&s, &[], &["-c", "4096", "-np", "1"], Tool::Completion);
    assert_eq!(r.layout.cells_swa, Some(768));
    // 2 full layers x 4096 cells + 6 SWA layers x 768 cells, 512 B per cell (K+V f16).
    assert_eq!(
        r.device("CPU").unwrap().context_bytes,
        (2 * 4096 + 6 * 768) * 1024
    );
    let r = sim(&s, &[], &["-c", "4096"], Tool::Server);
    assert_eq!(r.layout.cells_swa, Some(1536));
    let r = sim(&s, &[], &["-c", "4096", "-np", "4"], Tool::Server);
    assert_eq!(
        (r.layout.cells, r.layout.cells_swa, r.layout.n_stream),
        (1024, Some(768), 4)
    );
    let r = sim(
        &s,
        &[],
        &["-c", "4096", "--swa-full", "-np", "1"],
        Tool::Server,
    );
    assert_eq!(r.layout.cells_swa, Some(4096));
}

#[test]
fn ngl_counts_output_first_and_ts_splits() {
    let s = Spec::tiny_llama(); // L = 4, output = index 4
    let d = rpc(2, 8);
    let r = sim(&s, &d, &["-ngl", "99", "-ts", "1,1"], Tool::Server);
    // x = il/5 against splits [0.5, 1]: 0,1,2 -> RPC0; 3,4 -> RPC1.
    assert_eq!(layer_devs(&r), ["RPC0", "RPC0", "RPC0", "RPC1", "RPC1"]);
    let r = sim(&s, &d, &["-ngl", "1"], Tool::Server);
    // One GPU layer: x = 0 falls in RPC0's share.
    assert_eq!(layer_devs(&r), ["CPU", "CPU", "CPU", "CPU", "RPC0"]);
    let r = sim(&s, &d, &["-ngl", "4", "-ts", "1,0"], Tool::Server);
    assert_eq!(layer_devs(&r), ["CPU", "RPC0", "RPC0", "RPC0", "RPC0"]);
    // Before PR #18148: -ngl 4 = the last 4 repeating layers, output on the CPU.
    let model = build(&s);
    let f = Flags::parse(&["-ngl", "4", "-ts", "1,0"]).unwrap();
    let opts = Options {
        build: LlamaBuild(7000),
        no_alloc: true,
        ..Options::default()
    };
    let r = simulate(&model, None, &d, &f, &opts).unwrap();
    assert_eq!(layer_devs(&r), ["RPC0", "RPC0", "RPC0", "RPC0", "CPU"]);
    // -sm none keeps devices[main_gpu].
    let r = sim(&s, &d, &["-sm", "none", "-mg", "1"], Tool::Server);
    assert_eq!(layer_devs(&r), ["RPC1"; 5]);
    // -dev none: CPU only.
    let r = sim(&s, &d, &["-dev", "none"], Tool::Server);
    assert_eq!(layer_devs(&r), ["CPU"; 5]);
}

#[test]
fn weights_follow_layers_with_backend_padding() {
    let s = Spec::tiny_moe(); // Q4_K, E = 256 (not a multiple of 512)
    let model = build(&s);
    let total: u64 = model
        .profile
        .tensors
        .iter()
        .map(|t| t.n_bytes().unwrap())
        .sum();
    // RPC (CPU-backed): 32-byte alignment, no row padding; every byte placed once.
    let r = sim(&s, &rpc(2, 8), &["-ngl", "all"], Tool::Server);
    let placed: u64 = r.devices.iter().map(|d| d.model_bytes).sum();
    assert_eq!(placed, total, "all tensor sizes are multiples of 32 here");
    let cpu = r.device("CPU").unwrap();
    let emb = model.profile.tensors[0].n_bytes().unwrap();
    assert_eq!(cpu.model_bytes, emb, "only token_embd stays on the host");
    // CUDA: +row_size(q4_K, 256) per quantized tensor with ne0 % 512 != 0, padded to 128.
    let r = sim(&s, &cuda(1, 24), &["-ngl", "all"], Tool::Server);
    let gpu = r.device("CUDA0").unwrap();
    let expect: u64 = model
        .profile
        .tensors
        .iter()
        .skip(1)
        .map(|t| {
            let mut n = t.n_bytes().unwrap();
            if t.ty.is_quantized() && t.dims[0] % 512 != 0 {
                n += t.ty.row_size(512 - t.dims[0] % 512).unwrap();
            }
            crate::units::pad(n, 128)
        })
        .sum();
    assert_eq!(gpu.model_bytes, expect);
}

#[test]
fn tied_output_is_duplicated_on_the_gpu() {
    let mut s = Spec::tiny_llama();
    s.tied = true;
    let model = build(&s);
    let emb = model.profile.tensors[0].n_bytes().unwrap();
    let non_emb: u64 = model
        .profile
        .tensors
        .iter()
        .skip(1)
        .map(|t| t.n_bytes().unwrap())
        .sum();
    let r = sim(&s, &rpc(1, 8), &["-ngl", "all"], Tool::Server);
    assert_eq!(r.device("RPC0").unwrap().model_bytes, non_emb + emb);
    assert_eq!(r.device("CPU").unwrap().model_bytes, emb);
    // CPU only, F16: same buffer type, shared.
    let r = sim(&s, &[], &[], Tool::Server);
    assert_eq!(r.device("CPU").unwrap().model_bytes, non_emb + emb);
}

#[test]
fn expert_overrides_and_host_buffer_kinds() {
    let s = Spec::tiny_moe();
    let model = build(&s);
    let exps: u64 = model
        .profile
        .tensors
        .iter()
        .filter(|t| t.name.contains("_exps"))
        .map(|t| t.n_bytes().unwrap())
        .sum();
    // RPC has no host buffer type: Q4_K experts are repacked (AVX2).
    let r = sim(
        &s,
        &rpc(1, 8),
        &["-ngl", "all", "-ot", "exps=CPU"],
        Tool::Server,
    );
    let repack = r.buffers.iter().find(|b| b.buft == "CPU_REPACK").unwrap();
    assert_eq!(repack.model, exps);
    // CUDA, no mmap: pinned CUDA_Host; with mmap: CPU_Mapped span.
    let r = sim(
        &s,
        &cuda(1, 24),
        &["-ngl", "all", "--cpu-moe"],
        Tool::Server,
    );
    let host = r.buffers.iter().find(|b| b.buft == "CUDA_Host").unwrap();
    assert!(host.model >= exps);
    let model2 = build(&s);
    let f = Flags::parse(&["-ngl", "all", "--cpu-moe"]).unwrap();
    let r = simulate(&model2, None, &cuda(1, 24), &f, &Options::default()).unwrap();
    let mapped = r.buffers.iter().find(|b| b.buft == "CPU_Mapped").unwrap();
    // token_embd at the start of the file, experts up to the last layer: the span covers GPU tensors too.
    assert!(mapped.model > exps);
    // First match wins: experts of blk.0 to RPC1 despite a later CPU rule.
    let r = sim(
        &s,
        &rpc(2, 8),
        &[
            "-ngl",
            "all",
            "-ot",
            "blk\\.0\\.ffn_up_exps=RPC0[127.0.0.1:50053],exps=CPU",
        ],
        Tool::Server,
    );
    let up0 = model
        .profile
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_up_exps.weight")
        .unwrap();
    let cpu_repack = r.buffers.iter().find(|b| b.buft == "CPU_REPACK").unwrap();
    assert_eq!(cpu_repack.model, exps - up0.n_bytes().unwrap());
    // Unknown target.
    let f = Flags::parse(&["-ot", "exps=CUDA7"]).unwrap();
    let e = simulate(&model, None, &rpc(1, 8), &f, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("CUDA7"), "{e}");
}

#[test]
fn graph_splits_follow_backends() {
    let s = Spec::tiny_llama();
    let r = sim(&s, &rpc(1, 8), &["-ngl", "all"], Tool::Server);
    assert_eq!(r.splits_pp, 2, "CPU get_rows + one device");
    let r = sim(&s, &rpc(2, 8), &["-ngl", "all"], Tool::Server);
    assert_eq!(r.splits_pp, 3);
    let r = sim(&s, &[], &[], Tool::Server);
    assert_eq!(r.splits_pp, 1);
}

#[test]
fn compute_is_dominated_by_kq_without_fa() {
    let s = Spec::tiny_llama();
    let cpu = |args: &[&str]| {
        sim(&s, &[], args, Tool::Completion)
            .device("CPU")
            .unwrap()
            .compute_bytes
    };
    let off = cpu(&["-c", "4096", "-np", "1", "-fa", "off"]);
    let on = cpu(&["-c", "4096", "-np", "1", "-fa", "on"]);
    // kq = 4·n_kv·T·H = 64 MiB plus an F32 mask of 8 MiB (§9: 78.01 MiB).
    assert!(off > 72 * MIB && off < 80 * MIB, "{}", mib(off));
    assert!(on < 20 * MIB, "{}", mib(on));
    // Non-unified S=4: n_kv per stream is 4x smaller (§9: 24.01 MiB).
    let np4 = cpu(&["-c", "4096", "-np", "4", "-fa", "off"]);
    assert!(np4 > 20 * MIB && np4 < 28 * MIB, "{}", mib(np4));
}

/// The draft context as b11434's llama-server builds it
/// (`common_base_params_to_speculative`): its KV follows `-ctkd/-ctvd`
/// (f16 by default, not the main `-ctk/-ctv`), one `-devd` device holds it
/// whole, and the main graph reserves `np·(1 + n_draft)` outputs only when a
/// draft type is given.
#[test]
fn draft_context_follows_b11434() {
    let target = build(&Spec::tiny_llama());
    let draft = build(&Spec::tiny_llama());
    let devs = cuda(2, 24);
    let opts = Options::default();
    let run = |args: &[&str], with_draft: bool| {
        let f = Flags::parse(args).unwrap();
        simulate(&target, with_draft.then_some(&draft), &devs, &f, &opts).unwrap()
    };
    let main = [
        "-c", "4096", "-np", "1", "-ngl", "99", "-sm", "none", "-dev", "CUDA0", "-fa", "on",
        "-ctk", "q8_0", "-ctv", "q8_0", "-fit", "off",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = main.to_vec();
        a.extend_from_slice(extra);
        a
    };
    let alone = run(&main, false);
    let base = with(&["-md", "d.gguf", "-ngld", "all", "-devd", "CUDA1"]);
    let d = run(&base, true);
    // Main context untouched on CUDA0 (no draft type: no extra outputs).
    assert_eq!(d.devices[0].total_bytes, alone.devices[0].total_bytes);
    // The draft on CUDA1: its weights and an f16 cache of 4096 cells
    // (f16: 512 B per 256 elements, q8_0: 272 B).
    let kv_main = alone.devices[0].context_bytes;
    assert_eq!(d.devices[1].context_bytes, kv_main * 512 / 272);
    assert!(d.devices[1].model_bytes > 0);
    assert!(d.warnings.iter().any(|w| w.contains("does not draft")));
    // -ctkd/-ctvd q8_0: the draft cache shrinks to the main's size.
    let q = run(
        &with(&[
            "-md", "d.gguf", "-ngld", "all", "-devd", "CUDA1", "-ctkd", "q8_0", "-ctvd", "q8_0",
        ]),
        true,
    );
    assert_eq!(q.devices[1].context_bytes, kv_main);
    // A draft type with 16 drafted tokens: 17 outputs in the main graph.
    let spec = run(
        &with(&[
            "-md",
            "d.gguf",
            "-ngld",
            "all",
            "-devd",
            "CUDA1",
            "--spec-type",
            "draft-simple",
            "--spec-draft-n-max",
            "16",
        ]),
        true,
    );
    assert_eq!(spec.ctx.n_outputs_max, 17);
    assert_eq!(d.ctx.n_outputs_max, 1);
    assert_eq!(spec.ctx.pp_outputs(), 17);
    assert!(spec.devices[0].compute_bytes >= alone.devices[0].compute_bytes);
    assert_eq!(spec.devices[1].total_bytes, d.devices[1].total_bytes);
    // One -devd device forces -sm layer for the draft: the main `-mg 1`
    // does not apply to its one-device list.
    let base = [
        "-c",
        "4096",
        "-ngl",
        "99",
        "-sm",
        "none",
        "-mg",
        "1",
        "-dev",
        "CUDA0,CUDA1",
    ];
    let mg = run(
        &[
            &base[..],
            &["-md", "d.gguf", "-devd", "CUDA0", "-fit", "off"],
        ]
        .concat(),
        true,
    );
    let target_only = run(&[&base[..], &["-fit", "off"]].concat(), false);
    assert_eq!(target_only.devices[0].total_bytes, 0);
    assert!(mg.devices[0].model_bytes > 0);
}
