//! The region's policy, through the mutual-TLS mesh with real application
//! certificates: each refusal with its reason code, masks, row scopes,
//! small-group suppression, reload without restart, Explain, and a denying
//! region in a BEST_EFFORT answer.

use std::time::Duration;

use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use yrd_identity::PeerId;
use yrd_proto::datasets::enterprise::v1::Enterprise;
use yrd_proto::mesh::federation_client::FederationClient;
use yrd_proto::mesh::{
    AggregateFunction, AggregateRequest, AggregateResponse, Consistency, Metric, QueryRequest, RegionState,
    RegionStatus,
};

use crate::gateway::{FedPage, fed_query};
use crate::mesh::{Mesh, MeshOptions, REGIONS, TD};

/// Shanghai, the region whose policy is under test.
const SH: usize = 0;
/// Jiangsu, whose policy closes the enterprise register.
const JS: usize = 1;
/// The smallest group the aggregate-only grant keeps.
const K: i64 = 10;

/// A `[[grant]]` of the enterprise register to the application `app`:
/// `fields` as TOML (`"*"` or a list), then any further `keys` (lines).
fn grant(id: &str, app: &str, fields: &str, keys: &str) -> String {
    format!("\n[[grant]]\nid = \"{id}\"\napps = [\"{app}\"]\ndatasets = [\"enterprise\"]\nfields = {fields}\n{keys}\n")
}

/// Every field the grant's dataset shares.
const ALL: &str = "\"*\"";
/// Only the (conditionally shared) address.
const ADDRESS: &str = "[\"address\"]";

/// Shanghai's policy: 11 grants, one per behaviour under test.
fn shanghai() -> String {
    [
        "[groups]\njoiners = [\"joiner-a\", \"joiner-b\"]\n".to_owned(),
        grant(
            "dash",
            "dashboard",
            r#"["legal_representative", "representative_id_number"]"#,
            r#"masks = { legal_representative = "plain", representative_id_number = "keep(6,4)" }
row_scope = 'district = "310101" OR district = "310104"'
min_group_size = 3"#,
        ),
        grant(
            "masker",
            "masker",
            ALL,
            r#"masks = { registered_capital = "round(4)", established = "year", city = "hash" }"#,
        ),
        grant("old", "late", ADDRESS, "not_after = 2020-01-01"),
        grant("future", "early", ADDRESS, "not_before = 2999-01-01"),
        grant("purposeful", "purposeful", ADDRESS, r#"purposes = ["supervision"]"#),
        grant("small-pages", "pager", ADDRESS, "max_rows = 10"),
        grant("sums", "stats", ALL, "aggregate_only = true\nmin_group_size = 10"),
        grant("rated", "rated", ADDRESS, "rate_per_minute = 2"),
        grant("counted", "counted", ADDRESS, "max_uses = 2"),
        r#"
[[grant]]
id = "join"
groups = ["joiners"]
datasets = ["enterprise"]
fields = ["representative_id_number"]
masks = { representative_id_number = "hash" }
"#
        .to_owned(),
    ]
    .concat()
}

const JIANGSU: &str = "[datasets.enterprise]\nclass = \"not_shared\"\n";

async fn policy_mesh() -> Mesh {
    Mesh::start_with(MeshOptions {
        policies: vec![(SH, shanghai()), (JS, JIANGSU.to_owned())],
        adjust_node: Some(|_, c| {
            c.policy.hash_key = yrd_identity::Secret::new("policy-test-hash-key-0123456789");
            c.policy.reload_interval = Duration::from_millis(100);
        }),
        // Operators may call the gateway, so that a request for one reaches
        // the node (which refuses it).
        adjust_gateway: Some(|c| c.allow = vec!["app".into(), "operator".into()]),
        ..MeshOptions::default()
    })
    .await
    .0
}

/// A query of Shanghai's enterprises.
fn sh(fields: &[&str], filter: &str, order_by: &str, page_size: i32) -> QueryRequest {
    QueryRequest {
        dataset: "enterprise".into(),
        filter: filter.into(),
        order_by: order_by.into(),
        page_size,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        regions: vec![REGIONS[SH].into()],
        ..Default::default()
    }
}

fn sh_agg(group_by: &[&str], metrics: Vec<Metric>) -> AggregateRequest {
    AggregateRequest {
        dataset: "enterprise".into(),
        group_by: group_by.iter().map(|g| (*g).to_owned()).collect(),
        metrics,
        regions: vec![REGIONS[SH].into()],
        ..Default::default()
    }
}

fn metric(f: AggregateFunction, field: &str) -> Metric {
    Metric {
        function: f as i32,
        field: field.into(),
    }
}

fn region(regions: &[RegionStatus], i: usize) -> &RegionStatus {
    regions
        .iter()
        .find(|r| r.region == REGIONS[i])
        .expect("region in summary")
}

fn rows(page: &FedPage) -> Vec<Enterprise> {
    page.batches
        .iter()
        .flat_map(|b| b.rows.iter())
        .map(|a| Enterprise::decode(a.value.as_slice()).unwrap())
        .collect()
}

/// The reason Shanghai gave for refusing `req`, asserting it was refused
/// as PERMISSION_DENIED in a BEST_EFFORT answer (not an error of the query).
async fn refused_query(client: &mut FederationClient<Channel>, req: QueryRequest) -> String {
    let page = fed_query(client, req)
        .await
        .expect("BEST_EFFORT answers despite a refusal");
    let r = region(&page.summary.regions, SH);
    assert_eq!(r.state(), RegionState::PermissionDenied, "{r:?}");
    assert!(page.batches.is_empty());
    r.reason.clone()
}

async fn refused_aggregate(client: &mut FederationClient<Channel>, req: AggregateRequest) -> String {
    let resp = client.aggregate(req).await.expect("BEST_EFFORT answers").into_inner();
    let r = region(&resp.regions, SH);
    assert_eq!(r.state(), RegionState::PermissionDenied, "{r:?}");
    r.reason.clone()
}

/// Asserts that Shanghai refused `req` for `reason`.
async fn assert_refused(client: &mut FederationClient<Channel>, req: QueryRequest, reason: &str) {
    assert_eq!(refused_query(client, req).await, reason);
}

/// Asserts that Shanghai refused the aggregate `req` for `reason`.
async fn assert_refused_aggregate(client: &mut FederationClient<Channel>, req: AggregateRequest, reason: &str) {
    assert_eq!(refused_aggregate(client, req).await, reason);
}

async fn allowed(client: &mut FederationClient<Channel>, req: QueryRequest) -> FedPage {
    let page = fed_query(client, req).await.unwrap();
    let r = region(&page.summary.regions, SH);
    assert_eq!(r.state(), RegionState::Ok, "{r:?}");
    page
}

#[tokio::test]
async fn each_refusal_names_its_reason() {
    let mesh = policy_mesh().await;
    let c = |name: &'static str| mesh.app(name);
    // No grant at all for a conditional field; unconditional ones are open.
    let mut nobody = c("nobody").await;
    assert_refused(&mut nobody, sh(&["name", "address"], "", "", 10), "NO_GRANT").await;
    allowed(&mut nobody, sh(&["name"], "", "", 10)).await;
    // Validity window.
    assert_refused(&mut c("late").await, sh_req_address(), "GRANT_EXPIRED").await;
    assert_refused(&mut c("early").await, sh_req_address(), "GRANT_NOT_YET_VALID").await;
    // A grant that does not cover the field.
    let mut dash = c("dashboard").await;
    assert_refused(&mut dash, sh_req_address(), "FIELD_NOT_GRANTED").await;
    // Not shared, whatever the grant (masker's covers "*").
    let mut masker = c("masker").await;
    assert_refused(&mut masker, sh(&["credit_risk_class"], "", "", 10), "FIELD_NOT_SHARED").await;
    assert_refused(
        &mut masker,
        sh(&[], "credit_risk_class = \"A\"", "", 10),
        "FIELD_NOT_SHARED",
    )
    .await;
    assert_refused_aggregate(&mut masker, sh_agg(&["credit_risk_class"], vec![]), "FIELD_NOT_SHARED").await;
    assert_refused_aggregate(
        &mut masker,
        sh_agg(&[], vec![metric(AggregateFunction::Count, "credit_risk_class")]),
        "FIELD_NOT_SHARED",
    )
    .await;
    // Masked fields cannot be probed.
    assert_refused(
        &mut masker,
        sh(&[], "registered_capital > 1000000", "", 10),
        "FIELD_MASKED",
    )
    .await;
    assert_refused(&mut masker, sh(&[], "", "established desc", 10), "FIELD_MASKED").await;
    assert_refused_aggregate(&mut masker, sh_agg(&["city"], vec![]), "FIELD_MASKED").await;
    assert_refused_aggregate(
        &mut masker,
        sh_agg(&[], vec![metric(AggregateFunction::Max, "registered_capital")]),
        "FIELD_MASKED",
    )
    .await;
    // Purposes.
    let mut purposeful = c("purposeful").await;
    assert_refused(&mut purposeful, sh_req_address(), "PURPOSE_REQUIRED").await;
    let with = |p: &str| QueryRequest {
        purpose: p.into(),
        ..sh_req_address()
    };
    assert_refused(&mut purposeful, with("marketing"), "PURPOSE_NOT_ALLOWED").await;
    allowed(&mut purposeful, with("supervision")).await;
    // Rows per query.
    let mut pager = c("pager").await;
    assert_refused(&mut pager, sh(&["address"], "", "", 50), "ROW_LIMIT_EXCEEDED").await;
    allowed(&mut pager, sh_req_address()).await;
    // Aggregate-only grants refuse rows.
    assert_refused(&mut c("stats").await, sh_req_address(), "AGGREGATE_ONLY").await;
    // Rate and use count.
    let mut rated = c("rated").await;
    for _ in 0..2 {
        allowed(&mut rated, sh_req_address()).await;
    }
    assert_refused(&mut rated, sh_req_address(), "RATE_EXCEEDED").await;
    let mut counted = c("counted").await;
    for _ in 0..2 {
        allowed(&mut counted, sh_req_address()).await;
    }
    assert_refused(&mut counted, sh_req_address(), "USES_EXHAUSTED").await;
    // Not an application: the gateway refuses an operator's query before
    // any region is asked (each node refuses it too: the engine's
    // `non_applications_are_refused`).
    let mut operator = mesh.client_as(&PeerId::operator(TD, REGIONS[SH], "ops").unwrap()).await;
    let err = fed_query(&mut operator, sh(&["name"], "", "", 10)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.get_details_error_info().unwrap().reason, "NOT_AN_APPLICATION");
    // ALL_REGIONS: a refusal fails the whole query.
    let err = fed_query(
        &mut nobody,
        QueryRequest {
            consistency: Consistency::AllRegions as i32,
            ..sh_req_address()
        },
    )
    .await
    .expect_err("ALL_REGIONS fails when a region refuses");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn answers_show_what_the_policy_says() {
    let mesh = policy_mesh().await;
    let sql = mesh.sql(SH);

    // Row scope (with an OR) around a user filter with an OR: exactly the
    // intersection, as SQLite counts it.
    let mut dash = mesh.app("dashboard").await;
    let page = allowed(
        &mut dash,
        sh(&[], "status = \"active\" OR industry = \"F51\"", "", 1000),
    )
    .await;
    let got = rows(&page);
    let expected: i64 = sql
        .query_row(
            "SELECT COUNT(*) FROM ds_enterprise WHERE (district = '310101' OR district = '310104')
             AND (status = 'active' OR industry = 'F51')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(expected > 0);
    assert_eq!(got.len() as i64, expected);
    // Granted plain, granted with the default mask, not granted (absent).
    for e in &got {
        let (name, id): (String, String) = sql
            .query_row(
                "SELECT legal_representative, representative_id_number FROM ds_enterprise WHERE credit_code = ?",
                [&e.credit_code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(e.legal_representative, name);
        let n = id.chars().count();
        let masked: String = id
            .chars()
            .enumerate()
            .map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' })
            .collect();
        assert_eq!(e.representative_id_number, masked);
        assert!(e.address.is_empty() && e.contact_phone.is_empty() && e.credit_risk_class.is_empty());
    }
    // Masks on numbers, dates and hashed text.
    let mut masker = mesh.app("masker").await;
    let page = allowed(&mut masker, sh(&[], "", "", 20)).await;
    for e in rows(&page) {
        let (cap, est): (f64, String) = sql
            .query_row(
                "SELECT registered_capital, established FROM ds_enterprise WHERE credit_code = ?",
                [&e.credit_code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(e.registered_capital, (cap / 1e4).round() * 1e4);
        assert_eq!(e.established, format!("{}-01-01", &est[..4]));
        assert_eq!(e.city.len(), 16);
        assert_ne!(e.city, "310100");
    }
    // hash: one application joins on it, two applications cannot.
    let ids = |page: &FedPage| -> Vec<(String, String)> {
        rows(page)
            .into_iter()
            .map(|e| (e.credit_code, e.representative_id_number))
            .collect()
    };
    let q = || sh(&["credit_code", "representative_id_number"], "", "credit_code", 30);
    let a1 = ids(&allowed(&mut mesh.app("joiner-a").await, q()).await);
    let a2 = ids(&allowed(&mut mesh.app("joiner-a").await, q()).await);
    let b = ids(&allowed(&mut mesh.app("joiner-b").await, q()).await);
    assert_eq!(a1, a2);
    assert_eq!(a1.len(), b.len());
    for ((code_a, ha), (code_b, hb)) in a1.iter().zip(&b) {
        assert_eq!(code_a, code_b);
        assert_eq!(ha.len(), 16);
        assert_ne!(ha, hb);
    }

    // Small groups are left out and counted.
    let mut stats = mesh.app("stats").await;
    let resp: AggregateResponse = stats
        .aggregate(sh_agg(&["industry"], vec![metric(AggregateFunction::Count, "")]))
        .await
        .unwrap()
        .into_inner();
    let mut st = sql
        .prepare("SELECT industry, COUNT(*) FROM ds_enterprise GROUP BY industry ORDER BY industry")
        .unwrap();
    let all: Vec<(String, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let kept: Vec<&(String, i64)> = all.iter().filter(|(_, n)| *n >= K).collect();
    let small = all.len() - kept.len();
    assert!(
        small > 0 && !kept.is_empty(),
        "the data has groups on both sides of k: {all:?}"
    );
    assert_eq!(resp.groups.len(), kept.len());
    for (g, (industry, n)) in resp.groups.iter().zip(&kept) {
        assert_eq!(
            g.keys[0].kind,
            Some(yrd_proto::mesh::value::Kind::StringValue(industry.clone()))
        );
        assert_eq!(g.metrics.len(), 1, "the added row count is stripped");
        assert_eq!(
            g.metrics[0].value.as_ref().unwrap().kind,
            Some(yrd_proto::mesh::value::Kind::IntValue(*n))
        );
    }
    assert_eq!(region(&resp.regions, SH).suppressed_groups, small as u64);

    // A denying region is PERMISSION_DENIED with its reason in a
    // BEST_EFFORT answer, while the others answer.
    let page = fed_query(
        &mut mesh.app("anyone").await,
        QueryRequest {
            dataset: "enterprise".into(),
            page_size: 5000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let js = region(&page.summary.regions, JS);
    assert_eq!(js.state(), RegionState::PermissionDenied);
    assert_eq!(js.reason, "DATASET_NOT_SHARED");
    assert!(js.message.contains("enterprise"), "{js:?}");
    let answered: i64 = [0usize, 2, 3]
        .iter()
        .map(|&i| {
            assert_eq!(region(&page.summary.regions, i).state(), RegionState::Ok);
            mesh.sql(i)
                .query_row("SELECT COUNT(*) FROM ds_enterprise", [], |r| r.get::<_, i64>(0))
                .unwrap()
        })
        .sum();
    assert_eq!(page.summary.rows as i64, answered);
    // Without a grant, only unconditionally shared fields leave.
    assert!(
        rows(&page)
            .iter()
            .all(|e| e.legal_representative.is_empty() && e.address.is_empty())
    );
}

#[tokio::test]
async fn explain_shows_each_regions_policy() {
    let mesh = policy_mesh().await;
    let mut dash = mesh.app("dashboard").await;
    let resp = dash
        .explain(QueryRequest {
            dataset: "enterprise".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let policy = |i: usize| {
        resp.regions
            .iter()
            .find(|r| r.region == REGIONS[i])
            .and_then(|r| r.policy.clone())
            .expect("every included region explains its policy")
    };
    let sh = policy(SH);
    assert!(sh.allowed);
    assert_eq!(sh.rule, "grant:dash");
    assert_eq!(sh.row_scope_text, "district = \"310101\" OR district = \"310104\"");
    assert!(sh.row_scope.is_some());
    assert_eq!(sh.min_group_size, 3);
    assert_eq!(sh.subject, "spiffe://yrd.mesh/app/dashboard");
    let field = |p: &yrd_proto::mesh::PolicyDecision, n: &str| {
        let f = p.fields.iter().find(|f| f.field == n).unwrap();
        (f.treatment.clone(), f.mask.clone(), f.reason.clone())
    };
    assert_eq!(
        field(&sh, "legal_representative"),
        ("plain".into(), String::new(), "granted by dash".into())
    );
    assert_eq!(
        field(&sh, "representative_id_number"),
        ("masked".into(), "keep(6,4)".into(), "granted by dash".into())
    );
    assert_eq!(field(&sh, "address").0, "refused");
    assert_eq!(field(&sh, "credit_risk_class").2, "not shared");
    let js = policy(JS);
    assert!(!js.allowed);
    assert_eq!(js.reason, "DATASET_NOT_SHARED");
    let zj = policy(2);
    assert!(zj.allowed);
    assert_eq!(zj.rule, "rule:unconditional");
    assert_eq!(field(&zj, "legal_representative").0, "refused");
    // Explain reads nothing and spends nothing: a use-counted grant is
    // still whole afterwards.
    let mut counted = mesh.app("counted").await;
    for _ in 0..3 {
        counted.explain(sh_req_address()).await.unwrap();
    }
    for _ in 0..2 {
        allowed(&mut counted, sh_req_address()).await;
    }
}

fn sh_req_address() -> QueryRequest {
    sh(&["address"], "", "", 10)
}

#[tokio::test]
async fn a_policy_edit_takes_effect_without_restart() {
    let mesh = policy_mesh().await;
    let node = mesh.nodes[SH].as_ref().unwrap();
    let mut events = node.policy.subscribe();
    let mut nobody = mesh.app("nobody").await;
    assert_refused(&mut nobody, sh_req_address(), "NO_GRANT").await;
    // A good edit: the next request sees it.
    let granted = shanghai() + &grant("late-comer", "nobody", ADDRESS, "");
    std::fs::write(mesh.policy_path(SH), &granted).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a reload within the interval")
        .unwrap();
    assert_eq!(event.outcome, Ok(11), "{event:?}");
    let page = allowed(&mut nobody, sh_req_address()).await;
    assert!(rows(&page).iter().any(|e| !e.address.is_empty()));
    // A bad edit: refused with file, key and reason; the old policy stays.
    std::fs::write(
        mesh.policy_path(SH),
        granted.clone() + &grant("bad", "x", ALL, r#"masks = { name = "blur" }"#),
    )
    .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a reload attempt within the interval")
        .unwrap();
    let reason = event.outcome.unwrap_err();
    assert!(reason.contains(&mesh.policy_path(SH).display().to_string()), "{reason}");
    assert!(reason.contains("grant[11].masks.name"), "{reason}");
    assert!(reason.contains("unknown mask"), "{reason}");
    allowed(&mut nobody, sh_req_address()).await;
}

#[tokio::test]
async fn a_refusal_shows_even_when_another_region_filled_the_page() {
    let mesh = policy_mesh().await;
    let mut masker = mesh.app("masker").await;
    // No order: rows are forwarded as they come, and Shanghai's first batch
    // fills the page of 5. The other regions refuse the address (Jiangsu
    // shares no enterprise field, the others grant no address), and each
    // says so, with its reason, rather than looking like a region that was
    // merely not needed.
    let page = fed_query(
        &mut masker,
        QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["credit_code".into(), "address".into()],
            page_size: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.summary.rows, 5);
    assert_eq!(region(&page.summary.regions, SH).state(), RegionState::Ok);
    for i in 1..REGIONS.len() {
        let r = region(&page.summary.regions, i);
        assert_eq!(r.state(), RegionState::PermissionDenied, "{r:?}");
        assert!(!r.reason.is_empty(), "{r:?}");
    }
}
