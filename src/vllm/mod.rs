//! vLLM tensor/pipeline-parallel validity and KV-cache budget, from a model's
//! config alone.
//!
//! Every rule mirrors one vLLM function and returns the text vLLM would
//! raise (`shared/notes/vllm-tp-rules.md` quotes each from the 0.11.0 and
//! 0.33.0 wheels). A rule whose input field is missing answers "unknown
//! because X is missing"; nothing is guessed.
//!
//! * [`config`] — [`ArchConfig`], the normalised architecture (HF
//!   `config.json`, notes tables, GGUF headers and profiles via [`gguf_meta`]);
//! * [`rules`] — one function per rule, each returning a [`rules::Finding`];
//! * [`memory`] — weights per rank, KV bytes per token per rank, the KV pool
//!   and the concurrency it allows;
//! * [`plan`] — every TP (and TP × PP) candidate and the recommendation;
//! * [`serve`] — the `vllm serve` command line.

pub mod config;
pub mod gguf_meta;
pub mod memory;
pub mod plan;
pub mod rules;
pub mod serve;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use config::ArchConfig;
pub use plan::{plan, Candidate, Plan, PlanOptions};

/// Errors from reading a model config.
#[derive(Debug, thiserror::Error)]
pub enum VllmError {
    #[error("{what}: invalid JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: invalid TOML")]
    Toml {
        what: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{what}: {detail}")]
    Shape { what: String, detail: String },
    #[error("--vllm {0:?}: expected a version like 0.11 or 0.33.0")]
    Version(String),
    #[error("{what}: cannot read the GGUF header")]
    Gguf {
        what: String,
        #[source]
        source: crate::gguf::GgufError,
    },
}

/// A vLLM release (major, minor); patch levels never changed a rule here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VllmVersion {
    pub major: u32,
    pub minor: u32,
}

impl VllmVersion {
    /// The newest release whose rules were read (`vllm-0.33.0` wheel).
    pub const LATEST: VllmVersion = VllmVersion::new(0, 33);

    pub const fn new(major: u32, minor: u32) -> VllmVersion {
        VllmVersion { major, minor }
    }

    /// Dense Marlin thread-tile padding (`marlin_padded_nk`, PR #45295) exists from 0.24.0.
    pub fn marlin_pads_dense(self) -> bool {
        self >= VllmVersion::new(0, 24)
    }

    /// MoE Marlin padding (`marlin_moe_padded_intermediate`, PR #45703) exists from 0.25.0.
    pub fn marlin_pads_moe(self) -> bool {
        self >= VllmVersion::new(0, 25)
    }

    /// `LinearBase._maybe_allow_fp8_block_shape_mismatch` (merged layers whose
    /// shards are misaligned skip the FP8-block check) was read in 0.33; 0.11 lacks it.
    pub fn skips_merged_fp8_block(self) -> bool {
        self >= VllmVersion::new(0, 33)
    }
}

impl FromStr for VllmVersion {
    type Err = VllmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('v');
        let mut it = t.split('.');
        let major = it.next().and_then(|x| x.parse().ok());
        // "33rc1" → 33
        let minor = it.next().and_then(|x| {
            let digits: String = x.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        match (major, minor) {
            (Some(major), Some(minor)) => Ok(VllmVersion { major, minor }),
            _ => Err(VllmError::Version(s.to_string())),
        }
    }
}

impl fmt::Display for VllmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The GPUs a plan is for. This is the seam the hardware files connect to:
/// `crate::hardware` fills one of these per node (count, per-GPU memory,
/// compute capability); the CLI fills it from `--gpus/--gpu-mem-gib/--compute-capability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GpuSpec {
    pub count: u32,
    /// Total memory of one GPU (what `torch.cuda.mem_get_info` reports as total).
    pub mem_bytes: Option<u64>,
    /// CUDA compute capability, e.g. (8, 6) for an RTX A4000 / 3090.
    pub compute_capability: Option<(u32, u32)>,
}

impl GpuSpec {
    /// Native FP8 GEMMs need SM ≥ 8.9 (vLLM `Fp8LinearMethod`: `use_marlin = not
    /// current_platform.has_device_capability(89)`); `None` when not known.
    pub fn fp8_native(&self) -> Option<bool> {
        self.compute_capability.map(|(ma, mi)| (ma, mi) >= (8, 9))
    }
}

/// The weight format served, with what the rules need from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum QuantScheme {
    /// BF16/FP16 weights: only the divide() rules.
    Bf16,
    /// FP8 per-channel / per-tensor (no TP alignment rule on FP8-capable GPUs).
    Fp8,
    /// FP8 with `weight_block_size = [block_n, block_k]`.
    Fp8Block { block_n: u64, block_k: u64 },
    /// AWQ int-N with group size (`None` = not known; -1 = channel-wise).
    Awq { bits: u64, group: Option<i64> },
    /// GPTQ int-N.
    Gptq { bits: u64, group: Option<i64> },
    /// compressed-tensors WNA16 (int weights, 16-bit activations).
    CtWna16 { bits: u64, group: Option<i64> },
    /// MXFP4 experts (gpt-oss): the per-rank intermediate is rounded up, no TP error.
    Mxfp4,
}

impl QuantScheme {
    pub fn is_fp8(self) -> bool {
        matches!(self, QuantScheme::Fp8 | QuantScheme::Fp8Block { .. })
    }

    /// Int-weight schemes with a group size (AWQ, GPTQ, compressed-tensors WNA16).
    pub fn int_group(self) -> Option<(u64, Option<i64>)> {
        match self {
            QuantScheme::Awq { bits, group }
            | QuantScheme::Gptq { bits, group }
            | QuantScheme::CtWna16 { bits, group } => Some((bits, group)),
            _ => None,
        }
    }

    pub fn label(self) -> String {
        match self {
            QuantScheme::Bf16 => "bf16".into(),
            QuantScheme::Fp8 => "fp8".into(),
            QuantScheme::Fp8Block { block_n, block_k } => format!("fp8-block[{block_n},{block_k}]"),
            QuantScheme::Awq { bits, group } => format!("awq w{bits} g{}", group_label(group)),
            QuantScheme::Gptq { bits, group } => format!("gptq w{bits} g{}", group_label(group)),
            QuantScheme::CtWna16 { bits, group } => {
                format!("compressed-tensors w{bits}a16 g{}", group_label(group))
            }
            QuantScheme::Mxfp4 => "mxfp4".into(),
        }
    }
}

fn group_label(g: Option<i64>) -> String {
    g.map_or_else(|| "?".into(), |g| g.to_string())
}

/// Round `x` up to a multiple of `m` (m > 0).
pub(crate) fn round_up(x: u64, m: u64) -> u64 {
    crate::units::pad(x, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            "0.11.0".parse::<VllmVersion>().unwrap(),
            VllmVersion::new(0, 11)
        );
        assert_eq!(
            "v0.24".parse::<VllmVersion>().unwrap(),
            VllmVersion::new(0, 24)
        );
        assert_eq!(
            "0.33rc1".parse::<VllmVersion>().unwrap(),
            VllmVersion::new(0, 33)
        );
        assert!("banana".parse::<VllmVersion>().is_err());
        assert!(!VllmVersion::new(0, 23).marlin_pads_dense());
        assert!(VllmVersion::new(0, 24).marlin_pads_dense());
        assert!(!VllmVersion::new(0, 24).marlin_pads_moe());
        assert!(VllmVersion::new(0, 25).marlin_pads_moe());
        assert!(!VllmVersion::new(0, 32).skips_merged_fp8_block());
    }

    #[test]
    fn fp8_native_from_compute_capability() {
        let g = |cc| GpuSpec {
            count: 1,
            mem_bytes: None,
            compute_capability: cc,
        };
        assert_eq!(g(Some((8, 6))).fp8_native(), Some(false));
        assert_eq!(g(Some((8, 9))).fp8_native(), Some(true));
        assert_eq!(g(Some((9, 0))).fp8_native(), Some(true));
        assert_eq!(g(None).fp8_native(), None);
    }
}
