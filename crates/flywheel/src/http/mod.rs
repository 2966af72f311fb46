//! The HTTP server: hyper's HTTP/1.1 and HTTP/2 on every accepted connection, over TLS when
//! configured ([`tls`]), bounded so that no client can hold the process's file descriptors or
//! memory with connections it does not use:
//! - caps on open connections in total and per client address (an IPv6 client counts by its
//!   /64; a trusted proxy ([`proxy`]) only by the total); a plain connection over a cap is
//!   answered at once (`429`/`503 too_many_connections`, in the API's error shape) and closed,
//!   a TLS one closed;
//! - a header-read timeout (a request head must be complete within it of its first byte) and
//!   an idle timeout (a connection with no request in flight — new, or kept alive after its
//!   last response — is closed after it). A request in flight is never cut by either: a
//!   streamed response that waits or sends for minutes keeps its connection;
//! - every request carries its client's address ([`gateway::ClientAddr`]): the peer's, or,
//!   from a trusted proxy, the one its `X-Forwarded-For` names;
//! - graceful shutdown: [`Server::close`] stops accepting and closes idle connections; the
//!   others close once their response has ended ([`Server::closed`]); [`Server::abort`] drops
//!   what is left.

mod activity;
mod limits;
pub mod proxy;
pub mod tls;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use activity::{Activity, Busy, Watched};
pub use limits::{raise_open_files_limit, ConnectionLimits};
use limits::{Refusal, Slot, Slots};
use proxy::TrustedProxies;
use tls::Tls;

/// Open connections (a gauge).
const CONNECTIONS: &str = "flywheel_http_connections";
/// Connections refused at accept, by `reason` (`per_address`, `total`).
const REFUSED: &str = "flywheel_http_connections_refused_total";
/// Connections closed by a timeout, by `reason` (`idle`, `header_read`).
const TIMED_OUT: &str = "flywheel_http_connections_timed_out_total";
/// TLS handshakes that failed (a client that does not trust the certificate, not TLS at all).
const HANDSHAKE_FAILED: &str = "flywheel_http_tls_handshakes_failed_total";

/// How connections are taken: under TLS or not, and whose forwarding headers are believed.
#[derive(Clone, Default)]
pub struct Transport {
    pub tls: Option<Arc<Tls>>,
    pub proxies: Arc<TrustedProxies>,
}

/// Connections the kernel completes and queues before the accept loop takes them. std's and
/// tokio's default (128) overflows under a burst of connects on a busy machine, and every
/// dropped SYN costs its client a one-second retransmit; the kernel caps this at somaxconn.
const BACKLOG: u32 = 4096;

/// Listen on `addr` with a backlog that absorbs bursts.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A running server: the accept loop and its connections.
pub struct Server {
    tasks: TaskTracker,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Server {
    /// Accept connections on `listener` and serve `app` on them, within `limits`.
    pub fn start(
        listener: TcpListener,
        app: Router,
        limits: ConnectionLimits,
        transport: Transport,
    ) -> Self {
        let server = Self {
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
        };
        let accept = Acceptor {
            listener,
            app,
            slots: Arc::new(Slots::new(&limits)),
            limits,
            transport,
            tasks: server.tasks.clone(),
            closing: server.closing.clone(),
            abort: server.abort.clone(),
        };
        server.tasks.spawn(accept.run());
        server
    }

    /// Stop accepting (the listening socket is closed); idle connections close now, busy
    /// ones once their response has ended.
    pub fn close(&self) {
        self.closing.cancel();
        self.tasks.close();
    }

    /// Resolves once [`close`](Self::close) was called and every connection has closed.
    pub async fn closed(&self) {
        self.tasks.wait().await;
    }

    /// Drop every connection still open; their responses end where they are.
    pub fn abort(&self) {
        self.close();
        self.abort.cancel();
    }
}

struct Acceptor {
    listener: TcpListener,
    app: Router,
    slots: Arc<Slots>,
    limits: ConnectionLimits,
    transport: Transport,
    tasks: TaskTracker,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Acceptor {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                () = self.closing.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            };
            // A proxy carries many clients: only the total cap applies to it.
            let per_address = !self.transport.proxies.contains(peer.ip());
            match self.slots.acquire(peer.ip(), per_address) {
                Ok(slot) => {
                    let conn = Connection {
                        app: self.app.clone(),
                        limits: self.limits,
                        transport: self.transport.clone(),
                        peer,
                        closing: self.closing.clone(),
                        abort: self.abort.clone(),
                    };
                    self.tasks.spawn(conn.serve(stream, slot));
                }
                Err(refusal) => refuse(&stream, &refusal, self.transport.tls.is_none()),
            }
        }
        // Dropping the listener closes the socket: new connections are refused by the kernel.
    }
}

/// Accept errors are per connection (the client went away) or a shortage of descriptors or
/// memory; back off briefly on the latter instead of spinning.
async fn accept_failed(e: &io::Error) {
    let transient = matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    );
    if !transient {
        tracing::warn!(error = %e, "accepting a connection failed; pausing 50 ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Answer a connection over a cap with its error and close it. Best effort and never
/// waiting: the socket's send buffer is empty, so the short answer fits in it. Under TLS
/// there is no answer without a handshake, which a refused connection is not worth: it is
/// closed.
fn refuse(stream: &TcpStream, refusal: &Refusal, answer: bool) {
    metrics::counter!(REFUSED, "reason" => refusal.reason()).increment(1);
    tracing::debug!(client = %refusal.client(), reason = refusal.reason(), "connection refused");
    if answer {
        let _ = stream.try_write(refusal.response().as_bytes());
    }
}

/// One accepted connection and what it needs.
struct Connection {
    app: Router,
    limits: ConnectionLimits,
    transport: Transport,
    peer: SocketAddr,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream, slot: Slot) {
        let _slot = slot;
        metrics::gauge!(CONNECTIONS).increment(1.0);
        let _open = scopeguard(|| metrics::gauge!(CONNECTIONS).decrement(1.0));
        // Token streams are many small writes: do not hold them back for acknowledgements.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        // Below TLS, so that a handshake's bytes count as reading a head (its timeout).
        let watched = Watched::new(stream, activity.clone());
        let Some(tls) = self.transport.tls.clone() else {
            return self.serve_http(TokioIo::new(watched), activity).await;
        };
        let handshake = tls.acceptor().accept(watched);
        let stream = tokio::select! {
            accepted = handshake => accepted,
            () = self.closing.cancelled() => return,
            () = self.abort.cancelled() => return,
            reason = activity.expired(&self.limits) => {
                metrics::counter!(TIMED_OUT, "reason" => reason).increment(1);
                return;
            }
        };
        match stream {
            Ok(stream) => self.serve_http(TokioIo::new(stream), activity).await,
            Err(e) => {
                metrics::counter!(HANDSHAKE_FAILED).increment(1);
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            }
        }
    }

    /// HTTP/1.1 or HTTP/2 (by ALPN under TLS, by the client's preface without) on `io`.
    async fn serve_http<I>(self, io: TokioIo<I>, activity: Arc<Activity>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app;
        let busy_on = activity.clone();
        let peer = self.peer.ip();
        let proxies = self.transport.proxies.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Busy from the moment the head is parsed until the response body is dropped.
            let busy = Busy::begin(&busy_on);
            let client = proxies.client(peer, request.headers());
            request.extensions_mut().insert(gateway::ClientAddr(client));
            let response = app.clone().call(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| activity::Guarded::new(body, busy)))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // hyper starts this clock when it starts waiting for a head (so it spans the idle
            // time too); ours are finer, this is the backstop.
            .header_read_timeout(self.limits.idle_timeout + self.limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = self.closing.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = self.abort.cancelled() => return,
                reason = activity.expired(&self.limits) => {
                    metrics::counter!(TIMED_OUT, "reason" => reason).increment(1);
                    tracing::debug!(reason, "closing a connection with no request in flight");
                    return;
                }
            }
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
