mod emit;
mod emit_llamacpp;
mod fit_oracle;
mod generated;
mod gguf_roundtrip;
mod hardware;
mod header_errors;
#[cfg(feature = "remote")]
mod http_server;
mod inspect;
mod mem_cli;
mod mem_oracle;
mod oracle_common;
mod oracle_fixtures;
mod oracle_plan;
mod plan;
#[cfg(feature = "remote")]
mod remote;
mod smoke;
mod tp;
