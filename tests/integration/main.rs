mod hardware;
mod inspect;
mod smoke;
mod tp;
