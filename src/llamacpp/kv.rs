//! KV cache and recurrent state sizes per buffer type (§3):
//! `llama_kv_cache::llama_kv_cache`, `llama_kv_cache_iswa`,
//! `llama_memory_recurrent`, and the cache-type checks of `llama_init_from_model`.

use std::collections::BTreeMap;

use crate::gguf::GgmlType;
use crate::model::{AttentionKind, Model};
use crate::units::pad;

use super::build::LlamaBuild;
use super::context::CtxParams;
use super::device::Device;
use super::error::SimError;
use super::flags::Flags;
use super::place::Buft;

/// What the cache looks like (for reports and the compute graph).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvLayout {
    /// Cells per stream of the non-SWA cache (= n_ctx_seq).
    pub cells: u64,
    /// Cells per stream of the SWA cache, if the model has SWA layers.
    pub cells_swa: Option<u64>,
    pub n_stream: u64,
    /// Recurrent rows (`max(1, n_seq_max)`).
    pub rs_rows: u64,
    /// V width used for every layer when V is transposed and widths differ
    /// (`n_embd_v_gqa_max`), else `None`.
    pub v_width_max: Option<u64>,
}

/// Per-layer cells (per stream) of the cache the layer belongs to.
pub fn layer_cells(kind: AttentionKind, layout: &KvLayout) -> u64 {
    match kind {
        AttentionKind::Swa { .. } => layout.cells_swa.unwrap_or(layout.cells),
        _ => layout.cells,
    }
}

/// Check the cache types llama.cpp accepts (llama_init_from_model).
pub fn check_cache_types(model: &Model, flags: &Flags, ctx: &CtxParams) -> Result<(), SimError> {
    let (tk, tv) = (flags.cache_type_k, flags.cache_type_v);
    if tv.is_quantized() && !ctx.flash_attn {
        return Err(SimError::QuantizedVNeedsFa(
            tv.name().unwrap_or("?").to_string(),
        ));
    }
    let mla = model
        .blocks
        .iter()
        .any(|b| b.attention == AttentionKind::Mla);
    if mla && tk != tv {
        return Err(SimError::Unsupported(
            "MLA models need the same K and V cache types (-ctk == -ctv)".into(),
        ));
    }
    if ctx.flash_attn {
        // With FA, quantized K/V need head sizes that are a multiple of the
        // block size.
        let blck = |t: GgmlType| t.traits().map(|tr| tr.block_elems).unwrap_or(1);
        for (il, (&dk, &dv)) in model
            .hparams
            .head_dim_k
            .iter()
            .zip(&model.hparams.head_dim_v)
            .enumerate()
        {
            if tk.is_quantized() && u64::from(dk) % blck(tk) != 0 {
                return Err(SimError::Unsupported(format!(
                    "layer {il}: K head size {dk} is not a multiple of the -ctk block size"
                )));
            }
            if tv.is_quantized() && !mla && u64::from(dv) % blck(tv) != 0 {
                return Err(SimError::Unsupported(format!(
                    "layer {il}: V head size {dv} is not a multiple of the -ctv block size"
                )));
            }
        }
    }
    Ok(())
}

/// The cache layout for a model and context.
/// Cells of one stream of a sliding-window cache (without `--swa-full`):
/// llama_kv_cache_iswa's ctor, `size_swa = PAD(min(size_base, n_swa·(unified
/// ? n_seq_max : 1) + n_ubatch), pad)`.
pub fn swa_cells(
    n_ctx_seq: u64,
    window: u64,
    kv_unified: bool,
    n_seq_max: u64,
    n_ubatch: u64,
    pad: u64,
) -> u64 {
    let per = if kv_unified { n_seq_max } else { 1 };
    n_ctx_seq.min(window * per + n_ubatch).div_ceil(pad) * pad
}

pub fn layout(model: &Model, ctx: &CtxParams, flags: &Flags, build: LlamaBuild) -> KvLayout {
    let swa_window = model.blocks.iter().find_map(|b| match b.attention {
        AttentionKind::Swa { window } => Some(u64::from(window)),
        _ => None,
    });
    let cells_swa = swa_window.map(|w| {
        if flags.swa_full {
            ctx.n_ctx_seq
        } else {
            swa_cells(
                ctx.n_ctx_seq,
                w,
                ctx.kv_unified,
                ctx.n_seq_max,
                ctx.n_ubatch,
                build.ctx_pad(),
            )
        }
    });
    // n_embd_v_gqa_max: V transposed (FA off) and widths differ across layers.
    let widths: Vec<u64> = model
        .blocks
        .iter()
        .filter(|b| b.has_kv && b.v_width > 0)
        .map(|b| b.v_width)
        .collect();
    let v_width_max = match (widths.iter().max(), widths.iter().min()) {
        (Some(&mx), Some(&mn)) if ctx.v_trans && mx != mn => Some(mx),
        _ => None,
    };
    KvLayout {
        cells: ctx.n_ctx_seq,
        cells_swa,
        n_stream: ctx.n_stream,
        rs_rows: ctx.n_seq_max.max(1),
        v_width_max,
    }
}

/// KV and recurrent bytes per buffer type. The buffer of layer `il` is the
/// default buft of its device, or plain `CPU` for CPU layers and `-nkvo`.
pub fn context_bytes(
    model: &Model,
    flags: &Flags,
    layout: &KvLayout,
    layer_device: &[Option<usize>],
    devices: &[Device],
) -> BTreeMap<Buft, u64> {
    let mut out: BTreeMap<Buft, u64> = BTreeMap::new();
    let n_main = model.hparams.n_layer.saturating_sub(model.hparams.n_nextn);
    for b in &model.blocks {
        let dev = if flags.no_kv_offload {
            None
        } else {
            layer_device.get(b.index as usize).copied().flatten()
        };
        let buft = dev.map_or(Buft::Cpu, Buft::Dev);
        let align = buft.alignment(devices);
        let mut add = |bytes: u64| {
            if bytes > 0 {
                *out.entry(buft).or_default() += pad(bytes, align);
            }
        };
        if b.has_kv && b.k_width > 0 {
            let cells = layer_cells(b.attention, layout) * layout.n_stream;
            let k = flags.cache_type_k.row_size(b.k_width).unwrap_or(0) * cells;
            add(k);
            if b.v_width > 0 && b.attention != AttentionKind::Mla {
                let w = layout.v_width_max.unwrap_or(b.v_width);
                add(flags.cache_type_v.row_size(w).unwrap_or(0) * cells);
            }
        }
        // llama_memory_recurrent: R and S in F32, one row per sequence,
        // layers < n_layer() only.
        if b.recurrent && b.index < n_main {
            add(4 * model.hparams.n_embd_r * layout.rs_rows);
            add(4 * model.hparams.n_embd_s * layout.rs_rows);
        }
    }
    out
}
