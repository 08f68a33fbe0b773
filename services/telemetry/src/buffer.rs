//! The embedded default: the last N finished spans of this process, kept in
//! memory so that `yrdctl traces` can draw a query's tree without a
//! collector.
//!
//! The ring stores the SDK's `SpanData` as it comes (minus events, which are
//! log lines and would multiply the memory, and with every text cut to
//! [`MAX_ATTRIBUTE_BYTES`]) and converts to [`SpanRecord`] only when asked:
//! finishing a span costs a lock and a push, and the conversion cost is
//! paid by the operator's query, not by the request.
//!
//! The ring is bounded twice: by a count of spans and by an approximate
//! byte size (names, attribute keys and values, status text, links), the
//! oldest spans evicted first, so that a few spans carrying large values
//! cannot grow the process however few they are.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanId, SpanKind, Status, TraceId};
use opentelemetry::{Array, Context, Key, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanEvents, SpanProcessor};
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_BUFFER_BYTES, truncate_for_record};

/// The longest text a kept or exported span carries, in bytes: its name,
/// each attribute value (each element of an array), its status
/// description, and its events' names and attribute values. Longer ones
/// are cut to this with `…(N bytes)` appended.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// One finished span, as the admin endpoint serves it and `yrdctl` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    #[serde(default)]
    pub parent_span_id: String,
    /// The span name (`otel.name` when the span set one).
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// The error description, empty unless `status` is `error`.
    #[serde(default)]
    pub status_message: String,
    /// The span's attributes, values as text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the process that recorded the span.
    #[serde(default)]
    pub service: String,
    /// `yrd.region` of the process that recorded the span, empty if none.
    #[serde(default)]
    pub region: String,
}

impl SpanRecord {
    /// How long the span took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }
}

/// One trace as this process saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Name of the earliest span whose parent this process did not record
    /// (the real root, or the local entry of a trace that began elsewhere).
    pub root_name: String,
    /// Start of the earliest span, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// From the earliest start to the latest end, in nanoseconds.
    pub duration_nanos: u64,
    /// Spans of the trace in the buffer.
    pub span_count: usize,
    /// Whether any of them has an error status.
    pub error: bool,
}

/// A bounded ring of recently finished spans; a [`SpanProcessor`].
///
/// Cloning is cheap and every clone sees the same spans.
#[derive(Debug, Clone)]
pub struct SpanBuffer {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    capacity: usize,
    /// The byte budget of the spans kept.
    max_bytes: usize,
    /// The approximate size of the spans kept, the sum of their sizes.
    bytes: usize,
    /// Each span with its approximate size.
    spans: VecDeque<(SpanData, usize)>,
    service: String,
    region: String,
}

/// What a summary needs of a span, copied out under the lock so that the
/// grouping happens without it.
struct Brief {
    trace: TraceId,
    span: SpanId,
    parent: SpanId,
    name: Cow<'static, str>,
    start: SystemTime,
    end: SystemTime,
    error: bool,
}

impl SpanBuffer {
    /// An empty buffer keeping at most `capacity` spans (0 keeps none) of
    /// at most [`DEFAULT_BUFFER_BYTES`] together.
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, DEFAULT_BUFFER_BYTES)
    }

    /// An empty buffer keeping at most `capacity` spans of at most
    /// `max_bytes` together (approximately; see [`SpanBuffer::bytes`]).
    pub fn with_budget(capacity: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Ring {
                capacity,
                max_bytes,
                bytes: 0,
                // Grown on demand: a process that records few spans should
                // not pay for the whole capacity up front.
                spans: VecDeque::new(),
                service: String::new(),
                region: String::new(),
            })),
        }
    }

    /// The most spans the buffer keeps.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// The most bytes the buffer keeps.
    pub fn max_bytes(&self) -> usize {
        self.lock().max_bytes
    }

    /// The approximate size of the spans held, in bytes: each span's
    /// fixed part and the text it carries (names, attribute keys and
    /// values, status description, links).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many spans the buffer holds.
    pub fn len(&self) -> usize {
        self.lock().spans.len()
    }

    /// Whether the buffer holds no span.
    pub fn is_empty(&self) -> bool {
        self.lock().spans.is_empty()
    }

    /// Adds a finished span, its texts cut (see [`cap_span`]), evicting the
    /// oldest spans while the count or the byte budget would be exceeded.
    /// A span larger than the whole budget is not kept.
    pub fn push(&self, mut span: SpanData) {
        // Events are the log lines written inside the span: the buffer does
        // not serve them, and they are most of a span's memory.
        span.events = SpanEvents::default();
        // Outside the lock: the cut and the size are the span's own.
        cap_span(&mut span);
        let size = span_bytes(&span);
        let mut ring = self.lock();
        if ring.capacity == 0 || size > ring.max_bytes {
            return;
        }
        while ring.spans.len() >= ring.capacity || ring.bytes + size > ring.max_bytes {
            match ring.spans.pop_front() {
                Some((_, evicted)) => ring.bytes -= evicted,
                None => break,
            }
        }
        ring.bytes += size;
        ring.spans.push_back((span, size));
    }

    /// The spans of one trace, earliest first; empty when `trace_id` is not
    /// 32 hex digits or the trace is not (or no longer) in the buffer.
    pub fn spans_of_trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let Some(wanted) = parse_trace_id(trace_id) else {
            return Vec::new();
        };
        let ring = self.lock();
        let mut records: Vec<SpanRecord> = ring
            .spans
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.span_context.trace_id() == wanted)
            .map(|s| record(s, &ring.service, &ring.region))
            .collect();
        drop(ring);
        records.sort_by(|a, b| (a.start_unix_nanos, &a.span_id).cmp(&(b.start_unix_nanos, &b.span_id)));
        records
    }

    /// The `last` most recently started traces, newest first.
    pub fn recent_traces(&self, last: usize) -> Vec<TraceSummary> {
        let mut all = self.summaries();
        all.sort_by(|a, b| {
            b.start_unix_nanos
                .cmp(&a.start_unix_nanos)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        all.truncate(last);
        all
    }

    /// The `n` traces that took longest, slowest first.
    pub fn slowest_traces(&self, n: usize) -> Vec<TraceSummary> {
        let mut all = self.summaries();
        all.sort_by(|a, b| {
            b.duration_nanos
                .cmp(&a.duration_nanos)
                .then_with(|| b.start_unix_nanos.cmp(&a.start_unix_nanos))
        });
        all.truncate(n);
        all
    }

    fn summaries(&self) -> Vec<TraceSummary> {
        let briefs: Vec<Brief> = self
            .lock()
            .spans
            .iter()
            .map(|(s, _)| Brief {
                trace: s.span_context.trace_id(),
                span: s.span_context.span_id(),
                parent: s.parent_span_id,
                name: s.name.clone(),
                start: s.start_time,
                end: s.end_time,
                error: matches!(s.status, Status::Error { .. }),
            })
            .collect();
        let mut traces: HashMap<TraceId, Vec<Brief>> = HashMap::new();
        for b in briefs {
            traces.entry(b.trace).or_default().push(b);
        }
        traces.into_iter().map(|(id, spans)| summarize(id, &spans)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // The ring is consistent after every statement, so a panic elsewhere
        // while holding the lock leaves nothing half-done to recover from.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SpanProcessor for SpanBuffer {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // Unsampled spans are not part of any trace an operator can see
        // elsewhere; keeping them would make the buffer disagree with the
        // collector.
        if span.span_context.is_sampled() {
            self.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        let text = |key: &'static str| {
            resource
                .get(&Key::from_static_str(key))
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let (service, region) = (text("service.name"), text("yrd.region"));
        let mut ring = self.lock();
        ring.service = service;
        ring.region = region;
    }
}

/// Cuts every text `span` carries to [`MAX_ATTRIBUTE_BYTES`] (see
/// [`truncate_for_record`]): its name, attribute values, status
/// description, and its events' and links' names and attribute values.
/// Whatever a handler put in a span, what is kept of it is bounded.
pub fn cap_span(span: &mut SpanData) {
    if let Some(cut) = cut(&span.name) {
        span.name = Cow::Owned(cut);
    }
    cap_attributes(&mut span.attributes);
    if let Status::Error { description } = &span.status
        && let Some(cut) = cut(description)
    {
        span.status = Status::error(cut);
    }
    for event in &mut span.events.events {
        if let Some(cut) = cut(&event.name) {
            event.name = Cow::Owned(cut);
        }
        cap_attributes(&mut event.attributes);
    }
    for link in &mut span.links.links {
        cap_attributes(&mut link.attributes);
    }
}

/// `text` cut to [`MAX_ATTRIBUTE_BYTES`], or `None` when it fits.
fn cut(text: &str) -> Option<String> {
    match truncate_for_record(text, MAX_ATTRIBUTE_BYTES) {
        Cow::Borrowed(_) => None,
        Cow::Owned(cut) => Some(cut),
    }
}

fn cap_attributes(attributes: &mut [KeyValue]) {
    for kv in attributes {
        match &mut kv.value {
            Value::String(s) => {
                if let Some(cut) = cut(s.as_str()) {
                    *s = StringValue::from(cut);
                }
            }
            Value::Array(Array::String(items)) => {
                for s in items {
                    if let Some(cut) = cut(s.as_str()) {
                        *s = StringValue::from(cut);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The approximate memory of a span: its fixed part, and the text and
/// arrays it holds (what can grow with a request's input).
fn span_bytes(span: &SpanData) -> usize {
    let status = match &span.status {
        Status::Error { description } => description.len(),
        _ => 0,
    };
    let events: usize = span
        .events
        .events
        .iter()
        .map(|e| size_of::<Event>() + e.name.len() + attributes_bytes(&e.attributes))
        .sum();
    let links: usize = span
        .links
        .links
        .iter()
        .map(|l| size_of::<Link>() + attributes_bytes(&l.attributes))
        .sum();
    size_of::<(SpanData, usize)>() + span.name.len() + attributes_bytes(&span.attributes) + status + events + links
}

fn attributes_bytes(attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| size_of::<KeyValue>() + kv.key.as_str().len() + value_bytes(&kv.value))
        .sum()
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(items)) => items.iter().map(|s| size_of::<StringValue>() + s.as_str().len()).sum(),
        Value::Array(Array::Bool(items)) => items.len(),
        Value::Array(Array::I64(items)) => items.len() * size_of::<i64>(),
        Value::Array(Array::F64(items)) => items.len() * size_of::<f64>(),
        _ => 0,
    }
}

fn summarize(id: TraceId, spans: &[Brief]) -> TraceSummary {
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span).collect();
    let root = spans
        .iter()
        .filter(|s| s.parent == SpanId::INVALID || !ids.contains(&s.parent))
        .min_by_key(|s| s.start);
    let start = spans.iter().map(|s| s.start).min().unwrap_or(UNIX_EPOCH);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(start);
    TraceSummary {
        trace_id: id.to_string(),
        root_name: root.map(|r| r.name.to_string()).unwrap_or_default(),
        start_unix_nanos: unix_nanos(start),
        duration_nanos: duration_nanos(end.duration_since(start).unwrap_or_default()),
        span_count: spans.len(),
        error: spans.iter().any(|s| s.error),
    }
}

fn record(span: &SpanData, service: &str, region: &str) -> SpanRecord {
    let (status, status_message) = match &span.status {
        Status::Unset => ("unset", String::new()),
        Status::Ok => ("ok", String::new()),
        Status::Error { description } => ("error", description.to_string()),
    };
    let parent_span_id = if span.parent_span_id == SpanId::INVALID {
        String::new()
    } else {
        span.parent_span_id.to_string()
    };
    SpanRecord {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id,
        name: span.name.to_string(),
        kind: kind_name(&span.span_kind).to_owned(),
        start_unix_nanos: unix_nanos(span.start_time),
        end_unix_nanos: unix_nanos(span.end_time),
        status: status.to_owned(),
        status_message,
        attributes: span
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str().to_owned(), kv.value.to_string()))
            .collect(),
        service: service.to_owned(),
        region: region.to_owned(),
    }
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

/// A trace id as 32 hex digits (either case); `None` for anything else,
/// including the all-zero invalid id.
pub(crate) fn parse_trace_id(text: &str) -> Option<TraceId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(text).ok().filter(|id| *id != TraceId::INVALID)
}

fn unix_nanos(t: SystemTime) -> u64 {
    duration_nanos(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn duration_nanos(d: Duration) -> u64 {
    // u64 nanoseconds reach the year 2554.
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::SpanLinks;

    use super::*;

    fn tid(n: u128) -> TraceId {
        TraceId::from_bytes(n.to_be_bytes())
    }

    fn sid(n: u64) -> SpanId {
        SpanId::from_bytes(n.to_be_bytes())
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
    }

    /// A finished span of trace `t`, id `s`, parent `p` (0 = root), from
    /// `start` ms for `dur` ms.
    fn span(t: u128, s: u64, p: u64, name: &'static str, start: u64, dur: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(tid(t), sid(s), TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: if p == 0 { SpanId::INVALID } else { sid(p) },
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: at(start),
            end_time: at(start + dur),
            attributes: vec![KeyValue::new("yrd.region", "310000"), KeyValue::new("yrd.rows", 42_i64)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn keeps_only_the_last_capacity_spans() {
        let buffer = SpanBuffer::new(3);
        for i in 1..=5u64 {
            buffer.on_end(span(u128::from(i), i, 0, "s", i, 1));
        }
        assert_eq!(buffer.len(), 3);
        assert!(buffer.spans_of_trace(&tid(1).to_string()).is_empty(), "oldest evicted");
        assert!(buffer.spans_of_trace(&tid(2).to_string()).is_empty(), "oldest evicted");
        assert_eq!(buffer.spans_of_trace(&tid(5).to_string()).len(), 1);
        assert_eq!(buffer.recent_traces(100).len(), 3);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let buffer = SpanBuffer::new(0);
        buffer.on_end(span(1, 1, 0, "s", 0, 1));
        assert!(buffer.is_empty());
        assert!(buffer.recent_traces(10).is_empty());
    }

    #[test]
    fn unsampled_spans_are_not_kept() {
        let buffer = SpanBuffer::new(10);
        let mut s = span(1, 1, 0, "s", 0, 1);
        s.span_context = SpanContext::new(tid(1), sid(1), TraceFlags::NOT_SAMPLED, false, TraceState::default());
        buffer.on_end(s);
        assert!(buffer.is_empty());
    }

    #[test]
    fn spans_of_trace_are_records_in_start_order() {
        let mut buffer = SpanBuffer::new(100);
        let resource = Resource::builder_empty()
            .with_service_name("yrd-node")
            .with_attribute(KeyValue::new("yrd.region", "320000"))
            .build();
        buffer.set_resource(&resource);
        let mut child = span(7, 2, 1, "store.query", 5, 10);
        child.status = Status::error("boom");
        child.span_kind = SpanKind::Client;
        buffer.on_end(child);
        buffer.on_end(span(7, 1, 0, "grpc.server", 0, 20));
        buffer.on_end(span(8, 3, 0, "other", 0, 1));

        let id = tid(7).to_string();
        let records = buffer.spans_of_trace(&id.to_uppercase());
        assert_eq!(records.len(), 2);
        let (root, child) = (&records[0], &records[1]);
        assert_eq!(root.name, "grpc.server");
        assert_eq!(root.trace_id, id);
        assert_eq!(root.trace_id.len(), 32);
        assert_eq!(root.span_id.len(), 16);
        assert_eq!(root.parent_span_id, "");
        assert_eq!(root.status, "unset");
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.kind, "client");
        assert_eq!(child.status, "error");
        assert_eq!(child.status_message, "boom");
        assert_eq!(child.duration(), Duration::from_millis(10));
        assert_eq!(child.attributes.get("yrd.rows").map(String::as_str), Some("42"));
        assert_eq!(child.service, "yrd-node");
        assert_eq!(child.region, "320000");

        // The JSON form round-trips: yrdctl parses what the admin API writes.
        let json = serde_json::to_string(&records).unwrap();
        let back: Vec<SpanRecord> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, records);

        assert!(buffer.spans_of_trace("not-a-trace-id").is_empty());
        assert!(buffer.spans_of_trace(&"0".repeat(32)).is_empty());
    }

    #[test]
    fn summaries_find_the_root_duration_and_errors() {
        let buffer = SpanBuffer::new(100);
        // Trace 1: root 0..100 ms with an erroring child.
        let mut failing = span(1, 11, 10, "region.call", 10, 30);
        failing.status = Status::error("unavailable");
        buffer.on_end(failing);
        buffer.on_end(span(1, 10, 0, "grpc.server", 0, 100));
        // Trace 2 began in another process: its local entry has a remote
        // parent, and starts later.
        buffer.on_end(span(2, 20, 99, "grpc.server", 200, 10));
        buffer.on_end(span(2, 21, 20, "store.query", 202, 5));
        // Trace 3: the slowest, started in between.
        buffer.on_end(span(3, 30, 0, "grpc.server", 150, 500));

        let recent = buffer.recent_traces(10);
        let order: Vec<String> = recent.iter().map(|s| s.trace_id.clone()).collect();
        assert_eq!(order, [tid(2), tid(3), tid(1)].map(|t| t.to_string()));
        let t1 = &recent[2];
        assert_eq!(t1.root_name, "grpc.server");
        assert_eq!(t1.span_count, 2);
        assert_eq!(t1.duration_nanos, 100_000_000);
        assert!(t1.error);
        let t2 = &recent[0];
        assert_eq!(
            t2.root_name, "grpc.server",
            "a remote parent makes the local entry the root"
        );
        assert!(!t2.error);

        assert_eq!(buffer.recent_traces(1).len(), 1);
        let slowest = buffer.slowest_traces(2);
        assert_eq!(slowest.len(), 2);
        assert_eq!(slowest[0].trace_id, tid(3).to_string());
        assert_eq!(slowest[1].trace_id, tid(1).to_string());
        assert!(buffer.slowest_traces(0).is_empty());
    }

    #[test]
    fn events_are_not_kept() {
        let buffer = SpanBuffer::new(10);
        let mut s = span(1, 1, 0, "s", 0, 1);
        s.events.events.push(opentelemetry::trace::Event::with_name("log line"));
        buffer.on_end(s);
        assert!(buffer.lock().spans[0].0.events.events.is_empty());
    }

    #[test]
    fn long_texts_are_cut_when_kept() {
        let buffer = SpanBuffer::new(10);
        let mut s = span(1, 1, 0, "s", 0, 1);
        let big = "d".repeat(3_500_000);
        s.name = Cow::Owned(big.clone());
        s.attributes.push(KeyValue::new("yrd.dataset", big.clone()));
        s.attributes.push(KeyValue::new(
            "list",
            Value::Array(Array::String(vec![StringValue::from(big.clone())])),
        ));
        s.status = Status::error(big.clone());
        buffer.on_end(s);
        let records = buffer.spans_of_trace(&tid(1).to_string());
        let r = &records[0];
        let suffix = "…(3500000 bytes)";
        assert_eq!(r.name.len(), MAX_ATTRIBUTE_BYTES + suffix.len());
        assert!(r.name.ends_with(suffix), "{}", &r.name[r.name.len() - 40..]);
        assert_eq!(r.attributes["yrd.dataset"].len(), MAX_ATTRIBUTE_BYTES + suffix.len());
        assert!(r.attributes["list"].len() < MAX_ATTRIBUTE_BYTES + 100);
        assert_eq!(r.status_message.len(), MAX_ATTRIBUTE_BYTES + suffix.len());
        // Short values are kept as they are.
        assert_eq!(r.attributes["yrd.region"], "310000");
        assert!(buffer.bytes() < 4 * MAX_ATTRIBUTE_BYTES + 2048, "{}", buffer.bytes());
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_first() {
        let one = {
            let b = SpanBuffer::new(10);
            b.on_end(span(1, 1, 0, "s", 0, 1));
            b.bytes()
        };
        assert!(one > 0);
        // Room for three spans by bytes, ten by count.
        let buffer = SpanBuffer::with_budget(10, 3 * one + one / 2);
        for i in 1..=5u64 {
            buffer.on_end(span(u128::from(i), i, 0, "s", i, 1));
        }
        assert_eq!(buffer.len(), 3);
        assert_eq!(buffer.bytes(), 3 * one);
        assert!(buffer.spans_of_trace(&tid(2).to_string()).is_empty(), "oldest evicted");
        assert_eq!(buffer.spans_of_trace(&tid(3).to_string()).len(), 1);
        // A big span evicts as many as it needs.
        let mut big = span(9, 9, 0, "s", 9, 1);
        big.attributes.push(KeyValue::new("yrd.a", "a".repeat(one)));
        let big_size = {
            let b = SpanBuffer::new(10);
            b.on_end(big.clone());
            b.bytes()
        };
        buffer.on_end(big);
        assert_eq!(buffer.len(), 2);
        assert_eq!(buffer.bytes(), one + big_size);
        assert_eq!(buffer.spans_of_trace(&tid(5).to_string()).len(), 1);
        // A span larger than the whole budget is not kept, and evicts nothing.
        let tiny = SpanBuffer::with_budget(10, one - 1);
        tiny.on_end(span(1, 1, 0, "s", 0, 1));
        assert!(tiny.is_empty());
        assert_eq!(tiny.bytes(), 0);
    }

    #[test]
    fn many_big_spans_stay_within_the_budget() {
        let budget = 1024 * 1024;
        let buffer = SpanBuffer::with_budget(20_000, budget);
        let big = "n".repeat(100_000);
        for i in 1..=1000u64 {
            let mut s = span(u128::from(i), i, 0, "s", i, 1);
            s.attributes.push(KeyValue::new("yrd.dataset", big.clone()));
            s.status = Status::error(big.clone());
            buffer.on_end(s);
        }
        println!(
            "1000 spans with two 100 kB texts: {} spans, {} bytes kept (budget {budget})",
            buffer.len(),
            buffer.bytes()
        );
        assert!(buffer.bytes() <= budget);
        assert!(buffer.len() > 50, "{}", buffer.len());
    }

    #[test]
    fn trace_ids_parse_strictly() {
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").is_some());
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e473").is_none());
        assert!(parse_trace_id("+bf92f3577b34da6a3ce929d0e0e4736").is_none());
        assert!(parse_trace_id(&"0".repeat(32)).is_none());
    }
}
