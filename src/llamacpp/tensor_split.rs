//! `-sm tensor` (tensor parallelism over a Meta device, llama.cpp b11434).
//!
//! `llama_prepare_model_devices` (src/llama.cpp) wraps every non-CPU device
//! into one `ggml_backend_meta_device`; the model has that single device, so
//! every offloaded layer "is on" `Meta(...)`. Each weight and KV tensor of
//! the Meta buffer type is then either mirrored (a full copy on every simple
//! device) or split along one axis; `llama_meta_device_get_split_state`
//! (src/llama-model.cpp) decides which and how many elements each device
//! gets. `ggml_backend_meta_buffer_type_alloc_buffer_n`
//! (ggml/src/ggml-backend-meta.cpp) then allocates one buffer per simple
//! device holding that device's slices, each padded to the simple buffer
//! type's alignment. The compute buffer is allocated with the Meta graph's
//! size on *every* device (`ggml_backend_meta_buffer_type_alloc_buffer`
//! allocates `size` on each simple buffer type).
//!
//! Verified against real loads over RPC (tests/fixtures/oracle/*/rpc*-sm-tensor-*).

use std::collections::{BTreeMap, HashMap};

use crate::gguf::GgmlType;
use crate::model::{AttentionKind, Model};
use crate::units::pad;

use super::device::Device;
use super::error::SimError;
use super::flags::{Flags, FlashAttn};
use super::kv::{layer_cells, KvLayout};
use super::place::{tensor_group, Buft, Placement};

/// Architectures `llm_arch_supports_sm_tensor` (src/llama-arch.cpp) refuses:
/// `llama_model_create` throws "LLAMA_SPLIT_MODE_TENSOR not implemented for
/// architecture '<arch>'".
pub const REFUSED_ARCHS: &[&str] = &[
    "grok",
    "mpt",
    "plamo2",
    "minicpm3",
    "gemma3n",
    "mamba",
    "mamba2",
    "jamba",
    "falcon-h1",
    "olmo2",
    "olmoe",
    "deepseek2",
    "deepseek32",
    "hy_v4",
    "dots3note",
    "glm-dsa",
    "bitnet",
    "t5",
    "nemotron_h",
    "nemotron_h_moe",
    "granitehybrid",
    "minimax-01",
    "minimax-m2",
    "minimax-m3",
    "mistral4",
    "kimi-linear",
    "bailingmoe3",
    "kimi-k3",
    "glm5-next",
    "qwen3tts",
];

/// Architectures whose fused Q-gate / delta-net tensors use extra split
/// segments (`[TAG_SPLIT_QGATE_QWEN]` in get_split_segments); modelled, not
/// yet checked against a real load.
const QWEN_GATED: &[&str] = &["qwen3next", "qwen35", "qwen35moe", "clef", "qwen4exp"];

/// Architectures llama.cpp b11434 accepts for `-sm tensor` (the dry run
/// passes) but whose real load aborted in the oracle recording
/// (`ggml_backend_tensor_set`: "tensor write out of bounds", glm4moe-tiny and
/// qwen3next-tiny over RPC).
pub fn load_aborts(arch: &str) -> bool {
    matches!(arch, "glm4moe" | "qwen3next")
}

/// Whether this architecture's split is modelled only from the source (no
/// fixture): the Qwen gated archs, DeepSeek-V4's grouped output, HRM.
pub fn unverified_arch(arch: &str) -> bool {
    QWEN_GATED.contains(&arch) || arch == "deepseek4" || arch == "dflash" || arch == "hrm_text"
}

/// How one tensor is laid out over the simple devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// A full copy on every device (`GGML_BACKEND_SPLIT_AXIS_MIRRORED`, and
    /// `PARTIAL`, whose slices keep the full shape).
    Mirrored,
    /// Split along `axis`; `ne[j]` elements of that axis on device `j`.
    Axis { axis: usize, ne: Vec<u64> },
}

/// Per-layer facts the split rules read (`llama_hparams`).
struct LayerInfo {
    recr: bool,
    swa: bool,
    n_head: u64,
    n_head_kv: u64,
    head_k: u64,
    head_v: u64,
    n_ff: u64,
}

/// Inputs of `llama_meta_device_get_split_state` for one model.
pub struct Splitter<'a> {
    arch: &'a str,
    n_dev: usize,
    /// `-ts` values for the simple devices (all zero = even split).
    ts: Vec<f32>,
    layers: Vec<LayerInfo>,
    n_layer_main: u64,
    n_ff_exp: u64,
    ssm_d_state: u64,
    ssm_d_conv: u64,
    /// name → (type, dims) of every model tensor (the split of Q/K/V reads
    /// `attn_output`'s type, FFN up/gate read `ffn_down`'s).
    types: HashMap<&'a str, (GgmlType, &'a [u64])>,
}

fn blck(ty: GgmlType) -> u64 {
    ty.traits().map_or(1, |t| t.block_elems.max(1))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a / gcd(a, b) * b
    }
}

/// `blk.<il>.<suffix>` → (il, suffix).
fn blk_parts(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let dot = rest.find('.')?;
    Some((rest[..dot].parse().ok()?, &rest[dot + 1..]))
}

impl<'a> Splitter<'a> {
    pub fn new(model: &'a Model, n_dev: usize, ts: &[f64]) -> Self {
        let h = &model.hparams;
        let at = |v: &Vec<u32>, i: usize| u64::from(v.get(i).or(v.last()).copied().unwrap_or(0));
        let layers = model
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| LayerInfo {
                recr: b.recurrent,
                swa: matches!(b.attention, AttentionKind::Swa { .. }),
                n_head: at(&h.n_head, i),
                n_head_kv: at(&h.n_head_kv, i),
                head_k: at(&h.head_dim_k, i),
                head_v: at(&h.head_dim_v, i),
                n_ff: h.n_ff.get(i).or(h.n_ff.last()).copied().unwrap_or(0),
            })
            .collect();
        let types = model
            .profile
            .tensors
            .iter()
            .map(|e| (e.name.as_str(), (e.ty, e.dims.as_slice())))
            .collect();
        let meta_u64 = |key: &str| {
            model
                .profile
                .metadata
                .get(&format!("{}.{key}", model.profile.arch))
                .and_then(|v| match v {
                    crate::model::MetaValue::Int(i) => u64::try_from(*i).ok(),
                    _ => None,
                })
                .unwrap_or(0)
        };
        let ssm_d_state = meta_u64("ssm.state_size");
        let ssm_d_conv = meta_u64("ssm.conv_kernel");
        Splitter {
            arch: &model.profile.arch,
            n_dev,
            ts: (0..n_dev)
                .map(|i| ts.get(i).copied().unwrap_or(0.0) as f32)
                .collect(),
            layers,
            n_layer_main: u64::from(h.n_layer.saturating_sub(h.n_nextn)),
            n_ff_exp: h.n_ff_exp,
            ssm_d_state,
            ssm_d_conv,
            types,
        }
    }

    fn layer(&self, il: u32) -> Option<&LayerInfo> {
        self.layers.get(il as usize)
    }

    /// `get_il_eff`: earlier layers of the same kind (recurrent, SWA), so the
    /// rounding rotation is even within each kind.
    fn il_eff(&self, il: u32) -> u64 {
        let Some(me) = self.layer(il) else { return 0 };
        self.layers[..il as usize]
            .iter()
            .filter(|l| l.recr == me.recr && l.swa == me.swa)
            .count() as u64
    }

    fn ty_of(&self, name: &str) -> Option<GgmlType> {
        self.types.get(name).map(|(t, _)| *t)
    }

    /// The split of a weight (`name`, `ty`, `dims`) or cache tensor
    /// (`cache_k_l<il>` / `cache_v_l<il>`, dims `[width, cells, streams]`).
    pub fn split(&self, name: &str, dims: &[u64]) -> Split {
        if self.n_dev <= 1 || self.arch == "hrm_text" {
            return Split::Mirrored;
        }
        let Some(cfg) = self.config(name, dims) else {
            return Split::Mirrored;
        };
        let ne_axis = dims.get(cfg.axis).copied().unwrap_or(1);
        let segments = self.segments(name, cfg.il, ne_axis);
        let blck_size = self.ty_of(&cfg.axis0_name).map_or(1, blck);
        let gran = self.granularity(name, dims, blck_size, cfg.il, segments.len());
        let n = self.n_dev;
        // tensor_split_scan: -ts rotated by the layer's rotation, cumulative (f32).
        let mut scan = Vec::with_capacity(n);
        let mut acc = 0f32;
        for j in 0..n {
            acc += self.ts[(j + cfg.rotation) % n];
            scan.push(acc);
        }
        let total = acc;
        let mut ne = vec![0u64; n];
        for (is, &(ne_s, nr_s)) in segments.iter().enumerate() {
            let g = gran.get(is).copied().unwrap_or(1).max(1) as i64;
            let ne_s = ne_s as i64;
            let mut low = 0i64;
            for (j, &sc) in scan.iter().enumerate().take(n - 1) {
                let mut high = if total == 0.0 {
                    ne_s * (j as i64 + 1) / n as i64
                } else {
                    // int64 * float / float, truncated to int64 (as in C++).
                    ((ne_s as f32) * sc / total) as i64
                };
                if high % g != 0 {
                    high -= high % g;
                }
                ne[(j + cfg.rotation) % n] += (high - low).max(0) as u64 * u64::from(nr_s);
                low = high;
            }
            ne[(n - 1 + cfg.rotation) % n] += (ne_s - low).max(0) as u64 * u64::from(nr_s);
        }
        Split::Axis { axis: cfg.axis, ne }
    }

    /// `get_tensor_config`: split axis, the tensor whose type sets the block
    /// size, the layer and the rotation; `None` = mirrored (or partial).
    fn config(&self, name: &str, dims: &[u64]) -> Option<Cfg> {
        let arch = self.arch;
        let dsv4 = arch == "deepseek4";
        let (il, prefix, suffix) = if let Some((il, suffix)) = blk_parts(name) {
            (il, format!("blk.{il}."), suffix.to_string())
        } else if let Some(rest) = name.strip_prefix("cache_") {
            // cache_k_l12 / cache_r_l3 / cache_idx_k_l0
            let pos = rest.rfind("_l")?;
            let il: u32 = rest[pos + 2..].parse().ok()?;
            (il, format!("blk.{il}."), format!("cache_{}", &rest[..pos]))
        } else {
            (0, String::new(), name.to_string())
        };
        let is_layer = !prefix.is_empty();
        let rotation = if is_layer {
            (self.il_eff(il) % self.n_dev as u64) as usize
        } else {
            (self.n_layer_main % self.n_dev as u64) as usize
        };
        let s = suffix.as_str();
        let pick = |names: &[&str]| -> String {
            for n in names {
                let full = format!("{prefix}{n}");
                if self.types.contains_key(full.as_str()) {
                    return full;
                }
            }
            names
                .first()
                .map(|n| format!("{prefix}{n}"))
                .unwrap_or_default()
        };
        let cfg = |axis: usize, axis0: String| {
            Some(Cfg {
                axis,
                axis0_name: axis0,
                il,
                rotation,
            })
        };
        let own = name.to_string();
        let attn_o = || pick(&["attn_output.weight", "ssm_out.weight"]);
        let ffn_d = || pick(&["ffn_down.weight", "ffn_down_exps.weight"]);
        let ssm_o = || pick(&["ssm_out.weight"]);

        if is_layer && dsv4 {
            // DeepSeek-V4 grouped output projection (not modelled in detail).
            return None;
        }
        match s {
            "cache_idx_k" | "cache_idx_v" | "cache_ple_r" => None,
            _ if !is_layer => match s {
                "output.weight" => cfg(1, own),
                "output.bias" => cfg(0, own),
                _ => None,
            },
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_qkv.weight" => {
                cfg(1, attn_o())
            }
            "attn_q.bias" | "attn_k.bias" | "attn_v.bias" | "attn_qkv.bias" => cfg(0, attn_o()),
            "attn_q_norm.weight" | "attn_k_norm.weight" => {
                if dims.get(1).copied().unwrap_or(1) == 1 {
                    None
                } else {
                    cfg(1, pick(&["attn_output.weight"]))
                }
            }
            "cache_k" | "cache_v" | "attn_sinks.weight" => cfg(0, pick(&["attn_output.weight"])),
            "attn_output.weight" => cfg(0, own),
            "attn_output.bias" => None,
            "attn_gate.weight" => cfg(1, attn_o()),
            "ssm_dt.bias" | "ssm_a" => cfg(0, ssm_o()),
            "ssm_alpha.weight" | "ssm_beta.weight" | "ssm_ba.weight" => cfg(1, ssm_o()),
            "cache_r" | "cache_s" => {
                if arch == "lfm2" || arch == "lfm2moe" {
                    None
                } else {
                    cfg(0, ssm_o())
                }
            }
            "ssm_conv1d.weight" => cfg(1, ssm_o()),
            "ssm_out.weight" => cfg(0, own),
            "ffn_up.weight"
            | "ffn_up_exps.weight"
            | "ffn_gate.weight"
            | "ffn_gate_exps.weight"
            | "ffn_gate_up.weight"
            | "ffn_gate_up_exps.weight" => cfg(1, ffn_d()),
            "ffn_up.bias" | "ffn_up_exps.bias" | "ffn_gate.bias" | "ffn_gate_exps.bias" => {
                cfg(0, ffn_d())
            }
            "ffn_down.weight" | "ffn_down_exps.weight" => cfg(0, ffn_d()),
            // ffn_down.bias mirrored; ffn_down_exps.bias PARTIAL (full shape per device).
            _ => None,
        }
    }

    /// `get_split_segments`: fused tensors split per part.
    fn segments(&self, name: &str, il: u32, ne_axis: u64) -> Vec<(u64, u32)> {
        let suffix = blk_parts(name).map_or(name, |(_, s)| s);
        let Some(l) = self.layer(il) else {
            return vec![(ne_axis, 1)];
        };
        let qkv = suffix == "attn_qkv.weight" || suffix == "attn_qkv.bias";
        if QWEN_GATED.contains(&self.arch) {
            let n_embd_gqa = l.n_head_kv * l.head_v;
            if !l.recr && qkv {
                return vec![(l.n_head * l.head_k * 2, 1), (n_embd_gqa, 2)];
            }
            if suffix.starts_with("ffn_gate_up") && suffix.ends_with(".weight") {
                return vec![(self.n_ff_exp, 2)];
            }
            // Delta-net segments (qkv / conv / gate / state): not modelled.
            return vec![(ne_axis, 1)];
        }
        if qkv {
            let q = l.n_head * l.head_k;
            let k = l.n_head_kv * l.head_k;
            let v = l.n_head_kv * l.head_v;
            return if k == v {
                vec![(q, 1), (k, 2)]
            } else {
                vec![(q, 1), (k, 1), (v, 1)]
            };
        }
        if matches!(
            suffix,
            "ffn_up.weight" | "ffn_up_exps.weight" | "ffn_up.bias" | "ffn_up_exps.bias"
        ) {
            if l.n_ff > 0 && ne_axis == 2 * l.n_ff {
                return vec![(l.n_ff, 2)];
            }
            return vec![(ne_axis, 1)];
        }
        if suffix.starts_with("ffn_gate_up") && suffix.ends_with(".weight") {
            return vec![(self.n_ff_exp, 2)];
        }
        vec![(ne_axis, 1)]
    }

    /// `get_split_granularity`: the multiple each device's share is rounded
    /// down to (whole heads, quantization blocks, 128-element FFN chunks).
    fn granularity(
        &self,
        name: &str,
        dims: &[u64],
        blck_size: u64,
        il: u32,
        n_seg: usize,
    ) -> Vec<u64> {
        let suffix = blk_parts(name).map_or_else(
            || {
                name.strip_prefix("cache_")
                    .and_then(|r| r.rfind("_l").map(|p| &name[..6 + p]))
                    .unwrap_or(name)
            },
            |(_, s)| s,
        );
        let ffn = matches!(
            suffix,
            "ffn_up.weight"
                | "ffn_up_exps.weight"
                | "ffn_up.bias"
                | "ffn_up_exps.bias"
                | "ffn_gate.weight"
                | "ffn_gate_exps.weight"
                | "ffn_gate.bias"
                | "ffn_gate_exps.bias"
                | "ffn_gate_up.weight"
                | "ffn_gate_up_exps.weight"
                | "ffn_down.weight"
                | "ffn_down_exps.weight"
                | "ffn_up_shexp.weight"
                | "ffn_gate_shexp.weight"
                | "ffn_down_shexp.weight"
        );
        let one = vec![1; n_seg];
        let Some(l) = self.layer(il) else {
            return if ffn {
                vec![lcm(blck_size, 128); n_seg]
            } else {
                one
            };
        };
        if l.recr {
            let hd = self.ssm_d_state.max(1);
            let g_qkv = lcm(lcm(blck_size, 128), hd);
            match suffix {
                "attn_qkv.weight" | "attn_gate.weight" | "ssm_conv1d.weight" | "ssm_out.weight" => {
                    return vec![g_qkv; n_seg]
                }
                "ssm_dt.bias" | "ssm_a" | "ssm_alpha.weight" | "ssm_beta.weight" => {
                    return vec![g_qkv / hd; n_seg]
                }
                "ssm_ba.weight" => return vec![2 * (g_qkv / hd); n_seg],
                "cache_r" => return vec![g_qkv * self.ssm_d_conv.saturating_sub(1).max(1); n_seg],
                "cache_s" => return vec![g_qkv * hd; n_seg],
                _ => {}
            }
        } else if l.n_head_kv > 0 && l.head_k > 0 {
            let n_gqa = l.n_head / l.n_head_kv;
            let n_embd_q = n_gqa * l.head_k;
            // head sizes like 80: grow the block while it does not starve a device
            let mut perf = blck_size;
            while perf < 128 && perf * (self.n_dev as u64) < n_embd_q {
                perf *= 2;
            }
            let g_q = lcm(n_embd_q, perf);
            let g_head = g_q / l.head_k;
            match suffix {
                "attn_sinks.weight" => return vec![g_head],
                "attn_q.weight" | "attn_q.bias" => {
                    if QWEN_GATED.contains(&self.arch) {
                        return vec![lcm(2 * n_embd_q, perf)];
                    }
                    return vec![g_q];
                }
                "attn_output.weight" => return vec![g_head * l.head_v],
                "attn_gate.weight" => {
                    return if dims.get(1).copied() == Some(l.n_head) {
                        vec![g_head]
                    } else {
                        vec![g_q]
                    }
                }
                _ => {}
            }
            let g_kv = g_q / n_gqa.max(1);
            let g_v = (g_kv / l.head_k) * l.head_v;
            match suffix {
                "attn_k.weight" | "attn_k.bias" | "cache_k" => return vec![g_kv],
                "attn_v.weight" | "attn_v.bias" | "cache_v" => return vec![g_v],
                "attn_qkv.weight" | "attn_qkv.bias" => {
                    if QWEN_GATED.contains(&self.arch) {
                        return vec![lcm(2 * n_embd_q, perf), g_kv];
                    }
                    return if n_seg == 3 {
                        vec![g_q, g_kv, g_v]
                    } else {
                        vec![g_q, g_kv]
                    };
                }
                _ => {}
            }
        }
        if ffn {
            return vec![lcm(blck_size, 128); n_seg];
        }
        one
    }
}

struct Cfg {
    axis: usize,
    axis0_name: String,
    il: u32,
    rotation: usize,
}

/// Bytes of one device's slice of a tensor (`ggml_nbytes` of the slice
/// `ggml_backend_meta_buffer_init_tensor_impl` creates), before alignment.
pub fn slice_dims(dims: &[u64], split: &Split, dev: usize) -> Vec<u64> {
    let mut d = dims.to_vec();
    if let Split::Axis { axis, ne } = split {
        while d.len() <= *axis {
            d.push(1);
        }
        d[*axis] = ne.get(dev).copied().unwrap_or(0);
    }
    d
}

/// `ggml_nbytes` of a contiguous tensor of `ty` with `dims`.
pub fn nbytes(ty: GgmlType, dims: &[u64]) -> u64 {
    let ne0 = dims.first().copied().unwrap_or(1);
    if dims.contains(&0) {
        return 0;
    }
    let rows: u64 = dims.iter().skip(1).product();
    ty.row_size(ne0).unwrap_or(0) * rows
}

/// What llama.cpp refuses for `-sm tensor` before allocating anything;
/// returns the simple devices of the Meta device.
pub fn check(model: &Model, devices: &[Device], flags: &Flags) -> Result<Vec<usize>, SimError> {
    let arch = model.profile.arch.as_str();
    if REFUSED_ARCHS.contains(&arch) {
        return Err(SimError::SmTensorArch(arch.to_string()));
    }
    if flags.flash_attn == FlashAttn::Off {
        return Err(SimError::SmTensorNeedsFa);
    }
    tensor_group(devices, flags)
}

/// Allocation of one slice in a simple device's buffer type: CUDA's
/// quantized-row padding, then the buffer type's alignment
/// (`ggml_backend_alloc_ctx_tensors_from_buft` on the simple context).
fn dev_alloc(dev: &Device, ty: GgmlType, dims: &[u64]) -> u64 {
    let mut size = nbytes(ty, dims);
    if size == 0 {
        return 0;
    }
    if let Some(rp) = dev.kind.quant_row_padding() {
        let ne0 = dims.first().copied().unwrap_or(0);
        if ty.is_quantized() && ne0 % rp != 0 {
            size += ty.row_size(rp - ne0 % rp).unwrap_or(0);
        }
    }
    pad(size, dev.kind.alignment())
}

/// Replace the Meta device's weights (simulated on `group[0]` as if it were
/// one device) by each simple device's slices
/// (`ggml_backend_meta_buffer_type_alloc_buffer_n`). Tensors placed in
/// `Buft::Dev(group[0])` without being in `tensor_buft` (the tied output
/// copy, `rope_freqs` duplicates) are mirrored: a full copy per device.
pub fn split_weights(
    model: &Model,
    devices: &[Device],
    group: &[usize],
    ts: &[f64],
    placement: &mut Placement,
) {
    let Some(&d0) = group.first() else { return };
    let sp = Splitter::new(model, group.len(), ts);
    let mut full = 0u64;
    let mut per = vec![0u64; group.len()];
    for (t, b) in model.tensors.iter().zip(&placement.tensor_buft) {
        if *b != Some(Buft::Dev(d0)) {
            continue;
        }
        let Some(e) = model.profile.tensors.get(t.index) else {
            continue;
        };
        full += dev_alloc(&devices[d0], e.ty, &e.dims);
        let split = sp.split(&e.name, &e.dims);
        for (j, &g) in group.iter().enumerate() {
            per[j] += dev_alloc(&devices[g], e.ty, &slice_dims(&e.dims, &split, j));
        }
    }
    let on_meta = placement.weights.remove(&Buft::Dev(d0)).unwrap_or(0);
    let mirrored_extra = on_meta.saturating_sub(full);
    for (j, &g) in group.iter().enumerate() {
        *placement.weights.entry(Buft::Dev(g)).or_default() += mirrored_extra + per[j];
    }
}

/// Replace the Meta device's KV / recurrent state by each simple device's
/// slices: `cache_k_l<il>` / `cache_v_l<il>` split along the row width in
/// whole KV heads (rotated per layer), `cache_r/s_l<il>` along their length
/// (LFM2: mirrored).
pub fn split_context(
    model: &Model,
    flags: &Flags,
    layout: &KvLayout,
    layer_device: &[Option<usize>],
    devices: &[Device],
    group: &[usize],
    context: &mut BTreeMap<Buft, u64>,
) {
    let Some(&d0) = group.first() else { return };
    if flags.no_kv_offload {
        return;
    }
    let sp = Splitter::new(model, group.len(), &flags.tensor_split);
    let n_main = model.hparams.n_layer.saturating_sub(model.hparams.n_nextn);
    let mut full = 0u64;
    let mut per = vec![0u64; group.len()];
    let mut add = |name: String, ty: GgmlType, dims: &[u64]| {
        if nbytes(ty, dims) == 0 {
            return;
        }
        full += dev_alloc(&devices[d0], ty, dims);
        let split = sp.split(&name, dims);
        for (j, &g) in group.iter().enumerate() {
            per[j] += dev_alloc(&devices[g], ty, &slice_dims(dims, &split, j));
        }
    };
    for b in &model.blocks {
        if layer_device.get(b.index as usize).copied().flatten() != Some(d0) {
            continue;
        }
        let il = b.index;
        if b.has_kv && b.k_width > 0 {
            let cells = layer_cells(b.attention, layout);
            let dims = [b.k_width, cells, layout.n_stream];
            add(format!("cache_k_l{il}"), flags.cache_type_k, &dims);
            if b.v_width > 0 && b.attention != AttentionKind::Mla {
                let w = layout.v_width_max.unwrap_or(b.v_width);
                add(
                    format!("cache_v_l{il}"),
                    flags.cache_type_v,
                    &[w, cells, layout.n_stream],
                );
            }
        }
        if b.recurrent && b.index < n_main {
            let rows = layout.rs_rows;
            add(
                format!("cache_r_l{il}"),
                GgmlType::F32,
                &[model.hparams.n_embd_r * rows],
            );
            add(
                format!("cache_s_l{il}"),
                GgmlType::F32,
                &[model.hparams.n_embd_s * rows],
            );
        }
    }
    if let Some(v) = context.get_mut(&Buft::Dev(d0)) {
        *v = v.saturating_sub(full);
    }
    for (j, &g) in group.iter().enumerate() {
        *context.entry(Buft::Dev(g)).or_default() += per[j];
    }
    context.retain(|_, v| *v > 0);
}

/// The buffers `ggml_backend_meta_graph_compute` allocates on every simple
/// device when it first splits a graph (not at reserve time, so not in the
/// memory breakdown): `n_reduce_steps = ceil(log2(n_devices))` buffers of the
/// largest PARTIAL node, the per-device partial sums of `attn_output` /
/// `ffn_down` (`[n_embd, n_tokens]` f32) or of the experts' down projection
/// (`[n_embd, n_expert_used, n_tokens]`). Measured over RPC with one decode
/// of a full ubatch: llama-tiny 2 devices 1 × 1 MiB, 3 devices 2 × 1 MiB;
/// qwen3moe-tiny 8 MiB; gpt-oss-tiny (ub 256) 1.25 MiB.
pub fn allreduce_buffers(model: &Model, n_dev: usize, n_ubatch: u64) -> (u64, u64) {
    if n_dev <= 1 {
        return (0, 0);
    }
    let steps = u64::from(usize::BITS - (n_dev - 1).leading_zeros());
    let k = u64::from(model.hparams.n_expert_used.max(1));
    (steps, 4 * model.hparams.n_embd * k * n_ubatch)
}

/// The Meta device's name as llama.cpp builds it from its simple devices
/// (`ggml_backend_meta_device_context`; b11434 itself prints `Meta()`: the
/// name is built from the moved-from device vector).
pub fn meta_name(devices: &[Device], group: &[usize]) -> String {
    let names: Vec<&str> = group.iter().map(|&g| devices[g].name.as_str()).collect();
    format!("Meta({})", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llamacpp::testmodel::{build, Spec};
    use crate::llamacpp::{simulate, BackendKind, Options};
    use crate::units::MIB;

    fn rpc(n: usize) -> Vec<Device> {
        (0..n)
            .map(|i| Device::new(&format!("RPC{i}"), BackendKind::Rpc, 8 << 30))
            .collect()
    }

    fn axis(s: Split) -> Vec<u64> {
        match s {
            Split::Axis { ne, .. } => ne,
            Split::Mirrored => vec![],
        }
    }

    #[test]
    fn split_rules_hand_derived() {
        // tiny llama: E 512, H 8, Hkv 4, d 64, F 1024, V 2048, F16, 4 layers.
        let m = build(&Spec::tiny_llama());
        let sp = Splitter::new(&m, 2, &[]);
        // Q: n_embd_q = n_gqa·d = 128, F16 block 1 grown to 64 (64·2 < 128
        // fails at 64), granularity lcm(128, 64) = 128 -> 256 | 256.
        assert_eq!(
            axis(sp.split("blk.0.attn_q.weight", &[512, 512])),
            [256, 256]
        );
        // K cache: granularity 128 / n_gqa = 64 (one KV head) -> 2 heads each.
        assert_eq!(axis(sp.split("cache_k_l0", &[256, 4096, 1])), [128, 128]);
        // FFN: lcm(block, 128); output.weight: vocab rows, granularity 1.
        assert_eq!(
            axis(sp.split("blk.0.ffn_up.weight", &[512, 1024])),
            [512, 512]
        );
        assert_eq!(axis(sp.split("output.weight", &[512, 2048])), [1024, 1024]);
        // norms, attn_output.bias, token_embd (also the tied output copy): mirrored.
        assert_eq!(sp.split("blk.0.attn_norm.weight", &[512]), Split::Mirrored);
        assert_eq!(sp.split("token_embd.weight", &[512, 2048]), Split::Mirrored);
        assert_eq!(sp.split("blk.0.attn_q_norm.weight", &[64]), Split::Mirrored);

        // -ts 3,2,1 on 3 devices, layer 1 (rotation 1): scan over ts[1], ts[2],
        // ts[0] = 2, 3, 6; 256·2/6 = 85 -> 64 to device 1, 256·3/6 = 128 ->
        // 64 to device 2, the remaining 128 to device 0.
        let sp3 = Splitter::new(&m, 3, &[3.0, 2.0, 1.0]);
        assert_eq!(
            axis(sp3.split("cache_k_l1", &[256, 4096, 1])),
            [128, 64, 64]
        );
        // layer 0 (rotation 0): scan 3, 5, 6; 256·3/6 = 128 to device 0,
        // 256·5/6 = 213 -> 192 (64 more) to device 1, 64 to device 2.
        assert_eq!(
            axis(sp3.split("cache_k_l0", &[256, 4096, 1])),
            [128, 64, 64]
        );
        // layer 2 (rotation 2): scan over ts[2], ts[0], ts[1] = 1, 4, 6;
        // 256/6 = 42 -> 0 to device 2, 256·4/6 = 170 -> 128 to device 0,
        // the remaining 128 to device 1.
        assert_eq!(
            axis(sp3.split("cache_k_l2", &[256, 4096, 1])),
            [128, 128, 0]
        );
    }

    #[test]
    fn simulate_splits_kv_and_replicates_compute() {
        let m = build(&Spec::tiny_llama());
        let opts = Options {
            no_alloc: true,
            ..Options::default()
        };
        let args = ["-c", "4096", "-np", "1", "-fit", "off", "-ngl", "99"];
        let one = simulate(&m, None, &rpc(1), &Flags::parse(&args).unwrap(), &opts).unwrap();
        let mut targs = args.to_vec();
        targs.extend(["-sm", "tensor"]);
        let f = Flags::parse(&targs).unwrap();
        let two = simulate(&m, None, &rpc(2), &f, &opts).unwrap();
        // f16 KV: 2 of 4 KV heads per device = 1 MiB K + 1 MiB V per layer.
        for d in ["RPC0", "RPC1"] {
            let u = two.device(d).unwrap();
            assert_eq!(u.context_bytes, 8 * MIB, "{d}");
            assert_eq!(u.compute_bytes, one.device("RPC0").unwrap().compute_bytes);
            assert!(u.model_bytes < one.device("RPC0").unwrap().model_bytes);
        }
        assert!(two.layers[..4]
            .iter()
            .all(|l| l.device == "Meta(RPC0,RPC1)"));
        // the host side is unchanged
        assert_eq!(two.device("CPU"), one.device("CPU"));
    }

    #[test]
    fn allreduce_buffers_match_the_measured_decodes() {
        let m = build(&Spec::tiny_llama()); // n_embd 512, dense
        assert_eq!(allreduce_buffers(&m, 1, 512), (0, 0));
        assert_eq!(allreduce_buffers(&m, 2, 512), (1, MIB));
        assert_eq!(allreduce_buffers(&m, 3, 512), (2, MIB));
        assert_eq!(allreduce_buffers(&m, 4, 512).0, 2);
        assert_eq!(allreduce_buffers(&m, 5, 512).0, 3);
        let moe = build(&Spec::tiny_moe()); // n_embd 256, 2 experts used
        assert_eq!(allreduce_buffers(&moe, 2, 512), (1, 4 * 256 * 2 * 512));
    }

    #[test]
    fn refusals_use_llama_cpp_text() {
        let opts = Options::default();
        let mut s = Spec::tiny_llama();
        let m = build(&s);
        let f = Flags::parse(&["-sm", "tensor", "-fa", "off"]).unwrap();
        let e = simulate(&m, None, &rpc(2), &f, &opts).unwrap_err();
        assert!(e
            .to_string()
            .contains("SPLIT_MODE_TENSOR requires flash_attn to be enabled"));
        s.arch = "deepseek2";
        let m = build(&s);
        let f = Flags::parse(&["-sm", "tensor"]).unwrap();
        let e = simulate(&m, None, &rpc(2), &f, &opts).unwrap_err();
        assert!(e
            .to_string()
            .contains("LLAMA_SPLIT_MODE_TENSOR not implemented for architecture 'deepseek2'"));
        let m = build(&Spec::tiny_llama());
        let e = simulate(&m, None, &[], &f, &opts).unwrap_err();
        assert!(e.to_string().contains("needs >= 1 devices"));
    }
}
