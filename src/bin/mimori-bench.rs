//! `mimori-bench`: the closed-loop HTTP load generator. Thin on purpose: parse the
//! command line, build the runtime, run, print. Everything else is in `mimori::bench`.
//!
//! Exit codes: 0 when the run completed at least one operation, 1 when it could not
//! start or completed none (so scripts notice a dead target), 2 for usage errors.

use anyhow::Context as _;
use clap::Parser as _;
use mimori::bench::cli::{BenchArgs, OutputFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mimori-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let output = args.output;
    let threads = usize::from(args.threads);
    // A current-thread runtime when one thread is asked for: no work-stealing and no
    // cross-thread wakeups, which keeps the generator's share of the CPU small.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let report = runtime.block_on(mimori::bench::run(args.into_options()))?;
    match output {
        OutputFormat::Table => print!("{}", report.to_table()),
        OutputFormat::Json => println!("{}", report.to_json()),
    }
    if report.ops_total == 0 {
        eprintln!("mimori-bench: no operation completed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
