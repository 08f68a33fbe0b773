//! The TLS listener for tonic servers: TCP accept, concurrent TLS
//! handshakes, and a stream of verified connections for
//! `Server::serve_with_incoming_shutdown`.
//!
//! Handshakes run in their own tasks, so a slow or hostile client costs one
//! task (and at most the handshake timeout), never the accept loop. The
//! number in flight is bounded: at the limit, new connections wait in the
//! kernel's accept backlog rather than in this process's memory. Every
//! refused handshake is logged with the peer address and the reason, and
//! never ends the stream.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::{CertificateError, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many TLS handshakes may be in flight at once.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 256;

/// After an accept error that is not about one connection (such as running
/// out of file descriptors), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Finished handshakes waiting for the server to take them. The server
/// takes them as fast as it can; this only smooths bursts.
const READY_QUEUE: usize = 32;

/// Tuning for [`tls_incoming_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingOptions {
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How many TLS handshakes may be in flight at once (at least 1).
    pub max_handshakes: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        IncomingOptions {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_handshakes: MAX_HANDSHAKES_IN_FLIGHT,
        }
    }
}

/// Accepts TCP connections on `listener` (with `TCP_NODELAY`), performs TLS
/// handshakes with `config` concurrently, and yields the connections whose
/// handshake succeeded. Uses [`IncomingOptions::default`].
///
/// The stream never yields an error and ends only when dropped; dropping it
/// (as tonic does on shutdown) closes the listening socket. tonic implements
/// `Connected` for the yielded streams, so handlers can read the verified
/// client certificate with `request.peer_certs()` (or `yrd_identity::peer_id`).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    tls_incoming_with(listener, config, IncomingOptions::default())
}

/// [`tls_incoming`] with explicit timeout and concurrency limits.
pub fn tls_incoming_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    options: IncomingOptions,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    let span = tracing::Span::current();
    // The accept task is spawned on first poll, not here, so that building
    // the stream outside a Tokio runtime cannot panic.
    futures::stream::once(async move {
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), options, tx).instrument(span));
        ReceiverStream::new(rx)
    })
    .flatten()
    .map(Ok)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    options: IncomingOptions,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let permits = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    loop {
        // A permit is taken before accepting, so that at the limit the
        // kernel's backlog holds new connections, not our memory.
        let permit = tokio::select! {
            _ = tx.closed() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Only a closed semaphore fails, and nothing closes it.
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            // The server dropped the stream: stop, closing the socket.
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting connections failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY a small answer waits on Nagle's algorithm and
        // delayed ACKs (tens of milliseconds; see DESIGN.md).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        let timeout = options.handshake_timeout;
        tokio::spawn(
            async move {
                // Held until the stream is handed over, so the bound covers
                // handshakes waiting for the server as well.
                let _permit = permit;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // A send error means the server is shutting down.
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(e)) => {
                        let (reason, detail) = refusal(&e);
                        tracing::warn!(%peer, reason, error = %detail, "refused a TLS connection");
                    }
                    Err(_) => {
                        tracing::warn!(
                            %peer,
                            reason = "timeout",
                            error = %format!("no TLS handshake within {timeout:?}"),
                            "refused a TLS connection"
                        );
                    }
                }
            }
            .in_current_span(),
        );
    }
}

/// Errors that concern one connection only; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Why a handshake failed: a short, stable label (for log queries and,
/// later, a metric label) and the full error.
fn refusal(e: &io::Error) -> (&'static str, String) {
    let detail = e.to_string();
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        let reason = match e.kind() {
            io::ErrorKind::UnexpectedEof => "client-closed",
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "client-reset",
            _ => "io-error",
        };
        return (reason, detail);
    };
    let reason = match tls {
        rustls::Error::NoCertificatesPresented => "no-client-certificate",
        rustls::Error::InvalidCertificate(cert) => match cert {
            // A certificate from another CA that happens to share the mesh
            // CA's name (same trust domain) fails the signature check
            // rather than the issuer lookup; for the operator it is the same
            // thing: not issued by this mesh.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown-ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired-certificate",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate-not-yet-valid",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate-not-for-client-auth"
            }
            _ => "invalid-certificate",
        },
        // The client gave up on us, most often because it does not trust
        // this server's certificate or name.
        rustls::Error::AlertReceived(_) => "client-alert",
        // Plaintext HTTP/2 (a client without TLS) lands here.
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "not-tls",
        rustls::Error::NoApplicationProtocol => "no-h2-alpn",
        rustls::Error::PeerIncompatible(_) => "incompatible-client",
        _ => "tls-error",
    };
    (reason, detail)
}
