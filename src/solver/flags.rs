//! Flag synthesis: the llama-server argv that reproduces a plan exactly.
//!
//! * Layers: `-ngl G` (blocks offloaded + the output) and `-ts c0,c1,…` as
//!   *layer counts*. llama.cpp assigns block `il` to the first device whose
//!   cumulative fraction `splits[d] = (c0+…+cd)/Σc` is strictly greater than
//!   `(il − i_gpu_start)/act` (`load_tensors`, `std::upper_bound`, in f32).
//!   With integer counts summing to `act` both sides are the same f32
//!   divisions of integers below 2^24, so the split is exact; we still re-run
//!   the rule ([`llama_layer_devices`]) and fall back to explicit
//!   `blk\.(…)\.=DEV` overrides if it ever disagrees.
//! * Devices: `-dev A,B` lists the used devices in order when that is not
//!   every device; one device is `-sm none -dev A`.
//! * Host FFNs: one compact `-ot` entry,
//!   `blk\.(1[5-9]|2[0-1])\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU`
//!   (routed experts, llama.cpp's `LLM_FFN_EXPS_REGEX`) or
//!   `blk\.(…)\.ffn_(up|down|gate|gate_up)\.=CPU` (a dense FFN).
//! * `--load-mode none` when weights stay on the host next to a GPU (see [`argv`]).
//! * Always explicit: `-c -np [-kvu] -b -ub -fa -ctk -ctv -fit off`
//!   (`--fit` is on by default and would re-place anything left unset).

use std::collections::BTreeSet;

use serde::Serialize;

use super::costs::{CtxConfig, Movable};
use super::layout::Layout;
use super::ranges::block_pattern;

/// llama.cpp's routed-expert tail: `LLM_FFN_EXPS_REGEX` (common/common.h,
/// owned by [`crate::llamacpp::overrides`]) without its leading `\.`, which
/// [`block_pattern`]'s `blk\.(…)\.` already ends with.
pub const EXPS_TAIL: &str = {
    let (_, tail) = crate::llamacpp::overrides::LLM_FFN_EXPS_REGEX
        .as_bytes()
        .split_at(2);
    match std::str::from_utf8(tail) {
        Ok(t) => t,
        Err(_) => panic!("LLM_FFN_EXPS_REGEX is ASCII"),
    }
};
/// A dense FFN's tensors (`ffn_up.weight`, `ffn_gate.bias`, fused `ffn_gate_up`),
/// not `_exps` / `_shexp` / `ffn_norm` (the `\.` after the name).
pub const DENSE_FFN_TAIL: &str = r"ffn_(up|down|gate|gate_up)\.";

/// Everything a plan decides.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub layout: Layout,
    #[serde(skip)]
    pub ctx: CtxConfig,
    /// Names of the hardware devices, in hardware order.
    pub device_names: Vec<String>,
    pub movable: Option<Movable>,
    /// The draft model for speculative decoding, if any.
    pub draft: Option<DraftPlan>,
}

/// Where a plan puts its draft model (`--draft`): llama-server loads it as
/// a second model with its own context (common/speculative.cpp
/// `common_base_params_to_speculative`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DraftPlan {
    /// The GGUF path llama-server loads (`-md`).
    pub path: String,
    /// Hardware device holding every draft layer (`-ngld all -devd NAME`);
    /// `None`: the host (`-ngld 0`).
    pub device: Option<usize>,
    /// Tokens drafted per step (`--spec-draft-n-max`).
    pub n_max: u32,
}

impl DraftPlan {
    /// The draft's llama-server flags: `--spec-type draft-simple` (b11434
    /// drafts only with a draft type; `-md` alone just loads the model),
    /// `--spec-draft-n-max`, `-ngld/-devd`, and the draft cache types (which
    /// default to f16, not to `-ctk/-ctv`), set to the main cache's.
    pub fn argv(&self, device_names: &[String], ctx: &CtxConfig) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-md".into(),
            self.path.clone(),
            "--spec-type".into(),
            "draft-simple".into(),
            "--spec-draft-n-max".into(),
            self.n_max.to_string(),
        ];
        match self.device.and_then(|d| device_names.get(d)) {
            Some(name) => {
                a.extend(["-ngld".into(), "all".into(), "-devd".into(), name.clone()]);
            }
            // The draft follows the main devices with no layer offloaded
            // (`-devd none` would fail next to `-sm none`: llama.cpp checks
            // main_gpu against the empty device list).
            None => a.extend(["-ngld".into(), "0".into()]),
        }
        a.extend([
            "-ctkd".into(),
            type_name(ctx.type_k),
            "-ctvd".into(),
            type_name(ctx.type_v),
        ]);
        a
    }
}

/// `load_tensors`' layer → device rule for `-ngl ngl -ts ts` over `n_dev`
/// model devices (indices into the model-device list; `None` = CPU), for
/// blocks `0..n_layer` and the output (index `n_layer`). Post-#18148 builds:
/// the output counts as a layer and is offloaded first.
pub fn llama_layer_devices(n_layer: u32, ngl: u32, ts: &[f32], n_dev: usize) -> Vec<Option<usize>> {
    let (i_gpu_start, act) = crate::llamacpp::place::gpu_range(
        n_layer,
        i64::from(ngl),
        n_dev,
        crate::llamacpp::FIXTURE_BUILD,
    );
    let weights: Vec<f32> = (0..n_dev)
        .map(|i| ts.get(i).copied().unwrap_or(0.0))
        .collect();
    crate::llamacpp::place::assign_layers(i64::from(n_layer), i_gpu_start, act, &weights)
}

fn type_name(t: crate::gguf::GgmlType) -> String {
    t.name()
        .map_or_else(|| format!("type{}", t.0), |n| n.to_ascii_lowercase())
}

/// The `-ot` tail for the host FFN of `movable`.
pub fn ffn_tail(movable: Movable) -> &'static str {
    match movable {
        Movable::Experts => EXPS_TAIL,
        Movable::DenseFfn => DENSE_FFN_TAIL,
    }
}

/// The override list (`-ot` value entries) of a plan, in order.
pub fn overrides(plan: &Plan, layer_fallback: bool) -> Vec<String> {
    let n = plan.layout.n_layer();
    let mut out = Vec::new();
    let host: BTreeSet<u32> = (0..n)
        .filter(|&il| plan.layout.layer_dev[il].is_some() && plan.layout.ffn_host[il])
        .map(|il| il as u32)
        .collect();
    if let (Some(m), Some(pat)) = (plan.movable, block_pattern(&host)) {
        out.push(format!("{pat}{}=CPU", ffn_tail(m)));
    }
    if layer_fallback {
        for d in plan.layout.used_devices() {
            let set: BTreeSet<u32> = (0..n)
                .filter(|&il| plan.layout.layer_dev[il] == Some(d))
                .map(|il| il as u32)
                .collect();
            if let Some(pat) = block_pattern(&set) {
                out.push(format!("{pat}={}", plan.device_names[d]));
            }
        }
    }
    out
}

/// The llama-server argv of `plan` (without `-m`).
pub fn argv(plan: &Plan) -> Vec<String> {
    let n = plan.layout.n_layer();
    let ctx = &plan.ctx;
    let mut a: Vec<String> = Vec::new();
    let push = |a: &mut Vec<String>, k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    push(&mut a, "-c", ctx.n_ctx.to_string());
    push(&mut a, "-np", ctx.n_seq.to_string());
    if ctx.kv_unified {
        a.push("-kvu".to_string());
    }
    push(&mut a, "-b", ctx.batch.to_string());
    push(&mut a, "-ub", ctx.ubatch.to_string());
    let used = plan.layout.used_devices();
    let ngl = plan.layout.layer_dev.iter().filter(|d| d.is_some()).count() as u32;
    push(&mut a, "-ngl", ngl.to_string());
    let all_in_order =
        used.len() == plan.device_names.len() && used.iter().enumerate().all(|(i, &d)| i == d);
    let mut fallback = false;
    if used.len() == 1 {
        push(&mut a, "-sm", "none".into());
        push(&mut a, "-dev", plan.device_names[used[0]].clone());
    } else if used.len() > 1 {
        if !all_in_order {
            push(
                &mut a,
                "-dev",
                used.iter()
                    .map(|&d| plan.device_names[d].clone())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let counts: Vec<usize> = used
            .iter()
            .map(|&d| {
                plan.layout
                    .layer_dev
                    .iter()
                    .filter(|x| **x == Some(d))
                    .count()
            })
            .collect();
        let ts: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
        let got = llama_layer_devices(n as u32, ngl, &ts, used.len());
        let want: Vec<Option<usize>> = plan
            .layout
            .layer_dev
            .iter()
            .map(|d| d.and_then(|d| used.iter().position(|&u| u == d)))
            .collect();
        fallback = got != want;
        push(
            &mut a,
            "-ts",
            counts
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let ot = overrides(plan, fallback);
    if !ot.is_empty() {
        push(&mut a, "-ot", ot.join(","));
    }
    // Host-resident weights (CPU blocks, host FFNs): load without mmap, as
    // llama.cpp itself recommends for CPU overrides. The host then holds
    // exactly those tensors (pinned `CUDA_Host`), instead of a `CPU_Mapped`
    // span that also covers the GPU tensors lying between them in the file
    // (`get_mapping_range`, internals notes §1.11).
    let host_weights =
        (0..n).any(|il| plan.layout.ffn_on_host(il)) || plan.layout.layer_dev[n].is_none();
    if host_weights && !used.is_empty() {
        push(&mut a, "--load-mode", "none".into());
    }
    push(
        &mut a,
        "-fa",
        if ctx.flash_attn { "on" } else { "off" }.into(),
    );
    push(&mut a, "-ctk", type_name(ctx.type_k));
    push(&mut a, "-ctv", type_name(ctx.type_v));
    if let Some(d) = &plan.draft {
        a.extend(d.argv(&plan.device_names, ctx));
    }
    push(&mut a, "-fit", "off".into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_notes_example_two_gpus_even_split() {
        // §1.4: 2 GPUs, -ts 1,1, L=32, full offload: blk 0..16 on GPU0, 17..31 + output on GPU1.
        let d = llama_layer_devices(32, 33, &[1.0, 1.0], 2);
        assert_eq!(d.iter().filter(|x| **x == Some(0)).count(), 17);
        assert_eq!(d[16], Some(0));
        assert_eq!(d[17], Some(1));
        assert_eq!(d[32], Some(1));
        // -ngl 1: only the output on the GPU.
        let d = llama_layer_devices(32, 1, &[], 1);
        assert_eq!(d.iter().filter(|x| x.is_some()).count(), 1);
        assert_eq!(d[32], Some(0));
    }

    use crate::model::{Model, TensorClass, TensorGroup};
    use crate::solver::costs::{costs, CtxConfig};
    use crate::solver::synthetic::{build, Spec};

    fn plan_for(m: &Model, layer_dev: Vec<Option<usize>>, ffn_host: Vec<bool>) -> Plan {
        let cfg = CtxConfig::llama_defaults(4096);
        Plan {
            layout: Layout {
                layer_dev,
                ffn_host,
            },
            ctx: cfg,
            device_names: vec!["CUDA0".into(), "CUDA1".into(), "CUDA2".into()],
            movable: costs(m, &cfg).movable,
            draft: None,
        }
    }

    /// Apply an override list as llama.cpp does (`std::regex_search`, first
    /// match wins): the target of each tensor, `None` = no override.
    fn targets(m: &Model, ot: &[String]) -> Vec<Option<String>> {
        let rules: Vec<(regex::Regex, String)> = ot
            .iter()
            .map(|e| {
                let (p, b) = e.split_once('=').unwrap();
                (regex::Regex::new(p).unwrap(), b.to_string())
            })
            .collect();
        m.profile
            .tensors
            .iter()
            .map(|t| {
                rules
                    .iter()
                    .find(|(r, _)| r.is_match(&t.name))
                    .map(|(_, b)| b.clone())
            })
            .collect()
    }

    fn arb_layout(n: usize) -> impl Strategy<Value = (usize, Vec<usize>, Vec<bool>)> {
        (
            0..=n,
            proptest::collection::vec(0usize..3, 1..4),
            proptest::collection::vec(any::<bool>(), n),
        )
    }

    fn layout_from(
        n: usize,
        n_cpu: usize,
        devs: &[usize],
        host: &[bool],
    ) -> (Vec<Option<usize>>, Vec<bool>) {
        let mut devs: Vec<usize> = devs.to_vec();
        devs.sort();
        devs.dedup();
        let gpu = n + 1 - n_cpu;
        let mut layer_dev = vec![None; n_cpu];
        let per = gpu / devs.len();
        for (k, &d) in devs.iter().enumerate() {
            let cnt = if k + 1 == devs.len() {
                gpu - per * k
            } else {
                per
            };
            layer_dev.extend(std::iter::repeat_n(Some(d), cnt));
        }
        let ffn_host = (0..n).map(|i| host[i] && layer_dev[i].is_some()).collect();
        (layer_dev, ffn_host)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Each emitted `-ot` list selects exactly the intended tensors among
        /// the model's real names: the movable FFN tensors of host-FFN blocks
        /// go to CPU, with the layer fallback every other block tensor to its
        /// device, and nothing else matches.
        #[test]
        fn ot_lists_select_exactly_the_intended_tensors(
            dense in any::<bool>(),
            fallback in any::<bool>(),
            (n_cpu, devs, host) in arb_layout(48),
        ) {
            let mut spec = if dense { Spec::llama_8b_like() } else { Spec::qwen3_next_like() };
            spec.n_layer = 48;
            let m = build(&spec);
            let (layer_dev, ffn_host) = layout_from(48, n_cpu, &devs, &host);
            let plan = plan_for(&m, layer_dev.clone(), ffn_host.clone());
            let ot = overrides(&plan, fallback);
            let got = targets(&m, &ot);
            let movable = if dense { TensorGroup::FfnDense } else { TensorGroup::FfnRouted };
            for (t, g) in m.tensors.iter().zip(&got) {
                let name = &m.profile.tensors[t.index].name;
                let want = match t.class {
                    TensorClass::Layer { layer, group } => {
                        let il = layer as usize;
                        if group == movable && ffn_host[il] {
                            Some("CPU".to_string())
                        } else if fallback {
                            layer_dev[il].map(|d| plan.device_names[d].clone())
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                prop_assert_eq!(g, &want, "{} with {:?}", name, ot);
            }
            // One entry per place at most: the lists stay compact.
            prop_assert!(ot.len() <= 1 + 3);
        }
    }

    proptest! {
        /// Integer layer counts as -ts always reproduce the intended split.
        #[test]
        fn layer_counts_reproduce_exactly(n_layer in 1u32..200, n_cpu_frac in 0.0..1.0f64, cuts in proptest::collection::vec(0.0..1.0f64, 1..6)) {
            let n_cpu = ((n_layer as f64 + 1.0) * n_cpu_frac) as u32;
            let ngl = n_layer + 1 - n_cpu;
            let nd = cuts.len();
            let mut pts: Vec<u32> = cuts.iter().map(|c| (c * ngl as f64) as u32).collect();
            pts.sort();
            let mut counts = Vec::new();
            let mut prev = 0;
            for (i, &p) in pts.iter().enumerate() {
                let p = if i + 1 == nd { ngl } else { p };
                counts.push(p - prev);
                prev = p;
            }
            prop_assume!(counts.iter().sum::<u32>() == ngl && ngl > 0);
            let ts: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
            let got = llama_layer_devices(n_layer, ngl, &ts, nd);
            let mut want = vec![None; n_cpu as usize];
            for (d, &c) in counts.iter().enumerate() {
                want.extend(std::iter::repeat_n(Some(d), c as usize));
            }
            prop_assert_eq!(got, want);
        }
    }
}
