//! Failures against a mock GitLab: which requests are retried and which are sent exactly once,
//! both shapes of 429, timeouts, dropped connections and malformed bodies (typed errors, never
//! panics).

mod support;

use axum::body::Body;
use bytes::Bytes;
use futures::TryStreamExt;
use jobwarden::gitlab::{
    GitLabClient, GitLabError, Job, LimitScope, ListJobsQuery, ProjectRef, RateLimiter,
    RateLimiterSettings, TransportFailure,
};
use std::sync::Arc;
use std::time::Duration;
use support::{MockServer, RecordingObserver, job_json, json, respond, test_client, test_config};

fn unavailable() -> axum::response::Response {
    json(
        503,
        &[],
        &serde_json::json!({"message": "503 Service Unavailable"}),
    )
}

/// A body that sends `first` and then, once that has reached the client, breaks the connection.
fn broken_body(first: &'static str) -> Body {
    use futures::StreamExt;
    let first = futures::stream::iter([Ok(Bytes::from_static(first.as_bytes()))]);
    let broken = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "gone",
        ))
    });
    Body::from_stream(first.chain(broken))
}

/// A body that arrives only after `delay`.
fn late_body(delay: Duration, content: String) -> Body {
    Body::from_stream(futures::stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::io::Error>(Bytes::from(content))
    }))
}

fn client_without_retries(server: &MockServer) -> GitLabClient {
    let mut config = test_config(server);
    config.max_get_retries = 0;
    GitLabClient::new(config).unwrap()
}

#[tokio::test]
async fn a_get_is_retried_on_503_until_it_succeeds() {
    let server = MockServer::start(|_, index| match index {
        0 | 1 => unavailable(),
        _ => json(200, &[], &job_json(5, "running")),
    })
    .await;
    let job = test_client(&server)
        .get_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap();
    assert_eq!(job.id, 5);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_get_gives_up_after_max_get_retries() {
    let server = MockServer::start(|_, _| {
        respond(
            502,
            &[("content-type", "text/html")],
            "<h1>Bad Gateway</h1>",
        )
    })
    .await;
    let err = test_client(&server)
        .get_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert!(err.to_string().contains("Bad Gateway"), "{err}");
    assert!(!err.is_ambiguous(), "a GET is never ambiguous");
    assert_eq!(server.request_count(), 4, "1 try + 3 retries");
}

#[tokio::test]
async fn a_get_is_not_retried_on_404() {
    let server =
        MockServer::start(|_, _| json(404, &[], &serde_json::json!({"message": "404 Not found"})))
            .await;
    let err = test_client(&server)
        .get_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "GET /projects/:id/jobs/:job_id failed with HTTP 404: 404 Not found"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_get_whose_body_breaks_off_is_retried() {
    let server = MockServer::start(|_, index| match index {
        0 => respond(
            200,
            &[("content-type", "application/json")],
            broken_body("{\"id\":"),
        ),
        _ => json(200, &[], &job_json(5, "running")),
    })
    .await;
    let job = test_client(&server)
        .get_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap();
    assert_eq!(job.id, 5);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_retry_post_is_sent_exactly_once_on_503() {
    let server = MockServer::start(|_, _| unavailable()).await;
    let err = test_client(&server)
        .retry_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_ambiguous(), "GitLab may have retried the job");
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.requests()[0].method, "POST");
}

#[tokio::test]
async fn every_state_change_is_sent_once_on_a_server_error() {
    let server = MockServer::start(|_, _| unavailable()).await;
    let client = test_client(&server);
    let p = ProjectRef::Id(1);
    let errors = [
        client.cancel_job(&p, 1, false).await.unwrap_err(),
        client.erase_job(&p, 1).await.unwrap_err(),
        client.play_job(&p, 1, &[]).await.unwrap_err(),
        client.keep_artifacts(&p, 1).await.unwrap_err(),
        client.delete_artifacts(&p, 1).await.unwrap_err(),
    ];
    assert!(errors.iter().all(GitLabError::is_ambiguous));
    assert_eq!(server.request_count(), errors.len());
}

#[tokio::test]
async fn a_refused_state_change_is_not_ambiguous() {
    let server = MockServer::start(|_, _| {
        json(
            403,
            &[],
            &serde_json::json!({"message": "403 Forbidden - Job is not retryable"}),
        )
    })
    .await;
    let err = test_client(&server)
        .retry_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap_err();
    assert!(!err.is_ambiguous());
    assert_eq!(
        err.to_string(),
        "POST /projects/:id/jobs/:job_id/retry failed with HTTP 403: 403 Forbidden - Job is not retryable"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_state_change_that_times_out_is_ambiguous_and_not_repeated() {
    let server = MockServer::start(|_, _| {
        respond(
            201,
            &[("content-type", "application/json")],
            late_body(Duration::from_secs(5), job_json(6, "pending").to_string()),
        )
    })
    .await;
    let mut config = test_config(&server);
    config.timeout = Duration::from_millis(200);
    let client = GitLabClient::new(config).unwrap();
    let err = client.retry_job(&ProjectRef::Id(1), 5).await.unwrap_err();
    assert!(
        matches!(
            err,
            GitLabError::Transport {
                failure: TransportFailure::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_ambiguous());
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_state_change_whose_answer_breaks_off_is_ambiguous_and_not_repeated() {
    let server = MockServer::start(|_, _| {
        respond(
            201,
            &[("content-type", "application/json")],
            broken_body("{\"id\": 6,"),
        )
    })
    .await;
    let err = test_client(&server)
        .play_job(&ProjectRef::Id(1), 5, &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert!(err.is_ambiguous());
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_state_change_with_an_unreadable_success_body_is_ambiguous() {
    let server = MockServer::start(|_, _| json(201, &[], &serde_json::json!({"id": "x"}))).await;
    let err = test_client(&server)
        .cancel_job(&ProjectRef::Id(1), 5, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "decode");
    assert!(
        err.is_ambiguous(),
        "GitLab acted, but we do not know the result"
    );
}

const JOBS_INDEX_429: &str =
    r#"{"message":{"error":"This endpoint has been requested too many times. Try again later."}}"#;

#[tokio::test]
async fn the_jobs_list_429_pauses_only_the_jobs_list() {
    // `jobs_index`: JSON body, no Retry-After, no RateLimit headers.
    let server = MockServer::start(|request, _| {
        if request.path.ends_with("/jobs") {
            respond(429, &[("content-type", "application/json")], JOBS_INDEX_429)
        } else {
            json(200, &[], &job_json(5, "running"))
        }
    })
    .await;
    let client = client_without_retries(&server);
    let err = client
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all())
        .try_collect::<Vec<Job>>()
        .await
        .unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(
        err.to_string(),
        "GET /projects/:id/jobs failed with HTTP 429: error: This endpoint has been requested too many times. Try again later."
    );
    let limiter = client.rate_limiter();
    assert!(limiter.paused_for(LimitScope::ProjectJobsList).is_some());
    assert!(limiter.paused_for(LimitScope::Instance).is_none());
    // Other endpoints carry on.
    client.get_job(&ProjectRef::Id(1), 5).await.unwrap();
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn the_rack_attack_429_pauses_the_instance_for_every_client_sharing_the_limiter() {
    let server = MockServer::start(|_, _| {
        respond(
            429,
            &[
                ("content-type", "text/plain"),
                ("ratelimit-name", "throttle_authenticated_api"),
                ("ratelimit-limit", "60"),
                ("ratelimit-observed", "61"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "4102444800"),
                ("ratelimit-resettime", "Fri, 01 Jan 2100 00:00:00 GMT"),
                ("retry-after", "30"),
            ],
            "Retry later\n",
        )
    })
    .await;
    let shared = Arc::new(RateLimiter::new(600));
    let observer = Arc::new(RecordingObserver::default());
    let mut config = test_config(&server);
    config.max_get_retries = 0;
    config.rate_limiter = Some(shared.clone());
    config.observer = observer.clone();
    let first = GitLabClient::new(config.clone()).unwrap();
    let second = GitLabClient::new(config).unwrap();

    let err = first.get_job(&ProjectRef::Id(1), 5).await.unwrap_err();
    assert!(err.is_rate_limited());
    assert!(err.to_string().ends_with("HTTP 429: Retry later"), "{err}");
    let paused = second
        .rate_limiter()
        .paused_for(LimitScope::Instance)
        .unwrap();
    assert!(paused > Duration::from_secs(1) && paused <= Duration::from_secs(30));
    let instance = server.url.as_str().trim_end_matches('/').to_owned();
    assert_eq!(*observer.remaining.lock().unwrap(), [(instance, 0)]);
}

#[tokio::test]
async fn a_throttled_get_waits_for_retry_after_and_succeeds() {
    let server = MockServer::start(|_, index| match index {
        0 => respond(
            429,
            &[("retry-after", "1"), ("content-type", "text/plain")],
            "Retry later\n",
        ),
        _ => json(
            200,
            &[("x-next-page", "")],
            &serde_json::json!([job_json(3, "failed")]),
        ),
    })
    .await;
    let jobs: Vec<Job> = test_client(&server)
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_throttled_state_change_is_sent_again_after_the_pause() {
    // A 429 proves GitLab did not act, so re-sending cannot retry the job twice.
    let server = MockServer::start(|_, index| match index {
        0 => respond(
            429,
            &[("retry-after", "1"), ("content-type", "text/plain")],
            "Retry later\n",
        ),
        _ => json(201, &[], &job_json(6, "pending")),
    })
    .await;
    let job = test_client(&server)
        .retry_job(&ProjectRef::Id(1), 5)
        .await
        .unwrap();
    assert_eq!(job.id, 6);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_throttled_state_change_gives_up_after_the_retry_budget() {
    let server = MockServer::start(|_, _| {
        respond(429, &[("content-type", "application/json")], JOBS_INDEX_429)
    })
    .await;
    let mut config = test_config(&server);
    config.max_get_retries = 1;
    config.rate_limiter = Some(Arc::new(RateLimiter::with_settings(RateLimiterSettings {
        unannounced_throttle_pause: Duration::from_millis(10),
        ..RateLimiterSettings::new(60_000)
    })));
    let client = GitLabClient::new(config).unwrap();
    let err = client.erase_job(&ProjectRef::Id(1), 5).await.unwrap_err();
    assert!(err.is_rate_limited());
    assert!(!err.is_ambiguous());
    assert_eq!(server.request_count(), 2);
}

/// Every malformed answer to `GET /projects/:id/jobs/:job_id`, the error kind it must give, and
/// whether it is sent again: a body cut off or garbled in transit is retried like a 5xx, valid
/// JSON of the wrong shape and an oversized body are not.
#[tokio::test]
async fn malformed_answers_are_typed_errors() {
    type Answer = Box<dyn Fn() -> axum::response::Response + Send + Sync>;
    let json_type = [("content-type", "application/json")];
    let cases: Vec<(&str, Answer, &str, &str, bool)> = vec![
        (
            "truncated JSON",
            Box::new(move || respond(200, &json_type, r#"{"id": 5, "status": "fai"#)),
            "decode",
            "truncated JSON",
            true,
        ),
        (
            "wrong types",
            Box::new(|| json(200, &[], &serde_json::json!({"id": "five", "status": 3}))),
            "decode",
            "unexpected JSON content",
            false,
        ),
        (
            "missing fields",
            Box::new(|| json(200, &[], &serde_json::json!({"id": 5}))),
            "decode",
            "missing field",
            false,
        ),
        (
            "not UTF-8",
            Box::new(move || {
                respond(
                    200,
                    &json_type,
                    Bytes::from_static(b"{\"id\": 5, \"name\": \"\xff\xfe\"}"),
                )
            }),
            "decode",
            "malformed JSON: invalid unicode",
            true,
        ),
        (
            "an HTML page",
            Box::new(|| {
                respond(
                    200,
                    &[("content-type", "text/html; charset=utf-8")],
                    "<html>Sign in</html>",
                )
            }),
            "decode",
            "text/html",
            true,
        ),
        (
            "an empty body",
            Box::new(move || respond(200, &json_type, "")),
            "decode",
            "truncated JSON",
            true,
        ),
        (
            "a huge body with a length",
            Box::new(move || respond(200, &json_type, vec![b' '; 1024 * 1024])),
            "body_too_large",
            "limit of 65536 bytes",
            false,
        ),
        (
            "a huge streamed body",
            Box::new(move || {
                respond(
                    200,
                    &json_type,
                    Body::from_stream(futures::stream::iter(
                        (0..64)
                            .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 16 * 1024]))),
                    )),
                )
            }),
            "body_too_large",
            "limit of 65536 bytes",
            false,
        ),
    ];
    for (what, answer, kind, detail, retried) in cases {
        let server = MockServer::start(move |_, _| answer()).await;
        let mut config = test_config(&server);
        config.max_body_bytes = 64 * 1024;
        config.max_get_retries = 2;
        let client = GitLabClient::new(config).unwrap();
        let err = client.get_job(&ProjectRef::Id(1), 5).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(err.to_string().contains(detail), "{what}: {err}");
        let sent = if retried { 3 } else { 1 };
        assert_eq!(server.request_count(), sent, "{what}: attempts");
    }
}

/// A page that arrives cut off once is fetched again, and the listing goes on as if nothing
/// happened: the project is not skipped for the run.
#[tokio::test]
async fn a_truncated_page_is_fetched_again() {
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let server = MockServer::start(move |_, _| {
        let job = job_json(5, "failed");
        if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let full = serde_json::to_string(&vec![job]).unwrap();
            respond(
                200,
                &[("content-type", "application/json")],
                full[..full.len() / 2].to_owned(),
            )
        } else {
            json(200, &[("x-next-page", "")], &serde_json::json!([job]))
        }
    })
    .await;
    let client = GitLabClient::new(test_config(&server)).unwrap();
    let jobs: Vec<Job> = client
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::default())
        .try_collect()
        .await
        .expect("the second answer is whole");
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![5]);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn an_error_page_that_echoes_the_token_is_reported_without_it() {
    // A proxy's debug page that prints the request headers, token included, after 270
    // characters of padding: the message is cut at 300, in the middle of the token.
    let server = MockServer::start(|request, _| {
        let token = request.header("private-token").unwrap_or_default();
        let page = format!("{} PRIVATE-TOKEN: {token}", "x".repeat(270));
        respond(403, &[("content-type", "text/plain")], page)
    })
    .await;
    let err = test_client(&server)
        .get_job(&ProjectRef::Id(1), 1)
        .await
        .expect_err("403");
    let shown = format!("{err} {err:?}");
    assert_eq!(err.status(), Some(403));
    assert!(!shown.contains(support::TOKEN), "{shown}");
    assert!(
        !shown.contains(&support::TOKEN[..8]),
        "no part of it: {shown}"
    );
}
