//! The access workflow end to end, over the TLS mesh with real
//! application, operator and auditor certificates: applying through the
//! gateway, the region's operators listing, approving (narrowed), refusing
//! and revoking, the applicant following its requests, the grant the node's
//! policy stage gets, and every refusal of a role, a region or a term.

use std::time::SystemTime;

use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use yrd_identity::PeerId;
use yrd_node::access::days::{Calendar, day_end, day_end_seconds, region_date, unix_seconds};
use yrd_node::policy::grant::{Fields, GrantSource, Grantee, Origin};
use yrd_proto::mesh::access_client::AccessClient;
use yrd_proto::mesh::audit_client::AuditClient;
use yrd_proto::mesh::{
    AccessRequest, AccessState, DecideAccessRequest, ListAccessRequestsRequest, ReadAuditRequest, RequestAccessRequest,
    RevokeAccessRequest, filter_expr,
};

use crate::mesh::{Mesh, MeshOptions, REGIONS, TD};

/// Jiangsu, the providing region of these tests.
const JS: usize = 1;
const PURPOSE: &str = "enterprise licensing cross-checks";

async fn mesh() -> Mesh {
    Mesh::start_with(MeshOptions {
        gateway_allow: vec!["operator".into(), "auditor".into()],
        ..MeshOptions::default()
    })
    .await
    .0
}

fn app(name: &str) -> PeerId {
    PeerId::app(TD, name).unwrap()
}

fn operator(region: &str) -> PeerId {
    PeerId::operator(TD, region, "wang").unwrap()
}

fn auditor(region: &str) -> PeerId {
    PeerId::auditor(TD, region, "li").unwrap()
}

async fn access(mesh: &Mesh, id: &PeerId) -> AccessClient<Channel> {
    AccessClient::new(mesh.gateway_channel(id).await)
}

/// A day `n` days from today, in the regions' calendar.
fn day_from_today(n: i64) -> String {
    region_date(unix_seconds(SystemTime::now()) + n * 86_400).to_string()
}

fn application(fields: &[&str], row_scope: &str) -> RequestAccessRequest {
    RequestAccessRequest {
        region: REGIONS[JS].into(),
        dataset: "enterprise".into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        purpose: PURPOSE.into(),
        until: day_from_today(60),
        row_scope: row_scope.into(),
        row_scope_expr: None,
    }
}

fn list(state: AccessState) -> ListAccessRequestsRequest {
    ListAccessRequestsRequest {
        region: REGIONS[JS].into(),
        state: state as i32,
    }
}

fn approve(id: &str) -> DecideAccessRequest {
    DecideAccessRequest {
        region: REGIONS[JS].into(),
        id: id.into(),
        approve: true,
        ..Default::default()
    }
}

fn refuse(id: &str, reason: &str) -> DecideAccessRequest {
    DecideAccessRequest {
        region: REGIONS[JS].into(),
        id: id.into(),
        approve: false,
        reason: reason.into(),
        ..Default::default()
    }
}

fn revoke(id: &str, reason: &str) -> RevokeAccessRequest {
    RevokeAccessRequest {
        region: REGIONS[JS].into(),
        id: id.into(),
        reason: reason.into(),
    }
}

/// The ErrorInfo reason of a refusal.
fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

fn violation_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[track_caller]
fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(
        (status.code(), violation_fields(status)),
        (Code::InvalidArgument, vec![field.to_owned()]),
        "{status:?}"
    );
}

/// The answer of a call that must succeed.
async fn ok<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> T {
    match call.await {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("the call was refused: {e:?}"),
    }
}

/// The refusal of a call that must fail.
async fn refused<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> tonic::Status {
    match call.await {
        Ok(_) => panic!("the call was answered, not refused"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_denied(status: &tonic::Status, code: Code, why: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), why, "{status:?}");
}

/// The node's grant source, as the policy stage gets it.
async fn grants_of(mesh: &Mesh, region: usize) -> std::sync::Arc<yrd_node::access::Workflow> {
    mesh.nodes[region].as_ref().unwrap().workflow.clone()
}

#[tokio::test]
async fn an_approved_narrowed_request_is_a_grant_until_revoked() {
    let mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;
    let mut op = access(&mesh, &operator(REGIONS[JS])).await;

    let filed = ok(dash.request_access(application(
        &["name", "contact_phone", "address"],
        "city = \"320500\" OR city = \"320200\"",
    )))
    .await;
    assert_eq!(filed.id, "320000-1");
    assert_eq!(filed.state, AccessState::Pending as i32);
    assert_eq!(filed.applicant, app("dash").uri());
    assert_eq!(filed.row_scope_text, "city = \"320500\" OR city = \"320200\"");
    // The deadline: ten working days after the day of filing, at its end.
    let today = region_date(unix_seconds(SystemTime::now()));
    let due = Calendar::default().add_working_days(today, 10).unwrap();
    assert_eq!(filed.answer_due.as_ref().unwrap().seconds, day_end_seconds(due));

    // The operator sees it pending, with its age and due date.
    let pending = ok(op.list_access_requests(list(AccessState::Pending))).await;
    assert_eq!(pending.requests.len(), 1);
    let seen = &pending.requests[0];
    assert_eq!(
        (seen.id.as_str(), seen.age_working_days, seen.overdue),
        ("320000-1", 0, false)
    );
    assert_eq!(seen.answer_due, filed.answer_due);
    // Nothing is granted yet.
    let workflow = grants_of(&mesh, JS).await;
    assert!(workflow.grants().is_empty());

    // Approved, narrowed in fields, rows and time.
    let until = day_from_today(30);
    let approved = ok(op.decide_access(DecideAccessRequest {
        fields: vec!["contact_phone".into()],
        row_scope: "registered_capital > 1000000".into(),
        until: until.clone(),
        reason: "approved for the licensing cross-check only".into(),
        ..approve("320000-1")
    }))
    .await;
    assert_eq!(approved.state, AccessState::Approved as i32);
    assert_eq!(approved.granted_fields, ["contact_phone"]);
    assert_eq!(approved.granted_until, until);
    assert_eq!(approved.grant_id, "request:320000-1");
    assert_eq!(approved.decided_by, operator(REGIONS[JS]).uri());

    // The applicant reads the decision.
    let mine = ok(dash.list_access_requests(list(AccessState::Unspecified))).await;
    assert_eq!(mine.requests.len(), 1);
    let status = &mine.requests[0];
    assert_eq!(status.state, AccessState::Approved as i32);
    assert_eq!(status.reason, "approved for the licensing cross-check only");
    assert_eq!(status.granted_fields, ["contact_phone"]);
    assert_eq!(
        status.granted_row_scope_text,
        "(city = \"320500\" OR city = \"320200\") AND registered_capital > 1000000"
    );

    // The node's policy stage gets the narrowed grant.
    let grants = workflow.grants();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g.id, "request:320000-1");
    assert_eq!(g.origin, Origin::Request("320000-1".into()));
    assert_eq!(g.grantees, [Grantee::App("dash".into())]);
    assert_eq!(g.datasets, ["enterprise"]);
    assert_eq!(g.fields, Fields::Named(vec!["contact_phone".into()]));
    assert_eq!(g.purposes, [PURPOSE]);
    assert_eq!(
        g.not_after,
        Some(day_end(yrd_proto::datetime::parse_date(&until).unwrap()))
    );
    let Some(filter_expr::Kind::And(scope)) = g.row_scope.as_ref().and_then(|s| s.kind.clone()) else {
        panic!(
            "the granted scope is the applied one ANDed with the narrowing: {:?}",
            g.row_scope
        )
    };
    assert_eq!(scope.exprs.len(), 2);
    assert!(matches!(scope.exprs[0].kind, Some(filter_expr::Kind::Or(_))));

    // Another application sees none of it.
    let mut other = access(&mesh, &app("other")).await;
    let theirs = ok(other.list_access_requests(list(AccessState::Unspecified))).await;
    assert!(theirs.requests.is_empty());

    // Revoked: gone from the grants at once, and the applicant is told why.
    let revoked = ok(op.revoke_access(revoke("320000-1", "the cross-check is finished"))).await;
    assert_eq!(revoked.state, AccessState::Revoked as i32);
    assert!(workflow.grants().is_empty());
    let mine = ok(dash.list_access_requests(list(AccessState::Unspecified))).await;
    assert_eq!(mine.requests[0].state, AccessState::Revoked as i32);
    assert_eq!(mine.requests[0].reason, "the cross-check is finished");
    // Revoking twice, or deciding a revoked request, is refused naming the state.
    let e = refused(op.revoke_access(revoke("320000-1", "again"))).await;
    assert_denied(&e, Code::FailedPrecondition, "ACCESS_REQUEST_STATE");
    assert!(e.message().contains("revoked"), "{e:?}");
}

#[tokio::test]
async fn refusals_need_a_reason_and_the_applicant_reads_it() {
    let mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;
    let mut op = access(&mesh, &operator(REGIONS[JS])).await;
    let filed: AccessRequest = ok(dash.request_access(application(&["address"], ""))).await;

    let e = refused(op.decide_access(refuse(&filed.id, "  "))).await;
    assert_invalid(&e, "reason");
    // Narrowing terms belong to approvals.
    let e = refused(op.decide_access(DecideAccessRequest {
        fields: vec!["address".into()],
        ..refuse(&filed.id, "no")
    }))
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Still pending.
    let pending = ok(op.list_access_requests(list(AccessState::Pending))).await;
    assert_eq!(pending.requests.len(), 1);

    let decided = ok(op.decide_access(refuse(&filed.id, "no legal basis for addresses was given"))).await;
    assert_eq!(decided.state, AccessState::Refused as i32);
    assert!(decided.grant_id.is_empty());
    let mine = ok(dash.list_access_requests(list(AccessState::Unspecified))).await;
    assert_eq!(mine.requests[0].state, AccessState::Refused as i32);
    assert_eq!(mine.requests[0].reason, "no legal basis for addresses was given");
    assert!(grants_of(&mesh, JS).await.grants().is_empty());

    // Deciding twice names the state.
    let e = refused(op.decide_access(approve(&filed.id))).await;
    assert_denied(&e, Code::FailedPrecondition, "ACCESS_REQUEST_STATE");
    assert!(e.message().contains("refused"), "{e:?}");
    // A refused request cannot be revoked; an unknown one is not found.
    let e = refused(op.revoke_access(revoke(&filed.id, "x"))).await;
    assert_denied(&e, Code::FailedPrecondition, "ACCESS_REQUEST_STATE");
    let e = refused(op.decide_access(approve("320000-99"))).await;
    assert_denied(&e, Code::NotFound, "ACCESS_REQUEST_NOT_FOUND");
}

#[tokio::test]
async fn only_the_regions_operators_decide_and_only_applications_apply() {
    let mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;
    let filed = ok(dash.request_access(application(&["contact_phone"], ""))).await;

    // An operator of Shanghai deciding for Jiangsu.
    let mut sh_op = access(&mesh, &operator(REGIONS[0])).await;
    let e = refused(sh_op.decide_access(approve(&filed.id))).await;
    assert_denied(&e, Code::PermissionDenied, "OPERATOR_OF_OTHER_REGION");
    let e = refused(sh_op.revoke_access(revoke(&filed.id, "x"))).await;
    assert_denied(&e, Code::PermissionDenied, "OPERATOR_OF_OTHER_REGION");
    let e = refused(sh_op.list_access_requests(list(AccessState::Pending))).await;
    assert_denied(&e, Code::PermissionDenied, "OPERATOR_OF_OTHER_REGION");
    // An application deciding, even its own request.
    let e = refused(dash.decide_access(approve(&filed.id))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_OPERATOR");
    // An auditor neither decides nor applies nor lists requests.
    let mut aud = access(&mesh, &auditor(REGIONS[JS])).await;
    let e = refused(aud.decide_access(approve(&filed.id))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_OPERATOR");
    let e = refused(aud.request_access(application(&["contact_phone"], ""))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_APPLICATION");
    // An operator does not apply.
    let mut js_op = access(&mesh, &operator(REGIONS[JS])).await;
    let e = refused(js_op.request_access(application(&["contact_phone"], ""))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_APPLICATION");
    // None of it changed the request.
    let pending = ok(js_op.list_access_requests(list(AccessState::Pending))).await;
    assert_eq!(pending.requests.len(), 1);
    assert_eq!(pending.requests[0].id, filed.id);
}

/// A request to the Jiangsu node at `path`, acting for `subject`, with an
/// on-behalf-of assertion signed by `gateway` (a gateway the node trusts).
fn as_subject<T: prost::Message>(
    gateway: &yrd_identity::Signer,
    path: &str,
    subject: &PeerId,
    msg: T,
) -> tonic::Request<T> {
    let acting = yrd_gateway::client::Acting {
        subject: Some(subject.clone()),
        purpose: String::new(),
    };
    let signed = yrd_gateway::assertion::build(
        Some(gateway),
        &acting,
        REGIONS[JS],
        path,
        &msg,
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert_bin(yrd_gateway::assertion::HEADER, yrd_gateway::assertion::encode(&signed));
    r
}

const REQUEST: &str = "/yrd.mesh.v1.DataNode/RequestAccess";
const DECIDE: &str = "/yrd.mesh.v1.DataNode/DecideAccess";

/// The node is the authority, whatever a gateway lets through: called
/// directly by a gateway identity acting for the wrong subject, it refuses.
#[tokio::test]
async fn the_node_checks_roles_itself() {
    use yrd_proto::mesh::data_node_client::DataNodeClient;
    let mesh = mesh().await;
    let paths = crate::mesh::issue(&mesh.pki(), &PeerId::gateway(TD, "gw2").unwrap(), false);
    let m = yrd_identity::TlsMaterial::load(&paths.ca, &paths.cert, &paths.key).unwrap();
    let gw = yrd_identity::Signer::from_material(&m).unwrap();
    let url = format!("https://{}", mesh.nodes[JS].as_ref().unwrap().addr);
    let ch = Mesh::channel(&url, yrd_identity::tonic_client_tls(&m, "localhost"))
        .await
        .unwrap();
    let mut node = DataNodeClient::new(ch);
    let filed = ok(node.request_access(as_subject(
        &gw,
        REQUEST,
        &app("dash"),
        application(&["contact_phone"], ""),
    )))
    .await;
    let e = refused(node.decide_access(as_subject(&gw, DECIDE, &operator(REGIONS[0]), approve(&filed.id)))).await;
    assert_denied(&e, Code::PermissionDenied, "OPERATOR_OF_OTHER_REGION");
    let e = refused(node.decide_access(as_subject(&gw, DECIDE, &app("dash"), approve(&filed.id)))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_OPERATOR");
    let e = refused(node.request_access(as_subject(
        &gw,
        REQUEST,
        &auditor(REGIONS[JS]),
        application(&["contact_phone"], ""),
    )))
    .await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_APPLICATION");
    let e = refused(node.decide_access(tonic::Request::new(approve(&filed.id)))).await;
    assert_denied(&e, Code::Unauthenticated, "ASSERTION_MISSING");
    // Nodes never parse text: a row scope as text is refused.
    let e = refused(node.request_access(as_subject(
        &gw,
        REQUEST,
        &app("dash"),
        application(&["contact_phone"], "city = \"320500\""),
    )))
    .await;
    assert_invalid(&e, "row_scope");
    // The region's own operator may.
    let decided = ok(node.decide_access(as_subject(&gw, DECIDE, &operator(REGIONS[JS]), approve(&filed.id)))).await;
    assert_eq!(decided.state, AccessState::Approved as i32);
}

#[tokio::test]
async fn bad_terms_are_refused_naming_them() {
    let mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;

    // A not-shared field never leaves the region.
    let e = refused(dash.request_access(application(&["name", "credit_risk_class"], ""))).await;
    assert_denied(&e, Code::PermissionDenied, "FIELD_NOT_SHARED");
    assert!(e.message().contains("credit_risk_class"), "{e:?}");
    // Row-scope text that does not parse, or names no field, is refused at
    // the gateway naming row_scope.
    let e = refused(dash.request_access(application(&["name"], "city = = \"320500\""))).await;
    assert_invalid(&e, "row_scope");
    let e = refused(dash.request_access(application(&["name"], "planet = \"mars\""))).await;
    assert_invalid(&e, "row_scope");
    assert!(e.message().contains("planet"), "{e:?}");
    // Unknown fields, datasets and regions.
    let e = refused(dash.request_access(application(&["shoe_size"], ""))).await;
    assert_invalid(&e, "fields");
    let e = refused(dash.request_access(RequestAccessRequest {
        dataset: "weather".into(),
        ..application(&["name"], "")
    }))
    .await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = refused(dash.request_access(RequestAccessRequest {
        region: "990000".into(),
        ..application(&["name"], "")
    }))
    .await;
    assert_invalid(&e, "region");
    // Purpose and validity.
    let e = refused(dash.request_access(RequestAccessRequest {
        purpose: " ".into(),
        ..application(&["name"], "")
    }))
    .await;
    assert_invalid(&e, "purpose");
    let e = refused(dash.request_access(RequestAccessRequest {
        until: day_from_today(0),
        ..application(&["name"], "")
    }))
    .await;
    assert_invalid(&e, "until");
    let e = refused(dash.request_access(RequestAccessRequest {
        until: day_from_today(400),
        ..application(&["name"], "")
    }))
    .await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("access.max_validity"), "{e:?}");

    // An approval may only narrow.
    let filed = ok(dash.request_access(application(&["name", "address"], ""))).await;
    let mut op = access(&mesh, &operator(REGIONS[JS])).await;
    let e = refused(op.decide_access(DecideAccessRequest {
        fields: vec!["contact_phone".into()],
        ..approve(&filed.id)
    }))
    .await;
    assert_invalid(&e, "fields");
    let e = refused(op.decide_access(DecideAccessRequest {
        until: day_from_today(90),
        ..approve(&filed.id)
    }))
    .await;
    assert_invalid(&e, "until");
    let e = refused(op.decide_access(DecideAccessRequest {
        row_scope: "registered_capital > \"lots\"".into(),
        ..approve(&filed.id)
    }))
    .await;
    assert_invalid(&e, "row_scope");
    // None of these decided it.
    let pending = ok(op.list_access_requests(list(AccessState::Pending))).await;
    assert_eq!(pending.requests.len(), 1);
}

#[tokio::test]
async fn decisions_survive_a_node_restart() {
    let mut mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;
    let mut op = access(&mesh, &operator(REGIONS[JS])).await;
    let first = ok(dash.request_access(application(&["name"], ""))).await;
    let second = ok(dash.request_access(application(&["address"], "city = \"320500\""))).await;
    ok(op.decide_access(approve(&first.id))).await;

    let addr = mesh.nodes[JS].as_ref().unwrap().addr;
    mesh.stop_node(JS).await;
    // The restarted node opens its workflow afresh from its database, as a
    // new process would.
    mesh.restart_node(JS, addr).await;
    mesh.wait_region(REGIONS[JS], true).await;

    let all = ok(op.list_access_requests(list(AccessState::Unspecified))).await;
    let state_of = |id: &str| all.requests.iter().find(|r| r.id == id).map(|r| r.state);
    assert_eq!(state_of(&first.id), Some(AccessState::Approved as i32));
    assert_eq!(state_of(&second.id), Some(AccessState::Pending as i32));
    let kept = all.requests.iter().find(|r| r.id == second.id).unwrap();
    assert_eq!(kept.row_scope_text, "city = \"320500\"");
    assert_eq!(kept.answer_due, second.answer_due);
    let grants = grants_of(&mesh, JS).await.grants();
    assert_eq!(
        grants.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["request:320000-1"]
    );
    // Ids go on from where they were.
    let third = ok(dash.request_access(application(&["name"], ""))).await;
    assert_eq!(third.id, "320000-3");
}

#[tokio::test]
async fn only_the_regions_auditors_read_its_audit() {
    let mesh = mesh().await;
    let read = |region: &str| ReadAuditRequest {
        region: region.into(),
        ..Default::default()
    };
    let mut by_app = AuditClient::new(mesh.gateway_channel(&app("dash")).await);
    let e = refused(by_app.read_audit(read(REGIONS[JS]))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_AUDITOR");
    let mut by_op = AuditClient::new(mesh.gateway_channel(&operator(REGIONS[JS])).await);
    let e = refused(by_op.read_audit(read(REGIONS[JS]))).await;
    assert_denied(&e, Code::PermissionDenied, "NOT_AN_AUDITOR");
    let mut by_aud = AuditClient::new(mesh.gateway_channel(&auditor(REGIONS[JS])).await);
    let e = refused(by_aud.read_audit(read(REGIONS[0]))).await;
    assert_denied(&e, Code::PermissionDenied, "AUDITOR_OF_OTHER_REGION");
    let mut nowhere = AuditClient::new(mesh.gateway_channel(&auditor("990000")).await);
    let e = refused(nowhere.read_audit(read("990000"))).await;
    assert_invalid(&e, "region");
    // What an application did at Jiangsu, the region's auditor reads back
    // through the gateway: one record when the request was decided (before
    // any row left) and one at its end with the rows.
    let mut fed = yrd_proto::mesh::federation_client::FederationClient::new(mesh.gateway_channel(&app("dash")).await);
    let page = crate::gateway::fed_query(
        &mut fed,
        yrd_proto::mesh::QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["credit_code".into(), "name".into()],
            regions: vec![REGIONS[JS].into()],
            // One district: the whole answer fits the page, so the node's
            // stream runs to its summary.
            filter: "district = \"320102\"".into(),
            page_size: 1000,
            purpose: "audit test".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let shown: usize = page.batches.iter().map(|b| b.rows.len()).sum();
    assert!(shown > 0 && shown < 1000, "{shown}");
    let audit_id = page
        .summary
        .regions
        .iter()
        .find(|r| r.region == REGIONS[JS])
        .unwrap()
        .audit_id
        .clone();
    assert!(!audit_id.is_empty(), "the region names its audit record");
    let denied = fed_denied_address(&mut fed).await;
    let mut stream = ok(by_aud.read_audit(ReadAuditRequest {
        app: "dash".into(),
        ..read(REGIONS[JS])
    }))
    .await;
    let mut records = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        for line in batch.lines {
            records.push(yrd_audit::parse_line(&line).unwrap().1);
        }
    }
    let query = records
        .iter()
        .find(|r| r.entry.kind == "query" && r.entry.decision == yrd_audit::Decision::Allow)
        .unwrap();
    assert_eq!(query.entry.subject.as_deref(), Some("spiffe://yrd.mesh/app/dash"));
    assert_eq!(query.entry.caller.as_deref(), Some("spiffe://yrd.mesh/gateway/gw"));
    assert_eq!(query.entry.purpose.as_deref(), Some("audit test"));
    assert_eq!(query.entry.dataset.as_deref(), Some("enterprise"));
    assert_eq!(query.entry.fields, ["credit_code", "name"]);
    assert_eq!(query.entry.rule.as_deref(), Some("rule:unconditional"));
    assert_eq!(format!("{}-{}", "node-320000-n1", query.seq), audit_id);
    let end = records.iter().find(|r| r.entry.kind == "query.end").unwrap();
    assert_eq!(end.entry.request.as_deref(), Some(audit_id.as_str()));
    assert_eq!(end.entry.rows, Some(shown as u64));
    assert_eq!(query.entry.filter.as_deref(), Some("district = \"320102\""));
    let denial = records
        .iter()
        .find(|r| r.entry.kind == "query" && r.entry.decision == yrd_audit::Decision::Deny)
        .unwrap();
    assert_eq!(denial.entry.reason.as_deref(), Some(denied.as_str()));
    // Reading the audit is itself recorded, and the files verify.
    let dir = mesh.dir.path().join(format!("audit-{}", REGIONS[JS]));
    let report = yrd_audit::verify(&[dir], None).unwrap();
    assert!(report.records >= 3, "{report}");
}

/// A query the policy refuses at Jiangsu (address is conditionally
/// shared, and no grant gives it); returns the reason the region gave.
async fn fed_denied_address(
    fed: &mut yrd_proto::mesh::federation_client::FederationClient<tonic::transport::Channel>,
) -> String {
    let page = crate::gateway::fed_query(
        fed,
        yrd_proto::mesh::QueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["address".into()],
            regions: vec![REGIONS[JS].into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = page.summary.regions.iter().find(|r| r.region == REGIONS[JS]).unwrap();
    assert_eq!(r.state(), yrd_proto::mesh::RegionState::PermissionDenied, "{r:?}");
    r.reason.clone()
}

#[tokio::test]
async fn a_node_stopped_gracefully_ends_its_audit_with_a_signed_checkpoint() {
    let mut mesh = mesh().await;
    let mut dash = access(&mesh, &app("dash")).await;
    ok(dash.request_access(application(&["name"], ""))).await;
    // Held past the stop (its event sink holds the audit log, as a
    // process's other tasks might): the log's writer stays alive, so only
    // the close at shutdown writes the final checkpoint.
    let _workflow = grants_of(&mesh, JS).await;
    mesh.stop_node(JS).await;

    let dir = mesh.dir.path().join(format!("audit-{}", REGIONS[JS]));
    let (report, last) = tokio::task::spawn_blocking(move || {
        let report = yrd_audit::verify(std::slice::from_ref(&dir), None).unwrap();
        let text = std::fs::read_to_string(report.files.last().unwrap()).unwrap();
        let last = yrd_audit::parse_line(text.lines().last().unwrap()).unwrap().1;
        (report, last)
    })
    .await
    .unwrap();
    assert_eq!(
        report.chain_only, 0,
        "no record after the last signed checkpoint: {report}"
    );
    assert_eq!(last.entry.kind, yrd_audit::CHECKPOINT);
    assert_eq!(last.seq, report.last_seq);
    assert!(
        report.records >= 2,
        "the request's record, then the checkpoint: {report}"
    );
}
