//! The ggml tensor type table: block size and bytes per block for every type
//! id a GGUF file can carry.
//!
//! This table is the thing that must stay current. Peer readers hard-code a
//! guess (gguf-rs derives the block size from the id and gets BF16, IQ4_NL and
//! MXFP4 wrong; several planners skip every gpt-oss file because they do not
//! know MXFP4 = 39). The values mirror `type_traits[]` in `ggml/src/ggml.c`
//! and gguf-py's `GGML_QUANT_SIZES`. An id that is unknown here — removed
//! formats (4, 5, 31–33, 36–38) or ids newer than this table (> 42) — is kept
//! as data ([`GgmlType`] wraps the raw `u32`) and its size is reported as
//! unknown instead of failing the whole file.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A ggml tensor type id, exactly as stored in the GGUF tensor info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GgmlType(pub u32);

/// Static facts about one known ggml type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeTraits {
    /// Lower-case name as ggml prints it (`q4_K`, `mxfp4`, `bf16`).
    pub name: &'static str,
    /// Elements per block (1 for plain types).
    pub block_elems: u64,
    /// Bytes per block.
    pub block_bytes: u64,
    /// Whether ggml treats it as quantized (`ggml_is_quantized`): drives
    /// CUDA's 512-element row padding (`ggml_backend_cuda_buffer_type_get_alloc_size`).
    pub quantized: bool,
}

const fn t(name: &'static str, block_elems: u64, block_bytes: u64, quantized: bool) -> TypeTraits {
    TypeTraits {
        name,
        block_elems,
        block_bytes,
        quantized,
    }
}

/// `(id, traits)` for every id ggml currently defines (`GGML_TYPE_COUNT = 43`),
/// minus the removed ones. Sizes from `ggml-common.h` block structs.
const TABLE: &[(u32, TypeTraits)] = &[
    (0, t("f32", 1, 4, false)),
    (1, t("f16", 1, 2, false)),
    (2, t("q4_0", 32, 18, true)),
    (3, t("q4_1", 32, 20, true)),
    // 4, 5: q4_2 / q4_3, removed
    (6, t("q5_0", 32, 22, true)),
    (7, t("q5_1", 32, 24, true)),
    (8, t("q8_0", 32, 34, true)),
    (9, t("q8_1", 32, 36, true)),
    (10, t("q2_K", 256, 84, true)),
    (11, t("q3_K", 256, 110, true)),
    (12, t("q4_K", 256, 144, true)),
    (13, t("q5_K", 256, 176, true)),
    (14, t("q6_K", 256, 210, true)),
    (15, t("q8_K", 256, 292, true)),
    (16, t("iq2_xxs", 256, 66, true)),
    (17, t("iq2_xs", 256, 74, true)),
    (18, t("iq3_xxs", 256, 98, true)),
    (19, t("iq1_s", 256, 50, true)),
    (20, t("iq4_nl", 32, 18, true)),
    (21, t("iq3_s", 256, 110, true)),
    (22, t("iq2_s", 256, 82, true)),
    (23, t("iq4_xs", 256, 136, true)),
    (24, t("i8", 1, 1, false)),
    (25, t("i16", 1, 2, false)),
    (26, t("i32", 1, 4, false)),
    (27, t("i64", 1, 8, false)),
    (28, t("f64", 1, 8, false)),
    (29, t("iq1_m", 256, 56, true)),
    (30, t("bf16", 1, 2, false)),
    // 31-33: q4_0_4_4 / q4_0_4_8 / q4_0_8_8, removed (now runtime repacking)
    (34, t("tq1_0", 256, 54, true)),
    (35, t("tq2_0", 256, 66, true)),
    // 36-38: iq4_nl_4_4 / _4_8 / _8_8, removed
    (39, t("mxfp4", 32, 17, true)),
    (40, t("nvfp4", 64, 36, true)),
    (41, t("q1_0", 128, 18, true)),
    (42, t("q2_0", 64, 18, true)),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const Q8_K: GgmlType = GgmlType(15);
    pub const IQ4_NL: GgmlType = GgmlType(20);
    pub const IQ4_XS: GgmlType = GgmlType(23);
    pub const I32: GgmlType = GgmlType(26);
    pub const BF16: GgmlType = GgmlType(30);
    pub const MXFP4: GgmlType = GgmlType(39);

    /// Facts for a known id, `None` for removed or future ids.
    pub fn traits(self) -> Option<&'static TypeTraits> {
        TABLE.iter().find(|(id, _)| *id == self.0).map(|(_, tr)| tr)
    }

    pub fn is_known(self) -> bool {
        self.traits().is_some()
    }

    pub fn name(self) -> Option<&'static str> {
        self.traits().map(|tr| tr.name)
    }

    pub fn is_quantized(self) -> bool {
        self.traits().is_some_and(|tr| tr.quantized)
    }

    /// `ggml_row_size(type, ne)`: bytes of `ne` elements. `None` when the type
    /// is unknown or `ne` is not a whole number of blocks (llama.cpp rejects
    /// such a tensor at load time).
    pub fn row_size(self, ne: u64) -> Option<u64> {
        let tr = self.traits()?;
        if ne % tr.block_elems != 0 {
            return None;
        }
        (ne / tr.block_elems).checked_mul(tr.block_bytes)
    }

    /// `ggml_nbytes` of a contiguous tensor with these dims (ggml order:
    /// `dims[0]` is the row length). `None` on unknown type, a row length
    /// that is not a multiple of the block size, or overflow.
    pub fn nbytes(self, dims: &[u64]) -> Option<u64> {
        let first = dims.first().copied().unwrap_or(1);
        let mut n = self.row_size(first)?;
        for &d in dims.iter().skip(1) {
            n = n.checked_mul(d)?;
        }
        Some(n)
    }

    /// Parse a ggml type name as llama.cpp's `-ctk/-ctv` and gguf-py spell it
    /// (case-insensitive: `q8_0`, `Q4_K`, `bf16`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|(_, tr)| tr.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| GgmlType(*id))
    }

    /// All known types, in id order.
    pub fn known() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|(id, _)| GgmlType(*id))
    }
}

/// Upper-case ggml spelling as llama.cpp logs it (`Q4_K`, `F16`, `MXFP4`);
/// `type#99` for an id this table does not know.
impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => {
                // ggml_type_name gives "q4_K"; GGUF dumps and users say "Q4_K".
                let upper: String = n
                    .chars()
                    .map(|c| if c == 'K' { c } else { c.to_ascii_uppercase() })
                    .collect();
                f.write_str(&upper)
            }
            None => write!(f, "type#{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_and_future_ids_are_unknown() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 99, u32::MAX] {
            assert!(!GgmlType(id).is_known(), "id {id}");
            assert_eq!(GgmlType(id).nbytes(&[256, 2]), None);
        }
        assert_eq!(GgmlType(99).to_string(), "type#99");
    }

    #[test]
    fn table_covers_exactly_the_current_ids() {
        let ids: Vec<u32> = GgmlType::known().map(|t| t.0).collect();
        assert_eq!(ids.len(), 35);
        assert_eq!(*ids.last().unwrap(), 42);
    }

    #[test]
    fn sizes_match_ggml_type_traits() {
        // bits per weight from llama-internals §2.1
        let cases: &[(GgmlType, u64, u64)] = &[
            (GgmlType::BF16, 4096, 8192),
            (GgmlType::IQ4_NL, 4096, 2304),
            (GgmlType::MXFP4, 2880, 1530),
            (GgmlType::Q4_K, 4096, 2304),
            (GgmlType::Q6_K, 4096, 3360),
            (GgmlType(40), 128, 72), // nvfp4
            (GgmlType(41), 128, 18), // q1_0
            (GgmlType(42), 128, 36), // q2_0
        ];
        for &(ty, ne, bytes) in cases {
            assert_eq!(ty.row_size(ne), Some(bytes), "{ty}");
        }
        assert_eq!(GgmlType::Q4_K.row_size(100), None);
    }

    #[test]
    fn names_round_trip() {
        for ty in GgmlType::known() {
            assert_eq!(GgmlType::from_name(ty.name().unwrap()), Some(ty));
        }
        assert_eq!(GgmlType::from_name("Q8_0"), Some(GgmlType::Q8_0));
        assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
        assert_eq!(GgmlType::MXFP4.to_string(), "MXFP4");
    }

    #[test]
    fn nbytes_checks_overflow() {
        assert_eq!(GgmlType::F32.nbytes(&[u64::MAX / 2, 3]), None);
        assert_eq!(GgmlType::F16.nbytes(&[4096, 32000]), Some(4096 * 2 * 32000));
        assert_eq!(GgmlType::F32.nbytes(&[]), Some(4));
    }
}
