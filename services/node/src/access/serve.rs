//! The node's access-workflow handlers: what `DataNode`'s `RequestAccess`,
//! `ListAccessRequests`, `DecideAccess` and `RevokeAccess` delegate to.
//! Each finds the node's [`Workflow`](super::Workflow) and answers with its
//! outcome or its error's one mapping to a status.

use tonic::{Response, Status};
use yrd_proto::mesh::{
    AccessRequest, DecideAccessRequest, ListAccessRequestsRequest, ListAccessRequestsResponse, RequestAccessRequest,
    RevokeAccessRequest,
};
use yrd_proto::schema::Registry;

use super::shared;
use crate::config::NodeConfig;
use crate::principal::Principal;

/// `RequestAccess`: an application applies; recorded as pending.
pub async fn request_access(
    config: &NodeConfig,
    registry: &'static Registry,
    caller: Principal,
    req: RequestAccessRequest,
) -> Result<Response<AccessRequest>, Status> {
    let workflow = shared(config, registry).await?;
    Ok(Response::new(workflow.request(&caller, req).await?.request))
}

/// `ListAccessRequests`: the region's requests (operators) or the caller's own (applications).
pub async fn list_access_requests(
    config: &NodeConfig,
    registry: &'static Registry,
    caller: Principal,
    req: ListAccessRequestsRequest,
) -> Result<Response<ListAccessRequestsResponse>, Status> {
    let workflow = shared(config, registry).await?;
    Ok(Response::new(workflow.list(&caller, req).await?))
}

/// `DecideAccess`: an operator of the region approves or refuses.
pub async fn decide_access(
    config: &NodeConfig,
    registry: &'static Registry,
    caller: Principal,
    req: DecideAccessRequest,
) -> Result<Response<AccessRequest>, Status> {
    let workflow = shared(config, registry).await?;
    Ok(Response::new(workflow.decide(&caller, req).await?.request))
}

/// `RevokeAccess`: an operator of the region revokes an approval.
pub async fn revoke_access(
    config: &NodeConfig,
    registry: &'static Registry,
    caller: Principal,
    req: RevokeAccessRequest,
) -> Result<Response<AccessRequest>, Status> {
    let workflow = shared(config, registry).await?;
    Ok(Response::new(workflow.revoke(&caller, req).await?.request))
}
