//! The log against real files: durability, group commit under concurrency,
//! rotation, reopening, recovery, and every kind of tampering the verifier
//! must name.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use yrd_identity::{Ca, IssueRequest, PeerId, Signer, issue_in_memory};

use crate::format::{GENESIS, chain_hash, hex, log_files, unhex};
use crate::*;

const SOURCE: &str = "spiffe://yrd.mesh/region/310000/node/sh-1";

fn node_signer(ca: &Ca) -> Signer {
    let id = PeerId::node("yrd.mesh", "310000", "sh-1").unwrap();
    let (cert, key) = issue_in_memory(ca, &IssueRequest::new(id)).unwrap();
    Signer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
}

/// A signed log in a temporary directory, and its CA.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca: Ca,
    config: AuditConfig,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let config = AuditConfig::in_dir(&dir);
        Self {
            _tmp: tmp,
            dir,
            ca: Ca::generate("yrd.mesh").unwrap(),
            config,
        }
    }

    fn rotating(max_file_bytes: u64, checkpoint_every: u64) -> Self {
        let mut f = Self::new();
        f.config.max_file_bytes = max_file_bytes;
        f.config.checkpoint_every = checkpoint_every;
        f
    }

    fn open(&self) -> AuditLog {
        AuditLog::open(&self.config, SOURCE, Some(node_signer(&self.ca))).unwrap()
    }

    fn verify(&self) -> Result<Report, AuditError> {
        verify(std::slice::from_ref(&self.dir), Some(self.ca.cert_pem().as_bytes()))
    }

    fn files(&self) -> Vec<PathBuf> {
        log_files(&self.dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }
}

fn entry(i: u64) -> Entry {
    let mut e = Entry::new(
        "query",
        if i.is_multiple_of(3) {
            Decision::Deny
        } else {
            Decision::Allow
        },
    );
    e.caller = Some("spiffe://yrd.mesh/gateway/gw-1".into());
    e.subject = Some(format!(
        "spiffe://yrd.mesh/app/{}",
        if i.is_multiple_of(2) { "dashboard" } else { "analyst" }
    ));
    e.purpose = Some("supervision".into());
    e.region = Some("310000".into());
    e.dataset = Some(
        if i.is_multiple_of(4) {
            "air_quality"
        } else {
            "enterprise"
        }
        .into(),
    );
    e.filter = Some(format!("registered_capital > {i}"));
    e.fields = vec!["name".into(), "legal_representative".into()];
    e.rule = Some("grant-7".into());
    e.rows = Some(i);
    e.masked = vec!["legal_representative".into()];
    e.trace_id = Some(format!("{i:032x}"));
    e.detail = Some(serde_json::json!({ "n": i }));
    e
}

async fn fill(log: &AuditLog, n: u64) -> Vec<RecordId> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(log.append(entry(i)).await.unwrap());
    }
    ids
}

/// The stored lines of a file.
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

/// The first bad record the verifier names: (file, line, seq, reason).
fn first_bad(f: &Fixture) -> (PathBuf, u64, Option<u64>, String) {
    match f.verify() {
        Err(AuditError::BadRecord {
            file,
            line,
            seq,
            reason,
        }) => (file, line, seq, reason),
        other => panic!("the tampering went unnoticed: {other:?}"),
    }
}

/// Rewrites the log as an editor who knows the format would: `edit`
/// changes records (as JSON values), and every line from the first change
/// on gets a consistent `prev` and hash again. Lines before it stay as
/// they were, byte for byte.
fn rechain(f: &Fixture, mut edit: impl FnMut(&mut serde_json::Value)) {
    let mut prev = GENESIS;
    let mut changed = false;
    for file in f.files() {
        let mut out = Vec::new();
        for line in lines(&file) {
            let (_, json) = line.split_once(' ').unwrap();
            let original: serde_json::Value = serde_json::from_str(json).unwrap();
            let mut value = original.clone();
            value["prev"] = hex(&prev).into();
            edit(&mut value);
            changed |= value != original;
            if !changed {
                out.push(line.clone());
                prev = unhex(&line[..64]).unwrap();
                continue;
            }
            let json = serde_json::to_string(&value).unwrap();
            let hash = chain_hash(&prev, json.as_bytes());
            out.push(format!("{} {json}", hex(&hash)));
            prev = hash;
        }
        write_lines(&file, &out);
    }
}

#[tokio::test]
async fn a_record_is_in_the_file_when_append_resolves() {
    let f = Fixture::new();
    let log = f.open();
    let id = log.append(entry(1)).await.unwrap();
    assert_eq!(id.to_string(), "node-310000-sh-1-1");
    // Read while the log is open: nothing is buffered after the answer.
    let files = f.files();
    assert_eq!(files.len(), 1);
    let stored = lines(&files[0]);
    assert_eq!(stored.len(), 1);
    let (hash, record) = parse_line(&stored[0]).unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!((record.seq, record.source.as_str()), (1, SOURCE));
    assert_eq!(record.prev, hex(&GENESIS));
    assert_eq!(record.entry, entry(1));
    assert!(stored[0].contains(r#""decision":"allow""#), "{}", stored[0]);
    log.close().await.unwrap();
    assert!(matches!(log.append(entry(2)).await, Err(AuditError::Closed)));
    // The close wrote a signed checkpoint covering the record.
    let stored = lines(&files[0]);
    let (_, checkpoint) = parse_line(&stored[1]).unwrap();
    assert_eq!(checkpoint.entry.kind, "checkpoint");
    let cp = checkpoint.checkpoint.unwrap();
    assert_eq!((cp.seq, cp.hash), (1, hash));
    let report = f.verify().unwrap();
    assert_eq!(
        (report.records, report.checkpoints, report.signed_checkpoints),
        (2, 1, 1)
    );
    assert_eq!((report.chain_only, report.last_seq), (0, 2));
    assert_eq!(report.signers, [SOURCE]);
}

#[tokio::test]
async fn deferred_appends_are_written_at_once_and_synced_later() {
    let f = Fixture::new();
    let log = f.open();
    // One by one, durable appends cost a sync each.
    let start = log.syncs();
    for i in 1..=10 {
        log.append(entry(i)).await.unwrap();
    }
    assert_eq!(log.syncs() - start, 10);
    // Deferred ones are in the file when they resolve, without a sync of
    // their own (the timer syncs at most every DEFERRED_SYNC).
    let start = log.syncs();
    let began = std::time::Instant::now();
    for i in 11..=30 {
        let id = log.append_deferred(entry(i)).await.unwrap();
        assert_eq!(id.seq, i);
        assert_eq!(lines(&f.files()[0]).len() as u64, i, "written when resolved");
    }
    let timer_syncs = began.elapsed().as_millis() / DEFERRED_SYNC.as_millis() + 1;
    assert!(
        u128::from(log.syncs() - start) <= timer_syncs,
        "{} syncs for 20 deferred appends in {:?}",
        log.syncs() - start,
        began.elapsed()
    );
    // A durable append syncs whatever was deferred before it, in order.
    let id = log.append(entry(31)).await.unwrap();
    assert_eq!(id.seq, 31);
    // Left alone, a deferred record is synced by the timer, once.
    let before = log.syncs();
    log.append_deferred(entry(32)).await.unwrap();
    tokio::time::sleep(DEFERRED_SYNC * 5).await;
    assert_eq!(log.syncs(), before + 1);
    log.close().await.unwrap();
    let report = f.verify().unwrap();
    assert_eq!((report.last_seq, report.chain_only), (33, 0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_every_seq_once_in_order() {
    let f = Fixture::rotating(64 * 1024, 100);
    let log = f.open();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..20u64 {
                    let id = log.append(entry(t * 1000 + i)).await.unwrap();
                    got.push((id.seq, t * 1000 + i));
                }
                got
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        // One appender's records come in the order it appended them.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
        acked.extend(got);
    }
    acked.sort();
    acked.dedup_by_key(|a| a.0);
    assert_eq!(acked.len(), 64 * 20, "a seq was handed out twice");
    log.close().await.unwrap();
    // Every acknowledged seq holds the record that was appended for it, and
    // the other seqs are checkpoints.
    let records: Vec<Record> = read(&f.dir, &Filter::default())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert!(records.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    for (seq, n) in &acked {
        assert_eq!(
            records[*seq as usize - 1].entry.detail,
            Some(serde_json::json!({ "n": n }))
        );
    }
    let checkpoints = records.iter().filter(|r| r.entry.kind == "checkpoint").count();
    assert_eq!(records.len(), 64 * 20 + checkpoints);
    assert!(checkpoints >= 12, "one per 100 records at least: {checkpoints}");
    f.verify().unwrap();
}

#[tokio::test]
async fn rotation_keeps_the_chain_across_files() {
    let f = Fixture::rotating(4096, 1000);
    let log = f.open();
    fill(&log, 60).await;
    log.close().await.unwrap();
    let files = f.files();
    assert!(files.len() >= 3, "{files:?}");
    for (i, file) in files.iter().enumerate() {
        let size = fs::metadata(file).unwrap().len();
        assert!(size <= 4096, "{} has {size} bytes", file.display());
        let stored = lines(file);
        let (_, first) = parse_line(&stored[0]).unwrap();
        assert_eq!(file.file_name().unwrap().to_str().unwrap(), file_name(first.seq));
        // Each file ends with a checkpoint (rotation, or the close).
        let (_, last) = parse_line(stored.last().unwrap()).unwrap();
        assert_eq!(last.entry.kind, "checkpoint", "file {i}");
        if i > 0 {
            let before = lines(&files[i - 1]);
            let (hash, _) = parse_line(before.last().unwrap()).unwrap();
            assert_eq!(first.prev, hash, "file {i} does not chain to the one before");
        }
    }
    let report = f.verify().unwrap();
    assert_eq!(report.files.len(), files.len());
    assert_eq!(report.checkpoints, files.len() as u64);
    assert_eq!(report.records, 60 + files.len() as u64);
    assert_eq!(report.chain_only, 0);
    assert!(report.to_string().contains("ends with a signed checkpoint"), "{report}");
}

/// A closed signed log of 3+ files, checkpoints every 10 records.
async fn rotated() -> Fixture {
    let f = Fixture::rotating(16 * 1024, 10);
    let log = f.open();
    fill(&log, 60).await;
    log.close().await.unwrap();
    assert!(f.files().len() >= 3);
    f.verify().unwrap();
    f
}

#[tokio::test]
async fn an_edited_byte_is_named() {
    let f = rotated().await;
    let file = &f.files()[1];
    let mut stored = lines(file);
    let at = (3..stored.len()).find(|&i| stored[i].contains("supervision")).unwrap();
    stored[at] = stored[at].replacen("supervision", "supervisiom", 1);
    write_lines(file, &stored);
    let (bad_file, line, seq, reason) = first_bad(&f);
    let (_, record) = parse_line(&stored[at]).unwrap();
    assert_eq!((&bad_file, line, seq), (file, at as u64 + 1, Some(record.seq)));
    assert!(reason.contains("edited"), "{reason}");
    // The error prints as file:line: seq: reason.
    let text = f.verify().unwrap_err().to_string();
    assert!(
        text.starts_with(&format!("{}:{}: seq {}: ", file.display(), at + 1, record.seq)),
        "{text}"
    );
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let f = rotated().await;
    let file = &f.files()[0];
    let mut stored = lines(file);
    stored.remove(4);
    write_lines(file, &stored);
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (file, 5, Some(6)));
    assert!(reason.contains("records 5..=5 are missing"), "{reason}");
}

#[tokio::test]
async fn an_inserted_copy_is_named() {
    let f = rotated().await;
    let file = &f.files()[0];
    let mut stored = lines(file);
    let copy = stored[2].clone();
    stored.insert(3, copy);
    write_lines(file, &stored);
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (file, 4, Some(3)));
    assert!(reason.contains("inserted"), "{reason}");
}

#[tokio::test]
async fn swapped_records_are_named() {
    let f = rotated().await;
    let file = &f.files()[0];
    let mut stored = lines(file);
    stored.swap(5, 6);
    write_lines(file, &stored);
    let (bad_file, line, seq, _) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (file, 6, Some(7)));
}

#[tokio::test]
async fn a_cut_mid_line_is_named() {
    let f = rotated().await;
    let files = f.files();
    let last = files.last().unwrap();
    let text = fs::read(last).unwrap();
    let n = lines(last).len();
    fs::write(last, &text[..text.len() - 40]).unwrap();
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (last, n as u64, None));
    assert!(reason.contains("cut mid-record"), "{reason}");
}

#[tokio::test]
async fn a_file_missing_from_the_middle_is_named() {
    let f = rotated().await;
    let files = f.files();
    fs::remove_file(&files[1]).unwrap();
    let (_, missing_first) = parse_line(&lines(&files[2])[0]).unwrap();
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (&files[2], 1, Some(missing_first.seq)));
    assert!(reason.contains("a file is missing"), "{reason}");
}

#[tokio::test]
async fn a_recomputed_chain_is_caught_by_the_signed_checkpoint() {
    // The editor changes record 5 and recomputes every hash after it, but
    // cannot sign: the checkpoint's covered hash no longer matches.
    let f = rotated().await;
    rechain(&f, |v| {
        if v["seq"] == 5 {
            v["rows"] = 999_999.into();
        }
    });
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (&f.files()[0], 11, Some(11)), "{reason}");
    assert!(reason.contains("records 1..=10 were altered"), "{reason}");

    // An editor who also rewrites the covered hash meets the signature.
    let f = rotated().await;
    rechain(&f, |v| {
        if v["seq"] == 5 {
            v["rows"] = 999_999.into();
        }
        if v["kind"] == "checkpoint" {
            v["checkpoint"]["hash"] = v["prev"].clone();
        }
    });
    let (bad_file, line, seq, reason) = first_bad(&f);
    assert_eq!((&bad_file, line, seq), (&f.files()[0], 11, Some(11)), "{reason}");
    assert!(reason.contains("signature does not verify"), "{reason}");
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_named() {
    let f = rotated().await;
    let mut checkpoints = 0;
    let mut forged = 0;
    rechain(&f, |v| {
        if v["kind"] == "checkpoint" {
            checkpoints += 1;
        }
        if v["kind"] == "checkpoint" && checkpoints == 2 {
            forged = v["seq"].as_u64().unwrap();
            let mut sig = BASE64.decode(v["checkpoint"]["signature"].as_str().unwrap()).unwrap();
            let last = sig.len() - 1;
            sig[last] ^= 1;
            v["checkpoint"]["signature"] = BASE64.encode(sig).into();
        }
    });
    let (_, _, seq, reason) = first_bad(&f);
    assert!(forged > 11);
    assert_eq!(seq, Some(forged));
    assert!(reason.contains("signature does not verify"), "{reason}");
}

#[tokio::test]
async fn a_checkpoint_signed_under_another_ca_is_refused_with_the_ca() {
    // An editor with a CA of their own issues the node's identity again and
    // signs a recomputed chain: only the mesh CA tells it apart.
    let f = rotated().await;
    let rogue = node_signer(&Ca::generate("yrd.mesh").unwrap());
    let source = SOURCE.to_owned();
    rechain(&f, |v| {
        if v["seq"] == 5 {
            v["rows"] = 1.into();
        }
        if v["kind"] == "checkpoint" {
            v["checkpoint"]["hash"] = v["prev"].clone();
            let seq = v["checkpoint"]["seq"].as_u64().unwrap();
            let hash = v["checkpoint"]["hash"].as_str().unwrap().to_owned();
            let sig = rogue.sign(&checkpoint_message(&source, seq, &hash)).unwrap();
            v["checkpoint"]["cert"] = BASE64.encode(rogue.cert_der()).into();
            v["checkpoint"]["signature"] = BASE64.encode(sig).into();
        }
    });
    let report = verify(std::slice::from_ref(&f.dir), None).unwrap();
    assert!(!report.ca_checked);
    assert!(report.to_string().contains("NOT checked against a CA"), "{report}");
    let (_, line, seq, reason) = first_bad(&f);
    assert_eq!((line, seq), (11, Some(11)));
    assert!(reason.contains("not issued by the given CA"), "{reason}");
}

#[tokio::test]
async fn an_unsigned_log_verifies_and_says_so() {
    let f = Fixture::rotating(4096, 10);
    let log = AuditLog::open(&f.config, SOURCE, None).unwrap();
    fill(&log, 25).await;
    log.close().await.unwrap();
    let report = f.verify().unwrap();
    assert_eq!((report.signed_checkpoints, report.last_signed_seq), (0, None));
    assert_eq!(report.chain_only, report.last_seq);
    assert!(report.checkpoints >= 3);
    assert!(report.to_string().contains("no checkpoint is signed"), "{report}");
}

#[tokio::test]
async fn the_tail_after_the_last_checkpoint_is_reported() {
    let f = Fixture::rotating(1 << 20, 10);
    let log = f.open();
    fill(&log, 13).await;
    // Not closed: a crash now leaves three records covered by the chain only.
    let report = f.verify().unwrap();
    assert_eq!(
        (report.last_signed_seq, report.last_seq, report.chain_only),
        (Some(11), 14, 3)
    );
    assert!(
        report
            .to_string()
            .contains("3 record(s) after the last signed checkpoint"),
        "{report}"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn reopening_continues_seq_and_chain() {
    let f = Fixture::rotating(16 * 1024, 10);
    let log = f.open();
    fill(&log, 30).await;
    log.close().await.unwrap();
    let before = f.files().len();
    let last = read(&f.dir, &Filter::default()).unwrap().last().unwrap().unwrap().1;
    assert_eq!(last.entry.kind, "checkpoint");
    let log = f.open();
    let id = log.append(entry(31)).await.unwrap();
    // Right after the closing checkpoint: no recovery record after a clean close.
    assert_eq!(id.seq, last.seq + 1);
    fill(&log, 20).await;
    log.close().await.unwrap();
    assert!(f.files().len() > before);
    let report = f.verify().unwrap();
    assert_eq!(report.chain_only, 0);
    let kinds: Vec<String> = read(&f.dir, &Filter::default())
        .unwrap()
        .map(|r| r.unwrap().1.entry.kind.into_owned())
        .collect();
    assert!(!kinds.contains(&"recovery".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn a_torn_last_line_is_cut_and_recorded() {
    let f = Fixture::new();
    let log = f.open();
    fill(&log, 5).await;
    log.close().await.unwrap();
    let file = f.files()[0].clone();
    let whole = fs::read(&file).unwrap();
    let torn = br#"0123abcd {"seq":7,"time":"2026-"#;
    fs::write(&file, [whole.as_slice(), torn].concat()).unwrap();
    assert!(f.verify().is_err(), "a torn line does not verify");
    let log = f.open();
    let now = fs::read(&file).unwrap();
    assert_eq!(&now[..whole.len()], whole.as_slice(), "the records before stay");
    assert!(
        lines(&file)[whole.iter().filter(|&&b| b == b'\n').count()].contains(r#""kind":"recovery""#),
        "the torn bytes are cut off"
    );
    let id = log.append(entry(6)).await.unwrap();
    log.close().await.unwrap();
    let records: Vec<Record> = read(&f.dir, &Filter::default())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    let recovery = &records[6];
    assert_eq!((recovery.seq, recovery.entry.kind.as_ref()), (7, "recovery"));
    assert_eq!(recovery.entry.reason.as_deref(), Some("torn_line"));
    assert_eq!(recovery.entry.detail.as_ref().unwrap()["cut_bytes"], torn.len());
    assert_eq!(id.seq, 8);
    f.verify().unwrap();
}

#[tokio::test]
async fn an_unclean_stop_is_recorded_on_reopen() {
    // What a crash after three acknowledged appends leaves: their records,
    // no closing checkpoint.
    let f = Fixture::new();
    let log = f.open();
    fill(&log, 3).await;
    log.close().await.unwrap();
    let file = f.files()[0].clone();
    let stored = lines(&file);
    write_lines(&file, &stored[..3]);
    let log = f.open();
    log.close().await.unwrap();
    let records: Vec<Record> = read(&f.dir, &Filter::default())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(records[3].entry.kind, "recovery");
    assert_eq!(records[3].entry.reason.as_deref(), Some("unclean_stop"));
    assert_eq!(records[4].entry.kind, "checkpoint");
    f.verify().unwrap();
}

#[tokio::test]
async fn an_inconsistent_log_refuses_to_open() {
    let f = Fixture::new();
    let log = f.open();
    fill(&log, 5).await;
    log.close().await.unwrap();
    let file = f.files()[0].clone();
    let mut stored = lines(&file);
    stored[2] = stored[2].replacen("supervision", "supervisiom", 1);
    write_lines(&file, &stored);
    let err = AuditLog::open(&f.config, SOURCE, Some(node_signer(&f.ca))).unwrap_err();
    let AuditError::BadRecord { file: bad, line, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((bad, *line), (&file, 3));
}

#[tokio::test]
async fn a_failed_write_fails_every_later_append() {
    let f = Fixture::rotating(4096, 1000);
    fs::create_dir_all(&f.dir).unwrap();
    // Every file name a rotation could pick is taken: the first rotation
    // fails to create its file.
    for seq in 2..200 {
        fs::create_dir(f.dir.join(file_name(seq))).unwrap();
    }
    let log = f.open();
    let mut acked = 0;
    let err = loop {
        match log.append(entry(acked + 1)).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 200, "rotation never failed");
    };
    assert!(matches!(err, AuditError::Io { .. }), "{err:?}");
    assert!(acked >= 2, "{acked}");
    let later = log.append(entry(1)).await.unwrap_err();
    assert!(matches!(later, AuditError::Failed(_)), "{later:?}");
    let status = tonic::Status::from(later);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        !status.message().contains("audit-"),
        "no file names cross: {}",
        status.message()
    );
    // Every acknowledged record is in the file.
    let file = f.dir.join(file_name(1));
    let seqs: Vec<u64> = lines(&file).iter().map(|l| parse_line(l).unwrap().1.seq).collect();
    assert!(seqs.len() as u64 >= acked);
}

#[tokio::test]
async fn checkpoints_fall_due_by_count_and_by_time() {
    let mut f = Fixture::rotating(1 << 20, 4);
    f.config.checkpoint_interval = Duration::from_millis(50);
    let log = f.open();
    fill(&log, 9).await;
    let count = |f: &Fixture| {
        read(&f.dir, &Filter::default())
            .unwrap()
            .filter(|r| r.as_ref().unwrap().1.entry.kind == "checkpoint")
            .count()
    };
    assert!(count(&f) >= 2);
    // The ninth record is covered within the interval, with no append after it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.verify().unwrap().chain_only > 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint after the interval");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn records_are_read_back_filtered() {
    let f = Fixture::rotating(4096, 7);
    let log = f.open();
    fill(&log, 40).await;
    log.close().await.unwrap();
    let all = |filter: Filter| -> Vec<Record> { read(&f.dir, &filter).unwrap().map(|r| r.unwrap().1).collect() };
    let everything = all(Filter::default());
    assert!(everything.iter().any(|r| r.entry.kind == "checkpoint"));
    let dashboard = all(Filter {
        subject: Some("dashboard".into()),
        ..Filter::default()
    });
    assert_eq!(dashboard.len(), 20);
    assert!(
        dashboard
            .iter()
            .all(|r| r.entry.subject.as_deref() == Some("spiffe://yrd.mesh/app/dashboard"))
    );
    let by_uri = all(Filter {
        subject: Some("spiffe://yrd.mesh/app/analyst".into()),
        dataset: Some("enterprise".into()),
        decision: Some(Decision::Deny),
        ..Filter::default()
    });
    // Odd i (analyst), i.is_multiple_of(3) (deny), i % 4 != 0 (enterprise): 3, 9, ..., 39.
    assert_eq!(
        by_uri.iter().map(|r| r.entry.rows.unwrap()).collect::<Vec<_>>(),
        [3, 9, 15, 21, 27, 33, 39]
    );
    let limited = all(Filter {
        limit: Some(5),
        ..Filter::default()
    });
    assert_eq!(limited.len(), 5);
    let first_time = parse_time(&everything[10].time);
    let since = all(Filter {
        since: first_time.map(Into::into),
        ..Filter::default()
    });
    assert!(since.len() >= everything.len() - 10 && since.len() < everything.len() + 1);
    let none = all(Filter {
        until: Some(std::time::UNIX_EPOCH),
        ..Filter::default()
    });
    assert!(none.is_empty());
    // The lines come back as stored, so a reader can verify them as a file.
    let (line, _) = read(&f.dir, &Filter::default()).unwrap().next().unwrap().unwrap();
    assert_eq!(line, lines(&f.files()[0])[0]);
    assert!(unhex(&line[..64]).is_some());
}

#[tokio::test]
async fn a_disabled_log_records_nothing() {
    let log = AuditLog::disabled();
    assert!(!log.is_enabled());
    assert_eq!(log.append(entry(1)).await.unwrap().seq, 0);
    log.close().await.unwrap();
}

#[test]
fn a_signer_of_another_identity_is_refused() {
    let f = Fixture::new();
    let err = AuditLog::open(&f.config, "spiffe://yrd.mesh/gateway/gw-1", Some(node_signer(&f.ca))).unwrap_err();
    assert!(err.to_string().contains("not the log's source"), "{err}");
}

use crate::format::parse_time;
