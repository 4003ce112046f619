//! `detect`: build a hardware file from the machine it runs on.
//!
//! Hardware access sits behind two traits so that everything here is tested
//! with files, never a GPU: [`GpuProbe`] (NVML in production, see
//! [`super::nvml`]; [`FixtureProbe`] in tests) and [`HostProbe`] ([`OsHost`]
//! reads Linux's /proc and /sys; [`FixtureProbe`] again in tests).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ProbeError;
use super::file::{Device, DeviceKind, Hardware, Host};
use super::link::{memory_gbs, pcie_gbs, round2};
use crate::units::MIB;

/// What a probe reports about one NVIDIA GPU, in NVML's (PCI bus) order.
/// Optional fields are queries the device or driver may not support.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    /// Marketing name (`nvmlDeviceGetName`).
    pub model: String,
    /// `nvmlDeviceGetMemoryInfo_v2`: total, free, and driver/firmware-reserved bytes.
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    #[serde(default)]
    pub memory_reserved_bytes: u64,
    /// Max PCIe link generation and width this device *and* slot support
    /// (`nvmlDeviceGetMaxPcieLinkGeneration/Width`). The current link may be
    /// lower while idle (power saving), so the max is what a transfer sees.
    #[serde(default)]
    pub pcie_gen: Option<u32>,
    #[serde(default)]
    pub pcie_width: Option<u32>,
    /// Memory bus width in bits (`nvmlDeviceGetMemoryBusWidth`).
    #[serde(default)]
    pub bus_width_bits: Option<u32>,
    /// Max memory clock in MHz (`nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM)`).
    #[serde(default)]
    pub max_mem_clock_mhz: Option<u32>,
    #[serde(default)]
    pub pci_bus_id: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    /// CUDA compute capability (`nvmlDeviceGetCudaComputeCapability`).
    #[serde(default)]
    pub compute_capability: Option<(u32, u32)>,
}

/// What a probe reports about the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// `MemTotal` of /proc/meminfo.
    pub memory_total_bytes: u64,
    /// `MemAvailable` of /proc/meminfo (what could be allocated without swapping).
    #[serde(default)]
    pub memory_available_bytes: Option<u64>,
    /// Physical cores.
    #[serde(default)]
    pub cores: Option<u32>,
    #[serde(default)]
    pub numa_nodes: Option<u32>,
    /// A container's memory limit (cgroup v2 `memory.max`, v1
    /// `memory.limit_in_bytes`) when it is below `MemTotal`.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
}

/// A source of NVIDIA GPU information.
pub trait GpuProbe {
    /// All GPUs, or [`ProbeError::Unavailable`] when there is no usable driver.
    fn gpus(&self) -> Result<Vec<GpuInfo>, ProbeError>;
}

/// A source of host RAM and CPU information.
pub trait HostProbe {
    fn host(&self) -> Result<HostInfo, ProbeError>;
}

/// A recorded probe result, for tests and for `detect --probe-fixture`:
///
/// ```toml
/// [host]
/// memory_total_bytes = 68719476736
/// cores = 16
/// [[gpus]]
/// model = "NVIDIA GeForce RTX 4090"
/// memory_total_bytes = 25757220864
/// memory_free_bytes = 25262292992
/// ```
///
/// `nvml_error = "…"` instead of `[[gpus]]` replays a machine without a driver.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureProbe {
    pub host: HostInfo,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    #[serde(default)]
    pub nvml_error: Option<String>,
}

impl FixtureProbe {
    pub fn from_path(path: &Path) -> Result<FixtureProbe, ProbeError> {
        let fixture = |source: Box<dyn std::error::Error + Send + Sync>| ProbeError::Fixture {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fixture(Box::new(e)))?;
        toml::from_str(&text).map_err(|e| fixture(Box::new(e)))
    }
}

impl GpuProbe for FixtureProbe {
    fn gpus(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        match &self.nvml_error {
            Some(reason) => Err(ProbeError::Unavailable {
                reason: reason.clone(),
            }),
            None => Ok(self.gpus.clone()),
        }
    }
}

impl HostProbe for FixtureProbe {
    fn host(&self) -> Result<HostInfo, ProbeError> {
        Ok(self.host.clone())
    }
}

/// The host as the operating system reports it (Linux: /proc/meminfo and
/// /sys/devices/system). Elsewhere it fails with a message asking for a
/// hand-written `[host]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsHost;

impl HostProbe for OsHost {
    fn host(&self) -> Result<HostInfo, ProbeError> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| ProbeError::Host {
            what: "RAM",
            reason: format!("/proc/meminfo: {e} (write [host] memory_mib by hand)"),
        })?;
        let (total, available) = parse_meminfo(&meminfo).ok_or(ProbeError::Host {
            what: "RAM",
            reason: "no MemTotal line in /proc/meminfo".to_string(),
        })?;
        let cores = physical_cores_linux().or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        });
        let limit = [
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| parse_cgroup_limit(&t))
        });
        Ok(HostInfo {
            memory_total_bytes: total,
            memory_available_bytes: available,
            cores,
            numa_nodes: numa_nodes_linux(),
            memory_limit_bytes: limit.filter(|&l| l < total),
        })
    }
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo (values in kB = KiB).
pub fn parse_meminfo(text: &str) -> Option<(u64, Option<u64>)> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")))
}

/// A cgroup memory limit file: `max` (v2) means none; v1 writes a huge
/// page-aligned number instead, which the caller drops by comparing with
/// `MemTotal`.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Physical cores, counted as llama.cpp's `common_cpu_get_num_physical_cores`
/// (common/common.cpp) does on Linux: the number of distinct
/// `cpuN/topology/thread_siblings` masks.
fn physical_cores_linux() -> Option<u32> {
    let mut siblings = std::collections::HashSet::new();
    for cpu in 0u32.. {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings");
        match std::fs::read_to_string(path) {
            Ok(mask) => {
                siblings.insert(mask.trim().to_string());
            }
            Err(_) => break,
        }
    }
    u32::try_from(siblings.len()).ok().filter(|&n| n > 0)
}

fn numa_nodes_linux() -> Option<u32> {
    let dir = std::fs::read_dir("/sys/devices/system/node").ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("node")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// Choices and environment that shape a detected file.
#[derive(Clone, Debug, Default)]
pub struct DetectOptions {
    /// Do not count memory in use now as reserved (GPU: keep only the
    /// driver's own reserve; host: reserve nothing).
    pub ignore_used: bool,
    /// `CUDA_DEVICE_ORDER` as set for llama.cpp (it decides CUDA numbering).
    pub cuda_device_order: Option<String>,
    /// `CUDA_VISIBLE_DEVICES` as set for llama.cpp (NVML ignores it).
    pub cuda_visible_devices: Option<String>,
}

/// A detected machine plus what the user should know about it.
#[derive(Clone, Debug)]
pub struct Detected {
    pub hardware: Hardware,
    /// Per device, the raw facts behind its numbers (written as comments).
    pub device_notes: Vec<String>,
    /// Caveats (device order, missing queries, no GPU): printed on stderr
    /// and written at the top of the file.
    pub notes: Vec<String>,
    /// Set when no NVIDIA GPU could be probed; the file is then CPU-only.
    pub gpu_unavailable: Option<String>,
}

fn ceil_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// Probe the machine and build its hardware file.
///
/// * GPU `memory_mib` = NVML total (MiB, truncated); `reserved_mib` = total −
///   free rounded up (memory in use now, by the display or other processes,
///   plus the driver's reserve), or only the driver's reserve with
///   `ignore_used`.
/// * `link_gbs` from the max PCIe generation × width ([`pcie_gbs`]),
///   `bandwidth_gbs` from bus width × max memory clock ([`memory_gbs`]).
/// * Host RAM from `MemTotal`; `reserved_mib` = `MemTotal − MemAvailable`
///   (0 with `ignore_used`); cores and NUMA nodes from /sys.
///
/// A GPU probe reporting [`ProbeError::Unavailable`] gives a CPU-only file;
/// any other probe error is returned.
pub fn detect(
    gpu: &dyn GpuProbe,
    host: &dyn HostProbe,
    opts: &DetectOptions,
) -> Result<Detected, ProbeError> {
    let h = host.host()?;
    let mut notes = Vec::new();
    let limit = h.memory_limit_bytes.filter(|&l| l < h.memory_total_bytes);
    let memory_mib = limit.unwrap_or(h.memory_total_bytes) / MIB;
    let reserved_mib = if opts.ignore_used {
        0
    } else if let Some(l) = limit {
        // Host-wide use says nothing about what is left inside the limit.
        notes.push(format!(
            "a cgroup limit of {} MiB applies (MemTotal is {} MiB): host.memory_mib is the limit; \
             set host.reserved_mib to what else runs in this container",
            l / MIB,
            h.memory_total_bytes / MIB
        ));
        0
    } else {
        h.memory_available_bytes
            .map_or(0, |avail| {
                ceil_mib(h.memory_total_bytes.saturating_sub(avail))
            })
            .min(memory_mib)
    };
    let host_cfg = Host {
        memory_mib,
        reserved_mib,
        bandwidth_gbs: None,
        cores: h.cores.filter(|&c| c > 0),
        numa_nodes: h.numa_nodes.filter(|&n| n > 0),
    };
    let (gpus, gpu_unavailable) = match gpu.gpus() {
        Ok(g) => (g, None),
        Err(ProbeError::Unavailable { reason }) => (Vec::new(), Some(reason)),
        Err(e) => return Err(e),
    };
    if let Some(reason) = &gpu_unavailable {
        notes.push(format!(
            "no NVIDIA GPU found ({reason}); this is a CPU-only file"
        ));
    } else if gpus.is_empty() {
        notes.push("NVML found no GPU; this is a CPU-only file".to_string());
    }
    if gpus.len() > 1 && opts.cuda_device_order.as_deref() != Some("PCI_BUS_ID") {
        notes.push(
            "GPUs are listed in NVML (PCI bus) order, but CUDA numbers them fastest first \
             unless CUDA_DEVICE_ORDER=PCI_BUS_ID; set that for llama.cpp, or check the names \
             against its `using device CUDA0 (...)` log line"
                .to_string(),
        );
    }
    if let Some(visible) = &opts.cuda_visible_devices {
        notes.push(format!(
            "CUDA_VISIBLE_DEVICES={visible} is set; NVML ignores it, so every GPU is listed: \
             delete those llama.cpp will not see and renumber CUDA0, CUDA1, ..."
        ));
    }
    let mut devices = Vec::new();
    let mut device_notes = Vec::new();
    for (i, g) in gpus.iter().enumerate() {
        let name = format!("CUDA{i}");
        let total_mib = g.memory_total_bytes / MIB;
        let used = if opts.ignore_used {
            g.memory_reserved_bytes
        } else {
            g.memory_total_bytes.saturating_sub(g.memory_free_bytes)
        };
        let link_gbs = match (g.pcie_gen, g.pcie_width) {
            (Some(gen), Some(w)) => pcie_gbs(gen, w).map(round2),
            _ => None,
        };
        let bandwidth_gbs = match (g.bus_width_bits, g.max_mem_clock_mhz) {
            (Some(bits), Some(mhz)) => memory_gbs(bits, mhz).map(round2),
            _ => None,
        };
        let mut facts = vec![g.model.clone()];
        if let Some(bus) = &g.pci_bus_id {
            facts.push(format!("PCI {bus}"));
        }
        match (g.pcie_gen, g.pcie_width) {
            (Some(gen), Some(w)) => facts.push(format!("max link PCIe Gen{gen} x{w}")),
            _ => facts.push("PCIe link not reported".to_string()),
        }
        match (g.bus_width_bits, g.max_mem_clock_mhz) {
            (Some(bits), Some(mhz)) => {
                facts.push(format!("{bits}-bit bus, {mhz} MHz max memory clock"))
            }
            _ => facts.push("memory bus/clock not reported".to_string()),
        }
        facts.push(format!(
            "{} MiB free of {} now, {} MiB driver-reserved",
            g.memory_free_bytes / MIB,
            total_mib,
            ceil_mib(g.memory_reserved_bytes)
        ));
        device_notes.push(facts.join("; "));
        devices.push(Device {
            name,
            kind: DeviceKind::Cuda,
            model: Some(g.model.clone()),
            memory_mib: total_mib,
            reserved_mib: ceil_mib(used).min(total_mib),
            bandwidth_gbs,
            fp16_tflops: None,
            link_gbs,
            unified: false,
            endpoint: None,
            compute_capability: g.compute_capability.map(|(a, b)| format!("{a}.{b}")),
        });
    }
    let hardware = Hardware {
        name: None,
        host: host_cfg,
        devices,
    };
    Ok(Detected {
        hardware,
        device_notes,
        notes,
        gpu_unavailable,
    })
}

/// Write a detected machine as a commented hardware file that
/// [`Hardware::from_toml_str`] loads back unchanged.
pub fn render(d: &Detected) -> String {
    let hw = &d.hardware;
    let mut out = String::new();
    out.push_str(
        "# Hardware file written by `ggplan detect` (schema: README \"Hardware files\").\n",
    );
    out.push_str("# Reserves are memory in use at detection time; edit them to what you mean to keep free.\n");
    for n in &d.notes {
        out.push_str(&format!("# NOTE: {n}\n"));
    }
    out.push('\n');
    if let Some(name) = &hw.name {
        out.push_str(&format!("name = {}\n\n", crate::fsutil::toml_string(name)));
    }
    let h = &hw.host;
    out.push_str("[host]\n");
    out.push_str(&format!(
        "memory_mib = {}  # MemTotal (/proc/meminfo), or a lower cgroup limit\n",
        h.memory_mib
    ));
    out.push_str(&format!(
        "reserved_mib = {}  # MemTotal - MemAvailable at detection (see the notes above)\n",
        h.reserved_mib
    ));
    match h.bandwidth_gbs {
        Some(b) => out.push_str(&format!("bandwidth_gbs = {b:?}\n")),
        None => {
            out.push_str("# bandwidth_gbs = ?  # not detected: channels x MT/s x 8 bytes / 1000\n")
        }
    }
    if let Some(c) = h.cores {
        out.push_str(&format!(
            "cores = {c}  # physical cores (distinct thread_siblings)\n"
        ));
    }
    if let Some(n) = h.numa_nodes {
        out.push_str(&format!("numa_nodes = {n}\n"));
    }
    for (i, dev) in hw.devices.iter().enumerate() {
        out.push_str("\n[[devices]]\n");
        if let Some(note) = d.device_notes.get(i) {
            out.push_str(&format!("# {note}\n"));
        }
        out.push_str(&format!(
            "name = {}\n",
            crate::fsutil::toml_string(&dev.name)
        ));
        out.push_str(&format!(
            "kind = {}\n",
            crate::fsutil::toml_string(dev.kind.as_str())
        ));
        if let Some(m) = &dev.model {
            out.push_str(&format!("model = {}\n", crate::fsutil::toml_string(m)));
        }
        out.push_str(&format!("memory_mib = {}\n", dev.memory_mib));
        out.push_str(&format!("reserved_mib = {}\n", dev.reserved_mib));
        if let Some(b) = dev.bandwidth_gbs {
            out.push_str(&format!(
                "bandwidth_gbs = {b:?}  # bus width / 8 x max memory clock x 2\n"
            ));
        }
        if let Some(t) = dev.fp16_tflops {
            out.push_str(&format!("fp16_tflops = {t:?}\n"));
        } else {
            out.push_str(
                "# fp16_tflops = ?  # not detected: take it from the vendor's spec sheet\n",
            );
        }
        if let Some(l) = dev.link_gbs {
            out.push_str(&format!(
                "link_gbs = {l:?}  # GT/s x encoding x lanes / 8\n"
            ));
        }
        if dev.unified {
            out.push_str("unified = true\n");
        }
        if let Some(e) = &dev.endpoint {
            out.push_str(&format!("endpoint = {}\n", crate::fsutil::toml_string(e)));
        }
        if let Some(cc) = &dev.compute_capability {
            out.push_str(&format!(
                "compute_capability = {}  # nvmlDeviceGetCudaComputeCapability\n",
                crate::fsutil::toml_string(cc)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn rtx4090() -> GpuInfo {
        GpuInfo {
            model: "NVIDIA GeForce RTX 4090".into(),
            memory_total_bytes: 24564 * MIB,
            memory_free_bytes: 24000 * MIB,
            memory_reserved_bytes: 300 * MIB + 5,
            pcie_gen: Some(4),
            pcie_width: Some(16),
            bus_width_bits: Some(384),
            max_mem_clock_mhz: Some(10501),
            pci_bus_id: Some("00000000:01:00.0".into()),
            uuid: None,
            compute_capability: Some((8, 9)),
        }
    }

    fn host() -> HostInfo {
        HostInfo {
            memory_total_bytes: 64 * GIB,
            memory_available_bytes: Some(60 * GIB - 1),
            cores: Some(16),
            numa_nodes: Some(1),
            memory_limit_bytes: None,
        }
    }

    fn fixture(gpus: Vec<GpuInfo>) -> FixtureProbe {
        FixtureProbe {
            host: host(),
            gpus,
            nvml_error: None,
        }
    }

    #[test]
    fn gpu_numbers_come_from_the_probe() {
        let f = fixture(vec![rtx4090()]);
        let d = detect(&f, &f, &DetectOptions::default()).unwrap();
        let dev = &d.hardware.devices[0];
        assert_eq!(dev.name, "CUDA0");
        assert_eq!(dev.memory_mib, 24564);
        assert_eq!(dev.reserved_mib, 564); // total - free
        assert_eq!(dev.link_gbs, Some(31.51));
        assert_eq!(dev.compute_capability(), Some((8, 9)));
        assert_eq!(dev.bandwidth_gbs, Some(1008.1));
        assert_eq!(d.hardware.host.memory_mib, 65536);
        // 4 GiB + 1 byte in use rounds up to the next MiB.
        assert_eq!(d.hardware.host.reserved_mib, 4097);
        assert_eq!(d.hardware.host.cores, Some(16));
        assert!(d.gpu_unavailable.is_none());
    }

    #[test]
    fn ignore_used_keeps_only_the_driver_reserve() {
        let f = fixture(vec![rtx4090()]);
        let opts = DetectOptions {
            ignore_used: true,
            ..Default::default()
        };
        let d = detect(&f, &f, &opts).unwrap();
        assert_eq!(d.hardware.devices[0].reserved_mib, 301);
        assert_eq!(d.hardware.host.reserved_mib, 0);
    }

    #[test]
    fn no_driver_gives_a_cpu_only_file() {
        let f = FixtureProbe {
            host: host(),
            gpus: vec![],
            nvml_error: Some("libnvidia-ml.so.1: cannot open shared object file".into()),
        };
        let d = detect(&f, &f, &DetectOptions::default()).unwrap();
        assert!(d.hardware.devices.is_empty());
        assert!(d
            .gpu_unavailable
            .as_deref()
            .unwrap()
            .contains("libnvidia-ml"));
        let text = render(&d);
        assert!(text.contains("CPU-only"), "{text}");
        let back = Hardware::from_toml_str(&text).unwrap();
        assert_eq!(back, d.hardware);
    }

    #[test]
    fn render_round_trips_through_the_loader() {
        let mut odd = rtx4090();
        odd.model = "Quoted \"GPU\" \\ name".into();
        odd.pcie_gen = None;
        let f = fixture(vec![rtx4090(), odd]);
        let d = detect(&f, &f, &DetectOptions::default()).unwrap();
        let text = render(&d);
        let back = Hardware::from_toml_str(&text).unwrap();
        assert_eq!(back, d.hardware);
        assert_eq!(back.devices[1].name, "CUDA1");
        assert_eq!(back.devices[1].link_gbs, None);
        // Two GPUs without CUDA_DEVICE_ORDER: the order caveat is written.
        assert!(text.contains("CUDA_DEVICE_ORDER=PCI_BUS_ID"), "{text}");
    }

    #[test]
    fn pci_bus_order_silences_the_order_note() {
        let f = fixture(vec![rtx4090(), rtx4090()]);
        let opts = DetectOptions {
            cuda_device_order: Some("PCI_BUS_ID".into()),
            ..Default::default()
        };
        let d = detect(&f, &f, &opts).unwrap();
        assert!(d.notes.is_empty(), "{:?}", d.notes);
    }

    #[test]
    fn a_cgroup_limit_replaces_mem_total() {
        let mut f = fixture(vec![]);
        f.host.memory_limit_bytes = Some(16 * GIB);
        let d = detect(&f, &f, &DetectOptions::default()).unwrap();
        assert_eq!(
            (d.hardware.host.memory_mib, d.hardware.host.reserved_mib),
            (16384, 0)
        );
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("cgroup limit of 16384 MiB")),
            "{:?}",
            d.notes
        );
        // A "limit" above MemTotal (cgroup v1's unlimited value) is no limit.
        f.host.memory_limit_bytes = Some(9223372036854771712);
        let d = detect(&f, &f, &DetectOptions::default()).unwrap();
        assert_eq!(d.hardware.host.memory_mib, 65536);
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("17179869184\n"), Some(16 * GIB));
    }

    #[test]
    fn meminfo_parsing() {
        let text =
            "MemTotal:       65758216 kB\nMemFree:         1000 kB\nMemAvailable:   60000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((65758216 * 1024, Some(60000000 * 1024)))
        );
        assert_eq!(
            parse_meminfo("MemTotal: 1024 kB\n"),
            Some((1024 * 1024, None))
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    }
}
