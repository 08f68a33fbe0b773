//! The node's gRPC server: DataNode, the standard health service and server
//! reflection (v1 and v1alpha) on one listener. The listener is built in
//! one place, [`bind`], so transport security slots in there.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use yrd_proto::mesh::data_node_server::DataNodeServer;

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::service::NodeService;
use crate::store::Store;

/// How often HTTP/2 pings keep idle connections alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningNode {
    /// Stops accepting, lets open calls finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Task(e.to_string())),
            Err(e) => Err(NodeError::Task(e.to_string())),
        }
    }

    /// Stops at once, dropping open calls (as a crash would).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Opens the store on a blocking thread.
pub async fn open_store(config: &NodeConfig) -> Result<Store, NodeError> {
    let (path, region, idle) = (
        config.store.path.clone(),
        config.region.clone(),
        config.store.max_idle_connections,
    );
    tokio::task::spawn_blocking(move || Store::open(&path, &region, idle))
        .await
        .map_err(|e| NodeError::Task(e.to_string()))?
}

/// Binds the listener: the one place where connections are accepted.
/// `TCP_NODELAY` is set: small answers must not wait on Nagle's algorithm.
pub async fn bind(addr: SocketAddr) -> Result<(TcpIncoming, SocketAddr), NodeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| NodeError::Io {
        path: addr.to_string(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| NodeError::Io {
        path: addr.to_string(),
        source,
    })?;
    Ok((TcpIncoming::from(listener).with_nodelay(Some(true)), local))
}

/// Opens the store, binds the listener and serves until shut down.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let store = open_store(&config).await?;
    let (incoming, addr) = bind(config.listen).await?;
    let region = config.region.clone();
    let service = NodeService::new(config, store);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DataNodeServer<NodeService>>().await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(yrd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| NodeError::Schema(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| NodeError::Schema(e.to_string()))?;

    let (tx, rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DataNodeServer::new(service));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    tracing::info!(%addr, region = %region, "region node serving");
    Ok(RunningNode {
        addr,
        shutdown: Some(tx),
        task,
    })
}
