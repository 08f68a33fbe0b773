//! The node's audit trail: one record per request (allowed, denied or
//! failed) and per access-workflow and policy-reload event, in the
//! hash-chained log of [`yrd_audit`]. A query's record is durable before
//! its first row leaves; if it cannot be written, the request fails.
//! Records hold identities, purposes, dataset and field names, the typed
//! filter as text (personal fields cannot be filtered) and counts, never
//! a row's values.

use yrd_audit::{AuditLog, Decision, Entry};
use yrd_proto::mesh::FilterExpr;
use yrd_query::filter;

use yrd_query::check::MAX_NAME_BYTES;
use yrd_query::limits::{MAX_FIELDS_BOUND, MAX_FILTER_LENGTH_BOUND};

use crate::error::NodeError;
use crate::principal::Principal;

/// The node's audit log and its region.
#[derive(Debug, Clone)]
pub struct NodeAudit {
    log: AuditLog,
    region: String,
}

impl NodeAudit {
    /// Audit to `log` for `region`.
    pub fn new(log: AuditLog, region: impl Into<String>) -> Self {
        Self {
            log,
            region: region.into(),
        }
    }

    /// No audit (tests and development without an `[audit]` section).
    pub fn disabled(region: impl Into<String>) -> Self {
        Self::new(AuditLog::disabled(), region)
    }

    /// The region recorded.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// A record of `kind` for the request of `who` on `dataset`.
    pub fn entry(
        &self,
        kind: &'static str,
        decision: Decision,
        who: &Principal,
        dataset: &str,
        filter: Option<&FilterExpr>,
    ) -> Entry {
        let mut e = Entry::new(kind, decision);
        e.caller = who.peer.as_ref().map(|p| p.uri());
        e.subject = who.subject.as_ref().map(|p| p.uri());
        e.purpose = who.purpose.clone();
        e.region = Some(self.region.clone());
        e.dataset = (!dataset.is_empty()).then(|| recorded_name(dataset));
        e.filter = filter.map(|f| {
            let text = filter::to_text(f);
            yrd_telemetry::truncate_for_record(&text, MAX_FILTER_LENGTH_BOUND).into_owned()
        });
        e.trace_id = Some(yrd_telemetry::current_trace_id()).filter(|t| !t.is_empty());
        e
    }

    /// Writes `entry` durably and returns its record id (empty when audit
    /// is off); the current span gets the id as `yrd.audit_id`.
    pub async fn record(&self, entry: Entry) -> Result<String, NodeError> {
        if !self.log.is_enabled() {
            return Ok(String::new());
        }
        let id = self.log.append(entry).await?.to_string();
        tracing::Span::current().record("yrd.audit_id", id.as_str());
        Ok(id)
    }

    /// Writes `entry`, which follows a durable record (a `query.end`),
    /// without waiting for its sync ([`AuditLog::append_deferred`]).
    pub async fn record_deferred(&self, entry: Entry) -> Result<(), NodeError> {
        if self.log.is_enabled() {
            self.log.append_deferred(entry).await?;
        }
        Ok(())
    }

    /// Records a refused or failed request (best effort: the caller is
    /// already getting an error, which is what it must see).
    pub async fn refused(&self, mut entry: Entry, err: &NodeError) {
        match err {
            NodeError::Denied(r) => {
                entry.decision = Decision::Deny;
                entry.reason = Some(r.reason.code().to_owned());
            }
            NodeError::Assertion { refusal, .. } => {
                entry.decision = Decision::Deny;
                entry.reason = Some(refusal.reason().to_owned());
            }
            other => {
                entry.decision = Decision::Fail;
                entry.reason = Some(fail_reason(other).to_owned());
            }
        }
        if let Err(e) = self.record(entry).await {
            tracing::error!(error = %e, "the audit record of a refused request was not written");
        }
    }
}

/// A short code for a failure, for the audit record.
pub fn fail_reason(err: &NodeError) -> &'static str {
    match err {
        NodeError::Query(_) => "INVALID_REQUEST",
        NodeError::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
        NodeError::Cancelled => "CANCELLED",
        NodeError::Audit(_) => "AUDIT_UNAVAILABLE",
        _ => "FAILED",
    }
}

/// A name of a request as an audit record keeps it. Records are written
/// before the request's checks have run (a refusal is recorded too), so a
/// name is cut at the longest a check accepts, [`MAX_NAME_BYTES`], its
/// length said; a filter likewise at the longest filter text a node may be
/// configured to accept.
pub fn recorded_name(name: &str) -> String {
    yrd_telemetry::truncate_for_record(name, MAX_NAME_BYTES).into_owned()
}

/// The names of a request (fields, group-by) as an audit record keeps
/// them: each cut as [`recorded_name`], at most [`MAX_FIELDS_BOUND`] of
/// them, then how many more there were.
pub fn recorded_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Vec<String> {
    let total = names.len();
    let mut kept: Vec<String> = names.take(MAX_FIELDS_BOUND).map(recorded_name).collect();
    if total > MAX_FIELDS_BOUND {
        kept.push(format!("…({} more)", total - MAX_FIELDS_BOUND));
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_names_are_bounded_in_length_and_number() {
        let long = "f".repeat(3_500_000);
        let cut = recorded_name(&long);
        assert!(cut.len() < MAX_NAME_BYTES + 32, "{} bytes", cut.len());
        assert!(cut.contains("3500000 bytes"), "{cut}");
        assert_eq!(recorded_name("city"), "city");
        let many: Vec<String> = (0..MAX_FIELDS_BOUND + 5).map(|i| format!("f{i}")).collect();
        let kept = recorded_names(many.iter().map(String::as_str));
        assert_eq!(kept.len(), MAX_FIELDS_BOUND + 1);
        assert_eq!(kept.last().map(String::as_str), Some("…(5 more)"));
    }
}
