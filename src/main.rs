//! The `keygate` binary: parses the command line and hands off to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use keygate::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Authorization service for signed API requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: check (gRPC), http and admin (gRPC) listeners.
    Serve(Box<ServeArgs>),
    /// Sign a request the way a caller would: print the headers to add, or a curl line.
    Sign(Box<keygate::sign::SignArgs>),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sign(args) => match keygate::sign::run(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Serve(args) => {
            init_logging();
            let config = match Config::resolve(&args) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(keygate::server::serve(
                config,
                keygate::server::shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("keygate: error: {e}");
    ExitCode::FAILURE
}
