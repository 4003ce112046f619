mod emit;
mod emit_llamacpp;
mod smoke;
