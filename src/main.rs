//! The `keygate` binary: parses the command line and hands off to the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use keygate::config::{Config, LogFormat, ServeArgs};

/// mimalloc instead of the system allocator: the check path and the index build
/// allocate many small objects, and glibc's free-list upkeep was their largest single
/// cost (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Sign(Box<keygate::sign::cli::SignArgs>),
    /// Re-encrypt every stored secret under a new master key (service stopped).
    RotateMasterKey(keygate::config::RotateArgs),
    /// Copy a running keygate's whole store into a file (secrets stay sealed).
    Backup(Box<keygate::tools::BackupArgs>),
    /// Fill an empty data dir from a backup file (service stopped).
    Restore(keygate::tools::RestoreArgs),
    /// Copy a sled store into etcd, or etcd into a sled store (secrets stay sealed).
    #[cfg(feature = "etcd")]
    CopyStore(Box<keygate::tools::CopyStoreArgs>),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(keygate::cli::CompletionsArgs),
    #[command(flatten)]
    Admin(Box<keygate::cli::AdminCommand>),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line, the event's fields at the top level (`jq .code`).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(cmd) => keygate::cli::run(*cmd),
        Command::Completions(args) => keygate::cli::completions(&args, Cli::command()),
        Command::Sign(args) => match keygate::sign::cli::run(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::RotateMasterKey(args) => match keygate::store::rotate::rotate(
            &args.data_dir,
            &args.key_path(),
            args.new_key_file.as_deref(),
        ) {
            Ok(keygate::store::rotate::Rotation::Done { resealed, key_file }) => {
                println!(
                    "re-encrypted {} key pairs ({} previous secrets) and {} AppCodes; the new master key is in {}",
                    resealed.key_pairs,
                    resealed.previous_secrets,
                    resealed.app_codes,
                    key_file.display()
                );
                ExitCode::SUCCESS
            }
            Ok(keygate::store::rotate::Rotation::Resumed { key_file }) => {
                println!(
                    "finished an interrupted rotation; the new master key is in {}",
                    key_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Backup(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(keygate::tools::backup(&args)) {
                Ok(bytes) => {
                    println!("backup written to {} ({bytes} bytes)", args.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        #[cfg(feature = "etcd")]
        Command::CopyStore(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(keygate::tools::copy_store(&args)) {
                Ok(records) => {
                    println!(
                        "copied {records} records ({:?}); start keygate on the copy with the same master key",
                        args.direction
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Restore(args) => match keygate::tools::restore(&args) {
            Ok(records) => {
                println!(
                    "restored {records} records into {}; start keygate on it with the same master key",
                    args.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Serve(args) => {
            // Resolved first: it says how to log. Its own errors go to stderr as text.
            let config = match Config::resolve(&args) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            init_logging(config.log_format);
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
