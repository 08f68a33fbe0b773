//! TLS material (the mesh CA, a certificate and its key) and the rustls and
//! tonic configurations built from it. Every config uses the ring provider
//! explicitly ([`crypto_provider`]), so no process-wide default has to be
//! installed and no two providers can be mixed.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, ServerConfig, WantsVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::IdentityError;
use crate::id::PeerId;
use crate::pki::{CA_CERT_FILE, CertFiles, peer_id_from_der, pem_reason};

/// The ALPN protocol gRPC speaks: HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The workspace's one crypto provider: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a process needs for mutual TLS, PEM-encoded: the mesh CA
/// certificate(s) it trusts, its own certificate (chain), and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA certificate(s) to trust.
    pub ca_pem: Vec<u8>,
    /// This process's certificate, leaf first.
    pub cert_pem: Vec<u8>,
    /// This process's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &String::from_utf8_lossy(&self.ca_pem))
            .field("cert_pem", &String::from_utf8_lossy(&self.cert_pem))
            .field("key_pem", &"[secret key elided]")
            .finish()
    }
}

impl TlsMaterial {
    /// Reads and checks the three files: each must hold what its role needs,
    /// and the key must belong to the certificate. Errors name the file, so
    /// a bad path in a config file is found at start, not at the first
    /// handshake.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, IdentityError> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| IdentityError::io(path, e));
        let material = TlsMaterial {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        let name = |p: &Path| p.display().to_string();
        parse_certs(&material.ca_pem, &name(ca))?;
        let certs = parse_certs(&material.cert_pem, &name(cert))?;
        let key_der = parse_key(&material.key_pem, &name(key))?;
        rustls::sign::CertifiedKey::from_der(certs, key_der, &crypto_provider()).map_err(|e| IdentityError::Pem {
            source_name: name(key),
            reason: format!("not the private key of {}: {e}", name(cert)),
        })?;
        Ok(material)
    }

    /// Loads the material of `id` from a PKI directory laid out by
    /// [`crate::issue`]: `ca.pem`, `<stem>.pem`, `<stem>.key`.
    pub fn for_identity(dir: &Path, id: &PeerId) -> Result<Self, IdentityError> {
        let files = CertFiles::for_id(dir, id);
        Self::load(&dir.join(CA_CERT_FILE), &files.cert, &files.key)
    }

    /// The mesh identity this material's own certificate carries.
    pub fn peer_id(&self) -> Result<PeerId, IdentityError> {
        let certs = parse_certs(&self.cert_pem, "the certificate PEM")?;
        let leaf = certs.first().ok_or_else(|| no_certificate("the certificate PEM"))?;
        peer_id_from_der(leaf)
    }

    pub(crate) fn roots(&self) -> Result<Arc<RootCertStore>, IdentityError> {
        let source_name = "the CA certificate PEM";
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(&self.ca_pem, source_name)? {
            roots.add(cert).map_err(|e| IdentityError::Certificate {
                source_name: source_name.to_owned(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
        }
        Ok(Arc::new(roots))
    }

    pub(crate) fn own_cert(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IdentityError> {
        Ok((
            parse_certs(&self.cert_pem, "the certificate PEM")?,
            parse_key(&self.key_pem, "the private key PEM")?,
        ))
    }
}

/// A server configuration for mutual TLS: clients must present a
/// certificate that chains to the mesh CA and is within its validity (an
/// expired, foreign or missing certificate fails the handshake); ALPN `h2`.
/// Which identities may call is decided later, per service, by
/// [`crate::Authorizer`].
pub fn server_config(m: &TlsMaterial) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots()?, provider.clone()).build()?;
    let (certs, key) = m.own_cert()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| IdentityError::Tls {
            what: "server TLS protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| IdentityError::Tls {
            what: "server certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for mutual TLS: trusts only the mesh CA, presents
/// this process's certificate, ALPN `h2`. For callers that build their own
/// connector; tonic channels use [`tonic_client_tls`].
pub fn client_config(m: &TlsMaterial) -> Result<Arc<ClientConfig>, IdentityError> {
    let builder = client_builder(crypto_provider())?.with_root_certificates(m.roots()?);
    with_own_cert(m, builder)
}

/// The first step of every client configuration: `provider` and the safe
/// default protocol versions.
pub(crate) fn client_builder(
    provider: Arc<CryptoProvider>,
) -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, IdentityError> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| IdentityError::Tls {
            what: "client TLS protocol versions",
            source,
        })
}

/// The last step of every client configuration: this process's
/// certificate and ALPN `h2`.
pub(crate) fn with_own_cert(
    m: &TlsMaterial,
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let (certs, key) = m.own_cert()?;
    let mut config = builder
        .with_client_auth_cert(certs, key)
        .map_err(|source| IdentityError::Tls {
            what: "client certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// tonic's client TLS settings for dialing a mesh server: trust the mesh CA,
/// present this process's certificate, and verify the server's certificate
/// against `domain` (a DNS name or IP address in its SANs, such as
/// `localhost`). tonic builds its rustls config with the ring provider, as
/// this crate does. Parsing is deferred to tonic's `connect`; call
/// [`TlsMaterial::load`] first to catch bad files early.
pub fn tonic_client_tls(m: &TlsMaterial, domain: &str) -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&m.ca_pem))
        .identity(tonic::transport::Identity::from_pem(&m.cert_pem, &m.key_pem))
        .domain_name(domain)
}

/// Every certificate in `pem`; at least one is required.
fn parse_certs(pem: &[u8], source_name: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            source_name: source_name.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(no_certificate(source_name));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], source_name: &str) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| IdentityError::Pem {
        source_name: source_name.to_owned(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key found".to_owned(),
            other => pem_reason(&other),
        },
    })
}

fn no_certificate(source_name: &str) -> IdentityError {
    IdentityError::Pem {
        source_name: source_name.to_owned(),
        reason: "no certificate found".to_owned(),
    }
}

impl TlsMaterial {
    /// Every certificate this material holds with when it expires: its own
    /// (named by its identity URI) first, then each CA certificate (named
    /// `CA <subject>`).
    pub fn expiries(&self) -> Result<Vec<(String, std::time::SystemTime)>, IdentityError> {
        let mut out = vec![(self.peer_id()?.uri(), crate::cert_not_after(&self.cert_pem)?)];
        for (subject, at) in crate::certs_not_after(&self.ca_pem, "the CA certificate PEM")? {
            out.push((format!("CA {subject}"), at));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{IssueRequest, init_ca, issue};

    fn setup() -> (tempfile::TempDir, PeerId) {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "yrd.mesh").unwrap();
        let id = PeerId::gateway("yrd.mesh", "gw-1").unwrap();
        issue(dir.path(), &IssueRequest::local_server(id.clone())).unwrap();
        (dir, id)
    }

    #[test]
    fn configs_build_from_loaded_material() {
        let (dir, id) = setup();
        let m = TlsMaterial::for_identity(dir.path(), &id).unwrap();
        assert_eq!(m.peer_id().unwrap(), id);
        let server = server_config(&m).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        let client = client_config(&m).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        let _tonic = tonic_client_tls(&m, "localhost");
        assert!(
            !format!("{m:?}").contains("PRIVATE KEY"),
            "Debug must not print the key"
        );
    }

    #[test]
    fn load_names_the_bad_file() {
        let (dir, id) = setup();
        let files = CertFiles::for_id(dir.path(), &id);
        let ca = dir.path().join(CA_CERT_FILE);

        let missing = dir.path().join("nope.pem");
        let err = TlsMaterial::load(&ca, &missing, &files.key).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");

        // A key file given as the certificate: no certificate in it.
        let err = TlsMaterial::load(&ca, &files.key, &files.key).unwrap_err().to_string();
        assert!(
            err.contains(&files.key.display().to_string()) && err.contains("no certificate"),
            "{err}"
        );

        // A certificate given as the key.
        let err = TlsMaterial::load(&ca, &files.cert, &files.cert)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&files.cert.display().to_string()) && err.contains("no private key"),
            "{err}"
        );

        // Another identity's key.
        let other = PeerId::app("yrd.mesh", "other").unwrap();
        let other_files = issue(dir.path(), &IssueRequest::new(other)).unwrap();
        let err = TlsMaterial::load(&ca, &files.cert, &other_files.key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("app-other.key") && err.contains("not the private key"),
            "{err}"
        );
    }
}
