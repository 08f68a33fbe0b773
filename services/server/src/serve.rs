//! The one place where a mesh process accepts connections: bind, set
//! `TCP_NODELAY`, terminate mutual TLS (or, in development, plaintext),
//! serve tonic routes behind the shared layers, and shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower_layer::Stack;

use crate::layers::{DeadlineLayer, DeadlinePolicy, Drain, StatusLayer};
use crate::limits::MAX_LOCAL_ERROR_RESET_STREAMS;
use crate::{ConnectionLimits, ServerError, tls_incoming_with};

/// How often HTTP/2 pings keep idle connections alive.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// After the grace period, how long the ended calls' last frames get to
/// reach their clients before the connections are dropped: a client that
/// stopped reading must not hold the process up.
const FLUSH_AFTER_DRAIN: Duration = Duration::from_secs(1);
/// The default of every process's `shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A server task: resolves when the server stops.
pub type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Makes the span of one incoming request (trace context extraction lives
/// there, e.g. `yrd_telemetry::server_span`).
pub type RequestSpan = fn(&http::Request<()>) -> tracing::Span;

/// How [`serve`] runs a process's routes.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Makes each request's server span.
    pub trace: RequestSpan,
    /// Bounds the callers' deadlines.
    pub deadline: DeadlinePolicy,
    /// At shutdown, how long open calls may go on before they are ended
    /// with `UNAVAILABLE`.
    pub shutdown_grace: Duration,
    /// The connection edge: TLS handshakes and HTTP/2 streams per
    /// connection (the config's `[connections]`).
    pub connections: ConnectionLimits,
}

impl ServeOptions {
    /// Options with `yrd_telemetry::server_span`, the default grace period,
    /// the default connection limits and `deadline`.
    pub fn new(deadline: DeadlinePolicy) -> Self {
        Self {
            trace: yrd_telemetry::server_span,
            deadline,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            connections: ConnectionLimits::default(),
        }
    }

    /// These options with other connection limits.
    pub fn with_connections(self, connections: ConnectionLimits) -> Self {
        Self { connections, ..self }
    }

    /// These options with another grace period.
    pub fn with_shutdown_grace(self, shutdown_grace: Duration) -> Self {
        Self { shutdown_grace, ..self }
    }
}

/// A server running in the background.
#[derive(Debug)]
pub struct Serving {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    drain: Drain,
    grace: Duration,
    task: ServerTask,
}

impl Serving {
    /// Shuts down gracefully: stops accepting (the listening socket
    /// closes, open connections are told to send no new calls), lets open
    /// calls finish within the grace period, then ends those still open
    /// with `UNAVAILABLE` and waits briefly for their last frames to go
    /// out. Returns at most about a second after the grace period.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Ok(done) = tokio::time::timeout(self.grace, &mut self.task).await {
            return finished(done);
        }
        tracing::warn!(grace = ?self.grace, "open calls did not finish within the grace period; ending them");
        self.drain.start();
        if let Ok(done) = tokio::time::timeout(FLUSH_AFTER_DRAIN, &mut self.task).await {
            return finished(done);
        }
        tracing::warn!("connections still open after the drain (clients not reading); dropping them");
        self.task.abort();
        Ok(())
    }

    /// Stops at once, dropping open calls (as a crash would).
    pub fn abort(self) {
        self.task.abort();
    }
}

fn finished(done: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Task(e.to_string())),
        Err(e) => Err(ServerError::Task(e.to_string())),
    }
}

/// Binds `addr` and serves `routes` until shut down: over mutual TLS when
/// `tls` is given, in plaintext otherwise, behind the layers of
/// [`crate::layers`] (server span and status, drain, deadline).
///
/// Every connection may have at most `connections.max_concurrent_streams`
/// streams open (advertised in the server's SETTINGS; streams over it are
/// refused with `REFUSED_STREAM`), and one that makes the server reset
/// more than 1024 streams for its errors is closed (`ENHANCE_YOUR_CALM`).
/// A connection may have `connections.max_pending_accept_resets` streams
/// reset by the client before the server accepted them (rapid reset: one
/// more and it is closed with `ENHANCE_YOUR_CALM`). Header lists are
/// limited to hyper's 16 KiB and request messages to tonic's 4 MiB.
pub async fn serve(
    routes: Routes,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServeOptions,
) -> Result<Serving, ServerError> {
    let bind = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    let drain = Drain::new();
    // Outermost first: the status layer sees what the drain answers.
    let layers = Stack::new(
        DeadlineLayer::new(options.deadline),
        Stack::new(drain.layer(), StatusLayer::new(options.trace)),
    );
    let limits = options.connections;
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .max_concurrent_streams(Some(limits.max_concurrent_streams.max(1)))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_resets.max(1)))
        .layer(layers)
        .add_routes(routes);
    let task = match tls {
        Some(config) => {
            tokio::spawn(router.serve_with_incoming_shutdown(tls_incoming_with(listener, config, limits), signal))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal))
        }
    };
    Ok(Serving {
        addr: local,
        stop: Some(stop),
        drain,
        grace: options.shutdown_grace,
        task,
    })
}
