//! One trace per query across the gateway, every region node and their
//! stores, exported over OTLP/gRPC to a real receiver; metrics on the admin
//! endpoint. Telemetry is process-wide: each test here runs in its own
//! process under cargo-nextest, the suite's runner.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use yrd_proto::mesh::{QueryRequest, QuerySummary, query_response};
use yrd_telemetry::TelemetryConfig;

use crate::harness::http_get;
use crate::mesh::{Mesh, MeshOptions, REGIONS};
use crate::otlp::{Received, hex, require_clean_otel_env, start_receiver};

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT: &str = "00f067aa0ba902b7";

fn request() -> QueryRequest {
    QueryRequest {
        dataset: "enterprise".into(),
        filter: "status = \"active\"".into(),
        order_by: "registered_capital desc".into(),
        page_size: 200,
        ..Default::default()
    }
}

async fn run(mesh: &Mesh, traceparent: Option<&str>) -> QuerySummary {
    let mut app = mesh.app("tracer").await;
    let mut req = tonic::Request::new(request());
    if let Some(tp) = traceparent {
        req.metadata_mut().insert("traceparent", tp.parse().unwrap());
    }
    let resp = app.query(req).await.unwrap();
    let header = resp
        .metadata()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut stream = resp.into_inner();
    let mut summary = None;
    while let Some(m) = stream.next().await {
        if let Some(query_response::Kind::Summary(s)) = m.unwrap().kind {
            summary = Some(s);
        }
    }
    let summary = summary.unwrap();
    assert_eq!(
        header.as_deref(),
        Some(summary.trace_id.as_str()),
        "trace id in metadata and summary"
    );
    summary
}

fn by_trace(spans: &[Received], trace: &str) -> Vec<Received> {
    spans
        .iter()
        .filter(|s| hex(&s.span.trace_id) == trace)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_covers_every_hop_and_never_a_masked_value() {
    require_clean_otel_env();
    let (addr, receiver, _stop) = start_receiver().await;
    let telemetry = yrd_telemetry::init(&TelemetryConfig {
        service_name: "yrd-e2e".into(),
        otlp_endpoint: Some(format!("http://{addr}")),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let (mesh, _) = Mesh::start_with(MeshOptions {
        admin: true,
        ..MeshOptions::default()
    })
    .await;

    let summary = run(&mesh, None).await;
    let trace = summary.trace_id.clone();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));
    let continued = run(&mesh, Some(&format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"))).await;
    assert_eq!(
        continued.trace_id, INCOMING_TRACE,
        "an incoming traceparent is continued"
    );

    // The spans reach the collector: flush, then wait for the node spans.
    let t = tokio::task::spawn_blocking(move || {
        telemetry.flush().unwrap();
        telemetry
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = by_trace(&receiver.spans(), &trace);
        if spans.iter().filter(|s| s.span.name == "store.query").count() == 4 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: HashMap<Vec<u8>, &Received> = spans.iter().map(|s| (s.span.span_id.clone(), s)).collect();
    let named = |n: &str| spans.iter().filter(|s| s.span.name == n).collect::<Vec<_>>();

    // The gateway: its request span is the root, the fan-out its child.
    let roots: Vec<&Received> = spans.iter().filter(|s| s.span.parent_span_id.is_empty()).collect();
    assert_eq!(
        roots.len(),
        1,
        "one root: {:?}",
        roots.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
    assert_eq!(roots[0].span.name, "yrd.mesh.v1.Federation/Query");
    assert_eq!(roots[0].span.kind, 2, "server kind");
    assert_eq!(roots[0].attr("rpc.service").as_deref(), Some("yrd.mesh.v1.Federation"));
    let fanout = named("gateway.fanout");
    assert_eq!(fanout.len(), 1);
    assert_eq!(fanout[0].span.parent_span_id, roots[0].span.span_id);
    assert_eq!(named("gateway.plan").len(), 1);
    assert_eq!(named("gateway.merge")[0].span.parent_span_id, fanout[0].span.span_id);
    // The request span lasts as long as its stream: it ends after the merge.
    assert!(
        roots[0].span.end_time_unix_nano >= named("gateway.merge")[0].span.end_time_unix_nano,
        "the server span ends with its stream"
    );

    // One client span per region, children of the fan-out; each region's
    // node server span is the child of that region's client span.
    let region_spans = named("gateway.region");
    assert_eq!(region_spans.len(), 4);
    let mut seen = BTreeSet::new();
    for node_query in named("node.query") {
        let region = node_query.attr("yrd.region").unwrap();
        let server = ids[&node_query.span.parent_span_id];
        assert_eq!(server.span.name, "yrd.mesh.v1.DataNode/Query");
        assert_eq!(server.span.kind, 2, "server kind");
        assert_eq!(server.attr("rpc.service").as_deref(), Some("yrd.mesh.v1.DataNode"));
        let client = ids[&server.span.parent_span_id];
        assert_eq!(client.span.name, "gateway.region");
        assert_eq!(
            client.attr("yrd.region"),
            Some(region.clone()),
            "node span under its region's client span"
        );
        assert_eq!(client.span.parent_span_id, fanout[0].span.span_id);
        assert_eq!(client.span.kind, 3, "client kind");
        assert_eq!(client.attr("rpc.system").as_deref(), Some("grpc"));
        // The store span is a child of the node span, with the SQL shape.
        let store: Vec<&Received> = named("store.query")
            .into_iter()
            .filter(|s| s.span.parent_span_id == node_query.span.span_id)
            .collect();
        assert_eq!(store.len(), 1);
        assert_eq!(store[0].attr("db.system").as_deref(), Some("sqlite"));
        let sql = store[0].attr("db.statement").unwrap();
        assert!(
            sql.contains("?") && !sql.contains("active"),
            "placeholders, not values: {sql}"
        );
        seen.insert(region);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), REGIONS.to_vec());

    // The continued trace hangs under the caller's span.
    let continued_spans = by_trace(&receiver.spans(), INCOMING_TRACE);
    let root = continued_spans
        .iter()
        .find(|s| s.span.name == "yrd.mesh.v1.Federation/Query")
        .unwrap();
    assert_eq!(hex(&root.span.parent_span_id), INCOMING_PARENT);

    // No span carries a personal or secret value.
    let mut secrets = BTreeSet::new();
    for i in 0..REGIONS.len() {
        let sql = mesh.sql(i);
        let mut st = sql
            .prepare("SELECT legal_representative, representative_id_number FROM ds_enterprise")
            .unwrap();
        for row in st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
        {
            let (name, id) = row.unwrap();
            secrets.insert(name);
            secrets.insert(id);
        }
    }
    for s in receiver.spans() {
        for kv in &s.span.attributes {
            let v = format!("{:?}", kv.value);
            assert!(
                !secrets.iter().any(|x| v.contains(x.as_str())),
                "span {} attribute {} leaks a masked value",
                s.span.name,
                kv.key
            );
        }
    }

    // Metrics: the gateway's admin endpoint counts the queries.
    let admin = mesh.gateway.admin.as_ref().unwrap().addr;
    let text = http_get(admin, "/metrics").await;
    let mut queries = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(name.chars().next().unwrap().is_ascii_alphabetic(), "{line}");
        if name.starts_with("yrd_requests_total{") && name.contains("Federation") && name.contains("method=\"Query\"") {
            queries += value;
        }
    }
    assert!(queries >= 2.0, "queries counted: {queries}\n{text}");
    assert!(text.contains("yrd_region_call_duration_seconds_bucket"));
    assert!(text.contains("yrd_certificate_expiry_timestamp_seconds"));
    http_get(admin, "/readyz").await;
    http_get(admin, "/healthz").await;
    let traces = http_get(admin, &format!("/traces?trace_id={trace}")).await;
    assert!(
        traces.contains("gateway.fanout") && traces.contains("store.query"),
        "{traces}"
    );
    drop(t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_neither_fails_nor_slows_queries() {
    require_clean_otel_env();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let telemetry = yrd_telemetry::init(&TelemetryConfig {
        service_name: "yrd-e2e".into(),
        otlp_endpoint: Some(format!("http://{closed}")),
        export_queue: 64,
        ..TelemetryConfig::default()
    })
    .unwrap();
    let mesh = Mesh::start().await;
    let started = Instant::now();
    for _ in 0..30 {
        let s = run(&mesh, None).await;
        assert_eq!(s.regions.len(), 4);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "30 queries took {took:?} with the collector down"
    );
    let dropped = tokio::task::spawn_blocking(move || {
        let _ = telemetry.flush();
        telemetry.spans_dropped()
    })
    .await
    .unwrap();
    assert!(dropped > 0, "spans that could not be exported are counted");
}
