//! The DataNode service: catalog, queries and aggregates over the store.
//! Handlers check and plan the request, ask the policy stage for a permit,
//! build the store's plan from the permit, and stream the store's typed
//! rows through the one encoder into a bounded response channel.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost_types::Any;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_proto::mesh::data_node_server::DataNode;
use yrd_proto::mesh::{
    AggregateFunction, AggregateGroup, AggregateRequest, AggregateResponse, Catalog, FilterExpr, GetCatalogRequest,
    MetricPartial, QueryRequest, QueryResponse, QuerySummary, RegionState, RegionStatus, RowBatch, Value,
    query_response,
};
use yrd_proto::schema::{DatasetSchema, FieldType};
use yrd_query::sortkey::{KeyWriter, decode_key};
use yrd_query::token::{Cursor, PageTokens, query_fingerprint};
use yrd_query::{Limits, QueryError, aggregate, filter, order};

use crate::config::NodeConfig;
use crate::encode::{cell_value, encode_field, sort_key};
use crate::error::NodeError;
use crate::policy::{Access, Caller, DefaultPolicy, Mask, Policy};
use crate::store::{self, DatasetStats, SortColumn, Store};

/// The service name in metrics.
const DATA_NODE: &str = "yrd.mesh.v1.DataNode";

/// Span of a node's Query or Aggregate handling.
pub const SPAN_NODE_QUERY: &str = "node.query";
/// Span of the store work of a query or an aggregate.
pub const SPAN_STORE_QUERY: &str = "store.query";

/// Messages buffered between the encoder and the response stream: a slow
/// client slows the store reader, it does not grow memory.
const STREAM_BUFFER: usize = 2;

/// The DataNode implementation.
#[derive(Debug, Clone)]
pub struct NodeService {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    config: NodeConfig,
    store: Arc<dyn Store>,
    policy: Arc<dyn Policy>,
    tokens: PageTokens,
    permits: Arc<Semaphore>,
}

/// A validated query, ready for the policy stage.
#[derive(Debug)]
struct PagePlan {
    schema: Arc<DatasetSchema>,
    filter: Option<FilterExpr>,
    order: Vec<SortColumn>,
    projection: Vec<usize>,
    after: Option<Vec<Value>>,
    page_size: u32,
    fingerprint: [u8; 32],
}

/// What the policy stage allows a query to show: the fields streamed after
/// the sort columns, each with its mask, if any.
#[derive(Debug)]
struct Shown {
    fields: Vec<usize>,
    masks: Vec<Option<Mask>>,
    batch_rows: usize,
}

/// A validated aggregate, ready for the policy stage.
#[derive(Debug)]
struct AggregatePlan {
    schema: Arc<DatasetSchema>,
    filter: Option<FilterExpr>,
    group_by: Vec<usize>,
    metrics: Vec<(AggregateFunction, Option<usize>)>,
}

impl NodeService {
    /// A service over `store`, configured by `config`, with the default policy.
    pub fn new(config: NodeConfig, store: Arc<dyn Store>) -> Self {
        Self::with_policy(config, store, Arc::new(DefaultPolicy))
    }

    /// A service over `store` whose permits come from `policy`.
    pub fn with_policy(config: NodeConfig, store: Arc<dyn Store>, policy: Arc<dyn Policy>) -> Self {
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
                policy,
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
        Ok(PagePlan {
            schema,
            filter,
            order,
            projection,
            after,
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
        Ok(AggregatePlan {
            schema,
            filter,
            group_by,
            metrics,
        })
    }

    /// The policy stage for a query: what it shows, and the store's plan
    /// built from the permit (refused columns left out, the row scope ANDed in).
    fn authorize_query(&self, caller: &Caller, plan: &PagePlan) -> Result<(Shown, store::ScanPlan), QueryError> {
        let permit = self.inner.policy.authorize(
            caller,
            &Access {
                schema: &plan.schema,
                filter: plan.filter.as_ref(),
                order: &plan.order,
                projection: &plan.projection,
                group_by: &[],
                metrics: &[],
            },
        )?;
        let visible = permit.visible(&plan.projection);
        let columns = plan
            .order
            .iter()
            .map(|k| k.field)
            .chain(visible.iter().copied())
            .collect();
        let batch_rows = self.batch_rows(plan.page_size);
        let shown = Shown {
            masks: visible.iter().map(|&f| permit.mask(f)).collect(),
            fields: visible,
            batch_rows,
        };
        let scan = store::ScanPlan {
            schema: plan.schema.clone(),
            filter: permit.scoped_filter(plan.filter.clone()),
            order: plan.order.clone(),
            after: plan.after.clone(),
            limit: u64::from(plan.page_size) + 1,
            columns,
            batch_rows,
        };
        Ok((shown, scan))
    }

    /// The policy stage for an aggregate: the store's plan from the permit.
    fn authorize_aggregate(&self, caller: &Caller, plan: &AggregatePlan) -> Result<store::AggregatePlan, QueryError> {
        let permit = self.inner.policy.authorize(
            caller,
            &Access {
                schema: &plan.schema,
                filter: plan.filter.as_ref(),
                order: &[],
                projection: &[],
                group_by: &plan.group_by,
                metrics: &plan.metrics,
            },
        )?;
        Ok(store::AggregatePlan {
            schema: plan.schema.clone(),
            filter: permit.scoped_filter(plan.filter.clone()),
            group_by: plan.group_by.clone(),
            metrics: plan.metrics.clone(),
            limit: self.limits().max_groups as u64 + 1,
        })
    }

    /// Rows per streamed batch for a page of `page_size` rows.
    fn batch_rows(&self, page_size: u32) -> usize {
        self.inner.config.query.batch_rows.min(page_size.max(1) as usize)
    }

    /// A query slot, waiting no longer than the deadline.
    async fn slot(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, NodeError> {
        let wait = self.inner.permits.clone().acquire_owned();
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(NodeError::Task("query slots closed".into())),
            Err(_) => Err(NodeError::DeadlineExceeded(0)),
        }
    }

    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let max = self.inner.config.query.max_query_time();
        Instant::now() + yrd_query::deadline::requested(req.metadata()).map_or(max, |a| a.min(max))
    }
}

#[tonic::async_trait]
impl DataNode for NodeService {
    async fn get_catalog(&self, _req: Request<GetCatalogRequest>) -> Result<Response<Catalog>, Status> {
        let stats = self.inner.store.stats().await.map_err(NodeError::from)?;
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
        let caller = caller_of(&req);
        let req = req.into_inner();
        let span = request_span("Query", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_query(req))
            .map_err(|e| failed(&span, e.into()))?;
        let (shown, scan_plan) = span
            .in_scope(|| self.authorize_query(&caller, &plan))
            .map_err(|e| failed(&span, e.into()))?;
        let slot = self
            .slot(deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| failed(&span, e))?;
        let store_span = store_span(&span, self.inner.store.system());
        // Started here, so that a plan the store cannot run is refused as
        // the call's status, before any stream.
        let scan = self
            .inner
            .store
            .scan(scan_plan, deadline)
            .instrument(store_span.clone())
            .await
            .map_err(|e| failed(&span, failed(&store_span, e.into())))?;
        store_span.record("db.statement", scan.statement.as_str());
        // The request's span stays open until the stream ends, and takes its status.
        let server_span = tracing::Span::current();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let state = self.inner.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = yrd_telemetry::OpenStreamGuard::open();
            let outcome = run_query(&state, &plan, &shown, scan, &tx, deadline, started)
                .instrument(store_span.clone())
                .await;
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
                    let _ = send(&tx, Err(status), deadline).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn aggregate(&self, req: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let caller = caller_of(&req);
        let req = req.into_inner();
        let span = request_span("Aggregate", &self.inner.config.region, &req.dataset);
        let plan = span
            .in_scope(|| self.plan_aggregate(req))
            .map_err(|e| failed(&span, e.into()))?;
        let store_plan = span
            .in_scope(|| self.authorize_aggregate(&caller, &plan))
            .map_err(|e| failed(&span, e.into()))?;
        let slot = self
            .slot(deadline)
            .instrument(span.clone())
            .await
            .map_err(|e| failed(&span, e))?;
        let store_span = store_span(&span, self.inner.store.system());
        let response = async {
            let _slot = slot;
            let result = run_aggregate(&self.inner, &plan, store_plan, deadline, started)
                .await
                .map_err(|e| failed(&store_span, e));
            if let Ok(r) = &result {
                store_span.record("yrd.rows", r.groups.len());
            }
            result
        }
        .instrument(store_span.clone())
        .await
        .map_err(|e| failed(&span, e))?;
        span.record("yrd.rows", response.groups.len());
        yrd_telemetry::request_done(DATA_NODE, "Aggregate", tonic::Code::Ok, started.elapsed());
        yrd_telemetry::record_status(&tracing::Span::current(), tonic::Code::Ok);
        Ok(Response::new(response))
    }
}

/// Who sent `req`: the verified peer, or anonymous in insecure mode.
fn caller_of<T>(req: &Request<T>) -> Caller {
    yrd_identity::peer_id(req).map_or(Caller::Anonymous, Caller::Peer)
}

/// Sends one message of a query stream, waiting for room in the bounded
/// channel, but never past the deadline.
async fn send(
    tx: &mpsc::Sender<Result<QueryResponse, Status>>,
    msg: Result<QueryResponse, Status>,
    deadline: Instant,
) -> Result<(), NodeError> {
    match tokio::time::timeout_at(deadline.into(), tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(NodeError::Cancelled),
        Err(_) => Err(NodeError::DeadlineExceeded(0)),
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

/// The span of the store work. The statement's shape (placeholders, never
/// the bound values) is recorded once the store has built it.
fn store_span(parent: &tracing::Span, system: &'static str) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        SPAN_STORE_QUERY,
        "otel.kind" = "client",
        "db.system" = system,
        "db.operation" = "SELECT",
        "db.statement" = tracing::field::Empty,
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

/// Streams one page: the store's rows through the encoder (masked as the
/// permit says) into response batches, then the summary with its page token.
async fn run_query(
    state: &State,
    plan: &PagePlan,
    shown: &Shown,
    mut rows: store::Scan,
    tx: &mpsc::Sender<Result<QueryResponse, Status>>,
    deadline: Instant,
    started: Instant,
) -> Result<u64, NodeError> {
    let region = &state.config.region;
    let stats = dataset_stats(state, &plan.schema.id).await?;
    let batch_rows = shown.batch_rows;
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
    'scan: loop {
        let cells_batch = match tokio::time::timeout_at(deadline.into(), rows.rows.recv()).await {
            Ok(Some(item)) => item?,
            Ok(None) => break,
            Err(_) => return Err(NodeError::DeadlineExceeded(started.elapsed().as_millis())),
        };
        for cells in cells_batch {
            if count == u64::from(plan.page_size) {
                has_more = true;
                break 'scan;
            }
            // The scan reads the sort columns first, then the shown fields.
            let (keys, values) = cells.split_at(plan.order.len().min(cells.len()));
            sort_key(&plan.schema, &plan.order, keys, &mut key);
            let mut buf = Vec::with_capacity(192);
            for ((&f, cell), mask) in shown.fields.iter().zip(values).zip(&shown.masks) {
                encode_field(&plan.schema.fields[f], cell.as_ref(), *mask, &mut buf);
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
                send(
                    tx,
                    Ok(QueryResponse {
                        kind: Some(query_response::Kind::Batch(full)),
                    }),
                    deadline,
                )
                .await?;
            }
        }
    }
    // Stops the store's work at once when the page is full.
    drop(rows);
    if !batch.rows.is_empty() {
        send(
            tx,
            Ok(QueryResponse {
                kind: Some(query_response::Kind::Batch(batch)),
            }),
            deadline,
        )
        .await?;
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
    send(
        tx,
        Ok(QueryResponse {
            kind: Some(query_response::Kind::Summary(summary)),
        }),
        deadline,
    )
    .await?;
    Ok(count)
}

/// Runs an aggregate at the store and finishes its partials.
async fn run_aggregate(
    state: &State,
    plan: &AggregatePlan,
    store_plan: store::AggregatePlan,
    deadline: Instant,
    started: Instant,
) -> Result<AggregateResponse, NodeError> {
    let region = &state.config.region;
    let stats = dataset_stats(state, &plan.schema.id).await?;
    let aggregated = state.store.aggregate(store_plan, deadline).await?;
    tracing::Span::current().record("db.statement", aggregated.statement.as_str());
    let max_groups = state.config.limits.max_groups;
    if aggregated.groups.len() > max_groups {
        return Err(QueryError::Limit {
            param: "group_by",
            limit: "max_groups",
            max: max_groups as u64,
            actual: max_groups as u64 + 1,
        }
        .into());
    }
    let mut groups = Vec::with_capacity(aggregated.groups.len());
    for group in aggregated.groups {
        let keys = plan
            .group_by
            .iter()
            .zip(group.keys)
            .map(|(&f, cell)| cell_value(plan.schema.fields[f].ty, cell))
            .collect();
        let metrics = plan
            .metrics
            .iter()
            .zip(group.metrics)
            .map(|((function, field), p)| {
                let ty = field.map_or(FieldType::Int, |f| plan.schema.fields[f].ty);
                let mut partial = MetricPartial {
                    count: p.count,
                    sum: p.sum,
                    min: p.min.map(|c| cell_value(ty, Some(c))),
                    max: p.max.map(|c| cell_value(ty, Some(c))),
                    value: None,
                };
                aggregate::finish(&mut partial, *function);
                partial
            })
            .collect();
        groups.push(AggregateGroup { keys, metrics });
    }
    let n = groups.len() as u64;
    Ok(AggregateResponse {
        groups,
        regions: vec![region_status(region, &stats, RegionState::Ok, n, started.elapsed())],
        trace_id: yrd_telemetry::current_trace_id(),
    })
}

/// The size and freshness of one dataset.
async fn dataset_stats(state: &State, dataset: &str) -> Result<DatasetStats, NodeError> {
    Ok(state
        .store
        .stats()
        .await?
        .into_iter()
        .find(|(id, _)| id == dataset)
        .map(|(_, s)| s)
        .unwrap_or_default())
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
