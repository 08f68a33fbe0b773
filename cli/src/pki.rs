//! `yrdctl pki`: the mesh CA and the certificates of nodes, gateways and
//! applications (yrd-identity does the work; this is its command line).

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use yrd_identity::{Ca, CertFiles, IssueRequest, PeerId};

use crate::cli::{PeerKind, PkiInitArgs, PkiIssueArgs};

/// Seconds in a day, for `--days`.
const DAY: u64 = 24 * 3600;

/// Runs `yrdctl pki init`.
pub fn init(args: &PkiInitArgs) -> anyhow::Result<()> {
    let existed = args.dir.exists();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let files = match yrd_identity::init_ca(&args.dir, &args.trust_domain) {
        Ok(files) => files,
        Err(e) => {
            // Leave no empty directory behind a refused trust domain; a
            // directory that held anything is left alone (remove_dir fails).
            if !existed {
                let _ = std::fs::remove_dir(&args.dir);
            }
            return Err(e.into());
        }
    };
    println!("created the mesh CA of trust domain {}", args.trust_domain);
    println!("  certificate  {}", files.cert.display());
    println!(
        "  key          {}  (keep it secret: it signs every identity)",
        files.key.display()
    );
    Ok(())
}

/// The issue request that `yrdctl pki issue` flags describe, checked: a
/// node needs its region, a gateway or an application has none; servers
/// (nodes, gateways) get the local names unless told otherwise.
pub fn issue_request(trust_domain: &str, args: &PkiIssueArgs) -> anyhow::Result<IssueRequest> {
    let regional = |region: &Option<String>, kind: &str| -> anyhow::Result<String> {
        let Some(region) = region else {
            bail!(
                "--region is required for --kind {kind}: its identity is \
                 spiffe://{trust_domain}/region/<region>/{kind}/{}",
                args.name
            )
        };
        if !is_province_code(region) {
            bail!("--region {region:?} is not a GB/T 2260 province-level code such as 320000");
        }
        Ok(region.clone())
    };
    let id = match (args.kind, &args.region) {
        (PeerKind::Node, region) => PeerId::node(trust_domain, &regional(region, "node")?, &args.name)?,
        (PeerKind::Operator, region) => PeerId::operator(trust_domain, &regional(region, "operator")?, &args.name)?,
        (PeerKind::Auditor, region) => PeerId::auditor(trust_domain, &regional(region, "auditor")?, &args.name)?,
        (PeerKind::Gateway, Some(_)) => {
            bail!("--region applies only to regional kinds (node, operator, auditor): a gateway identity has no region")
        }
        (PeerKind::App, Some(_)) => {
            bail!("--region applies only to regional kinds (node, operator, auditor): an app identity has no region")
        }
        (PeerKind::Gateway, None) => PeerId::gateway(trust_domain, &args.name)?,
        (PeerKind::App, None) => PeerId::app(trust_domain, &args.name)?,
    };
    let server = matches!(args.kind, PeerKind::Node | PeerKind::Gateway);
    let mut req = if server && !args.no_local_names {
        IssueRequest::local_server(id)
    } else {
        IssueRequest::new(id)
    };
    for name in &args.dns {
        if !req.dns_names.contains(name) {
            req = req.with_dns_name(name.clone());
        }
    }
    for ip in &args.ip {
        if !req.ip_addresses.contains(ip) {
            req = req.with_ip_address(*ip);
        }
    }
    Ok(req.with_validity(None, Duration::from_secs(u64::from(args.days) * DAY)))
}

/// A six-digit GB/T 2260 code of a province-level region (`..0000`), the
/// rule node configs enforce too.
fn is_province_code(region: &str) -> bool {
    region.len() == 6 && region.bytes().all(|b| b.is_ascii_digit()) && region.ends_with("0000")
}

/// Runs `yrdctl pki issue`.
pub fn issue(args: &PkiIssueArgs) -> anyhow::Result<()> {
    let ca = Ca::load(&args.dir).with_context(|| {
        format!(
            "loading the mesh CA from {} (create one with `yrdctl pki init --dir {}`)",
            args.dir.display(),
            args.dir.display()
        )
    })?;
    let req = issue_request(ca.trust_domain(), args)?;
    let existed = CertFiles::for_id(&args.dir, &req.id).cert.exists();
    let files = yrd_identity::issue(&args.dir, &req)?;
    print_issued(&req, &files, existed)
}

/// Prints what was issued: identity, files, names and expiry.
pub fn print_issued(req: &IssueRequest, files: &CertFiles, replaced: bool) -> anyhow::Result<()> {
    let verb = if replaced { "renewed" } else { "issued" };
    println!("{verb} {}", req.id);
    println!("  certificate  {}", files.cert.display());
    println!("  key          {}", files.key.display());
    let mut names: Vec<String> = req.dns_names.clone();
    names.extend(req.ip_addresses.iter().map(ToString::to_string));
    if !names.is_empty() {
        println!("  names        {}", names.join(", "));
    }
    println!("  valid until  {}", not_after(&files.cert)?);
    Ok(())
}

/// When the certificate in `path` expires, as RFC 3339.
fn not_after(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let when = yrd_identity::cert_not_after(&pem)?;
    let secs = when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(yrd_proto::datetime::format_timestamp(
        i64::try_from(secs).unwrap_or(i64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, PkiCommand};

    fn args(extra: &[&str]) -> PkiIssueArgs {
        let argv = ["yrdctl", "pki", "issue", "--dir", "pki"].iter().chain(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Pki(PkiCommand::Issue(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn request(extra: &[&str]) -> anyhow::Result<IssueRequest> {
        issue_request("yrd.mesh", &args(extra))
    }

    #[test]
    fn nodes_need_a_region_and_others_refuse_one() {
        let e = request(&["--kind", "node", "--name", "nj-1"]).unwrap_err().to_string();
        assert!(e.contains("--region is required"), "{e}");
        let e = request(&["--kind", "gateway", "--name", "gw", "--region", "320000"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--region applies only to regional kinds") && e.contains("gateway"),
            "{e}"
        );
        let e = request(&["--kind", "app", "--name", "dash", "--region", "320000"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("an app identity has no region"), "{e}");
        let e = request(&["--kind", "node", "--name", "nj-1", "--region", "3200"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("province-level code"), "{e}");
        let e = request(&["--kind", "app", "--name", "a b"]).unwrap_err().to_string();
        assert!(e.contains("' '"), "{e}");
    }

    #[test]
    fn servers_get_local_names_and_apps_do_not() {
        let r = request(&["--kind", "node", "--name", "nj-1", "--region", "320000"]).unwrap();
        assert_eq!(r.id.uri(), "spiffe://yrd.mesh/region/320000/node/nj-1");
        assert_eq!(r.dns_names, ["localhost"]);
        assert_eq!(r.ip_addresses.len(), 2);
        let r = request(&[
            "--kind",
            "gateway",
            "--name",
            "gw",
            "--dns",
            "gw.example.org",
            "--dns",
            "localhost",
            "--ip",
            "10.0.0.7",
        ])
        .unwrap();
        assert_eq!(r.dns_names, ["localhost", "gw.example.org"]);
        assert!(r.ip_addresses.contains(&"10.0.0.7".parse::<IpAddr>().unwrap()));
        let r = request(&[
            "--kind",
            "gateway",
            "--name",
            "gw",
            "--no-local-names",
            "--dns",
            "gw.example.org",
        ])
        .unwrap();
        assert_eq!(
            (r.dns_names.as_slice(), r.ip_addresses.len()),
            (["gw.example.org".to_owned()].as_slice(), 0)
        );
        let r = request(&["--kind", "app", "--name", "dash", "--days", "30"]).unwrap();
        assert_eq!(r.id.uri(), "spiffe://yrd.mesh/app/dash");
        assert!(r.dns_names.is_empty() && r.ip_addresses.is_empty());
        assert_eq!(r.valid_for, Duration::from_secs(30 * DAY));
        assert!(
            Cli::try_parse_from([
                "yrdctl", "pki", "issue", "--dir", "d", "--kind", "app", "--name", "x", "--days", "0"
            ])
            .is_err()
        );
    }
}
