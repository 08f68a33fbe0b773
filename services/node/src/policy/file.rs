//! The agency's policy file: groups of applications, per-dataset settings
//! and grants, in TOML. Validated at load with the file, the key and the
//! reason of the first problem; nothing of a file that fails is used.
//!
//! ```toml
//! [groups]
//! dashboards = ["dashboard", "planning"]
//!
//! [datasets.enterprise]
//! class = "conditional"      # tighten: every field needs a grant ("not_shared" closes it)
//! min_group_size = 10        # aggregates leave out smaller groups
//! require_purpose = true     # every request declares a purpose
//!
//! [[grant]]
//! id = "sh-dashboard"
//! apps = ["dashboard"]               # application names (spiffe://<td>/app/<name>)
//! groups = ["dashboards"]            # and/or groups above
//! datasets = ["enterprise"]
//! fields = ["legal_representative", "representative_id_number"]   # or "*"
//! masks = { representative_id_number = "keep(6,4)", legal_representative = "plain" }
//! row_scope = 'city = "310100"'      # the query language, ANDed around the user's filter
//! purposes = ["supervision"]         # empty: any purpose, or none
//! not_before = 2026-01-01            # a date (start of day, UTC) or RFC 3339
//! not_after = "2026-12-31T23:59:59Z" # a date means the end of that day (UTC)
//! rate_per_minute = 60
//! max_rows = 1000
//! max_uses = 500
//! aggregate_only = false
//! min_group_size = 10
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use yrd_proto::mesh::SharingClass;
use yrd_proto::schema::Registry;
use yrd_query::Limits;
use yrd_server::ConfigError;

use super::grant::{Fields, Grant, Grantee, Origin, Shown};
use super::mask::Mask;

/// The longest policy file read, so that a runaway file costs nothing.
pub const MAX_POLICY_FILE_BYTES: usize = 1 << 20;

/// A policy file, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFile {
    /// Groups of applications: group name → application names.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Per-dataset settings.
    pub datasets: BTreeMap<String, DatasetRules>,
    /// The file's grants, in file order.
    pub grants: Vec<Arc<Grant>>,
}

/// A region's settings for one dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetRules {
    /// A class tightening the schema's: `Conditional` makes every field need
    /// a grant, `NotShared` closes the dataset. `None` keeps the schema's.
    pub class: Option<SharingClass>,
    /// Aggregates leave out groups of fewer rows.
    pub min_group_size: Option<u32>,
    /// Every request must declare a purpose.
    pub require_purpose: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    datasets: BTreeMap<String, DatasetToml>,
    #[serde(default)]
    grant: Vec<GrantToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetToml {
    #[serde(default)]
    class: Option<ClassToml>,
    #[serde(default)]
    min_group_size: Option<u32>,
    #[serde(default)]
    require_purpose: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClassToml {
    Unconditional,
    Conditional,
    NotShared,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantToml {
    id: String,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    datasets: Vec<String>,
    fields: FieldsToml,
    #[serde(default)]
    masks: BTreeMap<String, String>,
    #[serde(default)]
    row_scope: Option<String>,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    not_before: Option<When>,
    #[serde(default)]
    not_after: Option<When>,
    #[serde(default)]
    rate_per_minute: Option<u32>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    max_uses: Option<u64>,
    #[serde(default)]
    aggregate_only: bool,
    #[serde(default)]
    min_group_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FieldsToml {
    All(String),
    Named(Vec<String>),
}

/// A TOML date or datetime, or a string holding one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum When {
    Native(toml::value::Datetime),
    Text(String),
}

/// Whether a time bound starts or ends a window (a bare date starts or ends
/// its day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

impl PolicyFile {
    /// Parses and validates policy text; `origin` names the file in errors.
    /// `hash_key` says whether the node has a secret for the `hash` mask.
    pub fn parse(
        text: &str,
        origin: &str,
        schemas: &Registry,
        limits: &Limits,
        hash_key: bool,
    ) -> Result<Self, ConfigError> {
        if text.len() > MAX_POLICY_FILE_BYTES {
            return Err(ConfigError::new(
                origin,
                "-",
                format!("{} bytes exceeds the limit of {MAX_POLICY_FILE_BYTES}", text.len()),
            ));
        }
        let raw: FileToml = yrd_server::parse_toml(text, origin)?;
        let err = |key: String, reason: String| ConfigError::new(origin, &key, reason);
        let mut file = PolicyFile::default();
        for (name, members) in raw.groups {
            let key = format!("groups.{name}");
            check_name(&name).map_err(|r| err(key.clone(), r))?;
            let mut set = BTreeSet::new();
            for m in members {
                check_name(&m).map_err(|r| err(key.clone(), format!("application {m:?}: {r}")))?;
                set.insert(m);
            }
            file.groups.insert(name, set);
        }
        for (id, d) in raw.datasets {
            let key = format!("datasets.{id}");
            if schemas.get(&id).is_none() {
                return Err(err(key, format!("unknown dataset {id:?}")));
            }
            if d.min_group_size == Some(0) {
                return Err(err(format!("{key}.min_group_size"), "must be at least 1".into()));
            }
            let class = d.class.map(|c| match c {
                ClassToml::Unconditional => SharingClass::Unconditional,
                ClassToml::Conditional => SharingClass::Conditional,
                ClassToml::NotShared => SharingClass::NotShared,
            });
            file.datasets.insert(
                id,
                DatasetRules {
                    class,
                    min_group_size: d.min_group_size,
                    require_purpose: d.require_purpose,
                },
            );
        }
        let mut ids = BTreeSet::new();
        for (i, g) in raw.grant.into_iter().enumerate() {
            let grant = grant(g, i, &file.groups, schemas, limits, hash_key).map_err(|(k, r)| err(k, r))?;
            if !ids.insert(grant.id.clone()) {
                return Err(err(
                    format!("grant[{i}].id"),
                    format!("grant id {:?} is used twice", grant.id),
                ));
            }
            file.grants.push(Arc::new(grant));
        }
        Ok(file)
    }

    /// Reads and validates the policy file at `path`.
    pub fn load(
        path: &std::path::Path,
        schemas: &Registry,
        limits: &Limits,
        hash_key: bool,
    ) -> Result<Self, ConfigError> {
        let (text, shown) = yrd_server::read_config(path)?;
        Self::parse(&text, &shown, schemas, limits, hash_key)
    }
}

/// A name of an application or group: what an identity URI segment allows.
fn check_name(name: &str) -> Result<(), String> {
    yrd_identity::PeerId::app(yrd_identity::DEFAULT_TRUST_DOMAIN, name)
        .map(|_| ())
        .map_err(|e| format!("not a valid name: {e}"))
}

/// Validates the `i`th grant; an error is `(key, reason)`.
fn grant(
    g: GrantToml,
    i: usize,
    groups: &BTreeMap<String, BTreeSet<String>>,
    schemas: &Registry,
    limits: &Limits,
    hash_key: bool,
) -> Result<Grant, (String, String)> {
    let key = |k: &str| format!("grant[{i}].{k}");
    if g.id.trim().is_empty() || g.id.len() > 128 || g.id.chars().any(char::is_whitespace) {
        return Err((key("id"), "must be 1 to 128 characters without spaces".into()));
    }
    let mut grantees = Vec::new();
    for a in &g.apps {
        check_name(a).map_err(|r| (key("apps"), format!("application {a:?}: {r}")))?;
        grantees.push(Grantee::App(a.clone()));
    }
    for name in &g.groups {
        if !groups.contains_key(name) {
            return Err((key("groups"), format!("unknown application group {name:?}")));
        }
        grantees.push(Grantee::Group(name.clone()));
    }
    if grantees.is_empty() {
        return Err((key("apps"), "a grant names at least one application or group".into()));
    }
    if g.datasets.is_empty() {
        return Err((key("datasets"), "a grant names at least one dataset".into()));
    }
    let mut schemas_of = Vec::new();
    for d in &g.datasets {
        let schema = schemas
            .get(d)
            .ok_or_else(|| (key("datasets"), format!("unknown dataset {d:?}")))?;
        schemas_of.push(schema.clone());
    }
    let fields = match g.fields {
        FieldsToml::All(s) if s == "*" => Fields::All,
        FieldsToml::All(s) => {
            return Err((key("fields"), format!("{s:?}: write a list of field names, or \"*\"")));
        }
        FieldsToml::Named(names) => {
            if names.is_empty() {
                return Err((key("fields"), "names no field (write \"*\" for every field)".into()));
            }
            for n in &names {
                for s in &schemas_of {
                    let Some((_, f)) = s.field(n) else {
                        return Err((key("fields"), format!("dataset {} has no field {n:?}", s.id)));
                    };
                    if f.sharing == SharingClass::NotShared {
                        return Err((
                            key("fields"),
                            format!("field {n} of {} is not shared; no grant can open it", s.id),
                        ));
                    }
                }
            }
            Fields::Named(names)
        }
    };
    let mut shown = BTreeMap::new();
    for (field, how) in g.masks {
        let k = format!("grant[{i}].masks.{field}");
        if !fields.covers(&field) {
            return Err((k, format!("field {field} is not in the grant's fields")));
        }
        let parsed = if how.trim() == "plain" {
            None
        } else {
            Some(Mask::parse(&how).map_err(|e| (k.clone(), e.0))?)
        };
        for s in &schemas_of {
            let Some((_, f)) = s.field(&field) else {
                return Err((k, format!("dataset {} has no field {field:?}", s.id)));
            };
            if f.sharing == SharingClass::NotShared {
                return Err((
                    k,
                    format!("field {field} of {} is not shared; no grant can show it", s.id),
                ));
            }
            if let Some(m) = parsed {
                m.check_type(f.ty).map_err(|e| (k.clone(), e.0))?;
            }
        }
        if parsed == Some(Mask::Hash) && !hash_key {
            return Err((
                k,
                "mask hash needs the node's [policy] hash_key (or YRD_POLICY_HASH_KEY)".into(),
            ));
        }
        shown.insert(
            field,
            match parsed {
                None => Shown::Plain,
                Some(m) => Shown::Mask(m.name()),
            },
        );
    }
    let (row_scope, row_scope_text) = match g.row_scope.as_deref().map(str::trim) {
        None | Some("") => (None, None),
        Some(text) => {
            let mut tree = None;
            for s in &schemas_of {
                let parsed = yrd_query::filter::parse_filter(text, s, limits)
                    .map_err(|e| (key("row_scope"), format!("for dataset {}: {}", s.id, e.description())))?;
                match (&tree, parsed) {
                    (_, None) => {}
                    (None, Some(p)) => tree = Some(p),
                    (Some(t), Some(p)) if *t == p => {}
                    (Some(_), Some(_)) => {
                        return Err((
                            key("row_scope"),
                            "means different things in the grant's datasets; write one grant per dataset".into(),
                        ));
                    }
                }
            }
            (tree, Some(text.to_owned()))
        }
    };
    for (n, p) in g.purposes.iter().enumerate() {
        if p.trim().is_empty() {
            return Err((format!("grant[{i}].purposes[{n}]"), "a purpose is not empty".into()));
        }
    }
    let not_before = g
        .not_before
        .map(|w| when(w, Bound::Start))
        .transpose()
        .map_err(|r| (key("not_before"), r))?;
    let not_after = g
        .not_after
        .map(|w| when(w, Bound::End))
        .transpose()
        .map_err(|r| (key("not_after"), r))?;
    if let (Some(a), Some(b)) = (not_before, not_after)
        && b <= a
    {
        return Err((key("not_after"), "is not after not_before".into()));
    }
    for (name, v) in [
        ("rate_per_minute", g.rate_per_minute.map(u64::from)),
        ("max_rows", g.max_rows),
        ("max_uses", g.max_uses),
        ("min_group_size", g.min_group_size.map(u64::from)),
    ] {
        if v == Some(0) {
            return Err((key(name), "must be at least 1".into()));
        }
    }
    Ok(Grant {
        id: g.id,
        origin: Origin::File,
        grantees,
        datasets: g.datasets,
        fields,
        shown,
        row_scope,
        row_scope_text,
        purposes: g.purposes.into_iter().map(|p| p.trim().to_owned()).collect(),
        not_before,
        not_after,
        rate_per_minute: g.rate_per_minute,
        max_rows: g.max_rows,
        max_uses: g.max_uses,
        aggregate_only: g.aggregate_only,
        min_group_size: g.min_group_size,
    })
}

/// A time bound: a date (`2026-12-31`, the start or the end of that UTC
/// day) or an RFC 3339 instant.
fn when(w: When, bound: Bound) -> Result<SystemTime, String> {
    let text = match w {
        When::Native(d) => d.to_string(),
        When::Text(s) => s,
    };
    let t = text.trim();
    if t.len() == 10 {
        let parse = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<u16>().ok());
        let (Some(y), Some(m), Some(d)) = (parse(0..4), parse(5..7), parse(8..10)) else {
            return Err(format!("{t:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"));
        };
        let month = u8::try_from(m)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or_else(|| format!("{t:?}: no month {m}"))?;
        let date = time::Date::from_calendar_date(i32::from(y), month, u8::try_from(d).unwrap_or(0))
            .map_err(|e| format!("{t:?}: {e}"))?;
        let start = date.midnight().assume_utc().unix_timestamp();
        let secs = match bound {
            Bound::Start => start,
            Bound::End => start + 86_400 - 1,
        };
        return Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).map_err(|_| format!("{t:?} is before 1970"))?));
    }
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{t:?} is not a date (YYYY-MM-DD) or an RFC 3339 time: {e}"))?;
    let secs = u64::try_from(at.unix_timestamp()).map_err(|_| format!("{t:?} is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyFile, ConfigError> {
        PolicyFile::parse(
            text,
            "policy.toml",
            Registry::standard().unwrap(),
            &Limits::default(),
            false,
        )
    }

    const GOOD: &str = r#"
[groups]
dashboards = ["dashboard", "planning"]

[datasets.enterprise]
min_group_size = 10
require_purpose = false

[[grant]]
id = "sh-dashboard"
apps = ["dashboard"]
groups = ["dashboards"]
datasets = ["enterprise"]
fields = ["legal_representative", "representative_id_number", "registered_capital"]
masks = { representative_id_number = "keep(6,4)", legal_representative = "plain", registered_capital = "round(4)" }
row_scope = 'city = "310100" OR city = "310200"'
purposes = ["supervision"]
not_before = 2026-01-01
not_after = "2026-12-31T23:59:59Z"
rate_per_minute = 60
max_rows = 1000
max_uses = 500
min_group_size = 5

[[grant]]
id = "all-air"
apps = ["dashboard"]
datasets = ["air_quality"]
fields = "*"
aggregate_only = true
"#;

    #[test]
    fn a_good_file_loads_every_key() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.groups["dashboards"].len(), 2);
        assert_eq!(f.datasets["enterprise"].min_group_size, Some(10));
        assert_eq!(f.grants.len(), 2);
        let g = &f.grants[0];
        assert_eq!(g.id, "sh-dashboard");
        assert_eq!(
            g.grantees,
            vec![Grantee::App("dashboard".into()), Grantee::Group("dashboards".into())]
        );
        assert_eq!(g.shown["legal_representative"], Shown::Plain);
        assert_eq!(g.shown["representative_id_number"], Shown::Mask("keep(6,4)".into()));
        assert!(g.row_scope.is_some());
        assert_eq!(
            g.row_scope_text.as_deref(),
            Some(r#"city = "310100" OR city = "310200""#)
        );
        assert_eq!(
            g.not_before.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_767_225_600
        );
        assert_eq!(
            g.not_after.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_798_761_599
        );
        assert_eq!(
            (g.rate_per_minute, g.max_rows, g.max_uses),
            (Some(60), Some(1000), Some(500))
        );
        assert_eq!(f.grants[1].fields, Fields::All);
        assert!(f.grants[1].aggregate_only);
    }

    #[test]
    fn a_bare_not_after_date_ends_with_its_day() {
        let f = parse(
            "[[grant]]\nid = \"g\"\napps = [\"a\"]\ndatasets = [\"enterprise\"]\nfields = \"*\"\nnot_after = 2026-12-31\n",
        )
        .unwrap();
        let secs = f.grants[0]
            .not_after
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1_798_761_599);
    }

    #[test]
    fn every_mistake_is_named_by_file_key_and_reason() {
        let base = |extra: &str| {
            format!(
                "[groups]\ng = [\"a\"]\n[[grant]]\nid = \"x\"\napps = [\"a\"]\ndatasets = [\"enterprise\"]\n{extra}"
            )
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (base("fields = \"*\"\ncolour = 1\n"), "colour", "unknown field"),
            (
                "[groups]\ng = [\"a\"]\n[datasets.nope]\n".into(),
                "datasets.nope",
                "unknown dataset",
            ),
            (
                "[datasets.enterprise]\nclass = \"secret\"\n".into(),
                "\"secret\"",
                "unknown variant",
            ),
            (
                base("fields = \"*\"\ngroups = [\"h\"]\n"),
                "grant[0].groups",
                "unknown application group",
            ),
            (
                base("fields = [\"colour\"]\n"),
                "grant[0].fields",
                "no field \"colour\"",
            ),
            (
                base("fields = [\"credit_risk_class\"]\n"),
                "grant[0].fields",
                "not shared",
            ),
            (
                base("fields = \"*\"\nmasks = { credit_risk_class = \"plain\" }\n"),
                "grant[0].masks.credit_risk_class",
                "not shared",
            ),
            (
                base("fields = \"*\"\nmasks = { legal_representative = \"blur\" }\n"),
                "grant[0].masks.legal_representative",
                "unknown mask",
            ),
            (
                base("fields = \"*\"\nmasks = { registered_capital = \"surname\" }\n"),
                "grant[0].masks.registered_capital",
                "does not apply to a number field",
            ),
            (
                base("fields = [\"address\"]\nmasks = { legal_representative = \"plain\" }\n"),
                "grant[0].masks.legal_representative",
                "not in the grant's fields",
            ),
            (
                base("fields = \"*\"\nmasks = { legal_representative = \"hash\" }\n"),
                "grant[0].masks.legal_representative",
                "hash_key",
            ),
            (
                base("fields = \"*\"\nrow_scope = 'colour = \"red\"'\n"),
                "grant[0].row_scope",
                "colour",
            ),
            (
                base("fields = \"*\"\nrow_scope = 'city = '\n"),
                "grant[0].row_scope",
                "syntax",
            ),
            (
                base("fields = \"*\"\nnot_before = 2026-02-01\nnot_after = 2026-01-01\n"),
                "grant[0].not_after",
                "not after",
            ),
            (
                base("fields = \"*\"\nnot_after = \"soon\"\n"),
                "grant[0].not_after",
                "RFC 3339",
            ),
            (
                base("fields = \"*\"\nmax_rows = 0\n"),
                "grant[0].max_rows",
                "at least 1",
            ),
            (base("fields = \"some\"\n"), "grant[0].fields", "\"*\""),
            (
                format!(
                    "{}[[grant]]\nid = \"x\"\napps = [\"a\"]\ndatasets = [\"enterprise\"]\nfields = \"*\"\n",
                    base("fields = \"*\"\n")
                ),
                "grant[1].id",
                "used twice",
            ),
            (
                "[[grant]]\nid = \"x\"\ndatasets = [\"enterprise\"]\nfields = \"*\"\n".into(),
                "grant[0].apps",
                "at least one",
            ),
        ];
        for (text, key, reason) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.path, "policy.toml", "{text}");
            assert!(e.key.contains(key), "{text}\nkey {:?} should be {key:?}: {e}", e.key);
            assert!(e.reason.contains(reason), "{text}\nreason: {e}");
        }
    }

    #[test]
    fn a_hash_mask_loads_with_a_key() {
        let text = "[[grant]]\nid = \"x\"\napps = [\"a\"]\ndatasets = [\"enterprise\"]\nfields = \"*\"\nmasks = { legal_representative = \"hash\" }\n";
        let f = PolicyFile::parse(text, "p", Registry::standard().unwrap(), &Limits::default(), true).unwrap();
        assert_eq!(f.grants[0].shown["legal_representative"], Shown::Mask("hash".into()));
    }
}
