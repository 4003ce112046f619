//! The devices a simulation places onto, and the backend properties that
//! change sizes (alignment, CUDA row padding, host buffers, op offload).
//! Built from a hardware description by the CLI; kept small so the hardware
//! module can convert into it.

use serde::Serialize;

/// The ggml backend behind a model device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Cuda,
    /// ggml-cuda built for HIP: CUDA's sizing rules, `ROCm` names.
    Rocm,
    /// `ggml-rpc` device; sizes are those of the remote backend. The oracle
    /// fixtures use CPU-backed `ggml-rpc-server`s, which is what is modelled.
    Rpc,
    Vulkan,
    Metal,
    Sycl,
}

impl BackendKind {
    pub fn parse(s: &str) -> Option<BackendKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "cuda" | "nvidia" | "gpu" => BackendKind::Cuda,
            "rocm" | "hip" => BackendKind::Rocm,
            "rpc" => BackendKind::Rpc,
            "vulkan" => BackendKind::Vulkan,
            "metal" => BackendKind::Metal,
            "sycl" => BackendKind::Sycl,
            _ => return None,
        })
    }

    /// Buffer alignment of the device's default buffer type:
    /// CUDA 128 (`ggml_backend_cuda_buffer_type_get_alignment`), CPU-backed
    /// RPC 32 (the remote's `TENSOR_ALIGNMENT`), Metal 32; Vulkan reports
    /// `minStorageBufferOffsetAlignment`, taken as 64 (unverified).
    pub fn alignment(self) -> u64 {
        match self {
            BackendKind::Cuda | BackendKind::Rocm => 128,
            BackendKind::Rpc | BackendKind::Metal | BackendKind::Sycl => 32,
            BackendKind::Vulkan => 64,
        }
    }

    /// CUDA pads quantized tensors whose row length is not a multiple of 512
    /// by one partial row (`ggml_backend_cuda_buffer_type_get_alloc_size`,
    /// `MATRIX_ROW_PADDING`).
    pub fn quant_row_padding(self) -> Option<u64> {
        match self {
            BackendKind::Cuda | BackendKind::Rocm => Some(512),
            _ => None,
        }
    }

    /// Name of the pinned host buffer type the device offers
    /// (`ggml_backend_dev_host_buffer_type`); RPC and Metal offer none.
    pub fn host_buft(self) -> Option<&'static str> {
        match self {
            BackendKind::Cuda => Some("CUDA_Host"),
            BackendKind::Rocm => Some("ROCm_Host"),
            BackendKind::Vulkan => Some("Vulkan_Host"),
            BackendKind::Sycl => Some("SYCL_Host"),
            BackendKind::Rpc | BackendKind::Metal => None,
        }
    }

    /// Minimum batch for which the backend pulls a host-weight op onto itself
    /// (`offload_op`, CUDA `GGML_OP_OFFLOAD_MIN_BATCH` = 32); RPC has no offload_op.
    pub fn op_offload_min_batch(self) -> Option<u64> {
        match self {
            BackendKind::Cuda | BackendKind::Rocm | BackendKind::Vulkan | BackendKind::Sycl => {
                Some(32)
            }
            BackendKind::Rpc | BackendKind::Metal => None,
        }
    }

    /// Whether numbers for this backend have been checked against a real run.
    /// Only CPU-backed RPC devices have (oracle fixtures).
    pub fn verified(self) -> bool {
        matches!(self, BackendKind::Rpc)
    }
}

/// One model device (a GPU or an RPC endpoint), in the order llama.cpp
/// enumerates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// `CUDA0`, `RPC1`, …
    pub name: String,
    pub kind: BackendKind,
    /// The default buffer type's name as llama.cpp prints it (`CUDA0`,
    /// `RPC0[127.0.0.1:50053]`).
    pub buft: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

impl Device {
    pub fn new(name: &str, kind: BackendKind, total_bytes: u64) -> Device {
        Device {
            name: name.to_string(),
            kind,
            buft: name.to_string(),
            total_bytes,
            free_bytes: total_bytes,
        }
    }
}

/// The model devices of a hardware description, in its order (the
/// hardware file lists them in llama.cpp's order). Free memory is taken as
/// memory minus the reserve: llama.cpp splits layers by *free* memory when
/// `-ts` is absent (llama_model_base::load_tensors).
pub fn from_hardware(hw: &crate::hardware::Hardware) -> Vec<Device> {
    use crate::hardware::DeviceKind as K;
    hw.devices
        .iter()
        .map(|d| {
            let kind = match d.kind {
                K::Cuda => BackendKind::Cuda,
                K::Rocm => BackendKind::Rocm,
                K::Vulkan => BackendKind::Vulkan,
                K::Metal => BackendKind::Metal,
                K::Sycl => BackendKind::Sycl,
                K::Rpc => BackendKind::Rpc,
            };
            let total = d.memory_mib.saturating_mul(crate::units::MIB);
            let free = total.saturating_sub(d.reserved_mib.saturating_mul(crate::units::MIB));
            // An rpc device's buffer type is named after the remote device
            // index and the endpoint (`RPC0[host:port]`, ggml-rpc.cpp).
            let buft = match (&d.endpoint, kind) {
                (Some(ep), BackendKind::Rpc) => format!("RPC0[{ep}]"),
                _ => d.name.clone(),
            };
            Device {
                name: d.name.clone(),
                kind,
                buft,
                total_bytes: total,
                free_bytes: free,
            }
        })
        .collect()
}
