//! The client side of the admin listener, shared by `keygate backup` and the admin
//! verbs (`keygate app ...`): the connection options, where the token comes from, and
//! an authenticated `AdminClient`.
//!
//! One copy on purpose: every admin client finds its token and trusts a TLS listener
//! the same way, so a fix here reaches all of them.

use std::path::PathBuf;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::pb::admin::admin_client::AdminClient;

/// How to reach the admin listener. `global`: the options may also follow a verb
/// (`keygate app list --admin-addr ...`).
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// The admin listener (`host:port`).
    #[arg(
        long,
        env = "KEYGATE_ADMIN_ADDR",
        default_value = "127.0.0.1:50052",
        global = true
    )]
    pub admin_addr: String,
    /// File holding the admin token (else `KEYGATE_ADMIN_TOKEN`; a fresh data dir
    /// keeps it in `keygate-data/admin.token`).
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN_FILE", global = true)]
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA bundle to verify the admin listener's TLS certificate (TLS when set).
    #[arg(long, global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for an admin listener with `--admin-client-ca`. A
    /// principal created with this certificate's subject needs no token.
    #[arg(long, global = true, requires_all = ["client_key", "tls_ca"])]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// Why no authenticated client could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The caller's configuration is incomplete or wrong (no token, a bad token).
    #[error("{0}")]
    Usage(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The listener could not be reached (refused, TLS failure, bad address).
    #[error("cannot connect to the admin API at {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// An admin client that sends `authorization: Bearer <token>` on every call (or
/// nothing, when its client certificate names the principal).
pub type Admin = AdminClient<InterceptedService<Channel, BearerAuth>>;

/// Adds the bearer token, if any, to every request.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl AdminConn {
    /// The token: `KEYGATE_ADMIN_TOKEN` wins over the file, as `keygate serve` reads it.
    pub fn token(&self) -> Result<Zeroizing<String>, ConnError> {
        if let Some(t) = std::env::var("KEYGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(Zeroizing::new(t.trim().to_owned()));
        }
        let path = self.admin_token_file.as_ref().ok_or_else(|| {
            ConnError::Usage(
                "no admin token: set KEYGATE_ADMIN_TOKEN or --admin-token-file (e.g. keygate-data/admin.token)".into(),
            )
        })?;
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| ConnError::Io {
                    what: "cannot read admin token file",
                    path: path.clone(),
                    source,
                })?,
            );
        Ok(Zeroizing::new(text.trim().to_owned()))
    }

    /// Reads the token, then connects (the token first: a missing token is the
    /// caller's mistake whether or not the listener is up). With a client certificate
    /// and no token configured, calls carry none: the certificate names the principal.
    pub async fn connect(&self) -> Result<Admin, ConnError> {
        let token = match self.token() {
            Ok(t) => Some(t),
            Err(ConnError::Usage(_))
                if self.client_cert.is_some() && self.admin_token_file.is_none() =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let bearer = token
            .map(|t| format!("Bearer {}", t.as_str()).parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| ConnError::Usage("the admin token is not valid header text".into()))?;
        let connect = |message: String| ConnError::Connect {
            addr: self.admin_addr.clone(),
            message,
        };
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", self.admin_addr))
                .map_err(|e| connect(e.to_string()))?
                .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).map_err(|source| ConnError::Io {
                what: "cannot read TLS CA",
                path: ca.clone(),
                source,
            })?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                let read = |what: &'static str, path: &PathBuf| {
                    std::fs::read(path).map_err(|source| ConnError::Io {
                        what,
                        path: path.clone(),
                        source,
                    })
                };
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read("cannot read client certificate", cert)?,
                    read("cannot read client key", key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| connect(e.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect(error_chain(&e)))?;
        Ok(AdminClient::with_interceptor(channel, BearerAuth(bearer)))
    }
}

/// `e` and its sources on one line: tonic's "transport error" alone says nothing.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `CODE: message` on one line (a multi-line message would break `2>&1 | grep`).
pub fn status_line(s: &tonic::Status) -> String {
    let msg: String = s
        .message()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{}: {}", crate::pb::code_name(s.code()), msg.trim())
}
