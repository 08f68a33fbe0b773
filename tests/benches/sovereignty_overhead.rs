//! What data sovereignty costs: query and aggregate throughput through the
//! gateway with each region's policy stage (a grant with a mask, a row
//! scope, a purpose, a rate and a row cap) and the audit trail (a durable
//! record at the gateway and at every node for each request, group
//! committed), as a ratio to an allow-all grant with no audit. Three meshes
//! run side by side in one process, over mutual TLS on real sockets, and
//! the phases alternate round by round so that machine noise falls on all.
//!
//! `cargo bench -p yrd-tests --bench sovereignty_overhead [-- ROUNDS QUERIES CLIENTS]`
//!
//! Here the five audit logs (four nodes and the gateway) share one disk, so
//! their syncs queue behind each other, where each agency's node has its
//! own. `YRD_BENCH_AUDIT_DIR=/dev/shm` puts them on a tmpfs, where a sync
//! costs nothing: the difference between the two runs is the disk's share.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

mod common;
#[path = "../e2e/harness.rs"]
mod harness;
#[path = "../e2e/mesh.rs"]
mod mesh;

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{AggregateFunction, AggregateRequest, Metric, RegionState};

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

/// Where the audited mesh writes its logs instead of its own folder, such
/// as `/dev/shm` (a tmpfs: syncs cost nothing, which isolates the CPU cost
/// from the disk's) or a second disk.
const AUDIT_DIR_ENV: &str = "YRD_BENCH_AUDIT_DIR";

/// This run's folder under `YRD_BENCH_AUDIT_DIR`.
fn audit_root() -> std::path::PathBuf {
    let base = std::env::var_os(AUDIT_DIR_ENV).unwrap_or_default();
    Path::new(&base).join(format!("yrd-bench-audit-{}", std::process::id()))
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
    if audited && std::env::var_os(AUDIT_DIR_ENV).is_some() {
        opts.adjust_node = Some(|i, c| {
            if let Some(a) = c.audit.as_mut() {
                a.dir = audit_root().join(format!("node-{i}"));
            }
        });
        opts.adjust_gateway = Some(|c| {
            if let Some(a) = c.audit.as_mut() {
                a.dir = audit_root().join("gateway");
            }
        });
    }
    if !audited {
        opts.adjust_node = Some(|_, c| c.audit = None);
        opts.adjust_gateway = Some(|c| c.audit = None);
    }
    Mesh::start_with(opts).await.0
}

/// A page of 100 rows, merged from the four regions on an order; every
/// region answers.
async fn one_query(app: &mut FederationClient<Channel>) -> usize {
    let (rows, summary) = common::one_query(app, common::page_query(PURPOSE)).await;
    let regions = summary.unwrap().regions;
    assert!(regions.iter().all(|r| r.state() == RegionState::Ok), "{regions:?}");
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

/// Runs `n` calls from `clients` concurrent clients (over the same
/// connection); returns the latency of each call and the total time.
async fn phase(
    app: &FederationClient<Channel>,
    workload: Workload,
    n: usize,
    clients: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let each = n.div_ceil(clients);
    let runs = (0..clients).map(|_| {
        let mut app = app.clone();
        async move {
            let mut out = Vec::with_capacity(each);
            for _ in 0..each {
                let t = Instant::now();
                match workload {
                    Workload::Query => assert_eq!(one_query(&mut app).await, 100),
                    Workload::Aggregate => assert!(one_aggregate(&mut app).await > 0),
                }
                out.push(t.elapsed());
            }
            out
        }
    });
    let out = futures::future::join_all(runs).await.concat();
    (out, start.elapsed())
}

/// CPU time used by this process (every mesh runs in it), from
/// `/proc/self/stat` (user + system, in USER_HZ = 100 ticks per second).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').take(13).map(|x| x.parse().unwrap_or(0)).collect();
    Duration::from_millis((f[11] + f[12]) * 10)
}

#[derive(Default)]
struct Figures {
    latencies: Vec<Duration>,
    time: Duration,
    /// CPU time of the process during the phases.
    cpu: Duration,
    /// Throughput of each round, for the spread.
    rounds: Vec<f64>,
}

impl Figures {
    fn add(&mut self, lat: Vec<Duration>, time: Duration, cpu: Duration) {
        self.cpu += cpu;
        self.rounds.push(lat.len() as f64 / time.as_secs_f64());
        self.latencies.extend(lat);
        self.time += time;
    }

    fn qps(&self) -> f64 {
        self.latencies.len() as f64 / self.time.as_secs_f64()
    }

    fn cpu_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.latencies.len() as f64
    }

    fn line(&mut self, name: &str, base: f64, base_cpu: f64) -> String {
        self.latencies.sort();
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        format!(
            "  {name}{:7.1} calls/s (rounds {:.1}..{:.1})  p50 {:>6.3} ms  p99 {:>6.3} ms  \
             CPU {:>6.0} us/call  ratios: throughput {:.3}, CPU {:.3}",
            self.qps(),
            r.first().copied().unwrap_or_default(),
            r.last().copied().unwrap_or_default(),
            common::ms(common::percentile(&self.latencies, 0.5)),
            common::ms(common::percentile(&self.latencies, 0.99)),
            self.cpu_per_call(),
            self.qps() / base,
            self.cpu_per_call() / base_cpu,
        )
    }
}

/// Bytes and lines in the audit logs under `dir`.
fn audit_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && (name.starts_with("audit-") || name.starts_with("node-") || name == "gateway") {
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
    let rounds = args.first().copied().unwrap_or(10);
    let per_phase = args.get(1).copied().unwrap_or(100);
    let concurrency = args.get(2).copied().unwrap_or(8);

    let mut meshes = Vec::new();
    for v in Variant::ALL {
        let mesh = start(v).await;
        let app = mesh.app("bench").await;
        // Warm-up: connections, statement caches, page cache.
        phase(&app, Workload::Query, 30, 1).await;
        phase(&app, Workload::Aggregate, 5, 1).await;
        meshes.push((v, mesh, app));
    }
    let audit_dir = |m: &Mesh| {
        if std::env::var_os(AUDIT_DIR_ENV).is_some() {
            audit_root()
        } else {
            m.dir.path().to_path_buf()
        }
    };
    let calls_before: Vec<(u64, u64)> = meshes.iter().map(|(_, m, _)| audit_size(&audit_dir(m))).collect();

    // Per variant: queries and aggregates, one client at a time (latency)
    // and `concurrency` clients (throughput, where group commit shares
    // each audit log's sync among the calls waiting for it).
    let mut results: Vec<[Figures; 4]> = Variant::ALL.iter().map(|_| Default::default()).collect();
    let aggregates = (per_phase / 10).max(5);
    for round in 0..rounds {
        // Rotate which variant goes first, so none always follows another.
        let mut order: Vec<usize> = (0..meshes.len()).collect();
        order.rotate_left(round % meshes.len());
        for i in order {
            let app = &meshes[i].2;
            for (k, (workload, n, clients)) in [
                (Workload::Query, per_phase, 1),
                (Workload::Aggregate, aggregates, 1),
                (Workload::Query, per_phase, concurrency),
                (Workload::Aggregate, aggregates, concurrency),
            ]
            .into_iter()
            .enumerate()
            {
                let cpu = cpu_time();
                let (lat, t) = phase(app, workload, n, clients).await;
                results[i][k].add(lat, t, cpu_time() - cpu);
            }
        }
    }

    println!(
        "sovereignty overhead: {rounds} rounds; per round and variant {per_phase} queries (page of 100 rows merged \
         from 4 regions) and {aggregates} aggregates (count and sum by industry over 4 regions), from one client \
         and from {concurrency}; mutual TLS, 2 cores"
    );
    let titles = [
        "queries, one client".to_owned(),
        "aggregates, one client".to_owned(),
        format!("queries, {concurrency} concurrent clients"),
        format!("aggregates, {concurrency} concurrent clients"),
    ];
    for (w, title) in titles.iter().enumerate() {
        println!(" {title}:");
        let (base, base_cpu) = (results[0][w].qps(), results[0][w].cpu_per_call());
        for (i, (v, _, _)) in meshes.iter().enumerate() {
            println!("{}", results[i][w].line(v.name(), base, base_cpu));
        }
    }
    let calls: u64 = results[2].iter().map(|f| f.latencies.len() as u64).sum();
    let (bytes0, lines0) = calls_before[2];
    let (bytes1, lines1) = audit_size(&audit_dir(&meshes[2].1));
    println!(
        "  audit written (gateway + 4 nodes, policy + audit): {} records, {:.0} bytes per call, {:.1} records per call",
        lines1 - lines0,
        (bytes1 - bytes0) as f64 / calls as f64,
        (lines1 - lines0) as f64 / calls as f64,
    );
    match std::env::var_os(AUDIT_DIR_ENV) {
        Some(_) => {
            println!("  audit logs under {} (YRD_BENCH_AUDIT_DIR)", audit_root().display());
            drop(meshes);
            let _ = std::fs::remove_dir_all(audit_root());
        }
        None => println!("  audit logs beside the stores, on the same disk as the other four logs"),
    }
}
