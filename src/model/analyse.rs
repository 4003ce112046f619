//! [`Model::from_profile`]: hyperparameters, per-block attention kind, KV and
//! recurrent widths, tensor classes and bytes per group.
//!
//! The rules mirror llama.cpp's `load_hparams` / per-arch `load_arch_hparams`
//! (src/llama-model.cpp, src/models/<arch>.cpp), `llama_hparams`
//! (`n_embd_k_gqa`, `n_embd_r`, `n_embd_s`, `set_swa_pattern`,
//! src/llama-hparams.cpp) and `llama_model::create_memory` (which layers get
//! KV cells, which get recurrent state). Widths are read from metadata as
//! llama.cpp reads them and cross-checked against tensor shapes (`attn_k`,
//! `attn_v`, `attn_kv_a_mqa`, `ssm_conv1d`, `shortconv.conv`); where both
//! exist and disagree the tensor shape wins and a warning says llama.cpp
//! would refuse the file (`create_tensor` checks shapes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::names::{classify_name, split_block_name};
use super::{
    AttentionKind, Block, HParams, MetaValue, Model, ModelError, ModelProfile, Tensor, TensorClass,
    TensorEntry, TensorGroup,
};
use crate::gguf::GgmlType;

/// Architectures whose layout rules ggplan implements; any other still
/// inspects (bytes exact) with generic rules and a warning.
pub const KNOWN_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen2moe",
    "qwen3",
    "qwen3moe",
    "qwen3next",
    "qwen35",
    "qwen35moe",
    "deepseek2",
    "glm4moe",
    "gpt-oss",
    "gemma2",
    "gemma3",
    "mistral3",
    "cohere2",
    "nemotron_h",
    "nemotron_h_moe",
    "granitehybrid",
    "jamba",
    "lfm2",
    "lfm2moe",
    "mamba",
    "mamba2",
    "falcon-h1",
];

/// Sanity bound on `block_count` (llama.cpp's `LLAMA_MAX_LAYERS` is 512):
/// protects against a hostile header asking for billions of blocks.
pub const MAX_LAYERS: u32 = 4096;

/// `llm_arch_is_recurrent`: recurrent state only, no KV cache.
const RECURRENT_ARCHS: &[&str] = &["mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"];

/// `llm_arch_is_hybrid` (src/llama-arch.cpp): attention KV for some layers,
/// recurrent state for others.
const HYBRID_ARCHS: &[&str] = &[
    "jamba",
    "falcon-h1",
    "plamo2",
    "granitehybrid",
    "lfm2",
    "lfm2moe",
    "nemotron_h",
    "nemotron_h_moe",
    "qwen3next",
    "kimi-linear",
    "bailingmoe3",
    "kimi-k3",
    "glm5-next",
    "qwen35",
    "qwen35moe",
    "qwen4exp",
    "deepseek4",
    "minimax-01",
];

/// NextN/MTP weights: in b11434 every architecture that reads
/// `nextn_predict_layers` creates its MTP-block tensors with `TENSOR_SKIP`
/// unless `load_mtp` (deepseek2, glm4moe, qwen3next, qwen35(moe),
/// nemotron_h(_moe), glm-dsa, mimo2, hy_v3, step35, bailingmoe2/3, …;
/// llamacpp-internals §8.3), so they are never allocated in a plain load.
const NEXTN_WEIGHTS_SKIPPED: bool = true;

/// NextN/MTP layers and the main-context KV cache, as llama.cpp b11434's
/// `llama_model::create_memory` decides (src/llama-model.cpp):
/// * non-hybrid archs with `n_layer_nextn > 0` (deepseek2, glm4moe, …) get
///   the filter `il < n_layer()` ("don't filter when n_layer_nextn is
///   repurposed for a router layer…" branch): no KV cells for NextN blocks.
///   (Older builds, e.g. the 2026-08 snapshot of llamacpp-internals §3.7,
///   had no filter there and allocated them.)
/// * hybrids filter `il < n_layer() && !is_recr(il)`, except nemotron_h(_moe),
///   whose attention filter is `!is_recr(il) && n_ff(il) == 0` with no bound
///   on `il`.
fn nextn_kv_allocated(arch: &str) -> bool {
    matches!(arch, "nemotron_h" | "nemotron_h_moe")
}

/// Default SWA period and window per arch (`set_swa_pattern` calls in
/// `load_arch_hparams`): gemma2 2 (window 4096), gemma3 6, gpt-oss 2, cohere2 4.
fn swa_default(arch: &str) -> Option<(u32, Option<u64>)> {
    match arch {
        "gemma2" => Some((2, Some(4096))),
        "gemma3" => Some((6, None)),
        "gpt-oss" => Some((2, None)),
        "cohere2" => Some((4, None)),
        _ => None,
    }
}

/// `llama_hparams::set_swa_pattern(n, dense_first = false)`.
fn swa_period(n: u32, il: u32) -> bool {
    n == 0 || il % n < n - 1
}

struct Ctx<'a> {
    p: &'a ModelProfile,
    n_layer: u32,
    warnings: Vec<String>,
}

impl Ctx<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.p.arch)
    }

    fn scalar(&self, suffix: &str) -> Result<Option<u64>, ModelError> {
        let key = self.key(suffix);
        match self.p.meta(&key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| ModelError::BadKey {
                key,
                problem: format!("expected a non-negative integer, found {}", v.show()),
            }),
        }
    }

    /// A key that is a scalar or a per-layer array (`get_key_or_arr`).
    fn per_layer(&self, suffix: &str) -> Result<Option<Vec<u64>>, ModelError> {
        let key = self.key(suffix);
        let n = self.n_layer as usize;
        let bad = |problem: String| ModelError::BadKey {
            key: key.clone(),
            problem,
        };
        match self.p.meta(&key) {
            None => Ok(None),
            Some(MetaValue::Ints(v)) => {
                if v.len() != n {
                    return Err(bad(format!(
                        "has {} entries but block_count is {n}",
                        v.len()
                    )));
                }
                v.iter()
                    .map(|&x| u64::try_from(x).map_err(|_| bad(format!("negative entry {x}"))))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(MetaValue::Bools(v)) => {
                if v.len() != n {
                    return Err(bad(format!(
                        "has {} entries but block_count is {n}",
                        v.len()
                    )));
                }
                Ok(Some(v.iter().map(|&b| u64::from(b)).collect()))
            }
            Some(v) => match v.as_u64() {
                Some(x) => Ok(Some(vec![x; n])),
                None => Err(bad(format!(
                    "expected an integer or a per-layer array, found {}",
                    v.show()
                ))),
            },
        }
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }
}

fn to_u32(v: u64, key: &str) -> Result<u32, ModelError> {
    u32::try_from(v).map_err(|_| ModelError::BadKey {
        key: key.into(),
        problem: format!("{v} does not fit in 32 bits"),
    })
}

fn to_u32s(v: Vec<u64>, key: &str) -> Result<Vec<u32>, ModelError> {
    v.into_iter().map(|x| to_u32(x, key)).collect()
}

/// Per-layer lookups of a block's tensors by their base name.
struct LayerTensors<'a> {
    by_layer: Vec<HashMap<&'a str, &'a TensorEntry>>,
}

impl<'a> LayerTensors<'a> {
    fn new(p: &'a ModelProfile, n_layer: u32) -> Self {
        let mut by_layer = vec![HashMap::new(); n_layer as usize];
        for t in &p.tensors {
            if let Some((il, tail)) = split_block_name(&t.name) {
                if let Some(m) = by_layer.get_mut(il as usize) {
                    m.insert(tail, t);
                }
            }
        }
        LayerTensors { by_layer }
    }

    fn get(&self, il: u32, tail: &str) -> Option<&'a TensorEntry> {
        self.by_layer.get(il as usize)?.get(tail).copied()
    }

    fn any(&self, il: u32, pred: impl Fn(&str) -> bool) -> bool {
        self.by_layer
            .get(il as usize)
            .is_some_and(|m| m.keys().any(|k| pred(k)))
    }

    /// Output width (`dims[1]`) of a 2-D weight.
    fn width(&self, il: u32, tail: &str) -> Option<u64> {
        self.get(il, tail)
            .and_then(|t| t.dims.get(1).copied())
            .filter(|_| self.get(il, tail).is_some_and(|t| t.dims.len() == 2))
    }
}

fn is_recurrent_tail(k: &str) -> bool {
    k.starts_with("ssm_") || k.starts_with("shortconv") || k.starts_with("time_mix")
}

fn is_attention_tail(k: &str) -> bool {
    k.starts_with("attn_q.")
        || k.starts_with("attn_k.")
        || k.starts_with("attn_v.")
        || k.starts_with("attn_qkv.")
        || k.starts_with("attn_kv_a_mqa.")
}

impl Model {
    /// Load a `.gguf` (any shard) or profile `.toml` and analyse it.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        Self::from_profile(ModelProfile::load(path)?)
    }

    /// Analyse a profile. Errors on inconsistent input (a per-layer array of
    /// the wrong length, a tensor of an unknown ggml type, a block index past
    /// `block_count`); oddities that llama.cpp would also reject but that do
    /// not stop the analysis become [`Model::warnings`].
    pub fn from_profile(profile: ModelProfile) -> Result<Model, ModelError> {
        let arch = profile.arch.clone();
        let a = arch.as_str();
        let mut seen = HashSet::new();
        let mut bytes = Vec::with_capacity(profile.tensors.len());
        let mut max_blk: Option<u32> = None;
        let mut total = 0u64;
        for t in &profile.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(ModelError::DuplicateTensor {
                    name: t.name.clone(),
                });
            }
            let b = t.n_bytes().ok_or_else(|| ModelError::BadTensor {
                name: t.name.clone(),
                problem: if t.ty.is_known() {
                    format!(
                        "dims {:?} are not whole {} blocks or overflow",
                        t.dims, t.ty
                    )
                } else {
                    format!(
                        "unknown ggml type id {} (newer than this ggplan?): its size is unknown",
                        t.ty.0
                    )
                },
            })?;
            bytes.push(b);
            total = total.checked_add(b).ok_or_else(|| ModelError::BadTensor {
                name: t.name.clone(),
                problem: "the sum of tensor sizes overflows 64 bits".into(),
            })?;
            if let Some((il, _)) = split_block_name(&t.name) {
                max_blk = Some(max_blk.map_or(il, |m| m.max(il)));
            }
        }

        let mut cx = Ctx {
            p: &profile,
            n_layer: 0,
            warnings: Vec::new(),
        };
        if !KNOWN_ARCHS.contains(&a) {
            cx.warn(format!(
                "architecture '{a}' is not known to ggplan: layout rules are generic \
                 (attention kind from tensor names, widths from metadata and tensor shapes); \
                 bytes are exact"
            ));
        }
        let n_layer = match cx.scalar("block_count")? {
            Some(n) => to_u32(n, &cx.key("block_count"))?,
            None => {
                let n = max_blk.map_or(0, |m| m + 1);
                cx.warn(format!(
                    "no '{}' key: {n} blocks counted from tensor names",
                    cx.key("block_count")
                ));
                n
            }
        };
        if let Some(m) = max_blk {
            if m >= n_layer {
                let name = profile
                    .tensors
                    .iter()
                    .find(|t| split_block_name(&t.name).is_some_and(|(il, _)| il >= n_layer))
                    .map_or_else(String::new, |t| t.name.clone());
                return Err(ModelError::BadTensor {
                    name,
                    problem: format!("is in block {m} but block_count is {n_layer}"),
                });
            }
        }
        if n_layer > MAX_LAYERS {
            return Err(ModelError::BadKey {
                key: cx.key("block_count"),
                problem: format!(
                    "{n_layer} blocks is beyond any llama.cpp build (LLAMA_MAX_LAYERS is 512; \
                     ggplan accepts up to {MAX_LAYERS})"
                ),
            });
        }
        cx.n_layer = n_layer;
        let lt = LayerTensors::new(&profile, n_layer);
        let n = n_layer as usize;

        let n_nextn = match cx.scalar("nextn_predict_layers")? {
            Some(x) => to_u32(x, &cx.key("nextn_predict_layers"))?,
            None => 0,
        };
        if n_nextn > n_layer {
            return Err(ModelError::BadKey {
                key: cx.key("nextn_predict_layers"),
                problem: format!("{n_nextn} exceeds block_count {n_layer}"),
            });
        }
        let n_main = n_layer - n_nextn;

        let tok = profile.tensor_index("token_embd.weight");
        let tok_dims = tok.map(|i| profile.tensors[i].dims.clone());
        let n_embd = match cx.scalar("embedding_length")? {
            Some(e) => e,
            None => {
                let e = tok_dims
                    .as_ref()
                    .and_then(|d| d.first().copied())
                    .unwrap_or(0);
                cx.warn(format!(
                    "no '{}' key: n_embd {e} taken from token_embd",
                    cx.key("embedding_length")
                ));
                e
            }
        };
        let n_vocab = cx
            .scalar("vocab_size")?
            .or_else(|| {
                profile
                    .meta("tokenizer.ggml.tokens")
                    .and_then(MetaValue::len)
            })
            .or_else(|| tok_dims.as_ref().and_then(|d| d.get(1).copied()))
            .unwrap_or(0);
        let n_ctx_train = cx.scalar("context_length")?.unwrap_or(0);

        let n_head = to_u32s(
            cx.per_layer("attention.head_count")?
                .unwrap_or_else(|| vec![0; n]),
            &cx.key("attention.head_count"),
        )?;
        let mut n_head_kv = match cx.per_layer("attention.head_count_kv")? {
            Some(v) => to_u32s(v, &cx.key("attention.head_count_kv"))?,
            None => n_head.clone(),
        };
        let n_ff = cx
            .per_layer("feed_forward_length")?
            .unwrap_or_else(|| vec![0; n]);
        // llama_model_base::load_hparams: head sizes default to n_embd / n_head(0)
        // and key_length / value_length are only read when n_head(0) > 0
        // ("non-transformer models do not have attention heads").
        let (dk, dv) = match n_head.first() {
            Some(&h) if h > 0 => {
                let d = n_embd / u64::from(h);
                (
                    cx.scalar("attention.key_length")?.unwrap_or(d),
                    cx.scalar("attention.value_length")?.unwrap_or(d),
                )
            }
            _ => (0, 0),
        };
        let dk_swa = cx.scalar("attention.key_length_swa")?;
        let dv_swa = cx.scalar("attention.value_length_swa")?;
        let is_mla = cx.scalar("attention.key_length_mla")?.unwrap_or(0) != 0
            && cx.scalar("attention.value_length_mla")?.unwrap_or(0) != 0;

        // --- which layers are recurrent, which attend, which are SWA ---
        let is_hybrid = HYBRID_ARCHS.contains(&a);
        let known = KNOWN_ARCHS.contains(&a);
        let mut recurrent = vec![false; n];
        let mut attends = vec![true; n];
        match a {
            _ if RECURRENT_ARCHS.contains(&a) => {
                recurrent = (0..n_layer).map(|il| il < n_main).collect();
                attends = vec![false; n];
            }
            "jamba" | "granitehybrid" | "lfm2" | "lfm2moe" => {
                // load_arch_hparams: recurrent_layer_arr[il] = n_head_kv(il) == 0
                for il in 0..n {
                    recurrent[il] = n_head_kv[il] == 0 && (il as u32) < n_main;
                    attends[il] = n_head_kv[il] != 0;
                }
            }
            "nemotron_h" | "nemotron_h_moe" => {
                // recurrent: n_head_kv == 0 && n_ff == 0; attention: !recurrent && n_ff == 0;
                // MLP/MoE-only layers have neither (nemotron-h.cpp).
                for il in 0..n {
                    // is_recr_impl[i] = i < n_layer() && n_head_kv(i) == 0 && n_ff(i) == 0
                    let rec = (il as u32) < n_main && n_head_kv[il] == 0 && n_ff[il] == 0;
                    recurrent[il] = rec;
                    attends[il] = !rec && n_ff[il] == 0;
                }
            }
            "falcon-h1" => {
                recurrent = (0..n_layer).map(|il| il < n_main).collect();
            }
            "qwen3next" | "qwen35" | "qwen35moe" => {
                let explicit = cx.per_layer("attention.recurrent_layers")?;
                let interval = cx.scalar("full_attention_interval")?.unwrap_or(4);
                if interval == 0 && explicit.is_none() {
                    return Err(ModelError::BadKey {
                        key: cx.key("full_attention_interval"),
                        problem: "is 0".into(),
                    });
                }
                for il in 0..n_layer {
                    let i = il as usize;
                    let rec = match &explicit {
                        Some(v) => v[i] != 0,
                        None => (u64::from(il) + 1) % interval != 0,
                    } && il < n_main;
                    recurrent[i] = rec;
                    attends[i] = !rec;
                }
            }
            _ if !known => {
                // Generic: from tensor names.
                for il in 0..n_layer {
                    let i = il as usize;
                    recurrent[i] = lt.any(il, is_recurrent_tail) && il < n_main;
                    attends[i] = lt.any(il, is_attention_tail);
                }
            }
            _ => {}
        }

        let window = cx.scalar("attention.sliding_window")?;
        let mut swa = vec![false; n];
        let mut n_swa: u64 = 0;
        let swa_capable = swa_default(a).is_some() || !known;
        if a.starts_with("lfm2") {
            // lfm2: with sliding_window > 0 every attention layer is SWA.
            if let Some(w) = window.filter(|&w| w > 0) {
                n_swa = w;
                swa = attends.clone();
            }
        } else if swa_capable {
            let default = swa_default(a);
            let w = window.or(default.and_then(|d| d.1)).unwrap_or(0);
            let pattern_key = cx.key("attention.sliding_window_pattern");
            let pattern: Option<Vec<bool>> = match profile.meta(&pattern_key) {
                Some(MetaValue::Ints(_)) | Some(MetaValue::Bools(_)) => cx
                    .per_layer("attention.sliding_window_pattern")?
                    .map(|v| v.into_iter().map(|x| x != 0).collect()),
                Some(v) => {
                    let period = v.as_u64().ok_or_else(|| ModelError::BadKey {
                        key: pattern_key.clone(),
                        problem: format!(
                            "expected a period or a per-layer array, found {}",
                            v.show()
                        ),
                    })?;
                    let period = to_u32(period, &pattern_key)?;
                    Some((0..n_layer).map(|il| swa_period(period, il)).collect())
                }
                None => default
                    .map(|(period, _)| (0..n_layer).map(|il| swa_period(period, il)).collect()),
            };
            if let Some(pat) = pattern {
                if w > 0 {
                    n_swa = w;
                    swa = pat;
                } else if a != "gemma3" && pat.iter().any(|&s| s) {
                    // gemma3: sliding_window 0 or absent means no SWA; the others
                    // require the key (llama.cpp fails to load without it).
                    cx.warn(format!(
                        "'{}' is missing or 0: SWA layers treated as full attention",
                        cx.key("attention.sliding_window")
                    ));
                }
            }
        }
        let window_u32 = to_u32(n_swa, &cx.key("attention.sliding_window"))?;

        // --- per-layer head sizes and KV widths ---
        let mut head_dim_k = vec![0u32; n];
        let mut head_dim_v = vec![0u32; n];
        for i in 0..n {
            let (k, v) = if swa[i] {
                (dk_swa.unwrap_or(dk), dv_swa.unwrap_or(dv))
            } else {
                (dk, dv)
            };
            head_dim_k[i] = to_u32(k, &cx.key("attention.key_length"))?;
            head_dim_v[i] = to_u32(v, &cx.key("attention.value_length"))?;
        }

        let nextn_kv = nextn_kv_allocated(a);
        let mut blocks = Vec::with_capacity(n);
        for il in 0..n_layer {
            let i = il as usize;
            let nextn = il >= n_main;
            let attention = if !attends[i] {
                if recurrent[i] {
                    AttentionKind::Recurrent
                } else if nextn && is_hybrid {
                    // MTP block of a hybrid: an attention block without KV cells.
                    AttentionKind::Full
                } else {
                    AttentionKind::None
                }
            } else if is_mla {
                AttentionKind::Mla
            } else if swa[i] {
                AttentionKind::Swa { window: window_u32 }
            } else {
                AttentionKind::Full
            };
            let kv_layer = attends[i] && (!nextn || nextn_kv);
            // Widths are those of the layer's K/V rows whenever it attends
            // (NextN blocks included); `has_kv` says whether the main context
            // allocates cells for them.
            let (mut k_width, mut v_width) = (0u64, 0u64);
            if attends[i] {
                let hkv = u64::from(n_head_kv[i]);
                k_width = u64::from(head_dim_k[i]) * hkv;
                v_width = if is_mla {
                    0
                } else {
                    u64::from(head_dim_v[i]) * hkv
                };
                // Cross-check against the tensors that produce K and V.
                let checks: &[(&str, bool)] = if is_mla {
                    &[("attn_kv_a_mqa.weight", true)]
                } else {
                    &[("attn_k.weight", true), ("attn_v.weight", false)]
                };
                for &(tname, is_k) in checks {
                    if let Some(w) = lt.width(il, tname) {
                        let meta = if is_k { k_width } else { v_width };
                        if w != meta {
                            cx.warn(format!(
                                "block {il}: metadata gives a {} width of {meta} but blk.{il}.{tname} \
                                 has {w} columns (llama.cpp would reject this shape); using {w}",
                                if is_k { "K" } else { "V" }
                            ));
                            if is_k {
                                k_width = w;
                                if head_dim_k[i] > 0 && w % u64::from(head_dim_k[i]) == 0 {
                                    n_head_kv[i] = to_u32(
                                        w / u64::from(head_dim_k[i]),
                                        &cx.key("attention.head_count_kv"),
                                    )?;
                                }
                            } else {
                                v_width = w;
                            }
                        }
                    }
                }
            }
            blocks.push(Block {
                index: il,
                attention,
                nextn,
                has_kv: kv_layer,
                k_width,
                v_width,
                recurrent: recurrent[i],
                bytes: BTreeMap::new(),
                skipped_bytes: 0,
            });
        }

        // --- recurrent state widths (llama_hparams::n_embd_r / n_embd_s) ---
        let (mut n_embd_r, mut n_embd_s) = (0u64, 0u64);
        if let Some(first_rec) = recurrent.iter().position(|&r| r) {
            let wkv = cx.scalar("wkv.head_size")?.unwrap_or(0);
            let l_cache = cx.scalar("shortconv.l_cache")?.unwrap_or(0);
            if wkv != 0 {
                let shift = cx.scalar("token_shift_count")?.unwrap_or(2);
                n_embd_r = shift.saturating_mul(n_embd);
                n_embd_s = n_embd.saturating_mul(wkv);
            } else if l_cache != 0 {
                n_embd_r = n_embd.saturating_mul(l_cache - 1);
            } else {
                let d_conv = cx.scalar("ssm.conv_kernel")?.unwrap_or(0);
                let d_inner = cx.scalar("ssm.inner_size")?.unwrap_or(0);
                let d_state = cx.scalar("ssm.state_size")?.unwrap_or(0);
                let n_group = cx.scalar("ssm.group_count")?.unwrap_or(0);
                // Saturating: the inputs are untrusted metadata.
                n_embd_r = d_conv.saturating_sub(1).saturating_mul(
                    d_inner.saturating_add(n_group.saturating_mul(d_state).saturating_mul(2)),
                );
                n_embd_s = d_state.saturating_mul(d_inner);
                if n_embd_s == 0 {
                    // Mamba1 stores A as [d_state, d_inner].
                    if let Some(t) = lt.get(first_rec as u32, "ssm_a") {
                        if t.dims.len() == 2 {
                            n_embd_s = t.dims[0].saturating_mul(t.dims[1]);
                        }
                    }
                    if n_embd_s == 0 && wkv == 0 {
                        cx.warn(format!(
                            "no '{}'/'{}' keys: the recurrent S state width is unknown (counted as 0)",
                            cx.key("ssm.state_size"),
                            cx.key("ssm.inner_size")
                        ));
                    }
                }
            }
            // Cross-check R with the conv weight [d_conv, channels]:
            // R = (d_conv - 1) * channels.
            let il = first_rec as u32;
            let conv = lt
                .get(il, "ssm_conv1d.weight")
                .or_else(|| lt.get(il, "shortconv.conv.weight"));
            if let Some(t) = conv.filter(|t| t.dims.len() == 2 && t.dims[0] > 0) {
                let r = (t.dims[0] - 1).saturating_mul(t.dims[1]);
                if r != n_embd_r {
                    cx.warn(format!(
                        "recurrent R width from metadata is {n_embd_r} but {} implies {r}; using {r}",
                        t.name
                    ));
                    n_embd_r = r;
                }
            }
        }

        // --- experts ---
        let exps = profile.tensors.iter().find(|t| {
            t.name.ends_with("ffn_up_exps.weight") || t.name.ends_with("ffn_gate_exps.weight")
        });
        let n_expert = match cx.scalar("expert_count")? {
            Some(x) => to_u32(x, &cx.key("expert_count"))?,
            None => exps
                .and_then(|t| t.dims.get(2).copied())
                .map_or(Ok(0), |x| to_u32(x, "ffn_*_exps dims[2]"))?,
        };
        // Both may be per-layer arrays (get_key_or_arr); the largest layer is reported.
        let n_expert_used = match cx.per_layer("expert_used_count")? {
            Some(v) => to_u32(
                v.into_iter().max().unwrap_or(0),
                &cx.key("expert_used_count"),
            )?,
            None => 0,
        };
        let n_ff_exp = cx
            .per_layer("expert_feed_forward_length")?
            .and_then(|v| v.into_iter().max())
            .or_else(|| exps.and_then(|t| t.dims.get(1).copied()))
            .unwrap_or(0);
        let shexp = profile
            .tensors
            .iter()
            .find(|t| t.name.ends_with("ffn_up_shexp.weight"));
        let n_expert_shared = match cx.scalar("expert_shared_count")? {
            Some(x) => to_u32(x, &cx.key("expert_shared_count"))?,
            None => u32::from(shexp.is_some()),
        };
        let n_ff_shexp = cx
            .scalar("expert_shared_feed_forward_length")?
            .or_else(|| shexp.and_then(|t| t.dims.get(1).copied()))
            .unwrap_or(0);

        // --- tensors: class, group, skipped, bytes ---
        let skip_nextn = NEXTN_WEIGHTS_SKIPPED;
        let mut tensors = Vec::with_capacity(profile.tensors.len());
        for (index, t) in profile.tensors.iter().enumerate() {
            let mut class = classify_name(a, &t.name);
            let mut skipped = false;
            if let TensorClass::Layer { layer, group } = &mut class {
                let b = &mut blocks[*layer as usize];
                // Mixer weights of a purely recurrent layer (qwen3next GDN's
                // attn_qkv / attn_gate) are recurrent weights, not attention.
                if *group == TensorGroup::Attention
                    && b.recurrent
                    && !matches!(
                        b.attention,
                        AttentionKind::Full | AttentionKind::Swa { .. } | AttentionKind::Mla
                    )
                {
                    *group = TensorGroup::Recurrent;
                }
                skipped = b.nextn && skip_nextn;
                if skipped {
                    b.skipped_bytes += bytes[index];
                } else {
                    *b.bytes.entry(*group).or_default() += bytes[index];
                }
            }
            tensors.push(Tensor {
                index,
                class,
                skipped,
                bytes: bytes[index],
            });
        }
        let tied_embeddings = profile.tensor_index("output.weight").is_none();

        let hparams = HParams {
            n_layer,
            n_nextn,
            n_embd,
            n_vocab,
            n_ctx_train,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            n_expert,
            n_expert_used,
            n_ff_exp,
            n_expert_shared,
            n_ff_shexp,
            n_embd_r,
            n_embd_s,
            tied_embeddings,
        };
        let warnings = cx.warnings;
        Ok(Model {
            profile,
            hparams,
            blocks,
            tensors,
            warnings,
        })
    }

    /// The stored entry of an analysed tensor.
    pub fn entry(&self, t: &Tensor) -> &TensorEntry {
        &self.profile.tensors[t.index]
    }

    /// Blocks that are not NextN/MTP (`n_layer()` in llama.cpp).
    pub fn n_layer_main(&self) -> u32 {
        self.hparams.n_layer - self.hparams.n_nextn
    }

    /// Sum over every tensor in the file(s), skipped ones included.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// Bytes llama.cpp does not allocate (`TENSOR_SKIP`).
    pub fn skipped_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.skipped)
            .map(|t| t.bytes)
            .sum()
    }

    /// Bytes of the input-class tensors (`token_embd` …: always on the CPU).
    pub fn input_bytes(&self) -> u64 {
        self.class_bytes(|c| matches!(c, TensorClass::Input))
    }

    /// Bytes of the output-class tensors (`output`, `output_norm` …), not
    /// counting the duplicate of `token_embd` that tied embeddings need.
    pub fn output_bytes(&self) -> u64 {
        self.class_bytes(|c| matches!(c, TensorClass::Output))
    }

    fn class_bytes(&self, f: impl Fn(&TensorClass) -> bool) -> u64 {
        self.tensors
            .iter()
            .filter(|t| f(&t.class))
            .map(|t| t.bytes)
            .sum()
    }

    /// Number of parameters (elements) over every tensor.
    pub fn params(&self) -> u64 {
        self.profile
            .tensors
            .iter()
            .map(|t| t.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d)))
            .fold(0u64, u64::saturating_add)
    }

    /// KV bytes per token (one cell in every layer that has KV), for the given
    /// cache types: `row_size(type_k, k_width) + row_size(type_v, v_width)`
    /// summed over layers (llama_kv_cache). `None` if a width is not a whole
    /// number of the type's blocks (llama.cpp rejects that combination).
    pub fn kv_bytes_per_token(&self, type_k: GgmlType, type_v: GgmlType) -> Option<u64> {
        self.blocks
            .iter()
            .filter(|b| b.has_kv)
            .try_fold(0u64, |acc, b| {
                let k = type_k.row_size(b.k_width)?;
                let v = if b.v_width == 0 {
                    0
                } else {
                    type_v.row_size(b.v_width)?
                };
                acc.checked_add(k)?.checked_add(v)
            })
    }

    /// KV bytes per token with the default f16 cache.
    pub fn kv_bytes_per_token_f16(&self) -> u64 {
        self.blocks
            .iter()
            .filter(|b| b.has_kv)
            .map(|b| b.kv_bytes_per_token_f16())
            .fold(0u64, u64::saturating_add)
    }

    /// Recurrent state bytes per sequence: `4 · (n_embd_r + n_embd_s)` (F32)
    /// for every recurrent layer (llama_memory_recurrent, no rollback rows).
    pub fn recurrent_bytes_per_seq(&self) -> u64 {
        let per_layer = self
            .hparams
            .n_embd_r
            .saturating_add(self.hparams.n_embd_s)
            .saturating_mul(4);
        (self.blocks.iter().filter(|b| b.recurrent).count() as u64).saturating_mul(per_layer)
    }

    /// Total bytes per ggml type, over every tensor.
    pub fn bytes_by_type(&self) -> BTreeMap<GgmlType, u64> {
        let mut m = BTreeMap::new();
        for t in &self.tensors {
            *m.entry(self.profile.tensors[t.index].ty).or_default() += t.bytes;
        }
        m
    }
}

impl Block {
    /// Allocated bytes of this block (all groups).
    pub fn total_bytes(&self) -> u64 {
        self.bytes.values().sum()
    }

    /// Bytes of one group (0 if absent).
    pub fn group_bytes(&self, g: TensorGroup) -> u64 {
        self.bytes.get(&g).copied().unwrap_or(0)
    }

    /// f16 KV bytes per token of this layer (0 without KV).
    pub fn kv_bytes_per_token_f16(&self) -> u64 {
        if self.has_kv {
            self.k_width.saturating_add(self.v_width).saturating_mul(2)
        } else {
            0
        }
    }
}

impl AttentionKind {
    /// The `--json` spelling: `full|swa|mla|recurrent|none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttentionKind::Full => "full",
            AttentionKind::Swa { .. } => "swa",
            AttentionKind::Mla => "mla",
            AttentionKind::Recurrent => "recurrent",
            AttentionKind::None => "none",
        }
    }
}

impl TensorGroup {
    /// Every group, in display order.
    pub const ALL: [TensorGroup; 8] = [
        TensorGroup::Attention,
        TensorGroup::Norm,
        TensorGroup::FfnDense,
        TensorGroup::FfnRouted,
        TensorGroup::FfnShared,
        TensorGroup::Router,
        TensorGroup::Recurrent,
        TensorGroup::Other,
    ];

    /// The `--json` key.
    pub fn as_str(&self) -> &'static str {
        match self {
            TensorGroup::Attention => "attention",
            TensorGroup::Norm => "norm",
            TensorGroup::FfnDense => "ffn_dense",
            TensorGroup::FfnRouted => "ffn_routed",
            TensorGroup::FfnShared => "ffn_shared",
            TensorGroup::Router => "router",
            TensorGroup::Recurrent => "recurrent",
            TensorGroup::Other => "other",
        }
    }
}

impl Model {
    /// Why the layout is what it is: which llama.cpp rule and which metadata
    /// key (or default) produced the attention kinds, widths and NextN
    /// handling. One line per fact, for `inspect --explain`.
    pub fn explain(&self) -> Vec<String> {
        let p = &self.profile;
        let a = p.arch.as_str();
        let hp = &self.hparams;
        let has = |suffix: &str| p.arch_meta(suffix).is_some();
        let mut out = Vec::new();
        let family = if RECURRENT_ARCHS.contains(&a) {
            "recurrent (llm_arch_is_recurrent): every layer keeps state, no KV cache"
        } else if HYBRID_ARCHS.contains(&a) {
            match a {
                "nemotron_h" | "nemotron_h_moe" => {
                    "hybrid: recurrent where head_count_kv[il] == 0 && feed_forward_length[il] == 0, \
                     attention where not recurrent && feed_forward_length[il] == 0, else FFN only \
                     (nemotron-h.cpp)"
                }
                "qwen3next" | "qwen35" | "qwen35moe" => {
                    if has("attention.recurrent_layers") {
                        "hybrid: recurrent layers from attention.recurrent_layers"
                    } else {
                        "hybrid: recurrent unless (il + 1) % full_attention_interval == 0 \
                         (default interval 4), MTP blocks excluded (qwen3next.cpp)"
                    }
                }
                "falcon-h1" => "hybrid: every layer has both attention and recurrent state",
                _ => "hybrid: recurrent where head_count_kv[il] == 0 (load_arch_hparams)",
            }
        } else if KNOWN_ARCHS.contains(&a) {
            "transformer: every layer attends"
        } else {
            "unknown architecture: attention from attn_q/k/v tensors, recurrence from ssm_*/shortconv/time_mix tensors"
        };
        out.push(format!("{a}: {family}"));
        if self
            .blocks
            .iter()
            .any(|b| b.attention == AttentionKind::Mla)
        {
            out.push(
                "MLA (key_length_mla and value_length_mla present, llama_hparams::is_mla): \
                 K cache only, width key_length × head_count_kv, no V cache"
                    .into(),
            );
        }
        let swa: Vec<&Block> = self
            .blocks
            .iter()
            .filter(|b| matches!(b.attention, AttentionKind::Swa { .. }))
            .collect();
        if let Some(AttentionKind::Swa { window }) = swa.first().map(|b| b.attention) {
            let src = match p.arch_meta("attention.sliding_window_pattern") {
                Some(MetaValue::Ints(_) | MetaValue::Bools(_)) => {
                    "per-layer attention.sliding_window_pattern".to_string()
                }
                Some(v) => format!("attention.sliding_window_pattern = {}", v.show()),
                None => match swa_default(a) {
                    Some((n, _)) => {
                        format!("llama.cpp's default period {n} for {a} (load_swa_pattern)")
                    }
                    None => "every attention layer (sliding_window > 0)".into(),
                },
            };
            let wsrc = if has("attention.sliding_window") {
                "attention.sliding_window"
            } else {
                "llama.cpp's default"
            };
            out.push(format!(
                "SWA on {} of {} layers from {src}; window {window} from {wsrc}",
                swa.len(),
                hp.n_layer
            ));
        }
        if let Some(b) = self.blocks.iter().find(|b| b.has_kv) {
            let i = b.index as usize;
            let dk = if has("attention.key_length") {
                "attention.key_length"
            } else {
                "n_embd / head_count"
            };
            let hkv = match p.arch_meta("attention.head_count_kv") {
                Some(MetaValue::Ints(_)) => "per-layer attention.head_count_kv",
                Some(_) => "attention.head_count_kv",
                None => "head_count (no head_count_kv key)",
            };
            out.push(format!(
                "KV widths: head size {} from {dk}, {} KV heads from {hkv} (block {i}: K {} + V {} elements)",
                hp.head_dim_k[i], hp.n_head_kv[i], b.k_width, b.v_width
            ));
        }
        if hp.n_nextn > 0 {
            out.push(format!(
                "the last {} of {} blocks are NextN/MTP (nextn_predict_layers): weights TENSOR_SKIP \
                 unless --spec-type draft-mtp; KV cells {}",
                hp.n_nextn,
                hp.n_layer,
                if self.blocks.iter().any(|b| b.nextn && b.has_kv) {
                    "allocated (nemotron_h attention filter has no il < n_layer() bound)"
                } else {
                    "not allocated in the main context (create_memory filters il < n_layer())"
                }
            ));
        }
        if self.blocks.iter().any(|b| b.recurrent) {
            out.push(format!(
                "recurrent state per layer and sequence: R {} + S {} F32 elements \
                 (llama_hparams::n_embd_r / n_embd_s)",
                hp.n_embd_r, hp.n_embd_s
            ));
        }
        out.push(if hp.tied_embeddings {
            "no output.weight: the output layer reuses token_embd (TENSOR_DUPLICATED: a second copy \
             where the output layer sits on another device)"
                .into()
        } else {
            "output.weight present (untied embeddings)".into()
        });
        out
    }
}
