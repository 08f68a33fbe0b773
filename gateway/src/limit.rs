//! Per-application limit on calls in flight at the gateway, as a tower
//! layer around the Federation service.
//!
//! A call counts from its request until its response body ends or is
//! dropped. A handler that goes on working for a call after it answered
//! (a `Query`, whose page is streamed by a task of its own) takes the
//! call's [`CallSlot`] from the request into that task, and the call then
//! counts until the task ends: a client that stops reading or resets the
//! stream cannot free its slot while its region calls still run, nor keep
//! it once they have been ended. So one application cannot hold more than
//! its share of the gateway's calls to the regions, whatever it does with
//! them. Past the limit a call
//! is refused at once with `RESOURCE_EXHAUSTED`, naming the limit's key.
//! Callers are told apart by their certificate's identity; on a plaintext
//! (insecure, loopback-only) connection by their address.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The config key of the limit, named in refusals.
pub const LIMIT_KEY: &str = "query.max_calls_per_application";

/// Calls in flight per caller, shared by every connection.
#[derive(Debug)]
pub struct CallLimits {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl CallLimits {
    /// At most `max` calls in flight per caller.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `caller`, or `None` at its limit.
    fn acquire(self: &Arc<Self>, caller: String) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(caller.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            limits: self.clone(),
            caller,
        })
    }

    /// Calls in flight for `caller` now.
    pub fn open(&self, caller: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(caller).copied().unwrap_or(0)
    }
}

/// One call's place in its caller's count, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<CallLimits>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// A call's slot, in the request's extensions and held by its response
/// body: whoever holds the slot when the last of them goes gives it back,
/// unless a handler took it (see the module docs).
#[derive(Debug, Clone)]
pub struct CallSlot(Arc<Mutex<Option<Slot>>>);

impl CallSlot {
    /// Takes the slot out, so that the call counts until the returned
    /// slot is dropped instead of until its response body ends. `None`
    /// when taken already.
    pub fn take(&self) -> Option<Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Who is calling: the certificate's identity URI, else the address.
fn caller_of<B>(req: &http::Request<B>) -> String {
    if let Some(tls) = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
        if let Some(id) = tls
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| yrd_identity::peer_id_from_der(c).ok()))
        {
            return id.uri();
        }
        return tls
            .get_ref()
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
    }
    req.extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The layer: wraps a service so that each caller has at most the
/// limits' maximum of calls in flight.
#[derive(Debug, Clone)]
pub struct CallLimitLayer {
    limits: Arc<CallLimits>,
}

impl CallLimitLayer {
    /// A layer counting in `limits`.
    pub fn new(limits: Arc<CallLimits>) -> Self {
        Self { limits }
    }
}

impl<S> tower::Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// See [`CallLimitLayer`].
#[derive(Debug, Clone)]
pub struct CallLimit<S> {
    inner: S,
    limits: Arc<CallLimits>,
}

impl<S: NamedService> NamedService for CallLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<Body>> for CallLimit<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let Some(slot) = self.limits.acquire(caller_of(&req)) else {
            let status = Status::resource_exhausted(format!(
                "this application already has {} calls in flight at the gateway, the limit {LIMIT_KEY}; \
                 finish or cancel one and retry",
                self.limits.max
            ));
            return futures::future::ready(Ok(status.into_http())).boxed();
        };
        let slot = CallSlot(Arc::new(Mutex::new(Some(slot))));
        req.extensions_mut().insert(slot.clone());
        let call = self.inner.call(req);
        async move {
            let response = call.await?;
            Ok(response.map(|body| {
                Body::new(SlotBody {
                    inner: body,
                    _slot: slot,
                })
            }))
        }
        .boxed()
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its call's slot (unless a handler took
    /// it) until it is dropped.
    struct SlotBody<B> {
        #[pin]
        inner: B,
        _slot: CallSlot,
    }
}

impl<B: HttpBody> HttpBody for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
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
    use super::*;

    #[test]
    fn slots_are_counted_per_caller_and_given_back() {
        let limits = CallLimits::new(2);
        let a1 = limits.acquire("a".into()).unwrap();
        let _a2 = limits.acquire("a".into()).unwrap();
        assert!(limits.acquire("a".into()).is_none(), "a third call of a is refused");
        let _b = limits.acquire("b".into()).unwrap();
        assert_eq!(limits.open("a"), 2);
        drop(a1);
        assert_eq!(limits.open("a"), 1);
        assert!(
            limits.acquire("a".into()).is_some(),
            "a slot given back is usable again"
        );
    }

    #[test]
    fn a_taken_slot_counts_until_its_taker_drops_it() {
        let limits = CallLimits::new(1);
        // Not taken: given back with the last holder (the response body).
        let slot = CallSlot(Arc::new(Mutex::new(limits.acquire("a".into()))));
        let body = slot.clone();
        drop(slot);
        assert_eq!(limits.open("a"), 1);
        drop(body);
        assert_eq!(limits.open("a"), 0);
        // Taken by the task streaming the call: the body going (a client
        // that reset its stream) does not give it back, the task ending does.
        let slot = CallSlot(Arc::new(Mutex::new(limits.acquire("a".into()))));
        let task = slot.take().unwrap();
        assert!(slot.take().is_none(), "taken once");
        drop(slot);
        assert_eq!(limits.open("a"), 1);
        assert!(limits.acquire("a".into()).is_none());
        drop(task);
        assert_eq!(limits.open("a"), 0);
    }
}
