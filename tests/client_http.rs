//! What the client puts on the wire: paths (with `%2F` intact), credentials, bodies and query
//! parameters of every endpoint, redirects, and what it reports to its observer.

mod support;

use jobwarden::gitlab::{
    ClientConfig, Credential, GitLabClient, JobStatus, JobVariable, ProjectRef,
};
use std::sync::Arc;
use support::{
    MockServer, RecordingObserver, TOKEN, job_json, json, respond, test_client, test_config,
};

fn agents_json() -> serde_json::Value {
    serde_json::json!({
        "allowed_agents": [{"id": 1, "config_project": {"id": 1, "name": "project1"}}],
        "job": {"id": 1},
        "pipeline": {"id": 2},
        "project": {"id": 1, "groups": [{"id": 1}, {"id": 2}]},
        "user": {"id": 2, "name": "John Doe3", "username": "user2"}
    })
}

/// Answers like GitLab for every endpoint the client knows, by path.
async fn gitlab_like() -> MockServer {
    MockServer::start(|request, _| {
        let path = request.path.as_str();
        match (request.method.as_str(), path) {
            ("GET", "/api/v4/job/allowed_agents") => json(200, &[], &agents_json()),
            ("GET", "/api/v4/job") => json(200, &[], &job_json(8, "running")),
            ("DELETE", _) => respond(204, &[], ""),
            ("POST", p) if p.ends_with("/play") => json(200, &[], &job_json(43, "pending")),
            ("POST", p) if p.ends_with("/retry") => json(201, &[], &job_json(44, "pending")),
            ("POST", p) if p.ends_with("/cancel") => json(201, &[], &job_json(42, "canceled")),
            ("POST", _) => json(201, &[], &job_json(42, "failed")),
            ("GET", p) if p.ends_with("/trace") => {
                respond(200, &[("content-type", "text/plain")], "line 1\nline 2\n")
            }
            ("GET", p) if p.contains("/artifacts") => respond(
                200,
                &[("content-type", "application/octet-stream")],
                "PK-archive",
            ),
            ("GET", _) => json(200, &[], &job_json(42, "failed")),
            _ => respond(405, &[], ""),
        }
    })
    .await
}

#[tokio::test]
async fn every_endpoint_goes_to_its_path_with_the_project_path_encoded() {
    let server = gitlab_like().await;
    let client = test_client(&server);
    let project = ProjectRef::parse("group/sub/my.project");
    let mut sink = Vec::new();

    assert_eq!(client.get_job(&project, 42).await.unwrap().id, 42);
    assert_eq!(
        client.job_log_tail(&project, 42, 7).await.unwrap(),
        "line 2\n"
    );
    assert_eq!(
        client
            .download_job_log(&project, 42, &mut sink)
            .await
            .unwrap(),
        14
    );
    assert_eq!(
        client.cancel_job(&project, 42, false).await.unwrap().status,
        JobStatus::Canceled
    );
    client.cancel_job(&project, 42, true).await.unwrap();
    assert_eq!(client.retry_job(&project, 42).await.unwrap().id, 44);
    client.erase_job(&project, 42).await.unwrap();
    assert_eq!(client.play_job(&project, 42, &[]).await.unwrap().id, 43);
    client.keep_artifacts(&project, 42).await.unwrap();
    client.delete_artifacts(&project, 42).await.unwrap();
    client
        .download_artifacts(&project, 42, &mut sink)
        .await
        .unwrap();
    client
        .download_artifacts_by_ref(&project, "feature/login", "build & test", &mut sink)
        .await
        .unwrap();
    client
        .download_artifact_file(&project, 42, "some/release/file 1.pdf", &mut sink)
        .await
        .unwrap();
    client
        .download_artifact_file_by_ref(&project, "v1.0", "pdf", "some/file.pdf", &mut sink)
        .await
        .unwrap();
    assert_eq!(client.current_job().await.unwrap().id, 8);
    let agents = client.allowed_agents().await.unwrap();
    assert_eq!(agents.allowed_agents[0].id, 1);
    assert_eq!(agents.job.id, 1);

    let seen: Vec<(String, String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.query))
        .collect();
    let p = "/api/v4/projects/group%2Fsub%2Fmy.project";
    let want: Vec<(String, String, String)> = [
        ("GET", format!("{p}/jobs/42"), ""),
        ("GET", format!("{p}/jobs/42/trace"), ""),
        ("GET", format!("{p}/jobs/42/trace"), ""),
        ("POST", format!("{p}/jobs/42/cancel"), ""),
        ("POST", format!("{p}/jobs/42/cancel"), "force=true"),
        ("POST", format!("{p}/jobs/42/retry"), ""),
        ("POST", format!("{p}/jobs/42/erase"), ""),
        ("POST", format!("{p}/jobs/42/play"), ""),
        ("POST", format!("{p}/jobs/42/artifacts/keep"), ""),
        ("DELETE", format!("{p}/jobs/42/artifacts"), ""),
        ("GET", format!("{p}/jobs/42/artifacts"), ""),
        (
            "GET",
            format!("{p}/jobs/artifacts/feature%2Flogin/download"),
            "job=build%20%26%20test",
        ),
        (
            "GET",
            format!("{p}/jobs/42/artifacts/some/release/file%201.pdf"),
            "",
        ),
        (
            "GET",
            format!("{p}/jobs/artifacts/v1.0/raw/some/file.pdf"),
            "job=pdf",
        ),
        ("GET", "/api/v4/job".to_owned(), ""),
        ("GET", "/api/v4/job/allowed_agents".to_owned(), ""),
    ]
    .into_iter()
    .map(|(m, p, q)| (m.to_owned(), p, q.to_owned()))
    .collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_relative_url_root_is_kept() {
    let server = gitlab_like().await;
    let mut config = test_config(&server);
    config.base_url = server.url.join("/gitlab/").unwrap();
    let client = GitLabClient::new(config).unwrap();
    client.get_job(&ProjectRef::parse("a/b"), 1).await.unwrap();
    assert_eq!(
        server.requests()[0].path,
        "/gitlab/api/v4/projects/a%2Fb/jobs/1"
    );
}

#[tokio::test]
async fn play_sends_job_variables_as_json() {
    let server = gitlab_like().await;
    let client = test_client(&server);
    let variables = [
        JobVariable {
            key: "TEST_VAR_1".into(),
            value: "test1".into(),
        },
        JobVariable {
            key: "TEST_VAR_2".into(),
            value: "a \"quoted\" value".into(),
        },
    ];
    client
        .play_job(&ProjectRef::Id(1), 5, &variables)
        .await
        .unwrap();
    let request = &server.requests()[0];
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"job_variables_attributes": [
            {"key": "TEST_VAR_1", "value": "test1"},
            {"key": "TEST_VAR_2", "value": "a \"quoted\" value"}
        ]})
    );
}

#[tokio::test]
async fn each_credential_travels_in_its_own_header() {
    let server = gitlab_like().await;
    let cases = [
        (
            Some(Credential::PrivateToken(TOKEN.into())),
            Some(("private-token", TOKEN.to_owned())),
        ),
        (
            Some(Credential::Bearer(TOKEN.into())),
            Some(("authorization", format!("Bearer {TOKEN}"))),
        ),
        (
            Some(Credential::JobToken(TOKEN.into())),
            Some(("job-token", TOKEN.to_owned())),
        ),
        (None, None),
    ];
    for (credential, expected) in cases {
        let mut config = test_config(&server);
        config.credential = credential;
        let client = GitLabClient::new(config).unwrap();
        client.current_job().await.unwrap();
        let request = server.requests().pop().unwrap();
        let auth_headers: Vec<(String, String)> = ["private-token", "authorization", "job-token"]
            .into_iter()
            .filter_map(|name| request.header(name).map(|v| (name.to_owned(), v)))
            .collect();
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        assert_eq!(auth_headers, expected);
    }
}

#[tokio::test]
async fn the_token_never_appears_in_debug_output_or_errors() {
    let server = MockServer::start(|_, _| {
        json(
            401,
            &[],
            &serde_json::json!({"message": "401 Unauthorized"}),
        )
    })
    .await;
    let config = test_config(&server);
    assert!(!format!("{config:?}").contains(TOKEN));
    let client = GitLabClient::new(config).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN));
    let err = client.get_job(&ProjectRef::Id(1), 1).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("401 Unauthorized"));
    assert!(!err.to_string().contains(TOKEN));
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn redirects_keep_the_token_at_home_and_drop_it_elsewhere() {
    let storage = MockServer::start(|_, _| respond(200, &[], "archive-bytes")).await;
    let storage_url = storage
        .url
        .join("/bucket/artifacts.zip?signature=abc")
        .unwrap();
    let gitlab = MockServer::start(move |request, _| {
        if request.path.ends_with("/jobs/1/artifacts") {
            // Same host: an internal redirect.
            respond(
                302,
                &[("location", "/api/v4/projects/1/jobs/2/artifacts")],
                "",
            )
        } else {
            respond(302, &[("location", storage_url.as_str())], "")
        }
    })
    .await;
    let client = test_client(&gitlab);
    let mut sink = Vec::new();
    let written = client
        .download_artifacts(&ProjectRef::Id(1), 1, &mut sink)
        .await
        .unwrap();
    assert_eq!(written, 13);
    assert_eq!(sink, b"archive-bytes");

    let at_gitlab = gitlab.requests();
    assert_eq!(at_gitlab.len(), 2);
    assert!(
        at_gitlab
            .iter()
            .all(|r| r.header("private-token").as_deref() == Some(TOKEN))
    );
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].query, "signature=abc");
    assert_eq!(at_storage[0].header("private-token"), None);
}

#[tokio::test]
async fn a_redirect_loop_is_an_error() {
    let server =
        MockServer::start(|request, _| respond(302, &[("location", &request.path)], "")).await;
    let client = test_client(&server);
    let err = client.get_job(&ProjectRef::Id(1), 1).await.unwrap_err();
    assert_eq!(err.status(), Some(302));
    assert!(err.to_string().contains("redirects"), "{err}");
    assert_eq!(server.request_count(), 6);
}

#[tokio::test]
async fn the_observer_hears_every_attempt_and_the_remaining_budget() {
    let server = MockServer::start(|_, index| match index {
        0 => respond(503, &[("ratelimit-remaining", "17")], ""),
        _ => json(
            200,
            &[("ratelimit-remaining", "16")],
            &job_json(1, "failed"),
        ),
    })
    .await;
    let observer = Arc::new(RecordingObserver::default());
    let mut config = test_config(&server);
    config.observer = observer.clone();
    let client = GitLabClient::new(config).unwrap();
    client.get_job(&ProjectRef::Id(1), 1).await.unwrap();
    client.retry_job(&ProjectRef::Id(1), 1).await.unwrap();

    assert_eq!(
        *observer.requests.lock().unwrap(),
        [
            ("/projects/:id/jobs/:job_id", Some(503)),
            ("/projects/:id/jobs/:job_id", Some(200)),
            ("/projects/:id/jobs/:job_id/retry", Some(200)),
        ]
    );
    let instance = server.url.as_str().trim_end_matches('/').to_owned();
    assert_eq!(
        *observer.remaining.lock().unwrap(),
        [
            (instance.clone(), 17),
            (instance.clone(), 16),
            (instance, 16)
        ]
    );
}

#[tokio::test]
async fn a_failed_connection_is_reported_without_a_status() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: url::Url = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let observer = Arc::new(RecordingObserver::default());
    let mut config = ClientConfig::new(url, None);
    config.observer = observer.clone();
    config.max_get_retries = 0;
    let client = GitLabClient::new(config).unwrap();
    let err = client.get_job(&ProjectRef::Id(1), 1).await.unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert_eq!(
        *observer.requests.lock().unwrap(),
        [("/projects/:id/jobs/:job_id", None)]
    );
    // Nothing was sent, so even a state change is not ambiguous.
    let err = client.retry_job(&ProjectRef::Id(1), 1).await.unwrap_err();
    assert!(matches!(
        err,
        jobwarden::gitlab::GitLabError::Transport {
            failure: jobwarden::gitlab::TransportFailure::Connect,
            ..
        }
    ));
    assert!(!err.is_ambiguous());
}
