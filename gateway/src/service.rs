//! The Federation service: the applications' one endpoint for all regions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_audit::Entry;
use yrd_identity::{PeerId, Role};
use yrd_proto::mesh::federation_server::Federation;
use yrd_proto::mesh::{
    AggregateRequest, AggregateResponse, Catalog, Consistency, DatasetInfo, EndpointInfo, ExplainResponse,
    GetCatalogRequest, GetDatasetRequest, ListDatasetsRequest, ListDatasetsResponse, ListRegionsRequest,
    ListRegionsResponse, PolicyDecision, QueryRequest, QueryResponse, RegionInfo, RegionPlan, RegionStatus,
};
use yrd_proto::schema::Registry as Schemas;
use yrd_query::{Limits, filter};

use crate::audit::{self, GatewayAudit};
use crate::client::{self, Acting};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::federate::{Federator, SPAN_FANOUT, reason_of, region_state};
use crate::plan::{self, QueryPlan};
use crate::registry::{Region, Registry};

/// Most of the caller's deadline kept back for merging and answering.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// Span of planning a federated query.
pub const SPAN_PLAN: &str = "gateway.plan";
/// Response metadata carrying the query's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Messages buffered towards the application: a slow reader slows the
/// merge, which slows the regions.
const OUT_BUFFER: usize = 2;

/// The Federation implementation.
#[derive(Debug, Clone)]
pub struct GatewayService {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    config: GatewayConfig,
    schemas: &'static Schemas,
    federator: Arc<Federator>,
    audit: GatewayAudit,
}

impl GatewayService {
    /// A service over the regions of `registry`.
    pub fn new(
        config: GatewayConfig,
        registry: Registry,
        schemas: &'static Schemas,
        tokens: yrd_query::token::PageTokens,
        audit: GatewayAudit,
    ) -> Self {
        let federator = Arc::new(Federator {
            registry,
            tokens,
            batch_rows: config.query.batch_rows,
            region_buffer: config.query.region_buffer,
            answer_grace: config.query.answer_grace,
            audit: audit.clone(),
            kept: crate::kept::Kept::new(config.query.keep_open, config.query.max_kept_open),
            keep_open_min_page: config.query.keep_open_min_page,
        });
        Self {
            inner: Arc::new(State {
                config,
                schemas,
                federator,
                audit,
            }),
        }
    }

    /// The gateway's record of a data request (`query`, `aggregate`,
    /// `explain`) that passed its checks.
    fn record(&self, kind: &'static str, peer: Option<&PeerId>, acting: &Acting) -> Entry {
        let mut e = self.inner.audit.entry(kind, peer);
        e.purpose = Some(acting.purpose.clone()).filter(|p| !p.is_empty());
        e
    }

    /// Records a data request refused before any region was asked, with
    /// only what passed its checks (a known dataset, known fields, a valid
    /// purpose), and returns its status.
    async fn refuse(
        &self,
        kind: &'static str,
        peer: Option<&PeerId>,
        dataset: &str,
        fields: &[String],
        purpose: &str,
        err: GatewayError,
    ) -> Status {
        let status = Status::from(err);
        let mut e = self.inner.audit.entry(kind, peer);
        if let Some(schema) = self.inner.schemas.get(dataset) {
            e.dataset = Some(schema.id.clone());
            e.fields = audit::known_fields(schema, fields);
        }
        e.purpose = yrd_query::limits::check_purpose(purpose)
            .ok()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        self.inner.audit.refused(e, &status).await;
        status
    }

    fn registry(&self) -> &Registry {
        &self.inner.federator.registry
    }

    fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// The caller's deadline, bounded by configuration (in the server's
    /// deadline layer), less a margin.
    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let d = match yrd_server::Deadline::of(req) {
            Some(deadline) => deadline.remaining(),
            None => self.inner.config.query.default_deadline,
        };
        // Regions get a little less than the caller, so that the partial
        // answer and its summary reach the caller before its own timer fires.
        Instant::now() + d - (d / 10).min(DEADLINE_MARGIN)
    }

    fn plan(&self, req: &QueryRequest, peer: Option<PeerId>) -> Result<QueryPlan, GatewayError> {
        let acting = acting(peer, &req.purpose)?;
        plan::plan_query(
            req,
            self.inner.schemas,
            self.registry(),
            self.limits(),
            &self.inner.federator.tokens,
            acting,
        )
    }

    /// Every region's catalog, fetched concurrently within the deadline.
    async fn catalogs(&self, deadline: Instant) -> Vec<(Arc<Region>, Result<Catalog, Status>, Duration)> {
        let calls = self.registry().regions().iter().map(|region| {
            let region = region.clone();
            async move {
                let started = Instant::now();
                let result = client::call(&region, GetCatalogRequest {}, deadline).await;
                (region, result, started.elapsed())
            }
        });
        futures::future::join_all(calls).await
    }

    fn merged_info(
        &self,
        id: &str,
        catalogs: &[(Arc<Region>, Result<Catalog, Status>, Duration)],
    ) -> Option<DatasetInfo> {
        let schema = self.inner.schemas.get(id)?;
        let mut info = schema.info();
        for (region, result, elapsed) in catalogs {
            let status = match result {
                Ok(cat) => match cat.datasets.iter().find(|d| d.id == id).and_then(|d| d.regions.first()) {
                    Some(r) => RegionStatus {
                        region: region.id.clone(),
                        ..r.clone()
                    }
                    .with_elapsed(*elapsed),
                    None => RegionStatus::skipped(region.id.as_str(), "the region does not serve this dataset"),
                },
                Err(s) => RegionStatus::failed(region.id.as_str(), region_state(s), s.message(), 0, *elapsed),
            };
            info.regions.push(status);
        }
        Some(info)
    }
}

/// Plans a request for `dataset` inside the planning span, which takes an
/// error status when planning refuses the request. The span is returned so
/// that the caller can record what planning chose.
fn planned<T>(
    dataset: &str,
    plan: impl FnOnce() -> Result<T, GatewayError>,
) -> (tracing::Span, Result<T, GatewayError>) {
    // The dataset is the caller's text, not yet checked: recorded cut to
    // a name's length. The description of a refusal carries no literal.
    let span = tracing::info_span!(
        SPAN_PLAN,
        "yrd.component" = "gateway",
        "yrd.dataset" = yrd_telemetry::truncate_for_record(dataset, yrd_query::check::MAX_NAME_BYTES).as_ref(),
        "yrd.regions" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    );
    let result = span.in_scope(plan).inspect_err(|e| {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", span_description(e).as_str());
    });
    (span, result)
}

/// The longest description of a refusal a span records, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 512;

/// What a span may record of `e`: a query error without the caller's
/// literals ([`yrd_query::QueryError::redacted`]), anything else cut.
fn span_description(e: &GatewayError) -> String {
    match e {
        GatewayError::Query(q) => q.redacted(),
        other => yrd_telemetry::truncate_for_record(&other.to_string(), MAX_DESCRIPTION_BYTES).into_owned(),
    }
}

#[tonic::async_trait]
impl Federation for GatewayService {
    async fn list_datasets(&self, req: Request<ListDatasetsRequest>) -> Result<Response<ListDatasetsResponse>, Status> {
        let catalogs = self.catalogs(self.deadline(&req)).await;
        let datasets = self
            .inner
            .schemas
            .datasets()
            .iter()
            .filter_map(|s| self.merged_info(&s.id, &catalogs))
            .collect();
        Ok(Response::new(ListDatasetsResponse { datasets }))
    }

    async fn get_dataset(&self, req: Request<GetDatasetRequest>) -> Result<Response<DatasetInfo>, Status> {
        let deadline = self.deadline(&req);
        let id = req.into_inner().dataset;
        yrd_query::check::dataset(self.inner.schemas, &id).map_err(GatewayError::from)?;
        let catalogs = self.catalogs(deadline).await;
        let info = self
            .merged_info(&id, &catalogs)
            .ok_or_else(|| GatewayError::from(yrd_query::QueryError::UnknownDataset { dataset: id }))?;
        Ok(Response::new(info))
    }

    type QueryStream = futures::stream::BoxStream<'static, Result<QueryResponse, Status>>;

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let deadline = self.deadline(&req);
        let peer = yrd_identity::peer_id(&req);
        // The page's task holds the application's call slot (see crate::limit).
        let slot = req.extensions().get::<crate::limit::CallSlot>().and_then(|s| s.take());
        let req = req.into_inner();
        let (plan_span, plan) = planned(&req.dataset, || self.plan(&req, peer.clone()));
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                drop(plan_span);
                let why = self.refuse("query", peer.as_ref(), &req.dataset, &req.fields, &req.purpose, e);
                return Err(why.await);
            }
        };
        let asked: Vec<&str> = plan
            .regions
            .iter()
            .filter(|r| r.cursor.is_some())
            .map(|r| r.region.as_str())
            .collect();
        plan_span.record("yrd.regions", asked.join(",").as_str());
        drop(plan_span);
        let mut record = self.record("query", peer.as_ref(), &plan.acting);
        audit::describe(&mut record, plan.schema(), plan.query.filter.as_ref());
        record.fields.clone_from(&plan.query.fields);
        record.detail = Some(serde_json::json!({
            "regions": asked,
            "page_size": plan.page_size(),
            "resumed": !req.page_token.is_empty(),
        }));
        let fanout = tracing::info_span!(
            SPAN_FANOUT,
            "yrd.dataset" = plan.schema().id.as_str(),
            "yrd.page_size" = plan.page_size(),
            "yrd.audit_id" = tracing::field::Empty,
        );
        let trace_id = yrd_telemetry::current_trace_id();
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let federator = self.inner.federator.clone();
        let out = crate::federate::Out::new(tx, self.inner.config.query.client_stall_timeout, deadline);
        let ending = out.ending();
        let run = federator
            .run(plan, deadline, trace_id.clone(), record, out)
            .instrument(fanout);
        tokio::spawn(async move {
            let _slot = slot;
            run.await
        });
        // The page's messages, then, if the task gave up before the
        // summary, the status saying why.
        let last = futures::stream::once(async move { ending.unanswered().map(Err) }).filter_map(std::future::ready);
        let mut response = Response::new(ReceiverStream::new(rx).chain(last).boxed());
        if let Ok(v) = trace_id.parse() {
            response.metadata_mut().insert(TRACE_ID_HEADER, v);
        }
        Ok(response)
    }

    async fn aggregate(&self, req: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let deadline = self.deadline(&req);
        let peer = yrd_identity::peer_id(&req);
        let req = req.into_inner();
        let (_, plan) = planned(&req.dataset, || {
            plan::plan_aggregate(
                &req,
                self.inner.schemas,
                self.registry(),
                self.limits(),
                acting(peer.clone(), &req.purpose)?,
            )
        });
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                let why = self.refuse("aggregate", peer.as_ref(), &req.dataset, &req.group_by, &req.purpose, e);
                return Err(why.await);
            }
        };
        let mut record = self.record("aggregate", peer.as_ref(), &plan.acting);
        audit::describe(&mut record, &plan.aggregate.schema, plan.aggregate.filter.as_ref());
        record.fields.clone_from(&plan.aggregate.group_by);
        let metrics: Vec<String> = plan
            .aggregate
            .metrics
            .iter()
            .map(yrd_query::order::metric_name)
            .collect();
        record.detail = Some(serde_json::json!({ "metrics": metrics }));
        let fanout = tracing::info_span!(SPAN_FANOUT, "yrd.dataset" = plan.aggregate.schema.id.as_str());
        // The record is written while the regions answer, and is durable
        // before the answer leaves; an `aggregate.end` record then adds the
        // groups, those suppressed and each region's outcome and record.
        let answering = self
            .inner
            .federator
            .aggregate(plan, deadline, self.limits().max_groups)
            .instrument(fanout);
        let (recorded, answer) = tokio::join!(self.inner.audit.record(record.clone()), answering);
        let audit_id = recorded?;
        let mut end = record;
        end.kind = "aggregate.end".into();
        end.filter = None;
        end.request = Some(audit_id.clone()).filter(|id| !id.is_empty());
        let answer = match answer {
            Ok(mut response) => {
                end.rows = Some(response.groups.len() as u64);
                let suppressed: u64 = response.regions.iter().map(|r| r.suppressed_groups).sum();
                end.suppressed = (suppressed > 0).then_some(suppressed);
                end.detail = Some(audit::regions_detail(&response.regions));
                response.audit_id = audit_id;
                Ok(Response::new(response))
            }
            Err(e) => {
                let status = Status::from(e);
                end.decision = audit::decision_of(status.code());
                end.reason = Some(audit::reason_code(&status));
                Err(status)
            }
        };
        if end.request.is_some()
            && let Err(e) = self.inner.audit.record_deferred(end).await
        {
            tracing::error!(error = %e, "the audit record of an aggregate's end was not written");
        }
        answer
    }

    async fn explain(&self, req: Request<QueryRequest>) -> Result<Response<ExplainResponse>, Status> {
        let deadline = self.deadline(&req);
        let region_deadline = deadline.saturating_duration_since(Instant::now());
        let peer = yrd_identity::peer_id(&req);
        let req = req.into_inner();
        let plan = match self.plan(&req, peer.clone()) {
            Ok(plan) => plan,
            Err(e) => {
                return Err(self
                    .refuse("explain", peer.as_ref(), &req.dataset, &req.fields, &req.purpose, e)
                    .await);
            }
        };
        let included: Vec<&str> = plan
            .regions
            .iter()
            .filter(|r| r.cursor.is_some())
            .map(|r| r.region.as_str())
            .collect();
        let order: Vec<String> = plan
            .query
            .order_keys
            .iter()
            .map(|k| format!("{}{}", k.field, if k.descending { " desc" } else { "" }))
            .collect();
        let description = format!(
            "{} rows of {} from {} region(s) [{}]{}, {}; page size {}; each region call bounded by {} ms{}",
            if plan.query.ordered { "merge" } else { "forward" },
            plan.schema().id,
            included.len(),
            included.join(", "),
            plan.query
                .filter
                .as_ref()
                .map(|f| format!(" where {}", filter::to_text(f)))
                .unwrap_or_default(),
            if plan.query.ordered {
                format!("k-way merged on {}", order.join(", "))
            } else {
                format!("in arrival order, each region by {}", order.join(", "))
            },
            plan.page_size(),
            region_deadline.as_millis(),
            if plan.consistency == Consistency::AllRegions {
                "; fails unless all regions answer"
            } else {
                "; answers with the regions that answer"
            },
        );
        // Each included region's policy stage, evaluated by the region for
        // the caller (no row is read, nothing is spent).
        let policies = futures::future::join_all(plan.regions.iter().map(|r| {
            let region = self.registry().get(&r.region).cloned();
            let request = r
                .cursor
                .as_ref()
                .map(|c| client::ExplainCall(plan.query.node_request(&c.last_key, plan.page_size())));
            let acting = plan.acting.clone();
            async move {
                let (Some(region), Some(request)) = (region, request) else {
                    return None;
                };
                Some(match client::call_for(&region, request, deadline, &acting).await {
                    Ok(decision) => decision,
                    Err(s) => PolicyDecision {
                        region: region.id.clone(),
                        allowed: false,
                        reason: Some(reason_of(&s))
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| format!("{:?}", region_state(&s))),
                        message: s.message().to_owned(),
                        ..PolicyDecision::default()
                    },
                })
            }
        }))
        .await;
        let regions: Vec<RegionPlan> = plan
            .regions
            .iter()
            .zip(policies)
            .map(|(r, policy)| RegionPlan {
                region: r.region.clone(),
                included: r.cursor.is_some(),
                reason: r.reason.clone(),
                filter: if r.cursor.is_some() {
                    plan.query.filter.clone()
                } else {
                    None
                },
                policy,
            })
            .collect();
        // What each region would decide, recorded before it is told.
        let mut record = self.record("explain", peer.as_ref(), &plan.acting);
        audit::describe(&mut record, plan.schema(), plan.query.filter.as_ref());
        record.fields.clone_from(&plan.query.fields);
        let decisions: Vec<serde_json::Value> = regions
            .iter()
            .map(|r| {
                let p = r.policy.as_ref();
                serde_json::json!({
                    "region": r.region,
                    "included": r.included,
                    "allowed": p.is_some_and(|p| p.allowed),
                    "reason": p.map(|p| p.reason.as_str()).unwrap_or(r.reason.as_str()),
                })
            })
            .collect();
        record.detail = Some(serde_json::json!({ "regions": decisions }));
        let audit_id = self.inner.audit.record(record).await?;
        Ok(Response::new(ExplainResponse {
            dataset: plan.schema().id.clone(),
            regions,
            order_keys: plan.query.order_keys.clone(),
            page_size: i32::try_from(plan.page_size()).unwrap_or(i32::MAX),
            region_deadline: prost_types::Duration::try_from(region_deadline).ok(),
            description,
            audit_id,
        }))
    }

    async fn list_regions(&self, _req: Request<ListRegionsRequest>) -> Result<Response<ListRegionsResponse>, Status> {
        let regions = self
            .registry()
            .regions()
            .iter()
            .map(|r| RegionInfo {
                region: r.id.clone(),
                name: r.name.clone(),
                healthy: r.healthy(),
                endpoints: r
                    .endpoints
                    .iter()
                    .map(|e| {
                        let h = e.health();
                        EndpointInfo {
                            address: e.address.clone(),
                            healthy: h.healthy,
                            latency: h.latency.and_then(|l| prost_types::Duration::try_from(l).ok()),
                            error: h.error.unwrap_or_default(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListRegionsResponse { regions }))
    }
}

/// Whom a data call (Query, Aggregate, Explain) acts for: the verified
/// caller and the purpose it declared, checked before any region is
/// called. Only applications read data: an operator's or auditor's (or any
/// other non-application) certificate is refused here, whatever the allow
/// rules admit. In insecure mode there is no verified caller.
fn acting(peer: Option<PeerId>, purpose: &str) -> Result<Arc<Acting>, GatewayError> {
    if let Some(p) = &peer
        && p.role != Role::App
    {
        let kind = match p.role {
            Role::Operator { .. } => "an operator",
            Role::Auditor { .. } => "an auditor",
            Role::Gateway => "a gateway",
            Role::Node { .. } => "a node",
            Role::App => "an application",
        };
        return Err(GatewayError::NotAnApplication { peer: p.uri(), kind });
    }
    let purpose = yrd_query::limits::check_purpose(purpose)?;
    Ok(Arc::new(Acting {
        subject: peer,
        purpose: purpose.to_owned(),
    }))
}
