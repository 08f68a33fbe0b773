//! Attack tests: telemetry (issue 10, finding 3 and part of 8).
//!
//! - **Memory amplification through the span buffer.** The real
//!   `yrd-gateway` binary, its own process, is sent 100 queries whose
//!   dataset name is 3.5 MB and 100 whose field names are (projection,
//!   order, group-by, metric). Before the fix each name was copied into the
//!   `gateway.plan` span twice (the `yrd.dataset` attribute and the error
//!   description) and kept in the 20,000-span buffer, bounded by count only:
//!   the issue measured 77 → 396 → 671 MB after 40 and 80 such requests.
//!   Now the names are checked against `MAX_NAME_BYTES` before anything
//!   records them, recorded values are cut, and the buffer is bounded by
//!   bytes as well: the gateway's resident memory ends within 20 MB of
//!   where it started after warm-up, and each error is short.
//! - **Literals of a failing filter on `/traces`.** A filter with an ID
//!   number typed into a number field, and others carrying recognisable
//!   literals (a syntax error, a typed tree of the wrong type, passing
//!   filters that reach every region's node and store), through a whole
//!   in-process mesh; then every trace the admin endpoint serves is read:
//!   no literal is anywhere in it, while the caller's own error still
//!   quotes it.
//!
//! The gateway binary is built by cargo before it runs; `YRD_ATTACK_GATEWAY`
//! names another build of it (an older one, to measure the figure before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;
use yrd_identity::{PeerId, TlsMaterial, TlsPaths};
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{
    AggregateFunction, AggregateRequest, CompareOp, Comparison, FilterExpr, Metric, OrderKey, QueryRequest, Value,
    filter_expr, query_response, value,
};
use yrd_telemetry::{SpanRecord, TelemetryConfig, TraceSummary};

use crate::harness::http_get;
use crate::mesh::{Mesh, MeshOptions, TD, issue};
use crate::procs::{Process, binary, free_port};

/// The size of each hostile name.
const BIG: usize = 3_500_000;
/// Requests of each kind (dataset name, field names) measured.
const REQUESTS: usize = 100;
/// Requests of each kind sent before the first measurement.
const WARM_UP: usize = 20;
/// How much the gateway's resident memory may grow over the measured
/// requests.
const MAX_GROWTH_KB: u64 = 20 * 1024;
/// The longest error a hostile request may get back.
const MAX_ERROR_BYTES: usize = 1024;

/// The gateway, its own process, killed when the test ends.
struct Gateway {
    process: Process,
    addr: SocketAddr,
}

impl Gateway {
    /// Starts `yrd-gateway --config <config>` and waits until it serves.
    async fn start(config: &Path, dir: &Path) -> Self {
        let mut process = Process::start_path(&gateway_binary(), config, &[], dir);
        // The gateway listens on a port of its choosing and says which.
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let text = process.logs();
            if let Some(addr) = serving_addr(&text) {
                break addr;
            }
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("the gateway exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "the gateway does not serve:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { process, addr }
    }

    /// Resident memory, in kB (`VmRSS` of `/proc/<pid>/status`).
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// The address of the `gateway serving addr=...` log line.
fn serving_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("gateway serving"))?;
    let at = line.find("addr=")? + "addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The gateway binary: `YRD_ATTACK_GATEWAY`, or this workspace's, built
/// (or found up to date) by cargo first. Cargo-nextest, the suite's
/// runner, holds no build lock while tests run.
fn gateway_binary() -> PathBuf {
    match std::env::var_os("YRD_ATTACK_GATEWAY") {
        Some(path) => path.into(),
        None => binary("yrd-gateway"),
    }
}

/// A free loopback port nothing listens on (a region that never answers:
/// every request here is refused before any region is called).
fn dead_port() -> u16 {
    free_port()
}

/// A gateway config with the keys every version of it knows, so that an
/// older build can be measured with the same file.
fn gateway_config(dir: &Path, tls: &TlsPaths) -> PathBuf {
    let text = format!(
        r#"listen = "127.0.0.1:0"
trust_domain = "{TD}"
allow = ["app"]

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[query]
page_token_secret = "attack-telemetry-secret-0123456789"

[health]
interval = "1s"
timeout = "1s"

[[regions]]
id = "310000"
name = "Shanghai"
endpoints = ["https://127.0.0.1:{port}"]
tls_server_name = "localhost"
"#,
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        port = dead_port(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A Federation client of application `name` at `addr`, sending requests
/// of any size.
async fn app(pki: &Path, addr: SocketAddr, name: &str) -> FederationClient<Channel> {
    let paths = issue(pki, &PeerId::app(TD, name).unwrap(), false);
    let m = TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap();
    let tls = yrd_identity::tonic_client_tls(&m, "localhost");
    let channel = Mesh::channel(&format!("https://{addr}"), tls).await.unwrap();
    FederationClient::new(channel)
        .max_encoding_message_size(8 * 1024 * 1024)
        .max_decoding_message_size(8 * 1024 * 1024)
}

/// The `i`th hostile request: a 3.5 MB dataset name, or 3.5 MB field
/// names in the projection, the order (text and typed), the group-by or
/// a metric. Each name differs, so that nothing can be shared.
enum Hostile {
    Query(QueryRequest),
    Aggregate(AggregateRequest),
}

fn hostile(i: usize, dataset_name: bool) -> Hostile {
    let big = format!("{i:08}{}", "n".repeat(BIG - 8));
    let query = |f: &dyn Fn(&mut QueryRequest)| {
        let mut q = QueryRequest {
            dataset: "enterprise".into(),
            purpose: "attack test".into(),
            ..QueryRequest::default()
        };
        f(&mut q);
        Hostile::Query(q)
    };
    if dataset_name {
        return query(&|q| q.dataset.clone_from(&big));
    }
    match i % 5 {
        0 => query(&|q| q.fields = vec!["name".into(), big.clone()]),
        1 => query(&|q| q.order_by = format!("{big} desc")),
        2 => query(&|q| {
            q.order_keys = vec![OrderKey {
                field: big.clone(),
                descending: true,
            }];
        }),
        3 => Hostile::Aggregate(AggregateRequest {
            dataset: "enterprise".into(),
            group_by: vec![big.clone()],
            purpose: "attack test".into(),
            ..AggregateRequest::default()
        }),
        _ => Hostile::Aggregate(AggregateRequest {
            dataset: "enterprise".into(),
            metrics: vec![Metric {
                function: AggregateFunction::Sum as i32,
                field: big.clone(),
            }],
            purpose: "attack test".into(),
            ..AggregateRequest::default()
        }),
    }
}

/// Sends the request; returns the refusal: its code and size (message
/// and details).
async fn send(client: &mut FederationClient<Channel>, request: Hostile) -> (tonic::Code, usize) {
    let status = match request {
        Hostile::Query(q) => match client.query(q).await {
            Err(status) => status,
            Ok(resp) => match resp.into_inner().next().await {
                Some(Err(status)) => status,
                other => panic!("a hostile query was not refused: {other:?}"),
            },
        },
        Hostile::Aggregate(a) => client.aggregate(a).await.unwrap_err(),
    };
    (status.code(), status.message().len() + status.details().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_names_leave_gateway_memory_flat_and_errors_short() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    yrd_identity::init_ca(&pki, TD).unwrap();
    let tls = issue(&pki, &PeerId::gateway(TD, "gateway").unwrap(), true);
    let config = gateway_config(dir.path(), &tls);
    let gateway = Gateway::start(&config, dir.path()).await;
    let mut client = app(&pki, gateway.addr, "hostile").await;
    let started_kb = gateway.rss_kb();

    for i in 0..WARM_UP {
        send(&mut client, hostile(i, true)).await;
        send(&mut client, hostile(i, false)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kb = gateway.rss_kb();

    let t = Instant::now();
    let mut longest_error = 0;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut after_datasets_kb = 0;
    for dataset_name in [true, false] {
        for i in 0..REQUESTS {
            let (code, size) = send(&mut client, hostile(WARM_UP + i, dataset_name)).await;
            *codes.entry(format!("{code:?}")).or_default() += 1;
            longest_error = longest_error.max(size);
        }
        if dataset_name {
            after_datasets_kb = gateway.rss_kb();
        }
    }
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kb = gateway.rss_kb();
    let request_bytes = QueryRequest {
        dataset: "n".repeat(BIG),
        ..QueryRequest::default()
    }
    .encoded_len();

    println!(
        "gateway RSS: {} MB at start, {} MB after {} warm-up requests, {} MB after {REQUESTS} with a {request_bytes}-byte \
         dataset name, {} MB after {REQUESTS} more with 3.5 MB field names (growth {} kB, limit {MAX_GROWTH_KB} kB); \
         longest error {longest_error} bytes (limit {MAX_ERROR_BYTES}); {} requests in {took:.1?}, answered {codes:?}",
        started_kb / 1024,
        before_kb / 1024,
        2 * WARM_UP,
        after_datasets_kb / 1024,
        after_kb / 1024,
        after_kb.saturating_sub(before_kb),
        2 * REQUESTS,
    );
    // Refused as the caller's fault, not failed in transport (an error
    // echoing 3.5 MB does not fit in a header: the client sees a broken
    // stream instead).
    assert!(
        codes.keys().all(|c| c == "InvalidArgument" || c == "NotFound"),
        "{codes:?}"
    );
    assert!(
        longest_error < MAX_ERROR_BYTES,
        "an error of {longest_error} bytes echoes the request"
    );
    assert!(
        after_kb <= before_kb + MAX_GROWTH_KB,
        "the gateway grew from {before_kb} kB to {after_kb} kB:\n{}",
        gateway.logs().lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        !gateway.logs().contains(&"n".repeat(1000)),
        "a hostile name reached the log"
    );
}

/// Recognisable literals, each of them only in a filter of this test.
const ID_NUMBER: &str = "310101199001011234X";
const PASSING_NUMBER: &str = "987654321012345";
const PASSING_STRING: &str = "LITERAL-Q7ZX-3141";
const TREE_STRING: &str = "TREE-LITERAL-K9WV";
const SYNTAX_LITERAL: &str = "9SYNTAXLIT4RB";

fn comparison(field: &str, op: CompareOp, kind: value::Kind) -> FilterExpr {
    FilterExpr {
        kind: Some(filter_expr::Kind::Comparison(Comparison {
            field: field.into(),
            op: op as i32,
            value: Some(Value { kind: Some(kind) }),
            prefix: false,
        })),
    }
}

/// Every span the admin endpoint at `admin` serves, as one JSON text per
/// trace, and the spans.
async fn every_span(admin: SocketAddr) -> (String, Vec<SpanRecord>) {
    let list = http_get(admin, "/traces?last=1000").await;
    // The admin endpoint's JSON, read back as yrdctl reads it.
    let traces: Vec<TraceSummary> = serde_json::from_str(&list).unwrap();
    let mut text = list;
    let mut spans = Vec::new();
    for t in traces {
        let body = http_get(admin, &format!("/traces?trace_id={}", t.trace_id)).await;
        spans.extend(serde_json::from_str::<Vec<SpanRecord>>(&body).unwrap());
        text.push_str(&body);
    }
    (text, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filter_literal_reaches_traces() {
    let _telemetry = yrd_telemetry::init(&TelemetryConfig {
        service_name: "yrd-attack".into(),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let (mesh, _) = Mesh::start_with(MeshOptions {
        admin: true,
        ..MeshOptions::default()
    })
    .await;
    let admin = mesh.gateway.admin.as_ref().unwrap().addr;
    let mut app = mesh.app("literal").await;
    let query = |filter: &str| QueryRequest {
        dataset: "enterprise".into(),
        filter: filter.into(),
        page_size: 5,
        purpose: "attack test".into(),
        ..QueryRequest::default()
    };

    // Refused at the gateway: an ID number typed into a number field, a
    // syntax error next to a literal, a typed tree of the wrong type.
    let refused = [
        query(&format!("registered_capital = {ID_NUMBER}")),
        query(&format!("registered_capital > 5 AND city = a {SYNTAX_LITERAL}")),
        QueryRequest {
            filter_expr: Some(comparison(
                "registered_capital",
                CompareOp::Gt,
                value::Kind::StringValue(TREE_STRING.into()),
            )),
            ..query("")
        },
    ];
    for (req, literal) in refused.into_iter().zip([ID_NUMBER, SYNTAX_LITERAL, TREE_STRING]) {
        let status = app.query(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // The caller gets its own literal back (cut if long).
        assert!(status.message().contains(literal), "{}", status.message());
    }
    // Passing filters: every region's node and store see them.
    let mut trace_ids = Vec::new();
    for filter in [
        format!("registered_capital < {PASSING_NUMBER}"),
        format!("name != \"{PASSING_STRING}\" AND registered_capital > 1"),
    ] {
        let mut stream = app.query(query(&filter)).await.unwrap().into_inner();
        while let Some(m) = stream.next().await {
            if let Some(query_response::Kind::Summary(s)) = m.unwrap().kind {
                trace_ids.push(s.trace_id);
            }
        }
    }
    assert_eq!(trace_ids.len(), 2);

    // The node and store spans end after the stream: wait for them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, spans) = loop {
        let (text, spans) = every_span(admin).await;
        let stores = spans
            .iter()
            .filter(|s| s.name == "store.query" && trace_ids.contains(&s.trace_id))
            .count();
        if stores >= 8 || Instant::now() > deadline {
            break (text, spans);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let named = |n: &str| spans.iter().filter(|s| s.name == n).count();
    let refusals: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.name == "gateway.plan" && s.status == "error")
        .collect();
    println!(
        "/traces: {} bytes, {} spans ({} gateway.plan refusals, {} node.query, {} store.query); refusals say: {:?}",
        text.len(),
        spans.len(),
        refusals.len(),
        named("node.query"),
        named("store.query"),
        refusals.iter().map(|s| s.status_message.as_str()).collect::<Vec<_>>()
    );
    // Not a vacuous check: the refusals and every hop are there.
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .any(|s| s.status_message == "filter: field registered_capital is a number, but the value ? is not"),
        "{refusals:?}"
    );
    assert!(named("store.query") >= 8, "{} store spans", named("store.query"));
    for literal in [
        ID_NUMBER,
        "310101199001",
        SYNTAX_LITERAL,
        TREE_STRING,
        PASSING_NUMBER,
        PASSING_STRING,
    ] {
        assert!(!text.contains(literal), "{literal} is served by /traces");
    }

    // A hostile dataset name is recorded cut, and its refusal quotes none of it.
    let big = "d".repeat(BIG);
    let status = app
        .query(QueryRequest {
            dataset: big.clone(),
            ..query("")
        })
        .await
        .unwrap_err();
    assert!(status.message().len() < MAX_ERROR_BYTES, "{}", status.message().len());
    let (text, spans) = every_span(admin).await;
    let plan = spans
        .iter()
        .find(|s| s.name == "gateway.plan" && s.attributes.get("yrd.dataset").is_some_and(|d| d.starts_with("ddd")))
        .unwrap();
    let recorded = &plan.attributes["yrd.dataset"];
    println!(
        "a {BIG}-byte dataset name: recorded as {} bytes ({}), /traces now {} bytes, the caller's error {} bytes",
        recorded.len(),
        &recorded[recorded.len() - 20..],
        text.len(),
        status.message().len()
    );
    assert!(
        recorded.len() < 200 && recorded.ends_with("(3500000 bytes)"),
        "{recorded}"
    );
    assert!(!text.contains(&"d".repeat(200)));
}
