//! The deadline layer: every request carries a [`Deadline`] in its
//! extensions, the caller's `grpc-timeout` bounded by the process's
//! [`DeadlinePolicy`], so that handlers never read headers for it.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower_layer::Layer;
use tower_service::Service;

/// The header gRPC clients send their timeout in.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When the answer to a request is due: the caller's timeout (or the
/// process's default when it sets none), never more than the process's
/// maximum, counted from when the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline of a request, when the deadline layer ran for it.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Deadline>().copied()
    }

    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Self(at)
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left from now (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// How a process bounds its callers' deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// The deadline of a request that sets no timeout.
    pub default: Duration,
    /// The longest deadline honoured, whatever the caller asks.
    pub max: Duration,
}

impl DeadlinePolicy {
    /// One bound for both: a request without a timeout gets the maximum.
    pub fn at_most(max: Duration) -> Self {
        Self { default: max, max }
    }

    /// The deadline of a request with these headers, arriving at `now`.
    pub fn deadline(&self, headers: &http::HeaderMap, now: Instant) -> Deadline {
        let asked = headers
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Deadline(now + asked.unwrap_or(self.default).min(self.max))
    }
}

/// Parses a `grpc-timeout` value: up to eight digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos). A value
/// of another shape is ignored, as if the caller had set none.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Puts a [`Deadline`] into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    policy: DeadlinePolicy,
}

impl DeadlineLayer {
    /// A layer applying `policy`.
    pub fn new(policy: DeadlinePolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            policy: self.policy,
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    policy: DeadlinePolicy,
}

impl<S, B> Service<http::Request<B>> for DeadlineService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let deadline = self.policy.deadline(req.headers(), Instant::now());
        req.extensions_mut().insert(deadline);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: DeadlinePolicy = DeadlinePolicy {
        default: Duration::from_secs(10),
        max: Duration::from_secs(60),
    };

    fn headers(timeout: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = timeout {
            h.insert(GRPC_TIMEOUT, http::HeaderValue::from_str(t).unwrap());
        }
        h
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("+5S"), None);
        assert_eq!(parse_grpc_timeout("5s"), None);
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn the_policy_bounds_what_the_caller_asks() {
        let now = Instant::now();
        let d = |t| POLICY.deadline(&headers(t), now).instant() - now;
        assert_eq!(d(None), Duration::from_secs(10), "no timeout: the default");
        assert_eq!(d(Some("2S")), Duration::from_secs(2), "a shorter timeout is kept");
        assert_eq!(
            d(Some("5M")),
            Duration::from_secs(60),
            "a longer one is cut to the maximum"
        );
        assert_eq!(d(Some("soon")), Duration::from_secs(10), "a malformed one is ignored");
        let one = DeadlinePolicy::at_most(Duration::from_secs(3));
        assert_eq!(
            one.deadline(&headers(None), now).instant() - now,
            Duration::from_secs(3)
        );
    }

    #[tokio::test]
    async fn the_layer_puts_the_deadline_in_the_extensions() {
        let mut svc = DeadlineLayer::new(POLICY).layer(tower_service_fn(|req: http::Request<()>| {
            let deadline = req.extensions().get::<Deadline>().copied();
            // Into a tonic request, as a handler sees it.
            let req = tonic::Request::from_http(req);
            assert_eq!(Deadline::of(&req), deadline);
            deadline
        }));
        let req = http::Request::builder().header(GRPC_TIMEOUT, "1S").body(()).unwrap();
        let before = Instant::now();
        let deadline = svc.call(req).await.unwrap().unwrap();
        assert!(deadline.instant() >= before + Duration::from_secs(1));
        assert!(deadline.instant() <= Instant::now() + Duration::from_secs(1));
        assert!(deadline.remaining() <= Duration::from_secs(1));
    }

    /// A service from a closure, answering at once.
    fn tower_service_fn<F, R>(f: F) -> impl Service<http::Request<()>, Response = R, Error = std::convert::Infallible>
    where
        F: FnMut(http::Request<()>) -> R,
    {
        struct Fn<F>(F);
        impl<F, R> Service<http::Request<()>> for Fn<F>
        where
            F: FnMut(http::Request<()>) -> R,
        {
            type Response = R;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<R, std::convert::Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, req: http::Request<()>) -> Self::Future {
                std::future::ready(Ok((self.0)(req)))
            }
        }
        Fn(f)
    }
}
