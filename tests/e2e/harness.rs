//! Starts region nodes in-process and connects clients to them.

use std::path::PathBuf;

use futures::StreamExt;
use tonic::transport::Channel;
use yrd_datasets::demo::DemoSpec;
use yrd_node::config::SqliteConfig;
use yrd_node::{NodeConfig, RunningNode, SqliteStore};
use yrd_proto::mesh::data_node_client::DataNodeClient;
use yrd_proto::mesh::{
    AggregateRequest, Metric, NodeAggregateRequest, NodeQueryRequest, NodeQuerySummary, QueryRequest, RegionStatus,
    RowBatch, node_query_response,
};
use yrd_proto::schema::Registry;
use yrd_query::{CheckedAggregate, CheckedQuery, Limits};

/// Demo data scale for tests: a few hundred enterprises per region.
pub const SCALE: f64 = 0.02;
/// Demo seed for tests.
pub const SEED: u64 = 7;

/// Writes `region`'s demo data into a new store at `path`.
pub async fn generate_store(path: PathBuf, region: String) {
    let store = SqliteStore::open_async(
        SqliteConfig {
            path,
            max_idle_connections: 2,
        },
        &region,
    )
    .await
    .expect("open store");
    yrd_node::import::generate(
        &store,
        &region,
        &DemoSpec {
            seed: SEED,
            scale: SCALE,
        },
    )
    .await
    .expect("generate");
}

/// A node serving generated data from a temporary folder.
pub struct TestNode {
    pub node: Option<RunningNode>,
    pub db: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Generates `region`'s demo data and starts a node for it on port 0.
    pub async fn start(region: &str) -> anyhow::Result<Self> {
        Self::start_with(region, |_| {}).await
    }

    /// As [`start`](Self::start), with the config adjusted first.
    pub async fn start_with(region: &str, adjust: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("node.sqlite");
        let mut config = NodeConfig::parse(
            &format!(
                "region = \"{region}\"\nlisten = \"127.0.0.1:0\"\ninsecure = true\n[store]\npath = \"{}\"\n",
                db.display()
            ),
            "test",
        )?;
        adjust(&mut config);
        config.validate("test")?;
        let (path, r) = (db.clone(), region.to_owned());
        generate_store(path, r).await;
        let node = yrd_node::start(config).await?;
        Ok(Self {
            node: Some(node),
            db,
            _dir: dir,
        })
    }

    /// The node's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.node.as_ref().map(|n| n.addr).expect("node running"))
    }

    /// A client connected over a real socket.
    pub async fn client(&self) -> anyhow::Result<DataNodeClient<Channel>> {
        Ok(DataNodeClient::connect(self.url()).await?)
    }

    /// A direct SQLite connection to the node's store, for checking answers.
    pub fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open store")
    }
}

/// Everything one Query stream returned.
#[derive(Debug)]
pub struct Page {
    pub batches: Vec<RowBatch>,
    pub summary: NodeQuerySummary,
}

impl Page {
    /// The node's status in the summary.
    pub fn region(&self) -> &RegionStatus {
        self.summary.region.as_ref().expect("the summary names the region")
    }

    /// Where the next page starts: the last row's sort key, when more rows follow.
    pub fn resume_key(&self) -> Option<Vec<u8>> {
        if !self.summary.more {
            return None;
        }
        self.batches.iter().flat_map(|b| b.sort_keys.iter()).last().cloned()
    }

    /// The rows' payloads, in order.
    pub fn rows(&self) -> impl Iterator<Item = &prost_types::Any> {
        self.batches.iter().flat_map(|b| b.rows.iter())
    }

    /// The rows decoded as `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Vec<M> {
        self.rows()
            .map(|a| M::decode(a.value.as_slice()).expect("row decodes"))
            .collect()
    }
}

/// Runs one Query to its end; checks that the summary comes last.
pub async fn query(client: &mut DataNodeClient<Channel>, req: NodeQueryRequest) -> Result<Page, tonic::Status> {
    let mut stream = client.query(req).await?.into_inner();
    let mut batches = Vec::new();
    let mut summary = None;
    while let Some(msg) = stream.next().await {
        match msg?.kind {
            Some(node_query_response::Kind::Batch(b)) => {
                assert!(summary.is_none(), "a batch came after the summary");
                assert_eq!(b.rows.len(), b.sort_keys.len(), "one sort key per row");
                batches.push(b);
            }
            Some(node_query_response::Kind::Summary(s)) => summary = Some(s),
            None => panic!("empty QueryResponse"),
        }
    }
    Ok(Page {
        batches,
        summary: summary.expect("stream ends with a summary"),
    })
}

/// A node request for a dataset with a filter and order_by, parsed and
/// checked as the gateway does (nodes never parse text).
pub fn request(dataset: &str, filter: &str, order_by: &str, page_size: u32) -> NodeQueryRequest {
    let federated = QueryRequest {
        dataset: dataset.into(),
        filter: filter.into(),
        order_by: order_by.into(),
        ..Default::default()
    };
    CheckedQuery::from_request(&federated, Registry::standard().expect("schemas"), &Limits::default())
        .expect("a valid test query")
        .node_request(&[], page_size)
}

/// A node aggregate request, its filter parsed and checked as the gateway does.
pub fn aggregate_request(dataset: &str, filter: &str, group_by: &[&str], metrics: Vec<Metric>) -> NodeAggregateRequest {
    let federated = AggregateRequest {
        dataset: dataset.into(),
        filter: filter.into(),
        group_by: group_by.iter().map(|g| (*g).to_owned()).collect(),
        metrics,
        ..Default::default()
    };
    CheckedAggregate::from_request(&federated, Registry::standard().expect("schemas"), &Limits::default())
        .expect("a valid test aggregate")
        .node_request()
}

/// The field violations of a status's BadRequest details: (field, description).
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// A plain HTTP/1.1 GET on loopback; the body of a 200 answer.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        out.lines().next().unwrap_or("")
    );
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The error a call ended with: its status, or the first message of its
/// stream (the node refuses some requests there); panics when it succeeded.
pub async fn first_error<T: std::fmt::Debug>(
    call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    shown: &str,
) -> tonic::Status {
    match call {
        Err(e) => e,
        Ok(resp) => match resp.into_inner().next().await {
            Some(Err(e)) => e,
            other => panic!("{shown}: expected an error, got {other:?}"),
        },
    }
}

/// Asserts that `err` is `code` with one BadRequest violation on `field`,
/// whose text or the message mentions `mention`.
pub fn assert_refused(err: &tonic::Status, code: tonic::Code, field: &str, mention: &str, shown: &str) {
    assert_eq!(err.code(), code, "{shown}: {err:?}");
    let v = violations(err);
    assert_eq!(v.len(), 1, "{shown}: {err:?}");
    assert_eq!(v[0].0, field, "{shown}");
    assert!(
        err.message().contains(mention) || v[0].1.contains(mention),
        "{shown}: {err:?}"
    );
}
