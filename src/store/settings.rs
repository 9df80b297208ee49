//! Shared settings: values every replica must agree on that are no admin resource.
//!
//! Owns: the `Settings` tree. Today one entry, the Redis nonce store's epoch: kept in
//! the shared store, a replica that starts with an empty data dir still knows which
//! Redis data generation the others used, so a Redis flushed meanwhile is noticed by
//! it too (`nonce::redis`). Each change is one audited write (actor `keygate`).

use super::ops::audit;
use super::schema::Tree;
use super::{Store, StoreError};

const REDIS_EPOCH: &str = "redis_nonce_epoch";

impl Store {
    /// The Redis nonce store's epoch the replicas last recorded.
    pub fn redis_epoch(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(Tree::Settings)?
            .get(REDIS_EPOCH.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records the Redis nonce store's epoch; no write when it is already that.
    pub async fn set_redis_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        self.write_tx(|tx, ()| {
            if tx
                .get_str(Tree::Settings, REDIS_EPOCH.as_bytes())?
                .as_deref()
                == Some(epoch)
            {
                return Ok(());
            }
            tx.set(Tree::Settings, REDIS_EPOCH.as_bytes(), epoch.as_bytes())?;
            audit(
                tx,
                "keygate",
                "SetRedisNonceEpoch",
                "setting",
                REDIS_EPOCH,
                format!("the Redis nonce store's data generation is now {epoch}"),
            )
        })
        .await
    }
}
