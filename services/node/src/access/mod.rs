//! The access workflow for conditionally shared data, kept by the
//! providing region: an application applies ([`Workflow::request`]), the
//! region's operators list what waits against the answer deadline
//! ([`Workflow::list`]), approve — possibly narrowing fields, row scope or
//! validity — or refuse with a reason ([`Workflow::decide`]), and may
//! revoke an approval later ([`Workflow::revoke`]).
//!
//! Approved requests are grants: the workflow is a [`GrantSource`] whose
//! in-memory snapshot is replaced on every decision and revocation, so the
//! policy stage sees a revocation on the very next request (page tokens
//! handed out earlier included: each page is a new request). It is also the
//! [`UseLedger`] of grants with a use limit. Everything durable lives in
//! the access database ([`crate::store::sqlite::access`]).
//!
//! Every change yields an [`AccessEvent`] for the audit log, delivered to
//! the [`EventSink`] (when one is set) before the caller is answered.

pub mod days;
pub mod model;
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use yrd_identity::{PeerId, Role};
use yrd_proto::mesh::{self, FilterExpr, FilterList, SharingClass, filter_expr};
use yrd_proto::schema::{DatasetSchema, Registry};
use yrd_query::{Limits, QueryError};

use crate::config::{ConfigError, NodeConfig, StoreConfig};
use crate::error::NodeError;
use crate::policy::grant::{Fields, Grant, GrantSource, Grantee, Origin, UseLedger};
use crate::principal::Principal;
use crate::store::sqlite::access::{AccessDb, Inserted, Transition};
use days::{Calendar, day_end, region_date, unix_seconds};
use model::{Decision, NewRequest, Revocation, State, StoredRequest, Verdict};

/// `[access]`: the answer deadline, validity and size limits of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// The access database; default: beside the store file, its name with
    /// `.access.sqlite` (`node.sqlite` → `node.access.sqlite`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Working days the region has to answer a request (the 2016 measures
    /// say 10).
    pub answer_within_working_days: u32,
    /// Weekdays that are not working days (`YYYY-MM-DD`).
    pub holidays: Vec<String>,
    /// Weekend days that are working days (`YYYY-MM-DD`).
    pub working_weekends: Vec<String>,
    /// Longest access that may be applied for, from today (`"365d"`).
    #[serde(with = "humantime_serde")]
    pub max_validity: Duration,
    /// Longest purpose, in characters.
    pub max_purpose_chars: usize,
    /// Longest reason of a decision or revocation, in characters.
    pub max_reason_chars: usize,
    /// Pending requests one application may have in this region.
    pub max_pending_per_applicant: u64,
    /// Most requests one list answer holds.
    pub max_listed: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            path: None,
            answer_within_working_days: 10,
            holidays: Vec::new(),
            working_weekends: Vec::new(),
            max_validity: Duration::from_secs(365 * 86_400),
            max_purpose_chars: 200,
            max_reason_chars: 1000,
            max_pending_per_applicant: 50,
            max_listed: 1000,
        }
    }
}

impl AccessConfig {
    /// Resolves a relative `path` against `base` (the config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        if let Some(p) = self.path.as_mut()
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            path: origin.to_owned(),
            key: format!("access.{key}"),
            reason,
        };
        if !(1..=250).contains(&self.answer_within_working_days) {
            return Err(err(
                "answer_within_working_days",
                format!("{} is not in 1..=250", self.answer_within_working_days),
            ));
        }
        if self.max_validity < Duration::from_secs(86_400) {
            return Err(err("max_validity", "must be at least 1 day".into()));
        }
        for (key, value) in [
            ("max_purpose_chars", self.max_purpose_chars),
            ("max_reason_chars", self.max_reason_chars),
            ("max_listed", self.max_listed),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(err(key, format!("{value} is not in 1..=100000")));
            }
        }
        if self.max_pending_per_applicant == 0 {
            return Err(err("max_pending_per_applicant", "must be at least 1".into()));
        }
        self.calendar().map_err(|(key, reason)| err(key, reason))?;
        Ok(())
    }

    /// The working-day calendar of `holidays` and `working_weekends`.
    pub fn calendar(&self) -> Result<Calendar, (&'static str, String)> {
        let dates = |key: &'static str, list: &[String]| {
            list.iter()
                .map(|t| {
                    yrd_proto::datetime::parse_date(t).ok_or_else(|| (key, format!("{t:?} is not a YYYY-MM-DD date")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Calendar::new(
            dates("holidays", &self.holidays)?,
            dates("working_weekends", &self.working_weekends)?,
        ))
    }

    /// The access database's file for a node whose store is `store`.
    pub fn db_path(&self, store: &StoreConfig) -> PathBuf {
        match (&self.path, store) {
            (Some(p), _) => p.clone(),
            (None, StoreConfig::Sqlite(s)) => s.path.with_extension("access.sqlite"),
        }
    }
}

/// One workflow event, for the audit log. Holds no row value: fields are
/// named, the row scope is not carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// `access.request`, `access.approve`, `access.refuse` or `access.revoke`.
    pub kind: &'static str,
    /// The request id.
    pub request_id: String,
    /// Who acted (the applicant or the operator), as a SPIFFE URI.
    pub subject: String,
    /// The applying application, as a SPIFFE URI.
    pub applicant: String,
    /// Dataset id.
    pub dataset: String,
    /// Fields applied for (request, refusal) or granted (approval, revocation).
    pub fields: Vec<String>,
    /// Declared purpose.
    pub purpose: String,
    /// The reason given, if any.
    pub reason: Option<String>,
    /// The grant made or ended, if any.
    pub grant_id: Option<String>,
}

/// Where workflow events go: called once per change, after it is stored
/// and before the caller is answered; an error fails the call (the change
/// stays made). The lead's audit wiring writes the record here.
pub type EventSink = Arc<dyn Fn(AccessEvent) -> BoxFuture<'static, Result<(), NodeError>> + Send + Sync>;

/// A changed request and its event.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request as it now is.
    pub request: mesh::AccessRequest,
    /// What happened, for the audit log.
    pub event: AccessEvent,
}

/// The grants of approved requests, as the policy stage reads them.
#[derive(Debug, Default)]
struct Snapshot {
    /// Every approved request's grant, expired ones included.
    approved: Vec<Grant>,
    /// Those in force at the last refresh.
    current: Arc<Vec<Grant>>,
    /// When the next of `current` expires.
    next_expiry: Option<SystemTime>,
}

impl Snapshot {
    fn new(approved: Vec<Grant>, now: SystemTime) -> Self {
        let mut s = Self {
            approved,
            ..Self::default()
        };
        s.refresh(now);
        s
    }

    fn refresh(&mut self, now: SystemTime) {
        let current: Vec<Grant> = self
            .approved
            .iter()
            .filter(|g| g.not_after.is_none_or(|t| t > now))
            .cloned()
            .collect();
        self.next_expiry = current.iter().filter_map(|g| g.not_after).min();
        self.current = Arc::new(current);
    }
}

/// The access workflow of one region node.
pub struct Workflow {
    region: String,
    config: AccessConfig,
    calendar: Calendar,
    registry: &'static Registry,
    limits: Limits,
    db: AccessDb,
    snapshot: RwLock<Snapshot>,
    // Decisions and revocations one at a time, so that snapshots are
    // replaced in the order the changes were made.
    changes: tokio::sync::Mutex<()>,
    sink: RwLock<Option<EventSink>>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("region", &self.region)
            .field("db", &self.db.path())
            .finish_non_exhaustive()
    }
}

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Task(e.to_string()))?
        .map_err(NodeError::from)
}

fn now_seconds() -> i64 {
    unix_seconds(SystemTime::now())
}

impl Workflow {
    /// Opens the workflow of the node configured by `config` (its access
    /// database, created if needed), over the datasets of `registry`.
    pub async fn open(config: &NodeConfig, registry: &'static Registry) -> Result<Arc<Self>, NodeError> {
        let calendar = config
            .access
            .calendar()
            .map_err(|(key, reason)| NodeError::Schema(format!("access.{key}: {reason}")))?;
        let path = config.access.db_path(&config.store);
        let region = config.region.clone();
        let db = blocking(move || AccessDb::open(&path, &region)).await?;
        let workflow = Self {
            region: config.region.clone(),
            config: config.access.clone(),
            calendar,
            registry,
            limits: config.limits.clone(),
            db,
            snapshot: RwLock::new(Snapshot::default()),
            changes: tokio::sync::Mutex::new(()),
            sink: RwLock::new(None),
        };
        workflow.reload().await?;
        Ok(Arc::new(workflow))
    }

    /// Sends every later event to `sink`.
    pub fn set_event_sink(&self, sink: EventSink) {
        if let Ok(mut s) = self.sink.write() {
            *s = Some(sink);
        }
    }

    /// The region this workflow decides for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Replaces the grant snapshot with the approved requests in the database.
    async fn reload(&self) -> Result<(), NodeError> {
        let db = self.db.clone();
        let approved = blocking(move || db.approved()).await?;
        let grants = approved.iter().filter_map(grant_of).collect();
        let snapshot = Snapshot::new(grants, SystemTime::now());
        if let Ok(mut s) = self.snapshot.write() {
            *s = snapshot;
        }
        Ok(())
    }

    async fn emit(&self, event: &AccessEvent) -> Result<(), NodeError> {
        let sink = self.sink.read().ok().and_then(|s| s.clone());
        match sink {
            Some(sink) => sink(event.clone()).await,
            None => Ok(()),
        }
    }

    fn schema(&self, dataset: &str) -> Result<Arc<DatasetSchema>, NodeError> {
        Ok(yrd_query::check::dataset(self.registry, dataset)?)
    }

    /// Records an application's request as pending.
    pub async fn request(&self, caller: &Principal, req: mesh::RequestAccessRequest) -> Result<Outcome, NodeError> {
        let applicant = applicant_of(caller)?;
        self.check_region(&req.region)?;
        if !req.row_scope.trim().is_empty() {
            return Err(text_refused("row_scope").into());
        }
        let schema = self.schema(&req.dataset)?;
        let fields = self.applied_fields(&schema, &req.fields)?;
        let purpose = checked_text("purpose", &req.purpose, self.config.max_purpose_chars)?;
        let now = now_seconds();
        let today = region_date(now);
        let until = parse_day("until", &req.until)?;
        if until <= today {
            return Err(invalid("until", format!("{until} is not after today ({today})")).into());
        }
        let max_days = i64::try_from(self.config.max_validity.as_secs() / 86_400).unwrap_or(i64::MAX);
        if (until - today).whole_days() > max_days {
            return Err(QueryError::Limit {
                param: "until",
                limit: "access.max_validity",
                max: max_days.unsigned_abs(),
                actual: (until - today).whole_days().unsigned_abs(),
            }
            .into());
        }
        let row_scope = self.checked_scope(&schema, req.row_scope_expr.as_ref())?;
        let due_day = self
            .calendar
            .add_working_days(today, self.config.answer_within_working_days)
            .unwrap_or(today);
        let new = NewRequest {
            applicant: applicant.uri(),
            dataset: schema.id.clone(),
            fields,
            purpose,
            until: until.to_string(),
            row_scope,
            created: now,
            answer_due: days::day_end_seconds(due_day),
        };
        let (db, max) = (self.db.clone(), self.config.max_pending_per_applicant);
        let stored = match blocking(move || db.insert(new, max)).await? {
            Inserted::Done(r) => *r,
            Inserted::TooManyPending(n) => {
                return Err(QueryError::Limit {
                    param: "dataset",
                    limit: "access.max_pending_per_applicant",
                    max,
                    actual: n + 1,
                }
                .into());
            }
        };
        tracing::info!(request = %stored.id, dataset = %stored.applied.dataset, applicant = %stored.applied.applicant, "access requested");
        let event = event_of(
            "access.request",
            &stored,
            &stored.applied.applicant,
            stored.applied.fields.clone(),
        );
        self.emit(&event).await?;
        Ok(Outcome {
            request: stored.to_proto(&self.region, &self.calendar, now),
            event,
        })
    }

    /// The region's requests for its operators, or an application's own.
    pub async fn list(
        &self,
        caller: &Principal,
        req: mesh::ListAccessRequestsRequest,
    ) -> Result<mesh::ListAccessRequestsResponse, NodeError> {
        self.check_region(&req.region)?;
        let subject = subject_of(caller)?;
        let applicant = match &subject.role {
            Role::App => Some(subject.uri()),
            Role::Operator { .. } => {
                self.check_operator(caller)?;
                None
            }
            _ => {
                return Err(NodeError::AccessDenied {
                    reason: "NOT_AN_OPERATOR",
                    message: format!(
                        "a {} lists no access requests: the region's operators see its requests, applications their own",
                        subject.role.kind()
                    ),
                });
            }
        };
        let state = mesh::AccessState::try_from(req.state)
            .map_err(|_| invalid("state", format!("{} is not an access state", req.state)))?;
        let (db, limit) = (self.db.clone(), self.config.max_listed);
        let rows = blocking(move || db.list(applicant.as_deref(), State::from_proto(state), limit)).await?;
        let now = now_seconds();
        Ok(mesh::ListAccessRequestsResponse {
            requests: rows
                .iter()
                .map(|r| r.to_proto(&self.region, &self.calendar, now))
                .collect(),
        })
    }

    /// Approves (possibly narrowed) or refuses a pending request.
    pub async fn decide(&self, caller: &Principal, req: mesh::DecideAccessRequest) -> Result<Outcome, NodeError> {
        let operator = self.check_operator(caller)?;
        self.check_region(&req.region)?;
        if !req.row_scope.trim().is_empty() {
            return Err(text_refused("row_scope").into());
        }
        let reason = optional_text("reason", &req.reason, self.config.max_reason_chars)?;
        let _serial = self.changes.lock().await;
        let stored = self.get(&req.id).await?;
        if stored.state != State::Pending {
            return Err(NodeError::AccessRequestState {
                id: stored.id,
                state: stored.state.as_str(),
                action: "decided",
            });
        }
        let now = now_seconds();
        let verdict = if req.approve {
            self.narrowed(&stored, &req, region_date(now))?
        } else {
            if reason.is_none() {
                return Err(invalid("reason", "a refusal needs a reason".into()).into());
            }
            if !req.fields.is_empty() || req.row_scope_expr.is_some() || !req.until.is_empty() {
                return Err(invalid(
                    "approve",
                    "fields, row_scope and until narrow an approval; a refusal takes only a reason".into(),
                )
                .into());
            }
            Verdict::Refuse
        };
        let decision = Decision {
            by: operator.uri(),
            at: now,
            verdict,
            reason,
        };
        let (db, id) = (self.db.clone(), stored.id.clone());
        let changed = transition(blocking(move || db.decide(&id, &decision)).await?, &req.id, "decided")?;
        self.reload().await?;
        let (kind, fields) = match changed.granted() {
            Some((fields, _, _)) => ("access.approve", fields.to_vec()),
            None => ("access.refuse", changed.applied.fields.clone()),
        };
        tracing::info!(request = %changed.id, decision = kind, operator = %operator.uri(), "access request decided");
        let event = event_of(kind, &changed, &operator.uri(), fields);
        self.emit(&event).await?;
        Ok(Outcome {
            request: changed.to_proto(&self.region, &self.calendar, now),
            event,
        })
    }

    /// Revokes an approved request's grant, at once.
    pub async fn revoke(&self, caller: &Principal, req: mesh::RevokeAccessRequest) -> Result<Outcome, NodeError> {
        let operator = self.check_operator(caller)?;
        self.check_region(&req.region)?;
        let reason = optional_text("reason", &req.reason, self.config.max_reason_chars)?
            .ok_or_else(|| invalid("reason", "a revocation needs a reason".into()))?;
        let _serial = self.changes.lock().await;
        let now = now_seconds();
        let revocation = Revocation {
            by: operator.uri(),
            at: now,
            reason,
        };
        let (db, id) = (self.db.clone(), req.id.clone());
        let changed = transition(blocking(move || db.revoke(&id, &revocation)).await?, &req.id, "revoked")?;
        self.reload().await?;
        tracing::info!(request = %changed.id, operator = %operator.uri(), "access revoked");
        let fields = changed.granted().map(|(f, _, _)| f.to_vec()).unwrap_or_default();
        let event = event_of("access.revoke", &changed, &operator.uri(), fields);
        self.emit(&event).await?;
        Ok(Outcome {
            request: changed.to_proto(&self.region, &self.calendar, now),
            event,
        })
    }

    async fn get(&self, id: &str) -> Result<StoredRequest, NodeError> {
        let (db, key) = (self.db.clone(), id.to_owned());
        blocking(move || db.get(&key))
            .await?
            .ok_or_else(|| NodeError::AccessRequestNotFound { id: id.to_owned() })
    }

    /// The terms of an approval: the applied ones, narrowed as asked.
    fn narrowed(
        &self,
        stored: &StoredRequest,
        req: &mesh::DecideAccessRequest,
        today: time::Date,
    ) -> Result<Verdict, NodeError> {
        let applied = &stored.applied;
        let schema = self.schema(&applied.dataset)?;
        let fields = if req.fields.is_empty() {
            applied.fields.clone()
        } else {
            let mut out: Vec<String> = Vec::new();
            for f in &req.fields {
                if !applied.fields.contains(f) {
                    return Err(invalid(
                        "fields",
                        format!("{f} was not applied for; an approval may only narrow"),
                    )
                    .into());
                }
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
            out
        };
        let until = if req.until.is_empty() {
            applied.until.clone()
        } else {
            let until = parse_day("until", &req.until)?;
            let asked = parse_day("until", &applied.until)?;
            if until > asked {
                return Err(invalid(
                    "until",
                    format!("{until} is after the {asked} applied for; an approval may only shorten"),
                )
                .into());
            }
            if until <= today {
                return Err(invalid("until", format!("{until} is not after today ({today})")).into());
            }
            until.to_string()
        };
        let narrowing = self.checked_scope(&schema, req.row_scope_expr.as_ref())?;
        let row_scope = match (applied.row_scope.clone(), narrowing) {
            (None, n) => n,
            (a, None) => a,
            (Some(a), Some(n)) => Some(FilterExpr {
                kind: Some(filter_expr::Kind::And(FilterList { exprs: vec![a, n] })),
            }),
        };
        Ok(Verdict::Approve {
            fields,
            row_scope,
            until,
        })
    }

    /// Fields applied for: named, existing, shared; repeats dropped.
    fn applied_fields(&self, schema: &DatasetSchema, names: &[String]) -> Result<Vec<String>, NodeError> {
        if names.is_empty() {
            return Err(invalid("fields", "name the fields applied for".into()).into());
        }
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let (_, field) = schema.field(name).ok_or_else(|| QueryError::UnknownField {
                param: "fields",
                dataset: schema.id.clone(),
                field: name.clone(),
            })?;
            if field.sharing == SharingClass::NotShared {
                return Err(NodeError::AccessDenied {
                    reason: "FIELD_NOT_SHARED",
                    message: format!(
                        "fields: {name} of {} is not shared: it never leaves the region, whatever a grant says",
                        schema.id
                    ),
                });
            }
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// A typed row scope checked against the schema, as the query path does.
    fn checked_scope(
        &self,
        schema: &DatasetSchema,
        expr: Option<&FilterExpr>,
    ) -> Result<Option<FilterExpr>, NodeError> {
        match expr {
            None => Ok(None),
            Some(e) => {
                yrd_query::filter::check_filter(e, schema, &self.limits)
                    .map_err(|err| err.for_param("row_scope_expr"))?;
                Ok(Some(e.clone()))
            }
        }
    }

    fn check_region(&self, region: &str) -> Result<(), QueryError> {
        if region.is_empty() || region == self.region {
            Ok(())
        } else {
            Err(invalid(
                "region",
                format!("{region} is not this node's region ({})", self.region),
            ))
        }
    }

    /// The caller, if it is an operator of this region.
    fn check_operator<'a>(&self, caller: &'a Principal) -> Result<&'a PeerId, NodeError> {
        let subject = subject_of(caller)?;
        match &subject.role {
            Role::Operator { region } if *region == self.region => Ok(subject),
            Role::Operator { region } => Err(NodeError::AccessDenied {
                reason: "OPERATOR_OF_OTHER_REGION",
                message: format!(
                    "an operator of region {region} decides that region's requests only, not those of {}",
                    self.region
                ),
            }),
            other => Err(NodeError::AccessDenied {
                reason: "NOT_AN_OPERATOR",
                message: format!(
                    "only operators of region {} decide its access requests, not a {}",
                    self.region,
                    other.kind()
                ),
            }),
        }
    }
}

impl GrantSource for Workflow {
    fn grants(&self) -> Arc<Vec<Grant>> {
        let now = SystemTime::now();
        if let Ok(s) = self.snapshot.read()
            && s.next_expiry.is_none_or(|t| t > now)
        {
            return s.current.clone();
        }
        // A grant expired since the last refresh: leave it out from now on.
        match self.snapshot.write() {
            Ok(mut s) => {
                s.refresh(now);
                s.current.clone()
            }
            Err(_) => Arc::new(Vec::new()),
        }
    }
}

impl UseLedger for Workflow {
    fn take<'a>(&'a self, grant: &'a str, subject: &'a str, max: u64) -> BoxFuture<'a, Result<bool, NodeError>> {
        let (db, grant, subject) = (self.db.clone(), grant.to_owned(), subject.to_owned());
        Box::pin(blocking(move || db.take_use(&grant, &subject, max)))
    }
}

/// The grant of an approved request.
fn grant_of(r: &StoredRequest) -> Option<Grant> {
    let (fields, scope, until) = r.granted()?;
    let app = PeerId::parse(&r.applied.applicant).ok()?;
    let until = yrd_proto::datetime::parse_date(until)?;
    Some(Grant {
        id: r.grant_id(),
        origin: Origin::Request(r.id.clone()),
        grantees: vec![Grantee::App(app.name)],
        datasets: vec![r.applied.dataset.clone()],
        fields: Fields::Named(fields.to_vec()),
        shown: BTreeMap::new(),
        row_scope: scope.cloned(),
        row_scope_text: scope.map(yrd_query::filter::to_text),
        purposes: vec![r.applied.purpose.clone()],
        not_before: r
            .decision
            .as_ref()
            .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.at.max(0).unsigned_abs())),
        not_after: Some(day_end(until)),
        rate_per_minute: None,
        max_rows: None,
        max_uses: None,
        aggregate_only: false,
        min_group_size: None,
    })
}

fn event_of(kind: &'static str, r: &StoredRequest, subject: &str, fields: Vec<String>) -> AccessEvent {
    let reason = match kind {
        "access.revoke" => r.revocation.as_ref().map(|v| v.reason.clone()),
        "access.request" => None,
        _ => r.decision.as_ref().and_then(|d| d.reason.clone()),
    };
    AccessEvent {
        kind,
        request_id: r.id.clone(),
        subject: subject.to_owned(),
        applicant: r.applied.applicant.clone(),
        dataset: r.applied.dataset.clone(),
        fields,
        purpose: r.applied.purpose.clone(),
        reason,
        grant_id: matches!(kind, "access.approve" | "access.revoke").then(|| r.grant_id()),
    }
}

fn transition(t: Transition, id: &str, action: &'static str) -> Result<StoredRequest, NodeError> {
    match t {
        Transition::Done(r) => Ok(*r),
        Transition::NotFound => Err(NodeError::AccessRequestNotFound { id: id.to_owned() }),
        Transition::WrongState(state) => Err(NodeError::AccessRequestState {
            id: id.to_owned(),
            state: state.as_str(),
            action,
        }),
    }
}

fn subject_of(caller: &Principal) -> Result<&PeerId, NodeError> {
    caller.subject.as_ref().ok_or_else(|| NodeError::AccessDenied {
        reason: "NO_SUBJECT",
        message: "the access workflow needs the identity the gateway acts for".into(),
    })
}

fn applicant_of(caller: &Principal) -> Result<&PeerId, NodeError> {
    let subject = subject_of(caller)?;
    match subject.role {
        Role::App => Ok(subject),
        ref other => Err(NodeError::AccessDenied {
            reason: "NOT_AN_APPLICATION",
            message: format!("only applications apply for access, not a {}", other.kind()),
        }),
    }
}

fn invalid(param: &'static str, message: String) -> QueryError {
    QueryError::Invalid { param, message }
}

fn text_refused(param: &'static str) -> QueryError {
    invalid(
        param,
        "nodes do not parse filter text; the gateway sends the typed row_scope_expr".into(),
    )
}

fn parse_day(param: &'static str, text: &str) -> Result<time::Date, QueryError> {
    yrd_proto::datetime::parse_date(text).ok_or_else(|| invalid(param, format!("{text:?} is not a YYYY-MM-DD date")))
}

/// Trimmed text, required, of at most `max` characters, without control
/// characters.
fn checked_text(param: &'static str, text: &str, max: usize) -> Result<String, QueryError> {
    optional_text(param, text, max)?.ok_or_else(|| invalid(param, "must not be empty".into()))
}

fn optional_text(param: &'static str, text: &str, max: usize) -> Result<Option<String>, QueryError> {
    let text = text.trim();
    let chars = text.chars().count();
    if chars > max {
        return Err(QueryError::Limit {
            param,
            limit: if param == "purpose" {
                "access.max_purpose_chars"
            } else {
                "access.max_reason_chars"
            },
            max: max as u64,
            actual: chars as u64,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(param, "must not hold control characters".into()));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<NodeConfig, ConfigError> {
        let c = NodeConfig::parse(&format!("region = \"320000\"\ninsecure = true\n{text}"), "t.toml")?;
        c.validate("t.toml")?;
        Ok(c)
    }

    #[test]
    fn access_keys_have_defaults_and_are_checked() {
        let c = config("").unwrap();
        assert_eq!(c.access.answer_within_working_days, 10);
        assert_eq!(c.access.max_validity, Duration::from_secs(365 * 86_400));
        assert_eq!(
            c.access.db_path(&c.store),
            PathBuf::from("node.access.sqlite"),
            "beside the store file"
        );
        let c = config(
            "[access]\nanswer_within_working_days = 15\nholidays = [\"2026-10-01\"]\nmax_validity = \"90d\"\npath = \"a.db\"\n",
        )
        .unwrap();
        assert_eq!(c.access.answer_within_working_days, 15);
        assert_eq!(c.access.max_validity, Duration::from_secs(90 * 86_400));
        assert_eq!(c.access.db_path(&c.store), PathBuf::from("a.db"));
        let d = yrd_proto::datetime::parse_date("2026-10-01").unwrap();
        assert!(!c.access.calendar().unwrap().is_working(d));
        // The serialized form reads back the same.
        let text = toml::to_string(&c).unwrap();
        assert_eq!(NodeConfig::parse(&text, "t.toml").unwrap(), c);

        let key = |text: &str| config(text).unwrap_err().key;
        assert_eq!(
            key("[access]\nanswer_within_working_days = 0\n"),
            "access.answer_within_working_days"
        );
        assert_eq!(key("[access]\nholidays = [\"2026-02-30\"]\n"), "access.holidays");
        assert_eq!(
            key("[access]\nworking_weekends = [\"soon\"]\n"),
            "access.working_weekends"
        );
        assert_eq!(key("[access]\nmax_validity = \"1h\"\n"), "access.max_validity");
        assert_eq!(key("[access]\nmax_listed = 0\n"), "access.max_listed");
        let e = config("[access]\nanswer_days = 3\n").unwrap_err();
        assert!(e.to_string().contains("answer_days"), "{e}");
    }

    fn grant(id: &str, not_after: Option<SystemTime>) -> Grant {
        Grant {
            id: id.into(),
            origin: Origin::Request(id.into()),
            grantees: vec![Grantee::App("a".into())],
            datasets: vec!["enterprise".into()],
            fields: Fields::All,
            shown: BTreeMap::new(),
            row_scope: None,
            row_scope_text: None,
            purposes: vec![],
            not_before: None,
            not_after,
            rate_per_minute: None,
            max_rows: None,
            max_uses: None,
            aggregate_only: false,
            min_group_size: None,
        }
    }

    #[test]
    fn expired_grants_leave_the_snapshot() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let soon = t0 + Duration::from_secs(60);
        let later = t0 + Duration::from_secs(3600);
        let mut s = Snapshot::new(
            vec![grant("a", Some(soon)), grant("b", Some(later)), grant("c", None)],
            t0,
        );
        assert_eq!(s.current.len(), 3);
        assert_eq!(s.next_expiry, Some(soon));
        s.refresh(soon);
        let ids: Vec<_> = s.current.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(s.next_expiry, Some(later));
        s.refresh(later);
        assert_eq!(s.current.len(), 1);
        assert_eq!(s.next_expiry, None);
    }

    #[test]
    fn text_limits_are_named() {
        assert_eq!(checked_text("purpose", "  audit  ", 10).unwrap(), "audit");
        let e = checked_text("purpose", "", 10).unwrap_err();
        assert_eq!(e.param(), "purpose");
        let e = checked_text("purpose", "x".repeat(11).as_str(), 10).unwrap_err();
        assert!(e.to_string().contains("access.max_purpose_chars"), "{e}");
        let e = optional_text("reason", "a\u{7}b", 10).unwrap_err();
        assert_eq!(e.param(), "reason");
        assert_eq!(optional_text("reason", " ", 10).unwrap(), None);
    }
}
