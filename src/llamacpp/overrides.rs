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
    re: Arc<Regex>,
}

/// Compiled patterns by source. The planner re-parses the argv it emits for
/// every exact-simulator check (thousands per `--sweep`), with a handful of
/// distinct `-ot` patterns: compiling each once keeps regex compilation off
/// the profile. Bounded so a long-lived process cannot grow it without end.
static COMPILED: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
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

    fn compile(pattern: &str) -> Result<Regex, FlagError> {
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
        // unicode(false): `\d`, `\w`, `\s` and `.` are ASCII/byte based, as in
        // std::regex over std::string.
        let config = Regex::config()
            .nfa_size_limit(Some(10 * (1 << 20)))
            .hybrid_cache_capacity(2 * (1 << 20))
            .match_kind(MatchKind::LeftmostFirst)
            .utf8_empty(false)
            .auto_prefilter(few_branches);
        let re = Regex::builder()
            .configure(config)
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build(pattern)
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
        Ok(re)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// `std::regex_search`: a match anywhere in the name.
    pub fn is_match(&self, name: &str) -> bool {
        self.re.is_match(name.as_bytes())
    }
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
