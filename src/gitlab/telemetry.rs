//! The hook through which the client reports its traffic (to metrics, in practice).

use std::time::Duration;

/// Told about every HTTP exchange the client makes. Implementations must be cheap and must not
/// block: they run on the request path.
pub trait RequestObserver: Send + Sync + 'static {
    /// One HTTP attempt finished. `endpoint` is the route template (`/projects/:id/jobs`), never
    /// a raw URL; `status` is `None` when no response arrived (connect error, timeout).
    fn on_request(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration);

    /// GitLab reported how many requests remain in the current rate-limit window
    /// (`RateLimit-Remaining`), for the instance named by its base URL.
    fn on_rate_limit_remaining(&self, instance: &str, remaining: u64);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl RequestObserver for NoopObserver {
    fn on_request(&self, _: &'static str, _: Option<u16>, _: Duration) {}
    fn on_rate_limit_remaining(&self, _: &str, _: u64) {}
}
