//! Exactly-once actions under faults, against the simulator: a call GitLab carries out after its
//! client was left without an answer never meets a second one, across runs and restarts.

mod engine_world;

use engine_world::*;
use jobwarden::engine::{EngineConfig, ReconcileError, RunMode};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::sim::{FaultConfig, JobSpec};
use secrecy::SecretString;
use std::time::Duration;

/// The simulator carries every play out this long after leaving its client without an answer.
const LATE: Duration = Duration::from_millis(1500);

fn plays_applied_late(w: &World) -> usize {
    w.ctl
        .request_log()
        .iter()
        .filter(|r| r.endpoint.ends_with("/play") && r.applied_late)
        .count()
}

async fn wait_until_played(w: &World, job: u64) {
    for _ in 0..100 {
        if w.status(job) != "manual" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the late play of job {job} never landed");
}

/// Every `POST` answered by a dropped connection and carried out [`LATE`] afterwards.
fn apply_every_play_late(w: &World) {
    w.ctl.set_faults(FaultConfig {
        apply_late_ratio: 1.0,
        apply_late_after: LATE,
        ..FaultConfig::default()
    });
}

#[tokio::test]
async fn a_play_that_lands_late_is_never_sent_twice() {
    let w = World::start(MONDAY_MORNING).await;
    let deploy = w.pipeline("main", false, deploy_pipeline("success"))[2];
    let engine = w.engine();
    let policy = w.policy(PLAY_POLICY);

    apply_every_play_late(&w);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["in_doubt"]);
    assert_eq!(w.status(deploy), "manual", "not landed yet");

    // The next run comes before the late play lands: the job still looks playable, and the
    // faults are gone, so a second play would go through.
    w.ctl.set_faults(FaultConfig::default());
    w.advance(20);
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "play"),
        ["deferred"],
        "in doubt: left alone"
    );
    assert_eq!(w.count(PLAY), 1);

    // The late play lands and the deploy finishes; once the window has passed the job is
    // re-read and nothing is played again.
    wait_until_played(&w, deploy).await;
    w.ctl.set_job_status(w.project, deploy, "success", None);
    w.advance(6 * 60);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "play").is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(PLAY), 1);
    assert_eq!(plays_applied_late(&w), 1);
    let deploys = w
        .ctl
        .jobs(w.project)
        .into_iter()
        .filter(|j| j.name == "deploy-staging")
        .count();
    assert_eq!(deploys, 1, "the deploy ran once: no retry by a second play");
    let scrape = engine.metrics().render();
    assert!(
        scrape.lines().any(
            |l| l.starts_with("jobwarden_actions_total{") && l.contains("outcome=\"in_doubt\"")
        ),
        "{scrape}"
    );
}

#[tokio::test]
async fn a_play_that_never_landed_is_sent_again_after_the_window() {
    let w = World::start(MONDAY_MORNING).await;
    let deploy = w.pipeline("main", false, deploy_pipeline("success"))[2];
    let engine = w.engine();
    let policy = w.policy(PLAY_POLICY);

    // The play's client is left without an answer, and GitLab does not carry it out within the
    // test (five real minutes later, long after the simulator has stopped).
    w.ctl.set_faults(FaultConfig {
        apply_late_ratio: 1.0,
        apply_late_after: Duration::from_secs(300),
        ..FaultConfig::default()
    });
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["in_doubt"]);
    w.ctl.set_faults(FaultConfig::default());
    w.advance(60);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["deferred"]);
    w.advance(6 * 60);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["succeeded"], "{report:#?}");
    assert_ne!(w.status(deploy), "manual");
}

#[tokio::test]
async fn a_restart_keeps_a_job_in_doubt_and_the_hourly_budget() {
    let w = World::start(MONDAY_MORNING).await;
    let deploy = w.pipeline("main", false, deploy_pipeline("success"))[2];
    let state = tempfile::tempdir().expect("tempdir");
    let policy = w.policy(&format!(
        "  limits: {{maxActionsPerHour: 1}}\n{PLAY_POLICY}"
    ));

    apply_every_play_late(&w);
    let report = w.run(&w.engine_with_state_dir(state.path()), &policy).await;
    assert_eq!(outcomes(&report, "play"), ["in_doubt"]);
    w.ctl.set_faults(FaultConfig::default());

    // kill -9 and start again: the new process finds the job in doubt.
    w.advance(20);
    let restarted = w.engine_with_state_dir(state.path());
    let report = w.run(&restarted, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["deferred"]);
    assert_eq!(w.count(PLAY), 1);
    wait_until_played(&w, deploy).await;

    // A second deploy pipeline: the hour's one action was spent before the restart.
    let second = w.pipeline("main", false, deploy_pipeline("success"))[2];
    w.advance(60);
    let report = w.run(&w.engine_with_state_dir(state.path()), &policy).await;
    assert_eq!(outcomes(&report, "play"), ["skipped_over_budget"]);
    assert_eq!(w.status(second), "manual");
    // An hour after the first play the budget has room again.
    w.advance(60 * 60);
    let report = w.run(&w.engine_with_state_dir(state.path()), &policy).await;
    assert_eq!(outcomes(&report, "play"), ["succeeded"]);
    assert_ne!(w.status(second), "manual");
}

#[tokio::test]
async fn a_retry_refused_because_someone_retried_first_is_a_noop() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "failed").failed_with("stuck_or_timeout_failure")],
    );
    let policy = w.policy(
        "  rules:
    - name: retry-transient
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 2, backoff: {duration: 2s}}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["deferred"], "backoff");

    // Someone retries the job by hand; within half the interval (3 s of 10 s) jobwarden does not
    // list the project again, so it decides on its older view and GitLab refuses the retry.
    let status = reqwest::Client::new()
        .post(format!(
            "{}api/v4/projects/{}/jobs/{}/retry",
            w.sim.base_url(),
            w.project,
            ids[0]
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .expect("retry by hand")
        .status();
    assert_eq!(status, 201);
    w.advance(3);
    let before = w.count(RETRY);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["noop"], "{:?}", report.actions);
    assert_eq!(w.count(RETRY), before + 1, "one refused retry");
}

async fn run_expecting_refusal(w: &World, config: EngineConfig) -> ReconcileError {
    w.engine_with(config)
        .reconcile(
            &w.policy(PLAY_POLICY),
            &SecretString::from(TOKEN.to_owned()).into(),
            RunMode::Normal,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn no_token_is_sent_over_plain_http_or_to_a_host_not_allowed() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline("main", false, deploy_pipeline("success"));
    let err = run_expecting_refusal(&w, EngineConfig::default()).await;
    assert_eq!(err.kind(), "destination_refused");
    assert!(
        err.to_string().contains("--allow-insecure-http"),
        "the error says how to allow it: {err}"
    );
    let err = run_expecting_refusal(
        &w,
        EngineConfig {
            destinations: TokenDestinations {
                allow_insecure_http: true,
                allowed_hosts: vec!["gitlab.example.com".into()],
            },
            ..EngineConfig::default()
        },
    )
    .await;
    assert!(err.to_string().contains("--allowed-gitlab-hosts"), "{err}");
    assert!(
        w.ctl.request_log().is_empty(),
        "not a single request reached the simulator"
    );
}

/// The example policies, as `jobwarden demo` runs them: pointed at the simulator.
fn example_policies(url: &url::Url) -> Vec<jobwarden::policy::CompiledPolicy> {
    let mut policies = Vec::new();
    for (file, text) in jobwarden::commands::demo::EXAMPLES {
        let loaded = jobwarden::source::files::load_manifest_text(std::path::Path::new(file), text);
        assert!(loaded.errors.is_empty(), "{file}: {:?}", loaded.errors);
        for example in loaded.policies {
            let mut spec = example.policy.spec.clone();
            spec.gitlab.url = url.to_string();
            policies.push(jobwarden::policy::compile(example.key(), &spec).expect("compiles"));
        }
    }
    policies
}

#[tokio::test]
async fn the_example_policies_do_not_undo_each_other() {
    use jobwarden::commands::demo;
    use jobwarden::engine::Outcome;
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let clock = jobwarden::sim::Clock::manual(MONDAY_MORNING.parse().expect("time"));
    let config = demo::sim_config(TOKEN, demo::FLEET_PROJECTS, demo::FLEET_SEED, clock);
    let sim = jobwarden::sim::Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let ctl = sim.control();
    let clock_ctl = ctl.clone();
    let engine = jobwarden::engine::Engine::new(
        EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            // Simulated time runs faster than the real-time request budget refills.
            requests_per_minute: 1_000_000,
            ..EngineConfig::default()
        },
        std::sync::Arc::new(move || clock_ctl.now()),
        std::sync::Arc::new(jobwarden::metrics::Metrics::new()),
    );
    let policies = example_policies(&sim.base_url());
    let token = jobwarden::engine::GitLabAccess::from(SecretString::from(TOKEN.to_owned()));
    let stop = tokio_util::sync::CancellationToken::new();
    // Every job's first attempt, for the attempts retries created; the policies that decided
    // about each job (by its first attempt), dry runs included; what they did.
    let mut first_attempt: HashMap<u64, u64> = HashMap::new();
    let mut deciders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    // An hour of the demo fleet, a run of every policy every 10 simulated seconds.
    for _ in 0..360 {
        for policy in &policies {
            let report = engine
                .reconcile(policy, &token, RunMode::Normal, &stop)
                .await
                .expect("run");
            for action in report.actions.iter().filter(|a| !a.repeat) {
                let first = first_attempt.get(&action.job_id).copied();
                let first = first.unwrap_or(action.job_id);
                if let Outcome::Succeeded {
                    new_job_id: Some(new),
                } = action.outcome
                {
                    first_attempt.insert(new, first);
                }
                let decided = format!("{} {}", action.action, action.outcome.label());
                *outcomes.entry(decided).or_default() += 1;
                deciders
                    .entry(first)
                    .or_default()
                    .insert(policy.key.to_string());
            }
        }
        ctl.advance(Duration::from_secs(10));
    }
    for done in ["retry succeeded", "cancel succeeded", "retry dry_run"] {
        assert!(outcomes.contains_key(done), "no {done}: {outcomes:?}");
    }
    let shared: Vec<_> = deciders.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "jobs (by first attempt) decided on by more than one example: {shared:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_job_re_opened_by_a_retry_is_not_canceled_as_stale_at_once() {
    let w = World::start(MONDAY_MORNING).await;
    let eighteen_hours = Duration::from_secs(18 * 3600);
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("build", "build", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(eighteen_hours),
            JobSpec::new("deploy", "deploy", "skipped").aged(eighteen_hours),
        ],
    );
    let retry = w.named_policy(
        "retry",
        PROJECT,
        "  rules:
    - name: retry-stuck
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 1}
",
    );
    let cancel = w.named_policy(
        "cancel",
        PROJECT,
        "  rules:
    - name: cancel-stale
      match: {statuses: [created, pending], olderThan: 30m}
      cancel: {}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &retry).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(
        w.status(ids[1]),
        "created",
        "the retry re-opened the deploy"
    );

    w.advance(20);
    let report = w.run(&engine, &cancel).await;
    assert!(
        outcomes(&report, "cancel").is_empty(),
        "re-opened 20 s ago: {:?}",
        report.actions
    );
    assert_eq!(w.status(ids[1]), "created");

    // Stuck for half an hour since the retry: now it is stale.
    w.advance(30 * 60);
    let report = w.run(&engine, &cancel).await;
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.job_id == ids[1] && a.outcome.label() == "succeeded"),
        "{:?}",
        report.actions
    );
}

/// The sum of `jobwarden_actions_total` series with this outcome.
fn actions_total(engine: &jobwarden::engine::Engine, outcome: &str) -> f64 {
    engine
        .metrics()
        .render()
        .lines()
        .filter(|l| {
            l.starts_with("jobwarden_actions_total{")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_decision_that_sends_nothing_is_counted_once_however_many_runs_repeat_it() {
    let w = World::start(MONDAY_MORNING).await;
    let jobs: Vec<JobSpec> = (0..3)
        .map(|i| {
            JobSpec::new(format!("job-{i}"), "test", "pending").aged(Duration::from_secs(3 * 3600))
        })
        .collect();
    w.pipeline("main", false, jobs);
    let dry = w.named_policy(
        "dry",
        PROJECT,
        "  dryRun: true
  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 2h}
      cancel: {}
",
    );
    let engine = w.engine();
    for run in 0..5 {
        let report = w.run(&engine, &dry).await;
        assert_eq!(report.actions.len(), 3);
        assert!(
            report.actions.iter().all(|a| a.repeat == (run > 0)),
            "run {run}: {:?}",
            report.actions
        );
        w.advance(10);
    }
    assert_eq!(
        actions_total(&engine, "dry_run"),
        3.0,
        "one per job, not per run"
    );
}

#[tokio::test]
async fn a_call_in_flight_when_jobwarden_stopped_is_reported_after_the_restart() {
    let w = World::start(MONDAY_MORNING).await;
    let deploy = w.pipeline("main", false, deploy_pipeline("success"))[2];
    let state = tempfile::tempdir().expect("tempdir");
    let policy = w.policy(PLAY_POLICY);

    // GitLab holds every request a second and a half (and carries each out all the same); the
    // process is killed while the play is in flight: recorded in the state file, never answered.
    w.ctl.set_faults(FaultConfig {
        timeout_ratio: 1.0,
        timeout_hold: Duration::from_millis(1500),
        ..FaultConfig::default()
    });
    let ledger_file = state.path().join("ledger.json");
    let in_flight = format!("\"jobId\":{deploy}");
    {
        let engine = w.engine_with_state_dir(state.path());
        let run = w.run(&engine, &policy);
        tokio::pin!(run);
        loop {
            tokio::select! {
                _ = &mut run => panic!("the run ended before the play was sent"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if std::fs::read_to_string(&ledger_file).is_ok_and(|s| s.contains(&in_flight)) {
                break;
            }
        }
        // The call is recorded just before it is sent: let it go out (GitLab holds it).
        tokio::select! {
            _ = &mut run => panic!("the play was answered within GitLab's hold"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        // kill -9: the run and the engine are gone, the state file stays.
    }
    w.ctl.set_faults(FaultConfig::default());
    wait_until_played(&w, deploy).await;
    assert_eq!(w.count(PLAY), 1);

    // The new process reports the call it found in flight, before doing anything else.
    let restarted = w.engine_with_state_dir(state.path());
    let scrape = restarted.metrics().render();
    let reported = scrape.lines().find(|l| {
        l.starts_with("jobwarden_actions_total{")
            && l.contains("action=\"play\"")
            && l.contains("outcome=\"in_doubt\"")
            && l.contains("rule=\"play-deploy-when-green\"")
    });
    assert_eq!(
        reported.and_then(|l| l.rsplit(' ').next()),
        Some("1"),
        "{scrape}"
    );
    // Reported once: a second restart does not report it again.
    let scrape = w.engine_with_state_dir(state.path()).metrics().render();
    assert!(
        !scrape.contains("outcome=\"in_doubt\""),
        "reported twice: {scrape}"
    );

    // The job stays in doubt, then a re-read settles it: the play is never sent again.
    w.advance(20);
    let report = w.run(&restarted, &policy).await;
    assert!(outcomes(&report, "play").is_empty(), "{:?}", report.actions);
    w.advance(6 * 60);
    let report = w.run(&restarted, &policy).await;
    assert!(outcomes(&report, "play").is_empty(), "{:?}", report.actions);
    assert_eq!(w.count(PLAY), 1);
}

#[tokio::test]
async fn a_wait_is_counted_from_the_answer_so_a_slow_listing_never_cancels_early() {
    // A job queued 29 minutes ago; the policy cancels pending jobs after 30.
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "pending").aged(Duration::from_secs(29 * 60))],
    );
    let policy = w.policy(
        "  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 30m}
      cancel: {}
",
    );
    let engine = w.engine();
    // The first listing is answered 20 s after the run started (a rate limit, a slow GitLab):
    // GitLab then says the job has waited 29 m 20 s.
    w.ctl.set_faults(FaultConfig {
        latency: Duration::from_millis(400),
        ..FaultConfig::default()
    });
    let clock = w.ctl.clone();
    let slow = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        clock.advance(Duration::from_secs(20));
    });
    let report = w.run(&engine, &policy).await;
    slow.await.expect("advanced");
    assert!(outcomes(&report, "cancel").is_empty());
    w.ctl.set_faults(FaultConfig::default());

    // 29 m 50 s of waiting: not stale yet (counting the wait back from the run's start would
    // make it 30 m 10 s).
    w.advance(30);
    let report = w.run(&engine, &policy).await;
    assert!(
        outcomes(&report, "cancel").is_empty(),
        "{:?}",
        report.actions
    );
    assert_eq!(w.status(ids[0]), "pending");
    w.advance(15);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["succeeded"]);
}
