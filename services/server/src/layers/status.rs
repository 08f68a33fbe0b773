//! The status layer: for every call — unary or streaming, answered,
//! refused by an interceptor or failed in validation — the gRPC status is
//! recorded once, when it is known: on the request's server span and in the
//! request counter and latency histogram. A stream's status is known at its
//! end (its trailers); a stream the caller abandons counts as `CANCELLED`.
//!
//! The layer also makes the server span ([`RequestSpan`]) and keeps it open
//! until the status is recorded, so that the span covers the whole stream
//! and every span a handler opens is its child.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use crate::RequestSpan;

/// The labels of a call whose path no route serves: the path is the
/// caller's text, and as a label it would let any caller mint new series.
const UNKNOWN: &str = "unknown";

/// Makes the server span of every request and records every call's status.
#[derive(Debug, Clone, Copy)]
pub struct StatusLayer {
    span: RequestSpan,
}

impl StatusLayer {
    /// A layer making each request's span with `span`.
    pub fn new(span: RequestSpan) -> Self {
        Self { span }
    }
}

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner, span: self.span }
    }
}

/// The service [`StatusLayer`] makes.
#[derive(Debug, Clone)]
pub struct StatusService<S> {
    inner: S,
    span: RequestSpan,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for StatusService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<StatusBody<ResBody>>;
    type Error = S::Error;
    type Future = StatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let bodyless = http::Request::from_parts(parts, ());
        let span = (self.span)(&bodyless);
        let (parts, ()) = bodyless.into_parts();
        let call = Call {
            path: parts.uri.path().to_owned(),
            started: Instant::now(),
            span,
            recorded: false,
        };
        let req = http::Request::from_parts(parts, body);
        let inner = call.span.in_scope(|| self.inner.call(req));
        StatusFuture {
            inner,
            call: Some(call),
        }
    }
}

/// One call whose status is not recorded yet. Dropped unrecorded, it
/// records `CANCELLED`: the caller went away (or the server dropped the
/// call) before a status was sent.
#[derive(Debug)]
struct Call {
    path: String,
    started: Instant,
    span: tracing::Span,
    recorded: bool,
}

impl Call {
    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        yrd_telemetry::record_status(&self.span, code);
        let (service, method) = match code {
            Code::Unimplemented => (UNKNOWN, UNKNOWN),
            _ => yrd_telemetry::rpc_parts(&self.path),
        };
        yrd_telemetry::request_done(service, method, code, self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

/// The `grpc-status` in a header or trailer map, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(tonic::Status::GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

pin_project_lite::pin_project! {
    /// The response future of [`StatusService`].
    pub struct StatusFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for StatusFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<http::Response<StatusBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The handler runs inside the request's span: its spans are children.
        let span = this
            .call
            .as_ref()
            .map(|c| c.span.clone())
            .unwrap_or_else(tracing::Span::none);
        let response = ready!(span.in_scope(|| this.inner.poll(cx)));
        let mut call = this.call.take();
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                // Not a gRPC answer at all: hyper resets the stream.
                if let Some(c) = call.as_mut() {
                    c.record(Code::Unknown);
                }
                return Poll::Ready(Err(e));
            }
        };
        // A status in the headers is a trailers-only answer: an error
        // returned before any message (validation, authorization, an
        // unknown method). Without one, the status comes at the body's end.
        if let Some(c) = call.as_mut() {
            match grpc_status(response.headers()) {
                Some(code) => c.record(code),
                None if response.body().is_end_stream() => c.record(Code::Unknown),
                None => {}
            }
        }
        let call = call.filter(|c| !c.recorded);
        Poll::Ready(Ok(response.map(|inner| StatusBody { inner, call })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call's status from its trailers.
    pub struct StatusBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> Body for StatusBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(mut call) = this.call.take() {
            match &frame {
                Some(Ok(f)) => match f.trailers_ref() {
                    Some(trailers) => call.record(grpc_status(trailers).unwrap_or(Code::Unknown)),
                    // A message: the status is still to come.
                    None => *this.call = Some(call),
                },
                // The stream breaks off (hyper resets it): the caller sees no status.
                Some(Err(_)) => call.record(Code::Internal),
                // The body ended without trailers: not a gRPC answer.
                None => call.record(Code::Unknown),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;

    use super::*;
    use crate::layers::testing::{next, refused, request, scripted, streaming, trailers};

    fn layer() -> StatusLayer {
        // The recorder first: what is counted before it is installed is lost.
        yrd_telemetry::metrics_handle().unwrap();
        StatusLayer::new(yrd_telemetry::server_span)
    }

    /// `yrd_requests_total` for these labels, as `/metrics` shows it.
    fn count(service: &str, method: &str, code: &str) -> f64 {
        let text = yrd_telemetry::metrics_handle().unwrap().render();
        let labels = [
            format!("service=\"{service}\""),
            format!("method=\"{method}\""),
            format!("code=\"{code}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("yrd_requests_total{") && labels.iter().all(|x| l.contains(x.as_str())))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    #[tokio::test]
    async fn a_refusal_before_any_message_is_counted_with_its_code() {
        let (inner, answer) = scripted();
        let mut svc = layer().layer(inner);
        answer
            .send(refused(tonic::Status::invalid_argument("filter: bad")))
            .ok()
            .unwrap();
        let response = svc.call(request("/t.Refused/Aggregate")).await.unwrap();
        drop(response);
        assert_eq!(count("t.Refused", "Aggregate", "INVALID_ARGUMENT"), 1.0);
        assert_eq!(count("t.Refused", "Aggregate", "CANCELLED"), 0.0, "counted once");
    }

    #[tokio::test]
    async fn a_stream_is_counted_at_its_end_with_the_status_of_its_trailers() {
        let (inner, answer) = scripted();
        let mut svc = layer().layer(inner);
        let (response, stream) = streaming();
        answer.send(response).ok().unwrap();
        let mut body = svc.call(request("/t.Stream/Query")).await.unwrap().into_body();
        stream
            .frames
            .send(Frame::data(Bytes::from_static(b"row")))
            .await
            .unwrap();
        assert!(next(&mut body).await.unwrap().unwrap().is_data());
        assert_eq!(count("t.Stream", "Query", "OK"), 0.0, "not before the end");
        stream.frames.send(trailers(Code::ResourceExhausted)).await.unwrap();
        assert!(next(&mut body).await.unwrap().unwrap().is_trailers());
        assert_eq!(count("t.Stream", "Query", "RESOURCE_EXHAUSTED"), 1.0);
        drop(body);
        assert_eq!(count("t.Stream", "Query", "CANCELLED"), 0.0, "counted once");
    }

    #[tokio::test]
    async fn a_stream_abandoned_by_its_caller_counts_as_cancelled() {
        let (inner, answer) = scripted();
        let mut svc = layer().layer(inner);
        let (response, _stream) = streaming();
        answer.send(response).ok().unwrap();
        let body = svc.call(request("/t.Gone/Query")).await.unwrap().into_body();
        drop(body);
        assert_eq!(count("t.Gone", "Query", "CANCELLED"), 1.0);

        // Gone before the answer started, too.
        let (inner, _answer) = scripted();
        let mut svc = layer().layer(inner);
        let call = svc.call(request("/t.Gone/Aggregate"));
        drop(call);
        assert_eq!(count("t.Gone", "Aggregate", "CANCELLED"), 1.0);
    }

    #[tokio::test]
    async fn paths_no_route_serves_do_not_become_labels() {
        let (inner, answer) = scripted();
        let mut svc = layer().layer(inner);
        answer.send(refused(tonic::Status::unimplemented(""))).ok().unwrap();
        drop(svc.call(request("/attacker.Chosen/Name")).await.unwrap());
        assert_eq!(count("unknown", "unknown", "UNIMPLEMENTED"), 1.0);
        assert_eq!(count("attacker.Chosen", "Name", "UNIMPLEMENTED"), 0.0);
    }
}
