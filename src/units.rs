//! Byte quantities as a type, so memory maths stays in integers and is
//! printed the way llama.cpp prints it (MiB with two decimals).
//!
//! llama.cpp logs every buffer as `%8.2f MiB` (`load_tensors`,
//! `llama_kv_cache`, `sched_reserve`), and `llama-fit-params --fit-print on`
//! prints whole MiB truncated toward zero. Both conversions live here.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// A number of bytes. Arithmetic saturates: a planner must never wrap.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * 1024 * 1024;

impl Bytes {
    pub const ZERO: Bytes = Bytes(0);

    pub const fn from_mib(mib: u64) -> Bytes {
        Bytes(mib.saturating_mul(MIB))
    }

    pub fn as_mib_f64(self) -> f64 {
        self.0 as f64 / MIB as f64
    }

    pub fn as_gib_f64(self) -> f64 {
        self.0 as f64 / GIB as f64
    }

    /// Whole MiB truncated toward zero, as `llama-fit-params -fitp on` prints.
    pub const fn mib_truncated(self) -> u64 {
        self.0 / MIB
    }

    pub fn saturating_sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(rhs.0))
    }
}

/// `GGML_PAD(x, n)` (ggml.h): round `x` up to a multiple of `n` (n > 0).
/// Saturates instead of overflowing.
pub const fn pad(x: u64, n: u64) -> u64 {
    x.div_ceil(n).saturating_mul(n)
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub for Bytes {
    type Output = Bytes;
    fn sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(rhs.0))
    }
}

impl SubAssign for Bytes {
    fn sub_assign(&mut self, rhs: Bytes) {
        self.0 = self.0.saturating_sub(rhs.0);
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes::ZERO, |a, b| a + b)
    }
}

/// Human form: bytes below 1 KiB, then KiB/MiB/GiB with two decimals.
impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b < KIB {
            write!(f, "{b} B")
        } else if b < MIB {
            write!(f, "{:.2} KiB", b as f64 / KIB as f64)
        } else if b < GIB {
            write!(f, "{:.2} MiB", b as f64 / MIB as f64)
        } else {
            write!(f, "{:.2} GiB", b as f64 / GIB as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_rounds_up_to_multiple() {
        assert_eq!(pad(0, 256), 0);
        assert_eq!(pad(1, 256), 256);
        assert_eq!(pad(5000, 256), 5120);
        assert_eq!(pad(4096, 256), 4096);
    }

    #[test]
    fn display_and_truncation() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 * MIB / 2).to_string(), "1.50 MiB");
        assert_eq!(Bytes(5 * GIB / 2).to_string(), "2.50 GiB");
        assert_eq!(Bytes(2 * MIB - 1).mib_truncated(), 1);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Bytes(u64::MAX) + Bytes(1), Bytes(u64::MAX));
        assert_eq!(Bytes(1) - Bytes(2), Bytes(0));
    }
}
