//! The node's policy: the rules of the sharing classes, the grants of the
//! policy file and of the other grant sources, evaluated for one request.
//!
//! Evaluation, in order (the first refusal wins):
//!
//! 1. The subject must be an application (`NOT_AN_APPLICATION`); no
//!    subject (insecure development mode) is an application without grants.
//! 2. The region's dataset settings: a closed dataset (`DATASET_NOT_SHARED`),
//!    a purpose required by the dataset (`PURPOSE_REQUIRED`).
//! 3. A not-shared field touched anywhere — projection, filter, order,
//!    group-by, metrics — is refused (`FIELD_NOT_SHARED`), whatever a grant says.
//! 4. Grant selection: the grants naming the application (or a group of
//!    it) and the dataset are the candidates. A candidate is usable when
//!    its validity window holds now, the declared purpose is allowed, and
//!    (for rows) it is not aggregate-only. Of the usable ones, the grant
//!    covering the most of the non-open fields the query touches decides
//!    (with an empty projection, the most non-open fields of the dataset);
//!    ties go to the smallest grant id. Grants are never combined, so one
//!    grant's scope and masks hold for the whole answer.
//! 5. Without a usable grant, a query touching only open fields (shared
//!    unconditionally, the dataset not tightened) runs under
//!    `rule:unconditional`; otherwise it is refused with the first
//!    candidate's reason (`GRANT_EXPIRED`, `GRANT_NOT_YET_VALID`,
//!    `PURPOSE_REQUIRED`, `PURPOSE_NOT_ALLOWED`, `AGGREGATE_ONLY`), or
//!    `NO_GRANT` without candidates.
//! 6. With a grant: named fields it does not cover are refused
//!    (`FIELD_NOT_GRANTED`), masked ones may not be filtered, sorted,
//!    grouped or aggregated beyond a count (`FIELD_MASKED`), and a page
//!    larger than `max_rows` is refused (`ROW_LIMIT_EXCEEDED`).
//! 7. [`Policy::admit`]: the grant's rate (`RATE_EXCEEDED`) and use count
//!    (`USES_EXHAUSTED`) are spent, rate first.
//!
//! Group threshold of aggregates: the grant's `min_group_size`, else the
//! dataset's, else, for an aggregate-only grant, `[policy] min_group_size`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::broadcast;
use yrd_identity::{Role, Secret};
use yrd_proto::mesh::{Sensitivity, SharingClass};
use yrd_proto::schema::{DatasetSchema, Registry};

use super::file::{DatasetRules, PolicyFile};
use super::grant::{GrantSource, Grantee, Shown, UseLedger};
use super::limits::{MemoryLedger, RateLimiter};
use super::reload::ReloadEvent;
use super::{
    Access, AccessKind, AppKey, Decision, Grant, Mask, Permit, Policy, RULE_DENY_DEFAULT, RULE_GRANT_PREFIX,
    RULE_UNCONDITIONAL, Reason, Refusal, Treatment, Why, filter_fields,
};
use crate::error::NodeError;
use crate::principal::Principal;

/// Reload events buffered for slow subscribers (older ones are dropped).
const RELOAD_EVENTS: usize = 16;

/// The node's policy: the current policy file (swapped whole on reload),
/// the other grant sources, the rate buckets and the use ledger.
#[derive(Debug)]
pub struct NodePolicy {
    file: RwLock<Arc<PolicyFile>>,
    sources: Vec<Arc<dyn GrantSource>>,
    ledger: Arc<dyn UseLedger>,
    rates: RateLimiter,
    hash_secret: Option<Secret>,
    default_min_group_size: u32,
    /// Default masks of the registry's fields, parsed once: (dataset, field).
    defaults: HashMap<(String, usize), Mask>,
    events: broadcast::Sender<ReloadEvent>,
}

impl NodePolicy {
    /// A policy over the datasets of `schemas` with the grants of `file`,
    /// the node's `hash` secret (if any) and the threshold of aggregate-only
    /// grants naming none. Fails when a field's default mask does not parse
    /// or fit its field, or a personal or secret field has none.
    pub fn new(
        schemas: &Registry,
        file: PolicyFile,
        hash_secret: Option<Secret>,
        default_min_group_size: u32,
    ) -> Result<Self, NodeError> {
        let mut defaults = HashMap::new();
        for schema in schemas.datasets() {
            for (i, f) in schema.fields.iter().enumerate() {
                let bad =
                    |reason: String| NodeError::Schema(format!("{}.{}: default_mask: {reason}", schema.id, f.name));
                match f.default_mask.as_deref().map(str::trim) {
                    Some(text) if !text.is_empty() => {
                        let m = Mask::parse(text).map_err(|e| bad(e.0))?;
                        m.check_type(f.ty).map_err(|e| bad(e.0))?;
                        if m == Mask::Hash {
                            return Err(bad("hash is not a default mask (it needs a key per application)".into()));
                        }
                        defaults.insert((schema.id.clone(), i), m);
                    }
                    _ if f.is_confidential() => return Err(bad("required for a personal or secret field".into())),
                    _ => {}
                }
            }
        }
        let (events, _) = broadcast::channel(RELOAD_EVENTS);
        Ok(Self {
            file: RwLock::new(Arc::new(file)),
            sources: Vec::new(),
            ledger: Arc::new(MemoryLedger::default()),
            rates: RateLimiter::default(),
            hash_secret: hash_secret.filter(|s| !s.is_empty()),
            default_min_group_size,
            defaults,
            events,
        })
    }

    /// Adds a source of grants (approved access requests).
    #[must_use]
    pub fn with_source(mut self, source: Arc<dyn GrantSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Replaces the use ledger (the in-memory one by default).
    #[must_use]
    pub fn with_ledger(mut self, ledger: Arc<dyn UseLedger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Whether the node has a secret for the `hash` mask.
    pub fn has_hash_key(&self) -> bool {
        self.hash_secret.is_some()
    }

    /// The policy file in force.
    pub fn file(&self) -> Arc<PolicyFile> {
        self.file
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the policy file at once: requests decided after this see
    /// only the new one.
    pub fn replace(&self, file: PolicyFile) {
        *self.file.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(file);
    }

    /// Reload events (`policy.reload`, good or bad), for the audit.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// Tells subscribers about a reload; nobody listening is fine.
    pub(crate) fn publish(&self, event: ReloadEvent) {
        let _ = self.events.send(event);
    }

    /// Evaluates at `now` (tests pass their own clock).
    pub fn authorize_at(&self, who: &Principal, access: &Access<'_>, now: SystemTime) -> Decision {
        let file = self.file();
        let schema = access.schema;
        let n = schema.fields.len();
        let mut d = Decision {
            dataset: schema.id.clone(),
            subject: who.subject.as_ref().map(yrd_identity::PeerId::uri),
            purpose: who.purpose.clone(),
            rule: RULE_DENY_DEFAULT.to_owned(),
            grant: None,
            refusal: None,
            permit: Permit::refuse_all(n),
            why: vec![Why::NotGranted; n],
            min_group_size: 0,
            aggregate_only: false,
        };
        let refuse = |mut d: Decision, r: Refusal| {
            d.refusal = Some(r);
            d
        };
        let app = match &who.subject {
            None => None,
            Some(p) if p.role == Role::App => Some(p.name.as_str()),
            Some(p) => {
                return refuse(
                    d,
                    Refusal::new(
                        Reason::NotAnApplication,
                        format!(
                            "data is shared with applications only; this request is for a {}",
                            p.kind()
                        ),
                    ),
                );
            }
        };
        let rules = file.datasets.get(&schema.id).cloned().unwrap_or_default();
        if rules.class == Some(SharingClass::NotShared) {
            d.why = vec![Why::NotShared; n];
            return refuse(
                d,
                Refusal::new(
                    Reason::DatasetNotShared,
                    format!("this region does not share dataset {}", schema.id),
                ),
            );
        }
        let purpose = who.purpose.as_deref().map(str::trim).filter(|p| !p.is_empty());
        if rules.require_purpose && purpose.is_none() {
            return refuse(
                d,
                Refusal::new(
                    Reason::PurposeRequired,
                    format!("this region requires a declared purpose for dataset {}", schema.id),
                ),
            );
        }
        let open = |i: usize| is_open(schema, &rules, i);
        let not_shared = |i: usize| schema.fields[i].sharing == SharingClass::NotShared;
        let touched = touched_fields(access);
        if let Some(&(i, param)) = touched.iter().find(|(i, _)| not_shared(*i)) {
            let name = &schema.fields[i].name;
            d.why = (0..n)
                .map(|i| if not_shared(i) { Why::NotShared } else { Why::NotGranted })
                .collect();
            return refuse(
                d,
                Refusal::field(
                    Reason::FieldNotShared,
                    name,
                    format!("{param}: field {name} is not shared by this region"),
                ),
            );
        }
        // The fields the grant must cover: those touched that are not open,
        // or with an empty projection every non-open shared field.
        let mut wanted: Vec<usize> = touched.iter().map(|(i, _)| *i).filter(|&i| !open(i)).collect();
        let needs_grant = !wanted.is_empty() || (!access.explicit && (0..n).all(|i| !open(i) || not_shared(i)));
        if !access.explicit && access.kind != AccessKind::Aggregate {
            wanted.extend((0..n).filter(|&i| !open(i) && !not_shared(i)));
        }
        wanted.sort_unstable();
        wanted.dedup();

        let mut candidates: Vec<Arc<Grant>> = Vec::new();
        if let Some(app) = app {
            let applies = |g: &Grant| g.datasets.contains(&schema.id) && names(g, app, &file);
            candidates.extend(file.grants.iter().filter(|g| applies(g)).cloned());
            for s in &self.sources {
                let grants = s.grants();
                candidates.extend(grants.iter().filter(|g| applies(g)).map(|g| Arc::new(g.clone())));
            }
        }
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        let mut first_failure = None;
        let mut best: Option<(usize, Arc<Grant>)> = None;
        for g in candidates {
            match usable(&g, now, purpose, access.kind) {
                Err(r) => {
                    first_failure.get_or_insert(r);
                }
                Ok(()) => {
                    let score = wanted
                        .iter()
                        .filter(|&&i| g.fields.covers(&schema.fields[i].name))
                        .count();
                    if best.as_ref().is_none_or(|(s, _)| score > *s) {
                        best = Some((score, g));
                    }
                }
            }
        }
        let Some((_, grant)) = best else {
            if needs_grant {
                let field = wanted.first().map(|&i| schema.fields[i].name.as_str());
                let r = first_failure.unwrap_or_else(|| match field {
                    Some(f) => Refusal::field(
                        Reason::NoGrant,
                        f,
                        format!(
                            "no grant of this region gives this application field {f} of {}",
                            schema.id
                        ),
                    ),
                    None => Refusal::new(
                        Reason::NoGrant,
                        format!("no grant of this region gives this application dataset {}", schema.id),
                    ),
                });
                d.why = (0..n)
                    .map(|i| if not_shared(i) { Why::NotShared } else { Why::NotGranted })
                    .collect();
                return refuse(d, r);
            }
            // Open fields only.
            let (treatments, why) = (0..n)
                .map(|i| {
                    if not_shared(i) {
                        (Treatment::Refused, Why::NotShared)
                    } else if open(i) {
                        self.default_treatment(schema, i)
                    } else {
                        (Treatment::Refused, Why::NotGranted)
                    }
                })
                .unzip();
            d.rule = RULE_UNCONDITIONAL.to_owned();
            d.why = why;
            d.permit = Permit::new(treatments, None);
            d.min_group_size = rules.min_group_size.unwrap_or(0);
            return self.finish(d, access, who, Reason::NoGrant);
        };
        let mut why = Vec::with_capacity(n);
        let mut treatments = Vec::with_capacity(n);
        for (i, f) in schema.fields.iter().enumerate() {
            let (t, w) = if not_shared(i) {
                (Treatment::Refused, Why::NotShared)
            } else if grant.fields.covers(&f.name) || open(i) {
                match grant.shown.get(&f.name) {
                    Some(Shown::Plain) => (Treatment::Plain, Why::Granted),
                    // A mask a grant source wrote wrong fails closed.
                    Some(Shown::Mask(m)) => match Mask::parse(m).ok().filter(|m| m.check_type(f.ty).is_ok()) {
                        Some(m) => (Treatment::Masked(m), Why::Granted),
                        None => (Treatment::Refused, Why::NotGranted),
                    },
                    None if grant.fields.covers(&f.name) && !open(i) => {
                        let (t, w) = self.default_treatment(schema, i);
                        (t, if w == Why::DefaultMask { w } else { Why::Granted })
                    }
                    None => self.default_treatment(schema, i),
                }
            } else {
                (Treatment::Refused, Why::NotGranted)
            };
            treatments.push(t);
            why.push(w);
        }
        d.rule = format!("{RULE_GRANT_PREFIX}{}", grant.id);
        d.why = why;
        d.permit = Permit::new(treatments, grant.row_scope.clone());
        d.aggregate_only = grant.aggregate_only;
        d.min_group_size = grant
            .min_group_size
            .or(rules.min_group_size)
            .unwrap_or(if grant.aggregate_only {
                self.default_min_group_size
            } else {
                0
            });
        if let (AccessKind::Rows { limit }, Some(max)) = (access.kind, grant.max_rows)
            && limit > max
        {
            d.grant = Some(grant);
            return refuse(
                d,
                Refusal::limit(
                    Reason::RowLimitExceeded,
                    "max_rows",
                    max,
                    format!("limit: {limit} rows per page exceeds the grant's max_rows = {max}"),
                ),
            );
        }
        d.grant = Some(grant);
        self.finish(d, access, who, Reason::FieldNotGranted)
    }

    /// The last checks of an allowed decision: named fields that are
    /// refused, masked fields used where they would leak; then the
    /// application's `hash` key when a `hash` mask is used.
    fn finish(&self, mut d: Decision, access: &Access<'_>, who: &Principal, not_granted: Reason) -> Decision {
        let schema = access.schema;
        if access.explicit
            && let Some(&f) = access
                .projection
                .iter()
                .find(|&&f| d.permit.treatment(f) == Treatment::Refused)
        {
            let name = &schema.fields[f].name;
            let msg = match &d.grant {
                Some(g) => format!("fields: grant {} does not give field {name}", g.id),
                None => format!("fields: no grant of this region gives this application field {name}"),
            };
            d.refusal = Some(Refusal::field(not_granted, name, msg));
            return d;
        }
        if let Err(r) = d.permit.check(access, not_granted) {
            d.refusal = Some(r);
            return d;
        }
        let uses_hash = d.permit.treatments().contains(&Treatment::Masked(Mask::Hash));
        if uses_hash {
            let key = match (&self.hash_secret, &who.subject) {
                (Some(secret), Some(subject)) => Some(AppKey::derive(secret.expose().as_bytes(), &subject.uri())),
                // Without a key a hashed field is withheld (the encoder
                // writes nothing), never shown.
                _ => None,
            };
            d.permit = d.permit.with_app_key(key);
        }
        d
    }

    /// A field's treatment without a grant's say: its default mask, else plain.
    fn default_treatment(&self, schema: &DatasetSchema, i: usize) -> (Treatment, Why) {
        match self.defaults.get(&(schema.id.clone(), i)) {
            Some(m) => (Treatment::Masked(*m), Why::DefaultMask),
            None if matches!(
                schema.fields[i].sensitivity,
                Sensitivity::Personal | Sensitivity::Secret
            ) =>
            {
                (Treatment::Masked(Mask::Redact), Why::DefaultMask)
            }
            None => (Treatment::Plain, Why::Unconditional),
        }
    }
}

impl Policy for NodePolicy {
    fn authorize(&self, who: &Principal, access: &Access<'_>) -> Decision {
        self.authorize_at(who, access, SystemTime::now())
    }

    fn admit<'a>(&'a self, who: &'a Principal, decision: &'a Decision) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            decision.permit().map_err(NodeError::Denied)?;
            let (Some(grant), Some(subject)) = (&decision.grant, &who.subject) else {
                return Ok(());
            };
            let uri = subject.uri();
            if let Some(rate) = grant.rate_per_minute
                && !self.rates.take(&grant.id, &uri, rate, Instant::now())
            {
                return Err(NodeError::Denied(Refusal::limit(
                    Reason::RateExceeded,
                    "rate_per_minute",
                    u64::from(rate),
                    format!("grant {} allows {rate} queries per minute; try again later", grant.id),
                )));
            }
            if let Some(max) = grant.max_uses
                && !self.ledger.take(&grant.id, &uri, max).await?
            {
                return Err(NodeError::Denied(Refusal::limit(
                    Reason::UsesExhausted,
                    "max_uses",
                    max,
                    format!("grant {} allows {max} uses, all used", grant.id),
                )));
            }
            Ok(())
        })
    }
}

/// Whether field `i` is open to every application: unconditionally shared,
/// in a dataset the region did not tighten.
fn is_open(schema: &DatasetSchema, rules: &DatasetRules, i: usize) -> bool {
    rules.class != Some(SharingClass::Conditional) && schema.fields[i].sharing == SharingClass::Unconditional
}

/// Whether grant `g` names application `app`, directly or by a group.
fn names(g: &Grant, app: &str, file: &PolicyFile) -> bool {
    g.grantees.iter().any(|who| match who {
        Grantee::App(a) => a == app,
        Grantee::Group(group) => file.groups.get(group).is_some_and(|m| m.contains(app)),
    })
}

/// Whether grant `g` may decide a request now, or why not.
fn usable(g: &Grant, now: SystemTime, purpose: Option<&str>, kind: AccessKind) -> Result<(), Refusal> {
    if g.not_before.is_some_and(|t| now < t) {
        return Err(Refusal::new(
            Reason::GrantNotYetValid,
            format!("grant {} is not valid yet", g.id),
        ));
    }
    if g.not_after.is_some_and(|t| now > t) {
        return Err(Refusal::new(
            Reason::GrantExpired,
            format!("grant {} has expired", g.id),
        ));
    }
    if !g.purposes.is_empty() {
        match purpose {
            None => {
                return Err(Refusal::new(
                    Reason::PurposeRequired,
                    format!("grant {} requires a declared purpose", g.id),
                ));
            }
            // The purpose is the caller's text: not echoed.
            Some(p) if !g.purposes.iter().any(|a| a == p) => {
                return Err(Refusal::new(
                    Reason::PurposeNotAllowed,
                    format!("the declared purpose is not one grant {} allows", g.id),
                ));
            }
            Some(_) => {}
        }
    }
    if g.aggregate_only && kind != AccessKind::Aggregate {
        return Err(Refusal::new(
            Reason::AggregateOnly,
            format!("grant {} allows aggregates only, no rows", g.id),
        ));
    }
    Ok(())
}

/// The fields a request touches, each with the parameter touching it:
/// the named projection, the filter, the order, the group-by and metrics.
fn touched_fields(access: &Access<'_>) -> Vec<(usize, &'static str)> {
    let schema = access.schema;
    let mut out = Vec::new();
    if access.explicit {
        out.extend(access.projection.iter().map(|&f| (f, "fields")));
    }
    if let Some(filter) = access.filter {
        let mut names = Vec::new();
        filter_fields(filter, &mut names);
        out.extend(
            names
                .into_iter()
                .filter_map(|n| schema.field(n))
                .map(|(i, _)| (i, "filter")),
        );
    }
    out.extend(access.order.iter().map(|k| (k.field, "order_by")));
    out.extend(access.group_by.iter().map(|&g| (g, "group_by")));
    out.extend(access.metrics.iter().filter_map(|(_, f)| f.map(|f| (f, "metrics"))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SortColumn;
    use std::time::Duration;
    use yrd_identity::PeerId;
    use yrd_proto::mesh::{AggregateFunction, FilterExpr};
    use yrd_query::Limits;

    const TD: &str = "yrd.mesh";

    fn schemas() -> &'static Registry {
        Registry::standard().unwrap()
    }

    fn ent() -> Arc<DatasetSchema> {
        schemas().get("enterprise").unwrap().clone()
    }

    fn policy(text: &str) -> NodePolicy {
        let file = PolicyFile::parse(text, "policy.toml", schemas(), &Limits::default(), true).unwrap();
        NodePolicy::new(schemas(), file, Some(Secret::new("node-secret-for-tests-0123")), 5).unwrap()
    }

    fn app(name: &str) -> Principal {
        Principal {
            subject: Some(PeerId::app(TD, name).unwrap()),
            ..Principal::default()
        }
    }

    fn rows<'a>(schema: &'a DatasetSchema, fields: &'a [usize]) -> Access<'a> {
        Access {
            schema,
            filter: None,
            order: &[],
            projection: fields,
            explicit: !fields.is_empty(),
            group_by: &[],
            metrics: &[],
            kind: AccessKind::Rows { limit: 100 },
        }
    }

    /// Rows filtered by `filter`.
    fn filtered<'a>(schema: &'a DatasetSchema, filter: &'a FilterExpr) -> Access<'a> {
        Access {
            filter: Some(filter),
            ..rows(schema, &[])
        }
    }

    /// Rows sorted by `order`.
    fn sorted<'a>(schema: &'a DatasetSchema, order: &'a [SortColumn]) -> Access<'a> {
        Access {
            order,
            ..rows(schema, &[])
        }
    }

    /// An aggregate of no groups and no metrics, for the cases to fill in.
    fn aggregate(schema: &DatasetSchema) -> Access<'_> {
        Access {
            kind: AccessKind::Aggregate,
            ..rows(schema, &[])
        }
    }

    /// `text` as a checked filter over `schema`.
    fn filter_of(schema: &DatasetSchema, text: &str) -> FilterExpr {
        yrd_query::filter::parse_filter(text, schema, &Limits::default())
            .unwrap()
            .unwrap()
    }

    fn idx(schema: &DatasetSchema, names: &[&str]) -> Vec<usize> {
        names.iter().map(|n| schema.field(n).unwrap().0).collect()
    }

    fn reason(d: &Decision) -> Option<&'static str> {
        d.refusal.as_ref().map(|r| r.reason.code())
    }

    /// A `[[grant]]` of the enterprise register to the application `app`:
    /// `fields` as TOML (`"*"` or a list), then any further `keys` (lines).
    fn grant(id: &str, app: &str, fields: &str, keys: &str) -> String {
        format!(
            "[[grant]]\nid = \"{id}\"\napps = [\"{app}\"]\ndatasets = [\"enterprise\"]\nfields = {fields}\n{keys}\n"
        )
    }

    /// Every field the grant's dataset shares.
    const ALL: &str = "\"*\"";
    /// Only the (conditionally shared) address.
    const ADDRESS: &str = "[\"address\"]";

    const FILE: &str = r#"
[groups]
dash = ["dashboard", "planner"]

[[grant]]
id = "b-ids"
groups = ["dash"]
datasets = ["enterprise"]
fields = ["legal_representative", "representative_id_number"]
masks = { legal_representative = "plain" }
row_scope = 'city = "310100"'

[[grant]]
id = "a-address"
apps = ["dashboard"]
datasets = ["enterprise"]
fields = ["address"]
"#;

    #[test]
    fn unconditional_fields_are_open_and_the_rest_left_out() {
        let p = policy("");
        let schema = ent();
        let d = p.authorize(&app("anyone"), &rows(&schema, &[]));
        assert_eq!(reason(&d), None);
        assert_eq!(d.rule, RULE_UNCONDITIONAL);
        let names = |t: Treatment| -> Vec<&str> {
            (0..schema.fields.len())
                .filter(|&i| d.permit.treatment(i) == t)
                .map(|i| schema.fields[i].name.as_str())
                .collect()
        };
        assert_eq!(
            names(Treatment::Refused),
            [
                "legal_representative",
                "representative_id_number",
                "address",
                "contact_phone",
                "credit_risk_class"
            ]
        );
        // No subject (insecure mode) is an application without grants.
        let d = p.authorize(&Principal::default(), &rows(&schema, &[]));
        assert_eq!(d.rule, RULE_UNCONDITIONAL);
        // Naming a conditional field without a grant is refused, naming it.
        let f = idx(&schema, &["name", "address"]);
        let d = p.authorize(&app("anyone"), &rows(&schema, &f));
        assert_eq!(reason(&d), Some("NO_GRANT"));
        assert_eq!(d.refusal.unwrap().field.as_deref(), Some("address"));
    }

    #[test]
    fn the_grant_covering_most_decides_and_ties_go_to_the_smallest_id() {
        let p = policy(FILE);
        let schema = ent();
        let f = idx(&schema, &["name", "legal_representative"]);
        let d = p.authorize(&app("dashboard"), &rows(&schema, &f));
        assert_eq!(d.rule, "grant:b-ids");
        let (lr, id) = (
            idx(&schema, &["legal_representative"])[0],
            idx(&schema, &["representative_id_number"])[0],
        );
        assert_eq!(d.permit.treatment(lr), Treatment::Plain);
        // The id number's default mask is `redact`: left out of the rows.
        assert_eq!(d.permit.treatment(id), Treatment::Masked(Mask::Redact));
        assert!(d.permit.row_scope().is_some());
        let f = idx(&schema, &["address"]);
        let d = p.authorize(&app("dashboard"), &rows(&schema, &f));
        assert_eq!(d.rule, "grant:a-address");
        assert!(d.permit.row_scope().is_none());
        // Empty projection: b-ids covers two conditional fields, a-address one.
        let d = p.authorize(&app("dashboard"), &rows(&schema, &[]));
        assert_eq!(d.rule, "grant:b-ids");
        // planner has only b-ids (through the group); address is not granted.
        let f = idx(&schema, &["address"]);
        let d = p.authorize(&app("planner"), &rows(&schema, &f));
        assert_eq!(reason(&d), Some("FIELD_NOT_GRANTED"));
        assert!(d.refusal.unwrap().message.contains("address"));
    }

    #[test]
    fn not_shared_fields_are_refused_everywhere() {
        let p = policy(&grant("all", "a", ALL, ""));
        let schema = ent();
        let risk = idx(&schema, &["credit_risk_class"]);
        let order = [SortColumn::asc(risk[0])];
        let metrics = [(AggregateFunction::Count, Some(risk[0]))];
        let filter = filter_of(&schema, "credit_risk_class = \"A\"");
        let agg = aggregate(&schema);
        let cases = [
            rows(&schema, &risk),
            filtered(&schema, &filter),
            sorted(&schema, &order),
            Access { group_by: &risk, ..agg },
            Access {
                metrics: &metrics,
                ..agg
            },
        ];
        for a in cases {
            let d = p.authorize(&app("a"), &a);
            assert_eq!(reason(&d), Some("FIELD_NOT_SHARED"));
            assert_eq!(d.refusal.unwrap().field.as_deref(), Some("credit_risk_class"));
        }
        // With every field asked implicitly, the grant opens all but it.
        let d = p.authorize(&app("a"), &rows(&schema, &[]));
        assert_eq!(d.permit.treatment(risk[0]), Treatment::Refused);
        assert_eq!(d.why[risk[0]], Why::NotShared);
    }

    #[test]
    fn validity_purpose_and_kind_refuse_with_their_codes() {
        let p = policy(
            &[
                grant("old", "old", ADDRESS, "not_after = 2020-01-01"),
                grant("future", "future", ADDRESS, "not_before = 2999-01-01"),
                grant("purposeful", "p", ADDRESS, r#"purposes = ["supervision"]"#),
                grant("sums", "agg", ALL, "aggregate_only = true"),
            ]
            .concat(),
        );
        let schema = ent();
        let f = idx(&schema, &["address"]);
        let a = rows(&schema, &f);
        assert_eq!(reason(&p.authorize(&app("old"), &a)), Some("GRANT_EXPIRED"));
        assert_eq!(reason(&p.authorize(&app("future"), &a)), Some("GRANT_NOT_YET_VALID"));
        assert_eq!(reason(&p.authorize(&app("p"), &a)), Some("PURPOSE_REQUIRED"));
        let mut with = app("p");
        with.purpose = Some("marketing".into());
        let d = p.authorize(&with, &a);
        assert_eq!(reason(&d), Some("PURPOSE_NOT_ALLOWED"));
        assert!(!d.refusal.unwrap().message.contains("marketing"));
        with.purpose = Some("supervision".into());
        assert_eq!(reason(&p.authorize(&with, &a)), None);
        assert_eq!(reason(&p.authorize(&app("agg"), &a)), Some("AGGREGATE_ONLY"));
        let g = idx(&schema, &["city"]);
        let agg = Access {
            group_by: &g,
            ..aggregate(&schema)
        };
        let d = p.authorize(&app("agg"), &agg);
        assert_eq!(reason(&d), None);
        assert!(d.aggregate_only);
        assert_eq!(d.min_group_size, 5, "the config default for aggregate-only grants");
        // The same clock, moved: the old grant was valid in 2019.
        let d = p.authorize_at(
            &app("old"),
            &a,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_560_000_000),
        );
        assert_eq!(reason(&d), None);
    }

    #[test]
    fn a_tightened_dataset_needs_a_grant_for_every_field_and_a_closed_one_is_refused() {
        let p =
            policy("[datasets.enterprise]\nclass = \"conditional\"\n[datasets.air_quality]\nclass = \"not_shared\"\n");
        let schema = ent();
        let d = p.authorize(&app("a"), &rows(&schema, &[]));
        assert_eq!(reason(&d), Some("NO_GRANT"));
        let air = schemas().get("air_quality").unwrap().clone();
        assert_eq!(
            reason(&p.authorize(&app("a"), &rows(&air, &[]))),
            Some("DATASET_NOT_SHARED")
        );
    }

    #[test]
    fn non_applications_are_refused() {
        let p = policy(FILE);
        let schema = ent();
        for who in [
            PeerId::operator(TD, "310000", "op").unwrap(),
            PeerId::auditor(TD, "310000", "au").unwrap(),
            PeerId::gateway(TD, "gw").unwrap(),
        ] {
            let d = p.authorize(
                &Principal {
                    subject: Some(who),
                    ..Principal::default()
                },
                &rows(&schema, &[]),
            );
            assert_eq!(reason(&d), Some("NOT_AN_APPLICATION"));
        }
    }

    #[test]
    fn masked_fields_may_not_be_filtered_sorted_grouped_or_summed() {
        let p = policy(&grant(
            "g",
            "a",
            ALL,
            r#"masks = { registered_capital = "round(4)", city = "hash" }"#,
        ));
        let schema = ent();
        let cap = idx(&schema, &["registered_capital"])[0];
        let city = idx(&schema, &["city"]);
        let filter = filter_of(&schema, "registered_capital > 5");
        let order = [SortColumn::desc(cap)];
        let agg = aggregate(&schema);
        let max = [(AggregateFunction::Max, Some(cap))];
        let sum = [(AggregateFunction::Sum, Some(cap))];
        for a in [
            filtered(&schema, &filter),
            sorted(&schema, &order),
            Access { group_by: &city, ..agg },
            Access { metrics: &max, ..agg },
            Access { metrics: &sum, ..agg },
        ] {
            let d = p.authorize(&app("a"), &a);
            assert_eq!(reason(&d), Some("FIELD_MASKED"), "{a:?}");
        }
        let count = [(AggregateFunction::Count, Some(cap))];
        assert_eq!(
            reason(&p.authorize(&app("a"), &Access { metrics: &count, ..agg })),
            None
        );
        // A hash mask comes with this application's key; another's differs.
        let a = p.authorize(&app("a"), &rows(&schema, &[]));
        assert!(a.permit.app_key().is_some());
    }

    #[test]
    fn a_page_beyond_max_rows_is_refused_naming_the_limit() {
        let p = policy(&grant("g", "a", ALL, "max_rows = 50"));
        let schema = ent();
        let d = p.authorize(&app("a"), &rows(&schema, &[]));
        assert_eq!(reason(&d), Some("ROW_LIMIT_EXCEEDED"));
        assert_eq!(d.refusal.as_ref().unwrap().limit, Some(("max_rows", 50)));
        let small = Access {
            kind: AccessKind::Rows { limit: 50 },
            ..rows(&schema, &[])
        };
        assert_eq!(reason(&p.authorize(&app("a"), &small)), None);
    }

    #[tokio::test]
    async fn admit_spends_rate_then_uses() {
        let p = policy(&(grant("r", "a", ALL, "rate_per_minute = 2") + &grant("u", "b", ALL, "max_uses = 1")));
        let schema = ent();
        let code = |r: Result<(), NodeError>| match r {
            Ok(()) => None,
            Err(NodeError::Denied(r)) => Some(r.reason.code()),
            Err(e) => panic!("{e}"),
        };
        let (a, b) = (app("a"), app("b"));
        let da = p.authorize(&a, &rows(&schema, &[]));
        assert_eq!(code(p.admit(&a, &da).await), None);
        assert_eq!(code(p.admit(&a, &da).await), None);
        assert_eq!(code(p.admit(&a, &da).await), Some("RATE_EXCEEDED"));
        let db = p.authorize(&b, &rows(&schema, &[]));
        assert_eq!(code(p.admit(&b, &db).await), None);
        assert_eq!(code(p.admit(&b, &db).await), Some("USES_EXHAUSTED"));
    }

    #[test]
    fn the_decision_explains_each_field() {
        let p = policy(FILE);
        let schema = ent();
        let d = p.authorize(&app("dashboard"), &rows(&schema, &[]));
        let proto = d.to_proto("310000", &schema);
        assert!(proto.allowed);
        assert_eq!(proto.rule, "grant:b-ids");
        assert_eq!(proto.row_scope_text, "city = \"310100\"");
        let by = |n: &str| proto.fields.iter().find(|f| f.field == n).unwrap().clone();
        assert_eq!(
            (
                by("legal_representative").treatment.as_str(),
                by("legal_representative").reason.as_str()
            ),
            ("plain", "granted by b-ids")
        );
        assert_eq!(by("representative_id_number").mask, "redact");
        assert_eq!(by("representative_id_number").reason, "default mask");
        assert_eq!(by("credit_risk_class").reason, "not shared");
        assert_eq!(by("address").treatment, "refused");
        assert_eq!(by("name").reason, "unconditionally shared");
        assert_eq!(d.masked_fields(&schema), ["representative_id_number"]);
    }
}
