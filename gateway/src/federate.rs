//! Running a federated query: one task per region streams its node's
//! answer into a small bounded channel; the gateway forwards batches as
//! they come when no order was asked, or k-way merges rows on their sort
//! keys (bytes, never decoded) when one was. The global page size is
//! honoured exactly, and the page token records a cursor per region.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost_types::Any;
use tokio::sync::mpsc;
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
use crate::kept::{self, Kept};
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
    /// The node's summary: the call is done.
    Done(NodeQuerySummary),
    /// The call failed.
    Failed(Status),
}

/// How to call one region for a query: the region, the request without
/// its resume key, whom for, and how many batches to read ahead.
#[derive(Debug, Clone)]
struct CallSpec {
    region: Arc<Region>,
    request: NodeQueryRequest,
    acting: Arc<client::Acting>,
    buffer: usize,
}

/// One region of a query: its current call (if any), the rows received
/// and not yet forwarded, and this page's outcome. A run outlives its page
/// when its streams are kept for the next one (see [`crate::kept`]).
#[derive(Debug)]
struct RegionRun {
    region: String,
    spec: CallSpec,
    /// The current call's events; none once the call ended.
    rx: Option<mpsc::Receiver<RegionEvent>>,
    /// When the current call gives up.
    call_deadline: Instant,
    /// When this page gives up.
    page_deadline: Instant,
    /// Rows received and not forwarded yet, in order.
    pending: VecDeque<(Any, Vec<u8>)>,
    /// Sort key of the last row forwarded (the cursor).
    last_key: Vec<u8>,
    /// Sort key of the last row received (where a new call resumes).
    received_key: Vec<u8>,
    /// Rows forwarded in this page.
    rows: u64,
    started: Instant,
    finished: Option<Duration>,
    /// The last call that ended said more rows follow (true until a call
    /// has ended: nothing is known yet).
    more: bool,
    freshness: Option<prost_types::Timestamp>,
    /// The region's audit record of its current call.
    audit_id: String,
    /// The region answered the call at all (accepted, refused, or rows);
    /// a page that ends without is reported as not heard from.
    heard: bool,
    failure: Option<Status>,
}

impl RegionRun {
    /// A run of `spec` from `cursor`, its first call started now.
    fn start(spec: CallSpec, cursor: &[u8], deadline: Instant) -> Self {
        let mut run = Self {
            region: spec.region.id.clone(),
            spec,
            rx: None,
            call_deadline: deadline,
            page_deadline: deadline,
            pending: VecDeque::new(),
            last_key: cursor.to_vec(),
            received_key: cursor.to_vec(),
            rows: 0,
            started: Instant::now(),
            finished: None,
            more: true,
            freshness: None,
            audit_id: String::new(),
            heard: false,
            failure: None,
        };
        run.call();
        run
    }

    /// Starts a call for the rows after the last one received.
    fn call(&mut self) {
        let req = NodeQueryRequest {
            resume_key: self.received_key.clone(),
            ..self.spec.request.clone()
        };
        let (tx, rx) = mpsc::channel(self.spec.buffer);
        tokio::spawn(
            region_task(
                self.spec.region.clone(),
                req,
                self.page_deadline,
                self.spec.acting.clone(),
                tx,
            )
            .in_current_span(),
        );
        self.rx = Some(rx);
        self.call_deadline = self.page_deadline;
    }

    /// Takes the run into a new page with `deadline`.
    fn begin_page(&mut self, deadline: Instant) {
        self.page_deadline = deadline;
        self.rows = 0;
        self.started = Instant::now();
        self.finished = None;
        self.heard = true;
    }

    /// Whether the region may still give rows: rows pending, a call open,
    /// or a call ended saying more follow.
    fn live(&self) -> bool {
        self.failure.is_none() && (!self.pending.is_empty() || self.rx.is_some() || self.more)
    }

    /// Whether every row of the region has been forwarded.
    fn exhausted(&self) -> bool {
        self.failure.is_none() && self.rx.is_none() && !self.more && self.pending.is_empty()
    }

    /// Handles one event of the current call. A call that ended with more
    /// rows to come, or a kept call that reached the deadline of the page
    /// that started it, is followed by a new one while `wanted`.
    fn handle(&mut self, event: Option<RegionEvent>, wanted: bool) {
        self.heard = true;
        match event {
            Some(RegionEvent::Opened(id)) => self.audit_id = id,
            Some(RegionEvent::Batch(b)) => {
                if let Some(k) = b.sort_keys.last() {
                    self.received_key.clone_from(k);
                }
                self.pending.extend(b.rows.into_iter().zip(b.sort_keys));
            }
            Some(RegionEvent::Done(s)) => {
                self.rx = None;
                self.more = s.more;
                if let Some(r) = s.region {
                    self.freshness = r.freshness;
                    if !r.audit_id.is_empty() {
                        self.audit_id = r.audit_id;
                    }
                }
                if self.more && wanted {
                    self.call();
                } else if !self.more {
                    self.finished = Some(self.started.elapsed());
                }
            }
            Some(RegionEvent::Failed(status)) if self.outlived(&status) => {
                self.rx = None;
                if wanted {
                    self.call();
                }
            }
            Some(RegionEvent::Failed(status)) => self.fail(status),
            None => self.fail(Status::internal("region task ended without an answer")),
        }
    }

    /// Whether `status` is a kept call reaching the deadline of the page
    /// that started it, before this page's: not a failure of the region.
    fn outlived(&self, status: &Status) -> bool {
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
            && self.call_deadline < self.page_deadline
            && Instant::now() + DEADLINE_SLACK >= self.call_deadline
    }

    /// Waits until the region has a row pending, has ended, or failed.
    async fn fill(&mut self) {
        while self.pending.is_empty() && self.failure.is_none() {
            if self.rx.is_none() {
                if !self.more {
                    return;
                }
                self.call();
            }
            let event = match self.rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => return,
            };
            self.handle(event, true);
        }
    }

    /// Takes the events that have already arrived, without waiting: a
    /// summary right behind the last rows tells that the region is done.
    fn drain_ready(&mut self) {
        while let Some(rx) = self.rx.as_mut() {
            match rx.try_recv() {
                Ok(event) => self.handle(Some(event), false),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.handle(None, false);
                    return;
                }
            }
        }
    }

    /// Takes up to `n` pending rows as a batch, advancing the cursor.
    fn take(&mut self, n: usize) -> Option<RowBatch> {
        let n = n.min(self.pending.len());
        if n == 0 {
            return None;
        }
        let mut rows = Vec::with_capacity(n);
        let mut sort_keys = Vec::with_capacity(n);
        for (row, key) in self.pending.drain(..n) {
            rows.push(row);
            sort_keys.push(key);
        }
        if let Some(k) = sort_keys.last() {
            self.last_key.clone_from(k);
        }
        self.rows += n as u64;
        Some(RowBatch {
            rows,
            sort_keys,
            region: self.region.clone(),
            row_regions: Vec::new(),
        })
    }

    fn fail(&mut self, status: Status) {
        self.rx = None;
        self.finished = Some(self.started.elapsed());
        self.failure = Some(status);
    }

    fn status(&self) -> RegionStatus {
        let elapsed = self.finished.unwrap_or_else(|| self.started.elapsed());
        match &self.failure {
            None if !self.heard => RegionStatus {
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

/// How close to its deadline a kept call's timeout counts as the deadline
/// of the page that started it (see [`RegionRun::outlived`]).
const DEADLINE_SLACK: Duration = Duration::from_millis(200);
/// A kept call is taken into a page only with at least this long left.
const KEPT_MIN_LEFT: Duration = Duration::from_secs(1);

/// The next event of any run with an open call, taking the runs in turn
/// from `from` so that none is starved; `None` when no call is open.
async fn next_event(runs: &mut [RegionRun], from: &mut usize) -> Option<(usize, Option<RegionEvent>)> {
    if runs.iter().all(|r| r.rx.is_none()) {
        return None;
    }
    let n = runs.len();
    let got = std::future::poll_fn(|cx| {
        for k in 0..n {
            let i = (*from + k) % n;
            if let Some(rx) = runs[i].rx.as_mut()
                && let std::task::Poll::Ready(event) = rx.poll_recv(cx)
            {
                return std::task::Poll::Ready((i, event));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    *from = (got.0 + 1) % n.max(1);
    Some(got)
}

/// The status of a region whose call failed with `s`: its state, its safe
/// message and, for a policy refusal, the reason code the region gave
/// (`NO_GRANT`, ...) from the status's `ErrorInfo`.
pub fn failed_status(region: &str, s: &Status, rows: u64, elapsed: Duration) -> RegionStatus {
    RegionStatus {
        reason: reason_of(s),
        ..RegionStatus::failed(region, region_state(s), s.message(), rows, elapsed)
    }
}

/// The `ErrorInfo` reason of a status, empty when it has none.
pub fn reason_of(s: &Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

/// The state a failed call leaves its region in. "Rejected the request"
/// is only a refusal a region's checks gave (it carries the mesh's
/// `ErrorInfo`); the same codes from the transport are not. A failure of
/// the connection or the stream under the call — a protocol or
/// flow-control error, a GOAWAY (`ENHANCE_YOUR_CALM` is
/// `RESOURCE_EXHAUSTED` in gRPC), a stream the node reset, a connection
/// reset or closed with calls on it (`CANCELLED` in tonic) — leaves the
/// region unavailable. `CANCELLED` without one is tonic's own timer: the
/// deadline.
pub fn region_state(s: &Status) -> RegionState {
    match s.code() {
        Code::Ok => RegionState::Ok,
        Code::DeadlineExceeded => RegionState::DeadlineExceeded,
        _ if from_transport(s) => RegionState::Unavailable,
        Code::Cancelled => RegionState::DeadlineExceeded,
        Code::Unavailable => RegionState::Unavailable,
        Code::PermissionDenied | Code::Unauthenticated => RegionState::PermissionDenied,
        Code::InvalidArgument | Code::NotFound | Code::ResourceExhausted | Code::FailedPrecondition if from_mesh(s) => {
            RegionState::InvalidArgument
        }
        _ => RegionState::Failed,
    }
}

/// Whether the transport failed the call: an HTTP/2 (`h2`), `hyper` or
/// I/O error in the status's source chain (tonic keeps the error it made
/// the status from there).
fn from_transport(s: &Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(err) = cause {
        if err.is::<h2::Error>() || err.is::<hyper::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Whether `s` carries the mesh's `ErrorInfo`: it is an answer of a
/// mesh process's checks, not of the transport.
fn from_mesh(s: &Status) -> bool {
    use tonic_types::StatusExt;
    s.get_details_error_info()
        .is_some_and(|i| i.domain == yrd_query::error::ERROR_DOMAIN)
}

/// Whether a region's failure is the caller's fault: the request passed the
/// gateway's checks, but the region's own limits refused it (a node may be
/// configured stricter than the gateway, and `max_groups` can only be known
/// once a region has grouped its rows). Such an answer is an error for the
/// whole request, in either consistency mode, never a partial `OK`. Only
/// a refusal of the request check says so (it carries the mesh's
/// `ErrorInfo`): a node that cannot decode what the gateway built (a
/// version skew) or a transport limit is that region's failure.
fn is_refusal(status: &Status) -> bool {
    matches!(status.code(), Code::InvalidArgument | Code::ResourceExhausted) && from_mesh(status)
}

/// The first caller-fault refusal among the regions' failures.
pub fn refusal<'a>(mut failures: impl Iterator<Item = (&'a str, &'a Status)>) -> Option<GatewayError> {
    failures
        .find(|(_, s)| is_refusal(s))
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
    /// Region calls kept open between pages.
    pub kept: Kept<KeptRuns>,
    /// The smallest first page that keeps its calls open (see
    /// [`QueryConfig::keep_open_min_page`]).
    ///
    /// [`QueryConfig::keep_open_min_page`]: crate::config::QueryConfig::keep_open_min_page
    pub keep_open_min_page: u32,
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
        out: Out,
    ) -> Code {
        let _open = yrd_telemetry::OpenStreamGuard::open();
        let end = self.page(plan, deadline, trace_id, record.clone(), &out).await;
        if out.stalled() {
            tracing::info!(
                rows = end.rows,
                "the application stopped reading; its call was ended and its region calls cancelled"
            );
        }
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
    async fn page(&self, plan: QueryPlan, deadline: Instant, trace_id: String, record: Entry, out: &Out) -> PageEnd {
        // The calls the previous page kept open, when it was this gateway's.
        let mut kept: Vec<RegionRun> = plan
            .resumed_from
            .and_then(|k| self.kept.take(&k))
            .map(|k| k.0)
            .unwrap_or_default();
        let mut runs = Vec::new();
        let mut skipped = Vec::new();
        for choice in &plan.regions {
            let (Some(cursor), Some(region)) = (&choice.cursor, self.registry.get(&choice.region)) else {
                skipped.push(RegionStatus::skipped(choice.region.as_str(), choice.reason.as_str()));
                continue;
            };
            let resumable = kept.iter().position(|r| {
                r.region == choice.region
                    && r.last_key == cursor.last_key
                    && r.failure.is_none()
                    && (r.rx.is_none() || r.call_deadline > Instant::now() + KEPT_MIN_LEFT)
            });
            if let Some(i) = resumable {
                let mut run = kept.swap_remove(i);
                run.begin_page(deadline);
                runs.push(run);
                continue;
            }
            let spec = CallSpec {
                region: region.clone(),
                request: plan.query.node_request(&[], plan.page_size()),
                acting: plan.acting.clone(),
                buffer: self.region_buffer,
            };
            runs.push(RegionRun::start(spec, &cursor.last_key, deadline));
        }
        // Kept calls this page does not continue are cancelled.
        drop(kept);
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
            self.merge(&plan, &mut runs, out).instrument(merge_span.clone()).await
        } else {
            self.forward(&plan, &mut runs, out).instrument(merge_span.clone()).await
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
        for r in &mut runs {
            if r.live() {
                r.finished.get_or_insert(r.started.elapsed());
            }
        }
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
        // The calls still streaming wait for the next page, under its token.
        let paging = plan.resumed_from.is_some() || plan.page_size() >= self.keep_open_min_page;
        if !summary.next_page_token.is_empty() && paging && self.kept.enabled() {
            let open: Vec<RegionRun> = runs
                .into_iter()
                .filter(|r| r.failure.is_none() && (r.rx.is_some() || !r.pending.is_empty()))
                .collect();
            if !open.is_empty() {
                self.kept.keep(kept::key_of(&summary.next_page_token), KeptRuns(open));
            }
        }
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

    /// No order asked: forwards each region's rows as they arrive, cut at
    /// the page size; rows past the cut stay pending for the next page.
    /// Returns the rows sent, or, when `out` closed, Err with the rows
    /// handed over before.
    async fn forward(&self, plan: &QueryPlan, runs: &mut [RegionRun], out: &Out) -> Result<u64, u64> {
        let page = u64::from(plan.page_size());
        let mut sent = 0u64;
        // Rows a kept call had already delivered go first.
        for run in runs.iter_mut() {
            sent += forward_pending(run, page - sent, sent, out).await?;
        }
        // Regions whose kept call ended with more to come are asked again.
        for run in runs.iter_mut() {
            if sent < page && run.rx.is_none() && run.more && run.failure.is_none() && run.pending.is_empty() {
                run.call();
            }
        }
        let mut from = 0;
        while sent < page {
            let event = tokio::select! {
                biased;
                () = out.gone() => return Err(sent),
                event = next_event(runs, &mut from) => event,
            };
            let Some((i, event)) = event else {
                break;
            };
            let run = &mut runs[i];
            run.handle(event, true);
            sent += forward_pending(run, page - sent, sent, out).await?;
        }
        // The page is full. A region not heard from yet is waited for, for
        // at most `answer_grace` and only for its answer to the call, not
        // for rows: so that a refusal is reported as one (not as a region
        // that merely was not needed) and the region's audit record is
        // named. Rows that come meanwhile wait for the next page.
        let grace = tokio::time::Instant::now() + self.answer_grace;
        while let Some(i) = runs.iter().position(|r| !r.heard && r.rx.is_some()) {
            let Some(rx) = runs[i].rx.as_mut() else { break };
            let Ok(event) = tokio::time::timeout_at(grace, rx.recv()).await else {
                break;
            };
            runs[i].handle(event, false);
        }
        // A summary sent right behind the last rows is usually on its way:
        // let the region tasks run once, then take what has arrived.
        tokio::task::yield_now().await;
        for run in runs.iter_mut() {
            run.drain_ready();
        }
        Ok(sent)
    }

    /// An order asked: k-way merges the regions' rows on their sort keys.
    async fn merge(&self, plan: &QueryPlan, runs: &mut [RegionRun], out: &Out) -> Result<u64, u64> {
        tokio::select! {
            biased;
            () = out.gone() => return Err(0),
            _ = futures::future::join_all(runs.iter_mut().map(RegionRun::fill)) => {}
        }
        if plan.consistency == Consistency::AllRegions && runs.iter().any(|r| r.failure.is_some()) {
            return Ok(0);
        }
        let mut heap: BinaryHeap<Reverse<(Vec<u8>, usize)>> = BinaryHeap::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
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
            if emitted < u64::from(plan.page_size()) {
                tokio::select! {
                    biased;
                    () = out.gone() => return Err(emitted - batch.rows.len() as u64),
                    () = run.fill() => {}
                }
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
        tokio::task::yield_now().await;
        for run in runs.iter_mut() {
            run.drain_ready();
        }
        Ok(emitted)
    }
}

/// Sends up to `room` of `run`'s pending rows to the application as one
/// batch; the rows sent, or Err with the `sent` before when it went away.
async fn forward_pending(run: &mut RegionRun, room: u64, sent: u64, out: &Out) -> Result<u64, u64> {
    let Some(batch) = run.take(usize::try_from(room).unwrap_or(usize::MAX)) else {
        return Ok(0);
    };
    let n = batch.rows.len() as u64;
    out.send(Ok(QueryResponse {
        kind: Some(query_response::Kind::Batch(batch)),
    }))
    .await
    .map_err(|_| sent)?;
    Ok(n)
}

/// The channel to the application, with how long a message may wait
/// for it to be read: a send that waits longer than the client stall
/// timeout, or past the caller's deadline, gives up as if the application
/// had gone, so the call ends and its region calls are cancelled.
#[derive(Debug)]
pub struct Out {
    tx: mpsc::Sender<Result<QueryResponse, Status>>,
    stall: Duration,
    deadline: Instant,
    ending: Arc<Ending>,
}

/// How a call's stream to the application ended, shared with the stream
/// the application reads (see [`Out::ending`]).
#[derive(Debug, Default)]
pub struct Ending {
    /// A send gave up because the application stopped reading.
    stalled: std::sync::atomic::AtomicBool,
    /// The application was handed the call's answer: its summary or an
    /// error status.
    answered: std::sync::atomic::AtomicBool,
}

impl Ending {
    /// The status that ends a stream that closed without its answer (the
    /// page's task gave up on the application), or `None` when it had it.
    pub fn unanswered(&self) -> Option<Status> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.answered.load(Relaxed) {
            None
        } else if self.stalled.load(Relaxed) {
            Some(Status::cancelled(
                "the call was ended: the application left a message unread longer than \
                 query.client_stall_timeout, and its region calls were cancelled",
            ))
        } else {
            Some(Status::deadline_exceeded(
                "the call was ended at its deadline before its summary could be sent",
            ))
        }
    }
}

/// The application did not take a message: it went away or stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl Out {
    /// Messages to `tx`, each waiting at most `stall` (and never past
    /// `deadline` and the deadline margin) to be taken.
    pub fn new(tx: mpsc::Sender<Result<QueryResponse, Status>>, stall: Duration, deadline: Instant) -> Self {
        Self {
            tx,
            stall,
            deadline,
            ending: Arc::default(),
        }
    }

    /// Sends `msg`, or gives up (see [`Out`]).
    pub async fn send(&self, msg: Result<QueryResponse, Status>) -> Result<(), Gone> {
        // The regions' deadline is a little before the caller's; the
        // summary after it still gets the stall timeout's second chance.
        let until_deadline = self.deadline.saturating_duration_since(Instant::now()) + STALL_PAST_DEADLINE;
        let answer = match &msg {
            Ok(QueryResponse { kind }) => matches!(kind, Some(query_response::Kind::Summary(_))),
            Err(_) => true,
        };
        match self.tx.send_timeout(msg, self.stall.min(until_deadline)).await {
            Ok(()) => {
                if answer {
                    self.ending.answered.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                // Past the deadline the call ends anyway: not a stall.
                if self.stall < until_deadline {
                    self.ending.stalled.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(Gone)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Gone),
        }
    }

    /// Resolves when the application has gone (it reset the stream or its
    /// connection closed), so that waits for regions end at once.
    pub async fn gone(&self) {
        self.tx.closed().await;
    }

    /// Whether a send gave up because the application stopped reading.
    pub fn stalled(&self) -> bool {
        self.ending.stalled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How the stream ended, for the stream the application reads: a
    /// stream that closes without its answer ends with a status saying
    /// why, never with a bare `OK`.
    pub fn ending(&self) -> Arc<Ending> {
        self.ending.clone()
    }
}

/// How long past the regions' deadline the last messages may wait.
const STALL_PAST_DEADLINE: Duration = Duration::from_secs(1);

/// A page's region runs kept for the next page (see [`crate::kept`]).
#[derive(Debug)]
pub struct KeptRuns(Vec<RegionRun>);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regions_checks_reject_a_request() {
        // A region's request check: the caller's fault, the whole answer.
        let refused = Status::from(yrd_query::QueryError::UnknownField {
            param: "fields",
            dataset: "enterprise".into(),
            field: "nope".into(),
        });
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(is_refusal(&refused));
        assert_eq!(region_state(&refused), RegionState::InvalidArgument);
        // The same codes from the transport or the codec: that region failed.
        for s in [
            Status::resource_exhausted("h2 protocol error: connection error: ENHANCE_YOUR_CALM"),
            Status::invalid_argument("the request could not be decoded: invalid wire type value: 7"),
        ] {
            assert!(!is_refusal(&s), "{s:?}");
            assert_eq!(region_state(&s), RegionState::Failed, "{s:?}");
        }
    }

    #[test]
    fn a_failed_http2_connection_or_stream_leaves_its_region_unavailable() {
        // As tonic makes them: the h2 error kept as the status's source.
        for (reason, code) in [
            (h2::Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (h2::Reason::PROTOCOL_ERROR, Code::Internal),
            (h2::Reason::FLOW_CONTROL_ERROR, Code::Internal),
        ] {
            let s = Status::from_error(Box::new(h2::Error::from(reason)));
            assert_eq!(s.code(), code, "{s:?}");
            assert!(!is_refusal(&s), "{s:?}");
            assert_eq!(region_state(&s), RegionState::Unavailable, "{s:?}");
        }
        // A stream the node reset, a connection reset under the call.
        let cancelled = Status::from_error(Box::new(h2::Error::from(h2::Reason::CANCEL)));
        assert_eq!(cancelled.code(), Code::Cancelled);
        assert_eq!(region_state(&cancelled), RegionState::Unavailable);
        let reset = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert_eq!(region_state(&reset), RegionState::Unavailable, "{reset:?}");
        // CANCELLED with no transport error under it: tonic's timer.
        assert_eq!(
            region_state(&Status::cancelled("Timeout expired")),
            RegionState::DeadlineExceeded
        );
        assert_eq!(
            region_state(&Status::deadline_exceeded(
                "the region did not answer before the deadline"
            )),
            RegionState::DeadlineExceeded
        );
    }
}
