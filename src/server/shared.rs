//! State shared by the front doors and the admin API, and the one call every front
//! door makes to decide.
//!
//! Owns: opening the data dir at start (master key, store, index; a warning when the
//! key lives inside the data dir) and `Shared::decide`, which applies the size limits,
//! runs the pipeline on the current index, and counts and logs the decision.

use std::sync::Arc;

use super::decision_log::DecisionLog;
use super::error::ServeError;
use super::limits;
use crate::clock::Clock;
use crate::config::Config;
use crate::decide::trace::{Outcome, Recorded, Recorder, Step, Trace};
use crate::decide::{DecideConfig, Decision, Verdict, evaluate, evaluate_traced};
use crate::index::Index;
use crate::keyfile;
use crate::nonce::ClaimError;
use crate::nonce::journal::Journaled;
use crate::nonce::redis::{RedisNonces, RedisSettings};
use crate::nonce::{NonceStore, NonceStoreKind};
use crate::replay::ReplayGuard;
use crate::request::RequestView;
use crate::store::seal::MASTER_KEY_LEN;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// State shared by the front doors and the admin API.
pub struct Shared {
    pub config: Config,
    pub store: Arc<Store>,
    pub index: Arc<Index>,
    pub clock: Arc<dyn Clock>,
    pub nonces: NonceStore,
    pub decide_config: DecideConfig,
    pub metrics: Metrics,
    pub decision_log: DecisionLog,
    /// Key pairs' last use, per-API and per-app counts.
    pub usage: crate::usage::Usage,
}

impl Shared {
    /// Opens the data dir (master key, store) and builds the index.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, ServeError> {
        keyfile::ensure_data_dir(&config.data_dir)?;
        let (master_key, key_path) = keyfile::master_key::<MASTER_KEY_LEN>(
            config.master_key_file.as_deref(),
            &config.data_dir,
        )?;
        tracing::info!(master_key_file = %key_path.display(), "master key loaded");
        // The key seals every secret in the store: kept beside it, whoever copies the
        // data dir (a backup, a disk image) can open every secret.
        let inside = |p: &std::path::Path| {
            let dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
            std::fs::canonicalize(p).is_ok_and(|k| k.starts_with(&dir))
        };
        if inside(&key_path) {
            tracing::warn!(
                master_key_file = %key_path.display(),
                "the master key lives inside the data dir: anyone with a copy of the data dir \
                 can read every secret. In production keep it elsewhere (--master-key-file, \
                 e.g. a secrets mount) and out of backups of the data dir"
            );
        }
        let (store, db_dir, changes): (
            Store,
            std::path::PathBuf,
            Option<tokio::sync::mpsc::UnboundedReceiver<Vec<crate::store::Change>>>,
        ) = match &config.etcd {
            None => {
                let db_dir = config.data_dir.join("db");
                let store = Store::open(&db_dir, &master_key, clock.clone()).map_err(|source| {
                    let staged = crate::store::rotate::staged_path(&key_path);
                    match source {
                        StoreError::WrongMasterKey if staged.exists() => {
                            ServeError::InterruptedRotation {
                                dir: db_dir.clone(),
                                staged,
                            }
                        }
                        source => ServeError::Store {
                            dir: db_dir.clone(),
                            source,
                        },
                    }
                })?;
                (store, db_dir, None)
            }
            #[cfg(not(feature = "etcd"))]
            Some(_) => {
                return Err(ServeError::Config(crate::config::ConfigError::Invalid(
                    "this keygate was built without etcd support: build it with \
                     `cargo build --release --features etcd` (needs protoc: apt-get install protobuf-compiler)"
                        .into(),
                )));
            }
            #[cfg(feature = "etcd")]
            Some(etcd) => {
                let started = std::time::Instant::now();
                let view_dir = config.data_dir.join("etcd-view");
                let (store, changes) =
                    Store::open_etcd(&view_dir, &master_key, clock.clone(), etcd_settings(etcd))
                        .await
                        .map_err(|source| ServeError::Store {
                            dir: view_dir.clone(),
                            source,
                        })?;
                let (revision, _) = store.etcd().map_or((0, None), |e| e.position());
                tracing::info!(
                    endpoints = %etcd.endpoints.join(","),
                    prefix = %etcd.prefix,
                    revision,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "local view of etcd up to date"
                );
                (store, view_dir, Some(changes))
            }
        };
        let started = std::time::Instant::now();
        let index = Index::load(&store).map_err(|source| ServeError::Store {
            dir: db_dir,
            source,
        })?;
        let sizes = index.sizes();
        tracing::info!(
            apps = sizes.apps,
            keys = sizes.keys,
            apis = sizes.apis,
            grants = sizes.grants,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index loaded"
        );
        let mut decide_config = DecideConfig {
            default_stage: config.default_stage.to_ascii_uppercase(),
            extend_info_header: config.extend_info_header.to_ascii_lowercase(),
            path_mode: config.path_mode,
            trust_client_stage: config.trust_client_stage,
            user_auth: match &config.user_auth {
                Some(c) => {
                    let auth =
                        Arc::new(crate::userauth::UserAuth::open(c.clone()).map_err(|e| {
                            ServeError::Config(crate::config::ConfigError::Invalid(e))
                        })?);
                    crate::userauth::remote::start(&auth, c.jwks_refresh).await;
                    Some(auth)
                }
                None => None,
            },
            user_id_header: config.user_id_header.clone(),
            ..DecideConfig::default()
        };
        decide_config.schemes.timestamp_window_ms = (config.timestamp_window_secs * 1000) as i64;
        let decision_log = DecisionLog::new(config.decision_log, config.decision_log_rate);
        let store = Arc::new(store);
        let nonces = open_nonce_store(&config, &decide_config, &store, clock.now_ms()).await?;
        let index = Arc::new(index);
        if let Some(mut changes) = changes {
            // Every revision the view applies, from any replica, reaches the index.
            let (store, index) = (store.clone(), index.clone());
            tokio::spawn(async move {
                while let Some(c) = changes.recv().await {
                    index.refresh(&store, &c);
                }
            });
        }
        Ok(Self {
            nonces,
            config,
            store,
            index,
            clock,
            decide_config,
            metrics: Metrics::default(),
            decision_log,
            usage: crate::usage::Usage::default(),
        })
    }

    /// Runs the pipeline for one request from any front door, logs and counts it.
    /// A request over a size limit is denied before any scheme looks at it. The nonce,
    /// if any, is claimed after the index lock is released: it may wait on Redis.
    pub async fn decide(&self, view: &RequestView, request_id: &str) -> Decision {
        let started = std::time::Instant::now();
        let now_ms = self.clock.now_ms();
        let verdict = match limits::check(view, &self.config.limits).or_else(|| self.stale()) {
            Some(deny) => Verdict::Decided(Decision::Deny(deny)),
            None => evaluate(view, &self.index.read(), now_ms, &self.decide_config),
        };
        let decision = match verdict {
            Verdict::Decided(d) => d,
            Verdict::Claim(pending) => {
                let claimed = self.nonces.claim(pending.claim(), now_ms).await;
                pending.settle(claimed)
            }
        };
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.record(&decision, elapsed_us);
        self.usage.record(&decision, now_ms);
        self.decision_log
            .record(Some(view), request_id, &decision, elapsed_us);
        decision
    }
}

#[cfg(feature = "etcd")]
fn etcd_settings(c: &crate::config::EtcdConfig) -> crate::store::etcd::EtcdSettings {
    crate::store::etcd::EtcdSettings {
        endpoints: c.endpoints.clone(),
        prefix: c.prefix.clone(),
        user: crate::store::etcd::EtcdSettings::user_from_env(c.user.clone()),
        ca: c.ca.clone(),
        client_cert: c.client_cert.clone(),
        timeout: std::time::Duration::from_millis(c.timeout_ms),
        max_txn_ops: c.max_txn_ops,
        anti_entropy: std::time::Duration::from_secs(c.anti_entropy_secs),
    }
}

impl Shared {
    /// What `decide` answers for `view` at `now_ms`, with each step of the pipeline
    /// (`Explain`). Claims no nonce: a nonce is looked up without being recorded, so
    /// explaining a captured request neither spends it nor counts as a decision.
    pub async fn explain(&self, view: &RequestView, now_ms: i64) -> (Vec<Recorded>, Decision) {
        let mut t = Recorder::default();
        let verdict = match limits::check(view, &self.config.limits).or_else(|| self.stale()) {
            Some(deny) => {
                t.step(Step::Limits, Outcome::Fail, || {
                    format!("{}: {}", deny.code.as_str(), deny.message)
                });
                Verdict::Decided(Decision::Deny(deny))
            }
            None => {
                t.step(Step::Limits, Outcome::Pass, || {
                    "within the size limits".to_owned()
                });
                evaluate_traced(
                    view,
                    &self.index.read(),
                    now_ms,
                    &self.decide_config,
                    &mut t,
                )
            }
        };
        let decision = match verdict {
            Verdict::Decided(d) => d,
            Verdict::Claim(pending) => {
                let c = pending.claim();
                let looked_up = match self.nonces.health(now_ms) {
                    Ok(()) => self.nonces.seen(c, now_ms).await,
                    Err(e) => Err(e),
                };
                let claimed = match looked_up {
                    Ok(false) => {
                        t.step(Step::Nonce, Outcome::Pass, || {
                            format!(
                                "nonce {:?} is unused for {} ({} store); explain does not record it",
                                c.token,
                                c.scope,
                                self.nonces.kind().as_str()
                            )
                        });
                        Ok(())
                    }
                    Ok(true) => {
                        t.step(Step::Nonce, Outcome::Fail, || {
                            format!(
                                "NonceReplayed: nonce {:?} was already used by {}",
                                c.token, c.scope
                            )
                        });
                        Err(ClaimError::Replayed)
                    }
                    Err(e) => {
                        t.step(Step::Nonce, Outcome::Fail, || {
                            format!("ReplayUnavailable: {e}")
                        });
                        Err(ClaimError::Unavailable(e))
                    }
                };
                pending.settle(claimed)
            }
        };
        (t.steps, decision)
    }

    /// With `--max-staleness-secs`: the deny for every check once etcd has been silent
    /// for longer (the view may miss revocations).
    #[cfg(not(feature = "etcd"))]
    fn stale(&self) -> Option<crate::decide::Deny> {
        None
    }

    #[cfg(feature = "etcd")]
    fn stale(&self) -> Option<crate::decide::Deny> {
        let max = self.config.etcd.as_ref()?.max_staleness_secs?;
        let (_, age_ms) = self.store.etcd()?.position();
        let age_ms = age_ms.unwrap_or(i64::MAX);
        (age_ms > (max as i64).saturating_mul(1000)).then(|| {
            crate::decide::Deny::new(
                crate::decide::DenyCode::Internal,
                format!(
                    "the view of the store is {} s old (over --max-staleness-secs {max}): etcd is unreachable",
                    age_ms / 1000
                ),
            )
        })
    }
}

/// The nonce store `--nonce-store` names, opened (the local journal read, Redis
/// connected if it can be).
async fn open_nonce_store(
    config: &Config,
    decide_config: &DecideConfig,
    store: &Arc<crate::store::Store>,
    now_ms: i64,
) -> Result<NonceStore, ServeError> {
    let capacity = config.replay_capacity;
    let per_key = config
        .replay_per_key_capacity
        .unwrap_or(config.replay_capacity / 16);
    let max_ttl_ms = decide_config.schemes.max_nonce_ttl_ms();
    Ok(match config.nonce_store {
        NonceStoreKind::Memory => NonceStore::Memory(ReplayGuard::new(capacity, per_key)),
        NonceStoreKind::Local => NonceStore::Local(
            Journaled::open(&config.data_dir, capacity, per_key, max_ttl_ms, now_ms)
                .map_err(ServeError::NonceJournal)?,
        ),
        NonceStoreKind::Redis => {
            let settings = RedisSettings {
                url: config.redis_url.clone().unwrap_or_default(),
                prefix: config.redis_prefix.clone(),
                timeout: std::time::Duration::from_millis(config.redis_timeout_ms),
                max_ttl_ms,
                epoch_file: config.data_dir.join("nonces.redis-epoch"),
            };
            // Several replicas share the store: the Redis epoch is remembered there too.
            #[cfg(feature = "etcd")]
            let shared = store.etcd().is_some().then(|| store.clone());
            #[cfg(not(feature = "etcd"))]
            let shared = {
                let _ = store;
                None
            };
            NonceStore::Redis(
                RedisNonces::start(settings, shared)
                    .await
                    .map_err(ServeError::NonceRedis)?,
            )
        }
    })
}
