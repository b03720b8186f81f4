//! The `tresor` binary: parse, run, map the error to an exit code. Everything else is in cli.rs
//! and the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
