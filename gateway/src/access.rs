//! The gateway's `Access` and `Audit` services: applications apply for
//! access and follow their requests, a region's operators decide its
//! requests, a region's auditors read its audit log. Each call names a
//! region; the gateway checks the caller's role early (before any region
//! is called), turns row-scope text into the typed tree (nodes never parse
//! text), and forwards the call to that region's node on behalf of the
//! caller's verified identity. The node is the authority: it checks the
//! role again, and its errors pass through as they came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use yrd_audit::Entry;
use yrd_identity::{PeerId, Role};
use yrd_proto::mesh::access_server::Access;
use yrd_proto::mesh::audit_server::Audit;
use yrd_proto::mesh::{
    AccessRequest, AccessState, AuditLines, DecideAccessRequest, FilterExpr, ListAccessRequestsRequest,
    ListAccessRequestsResponse, ReadAuditRequest, RequestAccessRequest, RevokeAccessRequest,
};
use yrd_proto::schema::Registry as Schemas;
use yrd_query::{Limits, QueryError};

use crate::audit::{self, GatewayAudit};
use crate::client::{self, Acting};
use crate::error::GatewayError;
use crate::registry::{Region, Registry};

/// Audit batches buffered towards the auditor: a slow reader slows the
/// region's stream, it does not grow memory.
const AUDIT_BUFFER: usize = 2;

/// The Access and Audit implementation; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessService {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    registry: Registry,
    schemas: &'static Schemas,
    limits: Limits,
    default_deadline: Duration,
    audit: GatewayAudit,
}

/// What a caller may do in the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Apply for access: applications.
    Applicant,
    /// List requests: the region's operators, or applications (their own).
    Lister,
    /// Decide or revoke: the region's operators.
    Operator,
    /// Read the audit: the region's auditors.
    Auditor,
}

impl AccessService {
    /// A service over the regions of `registry`.
    pub fn new(
        registry: Registry,
        schemas: &'static Schemas,
        limits: Limits,
        default_deadline: Duration,
        audit: GatewayAudit,
    ) -> Self {
        Self {
            inner: Arc::new(State {
                registry,
                schemas,
                limits,
                default_deadline,
                audit,
            }),
        }
    }

    /// The gateway's record of a workflow or audit call of `kind` in
    /// `region`, holding only names the gateway knows: the region if it is
    /// one of the federation's, the dataset and fields if the schema has
    /// them, the request id if it has the form of one.
    fn record<T>(&self, kind: &'static str, req: &Request<T>, region: &str) -> Entry {
        let peer = yrd_identity::peer_id(req);
        let mut e = self.inner.audit.entry(kind, peer.as_ref());
        e.region = self.inner.registry.get(region).map(|r| r.id.clone());
        e
    }

    /// Adds the dataset and fields of `entry`'s request, if known.
    fn with_dataset(&self, entry: &mut Entry, dataset: &str, fields: &[String]) {
        if let Some(schema) = self.inner.schemas.get(dataset) {
            entry.dataset = Some(schema.id.clone());
            entry.fields = audit::known_fields(schema, fields);
        }
    }

    /// The caller's deadline (bounded by the server's deadline layer).
    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let d = yrd_server::Deadline::of(req).map_or(self.inner.default_deadline, |d| d.remaining());
        Instant::now() + d
    }

    /// The region named, or `INVALID_ARGUMENT` naming it.
    fn region(&self, id: &str) -> Result<Arc<Region>, GatewayError> {
        if id.is_empty() {
            return Err(QueryError::Invalid {
                param: "region",
                message: "name the region (a GB/T 2260 province-level code such as 320000)".into(),
            }
            .into());
        }
        self.inner.registry.get(id).cloned().ok_or_else(|| {
            QueryError::Invalid {
                param: "region",
                message: format!("{id} is not a region of this federation"),
            }
            .into()
        })
    }

    /// Checks the caller's role for `need` in `region`; the identity the
    /// region call acts for.
    fn acting<T>(&self, req: &Request<T>, need: Need, region: &str) -> Result<Arc<Acting>, GatewayError> {
        let peer = yrd_identity::peer_id(req).ok_or_else(|| GatewayError::AccessDenied {
            reason: "NO_IDENTITY",
            message: "the access workflow needs a verified client certificate".into(),
        })?;
        check_role(&peer, need, region)?;
        Ok(Arc::new(Acting {
            subject: Some(peer),
            purpose: String::new(),
        }))
    }

    /// Row-scope text parsed and checked against `dataset`'s schema, as a
    /// query's filter is, with errors naming `param`.
    fn scope(&self, dataset: &str, text: &str, param: &'static str) -> Result<Option<FilterExpr>, GatewayError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let schema = yrd_query::check::dataset(self.inner.schemas, dataset)?;
        yrd_query::filter::parse_filter(text, &schema, &self.inner.limits)
            .map_err(|e| GatewayError::Query(e.for_param(param)))
    }
}

/// Whether `peer` may do `need` in `region`; refused with a reason code.
fn check_role(peer: &PeerId, need: Need, region: &str) -> Result<(), GatewayError> {
    let denied = |reason: &'static str, message: String| Err(GatewayError::AccessDenied { reason, message });
    match (need, &peer.role) {
        (Need::Applicant, Role::App) | (Need::Lister, Role::App) => Ok(()),
        (Need::Applicant, other) => denied(
            "NOT_AN_APPLICATION",
            format!("only applications apply for access, not a {}", other.kind()),
        ),
        (Need::Lister | Need::Operator, Role::Operator { region: own }) if own == region => Ok(()),
        (Need::Lister | Need::Operator, Role::Operator { region: own }) => denied(
            "OPERATOR_OF_OTHER_REGION",
            format!("an operator of region {own} decides that region's requests only, not those of {region}"),
        ),
        (Need::Lister | Need::Operator, other) => denied(
            "NOT_AN_OPERATOR",
            format!(
                "only operators of region {region} decide its access requests, not a {}",
                other.kind()
            ),
        ),
        (Need::Auditor, Role::Auditor { region: own }) if own == region => Ok(()),
        (Need::Auditor, Role::Auditor { region: own }) => denied(
            "AUDITOR_OF_OTHER_REGION",
            format!("an auditor of region {own} reads that region's audit only, not that of {region}"),
        ),
        (Need::Auditor, other) => denied(
            "NOT_AN_AUDITOR",
            format!(
                "only auditors of region {region} read its audit, not a {}",
                other.kind()
            ),
        ),
    }
}

/// An access request's id as recorded: only when it has the form of one
/// (`320000-17`), so that arbitrary text is never copied into the log.
fn request_id(id: &str) -> Option<serde_json::Value> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| serde_json::json!({ "access_request": id }))
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn request_access(&self, req: Request<RequestAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let msg = req.get_ref();
        let mut record = self.record("access.request", &req, &msg.region);
        self.with_dataset(&mut record, &msg.dataset, &msg.fields);
        record.purpose = yrd_query::limits::check_purpose(&msg.purpose)
            .ok()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let answer = self.forward_request(req).await;
        self.inner.audit.outcome(record, answer).await
    }

    async fn list_access_requests(
        &self,
        req: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        let region = req.get_ref().region.clone();
        let record = self.record("access.list", &req, &region);
        let answer = self.forward(req, Need::Lister, &region).await;
        self.inner.audit.outcome(record, answer).await
    }

    async fn decide_access(&self, req: Request<DecideAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let msg = req.get_ref();
        let mut record = self.record(
            if msg.approve { "access.approve" } else { "access.refuse" },
            &req,
            &msg.region,
        );
        record.detail = request_id(&msg.id);
        let answer = self.forward_decision(req).await;
        if let Ok(decided) = &answer {
            self.with_dataset(&mut record, &decided.get_ref().dataset, &decided.get_ref().fields);
        }
        self.inner.audit.outcome(record, answer).await
    }

    async fn revoke_access(&self, req: Request<RevokeAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let region = req.get_ref().region.clone();
        let mut record = self.record("access.revoke", &req, &region);
        record.detail = request_id(&req.get_ref().id);
        let answer = self.forward(req, Need::Operator, &region).await;
        self.inner.audit.outcome(record, answer).await
    }
}

impl AccessService {
    /// Checks the caller's role for `need` in `region` and forwards the
    /// call as it is to that region's node.
    async fn forward<M: client::NodeMethod>(
        &self,
        req: Request<M>,
        need: Need,
        region: &str,
    ) -> Result<Response<<M::Reply as client::Reply>::Output>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, need, region)?;
        let region = self.region(region)?;
        Ok(Response::new(
            client::call_for(&region, req.into_inner(), deadline, &acting).await?,
        ))
    }

    /// RequestAccess after its record is begun: checks, then forwards.
    async fn forward_request(&self, req: Request<RequestAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, Need::Applicant, &req.get_ref().region)?;
        let mut msg = req.into_inner();
        let region = self.region(&msg.region)?;
        if msg.row_scope_expr.is_some() && !msg.row_scope.trim().is_empty() {
            return Err(GatewayError::from(QueryError::Invalid {
                param: "row_scope",
                message: "set row_scope or row_scope_expr, not both".into(),
            })
            .into());
        }
        if !msg.row_scope.trim().is_empty() {
            msg.row_scope_expr = self.scope(&msg.dataset, &msg.row_scope, "row_scope")?;
        }
        msg.row_scope.clear();
        Ok(Response::new(client::call_for(&region, msg, deadline, &acting).await?))
    }

    /// DecideAccess after its record is begun: checks, then forwards.
    async fn forward_decision(&self, req: Request<DecideAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, Need::Operator, &req.get_ref().region)?;
        let mut msg = req.into_inner();
        let region = self.region(&msg.region)?;
        if !msg.row_scope.trim().is_empty() {
            if msg.row_scope_expr.is_some() {
                return Err(GatewayError::from(QueryError::Invalid {
                    param: "row_scope",
                    message: "set row_scope or row_scope_expr, not both".into(),
                })
                .into());
            }
            // The narrowing is parsed against the request's dataset, which
            // only the region knows: ask it (as the operator) first.
            let pending = client::call_for(
                &region,
                ListAccessRequestsRequest {
                    region: msg.region.clone(),
                    state: AccessState::Pending as i32,
                },
                deadline,
                &acting,
            )
            .await?;
            let Some(request) = pending.requests.iter().find(|r| r.id == msg.id) else {
                return Err(GatewayError::from(QueryError::Invalid {
                    param: "id",
                    message: format!("{} is not a pending access request of region {}", msg.id, msg.region),
                })
                .into());
            };
            msg.row_scope_expr = self.scope(&request.dataset, &msg.row_scope, "row_scope")?;
        }
        msg.row_scope.clear();
        Ok(Response::new(client::call_for(&region, msg, deadline, &acting).await?))
    }
}

#[tonic::async_trait]
impl Audit for AccessService {
    type ReadAuditStream = ReceiverStream<Result<AuditLines, Status>>;

    async fn read_audit(&self, req: Request<ReadAuditRequest>) -> Result<Response<Self::ReadAuditStream>, Status> {
        let mut record = self.record("audit.read", &req, &req.get_ref().region);
        if let Some(schema) = self.inner.schemas.get(&req.get_ref().dataset) {
            record.dataset = Some(schema.id.clone());
        }
        let deadline = self.deadline(&req);
        let checked = self
            .acting(&req, Need::Auditor, &req.get_ref().region)
            .and_then(|acting| Ok((acting, self.region(&req.get_ref().region)?)));
        let (acting, region) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let status = Status::from(e);
                self.inner.audit.refused(record, &status).await;
                return Err(status);
            }
        };
        // The read is on the record before any line is read.
        self.inner.audit.record(record).await?;
        let msg = req.into_inner();
        // The call is started here, so that a refusal by the region is the
        // call's status rather than the first item of a stream.
        let mut stream = client::call_for(&region, msg, deadline, &acting).await?;
        let (tx, rx) = mpsc::channel(AUDIT_BUFFER);
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(lines)) => {
                        if tx.send(Ok(lines)).await.is_err() {
                            // The auditor went away; dropping the stream
                            // cancels the region's call.
                            return;
                        }
                    }
                    Ok(None) => {
                        stream.finish(Ok(()));
                        return;
                    }
                    Err(status) => {
                        stream.finish(Err(&status));
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uri: &str) -> PeerId {
        PeerId::parse(uri).unwrap()
    }

    #[test]
    fn roles_are_checked_per_region() {
        let app = peer("spiffe://yrd.mesh/app/dash");
        let op = peer("spiffe://yrd.mesh/region/320000/operator/wang");
        let aud = peer("spiffe://yrd.mesh/region/320000/auditor/li");
        let reason = |r: Result<(), GatewayError>| match r {
            Ok(()) => "ok",
            Err(GatewayError::AccessDenied { reason, .. }) => reason,
            Err(other) => panic!("{other}"),
        };
        assert_eq!(reason(check_role(&app, Need::Applicant, "320000")), "ok");
        assert_eq!(reason(check_role(&app, Need::Lister, "320000")), "ok");
        assert_eq!(reason(check_role(&app, Need::Operator, "320000")), "NOT_AN_OPERATOR");
        assert_eq!(reason(check_role(&app, Need::Auditor, "320000")), "NOT_AN_AUDITOR");
        assert_eq!(reason(check_role(&op, Need::Operator, "320000")), "ok");
        assert_eq!(reason(check_role(&op, Need::Lister, "320000")), "ok");
        assert_eq!(
            reason(check_role(&op, Need::Operator, "310000")),
            "OPERATOR_OF_OTHER_REGION"
        );
        assert_eq!(reason(check_role(&op, Need::Applicant, "320000")), "NOT_AN_APPLICATION");
        assert_eq!(reason(check_role(&op, Need::Auditor, "320000")), "NOT_AN_AUDITOR");
        assert_eq!(reason(check_role(&aud, Need::Auditor, "320000")), "ok");
        assert_eq!(
            reason(check_role(&aud, Need::Auditor, "330000")),
            "AUDITOR_OF_OTHER_REGION"
        );
        assert_eq!(
            reason(check_role(&aud, Need::Applicant, "320000")),
            "NOT_AN_APPLICATION"
        );
        assert_eq!(reason(check_role(&aud, Need::Operator, "320000")), "NOT_AN_OPERATOR");
    }
}
