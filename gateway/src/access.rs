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
use yrd_identity::{PeerId, Role};
use yrd_proto::mesh::access_server::Access;
use yrd_proto::mesh::audit_server::Audit;
use yrd_proto::mesh::{
    AccessRequest, AccessState, AuditLines, DecideAccessRequest, FilterExpr, ListAccessRequestsRequest,
    ListAccessRequestsResponse, ReadAuditRequest, RequestAccessRequest, RevokeAccessRequest,
};
use yrd_proto::schema::Registry as Schemas;
use yrd_query::{Limits, QueryError};

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
    pub fn new(registry: Registry, schemas: &'static Schemas, limits: Limits, default_deadline: Duration) -> Self {
        Self {
            inner: Arc::new(State {
                registry,
                schemas,
                limits,
                default_deadline,
            }),
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
            .map_err(|e| GatewayError::Query(renamed(e, param)))
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

/// A query error about a filter, naming `param` (`row_scope`) instead.
fn renamed(err: QueryError, param: &'static str) -> QueryError {
    match err {
        QueryError::Syntax { position, message, .. } => QueryError::Syntax {
            param,
            position,
            message,
        },
        QueryError::UnknownField { dataset, field, .. } => QueryError::UnknownField { param, dataset, field },
        QueryError::FieldNotAllowed { field, reason, .. } => QueryError::FieldNotAllowed { param, field, reason },
        QueryError::TypeMismatch {
            field, expected, found, ..
        } => QueryError::TypeMismatch {
            param,
            field,
            expected,
            found,
        },
        QueryError::Limit { limit, max, actual, .. } => QueryError::Limit {
            param,
            limit,
            max,
            actual,
        },
        QueryError::Invalid { message, .. } => QueryError::Invalid { param, message },
        other => other,
    }
}

#[tonic::async_trait]
impl Access for AccessService {
    async fn request_access(&self, req: Request<RequestAccessRequest>) -> Result<Response<AccessRequest>, Status> {
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

    async fn list_access_requests(
        &self,
        req: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, Need::Lister, &req.get_ref().region)?;
        let msg = req.into_inner();
        let region = self.region(&msg.region)?;
        Ok(Response::new(client::call_for(&region, msg, deadline, &acting).await?))
    }

    async fn decide_access(&self, req: Request<DecideAccessRequest>) -> Result<Response<AccessRequest>, Status> {
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

    async fn revoke_access(&self, req: Request<RevokeAccessRequest>) -> Result<Response<AccessRequest>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, Need::Operator, &req.get_ref().region)?;
        let msg = req.into_inner();
        let region = self.region(&msg.region)?;
        Ok(Response::new(client::call_for(&region, msg, deadline, &acting).await?))
    }
}

#[tonic::async_trait]
impl Audit for AccessService {
    type ReadAuditStream = ReceiverStream<Result<AuditLines, Status>>;

    async fn read_audit(&self, req: Request<ReadAuditRequest>) -> Result<Response<Self::ReadAuditStream>, Status> {
        let deadline = self.deadline(&req);
        let acting = self.acting(&req, Need::Auditor, &req.get_ref().region)?;
        let msg = req.into_inner();
        let region = self.region(&msg.region)?;
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
