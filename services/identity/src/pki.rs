//! The mesh PKI: one CA, and leaf certificates whose URI SAN is the
//! holder's [`PeerId`]. `yrdctl pki init|issue` and the test harness call
//! these functions; nothing here talks to the network.
//!
//! Layout of a PKI directory:
//!
//! ```text
//! ca.pem, ca.key                      the mesh CA (key mode 0600)
//! node-<region>-<name>.pem / .key     a region node
//! gateway-<name>.pem / .key           a gateway
//! app-<name>.pem / .key               an application
//! ```

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::IdentityError;
use crate::id::{PeerId, Role, SCHEME, check_trust_domain};

/// File name of the CA certificate in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a new CA is valid (about ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How long a leaf certificate is valid unless the request says otherwise.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Certificates start this long before "now", so that a peer whose clock is
/// a little behind does not reject a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The last second X.509 times (and rcgen's date arithmetic) are used for
/// here: 9999-12-31T23:59:59Z.
const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// Where a PKI directory keeps its CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (`ca.pem`).
    pub cert: PathBuf,
    /// The CA private key (`ca.key`).
    pub key: PathBuf,
}

impl CaFiles {
    /// The CA file paths inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CaFiles {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// Where a PKI directory keeps one identity's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate (`<stem>.pem`).
    pub cert: PathBuf,
    /// The private key (`<stem>.key`).
    pub key: PathBuf,
}

impl CertFiles {
    /// The file paths for `id` inside `dir` (see [`PeerId::file_stem`]).
    pub fn for_id(dir: &Path, id: &PeerId) -> Self {
        let stem = id.file_stem();
        CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// A request for a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// The identity; it becomes the URI SAN and the common name.
    pub id: PeerId,
    /// DNS names that clients dial (servers only; for hostname verification).
    pub dns_names: Vec<String>,
    /// IP addresses that clients dial (servers only; for hostname verification).
    pub ip_addresses: Vec<IpAddr>,
    /// How long the certificate is valid, counted from `not_before` (or from
    /// now when that is `None`).
    pub valid_for: Duration,
    /// The start of validity. `None` means now (back-dated a few minutes for
    /// clock skew). Set it in the past, with a short `valid_for`, to make an
    /// already-expired certificate for tests.
    pub not_before: Option<SystemTime>,
}

impl IssueRequest {
    /// A client-only request: no DNS names or IP addresses, valid for
    /// [`DEFAULT_CERT_VALIDITY`] from now.
    pub fn new(id: PeerId) -> Self {
        IssueRequest {
            id,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            valid_for: DEFAULT_CERT_VALIDITY,
            not_before: None,
        }
    }

    /// A request for a server on a local mesh: `localhost`, `127.0.0.1` and
    /// `::1`, so that ordinary gRPC clients dialing those verify the name.
    pub fn local_server(id: PeerId) -> Self {
        IssueRequest {
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
            ..IssueRequest::new(id)
        }
    }

    /// Adds a DNS name.
    pub fn with_dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    /// Adds an IP address.
    pub fn with_ip_address(mut self, ip: IpAddr) -> Self {
        self.ip_addresses.push(ip);
        self
    }

    /// Sets the validity window: from `not_before` (`None`: now) for `valid_for`.
    pub fn with_validity(mut self, not_before: Option<SystemTime>, valid_for: Duration) -> Self {
        self.not_before = not_before;
        self.valid_for = valid_for;
        self
    }
}

/// A certificate authority: its certificate and its signing key. Load the
/// mesh CA with [`Ca::load`], or make a throw-away one with
/// [`Ca::generate`] (tests use that for a second, foreign CA).
pub struct Ca {
    trust_domain: String,
    cert_pem: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    // The signing key is deliberately left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Ca {
    /// Generates a new self-signed CA for `trust_domain` in memory: ECDSA
    /// P-256, valid for [`CA_VALIDITY`], CN `yrd-mesh CA (<trust domain>)`,
    /// and the URI SAN `spiffe://<trust domain>` so that the trust domain can
    /// be read back from the certificate alone.
    pub fn generate(trust_domain: &str) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain).map_err(|reason| IdentityError::InvalidTrustDomain {
            value: trust_domain.to_owned(),
            reason,
        })?;
        let what = "the CA certificate";
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdentityError::generate("the CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "yrd-mesh");
        dn.push(DnType::CommonName, format!("yrd-mesh CA ({trust_domain})"));
        params.distinguished_name = dn;
        // Path length 1: the design allows one level of per-region
        // intermediate CAs under the mesh CA, and no deeper.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let uri =
            Ia5String::try_from(format!("spiffe://{trust_domain}")).map_err(|e| IdentityError::generate(what, e))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let now = SystemTime::now();
        set_validity(&mut params, now - CLOCK_SKEW, now + CA_VALIDITY).map_err(|reason| {
            IdentityError::Certificate {
                source_name: what.to_owned(),
                reason,
            }
        })?;
        let cert = params.self_signed(&key).map_err(|e| IdentityError::generate(what, e))?;
        Self::from_parts(&cert.pem(), key, what)
    }

    /// Loads the CA from `dir/ca.pem` and `dir/ca.key`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let files = CaFiles::in_dir(dir);
        let cert_pem = read_to_string(&files.cert)?;
        let key_pem = read_to_string(&files.key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Pem {
            source_name: files.key.display().to_string(),
            reason: format!("not a usable private key: {e}"),
        })?;
        Self::from_parts(&cert_pem, key, &files.cert.display().to_string())
    }

    /// Builds a CA from a PEM certificate and its PEM private key (in memory).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::Pem {
            source_name: "the CA key PEM".to_owned(),
            reason: format!("not a usable private key: {e}"),
        })?;
        Self::from_parts(cert_pem, key, "the CA certificate PEM")
    }

    /// Checks the certificate is a CA of some trust domain and matches `key`,
    /// then rebuilds rcgen's issuer (subject, key identifier, key usages)
    /// from it so that leaves chain to exactly this certificate.
    fn from_parts(cert_pem: &str, key: KeyPair, source_name: &str) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::Certificate {
            source_name: source_name.to_owned(),
            reason,
        };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| IdentityError::Pem {
            source_name: source_name.to_owned(),
            reason: pem_reason(&e),
        })?;
        let x509 = parse_x509(&der, source_name)?;
        match x509.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(bad("not a CA certificate (basicConstraints CA is not set)".into())),
            Err(e) => return Err(bad(format!("bad basicConstraints: {e}"))),
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad("the private key does not belong to this certificate".into()));
        }
        let trust_domain = ca_trust_domain(&x509).map_err(bad)?;
        let not_after = unix_to_system_time(x509.validity().not_after.timestamp());
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| IdentityError::generate(format!("{source_name}: rebuilding the issuer"), e))?;
        Ok(Ca {
            trust_domain,
            cert_pem: cert_pem.to_owned(),
            not_after,
            issuer,
        })
    }

    /// The trust domain this CA issues identities for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate, PEM-encoded (what peers trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Writes `dir/ca.pem` and `dir/ca.key` (mode 0600), creating `dir` if
    /// needed. Refuses to overwrite either file: replacing a CA silently
    /// would orphan every certificate it issued.
    pub fn save(&self, dir: &Path) -> Result<CaFiles, IdentityError> {
        std::fs::create_dir_all(dir).map_err(|e| IdentityError::io(dir, e))?;
        let files = CaFiles::in_dir(dir);
        for path in [&files.cert, &files.key] {
            if path.try_exists().map_err(|e| IdentityError::io(path, e))? {
                return Err(IdentityError::AlreadyExists {
                    path: path.clone(),
                    what: "the mesh CA",
                });
            }
        }
        // Key first: if writing the certificate then fails, the key is
        // removed again, so a retry does not trip over half a CA.
        write_file(
            &files.key,
            self.issuer.key().serialize_pem().as_bytes(),
            Secrecy::Private,
            Replace::Never,
        )?;
        if let Err(e) = write_file(&files.cert, self.cert_pem.as_bytes(), Secrecy::Public, Replace::Never) {
            let _ = std::fs::remove_file(&files.key);
            return Err(e);
        }
        Ok(files)
    }

    /// Issues a leaf certificate and a fresh ECDSA P-256 key for `req`;
    /// returns `(certificate PEM, private key PEM)`.
    pub fn issue(&self, req: &IssueRequest) -> Result<(String, String), IdentityError> {
        let id = &req.id;
        let refuse = |reason: String| IdentityError::InvalidRequest { id: id.uri(), reason };
        id.validate()?;
        if id.trust_domain != self.trust_domain {
            return Err(refuse(format!(
                "the CA issues identities of trust domain {:?} only",
                self.trust_domain
            )));
        }
        let now = SystemTime::now();
        let not_before = req.not_before.unwrap_or(now - CLOCK_SKEW);
        if req.valid_for.is_zero() {
            return Err(refuse("valid_for is zero".into()));
        }
        let not_after = req
            .not_before
            .unwrap_or(now)
            .checked_add(req.valid_for)
            .ok_or_else(|| refuse("valid_for is too long".into()))?;
        if not_after > self.not_after {
            return Err(refuse("the certificate would outlive the CA; shorten valid_for".into()));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id.uri());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match id.role {
            // Nodes and gateways both serve and call (gateway → node).
            Role::Node { .. } | Role::Gateway => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            // An application only ever calls; its certificate must not be
            // usable to impersonate a server.
            Role::App | Role::Operator { .. } | Role::Auditor { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        // The authority key identifier lets verifiers pick the right CA
        // certificate once a CA has been rotated or intermediates exist.
        params.use_authority_key_identifier_extension = true;
        let uri = Ia5String::try_from(id.uri()).map_err(|e| refuse(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        for name in &req.dns_names {
            check_dns_name(name).map_err(&refuse)?;
            let name = Ia5String::try_from(name.as_str()).map_err(|e| refuse(format!("DNS name {name:?}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &req.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        set_validity(&mut params, not_before, not_after).map_err(&refuse)?;

        let what = format!("the certificate for {id}");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdentityError::generate(format!("the key for {id}"), e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| IdentityError::generate(what, e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Creates a new mesh CA in `dir` (`ca.pem`, and `ca.key` with mode 0600).
/// Refuses to overwrite an existing CA; see [`ensure_ca`] to reuse one.
pub fn init_ca(dir: &Path, trust_domain: &str) -> Result<CaFiles, IdentityError> {
    Ca::generate(trust_domain)?.save(dir)
}

/// Returns the CA in `dir`, creating it first if there is none. An existing
/// CA of another trust domain, or half a CA (only one of the two files), is
/// an error rather than something to paper over.
pub fn ensure_ca(dir: &Path, trust_domain: &str) -> Result<CaFiles, IdentityError> {
    let files = CaFiles::in_dir(dir);
    let cert = files.cert.try_exists().map_err(|e| IdentityError::io(&files.cert, e))?;
    let key = files.key.try_exists().map_err(|e| IdentityError::io(&files.key, e))?;
    match (cert, key) {
        (false, false) => init_ca(dir, trust_domain),
        (true, true) => {
            let ca = Ca::load(dir)?;
            if ca.trust_domain != trust_domain {
                return Err(IdentityError::TrustDomainMismatch {
                    path: files.cert,
                    expected: trust_domain.to_owned(),
                    found: ca.trust_domain,
                });
            }
            Ok(files)
        }
        (true, false) => Err(IdentityError::Incomplete {
            missing: files.key,
            present: files.cert,
        }),
        (false, true) => Err(IdentityError::Incomplete {
            missing: files.cert,
            present: files.key,
        }),
    }
}

/// Issues a certificate for `req` signed by the CA in `dir`, and writes it
/// to `dir/<stem>.pem` and `dir/<stem>.key` (mode 0600; see
/// [`CertFiles::for_id`]). Existing files for the same identity are
/// replaced atomically (rename), which is how a certificate is renewed.
pub fn issue(dir: &Path, req: &IssueRequest) -> Result<CertFiles, IdentityError> {
    let ca = Ca::load(dir)?;
    let (cert_pem, key_pem) = ca.issue(req)?;
    let files = CertFiles::for_id(dir, &req.id);
    write_file(&files.key, key_pem.as_bytes(), Secrecy::Private, Replace::Atomically)?;
    write_file(&files.cert, cert_pem.as_bytes(), Secrecy::Public, Replace::Atomically)?;
    Ok(files)
}

/// Issues a certificate for `req` signed by `ca`, without touching files;
/// returns `(certificate PEM, private key PEM)`.
pub fn issue_in_memory(ca: &Ca, req: &IssueRequest) -> Result<(String, String), IdentityError> {
    ca.issue(req)
}

/// When the first certificate in `cert_pem` expires (for an expiry metric).
pub fn cert_not_after(cert_pem: &[u8]) -> Result<SystemTime, IdentityError> {
    let source_name = "the certificate PEM";
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| IdentityError::Pem {
        source_name: source_name.to_owned(),
        reason: pem_reason(&e),
    })?;
    let x509 = parse_x509(&der, source_name)?;
    Ok(unix_to_system_time(x509.validity().not_after.timestamp()))
}

/// Each certificate in `pem` (a CA bundle, say) by its subject, with when
/// it expires.
pub fn certs_not_after(pem: &[u8], source_name: &str) -> Result<Vec<(String, SystemTime)>, IdentityError> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| IdentityError::Pem {
            source_name: source_name.to_owned(),
            reason: pem_reason(&e),
        })?;
        let x509 = parse_x509(&der, source_name)?;
        out.push((
            x509.subject().to_string(),
            unix_to_system_time(x509.validity().not_after.timestamp()),
        ));
    }
    Ok(out)
}

/// The mesh identity in a DER certificate: its one `spiffe://` URI SAN.
/// None, several, or a malformed one is an error.
pub fn peer_id_from_der(der: &[u8]) -> Result<PeerId, IdentityError> {
    let source_name = "the peer certificate";
    let bad = |reason: String| IdentityError::Certificate {
        source_name: source_name.to_owned(),
        reason,
    };
    let x509 = parse_x509(der, source_name)?;
    let uris = spiffe_uris(&x509).map_err(bad)?;
    match uris.as_slice() {
        [uri] => PeerId::parse(uri),
        [] => Err(bad("it has no spiffe:// URI SAN".into())),
        _ => Err(bad(format!(
            "it has {} spiffe:// URI SANs; exactly one is allowed",
            uris.len()
        ))),
    }
}

fn parse_x509<'a>(der: &'a [u8], source_name: &str) -> Result<X509Certificate<'a>, IdentityError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| IdentityError::Certificate {
            source_name: source_name.to_owned(),
            reason: format!("not a valid X.509 certificate: {e}"),
        })
}

/// Every URI SAN whose scheme is `spiffe` (in any case, so that a
/// `SPIFFE://` URI counts toward "exactly one" and then fails strict parsing).
fn spiffe_uris<'a>(x509: &X509Certificate<'a>) -> Result<Vec<&'a str>, String> {
    let san = x509
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    let names = san.map(|ext| ext.value.general_names.as_slice()).unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .filter(|uri| uri.get(..SCHEME.len()).is_some_and(|s| s.eq_ignore_ascii_case(SCHEME)))
        .collect())
}

/// The trust domain a CA certificate names in its `spiffe://<domain>` URI SAN.
fn ca_trust_domain(x509: &X509Certificate<'_>) -> Result<String, String> {
    let uris = spiffe_uris(x509)?;
    let [uri] = uris.as_slice() else {
        return Err(
            "a mesh CA certificate must name its trust domain in exactly one spiffe://<trust-domain> URI SAN".into(),
        );
    };
    let td = uri.strip_prefix(SCHEME).unwrap_or_default();
    check_trust_domain(td).map_err(|reason| format!("the CA's URI SAN {uri:?}: {reason}"))?;
    Ok(td.to_owned())
}

/// A DNS name for a SAN: LDH labels, optionally a leading `*.` wildcard.
/// An IP address written as a name is refused, because verifiers match IP
/// addresses only against IP SANs and the name would silently not work.
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("DNS name {name:?} is an IP address; list it in ip_addresses"));
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid DNS name"))
    }
}

/// Sets rcgen's validity. rcgen takes `time::OffsetDateTime`; rather than
/// add the `time` crate for one conversion, the Unix epoch from rcgen's own
/// `date_time_ymd` is offset by a `std` duration. Times outside
/// 1970..=9999 are refused up front because that addition would panic.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) -> Result<(), String> {
    let since_epoch = |t: SystemTime, what: &str| {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .filter(|d| d.as_secs() <= MAX_UNIX_SECONDS)
            .ok_or_else(|| format!("{what} is outside the years 1970 to 9999"))
    };
    let start = since_epoch(not_before, "not_before")?;
    let end = since_epoch(not_after, "not_after")?;
    if end <= start {
        return Err("not_after is not after not_before".into());
    }
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + start;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + end;
    Ok(())
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Says what a PEM parse failure means in operator terms.
pub(crate) fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM section of the expected kind found".to_owned(),
        other => format!("bad PEM: {other}"),
    }
}

fn read_to_string(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|e| IdentityError::io(path, e))
}

/// Whether a file holds a secret (private key: owner-only permissions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrecy {
    Public,
    Private,
}

/// Whether an existing file may be replaced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Never,
    /// Written beside the target and renamed over it, so a reader never
    /// sees a half-written certificate or key.
    Atomically,
}

fn write_file(path: &Path, contents: &[u8], secrecy: Secrecy, replace: Replace) -> Result<(), IdentityError> {
    let target = match replace {
        Replace::Never => path.to_path_buf(),
        Replace::Atomically => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".tmp-{}", std::process::id()));
            let tmp = path.with_file_name(name);
            // A leftover from a crashed run would keep its old permissions
            // under `create_new`; remove it so the mode below applies.
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(IdentityError::io(&tmp, e)),
            }
            tmp
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secrecy == Secrecy::Private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secrecy;
    let written = options.open(&target).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::AlreadyExists && replace == Replace::Never {
            return Err(IdentityError::AlreadyExists {
                path: target,
                what: "an existing file",
            });
        }
        if replace == Replace::Atomically {
            let _ = std::fs::remove_file(&target);
        }
        return Err(IdentityError::io(&target, e));
    }
    if replace == Replace::Atomically {
        std::fs::rename(&target, path).map_err(|e| {
            let _ = std::fs::remove_file(&target);
            IdentityError::io(path, e)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(cert_pem: &str) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                _ => {}
            }
        }
        (uris, dns, ips)
    }

    #[test]
    fn init_ca_writes_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = init_ca(dir.path(), "yrd.mesh").unwrap();
        assert_eq!(files, CaFiles::in_dir(dir.path()));
        assert!(files.cert.is_file() && files.key.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the CA key must be private");
        }
        let before = std::fs::read(&files.cert).unwrap();
        let err = init_ca(dir.path(), "yrd.mesh").unwrap_err();
        assert!(matches!(err, IdentityError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(
            std::fs::read(&files.cert).unwrap(),
            before,
            "the existing CA was changed"
        );

        // Reusing is fine; another trust domain is not.
        assert_eq!(ensure_ca(dir.path(), "yrd.mesh").unwrap(), files);
        assert_eq!(std::fs::read(&files.cert).unwrap(), before);
        let err = ensure_ca(dir.path(), "other.mesh").unwrap_err();
        assert!(
            err.to_string().contains("other.mesh") && err.to_string().contains("yrd.mesh"),
            "{err}"
        );
    }

    #[test]
    fn ensure_ca_creates_and_detects_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pki");
        let files = ensure_ca(&sub, "yrd.mesh").unwrap();
        let ca = Ca::load(&sub).unwrap();
        assert_eq!(ca.trust_domain(), "yrd.mesh");
        std::fs::remove_file(&files.key).unwrap();
        let err = ensure_ca(&sub, "yrd.mesh").unwrap_err();
        assert!(
            err.to_string().contains("ca.key") && err.to_string().contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn ca_certificate_is_a_constrained_ca() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let bc = x509.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(1));
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let cn = x509
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(cn, "yrd-mesh CA (yrd.mesh)");
        let years = (ca.not_after().duration_since(SystemTime::now()).unwrap().as_secs()) / (365 * 24 * 3600);
        assert!((9..=10).contains(&years), "{years}");
    }

    #[test]
    fn issue_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "yrd.mesh").unwrap();
        let id = PeerId::node("yrd.mesh", "320000", "nj-1").unwrap();
        let req = IssueRequest::local_server(id.clone()).with_dns_name("node.jiangsu.example");
        let files = issue(dir.path(), &req).unwrap();
        assert_eq!(files.cert, dir.path().join("node-320000-nj-1.pem"));
        assert_eq!(files.key, dir.path().join("node-320000-nj-1.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let pem = std::fs::read_to_string(&files.cert).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(peer_id_from_der(&der).unwrap(), id);
        let (uris, dns, ips) = sans(&pem);
        assert_eq!(uris, vec![id.uri()]);
        assert_eq!(dns, vec!["localhost", "node.jiangsu.example"]);
        assert_eq!(ips, vec![vec![127, 0, 0, 1], Ipv6Addr::LOCALHOST.octets().to_vec()]);

        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let cn = x509
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(cn, id.uri());

        let not_after = cert_not_after(pem.as_bytes()).unwrap();
        let left = not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > DEFAULT_CERT_VALIDITY - Duration::from_secs(3600) && left <= DEFAULT_CERT_VALIDITY);

        // Re-issuing replaces the files (renewal).
        let again = issue(dir.path(), &req).unwrap();
        assert_ne!(std::fs::read_to_string(&again.cert).unwrap(), pem);
    }

    #[test]
    fn app_certificates_are_client_only() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let id = PeerId::app("yrd.mesh", "dashboard").unwrap();
        let (pem, key) = issue_in_memory(&ca, &IssueRequest::new(id.clone())).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(peer_id_from_der(&der).unwrap(), id);
        assert!(
            x509.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len()
                == 1
        );
    }

    #[test]
    fn expired_certificates_can_be_made() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let day = Duration::from_secs(24 * 3600);
        let req = IssueRequest::new(PeerId::gateway("yrd.mesh", "old").unwrap())
            .with_validity(Some(SystemTime::now() - 2 * day), day);
        let (pem, _) = ca.issue(&req).unwrap();
        assert!(cert_not_after(pem.as_bytes()).unwrap() < SystemTime::now() - day + Duration::from_secs(60));
    }

    #[test]
    fn refuses_bad_requests() {
        let ca = Ca::generate("yrd.mesh").unwrap();
        let gw = PeerId::gateway("yrd.mesh", "gw").unwrap();
        let cases = [
            (
                IssueRequest::new(PeerId::gateway("other.mesh", "gw").unwrap()),
                "trust domain",
            ),
            (IssueRequest::new(gw.clone()).with_dns_name("127.0.0.1"), "ip_addresses"),
            (
                IssueRequest::new(gw.clone()).with_dns_name("bad name"),
                "not a valid DNS name",
            ),
            (
                IssueRequest::new(gw.clone()).with_validity(None, Duration::ZERO),
                "valid_for is zero",
            ),
            (
                IssueRequest::new(gw.clone()).with_validity(None, 20 * CA_VALIDITY),
                "outlive the CA",
            ),
            (
                IssueRequest::new(PeerId {
                    trust_domain: "yrd.mesh".into(),
                    role: Role::App,
                    name: "a/b".into(),
                }),
                "'/'",
            ),
        ];
        for (req, needle) in cases {
            let err = ca.issue(&req).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn ca_loading_checks_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");

        // A key that is not the CA's.
        init_ca(dir.path(), "yrd.mesh").unwrap();
        let other = Ca::generate("yrd.mesh").unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), other.issuer.key().serialize_pem()).unwrap();
        let err = Ca::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");

        // A leaf is not a CA.
        let (leaf, leaf_key) = other
            .issue(&IssueRequest::new(PeerId::app("yrd.mesh", "x").unwrap()))
            .unwrap();
        let err = Ca::from_pem(&leaf, &leaf_key).unwrap_err().to_string();
        assert!(err.contains("not a CA"), "{err}");

        let err = Ca::from_pem("garbage", "garbage").unwrap_err().to_string();
        assert!(err.contains("CA key PEM"), "{err}");
    }

    #[test]
    fn peer_id_needs_exactly_one_spiffe_uri() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let none = params.self_signed(&key).unwrap();
        let err = peer_id_from_der(none.der()).unwrap_err().to_string();
        assert!(err.contains("no spiffe://"), "{err}");
        for uri in ["spiffe://yrd.mesh/app/a", "spiffe://yrd.mesh/app/b"] {
            params
                .subject_alt_names
                .push(SanType::URI(Ia5String::try_from(uri).unwrap()));
        }
        let two = params.self_signed(&key).unwrap();
        let err = peer_id_from_der(two.der()).unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
        assert!(peer_id_from_der(b"not a certificate").is_err());
    }
}
