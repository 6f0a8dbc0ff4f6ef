//! A scripted Kubernetes API for unit tests: a `kube::Client` over a `tower-test` mock, and
//! helpers to take the next request, check it, and answer it (the `ApiServerVerifier` pattern).

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::time::Duration;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
pub type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// How long a test waits for the code under test to send its next request.
const NEXT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose requests arrive at the returned handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request the code under test sent.
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/ci/secrets/gitlab`.
    pub uri: String,
    pub content_type: Option<String>,
    pub body: Value,
    responder: Responder,
}

impl Seen {
    /// `METHOD /path` without the query.
    pub fn route(&self) -> String {
        let path = self.uri.split('?').next().unwrap_or_default();
        format!("{} {}", self.method, path)
    }

    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap_or_else(|_| Response::new(Body::from(Vec::new())));
        self.responder.send_response(response);
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: &Value) {
        self.respond(StatusCode::OK, body);
    }

    /// Answers with a Kubernetes `Status` error.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.respond(
            status,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": reason, "code": code
            }),
        );
    }
}

/// The next request, or `None` when every client is gone. Panics (fails the test) if nothing
/// arrives in time.
pub async fn next(handle: &mut Handle) -> Option<Seen> {
    let (request, responder) = tokio::time::timeout(NEXT_REQUEST_TIMEOUT, handle.next_request())
        .await
        .expect("the code under test sent its next request in time")?;
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect_bytes()
        .await
        .expect("the request body is readable");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("the request body is JSON")
    };
    Some(Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        responder,
    })
}

/// The next request, which must exist and be `route` (`METHOD /path`).
pub async fn expect(handle: &mut Handle, route: &str) -> Seen {
    let seen = next(handle)
        .await
        .unwrap_or_else(|| panic!("expected {route}, but the client was dropped"));
    assert_eq!(seen.route(), route, "unexpected request");
    seen
}

/// Answers a watch's first list with no object (kind `JobPolicyList`).
pub fn answer_empty_policy_list(list: Seen) {
    list.ok(&json!({
        "apiVersion": "jobwarden.dev/v1alpha1", "kind": "JobPolicyList",
        "metadata": {"resourceVersion": "1"}, "items": []
    }));
}

/// Answers a candidate's read of the Lease `jobwarden-system/jobwarden` with 404, then expects
/// its creation and answers 201 with what was sent (at `resourceVersion` 1); returns that.
pub async fn answer_lease_created(handle: &mut Handle) -> Value {
    expect(
        handle,
        "GET /apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases/jobwarden",
    )
    .await
    .fail(
        404,
        "NotFound",
        "leases.coordination.k8s.io \"jobwarden\" not found",
    );
    let create = expect(
        handle,
        "POST /apis/coordination.k8s.io/v1/namespaces/jobwarden-system/leases",
    )
    .await;
    let mut created = create.body.clone();
    created["metadata"]["resourceVersion"] = json!("1");
    create.respond(StatusCode::CREATED, &created);
    created
}

/// An engine that never reaches a GitLab (none is configured) but accepts `http://` URLs.
pub fn offline_engine() -> crate::engine::Engine {
    crate::engine::Engine::new(
        crate::engine::EngineConfig {
            destinations: crate::gitlab::TokenDestinations::insecure_http_allowed(),
            ..crate::engine::EngineConfig::default()
        },
        crate::engine::system_clock(),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    )
}

/// Fires `stop`, drops the scripted apiserver (requests still waiting fail) and waits for
/// `task` to end.
pub async fn stop_and_join(
    stop: &tokio_util::sync::CancellationToken,
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
) {
    stop.cancel();
    drop(handle);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task stops in time")
        .expect("the task ends without panicking");
}
