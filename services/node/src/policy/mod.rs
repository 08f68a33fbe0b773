//! The policy stage: between the checked query and the store, it decides
//! what the application a request is for may see. [`Policy::authorize`]
//! turns a [`Principal`] and the checked query ([`Access`]) into a
//! [`Decision`]: the rule or grant that decided, a refusal with a stable
//! reason code, or a [`Permit`] that treats each column as plain, masked
//! (by a named [`Mask`]) or refused, and may AND a row scope around the
//! user's filter. Plans for the store are built from the permit, so a
//! refused column never reaches the store, and the encoder masks values as
//! the permit says: masking happens here and nowhere else.
//! [`Policy::admit`] then spends what the request costs (its grant's rate
//! and use count); Explain evaluates without spending.
//!
//! The rules ([`engine::NodePolicy`]): deny by default; unconditionally
//! shared fields are open to every application (masked by their default
//! mask when personal or secret); conditionally shared fields need a grant
//! ([`grant`]), from the agency's policy file ([`file`], reloaded on change
//! by [`reload`]) or from approved access requests ([`grant::GrantSource`]);
//! not-shared fields are refused whatever a grant says.

pub mod engine;
pub mod file;
pub mod grant;
pub mod limits;
pub mod mask;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};
use yrd_proto::mesh::{AggregateFunction, FieldTreatment, FilterExpr, FilterList, PolicyDecision, filter_expr};
use yrd_proto::schema::DatasetSchema;

pub use engine::NodePolicy;
pub use grant::Grant;
pub use mask::{AppKey, Mask};

use crate::error::NodeError;
use crate::principal::Principal;
use crate::store::SortColumn;

/// The rule of a decision made by a grant: `grant:<id>`.
pub const RULE_GRANT_PREFIX: &str = "grant:";
/// The rule of a decision that needed no grant: only unconditionally shared
/// fields were read.
pub const RULE_UNCONDITIONAL: &str = "rule:unconditional";
/// The rule of a refusal no grant could lift.
pub const RULE_DENY_DEFAULT: &str = "rule:deny-default";

/// How a permit treats one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Shown as stored.
    Plain,
    /// Shown masked; may not be filtered, sorted, grouped or used in
    /// min/max/sum/avg.
    Masked(Mask),
    /// Never read: absent from plans and answers.
    Refused,
}

/// Why a column is treated as it is, for Explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Unconditionally shared and not sensitive.
    Unconditional,
    /// Shown with the field's default mask.
    DefaultMask,
    /// As the deciding grant says.
    Granted,
    /// The field (or the dataset) is not shared.
    NotShared,
    /// No grant covers the field.
    NotGranted,
}

impl Why {
    fn text(self, grant: Option<&str>) -> String {
        match (self, grant) {
            (Self::Unconditional, _) => "unconditionally shared".into(),
            (Self::DefaultMask, _) => "default mask".into(),
            (Self::Granted, Some(g)) => format!("granted by {g}"),
            (Self::Granted, None) => "granted".into(),
            (Self::NotShared, _) => "not shared".into(),
            (Self::NotGranted, _) => "not granted".into(),
        }
    }
}

/// What kind of answer a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// Rows, at most `limit` of them per call.
    Rows {
        /// The page size asked for.
        limit: u64,
    },
    /// Aggregates over groups.
    Aggregate,
}

/// The checked query, as the policy sees it: which fields it touches and how.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The dataset.
    pub schema: &'a DatasetSchema,
    /// The user's filter.
    pub filter: Option<&'a FilterExpr>,
    /// Sort columns (queries).
    pub order: &'a [SortColumn],
    /// Requested fields (queries); empty for aggregates.
    pub projection: &'a [usize],
    /// Whether the caller named the fields (an empty projection asks for
    /// every field it may see, and gets the visible ones only).
    pub explicit: bool,
    /// Group-by fields (aggregates).
    pub group_by: &'a [usize],
    /// Metrics (aggregates).
    pub metrics: &'a [(AggregateFunction, Option<usize>)],
    /// Rows or aggregates.
    pub kind: AccessKind,
}

/// What a caller may do with one query: per-column treatments, a row scope
/// and the application's `hash` key.
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    treatments: Vec<Treatment>,
    row_scope: Option<FilterExpr>,
    app_key: Option<AppKey>,
}

impl Permit {
    /// A permit treating field `i` as `treatments[i]`, with an optional row scope.
    pub fn new(treatments: Vec<Treatment>, row_scope: Option<FilterExpr>) -> Self {
        Self {
            treatments,
            row_scope,
            app_key: None,
        }
    }

    /// A permit that refuses every field of a dataset of `n` fields.
    pub fn refuse_all(n: usize) -> Self {
        Self::new(vec![Treatment::Refused; n], None)
    }

    /// The same permit, with the application's key for `hash` masks.
    #[must_use]
    pub fn with_app_key(mut self, key: Option<AppKey>) -> Self {
        self.app_key = key;
        self
    }

    /// How field `field` is treated (refused when out of range).
    pub fn treatment(&self, field: usize) -> Treatment {
        self.treatments.get(field).copied().unwrap_or(Treatment::Refused)
    }

    /// Every field's treatment, in schema order.
    pub fn treatments(&self) -> &[Treatment] {
        &self.treatments
    }

    /// The mask of field `field`, if it is masked.
    pub fn mask(&self, field: usize) -> Option<Mask> {
        match self.treatment(field) {
            Treatment::Masked(m) => Some(m),
            _ => None,
        }
    }

    /// The application's key for `hash` masks, when one is used.
    pub fn app_key(&self) -> Option<&AppKey> {
        self.app_key.as_ref()
    }

    /// The row scope ANDed around every filter, if any.
    pub fn row_scope(&self) -> Option<&FilterExpr> {
        self.row_scope.as_ref()
    }

    /// The requested fields the caller may see, in order: refused and
    /// redacted ones dropped (neither is read from the store).
    pub fn visible(&self, projection: &[usize]) -> Vec<usize> {
        projection
            .iter()
            .copied()
            .filter(|&f| !matches!(self.treatment(f), Treatment::Refused | Treatment::Masked(Mask::Redact)))
            .collect()
    }

    /// The filter handed to the store: the user's filter inside the row
    /// scope. In the tree it is just an AND node, so the user's ORs cannot
    /// escape the scope (AIP-160 text precedence plays no part).
    pub fn scoped_filter(&self, filter: Option<FilterExpr>) -> Option<FilterExpr> {
        match (self.row_scope.clone(), filter) {
            (None, f) => f,
            (Some(scope), None) => Some(scope),
            (Some(scope), Some(user)) => Some(FilterExpr {
                kind: Some(filter_expr::Kind::And(FilterList {
                    exprs: vec![scope, user],
                })),
            }),
        }
    }

    /// Refuses a query that filters, sorts, groups or takes min, max, sum
    /// or avg of a field it may not see plain: such a query could recover
    /// hidden values (counting one is fine).
    pub fn check(&self, access: &Access<'_>, not_granted: Reason) -> Result<(), Refusal> {
        let schema = access.schema;
        let refuse = |field: usize, what: &str| {
            let name = schema.fields[field].name.as_str();
            match self.treatment(field) {
                Treatment::Masked(m) => Refusal::field(
                    Reason::FieldMasked,
                    name,
                    format!("field {name} is shown masked ({m}) to this application and may not be {what}"),
                ),
                _ => Refusal::field(
                    not_granted,
                    name,
                    format!("field {name} is not granted to this application and may not be {what}"),
                ),
            }
        };
        let hidden = |f: usize| self.treatment(f) != Treatment::Plain;
        if let Some(filter) = access.filter {
            let mut names = Vec::new();
            filter_fields(filter, &mut names);
            for name in names {
                if let Some((i, _)) = schema.field(name)
                    && hidden(i)
                {
                    return Err(refuse(i, "filtered"));
                }
            }
        }
        if let Some(k) = access.order.iter().find(|k| hidden(k.field)) {
            return Err(refuse(k.field, "sorted"));
        }
        if let Some(&g) = access.group_by.iter().find(|&&g| hidden(g)) {
            return Err(refuse(g, "grouped by"));
        }
        for (function, field) in access.metrics {
            let Some(f) = *field else { continue };
            let reveals = !matches!(function, AggregateFunction::Count);
            if self.treatment(f) == Treatment::Refused || (reveals && hidden(f)) {
                return Err(refuse(f, "aggregated this way"));
            }
        }
        Ok(())
    }
}

/// A stable reason code of a policy refusal, sent as the `ErrorInfo` reason
/// of a `PERMISSION_DENIED` status and in `RegionStatus.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request is not for an application (an operator, an auditor,
    /// a gateway itself).
    NotAnApplication,
    /// No grant covers what was asked.
    NoGrant,
    /// The grant's validity ended.
    GrantExpired,
    /// The grant's validity has not begun.
    GrantNotYetValid,
    /// The deciding grant does not cover this field.
    FieldNotGranted,
    /// The field is not shared.
    FieldNotShared,
    /// The region does not share this dataset.
    DatasetNotShared,
    /// The field is shown masked, so may not be filtered, sorted, grouped
    /// or aggregated beyond a count.
    FieldMasked,
    /// A purpose must be declared.
    PurposeRequired,
    /// The declared purpose is not one the grant allows.
    PurposeNotAllowed,
    /// The grant's rate per minute is used up.
    RateExceeded,
    /// The query asks for more rows than the grant's `max_rows`.
    RowLimitExceeded,
    /// The grant's use count is used up.
    UsesExhausted,
    /// The grant allows aggregates only.
    AggregateOnly,
}

impl Reason {
    /// The code, such as `NO_GRANT`.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAnApplication => "NOT_AN_APPLICATION",
            Self::NoGrant => "NO_GRANT",
            Self::GrantExpired => "GRANT_EXPIRED",
            Self::GrantNotYetValid => "GRANT_NOT_YET_VALID",
            Self::FieldNotGranted => "FIELD_NOT_GRANTED",
            Self::FieldNotShared => "FIELD_NOT_SHARED",
            Self::DatasetNotShared => "DATASET_NOT_SHARED",
            Self::FieldMasked => "FIELD_MASKED",
            Self::PurposeRequired => "PURPOSE_REQUIRED",
            Self::PurposeNotAllowed => "PURPOSE_NOT_ALLOWED",
            Self::RateExceeded => "RATE_EXCEEDED",
            Self::RowLimitExceeded => "ROW_LIMIT_EXCEEDED",
            Self::UsesExhausted => "USES_EXHAUSTED",
            Self::AggregateOnly => "AGGREGATE_ONLY",
        }
    }
}

/// A policy refusal: a reason code and a message naming the field or the
/// limit at fault, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The reason code.
    pub reason: Reason,
    /// A short, safe explanation.
    pub message: String,
    /// The field at fault, if any.
    pub field: Option<String>,
    /// The limit at fault and its value, if any (`max_rows`, 1000).
    pub limit: Option<(&'static str, u64)>,
}

impl Refusal {
    /// A refusal for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            field: None,
            limit: None,
        }
    }

    /// A refusal naming `field`.
    pub fn field(reason: Reason, field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(reason, message)
        }
    }

    /// A refusal naming the limit `limit` = `max`.
    pub fn limit(reason: Reason, limit: &'static str, max: u64, message: impl Into<String>) -> Self {
        Self {
            limit: Some((limit, max)),
            ..Self::new(reason, message)
        }
    }
}

impl From<Refusal> for Status {
    /// `PERMISSION_DENIED`, with an `ErrorInfo` whose reason is the code
    /// and whose metadata names the field or the limit.
    fn from(r: Refusal) -> Self {
        let mut metadata = HashMap::new();
        if let Some(f) = &r.field {
            metadata.insert("field".to_owned(), f.clone());
        }
        if let Some((limit, max)) = r.limit {
            metadata.insert("limit".to_owned(), limit.to_owned());
            metadata.insert("max".to_owned(), max.to_string());
        }
        let details = ErrorDetails::with_error_info(r.reason.code(), yrd_query::error::ERROR_DOMAIN, metadata);
        Status::with_error_details(tonic::Code::PermissionDenied, r.message, details)
    }
}

/// What the policy stage decided for one request: for the store's plan
/// (the permit), for the audit and for Explain (the rule, the refusal, the
/// treatments and why, the scope, the group threshold).
#[derive(Debug, Clone)]
pub struct Decision {
    /// The dataset.
    pub dataset: String,
    /// The application the decision was made for (its URI), if any.
    pub subject: Option<String>,
    /// The purpose declared.
    pub purpose: Option<String>,
    /// `grant:<id>`, `rule:unconditional` or `rule:deny-default`.
    pub rule: String,
    /// The deciding grant.
    pub grant: Option<Arc<Grant>>,
    /// Why the request is refused, if it is.
    pub refusal: Option<Refusal>,
    /// Per-column treatments, scope and key.
    pub permit: Permit,
    /// Why each column is treated as it is, in schema order.
    pub why: Vec<Why>,
    /// Aggregates leave out groups of fewer rows (0: none).
    pub min_group_size: u32,
    /// The deciding grant allows aggregates only.
    pub aggregate_only: bool,
}

impl Decision {
    /// The permit, or the refusal.
    pub fn permit(&self) -> Result<&Permit, Refusal> {
        match &self.refusal {
            Some(r) => Err(r.clone()),
            None => Ok(&self.permit),
        }
    }

    /// The deciding grant's id.
    pub fn grant_id(&self) -> Option<&str> {
        self.grant.as_deref().map(|g| g.id.as_str())
    }

    /// The row scope as its author wrote it.
    pub fn row_scope_text(&self) -> Option<&str> {
        self.grant.as_deref().and_then(|g| g.row_scope_text.as_deref())
    }

    /// Names of the fields shown masked (for the audit: names, never values).
    pub fn masked_fields(&self, schema: &DatasetSchema) -> Vec<String> {
        schema
            .fields
            .iter()
            .enumerate()
            .filter(|(i, _)| self.permit.mask(*i).is_some())
            .map(|(_, f)| f.name.clone())
            .collect()
    }

    /// The decision as Explain and the audit show it.
    pub fn to_proto(&self, region: &str, schema: &DatasetSchema) -> PolicyDecision {
        let grant = self.grant_id();
        let fields = schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (treatment, mask) = match self.permit.treatment(i) {
                    Treatment::Plain => ("plain", String::new()),
                    Treatment::Masked(m) => ("masked", m.name()),
                    Treatment::Refused => ("refused", String::new()),
                };
                FieldTreatment {
                    field: f.name.clone(),
                    treatment: treatment.to_owned(),
                    mask,
                    reason: self.why.get(i).copied().unwrap_or(Why::NotGranted).text(grant),
                }
            })
            .collect();
        PolicyDecision {
            region: region.to_owned(),
            allowed: self.refusal.is_none(),
            rule: self.rule.clone(),
            reason: self
                .refusal
                .as_ref()
                .map(|r| r.reason.code().to_owned())
                .unwrap_or_default(),
            message: self.refusal.as_ref().map(|r| r.message.clone()).unwrap_or_default(),
            row_scope: self.permit.row_scope().cloned(),
            row_scope_text: self.row_scope_text().unwrap_or_default().to_owned(),
            fields,
            min_group_size: self.min_group_size,
            aggregate_only: self.aggregate_only,
            subject: self.subject.clone().unwrap_or_default(),
            purpose: self.purpose.clone().unwrap_or_default(),
        }
    }
}

/// Decides what a caller may do. One entry point, so that grants, row
/// scopes and audit live behind it without touching the service.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// The decision for `who` running `access`: pure, reads no row and
    /// spends nothing (Explain calls only this).
    fn authorize(&self, who: &Principal, access: &Access<'_>) -> Decision;

    /// Spends what an allowed request costs (its grant's rate and use
    /// count), or refuses it ([`NodeError::Denied`]) when those are used up.
    fn admit<'a>(&'a self, who: &'a Principal, decision: &'a Decision) -> BoxFuture<'a, Result<(), NodeError>>;
}

/// Appends the field names of every comparison in `expr` to `out`, in the
/// order the filter reads. Iterative, so a tree of any depth is walked
/// whole (no field may escape the policy check).
pub fn filter_fields<'a>(expr: &'a FilterExpr, out: &mut Vec<&'a str>) {
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match &expr.kind {
            Some(filter_expr::Kind::Comparison(c)) => out.push(&c.field),
            Some(filter_expr::Kind::And(l) | filter_expr::Kind::Or(l)) => stack.extend(l.exprs.iter().rev()),
            Some(filter_expr::Kind::Not(inner)) => stack.push(inner),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::mesh::{CompareOp, Comparison, Value, value};

    fn eq(field: &str, v: &str) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: field.into(),
                op: CompareOp::Eq as i32,
                value: Some(Value {
                    kind: Some(value::Kind::StringValue(v.into())),
                }),
                prefix: false,
            })),
        }
    }

    #[test]
    fn a_row_scope_is_anded_around_the_users_filter() {
        let scope = eq("region", "320000");
        let permit = Permit::new(vec![Treatment::Plain; 12], Some(scope.clone()));
        let user = FilterExpr {
            kind: Some(filter_expr::Kind::Or(FilterList {
                exprs: vec![eq("city", "320500"), eq("status", "active")],
            })),
        };
        let scoped = permit.scoped_filter(Some(user.clone())).unwrap();
        assert_eq!(
            scoped,
            FilterExpr {
                kind: Some(filter_expr::Kind::And(FilterList {
                    exprs: vec![scope.clone(), user]
                }))
            }
        );
        assert_eq!(permit.scoped_filter(None), Some(scope));
        let open = Permit::new(vec![Treatment::Plain; 12], None);
        assert_eq!(open.scoped_filter(None), None);
    }

    #[test]
    fn refused_and_redacted_columns_are_not_read() {
        let permit = Permit::new(
            vec![
                Treatment::Plain,
                Treatment::Refused,
                Treatment::Masked(Mask::Redact),
                Treatment::Masked(Mask::Surname),
            ],
            None,
        );
        assert_eq!(permit.visible(&[0, 1, 2, 3]), vec![0, 3]);
    }

    #[test]
    fn a_refusal_is_permission_denied_with_its_code() {
        use tonic_types::StatusExt;
        let s = Status::from(Refusal::limit(
            Reason::RowLimitExceeded,
            "max_rows",
            100,
            "limit 500 exceeds max_rows = 100",
        ));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, "ROW_LIMIT_EXCEEDED");
        assert_eq!(info.domain, yrd_query::error::ERROR_DOMAIN);
        assert_eq!(info.metadata["limit"], "max_rows");
        assert_eq!(info.metadata["max"], "100");
        assert!(s.message().contains("max_rows"));
    }
}

#[cfg(test)]
mod figures;
