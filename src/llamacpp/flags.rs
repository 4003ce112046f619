//! llama-server / llama-cli argv → a typed [`Flags`] value, with llama.cpp's
//! spellings and defaults (common/arg.cpp `common_params_parser_init`,
//! defaults in common/common.h). Environment variables are not read: a
//! simulation depends only on what it is handed.
//!
//! Flags that cannot change memory are accepted and listed in
//! [`Flags::ignored`]; an unknown flag is an error naming it.

use crate::gguf::GgmlType;

use super::error::FlagError;
use super::options;
use super::overrides::{OverridePattern, LLM_FFN_EXPS_REGEX};

/// `-fa on|off|auto` (common/arg.cpp `--flash-attn`; default auto).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlashAttn {
    On,
    Off,
    #[default]
    Auto,
}

/// `-sm none|layer|row|tensor` (default layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SplitMode {
    None,
    #[default]
    Layer,
    Row,
    Tensor,
}

/// `-ngl N|auto|all` (common: auto = -1 is the default, all = -2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// Not given or `auto`: every layer (unless `--fit` rewrites it).
    #[default]
    Auto,
    All,
    N(u32),
}

/// `--load-mode` (and the deprecated `--mmap/--no-mmap/--mlock/-dio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// mmap unless a device cannot (CUDA iGPU …): mmap for the devices modelled here.
    #[default]
    Auto,
    None,
    Mmap,
    Mlock,
    MmapMlock,
    Dio,
}

impl LoadMode {
    /// Whether host weights are memory-mapped from the file
    /// (llama_model_base::load_tensors, `use_mmap`).
    pub fn uses_mmap(self) -> bool {
        matches!(self, LoadMode::Auto | LoadMode::Mmap | LoadMode::MmapMlock)
    }
}

/// Output semantics of the tool that will run the flags (§4.3): the server
/// (and the new llama-cli) reserve about one output per slot, the generic
/// tools (llama-completion, llama-bench, llama-fit-params) the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tool {
    #[default]
    Server,
    Completion,
}

/// One tensor-buffer override, in CLI order (`-ot`, `--cpu-moe`, `--n-cpu-moe`
/// interleaved as given).
#[derive(Clone, Debug)]
pub struct TensorOverride {
    pub pattern: OverridePattern,
    /// A device name (`CUDA0`, `RPC1`), a buffer-type name as llama.cpp
    /// prints it (`RPC0[127.0.0.1:50053]`) or `CPU`.
    pub target: String,
}

/// A `--override-kv KEY=TYPE:VALUE` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct KvOverride {
    pub key: String,
    pub value: KvValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KvValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// A draft model for speculative decoding (`-md`).
#[derive(Clone, Debug, Default)]
pub struct DraftFlags {
    pub model: String,
    pub gpu_layers: GpuLayers,
    /// `-cd` (0 / absent = the main context's size).
    pub ctx: Option<u64>,
    pub devices: Option<Vec<String>>,
    pub cache_type_k: Option<GgmlType>,
    pub cache_type_v: Option<GgmlType>,
    pub overrides: Vec<TensorOverride>,
}

/// Every memory-relevant llama.cpp flag, typed. `Option` means "not given"
/// where llama.cpp itself distinguishes that (`--fit` only touches unset
/// parameters; the server's `-np` default).
#[derive(Clone, Debug)]
pub struct Flags {
    /// `-c` (0 = the model's training context).
    pub ctx: Option<u64>,
    /// `-b` (default 2048).
    pub batch: u64,
    /// `-ub` (default 512).
    pub ubatch: u64,
    /// `-np` (absent or -1 = auto).
    pub n_parallel: Option<u32>,
    /// `-kvu` / `--no-kv-unified`.
    pub kv_unified: Option<bool>,
    pub flash_attn: FlashAttn,
    pub cache_type_k: GgmlType,
    pub cache_type_v: GgmlType,
    pub swa_full: bool,
    /// `-nkvo`: KV in host memory.
    pub no_kv_offload: bool,
    pub gpu_layers: GpuLayers,
    /// Whether `-ngl` was given (for `--fit`).
    pub gpu_layers_set: bool,
    pub tensor_split: Vec<f64>,
    pub split_mode: SplitMode,
    pub main_gpu: i32,
    /// `-dev a,b` (`none` → empty list).
    pub devices: Option<Vec<String>>,
    pub overrides: Vec<TensorOverride>,
    pub load_mode: LoadMode,
    /// `--repack` (default) / `-nr`.
    pub repack: bool,
    pub no_host: bool,
    pub op_offload: bool,
    pub fit: bool,
    /// `-fitt MiB0,MiB1,…` in bytes (empty: 1 GiB each; one value: every device).
    pub fit_target: Vec<u64>,
    /// `-fitc N` (default 4096; `-c 0` sets u32::MAX: never reduce the context).
    pub fit_ctx: u64,
    pub draft: Option<DraftFlags>,
    /// `--spec-draft-n-max` (b11434; `--draft-max` before): tokens drafted
    /// per step (`common_params_speculative_draft::n_max`, default 3).
    pub draft_max: u32,
    /// `draft_max` came from the pre-b11434 `--draft-max` spelling, whose
    /// builds drafted with `-md` alone (no `--spec-type`).
    pub draft_max_legacy: bool,
    /// `--spec-type a,b` (default `none`: `-md` alone loads the draft but
    /// does not draft with it).
    pub spec_types: Vec<String>,
    pub kv_overrides: Vec<KvOverride>,
    pub tool: Tool,
    /// Flags accepted but with no memory effect (verbatim, without values).
    pub ignored: Vec<String>,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            ctx: None,
            batch: 2048,
            ubatch: 512,
            n_parallel: None,
            kv_unified: None,
            flash_attn: FlashAttn::Auto,
            cache_type_k: GgmlType::F16,
            cache_type_v: GgmlType::F16,
            swa_full: false,
            no_kv_offload: false,
            gpu_layers: GpuLayers::Auto,
            gpu_layers_set: false,
            tensor_split: Vec::new(),
            split_mode: SplitMode::Layer,
            main_gpu: 0,
            devices: None,
            overrides: Vec::new(),
            load_mode: LoadMode::Auto,
            repack: true,
            no_host: false,
            op_offload: true,
            fit: true,
            fit_target: Vec::new(),
            fit_ctx: super::fit::FIT_CTX_DEFAULT,
            draft: None,
            draft_max: 3,
            draft_max_legacy: false,
            spec_types: Vec::new(),
            kv_overrides: Vec::new(),
            tool: Tool::Server,
            ignored: Vec::new(),
        }
    }
}

/// Flags that take a value and change nothing memory-related.
const IGNORED_WITH_VALUE: &[&str] = &[
    "-m",
    "--model",
    "--rpc",
    "-t",
    "--threads",
    "-tb",
    "--threads-batch",
    "-C",
    "--cpu-mask",
    "-Cr",
    "--cpu-range",
    "--prio",
    "--poll",
    "-Cb",
    "--cpu-mask-batch",
    "-Crb",
    "--cpu-range-batch",
    "--prio-batch",
    "--poll-batch",
    "--host",
    "--port",
    "-a",
    "--alias",
    "--api-key",
    "--api-key-file",
    "--ssl-key-file",
    "--ssl-cert-file",
    "-to",
    "--timeout",
    "--threads-http",
    "--cache-reuse",
    "-cram",
    "--cache-ram",
    "--ctx-checkpoints",
    "-n",
    "--n-predict",
    "--predict",
    "-s",
    "--seed",
    "--temp",
    "--top-k",
    "--top-p",
    "--min-p",
    "--typical",
    "--repeat-penalty",
    "--repeat-last-n",
    "--presence-penalty",
    "--frequency-penalty",
    "--samplers",
    "--sampling-seq",
    "--mirostat",
    "--mirostat-lr",
    "--mirostat-ent",
    "--dry-multiplier",
    "--dry-base",
    "--dry-allowed-length",
    "--dry-penalty-last-n",
    "--xtc-probability",
    "--xtc-threshold",
    "--top-nsigma",
    "--dynatemp-range",
    "--dynatemp-exp",
    "-l",
    "--logit-bias",
    "--grammar",
    "--grammar-file",
    "-j",
    "--json-schema",
    "--chat-template",
    "--chat-template-file",
    "--chat-template-kwargs",
    "--reasoning-format",
    "--reasoning-budget",
    "-lv",
    "--verbosity",
    "--log-verbosity",
    "--log-file",
    "--numa",
    "--rope-scaling",
    "--rope-scale",
    "--rope-freq-base",
    "--rope-freq-scale",
    "--yarn-orig-ctx",
    "--yarn-ext-factor",
    "--yarn-attn-factor",
    "--yarn-beta-slow",
    "--yarn-beta-fast",
    "-fitp",
    "--fit-print",
    "--draft-min",
    "--draft-n-min",
    "--draft-p-min",
    "--slot-save-path",
    "--media-path",
    "--path",
    "--api-prefix",
    "-sps",
    "--slot-prompt-similarity",
    "--lora",
    "--lora-scaled",
    "--control-vector",
    "--mmproj",
    "-mm",
    "--mmproj-url",
    "-hf",
    "-hfr",
    "--hf-repo",
    "-hff",
    "--hf-file",
    "-hft",
    "--hf-token",
    "-mu",
    "--model-url",
    "--models-dir",
    "--models-preset",
    "--models-max",
    "--keep",
    "--n-keep",
    "-p",
    "--prompt",
    "-f",
    "--file",
    "-sys",
    "--system-prompt",
    "--pooling",
    "--embd-normalize",
    "--defrag-thold",
    "-dt",
    "--group-attn-n",
    "--group-attn-w",
    "-gan",
    "-gaw",
    "--image-min-tokens",
    "--image-max-tokens",
    "--webui-config",
    "--webui-config-file",
    "-tbd",
    "--threads-draft",
    "--threads-batch-draft",
    "--draft-p-split",
    "-r",
    "--reverse-prompt",
];

/// Boolean flags that change nothing memory-related.
const IGNORED_SWITCHES: &[&str] = &[
    "--jinja",
    "--no-jinja",
    "-v",
    "--verbose",
    "--log-verbose",
    "--log-disable",
    "--log-colors",
    "--log-prefix",
    "--log-timestamps",
    "--metrics",
    "--slots",
    "--no-slots",
    "--props",
    "--no-webui",
    "--webui",
    "--embedding",
    "--embeddings",
    "--reranking",
    "--rerank",
    "--cont-batching",
    "-cb",
    "--no-cont-batching",
    "-nocb",
    "--no-warmup",
    "--warmup",
    "--check-tensors",
    "--no-perf",
    "--perf",
    "--escape",
    "--no-escape",
    "-e",
    "--special",
    "-sp",
    "--no-context-shift",
    "--context-shift",
    "--no-prefill-assistant",
    "--offline",
    "--no-mmproj",
    "--no-mmproj-offload",
    "--mmproj-offload",
    "-fitp",
    "--swa-checkpoints",
    "--kv-unified-auto",
    "-cnv",
    "--conversation",
    "-no-cnv",
    "--no-conversation",
    "-i",
    "--interactive",
    "-st",
    "--single-turn",
    "--no-display-prompt",
    "--verbose-prompt",
    "--ignore-eos",
    "--lora-init-without-apply",
    "--no-cache-prompt",
    "--cache-prompt",
];

/// `--spec-type` values (common/speculative.cpp `common_speculative_type_from_name_map`).
const SPEC_TYPES: &[&str] = &[
    "none",
    "draft-simple",
    "draft-eagle3",
    "draft-mtp",
    "draft-dflash",
    "draft-dspark",
    "ngram-simple",
    "ngram-map-k",
    "ngram-map-k4v",
    "ngram-mod",
    "ngram-cache",
];

fn parse_u64(flag: &str, v: &str) -> Result<u64, FlagError> {
    v.trim().parse::<u64>().map_err(|_| FlagError::BadValue {
        flag: flag.to_string(),
        value: v.to_string(),
        expected: "a non-negative integer",
    })
}

fn parse_i64(flag: &str, v: &str) -> Result<i64, FlagError> {
    v.trim().parse::<i64>().map_err(|_| FlagError::BadValue {
        flag: flag.to_string(),
        value: v.to_string(),
        expected: "an integer",
    })
}

/// llama.cpp's `kv_cache_types` (common/arg.cpp): f32 f16 bf16 q8_0 q4_0 q4_1 iq4_nl q5_0 q5_1.
fn parse_cache_type(flag: &str, v: &str) -> Result<GgmlType, FlagError> {
    let t = match v.to_ascii_lowercase().as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "iq4_nl" => GgmlType::IQ4_NL,
        "q5_0" => GgmlType::Q5_0,
        "q5_1" => GgmlType::Q5_1,
        _ => {
            return Err(FlagError::BadValue {
                flag: flag.to_string(),
                value: v.to_string(),
                expected: "one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1",
            })
        }
    };
    Ok(t)
}

fn parse_on_off(flag: &str, v: &str) -> Result<bool, FlagError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "enabled" => Ok(true),
        "off" | "0" | "false" | "disabled" => Ok(false),
        _ => Err(FlagError::BadValue {
            flag: flag.to_string(),
            value: v.to_string(),
            expected: "on or off",
        }),
    }
}

fn parse_ngl(flag: &str, v: &str) -> Result<GpuLayers, FlagError> {
    match v {
        "auto" => Ok(GpuLayers::Auto),
        "all" => Ok(GpuLayers::All),
        _ => {
            let n = parse_i64(flag, v)?;
            match n {
                -1 => Ok(GpuLayers::Auto),
                -2 => Ok(GpuLayers::All),
                n if n >= 0 => Ok(GpuLayers::N(u32::try_from(n).unwrap_or(u32::MAX))),
                _ => Err(FlagError::BadValue {
                    flag: flag.to_string(),
                    value: v.to_string(),
                    expected: "a layer count, auto or all",
                }),
            }
        }
    }
}

/// `-ts 3,1` or `3/1` (common/arg.cpp: split on `,` or `/`, at most 16 values).
fn parse_tensor_split(flag: &str, v: &str) -> Result<Vec<f64>, FlagError> {
    let parts: Vec<&str> = v.split([',', '/']).collect();
    if parts.len() >= 16 {
        return Err(FlagError::BadValue {
            flag: flag.to_string(),
            value: v.to_string(),
            expected: "fewer than 16 proportions",
        });
    }
    parts
        .iter()
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| FlagError::BadValue {
                    flag: flag.to_string(),
                    value: v.to_string(),
                    expected: "non-negative numbers separated by , or /",
                })
        })
        .collect()
}

/// `-ot "re=BUFT,re=BUFT"` (common/arg.cpp `parse_tensor_buffer_overrides`:
/// split on `,`, then on the first `=`).
fn parse_overrides(flag: &str, v: &str) -> Result<Vec<TensorOverride>, FlagError> {
    let mut out = Vec::new();
    for item in v.split(',') {
        let Some((pat, target)) = item.split_once('=') else {
            return Err(FlagError::BadValue {
                flag: flag.to_string(),
                value: item.to_string(),
                expected: "<tensor name pattern>=<buffer type>",
            });
        };
        out.push(TensorOverride {
            pattern: OverridePattern::new(pat)?,
            target: target.to_string(),
        });
    }
    Ok(out)
}

fn cpu_moe_all() -> Result<TensorOverride, FlagError> {
    Ok(TensorOverride {
        pattern: OverridePattern::new(LLM_FFN_EXPS_REGEX)?,
        target: "CPU".to_string(),
    })
}

/// `--n-cpu-moe N`: `blk\.<i>\.ffn_(up|down|gate|gate_up)_(ch|)exps` for i < N (common/arg.cpp).
fn cpu_moe_first(n: u64) -> Result<Vec<TensorOverride>, FlagError> {
    (0..n)
        .map(|i| {
            Ok(TensorOverride {
                pattern: OverridePattern::new(&format!("blk\\.{i}{LLM_FFN_EXPS_REGEX}"))?,
                target: "CPU".to_string(),
            })
        })
        .collect()
}

/// `--override-kv KEY=TYPE:VALUE` (common/common.cpp `string_parse_kv_override`).
fn parse_kv_override(flag: &str, v: &str) -> Result<KvOverride, FlagError> {
    let bad = |expected| FlagError::BadValue {
        flag: flag.to_string(),
        value: v.to_string(),
        expected,
    };
    let (key, rest) = v.split_once('=').ok_or_else(|| bad("KEY=TYPE:VALUE"))?;
    let (ty, val) = rest.split_once(':').ok_or_else(|| bad("KEY=TYPE:VALUE"))?;
    let value = match ty {
        "int" => KvValue::Int(val.parse().map_err(|_| bad("an integer after int:"))?),
        "float" => KvValue::Float(val.parse().map_err(|_| bad("a number after float:"))?),
        "bool" => KvValue::Bool(match val {
            "true" => true,
            "false" => false,
            _ => return Err(bad("true or false after bool:")),
        }),
        "str" => KvValue::Str(val.to_string()),
        _ => return Err(bad("a type of int, float, bool or str")),
    };
    Ok(KvOverride {
        key: key.to_string(),
        value,
    })
}

fn parse_load_mode(flag: &str, v: &str) -> Result<LoadMode, FlagError> {
    Ok(match v {
        "auto" => LoadMode::Auto,
        "none" => LoadMode::None,
        "mmap" => LoadMode::Mmap,
        "mlock" => LoadMode::Mlock,
        "mmap+mlock" => LoadMode::MmapMlock,
        "dio" => LoadMode::Dio,
        _ => {
            return Err(FlagError::BadValue {
                flag: flag.to_string(),
                value: v.to_string(),
                expected: "auto, none, mmap, mlock, mmap+mlock or dio",
            })
        }
    })
}

fn parse_dev_list(v: &str) -> Vec<String> {
    if v == "none" {
        Vec::new()
    } else {
        v.split(',').map(|s| s.trim().to_string()).collect()
    }
}

impl Flags {
    /// Parse llama.cpp argv (without the program name). `--flag=value` and
    /// `--flag value` are both accepted.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Flags, FlagError> {
        let mut f = Flags::default();
        let mut i = 0;
        while i < args.len() {
            let raw = args[i].as_ref();
            i += 1;
            let (name, inline) = match raw.split_once('=') {
                Some((n, v)) if n.starts_with('-') && !n.is_empty() => (n, Some(v)),
                _ => (raw, None),
            };
            if !name.starts_with('-') {
                return Err(FlagError::Positional(raw.to_string()));
            }
            // Fetch this flag's value: inline `=v` or the next argument.
            let value = |i: &mut usize| -> Result<String, FlagError> {
                if let Some(v) = inline {
                    return Ok(v.to_string());
                }
                match args.get(*i) {
                    Some(v) => {
                        *i += 1;
                        Ok(v.as_ref().to_string())
                    }
                    None => Err(FlagError::MissingValue(name.to_string())),
                }
            };
            let Some(spec) = options::lookup(name) else {
                if IGNORED_WITH_VALUE.contains(&name) {
                    value(&mut i)?;
                    f.ignored.push(name.to_string());
                    continue;
                }
                if IGNORED_SWITCHES.contains(&name) {
                    f.ignored.push(name.to_string());
                    continue;
                }
                return Err(FlagError::Unknown(name.to_string()));
            };
            // Dispatch on the option's preset key (unique per spelling set
            // in the one table, `super::options::FLAGS`).
            match spec.preset_key {
                "ctx-size" => {
                    let c = parse_u64(name, &value(&mut i)?)?;
                    f.ctx = Some(c);
                    if c == 0 {
                        // common/arg.cpp: "disable context reduction in
                        // llama_params_fit if the user explicitly requests the full context size"
                        f.fit_ctx = u64::from(u32::MAX);
                    }
                }
                "batch-size" => f.batch = parse_u64(name, &value(&mut i)?)?,
                "ubatch-size" => f.ubatch = parse_u64(name, &value(&mut i)?)?,
                "parallel" => {
                    let n = parse_i64(name, &value(&mut i)?)?;
                    f.n_parallel = match n {
                        -1 => None,
                        1..=256 => Some(n as u32),
                        _ => {
                            return Err(FlagError::BadValue {
                                flag: name.to_string(),
                                value: n.to_string(),
                                expected: "1..=256 or -1 (auto)",
                            })
                        }
                    };
                }
                "kv-unified" => f.kv_unified = Some(true),
                "no-kv-unified" => f.kv_unified = Some(false),
                "flash-attn" => {
                    let v = value(&mut i)?;
                    f.flash_attn = match v.as_str() {
                        "auto" => FlashAttn::Auto,
                        _ => {
                            if parse_on_off(name, &v)? {
                                FlashAttn::On
                            } else {
                                FlashAttn::Off
                            }
                        }
                    };
                }
                "cache-type-k" => f.cache_type_k = parse_cache_type(name, &value(&mut i)?)?,
                "cache-type-v" => f.cache_type_v = parse_cache_type(name, &value(&mut i)?)?,
                "swa-full" => f.swa_full = true,
                "no-kv-offload" => f.no_kv_offload = true,
                "kv-offload" => f.no_kv_offload = false,
                "n-gpu-layers" => {
                    f.gpu_layers = parse_ngl(name, &value(&mut i)?)?;
                    f.gpu_layers_set = !matches!(f.gpu_layers, GpuLayers::Auto);
                }
                "tensor-split" => f.tensor_split = parse_tensor_split(name, &value(&mut i)?)?,
                "split-mode" => {
                    let v = value(&mut i)?;
                    f.split_mode = match v.as_str() {
                        "none" => SplitMode::None,
                        "layer" => SplitMode::Layer,
                        "row" => SplitMode::Row,
                        "tensor" => SplitMode::Tensor,
                        _ => {
                            return Err(FlagError::BadValue {
                                flag: name.to_string(),
                                value: v,
                                expected: "none, layer, row or tensor",
                            })
                        }
                    };
                }
                "main-gpu" => {
                    f.main_gpu = i32::try_from(parse_i64(name, &value(&mut i)?)?).unwrap_or(-1)
                }
                "device" => f.devices = Some(parse_dev_list(&value(&mut i)?)),
                "override-tensor" => {
                    let v = value(&mut i)?;
                    f.overrides.extend(parse_overrides(name, &v)?);
                }
                "cpu-moe" => f.overrides.push(cpu_moe_all()?),
                "n-cpu-moe" => {
                    let n = parse_u64(name, &value(&mut i)?)?;
                    f.overrides.extend(cpu_moe_first(n)?);
                }
                "mmap" => f.load_mode = LoadMode::Mmap,
                "no-mmap" => f.load_mode = LoadMode::None,
                "mlock" => {
                    f.load_mode = if f.load_mode.uses_mmap() {
                        LoadMode::MmapMlock
                    } else {
                        LoadMode::Mlock
                    }
                }
                "direct-io" => f.load_mode = LoadMode::Dio,
                "load-mode" => f.load_mode = parse_load_mode(name, &value(&mut i)?)?,
                "no-repack" => f.repack = false,
                "repack" => f.repack = true,
                "no-host" => f.no_host = true,
                "no-op-offload" => f.op_offload = false,
                "op-offload" => f.op_offload = true,
                "fit" => f.fit = parse_on_off(name, &value(&mut i)?)?,
                "fit-target" => {
                    // common/arg.cpp: split on `,` and `/`, MiB each.
                    let v = value(&mut i)?;
                    f.fit_target = v
                        .split([',', '/'])
                        .filter(|s| !s.is_empty())
                        .map(|s| parse_u64(name, s).map(|m| m.saturating_mul(1 << 20)))
                        .collect::<Result<_, _>>()?;
                }
                "fit-ctx" => f.fit_ctx = parse_u64(name, &value(&mut i)?)?,
                "override-kv" => {
                    let v = value(&mut i)?;
                    for item in v.split(',') {
                        f.kv_overrides.push(parse_kv_override(name, item)?);
                    }
                }
                "model-draft" => f.draft_mut().model = value(&mut i)?,
                "n-gpu-layers-draft" => {
                    f.draft_mut().gpu_layers = parse_ngl(name, &value(&mut i)?)?
                }
                "ctx-size-draft" => {
                    let n = parse_u64(name, &value(&mut i)?)?;
                    f.draft_mut().ctx = (n > 0).then_some(n);
                }
                "device-draft" => f.draft_mut().devices = Some(parse_dev_list(&value(&mut i)?)),
                "cache-type-k-draft" => {
                    f.draft_mut().cache_type_k = Some(parse_cache_type(name, &value(&mut i)?)?)
                }
                "cache-type-v-draft" => {
                    f.draft_mut().cache_type_v = Some(parse_cache_type(name, &value(&mut i)?)?)
                }
                "override-tensor-draft" => {
                    let v = value(&mut i)?;
                    let ov = parse_overrides(name, &v)?;
                    f.draft_mut().overrides.extend(ov);
                }
                "cpu-moe-draft" => {
                    let ov = cpu_moe_all()?;
                    f.draft_mut().overrides.push(ov);
                }
                "n-cpu-moe-draft" => {
                    let n = parse_u64(name, &value(&mut i)?)?;
                    let ov = cpu_moe_first(n)?;
                    f.draft_mut().overrides.extend(ov);
                }
                "spec-draft-n-max" => {
                    f.draft_max = u32::try_from(parse_u64(name, &value(&mut i)?)?).unwrap_or(0)
                }
                "draft-max" => {
                    f.draft_max = u32::try_from(parse_u64(name, &value(&mut i)?)?).unwrap_or(0);
                    f.draft_max_legacy = true;
                }
                "spec-type" => {
                    let v = value(&mut i)?;
                    for t in v.split(',') {
                        let t = t.trim();
                        if !SPEC_TYPES.contains(&t) {
                            return Err(FlagError::BadValue {
                                flag: name.to_string(),
                                value: t.to_string(),
                                expected: "a speculative type (none, draft-simple, draft-eagle3, draft-mtp, draft-dflash, draft-dspark, ngram-simple, ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache)",
                            });
                        }
                        f.spec_types.push(t.to_string());
                    }
                }
                // A table entry without a dispatch arm is a bug of ours
                // (the `every_table_entry_parses` test catches it).
                other => return Err(FlagError::Unknown(other.to_string())),
            }
        }
        Ok(f)
    }

    /// Tokens drafted per step, as `common_speculative_n_max` derives it
    /// from the speculative types (common/speculative.cpp): the draft's
    /// `n_max` for the model-based types, the n-gram types' own defaults
    /// (`size_m` 48, ngram-mod `n_max` 64, ngram-cache 8). The server sizes
    /// the main context's outputs with it (`server_output_limits`).
    pub fn n_draft(&self) -> u64 {
        if self.spec_types.is_empty() && self.draft_max_legacy && self.draft.is_some() {
            return u64::from(self.draft_max);
        }
        self.spec_types
            .iter()
            .map(|t| match t.as_str() {
                "draft-simple" | "draft-eagle3" | "draft-mtp" | "draft-dflash" | "draft-dspark" => {
                    u64::from(self.draft_max)
                }
                "ngram-simple" | "ngram-map-k" | "ngram-map-k4v" => 48,
                "ngram-mod" => 64,
                "ngram-cache" => 8,
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// `--fit-target` of model device `i` in bytes (common/arg.cpp: a single
    /// value is broadcast, missing ones keep the 1 GiB default).
    pub fn fit_margin(&self, i: usize) -> u64 {
        match self.fit_target.as_slice() {
            [one] => *one,
            v => v.get(i).copied().unwrap_or(super::fit::FIT_TARGET_DEFAULT),
        }
    }

    fn draft_mut(&mut self) -> &mut DraftFlags {
        self.draft.get_or_insert_with(DraftFlags::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Flags {
        Flags::parse(args).unwrap()
    }

    #[test]
    fn defaults_are_llama_cpp_defaults() {
        let f = p(&[]);
        assert_eq!(f.ctx, None);
        assert_eq!((f.batch, f.ubatch), (2048, 512));
        assert_eq!(f.n_parallel, None);
        assert_eq!(f.flash_attn, FlashAttn::Auto);
        assert_eq!(f.cache_type_k, GgmlType::F16);
        assert!(f.repack && f.op_offload && f.fit && !f.no_host);
        assert_eq!(f.gpu_layers, GpuLayers::Auto);
        assert!(f.load_mode.uses_mmap());
    }

    #[test]
    fn short_long_and_equals_forms() {
        let f = p(&[
            "-c",
            "4096",
            "--batch-size=1024",
            "-ub",
            "256",
            "--parallel",
            "2",
            "-kvu",
            "-fa",
            "on",
            "-ctk",
            "q8_0",
            "--cache-type-v=q4_0",
            "--swa-full",
            "-nkvo",
            "-ngl",
            "all",
            "-ts",
            "1,3",
            "-sm",
            "none",
            "-mg",
            "1",
            "-dev",
            "RPC0,RPC1",
            "--no-mmap",
            "-nr",
            "--no-host",
            "--no-op-offload",
            "-fit",
            "off",
        ]);
        assert_eq!(f.ctx, Some(4096));
        assert_eq!((f.batch, f.ubatch), (1024, 256));
        assert_eq!(f.n_parallel, Some(2));
        assert_eq!(f.kv_unified, Some(true));
        assert_eq!(f.flash_attn, FlashAttn::On);
        assert_eq!(f.cache_type_k, GgmlType::Q8_0);
        assert_eq!(f.cache_type_v, GgmlType::Q4_0);
        assert!(f.swa_full && f.no_kv_offload && f.no_host && !f.op_offload && !f.fit);
        assert!(!f.repack);
        assert_eq!(f.gpu_layers, GpuLayers::All);
        assert_eq!(f.tensor_split, vec![1.0, 3.0]);
        assert_eq!(f.split_mode, SplitMode::None);
        assert_eq!(f.main_gpu, 1);
        assert_eq!(
            f.devices,
            Some(vec!["RPC0".to_string(), "RPC1".to_string()])
        );
        assert_eq!(f.load_mode, LoadMode::None);
    }

    #[test]
    fn ngl_spellings() {
        assert_eq!(p(&["-ngl", "auto"]).gpu_layers, GpuLayers::Auto);
        assert_eq!(p(&["--n-gpu-layers", "-1"]).gpu_layers, GpuLayers::Auto);
        assert_eq!(p(&["--gpu-layers=-2"]).gpu_layers, GpuLayers::All);
        assert_eq!(p(&["-ngl", "20"]).gpu_layers, GpuLayers::N(20));
        assert!(Flags::parse(&["-ngl", "x"]).is_err());
    }

    #[test]
    fn overrides_keep_cli_order_with_cpu_moe_interleaved() {
        let f = p(&["-ot", "attn=RPC1,exps=CPU", "--n-cpu-moe", "2", "--cpu-moe"]);
        let pats: Vec<&str> = f.overrides.iter().map(|o| o.pattern.source()).collect();
        assert_eq!(
            pats,
            vec![
                "attn",
                "exps",
                "blk\\.0\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
                "blk\\.1\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
                "\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
            ]
        );
        assert_eq!(f.overrides[0].target, "RPC1");
        assert!(Flags::parse(&["-ot", "noequals"]).is_err());
    }

    #[test]
    fn unknown_flag_is_named() {
        let e = Flags::parse(&["-c", "10", "--frobnicate"]).unwrap_err();
        assert!(e.to_string().contains("--frobnicate"), "{e}");
        let e = Flags::parse(&["-c"]).unwrap_err();
        assert!(e.to_string().contains("-c"), "{e}");
    }

    #[test]
    fn ignored_flags_consume_their_values() {
        let f = p(&["--host", "0.0.0.0", "--jinja", "-t", "8", "-c", "512"]);
        assert_eq!(f.ctx, Some(512));
        assert_eq!(f.ignored, vec!["--host", "--jinja", "-t"]);
    }

    #[test]
    fn draft_and_kv_overrides() {
        let f = p(&[
            "-md",
            "d.gguf",
            "-ngld",
            "99",
            "-cd",
            "2048",
            "--override-kv",
            "qwen3moe.expert_used_count=int:4",
        ]);
        let d = f.draft.unwrap();
        assert_eq!(d.model, "d.gguf");
        assert_eq!(d.gpu_layers, GpuLayers::N(99));
        assert_eq!(d.ctx, Some(2048));
        assert_eq!(f.kv_overrides[0].key, "qwen3moe.expert_used_count");
        assert_eq!(f.kv_overrides[0].value, KvValue::Int(4));
        assert!(Flags::parse(&["--override-kv", "a=int:x"]).is_err());
    }

    /// Every spelling of the one option table (which `crate::emit` writes
    /// with) is parsed: the planner never emits a flag it cannot simulate.
    #[test]
    fn every_table_entry_parses() {
        use super::options::{Arity, FLAGS};
        let sample = |key: &str| match key {
            "tensor-split" => "1,1",
            "split-mode" => "layer",
            "device" | "device-draft" => "none",
            "override-tensor" | "override-tensor-draft" => "exps=CPU",
            "flash-attn" => "on",
            "cache-type-k" | "cache-type-v" | "cache-type-k-draft" | "cache-type-v-draft" => "q8_0",
            "fit" => "off",
            "fit-target" => "1024,512",
            "load-mode" => "none",
            "override-kv" => "llama.context_length=int:4096",
            "model-draft" => "d.gguf",
            "spec-type" => "draft-simple",
            _ => "2",
        };
        for spec in FLAGS {
            for name in spec.names {
                let mut argv = vec![*name];
                if spec.arity == Arity::Value {
                    argv.push(sample(spec.preset_key));
                }
                if let Err(e) = Flags::parse(&argv) {
                    panic!("{argv:?}: in the option table but not parsed: {e}");
                }
            }
        }
    }

    #[test]
    fn speculative_types_set_the_drafted_outputs() {
        // b11434: -md alone loads the draft but drafts nothing.
        assert_eq!(p(&["-md", "d.gguf"]).n_draft(), 0);
        let f = p(&["-md", "d.gguf", "--spec-type", "draft-simple"]);
        assert_eq!(f.n_draft(), 3);
        let f = p(&[
            "-md",
            "d.gguf",
            "--spec-type",
            "draft-simple",
            "--spec-draft-n-max",
            "8",
        ]);
        assert_eq!(f.n_draft(), 8);
        assert_eq!(p(&["--spec-type", "ngram-mod"]).n_draft(), 64);
        // Pre-b11434 spelling: -md drafted --draft-max tokens by itself.
        assert_eq!(p(&["-md", "d.gguf", "--draft-max", "16"]).n_draft(), 16);
        assert!(Flags::parse(&["--spec-type", "bogus"]).is_err());
    }

    #[test]
    fn np_auto_and_bad_cache_type() {
        assert_eq!(p(&["-np", "-1"]).n_parallel, None);
        assert!(Flags::parse(&["-np", "0"]).is_err());
        let e = Flags::parse(&["-ctk", "q3_k"]).unwrap_err();
        assert!(e.to_string().contains("-ctk"));
    }

    #[test]
    fn fit_target_and_min_context_follow_common_arg() {
        let gib = 1u64 << 30;
        let f = p(&[]);
        assert_eq!((f.fit_margin(0), f.fit_margin(3)), (gib, gib));
        assert_eq!(f.fit_ctx, 4096);
        // One value is broadcast; a list sets devices in order, the rest keep 1 GiB.
        assert_eq!(p(&["-fitt", "512"]).fit_margin(5), 512 << 20);
        let f = p(&["--fit-target", "0,2048/256"]);
        assert_eq!(
            (0..4).map(|i| f.fit_margin(i)).collect::<Vec<_>>(),
            [0, 2048 << 20, 256 << 20, gib]
        );
        assert_eq!(p(&["-fitc", "8192"]).fit_ctx, 8192);
        // -c 0 asks for the full context: fit never reduces it.
        assert_eq!(p(&["-c", "0"]).fit_ctx, u64::from(u32::MAX));
        assert!(Flags::parse(&["-fitt", "x"]).is_err());
    }
}
