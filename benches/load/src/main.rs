//! `keygate-bench`: the load generator. Creates a data set, pre-signs requests, drives
//! keygate's gRPC Check and Envoy HTTP front doors, or a real Envoy asking keygate (and,
//! with `--baseline`, a no-op Check server on the same stack, side by side), and writes
//! a report. Also measures start-up on a large data dir and durable admin writes with
//! concurrent clients.
//!
//! This file parses the command line and hands off to the modules below.

mod admin_writes;
mod dataset;
mod envoy;
mod error;
mod load;
mod noop;
mod ratios;
mod report;
mod requests;
mod scenario;
mod spawn;
mod startup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator the `keygate` binary uses (the no-op baseline runs in this binary).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keygate-bench",
    about = "Load generator and benchmarks for keygate (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive Check load (gRPC, Envoy HTTP, through Envoy) and write a report.
    Load(Box<scenario::LoadArgs>),
    /// Fill a data dir offline with a data set (for large sets and start-up runs).
    Populate {
        /// The data dir keygate will be started with (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        spec: dataset::Spec,
    },
    /// Time `keygate serve` from spawn to serving on a data dir, and its memory.
    Startup(startup::StartupArgs),
    /// Durable admin writes from concurrent clients (CreateApp, then a CreateGrant on
    /// each of 20 APIs, over and over).
    AdminWrites(admin_writes::AdminWritesArgs),
    /// The no-op baseline server (started by `load --baseline`).
    #[command(hide = true)]
    NoopServer {
        #[arg(long)]
        ready_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::NoopServer { ready_file } => noop::serve(&ready_file),
        Command::Populate { data_dir, spec } => runtime().and_then(|rt| {
            rt.block_on(async {
                let started = std::time::Instant::now();
                let callers = dataset::into_data_dir(&data_dir, &spec).await?;
                println!(
                    "filled {}: {} apps, {} key pairs, {} APIs, {} grants in {:.1} s",
                    data_dir.display(),
                    callers.len(),
                    callers.len() * spec.keys_per_app,
                    spec.apis,
                    callers.len() * spec.grants_per_app,
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            })
        }),
        Command::Load(args) => {
            runtime().and_then(|rt| rt.block_on(interruptible(scenario::run(*args))))
        }
        Command::Startup(args) => startup::run(&args),
        Command::AdminWrites(args) => {
            runtime().and_then(|rt| rt.block_on(interruptible(admin_writes::run(args))))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Stops `run` on SIGINT or SIGTERM by dropping it, so the servers it started are
/// killed (their handles kill on drop) instead of outliving the bench.
async fn interruptible(
    run: impl std::future::Future<Output = error::Result<()>>,
) -> error::Result<()> {
    tokio::select! {
        r = run => r,
        () = keygate::server::shutdown_signal() => error::fail("interrupted"),
    }
}

fn runtime() -> error::Result<tokio::runtime::Runtime> {
    use error::Context;
    tokio::runtime::Runtime::new().ctx("start the runtime")
}
