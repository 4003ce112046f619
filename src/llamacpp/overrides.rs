//! `-ot` patterns: llama.cpp matches them with `std::regex_search(name,
//! std::regex(pattern))` (llama_model_loader::create_tensor) — ECMAScript
//! grammar, unanchored, first match wins. We match with the `regex` crate
//! (bytes, ASCII classes) and refuse the constructs whose meaning differs
//! between the two dialects instead of guessing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::MatchKind;

use super::error::FlagError;

/// `LLM_FFN_EXPS_REGEX` (common/common.h): the routed-expert tensors `--cpu-moe` moves.
pub const LLM_FFN_EXPS_REGEX: &str = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps";

/// A compiled `-ot` pattern that means the same in ECMAScript and here.
#[derive(Clone, Debug)]
pub struct OverridePattern {
    source: String,
    /// Shared with every other `OverridePattern` of the same source, so the
    /// lazy DFA's cache stays warm across simulations.
    re: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    re: Regex,
    /// Byte strings one of which every matching name contains (see
    /// [`required_pieces`]); `None`: no such set is known.
    need: Option<Vec<Vec<u8>>>,
}

/// Compiled patterns by source. The planner re-parses the argv it emits for
/// every exact-simulator check (thousands per `--sweep`), with a handful of
/// distinct `-ot` patterns: compiling each once keeps regex compilation off
/// the profile. Bounded so a long-lived process cannot grow it without end.
static COMPILED: OnceLock<Mutex<HashMap<String, Arc<Compiled>>>> = OnceLock::new();
const COMPILED_MAX: usize = 1024;

impl OverridePattern {
    pub fn new(pattern: &str) -> Result<OverridePattern, FlagError> {
        let cache = COMPILED.get_or_init(Default::default);
        // A poisoned lock only means another thread panicked mid-insert:
        // the map itself is still valid.
        let hit = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pattern)
            .cloned();
        if let Some(re) = hit {
            return Ok(OverridePattern {
                source: pattern.to_string(),
                re,
            });
        }
        let re = Arc::new(Self::compile(pattern)?);
        let mut map = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= COMPILED_MAX {
            map.clear();
        }
        map.insert(pattern.to_string(), Arc::clone(&re));
        Ok(OverridePattern {
            source: pattern.to_string(),
            re,
        })
    }

    fn compile(pattern: &str) -> Result<Compiled, FlagError> {
        check_dialect(pattern).map_err(|reason| FlagError::Pattern {
            pattern: pattern.to_string(),
            reason,
        })?;
        // What `regex::bytes::RegexBuilder::new(p).unicode(false).build()`
        // builds (regex 1.x builders.rs: size limits, leftmost-first, bytes
        // semantics), but the literal prefilter only for patterns with few
        // alternatives: its extraction grows with the branches, and on the
        // planner's layer alternations (`blk\.([0-9]|1[0-5]|…)\.ffn_…`,
        // a new one per plan) it cost more than all the matching it sped
        // up; on `--n-cpu-moe`'s per-layer patterns it halves the matching.
        // Prefilters only speed up a search: what matches is the same.
        let few_branches = pattern.bytes().filter(|&c| c == b'|').count() <= 4;
        let config = Regex::config()
            .nfa_size_limit(Some(10 * (1 << 20)))
            .hybrid_cache_capacity(2 * (1 << 20))
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(false)
            .auto_prefilter(few_branches);
        // Parsed once, for the engine and for the prefilter's literals.
        let hir =
            syntax::parse_with(pattern, &syntax_config()).map_err(|e| FlagError::Pattern {
                pattern: pattern.to_string(),
                // regex::Error's wording: the syntax error's own.
                reason: e.to_string(),
            })?;
        let re = Regex::builder()
            .configure(config)
            .build_from_hir(&hir)
            .map_err(|e| FlagError::Pattern {
                pattern: pattern.to_string(),
                // regex::Error's wording for the same failures.
                reason: match (e.size_limit(), e.syntax_error()) {
                    (Some(limit), _) => {
                        format!("Compiled regex exceeds size limit of {limit} bytes.")
                    }
                    (None, Some(se)) => se.to_string(),
                    (None, None) => e.to_string(),
                },
            })?;
        Ok(Compiled {
            re,
            need: required_pieces(&hir),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// `std::regex_search`: a match anywhere in the name.
    pub fn is_match(&self, name: &str) -> bool {
        let name = name.as_bytes();
        // Most names of a model contain none of the pieces every match
        // needs (a layer's attention and norm tensors against an experts
        // pattern): rejecting them with a substring search is several times
        // cheaper than running the DFA over the name.
        if let Some(need) = &self.re.need {
            if !need.iter().any(|p| contains(name, p)) {
                return false;
            }
        }
        self.re.re.is_match(name)
    }
}

/// Pieces one of which every match of `pattern` contains: regex-syntax's
/// suffix literals (every match ends with one of them, the contract behind
/// the regex engines' own reverse-suffix search), each cut to its last
/// [`PIECE`] bytes (a suffix of a suffix is still in the match) and
/// deduplicated. A match of a concatenation ends with a
/// match of its last parts, so the literals come from the shortest tail of
/// the top-level concatenation that gives some: extracting from the whole
/// of the planner's `blk\.(…|…)\.ffn_…` patterns would cross the layer
/// alternation into hundreds of literals (most of a compile) only to be cut
/// back to the same piece. `None` where no tail gives a finite set of
/// non-empty literals (then every name could match).
fn required_pieces(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::{Hir, HirKind};
    let pieces = |h: &Hir| -> Option<Vec<Vec<u8>>> {
        let seq = Extractor::new()
            .kind(ExtractKind::Suffix)
            .limit_total(32)
            .extract(h);
        let lits = seq.literals()?;
        if lits.is_empty() || lits.iter().any(|l| l.as_bytes().is_empty()) {
            return None;
        }
        let mut out: Vec<Vec<u8>> = lits
            .iter()
            .map(|l| {
                let b = l.as_bytes();
                b[b.len().saturating_sub(PIECE)..].to_vec()
            })
            .collect();
        out.sort();
        out.dedup();
        Some(out)
    };
    match hir.kind() {
        HirKind::Concat(parts) => {
            (1..=parts.len()).find_map(|k| pieces(&Hir::concat(parts[parts.len() - k..].to_vec())))
        }
        _ => pieces(hir),
    }
}

/// The longest piece [`required_pieces`] keeps.
const PIECE: usize = 4;

/// Whether `piece` occurs in `name`. Names are ~30 bytes: comparing each
/// 4-byte window as one word (pieces are at most [`PIECE`] = 4 bytes) is
/// cheaper than setting up a vectorised substring search per name.
fn contains(name: &[u8], piece: &[u8]) -> bool {
    if let Ok(word) = <[u8; 4]>::try_from(piece) {
        let word = u32::from_ne_bytes(word);
        return name
            .windows(4)
            .any(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) == word);
    }
    name.windows(piece.len().max(1)).any(|w| w == piece) || piece.is_empty()
}

/// The syntax settings of every `-ot` pattern: unicode(false) makes `\d`,
/// `\w`, `\s` and `.` ASCII/byte based, as in std::regex over std::string.
fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// Reject syntax that ECMAScript and the `regex` crate read differently (or
/// that one of them rejects), so a pattern we accept selects exactly what
/// llama.cpp selects.
fn check_dialect(p: &str) -> Result<(), String> {
    let b = p.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let Some(&n) = b.get(i + 1) else {
                return Err("trailing backslash".into());
            };
            match n {
                b'1'..=b'9' | b'k' => {
                    return Err("backreferences are not supported".into());
                }
                b'p' | b'P' | b'A' | b'z' | b'Z' | b'u' | b'c' | b'0' | b'x' | b'Q' | b'E' => {
                    return Err(format!(
                        "escape \\{} differs between ECMAScript (llama.cpp) and this matcher",
                        n as char
                    ));
                }
                _ => {}
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                b']' => in_class = false,
                b'[' => {
                    return Err(
                        "'[' inside a character class (nested class here, literal in ECMAScript)"
                            .into(),
                    )
                }
                b'&' | b'-' | b'~' if b.get(i + 1) == Some(&c) => {
                    return Err(format!(
                        "'{0}{0}' inside a character class (set operation here, literal in ECMAScript)",
                        c as char
                    ));
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'[' => {
                in_class = true;
                // A ']' right after '[' or '[^' is literal in Rust but closes an
                // empty class in ECMAScript.
                let mut j = i + 1;
                if b.get(j) == Some(&b'^') {
                    j += 1;
                }
                if b.get(j) == Some(&b']') {
                    return Err("']' first in a character class".into());
                }
                i = j;
                continue;
            }
            b'(' if b.get(i + 1) == Some(&b'?') => {
                let what = match b.get(i + 2) {
                    Some(b':') => None,
                    Some(b'=') | Some(b'!') => Some("lookahead is not supported here"),
                    Some(b'<') if matches!(b.get(i + 3), Some(b'=') | Some(b'!')) => {
                        Some("lookbehind is not supported")
                    }
                    _ => Some("inline flags / named groups are not ECMAScript"),
                };
                if let Some(w) = what {
                    return Err(w.into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_search_like_regex_search() {
        let p = OverridePattern::new("blk\\.1\\.").unwrap();
        assert!(p.is_match("blk.1.attn_q.weight"));
        assert!(!p.is_match("blk.10.attn_q.weight"));
        let p = OverridePattern::new("blk\\.1").unwrap();
        assert!(p.is_match("blk.10.attn_q.weight"));
        let p = OverridePattern::new("exps").unwrap();
        assert!(p.is_match("blk.3.ffn_down_exps.weight"));
    }

    #[test]
    fn moe_regex_matches_experts_not_shared_or_router() {
        let p = OverridePattern::new(LLM_FFN_EXPS_REGEX).unwrap();
        for n in [
            "blk.0.ffn_up_exps.weight",
            "blk.0.ffn_gate_up_exps.weight",
            "blk.0.ffn_down_chexps.weight",
            "blk.0.ffn_down_exps.bias",
        ] {
            assert!(p.is_match(n), "{n}");
        }
        for n in [
            "blk.0.ffn_up_shexp.weight",
            "blk.0.ffn_gate_inp.weight",
            "blk.0.ffn_up.weight",
        ] {
            assert!(!p.is_match(n), "{n}");
        }
    }

    /// The prefilter-less engine selects exactly what `regex::bytes` with
    /// `unicode(false)` selects (the matcher this replaced).
    #[test]
    fn same_matches_as_regex_bytes() {
        let patterns = [
            LLM_FFN_EXPS_REGEX,
            "blk\\.([0-9]|1[0-5]|17|20|3[7-9])\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
            "blk\\.7\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
            "exps",
            "^output\\.weight$",
            "blk\\.\\d+\\.ffn_.*",
            "[0-9]+",
            "attn_(q|k)\\b",
            "\\w+_norm",
            "token_embd",
            ".",
            "blk\\.(2[0-9]|3[0-1])\\.",
        ];
        let names = [
            "blk.0.ffn_up_exps.weight",
            "blk.7.ffn_gate_up_exps.weight",
            "blk.17.ffn_down_chexps.weight",
            "blk.17.ffn_down_exps.bias",
            "blk.20.ffn_up_shexp.weight",
            "blk.31.ffn_gate_inp.weight",
            "blk.38.attn_q.weight",
            "blk.38.attn_qkv.weight",
            "blk.4.attn_k_norm.weight",
            "output.weight",
            "output_norm.weight",
            "token_embd.weight",
            "",
            "blk.\u{e9}.x",
        ];
        for p in patterns {
            let ours = OverridePattern::new(p).unwrap();
            let theirs = regex::bytes::RegexBuilder::new(p)
                .unicode(false)
                .build()
                .unwrap();
            for n in names {
                assert_eq!(
                    ours.is_match(n),
                    theirs.is_match(n.as_bytes()),
                    "{p} on {n}"
                );
            }
        }
        // Errors keep regex's wording.
        let bad = String::from("blk(");
        let e = OverridePattern::new(&bad).unwrap_err().to_string();
        let r = regex::bytes::RegexBuilder::new(&bad)
            .unicode(false)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&r), "{e} vs {r}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The substring prefilter never rejects a name the regex matches:
        /// patterns built from tensor-name pieces, alternations, optional
        /// and repeated parts and anchors, against model-like names.
        #[test]
        fn prefilter_keeps_every_match(
            parts in proptest::collection::vec(0usize..PIECES.len(), 1..7),
            alt in proptest::collection::vec(0usize..PIECES.len(), 0..4),
            names in proptest::collection::vec((0usize..NAMES.len(), 0u32..64), 1..24),
        ) {
            let mut p: String = parts.iter().map(|&i| PIECES[i]).collect();
            if !alt.is_empty() {
                let other: String = alt.iter().map(|&i| PIECES[i]).collect();
                p = format!("({p}|{other})");
            }
            let Ok(ours) = OverridePattern::new(&p) else {
                return Ok(());
            };
            let theirs = regex::bytes::RegexBuilder::new(&p).unicode(false).build().unwrap();
            for (i, il) in names {
                let n = NAMES[i].replace('N', &il.to_string());
                proptest::prop_assert_eq!(ours.is_match(&n), theirs.is_match(n.as_bytes()), "{} on {}", p, n);
            }
        }
    }

    const PIECES: &[&str] = &[
        "blk",
        "\\.",
        "[0-9]",
        "1[0-5]",
        "(2[0-9]|3[0-1])",
        "\\d+",
        "ffn_",
        "(up|down|gate|gate_up)",
        "_",
        "(ch|)",
        "exps",
        "attn_",
        "(q|k|v)",
        "norm",
        "weight",
        "$",
        "^",
        ".*",
        "x?",
        "s+",
        "e",
        "(a|)",
        "[a-z]+",
        "shexp",
        "output",
    ];

    const NAMES: &[&str] = &[
        "blk.N.ffn_up_exps.weight",
        "blk.N.ffn_gate_up_exps.weight",
        "blk.N.ffn_down_chexps.weight",
        "blk.N.ffn_down_exps.bias",
        "blk.N.ffn_up_shexp.weight",
        "blk.N.ffn_gate_inp.weight",
        "blk.N.attn_q.weight",
        "blk.N.attn_k_norm.weight",
        "blk.N.ssm_a",
        "output.weight",
        "output_norm.weight",
        "token_embd.weight",
        "blk.N.exps",
        "e",
        "",
    ];

    #[test]
    fn dialect_differences_are_refused() {
        for bad in [
            "(?i)blk",
            "(?=x)",
            "(?<n>x)",
            "(a)\\1",
            "[a-z&&[^x]]",
            "[[]",
            "\\pL",
            "\\Ablk",
            "[]a]",
        ] {
            assert!(OverridePattern::new(bad).is_err(), "{bad}");
        }
        for good in [
            "(?:a|b)x",
            "blk\\.\\d+\\.ffn_.*",
            "[0-9]+",
            "^output\\.weight$",
            "a-b",
        ] {
            assert!(OverridePattern::new(good).is_ok(), "{good}");
        }
    }
}
