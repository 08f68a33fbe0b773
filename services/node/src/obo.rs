//! Verified on-behalf-of: whom a data call is for, from the gateway's
//! signed assertion (`yrd.mesh.v1.SignedAssertion` in the
//! [`HEADER`] metadata entry).
//!
//! The TLS peer of a data call must be a gateway this node trusts; the
//! assertion must be signed by the key of *that connection's* certificate,
//! be meant for this region, this method and this very request message
//! (its SHA-256) and trace, be fresh, and carry a nonce not seen before.
//! Only then does the node act for the subject the gateway names, with the
//! purpose it declared. Each refusal has a stable reason ([`Refusal`]).
//!
//! The [`Verifier`] is installed by [`interceptor`] into every DataNode
//! request's extensions (so that the handlers need no state of their own
//! for it); handlers call [`principal`] with their method's path.
//! `GetCatalog` needs no assertion: it is metadata the gateway reads for
//! itself, and holds no rows.
//!
//! A gateway certificate is parsed once (its identity and public key), and
//! kept in a small cache by its full DER bytes ([`GATEWAY_CERT_CACHE`]
//! entries): gateways are few and their connections long-lived. The role
//! and trust checks still run on every call, so a changed trust list is
//! never bypassed by the cache.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};
use yrd_identity::{Authorizer, PeerId, Role, VerifyingKey};
use yrd_proto::mesh::{OnBehalfOf, SignedAssertion};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::principal::Principal;

/// The metadata entry carrying the encoded `SignedAssertion`.
pub const HEADER: &str = "yrd-on-behalf-of-bin";
/// Largest encoded assertion accepted, in bytes: a real one is a few
/// hundred bytes (a subject URI, a purpose of at most 200 characters, a
/// signature), so anything much larger is refused before it is decoded.
pub const MAX_ASSERTION_BYTES: usize = 4096;
/// Length of a nonce, in bytes.
pub const NONCE_LEN: usize = 16;
/// Most gateway certificates whose parsed identity and key are kept; when
/// full, one is dropped to make room (and parsed again when it comes back).
pub const GATEWAY_CERT_CACHE: usize = 64;

/// Why an assertion was refused: each is a stable `google.rpc.ErrorInfo`
/// reason, with its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The call carries no assertion.
    Missing,
    /// The assertion has no signature.
    Unsigned,
    /// The assertion does not decode, its signature does not verify against
    /// the connection's certificate, or a claim is malformed.
    Invalid,
    /// The assertion is not valid now: expired, or issued in the future.
    Expired,
    /// The assertion's nonce was seen before.
    Replayed,
    /// The assertion is for another request, method, region or trace.
    Mismatch,
    /// The TLS peer is a gateway the node's `on_behalf_of.trusted_gateways`
    /// does not name.
    GatewayNotTrusted,
    /// The TLS peer is not a gateway (an application calling the node directly).
    NotViaGateway,
    /// The replay cache is full (`on_behalf_of.replay_cache`).
    ReplayCacheFull,
}

impl Refusal {
    /// The ErrorInfo reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "ASSERTION_MISSING",
            Self::Unsigned => "ASSERTION_UNSIGNED",
            Self::Invalid => "ASSERTION_INVALID",
            Self::Expired => "ASSERTION_EXPIRED",
            Self::Replayed => "ASSERTION_REPLAYED",
            Self::Mismatch => "ASSERTION_MISMATCH",
            Self::GatewayNotTrusted => "GATEWAY_NOT_TRUSTED",
            Self::NotViaGateway => "NOT_VIA_GATEWAY",
            Self::ReplayCacheFull => "ASSERTION_REPLAY_CACHE_FULL",
        }
    }

    /// The gRPC code: `UNAUTHENTICATED` when no signed assertion came at
    /// all, `RESOURCE_EXHAUSTED` for the full cache, else `PERMISSION_DENIED`.
    pub fn code(self) -> Code {
        match self {
            Self::Missing | Self::Unsigned => Code::Unauthenticated,
            Self::ReplayCacheFull => Code::ResourceExhausted,
            _ => Code::PermissionDenied,
        }
    }

    fn because(self, detail: impl Into<String>) -> NodeError {
        NodeError::Assertion {
            refusal: self,
            detail: detail.into(),
        }
    }
}

/// Checks assertions for one node: its region, its trusted gateways, the
/// freshness rules and the replay cache. Shared by every call.
#[derive(Debug)]
pub struct Verifier {
    region: String,
    trust_domain: String,
    insecure: bool,
    trusted: Authorizer,
    max_ttl_ms: i64,
    skew_ms: i64,
    replay: Mutex<ReplayCache>,
    certs: Mutex<CertCache>,
}

/// Parsed gateway certificates, by their full DER bytes.
#[derive(Debug, Default)]
struct CertCache {
    parsed: HashMap<Vec<u8>, (PeerId, VerifyingKey)>,
}

impl CertCache {
    fn get(&self, der: &[u8]) -> Option<(PeerId, VerifyingKey)> {
        self.parsed.get(der).cloned()
    }

    fn insert(&mut self, der: &[u8], parsed: (PeerId, VerifyingKey)) {
        if self.parsed.len() >= GATEWAY_CERT_CACHE
            && !self.parsed.contains_key(der)
            && let Some(old) = self.parsed.keys().next().cloned()
        {
            self.parsed.remove(&old);
        }
        self.parsed.insert(der.to_vec(), parsed);
    }
}

impl Verifier {
    /// The verifier `config` describes (its `[on_behalf_of]` section, region,
    /// trust domain and `insecure` flag). The config is validated already.
    pub fn new(config: &NodeConfig) -> Result<Self, NodeError> {
        let c = &config.on_behalf_of;
        Ok(Self {
            region: config.region.clone(),
            trust_domain: config.trust_domain.clone(),
            insecure: config.insecure,
            trusted: Authorizer::from_rules(&config.trust_domain, &c.trusted_gateways)?,
            max_ttl_ms: millis(c.max_ttl),
            skew_ms: millis(c.clock_skew),
            replay: Mutex::new(ReplayCache::new(c.replay_cache)),
            certs: Mutex::new(CertCache::default()),
        })
    }

    /// Whom `req`, a call of the method at `path` (such as
    /// `/yrd.mesh.v1.DataNode/Query`), is for. See the module docs for
    /// what is checked; an insecure node (development only) checks no peer
    /// and no signature, and takes a call without an assertion as acting
    /// for nobody.
    pub fn verify<T: Message>(&self, req: &Request<T>, path: &str) -> Result<Principal, NodeError> {
        self.verify_at(req, path, now_ms())
    }

    fn verify_at<T: Message>(&self, req: &Request<T>, path: &str, now: i64) -> Result<Principal, NodeError> {
        let certs = req.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        self.verify_leaf(leaf, req, path, now)
    }

    /// [`Self::verify`] of `req`, whose TLS peer presented `leaf` (DER).
    fn verify_leaf<T: Message>(
        &self,
        leaf: Option<&[u8]>,
        req: &Request<T>,
        path: &str,
        now: i64,
    ) -> Result<Principal, NodeError> {
        let leaf = if self.insecure {
            None
        } else {
            Some(self.gateway_of(leaf)?)
        };
        let peer = leaf.as_ref().map(|(id, _)| id.clone());
        let Some(raw) = req.metadata().get_bin(HEADER) else {
            if self.insecure {
                return Ok(Principal::peer(None));
            }
            return Err(Refusal::Missing.because(format!("the call carries no {HEADER} metadata")));
        };
        let bytes = raw
            .to_bytes()
            .map_err(|_| Refusal::Invalid.because("the assertion is not valid base64"))?;
        if bytes.len() > MAX_ASSERTION_BYTES {
            return Err(Refusal::Invalid.because(format!(
                "the assertion is {} bytes, more than the limit of {MAX_ASSERTION_BYTES}",
                bytes.len()
            )));
        }
        let signed = SignedAssertion::decode(bytes.as_ref())
            .map_err(|_| Refusal::Invalid.because("the assertion does not decode"))?;
        if let Some((_, key)) = &leaf {
            if signed.signature.is_empty() {
                return Err(Refusal::Unsigned.because("the assertion carries no signature"));
            }
            key.verify(&signed.assertion, &signed.signature).map_err(|_| {
                Refusal::Invalid
                    .because("the signature does not verify against the gateway certificate of this connection")
            })?;
        }
        let claims = OnBehalfOf::decode(signed.assertion.as_slice())
            .map_err(|_| Refusal::Invalid.because("the signed claims do not decode"))?;
        self.check_binding(&claims, req.get_ref(), req.metadata(), path)?;
        self.check_time(&claims, now)?;
        let subject = self.subject(&claims)?;
        let nonce: [u8; NONCE_LEN] = claims.nonce.as_slice().try_into().map_err(|_| {
            Refusal::Invalid.because(format!("the nonce is {} bytes, not {NONCE_LEN}", claims.nonce.len()))
        })?;
        // Last, so that only assertions that passed every other check take
        // room in the cache.
        self.remember(nonce, claims.expires_at_ms.saturating_add(self.skew_ms), now)?;
        Ok(Principal {
            peer,
            subject,
            purpose: Some(claims.purpose).filter(|p| !p.is_empty()),
            trace_id: Some(claims.trace_id).filter(|t| !t.is_empty()),
        })
    }

    /// The TLS peer, whose leaf certificate is `leaf`: a gateway this node
    /// trusts, with its certificate's key. The certificate is parsed once
    /// (see [`GATEWAY_CERT_CACHE`]); the role and trust checks run on every
    /// call.
    fn gateway_of(&self, leaf: Option<&[u8]>) -> Result<(PeerId, VerifyingKey), NodeError> {
        let leaf = leaf.ok_or_else(|| Refusal::NotViaGateway.because("the connection presented no certificate"))?;
        let (id, key) = self.parsed(leaf)?;
        if id.role != Role::Gateway {
            return Err(Refusal::NotViaGateway.because(format!(
                "{} is a {}: data calls come through a gateway",
                id.uri(),
                id.kind()
            )));
        }
        if !self.trusted.allows(&id) {
            return Err(
                Refusal::GatewayNotTrusted.because(format!("{} is not among on_behalf_of.trusted_gateways", id.uri()))
            );
        }
        Ok((id, key))
    }

    /// The identity and key of the certificate `der`, from the cache or
    /// parsed (outside the lock) and kept.
    fn parsed(&self, der: &[u8]) -> Result<(PeerId, VerifyingKey), NodeError> {
        let poisoned = || NodeError::Task("the gateway certificate cache lock is poisoned".into());
        if let Some(hit) = self.certs.lock().map_err(|_| poisoned())?.get(der) {
            return Ok(hit);
        }
        let id = yrd_identity::peer_id_from_der(der)
            .map_err(|_| Refusal::NotViaGateway.because("the connection's certificate names no mesh identity"))?;
        let key = VerifyingKey::from_cert_der(der).map_err(|_| {
            Refusal::Invalid.because("the gateway certificate of this connection holds no usable public key")
        })?;
        // Only gateways' certificates are kept: a peer refused for its role
        // takes no room from them.
        if id.role == Role::Gateway {
            self.certs
                .lock()
                .map_err(|_| poisoned())?
                .insert(der, (id.clone(), key.clone()));
        }
        Ok((id, key))
    }

    /// The assertion is for this region, method, request message and trace.
    fn check_binding<T: Message>(
        &self,
        claims: &OnBehalfOf,
        message: &T,
        metadata: &MetadataMap,
        path: &str,
    ) -> Result<(), NodeError> {
        if claims.audience != self.region {
            return Err(Refusal::Mismatch.because(format!(
                "the assertion is for region {:?}, this is {}",
                claims.audience, self.region
            )));
        }
        if claims.method != path {
            return Err(Refusal::Mismatch.because(format!(
                "the assertion is for method {:?}, this call is {path}",
                claims.method
            )));
        }
        // The message was decoded from the wire and is encoded again here:
        // prost writes a given message the same way every time (fields in
        // tag order, no unknown fields kept), so this matches the gateway's
        // hash of the message it encoded, as long as both know the same
        // fields. A field only the gateway knows changes the hash, and the
        // call is refused rather than checked against less than was signed.
        let hash = Sha256::digest(message.encode_to_vec());
        if claims.request_sha256.as_slice() != hash.as_slice() {
            return Err(Refusal::Mismatch.because("the assertion is for another request message"));
        }
        if claims.trace_id != traceparent_trace_id(metadata) {
            return Err(Refusal::Mismatch.because("the assertion is for another trace"));
        }
        Ok(())
    }

    /// The assertion is valid now, and not for longer than allowed.
    fn check_time(&self, claims: &OnBehalfOf, now: i64) -> Result<(), NodeError> {
        let (issued, expires) = (claims.issued_at_ms, claims.expires_at_ms);
        if expires <= issued {
            return Err(Refusal::Invalid.because("the assertion expires before it is issued"));
        }
        if expires.saturating_sub(issued) > self.max_ttl_ms {
            return Err(Refusal::Invalid.because(format!(
                "the assertion is valid for {} ms, longer than on_behalf_of.max_ttl = {} ms",
                expires.saturating_sub(issued),
                self.max_ttl_ms
            )));
        }
        if issued > now.saturating_add(self.skew_ms) {
            return Err(Refusal::Expired.because(format!(
                "the assertion is issued {} ms in the future (on_behalf_of.clock_skew = {} ms)",
                issued - now,
                self.skew_ms
            )));
        }
        if now > expires.saturating_add(self.skew_ms) {
            return Err(Refusal::Expired.because(format!(
                "the assertion expired {} ms ago (on_behalf_of.clock_skew = {} ms)",
                now - expires,
                self.skew_ms
            )));
        }
        Ok(())
    }

    /// The identity acted for: required (and of this trust domain) unless
    /// the node is insecure.
    fn subject(&self, claims: &OnBehalfOf) -> Result<Option<PeerId>, NodeError> {
        if claims.subject.is_empty() {
            if self.insecure {
                return Ok(None);
            }
            return Err(Refusal::Invalid.because("the assertion names no subject"));
        }
        let id = PeerId::parse(&claims.subject)
            .map_err(|_| Refusal::Invalid.because("the subject is not a mesh identity"))?;
        if id.trust_domain != self.trust_domain {
            return Err(Refusal::Invalid.because(format!(
                "the subject is of trust domain {:?}, not {}",
                id.trust_domain, self.trust_domain
            )));
        }
        Ok(Some(id))
    }

    fn remember(&self, nonce: [u8; NONCE_LEN], keep_until: i64, now: i64) -> Result<(), NodeError> {
        let mut cache = self
            .replay
            .lock()
            .map_err(|_| NodeError::Task("the replay cache lock is poisoned".into()))?;
        cache.admit(nonce, keep_until, now)
    }
}

/// The nonces of assertions still valid: a nonce is kept until its
/// assertion expires (plus the tolerated skew), and no longer, so the
/// cache holds at most what the configured rate of calls needs. Bounded:
/// when full, new assertions are refused; an old nonce is never forgotten
/// early, as that would let its assertion be replayed.
#[derive(Debug)]
struct ReplayCache {
    max: usize,
    seen: HashMap<[u8; NONCE_LEN], i64>,
    by_expiry: BTreeSet<(i64, [u8; NONCE_LEN])>,
}

impl ReplayCache {
    fn new(max: usize) -> Self {
        Self {
            max,
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    fn admit(&mut self, nonce: [u8; NONCE_LEN], keep_until: i64, now: i64) -> Result<(), NodeError> {
        while let Some(&(until, old)) = self.by_expiry.first() {
            if until >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&old);
        }
        if self.seen.contains_key(&nonce) {
            return Err(Refusal::Replayed.because("the assertion's nonce was seen before"));
        }
        if self.seen.len() >= self.max {
            return Err(Refusal::ReplayCacheFull.because(format!(
                "{} unexpired nonces are kept, the limit on_behalf_of.replay_cache = {}",
                self.seen.len(),
                self.max
            )));
        }
        self.seen.insert(nonce, keep_until);
        self.by_expiry.insert((keep_until, nonce));
        Ok(())
    }
}

/// Whom `req`, a call of `path`, is for, checked by the [`Verifier`] the
/// [`interceptor`] installed. Without one the call is refused (an internal
/// error: the service was served outside [`crate::server::routes`]).
pub fn principal<T: Message>(req: &Request<T>, path: &str) -> Result<Principal, Status> {
    let verifier = req
        .extensions()
        .get::<Arc<Verifier>>()
        .ok_or_else(|| NodeError::Task("no on-behalf-of verifier is installed".into()))?;
    verifier.verify(req, path).map_err(|err| {
        tracing::warn!(error = %err, method = path, "refused an on-behalf-of assertion");
        Status::from(err)
    })
}

/// The DataNode interceptor: the allow rules (when there are certificates
/// to check) and the [`Verifier`], put into the request's extensions for
/// [`principal`].
pub fn interceptor(
    authorizer: Option<Arc<Authorizer>>,
    verifier: Arc<Verifier>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |mut req: Request<()>| {
        if let Some(a) = &authorizer {
            let id = a.authorize(&req)?;
            req.extensions_mut().insert(id);
        }
        req.extensions_mut().insert(verifier.clone());
        Ok(req)
    }
}

/// The trace id of the W3C `traceparent` entry (`00-<trace id>-<span id>-<flags>`),
/// empty when there is none.
fn traceparent_trace_id(metadata: &MetadataMap) -> &str {
    metadata
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .unwrap_or("")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_identity::{Ca, IssueRequest, Signer, issue_in_memory};
    use yrd_proto::mesh::NodeQueryRequest;

    const TD: &str = "yrd.mesh";
    const REGION: &str = "320000";
    const QUERY: &str = "/yrd.mesh.v1.DataNode/Query";

    fn verifier(trusted: &str) -> Verifier {
        let text = format!(
            "region = \"{REGION}\"\n[on_behalf_of]\ntrusted_gateways = [\"{trusted}\"]\nreplay_cache = 1000000\n"
        );
        Verifier::new(&NodeConfig::parse(&text, "t.toml").unwrap()).unwrap()
    }

    fn gateway(ca: &Ca, name: &str) -> Signer {
        let (cert, key) = issue_in_memory(ca, &IssueRequest::new(PeerId::gateway(TD, name).unwrap())).unwrap();
        Signer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
    }

    /// A query call carrying an assertion signed by `signer`, with the nonce `n`.
    fn call(signer: &Signer, n: u64, now: i64) -> Request<NodeQueryRequest> {
        let message = NodeQueryRequest {
            dataset: "enterprise".into(),
            ..Default::default()
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        let claims = OnBehalfOf {
            subject: format!("spiffe://{TD}/app/a"),
            purpose: "test".into(),
            audience: REGION.into(),
            method: QUERY.into(),
            request_sha256: Sha256::digest(message.encode_to_vec()).to_vec(),
            trace_id: String::new(),
            nonce: nonce.to_vec(),
            issued_at_ms: now,
            expires_at_ms: now + 10_000,
        }
        .encode_to_vec();
        let signed = SignedAssertion {
            signature: signer.sign(&claims).unwrap(),
            assertion: claims,
        };
        let mut req = Request::new(message);
        req.metadata_mut().insert_bin(
            HEADER,
            tonic::metadata::MetadataValue::from_bytes(&signed.encode_to_vec()),
        );
        req
    }

    fn refusal(e: NodeError) -> Refusal {
        match e {
            NodeError::Assertion { refusal, .. } => refusal,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn a_cached_certificate_is_still_checked_for_trust_and_signature() {
        let ca = Ca::generate(TD).unwrap();
        let (gw, other) = (gateway(&ca, "gw"), gateway(&ca, "other"));
        let mut v = verifier("gateway/gw");
        let now = now_ms();
        let p = v
            .verify_leaf(Some(gw.cert_der()), &call(&gw, 1, now), QUERY, now)
            .unwrap();
        assert_eq!(p.peer.unwrap().uri(), format!("spiffe://{TD}/gateway/gw"));
        assert_eq!(v.certs.lock().unwrap().parsed.len(), 1, "parsed once, kept");
        // The same connection, a signature by another key: refused.
        let e = v
            .verify_leaf(Some(gw.cert_der()), &call(&other, 2, now), QUERY, now)
            .unwrap_err();
        assert_eq!(refusal(e), Refusal::Invalid);
        // An untrusted gateway is refused every time, though its
        // certificate is kept once parsed.
        for n in 3..5 {
            let e = v
                .verify_leaf(Some(other.cert_der()), &call(&other, n, now), QUERY, now)
                .unwrap_err();
            assert_eq!(refusal(e), Refusal::GatewayNotTrusted);
        }
        assert_eq!(v.certs.lock().unwrap().parsed.len(), 2);
        // The trust list changes (as a new config would have it): the
        // cached gateway is refused from the next call on.
        v.trusted = Authorizer::from_rules(TD, &["gateway/other".to_owned()]).unwrap();
        let e = v
            .verify_leaf(Some(gw.cert_der()), &call(&gw, 5, now), QUERY, now)
            .unwrap_err();
        assert_eq!(refusal(e), Refusal::GatewayNotTrusted);
        v.verify_leaf(Some(other.cert_der()), &call(&other, 6, now), QUERY, now)
            .unwrap();
    }

    #[test]
    fn the_certificate_cache_is_bounded() {
        let ca = Ca::generate(TD).unwrap();
        let der = gateway(&ca, "gw").cert_der().to_vec();
        let entry = (
            PeerId::gateway(TD, "gw").unwrap(),
            VerifyingKey::from_cert_der(&der).unwrap(),
        );
        let mut c = CertCache::default();
        for n in 0..GATEWAY_CERT_CACHE + 10 {
            let mut key = der.clone();
            key.extend_from_slice(&n.to_le_bytes());
            c.insert(&key, entry.clone());
        }
        assert_eq!(c.parsed.len(), GATEWAY_CERT_CACHE);
        c.insert(&der, entry.clone());
        assert!(c.get(&der).is_some());
        assert_eq!(c.parsed.len(), GATEWAY_CERT_CACHE);
        // Compared by the full bytes: a prefix is another certificate.
        assert!(c.get(&der[..der.len() - 1]).is_none());
    }

    /// µs per `verify` of a real signed assertion, with the certificate
    /// cache and without it (every call parsing the certificate twice, as
    /// before the cache). `cargo nextest run -p yrd-node --run-ignored only
    /// -E 'test(verify_cost)' --no-capture` (or in release with `--release`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn verify_cost() {
        const N: u64 = 2000;
        let ca = Ca::generate(TD).unwrap();
        let gw = gateway(&ca, "gw");
        let v = verifier("gateway/gw");
        let now = now_ms();
        let calls: Vec<_> = (0..2 * N).map(|n| call(&gw, n, now)).collect();
        let (cold, warm) = calls.split_at(N as usize);
        let started = std::time::Instant::now();
        for req in cold {
            v.certs.lock().unwrap().parsed.clear();
            v.verify_leaf(Some(gw.cert_der()), req, QUERY, now).unwrap();
        }
        let uncached = started.elapsed().as_secs_f64() * 1e6 / N as f64;
        let started = std::time::Instant::now();
        for req in warm {
            v.verify_leaf(Some(gw.cert_der()), req, QUERY, now).unwrap();
        }
        let cached = started.elapsed().as_secs_f64() * 1e6 / N as f64;
        println!("verify: {uncached:.1} µs per call parsing the certificate, {cached:.1} µs cached");
    }

    #[test]
    fn the_replay_cache_forgets_only_expired_nonces_and_refuses_when_full() {
        let mut c = ReplayCache::new(2);
        c.admit([1; 16], 100, 0).unwrap();
        let e = c.admit([1; 16], 100, 50).unwrap_err();
        assert!(
            matches!(
                e,
                NodeError::Assertion {
                    refusal: Refusal::Replayed,
                    ..
                }
            ),
            "{e}"
        );
        c.admit([2; 16], 200, 50).unwrap();
        let e = c.admit([3; 16], 300, 60).unwrap_err();
        assert!(
            matches!(
                e,
                NodeError::Assertion {
                    refusal: Refusal::ReplayCacheFull,
                    ..
                }
            ) && e.to_string().contains("on_behalf_of.replay_cache = 2"),
            "{e}"
        );
        // Once the first assertion has expired its nonce is dropped, and
        // the room it took is free again.
        c.admit([3; 16], 300, 101).unwrap();
        assert_eq!(c.seen.len(), 2);
        assert!(!c.seen.contains_key(&[1; 16]));
    }

    #[test]
    fn the_trace_id_is_read_from_traceparent() {
        let mut m = MetadataMap::new();
        assert_eq!(traceparent_trace_id(&m), "");
        m.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(traceparent_trace_id(&m), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
