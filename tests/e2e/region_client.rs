//! The gateway's per-region client stack against a scripted DataNode over
//! mutual TLS on a real socket: its deadline, its one retry and its budget,
//! and its fast failure when a region has no healthy endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use yrd_gateway::client;
use yrd_gateway::registry::{EndpointHealth, Region, RegionEndpoint};
use yrd_identity::{PeerId, TlsMaterial, TlsPaths};
use yrd_proto::mesh;
use yrd_proto::mesh::data_node_server::{DataNode, DataNodeServer};
use yrd_proto::mesh::{
    AggregateResponse, Catalog, GetCatalogRequest, NodeAggregateRequest, NodeQueryRequest, NodeQueryResponse,
    NodeQuerySummary, RowBatch, node_query_response,
};

use crate::mesh::{StallProxy, TD, issue};

/// The node request messages the gateway sends (one line to change when
/// they are renamed).
type NodeQuery = NodeQueryRequest;
type NodeAggregate = NodeAggregateRequest;

const DEADLINE_MESSAGE: &str = "the region did not answer before the deadline";

/// How the scripted node answers.
#[derive(Clone, Copy)]
enum Script {
    /// The first `times` calls fail with `code`; later ones answer.
    Fail { code: Code, times: usize },
    /// Calls never answer.
    Hang,
    /// A Query sends one row, then fails `UNAVAILABLE`.
    RowThenUnavailable,
    /// A Query sends one row, then nothing more.
    RowThenHang,
    /// A Query sends rows as fast as it can until it is cancelled.
    Flood,
}

struct ScriptedNode {
    script: Script,
    calls: Arc<AtomicUsize>,
}

impl ScriptedNode {
    /// Counts the call; `Err` when the script fails it.
    async fn begin(&self) -> Result<(), Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.script {
            Script::Fail { code, times } if n < times => Err(Status::new(code, "scripted failure")),
            Script::Hang => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

fn batch() -> NodeQueryResponse {
    NodeQueryResponse {
        kind: Some(node_query_response::Kind::Batch(RowBatch {
            rows: vec![prost_types::Any::default()],
            sort_keys: vec![vec![1]],
            ..Default::default()
        })),
    }
}

#[tonic::async_trait]
impl DataNode for ScriptedNode {
    /// Always answers, uncounted: tests warm their connection with it.
    async fn get_catalog(&self, _req: Request<GetCatalogRequest>) -> Result<Response<Catalog>, Status> {
        Ok(Response::new(Catalog::default()))
    }

    type QueryStream = ReceiverStream<Result<NodeQueryResponse, Status>>;

    async fn query(&self, _req: Request<NodeQuery>) -> Result<Response<Self::QueryStream>, Status> {
        self.begin().await?;
        let (tx, rx) = mpsc::channel(4);
        let script = self.script;
        tokio::spawn(async move {
            let _ = tx.send(Ok(batch())).await;
            match script {
                Script::RowThenUnavailable => {
                    let _ = tx.send(Err(Status::unavailable("scripted failure mid-stream"))).await;
                }
                Script::RowThenHang => tx.closed().await,
                Script::Flood => while tx.send(Ok(batch())).await.is_ok() {},
                _ => {
                    let summary = NodeQueryResponse {
                        kind: Some(node_query_response::Kind::Summary(NodeQuerySummary::default())),
                    };
                    let _ = tx.send(Ok(summary)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn aggregate(&self, _req: Request<NodeAggregate>) -> Result<Response<AggregateResponse>, Status> {
        self.begin().await?;
        Ok(Response::new(AggregateResponse::default()))
    }

    async fn explain(&self, _req: Request<NodeQueryRequest>) -> Result<Response<mesh::PolicyDecision>, Status> {
        Err(Status::unimplemented("scripted node"))
    }

    async fn request_access(
        &self,
        _req: Request<mesh::RequestAccessRequest>,
    ) -> Result<Response<mesh::AccessRequest>, Status> {
        Err(Status::unimplemented("scripted node"))
    }

    async fn list_access_requests(
        &self,
        _req: Request<mesh::ListAccessRequestsRequest>,
    ) -> Result<Response<mesh::ListAccessRequestsResponse>, Status> {
        Err(Status::unimplemented("scripted node"))
    }

    async fn decide_access(
        &self,
        _req: Request<mesh::DecideAccessRequest>,
    ) -> Result<Response<mesh::AccessRequest>, Status> {
        Err(Status::unimplemented("scripted node"))
    }

    async fn revoke_access(
        &self,
        _req: Request<mesh::RevokeAccessRequest>,
    ) -> Result<Response<mesh::AccessRequest>, Status> {
        Err(Status::unimplemented("scripted node"))
    }

    type ReadAuditStream = ReceiverStream<Result<mesh::AuditLines, Status>>;

    async fn read_audit(
        &self,
        _req: Request<mesh::ReadAuditRequest>,
    ) -> Result<Response<Self::ReadAuditStream>, Status> {
        Err(Status::unimplemented("scripted node"))
    }
}

/// A scripted node on port 0, and a gateway identity to call it with.
struct Fixture {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    gateway: TlsMaterial,
    calls: Arc<AtomicUsize>,
    /// TCP connections the node accepted.
    connections: Arc<AtomicUsize>,
}

impl Fixture {
    async fn start(script: Script) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        yrd_identity::init_ca(&pki, TD).unwrap();
        let node = issue(&pki, &PeerId::node(TD, "310000", "n1").unwrap(), true);
        let gw = issue(&pki, &PeerId::gateway(TD, "gw").unwrap(), true);
        let calls = Arc::new(AtomicUsize::new(0));
        let tls = server_tls(&node);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = DataNodeServer::new(ScriptedNode {
            script,
            calls: calls.clone(),
        });
        // Serving, for the gateway's registry's probes.
        let (_, health) = tonic_health::server::health_reporter();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), move |c| {
            accepted.fetch_add(1, Ordering::SeqCst);
            c
        });
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(health)
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Self {
            _dir: dir,
            addr,
            gateway: TlsMaterial::load(&gw.ca, &gw.cert, &gw.key).unwrap(),
            calls,
            connections,
        }
    }

    /// A region whose one endpoint (healthy or not) is `addr`.
    fn region_at(&self, addr: std::net::SocketAddr, healthy: bool) -> Region {
        let url = format!("https://{addr}");
        let channel = Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(yrd_identity::tonic_client_tls(&self.gateway, "localhost"))
            .unwrap()
            .connect_lazy();
        let endpoint = Arc::new(RegionEndpoint::new(url));
        endpoint.record(EndpointHealth {
            healthy,
            checked_at: Some(Instant::now()),
            error: (!healthy).then(|| "scripted: not serving".to_owned()),
            ..EndpointHealth::default()
        });
        Region::new(
            "310000".into(),
            "Shanghai".into(),
            vec![endpoint],
            yrd_gateway::registry::RegionChannel::fixed(vec![channel]),
        )
    }

    /// A healthy region served by the scripted node.
    fn region(&self) -> Arc<Region> {
        Arc::new(self.region_at(self.addr, true))
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn server_tls(paths: &TlsPaths) -> ServerTlsConfig {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&paths.cert), read(&paths.key)))
        .client_ca_root(Certificate::from_pem(read(&paths.ca)))
}

fn query() -> NodeQuery {
    NodeQuery {
        dataset: "enterprise".into(),
        ..Default::default()
    }
}

fn within(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Reads a region's stream to its end: the rows, or the status it failed with.
async fn drain(mut stream: client::RegionStream<NodeQueryResponse>) -> Result<usize, Status> {
    let mut rows = 0;
    loop {
        match stream.message().await {
            Err(status) => {
                stream.finish(Err(&status));
                return Err(status);
            }
            Ok(None) => {
                stream.finish(Ok(()));
                return Ok(rows);
            }
            Ok(Some(msg)) => {
                if let Some(node_query_response::Kind::Batch(b)) = msg.kind {
                    rows += b.rows.len();
                }
            }
        }
    }
}

#[tokio::test]
async fn a_node_that_never_answers_costs_the_deadline_and_reads_as_one() {
    // tonic's own grpc-timeout timer would end these calls as CANCELLED;
    // the stack's typed deadline must be the one that fires.
    let fx = Fixture::start(Script::Hang).await;
    let region = fx.region();
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let err = client::call(&region, query(), Instant::now() + deadline)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.message(), DEADLINE_MESSAGE);
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(500),
        "took {took:?}"
    );

    let err = client::call(&region, NodeAggregate::default(), within(200))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.message(), DEADLINE_MESSAGE);
}

#[tokio::test]
async fn a_stalled_connection_costs_the_deadline() {
    let fx = Fixture::start(Script::Fail {
        code: Code::Ok,
        times: 0,
    })
    .await;
    let proxy = StallProxy::start(fx.addr).await;
    let region = Arc::new(fx.region_at(proxy.addr, true));
    // One call through the proxy opens the connection; then it hangs.
    let stream = client::call(&region, query(), within(5000)).await.unwrap();
    assert_eq!(drain(stream).await.unwrap(), 1);
    proxy.stall();
    let started = Instant::now();
    let err = client::call(&region, GetCatalogRequest {}, within(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.message(), DEADLINE_MESSAGE);
    assert!(started.elapsed() < Duration::from_millis(800));
}

#[tokio::test]
async fn a_stream_that_stops_mid_way_ends_at_the_deadline() {
    let fx = Fixture::start(Script::RowThenHang).await;
    let region = fx.region();
    let started = Instant::now();
    let mut stream = client::call(&region, query(), within(300)).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(node_query_response::Kind::Batch(_))));
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.message(), DEADLINE_MESSAGE);
    assert!(started.elapsed() < Duration::from_millis(800));
}

#[tokio::test]
async fn unavailable_is_retried_once_before_the_first_row() {
    let fx = Fixture::start(Script::Fail {
        code: Code::Unavailable,
        times: 1,
    })
    .await;
    let region = fx.region();
    let stream = client::call(&region, query(), within(5000)).await.unwrap();
    assert_eq!(drain(stream).await.unwrap(), 1);
    assert_eq!(fx.calls(), 2, "one failed call, one retry");

    // Unary calls take the same road.
    let fx = Fixture::start(Script::Fail {
        code: Code::Unavailable,
        times: 1,
    })
    .await;
    client::call(&fx.region(), NodeAggregate::default(), within(5000))
        .await
        .unwrap();
    assert_eq!(fx.calls(), 2);
}

#[tokio::test]
async fn only_one_retry_and_only_of_unavailable() {
    let fx = Fixture::start(Script::Fail {
        code: Code::Unavailable,
        times: usize::MAX,
    })
    .await;
    let err = client::call(&fx.region(), query(), within(5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "scripted failure");
    assert_eq!(fx.calls(), 2, "retried once, not more");

    let fx = Fixture::start(Script::Fail {
        code: Code::InvalidArgument,
        times: 1,
    })
    .await;
    let err = client::call(&fx.region(), query(), within(5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fx.calls(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn no_retry_after_the_first_row() {
    let fx = Fixture::start(Script::RowThenUnavailable).await;
    let stream = client::call(&fx.region(), query(), within(5000)).await.unwrap();
    let err = drain(stream).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(fx.calls(), 1, "a stream that began is never retried");
}

#[tokio::test]
async fn no_retry_without_time_for_it() {
    let fx = Fixture::start(Script::Fail {
        code: Code::Unavailable,
        times: 1,
    })
    .await;
    let region = fx.region();
    // Connected first, so that the short deadline is spent on the call.
    client::call(&region, GetCatalogRequest {}, within(5000)).await.unwrap();
    // Too little left for the pause and a second attempt.
    let err = client::call(&region, query(), within(80)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(fx.calls(), 1);
}

#[tokio::test]
async fn the_budget_stops_retries() {
    let fx = Fixture::start(Script::Fail {
        code: Code::Unavailable,
        times: 1,
    })
    .await;
    let region = Arc::new(
        fx.region_at(fx.addr, true)
            .with_retry_budget(client::retry_budget(0, 0.0)),
    );
    let err = client::call(&region, query(), within(5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(fx.calls(), 1, "an empty budget allows no retry");
}

#[tokio::test]
async fn a_region_without_a_healthy_endpoint_fails_at_once() {
    let fx = Fixture::start(Script::Hang).await;
    let region = Arc::new(fx.region_at(fx.addr, false));
    let started = Instant::now();
    let err = client::call(&region, query(), within(5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().starts_with("no healthy node ("), "{err:?}");
    assert!(err.message().contains("scripted: not serving"), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(fx.calls(), 0, "the node was never called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_never_get_the_nodes_connection_closed() {
    // The gateway cancels calls all the time (a page filled before a
    // region finished, an application gone), and the node's frames for
    // them still arrive. With h2's defaults the connection forgot all
    // but 50 of the streams it reset, answered each late frame with a
    // reset of its own, and after 1024 of those in its life closed itself
    // (`ENHANCE_YOUR_CALM`), failing every call on it (issue 10's bench).
    // Here the registry's own connection, as the gateway dials it.
    let fx = Fixture::start(Script::Flood).await;
    let config = yrd_gateway::GatewayConfig::parse(
        &format!(
            "listen = \"127.0.0.1:0\"\n[query]\npage_token_secret = \"test-secret-0123456789\"\n\
             [health]\ninterval = \"100ms\"\n\
             [[regions]]\nid = \"310000\"\nendpoints = [\"https://{}\"]\ntls_server_name = \"localhost\"\n",
            fx.addr
        ),
        "test",
    )
    .unwrap();
    let registry = yrd_gateway::registry::Registry::start(
        &config,
        Some(&fx.gateway),
        Arc::new(yrd_gateway::assertion::Asserter::default()),
    )
    .unwrap();
    assert!(
        registry.wait_healthy(Duration::from_secs(10)).await,
        "the node is healthy"
    );
    // Two connections, both up before any call: the probes' and the
    // calls' (checked once before the endpoint went in).
    assert_eq!(fx.connections.load(Ordering::SeqCst), 2);
    let region = registry.get("310000").unwrap().clone();

    const ROUNDS: usize = 30;
    const AT_ONCE: usize = 100;
    let mut failed = Vec::new();
    for _ in 0..ROUNDS {
        let calls: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let region = region.clone();
                tokio::spawn(async move {
                    // One batch read, then the call is dropped mid-stream.
                    let mut stream = client::call(&region, query(), within(5000)).await?;
                    stream.message().await.map(|_| ())
                })
            })
            .collect();
        for call in calls {
            if let Err(status) = call.await.unwrap() {
                failed.push(status);
            }
        }
    }
    println!(
        "cancelled {} flooding calls, {AT_ONCE} at a time: {} failed",
        ROUNDS * AT_ONCE,
        failed.len()
    );
    assert!(failed.is_empty(), "the first failure: {:?}", failed.first());
    // The connection, and the region, are still there.
    assert!(region.healthy());
    client::call(&region, GetCatalogRequest {}, within(5000)).await.unwrap();
    assert_eq!(fx.calls(), ROUNDS * AT_ONCE);
    assert_eq!(fx.connections.load(Ordering::SeqCst), 2, "and no reconnection");
}
