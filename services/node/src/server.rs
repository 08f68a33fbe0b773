//! The node's gRPC server: DataNode (for the identities the config
//! allows, gateways by default), the standard health service and server
//! reflection (v1 and v1alpha), over mutual TLS. Connections are accepted
//! in one place, [`yrd_server::serve`], behind the layers every process
//! shares (deadline, status and metrics, graceful drain).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::server::NamedService;
use tonic::service::Routes;
use yrd_identity::Authorizer;
use yrd_proto::mesh::data_node_server::DataNodeServer;
use yrd_server::{DeadlinePolicy, ServeOptions, Serving};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::obo::{self, Verifier};
use crate::service::NodeService;
use crate::store::Store;

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// The admin HTTP listener, when configured.
    pub admin: Option<yrd_telemetry::AdminHandle>,
    server: Serving,
}

impl RunningNode {
    /// Stops accepting, lets open calls finish within the config's
    /// `shutdown_grace`, ends the rest with `UNAVAILABLE`, and waits.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        Ok(self.server.shutdown().await?)
    }

    /// Stops at once, dropping open calls (as a crash would).
    pub fn abort(self) {
        self.server.abort();
    }
}

/// Opens the configured store.
pub async fn open_store(config: &NodeConfig) -> Result<Arc<dyn Store>, NodeError> {
    crate::store::open(&config.store, &config.region).await
}

/// The health, reflection and DataNode services, DataNode behind the
/// authorizer (none in insecure mode) and with the on-behalf-of
/// `verifier` its handlers check assertions with.
pub async fn routes(
    service: NodeService,
    authorizer: Option<Arc<Authorizer>>,
    verifier: Arc<Verifier>,
) -> Result<Routes, NodeError> {
    let routes = yrd_server::standard_routes(
        &[<DataNodeServer<NodeService> as NamedService>::NAME],
        &[yrd_proto::FILE_DESCRIPTOR_SET],
    )
    .await?;
    Ok(routes.add_service(DataNodeServer::with_interceptor(
        service,
        obo::interceptor(authorizer, verifier),
    )))
}

/// Opens the store, loads the certificates, binds the listener and serves
/// until shut down.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    if config.admin_listen.is_some() {
        // Install the recorder first, so that what is measured during start
        // (the certificate's expiry) is kept.
        yrd_telemetry::metrics_handle()?;
    }
    let (tls, authorizer) = if config.insecure {
        tracing::warn!("insecure = true: plaintext, no client certificates, no caller checks; for development only");
        (None, None)
    } else {
        let paths = config
            .tls
            .as_ref()
            .ok_or_else(|| NodeError::Schema("tls is required unless insecure".into()))?;
        let material = paths.load()?;
        let server = yrd_identity::server_config(&material)?;
        if let Some((id, at)) = material.expiry() {
            yrd_telemetry::certificate_expiry(&id, at);
        }
        (
            Some(server),
            Some(Arc::new(Authorizer::from_rules(&config.trust_domain, &config.allow)?)),
        )
    };
    let store = open_store(&config).await?;
    let (listen, region, admin_listen) = (config.listen, config.region.clone(), config.admin_listen);
    let options = ServeOptions::new(DeadlinePolicy::at_most(config.query.max_query_time))
        .with_shutdown_grace(config.shutdown_grace);
    let verifier = Arc::new(Verifier::new(&config)?);
    let service = NodeService::new(config, store);
    let routes = routes(service, authorizer, verifier).await?;
    let server = yrd_server::serve(routes, listen, tls, options).await?;
    let admin = match admin_listen {
        // The node is ready once its store is open and it serves.
        Some(at) => Some(yrd_telemetry::start_admin(at, Arc::new(|| true)).await?),
        None => None,
    };
    tracing::info!(addr = %server.addr, region = %region, admin = ?admin.as_ref().map(|a| a.addr), "region node serving");
    Ok(RunningNode {
        addr: server.addr,
        admin,
        server,
    })
}
