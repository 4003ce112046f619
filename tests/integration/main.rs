mod hardware;
mod inspect;
mod mem_cli;
mod mem_oracle;
mod smoke;
