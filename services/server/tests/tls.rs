//! Mutual TLS over real sockets on 127.0.0.1: the listener against raw
//! rustls clients, and a real tonic server with the authorizer.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use yrd_identity::{
    Authorizer, Ca, IssueRequest, PeerId, TlsMaterial, client_config, crypto_provider, ensure_ca, issue,
    issue_in_memory, peer_id, peer_id_from_der, server_config, tonic_client_tls,
};
use yrd_server::{ConnectionLimits, tls_incoming, tls_incoming_with};

mod slowloris;
use slowloris::Slowloris;

const TD: &str = "yrd.mesh";

/// A PKI directory with a CA, a node (server) and a gateway (client).
struct Pki {
    dir: tempfile::TempDir,
    node: PeerId,
    gateway: PeerId,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        ensure_ca(dir.path(), TD).unwrap();
        let node = PeerId::node(TD, "320000", "nj-1").unwrap();
        let gateway = PeerId::gateway(TD, "gw-1").unwrap();
        issue(dir.path(), &IssueRequest::local_server(node.clone())).unwrap();
        issue(dir.path(), &IssueRequest::local_server(gateway.clone())).unwrap();
        Pki { dir, node, gateway }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn material(&self, id: &PeerId) -> TlsMaterial {
        TlsMaterial::for_identity(self.path(), id).unwrap()
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path().join("ca.pem")).unwrap()
    }

    /// Material signed by this mesh's CA but not written to disk.
    fn in_memory(&self, req: &IssueRequest) -> TlsMaterial {
        let ca = Ca::load(self.path()).unwrap();
        let (cert, key) = issue_in_memory(&ca, req).unwrap();
        TlsMaterial {
            ca_pem: self.ca_pem(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        }
    }
}

/// Log lines captured from the code under test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves `tls_incoming`: each accepted connection gets one line with the
/// identity of its verified client certificate, then is closed.
async fn start_echo_server(pki: &Pki, options: ConnectionLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(&pki.material(&pki.node)).unwrap();
    let mut incoming = Box::pin(tls_incoming_with(listener, config, options));
    tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let mut tls = conn.expect("tls_incoming never yields errors");
            assert!(tls.get_ref().0.nodelay().unwrap(), "TCP_NODELAY must be set");
            let certs = tls
                .get_ref()
                .1
                .peer_certificates()
                .expect("a verified client certificate");
            let id = peer_id_from_der(&certs[0]).unwrap();
            tls.write_all(format!("{id}\n").as_bytes()).await.unwrap();
            tls.shutdown().await.unwrap();
        }
    });
    addr
}

fn roots(ca_pem: &[u8]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(roots)
}

/// Connects, handshakes and reads the server's line. In TLS 1.3 the client
/// finishes its side before the server has checked the client certificate,
/// so a refusal may show as a failed read rather than a failed connect.
async fn exchange(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let mut line = String::new();
    tls.read_to_string(&mut line).await?;
    Ok(line)
}

#[tokio::test]
async fn listener_accepts_mesh_clients_and_refuses_others() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = Pki::new();
    let addr = start_echo_server(&pki, ConnectionLimits::default()).await;
    let good = client_config(&pki.material(&pki.gateway)).unwrap();

    // A mesh client: the server sees its identity.
    assert_eq!(
        exchange(addr, good.clone()).await.unwrap(),
        format!("{}\n", pki.gateway)
    );

    // No client certificate.
    let anonymous = Arc::new(
        ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&pki.ca_pem()))
            .with_no_client_auth(),
    );
    let outcome = exchange(addr, anonymous).await;
    assert!(!matches!(&outcome, Ok(line) if !line.is_empty()), "{outcome:?}");

    // Certificates from foreign CAs: one of the same trust domain (so the
    // same CA name, and the right identity) and one of another.
    for (trust_domain, id) in [
        (TD, pki.gateway.clone()),
        ("other.mesh", PeerId::gateway("other.mesh", "gw-1").unwrap()),
    ] {
        let foreign = Ca::generate(trust_domain).unwrap();
        let (cert, key) = issue_in_memory(&foreign, &IssueRequest::new(id)).unwrap();
        let material = TlsMaterial {
            ca_pem: pki.ca_pem(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        };
        let outcome = exchange(addr, client_config(&material).unwrap()).await;
        assert!(!matches!(&outcome, Ok(line) if !line.is_empty()), "{outcome:?}");
    }

    // An expired certificate from the mesh CA.
    let day = Duration::from_secs(24 * 3600);
    let expired = pki.in_memory(
        &IssueRequest::new(PeerId::gateway(TD, "old").unwrap()).with_validity(Some(SystemTime::now() - 2 * day), day),
    );
    let outcome = exchange(addr, client_config(&expired).unwrap()).await;
    assert!(!matches!(&outcome, Ok(line) if !line.is_empty()), "{outcome:?}");

    // Not TLS at all: plaintext HTTP/2.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest).await;

    // The listener is still serving, and an app certificate (client-only)
    // passes the TLS layer: which kinds may call is the authorizer's job.
    assert_eq!(exchange(addr, good).await.unwrap(), format!("{}\n", pki.gateway));
    let app = pki.in_memory(&IssueRequest::new(PeerId::app(TD, "dashboard").unwrap()));
    assert_eq!(
        exchange(addr, client_config(&app).unwrap()).await.unwrap(),
        "spiffe://yrd.mesh/app/dashboard\n"
    );

    let logs = logs.text();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refused a TLS connection"))
        .collect();
    assert_eq!(refusals.len(), 5, "{logs}");
    // One WARN line per reason; the second foreign CA, within
    // WARN_INTERVAL of the first, is logged at DEBUG.
    for (line, (reason, level)) in refusals.iter().zip([
        ("no-client-certificate", "WARN"),
        ("unknown-ca", "WARN"),
        ("unknown-ca", "DEBUG"),
        ("expired-certificate", "WARN"),
        ("not-tls", "WARN"),
    ]) {
        assert!(
            line.contains(&format!("reason=\"{reason}\"")),
            "expected {reason}: {line}"
        );
        assert!(line.contains(level) && line.contains("peer=127.0.0.1:"), "{line}");
    }
}

/// A TCP connection to `addr` from the loopback address `source`.
async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(addr).await
}

/// [`exchange`] from the loopback address `source`.
async fn exchange_from(source: &str, addr: SocketAddr, config: Arc<ClientConfig>) -> Result<String, std::io::Error> {
    let tcp = connect_from(source, addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let mut line = String::new();
    tls.read_to_string(&mut line).await?;
    Ok(line)
}

/// How long until the server closes `tcp` (which never writes), at most `wait`.
async fn closed_after(tcp: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
        Ok(Ok(_)) => panic!("the server sent bytes to a client that never spoke"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_stalled_client_times_out_and_does_not_block_others() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = Pki::new();
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let addr = start_echo_server(&pki, limits).await;
    let good = client_config(&pki.material(&pki.gateway)).unwrap();

    // Connects and never says a word; another client is served meanwhile.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        exchange(addr, good.clone()).await.unwrap(),
        format!("{}\n", pki.gateway)
    );
    // The server gives up on it after the handshake timeout.
    let after = closed_after(&mut stalled, Duration::from_secs(10))
        .await
        .expect("closed in time");
    println!("a stalled client was closed after {after:?} (handshake_timeout 300ms)");
    assert!(after >= Duration::from_millis(200), "{after:?}");
    // The refusal is logged just after the socket is closed.
    for _ in 0..100 {
        if logs.text().contains("reason=\"timeout\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(logs.text().contains("reason=\"timeout\""), "{}", logs.text());
}

#[tokio::test]
async fn handshake_slots_are_bounded_in_total_and_per_source_and_never_queue() {
    let metrics = yrd_telemetry::metrics_handle().unwrap();
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = Pki::new();
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_secs(2),
        max_handshakes: 4,
        max_handshakes_per_source: 2,
        ..ConnectionLimits::default()
    };
    let addr = start_echo_server(&pki, limits).await;
    let good = client_config(&pki.material(&pki.gateway)).unwrap();

    // Six stalled connections from one source: two get a handshake slot,
    // the four others are closed at once (not left in the backlog).
    let mut stalled = Vec::new();
    for _ in 0..6 {
        stalled.push(connect_from("127.0.0.3", addr).await.unwrap());
    }
    let mut closed_at_once = 0;
    for tcp in &mut stalled {
        if closed_after(tcp, Duration::from_millis(500)).await.is_some() {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, 4,
        "all but max_handshakes_per_source are closed at once"
    );

    // A client from another source is served at once.
    let started = std::time::Instant::now();
    assert_eq!(
        exchange_from("127.0.0.1", addr, good.clone()).await.unwrap(),
        format!("{}\n", pki.gateway)
    );
    println!("served beside a full source in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(1));

    // Two stalled connections from a second source fill all four slots:
    // a client from a third source is closed at once too...
    for _ in 0..2 {
        stalled.push(connect_from("127.0.0.4", addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let outcome = exchange_from("127.0.0.5", addr, good.clone()).await;
    assert!(!matches!(&outcome, Ok(line) if !line.is_empty()), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    // ...until the stalled ones time out and give their slots back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        exchange_from("127.0.0.5", addr, good).await.unwrap(),
        format!("{}\n", pki.gateway)
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = logs.text();
    for reason in ["too-many-handshakes-from-source", "too-many-handshakes", "timeout"] {
        assert!(logs.contains(&format!("reason=\"{reason}\"")), "{reason}: {logs}");
    }
    let rendered = metrics.render();
    for reason in ["too-many-handshakes-from-source", "too-many-handshakes", "timeout"] {
        let series = format!("yrd_tls_handshakes_refused_total{{reason=\"{reason}\"}}");
        assert!(rendered.contains(&series), "{series} in:\n{rendered}");
    }
}

#[tokio::test]
async fn refusals_are_logged_at_most_once_per_reason_per_interval() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = Pki::new();
    let addr = start_echo_server(&pki, ConnectionLimits::default()).await;
    // Plaintext HTTP/2 at a TLS port, over and over.
    let not_tls = || async {
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest).await;
    };
    for _ in 0..50 {
        not_tls().await;
    }
    let lines = |level: &str| {
        logs.text()
            .lines()
            .filter(|l| l.contains("refused a TLS connection") && l.contains(level))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let warn = lines("WARN");
    assert_eq!(warn.len(), 1, "{warn:?}");
    assert!(
        warn[0].contains("reason=\"not-tls\"") && warn[0].contains("suppressed=0"),
        "{warn:?}"
    );
    assert_eq!(lines("DEBUG").len(), 49);
    // After the interval, the next refusal is a WARN line again, with the
    // count of those logged at DEBUG only.
    tokio::time::sleep(yrd_server::WARN_INTERVAL).await;
    not_tls().await;
    let warn = lines("WARN");
    assert_eq!(warn.len(), 2, "{warn:?}");
    assert!(warn[1].contains("suppressed=49"), "{warn:?}");
}

#[tokio::test]
async fn clients_verify_the_server_name() {
    // The client verifies the server: a name outside the server's SANs fails.
    let pki = Pki::new();
    let addr = start_echo_server(&pki, ConnectionLimits::default()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("not-the-node.example").unwrap();
    let connector = TlsConnector::from(client_config(&pki.material(&pki.gateway)).unwrap());
    let err = connector.connect(name, tcp).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

// --- a real tonic server --------------------------------------------------

/// A gRPC service without codegen: answers every call with the caller's
/// identity in response headers, as [`peer_id`] and the interceptor see it.
#[derive(Clone)]
struct WhoAmI;

impl NamedService for WhoAmI {
    const NAME: &'static str = "yrd.test.WhoAmI";
}

impl Service<http::Request<Body>> for WhoAmI {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let req = tonic::Request::from_http(req);
        let from_cert = peer_id(&req).map(|id| id.uri()).unwrap_or_default();
        let from_ext = req.extensions().get::<PeerId>().map(|id| id.uri()).unwrap_or_default();
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-peer-cert", from_cert)
            .header("x-peer-ext", from_ext)
            .body(Body::empty())
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// Calls `WhoAmI` over `channel`; returns (grpc-status, grpc-message, x-peer-cert, x-peer-ext).
async fn who_am_i(channel: &mut Channel) -> (String, String, String, String) {
    futures::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("/yrd.test.WhoAmI/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::empty())
        .unwrap();
    let response = channel.call(req).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (
        header("grpc-status"),
        header("grpc-message"),
        header("x-peer-cert"),
        header("x-peer-ext"),
    )
}

async fn tls_channel(addr: SocketAddr, material: &TlsMaterial, domain: &str) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tonic_client_tls(material, domain))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn tonic_server_sees_and_authorizes_the_peer() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls_incoming(listener, server_config(&pki.material(&pki.node)).unwrap());
    let authz = Arc::new(Authorizer::from_rules(TD, ["gateway"]).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(WhoAmI, authz.interceptor()))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    // An allowed gateway, verifying the server by DNS name and by IP address.
    let gateway = pki.material(&pki.gateway);
    for domain in ["localhost", "127.0.0.1"] {
        let mut channel = tls_channel(addr, &gateway, domain).await;
        let (status, _, from_cert, from_ext) = who_am_i(&mut channel).await;
        assert_eq!(status, "0");
        assert_eq!(from_cert, pki.gateway.uri(), "peer_id() reads the verified certificate");
        assert_eq!(
            from_ext,
            pki.gateway.uri(),
            "the interceptor hands the PeerId to the handler"
        );
    }

    // An application: authenticated, but this service accepts gateways only.
    let app = pki.in_memory(&IssueRequest::new(PeerId::app(TD, "dashboard").unwrap()));
    let mut channel = tls_channel(addr, &app, "localhost").await;
    let (status, message, from_cert, _) = who_am_i(&mut channel).await;
    assert_eq!(status, (tonic::Code::PermissionDenied as i32).to_string());
    let message = percent_decode(&message);
    assert!(
        message.contains("spiffe://yrd.mesh/app/dashboard") && message.contains("gateway"),
        "{message}"
    );
    assert_eq!(from_cert, "", "the handler must not run");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Dropping the incoming stream closes the listening socket.
    let mut closed = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener is still open after shutdown");
}

#[tokio::test]
async fn plaintext_callers_are_unauthenticated() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let authz = Arc::new(Authorizer::gateways(TD).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(WhoAmI, authz.interceptor()))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let mut channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (status, message, _, _) = who_am_i(&mut channel).await;
    assert_eq!(status, (tonic::Code::Unauthenticated as i32).to_string());
    assert_eq!(
        percent_decode(&message),
        "a client certificate from the mesh CA is required"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// grpc-message is percent-encoded on the wire.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_does_not_keep_clients_out() {
    use std::sync::atomic::Ordering;
    let pki = Pki::new();
    let addr = start_echo_server(&pki, ConnectionLimits::default()).await;
    let good = client_config(&pki.material(&pki.gateway)).unwrap();
    let attacker = Slowloris::start(addr, "127.0.0.2".parse().unwrap(), 1000, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut worst = Duration::ZERO;
    for i in 0..3 {
        let started = std::time::Instant::now();
        let served = tokio::time::timeout(Duration::from_secs(30), exchange(addr, good.clone())).await;
        let took = started.elapsed();
        println!(
            "listener slowloris: attempt {i}: handshake+answer {:.1} ms ({:?}), {} idle open, {} reopened",
            took.as_secs_f64() * 1e3,
            served.as_ref().map(|r| r.is_ok()),
            attacker.open.load(Ordering::Relaxed),
            attacker.reopened.load(Ordering::Relaxed)
        );
        worst = worst.max(took);
    }
    attacker.stop();
    assert!(worst < Duration::from_secs(1), "{worst:?}");
}
