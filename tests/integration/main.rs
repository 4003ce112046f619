mod hardware;
mod plan;
mod smoke;
