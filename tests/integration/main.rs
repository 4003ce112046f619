mod emit;
mod emit_llamacpp;
mod hardware;
mod inspect;
mod smoke;
mod tp;
