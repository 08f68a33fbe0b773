//! Attack tests: edge.
//!
//! The connection edge of a process, tried as a hostile client would: idle
//! sockets that never start TLS (slowloris), one HTTP/2 connection opening
//! far more streams than allowed, garbage in a request body, and health
//! and reflection asked with a certificate of another trust domain. A
//! region node and a gateway run over mutual TLS on real sockets; the
//! attackers speak raw TCP, raw HTTP/2 frames over rustls, or gRPC.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use yrd_gateway::{GatewayConfig, RunningGateway};
use yrd_identity::{Ca, IssueRequest, PeerId, TlsMaterial, issue_in_memory};
use yrd_node::{NodeConfig, RunningNode};
use yrd_proto::mesh::ListRegionsRequest;
use yrd_proto::mesh::federation_client::FederationClient;

use crate::harness::generate_store;
use crate::mesh::{Mesh, TD, issue};
use crate::slowloris::Slowloris;

/// The one region of the edge fixture.
const REGION: &str = "320000";
/// The trust domain of the second CA in the processes' trust bundle.
const OTHER_TD: &str = "other.mesh";

/// One region node and a gateway in front of it, over mutual TLS. Both
/// trust a bundle of two CAs, the mesh's and one of another trust domain
/// (as a federation of two meshes would): a certificate of the other trust
/// domain passes the TLS handshake, and only the trust-domain rule can
/// refuse it.
struct Edge {
    dir: tempfile::TempDir,
    other: Ca,
    node: Option<RunningNode>,
    gateway: Option<RunningGateway>,
}

impl Edge {
    async fn start(adjust_gateway: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        yrd_identity::init_ca(&pki, TD).unwrap();
        let other = Ca::generate(OTHER_TD).unwrap();
        let bundle = dir.path().join("bundle.pem");
        let mut pem = std::fs::read(pki.join(yrd_identity::CA_CERT_FILE)).unwrap();
        pem.extend_from_slice(other.cert_pem().as_bytes());
        std::fs::write(&bundle, pem).unwrap();

        let db = dir.path().join("node.sqlite");
        let mut node_config = NodeConfig::parse(
            &format!(
                "region = \"{REGION}\"\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
                db.display()
            ),
            "test",
        )
        .unwrap();
        let mut tls = issue(&pki, &PeerId::node(TD, REGION, "n1").unwrap(), true);
        tls.ca = bundle.clone();
        node_config.tls = Some(tls);
        node_config.validate("test").unwrap();
        generate_store(db, REGION.to_owned()).await;
        let node = yrd_node::start(node_config).await.unwrap();

        let mut gateway_config = GatewayConfig::parse(
            &format!(
                "listen = \"127.0.0.1:0\"\n[query]\npage_token_secret = \"test-secret-0123456789\"\n\
                 [health]\ninterval = \"200ms\"\ntimeout = \"1s\"\n\
                 [[regions]]\nid = \"{REGION}\"\nendpoints = [\"https://{}\"]\ntls_server_name = \"localhost\"\n",
                node.addr
            ),
            "test",
        )
        .unwrap();
        let mut tls = issue(&pki, &PeerId::gateway(TD, "gw").unwrap(), true);
        tls.ca = bundle;
        gateway_config.tls = Some(tls);
        adjust_gateway(&mut gateway_config);
        gateway_config.validate("test").unwrap();
        let gateway = yrd_gateway::start(gateway_config).await.unwrap();
        assert!(
            gateway.registry.wait_healthy(Duration::from_secs(20)).await,
            "the region became healthy"
        );
        Edge {
            dir,
            other,
            node: Some(node),
            gateway: Some(gateway),
        }
    }

    fn gateway_addr(&self) -> SocketAddr {
        self.gateway.as_ref().unwrap().addr
    }

    fn node_addr(&self) -> SocketAddr {
        self.node.as_ref().unwrap().addr
    }

    /// Client material for `id`, issued by the CA of its trust domain
    /// (the mesh's or the other one); it trusts the mesh CA.
    fn material(&self, id: &PeerId) -> TlsMaterial {
        let pki = self.dir.path().join("pki");
        let (cert, key) = if id.trust_domain == OTHER_TD {
            issue_in_memory(&self.other, &IssueRequest::new(id.clone())).unwrap()
        } else {
            issue_in_memory(&Ca::load(&pki).unwrap(), &IssueRequest::new(id.clone())).unwrap()
        };
        TlsMaterial {
            ca_pem: std::fs::read(pki.join(yrd_identity::CA_CERT_FILE)).unwrap(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        }
    }

    /// A new channel (its own TCP connection and TLS handshake) to `addr`.
    async fn channel(&self, addr: SocketAddr, id: &PeerId) -> Result<Channel, tonic::transport::Error> {
        let material = self.material(id);
        Mesh::channel(
            &format!("https://{addr}"),
            yrd_identity::tonic_client_tls(&material, "localhost"),
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await.unwrap();
        }
        if let Some(n) = self.node.take() {
            n.shutdown().await.unwrap();
        }
    }
}

fn app() -> PeerId {
    PeerId::app(TD, "dashboard").unwrap()
}

/// A new connection to the gateway as an application and one
/// `ListRegions` call on it: how long the two took.
async fn connect_and_call(edge: &Edge, id: &PeerId) -> Result<Duration, String> {
    let started = Instant::now();
    let channel = edge
        .channel(edge.gateway_addr(), id)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    FederationClient::new(channel)
        .list_regions(ListRegionsRequest {})
        .await
        .map_err(|e| format!("call: {e}"))?;
    Ok(started.elapsed())
}

// --- (a) slowloris ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_of_idle_sockets_does_not_keep_clients_out() {
    const SOCKETS: usize = 1000;
    let edge = Edge::start(|_| {}).await;
    let unloaded = connect_and_call(&edge, &app()).await.unwrap();
    println!(
        "slowloris: unloaded connect+call {:.1} ms",
        unloaded.as_secs_f64() * 1e3
    );

    // The attacker: another address on loopback, so that its sockets and
    // the client's count as different sources.
    let attacker = Slowloris::start(
        edge.gateway_addr(),
        "127.0.0.2".parse().unwrap(),
        SOCKETS,
        Duration::from_millis(250),
    );
    let ramp = Instant::now();
    while attacker.open.load(Ordering::Relaxed) + attacker.reopened.load(Ordering::Relaxed) < SOCKETS
        && ramp.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the server take (or refuse) them all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "slowloris: {} idle sockets open, {} reopened after being dropped",
        attacker.open.load(Ordering::Relaxed),
        attacker.reopened.load(Ordering::Relaxed)
    );

    let mut times = Vec::new();
    for i in 0..5 {
        let outcome = tokio::time::timeout(Duration::from_secs(30), connect_and_call(&edge, &app())).await;
        let took = match outcome {
            Ok(Ok(took)) => took,
            Ok(Err(e)) => panic!("attempt {i}: the client failed under the attack: {e}"),
            Err(_) => Duration::from_secs(30),
        };
        println!(
            "slowloris: attempt {i}: connect+call {:.1} ms ({} idle sockets open, {} reopened)",
            took.as_secs_f64() * 1e3,
            attacker.open.load(Ordering::Relaxed),
            attacker.reopened.load(Ordering::Relaxed)
        );
        times.push(took);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    attacker.stop();
    let worst = times.iter().max().copied().unwrap_or_default();
    println!(
        "slowloris: worst connect+call under attack {:.1} ms",
        worst.as_secs_f64() * 1e3
    );
    assert!(
        worst < Duration::from_secs(1),
        "a new client took {worst:?} to connect and call under a slowloris of {SOCKETS} sockets"
    );
    edge.stop().await;
}

// --- raw HTTP/2 -------------------------------------------------------------

/// A raw HTTP/2 client over mutual TLS that writes frames itself, so that
/// it can break the rules a conforming client library would keep (such as
/// the server's stream limit).
struct RawH2 {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    read: Vec<u8>,
}

/// One frame as received: type, flags, stream id, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

impl RawH2 {
    async fn connect(addr: SocketAddr, material: &TlsMaterial) -> Self {
        use tokio::io::AsyncWriteExt;
        let config = yrd_identity::client_config(material).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut raw = RawH2 { tls, read: Vec::new() };
        raw.send(SETTINGS, 0, 0, &[]).await;
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let len = u32::try_from(payload.len()).unwrap();
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tls.write_all(&frame).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// Sends `frames` (kind, flags, stream, payload) in one write, so that
    /// the server reads them all before it can act on any.
    async fn send_all(&mut self, frames: &[(u8, u8, u32, Vec<u8>)]) {
        use tokio::io::AsyncWriteExt;
        let mut bytes = Vec::new();
        for (kind, flags, stream, payload) in frames {
            let len = u32::try_from(payload.len()).unwrap();
            bytes.extend_from_slice(&len.to_be_bytes()[1..]);
            bytes.extend_from_slice(&[*kind, *flags]);
            bytes.extend_from_slice(&stream.to_be_bytes());
            bytes.extend_from_slice(payload);
        }
        self.tls.write_all(&bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// The next frame, or `None` when none comes within `wait` or the
    /// connection ends. PINGs are answered and SETTINGS acknowledged here.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if self.read.len() >= 9 {
                let len = usize::from(self.read[0]) << 16 | usize::from(self.read[1]) << 8 | usize::from(self.read[2]);
                if self.read.len() >= 9 + len {
                    let head: Vec<u8> = self.read.drain(..9).collect();
                    let payload = self.read.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream,
                        payload,
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        self.send(SETTINGS, ACK, 0, &[]).await;
                    }
                    if frame.kind == PING && frame.flags & ACK == 0 {
                        let payload = frame.payload.clone();
                        self.send(PING, ACK, 0, &payload).await;
                    }
                    return Some(frame);
                }
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(wait, self.tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.read.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    }
}

/// An HPACK header block of literal fields without indexing or Huffman
/// coding (RFC 7541 §6.2.2), which every decoder accepts.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        for s in [name, value] {
            assert!(s.len() < 127, "one-byte lengths only");
            block.push(u8::try_from(s.len()).unwrap());
            block.extend_from_slice(s.as_bytes());
        }
    }
    block
}

/// The request headers of a gRPC call of `path`.
fn grpc_headers(path: &str) -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

// --- (b) streams per connection --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_open_more_streams_than_allowed() {
    // The per-application call limit (8 by default) would answer most of
    // these calls at once with RESOURCE_EXHAUSTED, closing their streams
    // and letting more in: raised, so that only the stream limit acts.
    let edge = Edge::start(|c| c.query.max_calls_per_application = 4096).await;
    let mut h2 = RawH2::connect(edge.gateway_addr(), &edge.material(&app())).await;

    // The server's SETTINGS: its stream limit.
    let mut advertised = None;
    while let Some(f) = h2.next(Duration::from_secs(2)).await {
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            for p in f.payload.chunks(6) {
                if u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                    advertised = Some(u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
                }
            }
            break;
        }
    }
    println!("streams: the server advertises max_concurrent_streams = {advertised:?}");

    // Far more half-open calls than that on the one connection, ignoring
    // the limit: headers without END_STREAM, so that every call the server
    // accepts stays open, its handler waiting for the request.
    let limit = advertised.unwrap_or(128);
    let opened = limit * 4;
    for i in 0..opened {
        h2.send(
            HEADERS,
            END_HEADERS,
            1 + 2 * i,
            &grpc_headers("/yrd.mesh.v1.Federation/ListRegions"),
        )
        .await;
    }
    let mut refused = std::collections::BTreeSet::new();
    let mut other_resets = 0;
    let mut goaway = None;
    while let Some(f) = h2.next(Duration::from_secs(2)).await {
        match f.kind {
            RST_STREAM => {
                let code = u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                if code == REFUSED_STREAM {
                    refused.insert(f.stream);
                } else {
                    other_resets += 1;
                }
            }
            GOAWAY => {
                goaway = Some(u32::from_be_bytes([
                    f.payload[4],
                    f.payload[5],
                    f.payload[6],
                    f.payload[7],
                ]));
                break;
            }
            _ => {}
        }
    }
    let accepted = opened - u32::try_from(refused.len()).unwrap();
    println!(
        "streams: opened {opened} on one connection; the server accepted {accepted}, refused {} (REFUSED_STREAM), \
         {other_resets} other resets, goaway {goaway:?}",
        refused.len()
    );
    assert_eq!(advertised, Some(128), "the default limit is advertised");
    assert!(
        goaway.is_none(),
        "refusing streams over the limit does not end the connection"
    );
    assert_eq!(accepted, limit, "the server holds exactly its limit of open streams");
    assert!(
        refused.iter().all(|s| *s > 2 * limit),
        "only streams beyond the limit are refused"
    );

    // The accepted calls are real: the first one, completed, is answered.
    h2.send(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]).await;
    let mut answered = false;
    while let Some(f) = h2.next(Duration::from_secs(5)).await {
        if f.kind == HEADERS && f.stream == 1 {
            answered = true;
            break;
        }
    }
    assert!(answered, "the first stream was answered once its request was complete");
    edge.stop().await;
}

/// Frames of `n` calls from stream `first` on, each reset (CANCEL) right
/// after its headers: HTTP/2 rapid reset.
fn rapid_resets(first: u32, n: u32) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let headers = grpc_headers("/yrd.mesh.v1.Federation/ListRegions");
    (0..n)
        .flat_map(|i| {
            let id = first + 2 * i;
            [
                (HEADERS, END_HEADERS, id, headers.clone()),
                (RST_STREAM, 0, id, CANCEL.to_be_bytes().to_vec()),
            ]
        })
        .collect()
}

const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Reads frames up to the server's SETTINGS (acknowledged by `next`).
async fn settings_of(h2: &mut RawH2) {
    while let Some(f) = h2.next(Duration::from_secs(2)).await {
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            return;
        }
    }
    panic!("the server sent no SETTINGS");
}

/// The GOAWAY error code the server sends within `wait`, if any.
async fn goaway_within(h2: &mut RawH2, wait: Duration) -> Option<u32> {
    while let Some(f) = h2.next(wait).await {
        if f.kind == GOAWAY {
            return Some(u32::from_be_bytes([
                f.payload[4],
                f.payload[5],
                f.payload[6],
                f.payload[7],
            ]));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_at_max_pending_accept_resets() {
    let edge = Edge::start(|c| c.query.max_calls_per_application = 4096).await;
    let limit = u32::try_from(edge_limits().max_pending_accept_resets).unwrap();
    // Within the limit, in one burst: the connection stays.
    let mut h2 = RawH2::connect(edge.gateway_addr(), &edge.material(&app())).await;
    // The server's SETTINGS are read (and acknowledged) first: afterwards
    // the only frames to come are the server's answers.
    settings_of(&mut h2).await;
    h2.send_all(&rapid_resets(1, limit - 8)).await;
    let within = goaway_within(&mut h2, Duration::from_secs(1)).await;
    h2.send(PING, 0, 0, &[7; 8]).await;
    let mut pong = false;
    while let Some(f) = h2.next(Duration::from_secs(2)).await {
        if f.kind == PING && f.flags & ACK != 0 {
            pong = true;
            break;
        }
    }
    // Far past it, in one burst: closed with ENHANCE_YOUR_CALM.
    let mut flood = RawH2::connect(edge.gateway_addr(), &edge.material(&app())).await;
    settings_of(&mut flood).await;
    flood.send_all(&rapid_resets(1, limit * 8)).await;
    let past = goaway_within(&mut flood, Duration::from_secs(5)).await;
    println!(
        "rapid reset: {} calls reset at once: goaway {within:?}, still answers pings: {pong}; {} at once: goaway {past:?}",
        limit - 8,
        limit * 8
    );
    assert_eq!(within, None, "within the limit the connection stays");
    assert!(pong, "and answers");
    assert_eq!(
        past,
        Some(ENHANCE_YOUR_CALM),
        "a flood of reset calls closes the connection"
    );
    edge.stop().await;
}

/// The connection limits the edge's gateway runs with (the defaults).
fn edge_limits() -> yrd_server::ConnectionLimits {
    yrd_server::ConnectionLimits::default()
}

// --- (c) malformed protobuf -------------------------------------------------

/// A unary gRPC call of `path` whose body is `message` in valid gRPC
/// framing; the status and message the server answers with.
async fn raw_call(channel: &mut Channel, path: &str, message: &[u8]) -> (tonic::Code, String) {
    use tonic::codegen::Service;
    // Garbage that is still text: the only body type at hand is String.
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    let body = String::from_utf8(framed).expect("ASCII garbage");
    futures::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let req = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .unwrap();
    let response = channel.call(req).await.unwrap();
    let mut headers = response.headers().clone();
    let mut body = response.into_body();
    // A trailers-only answer has the status in its headers; otherwise it
    // is in the trailers.
    if !headers.contains_key("grpc-status") {
        use http_body::Body as _;
        while let Some(frame) = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(trailers) = frame.unwrap().into_trailers() {
                headers = trailers;
            }
        }
    }
    let status = tonic::Status::from_header_map(&headers).expect("a grpc-status");
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument() {
    let edge = Edge::start(|_| {}).await;
    // Field 1 with wire type 7, which does not exist.
    let garbage = b"\x0f\x0f\x0f\x0f\x0f";
    // A truncated length-delimited field: field 1, length 100, 3 bytes.
    let truncated = b"\x0a\x64abc";
    let gateway = PeerId::gateway(TD, "gw").unwrap();
    let mut to_gateway = edge.channel(edge.gateway_addr(), &app()).await.unwrap();
    let to_node = edge.channel(edge.node_addr(), &gateway).await.unwrap();
    for (target, channel, path) in [
        ("gateway", &to_gateway, "/yrd.mesh.v1.Federation/Query"),
        ("gateway", &to_gateway, "/yrd.mesh.v1.Federation/ListRegions"),
        ("node", &to_node, "/yrd.mesh.v1.DataNode/Query"),
        ("node", &to_node, "/yrd.mesh.v1.DataNode/GetCatalog"),
    ] {
        for body in [&garbage[..], &truncated[..]] {
            let (code, message) = raw_call(&mut channel.clone(), path, body).await;
            println!("malformed: {target} {path}: {code:?} {message:?}");
            assert_eq!(code, tonic::Code::InvalidArgument, "{path}: {message}");
            assert!(message.contains("could not be decoded"), "{path}: {message}");
        }
    }
    // A well-formed request on the same connection still works.
    let (code, message) = raw_call(&mut to_gateway, "/yrd.mesh.v1.Federation/ListRegions", b"").await;
    assert_eq!(code, tonic::Code::Ok, "{message}");
    edge.stop().await;
}

// --- (d) health and reflection ----------------------------------------------

/// Health `Check` and a reflection `ListServices` (v1 and v1alpha) as `id`:
/// each call's outcome.
async fn health_and_reflection(
    edge: &Edge,
    addr: SocketAddr,
    id: &PeerId,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::{v1, v1alpha};

    let channel = edge.channel(addr, id).await.unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let v1 = async {
        let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("no answer"))?;
        Ok::<(), tonic::Status>(())
    }
    .await;
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let v1alpha = async {
        let mut answers = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        answers
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("no answer"))?;
        Ok::<(), tonic::Status>(())
    }
    .await;
    vec![
        ("health", health),
        ("reflection v1", v1),
        ("reflection v1alpha", v1alpha),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_refuse_another_trust_domain() {
    let edge = Edge::start(|_| {}).await;
    let targets = [("gateway", edge.gateway_addr()), ("node", edge.node_addr())];
    for (target, addr) in targets {
        // Another trust domain: its certificate passes TLS (the bundle
        // trusts its CA), but it is not of this mesh.
        for id in [
            PeerId::app(OTHER_TD, "dashboard").unwrap(),
            PeerId::gateway(OTHER_TD, "gw").unwrap(),
        ] {
            for (what, outcome) in health_and_reflection(&edge, addr, &id).await {
                println!(
                    "trust domain: {target} {what} as {id}: {:?}",
                    outcome.as_ref().map_err(tonic::Status::code)
                );
                let status = outcome.expect_err("another trust domain is refused");
                assert_eq!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "{target} {what}: {status:?}"
                );
                assert!(status.message().contains(OTHER_TD), "{target} {what}: {status:?}");
            }
        }
        // Any identity of the mesh's own trust domain is served.
        for id in [
            app(),
            PeerId::gateway(TD, "gw").unwrap(),
            PeerId::operator(TD, REGION, "wang").unwrap(),
            PeerId::node(TD, "310000", "n1").unwrap(),
        ] {
            for (what, outcome) in health_and_reflection(&edge, addr, &id).await {
                println!(
                    "trust domain: {target} {what} as {id}: {:?}",
                    outcome.as_ref().map_err(tonic::Status::code)
                );
                outcome.unwrap_or_else(|e| panic!("{target} {what} as {id}: {e:?}"));
            }
        }
    }
    edge.stop().await;
}
