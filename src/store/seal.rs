//! Secret encryption at rest: XChaCha20-Poly1305 under the master key.
//!
//! Owns: the sealed byte format (`version | 24-byte nonce | ciphertext+tag`) and the
//! master key. Each secret is bound to its record by associated data, so a sealed value
//! copied onto another record does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::model::Secret;

const SEAL_V1: u8 = 1;
const NONCE_LEN: usize = 24;
pub const MASTER_KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open under this master key")]
    WrongKey,
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Encrypts and decrypts secrets under one master key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Keyed-hash key for lookup fingerprints, derived from the master key so that the
    /// files alone do not allow guessing a bearer code by hashing candidates.
    fingerprint_key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    pub fn new(master_key: &[u8; MASTER_KEY_LEN]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master_key)
            .unwrap_or_else(|_| unreachable_hmac_key());
        mac.update(b"keygate fingerprint key v1");
        Self {
            cipher: XChaCha20Poly1305::new(master_key.into()),
            fingerprint_key: Zeroizing::new(mac.finalize().into_bytes().into()),
        }
    }

    /// A keyed fingerprint of a bearer credential (AppCode), used as its lookup key.
    pub fn fingerprint(&self, purpose: &str, value: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.fingerprint_key[..])
            .unwrap_or_else(|_| unreachable_hmac_key());
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Malformed)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Malformed)?;
        if version != SEAL_V1 || rest.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::WrongKey)
    }

    pub fn seal_secret(&self, secret: &Secret, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal(secret.expose().as_bytes(), aad)
    }

    pub fn open_secret(&self, sealed: &[u8], aad: &[u8]) -> Result<Secret, SealError> {
        let bytes = self.open(sealed, aad)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| SealError::Malformed)?;
        Ok(Secret::new(text))
    }
}

/// HMAC accepts keys of any length, so `new_from_slice` cannot fail.
#[allow(clippy::panic)]
fn unreachable_hmac_key() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 rejected a key; HMAC takes keys of any length")
}

/// Associated data binding a key pair's secret to its AppKey.
pub fn key_aad(app_key: &str) -> Vec<u8> {
    [b"keygate/key/".as_slice(), app_key.as_bytes()].concat()
}

/// Associated data binding an AppCode to its app.
pub fn app_code_aad(app_id: &str) -> Vec<u8> {
    [b"keygate/app-code/".as_slice(), app_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal(b"top-secret", b"a").unwrap();
        assert_eq!(&s.open(&sealed, b"a").unwrap()[..], b"top-secret");
        assert!(matches!(s.open(&sealed, b"b"), Err(SealError::WrongKey)));
        let other = Sealer::new(&[8u8; 32]);
        assert!(matches!(
            other.open(&sealed, b"a"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(s.open(&[], b"a"), Err(SealError::Malformed)));
        assert!(!sealed.windows(10).any(|w| w == b"top-secret"));
    }
}
