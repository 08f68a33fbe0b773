//! W3C trace context through gRPC: a server span continues an incoming
//! `traceparent` or starts a new trace, and outgoing calls carry the
//! current span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;

use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use yrd_telemetry::{
    SERVER_SPAN, SpanRecord, Telemetry, TelemetryConfig, current_trace_id, init, inject, injector, record_status,
    server_span,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Installed once per process: `cargo test` runs this file's tests in one
/// process, cargo-nextest in one process each.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        common::require_clean_otel_env();
        init(&TelemetryConfig {
            service_name: "yrd-test-propagation".to_owned(),
            region: Some("340000".to_owned()),
            ..TelemetryConfig::default()
        })
        .unwrap()
    })
}

fn request(traceparent: Option<&str>) -> http::Request<()> {
    let mut builder = http::Request::builder().uri("http://node:4000/yrd.mesh.v1.DataNode/Query");
    if let Some(tp) = traceparent {
        builder = builder.header("traceparent", tp).header("tracestate", "yrd=1");
    }
    builder.body(()).unwrap()
}

/// The one span of `trace_id` in the buffer.
fn only_span(trace_id: &str) -> SpanRecord {
    let spans = telemetry().buffer().spans_of_trace(trace_id);
    assert_eq!(spans.len(), 1, "{spans:?}");
    spans.into_iter().next().unwrap()
}

#[test]
fn an_incoming_traceparent_is_continued() {
    telemetry();
    let span = server_span(&request(Some(TRACEPARENT)));
    let own_span_id = {
        let _entered = span.enter();
        assert_eq!(current_trace_id(), TRACE_ID);

        // An outgoing call made inside the request carries the same trace,
        // with this span (not the caller's) as the parent.
        let mut metadata = MetadataMap::new();
        inject(&mut metadata);
        let sent = metadata.get("traceparent").unwrap().to_str().unwrap().to_owned();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(parts[1], TRACE_ID);
        assert_ne!(parts[2], CALLER_SPAN);
        assert_eq!(parts[3], "01", "sampled");
        assert_eq!(metadata.get("tracestate").unwrap().to_str().unwrap(), "yrd=1");
        parts[2].to_owned()
    };
    drop(span);

    let record = only_span(TRACE_ID);
    assert_eq!(record.span_id, own_span_id);
    assert_eq!(record.parent_span_id, CALLER_SPAN);
    assert_eq!(record.name, "yrd.mesh.v1.DataNode/Query");
    assert_eq!(record.kind, "server");
    assert_eq!(record.attributes["rpc.system"], "grpc");
    assert_eq!(record.attributes["rpc.service"], "yrd.mesh.v1.DataNode");
    assert_eq!(record.attributes["rpc.method"], "Query");
    assert_eq!(record.attributes["trace_id"], TRACE_ID);
    assert_eq!(record.region, "340000");
}

#[test]
fn a_request_without_traceparent_starts_a_new_trace() {
    telemetry();
    // Even inside some unrelated span, the request starts its own trace.
    let unrelated = tracing::info_span!("test.unrelated");
    let _unrelated = unrelated.enter();
    let outer = current_trace_id();

    let span = server_span(&request(None));
    let trace_id = {
        let _entered = span.enter();
        let id = current_trace_id();
        let child = tracing::info_span!("test.child");
        let _child = child.enter();
        assert_eq!(current_trace_id(), id, "children share the request's trace");
        id
    };
    drop(span);
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, TRACE_ID);
    assert_ne!(trace_id, outer);

    let spans = telemetry().buffer().spans_of_trace(&trace_id);
    let root = spans.iter().find(|s| s.kind == "server").unwrap();
    assert_eq!(root.parent_span_id, "", "a new root");
    let child = spans.iter().find(|s| s.name == "test.child").unwrap();
    assert_eq!(child.parent_span_id, root.span_id);
}

#[test]
fn status_is_recorded_on_the_span() {
    telemetry();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let span = server_span(&request(Some(traceparent)));
    record_status(&span, Code::Unavailable);
    drop(span);
    let failed = only_span("0af7651916cd43dd8448eb211c80319c");
    assert_eq!(failed.status, "error");
    assert_eq!(failed.status_message, "UNAVAILABLE");
    assert_eq!(failed.attributes["rpc.grpc.status_code"], "14");

    let traceparent = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let span = server_span(&request(Some(traceparent)));
    record_status(&span, Code::Ok);
    drop(span);
    let ok = only_span("1af7651916cd43dd8448eb211c80319c");
    assert_eq!(ok.status, "unset");
    assert_eq!(ok.attributes["rpc.grpc.status_code"], "0");
}

#[test]
fn the_injector_writes_the_current_span_into_requests() {
    telemetry();
    let span = tracing::info_span!("test.client", otel.kind = "client");
    let _entered = span.enter();
    let request = injector().call(tonic::Request::new(())).unwrap();
    let sent = request.metadata().get("traceparent").unwrap().to_str().unwrap();
    assert!(sent.starts_with(&format!("00-{}-", current_trace_id())), "{sent}");
    assert_eq!(SERVER_SPAN, "grpc.server");
}

#[test]
fn outside_any_span_nothing_is_injected() {
    telemetry();
    assert_eq!(current_trace_id(), "");
    let mut metadata = MetadataMap::new();
    inject(&mut metadata);
    assert!(metadata.get("traceparent").is_none());
}
