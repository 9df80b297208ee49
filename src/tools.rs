//! `keygate backup` and `keygate restore`: the operator's side of backups; and
//! `keygate copy-store` (feature `etcd`): a store moved between sled and etcd.
//!
//! Owns: the command-line options and both flows. `backup` is a client of the admin
//! API's `Backup` call (the service stays up), writing the stream to a file (0600) that
//! appears whole or not at all. `restore` fills an empty data dir from such a file
//! (`store::backup::restore`), then opens it with the master key to prove the key
//! opens its secrets; if it does not, the restored database is removed again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::connect::{AdminConn, ConnError, status_line};
use crate::store::backup::{BackupError, restore as restore_db};
use crate::store::seal::MASTER_KEY_LEN;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Usage(String),
    #[error("admin API at {addr}: {message}")]
    Admin { addr: String, message: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    #[error("store: {0}")]
    Store(crate::store::StoreError),
    #[error("the store does not open with {key}: {source}")]
    Verify {
        key: PathBuf,
        source: crate::store::StoreError,
    },
}

/// `keygate backup`: a consistent copy of a running keygate's store.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Where to write the backup (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// `keygate restore`: fill an empty data dir from a backup (service stopped).
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to fill; its `db` must not exist or be empty.
    #[arg(long, env = "KEYGATE_DATA_DIR", default_value = "keygate-data")]
    pub data_dir: PathBuf,
    /// The master key the backup was taken under (default `<data_dir>/master.key`).
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Streams a backup from the admin API into `args.out`; returns the bytes written.
pub async fn backup(args: &BackupArgs) -> Result<u64, ToolError> {
    let admin = |s: tonic::Status| ToolError::Admin {
        addr: args.conn.admin_addr.clone(),
        message: status_line(&s),
    };
    let mut stream = args
        .conn
        .connect()
        .await?
        .backup(crate::pb::admin::BackupRequest {})
        .await
        .map_err(admin)?
        .into_inner();

    // Written beside the target and renamed at the end: a failed backup leaves no file
    // that looks whole.
    let partial = args.out.with_extension("partial");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ToolError::Io { what, path, source }
    };
    if args.out.exists() {
        return Err(ToolError::Usage(format!(
            "{} exists; choose a new file",
            args.out.display()
        )));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&partial).map_err(io("cannot create", &partial))?;
    let mut bytes = 0u64;
    let result = async {
        while let Some(chunk) = stream.message().await.map_err(admin)? {
            file.write_all(&chunk.data)
                .map_err(io("cannot write", &partial))?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all().map_err(io("cannot write", &partial))?;
        std::fs::rename(&partial, &args.out).map_err(io("cannot rename to", &args.out))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| bytes)
}

/// Restores `args.from` into `args.data_dir` and checks the master key opens it.
pub fn restore(args: &RestoreArgs) -> Result<u64, ToolError> {
    let db_dir = args.data_dir.join("db");
    let key_path = args
        .master_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("master.key"));
    // Read the key first: a restore that cannot be opened is not done at all.
    let key = crate::keyfile::read_key_file::<MASTER_KEY_LEN>(&key_path)?;
    crate::keyfile::ensure_data_dir(&args.data_dir)?;
    let stats = restore_db(&args.from, &db_dir)?;
    let clock = std::sync::Arc::new(crate::clock::SystemClock);
    if let Err(source) = crate::store::Store::open(&db_dir, &key, clock) {
        let _ = std::fs::remove_dir_all(&db_dir);
        return Err(ToolError::Verify {
            key: key_path,
            source,
        });
    }
    Ok(stats.records)
}

/// `keygate copy-store`: moves a store between sled and etcd (service stopped on the
/// sled side; no replica running on the etcd side yet). Secrets stay sealed under the
/// same master key.
#[cfg(feature = "etcd")]
#[derive(clap::Args, Debug, Clone)]
pub struct CopyStoreArgs {
    /// `to-etcd`: the data dir's sled store into an empty etcd prefix; `from-etcd`:
    /// etcd into the (empty) data dir's sled store.
    #[arg(long, value_enum)]
    pub direction: CopyDirection,
    /// The data dir whose `db` is read (to-etcd) or filled (from-etcd).
    #[arg(long, env = "KEYGATE_DATA_DIR", default_value = "keygate-data")]
    pub data_dir: PathBuf,
    /// The master key (default `<data_dir>/master.key`); every replica needs the same.
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "KEYGATE_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,
    #[arg(long, env = "KEYGATE_ETCD_PREFIX", default_value = "/keygate/v1")]
    pub etcd_prefix: String,
    /// etcd user (with `KEYGATE_ETCD_PASSWORD`).
    #[arg(long, env = "KEYGATE_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, env = "KEYGATE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    #[arg(long, env = "KEYGATE_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, env = "KEYGATE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

#[cfg(feature = "etcd")]
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    ToEtcd,
    FromEtcd,
}

/// Runs `keygate copy-store`; returns the records copied.
#[cfg(feature = "etcd")]
pub async fn copy_store(args: &CopyStoreArgs) -> Result<u64, ToolError> {
    use crate::store::etcd::{EtcdSettings, copy_etcd_to_sled, copy_sled_to_etcd};
    let key_path = args
        .master_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("master.key"));
    let key = crate::keyfile::read_key_file::<MASTER_KEY_LEN>(&key_path)?;
    let settings = EtcdSettings {
        endpoints: args.etcd_endpoints.clone(),
        prefix: args.etcd_prefix.clone(),
        user: crate::store::etcd::EtcdSettings::user_from_env(args.etcd_user.clone()),
        ca: args.etcd_ca.clone(),
        client_cert: args.etcd_cert.clone().zip(args.etcd_key.clone()),
        timeout: std::time::Duration::from_secs(10),
        max_txn_ops: 128,
        anti_entropy: std::time::Duration::ZERO,
    };
    let db_dir = args.data_dir.join("db");
    let clock = std::sync::Arc::new(crate::clock::SystemClock);
    let verify = |source| ToolError::Verify {
        key: key_path.clone(),
        source,
    };
    match args.direction {
        CopyDirection::ToEtcd => {
            if !db_dir.exists() {
                return Err(ToolError::Usage(format!(
                    "{} holds no sled store",
                    db_dir.display()
                )));
            }
            let store = crate::store::Store::open(&db_dir, &key, clock).map_err(verify)?;
            copy_sled_to_etcd(&store, &settings)
                .await
                .map_err(ToolError::Store)
        }
        CopyDirection::FromEtcd => {
            crate::keyfile::ensure_data_dir(&args.data_dir)?;
            let store = crate::store::Store::open(&db_dir, &key, clock).map_err(verify)?;
            let sealer = crate::store::seal::Sealer::new(&key);
            let copied = copy_etcd_to_sled(&store, &sealer, &settings).await;
            copied.map_err(ToolError::Store)
        }
    }
}
