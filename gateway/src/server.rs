//! The gateway's gRPC server: Federation (applications only), health and
//! reflection, over mutual TLS, behind the layers every process shares
//! ([`yrd_server::serve`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tower::Layer;
use yrd_identity::{Authorizer, Signer};
use yrd_proto::mesh::access_server::AccessServer;
use yrd_proto::mesh::audit_server::AuditServer;
use yrd_proto::mesh::federation_server::FederationServer;
use yrd_proto::schema::Registry as Schemas;
use yrd_query::token::PageTokens;
use yrd_server::{DeadlinePolicy, ServeOptions, Serving};

use crate::access::AccessService;
use crate::assertion::Asserter;
use crate::audit::GatewayAudit;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::registry::Registry;
use crate::service::GatewayService;

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    /// The bound address.
    pub addr: SocketAddr,
    /// The regions, with their health.
    pub registry: Registry,
    /// The admin HTTP listener, when configured.
    pub admin: Option<yrd_telemetry::AdminHandle>,
    /// The gateway's audit log (disabled without an `[audit]` section).
    pub audit: GatewayAudit,
    server: Serving,
}

impl RunningGateway {
    /// Stops accepting, lets open calls finish within the config's
    /// `shutdown_grace`, ends the rest with `UNAVAILABLE`, waits, and
    /// closes the audit log, which writes its final signed checkpoint.
    pub async fn shutdown(self) -> Result<(), GatewayError> {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        let served = self.server.shutdown().await;
        // Calls that outlived the grace may still be writing their
        // `query.end`; the log refuses appends once closed.
        if let Err(err) = self.audit.log().close().await {
            tracing::error!(error = %err, "the audit log was not closed cleanly: its last records may lack a signed checkpoint");
        }
        Ok(served?)
    }
}

/// Loads certificates, starts health checks of every region and serves.
pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    if config.admin_listen.is_some() {
        // Install the recorder first, so that what is measured during start
        // (the certificate's expiry) is kept.
        yrd_telemetry::metrics_handle()?;
    }
    let schemas = Schemas::standard().map_err(|e| GatewayError::Config(e.to_string()))?;
    let tls = match (&config.tls, config.insecure) {
        (_, true) => {
            tracing::warn!("insecure = true: plaintext without client certificates; for development only");
            None
        }
        (Some(paths), false) => Some(paths.load()?),
        (None, false) => return Err(GatewayError::Config("tls is required unless insecure = true".into())),
    };
    if let (Some(material), Some(paths)) = (&tls, &config.tls) {
        yrd_server::watch_certificate_expiry(material.clone(), paths.expiry_warning);
    }
    // Assertions are signed with the key of the gateway's own certificate,
    // the one nodes see on the connection; an insecure gateway has none.
    let signer = tls.as_ref().map(Signer::from_material).transpose()?;
    let audit = open_audit(&config, signer.clone()).await?;
    let asserter = Arc::new(Asserter::new(signer, config.on_behalf_of_ttl));
    let registry = Registry::start(&config, tls.as_ref(), asserter)?;
    let secret = if config.query.page_token_secret.is_empty() {
        tracing::warn!(
            "query.page_token_secret is not set: page tokens work on this replica only and not after a restart"
        );
        random_secret()
    } else {
        config.query.page_token_secret.expose().as_bytes().to_vec()
    };
    let tokens = PageTokens::new(&secret, config.query.page_token_ttl);
    let authorizer = Arc::new(Authorizer::from_rules(&config.trust_domain, &config.allow)?);
    let service = GatewayService::new(config.clone(), registry.clone(), schemas, tokens, audit.clone());
    let access = AccessService::new(
        registry.clone(),
        schemas,
        config.limits.clone(),
        config.query.default_deadline,
        audit.clone(),
    );

    let federation = FederationServer::new(service).max_encoding_message_size(64 * 1024 * 1024);
    let per_application =
        crate::limit::CallLimitLayer::new(crate::limit::CallLimits::new(config.query.max_calls_per_application));
    let routes = yrd_server::standard_routes(
        &[
            <FederationServer<GatewayService> as NamedService>::NAME,
            <AccessServer<AccessService> as NamedService>::NAME,
            <AuditServer<AccessService> as NamedService>::NAME,
        ],
        &[yrd_proto::FILE_DESCRIPTOR_SET],
        // Health and reflection follow the services' trust-domain rule.
        tls.is_some().then_some(config.trust_domain.as_str()),
    )
    .await?;
    let audit_server = AuditServer::new(access.clone());
    let access = AccessServer::new(access);
    // In insecure mode there are no certificates to authorize by.
    let routes = if tls.is_some() {
        routes
            .add_service(per_application.layer(InterceptedService::new(federation, authorizer.clone().interceptor())))
            .add_service(InterceptedService::new(access, authorizer.clone().interceptor()))
            .add_service(InterceptedService::new(audit_server, authorizer.interceptor()))
    } else {
        routes
            .add_service(per_application.layer(federation))
            .add_service(access)
            .add_service(audit_server)
    };
    let server_tls = tls.as_ref().map(yrd_identity::server_config).transpose()?;
    let deadlines = DeadlinePolicy {
        default: config.query.default_deadline,
        max: config.query.max_deadline,
    };
    let options = ServeOptions::new(deadlines)
        .with_shutdown_grace(config.shutdown_grace)
        .with_connections(config.connections);
    let server = yrd_server::serve(routes, config.listen, server_tls, options).await?;
    let admin = match config.admin_listen {
        Some(at) => {
            // Ready when the config is loaded (it is) and a region answers.
            let regions = registry.clone();
            let ready = Arc::new(move || regions.regions().iter().any(|r| r.healthy()));
            Some(yrd_telemetry::start_admin(at, &config.telemetry, ready).await?)
        }
        None => None,
    };
    tracing::info!(addr = %server.addr, regions = registry.regions().len(), admin = ?admin.as_ref().map(|a| a.addr), "gateway serving");
    Ok(RunningGateway {
        addr: server.addr,
        registry,
        admin,
        audit,
        server,
    })
}

/// Opens the gateway's audit log (checkpoints signed with the gateway's
/// key), or none with a warning when the config has no `[audit]`.
async fn open_audit(config: &GatewayConfig, signer: Option<Signer>) -> Result<GatewayAudit, GatewayError> {
    let Some(audit) = config.audit.clone() else {
        tracing::warn!("no [audit] section: this gateway keeps no audit trail (each node keeps its own)");
        return Ok(GatewayAudit::disabled());
    };
    let source = match &signer {
        Some(s) => s.id().uri(),
        None => format!("spiffe://{}/gateway/{}", config.trust_domain, config.name),
    };
    let log = tokio::task::spawn_blocking(move || yrd_audit::AuditLog::open(&audit, &source, signer))
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
    tracing::info!(log = log.name(), "gateway audit log open");
    Ok(GatewayAudit::new(log))
}

fn random_secret() -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut s = vec![0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut s);
    s
}
