//! TLS on the listeners: rustls (ring provider), one acceptor type for all three.
//!
//! Owns: reading and checking the certificate, key and admin client CA at start (errors
//! name the file and the problem, so a bad deployment fails before serving), the
//! per-listener rustls configurations (ALPN `h2` for the gRPC listeners, `http/1.1`
//! for the HTTP listener, a required and verified client certificate on admin when a
//! CA is configured), and `TlsIncoming`, which accepts TCP connections and completes
//! handshakes concurrently, each bounded in time, so that a slow or silent client can
//! delay no one else.
//!
//! `TlsIncoming` is a `Stream` of TLS connections for tonic's
//! `serve_with_incoming_shutdown` (tonic's `Connected` impl for rustls streams keeps
//! `remote_addr()` and `peer_certs()` working) and, wrapped in `HttpListener`, an
//! `axum::serve::Listener` for the HTTP listener.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use crate::config::TlsFiles;

/// Handshakes in progress at once per listener. Past it, new connections are closed at
/// once: a connection flood costs a bounded number of tasks and timers.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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

/// TLS connections accepted on one listener, handshakes done.
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: io::Result<SocketAddr>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener`. `name` labels logs; `auth_failures`, when given,
    /// counts failed handshakes (on admin with mTLS, a missing or untrusted client
    /// certificate is a failed authentication).
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        auth_failures: Option<Arc<AtomicU64>>,
    ) -> Self {
        let local_addr = listener.local_addr();
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            name,
            TlsAcceptor::from(config),
            handshake_timeout,
            auth_failures,
            tx,
        ));
        Self {
            ready,
            local_addr,
            accept_task,
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        // The server stopped taking connections: stop accepting and free the port.
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: &'static str,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    auth_failures: Option<Arc<AtomicU64>>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(
                listener = name,
                %peer,
                "too many TLS handshakes in progress; connection closed"
            );
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), auth_failures.clone());
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    // Err: the server is shutting down; the connection just closes.
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => {
                    if let Some(f) = &failures {
                        f.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(listener = name, %peer, error = %e, "TLS handshake refused");
                    } else {
                        tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                    }
                }
                Err(_) => {
                    tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Errors that concern one connection only; the listener itself is fine.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready
            .poll_recv(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

/// The HTTP listener, plaintext or TLS: what the HTTP front door serves on
/// (`axum::serve(listener, router)`).
pub enum HttpListener {
    Plain(TcpListener),
    Tls(TlsIncoming),
}

impl HttpListener {
    /// TLS when `tls` is set.
    pub fn new(listener: TcpListener, tls: Option<&TlsSetup>) -> Self {
        match tls {
            None => HttpListener::Plain(listener),
            Some(t) => HttpListener::Tls(TlsIncoming::new(
                listener,
                "http",
                t.http.clone(),
                t.handshake_timeout,
                None,
            )),
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            HttpListener::Plain(l) => {
                let (io, addr) = axum::serve::Listener::accept(l).await;
                // As on the gRPC listeners: without it small answers wait for the
                // client's delayed ACK.
                let _ = io.set_nodelay(true);
                (HttpIo::Plain(io), addr)
            }
            HttpListener::Tls(t) => match t.ready.recv().await {
                Some((io, addr)) => (HttpIo::Tls(Box::new(io)), addr),
                // The accept task only ends when this receiver is gone (or the
                // runtime shuts down): nothing more will come.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match self {
            HttpListener::Plain(l) => l.local_addr(),
            HttpListener::Tls(t) => match &t.local_addr {
                Ok(a) => Ok(*a),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            },
        }
    }
}

/// One HTTP connection, plaintext or TLS.
pub enum HttpIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for HttpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            HttpIo::Plain(s) => s.is_write_vectored(),
            HttpIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let server =
            tokio::spawn(
                async move { axum::serve(HttpListener::new(tcp, Some(&setup)), router).await },
            );

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
