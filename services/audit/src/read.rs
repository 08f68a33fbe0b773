//! Reading records back, filtered: for `yrdctl audit show` and the
//! `ReadAudit` RPC. No hash is checked here; that is [`crate::verify`]'s job.

use std::path::Path;
use std::time::SystemTime;

use crate::error::AuditError;
use crate::format::{Line, Lines, expand, parse_line, parse_time};
use crate::record::{CHECKPOINT, Decision, RECOVERY, Record};

/// Which records to read. Unset keys match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records acting for this application (or called by it): its SPIFFE
    /// URI, or its name (`dashboard` matches `spiffe://<td>/app/dashboard`).
    pub subject: Option<String>,
    /// Records of this dataset.
    pub dataset: Option<String>,
    /// Records with this decision.
    pub decision: Option<Decision>,
    /// Records at or after this time.
    pub since: Option<SystemTime>,
    /// Records before this time.
    pub until: Option<SystemTime>,
    /// At most this many records.
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether a record matches. The writer's own records (checkpoints,
    /// recovery) match only a filter on time alone.
    pub fn matches(&self, record: &Record) -> bool {
        let kind = record.entry.kind.as_ref();
        let own = kind == CHECKPOINT || kind == RECOVERY;
        if own && (self.subject.is_some() || self.dataset.is_some() || self.decision.is_some()) {
            return false;
        }
        if let Some(want) = &self.subject {
            let is = |uri: &Option<String>| uri.as_deref().is_some_and(|uri| names_app(uri, want));
            if !is(&record.entry.subject) && !is(&record.entry.caller) {
                return false;
            }
        }
        if self
            .dataset
            .as_ref()
            .is_some_and(|d| record.entry.dataset.as_ref() != Some(d))
        {
            return false;
        }
        if self.decision.is_some_and(|d| d != record.entry.decision) {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(time) = parse_time(&record.time) else {
                return false;
            };
            let time = SystemTime::from(time);
            if self.since.is_some_and(|since| time < since) || self.until.is_some_and(|until| time >= until) {
                return false;
            }
        }
        true
    }
}

/// Whether `uri` is the application `want` (a URI, or an app's name).
fn names_app(uri: &str, want: &str) -> bool {
    if want.contains("://") {
        uri == want
    } else {
        uri.rsplit_once("/app/").is_some_and(|(_, name)| name == want)
    }
}

/// Records of a log directory (or one file), oldest first, with their stored
/// line (without newline). Blocking: run it on a blocking thread.
pub fn read(path: &Path, filter: &Filter) -> Result<Records, AuditError> {
    Ok(Records {
        files: expand(&[path.to_owned()])?.into_iter(),
        lines: None,
        filter: filter.clone(),
        left: filter.limit.unwrap_or(usize::MAX),
    })
}

/// The iterator of [`read`].
pub struct Records {
    files: std::vec::IntoIter<std::path::PathBuf>,
    lines: Option<Lines>,
    filter: Filter,
    left: usize,
}

impl Iterator for Records {
    type Item = Result<(String, Record), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            let lines = match &mut self.lines {
                Some(lines) => lines,
                None => {
                    let file = self.files.next()?;
                    match Lines::open(&file) {
                        Ok(lines) => self.lines.insert(lines),
                        Err(e) => return Some(Err(e)),
                    }
                }
            };
            let text = match lines.next_line() {
                Ok(Some(Line::Whole(text))) => text,
                // A line being written, or the end of this file.
                Ok(Some(Line::Torn(_)) | None) => {
                    self.lines = None;
                    continue;
                }
                Err(e) => {
                    self.left = 0;
                    return Some(Err(e));
                }
            };
            let record = match parse_line(&text) {
                Ok((_, record)) => record,
                Err(reason) => {
                    self.left = 0;
                    return Some(Err(lines.bad(None, reason)));
                }
            };
            if self.filter.matches(&record) {
                self.left -= 1;
                return Some(Ok((text, record)));
            }
        }
        None
    }
}
