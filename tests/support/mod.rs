//! A tiny programmable GitLab stand-in for the client tests: an axum server on 127.0.0.1:0 that
//! records every request and answers with whatever the test's handler returns. It stops when
//! dropped.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use jobwarden::gitlab::{
    Backoff, ClientConfig, Credential, GitLabClient, RateLimiter, RateLimiterSettings,
    RequestObserver,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// One request as the mock server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The raw path, percent-encoding untouched.
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The decoded query pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// Every value of one query key.
    pub fn query_values(&self, key: &str) -> Vec<String> {
        self.query_pairs()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Response + Send + Sync + 'static;

/// A running mock server.
pub struct MockServer {
    pub url: Url,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts a server whose answers come from `handler(request, index)`, `index` counting
    /// requests from 0.
    pub async fn start<F>(handler: F) -> MockServer
    where
        F: Fn(&Recorded, usize) -> Response + Send + Sync + 'static,
    {
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::new(AtomicUsize::new(0));
        let recorded = requests.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let handler = handler.clone();
            let recorded = recorded.clone();
            let counter = counter.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1024 * 1024)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let request = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    headers: parts.headers,
                    body,
                };
                let index = counter.fetch_add(1, Ordering::SeqCst);
                recorded.lock().unwrap().push(request.clone());
                handler(&request, index)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockServer {
            url: format!("http://{address}").parse().unwrap(),
            requests,
            task,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token the tests authenticate with; it must never show up in output.
pub const TOKEN: &str = "glpat-test-token-do-not-leak";

/// A client config for tests: fast backoff, a generous private rate limiter, a short timeout.
pub fn test_config(server: &MockServer) -> ClientConfig {
    let mut config = ClientConfig::new(
        server.url.clone(),
        Some(Credential::PrivateToken(TOKEN.into())),
    );
    config.timeout = Duration::from_secs(10);
    config.retry_backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    config.rate_limiter = Some(Arc::new(RateLimiter::with_settings(RateLimiterSettings {
        burst: 1000,
        ..RateLimiterSettings::new(60_000)
    })));
    config
}

pub fn test_client(server: &MockServer) -> GitLabClient {
    GitLabClient::new(test_config(server)).unwrap()
}

/// A response with a status, headers and body.
pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

/// A JSON response.
pub fn json(status: u16, headers: &[(&str, &str)], value: &serde_json::Value) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    respond(status, &all, value.to_string())
}

/// A job as GitLab's `Entities::Ci::Job` renders it (trimmed to what the tests need).
pub fn job_json(id: u64, status: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "status": status,
        "stage": "test",
        "name": format!("job-{id}"),
        "ref": "main",
        "tag": false,
        "coverage": null,
        "allow_failure": false,
        "created_at": "2024-05-01T10:00:00.000Z",
        "started_at": null,
        "finished_at": null,
        "erased_at": null,
        "duration": null,
        "queued_duration": null,
        "user": null,
        "pipeline": {"id": 77, "project_id": 1, "ref": "main", "sha": "abc", "status": "running"},
        "web_url": format!("https://gitlab.example.com/g/p/-/jobs/{id}"),
        "artifacts": [],
        "runner": null,
        "tag_list": []
    })
}

/// The jobs with ids `from` down to `from - count + 1`.
pub fn jobs_page(from: u64, count: u64) -> serde_json::Value {
    serde_json::Value::Array((0..count).map(|i| job_json(from - i, "failed")).collect())
}

/// An observer that records what it is told.
#[derive(Debug, Default)]
pub struct RecordingObserver {
    pub requests: Mutex<Vec<(&'static str, Option<u16>)>>,
    pub remaining: Mutex<Vec<(String, u64)>>,
}

impl RequestObserver for RecordingObserver {
    fn on_request(&self, endpoint: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.requests.lock().unwrap().push((endpoint, status));
    }

    fn on_rate_limit_remaining(&self, instance: &str, remaining: u64) {
        self.remaining
            .lock()
            .unwrap()
            .push((instance.to_owned(), remaining));
    }
}
