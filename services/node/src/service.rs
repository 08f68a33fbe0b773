//! The DataNode service: catalog, queries and aggregates over the store.
//! Handlers validate and plan on the async side, then run the store work on
//! a blocking thread that feeds a bounded channel to the response stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Any;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_proto::freshness;
use yrd_proto::mesh::data_node_server::DataNode;
use yrd_proto::mesh::{
    AggregateFunction, AggregateGroup, AggregateResponse, Catalog, GetCatalogRequest, MetricPartial,
    NodeAggregateRequest, NodeQueryRequest, NodeQueryResponse, NodeQuerySummary, RegionStatus, RowBatch, Value,
    node_query_response, value,
};
use yrd_proto::schema::{DatasetSchema, FieldType};
use yrd_query::sortkey::KeyWriter;
use yrd_query::{CheckedAggregate, CheckedQuery, Limits, QueryError, aggregate};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::store::Store;
use crate::store::encode::{encode_field, sort_key};
use crate::store::sql::{self, SortColumn, Statement};

/// The service name in metrics.
const DATA_NODE: &str = "yrd.mesh.v1.DataNode";

/// Span of a node's Query or Aggregate handling.
pub const SPAN_NODE_QUERY: &str = "node.query";
/// Span of the store work of a query, on its blocking thread.
pub const SPAN_STORE_QUERY: &str = "store.query";

/// Messages buffered between the store thread and the response stream: a
/// slow client slows the store reader, it does not grow memory.
const STREAM_BUFFER: usize = 2;

/// The DataNode implementation.
#[derive(Debug, Clone)]
pub struct NodeService {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    config: NodeConfig,
    store: Store,
    permits: Arc<Semaphore>,
}

/// A validated query, ready to run.
#[derive(Debug)]
struct PagePlan {
    schema: Arc<DatasetSchema>,
    statement: Statement,
    order: Vec<SortColumn>,
    projection: Vec<usize>,
    page_size: u32,
}

/// A validated aggregate, ready to run.
#[derive(Debug)]
struct AggregatePlan {
    schema: Arc<DatasetSchema>,
    statement: Statement,
    group_by: Vec<usize>,
    metrics: Vec<(AggregateFunction, Option<usize>)>,
}

impl NodeService {
    /// A service over `store`, configured by `config`.
    pub fn new(config: NodeConfig, store: Store) -> Self {
        let permits = Arc::new(Semaphore::new(config.query.max_concurrent));
        Self {
            inner: Arc::new(State { config, store, permits }),
        }
    }

    fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    fn plan_query(&self, req: &NodeQueryRequest) -> Result<PagePlan, QueryError> {
        let (checked, after) = CheckedQuery::from_node_request(req, self.inner.store.registry(), self.limits())?;
        let order: Vec<SortColumn> = checked
            .sort_columns()
            .into_iter()
            .map(|(field, descending)| SortColumn { field, descending })
            .collect();
        let statement = sql::select_page(
            &checked.schema,
            &order,
            &checked.projection,
            checked.filter.as_ref(),
            after.as_deref(),
            u64::from(checked.page_size) + 1,
        )?;
        Ok(PagePlan {
            schema: checked.schema,
            statement,
            order,
            projection: checked.projection,
            page_size: checked.page_size,
        })
    }

    fn plan_aggregate(&self, req: &NodeAggregateRequest) -> Result<AggregatePlan, QueryError> {
        let checked = CheckedAggregate::from_node_request(req, self.inner.store.registry(), self.limits())?;
        let statement = sql::aggregate(
            &checked.schema,
            checked.filter.as_ref(),
            &checked.group_fields,
            &checked.metric_fields,
            self.limits().max_groups as u64 + 1,
        )?;
        Ok(AggregatePlan {
            schema: checked.schema,
            statement,
            group_by: checked.group_fields,
            metrics: checked.metric_fields,
        })
    }

    async fn permit(&self, deadline: Instant) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
        let wait = self.inner.permits.clone().acquire_owned();
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(NodeError::Task("query slots closed".into())),
            Err(_) => Err(NodeError::DeadlineExceeded(0)),
        }
    }

    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let max = self.inner.config.query.max_query_time;
        Instant::now() + yrd_query::deadline::requested(req.metadata()).map_or(max, |a| a.min(max))
    }
}

#[tonic::async_trait]
impl DataNode for NodeService {
    async fn get_catalog(&self, _req: Request<GetCatalogRequest>) -> Result<Response<Catalog>, Status> {
        let store = self.inner.store.clone();
        let stats = tokio::task::spawn_blocking(move || store.stats())
            .await
            .map_err(|e| NodeError::Task(e.to_string()))??;
        let region = &self.inner.config.region;
        let datasets = self
            .inner
            .store
            .registry()
            .datasets()
            .iter()
            .map(|schema| {
                let mut info = schema.info();
                let st = stats
                    .iter()
                    .find(|(id, _)| *id == schema.id)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                info.regions.push(RegionStatus::answered(
                    region.as_str(),
                    st.rows,
                    Duration::ZERO,
                    freshness(st.updated_at),
                ));
                info
            })
            .collect();
        Ok(Response::new(Catalog {
            region: region.clone(),
            region_name: self.inner.config.region_label().to_owned(),
            datasets,
        }))
    }

    type QueryStream = ReceiverStream<Result<NodeQueryResponse, Status>>;

    async fn query(&self, req: Request<NodeQueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let req = req.into_inner();
        let span = request_span("Query", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_query(&req))
            .map_err(|e| failed(&span, e.into()))?;
        let permit = self
            .permit(deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| failed(&span, e))?;
        let store_span = store_span(&span, &plan.statement.sql);
        // The request's span stays open until the stream ends, and takes its status.
        let server_span = tracing::Span::current();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let state = self.inner.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let sender = Sender {
                tx: tx.clone(),
                handle,
                deadline,
            };
            let _entered = store_span.enter();
            let _open = yrd_telemetry::OpenStreamGuard::open();
            let outcome = run_query(&state, &plan, &sender, started);
            let code = match &outcome {
                Ok(_) => tonic::Code::Ok,
                Err(NodeError::Cancelled) => tonic::Code::Cancelled,
                Err(NodeError::DeadlineExceeded(_)) => tonic::Code::DeadlineExceeded,
                Err(_) => tonic::Code::Internal,
            };
            yrd_telemetry::request_done(DATA_NODE, "Query", code, started.elapsed());
            yrd_telemetry::record_status(&server_span, code);
            match outcome {
                Ok(rows) => {
                    store_span.record("yrd.rows", rows);
                    span.record("yrd.rows", rows);
                    // The node span ends with its stream (see record_status).
                    span.in_scope(|| {});
                }
                Err(NodeError::Cancelled) => {
                    store_span.record("otel.status_code", "ERROR");
                    store_span.record("otel.status_description", "cancelled by the caller");
                }
                Err(err) => {
                    let status = Status::from(failed(&store_span, err));
                    span.record("otel.status_code", "ERROR");
                    let _ = sender.send(Err(status));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn aggregate(&self, req: Request<NodeAggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let req = req.into_inner();
        let span = request_span("Aggregate", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_aggregate(&req))
            .map_err(|e| failed(&span, e.into()))?;
        let permit = self
            .permit(deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| failed(&span, e))?;
        let store_span = store_span(&span, &plan.statement.sql);
        let state = self.inner.clone();
        let response = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = store_span.enter();
            let result = run_aggregate(&state, &plan, deadline, started).map_err(|e| failed(&store_span, e));
            if let Ok(r) = &result {
                store_span.record("yrd.rows", r.groups.len());
            }
            result
        })
        .await
        .map_err(|e| NodeError::Task(e.to_string()))?
        .map_err(|e| failed(&span, e))?;
        span.record("yrd.rows", response.groups.len());
        yrd_telemetry::request_done(DATA_NODE, "Aggregate", tonic::Code::Ok, started.elapsed());
        yrd_telemetry::record_status(&tracing::Span::current(), tonic::Code::Ok);
        Ok(Response::new(response))
    }
}

/// The sending end of a query stream, used from a blocking thread: every
/// send waits for room in the bounded channel, but never past the deadline.
struct Sender {
    tx: mpsc::Sender<Result<NodeQueryResponse, Status>>,
    handle: tokio::runtime::Handle,
    deadline: Instant,
}

impl Sender {
    fn send(&self, msg: Result<NodeQueryResponse, Status>) -> Result<(), NodeError> {
        match self
            .handle
            .block_on(tokio::time::timeout_at(self.deadline.into(), self.tx.send(msg)))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Cancelled),
            Err(_) => Err(NodeError::DeadlineExceeded(0)),
        }
    }
}

fn interrupt_handler(
    conn: &rusqlite::Connection,
    tx: mpsc::Sender<Result<NodeQueryResponse, Status>>,
    deadline: Instant,
) {
    // SQLite calls this every few thousand VM steps: a long sort or scan
    // stops soon after the client goes away or the deadline passes.
    conn.progress_handler(4_000, Some(move || tx.is_closed() || Instant::now() >= deadline));
}

fn interrupted(err: rusqlite::Error, sender: &Sender, started: Instant) -> NodeError {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
            if sender.tx.is_closed() {
                NodeError::Cancelled
            } else {
                NodeError::DeadlineExceeded(started.elapsed().as_millis())
            }
        }
        other => other.into(),
    }
}

/// The span of one Query or Aggregate at this node. Attributes name the
/// dataset and region, never a row's values.
fn request_span(method: &str, region: &str, dataset: &str) -> tracing::Span {
    tracing::info_span!(
        SPAN_NODE_QUERY,
        "yrd.component" = "node",
        "rpc.method" = method,
        "yrd.region" = region,
        "yrd.dataset" = dataset,
        "yrd.rows" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// The span of the store work: the SQL shape with its placeholders, never
/// the bound values.
fn store_span(parent: &tracing::Span, sql: &str) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        SPAN_STORE_QUERY,
        "otel.kind" = "client",
        "db.system" = "sqlite",
        "db.operation" = "SELECT",
        "db.statement" = sql,
        "yrd.rows" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    )
}

/// Marks `span` as failed with a safe description of `err`, and returns it.
fn failed(span: &tracing::Span, err: NodeError) -> NodeError {
    span.record("otel.status_code", "ERROR");
    // Errors name parameters, limits and store failures, never bound values.
    span.record("otel.status_description", err.to_string().as_str());
    err
}

fn run_query(state: &State, plan: &PagePlan, sender: &Sender, started: Instant) -> Result<u64, NodeError> {
    let region = &state.config.region;
    let stats = state
        .store
        .stats()?
        .into_iter()
        .find(|(id, _)| *id == plan.schema.id)
        .map(|(_, s)| s)
        .unwrap_or_default();
    let conn = state.store.reader()?;
    interrupt_handler(&conn, sender.tx.clone(), sender.deadline);
    let mut stmt = conn.prepare_cached(&plan.statement.sql)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(plan.statement.params.iter()))
        .map_err(|e| interrupted(e, sender, started))?;
    let batch_rows = state.config.query.batch_rows.min(plan.page_size.max(1) as usize);
    let new_batch = || RowBatch {
        rows: Vec::with_capacity(batch_rows),
        sort_keys: Vec::with_capacity(batch_rows),
        region: region.clone(),
        row_regions: Vec::new(),
    };
    let mut batch = new_batch();
    let mut key = KeyWriter::new();
    let (mut count, mut bytes, mut has_more) = (0u64, 0u64, false);
    let offset = plan.order.len();
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(interrupted(e, sender, started)),
        };
        if count == u64::from(plan.page_size) {
            has_more = true;
            break;
        }
        sort_key(&plan.schema, &plan.order, row, &mut key)?;
        let mut buf = Vec::with_capacity(192);
        for (j, &f) in plan.projection.iter().enumerate() {
            encode_field(&plan.schema.fields[f], row.get_ref(offset + j)?, &mut buf);
        }
        bytes += buf.len() as u64;
        batch.rows.push(Any {
            type_url: plan.schema.type_url.clone(),
            value: buf,
        });
        batch.sort_keys.push(key.as_bytes().to_vec());
        count += 1;
        if batch.rows.len() >= batch_rows {
            let full = std::mem::replace(&mut batch, new_batch());
            sender.send(Ok(NodeQueryResponse {
                kind: Some(node_query_response::Kind::Batch(full)),
            }))?;
        }
    }
    if !batch.rows.is_empty() {
        sender.send(Ok(NodeQueryResponse {
            kind: Some(node_query_response::Kind::Batch(batch)),
        }))?;
    }
    yrd_telemetry::rows_streamed(&plan.schema.id, count, bytes);
    let summary = NodeQuerySummary {
        region: Some(RegionStatus::answered(
            region.as_str(),
            count,
            started.elapsed(),
            freshness(stats.updated_at),
        )),
        more: has_more,
        trace_id: yrd_telemetry::current_trace_id(),
    };
    sender.send(Ok(NodeQueryResponse {
        kind: Some(node_query_response::Kind::Summary(summary)),
    }))?;
    Ok(count)
}

fn run_aggregate(
    state: &State,
    plan: &AggregatePlan,
    deadline: Instant,
    started: Instant,
) -> Result<AggregateResponse, NodeError> {
    let region = &state.config.region;
    let stats = state
        .store
        .stats()?
        .into_iter()
        .find(|(id, _)| *id == plan.schema.id)
        .map(|(_, s)| s)
        .unwrap_or_default();
    let conn = state.store.reader()?;
    conn.progress_handler(4_000, Some(move || Instant::now() >= deadline));
    let mut stmt = conn.prepare_cached(&plan.statement.sql)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(plan.statement.params.iter()))
        .map_err(|e| deadline_error(e, started))?;
    let max_groups = state.config.limits.max_groups;
    let mut groups = Vec::new();
    while let Some(row) = rows.next().map_err(|e| deadline_error(e, started))? {
        if groups.len() == max_groups {
            return Err(QueryError::Limit {
                param: "group_by",
                limit: "max_groups",
                max: max_groups as u64,
                actual: max_groups as u64 + 1,
            }
            .into());
        }
        let mut keys = Vec::with_capacity(plan.group_by.len());
        for (i, &f) in plan.group_by.iter().enumerate() {
            keys.push(to_value(plan.schema.fields[f].ty, row.get_ref(i)?));
        }
        let mut metrics = Vec::with_capacity(plan.metrics.len());
        for (m, (function, field)) in plan.metrics.iter().enumerate() {
            let base = plan.group_by.len() + m * 4;
            let count: i64 = row.get(base)?;
            let sum: f64 = row.get(base + 1)?;
            let ty = field.map_or(FieldType::Int, |f| plan.schema.fields[f].ty);
            let (min, max) = (
                to_value(ty, row.get_ref(base + 2)?),
                to_value(ty, row.get_ref(base + 3)?),
            );
            let mut partial = MetricPartial {
                count: count.max(0).unsigned_abs(),
                sum,
                min: min.kind.is_some().then_some(min),
                max: max.kind.is_some().then_some(max),
                value: None,
            };
            aggregate::finish(&mut partial, *function);
            metrics.push(partial);
        }
        groups.push(AggregateGroup { keys, metrics });
    }
    let n = groups.len() as u64;
    Ok(AggregateResponse {
        groups,
        regions: vec![RegionStatus::answered(
            region.as_str(),
            n,
            started.elapsed(),
            freshness(stats.updated_at),
        )],
        trace_id: yrd_telemetry::current_trace_id(),
    })
}

fn deadline_error(err: rusqlite::Error, started: Instant) -> NodeError {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
            NodeError::DeadlineExceeded(started.elapsed().as_millis())
        }
        other => other.into(),
    }
}

fn to_value(ty: FieldType, v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    let kind = match (ty, v) {
        (_, ValueRef::Null | ValueRef::Blob(_)) => None,
        (FieldType::Date, ValueRef::Text(t)) => Some(value::Kind::DateValue(String::from_utf8_lossy(t).into_owned())),
        (_, ValueRef::Text(t)) => Some(value::Kind::StringValue(String::from_utf8_lossy(t).into_owned())),
        (FieldType::Timestamp, ValueRef::Integer(s)) => Some(value::Kind::TimestampValue(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })),
        (FieldType::Bool, ValueRef::Integer(i)) => Some(value::Kind::BoolValue(i != 0)),
        (FieldType::Double, ValueRef::Integer(i)) => Some(value::Kind::DoubleValue(i as f64)),
        (_, ValueRef::Integer(i)) => Some(value::Kind::IntValue(i)),
        (_, ValueRef::Real(r)) => Some(value::Kind::DoubleValue(r)),
    };
    Value { kind }
}
