//! The verifier: every line parses, every hash, `prev` link and `seq`
//! holds across files, and every checkpoint covers the record before it
//! and is signed by its certificate (issued by the CA, when given).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use x509_parser::pem::Pem;
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::error::AuditError;
use crate::format::{
    GENESIS, Hash, Line, Lines, chain_hash, checkpoint_message, expand, hex, parse_time, seq_of_name, split_line, unhex,
};
use crate::record::{CHECKPOINT, Checkpoint, Record};

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Records, checkpoints included.
    pub records: u64,
    /// The last record's seq (0 for an empty log).
    pub last_seq: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Checkpoints with a valid signature.
    pub signed_checkpoints: u64,
    /// The seq of the last signed checkpoint, if any.
    pub last_signed_seq: Option<u64>,
    /// Records after the last signed checkpoint (all records when none is
    /// signed): covered only by the hash chain.
    pub chain_only: u64,
    /// The identities that signed checkpoints.
    pub signers: Vec<String>,
    /// Whether the signers' certificates were checked against a CA.
    pub ca_checked: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ok: {} file(s), {} records (seq 1..={}), {} checkpoint(s), {} signed",
            self.files.len(),
            self.records,
            self.last_seq,
            self.checkpoints,
            self.signed_checkpoints
        )?;
        if !self.signers.is_empty() {
            let by = if self.ca_checked {
                "certificates issued by the given CA"
            } else {
                "certificates NOT checked against a CA (give --ca)"
            };
            writeln!(f, "signed by: {} ({by})", self.signers.join(", "))?;
        }
        match self.last_signed_seq {
            None if self.records > 0 => write!(
                f,
                "no checkpoint is signed: all {} records are covered only by the hash chain, which an editor can \
                 recompute",
                self.chain_only
            ),
            _ if self.chain_only == 0 => write!(f, "the log ends with a signed checkpoint: every record is covered"),
            Some(seq) => write!(
                f,
                "{} record(s) after the last signed checkpoint (seq {seq}) are covered only by the hash chain: a cut \
                 of that tail cannot be proven (a log closed gracefully ends with a checkpoint)",
                self.chain_only
            ),
            None => write!(f, "the log is empty"),
        }
    }
}

/// Checks the log in `paths` (files, or directories whose log files are
/// read in order) as one series from seq 1. With `ca_pem`, each signer's
/// certificate must have been issued by that CA (one of its certificates)
/// and valid at the checkpoint's time. Returns the first bad record as
/// [`AuditError::BadRecord`].
pub fn verify(paths: &[PathBuf], ca_pem: Option<&[u8]>) -> Result<Report, AuditError> {
    let files = expand(paths)?;
    if files.is_empty() {
        return Err(AuditError::Io {
            path: paths.first().cloned().unwrap_or_default(),
            reason: "no audit log files (audit-<seq>.jsonl) found".into(),
        });
    }
    let cas = match ca_pem {
        Some(pem) => Some(parse_cas(pem)?),
        None => None,
    };
    let mut certs = CertChecks {
        cas: cas.as_deref(),
        seen: HashMap::new(),
    };
    let mut chain = Chain::genesis();
    let mut report = Report {
        files: files.clone(),
        records: 0,
        last_seq: 0,
        checkpoints: 0,
        signed_checkpoints: 0,
        last_signed_seq: None,
        chain_only: 0,
        signers: Vec::new(),
        ca_checked: cas.is_some(),
    };
    for (index, file) in files.iter().enumerate() {
        let named = seq_of_name(file);
        let mut lines = Lines::open(file)?;
        let mut first = true;
        while let Some(line) = lines.next_line()? {
            let text = match line {
                Line::Whole(text) => text,
                Line::Torn(n) => {
                    return Err(lines.bad(
                        None,
                        format!("{n} bytes without a final newline: the file was cut mid-record"),
                    ));
                }
            };
            let (record, _) = chain.check(&lines, &text)?;
            if first {
                first = false;
                if let Some(named) = named
                    && named != record.seq
                {
                    return Err(lines.bad(
                        Some(record.seq),
                        format!("the file is named for seq {named} but starts at seq {}", record.seq),
                    ));
                }
            }
            report.records += 1;
            report.last_seq = record.seq;
            if let Some(checkpoint) = &record.checkpoint {
                report.checkpoints += 1;
                if let Some(signer) = certs
                    .check(&record, checkpoint)
                    .map_err(|reason| lines.bad(Some(record.seq), reason))?
                {
                    report.signed_checkpoints += 1;
                    report.last_signed_seq = Some(record.seq);
                    chain.last_signed = record.seq;
                    if !report.signers.contains(&signer) {
                        report.signers.push(signer);
                    }
                }
            }
        }
        if first && index + 1 < files.len() {
            return Err(lines.bad(None, "an empty file in the middle of the log".into()));
        }
    }
    report.chain_only = report.last_seq - report.last_signed_seq.unwrap_or(0);
    Ok(report)
}

/// The CA certificates of a PEM file, DER.
fn parse_cas(pem: &[u8]) -> Result<Vec<Vec<u8>>, AuditError> {
    let mut cas = Vec::new();
    for item in Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| AuditError::Signer(format!("the CA PEM does not parse: {e}")))?;
        if item.label == "CERTIFICATE" {
            cas.push(item.contents);
        }
    }
    if cas.is_empty() {
        return Err(AuditError::Signer("the CA PEM holds no certificate".into()));
    }
    Ok(cas)
}

/// Checkpoint signature checks, with the certificate checks remembered.
struct CertChecks<'a> {
    cas: Option<&'a [Vec<u8>]>,
    /// Certificate (base64) → its identity, or why it is refused.
    seen: HashMap<String, Result<(Vec<u8>, String), String>>,
}

impl CertChecks<'_> {
    /// `Some(signer)` for a validly signed checkpoint, `None` for an
    /// unsigned one; the reason for a bad one.
    fn check(&mut self, record: &Record, checkpoint: &Checkpoint) -> Result<Option<String>, String> {
        let (signer, cert, signature) = match (&checkpoint.signer, &checkpoint.cert, &checkpoint.signature) {
            (None, None, None) => return Ok(None),
            (Some(s), Some(c), Some(g)) => (s, c, g),
            _ => return Err("a checkpoint must carry signer, cert and signature together, or none".into()),
        };
        let cas = self.cas;
        let (der, id) = self
            .seen
            .entry(cert.clone())
            .or_insert_with(|| check_cert(cert, cas))
            .clone()?;
        if &id != signer {
            return Err(format!(
                "the checkpoint names signer {signer} but its certificate is {id}"
            ));
        }
        if id != record.source {
            return Err(format!(
                "the checkpoint is signed by {id}, not by the log's source {}",
                record.source
            ));
        }
        if cas.is_some() {
            check_valid_at(&der, &record.time)?;
        }
        let signature = BASE64
            .decode(signature)
            .map_err(|_| "the checkpoint's signature is not base64".to_owned())?;
        let message = checkpoint_message(&record.source, checkpoint.seq, &checkpoint.hash);
        yrd_identity::verify_signature(&der, &message, &signature).map_err(|_| {
            format!(
                "the checkpoint's signature does not verify: it was forged, or the records it covers (up to seq {}) \
                 were altered and the chain recomputed",
                checkpoint.seq
            )
        })?;
        Ok(Some(id))
    }
}

/// A signer certificate's DER and identity, checked against the CAs.
fn check_cert(cert_b64: &str, cas: Option<&[Vec<u8>]>) -> Result<(Vec<u8>, String), String> {
    let der = BASE64
        .decode(cert_b64)
        .map_err(|_| "the checkpoint's certificate is not base64".to_owned())?;
    let id = yrd_identity::peer_id_from_der(&der)
        .map_err(|e| format!("the checkpoint's certificate names no mesh identity: {e}"))?
        .uri();
    if let Some(cas) = cas {
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| "the checkpoint's certificate does not parse".to_owned())?;
        let issued = cas.iter().any(|ca_der| {
            X509Certificate::from_der(ca_der).is_ok_and(|(_, ca)| {
                cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
        if !issued {
            return Err(format!(
                "the checkpoint's certificate ({id}) was not issued by the given CA"
            ));
        }
    }
    Ok((der, id))
}

/// Checks that a signer's certificate was valid when the checkpoint was
/// written.
fn check_valid_at(der: &[u8], time: &str) -> Result<(), String> {
    let when = parse_time(time).ok_or_else(|| format!("the checkpoint's time {time:?} is not RFC 3339"))?;
    let when =
        ASN1Time::from_timestamp(when.unix_timestamp()).map_err(|_| format!("the time {time:?} is out of range"))?;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|_| "the checkpoint's certificate does not parse".to_owned())?;
    if !cert.validity().is_valid_at(when) {
        return Err(format!("the checkpoint's certificate was not valid at {time}"));
    }
    Ok(())
}

/// The running state of a chain check, line after line and file after file.
pub(crate) struct Chain {
    /// The seq the next record must have (`None`: take the first as given).
    next_seq: Option<u64>,
    /// The hash the next record must chain to.
    prev: Option<Hash>,
    /// The seq of the last signed checkpoint, for the reasons given.
    last_signed: u64,
}

impl Chain {
    /// A chain from the start of a log: seq 1 after the zero hash.
    pub(crate) fn genesis() -> Self {
        Self {
            next_seq: Some(1),
            prev: Some(GENESIS),
            last_signed: 0,
        }
    }

    /// A chain that takes its first record's seq and `prev` as given (the
    /// last file of a log, when reopening).
    pub(crate) fn resume() -> Self {
        Self {
            next_seq: None,
            prev: None,
            last_signed: 0,
        }
    }

    /// Checks the line just read and moves on; returns the record and its
    /// hash, or the reason it is bad, placed at the line.
    pub(crate) fn check(&mut self, lines: &Lines, text: &str) -> Result<(Record, Hash), AuditError> {
        let (stated, json) = split_line(text).map_err(|reason| lines.bad(None, reason))?;
        let record: Record =
            serde_json::from_str(json).map_err(|e| lines.bad(None, format!("the record does not parse: {e}")))?;
        let seq = record.seq;
        let bad = |reason: String| lines.bad(Some(seq), reason);
        if let Some(expected) = self.next_seq {
            if seq > expected {
                return Err(bad(format!(
                    "seq {seq} where {expected} was expected: records {expected}..={} are missing (deleted or moved, \
                     or a file is missing from the series)",
                    seq - 1
                )));
            }
            if seq < expected {
                return Err(bad(format!(
                    "seq {seq} where {expected} was expected: a record was inserted, repeated or moved"
                )));
            }
        }
        let prev = unhex(&record.prev).ok_or_else(|| bad("`prev` is not a hash".into()))?;
        if let Some(expected) = self.prev
            && prev != expected
        {
            return Err(bad(
                "`prev` is not the hash of the record before it: that record or this one was replaced".into(),
            ));
        }
        let hash = chain_hash(&prev, json.as_bytes());
        if hex(&hash) != stated {
            return Err(bad("the hash does not match the record: the record was edited".into()));
        }
        match (&record.checkpoint, record.entry.kind == CHECKPOINT) {
            (Some(checkpoint), true) => {
                if checkpoint.seq + 1 != seq {
                    return Err(bad(format!(
                        "the checkpoint covers seq {}, not the record just before it",
                        checkpoint.seq
                    )));
                }
                if checkpoint.hash != record.prev {
                    return Err(bad(format!(
                        "the checkpoint covers seq {} with a hash the chain does not have: records {}..={} were \
                         altered and the chain recomputed",
                        checkpoint.seq,
                        self.last_signed + 1,
                        checkpoint.seq
                    )));
                }
            }
            (None, true) => return Err(bad("a checkpoint without its `checkpoint` object".into())),
            (Some(_), false) => return Err(bad("only a checkpoint record may carry a `checkpoint` object".into())),
            (None, false) => {}
        }
        self.next_seq = Some(seq + 1);
        self.prev = Some(hash);
        Ok((record, hash))
    }
}
