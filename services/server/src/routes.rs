//! The routes every mesh process serves besides its own service: the
//! standard health service and server reflection, v1 and v1alpha (grpcurl
//! and older tools speak the latter).
//!
//! They follow the trust-domain rule of the services: any identity of the
//! process's own trust domain may use them (the gateway's health checks of
//! nodes present the gateway certificate, admin tools their own), and a
//! certificate of another trust domain is refused with `PERMISSION_DENIED`
//! by the same interceptor the services use ([`Authorizer::members`]).

use std::sync::Arc;

use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use yrd_identity::Authorizer;

use crate::ServerError;

/// Health (with each of `serving` reported `SERVING`) and reflection (v1
/// and v1alpha) over the encoded file descriptor sets `descriptors` and
/// the health service's own. Add the process's services to the result.
///
/// With `trust_domain` (mutual TLS), only identities of that trust domain
/// are answered; without (plaintext, development only) there is no
/// certificate to check and everyone is.
pub async fn standard_routes(
    serving: &[&str],
    descriptors: &[&'static [u8]],
    trust_domain: Option<&str>,
) -> Result<Routes, ServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in serving {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        descriptors.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, set| b.register_encoded_file_descriptor_set(set),
        )
    };
    let v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let Some(trust_domain) = trust_domain else {
        return Ok(Routes::new(health).add_service(v1).add_service(v1alpha));
    };
    let members = Arc::new(Authorizer::members(trust_domain).map_err(|e| ServerError::Authorizer(e.to_string()))?);
    Ok(
        Routes::new(InterceptedService::new(health, members.clone().interceptor()))
            .add_service(InterceptedService::new(v1, members.clone().interceptor()))
            .add_service(InterceptedService::new(v1alpha, members.interceptor())),
    )
}
