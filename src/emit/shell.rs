//! A `llama-server -m MODEL <flags>` command line, quoted for POSIX shells.
//!
//! Quoting rule: a word made only of `[A-Za-z0-9_@%+=:,./-]` is written
//! bare; anything else goes in single quotes, where nothing is special, and
//! an embedded `'` is written `'\''`. The empty word is `''`. This is the
//! rule of Python's `shlex.quote`, so the line means the same to sh, bash,
//! dash and zsh, and `-ot` regexes (`blk\.(1[0-4])\.=CUDA0`) arrive at
//! llama-server byte for byte. A device restriction is written as an
//! environment prefix (`CUDA_VISIBLE_DEVICES=0,1 llama-server …`).

use super::{flags, Deployment, EmitError, Emitter, Format, Updated};

/// The shell emitter.
pub struct Shell;

/// Characters that never need quoting in any POSIX shell word position.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// Quote one word for a POSIX shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_safe) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `server -m model argv…` as words, before quoting.
pub fn command_words(d: &Deployment) -> Vec<&str> {
    let mut words = vec![d.server(), "-m", d.model_path.as_str()];
    words.extend(d.argv.iter().map(String::as_str));
    words
}

/// Refuse a word no process can receive (argv strings end at NUL).
pub(crate) fn check_words(format: Format, d: &Deployment) -> Result<(), EmitError> {
    for w in command_words(d) {
        if w.contains('\0') {
            return Err(EmitError::Unrepresentable {
                format,
                what: "argument".to_string(),
                value: w.replace('\0', "\\0"),
                reason: "contains a NUL byte",
            });
        }
    }
    Ok(())
}

impl Emitter for Shell {
    fn format(&self) -> Format {
        Format::Shell
    }

    fn render(&self, d: &Deployment) -> Result<String, EmitError> {
        d.check_common(Format::Shell)?;
        flags::read_argv(&d.argv)?;
        check_words(Format::Shell, d)?;
        let mut line = String::new();
        if let Some(env) = d.cuda_visible_devices() {
            line.push_str(&env);
            line.push(' ');
        }
        let quoted: Vec<String> = command_words(d).into_iter().map(quote).collect();
        line.push_str(&quoted.join(" "));
        line.push('\n');
        Ok(line)
    }

    fn update(&self, _existing: &str, _d: &Deployment) -> Result<Updated, EmitError> {
        Err(EmitError::NotUpdatable {
            format: Format::Shell,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A POSIX word splitter for what [`quote`] produces (bare words,
    /// single quotes, backslash escapes outside quotes), used to prove that
    /// the emitted line gives back the argv.
    pub(crate) fn split_posix(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        cur.push(q);
                    }
                }
                '\\' => {
                    in_word = true;
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        words
    }

    proptest::proptest! {
        /// Any word a process can receive survives quoting and a POSIX split.
        #[test]
        fn quote_round_trips(words in proptest::collection::vec("[^\\x00]{0,12}", 1..6)) {
            let line: Vec<String> = words.iter().map(|w| quote(w)).collect();
            proptest::prop_assert_eq!(split_posix(&line.join(" ")), words);
        }
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(quote("-ngl"), "-ngl");
        assert_eq!(quote("/models/a b.gguf"), "'/models/a b.gguf'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(r"blk\.(1[0-4])\.=CUDA0"), r"'blk\.(1[0-4])\.=CUDA0'");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn snapshot_with_devices_and_regex() {
        let mut d = Deployment::new(
            "qwen3-coder-q5",
            "/models/Qwen3 Coder/Q5_K_M.gguf",
            "-c 262144 -np 1 -fit off -ngl 99 -fa on -ot blk\\.([0-9]|1[0-4])\\.=CUDA0,exps=CPU"
                .split(' ')
                .map(str::to_string)
                .collect(),
        );
        d.visible_devices = Some(vec![0, 1]);
        let out = Shell.render(&d).unwrap();
        insta::assert_snapshot!(out, @r"CUDA_VISIBLE_DEVICES=0,1 llama-server -m '/models/Qwen3 Coder/Q5_K_M.gguf' -c 262144 -np 1 -fit off -ngl 99 -fa on -ot 'blk\.([0-9]|1[0-4])\.=CUDA0,exps=CPU'");
        // Fed back through a POSIX word splitter, the line is the argv again.
        let words = split_posix(out.trim_end());
        assert_eq!(words[0], "CUDA_VISIBLE_DEVICES=0,1");
        assert_eq!(
            words[1..4],
            ["llama-server", "-m", "/models/Qwen3 Coder/Q5_K_M.gguf"]
        );
        assert_eq!(words[4..], d.argv[..]);
        // …and through ggplan's own flag reader.
        assert_eq!(flags::read_argv(&words[4..]).unwrap().len(), 6);
    }

    #[test]
    fn round_trips_awkward_words() {
        let argv: Vec<String> = [
            "--alias",
            "it's \"x\"",
            "--temp",
            "",
            "-ot",
            "a\\b$c`d`=CPU",
        ]
        .map(String::from)
        .into();
        let d = Deployment::new("n", "/m.gguf", argv.clone());
        let out = Shell.render(&d).unwrap();
        assert_eq!(split_posix(out.trim_end())[3..], argv[..]);
        assert!(matches!(
            Shell.update("", &d),
            Err(EmitError::NotUpdatable { .. })
        ));
    }
}
