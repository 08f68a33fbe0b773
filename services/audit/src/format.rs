//! The line format, file names and the checks each line gets: shared by
//! the writer (reopening), the verifier and the reader.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::record::Record;

/// The longest line a log may hold, hash and newline included. The writer
/// refuses a larger record; readers stop at a longer line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A SHA-256 hash.
pub(crate) type Hash = [u8; 32];

/// The `prev` of a log's first record.
pub(crate) const GENESIS: Hash = [0; 32];

/// Length of a hash in hex.
const HASH_HEX: usize = 64;

/// Prefix and suffix of a log file's name.
const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// The name of the file whose first record has `first_seq`:
/// `audit-<20 digits>.jsonl`, so that names sort in log order.
pub fn file_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{SUFFIX}")
}

/// The first seq a log file's name announces, if it is one.
pub(crate) fn seq_of_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files of a directory, in log order (other files are ignored).
pub(crate) fn log_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, &e))?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(|e| AuditError::io(&path, &e))?.is_file();
        if let Some(seq) = seq_of_name(&path)
            && is_file
        {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Files of `paths`, in order: a directory's log files in log order, a file
/// as given.
pub(crate) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| AuditError::io(path, &e))?;
        if meta.is_dir() {
            files.extend(log_files(path)?.into_iter().map(|(_, p)| p));
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Hex of a hash.
pub(crate) fn hex(hash: &Hash) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(HASH_HEX), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A hash from 64 lowercase hex digits.
pub(crate) fn unhex(text: &str) -> Option<Hash> {
    if text.len() != HASH_HEX {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        hash[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

/// The chain hash of a record: SHA-256 over the previous hash and the JSON.
pub(crate) fn chain_hash(prev: &Hash, json: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(json);
    h.finalize().into()
}

/// What a checkpoint's signature covers: a fixed tag, the log's source,
/// the covered seq and hash, one per line.
pub fn checkpoint_message(source: &str, seq: u64, hash_hex: &str) -> Vec<u8> {
    format!("yrd-audit-checkpoint-v1\n{source}\n{seq}\n{hash_hex}\n").into_bytes()
}

/// Splits a stored line (without its newline) into its stated hash and
/// record, parsed. The error is a reason, for the caller to place.
pub fn parse_line(line: &str) -> Result<(String, Record), String> {
    let (hash, json) = split_line(line)?;
    let record = serde_json::from_str(json).map_err(|e| format!("the record does not parse: {e}"))?;
    Ok((hash.to_owned(), record))
}

/// A line's hash and JSON parts.
pub(crate) fn split_line(line: &str) -> Result<(&str, &str), String> {
    let (hash, json) = line
        .split_once(' ')
        .ok_or_else(|| "not `<hash> <json>`: no space".to_owned())?;
    if unhex(hash).is_none() {
        return Err("the hash is not 64 lowercase hex digits".into());
    }
    Ok((hash, json))
}

/// One line read from a file.
pub(crate) enum Line {
    /// A whole line, without its newline.
    Whole(String),
    /// Bytes after the last newline: a torn write.
    Torn(usize),
}

/// Reads a file's lines, each bounded by [`MAX_LINE_BYTES`].
pub(crate) struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Number of the line last read, from 1.
    pub(crate) number: u64,
    /// Bytes of whole lines read so far.
    pub(crate) offset: u64,
}

impl Lines {
    /// Opens `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io(path, &e))?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(256 * 1024, file),
            buf: Vec::new(),
            number: 0,
            offset: 0,
        })
    }

    /// The next line, `None` at the end of the file.
    pub(crate) fn next_line(&mut self) -> Result<Option<Line>, AuditError> {
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| AuditError::io(&self.path, &e))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.last() != Some(&b'\n') {
            if n as u64 == limit {
                return Err(self.bad(
                    None,
                    format!("the line exceeds the limit max_line_bytes = {MAX_LINE_BYTES}"),
                ));
            }
            return Ok(Some(Line::Torn(n)));
        }
        self.offset += n as u64;
        self.buf.pop();
        let text = std::str::from_utf8(&self.buf).map_err(|_| self.bad(None, "the line is not UTF-8".into()))?;
        Ok(Some(Line::Whole(text.to_owned())))
    }

    /// An error at the line last read.
    pub(crate) fn bad(&self, seq: Option<u64>, reason: String) -> AuditError {
        AuditError::BadRecord {
            file: self.path.clone(),
            line: self.number,
            seq,
            reason,
        }
    }
}

/// The time now as the log writes it: RFC 3339 UTC with milliseconds.
pub(crate) fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// A record's time, parsed.
pub(crate) fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_names_sort() {
        let h = chain_hash(&GENESIS, b"{}");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex(&hex(&h).to_uppercase()), None);
        assert_eq!(file_name(42), "audit-00000000000000000042.jsonl");
        assert_eq!(seq_of_name(Path::new(&file_name(42))), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(seq_of_name(Path::new("audit-1.jsonl")), None);
        let t = now_text();
        assert_eq!(t.len(), "2026-12-02T04:44:55.123Z".len(), "{t}");
        assert!(parse_time(&t).is_some(), "{t}");
    }
}
