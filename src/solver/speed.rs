//! The speed model: predicted decode and prefill tokens/s of a placement,
//! as a pure function of a [`Summary`] (bytes and parameters per place,
//! graph splits, boundary crossings) and the machine's rates ([`Rates`]).
//!
//! # Formulas (README "Speed model")
//!
//! Decode, one token of one sequence:
//!
//! ```text
//! t_decode = Σ_p (W_p + KV_p) / BW_p            (p = host and each device)
//!          + splits_tg · t_split
//!          + Σ_crossings 4·n_embd / link_gbs
//! ```
//!
//! `W_p` counts each resident weight read per token: attention, norms,
//! router, shared experts and dense FFNs in full, routed experts times
//! `n_expert_used / n_expert`, the output matrix in full. `KV_p` is the KV
//! cache of one full slot (SWA layers: the window) plus recurrent state read
//! and written. Decoding is memory-bound, so compute is ignored.
//!
//! Prefill, one micro-batch of `T = n_ubatch` tokens:
//!
//! ```text
//! t_prefill = Σ_d 2·T·P_d / F_d                               (device compute)
//!           + [op offload]  H_bytes·u / link_0 + 2·T·P_host / F_0
//!             [otherwise]   2·T·P_host / F_host
//!           + splits_pp · t_split
//! ```
//!
//! `P_d` are the matmul parameters resident on device `d` that one token
//! uses (routed experts × `n_expert_used / n_expert`), `F_d` its dense FP16
//! rate. Host-resident matmul weights are copied to the first GPU once per
//! micro-batch when op offload applies (`T ≥ 32`, llama.cpp
//! `GGML_OP_OFFLOAD_MIN_BATCH`): `H_bytes` of them, of which the fraction
//! `u = 1 − (1 − k/n)^T` of experts some token of the batch routes to. The
//! quadratic attention term is ignored (it matters only for long prompts).
//!
//! Assumptions (documented, not measured here): bandwidths are sustained
//! peaks from the hardware file; `t_split` = 20 µs of synchronisation and
//! launch latency per graph split; a device crossing between two GPUs goes
//! over the slower of their host links.

use serde::Serialize;

/// Synchronisation and launch latency per graph split (seconds).
pub const T_SPLIT_S: f64 = 20e-6;

/// Op offload threshold (`GGML_OP_OFFLOAD_MIN_BATCH`, ggml-cuda.cu).
pub const OP_OFFLOAD_MIN_BATCH: u64 = 32;

/// What a placement puts on one place (the host or a device).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// Weight bytes read per decoded token.
    pub weight_read: f64,
    /// KV / state bytes read per decoded token.
    pub kv_read: f64,
    /// Matmul parameters one token uses (2 FLOP each).
    pub active_params: f64,
}

/// A placement, summarised for the speed model.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub host: Load,
    /// In hardware device order.
    pub devices: Vec<Load>,
    /// Host-resident matmul weight bytes an offloaded micro-batch copies to
    /// the first GPU (before the used-expert fraction).
    pub host_offload_bytes: f64,
    /// Fraction of `host_offload_bytes` that is routed experts.
    pub host_offload_routed: f64,
    /// `n_expert_used / n_expert` (1 for dense models).
    pub expert_fraction: f64,
    /// Graph splits of the token-generation and prompt graphs.
    pub splits_tg: u32,
    pub splits_pp: u32,
    /// Per crossing: (from, to) as `None` = host or `Some(device)`.
    pub crossings: Vec<(Option<usize>, Option<usize>)>,
    /// Bytes of one token's activations crossing a boundary (4·n_embd).
    pub act_bytes: f64,
    /// Micro-batch size (`-ub`, capped by the context).
    pub ubatch: u64,
    /// The device op offload targets (the first model device), if any.
    pub offload_device: Option<usize>,
}

/// Rates of one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRates {
    pub name: String,
    /// Memory bandwidth, GB/s.
    pub bandwidth_gbs: f64,
    /// Dense FP16 TFLOPS.
    pub tflops: f64,
    /// Host link per direction, GB/s.
    pub link_gbs: f64,
}

/// Rates of a machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    pub host_bandwidth_gbs: f64,
    pub host_tflops: f64,
    pub devices: Vec<DeviceRates>,
    /// Whether every rate came from the hardware file (else defaults filled
    /// in: the plan's ranking still works, the prediction is not shown).
    pub complete: bool,
}

/// Defaults for rates a hardware file leaves out: only used to rank plans,
/// never reported as a prediction.
pub mod defaults {
    pub const GPU_BANDWIDTH_GBS: f64 = 400.0;
    pub const GPU_TFLOPS: f64 = 40.0;
    pub const LINK_GBS: f64 = 16.0;
    pub const HOST_BANDWIDTH_GBS: f64 = 50.0;
    /// Per physical core (AVX2 FMA at ~3 GHz, f32: 2×8×2×3 ≈ 100 GFLOPS peak, half sustained).
    pub const HOST_TFLOPS_PER_CORE: f64 = 0.05;
    pub const HOST_CORES: u32 = 8;
}

impl Rates {
    /// Test rates: the host at `host_bw` GB/s and 1 TFLOPS, GPUs `CUDA<i>`
    /// at `bws[i]` GB/s, 80 TFLOPS and 25 GB/s links.
    #[cfg(test)]
    pub(crate) fn uniform_for_tests(host_bw: f64, bws: &[f64]) -> Rates {
        Rates {
            host_bandwidth_gbs: host_bw,
            host_tflops: 1.0,
            devices: bws
                .iter()
                .enumerate()
                .map(|(i, &b)| DeviceRates {
                    name: format!("CUDA{i}"),
                    bandwidth_gbs: b,
                    tflops: 80.0,
                    link_gbs: 25.0,
                })
                .collect(),
            complete: true,
        }
    }

    /// Rates of `hw`, defaults where the file has none.
    pub fn from_hardware(hw: &crate::hardware::Hardware) -> Rates {
        use defaults::*;
        let mut complete = hw.host.bandwidth_gbs.is_some();
        let devices = hw
            .devices
            .iter()
            .map(|d| {
                complete &= d.bandwidth_gbs.is_some();
                DeviceRates {
                    name: d.name.clone(),
                    bandwidth_gbs: d.bandwidth_gbs.unwrap_or(GPU_BANDWIDTH_GBS),
                    tflops: d.fp16_tflops.unwrap_or(GPU_TFLOPS),
                    link_gbs: d.link_gbs.unwrap_or(LINK_GBS),
                }
            })
            .collect();
        Rates {
            host_bandwidth_gbs: hw.host.bandwidth_gbs.unwrap_or(HOST_BANDWIDTH_GBS),
            host_tflops: f64::from(hw.host.cores.unwrap_or(HOST_CORES)) * HOST_TFLOPS_PER_CORE,
            devices,
            complete,
        }
    }
}

/// One place's share of the decode time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    /// `CPU`, a device name, or `sync` (splits and link transfers).
    pub name: String,
    pub decode_s: f64,
    pub share: f64,
}

/// The prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub decode_tps: f64,
    pub prefill_tps: f64,
    /// Seconds per decoded token.
    pub decode_s: f64,
    /// Seconds per micro-batch of prefill.
    pub prefill_ubatch_s: f64,
    pub shares: Vec<Share>,
    pub splits_tg: u32,
    pub splits_pp: u32,
}

const GB: f64 = 1e9;
const TFLOP: f64 = 1e12;

fn link(rates: &Rates, p: Option<usize>) -> f64 {
    p.and_then(|d| rates.devices.get(d))
        .map_or(f64::INFINITY, |d| d.link_gbs)
}

/// Predict decode and prefill speed of `s` on `rates`.
pub fn predict(s: &Summary, rates: &Rates) -> Prediction {
    let mut shares = Vec::with_capacity(s.devices.len() + 2);
    let host_s = (s.host.weight_read + s.host.kv_read) / (rates.host_bandwidth_gbs * GB);
    shares.push(("CPU".to_string(), host_s));
    for (i, l) in s.devices.iter().enumerate() {
        let bw = rates.devices.get(i).map_or(1.0, |d| d.bandwidth_gbs);
        let name = rates
            .devices
            .get(i)
            .map_or_else(|| format!("dev{i}"), |d| d.name.clone());
        shares.push((name, (l.weight_read + l.kv_read) / (bw * GB)));
    }
    let mut sync = f64::from(s.splits_tg) * T_SPLIT_S;
    for &(a, b) in &s.crossings {
        let gbs = link(rates, a).min(link(rates, b));
        if gbs.is_finite() {
            sync += s.act_bytes / (gbs * GB);
        }
    }
    shares.push(("sync".to_string(), sync));
    let decode_s: f64 = shares.iter().map(|(_, t)| t).sum();

    // Prefill of one micro-batch.
    let t = s.ubatch.max(1) as f64;
    let mut pre = 0.0;
    for (i, l) in s.devices.iter().enumerate() {
        let f = rates.devices.get(i).map_or(1.0, |d| d.tflops);
        pre += 2.0 * t * l.active_params / (f * TFLOP);
    }
    let offload = s
        .offload_device
        .filter(|_| s.ubatch >= OP_OFFLOAD_MIN_BATCH && s.host_offload_bytes > 0.0);
    match offload.and_then(|d| rates.devices.get(d)) {
        Some(d0) => {
            let k = s.expert_fraction.clamp(0.0, 1.0);
            let used = 1.0 - (1.0 - k).powf(t);
            let routed = s.host_offload_bytes * s.host_offload_routed * used;
            let other = s.host_offload_bytes * (1.0 - s.host_offload_routed);
            pre += (routed + other) / (d0.link_gbs * GB);
            pre += 2.0 * t * s.host.active_params / (d0.tflops * TFLOP);
        }
        None => pre += 2.0 * t * s.host.active_params / (rates.host_tflops * TFLOP),
    }
    pre += f64::from(s.splits_pp) * T_SPLIT_S;

    let shares = shares
        .into_iter()
        .filter(|(n, t)| *t > 0.0 || n == "CPU")
        .map(|(name, d)| Share {
            name,
            decode_s: d,
            share: if decode_s > 0.0 { d / decode_s } else { 0.0 },
        })
        .collect();
    Prediction {
        decode_tps: if decode_s > 0.0 { 1.0 / decode_s } else { 0.0 },
        prefill_tps: if pre > 0.0 { t / pre } else { 0.0 },
        decode_s,
        prefill_ubatch_s: pre,
        shares,
        splits_tg: s.splits_tg,
        splits_pp: s.splits_pp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rates(bw: &[f64]) -> Rates {
        Rates::uniform_for_tests(80.0, bw)
    }

    #[test]
    fn decode_is_bytes_over_bandwidth_plus_sync() {
        // 10 GB on a 1000 GB/s GPU, 1 GB on an 80 GB/s host, 4 splits.
        let s = Summary {
            host: Load {
                weight_read: 1e9,
                kv_read: 0.0,
                active_params: 0.0,
            },
            devices: vec![Load {
                weight_read: 9e9,
                kv_read: 1e9,
                active_params: 5e9,
            }],
            splits_tg: 4,
            splits_pp: 4,
            ubatch: 512,
            ..Summary::default()
        };
        let p = predict(&s, &rates(&[1000.0]));
        let want = 1.0 / 1000.0 * 10.0 + 1.0 / 80.0 + 4.0 * T_SPLIT_S;
        assert!(
            (p.decode_s - want).abs() < 1e-12,
            "{} vs {want}",
            p.decode_s
        );
        // Prefill: 2 × 512 × 5e9 / 80e12 s per micro-batch + 4 splits.
        let pre = 2.0 * 512.0 * 5e9 / 80e12 + 4.0 * T_SPLIT_S;
        assert!((p.prefill_ubatch_s - pre).abs() < 1e-12);
        assert!((p.prefill_tps - 512.0 / pre).abs() < 1e-6);
        let total: f64 = p.shares.iter().map(|s| s.share).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(p.shares[0].name, "CPU");
        assert!((p.shares[0].share - (1.0 / 80.0) / want).abs() < 1e-12);
    }

    #[test]
    fn op_offload_copies_touched_experts_over_the_link() {
        let s = Summary {
            host: Load {
                weight_read: 0.0,
                kv_read: 0.0,
                active_params: 1e9,
            },
            devices: vec![Load::default()],
            host_offload_bytes: 25e9,
            host_offload_routed: 1.0,
            expert_fraction: 0.5,
            ubatch: 512,
            offload_device: Some(0),
            ..Summary::default()
        };
        let p = predict(&s, &rates(&[1000.0]));
        // All experts touched (1 − 0.5^512 ≈ 1): 1 s over 25 GB/s, plus compute on CUDA0.
        let want = 1.0 + 2.0 * 512.0 * 1e9 / 80e12;
        assert!((p.prefill_ubatch_s - want).abs() < 1e-9);
        // Below the offload threshold the host computes.
        let small = Summary { ubatch: 16, ..s };
        let p = predict(&small, &rates(&[1000.0]));
        assert!((p.prefill_ubatch_s - 2.0 * 16.0 * 1e9 / 1e12).abs() < 1e-12);
    }

    fn arb_load() -> impl Strategy<Value = Load> {
        (0.0..1e10f64, 0.0..1e9f64, 0.0..1e10f64).prop_map(|(w, k, p)| Load {
            weight_read: w,
            kv_read: k,
            active_params: p,
        })
    }

    fn arb_summary() -> impl Strategy<Value = (Summary, Vec<f64>)> {
        (
            arb_load(),
            proptest::collection::vec((arb_load(), 100.0..3000.0f64), 1..4),
            0u32..100,
            0.0..1e10f64,
            prop::sample::select(vec![1u64, 16, 512, 2048]),
        )
            .prop_map(|(host, devs, splits, off, ub)| {
                let (devices, bws): (Vec<Load>, Vec<f64>) = devs.into_iter().unzip();
                let crossings = vec![(None, Some(0)), (Some(0), None)];
                (
                    Summary {
                        host,
                        devices,
                        host_offload_bytes: off,
                        host_offload_routed: 0.7,
                        expert_fraction: 0.05,
                        splits_tg: splits,
                        splits_pp: splits + 3,
                        crossings,
                        act_bytes: 8192.0,
                        ubatch: ub,
                        offload_device: Some(0),
                    },
                    bws,
                )
            })
    }

    proptest! {
        /// More bandwidth (memory or link) or compute never predicts slower.
        #[test]
        fn more_bandwidth_never_slower((s, bws) in arb_summary(), which in 0usize..4, factor in 1.0..10.0f64) {
            let base = rates(&bws);
            let mut faster = base.clone();
            match which {
                0 => faster.host_bandwidth_gbs *= factor,
                1 => faster.devices[0].bandwidth_gbs *= factor,
                2 => faster.devices[0].link_gbs *= factor,
                _ => {
                    let last = faster.devices.len() - 1;
                    faster.devices[last].bandwidth_gbs *= factor;
                    faster.devices[last].tflops *= factor;
                    faster.host_tflops *= factor;
                }
            }
            let (a, b) = (predict(&s, &base), predict(&s, &faster));
            prop_assert!(b.decode_tps >= a.decode_tps * (1.0 - 1e-12));
            prop_assert!(b.prefill_tps >= a.prefill_tps * (1.0 - 1e-12));
        }

        /// Moving weight from the host to a device at least as fast (memory
        /// bandwidth, and compute as the offload target) never predicts
        /// slower when the graph splits stay equal.
        #[test]
        fn moving_to_a_faster_device_never_slower((s, bws) in arb_summary(), frac in 0.0..1.0f64, dev in 0usize..3) {
            let r = rates(&bws);
            let dev = dev.min(s.devices.len() - 1);
            prop_assume!(r.devices[dev].bandwidth_gbs >= r.host_bandwidth_gbs);
            let mut moved = s.clone();
            let w = s.host.weight_read * frac;
            let p = s.host.active_params * frac;
            let off = s.host_offload_bytes * frac;
            moved.host.weight_read -= w;
            moved.host.active_params -= p;
            moved.host_offload_bytes -= off;
            moved.devices[dev].weight_read += w;
            moved.devices[dev].active_params += p;
            let (a, b) = (predict(&s, &r), predict(&moved, &r));
            prop_assert!(b.decode_tps >= a.decode_tps * (1.0 - 1e-9), "{} < {}", b.decode_tps, a.decode_tps);
            // Every test device has the same TFLOPS as the offload target, so prefill too.
            prop_assert!(b.prefill_tps >= a.prefill_tps * (1.0 - 1e-9), "{} < {}", b.prefill_tps, a.prefill_tps);
        }
    }
}
