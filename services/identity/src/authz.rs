//! Who may call a service, decided from the verified client certificate.
//!
//! A service accepts the callers that match any of its [`AllowRule`]s
//! (see there for the syntax) and belong to its trust domain.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use tonic::{Request, Status};

use crate::error::IdentityError;
use crate::id::{PeerId, Role, check_segment, check_trust_domain};
use crate::pki::peer_id_from_der;

/// The identity of the verified client certificate of `req`: `None` on a
/// plaintext connection, without a client certificate, or when the
/// certificate names no valid mesh identity. Use [`Authorizer::authorize`]
/// to tell those cases apart and to enforce a policy.
pub fn peer_id<T>(req: &Request<T>) -> Option<PeerId> {
    let certs = req.peer_certs()?;
    peer_id_from_der(certs.first()?).ok()
}

/// One allow rule from configuration: which callers a service accepts.
///
/// | rule                    | allows                                   |
/// | ----------------------- | ---------------------------------------- |
/// | `gateway`               | every gateway                            |
/// | `gateway/<name>`        | the gateway `<name>`                     |
/// | `app`                   | every application                        |
/// | `app/<name>`            | the application `<name>`                 |
/// | `node`                  | every region node                        |
/// | `node/<region>`         | every node of region `<region>`          |
/// | `node/<region>/<name>`  | the node `<name>` of region `<region>`   |
/// | `operator`, `auditor`   | every operator (auditor) of every region |
/// | `operator/<region>`     | every operator of region `<region>`      |
/// | `operator/<region>/<name>` | one operator (likewise `auditor/…`)   |
///
/// Names and regions follow the identity rules (`[A-Za-z0-9._-]`, 1–64
/// characters); surrounding whitespace is ignored; anything else is an error
/// that names the rule. A node's default is `["gateway"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowRule {
    kind: RuleKind,
    /// Only for nodes: the region the rule is limited to.
    region: Option<String>,
    /// The one name the rule allows; `None` for every name.
    name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RuleKind {
    Node,
    Gateway,
    App,
    Operator,
    Auditor,
}

impl RuleKind {
    /// Whether identities of this kind belong to a region.
    fn regional(self) -> bool {
        matches!(self, Self::Node | Self::Operator | Self::Auditor)
    }
}

impl AllowRule {
    /// Parses one rule, such as `gateway`, `app/dashboard` or `node/320000`.
    pub fn parse(rule: &str) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::InvalidRule {
            rule: rule.to_owned(),
            reason,
        };
        let parts: Vec<&str> = rule.trim().split('/').collect();
        let (kind, rest) = match parts.split_first() {
            Some((&"gateway", rest)) => (RuleKind::Gateway, rest),
            Some((&"app", rest)) => (RuleKind::App, rest),
            Some((&"node", rest)) => (RuleKind::Node, rest),
            Some((&"operator", rest)) => (RuleKind::Operator, rest),
            Some((&"auditor", rest)) => (RuleKind::Auditor, rest),
            _ => return Err(bad("it must start with gateway, app, node, operator or auditor".into())),
        };
        let check = |what: &str, s: &str| check_segment(what, s).map(|()| s.to_owned()).map_err(bad);
        let (region, name) = match (kind, rest) {
            (_, []) => (None, None),
            (k, [region]) if k.regional() => (Some(check("region", region)?), None),
            (k, [region, name]) if k.regional() => (Some(check("region", region)?), Some(check("name", name)?)),
            (RuleKind::Gateway | RuleKind::App, [name]) => (None, Some(check("name", name)?)),
            (k, _) if k.regional() => {
                return Err(bad(
                    "node, operator and auditor rules are <kind>, <kind>/<region> or <kind>/<region>/<name>".into(),
                ));
            }
            _ => {
                return Err(bad("gateway and app rules are <kind> or <kind>/<name>".into()));
            }
        };
        Ok(AllowRule { kind, region, name })
    }

    /// Whether `id` matches this rule (the trust domain is not considered here).
    pub fn matches(&self, id: &PeerId) -> bool {
        let kind_and_region = match (&self.kind, &id.role) {
            (RuleKind::Gateway, Role::Gateway) | (RuleKind::App, Role::App) => true,
            (RuleKind::Node, Role::Node { region })
            | (RuleKind::Operator, Role::Operator { region })
            | (RuleKind::Auditor, Role::Auditor { region }) => self.region.as_ref().is_none_or(|r| r == region),
            _ => false,
        };
        kind_and_region && self.name.as_ref().is_none_or(|n| *n == id.name)
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            RuleKind::Node => "node",
            RuleKind::Gateway => "gateway",
            RuleKind::App => "app",
            RuleKind::Operator => "operator",
            RuleKind::Auditor => "auditor",
        })?;
        for part in [&self.region, &self.name].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

impl FromStr for AllowRule {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A service's policy: the trust domain it belongs to and the identities it
/// accepts. Use it as a tonic interceptor ([`Authorizer::interceptor`]) so
/// that handlers only ever see allowed callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    trust_domain: String,
    allowed: Vec<AllowRule>,
}

impl Authorizer {
    /// A policy for `trust_domain` allowing callers that match any of
    /// `allowed`. An empty list is refused: it would lock everyone out,
    /// which is a configuration mistake rather than a policy.
    pub fn new(trust_domain: &str, allowed: Vec<AllowRule>) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain).map_err(|reason| IdentityError::InvalidTrustDomain {
            value: trust_domain.to_owned(),
            reason,
        })?;
        if allowed.is_empty() {
            return Err(IdentityError::InvalidRule {
                rule: String::new(),
                reason: "the allow list is empty, so no caller could ever be accepted".into(),
            });
        }
        Ok(Authorizer {
            trust_domain: trust_domain.to_owned(),
            allowed,
        })
    }

    /// Parses rules from configuration strings (see the module docs).
    pub fn from_rules<I, S>(trust_domain: &str, rules: I) -> Result<Self, IdentityError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = rules
            .into_iter()
            .map(|r| AllowRule::parse(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(trust_domain, allowed)
    }

    /// The node default: every gateway of the trust domain, nobody else.
    pub fn gateways(trust_domain: &str) -> Result<Self, IdentityError> {
        Self::from_rules(trust_domain, ["gateway"])
    }

    /// Every identity of the trust domain, whatever its role: the rule of
    /// what any member of the mesh may use, such as health and reflection.
    pub fn members(trust_domain: &str) -> Result<Self, IdentityError> {
        let every_kind = [
            RuleKind::Gateway,
            RuleKind::App,
            RuleKind::Node,
            RuleKind::Operator,
            RuleKind::Auditor,
        ];
        let allowed = every_kind
            .into_iter()
            .map(|kind| AllowRule {
                kind,
                region: None,
                name: None,
            })
            .collect();
        Self::new(trust_domain, allowed)
    }

    /// The trust domain callers must belong to.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The allow rules.
    pub fn rules(&self) -> &[AllowRule] {
        &self.allowed
    }

    /// Whether `id` may call.
    pub fn allows(&self, id: &PeerId) -> bool {
        id.trust_domain == self.trust_domain && self.allowed.iter().any(|rule| rule.matches(id))
    }

    /// Checks the caller of `req`: `UNAUTHENTICATED` without a client
    /// certificate naming a mesh identity, `PERMISSION_DENIED` when the
    /// identity is not allowed, otherwise the identity. Every refusal is
    /// logged.
    pub fn authorize<T>(&self, req: &Request<T>) -> Result<PeerId, Status> {
        self.check(req).map_err(|e| {
            let remote = req
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".to_owned());
            tracing::warn!(%remote, error = %e, "refused a call");
            Status::from(e)
        })
    }

    fn check<T>(&self, req: &Request<T>) -> Result<PeerId, IdentityError> {
        let certs = req.peer_certs().ok_or(IdentityError::Unauthenticated)?;
        let leaf = certs.first().ok_or(IdentityError::Unauthenticated)?;
        let id = peer_id_from_der(leaf).map_err(|e| IdentityError::NoIdentity { reason: e.to_string() })?;
        if self.allows(&id) {
            Ok(id)
        } else {
            Err(IdentityError::PermissionDenied {
                peer: id.uri(),
                accepts: self.describe(),
            })
        }
    }

    /// What this service accepts, for refusal messages.
    fn describe(&self) -> String {
        let rules: Vec<String> = self.allowed.iter().map(AllowRule::to_string).collect();
        format!("{} of trust domain {}", rules.join(", "), self.trust_domain)
    }

    /// A tonic interceptor enforcing this policy; on success it puts the
    /// caller's [`PeerId`] into the request extensions, where handlers read
    /// it with `req.extensions().get::<PeerId>()`. Wrap a generated server
    /// with `XxxServer::with_interceptor(svc, authz.interceptor())`, or a
    /// whole router with `tonic::service::interceptor(authz.interceptor())`
    /// as a layer.
    pub fn interceptor(
        self: Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        move |mut req: Request<()>| {
            let id = self.authorize(&req)?;
            req.extensions_mut().insert(id);
            Ok(req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uri: &str) -> PeerId {
        PeerId::parse(uri).unwrap()
    }

    #[test]
    fn rules_parse_and_print() {
        for rule in [
            "gateway",
            "gateway/gw-1",
            "app",
            "app/dashboard",
            "node",
            "node/320000",
            "node/320000/nj-1",
        ] {
            assert_eq!(AllowRule::parse(rule).unwrap().to_string(), rule);
        }
        assert_eq!(" app/x ".parse::<AllowRule>().unwrap().to_string(), "app/x");
        let op = PeerId::operator("yrd.mesh", "320000", "wang").unwrap();
        assert!(AllowRule::parse("operator").unwrap().matches(&op));
        assert!(AllowRule::parse("operator/320000").unwrap().matches(&op));
        assert!(!AllowRule::parse("operator/310000").unwrap().matches(&op));
        assert!(!AllowRule::parse("auditor").unwrap().matches(&op));
        assert!(!AllowRule::parse("app").unwrap().matches(&op));
        assert_eq!(
            AllowRule::parse("auditor/320000/li").unwrap().to_string(),
            "auditor/320000/li"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let cases = [
            ("", "must start with"),
            ("gateways", "must start with"),
            ("*", "must start with"),
            ("gateway/", "name is empty"),
            ("app/a/b", "<kind>/<name>"),
            ("node/1/2/3", "<kind>/<region>/<name>"),
            ("operator/1/2/3", "<kind>/<region>/<name>"),
            ("app/a b", "' '"),
            ("node//x", "region is empty"),
        ];
        for (rule, needle) in cases {
            let err = AllowRule::parse(rule).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{rule:?}")) && err.contains(needle),
                "{rule:?}: {err}"
            );
        }
        let err = Authorizer::from_rules("yrd.mesh", ["gateway", "bogus"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bogus\""), "{err}");
        assert!(Authorizer::from_rules("yrd.mesh", Vec::<String>::new()).is_err());
        assert!(Authorizer::from_rules("Bad Domain", ["gateway"]).is_err());
    }

    #[test]
    fn rules_match_kind_region_and_name() {
        let gw = id("spiffe://yrd.mesh/gateway/gw-1");
        let gw2 = id("spiffe://yrd.mesh/gateway/gw-2");
        let app = id("spiffe://yrd.mesh/app/dashboard");
        let nj = id("spiffe://yrd.mesh/region/320000/node/nj-1");
        let sh = id("spiffe://yrd.mesh/region/310000/node/nj-1");
        let rule = |s: &str| AllowRule::parse(s).unwrap();
        assert!(rule("gateway").matches(&gw) && rule("gateway").matches(&gw2) && !rule("gateway").matches(&app));
        assert!(rule("gateway/gw-1").matches(&gw) && !rule("gateway/gw-1").matches(&gw2));
        assert!(rule("app").matches(&app) && rule("app/dashboard").matches(&app) && !rule("app/other").matches(&app));
        assert!(!rule("app/gw-1").matches(&gw), "names are per kind");
        assert!(rule("node").matches(&nj) && rule("node").matches(&sh) && !rule("node").matches(&gw));
        assert!(rule("node/320000").matches(&nj) && !rule("node/320000").matches(&sh));
        assert!(rule("node/320000/nj-1").matches(&nj) && !rule("node/320000/nj-2").matches(&nj));
        assert!(!rule("node/310000/nj-1").matches(&nj));
    }

    #[test]
    fn authorizer_checks_the_trust_domain() {
        let authz = Authorizer::from_rules("yrd.mesh", ["gateway", "app/dashboard"]).unwrap();
        assert!(authz.allows(&id("spiffe://yrd.mesh/gateway/any")));
        assert!(authz.allows(&id("spiffe://yrd.mesh/app/dashboard")));
        assert!(!authz.allows(&id("spiffe://yrd.mesh/app/other")));
        assert!(!authz.allows(&id("spiffe://other.mesh/gateway/any")));
        let members = Authorizer::members("yrd.mesh").unwrap();
        for peer in [
            "spiffe://yrd.mesh/gateway/gw",
            "spiffe://yrd.mesh/app/x",
            "spiffe://yrd.mesh/region/320000/node/n1",
            "spiffe://yrd.mesh/region/320000/operator/wang",
            "spiffe://yrd.mesh/region/320000/auditor/li",
        ] {
            assert!(members.allows(&id(peer)), "{peer}");
            assert!(!members.allows(&id(&peer.replace("yrd.mesh", "other.mesh"))), "{peer}");
        }
        let node_default = Authorizer::gateways("yrd.mesh").unwrap();
        assert_eq!(node_default.rules(), &[AllowRule::parse("gateway").unwrap()]);
        assert!(!node_default.allows(&id("spiffe://yrd.mesh/app/dashboard")));
    }

    #[test]
    fn plaintext_requests_are_unauthenticated() {
        let authz = Arc::new(Authorizer::gateways("yrd.mesh").unwrap());
        let req = Request::new(());
        assert_eq!(peer_id(&req), None);
        let status = authz.authorize(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "a client certificate from the mesh CA is required");
        let mut intercept = authz.interceptor();
        assert_eq!(
            intercept(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
