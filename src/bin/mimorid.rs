//! `mimorid`: runs one Mimori node. See `mimorid --help` and docs/operations.md.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the node failed while running,
//! 2 for an unusable configuration, a port that cannot be bound, or a cluster that
//! cannot be joined.

use clap::Parser;
use mimori::config::Config;
use mimori::daemon::{self, DaemonError, Flags, MimoridCommand};
use std::process::ExitCode;

/// glibc's allocator spent about a quarter of the node's CPU under write load
/// (fragmentation from many short-lived buffers); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages for its arenas, and the kernel zeroes a
/// 2 MiB page on the first touch of each, inside whichever request touched it: under
/// write load that showed as 4 % of the CPU and as a longer p99 (about 28 ms instead
/// of 20 ms at 64 connections on a 3-node cluster, docs/pages/benchmarks.md). The
/// setting belongs to the process and is inherited by the nodes `mimorid demo`
/// starts. On a kernel without the setting (before Linux 3.15) the node says so on
/// stderr and runs with the default.
fn disable_transparent_huge_pages() {
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("mimorid: cannot opt out of transparent huge pages: {error}");
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let flags = Flags::parse();
    if let Some(MimoridCommand::Demo(args)) = &flags.command {
        return mimori::demo::run(args);
    }
    let config = match Config::resolve(flags.config.as_deref(), std::env::vars(), flags.layer()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mimorid: {error}");
            return ExitCode::from(2);
        }
    };
    mimori::logs::init(&config.log, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mimorid: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match daemon::termination_signal() {
            Ok(stop) => daemon::run(config, stop).await,
            Err(error) => Err(DaemonError::Unsupported(format!(
                "cannot listen for SIGTERM/SIGINT: {error}"
            ))),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            error @ (DaemonError::Config(_)
            | DaemonError::Bind { .. }
            | DaemonError::Unsupported(_)
            | DaemonError::Listen { .. }
            | DaemonError::Join(_)),
        ) => {
            eprintln!("mimorid: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("mimorid: {error}");
            ExitCode::from(1)
        }
    }
}
