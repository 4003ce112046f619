//! Checking a placement's memory against a machine, shared by every planner
//! so the unified-memory rule is applied in one place.

use serde::Serialize;

use super::file::Hardware;
use crate::units::Bytes;

/// What a plan puts in memory: on the host (CPU-placed weights, KV, host
/// buffers) and on each device, in [`Hardware::devices`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub host: Bytes,
    pub devices: Vec<Bytes>,
}

/// One limit a placement exceeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overflow {
    /// A device name, or `host` for the host pool (the CPU plus every
    /// unified device, which share its RAM).
    pub target: String,
    pub need: Bytes,
    pub capacity: Bytes,
}

impl Overflow {
    /// How much is missing.
    pub fn shortfall(&self) -> Bytes {
        self.need.saturating_sub(self.capacity)
    }
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} needs {} but has {} ({} short)",
            self.target,
            self.need,
            self.capacity,
            self.shortfall()
        )
    }
}

impl Hardware {
    /// Every limit `usage` exceeds (empty: it fits). Each device is held to
    /// its [`effective_capacity`](Hardware::effective_capacity); the host
    /// pool to [`host_capacity`](Hardware::host_capacity) for the host's
    /// usage *plus* every unified device's. A device missing from
    /// `usage.devices` uses nothing; extra entries are ignored.
    pub fn overflows(&self, usage: &Usage) -> Vec<Overflow> {
        let mut out = Vec::new();
        let mut pool = usage.host;
        let mut sharers = vec!["CPU".to_string()];
        for (d, &need) in self.devices.iter().zip(&usage.devices) {
            let capacity = self.effective_capacity(d);
            if need > capacity {
                out.push(Overflow {
                    target: d.name.clone(),
                    need,
                    capacity,
                });
            }
            if d.draws_from_host() {
                pool += need;
                sharers.push(d.name.clone());
            }
        }
        if pool > self.host_capacity() {
            let target = if sharers.len() > 1 {
                format!("host ({})", sharers.join(" + "))
            } else {
                "host".to_string()
            };
            out.push(Overflow {
                target,
                need: pool,
                capacity: self.host_capacity(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gib(n: u64) -> Bytes {
        Bytes::from_mib(n * 1024)
    }

    fn strix_plus_egpu() -> Hardware {
        Hardware::from_toml_str(
            "[host]\nmemory_mib = 131072\nreserved_mib = 8192\n\
             [[devices]]\nname = \"Vulkan0\"\nkind = \"vulkan\"\nmemory_mib = 98304\nunified = true\n\
             [[devices]]\nname = \"Vulkan1\"\nkind = \"vulkan\"\nmemory_mib = 16384\n",
        )
        .unwrap()
    }

    #[test]
    fn the_shared_pool_is_checked_as_a_whole() {
        let hw = strix_plus_egpu();
        // 40 GiB on the CPU + 90 GiB on the iGPU: each alone fits, together
        // they need 130 GiB of a 120 GiB pool.
        let usage = Usage {
            host: gib(40),
            devices: vec![gib(90), gib(16)],
        };
        let o = hw.overflows(&usage);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].target, "host (CPU + Vulkan0)");
        assert_eq!(o[0].shortfall(), gib(10));
        assert_eq!(
            o[0].to_string(),
            "host (CPU + Vulkan0) needs 130.00 GiB but has 120.00 GiB (10.00 GiB short)"
        );
        // 30 + 90 = 120 GiB fits exactly; the discrete GPU is its own pool.
        let usage = Usage {
            host: gib(30),
            devices: vec![gib(90), gib(16)],
        };
        assert!(hw.overflows(&usage).is_empty());
    }

    #[test]
    fn each_device_is_held_to_its_own_capacity() {
        let hw = strix_plus_egpu();
        let usage = Usage {
            host: Bytes::ZERO,
            devices: vec![gib(97), gib(17)],
        };
        let o = hw.overflows(&usage);
        assert_eq!(o.len(), 2, "{o:?}");
        assert_eq!((o[0].target.as_str(), o[0].capacity), ("Vulkan0", gib(96)));
        assert_eq!(
            (o[1].target.as_str(), o[1].shortfall()),
            ("Vulkan1", gib(1))
        );
    }

    #[test]
    fn cpu_only_machine() {
        let hw =
            Hardware::from_toml_str("[host]\nmemory_mib = 4096\nreserved_mib = 1024\n").unwrap();
        let o = hw.overflows(&Usage {
            host: gib(4),
            devices: vec![],
        });
        assert_eq!(
            o,
            vec![Overflow {
                target: "host".into(),
                need: gib(4),
                capacity: gib(3)
            }]
        );
    }
}
