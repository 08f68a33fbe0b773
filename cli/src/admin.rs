//! The admin endpoints of the mesh's processes (`/traces`, served by axum
//! in plain HTTP): their addresses as profiles name them, and a `GET` over
//! hyper's HTTP/1.1 client with a timeout and a response-size limit.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest response body read: `/traces` answers are at most a
/// thousand summaries or one trace's spans.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An admin endpoint's address, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    /// The URL as written, without a trailing `/`.
    pub url: String,
    /// The host (IPv6 without brackets).
    pub host: String,
    /// The port (80 when the URL names none).
    pub port: u16,
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
        let authority = uri.authority().ok_or_else(|| format!("{text:?} names no host"))?;
        if authority.as_str().contains('@') {
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
        })
    }
}

impl fmt::Display for AdminUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// An admin endpoint's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    /// The status, such as 200 OK.
    pub status: StatusCode,
    /// The whole body.
    pub body: Bytes,
}

impl AdminResponse {
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

/// `GET`s `path` (with its query string) from `url`, the whole exchange —
/// connect, send, read the body to its end — within `timeout`, the body at
/// most [`MAX_RESPONSE_BYTES`].
pub async fn get(url: &AdminUrl, path: &str, timeout: Duration) -> anyhow::Result<AdminResponse> {
    get_limited(url, path, timeout, MAX_RESPONSE_BYTES).await
}

/// [`get`] with a body limit of `max_bytes`.
async fn get_limited(url: &AdminUrl, path: &str, timeout: Duration, max_bytes: usize) -> anyhow::Result<AdminResponse> {
    let uri: Uri = format!("{}{path}", url.url)
        .parse()
        .with_context(|| format!("{path:?} is not a path of {url}"))?;
    let request = http::Request::get(uri)
        .header(USER_AGENT, concat!("yrdctl/", env!("CARGO_PKG_VERSION")))
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    // One request per endpoint and command: nothing to pool for.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new());
    let exchange = async {
        let response = client.request(request).await.context("no answer")?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, max_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                bail!("the response is larger than {max_bytes} bytes")
            }
            Err(e) => return Err(anyhow::Error::from_boxed(e).context("reading the response")),
        };
        Ok(AdminResponse {
            status: parts.status,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no complete answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_are_checked() {
        let u = AdminUrl::parse("http://127.0.0.1:50080/").unwrap();
        assert_eq!(
            (u.url.as_str(), u.host.as_str(), u.port),
            ("http://127.0.0.1:50080", "127.0.0.1", 50080)
        );
        let u = AdminUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (u.url.as_str(), u.host.as_str(), u.port),
            ("http://[::1]:9000", "::1", 9000)
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
    fn error_bodies_are_excerpted() {
        let r = AdminResponse {
            status: StatusCode::BAD_REQUEST,
            body: Bytes::from_static(b"  last=5000 is more than the limit of 1000\n"),
        };
        assert_eq!(r.body_excerpt(100), "last=5000 is more than the limit of 1000");
        assert_eq!(r.body_excerpt(4), "last…");
    }

    /// An axum server on a free loopback port, as the processes' admin
    /// listeners are: its URL.
    async fn serve(router: axum::Router) -> AdminUrl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = AdminUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    #[tokio::test]
    async fn a_real_exchange() {
        use axum::extract::RawQuery;
        use axum::http::HeaderMap;
        use axum::routing::get as route;

        let router = axum::Router::new()
            .route(
                "/traces",
                route(|RawQuery(query): RawQuery, headers: HeaderMap| async move {
                    let agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
                    axum::Json(serde_json::json!({ "query": query, "agent": agent }))
                }),
            )
            // A streamed body of unknown length: chunked on the wire.
            .route(
                "/chunked",
                route(|| async {
                    let chunks = ["[1,", "2,", "3]"]
                        .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from_static(c.as_bytes())));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/refused",
                route(|| async { (StatusCode::BAD_REQUEST, "last=5000 is more than the limit of 1000") }),
            )
            .route("/big", route(|| async { "x".repeat(4096) }));
        let url = serve(router).await;
        let timeout = Duration::from_secs(5);

        let r = get(&url, "/traces?last=1", timeout).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["query"], "last=1");
        assert!(json["agent"].as_str().unwrap().starts_with("yrdctl/"), "{json}");

        let r = get(&url, "/chunked", timeout).await.unwrap();
        assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"[1,2,3]"[..]));

        let r = get(&url, "/refused", timeout).await.unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body_excerpt(200), "last=5000 is more than the limit of 1000");

        // Past the size limit: refused, naming the limit.
        let e = get_limited(&url, "/big", timeout, 1000).await.unwrap_err();
        assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");
        assert_eq!(get_limited(&url, "/big", timeout, 4096).await.unwrap().body.len(), 4096);
    }

    #[tokio::test]
    async fn silence_and_refusal_are_errors() {
        // A listener that accepts but never answers: the timeout ends the wait.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = AdminUrl::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let e = get(&url, "/traces", Duration::from_millis(100)).await.unwrap_err();
        assert!(e.to_string().contains("within 100ms"), "{e}");
        drop(silent);

        // A port nobody listens on: bind, note the port, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            AdminUrl::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap()
        };
        let e = get(&closed, "/traces", Duration::from_secs(2)).await.unwrap_err();
        let text = crate::error_text(&e);
        assert!(text.contains("refused"), "{text}");
    }
}
