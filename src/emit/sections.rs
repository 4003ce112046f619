//! A line-preserving editor for `[section]` files (`models.conf`, presets).
//!
//! serde round-trips of INI-like files lose comments and blank lines, so
//! updating one section is done on the text: the file is split into lines,
//! every line is classified by the format's grammar (a line that fits no
//! rule makes the whole file unparsable, and nothing is written), and only
//! the byte span of the one section is replaced.
//!
//! The span of section `[name]`:
//! * starts at the ggplan comment block directly above the header (the
//!   nearest line starting with `# ggplan` in the unbroken run of comment
//!   lines right above it), or at the header if there is none, so updating
//!   a section replaces its old plan summary instead of stacking a new one
//!   on top; other comments above it stay;
//! * ends with the section's last key line. Comments and blank lines after
//!   it, up to the next header, are kept: they usually introduce the next
//!   section. Comments *between* key lines belong to the section and are
//!   replaced with it.
//!
//! Line endings: the file's convention is taken from its first line break
//! (`\r\n` or `\n`) and the new section is written with it; untouched lines
//! keep theirs byte for byte, mixed files included. A file without a final
//! line break keeps that property when its last section is replaced; when a
//! section is appended to such a file, one line break is added after the
//! old last line (the only byte outside the entry that can change), plus a
//! blank separator line if the file did not already end with one.

use super::{summary, Action, Deployment, EmitError, Emitter, Format, Updated};

/// The emitter of an INI-like format of `[name]` sections (models.conf,
/// `--models-preset`). The format supplies its name rule, its keys and a
/// line classifier; the checks every section shares, the comment block and
/// header, rendering and the in-place update live here once.
pub struct SectionEmitter {
    pub format: Format,
    /// Why a section name would not survive the format's readers, if so.
    pub name_problem: fn(&str) -> Option<&'static str>,
    /// Why the format cannot restrict visible devices (it has no place for
    /// `CUDA_VISIBLE_DEVICES`) and what to use instead.
    pub no_device_restriction: &'static str,
    /// The key lines after the `[name]` header.
    pub keys: fn(&Deployment) -> Result<Vec<String>, EmitError>,
    /// What a line of an existing file is.
    pub classify: fn(&str) -> Result<Kind, String>,
}

impl SectionEmitter {
    /// The section's lines: comment block, header, keys.
    fn block(&self, d: &Deployment) -> Result<Vec<String>, EmitError> {
        let format = self.format;
        d.check_common(format)?;
        if let Some(reason) = (self.name_problem)(&d.name) {
            return Err(EmitError::BadName {
                format,
                name: d.name.clone(),
                reason,
            });
        }
        if d.visible_devices.is_some() {
            return Err(EmitError::Unrepresentable {
                format,
                what: "device restriction".to_string(),
                value: d.cuda_visible_devices().unwrap_or_default(),
                reason: self.no_device_restriction,
            });
        }
        let mut lines = summary::comment_block(format, d)?;
        lines.push(format!("[{}]", d.name));
        lines.extend((self.keys)(d)?);
        Ok(lines)
    }
}

impl Emitter for SectionEmitter {
    fn format(&self) -> Format {
        self.format
    }

    fn render(&self, d: &Deployment) -> Result<String, EmitError> {
        let mut s = self.block(d)?.join("\n");
        s.push('\n');
        Ok(s)
    }

    fn update(&self, existing: &str, d: &Deployment) -> Result<Updated, EmitError> {
        replace_section(
            self.format,
            existing,
            &d.name,
            &self.block(d)?,
            self.classify,
        )
    }
}

/// The first line of the comment block ggplan writes above a section.
pub const MARKER: &str = "# ggplan";

/// What a line is, for the section editor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `[name]`
    Header(String),
    /// `key=value` (or `key = value`)
    Entry,
    /// `# …` / `; …`
    Comment,
    /// Empty or whitespace only.
    Blank,
}

/// A line classifier: the format's grammar, one line at a time. `Err` holds
/// why the line fits no rule.
pub type Classify = fn(&str) -> Result<Kind, String>;

/// One line of a file, with its byte span.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    /// Content without the line break (and without a `\r` before it).
    pub text: &'a str,
    pub start: usize,
    /// Byte after the line break (or end of file).
    pub end: usize,
    pub has_eol: bool,
}

/// Split `s` into lines, keeping byte offsets.
pub(crate) fn lines(s: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in s.split_inclusive('\n') {
        let end = start + piece.len();
        let has_eol = piece.ends_with('\n');
        let text = piece.strip_suffix('\n').unwrap_or(piece);
        let text = text.strip_suffix('\r').unwrap_or(text);
        out.push(Line {
            text,
            start,
            end,
            has_eol,
        });
        start = end;
    }
    out
}

/// The file's line break: that of its first line, `\n` if it has none.
pub fn line_ending(s: &str) -> &'static str {
    match s.find('\n') {
        Some(i) if i > 0 && s.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// Classify every line, or fail on the first one that fits no rule.
pub fn parse(format: Format, s: &str, classify: Classify) -> Result<Vec<Kind>, EmitError> {
    lines(s)
        .iter()
        .enumerate()
        .map(|(i, l)| {
            classify(l.text).map_err(|reason| EmitError::Unparsable {
                format,
                line: i + 1,
                reason,
            })
        })
        .collect()
}

/// Replace section `name` of `existing` with `block` (lines without line
/// breaks: the ggplan comment block, the header and the keys), or append
/// it. See the module docs for the exact span.
pub fn replace_section(
    format: Format,
    existing: &str,
    name: &str,
    block: &[String],
    classify: Classify,
) -> Result<Updated, EmitError> {
    let ls = lines(existing);
    let kinds = parse(format, existing, classify)?;
    let eol = line_ending(existing);
    let joined = block.join(eol);

    let hits: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, Kind::Header(n) if n == name))
        .map(|(i, _)| i)
        .collect();

    match hits[..] {
        [] => {
            let mut out = String::with_capacity(existing.len() + joined.len() + 4);
            out.push_str(existing);
            if let Some(last) = ls.last() {
                if !last.has_eol {
                    out.push_str(eol);
                }
                if kinds.last() != Some(&Kind::Blank) {
                    out.push_str(eol);
                }
            }
            out.push_str(&joined);
            out.push_str(eol);
            Ok(Updated {
                text: out,
                action: Action::Added,
            })
        }
        [h] => {
            let mut start = h;
            let mut i = h;
            while i > 0 && kinds[i - 1] == Kind::Comment {
                i -= 1;
                if ls[i].text.starts_with(MARKER) {
                    start = i;
                    break;
                }
            }
            let mut last = h;
            for (k, kind) in kinds.iter().enumerate().skip(h + 1) {
                match kind {
                    Kind::Header(_) => break,
                    Kind::Entry => last = k,
                    Kind::Comment | Kind::Blank => {}
                }
            }
            let mut out = String::with_capacity(existing.len() + joined.len());
            out.push_str(&existing[..ls[start].start]);
            out.push_str(&joined);
            if ls[last].has_eol {
                out.push_str(eol);
            }
            out.push_str(&existing[ls[last].end..]);
            let action = if out == existing {
                Action::Unchanged
            } else {
                Action::Replaced
            };
            Ok(Updated { text: out, action })
        }
        _ => Err(EmitError::AmbiguousEntry {
            format,
            name: name.to_string(),
            count: hits.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal grammar for the editor's own tests.
    fn classify(line: &str) -> Result<Kind, String> {
        let t = line.trim();
        if t.is_empty() {
            Ok(Kind::Blank)
        } else if t.starts_with(['#', ';']) {
            Ok(Kind::Comment)
        } else if let Some(n) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Ok(Kind::Header(n.to_string()))
        } else if t.contains('=') {
            Ok(Kind::Entry)
        } else {
            Err(format!("not a section, key, comment or blank line: {t:?}"))
        }
    }

    fn block(name: &str, v: &str) -> Vec<String> {
        vec![
            format!("{MARKER} test"),
            format!("[{name}]"),
            format!("K={v}"),
        ]
    }

    fn upd(existing: &str, name: &str, v: &str) -> Updated {
        replace_section(
            Format::ModelsConf,
            existing,
            name,
            &block(name, v),
            classify,
        )
        .unwrap()
    }

    const FILE: &str = "\
# my models
X=1

[a]
K=old
# inside a
J=2
# about b, kept

[b]
K=b
";

    #[test]
    fn replaces_only_the_section_span() {
        let u = upd(FILE, "a", "new");
        assert_eq!(u.action, Action::Replaced);
        assert_eq!(
            u.text,
            "# my models\nX=1\n\n# ggplan test\n[a]\nK=new\n# about b, kept\n\n[b]\nK=b\n"
        );
        // A second update replaces the ggplan block instead of stacking one.
        let again = upd(&u.text, "a", "newer");
        assert_eq!(again.text, u.text.replace("K=new\n", "K=newer\n"));
        assert_eq!(upd(&u.text, "a", "new").action, Action::Unchanged);
    }

    #[test]
    fn appends_with_one_blank_separator() {
        let u = upd(FILE, "c", "1");
        assert_eq!(u.action, Action::Added);
        assert_eq!(u.text, format!("{FILE}\n# ggplan test\n[c]\nK=1\n"));
        assert_eq!(upd("", "c", "1").text, "# ggplan test\n[c]\nK=1\n");
        assert_eq!(
            upd("X=1\n\n", "c", "1").text,
            "X=1\n\n# ggplan test\n[c]\nK=1\n"
        );
    }

    #[test]
    fn keeps_a_missing_final_newline_and_crlf() {
        let no_nl = "[a]\nK=1\n\n[b]\nK=2";
        assert_eq!(
            upd(no_nl, "b", "3").text,
            "[a]\nK=1\n\n# ggplan test\n[b]\nK=3"
        );
        assert_eq!(
            upd(no_nl, "a", "3").text,
            "# ggplan test\n[a]\nK=3\n\n[b]\nK=2"
        );
        // Appending must end the old last line first.
        assert_eq!(
            upd(no_nl, "c", "3").text,
            "[a]\nK=1\n\n[b]\nK=2\n\n# ggplan test\n[c]\nK=3\n"
        );

        let crlf = "# top\r\n[a]\r\nK=1\r\n\r\n[b]\r\nK=2\r\n";
        let u = upd(crlf, "a", "9");
        assert_eq!(
            u.text,
            "# top\r\n# ggplan test\r\n[a]\r\nK=9\r\n\r\n[b]\r\nK=2\r\n"
        );
        assert_eq!(
            upd(crlf, "c", "9").text,
            format!("{crlf}\r\n# ggplan test\r\n[c]\r\nK=9\r\n")
        );
    }

    /// One generated section: the lines before its header (kept), the
    /// header and body (the span an update replaces), the lines after its
    /// last key (kept).
    #[derive(Debug, Clone)]
    struct Gen {
        before: Vec<String>,
        span: Vec<String>,
        after: Vec<String>,
    }

    fn gen_section(name: String) -> impl proptest::strategy::Strategy<Value = Gen> {
        let line = prop_oneof![Just(String::new()), "#[ a-z]{0,6}", "; [a-z]{0,6}"];
        let key = "[A-Z]{1,4}=[ -~&&[^#;]]{0,8}";
        (
            proptest::collection::vec(line.clone(), 0..3),
            proptest::collection::vec(
                prop_oneof![key.prop_map(String::from), "# in[a-z]{0,4}"],
                0..4,
            ),
            key,
            proptest::collection::vec(line, 0..3),
        )
            .prop_map(move |(before, mut body, last, after)| {
                // No ggplan marker in generated comments: only real blocks have it.
                let before = before
                    .into_iter()
                    .map(|l| l.replace("ggplan", "gg"))
                    .collect();
                body.insert(0, format!("[{name}]"));
                body.push(last);
                Gen {
                    before,
                    span: body,
                    after,
                }
            })
    }

    proptest! {
        /// Replacing any section keeps every byte outside its span, for LF
        /// and CRLF files; the appended case keeps the whole file as prefix.
        #[test]
        fn update_keeps_every_byte_outside_the_span(
            secs in proptest::collection::vec(
                proptest::sample::select(vec!["a", "b", "c", "d"]).prop_flat_map(|n| gen_section(n.to_string())),
                1..5,
            ),
            crlf in proptest::bool::ANY,
            pick in 0usize..8,
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            // Unique names only (the editor refuses duplicates by design).
            let mut names = Vec::new();
            let secs: Vec<Gen> = secs.into_iter().filter(|g| {
                let n = g.span[0].clone();
                let fresh = !names.contains(&n);
                names.push(n);
                fresh
            }).collect();
            let render = |ls: &[String]| ls.iter().map(|l| format!("{l}{eol}")).collect::<String>();
            let file: String = secs.iter().map(|g| render(&g.before) + &render(&g.span) + &render(&g.after)).collect();
            let target = pick % (secs.len() + 1);
            let name = if target < secs.len() { secs[target].span[0].trim_matches(['[', ']']).to_string() } else { "zz".to_string() };
            let u = upd(&file, &name, "v");
            let new_block = render(&block(&name, "v"));
            if target < secs.len() {
                let prefix: String = secs[..target].iter().map(|g| render(&g.before) + &render(&g.span) + &render(&g.after)).collect::<String>() + &render(&secs[target].before);
                let suffix: String = render(&secs[target].after) + &secs[target + 1..].iter().map(|g| render(&g.before) + &render(&g.span) + &render(&g.after)).collect::<String>();
                prop_assert_eq!(u.text, format!("{prefix}{new_block}{suffix}"));
            } else {
                prop_assert!(u.text.starts_with(&file));
                prop_assert!(u.text.ends_with(&new_block));
                prop_assert_eq!(u.action, Action::Added);
            }
        }
    }

    #[test]
    fn refuses_unparsable_and_ambiguous_files() {
        let e = replace_section(
            Format::ModelsConf,
            "[a]\nK=1\ngarbage\n",
            "a",
            &block("a", "1"),
            classify,
        )
        .unwrap_err();
        assert!(matches!(e, EmitError::Unparsable { line: 3, .. }), "{e}");
        let e = replace_section(
            Format::ModelsConf,
            "[a]\n[a]\n",
            "a",
            &block("a", "1"),
            classify,
        )
        .unwrap_err();
        assert!(
            matches!(e, EmitError::AmbiguousEntry { count: 2, .. }),
            "{e}"
        );
    }
}
