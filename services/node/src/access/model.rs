//! An access request as the region keeps it, and its states.

use yrd_proto::mesh::{self, AccessState, FilterExpr};

use super::days::{Calendar, region_date};

/// Where a request stands. PENDING → APPROVED | REFUSED; APPROVED → REVOKED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the region's decision.
    Pending,
    /// Approved: its grant is in force until its last day.
    Approved,
    /// Refused, with a reason.
    Refused,
    /// Approved, then revoked, with a reason.
    Revoked,
}

impl State {
    /// The name stored and shown (`pending`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Refused => "refused",
            Self::Revoked => "revoked",
        }
    }

    /// The state of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "refused" => Self::Refused,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }

    /// The protocol's state.
    pub fn proto(self) -> AccessState {
        match self {
            Self::Pending => AccessState::Pending,
            Self::Approved => AccessState::Approved,
            Self::Refused => AccessState::Refused,
            Self::Revoked => AccessState::Revoked,
        }
    }

    /// The state asked for by a protocol filter (`None`: all).
    pub fn from_proto(state: AccessState) -> Option<Self> {
        match state {
            AccessState::Unspecified => None,
            AccessState::Pending => Some(Self::Pending),
            AccessState::Approved => Some(Self::Approved),
            AccessState::Refused => Some(Self::Refused),
            AccessState::Revoked => Some(Self::Revoked),
        }
    }
}

/// A request to record, as validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    /// The applying application's SPIFFE URI.
    pub applicant: String,
    /// Dataset id.
    pub dataset: String,
    /// Fields applied for, in the order given, without repeats.
    pub fields: Vec<String>,
    /// Declared purpose.
    pub purpose: String,
    /// Last day applied for (`YYYY-MM-DD`).
    pub until: String,
    /// Row scope applied for, checked against the schema.
    pub row_scope: Option<FilterExpr>,
    /// When it was filed (seconds since the Unix epoch).
    pub created: i64,
    /// When the region must answer by (seconds since the Unix epoch).
    pub answer_due: i64,
}

/// An approval or refusal, as validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The operator's SPIFFE URI.
    pub by: String,
    /// When (seconds since the Unix epoch).
    pub at: i64,
    /// Approve (with what is granted) or refuse.
    pub verdict: Verdict,
    /// The reason (mandatory for a refusal).
    pub reason: Option<String>,
}

/// What a decision says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Approve, granting these (possibly narrowed) terms.
    Approve {
        /// Fields granted.
        fields: Vec<String>,
        /// Row scope granted (the applied one ANDed with the narrowing).
        row_scope: Option<FilterExpr>,
        /// Last day granted.
        until: String,
    },
    /// Refuse.
    Refuse,
}

/// A revocation, as validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    /// The operator's SPIFFE URI.
    pub by: String,
    /// When (seconds since the Unix epoch).
    pub at: i64,
    /// Why (mandatory).
    pub reason: String,
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    /// Its number in the region (the `n` of `<region>-<n>`).
    pub seq: i64,
    /// `<region>-<n>`.
    pub id: String,
    /// What was applied for, and when.
    pub applied: NewRequest,
    /// Where it stands.
    pub state: State,
    /// The approval or refusal, once made.
    pub decision: Option<Decision>,
    /// The revocation, once made.
    pub revocation: Option<Revocation>,
}

impl StoredRequest {
    /// The grant id of an approved (or since revoked) request.
    pub fn grant_id(&self) -> String {
        format!("request:{}", self.id)
    }

    /// The terms granted, when approved.
    pub fn granted(&self) -> Option<(&[String], Option<&FilterExpr>, &str)> {
        match &self.decision {
            Some(Decision {
                verdict:
                    Verdict::Approve {
                        fields,
                        row_scope,
                        until,
                    },
                ..
            }) => Some((fields, row_scope.as_ref(), until)),
            _ => None,
        }
    }

    /// The protocol form, with its age against the deadline at `now`.
    pub fn to_proto(&self, region: &str, calendar: &Calendar, now: i64) -> mesh::AccessRequest {
        let a = &self.applied;
        let ts = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
        let text = |e: Option<&FilterExpr>| e.map(yrd_query::filter::to_text).unwrap_or_default();
        // The latest act shows: a revocation over the approval it ends.
        let (decided, decided_by, reason) = match (&self.revocation, &self.decision) {
            (Some(r), _) => (Some(r.at), r.by.clone(), r.reason.clone()),
            (None, Some(d)) => (Some(d.at), d.by.clone(), d.reason.clone().unwrap_or_default()),
            (None, None) => (None, String::new(), String::new()),
        };
        let answered = self.decision.as_ref().map(|d| d.at);
        let age = calendar.working_days_between(region_date(a.created), region_date(answered.unwrap_or(now)));
        let mut out = mesh::AccessRequest {
            id: self.id.clone(),
            region: region.to_owned(),
            applicant: a.applicant.clone(),
            dataset: a.dataset.clone(),
            fields: a.fields.clone(),
            purpose: a.purpose.clone(),
            until: a.until.clone(),
            row_scope: a.row_scope.clone(),
            row_scope_text: text(a.row_scope.as_ref()),
            state: self.state.proto() as i32,
            created: Some(ts(a.created)),
            answer_due: Some(ts(a.answer_due)),
            decided: decided.map(ts),
            decided_by,
            reason,
            age_working_days: age,
            overdue: self.state == State::Pending && now >= a.answer_due,
            ..Default::default()
        };
        if let Some((fields, scope, until)) = self.granted() {
            out.granted_fields = fields.to_vec();
            out.granted_row_scope = scope.cloned();
            out.granted_row_scope_text = text(scope);
            out.granted_until = until.to_owned();
            out.grant_id = self.grant_id();
        }
        out
    }
}
