//! The node's access-workflow handlers: `DataNode`'s `RequestAccess`,
//! `ListAccessRequests`, `DecideAccess` and `RevokeAccess` each answer
//! with [`answer`] and their step of the service's [`Workflow`]: the
//! verified caller, the step's outcome, or its error's one mapping to a
//! status.

use tonic::{Request, Response, Status};

use super::{Outcome, Workflow};
use crate::error::NodeError;
use crate::principal::Principal;
use crate::service::caller_of;

/// Answers `req`, a call of the DataNode method `method` (such as
/// `RequestAccess`), with `step` of `workflow` for its verified caller. A
/// service built without a workflow refuses the call as not served
/// (`UNIMPLEMENTED`).
pub async fn answer<T: prost::Message, O, R: From<O>>(
    workflow: Option<&Workflow>,
    req: Request<T>,
    method: &str,
    step: impl AsyncFnOnce(&Workflow, &Principal, T) -> Result<O, NodeError>,
) -> Result<Response<R>, Status> {
    let path = format!("/yrd.mesh.v1.DataNode/{method}");
    let caller = caller_of(&req, &path)?;
    let workflow = workflow.ok_or_else(|| {
        Status::unimplemented(format!(
            "{path}: this node service was built without an access workflow"
        ))
    })?;
    let outcome = step(workflow, &caller, req.into_inner()).await?;
    Ok(Response::new(R::from(outcome)))
}

/// A changed request answers with the request as it now is.
impl From<Outcome> for yrd_proto::mesh::AccessRequest {
    fn from(outcome: Outcome) -> Self {
        outcome.request
    }
}
