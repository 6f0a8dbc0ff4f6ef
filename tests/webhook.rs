//! Job Hook deliveries (`POST /webhook`) against the engine and the simulator: a delivered
//! failure is retried at once with one read of the job, a stranger or junk costs nothing, a
//! repeated or stale delivery never causes a second or wrong action, and the periodic listing
//! still catches what no delivery told.

mod engine_world;

use engine_world::*;
use jobwarden::engine::Engine;
use jobwarden::sim::JobSpec;
use jobwarden::webhook::{WebhookSecrets, WebhookState};
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "webhook-test-secret";
const GET_JOB: &str = "GET /projects/:id/jobs/:job_id";

const RETRY_AT_ONCE: &str = RETRY_STUCK;

struct Receiver {
    url: String,
    stop: CancellationToken,
}

impl Receiver {
    async fn start(engine: &Engine) -> Receiver {
        let secrets =
            WebhookSecrets::new(vec![SecretString::from(SECRET)], "TEST").expect("secret");
        Receiver::start_with(WebhookState::new(engine.clone(), secrets)).await
    }

    async fn start_with(state: WebhookState) -> Receiver {
        let stop = CancellationToken::new();
        let handle =
            jobwarden::webhook::spawn("127.0.0.1:0".parse().expect("addr"), state, stop.clone())
                .await
                .expect("receiver");
        Receiver {
            url: format!("http://{}/webhook", handle.local_addr),
            stop,
        }
    }

    /// Delivers a Job Hook for `job` of the world's project as GitLab would; returns the
    /// status and the body.
    async fn deliver(&self, w: &World, job: u64, status: &str, event: &str) -> (u16, String) {
        self.deliver_with(w, w.project, job, status, event, Some(SECRET), None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver_with(
        &self,
        w: &World,
        project: u64,
        job: u64,
        status: &str,
        event: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        let payload = serde_json::json!({
            "object_kind": "build",
            "build_id": job,
            "build_status": status,
            "build_failure_reason": "stuck_or_timeout_failure",
            "project_id": project,
            "pipeline_id": 1,
        });
        let mut request = reqwest::Client::new()
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Gitlab-Event", "Job Hook")
            .header("X-Gitlab-Event-UUID", event)
            .header("Idempotency-Key", format!("key-{event}"))
            .header(
                "X-Gitlab-Instance",
                w.sim.base_url().as_str().trim_end_matches('/'),
            )
            .body(body.unwrap_or_else(|| payload.to_string().into_bytes()));
        if let Some(token) = token {
            request = request.header("X-Gitlab-Token", token);
        }
        let response = request.send().await.expect("delivered");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

impl Receiver {
    /// Delivers a Job Hook for `job` of the world's project as the simulator holds it now, with
    /// every field GitLab sends that jobwarden reads.
    async fn deliver_as_gitlab(&self, w: &World, job: u64, event: &str) -> u16 {
        let sim = w.ctl.job(w.project, job).expect("job exists");
        let time = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
        let payload = serde_json::json!({
            "object_kind": "build",
            "ref": sim.git_ref,
            "tag": sim.tag,
            "build_id": job,
            "build_name": sim.name,
            "build_stage": sim.stage,
            "build_status": sim.status,
            "build_created_at": time(sim.created_at),
            "build_allow_failure": sim.allow_failure,
            "build_failure_reason": sim.failure_reason,
            "pipeline_id": sim.pipeline_id,
            "project_id": w.project,
        });
        let body = Some(payload.to_string().into_bytes());
        self.deliver_with(w, w.project, job, "", event, Some(SECRET), body)
            .await
            .0
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running job, observed by a first run of the retry policy; returns its id.
async fn observed_running_job(
    w: &World,
    engine: &Engine,
    policy: &jobwarden::policy::CompiledPolicy,
) -> u64 {
    let ids = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "running").aged(Duration::from_secs(600))],
    );
    let report = w.run(engine, policy).await;
    assert!(report.actions.is_empty());
    ids[0]
}

/// A retry policy that observed a running job, and a receiver for its deliveries.
async fn retry_policy_watching_a_running_job() -> (
    World,
    Engine,
    jobwarden::policy::CompiledPolicy,
    u64,
    Receiver,
) {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(RETRY_AT_ONCE);
    let job = observed_running_job(&w, &engine, &policy).await;
    let receiver = Receiver::start(&engine).await;
    (w, engine, policy, job, receiver)
}

async fn run_delivered(
    engine: &Engine,
    policy: &jobwarden::policy::CompiledPolicy,
) -> jobwarden::engine::RunReport {
    engine
        .reconcile_delivered(
            policy,
            &SecretString::from(TOKEN.to_owned()).into(),
            &CancellationToken::new(),
        )
        .await
        .expect("run")
}

#[tokio::test]
async fn a_delivered_failure_is_retried_at_once_with_one_read_of_the_job() {
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    w.advance(1);
    w.ctl.reset_log();
    let (status, body) = receiver.deliver(&w, job, "failed", "e1").await;
    assert_eq!((status, body.as_str()), (202, r#"{"status":"accepted"}"#));

    // The policy's loop is woken (a permit waits for it) and runs on the delivered project.
    tokio::time::timeout(
        Duration::from_secs(1),
        engine.wakeup(&policy.key).notified(),
    )
    .await
    .expect("the policy was woken");
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(w.count(GET_JOB), 1, "one read of the delivered job");
    assert_eq!(w.count(LIST_JOBS), 0, "no listing");
    assert_eq!(w.count(RETRY), 1);
    let scrape = engine.metrics().render();
    assert!(
        scrape.contains("jobwarden_webhook_deliveries_total{outcome=\"accepted\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("jobwarden_webhook_action_latency_seconds_count 1"),
        "{scrape}"
    );
}

#[tokio::test]
async fn every_policy_watching_the_project_acts_on_a_delivery_whichever_reads_it_first() {
    let (w, engine, retry, job, receiver) = retry_policy_watching_a_running_job().await;
    // A second policy on the same project, whose rules never match the failure.
    let cancel = w.named_policy(
        "cancel",
        PROJECT,
        "  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 30m}
      cancel: {}
",
    );
    let report = w.run(&engine, &cancel).await;
    assert!(report.actions.is_empty());

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    w.advance(1);
    w.ctl.reset_log();
    let (status, _) = receiver.deliver(&w, job, "failed", "e1").await;
    assert_eq!(status, 202);
    for policy in [&cancel, &retry] {
        tokio::time::timeout(
            Duration::from_secs(1),
            engine.wakeup(&policy.key).notified(),
        )
        .await
        .expect("every watching policy is woken");
    }
    assert!(engine.has_deliveries(&cancel.key) && engine.has_deliveries(&retry.key));

    // The cancel policy's pass comes first and reads the job into the shared observer.
    let report = run_delivered(&engine, &cancel).await;
    assert!(report.actions.is_empty());
    assert!(!engine.has_deliveries(&cancel.key));
    assert_eq!(w.count(GET_JOB), 1);
    // The retry policy still has the project to look at, and acts on what was read.
    assert!(
        engine.has_deliveries(&retry.key),
        "still due for the retry policy"
    );
    let report = run_delivered(&engine, &retry).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(
        w.count(GET_JOB),
        1,
        "the job was read once for both policies"
    );
    assert_eq!(w.count(LIST_JOBS), 0);
    assert!(!engine.has_deliveries(&retry.key));
}

#[tokio::test]
async fn strangers_junk_and_unwatched_projects_cost_no_gitlab_call() {
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;
    w.ctl.reset_log();

    let (status, body) = receiver
        .deliver_with(&w, w.project, job, "failed", "e1", None, None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("X-Gitlab-Token"), "{body}");
    let (status, _) = receiver
        .deliver_with(&w, w.project, job, "failed", "e2", Some("guess"), None)
        .await;
    assert_eq!(status, 401);
    let oversized = vec![b' '; 2 << 20];
    let (status, _) = receiver
        .deliver_with(
            &w,
            w.project,
            job,
            "failed",
            "e3",
            Some(SECRET),
            Some(oversized),
        )
        .await;
    assert_eq!(status, 413);
    let junk = b"{\"object_kind\":".to_vec();
    let (status, body) = receiver
        .deliver_with(&w, w.project, job, "failed", "e4", Some(SECRET), Some(junk))
        .await;
    assert_eq!(status, 400);
    assert!(body.starts_with("{\"error\":"), "{body}");

    // A project no policy watches.
    let other = w.ctl.add_project("team/other").expect("project");
    let (status, body) = receiver
        .deliver_with(&w, other, 1, "failed", "e5", Some(SECRET), None)
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ignored"}"#));

    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty());
    assert!(
        w.ctl.request_log().is_empty(),
        "not a single GitLab request"
    );
}

#[tokio::test]
async fn a_repeated_delivery_is_acted_on_once_and_a_stale_one_never_acts() {
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;

    // Out of order: "failed" arrives while GitLab still shows the job running (the job's
    // deliveries race, or a forged-but-authenticated one): the re-read decides, nothing acts.
    w.ctl.reset_log();
    assert_eq!(receiver.deliver(&w, job, "failed", "e1").await.0, 202);
    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(GET_JOB), 1);

    // The job fails; GitLab delivers the event twice.
    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    assert_eq!(receiver.deliver(&w, job, "failed", "e2").await.0, 202);
    let (status, body) = receiver.deliver(&w, job, "failed", "e2").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"duplicate"}"#));
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty(), "nothing left to do");
    assert_eq!(w.count(RETRY), 1);
    assert_eq!(w.count(GET_JOB), 2);
}

#[tokio::test]
async fn a_lost_delivery_is_caught_by_the_resync() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(&format!("  resyncInterval: 100s\n{RETRY_AT_ONCE}"));
    let job = observed_running_job(&w, &engine, &policy).await;
    let receiver = Receiver::start(&engine).await;
    // The project's hooks work: a delivery keeps it off the listing until the resync.
    let other = w.pipeline("main", false, vec![JobSpec::new("lint", "test", "pending")])[0];
    assert_eq!(receiver.deliver(&w, other, "pending", "e1").await.0, 202);
    run_delivered(&engine, &policy).await;

    // The job fails and its delivery is lost.
    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    w.ctl.reset_log();
    w.advance(20);
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty(), "within the resync nothing lists");
    assert_eq!(w.count(LIST_JOBS), 0);
    w.advance(50);
    let report = w.run(&engine, &policy).await;
    assert!(
        report.actions.is_empty(),
        "70 s: still within the 100 s resync"
    );
    assert_eq!(w.count(LIST_JOBS), 0);
    w.advance(30);
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "retry"),
        ["succeeded"],
        "the resync listing found it"
    );
    assert!(w.count(LIST_JOBS) >= 1);
}

#[tokio::test]
async fn the_file_mode_loop_acts_on_a_delivery_without_waiting_for_its_interval() {
    use jobwarden::source::files::runner::{RunnerConfig, TokenSource, run_policies};
    use std::sync::Arc;
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let ids = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "running").aged(Duration::from_secs(600))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("retry.yaml"),
        format!(
            "apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nmetadata: {{name: retry, namespace: ci}}\nspec:\n  gitlab: {{url: \"{}\", tokenSecretRef: {{name: gitlab, key: token}}}}\n  projects: [\"{PROJECT}\"]\n  interval: 1h\n{RETRY_AT_ONCE}",
            w.sim.base_url()
        ),
    )
    .expect("manifest");
    let stop = CancellationToken::new();
    let runner = tokio::spawn(run_policies(
        engine.clone(),
        RunnerConfig {
            paths: vec![dir.path().to_path_buf()],
            token: TokenSource::Fixed(SecretString::from(TOKEN.to_owned())),
            override_policy: None,
            reload_every: Duration::from_secs(3600),
            selector: None,
            readiness: None,
        },
        Arc::new(|_: &jobwarden::engine::RunReport| {}),
        stop.clone(),
    ));
    let receiver = Receiver::start(&engine).await;
    // The first run observes the project.
    for _ in 0..100 {
        if w.count(LIST_JOBS) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    w.ctl.set_job_status(
        w.project,
        ids[0],
        "failed",
        Some("stuck_or_timeout_failure"),
    );
    let delivered = std::time::Instant::now();
    assert_eq!(receiver.deliver(&w, ids[0], "failed", "e1").await.0, 202);
    for _ in 0..250 {
        if w.count(RETRY) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        w.count(RETRY),
        1,
        "retried after the delivery, long before the 1h interval"
    );
    assert!(delivered.elapsed() < Duration::from_secs(5));
    stop.cancel();
    runner.await.expect("runner stops");
}

/// A standby replica (its own engine, which runs no policy) following `leader`, and its
/// receiver, which forwards to `http://{identity}/webhook` (the leader's identity is its
/// receiver's address, so that `{identity}` finds it here).
async fn standby_of(w: &World, leader: &Receiver) -> (Engine, Receiver) {
    use jobwarden::webhook::{Forwarder, Leadership, Role};
    let engine = w.engine();
    let secrets = WebhookSecrets::new(vec![SecretString::from(SECRET)], "TEST").expect("secret");
    let receiver = Receiver::start_with(WebhookState::new(engine.clone(), secrets).elected(
        Leadership::new(Role::Following {
            leader: leader.identity().to_owned(),
        }),
        Some(Forwarder::new("http://{identity}/webhook")),
    ))
    .await;
    (engine, receiver)
}

#[tokio::test]
async fn a_standby_passes_a_delivery_on_to_the_leader() {
    let (w, engine, policy, job, leader) = retry_policy_watching_a_running_job().await;
    let (standby_engine, standby) = standby_of(&w, &leader).await;

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    let (status, body) = standby.deliver(&w, job, "failed", "e1").await;
    assert_eq!((status, body.as_str()), (202, r#"{"status":"forwarded"}"#));
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "retry"),
        ["succeeded"],
        "the leader acted"
    );
    let standby_scrape = standby_engine.metrics().render();
    assert!(
        standby_scrape.contains("jobwarden_webhook_deliveries_total{outcome=\"forwarded\"} 1"),
        "{standby_scrape}"
    );
    let leader_scrape = engine.metrics().render();
    assert!(
        leader_scrape.contains("jobwarden_webhook_deliveries_total{outcome=\"accepted\"} 1"),
        "{leader_scrape}"
    );
    // A standby whose leader is gone says so; GitLab sees the failure.
    drop(leader);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = standby.deliver(&w, job, "failed", "e2").await;
    assert_eq!(status, 503, "{body}");
}

/// A standby runs no policy, so it does not know a policy's own webhook secret: it forwards the
/// delivery and the leader checks it. A token neither knows gets the leader's 401.
#[tokio::test]
async fn a_standby_forwards_a_delivery_signed_with_a_policys_own_secret() {
    let (w, engine, policy, job, leader) = retry_policy_watching_a_running_job().await;
    engine.set_webhook_secret(&policy.key, Some(SecretString::from("team-secret")));
    let (standby_engine, standby) = standby_of(&w, &leader).await;

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    let (status, body) = standby
        .deliver_with(
            &w,
            w.project,
            job,
            "failed",
            "e1",
            Some("team-secret"),
            None,
        )
        .await;
    assert_eq!((status, body.as_str()), (202, r#"{"status":"forwarded"}"#));
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "retry"),
        ["succeeded"],
        "the leader acted"
    );

    let (status, _) = standby
        .deliver_with(&w, w.project, job, "failed", "e2", Some("nobody's"), None)
        .await;
    assert_eq!(status, 401, "the leader refused the token");
    for scrape in [standby_engine.metrics().render(), engine.metrics().render()] {
        assert!(
            scrape.contains("jobwarden_webhook_deliveries_total{outcome=\"unauthorized\"} 1"),
            "{scrape}"
        );
    }
}

#[tokio::test]
async fn the_simulators_own_delivery_leads_to_the_retry() {
    use jobwarden::sim::WebhookConfig;
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;
    w.ctl
        .add_webhook(WebhookConfig::new(&receiver.url).with_token(SECRET))
        .expect("hook");
    let woken = engine.wakeup(&policy.key);

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("GitLab's delivery woke the policy");
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    // The retry's own deliveries (the new job created, pending) are accepted too.
    assert!(w.ctl.wait_for_webhooks(Duration::from_secs(5)).await);
    let scrape = engine.metrics().render();
    assert!(
        !scrape.contains("outcome=\"unauthorized\"") && !scrape.contains("outcome=\"invalid\""),
        "the simulator's deliveries pass every check: {scrape}"
    );
}

#[tokio::test]
async fn a_dry_run_decision_is_reported_once_across_runs_on_deliveries() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(&format!("  dryRun: true\n{RETRY_AT_ONCE}"));
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("rspec", "test", "failed").failed_with("stuck_or_timeout_failure"),
            JobSpec::new("lint", "test", "running"),
        ],
    );
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["dry_run"]);
    assert!(!report.actions[0].repeat);
    let receiver = Receiver::start(&engine).await;
    for (n, event) in ["e1", "e2", "e3"].into_iter().enumerate() {
        assert_eq!(
            receiver.deliver(&w, ids[n % 2], "running", event).await.0,
            202
        );
        let report = run_delivered(&engine, &policy).await;
        assert!(
            report.actions.iter().all(|a| a.repeat),
            "{:?}",
            report.actions
        );
    }
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.iter().all(|a| a.repeat));
}

#[tokio::test]
async fn a_policys_own_secret_is_accepted_for_its_projects_only() {
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;
    engine.set_webhook_secret(&policy.key, Some(SecretString::from("team-secret")));
    let other = w.ctl.add_project("team/other").expect("project");
    // Another team's policy watches the other project, with its own secret.
    let theirs = w.named_policy("theirs", "team/other", RETRY_AT_ONCE);
    w.run(&engine, &theirs).await;
    engine.set_webhook_secret(&theirs.key, Some(SecretString::from("their-secret")));

    let mine = receiver
        .deliver_with(
            &w,
            w.project,
            job,
            "failed",
            "e1",
            Some("team-secret"),
            None,
        )
        .await;
    assert_eq!(mine.0, 202, "{}", mine.1);
    let not_for_that_project = receiver
        .deliver_with(&w, other, 1, "failed", "e2", Some("team-secret"), None)
        .await;
    assert_eq!(
        not_for_that_project.0, 401,
        "a team's secret opens only its projects"
    );
    let theirs_on_mine = receiver
        .deliver_with(
            &w,
            w.project,
            job,
            "failed",
            "e3",
            Some("their-secret"),
            None,
        )
        .await;
    assert_eq!(theirs_on_mine.0, 401);
    // The controller's own secret opens every project.
    let operator = receiver
        .deliver_with(&w, other, 1, "failed", "e4", Some(SECRET), None)
        .await;
    assert_eq!(operator.0, 202);
    engine.set_webhook_secret(&policy.key, None);
    let revoked = receiver
        .deliver_with(
            &w,
            w.project,
            job,
            "failed",
            "e5",
            Some("team-secret"),
            None,
        )
        .await;
    assert_eq!(revoked.0, 401);
}

/// Listings of the project of `policy` that one run of it makes.
async fn listings_of_one_run(
    w: &World,
    engine: &Engine,
    policy: &jobwarden::policy::CompiledPolicy,
) -> u64 {
    let before = w.count(LIST_JOBS);
    w.run(engine, policy).await;
    w.count(LIST_JOBS) - before
}

/// Another project of the instance (`busy_project`) delivers a running job, its `step`th
/// delivery: the instance's deliveries flow.
async fn keep_the_instance_delivering(
    receiver: &Receiver,
    w: &World,
    busy_project: u64,
    step: u64,
) {
    let event = format!("busy-{step}");
    let (status, _) = receiver
        .deliver_with(
            w,
            busy_project,
            1000 + step,
            "running",
            &event,
            Some(SECRET),
            None,
        )
        .await;
    assert_eq!(status, 202);
}

/// A project that has delivered once is trusted to have a hook: while its GitLab instance's
/// deliveries flow (another project's here), it is listed only at the resync, however quiet
/// it stays. When the instance falls silent for longer than the resync, it is listed at every
/// run again (deliveries may be lost).
#[tokio::test]
async fn a_quiet_project_with_a_hook_is_listed_only_at_the_resync_while_its_instance_delivers() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let with_resync = format!("  resyncInterval: 300s\n{RETRY_AT_ONCE}");
    let quiet = w.named_policy("quiet", PROJECT, &with_resync);
    let busy_project = w.ctl.add_project("team/busy").expect("project");
    let busy = w.named_policy("busy", "team/busy", &with_resync);
    w.run(&engine, &quiet).await;
    w.run(&engine, &busy).await;
    let receiver = Receiver::start(&engine).await;
    // The quiet project delivers once, then never again.
    assert_eq!(receiver.deliver(&w, 1, "running", "quiet").await.0, 202);

    let mut quiet_listings = 0;
    for step in 1..=60 {
        w.advance(10);
        keep_the_instance_delivering(&receiver, &w, busy_project, step).await;
        quiet_listings += listings_of_one_run(&w, &engine, &quiet).await;
    }
    assert_eq!(
        quiet_listings, 2,
        "600 s of runs every 10 s: listed at each 300 s resync only"
    );

    // Nothing is delivered for longer than the resync: every run lists again.
    w.advance(310);
    let mut silent_listings = 0;
    for _ in 0..3 {
        w.advance(10);
        silent_listings += listings_of_one_run(&w, &engine, &quiet).await;
    }
    assert_eq!(silent_listings, 3);
}

/// A project of a live instance that has not delivered yet is trusted once it has been listed
/// for a whole resync (a quiet project has nothing to deliver). But a listing that finds a job
/// created or moved since the previous one, which is then not delivered within the grace,
/// shows that its hook does not deliver: it is listed at every run again, until it delivers.
#[tokio::test]
async fn a_project_whose_moves_are_not_delivered_is_listed_at_every_run_again() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let with_resync = format!("  resyncInterval: 300s\n{RETRY_AT_ONCE}");
    let silent = w.named_policy("silent", PROJECT, &with_resync);
    let busy_project = w.ctl.add_project("team/busy").expect("project");
    let busy = w.named_policy("busy", "team/busy", &with_resync);
    w.run(&engine, &silent).await;
    w.run(&engine, &busy).await;
    let receiver = Receiver::start(&engine).await;
    let mut step = 0u64;
    // Runs every 10 s for `seconds`, the busy project delivering all along: the listings of
    // the silent project.
    let mut listings_for = async |seconds: u64| {
        let mut listings = 0;
        for _ in 0..seconds / 10 {
            step += 1;
            w.advance(10);
            keep_the_instance_delivering(&receiver, &w, busy_project, step).await;
            listings += listings_of_one_run(&w, &engine, &silent).await;
        }
        listings
    };
    assert_eq!(
        listings_for(290).await,
        29,
        "not listed for a resync yet: every run"
    );
    assert_eq!(
        listings_for(210).await,
        0,
        "quiet for a resync: trusted (t = 300–500 s)"
    );
    // A pipeline is pushed at 500 s; nothing is delivered for it.
    w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "pending")],
    );
    assert_eq!(
        listings_for(90).await,
        1,
        "the resync at 590 s finds the new job"
    );
    assert_eq!(
        listings_for(110).await,
        0,
        "its delivery may still come (grace until 710 s)"
    );
    assert_eq!(
        listings_for(100).await,
        10,
        "never delivered: every run (710–800 s)"
    );
    // The project delivers: its hook works after all.
    let (status, _) = receiver.deliver(&w, 1, "running", "silent-1").await;
    assert_eq!(status, 202);
    assert_eq!(listings_for(100).await, 0, "trusted again");
}

/// Manual-scope listings of the world's project so far.
fn manual_listings(w: &World) -> usize {
    w.ctl
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == "/projects/:id/jobs" && r.query.contains("manual"))
        .count()
}

/// A manual job more than a page behind the newest is beyond the listing's reach and is looked
/// for through the manual listing: every 10 minutes without hooks, but only hourly while the
/// project's hook is healthy (a played job's delivery marks it stale meanwhile). When the
/// deliveries stop, the 10-minute listing comes back.
#[tokio::test]
async fn blocked_jobs_beyond_reach_are_listed_hourly_while_the_hook_is_healthy() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "v1.0.0",
        true,
        vec![JobSpec::new("release", "deploy", "manual").aged(Duration::from_secs(3600))],
    );
    let newer: Vec<JobSpec> = (0..120)
        .map(|i| {
            JobSpec::new(format!("rspec {i}"), "test", "success").aged(Duration::from_secs(3600))
        })
        .collect();
    w.pipeline("main", false, newer);
    let engine = w.engine();
    let policy = w.policy(&format!("  resyncInterval: 300s\n{RETRY_AT_ONCE}"));
    w.run(&engine, &policy).await;
    let receiver = Receiver::start(&engine).await;

    let before = manual_listings(&w);
    // Two hours of runs every 30 s, the project's hook delivering all along.
    for step in 1..=240u64 {
        w.advance(30);
        let event = format!("e{step}");
        assert_eq!(receiver.deliver(&w, 1, "running", &event).await.0, 202);
        w.run(&engine, &policy).await;
    }
    let with_hooks = manual_listings(&w) - before;
    assert!(
        (1..=3).contains(&with_hooks),
        "two hours with a healthy hook: about one manual listing an hour, got {with_hooks}"
    );

    // The deliveries stop: after the resync, every 10 minutes again.
    let before = manual_listings(&w);
    for _ in 1..=120u64 {
        w.advance(30);
        w.run(&engine, &policy).await;
    }
    let without = manual_listings(&w) - before;
    assert!(
        (5..=7).contains(&without),
        "an hour without deliveries: every 10 minutes, got {without}"
    );
}

/// A delivered job is read only when a rule could act on it as delivered or as held: the
/// deliveries of a running job cost nothing to a policy that only retries failures; its
/// failure costs one read, and is retried.
#[tokio::test]
async fn deliveries_no_rule_could_act_on_are_not_read_and_a_failure_still_is() {
    let (w, engine, policy, job, receiver) = retry_policy_watching_a_running_job().await;
    w.ctl.reset_log();
    for (event, status) in [("e1", "pending"), ("e2", "running")] {
        assert_eq!(receiver.deliver(&w, job, status, event).await.0, 202);
        let report = run_delivered(&engine, &policy).await;
        assert!(report.actions.is_empty());
    }
    assert_eq!(
        w.count(GET_JOB),
        0,
        "no rule acts on a pending or running job"
    );

    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    assert_eq!(receiver.deliver(&w, job, "failed", "e3").await.0, 202);
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(w.count(GET_JOB), 1, "the failure is read once");
    assert_eq!(w.count(LIST_JOBS), 0);
}

/// A person plays the manual job a play policy holds: the job is delivered as `pending`, which
/// no play rule acts on, but it is held as `manual`, so it is read, and not played again.
#[tokio::test]
async fn a_manual_job_someone_played_is_read_and_not_played_again() {
    // 08:58 in Berlin: the play policy's window opens at 09:00.
    let w = World::start("2026-11-23T07:58:00Z").await;
    let engine = w.engine();
    let policy = w.policy(&format!("  resyncInterval: 1h\n{PLAY_POLICY}"));
    let deploy = w.pipeline("main", false, deploy_pipeline("success"))[2];
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty(), "outside the window");
    let receiver = Receiver::start(&engine).await;

    w.ctl.set_job_status(w.project, deploy, "pending", None);
    assert_eq!(receiver.deliver(&w, deploy, "pending", "e1").await.0, 202);
    w.advance(180);
    w.ctl.reset_log();
    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(GET_JOB), 1, "held as manual: read");
    assert_eq!(w.count(LIST_JOBS), 0, "within the resync");
    assert_eq!(w.count(PLAY), 0);
}

/// Who leads each shard, for the routing tests: a table the test fills once the receivers
/// listen, and the shards the receiver gave up on.
#[derive(Default)]
struct TestLeaders {
    table: std::sync::Mutex<std::collections::BTreeMap<u32, String>>,
    forgotten: std::sync::Mutex<Vec<u32>>,
}

impl TestLeaders {
    fn set(&self, index: u32, receiver: &Receiver) {
        self.table
            .lock()
            .expect("table")
            .insert(index, receiver.identity().to_owned());
    }

    fn forgotten(&self) -> Vec<u32> {
        self.forgotten.lock().expect("forgotten").clone()
    }
}

impl jobwarden::webhook::ShardLeaders for TestLeaders {
    fn leader_of(&self, index: u32) -> futures::future::BoxFuture<'_, Option<String>> {
        let leader = self.table.lock().expect("table").get(&index).cloned();
        Box::pin(async move { leader })
    }

    fn forget(&self, index: u32) {
        self.forgotten.lock().expect("forgotten").push(index);
    }
}

impl Receiver {
    /// The receiver's address, as `{identity}` in `http://{identity}/webhook`.
    fn identity(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/webhook")
    }
}

/// Two shards of two over the world's project, each leading its shard with a receiver: the
/// owner of the project (whose policy run observed its running job) and the other shard,
/// whose receiver forwards deliveries for the owner's projects as `leaders` says.
struct TwoShards {
    w: World,
    policy: jobwarden::policy::CompiledPolicy,
    job: u64,
    owner: Engine,
    other: Engine,
    owner_receiver: Receiver,
    other_receiver: Receiver,
    leaders: std::sync::Arc<TestLeaders>,
}

impl TwoShards {
    async fn start() -> TwoShards {
        use jobwarden::engine::{EngineConfig, Shard};
        use jobwarden::webhook::{Forwarder, Leadership};
        let w = World::start(MONDAY_MORNING).await;
        let instance = w.sim.base_url().as_str().trim_end_matches('/').to_owned();
        let owner_index = jobwarden::engine::shard::owner_of_project(&instance, w.project, 2);
        let engine_of = |index: u32| {
            w.engine_with(EngineConfig {
                destinations: jobwarden::gitlab::TokenDestinations::insecure_http_allowed(),
                shard: Shard::new(index, 2).expect("valid shard"),
                ..EngineConfig::default()
            })
        };
        let (owner, other) = (engine_of(owner_index), engine_of(1 - owner_index));
        let policy = w.policy(RETRY_AT_ONCE);
        let job = observed_running_job(&w, &owner, &policy).await;
        // The other shard runs the policy too (every shard runs every policy) and leaves the
        // project alone.
        let report = w.run(&other, &policy).await;
        assert_eq!(
            report.projects, 0,
            "the other shard does not own the project"
        );
        assert_eq!(other.observed_projects(), 0);
        let secrets =
            || WebhookSecrets::new(vec![SecretString::from(SECRET)], "TEST").expect("secret");
        let owner_receiver =
            Receiver::start_with(WebhookState::new(owner.clone(), secrets())).await;
        let leaders = std::sync::Arc::new(TestLeaders::default());
        let other_receiver = Receiver::start_with(
            WebhookState::new(other.clone(), secrets())
                .elected(
                    Leadership::always_leading(),
                    Some(Forwarder::new("http://{identity}/webhook")),
                )
                .routed(leaders.clone()),
        )
        .await;
        w.ctl
            .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
        w.advance(1);
        w.ctl.reset_log();
        TwoShards {
            w,
            policy,
            job,
            owner,
            other,
            owner_receiver,
            other_receiver,
            leaders,
        }
    }
}

fn deliveries(engine: &Engine) -> Vec<String> {
    engine
        .metrics()
        .render()
        .lines()
        .filter(|line| line.starts_with("jobwarden_webhook_deliveries_total{"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_delivery_for_another_shards_project_is_forwarded_once_to_that_shards_leader() {
    let s = TwoShards::start().await;
    s.leaders.set(owner_index(&s), &s.owner_receiver);

    // A stranger is refused where it knocks: nothing forwarded.
    let (status, _) = s
        .other_receiver
        .deliver_with(
            &s.w,
            s.w.project,
            s.job,
            "failed",
            "e0",
            Some("wrong"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(deliveries(&s.owner), Vec::<String>::new());

    let (status, body) = s.other_receiver.deliver(&s.w, s.job, "failed", "e1").await;
    assert_eq!(
        (status, body.as_str()),
        (202, r#"{"status":"forwarded"}"#),
        "the owner's status"
    );
    assert_eq!(
        deliveries(&s.other),
        [
            "jobwarden_webhook_deliveries_total{outcome=\"forwarded\"} 1",
            "jobwarden_webhook_deliveries_total{outcome=\"unauthorized\"} 1",
        ]
    );
    assert_eq!(
        deliveries(&s.owner),
        ["jobwarden_webhook_deliveries_total{outcome=\"accepted\"} 1"],
        "received once, by the owner"
    );
    assert!(
        s.w.ctl.request_log().is_empty(),
        "forwarding calls no GitLab"
    );

    let report = run_delivered(&s.owner, &s.policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"], "the owner acted");
    assert_eq!(s.w.count(GET_JOB), 1, "one read of the delivered job");
    assert_eq!(s.w.count(LIST_JOBS), 0);
    let report = run_delivered(&s.other, &s.policy).await;
    assert!(report.actions.is_empty());
    assert_eq!(s.w.count(RETRY), 1);
    assert!(s.leaders.forgotten().is_empty());
}

fn owner_index(s: &TwoShards) -> u32 {
    s.owner.shard().index()
}

#[tokio::test]
async fn a_forwarded_delivery_is_never_forwarded_again() {
    let s = TwoShards::start().await;
    // A stale table: the owner's shard is believed led by the other receiver itself. Without
    // the mark on forwarded deliveries it would forward to itself for ever.
    s.leaders.set(owner_index(&s), &s.other_receiver);
    let (status, body) = s.other_receiver.deliver(&s.w, s.job, "failed", "e1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        deliveries(&s.other),
        [
            "jobwarden_webhook_deliveries_total{outcome=\"misrouted\"} 1",
            "jobwarden_webhook_deliveries_total{outcome=\"unforwarded\"} 1",
        ],
        "one hop: the forwarded copy was refused, not forwarded"
    );
    assert_eq!(
        s.leaders.forgotten(),
        [owner_index(&s)],
        "the stale leader is read again next time"
    );
    assert_eq!(deliveries(&s.owner), Vec::<String>::new());

    // Marked as forwarded by hand: the owner acts on it, the other shard refuses it.
    let forwarded = |receiver: &Receiver, event: &str| {
        let payload = serde_json::json!({
            "object_kind": "build", "build_id": s.job, "build_status": "failed",
            "project_id": s.w.project,
        });
        reqwest::Client::new()
            .post(&receiver.url)
            .header("Content-Type", "application/json")
            .header("X-Gitlab-Event", "Job Hook")
            .header("X-Gitlab-Event-UUID", event)
            .header("X-Gitlab-Token", SECRET)
            .header(
                "X-Gitlab-Instance",
                s.w.sim.base_url().as_str().trim_end_matches('/'),
            )
            .header("X-Jobwarden-Forwarded", "1")
            .body(payload.to_string())
            .send()
    };
    let refused = forwarded(&s.other_receiver, "e2").await.expect("answered");
    assert_eq!(refused.status().as_u16(), 421);
    let taken = forwarded(&s.owner_receiver, "e3").await.expect("answered");
    assert_eq!(taken.status().as_u16(), 202);
    let report = run_delivered(&s.owner, &s.policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(s.w.count(GET_JOB), 1);
}

#[tokio::test]
async fn an_unreachable_or_unknown_owner_is_answered_503() {
    let s = TwoShards::start().await;
    // No replica holds the owner's Lease.
    let (status, body) = s.other_receiver.deliver(&s.w, s.job, "failed", "e1").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no replica is known to lead shard"), "{body}");

    // The Lease names a replica that is gone.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    s.leaders
        .table
        .lock()
        .expect("table")
        .insert(owner_index(&s), gone.to_string());
    let (status, body) = s.other_receiver.deliver(&s.w, s.job, "failed", "e2").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot reach the leader"), "{body}");
    assert_eq!(s.leaders.forgotten(), [owner_index(&s)]);
    assert_eq!(
        deliveries(&s.other),
        ["jobwarden_webhook_deliveries_total{outcome=\"unforwarded\"} 2"]
    );
    assert!(s.w.ctl.request_log().is_empty(), "no GitLab call");
    drop(s.owner_receiver);
}

/// A policy with `rules` (and a one-hour resync) that has run once on the world's project,
/// its engine and a receiver.
async fn watching(rules: &str) -> (World, Engine, jobwarden::policy::CompiledPolicy, Receiver) {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(&format!("  resyncInterval: 1h\n{rules}"));
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty());
    let receiver = Receiver::start(&engine).await;
    (w, engine, policy, receiver)
}

/// Fails `skipped` and `matched` (new jobs, not held), delivers each failure as GitLab does, and
/// checks that only `matched` is read, once, and retried.
async fn only_the_matching_failure_is_read(
    condition: &str,
    skipped: (&str, JobSpec),
    matched: (&str, JobSpec),
) {
    let rules = format!(
        "  rules:\n    - name: r\n      match: {{statuses: [failed], {condition}}}\n      retry: {{limit: 1}}\n"
    );
    let (w, engine, policy, receiver) = watching(&rules).await;
    let skipped = w.pipeline(skipped.0, skipped.0.starts_with('v'), vec![skipped.1])[0];
    let matched = w.pipeline(matched.0, matched.0.starts_with('v'), vec![matched.1])[0];
    w.advance(1);
    w.ctl.reset_log();
    assert_eq!(
        receiver.deliver_as_gitlab(&w, skipped, "skipped").await,
        202
    );
    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{condition}");
    assert_eq!(w.count(GET_JOB), 0, "{condition}: no rule acts on it");

    assert_eq!(
        receiver.deliver_as_gitlab(&w, matched, "matched").await,
        202
    );
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"], "{condition}");
    assert_eq!(w.count(GET_JOB), 1, "{condition}: the match is read once");
    assert_eq!(w.count(RETRY), 1, "{condition}");
    assert_eq!(w.count(LIST_JOBS), 0, "{condition}");
}

fn failed(name: &str, stage: &str, reason: &str) -> JobSpec {
    JobSpec::new(name, stage, "failed").failed_with(reason)
}

/// A failure is read only when its delivered reason, name, stage, ref, tag and allow_failure
/// let some rule act on it.
#[tokio::test]
async fn a_delivered_failure_is_read_only_when_its_delivered_facts_match_a_rule() {
    const SCRIPT: &str = "script_failure";
    let cases = [
        (
            "failureReasons: [stuck_or_timeout_failure]",
            ("main", failed("rspec", "test", SCRIPT)),
            ("main", failed("rspec", "test", "stuck_or_timeout_failure")),
        ),
        (
            "names: ['rspec*']",
            ("main", failed("lint", "test", SCRIPT)),
            ("main", failed("rspec 1/3", "test", SCRIPT)),
        ),
        (
            "stages: [build]",
            ("main", failed("rspec", "test", SCRIPT)),
            ("main", failed("build", "build", SCRIPT)),
        ),
        (
            "refs: ['main']",
            ("feature/x", failed("rspec", "test", SCRIPT)),
            ("main", failed("rspec", "test", SCRIPT)),
        ),
        (
            "tag: true",
            ("main", failed("release", "deploy", SCRIPT)),
            ("v1.2.3", failed("release", "deploy", SCRIPT)),
        ),
        (
            "allowFailure: false",
            ("main", failed("lint", "test", SCRIPT).manual()),
            ("main", failed("rspec", "test", SCRIPT)),
        ),
    ];
    for (condition, skipped, matched) in cases {
        only_the_matching_failure_is_read(condition, skipped, matched).await;
    }
}

/// `olderThan`: a job created less than that ago cannot match yet, so its delivery is not
/// read (the resync lists it when it can); one created long enough ago is read and canceled.
#[tokio::test]
async fn a_delivered_job_younger_than_older_than_is_not_read() {
    let rules = "  rules:\n    - name: stale\n      match: {statuses: [created], olderThan: 30m}\n      cancel: {}\n";
    let (w, engine, policy, receiver) = watching(rules).await;
    let young = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "created")],
    )[0];
    let old = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "created").aged(Duration::from_secs(2400))],
    )[0];
    w.advance(1);
    w.ctl.reset_log();
    assert_eq!(receiver.deliver_as_gitlab(&w, young, "young").await, 202);
    run_delivered(&engine, &policy).await;
    assert_eq!(w.count(GET_JOB), 0, "created a second ago");

    assert_eq!(receiver.deliver_as_gitlab(&w, old, "old").await, 202);
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["succeeded"]);
    assert_eq!(w.count(GET_JOB), 1);
    assert_eq!(w.count(CANCEL), 1);
    assert_eq!(w.status(young), "created");
}

/// `superseded`: a new job is read only when it supersedes a held unfinished job (same name
/// and ref, older pipeline), which is then canceled; a running job of the newest pipeline is
/// not read.
#[tokio::test]
async fn a_delivered_job_is_read_for_superseded_only_when_it_supersedes_a_held_job() {
    let rules = "  rules:\n    - name: superseded\n      match: {statuses: [pending, running], superseded: true}\n      cancel: {}\n";
    let (w, engine, policy, receiver) = watching(rules).await;
    // A held lint waits in `created`, which the rule does not cancel.
    let held = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("rspec", "test", "running"),
            JobSpec::new("lint", "lint", "created"),
        ],
    )[0];
    // The next run lists the project (no delivery yet: every run lists).
    w.advance(10);
    w.run(&engine, &policy).await;
    let other_name = w.pipeline("main", false, vec![JobSpec::new("lint", "test", "created")])[0];
    let newer = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "created")],
    )[0];
    w.advance(1);
    w.ctl.reset_log();
    assert_eq!(
        receiver.deliver_as_gitlab(&w, other_name, "lint").await,
        202
    );
    w.ctl.set_job_status(w.project, other_name, "running", None);
    assert_eq!(
        receiver
            .deliver_as_gitlab(&w, other_name, "lint-running")
            .await,
        202
    );
    run_delivered(&engine, &policy).await;
    assert_eq!(
        w.count(GET_JOB),
        0,
        "supersedes no job the rule cancels, superseded by nothing"
    );

    assert_eq!(receiver.deliver_as_gitlab(&w, newer, "rspec").await, 202);
    let report = run_delivered(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["succeeded"]);
    assert_eq!(w.count(GET_JOB), 1, "the new rspec is read once");
    assert_eq!(w.count(CANCEL), 1);
    assert_eq!(w.status(held), "canceled");
}

/// A delivery of the status jobwarden holds tells nothing new: not read, even for a rule
/// acting on that status (a dry-run policy that would cancel the running job).
#[tokio::test]
async fn a_delivery_of_the_held_status_is_not_read() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(
        "  resyncInterval: 1h\n  dryRun: true\n  rules:\n    - name: cancel\n      match: {statuses: [running]}\n      cancel: {}\n",
    );
    let job = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "running")],
    )[0];
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["dry_run"]);
    let receiver = Receiver::start(&engine).await;
    w.advance(1);
    w.ctl.reset_log();
    assert_eq!(receiver.deliver_as_gitlab(&w, job, "again").await, 202);
    run_delivered(&engine, &policy).await;
    assert_eq!(w.count(GET_JOB), 0);
}

/// A policy that cancels jobs pending for 30 minutes (after `extra_rules`), whose first run
/// holds a new pending job, and a receiver.
async fn a_held_pending_job(
    extra_rules: &str,
) -> (
    World,
    Engine,
    jobwarden::policy::CompiledPolicy,
    u64,
    Receiver,
) {
    let rules = format!(
        "  rules:\n{extra_rules}    - name: stale\n      match: {{statuses: [pending], olderThan: 30m}}\n      cancel: {{}}\n"
    );
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(&format!("  resyncInterval: 1h\n{rules}"));
    let job = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "pending")],
    )[0];
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty());
    let receiver = Receiver::start(&engine).await;
    (w, engine, policy, job, receiver)
}

/// [`a_held_pending_job`] that starts running and is delivered so; returns after the pass on
/// that delivery.
async fn a_held_pending_job_started_running() -> (
    World,
    Engine,
    jobwarden::policy::CompiledPolicy,
    u64,
    Receiver,
) {
    let (w, engine, policy, job, receiver) = a_held_pending_job("").await;
    w.ctl.set_job_status(w.project, job, "running", None);
    w.advance(1);
    w.ctl.reset_log();
    assert_eq!(receiver.deliver_as_gitlab(&w, job, "running").await, 202);
    run_delivered(&engine, &policy).await;
    (w, engine, policy, job, receiver)
}

/// A held job delivered in another status that no rule acts on now is not read at once; it is
/// read before a rule would act on what is held, and nothing wrong is done: a pending job that
/// started running is not canceled as stale pending half an hour later.
#[tokio::test]
async fn a_held_job_that_moved_on_is_read_before_a_rule_acts_on_what_was_held() {
    let (w, engine, policy, job, _receiver) = a_held_pending_job_started_running().await;
    assert_eq!(w.count(GET_JOB), 0, "no rule acts on a running job");

    // Held as pending, it would be stale pending now: it is read first, and left running.
    w.advance(31 * 60);
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(LIST_JOBS), 0, "within the resync");
    assert_eq!(w.count(GET_JOB), 1, "read before the decision");
    assert_eq!(w.count(CANCEL), 0);
    assert_eq!(w.status(job), "running");
}

/// A held job a delivery said has moved on is not decided on while it cannot be read: with
/// every request failing, the held `pending` job that started running is not canceled as
/// stale pending; once GitLab answers, it is read and left running.
#[tokio::test]
async fn a_held_job_that_moved_on_and_cannot_be_read_is_not_decided_on() {
    let (w, engine, policy, job, _receiver) = a_held_pending_job_started_running().await;
    w.advance(31 * 60);
    w.ctl.set_faults(jobwarden::sim::FaultConfig {
        error_5xx_ratio: 1.0,
        ..Default::default()
    });
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(CANCEL), 0);

    w.ctl.set_faults(jobwarden::sim::FaultConfig::default());
    w.advance(10);
    let report = w.run(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(CANCEL), 0);
    assert_eq!(w.status(job), "running");
}

/// A delivery that must be read but cannot be makes its held job stale: a held `pending` job
/// delivered as failed is not canceled as stale pending while every read fails.
#[tokio::test]
async fn a_held_job_whose_delivery_cannot_be_read_is_not_decided_on() {
    let retry = RETRY_STUCK.trim_start_matches("  rules:\n");
    let (w, engine, policy, job, receiver) = a_held_pending_job(retry).await;
    w.advance(31 * 60);
    w.ctl
        .set_job_status(w.project, job, "failed", Some("stuck_or_timeout_failure"));
    assert_eq!(receiver.deliver_as_gitlab(&w, job, "failed").await, 202);
    w.ctl.set_faults(jobwarden::sim::FaultConfig {
        error_5xx_ratio: 1.0,
        ..Default::default()
    });
    w.ctl.reset_log();
    let report = run_delivered(&engine, &policy).await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert!(w.count(GET_JOB) >= 1, "tried to read it");
    assert_eq!(w.count(CANCEL), 0);
}
