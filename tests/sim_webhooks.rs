//! Job Hooks: the simulator delivers one webhook per build transition GitLab fires on, with
//! GitLab's headers and payload, only to the hooks that cover the project, through bounded
//! queues that a slow or failing receiver cannot turn into a stalled API; and its delivery
//! faults (drop, duplicate, reorder) are observable.
//!
//! Every test runs a small receiver on 127.0.0.1:0; every wait is bounded.

mod sim_support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use jobwarden::sim::{
    Clock, FaultConfig, FleetConfig, JobSpec, PipelineSpec, SimConfig, WebhookConfig,
};
use serde_json::{Value, json};
use sim_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const HOOK_TOKEN: &str = "hook-secret-token";
const WAIT: Duration = Duration::from_secs(10);

/// What the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers (until the receiver stops).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    raw: String,
    body: Value,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn status(&self) -> &str {
        self.body["build_status"].as_str().expect("build_status")
    }

    fn build_id(&self) -> u64 {
        self.body["build_id"].as_u64().expect("build_id")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    answer: Mutex<Option<Answer>>,
}

/// A webhook receiver on 127.0.0.1:0 (stopped when dropped).
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let received = Received {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    };
    state.received.lock().expect("lock").push(received);
    let answer = state
        .answer
        .lock()
        .expect("lock")
        .unwrap_or(Answer::Status(200));
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).expect("status"),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, state, task }
    }

    /// The receiver's URL with this path.
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn answer(&self, answer: Answer) {
        *self.state.answer.lock().expect("lock") = Some(answer);
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until `n` requests have come in (at most [`WAIT`]); returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let received = self.received();
            if received.len() >= n || Instant::now() >= deadline {
                assert!(
                    received.len() >= n,
                    "{} of {n} deliveries arrived: {:?}",
                    received.len(),
                    statuses(&received)
                );
                return received;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn statuses(received: &[Received]) -> Vec<(u64, String)> {
    received
        .iter()
        .map(|r| (r.build_id(), r.status().to_owned()))
        .collect()
}

/// Waits until the simulator has nothing left to send, then a little longer for stragglers.
async fn settle(sim: &Sim) {
    assert!(
        sim.control.wait_for_webhooks(WAIT).await,
        "deliveries still pending: {:?}",
        sim.control.webhooks()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[2].starts_with('4')
}

/// `2026-11-23 10:00:00 UTC`.
fn is_webhook_time(value: &Value) -> bool {
    value
        .as_str()
        .and_then(|s| s.strip_suffix(" UTC"))
        .and_then(|s| s.split_once(' '))
        .is_some_and(|(date, time)| {
            format!("{date}T{time}")
                .parse::<jiff::civil::DateTime>()
                .is_ok()
                && date.len() == 10
                && time.len() == 8
        })
}

fn one_job_pipeline(sim: &Sim, project: u64, status: &str) -> (u64, u64) {
    let pipeline = sim.control.add_pipeline(
        project,
        PipelineSpec::new("main", vec![JobSpec::new("rspec", "test", status)]),
    );
    (pipeline.id, pipeline.job_ids[0])
}

#[tokio::test]
async fn a_job_fires_one_delivery_per_transition_with_gitlabs_headers_and_payload() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/hooks")).with_token(HOOK_TOKEN))
        .expect("valid hook");

    let (pipeline_id, job_id) = one_job_pipeline(&sim, 1, "created");
    sim.control.advance(Duration::from_secs(10));
    sim.control.set_job_status(1, job_id, "pending", None);
    sim.control.advance(Duration::from_secs(30));
    sim.control.set_job_status(1, job_id, "running", None);
    sim.control.advance(Duration::from_secs(90));
    sim.control.set_job_status(1, job_id, "success", None);
    // A move to the status the job already has is no transition.
    sim.control.set_job_status(1, job_id, "success", None);

    let received = receiver.wait_for(4).await;
    settle(&sim).await;
    let received_after = receiver.received();
    assert_eq!(received_after.len(), 4, "{:?}", statuses(&received_after));
    assert_eq!(
        statuses(&received),
        [
            (job_id, "created".to_owned()),
            (job_id, "pending".to_owned()),
            (job_id, "running".to_owned()),
            (job_id, "success".to_owned()),
        ]
    );

    // Headers.
    let instance = sim.handle.base_url().to_string();
    let mut event_uuids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for r in &received {
        assert_eq!(r.path, "/hooks");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("user-agent")
                .is_some_and(|ua| ua.starts_with("GitLab/")),
            "{:?}",
            r.header("user-agent")
        );
        assert_eq!(r.header("x-gitlab-event"), Some("Job Hook"));
        assert_eq!(r.header("x-gitlab-token"), Some(HOOK_TOKEN));
        assert_eq!(
            r.header("x-gitlab-instance"),
            Some(instance.trim_end_matches('/'))
        );
        for name in [
            "x-gitlab-webhook-uuid",
            "x-gitlab-event-uuid",
            "idempotency-key",
        ] {
            assert!(r.header(name).is_some_and(is_uuid_v4), "{name}: {r:?}");
        }
        event_uuids.insert(r.header("x-gitlab-event-uuid").map(str::to_owned));
        keys.insert(r.header("idempotency-key").map(str::to_owned));
    }
    assert_eq!(event_uuids.len(), 4, "one event per transition");
    assert_eq!(keys.len(), 4, "one idempotency key per delivery");

    // The payload: Gitlab::DataBuilder::Build's fields, in its order.
    assert_eq!(
        key_order(&received[3].raw),
        [
            "object_kind",
            "ref",
            "tag",
            "before_sha",
            "sha",
            "retries_count",
            "build_id",
            "build_name",
            "build_stage",
            "build_status",
            "build_created_at",
            "build_started_at",
            "build_finished_at",
            "build_duration",
            "build_queued_duration",
            "build_allow_failure",
            "build_failure_reason",
            "pipeline_id",
            "runner",
            "project_id",
            "project_name",
            "user",
            "commit",
            "repository",
            "project",
            "environment",
        ]
    );
    for r in &received {
        let b = &r.body;
        assert_eq!(b["object_kind"], "build");
        assert_eq!(b["ref"], "main");
        assert_eq!(b["tag"], false);
        assert_eq!(b["build_id"], job_id);
        assert_eq!(b["build_name"], "rspec");
        assert_eq!(b["build_stage"], "test");
        assert_eq!(b["pipeline_id"], pipeline_id);
        assert_eq!(
            b["commit"]["id"], pipeline_id,
            "commit.id is the pipeline id"
        );
        assert_eq!(b["project_id"], 1);
        assert_eq!(b["project_name"], "fleet / project-1");
        assert_eq!(b["retries_count"], 0);
        assert_eq!(b["build_allow_failure"], false);
        assert_eq!(b["build_failure_reason"], Value::Null);
        assert_eq!(b["environment"], Value::Null);
        let sha = b["sha"].as_str().expect("sha");
        assert_eq!(sha.len(), 40);
        assert_eq!(b["commit"]["sha"], sha);
        assert_eq!(b["before_sha"].as_str().map(str::len), Some(40));
        assert!(
            is_webhook_time(&b["build_created_at"]),
            "{}",
            b["build_created_at"]
        );
        assert_eq!(b["user"]["id"], 2);
        assert_eq!(b["user"]["username"], "alice");
        assert_eq!(b["user"]["email"], "[REDACTED]");
        assert_eq!(b["repository"]["name"], "project-1");
        assert_eq!(b["repository"]["visibility_level"], 0);
        assert_eq!(
            b["repository"]["homepage"],
            format!("{instance}fleet/project-1")
        );
        assert_eq!(b["project"]["path_with_namespace"], "fleet/project-1");
    }
    let [created, pending, running, success] = [0, 1, 2, 3].map(|i| &received[i].body);
    assert_eq!(created["build_started_at"], Value::Null);
    assert_eq!(created["build_duration"], Value::Null);
    assert_eq!(created["build_queued_duration"], Value::Null);
    assert_eq!(created["runner"], Value::Null);
    assert_eq!(created["build_created_at"], "2026-11-23 10:00:00 UTC");
    assert_eq!(pending["build_queued_duration"], 0.0);
    assert_eq!(pending["commit"]["status"], "pending");
    assert_eq!(running["build_started_at"], "2026-11-23 10:00:40 UTC");
    assert_eq!(running["build_queued_duration"], 30.0);
    assert_eq!(running["build_duration"], 0.0);
    assert_eq!(running["runner"]["id"], 11);
    assert_eq!(running["runner"]["is_shared"], true);
    assert_eq!(running["runner"]["tags"], json!([]));
    assert_eq!(running["commit"]["finished_at"], Value::Null);
    assert_eq!(success["build_finished_at"], "2026-11-23 10:02:10 UTC");
    assert_eq!(success["build_duration"], 90.0);
    assert_eq!(success["build_queued_duration"], 30.0);
    assert_eq!(success["commit"]["status"], "success");
    assert_eq!(success["commit"]["duration"], 90);
    assert_eq!(success["commit"]["started_at"], "2026-11-23 10:00:40 UTC");
    assert_eq!(success["commit"]["finished_at"], "2026-11-23 10:02:10 UTC");

    let hook = &sim.control.webhooks()[0];
    assert!(hook.has_token);
    assert_eq!(hook.stats.triggered, 4);
    assert_eq!(hook.stats.sent, 4);
    assert_eq!(hook.stats.delivered, 4);
    assert_eq!(hook.stats.failed, 0);
    assert_eq!(hook.stats.pending, 0);
    assert_eq!(
        hook.stats.by_status,
        BTreeMap::from([("200".to_owned(), 4)])
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_failed_job_reports_its_reason() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");
    let (_, job_id) = one_job_pipeline(&sim, 1, "running");
    sim.control
        .set_job_status(1, job_id, "failed", Some("script_failure"));
    let received = receiver.wait_for(2).await;
    assert_eq!(received[0].status(), "running", "created as running");
    assert_eq!(received[1].status(), "failed");
    assert_eq!(received[1].body["build_failure_reason"], "script_failure");
    assert_eq!(received[1].body["commit"]["status"], "failed");
    assert_eq!(
        received[0].header("x-gitlab-token"),
        None,
        "no token configured"
    );
    sim.stop().await;
}

#[tokio::test]
async fn retry_play_and_cancel_over_the_api_fire_as_gitlab_does() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    let pipeline = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("rspec", "test", "failed"),
                JobSpec::new("deploy", "deploy", "manual").manual(),
            ],
        ),
    );
    let (rspec, deploy) = (pipeline.job_ids[0], pipeline.job_ids[1]);
    // Registered after the pipeline was created: only the API's moves are heard.
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");

    let (status, retried) = sim
        .post_json(&format!("/projects/1/jobs/{rspec}/retry"))
        .await;
    assert_eq!(status, 201);
    let new_id = retried["id"].as_u64().expect("new id");
    assert_ne!(new_id, rspec);
    let (status, _) = sim
        .post_json(&format!("/projects/1/jobs/{deploy}/play"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = sim
        .post_json(&format!("/projects/1/jobs/{new_id}/cancel"))
        .await;
    assert_eq!(status, 201);
    // Cancelling a finished job changes nothing and fires nothing.
    let (status, _) = sim
        .post_json(&format!("/projects/1/jobs/{new_id}/cancel"))
        .await;
    assert_eq!(status, 201);

    let received = receiver.wait_for(4).await;
    settle(&sim).await;
    assert_eq!(
        statuses(&receiver.received()),
        [
            (new_id, "created".to_owned()),
            (new_id, "pending".to_owned()),
            (deploy, "pending".to_owned()),
            (new_id, "canceled".to_owned()),
        ]
    );
    for r in &received {
        let b = &r.body;
        if r.build_id() == new_id {
            assert_eq!(b["retries_count"], 1, "the retried attempt counts");
            assert_eq!(b["build_name"], "rspec");
            assert_eq!(b["user"]["id"], 1, "retried by the token's user");
        } else {
            assert_eq!(b["retries_count"], 0);
            assert_eq!(b["build_name"], "deploy");
            assert_eq!(b["build_allow_failure"], true);
            assert_eq!(b["user"]["username"], "root", "played by the token's user");
        }
        assert_eq!(b["commit"]["id"], pipeline.id);
    }
    assert!(received[3].body["build_finished_at"].is_string());
    sim.stop().await;
}

#[tokio::test]
async fn hooks_hear_only_their_projects_and_send_tokens_only_when_configured() {
    let receiver = Receiver::start().await;
    let sim = start(config(2)).await;
    let one = sim
        .control
        .add_webhook(
            WebhookConfig::new(receiver.at("/one"))
                .with_token(HOOK_TOKEN)
                .for_projects([1]),
        )
        .expect("valid hook");
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/two")).for_projects([2]))
        .expect("valid hook");

    // A bridge fires nothing (job hooks are builds').
    let first = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("build", "build", "pending"),
                JobSpec::new("trigger", "deploy", "created").bridge(),
            ],
        ),
    );
    let (_, second) = one_job_pipeline(&sim, 2, "created");
    sim.control
        .set_job_status(1, first.job_ids[1], "running", None);
    sim.control.set_job_status(2, second, "running", None);
    sim.control
        .set_job_status(1, first.job_ids[0], "running", None);
    receiver.wait_for(4).await;
    settle(&sim).await;

    let received = receiver.received();
    let by_path = |path: &str| -> Vec<(u64, String)> {
        received
            .iter()
            .filter(|r| r.path == path)
            .map(|r| (r.build_id(), r.status().to_owned()))
            .collect()
    };
    assert_eq!(
        by_path("/one"),
        [
            (first.job_ids[0], "pending".to_owned()),
            (first.job_ids[0], "running".to_owned())
        ]
    );
    assert_eq!(
        by_path("/two"),
        [
            (second, "created".to_owned()),
            (second, "running".to_owned())
        ]
    );
    for r in &received {
        let expected_project = if r.path == "/one" { 1 } else { 2 };
        assert_eq!(r.body["project_id"], expected_project);
        let token = r.header("x-gitlab-token");
        assert_eq!(token, (r.path == "/one").then_some(HOOK_TOKEN), "{r:?}");
    }

    // A removed hook hears nothing more.
    assert!(sim.control.remove_webhook(one));
    assert!(!sim.control.remove_webhook(one));
    sim.control
        .set_job_status(1, first.job_ids[0], "success", None);
    sim.control.set_job_status(2, second, "success", None);
    receiver.wait_for(5).await;
    settle(&sim).await;
    let last = receiver.received();
    assert_eq!(last.len(), 5, "{:?}", statuses(&last));
    assert_eq!(last[4].path, "/two");
    sim.stop().await;
}

#[tokio::test]
async fn the_admin_endpoint_registers_lists_and_deletes_hooks() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    let hooks_url = sim.url("/-/sim/hooks");
    let response = sim
        .client
        .post(&hooks_url)
        .json(&json!({"url": receiver.at("/admin"), "token": HOOK_TOKEN, "project_ids": [1]}))
        .send()
        .await
        .expect("request");
    let (status, created) = json_of(response).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("id");
    assert_eq!(created["has_token"], true);
    assert_eq!(created["project_ids"], json!([1]));
    assert!(!created.to_string().contains(HOOK_TOKEN), "{created}");

    for bad in [
        json!({"url": "ftp://127.0.0.1/"}),
        json!({"url": "not a url"}),
        json!({"url": receiver.at("/"), "secret": "x"}),
    ] {
        let response = sim
            .client
            .post(&hooks_url)
            .json(&bad)
            .send()
            .await
            .expect("request");
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body["error"].is_string());
    }

    let (_, job_id) = one_job_pipeline(&sim, 1, "pending");
    receiver.wait_for(1).await;
    settle(&sim).await;
    let (status, listed) = json_of(sim.client.get(&hooks_url).send().await.expect("list")).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let stats = &listed[0]["stats"];
    assert_eq!(listed[0]["id"], id);
    assert_eq!(stats["sent"], 1);
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["by_status"], json!({"200": 1}));

    let (status, deliveries) = json_of(
        sim.client
            .get(format!("{hooks_url}/{id}/deliveries"))
            .send()
            .await
            .expect("deliveries"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(deliveries[0]["job_id"], job_id);
    assert_eq!(deliveries[0]["build_status"], "pending");
    assert_eq!(deliveries[0]["outcome"], "200");

    let delete = |id: u64| sim.client.delete(format!("{hooks_url}/{id}")).send();
    assert_eq!(delete(id).await.expect("delete").status(), 204);
    assert_eq!(delete(id).await.expect("delete").status(), 404);
    let (_, listed) = json_of(sim.client.get(&hooks_url).send().await.expect("list")).await;
    assert_eq!(listed, json!([]));
    sim.stop().await;
}

#[tokio::test]
async fn dropped_deliveries_are_never_sent_but_are_counted() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    let id = sim
        .control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");
    sim.control.set_faults(FaultConfig {
        hook_drop_ratio: 1.0,
        ..FaultConfig::default()
    });
    let (_, job_id) = one_job_pipeline(&sim, 1, "pending");
    sim.control.set_job_status(1, job_id, "running", None);
    settle(&sim).await;
    assert!(receiver.received().is_empty());
    let stats = sim.control.webhook(id).expect("hook").stats;
    assert_eq!((stats.triggered, stats.dropped, stats.sent), (2, 2, 0));
    let log = sim.control.webhook_deliveries(id).expect("hook");
    assert!(
        log.iter()
            .all(|d| d.outcome == "dropped" && d.webhook_uuid.is_none())
    );

    sim.control.set_faults(FaultConfig::default());
    sim.control.set_job_status(1, job_id, "success", None);
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].status(), "success");
    sim.stop().await;
}

#[tokio::test]
async fn duplicated_deliveries_share_the_idempotency_key_and_event_uuid() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");
    sim.control.set_faults(FaultConfig {
        hook_duplicate_ratio: 1.0,
        ..FaultConfig::default()
    });
    one_job_pipeline(&sim, 1, "pending");
    let received = receiver.wait_for(2).await;
    settle(&sim).await;
    assert_eq!(receiver.received().len(), 2);
    let (a, b) = (&received[0], &received[1]);
    assert_eq!(a.raw, b.raw, "the same payload");
    assert_eq!(a.header("idempotency-key"), b.header("idempotency-key"));
    assert_eq!(
        a.header("x-gitlab-event-uuid"),
        b.header("x-gitlab-event-uuid")
    );
    assert_ne!(
        a.header("x-gitlab-webhook-uuid"),
        b.header("x-gitlab-webhook-uuid")
    );
    let stats = &sim.control.webhooks()[0].stats;
    assert_eq!((stats.triggered, stats.duplicated, stats.sent), (1, 1, 2));
    sim.stop().await;
}

#[tokio::test]
async fn a_held_back_delivery_arrives_after_the_jobs_final_one() {
    let receiver = Receiver::start().await;
    let sim = start(config(1)).await;
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");
    let (_, job_id) = one_job_pipeline(&sim, 1, "pending");
    receiver.wait_for(1).await;
    sim.control.set_faults(FaultConfig {
        hook_reorder_ratio: 1.0,
        hook_reorder_delay: Duration::from_millis(500),
        ..FaultConfig::default()
    });
    sim.control.set_job_status(1, job_id, "running", None);
    sim.control.set_faults(FaultConfig::default());
    sim.control.set_job_status(1, job_id, "success", None);
    receiver.wait_for(3).await;
    settle(&sim).await;
    assert_eq!(
        statuses(&receiver.received()),
        [
            (job_id, "pending".to_owned()),
            (job_id, "success".to_owned()),
            (job_id, "running".to_owned()),
        ]
    );
    assert_eq!(sim.control.webhooks()[0].stats.delayed, 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_failing_or_hanging_receiver_does_not_stall_the_api() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        webhook_timeout: Duration::from_millis(200),
        webhook_queue_capacity: 2,
        ..config(1)
    })
    .await;
    let id = sim
        .control
        .add_webhook(WebhookConfig::new(receiver.at("/")))
        .expect("valid hook");

    receiver.answer(Answer::Status(500));
    let (_, job_id) = one_job_pipeline(&sim, 1, "pending");
    receiver.wait_for(1).await;
    settle(&sim).await;
    let stats = sim.control.webhook(id).expect("hook").stats;
    assert_eq!((stats.sent, stats.failed, stats.delivered), (1, 1, 0));
    assert_eq!(stats.by_status, BTreeMap::from([("500".to_owned(), 1)]));
    assert_eq!(
        receiver.received().len(),
        1,
        "a failed delivery is not re-sent"
    );

    receiver.answer(Answer::Hang);
    let started = Instant::now();
    for i in 0..20 {
        let status = if i % 2 == 0 { "running" } else { "pending" };
        sim.control.set_job_status(1, job_id, status, None);
        let (code, _) = sim.get_json(&format!("/projects/1/jobs/{job_id}")).await;
        assert_eq!(code, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the API waited for the receiver: {:?}",
        started.elapsed()
    );
    settle(&sim).await;
    let stats = sim.control.webhook(id).expect("hook").stats;
    assert_eq!(stats.triggered, 21);
    assert!(stats.queue_full > 0, "{stats:?}");
    assert!(
        stats.by_status.get("timeout").copied().unwrap_or(0) >= 2,
        "{stats:?}"
    );
    assert_eq!(stats.triggered, stats.queued + stats.queue_full);
    assert_eq!(
        stats.sent, stats.queued,
        "each queued delivery was tried once"
    );
    sim.stop().await;
}

#[tokio::test]
async fn an_unreachable_receiver_counts_as_failed() {
    let receiver = Receiver::start().await;
    let dead = receiver.at("/");
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sim = start(SimConfig {
        webhooks: vec![WebhookConfig::new(dead)],
        webhook_timeout: Duration::from_millis(500),
        ..config(1)
    })
    .await;
    one_job_pipeline(&sim, 1, "pending");
    settle(&sim).await;
    let stats = &sim.control.webhooks()[0].stats;
    assert_eq!((stats.sent, stats.failed), (1, 1), "{stats:?}");
    assert_eq!(stats.by_status.keys().collect::<Vec<_>>(), ["error"]);
    sim.stop().await;
}

/// The order of a job's statuses in its life (the final ones share a rank).
fn rank(status: &str) -> u8 {
    match status {
        "created" => 0,
        "pending" => 1,
        "running" => 2,
        _ => 3,
    }
}

#[tokio::test]
async fn autopilot_transitions_are_delivered_when_the_clock_moves() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        projects: 2,
        fleet: FleetConfig::default(),
        ..config(2)
    })
    .await;
    sim.control
        .add_webhook(WebhookConfig::new(receiver.at("/")).for_projects([1]))
        .expect("valid hook");
    // Nothing is looked at: moving the clock alone brings project 1 up to date.
    sim.control.advance(Duration::from_secs(3600));
    receiver.wait_for(1).await;
    // The admin route moves it too.
    let response = sim
        .client
        .post(sim.url("/-/sim/clock/advance?seconds=3600"))
        .send()
        .await
        .expect("advance");
    assert_eq!(response.status(), 200);
    settle(&sim).await;

    let received = receiver.received();
    let mut per_job: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut created = 0;
    for r in &received {
        assert_eq!(r.body["project_id"], 1, "project 2 has no hook");
        let status = r.status();
        assert!(
            [
                "created", "pending", "running", "success", "failed", "canceled"
            ]
            .contains(&status),
            "{status}"
        );
        created += usize::from(status == "created");
        per_job
            .entry(r.build_id())
            .or_default()
            .push(status.to_owned());
    }
    assert!(created > 0, "new pipelines were pushed: {per_job:?}");
    assert!(
        per_job.values().any(|s| s.len() >= 3),
        "some job went through several transitions: {per_job:?}"
    );
    for (job, seen) in &per_job {
        assert!(
            seen.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
            "job {job} out of order: {seen:?}"
        );
    }
    // Autopilot deliveries carry the simulated times of the events, not of the catch-up
    // (the webhook format sorts as text).
    assert!(received.iter().any(|r| {
        r.body["build_finished_at"]
            .as_str()
            .is_some_and(|t| t < "2026-11-23 11:00:00 UTC")
    }));

    // A job's last delivery is the status the API shows now (when that status fires at all).
    for (job, seen) in &per_job {
        let (code, body) = sim.get_json(&format!("/projects/1/jobs/{job}")).await;
        let now = body["status"].as_str().unwrap_or_default();
        if code == 200 && ["pending", "running", "success", "failed", "canceled"].contains(&now) {
            assert_eq!(seen.last().map(String::as_str), Some(now), "job {job}");
        }
    }
    sim.stop().await;
}

#[tokio::test]
async fn a_running_clock_delivers_on_its_own() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        projects: 1,
        clock: Clock::real(3600.0),
        fleet: FleetConfig::default(),
        webhooks: vec![WebhookConfig::new(receiver.at("/"))],
        ..config(1)
    })
    .await;
    // One simulated hour per second, and nobody looks at the project.
    receiver.wait_for(3).await;
    sim.stop().await;
}

async fn seeded_deliveries(seed: u64) -> Vec<(u64, String, String, String, bool)> {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        seed,
        webhooks: vec![WebhookConfig::new(receiver.at("/"))],
        faults: FaultConfig {
            hook_duplicate_ratio: 0.5,
            hook_drop_ratio: 0.2,
            ..FaultConfig::default()
        },
        ..config(1)
    })
    .await;
    let (_, job_id) = one_job_pipeline(&sim, 1, "created");
    for status in [
        "pending", "running", "failed", "pending", "running", "success",
    ] {
        sim.control.set_job_status(1, job_id, status, None);
    }
    settle(&sim).await;
    let log = sim.control.webhook_deliveries(1).expect("hook");
    sim.stop().await;
    // Dropped deliveries are logged when they are triggered, sent ones when sent: compare them
    // as a set.
    let mut log: Vec<_> = log
        .into_iter()
        .map(|d| {
            (
                d.job_id,
                d.build_status,
                d.event_uuid,
                d.outcome,
                d.duplicate,
            )
        })
        .collect();
    log.sort();
    log
}

#[tokio::test]
async fn delivery_faults_and_uuids_follow_the_seed() {
    let a = seeded_deliveries(5).await;
    let b = seeded_deliveries(5).await;
    assert_eq!(a, b);
    assert!(a.iter().any(|d| d.3 == "dropped"), "{a:?}");
    assert!(a.iter().any(|d| d.4), "{a:?}");
    let c = seeded_deliveries(6).await;
    assert_ne!(
        a.iter().map(|d| &d.2).collect::<Vec<_>>(),
        c.iter().map(|d| &d.2).collect::<Vec<_>>()
    );
}
