//! The node's gRPC server: DataNode (for the identities the config
//! allows, gateways by default), the standard health service and server
//! reflection (v1 and v1alpha), over mutual TLS. Connections are accepted
//! in one place, [`yrd_server::serve`], behind the layers every process
//! shares (deadline, status and metrics, graceful drain).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::server::NamedService;
use tonic::service::Routes;
use yrd_identity::{Authorizer, Secret};
use yrd_proto::mesh::data_node_server::DataNodeServer;
use yrd_proto::schema::Registry;
use yrd_server::{DeadlinePolicy, ServeOptions, Serving};

use crate::access::Workflow;
use crate::audit::NodeAudit;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::obo::{self, Verifier};
use crate::policy::file::PolicyFile;
use crate::policy::{NodePolicy, reload};
use crate::service::NodeService;
use crate::store::Store;

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// The admin HTTP listener, when configured.
    pub admin: Option<yrd_telemetry::AdminHandle>,
    /// The region's policy: subscribe to its reload events.
    pub policy: Arc<NodePolicy>,
    /// The region's access workflow (the policy stage's source of
    /// approved requests, and what the access methods answer with).
    pub workflow: Arc<Workflow>,
    server: Serving,
    reload: Option<tokio::task::JoinHandle<()>>,
    audit: NodeAudit,
}

impl RunningNode {
    /// Stops accepting, lets open calls finish within the config's
    /// `shutdown_grace`, ends the rest with `UNAVAILABLE`, and waits; then
    /// closes the audit log, which writes its final signed checkpoint. A
    /// failed close is logged; the result is the server's.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        if let Some(reload) = self.reload {
            reload.abort();
        }
        let served = self.server.shutdown().await;
        if let Err(err) = self.audit.log().close().await {
            tracing::error!(error = %err, region = %self.audit.region(), "the audit log was not closed cleanly: its last records may lack a signed checkpoint");
        }
        Ok(served?)
    }

    /// Stops at once, dropping open calls (as a crash would).
    pub fn abort(self) {
        if let Some(reload) = self.reload {
            reload.abort();
        }
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
        // Health and reflection follow the services' trust-domain rule.
        authorizer.as_deref().map(Authorizer::trust_domain),
    )
    .await?;
    Ok(routes.add_service(DataNodeServer::with_interceptor(
        service,
        obo::interceptor(authorizer, verifier),
    )))
}

/// The region's policy from the config's `[policy]` section: the policy
/// file (validated; an invalid file fails the start), the `hash` secret,
/// and the file's content, for the reload watcher to compare against.
pub async fn load_policy(config: &NodeConfig, schemas: &'static Registry) -> Result<(NodePolicy, Vec<u8>), NodeError> {
    let p = &config.policy;
    let hash_key = match &p.hash_key_file {
        Some(path) => {
            let bytes = read_file(path).await?;
            Some(Secret::new(String::from_utf8_lossy(&bytes).trim().to_owned()))
        }
        None => Some(p.hash_key.clone()).filter(|k| !k.is_empty()),
    };
    let (file, bytes) = match &p.file {
        None => (PolicyFile::default(), Vec::new()),
        Some(path) => {
            let bytes = read_file(path).await?;
            let shown = path.display().to_string();
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| NodeError::Policy(yrd_server::ConfigError::new(&shown, "-", "not UTF-8 text")))?;
            let file = PolicyFile::parse(&text, &shown, schemas, &config.limits, hash_key.is_some())
                .map_err(NodeError::Policy)?;
            (file, bytes)
        }
    };
    let grants = file.grants.len();
    let policy = NodePolicy::new(schemas, file, hash_key, p.min_group_size)?;
    tracing::info!(file = ?p.file, grants, "policy loaded");
    Ok((policy, bytes))
}

/// Reads a whole file off the async threads.
async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, NodeError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || std::fs::read(&p))
        .await
        .map_err(|e| NodeError::Task(e.to_string()))?
        .map_err(|source| NodeError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Opens the store, loads the certificates, binds the listener and serves
/// until shut down.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    if config.admin_listen.is_some() {
        // Install the recorder first, so that what is measured during start
        // (the certificate's expiry) is kept.
        yrd_telemetry::metrics_handle()?;
    }
    let mut signer = None;
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
        signer = Some(yrd_identity::Signer::from_material(&material)?);
        yrd_server::watch_certificate_expiry(material.clone(), paths.expiry_warning);
        (
            Some(server),
            Some(Arc::new(Authorizer::from_rules(&config.trust_domain, &config.allow)?)),
        )
    };
    let store = open_store(&config).await?;
    let (listen, region, admin_listen) = (config.listen, config.region.clone(), config.admin_listen);
    let telemetry = config.telemetry.clone();
    let options = ServeOptions::new(DeadlinePolicy::at_most(config.query.max_query_time))
        .with_shutdown_grace(config.shutdown_grace)
        .with_connections(config.connections);
    let verifier = Arc::new(Verifier::new(&config)?);
    let audit = open_audit(&config, signer).await?;
    let workflow = Workflow::open(&config, store.registry()).await?;
    let (policy, policy_bytes) = load_policy(&config, store.registry()).await?;
    // Approved access requests are grants too, and their use counts live in
    // the node's own store.
    let policy = Arc::new(policy.with_source(workflow.clone()).with_ledger(workflow.clone()));
    {
        let audit = audit.clone();
        workflow.set_event_sink(Arc::new(move |event| {
            let audit = audit.clone();
            Box::pin(async move {
                let mut e = yrd_audit::Entry::new(event.kind, yrd_audit::Decision::Allow);
                e.subject = Some(event.subject);
                e.region = Some(audit_region(&audit));
                e.dataset = Some(event.dataset);
                e.fields = event.fields;
                e.purpose = Some(event.purpose).filter(|p| !p.is_empty());
                e.reason = event.reason;
                e.rule = event.grant_id;
                e.trace_id = Some(yrd_telemetry::current_trace_id()).filter(|t| !t.is_empty());
                e.detail = Some(serde_json::json!({ "request": event.request_id, "applicant": event.applicant }));
                audit.record(e).await.map(|_| ())
            })
        }));
    }
    spawn_reload_audit(&policy, audit.clone());
    let reload = config.policy.file.clone().map(|path| {
        reload::watch(
            policy.clone(),
            path,
            &policy_bytes,
            config.policy.reload_interval,
            store.registry(),
            config.limits.clone(),
        )
    });
    let service = NodeService::with_audit(config, store, policy.clone(), audit.clone()).with_workflow(workflow.clone());
    let routes = routes(service, authorizer, verifier).await?;
    let server = yrd_server::serve(routes, listen, tls, options).await?;
    let admin = match admin_listen {
        // The node is ready once its store is open and it serves.
        Some(at) => Some(yrd_telemetry::start_admin(at, &telemetry, Arc::new(|| true)).await?),
        None => None,
    };
    tracing::info!(addr = %server.addr, region = %region, admin = ?admin.as_ref().map(|a| a.addr), "region node serving");
    Ok(RunningNode {
        addr: server.addr,
        admin,
        policy,
        workflow,
        server,
        reload,
        audit,
    })
}

/// Opens the node's audit log (its checkpoints signed with the node's
/// key), or none with a warning when the config has no `[audit]`.
async fn open_audit(config: &NodeConfig, signer: Option<yrd_identity::Signer>) -> Result<NodeAudit, NodeError> {
    let Some(audit) = config.audit.clone() else {
        tracing::warn!(region = %config.region, "no [audit] section: this node keeps no audit trail");
        return Ok(NodeAudit::disabled(config.region.clone()));
    };
    let source = match &signer {
        Some(s) => s.id().uri(),
        None => format!(
            "spiffe://{}/region/{}/node/insecure",
            config.trust_domain, config.region
        ),
    };
    let log = tokio::task::spawn_blocking(move || yrd_audit::AuditLog::open(&audit, &source, signer))
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
    Ok(NodeAudit::new(log, config.region.clone()))
}

/// The region an audit log records for.
fn audit_region(audit: &NodeAudit) -> String {
    audit.region().to_owned()
}

/// Records every policy reload, good or refused, in the audit.
fn spawn_reload_audit(policy: &Arc<NodePolicy>, audit: NodeAudit) {
    let mut events = policy.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let decision = if event.outcome.is_ok() {
                yrd_audit::Decision::Allow
            } else {
                yrd_audit::Decision::Fail
            };
            let mut e = yrd_audit::Entry::new("policy.reload", decision);
            e.region = Some(audit.region().to_owned());
            e.detail = Some(match &event.outcome {
                Ok(grants) => serde_json::json!({ "file": event.path, "sha256": event.sha256, "grants": grants }),
                Err(reason) => serde_json::json!({ "file": event.path, "sha256": event.sha256, "refused": reason }),
            });
            if let Err(err) = audit.record(e).await {
                tracing::error!(error = %err, "the audit record of a policy reload was not written");
            }
        }
    });
}
