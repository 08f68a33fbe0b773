//! The admin HTTP listener of a process: Prometheus metrics, liveness,
//! readiness, and the recent-span buffer that `yrdctl traces` reads.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::buffer::{SpanBuffer, TraceSummary, parse_trace_id};

/// The most traces `/traces?last=N` or `?slowest=N` returns.
pub const MAX_TRACES: usize = 1000;

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
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("buffer", &self.buffer)
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
/// with `ready` deciding `/readyz`.
pub async fn start_admin(
    addr: SocketAddr,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<AdminHandle, crate::TelemetryError> {
    let state = AdminState::for_process(ready)?;
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
    /// installed), with `ready` deciding `/readyz`.
    pub fn for_process(ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Result<Self, crate::TelemetryError> {
        Ok(Self {
            prometheus: crate::metrics_handle()?,
            buffer: crate::global_buffer().unwrap_or_else(|| crate::SpanBuffer::new(0)),
            ready,
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

async fn traces(State(state): State<AdminState>, query: Result<Query<TracesQuery>, QueryRejection>) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    match (query.trace_id, query.last, query.slowest) {
        (Some(id), None, None) => {
            if parse_trace_id(&id).is_none() {
                return bad_request(format!("trace_id {id:?} is not 32 hexadecimal digits"));
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
