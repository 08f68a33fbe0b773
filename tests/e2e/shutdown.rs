//! Graceful shutdown of the real binaries: `yrd-node` and `yrd-gateway`
//! started as separate processes from the `deploy/local` configs (listen
//! addresses moved to free loopback ports, certificates made at test
//! time), sent SIGTERM in the middle of a long streaming query. Each exits
//! 0 within its grace period, and the client gets the whole stream or a
//! clean `UNAVAILABLE`, never a hang.
//!
//! The binaries are built by cargo before they run (see [`binary`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use yrd_identity::{PeerId, TlsMaterial};
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{Consistency, QueryRequest, QueryResponse, query_response};

use crate::harness::generate_store;
use crate::mesh::{TD, issue};
use crate::procs::{Process, free_port};

/// The grace period both processes are configured with.
const GRACE: Duration = Duration::from_secs(1);
/// What the processes may take beyond the grace period: the drained
/// calls' last frames, the span flush, the process exit.
const EXIT_SLACK: Duration = Duration::from_secs(4);
/// Rows per message at the node and the gateway: many small messages make
/// a stream that outlasts the grace period when its client reads slowly.
const BATCH_ROWS: i64 = 5;
/// The region both processes serve.
const REGION: &str = "310000";

/// Waits for `process` to exit, at most `limit`.
async fn exit_within(process: &mut Process, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} still running {limit:?} after SIGTERM:\n{}",
            process.name,
            process.logs()
        );
        // No exit notification without a process reaper: poll.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node and a gateway in front of it, each its own process.
struct LocalMesh {
    dir: tempfile::TempDir,
    node: Process,
    gateway: Process,
    gateway_addr: SocketAddr,
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn paths_table(paths: &yrd_identity::TlsPaths) -> toml::Value {
    let mut t = toml::Table::new();
    for (k, p) in [("ca", &paths.ca), ("cert", &paths.cert), ("key", &paths.key)] {
        t.insert(k.into(), p.display().to_string().into());
    }
    t.into()
}

fn deploy_config(file: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local").join(file);
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.entry(key)
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap()
}

impl LocalMesh {
    /// Starts the Shanghai node and the gateway, on free loopback ports.
    async fn start() -> Self {
        let [node_port, node_admin, gateway_port, gateway_admin] = std::array::from_fn(|_| free_port());
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        yrd_identity::init_ca(&pki, TD).unwrap();
        let grace = humantime_text(GRACE);

        let db = dir.path().join("shanghai.sqlite");
        generate_store(db.clone(), REGION.to_owned()).await;
        let mut node = deploy_config("shanghai.toml");
        node.insert("listen".into(), local(node_port).into());
        node.insert("admin_listen".into(), local(node_admin).into());
        node.insert("shutdown_grace".into(), grace.clone().into());
        let node_tls = issue(&pki, &PeerId::node(TD, REGION, "node-1").unwrap(), true);
        node.insert("tls".into(), paths_table(&node_tls));
        table(&mut node, "store").insert("path".into(), db.display().to_string().into());
        table(&mut node, "query").insert("batch_rows".into(), BATCH_ROWS.into());
        // The shipped policy, read from where it is shipped.
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/policy/shanghai.toml");
        table(&mut node, "policy").insert("file".into(), policy.display().to_string().into());
        let node_path = dir.path().join("shanghai.toml");
        std::fs::write(&node_path, toml::to_string(&node).unwrap()).unwrap();

        let mut gateway = deploy_config("gateway.toml");
        let gateway_addr: SocketAddr = local(gateway_port).parse().unwrap();
        gateway.insert("listen".into(), gateway_addr.to_string().into());
        gateway.insert("admin_listen".into(), local(gateway_admin).into());
        gateway.insert("shutdown_grace".into(), grace.into());
        let gateway_tls = issue(&pki, &PeerId::gateway(TD, "gateway").unwrap(), true);
        gateway.insert("tls".into(), paths_table(&gateway_tls));
        table(&mut gateway, "query").insert("batch_rows".into(), BATCH_ROWS.into());
        table(&mut gateway, "health").insert("interval".into(), "200ms".into());
        let regions = gateway.get_mut("regions").unwrap().as_array_mut().unwrap();
        regions.retain(|r| r.get("id").and_then(toml::Value::as_str) == Some(REGION));
        regions[0]
            .as_table_mut()
            .unwrap()
            .insert("endpoints".into(), vec![format!("https://{}", local(node_port))].into());
        let gateway_path = dir.path().join("gateway.toml");
        std::fs::write(&gateway_path, toml::to_string(&gateway).unwrap()).unwrap();
        // The rewritten files are still valid configs.
        yrd_node::NodeConfig::load(&node_path).unwrap();
        yrd_gateway::GatewayConfig::load(&gateway_path).unwrap();

        let node = Process::start("yrd-node", &node_path, &[], dir.path());
        let gateway = Process::start("yrd-gateway", &gateway_path, &[], dir.path());
        let mesh = Self {
            dir,
            node,
            gateway,
            gateway_addr,
        };
        // The gateway is ready once the region answers its health checks.
        mesh.wait_ready(local(gateway_admin).parse().unwrap()).await;
        mesh
    }

    async fn wait_ready(&self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(admin, "/readyz").await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "not ready:\n{}\n{}",
                self.node.logs(),
                self.gateway.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn app(&self) -> FederationClient<Channel> {
        let paths = issue(
            &self.dir.path().join("pki"),
            &PeerId::app(TD, "shutdown").unwrap(),
            false,
        );
        let m = TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap();
        let tls = yrd_identity::tonic_client_tls(&m, "localhost");
        let channel = crate::mesh::Mesh::channel(&format!("https://{}", self.gateway_addr), tls)
            .await
            .unwrap();
        FederationClient::new(channel)
    }
}

/// A duration as configs write it (humantime text, such as `1000ms`).
fn humantime_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The status code of a GET, or `None` when nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// How a stream ended for its client.
#[derive(Debug)]
enum Outcome {
    /// Every message, the summary last.
    Whole { batches: usize },
    /// Some batches, then a status.
    Ended { batches: usize, status: tonic::Status },
}

/// Reads the rest of `stream` the way a slow client does: a pause after
/// every message, so that the stream outlasts the grace period.
async fn read_slowly(mut stream: tonic::Streaming<QueryResponse>, mut batches: usize) -> Outcome {
    loop {
        match stream.next().await {
            Some(Ok(m)) => match m.kind {
                Some(query_response::Kind::Batch(_)) => batches += 1,
                Some(query_response::Kind::Summary(_)) => {
                    assert!(stream.next().await.is_none(), "nothing after the summary");
                    return Outcome::Whole { batches };
                }
                None => panic!("an empty message"),
            },
            Some(Err(status)) => return Outcome::Ended { batches, status },
            None => panic!("the stream ended without a summary or a status after {batches} batches"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Starts a long query, sends SIGTERM to the process `stop` picks once the
/// first batch has come, and checks the exit and what the client got.
async fn sigterm_during_a_stream(stop: fn(&mut LocalMesh) -> &mut Process) {
    let mut mesh = LocalMesh::start().await;
    let mut app = mesh.app().await;
    let mut stream = app
        .query(QueryRequest {
            dataset: "enterprise".into(),
            page_size: 1000,
            // A node that stops must show as an error, not as fewer rows.
            consistency: Consistency::AllRegions as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(query_response::Kind::Batch(_))));

    let process = stop(&mut mesh);
    let sent = Instant::now();
    process.terminate();
    // Never a hang: the stream ends, one way or the other, soon after the grace period.
    let outcome = tokio::time::timeout(GRACE + EXIT_SLACK + Duration::from_secs(10), read_slowly(stream, 1))
        .await
        .unwrap_or_else(|_| panic!("the client still waits:\n{}", process.logs()));
    let status = exit_within(process, GRACE + EXIT_SLACK).await;
    let took = sent.elapsed();
    assert!(
        status.success(),
        "{} exited with {status}:\n{}",
        process.name,
        process.logs()
    );
    assert!(took <= GRACE + EXIT_SLACK, "{} took {took:?} to stop", process.name);
    match outcome {
        Outcome::Whole { batches } => assert!(batches > 1, "{batches} batches"),
        Outcome::Ended { batches, status } => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?} after {batches} batches");
            assert!(
                status.message().contains("shutting down"),
                "{status:?} after {batches} batches"
            );
        }
    }
    let logs = process.logs();
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sent_sigterm_mid_stream_drains_and_exits_0() {
    sigterm_during_a_stream(|mesh| &mut mesh.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sent_sigterm_mid_stream_drains_and_exits_0() {
    sigterm_during_a_stream(|mesh| &mut mesh.gateway).await;
}
