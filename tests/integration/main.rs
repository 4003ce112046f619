mod inspect;
mod smoke;
