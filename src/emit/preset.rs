//! A llama-server router preset section (`--models-preset FILE`), read by
//! `common/preset.cpp: parse_ini_from_file()` and `load_from_ini()`:
//!
//! ```ini
//! # ggplan 0.1.0 plan for /models/q.gguf
//! [qwen3-coder-q5]
//! model = /models/q.gguf
//! ctx-size = 262144
//! n-gpu-layers = 99
//! override-tensor = blk\.(1[0-4])\.=CUDA0,exps=CPU
//! swa-full = true
//! ```
//!
//! Keys are the long option names without dashes, the spelling llama.cpp's
//! own `common_preset::to_ini()` writes (table in [`super::flags`]). A flag
//! ggplan does not know the long name of is refused rather than guessed,
//! since an unknown key makes the router refuse the whole file
//! (`option '%s' not recognized in preset '%s'`). Switches are written
//! `key = true`; negative switches keep their `no-` name (`no-mmap = true`),
//! which `parse_bool_arg` inverts itself. Several `-ot` flags are joined
//! with `,` into one `override-tensor` value, because a repeated INI key is
//! last-wins while repeated `-ot` flags accumulate.
//!
//! Values are written unquoted: the grammar strips no quotes, a value ends
//! at optional whitespace followed by `;`, `#` or a line break, and trailing
//! whitespace is dropped. A value containing `;`, `#`, a control character,
//! or with leading/trailing whitespace therefore cannot be written and the
//! plan is refused (an `-ot` regex needing `#` included).

use super::flags::{self, Arity, Item, LAUNCHER_OWNED};
use super::sections::{self, Kind};
use super::{Deployment, EmitError, Format};

const F: Format = Format::Preset;

/// The `--models-preset` emitter.
pub const EMITTER: sections::SectionEmitter = sections::SectionEmitter {
    format: F,
    name_problem,
    no_device_restriction:
        "router children inherit the router's environment; use device = … instead",
    keys,
    classify,
};

fn value_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() {
        Some("an empty value")
    } else if v.contains([';', '#']) {
        Some("the preset grammar ends a value at ';' or '#'")
    } else if v.chars().any(char::is_control) {
        Some("a value must stay on one line")
    } else if v.trim_matches([' ', '\t']) != v {
        Some("leading/trailing whitespace is dropped by the preset parser")
    } else {
        None
    }
}

fn check_value(key: &str, v: &str) -> Result<(), EmitError> {
    match value_problem(v) {
        Some(reason) => Err(EmitError::Unrepresentable {
            format: F,
            what: format!("value of {key}"),
            value: v.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name == "*" {
        Some("[*] is the global section, not a model")
    } else if name.contains(']') {
        Some("']' ends the section header")
    } else if name.trim_matches([' ', '\t']) != name {
        Some("leading/trailing whitespace is not kept by the header grammar")
    } else if name
        .split_once(':')
        .is_some_and(|(_, tag)| tag.chars().any(|c| c.is_ascii_lowercase()))
    {
        Some("llama-server upper-cases the tag after ':', so the model would get another name")
    } else {
        None
    }
}

/// `(key, value)` pairs for the section, in argv order.
pub fn pairs(d: &Deployment) -> Result<Vec<(String, String)>, EmitError> {
    let mut out: Vec<(String, String)> = vec![("model".to_string(), d.model_path.clone())];
    for item in flags::read_argv(&d.argv)? {
        match item {
            Item::Known { spec, value, .. } => {
                let value = match spec.arity {
                    Arity::Switch => "true".to_string(),
                    Arity::Value => value.unwrap_or_default().to_string(),
                };
                if spec.repeatable {
                    if let Some((_, prev)) = out.iter_mut().find(|(k, _)| k == spec.preset_key) {
                        prev.push(',');
                        prev.push_str(&value);
                        continue;
                    }
                }
                out.push((spec.preset_key.to_string(), value));
            }
            Item::Other(w) if LAUNCHER_OWNED.contains(&w) => {
                return Err(EmitError::LauncherOwned {
                    format: F,
                    flag: w.to_string(),
                });
            }
            Item::Other(w) => {
                let known: Vec<&str> = flags::FLAGS.iter().map(|f| f.names[0]).collect();
                return Err(EmitError::UnknownFlag {
                    format: F,
                    flag: w.to_string(),
                    known: known.join(" "),
                });
            }
        }
    }
    for (k, v) in &out {
        check_value(k, v)?;
    }
    Ok(out)
}

/// The keys: one `long-name = value` per flag.
fn keys(d: &Deployment) -> Result<Vec<String>, EmitError> {
    Ok(pairs(d)?
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect())
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The preset grammar of `parse_ini_from_file` (common/preset.cpp), one
/// line at a time:
///
/// ```text
/// header-line  ::= "[" ws [^]]+ ws "]" eol
/// kv-line      ::= ident ws "=" ws value eol      ident ::= [a-zA-Z_][a-zA-Z0-9_.-]*
/// comment-line ::= ws [;#] …
/// blank-line   ::= ws
/// eol          ::= ws ([;#] …)?
/// ```
/// Headers and keys start in column 0; only comments and blanks may be indented.
pub fn classify(line: &str) -> Result<Kind, String> {
    let body = line.trim_start_matches(is_ws);
    if body.is_empty() {
        return Ok(Kind::Blank);
    }
    if body.starts_with([';', '#']) {
        return Ok(Kind::Comment);
    }
    if body.len() != line.len() {
        return Err("only comments and blank lines may be indented".to_string());
    }
    if let Some(rest) = line.strip_prefix('[') {
        let rest = rest.trim_start_matches(is_ws);
        let Some(close) = rest.find(']') else {
            return Err("a section header must end with ']'".to_string());
        };
        let (name, after) = (&rest[..close], rest[close + 1..].trim_start_matches(is_ws));
        if name.is_empty() {
            return Err("empty section name".to_string());
        }
        if !(after.is_empty() || after.starts_with([';', '#'])) {
            return Err("text after the section header".to_string());
        }
        return Ok(Kind::Header(name.to_string()));
    }
    let ident_len = line
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic()
                || c == '_'
                || (i > 0 && (c.is_ascii_digit() || c == '.' || c == '-')))
        })
        .map_or(line.len(), |(i, _)| i);
    if ident_len == 0 {
        return Err("a key must start with a letter or '_'".to_string());
    }
    if !line[ident_len..].trim_start_matches(is_ws).starts_with('=') {
        return Err(format!(
            "key {:?} is not followed by '='",
            &line[..ident_len]
        ));
    }
    Ok(Kind::Entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::fixtures::{brief_deployment, words};
    use crate::emit::Action;
    use crate::emit::Emitter;

    fn planner_deployment() -> Deployment {
        let mut d = brief_deployment();
        d.argv = words(
            "-c 131072 -np 1 -kvu -fit off -ngl 99 -fa on -ctk q8_0 -ctv q8_0 -b 2048 -ub 512 \
             -ot blk\\.([0-9]|1[0-4])\\.=CUDA0 -ot exps=CPU -ts 3,1 -sm layer -dev CUDA0,CUDA1 \
             -mg 0 --swa-full --no-mmap -nr --no-host --no-op-offload -nkvo -ncmoe 2",
        );
        d
    }

    #[test]
    fn snapshot_every_planner_flag() {
        let out = EMITTER.render(&planner_deployment()).unwrap();
        insta::assert_snapshot!(out, @r"
        # ggplan 0.1.0 plan for /models/Qwen3-Coder-30B-A3B-Q5_K_M.gguf
        # hardware: hardware/workstation-4090-5070ti.toml
        #   CUDA0   22.27 GiB predicted of 24.00 GiB
        #   CUDA1   11.62 GiB predicted of 12.58 GiB
        #   CPU      9.10 GiB predicted
        # speed: 812.0 tok/s prompt, 35.2 tok/s generation (predicted)
        [qwen3-coder-q5]
        model = /models/Qwen3-Coder-30B-A3B-Q5_K_M.gguf
        ctx-size = 131072
        parallel = 1
        kv-unified = true
        fit = off
        n-gpu-layers = 99
        flash-attn = on
        cache-type-k = q8_0
        cache-type-v = q8_0
        batch-size = 2048
        ubatch-size = 512
        override-tensor = blk\.([0-9]|1[0-4])\.=CUDA0,exps=CPU
        tensor-split = 3,1
        split-mode = layer
        device = CUDA0,CUDA1
        main-gpu = 0
        swa-full = true
        no-mmap = true
        no-repack = true
        no-host = true
        no-op-offload = true
        no-kv-offload = true
        n-cpu-moe = 2
        ");
        for line in out.lines() {
            classify(line).unwrap();
        }
    }

    /// Read a section back the way `load_from_ini` + `to_args` would, and
    /// compare with the argv (modulo the short/long spelling and `-ot` merge).
    #[test]
    fn preset_reads_back_to_the_same_options() {
        let d = planner_deployment();
        let out = EMITTER.render(&d).unwrap();
        let mut back: Vec<String> = Vec::new();
        for line in out
            .lines()
            .filter(|l| matches!(classify(l), Ok(Kind::Entry)))
        {
            let (k, v) = line.split_once('=').unwrap();
            let (k, v) = (k.trim(), v.trim());
            if k == "model" {
                assert_eq!(v, d.model_path);
                continue;
            }
            let spec = flags::lookup(&format!("--{k}")).unwrap_or_else(|| panic!("{k}"));
            back.push(spec.names[0].to_string());
            if spec.arity == Arity::Value {
                back.push(v.to_string());
            }
        }
        let want = d.argv.join(" ").replace(
            "-ot blk\\.([0-9]|1[0-4])\\.=CUDA0 -ot exps=CPU",
            "-ot blk\\.([0-9]|1[0-4])\\.=CUDA0,exps=CPU",
        );
        assert_eq!(back.join(" "), want);
    }

    #[test]
    fn refuses_unknown_flags_and_unwritable_values() {
        let mut d = Deployment::new("m", "/m.gguf", words("-c 4096 --jinja"));
        let e = EMITTER.render(&d).unwrap_err();
        assert!(
            matches!(&e, EmitError::UnknownFlag { flag, .. } if flag == "--jinja"),
            "{e}"
        );
        d.argv = words("--port 8080");
        assert!(matches!(
            EMITTER.render(&d),
            Err(EmitError::LauncherOwned { .. })
        ));
        for bad in ["a;b=CPU", "a#b=CPU"] {
            d.argv = vec!["-ot".into(), bad.into()];
            assert!(
                matches!(EMITTER.render(&d), Err(EmitError::Unrepresentable { .. })),
                "{bad}"
            );
        }
        d.argv = vec![];
        for bad in ["*", "org/m:q4_k_m", " m"] {
            d.name = bad.into();
            assert!(
                matches!(EMITTER.render(&d), Err(EmitError::BadName { .. })),
                "{bad}"
            );
        }
        d.name = "org/m:Q4_K_M".into();
        assert!(EMITTER.render(&d).is_ok());
    }

    #[test]
    fn grammar_matches_the_peg() {
        assert_eq!(classify("[ a b ]").unwrap(), Kind::Header("a b ".into()));
        assert_eq!(classify("[x] ; c").unwrap(), Kind::Header("x".into()));
        assert_eq!(classify("  ; c").unwrap(), Kind::Comment);
        assert_eq!(classify("\t").unwrap(), Kind::Blank);
        assert_eq!(classify("LLAMA_ARG_CACHE_RAM = 0").unwrap(), Kind::Entry);
        assert_eq!(classify("n-gpu-layers=8 # c").unwrap(), Kind::Entry);
        assert!(classify(" c = 1").is_err());
        assert!(classify("1c = 1").is_err());
        assert!(classify("[x] y").is_err());
        assert!(classify("just words").is_err());
    }

    #[test]
    fn update_replaces_one_section_of_the_docs_example() {
        let existing = "version = 1\r\n\r\n[*]\r\nc = 8192\r\nn-gpu-layers = 8\r\n\r\n[custom_model]\r\nmodel = /abs/path/model-Q4_K_M.gguf\r\nload-on-startup = true\r\n";
        let mut d = Deployment::new(
            "custom_model",
            "/abs/path/model-Q4_K_M.gguf",
            words("-c 4096"),
        );
        let u = EMITTER.update(existing, &d).unwrap();
        assert_eq!(u.action, Action::Replaced);
        assert_eq!(
            u.text,
            "version = 1\r\n\r\n[*]\r\nc = 8192\r\nn-gpu-layers = 8\r\n\r\n# ggplan plan for /abs/path/model-Q4_K_M.gguf\r\n[custom_model]\r\nmodel = /abs/path/model-Q4_K_M.gguf\r\nctx-size = 4096\r\n"
        );
        d.name = "other".into();
        let u2 = EMITTER.update(&u.text, &d).unwrap();
        assert_eq!(u2.action, Action::Added);
        assert!(u2.text.starts_with(&u.text));
    }
}
