//! Master-key rotation (`keygate rotate-master-key`): every sealed secret and AppCode,
//! the AppCode fingerprint index (keyed from the master key) and the key check in
//! `meta`, moved from the old key to a new one.
//!
//! Owns: the crash-safe order of the steps.
//! 1. The new key is written to a staging file (`<key file>.new`, 0600, fsynced)
//!    before the store changes, so the key the store is about to need exists on disk.
//! 2. One sled transaction rewrites every key pair, app, fingerprint and the key
//!    check, then the store is flushed and read back under the new key.
//! 3. Only then is the key file rewritten with the new key (temp file, fsync, rename,
//!    fsync of the dir), and the staging file removed.
//!
//! A crash before step 2 commits leaves the store under the old key (the staging
//! file is unused and a rerun starts over). A crash between 2 and 3 leaves the store
//! under the staged key: `serve` refuses to start (wrong master key) and a rerun of
//! the command finds the staged key opens the store and finishes step 3.
//!
//! The store is opened exclusively: while `keygate serve` holds the data dir, sled's
//! lock refuses the second opener and the command says so.
//!
//! Not covered: sled does not scrub superseded values from its log segments at once,
//! so ciphertexts under the old key may linger in the files until sled reuses that
//! space. Treat the old key as secret until then (or copy the store with a fresh
//! export) if its exposure is the reason for the rotation.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::StoreError;
use super::codec::{self, AppRecord, KeyRecord};
use super::convert::{app_from_record, app_to_record, key_from_record, key_to_record};
use super::ops::APP_CODE_PURPOSE;
use super::schema::{self, KEY_CHECK_PLAINTEXT, META_KEY_CHECK, Tree};
use super::seal::{MASTER_KEY_LEN, Sealer};
use crate::keyfile::{self, KeyFileError};

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "the store in {0} is in use (is keygate serve running on this data dir?): stop the service, then rotate"
    )]
    InUse(PathBuf),
    #[error("no store in {0}: nothing to rotate")]
    NoStore(PathBuf),
    #[error("the new key is the current key")]
    SameKey,
    #[error("cannot finish the key file swap: {0}")]
    Swap(KeyFileError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What a rotation re-encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub key_pairs: usize,
    /// Previous secrets still inside their grace period.
    pub previous_secrets: usize,
    pub app_codes: usize,
}

/// The result of `rotate`.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Everything re-encrypted; the new key is in `key_file`.
    Done {
        resealed: Resealed,
        key_file: PathBuf,
    },
    /// An interrupted rotation was found committed; its key file swap was finished.
    Resumed { key_file: PathBuf },
}

/// The staging file for a new key beside `key_file`.
pub fn staged_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    key_file.with_file_name(name)
}

/// Runs the rotation described in the module doc on the store in `data_dir`, whose
/// master key is in `key_file` (where the new key goes too); the new key comes from
/// `new_key_file` or is generated.
pub fn rotate(
    data_dir: &Path,
    key_file: &Path,
    new_key_file: Option<&Path>,
) -> Result<Rotation, RotateError> {
    let db_dir = data_dir.join("db");
    if !db_dir.join("conf").exists() {
        return Err(RotateError::NoStore(db_dir));
    }
    let key_file = key_file.to_owned();
    let staged = staged_path(&key_file);
    let db = open_exclusive(&db_dir)?;
    let meta = db.open_tree("meta").map_err(StoreError::from)?;
    let old = keyfile::read_key_file::<MASTER_KEY_LEN>(&key_file)?;

    match schema::check_meta(&meta, &Sealer::new(&old), false) {
        Ok(()) => {}
        Err(StoreError::WrongMasterKey) if staged.exists() => {
            let pending = keyfile::read_key_file::<MASTER_KEY_LEN>(&staged)?;
            schema::check_meta(&meta, &Sealer::new(&pending), false)?;
            // Step 2 had committed: only the swap is missing.
            drop((meta, db));
            swap(&staged, &key_file, &pending)?;
            return Ok(Rotation::Resumed { key_file });
        }
        Err(e) => return Err(e.into()),
    }

    let new = match new_key_file {
        Some(path) => keyfile::read_key_file::<MASTER_KEY_LEN>(path)?,
        None => {
            let mut k = Zeroizing::new([0u8; MASTER_KEY_LEN]);
            getrandom::getrandom(&mut k[..])
                .map_err(|e| StoreError::Seal(super::seal::SealError::Random(e.to_string())))?;
            k
        }
    };
    if *new == *old {
        return Err(RotateError::SameKey);
    }

    keyfile::replace_key_file(&staged, &new[..])?;
    let resealed = reseal(&db, &Sealer::new(&old), &Sealer::new(&new))?;
    db.flush().map_err(StoreError::from)?;
    verify(&db, &Sealer::new(&new))?;
    drop((meta, db));
    swap(&staged, &key_file, &new)?;
    Ok(Rotation::Done { resealed, key_file })
}

fn open_exclusive(db_dir: &Path) -> Result<sled::Db, RotateError> {
    sled::Config::new()
        .path(db_dir)
        .open()
        .map_err(|e| match &e {
            // sled reports its lock file held by another process this way (no error kind).
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                RotateError::InUse(db_dir.to_owned())
            }
            _ => RotateError::Store(StoreError::Db(e)),
        })
}

/// Step 3: the staged key becomes the key file. The key file is rewritten rather than
/// the staging file renamed over it, so an operator-chosen path keeps its name; the
/// staging file goes last, so a crash here leaves it for a rerun.
fn swap(staged: &Path, key_file: &Path, key: &[u8; MASTER_KEY_LEN]) -> Result<(), RotateError> {
    keyfile::replace_key_file(key_file, &key[..]).map_err(RotateError::Swap)?;
    keyfile::remove(staged, "cannot remove the staged key").map_err(RotateError::Swap)
}

fn corrupt(tree: Tree, e: codec::CodecError) -> StoreError {
    StoreError::corrupt(tree.name(), e.to_string())
}

/// Step 2: every sealed value and the fingerprint index, rewritten in one transaction.
fn reseal(db: &sled::Db, old: &Sealer, new: &Sealer) -> Result<Resealed, StoreError> {
    let keys = db.open_tree(Tree::Keys.name())?;
    let apps = db.open_tree(Tree::Apps.name())?;
    let codes = db.open_tree(Tree::AppCodes.name())?;
    let meta = db.open_tree("meta")?;
    let mut n = Resealed::default();

    // Reads first: sled transactions cannot iterate. Nothing else writes meanwhile,
    // since this process holds the store's lock.
    let mut key_rows = Vec::new();
    for row in keys.iter() {
        let (k, v) = row?;
        let rec: KeyRecord = codec::decode(&v).map_err(|e| corrupt(Tree::Keys, e))?;
        let pair = key_from_record(old, rec)?;
        n.key_pairs += 1;
        n.previous_secrets += usize::from(pair.previous.is_some());
        key_rows.push((k, codec::encode(&key_to_record(new, &pair)?)));
    }
    let mut app_rows = Vec::new();
    let mut fingerprints = Vec::new();
    for row in apps.iter() {
        let (k, v) = row?;
        let rec: AppRecord = codec::decode(&v).map_err(|e| corrupt(Tree::Apps, e))?;
        let app = app_from_record(old, rec)?;
        if let Some(code) = &app.app_code {
            n.app_codes += 1;
            fingerprints.push((
                new.fingerprint(APP_CODE_PURPOSE, code.expose()),
                app.id.clone(),
            ));
        }
        app_rows.push((k, codec::encode(&app_to_record(new, &app)?)));
    }
    let stale_fingerprints = codes.iter().keys().collect::<Result<Vec<_>, _>>()?;
    let key_check = new.seal(KEY_CHECK_PLAINTEXT, META_KEY_CHECK)?;

    use sled::Transactional;
    (&keys, &apps, &codes, &meta)
        .transaction(|(tk, ta, tc, tm)| {
            for (k, v) in &key_rows {
                tk.insert(k, v.as_slice())?;
            }
            for (k, v) in &app_rows {
                ta.insert(k, v.as_slice())?;
            }
            for k in &stale_fingerprints {
                tc.remove(k)?;
            }
            for (fp, id) in &fingerprints {
                tc.insert(&fp[..], id.as_bytes())?;
            }
            tm.insert(META_KEY_CHECK, key_check.as_slice())?;
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        })
        .map_err(StoreError::from)?;
    Ok(n)
}

/// Reads everything back under the new key before the old key file is replaced.
fn verify(db: &sled::Db, new: &Sealer) -> Result<(), StoreError> {
    schema::check_meta(&db.open_tree("meta")?, new, false)?;
    for row in db.open_tree(Tree::Keys.name())?.iter() {
        let (_, v) = row?;
        let rec: KeyRecord = codec::decode(&v).map_err(|e| corrupt(Tree::Keys, e))?;
        key_from_record(new, rec)?;
    }
    let codes = db.open_tree(Tree::AppCodes.name())?;
    for row in db.open_tree(Tree::Apps.name())?.iter() {
        let (_, v) = row?;
        let rec: AppRecord = codec::decode(&v).map_err(|e| corrupt(Tree::Apps, e))?;
        let app = app_from_record(new, rec)?;
        if let Some(code) = &app.app_code {
            let fp = new.fingerprint(APP_CODE_PURPOSE, code.expose());
            if codes.get(fp)?.as_deref() != Some(app.id.as_bytes()) {
                return Err(StoreError::corrupt(
                    Tree::AppCodes.name(),
                    format!("no fingerprint for app {} after re-encryption", app.id),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_path_is_beside_the_key() {
        assert_eq!(
            staged_path(Path::new("/d/master.key")),
            PathBuf::from("/d/master.key.new")
        );
        assert_eq!(staged_path(Path::new("k.hex")), PathBuf::from("k.hex.new"));
    }
}
