//! Configuration: flags, `KEYGATE_*` environment variables and an optional TOML file,
//! resolved once at start into a validated `Config` (flags and environment win over the
//! file, the file over built-in defaults).
//!
//! Owns: every tunable and its default, and their validation. The files behind the
//! admin token and the master key are `keyfile`'s.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::nonce::NonceStoreKind;
use crate::path::PathMode;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `keygate serve` options: one struct for the flags, their `KEYGATE_<NAME>`
/// environment variables (clap) and the TOML file (serde, the same names with
/// underscores). Unset is `None`; defaults apply in `Config::resolve`.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML config file (same keys as the long flags, with underscores).
    #[arg(long, env = "KEYGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// gRPC listener for Envoy's ext_authz Check (plus health and reflection).
    #[arg(long, env = "KEYGATE_CHECK_ADDR")]
    pub check_addr: Option<SocketAddr>,
    /// HTTP listener: NGINX auth_request, Envoy HTTP ext_authz, /healthz, /metrics.
    #[arg(long, env = "KEYGATE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// gRPC listener for the management API (plus health and reflection).
    #[arg(long, env = "KEYGATE_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Where the database, and the generated master key and admin token, live.
    #[arg(long, env = "KEYGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the admin bearer token (else KEYGATE_ADMIN_TOKEN, else generated).
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the 32-byte master key as 64 hex characters (else generated).
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Stage used when neither the route nor X-Ca-Stage names one.
    #[arg(long, env = "KEYGATE_DEFAULT_STAGE")]
    pub default_stage: Option<String>,
    /// Allowed clock skew for timestamped schemes, seconds.
    #[arg(long, env = "KEYGATE_TIMESTAMP_WINDOW_SECS")]
    pub timestamp_window_secs: Option<u64>,
    /// Most nonces remembered at once; when full, new nonces are refused (fail closed).
    #[arg(long, env = "KEYGATE_REPLAY_CAPACITY")]
    pub replay_capacity: Option<usize>,
    /// Upstream header carrying the app's extension info.
    #[arg(long, env = "KEYGATE_EXTEND_INFO_HEADER")]
    pub extend_info_header: Option<String>,
    /// Seconds to let in-flight calls finish on shutdown.
    #[arg(long, env = "KEYGATE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Write the bound addresses as JSON to this file once serving (for scripts/tests).
    #[arg(long, env = "KEYGATE_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// PEM certificate chain: serve every listener (check, http, admin) over TLS.
    #[arg(long, env = "KEYGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "KEYGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: the admin listener requires a client certificate signed by it
    /// (mutual TLS), in addition to the bearer token. Needs `--tls-cert`.
    #[arg(long, env = "KEYGATE_ADMIN_CLIENT_CA")]
    pub admin_client_ca: Option<PathBuf>,
    /// Check calls processed at once; beyond it, Check answers a fast
    /// `Overloaded` deny (503 / RESOURCE_EXHAUSTED) instead of queueing.
    #[arg(long, env = "KEYGATE_CHECK_MAX_IN_FLIGHT")]
    pub check_max_in_flight: Option<usize>,
    /// Most request headers a checked request may carry (else `HeadersTooLarge`).
    #[arg(long, env = "KEYGATE_MAX_REQUEST_HEADERS")]
    pub max_request_headers: Option<usize>,
    /// Most bytes of a checked request's header names and values, method, host, path
    /// and query together (else `HeadersTooLarge`).
    #[arg(long, env = "KEYGATE_MAX_REQUEST_HEADER_BYTES")]
    pub max_request_header_bytes: Option<usize>,
    /// Largest request body a front door may pass for checking (else `BodyTooLarge`).
    #[arg(long, env = "KEYGATE_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<usize>,
    /// Largest gRPC message the check listener decodes; must exceed the body and
    /// header limits so an oversized request becomes a deny with a code.
    #[arg(long, env = "KEYGATE_CHECK_MAX_MESSAGE_BYTES")]
    pub check_max_message_bytes: Option<usize>,
    /// Time limit of one Check call, milliseconds, receiving included.
    #[arg(long, env = "KEYGATE_CHECK_TIMEOUT_MS")]
    pub check_timeout_ms: Option<u64>,
    /// Time limit of one admin call, seconds.
    #[arg(long, env = "KEYGATE_ADMIN_TIMEOUT_SECS")]
    pub admin_timeout_secs: Option<u64>,
    /// Time limit of a TLS handshake, seconds.
    #[arg(long, env = "KEYGATE_TLS_HANDSHAKE_TIMEOUT_SECS")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Connections the check listener holds at once; past it new ones are closed.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS_CHECK")]
    pub max_connections_check: Option<usize>,
    /// Connections the HTTP listener holds at once; past it new ones are closed.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS_HTTP")]
    pub max_connections_http: Option<usize>,
    /// Connections the admin listener holds at once; past it new ones are closed.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS_ADMIN")]
    pub max_connections_admin: Option<usize>,
    /// Seconds a new connection may stay silent, and an HTTP/1 request may take to
    /// send its headers (also how long an idle HTTP/1 keep-alive connection stays open).
    #[arg(long, env = "KEYGATE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may make no progress (nothing read or written) before it
    /// is closed; HTTP/2 peers are pinged at a quarter of it.
    #[arg(long, env = "KEYGATE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Concurrent HTTP/2 streams per connection on the check and admin listeners.
    #[arg(long, env = "KEYGATE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// `strict` (default): a request whose path is not in canonical form (escaped
    /// unreserved characters, `//`, `.` or `..` segments) is denied `Malformed`.
    /// `normalize`: such paths are routed on their canonical form, for odd clients
    /// behind a proxy that normalises the same way.
    #[arg(long, env = "KEYGATE_PATH_MODE")]
    pub path_mode: Option<PathMode>,
    /// Honour the client's `X-Ca-Stage` when the proxy names no stage. Only safe when
    /// the proxy routes to each stage's upstream by that same header.
    #[arg(long, env = "KEYGATE_TRUST_CLIENT_STAGE", num_args = 0..=1, default_missing_value = "true")]
    pub trust_client_stage: Option<bool>,
    /// NGINX door: accept `X-Forwarded-Method/-Uri/-Host/-Proto` when `X-Original-*`
    /// is missing. Off by default: a client can send those headers itself.
    #[arg(long, env = "KEYGATE_TRUST_FORWARDED_HEADERS", num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded_headers: Option<bool>,
    /// User authentication (APIs with `user_auth_required`): the header holding the
    /// user's token, a JWT (default `x-user-token`; a `Bearer ` prefix is allowed).
    #[arg(long, env = "KEYGATE_USER_TOKEN_HEADER")]
    pub user_token_header: Option<String>,
    /// ... or the cookie holding it when the header is absent (e.g. `bk_token`).
    #[arg(long, env = "KEYGATE_USER_TOKEN_COOKIE")]
    pub user_token_cookie: Option<String>,
    /// File holding the HS256 secret of user tokens.
    #[arg(long, env = "KEYGATE_USER_JWT_HS256_SECRET_FILE")]
    pub user_jwt_hs256_secret_file: Option<PathBuf>,
    /// JWKS file with the RS256 / ES256 public keys of user tokens (re-read when it
    /// changes).
    #[arg(long, env = "KEYGATE_USER_JWKS_FILE", conflicts_with = "user_jwks_url")]
    pub user_jwks_file: Option<PathBuf>,
    /// ... or the URL serving that JWKS (an identity provider's `jwks_uri`; https, or
    /// http to this machine only), fetched at start, every
    /// `--user-jwks-refresh-secs`, and sooner when a token names a key it lacks.
    #[arg(long, env = "KEYGATE_USER_JWKS_URL")]
    pub user_jwks_url: Option<String>,
    /// CA bundle (PEM) that verifies the JWKS URL's server (default: the system's).
    #[arg(long, env = "KEYGATE_USER_JWKS_CA_FILE")]
    pub user_jwks_ca_file: Option<PathBuf>,
    /// How often the JWKS URL is fetched again, seconds (default 300).
    #[arg(long, env = "KEYGATE_USER_JWKS_REFRESH_SECS")]
    pub user_jwks_refresh_secs: Option<u64>,
    /// Required `iss` of user tokens.
    #[arg(long, env = "KEYGATE_USER_JWT_ISSUER")]
    pub user_jwt_issuer: Option<String>,
    /// Required `aud` of user tokens.
    #[arg(long, env = "KEYGATE_USER_JWT_AUDIENCE")]
    pub user_jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` / `nbf`, seconds (default 30).
    #[arg(long, env = "KEYGATE_USER_JWT_LEEWAY_SECS")]
    pub user_jwt_leeway_secs: Option<u64>,
    /// The claim naming the user (default `sub`).
    #[arg(long, env = "KEYGATE_USER_ID_CLAIM")]
    pub user_id_claim: Option<String>,
    /// Upstream header carrying the verified user id (default `x-keygate-user-id`).
    #[arg(long, env = "KEYGATE_USER_ID_HEADER")]
    pub user_id_header: Option<String>,
    /// Most live nonces one key (or AppCode app) may hold in the replay cache, so no
    /// caller can fill the cache for the others (default: a sixteenth of its capacity).
    #[arg(long, env = "KEYGATE_REPLAY_PER_KEY_CAPACITY")]
    pub replay_per_key_capacity: Option<usize>,
    /// `text` (default) or `json`: one JSON object per log line, for log pipelines.
    #[arg(long, env = "KEYGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Which decisions get an info-level log line: `all` (default), `denies` or `off`.
    #[arg(long, env = "KEYGATE_DECISION_LOG")]
    pub decision_log: Option<DecisionLog>,
    /// Most decision lines per second; the rest are counted and reported in the next
    /// line (`suppressed`), so a flood cannot fill the disk.
    #[arg(long, env = "KEYGATE_DECISION_LOG_RATE")]
    pub decision_log_rate: Option<u32>,
    /// Where nonces are remembered: `local` (default: in memory, journaled in the data
    /// dir, so restarts forget none), `memory` (a restart forgets them) or `redis`
    /// (shared by every replica; needs `--redis-url`).
    #[arg(long, env = "KEYGATE_NONCE_STORE")]
    pub nonce_store: Option<NonceStoreKind>,
    /// Redis for `--nonce-store redis`: `redis://[user:password@]host:port/db`.
    #[arg(long, env = "KEYGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every key keygate writes in Redis.
    #[arg(long, env = "KEYGATE_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Time limit of one nonce claim in Redis, milliseconds; past it the request is
    /// denied `ReplayUnavailable`.
    #[arg(long, env = "KEYGATE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Where apps, keys, APIs and grants live: `sled` (default: embedded, one node) or
    /// `etcd` (shared by every replica; needs `--etcd-endpoints`). With etcd the data
    /// dir holds this replica's local view of it.
    #[arg(long, env = "KEYGATE_STORE")]
    pub store: Option<StoreKind>,
    /// etcd client URLs, comma-separated (`http://127.0.0.1:2379,...`).
    #[arg(long, env = "KEYGATE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Prefix of every key keygate writes in etcd.
    #[arg(long, env = "KEYGATE_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user (with `KEYGATE_ETCD_PASSWORD`).
    #[arg(long, env = "KEYGATE_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// PEM CA bundle for etcd's certificate (enables TLS to etcd).
    #[arg(long, env = "KEYGATE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (`--client-cert-auth`), with `--etcd-key`.
    #[arg(long, env = "KEYGATE_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of `--etcd-cert`.
    #[arg(long, env = "KEYGATE_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// Time limit of one request to etcd, milliseconds (an admin write fails
    /// UNAVAILABLE past it).
    #[arg(long, env = "KEYGATE_ETCD_TIMEOUT_MS")]
    pub etcd_timeout_ms: Option<u64>,
    /// Seconds between comparisons of the local view with a fresh list of etcd (0: off).
    #[arg(long, env = "KEYGATE_ETCD_ANTI_ENTROPY_SECS")]
    pub etcd_anti_entropy_secs: Option<u64>,
    /// The `--max-txn-ops` the etcd cluster runs with (default 128, etcd's own): a
    /// cascade or batch larger than one transaction is written in parts within it.
    #[arg(long, env = "KEYGATE_ETCD_MAX_TXN_OPS")]
    pub etcd_max_txn_ops: Option<usize>,
    /// With etcd: deny every check once etcd has not answered for this many seconds
    /// (default: keep answering from the last view however old).
    #[arg(long, env = "KEYGATE_MAX_STALENESS_SECS")]
    pub max_staleness_secs: Option<u64>,
}

/// Which storage engine `--store` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sled,
    Etcd,
}

/// How to reach etcd (`--store etcd`).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<String>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub timeout_ms: u64,
    pub max_txn_ops: usize,
    pub anti_entropy_secs: u64,
    pub max_staleness_secs: Option<u64>,
}

impl ServeArgs {
    /// These options over `base`: a field set here wins, an unset one keeps `base`'s.
    /// Generic over the fields (through their serde form), so a new option needs no
    /// edit here.
    fn over(&self, base: ServeArgs) -> Result<ServeArgs, ConfigError> {
        let invalid = |e: serde_json::Error| ConfigError::Invalid(format!("options: {e}"));
        let top = serde_json::to_value(self).map_err(invalid)?;
        let mut merged = serde_json::to_value(&base).map_err(invalid)?;
        if let (serde_json::Value::Object(top), serde_json::Value::Object(merged)) =
            (top, &mut merged)
        {
            for (k, v) in top {
                if !v.is_null() {
                    merged.insert(k, v);
                }
            }
        }
        let mut out: ServeArgs = serde_json::from_value(merged).map_err(invalid)?;
        out.config = self.config.clone();
        Ok(out)
    }
}

/// User token settings, when a secret or a JWKS file is given.
fn user_auth_config(o: &ServeArgs) -> Result<Option<crate::userauth::UserAuthConfig>, ConfigError> {
    if o.user_jwt_hs256_secret_file.is_none()
        && o.user_jwks_file.is_none()
        && o.user_jwks_url.is_none()
    {
        return Ok(None);
    }
    if o.user_jwks_file.is_some() && o.user_jwks_url.is_some() {
        return Err(ConfigError::Invalid(
            "user_jwks_file and user_jwks_url: give one".into(),
        ));
    }
    let refresh = o.user_jwks_refresh_secs.unwrap_or(300);
    if refresh == 0 {
        return Err(ConfigError::Invalid(
            "user_jwks_refresh_secs: at least 1".into(),
        ));
    }
    let hs256_secret = match &o.user_jwt_hs256_secret_file {
        Some(path) => {
            let s = fs::read(path).map_err(|e| ConfigError::Io {
                what: "cannot read the user token secret",
                path: path.clone(),
                source: e,
            })?;
            let s = s.trim_ascii().to_vec();
            if s.len() < 32 {
                return Err(ConfigError::Invalid(format!(
                    "{}: an HS256 secret of at least 32 bytes",
                    path.display()
                )));
            }
            Some(s)
        }
        None => None,
    };
    let header = o
        .user_token_header
        .clone()
        .unwrap_or_else(|| "x-user-token".into())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(ConfigError::Invalid(format!(
            "user_token_header '{header}' is not a valid header name"
        )));
    }
    Ok(Some(crate::userauth::UserAuthConfig {
        header,
        cookie: o.user_token_cookie.clone(),
        hs256_secret,
        jwks_file: o.user_jwks_file.clone(),
        jwks_url: o.user_jwks_url.clone(),
        jwks_ca_file: o.user_jwks_ca_file.clone(),
        jwks_refresh: std::time::Duration::from_secs(refresh),
        issuer: o.user_jwt_issuer.clone(),
        audience: o.user_jwt_audience.clone(),
        leeway_secs: o.user_jwt_leeway_secs.unwrap_or(30),
        user_claim: o.user_id_claim.clone().unwrap_or_else(|| "sub".into()),
    }))
}

fn etcd_config(o: &ServeArgs) -> Result<Option<EtcdConfig>, ConfigError> {
    let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
    if o.store.unwrap_or_default() == StoreKind::Sled {
        if o.etcd_endpoints.is_some() {
            return bad("etcd_endpoints is set but store is not etcd (--store etcd)");
        }
        return Ok(None);
    }
    let endpoints: Vec<String> = o
        .etcd_endpoints
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return bad("store = etcd needs etcd_endpoints (--etcd-endpoints http://127.0.0.1:2379)");
    }
    let prefix = o
        .etcd_prefix
        .clone()
        .unwrap_or_else(|| "/keygate/v1".into());
    if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
        return bad("etcd_prefix must start with '/' and name something (e.g. /keygate/v1)");
    }
    let client_cert = match (&o.etcd_cert, &o.etcd_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return bad("etcd_cert and etcd_key go together"),
    };
    let timeout_ms = o.etcd_timeout_ms.unwrap_or(2_000);
    if timeout_ms == 0 {
        return bad("etcd_timeout_ms must be at least 1");
    }
    let max_txn_ops = o.etcd_max_txn_ops.unwrap_or(128);
    if max_txn_ops < 32 {
        return bad("etcd_max_txn_ops must be at least 32 (etcd's default is 128)");
    }
    Ok(Some(EtcdConfig {
        endpoints,
        prefix,
        user: o.etcd_user.clone(),
        ca: o.etcd_ca.clone(),
        client_cert,
        timeout_ms,
        max_txn_ops,
        anti_entropy_secs: o.etcd_anti_entropy_secs.unwrap_or(60),
        max_staleness_secs: o.max_staleness_secs,
    }))
}

/// `keygate rotate-master-key` options.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RotateArgs {
    /// The data dir of the store to re-encrypt (the service must be stopped).
    #[arg(long, env = "KEYGATE_DATA_DIR", default_value = "keygate-data")]
    pub data_dir: PathBuf,
    /// The current master key file, if not `<data_dir>/master.key`. The new key is
    /// written to this same path once the store is re-encrypted.
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Take the new key (64 hex characters) from this file instead of generating one.
    #[arg(long)]
    pub new_key_file: Option<PathBuf>,
}

impl RotateArgs {
    /// Where the service reads the master key from (and where the new one goes).
    pub fn key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which decisions are logged, one info line each (rate-limited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DecisionLog {
    #[default]
    All,
    Denies,
    Off,
}

/// Certificate files for TLS on the listeners. Read and checked at start by
/// `server::tls`; here only the paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle that admin client certificates must chain to; `None`: no mTLS.
    pub admin_client_ca: Option<PathBuf>,
}

/// Bounds on what one checked request and the check listener may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Check calls in progress at once before new ones are shed.
    pub check_max_in_flight: usize,
    /// Request headers per checked request.
    pub max_request_headers: usize,
    /// Bytes of header names and values plus method, host, path and query.
    pub max_request_header_bytes: usize,
    /// Bytes of a request body passed for checking.
    pub max_request_body_bytes: usize,
    /// Bytes of one gRPC message on the check listener.
    pub check_max_message_bytes: usize,
    /// Time limit of one Check call.
    pub check_timeout_ms: u64,
    /// Time limit of one admin call.
    pub admin_timeout_secs: u64,
    /// Time limit of a TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Connections each listener holds at once (`conn`).
    pub max_connections_check: usize,
    pub max_connections_http: usize,
    pub max_connections_admin: usize,
    /// Silence allowed on a new connection; HTTP/1 header read and keep-alive idle time.
    pub header_read_timeout_secs: u64,
    /// Time without progress after which a connection is closed.
    pub idle_timeout_secs: u64,
    /// HTTP/2 streams per connection on the gRPC listeners.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // ~20 µs per decision on two cores: a full queue drains in well under
            // Envoy's default 200 ms ext_authz timeout.
            check_max_in_flight: 1024,
            // Envoy forwards at most 100 headers by default (max_headers_count).
            max_request_headers: 200,
            // Envoy's default max_request_headers_kb is 60.
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 1024 * 1024,
            // tonic's default; leaves room for the body plus headers.
            check_max_message_bytes: 4 * 1024 * 1024,
            check_timeout_ms: 2_000,
            admin_timeout_secs: 30,
            tls_handshake_timeout_secs: 10,
            // Envoy holds one HTTP/2 connection per worker; NGINX one per concurrent
            // subrequest (or its keepalive pool). Fitted under the fd limit at start.
            max_connections_check: 1024,
            max_connections_http: 1024,
            max_connections_admin: 64,
            header_read_timeout_secs: 10,
            // Longer than NGINX's (60 s) and most load balancers' upstream keep-alive.
            idle_timeout_secs: 120,
            // The in-flight bound: more streams on one connection would be shed anyway.
            max_concurrent_streams: 1024,
        }
    }
}

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub check_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token_file: Option<PathBuf>,
    pub master_key_file: Option<PathBuf>,
    pub default_stage: String,
    pub timestamp_window_secs: u64,
    pub replay_capacity: usize,
    pub extend_info_header: String,
    pub shutdown_grace_secs: u64,
    pub ready_file: Option<PathBuf>,
    /// `None`: plaintext listeners.
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    pub path_mode: PathMode,
    pub trust_client_stage: bool,
    pub trust_forwarded_headers: bool,
    /// `None`: no user token keys configured.
    pub user_auth: Option<crate::userauth::UserAuthConfig>,
    pub user_id_header: String,
    /// `None`: a sixteenth of `replay_capacity`.
    pub replay_per_key_capacity: Option<usize>,
    pub log_format: LogFormat,
    pub decision_log: DecisionLog,
    pub decision_log_rate: u32,
    pub nonce_store: NonceStoreKind,
    /// Required with `NonceStoreKind::Redis`.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub redis_timeout_ms: u64,
    /// `None`: the embedded sled store.
    pub etcd: Option<EtcdConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            check_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            data_dir: PathBuf::from("keygate-data"),
            admin_token_file: None,
            master_key_file: None,
            default_stage: "RELEASE".into(),
            timestamp_window_secs: 900,
            replay_capacity: 1_000_000,
            extend_info_header: "x-keygate-app-extend-info".into(),
            shutdown_grace_secs: 10,
            ready_file: None,
            tls: None,
            limits: Limits::default(),
            path_mode: PathMode::Strict,
            trust_client_stage: false,
            trust_forwarded_headers: false,
            user_auth: None,
            user_id_header: "x-keygate-user-id".into(),
            replay_per_key_capacity: None,
            log_format: LogFormat::Text,
            decision_log: DecisionLog::All,
            decision_log_rate: 100,
            nonce_store: NonceStoreKind::Local,
            redis_url: None,
            redis_prefix: "keygate:".into(),
            // Loopback Redis answers in ~0.1 ms; this bounds a hung one well inside
            // Envoy's default 200 ms ext_authz timeout.
            redis_timeout_ms: 50,
            etcd: None,
        }
    }
}

impl Config {
    /// Resolves the options once: flags and environment (clap) over the file over the
    /// built-in defaults, then validates.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = fs::read_to_string(path).map_err(|e| ConfigError::Io {
                    what: "cannot read config file",
                    path: path.clone(),
                    source: e,
                })?;
                toml::from_str::<ServeArgs>(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.message().to_owned(),
                })?
            }
            None => ServeArgs::default(),
        };
        let o = args.over(file)?;
        let etcd = etcd_config(&o)?;
        let user_auth = user_auth_config(&o)?;
        let d = Config::default();
        let dl = d.limits;
        let cfg = Config {
            check_addr: o.check_addr.unwrap_or(d.check_addr),
            http_addr: o.http_addr.unwrap_or(d.http_addr),
            admin_addr: o.admin_addr.unwrap_or(d.admin_addr),
            data_dir: o.data_dir.unwrap_or(d.data_dir),
            default_stage: o.default_stage.unwrap_or(d.default_stage),
            timestamp_window_secs: o.timestamp_window_secs.unwrap_or(d.timestamp_window_secs),
            replay_capacity: o.replay_capacity.unwrap_or(d.replay_capacity),
            extend_info_header: o.extend_info_header.unwrap_or(d.extend_info_header),
            shutdown_grace_secs: o.shutdown_grace_secs.unwrap_or(d.shutdown_grace_secs),
            path_mode: o.path_mode.unwrap_or(d.path_mode),
            trust_client_stage: o.trust_client_stage.unwrap_or(d.trust_client_stage),
            trust_forwarded_headers: o
                .trust_forwarded_headers
                .unwrap_or(d.trust_forwarded_headers),
            user_auth,
            user_id_header: o
                .user_id_header
                .clone()
                .unwrap_or(d.user_id_header)
                .to_ascii_lowercase(),
            admin_token_file: o.admin_token_file,
            master_key_file: o.master_key_file,
            ready_file: o.ready_file,
            replay_per_key_capacity: o.replay_per_key_capacity,
            log_format: o.log_format.unwrap_or(d.log_format),
            decision_log: o.decision_log.unwrap_or(d.decision_log),
            decision_log_rate: o.decision_log_rate.unwrap_or(d.decision_log_rate),
            nonce_store: o.nonce_store.unwrap_or(d.nonce_store),
            redis_url: o.redis_url,
            redis_prefix: o.redis_prefix.unwrap_or(d.redis_prefix),
            redis_timeout_ms: o.redis_timeout_ms.unwrap_or(d.redis_timeout_ms),
            etcd,
            tls: tls_files(o.tls_cert, o.tls_key, o.admin_client_ca)?,
            limits: Limits {
                check_max_in_flight: o.check_max_in_flight.unwrap_or(dl.check_max_in_flight),
                max_request_headers: o.max_request_headers.unwrap_or(dl.max_request_headers),
                max_request_header_bytes: o
                    .max_request_header_bytes
                    .unwrap_or(dl.max_request_header_bytes),
                max_request_body_bytes: o
                    .max_request_body_bytes
                    .unwrap_or(dl.max_request_body_bytes),
                check_max_message_bytes: o
                    .check_max_message_bytes
                    .unwrap_or(dl.check_max_message_bytes),
                check_timeout_ms: o.check_timeout_ms.unwrap_or(dl.check_timeout_ms),
                admin_timeout_secs: o.admin_timeout_secs.unwrap_or(dl.admin_timeout_secs),
                tls_handshake_timeout_secs: o
                    .tls_handshake_timeout_secs
                    .unwrap_or(dl.tls_handshake_timeout_secs),
                max_connections_check: o.max_connections_check.unwrap_or(dl.max_connections_check),
                max_connections_http: o.max_connections_http.unwrap_or(dl.max_connections_http),
                max_connections_admin: o.max_connections_admin.unwrap_or(dl.max_connections_admin),
                header_read_timeout_secs: o
                    .header_read_timeout_secs
                    .unwrap_or(dl.header_read_timeout_secs),
                idle_timeout_secs: o.idle_timeout_secs.unwrap_or(dl.idle_timeout_secs),
                max_concurrent_streams: o
                    .max_concurrent_streams
                    .unwrap_or(dl.max_concurrent_streams),
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.decision_log_rate == 0 {
            return bad(
                "decision_log_rate must be at least 1 (use decision_log = \"off\" for none)".into(),
            );
        }
        match (self.nonce_store, &self.redis_url) {
            (NonceStoreKind::Redis, None) => {
                return bad("nonce_store = redis needs redis_url (--redis-url)".into());
            }
            (NonceStoreKind::Memory | NonceStoreKind::Local, Some(_)) => {
                return bad(
                    "redis_url is set but nonce_store is not redis (--nonce-store redis)".into(),
                );
            }
            _ => {}
        }
        if self.redis_timeout_ms == 0 {
            return bad("redis_timeout_ms must be at least 1".into());
        }
        if self.replay_per_key_capacity == Some(0) {
            return bad("replay_per_key_capacity must be at least 1".into());
        }
        if self.default_stage.is_empty()
            || !self
                .default_stage
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad(format!(
                "default_stage '{}' must be letters, digits, '_' or '-'",
                self.default_stage
            ));
        }
        if !(1..=86_400).contains(&self.timestamp_window_secs) {
            return bad(format!(
                "timestamp_window_secs {} must be within 1..=86400",
                self.timestamp_window_secs
            ));
        }
        if self.replay_capacity == 0 {
            return bad("replay_capacity must be at least 1".into());
        }
        if http::HeaderName::from_bytes(self.extend_info_header.as_bytes()).is_err() {
            return bad(format!(
                "extend_info_header '{}' is not a valid header name",
                self.extend_info_header
            ));
        }
        self.validate_limits()?;
        let addrs = [self.check_addr, self.http_addr, self.admin_addr];
        if addrs
            .iter()
            .filter(|a| a.port() != 0)
            .any(|a| addrs.iter().filter(|b| *b == a).count() > 1)
        {
            return bad("check_addr, http_addr and admin_addr must differ: admin never shares a port with check traffic".into());
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, v) in [
            ("check_max_in_flight", l.check_max_in_flight as u64),
            ("max_request_headers", l.max_request_headers as u64),
            ("check_timeout_ms", l.check_timeout_ms),
            ("admin_timeout_secs", l.admin_timeout_secs),
            ("tls_handshake_timeout_secs", l.tls_handshake_timeout_secs),
            ("max_connections_check", l.max_connections_check as u64),
            ("max_connections_http", l.max_connections_http as u64),
            ("max_connections_admin", l.max_connections_admin as u64),
            ("header_read_timeout_secs", l.header_read_timeout_secs),
            ("idle_timeout_secs", l.idle_timeout_secs),
            (
                "max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
            ),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if l.max_request_header_bytes < 1024 {
            return bad(format!(
                "max_request_header_bytes {} must be at least 1024",
                l.max_request_header_bytes
            ));
        }
        // An oversized request must reach the limits and be denied with a code, not be
        // refused by the gRPC decoder with a transport error.
        let needed = l
            .max_request_body_bytes
            .saturating_add(l.max_request_header_bytes)
            .saturating_add(CHECK_MESSAGE_OVERHEAD);
        if l.check_max_message_bytes < needed {
            return bad(format!(
                "check_max_message_bytes {} must be at least max_request_body_bytes + max_request_header_bytes + {CHECK_MESSAGE_OVERHEAD} = {needed}",
                l.check_max_message_bytes
            ));
        }
        Ok(())
    }
}

/// Room in a CheckRequest for everything but the headers and body (attributes,
/// addresses, protobuf framing).
const CHECK_MESSAGE_OVERHEAD: usize = 64 * 1024;

/// The TLS file paths, checked for completeness.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            admin_client_ca: ca,
        })),
        (None, None) if ca.is_some() => Err(ConfigError::Invalid(
            "admin_client_ca needs tls_cert and tls_key: mutual TLS runs over TLS".into(),
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Invalid(
            "tls_cert is set but tls_key is not".into(),
        )),
        (None, Some(_)) => Err(ConfigError::Invalid(
            "tls_key is set but tls_cert is not".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        fs::write(&file, "check_addr = \"127.0.0.1:7001\"\nhttp_addr = \"127.0.0.1:7002\"\ndefault_stage = \"TEST\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            http_addr: Some("127.0.0.1:7999".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.check_addr.port(), 7001);
        assert_eq!(c.http_addr.port(), 7999);
        assert_eq!(c.admin_addr.port(), 50052);
        assert_eq!(c.default_stage, "TEST");

        // Every option has its file key, nested ones included, from the same struct.
        fs::write(
            &file,
            "idle_timeout_secs = 30\npath_mode = \"normalize\"\ntrust_client_stage = true\n",
        )
        .unwrap();
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.limits.idle_timeout_secs, 30);
        assert_eq!(c.path_mode, PathMode::Normalize);
        assert!(c.trust_client_stage);
        assert_eq!(c.http_addr.port(), 7999);

        fs::write(&file, "config = \"other.toml\"\n").unwrap();
        assert!(
            Config::resolve(&args).is_err(),
            "a file cannot name another file"
        );

        fs::write(&file, "chek_addr = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("chek_addr"), "{err}");
    }

    #[test]
    fn admin_must_not_share_the_check_port() {
        let args = ServeArgs {
            check_addr: Some("127.0.0.1:7000".parse().unwrap()),
            admin_addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn tls_and_limits_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        fs::write(
            &file,
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ncheck_max_in_flight = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            admin_client_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.admin_client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.limits.check_max_in_flight, 7);
        assert_eq!(c.limits.max_request_headers, 200);

        let err = |a: ServeArgs| Config::resolve(&a).unwrap_err().to_string();
        let e = err(ServeArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("tls_key"), "{e}");
        let e = err(ServeArgs {
            admin_client_ca: Some("ca.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("mutual TLS"), "{e}");
        let e = err(ServeArgs {
            check_max_in_flight: Some(0),
            ..Default::default()
        });
        assert!(e.contains("check_max_in_flight"), "{e}");
        // The gRPC message limit must leave room for the largest allowed request.
        let e = err(ServeArgs {
            max_request_body_bytes: Some(8 * 1024 * 1024),
            ..Default::default()
        });
        assert!(e.contains("check_max_message_bytes"), "{e}");
    }
}
