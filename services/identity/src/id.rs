//! Mesh identities: SPIFFE-style URIs that name every process.
//!
//! ```text
//! spiffe://<trust-domain>/region/<region>/node/<name>
//! spiffe://<trust-domain>/gateway/<name>
//! spiffe://<trust-domain>/app/<name>
//! spiffe://<trust-domain>/region/<region>/operator/<name>
//! spiffe://<trust-domain>/region/<region>/auditor/<name>
//! ```
//!
//! Operators decide access requests for their region and auditors read its
//! audit; neither reads data (GB/T 39477-2020 separates these roles).

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;

/// The trust domain used when configuration names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "yrd.mesh";

/// The longest name or region accepted.
const MAX_NAME_LEN: usize = 64;
/// The longest trust domain accepted (the SPIFFE limit).
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The URI scheme of mesh identities, with its separator.
pub(crate) const SCHEME: &str = "spiffe://";

/// What kind of process an identity names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A region node, serving the data of one region.
    Node {
        /// The region id, such as `310000`.
        region: String,
    },
    /// A federation gateway.
    Gateway,
    /// An application that queries the gateway.
    App,
    /// A region's operator: decides access requests for that region.
    Operator {
        /// The region id.
        region: String,
    },
    /// A region's auditor: reads that region's audit.
    Auditor {
        /// The region id.
        region: String,
    },
}

impl Role {
    /// The role's kind as used in URIs, file names and allow rules:
    /// `"node"`, `"gateway"`, `"app"`, `"operator"` or `"auditor"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Role::Node { .. } => "node",
            Role::Gateway => "gateway",
            Role::App => "app",
            Role::Operator { .. } => "operator",
            Role::Auditor { .. } => "auditor",
        }
    }

    /// The region of a regional role (node, operator, auditor).
    pub fn region(&self) -> Option<&str> {
        match self {
            Role::Node { region } | Role::Operator { region } | Role::Auditor { region } => Some(region),
            Role::Gateway | Role::App => None,
        }
    }
}

/// The identity of a mesh process, as carried in the URI SAN of its
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerId {
    /// The trust domain, such as `yrd.mesh`.
    pub trust_domain: String,
    /// What kind of process it is.
    pub role: Role,
    /// The process's name within its kind (and region, for nodes).
    pub name: String,
}

impl PeerId {
    /// A region node's identity, validated.
    pub fn node(trust_domain: &str, region: &str, name: &str) -> Result<Self, IdentityError> {
        Self::checked(
            trust_domain,
            Role::Node {
                region: region.to_owned(),
            },
            name,
        )
    }

    /// A gateway's identity, validated.
    pub fn gateway(trust_domain: &str, name: &str) -> Result<Self, IdentityError> {
        Self::checked(trust_domain, Role::Gateway, name)
    }

    /// An application's identity, validated.
    pub fn app(trust_domain: &str, name: &str) -> Result<Self, IdentityError> {
        Self::checked(trust_domain, Role::App, name)
    }

    /// A region operator's identity, validated.
    pub fn operator(trust_domain: &str, region: &str, name: &str) -> Result<Self, IdentityError> {
        Self::checked(
            trust_domain,
            Role::Operator {
                region: region.to_owned(),
            },
            name,
        )
    }

    /// A region auditor's identity, validated.
    pub fn auditor(trust_domain: &str, region: &str, name: &str) -> Result<Self, IdentityError> {
        Self::checked(
            trust_domain,
            Role::Auditor {
                region: region.to_owned(),
            },
            name,
        )
    }

    fn checked(trust_domain: &str, role: Role, name: &str) -> Result<Self, IdentityError> {
        let id = PeerId {
            trust_domain: trust_domain.to_owned(),
            role,
            name: name.to_owned(),
        };
        id.validate()?;
        Ok(id)
    }

    /// Parses a URI strictly: the scheme, the trust domain, the path shape
    /// and every segment's characters are checked, and nothing else (port,
    /// query, fragment, trailing slash) is accepted.
    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let bad = |reason: &str| IdentityError::InvalidPeerId {
            value: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it must start with spiffe://"))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no path after the trust domain"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let (role, name) = match segments.as_slice() {
            ["region", region, "node", name] => (
                Role::Node {
                    region: (*region).to_owned(),
                },
                *name,
            ),
            ["region", region, "operator", name] => (
                Role::Operator {
                    region: (*region).to_owned(),
                },
                *name,
            ),
            ["region", region, "auditor", name] => (
                Role::Auditor {
                    region: (*region).to_owned(),
                },
                *name,
            ),
            ["gateway", name] => (Role::Gateway, *name),
            ["app", name] => (Role::App, *name),
            _ => {
                return Err(bad(
                    "the path must be /region/<region>/node|operator|auditor/<name>, /gateway/<name> or /app/<name>",
                ));
            }
        };
        let id = PeerId {
            trust_domain: trust_domain.to_owned(),
            role,
            name: name.to_owned(),
        };
        id.validate().map_err(|e| match e {
            IdentityError::InvalidPeerId { reason, .. } => bad(&reason),
            other => other,
        })?;
        Ok(id)
    }

    /// Checks every part; fields are public, so a hand-built value may be
    /// wrong and must not reach a certificate unchecked.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let bad = |reason: String| IdentityError::InvalidPeerId {
            value: self.uri(),
            reason,
        };
        check_trust_domain(&self.trust_domain).map_err(bad)?;
        if let Some(region) = self.role.region() {
            check_segment("region", region).map_err(bad)?;
        }
        check_segment("name", &self.name).map_err(bad)
    }

    /// The identity as a URI, such as `spiffe://yrd.mesh/gateway/gw-1`.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// The kind: `"node"`, `"gateway"`, `"app"`, `"operator"` or `"auditor"`.
    pub fn kind(&self) -> &'static str {
        self.role.kind()
    }

    /// The region of a node, operator or auditor; `None` for gateways and apps.
    pub fn region(&self) -> Option<&str> {
        self.role.region()
    }

    /// The stem of this identity's certificate files: `node-<region>-<name>`
    /// (likewise `operator-…` and `auditor-…`), `gateway-<name>` or `app-<name>`.
    pub fn file_stem(&self) -> String {
        match self.role.region() {
            Some(region) => format!("{}-{region}-{}", self.kind(), self.name),
            None => format!("{}-{}", self.kind(), self.name),
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role.region() {
            Some(region) => write!(
                f,
                "{SCHEME}{}/region/{region}/{}/{}",
                self.trust_domain,
                self.kind(),
                self.name
            ),
            None => write!(f, "{SCHEME}{}/{}/{}", self.trust_domain, self.kind(), self.name),
        }
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A trust domain per the SPIFFE spec: lowercase letters, digits, `.`, `-`
/// and `_`; no port, no user info.
pub(crate) fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(format!(
            "the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} characters"
        ));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the trust domain {td:?} contains {c:?}; only a-z, 0-9, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// A name or region: `[A-Za-z0-9._-]{1,64}`, and not `.` or `..`, which URI
/// path normalization would collapse (SPIFFE forbids them too).
pub(crate) fn check_segment(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("the {what} is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the {what} {s:?} contains {c:?}; only A-Z, a-z, 0-9, '.', '-' and '_' are allowed"
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("the {what} may not be {s:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_every_role() {
        let cases = [
            (
                PeerId::node("yrd.mesh", "320000", "nj-1").unwrap(),
                "spiffe://yrd.mesh/region/320000/node/nj-1",
            ),
            (
                PeerId::gateway("yrd.mesh", "gw-1").unwrap(),
                "spiffe://yrd.mesh/gateway/gw-1",
            ),
            (
                PeerId::app("example.org", "dash_board.v2").unwrap(),
                "spiffe://example.org/app/dash_board.v2",
            ),
            (
                PeerId::operator("yrd.mesh", "320000", "wang").unwrap(),
                "spiffe://yrd.mesh/region/320000/operator/wang",
            ),
            (
                PeerId::auditor("yrd.mesh", "340000", "li").unwrap(),
                "spiffe://yrd.mesh/region/340000/auditor/li",
            ),
        ];
        for (id, uri) in cases {
            assert_eq!(id.uri(), uri);
            assert_eq!(id.to_string(), uri);
            assert_eq!(PeerId::parse(uri).unwrap(), id);
            assert_eq!(uri.parse::<PeerId>().unwrap(), id);
        }
        let op = PeerId::operator("yrd.mesh", "320000", "wang").unwrap();
        assert_eq!(op.region(), Some("320000"));
        assert_eq!(op.file_stem(), "operator-320000-wang");
        assert!(PeerId::parse("spiffe://yrd.mesh/region/320000/admin/x").is_err());
    }

    #[test]
    fn kind_region_and_file_stem() {
        let node = PeerId::node(DEFAULT_TRUST_DOMAIN, "310000", "sh").unwrap();
        assert_eq!(
            (node.kind(), node.region(), node.file_stem().as_str()),
            ("node", Some("310000"), "node-310000-sh")
        );
        let gw = PeerId::gateway(DEFAULT_TRUST_DOMAIN, "gw").unwrap();
        assert_eq!(
            (gw.kind(), gw.region(), gw.file_stem().as_str()),
            ("gateway", None, "gateway-gw")
        );
        let app = PeerId::app(DEFAULT_TRUST_DOMAIN, "dash").unwrap();
        assert_eq!((app.kind(), app.file_stem().as_str()), ("app", "app-dash"));
    }

    #[test]
    fn rejects_malformed_uris() {
        let long = "a".repeat(65);
        let bad = [
            "",
            "yrd.mesh/app/x",
            "https://yrd.mesh/app/x",
            "SPIFFE://yrd.mesh/app/x",
            "spiffe://yrd.mesh",
            "spiffe://yrd.mesh/",
            "spiffe:///app/x",
            "spiffe://Yrd.Mesh/app/x",
            "spiffe://yrd.mesh:443/app/x",
            "spiffe://user@yrd.mesh/app/x",
            "spiffe://yrd.mesh/app/x/",
            "spiffe://yrd.mesh/app/",
            "spiffe://yrd.mesh/app/a b",
            "spiffe://yrd.mesh/app/x?y=1",
            "spiffe://yrd.mesh/app/x#f",
            "spiffe://yrd.mesh/app/..",
            "spiffe://yrd.mesh/app/%41",
            "spiffe://yrd.mesh/app/名字",
            "spiffe://yrd.mesh/node/x",
            "spiffe://yrd.mesh/region/320000/node",
            "spiffe://yrd.mesh/region//node/x",
            "spiffe://yrd.mesh/region/320000/gateway/x",
            "spiffe://yrd.mesh/gateway/x/y",
            "spiffe://yrd.mesh/user/x",
            "spiffe://yrd.mesh//app/x",
        ];
        for uri in bad {
            assert!(PeerId::parse(uri).is_err(), "{uri:?} should be rejected");
        }
        let too_long = format!("spiffe://yrd.mesh/app/{long}");
        let err = PeerId::parse(&too_long).unwrap_err().to_string();
        assert!(err.contains("longer than 64"), "{err}");
        assert!(PeerId::parse(&format!("spiffe://yrd.mesh/app/{}", &long[..64])).is_ok());
    }

    #[test]
    fn errors_name_the_value_and_the_problem() {
        let err = PeerId::parse("spiffe://yrd.mesh/app/a b").unwrap_err().to_string();
        assert!(
            err.contains("spiffe://yrd.mesh/app/a b") && err.contains("' '"),
            "{err}"
        );
        let err = PeerId::node("yrd.mesh", "", "x").unwrap_err().to_string();
        assert!(err.contains("region is empty"), "{err}");
    }
}
