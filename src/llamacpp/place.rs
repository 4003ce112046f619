//! Placement: model devices, layer → device, tensor → buffer type, and the
//! weight bytes each buffer type holds (§1, §2 of the internals notes).

use std::collections::BTreeMap;

use crate::gguf::GgmlType;
use crate::model::{Model, TensorClass, TensorGroup};
use crate::units::pad;

use super::build::LlamaBuild;
use super::device::Device;
use super::error::SimError;
use super::flags::{Flags, GpuLayers, SplitMode, TensorOverride};

/// Alignment of every host buffer type (`TENSOR_ALIGNMENT`, ggml-impl.h).
pub const HOST_ALIGNMENT: u64 = 32;

/// A buffer type. Device indices point into the hardware device list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buft {
    /// The device's default buffer type (`CUDA0`, `RPC0[host:port]`).
    Dev(usize),
    /// `-sm row` split buffer of a device (`CUDA0_Split`, builds before #24216).
    Split(usize),
    /// Pinned host memory of a device (`CUDA_Host`).
    Host(usize),
    /// `CPU_REPACK` (ggml-cpu/repack.cpp).
    Repack,
    /// Plain `CPU` (malloc).
    Cpu,
    /// `CPU_Mapped`: the file mapping (size = span, §1.11).
    Mapped,
}

impl Buft {
    /// The device owning the memory (`None` = host).
    pub fn device(self) -> Option<usize> {
        match self {
            Buft::Dev(d) | Buft::Split(d) => Some(d),
            _ => None,
        }
    }

    pub fn name(self, devices: &[Device]) -> String {
        match self {
            Buft::Dev(d) => devices[d].buft.clone(),
            Buft::Split(d) => format!("{}_Split", devices[d].name),
            Buft::Host(d) => devices[d].kind.host_buft().unwrap_or("CPU").to_string(),
            Buft::Repack => "CPU_REPACK".into(),
            Buft::Cpu => "CPU".into(),
            Buft::Mapped => "CPU_Mapped".into(),
        }
    }

    pub fn alignment(self, devices: &[Device]) -> u64 {
        match self {
            Buft::Dev(d) | Buft::Split(d) => devices[d].kind.alignment(),
            _ => HOST_ALIGNMENT,
        }
    }
}

/// SIMD level of the host CPU: decides which types `CPU_REPACK` takes
/// (`ggml_repack_get_optimal_repack_type`, ggml-cpu/repack.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostCpu {
    /// x86-64 with AVX2 (the oracle machine).
    #[default]
    Avx2,
    Avx512,
    /// AArch64 NEON with dotprod/i8mm.
    Neon,
    /// No repack kernels.
    Generic,
}

impl HostCpu {
    /// Whether a weight of this type and shape is repacked. Only matters for
    /// *which* host buffer holds it (same bytes, same alignment).
    fn repacks(self, ty: GgmlType, dims: &[u64]) -> bool {
        let ne1 = dims.get(1).copied().unwrap_or(1);
        let x86 = matches!(self, HostCpu::Avx2 | HostCpu::Avx512);
        match ty {
            GgmlType::Q4_0 | GgmlType::IQ4_NL | GgmlType::MXFP4 => {
                (x86 || self == HostCpu::Neon) && ne1 % 4 == 0
            }
            GgmlType::Q4_K => (x86 || self == HostCpu::Neon) && ne1 % 8 == 0,
            GgmlType::Q2_K => self == HostCpu::Avx512 && ne1 % 8 == 0,
            GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q8_0 => {
                self == HostCpu::Neon && ne1 % 4 == 0
            }
            _ => false,
        }
    }
}

/// The placement of a model: which devices llama.cpp uses, where each layer
/// and tensor goes, and the weight bytes per buffer type.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `model->devices`: indices into the hardware device list, in llama.cpp order.
    pub model_devices: Vec<usize>,
    /// Device of layers 0..=L (index L = the output layer); `None` = CPU.
    pub layer_device: Vec<Option<usize>>,
    /// Buffer type of every tensor (same order as `model.tensors`; `None` = skipped).
    pub tensor_buft: Vec<Option<Buft>>,
    /// Weight bytes per buffer type (padded as allocated; `CPU_Mapped` = span).
    pub weights: BTreeMap<Buft, u64>,
    /// First model device with a pinned host buffer type (CPU buft list), if used.
    pub host_buft: Option<usize>,
    pub use_mmap: bool,
}

/// The simple devices `-sm tensor` wraps into its Meta device
/// (`llama_prepare_model_devices`, src/llama.cpp): the `-dev` list, else
/// every registered device whose buffer type is not the CPU's, in registry
/// order (the hardware file's order here; not RPC-first as with the other
/// split modes).
pub fn tensor_group(devices: &[Device], flags: &Flags) -> Result<Vec<usize>, SimError> {
    let out = match &flags.devices {
        Some(names) => resolve_devices(devices, names)?,
        None => (0..devices.len()).collect(),
    };
    if out.is_empty() {
        return Err(SimError::SmTensorNoDevices);
    }
    Ok(out)
}

fn resolve_devices(devices: &[Device], names: &[String]) -> Result<Vec<usize>, SimError> {
    names
        .iter()
        .map(|n| {
            devices
                .iter()
                .position(|d| &d.name == n || &d.buft == n)
                .ok_or_else(|| SimError::UnknownDevice(n.clone()))
        })
        .collect()
}

/// `llama_prepare_model_devices` (src/llama.cpp): `-dev` list, else RPC
/// devices first then the other GPUs; `-sm none` keeps `devices[main_gpu]`.
/// `-sm tensor` has one model device, the Meta device; it is represented by
/// the first device of [`tensor_group`] (the split onto the others is
/// applied afterwards, [`super::tensor_split`]).
pub fn model_devices(devices: &[Device], flags: &Flags) -> Result<Vec<usize>, SimError> {
    if flags.split_mode == SplitMode::Tensor {
        return Ok(tensor_group(devices, flags)?.into_iter().take(1).collect());
    }
    let mut out = match &flags.devices {
        Some(names) => resolve_devices(devices, names)?,
        None => {
            let rpc = (0..devices.len()).filter(|&i| devices[i].kind == super::BackendKind::Rpc);
            let gpu = (0..devices.len()).filter(|&i| devices[i].kind != super::BackendKind::Rpc);
            rpc.chain(gpu).collect()
        }
    };
    if flags.split_mode == SplitMode::None {
        if flags.main_gpu < 0 {
            out.clear();
        } else {
            let mg = flags.main_gpu as usize;
            let d = *out.get(mg).ok_or(SimError::MainGpu {
                main_gpu: flags.main_gpu,
                n: out.len(),
            })?;
            out = vec![d];
        }
    }
    Ok(out)
}

/// `llama_model_base::load_tensors`: the device of each layer 0..=L.
pub fn layer_devices(
    n_layer: u32,
    model_devices: &[usize],
    devices: &[Device],
    flags: &Flags,
    build: LlamaBuild,
) -> Vec<Option<usize>> {
    let l = i64::from(n_layer);
    let ngl: i64 = match flags.gpu_layers {
        GpuLayers::Auto | GpuLayers::All => l + 1,
        GpuLayers::N(n) => i64::from(n),
    };
    let (i_gpu_start, act) = gpu_range(n_layer, ngl, model_devices.len(), build);
    // Cumulative, normalised split in f32 as llama.cpp computes it: -ts, else
    // free memory per device (a device reporting 0 uses host free memory;
    // not modelled, such a device gets weight 0).
    let n = model_devices.len();
    let splits: Vec<f32> = if flags.tensor_split.iter().take(n).any(|&x| x != 0.0) {
        (0..n)
            .map(|i| flags.tensor_split.get(i).copied().unwrap_or(0.0) as f32)
            .collect()
    } else {
        model_devices
            .iter()
            .map(|&d| devices[d].free_bytes as f32)
            .collect()
    };
    assign_layers(l, i_gpu_start, act, &splits)
        .into_iter()
        .map(|k| k.map(|k| model_devices[k]))
        .collect()
}

/// `load_tensors`' offloaded range for `-ngl ngl` (a count; auto/all =
/// L+1) over `n_model_devices`: `(i_gpu_start, act)`, layers
/// `i_gpu_start .. i_gpu_start+act` of `0..=L` go to the devices. After PR
/// #18148 the output layer is counted first: `i_gpu_start = L+1-ngl`;
/// before, `L-ngl`. No model device: nothing is offloaded.
pub fn gpu_range(n_layer: u32, ngl: i64, n_model_devices: usize, build: LlamaBuild) -> (i64, i64) {
    let l = i64::from(n_layer);
    let i_gpu_start = if build.ngl_output_first() {
        (l + 1 - ngl).max(0)
    } else {
        (l - ngl).max(0)
    };
    let act = if n_model_devices == 0 {
        0
    } else {
        ngl.min(l + 1)
    };
    (i_gpu_start, act)
}

/// The `-sm layer` split of `load_tensors`: layer `il` of `0..=l` (`l` = the
/// output layer) goes to the first model device whose cumulative,
/// normalised weight (f32, as llama.cpp computes it) is strictly greater
/// than `(il - i_gpu_start) / act` (`std::upper_bound`); layers outside
/// `[i_gpu_start, i_gpu_start + act)` stay on the CPU (`None`). `weights` are
/// the `-ts` values or each device's free memory. Returns indices into
/// `weights`. Shared by the simulator and the planner's `-ts` synthesis, so
/// the rule exists once.
pub fn assign_layers(l: i64, i_gpu_start: i64, act: i64, weights: &[f32]) -> Vec<Option<usize>> {
    let n = weights.len();
    let mut splits = weights.to_vec();
    let mut sum = 0f32;
    for s in splits.iter_mut() {
        sum += *s;
        *s = sum;
    }
    if sum > 0.0 {
        for s in splits.iter_mut() {
            *s /= sum;
        }
    }
    (0..=l)
        .map(|il| {
            if il < i_gpu_start || il - i_gpu_start >= act || n == 0 {
                return None;
            }
            let x = (il - i_gpu_start) as f32 / act as f32;
            // std::upper_bound: first split strictly greater than x.
            let k = splits.iter().position(|&s| s > x).unwrap_or(n - 1);
            Some(k.min(n - 1))
        })
        .collect()
}

/// The per-tensor facts placement needs.
struct TensorView<'a> {
    name: &'a str,
    ty: GgmlType,
    dims: &'a [u64],
    nbytes: u64,
    /// A MUL_MAT / MUL_MAT_ID weight (repack only applies to those).
    matmul: bool,
}

fn is_matmul_weight(name: &str, class: TensorClass, dims: &[u64]) -> bool {
    if matches!(class, TensorClass::Input) || dims.len() < 2 || dims[1] <= 1 {
        return false;
    }
    if !name.ends_with(".weight") {
        return false;
    }
    match class {
        TensorClass::Layer { group, .. } => !matches!(group, TensorGroup::Norm),
        _ => !name.contains("norm"),
    }
}

pub struct Placer<'a> {
    pub devices: &'a [Device],
    pub flags: &'a Flags,
    pub host_cpu: HostCpu,
    pub host_buft: Option<usize>,
    pub use_mmap: bool,
}

impl Placer<'_> {
    /// `select_weight_buft` over `make_cpu_buft_list`: pinned host buft of the
    /// first model device that has one (unless `--no-host`), then `CPU_REPACK`
    /// (if the tensor is repackable and repack is on), then `CPU`.
    fn cpu_buft(&self, t: &TensorView) -> Buft {
        if let Some(d) = self.host_buft {
            // mmap substitution (loader create_tensor): a host buft is
            // replaced by plain CPU, which is then backed by the mapping.
            return if self.use_mmap {
                Buft::Mapped
            } else {
                Buft::Host(d)
            };
        }
        if self.flags.repack && t.matmul && self.host_cpu.repacks(t.ty, t.dims) {
            return Buft::Repack;
        }
        if self.use_mmap {
            Buft::Mapped
        } else {
            Buft::Cpu
        }
    }

    fn override_target(&self, ov: &TensorOverride) -> Result<Option<usize>, SimError> {
        if ov.target == "CPU" {
            return Ok(None);
        }
        self.devices
            .iter()
            .position(|d| d.name == ov.target || d.buft == ov.target)
            .map(Some)
            .ok_or_else(|| SimError::UnknownBufferType {
                name: ov.target.clone(),
                available: std::iter::once("CPU".to_string())
                    .chain(self.devices.iter().map(|d| d.buft.clone()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `buft_for_tensor` (llama_model_loader::create_tensor): overrides in
    /// order (first match wins), else the layer's list.
    fn buft_for(&self, t: &TensorView, layer_dev: Option<usize>) -> Result<Buft, SimError> {
        for ov in &self.flags.overrides {
            if ov.pattern.is_match(t.name) {
                return Ok(match self.override_target(ov)? {
                    None => self.cpu_buft(t),
                    Some(d) => Buft::Dev(d),
                });
            }
        }
        Ok(match layer_dev {
            None => self.cpu_buft(t),
            Some(d) => {
                if self.flags.split_mode == SplitMode::Row && t.matmul && t.dims.len() == 2 {
                    Buft::Split(d)
                } else {
                    Buft::Dev(d)
                }
            }
        })
    }

    /// Allocation size in a buffer type: CUDA adds one partial row of padding
    /// to quantized tensors whose rows are not a multiple of 512
    /// (`ggml_backend_cuda_buffer_type_get_alloc_size`), then every buffer pads
    /// each tensor to its alignment (`ggml_backend_alloc_ctx_tensors_from_buft_size`).
    fn alloc_size(&self, buft: Buft, t: &TensorView) -> u64 {
        let mut size = t.nbytes;
        if let Some(d) = buft.device() {
            if let Some(rp) = self.devices[d].kind.quant_row_padding() {
                let ne0 = t.dims.first().copied().unwrap_or(0);
                if t.ty.is_quantized() && ne0 % rp != 0 {
                    size += t.ty.row_size(rp - ne0 % rp).unwrap_or(0);
                }
            }
        }
        pad(size, buft.alignment(self.devices))
    }
}

/// Place every tensor of `model` (§1.5–1.11).
pub fn place(
    model: &Model,
    devices: &[Device],
    flags: &Flags,
    build: LlamaBuild,
    host_cpu: HostCpu,
    use_mmap: bool,
) -> Result<Placement, SimError> {
    if flags.split_mode == SplitMode::Row {
        for d in devices {
            let ok = d.kind == super::BackendKind::Cuda && build.cuda_has_row_split();
            if !ok {
                return Err(SimError::NoSplitBuffers(d.name.clone()));
            }
        }
    }
    let model_devs = model_devices(devices, flags)?;
    let n_layer = model.hparams.n_layer;
    let layer_device = layer_devices(n_layer, &model_devs, devices, flags, build);
    let host_buft = if flags.no_host {
        None
    } else {
        model_devs
            .iter()
            .copied()
            .find(|&d| devices[d].kind.host_buft().is_some())
    };
    let placer = Placer {
        devices,
        flags,
        host_cpu,
        host_buft,
        use_mmap,
    };
    let output_dev = layer_device[n_layer as usize];

    let mut weights: BTreeMap<Buft, u64> = BTreeMap::new();
    let mut tensor_buft = Vec::with_capacity(model.tensors.len());
    // CPU_Mapped spans per file: (min offset, max end).
    let mut spans: BTreeMap<u16, (u64, u64)> = BTreeMap::new();
    let mut token_embd: Option<(usize, Buft)> = None;

    for t in &model.tensors {
        let e = model
            .profile
            .tensors
            .get(t.index)
            .ok_or_else(|| SimError::Tensor {
                name: format!("#{}", t.index),
                reason: "index out of range".into(),
            })?;
        if t.skipped {
            tensor_buft.push(None);
            continue;
        }
        let nbytes = e.n_bytes().ok_or_else(|| SimError::Tensor {
            name: e.name.clone(),
            reason: format!("unknown size for type {}", e.ty.0),
        })?;
        let view = TensorView {
            name: &e.name,
            ty: e.ty,
            dims: &e.dims,
            nbytes,
            matmul: is_matmul_weight(&e.name, t.class, &e.dims),
        };
        let layer_dev = match t.class {
            TensorClass::Input => None,
            TensorClass::Output => output_dev,
            TensorClass::Layer { layer, .. } => layer_device.get(layer as usize).copied().flatten(),
        };
        let buft = placer.buft_for(&view, layer_dev)?;
        if e.name == "token_embd.weight" {
            token_embd = Some((t.index, buft));
        }
        add_tensor(
            &placer,
            &mut weights,
            &mut spans,
            buft,
            &view,
            e.file,
            e.offset,
        );
        tensor_buft.push(Some(buft));
    }

    // Tied output: `output = create_tensor(token_embd, …, TENSOR_DUPLICATED)`
    // as an OUTPUT tensor; a second copy exists iff its buft differs from
    // token_embd's (loader create_tensor).
    if model.hparams.tied_embeddings {
        if let Some((idx, emb_buft)) = token_embd {
            let e = &model.profile.tensors[idx];
            let view = TensorView {
                name: &e.name,
                ty: e.ty,
                dims: &e.dims,
                nbytes: e.n_bytes().unwrap_or(0),
                matmul: true,
            };
            let out_buft = placer.buft_for(&view, output_dev)?;
            if out_buft != emb_buft {
                add_tensor(
                    &placer,
                    &mut weights,
                    &mut spans,
                    out_buft,
                    &view,
                    e.file,
                    e.offset,
                );
            }
        }
    }

    // rope_freqs / rope_factors_* (llama3-style rope): created for every
    // layer with TENSOR_DUPLICATED for i != 0, so one copy per distinct
    // buffer type among the layers (loader create_tensor).
    let n_main = model.hparams.n_layer.saturating_sub(model.hparams.n_nextn);
    for (t, b) in model.tensors.iter().zip(tensor_buft.clone()) {
        let Some(first) = b else { continue };
        let e = &model.profile.tensors[t.index];
        if !(e.name.starts_with("rope_freqs") || e.name.starts_with("rope_factors")) {
            continue;
        }
        let view = TensorView {
            name: &e.name,
            ty: e.ty,
            dims: &e.dims,
            nbytes: e.n_bytes().unwrap_or(0),
            matmul: false,
        };
        let mut seen = vec![first];
        for il in 1..n_main as usize {
            let dev = layer_device.get(il).copied().flatten();
            let b = placer.buft_for(&view, dev)?;
            if !seen.contains(&b) {
                seen.push(b);
                add_tensor(
                    &placer,
                    &mut weights,
                    &mut spans,
                    b,
                    &view,
                    e.file,
                    e.offset,
                );
            }
        }
    }

    if !spans.is_empty() {
        let total: u64 = spans.values().map(|(a, b)| b - a).sum();
        weights.insert(Buft::Mapped, total);
    }
    Ok(Placement {
        model_devices: model_devs,
        layer_device,
        tensor_buft,
        weights,
        host_buft,
        use_mmap,
    })
}

fn add_tensor(
    placer: &Placer,
    weights: &mut BTreeMap<Buft, u64>,
    spans: &mut BTreeMap<u16, (u64, u64)>,
    buft: Buft,
    t: &TensorView,
    file: u16,
    offset: u64,
) {
    match buft {
        Buft::Mapped => {
            // get_mapping_range: [min offset, max(offset + nbytes)) per file.
            let s = spans.entry(file).or_insert((offset, offset + t.nbytes));
            s.0 = s.0.min(offset);
            s.1 = s.1.max(offset + t.nbytes);
        }
        Buft::Split(d) => {
            // -sm row (old CUDA builds): rows spread over the model devices in
            // -ts proportion; approximated as one padded share per device.
            let _ = d;
            *weights.entry(buft).or_default() += placer.alloc_size(buft, t);
        }
        _ => *weights.entry(buft).or_default() += placer.alloc_size(buft, t),
    }
}
