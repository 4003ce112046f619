//! Errors of the llama.cpp simulation: bad flags (user input) and the
//! configurations llama.cpp itself refuses, with llama.cpp's wording where it has one.

use thiserror::Error;

/// A llama.cpp flag that cannot be parsed.
#[derive(Debug, Error)]
pub enum FlagError {
    #[error("unknown llama.cpp flag {0}")]
    Unknown(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("unexpected argument {0:?} (llama.cpp flags only; the model is given to ggplan)")]
    Positional(String),
    #[error("flag {flag}: bad value {value:?}, expected {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
    #[error("override pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// A configuration llama.cpp refuses (or one the simulator cannot model).
#[derive(Debug, Error)]
pub enum SimError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error("unknown buffer type {name:?} in an override (available: {available})")]
    UnknownBufferType { name: String, available: String },
    #[error("-dev {0}: no such device in the hardware description")]
    UnknownDevice(String),
    #[error("-mg {main_gpu}: only {n} device(s)")]
    MainGpu { main_gpu: i32, n: usize },
    #[error("device {0} does not support split buffers (-sm row)")]
    NoSplitBuffers(String),
    #[error("quantized V cache requires flash_attn to be enabled (-fa off with -ctv {0})")]
    QuantizedVNeedsFa(String),
    #[error("V cache quantization requires flash_attn; {0}")]
    Unsupported(String),
    #[error("model tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    /// `llama_model_create` (src/llama-model.cpp) for the archs
    /// `llm_arch_supports_sm_tensor` refuses.
    #[error("-sm tensor: LLAMA_SPLIT_MODE_TENSOR not implemented for architecture '{0}'")]
    SmTensorArch(String),
    /// `llama_init_from_model` (src/llama-context.cpp): `-fa auto` is turned
    /// on, `-fa off` refused.
    #[error("-sm tensor with -fa off: SPLIT_MODE_TENSOR requires flash_attn to be enabled")]
    SmTensorNeedsFa,
    /// `llama_prepare_model_devices` (src/llama.cpp).
    #[error("-sm tensor: LLAMA_SPLIT_MODE_TENSOR needs >= 1 devices")]
    SmTensorNoDevices,
    #[error("--override-kv {key}: {reason}")]
    KvOverride { key: String, reason: String },
}
