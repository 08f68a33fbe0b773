//! Reloading the policy file without a restart: a tokio task polls the
//! file's modification time and size every `[policy] reload_interval`, and
//! when they change, its content hash; a new content that validates
//! replaces the policy at once, one that does not keeps the old policy and
//! is logged at WARN with the file, the key and the reason (never a value).
//! Each outcome is published as a [`ReloadEvent`] (the audit's
//! `policy.reload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use yrd_proto::schema::Registry;
use yrd_query::Limits;

use super::engine::NodePolicy;
use super::file::{MAX_POLICY_FILE_BYTES, PolicyFile};

/// The outcome of one attempt to reload the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    /// The file.
    pub path: String,
    /// Hex SHA-256 of the content read.
    pub sha256: String,
    /// The grants now in force, or why the new content was refused
    /// (`config <file>: <key>: <reason>`; the old policy stays).
    pub outcome: Result<usize, String>,
}

/// What the watcher last saw of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    hash: [u8; 32],
}

/// Watches `path` and reloads `policy` from it on change. The content the
/// policy was built from is `initial` (its hash, so that an unchanged file
/// is not reloaded). The task stops when the handle is aborted.
pub fn watch(
    policy: Arc<NodePolicy>,
    path: PathBuf,
    initial: &[u8],
    interval: Duration,
    schemas: &'static Registry,
    limits: Limits,
) -> JoinHandle<()> {
    let mut seen = Seen {
        hash: Sha256::digest(initial).into(),
        ..Seen::default()
    };
    if let Ok(meta) = std::fs::metadata(&path) {
        seen.modified = meta.modified().ok();
        seen.len = meta.len();
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let p = path.clone();
            let prev = seen.clone();
            let has_key = policy.has_hash_key();
            let limits = limits.clone();
            // File reads and parsing are blocking work: off the async threads.
            let polled = tokio::task::spawn_blocking(move || poll(&p, &prev, schemas, &limits, has_key)).await;
            let Ok(Some((now_seen, result))) = polled else { continue };
            seen = now_seen;
            let Some(result) = result else { continue };
            let shown = path.display().to_string();
            let sha256 = hex(&seen.hash);
            let outcome = match result {
                Ok(file) => {
                    let n = file.grants.len();
                    policy.replace(file);
                    tracing::info!(file = %shown, grants = n, sha256 = %sha256, "policy reloaded");
                    Ok(n)
                }
                Err(reason) => {
                    tracing::warn!(file = %shown, error = %reason, "policy file refused; the previous policy stays in force");
                    Err(reason)
                }
            };
            policy.publish(ReloadEvent {
                path: shown,
                sha256,
                outcome,
            });
        }
    })
}

/// Looks at the file: `None` when its time and size did not change (or it
/// cannot be read now: a file being replaced is looked at again next
/// time), else what was seen and, when the content changed, the policy it
/// holds or why not.
fn poll(
    path: &Path,
    prev: &Seen,
    schemas: &Registry,
    limits: &Limits,
    has_key: bool,
) -> Option<(Seen, Option<Result<PolicyFile, String>>)> {
    let meta = std::fs::metadata(path).ok()?;
    let (modified, len) = (meta.modified().ok(), meta.len());
    if modified == prev.modified && len == prev.len {
        return None;
    }
    let shown = path.display().to_string();
    let seen_meta = Seen {
        modified,
        len,
        hash: prev.hash,
    };
    if len > MAX_POLICY_FILE_BYTES as u64 {
        return Some((
            seen_meta,
            Some(Err(format!(
                "config {shown}: -: {len} bytes exceeds the limit of {MAX_POLICY_FILE_BYTES}"
            ))),
        ));
    }
    let bytes = std::fs::read(path).ok()?;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    let seen = Seen { hash, ..seen_meta };
    if hash == prev.hash {
        // Touched, not changed: remember the new time, reload nothing.
        return Some((seen, None));
    }
    let result = match String::from_utf8(bytes) {
        Ok(text) => PolicyFile::parse(&text, &shown, schemas, limits, has_key).map_err(|e| e.to_string()),
        Err(_) => Err(format!("config {shown}: -: not UTF-8 text")),
    };
    Some((seen, Some(result)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
