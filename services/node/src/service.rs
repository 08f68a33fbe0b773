//! The DataNode service: catalog, queries and aggregates over the store.
//! Handlers check and plan the request, ask the policy stage for a permit,
//! build the store's plan from the permit, and stream the store's typed
//! rows through the one encoder into a bounded response channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Any;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_proto::freshness;
use yrd_proto::mesh::data_node_server::DataNode;
use yrd_proto::mesh::{
    AccessRequest, AggregateFunction, AggregateGroup, AggregateResponse, AuditLines, Catalog, DecideAccessRequest,
    FilterExpr, GetCatalogRequest, ListAccessRequestsRequest, ListAccessRequestsResponse, MetricPartial,
    NodeAggregateRequest, NodeQueryRequest, NodeQueryResponse, NodeQuerySummary, PolicyDecision, ReadAuditRequest,
    RegionStatus, RequestAccessRequest, RevokeAccessRequest, RowBatch, Value, node_query_response,
};
use yrd_proto::schema::{DatasetSchema, FieldType};
use yrd_query::sortkey::KeyWriter;
use yrd_query::{CheckedAggregate, CheckedQuery, Limits, QueryError, aggregate};

use crate::access::{Workflow, serve};
use crate::audit::NodeAudit;
use crate::config::NodeConfig;
use crate::encode::{cell_value, encode_field, sort_key};
use crate::error::NodeError;
use crate::policy::{Access, AccessKind, AppKey, Decision, Mask, Policy};
use crate::principal::Principal;
use crate::store::{self, DatasetStats, SortColumn, Store};
use yrd_audit::{Decision as AuditDecision, Entry};

/// Span of a node's Query or Aggregate handling.
pub const SPAN_NODE_QUERY: &str = "node.query";
/// Span of the store work of a query or an aggregate.
pub const SPAN_STORE_QUERY: &str = "store.query";

/// Messages buffered between the encoder and the response stream: a slow
/// client slows the store reader, it does not grow memory.
const STREAM_BUFFER: usize = 2;

/// Most audit records one `ReadAudit` returns (`limit` asks for fewer).
const AUDIT_READ_LIMIT: usize = 10_000;
/// Audit lines per streamed message.
const AUDIT_BATCH: usize = 200;

/// The DataNode implementation.
#[derive(Debug, Clone)]
pub struct NodeService {
    inner: Arc<State>,
}

#[derive(Debug, Clone)]
struct State {
    config: NodeConfig,
    store: Arc<dyn Store>,
    policy: Arc<dyn Policy>,
    permits: Arc<Semaphore>,
    audit: NodeAudit,
    /// The region's access workflow; without one the access methods are
    /// refused as not served.
    workflow: Option<Arc<Workflow>>,
}

/// A validated query, ready for the policy stage.
#[derive(Debug)]
struct PagePlan {
    schema: Arc<DatasetSchema>,
    filter: Option<FilterExpr>,
    order: Vec<SortColumn>,
    projection: Vec<usize>,
    /// The caller named the fields.
    explicit: bool,
    after: Option<Vec<Value>>,
    page_size: u32,
}

/// What the policy stage allows a query to show: the fields streamed after
/// the sort columns, each with its mask, if any.
#[derive(Debug)]
struct Shown {
    fields: Vec<usize>,
    masks: Vec<Option<Mask>>,
    /// The application's key for `hash` masks.
    app_key: Option<AppKey>,
    batch_rows: usize,
    /// Most bytes of one streamed batch (`query.max_batch_bytes`).
    batch_bytes: usize,
    /// The audit record of the decision that allowed the query, named in
    /// its summary.
    audit_id: String,
}

/// The start every data call shares (see [`NodeService::open`]): when it
/// began, its deadline, the verified caller, the message, the node span and
/// the audit entry of its decision.
struct DataCall<T>(Instant, Instant, Principal, T, tracing::Span, Entry);

/// The dataset and filter of a data call's message.
trait DataRequest: prost::Message {
    fn dataset(&self) -> &str;
    fn filter(&self) -> Option<&FilterExpr>;
}

impl DataRequest for NodeQueryRequest {
    fn dataset(&self) -> &str {
        &self.dataset
    }

    fn filter(&self) -> Option<&FilterExpr> {
        self.filter.as_ref()
    }
}

impl DataRequest for NodeAggregateRequest {
    fn dataset(&self) -> &str {
        &self.dataset
    }

    fn filter(&self) -> Option<&FilterExpr> {
        self.filter.as_ref()
    }
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
    /// A service over `store` whose permits come from `policy`.
    pub fn with_policy(config: NodeConfig, store: Arc<dyn Store>, policy: Arc<dyn Policy>) -> Self {
        let audit = NodeAudit::disabled(config.region.clone());
        Self::with_audit(config, store, policy, audit)
    }

    /// A service whose permits come from `policy` and whose requests are
    /// recorded in `audit`.
    pub fn with_audit(config: NodeConfig, store: Arc<dyn Store>, policy: Arc<dyn Policy>, audit: NodeAudit) -> Self {
        let permits = Arc::new(Semaphore::new(config.query.max_concurrent));
        Self {
            inner: Arc::new(State {
                config,
                store,
                policy,
                permits,
                audit,
                workflow: None,
            }),
        }
    }

    /// This service, answering the access methods with `workflow` (the
    /// same instance the policy stage reads approved requests from).
    pub fn with_workflow(self, workflow: Arc<Workflow>) -> Self {
        let mut state = State::clone(&self.inner);
        state.workflow = Some(workflow);
        Self { inner: Arc::new(state) }
    }

    /// `result`, recording it in the audit as refused or failed when it is
    /// an error.
    async fn audited<T>(&self, entry: &Entry, result: Result<T, NodeError>) -> Result<T, NodeError> {
        if let Err(e) = &result {
            self.inner.audit.refused(entry.clone(), e).await;
        }
        result
    }

    /// The start of a data call of `method` (`Query`, `Aggregate`), audited
    /// as `kind`: its verified caller (a refusal is recorded), its span and
    /// the audit entry of its decision.
    async fn open<T: DataRequest>(
        &self,
        req: Request<T>,
        method: &str,
        kind: &'static str,
    ) -> Result<DataCall<T>, Status> {
        let started = Instant::now();
        let deadline = self.deadline(&req);
        let dataset = req.get_ref().dataset().to_owned();
        let path = format!("/yrd.mesh.v1.DataNode/{method}");
        let caller = self.principal(&req, &path, kind, &dataset).await?;
        let req = req.into_inner();
        let span = request_span(method, &self.inner.config.region, &dataset);
        let entry = self
            .inner
            .audit
            .entry(kind, AuditDecision::Allow, &caller, &dataset, req.filter());
        Ok(DataCall(started, deadline, caller, req, span, entry))
    }

    /// `result`; an error is recorded in the audit as refused or failed
    /// and marked on the call's `span`.
    async fn checked<T>(
        &self,
        entry: &Entry,
        span: &tracing::Span,
        result: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        self.audited(entry, result).await.map_err(|e| failed(span, e))
    }

    /// Spends what `decision`'s grant allows (rate, uses), naming its rule
    /// in `entry`; a refusal is recorded.
    async fn admit(
        &self,
        caller: &Principal,
        decision: &Decision,
        entry: &mut Entry,
        span: &tracing::Span,
    ) -> Result<(), NodeError> {
        entry.rule = Some(decision.rule.clone());
        let admitted = self.inner.policy.admit(caller, decision).instrument(span.clone()).await;
        self.checked(entry, span, admitted).await
    }

    /// Writes `entry` durably, returning its record id.
    async fn record(&self, entry: Entry, span: &tracing::Span) -> Result<String, NodeError> {
        let recorded = self.inner.audit.record(entry).instrument(span.clone()).await;
        recorded.map_err(|e| failed(span, e))
    }

    /// A query slot for the call of `span`, waiting no longer than `deadline`.
    async fn slot_in(&self, deadline: Instant, span: &tracing::Span) -> Result<OwnedSemaphorePermit, NodeError> {
        let slot = self.slot(deadline).instrument(span.clone()).await;
        slot.map_err(|e| failed(span, e))
    }

    /// The verified principal of `req`, or its refusal, recorded.
    async fn principal<T: prost::Message>(
        &self,
        req: &Request<T>,
        path: &str,
        kind: &'static str,
        dataset: &str,
    ) -> Result<Principal, Status> {
        match caller_of(req, path) {
            Ok(p) => Ok(p),
            Err(status) => {
                let who = Principal::peer(yrd_identity::peer_id(req));
                let mut entry = self.inner.audit.entry(kind, AuditDecision::Deny, &who, dataset, None);
                entry.reason = Some(
                    tonic_types::StatusExt::get_details_error_info(&status)
                        .map_or_else(|| format!("{:?}", status.code()), |i| i.reason),
                );
                if let Err(e) = self.inner.audit.record(entry).await {
                    tracing::error!(error = %e, "the audit record of a refused call was not written");
                }
                Err(status)
            }
        }
    }

    /// The region's access workflow, if this service has one.
    fn workflow(&self) -> Option<&Workflow> {
        self.inner.workflow.as_deref()
    }

    fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// Checks a node request once, with the same code the gateway ran.
    fn plan_query(&self, req: &NodeQueryRequest) -> Result<PagePlan, QueryError> {
        let (checked, after) = CheckedQuery::from_node_request(req, self.inner.store.registry(), self.limits())?;
        let order = checked
            .sort_columns()
            .into_iter()
            .map(|(field, descending)| SortColumn { field, descending })
            .collect();
        Ok(PagePlan {
            schema: checked.schema,
            filter: checked.filter,
            order,
            explicit: !checked.fields.is_empty(),
            projection: checked.projection,
            after,
            page_size: checked.page_size,
        })
    }

    /// Checks a node's aggregate request once.
    fn plan_aggregate(&self, req: &NodeAggregateRequest) -> Result<AggregatePlan, QueryError> {
        let checked = CheckedAggregate::from_node_request(req, self.inner.store.registry(), self.limits())?;
        Ok(AggregatePlan {
            schema: checked.schema,
            filter: checked.filter,
            group_by: checked.group_fields,
            metrics: checked.metric_fields,
        })
    }

    /// What the policy stage sees of a query.
    fn query_access<'a>(plan: &'a PagePlan) -> Access<'a> {
        Access {
            schema: &plan.schema,
            filter: plan.filter.as_ref(),
            order: &plan.order,
            projection: &plan.projection,
            explicit: plan.explicit,
            group_by: &[],
            metrics: &[],
            kind: AccessKind::Rows {
                limit: u64::from(plan.page_size),
            },
        }
    }

    /// The policy stage for a query: the decision, what it shows, and the
    /// store's plan built from the permit (refused and redacted columns
    /// left out, the row scope ANDed in).
    fn authorize_query(
        &self,
        caller: &Principal,
        plan: &PagePlan,
    ) -> Result<(Decision, Shown, store::ScanPlan), NodeError> {
        let decision = self.inner.policy.authorize(caller, &Self::query_access(plan));
        let permit = decision.permit()?;
        let visible = permit.visible(&plan.projection);
        let columns = plan
            .order
            .iter()
            .map(|k| k.field)
            .chain(visible.iter().copied())
            .collect();
        let batch_rows = self.batch_rows(plan.page_size);
        let batch_bytes = self.inner.config.query.max_batch_bytes;
        let shown = Shown {
            masks: visible.iter().map(|&f| permit.mask(f)).collect(),
            fields: visible,
            app_key: permit.app_key().cloned(),
            batch_rows,
            batch_bytes,
            audit_id: String::new(),
        };
        let scan = store::ScanPlan {
            schema: plan.schema.clone(),
            filter: permit.scoped_filter(plan.filter.clone()),
            order: plan.order.clone(),
            after: plan.after.clone(),
            limit: u64::from(plan.page_size) + 1,
            columns,
            batch_rows,
            batch_bytes,
        };
        Ok((decision, shown, scan))
    }

    /// The policy stage for an aggregate: the decision and the store's plan
    /// from the permit. With a group threshold, the plan counts each
    /// group's rows in one more metric than the caller asked for.
    fn authorize_aggregate(
        &self,
        caller: &Principal,
        plan: &AggregatePlan,
    ) -> Result<(Decision, store::AggregatePlan), NodeError> {
        let decision = self.inner.policy.authorize(
            caller,
            &Access {
                schema: &plan.schema,
                filter: plan.filter.as_ref(),
                order: &[],
                projection: &[],
                explicit: false,
                group_by: &plan.group_by,
                metrics: &plan.metrics,
                kind: AccessKind::Aggregate,
            },
        );
        let permit = decision.permit()?;
        let mut metrics = plan.metrics.clone();
        if decision.min_group_size > 0 {
            metrics.push((AggregateFunction::Count, None));
        }
        let store_plan = store::AggregatePlan {
            schema: plan.schema.clone(),
            filter: permit.scoped_filter(plan.filter.clone()),
            group_by: plan.group_by.clone(),
            metrics,
            limit: self.limits().max_groups as u64 + 1,
        };
        Ok((decision, store_plan))
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

    /// The request's deadline, from the server's deadline layer (the
    /// longest a query may run when the layer did not run).
    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        yrd_server::Deadline::of(req).map_or_else(
            || Instant::now() + self.inner.config.query.max_query_time,
            |d| d.instant(),
        )
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
        let DataCall(started, deadline, caller, req, span, mut entry) = self.open(req, "Query", "query").await?;
        entry.fields = crate::audit::recorded_names(req.fields.iter().map(String::as_str));
        let plan = span.in_scope(|| self.plan_query(&req)).map_err(NodeError::from);
        let plan = self.checked(&entry, &span, plan).await?;
        let authorized = span.in_scope(|| self.authorize_query(&caller, &plan));
        let (decision, mut shown, scan_plan) = self.checked(&entry, &span, authorized).await?;
        self.admit(&caller, &decision, &mut entry, &span).await?;
        entry.masked = decision.masked_fields(&plan.schema);
        let store_span = store_span(&span, self.inner.store.system());
        // The store starts while the record is written, and its rows wait
        // in the bounded scan channel: the record is durable before the
        // first row leaves (no record, no rows), and a failed record drops
        // the scan, which stops it. The scan is started here so that a plan
        // the store cannot run is refused as the call's status.
        let recording = self.record(entry.clone(), &span);
        let starting = async {
            let slot = self.slot_in(deadline, &span).await?;
            let scan = self
                .inner
                .store
                .scan(scan_plan, deadline)
                .instrument(store_span.clone())
                .await
                .map_err(|e| failed(&span, failed(&store_span, e.into())))?;
            Ok::<_, NodeError>((slot, scan))
        };
        let (recorded, started_scan) = tokio::join!(recording, starting);
        let audit_id = recorded?;
        let (slot, scan) = started_scan?;
        shown.audit_id.clone_from(&audit_id);
        let shown_id = audit_id.clone();
        store_span.record("db.statement", scan.statement.as_str());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let tx = Tx {
            tx,
            stall: self.inner.config.query.stall_timeout,
        };
        let state = self.inner.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = yrd_telemetry::OpenStreamGuard::open();
            let outcome = run_query(&state, &plan, &shown, scan, &tx, deadline, started)
                .instrument(store_span.clone())
                .await;
            let mut end = entry;
            end.kind = "query.end".into();
            end.request = Some(audit_id.clone()).filter(|id| !id.is_empty());
            match &outcome {
                Ok(rows) => end.rows = Some(*rows),
                Err(e) => {
                    end.decision = AuditDecision::Fail;
                    end.reason = Some(crate::audit::fail_reason(e).to_owned());
                }
            }
            if let Err(e) = state.audit.record_deferred(end).instrument(span.clone()).await {
                tracing::error!(error = %e, "the audit record of a query's end was not written");
            }
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
        let mut response = Response::new(ReceiverStream::new(rx));
        // The caller has the record's id even if it cuts the stream before
        // the summary (a full page at the gateway).
        if !shown_id.is_empty()
            && let Ok(v) = shown_id.parse()
        {
            response.metadata_mut().insert(yrd_audit::ID_HEADER, v);
        }
        Ok(response)
    }

    async fn aggregate(&self, req: Request<NodeAggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let DataCall(started, deadline, caller, req, span, mut entry) =
            self.open(req, "Aggregate", "aggregate").await?;
        entry.fields = crate::audit::recorded_names(req.group_by.iter().map(String::as_str));
        let metrics: Vec<String> = req
            .metrics
            .iter()
            .map(|m| format!("{}({})", m.function().as_str_name(), m.field))
            .collect();
        entry.detail = Some(serde_json::json!({
            "metrics": crate::audit::recorded_names(metrics.iter().map(String::as_str)),
        }));
        let plan = span.in_scope(|| self.plan_aggregate(&req)).map_err(NodeError::from);
        let plan = self.checked(&entry, &span, plan).await?;
        let authorized = span.in_scope(|| self.authorize_aggregate(&caller, &plan));
        let (decision, store_plan) = self.checked(&entry, &span, authorized).await?;
        self.admit(&caller, &decision, &mut entry, &span).await?;
        let min_group_size = decision.min_group_size;
        let store_span = store_span(&span, self.inner.store.system());
        // The record is written while the store aggregates, and is durable
        // before the answer leaves (no record, no answer); an
        // `aggregate.end` record then adds the groups and those suppressed.
        let recording = self.record(entry.clone(), &span);
        let answering = async {
            let _slot = self.slot_in(deadline, &span).await?;
            let result = run_aggregate(&self.inner, &plan, store_plan, min_group_size, deadline, started)
                .await
                .map_err(|e| failed(&store_span, e));
            if let Ok(r) = &result {
                store_span.record("yrd.rows", r.groups.len());
            }
            result
        }
        .instrument(store_span.clone());
        let (recorded, answer) = tokio::join!(recording, answering);
        let audit_id = recorded?;
        let mut end = entry;
        end.kind = "aggregate.end".into();
        end.request = Some(audit_id.clone()).filter(|id| !id.is_empty());
        let mut response = match answer {
            Ok(response) => response,
            Err(err) => {
                let err = failed(&span, err);
                end.decision = AuditDecision::Fail;
                end.reason = Some(crate::audit::fail_reason(&err).to_owned());
                if let Err(e) = self.inner.audit.record_deferred(end).await {
                    tracing::error!(error = %e, "the audit record of an aggregate's end was not written");
                }
                return Err(err.into());
            }
        };
        span.record("yrd.rows", response.groups.len());
        end.rows = Some(response.groups.len() as u64);
        end.suppressed = response.regions.first().map(|r| r.suppressed_groups);
        if let Err(e) = self.inner.audit.record_deferred(end).await {
            tracing::error!(error = %e, "the audit record of an aggregate's end was not written");
        }
        if let Some(r) = response.regions.first_mut() {
            r.audit_id = audit_id;
        }
        Ok(Response::new(response))
    }
    async fn explain(&self, req: Request<NodeQueryRequest>) -> Result<Response<PolicyDecision>, Status> {
        let dataset = req.get_ref().dataset.clone();
        let caller = self
            .principal(&req, "/yrd.mesh.v1.DataNode/Explain", "explain", &dataset)
            .await?;
        let req = req.into_inner();
        let span = request_span("Explain", &self.inner.config.region, &req.dataset);
        // The same check and policy stage as a query, reading no row and
        // spending nothing: a refusal is the answer, not an error.
        let plan = span
            .in_scope(|| self.plan_query(&req))
            .map_err(|e| failed(&span, e.into()))?;
        let decision = span.in_scope(|| self.inner.policy.authorize(&caller, &Self::query_access(&plan)));
        Ok(Response::new(
            decision.to_proto(&self.inner.config.region, &plan.schema),
        ))
    }

    async fn request_access(&self, req: Request<RequestAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        serve::answer(self.workflow(), req, "RequestAccess", Workflow::request).await
    }

    async fn list_access_requests(
        &self,
        req: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        serve::answer(self.workflow(), req, "ListAccessRequests", Workflow::list).await
    }

    async fn decide_access(&self, req: Request<DecideAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        serve::answer(self.workflow(), req, "DecideAccess", Workflow::decide).await
    }

    async fn revoke_access(&self, req: Request<RevokeAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        serve::answer(self.workflow(), req, "RevokeAccess", Workflow::revoke).await
    }

    type ReadAuditStream = ReceiverStream<Result<AuditLines, Status>>;

    async fn read_audit(&self, req: Request<ReadAuditRequest>) -> Result<Response<Self::ReadAuditStream>, Status> {
        let caller = self
            .principal(&req, "/yrd.mesh.v1.DataNode/ReadAudit", "audit.read", "")
            .await?;
        let req = req.into_inner();
        let region = &self.inner.config.region;
        let mut entry = self
            .inner
            .audit
            .entry("audit.read", AuditDecision::Allow, &caller, &req.dataset, None);
        let is_auditor = matches!(
            caller.subject.as_ref().map(|s| &s.role),
            Some(yrd_identity::Role::Auditor { region: r }) if r == region
        );
        if !is_auditor {
            let err = NodeError::AccessDenied {
                reason: "NOT_AN_AUDITOR",
                message: format!("only auditors of region {region} read its audit"),
            };
            self.inner.audit.refused(entry, &err).await;
            return Err(err.into());
        }
        let dir = self
            .inner
            .config
            .audit
            .as_ref()
            .map(|a| a.dir.clone())
            .ok_or_else(|| Status::failed_precondition(format!("region {region} keeps no audit log")))?;
        let decision = match req.decision.as_str() {
            "" => None,
            d => Some(
                d.parse()
                    .map_err(|_| Status::invalid_argument(format!("decision {d:?} is not allow, deny or fail")))?,
            ),
        };
        let time = |t: &Option<prost_types::Timestamp>| t.and_then(|t| std::time::SystemTime::try_from(t).ok());
        let filter = yrd_audit::Filter {
            subject: Some(req.app.clone()).filter(|a| !a.is_empty()),
            dataset: Some(req.dataset.clone()).filter(|d| !d.is_empty()),
            decision,
            since: time(&req.since),
            until: time(&req.until),
            limit: Some(if req.limit == 0 {
                AUDIT_READ_LIMIT
            } else {
                (req.limit as usize).min(AUDIT_READ_LIMIT)
            }),
        };
        entry.detail = Some(serde_json::json!({ "app": req.app, "decision": req.decision }));
        self.inner.audit.record(entry).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // The files are read on a blocking thread, a batch at a time.
        tokio::task::spawn_blocking(move || {
            let records = match yrd_audit::read(&dir, &filter) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::from(e)));
                    return;
                }
            };
            let mut lines = Vec::new();
            for item in records {
                match item {
                    Ok((line, _)) => lines.push(line),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::from(e)));
                        return;
                    }
                }
                if lines.len() == AUDIT_BATCH
                    && tx
                        .blocking_send(Ok(AuditLines {
                            lines: std::mem::take(&mut lines),
                        }))
                        .is_err()
                {
                    return;
                }
            }
            if !lines.is_empty() {
                let _ = tx.blocking_send(Ok(AuditLines { lines }));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Who sent `req`, a call of the method at `path`, and whom it acts for:
/// the verified gateway peer and the application (operator, auditor) and
/// purpose of its signed on-behalf-of assertion (see [`crate::obo`]).
pub(crate) fn caller_of<T: prost::Message>(req: &Request<T>, path: &str) -> Result<Principal, Status> {
    crate::obo::principal(req, path)
}

/// The node's end of a query's response stream: the bounded channel, and
/// how long a message may wait there for the caller to read
/// (`query.stall_timeout`).
struct Tx {
    tx: mpsc::Sender<Result<NodeQueryResponse, Status>>,
    stall: Duration,
}

/// Sends a batch of rows (see [`send`]).
async fn send_batch(tx: &Tx, batch: RowBatch, deadline: Instant) -> Result<(), NodeError> {
    let kind = Some(node_query_response::Kind::Batch(batch));
    send(tx, Ok(NodeQueryResponse { kind }), deadline).await
}

/// Sends one message of a query stream, waiting for room in the bounded
/// channel, but never past the deadline, and never longer than the stall
/// timeout: a caller that stops reading ends its query (the store stops
/// and the query slot is given back) instead of holding the slot until
/// its deadline.
async fn send(tx: &Tx, msg: Result<NodeQueryResponse, Status>, deadline: Instant) -> Result<(), NodeError> {
    let limit = deadline.min(Instant::now() + tx.stall);
    match tokio::time::timeout_at(limit.into(), tx.tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(NodeError::Cancelled),
        Err(_) if limit < deadline => {
            tracing::info!(
                stall = ?tx.stall,
                "the caller stopped reading; its query was ended (query.stall_timeout)"
            );
            Err(NodeError::Cancelled)
        }
        Err(_) => Err(NodeError::DeadlineExceeded(0)),
    }
}

/// The span of one Query or Aggregate at this node. Attributes name the
/// dataset and region, never a row's values.
fn request_span(method: &str, region: &str, dataset: &str) -> tracing::Span {
    // The dataset is checked after the span opens: recorded cut to a name.
    let dataset = yrd_telemetry::truncate_for_record(dataset, yrd_query::check::MAX_NAME_BYTES);
    tracing::info_span!(
        SPAN_NODE_QUERY,
        "yrd.component" = "node",
        "rpc.method" = method,
        "yrd.region" = region,
        "yrd.dataset" = dataset.as_ref(),
        "yrd.rows" = tracing::field::Empty,
        "yrd.audit_id" = tracing::field::Empty,
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
    // Errors name parameters, limits and store failures, never bound
    // values; a query error without the literals the caller wrote.
    let description = match &err {
        NodeError::Query(q) => q.redacted(),
        other => yrd_telemetry::truncate_for_record(&other.to_string(), 512).into_owned(),
    };
    span.record("otel.status_description", description.as_str());
    err
}

/// Streams one page: the store's rows through the encoder (masked as the
/// permit says) into response batches, then the summary: whether more
/// rows follow the last one sent.
async fn run_query(
    state: &State,
    plan: &PagePlan,
    shown: &Shown,
    mut rows: store::Scan,
    tx: &Tx,
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
    let (mut count, mut bytes, mut has_more) = (0u64, 0u64, false);
    // Bytes of the batch being filled, as encoded: cut before a row that
    // would take it past `query.max_batch_bytes`.
    let mut batch_bytes = 0usize;
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
                encode_field(
                    &plan.schema.fields[f],
                    cell.as_ref(),
                    *mask,
                    shown.app_key.as_ref(),
                    &mut buf,
                );
            }
            let row_bytes = crate::encode::row_message_len(&plan.schema.type_url, buf.len(), key.as_bytes().len());
            if row_bytes > shown.batch_bytes {
                return Err(crate::encode::row_too_large(
                    &plan.schema,
                    &plan.order,
                    keys,
                    row_bytes,
                    shown.batch_bytes,
                )
                .into());
            }
            if !batch.rows.is_empty() && batch_bytes + row_bytes > shown.batch_bytes {
                batch_bytes = 0;
                send_batch(tx, std::mem::replace(&mut batch, new_batch()), deadline).await?;
            }
            batch_bytes += row_bytes;
            bytes += buf.len() as u64;
            batch.rows.push(Any {
                type_url: plan.schema.type_url.clone(),
                value: buf,
            });
            batch.sort_keys.push(key.as_bytes().to_vec());
            count += 1;
            if batch.rows.len() >= batch_rows {
                batch_bytes = 0;
                send_batch(tx, std::mem::replace(&mut batch, new_batch()), deadline).await?;
            }
        }
    }
    // Stops the store's work at once when the page is full.
    drop(rows);
    if !batch.rows.is_empty() {
        send_batch(tx, batch, deadline).await?;
    }
    yrd_telemetry::rows_streamed(&plan.schema.id, count, bytes);
    let summary = NodeQuerySummary {
        region: Some(RegionStatus {
            audit_id: shown.audit_id.clone(),
            ..RegionStatus::answered(region.as_str(), count, started.elapsed(), freshness(stats.updated_at))
        }),
        more: has_more,
        trace_id: yrd_telemetry::current_trace_id(),
    };
    send(
        tx,
        Ok(NodeQueryResponse {
            kind: Some(node_query_response::Kind::Summary(summary)),
        }),
        deadline,
    )
    .await?;
    Ok(count)
}

/// Runs an aggregate at the store and finishes its partials. With a group
/// threshold `min_group_size`, the plan's last metric is the extra row
/// count: groups of fewer rows are left out (and counted), and the count
/// is stripped from the others.
async fn run_aggregate(
    state: &State,
    plan: &AggregatePlan,
    store_plan: store::AggregatePlan,
    min_group_size: u32,
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
    let mut suppressed = 0u64;
    for mut group in aggregated.groups {
        if min_group_size > 0 {
            let rows = group.metrics.pop().map_or(0, |p| p.count);
            if rows < u64::from(min_group_size) {
                suppressed += 1;
                continue;
            }
        }
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
    let response = AggregateResponse {
        groups,
        regions: vec![RegionStatus {
            suppressed_groups: suppressed,
            ..RegionStatus::answered(region.as_str(), n, started.elapsed(), freshness(stats.updated_at))
        }],
        trace_id: yrd_telemetry::current_trace_id(),
        // The gateway's record; the node's own is in its RegionStatus.
        audit_id: String::new(),
    };
    // One message, never larger than a batch may be.
    let max = state.config.query.max_batch_bytes;
    let len = prost::Message::encoded_len(&response);
    if len > max {
        return Err(QueryError::Limit {
            param: "group_by",
            limit: "query.max_batch_bytes",
            max: max as u64,
            actual: len as u64,
        }
        .into());
    }
    Ok(response)
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
