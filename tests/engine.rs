//! The engine against the simulator: what a user of jobwarden would notice in GitLab.
//!
//! Each test starts a simulator on loopback with a manual clock and an empty project, builds
//! pipelines through the simulator's control API, runs policies through the real engine (real
//! HTTP, real client), and checks GitLab's state and the requests made.

mod engine_world;

use engine_world::*;
use jobwarden::crd::ActionKind;
use jobwarden::engine::observe::REACHED_BLOCKED_EVERY;
use jobwarden::engine::{Engine, Outcome, OutcomeKind, RunMode, RunReport};
use jobwarden::policy::CompiledPolicy;
use jobwarden::sim::JobSpec;
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
const RETRY_POLICY: &str = "  rules:
    - name: retry-transient
      match:
        statuses: [failed]
        failureReasons: [stuck_or_timeout_failure]
      retry:
        limit: 2
        backoff: {duration: 60s, factor: 2, maxDuration: 10m}
";

/// A policy whose only rule cancels superseded jobs does not list manual jobs through their own
/// scope: it cannot act on them (the listing of new jobs already notes their pipelines).
#[tokio::test]
async fn a_superseded_rule_does_not_follow_manual_jobs() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("build", "build", "running"),
            JobSpec::new("deploy", "deploy", "manual"),
        ],
    );
    let engine = w.engine();
    let policy = w.policy(
        "  rules:
    - name: cancel-superseded
      match: {statuses: [pending, running], superseded: true}
      cancel: {}
",
    );
    for _ in 0..3 {
        w.run(&engine, &policy).await;
        w.advance(60);
    }
    let listings: Vec<String> = w
        .ctl
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == "/projects/:id/jobs")
        .map(|r| r.query)
        .collect();
    assert!(listings.len() >= 3, "{listings:?}");
    assert!(
        listings.iter().all(|q| !q.contains("manual")),
        "no manual-scope listing: {listings:?}"
    );
}

/// A retried failure is let go as soon as its new attempt is known, not at the next sync: a
/// first run that retries a backlog would otherwise hold each failure next to its new attempt.
#[tokio::test]
async fn a_retried_failure_is_not_held_next_to_its_new_attempt() {
    let w = World::start(MONDAY_MORNING).await;
    let stuck = |name: &str| {
        JobSpec::new(name, "test", "failed")
            .failed_with("stuck_or_timeout_failure")
            .aged(Duration::from_secs(3600))
    };
    w.pipeline("main", false, vec![stuck("a"), stuck("b"), stuck("c")]);
    let engine = w.engine();
    let policy = w.policy(RETRY_POLICY);
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "retry"),
        ["deferred"; 3],
        "the 60 s backoff"
    );
    w.advance(61);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"; 3]);
    assert_eq!(
        engine.kept_jobs(),
        3,
        "the three new attempts (pending), not the three failures they replace"
    );
}

#[tokio::test]
async fn a_stuck_job_is_retried_exactly_limit_times_with_backoff_even_across_restarts() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("build", "build", "success").aged(Duration::from_secs(600)),
            JobSpec::new("rspec", "test", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(Duration::from_secs(300)),
        ],
    );
    let first = ids[1];
    let policy = w.policy(RETRY_POLICY);
    let engine = w.engine();

    // Attempt 1 finished just now: the first backoff (60 s) has not elapsed.
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["deferred"]);
    assert_eq!(w.count(RETRY), 0);

    w.advance(61);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(w.count(RETRY), 1);
    let second = match &report.actions[0].outcome {
        Outcome::Succeeded {
            new_job_id: Some(id),
        } => *id,
        other => panic!("expected a new job id, got {other:?}"),
    };
    assert_ne!(second, first);

    // The new attempt gets stuck too. Its backoff is 60 s · 2 = 120 s.
    w.ctl.set_job_status(
        w.project,
        second,
        "failed",
        Some("stuck_or_timeout_failure"),
    );
    w.advance(61);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["deferred"]);
    assert_eq!(
        w.count(RETRY),
        1,
        "the first attempt is never retried again"
    );

    // jobwarden restarts: a new engine knows nothing but what GitLab says.
    w.advance(60);
    let restarted = w.engine();
    let report = w.run(&restarted, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(w.count(RETRY), 2);
    let third = w
        .ctl
        .jobs(w.project)
        .into_iter()
        .filter(|j| j.name == "rspec")
        .map(|j| j.id)
        .max()
        .expect("a third attempt");
    w.ctl
        .set_job_status(w.project, third, "failed", Some("stuck_or_timeout_failure"));

    // Limit reached (2 retries): never retried again, by this engine or another one.
    for engine in [restarted, w.engine()] {
        w.advance(3600);
        let report = w.run(&engine, &policy).await;
        assert!(
            outcomes(&report, "retry").is_empty(),
            "{:?}",
            report.actions
        );
    }
    assert_eq!(w.count(RETRY), 2);
    let attempts = w
        .ctl
        .jobs(w.project)
        .iter()
        .filter(|j| j.name == "rspec")
        .count();
    assert_eq!(attempts, 3, "one original and exactly two retries");
}

#[tokio::test]
async fn failure_reasons_match_their_gitlab_19_1_successors() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("a", "test", "failed")
                .failed_with("stuck_pending_no_matching_runners")
                .aged(Duration::from_secs(3600)),
            JobSpec::new("b", "test", "failed")
                .failed_with("script_failure")
                .aged(Duration::from_secs(3600)),
        ],
    );
    w.advance(120);
    let report = w.run(&w.engine(), &w.policy(RETRY_POLICY)).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(report.actions[0].job_id, ids[0]);
    assert_eq!(w.count(RETRY), 1);
}

/// `finishedWithin` on a retry rule: a failure that finished hours ago is left alone (a first
/// run does not re-run old pipelines), one that finished minutes ago is retried.
#[tokio::test]
async fn a_retry_rule_with_finished_within_leaves_old_failures_alone() {
    let w = World::start(MONDAY_MORNING).await;
    let stuck = || {
        vec![
            JobSpec::new("build", "build", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(Duration::from_secs(600)),
        ]
    };
    let old = w.pipeline("main", false, stuck());
    w.advance(3 * 3600);
    let fresh = w.pipeline("feature", false, stuck());
    w.advance(120);
    let policy = w.policy(
        "  rules:
    - name: retry-recent
      match:
        failureReasons: [stuck_or_timeout_failure]
        finishedWithin: 1h
      retry: {limit: 2}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(report.actions[0].job_id, fresh[0]);
    assert!(
        report.actions[0].reason.contains("finishedWithin 1h"),
        "{:?}",
        report.actions[0].reason
    );
    // Later runs do not come back to the old failure either.
    w.advance(60);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "retry").is_empty(), "{report:#?}");
    assert_eq!(w.status(old[0]), "failed");
    assert_eq!(w.count(RETRY), 1);
}

#[tokio::test]
async fn stale_jobs_are_cancelled_and_fresh_ones_are_not() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("old-pending", "test", "pending").aged(Duration::from_secs(3 * 3600)),
            JobSpec::new("old-created", "test", "created").aged(Duration::from_secs(3 * 3600)),
            JobSpec::new("fresh-pending", "test", "pending").aged(Duration::from_secs(300)),
            JobSpec::new("old-running", "test", "running").aged(Duration::from_secs(3 * 3600)),
        ],
    );
    let policy = w.policy(
        "  rules:
    - name: cancel-stale
      match: {statuses: [created, pending], olderThan: 2h}
      cancel: {}
",
    );
    let report = w.run(&w.engine(), &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["succeeded", "succeeded"]);
    assert_eq!(w.status(ids[0]), "canceled");
    assert_eq!(w.status(ids[1]), "canceled");
    assert_eq!(w.status(ids[2]), "pending");
    assert_eq!(w.status(ids[3]), "running");
    assert_eq!(w.count(CANCEL), 2);
}

#[tokio::test]
async fn a_manual_job_is_played_only_when_its_stages_succeeded_and_inside_its_window() {
    let w = World::start(MONDAY_MORNING).await;
    let green = w.pipeline("main", false, deploy_pipeline("success"));
    let red = w.pipeline("main", false, deploy_pipeline("failed"));
    let report = w.run(&w.engine(), &w.policy(PLAY_POLICY)).await;
    assert_eq!(outcomes(&report, "play"), ["succeeded"]);
    assert_ne!(
        w.status(green[2]),
        "manual",
        "the green pipeline's deploy was played"
    );
    let played = w.ctl.job(w.project, green[2]).expect("job");
    assert_eq!(
        played.variables,
        [("TRIGGERED_BY".to_owned(), "jobwarden".to_owned())]
    );
    assert_eq!(
        w.status(red[2]),
        "manual",
        "a red pipeline is never deployed"
    );
    assert_eq!(w.count(PLAY), 1);
}

#[tokio::test]
async fn a_manual_job_is_not_played_outside_its_window() {
    // Saturday 28 November 2026, 11:00 in Berlin.
    let w = World::start("2026-11-28T10:00:00Z").await;
    let green = w.pipeline("main", false, deploy_pipeline("success"));
    let engine = w.engine();
    let policy = w.policy(PLAY_POLICY);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "play").is_empty());
    assert_eq!(w.status(green[2]), "manual");
    // Monday 08:30 in Berlin is still outside; 09:00 is inside.
    w.advance(2 * 86400 - 9000);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "play").is_empty());
    w.advance(1800);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "play"), ["succeeded"]);
    assert_eq!(w.count(PLAY), 1);
}

const KEEP_RELEASE_POLICY: &str = "  rules:
    - name: keep-release-artifacts
      match: {statuses: [success], tag: true, artifactsExpireWithin: 48h}
      keepArtifacts: {}
";

#[tokio::test]
async fn artifacts_about_to_expire_on_tags_are_kept_and_others_are_not() {
    let w = World::start(MONDAY_MORNING).await;
    let day = Duration::from_secs(86400);
    let tagged = w.pipeline(
        "v1.2.3",
        true,
        vec![
            JobSpec::new("release", "deploy", "success").with_artifacts(day),
            JobSpec::new("docs", "deploy", "success").with_artifacts(10 * day),
        ],
    );
    let branch = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("release", "deploy", "success").with_artifacts(day)],
    );
    let policy = w.policy(KEEP_RELEASE_POLICY);
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "keep_artifacts"), ["succeeded"]);
    assert_eq!(
        w.artifacts_expire_at(tagged[0]),
        None,
        "kept artifacts never expire"
    );
    assert!(w.artifacts_expire_at(tagged[1]).is_some());
    assert!(w.artifacts_expire_at(branch[0]).is_some());
    // Kept once: the next run has nothing to do.
    w.advance(30);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "keep_artifacts").is_empty());
    assert_eq!(w.count(KEEP), 1);
}

#[tokio::test]
async fn dry_run_decides_everything_and_changes_nothing() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("rspec", "test", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(Duration::from_secs(3600)),
            JobSpec::new("lint", "test", "pending").aged(Duration::from_secs(3 * 3600)),
        ],
    );
    w.advance(120);
    let policy = w.policy(
        "  dryRun: true
  rules:
    - name: retry
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 3}
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 2h}
      cancel: {}
",
    );
    let before = w.ctl.jobs(w.project);
    let report = w.run(&w.engine(), &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["dry_run"]);
    assert_eq!(outcomes(&report, "cancel"), ["dry_run"]);
    assert_eq!(w.ctl.jobs(w.project), before, "GitLab is untouched");
    let writes: u64 = w
        .ctl
        .counters()
        .iter()
        .filter(|(endpoint, _)| !endpoint.starts_with("GET "))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn budgets_stop_actions_at_the_limit_and_the_rest_happen_later() {
    let w = World::start(MONDAY_MORNING).await;
    let jobs: Vec<JobSpec> = (0..5)
        .map(|i| {
            JobSpec::new(format!("job-{i}"), "test", "pending").aged(Duration::from_secs(3 * 3600))
        })
        .collect();
    let ids = w.pipeline("main", false, jobs);
    let policy = w.policy(
        "  limits: {maxActionsPerRun: 2, maxActionsPerHour: 3}
  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 2h}
      cancel: {}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    let mut o = outcomes(&report, "cancel");
    o.sort_unstable();
    assert_eq!(
        o,
        [
            "skipped_over_budget",
            "skipped_over_budget",
            "skipped_over_budget",
            "succeeded",
            "succeeded"
        ]
    );

    w.advance(60);
    let report = w.run(&engine, &policy).await;
    let mut o = outcomes(&report, "cancel");
    o.sort_unstable();
    assert_eq!(
        o,
        ["skipped_over_budget", "skipped_over_budget", "succeeded"],
        "the hourly budget allows one more"
    );

    w.advance(60);
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "cancel"),
        ["skipped_over_budget", "skipped_over_budget"]
    );
    assert_eq!(w.count(CANCEL), 3);

    w.advance(3600);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["succeeded", "succeeded"]);
    assert_eq!(w.count(CANCEL), 5);
    assert!(ids.iter().all(|id| w.status(*id) == "canceled"));
}

#[tokio::test]
async fn a_quiet_project_costs_one_request_per_run() {
    let w = World::start(MONDAY_MORNING).await;
    for p in 0..3 {
        let jobs: Vec<JobSpec> = (0..60)
            .map(|i| {
                JobSpec::new(format!("job-{p}-{i}"), "test", "success")
                    .aged(Duration::from_secs(7200))
            })
            .collect();
        w.pipeline("main", false, jobs);
    }
    let policy = w.policy(RETRY_POLICY);
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        report.jobs_seen, 0,
        "finished jobs that no rule can act on are not kept"
    );
    assert_eq!(
        w.count(LIST_JOBS),
        3,
        "the first sync reads every page (180 jobs, 100 a page), then the unfinished jobs of any age"
    );

    for _ in 0..3 {
        w.ctl.reset_log();
        w.advance(10);
        let report = w.run(&engine, &policy).await;
        assert_eq!(report.jobs_seen, 0);
        let total: u64 = w.ctl.counters().values().sum();
        assert_eq!(total, 1, "{:?}", w.ctl.counters());
    }

    // A new failure is seen by the next cheap sync, and acted on.
    w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("rspec", "test", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(Duration::from_secs(300)),
        ],
    );
    w.ctl.reset_log();
    w.advance(120);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(w.count(LIST_JOBS), 1);
    assert_eq!(
        w.count(LIST_PIPELINE_JOBS),
        0,
        "the attempts of a pipeline created since the first sync are counted from the project listing"
    );
}

#[tokio::test]
async fn attempts_come_from_the_project_listing_and_an_unchanged_pipeline_is_listed_once() {
    let w = World::start(MONDAY_MORNING).await;
    let stuck = |name: &str, age_secs: u64| {
        JobSpec::new(name, "test", "failed")
            .failed_with("stuck_or_timeout_failure")
            .aged(Duration::from_secs(age_secs))
    };
    // Created before the 72 h history, retried within it: the first attempt is older than
    // anything the first sync lists.
    let old = w.pipeline(
        "main",
        false,
        vec![stuck("lint", 100 * 3600), stuck("lint", 600)],
    );
    // Created within it: every attempt of its jobs is in the project listing.
    w.pipeline("main", false, vec![stuck("rspec", 300)]);
    let policy = w.policy(
        "  rules:
    - name: retry-slowly
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 2, backoff: {duration: 300h}}
",
    );
    let engine = w.engine();
    for _ in 0..5 {
        let report = w.run(&engine, &policy).await;
        assert_eq!(outcomes(&report, "retry"), ["deferred", "deferred"]);
        let mut attempts: Vec<(String, bool)> = report
            .actions
            .iter()
            .map(|a| (a.job_name.clone(), a.reason.contains("attempt 2 of 3")))
            .collect();
        attempts.sort();
        assert_eq!(
            attempts,
            [("lint".to_owned(), true), ("rspec".to_owned(), false)],
            "{:?}",
            report.actions
        );
        w.advance(30);
    }
    let pipeline_listings: Vec<String> = w
        .ctl
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == "/projects/:id/pipelines/:pipeline_id/jobs")
        .map(|r| r.path)
        .collect();
    let old_pipeline = w.ctl.job(w.project, old[0]).expect("old job").pipeline_id;
    assert_eq!(
        pipeline_listings,
        [format!(
            "/api/v4/projects/team%2Fapp/pipelines/{old_pipeline}/jobs"
        )],
        "only the pipeline from before the history is listed, and only once in five runs"
    );
}

#[tokio::test]
async fn logs_are_read_only_for_jobs_that_matched_everything_else() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("infra", "test", "failed")
                .failed_with("script_failure")
                .with_log("step 3\nERROR: connection reset by peer\n")
                .aged(Duration::from_secs(900)),
            JobSpec::new("real-bug", "test", "failed")
                .failed_with("script_failure")
                .with_log("assertion failed: left == right\n")
                .aged(Duration::from_secs(900)),
            JobSpec::new("green", "test", "success")
                .with_log("all good\n")
                .aged(Duration::from_secs(900)),
            JobSpec::new("other-reason", "test", "failed")
                .failed_with("api_failure")
                .with_log("connection reset by peer\n")
                .aged(Duration::from_secs(900)),
        ],
    );
    w.advance(120);
    let policy = w.policy(
        "  rules:
    - name: retry-infra-errors
      match:
        statuses: [failed]
        failureReasons: [script_failure]
        logPattern: \"connection reset by peer|no space left on device\"
      retry: {limit: 1}
",
    );
    let report = w.run(&w.engine(), &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(report.actions[0].job_id, ids[0]);
    assert_eq!(
        w.count(TRACE),
        2,
        "only the two script failures had their logs read"
    );
}

#[tokio::test]
async fn a_job_policy_on_an_unknown_project_reports_gitlabs_error() {
    let w = World::start(MONDAY_MORNING).await;
    let mut policy = w.policy(RETRY_POLICY);
    policy.projects = vec![jobwarden::gitlab::models::ProjectRef::parse(
        "nobody/nothing",
    )];
    let err = w.run_failing(&w.engine(), &policy, TOKEN).await;
    let message = err.to_string();
    assert!(message.contains("404"), "{message}");
    assert!(message.contains("Project Not Found"), "{message}");
}

#[tokio::test]
async fn an_old_unfinished_job_does_not_make_every_sync_reread_the_project() {
    let w = World::start(MONDAY_MORNING).await;
    let old = w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("stuck-in-queue", "test", "pending").aged(Duration::from_secs(20 * 3600)),
        ],
    );
    for p in 0..5 {
        let jobs: Vec<JobSpec> = (0..50)
            .map(|i| {
                JobSpec::new(format!("job-{p}-{i}"), "test", "success")
                    .aged(Duration::from_secs(3600))
            })
            .collect();
        w.pipeline("main", false, jobs);
    }
    // A failure whose backoff keeps it a candidate for several runs: its pipeline's job list is
    // needed every run, and read once.
    w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "failed").failed_with("stuck_or_timeout_failure")],
    );
    let policy = w.policy(
        "  rules:
    - name: retry-transient
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 2, backoff: {duration: 10m}}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        report.jobs_seen, 2,
        "the pending job and the failure are kept; 250 successes are not"
    );
    assert_eq!(outcomes(&report, "retry"), ["deferred"]);

    for _ in 0..3 {
        w.ctl.reset_log();
        w.advance(10);
        let report = w.run(&engine, &policy).await;
        assert_eq!(outcomes(&report, "retry"), ["deferred"]);
        let counters = w.ctl.counters();
        assert_eq!(
            counters.get(LIST_JOBS),
            Some(&2),
            "new jobs + unfinished jobs: {counters:?}"
        );
        assert_eq!(
            counters.values().sum::<u64>(),
            2,
            "the pipeline's job list is not re-read: {counters:?}"
        );
    }

    // The old job finally runs and fails: the next sync notices it and re-reads it by id.
    w.ctl.set_job_status(w.project, old[0], "running", None);
    w.ctl.set_job_status(
        w.project,
        old[0],
        "failed",
        Some("stuck_or_timeout_failure"),
    );
    w.ctl.reset_log();
    w.advance(601);
    let report = w.run(&engine, &policy).await;
    let mut retried: Vec<u64> = report
        .actions
        .iter()
        .filter(|a| a.outcome.label() == "succeeded")
        .map(|a| a.job_id)
        .collect();
    retried.sort_unstable();
    assert!(retried.contains(&old[0]), "{:?}", report.actions);
    assert_eq!(w.count("GET /projects/:id/jobs/:job_id"), 1);
}

/// A job pending for 100 h, far behind the 72 h history, is seen (through the listing of
/// unfinished jobs), cancelled by `olderThan: 2h`, and its wait is what the gauge shows.
#[tokio::test]
async fn a_job_pending_for_100_hours_is_cancelled_and_its_wait_is_reported() {
    let w = World::start(MONDAY_MORNING).await;
    let old = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("deploy", "deploy", "pending").aged(Duration::from_secs(100 * 3600))],
    );
    for p in 0..3 {
        let jobs: Vec<JobSpec> = (0..40)
            .map(|i| JobSpec::new(format!("job-{p}-{i}"), "test", "success"))
            .collect();
        w.pipeline("main", false, jobs);
    }
    let engine = w.engine();
    let policy = w.policy(
        "  dryRun: true
  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 2h}
      cancel: {}
",
    );
    let report = w.run(&engine, &policy).await;
    let cancel = report
        .actions
        .iter()
        .find(|a| a.job_id == old[0])
        .expect("the 100 h old job is a candidate");
    assert_eq!(cancel.outcome.label(), "dry_run");
    assert!(cancel.reason.contains("olderThan 2h"), "{}", cancel.reason);
    let scrape = engine.metrics().render();
    let age: f64 = scrape
        .lines()
        .find(|l| l.starts_with("jobwarden_job_pending_age_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the pending age gauge");
    assert!(age >= 100.0 * 3600.0 - 60.0, "pending age {age}");
}

/// A policy that goes away frees the observers only it watched, and their metric series.
#[tokio::test]
async fn a_forgotten_policy_frees_its_observers_and_series() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "main",
        false,
        vec![JobSpec::new("build", "build", "pending")],
    );
    let engine = w.engine();
    let policy = w.policy(RETRY_POLICY);
    w.run(&engine, &policy).await;
    assert_eq!(engine.observed_projects(), 1);
    let label = format!("project=\"{}\"", w.project);
    assert!(engine.metrics().render().contains(&label));

    engine.forget_policy(&policy.key).await;
    assert_eq!(engine.observed_projects(), 0);
    let scrape = engine.metrics().render();
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("jobwarden_jobs{") && l.contains(&label)),
        "{scrape}"
    );
}

/// `"12"` in one policy and `"team/app"` in another are one project: listed once, its failures
/// counted once, one metric label.
#[tokio::test]
async fn one_project_spelled_by_id_and_by_path_is_observed_and_counted_once() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "main",
        false,
        vec![
            JobSpec::new("rspec", "test", "failed")
                .failed_with("script_failure")
                .aged(Duration::from_secs(300)),
        ],
    );
    let engine = w.engine();
    let by_id = w.named_policy("by-id", &w.project.to_string(), RETRY_POLICY);
    let by_path = w.named_policy("by-path", PROJECT, RETRY_POLICY);
    for _ in 0..3 {
        w.run(&engine, &by_id).await;
        w.run(&engine, &by_path).await;
        w.advance(10);
    }
    assert_eq!(engine.observed_projects(), 1);
    assert_eq!(w.count("GET /projects/:id"), 1, "the path is resolved once");
    // First sync (2 listings); the second policy is new to the project, so the next sync
    // lists it again back to the horizon (1 page); then one listing per 10 s interval (the
    // second policy finds the project synced within half its interval).
    assert_eq!(w.count(LIST_JOBS), 4);
    let scrape = engine.metrics().render();
    let failures: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("jobwarden_job_failures_total{"))
        .collect();
    assert_eq!(failures.len(), 1, "{scrape}");
    assert!(failures[0].contains(&format!("project=\"{}\"", w.project)));
    assert!(failures[0].ends_with(" 1"), "{}", failures[0]);

    // Forgetting one policy keeps the project for the other.
    engine.forget_policy(&by_path.key).await;
    assert_eq!(engine.observed_projects(), 1);
    engine.forget_policy(&by_id.key).await;
    assert_eq!(engine.observed_projects(), 0);
}

/// SIGTERM in the middle of a pass: the run ends at once, not after the slow requests (or the
/// rate-limit waits) of the projects still to observe.
#[tokio::test]
async fn a_stop_mid_pass_ends_the_run_without_waiting_for_slow_requests() {
    let w = World::start(MONDAY_MORNING).await;
    w.pipeline(
        "main",
        false,
        vec![JobSpec::new("build", "build", "pending")],
    );
    w.ctl.set_faults(jobwarden::sim::FaultConfig {
        latency: Duration::from_secs(60),
        ..jobwarden::sim::FaultConfig::default()
    });
    let policy = w.policy(RETRY_POLICY);
    let engine = w.engine();
    let stop = CancellationToken::new();
    let token = jobwarden::engine::GitLabAccess::from(SecretString::from(TOKEN.to_owned()));
    let run = engine.reconcile(&policy, &token, RunMode::Normal, &stop);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(run, stopper)
    })
    .await
    .expect("the run ends soon after the stop, not after the 60 s request");
    let report = result.expect("a stopped run is not a failure");
    assert!(report.actions.is_empty());
}

/// The `per_page` of each job listing in the request log.
fn listing_page_sizes(w: &World) -> Vec<u32> {
    w.ctl
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == "/projects/:id/jobs")
        .map(|r| {
            r.query
                .split('&')
                .find_map(|kv| kv.strip_prefix("per_page="))
                .and_then(|v| v.parse().ok())
                .expect("every listing says per_page")
        })
        .collect()
}

/// A quiet project's sync asks GitLab for a handful of jobs, not a hundred; when many jobs
/// arrive at once the listing goes on with full pages, and misses none.
#[tokio::test]
async fn a_quiet_project_is_asked_for_a_small_page_and_a_busy_one_for_full_pages() {
    let w = World::start(MONDAY_MORNING).await;
    let done = |n: usize| -> Vec<JobSpec> {
        (0..n)
            .map(|i| {
                JobSpec::new(format!("job-{i}"), "test", "success").aged(Duration::from_secs(600))
            })
            .collect()
    };
    w.pipeline("main", false, done(30));
    let policy = w.policy(RETRY_POLICY);
    let engine = w.engine();
    w.run(&engine, &policy).await;
    assert_eq!(
        listing_page_sizes(&w),
        [100, 5],
        "first sync: full pages, then the unfinished ones"
    );

    w.ctl.reset_log();
    w.advance(10);
    w.run(&engine, &policy).await;
    assert_eq!(
        listing_page_sizes(&w),
        [7],
        "one job at the mark, room for a few more"
    );

    // 150 jobs arrive, one of them stuck: a small page fills, full pages follow.
    let mut busy = done(149);
    busy.push(
        JobSpec::new("rspec", "test", "failed")
            .failed_with("stuck_or_timeout_failure")
            .aged(Duration::from_secs(300)),
    );
    w.pipeline("main", false, busy);
    w.ctl.reset_log();
    w.advance(120);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "retry"), ["succeeded"]);
    assert_eq!(listing_page_sizes(&w), [7, 100, 100]);

    // The next quiet sync expects about as many arrivals as the last one saw, then settles.
    w.ctl.reset_log();
    w.advance(10);
    w.run(&engine, &policy).await;
    w.advance(10);
    w.run(&engine, &policy).await;
    let sizes = listing_page_sizes(&w);
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(sizes[1] <= 10, "{sizes:?}");
}

/// A pipeline of `jobs` jobs stuck for ten minutes, and a policy that retries them within
/// `limits`.
fn stuck_backlog(w: &World, jobs: usize, limits: &str) -> jobwarden::policy::CompiledPolicy {
    let stuck: Vec<JobSpec> = (0..jobs)
        .map(|i| {
            JobSpec::new(format!("shard-{i}"), "test", "failed")
                .failed_with("stuck_or_timeout_failure")
                .aged(Duration::from_secs(600))
        })
        .collect();
    w.pipeline("main", false, stuck);
    w.policy(&format!(
        "  limits: {limits}
  rules:
    - name: retry-stuck
      match: {{statuses: [failed], failureReasons: [stuck_or_timeout_failure]}}
      retry: {{limit: 2}}
"
    ))
}

/// Thousands of jobs waiting for the budget do not make thousands of records every run: the
/// report lists the first 100 held back and counts the rest exactly.
#[tokio::test]
async fn held_back_decisions_are_listed_up_to_a_cap_and_counted_exactly() {
    let w = World::start(MONDAY_MORNING).await;
    let policy = stuck_backlog(&w, 150, "{maxActionsPerRun: 10, maxActionsPerHour: 1000}");
    let report = w.run(&w.engine(), &policy).await;
    assert_eq!(
        outcomes(&report, "retry")
            .iter()
            .filter(|o| **o == "succeeded")
            .count(),
        10
    );
    let listed = outcomes(&report, "retry")
        .iter()
        .filter(|o| **o == "skipped_over_budget")
        .count();
    assert_eq!(listed, jobwarden::engine::MAX_LISTED_HELD_BACK);
    assert_eq!(
        report
            .unlisted
            .count(ActionKind::Retry, OutcomeKind::SkippedOverBudget),
        40
    );
    assert_eq!(report.over_budget_total(), 140);
    assert_eq!(w.count(RETRY), 10);
}

/// A run that works through a backlog of thousands of jobs does not hold a record of each: the
/// report lists the first 200 decisions that acted and counts the rest exactly, and the
/// status counters count them all. A plan lists every decision.
#[tokio::test]
async fn a_backlog_run_lists_the_first_actions_and_counts_the_rest() {
    let w = World::start(MONDAY_MORNING).await;
    let policy = stuck_backlog(
        &w,
        1_030,
        "{maxActionsPerRun: 5000, maxActionsPerHour: 5000}",
    );
    // The budget of requests out of the way: this test is about the report, not the pace.
    let engine = w.engine_with(jobwarden::engine::EngineConfig {
        requests_per_minute: 1_000_000,
        destinations: jobwarden::gitlab::TokenDestinations::insecure_http_allowed(),
        ..Default::default()
    });
    let plan = engine
        .reconcile(
            &policy,
            &SecretString::from(TOKEN.to_owned()).into(),
            RunMode::ForceDryRun,
            &CancellationToken::new(),
        )
        .await
        .expect("plan");
    assert_eq!(plan.actions.len(), 1_030, "a plan lists every decision");

    let report = w.run(&engine, &policy).await;
    assert_eq!(w.count(RETRY), 1_030);
    assert_eq!(report.actions.len(), jobwarden::engine::MAX_LISTED_ACTIONS);
    assert_eq!(
        report
            .unlisted
            .count(ActionKind::Retry, OutcomeKind::Succeeded),
        1_030 - jobwarden::engine::MAX_LISTED_ACTIONS as u64
    );
    assert_eq!(
        report
            .tally()
            .count(ActionKind::Retry, OutcomeKind::Succeeded),
        1_030
    );
    let counters =
        jobwarden::source::kube::status::accumulate(&Default::default(), &report.tally());
    assert_eq!(counters.retried, 1_030, "the status counts every retry");
}

/// A tag job whose artifacts expire in three weeks is not held in memory for three weeks: it
/// is dropped, re-read once (one `GET` of the job) when its artifacts come within the window,
/// and kept then.
#[tokio::test]
async fn a_job_a_rule_may_act_on_only_in_weeks_is_re_read_when_the_time_comes() {
    let w = World::start(MONDAY_MORNING).await;
    let day = Duration::from_secs(86400);
    let tagged = w.pipeline(
        "v2.0.0",
        true,
        vec![JobSpec::new("release", "deploy", "success").with_artifacts(21 * day)],
    );
    let policy = w.policy(KEEP_RELEASE_POLICY);
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "keep_artifacts").is_empty());
    assert_eq!(report.jobs_seen, 0, "not held for three weeks");

    // A day before the window opens: still nothing read, nothing done.
    w.ctl.reset_log();
    w.advance(18 * 86400);
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "keep_artifacts").is_empty());
    assert_eq!(w.count("GET /projects/:id/jobs/:job_id"), 0);

    // The artifacts now expire within 48 h: the job is read again and its artifacts kept.
    w.advance(2 * 86400);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "keep_artifacts"), ["succeeded"]);
    assert_eq!(w.count("GET /projects/:id/jobs/:job_id"), 1);
    assert_eq!(w.artifacts_expire_at(tagged[0]), None);
}

/// A policy that starts watching a project another policy already observes sees the finished
/// jobs that the first one had no use for.
#[tokio::test]
async fn a_policy_added_later_sees_jobs_the_project_observer_had_dropped() {
    let w = World::start(MONDAY_MORNING).await;
    let day = Duration::from_secs(86400);
    let tagged = w.pipeline(
        "v3.1.0",
        true,
        vec![JobSpec::new("release", "deploy", "success").with_artifacts(day)],
    );
    let engine = w.engine();
    let retry = w.named_policy("retry", PROJECT, RETRY_POLICY);
    let report = w.run(&engine, &retry).await;
    assert_eq!(report.jobs_seen, 0, "nothing the retry policy can act on");

    let keep = w.named_policy("keep", PROJECT, KEEP_RELEASE_POLICY);
    w.advance(10);
    let report = w.run(&engine, &keep).await;
    assert_eq!(outcomes(&report, "keep_artifacts"), ["succeeded"]);
    assert_eq!(w.artifacts_expire_at(tagged[0]), None);
}

/// A cancel that GitLab answers without changing the job (it finished meanwhile: 201 with the
/// job as it was) is reported as `noop`, not as a success.
#[tokio::test]
async fn a_cancel_of_a_job_that_finished_meanwhile_is_a_noop() {
    let w = World::start(MONDAY_MORNING).await;
    let ids = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("deploy", "deploy", "pending").aged(Duration::from_secs(7200 - 2))],
    );
    let policy = w.policy(
        "  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 2h}
      cancel: {}
",
    );
    let engine = w.engine();
    let report = w.run(&engine, &policy).await;
    assert!(outcomes(&report, "cancel").is_empty(), "not two hours yet");

    // The job finishes; within half the interval the project is not listed again, so the next
    // run decides on what it saw: the job, now two hours old, still pending.
    w.ctl.set_job_status(w.project, ids[0], "success", None);
    w.advance(4);
    let report = w.run(&engine, &policy).await;
    assert_eq!(outcomes(&report, "cancel"), ["noop"]);
    assert_eq!(w.count(CANCEL), 1);
    assert_eq!(w.status(ids[0]), "success");
    let scrape = engine.metrics().render();
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("jobwarden_actions_total{") && l.contains("outcome=\"noop\"")),
        "{scrape}"
    );
}

/// A tag pipeline, an hour old, whose built release job waits to be played; its id.
fn manual_release_job(w: &World) -> u64 {
    w.pipeline(
        "v1.0.0",
        true,
        vec![
            JobSpec::new("build", "build", "success").aged(Duration::from_secs(3600)),
            JobSpec::new("release", "deploy", "manual").aged(Duration::from_secs(3600)),
        ],
    )[1]
}

/// Found by the fleet bench (issue 9): a manual job is played and fails under the id it had,
/// below the low-water mark that newer jobs moved past it. No policy targets blocked statuses,
/// so no manual listing follows it: the listing must reach it, without a request more, within
/// `REACHED_BLOCKED_EVERY` (the syncs between stop at the newer jobs).
#[tokio::test]
async fn a_played_manual_job_that_fails_below_the_low_water_mark_is_retried() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    let release = manual_release_job(&w);
    w.run(&engine, &policy).await;
    // A newer job runs and finishes: the low-water mark moves above the manual job.
    let newer = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("rspec", "test", "running")],
    )[0];
    w.advance(20);
    w.run(&engine, &policy).await;
    w.ctl.set_job_status(w.project, newer, "success", None);
    w.advance(20);
    w.run(&engine, &policy).await;
    w.play_and_fail_as_stuck(release);
    let listings = w.count(LIST_JOBS);
    let mut retried = 0;
    // Runs 20 s apart for the period and one interval more.
    let runs = REACHED_BLOCKED_EVERY.as_secs() / 20 + 1;
    for _ in 0..runs {
        w.advance(20);
        let report = w.run(&engine, &policy).await;
        retried += outcomes(&report, "retry").len();
    }
    assert_eq!(retried, 1, "the played job's failure is retried");
    assert_eq!(
        w.count(LIST_JOBS) - listings,
        runs as u64,
        "one listing per run: the manual job was within its reach"
    );
}

/// A busy project keeps a manual job a day back among its newest 100 jobs. The listing goes
/// down to it every `REACHED_BLOCKED_EVERY`, not at every sync: the syncs between ask for the
/// few newest jobs instead of a page of old ones.
#[tokio::test]
async fn a_manual_job_within_reach_is_read_every_two_minutes_not_at_every_sync() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    manual_release_job(&w);
    // 60 newer jobs: the manual job is within a page of the newest.
    newer_finished_jobs(&w, 60);
    w.run(&engine, &policy).await;
    w.ctl.reset_log();
    let runs = 2 * REACHED_BLOCKED_EVERY.as_secs() / 20;
    for _ in 0..runs {
        w.advance(20);
        w.run(&engine, &policy).await;
    }
    let sizes = listing_page_sizes(&w);
    assert_eq!(sizes.len() as i64, runs, "one listing per run: {sizes:?}");
    let deep = sizes.iter().filter(|&&n| n > 60).count();
    assert!(
        (1..=2).contains(&deep),
        "down to the manual job once or twice in two periods: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|&n| n > 60 || n <= 10),
        "the other listings ask for a few jobs: {sizes:?}"
    );
}

/// A pipeline of `count` finished jobs, an hour old, newer than every job made before.
fn newer_finished_jobs(w: &World, count: usize) {
    let jobs: Vec<JobSpec> = (0..count)
        .map(|i| {
            JobSpec::new(format!("rspec {i}"), "test", "success").aged(Duration::from_secs(3600))
        })
        .collect();
    w.pipeline("main", false, jobs);
}

/// The project job listings of `runs` more runs, 20 s apart.
async fn project_listings_in_runs(
    w: &World,
    engine: &Engine,
    policy: &CompiledPolicy,
    runs: usize,
) -> u64 {
    let before = w.count(LIST_JOBS);
    for _ in 0..runs {
        w.advance(20);
        w.run(engine, policy).await;
    }
    w.count(LIST_JOBS) - before
}

/// Found by the fleet bench (issue 7): a manual job exactly a page of jobs behind the newest holds
/// the low-water mark, and the page that ends with it covers every job at or above the mark; a
/// quiet project must not have its second page read at every run to find a job below it.
#[tokio::test]
async fn a_page_that_ends_at_the_low_water_mark_is_the_last_one_read() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    manual_release_job(&w);
    // 99 newer jobs: the manual job is the 100th newest, the last of a full page.
    newer_finished_jobs(&w, 99);
    w.run(&engine, &policy).await;
    w.advance(20);
    w.run(&engine, &policy).await;
    assert_eq!(
        project_listings_in_runs(&w, &engine, &policy, 3).await,
        3,
        "one listing per run of a quiet project"
    );
}

/// A manual job more than a page of jobs behind the newest is beyond the listing's reach: it is
/// looked for through the manual listing, less often, and its failure once played is retried.
#[tokio::test]
async fn a_played_manual_job_beyond_the_listings_reach_is_retried_after_the_manual_listing() {
    let w = World::start(MONDAY_MORNING).await;
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    let release = manual_release_job(&w);
    // 120 newer jobs: more than one page lies between the newest job and the manual one.
    newer_finished_jobs(&w, 120);
    w.run(&engine, &policy).await;
    w.advance(20);
    w.run(&engine, &policy).await;

    w.play_and_fail_as_stuck(release);
    let mut retried = 0;
    let mut runs = 0;
    while retried == 0 && runs < 40 {
        w.advance(20);
        let report = w.run(&engine, &policy).await;
        retried += outcomes(&report, "retry").len();
        runs += 1;
    }
    assert_eq!(retried, 1, "the played job's failure is retried");
    assert_eq!(w.count(RETRY), 1);
}

/// A pipeline, half an hour old, whose build failed as stuck and whose test job was skipped for
/// it; the test job's id.
fn failed_build_and_skipped_test(w: &World) -> u64 {
    let stuck = JobSpec::new("build", "build", "failed")
        .failed_with("stuck_or_timeout_failure")
        .aged(Duration::from_secs(1800));
    w.pipeline(
        "main",
        false,
        vec![
            stuck,
            JobSpec::new("test", "test", "skipped").aged(Duration::from_secs(1800)),
        ],
    )[1]
}

/// The job a retry in `report` made.
fn new_attempt(report: &RunReport) -> u64 {
    report
        .actions
        .iter()
        .find_map(|a| match a.outcome {
            Outcome::Succeeded { new_job_id } => new_job_id,
            _ => None,
        })
        .expect("the new attempt")
}

/// Found by the fleet bench (issue 7): a job a retry re-opened more than a page of jobs below
/// the newest holds the low-water mark while it runs. The jobs above it are counted from the
/// finished ids remembered, so each run lists the new jobs and the unfinished ones (two
/// requests), not every page down to it.
#[tokio::test]
async fn a_reopened_job_more_than_a_page_back_costs_two_listings_a_run() {
    let w = World::start(MONDAY_MORNING).await;
    let test_job = failed_build_and_skipped_test(&w);
    newer_finished_jobs(&w, 120);
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    let new_build = new_attempt(&w.run(&engine, &policy).await);
    w.advance(20);
    w.run(&engine, &policy).await;
    // The new attempt passes and the re-opened test job runs: the next run lists the pipeline.
    w.ctl.set_job_status(w.project, new_build, "success", None);
    w.ctl.set_job_status(w.project, test_job, "pending", None);
    w.ctl.set_job_status(w.project, test_job, "running", None);
    w.advance(20);
    w.run(&engine, &policy).await;
    assert_eq!(
        project_listings_in_runs(&w, &engine, &policy, 3).await,
        6,
        "the new jobs and the unfinished ones, at each of 3 runs"
    );
}

/// Found by the fleet bench (issue 7): retrying a job re-opens the jobs of later stages that
/// its failure had skipped (`skipped` → `created`, under the ids they had, and GitLab fires no
/// Job Hook for it). When the low-water mark has moved above them, no listing reaches them: one
/// that is queued once the retry passes and fails before the next run must still be seen and
/// retried.
#[tokio::test]
async fn a_job_reopened_by_a_retry_below_the_low_water_mark_is_followed_and_retried() {
    let w = World::start(MONDAY_MORNING).await;
    let test_job = failed_build_and_skipped_test(&w);
    // A newer pipeline runs: the low-water mark sits on its job, above the old pipeline's.
    w.pipeline(
        "feature",
        false,
        vec![JobSpec::new("lint", "test", "running")],
    );
    let engine = w.engine();
    let policy = w.policy(RETRY_STUCK);
    let report = w.run(&engine, &policy).await;
    assert_eq!(
        outcomes(&report, "retry"),
        ["succeeded"],
        "the build is retried"
    );
    let new_build = new_attempt(&report);

    // The new build attempt passes: the re-opened test job is queued, and fails as stuck, all
    // between two runs.
    w.advance(20);
    w.run(&engine, &policy).await;
    w.ctl.set_job_status(w.project, new_build, "success", None);
    w.ctl.set_job_status(w.project, test_job, "pending", None);
    w.ctl.set_job_status(
        w.project,
        test_job,
        "failed",
        Some("stuck_or_timeout_failure"),
    );
    let mut retried = 0;
    for _ in 0..3 {
        w.advance(20);
        let report = w.run(&engine, &policy).await;
        retried += report
            .actions
            .iter()
            .filter(|a| a.job_id == test_job && a.outcome.label() == "succeeded")
            .count();
    }
    assert_eq!(retried, 1, "the re-opened job's failure is retried");
    let reopen_listings = w
        .ctl
        .request_log()
        .into_iter()
        .filter(|r| r.endpoint == "/projects/:id/pipelines/:pipeline_id/jobs")
        .filter(|r| !r.query.contains("include_retried"))
        .count();
    assert_eq!(
        reopen_listings, 1,
        "the retried pipeline's unfinished jobs are listed once, after the retried build passed"
    );
}

/// Found by the fleet bench in webhook mode: a held unfinished job can be newer than every job a
/// listing saw (here one read for a delivery; a retry's new attempt is another). A sync that
/// stopped at it never listed the job created between the last listing and it, which then
/// failed unseen.
#[tokio::test]
async fn a_sync_lists_every_job_newer_than_the_last_listing_even_below_a_held_newer_one() {
    use jobwarden::engine::observe::{DEFAULT_HISTORY, ProjectObserver, SyncOptions};
    use jobwarden::gitlab::models::{JobStatus, ProjectRef};
    use jobwarden::gitlab::records::JobWire;
    use jobwarden::gitlab::{ClientConfig, Credential, GitLabClient};
    let w = World::start(MONDAY_MORNING).await;
    let client = GitLabClient::new(ClientConfig::new(
        w.sim.base_url(),
        Some(Credential::PrivateToken(TOKEN.into())),
    ))
    .expect("client");
    let project = ProjectRef::Id(w.project);
    let now = || w.ctl.now();
    let clock: jobwarden::engine::Clock = {
        let ctl = w.ctl.clone();
        std::sync::Arc::new(move || ctl.now())
    };
    let options = SyncOptions {
        follow_blocked: false,
        hook_healthy: false,
    };
    let mut observer = ProjectObserver::new(project.clone(), DEFAULT_HISTORY);
    w.pipeline("main", false, vec![JobSpec::new("lint", "test", "success")]);
    observer
        .sync(&client, now(), &clock, options)
        .await
        .expect("first sync");
    // After that listing: a running job, then a newer pending one that jobwarden reads by id.
    let running = w.pipeline(
        "main",
        false,
        vec![JobSpec::new("build", "build", "running")],
    )[0];
    let read = w.pipeline("main", false, vec![JobSpec::new("test", "test", "pending")])[0];
    let wire: JobWire = client.get_job_as(&project, read).await.expect("read");
    observer.update_job(wire, now());
    w.ctl.set_job_status(
        w.project,
        running,
        "failed",
        Some("stuck_or_timeout_failure"),
    );
    w.advance(30);
    observer
        .sync(&client, now(), &clock, options)
        .await
        .expect("second sync");
    let seen = observer.jobs().newest_first().find(|j| j.id == running);
    assert_eq!(
        seen.map(|j| j.status),
        Some(JobStatus::Failed),
        "the job between the last listing and the held one is listed"
    );
}
