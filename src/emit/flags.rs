//! The llama-server flags the planner emits, with their long names, and a
//! small argv reader over them.
//!
//! Every name below was checked against `common/arg.cpp` (`common_arg({...})`
//! declarations in `common_params_parser_init`). The preset key is what
//! llama.cpp's own `common_preset::to_ini()` writes: the *last* spelling of
//! the option without its dashes (`opt.args.back()`), or for a negative-only
//! spelling the negative name (`common/preset.cpp: parse_bool_arg` inverts
//! `no-…` keys itself, so `no-mmap = true` means `--no-mmap`).

use super::EmitError;

/// Whether a flag takes the next argv word as its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// `-c 8192`
    Value,
    /// `--swa-full` (no value; written `key = true` in a preset)
    Switch,
}

/// One llama-server option as ggplan emits it.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagSpec {
    /// Every spelling llama-server accepts, short first (`-c`, `--ctx-size`).
    pub names: &'static [&'static str],
    /// Key in a `--models-preset` INI section (long name without dashes).
    pub preset_key: &'static str,
    pub arity: Arity,
    /// The llama.cpp option this spelling sets: a positive and a negative
    /// switch of one `common_arg` (`-kvu` / `-no-kvu`) share it, so giving
    /// both is a duplicate.
    pub option: &'static str,
    /// May be given several times and accumulates (`-ot` pushes to
    /// `tensor_buft_overrides` on every use); everything else is last-wins.
    pub repeatable: bool,
}

const fn v(names: &'static [&'static str], key: &'static str) -> FlagSpec {
    FlagSpec {
        names,
        preset_key: key,
        arity: Arity::Value,
        option: key,
        repeatable: false,
    }
}

const fn s(names: &'static [&'static str], key: &'static str) -> FlagSpec {
    FlagSpec {
        names,
        preset_key: key,
        arity: Arity::Switch,
        option: key,
        repeatable: false,
    }
}

/// The flags the planner emits. Spellings checked against common/arg.cpp of
/// llama.cpp b11434 (/work/cache/llama.cpp-b11434) and of GitHub HEAD.
pub static FLAGS: &[FlagSpec] = &[
    v(&["-c", "--ctx-size"], "ctx-size"),
    v(&["-b", "--batch-size"], "batch-size"),
    v(&["-ub", "--ubatch-size"], "ubatch-size"),
    v(&["-np", "--parallel"], "parallel"),
    s(&["-kvu", "--kv-unified"], "kv-unified"),
    FlagSpec {
        names: &["-no-kvu", "--no-kv-unified"],
        preset_key: "no-kv-unified",
        arity: Arity::Switch,
        option: "kv-unified",
        repeatable: false,
    },
    v(&["-ngl", "--gpu-layers", "--n-gpu-layers"], "n-gpu-layers"),
    v(&["-ts", "--tensor-split"], "tensor-split"),
    v(&["-sm", "--split-mode"], "split-mode"),
    v(&["-dev", "--device"], "device"),
    v(&["-mg", "--main-gpu"], "main-gpu"),
    FlagSpec {
        names: &["-ot", "--override-tensor"],
        preset_key: "override-tensor",
        arity: Arity::Value,
        option: "override-tensor",
        repeatable: true,
    },
    v(&["-ncmoe", "--n-cpu-moe"], "n-cpu-moe"),
    s(&["-cmoe", "--cpu-moe"], "cpu-moe"),
    v(&["-fa", "--flash-attn"], "flash-attn"),
    v(&["-ctk", "--cache-type-k"], "cache-type-k"),
    v(&["-ctv", "--cache-type-v"], "cache-type-v"),
    v(&["-fit", "--fit"], "fit"),
    s(&["-nkvo", "--no-kv-offload"], "no-kv-offload"),
    s(&["--swa-full"], "swa-full"),
    // `--no-mmap` exists up to the `--load-mode` rework; b11434 knows only
    // `-lm/--load-mode` (common/arg.cpp:2694) and would reject `no-mmap` in
    // a preset. Which one to emit is the planner's per-build decision.
    s(&["--no-mmap"], "no-mmap"),
    v(&["-lm", "--load-mode"], "load-mode"),
    s(&["-nr", "--no-repack"], "no-repack"),
    s(&["--no-host"], "no-host"),
    s(&["--no-op-offload"], "no-op-offload"),
];

/// Spellings that must not appear in a deployment's argv: the model path is
/// a field of its own ([`super::Deployment::model_path`]).
const RESERVED: &[&str] = &["-m", "--model"];

/// Spellings owned by whoever launches the server: llama-swap substitutes
/// `${PORT}`, the router assigns host and port itself (tools/server README,
/// "Model presets": router-controlled args are removed or overwritten).
pub const LAUNCHER_OWNED: &[&str] = &["--port", "--host"];

/// Look a spelling up in [`FLAGS`].
pub fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.names.contains(&name))
}

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
    fn every_spelling_is_unique_and_dashed() {
        let mut all: Vec<&str> = FLAGS.iter().flat_map(|f| f.names.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a spelling appears twice in FLAGS");
        for f in FLAGS {
            for name in f.names {
                assert!(name.starts_with('-'), "{name}");
            }
            // The preset key is the last spelling without dashes, as
            // common_preset::to_ini() writes it.
            let last = f.names.last().unwrap().trim_start_matches('-');
            assert_eq!(f.preset_key, last);
        }
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

/// The spelling table above and the simulator's parser
/// ([`crate::llamacpp::flags::Flags::parse`]) describe the same llama.cpp
/// options from two sides (what we write vs what we simulate); every
/// spelling ggplan can emit must be one the simulator accepts, or the
/// planner would emit a flag it has not simulated.
#[cfg(test)]
mod parser_agreement {
    use super::*;

    fn sample_value(key: &str) -> &'static str {
        match key {
            "tensor-split" => "1,1",
            "split-mode" => "layer",
            "device" => "none",
            "override-tensor" => "exps=CPU",
            "flash-attn" => "on",
            "cache-type-k" | "cache-type-v" => "q8_0",
            "fit" => "off",
            "load-mode" => "none",
            _ => "2",
        }
    }

    #[test]
    fn every_emittable_spelling_is_simulated() {
        for spec in FLAGS {
            for name in spec.names {
                let mut argv = vec![*name];
                if spec.arity == Arity::Value {
                    argv.push(sample_value(spec.preset_key));
                }
                if let Err(e) = crate::llamacpp::flags::Flags::parse(&argv) {
                    panic!("{argv:?}: emit can write it but the simulator rejects it: {e}");
                }
            }
        }
    }
}
