mod emit;
mod emit_llamacpp;
mod gguf_roundtrip;
mod hardware;
mod header_errors;
#[cfg(feature = "remote")]
mod http_server;
mod inspect;
#[cfg(feature = "remote")]
mod remote;
mod oracle_fixtures;
mod smoke;
mod tp;
