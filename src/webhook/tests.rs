use super::*;
use crate::engine::{EngineConfig, system_clock};
use crate::metrics::Metrics;
use axum::http::HeaderValue;

const SECRET: &str = "hook-secret-1";

fn state() -> WebhookState {
    let engine = Engine::new(
        EngineConfig::default(),
        system_clock(),
        Arc::new(Metrics::new()),
    );
    let secrets = WebhookSecrets::new(
        vec![SecretString::from("other"), SecretString::from(SECRET)],
        "JOBWARDEN_WEBHOOK_TOKEN",
    )
    .expect("secrets");
    WebhookState::new(engine, secrets)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    map
}

fn job_hook_headers(token: &str, event_uuid: &str) -> HeaderMap {
    headers(&[
        ("content-type", "application/json"),
        ("x-gitlab-event", "Job Hook"),
        ("x-gitlab-token", token),
        ("x-gitlab-event-uuid", event_uuid),
    ])
}

const PAYLOAD: &[u8] =
    br#"{"object_kind":"build","project_id":7,"build_id":42,"build_status":"failed"}"#;

fn outcome(state: &WebhookState, headers: &HeaderMap, body: &[u8]) -> (Delivery, StatusCode) {
    let (delivery, response) = answer(state, headers, body);
    (delivery, response.status())
}

#[test]
fn a_missing_or_wrong_secret_is_unauthorized() {
    let state = state();
    let mut no_token = job_hook_headers(SECRET, "e1");
    no_token.remove("x-gitlab-token");
    assert_eq!(
        outcome(&state, &no_token, PAYLOAD),
        (Delivery::Unauthorized, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        outcome(&state, &job_hook_headers("hook-secret-2", "e1"), PAYLOAD),
        (Delivery::Unauthorized, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        outcome(&state, &job_hook_headers("other", "e1"), PAYLOAD).0,
        Delivery::Ignored,
        "any configured secret is accepted"
    );
}

#[test]
fn other_events_and_malformed_payloads_are_refused_with_the_reason() {
    let state = state();
    let mut pipeline = job_hook_headers(SECRET, "e1");
    pipeline.insert("x-gitlab-event", HeaderValue::from_static("Pipeline Hook"));
    let (delivery, response) = answer(&state, &pipeline, PAYLOAD);
    assert_eq!(
        (delivery, response.status()),
        (Delivery::Invalid, StatusCode::BAD_REQUEST)
    );

    let mut form = job_hook_headers(SECRET, "e2");
    form.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        outcome(&state, &form, PAYLOAD),
        (Delivery::Invalid, StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    for junk in [
        &b"{not json"[..],
        br#"{"object_kind":"pipeline","project_id":7,"build_id":42}"#,
        br#"{"object_kind":"build","project_id":"seven","build_id":42}"#,
        br#"{"object_kind":"build","build_id":42}"#,
    ] {
        assert_eq!(
            outcome(&state, &job_hook_headers(SECRET, "e3"), junk),
            (Delivery::Invalid, StatusCode::BAD_REQUEST),
            "{}",
            String::from_utf8_lossy(junk)
        );
    }
}

#[test]
fn an_event_delivered_twice_is_a_duplicate_and_an_unwatched_project_is_ignored() {
    let state = state();
    assert_eq!(
        outcome(&state, &job_hook_headers(SECRET, "e1"), PAYLOAD),
        (Delivery::Ignored, StatusCode::OK)
    );
    assert_eq!(
        outcome(&state, &job_hook_headers(SECRET, "e1"), PAYLOAD),
        (Delivery::Duplicate, StatusCode::OK)
    );
    assert_eq!(
        outcome(&state, &job_hook_headers(SECRET, "e2"), PAYLOAD),
        (Delivery::Ignored, StatusCode::OK)
    );
}

#[test]
fn no_secret_no_receiver() {
    let err = WebhookSecrets::new(vec![SecretString::from("")], "JOBWARDEN_WEBHOOK_TOKEN")
        .expect_err("empty");
    assert!(err.to_string().contains("JOBWARDEN_WEBHOOK_TOKEN"), "{err}");
}

#[test]
fn the_payloads_facts_are_read_and_a_field_of_another_type_is_taken_as_missing() {
    let full = br#"{"object_kind":"build","project_id":7,"build_id":42,"build_status":"failed",
        "build_failure_reason":"stuck_or_timeout_failure","build_name":"rspec 1/3",
        "build_stage":"test","ref":"main","tag":false,"build_allow_failure":true,
        "build_created_at":"2026-11-23 11:58:07 UTC","pipeline_id":9}"#;
    let hook: JobHook = serde_json::from_slice(full).expect("payload");
    let delivery = hook.delivery();
    assert_eq!(delivery.moved.status, Some(JobStatus::Failed));
    assert_eq!(
        delivery.moved.failure_reason.as_deref(),
        Some("stuck_or_timeout_failure")
    );
    let facts = delivery.facts;
    assert_eq!(facts.name.as_deref(), Some("rspec 1/3"));
    assert_eq!(facts.stage.as_deref(), Some("test"));
    assert_eq!(facts.git_ref.as_deref(), Some("main"));
    assert_eq!((facts.tag, facts.allow_failure), (Some(false), Some(true)));
    assert_eq!(
        facts.created_at,
        Some("2026-11-23T11:58:07Z".parse().expect("time"))
    );
    assert_eq!(facts.pipeline_id, Some(9));
    assert_eq!(
        hook_time("2026-11-23T11:58:07.5+01:00"),
        Some("2026-11-23T10:58:07.5Z".parse().expect("time"))
    );

    let odd = br#"{"object_kind":"build","project_id":7,"build_id":42,"build_name":3,
        "tag":"yes","build_created_at":"last tuesday","pipeline_id":null}"#;
    let hook: JobHook = serde_json::from_slice(odd).expect("still a Job Hook");
    assert_eq!(hook.delivery(), JobDelivery::default());
}
