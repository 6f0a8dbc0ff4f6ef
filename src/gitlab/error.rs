//! The client's error type, and the rendering of GitLab's error bodies into one message.
//!
//! GitLab answers errors in several shapes (`docs/gitlab-behaviour.md` §5.1): `{"message":"..."}`,
//! `{"message":{"error":"..."}}` (the `jobs_index` 429, validation errors), `{"error":"..."}`
//! (Grape parameter errors), `{"error":"...","error_description":"..."}` (OAuth token errors) and
//! plain text (Rack::Attack's `Retry later`, proxies' HTML pages).

use crate::gitlab::endpoints::Method;
use std::fmt;

/// Any error a source (`std::error::Error`) can be boxed into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The longest message kept from an error body, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportFailure {
    /// No connection was made (DNS, refused, TLS handshake, connect timeout): the request was
    /// never sent.
    Connect,
    /// No (complete) answer arrived in time. The request may have been processed.
    Timeout,
    /// The connection broke after the request was sent (reset, closed mid-body).
    Interrupted,
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportFailure::Connect => "connection failed",
            TransportFailure::Timeout => "timed out",
            TransportFailure::Interrupted => "connection interrupted",
        })
    }
}

/// An error from the GitLab client. `Display` names the endpoint by its route template and
/// includes GitLab's message; it never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    /// GitLab (or a proxy in front of it) answered with a non-success status.
    #[error("{method} {endpoint} failed with HTTP {status}: {message}")]
    Api {
        method: &'static str,
        endpoint: &'static str,
        status: u16,
        /// GitLab's message, extracted from whatever shape the body had.
        message: String,
    },

    /// No HTTP answer: connect error, timeout, dropped connection.
    #[error("{method} {endpoint}: {failure}: {}", render_chain(.source.as_ref()))]
    Transport {
        method: &'static str,
        endpoint: &'static str,
        failure: TransportFailure,
        source: BoxError,
    },

    /// A success response whose body is not what the endpoint returns: malformed or truncated
    /// JSON, wrong types, not UTF-8, or not JSON at all.
    #[error("cannot decode the response to {method} {endpoint}: {detail}")]
    Decode {
        method: &'static str,
        endpoint: &'static str,
        detail: String,
    },

    /// A response body larger than the client accepts.
    #[error("the response to {method} {endpoint} exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        method: &'static str,
        endpoint: &'static str,
        limit: u64,
    },

    /// GitLab's pagination did not end: it repeated a page or exceeded the page cap.
    #[error("paging through {endpoint} stopped: {detail}")]
    Pagination {
        endpoint: &'static str,
        detail: String,
    },

    /// The writer a download streams into failed.
    #[error("cannot write the body of {endpoint}: {source}")]
    Write {
        endpoint: &'static str,
        source: std::io::Error,
    },

    /// The client configuration is invalid.
    #[error("invalid GitLab client configuration: {0}")]
    Config(String),

    /// An argument cannot be turned into a request (a `..` segment in an artifact path, say).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl GitLabError {
    /// The HTTP status GitLab answered with, if it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitLabError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when GitLab said 404 (unknown project or job, no artifacts, no log).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when GitLab refused the request because of a rate limit.
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// A stable, low-cardinality name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            GitLabError::Api { .. } => "api_error",
            GitLabError::Transport { .. } => "transport",
            GitLabError::Decode { .. } => "decode",
            GitLabError::BodyTooLarge { .. } => "body_too_large",
            GitLabError::Pagination { .. } => "pagination",
            GitLabError::Write { .. } => "write",
            GitLabError::Config(_) => "config",
            GitLabError::InvalidArgument(_) => "invalid_argument",
        }
    }

    /// True when a state-changing request (POST, DELETE) may or may not have taken effect, so the
    /// caller must re-read the job before deciding again instead of re-sending: a timeout or a
    /// connection dropped after the request was sent, a 5xx (a gateway may have forwarded it), or
    /// a success response whose body could not be read. Always false for GETs, for connect
    /// failures (nothing was sent) and for 4xx answers (GitLab refused).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            GitLabError::Api { method, status, .. } => is_state_changing(method) && *status >= 500,
            GitLabError::Transport {
                method, failure, ..
            } => is_state_changing(method) && *failure != TransportFailure::Connect,
            GitLabError::Decode { method, .. } | GitLabError::BodyTooLarge { method, .. } => {
                is_state_changing(method)
            }
            GitLabError::Pagination { .. }
            | GitLabError::Write { .. }
            | GitLabError::Config(_)
            | GitLabError::InvalidArgument(_) => false,
        }
    }
}

fn is_state_changing(method: &str) -> bool {
    method != Method::Get.as_str()
}

/// Renders an error and its sources as `outer: inner: innermost`, skipping repeated texts.
fn render_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Extracts GitLab's message from an error body of any known shape. Falls back to the status'
/// reason phrase for an empty body.
pub(crate) fn api_message(status: u16, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => message_from_json(&value),
        Err(_) => plain_text(body),
    };
    if message.is_empty() {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_owned()
    } else {
        truncate(&message)
    }
}

fn message_from_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let Value::Object(map) = value else {
        return compact(value);
    };
    if let Some(message) = map.get("message") {
        return compact(message);
    }
    if let Some(error) = map.get("error") {
        let error = compact(error);
        return match map.get("error_description").map(compact) {
            Some(description) if !description.is_empty() => format!("{error}: {description}"),
            _ => error,
        };
    }
    compact(value)
}

/// Renders a JSON value for humans: strings bare, arrays joined with `, `, objects as
/// `key: value; key: value`.
fn compact(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", compact(v)))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn plain_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shapes_from_the_api_notes() {
        let cases: &[(u16, &str, &str)] = &[
            (
                404,
                r#"{"message":"404 Project Not Found"}"#,
                "404 Project Not Found",
            ),
            (404, r#"{"message":"404 Not found"}"#, "404 Not found"),
            (
                403,
                r#"{"message":"403 Forbidden - Job is not retryable"}"#,
                "403 Forbidden - Job is not retryable",
            ),
            (
                429,
                r#"{"message":{"error":"This endpoint has been requested too many times. Try again later."}}"#,
                "error: This endpoint has been requested too many times. Try again later.",
            ),
            (
                400,
                r#"{"message":{"name":["can't be blank","is too short"],"base":["x"]}}"#,
                "base: x; name: can't be blank, is too short",
            ),
            (
                400,
                r#"{"error":"scope does not have a valid value"}"#,
                "scope does not have a valid value",
            ),
            (
                401,
                r#"{"error":"invalid_token","error_description":"Token is expired. You can either do re-authorization or token refresh."}"#,
                "invalid_token: Token is expired. You can either do re-authorization or token refresh.",
            ),
            (
                403,
                r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api read_api"}"#,
                "insufficient_scope: The request requires higher privileges than provided by the access token.",
            ),
            (429, "Retry later\n", "Retry later"),
            (503, "", "Service Unavailable"),
            (
                502,
                "<html>\n<body>Bad   Gateway</body></html>",
                "<html> <body>Bad Gateway</body></html>",
            ),
            (418, "[1,2]", "1, 2"),
        ];
        for (status, body, want) in cases {
            assert_eq!(api_message(*status, body.as_bytes()), *want, "body {body}");
        }
    }

    #[test]
    fn long_and_non_utf8_bodies_are_tamed() {
        let long = "x".repeat(10_000);
        let message = api_message(500, long.as_bytes());
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(
            api_message(500, b"bad \xff\xfe bytes"),
            "bad \u{fffd}\u{fffd} bytes"
        );
    }

    fn api(method: Method, status: u16) -> GitLabError {
        GitLabError::Api {
            method: method.as_str(),
            endpoint: "/projects/:id/jobs/:job_id/retry",
            status,
            message: "m".into(),
        }
    }

    fn transport(method: Method, failure: TransportFailure) -> GitLabError {
        GitLabError::Transport {
            method: method.as_str(),
            endpoint: "/projects/:id/jobs/:job_id/retry",
            failure,
            source: "boom".into(),
        }
    }

    #[test]
    fn ambiguity_only_for_state_changes_with_unknown_outcome() {
        assert!(api(Method::Post, 503).is_ambiguous());
        assert!(api(Method::Delete, 502).is_ambiguous());
        assert!(!api(Method::Post, 403).is_ambiguous());
        assert!(!api(Method::Post, 429).is_ambiguous());
        assert!(!api(Method::Get, 503).is_ambiguous());
        assert!(transport(Method::Post, TransportFailure::Timeout).is_ambiguous());
        assert!(transport(Method::Post, TransportFailure::Interrupted).is_ambiguous());
        assert!(!transport(Method::Post, TransportFailure::Connect).is_ambiguous());
        assert!(!transport(Method::Get, TransportFailure::Timeout).is_ambiguous());
        let decode = GitLabError::Decode {
            method: "POST",
            endpoint: "/x",
            detail: "eof".into(),
        };
        assert!(decode.is_ambiguous());
    }

    #[test]
    fn accessors_and_display() {
        let e = api(Method::Get, 404);
        assert!(e.is_not_found());
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.kind(), "api_error");
        assert_eq!(
            e.to_string(),
            "GET /projects/:id/jobs/:job_id/retry failed with HTTP 404: m"
        );
        let t = transport(Method::Get, TransportFailure::Timeout);
        assert_eq!(t.status(), None);
        assert_eq!(t.kind(), "transport");
        assert_eq!(
            t.to_string(),
            "GET /projects/:id/jobs/:job_id/retry: timed out: boom"
        );
    }

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<std::io::Error>);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn chains_are_rendered_with_their_causes_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Wrapper("error sending request", Some(refused()));
        assert_eq!(render_chain(&outer), "error sending request: refused");
        let repeated = Wrapper("tcp connect: refused", Some(refused()));
        assert_eq!(render_chain(&repeated), "tcp connect: refused");
    }
}
