//! Backups: a consistent copy of every tree in one file, and restoring it into an empty
//! data dir.
//!
//! Owns: the file format and both directions. A backup is taken under the writer lock
//! (admin writes wait; reads and checks go on), so it is one point in the write order.
//! Records are copied as stored: secrets stay sealed under the master key, which a
//! backup never contains (restore needs the same key file). Format, version 1:
//!
//! ```text
//! "KEYGATE-BACKUP 1\n"
//! { u8 tree-name length, tree name, u32 key length, key, u32 value length, value }*
//! u8 0, u64 record count, 32-byte SHA-256 of every byte before it
//! ```
//!
//! (integers big-endian). Restore reads the whole file and checks the count and the
//! digest before it writes anything, so a truncated or altered backup restores
//! nothing.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::schema::Tree;
use super::{Store, StoreError};

const MAGIC: &[u8] = b"KEYGATE-BACKUP 1\n";
/// The trees a backup holds: every typed tree and `meta` (schema version, key check).
const META: &str = "meta";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backup file {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("restore: {0} is not empty; restore only into an empty or new data dir")]
    NotEmpty(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What a backup or a restore copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    pub records: u64,
    pub bytes: u64,
}

/// A writer that hashes what it writes.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.inner.write_all(b)
    }
}

impl Store {
    /// A backup in a new private file beside the database (the caller streams it, then
    /// removes it).
    pub async fn backup_to_temp(&self) -> Result<(PathBuf, BackupStats), BackupError> {
        let mut raw = [0u8; 8];
        getrandom::getrandom(&mut raw).map_err(|e| BackupError::Invalid {
            path: self.dir.clone(),
            detail: format!("no randomness for a temp name: {e}"),
        })?;
        let path = self
            .dir
            .with_file_name(format!("backup-{}.tmp", hex::encode(raw)));
        match self.backup(&path).await {
            Ok(stats) => Ok((path, stats)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Writes a consistent backup of the whole store to `out` (created, fsynced).
    pub async fn backup(&self, out: &Path) -> Result<BackupStats, BackupError> {
        let io = |source| BackupError::Io {
            path: out.to_owned(),
            source,
        };
        let _writer = self.write_lock.lock().await;
        let engine = self.engine()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            // Sealed secrets and every record: readable by the service's user only.
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(out).map_err(io)?;
        let mut w = Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
            bytes: 0,
        };
        w.put(MAGIC).map_err(io)?;
        let meta = engine.db.open_tree(META).map_err(StoreError::from)?;
        let trees = Tree::ALL
            .iter()
            .map(|t| (t.name(), engine.tree(*t).clone()))
            .chain(std::iter::once((META, meta)));
        let mut records = 0u64;
        for (name, tree) in trees {
            for entry in tree.iter() {
                let (k, v) = entry.map_err(StoreError::from)?;
                let name_len = u8::try_from(name.len()).map_err(|_| BackupError::Invalid {
                    path: out.to_owned(),
                    detail: format!("tree name {name} too long"),
                })?;
                w.put(&[name_len]).map_err(io)?;
                w.put(name.as_bytes()).map_err(io)?;
                for part in [k.as_ref(), v.as_ref()] {
                    let len = u32::try_from(part.len()).map_err(|_| BackupError::Invalid {
                        path: out.to_owned(),
                        detail: "a record over 4 GiB".into(),
                    })?;
                    w.put(&len.to_be_bytes()).map_err(io)?;
                    w.put(part).map_err(io)?;
                }
                records += 1;
            }
        }
        w.put(&[0]).map_err(io)?;
        w.put(&records.to_be_bytes()).map_err(io)?;
        let digest = w.hash.clone().finalize();
        w.inner.write_all(&digest).map_err(io)?;
        let bytes = w.bytes + digest.len() as u64;
        let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(BackupStats { records, bytes })
    }
}

/// Restores `backup` into `data_dir`'s database (`<data_dir>/db`), which must not
/// exist or be empty. The master key is not touched: the service then needs the key
/// the backup was taken under (`--master-key-file`).
pub fn restore(backup: &Path, db_dir: &Path) -> Result<BackupStats, BackupError> {
    let invalid = |detail: &str| BackupError::Invalid {
        path: backup.to_owned(),
        detail: detail.to_owned(),
    };
    if std::fs::read_dir(db_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::NotEmpty(db_dir.to_owned()));
    }
    let mut raw = Vec::new();
    std::fs::File::open(backup)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|source| BackupError::Io {
            path: backup.to_owned(),
            source,
        })?;
    if raw.len() < MAGIC.len() + 1 + 8 + 32 || !raw.starts_with(MAGIC) {
        return Err(invalid("not a keygate backup (version 1)"));
    }
    let (body, digest) = raw.split_at(raw.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(invalid(
            "checksum mismatch: the file is truncated or altered",
        ));
    }
    // Parse everything before writing anything.
    let mut records: Vec<(&str, &[u8], &[u8])> = Vec::new();
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], BackupError> {
        let part = body
            .get(*at..*at + n)
            .ok_or_else(|| invalid("a record runs past the end"))?;
        *at += n;
        Ok(part)
    };
    loop {
        let name_len = usize::from(*take(&mut at, 1)?.first().unwrap_or(&0));
        if name_len == 0 {
            break;
        }
        let name = std::str::from_utf8(take(&mut at, name_len)?)
            .map_err(|_| invalid("a tree name is not UTF-8"))?;
        let mut parts = [&[][..]; 2];
        for part in &mut parts {
            let len: [u8; 4] = take(&mut at, 4)?
                .try_into()
                .map_err(|_| invalid("bad length"))?;
            let len = u32::from_be_bytes(len) as usize;
            *part = take(&mut at, len)?;
        }
        records.push((name, parts[0], parts[1]));
    }
    let count = take(&mut at, 8)?;
    let count = u64::from_be_bytes(count.try_into().map_err(|_| invalid("bad trailer"))?);
    if at != body.len() || count != records.len() as u64 {
        return Err(invalid("record count does not match the trailer"));
    }
    let known: Vec<&str> = Tree::ALL.iter().map(|t| t.name()).chain([META]).collect();
    if let Some((name, _, _)) = records.iter().find(|(n, _, _)| !known.contains(n)) {
        return Err(invalid(&format!("unknown tree {name}")));
    }
    let db = sled::Config::new()
        .path(db_dir)
        .open()
        .map_err(StoreError::from)?;
    for (name, k, v) in &records {
        db.open_tree(name)
            .and_then(|t| t.insert(*k, *v))
            .map_err(StoreError::from)?;
    }
    db.flush().map_err(StoreError::from)?;
    Ok(BackupStats {
        records: count,
        bytes: raw.len() as u64,
    })
}
