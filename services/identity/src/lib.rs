//! yrd-identity: who is who in the mesh, and how they prove it.
//!
//! - [`PeerId`]: SPIFFE-style identities (`spiffe://<trust-domain>/gateway/<name>`, ...).
//! - [`init_ca`], [`issue`], [`Ca`]: the mesh PKI (rcgen, ECDSA P-256).
//! - [`TlsMaterial`], [`server_config`], [`client_config`], [`tonic_client_tls`]:
//!   mutual TLS with rustls and the ring provider only.
//! - [`TlsPaths`]: where a process's identity files are, as configs name them.
//! - [`Secret`]: a config value kept out of `Debug` output and logs.
//! - [`Signer`], [`VerifyingKey`]: signatures with a mesh certificate's key.
//! - [`Authorizer`], [`peer_id`]: per-service allow rules, applied from the
//!   verified client certificate (never from a header).
//!
//! Serving (the TLS listener, graceful shutdown) and config-file loading
//! live in `yrd-server`, which builds on this crate.
//!
//! A server's TLS side:
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use yrd_identity::{Authorizer, PeerId, TlsMaterial, server_config};
//!
//! let dir = std::path::Path::new("pki");
//! let me = PeerId::node("yrd.mesh", "320000", "nj-1")?;
//! let material = TlsMaterial::for_identity(dir, &me)?;
//! let tls = server_config(&material)?;
//! let authz = Arc::new(Authorizer::gateways("yrd.mesh")?);
//! let check = authz.interceptor();
//! // yrd_server::serve(routes with DataNodeServer::with_interceptor(service, check), addr, Some(tls), ...)
//! # let _ = (tls, check);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod authz;
mod error;
mod expect;
mod id;
mod paths;
mod pki;
mod secret;
mod sign;
mod tls;

pub use authz::{AllowRule, Authorizer, peer_id};
pub use error::IdentityError;
pub use expect::{ExpectedPeer, PeerRefusals, expecting_client_config};
pub use id::{DEFAULT_TRUST_DOMAIN, PeerId, Role};
pub use paths::{DEFAULT_EXPIRY_WARNING, TlsPaths};
pub use pki::{
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, Ca, CaFiles, CertFiles, DEFAULT_CERT_VALIDITY, IssueRequest,
    cert_not_after, certs_not_after, ensure_ca, init_ca, issue, issue_in_memory, peer_id_from_der,
};
pub use secret::Secret;
pub use sign::{Signer, VerifyingKey, verify as verify_signature};
pub use tls::{TlsMaterial, client_config, crypto_provider, server_config, tonic_client_tls};
