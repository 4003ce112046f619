mod emit;
mod smoke;
