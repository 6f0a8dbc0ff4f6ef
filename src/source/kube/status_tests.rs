use super::*;
use crate::crd::{ActionCounters, JobPolicySpec};
use crate::engine::{ActionRecord, FailedTarget, Outcome, ProjectFailure, RunReport};
use crate::gitlab::models::{GroupRef, ProjectRef};
use crate::policy::{PolicyKey, compile};
use jiff::{SignedDuration, Timestamp};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

const T0: &str = "2026-11-23T10:00:00Z";

fn record(job_id: u64, action: ActionKind, outcome: Outcome, at: Timestamp) -> ActionRecord {
    ActionRecord {
        time: at,
        project: ProjectRef::parse("platform/api"),
        job_id,
        job_name: format!("rspec {job_id}"),
        rule: "retry-transient".into(),
        action,
        reason: "failed with stuck_or_timeout_failure; attempt 1 of 3".into(),
        outcome,
        repeat: false,
    }
}

fn succeeded() -> Outcome {
    Outcome::Succeeded { new_job_id: None }
}

fn report(at: Timestamp, actions: Vec<ActionRecord>) -> RunReport {
    RunReport {
        policy: PolicyKey::new("ci", "hygiene"),
        time: at,
        dry_run: false,
        suspended: false,
        projects: 3,
        jobs_seen: 412,
        actions,
        unlisted: Default::default(),
        failures: Vec::new(),
        deliveries_only: false,
    }
}

#[test]
fn a_first_run_is_ready_with_a_summary_and_the_run_time() {
    let now = ts(T0);
    let status = reconciled(None, &report(now, Vec::new()), Some(4), now);

    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.last_sync_time, Some(kube_time(now)));
    let ready = ready_of(&status).expect("a Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason, "Reconciled");
    assert_eq!(ready.message, "3 projects, 412 jobs tracked");
    assert_eq!(status.projects, Some(3), "the count, for kubectl get jp");
    assert_eq!(ready.observed_generation, Some(4));
    assert_eq!(ready.last_transition_time, kube_time(now));
    assert_eq!(status.conditions.len(), 1);
}

#[test]
fn counters_accumulate_succeeded_actions_per_kind_and_skips_over_budget() {
    let now = ts(T0);
    let previous = JobPolicyStatus {
        counters: ActionCounters {
            retried: 10,
            canceled: 2,
            played: 1,
            artifacts_kept: 4,
            skipped_over_budget: 7,
        },
        ..JobPolicyStatus::default()
    };
    let actions = vec![
        record(1, ActionKind::Retry, succeeded(), now),
        record(
            2,
            ActionKind::Retry,
            Outcome::Succeeded {
                new_job_id: Some(20),
            },
            now,
        ),
        record(3, ActionKind::Cancel, succeeded(), now),
        record(4, ActionKind::Play, succeeded(), now),
        record(5, ActionKind::KeepArtifacts, succeeded(), now),
        // None of these count as actions taken.
        record(
            6,
            ActionKind::Retry,
            Outcome::Failed {
                message:
                    "POST /projects/:id/jobs/:job_id/retry failed with HTTP 403: 403 Forbidden"
                        .into(),
            },
            now,
        ),
        record(7, ActionKind::Cancel, Outcome::DryRun, now),
        record(
            8,
            ActionKind::Retry,
            Outcome::Deferred {
                not_before: now + SignedDuration::from_mins(5),
            },
            now,
        ),
        record(9, ActionKind::Cancel, Outcome::SkippedOverBudget, now),
        record(10, ActionKind::Retry, Outcome::SkippedOverBudget, now),
    ];
    let status = reconciled(Some(&previous), &report(now, actions), Some(1), now);

    assert_eq!(
        status.counters,
        ActionCounters {
            retried: 12,
            canceled: 3,
            played: 2,
            artifacts_kept: 5,
            skipped_over_budget: 9,
        }
    );
}

#[test]
fn counters_saturate_instead_of_overflowing() {
    let previous = ActionCounters {
        retried: u64::MAX,
        ..ActionCounters::default()
    };
    let now = ts(T0);
    let mut tally = Tally::default();
    tally.add(&record(1, ActionKind::Retry, succeeded(), now));
    let counters = accumulate(&previous, &tally);
    assert_eq!(counters.retried, u64::MAX);
}

#[test]
fn recent_actions_are_newest_first_bounded_and_without_deferred_retries() {
    let t0 = ts(T0);
    let first_run: Vec<ActionRecord> = (1..=15)
        .map(|i| {
            record(
                i,
                ActionKind::Retry,
                succeeded(),
                t0 + SignedDuration::from_secs(i as i64),
            )
        })
        .collect();
    let status = reconciled(None, &report(t0, first_run), Some(1), t0);
    let ids: Vec<u64> = status.recent_actions.iter().map(|a| a.job_id).collect();
    assert_eq!(ids, (1..=15).rev().collect::<Vec<u64>>());

    let t1 = t0 + SignedDuration::from_mins(1);
    let mut second_run: Vec<ActionRecord> = (100..110)
        .map(|i| record(i, ActionKind::Cancel, succeeded(), t1))
        .collect();
    second_run.push(record(
        200,
        ActionKind::Retry,
        Outcome::Deferred {
            not_before: t1 + SignedDuration::from_mins(1),
        },
        t1,
    ));
    let status = reconciled(Some(&status), &report(t1, second_run), Some(1), t1);
    let ids: Vec<u64> = status.recent_actions.iter().map(|a| a.job_id).collect();
    let mut expected: Vec<u64> = (100..110).rev().collect();
    expected.extend((6..=15).rev());
    assert_eq!(ids, expected, "newest first, cut to {MAX_RECENT_ACTIONS}");
    assert_eq!(status.recent_actions.len(), MAX_RECENT_ACTIONS);
    assert!(!ids.contains(&200), "a deferred retry is not an action");
}

#[test]
fn recent_actions_carry_outcome_new_job_and_gitlab_message() {
    let now = ts(T0);
    let actions = vec![
        record(
            1,
            ActionKind::Retry,
            Outcome::Succeeded {
                new_job_id: Some(8830),
            },
            now,
        ),
        record(
            2,
            ActionKind::KeepArtifacts,
            Outcome::Failed {
                message: "POST /projects/:id/jobs/:job_id/artifacts/keep failed with HTTP 404: 404 Not found".into(),
            },
            now,
        ),
        record(3, ActionKind::Play, Outcome::DryRun, now),
        record(4, ActionKind::Cancel, Outcome::SkippedOverBudget, now),
    ];
    let status = reconciled(None, &report(now, actions), Some(1), now);
    let by_job = |id: u64| {
        status
            .recent_actions
            .iter()
            .find(|a| a.job_id == id)
            .expect("recorded")
    };

    let retried = by_job(1);
    assert_eq!(retried.action, ActionKind::Retry);
    assert_eq!(retried.outcome, ActionOutcome::Succeeded);
    assert_eq!(retried.new_job_id, Some(8830));
    assert_eq!(retried.project, "platform/api");
    assert_eq!(retried.job_name, "rspec 1");
    assert_eq!(retried.rule, "retry-transient");

    let failed = by_job(2);
    assert_eq!(failed.action, ActionKind::KeepArtifacts);
    assert_eq!(failed.outcome, ActionOutcome::Failed);
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("HTTP 404: 404 Not found")),
        "{:?}",
        failed.message
    );
    assert_eq!(by_job(3).outcome, ActionOutcome::DryRun);
    assert_eq!(by_job(4).outcome, ActionOutcome::SkippedOverBudget);
}

#[test]
fn transition_time_is_kept_while_the_condition_status_stays_the_same() {
    let t0 = ts(T0);
    let t1 = t0 + SignedDuration::from_mins(1);
    let t2 = t1 + SignedDuration::from_mins(1);
    let t3 = t2 + SignedDuration::from_mins(1);

    let first = reconciled(None, &report(t0, Vec::new()), Some(1), t0);
    let second = reconciled(Some(&first), &report(t1, Vec::new()), Some(1), t1);
    assert_eq!(
        ready_of(&second).map(|c| &c.last_transition_time),
        Some(&kube_time(t0)),
        "True → True keeps the time"
    );
    assert_eq!(
        second.last_sync_time,
        Some(kube_time(t1)),
        "lastSyncTime moves"
    );

    // True (Reconciled) → True (Suspended): only the reason changes.
    let paused = suspended(Some(&second), Some(2), t1);
    let ready = ready_of(&paused).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Suspended")
    );
    assert_eq!(ready.last_transition_time, kube_time(t0));

    // True → False moves it.
    let broken = not_reconciled(
        Some(&paused),
        ReadyReason::SecretNotFound,
        "no Secret",
        Some(3),
        t2,
    );
    assert_eq!(
        ready_of(&broken).map(|c| &c.last_transition_time),
        Some(&kube_time(t2))
    );
    // False → False (another reason) keeps it.
    let still_broken = not_reconciled(
        Some(&broken),
        ReadyReason::GitLabError,
        "GitLab says no",
        Some(3),
        t3,
    );
    assert_eq!(
        ready_of(&still_broken).map(|c| &c.last_transition_time),
        Some(&kube_time(t2))
    );
    // False → True moves it again.
    let fixed = reconciled(Some(&still_broken), &report(t3, Vec::new()), Some(3), t3);
    assert_eq!(
        ready_of(&fixed).map(|c| &c.last_transition_time),
        Some(&kube_time(t3))
    );
}

#[test]
fn a_failure_keeps_counters_recent_actions_and_last_sync_time() {
    let t0 = ts(T0);
    let t1 = t0 + SignedDuration::from_mins(1);
    let ok = reconciled(
        None,
        &report(t0, vec![record(1, ActionKind::Retry, succeeded(), t0)]),
        Some(1),
        t0,
    );
    let failed = not_reconciled(
        Some(&ok),
        ReadyReason::GitLabError,
        "every project failed; first error: GET /projects/:id/jobs failed with HTTP 401: 401 Unauthorized",
        Some(1),
        t1,
    );
    assert_eq!(failed.counters, ok.counters);
    assert_eq!(failed.recent_actions, ok.recent_actions);
    assert_eq!(failed.last_sync_time, Some(kube_time(t0)));
    assert_eq!(failed.projects, Some(3), "the last run's count");
    let ready = ready_of(&failed).expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "GitLabError");
    assert!(ready.message.contains("HTTP 401: 401 Unauthorized"));
}

fn spec_with_bad_fields() -> JobPolicySpec {
    serde_yaml::from_str(
        "gitlab: {url: 'http://gitlab.example', tokenSecretRef: {name: gitlab, key: token}}\n\
         projects: ['1']\n\
         rules:\n\
         - name: retry\n  match: {statuses: [failed], logPattern: '(unclosed'}\n  retry: {limit: 2}\n\
         - name: window\n  match: {window: {timeZone: Mars/Olympus_Mons}}\n  cancel: {}\n",
    )
    .expect("test spec parses")
}

#[test]
fn an_invalid_spec_names_every_field_and_keeps_the_rest() {
    let errors = compile(PolicyKey::new("ci", "bad"), &spec_with_bad_fields())
        .expect_err("the spec has two errors");
    let t0 = ts(T0);
    let previous = reconciled(
        None,
        &report(t0, vec![record(1, ActionKind::Cancel, succeeded(), t0)]),
        Some(1),
        t0,
    );
    let status = invalid_spec(Some(&previous), &errors, Some(2), t0);

    assert_eq!(status.observed_generation, Some(2));
    let ready = ready_of(&status).expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.rules[0].match.logPattern"),
        "{}",
        ready.message
    );
    assert!(
        ready
            .message
            .contains("spec.rules[1].match.window.timeZone"),
        "{}",
        ready.message
    );
    assert_eq!(status.counters, previous.counters);
    assert_eq!(status.recent_actions, previous.recent_actions);
}

#[test]
fn the_summary_mentions_dry_run_and_failed_projects() {
    let now = ts(T0);
    let mut run = report(now, Vec::new());
    run.projects = 1;
    run.jobs_seen = 1;
    assert_eq!(run_summary(&run), "1 project, 1 job tracked");

    run.projects = 3;
    run.jobs_seen = 40;
    run.dry_run = true;
    run.failures.push(ProjectFailure {
        target: FailedTarget::Project(ProjectRef::parse("group/gone")),
        kind: "api_error",
        message: "GET /projects/:id/jobs failed with HTTP 404: 404 Project Not Found".into(),
    });
    let summary = run_summary(&run);
    assert!(
        summary.starts_with("3 projects, 40 jobs tracked; dry-run"),
        "{summary}"
    );
    assert!(
        summary.contains("errors on 1 project (group/gone)")
            && summary.contains("HTTP 404: 404 Project Not Found"),
        "{summary}"
    );
}

#[test]
fn the_summary_names_a_group_that_could_not_be_listed() {
    let mut run = report(ts(T0), Vec::new());
    run.projects = 2;
    run.jobs_seen = 0;
    run.failures.push(ProjectFailure {
        target: FailedTarget::Group(GroupRef::parse("fleet/gone")),
        kind: "api_error",
        message: "GET /groups/:id/projects failed with HTTP 404: 404 Group Not Found".into(),
    });
    run.failures.push(ProjectFailure {
        target: FailedTarget::Project(ProjectRef::parse("team/app")),
        kind: "api_error",
        message: "GET /projects/:id/jobs failed with HTTP 403: 403 Forbidden".into(),
    });
    assert_eq!(
        run_summary(&run),
        "2 projects, 0 jobs tracked; errors on 1 project (team/app) and 1 group (fleet/gone), \
         first: group fleet/gone: GET /groups/:id/projects failed with HTTP 404: 404 Group Not Found"
    );
}

#[test]
fn a_policy_is_not_due_again_before_its_interval() {
    let t0 = ts(T0);
    let interval = Duration::from_secs(60);
    let status = reconciled(None, &report(t0, Vec::new()), Some(3), t0);

    assert_eq!(
        not_due_for(
            Some(&status),
            Some(3),
            interval,
            t0 + SignedDuration::from_secs(20)
        ),
        Some(Duration::from_secs(40))
    );
    assert_eq!(
        not_due_for(
            Some(&status),
            Some(3),
            interval,
            t0 + SignedDuration::from_secs(60)
        ),
        None,
        "due at the interval"
    );
    assert_eq!(
        not_due_for(
            Some(&status),
            Some(3),
            interval,
            t0 + SignedDuration::from_millis(59_500)
        ),
        None,
        "less than a second left is due"
    );
    assert_eq!(
        not_due_for(Some(&status), Some(4), interval, t0),
        None,
        "a new generation is due at once"
    );
    assert_eq!(not_due_for(None, Some(3), interval, t0), None);
    let failed = not_reconciled(
        Some(&status),
        ReadyReason::SecretNotFound,
        "gone",
        Some(3),
        t0,
    );
    assert_eq!(
        not_due_for(Some(&failed), Some(3), interval, t0),
        None,
        "a failed policy is retried on its own schedule"
    );
    assert_eq!(
        not_due_for(
            Some(&status),
            Some(3),
            interval,
            t0 - SignedDuration::from_mins(5)
        ),
        Some(interval),
        "a clock that went back waits one interval"
    );
}

#[test]
fn long_messages_are_cut() {
    let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
    let status = not_reconciled(None, ReadyReason::GitLabError, long, None, ts(T0));
    let message = &ready_of(&status).expect("Ready").message;
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(message.ends_with('…'));
}

#[test]
fn actions_on_deliveries_are_counted_without_moving_the_last_run() {
    let t0 = ts(T0);
    let run = reconciled(None, &report(t0, Vec::new()), Some(2), t0);
    let later = t0 + jiff::SignedDuration::from_secs(3);
    let delivered = report(
        later,
        vec![record(7, ActionKind::Retry, succeeded(), later)],
    );
    let status = with_actions(Some(&run), &delivered);
    assert_eq!(status.counters.retried, 1);
    assert_eq!(status.recent_actions.len(), 1);
    assert_eq!(status.recent_actions[0].job_id, 7);
    assert_eq!(
        status.last_sync_time, run.last_sync_time,
        "the next run stays due"
    );
    assert_eq!(status.conditions, run.conditions);
    assert_eq!(status.observed_generation, Some(2));
}
