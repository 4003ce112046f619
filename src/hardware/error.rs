//! Errors of the hardware module: loading and validating hardware files,
//! probing the machine, and writing detected files.

use std::path::PathBuf;

/// A hardware file that cannot be read, parsed or accepted.
///
/// Messages are lowercase, name the offending key (`host.reserved_mib`,
/// `devices[1] "CUDA1": reserved_mib`) and say what would be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardwareError {
    #[error("cannot read hardware file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, an unknown `kind` or a wrong type; the
    /// source carries toml's line and column.
    #[error("invalid hardware file{}", path_suffix(.path))]
    Parse {
        path: Option<PathBuf>,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("no hardware file or preset named {name:?} (presets: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("host.memory_mib must be greater than 0")]
    HostMemoryZero,
    #[error("host.reserved_mib ({reserved_mib}) exceeds host.memory_mib ({memory_mib})")]
    HostReserveExceedsMemory { reserved_mib: u64, memory_mib: u64 },
    #[error("{key} must be a positive finite number, got {value}")]
    NotPositive { key: String, value: f64 },
    #[error("{key} must be greater than 0")]
    ZeroCount { key: String },
    #[error("devices[{index}]: name must not be empty")]
    EmptyName { index: usize },
    #[error(
        "devices[{second}] \"{name}\": duplicate device name (first used by devices[{first}])"
    )]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
    #[error(
        "devices[{index}] \"{name}\": name does not match kind {kind} \
         (llama.cpp names {kind} devices {prefix}0, {prefix}1, ...)"
    )]
    NameKindMismatch {
        index: usize,
        name: String,
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("devices[{index}] \"{name}\": memory_mib must be greater than 0")]
    DeviceMemoryZero { index: usize, name: String },
    #[error(
        "devices[{index}] \"{name}\": reserved_mib ({reserved_mib}) exceeds memory_mib ({memory_mib})"
    )]
    DeviceReserveExceedsMemory {
        index: usize,
        name: String,
        reserved_mib: u64,
        memory_mib: u64,
    },
    #[error(
        "devices[{index}] \"{name}\": unified memory_mib ({memory_mib}) exceeds host.memory_mib \
         ({host_mib}); a unified device addresses part of the host's RAM"
    )]
    UnifiedExceedsHost {
        index: usize,
        name: String,
        memory_mib: u64,
        host_mib: u64,
    },
    #[error(
        "devices[{index}] \"{name}\": unified = true is not allowed on an rpc device \
         (its memory lives on the remote host, never in this host's RAM)"
    )]
    UnifiedRpc { index: usize, name: String },
    #[error("devices[{index}] \"{name}\": kind rpc needs endpoint = \"HOST:PORT\"")]
    EndpointMissing { index: usize, name: String },
    #[error("devices[{index}] \"{name}\": endpoint is only meaningful for kind rpc, not {kind}")]
    EndpointNotRpc {
        index: usize,
        name: String,
        kind: &'static str,
    },
    #[error(
        "devices[{index}] \"{name}\": endpoint \"{endpoint}\" is not HOST:PORT \
         (e.g. \"192.168.1.20:50052\", the address given to llama.cpp's --rpc)"
    )]
    BadEndpoint {
        index: usize,
        name: String,
        endpoint: String,
    },
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

/// Probing the machine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No usable NVIDIA driver (no `libnvidia-ml.so.1`, driver not loaded,
    /// no permission, or the binary was built without the `nvml` feature).
    /// `detect` treats this as "no NVIDIA GPU" and still succeeds.
    #[error("no NVIDIA GPU found through NVML: {reason}")]
    Unavailable { reason: String },
    /// A device was found but a required query (name, memory) failed.
    #[error("NVML query {query} failed for GPU {index}: {reason}")]
    Query {
        index: u32,
        query: &'static str,
        reason: String,
    },
    /// The host's RAM or cores could not be read.
    #[error("cannot read host {what}: {reason}")]
    Host { what: &'static str, reason: String },
    /// A probe fixture file could not be read or parsed.
    #[error("invalid probe fixture {path}")]
    Fixture {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Writing a hardware file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("{path} already exists (pass --force to overwrite it)")]
    Exists { path: PathBuf },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
