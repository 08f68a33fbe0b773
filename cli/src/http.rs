//! A minimal HTTP/1.1 client for the admin endpoints of the mesh's
//! processes (`/traces`, served by axum): one `GET` per connection with
//! `Connection: close`, the whole exchange under a timeout.
//!
//! This is loopback (or at least in-cluster) operator traffic in plain
//! HTTP, so a full client crate would be all weight and no benefit: the
//! parser below accepts what a conforming server sends for a `GET` —
//! a `Content-Length` body, a chunked body, or a body up to the end of the
//! connection — and refuses anything else with a clear error.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// The largest response read, headers included: `/traces` answers are at
/// most a thousand summaries or one trace's spans.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// An admin endpoint's address, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    /// The URL as written, without a trailing `/`.
    pub url: String,
    /// The host to connect to (IPv6 without brackets).
    pub host: String,
    /// The port (80 when the URL names none).
    pub port: u16,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
}

impl AdminUrl {
    /// Parses and checks `http://host[:port][/]`: the admin listeners speak
    /// plain HTTP and serve at the root, so any other scheme, a path, a
    /// query or credentials are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim().trim_end_matches('/');
        let uri: Uri = trimmed.parse().map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{text:?}: admin endpoints serve plain HTTP (keep them on loopback or a private network); use http://"
                ));
            }
            _ => return Err(format!("{text:?} must be http://host:port")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} names no host"))?
            .as_str()
            .to_owned();
        if authority.contains('@') {
            return Err(format!("{text:?}: credentials in the URL are not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?}: give only http://host:port; yrdctl adds the path (/traces)"
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{text:?} names no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self {
            url: trimmed.to_owned(),
            host,
            port: uri.port_u16().unwrap_or(80),
            authority,
        })
    }
}

impl fmt::Display for AdminUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, such as 200.
    pub status: u16,
    /// The reason phrase, such as `OK` (may be empty).
    pub reason: String,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, lossy, trimmed and cut to `max` characters: for
    /// error messages.
    pub fn body_excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut excerpt: String = text.chars().take(max).collect();
        if text.chars().count() > max {
            excerpt.push('…');
        }
        excerpt
    }
}

/// The request text of a `GET` of `path` (with its query string) from `url`.
pub fn request_text(url: &AdminUrl, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: yrdctl/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        url.authority,
        env!("CARGO_PKG_VERSION")
    )
}

/// `GET`s `path` from `url`, the whole exchange (connect, send, read to the
/// end) within `timeout`, and parses the response; any status is returned.
pub async fn get(url: &AdminUrl, path: &str, timeout: Duration) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .context("cannot connect")?;
        // One small request: do not wait on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        stream
            .write_all(request_text(url, path).as_bytes())
            .await
            .context("sending the request")?;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .context("reading the response")?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_RESPONSE_BYTES {
            bail!("the response is larger than {MAX_RESPONSE_BYTES} bytes");
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no complete answer within {timeout:?}"))??;
    parse_response(&bytes)
}

/// Parses a whole HTTP/1.x response read up to the end of the connection:
/// the status line, the headers and the body — `Transfer-Encoding:
/// chunked` decoded, `Content-Length` honoured (a shorter body is an
/// error), otherwise everything up to the end. Interim 1xx responses are
/// skipped. Other transfer codings are refused.
pub fn parse_response(bytes: &[u8]) -> anyhow::Result<HttpResponse> {
    let mut rest = bytes;
    loop {
        let (response, after) = parse_one(rest)?;
        if (100..200).contains(&response.status) && response.status != 101 {
            rest = after;
            continue;
        }
        return Ok(response);
    }
}

/// One response from the start of `bytes`, and what follows it (only
/// meaningful after an interim response, which has no body).
fn parse_one(bytes: &[u8]) -> anyhow::Result<(HttpResponse, &[u8])> {
    if bytes.is_empty() {
        bail!("the server closed the connection without answering");
    }
    let end = find(bytes, b"\r\n\r\n").context("the response headers are incomplete")?;
    let head = std::str::from_utf8(&bytes[..end]).context("the response headers are not text")?;
    let mut body = &bytes[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (status, reason) = parse_status_line(status_line)?;
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            bail!("folded header lines are not supported: {line:?}");
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("not a header line: {line:?}"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            bail!("not a header name: {name:?}");
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = HttpResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    // Interim responses, 204 and 304 have no body whatever the headers say.
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((response, body));
    }
    let codings: Vec<String> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if !codings.is_empty() {
        if codings != ["chunked"] {
            bail!("unsupported transfer coding {:?} (only chunked is)", codings.join(", "));
        }
        response.body = decode_chunked(body)?;
        return Ok((response, &[]));
    }
    let lengths: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            bail!("conflicting content-length headers: {}", lengths.join(", "));
        }
        let length: usize = first
            .parse()
            .ok()
            .filter(|_| first.bytes().all(|b| b.is_ascii_digit()))
            .with_context(|| format!("content-length {first:?} is not a number"))?;
        if body.len() < length {
            bail!("the body ended after {} of its {length} bytes", body.len());
        }
        response.body = body[..length].to_vec();
        body = &body[length..];
        return Ok((response, body));
    }
    // No length: the body runs to the end of the connection.
    response.body = body.to_vec();
    Ok((response, &[]))
}

/// `HTTP/1.1 200 OK` → (200, "OK").
fn parse_status_line(line: &str) -> anyhow::Result<(u16, String)> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {:?}", cut(line, 80));
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        bail!("bad status code in {:?}", cut(line, 80));
    }
    let status: u16 = code
        .parse()
        .with_context(|| format!("bad status code in {:?}", cut(line, 80)))?;
    Ok((status, reason.trim().to_owned()))
}

/// Removes the chunked transfer coding: `size[;ext]\r\n data\r\n ...
/// 0\r\n [trailers]\r\n`.
pub fn decode_chunked(mut bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n").context("a chunk size line is incomplete")?;
        let line = std::str::from_utf8(&bytes[..line_end]).context("a chunk size line is not text")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = if !size_text.is_empty() && size_text.len() <= 15 && size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            usize::from_str_radix(size_text, 16).context("a chunk size does not fit")?
        } else {
            bail!("bad chunk size line {:?}", cut(line, 40));
        };
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // Trailers, if any, up to an empty line.
            loop {
                let end = find(bytes, b"\r\n").context("the chunked body's trailer is incomplete")?;
                if end == 0 {
                    return Ok(body);
                }
                bytes = &bytes[end + 2..];
            }
        }
        if bytes.len() < size + 2 {
            bail!("a chunk of {size} bytes is cut short");
        }
        body.extend_from_slice(&bytes[..size]);
        if &bytes[size..size + 2] != b"\r\n" {
            bail!("a chunk of {size} bytes is not followed by CRLF");
        }
        bytes = &bytes[size + 2..];
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// At most `max` characters of `text`.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_are_checked() {
        let u = AdminUrl::parse("http://127.0.0.1:50080/").unwrap();
        assert_eq!(
            (u.url.as_str(), u.host.as_str(), u.port, u.authority.as_str()),
            ("http://127.0.0.1:50080", "127.0.0.1", 50080, "127.0.0.1:50080")
        );
        let u = AdminUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        assert_eq!(AdminUrl::parse("http://gateway.local").unwrap().port, 80);
        for (bad, needle) in [
            ("https://127.0.0.1:50080", "plain HTTP"),
            ("127.0.0.1:50080", "http://host:port"),
            ("ftp://x:1", "http://host:port"),
            ("http://127.0.0.1:50080/traces", "adds the path"),
            ("http://127.0.0.1:50080/?last=1", "adds the path"),
            ("http://u:p@127.0.0.1:50080", "credentials"),
            ("http://exa mple:1", "not a URL"),
        ] {
            let e = AdminUrl::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn requests_close_the_connection() {
        let u = AdminUrl::parse("http://127.0.0.1:50080").unwrap();
        let text = request_text(&u, "/traces?last=5");
        assert!(
            text.starts_with("GET /traces?last=5 HTTP/1.1\r\nHost: 127.0.0.1:50080\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nConnection: close\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn content_length_bodies() {
        // What axum sends for `Json(...)`: a known length.
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 7\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n[1,2,3]";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("content-length"), Some("7"));
        assert_eq!(r.body, b"[1,2,3]");
        // Extra bytes after the declared length are not part of the body.
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokXX")
                .unwrap()
                .body,
            b"ok"
        );
        let e = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").unwrap_err();
        assert!(e.to_string().contains("5 of its 10"), "{e}");
        let e = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc").unwrap_err();
        assert!(e.to_string().contains("conflicting"), "{e}");
        let e = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc").unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn error_statuses_keep_their_body() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 40\r\n\r\nlast=5000 is more than the limit of 1000";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (400, "Bad Request"));
        assert_eq!(r.body_excerpt(100), "last=5000 is more than the limit of 1000");
        assert_eq!(r.body_excerpt(4), "last…");
        let r = parse_response(b"HTTP/1.0 503 \r\n\r\nnot ready").unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (503, "", &b"not ready"[..])
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: application/json\r\n\r\n4\r\n[1,2\r\nA;name=value\r\n,3,4,5,6,7\r\n1\r\n]\r\n0\r\nx-trailer: 1\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.body, b"[1,2,3,4,5,6,7]");
        for (bad, needle) in [
            (&b"4\r\nab"[..], "cut short"),
            (b"4\r\nabcdXX0\r\n\r\n", "not followed by CRLF"),
            (b"zz\r\nab\r\n0\r\n\r\n", "bad chunk size"),
            (b"2\r\nab\r\n", "incomplete"),
            (b"0\r\n", "trailer is incomplete"),
            (b"ffffffffffffffffff\r\n", "bad chunk size"),
        ] {
            let e = decode_chunked(bad).unwrap_err();
            assert!(
                e.to_string().contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("unsupported transfer coding"), "{e}");
    }

    #[test]
    fn other_shapes() {
        // No length: the body runs to the end of the connection.
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nall of it").unwrap().body,
            b"all of it"
        );
        // An interim response is skipped.
        let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        assert!(
            parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap()
                .body
                .is_empty()
        );
        for (bad, needle) in [
            (&b""[..], "without answering"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", "incomplete"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
            (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x response"),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status code"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "not a header line"),
            (b"HTTP/1.1 200 OK\r\na: b\r\n  folded\r\n\r\n", "folded"),
        ] {
            let e = parse_response(bad).unwrap_err();
            assert!(
                e.to_string().contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn a_real_exchange() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = AdminUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&request, b"\r\n\r\n").is_none() {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        let r = get(&url, "/traces?last=1", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /traces?last=1 HTTP/1.1\r\n"), "{request}");

        // A listener that never answers: the timeout ends the wait.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = AdminUrl::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let e = get(&url, "/traces", Duration::from_millis(100)).await.unwrap_err();
        assert!(e.to_string().contains("within"), "{e}");
        drop(silent);
    }
}
