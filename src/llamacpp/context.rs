//! Context parameters as `llama_context::llama_context` derives them
//! (src/llama-context.cpp) from the flags, the tool and the model.

use super::build::LlamaBuild;
use super::flags::{Flags, FlashAttn, Tool};

/// The resolved context parameters (what llama.cpp logs as `n_ctx`,
/// `n_ctx_seq`, `n_batch`, `n_ubatch`, `n_seq_max`, `kv_unified`, `n_outputs_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxParams {
    pub n_ctx: u64,
    pub n_ctx_seq: u64,
    pub n_stream: u64,
    pub n_seq_max: u64,
    pub kv_unified: bool,
    pub n_batch: u64,
    pub n_ubatch: u64,
    pub n_outputs_max: u64,
    /// FA as used for the cache layout and the graph (`-fa auto` resolves to
    /// on where every FA node can run on its layer's device, which holds for
    /// the backends modelled here).
    pub flash_attn: bool,
    /// V stored transposed (`v_trans = flash_attn_type == DISABLED` at cache
    /// creation; `-fa auto` creates the cache as if FA were on).
    pub v_trans: bool,
}

impl CtxParams {
    /// `n_ctx_train`: the model's training context (after `--override-kv`).
    pub fn resolve(flags: &Flags, build: LlamaBuild, n_ctx_train: u64) -> CtxParams {
        // Server default `-np -1` = 4 slots + unified KV (tools/server/server.cpp,
        // PR #16736); every other tool defaults to 1 slot.
        let auto_np = flags.n_parallel.is_none();
        let server_auto = flags.tool == Tool::Server && auto_np && build.server_np_auto();
        let n_seq_max = match flags.n_parallel {
            Some(n) => u64::from(n),
            None if server_auto => 4,
            None => 1,
        };
        let kv_unified = flags.kv_unified.unwrap_or(server_auto);

        // llama_context ctor: n_ctx = c or n_ctx_train; n_batch = min(n_ctx, b)
        // (causal models, un-padded n_ctx); n_ubatch = min(n_batch, ub).
        let mut n_ctx = match flags.ctx {
            Some(c) if c > 0 => c,
            _ => n_ctx_train.max(1),
        };
        let n_batch = n_ctx.min(flags.batch.max(1));
        let n_ubatch = n_batch.min(if flags.ubatch == 0 {
            flags.batch.max(1)
        } else {
            flags.ubatch
        });

        // Outputs reserved in the graph (§4.3): the server asks for
        // n_parallel·(1 + n_draft) (server-context.cpp `server_output_limits`,
        // n_draft = `common_speculative_n_max` of the --spec-type list), other
        // tools leave the API default 0 ⇒ n_batch.
        let n_outputs_max = if flags.tool == Tool::Server && build.server_limits_outputs() {
            n_batch.min(server_step_tokens(n_seq_max, flags.n_draft()))
        } else {
            n_batch
        };

        let pad = build.ctx_pad();
        n_ctx = n_ctx.div_ceil(pad) * pad;
        let (n_ctx_seq, n_stream) = if kv_unified {
            (n_ctx, 1)
        } else {
            let seq = (n_ctx / n_seq_max).div_ceil(pad) * pad;
            n_ctx = seq * n_seq_max;
            (seq, n_seq_max)
        };

        let flash_attn = flags.flash_attn != FlashAttn::Off;
        CtxParams {
            n_ctx,
            n_ctx_seq,
            n_stream,
            n_seq_max,
            kv_unified,
            n_batch,
            n_ubatch,
            n_outputs_max,
            flash_attn,
            v_trans: flags.flash_attn == FlashAttn::Off,
        }
    }

    /// Tokens of the worst-case prompt graph (`sched_reserve`: min(n_ctx,
    /// n_ubatch), rounded up to a multiple of n_seqs by `graph_reserve`).
    pub fn pp_tokens(&self) -> u64 {
        let t = self.n_ctx.min(self.n_ubatch);
        t.div_ceil(self.n_seq_max) * self.n_seq_max
    }

    /// Outputs of the prompt graph: min(n_tokens, n_outputs_max).
    pub fn pp_outputs(&self) -> u64 {
        self.pp_tokens().min(self.n_outputs_max)
    }
}

/// Tokens one llama-server step can put into a batch with speculative
/// decoding: every slot's sampled token plus its `n_draft` drafted ones,
/// `n_parallel·(1 + n_draft)` (server-context.cpp `server_output_limits`).
/// The server reserves this many outputs and needs `-b` at least this large.
pub fn server_step_tokens(n_parallel: u64, n_draft: u64) -> u64 {
    n_parallel.max(1) * (1 + n_draft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llamacpp::build::FIXTURE_BUILD;

    fn ctx(args: &[&str], tool: Tool) -> CtxParams {
        let mut f = Flags::parse(args).unwrap();
        f.tool = tool;
        CtxParams::resolve(&f, FIXTURE_BUILD, 4096)
    }

    #[test]
    fn server_default_is_four_unified_slots() {
        let c = ctx(&["-c", "4096"], Tool::Server);
        assert_eq!((c.n_seq_max, c.kv_unified, c.n_stream), (4, true, 1));
        assert_eq!((c.n_ctx, c.n_ctx_seq), (4096, 4096));
        assert_eq!(c.n_outputs_max, 4);
    }

    #[test]
    fn non_unified_rounds_per_sequence_up() {
        // §9: c=4096, S=3 -> n_ctx_seq 1536, n_ctx 4608.
        let c = ctx(&["-c", "4096", "-np", "3"], Tool::Completion);
        assert_eq!((c.n_ctx_seq, c.n_ctx, c.n_stream), (1536, 4608, 3));
        assert_eq!(c.n_outputs_max, 2048);
        assert_eq!(c.pp_tokens(), 513);
    }

    #[test]
    fn pads_to_256_and_clamps_batches() {
        let c = ctx(&["-c", "5000", "-np", "1"], Tool::Server);
        assert_eq!(c.n_ctx, 5120);
        let c = ctx(
            &["-c", "300", "-b", "1024", "-ub", "512", "-np", "1"],
            Tool::Completion,
        );
        assert_eq!((c.n_batch, c.n_ubatch, c.n_ctx), (300, 300, 512));
        assert_eq!(c.pp_tokens(), 300);
        let c = ctx(&[], Tool::Server);
        assert_eq!(c.n_ctx, 4096);
        assert!(c.flash_attn && !c.v_trans);
        let c = ctx(&["-fa", "off"], Tool::Server);
        assert!(!c.flash_attn && c.v_trans);
    }
}
