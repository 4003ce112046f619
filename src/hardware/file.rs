//! The hardware file: types, loading and validation.
//!
//! The file format is the serde form of [`Hardware`] (README "Hardware
//! files"); unknown keys are rejected (`deny_unknown_fields`) so a typo such
//! as `reserve_mib` fails with toml's line and column instead of being
//! silently ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::HardwareError;
use crate::units::Bytes;

/// One machine as the planner sees it: the host (CPU and RAM) plus the
/// devices llama.cpp can place tensors on, in llama.cpp's device order.
///
/// Values loaded through [`Hardware::from_toml_str`] / [`Hardware::from_path`]
/// are validated; a value built by hand should be checked with
/// [`Hardware::validate`] before use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// Optional label (a node name in a fleet, or the preset's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub host: Host,
    /// In llama.cpp's device order (`llama_prepare_model_devices`, src/llama.cpp:
    /// RPC devices first, then GPUs in backend-registry order). `-ot …=CUDA1`
    /// and `-ts` refer to these names and this order.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// The host: system RAM and CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Installed RAM in MiB (for unified-memory machines: the whole shared pool).
    pub memory_mib: u64,
    /// RAM kept for the OS and everything else, in MiB.
    #[serde(default)]
    pub reserved_mib: u64,
    /// Peak RAM bandwidth in GB/s (10^9 bytes/s): channels × MT/s × 8 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_gbs: Option<f64>,
    /// Physical cores (llama.cpp's default `-t` is `common_cpu_get_num_math()`,
    /// which counts physical cores, common/common.cpp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// NUMA nodes (informational; `--numa` planning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_nodes: Option<u32>,
}

/// A device llama.cpp can place tensors on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// llama.cpp's device name: `CUDA0`, `ROCm0`, `Vulkan1`, `MTL0`, `SYCL0`, `RPC0`.
    pub name: String,
    pub kind: DeviceKind,
    /// Marketing name, e.g. "NVIDIA GeForce RTX 4090" (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Total device memory in MiB; for a unified device, the part of host RAM
    /// the GPU can address.
    pub memory_mib: u64,
    /// Memory not available to llama.cpp (display, other processes), in MiB.
    #[serde(default)]
    pub reserved_mib: u64,
    /// Peak memory bandwidth in GB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_gbs: Option<f64>,
    /// Dense FP16 tensor throughput (FP32 accumulate) in TFLOPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_tflops: Option<f64>,
    /// Link to the host (PCIe, or the network for rpc), GB/s per direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_gbs: Option<f64>,
    /// The device shares the host's RAM (Strix Halo, Apple silicon).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unified: bool,
    /// `HOST:PORT` of the `rpc-server` (kind rpc only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The backend a device is driven by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cuda,
    Rocm,
    Vulkan,
    Metal,
    Sycl,
    Rpc,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 6] = [
        DeviceKind::Cuda,
        DeviceKind::Rocm,
        DeviceKind::Vulkan,
        DeviceKind::Metal,
        DeviceKind::Sycl,
        DeviceKind::Rpc,
    ];

    /// The spelling in hardware files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cuda => "cuda",
            DeviceKind::Rocm => "rocm",
            DeviceKind::Vulkan => "vulkan",
            DeviceKind::Metal => "metal",
            DeviceKind::Sycl => "sycl",
            DeviceKind::Rpc => "rpc",
        }
    }

    /// The prefix of llama.cpp's device names for this backend, followed by
    /// the device index: `GGML_CUDA_NAME` ("CUDA", "ROCm" under HIP;
    /// ggml/include/ggml-cuda.h), `GGML_VK_NAME` ("Vulkan"), `GGML_METAL_NAME`
    /// ("MTL"), `GGML_SYCL_NAME` ("SYCL"), and "RPC" + a process-wide counter
    /// (`ggml_backend_rpc_add_server`, ggml-rpc.cpp).
    pub fn name_prefix(self) -> &'static str {
        match self {
            DeviceKind::Cuda => "CUDA",
            DeviceKind::Rocm => "ROCm",
            DeviceKind::Vulkan => "Vulkan",
            DeviceKind::Metal => "MTL",
            DeviceKind::Sycl => "SYCL",
            DeviceKind::Rpc => "RPC",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which memory pool a device's allocations come out of.
///
/// A planner must keep, for every pool, the sum of what it places there
/// within [`Hardware::pool_capacity`], *and* each device within its own
/// [`Hardware::effective_capacity`]; [`Hardware::overflows`] checks both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The device's own memory (discrete GPU, or a remote rpc host's).
    Own,
    /// The host's RAM, shared with the CPU and other unified devices.
    Host,
}

impl Device {
    /// `memory_mib` as bytes.
    pub fn memory(&self) -> Bytes {
        Bytes::from_mib(self.memory_mib)
    }

    /// `reserved_mib` as bytes.
    pub fn reserved(&self) -> Bytes {
        Bytes::from_mib(self.reserved_mib)
    }

    /// Memory minus reserve, ignoring the host: what this device alone could
    /// hold. See [`Hardware::effective_capacity`] for the shared-pool view.
    pub fn capacity(&self) -> Bytes {
        self.memory().saturating_sub(self.reserved())
    }

    /// Whether allocations on this device come out of the host's RAM.
    /// (Validation forbids `unified` on rpc devices.)
    pub fn draws_from_host(&self) -> bool {
        self.unified && self.kind != DeviceKind::Rpc
    }

    /// The pool this device's allocations come out of.
    pub fn pool(&self) -> Pool {
        if self.draws_from_host() {
            Pool::Host
        } else {
            Pool::Own
        }
    }
}

impl Host {
    pub fn memory(&self) -> Bytes {
        Bytes::from_mib(self.memory_mib)
    }

    pub fn reserved(&self) -> Bytes {
        Bytes::from_mib(self.reserved_mib)
    }

    /// RAM minus reserve: the whole host pool, before any unified device
    /// takes its share.
    pub fn capacity(&self) -> Bytes {
        self.memory().saturating_sub(self.reserved())
    }
}

impl Hardware {
    /// A machine with no devices (CPU only).
    pub fn cpu_only(host: Host) -> Hardware {
        Hardware {
            name: None,
            host,
            devices: Vec::new(),
        }
    }

    /// Parse and validate a hardware file's text.
    pub fn from_toml_str(text: &str) -> Result<Hardware, HardwareError> {
        let hw: Hardware = toml::from_str(text).map_err(|e| HardwareError::Parse {
            path: None,
            source: Box::new(e),
        })?;
        hw.validate()?;
        Ok(hw)
    }

    /// Read, parse and validate a hardware file.
    pub fn from_path(path: &Path) -> Result<Hardware, HardwareError> {
        let text = std::fs::read_to_string(path).map_err(|source| HardwareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let hw: Hardware = toml::from_str(&text).map_err(|e| HardwareError::Parse {
            path: Some(path.to_path_buf()),
            source: Box::new(e),
        })?;
        hw.validate()?;
        Ok(hw)
    }

    /// Look a device up by its llama.cpp name.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// The host's RAM minus its reserve. Unified devices draw from this same
    /// pool, so it bounds host + unified allocations *together*.
    pub fn host_capacity(&self) -> Bytes {
        self.host.capacity()
    }

    /// What one device can hold on its own: `memory − reserved`, and for a
    /// unified device no more than the host pool (it is the same RAM).
    pub fn effective_capacity(&self, device: &Device) -> Bytes {
        let own = device.capacity();
        if device.draws_from_host() {
            own.min(self.host_capacity())
        } else {
            own
        }
    }

    /// The capacity of the pool `device` draws from: the host's for a
    /// unified device, else the device's own.
    pub fn pool_capacity(&self, device: &Device) -> Bytes {
        match device.pool() {
            Pool::Host => self.host_capacity(),
            Pool::Own => device.capacity(),
        }
    }

    /// Everything the machine can hold, counting shared RAM once: the host
    /// pool plus each device with memory of its own. Unified devices add
    /// nothing (their memory is already in the host pool).
    pub fn total_capacity(&self) -> Bytes {
        let own: Bytes = self
            .devices
            .iter()
            .filter(|d| !d.draws_from_host())
            .map(|d| d.capacity())
            .sum();
        self.host_capacity() + own
    }

    /// Check every rule a loaded file must satisfy; the first failure is
    /// returned with the offending device and key named.
    pub fn validate(&self) -> Result<(), HardwareError> {
        let h = &self.host;
        if h.memory_mib == 0 {
            return Err(HardwareError::HostMemoryZero);
        }
        if h.reserved_mib > h.memory_mib {
            return Err(HardwareError::HostReserveExceedsMemory {
                reserved_mib: h.reserved_mib,
                memory_mib: h.memory_mib,
            });
        }
        check_positive("host.bandwidth_gbs", h.bandwidth_gbs)?;
        check_count("host.cores", h.cores)?;
        check_count("host.numa_nodes", h.numa_nodes)?;

        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, d) in self.devices.iter().enumerate() {
            let name = d.name.clone();
            if d.name.trim().is_empty() {
                return Err(HardwareError::EmptyName { index });
            }
            if let Some(&first) = seen.get(d.name.as_str()) {
                return Err(HardwareError::DuplicateName {
                    name,
                    first,
                    second: index,
                });
            }
            seen.insert(&d.name, index);
            let prefix = d.kind.name_prefix();
            let well_named = d
                .name
                .strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !well_named {
                return Err(HardwareError::NameKindMismatch {
                    index,
                    name,
                    kind: d.kind.as_str(),
                    prefix,
                });
            }
            if d.memory_mib == 0 {
                return Err(HardwareError::DeviceMemoryZero { index, name });
            }
            if d.reserved_mib > d.memory_mib {
                return Err(HardwareError::DeviceReserveExceedsMemory {
                    index,
                    name,
                    reserved_mib: d.reserved_mib,
                    memory_mib: d.memory_mib,
                });
            }
            let key = |k: &str| format!("devices[{index}] \"{}\": {k}", d.name);
            check_positive(&key("bandwidth_gbs"), d.bandwidth_gbs)?;
            check_positive(&key("fp16_tflops"), d.fp16_tflops)?;
            check_positive(&key("link_gbs"), d.link_gbs)?;
            match (d.kind, &d.endpoint) {
                (DeviceKind::Rpc, None) => {
                    return Err(HardwareError::EndpointMissing { index, name });
                }
                (DeviceKind::Rpc, Some(ep)) if !is_host_port(ep) => {
                    return Err(HardwareError::BadEndpoint {
                        index,
                        name,
                        endpoint: ep.clone(),
                    });
                }
                (kind, Some(_)) if kind != DeviceKind::Rpc => {
                    return Err(HardwareError::EndpointNotRpc {
                        index,
                        name,
                        kind: kind.as_str(),
                    });
                }
                _ => {}
            }
            if d.unified && d.kind == DeviceKind::Rpc {
                return Err(HardwareError::UnifiedRpc { index, name });
            }
            if d.unified && d.memory_mib > h.memory_mib {
                return Err(HardwareError::UnifiedExceedsHost {
                    index,
                    name,
                    memory_mib: d.memory_mib,
                    host_mib: h.memory_mib,
                });
            }
        }
        Ok(())
    }

    /// Things that are legal but probably not what the author meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        // llama_prepare_model_devices (src/llama.cpp) lists RPC devices before
        // local GPUs unless --device reorders them.
        if let Some(first_local) = self.devices.iter().position(|d| d.kind != DeviceKind::Rpc) {
            if let Some(late) = self.devices[first_local..]
                .iter()
                .find(|d| d.kind == DeviceKind::Rpc)
            {
                out.push(format!(
                    "{} is listed after {}; without --device, llama.cpp puts RPC devices first",
                    late.name, self.devices[first_local].name
                ));
            }
        }
        let unified: Vec<&Device> = self
            .devices
            .iter()
            .filter(|d| d.draws_from_host())
            .collect();
        let unified_mib: u64 = unified
            .iter()
            .map(|d| d.capacity().0 / crate::units::MIB)
            .sum();
        if unified.len() > 1 && unified_mib > self.host.memory_mib {
            out.push(format!(
                "unified devices together address {unified_mib} MiB, more than host.memory_mib \
                 ({}); they share one pool",
                self.host.memory_mib
            ));
        }
        out
    }
}

fn check_positive(key: &str, value: Option<f64>) -> Result<(), HardwareError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(HardwareError::NotPositive {
            key: key.to_string(),
            value: v,
        }),
        _ => Ok(()),
    }
}

fn check_count(key: &str, value: Option<u32>) -> Result<(), HardwareError> {
    match value {
        Some(0) => Err(HardwareError::ZeroCount {
            key: key.to_string(),
        }),
        _ => Ok(()),
    }
}

/// `HOST:PORT` with a non-empty host and a port in 1..=65535. llama.cpp's
/// `parse_endpoint` (ggml-rpc.cpp) splits on the *first* ':', so IPv6
/// literals are not accepted there and are not accepted here.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.split_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[host]
memory_mib = 65536          # RAM
reserved_mib = 4096         # OS and everything else
bandwidth_gbs = 51.2        # optional, for speed prediction
cores = 16
[[devices]]                 # in llama.cpp's device order
name = "CUDA0"
kind = "cuda"
memory_mib = 24576
reserved_mib = 0
bandwidth_gbs = 1008        # an integer is accepted for a float key
fp16_tflops = 165
link_gbs = 25
unified = false
"#;

    fn err(text: &str) -> String {
        let e = Hardware::from_toml_str(text).unwrap_err();
        // The whole chain, as the CLI prints it.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    }

    fn with_device(extra: &str) -> String {
        format!("[host]\nmemory_mib = 65536\n[[devices]]\n{extra}\n")
    }

    #[test]
    fn the_issue_example_loads() {
        let hw = Hardware::from_toml_str(ISSUE_EXAMPLE).unwrap();
        assert_eq!(hw.host.capacity(), Bytes::from_mib(61440));
        let d = &hw.devices[0];
        assert_eq!(d.kind, DeviceKind::Cuda);
        assert_eq!(d.bandwidth_gbs, Some(1008.0));
        assert_eq!(d.fp16_tflops, Some(165.0));
        assert_eq!(hw.effective_capacity(d), Bytes::from_mib(24576));
        assert_eq!(hw.total_capacity(), Bytes::from_mib(61440 + 24576));
        assert!(hw.warnings().is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_with_line_and_column() {
        let msg = err("[host]\nmemory_mib = 1024\nreserve_mib = 10\n");
        assert!(msg.contains("unknown field `reserve_mib`"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        let msg = err(&with_device(
            "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 1\nvram = 2",
        ));
        assert!(msg.contains("unknown field `vram`"), "{msg}");
    }

    #[test]
    fn unknown_kind_lists_the_valid_ones() {
        let msg = err(&with_device(
            "name = \"X0\"\nkind = \"opencl\"\nmemory_mib = 1",
        ));
        assert!(msg.contains("unknown variant `opencl`"), "{msg}");
        assert!(msg.contains("`cuda`") && msg.contains("`rpc`"), "{msg}");
    }

    #[test]
    fn reserve_above_total_names_the_key() {
        let msg = err("[host]\nmemory_mib = 1024\nreserved_mib = 2048\n");
        assert_eq!(
            msg,
            "host.reserved_mib (2048) exceeds host.memory_mib (1024)"
        );
        let msg = err(&with_device(
            "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\nreserved_mib = 9000",
        ));
        assert_eq!(
            msg,
            "devices[0] \"CUDA0\": reserved_mib (9000) exceeds memory_mib (8192)"
        );
    }

    #[test]
    fn duplicate_names_point_at_both_entries() {
        let dev = "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\n";
        let text = format!("[host]\nmemory_mib = 65536\n[[devices]]\n{dev}[[devices]]\n{dev}");
        assert_eq!(
            err(&text),
            "devices[1] \"CUDA0\": duplicate device name (first used by devices[0])"
        );
    }

    #[test]
    fn names_must_follow_llama_cpp() {
        let msg = err(&with_device(
            "name = \"CUDA0\"\nkind = \"vulkan\"\nmemory_mib = 1",
        ));
        assert!(msg.contains("Vulkan0, Vulkan1"), "{msg}");
        for bad in ["cuda0", "CUDA", "CUDA0a", "GPU0"] {
            let text = with_device(&format!(
                "name = \"{bad}\"\nkind = \"cuda\"\nmemory_mib = 1"
            ));
            assert!(Hardware::from_toml_str(&text).is_err(), "{bad}");
        }
        let ok = with_device("name = \"MTL0\"\nkind = \"metal\"\nmemory_mib = 1\nunified = true");
        assert!(Hardware::from_toml_str(&ok).is_ok());
    }

    #[test]
    fn rpc_devices_need_a_host_port_endpoint() {
        let base = "name = \"RPC0\"\nkind = \"rpc\"\nmemory_mib = 1024";
        assert!(err(&with_device(base)).contains("needs endpoint"));
        for bad in [
            "nohost",
            ":50052",
            "host:",
            "host:0",
            "host:99999",
            "[::1]:50052",
        ] {
            let text = with_device(&format!("{base}\nendpoint = \"{bad}\""));
            assert!(err(&text).contains("is not HOST:PORT"), "{bad}");
        }
        let ok = with_device(&format!("{base}\nendpoint = \"box-b.lan:50052\""));
        assert!(Hardware::from_toml_str(&ok).is_ok());
        let msg = err(&with_device(&format!(
            "{base}\nendpoint = \"h:1\"\nunified = true"
        )));
        assert!(msg.contains("not allowed on an rpc device"), "{msg}");
        let msg = err(&with_device(
            "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 1\nendpoint = \"h:1\"",
        ));
        assert!(
            msg.contains("only meaningful for kind rpc, not cuda"),
            "{msg}"
        );
    }

    #[test]
    fn numbers_must_be_positive() {
        let msg = err(&with_device(
            "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 1\nbandwidth_gbs = -3",
        ));
        assert_eq!(
            msg,
            "devices[0] \"CUDA0\": bandwidth_gbs must be a positive finite number, got -3"
        );
        assert!(err("[host]\nmemory_mib = 1\ncores = 0").contains("host.cores"));
        assert!(err("[host]\nmemory_mib = 0").contains("host.memory_mib"));
        assert!(err("[host]\nmemory_mib = -5").contains("invalid hardware file"));
        assert!(err(&with_device(
            "name = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 0"
        ))
        .contains("memory_mib must be greater than 0"));
    }

    #[test]
    fn unified_memory_is_counted_once() {
        let text = "[host]\nmemory_mib = 131072\nreserved_mib = 8192\n\
                    [[devices]]\nname = \"Vulkan0\"\nkind = \"vulkan\"\nmemory_mib = 65536\n\
                    reserved_mib = 1024\nunified = true\n\
                    [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\n";
        let hw = Hardware::from_toml_str(text).unwrap();
        let igpu = &hw.devices[0];
        assert_eq!(igpu.pool(), Pool::Host);
        assert_eq!(hw.effective_capacity(igpu), Bytes::from_mib(64512));
        assert_eq!(hw.pool_capacity(igpu), Bytes::from_mib(122880));
        // host 120 GiB + the discrete 8 GiB; the iGPU's share is already in the host's.
        assert_eq!(hw.total_capacity(), Bytes::from_mib(122880 + 8192));
    }

    #[test]
    fn unified_device_is_capped_by_the_host_pool() {
        let text = "[host]\nmemory_mib = 16384\nreserved_mib = 4096\n\
                    [[devices]]\nname = \"MTL0\"\nkind = \"metal\"\nmemory_mib = 16384\nunified = true\n";
        let hw = Hardware::from_toml_str(text).unwrap();
        assert_eq!(hw.devices[0].capacity(), Bytes::from_mib(16384));
        assert_eq!(
            hw.effective_capacity(&hw.devices[0]),
            Bytes::from_mib(12288)
        );
        let too_big = text.replace("memory_mib = 16384\nunified", "memory_mib = 16385\nunified");
        assert!(err(&too_big).contains("exceeds host.memory_mib"));
    }

    #[test]
    fn rpc_after_a_local_gpu_is_a_warning() {
        let text = "[host]\nmemory_mib = 65536\n\
                    [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\n\
                    [[devices]]\nname = \"RPC0\"\nkind = \"rpc\"\nmemory_mib = 8192\nendpoint = \"b:50052\"\n";
        let hw = Hardware::from_toml_str(text).unwrap();
        let w = hw.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("RPC0 is listed after CUDA0"), "{w:?}");
    }

    #[test]
    fn serde_form_round_trips() {
        let hw = Hardware::from_toml_str(ISSUE_EXAMPLE).unwrap();
        let text = toml::to_string(&hw).unwrap();
        assert_eq!(Hardware::from_toml_str(&text).unwrap(), hw);
        let json = serde_json::to_string(&hw).unwrap();
        assert_eq!(serde_json::from_str::<Hardware>(&json).unwrap(), hw);
    }
}
