//! The `ggplan` binary: parse arguments, run, map errors to exit codes.
//! Everything else lives in the library (`ggplan::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    ggplan::cli::main()
}
