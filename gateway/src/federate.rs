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
use yrd_audit::Entry;
use yrd_proto::mesh::{
    AggregateGroup, AggregateResponse, Consistency, NodeQueryRequest, NodeQuerySummary, QueryResponse, QuerySummary,
    RegionState, RegionStatus, RowBatch, node_query_response, query_response,
};
use yrd_query::aggregate;
use yrd_query::token::{Cursor, PageTokens};

use crate::audit::{self, GatewayAudit};
use crate::client;
pub use crate::client::SPAN_REGION_CALL;
use crate::error::GatewayError;
use crate::plan::{AggregatePlan, QueryPlan};
use crate::registry::{Region, Registry};

/// Span of one federated query's fan-out: the parent of the region calls.
pub const SPAN_FANOUT: &str = "gateway.fanout";
/// Span of the merge (or forwarding) of the regions' rows.
pub const SPAN_MERGE: &str = "gateway.merge";

/// The message of a region that had not answered when its page filled.
pub const UNHEARD: &str = "the page filled before this region answered; it is asked again for the next page";

/// What a region task reports.
#[derive(Debug)]
enum RegionEvent {
    /// The node accepted the call; its audit record of it.
    Opened(String),
    /// Rows.
    Batch(RowBatch),
    /// The node's summary: the region is done.
    Done(NodeQuerySummary),
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
    /// The region's audit record of this page's request.
    audit_id: String,
    /// The page filled before the region answered the call at all.
    unheard: bool,
    failure: Option<Status>,
}

impl RegionRun {
    /// Waits for the region's next rows (or its end) and buffers them.
    async fn fill(&mut self) {
        while !self.node_done && self.failure.is_none() {
            match self.rx.recv().await {
                Some(RegionEvent::Opened(id)) => {
                    self.audit_id = id;
                    continue;
                }
                Some(RegionEvent::Batch(b)) => {
                    self.pending.extend(b.rows.into_iter().zip(b.sort_keys));
                }
                Some(RegionEvent::Done(s)) => self.done(s),
                Some(RegionEvent::Failed(status)) => self.fail(status),
                None => self.fail(Status::internal("region task ended without an answer")),
            }
            return;
        }
    }

    fn done(&mut self, s: NodeQuerySummary) {
        self.node_done = true;
        self.node_has_more = s.more;
        if let Some(r) = s.region {
            self.freshness = r.freshness;
            if !r.audit_id.is_empty() {
                self.audit_id = r.audit_id;
            }
        }
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
        let elapsed = self.finished.unwrap_or_else(|| self.started.elapsed());
        match &self.failure {
            None if self.unheard => RegionStatus {
                message: UNHEARD.into(),
                ..RegionStatus::answered(self.region.as_str(), self.rows, elapsed, self.freshness)
            },
            None => RegionStatus {
                audit_id: self.audit_id.clone(),
                ..RegionStatus::answered(self.region.as_str(), self.rows, elapsed, self.freshness)
            },
            Some(s) => failed_status(self.region.as_str(), s, self.rows, elapsed),
        }
    }
}

/// The status of a region whose call failed with `s`: its state, its safe
/// message and, for a policy refusal, the reason code the region gave
/// (`NO_GRANT`, ...) from the status's `ErrorInfo`.
pub fn failed_status(region: &str, s: &Status, rows: u64, elapsed: Duration) -> RegionStatus {
    RegionStatus {
        reason: reason_of(s),
        ..RegionStatus::failed(region, region_state(s.code()), s.message(), rows, elapsed)
    }
}

/// The `ErrorInfo` reason of a status, empty when it has none.
pub fn reason_of(s: &Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info().map(|i| i.reason).unwrap_or_default()
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

/// Whether a region's failure is the caller's fault: the request passed the
/// gateway's checks, but the region's own limits refused it (a node may be
/// configured stricter than the gateway, and `max_groups` can only be known
/// once a region has grouped its rows). Such an answer is an error for the
/// whole request, in either consistency mode, never a partial `OK`.
fn is_refusal(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::ResourceExhausted)
}

/// The first caller-fault refusal among the regions' failures.
pub fn refusal<'a>(mut failures: impl Iterator<Item = (&'a str, &'a Status)>) -> Option<GatewayError> {
    failures
        .find(|(_, s)| is_refusal(s.code()))
        .map(|(region, s)| GatewayError::Refused {
            region: region.to_owned(),
            status: s.clone(),
        })
}

/// How one page of a query ended, for its `query.end` audit record.
#[derive(Debug)]
struct PageEnd {
    /// The code the application saw.
    code: Code,
    /// Rows sent.
    rows: u64,
    /// Each region's outcome (empty when the page failed before the regions
    /// were asked).
    regions: Vec<RegionStatus>,
    /// The gateway's audit record of the request; empty when audit is off
    /// or the record could not be written.
    audit_id: String,
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
    /// How long a page that filled waits for regions that have not
    /// answered the call yet (see [`QueryConfig::answer_grace`]).
    ///
    /// [`QueryConfig::answer_grace`]: crate::config::QueryConfig::answer_grace
    pub answer_grace: Duration,
    /// The gateway's audit log.
    pub audit: GatewayAudit,
}

impl Federator {
    /// Streams one page of `plan` into `out`, ending with the summary (or an
    /// error under ALL_REGIONS). Returns when done or when the application
    /// goes away (`out` closed), which cancels every region call, with the
    /// code the application saw.
    ///
    /// `record` is the gateway's audit record of the request: it is made
    /// durable while the regions are called and before the first row goes
    /// out (no record, no rows); once the page has ended, a `query.end`
    /// record names it with the rows sent and each region's outcome.
    pub async fn run(
        self: Arc<Self>,
        plan: QueryPlan,
        deadline: Instant,
        trace_id: String,
        record: Entry,
        out: mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Code {
        let _open = yrd_telemetry::OpenStreamGuard::open();
        let end = self.page(plan, deadline, trace_id, record.clone(), out).await;
        if !end.audit_id.is_empty() {
            let mut e = record;
            e.kind = "query.end".into();
            e.filter = None;
            e.fields.clear();
            e.request = Some(end.audit_id);
            e.rows = Some(end.rows);
            e.detail = Some(audit::regions_detail(&end.regions));
            if end.code != Code::Ok {
                e.decision = audit::decision_of(end.code);
                e.reason = Some(audit::code_name(end.code).to_owned());
            }
            if let Err(err) = self.audit.record_deferred(e).await {
                tracing::error!(error = %err, "the audit record of a query's end was not written");
            }
        }
        end.code
    }

    /// One page; returns how it ended.
    async fn page(
        &self,
        plan: QueryPlan,
        deadline: Instant,
        trace_id: String,
        record: Entry,
        out: mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> PageEnd {
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        for choice in &plan.regions {
            let (Some(cursor), Some(region)) = (&choice.cursor, self.registry.get(&choice.region)) else {
                skipped.push(RegionStatus::skipped(choice.region.as_str(), choice.reason.as_str()));
                continue;
            };
            let req = plan.query.node_request(&cursor.last_key, plan.page_size());
            let (tx, rx) = mpsc::channel(self.region_buffer);
            tokio::spawn(region_task(region.clone(), req, deadline, plan.acting.clone(), tx).in_current_span());
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
                audit_id: String::new(),
                unheard: false,
                failure: None,
            });
        }
        // The regions are working meanwhile; nothing is sent before the
        // record is durable.
        let audit_id = match self.audit.record(record).await {
            Ok(id) => id,
            Err(e) => {
                let status = Status::from(e);
                let code = status.code();
                let _ = out.send(Err(status)).await;
                return PageEnd {
                    code,
                    rows: 0,
                    regions: Vec::new(),
                    audit_id: String::new(),
                };
            }
        };
        if !audit_id.is_empty() {
            tracing::Span::current().record("yrd.audit_id", audit_id.as_str());
        }
        let end = |code: Code, rows: u64, runs: &[RegionRun], skipped: &[RegionStatus]| {
            let mut regions: Vec<RegionStatus> = runs.iter().map(RegionRun::status).collect();
            regions.extend(skipped.iter().cloned());
            regions.sort_by(|a, b| a.region.cmp(&b.region));
            PageEnd {
                code,
                rows,
                regions,
                audit_id: audit_id.clone(),
            }
        };
        let merge = plan.query.ordered || plan.consistency == Consistency::AllRegions;
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
        let emitted = match sent {
            Ok(n) => n,
            // The application went away, after this many rows.
            Err(delivered) => return end(Code::Cancelled, delivered, &runs, &skipped),
        };
        if let Some(refused) = refusal(
            runs.iter()
                .filter_map(|r| r.failure.as_ref().map(|s| (r.region.as_str(), s))),
        ) {
            // The caller's fault, not the region's: the whole answer says so.
            let status = Status::from(refused);
            let code = status.code();
            let _ = out.send(Err(status)).await;
            return end(code, emitted, &runs, &skipped);
        }
        let failed: Vec<(String, String)> = runs
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|s| (r.region.clone(), s.message().to_owned())))
            .collect();
        if plan.consistency == Consistency::AllRegions && !failed.is_empty() {
            let _ = out.send(Err(GatewayError::RegionsFailed(failed).into())).await;
            return end(Code::Unavailable, emitted, &runs, &skipped);
        }
        let page_full = emitted >= u64::from(plan.page_size());
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
        let mut answered = end(Code::Ok, emitted, &runs, &skipped);
        let summary = QuerySummary {
            regions: answered.regions.clone(),
            next_page_token,
            trace_id,
            rows: emitted,
            audit_id: answered.audit_id.clone(),
        };
        yrd_telemetry::rows_streamed(&plan.schema().id, emitted, 0);
        if out
            .send(Ok(QueryResponse {
                kind: Some(query_response::Kind::Summary(summary)),
            }))
            .await
            .is_err()
        {
            answered.code = Code::Cancelled;
        }
        answered
    }

    /// No order asked: forwards each region's batches as they arrive, cut
    /// at the page size. Returns the rows sent, or, when `out` closed, Err with the rows
    /// handed over before.
    async fn forward(
        &self,
        plan: &QueryPlan,
        runs: &mut [RegionRun],
        out: &mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Result<u64, u64> {
        let mut remaining = u64::from(plan.page_size());
        let receivers: Vec<_> = runs
            .iter_mut()
            .enumerate()
            .map(|(i, r)| {
                let (_, placeholder) = mpsc::channel(1);
                ReceiverStream::new(std::mem::replace(&mut r.rx, placeholder)).map(move |e| (i, e))
            })
            .collect();
        let mut events = futures::stream::select_all(receivers);
        // Whether each region has answered the call at all (accepted it,
        // refused it or sent rows).
        let mut heard = vec![false; runs.len()];
        while remaining > 0 {
            let Some((i, event)) = events.next().await else { break };
            heard[i] = true;
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
                    let delivered = u64::from(plan.page_size()) - remaining;
                    run.rows += n;
                    remaining -= n;
                    out.send(Ok(QueryResponse {
                        kind: Some(query_response::Kind::Batch(b)),
                    }))
                    .await
                    .map_err(|_| delivered)?;
                }
                RegionEvent::Opened(id) => run.audit_id = id,
                RegionEvent::Done(s) => run.done(s),
                RegionEvent::Failed(status) => run.fail(status),
            }
        }
        // The page is full. A region not heard from yet is waited for, for
        // at most `answer_grace` and only for its answer to the call, not
        // for rows: so that a refusal is reported as one (not as a region
        // that merely was not needed) and the region's audit record is
        // named. Rows that come meanwhile are not forwarded; the region
        // resumes after its last row sent.
        let grace = tokio::time::Instant::now() + self.answer_grace;
        while heard.iter().any(|h| !h) {
            let Ok(Some((i, event))) = tokio::time::timeout_at(grace, events.next()).await else {
                break;
            };
            if std::mem::replace(&mut heard[i], true) {
                continue;
            }
            let run = &mut runs[i];
            match event {
                RegionEvent::Opened(id) => run.audit_id = id,
                // A first batch: the region accepted; its rows wait.
                RegionEvent::Batch(_) => {}
                // No rows at all before the end: the region is done.
                RegionEvent::Done(s) => run.done(s),
                RegionEvent::Failed(status) => run.fail(status),
            }
        }
        // Regions still streaming when the page filled have more to give.
        for (r, heard) in runs.iter_mut().zip(heard) {
            if !heard {
                r.unheard = true;
            }
            if !r.node_done && r.failure.is_none() {
                r.node_has_more = true;
                r.node_done = true;
                r.finished.get_or_insert(r.started.elapsed());
            }
        }
        Ok(u64::from(plan.page_size()) - remaining)
    }

    /// An order asked: k-way merges the regions' rows on their sort keys.
    async fn merge(
        &self,
        plan: &QueryPlan,
        runs: &mut [RegionRun],
        out: &mpsc::Sender<Result<QueryResponse, Status>>,
    ) -> Result<u64, u64> {
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
        let batch_rows = self.batch_rows.min(plan.page_size().max(1) as usize);
        let new_batch = || RowBatch {
            rows: Vec::with_capacity(batch_rows),
            sort_keys: Vec::with_capacity(batch_rows),
            region: String::new(),
            row_regions: Vec::with_capacity(batch_rows),
        };
        let mut batch = new_batch();
        let mut emitted = 0u64;
        while emitted < u64::from(plan.page_size()) {
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
                let delivered = emitted - full.rows.len() as u64;
                out.send(Ok(QueryResponse {
                    kind: Some(query_response::Kind::Batch(full)),
                }))
                .await
                .map_err(|_| delivered)?;
            }
            while run.pending.is_empty() && !run.node_done && run.failure.is_none() {
                run.fill().await;
            }
            if let Some((_, k)) = run.pending.front() {
                heap.push(Reverse((k.clone(), i)));
            }
        }
        if !batch.rows.is_empty() {
            let delivered = emitted - batch.rows.len() as u64;
            out.send(Ok(QueryResponse {
                kind: Some(query_response::Kind::Batch(batch)),
            }))
            .await
            .map_err(|_| delivered)?;
        }
        if emitted >= u64::from(plan.page_size()) {
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

/// One region's part of an aggregate: its status, and its groups or its
/// error (`None` when it was not asked).
type AggregatePart = (RegionStatus, Option<Result<Vec<AggregateGroup>, Status>>);

impl Federator {
    /// Fans a checked aggregate out to its regions, concurrently within the
    /// deadline, and merges their partials. Skipped regions are named; a
    /// region that refused the request makes the whole answer that error.
    pub async fn aggregate(
        &self,
        plan: AggregatePlan,
        deadline: Instant,
        max_groups: usize,
    ) -> Result<AggregateResponse, GatewayError> {
        let node_req = plan.aggregate.node_request();
        let calls = plan.regions.iter().map(|(id, skip)| {
            let region = self.registry.get(id).cloned();
            let node_req = node_req.clone();
            let acting = plan.acting.clone();
            async move {
                let started = Instant::now();
                let result = match (skip, region) {
                    (Some(reason), _) => return (RegionStatus::skipped(id.as_str(), reason.as_str()), None),
                    (None, None) => Err(Status::internal("region vanished")),
                    (None, Some(region)) => client::call_for(&region, node_req, deadline, &acting).await,
                };
                let elapsed = started.elapsed();
                match result {
                    Ok(resp) => {
                        let node = resp.regions.first();
                        let freshness = node.and_then(|r| r.freshness);
                        let suppressed_groups = node.map_or(0, |r| r.suppressed_groups);
                        let audit_id = node.map(|r| r.audit_id.clone()).unwrap_or_default();
                        let rows = resp.groups.len() as u64;
                        (
                            RegionStatus {
                                suppressed_groups,
                                audit_id,
                                ..RegionStatus::answered(id.as_str(), rows, elapsed, freshness)
                            },
                            Some(Ok(resp.groups)),
                        )
                    }
                    Err(s) => (failed_status(id.as_str(), &s, 0, elapsed), Some(Err(s))),
                }
            }
        });
        let answers: Vec<AggregatePart> = futures::future::join_all(calls).await;
        if let Some(refused) = refusal(answers.iter().filter_map(|(st, part)| match part {
            Some(Err(s)) => Some((st.region.as_str(), s)),
            _ => None,
        })) {
            return Err(refused);
        }
        let mut parts = Vec::new();
        let mut regions = Vec::new();
        let mut failed = Vec::new();
        for (status, part) in answers {
            match part {
                Some(Ok(groups)) => parts.push(groups),
                Some(Err(s)) => failed.push((status.region.clone(), s.message().to_owned())),
                None => {}
            }
            regions.push(status);
        }
        if plan.consistency == Consistency::AllRegions && !failed.is_empty() {
            return Err(GatewayError::RegionsFailed(failed));
        }
        let groups = aggregate::merge_groups(parts, &plan.aggregate.metrics, max_groups)?;
        Ok(AggregateResponse {
            groups,
            regions,
            trace_id: yrd_telemetry::current_trace_id(),
            audit_id: String::new(),
        })
    }
}

/// Streams one region's answer into `tx`; ends at the summary, an error,
/// the deadline, or when the receiver is dropped (which cancels the call).
async fn region_task(
    region: Arc<Region>,
    req: NodeQueryRequest,
    deadline: Instant,
    acting: Arc<client::Acting>,
    tx: mpsc::Sender<RegionEvent>,
) {
    let mut stream = match client::call_for(&region, req, deadline, &acting).await {
        Ok(stream) => stream,
        Err(status) => {
            let _ = tx.send(RegionEvent::Failed(status)).await;
            return;
        }
    };
    if !stream.audit_id().is_empty()
        && tx
            .send(RegionEvent::Opened(stream.audit_id().to_owned()))
            .await
            .is_err()
    {
        return;
    }
    let event = loop {
        match stream.message().await {
            Err(status) => break RegionEvent::Failed(status),
            Ok(None) => break RegionEvent::Failed(Status::internal("the region's stream ended without a summary")),
            Ok(Some(msg)) => match msg.kind {
                Some(node_query_response::Kind::Batch(b)) => {
                    if tx.send(RegionEvent::Batch(b)).await.is_err() {
                        // The page is complete or the application left:
                        // dropping the stream cancels the call.
                        return;
                    }
                }
                Some(node_query_response::Kind::Summary(s)) => break RegionEvent::Done(s),
                None => break RegionEvent::Failed(Status::internal("the region sent an empty message")),
            },
        }
    };
    stream.finish(match &event {
        RegionEvent::Failed(status) => Err(status),
        _ => Ok(()),
    });
    let _ = tx.send(event).await;
}
