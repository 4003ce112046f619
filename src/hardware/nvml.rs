//! The production [`GpuProbe`]: NVIDIA's NVML through nvml-wrapper.
//!
//! nvml-wrapper `dlopen()`s `libnvidia-ml.so.1` (`nvml.dll` on Windows) at
//! run time, so the binary links and runs where no NVIDIA driver exists;
//! there `Nvml::init` fails with `LibloadingError` and [`NvmlProbe`] reports
//! [`ProbeError::Unavailable`], which `detect` turns into a CPU-only file.
//! Built without the `nvml` cargo feature, the probe always says so.

use super::detect::{GpuInfo, GpuProbe};
use super::error::ProbeError;

/// Probes NVIDIA GPUs through NVML.
#[derive(Clone, Copy, Debug, Default)]
pub struct NvmlProbe;

#[cfg(feature = "nvml")]
impl GpuProbe for NvmlProbe {
    fn gpus(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        use nvml_wrapper::enum_wrappers::device::Clock;
        use nvml_wrapper::Nvml;

        let unavailable = |e: nvml_wrapper::error::NvmlError| ProbeError::Unavailable {
            reason: e.to_string(),
        };
        let nvml = Nvml::init().map_err(unavailable)?;
        let count = nvml.device_count().map_err(unavailable)?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let query = |query: &'static str| {
                move |e: nvml_wrapper::error::NvmlError| ProbeError::Query {
                    index,
                    query,
                    reason: e.to_string(),
                }
            };
            let dev = nvml
                .device_by_index(index)
                .map_err(query("nvmlDeviceGetHandleByIndex"))?;
            let model = dev.name().map_err(query("nvmlDeviceGetName"))?;
            let mem = dev
                .memory_info()
                .map_err(query("nvmlDeviceGetMemoryInfo_v2"))?;
            // Optional queries: older boards, vGPUs and MIG slices may not
            // support them; the file then simply lacks that key.
            out.push(GpuInfo {
                model,
                memory_total_bytes: mem.total,
                memory_free_bytes: mem.free,
                memory_reserved_bytes: mem.reserved,
                pcie_gen: dev.max_pcie_link_gen().ok(),
                pcie_width: dev.max_pcie_link_width().ok(),
                bus_width_bits: dev.memory_bus_width().ok(),
                max_mem_clock_mhz: dev.max_clock_info(Clock::Memory).ok(),
                pci_bus_id: dev.pci_info().ok().map(|p| p.bus_id),
                uuid: dev.uuid().ok(),
            });
        }
        Ok(out)
    }
}

#[cfg(not(feature = "nvml"))]
impl GpuProbe for NvmlProbe {
    fn gpus(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        Err(ProbeError::Unavailable {
            reason: "ggplan was built without the `nvml` feature".to_string(),
        })
    }
}
