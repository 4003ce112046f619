mod hardware;
mod inspect;
mod smoke;
