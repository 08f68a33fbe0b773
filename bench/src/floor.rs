//! The floor every figure is held against: what the transport allows on
//! this machine.
//!
//! - The **stub node** (`yrd-bench stub-node`) serves rows of the real
//!   dataset, captured once from a real node and kept encoded in memory:
//!   no store, no policy, no audit, no encoder. It answers `Query` only
//!   (and health), from one of two lists — the page-of-20 order when the
//!   request orders by more than the primary key, the primary-key order
//!   otherwise; the captured lists are already filtered, so the filter is
//!   not evaluated. Resume keys and limits work as on a node.
//! - The **pass-through hop** (`yrd-bench hop`) is the naive proxy: each
//!   `Query` is sent on to one upstream and every message is decoded and
//!   re-encoded on the way back, nothing else.
//!
//! Both are separate processes, with mutual TLS like the nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use yrd_proto::mesh::data_node_client::DataNodeClient;
use yrd_proto::mesh::data_node_server::{DataNode, DataNodeServer};
use yrd_proto::mesh::{
    AccessRequest, AggregateResponse, AuditLines, Catalog, DecideAccessRequest, GetCatalogRequest,
    ListAccessRequestsRequest, ListAccessRequestsResponse, NodeAggregateRequest, NodeQueryRequest, NodeQueryResponse,
    NodeQuerySummary, PolicyDecision, ReadAuditRequest, RegionStatus, RequestAccessRequest, RevokeAccessRequest,
    RowBatch, node_query_response,
};

/// Rows per batch the stub sends (as the nodes are configured).
const BATCH_ROWS: usize = 500;
/// Batches a hop or stub stream holds before waiting for its reader.
const STREAM_BUFFER: usize = 4;

/// The rows a stub serves: the two captured lists, each sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StubRows {
    /// Primary-key order: every row.
    pub scan: RowBatch,
    /// The page-of-20 order: the rows that match its filter.
    pub ordered: RowBatch,
}

impl StubRows {
    /// Writes the lists to `path` (two length-delimited `RowBatch`es).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        self.scan.encode_length_delimited(&mut buf)?;
        self.ordered.encode_length_delimited(&mut buf)?;
        std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads what [`StubRows::save`] wrote.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut slice = buf.as_slice();
        let scan = RowBatch::decode_length_delimited(&mut slice)?;
        let ordered = RowBatch::decode_length_delimited(&mut slice)?;
        Ok(Self { scan, ordered })
    }
}

/// TLS files of a stub or hop (none: plaintext).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// The mesh CA.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This server's certificate.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Its key.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
            return Ok(None);
        };
        Ok(Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?))
                .client_ca_root(Certificate::from_pem(std::fs::read(ca)?)),
        ))
    }
}

/// Serves `node` on `listen` with health, until the process is killed.
async fn serve(listen: SocketAddr, tls: &TlsArgs, node: Floor) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut server = Server::builder();
    if let Some(tls) = tls.server()? {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(health_service)
        .add_service(DataNodeServer::new(node).max_decoding_message_size(64 << 20))
        .serve(listen)
        .await
        .context("serving")
}

/// The stub node's process: serves `rows` as region `region`.
pub async fn run_stub(listen: SocketAddr, region: String, rows: &Path, tls: &TlsArgs) -> anyhow::Result<()> {
    let mut rows = StubRows::load(rows)?;
    rows.scan.region.clone_from(&region);
    rows.ordered.region.clone_from(&region);
    serve(
        listen,
        tls,
        Floor::Stub {
            rows: Arc::new(rows),
            region,
        },
    )
    .await
}

/// The pass-through hop's process: every `Query` to `upstream`.
pub async fn run_hop(listen: SocketAddr, upstream: SocketAddr, client: &TlsArgs, tls: &TlsArgs) -> anyhow::Result<()> {
    let material = match (&client.ca, &client.cert, &client.key) {
        (Some(ca), Some(cert), Some(key)) => Some(yrd_identity::TlsMaterial::load(ca, cert, key)?),
        _ => None,
    };
    let channel = crate::client::channel(upstream, material.as_ref()).await?;
    serve(
        listen,
        tls,
        Floor::Hop {
            upstream: DataNodeClient::new(channel).max_decoding_message_size(64 << 20),
        },
    )
    .await
}

type QueryStream = Pin<Box<dyn Stream<Item = Result<NodeQueryResponse, Status>> + Send>>;
type AuditStream = Pin<Box<dyn Stream<Item = Result<AuditLines, Status>> + Send>>;

/// A stub or a hop: the one `DataNode` of the floor.
enum Floor {
    Stub {
        rows: Arc<StubRows>,
        region: String,
    },
    Hop {
        upstream: DataNodeClient<tonic::transport::Channel>,
    },
}

const ONLY_QUERY: &str = "a benchmark floor serves Query only";

#[tonic::async_trait]
impl DataNode for Floor {
    type QueryStream = QueryStream;
    type ReadAuditStream = AuditStream;

    async fn query(&self, request: Request<NodeQueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        match self {
            Self::Stub { rows, region } => {
                tokio::spawn(stub_answer(rows.clone(), region.clone(), request.into_inner(), tx));
            }
            Self::Hop { upstream } => {
                let mut forwarded = Request::new(request.get_ref().clone());
                if let Some(t) = request.metadata().get("grpc-timeout") {
                    forwarded.metadata_mut().insert("grpc-timeout", t.clone());
                }
                let mut stream = upstream.clone().query(forwarded).await?.into_inner();
                tokio::spawn(async move {
                    // Decoded by tonic here, encoded again when sent on.
                    while let Some(m) = stream.message().await.transpose() {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_catalog(&self, _: Request<GetCatalogRequest>) -> Result<Response<Catalog>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn aggregate(&self, _: Request<NodeAggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn explain(&self, _: Request<NodeQueryRequest>) -> Result<Response<PolicyDecision>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn request_access(&self, _: Request<RequestAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn list_access_requests(
        &self,
        _: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn decide_access(&self, _: Request<DecideAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn revoke_access(&self, _: Request<RevokeAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }

    async fn read_audit(&self, _: Request<ReadAuditRequest>) -> Result<Response<Self::ReadAuditStream>, Status> {
        Err(Status::unimplemented(ONLY_QUERY))
    }
}

/// A stub's answer to `req`: the rows after its resume key, up to its
/// limit, in batches, then the summary.
async fn stub_answer(
    rows: Arc<StubRows>,
    region: String,
    req: NodeQueryRequest,
    tx: mpsc::Sender<Result<NodeQueryResponse, Status>>,
) {
    let list = if req.order_keys.len() > 1 {
        &rows.ordered
    } else {
        &rows.scan
    };
    let start = if req.resume_key.is_empty() {
        0
    } else {
        list.sort_keys
            .partition_point(|k| k.as_slice() <= req.resume_key.as_slice())
    };
    let limit = if req.limit == 0 { 100 } else { req.limit as usize };
    let end = list.rows.len().min(start.saturating_add(limit));
    let mut at = start;
    while at < end {
        let to = end.min(at + BATCH_ROWS);
        let batch = RowBatch {
            rows: list.rows[at..to].to_vec(),
            sort_keys: list.sort_keys[at..to].to_vec(),
            region: region.clone(),
            row_regions: Vec::new(),
        };
        at = to;
        let message = NodeQueryResponse {
            kind: Some(node_query_response::Kind::Batch(batch)),
        };
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
    }
    let summary = NodeQuerySummary {
        region: Some(RegionStatus::answered(
            region.as_str(),
            (end - start) as u64,
            std::time::Duration::ZERO,
            None,
        )),
        more: end < list.rows.len(),
        trace_id: String::new(),
    };
    let _ = tx
        .send(Ok(NodeQueryResponse {
            kind: Some(node_query_response::Kind::Summary(summary)),
        }))
        .await;
}
