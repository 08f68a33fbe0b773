//! The admin endpoint: Prometheus text, health, readiness and traces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::oneshot;
use tonic::Code;
use yrd_telemetry::{
    AdminState, OpenStreamGuard, SpanBuffer, SpanRecord, TelemetryConfig, TraceSummary, TracesAccess,
    certificate_expiry, metrics_handle, region_call_done, request_done, rows_streamed, serve_admin, start_admin,
};

/// A plain HTTP/1.1 GET: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with(addr, path, "").await
}

/// A plain HTTP/1.1 GET with `headers` (each line ending in CRLF).
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (path, headers) = (path.to_owned(), headers.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
            "this client reads only sized bodies:\n{head}"
        );
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    })
    .await
    .unwrap()
}

/// Every line is a comment (`# HELP`, `# TYPE`) or `name{labels} value`.
fn assert_prometheus_text(text: &str) {
    let is_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split_whitespace();
            let kind = words.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            assert!(is_name(words.next().unwrap()), "{line}");
            if kind == "TYPE" {
                let t = words.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                Some(rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed: {line}"))),
            ),
            None => (series, None),
        };
        assert!(is_name(name), "bad name: {line}");
        for label in labels.into_iter().flat_map(|l| l.split("\",")) {
            let (key, value) = label
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label {label:?}: {line}"));
            assert!(is_name(key), "bad label name: {line}");
            assert!(!value.trim_end_matches('"').contains('"'), "bad label value: {line}");
        }
    }
}

/// Two traces in a buffer: a fast one, and a slow one with a failed child.
fn traced_buffer() -> (SpanBuffer, String, String) {
    let buffer = SpanBuffer::new(100);
    let provider = SdkTracerProvider::builder().with_span_processor(buffer.clone()).build();
    let tracer = provider.tracer("test");

    let fast = tracer.start("grpc.server");
    let fast_id = fast.span_context().trace_id().to_string();
    let cx = Context::current_with_span(fast);
    cx.span().end();

    let slow = tracer.start("grpc.server");
    let slow_id = slow.span_context().trace_id().to_string();
    let cx = Context::current_with_span(slow);
    let mut child = tracer.start_with_context("store.query", &cx);
    child.set_attribute(KeyValue::new("yrd.rows", 3_i64));
    child.set_status(opentelemetry::trace::Status::error("disk"));
    std::thread::sleep(Duration::from_millis(5));
    child.end();
    cx.span().end();
    (buffer, fast_id, slow_id)
}

#[tokio::test]
async fn the_admin_endpoint_serves_metrics_health_readiness_and_traces() {
    let prometheus = metrics_handle().unwrap();
    // Once per process: a second call hands out the same recorder.
    let again = metrics_handle().unwrap();

    request_done("yrd.mesh.v1.Federation", "Query", Code::Ok, Duration::from_millis(12));
    request_done(
        "yrd.mesh.v1.Federation",
        "Query",
        Code::Unavailable,
        Duration::from_millis(40),
    );
    region_call_done("310000", "ok", Duration::from_millis(8));
    rows_streamed("enterprise", 500, 50_000);
    certificate_expiry("spiffe://yrd.test/gateway/g1", 1_900_000_000);
    let open = OpenStreamGuard::open();
    let closed = OpenStreamGuard::open();
    drop(closed);

    let (buffer, fast_id, slow_id) = traced_buffer();
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let state = AdminState {
        prometheus,
        buffer,
        ready: Arc::new(move || flag.load(Ordering::SeqCst)),
        traces_access: TracesAccess::Open,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (addr, task) = serve_admin("127.0.0.1:0".parse().unwrap(), state, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert_ne!(addr.port(), 0);

    // /metrics
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_prometheus_text(&text);
    for expected in [
        r#"yrd_requests_total{service="yrd.mesh.v1.Federation",method="Query",code="OK"} 1"#,
        r#"yrd_requests_total{service="yrd.mesh.v1.Federation",method="Query",code="UNAVAILABLE"} 1"#,
        r#"yrd_request_duration_seconds_bucket{service="yrd.mesh.v1.Federation",method="Query",le="0.001"} 0"#,
        r#"yrd_request_duration_seconds_bucket{service="yrd.mesh.v1.Federation",method="Query",le="0.025"} 1"#,
        r#"yrd_request_duration_seconds_bucket{service="yrd.mesh.v1.Federation",method="Query",le="30"} 2"#,
        r#"yrd_request_duration_seconds_count{service="yrd.mesh.v1.Federation",method="Query"} 2"#,
        r#"yrd_region_calls_total{region="310000",state="ok"} 1"#,
        r#"yrd_rows_streamed_total{dataset="enterprise"} 500"#,
        r#"yrd_bytes_streamed_total{dataset="enterprise"} 50000"#,
        r#"yrd_certificate_expiry_timestamp_seconds{identity="spiffe://yrd.test/gateway/g1"} 1900000000"#,
        "yrd_open_streams 1",
        "# TYPE yrd_request_duration_seconds histogram",
        "# HELP yrd_requests_total gRPC requests served, by service, method and status code",
    ] {
        assert!(text.lines().any(|l| l == expected), "missing {expected:?} in\n{text}");
    }
    drop(open);
    assert_eq!(
        again.render().lines().find(|l| l.starts_with("yrd_open_streams ")),
        Some("yrd_open_streams 0")
    );

    // /healthz and /readyz
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));
    assert_eq!(get(addr, "/readyz").await.0, 503);
    ready.store(true, Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    // /traces
    let (status, body) = get(addr, "/traces?last=10").await;
    assert_eq!(status, 200, "{body}");
    let recent: Vec<TraceSummary> = serde_json::from_str(&body).unwrap();
    assert_eq!(recent.len(), 2);
    assert!(recent.iter().all(|t| t.root_name == "grpc.server"));
    let (status, body) = get(addr, "/traces").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Vec<TraceSummary>>(&body).unwrap().len(), 2);

    let (status, body) = get(addr, "/traces?slowest=1").await;
    assert_eq!(status, 200, "{body}");
    let slowest: Vec<TraceSummary> = serde_json::from_str(&body).unwrap();
    assert_eq!(slowest.len(), 1);
    assert_eq!(slowest[0].trace_id, slow_id);
    assert_eq!(slowest[0].span_count, 2);
    assert!(slowest[0].error);

    let (status, body) = get(addr, &format!("/traces?trace_id={slow_id}")).await;
    assert_eq!(status, 200, "{body}");
    let spans: Vec<SpanRecord> = serde_json::from_str(&body).unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].name, "grpc.server");
    assert_eq!(spans[1].name, "store.query");
    assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    assert_eq!(spans[1].attributes["yrd.rows"], "3");
    assert_eq!(spans[1].status, "error");
    let (_, body) = get(addr, &format!("/traces?trace_id={fast_id}")).await;
    assert_eq!(serde_json::from_str::<Vec<SpanRecord>>(&body).unwrap().len(), 1);
    let (status, body) = get(addr, &format!("/traces?trace_id={}", "ab".repeat(16))).await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    // Bad input: 400, naming the problem.
    for (path, needle) in [
        ("/traces?last=1001", "1000"),
        ("/traces?slowest=5000", "1000"),
        ("/traces?trace_id=xyz", "32 hexadecimal"),
        ("/traces?last=1&slowest=1", "one of"),
        ("/traces?last=-1", "last"),
        ("/traces?limit=3", "limit"),
        // A long caller's text is quoted cut, not whole.
        (&*format!("/traces?trace_id={}", "z".repeat(4000)), "(4000 bytes)"),
    ] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
        assert!(body.len() < 400, "{path}: {} bytes", body.len());
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// The address to connect to for a listener bound to `bound` (an
/// unspecified address is reached on loopback).
fn reach(bound: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], bound.port()))
}

#[tokio::test]
async fn traces_need_loopback_or_the_token() {
    let ready: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(|| true);
    let dir = tempfile::tempdir().unwrap();

    // Loopback, no token: open.
    let admin = start_admin(
        "127.0.0.1:0".parse().unwrap(),
        &TelemetryConfig::default(),
        ready.clone(),
    )
    .await
    .unwrap();
    assert_eq!(get(admin.addr, "/traces").await.0, 200);
    admin.stop();

    // Any other address without a token: /traces refused, naming the key;
    // the rest stays open.
    let open = start_admin("0.0.0.0:0".parse().unwrap(), &TelemetryConfig::default(), ready.clone())
        .await
        .unwrap();
    let addr = reach(open.addr);
    let (status, body) = get(addr, "/traces?last=5").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("telemetry.traces_token_file"), "{body}");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/metrics").await.0, 200);
    open.stop();

    // With a token file: the token is required, on any address.
    let token = "s3cret-token-of-32-bytes-0123456";
    let path = dir.path().join("traces.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let config = TelemetryConfig {
        traces_token_file: Some(path),
        ..TelemetryConfig::default()
    };
    for bind in ["0.0.0.0:0", "127.0.0.1:0"] {
        let admin = start_admin(bind.parse().unwrap(), &config, ready.clone())
            .await
            .unwrap();
        let addr = reach(admin.addr);
        for (headers, expected) in [
            (String::new(), 401),
            ("Authorization: Bearer wrong\r\n".to_owned(), 401),
            (format!("Authorization: Bearer {token}x\r\n"), 401),
            (format!("Authorization: Basic {token}\r\n"), 401),
            (format!("Authorization: Bearer {token}\r\n"), 200),
        ] {
            let (status, body) = get_with(addr, "/traces?last=5", &headers).await;
            assert_eq!(status, expected, "{bind} {headers:?}: {body}");
            assert!(!body.contains(token), "the token is never echoed");
        }
        assert_eq!(get(addr, "/metrics").await.0, 200, "metrics need no token");
        admin.stop();
    }

    // A short token, an empty file or a missing one: refused at start,
    // naming the key, never showing the content.
    for (content, needle) in [
        (Some("short-token"), "shorter than"),
        (Some("  \n"), "shorter than"),
        (None, "traces.missing"),
    ] {
        let path = dir.path().join(if content.is_some() {
            "bad.token"
        } else {
            "traces.missing"
        });
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let config = TelemetryConfig {
            traces_token_file: Some(path),
            ..TelemetryConfig::default()
        };
        let err = start_admin("127.0.0.1:0".parse().unwrap(), &config, ready.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("telemetry.traces_token_file") && err.contains(needle),
            "{err}"
        );
        assert!(!err.contains("short-token"), "{err}");
    }
}
