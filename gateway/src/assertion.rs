//! On-behalf-of assertions: how the gateway tells a node whom a call is
//! for. Each node call carries, in the [`HEADER`] metadata entry, an
//! encoded `yrd.mesh.v1.SignedAssertion`: the claims ([`OnBehalfOf`]: the
//! subject and its declared purpose, the region and method, the SHA-256 of
//! the encoded request message, the trace id, a random nonce and a short
//! validity) signed with the key of the gateway's own TLS certificate. The
//! node checks the signature against the certificate of the same
//! connection (see `yrd_node::obo`).
//!
//! Every node call gets one, built fresh per attempt by the client stack's
//! innermost layer ([`crate::client::NodeCall`]), so a retry has its own
//! nonce and times. A call made for the gateway itself (catalogs) names the
//! gateway as its subject. An insecure gateway has no key: it sends the
//! claims with an empty signature, which only an insecure node accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use tonic::metadata::BinaryMetadataValue;
use yrd_identity::Signer;
use yrd_proto::mesh::{OnBehalfOf, SignedAssertion};

use crate::client::Acting;
use crate::error::GatewayError;

/// The metadata entry carrying the encoded `SignedAssertion`.
pub const HEADER: &str = "yrd-on-behalf-of-bin";
/// How long an assertion is valid when the config does not say
/// (`on_behalf_of_ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Longest validity the config may set: nodes refuse assertions valid for
/// longer than their `on_behalf_of.max_ttl` (30 s by default).
pub const MAX_TTL: Duration = Duration::from_secs(30);
/// Bytes of randomness in a nonce.
pub const NONCE_LEN: usize = 16;

/// What the gateway signs assertions with, and for how long they are valid.
/// Shared by every region's client stack.
#[derive(Debug, Clone)]
pub struct Asserter {
    signer: Option<Signer>,
    ttl: Duration,
}

impl Default for Asserter {
    /// Unsigned assertions valid for [`DEFAULT_TTL`] (an insecure gateway).
    fn default() -> Self {
        Self::new(None, DEFAULT_TTL)
    }
}

impl Asserter {
    /// Signs with `signer` (none for an insecure gateway); each assertion
    /// is valid for `ttl`.
    pub fn new(signer: Option<Signer>, ttl: Duration) -> Self {
        Self { signer, ttl }
    }

    /// The key assertions are signed with, if any.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// A fresh assertion that the call of `path` with `message` to region
    /// `audience` is for `acting`, as the [`HEADER`] metadata value.
    pub fn assert<M: Message>(
        &self,
        acting: &Acting,
        audience: &str,
        path: &str,
        message: &M,
    ) -> Result<BinaryMetadataValue, GatewayError> {
        build(self.signer.as_ref(), acting, audience, path, message, self.ttl).map(|signed| encode(&signed))
    }
}

/// A signed assertion that the call of `path` with `message` to region
/// `audience` is for `acting`, valid from now for `ttl`, bound to the
/// current span's trace id. The subject is the acting identity, or the
/// signer's own when the call is the gateway's.
pub fn build<M: Message>(
    signer: Option<&Signer>,
    acting: &Acting,
    audience: &str,
    path: &str,
    message: &M,
    ttl: Duration,
) -> Result<SignedAssertion, GatewayError> {
    let subject = match (&acting.subject, signer) {
        (Some(s), _) => s.uri(),
        (None, Some(signer)) => signer.id().uri(),
        (None, None) => String::new(),
    };
    let mut c = claims(&subject, &acting.purpose, audience, path, message, ttl)?;
    c.trace_id = yrd_telemetry::current_trace_id();
    sign(signer, &c)
}

/// The claims of an assertion issued now, without a trace id: tests and
/// [`build`] fill in or alter what they need before [`sign`]ing.
pub fn claims<M: Message>(
    subject: &str,
    purpose: &str,
    audience: &str,
    path: &str,
    message: &M,
    ttl: Duration,
) -> Result<OnBehalfOf, GatewayError> {
    let mut nonce = vec![0u8; NONCE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| GatewayError::Assertion(format!("no random nonce: {e}")))?;
    let issued = now_ms();
    Ok(OnBehalfOf {
        subject: subject.to_owned(),
        purpose: purpose.to_owned(),
        audience: audience.to_owned(),
        method: path.to_owned(),
        request_sha256: request_sha256(message),
        trace_id: String::new(),
        nonce,
        issued_at_ms: issued,
        expires_at_ms: issued.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
    })
}

/// Signs `claims` with `signer`; without one the signature is empty.
pub fn sign(signer: Option<&Signer>, claims: &OnBehalfOf) -> Result<SignedAssertion, GatewayError> {
    let assertion = claims.encode_to_vec();
    let signature = match signer {
        Some(s) => s.sign(&assertion)?,
        None => Vec::new(),
    };
    Ok(SignedAssertion { assertion, signature })
}

/// The metadata value of a signed assertion.
pub fn encode(signed: &SignedAssertion) -> BinaryMetadataValue {
    BinaryMetadataValue::from_bytes(&signed.encode_to_vec())
}

/// SHA-256 of the prost encoding of `message`, as the node computes it
/// from the message it decoded (prost's encoding of a message is
/// deterministic, so both sides get the same bytes).
pub fn request_sha256<M: Message>(message: &M) -> Vec<u8> {
    Sha256::digest(message.encode_to_vec()).to_vec()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use yrd_proto::mesh::{FilterExpr, NodeQueryRequest};

    use super::*;

    #[test]
    fn the_hash_survives_a_round_trip_through_the_wire() {
        // The node hashes the message it decoded, encoded again.
        let msg = NodeQueryRequest {
            dataset: "enterprise".into(),
            fields: vec!["name".into(), "uscc".into()],
            filter: Some(FilterExpr::default()),
            limit: 20,
            ..Default::default()
        };
        let wire = msg.encode_to_vec();
        let decoded = NodeQueryRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(request_sha256(&decoded), request_sha256(&msg));
        let other = NodeQueryRequest {
            limit: 21,
            ..msg.clone()
        };
        assert_ne!(request_sha256(&other), request_sha256(&msg));
    }

    #[test]
    fn claims_are_fresh_and_unique() {
        let msg = NodeQueryRequest::default();
        let a = claims("spiffe://yrd.mesh/app/x", "p", "320000", "/m", &msg, DEFAULT_TTL).unwrap();
        let b = claims("spiffe://yrd.mesh/app/x", "p", "320000", "/m", &msg, DEFAULT_TTL).unwrap();
        assert_eq!(a.nonce.len(), NONCE_LEN);
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.expires_at_ms - a.issued_at_ms, 10_000);
        let unsigned = sign(None, &a).unwrap();
        assert!(unsigned.signature.is_empty());
        assert_eq!(OnBehalfOf::decode(unsigned.assertion.as_slice()).unwrap(), a);
    }
}
