//! Narrow entry points to the client's private decoders of what GitLab sends (bodies, headers,
//! log tails), so that tests outside the crate (`tests/fuzz.rs`) can feed them arbitrary input
//! without an HTTP exchange. Each one calls the very function the client uses; none is part of
//! the client's API.

use crate::gitlab::download::TailBuffer;
use crate::gitlab::endpoints::Endpoint;
use crate::gitlab::error::GitLabError;
use crate::gitlab::pagination::{self, PaginationMode};
use crate::gitlab::ratelimit::{self, LimitScope, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};
use url::Url;

/// Decodes one page of a listing of `endpoint` as the pager does: `Err` when the page as a whole
/// is refused (content type, not a JSON array, cut off), otherwise one result per item.
pub fn decode_page<T: DeserializeOwned>(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Result<T, GitLabError>>, GitLabError> {
    pagination::decode_page(endpoint, 1, headers, body).map_err(|failure| failure.error)
}

/// Decodes a JSON answer (a single job, an action's answer, a project) as the client does.
pub fn decode_json<T: DeserializeOwned>(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, GitLabError> {
    crate::gitlab::client::decode_json(endpoint, headers, body)
}

/// GitLab's message in an error body, as put in [`GitLabError::Api`].
pub fn api_message(status: u16, body: &[u8]) -> String {
    crate::gitlab::error::api_message(status, body)
}

/// The URL of the page after `current` according to a response's headers (`X-Next-Page`,
/// `Link`), or `None` on the last page.
pub fn next_page_url(
    current: &Url,
    headers: &HeaderMap,
    mode: PaginationMode,
) -> Result<Option<Url>, String> {
    pagination::next_page_url(current, headers, mode)
}

/// The entries of a `Link` header value: each target with its relation types.
pub fn parse_link_header(value: &str) -> Vec<(String, Vec<String>)> {
    pagination::parse_link_header(value)
        .into_iter()
        .map(|entry| (entry.target, entry.rels))
        .collect()
}

/// Feeds a response's status and headers to `limiter` as the client does after every request;
/// returns `RateLimit-Remaining` and `Retry-After` as the client reads them.
pub fn observe_rate_limit_headers(
    limiter: &RateLimiter,
    scope: LimitScope,
    status: StatusCode,
    headers: &HeaderMap,
    now: Instant,
    wall_now: jiff::Timestamp,
) -> (Option<u64>, Option<Duration>) {
    let signal = limiter.observe_response(scope, status, headers, now, wall_now);
    (signal.remaining, signal.retry_after)
}

/// `Retry-After` (seconds or an HTTP-date) as a wait from `wall_now`.
pub fn parse_retry_after(value: &str, wall_now: jiff::Timestamp) -> Option<Duration> {
    ratelimit::parse_retry_after(value, wall_now)
}

/// `RateLimit-Reset` (Unix seconds) as a wait from `wall_now`.
pub fn parse_reset(value: &str, wall_now: jiff::Timestamp) -> Option<Duration> {
    ratelimit::parse_reset(value, wall_now)
}

/// The text kept of a job log streamed in `chunks`: its last `max` bytes.
pub fn log_tail(chunks: &[&[u8]], max: usize) -> String {
    let mut tail = TailBuffer::new(max);
    for chunk in chunks {
        tail.push(chunk);
    }
    tail.into_string()
}
