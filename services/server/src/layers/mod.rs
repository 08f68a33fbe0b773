//! The tower layers [`crate::serve`] installs around every process's
//! routes, outermost first: [`StatusLayer`] (the server span, and every
//! call's status on it and in the metrics), [`DrainLayer`] (the end of a
//! graceful shutdown), [`DeadlineLayer`] (the typed [`Deadline`]).
//!
//! The status layer is outermost so that it sees what the others answer:
//! a call ended by the drain counts as `UNAVAILABLE`.

mod deadline;
mod drain;
mod status;

pub use deadline::{Deadline, DeadlineLayer, DeadlinePolicy, DeadlineService, parse_grpc_timeout};
pub use drain::{Drain, DrainBody, DrainFuture, DrainLayer, DrainService, SHUTTING_DOWN};
pub use status::{StatusBody, StatusFuture, StatusLayer, StatusService};

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted service and body for the layers' unit tests.

    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};
    use tokio::sync::{mpsc, oneshot};
    use tower_service::Service;

    /// A body fed frame by frame from a channel; it ends when the sender
    /// is dropped, and tells `dropped` when it is dropped itself.
    pub struct ChannelBody {
        pub rx: mpsc::Receiver<Frame<Bytes>>,
        pub dropped: Option<oneshot::Sender<()>>,
    }

    impl Drop for ChannelBody {
        fn drop(&mut self) {
            if let Some(tx) = self.dropped.take() {
                let _ = tx.send(());
            }
        }
    }

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.rx.poll_recv(cx).map(|f| f.map(Ok))
        }
    }

    /// A streaming answer: the sender of its frames, and a signal when the
    /// body is dropped.
    pub struct Stream {
        pub frames: mpsc::Sender<Frame<Bytes>>,
        pub dropped: oneshot::Receiver<()>,
    }

    /// A streaming response (no status in its headers) and its controls.
    pub fn streaming() -> (http::Response<ChannelBody>, Stream) {
        let (frames, rx) = mpsc::channel(8);
        let (tx, dropped) = oneshot::channel();
        let body = ChannelBody { rx, dropped: Some(tx) };
        (http::Response::new(body), Stream { frames, dropped })
    }

    /// A trailers-only response with `status`.
    pub fn refused(status: tonic::Status) -> http::Response<ChannelBody> {
        let (_, rx) = mpsc::channel(1);
        let mut response = http::Response::new(ChannelBody { rx, dropped: None });
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    /// Trailers carrying `code`.
    pub fn trailers(code: tonic::Code) -> Frame<Bytes> {
        let mut t = http::HeaderMap::new();
        tonic::Status::new(code, "").add_header(&mut t).unwrap();
        Frame::trailers(t)
    }

    /// A service answering with the response its channel hands it (and
    /// never, when the channel is dropped).
    pub struct Scripted {
        pub answers: Option<oneshot::Receiver<http::Response<ChannelBody>>>,
    }

    impl Service<http::Request<()>> for Scripted {
        type Response = http::Response<ChannelBody>;
        type Error = Infallible;
        type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let answer = self.answers.take();
            Box::pin(async move {
                match answer {
                    Some(rx) => match rx.await {
                        Ok(response) => Ok(response),
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            })
        }
    }

    /// A service and the sender of its one answer.
    pub fn scripted() -> (Scripted, oneshot::Sender<http::Response<ChannelBody>>) {
        let (tx, rx) = oneshot::channel();
        (Scripted { answers: Some(rx) }, tx)
    }

    /// The next frame of `body`.
    pub async fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    /// A request for `path`.
    pub fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }
}
