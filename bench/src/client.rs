//! What the harness runs against the mesh: an application's queries
//! through the gateway, and the same work done by a client that fans out
//! to the nodes itself (with the gateway's identity: nodes answer only
//! gateways) and merges ordered rows on their sort keys. Every run counts
//! the rows it got and digests them, so that variants can be shown to
//! deliver the same rows.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use prost::Message;
use prost_types::Any;
use tonic::transport::{Channel, Endpoint};
use yrd_gateway::assertion::{Asserter, HEADER};
use yrd_gateway::client::{Acting, NodeMethod};
use yrd_identity::{Signer, TlsMaterial};
use yrd_proto::datasets::enterprise::v1::Enterprise;
use yrd_proto::mesh::data_node_client::DataNodeClient;
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{
    AggregateRequest, AggregateResponse, NodeQueryRequest, QueryRequest, RegionState, RowBatch, node_query_response,
    query_response,
};
use yrd_query::{CheckedQuery, Limits};

use crate::setup::{self, PURPOSE, Workspace};

/// How long any one call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// Rows received and their digests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rows {
    /// How many.
    pub rows: u64,
    /// A digest of the rows in the order received.
    pub ordered: u64,
    /// A digest of the rows as a set (order ignored).
    pub set: u64,
    /// Calls made (pages through the gateway, node calls directly).
    pub calls: u64,
}

impl Rows {
    fn add(&mut self, row: &Any) {
        let mut h = std::hash::DefaultHasher::new();
        row.type_url.hash(&mut h);
        row.value.hash(&mut h);
        let x = h.finish();
        self.rows += 1;
        self.ordered = self.ordered.wrapping_mul(0x100_0000_01b3).wrapping_add(x);
        self.set = self.set.wrapping_add(x);
    }
}

/// A channel to `addr`, with mutual TLS as `tls`'s identity unless none.
pub async fn channel(addr: SocketAddr, tls: Option<&TlsMaterial>) -> anyhow::Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://127.0.0.1:{}", addr.port()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    if let Some(m) = tls {
        ep = ep.tls_config(yrd_identity::tonic_client_tls(m, "localhost"))?;
    }
    ep.connect().await.with_context(|| format!("connecting to {addr}"))
}

/// The harness's application identity, or none for an insecure mesh.
pub fn app_tls(ws: &Workspace, insecure: bool) -> anyhow::Result<Option<TlsMaterial>> {
    if insecure {
        return Ok(None);
    }
    Ok(Some(TlsMaterial::for_identity(&ws.pki(), &setup::app_id()?)?))
}

/// A client of the gateway's `Federation` service, as the application.
pub async fn app(ws: &Workspace, addr: SocketAddr, insecure: bool) -> anyhow::Result<FederationClient<Channel>> {
    let tls = app_tls(ws, insecure)?;
    Ok(FederationClient::new(channel(addr, tls.as_ref()).await?).max_decoding_message_size(64 << 20))
}

/// The page of 20 of the issue: large enterprises, largest first.
pub fn page20() -> QueryRequest {
    QueryRequest {
        dataset: "enterprise".into(),
        filter: "registered_capital > 1000000".into(),
        order_by: "registered_capital desc".into(),
        page_size: 20,
        purpose: PURPOSE.into(),
        ..Default::default()
    }
}

/// The whole enterprise dataset in pages of 5000, no order asked.
pub fn full_scan() -> QueryRequest {
    QueryRequest {
        dataset: "enterprise".into(),
        page_size: 5000,
        purpose: PURPOSE.into(),
        ..Default::default()
    }
}

/// One page through the gateway; fails unless every region answered.
pub async fn gateway_page(app: &mut FederationClient<Channel>, req: QueryRequest) -> anyhow::Result<(Rows, String)> {
    let mut request = tonic::Request::new(req);
    request.set_timeout(CALL_DEADLINE);
    let mut stream = app.query(request).await?.into_inner();
    let mut rows = Rows {
        calls: 1,
        ..Rows::default()
    };
    let mut token = None;
    while let Some(m) = stream.next().await {
        match m?.kind {
            Some(query_response::Kind::Batch(b)) => b.rows.iter().for_each(|r| rows.add(r)),
            Some(query_response::Kind::Summary(s)) => {
                if let Some(bad) = s
                    .regions
                    .iter()
                    .find(|r| !matches!(r.state(), RegionState::Ok | RegionState::Skipped))
                {
                    bail!(
                        "region {} answered {:?} ({}): {}",
                        bad.region,
                        bad.state(),
                        bad.reason,
                        bad.message
                    );
                }
                token = Some(s.next_page_token);
            }
            None => {}
        }
    }
    let token = token.context("the gateway's stream ended without a summary")?;
    Ok((rows, token))
}

/// Every page of `req` through the gateway, following the page tokens.
pub async fn gateway_scan(app: &mut FederationClient<Channel>, req: QueryRequest) -> anyhow::Result<Rows> {
    let mut total = Rows::default();
    let mut token = String::new();
    loop {
        let (rows, next) = gateway_page(
            app,
            QueryRequest {
                page_token: token,
                ..req.clone()
            },
        )
        .await?;
        total.rows += rows.rows;
        total.set = total.set.wrapping_add(rows.set);
        total.calls += 1;
        if next.is_empty() {
            return Ok(total);
        }
        token = next;
    }
}

/// An aggregate through the gateway.
pub async fn gateway_aggregate(
    app: &mut FederationClient<Channel>,
    req: AggregateRequest,
) -> anyhow::Result<AggregateResponse> {
    let mut request = tonic::Request::new(req);
    request.set_timeout(CALL_DEADLINE);
    Ok(app.aggregate(request).await?.into_inner())
}

/// A client that fans out to the nodes itself: the gateway's identity,
/// an assertion per call on behalf of the application, as the gateway does.
#[derive(Clone)]
pub struct Direct {
    nodes: Vec<(String, DataNodeClient<Channel>)>,
    asserter: Arc<Asserter>,
    acting: Acting,
}

impl Direct {
    /// Connects to `nodes` (region, address).
    pub async fn connect(ws: &Workspace, nodes: &[(String, SocketAddr)], insecure: bool) -> anyhow::Result<Self> {
        let tls = if insecure {
            None
        } else {
            Some(TlsMaterial::for_identity(&ws.pki(), &setup::gateway_id()?)?)
        };
        let signer = tls.as_ref().map(Signer::from_material).transpose()?;
        let mut out = Vec::new();
        for (region, addr) in nodes {
            let client = DataNodeClient::new(channel(*addr, tls.as_ref()).await?).max_decoding_message_size(64 << 20);
            out.push((region.clone(), client));
        }
        Ok(Self {
            nodes: out,
            asserter: Arc::new(Asserter::new(signer, Duration::from_secs(30))),
            acting: Acting {
                subject: (!insecure).then(setup::app_id).transpose()?,
                purpose: PURPOSE.to_owned(),
            },
        })
    }

    /// Only node `i` (one node queried directly).
    pub fn only(&self, i: usize) -> Self {
        Self {
            nodes: self.nodes.iter().skip(i).take(1).cloned().collect(),
            ..self.clone()
        }
    }

    /// Every row of `req` from every node with its sort key, in pages of
    /// `req.page_size`: what a stub node serves.
    pub async fn collect(&self, req: &QueryRequest) -> anyhow::Result<RowBatch> {
        let checked = check(req)?;
        let mut out = RowBatch::default();
        for i in 0..self.nodes.len() {
            let mut resume = Vec::new();
            loop {
                let message = checked.node_request(&resume, page_size(req));
                let (more, last) = self
                    .call(i, message, |row, key| {
                        out.rows.push(row);
                        out.sort_keys.push(key);
                    })
                    .await?;
                if !more {
                    break;
                }
                resume = last;
            }
        }
        Ok(out)
    }

    /// One node call: its rows with their sort keys, and whether more follow.
    async fn call(
        &self,
        i: usize,
        message: NodeQueryRequest,
        mut each: impl FnMut(Any, Vec<u8>),
    ) -> anyhow::Result<(bool, Vec<u8>)> {
        let (region, client) = &self.nodes[i];
        let header = self
            .asserter
            .assert(&self.acting, region, <NodeQueryRequest as NodeMethod>::PATH, &message)?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert_bin(HEADER, header);
        request.set_timeout(CALL_DEADLINE);
        let mut stream = client.clone().query(request).await?.into_inner();
        let mut last = Vec::new();
        while let Some(m) = stream.next().await {
            match m?.kind {
                Some(node_query_response::Kind::Batch(b)) => {
                    if let Some(k) = b.sort_keys.last() {
                        last.clone_from(k);
                    }
                    for (row, key) in b.rows.into_iter().zip(b.sort_keys) {
                        each(row, key);
                    }
                }
                Some(node_query_response::Kind::Summary(s)) => return Ok((s.more, last)),
                None => {}
            }
        }
        bail!("region {region}: the stream ended without a summary")
    }

    /// One page of `req`: a call to every node for a page each, then the
    /// rows merged on their sort keys (when ordered) and cut at the page.
    pub async fn page(&self, req: &QueryRequest) -> anyhow::Result<Rows> {
        let checked = check(req)?;
        let limit = page_size(req);
        let calls = (0..self.nodes.len()).map(|i| {
            let message = checked.node_request(&[], limit);
            async move {
                let mut got = Vec::new();
                self.call(i, message, |row, key| got.push((key, row))).await?;
                anyhow::Ok(got)
            }
        });
        let mut all = Vec::new();
        for got in futures::future::join_all(calls).await {
            all.extend(got?);
        }
        if checked.ordered {
            // Each region's rows are in order: a stable sort is their merge.
            all.sort_by(|a, b| a.0.cmp(&b.0));
        }
        all.truncate(limit as usize);
        let mut rows = Rows {
            calls: self.nodes.len() as u64,
            ..Rows::default()
        };
        all.iter().for_each(|(_, r)| rows.add(r));
        Ok(rows)
    }

    /// Every row of `req` from every node, the nodes concurrently, each in
    /// pages of `req.page_size` resumed from the last sort key.
    pub async fn scan(&self, req: &QueryRequest) -> anyhow::Result<Rows> {
        let checked = check(req)?;
        let scans = (0..self.nodes.len()).map(|i| {
            let checked = &checked;
            async move {
                let mut rows = Rows::default();
                let mut resume = Vec::new();
                loop {
                    let message = checked.node_request(&resume, page_size(req));
                    let (more, last) = self.call(i, message, |row, _| rows.add(&row)).await?;
                    rows.calls += 1;
                    if !more {
                        return anyhow::Ok(rows);
                    }
                    resume = last;
                }
            }
        });
        let mut total = Rows::default();
        for r in futures::future::join_all(scans).await {
            let r = r?;
            total.rows += r.rows;
            total.set = total.set.wrapping_add(r.set);
            total.calls += r.calls;
        }
        Ok(total)
    }
}

/// The page size of `req` as a node limit.
fn page_size(req: &QueryRequest) -> u32 {
    u32::try_from(req.page_size).unwrap_or(0)
}

fn check(req: &QueryRequest) -> anyhow::Result<CheckedQuery> {
    let schemas = yrd_proto::schema::Registry::standard().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(CheckedQuery::from_request(req, schemas, &Limits::default())?)
}

/// The aggregate the harness compares: enterprises and their capital by
/// region and industry.
pub fn aggregate_request() -> AggregateRequest {
    use yrd_proto::mesh::{AggregateFunction, Metric};
    AggregateRequest {
        dataset: "enterprise".into(),
        group_by: vec!["region".into(), "industry".into()],
        metrics: vec![
            Metric {
                function: AggregateFunction::Count as i32,
                field: String::new(),
            },
            Metric {
                function: AggregateFunction::Sum as i32,
                field: "registered_capital".into(),
            },
        ],
        purpose: PURPOSE.into(),
        ..Default::default()
    }
}

/// Groups of the aggregate: (region, industry) → (count, sum of capital).
pub type Groups = BTreeMap<(String, String), (u64, f64)>;

/// The aggregate's groups from the gateway's answer.
pub fn groups_of(resp: &AggregateResponse) -> Groups {
    let key = |v: Option<&yrd_proto::mesh::Value>| match v.and_then(|v| v.kind.as_ref()) {
        Some(yrd_proto::mesh::value::Kind::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    resp.groups
        .iter()
        .map(|g| {
            let count = g.metrics.first().map_or(0, |m| m.count);
            let sum = g.metrics.get(1).map_or(0.0, |m| m.sum);
            ((key(g.keys.first()), key(g.keys.get(1))), (count, sum))
        })
        .collect()
}

/// The same aggregate done by the client: every row streamed through the
/// gateway (only the fields it needs), decoded and summed here.
pub async fn client_aggregate(app: &mut FederationClient<Channel>) -> anyhow::Result<(Groups, u64)> {
    let req = QueryRequest {
        fields: vec!["region".into(), "industry".into(), "registered_capital".into()],
        ..full_scan()
    };
    let mut groups = Groups::new();
    let mut token = String::new();
    let mut rows = 0u64;
    loop {
        let mut request = tonic::Request::new(QueryRequest {
            page_token: token,
            ..req.clone()
        });
        request.set_timeout(CALL_DEADLINE);
        let mut stream = app.query(request).await?.into_inner();
        let mut next = String::new();
        while let Some(m) = stream.next().await {
            match m?.kind {
                Some(query_response::Kind::Batch(b)) => {
                    for row in b.rows {
                        let e = Enterprise::decode(row.value.as_slice())?;
                        let g = groups.entry((e.region, e.industry)).or_default();
                        g.0 += 1;
                        g.1 += e.registered_capital;
                        rows += 1;
                    }
                }
                Some(query_response::Kind::Summary(s)) => next = s.next_page_token,
                None => {}
            }
        }
        if next.is_empty() {
            return Ok((groups, rows));
        }
        token = next;
    }
}

/// A digest of groups: counts exactly, sums to the cent (the regions sum
/// in another order than the client).
pub fn groups_digest(g: &Groups) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for ((region, industry), (count, sum)) in g {
        region.hash(&mut h);
        industry.hash(&mut h);
        count.hash(&mut h);
        ((sum * 100.0).round() as i64).hash(&mut h);
    }
    h.finish()
}
