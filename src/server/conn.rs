//! Connections on every listener: admission under a cap, the TLS handshake, and
//! closing a connection that stops making progress.
//!
//! Owns: `Incoming`, the one accept loop all three listeners use (plaintext or TLS),
//! and `Conn`, one admitted connection.
//!
//! - **Cap.** A listener holds at most `max_connections` connections at once, TLS
//!   handshakes included. Past it a new connection is closed at once, counted, and
//!   logged (at most every few seconds), so a flood on one listener costs a bounded
//!   number of file descriptors and cannot starve the others, admin above all. The
//!   caps are fitted under the process's open-file limit at start (`fit_to_fd_limit`).
//! - **Progress.** A `Conn` that has read nothing `first_read_timeout` after it was
//!   admitted (after its handshake), or that later makes no progress at all (nothing
//!   read, nothing written) for `idle_timeout`, fails its next I/O with `TimedOut`;
//!   hyper then closes it. A client that connects and stays silent, trickles nothing,
//!   or stops reading its answers holds its slot for a bounded time. HTTP/1 header
//!   reads have their own, tighter deadline in hyper; on the HTTP/2 listeners keygate
//!   pings idle peers (see `server::run`), so a healthy idle peer always makes progress.
//! - **Handshakes** run concurrently, each bounded by the handshake timeout, so a slow
//!   or silent TLS client delays no one else.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use crate::telemetry::ConnCounters;

/// Admitted connections waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Pause after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "cap reached" warning per listener per this period.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept out of the connection caps: the store, logs, the listeners
/// themselves, sled's files and threads.
pub const FD_RESERVE: u64 = 128;

/// How long a connection may stay silent, and how many a listener admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnPolicy {
    pub max_connections: usize,
    pub first_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// TLS on one listener.
#[derive(Clone)]
pub struct TlsAccept {
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    /// When set, a refused handshake counts as a failed login (admin with mTLS: a
    /// missing or untrusted client certificate) and is logged at warn.
    pub auth_failures: Option<Arc<AtomicU64>>,
}

/// Admitted connections of one listener, handshakes done: a `Stream` for tonic's
/// `serve_with_incoming_shutdown`, and `accept` for the HTTP listener's own loop.
pub struct Incoming {
    ready: mpsc::Receiver<Conn>,
    local_addr: Option<SocketAddr>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Incoming {
    /// Starts accepting on `listener`; `name` labels logs.
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        tls: Option<TlsAccept>,
        policy: ConnPolicy,
        counters: Arc<ConnCounters>,
    ) -> Self {
        let local_addr = listener.local_addr().ok();
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_task = tokio::spawn(
            Acceptor {
                listener,
                name,
                tls,
                policy,
                counters,
                slots: Arc::new(Semaphore::new(policy.max_connections)),
                tx,
            }
            .run(),
        );
        Self {
            ready,
            local_addr,
            accept_task,
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The next admitted connection; `None` once the accept loop has ended.
    pub async fn accept(&mut self) -> Option<Conn> {
        self.ready.recv().await
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // The server stopped taking connections: stop accepting and free the port.
        self.accept_task.abort();
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|next| next.map(Ok))
    }
}

struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    tls: Option<TlsAccept>,
    policy: ConnPolicy,
    counters: Arc<ConnCounters>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Conn>,
}

impl Acceptor {
    async fn run(self) {
        let mut refused_unlogged = 0u64;
        let mut last_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = self.tx.closed() => return,
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                drop(tcp);
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                refused_unlogged += 1;
                if last_warning.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                    tracing::warn!(
                        listener = self.name,
                        max_connections = self.policy.max_connections,
                        refused = refused_unlogged,
                        "connection cap reached: new connections are closed at once \
                         (raise --max-connections-{} if this is real load)",
                        self.name
                    );
                    refused_unlogged = 0;
                    last_warning = Some(Instant::now());
                }
                continue;
            };
            // Without it a gRPC answer's trailing small writes wait for the client's
            // delayed ACK (about 40 ms per call).
            let _ = tcp.set_nodelay(true);
            let slot = Slot::new(permit, self.counters.clone());
            let local = tcp.local_addr().ok();
            match &self.tls {
                None => {
                    let conn = Conn::new(Io::Plain(tcp), local, peer, self.policy, slot);
                    if self.tx.send(conn).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (tls, tx, name, policy) =
                        (tls.clone(), self.tx.clone(), self.name, self.policy);
                    tokio::spawn(async move {
                        let acceptor = TlsAcceptor::from(tls.config.clone());
                        match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                // Only an mTLS listener has peer certificates, and
                                // rustls verified them before the handshake ended.
                                let subject = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| crate::subject::of_certificate(c.as_ref()))
                                    .map(Arc::<str>::from);
                                let mut conn =
                                    Conn::new(Io::Tls(Box::new(stream)), local, peer, policy, slot);
                                conn.client_subject = subject;
                                // Err: the server is shutting down; the connection closes.
                                let _ = tx.send(conn).await;
                            }
                            Ok(Err(e)) => match &tls.auth_failures {
                                Some(f) => {
                                    f.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(listener = name, %peer, error = %e, "TLS handshake refused");
                                }
                                None => {
                                    tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed")
                                }
                            },
                            Err(_) => {
                                tracing::debug!(listener = name, %peer, "TLS handshake timed out")
                            }
                        }
                    });
                }
            }
        }
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

/// A connection's place under its listener's cap; counted while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<ConnCounters>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, counters: Arc<ConnCounters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            counters,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The stream under a connection, plaintext or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What `Conn` needs of the stream under it.
trait Duplex: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Duplex for T {}

impl Io {
    fn pinned(&mut self) -> Pin<&mut dyn Duplex> {
        match self {
            Io::Plain(s) => Pin::new(s),
            Io::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

/// When a connection last made progress, and the timer that closes it otherwise.
///
/// Progress only stamps an instant; the timer is re-armed lazily when it fires, so the
/// hot path pays no timer-wheel update per read or write.
struct Progress {
    timer: Pin<Box<Sleep>>,
    last: Instant,
    /// `first_read_timeout` until the first byte is read, then `idle_timeout`.
    window: Duration,
    idle: Duration,
    read_any: bool,
    expired: bool,
}

impl Progress {
    fn new(policy: ConnPolicy) -> Self {
        let now = Instant::now();
        Self {
            timer: Box::pin(tokio::time::sleep_until(now + policy.first_read_timeout)),
            last: now,
            window: policy.first_read_timeout,
            idle: policy.idle_timeout,
            read_any: false,
            expired: false,
        }
    }

    fn read(&mut self) {
        self.last = Instant::now();
        if !self.read_any {
            self.read_any = true;
            self.window = self.idle;
        }
    }

    fn wrote(&mut self) {
        // Before the client has said anything, the server's own writes (an HTTP/2
        // SETTINGS frame) do not keep the connection alive.
        if self.read_any {
            self.last = Instant::now();
        }
    }

    /// Called while the I/O under it is pending: an error once the window has passed
    /// without progress (the caller's waker is registered with the timer otherwise).
    fn poll_expired(&mut self, cx: &mut Context<'_>, counters: &ConnCounters) -> Poll<io::Error> {
        loop {
            if !self.expired {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = self.last + self.window;
                if Instant::now() < due {
                    self.timer.as_mut().reset(due);
                    continue;
                }
                self.expired = true;
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            let what = if self.read_any {
                "no progress within the idle timeout"
            } else {
                "nothing received within the first-read timeout"
            };
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
        }
    }
}

/// One admitted connection: the stream, its slot under the cap, and its progress.
pub struct Conn {
    io: Io,
    local: Option<SocketAddr>,
    remote: SocketAddr,
    /// The canonical subject of the client's verified certificate (mTLS only).
    client_subject: Option<Arc<str>>,
    progress: Progress,
    slot: Slot,
}

/// What a request knows of its connection (tonic puts it in the request extensions).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    /// The canonical subject of the client's verified certificate, on an mTLS listener.
    pub client_subject: Option<Arc<str>>,
}

impl Conn {
    fn new(
        io: Io,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        policy: ConnPolicy,
        slot: Slot,
    ) -> Self {
        Self {
            io,
            local,
            remote,
            client_subject: None,
            progress: Progress::new(policy),
            slot,
        }
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// `r`, or a `TimedOut` error when `r` is pending on a connection that has stalled.
    fn unless_stalled<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.progress.poll_expired(cx, &self.slot.counters).map(Err),
            other => other,
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerInfo {
            remote_addr: self.remote,
            local_addr: self.local,
            client_subject: self.client_subject.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match this.io.pinned().poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.progress.read();
                Poll::Ready(Ok(()))
            }
            r => this.unless_stalled(r, cx),
        }
    }
}

impl Conn {
    fn written(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.progress.wrote();
                Poll::Ready(Ok(n))
            }
            r => self.unless_stalled(r, cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.io.pinned().poll_write(cx, buf);
        this.written(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.io.pinned().poll_write_vectored(cx, bufs);
        this.written(r, cx)
    }

    /// Reported as not vectored, on purpose. With vectored I/O, h2 "chains" every DATA
    /// payload over 256 bytes instead of copying it into its write buffer, and must
    /// write the chained frame before it can buffer the next one: a Check answer
    /// (HEADERS, ~500 bytes of DATA, trailers) then took two `writev`s, and answers
    /// ready at the same time could not share one. Without it h2 copies payloads up
    /// to 1 KiB and writes its buffer once per flush (hyper's HTTP/1 likewise
    /// flattens head and body into one write). Measured at a fixed 20,000 Check/s:
    /// 1.94 `writev` per Check before, against 0.94 for the no-op server.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = this.io.pinned().poll_flush(cx);
        this.unless_stalled(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = this.io.pinned().poll_shutdown(cx);
        this.unless_stalled(r, cx)
    }
}

/// The connection caps `[check, http, admin]` fitted under an open-file limit: when
/// they do not fit with `FD_RESERVE` to spare, check and http shrink in proportion and
/// admin keeps its cap (or what is left), so a flood on a front door can still not
/// take the descriptors the admin listener needs. `None`: no limit known.
pub fn fit(caps: [usize; 3], fd_limit: Option<u64>) -> [usize; 3] {
    let Some(limit) = fd_limit else { return caps };
    let room = limit.saturating_sub(FD_RESERVE).max(3) as usize;
    let [check, http, admin] = caps;
    if check + http + admin <= room {
        return caps;
    }
    let admin = admin.min(room / 4).max(1);
    let left = room - admin;
    let front = (check + http).max(1);
    let check_fit = (check * left / front).max(1);
    let http_fit = (left - check_fit.min(left)).max(1).min(http);
    [check_fit.min(check), http_fit, admin]
}

/// Raises the soft open-file limit to the hard one and returns the limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (now.current, now.maximum)
        && cur < max
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        )
        .is_ok()
    {
        return Some(max);
    }
    now.current
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn policy(max: usize, first_ms: u64, idle_ms: u64) -> ConnPolicy {
        ConnPolicy {
            max_connections: max,
            first_read_timeout: Duration::from_millis(first_ms),
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    async fn incoming(p: ConnPolicy) -> (Incoming, SocketAddr, Arc<ConnCounters>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counters = Arc::new(ConnCounters::default());
        (
            Incoming::new(l, "test", None, p, counters.clone()),
            addr,
            counters,
        )
    }

    #[tokio::test]
    async fn past_the_cap_connections_are_closed_and_counted() {
        let (mut inc, addr, counters) = incoming(policy(2, 5_000, 5_000)).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let held = [inc.accept().await.unwrap(), inc.accept().await.unwrap()];
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        // Closed by the server: EOF or reset, never data.
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
        assert_eq!(counters.open.load(Ordering::Relaxed), 2);
        drop(held);
        assert_eq!(counters.open.load(Ordering::Relaxed), 0);
        // A freed slot admits the next connection.
        let _d = TcpStream::connect(addr).await.unwrap();
        assert!(inc.accept().await.is_some());
    }

    #[tokio::test]
    async fn a_silent_connection_times_out_and_a_talking_one_does_not() {
        let (mut inc, addr, counters) = incoming(policy(8, 200, 400)).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = inc.accept().await.unwrap();
        let mut buf = [0u8; 8];
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counters.timed_out.load(Ordering::Relaxed), 1);

        // A client that keeps talking more often than the idle timeout stays open
        // well past it.
        let mut talker = TcpStream::connect(addr).await.unwrap();
        let mut conn = inc.accept().await.unwrap();
        let started = Instant::now();
        let mut got = 0;
        while started.elapsed() < Duration::from_millis(1_200) {
            talker.write_all(b"x").await.unwrap();
            got += conn.read(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(got >= 5, "{got}");
        // Then silence: closed after the idle timeout.
        let e = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn caps_fit_under_the_fd_limit_and_keep_admin() {
        assert_eq!(fit([1024, 1024, 64], None), [1024, 1024, 64]);
        assert_eq!(fit([1024, 1024, 64], Some(1 << 20)), [1024, 1024, 64]);
        let f = fit([1024, 1024, 64], Some(1024));
        assert!(f.iter().sum::<usize>() as u64 <= 1024 - FD_RESERVE, "{f:?}");
        assert_eq!(f[2], 64, "{f:?}");
        assert!(f[0] >= 400 && f[1] >= 400, "{f:?}");
        let tiny = fit([1024, 1024, 64], Some(64));
        assert!(tiny.iter().all(|&c| c >= 1), "{tiny:?}");
    }
}
