//! Schema and internal-consistency checks for the llama.cpp oracle fixtures
//! (tests/fixtures/oracle/<model>/<case>.json, written by oracle/record.py).
//! These never need llama.cpp: they check that every recorded case is complete and agrees
//! with itself and with the flags it was recorded with (context rounding, -ngl layer map,
//! device list), so that `ggplan mem` tests can trust them.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LLAMA_BUILD: u64 = 11434;

#[derive(Debug, Deserialize)]
struct Fixture {
    schema: u64,
    case: String,
    model: String,
    arch: String,
    llama_build: u64,
    tool: String,
    args: Vec<String>,
    rpc: Vec<String>,
    devices: Vec<Device>,
    buffers: Vec<Buffer>,
    output_buffer: Option<OutputBuffer>,
    layers: Vec<Layer>,
    n_layer: u64,
    n_layer_nextn: u64,
    graph_splits: Option<Splits>,
    kv: Kv,
    ctx: Ctx,
}

#[derive(Debug, Deserialize)]
struct Device {
    name: String,
    buft: String,
    total_bytes: u64,
    free_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Buffer {
    buft: String,
    device: Option<String>,
    is_host: bool,
    model: u64,
    context: u64,
    compute: u64,
}

#[derive(Debug, Deserialize)]
struct OutputBuffer {
    buft: String,
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Layer {
    index: u64,
    device: String,
}

#[derive(Debug, Deserialize)]
struct Splits {
    pp: u64,
    tg: u64,
}

#[derive(Debug, Deserialize)]
struct Kv {
    n_ctx: u64,
    n_ctx_seq: u64,
    n_stream: u64,
    cells_swa: Option<u64>,
    layers_attn: Vec<(u64, String)>,
    layers_recr: Vec<(u64, String)>,
}

#[derive(Debug, Deserialize)]
struct Ctx {
    n_seq_max: u64,
    n_batch: u64,
    n_ubatch: u64,
    n_outputs_max: u64,
    kv_unified: bool,
}

fn root() -> PathBuf {
    crate::oracle_common::oracle_root()
}

fn load_all() -> Vec<(PathBuf, Fixture)> {
    crate::oracle_common::load_fixtures()
}

fn flag<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    args.iter()
        .position(|a| names.contains(&a.as_str()))
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn has(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| names.contains(&a.as_str()))
}

fn pad(x: u64, n: u64) -> u64 {
    x.div_ceil(n) * n
}

#[test]
fn every_fixture_is_complete_and_self_consistent() {
    let all = load_all();
    assert!(!all.is_empty(), "no fixtures under {}", root().display());
    for (path, fx) in &all {
        let p = path.display();
        assert_eq!(fx.schema, 1, "{p}");
        assert_eq!(fx.llama_build, LLAMA_BUILD, "{p}");
        assert!(
            fx.tool == "server" || fx.tool == "completion",
            "{p}: tool {}",
            fx.tool
        );
        let stem = path.file_stem().unwrap().to_string_lossy();
        assert_eq!(fx.case, format!("{}/{}", fx.model, stem), "{p}");
        assert_eq!(
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy(),
            fx.model,
            "{p}"
        );
        assert!(!fx.arch.is_empty(), "{p}");
        // flags are recorded without -m / --rpc (those are environment, not the case)
        assert!(!has(&fx.args, &["-m", "--model", "--rpc"]), "{p}");

        // devices: the RPC servers attached, in order, all loopback (-sm none keeps only -mg)
        let sm_none = flag(&fx.args, &["-sm", "--split-mode"]) == Some("none");
        // -sm tensor: one Meta device over every RPC device (logged `Meta()`);
        // each RPC device's buffers are its slices (recorded from a real load)
        let sm_tensor = flag(&fx.args, &["-sm", "--split-mode"]) == Some("tensor");
        if sm_none && !fx.rpc.is_empty() {
            let mg = flag(&fx.args, &["-mg", "--main-gpu"]).unwrap_or("0");
            assert_eq!(fx.devices.len(), 1, "{p}");
            assert_eq!(fx.devices[0].name, format!("RPC{mg}"), "{p}");
        } else {
            assert_eq!(fx.devices.len(), fx.rpc.len(), "{p}");
        }
        for d in &fx.devices {
            let k: usize = d
                .name
                .strip_prefix("RPC")
                .and_then(|k| k.parse().ok())
                .expect("RPC<k>");
            assert!(fx.rpc[k].starts_with("127.0.0.1:"), "{p}");
            // quirk: every RPC buffer type is named RPC0[host:port] (the server's own index)
            assert_eq!(d.buft, format!("RPC0[{}]", fx.rpc[k]), "{p}");
            assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes, "{p}");
        }

        // buffers: unique buffer types, non-host ones belong to a listed device
        assert!(!fx.buffers.is_empty(), "{p}");
        let names: BTreeSet<&str> = fx.buffers.iter().map(|b| b.buft.as_str()).collect();
        assert_eq!(names.len(), fx.buffers.len(), "{p}: duplicate buffer types");
        let dev_names: BTreeSet<&str> = fx.devices.iter().map(|d| d.name.as_str()).collect();
        for b in &fx.buffers {
            if !b.is_host && b.buft.starts_with("RPC") {
                let dev = b.device.as_deref().unwrap_or("");
                assert!(
                    dev_names.contains(dev),
                    "{p}: {} on unknown device {dev}",
                    b.buft
                );
            }
        }
        let model_total: u64 = fx.buffers.iter().map(|b| b.model).sum();
        assert!(model_total > 0, "{p}: no model bytes");
        let compute_total: u64 = fx.buffers.iter().map(|b| b.compute).sum();
        assert!(compute_total > 0, "{p}: no compute bytes");

        // layer map covers 0..=n_layer (index n_layer = output layer), devices known
        let idx: Vec<u64> = fx.layers.iter().map(|l| l.index).collect();
        assert_eq!(idx, (0..=fx.n_layer).collect::<Vec<_>>(), "{p}");
        for l in &fx.layers {
            assert!(
                l.device == "CPU"
                    || dev_names.contains(l.device.as_str())
                    || (sm_tensor && l.device == "Meta()"),
                "{p}: layer {} on {}",
                l.index,
                l.device
            );
        }
        // every device that holds a main layer (not a skipped NextN block) or the output layer
        // has model bytes in its buffer type
        let main_end = fx.n_layer - fx.n_layer_nextn;
        let used: BTreeSet<&str> = fx
            .layers
            .iter()
            .filter(|l| l.index < main_end || l.index == fx.n_layer)
            .map(|l| l.device.as_str())
            .collect();
        let buf_of = |dev: &str| -> Option<&Buffer> {
            let d = fx.devices.iter().find(|d| d.name == dev)?;
            fx.buffers.iter().find(|b| b.buft == d.buft)
        };
        for d in &fx.devices {
            if used.contains(d.name.as_str()) || (sm_tensor && used.contains("Meta()")) {
                assert!(
                    buf_of(&d.name).is_some_and(|b| b.model > 0),
                    "{p}: {} holds layers but no model bytes",
                    d.name
                );
            }
        }

        // KV / recurrent state lives on its layer's device (CPU with -nkvo), and a device has
        // context bytes exactly when it holds such a layer
        let nkvo = has(&fx.args, &["-nkvo", "--no-kv-offload"]);
        let mut ctx_devs = BTreeSet::new();
        for (il, dev) in fx.kv.layers_attn.iter().chain(&fx.kv.layers_recr) {
            assert!(*il < fx.n_layer, "{p}: KV layer {il}");
            let layer_dev = &fx.layers[*il as usize].device;
            let want = if nkvo { "CPU" } else { layer_dev.as_str() };
            assert_eq!(dev, want, "{p}: KV of layer {il}");
            ctx_devs.insert(dev.as_str());
        }
        for d in fx.devices.iter().filter(|_| !sm_tensor) {
            let ctx = buf_of(&d.name).map_or(0, |b| b.context);
            assert_eq!(
                ctx > 0,
                ctx_devs.contains(d.name.as_str()),
                "{p}: context on {}",
                d.name
            );
        }

        // graph splits were observed
        let s = fx.graph_splits.as_ref().expect("graph splits");
        assert!(s.pp >= 1 && s.tg >= 1, "{p}");

        // context sizing (llama_context ctor): n_ctx padded to 256; non-unified: per-stream padded
        assert_eq!(fx.kv.n_ctx % 256, 0, "{p}");
        assert_eq!(fx.kv.n_ctx_seq % 256, 0, "{p}");
        assert_eq!(fx.kv.n_ctx, fx.kv.n_ctx_seq * fx.kv.n_stream, "{p}");
        let expect_stream = if fx.ctx.kv_unified {
            1
        } else {
            fx.ctx.n_seq_max
        };
        assert_eq!(fx.kv.n_stream, expect_stream, "{p}");
        if let Some(c) = flag(&fx.args, &["-c", "--ctx-size"]).and_then(|c| c.parse::<u64>().ok()) {
            let n_ctx = pad(c, 256);
            let want = if fx.ctx.kv_unified {
                n_ctx
            } else {
                pad(n_ctx / fx.ctx.n_seq_max, 256) * fx.ctx.n_seq_max
            };
            assert_eq!(fx.kv.n_ctx, want, "{p}");
        }
        if let Some(swa) = fx.kv.cells_swa {
            assert_eq!(swa % 256, 0, "{p}");
            assert!(swa <= fx.kv.n_ctx_seq, "{p}");
            if has(&fx.args, &["--swa-full"]) {
                assert_eq!(swa, fx.kv.n_ctx_seq, "{p}");
            }
        }

        // -np and the two output semantics
        match flag(&fx.args, &["-np", "--parallel"]) {
            Some(n) => assert_eq!(fx.ctx.n_seq_max.to_string(), n, "{p}"),
            None if fx.tool == "server" => {
                // llama-server: -np absent = auto = 4 slots + unified KV
                assert_eq!(fx.ctx.n_seq_max, 4, "{p}");
                assert!(fx.ctx.kv_unified, "{p}");
            }
            None => assert_eq!(fx.ctx.n_seq_max, 1, "{p}"),
        }
        assert!(fx.ctx.n_ubatch <= fx.ctx.n_batch, "{p}");
        if fx.tool == "server" {
            assert_eq!(
                fx.ctx.n_outputs_max,
                fx.ctx.n_batch.min(fx.ctx.n_seq_max),
                "{p}"
            );
        } else {
            assert!(
                fx.ctx.n_outputs_max == 0 || fx.ctx.n_outputs_max == fx.ctx.n_batch,
                "{p}"
            );
        }
        if let Some(o) = &fx.output_buffer {
            // logits for n_seq_max outputs, f32
            assert_eq!(o.bytes % (4 * fx.ctx.n_seq_max), 0, "{p}");
            assert!(!o.buft.is_empty(), "{p}");
        }

        // -ngl N with -sm layer: the first L+1-N layers are on the CPU, the rest on devices
        if let Some(ngl) =
            flag(&fx.args, &["-ngl", "--n-gpu-layers"]).and_then(|n| n.parse::<u64>().ok())
        {
            if !fx.devices.is_empty() && !sm_none {
                let first_gpu = (fx.n_layer + 1).saturating_sub(ngl);
                for l in &fx.layers {
                    assert_eq!(
                        l.device == "CPU",
                        l.index < first_gpu,
                        "{p}: layer {} on {}",
                        l.index,
                        l.device
                    );
                }
            }
        }
        if fx.devices.is_empty() {
            assert!(fx.layers.iter().all(|l| l.device == "CPU"), "{p}");
        }
        if sm_none {
            let mg = flag(&fx.args, &["-mg", "--main-gpu"]).unwrap_or("0");
            let want = format!("RPC{mg}");
            assert!(
                fx.layers
                    .iter()
                    .all(|l| l.device == want || l.device == "CPU"),
                "{p}"
            );
        }
        if sm_tensor && !ctx_devs.is_empty() && !nkvo {
            // the KV heads are split: some device holds KV (not necessarily all:
            // gpt-oss-tiny with -ts 3,2,1 gives RPC1 no KV head)
            let kv: u64 = fx
                .devices
                .iter()
                .map(|d| buf_of(&d.name).map_or(0, |b| b.context))
                .sum();
            assert!(kv > 0, "{p}: no KV on the Meta device's simple devices");
        }
        // -ts a,b,...: layers are handed out in device order (contiguous blocks)
        let order: Vec<&str> = fx
            .layers
            .iter()
            .map(|l| l.device.as_str())
            .filter(|d| *d != "CPU")
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for d in order {
            if seen.last() != Some(&d) {
                assert!(
                    !seen.contains(&d),
                    "{p}: device {d} holds non-contiguous layers"
                );
                seen.push(d);
            }
        }
    }
}

#[test]
fn fixture_set_covers_the_issue_matrix() {
    let all = load_all();
    let mut per_arch: BTreeMap<&str, usize> = BTreeMap::new();
    let mut multi = 0;
    let mut tools = BTreeSet::new();
    for (_, fx) in &all {
        *per_arch.entry(fx.arch.as_str()).or_default() += 1;
        if fx.devices.len() >= 2 {
            multi += 1;
        }
        tools.insert(fx.tool.as_str());
    }
    assert!(all.len() >= 150, "only {} fixtures", all.len());
    assert!(
        per_arch.len() >= 10,
        "only {} architectures: {per_arch:?}",
        per_arch.len()
    );
    assert!(multi >= 30, "only {multi} cases with 2-3 devices");
    assert_eq!(
        tools.len(),
        2,
        "both output semantics must be recorded: {tools:?}"
    );
}

// ------------------------------------------------------------------------------------------
// llama-fit-params fixtures (tests/fixtures/oracle-fit/<model>/<case>.json): what `--fit`
// chose for the fake GPUs, and the probe's measurement of that choice.

#[derive(Debug, Deserialize)]
struct FitFixture {
    schema: u64,
    case: String,
    model: String,
    llama_build: u64,
    tool: String,
    args: Vec<String>,
    rpc: Vec<String>,
    devices: Vec<Device>,
    margin_bytes: Vec<u64>,
    fitted: Fitted,
    measure_args: Vec<String>,
    projected: Vec<Projected>,
    n_layer: u64,
    sched_copies: u64,
    n_ctx: u64,
}

#[derive(Debug, Deserialize)]
struct Fitted {
    raw: String,
    c: u64,
    ngl: i64,
    ts: Option<Vec<u64>>,
    ot: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Projected {
    device: String,
    bytes: u64,
}

fn load_fit() -> Vec<(PathBuf, FitFixture)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle-fit");
    let mut out = Vec::new();
    let Ok(models) = std::fs::read_dir(&dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = models
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .flat_map(|d| {
            std::fs::read_dir(d)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect::<Vec<_>>()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let fx: FitFixture = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a fit fixture: {e}", f.display()));
        out.push((f, fx));
    }
    out
}

#[test]
fn fit_fixtures_respect_the_margins_they_were_fitted_to() {
    let all = load_fit();
    assert!(all.len() >= 100, "only {} fit fixtures", all.len());
    let mut spilled = 0;
    let mut over_margin = 0;
    for (path, fx) in &all {
        let p = path.display();
        assert_eq!(fx.schema, 1, "{p}");
        assert_eq!(fx.llama_build, LLAMA_BUILD, "{p}");
        assert_eq!(fx.tool, "fit-params", "{p}");
        let stem = path.file_stem().unwrap().to_string_lossy();
        assert_eq!(fx.case, format!("{}/{}", fx.model, stem), "{p}");
        assert_eq!(fx.devices.len(), fx.rpc.len(), "{p}");
        assert_eq!(fx.margin_bytes.len(), fx.devices.len(), "{p}");
        assert!(fx.fitted.raw.starts_with("-c "), "{p}");

        // a context the user set is never changed; an unset one is a multiple of 256
        match flag(&fx.args, &["-c"]).and_then(|c| c.parse::<u64>().ok()) {
            Some(c) => assert_eq!(fx.fitted.c, c, "{p}"),
            None => assert_eq!(fx.fitted.c % 256, 0, "{p}"),
        }
        assert_eq!(fx.n_ctx, pad(fx.fitted.c, 256), "{p}");

        // -ngl: -1 (untouched: everything fits) or a layer count incl. the output layer;
        // -ts lists layers per device (trailing empty devices omitted) and sums to -ngl
        assert!(
            fx.fitted.ngl >= -1 && fx.fitted.ngl <= fx.n_layer as i64 + 1,
            "{p}"
        );
        if let Some(ts) = &fx.fitted.ts {
            assert!(ts.len() >= 2 && ts.len() <= fx.devices.len(), "{p}");
            assert_eq!(ts.iter().sum::<u64>() as i64, fx.fitted.ngl, "{p}");
        }
        if fx.fitted.ngl != -1 || !fx.fitted.ot.is_empty() {
            spilled += 1;
        }
        for ot in &fx.fitted.ot {
            let (_, buft) = ot.rsplit_once('=').expect("pattern=buft");
            assert!(
                buft == "CPU" || fx.devices.iter().any(|d| d.buft == buft),
                "{p}: -ot to {buft}"
            );
        }
        // the measured flags are fit's answer
        let ngl = fx.fitted.ngl.to_string();
        assert_eq!(flag(&fx.measure_args, &["-ngl"]), Some(ngl.as_str()), "{p}");

        // fit's promise: every device keeps at least its margin free. llama.cpp breaks it only
        // when the final configuration turns on pipeline parallelism (4 sched copies): fit
        // sized the earlier devices in probes without it, with smaller compute buffers.
        for (i, d) in fx.devices.iter().enumerate() {
            let used: u64 = fx
                .projected
                .iter()
                .filter(|x| x.device == d.name)
                .map(|x| x.bytes)
                .sum();
            if used + fx.margin_bytes[i] > d.free_bytes {
                assert_eq!(
                    fx.sched_copies, 4,
                    "{p}: {} uses {used} B, margin {} B, free {} B",
                    d.name, fx.margin_bytes[i], d.free_bytes
                );
                over_margin += 1;
            }
        }
    }
    assert!(spilled >= 20, "only {spilled} fit cases had to spill");
    // recorded: glm-4.7-flash on 8+12 GiB (RPC0 +55.6 MiB), llama-3.1-8b with -c unset (RPC1)
    assert!(over_margin <= 4, "{over_margin} devices over their margin");
}
