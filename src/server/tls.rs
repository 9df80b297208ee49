//! TLS on the listeners: rustls (ring provider), one configuration per listener.
//!
//! Owns: reading and checking the certificate, key and admin client CA at start (errors
//! name the file and the problem, so a bad deployment fails before serving), and the
//! per-listener rustls configurations: ALPN `h2` for the gRPC listeners, `http/1.1`
//! for the HTTP listener, a required and verified client certificate on admin when a
//! CA is configured. Accepting and handshaking is `conn`'s.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path}: {detail}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("TLS certificate {cert} and key {key} do not go together: {detail}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("admin client CA {path}: {detail}")]
    ClientCa { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls configuration of each listener, built once at start.
#[derive(Clone)]
pub struct TlsSetup {
    pub check: Arc<ServerConfig>,
    pub http: Arc<ServerConfig>,
    pub admin: Arc<ServerConfig>,
    /// Whether the admin listener requires a client certificate.
    pub admin_mtls: bool,
    pub handshake_timeout: Duration,
}

impl TlsSetup {
    /// Reads and checks the files; every failure names the file at fault.
    pub fn load(files: &TlsFiles, handshake_timeout: Duration) -> Result<Self, TlsError> {
        let certs = read_certs(&files.cert, "TLS certificate")?;
        let key = read_key(&files.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let server = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
                      alpn: &[&[u8]]|
         -> Result<Arc<ServerConfig>, TlsError> {
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?;
            let builder = match verifier {
                Some(v) => builder.with_client_cert_verifier(v),
                None => builder.with_no_client_auth(),
            };
            let mut cfg = builder
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| TlsError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    detail: e.to_string(),
                })?;
            cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(cfg))
        };

        let admin_verifier = match &files.admin_client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs(path, "admin client CA")? {
                    roots.add(ca).map_err(|e| TlsError::ClientCa {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                }
                // Required, not optional: a client without a certificate from this CA
                // fails the handshake and never reaches the token check.
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                Some(v)
            }
        };
        let admin_mtls = admin_verifier.is_some();
        Ok(Self {
            check: server(None, &[b"h2"])?,
            http: server(None, &[b"http/1.1"])?,
            admin: server(admin_verifier, &[b"h2"])?,
            admin_mtls,
            handshake_timeout,
        })
    }
}

/// Which listener a TLS configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Check,
    Http,
    Admin,
}

impl TlsSetup {
    /// What `conn::Incoming` needs to run TLS on `listener`. `auth_failures` counts
    /// refused handshakes as failed logins; on admin it is used only with mTLS.
    pub fn accept(
        &self,
        listener: Listener,
        auth_failures: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> super::conn::TlsAccept {
        let (config, failures) = match listener {
            Listener::Check => (&self.check, None),
            Listener::Http => (&self.http, None),
            Listener::Admin => (&self.admin, auth_failures.filter(|_| self.admin_mtls)),
        };
        super::conn::TlsAccept {
            config: config.clone(),
            handshake_timeout: self.handshake_timeout,
            auth_failures: failures,
        }
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            detail: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            detail: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = zeroize::Zeroizing::new(read_file(path, "TLS key")?);
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "TLS key",
        path: path.to_owned(),
        detail: format!("no PKCS#8, PKCS#1 or SEC1 private key found ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// (dir holding ca.pem, cert.pem, key.pem; the CA certificate in DER).
    fn files() -> (tempfile::TempDir, TlsFiles, CertificateDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            admin_client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (dir, files, ca.der().clone())
    }

    async fn get(addr: SocketAddr, ca: CertificateDer<'static>) -> io::Result<String> {
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn http_listener_serves_https_and_refuses_plaintext() {
        let (_dir, files, ca) = files();
        let setup = TlsSetup::load(&files, Duration::from_secs(5)).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let incoming = super::super::conn::Incoming::new(
            tcp,
            "http",
            Some(setup.accept(Listener::Http, None)),
            super::super::conn::ConnPolicy {
                max_connections: 16,
                first_read_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
            },
            Default::default(),
        );
        let server = tokio::spawn(super::super::http::serve_router(
            incoming,
            router,
            Duration::from_secs(5),
            std::future::pending(),
        ));

        let resp = get(addr, ca).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("ok\n"), "{resp}");

        // Plaintext HTTP to the TLS listener gets no HTTP answer.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = plain.read_to_end(&mut out).await;
        assert!(!out.starts_with(b"HTTP/1.1 200"), "{out:?}");
        server.abort();
    }

    #[test]
    fn load_names_the_file_at_fault() {
        let (dir, files, _) = files();
        let other = dir.path().join("other.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let t = Duration::from_secs(1);
        let mismatched = TlsFiles {
            key: other.clone(),
            ..files.clone()
        };
        let e = TlsSetup::load(&mismatched, t).err().unwrap();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let swapped = TlsFiles {
            cert: other,
            ..files.clone()
        };
        let e = TlsSetup::load(&swapped, t).err().unwrap().to_string();
        assert!(e.contains("other.pem") && e.contains("CERTIFICATE"), "{e}");
        let ca_missing = TlsFiles {
            admin_client_ca: Some(dir.path().join("nope.pem")),
            ..files.clone()
        };
        let e = TlsSetup::load(&ca_missing, t).err().unwrap().to_string();
        assert!(
            e.contains("admin client CA") && e.contains("nope.pem"),
            "{e}"
        );
        assert!(TlsSetup::load(&files, t).is_ok());
    }
}
