//! Peak-rate formulas used by `detect` and documented for hand-written files.
//!
//! Both give *theoretical peaks* (what spec sheets quote); sustained rates
//! are lower (PCIe protocol overhead, DRAM efficiency) and are the speed
//! model's business, not the hardware file's.

/// PCIe bandwidth per direction in GB/s (10^9 bytes/s):
/// `GT/s per lane × encoding efficiency × lanes / 8 bits`.
///
/// | gen | GT/s | encoding | ×16 GB/s |
/// |---|---|---|---|
/// | 1 | 2.5 | 8b/10b | 4.0 |
/// | 2 | 5 | 8b/10b | 8.0 |
/// | 3 | 8 | 128b/130b | 15.75 |
/// | 4 | 16 | 128b/130b | 31.51 |
/// | 5 | 32 | 128b/130b | 63.02 |
/// | 6 | 64 | FLIT, 242/256 | 121.0 |
///
/// Returns `None` for an unknown generation or zero lanes.
pub fn pcie_gbs(generation: u32, lanes: u32) -> Option<f64> {
    let (gts, efficiency) = match generation {
        1 => (2.5, 8.0 / 10.0),
        2 => (5.0, 8.0 / 10.0),
        3 => (8.0, 128.0 / 130.0),
        4 => (16.0, 128.0 / 130.0),
        5 => (32.0, 128.0 / 130.0),
        // PCIe 6.0 drops 128b/130b for 256-byte FLITs carrying 242 bytes of
        // payload (236 TLP + 6 DLP) plus CRC and FEC.
        6 => (64.0, 242.0 / 256.0),
        _ => return None,
    };
    if lanes == 0 {
        return None;
    }
    Some(gts * efficiency * f64::from(lanes) / 8.0)
}

/// Peak memory bandwidth in GB/s from what NVML reports: bus width in bits
/// (`nvmlDeviceGetMemoryBusWidth`) and the maximum memory clock in MHz
/// (`nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM)`).
///
/// `bytes/s = bus_bits / 8 × clock_MHz × 10^6 × 2`. The factor 2 is the
/// assumption: NVML's memory clock is half the per-pin data rate on every
/// memory type NVIDIA ships (GDDR5/5X/6/6X/7 and HBM2/2e/3/3e), e.g. RTX 4090
/// 10501 MHz × 2 × 384/8 = 1008 GB/s (spec 1008), A4000 7001 MHz → 448 GB/s
/// (spec 448), H100 SXM 2619 MHz × 2 × 5120/8 = 3352 GB/s (spec 3.35 TB/s).
/// The clocks are the "Max Clocks / Memory" of public `nvidia-smi -q` outputs
/// (a GDDR7 RTX 50 card shows 14001 MHz: × 2 = its 28 Gbps); they were not
/// measured in this project (no GPU was reachable).
pub fn memory_gbs(bus_width_bits: u32, max_mem_clock_mhz: u32) -> Option<f64> {
    if bus_width_bits == 0 || max_mem_clock_mhz == 0 {
        return None;
    }
    Some(f64::from(bus_width_bits) / 8.0 * f64::from(max_mem_clock_mhz) * 2.0 / 1000.0)
}

/// Round to two decimals for writing into a file (the inputs are peaks; more
/// digits would suggest precision that is not there).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcie_matches_the_spec_table() {
        assert_eq!(pcie_gbs(4, 16).map(round2), Some(31.51));
        assert_eq!(pcie_gbs(3, 16).map(round2), Some(15.75));
        assert_eq!(pcie_gbs(5, 16).map(round2), Some(63.02));
        assert_eq!(pcie_gbs(4, 8).map(round2), Some(15.75));
        assert_eq!(pcie_gbs(2, 16), Some(8.0));
        assert_eq!(pcie_gbs(1, 1), Some(0.25));
        assert_eq!(pcie_gbs(6, 16).map(round2), Some(121.0));
        assert_eq!(pcie_gbs(7, 16), None);
        assert_eq!(pcie_gbs(4, 0), None);
    }

    #[test]
    fn memory_bandwidth_from_bus_and_clock() {
        assert_eq!(memory_gbs(384, 10501).map(round2), Some(1008.1));
        assert_eq!(memory_gbs(256, 7001).map(round2), Some(448.06));
        assert_eq!(memory_gbs(5120, 2619).map(round2), Some(3352.32));
        assert_eq!(memory_gbs(0, 7001), None);
        assert_eq!(memory_gbs(256, 0), None);
    }
}
