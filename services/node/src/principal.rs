//! Who a request is for. The TLS peer of a data call is a gateway; the
//! application it acts for, and the purpose it declared, come from the
//! gateway's signed on-behalf-of assertion, verified by the node.

use yrd_identity::PeerId;

/// The verified parties of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    /// The verified TLS peer that sent the call (a gateway); `None` in
    /// insecure mode.
    pub peer: Option<PeerId>,
    /// The identity the call acts for (an application, operator or
    /// auditor), from a verified assertion.
    pub subject: Option<PeerId>,
    /// The purpose the application declared.
    pub purpose: Option<String>,
    /// The trace id the assertion is bound to.
    pub trace_id: Option<String>,
}

impl Principal {
    /// A principal with only a verified peer (no assertion).
    pub fn peer(peer: Option<PeerId>) -> Self {
        Self {
            peer,
            ..Self::default()
        }
    }
}
