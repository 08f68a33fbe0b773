//! What data sovereignty costs: query and aggregate throughput through the
//! gateway with each region's policy stage (a grant with a mask, a row
//! scope, a purpose, a rate and a row cap) and the audit trail (a durable
//! record at the gateway and at every node for each request, group
//! committed), as a ratio to an allow-all grant with no audit. Three meshes
//! run side by side in one process, over mutual TLS on real sockets, and
//! the phases alternate round by round so that machine noise falls on all.
//!
//! `cargo bench -p yrd-tests --bench sovereignty_overhead [-- ROUNDS QUERIES]`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

#[path = "../e2e/harness.rs"]
mod harness;
#[path = "../e2e/mesh.rs"]
mod mesh;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::transport::Channel;
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{AggregateFunction, AggregateRequest, Metric, QueryRequest, RegionState, query_response};

use crate::mesh::{Mesh, MeshOptions};

const PURPOSE: &str = "market supervision";

/// Every field, unmasked beyond the defaults, every row, any purpose.
const ALLOW_ALL: &str = r#"
[[grant]]
id = "bench-all"
apps = ["bench"]
datasets = ["enterprise"]
fields = "*"
"#;

/// What an agency would write: a mask, a row scope ANDed around every
/// filter, a declared purpose, a rate and a row cap (both far above what
/// the benchmark uses, so that they are checked but never refuse).
const GOVERNED: &str = r#"
[[grant]]
id = "bench-governed"
apps = ["bench"]
datasets = ["enterprise"]
fields = "*"
masks = { representative_id_number = "keep(6,4)" }
row_scope = 'registered_capital >= 0'
purposes = ["market supervision"]
not_after = "2099-12-31"
rate_per_minute = 1000000
max_rows = 5000
"#;

#[derive(Clone, Copy)]
enum Variant {
    /// Allow-all grant, no audit anywhere.
    Baseline,
    /// The governed grant, no audit.
    Policy,
    /// The governed grant and the audit at the gateway and every node.
    Sovereign,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Baseline, Variant::Policy, Variant::Sovereign];

    fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "allow-all, no audit    ",
            Variant::Policy => "policy, no audit       ",
            Variant::Sovereign => "policy + audit         ",
        }
    }
}

async fn start(variant: Variant) -> Mesh {
    let text = match variant {
        Variant::Baseline => ALLOW_ALL,
        Variant::Policy | Variant::Sovereign => GOVERNED,
    };
    let audited = matches!(variant, Variant::Sovereign);
    let mut opts = MeshOptions {
        policies: (0..4).map(|i| (i, text.to_owned())).collect(),
        ..MeshOptions::default()
    };
    if !audited {
        opts.adjust_node = Some(|_, c| c.audit = None);
        opts.adjust_gateway = Some(|c| c.audit = None);
    }
    Mesh::start_with(opts).await.0
}

/// A page of 100 rows, merged from the four regions on an order.
async fn one_query(app: &mut FederationClient<Channel>) -> usize {
    let req = QueryRequest {
        dataset: "enterprise".into(),
        filter: "status = \"active\"".into(),
        order_by: "registered_capital desc".into(),
        page_size: 100,
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    let mut stream = app.query(req).await.unwrap().into_inner();
    let mut rows = 0;
    while let Some(m) = stream.next().await {
        match m.unwrap().kind {
            Some(query_response::Kind::Batch(b)) => rows += b.rows.len(),
            Some(query_response::Kind::Summary(s)) => {
                assert!(s.regions.iter().all(|r| r.state() == RegionState::Ok), "{:?}", s.regions);
            }
            None => {}
        }
    }
    rows
}

/// Count and total capital by industry, over every region.
async fn one_aggregate(app: &mut FederationClient<Channel>) -> usize {
    let req = AggregateRequest {
        dataset: "enterprise".into(),
        group_by: vec!["industry".into()],
        metrics: vec![
            Metric {
                function: AggregateFunction::Count as i32,
                field: String::new(),
            },
            Metric {
                function: AggregateFunction::Sum as i32,
                field: "registered_capital".into(),
            },
        ],
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    app.aggregate(req).await.unwrap().into_inner().groups.len()
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Query,
    Aggregate,
}

/// Runs `n` calls; returns the latency of each and the total time.
async fn phase(app: &mut FederationClient<Channel>, workload: Workload, n: usize) -> (Vec<Duration>, Duration) {
    let mut out = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        match workload {
            Workload::Query => assert_eq!(one_query(app).await, 100),
            Workload::Aggregate => assert!(one_aggregate(app).await > 0),
        }
        out.push(t.elapsed());
    }
    (out, start.elapsed())
}

#[derive(Default)]
struct Figures {
    latencies: Vec<Duration>,
    time: Duration,
    /// Throughput of each round, for the spread.
    rounds: Vec<f64>,
}

impl Figures {
    fn add(&mut self, lat: Vec<Duration>, time: Duration) {
        self.rounds.push(lat.len() as f64 / time.as_secs_f64());
        self.latencies.extend(lat);
        self.time += time;
    }

    fn qps(&self) -> f64 {
        self.latencies.len() as f64 / self.time.as_secs_f64()
    }

    fn line(&mut self, name: &str, base: f64) -> String {
        self.latencies.sort();
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        format!(
            "  {name}{:8.1} calls/s (rounds {:.1}..{:.1})   p50 {:>7.3} ms   p99 {:>7.3} ms   throughput ratio {:.3}",
            self.qps(),
            r.first().copied().unwrap_or_default(),
            r.last().copied().unwrap_or_default(),
            ms(percentile(&self.latencies, 0.5)),
            ms(percentile(&self.latencies, 0.99)),
            self.qps() / base,
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes and lines in the audit logs under `dir`.
fn audit_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && name.starts_with("audit-") {
            for f in std::fs::read_dir(&path).unwrap().flatten() {
                let text = std::fs::read(f.path()).unwrap();
                bytes += text.len() as u64;
                lines += text.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
    }
    (bytes, lines)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(6);
    let per_phase = args.get(1).copied().unwrap_or(200);

    let mut meshes = Vec::new();
    for v in Variant::ALL {
        let mesh = start(v).await;
        let mut app = mesh.app("bench").await;
        // Warm-up: connections, statement caches, page cache.
        phase(&mut app, Workload::Query, 30).await;
        phase(&mut app, Workload::Aggregate, 5).await;
        meshes.push((v, mesh, app));
    }
    let calls_before: Vec<(u64, u64)> = meshes.iter().map(|(_, m, _)| audit_size(m.dir.path())).collect();

    let mut results: Vec<[Figures; 2]> = Variant::ALL.iter().map(|_| Default::default()).collect();
    let aggregates = (per_phase / 10).max(5);
    for round in 0..rounds {
        // Rotate which variant goes first, so none always follows another.
        let mut order: Vec<usize> = (0..meshes.len()).collect();
        order.rotate_left(round % meshes.len());
        for i in order {
            let app = &mut meshes[i].2;
            let (lat, t) = phase(app, Workload::Query, per_phase).await;
            results[i][0].add(lat, t);
            let (lat, t) = phase(app, Workload::Aggregate, aggregates).await;
            results[i][1].add(lat, t);
        }
    }

    println!(
        "sovereignty overhead: {rounds} rounds; per round and variant {per_phase} queries (page of 100 rows merged \
         from 4 regions) and {aggregates} aggregates (count and sum by industry over 4 regions); mutual TLS, 2 cores"
    );
    for (w, title) in [(0, "queries"), (1, "aggregates")] {
        println!(" {title}:");
        let base = results[0][w].qps();
        for (i, (v, _, _)) in meshes.iter().enumerate() {
            println!("{}", results[i][w].line(v.name(), base));
        }
    }
    let calls = (rounds * (per_phase + aggregates)) as u64;
    let (bytes0, lines0) = calls_before[2];
    let (bytes1, lines1) = audit_size(meshes[2].1.dir.path());
    println!(
        "  audit written (gateway + 4 nodes, policy + audit): {} records, {:.0} bytes per call, {:.1} records per call",
        lines1 - lines0,
        (bytes1 - bytes0) as f64 / calls as f64,
        (lines1 - lines0) as f64 / calls as f64,
    );
}
