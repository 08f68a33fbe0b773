//! The access workflow's own SQLite database: access requests, their
//! decisions, and the use counts of grants that have a use limit. It is a
//! file of its own (beside the data store, see `[access] path`), so that
//! reloading a dataset never touches decisions. WAL journal, `synchronous =
//! FULL`: a decision is on disk when the operator is told it is made.
//!
//! Every method blocks; the workflow calls them on `spawn_blocking`.
//!
//! Schema (version 1):
//!
//! ```sql
//! access_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)   -- region, schema_version
//! access_requests(
//!   seq INTEGER PRIMARY KEY,            -- n of the id `<region>-<n>`
//!   id TEXT NOT NULL UNIQUE,
//!   applicant TEXT NOT NULL,            -- SPIFFE URI
//!   dataset TEXT NOT NULL,
//!   fields TEXT NOT NULL,               -- JSON array of field names
//!   purpose TEXT NOT NULL,
//!   until TEXT NOT NULL,                -- YYYY-MM-DD
//!   row_scope BLOB,                     -- protobuf FilterExpr
//!   state TEXT NOT NULL,                -- pending | approved | refused | revoked
//!   created INTEGER NOT NULL,           -- Unix seconds
//!   answer_due INTEGER NOT NULL,        -- Unix seconds
//!   decided INTEGER, decided_by TEXT, decision_reason TEXT,
//!   granted_fields TEXT, granted_row_scope BLOB, granted_until TEXT,
//!   revoked INTEGER, revoked_by TEXT, revoke_reason TEXT)
//! grant_uses(grant_id TEXT, subject TEXT, uses INTEGER, PRIMARY KEY (grant_id, subject))
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, Row, params};
use yrd_proto::mesh::FilterExpr;

use super::SqliteError;
use crate::access::model::{Decision, NewRequest, Revocation, State, StoredRequest, Verdict};
use crate::store::StoreError;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this code writes.
const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS access_requests (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  applicant TEXT NOT NULL,
  dataset TEXT NOT NULL,
  fields TEXT NOT NULL,
  purpose TEXT NOT NULL,
  until TEXT NOT NULL,
  row_scope BLOB,
  state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'refused', 'revoked')),
  created INTEGER NOT NULL,
  answer_due INTEGER NOT NULL,
  decided INTEGER,
  decided_by TEXT,
  decision_reason TEXT,
  granted_fields TEXT,
  granted_row_scope BLOB,
  granted_until TEXT,
  revoked INTEGER,
  revoked_by TEXT,
  revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS access_requests_applicant ON access_requests (applicant, seq);
CREATE INDEX IF NOT EXISTS access_requests_state ON access_requests (state, seq);
CREATE TABLE IF NOT EXISTS grant_uses (
  grant_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  uses INTEGER NOT NULL,
  PRIMARY KEY (grant_id, subject)
);
";

const COLUMNS: &str = "seq, id, applicant, dataset, fields, purpose, until, row_scope, state, created, answer_due, \
    decided, decided_by, decision_reason, granted_fields, granted_row_scope, granted_until, \
    revoked, revoked_by, revoke_reason";

/// What an insert did.
#[derive(Debug)]
pub enum Inserted {
    /// Recorded.
    Done(Box<StoredRequest>),
    /// Refused: the applicant already has this many pending requests.
    TooManyPending(u64),
}

/// What a state change did.
#[derive(Debug)]
pub enum Transition {
    /// Made; the request as it now is.
    Done(Box<StoredRequest>),
    /// No request has this id.
    NotFound,
    /// The request is in this state, which does not allow the change.
    WrongState(State),
}

/// The access database of one region node; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessDb {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    region: String,
    // One connection: the workflow's writes are few and small, and one
    // writer keeps id assignment and state checks serial.
    conn: Mutex<Connection>,
}

impl AccessDb {
    /// Opens (creating if needed) the access database at `path` for `region`.
    pub fn open(path: &Path, region: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let mismatch = |reason: String| StoreError::Mismatch {
            path: path.display().to_string(),
            reason,
        };
        for (key, want) in [("region", region), ("schema_version", SCHEMA_VERSION)] {
            conn.execute(
                "INSERT OR IGNORE INTO access_meta (key, value) VALUES (?1, ?2)",
                params![key, want],
            )?;
            let have: String = conn.query_row("SELECT value FROM access_meta WHERE key = ?1", [key], |r| r.get(0))?;
            if have != want {
                return Err(mismatch(format!(
                    "the access database has {key} {have}, this node {want}"
                )));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                region: region.to_owned(),
                conn: Mutex::new(conn),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.inner
            .conn
            .lock()
            .map_err(|_| StoreError::Task("the access database connection was poisoned".into()))
    }

    /// Records a new pending request, numbering it, unless its applicant
    /// already has `max_pending` pending requests.
    pub fn insert(&self, new: NewRequest, max_pending: u64) -> Result<Inserted, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let pending: u64 = tx.query_row(
            "SELECT count(*) FROM access_requests WHERE applicant = ?1 AND state = 'pending'",
            [&new.applicant],
            |r| r.get(0),
        )?;
        if pending >= max_pending {
            return Ok(Inserted::TooManyPending(pending));
        }
        let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM access_requests", [], |r| {
            r.get(0)
        })?;
        let id = format!("{}-{seq}", self.inner.region);
        tx.execute(
            "INSERT INTO access_requests (seq, id, applicant, dataset, fields, purpose, until, row_scope, state, \
             created, answer_due) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10)",
            params![
                seq,
                id,
                new.applicant,
                new.dataset,
                names_json(&new.fields),
                new.purpose,
                new.until,
                new.row_scope.as_ref().map(Message::encode_to_vec),
                new.created,
                new.answer_due,
            ],
        )?;
        tx.commit()?;
        Ok(Inserted::Done(Box::new(StoredRequest {
            seq,
            id,
            applied: new,
            state: State::Pending,
            decision: None,
            revocation: None,
        })))
    }

    /// The request with this id.
    pub fn get(&self, id: &str) -> Result<Option<StoredRequest>, StoreError> {
        let conn = self.conn()?;
        get(&conn, id)
    }

    /// Requests, pending first, then newest first: all, or `applicant`'s,
    /// or those in `state`; at most `limit`.
    pub fn list(
        &self,
        applicant: Option<&str>,
        state: Option<State>,
        limit: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_requests WHERE (?1 IS NULL OR applicant = ?1) \
             AND (?2 IS NULL OR state = ?2) ORDER BY state = 'pending' DESC, seq DESC LIMIT ?3"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![applicant, state.map(State::as_str), limit], read_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r)).collect()
    }

    /// Every approved request (revoked ones excluded, expired ones kept).
    pub fn approved(&self) -> Result<Vec<StoredRequest>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_requests WHERE state = 'approved' ORDER BY seq"
        ))?;
        let rows = stmt.query_map([], read_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r)).collect()
    }

    /// Approves or refuses a pending request.
    pub fn decide(&self, id: &str, decision: &Decision) -> Result<Transition, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let (state, fields, scope, until) = match &decision.verdict {
            Verdict::Approve {
                fields,
                row_scope,
                until,
            } => (
                State::Approved,
                Some(names_json(fields)),
                row_scope.as_ref().map(Message::encode_to_vec),
                Some(until.as_str()),
            ),
            Verdict::Refuse => (State::Refused, None, None, None),
        };
        let changed = tx.execute(
            "UPDATE access_requests SET state = ?2, decided = ?3, decided_by = ?4, decision_reason = ?5, \
             granted_fields = ?6, granted_row_scope = ?7, granted_until = ?8 WHERE id = ?1 AND state = 'pending'",
            params![
                id,
                state.as_str(),
                decision.at,
                decision.by,
                decision.reason,
                fields,
                scope,
                until
            ],
        )?;
        let outcome = transition(&tx, id, changed)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Revokes an approved request.
    pub fn revoke(&self, id: &str, revocation: &Revocation) -> Result<Transition, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE access_requests SET state = 'revoked', revoked = ?2, revoked_by = ?3, revoke_reason = ?4 \
             WHERE id = ?1 AND state = 'approved'",
            params![id, revocation.at, revocation.by, revocation.reason],
        )?;
        let outcome = transition(&tx, id, changed)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Records one use of `grant` by `subject` if fewer than `max` are
    /// recorded; `false` when used up.
    pub fn take_use(&self, grant: &str, subject: &str, max: u64) -> Result<bool, StoreError> {
        if max == 0 {
            return Ok(false);
        }
        let conn = self.conn()?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let changed = conn.execute(
            "INSERT INTO grant_uses (grant_id, subject, uses) VALUES (?1, ?2, 1) \
             ON CONFLICT (grant_id, subject) DO UPDATE SET uses = uses + 1 WHERE uses < ?3",
            params![grant, subject, max],
        )?;
        Ok(changed == 1)
    }

    /// Uses recorded of `grant` by `subject`.
    pub fn uses(&self, grant: &str, subject: &str) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let uses: Option<u64> = conn
            .query_row(
                "SELECT uses FROM grant_uses WHERE grant_id = ?1 AND subject = ?2",
                params![grant, subject],
                |r| r.get(0),
            )
            .optional()?;
        Ok(uses.unwrap_or(0))
    }
}

fn get(conn: &Connection, id: &str) -> Result<Option<StoredRequest>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"))?;
    stmt.query_row([id], read_row).optional()?.transpose()
}

/// The outcome of an update that changed `changed` rows.
fn transition(conn: &Connection, id: &str, changed: usize) -> Result<Transition, StoreError> {
    let now = get(conn, id)?;
    Ok(match (changed, now) {
        (_, None) => Transition::NotFound,
        (0, Some(r)) => Transition::WrongState(r.state),
        (_, Some(r)) => Transition::Done(Box::new(r)),
    })
}

fn names_json(names: &[String]) -> String {
    serde_json::Value::from(names.to_vec()).to_string()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend {
        system: "sqlite",
        source: format!("access database: unreadable {what}").into(),
    }
}

fn names(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt("field list"))
}

fn scope(blob: Option<Vec<u8>>) -> Result<Option<FilterExpr>, StoreError> {
    blob.map(|b| FilterExpr::decode(b.as_slice()).map_err(|_| corrupt("row scope")))
        .transpose()
}

/// One row, in [`COLUMNS`] order. The outer result is SQLite's, the inner
/// one the decoding of what it held.
fn read_row(r: &Row<'_>) -> rusqlite::Result<Result<StoredRequest, StoreError>> {
    let state: String = r.get(8)?;
    let fields: String = r.get(4)?;
    let row_scope: Option<Vec<u8>> = r.get(7)?;
    let decided: Option<i64> = r.get(11)?;
    let decided_by: Option<String> = r.get(12)?;
    let decision_reason: Option<String> = r.get(13)?;
    let granted_fields: Option<String> = r.get(14)?;
    let granted_row_scope: Option<Vec<u8>> = r.get(15)?;
    let granted_until: Option<String> = r.get(16)?;
    let revoked: Option<i64> = r.get(17)?;
    let revoked_by: Option<String> = r.get(18)?;
    let revoke_reason: Option<String> = r.get(19)?;
    let (seq, id, applicant, dataset, purpose, until, created, answer_due): (
        i64,
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
    ) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(5)?,
        r.get(6)?,
        r.get(9)?,
        r.get(10)?,
    );
    Ok((|| {
        let state = State::parse(&state).ok_or_else(|| corrupt("state"))?;
        let decision = match (decided, decided_by) {
            (Some(at), Some(by)) => Some(Decision {
                by,
                at,
                reason: decision_reason,
                verdict: match granted_fields {
                    Some(f) => Verdict::Approve {
                        fields: names(&f)?,
                        row_scope: scope(granted_row_scope)?,
                        until: granted_until.ok_or_else(|| corrupt("granted until"))?,
                    },
                    None => Verdict::Refuse,
                },
            }),
            _ => None,
        };
        let revocation = match (revoked, revoked_by) {
            (Some(at), Some(by)) => Some(Revocation {
                by,
                at,
                reason: revoke_reason.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(StoredRequest {
            seq,
            id,
            applied: NewRequest {
                applicant,
                dataset,
                fields: names(&fields)?,
                purpose,
                until,
                row_scope: scope(row_scope)?,
                created,
                answer_due,
            },
            state,
            decision,
            revocation,
        })
    })())
}

#[cfg(test)]
mod tests {
    use yrd_proto::mesh::{CompareOp, Comparison, Value, filter_expr, value};

    use super::*;

    fn new_request(applicant: &str) -> NewRequest {
        NewRequest {
            applicant: applicant.to_owned(),
            dataset: "enterprise".into(),
            fields: vec!["name".into(), "contact_phone".into()],
            purpose: "licensing checks".into(),
            until: "2027-06-30".into(),
            row_scope: Some(FilterExpr {
                kind: Some(filter_expr::Kind::Comparison(Comparison {
                    field: "city".into(),
                    op: CompareOp::Eq as i32,
                    value: Some(Value {
                        kind: Some(value::Kind::StringValue("320500".into())),
                    }),
                    prefix: false,
                })),
            }),
            created: 1_700_000_000,
            answer_due: 1_701_000_000,
        }
    }

    fn done(t: Transition) -> StoredRequest {
        match t {
            Transition::Done(r) => *r,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn requests_decisions_and_uses_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.access.sqlite");
        let db = AccessDb::open(&path, "320000").unwrap();
        let Inserted::Done(first) = db.insert(new_request("spiffe://yrd.mesh/app/a"), 10).unwrap() else {
            panic!("refused")
        };
        assert_eq!(first.id, "320000-1");
        let Inserted::Done(second) = db.insert(new_request("spiffe://yrd.mesh/app/b"), 10).unwrap() else {
            panic!("refused")
        };
        assert_eq!(second.id, "320000-2");
        let approval = Decision {
            by: "spiffe://yrd.mesh/region/320000/operator/op".into(),
            at: 1_700_100_000,
            reason: None,
            verdict: Verdict::Approve {
                fields: vec!["name".into()],
                row_scope: None,
                until: "2027-01-31".into(),
            },
        };
        let approved = done(db.decide("320000-1", &approval).unwrap());
        assert_eq!(approved.state, State::Approved);
        assert!(matches!(
            db.decide("320000-1", &approval).unwrap(),
            Transition::WrongState(State::Approved)
        ));
        assert!(matches!(
            db.decide("320000-9", &approval).unwrap(),
            Transition::NotFound
        ));
        assert!(db.take_use("request:320000-1", "spiffe://yrd.mesh/app/a", 2).unwrap());
        assert!(db.take_use("request:320000-1", "spiffe://yrd.mesh/app/a", 2).unwrap());
        assert!(!db.take_use("request:320000-1", "spiffe://yrd.mesh/app/a", 2).unwrap());
        assert!(db.take_use("request:320000-1", "spiffe://yrd.mesh/app/b", 2).unwrap());
        drop(db);

        let db = AccessDb::open(&path, "320000").unwrap();
        assert_eq!(db.get("320000-1").unwrap().unwrap(), approved);
        assert_eq!(db.get("320000-2").unwrap().unwrap(), *second);
        assert_eq!(db.approved().unwrap(), vec![approved.clone()]);
        assert_eq!(db.uses("request:320000-1", "spiffe://yrd.mesh/app/a").unwrap(), 2);
        assert!(!db.take_use("request:320000-1", "spiffe://yrd.mesh/app/a", 2).unwrap());
        // Pending first, then newest first.
        let ids: Vec<_> = db.list(None, None, 10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["320000-2", "320000-1"]);
        let mine = db.list(Some("spiffe://yrd.mesh/app/a"), None, 10).unwrap();
        assert_eq!(mine, vec![approved]);
        assert!(db.list(None, Some(State::Refused), 10).unwrap().is_empty());
        let revoked = done(
            db.revoke(
                "320000-1",
                &Revocation {
                    by: "spiffe://yrd.mesh/region/320000/operator/op".into(),
                    at: 1_700_200_000,
                    reason: "purpose fulfilled".into(),
                },
            )
            .unwrap(),
        );
        assert_eq!(revoked.state, State::Revoked);
        assert!(db.approved().unwrap().is_empty());
        // Ids keep counting after a restart.
        let Inserted::Done(third) = db.insert(new_request("spiffe://yrd.mesh/app/a"), 10).unwrap() else {
            panic!("refused")
        };
        assert_eq!(third.id, "320000-3");
    }

    #[test]
    fn pending_requests_per_applicant_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = AccessDb::open(&dir.path().join("a.sqlite"), "320000").unwrap();
        assert!(matches!(
            db.insert(new_request("spiffe://yrd.mesh/app/a"), 1).unwrap(),
            Inserted::Done(_)
        ));
        assert!(matches!(
            db.insert(new_request("spiffe://yrd.mesh/app/a"), 1).unwrap(),
            Inserted::TooManyPending(1)
        ));
        assert!(matches!(
            db.insert(new_request("spiffe://yrd.mesh/app/b"), 1).unwrap(),
            Inserted::Done(_)
        ));
    }

    #[test]
    fn another_regions_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        drop(AccessDb::open(&path, "320000").unwrap());
        let e = AccessDb::open(&path, "310000").unwrap_err();
        assert!(e.to_string().contains("region 320000"), "{e}");
    }
}
