//! The HTTP core of the GitLab client: configuration, one shared `reqwest::Client`, the
//! authentication header, rate limiting, timeouts, retries, redirects, size caps and telemetry.
//!
//! The endpoint methods live in [`jobs`](crate::gitlab::jobs); paging in
//! [`pagination`](crate::gitlab::pagination); streaming bodies in
//! `download.rs`.
//!
//! Retry policy:
//! - `GET`s are retried with exponential backoff and full jitter on connection errors, timeouts,
//!   dropped connections, 429, 5xx (except 501) and bodies that arrive truncated or garbled
//!   (cut-off or malformed JSON, a proxy's HTML page; well-formed JSON of the wrong shape is not
//!   retried), at most `max_get_retries` times, waiting
//!   `Retry-After` when GitLab sends one. Downloads are retried only until their first byte has
//!   been written.
//! - State-changing requests (`POST`, `DELETE`) are sent once. When the outcome is unknown
//!   (timeout, dropped connection, 5xx) the error says so ([`GitLabError::is_ambiguous`]) and the
//!   caller must re-read the job before deciding again. The one exception is 429: GitLab rejects
//!   throttled requests before acting on them, so a throttled `POST`/`DELETE` is re-sent once the
//!   rate limiter's pause is over (at most `max_get_retries` times).

use crate::gitlab::auth::{AuthHeader, Credential};
use crate::gitlab::backoff::Backoff;
use crate::gitlab::ca::CaBundle;
use crate::gitlab::endpoints::{Endpoint, Method, PathParams, Query};
use crate::gitlab::error::{GitLabError, TransportFailure, api_message};
use crate::gitlab::ratelimit::{InFlight, LimitScope, RateLimiter};
use crate::gitlab::telemetry::{NoopObserver, RequestObserver};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// The most redirects a GET follows (artifact downloads may be redirected to object storage).
const MAX_REDIRECTS: usize = 5;
/// The most bytes of an error body that are read to extract GitLab's message.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;

/// `Accept` for endpoints that answer JSON.
pub(crate) const ACCEPT_JSON: &str = "application/json";
/// `Accept` for logs and artifacts.
pub(crate) const ACCEPT_ANY: &str = "*/*";

/// How to configure a [`GitLabClient`]. Start from [`ClientConfig::new`] and change fields.
#[derive(Clone)]
pub struct ClientConfig {
    /// The instance URL (`https://gitlab.example.com`, or with a relative root
    /// `https://example.com/gitlab`). The API base is `<base_url>/api/v4`.
    pub base_url: Url,
    /// The credential, or `None` for anonymous access.
    pub credential: Option<Credential>,
    /// The connect timeout, and the overall timeout of every JSON request. Downloads use it as a
    /// per-chunk read timeout instead, so a large archive is not cut off while it still flows.
    pub timeout: Duration,
    /// A PEM bundle of extra CA certificates to trust (for instances with a private CA). TLS is
    /// always verified.
    pub ca_bundle: Option<PathBuf>,
    /// More CA certificates to trust, besides the system roots and `ca_bundle`'s (a policy's
    /// `spec.gitlab.caBundleSecretRef`).
    pub ca_certificates: Option<CaBundle>,
    /// The token-bucket budget used when `rate_limiter` is `None`.
    pub requests_per_minute: u32,
    /// How many times a failed GET (and a throttled POST/DELETE) is re-sent.
    pub max_get_retries: u32,
    /// Told about every HTTP attempt and every `RateLimit-Remaining` GitLab reports.
    pub observer: Arc<dyn RequestObserver>,
    /// The limiter shared by every client of the same instance; `None` makes one from
    /// `requests_per_minute`.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The backoff between GET retries.
    pub retry_backoff: Backoff,
    /// The largest JSON response accepted (a "huge page" guard).
    pub max_body_bytes: u64,
    /// The most pages one listing fetches before it stops with a
    /// [`GitLabError::Pagination`] (a guard against a server whose pages never end).
    pub max_pages: u32,
    /// A connection pool to share with other clients of the same instance (it must have been
    /// built for the same `ca_bundle`, `ca_certificates` and `timeout`: see
    /// [`GitLabClient::connections`]);
    /// `None` builds a pool of its own. Policies of one instance then share a few connections
    /// instead of each keeping its own.
    pub connections: Option<reqwest::Client>,
    /// Idle connections kept open per host when this client builds its own pool
    /// (`--idle-connections`).
    pub idle_connections: usize,
}

impl ClientConfig {
    /// The default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default budget: GitLab's default `jobs_index` limit.
    pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;
    /// The default `max_get_retries`.
    pub const DEFAULT_MAX_GET_RETRIES: u32 = 3;
    /// The default `max_body_bytes`: 32 MiB (a page of 100 jobs is well under 1 MiB).
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
    /// The default `idle_connections`. Each idle connection holds a read buffer that grows to
    /// the largest answer it carried (a page of 100 jobs is about 300 KB): at 5,000 projects
    /// about 30 idle connections held 11 MB. Syncs run 8 at a time per instance
    /// ([`EngineConfig::observe_concurrency`](crate::engine::EngineConfig)), so 8 stay warm.
    pub const DEFAULT_IDLE_CONNECTIONS: usize = 8;
    /// The default `max_pages`: 10,000 pages of 100 items.
    pub const DEFAULT_MAX_PAGES: u32 = 10_000;

    /// A configuration with the defaults: 30 s timeout, 600 requests a minute, 3 GET retries,
    /// no custom CA, no observer, a private rate limiter.
    pub fn new(base_url: Url, credential: Option<Credential>) -> ClientConfig {
        ClientConfig {
            base_url,
            credential,
            timeout: ClientConfig::DEFAULT_TIMEOUT,
            ca_bundle: None,
            ca_certificates: None,
            requests_per_minute: ClientConfig::DEFAULT_REQUESTS_PER_MINUTE,
            max_get_retries: ClientConfig::DEFAULT_MAX_GET_RETRIES,
            observer: Arc::new(NoopObserver),
            rate_limiter: None,
            retry_backoff: Backoff::default(),
            max_body_bytes: ClientConfig::DEFAULT_MAX_BODY_BYTES,
            max_pages: ClientConfig::DEFAULT_MAX_PAGES,
            connections: None,
            idle_connections: ClientConfig::DEFAULT_IDLE_CONNECTIONS,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("credential", &self.credential)
            .field("timeout", &self.timeout)
            .field("ca_bundle", &self.ca_bundle)
            .field("ca_certificates", &self.ca_certificates)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("max_get_retries", &self.max_get_retries)
            .field("rate_limiter", &self.rate_limiter)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_pages", &self.max_pages)
            .finish_non_exhaustive()
    }
}

/// A client of one GitLab instance's Jobs API. Cheap to clone (an `Arc` inside); clones share
/// the connection pool and the rate limiter.
#[derive(Clone)]
pub struct GitLabClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base_url: Url,
    /// `<base_url>/api/v4`, without a trailing slash.
    api_base: Url,
    /// The instance's name in telemetry: the base URL without a trailing slash.
    instance: String,
    auth: Option<AuthHeader>,
    limiter: Arc<RateLimiter>,
    observer: Arc<dyn RequestObserver>,
    pub(crate) timeout: Duration,
    max_get_retries: u32,
    backoff: Backoff,
    pub(crate) max_body_bytes: u64,
    pub(crate) max_pages: u32,
}

impl fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLabClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("authenticated", &self.inner.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// A failed attempt, with what the retry logic needs besides the error.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub(crate) error: GitLabError,
    /// `Retry-After`, when the response carried one.
    pub(crate) retry_after: Option<Duration>,
    /// The body arrived cut off or garbled (truncated or malformed JSON, a proxy's HTML page):
    /// a GET answered like this is as worth re-sending as one answered 5xx.
    pub(crate) garbled_body: bool,
}

impl From<GitLabError> for AttemptError {
    fn from(error: GitLabError) -> Self {
        AttemptError {
            error,
            retry_after: None,
            garbled_body: false,
        }
    }
}

impl AttemptError {
    /// Whether a GET that failed like this is worth sending again.
    fn is_retryable_get(&self) -> bool {
        if self.garbled_body {
            return true;
        }
        match &self.error {
            GitLabError::Transport { .. } => true,
            GitLabError::Api { status, .. } => *status == 429 || (*status >= 500 && *status != 501),
            _ => false,
        }
    }

    /// How long to wait before retry number `retry` (0-based).
    fn retry_delay(&self, retry: u32, backoff: &Backoff) -> Duration {
        self.retry_after
            .unwrap_or_else(|| backoff.delay(retry, &mut rand::rng()))
    }
}

/// Reports one HTTP exchange to the observer when dropped, so that every attempt is reported
/// exactly once, whether it succeeds, fails or is abandoned mid-body.
pub(crate) struct Exchange {
    observer: Arc<dyn RequestObserver>,
    endpoint: &'static str,
    started: Instant,
    status: Option<u16>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.observer
            .on_request(self.endpoint, self.status, self.started.elapsed());
    }
}

/// A response with a success status whose body has not been read yet.
pub(crate) struct Opened {
    pub(crate) response: reqwest::Response,
    /// Reported when the body has been consumed (or abandoned).
    pub(crate) exchange: Exchange,
    /// The request's place among the instance's requests in flight, until its body is read.
    pub(crate) in_flight: InFlight,
}

/// The name of a GitLab instance in telemetry, engine keys and messages: its base URL without a
/// trailing slash (`https://gitlab.example.com`).
pub fn instance_name(base_url: &Url) -> String {
    instance_key(base_url.as_str()).to_owned()
}

/// An instance URL as written (a policy's, a delivery's, a flag's) compared as an
/// [`instance_name`]: without its trailing slash.
pub fn instance_key(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Which timeout applies to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The whole exchange, body included, must finish within `timeout`.
    Total,
    /// The response headers must arrive within `timeout`; the body is read under a per-chunk
    /// timeout by the caller.
    PerRead,
}

/// The HTTP client (connection pool) of a [`GitLabClient`]: its timeouts, no redirects, and the
/// extra CA certificates of `bundles`.
fn http_client(
    timeout: Duration,
    bundles: &[CaBundle],
    idle_connections: usize,
) -> Result<reqwest::Client, GitLabError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(idle_connections)
        .user_agent(concat!("jobwarden/", env!("CARGO_PKG_VERSION")));
    for certificate in bundles.iter().flat_map(CaBundle::reqwest_certificates) {
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| GitLabError::Config(format!("cannot build the HTTP client: {e}")))
}

impl GitLabClient {
    /// Builds a client. Fails on an unusable base URL, an unreadable or empty CA bundle file, a
    /// credential that cannot be sent in a header, or zero timeout/budget.
    pub fn new(config: ClientConfig) -> Result<GitLabClient, GitLabError> {
        let base_url = config.base_url;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            return Err(GitLabError::Config(format!(
                "the GitLab URL must be an http(s) URL with a host, got `{base_url}`"
            )));
        }
        if config.timeout.is_zero() {
            return Err(GitLabError::Config("the timeout must not be zero".into()));
        }
        if config.requests_per_minute == 0 && config.rate_limiter.is_none() {
            return Err(GitLabError::Config(
                "requests_per_minute must be at least 1".into(),
            ));
        }
        let mut api_base = base_url.clone();
        api_base.set_query(None);
        api_base.set_fragment(None);
        let root = api_base.path().trim_end_matches('/').to_owned();
        api_base.set_path(&format!("{root}/api/v4"));

        let http = match config.connections {
            Some(pool) => pool,
            None => {
                let file = config
                    .ca_bundle
                    .as_deref()
                    .map(CaBundle::read)
                    .transpose()?;
                let bundles: Vec<CaBundle> =
                    file.into_iter().chain(config.ca_certificates).collect();
                http_client(config.timeout, &bundles, config.idle_connections)?
            }
        };
        let auth = config
            .credential
            .as_ref()
            .map(Credential::header)
            .transpose()?;
        let limiter = config
            .rate_limiter
            .unwrap_or_else(|| Arc::new(RateLimiter::new(config.requests_per_minute)));
        let instance = instance_name(&base_url);
        Ok(GitLabClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_base,
                instance,
                auth,
                limiter,
                observer: config.observer,
                timeout: config.timeout,
                max_get_retries: config.max_get_retries,
                backoff: config.retry_backoff,
                max_body_bytes: config.max_body_bytes,
                max_pages: config.max_pages.max(1),
            }),
        })
    }

    /// The client's connection pool, to share with other clients of the same instance, CA
    /// bundle and timeout ([`ClientConfig::connections`]).
    pub fn connections(&self) -> reqwest::Client {
        self.inner.http.clone()
    }

    /// The instance URL the client was built with.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The rate limiter this client obeys (shared with the clients it was configured with).
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    /// The URL of an API path. `path` starts with `/` and its user-provided segments are already
    /// percent-encoded (`/projects/group%2Fproject/jobs`); the encoding survives as is.
    pub(crate) fn api_url(&self, path: &str, query: &Query) -> Result<Url, GitLabError> {
        if path.split('/').any(|segment| {
            matches!(
                segment.to_ascii_lowercase().as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            )
        }) {
            return Err(GitLabError::InvalidArgument(
                "a project, ref or artifact path must not contain `.` or `..` segments".into(),
            ));
        }
        let mut url = self.inner.api_base.clone();
        url.set_path(&format!("{}{path}", self.inner.api_base.path()));
        if !query.is_empty() {
            url.set_query(Some(&query.to_query_string()));
        }
        Ok(url)
    }

    /// The URL of one request to `endpoint`: its path rendered from `params` (see
    /// [`Endpoint::path`]), then checked and joined like any [`api_url`](Self::api_url).
    pub(crate) fn endpoint_url(
        &self,
        endpoint: Endpoint,
        params: &PathParams<'_>,
        query: &Query,
    ) -> Result<Url, GitLabError> {
        self.api_url(&endpoint.path(params)?, query)
    }

    /// Sends one request (following redirects for GETs) and returns the response if its status
    /// is a success. Waits for the rate limiter first and teaches it from the response.
    async fn open(
        &self,
        endpoint: Endpoint,
        url: Url,
        body: Option<Bytes>,
        accept: &'static str,
        deadline: Deadline,
    ) -> Result<Opened, AttemptError> {
        let inner = &self.inner;
        let in_flight = inner.limiter.acquire(limit_scope(endpoint)).await;
        let mut url = url;
        let mut redirects = 0;
        loop {
            // Credentials go only to GitLab itself, never to a redirect target elsewhere
            // (object storage), and rate-limit headers are only GitLab's.
            let to_gitlab = url.origin() == inner.api_base.origin();
            let request = self.build_request(endpoint, &url, body.as_ref(), accept, to_gitlab);
            let mut exchange = Exchange {
                observer: inner.observer.clone(),
                endpoint: endpoint.template,
                started: Instant::now(),
                status: None,
            };
            let sent = match deadline {
                // reqwest enforces the total deadline and tells connect failures apart.
                Deadline::Total => request.timeout(inner.timeout).send().await,
                Deadline::PerRead => tokio::time::timeout(inner.timeout, request.send())
                    .await
                    .map_err(|_| AttemptError::from(timeout_error(endpoint, inner.timeout)))?,
            };
            let response = sent.map_err(|e| AttemptError::from(transport_error(endpoint, e)))?;
            let status = response.status();
            exchange.status = Some(status.as_u16());
            let retry_after = if to_gitlab {
                self.learn_rate_limits(endpoint, &response)
            } else {
                None
            };

            if status.is_success() {
                return Ok(Opened {
                    response,
                    exchange,
                    in_flight,
                });
            }
            if status.is_redirection()
                && endpoint.method == Method::Get
                && let Some(next) = redirect_target(&url, response.headers())
            {
                if redirects == MAX_REDIRECTS {
                    return Err(GitLabError::Api {
                        method: endpoint.method.as_str(),
                        endpoint: endpoint.template,
                        status: status.as_u16(),
                        message: format!("more than {MAX_REDIRECTS} redirects"),
                    }
                    .into());
                }
                redirects += 1;
                drop(exchange);
                url = next;
                continue;
            }
            let message = self.read_error_message(response).await;
            drop(exchange);
            return Err(AttemptError {
                error: GitLabError::Api {
                    method: endpoint.method.as_str(),
                    endpoint: endpoint.template,
                    status: status.as_u16(),
                    message,
                },
                retry_after,
                garbled_body: false,
            });
        }
    }

    /// One HTTP request, with the credential only if it goes to GitLab itself.
    fn build_request(
        &self,
        endpoint: Endpoint,
        url: &Url,
        body: Option<&Bytes>,
        accept: &'static str,
        with_credential: bool,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .inner
            .http
            .request(endpoint.method.to_reqwest(), url.clone())
            .header(ACCEPT, accept);
        if with_credential && let Some(auth) = &self.inner.auth {
            request = request.header(auth.name.clone(), auth.value.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        request
    }

    /// Feeds GitLab's rate-limit headers to the limiter and the observer; returns `Retry-After`.
    fn learn_rate_limits(
        &self,
        endpoint: Endpoint,
        response: &reqwest::Response,
    ) -> Option<Duration> {
        let inner = &self.inner;
        let signal = inner.limiter.observe_response(
            limit_scope(endpoint),
            response.status(),
            response.headers(),
            Instant::now(),
            jiff::Timestamp::now(),
        );
        if let Some(remaining) = signal.remaining {
            inner
                .observer
                .on_rate_limit_remaining(&inner.instance, remaining);
        }
        signal.retry_after
    }

    /// Reads (the start of) an error body and extracts GitLab's message. A body that cannot be
    /// read does not hide the status: the message falls back to the reason phrase.
    async fn read_error_message(&self, mut response: reqwest::Response) -> String {
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let read = async {
            while let Ok(Some(chunk)) = response.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() as u64 >= MAX_ERROR_BODY_BYTES {
                    break;
                }
            }
        };
        // Whatever arrived before the timeout is used.
        let _ = tokio::time::timeout(self.inner.timeout, read).await;
        // The token is taken out before the message is cut short, so no part of it survives.
        match &self.inner.auth {
            Some(auth) => api_message(
                status,
                auth.redact(&String::from_utf8_lossy(&body)).as_bytes(),
            ),
            None => api_message(status, &body),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the GET retry budget is spent.
    pub(crate) async fn with_get_retries<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        mut attempt: F,
    ) -> Result<T, GitLabError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut retry = 0;
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if retry >= self.inner.max_get_retries || !failure.is_retryable_get() {
                return Err(failure.error);
            }
            let delay = failure.retry_delay(retry, &self.inner.backoff);
            tracing::debug!(
                endpoint = endpoint.template,
                retry = retry + 1,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error,
                "retrying GitLab GET"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// GETs a JSON endpoint and decodes the body with `decode`, retrying (like a 5xx) when the
    /// body arrives truncated or malformed. Returns the decoded value and the headers.
    pub(crate) async fn get_decoded<T, D>(
        &self,
        endpoint: Endpoint,
        url: &Url,
        decode: D,
    ) -> Result<(T, HeaderMap), GitLabError>
    where
        D: Fn(&HeaderMap, &[u8]) -> Result<T, BodyError>,
    {
        self.with_get_retries(endpoint, || async {
            let opened = self
                .open(endpoint, url.clone(), None, ACCEPT_JSON, Deadline::Total)
                .await?;
            let (body, headers) = self.read_json_body(endpoint, opened).await?;
            match decode(&headers, &body) {
                Ok(value) => Ok((value, headers)),
                Err(failure) => Err(AttemptError {
                    garbled_body: failure.garbled,
                    ..AttemptError::from(failure.error)
                }),
            }
        })
        .await
    }

    /// GETs a JSON endpoint (with retries) and decodes it.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        url: &Url,
    ) -> Result<T, GitLabError> {
        let (value, _) = self
            .get_decoded(endpoint, url, |headers, body| {
                decode_body(endpoint, headers, body)
            })
            .await?;
        Ok(value)
    }

    /// Sends a state-changing request once (re-sending only after a 429, see the module docs)
    /// and returns the raw response body and headers.
    pub(crate) async fn send_action(
        &self,
        endpoint: Endpoint,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<(Bytes, HeaderMap), GitLabError> {
        let mut throttled = 0;
        loop {
            let attempt = self
                .open(
                    endpoint,
                    url.clone(),
                    body.clone(),
                    ACCEPT_JSON,
                    Deadline::Total,
                )
                .await;
            match attempt {
                Ok(opened) => return self.read_json_body(endpoint, opened).await,
                Err(failure)
                    if failure.error.is_rate_limited()
                        && throttled < self.inner.max_get_retries =>
                {
                    // GitLab refused before acting; the limiter now holds the pause to wait out.
                    throttled += 1;
                    tracing::info!(
                        endpoint = endpoint.template,
                        "state-changing request throttled (429); re-sending after the pause"
                    );
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// Opens a GET whose body the caller streams: retried until the response headers arrive
    /// with a success status, never after.
    pub(crate) async fn open_stream(
        &self,
        endpoint: Endpoint,
        url: &Url,
    ) -> Result<Opened, GitLabError> {
        self.with_get_retries(endpoint, || {
            self.open(endpoint, url.clone(), None, ACCEPT_ANY, Deadline::PerRead)
        })
        .await
    }

    /// Reads a whole JSON body, up to `max_body_bytes`.
    async fn read_json_body(
        &self,
        endpoint: Endpoint,
        opened: Opened,
    ) -> Result<(Bytes, HeaderMap), GitLabError> {
        let Opened {
            mut response,
            exchange,
            in_flight,
        } = opened;
        let limit = self.inner.max_body_bytes;
        let too_large = || GitLabError::BodyTooLarge {
            method: endpoint.method.as_str(),
            endpoint: endpoint.template,
            limit,
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let headers = std::mem::take(response.headers_mut());
        // One buffer of the announced size, not a chain of doublings (a page of 100 jobs is
        // about 200 KB: each doubling left a freed block behind that the heap kept).
        let announced = response.content_length().unwrap_or(0).min(limit);
        let mut body = bytes::BytesMut::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(endpoint, e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        drop(exchange);
        drop(in_flight);
        Ok((body.freeze(), headers))
    }
}

/// The rate-limit scope of an endpoint.
fn limit_scope(endpoint: Endpoint) -> LimitScope {
    if endpoint == Endpoint::LIST_PROJECT_JOBS {
        LimitScope::ProjectJobsList
    } else {
        LimitScope::Instance
    }
}

/// The absolute URL a redirect response points to, if it has a usable `Location`.
fn redirect_target(current: &Url, headers: &HeaderMap) -> Option<Url> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let target = current.join(location).ok()?;
    matches!(target.scheme(), "http" | "https").then_some(target)
}

/// Classifies a reqwest error. The URL is stripped: errors name endpoints by template.
pub(crate) fn transport_error(endpoint: Endpoint, error: reqwest::Error) -> GitLabError {
    let failure = if error.is_connect() {
        TransportFailure::Connect
    } else if error.is_timeout() {
        TransportFailure::Timeout
    } else {
        TransportFailure::Interrupted
    };
    GitLabError::Transport {
        method: endpoint.method.as_str(),
        endpoint: endpoint.template,
        failure,
        source: Box::new(error.without_url()),
    }
}

/// The error for a wait that exceeded `timeout`.
pub(crate) fn timeout_error(endpoint: Endpoint, timeout: Duration) -> GitLabError {
    GitLabError::Transport {
        method: endpoint.method.as_str(),
        endpoint: endpoint.template,
        failure: TransportFailure::Timeout,
        source: format!("no data from GitLab for {} s", timeout.as_secs_f64()).into(),
    }
}

/// A body that could not be decoded, and whether it looked cut off or garbled in transit (so a
/// GET is worth re-sending) rather than well-formed JSON of the wrong shape.
#[derive(Debug)]
pub(crate) struct BodyError {
    pub(crate) error: GitLabError,
    pub(crate) garbled: bool,
}

/// Decodes a JSON body, refusing bodies whose content type says they are something else (a
/// proxy's HTML login page, for example).
pub(crate) fn decode_body<'de, T: serde::Deserialize<'de>>(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &'de [u8],
) -> Result<T, BodyError> {
    let decode_error = |detail: String, garbled: bool| BodyError {
        error: GitLabError::Decode {
            method: endpoint.method.as_str(),
            endpoint: endpoint.template,
            detail,
        },
        garbled,
    };
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type.as_bytes());
        if !is_json_content_type(&content_type) {
            return Err(decode_error(
                format!("expected a JSON response, got content type `{content_type}`"),
                true,
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        let (what, garbled) = match e.classify() {
            serde_json::error::Category::Eof => ("truncated JSON", true),
            serde_json::error::Category::Syntax => ("malformed JSON", true),
            serde_json::error::Category::Data => ("unexpected JSON content", false),
            serde_json::error::Category::Io => ("unreadable body", true),
        };
        decode_error(format!("{what}: {e}"), garbled)
    })
}

/// [`decode_body`] for callers that do not retry (answers to state-changing requests).
pub(crate) fn decode_json<T: DeserializeOwned>(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, GitLabError> {
    decode_body(endpoint, headers, body).map_err(|failure| failure.error)
}

/// `application/json`, or any `+json` media type, parameters ignored.
fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::models::ProjectRef;
    use reqwest::header::HeaderValue;
    use std::path::Path;

    fn client(base: &str) -> GitLabClient {
        GitLabClient::new(ClientConfig::new(base.parse().unwrap(), None)).unwrap()
    }

    #[test]
    fn api_urls_keep_encoded_slashes_and_relative_roots() {
        let project = ProjectRef::parse("group/sub/project");
        let path = format!("/projects/{}/jobs", project.to_path_segment());
        let mut query = Query::new();
        query.push("scope[]", "failed").push("per_page", "100");

        let c = client("https://gitlab.example.com");
        let url = c.api_url(&path, &query).unwrap();
        assert_eq!(
            url.as_str(),
            "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fproject/jobs?scope[]=failed&per_page=100"
        );
        let c = client("https://example.com/gitlab/");
        let url = c.api_url(&path, &Query::new()).unwrap();
        assert_eq!(
            url.as_str(),
            "https://example.com/gitlab/api/v4/projects/group%2Fsub%2Fproject/jobs"
        );
    }

    #[test]
    fn dot_segments_are_refused_rather_than_normalised_away() {
        let c = client("https://gitlab.example.com");
        for path in [
            "/projects/1/jobs/2/artifacts/../../3",
            "/projects/%2E%2e/jobs",
            "/projects/./jobs",
        ] {
            let err = c.api_url(path, &Query::new()).unwrap_err();
            assert_eq!(err.kind(), "invalid_argument", "{path}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = |config: ClientConfig| GitLabClient::new(config).unwrap_err().kind();
        assert_eq!(
            bad(ClientConfig::new("ftp://x".parse().unwrap(), None)),
            "config"
        );
        let mut zero = ClientConfig::new("https://x".parse().unwrap(), None);
        zero.requests_per_minute = 0;
        assert_eq!(bad(zero), "config");
        let mut missing_ca = ClientConfig::new("https://x".parse().unwrap(), None);
        missing_ca.ca_bundle = Some("/nonexistent/ca.pem".into());
        assert_eq!(bad(missing_ca), "config");
    }

    #[test]
    fn a_ca_bundle_must_hold_certificates() {
        let with_bundle = |path: PathBuf| {
            let mut config = ClientConfig::new("https://gitlab.internal".parse().unwrap(), None);
            config.ca_bundle = Some(path);
            GitLabClient::new(config)
        };
        // A public root certificate, as a private CA's would be.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ca/isrg-root-x1.pem");
        assert!(with_bundle(root).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = with_bundle(garbage).unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/problem+json"));
        assert!(!is_json_content_type("text/html; charset=utf-8"));
        assert!(!is_json_content_type("text/plain"));
    }

    #[test]
    fn decode_errors_say_what_went_wrong() {
        let endpoint = Endpoint::GET_JOB;
        let mut headers = HeaderMap::new();
        let err = decode_json::<serde_json::Value>(endpoint, &headers, b"{\"id\": 1").unwrap_err();
        assert!(err.to_string().contains("truncated JSON"), "{err}");
        let err = decode_json::<Vec<u64>>(endpoint, &headers, b"[\"x\"]").unwrap_err();
        assert!(err.to_string().contains("unexpected JSON content"), "{err}");
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let err = decode_json::<serde_json::Value>(endpoint, &headers, b"{}").unwrap_err();
        assert!(err.to_string().contains("text/html"), "{err}");
        assert_eq!(err.kind(), "decode");
    }

    #[test]
    fn redirect_targets_resolve_relative_locations() {
        let current: Url = "https://gitlab.example.com/api/v4/projects/1/jobs/2/artifacts"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_static("/storage/abc?sig=1"));
        assert_eq!(
            redirect_target(&current, &headers).unwrap().as_str(),
            "https://gitlab.example.com/storage/abc?sig=1"
        );
        headers.insert(LOCATION, HeaderValue::from_static("file:///etc/passwd"));
        assert!(redirect_target(&current, &headers).is_none());
    }

    #[test]
    fn retryable_failures_of_a_get() {
        let api = |status| {
            AttemptError::from(GitLabError::Api {
                method: "GET",
                endpoint: "/x",
                status,
                message: String::new(),
            })
        };
        assert!(api(503).is_retryable_get());
        assert!(api(500).is_retryable_get());
        assert!(api(429).is_retryable_get());
        assert!(!api(501).is_retryable_get());
        assert!(!api(404).is_retryable_get());
        assert!(!api(403).is_retryable_get());
        let retry_after = AttemptError {
            retry_after: Some(Duration::from_secs(7)),
            ..api(503)
        };
        assert_eq!(
            retry_after.retry_delay(0, &Backoff::default()),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn debug_output_has_no_token() {
        let token = "glpat-do-not-print-me";
        let config = ClientConfig::new(
            "https://gitlab.example.com".parse().unwrap(),
            Some(Credential::PrivateToken(token.into())),
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains(token), "{debug}");
        assert!(debug.contains("PrivateToken"));
        let client = GitLabClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains(token));
    }
}
