mod hardware;
mod inspect;
mod mem_oracle;
mod smoke;
