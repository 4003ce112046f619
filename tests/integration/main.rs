mod emit;
mod emit_llamacpp;
mod gguf_roundtrip;
mod hardware;
#[cfg(feature = "remote")]
mod http_server;
mod inspect;
mod plan;
#[cfg(feature = "remote")]
mod remote;
mod smoke;
mod tp;
