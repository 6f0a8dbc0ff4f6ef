//! The reconcile function against a scripted API server: every request it makes is checked
//! and answered in turn, and after the reconcile no other request may follow.

use super::*;
use crate::engine::EngineConfig;
use crate::gitlab::TokenDestinations;
use crate::metrics::Metrics;
use crate::sim::{Clock, JobSpec, PipelineSpec, SimConfig, SimHandle, Simulator};
use crate::source::kube::test_api::{
    Handle, answer_empty_policy_list, expect, mock_client, next, offline_engine, stop_and_join,
};
use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};

const STATUS_CONTENT_TYPE: &str = "application/merge-patch+json";
const TOKEN: &str = "glpat-controller-test";

fn policy(namespace: &str, name: &str, url: &str, rules: Value, extra: Value) -> JobPolicy {
    let mut spec = json!({
        "gitlab": {"url": url, "tokenSecretRef": {"name": "gitlab-token", "key": "token"}},
        "projects": ["team/app"],
        "interval": "30s",
        "rules": rules,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "jobwarden.dev/v1alpha1",
        "kind": "JobPolicy",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
            "generation": 3, "resourceVersion": "100"
        },
        "spec": spec,
    }))
    .expect("test policy deserializes")
}

fn retry_rules() -> Value {
    json!([{
        "name": "retry-stuck",
        "match": {"statuses": ["failed"], "failureReasons": ["stuck_or_timeout_failure"]},
        "retry": {"limit": 2}
    }])
}

fn context(client: Client, engine: Engine) -> Arc<Context> {
    sharded_context(client, engine, Shard::ALL)
}

fn sharded_context(client: Client, engine: Engine, shard: Shard) -> Arc<Context> {
    Arc::new(Context::new(
        engine,
        client.clone(),
        Arc::new(EventPublisher::new(client, "test-replica")),
        shard,
        CancellationToken::new(),
    ))
}

fn status_path(namespace: &str, name: &str) -> String {
    format!("PATCH /apis/jobwarden.dev/v1alpha1/namespaces/{namespace}/jobpolicies/{name}/status")
}

fn events_path(namespace: &str) -> String {
    format!("POST /apis/events.k8s.io/v1/namespaces/{namespace}/events")
}

fn secret_path(namespace: &str) -> String {
    format!("GET /api/v1/namespaces/{namespace}/secrets/gitlab-token")
}

/// Answers a status patch with the policy carrying the patched status.
fn answer_status_patch(seen: crate::source::kube::test_api::Seen, policy: &JobPolicy) -> Value {
    assert_eq!(seen.content_type.as_deref(), Some(STATUS_CONTENT_TYPE));
    let status = seen.body["status"].clone();
    let mut object = serde_json::to_value(policy).expect("policy serializes");
    object["status"] = status.clone();
    seen.ok(&object);
    status
}

/// Answers an Event creation by echoing it.
fn answer_event(seen: crate::source::kube::test_api::Seen) -> Value {
    let event = seen.body.clone();
    seen.respond(StatusCode::CREATED, &event);
    event
}

/// After the reconcile returned and the context is gone, no request may follow.
async fn assert_no_more_requests(mut api: Handle) {
    if let Some(extra) = next(&mut api).await {
        panic!("unexpected request after the reconcile: {}", extra.route());
    }
}

#[tokio::test]
async fn an_invalid_spec_sends_exactly_a_status_patch_and_a_warning_event() {
    let (client, mut api) = mock_client();
    let bad = invalid_policy();
    let ctx = context(client, offline_engine());
    let object = bad.clone();
    let verifier = tokio::spawn(async move {
        let status =
            answer_status_patch(expect(&mut api, &status_path("ci", "bad")).await, &object);
        let event = answer_event(expect(&mut api, &events_path("ci")).await);
        (status, event, api)
    });

    let action = reconcile(Arc::new(bad), ctx.clone())
        .await
        .expect("an invalid spec is reported, not an error");
    assert_eq!(
        action,
        Action::await_change(),
        "no requeue until the spec changes"
    );
    drop(ctx);

    let (status, event, api) = verifier.await.expect("the verifier finished");
    assert_eq!(status["observedGeneration"], 3);
    let ready = &status["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.rules[0].match.logPattern")),
        "{ready}"
    );
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["regarding"]["kind"], "JobPolicy");
    assert_eq!(event["regarding"]["name"], "bad");
    assert_eq!(event["regarding"]["namespace"], "ci");
    assert_eq!(
        event["reportingController"],
        super::super::events::REPORTING_CONTROLLER
    );
    assert_eq!(event["reportingInstance"], "test-replica");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.contains("spec.rules[0].match.logPattern")),
        "{event}"
    );
    assert_no_more_requests(api).await;
}

/// A policy whose spec does not compile: every shard reports it without touching GitLab.
fn invalid_policy() -> JobPolicy {
    policy(
        "ci",
        "bad",
        "https://gitlab.example.com",
        json!([{
            "name": "retry-logs",
            "match": {"statuses": ["failed"], "logPattern": "(unclosed"},
            "retry": {"limit": 2}
        }]),
        json!({}),
    )
}

/// Reconciles `policy` as `shard` and returns the body of the status patch it sent.
async fn status_patch_of(shard: Shard, policy: JobPolicy) -> Value {
    let (client, mut api) = mock_client();
    let ctx = sharded_context(client, offline_engine(), shard);
    let object = policy.clone();
    let verifier = tokio::spawn(async move {
        let seen = expect(&mut api, &status_path("ci", "bad")).await;
        let body = seen.body.clone();
        answer_status_patch(seen, &object);
        answer_event(expect(&mut api, &events_path("ci")).await);
        (body, api)
    });
    reconcile(Arc::new(policy), ctx.clone())
        .await
        .expect("an invalid spec is reported, not an error");
    drop(ctx);
    let (body, api) = verifier.await.expect("the verifier finished");
    assert_no_more_requests(api).await;
    body
}

#[tokio::test]
async fn with_project_sharding_each_shard_patches_its_own_entry_and_shard_zero_the_merge() {
    let mut bad = invalid_policy();
    let one = status_patch_of(Shard::new(1, 2).expect("valid"), bad.clone()).await;
    let status = one["status"].as_object().expect("a status");
    assert_eq!(
        status.keys().collect::<Vec<_>>(),
        ["shards"],
        "shard 1 writes no top-level field: {one}"
    );
    let entries = one["status"]["shards"].as_object().expect("a map");
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["1"]);
    assert_eq!(entries["1"]["conditions"][0]["reason"], "InvalidSpec");
    assert_eq!(entries["1"]["observedGeneration"], 3);

    // Shard 0 reads shard 1's entry from the object and writes its own and the merge.
    bad.status = Some(serde_json::from_value(one["status"].clone()).expect("a status"));
    let zero = status_patch_of(Shard::new(0, 2).expect("valid"), bad).await;
    let entries = zero["status"]["shards"].as_object().expect("a map");
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["0"],
        "never shard 1's entry"
    );
    let ready = &zero["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shard 0: spec.rules[0].match.logPattern")),
        "{ready}"
    );
    assert_eq!(zero["status"]["observedGeneration"], 3);
}

#[tokio::test]
async fn the_secret_is_read_from_the_policy_s_own_namespace_and_its_absence_is_reported() {
    let (client, mut api) = mock_client();
    let engine = offline_engine();
    let metrics = engine.metrics().clone();
    let ctx = context(client, engine);
    let team_a = policy(
        "team-a",
        "hygiene",
        "https://gitlab.example.com",
        retry_rules(),
        json!({}),
    );
    let object = team_a.clone();
    let verifier = tokio::spawn(async move {
        // The only Secret read is in team-a, whatever other namespace has one of that name.
        expect(&mut api, &secret_path("team-a")).await.fail(
            404,
            "NotFound",
            "secrets \"gitlab-token\" not found",
        );
        let status = answer_status_patch(
            expect(&mut api, &status_path("team-a", "hygiene")).await,
            &object,
        );
        let event = answer_event(expect(&mut api, &events_path("team-a")).await);
        (status, event, api)
    });

    let policy = Arc::new(team_a);
    let err = reconcile(policy.clone(), ctx.clone())
        .await
        .expect_err("a missing Secret is an error");
    assert!(
        matches!(err, Error::Secret(SecretError::NotFound { ref namespace, .. }) if namespace == "team-a"),
        "{err:?}"
    );
    let action = error_policy(policy, &err, ctx.clone());
    assert_eq!(action, Action::requeue(ErrorBackoff::default().base));
    drop(ctx);

    let (status, event, api) = verifier.await.expect("the verifier finished");
    let ready = &status["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SecretNotFound");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("team-a/gitlab-token") && m.contains("own namespace")),
        "{ready}"
    );
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SecretNotFound");
    let rendered = metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("jobwarden_reconcile_errors_total")
                && l.contains("error=\"secret_not_found\"")
                && l.contains("namespace=\"team-a\"")
                && l.ends_with(" 1")),
        "{rendered}"
    );
    assert_no_more_requests(api).await;
}

#[tokio::test]
async fn a_secret_without_the_key_is_reported_without_its_values() {
    let (client, mut api) = mock_client();
    let ctx = context(client, offline_engine());
    let p = policy(
        "ci",
        "p",
        "https://gitlab.example.com",
        retry_rules(),
        json!({}),
    );
    let object = p.clone();
    let verifier = tokio::spawn(async move {
        let encoded = base64::engine::general_purpose::STANDARD.encode("glpat-WRONG-KEY-VALUE");
        expect(&mut api, &secret_path("ci")).await.ok(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gitlab-token", "namespace": "ci"},
            "data": {"api-token": encoded}
        }));
        let status = answer_status_patch(expect(&mut api, &status_path("ci", "p")).await, &object);
        let event = answer_event(expect(&mut api, &events_path("ci")).await);
        (status, event, api)
    });

    let err = reconcile(Arc::new(p), ctx.clone())
        .await
        .expect_err("a missing key is an error");
    assert!(matches!(
        err,
        Error::Secret(SecretError::KeyNotFound { .. })
    ));
    drop(ctx);
    let (status, event, api) = verifier.await.expect("the verifier finished");
    assert_eq!(status["conditions"][0]["reason"], "SecretKeyNotFound");
    assert!(!status.to_string().contains("WRONG-KEY-VALUE"));
    assert!(!event.to_string().contains("WRONG-KEY-VALUE"));
    assert_no_more_requests(api).await;
}

#[tokio::test]
async fn a_suspended_policy_reads_no_secret_and_waits_for_a_change() {
    let (client, mut api) = mock_client();
    let ctx = context(client, offline_engine());
    let p = policy(
        "ci",
        "paused",
        "https://gitlab.example.com",
        retry_rules(),
        json!({"suspend": true}),
    );
    let object = p.clone();
    let verifier = tokio::spawn(async move {
        let status = answer_status_patch(
            expect(&mut api, &status_path("ci", "paused")).await,
            &object,
        );
        let event = answer_event(expect(&mut api, &events_path("ci")).await);
        (status, event, api)
    });

    let action = reconcile(Arc::new(p), ctx.clone())
        .await
        .expect("suspended is fine");
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let (status, event, api) = verifier.await.expect("the verifier finished");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "Suspended");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "Suspended");
    assert_no_more_requests(api).await;
}

#[tokio::test]
async fn a_policy_reconciled_recently_waits_for_its_interval_without_any_request() {
    let (client, api) = mock_client();
    let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().expect("timestamp");
    let engine = Engine::new(
        EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            ..EngineConfig::default()
        },
        Arc::new(move || now),
        Arc::new(Metrics::new()),
    );
    let ctx = context(client, engine);
    let mut p = policy(
        "ci",
        "fresh",
        "https://gitlab.example.com",
        retry_rules(),
        json!({}),
    );
    let run = RunReport {
        policy: PolicyKey::new("ci", "fresh"),
        time: now - jiff::SignedDuration::from_secs(10),
        dry_run: false,
        suspended: false,
        projects: 1,
        jobs_seen: 0,
        actions: Vec::new(),
        unlisted: Default::default(),
        failures: Vec::new(),
        deliveries_only: false,
    };
    p.status = Some(status::reconciled(None, &run, Some(3), now));

    let action = reconcile(Arc::new(p.clone()), ctx.clone())
        .await
        .expect("not due is fine");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(20)),
        "30s interval, 10s ago"
    );

    // A new generation (a spec change) is due at once: it goes on to read the Secret.
    p.metadata.generation = Some(4);
    let object = p.clone();
    let verifier = tokio::spawn(async move {
        let mut api = api;
        expect(&mut api, &secret_path("ci"))
            .await
            .fail(403, "Forbidden", "secrets is forbidden");
        let status =
            answer_status_patch(expect(&mut api, &status_path("ci", "fresh")).await, &object);
        assert_eq!(status["conditions"][0]["reason"], "SecretUnreadable");
        answer_event(expect(&mut api, &events_path("ci")).await);
        api
    });
    let err = reconcile(Arc::new(p), ctx.clone())
        .await
        .expect_err("the Secret is unreadable");
    assert!(
        matches!(err, Error::Secret(SecretError::Unreadable { .. })),
        "{err:?}"
    );
    drop(ctx);
    assert_no_more_requests(verifier.await.expect("the verifier finished")).await;
}

struct Gitlab {
    sim: SimHandle,
    stuck_job: u64,
}

/// A simulator (over HTTPS with `tls`) with one project and a job failed as stuck.
async fn gitlab_with_a_stuck_job(tls: Option<crate::sim::SimTls>) -> Gitlab {
    let mut config = SimConfig::new(TOKEN);
    config.projects = 0;
    config.tls = tls;
    config.clock = Clock::manual("2026-11-23T10:00:00Z".parse().expect("start time"));
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("the simulator starts");
    let ctl = sim.control();
    let project = ctl.add_project("team/app").expect("project created");
    let ids = ctl
        .add_pipeline(
            project,
            PipelineSpec::new(
                "main",
                vec![
                    JobSpec::new("rspec", "test", "failed")
                        .failed_with("stuck_or_timeout_failure")
                        .aged(Duration::from_secs(600)),
                ],
            ),
        )
        .job_ids;
    Gitlab {
        sim,
        stuck_job: ids[0],
    }
}

#[tokio::test]
async fn a_run_patches_ready_counters_and_recent_actions_and_records_an_event_per_action() {
    let gitlab = gitlab_with_a_stuck_job(None).await;
    let ctl = gitlab.sim.control();
    let engine = Engine::new(
        EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            ..EngineConfig::default()
        },
        Arc::new(move || ctl.now()),
        Arc::new(Metrics::new()),
    );
    let (client, mut api) = mock_client();
    let observing = engine.clone();
    let ctx = context(client, engine);
    let url = gitlab.sim.base_url().to_string();
    let p = policy("ci", "hygiene", &url, retry_rules(), json!({}));
    let object = p.clone();
    let verifier = tokio::spawn(async move {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}\n"));
        expect(&mut api, &secret_path("ci")).await.ok(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "gitlab-token", "namespace": "ci"},
            "data": {"token": encoded}
        }));
        let status = answer_status_patch(
            expect(&mut api, &status_path("ci", "hygiene")).await,
            &object,
        );
        let event = answer_event(expect(&mut api, &events_path("ci")).await);
        (status, event, api)
    });

    let action = reconcile(Arc::new(p), ctx.clone())
        .await
        .expect("the run succeeds");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "next run after the interval"
    );
    // The policy is deleted: the engine lets go of its project's observer and series.
    assert_eq!(observing.observed_projects(), 1);
    ctx.retain_policies(|_| false);
    drop(ctx);

    let (status, event, api) = verifier.await.expect("the verifier finished");
    assert_eq!(status["observedGeneration"], 3);
    let ready = &status["conditions"][0];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Reconciled"))
    );
    assert_eq!(ready["message"], "1 project, 1 job tracked");
    assert_eq!(status["lastSyncTime"], "2026-11-23T10:00:00Z");
    assert_eq!(status["counters"]["retried"], 1);
    let recent = &status["recentActions"][0];
    assert_eq!(recent["jobId"], gitlab.stuck_job);
    assert_eq!(recent["action"], "retry");
    assert_eq!(recent["outcome"], "Succeeded");
    assert!(
        recent["newJobId"]
            .as_u64()
            .is_some_and(|id| id > gitlab.stuck_job)
    );
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "Retried");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!(
                "retried job {} (rspec) of project team/app by rule retry-stuck",
                gitlab.stuck_job
            ))),
        "{event}"
    );
    assert_no_more_requests(api).await;
    assert_eq!(
        gitlab
            .sim
            .control()
            .counters()
            .get("POST /projects/:id/jobs/:job_id/retry")
            .copied(),
        Some(1)
    );

    for _ in 0..100 {
        if observing.observed_projects() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        observing.observed_projects(),
        0,
        "the deleted policy's observer is gone"
    );
    gitlab.sim.shutdown().await;
}

#[test]
fn the_error_backoff_doubles_up_to_its_bound() {
    let backoff = ErrorBackoff::default();
    let delays: Vec<u64> = (1..=8).map(|n| backoff.delay(n).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 120, 120, 120]);
    assert_eq!(backoff.delay(u32::MAX), backoff.max);
}

/// A policy of `namespace` that trusts the CA of its Secret `gitlab-ca` (key `ca.crt`).
fn private_ca_policy(namespace: &str, url: &str) -> JobPolicy {
    policy(
        namespace,
        "private-ca",
        url,
        retry_rules(),
        json!({"gitlab": {
            "url": url,
            "tokenSecretRef": {"name": "gitlab-token", "key": "token"},
            "caBundleSecretRef": {"name": "gitlab-ca", "key": "ca.crt"}
        }}),
    )
}

/// A Secret `name` of `namespace` holding `value` under `key`.
fn secret_object(namespace: &str, name: &str, key: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64::engine::general_purpose::STANDARD.encode(value)}
    })
}

#[tokio::test]
async fn the_ca_bundle_is_read_from_the_policy_s_own_namespace_and_its_problems_name_the_field() {
    let (client, mut api) = mock_client();
    let engine = offline_engine();
    let metrics = engine.metrics().clone();
    let ctx = context(client, engine);
    let p = private_ca_policy("team-a", "https://gitlab.example.com");
    let object = p.clone();
    let verifier = tokio::spawn(async move {
        let ca_path = "GET /api/v1/namespaces/team-a/secrets/gitlab-ca";
        let mut conditions = Vec::new();
        // First the key holds no certificate, then the Secret is gone: each time the token is
        // read first, and both Secrets only from team-a.
        for found in [true, false] {
            expect(&mut api, &secret_path("team-a"))
                .await
                .ok(&secret_object("team-a", "gitlab-token", "token", TOKEN));
            let ca = expect(&mut api, ca_path).await;
            if found {
                ca.ok(&secret_object("team-a", "gitlab-ca", "ca.crt", TOKEN));
            } else {
                ca.fail(404, "NotFound", "secrets \"gitlab-ca\" not found");
            }
            let status = answer_status_patch(
                expect(&mut api, &status_path("team-a", "private-ca")).await,
                &object,
            );
            let event = answer_event(expect(&mut api, &events_path("team-a")).await);
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], status["conditions"][0]["reason"]);
            conditions.push(status["conditions"][0].clone());
        }
        (conditions, api)
    });

    let policy = Arc::new(p);
    let err = reconcile(policy.clone(), ctx.clone())
        .await
        .expect_err("no certificate");
    assert!(
        matches!(err, Error::CaBundle(CaBundleRefError::Certificates { .. })),
        "{err:?}"
    );
    error_policy(policy.clone(), &err, ctx.clone());
    let err = reconcile(policy, ctx.clone()).await.expect_err("no Secret");
    assert!(
        matches!(err, Error::CaBundle(CaBundleRefError::Secret(SecretError::NotFound { ref namespace, .. })) if namespace == "team-a"),
        "{err:?}"
    );
    drop(ctx);

    let (conditions, api) = verifier.await.expect("the verifier finished");
    let [invalid, missing] = &conditions[..] else {
        panic!("two statuses: {conditions:?}");
    };
    assert_eq!(invalid["status"], "False");
    assert_eq!(invalid["reason"], "InvalidCABundle");
    assert_eq!(
        invalid["message"],
        "spec.gitlab.caBundleSecretRef: key \"ca.crt\" of Secret team-a/gitlab-ca: holds no \
         certificate (a PEM bundle of `-----BEGIN CERTIFICATE-----` blocks)"
    );
    assert_eq!(missing["reason"], "SecretNotFound");
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m
                .starts_with("spec.gitlab.caBundleSecretRef: Secret team-a/gitlab-ca not found")),
        "{missing}"
    );
    // What the key held (here the token, put there by mistake) is never shown.
    assert!(!format!("{conditions:?}").contains(TOKEN));
    let rendered = metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("jobwarden_reconcile_errors_total")
                && l.contains("error=\"ca_bundle_invalid\"")),
        "{rendered}"
    );
    assert_no_more_requests(api).await;
}

#[tokio::test]
async fn with_its_ca_bundle_a_policy_reaches_a_gitlab_with_a_private_ca() {
    let pki = crate::sim::TestPki::new();
    let gitlab = gitlab_with_a_stuck_job(Some(pki.sim_tls())).await;
    let ctl = gitlab.sim.control();
    // https only, as in production: the token goes nowhere in cleartext.
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(move || ctl.now()),
        Arc::new(Metrics::new()),
    );
    let (client, mut api) = mock_client();
    let ctx = context(client, engine);
    let url = gitlab.sim.base_url().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let p = private_ca_policy("ci", &url);
    let object = p.clone();
    let ca_pem = pki.ca_pem.clone();
    let verifier = tokio::spawn(async move {
        expect(&mut api, &secret_path("ci"))
            .await
            .ok(&secret_object("ci", "gitlab-token", "token", TOKEN));
        expect(&mut api, "GET /api/v1/namespaces/ci/secrets/gitlab-ca")
            .await
            .ok(&secret_object("ci", "gitlab-ca", "ca.crt", &ca_pem));
        let status = answer_status_patch(
            expect(&mut api, &status_path("ci", "private-ca")).await,
            &object,
        );
        answer_event(expect(&mut api, &events_path("ci")).await);
        (status, api)
    });

    reconcile(Arc::new(p), ctx.clone())
        .await
        .expect("the run reaches GitLab over https");
    drop(ctx);
    let (status, api) = verifier.await.expect("the verifier finished");
    assert_eq!(status["conditions"][0]["reason"], "Reconciled");
    assert_eq!(status["counters"]["retried"], 1);
    assert_eq!(status["recentActions"][0]["jobId"], gitlab.stuck_job);
    assert_no_more_requests(api).await;
    gitlab.sim.shutdown().await;
}

/// The first request the controller's watch sends with `selector`, answered with an empty list,
/// after which the controller is stopped.
async fn first_watch_request(selector: Option<&LabelSelector>) -> String {
    let (client, mut api) = mock_client();
    let ctx = context(client.clone(), offline_engine());
    let stop = ctx.stop.clone();
    let listed = watch::Sender::new(false);
    let controller = tokio::spawn(run(ctx, Api::all(client), watcher_config(selector), listed));
    let first = next(&mut api).await.expect("the watch lists policies");
    let uri = first.uri.clone();
    answer_empty_policy_list(first);
    stop_and_join(&stop, api, controller).await;
    uri
}

#[tokio::test]
async fn with_a_selector_the_apiserver_is_asked_for_the_matching_policies_only() {
    let selector: LabelSelector = "team=platform,tier=prod".parse().expect("a valid selector");
    let uri = first_watch_request(Some(&selector)).await;
    assert!(
        uri.starts_with("/apis/jobwarden.dev/v1alpha1/jobpolicies?"),
        "{uri}"
    );
    assert!(
        uri.contains("labelSelector=team%3Dplatform%2Ctier%3Dprod"),
        "{uri}"
    );
    let uri = first_watch_request(None).await;
    assert!(!uri.contains("labelSelector"), "{uri}");
}

/// The controller of the JobPolicies in namespace `ci`, against the scripted apiserver, with
/// `listed` as its flag; the apiserver, the controller's stop token and its task, once the
/// controller has asked for the initial list (the request, not answered yet).
async fn controller_in_ci(
    listed: &watch::Sender<bool>,
) -> (
    crate::source::kube::test_api::Seen,
    Handle,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (client, mut api) = mock_client();
    let ctx = context(client.clone(), offline_engine());
    let stop = ctx.stop.clone();
    let controller = tokio::spawn(run(
        ctx,
        Api::namespaced(client, "ci"),
        watcher_config(None),
        listed.clone(),
    ));
    let list = expect(
        &mut api,
        "GET /apis/jobwarden.dev/v1alpha1/namespaces/ci/jobpolicies",
    )
    .await;
    (list, api, stop, controller)
}

#[tokio::test]
async fn the_policies_count_as_listed_once_the_apiserver_answered_the_initial_list() {
    // Left true by a previous term: a new term starts unlisted.
    let listed = watch::Sender::new(true);
    let mut seen = listed.subscribe();
    let (list, api, stop, controller) = controller_in_ci(&listed).await;
    assert!(!*listed.borrow(), "listed before the apiserver answered");
    answer_empty_policy_list(list);
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|listed| *listed))
        .await
        .expect("listed in time")
        .expect("the sender lives");
    stop_and_join(&stop, api, controller).await;
    assert!(
        !*listed.borrow(),
        "the list of a stopped controller no longer counts"
    );
}

#[tokio::test]
async fn a_term_that_ends_before_the_policies_are_listed_stops_at_once() {
    let listed = watch::Sender::new(false);
    // The apiserver has not answered the list when the term ends (a SIGTERM just after the
    // Lease was won): nothing was reconciled, so nothing is waited for.
    let (unanswered, api, stop, controller) = controller_in_ci(&listed).await;
    stop_and_join(&stop, api, controller).await;
    assert!(!*listed.borrow());
    drop(unanswered);
}
