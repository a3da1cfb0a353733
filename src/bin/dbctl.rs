//! `dbctl`: the Mimori command-line client. Thin on purpose: parse the command line,
//! run the command, exit with its code. Everything else is in `mimori::dbctl`.

use mimori::dbctl::{cli, run_blocking};
use std::process::ExitCode;

fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(error) => {
            // Help and version go to stdout, usage errors to stderr; clap knows which.
            let _ = error.print();
            return ExitCode::from(cli::usage_exit_code(&error));
        }
    };
    ExitCode::from(run_blocking(parsed))
}
