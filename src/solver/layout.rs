//! A placement as the solvers see it ([`Layout`]: a device per layer, and
//! per layer whether its movable FFN sits on the host), its planning-model
//! memory per device, and its [`speed::Summary`].

use serde::Serialize;

use super::costs::{Costs, Movable};
use super::speed::{Load, Summary, OP_OFFLOAD_MIN_BATCH};

/// Layer → place. Index `L` of `layer_dev` is the output "layer".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Layout {
    /// Device (hardware index) of blocks 0..L and the output (index L);
    /// `None` = the CPU. Contiguous: a CPU prefix, then devices in their
    /// llama.cpp order.
    pub layer_dev: Vec<Option<usize>>,
    /// Per block: its movable FFN (routed experts / dense FFN) is on the host.
    pub ffn_host: Vec<bool>,
}

/// Memory one place needs, in the planning model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mem {
    pub model: u64,
    pub context: u64,
    pub compute: u64,
    /// Host only: the logits buffer.
    pub output: u64,
}

impl Mem {
    pub fn total(&self) -> u64 {
        self.model + self.context + self.compute + self.output
    }
}

impl Layout {
    /// Everything on the CPU.
    pub fn cpu_only(n_layer: usize) -> Layout {
        Layout {
            layer_dev: vec![None; n_layer + 1],
            ffn_host: vec![false; n_layer],
        }
    }

    pub fn n_layer(&self) -> usize {
        self.ffn_host.len()
    }

    /// Whether block `il`'s FFN is on the host (CPU layers always are).
    pub fn ffn_on_host(&self, il: usize) -> bool {
        self.layer_dev[il].is_none() || self.ffn_host[il]
    }

    /// Devices that hold a layer or the output, in first-use order.
    pub fn used_devices(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for d in self.layer_dev.iter().flatten() {
            if out.last() != Some(d) && !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }

    /// Blocks on the CPU (the prefix).
    pub fn n_cpu_layers(&self) -> usize {
        self.layer_dev[..self.n_layer()]
            .iter()
            .filter(|d| d.is_none())
            .count()
    }

    /// Contiguity: a CPU prefix, then each device once, in non-decreasing order of first use.
    pub fn is_contiguous(&self) -> bool {
        let mut seen_gpu = false;
        let mut done: Vec<usize> = Vec::new();
        let mut cur: Option<usize> = None;
        for d in &self.layer_dev {
            match d {
                None if seen_gpu => return false,
                None => {}
                Some(x) => {
                    seen_gpu = true;
                    if cur != Some(*x) {
                        if done.contains(x) {
                            return false;
                        }
                        if let Some(c) = cur {
                            done.push(c);
                        }
                        cur = Some(*x);
                    }
                }
            }
        }
        true
    }
}

/// Memory of `layout` per place: `(host, devices)`; `n_devices` = hardware devices.
pub fn memory(
    c: &Costs,
    layout: &Layout,
    n_devices: usize,
    op_offload: bool,
    ubatch: u64,
) -> (Mem, Vec<Mem>) {
    let n = layout.n_layer();
    let mut host = Mem {
        model: c.input_bytes,
        context: 0,
        compute: c.host_compute,
        output: c.output_buffer,
    };
    let mut devs = vec![Mem::default(); n_devices];
    let mut peak = vec![0u64; n_devices];
    let mut host_peak = 0u64;
    let mut host_largest = 0u64;
    for il in 0..n {
        let l = &c.layers[il];
        match layout.layer_dev[il] {
            None => {
                host.model += l.fixed_bytes + l.ffn_bytes;
                host.context += l.kv_bytes;
                host_peak = host_peak.max(l.act_peak);
                host_largest = host_largest.max(l.largest);
            }
            Some(d) => {
                let m = &mut devs[d];
                m.model += l.fixed_bytes;
                m.context += l.kv_bytes;
                if layout.ffn_host[il] {
                    host.model += l.ffn_bytes;
                    host_largest = host_largest.max(l.ffn_largest);
                } else {
                    m.model += l.ffn_bytes;
                }
                peak[d] = peak[d].max(l.act_peak);
            }
        }
    }
    match layout.layer_dev[n] {
        None => {
            host.model += c.output_bytes;
            host_largest = host_largest.max(c.output_bytes);
        }
        Some(d) => {
            devs[d].model += c.output_bytes;
            peak[d] = peak[d].max(c.output_act);
        }
    }
    host.compute += host_peak;
    let used = layout.used_devices();
    for &d in &used {
        devs[d].compute = c.act_base + peak[d];
    }
    // Op offload (§4.5): the first model device copies the largest host
    // weight an offloaded op uses into its compute buffer.
    if op_offload && ubatch >= OP_OFFLOAD_MIN_BATCH && host_largest > 0 {
        if let Some(&d0) = used.first() {
            devs[d0].compute += host_largest;
        }
    }
    (host, devs)
}

/// Graph places in execution order: input on the host, each block's
/// attention on its device and FFN where it sits, the output.
fn places(layout: &Layout) -> Vec<Option<usize>> {
    let n = layout.n_layer();
    let mut seq = Vec::with_capacity(2 * n + 2);
    seq.push(None);
    for il in 0..n {
        seq.push(layout.layer_dev[il]);
        if layout.ffn_on_host(il) {
            // The FFN on the host, then its residual add back on the
            // block's device (its other input, `ffn_inp`, lives there): a
            // device boundary right after a host-FFN block costs a split
            // of its own, as the exact scheduler finds.
            seq.push(None);
        }
        seq.push(layout.layer_dev[il]);
    }
    seq.push(layout.layer_dev[n]);
    seq
}

/// The speed-model summary of `layout`.
pub fn summary(
    c: &Costs,
    layout: &Layout,
    n_devices: usize,
    op_offload: bool,
    ubatch: u64,
) -> Summary {
    let n = layout.n_layer();
    let mut host = Load::default();
    let mut devs = vec![Load::default(); n_devices];
    let mut off_bytes = 0.0;
    let mut off_routed = 0.0;
    let mut expert_fraction = 1.0;
    let mut host_ffn_layers = 0u32;
    let mut cpu_layers = 0u32;
    for il in 0..n {
        let l = &c.layers[il];
        if c.movable == Some(Movable::Experts) && l.ffn_bytes > 0 {
            expert_fraction = l.ffn_read;
        }
        let ffn_w = l.ffn_bytes as f64 * l.ffn_read;
        let ffn_p = l.ffn_params as f64 * l.ffn_read;
        let place = match layout.layer_dev[il] {
            None => {
                cpu_layers += 1;
                off_bytes += (l.fixed_bytes + l.ffn_bytes) as f64;
                if c.movable == Some(Movable::Experts) {
                    off_routed += l.ffn_bytes as f64;
                }
                &mut host
            }
            Some(d) => &mut devs[d],
        };
        place.weight_read += l.fixed_bytes as f64;
        place.kv_read += l.kv_read_bytes as f64;
        place.active_params += l.fixed_params as f64;
        let ffn_place = if layout.ffn_on_host(il) {
            if layout.layer_dev[il].is_some() {
                host_ffn_layers += 1;
                off_bytes += l.ffn_bytes as f64;
                if c.movable == Some(Movable::Experts) {
                    off_routed += l.ffn_bytes as f64;
                }
            }
            &mut host
        } else {
            match layout.layer_dev[il] {
                Some(d) => &mut devs[d],
                None => &mut host,
            }
        };
        ffn_place.weight_read += ffn_w;
        ffn_place.active_params += ffn_p;
    }
    let out = match layout.layer_dev[n] {
        None => {
            off_bytes += c.output_bytes as f64;
            &mut host
        }
        Some(d) => &mut devs[d],
    };
    out.weight_read += c.output_bytes as f64;
    out.active_params += c.output_params as f64;

    let seq = places(layout);
    let mut crossings = Vec::new();
    for w in seq.windows(2) {
        if w[0] != w[1] {
            crossings.push((w[0], w[1]));
        }
    }
    let splits_tg = 1 + crossings.len() as u32;
    let offload_device = layout.used_devices().first().copied();
    let offloading = op_offload && offload_device.is_some() && ubatch >= OP_OFFLOAD_MIN_BATCH;
    // §7: each offloaded expert matmul gets its own split (≈ 2 + 3k instead
    // of 2 + 2k); a CPU layer's ~8–12 weight matmuls each get one.
    let splits_pp = if offloading {
        splits_tg + host_ffn_layers + 10 * cpu_layers
    } else {
        splits_tg
    };
    Summary {
        host,
        devices: devs,
        host_offload_bytes: off_bytes,
        host_offload_routed: if off_bytes > 0.0 {
            off_routed / off_bytes
        } else {
            0.0
        },
        expert_fraction,
        splits_tg,
        splits_pp,
        crossings,
        act_bytes: c.act_bytes_per_token as f64,
        ubatch,
        offload_device: if op_offload { offload_device } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::costs::{costs, CtxConfig};
    use crate::solver::synthetic::{build, Spec};

    fn cfg() -> CtxConfig {
        CtxConfig::llama_defaults(16384)
    }

    #[test]
    fn splits_follow_the_graph_split_rules() {
        let m = build(&Spec::qwen3_next_like());
        let c = costs(&m, &cfg());
        let n = 48;
        // Full offload on one GPU: 2 splits (embeddings on the CPU, the rest).
        let mut l = Layout {
            layer_dev: vec![Some(0); n + 1],
            ffn_host: vec![false; n],
        };
        assert_eq!(summary(&c, &l, 2, true, 512).splits_tg, 2);
        // Experts of k = 5 layers on the CPU: 2 + 2k.
        for il in 10..15 {
            l.ffn_host[il] = true;
        }
        let s = summary(&c, &l, 2, true, 512);
        assert_eq!(s.splits_tg, 12);
        assert_eq!(s.splits_pp, 17);
        // Two GPUs, layer split: 1 + 2.
        let l2 = Layout {
            layer_dev: (0..=n).map(|i| Some(usize::from(i >= 24))).collect(),
            ffn_host: vec![false; n],
        };
        assert_eq!(summary(&c, &l2, 2, true, 512).splits_tg, 3);
        assert_eq!(l2.used_devices(), vec![0, 1]);
        assert!(l2.is_contiguous());
        // The last block of GPU 0's range with its experts on the host: the
        // residual add returns to GPU 0 before GPU 1 takes over, 3 + 2.
        let mut l3 = l2.clone();
        l3.ffn_host[23] = true;
        assert_eq!(summary(&c, &l3, 2, true, 512).splits_tg, 5);
        // Inside the range it costs the usual 2.
        let mut l4 = l2.clone();
        l4.ffn_host[22] = true;
        assert_eq!(summary(&c, &l4, 2, true, 512).splits_tg, 5);
    }

    #[test]
    fn memory_moves_experts_and_adds_the_offload_copy() {
        let m = build(&Spec::qwen3_next_like());
        let c = costs(&m, &cfg());
        let n = 48;
        let all = Layout {
            layer_dev: vec![Some(0); n + 1],
            ffn_host: vec![false; n],
        };
        let mut some = all.clone();
        some.ffn_host[0] = true;
        let (h0, d0) = memory(&c, &all, 1, true, 512);
        let (h1, d1) = memory(&c, &some, 1, true, 512);
        assert_eq!(d0[0].model - d1[0].model, c.layers[0].ffn_bytes);
        assert_eq!(h1.model - h0.model, c.layers[0].ffn_bytes);
        // The first GPU's compute buffer grows by the largest host expert tensor.
        assert_eq!(d1[0].compute - d0[0].compute, c.layers[0].ffn_largest);
        // Without op offload it does not.
        let (_, d2) = memory(&c, &some, 1, false, 512);
        assert_eq!(d2[0].compute, d0[0].compute);
        let total_w: u64 = d0[0].model + h0.model;
        let file: u64 = m.profile.tensors.iter().filter_map(|t| t.n_bytes()).sum();
        assert_eq!(total_w, file);
    }
}
