//! Exact dynamic programming over contiguous layer splits.
//!
//! llama.cpp's `-ngl`/`-ts` placement is a CPU prefix of blocks followed by
//! one contiguous range per device in device order, the output "layer" on
//! the last device that holds anything (`load_tensors`, §1.3–1.4). The
//! decode time of such a split is a sum over layers, and each device's
//! memory a sum over its range plus a compute buffer that depends on the
//! range's largest activation, so
//!
//! ```text
//! g[k][i] = min( g[k+1][i],                                   device k unused
//!                seg(k, i, L, output),                        k is the last device
//!                min_{i<j≤L} seg(k, i, j) + g[k+1][j] )       k takes [i, j)
//! best    = min_{n_cpu, k0, j} cpu(0, n_cpu) + seg₀(k0, n_cpu, j) + g[k0+1][j]
//! ```
//!
//! is exact for the planning model in `O(D·L²)` (range sums and maxima are
//! precomputed). `seg₀` is the first device, which also holds the op-offload
//! copy of the largest host weight (§4.5).
//!
//! With `allow_ffn_host`, a range that does not fit moves the movable FFN
//! (routed experts, or a dense model's FFN) of some of its blocks to the
//! host until it does, at the least decode cost: blocks are grouped by FFN
//! size (Q5_K_M mixes Q5_K and Q6_K experts), and for one or two sizes the
//! cheapest count per size is found by enumeration, so the DP is exact for
//! the planning model up to the op-offload reserve (the largest FFN tensor
//! is reserved on the first device). With more sizes the choice is the
//! fewest blocks, then the fewest bytes. [`lower_bound`] bounds every
//! layout from below, which lets the planner prove a DP plan within the gap.
//!
//! Most ranges never need that choice: `seg_lb` bounds a range's time
//! from below (its deficit at the cheapest seconds per freed byte), and a
//! range whose bound cannot beat the best continuation so far is skipped,
//! a scan stopped once no longer range can (the bound only grows along a
//! scan). Skipping changes nothing but the work — a proptest compares the
//! result bit for bit with the DP that evaluates every range.

// The recurrences read clearest with explicit indices into the tables.
#![allow(clippy::needless_range_loop)]

use super::costs::Costs;
use super::layout::Layout;
use super::speed::{Rates, OP_OFFLOAD_MIN_BATCH, T_SPLIT_S};

const GB: f64 = 1e9;

/// One planning problem at a fixed context.
#[derive(Clone, Debug)]
pub struct Problem<'a> {
    pub costs: &'a Costs,
    pub rates: &'a Rates,
    /// Devices the plan may use, in llama.cpp's device order (hardware indices).
    pub order: Vec<usize>,
    /// Planning capacity per hardware device, bytes (effective capacity − margin).
    pub capacity: Vec<u64>,
    /// Planning capacity of the host, bytes.
    pub host_capacity: u64,
    pub op_offload: bool,
    pub ubatch: u64,
    /// May move routed experts (dense: the FFN) of device layers to the host.
    pub allow_ffn_host: bool,
    /// Weight of prefill seconds per prompt token in the objective (0: decode
    /// time only, the exact planning objective). A small weight breaks decode
    /// ties by prefill: when the host and a unified device read the same
    /// memory at the same bandwidth, decode cannot tell them apart, prompt
    /// processing can (see [`prefill_per_token`]).
    pub prefill_weight: f64,
}

impl Problem<'_> {
    pub fn n_devices(&self) -> usize {
        self.capacity.len()
    }

    fn offloading(&self) -> bool {
        self.op_offload && self.ubatch >= OP_OFFLOAD_MIN_BATCH
    }
}

/// The per-layer, per-device decode costs both solvers optimise (this DP
/// and [`super::milp`]), set up once from a [`Problem`].
pub struct Setup {
    /// Host bandwidth, bytes/s.
    pub host_bw: f64,
    /// Per device slot `k` (`p.order[k]`): bandwidth and link, bytes/s.
    pub bw: Vec<f64>,
    pub link: Vec<f64>,
    /// Per device slot: seconds of the two extra graph splits (and their
    /// activation hops) a block pays when its FFN sits on the host.
    pub hop: Vec<f64>,
    /// Per block: bytes read per decoded token with the FFN at the block's place.
    pub read: Vec<f64>,
    /// Per block: bytes of the movable FFN read per token (`ffn_bytes · ffn_read`).
    pub ffn_read: Vec<f64>,
    /// Per block: bytes on the block's place with its FFN there (weights + KV).
    pub bytes: Vec<u64>,
}

impl Setup {
    pub fn new(p: &Problem) -> Setup {
        let c = p.costs;
        let rate = |d: usize, f: fn(&super::speed::DeviceRates) -> f64, default: f64| {
            p.rates.devices.get(d).map_or(default, f) * GB
        };
        let bw: Vec<f64> = p
            .order
            .iter()
            .map(|&d| rate(d, |r| r.bandwidth_gbs, 1.0))
            .collect();
        let link: Vec<f64> = p
            .order
            .iter()
            .map(|&d| rate(d, |r| r.link_gbs, 16.0))
            .collect();
        let hop = link
            .iter()
            .map(|&l| 2.0 * (T_SPLIT_S + c.act_bytes_per_token as f64 / l))
            .collect();
        Setup {
            host_bw: p.rates.host_bandwidth_gbs * GB,
            bw,
            link,
            hop,
            read: c
                .layers
                .iter()
                .map(|l| {
                    l.fixed_bytes as f64 + l.kv_read_bytes as f64 + l.ffn_bytes as f64 * l.ffn_read
                })
                .collect(),
            ffn_read: c
                .layers
                .iter()
                .map(|l| l.ffn_bytes as f64 * l.ffn_read)
                .collect(),
            bytes: c
                .layers
                .iter()
                .map(|l| l.fixed_bytes + l.kv_bytes + l.ffn_bytes)
                .collect(),
        }
    }

    /// Extra decode seconds of block `l` on device slot `k` with its FFN on
    /// the host: the FFN read at host instead of device bandwidth, plus the hop.
    pub fn ffn_host_extra(&self, l: usize, k: usize) -> f64 {
        let f = self.ffn_read[l];
        f / self.host_bw - f / self.bw[k] + self.hop[k]
    }
}

/// Prefix sums and range maxima the recurrences use.
struct Tables {
    n: usize,
    bytes: Vec<u64>,
    ffn: Vec<u64>,
    /// Per device slot k: prefix decode time with every FFN on the device.
    time: Vec<Vec<f64>>,
    /// Per device slot k: prefix time saved... negative: extra time of FFN on host.
    ffn_extra: Vec<Vec<f64>>,
    host_time: Vec<f64>,
    host_bytes: Vec<u64>,
    /// peak[i·(n+1) + j]: max act_peak over [i, j) (one allocation, not
    /// n + 1: the DP runs ~20 times per planned `--sweep` row).
    peak: Vec<u64>,
    /// largest[i]: max tensor over [0, i) (CPU prefix offload copy).
    largest: Vec<u64>,
    max_ffn_largest: u64,
    /// Lower-bound mode: a range that does not fit pays the fractional
    /// cost of the deficit (see [`lower_bound`]).
    relaxed: bool,
    max_ffn: u64,
    min_ffn: u64,
    min_ffn_largest: u64,
    min_read: f64,
    /// Distinct movable FFNs `(bytes, read)`, largest first (at most
    /// [`MAX_GROUPS`]; more fall back to moving leading blocks).
    groups: Vec<(u64, f64)>,
    /// `cnt[g][i]`: blocks of group `g` among `[0, i)`.
    cnt: Vec<Vec<u32>>,
    /// Per device slot k: [`weights`] there (problem-only; computed once
    /// per DP instead of once per over-full segment, which was 3 % of a
    /// `--sweep`).
    move_w: Vec<[f64; MAX_GROUPS]>,
    /// Per device slot k: the fewest decode seconds per freed byte of any
    /// group, `move_w[k][g] / bytes_g` (`None` where a move saves time, so
    /// no such bound holds).
    move_lb: Vec<Option<f64>>,
    /// Host bandwidth; per device slot: bandwidth, the activation's link
    /// seconds per token and the host round trip ([`Setup`]'s).
    host_bw: f64,
    bw: Vec<f64>,
    act_link: Vec<f64>,
    hop: Vec<f64>,
}

impl Tables {
    /// Whether an over-full range is priced by [`choose`]: exact for one
    /// or two expert sizes, a good choice beyond (the relaxed bound prices
    /// more sizes by their fractional cost instead).
    fn by_choose(&self) -> bool {
        !self.groups.is_empty() && (self.groups.len() <= 2 || !self.relaxed)
    }
}

/// Size groups the exact segment choice handles.
pub const MAX_GROUPS: usize = 6;

/// Blocks to move per size group.
type Pick = [u32; MAX_GROUPS];

fn tables(p: &Problem) -> Tables {
    let c = p.costs;
    let n = c.n_layer();
    let su = Setup::new(p);
    let hb = su.host_bw;
    let mut bytes = vec![0u64; n + 1];
    let mut ffn = vec![0u64; n + 1];
    let mut host_time = vec![0f64; n + 1];
    let mut host_bytes = vec![0u64; n + 1];
    let mut largest = vec![0u64; n + 1];
    let w = p.prefill_weight;
    for (il, l) in c.layers.iter().enumerate() {
        bytes[il + 1] = bytes[il] + su.bytes[il];
        ffn[il + 1] = ffn[il] + l.ffn_bytes;
        let read = su.read[il];
        let pre = if w > 0.0 {
            w * prefill_per_token(p, l, None)
        } else {
            0.0
        };
        host_time[il + 1] = host_time[il] + read / hb + pre;
        host_bytes[il + 1] = bytes[il + 1];
        largest[il + 1] = largest[il].max(l.largest);
    }
    let mut time = Vec::new();
    let mut ffn_extra = Vec::new();
    for (k, &d) in p.order.iter().enumerate() {
        let bw = su.bw[k];
        let mut t = vec![0f64; n + 1];
        let mut x = vec![0f64; n + 1];
        for (il, l) in c.layers.iter().enumerate() {
            let pre = if w > 0.0 {
                w * prefill_per_token(p, l, Some(d))
            } else {
                0.0
            };
            t[il + 1] = t[il] + su.read[il] / bw + pre;
            x[il + 1] = x[il]
                + if l.ffn_bytes > 0 {
                    su.ffn_host_extra(il, k)
                } else {
                    0.0
                };
        }
        time.push(t);
        ffn_extra.push(x);
    }
    let mut groups: Vec<(u64, f64)> = Vec::new();
    for l in &c.layers {
        if l.ffn_bytes > 0
            && !groups
                .iter()
                .any(|g| g.0 == l.ffn_bytes && g.1 == l.ffn_read)
        {
            groups.push((l.ffn_bytes, l.ffn_read));
        }
    }
    groups.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    if groups.len() > MAX_GROUPS {
        groups.clear();
    }
    let cnt: Vec<Vec<u32>> = groups
        .iter()
        .map(|g| {
            let mut v = vec![0u32; n + 1];
            for (il, l) in c.layers.iter().enumerate() {
                v[il + 1] = v[il] + u32::from(l.ffn_bytes == g.0 && l.ffn_read == g.1);
            }
            v
        })
        .collect();
    let move_w: Vec<_> = (0..p.order.len())
        .map(|k| weights(&groups, su.host_bw, su.bw[k], su.hop[k]))
        .collect();
    // Row by row, every entry written once (no zero fill of the whole
    // table first).
    let mut peak = Vec::with_capacity((n + 1) * (n + 1));
    for i in 0..=n {
        peak.resize(peak.len() + i + 1, 0);
        let mut m = 0;
        peak.extend(c.layers[i..].iter().map(|l| {
            m = m.max(l.act_peak);
            m
        }));
    }
    Tables {
        n,
        bytes,
        ffn,
        time,
        ffn_extra,
        host_time,
        host_bytes,
        peak,
        largest,
        max_ffn_largest: c.layers.iter().map(|l| l.ffn_largest).max().unwrap_or(0),
        relaxed: false,
        max_ffn: c.layers.iter().map(|l| l.ffn_bytes).max().unwrap_or(0),
        min_ffn: c
            .layers
            .iter()
            .filter(|l| l.ffn_bytes > 0)
            .map(|l| l.ffn_bytes)
            .min()
            .unwrap_or(0),
        min_ffn_largest: c
            .layers
            .iter()
            .filter(|l| l.ffn_bytes > 0)
            .map(|l| l.ffn_largest)
            .min()
            .unwrap_or(0),
        min_read: c
            .layers
            .iter()
            .filter(|l| l.ffn_bytes > 0)
            .map(|l| l.ffn_read)
            .fold(f64::INFINITY, f64::min),
        host_bw: su.host_bw,
        act_link: su
            .link
            .iter()
            .map(|&l| c.act_bytes_per_token as f64 / l)
            .collect(),
        bw: su.bw,
        hop: su.hop,
        move_w: move_w.clone(),
        move_lb: move_w
            .iter()
            .map(|w| {
                let mut lb = f64::INFINITY;
                for (g, &(b, _)) in groups.iter().enumerate() {
                    if w[g] < 0.0 {
                        return None;
                    }
                    lb = lb.min(w[g] / b as f64);
                }
                lb.is_finite().then_some(lb)
            })
            .collect(),
        groups,
        cnt,
    }
}

/// Prefill seconds per prompt token of one block with its FFN on its
/// layer's place, as [`super::speed::predict`] counts them: matmul FLOPs on
/// the device; a host block either copied to the first device and computed
/// there (op offload, `T ≥ 32`) or computed on the CPU. Only used to break
/// decode ties, so an FFN moved to the host is not charged here.
fn prefill_per_token(p: &Problem, l: &super::costs::LayerCost, dev: Option<usize>) -> f64 {
    const TFLOP: f64 = 1e12;
    let t = p.ubatch.max(1) as f64;
    let params = l.fixed_params as f64 + l.ffn_params as f64 * l.ffn_read;
    match dev {
        Some(d) => {
            let f = p.rates.devices.get(d).map_or(1.0, |r| r.tflops);
            2.0 * params / (f * TFLOP)
        }
        None => match p.order.first().and_then(|&d| p.rates.devices.get(d)) {
            Some(d0) if p.offloading() => {
                let k = l.ffn_read.clamp(0.0, 1.0);
                let used = 1.0 - (1.0 - k).powf(t);
                let bytes = l.fixed_bytes as f64 + l.ffn_bytes as f64 * used;
                bytes / (d0.link_gbs * GB) / t + 2.0 * params / (d0.tflops * TFLOP)
            }
            _ => 2.0 * params / (p.rates.host_tflops * TFLOP),
        },
    }
}

/// A device range's decode time with every FFN on the device, and the
/// bytes it is over the device's capacity (`None`: it fits).
fn head(
    p: &Problem,
    t: &Tables,
    k: usize,
    i: usize,
    j: usize,
    out: bool,
    reserve: u64,
) -> (f64, Option<u64>) {
    let c = p.costs;
    let mut need = t.bytes[j] - t.bytes[i];
    let mut peak = t.peak[i * (t.n + 1) + j];
    let mut time = t.time[k][j] - t.time[k][i] + T_SPLIT_S + t.act_link[k];
    if out {
        need += c.output_bytes;
        peak = peak.max(c.output_act);
        time += c.output_bytes as f64 / t.bw[k];
    }
    need += c.act_base + peak + reserve;
    (
        time,
        need.checked_sub(p.capacity[p.order[k]]).filter(|&d| d > 0),
    )
}

/// What [`head`]'s range costs at least, cheaply: `None` where [`seg`]
/// finds it infeasible, else a lower bound on [`seg`]'s time (exact for a
/// range that fits; `-∞` where no cheap bound holds). Any pick of moved
/// FFNs frees ≥ deficit bytes at ≥ the cheapest seconds per byte of any
/// size group; the product is shaved by 1e-9 against rounding. For ranges
/// in device order it never decreases (time and deficit only grow), which
/// lets the DP stop scanning longer ranges.
fn seg_lb(
    p: &Problem,
    t: &Tables,
    k: usize,
    i: usize,
    j: usize,
    h: (f64, Option<u64>),
) -> Option<f64> {
    let (time, Some(deficit)) = h else {
        return Some(h.0);
    };
    if !p.allow_ffn_host {
        return None;
    }
    if t.by_choose() {
        // `choose` finds a pick iff the range's FFNs cover the deficit.
        if t.ffn[j] - t.ffn[i] < deficit {
            return None;
        }
        return Some(match t.move_lb[k] {
            Some(r) => time + deficit as f64 * r * (1.0 - 1e-9),
            None => f64::NEG_INFINITY,
        });
    }
    Some(f64::NEG_INFINITY)
}

/// A device range's decode time and how many leading blocks move their FFN.
fn seg(
    p: &Problem,
    t: &Tables,
    k: usize,
    i: usize,
    j: usize,
    out: bool,
    reserve: u64,
) -> Option<(f64, usize)> {
    seg_from(p, t, k, i, j, head(p, t, k, i, j, out, reserve))
}

/// [`seg`], given its [`head`].
fn seg_from(
    p: &Problem,
    t: &Tables,
    k: usize,
    i: usize,
    j: usize,
    (time, deficit): (f64, Option<u64>),
) -> Option<(f64, usize)> {
    let Some(deficit) = deficit else {
        return Some((time, 0));
    };
    if !p.allow_ffn_host {
        return None;
    }
    let (hb, bw) = (t.host_bw, t.bw[k]);
    let hop = t.hop[k];
    if t.by_choose() {
        // Exact for ≤ 2 sizes (and a good choice beyond): the fewest blocks,
        // then the fewest bytes among those.
        let w = &t.move_w[k];
        let pick = choose(t, i, j, deficit, w)?;
        let extra: f64 = (0..t.groups.len()).map(|g| f64::from(pick[g]) * w[g]).sum();
        return Some((time + extra, 0));
    }
    if t.relaxed {
        // Any set of blocks covering the deficit moves at least `deficit`
        // bytes at `read · (1/BW_host − 1/BW_d)` each and needs at least
        // ⌈deficit / largest FFN⌉ host round trips.
        let total = t.ffn[j] - t.ffn[i];
        if total < deficit || t.max_ffn == 0 {
            return None;
        }
        let per_byte = t.min_read * (1.0 / hb - 1.0 / bw);
        let trips = deficit.div_ceil(t.max_ffn);
        // Whole blocks move: at least `trips` of them, each at least the smallest FFN.
        let moved = if per_byte >= 0.0 {
            deficit.max(trips * t.min_ffn)
        } else {
            total
        } as f64;
        return Some((time + per_byte * moved + hop * trips as f64, 0));
    }
    // Fewest leading blocks whose FFN bytes cover the deficit.
    let base = t.ffn[i];
    let m = t.ffn[i..=j].partition_point(|&f| f - base < deficit);
    if m > j - i {
        return None;
    }
    Some((time + t.ffn_extra[k][i + m] - t.ffn_extra[k][i], m))
}

/// Mark `pick` blocks per size group of `[i, j)` as host-FFN: the first
/// window of consecutive blocks holding exactly those counts (one `-ot`
/// range), else the leading blocks of each group.
fn mark(t: &Tables, c: &Costs, i: usize, j: usize, pick: Pick, layout: &mut Layout) {
    let group = |il: usize| {
        let l = &c.layers[il];
        t.groups
            .iter()
            .position(|g| g.0 == l.ffn_bytes && g.1 == l.ffn_read)
    };
    let ng = t.groups.len();
    for a in i..j {
        let mut have = [0u32; MAX_GROUPS];
        for b in a..j {
            if let Some(g) = group(b) {
                have[g] += 1;
                if have[g] > pick[g] {
                    break;
                }
            }
            if have[..ng] == pick[..ng] {
                for il in a..=b {
                    layout.ffn_host[il] = group(il).is_some();
                }
                return;
            }
        }
    }
    let mut left = pick;
    for il in i..j {
        if let Some(g) = group(il) {
            if left[g] > 0 {
                left[g] -= 1;
                layout.ffn_host[il] = true;
            }
        }
    }
}

/// Decode seconds one moved block of each size group adds on a device.
fn weights(groups: &[(u64, f64)], hb: f64, bw: f64, hop: f64) -> [f64; MAX_GROUPS] {
    let mut w = [0.0; MAX_GROUPS];
    for (g, &(b, r)) in groups.iter().enumerate() {
        let f = b as f64 * r;
        w[g] = f / hb - f / bw + hop;
    }
    w
}

/// Blocks per size group to move out of `[i, j)` to free `deficit` bytes
/// at least cost `Σ x_g·w_g`. Exact for one or two sizes (enumerating the
/// count of the larger); beyond that the fewest blocks (largest first),
/// then at that count the fewest bytes (smallest first, upgraded one block
/// at a time).
fn choose(t: &Tables, i: usize, j: usize, deficit: u64, w: &[f64; MAX_GROUPS]) -> Option<Pick> {
    let ng = t.groups.len();
    let mut avail = [0u32; MAX_GROUPS];
    for g in 0..ng {
        avail[g] = t.cnt[g][j] - t.cnt[g][i];
    }
    if ng <= 2 {
        let (b0, a0) = (t.groups[0].0, avail[0]);
        let mut best: Option<(f64, Pick)> = None;
        // Only x0 in lo..=hi can be the answer (the same pick as trying every
        // count, in a fraction of the time; this loop was a fifth of a
        // `--sweep`): below `lo` the other group cannot cover the rest
        // (infeasible), and past the count that covers the deficit alone the
        // cost x0·w0 only grows when w0 ≥ 0, so the strict `<` below keeps
        // the earlier pick.
        let (lo, hi) = if b0 == 0 {
            (0, a0)
        } else {
            let rest = if ng == 2 {
                u64::from(avail[1]).saturating_mul(t.groups[1].0)
            } else {
                0
            };
            let lo = deficit.saturating_sub(rest).div_ceil(b0);
            let full = deficit.div_ceil(b0);
            let hi = if w[0] >= 0.0 {
                full.min(u64::from(a0))
            } else {
                u64::from(a0)
            };
            (
                u32::try_from(lo).unwrap_or(u32::MAX),
                u32::try_from(hi).unwrap_or(a0),
            )
        };
        for x0 in lo..=hi {
            let freed = u64::from(x0) * b0;
            let x1 = if freed >= deficit {
                0
            } else if ng == 2 {
                let x = (deficit - freed).div_ceil(t.groups[1].0);
                if x > u64::from(avail[1]) {
                    continue;
                }
                x as u32
            } else {
                continue;
            };
            let cost = f64::from(x0) * w[0] + f64::from(x1) * w[1];
            if best.is_none_or(|b| cost < b.0) {
                let mut p = [0u32; MAX_GROUPS];
                p[0] = x0;
                p[1] = x1;
                best = Some((cost, p));
            }
        }
        return best.map(|b| b.1);
    }
    // Fewest blocks: largest first.
    let mut m = 0u32;
    let mut freed = 0u64;
    'count: for g in 0..ng {
        for _ in 0..avail[g] {
            if freed >= deficit {
                break 'count;
            }
            freed += t.groups[g].0;
            m += 1;
        }
    }
    if freed < deficit {
        return None;
    }
    // At m blocks, fewest bytes: smallest first, then upgrade.
    let mut pick = [0u32; MAX_GROUPS];
    let mut left = m;
    for g in (0..ng).rev() {
        let x = left.min(avail[g]);
        pick[g] = x;
        left -= x;
    }
    let sum = |p: &Pick| {
        (0..ng)
            .map(|g| u64::from(p[g]) * t.groups[g].0)
            .sum::<u64>()
    };
    while sum(&pick) < deficit {
        // Move one block from the smallest used group to the next larger group with room.
        let from = (0..ng)
            .rev()
            .find(|&g| pick[g] > 0 && (0..g).any(|h| pick[h] < avail[h]))?;
        let to = (0..from).rev().find(|&h| pick[h] < avail[h])?;
        pick[from] -= 1;
        pick[to] += 1;
    }
    Some(pick)
}

/// The `bound` a range's time must be under to beat `best` after `rest`
/// seconds elsewhere, widened by 1e-12 · best so that a range [`seg`] skips
/// on it is not better in floating point either.
fn prune(best: f64, rest: f64) -> f64 {
    best - rest + 1e-12 * best.abs()
}

#[derive(Clone, Copy)]
enum Choice {
    Skip,
    Last,
    Take(usize),
}

/// The tables a DP runs on, built once for every problem that differs
/// only in capacities and `allow_ffn_host` (they read neither): a
/// planner's `solve` runs the pure, host-FFN and lower-bound DPs on one
/// set and the two prefill tie-break DPs on another.
pub struct Prepared {
    t: Tables,
    /// Skip ranges whose cheap bound cannot beat the best so far (off only
    /// in tests, to check that skipping changes nothing).
    prune: bool,
    /// What the tables were built from, checked against each problem.
    key: Key,
}

#[derive(PartialEq, Debug)]
struct Key {
    costs: *const Costs,
    rates: *const Rates,
    order: Vec<usize>,
    prefill_weight: u64,
    ubatch: u64,
    op_offload: bool,
}

impl Key {
    fn of(p: &Problem) -> Key {
        Key {
            costs: std::ptr::from_ref(p.costs),
            rates: std::ptr::from_ref(p.rates),
            order: p.order.clone(),
            prefill_weight: p.prefill_weight.to_bits(),
            ubatch: p.ubatch,
            op_offload: p.op_offload,
        }
    }
}

impl Prepared {
    pub fn new(p: &Problem) -> Prepared {
        Prepared {
            t: tables(p),
            prune: true,
            key: Key::of(p),
        }
    }
}

/// The best contiguous layout, or `None` if nothing fits.
pub fn solve(p: &Problem) -> Option<Layout> {
    solve_on(p, &mut Prepared::new(p))
}

/// [`solve`] on tables built for `p` (or a problem that differs from it
/// only in capacities and `allow_ffn_host`).
pub fn solve_on(p: &Problem, pre: &mut Prepared) -> Option<Layout> {
    run_on(p, pre, false).map(|(l, _)| l)
}

/// A lower bound on the decode time of *any* contiguous layout, FFNs on
/// the host allowed: the smaller of the exact DP without host FFNs and a
/// relaxed DP in which each over-full range pays only the fractional cost
/// of its deficit, the first device reserves only the smallest op-offload
/// copy, and moved FFNs have no host limit. Minus one crossing per device
/// the DP may count more than the speed model. `None`: nothing fits.
pub fn lower_bound(p: &Problem) -> Option<f64> {
    let mut pre = Prepared::new(p);
    let pure = Problem {
        allow_ffn_host: false,
        ..p.clone()
    };
    let value = solve_valued_on(&pure, &mut pre).map(|(_, v)| v);
    lower_bound_given_pure_on(p, &mut pre, value)
}

/// [`solve_on`], with the DP's objective value (decode seconds as the DP
/// counts them) for [`lower_bound_given_pure_on`].
pub fn solve_valued_on(p: &Problem, pre: &mut Prepared) -> Option<(Layout, f64)> {
    run_on(p, pre, false)
}

/// [`lower_bound`], given `pure`: the value [`solve_valued_on`] returned
/// for the same problem with `allow_ffn_host: false` (the planner has just
/// run that DP; running it again here was a sixth of a `--sweep` row's
/// solve), on tables prepared for `p` (see [`solve_on`]).
pub fn lower_bound_given_pure_on(
    p: &Problem,
    pre: &mut Prepared,
    pure: Option<f64>,
) -> Option<f64> {
    let relaxed = run_on(p, pre, true).map(|(_, v)| v);
    // One split and activation hop per device slot.
    let slack = pre.t.act_link.iter().map(|&a| T_SPLIT_S + a).sum::<f64>();
    let lb = match (relaxed, pure) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(lb - slack)
}

fn run_on(p: &Problem, pre: &mut Prepared, relaxed: bool) -> Option<(Layout, f64)> {
    assert_eq!(pre.key, Key::of(p), "DP tables built for another problem");
    let pruning = pre.prune;
    let t = &mut pre.t;
    t.relaxed = relaxed;
    let t = &*t;
    // The cheap bound of a range (`-∞` with pruning off: every range is
    // then evaluated exactly, which the tests compare against).
    let lb_of = |k: usize, i: usize, j: usize, h: (f64, Option<u64>)| {
        seg_lb(p, t, k, i, j, h).map(|lb| if pruning { lb } else { f64::NEG_INFINITY })
    };
    let n = t.n;
    let nd = p.order.len();
    let c = p.costs;
    // g[k][i], choice[k][i]
    let mut g = vec![vec![f64::INFINITY; n + 1]; nd + 1];
    let mut ch = vec![vec![Choice::Skip; n + 1]; nd + 1];
    // Where the cheap bound never decreases along a scan (see [`seg_lb`]),
    // a scan stops once no longer range can beat the best so far: even
    // the cheapest remainder after it (`after[j]`, the suffix minimum of
    // the next device's table) does not make up the difference.
    let monotone = |k: usize| !p.allow_ffn_host || (t.by_choose() && t.move_lb[k].is_some());
    let suffix_min = |v: &[f64]| {
        let mut m = v.to_vec();
        for j in (0..m.len().saturating_sub(1)).rev() {
            m[j] = m[j].min(m[j + 1]);
        }
        m
    };
    for k in (0..nd).rev() {
        let after = suffix_min(&g[k + 1]);
        // Ranges ending before the next device's first finite entry cannot
        // be continued (all of them, for the last device).
        let j0 = g[k + 1].iter().position(|v| v.is_finite()).unwrap_or(n + 1);
        let mono = monotone(k);
        for i in 0..=n {
            let mut best = g[k + 1][i];
            let mut choice = Choice::Skip;
            let h = head(p, t, k, i, n, true, 0);
            if lb_of(k, i, n, h).is_some_and(|lb| lb < prune(best, 0.0)) {
                if let Some((tm, _)) = seg_from(p, t, k, i, n, h) {
                    if tm < best {
                        best = tm;
                        choice = Choice::Last;
                    }
                }
            }
            for j in (i + 1).max(j0)..=n {
                if after[j].is_infinite() {
                    break;
                }
                let rest = g[k + 1][j];
                if rest.is_infinite() {
                    continue;
                }
                let h = head(p, t, k, i, j, false, 0);
                // Longer ranges only need more memory.
                let Some(lb) = lb_of(k, i, j, h) else {
                    break;
                };
                if mono && lb >= prune(best, after[j]) {
                    break;
                }
                if lb >= prune(best, rest) {
                    continue;
                }
                let Some((tm, _)) = seg_from(p, t, k, i, j, h) else {
                    break;
                };
                if tm + rest < best {
                    best = tm + rest;
                    choice = Choice::Take(j);
                }
            }
            g[k][i] = best;
            ch[k][i] = choice;
        }
    }

    let host_fixed = c.input_bytes + c.output_buffer + c.host_compute;
    let offloading = p.offloading();
    let afters: Vec<Vec<f64>> = (0..nd).map(|k| suffix_min(&g[k + 1])).collect();
    // (time, n_cpu, k0, first choice)
    let mut best: Option<(f64, usize, usize, Choice)> = None;
    // Everything on the CPU.
    if host_fixed + t.host_bytes[n] + t.peak[n] + c.output_bytes <= p.host_capacity {
        let tm =
            t.host_time[n] + c.output_bytes as f64 / (p.rates.host_bandwidth_gbs * GB) + T_SPLIT_S;
        best = Some((tm, n, nd, Choice::Skip));
    }
    for n_cpu in 0..=n {
        if host_fixed + t.host_bytes[n_cpu] + t.peak[n_cpu] > p.host_capacity {
            break;
        }
        let mut reserve = 0;
        if offloading {
            reserve = t.largest[n_cpu];
            if p.allow_ffn_host && !relaxed {
                reserve = reserve.max(t.max_ffn_largest);
            }
            if relaxed && n_cpu == 0 {
                // With no CPU blocks, host weights are moved FFNs: at least
                // the smallest one is copied (plans without any host weight
                // are bounded by the pure DP instead).
                reserve = t.min_ffn_largest;
            }
        }
        let cpu_t = t.host_time[n_cpu] + T_SPLIT_S;
        let top = |b: &Option<(f64, usize, usize, Choice)>| b.map_or(f64::INFINITY, |b| b.0);
        for k0 in 0..nd {
            let after = &afters[k0];
            let j0 = g[k0 + 1]
                .iter()
                .position(|v| v.is_finite())
                .unwrap_or(n + 1);
            let mono = monotone(k0);
            let h = head(p, t, k0, n_cpu, n, true, reserve);
            if lb_of(k0, n_cpu, n, h).is_some_and(|lb| lb < prune(top(&best), cpu_t)) {
                if let Some((tm, _)) = seg_from(p, t, k0, n_cpu, n, h) {
                    if best.is_none_or(|b| cpu_t + tm < b.0) {
                        best = Some((cpu_t + tm, n_cpu, k0, Choice::Last));
                    }
                }
            }
            for j in (n_cpu + 1).max(j0)..=n {
                if after[j].is_infinite() {
                    break;
                }
                let rest = g[k0 + 1][j];
                if rest.is_infinite() {
                    continue;
                }
                let h = head(p, t, k0, n_cpu, j, false, reserve);
                let Some(lb) = lb_of(k0, n_cpu, j, h) else {
                    break;
                };
                if mono && lb >= prune(top(&best), cpu_t + after[j]) {
                    break;
                }
                if lb >= prune(top(&best), cpu_t + rest) {
                    continue;
                }
                let Some((tm, _)) = seg_from(p, t, k0, n_cpu, j, h) else {
                    break;
                };
                if best.is_none_or(|b| cpu_t + tm + rest < b.0) {
                    best = Some((cpu_t + tm + rest, n_cpu, k0, Choice::Take(j)));
                }
            }
        }
    }
    let (value, n_cpu, k0, first) = best?;
    let mut layout = Layout::cpu_only(n);
    if k0 == nd || relaxed {
        return Some((layout, value));
    }
    let mut reserve = 0;
    if offloading {
        reserve = t.largest[n_cpu];
        if p.allow_ffn_host {
            reserve = reserve.max(t.max_ffn_largest);
        }
    }
    let assign = |k: usize, i: usize, j: usize, out: bool, reserve: u64, layout: &mut Layout| {
        let (_, m) = seg(p, t, k, i, j, out, reserve).unwrap_or((0.0, 0));
        for il in i..j {
            layout.layer_dev[il] = Some(p.order[k]);
            layout.ffn_host[il] = il < i + m && c.layers[il].ffn_bytes > 0;
        }
        if !t.groups.is_empty() {
            if let Some(deficit) = head(p, t, k, i, j, out, reserve).1 {
                if let Some(pick) = choose(t, i, j, deficit, &t.move_w[k]) {
                    mark(t, c, i, j, pick, layout);
                }
            }
        }
        if out {
            layout.layer_dev[n] = Some(p.order[k]);
        }
    };
    let (mut k, mut i, mut choice) = (k0, n_cpu, first);
    let mut res = reserve;
    loop {
        match choice {
            Choice::Last => {
                assign(k, i, n, true, res, &mut layout);
                break;
            }
            Choice::Take(j) => {
                assign(k, i, j, false, res, &mut layout);
                i = j;
            }
            Choice::Skip => {}
        }
        res = 0;
        k += 1;
        if k >= nd {
            break;
        }
        choice = ch[k][i];
    }
    Some((layout, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::solver::costs::{costs, CtxConfig};
    use crate::solver::layout::{memory, summary};
    use crate::solver::speed::predict;
    use crate::solver::synthetic::{build, Spec};
    use proptest::prelude::*;

    fn cfg(n_ctx: u64) -> CtxConfig {
        CtxConfig::llama_defaults(n_ctx)
    }

    fn rates(bw: &[f64]) -> Rates {
        Rates::uniform_for_tests(60.0, bw)
    }

    const GIB: u64 = 1 << 30;

    /// Brute force over every (n_cpu, range per device) split, same cost model.
    fn brute(p: &Problem) -> Option<f64> {
        let n = p.costs.n_layer();
        let nd = p.order.len();
        let mut best: Option<f64> = None;
        let mut counts = vec![0usize; nd + 1];
        loop {
            let total: usize = counts.iter().sum();
            if total <= n + 1 && (nd > 0 || total == 0) {
                // counts[0] = GPU layers of device 0, …; CPU gets the rest
                let ngl = total;
                let n_cpu = n + 1 - ngl;
                if ngl == 0 || counts[..nd].iter().sum::<usize>() == ngl {
                    let mut layout = Layout::cpu_only(n);
                    let mut il = n_cpu.min(n + 1);
                    if ngl > 0 {
                        for (k, &cnt) in counts[..nd].iter().enumerate() {
                            for _ in 0..cnt {
                                layout.layer_dev[il] = Some(p.order[k]);
                                il += 1;
                            }
                        }
                    }
                    let (h, devs) = memory(p.costs, &layout, p.n_devices(), p.op_offload, p.ubatch);
                    let fits = h.total() <= p.host_capacity
                        && devs
                            .iter()
                            .enumerate()
                            .all(|(d, m)| m.total() <= p.capacity[d]);
                    if fits {
                        let s = summary(p.costs, &layout, p.n_devices(), p.op_offload, p.ubatch);
                        let t = predict(&s, p.rates).decode_s;
                        if best.is_none_or(|b| t < b) {
                            best = Some(t);
                        }
                    }
                }
            }
            // next
            let mut k = 0;
            loop {
                if k == nd {
                    return best;
                }
                counts[k] += 1;
                if counts[..nd].iter().sum::<usize>() <= n + 1 {
                    break;
                }
                counts[k] = 0;
                k += 1;
            }
        }
    }

    fn eval(p: &Problem, l: &Layout) -> (f64, bool) {
        let (h, devs) = memory(p.costs, l, p.n_devices(), p.op_offload, p.ubatch);
        let fits = h.total() <= p.host_capacity
            && devs
                .iter()
                .enumerate()
                .all(|(d, m)| m.total() <= p.capacity[d]);
        let s = summary(p.costs, l, p.n_devices(), p.op_offload, p.ubatch);
        (predict(&s, p.rates).decode_s, fits)
    }

    #[test]
    fn dense_model_fills_the_fast_gpu_first() {
        let m = build(&Spec::llama_8b_like());
        let c = costs(&m, &cfg(8192));
        let r = rates(&[1000.0, 400.0]);
        let p = Problem {
            costs: &c,
            rates: &r,
            order: vec![0, 1],
            capacity: vec![6 * GIB, 12 * GIB],
            host_capacity: 64 * GIB,
            op_offload: true,
            ubatch: 512,
            allow_ffn_host: false,
            prefill_weight: 0.0,
        };
        let l = solve(&p).unwrap();
        assert!(l.is_contiguous());
        let (t, fits) = eval(&p, &l);
        assert!(fits);
        assert_eq!(l.n_cpu_layers(), 0);
        // The 1000 GB/s GPU is full, the rest on the 400 GB/s one.
        let on0 = l.layer_dev.iter().filter(|d| **d == Some(0)).count();
        assert!(on0 >= 10, "{on0}");
        let want = brute(&p).unwrap();
        assert!((t - want).abs() <= 1e-9 * want, "dp {t} vs brute {want}");
    }

    #[test]
    fn moe_that_does_not_fit_moves_experts_not_layers() {
        let m = build(&Spec::qwen3_next_like());
        let c = costs(&m, &cfg(32768));
        let r = rates(&[1000.0, 1000.0]);
        let mut p = Problem {
            costs: &c,
            rates: &r,
            order: vec![0, 1],
            capacity: vec![20 * GIB, 12 * GIB],
            host_capacity: 96 * GIB,
            op_offload: true,
            ubatch: 512,
            allow_ffn_host: true,
            prefill_weight: 0.0,
        };
        let l = solve(&p).unwrap();
        let (_, fits) = eval(&p, &l);
        assert!(fits);
        assert_eq!(l.n_cpu_layers(), 0, "{l:?}");
        assert!(l.ffn_host.iter().any(|&h| h));
        // Without expert offload, whole layers go to the CPU.
        p.allow_ffn_host = false;
        let pure = solve(&p).unwrap();
        assert!(pure.n_cpu_layers() > 0);
        assert!(eval(&p, &pure).1);
        assert!(eval(&p, &l).0 < eval(&p, &pure).0);
    }

    /// Every layout of a small heterogeneous MoE (any split, any host-FFN set).
    fn brute_all(p: &Problem) -> Option<f64> {
        let n = p.costs.n_layer();
        let mut best: Option<f64> = None;
        for ngl in 0..=n + 1 {
            for c0 in 0..=ngl {
                let mut layout = Layout::cpu_only(n);
                let i0 = n + 1 - ngl;
                for (k, il) in (i0..=n).enumerate() {
                    layout.layer_dev[il] = Some(usize::from(k >= c0));
                }
                for mask in 0u32..(1 << n) {
                    let mut l = layout.clone();
                    for il in 0..n {
                        l.ffn_host[il] = mask & (1 << il) != 0;
                    }
                    if l.ffn_host
                        .iter()
                        .zip(&l.layer_dev)
                        .any(|(h, d)| *h && d.is_none())
                    {
                        continue;
                    }
                    let (t, fits) = eval(p, &l);
                    if fits && best.is_none_or(|b| t < b) {
                        best = Some(t);
                    }
                }
            }
        }
        best
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The relaxed DP never exceeds the true optimum over all layouts,
        /// and the DP's plan is never below it.
        #[test]
        fn lower_bound_is_a_lower_bound(cap0 in 1u64..8, cap1 in 1u64..8, bw1 in 100.0..2000.0f64, host in 8u64..40) {
            let mut spec = Spec::qwen3_30b_like();
            spec.n_layer = 6;
            let mut m = build(&spec);
            // Q6_K down experts in even blocks: FFNs of two sizes.
            for t in m.profile.tensors.iter_mut() {
                if t.name.ends_with("ffn_down_exps.weight") && t.name[4..5].parse::<u32>().is_ok_and(|i| i % 2 == 0) {
                    t.ty = GgmlType::Q6_K;
                }
            }
            let c = costs(&m, &cfg(4096));
            let r = rates(&[1000.0, bw1]);
            let p = Problem {
                costs: &c,
                rates: &r,
                order: vec![0, 1],
                capacity: vec![cap0 * GIB / 2, cap1 * GIB / 2],
                host_capacity: host * GIB / 2,
                op_offload: true,
                ubatch: 512,
                allow_ffn_host: true,
                prefill_weight: 0.0,
            };
            let opt = brute_all(&p);
            let lb = lower_bound(&p);
            if let Some(opt) = opt {
                let lb = lb.unwrap();
                prop_assert!(lb <= opt * (1.0 + 1e-9), "lb {} > opt {}", lb, opt);
                if let Some(l) = solve(&p) {
                    let (t, fits) = eval(&p, &l);
                    if fits {
                        prop_assert!(t >= opt * (1.0 - 1e-9));
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The DP equals brute force over every contiguous split.
        #[test]
        fn dp_equals_brute_force(cap0 in 1u64..12, cap1 in 0u64..12, bw0 in 100.0..2000.0f64, bw1 in 100.0..2000.0f64, host in 4u64..40, ctx in 1u64..8) {
            let mut spec = Spec::llama_8b_like();
            spec.n_layer = 10;
            let m = build(&spec);
            let c = costs(&m, &cfg(ctx * 1024));
            let r = rates(&[bw0, bw1]);
            let p = Problem {
                costs: &c,
                rates: &r,
                order: vec![0, 1],
                capacity: vec![cap0 * GIB / 2, cap1 * GIB / 2],
                host_capacity: host * GIB / 2,
                op_offload: true,
                ubatch: 512,
                allow_ffn_host: false,
                prefill_weight: 0.0,
            };
            let dp = solve(&p);
            let bf = brute(&p);
            prop_assert_eq!(dp.is_some(), bf.is_some());
            if let (Some(l), Some(b)) = (dp, bf) {
                let (t, fits) = eval(&p, &l);
                prop_assert!(fits, "{:?}", l);
                prop_assert!(l.is_contiguous());
                prop_assert!((t - b).abs() <= 1e-9 * b, "dp {} vs brute {}", t, b);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Skipping ranges on their cheap bound changes nothing: the same
        /// layout and the same value, bit for bit, as evaluating every range
        /// — on MoE models with one to three expert sizes, two or three
        /// devices, a host faster or slower than each device, with and
        /// without host FFNs, prefill tie-breaking and the relaxed bound.
        #[test]
        fn pruning_changes_nothing(
            caps in proptest::collection::vec(0u64..16, 3),
            bws in proptest::collection::vec(20.0..2000.0f64, 3),
            host_bw in 20.0..1500.0f64,
            host in 4u64..60,
            three in any::<bool>(),
            sizes in 1usize..4,
            allow in any::<bool>(),
            tie in any::<bool>(),
            relaxed in any::<bool>(),
            ub in prop_oneof![Just(16u64), Just(512)],
        ) {
            let mut spec = Spec::qwen3_30b_like();
            spec.n_layer = 12;
            let mut m = build(&spec);
            // Expert sizes by block: Q6_K down experts every second block,
            // Q8_0 every third (`sizes` of them in use).
            for t in m.profile.tensors.iter_mut() {
                let Some(il) = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if t.name.ends_with("ffn_down_exps.weight") {
                    if sizes >= 2 && il % 2 == 0 {
                        t.ty = GgmlType::Q6_K;
                    }
                    if sizes >= 3 && il % 3 == 0 {
                        t.ty = GgmlType::Q8_0;
                    }
                }
            }
            let c = costs(&m, &cfg(8192));
            let nd = if three { 3 } else { 2 };
            let r = Rates::uniform_for_tests(host_bw, &bws[..nd]);
            let p = Problem {
                costs: &c,
                rates: &r,
                order: (0..nd).collect(),
                capacity: caps[..nd].iter().map(|&g| g * GIB / 4).collect(),
                host_capacity: host * GIB / 2,
                op_offload: true,
                ubatch: ub,
                allow_ffn_host: allow,
                prefill_weight: if tie { 0.01 } else { 0.0 },
            };
            let mut pruned = Prepared::new(&p);
            let mut full = Prepared::new(&p);
            full.prune = false;
            let a = run_on(&p, &mut pruned, relaxed);
            let b = run_on(&p, &mut full, relaxed);
            prop_assert_eq!(a.as_ref().map(|x| x.1.to_bits()), b.as_ref().map(|x| x.1.to_bits()));
            prop_assert_eq!(a.map(|x| x.0), b.map(|x| x.0));
        }
    }
}
