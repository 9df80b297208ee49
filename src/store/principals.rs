//! Admin principals: named identities of the admin API, each with a role (and an
//! owner for the scoped roles) and a bearer token.
//!
//! Owns: their records and the credential index (`Tree::PrincipalTokens`). A token is
//! generated here, returned once and kept only as its SHA-256 digest, so neither the
//! store nor a backup holds it; rotating replaces the digest, so the old token stops
//! working at once. A principal's client-certificate subject is indexed in the same
//! tree under a domain-separated digest, so no token can collide with a subject.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::codec::{PrincipalRecord, decode};
use super::ops::{Page, audit};
use super::schema::Tree;
use super::summary;
use super::{Change, Store, StoreError, abort};
use crate::model::{Principal, Role};

/// The prefix of principal tokens: tells them apart from the bootstrap token and
/// makes a leaked one easy to find with a secret scanner.
pub const TOKEN_PREFIX: &str = "kgp_";

/// A fresh token: 32 random bytes.
fn new_token() -> Result<Zeroizing<String>, StoreError> {
    let mut b = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(b.as_mut()).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(b.as_ref())
    )))
}

pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The index key of a canonical certificate subject (see `crate::subject`).
pub fn subject_digest(subject: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keygate x509 subject\0");
    h.update(subject.as_bytes());
    h.finalize().into()
}

fn from_record(r: PrincipalRecord) -> Result<Principal, StoreError> {
    let role = Role::parse(&r.role)
        .ok_or_else(|| StoreError::corrupt("principals", format!("unknown role {}", r.role)))?;
    Ok(Principal {
        name: r.name,
        role,
        owner: r.owner,
        description: r.description,
        cert_subject: r.cert_subject,
        create_ms: r.create_ms,
        update_ms: r.update_ms,
    })
}

impl Store {
    /// Creates a principal; returns it with its token (shown only this once).
    pub async fn create_principal(
        &self,
        actor: &str,
        p: Principal,
    ) -> Result<((Principal, Zeroizing<String>), Vec<Change>), StoreError> {
        let token = new_token()?;
        let now = self.now_ms();
        let p = Principal {
            create_ms: now,
            update_ms: now,
            ..p
        };
        let digest = token_digest(&token);
        let rec = PrincipalRecord {
            name: p.name.clone(),
            role: p.role.as_str().to_owned(),
            owner: p.owner.clone(),
            token_sha256: digest.to_vec(),
            description: p.description.clone(),
            cert_subject: p.cert_subject.clone(),
            create_ms: now,
            update_ms: now,
        };
        let by_subject = (!p.cert_subject.is_empty()).then(|| subject_digest(&p.cert_subject));
        self.write_tx(|tx, ()| {
            if tx.exists(Tree::Principals, p.name.as_bytes())? {
                return abort(StoreError::AlreadyExists(format!(
                    "Principal.name '{}' already exists",
                    p.name
                )));
            }
            if let Some(key) = &by_subject {
                if let Some(other) = tx.get_str(Tree::PrincipalTokens, key)? {
                    return abort(StoreError::AlreadyExists(format!(
                        "Principal.cert_subject '{}' already names principal '{other}'",
                        p.cert_subject
                    )));
                }
                tx.set(Tree::PrincipalTokens, key, p.name.as_bytes())?;
            }
            tx.put(Tree::Principals, p.name.as_bytes(), &rec)?;
            tx.set(Tree::PrincipalTokens, &digest, p.name.as_bytes())?;
            audit(
                tx,
                actor,
                "CreatePrincipal",
                "principal",
                &p.name,
                summary::describe(&p),
            )
        })
        .await?;
        Ok(((p, token), Vec::new()))
    }

    /// A new token for `name`; the old one stops working.
    pub async fn rotate_principal_token(
        &self,
        actor: &str,
        name: &str,
    ) -> Result<((Principal, Zeroizing<String>), Vec<Change>), StoreError> {
        let token = new_token()?;
        let digest = token_digest(&token);
        let rec = self
            .write_tx(|tx, ()| {
                let Some(mut r) = tx.get::<PrincipalRecord>(Tree::Principals, name.as_bytes())?
                else {
                    return abort(StoreError::not_found("principal", name));
                };
                tx.del(Tree::PrincipalTokens, &r.token_sha256)?;
                r.token_sha256 = digest.to_vec();
                r.update_ms = tx.stamp.now_ms;
                tx.put(Tree::Principals, name.as_bytes(), &r)?;
                tx.set(Tree::PrincipalTokens, &digest, name.as_bytes())?;
                audit(
                    tx,
                    actor,
                    "RotatePrincipalToken",
                    "principal",
                    name,
                    "token replaced; the previous one no longer works".into(),
                )?;
                Ok(r)
            })
            .await?;
        Ok(((from_record(rec)?, token), Vec::new()))
    }

    pub async fn delete_principal(
        &self,
        actor: &str,
        name: &str,
    ) -> Result<Vec<Change>, StoreError> {
        self.write_tx(|tx, ()| {
            let Some(r) = tx.get::<PrincipalRecord>(Tree::Principals, name.as_bytes())? else {
                return abort(StoreError::not_found("principal", name));
            };
            tx.del(Tree::Principals, name.as_bytes())?;
            tx.del(Tree::PrincipalTokens, &r.token_sha256)?;
            if !r.cert_subject.is_empty() {
                tx.del(Tree::PrincipalTokens, &subject_digest(&r.cert_subject))?;
            }
            audit(
                tx,
                actor,
                "DeletePrincipal",
                "principal",
                name,
                format!("role={} owner={}", r.role, r.owner),
            )
        })
        .await?;
        Ok(Vec::new())
    }

    pub fn get_principal(&self, name: &str) -> Result<Option<Principal>, StoreError> {
        match self.tree(Tree::Principals)?.get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => from_record(
                decode(&v).map_err(|e| StoreError::corrupt("principals", e.to_string()))?,
            )
            .map(Some),
        }
    }

    /// The principal whose token (`token_digest`) or certificate subject
    /// (`subject_digest`) has this digest.
    pub fn principal_by_token(&self, digest: &[u8; 32]) -> Result<Option<Principal>, StoreError> {
        match self.tree(Tree::PrincipalTokens)?.get(digest)? {
            None => Ok(None),
            Some(name) => self.get_principal(&String::from_utf8_lossy(&name)),
        }
    }

    pub fn list_principals(&self, page: &Page) -> Result<(Vec<Principal>, String), StoreError> {
        self.page(Tree::Principals, b"", page, |_, v| {
            from_record(
                decode::<PrincipalRecord>(v)
                    .map_err(|e| StoreError::corrupt("principals", e.to_string()))?,
            )
            .map(Some)
        })
    }
}
