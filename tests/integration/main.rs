mod hardware;
mod smoke;
mod tp;
