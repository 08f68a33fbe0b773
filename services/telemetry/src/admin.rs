//! The admin HTTP listener of a process: Prometheus metrics, liveness,
//! readiness, and the recent-span buffer that `yrdctl traces` reads.
//!
//! `/metrics`, `/healthz` and `/readyz` are open to whoever reaches the
//! listener. `/traces` shows what requests did, so it is guarded by
//! [`TracesAccess`]: open on a loopback address, refused on any other
//! unless `telemetry.traces_token_file` names a bearer token, which it then
//! requires (on loopback too).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::buffer::{SpanBuffer, TraceSummary, parse_trace_id};
use crate::{TelemetryConfig, TelemetryError, truncate_for_record};

/// The most traces `/traces?last=N` or `?slowest=N` returns.
pub const MAX_TRACES: usize = 1000;

/// The config key of the `/traces` token file, as refusals name it.
pub const TRACES_TOKEN_KEY: &str = "telemetry.traces_token_file";

/// The shortest token `/traces` accepts, in bytes (after trimming): a
/// guessable token is no guard.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest token file read, in bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The most of a caller's text a `400` answer quotes, in bytes.
const MAX_QUOTED_BYTES: usize = 64;

/// Who may read `/traces`.
#[derive(Clone)]
pub enum TracesAccess {
    /// Whoever reaches the listener: a loopback address and no token.
    Open,
    /// Callers sending `Authorization: Bearer <token>`, compared in
    /// constant time.
    Token(Arc<[u8]>),
    /// Nobody: the listener is not on loopback and no token is configured.
    Refused,
}

impl fmt::Debug for TracesAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.write_str(match self {
            Self::Open => "Open",
            Self::Token(_) => "Token(..)",
            Self::Refused => "Refused",
        })
    }
}

impl TracesAccess {
    /// The access of a listener on `addr`: the token's when there is one,
    /// else open on a loopback address and refused on any other.
    pub fn for_listener(addr: SocketAddr, token: Option<Vec<u8>>) -> Self {
        match token {
            Some(token) => Self::Token(token.into()),
            None if addr.ip().is_loopback() => Self::Open,
            None => Self::Refused,
        }
    }

    /// Reads the token of `telemetry.traces_token_file`: the file's text
    /// trimmed, at least [`MIN_TOKEN_BYTES`]. The path must name a regular
    /// file (not a FIFO or a device such as `/dev/zero`), and at most 4096
    /// bytes are read from it, so that a file that grows while it is read
    /// cannot make the read last for ever. Errors name the key and the
    /// file, never its content.
    pub async fn read_token(path: &Path) -> Result<Vec<u8>, TelemetryError> {
        let err = |reason: String| TelemetryError::Config {
            key: TRACES_TOKEN_KEY,
            reason: format!("{}: {reason}", path.display()),
        };
        let not_regular = || err("is not a regular file; a token file must be one".to_owned());
        // Opening a FIFO waits for a writer: look at the path first, then
        // check the opened file again, which is what is read.
        let before = tokio::fs::metadata(path).await.map_err(|e| err(e.to_string()))?;
        if !before.is_file() {
            return Err(not_regular());
        }
        let file = tokio::fs::File::open(path).await.map_err(|e| err(e.to_string()))?;
        let opened = file.metadata().await.map_err(|e| err(e.to_string()))?;
        if !opened.is_file() {
            return Err(not_regular());
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| err(e.to_string()))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_TOKEN_FILE_BYTES {
            return Err(err(format!(
                "is longer than the limit of {MAX_TOKEN_FILE_BYTES} bytes for a token file"
            )));
        }
        let token = bytes.trim_ascii();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(err(format!(
                "the token is {} bytes, shorter than the minimum of {MIN_TOKEN_BYTES}",
                token.len()
            )));
        }
        if token.iter().any(|b| !b.is_ascii_graphic()) {
            return Err(err(
                "the token has a space or a character that is not visible ASCII; an HTTP header cannot carry it".into(),
            ));
        }
        Ok(token.to_vec())
    }

    /// `None` when a request with `headers` may read `/traces`, else the
    /// refusal to send.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        match self {
            Self::Open => None,
            Self::Refused => Some(
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "/traces is not served on an admin address other than loopback without a token: \
                         set {TRACES_TOKEN_KEY} (or listen on loopback)"
                    ),
                )
                    .into_response(),
            ),
            Self::Token(token) => {
                let presented = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| bearer_credentials(v.as_bytes()));
                match presented {
                    Some(presented) if constant_time_eq(presented, token) => None,
                    _ => Some(
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            format!("/traces needs `Authorization: Bearer <the token in {TRACES_TOKEN_KEY}>`"),
                        )
                            .into_response(),
                    ),
                }
            }
        }
    }
}

/// The credentials of an `Authorization` value of the `Bearer` scheme, the
/// scheme's name in any case (RFC 7235 makes it case-insensitive) and
/// followed by a space, trimmed; `None` for any other scheme.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"Bearer";
    let scheme = value.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    value.get(SCHEME.len()..)?.strip_prefix(b" ").map(<[u8]>::trim_ascii)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths
/// only (a token's length is not its secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// How many traces `/traces` lists when asked for nothing in particular.
const DEFAULT_LAST: usize = 20;

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the admin endpoint serves.
#[derive(Clone)]
pub struct AdminState {
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Answers `/traces`.
    pub buffer: SpanBuffer,
    /// Answers `/readyz`: whether the process should receive traffic.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Who may read `/traces`.
    pub traces_access: TracesAccess,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("buffer", &self.buffer)
            .field("traces_access", &self.traces_access)
            .finish_non_exhaustive()
    }
}

/// Binds `addr` and serves, until `signal` resolves:
///
/// - `GET /metrics`: Prometheus text;
/// - `GET /healthz`: 200 `ok` while the process runs;
/// - `GET /readyz`: 200 when `ready()` says so, 503 otherwise;
/// - `GET /traces?trace_id=ID`: the trace's spans in this process, a JSON
///   array of [`crate::SpanRecord`];
/// - `GET /traces?last=N` or `?slowest=N` (N ≤ [`MAX_TRACES`], default
///   `last=20`): a JSON array of [`crate::TraceSummary`].
///
/// `/traces` answers as `state.traces_access` says: 403 when refused, 401
/// without the right bearer token.
///
/// Returns the bound address (the real port when `addr` has port 0) and
/// the server task.
pub async fn serve_admin(
    addr: SocketAddr,
    state: AdminState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Small responses on loopback wait on Nagle's algorithm without it
    // (DESIGN.md, performance notes).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/traces", get(traces))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
            tracing::warn!(%error, "admin endpoint stopped");
        }
    });
    Ok((local, task))
}

/// A running admin listener; stops when dropped or stopped.
#[derive(Debug)]
pub struct AdminHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AdminHandle {
    /// Stops the listener.
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves this process's admin endpoint on `addr` (see [`serve_admin`]),
/// with `ready` deciding `/readyz` and `telemetry.traces_token_file` (read
/// here) guarding `/traces` (see [`TracesAccess::for_listener`]).
pub async fn start_admin(
    addr: SocketAddr,
    telemetry: &TelemetryConfig,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<AdminHandle, crate::TelemetryError> {
    let token = match &telemetry.traces_token_file {
        Some(path) => Some(TracesAccess::read_token(path).await?),
        None => None,
    };
    let access = TracesAccess::for_listener(addr, token);
    if matches!(access, TracesAccess::Refused) {
        tracing::warn!(
            %addr,
            "the admin endpoint is not on loopback and {TRACES_TOKEN_KEY} is not set: /traces answers 403"
        );
    }
    let state = AdminState::for_process(ready, access)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (bound, _task) = serve_admin(addr, state, async {
        let _ = rx.await;
    })
    .await
    .map_err(|e| crate::TelemetryError::Admin(format!("{addr}: {e}")))?;
    Ok(AdminHandle {
        addr: bound,
        stop: Some(tx),
    })
}

impl AdminState {
    /// The state of this process: its metrics recorder (installed on first
    /// use) and its recent-span buffer (empty when telemetry is not
    /// installed), with `ready` deciding `/readyz` and `traces_access`
    /// guarding `/traces`.
    pub fn for_process(
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
        traces_access: TracesAccess,
    ) -> Result<Self, crate::TelemetryError> {
        Ok(Self {
            prometheus: crate::metrics_handle()?,
            buffer: crate::global_buffer().unwrap_or_else(|| crate::SpanBuffer::new(0)),
            ready,
            traces_access,
        })
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = Vec::new();
    if let Err(error) = state.prometheus.render_to_write(&mut text) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering metrics: {error}")).into_response();
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if (state.ready)() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// The `/traces` query string: one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TracesQuery {
    trace_id: Option<String>,
    last: Option<usize>,
    slowest: Option<usize>,
}

async fn traces(
    State(state): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<TracesQuery>, QueryRejection>,
) -> Response {
    if let Some(refusal) = state.traces_access.refusal(&headers) {
        return refusal;
    }
    let query = match query {
        Ok(Query(query)) => query,
        // The rejection quotes the query string: cut.
        Err(rejection) => return bad_request(truncate_for_record(&rejection.body_text(), 256).into_owned()),
    };
    match (query.trace_id, query.last, query.slowest) {
        (Some(id), None, None) => {
            if parse_trace_id(&id).is_none() {
                return bad_request(format!(
                    "trace_id {:?} is not 32 hexadecimal digits",
                    truncate_for_record(&id, MAX_QUOTED_BYTES)
                ));
            }
            Json(state.buffer.spans_of_trace(&id)).into_response()
        }
        (None, last, None) => limited("last", last.unwrap_or(DEFAULT_LAST), |n| state.buffer.recent_traces(n)),
        (None, None, Some(n)) => limited("slowest", n, |n| state.buffer.slowest_traces(n)),
        _ => bad_request("give one of trace_id, last or slowest".to_owned()),
    }
}

/// Answers `list(n)` as JSON, or 400 naming the limit when `n` is over it.
fn limited(name: &str, n: usize, list: impl FnOnce(usize) -> Vec<TraceSummary>) -> Response {
    if n > MAX_TRACES {
        bad_request(format!("{name}={n} is more than the limit of {MAX_TRACES}"))
    } else {
        Json(list(n)).into_response()
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-of-32-bytes-0123456";

    #[tokio::test]
    async fn an_oversized_token_file_is_refused_naming_key_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.token");
        std::fs::write(&path, "a".repeat(5000)).unwrap();
        let err = TracesAccess::read_token(&path).await.unwrap_err().to_string();
        assert!(err.contains(TRACES_TOKEN_KEY), "{err}");
        assert!(
            err.contains("is longer than the limit of 4096 bytes for a token file"),
            "{err}"
        );
        assert!(!err.contains("aaaa"), "the content is never shown: {err}");

        // Exactly the limit is read, and accepted.
        std::fs::write(&path, "a".repeat(4096)).unwrap();
        assert_eq!(TracesAccess::read_token(&path).await.unwrap().len(), 4096);
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        assert_eq!(TracesAccess::read_token(&path).await.unwrap(), TOKEN.as_bytes());
    }

    #[tokio::test]
    async fn a_token_path_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = TracesAccess::read_token(dir.path()).await.unwrap_err().to_string();
        assert!(
            err.contains(TRACES_TOKEN_KEY) && err.contains("not a regular file"),
            "{err}"
        );
    }

    /// A FIFO reports a length of 0 and gives whatever its writer sends:
    /// refused before anything is read from it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_fifo_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // Read and write, so that opening does not wait for a reader; far
        // more than the limit is waiting in the pipe. The writer goes away
        // later, so that a reader of the FIFO would see its end.
        let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
        std::io::Write::write_all(&mut writer, "a".repeat(8192).as_bytes()).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            drop(writer);
        });
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), TracesAccess::read_token(&fifo))
            .await
            .unwrap();
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains(TRACES_TOKEN_KEY) && err.contains("not a regular file"),
            "{err}"
        );
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_matches_in_any_case() {
        let access = TracesAccess::Token(TOKEN.as_bytes().into());
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let headers = authorization(&format!("{scheme} {TOKEN}"));
            assert!(access.refusal(&headers).is_none(), "{scheme}");
        }
        for value in [
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            format!("Bearerx {TOKEN}"),
            format!("bearer {TOKEN}x"),
            "Bearer".to_owned(),
            "bear".to_owned(),
        ] {
            let refusal = access.refusal(&authorization(&value));
            assert_eq!(refusal.map(|r| r.status()), Some(StatusCode::UNAUTHORIZED), "{value}");
        }
        assert!(access.refusal(&HeaderMap::new()).is_some());
    }
}
