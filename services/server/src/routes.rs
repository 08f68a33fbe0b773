//! The routes every mesh process serves besides its own service: the
//! standard health service and server reflection, v1 and v1alpha (grpcurl
//! and older tools speak the latter).

use tonic::service::Routes;

use crate::ServerError;

/// Health (with each of `serving` reported `SERVING`) and reflection (v1
/// and v1alpha) over the encoded file descriptor sets `descriptors` and
/// the health service's own. Add the process's services to the result.
pub async fn standard_routes(serving: &[&str], descriptors: &[&'static [u8]]) -> Result<Routes, ServerError> {
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
    Ok(Routes::new(health).add_service(v1).add_service(v1alpha))
}
