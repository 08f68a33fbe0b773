//! The writer: [`AuditLog`] hands entries to a dedicated thread over a
//! bounded channel; the thread writes whatever is queued, syncs once, and
//! only then answers each appender (group commit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use yrd_identity::{PeerId, Signer};

use crate::config::AuditConfig;
use crate::error::AuditError;
use crate::format::{
    GENESIS, Hash, Line, Lines, MAX_LINE_BYTES, chain_hash, checkpoint_message, file_name, hex, log_files, now_text,
};
use crate::record::{CHECKPOINT, Checkpoint, Decision, Entry, RECOVERY, RecordId};
use crate::verify::Chain;

/// The name of the writer thread.
const THREAD_NAME: &str = "yrd-audit-writer";

/// The name of a log whose source is not a mesh identity.
const DEFAULT_LOG_NAME: &str = "audit";

/// Most appends written under one sync: the queue bounds it anyway, this
/// keeps one slow sync from holding a very long batch's answers.
const MAX_BATCH: usize = 4096;

/// Longest a record appended with [`AuditLog::append_deferred`] stays
/// written but unsynced when no durable append comes to sync it.
pub const DEFERRED_SYNC: Duration = Duration::from_millis(100);

/// An audit log. Cheap to clone; every clone writes to the same log.
#[derive(Clone, Debug)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

/// What the clones share.
#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    name: Arc<str>,
    /// Set by the writer when a write or sync failed, so that appends fail
    /// at once instead of queuing.
    failed: Arc<OnceLock<String>>,
    /// Syncs of the log's files so far.
    syncs: Arc<AtomicU64>,
}

/// A request to the writer thread.
enum Msg {
    /// Append an entry; answer when durable (`true`) or when written
    /// (`false`, synced within [`DEFERRED_SYNC`]).
    Append(Box<Entry>, oneshot::Sender<Result<RecordId, AuditError>>, bool),
    /// Write a final checkpoint and stop.
    Close(oneshot::Sender<Result<(), AuditError>>),
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir` and starts its writer
    /// thread. `source` is the writer's SPIFFE URI; with a `signer` (whose
    /// identity must be `source`) checkpoints are signed.
    ///
    /// Blocking: it reads the last file to continue its chain, so call it
    /// at start, before serving, or on a blocking thread. A torn last line
    /// is cut off and a `recovery` record written; any other inconsistency
    /// refuses to open, naming the file and line.
    pub fn open(config: &AuditConfig, source: &str, signer: Option<Signer>) -> Result<AuditLog, AuditError> {
        config.validate()?;
        if source.is_empty() {
            return Err(AuditError::Config {
                key: "source",
                reason: "the writer's identity is empty".into(),
            });
        }
        if let Some(signer) = &signer
            && signer.id().uri() != source
        {
            return Err(AuditError::Signer(format!(
                "the signer is {}, not the log's source {source}",
                signer.id().uri()
            )));
        }
        let name: Arc<str> = PeerId::parse(source)
            .map(|id| id.file_stem())
            .unwrap_or_else(|_| DEFAULT_LOG_NAME.to_owned())
            .into();
        let writer = Writer::open(config, source, signer)?;
        let syncs = Arc::clone(&writer.syncs);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| AuditError::io(&config.dir, &e))?;
        let (tx, rx) = mpsc::channel(config.queue);
        let failed = Arc::new(OnceLock::new());
        let thread_failed = Arc::clone(&failed);
        let thread_name = Arc::clone(&name);
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || writer.run(&runtime, rx, &thread_name, &thread_failed))
            .map_err(|e| AuditError::io(&config.dir, &e))?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                tx,
                name,
                failed,
                syncs,
            })),
        })
    }

    /// How many times the log's files were synced (0 when disabled).
    pub fn syncs(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.syncs.load(Ordering::Relaxed))
    }

    /// A log that records nothing: appends succeed with a record id of seq 0.
    pub fn disabled() -> AuditLog {
        AuditLog { inner: None }
    }

    /// Whether this log writes records (not [`AuditLog::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Appends a record; resolves once it is written and synced to disk.
    /// Waits while the queue is full. After a failed write or sync, or
    /// after [`AuditLog::close`], every append fails: the caller then fails
    /// its request.
    pub async fn append(&self, entry: Entry) -> Result<RecordId, AuditError> {
        self.send(entry, true).await
    }

    /// Appends a record that need not be durable before the caller goes
    /// on, such as the `query.end` that follows a request's durable record:
    /// resolves once it is written to the file (in the page cache), and it
    /// is synced with the next durable append, or within
    /// [`DEFERRED_SYNC`], at the next checkpoint, and at
    /// [`AuditLog::close`]. A process crash loses nothing; a power loss may
    /// lose the deferred records of the last [`DEFERRED_SYNC`], never a
    /// durable one and never the chain (a torn tail is recovered at
    /// reopening). On a machine whose disk is shared by several logs this
    /// halves the syncs of a query.
    pub async fn append_deferred(&self, entry: Entry) -> Result<RecordId, AuditError> {
        self.send(entry, false).await
    }

    async fn send(&self, entry: Entry, durable: bool) -> Result<RecordId, AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(RecordId {
                log: Arc::from("disabled"),
                seq: 0,
            });
        };
        if let Some(reason) = inner.failed.get() {
            return Err(AuditError::Failed(reason.clone()));
        }
        let (tx, rx) = oneshot::channel();
        inner
            .tx
            .send(Msg::Append(Box::new(entry), tx, durable))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| stopped(inner))?
    }

    /// Writes a final checkpoint (when records were added since the last
    /// one) and stops the writer; later appends fail with
    /// [`AuditError::Closed`]. Closing a closed or disabled log does nothing.
    pub async fn close(&self) -> Result<(), AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        if inner.tx.send(Msg::Close(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// The log's name, the first part of its record ids.
    pub fn name(&self) -> &str {
        self.inner.as_ref().map_or("disabled", |i| &i.name)
    }
}

/// The error of an append whose answer never came: the writer stopped.
fn stopped(inner: &Inner) -> AuditError {
    match inner.failed.get() {
        Some(reason) => AuditError::Failed(reason.clone()),
        None => AuditError::Closed,
    }
}

/// A record as written: the writer's keys, then the entry's.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    time: &'a str,
    source: &'a str,
    prev: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a Checkpoint>,
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    source: String,
    signer: Option<Signer>,
    max_file_bytes: u64,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    /// The active file and its path.
    file: File,
    path: PathBuf,
    /// Bytes in the active file, written or buffered.
    file_bytes: u64,
    /// Records in the active file.
    file_records: u64,
    /// Room kept at the end of a file for the checkpoint that closes it.
    reserve: u64,
    next_seq: u64,
    prev: Hash,
    /// Records since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint_at: Instant,
    /// Lines buffered, not yet written.
    buf: Vec<u8>,
    /// Since when lines written to the file wait for a sync.
    unsynced: Option<Instant>,
    /// Syncs so far (shared with the handles).
    syncs: Arc<AtomicU64>,
}

/// What reopening found in the last file.
struct Found {
    next_seq: u64,
    prev: Hash,
    since_checkpoint: u64,
    last_is_checkpoint: bool,
    file_records: u64,
}

impl Writer {
    /// Opens the log directory and continues its last file.
    fn open(config: &AuditConfig, source: &str, signer: Option<Signer>) -> Result<Self, AuditError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, &e))?;
        let files = log_files(&dir)?;
        let (path, found, cut) = match files.last() {
            None => (dir.join(file_name(1)), None, 0),
            Some((_, last)) => {
                let (found, cut) = scan_last(&files)?;
                (last.clone(), found, cut)
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, &e))?;
        sync_dir(&dir)?;
        let file_bytes = file.metadata().map_err(|e| AuditError::io(&path, &e))?.len();
        let mut writer = Writer {
            dir,
            source: source.to_owned(),
            signer,
            max_file_bytes: config.max_file_bytes,
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
            file,
            path,
            file_bytes,
            file_records: found.as_ref().map_or(0, |f| f.file_records),
            reserve: 0,
            next_seq: found.as_ref().map_or(1, |f| f.next_seq),
            prev: found.as_ref().map_or(GENESIS, |f| f.prev),
            since_checkpoint: found.as_ref().map_or(0, |f| f.since_checkpoint),
            last_checkpoint_at: Instant::now(),
            buf: Vec::new(),
            unsynced: None,
            syncs: Arc::new(AtomicU64::new(0)),
        };
        writer.reserve = writer.checkpoint_line()?.0.len() as u64;
        let unclean = found.as_ref().is_some_and(|f| !f.last_is_checkpoint);
        if cut > 0 || unclean {
            tracing::warn!(
                file = %writer.path.display(),
                cut_bytes = cut,
                "audit log: the previous run stopped without its closing checkpoint; recovered"
            );
            let mut entry = Entry::new(RECOVERY, Decision::Allow);
            entry.reason = Some(if cut > 0 { "torn_line" } else { "unclean_stop" }.into());
            entry.detail = Some(serde_json::json!({
                "cut_bytes": cut,
                "file": writer.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            }));
            writer.append(&entry)?;
            writer.flush_sync()?;
        }
        Ok(writer)
    }

    /// The thread's loop: one batch per wake-up, one sync per batch.
    fn run(
        mut self,
        runtime: &tokio::runtime::Runtime,
        mut rx: mpsc::Receiver<Msg>,
        name: &Arc<str>,
        failed: &OnceLock<String>,
    ) {
        let mut batch: Vec<Msg> = Vec::new();
        let mut waiters: Vec<(u64, oneshot::Sender<Result<RecordId, AuditError>>)> = Vec::new();
        loop {
            // Wake for the next append, or when a checkpoint or a deferred
            // sync falls due.
            let first = match self.next_wake(failed) {
                Some(due) => {
                    // The timer must be made inside the runtime's context.
                    match runtime.block_on(async { tokio::time::timeout(due, rx.recv()).await }) {
                        Ok(msg) => msg,
                        Err(_) => {
                            let checkpoint_due = self.since_checkpoint > 0
                                && self.last_checkpoint_at.elapsed() >= self.checkpoint_interval;
                            let done = if checkpoint_due { self.checkpoint() } else { Ok(()) };
                            if let Err(e) = done.and_then(|()| self.flush_sync()) {
                                self.fail(failed, &e);
                            }
                            continue;
                        }
                    }
                }
                None => runtime.block_on(rx.recv()),
            };
            let Some(first) = first else {
                // Every handle is gone: stop as a close would.
                if failed.get().is_none()
                    && let Err(e) = self.checkpoint().and_then(|()| self.flush_sync())
                {
                    self.fail(failed, &e);
                }
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            let mut closers = Vec::new();
            let mut error: Option<AuditError> = None;
            let mut must_sync = false;
            for msg in batch.drain(..) {
                match msg {
                    Msg::Close(reply) => closers.push(reply),
                    Msg::Append(entry, reply, durable) => {
                        must_sync |= durable;
                        if let Some(reason) = failed.get() {
                            let _ = reply.send(Err(AuditError::Failed(reason.clone())));
                            continue;
                        }
                        if error.is_some() {
                            let _ = reply.send(Err(AuditError::Failed("the batch could not be written".into())));
                            continue;
                        }
                        match self.append(&entry) {
                            Ok(seq) => waiters.push((seq, reply)),
                            Err(e @ AuditError::RecordTooLarge { .. }) => {
                                let _ = reply.send(Err(e));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e.clone()));
                                error = Some(e);
                            }
                        }
                    }
                }
            }
            if error.is_none()
                && failed.get().is_none()
                && self.since_checkpoint > 0
                && (self.last_checkpoint_at.elapsed() >= self.checkpoint_interval || !closers.is_empty())
                && let Err(e) = self.checkpoint()
            {
                error = Some(e);
            }
            // One sync for the batch, unless every append in it is deferred.
            let flushed = if must_sync || !closers.is_empty() {
                self.flush_sync()
            } else {
                self.flush_write()
            };
            if error.is_none()
                && failed.get().is_none()
                && let Err(e) = flushed
            {
                error = Some(e);
            }
            match error {
                None => {
                    for (seq, reply) in waiters.drain(..) {
                        let _ = reply.send(Ok(RecordId {
                            log: Arc::clone(name),
                            seq,
                        }));
                    }
                }
                Some(e) => {
                    self.fail(failed, &e);
                    for (_, reply) in waiters.drain(..) {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            if !closers.is_empty() {
                let outcome = match failed.get() {
                    Some(reason) => Err(AuditError::Failed(reason.clone())),
                    None => Ok(()),
                };
                for reply in closers {
                    let _ = reply.send(outcome.clone());
                }
                // Dropping the receiver fails every later send: appends
                // after a close get `Closed`.
                return;
            }
        }
    }

    /// Marks the log failed: no more appends until it is reopened.
    fn fail(&mut self, failed: &OnceLock<String>, e: &AuditError) {
        tracing::error!(error = %e, "audit log: a write failed; the log refuses further appends");
        let _ = failed.set(e.to_string());
        self.buf.clear();
    }

    /// Buffers one entry's record, rotating and checkpointing as due.
    fn append(&mut self, entry: &Entry) -> Result<u64, AuditError> {
        let (mut line, mut hash) = self.line(entry, None)?;
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditError::RecordTooLarge {
                size: line.len(),
                limit: MAX_LINE_BYTES,
            });
        }
        if self.file_records > 0 && self.file_bytes + line.len() as u64 + self.reserve > self.max_file_bytes {
            self.rotate()?;
            (line, hash) = self.line(entry, None)?;
        }
        let seq = self.next_seq;
        self.push(&line, hash);
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// Buffers a checkpoint covering the last record, unless nothing was
    /// added since the last one.
    fn checkpoint(&mut self) -> Result<(), AuditError> {
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let (line, hash) = self.checkpoint_line()?;
        self.push(&line, hash);
        self.since_checkpoint = 0;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// The line of a checkpoint covering the last record.
    fn checkpoint_line(&self) -> Result<(Vec<u8>, Hash), AuditError> {
        let covered = self.next_seq.saturating_sub(1);
        let hash = hex(&self.prev);
        let mut checkpoint = Checkpoint {
            seq: covered,
            signer: None,
            cert: None,
            signature: None,
            hash,
        };
        if let Some(signer) = &self.signer {
            let signature = signer
                .sign(&checkpoint_message(&self.source, covered, &checkpoint.hash))
                .map_err(|e| AuditError::Signer(e.to_string()))?;
            checkpoint.signer = Some(signer.id().uri());
            checkpoint.cert = Some(BASE64.encode(signer.cert_der()));
            checkpoint.signature = Some(BASE64.encode(signature));
        }
        self.line(&Entry::new(CHECKPOINT, Decision::Allow), Some(&checkpoint))
    }

    /// A record's line (`<hash> <json>\n`) at the next seq, and its hash.
    fn line(&self, entry: &Entry, checkpoint: Option<&Checkpoint>) -> Result<(Vec<u8>, Hash), AuditError> {
        let time = now_text();
        let prev = hex(&self.prev);
        let record = RecordRef {
            seq: self.next_seq,
            time: &time,
            source: &self.source,
            prev: &prev,
            entry,
            checkpoint,
        };
        let json = serde_json::to_vec(&record).map_err(|e| AuditError::Failed(format!("encoding a record: {e}")))?;
        let hash = chain_hash(&self.prev, &json);
        let mut line = Vec::with_capacity(json.len() + 66);
        line.extend_from_slice(hex(&hash).as_bytes());
        line.push(b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        Ok((line, hash))
    }

    /// Buffers a line built at the next seq.
    fn push(&mut self, line: &[u8], hash: Hash) {
        self.buf.extend_from_slice(line);
        self.file_bytes += line.len() as u64;
        self.file_records += 1;
        self.next_seq += 1;
        self.prev = hash;
    }

    /// Writes what is buffered and syncs it.
    fn flush_sync(&mut self) -> Result<(), AuditError> {
        self.flush_write()?;
        if self.unsynced.take().is_none() {
            return Ok(());
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().map_err(|e| AuditError::io(&self.path, &e))
    }

    /// Writes the buffered lines to the file without syncing; they are
    /// synced within [`DEFERRED_SYNC`].
    fn flush_write(&mut self) -> Result<(), AuditError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| AuditError::io(&self.path, &e))?;
        self.buf.clear();
        self.unsynced.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// How long the thread may sleep before a checkpoint or a deferred
    /// sync falls due; `None`: until the next message.
    fn next_wake(&self, failed: &OnceLock<String>) -> Option<Duration> {
        if failed.get().is_some() {
            return None;
        }
        let checkpoint = (self.since_checkpoint > 0).then(|| {
            self.checkpoint_interval
                .saturating_sub(self.last_checkpoint_at.elapsed())
        });
        let sync = self.unsynced.map(|at| DEFERRED_SYNC.saturating_sub(at.elapsed()));
        match (checkpoint, sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes the active file with a checkpoint and starts the next one,
    /// named by the seq of its first record.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.checkpoint()?;
        self.flush_sync()?;
        let path = self.dir.join(file_name(self.next_seq));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, &e))?;
        // The new file's name must survive a crash too.
        sync_dir(&self.dir)?;
        self.file = file;
        self.path = path;
        self.file_bytes = 0;
        self.file_records = 0;
        Ok(())
    }
}

/// Reads the last file holding records (the last file may be empty after a
/// crash just after a rotation): where the chain goes on, and how many torn
/// bytes were cut off its end.
fn scan_last(files: &[(u64, PathBuf)]) -> Result<(Option<Found>, u64), AuditError> {
    let Some((named, last)) = files.last() else {
        return Ok((None, 0));
    };
    let (found, cut) = scan(last, *named, files.len() == 1)?;
    if let Some(found) = found {
        return Ok((Some(found), cut));
    }
    // An empty last file: the chain goes on from the file before it, whose
    // records must end just before this file's name.
    if files.len() == 1 {
        if *named != 1 {
            return Err(bad_name(last, *named, 1));
        }
        return Ok((None, cut));
    }
    let (before_named, before) = &files[files.len() - 2];
    let (found, torn) = scan(before, *before_named, files.len() == 2)?;
    if torn > 0 {
        return Err(AuditError::BadRecord {
            file: before.clone(),
            line: 0,
            seq: None,
            reason: "a torn last line in a file that is not the last".into(),
        });
    }
    let Some(mut found) = found else {
        return Err(AuditError::BadRecord {
            file: before.clone(),
            line: 1,
            seq: None,
            reason: "two empty files at the end of the log".into(),
        });
    };
    if found.next_seq != *named {
        return Err(bad_name(last, *named, found.next_seq));
    }
    found.file_records = 0;
    Ok((Some(found), cut))
}

/// The error for a file whose name announces another seq than its place.
fn bad_name(path: &Path, named: u64, expected: u64) -> AuditError {
    AuditError::BadRecord {
        file: path.to_owned(),
        line: 1,
        seq: None,
        reason: format!("the file is named for seq {named} but the log goes on at seq {expected}"),
    }
}

/// Checks one file's chain and cuts a torn last line off it.
fn scan(path: &Path, named: u64, first_file: bool) -> Result<(Option<Found>, u64), AuditError> {
    let mut lines = Lines::open(path)?;
    let mut chain = if first_file { Chain::genesis() } else { Chain::resume() };
    let mut found: Option<Found> = None;
    let mut cut = 0;
    while let Some(line) = lines.next_line()? {
        match line {
            Line::Torn(n) => {
                cut = n as u64;
                break;
            }
            Line::Whole(text) => {
                let (record, hash) = chain.check(&lines, &text)?;
                if found.is_none() && record.seq != named {
                    return Err(bad_name(path, named, record.seq));
                }
                let is_checkpoint = record.entry.kind == CHECKPOINT;
                let since = found.as_ref().map_or(0, |f| f.since_checkpoint);
                found = Some(Found {
                    next_seq: record.seq + 1,
                    prev: hash,
                    since_checkpoint: if is_checkpoint { 0 } else { since + 1 },
                    last_is_checkpoint: is_checkpoint,
                    file_records: lines.number,
                });
            }
        }
    }
    if cut > 0 {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, &e))?;
        file.set_len(lines.offset).map_err(|e| AuditError::io(path, &e))?;
        file.sync_all().map_err(|e| AuditError::io(path, &e))?;
    }
    Ok((found, cut))
}

/// Syncs a directory, so that a file created in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, &e))
}
