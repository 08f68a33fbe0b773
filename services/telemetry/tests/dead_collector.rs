//! A collector that is down costs requests nothing: spans are dropped and
//! counted, never waited for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::require_clean_otel_env;
use yrd_telemetry::{SPANS_DROPPED_TOTAL, TelemetryConfig, init, metrics_handle};

const SPANS: u64 = 1000;

#[test]
fn a_dead_collector_never_blocks_and_drops_are_counted() {
    require_clean_otel_env();
    let prometheus = metrics_handle().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let telemetry = init(&TelemetryConfig {
        service_name: "yrd-test-dead-collector".to_owned(),
        otlp_endpoint: Some(format!("http://127.0.0.1:{port}")),
        // Small, so that the queue overflows too, not only the exports fail.
        export_queue: 100,
        ..TelemetryConfig::default()
    })
    .unwrap();

    let began = Instant::now();
    for i in 0..SPANS {
        let span = tracing::info_span!("test.request", i);
        let _entered = span.enter();
        tracing::debug!("work");
    }
    let elapsed = began.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{SPANS} spans took {elapsed:?}");
    assert_eq!(
        telemetry.buffer().len(),
        1000,
        "the buffer keeps spans whatever the collector does"
    );

    telemetry.flush().unwrap();
    assert!(telemetry.spans_dropped() > 0, "nothing counted as dropped");
    let began = Instant::now();
    telemetry.shutdown().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        began.elapsed()
    );

    // After a clean shutdown every span was either exported or counted:
    // here, all of them counted.
    let metrics = prometheus.render();
    let line = metrics
        .lines()
        .find(|l| l.starts_with(SPANS_DROPPED_TOTAL))
        .unwrap_or_else(|| panic!("no {SPANS_DROPPED_TOTAL} in\n{metrics}"));
    assert_eq!(line, format!("{SPANS_DROPPED_TOTAL} {SPANS}"));
}
