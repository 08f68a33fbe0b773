//! Running a federated query: one task per region streams its node's
//! answer into a small bounded channel; the gateway forwards batches as
//! they come when no order was asked, or k-way merges rows on their sort
//! keys (bytes, never decoded) when one was. The global page size is
//! honoured exactly, and the page token records a cursor per region.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tracing::Instrument;
use yrd_proto::mesh::{
    Consistency, QueryRequest, QueryResponse, QuerySummary, RegionState, RegionStatus, RowBatch, query_response,
};
use yrd_query::token::{Cursor, PageTokens};

use crate::error::GatewayError;
use crate::plan::QueryPlan;
use crate::registry::{Region, Registry};

/// Span of one federated query's fan-out: the parent of the region calls.
pub const SPAN_FANOUT: &str = "gateway.fanout";
/// Span of one region's call, a client span.
pub const SPAN_REGION_CALL: &str = "gateway.region";
/// Span of the merge (or forwarding) of the regions' rows.
pub const SPAN_MERGE: &str = "gateway.merge";

/// Pause before the one retry of a region that could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What a region task reports.
#[derive(Debug)]
enum RegionEvent {
    /// Rows.
    Batch(RowBatch),
    /// The node's summary: the region is done.
    Done(QuerySummary),
    /// The region failed.
    Failed(Status),
}

/// The outcome of one region in a page.
#[derive(Debug)]
struct RegionRun {
    region: String,
    rx: mpsc::Receiver<RegionEvent>,
    pending: VecDeque<(Any, Vec<u8>)>,
    last_key: Vec<u8>,
    rows: u64,
    started: Instant,
    finished: Option<Duration>,
    /// The node sent its summary.
    node_done: bool,
    /// The node's summary said more rows follow.
    node_has_more: bool,
    freshness: Option<prost_types::Timestamp>,
    failure: Option<Status>,
}

impl RegionRun {
    /// Waits for the region's next rows (or its end) and buffers them.
    async fn fill(&mut self) {
        if self.node_done || self.failure.is_some() {
            return;
        }
        match self.rx.recv().await {
            Some(RegionEvent::Batch(b)) => {
                self.pending.extend(b.rows.into_iter().zip(b.sort_keys));
            }
            Some(RegionEvent::Done(s)) => self.done(s),
            Some(RegionEvent::Failed(status)) => self.fail(status),
            None => self.fail(Status::internal("region task ended without an answer")),
        }
    }

    fn done(&mut self, s: QuerySummary) {
        self.node_done = true;
        self.node_has_more = !s.next_page_token.is_empty();
        self.freshness = s.regions.into_iter().next().and_then(|r| r.freshness);
        self.finished = Some(self.started.elapsed());
    }

    fn fail(&mut self, status: Status) {
        self.finished = Some(self.started.elapsed());
        self.failure = Some(status);
    }

    /// Whether every row of the region has been forwarded.
    fn exhausted(&self) -> bool {
        self.failure.is_none() && self.node_done && !self.node_has_more && self.pending.is_empty()
    }

    fn status(&self) -> RegionStatus {
        let (state, message) = match &self.failure {
            None => (RegionState::Ok, String::new()),
            Some(s) => (region_state(s.code()), s.message().to_owned()),
        };
        RegionStatus {
            region: self.region.clone(),
            state: state as i32,
            rows: self.rows,
            elapsed: prost_types::Duration::try_from(self.finished.unwrap_or_else(|| self.started.elapsed())).ok(),
            freshness: self.freshness,
            message,
        }
    }
}

/// The state a failed call leaves its region in.
pub fn region_state(code: Code) -> RegionState {
    match code {
        Code::Ok => RegionState::Ok,
        Code::Unavailable => RegionState::Unavailable,
        Code::DeadlineExceeded | Code::Cancelled => RegionState::DeadlineExceeded,
        Code::PermissionDenied | Code::Unauthenticated => RegionState::PermissionDenied,
        Code::InvalidArgument | Code::NotFound | Code::ResourceExhausted | Code::FailedPrecondition => {
            RegionState::InvalidArgument
        }
        _ => RegionState::Failed,
    }
}

/// Maps a region call's error so that a deadline reads as one.
pub fn call_status(err: Status) -> Status {
    if err.code() == Code::Cancelled && err.message().contains("Timeout expired") {
        Status::deadline_exceeded("the region did not answer before the deadline")
    } else {
        err
    }
}

/// Runs federated queries.
#[derive(Debug)]
pub struct Federator {
    /// The regions.
    pub registry: Registry,
    /// Page tokens of this gateway (shared secret across replicas).
    pub tokens: PageTokens,
    /// Rows per batch sent to the application.
    pub batch_rows: usize,
    /// Batches read ahead per region.
    pub region_buffer: usize,
}

impl Federator {
    /// Streams one page of `plan` into `out`, ending with the summary (or an
    /// error under ALL_REGIONS). Returns when done or when the application
    /// goes away (`out` closed), which cancels every region call, with the
    /// code the application saw.
    pub async fn run(
        self: Arc<Self>,
        plan: QueryPlan,
        deadline: Instant,
        trace_id: String,
        out: mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Code {
        let _open = yrd_telemetry::OpenStreamGuard::open();
        self.page(plan, deadline, trace_id, out).await
    }

    /// One page; returns the gRPC code the application saw.
    async fn page(
        &self,
        plan: QueryPlan,
        deadline: Instant,
        trace_id: String,
        out: mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Code {
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        for choice in &plan.regions {
            let (Some(cursor), Some(region)) = (&choice.cursor, self.registry.get(&choice.region)) else {
                skipped.push(RegionStatus {
                    region: choice.region.clone(),
                    state: RegionState::Skipped as i32,
                    message: choice.reason.clone(),
                    ..Default::default()
                });
                continue;
            };
            let req = QueryRequest {
                dataset: plan.schema.id.clone(),
                filter_expr: plan.filter.clone(),
                fields: plan.fields.clone(),
                order_keys: plan.order_keys.clone(),
                page_size: i32::try_from(plan.page_size).unwrap_or(i32::MAX),
                start_after_key: cursor.last_key.clone(),
                ..Default::default()
            };
            let (tx, rx) = mpsc::channel(self.region_buffer);
            let span = tracing::info_span!(
                SPAN_REGION_CALL,
                "otel.kind" = "client",
                "rpc.system" = "grpc",
                "rpc.service" = "yrd.mesh.v1.DataNode",
                "rpc.method" = "Query",
                "server.address" = region.addresses().as_str(),
                "yrd.region" = region.id.as_str(),
                "yrd.dataset" = plan.schema.id.as_str(),
                "yrd.rows" = tracing::field::Empty,
                "yrd.region.state" = tracing::field::Empty,
                "rpc.grpc.status_code" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
                "otel.status_description" = tracing::field::Empty,
            );
            tokio::spawn(region_task(region.clone(), req, deadline, tx).instrument(span));
            runs.push(RegionRun {
                region: choice.region.clone(),
                rx,
                pending: VecDeque::new(),
                last_key: cursor.last_key.clone(),
                rows: 0,
                started: Instant::now(),
                finished: None,
                node_done: false,
                node_has_more: false,
                freshness: None,
                failure: None,
            });
        }
        let merge = plan.ordered || plan.consistency == Consistency::AllRegions;
        let merge_span = tracing::info_span!(
            SPAN_MERGE,
            "yrd.merge" = if merge { "k-way" } else { "forward" },
            "yrd.rows" = tracing::field::Empty
        );
        let sent = if merge {
            self.merge(&plan, &mut runs, &out).instrument(merge_span.clone()).await
        } else {
            self.forward(&plan, &mut runs, &out)
                .instrument(merge_span.clone())
                .await
        };
        if let Ok(n) = &sent {
            merge_span.record("yrd.rows", n);
        }
        let Ok(emitted) = sent else {
            return Code::Cancelled; // the application went away
        };
        let failed: Vec<(String, String)> = runs
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|s| (r.region.clone(), s.message().to_owned())))
            .collect();
        if plan.consistency == Consistency::AllRegions && !failed.is_empty() {
            let _ = out.send(Err(GatewayError::RegionsFailed(failed).into())).await;
            return Code::Unavailable;
        }
        let page_full = emitted >= u64::from(plan.page_size);
        let cursors: Vec<Cursor> = runs
            .iter()
            .filter(|r| if r.failure.is_some() { page_full } else { !r.exhausted() })
            .map(|r| Cursor {
                region: r.region.clone(),
                last_key: r.last_key.clone(),
                exhausted: false,
            })
            .collect();
        let next_page_token = if cursors.is_empty() {
            String::new()
        } else {
            self.tokens.seal(&plan.fingerprint, &cursors, SystemTime::now())
        };
        let mut regions: Vec<RegionStatus> = runs.iter().map(RegionRun::status).collect();
        regions.extend(skipped);
        regions.sort_by(|a, b| a.region.cmp(&b.region));
        let summary = QuerySummary {
            regions,
            next_page_token,
            trace_id,
            rows: emitted,
        };
        yrd_telemetry::rows_streamed(&plan.schema.id, emitted, 0);
        match out
            .send(Ok(QueryResponse {
                kind: Some(query_response::Kind::Summary(summary)),
            }))
            .await
        {
            Ok(()) => Code::Ok,
            Err(_) => Code::Cancelled,
        }
    }

    /// No order asked: forwards each region's batches as they arrive, cut
    /// at the page size. Returns the rows sent, or Err when `out` closed.
    async fn forward(
        &self,
        plan: &QueryPlan,
        runs: &mut [RegionRun],
        out: &mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Result<u64, ()> {
        let mut remaining = u64::from(plan.page_size);
        let receivers: Vec<_> = runs
            .iter_mut()
            .enumerate()
            .map(|(i, r)| {
                let (_, placeholder) = mpsc::channel(1);
                ReceiverStream::new(std::mem::replace(&mut r.rx, placeholder)).map(move |e| (i, e))
            })
            .collect();
        let mut events = futures::stream::select_all(receivers);
        while remaining > 0 {
            let Some((i, event)) = events.next().await else { break };
            let run = &mut runs[i];
            match event {
                RegionEvent::Batch(mut b) => {
                    if b.rows.len() as u64 > remaining {
                        let keep = usize::try_from(remaining).unwrap_or(usize::MAX);
                        b.rows.truncate(keep);
                        b.sort_keys.truncate(keep);
                        // Rows cut here are not forwarded: the region continues
                        // from the last row sent.
                        run.node_has_more = true;
                    }
                    let n = b.rows.len() as u64;
                    if let Some(k) = b.sort_keys.last() {
                        run.last_key.clone_from(k);
                    }
                    run.rows += n;
                    remaining -= n;
                    out.send(Ok(QueryResponse {
                        kind: Some(query_response::Kind::Batch(b)),
                    }))
                    .await
                    .map_err(|_| ())?;
                }
                RegionEvent::Done(s) => run.done(s),
                RegionEvent::Failed(status) => run.fail(status),
            }
        }
        // Regions still streaming when the page filled have more to give.
        for r in runs.iter_mut() {
            if !r.node_done && r.failure.is_none() {
                r.node_has_more = true;
                r.node_done = true;
                r.finished.get_or_insert(r.started.elapsed());
            }
        }
        Ok(u64::from(plan.page_size) - remaining)
    }

    /// An order asked: k-way merges the regions' rows on their sort keys.
    async fn merge(
        &self,
        plan: &QueryPlan,
        runs: &mut [RegionRun],
        out: &mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Result<u64, ()> {
        futures::future::join_all(runs.iter_mut().map(RegionRun::fill)).await;
        if plan.consistency == Consistency::AllRegions && runs.iter().any(|r| r.failure.is_some()) {
            return Ok(0);
        }
        let mut heap: BinaryHeap<Reverse<(Vec<u8>, usize)>> = BinaryHeap::with_capacity(runs.len());
        for (i, run) in runs.iter_mut().enumerate() {
            while run.pending.is_empty() && !run.node_done && run.failure.is_none() {
                run.fill().await;
            }
            if let Some((_, k)) = run.pending.front() {
                heap.push(Reverse((k.clone(), i)));
            }
        }
        let batch_rows = self.batch_rows.min(plan.page_size.max(1) as usize);
        let new_batch = || RowBatch {
            rows: Vec::with_capacity(batch_rows),
            sort_keys: Vec::with_capacity(batch_rows),
            region: String::new(),
            row_regions: Vec::with_capacity(batch_rows),
        };
        let mut batch = new_batch();
        let mut emitted = 0u64;
        while emitted < u64::from(plan.page_size) {
            let Some(Reverse((_, i))) = heap.pop() else { break };
            let run = &mut runs[i];
            let Some((row, key)) = run.pending.pop_front() else {
                continue;
            };
            run.last_key.clone_from(&key);
            run.rows += 1;
            emitted += 1;
            batch.rows.push(row);
            batch.sort_keys.push(key);
            batch.row_regions.push(run.region.clone());
            if batch.rows.len() >= batch_rows {
                let full = std::mem::replace(&mut batch, new_batch());
                out.send(Ok(QueryResponse {
                    kind: Some(query_response::Kind::Batch(full)),
                }))
                .await
                .map_err(|_| ())?;
            }
            while run.pending.is_empty() && !run.node_done && run.failure.is_none() {
                run.fill().await;
            }
            if let Some((_, k)) = run.pending.front() {
                heap.push(Reverse((k.clone(), i)));
            }
        }
        if !batch.rows.is_empty() {
            out.send(Ok(QueryResponse {
                kind: Some(query_response::Kind::Batch(batch)),
            }))
            .await
            .map_err(|_| ())?;
        }
        if emitted >= u64::from(plan.page_size) {
            for r in runs.iter_mut() {
                if !r.node_done && r.failure.is_none() {
                    r.node_has_more = true;
                    r.node_done = true;
                    r.finished.get_or_insert(r.started.elapsed());
                }
            }
        }
        Ok(emitted)
    }
}

/// Streams one region's answer into `tx`; ends at the summary, an error,
/// the deadline, or when the receiver is dropped (which cancels the call).
async fn region_task(region: Arc<Region>, req: QueryRequest, deadline: Instant, tx: mpsc::Sender<RegionEvent>) {
    let span = tracing::Span::current();
    let started = Instant::now();
    let mut rows = 0u64;
    let event = match open_stream(&region, req, deadline).await {
        Err(status) => RegionEvent::Failed(status),
        Ok(mut stream) => loop {
            match tokio::time::timeout_at(deadline.into(), stream.message()).await {
                Err(_) => {
                    break RegionEvent::Failed(Status::deadline_exceeded(
                        "the region did not answer before the deadline",
                    ));
                }
                Ok(Err(status)) => break RegionEvent::Failed(call_status(status)),
                Ok(Ok(None)) => {
                    break RegionEvent::Failed(Status::internal("the region's stream ended without a summary"));
                }
                Ok(Ok(Some(msg))) => match msg.kind {
                    Some(query_response::Kind::Batch(b)) => {
                        rows += b.rows.len() as u64;
                        if tx.send(RegionEvent::Batch(b)).await.is_err() {
                            // The page is complete or the application left.
                            span.record("yrd.rows", rows);
                            span.record("yrd.region.state", "cut");
                            yrd_telemetry::region_call_done(&region.id, "cut", started.elapsed());
                            return;
                        }
                    }
                    Some(query_response::Kind::Summary(s)) => break RegionEvent::Done(s),
                    None => break RegionEvent::Failed(Status::internal("the region sent an empty message")),
                },
            }
        },
    };
    span.record("yrd.rows", rows);
    let (state, code) = match &event {
        RegionEvent::Failed(status) => {
            span.record("otel.status_description", status.message());
            (region_state(status.code()), status.code())
        }
        _ => (RegionState::Ok, Code::Ok),
    };
    span.record("yrd.region.state", state.as_str_name());
    yrd_telemetry::record_status(&span, code);
    yrd_telemetry::region_call_done(&region.id, state.as_str_name(), started.elapsed());
    let _ = tx.send(event).await;
}

async fn open_stream(
    region: &Region,
    req: QueryRequest,
    deadline: Instant,
) -> Result<tonic::Streaming<QueryResponse>, Status> {
    if !region.healthy() {
        return Err(Status::unavailable(region.unhealthy_reason()));
    }
    let mut client = region.client();
    // Retrying is safe only before the first row: one retry, after a short
    // pause, when the region could not be reached at all (another replica
    // may take it).
    let mut retried = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded("no time left before the deadline"));
        }
        let mut request = tonic::Request::new(req.clone());
        request.set_timeout(remaining);
        match tokio::time::timeout_at(deadline.into(), client.query(request)).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "the region did not answer before the deadline",
                ));
            }
            Ok(Ok(resp)) => return Ok(resp.into_inner()),
            Ok(Err(status)) if status.code() == Code::Unavailable && !retried && remaining > 2 * RETRY_PAUSE => {
                tracing::debug!(region = %region.id, error = %status.message(), "retrying a region once");
                retried = true;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(status)) => return Err(call_status(status)),
        }
    }
}
