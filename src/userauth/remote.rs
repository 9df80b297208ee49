//! A JWKS served over HTTPS (an identity provider's `jwks_uri`): fetching it and
//! keeping it fresh.
//!
//! Owns: the one GET (HTTP/1.1 over rustls, the system's roots or a given CA bundle,
//! a 10 s deadline, at most 1 MiB, no redirects: a JWKS is a key set, not a page to
//! browse to), and the refresh loop: every refresh interval, sooner when a token names
//! a key the set lacks (a rotation the provider published before signing with it),
//! but never more than once per `MIN_GAP` however many such tokens arrive, so forged
//! `kid`s cannot turn keygate into a flood of fetches. A failed fetch keeps the last
//! good keys and is retried with a backoff. Nothing here runs on the check path: it
//! only nudges the loop.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BYTES: usize = 1 << 20;
/// The shortest time between two fetches, whatever asks for them.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// Where the key set is and how to reach it.
pub struct Remote {
    uri: http::Uri,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub(super) nudge: Notify,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("uri", &self.uri).finish()
    }
}

/// Whether `host` is this machine, the only place plain HTTP may fetch keys from.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Remote {
    /// Checks the URL and builds the TLS client: trust `ca_file`'s certificates if
    /// given, else the system's. Errors name what is wrong.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("user JWKS URL {url:?}: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("user JWKS URL {url:?} names no host"))?
            .to_owned();
        // Credentials in a URL end up in logs and in the Host header.
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("the user JWKS URL must not carry credentials (user:password@)".into());
        }
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if is_loopback(&host) => false,
            Some("http") => {
                return Err(format!(
                    "user JWKS URL {url:?}: plain http only to this machine (keys fetched \
                     in the clear could be swapped); use https"
                ));
            }
            _ => return Err(format!("user JWKS URL {url:?}: https:// expected")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let roots = roots(ca_file)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| format!("user JWKS URL {url:?}: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(Self {
            uri,
            host,
            port,
            tls,
            nudge: Notify::new(),
        })
    }

    /// One fetch of the key set.
    pub async fn fetch(&self) -> Result<JwkSet, String> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.get())
            .await
            .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))??;
        serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))
    }

    async fn get(&self) -> Result<Bytes, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.request(tls).await
            }
            None => self.request(tcp).await,
        }
    }

    async fn request<IO>(&self, io: IO) -> Result<Bytes, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let conn = tokio::spawn(conn);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let authority = self
            .uri
            .authority()
            .map_or(self.host.clone(), |a| a.as_str().to_owned());
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "keygate")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            conn.abort();
            return Err(format!("HTTP status {} (200 expected)", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body: {e} (at most {MAX_BYTES} bytes)"))?
            .to_bytes();
        conn.abort();
        Ok(body)
    }
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no CA certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found for the user JWKS URL: give --user-jwks-ca-file"
                        .into(),
                );
            }
        }
    }
    Ok(roots)
}

/// Fetches `auth`'s key set once (start-up waits for it, so a reachable provider's
/// keys are there before the first request), then keeps it fresh in the background.
pub async fn start(auth: &Arc<super::UserAuth>, every: Duration) {
    let Some(remote) = auth.remote() else { return };
    let mut ok = auth.fetch_remote(remote).await;
    let weak: Weak<super::UserAuth> = Arc::downgrade(auth);
    tokio::spawn(async move {
        let mut backoff = MIN_GAP;
        loop {
            let wait = if ok { every } else { backoff };
            tokio::time::sleep(MIN_GAP).await;
            let Some(auth) = weak.upgrade() else { return };
            let Some(remote) = auth.remote() else { return };
            tokio::select! {
                () = tokio::time::sleep(wait.saturating_sub(MIN_GAP)) => {}
                () = remote.nudge.notified() => {}
            }
            ok = auth.fetch_remote(remote).await;
            backoff = if ok {
                MIN_GAP
            } else {
                (backoff * 2).min(every.max(MIN_GAP))
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        // A CA file of its own, so the test does not depend on the machine's roots.
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        assert!(
            Remote::new(
                "https://login.example.com/.well-known/jwks.json",
                Some(&ca_file)
            )
            .is_ok()
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = Remote::new("https://login.example.com/jwks", Some(&empty)).unwrap_err();
        assert!(e.contains("no CA certificate"), "{e}");
        for ok in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(Remote::new(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com/jwks",
            "ftp://x/jwks",
            "/jwks",
            "https:///jwks",
            "https://user:secret@login.example.com/jwks",
        ] {
            assert!(Remote::new(bad, None).is_err(), "{bad}");
        }
    }
}
