//! The per-region client stack: every call the gateway makes to a region
//! node goes through it, whichever method it is.
//!
//! The stack is a list of tower layers around the generated gRPC client,
//! outermost first (see [`stack`]):
//!
//! 1. [`Observe`]: the region's client span (trace context is injected from
//!    it by the client's interceptor), the region-call metrics, and the one
//!    mapping of the stack's typed errors to a `Status`.
//! 2. [`FailFast`]: a region without a healthy endpoint fails at once
//!    instead of waiting in its balancer for one.
//! 3. [`tower::retry::Retry`] with [`RetryOnce`]: one retry, from a budget,
//!    of a call that failed `UNAVAILABLE` before any answer came.
//! 4. [`Deadline`]: each attempt ends at the caller's deadline, with a typed
//!    error.
//! 5. [`NodeCall`]: the call itself, with `grpc-timeout` set for the node
//!    a little past the deadline, and a fresh signed on-behalf-of
//!    assertion ([`crate::assertion`]) for each attempt.
//!
//! Requests are the typed node request messages ([`NodeMethod`]); responses
//! are the typed responses, or for a server stream a [`RegionStream`] that
//! keeps the deadline and the span until the stream ends.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Either, Ready};
use tonic::{Code, Status};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry, RetryLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;
use yrd_proto::mesh::RegionState;
use yrd_proto::mesh::{
    AggregateResponse, Catalog, GetCatalogRequest, NodeAggregateRequest, NodeQueryRequest, NodeQueryResponse,
    PolicyDecision, node_query_response,
};

use crate::assertion::Asserter;
use crate::error::GatewayError;
use crate::federate::region_state;
use crate::registry::{NodeClient, Region};

/// Span of one region's call, a client span.
pub const SPAN_REGION_CALL: &str = "gateway.region";

/// Pause before the one retry of a region that could not be reached.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Retries a region may make per second whatever its traffic, so that a
/// quiet gateway can still retry.
pub const RETRY_MIN_PER_SEC: u32 = 10;
/// Retries a region may make, as a share of its calls, beyond the minimum.
pub const RETRY_PERCENT: f32 = 0.2;
/// How long a call counts towards the retry budget.
const RETRY_TTL: Duration = Duration::from_secs(10);

/// How much later than the stack's own timer the node's (and tonic's
/// client-side) `grpc-timeout` timer fires. tonic reports its own timer as
/// `CANCELLED`; set a little later, the stack's typed deadline is the one
/// that fires (and should both fire at once, [`NodeCall`] maps tonic's by
/// its typed cause), while the node still stops soon after.
const NODE_GRACE: Duration = Duration::from_millis(50);

/// Calls `region` with `message` through its client stack, within
/// `deadline`, for the gateway itself (catalogs, probes): no application is
/// acted for.
pub async fn call<M: NodeMethod>(
    region: &Arc<Region>,
    message: M,
    deadline: Instant,
) -> Result<<M::Reply as Reply>::Output, Status> {
    call_for(region, message, deadline, &Arc::new(Acting::default())).await
}

/// Calls `region` with `message` on behalf of `acting` (the application and
/// its declared purpose), within `deadline`.
pub async fn call_for<M: NodeMethod>(
    region: &Arc<Region>,
    message: M,
    deadline: Instant,
    acting: &Arc<Acting>,
) -> Result<<M::Reply as Reply>::Output, Status> {
    stack::<M>(region.clone())
        .oneshot(RegionRequest {
            message,
            deadline,
            acting: acting.clone(),
        })
        .await
}

/// Whom the gateway acts for in a region call: the caller's verified
/// identity and the purpose it declared. Every attempt of the call tells
/// the node, in a signed assertion (see [`NodeCall`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acting {
    /// The application (operator, auditor) the gateway acts for; `None`
    /// for the gateway's own calls and in insecure mode.
    pub subject: Option<yrd_identity::PeerId>,
    /// The purpose declared; empty when none.
    pub purpose: String,
}

/// The client stack of `region` for method `M`.
pub type RegionStack<M> = Observe<FailFast<Retry<RetryOnce, Deadline<NodeCall<M>>>>>;

/// Builds `region`'s client stack for method `M`. The stack is cheap to
/// build: the region's channel and retry budget are shared.
pub fn stack<M: NodeMethod>(region: Arc<Region>) -> RegionStack<M> {
    ServiceBuilder::new()
        .layer(ObserveLayer::new(region.clone()))
        .layer(FailFastLayer::new(region.clone()))
        // A circuit breaker goes here: inside the span and metrics, so an
        // open breaker is seen, and outside the retry, so that retries do
        // not count against a region twice. Hedging wraps the retry.
        .layer(RetryLayer::new(RetryOnce::new(region.retry_budget())))
        .layer(DeadlineLayer)
        .service(NodeCall::new(region.client(), region.asserter(), region.id.clone()))
}

/// A retry budget that lets a region retry `min_per_sec` calls a second
/// whatever its traffic, plus `retry_percent` of its calls (0.2 = one in
/// five). Out-of-range values are clamped to what tower accepts.
pub fn retry_budget(min_per_sec: u32, retry_percent: f32) -> TpsBudget {
    let percent = if retry_percent.is_finite() {
        retry_percent.clamp(0.0, 1000.0)
    } else {
        0.0
    };
    TpsBudget::new(RETRY_TTL, min_per_sec.min(1_000_000), percent)
}

/// One call to a region: the typed request and the caller's deadline.
#[derive(Clone)]
pub struct RegionRequest<M> {
    /// The node request message.
    pub message: M,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Whom the call is for.
    pub acting: Arc<Acting>,
}

/// A DataNode method, named by its request message type.
pub trait NodeMethod: prost::Message + Clone + Send + 'static {
    /// What the node answers: the response message, or a stream of them.
    type Reply: Reply;
    /// The gRPC method name, for spans.
    const METHOD: &'static str;
    /// The full gRPC path, such as `/yrd.mesh.v1.DataNode/Query`: the
    /// on-behalf-of assertion is bound to it.
    const PATH: &'static str;

    /// The dataset asked for, if any, for spans.
    fn dataset(&self) -> &str {
        ""
    }

    /// Sends `request` with `client`.
    fn send(
        client: NodeClient,
        request: tonic::Request<Self>,
    ) -> BoxFuture<'static, Result<tonic::Response<Self::Reply>, Status>>;
}

/// A node's `Explain` of a query: the same message as `Query`, so a
/// wrapper names the method.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainCall(pub NodeQueryRequest);

/// Encodes exactly as the wrapped request, so that the assertion's request
/// hash is the one the node computes from the `NodeQueryRequest` it decodes.
impl prost::Message for ExplainCall {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        self.0.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        self.0.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl NodeMethod for ExplainCall {
    type Reply = PolicyDecision;
    const METHOD: &'static str = "Explain";
    const PATH: &'static str = "/yrd.mesh.v1.DataNode/Explain";

    fn dataset(&self) -> &str {
        &self.0.dataset
    }

    fn send(
        mut client: NodeClient,
        request: tonic::Request<Self>,
    ) -> BoxFuture<'static, Result<tonic::Response<Self::Reply>, Status>> {
        Box::pin(async move { client.explain(request.map(|e| e.0)).await })
    }
}

/// What a node's answer becomes for the caller once it arrived: a whole
/// message ends the call, a stream carries it on to its end.
pub trait Reply: Send + 'static {
    /// What the caller gets.
    type Output;

    /// Hands the answer (with its response metadata) over, with the
    /// call's record to end.
    fn finish(answer: tonic::Response<Self>, call: CallRecord, deadline: Instant) -> Self::Output
    where
        Self: Sized;
}

impl<T: StreamMessage> Reply for tonic::Streaming<T> {
    type Output = RegionStream<T>;

    fn finish(answer: tonic::Response<Self>, call: CallRecord, deadline: Instant) -> RegionStream<T> {
        let audit_id = answer
            .metadata()
            .get(yrd_audit::ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default();
        RegionStream {
            inner: answer.into_inner(),
            deadline,
            call: Some(call),
            rows: 0,
            audit_id,
        }
    }
}

/// A message of a region's stream.
pub trait StreamMessage: Send + 'static {
    /// The rows it carries, for spans.
    fn rows(&self) -> u64;
}

impl StreamMessage for NodeQueryResponse {
    fn rows(&self) -> u64 {
        match &self.kind {
            Some(node_query_response::Kind::Batch(b)) => b.rows.len() as u64,
            _ => 0,
        }
    }
}

/// A region's answer stream, read within the caller's deadline. The call's
/// span and metrics end with [`finish`](Self::finish); a stream dropped
/// before that (the page filled, the application left) is counted as cut,
/// and dropping it cancels the call.
pub struct RegionStream<T> {
    inner: tonic::Streaming<T>,
    deadline: Instant,
    call: Option<CallRecord>,
    rows: u64,
    audit_id: String,
}

impl<T: StreamMessage> RegionStream<T> {
    /// The node's audit record of this call, from the response's
    /// `yrd-audit-id` header; empty when the node keeps no audit.
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    /// The next message, `None` at the end of the stream; the deadline
    /// passing reads as `DEADLINE_EXCEEDED`.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        match tokio::time::timeout_at(self.deadline.into(), self.inner.message()).await {
            Err(_) => Err(GatewayError::RegionDeadline.into()),
            Ok(Err(status)) => Err(GatewayError::Node(status).into()),
            Ok(Ok(message)) => {
                if let Some(m) = &message {
                    self.rows += m.rows();
                }
                Ok(message)
            }
        }
    }

    /// Ends the call with the caller's verdict on it: `Ok` when the answer
    /// was whole, else the status the region is reported with.
    pub fn finish(mut self, outcome: Result<(), &Status>) {
        if let Some(call) = self.call.take() {
            call.done(Some(self.rows), outcome);
        }
    }
}

impl<T> Drop for RegionStream<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.cut(self.rows);
        }
    }
}

impl<T> std::fmt::Debug for RegionStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionStream")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// One region call in progress: its client span and start, ended once.
#[derive(Debug)]
pub struct CallRecord {
    span: tracing::Span,
    region: String,
    started: Instant,
}

impl CallRecord {
    /// Records how the call ended on its span and in the metrics.
    fn done(self, rows: Option<u64>, outcome: Result<(), &Status>) {
        if let Some(rows) = rows {
            self.span.record("yrd.rows", rows);
        }
        let (state, code) = match outcome {
            Ok(()) => (RegionState::Ok, Code::Ok),
            Err(status) => {
                // A region's refusal of the caller's request may quote its
                // literals: the span records the reason and parameter only.
                let description = yrd_query::error::redacted_status(status)
                    .unwrap_or_else(|| yrd_telemetry::truncate_for_record(status.message(), 512).into_owned());
                self.span.record("otel.status_description", description.as_str());
                (region_state(status), status.code())
            }
        };
        self.span.record("yrd.region.state", state.as_str_name());
        yrd_telemetry::record_status(&self.span, code);
        yrd_telemetry::region_call_done(&self.region, state.as_str_name(), self.started.elapsed());
    }

    /// Records a call the gateway stopped reading: neither a success nor a
    /// failure of the region.
    fn cut(self, rows: u64) {
        self.span.record("yrd.rows", rows);
        self.span.record("yrd.region.state", "cut");
        yrd_telemetry::region_call_done(&self.region, "cut", self.started.elapsed());
    }
}

/// Layer of [`Observe`].
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    region: Arc<Region>,
}

impl ObserveLayer {
    /// Observes calls to `region`.
    pub fn new(region: Arc<Region>) -> Self {
        Self { region }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            region: self.region.clone(),
        }
    }
}

/// Runs each call in a client span (the parent of the node's request span,
/// through the trace context the client injects), records its outcome, and
/// turns the stack's errors into the `Status` the caller reports.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    region: Arc<Region>,
}

impl<S, M> Service<RegionRequest<M>> for Observe<S>
where
    M: NodeMethod,
    S: Service<RegionRequest<M>, Response = tonic::Response<M::Reply>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = <M::Reply as Reply>::Output;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx).map_err(Status::from)
    }

    fn call(&mut self, req: RegionRequest<M>) -> Self::Future {
        let span = tracing::info_span!(
            SPAN_REGION_CALL,
            "otel.kind" = "client",
            "rpc.system" = "grpc",
            "rpc.service" = "yrd.mesh.v1.DataNode",
            "rpc.method" = M::METHOD,
            "server.address" = self.region.addresses().as_str(),
            "yrd.region" = self.region.id.as_str(),
            "yrd.dataset" = tracing::field::Empty,
            "yrd.rows" = tracing::field::Empty,
            "yrd.region.state" = tracing::field::Empty,
            "rpc.grpc.status_code" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let dataset = req.message.dataset();
        if !dataset.is_empty() {
            span.record("yrd.dataset", dataset);
        }
        let deadline = req.deadline;
        let call = CallRecord {
            span: span.clone(),
            region: self.region.id.clone(),
            started: Instant::now(),
        };
        let answer = span.in_scope(|| self.inner.call(req)).instrument(span);
        Box::pin(async move {
            match answer.await {
                Ok(reply) => Ok(Reply::finish(reply, call, deadline)),
                Err(err) => {
                    let status = Status::from(err);
                    call.done(None, Err(&status));
                    Err(status)
                }
            }
        })
    }
}

/// Layer of [`FailFast`].
#[derive(Debug, Clone)]
pub struct FailFastLayer {
    region: Arc<Region>,
}

impl FailFastLayer {
    /// Fails calls to `region` at once while it has no healthy endpoint.
    pub fn new(region: Arc<Region>) -> Self {
        Self { region }
    }
}

impl<S> Layer<S> for FailFastLayer {
    type Service = FailFast<S>;

    fn layer(&self, inner: S) -> FailFast<S> {
        FailFast {
            inner,
            region: self.region.clone(),
        }
    }
}

/// Fails a call at once, `UNAVAILABLE` with each endpoint's last error,
/// when the region has no healthy endpoint: its balancer would otherwise
/// hold the call until the deadline.
#[derive(Debug, Clone)]
pub struct FailFast<S> {
    inner: S,
    region: Arc<Region>,
}

impl<S, Req> Service<Req> for FailFast<S>
where
    S: Service<Req, Error = GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = Either<Ready<Result<S::Response, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.region.healthy() {
            Either::Right(self.inner.call(req))
        } else {
            let reason = self.region.unhealthy_reason();
            Either::Left(futures::future::ready(Err(GatewayError::NoHealthyNode(reason))))
        }
    }
}

/// The one safe retry: once, after [`RETRY_PAUSE`], of a call that failed
/// `UNAVAILABLE` (no endpoint could take it; another replica may), when the
/// region's budget allows and enough of the deadline remains. A stream
/// that failed after it began is never retried: by then rows may have been
/// forwarded, and the stack has already returned it.
#[derive(Debug, Clone)]
pub struct RetryOnce {
    budget: Arc<TpsBudget>,
    retried: bool,
}

impl RetryOnce {
    /// A policy drawing on `budget`.
    pub fn new(budget: Arc<TpsBudget>) -> Self {
        Self { budget, retried: false }
    }
}

impl<M: Clone, R> Policy<RegionRequest<M>, R, GatewayError> for RetryOnce {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut RegionRequest<M>, result: &mut Result<R, GatewayError>) -> Option<Self::Future> {
        if self.retried {
            return None;
        }
        // Every first attempt earns the budget its share of a retry.
        self.budget.deposit();
        let Err(GatewayError::Node(status)) = result else {
            return None;
        };
        if status.code() != Code::Unavailable {
            return None;
        }
        if req.deadline.saturating_duration_since(Instant::now()) <= 2 * RETRY_PAUSE {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!(error = %status.message(), "not retrying a region: retry budget spent");
            return None;
        }
        tracing::debug!(error = %status.message(), "retrying a region once");
        self.retried = true;
        Some(tokio::time::sleep(RETRY_PAUSE))
    }

    fn clone_request(&mut self, req: &RegionRequest<M>) -> Option<RegionRequest<M>> {
        // Only the first attempt may be retried, so only it needs a copy.
        (!self.retried).then(|| req.clone())
    }
}

/// Layer of [`Deadline`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// Ends an attempt at the request's deadline with
/// [`GatewayError::RegionDeadline`], and refuses one begun after it.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, M> Service<RegionRequest<M>> for Deadline<S>
where
    S: Service<RegionRequest<M>, Error = GatewayError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<S::Response, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: RegionRequest<M>) -> Self::Future {
        let deadline = req.deadline;
        if deadline <= Instant::now() {
            return Box::pin(futures::future::ready(Err(GatewayError::NoTimeLeft)));
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            tokio::time::timeout_at(deadline.into(), answer)
                .await
                .unwrap_or(Err(GatewayError::RegionDeadline))
        })
    }
}

/// The call itself, with the generated DataNode client (whose interceptor
/// injects the current span's trace context), and the on-behalf-of
/// assertion. Being the innermost layer, it makes a new assertion (nonce,
/// times) for every attempt: a retry is not a replay.
pub struct NodeCall<M> {
    client: NodeClient,
    asserter: Arc<Asserter>,
    audience: Arc<str>,
    method: PhantomData<fn(M)>,
}

impl<M> NodeCall<M> {
    /// Calls with `client`, asserting with `asserter` to region `audience`.
    pub fn new(client: NodeClient, asserter: Arc<Asserter>, audience: impl Into<Arc<str>>) -> Self {
        Self {
            client,
            asserter,
            audience: audience.into(),
            method: PhantomData,
        }
    }
}

impl<M> Clone for NodeCall<M> {
    fn clone(&self) -> Self {
        Self::new(self.client.clone(), self.asserter.clone(), self.audience.clone())
    }
}

impl<M> std::fmt::Debug for NodeCall<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCall").finish_non_exhaustive()
    }
}

impl<M: NodeMethod> Service<RegionRequest<M>> for NodeCall<M> {
    type Response = tonic::Response<M::Reply>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<tonic::Response<M::Reply>, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        // The generated client waits for its channel inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RegionRequest<M>) -> Self::Future {
        // Signed here, in the call's span (Observe entered it), so that the
        // trace id asserted is the one the client's interceptor sends.
        let assertion = match self.asserter.assert(&req.acting, &self.audience, M::PATH, &req.message) {
            Ok(a) => a,
            Err(err) => return Box::pin(futures::future::ready(Err(err))),
        };
        let mut request = tonic::Request::new(req.message);
        request.set_timeout(req.deadline.saturating_duration_since(Instant::now()) + NODE_GRACE);
        request.metadata_mut().insert_bin(crate::assertion::HEADER, assertion);
        let answer = M::send(self.client.clone(), request);
        Box::pin(async move {
            answer.await.map_err(|status| {
                if tonic_timer_fired(&status) {
                    GatewayError::RegionDeadline
                } else {
                    GatewayError::Node(status)
                }
            })
        })
    }
}

/// Whether tonic's own `grpc-timeout` timer ended the call, by its typed
/// cause in the status's source chain. Its timer is set later than the
/// stack's, but both can expire before a busy task is next polled.
pub fn tonic_timer_fired(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Implements [`NodeMethod`] for the DataNode method `$method`, called
/// with the client's `$call`; `|$r| $dataset` names the dataset, for spans.
macro_rules! node_method {
    ($request:ty => $reply:ty, $method:literal, $call:ident $(, |$r:ident| $dataset:expr)?) => {
        impl NodeMethod for $request {
            type Reply = $reply;
            const METHOD: &'static str = $method;
            const PATH: &'static str = concat!("/yrd.mesh.v1.DataNode/", $method);

            $(fn dataset(&self) -> &str {
                let $r = self;
                $dataset
            })?

            fn send(
                mut client: NodeClient,
                request: tonic::Request<Self>,
            ) -> BoxFuture<'static, Result<tonic::Response<Self::Reply>, Status>> {
                Box::pin(async move { client.$call(request).await })
            }
        }
    };
}

node_method!(NodeQueryRequest => tonic::Streaming<NodeQueryResponse>, "Query", query, |r| &r.dataset);
node_method!(NodeAggregateRequest => AggregateResponse, "Aggregate", aggregate, |r| &r.dataset);
node_method!(GetCatalogRequest => Catalog, "GetCatalog", get_catalog);
node_method!(yrd_proto::mesh::RequestAccessRequest => yrd_proto::mesh::AccessRequest, "RequestAccess", request_access);
node_method!(
    yrd_proto::mesh::ListAccessRequestsRequest => yrd_proto::mesh::ListAccessRequestsResponse,
    "ListAccessRequests",
    list_access_requests
);
node_method!(yrd_proto::mesh::DecideAccessRequest => yrd_proto::mesh::AccessRequest, "DecideAccess", decide_access);
node_method!(yrd_proto::mesh::RevokeAccessRequest => yrd_proto::mesh::AccessRequest, "RevokeAccess", revoke_access);
node_method!(
    yrd_proto::mesh::ReadAuditRequest => tonic::Streaming<yrd_proto::mesh::AuditLines>,
    "ReadAudit",
    read_audit,
    |r| &r.dataset
);

/// Implements a whole-message [`Reply`]: the answer ends the call, which
/// records `|$r| $rows` rows when given.
macro_rules! whole_reply {
    (@rows $answer:expr) => {
        None
    };
    (@rows $answer:expr, |$r:ident| $rows:expr) => {{
        let $r = $answer;
        Some($rows)
    }};
    ($reply:ty $(, |$r:ident| $rows:expr)?) => {
        impl Reply for $reply {
            type Output = Self;

            fn finish(answer: tonic::Response<Self>, call: CallRecord, _deadline: Instant) -> Self {
                let answer = answer.into_inner();
                call.done(whole_reply!(@rows &answer $(, |$r| $rows)?), Ok(()));
                answer
            }
        }
    };
}

whole_reply!(AggregateResponse);
whole_reply!(PolicyDecision);
whole_reply!(Catalog);
whole_reply!(yrd_proto::mesh::AccessRequest);
whole_reply!(yrd_proto::mesh::ListAccessRequestsResponse, |r| r.requests.len() as u64);

impl StreamMessage for yrd_proto::mesh::AuditLines {
    fn rows(&self) -> u64 {
        self.lines.len() as u64
    }
}
