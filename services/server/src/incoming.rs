//! The TLS listener for tonic servers: TCP accept, concurrent TLS
//! handshakes, and a stream of verified connections for
//! `Server::serve_with_incoming_shutdown`.
//!
//! The accept loop never waits for anything but `accept()`: a connection
//! that gets no handshake slot is closed at once rather than left in the
//! kernel's backlog, where idle sockets that never start TLS (a slowloris)
//! would hold every later client back. Handshakes run in their own tasks,
//! each bounded by `connections.handshake_timeout`; at most
//! `connections.max_handshakes` are in flight, and at most
//! `connections.max_handshakes_per_source` from one source (an IPv4
//! address, or an IPv6 /64), so that one host cannot take every slot.
//!
//! Every refused connection is counted in
//! `yrd_tls_handshakes_refused_total{reason}` and logged at DEBUG with the
//! peer and the reason; at most one of them per reason per
//! [`WARN_INTERVAL`] is a WARN line instead, whose `suppressed` field says
//! how many were refused for that reason since the previous WARN line.
//! Nothing a client does ends the stream.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use rustls::{CertificateError, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::ConnectionLimits;

/// At most one WARN line per refusal reason in this long; the others are
/// DEBUG lines, and the next WARN line says how many there were.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// After an accept error that is not about one connection (such as running
/// out of file descriptors), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Finished handshakes waiting for the server to take them. The server
/// takes them as fast as it can; this only smooths bursts.
const READY_QUEUE: usize = 32;

/// Reason label: no handshake slot left over all clients.
const TOO_MANY_HANDSHAKES: &str = "too-many-handshakes";
/// Reason label: no handshake slot left for the connection's source.
const TOO_MANY_FROM_SOURCE: &str = "too-many-handshakes-from-source";
/// Reason label: the handshake did not finish in time.
const TIMEOUT: &str = "timeout";

/// Accepts TCP connections on `listener` (with `TCP_NODELAY`), performs TLS
/// handshakes with `config` concurrently, and yields the connections whose
/// handshake succeeded. Uses the default [`ConnectionLimits`].
///
/// The stream never yields an error and ends only when dropped; dropping it
/// (as tonic does on shutdown) closes the listening socket. tonic implements
/// `Connected` for the yielded streams, so handlers can read the verified
/// client certificate with `request.peer_certs()` (or `yrd_identity::peer_id`).
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    tls_incoming_with(listener, config, ConnectionLimits::default())
}

/// [`tls_incoming`] with explicit handshake limits (`max_concurrent_streams`
/// is not the listener's business: see [`crate::serve`]). Limits of zero
/// are taken as one.
pub fn tls_incoming_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: ConnectionLimits,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, io::Error>> + Send + 'static {
    let span = tracing::Span::current();
    // The accept task is spawned on first poll, not here, so that building
    // the stream outside a Tokio runtime cannot panic.
    futures::stream::once(async move {
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), limits, tx).instrument(span));
        ReceiverStream::new(rx)
    })
    .flatten()
    .map(Ok)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let slots = Arc::new(Slots::new(limits.max_handshakes, limits.max_handshakes_per_source));
    let refusals = Arc::new(Refusals::default());
    loop {
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
        let slot = match Slots::take(&slots, peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                // Closed at once: the client learns now, not after a
                // timeout, and nothing of ours is held for it.
                drop(tcp);
                refusals.refused(peer, reason, || match reason {
                    TOO_MANY_HANDSHAKES => format!("{} TLS handshakes in flight", limits.max_handshakes.max(1)),
                    _ => format!(
                        "{} TLS handshakes in flight from this source",
                        limits.max_handshakes_per_source.max(1)
                    ),
                });
                continue;
            }
        };
        // Without TCP_NODELAY a small answer waits on Nagle's algorithm and
        // delayed ACKs (tens of milliseconds; see DESIGN.md).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, tx, refusals) = (acceptor.clone(), tx.clone(), refusals.clone());
        let timeout = limits.handshake_timeout;
        tokio::spawn(
            async move {
                // Held until the stream is handed over, so the bound covers
                // handshakes waiting for the server as well.
                let _slot = slot;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // A send error means the server is shutting down.
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(e)) => {
                        let (reason, detail) = refusal(&e);
                        refusals.refused(peer, reason, || detail);
                    }
                    Err(_) => refusals.refused(peer, TIMEOUT, || format!("no TLS handshake within {timeout:?}")),
                }
            }
            .in_current_span(),
        );
    }
}

/// The handshake slots: how many are taken in all and per source.
struct Slots {
    max: usize,
    max_per_source: usize,
    taken: Mutex<Taken>,
}

#[derive(Default)]
struct Taken {
    total: usize,
    /// Only sources with a handshake in flight: at most `max` entries.
    per_source: HashMap<IpAddr, usize>,
}

impl Slots {
    fn new(max: usize, max_per_source: usize) -> Self {
        Self {
            max: max.max(1),
            max_per_source: max_per_source.max(1),
            taken: Mutex::new(Taken::default()),
        }
    }

    /// A slot for a connection from `ip`, or the reason there is none.
    fn take(this: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let source = source_of(ip);
        // Never held across an await; a panic cannot leave the counts
        // half-updated, so a poisoned lock is still right.
        let mut taken = this.taken.lock().unwrap_or_else(PoisonError::into_inner);
        if taken.total >= this.max {
            return Err(TOO_MANY_HANDSHAKES);
        }
        let from_source = taken.per_source.entry(source).or_insert(0);
        if *from_source >= this.max_per_source {
            return Err(TOO_MANY_FROM_SOURCE);
        }
        *from_source += 1;
        taken.total += 1;
        Ok(Slot {
            slots: this.clone(),
            source,
        })
    }

    fn release(&self, source: IpAddr) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken.total = taken.total.saturating_sub(1);
        if let Some(n) = taken.per_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                taken.per_source.remove(&source);
            }
        }
    }
}

/// One handshake slot, given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.source);
    }
}

/// The source a connection's handshakes are counted against: an IPv4
/// address (IPv4-mapped IPv6 included), or the /64 prefix of an IPv6
/// address, the block one host is usually given.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Counts refused connections and rate-limits their WARN lines.
#[derive(Default)]
struct Refusals {
    /// Per reason: when its last WARN line was written, and how many
    /// refusals since then were logged at DEBUG only.
    warned: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Refusals {
    /// Counts and logs one refused connection; `detail` (the error) is
    /// only formatted when a line is written.
    fn refused(&self, peer: SocketAddr, reason: &'static str, detail: impl FnOnce() -> String) {
        yrd_telemetry::handshake_refused(reason);
        let now = Instant::now();
        let suppressed = {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            match warned.get_mut(reason) {
                Some((last, suppressed)) if now.duration_since(*last) < WARN_INTERVAL => {
                    *suppressed += 1;
                    None
                }
                Some((last, suppressed)) => {
                    *last = now;
                    Some(std::mem::take(suppressed))
                }
                None => {
                    warned.insert(reason, (now, 0));
                    Some(0)
                }
            }
        };
        match suppressed {
            Some(suppressed) => tracing::warn!(
                %peer,
                reason,
                error = %detail(),
                suppressed,
                "refused a TLS connection"
            ),
            None => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(%peer, reason, error = %detail(), "refused a TLS connection");
                }
            }
        }
    }
}

/// Errors that concern one connection only; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Why a handshake failed: a short, stable label (for log queries and the
/// metric's `reason`) and the full error.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_total_and_per_source() {
        let slots = Arc::new(Slots::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = Slots::take(&slots, a).unwrap();
        let _a2 = Slots::take(&slots, a).unwrap();
        assert_eq!(Slots::take(&slots, a).err(), Some(TOO_MANY_FROM_SOURCE));
        let _b1 = Slots::take(&slots, b).unwrap();
        assert_eq!(Slots::take(&slots, b).err(), Some(TOO_MANY_HANDSHAKES));
        drop(a1);
        let _a3 = Slots::take(&slots, a).unwrap();
        let taken = slots.taken.lock().unwrap();
        assert_eq!(taken.total, 3);
        assert_eq!(taken.per_source.len(), 2);
    }

    #[test]
    fn released_sources_are_forgotten() {
        let slots = Arc::new(Slots::new(10, 10));
        for i in 0..5u8 {
            drop(Slots::take(&slots, IpAddr::from([10, 0, 0, i])).unwrap());
        }
        let taken = slots.taken.lock().unwrap();
        assert_eq!((taken.total, taken.per_source.len()), (0, 0));
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("2001:db8:1:2:bbbb::9")), source_of(ip("2001:db8:1:2::1")));
        assert_ne!(source_of(ip("2001:db8:1:3::1")), source_of(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn zero_limits_are_one() {
        let slots = Arc::new(Slots::new(0, 0));
        let _one = Slots::take(&slots, "10.0.0.1".parse().unwrap()).unwrap();
        assert!(Slots::take(&slots, "10.0.0.2".parse().unwrap()).is_err());
    }
}
