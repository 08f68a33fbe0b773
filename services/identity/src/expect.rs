//! Client side: checking *which* mesh process answered, not only that its
//! certificate chains to the mesh CA and names the host dialled.
//!
//! A gateway dials a region's endpoints by address. A DNS name or an IP
//! address in the node's certificate says only that the certificate was
//! issued for that host; any node of any region (or the gateway itself)
//! could stand behind a misconfigured or redirected address. The verifier
//! here runs the usual WebPKI checks (chain to the mesh CA, validity, the
//! server name) and then requires the leaf's SPIFFE identity to be exactly
//! the expected role in the expected trust domain — for a region, a node of
//! that region. A refusal fails the handshake, so no call ever reaches the
//! wrong process, and its reason is kept for health reports.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::IdentityError;
use crate::id::Role;
use crate::pki::peer_id_from_der;
use crate::tls::{TlsMaterial, client_builder, crypto_provider, with_own_cert};

/// The identity a server must carry: a role (for a region's endpoint,
/// `Role::Node { region }`) in a trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPeer {
    /// The trust domain the server's identity must be in.
    pub trust_domain: String,
    /// The role (with its region) the server's identity must have.
    pub role: Role,
}

impl ExpectedPeer {
    /// A node of `region` in `trust_domain`.
    pub fn node(trust_domain: &str, region: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            role: Role::Node {
                region: region.to_owned(),
            },
        }
    }

    fn describe(&self) -> String {
        match self.role.region() {
            Some(region) => format!(
                "a {} of region {region} in trust domain {}",
                self.role.kind(),
                self.trust_domain
            ),
            None => format!("a {} in trust domain {}", self.role.kind(), self.trust_domain),
        }
    }
}

/// The last reason a server's certificate was refused by a
/// [`expecting_client_config`] config, cleared by the next accepted one.
/// Health checks read it to say *why* an endpoint cannot be used.
#[derive(Debug, Clone, Default)]
pub struct PeerRefusals {
    last: Arc<Mutex<Option<String>>>,
}

impl PeerRefusals {
    /// Why the last handshake refused the server, if it did.
    pub fn last(&self) -> Option<String> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Forgets the last refusal (before a new check).
    pub fn clear(&self) {
        self.set(None);
    }

    fn set(&self, reason: Option<String>) {
        if let Ok(mut l) = self.last.lock() {
            *l = reason;
        }
    }
}

/// A client configuration for mutual TLS (this process's certificate, the
/// mesh CA, ALPN `h2`) that accepts only a server whose certificate carries
/// the `expected` identity, on top of the usual chain, validity and
/// server-name checks. Refusals are recorded in the returned
/// [`PeerRefusals`].
pub fn expecting_client_config(
    m: &TlsMaterial,
    expected: ExpectedPeer,
) -> Result<(Arc<ClientConfig>, PeerRefusals), IdentityError> {
    let provider = crypto_provider();
    let inner = WebPkiServerVerifier::builder_with_provider(m.roots()?, provider.clone())
        .build()
        .map_err(|e| IdentityError::Certificate {
            source_name: "the CA certificate PEM".to_owned(),
            reason: format!("no server verifier can be built from it: {e}"),
        })?;
    let refusals = PeerRefusals::default();
    let verifier = Arc::new(ExpectingVerifier {
        inner,
        expected,
        refusals: refusals.clone(),
    });
    let builder = client_builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok((with_own_cert(m, builder)?, refusals))
}

/// Why a server's identity was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WrongPeer(String);

#[derive(Debug)]
struct ExpectingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: ExpectedPeer,
    refusals: PeerRefusals,
}

impl ExpectingVerifier {
    fn check_identity(&self, leaf: &CertificateDer<'_>) -> Result<(), String> {
        let id = peer_id_from_der(leaf).map_err(|e| format!("its certificate carries no usable mesh identity: {e}"))?;
        if id.trust_domain != self.expected.trust_domain || id.role != self.expected.role {
            return Err(format!("its certificate is {id}, not {}", self.expected.describe()));
        }
        Ok(())
    }
}

impl ServerCertVerifier for ExpectingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.refusals.set(Some(format!("its certificate was refused: {e}"))))?;
        match self.check_identity(end_entity) {
            Ok(()) => {
                self.refusals.set(None);
                Ok(verified)
            }
            Err(reason) => {
                self.refusals.set(Some(reason.clone()));
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                    Arc::new(WrongPeer(reason)),
                ))))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IssueRequest, PeerId, init_ca, issue};

    /// A TLS handshake over an in-memory pipe between a server with `server`
    /// and a client expecting `expected`.
    async fn handshake(dir: &std::path::Path, server: &PeerId, expected: ExpectedPeer) -> (bool, PeerRefusals) {
        let server_m = TlsMaterial::for_identity(dir, server).unwrap();
        let client_id = PeerId::gateway("yrd.mesh", "gw").unwrap();
        let client_m = TlsMaterial::for_identity(dir, &client_id).unwrap();
        let server_config = crate::server_config(&server_m).unwrap();
        let (client_config, refusals) = expecting_client_config(&client_m, expected).unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(server_config).accept(a).await });
        let name = ServerName::try_from("localhost").unwrap();
        let ok = tokio_rustls::TlsConnector::from(client_config)
            .connect(name, b)
            .await
            .is_ok();
        let _ = accept.await;
        (ok, refusals)
    }

    #[tokio::test]
    async fn only_a_node_of_the_expected_region_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "yrd.mesh").unwrap();
        let sh = PeerId::node("yrd.mesh", "310000", "n1").unwrap();
        let gw = PeerId::gateway("yrd.mesh", "gw").unwrap();
        for id in [&sh, &gw] {
            issue(dir.path(), &IssueRequest::local_server(id.clone())).unwrap();
        }
        let (ok, refusals) = handshake(dir.path(), &sh, ExpectedPeer::node("yrd.mesh", "310000")).await;
        assert!(ok, "the right node is accepted");
        assert_eq!(refusals.last(), None);

        let (ok, refusals) = handshake(dir.path(), &sh, ExpectedPeer::node("yrd.mesh", "330000")).await;
        assert!(!ok, "another region's node is refused");
        let reason = refusals.last().unwrap();
        assert!(
            reason.contains("spiffe://yrd.mesh/region/310000/node/n1") && reason.contains("region 330000"),
            "{reason}"
        );

        let (ok, refusals) = handshake(dir.path(), &gw, ExpectedPeer::node("yrd.mesh", "310000")).await;
        assert!(!ok, "the gateway's own certificate is refused");
        assert!(refusals.last().unwrap().contains("gateway"), "{:?}", refusals.last());

        let (ok, _) = handshake(dir.path(), &sh, ExpectedPeer::node("other.mesh", "310000")).await;
        assert!(!ok, "another trust domain is refused");
    }
}
