//! Why the service could not start or stopped: one error type for the whole server,
//! each variant naming the listener, address or file at fault.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::tls;
use crate::config::ConfigError;
use crate::keyfile::KeyFileError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("{listener} listener: cannot bind {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store in {dir}: {source}")]
    Store { dir: PathBuf, source: StoreError },
    #[error(
        "store in {dir}: a master-key rotation was interrupted (the staged key {staged} exists); run `keygate rotate-master-key` with the same data dir and key file to finish it"
    )]
    InterruptedRotation { dir: PathBuf, staged: PathBuf },
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{listener} listener failed: {message}")]
    Listener {
        listener: &'static str,
        message: String,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    NonceJournal(crate::nonce::journal::JournalError),
    #[error("nonce store: {0}")]
    NonceRedis(crate::nonce::redis::RedisSetupError),
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}
