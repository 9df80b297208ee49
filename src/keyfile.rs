//! Files that hold secrets: the admin token, the master key, and the data dir they are
//! generated into.
//!
//! Owns: reading them (a key is hex, surrounding whitespace ignored), generating them on
//! first start (mode 0600, created exclusively, fsynced), replacing a key file crash-safely
//! (temp file, fsync, rename, fsync of the dir), and creating the data dir (0700). Knows
//! nothing of what the keys are for: key lengths are the callers'. Imports nothing of
//! keygate's.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_error<'p>(
    what: &'static str,
    path: &'p Path,
) -> impl Fn(std::io::Error) -> KeyFileError + 'p {
    move |source| KeyFileError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The admin token: `env_token` (KEYGATE_ADMIN_TOKEN) when set, else `file`, else one
/// generated into `<data_dir>/admin.token` on first start. Returns the token and, when
/// it was read from or written to a file, that file's path (to log; never the token).
pub fn admin_token(
    file: Option<&Path>,
    data_dir: &Path,
    env_token: Option<String>,
) -> Result<(Zeroizing<String>, Option<PathBuf>), KeyFileError> {
    if let Some(t) = env_token.filter(|t| !t.trim().is_empty()) {
        return Ok((Zeroizing::new(t.trim().to_owned()), None));
    }
    let (path, generate) = match file {
        Some(p) => (p.to_owned(), false),
        None => (data_dir.join("admin.token"), true),
    };
    if generate && !path.exists() {
        let raw = random::<32>()?;
        write_private(&path, &format!("{}\n", hex::encode(&raw[..])))?;
    }
    let text = read_secret_file(&path, "cannot read admin token file")?;
    let token = text.trim().to_owned();
    if token.len() < 16 {
        return Err(KeyFileError::Invalid(format!(
            "admin token in {} is shorter than 16 characters",
            path.display()
        )));
    }
    Ok((Zeroizing::new(token), Some(path)))
}

/// An `N`-byte key: from `file`, else `<data_dir>/master.key`, generated on first
/// start. Returns the key and the file it came from.
pub fn master_key<const N: usize>(
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<(Zeroizing<[u8; N]>, PathBuf), KeyFileError> {
    let (path, generate) = match file {
        Some(p) => (p.to_owned(), false),
        None => (data_dir.join("master.key"), true),
    };
    if generate && !path.exists() {
        let raw = random::<N>()?;
        write_private(&path, &format!("{}\n", hex::encode(&raw[..])))?;
    }
    Ok((read_key_file(&path)?, path))
}

/// Creates the data dir (0700) or fails with a message naming it.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyFileError> {
    let io = io_error("cannot use data dir", dir);
    fs::create_dir_all(dir).map_err(&io)?;
    set_mode(dir, 0o700).map_err(&io)?;
    // Fail now, with the directory's name, rather than deep inside the store.
    let probe = dir.join(".write-probe");
    fs::write(&probe, b"")
        .and_then(|_| fs::remove_file(&probe))
        .map_err(io)
}

/// Reads a key file: `2 * N` hex characters (surrounding whitespace ignored).
pub fn read_key_file<const N: usize>(path: &Path) -> Result<Zeroizing<[u8; N]>, KeyFileError> {
    let text = read_secret_file(path, "cannot read master key file")?;
    let mut key = Zeroizing::new([0u8; N]);
    hex::decode_to_slice(text.trim(), &mut key[..]).map_err(|_| {
        KeyFileError::Invalid(format!(
            "master key file {} must hold {} hex characters",
            path.display(),
            2 * N
        ))
    })?;
    Ok(key)
}

/// Writes `key` to `path` (mode 0600) so that a reader sees the old file or the whole
/// new one, never a mix, and the result survives a crash: a private temp file beside
/// it, fsync, rename over, fsync of the directory.
pub fn replace_key_file(path: &Path, key: &[u8]) -> Result<(), KeyFileError> {
    let io = io_error("cannot write master key file", path);
    let tmp = path.with_extension("key.tmp");
    // A temp file left by an interrupted run holds nothing the store depends on.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    write_private(&tmp, &format!("{}\n", hex::encode(key)))?;
    fs::rename(&tmp, path).map_err(&io)?;
    sync_parent(path).map_err(io)
}

/// Removes a file, naming it on failure.
pub fn remove(path: &Path, what: &'static str) -> Result<(), KeyFileError> {
    fs::remove_file(path).map_err(io_error(what, path))
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyFileError> {
    let mut raw = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut raw[..])
        .map_err(|e| KeyFileError::Invalid(format!("no randomness: {e}")))?;
    Ok(raw)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => fs::File::open(".")?.sync_all(),
    }
}

fn read_secret_file(path: &Path, what: &'static str) -> Result<Zeroizing<String>, KeyFileError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(io_error(what, path))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, content: &str) -> Result<(), KeyFileError> {
    let io = io_error("cannot write", path);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(&io)?;
    f.write_all(content.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (t1, p) = admin_token(None, d, None).unwrap();
        let (t2, _) = admin_token(None, d, None).unwrap();
        assert_eq!(*t1, *t2);
        let (k1, kp) = master_key::<32>(None, d).unwrap();
        assert_eq!(*k1, *master_key::<32>(None, d).unwrap().0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [p.unwrap(), kp.clone()] {
                assert_eq!(
                    fs::metadata(path).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
        }
        let (env, none) = admin_token(None, d, Some("from-the-environment-123".into())).unwrap();
        assert_eq!(env.as_str(), "from-the-environment-123");
        assert!(none.is_none());

        // Replacing keeps the file private and whole.
        replace_key_file(&kp, &[7u8; 32]).unwrap();
        assert_eq!(*read_key_file::<32>(&kp).unwrap(), [7u8; 32]);
        let e = read_key_file::<16>(&kp).unwrap_err().to_string();
        assert!(e.contains("32 hex characters"), "{e}");
    }
}
