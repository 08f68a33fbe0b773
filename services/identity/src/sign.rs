//! Signatures with the key of a process's own mesh certificate: the
//! gateway signs on-behalf-of assertions with it, and nodes and gateways
//! sign their audit checkpoints. A signature is checked against the
//! signer's certificate, so whoever verifies needs no key of its own.
//!
//! Mesh keys are ECDSA P-256 (see [`crate::Ca::issue`]); signatures are
//! ECDSA P-256 with SHA-256, ASN.1 DER encoded.

use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::IdentityError;
use crate::id::PeerId;
use crate::pki::{peer_id_from_der, pem_reason};
use crate::tls::TlsMaterial;

/// Signs with a process's certificate key. Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    key: Arc<EcdsaKeyPair>,
    rng: SystemRandom,
    cert_der: Arc<Vec<u8>>,
    id: PeerId,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id.uri())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a process's TLS material: the first certificate of the
    /// chain and its PKCS#8 private key.
    pub fn from_material(material: &TlsMaterial) -> Result<Self, IdentityError> {
        Self::from_pem(&material.cert_pem, &material.key_pem)
    }

    /// A signer from PEM: a certificate (chain, leaf first) and its key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let bad = |source_name: &str, reason: String| IdentityError::Pem {
            source_name: source_name.to_owned(),
            reason,
        };
        let cert = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or_else(|| bad("the certificate PEM", "no certificate found".into()))?
            .map_err(|e| bad("the certificate PEM", pem_reason(&e)))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("the private key PEM", pem_reason(&e)))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(bad("the private key PEM", "the key is not PKCS#8".into()));
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.secret_pkcs8_der(), &rng)
            .map_err(|e| bad("the private key PEM", format!("not an ECDSA P-256 key: {e}")))?;
        let id = peer_id_from_der(&cert)?;
        if public_key(&cert)? != key.public_key().as_ref() {
            return Err(bad(
                "the private key PEM",
                "the key does not belong to the certificate".into(),
            ));
        }
        Ok(Self {
            key: Arc::new(key),
            rng,
            cert_der: Arc::new(cert.to_vec()),
            id,
        })
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| IdentityError::Signature("signing failed".into()))
    }

    /// The signer's identity, from its certificate.
    pub fn id(&self) -> &PeerId {
        &self.id
    }

    /// The signer's certificate (DER), for verifiers.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// The public key of a signer's certificate, parsed once: for a verifier
/// that checks many signatures of the same certificate (a node checking
/// the assertions of a gateway connection). Cheap to clone. Nothing in
/// it is secret: its `Debug` shows the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    /// The subject public key (the uncompressed EC point).
    key: Arc<[u8]>,
}

impl VerifyingKey {
    /// The key of the certificate `cert_der` (DER); an error when the
    /// certificate does not parse.
    pub fn from_cert_der(cert_der: &[u8]) -> Result<Self, IdentityError> {
        Ok(Self {
            key: public_key(cert_der)?.into(),
        })
    }

    /// Checks that `signature` over `message` was made with this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.key)
            .verify(message, signature)
            .map_err(|_| IdentityError::Signature("the signature does not match the certificate's key".into()))
    }
}

/// Checks that `signature` over `message` was made by the key of the
/// certificate `cert_der`. Parses the certificate on every call: a
/// verifier of many signatures keeps a [`VerifyingKey`] instead.
pub fn verify(cert_der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
    VerifyingKey::from_cert_der(cert_der)?.verify(message, signature)
}

/// The subject public key of a certificate (the uncompressed EC point).
fn public_key(cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| IdentityError::Certificate {
        source_name: "the signer's certificate".into(),
        reason: format!("does not parse: {e}"),
    })?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, IssueRequest, issue_in_memory};

    fn signer(ca: &Ca, name: &str) -> Signer {
        let (cert, key) = issue_in_memory(ca, &IssueRequest::new(PeerId::gateway("yrd.mesh", name).unwrap())).unwrap();
        Signer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
    }

    #[test]
    fn a_signature_verifies_against_the_signers_certificate_only() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let a = signer(&ca, "a");
        let b = signer(&ca, "b");
        let sig = a.sign(b"hello").unwrap();
        verify(a.cert_der(), b"hello", &sig).unwrap();
        assert!(verify(a.cert_der(), b"hellp", &sig).is_err());
        assert!(verify(b.cert_der(), b"hello", &sig).is_err());
        assert_eq!(a.id().uri(), "spiffe://yrd.mesh/gateway/a");
    }

    #[test]
    fn a_verifying_key_checks_like_the_certificate_it_was_parsed_from() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let a = signer(&ca, "a");
        let b = signer(&ca, "b");
        let sig = a.sign(b"hello").unwrap();
        let key = VerifyingKey::from_cert_der(a.cert_der()).unwrap();
        key.verify(b"hello", &sig).unwrap();
        key.verify(b"hello", &sig).unwrap();
        let e = key.verify(b"hellp", &sig).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let other = VerifyingKey::from_cert_der(b.cert_der()).unwrap();
        assert!(other.verify(b"hello", &sig).is_err());
        assert_ne!(key, other);
        let e = VerifyingKey::from_cert_der(b"not a certificate").unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let (cert_a, _) = issue_in_memory(&ca, &IssueRequest::new(PeerId::gateway("yrd.mesh", "a").unwrap())).unwrap();
        let (_, key_b) = issue_in_memory(&ca, &IssueRequest::new(PeerId::gateway("yrd.mesh", "b").unwrap())).unwrap();
        let err = Signer::from_pem(cert_a.as_bytes(), key_b.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
