//! The Federation service: the applications' one endpoint for all regions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use yrd_proto::mesh::federation_server::Federation;
use yrd_proto::mesh::{
    AggregateFunction, AggregateRequest, AggregateResponse, Catalog, Consistency, DatasetInfo, EndpointInfo,
    ExplainResponse, GetCatalogRequest, GetDatasetRequest, ListDatasetsRequest, ListDatasetsResponse,
    ListRegionsRequest, ListRegionsResponse, Metric, QueryRequest, QueryResponse, RegionInfo, RegionPlan, RegionState,
    RegionStatus,
};
use yrd_proto::schema::Registry as Schemas;
use yrd_query::{Limits, aggregate, filter, order};

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::federate::{Federator, SPAN_FANOUT, SPAN_REGION_CALL, call_status, region_state};
use crate::plan::{self, QueryPlan};
use crate::registry::{NodeClient, Region, Registry};

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
}

impl GatewayService {
    /// A service over the regions of `registry`.
    pub fn new(
        config: GatewayConfig,
        registry: Registry,
        schemas: &'static Schemas,
        tokens: yrd_query::token::PageTokens,
    ) -> Self {
        let federator = Arc::new(Federator {
            registry,
            tokens,
            batch_rows: config.query.batch_rows,
            region_buffer: config.query.region_buffer,
        });
        Self {
            inner: Arc::new(State {
                config,
                schemas,
                federator,
            }),
        }
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
            None => Duration::from_millis(self.inner.config.query.default_deadline_ms),
        };
        // Regions get a little less than the caller, so that the partial
        // answer and its summary reach the caller before its own timer fires.
        Instant::now() + d - (d / 10).min(DEADLINE_MARGIN)
    }

    fn plan(&self, req: QueryRequest) -> Result<QueryPlan, GatewayError> {
        plan::plan_query(
            req,
            self.inner.schemas,
            self.registry(),
            self.limits(),
            &self.inner.federator.tokens,
        )
    }

    /// Every region's catalog, fetched concurrently within the deadline.
    async fn catalogs(&self, deadline: Instant) -> Vec<(Arc<Region>, Result<Catalog, Status>, Duration)> {
        let calls = self.registry().regions().iter().map(|region| {
            let region = region.clone();
            async move {
                let started = Instant::now();
                let result = call_region(
                    &region,
                    "GetCatalog",
                    deadline,
                    |mut c, req| async move { c.get_catalog(req).await },
                    GetCatalogRequest {},
                )
                .await;
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
                        elapsed: prost_types::Duration::try_from(*elapsed).ok(),
                        ..r.clone()
                    },
                    None => RegionStatus {
                        region: region.id.clone(),
                        state: RegionState::Skipped as i32,
                        message: "the region does not serve this dataset".into(),
                        ..Default::default()
                    },
                },
                Err(s) => RegionStatus {
                    region: region.id.clone(),
                    state: region_state(s.code()) as i32,
                    elapsed: prost_types::Duration::try_from(*elapsed).ok(),
                    message: s.message().to_owned(),
                    ..Default::default()
                },
            };
            info.regions.push(status);
        }
        Some(info)
    }
}

/// Calls one region with the remaining deadline, in a client span; a
/// region without a healthy endpoint fails at once instead of waiting.
async fn call_region<Req, Resp, F, Fut>(
    region: &Region,
    method: &'static str,
    deadline: Instant,
    call: F,
    req: Req,
) -> Result<Resp, Status>
where
    F: FnOnce(NodeClient, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
{
    let span = tracing::info_span!(
        SPAN_REGION_CALL,
        "otel.kind" = "client",
        "rpc.system" = "grpc",
        "rpc.service" = "yrd.mesh.v1.DataNode",
        "rpc.method" = method,
        "server.address" = region.addresses().as_str(),
        "yrd.region" = region.id.as_str(),
        "yrd.region.state" = tracing::field::Empty,
        "rpc.grpc.status_code" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = async {
        if !region.healthy() {
            return Err(Status::unavailable(region.unhealthy_reason()));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut request = Request::new(req);
        request.set_timeout(remaining);
        match tokio::time::timeout_at(deadline.into(), call(region.client(), request)).await {
            Err(_) => Err(Status::deadline_exceeded(
                "the region did not answer before the deadline",
            )),
            Ok(Err(s)) => Err(call_status(s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }
    .instrument(span.clone())
    .await;
    let (state, code) = match &result {
        Ok(_) => (RegionState::Ok, tonic::Code::Ok),
        Err(s) => {
            span.record("otel.status_description", s.message());
            (region_state(s.code()), s.code())
        }
    };
    span.record("yrd.region.state", state.as_str_name());
    yrd_telemetry::record_status(&span, code);
    yrd_telemetry::region_call_done(&region.id, state.as_str_name(), started.elapsed());
    result
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
        plan::dataset(self.inner.schemas, &id).map_err(GatewayError::from)?;
        let catalogs = self.catalogs(deadline).await;
        let info = self
            .merged_info(&id, &catalogs)
            .ok_or_else(|| GatewayError::from(yrd_query::QueryError::UnknownDataset { dataset: id }))?;
        Ok(Response::new(info))
    }

    type QueryStream = ReceiverStream<Result<QueryResponse, Status>>;

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let deadline = self.deadline(&req);
        let req = req.into_inner();
        let plan_span = tracing::info_span!(
            SPAN_PLAN,
            "yrd.component" = "gateway",
            "yrd.dataset" = req.dataset.as_str(),
            "yrd.regions" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let plan = plan_span.in_scope(|| self.plan(req)).inspect_err(|e| {
            plan_span.record("otel.status_code", "ERROR");
            plan_span.record("otel.status_description", e.to_string().as_str());
        })?;
        let asked: Vec<&str> = plan
            .regions
            .iter()
            .filter(|r| r.cursor.is_some())
            .map(|r| r.region.as_str())
            .collect();
        plan_span.record("yrd.regions", asked.join(",").as_str());
        drop(plan_span);
        let fanout = tracing::info_span!(
            SPAN_FANOUT,
            "yrd.dataset" = plan.schema.id.as_str(),
            "yrd.page_size" = plan.page_size
        );
        let trace_id = yrd_telemetry::current_trace_id();
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let federator = self.inner.federator.clone();
        let run = federator.run(plan, deadline, trace_id.clone(), tx).instrument(fanout);
        tokio::spawn(run);
        let mut response = Response::new(ReceiverStream::new(rx));
        if let Ok(v) = trace_id.parse() {
            response.metadata_mut().insert(TRACE_ID_HEADER, v);
        }
        Ok(response)
    }

    async fn aggregate(&self, req: Request<AggregateRequest>) -> Result<Response<AggregateResponse>, Status> {
        let deadline = self.deadline(&req);
        let mut req = req.into_inner();
        let schema = plan::dataset(self.inner.schemas, &req.dataset).map_err(GatewayError::from)?;
        let limits = self.limits();
        let filter =
            plan::filter_of(&schema, &req.filter, req.filter_expr.take(), limits).map_err(GatewayError::from)?;
        order::check_group_by(&req.group_by, &schema, limits).map_err(GatewayError::from)?;
        if req.metrics.is_empty() {
            req.metrics.push(Metric {
                function: AggregateFunction::Count as i32,
                field: String::new(),
            });
        }
        order::check_metrics(&req.metrics, &schema, limits).map_err(GatewayError::from)?;
        let mut requested = req.regions.clone();
        requested.sort();
        requested.dedup();
        let region_field = schema.fields[schema.region_field].name.clone();
        let choices = plan::choose_regions(self.registry(), &requested, filter.as_ref(), &region_field)?;
        let node_req = AggregateRequest {
            dataset: schema.id.clone(),
            filter_expr: filter,
            group_by: req.group_by.clone(),
            metrics: req.metrics.clone(),
            ..Default::default()
        };
        let calls = choices.iter().map(|(id, skip)| {
            let region = self.registry().get(id).cloned();
            let node_req = node_req.clone();
            let skip = skip.clone();
            let id = id.clone();
            async move {
                let started = Instant::now();
                let result = match (skip, region) {
                    (Some(reason), _) => return (id, None, reason, Duration::ZERO),
                    (None, None) => Err(Status::internal("region vanished")),
                    (None, Some(region)) => {
                        call_region(
                            &region,
                            "Aggregate",
                            deadline,
                            |mut c, r| async move { c.aggregate(r).await },
                            node_req,
                        )
                        .await
                    }
                };
                (id, Some(result), String::new(), started.elapsed())
            }
        });
        let answers = futures::future::join_all(calls).await;
        let mut parts = Vec::new();
        let mut regions = Vec::new();
        let mut failed = Vec::new();
        for (id, result, reason, elapsed) in answers {
            let elapsed = prost_types::Duration::try_from(elapsed).ok();
            match result {
                None => regions.push(RegionStatus {
                    region: id,
                    state: RegionState::Skipped as i32,
                    message: reason,
                    ..Default::default()
                }),
                Some(Ok(resp)) => {
                    let freshness = resp.regions.first().and_then(|r| r.freshness);
                    regions.push(RegionStatus {
                        region: id,
                        state: RegionState::Ok as i32,
                        rows: resp.groups.len() as u64,
                        elapsed,
                        freshness,
                        message: String::new(),
                    });
                    parts.push(resp.groups);
                }
                Some(Err(s)) => {
                    failed.push((id.clone(), s.message().to_owned()));
                    regions.push(RegionStatus {
                        region: id,
                        state: region_state(s.code()) as i32,
                        elapsed,
                        message: s.message().to_owned(),
                        ..Default::default()
                    });
                }
            }
        }
        let consistency = Consistency::try_from(req.consistency).unwrap_or(Consistency::Unspecified);
        if consistency == Consistency::AllRegions && !failed.is_empty() {
            return Err(GatewayError::RegionsFailed(failed).into());
        }
        let groups = aggregate::merge_groups(parts, &req.metrics, limits.max_groups).map_err(GatewayError::from)?;
        Ok(Response::new(AggregateResponse {
            groups,
            regions,
            trace_id: yrd_telemetry::current_trace_id(),
        }))
    }

    async fn explain(&self, req: Request<QueryRequest>) -> Result<Response<ExplainResponse>, Status> {
        let deadline = self.deadline(&req);
        let region_deadline = deadline.saturating_duration_since(Instant::now());
        let plan = self.plan(req.into_inner())?;
        let included: Vec<&str> = plan
            .regions
            .iter()
            .filter(|r| r.cursor.is_some())
            .map(|r| r.region.as_str())
            .collect();
        let order: Vec<String> = plan
            .order_keys
            .iter()
            .map(|k| format!("{}{}", k.field, if k.descending { " desc" } else { "" }))
            .collect();
        let description = format!(
            "{} rows of {} from {} region(s) [{}]{}, {}; page size {}; each region call bounded by {} ms{}",
            if plan.ordered { "merge" } else { "forward" },
            plan.schema.id,
            included.len(),
            included.join(", "),
            plan.filter
                .as_ref()
                .map(|f| format!(" where {}", filter::to_text(f)))
                .unwrap_or_default(),
            if plan.ordered {
                format!("k-way merged on {}", order.join(", "))
            } else {
                format!("in arrival order, each region by {}", order.join(", "))
            },
            plan.page_size,
            region_deadline.as_millis(),
            if plan.consistency == Consistency::AllRegions {
                "; fails unless all regions answer"
            } else {
                "; answers with the regions that answer"
            },
        );
        let regions = plan
            .regions
            .iter()
            .map(|r| RegionPlan {
                region: r.region.clone(),
                included: r.cursor.is_some(),
                reason: r.reason.clone(),
                filter: if r.cursor.is_some() { plan.filter.clone() } else { None },
            })
            .collect();
        Ok(Response::new(ExplainResponse {
            dataset: plan.schema.id.clone(),
            regions,
            order_keys: plan.order_keys.clone(),
            page_size: i32::try_from(plan.page_size).unwrap_or(i32::MAX),
            region_deadline: prost_types::Duration::try_from(region_deadline).ok(),
            description,
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
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListRegionsResponse { regions }))
    }
}
