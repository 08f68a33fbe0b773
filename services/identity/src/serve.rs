//! The one place where a mesh process accepts connections: bind, set
//! `TCP_NODELAY`, terminate mutual TLS (or, in development, plaintext), and
//! serve tonic routes until a shutdown signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::{IdentityError, TlsMaterial, tls_incoming};

/// How often HTTP/2 pings keep idle connections alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The PEM files of a process's identity, as configuration files name them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The mesh CA certificate.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsPaths {
    /// Makes relative paths relative to `base` (a config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Loads the files.
    pub fn load(&self) -> Result<TlsMaterial, IdentityError> {
        TlsMaterial::load(&self.ca, &self.cert, &self.key)
    }
}

/// A server task: resolves when the server stops.
pub type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Makes the span of one incoming request (trace context extraction lives
/// there, e.g. `yrd_telemetry::server_span`).
pub type RequestSpan = fn(&http::Request<()>) -> tracing::Span;

/// A server running in the background.
#[derive(Debug)]
pub struct Serving {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: ServerTask,
}

impl Serving {
    /// Stops accepting, lets open calls finish, and waits for the server.
    pub async fn shutdown(mut self) -> Result<(), String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops at once, dropping open calls (as a crash would).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `routes` until shut down: over mutual TLS when
/// `tls` is given, in plaintext otherwise, each request inside the span
/// `trace` makes.
pub async fn serve(
    routes: Routes,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    trace: RequestSpan,
) -> std::io::Result<Serving> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .trace_fn(trace)
        .add_routes(routes);
    let task = match tls {
        Some(config) => tokio::spawn(router.serve_with_incoming_shutdown(tls_incoming(listener, config), signal)),
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal))
        }
    };
    Ok(Serving {
        addr: local,
        stop: Some(stop),
        task,
    })
}
