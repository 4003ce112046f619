//! The llama-server flags ggplan writes into deploy configs, and a small
//! argv reader over them.
//!
//! The spelling table itself ([`FLAGS`]: every spelling, arity and preset
//! key) is the simulator's, [`crate::llamacpp::options`]: the flags emit can
//! write are by construction the ones the simulator reads.

pub use crate::llamacpp::options::{lookup, Arity, FlagSpec, FLAGS};

use super::EmitError;

/// Spellings that must not appear in a deployment's argv: the model path is
/// a field of its own ([`super::Deployment::model_path`]).
const RESERVED: &[&str] = &["-m", "--model"];

/// Spellings owned by whoever launches the server: llama-swap substitutes
/// `${PORT}`, the router assigns host and port itself (tools/server README,
/// "Model presets": router-controlled args are removed or overwritten).
pub const LAUNCHER_OWNED: &[&str] = &["--port", "--host"];

/// One item of an argv: a known flag with its value, or a word ggplan does
/// not know (passed through untouched where the format allows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Known {
        spec: &'static FlagSpec,
        /// The spelling used in the argv (`-c` or `--ctx-size`).
        spelling: &'a str,
        value: Option<&'a str>,
    },
    Other(&'a str),
}

/// Read an argv (the words after `-m PATH`) into items.
///
/// Known flags consume their value; a known value flag at the end of argv is
/// an error. Unknown words are kept as [`Item::Other`], in order. A known
/// flag given twice is refused unless it is repeatable: llama.cpp keeps the
/// last one, and a plan that says two things is a bug upstream of us.
pub fn read_argv(argv: &[String]) -> Result<Vec<Item<'_>>, EmitError> {
    let mut items = Vec::with_capacity(argv.len());
    let mut seen: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let word = argv[i].as_str();
        if RESERVED.contains(&word) {
            return Err(EmitError::ReservedFlag {
                flag: word.to_string(),
            });
        }
        match lookup(word) {
            Some(spec) => {
                if !spec.repeatable {
                    if seen.contains(&spec.option) {
                        return Err(EmitError::DuplicateFlag {
                            flag: word.to_string(),
                        });
                    }
                    seen.push(spec.option);
                }
                let value = match spec.arity {
                    Arity::Switch => None,
                    Arity::Value => {
                        i += 1;
                        let Some(val) = argv.get(i) else {
                            return Err(EmitError::MissingValue {
                                flag: word.to_string(),
                            });
                        };
                        Some(val.as_str())
                    }
                };
                items.push(Item::Known {
                    spec,
                    spelling: word,
                    value,
                });
            }
            None => items.push(Item::Other(word)),
        }
        i += 1;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_values_switches_and_unknown_words() {
        let a = argv("-c 8192 --jinja -fa on -ngl 99 --swa-full --temp 0.7");
        let items = read_argv(&a).unwrap();
        let keys: Vec<String> = items
            .iter()
            .map(|it| match it {
                Item::Known { spec, value, .. } => {
                    format!("{}={}", spec.preset_key, value.unwrap_or("-"))
                }
                Item::Other(w) => format!("?{w}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "ctx-size=8192",
                "?--jinja",
                "flash-attn=on",
                "n-gpu-layers=99",
                "swa-full=-",
                "?--temp",
                "?0.7"
            ]
        );
    }

    #[test]
    fn refuses_duplicates_missing_values_and_reserved_flags() {
        assert!(matches!(
            read_argv(&argv("-c 1 --ctx-size 2")),
            Err(EmitError::DuplicateFlag { flag }) if flag == "--ctx-size"
        ));
        assert!(matches!(
            read_argv(&argv("-kvu -no-kvu")),
            Err(EmitError::DuplicateFlag { flag }) if flag == "-no-kvu"
        ));
        assert!(matches!(
            read_argv(&argv("-ngl")),
            Err(EmitError::MissingValue { flag }) if flag == "-ngl"
        ));
        assert!(matches!(
            read_argv(&argv("-m x.gguf")),
            Err(EmitError::ReservedFlag { flag }) if flag == "-m"
        ));
        // -ot accumulates in llama.cpp, so two of them are fine.
        assert_eq!(read_argv(&argv("-ot a=CPU -ot b=CUDA0")).unwrap().len(), 2);
    }
}
