//! The drain layer: the end of a graceful shutdown. Until the server's
//! grace period is over, calls run as usual; when it is, every call still
//! open ends at once with `UNAVAILABLE` — a call still computing its answer
//! gets a trailers-only `UNAVAILABLE`, a stream gets the messages already
//! sent and then `UNAVAILABLE` trailers — so that a client sees a clean
//! status it can retry on, never a reset connection or a hang.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

/// The message of the status that ends drained calls.
pub const SHUTTING_DOWN: &str = "the server is shutting down";

/// A future that resolves when the drain starts (never, once its
/// [`Drain`] is gone without draining).
type Drained = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The switch that ends every open call: owned by the server handle.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Drain {
    /// A switch, not yet flipped.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(false),
        }
    }

    /// The layer that ends calls when [`Drain::start`] is called.
    pub fn layer(&self) -> DrainLayer {
        DrainLayer {
            rx: self.tx.subscribe(),
        }
    }

    /// Ends every open call (and every later one) with `UNAVAILABLE`.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

fn drained(mut rx: watch::Receiver<bool>) -> Drained {
    Box::pin(async move {
        let started = rx.wait_for(|drain| *drain).await.is_ok();
        if !started {
            // The switch is gone: nothing will drain this call.
            std::future::pending::<()>().await;
        }
    })
}

/// The status that ends a drained call, as headers or trailers.
fn unavailable() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    // Only a message that is not valid header text can fail; this one is.
    let _ = tonic::Status::unavailable(SHUTTING_DOWN).add_header(&mut headers);
    headers
}

/// Ends open calls with `UNAVAILABLE` when its [`Drain`] starts.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    rx: watch::Receiver<bool>,
}

impl<S> Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            inner,
            rx: self.rx.clone(),
        }
    }
}

/// The service [`DrainLayer`] makes.
#[derive(Debug, Clone)]
pub struct DrainService<S> {
    inner: S,
    rx: watch::Receiver<bool>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DrainService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<DrainBody<ResBody>>;
    type Error = S::Error;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        DrainFuture {
            inner: self.inner.call(req),
            drained: Some(drained(self.rx.clone())),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`DrainService`].
    pub struct DrainFuture<F> {
        #[pin]
        inner: F,
        drained: Option<Drained>,
    }
}

impl<F, ResBody, E> Future for DrainFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<http::Response<DrainBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(response) = this.inner.poll(cx) {
            let drained = this.drained.take();
            return Poll::Ready(response.map(|r| r.map(|inner| DrainBody::new(inner, drained))));
        }
        if let Some(drained) = this.drained.as_mut() {
            ready!(drained.as_mut().poll(cx));
            // The handler is dropped with this future: its work stops.
            let mut response = http::Response::new(DrainBody::ended());
            *response.headers_mut() = unavailable();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            *this.drained = None;
            return Poll::Ready(Ok(response));
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends with `UNAVAILABLE` trailers when the drain
    /// starts before it has ended.
    pub struct DrainBody<B> {
        #[pin]
        inner: Option<B>,
        // Watched until the inner body has sent its own trailers or ended.
        drained: Option<Drained>,
        ended: bool,
    }
}

impl<B> DrainBody<B> {
    fn new(inner: B, drained: Option<Drained>) -> Self {
        Self {
            inner: Some(inner),
            drained,
            ended: false,
        }
    }

    /// An empty body, for a trailers-only answer.
    fn ended() -> Self {
        Self {
            inner: None,
            drained: None,
            ended: true,
        }
    }
}

impl<B> Body for DrainBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Some(drained) = this.drained.as_mut()
            && drained.as_mut().poll(cx).is_ready()
        {
            // Frames are whole gRPC messages: ending between two of them
            // leaves a well-formed stream. Dropping the inner body tells
            // the handler feeding it that nobody reads any more.
            this.inner.set(None);
            *this.drained = None;
            *this.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(unavailable()))));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            *this.ended = true;
            return Poll::Ready(None);
        };
        let frame = ready!(inner.poll_frame(cx));
        match &frame {
            // A message: the stream goes on, and may still be drained.
            Some(Ok(f)) if f.is_data() => {}
            // Trailers, an error or the end: the stream is over.
            _ => {
                *this.drained = None;
                *this.ended = true;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) if !self.ended => b.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::layers::testing::{next, request, scripted, streaming, trailers};

    fn code(headers: &http::HeaderMap) -> Option<Code> {
        headers
            .get(tonic::Status::GRPC_STATUS)
            .map(|v| Code::from_bytes(v.as_bytes()))
    }

    #[tokio::test]
    async fn a_stream_open_at_the_drain_ends_with_unavailable() {
        let drain = Drain::new();
        let (inner, answer) = scripted();
        let mut svc = drain.layer().layer(inner);
        let (response, mut stream) = streaming();
        answer.send(response).ok().unwrap();
        let response = svc.call(request("/yrd.mesh.v1.DataNode/Query")).await.unwrap();
        assert_eq!(code(response.headers()), None, "a streaming answer");
        let mut body = response.into_body();
        stream
            .frames
            .send(Frame::data(Bytes::from_static(b"row")))
            .await
            .unwrap();
        let first = next(&mut body).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"row"));

        drain.start();
        let last = next(&mut body).await.unwrap().unwrap();
        let trailers = last.into_trailers().unwrap();
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the server is shutting down");
        assert!(next(&mut body).await.is_none(), "nothing after the trailers");
        assert!(body.is_end_stream());
        // The handler's end of the stream learns that nobody reads.
        (&mut stream.dropped).await.unwrap();
        assert!(stream.frames.is_closed());
    }

    #[tokio::test]
    async fn a_call_still_computing_at_the_drain_gets_a_trailers_only_unavailable() {
        let drain = Drain::new();
        let (inner, answer) = scripted();
        let mut svc = drain.layer().layer(inner);
        let call = svc.call(request("/yrd.mesh.v1.DataNode/Aggregate"));
        drain.start();
        let response = call.await.unwrap();
        assert_eq!(code(response.headers()), Some(Code::Unavailable));
        assert!(response.body().is_end_stream());
        // The handler was dropped with the call.
        assert!(answer.is_closed());
    }

    #[tokio::test]
    async fn a_stream_that_ends_by_itself_is_left_alone() {
        let drain = Drain::new();
        let (inner, answer) = scripted();
        let mut svc = drain.layer().layer(inner);
        let (response, stream) = streaming();
        answer.send(response).ok().unwrap();
        let mut body = svc.call(request("/x/y")).await.unwrap().into_body();
        stream.frames.send(trailers(Code::Ok)).await.unwrap();
        let t = next(&mut body).await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(code(&t), Some(Code::Ok));
        // A drain after the stream's own trailers adds nothing.
        drain.start();
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn without_a_drain_calls_run_normally() {
        let drain = Drain::new();
        let (inner, answer) = scripted();
        let mut svc = drain.layer().layer(inner);
        drop(drain);
        let (response, stream) = streaming();
        answer.send(response).ok().unwrap();
        let mut body = svc.call(request("/x/y")).await.unwrap().into_body();
        stream.frames.send(Frame::data(Bytes::from_static(b"a"))).await.unwrap();
        assert!(next(&mut body).await.unwrap().unwrap().is_data());
        drop(stream.frames);
        assert!(next(&mut body).await.is_none());
    }
}
