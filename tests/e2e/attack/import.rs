//! Attack tests: import (findings 6 and 7 of issue 10). A 200 MB field and
//! a million bad rows go through the real `yrd-node import`, run as its own
//! process so that its peak memory (`VmHWM` of `/proc/<pid>/status`) and its
//! stderr can be measured; a row too large to send, written into a store
//! around the import, is queried through a real mesh over mutual TLS.
//!
//! `YRD_ATTACK_NODE_BIN` names another `yrd-node` to run instead of this
//! build's, to measure an older build: the figures print before the checks.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use yrd_proto::mesh::{QueryRequest, RegionState};

use crate::gateway::fed_query;
use crate::mesh::{Mesh, MeshOptions, REGIONS};
use crate::node_import::{HEADER, valid_rows};

const JIANGSU: &str = "320000";
const MIB: u64 = 1024 * 1024;
/// The most memory an import may use, whatever the file (the goal: well
/// under 100 MB; the process itself takes some 10 MB).
const MAX_PEAK_RSS: u64 = 100 * MIB;
/// The most an import of any number of bad rows may print.
const MAX_STDERR: u64 = 64 * 1024;

/// The `yrd-node` binary: `YRD_ATTACK_NODE_BIN`, or this workspace's,
/// built by cargo first (a test run builds only this package's binaries).
fn node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("YRD_ATTACK_NODE_BIN") {
        return PathBuf::from(path);
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> → target/<profile>/yrd-node
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "yrd-node", "--bin", "yrd-node"])
            .env("CARGO_TARGET_DIR", dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building yrd-node failed");
    });
    dir.join("yrd-node")
}

/// What one `yrd-node import` did.
struct Import {
    status: ExitStatus,
    /// Peak resident memory, from `VmHWM`.
    peak_rss: u64,
    /// Bytes written to stderr.
    stderr_bytes: u64,
    /// The start of stderr.
    stderr_head: String,
    elapsed: Duration,
    /// Rows of the dataset in the store afterwards.
    rows_stored: i64,
}

/// Runs `yrd-node import --dataset enterprise <file>` for a Jiangsu node
/// with a new store in `dir`, sampling its peak memory as it runs.
fn import(dir: &Path, file: &Path) -> Import {
    let db = dir.join("node.sqlite");
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"{JIANGSU}\"\ninsecure = true\n[store]\npath = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let stderr_path = dir.join("stderr.txt");
    let started = Instant::now();
    let mut child = Command::new(node_binary())
        .arg("--config")
        .arg(&config)
        .args(["import", "--dataset", "enterprise"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // VmHWM only grows: the last reading before the process ends is its peak.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let stderr_bytes = std::fs::metadata(&stderr_path).unwrap().len();
    let mut head = Vec::new();
    File::open(&stderr_path)
        .unwrap()
        .take(MAX_STDERR)
        .read_to_end(&mut head)
        .unwrap();
    let rows_stored = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM ds_enterprise", [], |r| r.get(0)))
        .unwrap_or(-1);
    Import {
        status,
        peak_rss: peak_kib * 1024,
        stderr_bytes,
        stderr_head: String::from_utf8_lossy(&head).into_owned(),
        elapsed,
        rows_stored,
    }
}

impl Import {
    fn print(&self, what: &str) {
        println!(
            "{what}: exit {:?}, peak RSS {:.1} MiB, stderr {} bytes, {} rows stored, {:.1} s",
            self.status.code(),
            self.peak_rss as f64 / MIB as f64,
            self.stderr_bytes,
            self.rows_stored,
            self.elapsed.as_secs_f64()
        );
        let head: String = self.stderr_head.lines().take(4).collect::<Vec<_>>().join("\n");
        println!("{what}: stderr begins:\n{head}");
    }
}

#[test]
fn a_200_mb_field_is_refused_at_import_in_bounded_memory() {
    const FIELD: u64 = 200 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.csv");
    {
        // Streamed to disk: the test never holds the field itself.
        let mut f = BufWriter::new(File::create(&path).unwrap());
        writeln!(f, "{HEADER},address").unwrap();
        write!(f, "{},", valid_rows(1)[0]).unwrap();
        let chunk = vec![b'x'; MIB as usize];
        for _ in 0..FIELD / MIB {
            f.write_all(&chunk).unwrap();
        }
        writeln!(f).unwrap();
        f.flush().unwrap();
    }
    let run = import(dir.path(), &path);
    run.print("200 MB address");
    assert_eq!(run.status.code(), Some(1), "the import fails");
    assert!(
        run.stderr_head
            .contains("line 2: address: is 209715200 bytes long, more than its max_length of 500 characters"),
        "a clear error naming the field, its limit and the length: {}",
        run.stderr_head
    );
    assert!(!run.stderr_head.contains("xxxxxxxx"), "the value is never echoed");
    assert_eq!(run.rows_stored, 0, "nothing written");
    assert!(run.peak_rss < MAX_PEAK_RSS, "peak RSS {} MiB", run.peak_rss / MIB);
}

#[test]
fn a_million_bad_rows_are_imported_in_bounded_memory_with_bounded_output() {
    const BAD: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    {
        let mut f = BufWriter::new(File::create(&path).unwrap());
        writeln!(f, "{HEADER}").unwrap();
        // A Jiangsu row claiming Zhejiang, a million times: three
        // violations each (its city, its credit code, the node's region).
        let mut fields: Vec<String> = valid_rows(1)[0].split(',').map(str::to_owned).collect();
        fields[4] = "\"330000\"".into();
        let row = fields.join(",");
        for _ in 0..BAD {
            writeln!(f, "{row}").unwrap();
        }
        f.flush().unwrap();
    }
    println!(
        "input: {BAD} rows, {} MiB",
        std::fs::metadata(&path).unwrap().len() / MIB
    );
    let run = import(dir.path(), &path);
    run.print("1 M bad rows");
    assert_eq!(run.status.code(), Some(1), "the import fails");
    assert_eq!(run.rows_stored, 0, "all or nothing");
    let first = run.stderr_head.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("line 2: city: city ")
            && first.ends_with("region: \"330000\" is not this node's region 320000"),
        "{first}"
    );
    assert_eq!(run.stderr_head.lines().filter(|l| l.starts_with("line ")).count(), 100);
    assert!(run.stderr_head.contains("\nline 101: "), "{}", run.stderr_head);
    assert!(
        run.stderr_head.ends_with(
            "... and 999900 more rejected rows, not listed (import.max_rejections_shown = 100)\n\
             rejected rows by cause:\n  city: city_region: 1000000\n\
             \x20 credit_code: credit_code_region: 1000000\n  region: node_region: 1000000\n\
             1000000 rows rejected; nothing was imported\n"
        ),
        "{}",
        run.stderr_head
    );
    assert!(run.stderr_bytes < MAX_STDERR, "stderr of {} bytes", run.stderr_bytes);
    assert!(run.peak_rss < MAX_PEAK_RSS, "peak RSS {} MiB", run.peak_rss / MIB);
}

/// A policy granting the application `bulk` the (conditionally shared)
/// address of the enterprise register.
const ADDRESS_GRANT: &str = "[[grant]]\nid = \"bulk\"\napps = [\"bulk\"]\ndatasets = [\"enterprise\"]\n\
                             fields = [\"address\"]\n";

#[tokio::test]
async fn a_stored_row_too_large_to_send_fails_its_region_clearly() {
    const SH: usize = 0;
    const JS: usize = 1;
    let (mesh, _) = Mesh::start_with(MeshOptions {
        policies: vec![(SH, ADDRESS_GRANT.into()), (JS, ADDRESS_GRANT.into())],
        ..MeshOptions::default()
    })
    .await;
    // Written around the import, as an older build or a hand-edited store
    // could have: an 80 MB address, more than the gateway's 64 MiB message
    // limit, made by SQLite itself.
    let conn = mesh.sql(JS);
    let code: String = conn
        .query_row(
            "SELECT credit_code FROM ds_enterprise ORDER BY credit_code LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE ds_enterprise SET address = hex(zeroblob(40000000)) WHERE credit_code = ?",
        [&code],
    )
    .unwrap();
    drop(conn);

    let mut app = mesh.app("bulk").await;
    let started = Instant::now();
    let page = fed_query(
        &mut app,
        QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["credit_code".into(), "name".into(), "address".into()],
            order_by: "credit_code".into(),
            page_size: 50,
            regions: vec![REGIONS[SH].into(), REGIONS[JS].into()],
            ..Default::default()
        },
    )
    .await
    .expect("the page is answered; the failing region is named in it");
    let js = page.summary.regions.iter().find(|r| r.region == REGIONS[JS]).unwrap();
    let sh = page.summary.regions.iter().find(|r| r.region == REGIONS[SH]).unwrap();
    println!(
        "oversized stored row: {:.2} s; Jiangsu {:?}: {} ({}); Shanghai {:?}, {} rows",
        started.elapsed().as_secs_f64(),
        RegionState::try_from(js.state),
        js.message,
        js.reason,
        RegionState::try_from(sh.state),
        sh.rows
    );
    assert_eq!(RegionState::try_from(js.state), Ok(RegionState::Failed));
    assert_eq!(js.reason, "ROW_TOO_LARGE");
    assert!(
        js.message.contains(&format!("the row with credit_code = {code} holds"))
            && js.message.contains("query.max_batch_bytes = 4194304"),
        "the message names the row and the limit: {}",
        js.message
    );
    assert!(!js.message.contains("decoded message length"), "{}", js.message);
    assert!(
        !js.message.contains("000000000000"),
        "no value but the key: {}",
        js.message
    );
    assert_eq!(RegionState::try_from(sh.state), Ok(RegionState::Ok));
    let rows: usize = page.batches.iter().map(|b| b.rows.len()).sum();
    assert_eq!(rows, 50, "the other region still fills the page");
}
