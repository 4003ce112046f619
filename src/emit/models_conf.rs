//! A `models.conf` section, the profile format of the domain brief (§1):
//!
//! ```text
//! # ggplan 0.1.0 plan for /models/qwen3-coder-q5.gguf
//! [qwen3-coder-q5]
//! CTX_SIZE=262144
//! N_GPU_LAYERS=99
//! FIT=off
//! EXTRA_ARGS=--jinja -np 1 -b 2048 -ot blk\.([0-9]|1[0-4])\.=CUDA0,exps=CPU
//! ```
//!
//! `-c` goes to `CTX_SIZE`, `-ngl` to `N_GPU_LAYERS`, `-fit` to `FIT`, and
//! every other flag, in order, to `EXTRA_ARGS`. A key whose flag is not in
//! the plan is left out. The model path is written in the comment block
//! only: in the brief's format the launcher picks the model by section, and
//! a second `-m` would fight with it.
//!
//! ## Quoting rule for `EXTRA_ARGS`
//!
//! The brief's example writes `-ot` regexes bare (`blk\.([0-9]|1[0-4])\.`),
//! so the file is not shell-sourced (a `[section]` line or an unquoted `|`
//! would break a `source`/`eval`), it is read line by line as `KEY=VALUE`
//! and `EXTRA_ARGS` is expanded unquoted, i.e. split on whitespace with no
//! quote removal and no backslash processing. ggplan therefore writes every
//! word verbatim, separated by one space, and **refuses** a word that this
//! reading cannot give back: an empty word, or one containing whitespace or
//! a control character, a quote (`'` `"`, which would reach llama-server
//! literally), or `` ` `` `$` `;` `#` (command substitution, expansion,
//! separators or inline comments for launchers that `eval` the line or
//! strip comments). Glob characters (`[0-9]`, `*`, `?`) are allowed because
//! regexes need them; an unquoted expansion leaves a pattern that matches no
//! file unchanged. The same rule applies to the values of `CTX_SIZE`,
//! `N_GPU_LAYERS` and `FIT`.
//!
//! Device restriction (`CUDA_VISIBLE_DEVICES`) has no key in this format and
//! is refused; restrict with `-dev` in the flags instead. `ttl` and
//! `aliases` are llama-swap settings and are not written here.

use super::flags::{self, Item};
use super::sections::{self, Kind};
use super::{Deployment, EmitError, Format};

const F: Format = Format::ModelsConf;

/// The models.conf emitter.
pub const EMITTER: sections::SectionEmitter = sections::SectionEmitter {
    format: F,
    name_problem,
    no_device_restriction: "models.conf has no environment key; use -dev in the flags",
    keys,
    classify,
};

/// Why `word` cannot be written into `EXTRA_ARGS` (see the module docs).
fn word_problem(word: &str) -> Option<&'static str> {
    if word.is_empty() {
        return Some("an empty word disappears when EXTRA_ARGS is split");
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("EXTRA_ARGS is split on whitespace and has no quoting");
    }
    if word.contains(['\'', '"']) {
        return Some("quotes would reach llama-server literally");
    }
    if word.contains(['`', '$', ';', '#']) {
        return Some("` $ ; # change meaning in launchers that eval the line or strip comments");
    }
    None
}

fn check_word(what: &str, word: &str) -> Result<(), EmitError> {
    match word_problem(word) {
        Some(reason) => Err(EmitError::Unrepresentable {
            format: F,
            what: what.to_string(),
            value: word.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name.contains(['[', ']']) {
        Some("brackets end the section header")
    } else if name.trim() != name {
        Some("leading or trailing whitespace is dropped by readers")
    } else if name.starts_with(['#', ';']) {
        Some("starts with a comment character")
    } else {
        None
    }
}

/// The keys: CTX_SIZE, N_GPU_LAYERS and FIT from their flags, every
/// other flag in EXTRA_ARGS.
fn keys(d: &Deployment) -> Result<Vec<String>, EmitError> {
    let (mut ctx, mut ngl, mut fit) = (None, None, None);
    let mut extra: Vec<&str> = Vec::new();
    for item in flags::read_argv(&d.argv)? {
        match item {
            Item::Known {
                spec,
                value: Some(v),
                ..
            } if spec.preset_key == "ctx-size" => ctx = Some(v),
            Item::Known {
                spec,
                value: Some(v),
                ..
            } if spec.preset_key == "n-gpu-layers" => ngl = Some(v),
            Item::Known {
                spec,
                value: Some(v),
                ..
            } if spec.preset_key == "fit" => fit = Some(v),
            Item::Known {
                spelling, value, ..
            } => {
                extra.push(spelling);
                extra.extend(value);
            }
            Item::Other(w) => extra.push(w),
        }
    }
    let mut lines = Vec::new();
    for (key, value) in [("CTX_SIZE", ctx), ("N_GPU_LAYERS", ngl), ("FIT", fit)] {
        if let Some(v) = value {
            check_word(key, v)?;
            lines.push(format!("{key}={v}"));
        }
    }
    for w in &extra {
        check_word("EXTRA_ARGS word", w)?;
    }
    if !extra.is_empty() {
        lines.push(format!("EXTRA_ARGS={}", extra.join(" ")));
    }
    Ok(lines)
}

/// The grammar ggplan accepts for an existing models.conf: `[name]`
/// headers, `KEY=value` lines (`KEY` an identifier), `#`/`;` comments and
/// blank lines, each possibly indented.
pub fn classify(line: &str) -> Result<Kind, String> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(Kind::Blank);
    }
    if t.starts_with(['#', ';']) {
        return Ok(Kind::Comment);
    }
    if let Some(inner) = t.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(name) => Ok(Kind::Header(name.trim().to_string())),
            None => Err("a section header must end with ']'".to_string()),
        };
    }
    if let Some((key, _)) = t.split_once('=') {
        let mut chars = key.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Ok(Kind::Entry);
        }
        return Err(format!("{key:?} is not a KEY name"));
    }
    Err("not a [section], KEY=value, comment or blank line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::fixtures::{brief_deployment, words};
    use crate::emit::Action;
    use crate::emit::Emitter;

    #[test]
    fn snapshot_brief_profile() {
        let out = EMITTER.render(&brief_deployment()).unwrap();
        insta::assert_snapshot!(out, @r"
        # ggplan 0.1.0 plan for /models/Qwen3-Coder-30B-A3B-Q5_K_M.gguf
        # hardware: hardware/workstation-4090-5070ti.toml
        #   CUDA0   22.27 GiB predicted of 24.00 GiB
        #   CUDA1   11.62 GiB predicted of 12.58 GiB
        #   CPU      9.10 GiB predicted
        # speed: 812.0 tok/s prompt, 35.2 tok/s generation (predicted)
        [qwen3-coder-q5]
        CTX_SIZE=262144
        N_GPU_LAYERS=99
        FIT=off
        EXTRA_ARGS=--jinja -np 1 -b 2048 -ub 2048 --no-context-shift --temp 1.0 --top-p 0.95 --top-k 40 --min-p 0.01 -ot blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU
        ");
        // Every line of the rendering is valid in the grammar the updater reads.
        for line in out.lines() {
            classify(line).unwrap();
        }
    }

    #[test]
    fn extra_args_split_on_whitespace_gives_the_argv_back() {
        let d = brief_deployment();
        let out = EMITTER.render(&d).unwrap();
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .unwrap()
        };
        // What a launcher would run: -c CTX -ngl N -fit FIT $EXTRA_ARGS.
        let mut argv = vec![
            "-c",
            get("CTX_SIZE"),
            "-ngl",
            get("N_GPU_LAYERS"),
            "-fit",
            get("FIT"),
        ];
        argv.extend(get("EXTRA_ARGS").split_whitespace());
        assert_eq!(argv, d.argv);
    }

    #[test]
    fn refuses_what_cannot_be_represented() {
        let mut d = Deployment::new("m", "/m.gguf", words("-c 4096 --alias a_b"));
        assert!(EMITTER.render(&d).is_ok());
        for bad in ["two words", "it's", "$HOME", "a;b", "x#y"] {
            d.argv = vec!["--alias".into(), bad.into()];
            let e = EMITTER.render(&d).unwrap_err();
            assert!(matches!(e, EmitError::Unrepresentable { .. }), "{bad}: {e}");
        }
        d.argv = vec![];
        d.visible_devices = Some(vec![1]);
        assert!(EMITTER.render(&d).is_err());
        d.visible_devices = None;
        d.name = "a]b".into();
        assert!(matches!(EMITTER.render(&d), Err(EmitError::BadName { .. })));
    }

    #[test]
    fn update_keeps_other_sections_byte_for_byte() {
        let existing = "\
; launcher profiles
[glm-flash]
CTX_SIZE=131072
N_GPU_LAYERS=99
EXTRA_ARGS=--jinja -np 1

# production profile, hand-tuned
[qwen3-coder-q5]
CTX_SIZE=10240
EXTRA_ARGS=-b 512

[gpt-oss]
CTX_SIZE=65536";
        let d = brief_deployment();
        let u = EMITTER.update(existing, &d).unwrap();
        assert_eq!(u.action, Action::Replaced);
        let rendered = EMITTER.render(&d).unwrap();
        let head = "; launcher profiles\n[glm-flash]\nCTX_SIZE=131072\nN_GPU_LAYERS=99\nEXTRA_ARGS=--jinja -np 1\n\n# production profile, hand-tuned\n";
        assert_eq!(
            u.text,
            format!("{head}{rendered}\n[gpt-oss]\nCTX_SIZE=65536")
        );
        // Idempotent.
        assert_eq!(
            EMITTER.update(&u.text, &d).unwrap().action,
            Action::Unchanged
        );
        // An unparsable file is refused.
        let e = EMITTER.update("[a]\nnot a line\n", &d).unwrap_err();
        assert!(matches!(e, EmitError::Unparsable { line: 2, .. }), "{e}");
    }
}
