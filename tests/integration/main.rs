mod inspect;
mod hardware;
mod smoke;
