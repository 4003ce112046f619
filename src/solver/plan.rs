//! The planner: search the decision space (context, slots, micro-batch,
//! flash attention, KV types × placement), re-simulate the winner's argv,
//! and feed any overflow the simulator finds back into the capacities until
//! the emitted flags are ones the simulator says fit.

use crate::llamacpp::context::server_step_tokens;
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use super::costs::{at_context, weights, Costs, CtxConfig};
use super::dp::{self, Problem};
use super::flags::{argv, DraftPlan, Plan};
use super::layout::{memory, summary, Layout};
use super::milp::{self, Limits, Status};
use super::sim::{SimError, SimReport, Simulator};
use super::speed::{predict, Prediction, Rates, Share};
use crate::gguf::GgmlType;
use crate::hardware::{Hardware, Overflow, Usage};
use crate::llamacpp::{self, flags as llflags};
use crate::model::Model;
use crate::units::{Bytes, MIB};

/// The context to plan for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxRequest {
    /// `--ctx N` (rounded up to what llama.cpp allocates).
    Fixed(u64),
    /// `--max-ctx`: the largest that fits (up to the training context).
    Max,
}

/// Which solver decides the placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SolverChoice {
    /// The DP; the MILP too when the DP is not exact for the model.
    #[default]
    Auto,
    Dp,
    Milp,
}

/// What the user asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub ctx: CtxRequest,
    pub slots: u32,
    pub kv_unified: bool,
    /// `-ub` candidates.
    pub ubatch: Vec<u64>,
    /// `-b` (default: 2048, at least the micro-batch).
    pub batch: Option<u64>,
    /// `-fa` candidates.
    pub flash_attn: Vec<bool>,
    /// Allowed `(-ctk, -ctv)` pairs.
    pub kv_types: Vec<(GgmlType, GgmlType)>,
    /// Left free on every device (CUDA context, pools; `--fit` leaves 1 GiB).
    pub margin: Bytes,
    /// Restrict to these devices (names), in this order.
    pub devices: Option<Vec<String>>,
    /// May move routed experts (dense: FFNs) of device layers to the host.
    pub allow_ffn_host: bool,
    pub solver: SolverChoice,
    pub limits: Limits,
    /// Pin the draft model ([`Planner::with_draft`]) here; `None`: the
    /// planner tries every GPU and the host and keeps the fastest plan.
    pub draft_place: Option<DraftPlace>,
    /// Try other `-dev` orders (the output layer and the last blocks on
    /// another GPU) when `devices` is not given.
    pub reorder: bool,
    /// The `-dev` order of one candidate (hardware indices); set by the
    /// search, `None` = the planner's default order.
    pub dev_order: Option<Vec<usize>>,
}

/// Where the draft model goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftPlace {
    /// Every draft layer on this hardware device (`-ngld all -devd NAME`).
    Device(usize),
    /// No draft layer offloaded (`-ngld 0`).
    Host,
}

/// A draft model for speculative decoding (`ggplan plan --draft`).
#[derive(Clone, Debug)]
pub struct DraftModel<'a> {
    pub model: &'a Model,
    /// The GGUF path llama-server loads (`-md`).
    pub path: String,
    /// Tokens drafted per step (`--spec-draft-n-max`); with `auto`, the
    /// most the planner considers (memory and `-b` are sized for it).
    pub n_max: u32,
    /// Choose the tokens per step in `1..=n_max` by the speed model.
    pub auto: bool,
    /// Probability that the target accepts one drafted token (assumed
    /// independent per position; README "Speed model").
    pub accept: f64,
}

/// The speculative-decoding part of a prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DraftPrediction {
    /// Where the draft runs (`CPU` for the host).
    pub device: String,
    pub n_max: u32,
    pub accept: f64,
    /// Tokens produced per draft-and-verify step: `(1 − a^(n+1)) / (1 − a)`.
    pub tokens_per_step: f64,
    /// The draft model's own decode speed at its placement.
    pub draft_decode_tps: f64,
    /// Seconds of one target pass verifying `n_max + 1` tokens.
    pub verify_s: f64,
    /// The target alone, without speculation.
    pub target_decode_tps: f64,
    /// `tokens_per_step / (n_max · draft decode s + verify s)`.
    pub effective_decode_tps: f64,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            ctx: CtxRequest::Fixed(4096),
            slots: 1,
            kv_unified: false,
            ubatch: vec![512],
            batch: None,
            flash_attn: vec![true],
            kv_types: vec![(GgmlType::F16, GgmlType::F16)],
            margin: Bytes::from_mib(1024),
            devices: None,
            allow_ffn_host: true,
            solver: SolverChoice::Auto,
            limits: Limits::default(),
            draft_place: None,
            reorder: true,
            dev_order: None,
        }
    }
}

/// A nearby request that does fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Nearest {
    /// What changes, e.g. `-c 16384` or `-ctk q8_0 -ctv q8_0`.
    pub change: String,
    pub n_ctx: u64,
    pub decode_tps: f64,
    pub argv: Vec<String>,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("the request does not fit: {}", .short.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; "))]
    DoesNotFit {
        short: Vec<Overflow>,
        nearest: Vec<Nearest>,
    },
    #[error("no device named {0} in the hardware description")]
    UnknownDevice(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("simulating the plan's flags")]
    Sim(#[from] SimError),
    #[error("the simulator keeps finding overflows the planning model does not: {}", .0.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("; "))]
    Unconverged(Vec<Overflow>),
}

/// A planned, simulated deployment.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub argv: Vec<String>,
    pub prediction: Prediction,
    /// Whether every rate came from the hardware file (else the prediction
    /// only ranked plans and is not reported).
    pub rates_complete: bool,
    pub status: Status,
    /// Wall time spent in the solvers.
    pub solver_ms: f64,
    /// The simulator's account of `argv`.
    pub report: SimReport,
    /// Capacity each hardware device was planned against (after margin and
    /// simulator feedback).
    pub capacity: Vec<Bytes>,
    /// Solve → simulate rounds (1 = the first plan passed).
    pub rounds: u32,
    /// Speculative decoding with the draft model, when planned with one.
    pub draft: Option<DraftPrediction>,
}

/// The per-model, per-machine setup shared by every candidate.
pub struct Planner<'a> {
    pub model: &'a Model,
    pub hw: &'a Hardware,
    pub rates: Rates,
    weights: Costs,
    order: Vec<usize>,
    /// Whether `--devices` fixed the order.
    order_given: bool,
    /// Movable FFNs all alike (the DP is exact then).
    alike: bool,
    draft: Option<DraftModel<'a>>,
    /// The hardware as the exact simulator sees it (draft reservations).
    sim_devices: Vec<llamacpp::Device>,
}

/// Step of `-c` values llama.cpp keeps as given (`n_ctx` padded to 256;
/// per sequence without a unified cache).
pub fn ctx_step(slots: u32, kv_unified: bool) -> u64 {
    256 * if kv_unified {
        1
    } else {
        u64::from(slots.max(1))
    }
}

fn round_up(x: u64, step: u64) -> u64 {
    x.div_ceil(step).max(1) * step
}

impl<'a> Planner<'a> {
    pub fn new(
        model: &'a Model,
        hw: &'a Hardware,
        devices: Option<&[String]>,
    ) -> Result<Planner<'a>, PlanError> {
        let order = match devices {
            Some(names) => names
                .iter()
                .map(|n| {
                    hw.devices
                        .iter()
                        .position(|d| &d.name == n)
                        .ok_or_else(|| PlanError::UnknownDevice(n.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => (0..hw.devices.len()).collect(),
        };
        let weights = weights(model);
        let alike = {
            let mv: Vec<_> = weights
                .layers
                .iter()
                .filter(|l| l.ffn_bytes > 0)
                .map(|l| (l.ffn_bytes, l.ffn_largest, l.ffn_read.to_bits()))
                .collect();
            mv.windows(2).all(|w| w[0] == w[1])
        };
        Ok(Planner {
            model,
            hw,
            rates: Rates::from_hardware(hw),
            weights,
            order,
            order_given: devices.is_some(),
            alike,
            draft: None,
            sim_devices: llamacpp::device::from_hardware(hw),
        })
    }

    /// Plan with a draft model: its memory is reserved where the plan puts
    /// it, its flags are emitted and simulated, and the speed is the
    /// effective speed of speculative decoding. Pass [`Self::plan`] a
    /// simulator that loads the draft too
    /// ([`super::exact::LlamaCppDraftSimulator`]); the plain one ignores `-md`.
    pub fn with_draft(mut self, draft: DraftModel<'a>) -> Planner<'a> {
        self.draft = Some(draft);
        self
    }

    /// The draft model, if any.
    pub fn draft(&self) -> Option<&DraftModel<'a>> {
        self.draft.as_ref()
    }

    fn order_of<'r>(&'r self, req: &'r Request) -> &'r [usize] {
        req.dev_order.as_deref().unwrap_or(&self.order)
    }

    /// `-dev` orders worth trying: the default, and with 2–4 devices and
    /// bandwidths in the hardware file, each device moved last (it then
    /// holds the output layer and the last blocks; llama.cpp assigns ranges
    /// in `-dev` order, `load_tensors`) and each moved first (it receives
    /// the op-offload copies). Two devices: both orders.
    fn orders(&self, req: &Request) -> Vec<Vec<usize>> {
        if let Some(o) = &req.dev_order {
            return vec![o.clone()];
        }
        let mut out = vec![self.order.clone()];
        // Orders are ranked by predicted speed: only with real rates (the
        // defaults make every GPU alike and would pick an unusual order on noise).
        if req.reorder
            && self.rates.complete
            && !self.order_given
            && (2..=4).contains(&self.order.len())
        {
            for k in 0..self.order.len() {
                // Moved last: it holds the output layer and the last blocks.
                let mut o = self.order.clone();
                let d = o.remove(k);
                o.push(d);
                // Moved first: it takes the op-offload copies of host
                // weights during prefill (the first model device, §4.5).
                let mut f = self.order.clone();
                f.remove(k);
                f.insert(0, d);
                for o in [o, f] {
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
            }
        }
        out
    }

    /// Draft placements worth trying: the pinned one, else every GPU of
    /// the order (fastest first) and the host.
    fn draft_places(&self, req: &Request) -> Vec<Option<DraftPlace>> {
        if self.draft.is_none() {
            return vec![None];
        }
        if let Some(p) = req.draft_place {
            return vec![Some(p)];
        }
        let mut gpus = self.order.clone();
        gpus.sort_by(|&a, &b| {
            let bw = |d: usize| self.rates.devices.get(d).map_or(0.0, |r| r.bandwidth_gbs);
            bw(b).total_cmp(&bw(a))
        });
        gpus.into_iter()
            .map(|d| Some(DraftPlace::Device(d)))
            .chain([Some(DraftPlace::Host)])
            .collect()
    }

    /// The draft context's flags as llama-server derives them from the
    /// plan's (`llamacpp::draft_flags`), for a draft at `place`.
    fn draft_llama_flags(
        &self,
        cfg: &CtxConfig,
        place: DraftPlace,
        order: &[usize],
    ) -> llflags::Flags {
        let name = |d: usize| self.hw.devices[d].name.clone();
        let main = llflags::Flags {
            ctx: Some(cfg.n_ctx),
            batch: cfg.batch,
            ubatch: cfg.ubatch,
            n_parallel: Some(cfg.n_seq),
            kv_unified: Some(cfg.kv_unified),
            flash_attn: if cfg.flash_attn {
                llflags::FlashAttn::On
            } else {
                llflags::FlashAttn::Off
            },
            cache_type_k: cfg.type_k,
            cache_type_v: cfg.type_v,
            devices: Some(order.iter().map(|&d| name(d)).collect()),
            fit: false,
            ..llflags::Flags::default()
        };
        let df = llflags::DraftFlags {
            gpu_layers: match place {
                DraftPlace::Device(_) => llflags::GpuLayers::All,
                DraftPlace::Host => llflags::GpuLayers::N(0),
            },
            devices: match place {
                DraftPlace::Device(d) => Some(vec![name(d)]),
                DraftPlace::Host => None,
            },
            cache_type_k: Some(cfg.type_k),
            cache_type_v: Some(cfg.type_v),
            ..llflags::DraftFlags::default()
        };
        llamacpp::draft_flags(&main, &df)
    }

    /// What the draft model and its context take on each hardware device
    /// and on the host at `cfg`, by the exact simulator. `None`: llama.cpp
    /// would refuse it (e.g. a quantized V cache without flash attention).
    pub fn draft_use(
        &self,
        cfg: &CtxConfig,
        place: DraftPlace,
        order: &[usize],
    ) -> Option<(Vec<u64>, u64)> {
        let d = self.draft.as_ref()?;
        let f = self.draft_llama_flags(cfg, place, order);
        let sim = llamacpp::simulate(
            d.model,
            None,
            &self.sim_devices,
            &f,
            &llamacpp::Options::default(),
        )
        .ok()?;
        let n = self.hw.devices.len();
        let devs = sim.devices.iter().take(n).map(|u| u.total_bytes).collect();
        let host = sim.devices.get(n).map_or(0, |u| u.total_bytes);
        Some((devs, host))
    }

    /// Capacities left for the target model once the draft of `req` is
    /// reserved at `cfg`; `None` when the draft cannot be placed there.
    fn reserve(
        &self,
        cfg: &CtxConfig,
        caps: &(Vec<u64>, u64),
        req: &Request,
    ) -> Option<(Vec<u64>, u64)> {
        let Some(place) = req.draft_place.filter(|_| self.draft.is_some()) else {
            return Some(caps.clone());
        };
        let (devs, host) = self.draft_use(cfg, place, self.order_of(req))?;
        let mut out = caps.clone();
        for (c, u) in out.0.iter_mut().zip(&devs) {
            if *u > *c {
                return None;
            }
            *c -= u;
        }
        out.1 = out.1.checked_sub(host)?;
        Some(out)
    }

    /// Planning capacities: each device's effective capacity minus the margin; the host pool.
    pub fn capacities(&self, margin: Bytes) -> (Vec<u64>, u64) {
        let devs = self
            .hw
            .devices
            .iter()
            .map(|d| self.hw.effective_capacity(d).saturating_sub(margin).0)
            .collect();
        (devs, self.hw.host_capacity().0)
    }

    pub fn costs(&self, cfg: &CtxConfig) -> Costs {
        let mut c = at_context(self.model, &self.weights, cfg);
        if let Some(d) = &self.draft {
            // With a draft the server reserves n_parallel·(1 + n_draft)
            // outputs in the target's graph (server_output_limits).
            let t = cfg.pp_tokens();
            let outputs = t
                .min(server_step_tokens(u64::from(cfg.n_seq), u64::from(d.n_max)))
                .min(cfg.batch);
            c.output_act = super::costs::output_act(self.model, t, outputs);
        }
        c
    }

    fn problem<'c>(
        &'c self,
        c: &'c Costs,
        cfg: &CtxConfig,
        caps: &(Vec<u64>, u64),
        allow: bool,
        order: &[usize],
    ) -> Problem<'c> {
        Problem {
            costs: c,
            rates: &self.rates,
            order: order.to_vec(),
            capacity: caps.0.clone(),
            host_capacity: caps.1,
            op_offload: true,
            ubatch: cfg.pp_tokens(),
            allow_ffn_host: allow,
            prefill_weight: 0.0,
        }
    }

    /// Whether a layout fits the planning capacities (the DP's view plus the
    /// host side of moved FFNs, which the DP does not count).
    pub fn fits(&self, c: &Costs, l: &Layout, caps: &(Vec<u64>, u64), ub: u64) -> bool {
        let (h, d) = memory(c, l, self.hw.devices.len(), true, ub);
        h.total() <= caps.1 && d.iter().zip(&caps.0).all(|(m, &cap)| m.total() <= cap)
    }

    /// Decode seconds of a layout in the planning model.
    pub fn decode_s(&self, c: &Costs, layout: &Layout, ub: u64) -> f64 {
        self.predict_at(c, layout, ub).decode_s
    }

    fn predict_at(&self, c: &Costs, layout: &Layout, ub: u64) -> Prediction {
        predict(
            &summary(c, layout, self.hw.devices.len(), true, ub),
            &self.rates,
        )
    }

    /// Best layout at one context: the DP (pure, and with FFNs on the host),
    /// then the MILP where the DP is not exact. `None`: nothing fits.
    pub fn solve(
        &self,
        cfg: &CtxConfig,
        caps: &(Vec<u64>, u64),
        req: &Request,
    ) -> Option<(Layout, Status, f64)> {
        self.solve_with(cfg, caps, req, None)
    }

    /// [`Self::solve`], given `comb_known`: the host-FFN DP's layout at
    /// exactly this configuration and capacities, if already computed.
    fn solve_with(
        &self,
        cfg: &CtxConfig,
        caps: &(Vec<u64>, u64),
        req: &Request,
        comb_known: Option<Layout>,
    ) -> Option<(Layout, Status, f64)> {
        let t0 = Instant::now();
        let caps = &self.reserve(cfg, caps, req)?;
        let order = self.order_of(req);
        let c = self.costs(cfg);
        let ub = cfg.pp_tokens();
        let moves = req.allow_ffn_host && c.movable.is_some();
        // One set of DP tables for the pure, host-FFN and lower-bound DPs
        // (they differ only in `allow_ffn_host`), one for the tie-breaks.
        let pure_p = self.problem(&c, cfg, caps, false, order);
        let mut tables = dp::Prepared::new(&pure_p);
        // The pure DP's value is also half of the lower bound below.
        let (pure, pure_value) = match dp::solve_valued_on(&pure_p, &mut tables) {
            Some((l, v)) => (Some(l), Some(v)),
            None => (None, None),
        };
        let comb_p = Problem {
            allow_ffn_host: true,
            ..pure_p.clone()
        };
        let comb = if moves {
            // The max-context search may have run this very DP already.
            comb_known.or_else(|| dp::solve_on(&comb_p, &mut tables))
        } else {
            None
        };
        let fits = |l: &Layout| self.fits(&c, l, caps, ub);
        // The DP does not count the host side of moved FFNs: check it here.
        let comb_host_short = comb.as_ref().is_some_and(|l| !fits(l));
        // The same DPs with prefill as a small secondary term: where decode
        // ties (the host and a unified iGPU read one memory pool at one
        // bandwidth) they prefer the place that processes prompts faster.
        let pure_tie_p = Problem {
            prefill_weight: PREFILL_TIE_WEIGHT,
            ..pure_p.clone()
        };
        let mut tie_tables = dp::Prepared::new(&pure_tie_p);
        let pure_tie = dp::solve_on(&pure_tie_p, &mut tie_tables);
        let comb_tie = if moves {
            dp::solve_on(
                &Problem {
                    allow_ffn_host: true,
                    ..pure_tie_p
                },
                &mut tie_tables,
            )
        } else {
            None
        };
        // First the decode optimum (the exact planning objective), then the
        // tie-breaking layouts where they are as fast to decode and clearly
        // faster to prefill.
        let mut best: Option<(Layout, Prediction)> = None;
        for l in [pure, comb].into_iter().flatten() {
            let pred = self.predict_at(&c, &l, ub);
            if fits(&l) && best.as_ref().is_none_or(|b| pred.decode_s < b.1.decode_s) {
                best = Some((l, pred));
            }
        }
        // What the proofs below are about.
        let t_opt = best.as_ref().map_or(f64::INFINITY, |b| b.1.decode_s);
        for l in [pure_tie, comb_tie].into_iter().flatten() {
            let pred = self.predict_at(&c, &l, ub);
            if fits(&l) && best.as_ref().is_none_or(|b| tie_better(&pred, &b.1)) {
                best = Some((l, pred));
            }
        }
        let exact = !req.allow_ffn_host || c.movable.is_none() || (self.alike && !comb_host_short);
        let mut status = if exact {
            Status::DpExact
        } else {
            Status::DpFallback
        };
        // Where the DP is not exact, a relaxed DP bounds every layout from
        // below: a DP plan within the gap of it needs no MILP.
        let mut proven = exact;
        if !exact && req.solver != SolverChoice::Milp {
            if let (true, Some(lb)) = (
                best.is_some(),
                dp::lower_bound_given_pure_on(&comb_p, &mut tables, pure_value),
            ) {
                let t = &t_opt;
                if *t <= lb * (1.0 + 1e-9) {
                    status = Status::Optimal;
                    proven = true;
                } else if *t <= lb * (1.0 + f64::from(req.limits.mip_gap)) {
                    status = Status::Gap;
                    proven = true;
                }
            }
        }
        let run_milp = match req.solver {
            SolverChoice::Dp => false,
            SolverChoice::Milp => true,
            SolverChoice::Auto => !proven,
        };
        if run_milp && !order.is_empty() {
            let p = self.problem(&c, cfg, caps, req.allow_ffn_host, order);
            if let Ok(r) = milp::solve(&p, best.as_ref().map(|b| &b.0), req.limits) {
                let pred = self.predict_at(&c, &r.layout, ub);
                if fits(&r.layout)
                    && r.layout.is_contiguous()
                    && best
                        .as_ref()
                        .is_none_or(|b| pred.decode_s <= b.1.decode_s && !tie_better(&b.1, &pred))
                {
                    best = Some((r.layout, pred));
                    status = r.status;
                } else if best.is_some() && matches!(r.status, Status::Optimal | Status::Gap) {
                    // The MILP proved the DP's plan within its gap.
                    status = r.status;
                }
            }
        }
        best.map(|(l, _)| (l, status, t0.elapsed().as_secs_f64() * 1e3))
    }

    /// `-b` candidates for micro-batch `ub`, in order of preference:
    /// {2048, 4096, ub} ∩ [need, ∞) with need = max(ub, n_parallel·(1 +
    /// n_draft)) — with a draft the server puts every slot's sampled and
    /// drafted tokens into one batch of max(n_batch, n_parallel) tokens and
    /// asserts they fit (server-context.cpp `handle_last_sampled_token`);
    /// `need` itself when no candidate reaches it.
    ///
    /// Above `ub`, `-b` changes neither memory nor the reserved graph in
    /// b11434 (`llama_context`: n_ubatch = min(n_batch, ub), and the graph's
    /// outputs min(n_tokens, n_outputs_max) with n_tokens ≤ n_ubatch ≤
    /// n_batch), nor the speed model (prefill is per micro-batch): every
    /// candidate ties, so the preference order decides — llama.cpp's own
    /// default 2048 first (at most 2048 prompt tokens per `llama_decode`,
    /// which keeps other slots' decoding responsive), then 4096, then `ub`.
    pub fn batch_candidates(&self, req: &Request, ub: u64) -> Vec<u64> {
        let n_draft = self.draft.as_ref().map_or(0, |d| u64::from(d.n_max));
        let need = ub.max(server_step_tokens(u64::from(req.slots), n_draft));
        let mut out: Vec<u64> = [2048, 4096, ub]
            .into_iter()
            .filter(|&b| b >= need)
            .collect();
        out.dedup();
        if out.is_empty() {
            out.push(need);
        }
        out
    }

    /// The `-b` of a candidate: `--batch` if given (at least `ub`), else
    /// the first of [`Self::batch_candidates`].
    pub fn batch_for(&self, req: &Request, ub: u64) -> u64 {
        match req.batch {
            Some(b) => b.max(ub),
            None => self.batch_candidates(req, ub)[0],
        }
    }

    /// The context configuration for one candidate.
    pub fn config(
        &self,
        n_ctx: u64,
        req: &Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
    ) -> CtxConfig {
        let batch = self.batch_for(req, ub).min(n_ctx);
        CtxConfig {
            n_ctx,
            n_seq: req.slots.max(1),
            kv_unified: req.kv_unified,
            ubatch: ub.min(batch),
            batch,
            flash_attn: fa,
            type_k: kv.0,
            type_v: kv.1,
        }
    }

    /// The largest context (a multiple of the step, ≤ the training context)
    /// at which some placement fits; binary search (memory grows with context).
    pub fn max_ctx(
        &self,
        req: &Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
        caps: &(Vec<u64>, u64),
    ) -> Option<u64> {
        self.max_ctx_from(req, ub, fa, kv, caps, None)
    }

    /// The max-context searches' test at `k` context steps, for
    /// [`Self::max_ctx_near_by`] and [`Self::max_ctx_from_by`].
    fn fits_fn<'s>(
        &'s self,
        req: &'s Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
        caps: &'s (Vec<u64>, u64),
    ) -> impl FnMut(u64) -> bool + 's {
        move |k| self.fits_at(req, ub, fa, kv, caps, k).is_some()
    }

    /// [`Self::max_ctx`] starting from a guess `hint` (no bound on the
    /// answer, unlike `known` in [`Self::max_ctx_from`]): probe the hint and
    /// the step above it, gallop up or down with a doubling stride until the
    /// boundary is bracketed, then bisect. Memory grows with context, so
    /// `fits` has one boundary and this finds the same context as the full
    /// bisection; with a neighbouring row's answer as the hint that takes a
    /// few solves instead of ~log2(n_ctx_train/step).
    #[cfg(test)]
    fn max_ctx_near(
        &self,
        req: &Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
        caps: &(Vec<u64>, u64),
        hint: Option<u64>,
    ) -> Option<u64> {
        let (step, hi_k) = self.ctx_steps(req);
        Self::max_ctx_near_by(step, hi_k, hint, self.fits_fn(req, ub, fa, kv, caps))
    }

    /// The context step of `req` and the training context in steps (at
    /// least one): the largest context a max-context search returns.
    fn ctx_steps(&self, req: &Request) -> (u64, u64) {
        let step = ctx_step(req.slots, req.kv_unified);
        (step, (self.model.hparams.n_ctx_train / step).max(1))
    }

    /// [`Self::max_ctx_near`] over any test `fits(k)` (k context steps, at
    /// most `hi_k`; true below a boundary, false above).
    fn max_ctx_near_by(
        step: u64,
        hi_k: u64,
        hint: Option<u64>,
        mut fits: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        let Some(hint) = hint else {
            return Self::max_ctx_from_by(step, hi_k, None, fits);
        };
        let h = (hint / step).clamp(1, hi_k);
        if !fits(h) {
            // Below the hint: the same downward search as from a known bound.
            return Self::max_ctx_from_by(step, hi_k, Some(h * step), fits);
        }
        // `h` fits: gallop up until something does not.
        let mut lo = h;
        let hi;
        let mut stride = 1;
        loop {
            if lo == hi_k {
                return Some(lo * step);
            }
            let k = (lo + stride).min(hi_k);
            if fits(k) {
                lo = k;
                stride *= 2;
            } else {
                hi = k;
                break;
            }
        }
        Some(bisect(lo, hi, &mut fits) * step)
    }

    /// Whether some placement fits at `k` context steps (the max-context
    /// searches' test): the DP with host FFNs where allowed, then without.
    /// `Some(l)`: it fits, and `l` is the host-FFN DP's layout when that DP
    /// ran and fits — the same DP [`Self::solve`] runs at that context,
    /// which it then need not run again (`None`: fits otherwise).
    fn fits_at(
        &self,
        req: &Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
        caps: &(Vec<u64>, u64),
        k: u64,
    ) -> Option<Option<Layout>> {
        let step = ctx_step(req.slots, req.kv_unified);
        let cfg = self.config(k * step, req, ub, fa, kv);
        let caps = &self.reserve(&cfg, caps, req)?;
        let order = self.order_of(req);
        let c = self.costs(&cfg);
        let ok = |l: &Option<Layout>| {
            l.as_ref()
                .is_some_and(|l| self.fits(&c, l, caps, cfg.pp_tokens()))
        };
        let comb = req.allow_ffn_host && c.movable.is_some();
        let first = dp::solve(&self.problem(&c, &cfg, caps, comb, order));
        if ok(&first) {
            return Some(if comb { first } else { None });
        }
        (comb && ok(&dp::solve(&self.problem(&c, &cfg, caps, false, order)))).then_some(None)
    }

    /// [`Self::max_ctx`], given the answer `known` at capacities no smaller
    /// than `caps` (the previous solve → simulate round's; feedback only
    /// shrinks them). Memory grows with context (the binary search's own
    /// premise), so the answer is at most `known`: step down from it,
    /// doubling the stride, then bisect the bracket — the same context the
    /// full search finds, in a few solves instead of ~log2(n_ctx_train/step).
    fn max_ctx_from(
        &self,
        req: &Request,
        ub: u64,
        fa: bool,
        kv: (GgmlType, GgmlType),
        caps: &(Vec<u64>, u64),
        known: Option<u64>,
    ) -> Option<u64> {
        let (step, hi_k) = self.ctx_steps(req);
        Self::max_ctx_from_by(step, hi_k, known, self.fits_fn(req, ub, fa, kv, caps))
    }

    /// [`Self::max_ctx_from`] over any test `fits(k)` (see
    /// [`Self::max_ctx_near_by`]).
    fn max_ctx_from_by(
        step: u64,
        hi_k: u64,
        known: Option<u64>,
        mut fits: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        let (lo, mut hi);
        if let Some(h) = known.map(|n| (n / step).clamp(1, hi_k)) {
            if fits(h) {
                return Some(h * step);
            }
            // `hi` does not fit; find a `lo` that does below it.
            hi = h;
            let mut stride = 1;
            loop {
                let k = h.saturating_sub(stride).max(1);
                if fits(k) {
                    lo = k;
                    break;
                }
                if k == 1 {
                    return None;
                }
                hi = k;
                stride *= 2;
            }
        } else {
            if !fits(1) {
                return None;
            }
            (lo, hi) = (1u64, hi_k);
            if fits(hi) {
                return Some(hi * step);
            }
        }
        Some(bisect(lo, hi, &mut fits) * step)
    }

    fn plan_of(&self, layout: Layout, cfg: CtxConfig, req: &Request) -> Plan {
        let mut plan = Plan {
            layout,
            ctx: cfg,
            device_names: self.hw.devices.iter().map(|d| d.name.clone()).collect(),
            movable: self.weights.movable,
            draft: match (&self.draft, req.draft_place) {
                (Some(d), Some(p)) => Some(DraftPlan {
                    path: d.path.clone(),
                    device: match p {
                        DraftPlace::Device(i) => Some(i),
                        DraftPlace::Host => None,
                    },
                    n_max: d.n_max,
                }),
                _ => None,
            },
        };
        if self.draft.as_ref().is_some_and(|d| d.auto) {
            self.choose_n(&mut plan);
        }
        plan
    }

    /// `--draft-max auto`: the tokens per step in `1..=n_max` with the best
    /// predicted effective decode speed for this placement (ties: fewer).
    /// Memory and `-b` were sized for `n_max`, which bounds every choice.
    fn choose_n(&self, plan: &mut Plan) {
        let Some(n_max) = plan.draft.as_ref().map(|d| d.n_max) else {
            return;
        };
        let mut best = (n_max, f64::NEG_INFINITY);
        for n in 1..=n_max {
            if let Some(d) = plan.draft.as_mut() {
                d.n_max = n;
            }
            let tps = self
                .draft_prediction(plan)
                .map_or(0.0, |p| p.effective_decode_tps);
            if tps > best.1 * (1.0 + 1e-9) {
                best = (n, tps);
            }
        }
        if let Some(d) = plan.draft.as_mut() {
            d.n_max = best.0;
        }
    }

    /// The target model's own prediction (no speculation).
    fn predict_target(&self, plan: &Plan) -> Prediction {
        let c = self.costs(&plan.ctx);
        predict(
            &summary(
                &c,
                &plan.layout,
                self.hw.devices.len(),
                true,
                plan.ctx.pp_tokens(),
            ),
            &self.rates,
        )
    }

    /// Prediction of a plan. With a draft, decode is the effective speed
    /// of speculative decoding ([`Self::draft_prediction`]) and each
    /// place's share is of a speculative step (`n` draft decodes and one
    /// verify pass) per accepted token; prefill and the splits stay the
    /// target's.
    pub fn predict(&self, plan: &Plan) -> Prediction {
        let mut p = self.predict_target(plan);
        if let Some((d, verify, draft)) = self.speculate(plan) {
            p.decode_tps = d.effective_decode_tps;
            p.decode_s = 1.0 / d.effective_decode_tps;
            p.shares = step_shares(
                &verify.shares,
                &draft.shares,
                f64::from(d.n_max),
                d.tokens_per_step,
            );
        }
        p
    }

    /// Speculative decoding with the plan's draft (README "Speed model"):
    /// one step drafts `n` tokens (n draft decodes at the draft's
    /// placement) and verifies `n + 1` in one target pass, which reads the
    /// target's weights once but, for routed experts, the union of the
    /// experts `n + 1` tokens pick: a fraction `1 − (1 − k/E)^(n+1)` of each
    /// layer's experts instead of `k/E` (tokens assumed to pick experts
    /// independently). With each drafted token accepted with probability
    /// `a`, independently, a step yields `(1 − a^(n+1)) / (1 − a)` tokens.
    pub fn draft_prediction(&self, plan: &Plan) -> Option<DraftPrediction> {
        self.speculate(plan).map(|s| s.0)
    }

    /// [`Self::draft_prediction`], with the predictions of its verify pass
    /// and of one draft decode.
    fn speculate(&self, plan: &Plan) -> Option<(DraftPrediction, Prediction, Prediction)> {
        let dp = plan.draft.as_ref()?;
        let dm = self.draft.as_ref()?;
        let n = f64::from(dp.n_max);
        let target = self.predict_target(plan);
        // The verify pass.
        let mut c = self.costs(&plan.ctx);
        for l in &mut c.layers {
            if l.ffn_read < 1.0 {
                l.ffn_read = 1.0 - (1.0 - l.ffn_read).powf(n + 1.0);
            }
        }
        let verify = predict(
            &summary(
                &c,
                &plan.layout,
                self.hw.devices.len(),
                true,
                plan.ctx.pp_tokens(),
            ),
            &self.rates,
        );
        // One draft decode: the draft model whole on its device or the host.
        let dc = super::costs::costs(dm.model, &plan.ctx);
        let nl = dc.n_layer();
        let dl = Layout {
            layer_dev: vec![dp.device; nl + 1],
            ffn_host: vec![false; nl],
        };
        let draft = predict(
            &summary(&dc, &dl, self.hw.devices.len(), true, plan.ctx.pp_tokens()),
            &self.rates,
        );
        let a = dm.accept.clamp(0.0, 1.0);
        let tokens = if a >= 1.0 {
            n + 1.0
        } else {
            (1.0 - a.powf(n + 1.0)) / (1.0 - a)
        };
        let step = n * draft.decode_s + verify.decode_s;
        let d = DraftPrediction {
            device: dp
                .device
                .map_or_else(|| "CPU".to_string(), |d| self.hw.devices[d].name.clone()),
            n_max: dp.n_max,
            accept: a,
            tokens_per_step: tokens,
            draft_decode_tps: draft.decode_tps,
            verify_s: verify.decode_s,
            target_decode_tps: target.decode_tps,
            effective_decode_tps: tokens / step,
        };
        Some((d, verify, draft))
    }

    /// Overflows of a simulated report against the planning limits.
    pub fn overflows(&self, report: &SimReport, margin: Bytes) -> Vec<Overflow> {
        let mut out = Vec::new();
        for (d, r) in self.hw.devices.iter().zip(&report.devices) {
            let cap = self.hw.effective_capacity(d).saturating_sub(margin);
            if r.total() > cap.0 {
                out.push(Overflow {
                    target: d.name.clone(),
                    need: Bytes(r.total()),
                    capacity: cap,
                });
            }
        }
        let usage = Usage {
            host: Bytes(report.host.total()),
            devices: report.devices.iter().map(|r| Bytes(r.total())).collect(),
        };
        for o in self.hw.overflows(&usage) {
            if !out.iter().any(|x| x.target == o.target) {
                out.push(o);
            }
        }
        out
    }

    /// Plan one request: search the candidates, simulate, feed back, repeat.
    pub fn plan(&self, req: &Request, sim: &dyn Simulator) -> Result<Outcome, PlanError> {
        self.plan_hinted(req, sim, None)
    }

    /// [`Self::plan`], with `hint` a guess at the largest context (a
    /// neighbouring `--sweep` row's): the max-context search starts there
    /// instead of bisecting the whole range. Only the number of solves
    /// changes: memory grows with context (the search's premise), so the
    /// boundary it finds is the one the full bisection finds.
    fn plan_hinted(
        &self,
        req: &Request,
        sim: &dyn Simulator,
        hint: Option<u64>,
    ) -> Result<Outcome, PlanError> {
        if req.ubatch.is_empty() || req.flash_attn.is_empty() || req.kv_types.is_empty() {
            return Err(PlanError::BadRequest("empty candidate set".into()));
        }
        if let Some(d) = &self.draft {
            // common_speculative_are_compatible (common/speculative.cpp):
            // llama-server refuses a draft whose vocabulary size differs by
            // more than SPEC_VOCAB_MAX_SIZE_DIFFERENCE = 128 tokens.
            let (a, b) = (self.model.hparams.n_vocab, d.model.hparams.n_vocab);
            if a.abs_diff(b) > 128 {
                return Err(PlanError::BadRequest(format!(
                    "the draft's vocabulary ({b} tokens) differs from the target's ({a}) by more than 128: llama-server refuses it (common_speculative_are_compatible)"
                )));
            }
        }
        if let (Some(b), Some(d)) = (req.batch, &self.draft) {
            let need = server_step_tokens(u64::from(req.slots), u64::from(d.n_max));
            if b < need {
                return Err(PlanError::BadRequest(format!(
                    "-b {b} is below -np × (1 + draft tokens) = {need}: llama-server puts every slot's drafted tokens into one batch"
                )));
            }
        }
        let mut caps = self.capacities(req.margin);
        let mut rounds = 0;
        let mut solver_ms = 0.0;
        let mut known = Vec::new();
        loop {
            rounds += 1;
            let Some((plan, status, ms)) = self.search_from(req, &caps, &mut known, hint) else {
                return Err(self.does_not_fit(req, &caps));
            };
            solver_ms += ms;
            let args = argv(&plan);
            let report = sim.simulate(self.model, self.hw, &args)?;
            let over = self.overflows(&report, req.margin);
            if over.is_empty() {
                return Ok(Outcome {
                    prediction: self.predict(&plan),
                    draft: self.draft_prediction(&plan),
                    rates_complete: self.rates.complete,
                    plan,
                    argv: args,
                    status,
                    solver_ms,
                    report,
                    capacity: caps.0.iter().map(|&b| Bytes(b)).collect(),
                    rounds,
                });
            }
            if rounds >= MAX_ROUNDS {
                return Err(PlanError::Unconverged(over));
            }
            // The simulator needs more than the planning model said. Shrink
            // the planning capacity of each short place below what the model
            // says *this plan* uses there, by the excess plus a step that
            // doubles each round: shrinking the capacity alone can leave the
            // same plan optimal (a layer is hundreds of MiB, the excess a few),
            // and then every round re-emits the same flags. This way each
            // round forces a plan the model itself rates smaller on that
            // place, so the loop ends: with a plan that fits, or with the
            // place's capacity exhausted (then the search reports does-not-fit).
            let c = self.costs(&plan.ctx);
            let (_, d) = memory(
                &c,
                &plan.layout,
                self.hw.devices.len(),
                true,
                plan.ctx.pp_tokens(),
            );
            // The draft's share of each place, reserved on top of the plan.
            let drafted = plan.draft.as_ref().and_then(|d| {
                let place = d.device.map_or(DraftPlace::Host, DraftPlace::Device);
                self.draft_use(&plan.ctx, place, &plan.layout.used_devices())
            });
            let draft_dev = |i: usize| drafted.as_ref().map_or(0, |(d, _)| d[i]);
            let step = SHRINK_STEP << (rounds - 1).min(16);
            for o in &over {
                let excess = o.need.0.saturating_sub(o.capacity.0) + step;
                match self.hw.devices.iter().position(|dev| dev.name == o.target) {
                    Some(i) => {
                        let planned = d.get(i).map_or(caps.0[i], |m| m.total() + draft_dev(i));
                        caps.0[i] = caps.0[i].min(planned).saturating_sub(excess);
                    }
                    // The host pool may be short through a unified device's
                    // share of it, which the host's own total does not show:
                    // shrink from the capacity (the doubling step still ends
                    // the loop).
                    None => caps.1 = caps.1.saturating_sub(excess),
                }
            }
        }
    }

    /// Best plan over the candidate set at the given capacities.
    fn search(&self, req: &Request, caps: &(Vec<u64>, u64)) -> Option<(Plan, Status, f64)> {
        self.search_from(req, caps, &mut Vec::new(), None)
    }

    /// [`Self::search`], remembering each candidate's largest context in
    /// `known` (one entry per candidate, in loop order) and starting from
    /// the entries already there: valid while `caps` only shrink, as they
    /// do between feedback rounds of [`Self::plan`].
    fn search_from(
        &self,
        req: &Request,
        caps: &(Vec<u64>, u64),
        known: &mut Vec<Option<u64>>,
        hint: Option<u64>,
    ) -> Option<(Plan, Status, f64)> {
        let mut best: Option<(Plan, Status, f64, Prediction)> = None;
        let mut ms = 0.0;
        let mut i = 0;
        // Candidates: -dev orders × draft places × KV types × -fa × -ub.
        let mut cands = Vec::new();
        for order in self.orders(req) {
            for place in self.draft_places(req) {
                cands.push(Request {
                    dev_order: Some(order.clone()),
                    draft_place: place,
                    ..req.clone()
                });
            }
        }
        for req in &cands {
            for &kv in &req.kv_types {
                for &fa in &req.flash_attn {
                    for &ub in &req.ubatch {
                        let mut comb_at: Option<(u64, Option<Layout>)> = None;
                        let n_ctx = match req.ctx {
                            CtxRequest::Fixed(n) => {
                                round_up(n, ctx_step(req.slots, req.kv_unified))
                            }
                            CtxRequest::Max => {
                                let prev = known.get(i).copied();
                                i += 1;
                                let (step, hi_k) = self.ctx_steps(req);
                                // The answer is the last context that fit:
                                // keep its host-FFN DP layout for `solve`.
                                let fits = |k: u64| match self.fits_at(req, ub, fa, kv, caps, k) {
                                    Some(l) => {
                                        comb_at = Some((k * step, l));
                                        true
                                    }
                                    None => false,
                                };
                                let n = match prev {
                                    // Did not fit at larger capacities: nor here.
                                    Some(None) => None,
                                    Some(Some(n)) => {
                                        Self::max_ctx_from_by(step, hi_k, Some(n), fits)
                                    }
                                    None => Self::max_ctx_near_by(step, hi_k, hint, fits),
                                };
                                match known.get_mut(i - 1) {
                                    Some(slot) => *slot = n,
                                    None => known.push(n),
                                }
                                match n {
                                    Some(n) => n,
                                    None => continue,
                                }
                            }
                        };
                        let cfg = self.config(n_ctx, req, ub, fa, kv);
                        let comb = comb_at.take().filter(|a| a.0 == n_ctx).and_then(|a| a.1);
                        let Some((layout, status, t)) = self.solve_with(&cfg, caps, req, comb)
                        else {
                            continue;
                        };
                        ms += t;
                        let plan = self.plan_of(layout, cfg, req);
                        let pred = self.predict(&plan);
                        if best.as_ref().is_none_or(|b| {
                            better(&plan, &pred, &b.0, &b.3, req.ctx == CtxRequest::Max)
                        }) {
                            best = Some((plan, status, 0.0, pred));
                        }
                    }
                }
            }
        }
        best.map(|(p, s, _, _)| (p, s, ms))
    }

    fn does_not_fit(&self, req: &Request, caps: &(Vec<u64>, u64)) -> PlanError {
        // With unlimited host memory everything fits on the CPU, so the host
        // pool is what is short; report its need at the cheapest placement.
        let mut short = Vec::new();
        let n_ctx = match req.ctx {
            CtxRequest::Fixed(n) => round_up(n, ctx_step(req.slots, req.kv_unified)),
            CtxRequest::Max => ctx_step(req.slots, req.kv_unified),
        };
        let kv = req.kv_types[0];
        let cfg = self.config(n_ctx, req, req.ubatch[0], req.flash_attn[0], kv);
        let c = self.costs(&cfg);
        let open = (caps.0.clone(), u64::MAX);
        // A draft counted where it takes the least device memory.
        let draft_place = req
            .draft_place
            .or(self.draft.as_ref().map(|_| DraftPlace::Host));
        if let Some((layout, _, _)) = self.solve(
            &cfg,
            &open,
            &Request {
                solver: SolverChoice::Dp,
                draft_place,
                ..req.clone()
            },
        ) {
            let (h, devs) = memory(&c, &layout, self.hw.devices.len(), true, cfg.pp_tokens());
            let mut usage = Usage {
                host: Bytes(h.total()),
                devices: devs.iter().map(|m| Bytes(m.total())).collect(),
            };
            // The draft where it was counted (it is not in the layout).
            if let Some((du, dh)) = draft_place.and_then(|pl| self.draft_use(&cfg, pl, &self.order))
            {
                usage.host = Bytes(usage.host.0 + dh);
                for (u, x) in usage.devices.iter_mut().zip(du) {
                    *u = Bytes(u.0 + x);
                }
            }
            short = self.hw.overflows(&usage);
        }
        if short.is_empty() {
            // The solvers found nothing within their limits although the
            // devices could hold it with more host memory: report the total.
            short.push(Overflow {
                target: "all devices and the host".into(),
                need: Bytes(
                    c.layers
                        .iter()
                        .map(|l| l.fixed_bytes + l.ffn_bytes + l.kv_bytes)
                        .sum(),
                ),
                capacity: self.hw.total_capacity(),
            });
        }
        PlanError::DoesNotFit {
            short,
            nearest: self.nearest(req, caps),
        }
    }

    /// Nearby requests that fit: a smaller context, quantized KV, one slot,
    /// experts on the host.
    fn nearest(&self, req: &Request, caps: &(Vec<u64>, u64)) -> Vec<Nearest> {
        let mut out = Vec::new();
        let try_req = |out: &mut Vec<Nearest>, change: String, r: Request| -> bool {
            let Some((plan, _, _)) = self.search(&r, caps) else {
                return false;
            };
            let pred = self.predict(&plan);
            out.push(Nearest {
                change,
                n_ctx: plan.ctx.n_ctx,
                decode_tps: pred.decode_tps,
                argv: argv(&plan),
            });
            true
        };
        if let CtxRequest::Fixed(_) = req.ctx {
            let r = Request {
                ctx: CtxRequest::Max,
                ..req.clone()
            };
            if let Some((plan, _, _)) = self.search(&r, caps) {
                try_req(
                    &mut out,
                    format!("-c {}", plan.ctx.n_ctx),
                    Request {
                        ctx: CtxRequest::Fixed(plan.ctx.n_ctx),
                        ..req.clone()
                    },
                );
            }
        }
        for (k, v, name) in [
            (GgmlType::Q8_0, GgmlType::Q8_0, "q8_0"),
            (GgmlType::Q4_0, GgmlType::Q4_0, "q4_0"),
        ] {
            if !req.kv_types.contains(&(k, v)) {
                let r = Request {
                    kv_types: vec![(k, v)],
                    flash_attn: vec![true],
                    ..req.clone()
                };
                if try_req(&mut out, format!("-ctk {name} -ctv {name}"), r) {
                    break;
                }
            }
        }
        if req.slots > 1 {
            try_req(
                &mut out,
                "-np 1".into(),
                Request {
                    slots: 1,
                    ..req.clone()
                },
            );
        }
        if !req.allow_ffn_host {
            try_req(
                &mut out,
                "experts on the host".into(),
                Request {
                    allow_ffn_host: true,
                    ..req.clone()
                },
            );
        }
        out
    }
}

/// Solve → simulate rounds before giving up on the simulator's feedback.
const MAX_ROUNDS: u32 = 8;

/// Extra shrink of a short place's planning capacity in the first feedback
/// round (doubled each further round).
const SHRINK_STEP: u64 = 16 * MIB;

/// Weight of prefill seconds per prompt token in the tie-breaking DP: on a
/// CPU-vs-iGPU tie (~0.1 s vs ~1 ms per token for a 5 B-active model) it
/// shifts the objective by well under 1 % of decode time, so it decides ties
/// without overriding a real decode difference.
pub const PREFILL_TIE_WEIGHT: f64 = 0.01;

/// Relative difference below which two layouts' decode (prefill) times
/// count as equal (as in [`better`]).
const DECODE_TIE: f64 = 0.01;

/// The largest `k` in `[lo, hi)` with `fits(k)`, given that `lo` fits
/// and `hi` does not (one boundary: memory grows with context).
fn bisect(mut lo: u64, mut hi: u64, fits: &mut impl FnMut(u64) -> bool) -> u64 {
    debug_assert!(hi > lo);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Each place's decode seconds per accepted token under speculative
/// decoding: one step is `n` draft decodes and one verify pass and yields
/// `tokens`, so a place's time is `(n·draft + verify) / tokens`, in the
/// order CPU, devices, `sync` of the two lists. The shares sum to one, as
/// the times sum to the effective seconds per token.
fn step_shares(verify: &[Share], draft: &[Share], n: f64, tokens: f64) -> Vec<Share> {
    let mut names: Vec<&str> = Vec::new();
    for s in verify.iter().chain(draft) {
        if s.name != "sync" && !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    if verify.iter().chain(draft).any(|s| s.name == "sync") {
        names.push("sync");
    }
    let of = |list: &[Share], name: &str| {
        list.iter()
            .find(|s| s.name == name)
            .map_or(0.0, |s| s.decode_s)
    };
    let times: Vec<f64> = names
        .iter()
        .map(|&name| (n * of(draft, name) + of(verify, name)) / tokens.max(f64::MIN_POSITIVE))
        .collect();
    let total: f64 = times.iter().sum();
    names
        .into_iter()
        .zip(times)
        .map(|(name, decode_s)| Share {
            name: name.to_string(),
            decode_s,
            share: if total > 0.0 { decode_s / total } else { 0.0 },
        })
        .collect()
}

/// Placement ranking at one configuration: decode time; within
/// [`DECODE_TIE`] of each other, prefill time when it differs by more than
/// that too; else the incumbent `b` stays (no churn on rounding noise).
fn tie_better(a: &Prediction, b: &Prediction) -> bool {
    let (da, db) = (a.decode_s, b.decode_s);
    if (da - db).abs() > DECODE_TIE * da.max(db) {
        return da < db;
    }
    let (pa, pb) = (a.prefill_ubatch_s, b.prefill_ubatch_s);
    (pa - pb).abs() > DECODE_TIE * pa.max(pb) && pa < pb
}

/// Ranking: with `--max-ctx` the larger context first; then decode speed
/// (within 1 % counts as equal), then prefill speed.
fn better(a: &Plan, pa: &Prediction, b: &Plan, pb: &Prediction, max_ctx: bool) -> bool {
    if max_ctx && a.ctx.n_ctx != b.ctx.n_ctx {
        return a.ctx.n_ctx > b.ctx.n_ctx;
    }
    let (da, db) = (pa.decode_tps, pb.decode_tps);
    if (da - db).abs() > 0.01 * da.max(db) {
        return da > db;
    }
    pa.prefill_tps > pb.prefill_tps
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::solver::sim::PlanningSimulator;
    use crate::solver::synthetic::{build, Spec};

    fn two_gpus() -> Hardware {
        Hardware::from_toml_str(
            "[host]\nmemory_mib = 131072\nreserved_mib = 8192\nbandwidth_gbs = 80\ncores = 16\n\
             [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 24576\nbandwidth_gbs = 1008\nfp16_tflops = 165\nlink_gbs = 25\n\
             [[devices]]\nname = \"CUDA1\"\nkind = \"cuda\"\nmemory_mib = 16384\nreserved_mib = 3500\nbandwidth_gbs = 896\nfp16_tflops = 88\nlink_gbs = 25\n",
        )
        .unwrap()
    }

    #[test]
    fn plans_a_hybrid_moe_on_two_gpus_and_the_flags_reproduce_it() {
        let m = build(&Spec::qwen3_next_like());
        let hw = two_gpus();
        let p = Planner::new(&m, &hw, None).unwrap();
        let req = Request {
            ctx: CtxRequest::Fixed(65536),
            ..Request::default()
        };
        let out = p.plan(&req, &PlanningSimulator).unwrap();
        assert_eq!(out.report.layer_dev, out.plan.layout.layer_dev);
        assert_eq!(out.report.ffn_host, out.plan.layout.ffn_host);
        assert_eq!(out.status, Status::DpExact);
        assert_eq!(out.rounds, 1);
        // 45 GB of weights on 24 + 12.9 GB of GPUs: some experts on the host, no CPU layers.
        assert_eq!(out.plan.layout.n_cpu_layers(), 0);
        assert!(out.plan.layout.ffn_host.iter().any(|&h| h));
        let a = out.argv.join(" ");
        assert!(
            a.contains("-fit off") && a.contains("-c 65536") && a.contains("-ngl 49"),
            "{a}"
        );
        assert!(
            a.contains(r"ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"),
            "{a}"
        );
        assert!(out.prediction.decode_tps > 1.0 && out.rates_complete);
        // Each device within its capacity minus the 1 GiB margin.
        for (d, r) in hw.devices.iter().zip(&out.report.devices) {
            assert!(
                r.total() <= hw.effective_capacity(d).0 - 1024 * MIB,
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn max_ctx_is_the_largest_that_fits() {
        let m = build(&Spec::llama_8b_like());
        let hw = two_gpus();
        let p = Planner::new(&m, &hw, Some(&["CUDA1".to_string()])).unwrap();
        let req = Request {
            ctx: CtxRequest::Max,
            allow_ffn_host: false,
            ..Request::default()
        };
        let out = p.plan(&req, &PlanningSimulator).unwrap();
        let n = out.plan.ctx.n_ctx;
        assert!(n % 256 == 0 && n >= 4096, "{n}");
        // 256 more does not fit entirely on CUDA1.
        let caps = p.capacities(req.margin);
        let bigger = p.config(n + 256, &req, 512, true, (GgmlType::F16, GgmlType::F16));
        if n < m.hparams.n_ctx_train {
            let l = p.solve(&bigger, &caps, &req).unwrap().0;
            assert!(l.n_cpu_layers() > 0 || l.layer_dev[32].is_none());
        }
        assert_eq!(
            out.argv[out.argv.iter().position(|a| a == "-dev").unwrap() + 1],
            "CUDA1"
        );
    }

    #[test]
    fn max_ctx_near_a_hint_matches_the_full_search() {
        // Hints below, at and above the answer, and past the training
        // context, at capacities from roomy to nothing-fits.
        let (hw, _) = crate::hardware::presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let m = Model::load(&dir.join("qwen3-30b-a3b-q4_k_m.toml")).unwrap();
        let p = Planner::new(&m, &hw, None).unwrap();
        let kv = (GgmlType::F16, GgmlType::F16);
        let req = Request {
            ctx: CtxRequest::Max,
            slots: 2,
            ..Request::default()
        };
        let (devs, host) = p.capacities(req.margin);
        let mut answers = std::collections::BTreeSet::new();
        for k in (0..=32u64).step_by(2) {
            let caps = (
                devs.iter().map(|full| full - full / 32 * k).collect(),
                host - host / 32 * k,
            );
            let full = p.max_ctx(&req, 512, true, kv, &caps);
            for hint in [1, 256, 4096, 40_000, 131_072, 1 << 20] {
                let near = p.max_ctx_near(&req, 512, true, kv, &caps, Some(hint));
                assert_eq!(near, full, "hint {hint} caps {caps:?}");
            }
            answers.insert(full);
        }
        assert!(
            answers.len() >= 3,
            "the test must move the answer: {answers:?}"
        );
    }

    /// Feedback rounds start the context search from the previous round's
    /// answer: on two shipped profiles, for shrinking capacities, that finds
    /// exactly the context the full binary search finds.
    #[test]
    fn max_ctx_from_a_known_answer_matches_the_full_search() {
        let (hw, _) = crate::hardware::presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for file in ["qwen3-coder-next-q5_k_m.toml", "qwen3-30b-a3b-q4_k_m.toml"] {
            let m = Model::load(&dir.join(file)).unwrap();
            let p = Planner::new(&m, &hw, None).unwrap();
            let kv = (GgmlType::Q8_0, GgmlType::Q8_0);
            for slots in [1, 4] {
                let req = Request {
                    ctx: CtxRequest::Max,
                    slots,
                    ..Request::default()
                };
                let mut caps = p.capacities(req.margin);
                let mut known = p.max_ctx(&req, 512, true, kv, &caps);
                let mut changed = 0;
                // Shrink every place by growing steps (as feedback rounds
                // do) until nothing fits any more.
                let (devs, host) = caps.clone();
                for k in 1..=32u64 {
                    for (c, full) in caps.0.iter_mut().zip(&devs) {
                        *c = full - full / 32 * k;
                    }
                    caps.1 = host - host / 32 * k;
                    let full = p.max_ctx(&req, 512, true, kv, &caps);
                    let from = match known {
                        Some(n) => p.max_ctx_from(&req, 512, true, kv, &caps, Some(n)),
                        None => None,
                    };
                    assert_eq!(from, full, "{file} slots {slots} caps {caps:?}");
                    changed += usize::from(full != known);
                    known = full;
                }
                assert!(
                    changed >= 2,
                    "{file} slots {slots}: the test must move the answer"
                );
            }
        }
    }

    #[test]
    fn hand_written_placements_get_the_same_prediction() {
        let m = build(&Spec::qwen3_next_like());
        let hw = two_gpus();
        let p = Planner::new(&m, &hw, None).unwrap();
        let req = Request {
            ctx: CtxRequest::Fixed(32768),
            ..Request::default()
        };
        let out = p.plan(&req, &PlanningSimulator).unwrap();
        // Rebuild the layout from per-tensor places, as the exact simulator reports them.
        let l = &out.plan.layout;
        let layout = layout_from_tensors(&m, l.layer_dev.clone(), |i| match m.tensors[i].class {
            crate::model::TensorClass::Layer { layer, group } => {
                let il = layer as usize;
                if group == crate::model::TensorGroup::FfnRouted && l.ffn_host[il] {
                    Some(None)
                } else {
                    Some(l.layer_dev[il])
                }
            }
            _ => Some(None),
        });
        assert_eq!(&layout, l);
        let pred = predict_layout(&m, &hw, &out.plan.ctx, &layout, true).unwrap();
        assert_eq!(pred, out.prediction);
        // No bandwidths, no prediction.
        let bare = Hardware::from_toml_str("[host]\nmemory_mib = 65536\n").unwrap();
        assert!(predict_layout(&m, &bare, &out.plan.ctx, &Layout::cpu_only(48), true).is_none());
    }

    fn shipped(file: &str) -> Model {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        Model::load(&dir.join(file)).unwrap()
    }

    /// `d` drafting 3 tokens per step at 70 % acceptance (llama.cpp's
    /// default count), as `d.gguf`.
    pub(crate) fn draft3(d: &Model) -> DraftModel<'_> {
        DraftModel {
            model: d,
            path: "d.gguf".into(),
            n_max: 3,
            auto: false,
            accept: 0.7,
        }
    }

    /// Llama-3.1-8B Q8_0, its Llama-3.2-1B Q8_0 draft, the 8 GB laptop
    /// preset and a 32k request.
    pub(crate) fn laptop_llama_with_draft() -> (Model, Model, Hardware, Request) {
        let (hw, _) = crate::hardware::presets::load_file_or_preset("laptop-rtx4060").unwrap();
        let req = Request {
            ctx: CtxRequest::Fixed(32768),
            ..Request::default()
        };
        (
            shipped("llama-3.1-8b-q8_0.toml"),
            shipped("llama-3.2-1b-q8_0.toml"),
            hw,
            req,
        )
    }

    /// Llama-3.1-8B with its Llama-3.2-1B draft on the 8 GB laptop preset
    /// at 32k: the planner reserves the draft where it puts it, the exact
    /// simulator (which loads the draft too) agrees, and the draft on the
    /// GPU beats both the draft on the host and no draft at all although
    /// it costs the target six GPU layers.
    #[test]
    fn draft_on_the_gpu_is_reserved_simulated_and_faster() {
        use crate::solver::exact::{LlamaCppDraftSimulator, LlamaCppSimulator};
        let (m, d, hw, req) = laptop_llama_with_draft();
        let draft = draft3(&d);
        let sim = LlamaCppDraftSimulator {
            opts: Default::default(),
            draft: &d,
        };
        let p = Planner::new(&m, &hw, None)
            .unwrap()
            .with_draft(draft.clone());
        let out = p.plan(&req, &sim).unwrap();
        let a = out.argv.join(" ");
        assert!(
            a.contains("-md d.gguf --spec-type draft-simple --spec-draft-n-max 3 -ngld all -devd CUDA0 -ctkd f16 -ctvd f16"),
            "{a}"
        );
        assert_eq!(out.report.layer_dev, out.plan.layout.layer_dev);
        assert!(p.overflows(&out.report, req.margin).is_empty());
        // The report holds the draft: the target's flags alone leave out
        // exactly what the draft's own context takes on CUDA0 (weights with
        // the duplicated tied output 1.22 GiB, 32k × 16 layers f16 KV 1 GiB).
        let main_only: Vec<String> = {
            let k = out.argv.iter().position(|x| x == "-md").unwrap();
            let mut v = out.argv[..k].to_vec();
            v.extend(["-fit".to_string(), "off".to_string()]);
            v
        };
        let alone = LlamaCppSimulator::default()
            .simulate(&m, &hw, &main_only)
            .unwrap();
        let (du, _) = p
            .draft_use(&out.plan.ctx, DraftPlace::Device(0), &[0])
            .unwrap();
        assert_eq!(
            out.report.devices[0].total() - alone.devices[0].total(),
            du[0]
        );
        assert_eq!(
            out.report.devices[0].context_bytes - alone.devices[0].context_bytes,
            32768 * 16 * 2 * 512 * 2
        );
        let dp = out.draft.as_ref().unwrap();
        assert_eq!(dp.device, "CUDA0");
        // (1 − 0.7⁴) / 0.3 tokens per step.
        assert!((dp.tokens_per_step - 2.533).abs() < 1e-3);
        assert!(
            dp.effective_decode_tps > 1.8 * dp.target_decode_tps,
            "{dp:?}"
        );
        // The alternatives the search rejected.
        let host = p
            .plan(
                &Request {
                    draft_place: Some(DraftPlace::Host),
                    ..req.clone()
                },
                &sim,
            )
            .unwrap();
        assert!(host.argv.join(" ").contains("-ngld 0"));
        // Shares are of the speculative step per accepted token: they add
        // up to the effective seconds per token, and a draft on the host
        // gives the CPU a larger share than the target's own decode does.
        for o in [&out, &host] {
            let sum: f64 = o.prediction.shares.iter().map(|s| s.decode_s).sum();
            assert!((sum - o.prediction.decode_s).abs() <= 1e-9 * sum, "{sum}");
            let total: f64 = o.prediction.shares.iter().map(|s| s.share).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
        let cpu = |pr: &Prediction| {
            pr.shares
                .iter()
                .find(|s| s.name == "CPU")
                .map_or(0.0, |s| s.share)
        };
        let target_only = p.predict_target(&host.plan);
        assert!(
            cpu(&host.prediction) > cpu(&target_only) + 0.05,
            "{:?} vs {:?}",
            host.prediction.shares,
            target_only.shares
        );
        let plain = Planner::new(&m, &hw, None)
            .unwrap()
            .plan(&req, &LlamaCppSimulator::default())
            .unwrap();
        let gpu_layers = |o: &Outcome| o.plan.layout.layer_dev.iter().flatten().count();
        assert!(gpu_layers(&plain) >= gpu_layers(&out) + 6);
        assert!(out.prediction.decode_tps > 1.2 * host.prediction.decode_tps);
        assert!(host.prediction.decode_tps > 1.2 * plain.prediction.decode_tps);
    }

    #[test]
    fn device_orders_tried() {
        let m = build(&Spec::llama_8b_like());
        let gpu = |n: u32, bw: bool| {
            format!(
                "[[devices]]\nname = \"CUDA{n}\"\nkind = \"cuda\"\nmemory_mib = 8192\n{}",
                if bw {
                    "bandwidth_gbs = 500\nfp16_tflops = 50\nlink_gbs = 25\n"
                } else {
                    ""
                }
            )
        };
        let hw = |bw: bool| {
            Hardware::from_toml_str(&format!(
                "[host]\nmemory_mib = 65536\n{}\n{}{}{}",
                if bw {
                    "bandwidth_gbs = 80\ncores = 8"
                } else {
                    ""
                },
                gpu(0, bw),
                gpu(1, bw),
                gpu(2, bw)
            ))
            .unwrap()
        };
        let with_bw = hw(true);
        let p = Planner::new(&m, &with_bw, None).unwrap();
        let req = Request::default();
        assert_eq!(
            p.orders(&req),
            vec![
                vec![0, 1, 2],
                vec![1, 2, 0],
                vec![0, 2, 1],
                vec![1, 0, 2],
                vec![2, 0, 1]
            ]
        );
        let fixed = Request {
            reorder: false,
            ..Request::default()
        };
        assert_eq!(p.orders(&fixed), vec![vec![0, 1, 2]]);
        // --devices fixes the order; without bandwidths nothing ranks orders.
        let names = ["CUDA2".to_string(), "CUDA0".to_string()];
        let given = Planner::new(&m, &with_bw, Some(&names)).unwrap();
        assert_eq!(given.orders(&req), vec![vec![2, 0]]);
        let no_bw = hw(false);
        let p = Planner::new(&m, &no_bw, None).unwrap();
        assert_eq!(p.orders(&req), vec![vec![0, 1, 2]]);
    }

    /// Qwen3-30B-A3B with a Qwen3-0.6B draft: verifying 4 tokens reads the
    /// union of the experts they route to (1 − (1 − 8/128)⁴ = 22.8 % of
    /// each layer's instead of 6.25 %), so on the 4090 + 5070 Ti the draft
    /// predicts slower decoding than the target alone; on the laptop the
    /// draft's memory is what makes 16k no longer fit, and the error says so.
    #[test]
    fn a_moe_target_verifies_the_union_of_experts() {
        use crate::solver::exact::LlamaCppDraftSimulator;
        let m = shipped("qwen3-30b-a3b-q4_k_m.toml");
        let d = shipped("qwen3-0.6b-q8_0.toml");
        let draft = draft3(&d);
        let sim = LlamaCppDraftSimulator {
            opts: Default::default(),
            draft: &d,
        };
        let (hw, _) = crate::hardware::presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
        let p = Planner::new(&m, &hw, None)
            .unwrap()
            .with_draft(draft.clone());
        let req = Request {
            ctx: CtxRequest::Fixed(32768),
            ..Request::default()
        };
        let out = p.plan(&req, &sim).unwrap();
        let dp = out.draft.unwrap();
        // Every block on the GPUs: verify reads 22.8 % instead of 6.25 % of
        // the experts (attention and the 32k KV read once), 1.56× the
        // target's own decode time.
        let ratio = dp.verify_s * dp.target_decode_tps;
        assert!((1.5..1.6).contains(&ratio), "{ratio} {dp:?}");
        assert!(dp.effective_decode_tps < dp.target_decode_tps, "{dp:?}");

        let (laptop, _) = crate::hardware::presets::load_file_or_preset("laptop-rtx4060").unwrap();
        let q8 = Request {
            ctx: CtxRequest::Fixed(16384),
            kv_types: vec![(GgmlType::Q8_0, GgmlType::Q8_0)],
            ..Request::default()
        };
        let plain = Planner::new(&m, &laptop, None).unwrap();
        assert!(plain
            .plan(&q8, &crate::solver::exact::LlamaCppSimulator::default())
            .is_ok());
        let p = Planner::new(&m, &laptop, None).unwrap().with_draft(draft);
        let Err(PlanError::DoesNotFit { short, .. }) = p.plan(&q8, &sim) else {
            panic!("fits with the draft")
        };
        assert_eq!(short[0].target, "host");
        // At least the draft's own weights (604 MiB) short.
        assert!(short[0].shortfall() > Bytes::from_mib(604), "{}", short[0]);
    }

    /// `--draft-max auto`: the emitted count is the speed model's best in
    /// 1..=16 (at 90 % acceptance on the laptop: 10 tokens, 34.5 t/s
    /// against 25.8 with llama.cpp's default 3), and the exact simulator
    /// checks the emitted flags.
    #[test]
    fn auto_draft_count_is_the_best_of_the_speed_model() {
        use crate::solver::exact::LlamaCppDraftSimulator;
        let (m, d, hw, req) = laptop_llama_with_draft();
        let sim = LlamaCppDraftSimulator {
            opts: Default::default(),
            draft: &d,
        };
        let planner = |n_max, auto| {
            Planner::new(&m, &hw, None).unwrap().with_draft(DraftModel {
                model: &d,
                path: "d.gguf".into(),
                n_max,
                auto,
                accept: 0.9,
            })
        };
        let p = planner(16, true);
        let out = p.plan(&req, &sim).unwrap();
        let dp = out.draft.clone().unwrap();
        let k = out
            .argv
            .iter()
            .position(|a| a == "--spec-draft-n-max")
            .unwrap();
        assert_eq!(out.argv[k + 1], dp.n_max.to_string());
        assert_eq!(dp.n_max, 10);
        let fixed = planner(3, false).plan(&req, &sim).unwrap();
        assert!(
            dp.effective_decode_tps > 1.3 * fixed.draft.unwrap().effective_decode_tps,
            "{dp:?}"
        );
        // No other count does better at this placement.
        let mut plan = out.plan.clone();
        for n in 1..=16 {
            plan.draft.as_mut().unwrap().n_max = n;
            let e = p.draft_prediction(&plan).unwrap().effective_decode_tps;
            assert!(e <= dp.effective_decode_tps * (1.0 + 1e-9), "n = {n}: {e}");
        }
    }

    /// `-b`: the candidates and the one constraint a draft adds.
    #[test]
    fn batch_candidates_respect_ub_and_drafted_tokens() {
        let m = shipped("llama-3.1-8b-q8_0.toml");
        let d = shipped("llama-3.2-1b-q8_0.toml");
        let hw = two_gpus();
        let p = Planner::new(&m, &hw, None).unwrap();
        let req = Request::default();
        assert_eq!(p.batch_candidates(&req, 512), vec![2048, 4096, 512]);
        assert_eq!(p.batch_candidates(&req, 4096), vec![4096]);
        assert_eq!(p.batch_for(&req, 8192), 8192);
        let p = p.with_draft(DraftModel {
            model: &d,
            path: "d.gguf".into(),
            n_max: 16,
            auto: false,
            accept: 0.7,
        });
        // 256 slots × (1 + 16) drafted tokens must fit one batch.
        let many = Request {
            slots: 256,
            ..Request::default()
        };
        assert_eq!(p.batch_candidates(&many, 512), vec![4352]);
        let bad = Request {
            batch: Some(1024),
            ..many
        };
        assert!(matches!(
            p.plan(&bad, &PlanningSimulator),
            Err(PlanError::BadRequest(_))
        ));
    }

    /// The exact simulator agrees that `-b` at or above `-ub` changes no
    /// memory, and that below it `-b` is the micro-batch.
    #[test]
    fn batch_changes_compute_only_below_the_ubatch() {
        use crate::solver::exact::LlamaCppSimulator;
        let m = shipped("llama-3.1-8b-q8_0.toml");
        let (hw, _) = crate::hardware::presets::load_file_or_preset("laptop-rtx4060").unwrap();
        let run = |b: &str, ub: &str| {
            let a: Vec<String> = [
                "-c", "8192", "-np", "1", "-b", b, "-ub", ub, "-ngl", "99", "-fa", "on", "-fit",
                "off",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let r = LlamaCppSimulator::default().simulate(&m, &hw, &a).unwrap();
            (r.devices[0].compute_bytes, r.host.compute_bytes)
        };
        let base = run("2048", "512");
        assert_eq!(run("512", "512"), base);
        assert_eq!(run("4096", "512"), base);
        let small = run("256", "512");
        assert_eq!(small, run("256", "256"));
        assert!(small.0 < base.0, "{small:?} vs {base:?}");
    }

    /// gpt-oss-120b on the 4090 + 5070 Ti preset at 64k: the 4090 last in
    /// `-dev` (holding the output layer and the last blocks) decodes as fast
    /// and prefills almost twice as fast as the hardware order, and the
    /// exact simulator places the reordered flags as planned.
    #[test]
    fn a_reordered_dev_list_wins_and_is_reproduced() {
        use crate::solver::exact::LlamaCppSimulator;
        let m = shipped("gpt-oss-120b-mxfp4.toml");
        let (hw, _) = crate::hardware::presets::load_file_or_preset("rtx4090-rtx5070ti").unwrap();
        let p = Planner::new(&m, &hw, None).unwrap();
        let req = Request {
            ctx: CtxRequest::Fixed(65536),
            ..Request::default()
        };
        let sim = LlamaCppSimulator::default();
        let re = p.plan(&req, &sim).unwrap();
        let fixed = p
            .plan(
                &Request {
                    reorder: false,
                    ..req.clone()
                },
                &sim,
            )
            .unwrap();
        let a = re.argv.join(" ");
        assert!(a.contains("-dev CUDA1,CUDA0"), "{a}");
        assert!(!fixed.argv.join(" ").contains("-dev"));
        assert_eq!(re.report.layer_dev, re.plan.layout.layer_dev);
        assert_eq!(re.report.ffn_host, re.plan.layout.ffn_host);
        // The output layer on CUDA0, the first blocks on CUDA1.
        assert_eq!(re.plan.layout.layer_dev.last(), Some(&Some(0)));
        assert_eq!(re.plan.layout.layer_dev[0], Some(1));
        assert!(re.prediction.decode_tps >= 0.99 * fixed.prediction.decode_tps);
        assert!(
            re.prediction.prefill_tps > 1.5 * fixed.prediction.prefill_tps,
            "{} vs {}",
            re.prediction.prefill_tps,
            fixed.prediction.prefill_tps
        );
    }

    #[test]
    fn does_not_fit_names_the_host_and_nearest_plans() {
        let m = build(&Spec::qwen3_next_like());
        let hw = Hardware::from_toml_str(
            "[host]\nmemory_mib = 32768\nreserved_mib = 4096\n\
             [[devices]]\nname = \"CUDA0\"\nkind = \"cuda\"\nmemory_mib = 8192\n",
        )
        .unwrap();
        let p = Planner::new(&m, &hw, None).unwrap();
        let err = p.plan(&Request::default(), &PlanningSimulator).unwrap_err();
        let PlanError::DoesNotFit { short, nearest } = err else {
            panic!("{err}")
        };
        assert_eq!(short[0].target, "host");
        assert!(short[0].shortfall() > Bytes(5 << 30), "{}", short[0]);
        assert!(nearest.is_empty());
    }
}

/// One row of `--sweep`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepRow {
    pub type_k: String,
    pub type_v: String,
    pub slots: u32,
    pub ubatch: u64,
    /// Largest context that fits (`None`: not even the smallest).
    pub max_ctx: Option<u64>,
    pub decode_tps: Option<f64>,
    pub prefill_tps: Option<f64>,
    /// How the row's placement was decided (`Status::as_str`).
    pub solver_status: Option<String>,
    pub argv: Vec<String>,
}

impl Planner<'_> {
    fn sweep_row(
        &self,
        base: &Request,
        kv: (GgmlType, GgmlType),
        s: u32,
        ub: u64,
        sim: &dyn Simulator,
        hint: Option<u64>,
    ) -> SweepRow {
        let req = Request {
            ctx: CtxRequest::Max,
            slots: s,
            ubatch: vec![ub],
            kv_types: vec![kv],
            // A quantized V cache needs flash attention.
            flash_attn: if matches!(kv.1, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32) {
                base.flash_attn.clone()
            } else {
                vec![true]
            },
            // Rows use the DP and its lower bound; the MILP is for single plans.
            solver: if base.solver == SolverChoice::Milp {
                SolverChoice::Milp
            } else {
                SolverChoice::Dp
            },
            ..base.clone()
        };
        let name = |t: GgmlType| t.name().unwrap_or("?").to_ascii_lowercase();
        let mut row = SweepRow {
            type_k: name(kv.0),
            type_v: name(kv.1),
            slots: s,
            ubatch: ub,
            max_ctx: None,
            decode_tps: None,
            prefill_tps: None,
            solver_status: None,
            argv: Vec::new(),
        };
        if let Ok(o) = self.plan_hinted(&req, sim, hint) {
            row.solver_status = Some(o.status.as_str().to_string());
            row.max_ctx = Some(o.plan.ctx.n_ctx);
            if self.rates.complete {
                row.decode_tps = Some(o.prediction.decode_tps);
                row.prefill_tps = Some(o.prediction.prefill_tps);
            }
            row.argv = o.argv;
        }
        row
    }

    /// `--sweep`: the largest context that fits for every KV type × slots ×
    /// micro-batch, with the predicted speed of the best plan there. Every
    /// row's flags are simulated (and fed back) like a single plan.
    pub fn sweep(
        &self,
        base: &Request,
        kv_types: &[(GgmlType, GgmlType)],
        slots: &[u32],
        ubatch: &[u64],
        sim: &dyn Simulator,
    ) -> Vec<SweepRow> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.sweep_on(base, kv_types, slots, ubatch, sim, threads)
    }

    /// [`Self::sweep`] on at most `threads` threads (1: on this one).
    pub fn sweep_on(
        &self,
        base: &Request,
        kv_types: &[(GgmlType, GgmlType)],
        slots: &[u32],
        ubatch: &[u64],
        sim: &dyn Simulator,
        threads: usize,
    ) -> Vec<SweepRow> {
        // One work item per KV type × slots: its micro-batches in order, each
        // row's max-context search starting from the previous row's answer
        // (neighbouring micro-batches differ by a few context steps; the
        // answer is the same as from scratch, see `max_ctx_near`).
        let mut groups = Vec::with_capacity(kv_types.len() * slots.len());
        for &kv in kv_types {
            for &s in slots {
                groups.push((kv, s));
            }
        }
        let group = |&(kv, s): &((GgmlType, GgmlType), u32)| {
            let mut hint = None;
            ubatch
                .iter()
                .map(|&ub| {
                    let row = self.sweep_row(base, kv, s, ub, sim, hint);
                    hint = row.max_ctx;
                    row
                })
                .collect::<Vec<_>>()
        };
        // Groups are independent: spread them over the cores, keep the order.
        let threads = threads.clamp(1, groups.len().max(1));
        if threads == 1 {
            return groups.iter().flat_map(group).collect();
        }
        // Groups differ in cost (a large KV type or many slots re-plans more
        // often): threads take the next group as they finish rather than a
        // fixed share, and the rows go back in order.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut done: Vec<(usize, Vec<SweepRow>)> = Vec::with_capacity(groups.len());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut part = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(g) = groups.get(i) else {
                                break;
                            };
                            part.push((i, group(g)));
                        }
                        part
                    })
                })
                .collect();
            for h in handles {
                // A panicking row is a bug; surface it rather than drop rows.
                match h.join() {
                    Ok(part) => done.extend(part),
                    Err(e) => std::panic::resume_unwind(e),
                }
            }
        });
        done.sort_unstable_by_key(|(i, _)| *i);
        done.into_iter().flat_map(|(_, r)| r).collect()
    }
}

/// The layout of a placement llama.cpp derived from any flags (the exact
/// simulator's per-layer devices and per-tensor places): block `il`'s FFN
/// counts as on the host when any of its movable tensors (routed experts;
/// a dense model's FFN) is. `tensor_dev(i)` is the place of
/// `model.tensors[i]`: `None` skipped, `Some(None)` host, `Some(Some(d))` device `d`.
pub fn layout_from_tensors(
    model: &Model,
    layer_dev: Vec<Option<usize>>,
    tensor_dev: impl Fn(usize) -> Option<Option<usize>>,
) -> Layout {
    let n = model.hparams.n_layer as usize;
    let movable = if model.hparams.n_expert > 0 {
        crate::model::TensorGroup::FfnRouted
    } else {
        crate::model::TensorGroup::FfnDense
    };
    let mut ffn_host = vec![false; n];
    for (i, t) in model.tensors.iter().enumerate() {
        if let crate::model::TensorClass::Layer { layer, group } = t.class {
            let il = layer as usize;
            if group == movable && il < n && layer_dev.get(il).copied().flatten().is_some() {
                ffn_host[il] |= tensor_dev(i) == Some(None);
            }
        }
    }
    Layout {
        layer_dev,
        ffn_host,
    }
}

/// The speed prediction for a placement made from hand-written flags
/// (`ggplan mem … --json` reports it as `predicted`), so users can compare
/// their profiles with a plan. `None` when the hardware file lacks bandwidths.
pub fn predict_layout(
    model: &Model,
    hw: &Hardware,
    ctx: &CtxConfig,
    layout: &Layout,
    op_offload: bool,
) -> Option<Prediction> {
    let rates = Rates::from_hardware(hw);
    if !rates.complete {
        return None;
    }
    let c = super::costs::costs(model, ctx);
    Some(predict(
        &summary(&c, layout, hw.devices.len(), op_offload, ctx.pp_tokens()),
        &rates,
    ))
}
