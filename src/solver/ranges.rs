//! Compact regular expressions for sets of layer indices, as people write
//! them by hand in `-ot` overrides: `blk\.(1[5-9]|2[0-1])\.=CUDA1`.
//!
//! llama.cpp matches `-ot` patterns with `std::regex_search` (ECMAScript,
//! unanchored, first match wins; `llama_model_loader::create_tensor`), so a
//! pattern must select exactly the intended tensors *anywhere* in the name.
//! We always emit `blk\.(ALT)\.`: the literal `blk\.` prefix and the `\.`
//! after the number make `blk\.1\.` unable to match `blk.10.` or `blk.21.`.
//! The alternation uses only digits, `[a-b]` classes, `|` and groups, whose
//! meaning is identical in ECMAScript and Rust's `regex` crate, so what we
//! test here is what llama.cpp will do.

use std::collections::BTreeSet;

/// Split a set of integers into maximal contiguous runs `(first, last)`.
pub fn runs(indices: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &i in indices {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(i) => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// A regex alternation matching exactly the decimal numbers in `lo..=hi`
/// (no leading zeros), e.g. `(15, 21)` → `["1[5-9]", "2[0-1]"]`.
pub fn range_alternatives(lo: u32, hi: u32) -> Vec<String> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    // Split at powers of ten so both ends have the same number of digits.
    let mut start = lo;
    loop {
        let digits = start.to_string().len() as u32;
        let top = 10u64.pow(digits) - 1;
        let end = (hi as u64).min(top) as u32;
        same_width(&start.to_string(), &end.to_string(), &mut out);
        if end == hi {
            break;
        }
        start = end + 1;
    }
    out
}

/// Patterns for `lo..=hi` where both have the same number of digits.
fn same_width(lo: &str, hi: &str, out: &mut Vec<String>) {
    debug_assert_eq!(lo.len(), hi.len());
    if lo == hi {
        out.push(lo.to_string());
        return;
    }
    let n = lo.len();
    // Longest common prefix.
    let p = lo
        .bytes()
        .zip(hi.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let prefix = &lo[..p];
    let rest_lo = &lo[p..];
    let rest_hi = &hi[p..];
    let tail = n - p - 1; // digits after the first differing one
    let all_zero = rest_lo[1..].bytes().all(|b| b == b'0');
    let all_nine = rest_hi[1..].bytes().all(|b| b == b'9');
    let dl = rest_lo.as_bytes()[0] - b'0';
    let dh = rest_hi.as_bytes()[0] - b'0';
    let any = |k: usize| "[0-9]".repeat(k);
    if all_zero && all_nine {
        out.push(format!("{prefix}{}{}", class(dl, dh), any(tail)));
        return;
    }
    // Lower partial block: lo .. dl999
    let mut first_full = dl;
    if !all_zero {
        let lo_sub = &rest_lo[1..];
        let hi_sub = "9".repeat(tail);
        let mut sub = Vec::new();
        same_width(lo_sub, &hi_sub, &mut sub);
        for s in sub {
            out.push(format!("{prefix}{dl}{s}"));
        }
        first_full = dl + 1;
    }
    let mut last_full = dh;
    let upper_partial = !all_nine;
    if upper_partial {
        last_full = dh - 1;
    }
    if first_full <= last_full && !(first_full == dh && upper_partial) {
        out.push(format!(
            "{prefix}{}{}",
            class(first_full, last_full),
            any(tail)
        ));
    }
    if upper_partial {
        let lo_sub = "0".repeat(tail);
        let hi_sub = &rest_hi[1..];
        let mut sub = Vec::new();
        same_width(&lo_sub, hi_sub, &mut sub);
        for s in sub {
            out.push(format!("{prefix}{dh}{s}"));
        }
    }
}

fn class(a: u8, b: u8) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("[{a}-{b}]")
    }
}

/// The `blk\.(…)\.` pattern selecting exactly the blocks in `layers`.
/// `None` for an empty set.
pub fn block_pattern(layers: &BTreeSet<u32>) -> Option<String> {
    if layers.is_empty() {
        return None;
    }
    let alts: Vec<String> = runs(layers)
        .into_iter()
        .flat_map(|(lo, hi)| range_alternatives(lo, hi))
        .collect();
    Some(if alts.len() == 1 {
        format!(r"blk\.{}\.", alts[0])
    } else {
        format!(r"blk\.({})\.", alts.join("|"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_domain_brief_examples() {
        let set = |r: std::ops::RangeInclusive<u32>| r.collect::<BTreeSet<u32>>();
        assert_eq!(
            block_pattern(&set(15..=21)).unwrap(),
            r"blk\.(1[5-9]|2[0-1])\."
        );
        assert_eq!(
            block_pattern(&set(0..=14)).unwrap(),
            r"blk\.([0-9]|1[0-4])\."
        );
        assert_eq!(block_pattern(&set(7..=7)).unwrap(), r"blk\.7\.");
        assert_eq!(
            block_pattern(&set(0..=99)).unwrap(),
            r"blk\.([0-9]|[1-9][0-9])\."
        );
        assert_eq!(
            block_pattern(&set(100..=119)).unwrap(),
            r"blk\.1[0-1][0-9]\."
        );
        assert_eq!(block_pattern(&BTreeSet::new()), None);
    }

    #[test]
    fn runs_merge_contiguous() {
        let s: BTreeSet<u32> = [1, 2, 3, 7, 9, 10].into_iter().collect();
        assert_eq!(runs(&s), vec![(1, 3), (7, 7), (9, 10)]);
    }

    proptest! {
        /// Each alternation matches exactly the numbers of its range.
        #[test]
        fn alternatives_match_exactly_the_range(lo in 0u32..3000, len in 0u32..3000) {
            let hi = lo + len;
            let re = regex::Regex::new(&format!("^({})$", range_alternatives(lo, hi).join("|"))).unwrap();
            for n in lo.saturating_sub(50)..(hi + 50) {
                prop_assert_eq!(re.is_match(&n.to_string()), (lo..=hi).contains(&n), "{}..={} at {}", lo, hi, n);
            }
            let padded = format!("0{}", lo);
            prop_assert!(!re.is_match(&padded));
        }

        /// The emitted pattern selects exactly the intended blocks among
        /// real tensor names under llama.cpp's unanchored search.
        #[test]
        fn pattern_selects_exactly_the_set(set in proptest::collection::btree_set(0u32..260, 1..40)) {
            let pat = block_pattern(&set).unwrap();
            let re = regex::Regex::new(&pat).unwrap();
            for il in 0..300u32 {
                for name in [
                    format!("blk.{il}.ffn_up_exps.weight"),
                    format!("blk.{il}.attn_q.weight"),
                    format!("blk.{il}.ffn_down_exps.bias"),
                ] {
                    prop_assert_eq!(re.is_match(&name), set.contains(&il), "{} vs {}", pat, name);
                }
            }
            prop_assert!(!re.is_match("output.weight"));
            prop_assert!(!re.is_match("token_embd.weight"));
        }
    }
}
