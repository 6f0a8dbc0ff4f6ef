use super::*;
use crate::gitlab::models::JobStatus::{self, *};
use crate::policy::test_support::*;
use jiff::SignedDuration;

fn ids(decisions: &[Decision]) -> Vec<u64> {
    decisions.iter().map(|d| d.job_id).collect()
}

fn only(decisions: Vec<Decision>) -> Decision {
    assert_eq!(decisions.len(), 1, "expected one decision: {decisions:#?}");
    decisions.into_iter().next().unwrap()
}

const CANCEL_PENDING: &str = "rules: [{name: r, match: {statuses: [pending]}, cancel: {}}]";

#[test]
fn statuses_select_jobs() {
    let p = policy(CANCEL_PENDING);
    let w = World::new(vec![
        job(1, 10, "a", Pending),
        job(2, 10, "b", Running),
        job(3, 10, "c", Created),
    ]);
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(
        (d.job_id, d.action.clone(), d.verdict.clone()),
        (1, Action::Cancel, Verdict::Act)
    );
    assert_eq!(d.rule, "r");
    assert_eq!(d.project, ProjectRef::Id(1));
    assert_eq!(d.pipeline_id, 10);
    assert_eq!(d.job_name, "a");
}

#[test]
fn failure_reasons_match_aliases_both_ways() {
    let umbrella = policy(
        "rules: [{name: r, match: {failureReasons: [stuck_or_timeout_failure]}, retry: {limit: 2}}]",
    );
    let w = World::new(vec![
        failed(1, 10, "a", "no_updates_running"),
        failed(2, 11, "b", "stuck_or_timeout_failure"),
        failed(3, 12, "c", "script_failure"),
        failed(4, 13, "d", "server_timeout_running"),
    ]);
    let d = decide_all(&umbrella, &w, now());
    assert_eq!(ids(&d), vec![1, 2]);
    assert_eq!(
        d[0].reason,
        "failed with no_updates_running (alias of stuck_or_timeout_failure); attempt 1 of 3"
    );

    let granular = policy(
        "rules: [{name: r, match: {failureReasons: [server_timeout_canceling]}, retry: {limit: 2}}]",
    );
    let w = World::new(vec![
        failed(1, 10, "a", "job_execution_timeout"),
        failed(2, 11, "b", "server_timeout_running"),
        failed(3, 12, "c", "server_timeout_canceling"),
    ]);
    assert_eq!(ids(&decide_all(&granular, &w, now())), vec![1, 3]);
}

#[test]
fn failure_reasons_need_a_failed_job_with_a_reason() {
    let p =
        policy("rules: [{name: r, match: {failureReasons: [unknown_failure]}, retry: {limit: 2}}]");
    let w = World::new(vec![
        job(1, 10, "a", Failed), // GitLab omits failure_reason
        failed(2, 11, "b", "unknown_failure"),
    ]);
    assert_eq!(ids(&decide_all(&p, &w, now())), vec![2]);
}

#[test]
fn policy_filter_and_rule_globs_must_both_match() {
    let p = policy(
        "jobs: {refs: ['main', 'feature/*']}\n\
         rules: [{name: r, match: {statuses: [pending], names: ['rspec*'], stages: [test]}, cancel: {}}]",
    );
    let mut on_feature = job(1, 10, "rspec 1/3", Pending);
    on_feature.set_git_ref("feature/login/v2");
    let mut on_release = job(2, 11, "rspec 2/3", Pending);
    on_release.set_git_ref("release/1.0");
    let lint = job(3, 12, "lint", Pending);
    let mut wrong_stage = job(4, 13, "rspec 3/3", Pending);
    wrong_stage.set_stage("build");
    let on_main = job(5, 14, "rspec 3/3", Pending);
    let w = World::new(vec![on_feature, on_release, lint, wrong_stage, on_main]);
    assert_eq!(ids(&decide_all(&p, &w, now())), vec![1, 5]);
}

#[test]
fn tag_and_allow_failure() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [pending], tag: true, allowFailure: false}, cancel: {}}]",
    );
    let mut tagged = job(1, 10, "release", Pending);
    tagged.tag = true;
    let mut tagged_allowed = job(2, 11, "release", Pending);
    tagged_allowed.tag = true;
    tagged_allowed.allow_failure = true;
    let branch = job(3, 12, "release", Pending);
    let d = only(decide_all(
        &p,
        &World::new(vec![tagged, tagged_allowed, branch]),
        now(),
    ));
    assert_eq!(d.job_id, 1);
    assert_eq!(d.reason, "pending; tag pipeline; not allowed to fail");
}

#[test]
fn older_than_counts_from_creation_inclusive() {
    let p = policy("rules: [{name: r, match: {statuses: [pending], olderThan: 30m}, cancel: {}}]");
    let mut young = job(1, 10, "a", Pending);
    young.set_created_at((now() - mins(29)).into());
    let mut exactly = job(2, 11, "b", Pending);
    exactly.set_created_at((now() - mins(30)).into());
    let mut old = job(3, 12, "c", Pending);
    old.set_created_at((now() - mins(45)).into());
    let d = decide_all(&p, &World::new(vec![young, exactly, old]), now());
    assert_eq!(ids(&d), vec![3, 2], "oldest first");
    assert_eq!(d[0].reason, "pending; created 45m ago (olderThan 30m)");
}

#[test]
fn finished_within_retries_only_recent_failures() {
    let p = policy(
        "rules: [{name: r, match: {failureReasons: [stuck_or_timeout_failure], finishedWithin: 1h}, retry: {limit: 2}}]",
    );
    let finished = |id: u64, ago: i64| {
        let mut j = failed(id, id * 10, "build", "stuck_or_timeout_failure");
        j.set_finished_at(Some((now() - mins(ago)).into()));
        j
    };
    // Three days ago, a minute past the hour, exactly the hour, ten minutes ago.
    let w = World::new(vec![
        finished(1, 3 * 24 * 60),
        finished(2, 61),
        finished(3, 60),
        finished(4, 10),
    ]);
    let d = decide_all(&p, &w, now());
    assert_eq!(ids(&d), vec![3, 4], "within the hour, its bound included");
    assert_eq!(
        d[1].reason,
        "failed with stuck_or_timeout_failure; finished 10m ago (finishedWithin 1h); attempt 1 of 3"
    );

    // A job that has not finished has no `finished_at`: it does not match.
    let cancel = policy("rules: [{name: r, match: {finishedWithin: 1h}, cancel: {}}]");
    let d = decide_all(
        &cancel,
        &World::new(vec![job(5, 50, "test", Running)]),
        now(),
    );
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn a_failure_past_finished_within_is_not_kept_for_later() {
    // Time only moves on: a failure that finished before the window can never be retried by the
    // rule, so the engine need not hold it; a recent one may still be.
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed], finishedWithin: 1h}, retry: {limit: 2}}]",
    );
    let mut old = failed(1, 10, "build", "stuck_or_timeout_failure");
    old.set_finished_at(Some((now() - mins(61)).into()));
    let mut recent = failed(2, 20, "build", "stuck_or_timeout_failure");
    recent.set_finished_at(Some((now() - mins(59)).into()));
    let w = World::new(vec![old.clone(), recent.clone()]);
    let reach = Reach {
        now: now(),
        history_start: now() - mins(72 * 60),
        artifacts_start: now() - mins(30 * 24 * 60),
    };
    assert!(!may_act_on(&p, &w.jobs, &old, &reach));
    assert!(may_act_on(&p, &w.jobs, &recent, &reach));
}

#[test]
fn older_than_counts_a_pending_job_from_when_it_was_queued() {
    // A manual job created hours ago and played a minute ago is not stale.
    let p = policy(
        "rules: [{name: r, match: {statuses: [pending, running], olderThan: 30m}, cancel: {}}]",
    );
    let mut just_played = job(1, 10, "deploy", Pending);
    just_played.set_created_at((now() - mins(180)).into());
    just_played.set_queued_at(Some((now() - mins(1)).into()));
    let mut queued_long = job(2, 11, "build", Pending);
    queued_long.set_created_at((now() - mins(180)).into());
    queued_long.set_queued_at(Some((now() - mins(40)).into()));
    let mut just_started = job(3, 12, "test", Running);
    just_started.set_created_at((now() - mins(180)).into());
    just_started.set_started_at(Some((now() - mins(2)).into()));
    let d = decide_all(
        &p,
        &World::new(vec![just_played, queued_long, just_started]),
        now(),
    );
    assert_eq!(ids(&d), vec![2]);
    assert_eq!(d[0].reason, "pending; queued 40m ago (olderThan 30m)");
}

#[test]
fn older_than_counts_a_job_re_opened_by_a_retry_from_the_retry() {
    // Pipeline 10: `build` failed 18 h ago and `deploy` was skipped; a retry of `build` a minute
    // ago re-opened `deploy` (skipped → created), whose `created_at` is still 18 h old.
    let p = policy("rules: [{name: r, match: {statuses: [created], olderThan: 30m}, cancel: {}}]");
    let mut build = job(1, 10, "build", Failed);
    build.set_created_at((now() - mins(18 * 60)).into());
    let mut deploy = job(2, 10, "deploy", Created);
    deploy.set_created_at((now() - mins(18 * 60)).into());
    let mut retried_build = job(3, 10, "build", Running);
    retried_build.set_created_at((now() - mins(1)).into());
    // In another pipeline nothing was retried: its created job is old.
    let mut stale = job(4, 11, "deploy", Created);
    stale.set_created_at((now() - mins(60)).into());
    let d = decide_all(
        &p,
        &World::new(vec![build, deploy, retried_build, stale]),
        now(),
    );
    assert_eq!(ids(&d), vec![4], "the re-opened deploy is a minute old");
    assert_eq!(d[0].reason, "created; created 1h ago (olderThan 30m)");

    // Half an hour after the retry, the re-opened job is as stale as any.
    let later = now() + mins(30);
    let mut build = job(1, 10, "build", Failed);
    build.set_created_at((now() - mins(18 * 60)).into());
    let mut deploy = job(2, 10, "deploy", Created);
    deploy.set_created_at((now() - mins(18 * 60)).into());
    let mut retried_build = job(3, 10, "build", Success);
    retried_build.set_created_at((now() - mins(1)).into());
    let d = decide_all(&p, &World::new(vec![build, deploy, retried_build]), later);
    assert_eq!(ids(&d), vec![2]);
    assert_eq!(
        d[0].reason,
        "created; pipeline retried 31m ago (olderThan 30m)"
    );
}

#[test]
fn superseded_by_a_newer_pipeline_on_the_same_ref() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [pending, running], superseded: true}, cancel: {}}]",
    );
    let old = job(1, 10, "rspec", Running);
    let newer = job(2, 11, "rspec", Pending);
    let mut other_ref = job(3, 9, "rspec", Pending);
    other_ref.set_git_ref("feature/x");
    let other_name = job(4, 10, "lint", Pending);
    let d = only(decide_all(
        &p,
        &World::new(vec![newer, old, other_ref, other_name]),
        now(),
    ));
    assert_eq!(d.job_id, 1);
    assert_eq!(d.reason, "running; superseded by pipeline #11 on main");

    let not =
        policy("rules: [{name: r, match: {statuses: [pending], superseded: false}, cancel: {}}]");
    let w = World::new(vec![
        job(1, 10, "rspec", Pending),
        job(2, 11, "rspec", Pending),
    ]);
    assert_eq!(ids(&decide_all(&not, &w, now())), vec![2]);
}

#[test]
fn stages_succeeded_needs_every_latest_job_of_each_stage_green() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [manual], pipeline: {stagesSucceeded: [build, test]}}, play: {}}]",
    );
    let staged = |id, pipeline, name: &str, stage: &str, status| {
        let mut j = job(id, pipeline, name, status);
        j.set_stage(stage);
        j
    };
    // Pipeline 10: build green, rspec failed once then succeeded on retry.
    let green = vec![
        staged(1, 10, "build", "build", Success),
        staged(2, 10, "rspec", "test", Failed),
        staged(3, 10, "rspec", "test", Success),
        staged(4, 10, "deploy", "deploy", Manual),
    ];
    let d = only(decide_all(&p, &World::new(green), now()));
    assert_eq!(d.job_id, 4);
    assert_eq!(
        d.reason,
        "manual; stages build, test succeeded in pipeline #10"
    );

    // Pipeline 20: a test job still running.
    let red = vec![
        staged(1, 20, "build", "build", Success),
        staged(2, 20, "rspec", "test", Running),
        staged(4, 20, "deploy", "deploy", Manual),
    ];
    assert!(decide_all(&p, &World::new(red), now()).is_empty());

    // Pipeline 30: no test stage at all.
    let missing = vec![
        staged(1, 30, "build", "build", Success),
        staged(4, 30, "deploy", "deploy", Manual),
    ];
    assert!(decide_all(&p, &World::new(missing.clone()), now()).is_empty());
    let stages = ["build".to_owned(), "test".to_owned()];
    assert_eq!(
        stages_succeeded(&stages, &missing[1], &missing),
        Err("stage test has no jobs in pipeline #30".to_owned())
    );
}

#[test]
fn window_gates_on_the_clock() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [manual], window: {days: [Mon], from: '09:00', to: '17:00', timeZone: Europe/Berlin}}, play: {variables: [{key: BY, value: jobwarden}]}}]",
    );
    let w = World::new(vec![job(1, 10, "deploy", Manual)]);
    // 12:00Z is 13:00 in Berlin on Monday.
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(
        d.action,
        Action::Play {
            variables: vec![("BY".into(), "jobwarden".into())]
        }
    );
    assert_eq!(
        d.reason,
        "manual; inside window Mon 09:00–17:00 Europe/Berlin"
    );
    assert!(
        decide_all(&p, &w, ts("2026-11-23T16:00:00Z")).is_empty(),
        "17:00 Berlin"
    );
    assert!(
        decide_all(&p, &w, ts("2026-11-24T12:00:00Z")).is_empty(),
        "Tuesday"
    );
}

#[test]
fn artifacts_expire_within() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [success], artifactsExpireWithin: 72h}, keepArtifacts: {}}]",
    );
    let mut soon = job(1, 10, "build", Success);
    soon.set_artifacts_expire_at(Some((now() + mins(60 * 24)).into()));
    let mut late = job(2, 11, "build", Success);
    late.set_artifacts_expire_at(Some((now() + mins(60 * 73)).into()));
    let never = job(3, 12, "build", Success);
    let d = only(decide_all(&p, &World::new(vec![soon, late, never]), now()));
    assert_eq!((d.job_id, d.action.kind().as_str()), (1, "keep_artifacts"));
    assert_eq!(
        d.reason,
        "success; artifacts expire in 24h (artifactsExpireWithin 72h)"
    );
}

#[test]
fn keep_artifacts_only_while_an_expiry_is_set() {
    let p = policy("rules: [{name: r, match: {statuses: [success]}, keepArtifacts: {}}]");
    let mut expiring = job(1, 10, "build", Success);
    expiring.set_artifacts_expire_at(Some((now() + mins(10)).into()));
    let kept = job(2, 11, "build", Success);
    assert_eq!(
        ids(&decide_all(&p, &World::new(vec![expiring, kept]), now())),
        vec![1]
    );
}

#[test]
fn log_pattern_is_checked_last_and_needs_the_log() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed], logPattern: 'connection reset|^ERROR: disk'}, retry: {limit: 3}}]",
    );
    let jobs = vec![
        failed(1, 10, "a", "script_failure"),
        failed(2, 11, "b", "script_failure"),
        failed(3, 12, "c", "script_failure"),
    ];
    let w = World::new(jobs.clone());
    // Jobs are evaluated newest first.
    assert_eq!(
        needed(&p, &w, now()),
        (1..=3)
            .rev()
            .map(|job_id| FactRequest::LogTail {
                project: ProjectRef::Id(1),
                job_id
            })
            .collect::<Vec<_>>()
    );
    let waiting = decide_all(&p, &w, now());
    assert!(waiting.iter().all(|d| d.verdict == Verdict::AwaitingFacts));
    assert_eq!(waiting[0].reason, "failed; waiting for the job log");

    let w = World::new(jobs)
        .log(1, "step 3\nread: connection reset by peer\n")
        .log(2, "all good\n")
        .log(3, "warm-up\nERROR: disk full\n");
    assert!(needed(&p, &w, now()).is_empty());
    let d = decide_all(&p, &w, now());
    assert_eq!(ids(&d), vec![1, 3]);
    assert_eq!(
        d[0].reason,
        "failed; log matches /connection reset|^ERROR: disk/; attempt 1 of 4"
    );
}

#[test]
fn retry_only_the_latest_attempt_within_the_limit() {
    let p = policy("rules: [{name: r, match: {statuses: [failed]}, retry: {limit: 2}}]");
    // rspec: attempts 1, 2 failed; attempt 3 would exceed limit 2.
    // lint: attempt 1 failed (retried already → attempt 2 failed), lint attempt 2 is latest.
    let w = World::new(vec![
        failed(1, 10, "rspec", "script_failure"),
        failed(2, 10, "rspec", "script_failure"),
        failed(3, 10, "rspec", "script_failure"),
        failed(4, 10, "lint", "script_failure"),
        failed(5, 10, "lint", "script_failure"),
    ]);
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(d.job_id, 5);
    assert_eq!(d.reason, "failed; attempt 2 of 3");
}

#[test]
fn retry_never_touches_an_old_attempt_even_when_the_project_list_hides_the_new_one() {
    let p = policy("rules: [{name: r, match: {statuses: [failed]}, retry: {limit: 5}}]");
    let old = failed(1, 10, "rspec", "script_failure");
    let newer = job(2, 10, "rspec", Running);
    let mut w = World::without_facts(vec![old.clone()]);
    w.pipeline_jobs.insert(10, vec![newer, old]);
    assert!(decide_all(&p, &w, now()).is_empty());
}

#[test]
fn retry_needs_a_retryable_job() {
    let p = policy("rules: [{name: r, match: {}, retry: {limit: 5}}]");
    let mut erased = failed(1, 10, "a", "script_failure");
    erased.erased = true;
    let mut archived = failed(2, 11, "b", "script_failure");
    archived.archived = true;
    let w = World::new(vec![
        erased,
        archived,
        job(3, 12, "c", Running),
        job(4, 13, "d", Manual),
        job(5, 14, "e", Skipped),
        job(6, 15, "f", Canceling),
        job(7, 16, "g", Canceled),
        job(8, 17, "h", Success),
    ]);
    assert_eq!(ids(&decide_all(&p, &w, now())), vec![7, 8]);
}

#[test]
fn backoff_grows_by_factor_and_is_capped() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed]}, retry: {limit: 5, backoff: {duration: 1m, factor: 2, maxDuration: 3m}}}]",
    );
    let finished = now() - mins(60) + mins(5);
    // attempt n of rspec finished at `finished`; delays 1m, 2m, 3m (capped from 4m).
    for (attempts, delay) in [(1u64, 1), (2, 2), (3, 3), (4, 3)] {
        let jobs: Vec<JobRecord> = (1..=attempts)
            .map(|id| failed(id, 10, "rspec", "runner_system_failure"))
            .collect();
        let w = World::new(jobs);
        let due = finished + mins(delay);
        let d = only(decide_all(&p, &w, due - SignedDuration::from_secs(1)));
        assert_eq!(d.verdict, Verdict::NotBefore(due), "attempt {attempts}");
        assert_eq!(
            d.reason,
            format!("failed; attempt {attempts} of 6, backoff {delay}m until {due}")
        );
        let d = only(decide_all(&p, &w, due));
        assert_eq!(d.verdict, Verdict::Act, "attempt {attempts} at {due}");
        assert_eq!(
            d.reason,
            format!("failed; attempt {attempts} of 6, backoff {delay}m elapsed")
        );
    }
}

#[test]
fn backoff_example_from_the_design() {
    let p = policy(
        "rules: [{name: retry-transient, match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}, retry: {limit: 3, backoff: {duration: 30s, factor: 2}}}]",
    );
    let w = World::new(vec![
        failed(1, 10, "rspec", "stuck_or_timeout_failure"),
        failed(2, 10, "rspec", "stuck_or_timeout_failure"),
    ]);
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(
        d.reason,
        "failed with stuck_or_timeout_failure; attempt 2 of 4, backoff 1m elapsed"
    );
}

#[test]
fn cancel_only_cancelable_jobs() {
    let p = policy("rules: [{name: r, match: {}, cancel: {}}]");
    let statuses = JobStatus::KNOWN;
    let jobs: Vec<JobRecord> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| job(i as u64 + 1, 100 + i as u64, "j", *s))
        .collect();
    let d = decide_all(&p, &World::new(jobs), now());
    let canceled: Vec<JobStatus> = d
        .iter()
        .map(|d| statuses[(d.job_id - 1) as usize])
        .collect();
    let expected: Vec<JobStatus> = statuses
        .iter()
        .filter(|s| s.is_cancelable())
        .copied()
        .collect();
    let mut got = canceled.clone();
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(got, want);
    assert!(!canceled.contains(&Canceling) && !canceled.contains(&Manual));
}

#[test]
fn play_only_manual_or_scheduled_jobs() {
    let p = policy("rules: [{name: r, match: {}, play: {}}]");
    let mut archived = job(4, 13, "d", Manual);
    archived.archived = true;
    let w = World::new(vec![
        job(1, 10, "a", Manual),
        job(2, 11, "b", Scheduled),
        job(3, 12, "c", Success),
        archived,
    ]);
    assert_eq!(ids(&decide_all(&p, &w, now())), vec![1, 2]);
}

#[test]
fn first_matching_rule_wins() {
    let p = policy(
        "rules: [\n\
         {name: cancel-old, match: {statuses: [pending], olderThan: 30m}, cancel: {}},\n\
         {name: cancel-any, match: {statuses: [pending]}, cancel: {}}]",
    );
    let mut young = job(2, 11, "b", Pending);
    young.set_created_at((now() - mins(5)).into());
    let d = decide_all(
        &p,
        &World::new(vec![job(1, 10, "a", Pending), young]),
        now(),
    );
    let by_job: Vec<(u64, &str)> = d.iter().map(|d| (d.job_id, d.rule.as_str())).collect();
    assert_eq!(by_job, vec![(1, "cancel-old"), (2, "cancel-any")]);
}

#[test]
fn a_rule_whose_action_cannot_apply_does_not_claim_the_job() {
    let p = policy(
        "rules: [\n\
         {name: retry, match: {statuses: [failed]}, retry: {limit: 1}},\n\
         {name: keep, match: {statuses: [failed]}, keepArtifacts: {}}]",
    );
    let mut second = failed(2, 10, "rspec", "script_failure");
    second.set_artifacts_expire_at(Some((now() + mins(60)).into()));
    let w = World::new(vec![failed(1, 10, "rspec", "script_failure"), second]);
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(
        (d.job_id, d.rule.as_str()),
        (2, "keep"),
        "retry limit 1 is used up"
    );
}

#[test]
fn budget_per_run_and_per_hour() {
    let p = policy(CANCEL_PENDING);
    let jobs: Vec<JobRecord> = (1..=5).map(|i| job(i, 10 + i, "a", Pending)).collect();
    let w = World::new(jobs);
    let verdicts = |budget: Budget| -> Vec<Verdict> {
        decide(&p, &[w.observation()], now(), &budget)
            .into_iter()
            .map(|d| d.verdict)
            .collect()
    };
    use Verdict::{Act, OverBudget};
    let run = verdicts(Budget {
        remaining_this_run: 2,
        remaining_this_hour: 100,
    });
    assert_eq!(run, vec![Act, Act, OverBudget, OverBudget, OverBudget]);
    let hour = verdicts(Budget::for_run(
        &crate::crd::Limits {
            max_actions_per_run: 20,
            max_actions_per_hour: 200,
        },
        197,
    ));
    assert_eq!(hour, vec![Act, Act, Act, OverBudget, OverBudget]);
    assert!(
        verdicts(Budget {
            remaining_this_run: 0,
            remaining_this_hour: 0
        })
        .iter()
        .all(|v| *v == OverBudget)
    );

    let d = decide(
        &p,
        &[w.observation()],
        now(),
        &Budget {
            remaining_this_run: 10,
            remaining_this_hour: 1,
        },
    );
    assert_eq!(
        d[1].reason,
        "pending; over budget: limits.maxActionsPerHour reached"
    );
}

#[test]
fn budget_goes_to_earlier_rules_then_older_jobs() {
    let p = policy(
        "rules: [\n\
         {name: first, match: {statuses: [pending], names: [x]}, cancel: {}},\n\
         {name: second, match: {statuses: [pending]}, cancel: {}}]",
    );
    let mut oldest = job(1, 10, "y", Pending);
    oldest.set_created_at((now() - mins(600)).into());
    let mut newer_x = job(2, 11, "x", Pending);
    newer_x.set_created_at((now() - mins(5)).into());
    let mut older_x = job(3, 12, "x", Pending);
    older_x.set_created_at((now() - mins(10)).into());
    let w = World::new(vec![oldest, newer_x, older_x]);
    let d = decide(
        &p,
        &[w.observation()],
        now(),
        &Budget {
            remaining_this_run: 2,
            remaining_this_hour: 9,
        },
    );
    let got: Vec<(u64, Verdict)> = d.into_iter().map(|d| (d.job_id, d.verdict)).collect();
    assert_eq!(
        got,
        vec![
            (3, Verdict::Act),
            (2, Verdict::Act),
            (1, Verdict::OverBudget)
        ]
    );
}

#[test]
fn waiting_decisions_use_no_budget() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed]}, retry: {limit: 3, backoff: {duration: 2h}}}]",
    );
    let w = World::new(vec![failed(1, 10, "a", "x"), failed(2, 11, "b", "x")]);
    let d = decide(
        &p,
        &[w.observation()],
        now(),
        &Budget {
            remaining_this_run: 0,
            remaining_this_hour: 0,
        },
    );
    assert!(d.iter().all(|d| matches!(d.verdict, Verdict::NotBefore(_))));
}

#[test]
fn dry_run_decides_but_never_acts_and_previews_the_budget() {
    let p = policy(&format!("dryRun: true\n{CANCEL_PENDING}"));
    let w = World::new(vec![job(1, 10, "a", Pending), job(2, 11, "b", Pending)]);
    let d = decide(
        &p,
        &[w.observation()],
        now(),
        &Budget {
            remaining_this_run: 1,
            remaining_this_hour: 9,
        },
    );
    let verdicts: Vec<Verdict> = d.into_iter().map(|d| d.verdict).collect();
    assert_eq!(verdicts, vec![Verdict::DryRun, Verdict::OverBudget]);
}

#[test]
fn suspended_policy_decides_nothing_and_needs_nothing() {
    let p =
        policy("suspend: true\nrules: [{name: r, match: {statuses: [failed]}, retry: {limit: 3}}]");
    let w = World::without_facts(vec![failed(1, 10, "a", "x")]);
    assert!(needed(&p, &w, now()).is_empty());
    assert!(decide_all(&p, &w, now()).is_empty());
}

#[test]
fn facts_are_requested_only_for_candidates_and_once() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed], failureReasons: [runner_system_failure], logPattern: oops}, retry: {limit: 3}}]",
    );
    let w = World::without_facts(vec![
        failed(1, 10, "a", "runner_system_failure"),
        failed(2, 10, "b", "runner_system_failure"),
        failed(3, 11, "c", "script_failure"), // not a candidate
        job(4, 12, "d", Success),             // not a candidate
    ]);
    // Tier 1 first: the pipeline list, once for pipeline 10; no log yet.
    assert_eq!(
        needed(&p, &w, now()),
        vec![FactRequest::PipelineJobs {
            project: ProjectRef::Id(1),
            pipeline_id: 10
        }]
    );
    // With the pipeline known, the logs of the two candidates, newest first.
    let w = World::new(w.jobs.newest_first().cloned().collect());
    assert_eq!(
        needed(&p, &w, now()),
        vec![
            FactRequest::LogTail {
                project: ProjectRef::Id(1),
                job_id: 2
            },
            FactRequest::LogTail {
                project: ProjectRef::Id(1),
                job_id: 1
            },
        ]
    );
}

#[test]
fn no_log_is_fetched_for_an_attempt_that_cannot_be_retried() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed], logPattern: oops}, retry: {limit: 1}}]",
    );
    let w = World::new(vec![failed(1, 10, "a", "x"), failed(2, 10, "a", "x")]);
    assert!(
        needed(&p, &w, now()).is_empty(),
        "job 1 is old, job 2 used its retry"
    );
}

#[test]
fn facts_follow_the_next_rule_when_an_expensive_condition_fails() {
    let p = policy(
        "rules: [\n\
         {name: disk, match: {statuses: [failed], logPattern: 'no space left'}, retry: {limit: 3}},\n\
         {name: net, match: {statuses: [failed], logPattern: 'connection reset'}, retry: {limit: 3}}]",
    );
    // The engine's loop, against a GitLab that has these logs.
    let jobs = vec![failed(1, 10, "a", "x"), failed(2, 11, "b", "x")];
    let logs = HashMap::from([
        (1u64, "connection reset by peer"),
        (2, "no space left on device"),
    ]);
    let mut w = World::without_facts(jobs.clone());
    let mut rounds = 0;
    loop {
        let facts = needed(&p, &w, now());
        if facts.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds < 10, "facts_needed must converge");
        for fact in facts {
            match fact {
                FactRequest::PipelineJobs { pipeline_id, .. } => {
                    let list = jobs
                        .iter()
                        .filter(|j| j.pipeline_id == pipeline_id)
                        .cloned()
                        .collect();
                    w.pipeline_jobs.insert(pipeline_id, list);
                }
                FactRequest::LogTail { job_id, .. } => {
                    w.log_tails.insert(job_id, logs[&job_id].to_owned());
                }
            }
        }
    }
    assert_eq!(rounds, 2, "pipelines first, then logs");
    let got: Vec<(u64, String)> = decide_all(&p, &w, now())
        .into_iter()
        .map(|d| (d.job_id, d.rule))
        .collect();
    assert_eq!(got, vec![(2, "disk".to_owned()), (1, "net".to_owned())]);
}

#[test]
fn a_job_seen_twice_is_decided_once() {
    let p = policy(CANCEL_PENDING);
    let w = World::new(vec![job(1, 10, "a", Pending), job(1, 10, "a", Pending)]);
    let again = World::new(vec![job(1, 10, "a", Pending)]);
    let d = decide(
        &p,
        &[w.observation(), again.observation()],
        now(),
        &UNLIMITED,
    );
    assert_eq!(ids(&d), vec![1]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 3] = ["build", "rspec", "deploy"];
    const STATUSES: [JobStatus; 6] = [Failed, Success, Canceled, Pending, Running, Manual];

    /// Jobs with ids in creation order, in a few pipelines, several attempts per name.
    fn arb_jobs() -> impl Strategy<Value = Vec<JobRecord>> {
        prop::collection::vec(
            (0u64..4, 0usize..3, 0usize..6, 0i64..240, any::<bool>()),
            1..40,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (pipeline, name, status, age, expiring))| {
                    let mut j = job(i as u64 + 1, 100 + pipeline, NAMES[name], STATUSES[status]);
                    j.set_created_at((now() - mins(age)).into());
                    j.set_finished_at(j.status.is_completed().then_some(j.created_at()));
                    if j.status == Failed {
                        j.set_failure_reason(Some("stuck_or_timeout_failure"));
                    }
                    if expiring {
                        j.set_artifacts_expire_at(Some((now() + mins(age)).into()));
                    }
                    j
                })
                .collect()
        })
    }

    const RULES: [&str; 6] = [
        "{name: retry, match: {statuses: [failed]}, retry: {limit: 2}}",
        "{name: retry-any, match: {}, retry: {limit: 5, backoff: {duration: 30m}}}",
        "{name: cancel, match: {olderThan: 30m}, cancel: {}}",
        "{name: cancel-superseded, match: {superseded: true}, cancel: {}}",
        "{name: play, match: {pipeline: {stagesSucceeded: [test]}}, play: {}}",
        "{name: keep, match: {artifactsExpireWithin: 1h}, keepArtifacts: {}}",
    ];

    fn arb_policy() -> impl Strategy<Value = (Vec<usize>, bool)> {
        (
            prop::sample::subsequence((0..RULES.len()).collect::<Vec<_>>(), 1..=RULES.len()),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn decisions_are_safe(jobs in arb_jobs(), (rules, dry_run) in arb_policy(), run in 0u32..6, hour in 0u32..6) {
            let rules: Vec<&str> = rules.iter().map(|i| RULES[*i]).collect();
            let p = policy(&format!("dryRun: {dry_run}\nrules: [{}]", rules.join(", ")));
            let w = World::new(jobs.clone());
            let budget = Budget { remaining_this_run: run, remaining_this_hour: hour };
            let decisions = decide(&p, &[w.observation()], now(), &budget);

            let mut seen = HashSet::new();
            for d in &decisions {
                prop_assert!(seen.insert(d.job_id), "two decisions for job {}", d.job_id);
                prop_assert!(d.verdict != Verdict::AwaitingFacts, "all facts were given");
                if d.action == Action::Retry {
                    let retried = jobs.iter().find(|j| j.id == d.job_id).unwrap();
                    let newer = jobs.iter().any(|j| j.name() == retried.name()
                        && j.pipeline_id == retried.pipeline_id && j.id > retried.id);
                    prop_assert!(!newer, "retried a non-latest attempt: job {}", d.job_id);
                }
            }
            let acting = decisions.iter()
                .filter(|d| matches!(d.verdict, Verdict::Act | Verdict::DryRun))
                .count() as u32;
            prop_assert!(acting <= run.min(hour));
            if dry_run {
                prop_assert!(decisions.iter().all(|d| d.verdict != Verdict::Act));
            }
        }

        #[test]
        fn without_facts_nothing_is_retried_blindly(jobs in arb_jobs()) {
            let p = policy(&format!("rules: [{}]", RULES[0]));
            let w = World::without_facts(jobs);
            let decisions = decide_all(&p, &w, now());
            prop_assert!(decisions.iter().all(|d| d.verdict == Verdict::AwaitingFacts));
            let facts = needed(&p, &w, now());
            let unique: HashSet<_> = facts.iter().collect();
            prop_assert_eq!(unique.len(), facts.len(), "facts are deduplicated");
        }
    }
}

#[test]
fn retry_counts_attempts_from_a_complete_project_listing_without_asking_for_facts() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}, retry: {limit: 1}}]",
    );
    let mut w = World::without_facts(vec![failed(1, 10, "rspec", "stuck_or_timeout_failure")]);
    w.jobs.set_complete_since(now() - mins(24 * 60));
    assert!(needed(&p, &w, now()).is_empty(), "no pipeline job list");
    let d = only(decide_all(&p, &w, now()));
    assert_eq!(d.verdict, Verdict::Act);
    assert!(d.reason.contains("attempt 1 of 2"), "{}", d.reason);

    // The retry failed the same way: that was the one retry allowed.
    w.jobs
        .insert_new(failed(2, 10, "rspec", "stuck_or_timeout_failure"));
    assert!(needed(&p, &w, now()).is_empty());
    assert!(decide_all(&p, &w, now()).is_empty());
}

#[test]
fn expired_artifacts_are_not_kept_again() {
    let p = policy(
        "rules: [{name: r, match: {statuses: [success], artifactsExpireWithin: 48h}, keepArtifacts: {}}]",
    );
    let mut expiring = job(1, 10, "release", Success);
    expiring.set_artifacts_expire_at(Some((now() + mins(60)).into()));
    let mut expired = job(2, 10, "docs", Success);
    expired.set_artifacts_expire_at(Some((now() - mins(60)).into()));
    let w = World::new(vec![expiring, expired]);
    assert_eq!(
        ids(&decide_all(&p, &w, now())),
        [1],
        "GitLab answers 404 for expired artifacts"
    );
}
