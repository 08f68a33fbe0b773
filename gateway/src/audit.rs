//! The gateway's audit trail: one record per request that reaches a
//! region through it (queries, aggregates, explains, the access workflow,
//! audit reads), allowed or refused, in the hash-chained log of
//! [`yrd_audit`], checkpoints signed with the gateway's key.
//!
//! A query's record is durable before its first row reaches the
//! application (the region calls start meanwhile); if it cannot be
//! written, the request fails. A `query.end` record names it, with the
//! rows sent and each region's outcome and the region's own audit record,
//! so that an auditor can follow one request from the gateway into every
//! region's log.
//!
//! What goes in: identities, the declared purpose (once checked), dataset
//! and field names the schema knows, the typed filter as text (personal
//! fields cannot be filtered) and counts. A refused request records only
//! what passed its checks: never raw text the gateway refused, which could
//! hold anything.

use tonic::{Code, Status};
use yrd_audit::{AuditLog, Decision, Entry};
use yrd_identity::PeerId;
use yrd_proto::mesh::{FilterExpr, RegionStatus};
use yrd_proto::schema::DatasetSchema;
use yrd_query::filter;

use crate::error::GatewayError;

/// Span of writing one audit record.
pub const SPAN_AUDIT: &str = "gateway.audit";

/// The gateway's audit log; cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayAudit {
    log: AuditLog,
}

impl GatewayAudit {
    /// Audit to `log`.
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }

    /// No audit (a gateway without an `[audit]` section).
    pub fn disabled() -> Self {
        Self::new(AuditLog::disabled())
    }

    /// The log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// A record of `kind` for a request of `peer` (the TLS client), with
    /// the trace id of the current span. The peer is both the caller and
    /// the subject (whom the gateway acts for), so that the same filter
    /// (`yrdctl audit show --app`) finds an application's requests in the
    /// gateway's log and in every node's, where the caller is the gateway.
    pub fn entry(&self, kind: &'static str, peer: Option<&PeerId>) -> Entry {
        let mut e = Entry::new(kind, Decision::Allow);
        e.caller = peer.map(PeerId::uri);
        e.subject.clone_from(&e.caller);
        e.trace_id = Some(yrd_telemetry::current_trace_id()).filter(|t| !t.is_empty());
        e
    }

    /// Writes `entry` durably and returns its record id (empty when audit
    /// is off), inside a `gateway.audit` span that carries the id as
    /// `yrd.audit_id`.
    pub async fn record(&self, entry: Entry) -> Result<String, GatewayError> {
        if !self.log.is_enabled() {
            return Ok(String::new());
        }
        let span = tracing::info_span!(
            SPAN_AUDIT,
            "yrd.component" = "gateway",
            "yrd.audit_kind" = entry.kind.as_ref(),
            "yrd.audit_id" = tracing::field::Empty,
        );
        let id = tracing::Instrument::instrument(self.log.append(entry), span.clone())
            .await?
            .to_string();
        span.record("yrd.audit_id", id.as_str());
        Ok(id)
    }

    /// Writes `entry`, which follows a durable record (a `query.end`),
    /// without waiting for its sync ([`AuditLog::append_deferred`]).
    pub async fn record_deferred(&self, entry: Entry) -> Result<(), GatewayError> {
        if self.log.is_enabled() {
            self.log.append_deferred(entry).await?;
        }
        Ok(())
    }

    /// Records a request refused or failed with `status` (best effort: the
    /// caller is already getting an error, which is what it must see).
    pub async fn refused(&self, mut entry: Entry, status: &Status) {
        entry.decision = decision_of(status.code());
        entry.reason = Some(reason_code(status));
        if let Err(e) = self.record(entry).await {
            tracing::error!(error = %e, "the audit record of a refused request was not written");
        }
    }

    /// Records how a forwarded call ended: allowed, or refused with its
    /// status (best effort, as [`GatewayAudit::refused`]); passes the
    /// result on.
    pub async fn outcome<T>(&self, entry: Entry, result: Result<T, Status>) -> Result<T, Status> {
        match &result {
            Ok(_) => {
                if let Err(e) = self.record(entry).await {
                    tracing::error!(error = %e, "the audit record of a forwarded call was not written");
                }
            }
            Err(status) => self.refused(entry, status).await,
        }
        result
    }
}

/// Deny for a refusal by policy or role, fail for anything else.
pub fn decision_of(code: Code) -> Decision {
    match code {
        Code::PermissionDenied | Code::Unauthenticated => Decision::Deny,
        _ => Decision::Fail,
    }
}

/// The reason code of a refusal: its `ErrorInfo` reason (`NO_GRANT`,
/// `NOT_AN_OPERATOR`, ...), or the status code's name.
pub fn reason_code(status: &Status) -> String {
    let reason = crate::federate::reason_of(status);
    if reason.is_empty() {
        code_name(status.code()).to_owned()
    } else {
        reason
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`), as metrics
/// label it.
pub use yrd_telemetry::code_name;

/// Sets the dataset and the filter of a checked request.
pub fn describe(entry: &mut Entry, schema: &DatasetSchema, filter: Option<&FilterExpr>) {
    entry.dataset = Some(schema.id.clone());
    entry.filter = filter.map(filter::to_text);
}

/// The names among `asked` that `schema` knows (a refused request's
/// unknown names are not copied into the log).
pub fn known_fields(schema: &DatasetSchema, asked: &[String]) -> Vec<String> {
    asked.iter().filter(|f| schema.field(f).is_some()).cloned().collect()
}

/// Each region's outcome, for a record's `detail`: its state, rows, the
/// reason code of a refusal and the region's own audit record.
pub fn regions_detail(regions: &[RegionStatus]) -> serde_json::Value {
    let list = regions
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("region".into(), r.region.clone().into());
            o.insert("state".into(), r.state().as_str_name().into());
            o.insert("rows".into(), r.rows.into());
            if !r.reason.is_empty() {
                o.insert("reason".into(), r.reason.clone().into());
            }
            if r.suppressed_groups > 0 {
                o.insert("suppressed_groups".into(), r.suppressed_groups.into());
            }
            if !r.audit_id.is_empty() {
                o.insert("audit_id".into(), r.audit_id.clone().into());
            }
            serde_json::Value::Object(o)
        })
        .collect();
    serde_json::json!({ "regions": serde_json::Value::Array(list) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::mesh::RegionState;

    #[test]
    fn reasons_and_decisions() {
        let denied = Status::permission_denied("no");
        assert_eq!(decision_of(denied.code()), Decision::Deny);
        assert_eq!(reason_code(&denied), "PERMISSION_DENIED");
        let info = tonic_types::ErrorDetails::with_error_info(
            "NO_GRANT",
            yrd_query::error::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        let with_info =
            <Status as tonic_types::StatusExt>::with_error_details(Code::PermissionDenied, "no grant", info);
        assert_eq!(reason_code(&with_info), "NO_GRANT");
        assert_eq!(decision_of(Code::InvalidArgument), Decision::Fail);
        assert_eq!(reason_code(&Status::invalid_argument("x")), "INVALID_ARGUMENT");
    }

    #[test]
    fn region_outcomes_name_their_records() {
        let regions = [
            RegionStatus {
                region: "310000".into(),
                state: RegionState::Ok as i32,
                rows: 7,
                audit_id: "node-310000-sh-1-12".into(),
                ..RegionStatus::default()
            },
            RegionStatus {
                region: "320000".into(),
                state: RegionState::PermissionDenied as i32,
                reason: "NO_GRANT".into(),
                ..RegionStatus::default()
            },
        ];
        let detail = regions_detail(&regions);
        assert_eq!(detail["regions"][0]["audit_id"], "node-310000-sh-1-12");
        assert_eq!(detail["regions"][0]["rows"], 7);
        assert_eq!(detail["regions"][1]["state"], "REGION_STATE_PERMISSION_DENIED");
        assert_eq!(detail["regions"][1]["reason"], "NO_GRANT");
        assert!(detail["regions"][1].get("audit_id").is_none());
    }

    #[tokio::test]
    async fn disabled_audit_records_nothing() {
        let audit = GatewayAudit::disabled();
        let id = audit.record(audit.entry("query", None)).await.unwrap();
        assert!(id.is_empty());
    }

    #[tokio::test]
    async fn records_are_durable_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let config = yrd_audit::AuditConfig::in_dir(dir.path());
        let log = AuditLog::open(&config, "spiffe://yrd.mesh/gateway/test", None).unwrap();
        let audit = GatewayAudit::new(log);
        let id = audit.record(audit.entry("query", None)).await.unwrap();
        assert_eq!(id, format!("{}-1", audit.log().name()));
        audit
            .refused(audit.entry("aggregate", None), &Status::permission_denied("no"))
            .await;
        audit.log().close().await.unwrap();
        let report = yrd_audit::verify(&[dir.path().to_path_buf()], None).unwrap();
        assert_eq!(report.records, 3, "{report:?}");
    }
}
