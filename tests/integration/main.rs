mod hardware;
mod smoke;
