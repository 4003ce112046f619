//! Hardware files, presets and NVML detection.
//!
//! Owns: the typed description of one machine ([`Hardware`]: a [`Host`] and
//! its [`Device`]s in llama.cpp's device order), loading and validating it
//! from TOML, the presets shipped in `hardware/`, and `detect` (NVIDIA GPUs
//! through NVML behind the [`GpuProbe`] trait, host RAM and cores from the
//! OS behind [`HostProbe`]). Does not own: what a model needs (see `model`)
//! or where it goes (the planners).
//!
//! # Capacities
//!
//! Every quantity is in MiB in the file and [`Bytes`](crate::units::Bytes)
//! in the API. A device's capacity is `memory − reserved`
//! ([`Device::capacity`]). A **unified** device (Strix Halo, Apple silicon)
//! has no memory of its own: its `memory_mib` is the part of host RAM the GPU
//! can address, so
//!
//! * its effective capacity is `min(memory − reserved, host capacity)`
//!   ([`Hardware::effective_capacity`]);
//! * it sits in [`Pool::Host`]: whatever is placed on the host *and* on every
//!   unified device together must fit [`Hardware::host_capacity`];
//! * [`Hardware::total_capacity`] counts that RAM once;
//! * [`Hardware::overflows`] checks a placement's [`Usage`] against both the
//!   per-device and the shared-pool limits, naming each [`Overflow`].
//!
//! # Example
//!
//! ```
//! use ggplan::hardware::{Hardware, Pool};
//! use ggplan::units::Bytes;
//!
//! let hw = Hardware::from_toml_str(r#"
//!     [host]
//!     memory_mib = 131072
//!     reserved_mib = 8192
//!     [[devices]]
//!     name = "Vulkan0"
//!     kind = "vulkan"
//!     memory_mib = 126976
//!     unified = true
//! "#).unwrap();
//! let gpu = hw.device("Vulkan0").unwrap();
//! assert_eq!(gpu.pool(), Pool::Host);
//! // 124 GiB addressable, but only 120 GiB of RAM is left after the reserve.
//! assert_eq!(hw.effective_capacity(gpu), Bytes::from_mib(122880));
//! assert_eq!(hw.total_capacity(), Bytes::from_mib(122880));
//! ```

mod detect;
mod error;
mod file;
mod fit;
pub mod link;
mod nvml;
pub mod presets;
mod write;

pub use detect::{
    detect, parse_meminfo, render, DetectOptions, Detected, FixtureProbe, GpuInfo, GpuProbe,
    HostInfo, HostProbe, OsHost,
};
pub use error::{HardwareError, ProbeError, WriteError};
pub use file::{Device, DeviceKind, Hardware, Host, Pool};
pub use fit::{Overflow, Usage};
pub use nvml::NvmlProbe;
pub use presets::load_file_or_preset;
pub use write::write_atomic;
