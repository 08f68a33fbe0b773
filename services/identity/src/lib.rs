//! yrd-identity: who is who in the mesh, and how they prove it.
//!
//! - [`PeerId`]: SPIFFE-style identities (`spiffe://<trust-domain>/gateway/<name>`, ...).
//! - [`init_ca`], [`issue`], [`Ca`]: the mesh PKI (rcgen, ECDSA P-256).
//! - [`TlsMaterial`], [`server_config`], [`client_config`], [`tonic_client_tls`]:
//!   mutual TLS with rustls and the ring provider only.
//! - [`tls_incoming`]: the TLS listener for tonic servers.
//! - [`serve`], [`TlsPaths`]: the one place a process accepts connections.
//! - [`Secret`]: a config value kept out of `Debug` output and logs.
//! - [`Authorizer`], [`peer_id`]: per-service allow rules, applied from the
//!   verified client certificate (never from a header).
//!
//! A server, end to end:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use yrd_identity::{Authorizer, PeerId, TlsMaterial, server_config, tls_incoming};
//!
//! let dir = std::path::Path::new("pki");
//! let me = PeerId::node("yrd.mesh", "320000", "nj-1")?;
//! let material = TlsMaterial::for_identity(dir, &me)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let incoming = tls_incoming(listener, server_config(&material)?);
//! let authz = Arc::new(Authorizer::gateways("yrd.mesh")?);
//! let check = authz.interceptor();
//! // Server::builder()
//! //     .add_service(DataNodeServer::with_interceptor(service, check))
//! //     .serve_with_incoming_shutdown(incoming, signal)
//! # let _ = (incoming, check);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod authz;
mod config_file;
mod error;
mod id;
mod incoming;
mod pki;
mod secret;
mod serve;
mod tls;

pub use authz::{AllowRule, Authorizer, peer_id};
pub use config_file::{ConfigError, parse_toml, read_config};
pub use error::IdentityError;
pub use id::{DEFAULT_TRUST_DOMAIN, PeerId, Role};
pub use incoming::{HANDSHAKE_TIMEOUT, IncomingOptions, MAX_HANDSHAKES_IN_FLIGHT, tls_incoming, tls_incoming_with};
pub use pki::{
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, Ca, CaFiles, CertFiles, DEFAULT_CERT_VALIDITY, IssueRequest,
    cert_not_after, ensure_ca, init_ca, issue, issue_in_memory, peer_id_from_der,
};
pub use secret::Secret;
pub use serve::{RequestSpan, ServerTask, Serving, TlsPaths, serve};
pub use tls::{TlsMaterial, client_config, crypto_provider, server_config, tonic_client_tls};
