mod gguf_roundtrip;
#[cfg(feature = "remote")]
mod http_server;
#[cfg(feature = "remote")]
mod remote;
mod smoke;
