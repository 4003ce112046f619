//! llama-swap `config.yaml`: one `models.<id>` entry, and for several
//! models a whole config with co-residency groups.
//!
//! Field names follow llama-swap's Go structs (`proxy/config/model_config.go`
//! `ModelConfig`: `cmd`, `env`, `ttl`, `aliases`, `metadata`, …;
//! `proxy/config/config.go` `GroupConfig`: `swap`, `exclusive`,
//! `persistent`, `members`). Groups are written in the canonical form of the
//! new scheduler (llama-swap PR #823): `routing.router.use: group` with
//! `routing.router.settings.groups`; [`read_groups`] also accepts the legacy
//! top-level `groups:`.
//!
//! YAML is produced by `yaml_serde`, never by hand. `cmd` is a literal block
//! with one option per line; llama-swap splits it with a POSIX shlex after
//! dropping `#` comment lines (`SanitizeCommand`), so every word is quoted
//! with [`super::shell::quote`] and `${PORT}` is left bare for llama-swap to
//! substitute. Words containing `${` (llama-swap macros) or control
//! characters are refused.
//!
//! ## Updating an existing config.yaml
//!
//! `yaml_serde` cannot keep comments, so the update is a text splice: the
//! file is parsed to validate it, the text span of `models.<name>` is found
//! by indentation (the top-level `models:` line, its children's indent, the
//! entry's key line up to its last non-blank, non-comment line), and only
//! that span is replaced by the new entry indented to match. Comments and
//! blank lines after the entry stay. A new entry is inserted after the last
//! entry of `models:` (or a `models:` block is appended). The result is
//! parsed again and must equal the old document with exactly that one entry
//! set; otherwise nothing is returned. A `models` mapping in flow style
//! (`models: {…}`) cannot be edited in place and is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use yaml_serde::{Mapping, Value};

use super::flags::{self, Item, LAUNCHER_OWNED};
use super::sections::{self, line_ending};
use super::shell::{self, quote};
use super::{Action, Deployment, EmitError, Emitter, Format, Updated};

/// The llama-swap emitter.
pub struct LlamaSwap;

const F: Format = Format::LlamaSwap;

/// One `models.<id>` entry, with llama-swap's field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `metadata.ggplan`: the plan summary (llama-swap passes metadata
    /// through to `/v1/models` untouched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// A co-residency group (`GroupConfig` in llama-swap's config.go).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// true: one member at a time; false: members run together.
    #[serde(default = "yes")]
    pub swap: bool,
    /// true: starting a member unloads every other group.
    #[serde(default = "yes")]
    pub exclusive: bool,
    /// true: other groups cannot unload this one.
    #[serde(default)]
    pub persistent: bool,
    #[serde(default)]
    pub members: Vec<String>,
}

fn yes() -> bool {
    true
}

fn bad(what: &str, value: &str, reason: &'static str) -> EmitError {
    EmitError::Unrepresentable {
        format: F,
        what: what.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// The `cmd` text: the server, `--port ${PORT}`, `-m`, then one option per line.
fn cmd(d: &Deployment) -> Result<String, EmitError> {
    shell::check_words(F, d)?;
    for w in shell::command_words(d) {
        if w.contains("${") {
            return Err(bad("argument", w, "${…} is llama-swap macro syntax"));
        }
        if w.chars().any(char::is_control) {
            return Err(bad(
                "argument",
                w,
                "cmd lines are split and comment-stripped line by line",
            ));
        }
    }
    let mut lines = vec![
        format!("{} --port ${{PORT}}", quote(d.server())),
        format!("-m {}", quote(&d.model_path)),
    ];
    for item in flags::read_argv(&d.argv)? {
        match item {
            Item::Known {
                spelling, value, ..
            } => {
                let mut line = spelling.to_string();
                if let Some(v) = value {
                    line.push(' ');
                    line.push_str(&quote(v));
                }
                lines.push(line);
            }
            Item::Other(w) if LAUNCHER_OWNED.contains(&w) => {
                return Err(EmitError::LauncherOwned {
                    format: F,
                    flag: w.to_string(),
                });
            }
            // An unknown flag starts a line; its values follow on it.
            Item::Other(w) => {
                let n = lines.len();
                match lines.last_mut() {
                    Some(last) if !w.starts_with('-') && n > 2 => {
                        last.push(' ');
                        last.push_str(&quote(w));
                    }
                    _ => lines.push(quote(w)),
                }
            }
        }
    }
    Ok(lines.join("\n"))
}

fn metadata(d: &Deployment) -> Option<Value> {
    let s = d.summary.as_ref()?;
    let mut g = Mapping::new();
    g.insert("version".into(), s.ggplan_version.clone().into());
    if let Some(hw) = &s.hardware_file {
        g.insert("hardware".into(), hw.clone().into());
    }
    let mut pred = Mapping::new();
    for p in &s.devices {
        pred.insert(p.device.clone().into(), p.predicted.0.into());
    }
    g.insert("predicted_bytes".into(), Value::Mapping(pred));
    let caps: Mapping = s
        .devices
        .iter()
        .filter_map(|p| p.capacity.map(|c| (p.device.clone().into(), c.0.into())))
        .collect();
    if !caps.is_empty() {
        g.insert("capacity_bytes".into(), Value::Mapping(caps));
    }
    if let Some(t) = s.tokens_per_s {
        let mut m = Mapping::new();
        m.insert("prompt".into(), t.prompt.into());
        m.insert("generation".into(), t.generation.into());
        g.insert("tokens_per_s".into(), Value::Mapping(m));
    }
    let mut top = Mapping::new();
    top.insert("ggplan".into(), Value::Mapping(g));
    Some(Value::Mapping(top))
}

/// The model entry for `d`.
pub fn entry(d: &Deployment) -> Result<ModelEntry, EmitError> {
    d.check_common(F)?;
    Ok(ModelEntry {
        cmd: cmd(d)?,
        env: d.cuda_visible_devices().into_iter().collect(),
        ttl: d.ttl,
        aliases: d.aliases.clone(),
        metadata: metadata(d),
    })
}

fn to_yaml<T: Serialize>(v: &T) -> Result<String, EmitError> {
    yaml_serde::to_string(v).map_err(EmitError::Yaml)
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, EmitError> {
    yaml_serde::to_value(v).map_err(EmitError::Yaml)
}

/// `{name: entry}` as YAML text (`name:\n  cmd: …`).
fn entry_text(name: &str, e: &ModelEntry) -> Result<String, EmitError> {
    let mut m = Mapping::new();
    m.insert(name.into(), to_value(e)?);
    to_yaml(&m)
}

/// A whole config.yaml for several deployments, with co-residency groups
/// under `routing.router.settings.groups` when `groups` is not empty.
pub fn render_config(
    deployments: &[Deployment],
    groups: &BTreeMap<String, Group>,
) -> Result<String, EmitError> {
    let mut models = Mapping::new();
    for d in deployments {
        if models.contains_key(d.name.as_str()) {
            return Err(EmitError::AmbiguousEntry {
                format: F,
                name: d.name.clone(),
                count: 2,
            });
        }
        models.insert(d.name.clone().into(), to_value(&entry(d)?)?);
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (g, group) in groups {
        for m in &group.members {
            if !models.contains_key(m.as_str()) {
                return Err(bad("group member", m, "not one of the models written"));
            }
            if seen.insert(m, g).is_some() {
                return Err(bad(
                    "group member",
                    m,
                    "llama-swap allows a model in one group only",
                ));
            }
        }
    }
    let mut doc = Mapping::new();
    doc.insert("models".into(), Value::Mapping(models));
    if !groups.is_empty() {
        let mut settings = Mapping::new();
        settings.insert("groups".into(), to_value(groups)?);
        let mut router = Mapping::new();
        router.insert("use".into(), "group".into());
        router.insert("settings".into(), Value::Mapping(settings));
        let mut routing = Mapping::new();
        routing.insert("router".into(), Value::Mapping(router));
        doc.insert("routing".into(), Value::Mapping(routing));
    }
    to_yaml(&doc)
}

/// The co-residency groups of a config.yaml: `routing.router.settings.groups`
/// or, for older configs, top-level `groups`.
pub fn read_groups(text: &str) -> Result<BTreeMap<String, Group>, EmitError> {
    let doc: Value = parse(text)?;
    let canonical = doc
        .get("routing")
        .and_then(|r| r.get("router"))
        .and_then(|r| r.get("settings"))
        .and_then(|s| s.get("groups"));
    match canonical.or_else(|| doc.get("groups")) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(v) => yaml_serde::from_value(v.clone())
            .map_err(|source| EmitError::UnparsableYaml { format: F, source }),
    }
}

fn parse(text: &str) -> Result<Value, EmitError> {
    yaml_serde::from_str(text).map_err(|source| EmitError::UnparsableYaml { format: F, source })
}

fn unparsable(line: usize, reason: impl Into<String>) -> EmitError {
    EmitError::Unparsable {
        format: F,
        line,
        reason: reason.into(),
    }
}

fn indent_of(s: &str) -> usize {
    s.len() - s.trim_start_matches(' ').len()
}

/// Blank or comment-only lines carry no YAML structure.
fn is_neutral(s: &str) -> bool {
    let t = s.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// The key of a block-mapping line (`key:`, `"key":`, `'key':`) as a string,
/// or None if the line is not a simple key line.
fn line_key(s: &str) -> Option<String> {
    let t = s.trim_start_matches(' ');
    let end = if let Some(rest) = t.strip_prefix('"') {
        let mut esc = false;
        let close = rest.char_indices().find(|&(_, c)| {
            let hit = c == '"' && !esc;
            esc = c == '\\' && !esc;
            hit
        })?;
        close.0 + 2
    } else if let Some(rest) = t.strip_prefix('\'') {
        let b = rest.as_bytes();
        let mut i = 0;
        loop {
            if i >= b.len() {
                return None;
            }
            if b[i] == b'\'' {
                if b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                break i + 2;
            }
            i += 1;
        }
    } else {
        let b = t.as_bytes();
        (0..b.len()).find(|&i| {
            b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' ' || b[i + 1] == b'\t')
        })?
    };
    let (key, after) = t.split_at(end);
    if !after.starts_with(':') {
        return None;
    }
    match yaml_serde::from_str::<Value>(key).ok()? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Where `models:` and its entries are in the text.
struct ModelsBlock {
    /// Line index of `models:`.
    header: usize,
    child_indent: Option<usize>,
    /// (key, first line, last content line) per entry.
    entries: Vec<(String, usize, usize)>,
}

fn locate(ls: &[sections::Line<'_>]) -> Result<Option<ModelsBlock>, EmitError> {
    let Some(header) = ls.iter().position(|l| {
        indent_of(l.text) == 0
            && !is_neutral(l.text)
            && line_key(l.text).as_deref() == Some("models")
    }) else {
        return Ok(None);
    };
    let after_colon = ls[header]
        .text
        .split_once(':')
        .map_or("", |(_, r)| r)
        .trim();
    if !(after_colon.is_empty() || after_colon.starts_with('#')) {
        return Err(unparsable(
            header + 1,
            "models is not a block mapping (flow style or inline value); edit it by hand",
        ));
    }
    let mut child_indent = None;
    let mut entries: Vec<(String, usize, usize)> = Vec::new();
    for (i, l) in ls.iter().enumerate().skip(header + 1) {
        if is_neutral(l.text) {
            continue;
        }
        let ind = indent_of(l.text);
        if ind == 0 {
            break;
        }
        let ci = *child_indent.get_or_insert(ind);
        if ind < ci {
            return Err(unparsable(i + 1, "inconsistent indentation under models"));
        }
        if ind == ci {
            let key = line_key(l.text)
                .ok_or_else(|| unparsable(i + 1, "not a simple `name:` key under models"))?;
            entries.push((key, i, i));
        } else if let Some(last) = entries.last_mut() {
            last.2 = i;
        }
    }
    Ok(Some(ModelsBlock {
        header,
        child_indent,
        entries,
    }))
}

/// Indent every non-empty line of `text` by `n` spaces and use `eol`.
fn indent(text: &str, n: usize, eol: &str) -> String {
    let pad = " ".repeat(n);
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(&pad);
        }
        out.push_str(line);
        out.push_str(eol);
    }
    out
}

fn update_text(existing: &str, d: &Deployment) -> Result<Updated, EmitError> {
    let e = entry(d)?;
    let old = parse(existing)?;
    match &old {
        Value::Null => {}
        Value::Mapping(m) => match m.get("models") {
            None | Some(Value::Null) | Some(Value::Mapping(_)) => {}
            Some(_) => return Err(unparsable(1, "models is not a mapping")),
        },
        _ => return Err(unparsable(1, "the document is not a mapping")),
    }
    let ls = sections::lines(existing);
    let eol = line_ending(existing);
    let block = locate(&ls)?;
    if old.get("models").is_some_and(|m| !m.is_null()) && block.is_none() {
        return Err(unparsable(
            1,
            "models is not a top-level block key; edit it by hand",
        ));
    }
    let body = entry_text(&d.name, &e)?;

    let (text, action) = match block {
        Some(b) => {
            let ci = b.child_indent.unwrap_or(2);
            let hits: Vec<&(String, usize, usize)> =
                b.entries.iter().filter(|(k, _, _)| k == &d.name).collect();
            match hits[..] {
                [&(_, first, last)] => {
                    let mut new = indent(&body, ci, eol);
                    if !ls[last].has_eol {
                        new.truncate(new.len() - eol.len());
                    }
                    let out = format!(
                        "{}{}{}",
                        &existing[..ls[first].start],
                        new,
                        &existing[ls[last].end..]
                    );
                    let action = if out == existing {
                        Action::Unchanged
                    } else {
                        Action::Replaced
                    };
                    (out, action)
                }
                [] => {
                    let after = b.entries.last().map_or(b.header, |&(_, _, last)| last);
                    let mut out = existing[..ls[after].end].to_string();
                    if !ls[after].has_eol {
                        out.push_str(eol);
                    }
                    out.push_str(&indent(&body, ci, eol));
                    out.push_str(&existing[ls[after].end..]);
                    (out, Action::Added)
                }
                _ => {
                    return Err(EmitError::AmbiguousEntry {
                        format: F,
                        name: d.name.clone(),
                        count: hits.len(),
                    })
                }
            }
        }
        None => {
            let mut out = existing.to_string();
            if let Some(last) = ls.last() {
                if !last.has_eol {
                    out.push_str(eol);
                }
                if !last.text.trim().is_empty() {
                    out.push_str(eol);
                }
            }
            out.push_str("models:");
            out.push_str(eol);
            out.push_str(&indent(&body, 2, eol));
            (out, Action::Added)
        }
    };

    // Re-validate: the new document is the old one with exactly this entry set.
    let new = parse(&text).map_err(|e| EmitError::Revalidation {
        format: F,
        reason: format!("does not parse: {e:#}"),
    })?;
    let mut want = match old {
        Value::Null => Value::Mapping(Mapping::new()),
        v => v,
    };
    let Value::Mapping(top) = &mut want else {
        return Err(unparsable(1, "the document is not a mapping"));
    };
    let models = top
        .entry("models".into())
        .or_insert(Value::Mapping(Mapping::new()));
    if models.is_null() {
        *models = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(m) = models {
        m.insert(d.name.clone().into(), to_value(&e)?);
    }
    if new != want {
        return Err(EmitError::Revalidation {
            format: F,
            reason: format!(
                "the spliced text does not read back as models.{} plus the old document",
                d.name
            ),
        });
    }
    Ok(Updated { text, action })
}

impl Emitter for LlamaSwap {
    fn format(&self) -> Format {
        F
    }

    fn render(&self, d: &Deployment) -> Result<String, EmitError> {
        let e = entry(d)?;
        Ok(format!(
            "models:\n{}",
            indent(&entry_text(&d.name, &e)?, 2, "\n")
        ))
    }

    fn update(&self, existing: &str, d: &Deployment) -> Result<Updated, EmitError> {
        update_text(existing, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::fixtures::{brief_deployment, words};
    use crate::emit::shell::tests::split_posix;

    /// llama-swap's `ModelConfig` yaml tags (proxy/config/model_config.go).
    const MODEL_FIELDS: &[&str] = &[
        "cmd",
        "cmdStop",
        "proxy",
        "aliases",
        "env",
        "checkEndpoint",
        "ttl",
        "unlisted",
        "useModelName",
        "name",
        "description",
        "concurrencyLimit",
        "filters",
        "macros",
        "metadata",
        "sendLoadingState",
        "timeouts",
    ];
    /// `GroupConfig` yaml tags (proxy/config/config.go).
    const GROUP_FIELDS: &[&str] = &["swap", "exclusive", "persistent", "members"];

    fn deployment() -> Deployment {
        let mut d = brief_deployment();
        d.visible_devices = Some(vec![0, 1]);
        d.ttl = Some(300);
        d.aliases = vec!["qwen-coder".into()];
        d
    }

    /// What llama-swap's SanitizeCommand does before shlex: drop `#` lines,
    /// turn trailing backslashes into spaces.
    fn sanitize(cmd: &str) -> String {
        cmd.lines()
            .filter(|l| !l.trim().starts_with('#'))
            .map(|l| match l.trim().strip_suffix('\\') {
                Some(s) => format!("{s} "),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn snapshot_entry() {
        let out = LlamaSwap.render(&deployment()).unwrap();
        insta::assert_snapshot!(out, @r"
        models:
          qwen3-coder-q5:
            cmd: |-
              llama-server --port ${PORT}
              -m /models/Qwen3-Coder-30B-A3B-Q5_K_M.gguf
              -c 262144
              -ngl 99
              -fit off
              --jinja
              -np 1
              -b 2048
              -ub 2048
              --no-context-shift
              --temp 1.0
              --top-p 0.95
              --top-k 40
              --min-p 0.01
              -ot 'blk\.([0-9]|1[0-4])\.=CUDA0,blk\.(1[5-9]|2[0-1])\.=CUDA1,exps=CPU'
            env:
            - CUDA_VISIBLE_DEVICES=0,1
            ttl: 300
            aliases:
            - qwen-coder
            metadata:
              ggplan:
                version: 0.1.0
                hardware: hardware/workstation-4090-5070ti.toml
                predicted_bytes:
                  CUDA0: 23907532800
                  CUDA1: 12478054400
                  CPU: 9768534016
                capacity_bytes:
                  CUDA0: 25769803776
                  CUDA1: 13509853184
                tokens_per_s:
                  prompt: 812.0
                  generation: 35.25
        ");
    }

    #[test]
    fn reparsed_entry_uses_llama_swap_field_names_and_gives_the_argv_back() {
        let d = deployment();
        let doc: Value = yaml_serde::from_str(&LlamaSwap.render(&d).unwrap()).unwrap();
        let entry = doc
            .get("models")
            .and_then(|m| m.get(d.name.as_str()))
            .unwrap();
        let Value::Mapping(fields) = entry else {
            panic!("entry is not a mapping")
        };
        for k in fields.keys() {
            let k = k.as_str().unwrap();
            assert!(
                MODEL_FIELDS.contains(&k),
                "{k} is not a llama-swap model field"
            );
        }
        assert_eq!(entry.get("ttl").and_then(Value::as_u64), Some(300));
        assert_eq!(
            entry
                .get("env")
                .and_then(|e| e.get(0))
                .and_then(Value::as_str),
            Some("CUDA_VISIBLE_DEVICES=0,1")
        );
        // cmd through llama-swap's SanitizeCommand + a POSIX split:
        // server, --port ${PORT}, -m, path, then exactly the planner's argv.
        let cmd = entry.get("cmd").and_then(Value::as_str).unwrap();
        let words = split_posix(&sanitize(cmd));
        assert_eq!(
            words[..5],
            [
                "llama-server",
                "--port",
                "${PORT}",
                "-m",
                d.model_path.as_str()
            ]
        );
        assert_eq!(words[5..], d.argv[..]);
        assert!(flags::read_argv(&words[5..]).is_ok());
    }

    #[test]
    fn config_with_groups_reads_back_canonical_and_legacy() {
        let a = deployment();
        let mut b = Deployment::new("embed", "/models/embed.gguf", words("-c 8192 -ngl 99"));
        b.ttl = Some(0);
        let groups = BTreeMap::from([(
            "resident".to_string(),
            Group {
                swap: false,
                exclusive: false,
                persistent: true,
                members: vec![a.name.clone(), b.name.clone()],
            },
        )]);
        let text = render_config(&[a.clone(), b], &groups).unwrap();
        let doc: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(
            doc.get("routing")
                .and_then(|r| r.get("router"))
                .and_then(|r| r.get("use"))
                .and_then(Value::as_str),
            Some("group")
        );
        let g = doc["routing"]["router"]["settings"]["groups"]["resident"]
            .as_mapping()
            .unwrap();
        for k in g.keys() {
            assert!(GROUP_FIELDS.contains(&k.as_str().unwrap()), "{k:?}");
        }
        assert_eq!(read_groups(&text).unwrap(), groups);
        // Legacy top-level groups, llama-swap defaults for omitted fields.
        let legacy = "models:\n  a:\n    cmd: x\ngroups:\n  g1:\n    members: [a]\n";
        let read = read_groups(legacy).unwrap();
        assert_eq!(
            read["g1"],
            Group {
                swap: true,
                exclusive: true,
                persistent: false,
                members: vec!["a".into()]
            }
        );
        // A model in two groups is refused, as llama-swap refuses it.
        let mut two = groups.clone();
        two.insert(
            "other".into(),
            Group {
                swap: true,
                exclusive: true,
                persistent: false,
                members: vec![a.name.clone()],
            },
        );
        assert!(render_config(&[a], &two).is_err());
    }

    const EXISTING: &str = "\
# llama-swap config, hand-written
healthCheckTimeout: 500   # slow disks
models:
  # the small one
  \"tiny\":
    cmd: llama-server --port ${PORT} -m /m/tiny.gguf
    ttl: 60

  qwen3-coder-q5:
    # old profile
    cmd: |
      llama-server --port ${PORT}
      -m /m/old.gguf
    aliases: [old]
  # trailing comment about the models block

groups:
  g:
    members: [tiny]
";

    #[test]
    fn update_replaces_only_the_entry_span() {
        let d = deployment();
        let u = LlamaSwap.update(EXISTING, &d).unwrap();
        assert_eq!(u.action, Action::Replaced);
        let start = EXISTING.find("  qwen3-coder-q5:").unwrap();
        let end = EXISTING.find("  # trailing comment").unwrap();
        let new_entry = indent(&entry_text(&d.name, &entry(&d).unwrap()).unwrap(), 2, "\n");
        assert_eq!(
            u.text,
            format!("{}{}{}", &EXISTING[..start], new_entry, &EXISTING[end..])
        );
        assert_eq!(
            LlamaSwap.update(&u.text, &d).unwrap().action,
            Action::Unchanged
        );
    }

    #[test]
    fn update_adds_after_the_last_entry_or_appends_models() {
        let mut d = deployment();
        d.name = "new:model".into();
        let u = LlamaSwap.update(EXISTING, &d).unwrap();
        assert_eq!(u.action, Action::Added);
        let at = EXISTING.find("  # trailing comment").unwrap();
        assert!(u.text.starts_with(&EXISTING[..at]));
        assert!(u.text.ends_with(&EXISTING[at..]));
        assert!(
            u.text[at..].starts_with("  new:model:\n    cmd: |-\n"),
            "{}",
            &u.text[at..]
        );

        let no_models = "logLevel: info";
        let u = LlamaSwap.update(no_models, &d).unwrap();
        assert!(
            u.text
                .starts_with("logLevel: info\n\nmodels:\n  new:model:\n"),
            "{}",
            u.text
        );
        assert_eq!(
            LlamaSwap.update("", &d).unwrap().text,
            LlamaSwap.render(&d).unwrap()
        );
    }

    #[test]
    fn update_keeps_crlf_and_four_space_indent() {
        let existing = "models:\r\n    a:\r\n        cmd: x\r\n    b:\r\n        cmd: y\r\n";
        let mut d = Deployment::new("a", "/m.gguf", words("-c 4096"));
        d.ttl = Some(5);
        let u = LlamaSwap.update(existing, &d).unwrap();
        assert_eq!(
            u.text,
            "models:\r\n    a:\r\n      cmd: |-\r\n        llama-server --port ${PORT}\r\n        -m /m.gguf\r\n        -c 4096\r\n      ttl: 5\r\n    b:\r\n        cmd: y\r\n"
        );
    }

    #[test]
    fn update_handles_eof_document_markers_and_quoted_keys() {
        let d = Deployment::new("m:Q4", "/m.gguf", words("-c 4096"));
        let body = indent(&entry_text(&d.name, &entry(&d).unwrap()).unwrap(), 2, "\n");
        // Entry last, no final newline: the file still ends without one.
        let e = "---\nmodels:\n  other: {cmd: x}\n  'm:Q4':\n    cmd: y";
        let u = LlamaSwap.update(e, &d).unwrap();
        assert_eq!(
            u.text,
            format!(
                "---\nmodels:\n  other: {{cmd: x}}\n{}",
                body.trim_end_matches('\n')
            )
        );
        // Adding after a last entry that has no final newline.
        let e = "models:\n  \"other\":\n    cmd: x";
        let u = LlamaSwap.update(e, &d).unwrap();
        assert_eq!(u.text, format!("models:\n  \"other\":\n    cmd: x\n{body}"));
        // models: with no entries yet (null).
        let e = "models:\n# nothing yet\nlogLevel: info\n";
        let u = LlamaSwap.update(e, &d).unwrap();
        assert_eq!(
            u.text,
            format!("models:\n{body}# nothing yet\nlogLevel: info\n")
        );
    }

    const NAMES: &[&str] = &[
        "a",
        "qwen3:30b",
        "org/m:Q4_K_M",
        "x y",
        "true",
        "1",
        "#c",
        "a: b",
        "-x",
        " lead",
        "it's",
        "q\"d",
        "null",
        "~",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any entry of a commented config (names that need YAML quoting
        /// included) is replaced without touching a byte outside its span,
        /// and the result re-validates; a new name is inserted after the
        /// last entry.
        #[test]
        fn update_keeps_every_byte_outside_the_entry(
            picks in proptest::sample::subsequence((0..NAMES.len()).collect::<Vec<_>>(), 1..5),
            target in 0usize..NAMES.len(),
            comments in proptest::collection::vec(proptest::bool::ANY, 5),
        ) {
            let entry_of = |name: &str, c: &str| {
                let d = Deployment::new(name, format!("/m/{c}.gguf"), words(&format!("-c {}", 1024 * (c.len() + 1))));
                indent(&entry_text(name, &entry(&d).unwrap()).unwrap(), 2, "\n")
            };
            let mut pieces: Vec<(String, String)> = Vec::new(); // (leading comment, entry text)
            for (i, &p) in picks.iter().enumerate() {
                let lead = if comments[i] { format!("  # about {i}\n\n") } else { String::new() };
                pieces.push((lead, entry_of(NAMES[p], "old")));
            }
            let head = "# top\nlogLevel: info\nmodels:\n";
            let tail = "  # end of models\n\nhooks:\n  on_startup:\n    preload: []\n";
            let file: String = head.to_string()
                + &pieces.iter().map(|(l, e)| format!("{l}{e}")).collect::<String>()
                + tail;
            let name = NAMES[target];
            let d = Deployment::new(name, "/m/new.gguf", words("-c 4096 -ngl 99"));
            let u = LlamaSwap.update(&file, &d).unwrap();
            let fresh = indent(&entry_text(name, &entry(&d).unwrap()).unwrap(), 2, "\n");
            let expected = match picks.iter().position(|&p| p == target) {
                Some(i) => {
                    let before: String = pieces[..i].iter().map(|(l, e)| format!("{l}{e}")).collect();
                    let after: String = pieces[i + 1..].iter().map(|(l, e)| format!("{l}{e}")).collect();
                    format!("{head}{before}{}{fresh}{after}{tail}", pieces[i].0)
                }
                None => {
                    let all: String = pieces.iter().map(|(l, e)| format!("{l}{e}")).collect();
                    format!("{head}{all}{fresh}{tail}")
                }
            };
            proptest::prop_assert_eq!(u.text, expected);
        }
    }

    #[test]
    fn update_refuses_unparsable_and_flow_style_files() {
        let d = deployment();
        for bad in [
            "models: [\n",
            "models: {a: {cmd: x}}\n",
            "- a\n- b\n",
            "models: 3\n",
        ] {
            let e = LlamaSwap.update(bad, &d).unwrap_err();
            assert!(
                matches!(
                    e,
                    EmitError::UnparsableYaml { .. } | EmitError::Unparsable { .. }
                ),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn refuses_macros_and_port_in_argv() {
        let mut d = Deployment::new("m", "/m.gguf", words("--alias ${MODEL_ID}"));
        assert!(matches!(
            LlamaSwap.render(&d),
            Err(EmitError::Unrepresentable { .. })
        ));
        d.argv = words("--port 9000");
        assert!(matches!(
            LlamaSwap.render(&d),
            Err(EmitError::LauncherOwned { .. })
        ));
    }
}
