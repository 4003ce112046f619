//! The one table of llama.cpp option spellings ggplan knows: every
//! memory-relevant option [`super::flags::Flags::parse`] reads, with all its
//! spellings, its arity and its preset key. The parser dispatches on it and
//! the deploy-config writers (`crate::emit`) read and write argv with it, so
//! what ggplan emits and what it simulates cannot drift apart.
//!
//! Every spelling was checked against `common/arg.cpp` of llama.cpp b11434
//! (`common_arg({...})` declarations in `common_params_parser_init`). The
//! preset key is what llama.cpp's own `common_preset::to_ini()` writes
//! (common/preset.cpp): the *last* spelling without its dashes
//! (`opt.args.back()`), or for a negative-only spelling the negative name
//! (`parse_bool_arg` inverts `no-…` keys itself, so `no-mmap = true` means
//! `--no-mmap`). Names are therefore listed in llama.cpp's order.

/// Whether a flag takes the next argv word as its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// `-c 8192`
    Value,
    /// `--swa-full` (no value; written `key = true` in a preset)
    Switch,
}

/// One llama.cpp option spelling set.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagSpec {
    /// Every spelling llama.cpp accepts, in common/arg.cpp's order.
    pub names: &'static [&'static str],
    /// Key in a `--models-preset` INI section (last spelling without dashes);
    /// unique in [`FLAGS`], so the parser dispatches on it.
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

/// The negative switch of a `common_arg` with both (`-no-kvu` for `-kvu`).
const fn neg(names: &'static [&'static str], key: &'static str, option: &'static str) -> FlagSpec {
    FlagSpec {
        names,
        preset_key: key,
        arity: Arity::Switch,
        option,
        repeatable: false,
    }
}

/// A value option that accumulates (`-ot`, `--override-kv`).
const fn r(names: &'static [&'static str], key: &'static str) -> FlagSpec {
    FlagSpec {
        names,
        preset_key: key,
        arity: Arity::Value,
        option: key,
        repeatable: true,
    }
}

/// Every memory-relevant option, llama.cpp b11434 spellings.
pub static FLAGS: &[FlagSpec] = &[
    v(&["-c", "--ctx-size"], "ctx-size"),
    v(&["-b", "--batch-size"], "batch-size"),
    v(&["-ub", "--ubatch-size"], "ubatch-size"),
    v(&["-np", "--parallel"], "parallel"),
    s(&["-kvu", "--kv-unified"], "kv-unified"),
    neg(
        &["-no-kvu", "--no-kv-unified"],
        "no-kv-unified",
        "kv-unified",
    ),
    v(&["-fa", "--flash-attn"], "flash-attn"),
    v(&["-ctk", "--cache-type-k"], "cache-type-k"),
    v(&["-ctv", "--cache-type-v"], "cache-type-v"),
    s(&["--swa-full"], "swa-full"),
    s(&["-nkvo", "--no-kv-offload"], "no-kv-offload"),
    neg(&["-kvo", "--kv-offload"], "kv-offload", "no-kv-offload"),
    v(&["-ngl", "--gpu-layers", "--n-gpu-layers"], "n-gpu-layers"),
    v(&["-ts", "--tensor-split"], "tensor-split"),
    v(&["-sm", "--split-mode"], "split-mode"),
    v(&["-dev", "--device"], "device"),
    v(&["-mg", "--main-gpu"], "main-gpu"),
    r(&["-ot", "--override-tensor"], "override-tensor"),
    v(&["-ncmoe", "--n-cpu-moe"], "n-cpu-moe"),
    s(&["-cmoe", "--cpu-moe"], "cpu-moe"),
    v(&["-fit", "--fit"], "fit"),
    v(&["-fitt", "--fit-target"], "fit-target"),
    v(&["-fitc", "--fit-ctx"], "fit-ctx"),
    // `--mmap/--no-mmap/--mlock/-dio` exist up to the `--load-mode` rework;
    // b11434 knows only `-lm/--load-mode` (common/arg.cpp:2694) and would
    // reject `no-mmap` in a preset. Which one to emit is the planner's
    // per-build decision; the simulator reads both.
    s(&["--mmap"], "mmap"),
    neg(&["--no-mmap"], "no-mmap", "mmap"),
    s(&["--mlock"], "mlock"),
    s(&["-dio", "--direct-io"], "direct-io"),
    v(&["-lm", "--load-mode"], "load-mode"),
    s(&["--repack"], "repack"),
    neg(&["-nr", "--no-repack"], "no-repack", "repack"),
    s(&["--no-host"], "no-host"),
    s(&["--op-offload"], "op-offload"),
    neg(&["--no-op-offload"], "no-op-offload", "op-offload"),
    r(&["--override-kv"], "override-kv"),
    // Speculative decoding with a draft model (common/arg.cpp:4100-4266).
    // The draft only drafts with `--spec-type draft-simple`: `-md` alone
    // loads it (and its context) but the default type list is `none`.
    v(
        &["--spec-draft-model", "-md", "--model-draft"],
        "model-draft",
    ),
    v(
        &[
            "--spec-draft-ngl",
            "-ngld",
            "--gpu-layers-draft",
            "--n-gpu-layers-draft",
        ],
        "n-gpu-layers-draft",
    ),
    v(
        &["--spec-draft-device", "-devd", "--device-draft"],
        "device-draft",
    ),
    v(
        &["--spec-draft-type-k", "-ctkd", "--cache-type-k-draft"],
        "cache-type-k-draft",
    ),
    v(
        &["--spec-draft-type-v", "-ctvd", "--cache-type-v-draft"],
        "cache-type-v-draft",
    ),
    r(
        &[
            "--spec-draft-override-tensor",
            "-otd",
            "--override-tensor-draft",
        ],
        "override-tensor-draft",
    ),
    s(
        &["--spec-draft-cpu-moe", "-cmoed", "--cpu-moe-draft"],
        "cpu-moe-draft",
    ),
    v(
        &[
            "--spec-draft-n-cpu-moe",
            "--spec-draft-ncmoe",
            "-ncmoed",
            "--n-cpu-moe-draft",
        ],
        "n-cpu-moe-draft",
    ),
    v(&["--spec-draft-n-max"], "spec-draft-n-max"),
    v(&["--spec-type"], "spec-type"),
    // Older builds: `-cd` (the draft's own context) and `--draft-max`
    // (removed in b11434: `arg_removed`, use --spec-draft-n-max).
    v(&["-cd", "--ctx-size-draft"], "ctx-size-draft"),
    v(&["--draft", "--draft-n", "--draft-max"], "draft-max"),
];

/// Look a spelling up in [`FLAGS`].
pub fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.names.contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_and_key_is_unique_and_dashed() {
        let mut all: Vec<&str> = FLAGS.iter().flat_map(|f| f.names.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a spelling appears twice in FLAGS");
        let mut keys: Vec<&str> = FLAGS.iter().map(|f| f.preset_key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), FLAGS.len(), "a preset key appears twice");
        for f in FLAGS {
            for name in f.names {
                assert!(name.starts_with('-'), "{name}");
            }
            // The preset key is the last spelling without dashes, as
            // common_preset::to_ini() writes it.
            let last = f.names.last().unwrap().trim_start_matches('-');
            assert_eq!(f.preset_key, last);
        }
        assert_eq!(lookup("-ngld").unwrap().preset_key, "n-gpu-layers-draft");
        assert_eq!(lookup("--no-kv-unified").unwrap().option, "kv-unified");
        assert!(lookup("--temp").is_none());
    }
}
