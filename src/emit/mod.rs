//! Rendering a plan as the config formats people deploy llama.cpp with,
//! and updating one entry of an existing config file in place.
//!
//! The input is a [`Deployment`]: the model, the llama-server flags the
//! planner decided (`argv`, everything after `-m PATH`), and optionally a
//! [`PlanSummary`] of what the planner predicted. One [`Emitter`] per format
//! turns it into text:
//!
//! | format | module | what it writes |
//! |---|---|---|
//! | [`Format::Shell`] | [`shell`] | one POSIX-quoted `llama-server -m … <flags>` line |
//! | [`Format::ModelsConf`] | [`models_conf`] | a `models.conf` section (`CTX_SIZE=`, `N_GPU_LAYERS=`, `FIT=`, `EXTRA_ARGS=`) |
//! | [`Format::LlamaSwap`] | [`llama_swap`] | a llama-swap `config.yaml` model entry (and co-residency groups) |
//! | [`Format::Preset`] | [`preset`] | a llama-server `--models-preset` INI section |
//!
//! Updating (`--update FILE --name NAME`) replaces or adds exactly one entry
//! and leaves every other byte of the file as it was: comments, blank lines,
//! order, other sections, line endings. The line-based formats go through a
//! small section editor ([`sections`]); YAML cannot be round-tripped through
//! serde without losing comments, so the llama-swap updater splices the text
//! span of `models.<name>` and re-validates the result by parsing it
//! ([`llama_swap`]). A file that cannot be parsed is an error and is never
//! written. [`write`] holds the atomic write (temp file, fsync, rename,
//! permissions kept) and the unified diff for `--dry-run`.
//!
//! This module does not plan: it never decides a flag. A plan whose flags
//! cannot be represented in a format (a value with `;` in a preset, a space
//! inside a `models.conf` `EXTRA_ARGS` word, an unknown flag where the format
//! needs its long name) is refused with [`EmitError`], not rewritten.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::Bytes;

pub mod flags;
pub mod llama_swap;
pub mod models_conf;
pub mod preset;
pub mod sections;
pub mod shell;
mod summary;
pub mod write;

/// The server binary written when [`Deployment::server_bin`] is left empty.
pub const DEFAULT_SERVER_BIN: &str = "llama-server";

/// What the emitters render: one model served by one llama-server.
///
/// The planner fills this in; `ggplan emit` builds it from its command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Entry name: the `models.conf` / preset section, the llama-swap model id.
    pub name: String,
    /// The GGUF file (first shard of a split model), as the server should see it.
    pub model_path: String,
    /// The server executable (`llama-server` if empty).
    #[serde(default)]
    pub server_bin: String,
    /// llama-server flags after `-m PATH`, already decided by the planner,
    /// in the order they should be written (`-c 32768 -np 1 -fit off -ngl 99 …`).
    /// `-m/--model` must not appear here; `--port/--host` only where the
    /// launcher does not own them (shell, models.conf).
    pub argv: Vec<String>,
    /// Restrict the server to these CUDA devices (`CUDA_VISIBLE_DEVICES`).
    /// Device names in `argv` (`-dev CUDA0`, `-ot …=CUDA1`) must already be
    /// numbered as the restricted process sees them.
    #[serde(default)]
    pub visible_devices: Option<Vec<u32>>,
    /// llama-swap: unload after this many idle seconds (absent: `globalTTL`).
    #[serde(default)]
    pub ttl: Option<u64>,
    /// llama-swap: other names this model answers to.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// What the planner predicted, written as comments / metadata.
    #[serde(default)]
    pub summary: Option<PlanSummary>,
}

impl Deployment {
    /// A deployment with no device restriction, ttl, aliases or summary.
    pub fn new(name: impl Into<String>, model_path: impl Into<String>, argv: Vec<String>) -> Self {
        Deployment {
            name: name.into(),
            model_path: model_path.into(),
            server_bin: String::new(),
            argv,
            visible_devices: None,
            ttl: None,
            aliases: Vec::new(),
            summary: None,
        }
    }

    /// The server binary to write.
    pub fn server(&self) -> &str {
        if self.server_bin.is_empty() {
            DEFAULT_SERVER_BIN
        } else {
            &self.server_bin
        }
    }

    /// `CUDA_VISIBLE_DEVICES=0,1` when devices are restricted.
    pub fn cuda_visible_devices(&self) -> Option<String> {
        self.visible_devices.as_ref().map(|ids| {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            format!("CUDA_VISIBLE_DEVICES={}", ids.join(","))
        })
    }

    /// Checks every format shares: a name and a model path without control
    /// characters (they end up on one line of every format).
    fn check_common(&self, format: Format) -> Result<(), EmitError> {
        if self.name.is_empty() {
            return Err(EmitError::BadName {
                format,
                name: self.name.clone(),
                reason: "empty",
            });
        }
        if self.name.chars().any(char::is_control) {
            return Err(EmitError::BadName {
                format,
                name: self.name.clone(),
                reason: "contains a control character",
            });
        }
        for (what, value) in [
            ("model path", &self.model_path),
            ("server binary", &self.server_bin),
        ] {
            if value.chars().any(char::is_control) {
                return Err(EmitError::Unrepresentable {
                    format,
                    what: what.to_string(),
                    value: value.clone(),
                    reason: "contains a control character",
                });
            }
        }
        if self.model_path.is_empty() {
            return Err(EmitError::Unrepresentable {
                format,
                what: "model path".to_string(),
                value: String::new(),
                reason: "empty",
            });
        }
        Ok(())
    }
}

/// What the planner predicted for a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The ggplan version that made the plan (`env!("CARGO_PKG_VERSION")`).
    pub ggplan_version: String,
    /// The hardware file (or preset name) the plan was made for.
    #[serde(default)]
    pub hardware_file: Option<String>,
    /// Predicted memory per device, in the order llama.cpp lists them
    /// (GPUs first, then the host).
    pub devices: Vec<DevicePrediction>,
    /// Predicted throughput.
    #[serde(default)]
    pub tokens_per_s: Option<Speed>,
}

/// Predicted memory on one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePrediction {
    /// llama.cpp's device name (`CUDA0`, `Vulkan1`, `CPU`).
    pub device: String,
    /// Everything the plan puts there: weights, KV, compute, reserve.
    pub predicted: Bytes,
    /// What the device has to offer, if known.
    #[serde(default)]
    pub capacity: Option<Bytes>,
}

/// Predicted tokens per second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    /// Prompt processing (prefill).
    pub prompt: f64,
    /// Token generation (decode).
    pub generation: f64,
}

/// The formats ggplan writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Shell,
    ModelsConf,
    LlamaSwap,
    Preset,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Shell,
        Format::ModelsConf,
        Format::LlamaSwap,
        Format::Preset,
    ];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Shell => "shell",
            Format::ModelsConf => "models-conf",
            Format::LlamaSwap => "llama-swap",
            Format::Preset => "preset",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an update did to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The entry was not there and was appended.
    Added,
    /// The entry was there and was replaced.
    Replaced,
    /// The entry was there and already said exactly this.
    Unchanged,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Added => "added",
            Action::Replaced => "replaced",
            Action::Unchanged => "unchanged",
        })
    }
}

/// The new file text and what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated {
    pub text: String,
    pub action: Action,
}

/// One output format.
pub trait Emitter {
    fn format(&self) -> Format;

    /// The entry for `d` as a standalone document (what `ggplan emit` prints).
    fn render(&self, d: &Deployment) -> Result<String, EmitError>;

    /// `existing` with the entry named `d.name` replaced, or appended if it
    /// is not there; every byte outside that entry is kept. `existing` must
    /// parse in this format; if it does not, nothing is returned.
    fn update(&self, existing: &str, d: &Deployment) -> Result<Updated, EmitError>;
}

/// The emitter for a format.
pub fn emitter(format: Format) -> &'static dyn Emitter {
    match format {
        Format::Shell => &shell::Shell,
        Format::ModelsConf => &models_conf::EMITTER,
        Format::LlamaSwap => &llama_swap::LlamaSwap,
        Format::Preset => &preset::EMITTER,
    }
}

/// Render `d` in `format`.
pub fn render(format: Format, d: &Deployment) -> Result<String, EmitError> {
    emitter(format).render(d)
}

/// Update the entry `d.name` of `existing` in `format`.
pub fn update(format: Format, existing: &str, d: &Deployment) -> Result<Updated, EmitError> {
    emitter(format).update(existing, d)
}

/// Why a deployment could not be written, or an existing file not updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    #[error("flag {flag} is given twice (llama-server would keep only the last one)")]
    DuplicateFlag { flag: String },
    #[error("flag {flag} needs a value")]
    MissingValue { flag: String },
    #[error("flag {flag} must not be in the flags: the model path is given separately")]
    ReservedFlag { flag: String },
    #[error("{format}: flag {flag} is set by the launcher, not by the plan")]
    LauncherOwned { format: Format, flag: String },
    #[error("{format}: flag {flag:?} is not one ggplan knows the long name of (hint: known flags are {known})")]
    UnknownFlag {
        format: Format,
        flag: String,
        known: String,
    },
    #[error("{format}: {what} {value:?} cannot be represented: {reason}")]
    Unrepresentable {
        format: Format,
        what: String,
        value: String,
        reason: &'static str,
    },
    #[error("{format}: entry name {name:?} cannot be used: {reason}")]
    BadName {
        format: Format,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{format}: the existing file does not parse (line {line}: {reason}); it was left untouched"
    )]
    Unparsable {
        format: Format,
        line: usize,
        reason: String,
    },
    #[error("{format}: the existing file does not parse as YAML; it was left untouched")]
    UnparsableYaml {
        format: Format,
        #[source]
        source: yaml_serde::Error,
    },
    #[error(
        "{format}: entry {name:?} appears {count} times in the existing file; refusing to pick one"
    )]
    AmbiguousEntry {
        format: Format,
        name: String,
        count: usize,
    },
    #[error("the {format} format is a command line, not a file that can be updated")]
    NotUpdatable { format: Format },
    #[error("{format}: the updated file failed re-validation ({reason}); nothing was written")]
    Revalidation { format: Format, reason: String },
    #[error("cannot serialize YAML")]
    Yaml(#[source] yaml_serde::Error),
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::units::MIB;

    pub(crate) fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    /// The domain brief's example profile, as the planner would hand it over.
    pub(crate) fn brief_deployment() -> Deployment {
        let mut d = Deployment::new(
            "qwen3-coder-q5",
            "/models/Qwen3-Coder-30B-A3B-Q5_K_M.gguf",
            words(
                "-c 262144 -ngl 99 -fit off --jinja -np 1 -b 2048 -ub 2048 --no-context-shift \
                 --temp 1.0 --top-p 0.95 --top-k 40 --min-p 0.01 \
                 -ot blk\\.([0-9]|1[0-4])\\.=CUDA0,blk\\.(1[5-9]|2[0-1])\\.=CUDA1,exps=CPU",
            ),
        );
        d.summary = Some(PlanSummary {
            ggplan_version: "0.1.0".into(),
            hardware_file: Some("hardware/workstation-4090-5070ti.toml".into()),
            devices: vec![
                DevicePrediction {
                    device: "CUDA0".into(),
                    predicted: Bytes(22_800 * MIB),
                    capacity: Some(Bytes(24_576 * MIB)),
                },
                DevicePrediction {
                    device: "CUDA1".into(),
                    predicted: Bytes(11_900 * MIB),
                    capacity: Some(Bytes(12_884 * MIB)),
                },
                DevicePrediction {
                    device: "CPU".into(),
                    predicted: Bytes(9_316 * MIB),
                    capacity: None,
                },
            ],
            tokens_per_s: Some(Speed {
                prompt: 812.0,
                generation: 35.25,
            }),
        });
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_through_serde() {
        for f in Format::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), f);
        }
    }

    #[test]
    fn common_checks_refuse_control_characters() {
        let mut d = Deployment::new("a\nb", "/m.gguf", vec![]);
        assert!(matches!(
            d.check_common(Format::Shell),
            Err(EmitError::BadName { .. })
        ));
        d.name = "ok".into();
        d.model_path = "/m\n.gguf".into();
        assert!(matches!(
            d.check_common(Format::Shell),
            Err(EmitError::Unrepresentable { .. })
        ));
        d.model_path = "/m.gguf".into();
        assert!(d.check_common(Format::Shell).is_ok());
        assert_eq!(d.server(), "llama-server");
        d.visible_devices = Some(vec![0, 2]);
        assert_eq!(
            d.cuda_visible_devices().unwrap(),
            "CUDA_VISIBLE_DEVICES=0,2"
        );
    }
}
