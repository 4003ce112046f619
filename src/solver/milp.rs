//! The combined problem as a MILP (good_lp; pure-Rust microlp by default,
//! HiGHS with `--features highs`): contiguous layer ranges per device *and*,
//! per block, whether its movable FFN (routed experts; a dense model's FFN)
//! sits on the host. Warm-started from the DP's plan, always run with a time
//! limit and a relative gap; the status is reported.
//!
//! Variables (places `0` = CPU, `1..=D` = devices in llama.cpp order; layer
//! `L` is the output):
//!
//! * `u[l][k]` ∈ {0,1}: layer `l` sits at a place `≤ k` (`u[l][D] = 1`);
//!   `u[l][k] ≤ u[l][k+1]`, `u[l+1][k] ≤ u[l][k]` make the ranges contiguous
//!   and ordered; `x[l][p] = u[l][p] − u[l][p−1]`.
//! * `y[l][d]` ∈ {0,1}: block `l` is on device `d` with its FFN on the host, `y ≤ x`.
//! * `used[d] ≥ x[l][d]`; `first[d] ≥ used[d] − Σ_{d'<d} used[d']`;
//!   `hostw ≥ x[l][0], y[l][d]`; `r[d] ≥ first[d] + hostw − 1` (the
//!   op-offload copy lands on the first device when the host holds weights).
//!
//! Minimise decode seconds `Σ x·t + Σ y·Δ + Σ used·(t_split + hop)` subject to
//! each device's and the host's memory. Symmetry breaking: among
//! consecutive alike blocks on one device the host-FFN ones come first
//! (`y[l+1][d] ≤ y[l][d] + 1 − x[l][d]`), which also keeps each `-ot` list
//! one compact range.

// Variables are indexed by (layer, place) as in the formulation above.
#![allow(clippy::needless_range_loop)]

use std::time::Instant;

use good_lp::{
    constraint, variable, variables, Expression, ResolutionError, Solution, SolutionStatus,
    SolverModel, Variable, WithInitialSolution, WithMipGap, WithTimeLimit,
};
use serde::Serialize;

use super::dp::{Problem, Setup};
use super::layout::Layout;
use super::speed::{OP_OFFLOAD_MIN_BATCH, T_SPLIT_S};

/// Objective unit: milliseconds (keeps coefficients near 1 for the solver).
const MS: f64 = 1e3;
/// Memory unit in constraints: MiB (keeps coefficients within f64 comfort).
const MIB: f64 = 1024.0 * 1024.0;

/// How the solver ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Proven optimal (for the planning model).
    Optimal,
    /// Stopped within the requested relative gap of the bound.
    Gap,
    /// Stopped at the time limit with a feasible plan.
    TimeLimit,
    /// Not run (the DP is exact for this problem: nothing may move to the host).
    DpExact,
    /// The MILP failed or found nothing better; the DP's plan is kept.
    DpFallback,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Optimal => "optimal",
            Status::Gap => "gap",
            Status::TimeLimit => "time limit",
            Status::DpExact => "optimal (exact DP)",
            Status::DpFallback => "heuristic (not proven)",
        }
    }
}

/// Solver limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub time_limit_s: f64,
    pub mip_gap: f32,
}

/// Defaults: 2 s, and a 2 % gap — the speed model's own error (peak rates,
/// ignored kernel efficiency) is far larger, so proving more buys nothing.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            time_limit_s: 2.0,
            mip_gap: 0.02,
        }
    }
}

/// The MILP's answer.
#[derive(Clone, Debug)]
pub struct MilpResult {
    pub layout: Layout,
    pub status: Status,
    pub millis: f64,
}

/// Solve the combined problem, warm-started from `start` (the DP's layout).
/// `Err` if the backend fails (infeasible within its tolerance, or no
/// solution before the time limit).
pub fn solve(
    p: &Problem,
    start: Option<&Layout>,
    limits: Limits,
) -> Result<MilpResult, ResolutionError> {
    let t0 = Instant::now();
    let c = p.costs;
    let n = c.n_layer();
    let nd = p.order.len();
    let su = Setup::new(p);
    let hb = su.host_bw;
    let mut vars = variables!();
    // u[l][k], k in 0..nd (k = nd is the constant 1).
    let u: Vec<Vec<Variable>> = (0..=n)
        .map(|_| (0..nd).map(|_| vars.add(variable().binary())).collect())
        .collect();
    let movable: Vec<bool> = c.layers.iter().map(|l| l.ffn_bytes > 0).collect();
    let y: Vec<Vec<Option<Variable>>> = (0..n)
        .map(|l| {
            (0..nd)
                .map(|_| (p.allow_ffn_host && movable[l]).then(|| vars.add(variable().binary())))
                .collect()
        })
        .collect();
    let used: Vec<Variable> = (0..nd).map(|_| vars.add(variable().binary())).collect();
    let first: Vec<Variable> = (0..nd).map(|_| vars.add(variable().binary())).collect();
    let r: Vec<Variable> = (0..nd).map(|_| vars.add(variable().binary())).collect();
    let hostw = vars.add(variable().binary());

    // x[l][p] as expressions; p = 0 CPU, p = k+1 device order[k].
    let x = |l: usize, p_: usize| -> Expression {
        let hi: Expression = if p_ == nd {
            Expression::from(1.0)
        } else {
            u[l][p_].into()
        };
        if p_ == 0 {
            hi
        } else {
            hi - u[l][p_ - 1]
        }
    };

    let bw = |k: usize| su.bw[k];
    let link = |k: usize| su.link[k];
    let read = |l: usize| su.read[l];

    let mut objective = Expression::from(T_SPLIT_S * MS);
    for l in 0..=n {
        for pl in 0..=nd {
            let bytes = if l == n {
                c.output_bytes as f64
            } else {
                read(l)
            };
            let rate = if pl == 0 { hb } else { bw(pl - 1) };
            objective += x(l, pl) * (bytes / rate * MS);
        }
    }
    for l in 0..n {
        for k in 0..nd {
            if let Some(v) = y[l][k] {
                objective += v * (su.ffn_host_extra(l, k) * MS);
            }
        }
    }
    for k in 0..nd {
        objective += used[k] * ((T_SPLIT_S + c.act_bytes_per_token as f64 / link(k)) * MS);
    }

    let mut model = vars
        .minimise(objective.clone())
        .using(good_lp::default_solver);
    // Contiguity and order.
    for l in 0..=n {
        for k in 0..nd.saturating_sub(1) {
            model.add_constraint(constraint!(u[l][k] <= u[l][k + 1]));
        }
        if l < n {
            for k in 0..nd {
                model.add_constraint(constraint!(u[l + 1][k] <= u[l][k]));
            }
        }
    }
    for l in 0..=n {
        for k in 0..nd {
            model.add_constraint(constraint!(x(l, k + 1) <= used[k]));
            if l < n {
                if let Some(v) = y[l][k] {
                    model.add_constraint(constraint!(v <= x(l, k + 1)));
                    model.add_constraint(constraint!(v <= hostw));
                    // Symmetry breaking among alike neighbours.
                    if l + 1 < n {
                        if let Some(w) = y[l + 1][k] {
                            let (a, b) = (&c.layers[l], &c.layers[l + 1]);
                            if a.ffn_bytes == b.ffn_bytes && a.ffn_read == b.ffn_read {
                                model.add_constraint(constraint!(w <= v + 1 - x(l, k + 1)));
                            }
                        }
                    }
                }
            }
        }
        if l < n {
            model.add_constraint(constraint!(x(l, 0) <= hostw));
        }
    }
    for k in 0..nd {
        let earlier: Expression = used[..k].iter().map(|&v| Expression::from(v)).sum();
        model.add_constraint(constraint!(first[k] >= used[k] - earlier));
        model.add_constraint(constraint!(r[k] >= first[k] + hostw - 1));
    }

    // Memory (MiB).
    let offload_reserve = if p.op_offload && p.ubatch >= OP_OFFLOAD_MIN_BATCH {
        c.layers
            .iter()
            .map(|l| l.largest.max(l.ffn_largest))
            .max()
            .unwrap_or(0)
            .max(c.output_bytes)
    } else {
        0
    };
    let max_peak = c.layers.iter().map(|l| l.act_peak).max().unwrap_or(0);
    let dev_bytes = |l: usize| su.bytes[l] as f64 / MIB;
    for k in 0..nd {
        let mut mem = Expression::from(0.0);
        for l in 0..n {
            mem += x(l, k + 1) * dev_bytes(l);
            if let Some(v) = y[l][k] {
                mem -= v * (c.layers[l].ffn_bytes as f64 / MIB);
            }
        }
        mem += x(n, k + 1) * ((c.output_bytes + c.output_act) as f64 / MIB);
        mem += used[k] * ((c.act_base + max_peak) as f64 / MIB);
        mem += r[k] * (offload_reserve as f64 / MIB);
        let cap = p.capacity[p.order[k]] as f64 / MIB;
        model.add_constraint(constraint!(mem <= cap));
    }
    let mut host = Expression::from(
        (c.input_bytes + c.output_buffer + c.host_compute + max_peak) as f64 / MIB,
    );
    for l in 0..n {
        host += x(l, 0) * dev_bytes(l);
        for k in 0..nd {
            if let Some(v) = y[l][k] {
                host += v * (c.layers[l].ffn_bytes as f64 / MIB);
            }
        }
    }
    host += x(n, 0) * (c.output_bytes as f64 / MIB);
    model.add_constraint(constraint!(host <= p.host_capacity as f64 / MIB));

    // Warm start from the DP's layout.
    if let Some(s) = start {
        let place = |d: Option<usize>| {
            d.and_then(|d| p.order.iter().position(|&o| o == d))
                .map_or(0, |k| k + 1)
        };
        let mut init: Vec<(Variable, f64)> = Vec::new();
        let mut any_host = false;
        let mut used_v = vec![0.0; nd];
        for l in 0..=n {
            let pl = place(s.layer_dev[l]);
            if pl == 0 && l < n {
                any_host = true;
            }
            if pl > 0 {
                used_v[pl - 1] = 1.0;
            }
            for k in 0..nd {
                init.push((u[l][k], if pl <= k { 1.0 } else { 0.0 }));
            }
            if l < n {
                for k in 0..nd {
                    if let Some(v) = y[l][k] {
                        let on = pl == k + 1 && s.ffn_host[l];
                        any_host |= on;
                        init.push((v, if on { 1.0 } else { 0.0 }));
                    }
                }
            }
        }
        let first_k = used_v.iter().position(|&v| v > 0.0);
        for k in 0..nd {
            init.push((used[k], used_v[k]));
            let f = if Some(k) == first_k { 1.0 } else { 0.0 };
            init.push((first[k], f));
            init.push((r[k], if f > 0.0 && any_host { 1.0 } else { 0.0 }));
        }
        init.push((hostw, if any_host { 1.0 } else { 0.0 }));
        model = model.with_initial_solution(init);
    }
    let model = model
        .with_time_limit(limits.time_limit_s)
        .with_mip_gap(limits.mip_gap)
        .map_err(|e| ResolutionError::Str(e.to_string()))?;
    let sol = model.solve()?;
    let status = match sol.status() {
        SolutionStatus::Optimal => Status::Optimal,
        SolutionStatus::GapLimit => Status::Gap,
        SolutionStatus::TimeLimit => Status::TimeLimit,
    };
    let mut layout = Layout::cpu_only(n);
    for l in 0..=n {
        let mut pl = nd;
        for k in 0..nd {
            if sol.value(u[l][k]) > 0.5 {
                pl = k;
                break;
            }
        }
        // u[l][k] = 1 for the first k ≥ place: place = that k.
        layout.layer_dev[l] = if pl == 0 { None } else { Some(p.order[pl - 1]) };
        if pl == nd {
            layout.layer_dev[l] = if nd == 0 { None } else { Some(p.order[nd - 1]) };
        }
        if l < n {
            layout.ffn_host[l] = (0..nd).any(|k| y[l][k].is_some_and(|v| sol.value(v) > 0.5));
        }
    }
    Ok(MilpResult {
        layout,
        status,
        millis: t0.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::costs::{costs, CtxConfig};
    use crate::solver::dp;
    use crate::solver::layout::{memory, summary};
    use crate::solver::speed::{predict, Rates};
    use crate::solver::synthetic::{build, Spec};

    const GIB: u64 = 1 << 30;

    fn rates(bw: &[f64]) -> Rates {
        Rates::uniform_for_tests(60.0, bw)
    }

    #[test]
    fn milp_matches_or_beats_the_dp_on_a_hybrid_moe() {
        let m = build(&Spec::qwen3_next_like());
        let cfg = CtxConfig::llama_defaults(32768);
        let c = costs(&m, &cfg);
        let r = rates(&[1000.0, 600.0]);
        let p = Problem {
            costs: &c,
            rates: &r,
            order: vec![0, 1],
            capacity: vec![22 * GIB, 14 * GIB],
            host_capacity: 96 * GIB,
            op_offload: true,
            ubatch: 512,
            allow_ffn_host: true,
            prefill_weight: 0.0,
        };
        let start = dp::solve(&p).unwrap();
        let res = solve(&p, Some(&start), Limits::default()).unwrap();
        let eval = |l: &Layout| {
            let (h, d) = memory(&c, l, 2, true, 512);
            let fits = h.total() <= p.host_capacity
                && d.iter()
                    .enumerate()
                    .all(|(i, m)| m.total() <= p.capacity[i]);
            (predict(&summary(&c, l, 2, true, 512), &r).decode_s, fits)
        };
        let (t_dp, f_dp) = eval(&start);
        let (t_milp, f_milp) = eval(&res.layout);
        assert!(f_dp && f_milp, "{:?}", res.layout);
        assert!(res.layout.is_contiguous());
        assert!(t_milp <= t_dp * 1.006, "milp {t_milp} dp {t_dp}");
        assert!(
            matches!(
                res.status,
                Status::Optimal | Status::Gap | Status::TimeLimit
            ),
            "{:?}",
            res.status
        );
        eprintln!(
            "milp {:?} in {:.1} ms: {t_milp} vs dp {t_dp}",
            res.status, res.millis
        );
    }
}
