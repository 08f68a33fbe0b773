//! The DataNode service: catalog, queries and aggregates over the store.
//! Handlers validate and plan on the async side, then run the store work on
//! a blocking thread that feeds a bounded channel to the response stream.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost_types::Any;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_proto::mesh::data_node_server::DataNode;
use yrd_proto::mesh::{
    AggregateFunction, AggregateGroup, AggregateRequest, AggregateResponse, Catalog, FilterExpr, GetCatalogRequest,
    MetricPartial, QueryRequest, QueryResponse, QuerySummary, RegionState, RegionStatus, RowBatch, Value,
    query_response, value,
};
use yrd_proto::schema::{DatasetSchema, FieldType};
use yrd_query::sortkey::{KeyWriter, decode_key};
use yrd_query::token::{Cursor, PageTokens, query_fingerprint};
use yrd_query::{Limits, QueryError, aggregate, filter, order};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::store::encode::{encode_field, sort_key};
use crate::store::sql::{self, SortColumn, Statement};
use crate::store::{DatasetStats, Store};

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
    tokens: PageTokens,
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
    fingerprint: [u8; 32],
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
        let secret = if config.query.page_token_secret.is_empty() {
            tracing::warn!("query.page_token_secret is not set: page tokens will not survive a restart");
            random_secret()
        } else {
            config.query.page_token_secret.as_bytes().to_vec()
        };
        let tokens = PageTokens::new(&secret, Duration::from_secs(config.query.page_token_ttl_seconds));
        let permits = Arc::new(Semaphore::new(config.query.max_concurrent));
        Self {
            inner: Arc::new(State {
                config,
                store,
                tokens,
                permits,
            }),
        }
    }

    fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    fn dataset(&self, id: &str) -> Result<Arc<DatasetSchema>, QueryError> {
        self.inner
            .store
            .registry()
            .get(id)
            .cloned()
            .ok_or_else(|| QueryError::UnknownDataset { dataset: id.to_owned() })
    }

    /// The typed filter of a request: parsed from text, or checked if typed.
    fn filter_of(
        &self,
        schema: &DatasetSchema,
        text: &str,
        typed: Option<FilterExpr>,
    ) -> Result<Option<FilterExpr>, QueryError> {
        match (text.trim().is_empty(), typed) {
            (false, Some(_)) => Err(QueryError::Invalid {
                param: "filter",
                message: "set filter or filter_expr, not both".into(),
            }),
            (false, None) => filter::parse_filter(text, schema, self.limits()),
            (true, Some(expr)) => {
                filter::check_filter(&expr, schema, self.limits())?;
                Ok(Some(expr))
            }
            (true, None) => Ok(None),
        }
    }

    fn plan_query(&self, req: QueryRequest) -> Result<PagePlan, QueryError> {
        let schema = self.dataset(&req.dataset)?;
        let limits = self.limits();
        let filter = self.filter_of(&schema, &req.filter, req.filter_expr)?;
        let keys = match (req.order_by.trim().is_empty(), req.order_keys.is_empty()) {
            (false, false) => {
                return Err(QueryError::Invalid {
                    param: "order_by",
                    message: "set order_by or order_keys, not both".into(),
                });
            }
            (false, true) => order::parse_order_by(&req.order_by, &schema, limits)?,
            (true, _) => {
                order::check_order_keys(&req.order_keys, &schema, limits)?;
                req.order_keys
            }
        };
        let keys = order::with_primary_key(keys, &schema);
        let order: Vec<SortColumn> = keys
            .iter()
            .map(|k| {
                let (field, _) = schema.field(&k.field).ok_or_else(|| QueryError::UnknownField {
                    param: "order_by",
                    dataset: schema.id.clone(),
                    field: k.field.clone(),
                })?;
                Ok(SortColumn {
                    field,
                    descending: k.descending,
                })
            })
            .collect::<Result<_, QueryError>>()?;
        Limits::check("fields", "max_fields", limits.max_fields, req.fields.len())?;
        let mut projection = Vec::new();
        for name in &req.fields {
            let (i, _) = schema.field(name).ok_or_else(|| QueryError::UnknownField {
                param: "fields",
                dataset: schema.id.clone(),
                field: name.clone(),
            })?;
            if projection.contains(&i) {
                return Err(QueryError::Invalid {
                    param: "fields",
                    message: format!("field {name} is listed twice"),
                });
            }
            projection.push(i);
        }
        if projection.is_empty() {
            projection = (0..schema.fields.len()).collect();
        }
        let page_size = limits.page_size(req.page_size)?;
        let fingerprint = query_fingerprint(&schema.id, filter.as_ref(), &keys, &req.fields, &[]);
        let types: Vec<FieldType> = order.iter().map(|k| schema.fields[k.field].ty).collect();
        let desc: Vec<bool> = order.iter().map(|k| k.descending).collect();
        let after = if !req.start_after_key.is_empty() {
            if !req.page_token.is_empty() {
                return Err(QueryError::Invalid {
                    param: "start_after_key",
                    message: "set page_token or start_after_key, not both".into(),
                });
            }
            Some(
                decode_key(&req.start_after_key, &types, &desc).map_err(|_| QueryError::Invalid {
                    param: "start_after_key",
                    message: "is not a sort key of this query's order".into(),
                })?,
            )
        } else if req.page_token.is_empty() {
            None
        } else {
            let cursors = self
                .inner
                .tokens
                .open(&req.page_token, &fingerprint, SystemTime::now())?;
            let cursor = cursors
                .into_iter()
                .find(|c| c.region == self.inner.config.region)
                .ok_or_else(|| QueryError::PageToken {
                    reason: "holds no cursor for this region".into(),
                })?;
            Some(decode_key(&cursor.last_key, &types, &desc)?)
        };
        let statement = sql::select_page(
            &schema,
            &order,
            &projection,
            filter.as_ref(),
            after.as_deref(),
            u64::from(page_size) + 1,
        )?;
        Ok(PagePlan {
            schema,
            statement,
            order,
            projection,
            page_size,
            fingerprint,
        })
    }

    fn plan_aggregate(&self, req: AggregateRequest) -> Result<AggregatePlan, QueryError> {
        let schema = self.dataset(&req.dataset)?;
        let limits = self.limits();
        let filter = self.filter_of(&schema, &req.filter, req.filter_expr)?;
        order::check_group_by(&req.group_by, &schema, limits)?;
        let metrics = if req.metrics.is_empty() {
            vec![yrd_proto::mesh::Metric {
                function: AggregateFunction::Count as i32,
                field: String::new(),
            }]
        } else {
            req.metrics
        };
        order::check_metrics(&metrics, &schema, limits)?;
        let group_by: Vec<usize> = req
            .group_by
            .iter()
            .filter_map(|g| schema.field(g).map(|(i, _)| i))
            .collect();
        let metrics: Vec<(AggregateFunction, Option<usize>)> = metrics
            .iter()
            .map(|m| {
                let f = AggregateFunction::try_from(m.function).unwrap_or(AggregateFunction::Unspecified);
                (f, schema.field(&m.field).map(|(i, _)| i))
            })
            .collect();
        let statement = sql::aggregate(
            &schema,
            filter.as_ref(),
            &group_by,
            &metrics,
            limits.max_groups as u64 + 1,
        )?;
        Ok(AggregatePlan {
            schema,
            statement,
            group_by,
            metrics,
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

    /// The request's deadline, from the server's deadline layer (the
    /// longest a query may run when the layer did not run).
    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        yrd_server::Deadline::of(req).map_or_else(
            || Instant::now() + self.inner.config.query.max_query_time(),
            |d| d.instant(),
        )
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
                info.regions
                    .push(region_status(region, &st, RegionState::Ok, st.rows, Duration::ZERO));
                info
            })
            .collect();
        Ok(Response::new(Catalog {
            region: region.clone(),
            region_name: self.inner.config.region_label().to_owned(),
            datasets,
        }))
    }

    type QueryStream = ReceiverStream<Result<QueryResponse, Status>>;

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let req = req.into_inner();
        let span = request_span("Query", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_query(req))
            .map_err(|e| failed(&span, e.into()))?;
        let permit = self
            .permit(deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| failed(&span, e))?;
        let store_span = store_span(&span, &plan.statement.sql);
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

    async fn aggregate(&self, req: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let req = req.into_inner();
        let span = request_span("Aggregate", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_aggregate(req))
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
        Ok(Response::new(response))
    }
}

/// The sending end of a query stream, used from a blocking thread: every
/// send waits for room in the bounded channel, but never past the deadline.
struct Sender {
    tx: mpsc::Sender<Result<QueryResponse, Status>>,
    handle: tokio::runtime::Handle,
    deadline: Instant,
}

impl Sender {
    fn send(&self, msg: Result<QueryResponse, Status>) -> Result<(), NodeError> {
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

fn interrupt_handler(conn: &rusqlite::Connection, tx: mpsc::Sender<Result<QueryResponse, Status>>, deadline: Instant) {
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
    let mut last_key = Vec::new();
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
        last_key = key.as_bytes().to_vec();
        batch.sort_keys.push(last_key.clone());
        count += 1;
        if batch.rows.len() >= batch_rows {
            let full = std::mem::replace(&mut batch, new_batch());
            sender.send(Ok(QueryResponse {
                kind: Some(query_response::Kind::Batch(full)),
            }))?;
        }
    }
    if !batch.rows.is_empty() {
        sender.send(Ok(QueryResponse {
            kind: Some(query_response::Kind::Batch(batch)),
        }))?;
    }
    let next_page_token = if has_more {
        let cursor = Cursor {
            region: region.clone(),
            last_key,
            exhausted: false,
        };
        state.tokens.seal(&plan.fingerprint, &[cursor], SystemTime::now())
    } else {
        String::new()
    };
    yrd_telemetry::rows_streamed(&plan.schema.id, count, bytes);
    let summary = QuerySummary {
        regions: vec![region_status(region, &stats, RegionState::Ok, count, started.elapsed())],
        next_page_token,
        trace_id: yrd_telemetry::current_trace_id(),
        rows: count,
    };
    sender.send(Ok(QueryResponse {
        kind: Some(query_response::Kind::Summary(summary)),
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
        regions: vec![region_status(region, &stats, RegionState::Ok, n, started.elapsed())],
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

fn region_status(region: &str, stats: &DatasetStats, state: RegionState, rows: u64, elapsed: Duration) -> RegionStatus {
    RegionStatus {
        region: region.to_owned(),
        state: state as i32,
        rows,
        elapsed: prost_types::Duration::try_from(elapsed).ok(),
        freshness: stats.updated_at.map(prost_types::Timestamp::from),
        message: String::new(),
    }
}

fn random_secret() -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut s = vec![0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_secrets_differ() {
        assert_ne!(random_secret(), random_secret());
        assert_eq!(random_secret().len(), 32);
    }
}
