//! # ggplan
//!
//! Plans where a large language model's tensors live — which GPU, which
//! layers, which experts stay on the CPU — *before* deployment, predicts
//! per-device memory and speed, and writes the configs that deploy it
//! (llama-server argv, `models.conf`, llama-swap YAML, router presets,
//! `vllm serve` lines).
//!
//! The crate is a library first; the `ggplan` binary is a thin clap front
//! over these modules, each of which owns one concern:
//!
//! | module | owns |
//! |---|---|
//! | [`gguf`] | reading GGUF headers (never tensor data): local, multi-shard, remote |
//! | [`model`] | model profiles: per-block layout, attention kinds, KV and recurrent widths |
//! | [`hardware`] | hardware files, presets, NVML detection |
//! | [`llamacpp`] | llama.cpp semantics by build: placement, buffer sizes, flags |
//! | [`solver`] | searching placements for speed under memory limits |
//! | [`emit`] | rendering plans as the config formats people deploy with |
//! | [`vllm`] | vLLM tensor/pipeline-parallel validity and KV budget |
//! | [`fleet`] | many models over many nodes |
//! | [`cli`] | the command-line front (argument structs, tables, `--json`) |
//!
//! Numbers are checked against a real llama.cpp build through recorded
//! oracle fixtures (`tests/fixtures/oracle/`, produced by `oracle/`).

pub mod cli;
pub mod emit;
pub mod fsutil;
pub mod gguf;
pub mod hardware;
pub mod llamacpp;
pub mod model;
pub mod solver;
pub mod units;
pub mod vllm;

pub use units::Bytes;
