//! Spans reach an OTLP/gRPC collector: one trace, parent links, resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{hex, require_clean_otel_env, start_receiver};
use yrd_telemetry::{TelemetryConfig, current_trace_id, init};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_as_one_trace() {
    require_clean_otel_env();
    let (addr, receiver, _stop) = start_receiver().await;
    let config = TelemetryConfig {
        service_name: "yrd-test-export".to_owned(),
        region: Some("310000".to_owned()),
        otlp_endpoint: Some(format!("http://{addr}")),
        ..TelemetryConfig::default()
    };
    let telemetry = init(&config).unwrap();
    assert!(matches!(
        init(&config),
        Err(yrd_telemetry::TelemetryError::AlreadyInitialized)
    ));

    let trace_id = {
        let parent = tracing::info_span!("test.parent", otel.kind = "server", yrd.component = "test");
        let _parent = parent.enter();
        let child = tracing::info_span!("test.child", otel.kind = "client", yrd.region = "320000");
        let _child = child.enter();
        tracing::info!("inside the child");
        current_trace_id()
    };
    assert_eq!(trace_id.len(), 32);

    // The embedded buffer has them too, whatever the collector does.
    let local = telemetry.buffer().spans_of_trace(&trace_id);
    assert_eq!(local.len(), 2, "{local:?}");

    let dropped = telemetry.spans_dropped();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dropped, 0);

    let spans = receiver.spans();
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.span.name == name)
            .unwrap_or_else(|| panic!("{name} not received; got {spans:?}"))
    };
    let parent = find("test.parent");
    let child = find("test.child");
    assert_eq!(hex(&parent.span.trace_id), trace_id);
    assert_eq!(hex(&child.span.trace_id), trace_id);
    assert_eq!(child.span.parent_span_id, parent.span.span_id);
    assert!(parent.span.parent_span_id.is_empty(), "the parent is a root");
    // OTLP SpanKind: 2 = server, 3 = client.
    assert_eq!(parent.span.kind, 2);
    assert_eq!(child.span.kind, 3);
    assert_eq!(parent.attr("yrd.component").as_deref(), Some("test"));
    assert_eq!(child.attr("yrd.region").as_deref(), Some("320000"));
    for s in [parent, child] {
        let expected = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "yrd-test-export".to_owned());
        assert_eq!(s.resource_attr("service.name"), Some(expected));
        assert_eq!(s.resource_attr("service.namespace").as_deref(), Some("yrd-mesh"));
        assert_eq!(s.resource_attr("yrd.region").as_deref(), Some("310000"));
    }
}
