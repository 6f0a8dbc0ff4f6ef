use super::*;
use crate::gitlab::models::JobStatus::{self, *};
use crate::gitlab::records::{JobRecord, Stamp};
use crate::policy::test_support::{job, mins, now, policy};

const RETRY_STUCK: &str = "rules:
  - name: retry-stuck
    match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
    retry: {limit: 2}
";

/// A job of pipeline 5, `rspec` on `main`, created two minutes ago, delivered as `statuses`
/// with every fact (a failure as `stuck_or_timeout_failure`).
fn delivered(statuses: &[JobStatus]) -> DeliveredJob {
    DeliveredJob {
        job_id: 50,
        moves: statuses
            .iter()
            .map(|s| DeliveredMove {
                status: Some(*s),
                failure_reason: (*s == Failed).then(|| "stuck_or_timeout_failure".to_owned()),
            })
            .collect(),
        facts: DeliveredFacts {
            name: Some("rspec".to_owned()),
            stage: Some("test".to_owned()),
            git_ref: Some("main".to_owned()),
            tag: Some(false),
            allow_failure: Some(false),
            created_at: Some(now() - mins(2)),
            pipeline_id: Some(5),
        },
    }
}

fn need(rules: &str, d: &DeliveredJob, held: Vec<JobRecord>) -> DeliveryNeed {
    let policies = [Arc::new(policy(rules))];
    let jobs: ProjectJobs = held.into_iter().collect();
    delivery_need(&policies, d, &jobs, now())
}

fn with_reason(mut d: DeliveredJob, reason: Option<&str>) -> DeliveredJob {
    for m in &mut d.moves {
        m.failure_reason = reason.map(str::to_owned);
    }
    d
}

#[test]
fn a_missing_or_unknown_status_is_read() {
    let mut d = delivered(&[Running]);
    d.moves[0].status = None;
    assert_eq!(need(RETRY_STUCK, &d, vec![]), DeliveryNeed::Read);
    d.moves[0].status = Some(Other("paused".into()));
    assert_eq!(need(RETRY_STUCK, &d, vec![]), DeliveryNeed::Read);
}

#[test]
fn failure_reasons_are_checked_on_the_delivered_reason_and_its_aliases() {
    let d = |reason| with_reason(delivered(&[Failed]), reason);
    assert_eq!(
        need(RETRY_STUCK, &d(Some("script_failure")), vec![]),
        DeliveryNeed::Nothing
    );
    assert_eq!(
        need(RETRY_STUCK, &d(Some("stuck_or_timeout_failure")), vec![]),
        DeliveryNeed::Read
    );
    // An alias GitLab 19.1+ sends for it.
    assert_eq!(
        need(RETRY_STUCK, &d(Some("no_updates_running")), vec![]),
        DeliveryNeed::Read
    );
    // No reason delivered: it may have one.
    assert_eq!(need(RETRY_STUCK, &d(None), vec![]), DeliveryNeed::Read);
    // Not failed: the retry rule never acts.
    assert_eq!(
        need(
            RETRY_STUCK,
            &delivered(&[Created, Pending, Running]),
            vec![]
        ),
        DeliveryNeed::Nothing
    );
}

#[test]
fn names_stages_refs_and_spec_jobs_are_checked_on_the_delivered_facts() {
    let rules = |condition: &str| {
        format!(
            "rules:\n  - name: r\n    match: {{statuses: [failed], {condition}}}\n    retry: {{limit: 1}}\n"
        )
    };
    let failed = delivered(&[Failed]);
    for (condition, acts) in [
        ("names: ['lint']", false),
        ("names: ['rspec*']", true),
        ("stages: ['build']", false),
        ("stages: ['test']", true),
        ("refs: ['v1.*']", false),
        ("refs: ['main']", true),
    ] {
        let want = if acts {
            DeliveryNeed::Read
        } else {
            DeliveryNeed::Nothing
        };
        assert_eq!(
            need(&rules(condition), &failed, vec![]),
            want,
            "{condition}"
        );
    }
    // spec.jobs is checked too.
    let filtered = format!("jobs: {{names: ['deploy*']}}\n{}", rules("names: ['*']"));
    assert_eq!(need(&filtered, &failed, vec![]), DeliveryNeed::Nothing);
    // A fact not delivered spares nothing.
    let mut nameless = failed.clone();
    nameless.facts.name = None;
    assert_eq!(
        need(&rules("names: ['lint']"), &nameless, vec![]),
        DeliveryNeed::Read
    );
}

#[test]
fn tag_and_allow_failure_are_checked_on_the_delivered_facts() {
    let keep = "rules:
  - name: keep
    match: {statuses: [success], tag: true, refs: ['v1.*'], names: ['release']}
    keepArtifacts: {}
";
    let mut release = delivered(&[Success]);
    release.facts.name = Some("release".to_owned());
    release.facts.git_ref = Some("v1.2.3".to_owned());
    assert_eq!(
        need(keep, &release, vec![]),
        DeliveryNeed::Nothing,
        "no tag"
    );
    release.facts.tag = Some(true);
    assert_eq!(need(keep, &release, vec![]), DeliveryNeed::Read);
    release.facts.tag = None;
    assert_eq!(need(keep, &release, vec![]), DeliveryNeed::Read, "unknown");

    let allowed = "rules:
  - name: r
    match: {statuses: [failed], allowFailure: true}
    retry: {limit: 1}
";
    let mut failed = delivered(&[Failed]);
    assert_eq!(need(allowed, &failed, vec![]), DeliveryNeed::Nothing);
    failed.facts.allow_failure = Some(true);
    assert_eq!(need(allowed, &failed, vec![]), DeliveryNeed::Read);
}

#[test]
fn a_job_created_less_than_older_than_ago_is_not_read() {
    let stale = "rules:
  - name: cancel-stale-pending
    match: {statuses: [created, pending], olderThan: 30m}
    cancel: {}
";
    let mut pending = delivered(&[Created, Pending]);
    assert_eq!(need(stale, &pending, vec![]), DeliveryNeed::Nothing);
    pending.facts.created_at = Some(now() - mins(31));
    assert_eq!(need(stale, &pending, vec![]), DeliveryNeed::Read);
    pending.facts.created_at = None;
    assert_eq!(need(stale, &pending, vec![]), DeliveryNeed::Read);
}

const CANCEL_SUPERSEDED: &str = "rules:
  - name: cancel-superseded
    match: {statuses: [pending, running], superseded: true}
    cancel: {}
";

#[test]
fn a_running_job_is_read_for_superseded_only_when_a_newer_pipeline_is_known() {
    let running = delivered(&[Running]);
    // Another job of the same name and ref, finished in pipeline 4 (older) or 6 (newer).
    let other = |pipeline: u64| job(40 + pipeline, pipeline, "rspec", Success);
    assert_eq!(
        need(CANCEL_SUPERSEDED, &running, vec![]),
        DeliveryNeed::Nothing
    );
    assert_eq!(
        need(CANCEL_SUPERSEDED, &running, vec![other(4)]),
        DeliveryNeed::Nothing
    );
    assert_eq!(
        need(CANCEL_SUPERSEDED, &running, vec![other(6)]),
        DeliveryNeed::Read
    );
    let not_superseded = CANCEL_SUPERSEDED.replace("superseded: true", "superseded: false");
    assert_eq!(
        need(&not_superseded, &running, vec![other(6)]),
        DeliveryNeed::Nothing
    );
    assert_eq!(need(&not_superseded, &running, vec![]), DeliveryNeed::Read);
}

#[test]
fn a_new_job_is_read_for_superseded_only_when_it_supersedes_a_held_unfinished_job() {
    let created = delivered(&[Created]);
    let held =
        |id: u64, pipeline: u64, name: &str, status: JobStatus| job(id, pipeline, name, status);
    // Nothing older held: nothing to supersede.
    assert_eq!(
        need(CANCEL_SUPERSEDED, &created, vec![]),
        DeliveryNeed::Nothing
    );
    // An unfinished job of the same name and ref in an older pipeline.
    assert_eq!(
        need(
            CANCEL_SUPERSEDED,
            &created,
            vec![held(41, 4, "rspec", Running)]
        ),
        DeliveryNeed::Read
    );
    // Finished, in a status the rule does not cancel, another name, or already superseded by
    // a pipeline as new as this one.
    for jobs in [
        vec![held(41, 4, "rspec", Success)],
        vec![held(41, 4, "rspec", Created)],
        vec![held(41, 4, "lint", Running)],
        vec![held(41, 4, "rspec", Running), held(61, 5, "rspec", Created)],
    ] {
        assert_eq!(
            need(CANCEL_SUPERSEDED, &created, jobs.clone()),
            DeliveryNeed::Nothing,
            "{jobs:?}"
        );
    }
    // Without a ref, name or pipeline, it may supersede anything.
    let mut unnamed = created.clone();
    unnamed.facts.pipeline_id = None;
    assert_eq!(
        need(CANCEL_SUPERSEDED, &unnamed, vec![]),
        DeliveryNeed::Read
    );
    // A policy without superseded does not care.
    assert_eq!(
        need(RETRY_STUCK, &created, vec![held(41, 4, "rspec", Running)]),
        DeliveryNeed::Nothing
    );
}

#[test]
fn a_closed_window_spares_the_read() {
    // NOW is a Monday, 12:00 UTC.
    let windowed = |from: &str, to: &str| {
        format!(
            "rules:\n  - name: r\n    match: {{statuses: [failed], window: {{from: '{from}', to: '{to}'}}}}\n    retry: {{limit: 1}}\n"
        )
    };
    let failed = delivered(&[Failed]);
    assert_eq!(
        need(&windowed("20:00", "22:00"), &failed, vec![]),
        DeliveryNeed::Nothing
    );
    assert_eq!(
        need(&windowed("11:00", "13:00"), &failed, vec![]),
        DeliveryNeed::Read
    );
}

#[test]
fn a_held_job_delivered_as_held_is_not_read_and_otherwise_is_stale_or_read() {
    let mut held_failed = job(50, 5, "rspec", Failed);
    held_failed.set_failure_reason(Some("stuck_or_timeout_failure"));
    // A late or repeated delivery of what is held: nothing new, even for a rule acting on it.
    assert_eq!(
        need(
            RETRY_STUCK,
            &delivered(&[Failed]),
            vec![held_failed.clone()]
        ),
        DeliveryNeed::Nothing
    );
    // Held as running, delivered as running then failed: read.
    let held_running = job(50, 5, "rspec", Running);
    assert_eq!(
        need(
            RETRY_STUCK,
            &delivered(&[Running, Failed]),
            vec![held_running]
        ),
        DeliveryNeed::Read
    );
    // Held as failed, delivered as running (out of order): no rule acts on a running job, but
    // what is held is no longer sure.
    assert_eq!(
        need(RETRY_STUCK, &delivered(&[Running]), vec![held_failed]),
        DeliveryNeed::Stale
    );
    // A person plays a manual job a play policy holds.
    let play = "rules:
  - name: play
    match: {statuses: [manual]}
    play: {}
";
    let manual = job(50, 5, "deploy", Manual);
    let mut played = delivered(&[Pending]);
    played.facts = DeliveredFacts::default();
    assert_eq!(need(play, &played, vec![manual]), DeliveryNeed::Stale);
}

#[test]
fn the_held_record_fills_in_facts_the_delivery_left_out() {
    let mut held = job(50, 5, "lint", Running);
    held.set_created_at(Stamp::new(now() - mins(2)));
    let mut bare = delivered(&[Failed]);
    bare.facts = DeliveredFacts::default();
    let rspec_only = "rules:
  - name: r
    match: {statuses: [failed], names: ['rspec*']}
    retry: {limit: 1}
";
    assert_eq!(need(rspec_only, &bare, vec![]), DeliveryNeed::Read);
    assert_eq!(need(rspec_only, &bare, vec![held]), DeliveryNeed::Stale);
}

#[test]
fn facts_two_deliveries_disagree_on_are_unknown() {
    let mut facts = delivered(&[Created]).facts;
    let mut other = facts.clone();
    other.name = Some("lint".to_owned());
    other.tag = None;
    facts.merge(&other);
    assert_eq!(facts.name, None);
    assert_eq!(facts.tag, None);
    assert_eq!(facts.stage.as_deref(), Some("test"));
}
