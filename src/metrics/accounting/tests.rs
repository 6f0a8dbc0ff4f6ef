use super::*;
use crate::engine::observe::{DEFAULT_HISTORY, ProjectObserver};
use crate::gitlab::models::ProjectRef;
use crate::gitlab::records::JobWire;
use proptest::prelude::*;
use std::collections::HashMap;

/// Seconds since the Unix epoch at which the process under test started observing.
const START: i64 = 1_800_000_000;

fn at(offset_seconds: i64) -> Timestamp {
    Timestamp::from_second(START + offset_seconds).expect("valid test timestamp")
}

fn process_start() -> Timestamp {
    at(0)
}

/// A job snapshot as GitLab would send it. Offsets are seconds relative to the process start.
fn job(
    id: u64,
    status: &str,
    started: Option<i64>,
    finished: Option<i64>,
    queued: Option<f64>,
    failure_reason: Option<&str>,
) -> JobWire {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "status": status,
        "stage": "test",
        "name": "rspec",
        "ref": "main",
        "created_at": at(-3600).to_string(),
        "started_at": started.map(|s| at(s).to_string()),
        "finished_at": finished.map(|s| at(s).to_string()),
        "queued_duration": queued,
        "failure_reason": failure_reason,
        "pipeline": {"id": 1},
    }))
    .expect("valid test job")
}

fn pending(id: u64) -> JobWire {
    job(id, "pending", None, None, None, None)
}

fn running(id: u64, started: i64, queued: f64) -> JobWire {
    job(id, "running", Some(started), None, Some(queued), None)
}

fn failed(id: u64, started: i64, finished: i64, queued: f64, reason: Option<&str>) -> JobWire {
    job(
        id,
        "failed",
        Some(started),
        Some(finished),
        Some(queued),
        reason,
    )
}

fn succeeded(id: u64, started: i64, finished: i64, queued: f64) -> JobWire {
    job(
        id,
        "success",
        Some(started),
        Some(finished),
        Some(queued),
        None,
    )
}

fn manual(id: u64) -> JobWire {
    job(id, "manual", None, None, None, None)
}

/// A project's observer, counting from the process start.
fn observer() -> ProjectObserver {
    ProjectObserver::new(ProjectRef::Id(1), DEFAULT_HISTORY).counting_since(process_start())
}

/// Feeds the snapshots to the observer, as read one by one, and collects every non-empty
/// result.
fn feed(observer: &mut ProjectObserver, jobs: &[JobWire]) -> Vec<JobEvents> {
    jobs.iter()
        .filter_map(|j| observer.update_job(j.clone(), process_start()))
        .map(|refresh| refresh.events)
        .filter(|events| !events.is_empty())
        .collect()
}

#[test]
fn a_job_seen_five_times_is_counted_once() {
    let mut observer = observer();
    let snapshots = [
        pending(10),
        running(10, 5, 42.0),
        running(10, 5, 42.0),
        failed(10, 5, 60, 42.0, Some("script_failure")),
        failed(10, 5, 60, 42.0, Some("script_failure")),
    ];
    let events = feed(&mut observer, &snapshots);
    assert_eq!(
        events,
        vec![
            JobEvents {
                queued_seconds: Some(42.0),
                failure_reason: None
            },
            JobEvents {
                queued_seconds: None,
                failure_reason: Some("script_failure")
            },
        ]
    );
}

#[test]
fn a_job_first_seen_finished_is_counted_once_with_both_events() {
    let mut observer = observer();
    let snapshot = failed(11, 5, 9, 3.5, Some("stuck_or_timeout_failure"));
    let events = feed(
        &mut observer,
        &[snapshot.clone(), snapshot.clone(), snapshot],
    );
    assert_eq!(
        events,
        vec![JobEvents {
            queued_seconds: Some(3.5),
            failure_reason: Some("stuck_or_timeout_failure"),
        }]
    );
}

#[test]
fn a_job_that_started_before_the_process_is_not_counted() {
    let mut observer = observer();
    let events = feed(
        &mut observer,
        &[running(12, -30, 8.0), succeeded(12, -30, 20, 8.0)],
    );
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_job_that_failed_before_the_process_is_not_counted() {
    let mut observer = observer();
    let events = feed(
        &mut observer,
        &[failed(13, -60, -1, 8.0, Some("script_failure"))],
    );
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_job_that_started_before_but_failed_after_the_process_start_counts_only_the_failure() {
    let mut observer = observer();
    let events = feed(
        &mut observer,
        &[
            running(14, -60, 8.0),
            failed(14, -60, 30, 8.0, Some("runner_system_failure")),
        ],
    );
    assert_eq!(
        events,
        vec![JobEvents {
            queued_seconds: None,
            failure_reason: Some("runner_system_failure"),
        }]
    );
}

#[test]
fn a_job_starting_exactly_at_the_process_start_is_counted() {
    let mut observer = observer();
    let events = feed(&mut observer, &[running(15, 0, 1.0)]);
    assert_eq!(events.len(), 1);
}

#[test]
fn a_failure_without_reason_is_counted_as_unknown() {
    let mut observer = observer();
    let events = feed(&mut observer, &[failed(16, 1, 2, 0.5, None)]);
    assert_eq!(events[0].failure_reason, Some("unknown"));
}

#[test]
fn a_job_without_queued_duration_counts_no_queue_time() {
    let mut observer = observer();
    // GitLab before 13.x sends no queued_duration.
    let old_gitlab_job = job(17, "running", Some(5), None, None, None);
    assert!(feed(&mut observer, &[old_gitlab_job]).is_empty());
    let insane = job(18, "running", Some(5), None, Some(f64::NAN), None);
    assert!(feed(&mut observer, &[insane]).is_empty());
}

#[test]
fn a_retry_is_a_new_job_and_is_counted_again() {
    let mut observer = observer();
    let events = feed(
        &mut observer,
        &[
            failed(20, 1, 5, 2.0, Some("stuck_or_timeout_failure")),
            failed(21, 10, 15, 3.0, Some("stuck_or_timeout_failure")),
        ],
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn a_manual_job_is_counted_when_played_weeks_later() {
    let mut observer = observer();
    assert!(feed(&mut observer, &[manual(50)]).is_empty());
    // Weeks later it is played, waits 7 s, runs and fails: both are counted, once.
    let events = feed(
        &mut observer,
        &[
            pending(50),
            running(50, 100, 7.0),
            running(50, 100, 7.0),
            failed(50, 100, 160, 7.0, Some("script_failure")),
            failed(50, 100, 160, 7.0, Some("script_failure")),
        ],
    );
    assert_eq!(
        events,
        vec![
            JobEvents {
                queued_seconds: Some(7.0),
                failure_reason: None
            },
            JobEvents {
                queued_seconds: None,
                failure_reason: Some("script_failure")
            },
        ]
    );
}

#[test]
fn an_older_snapshot_from_a_lagging_replica_is_ignored_and_counts_nothing() {
    let mut observer = observer();
    let events = feed(
        &mut observer,
        &[
            running(60, 5, 2.0),
            failed(60, 5, 9, 2.0, Some("script_failure")),
            running(60, 5, 2.0),
            pending(60),
            failed(60, 5, 9, 2.0, Some("script_failure")),
        ],
    );
    assert_eq!(events.len(), 2, "{events:?}");
    let held = observer.jobs().get(60).expect("held");
    assert_eq!(held.status, JobStatus::Failed, "the newer snapshot stays");
}

#[test]
fn a_job_seen_before_and_no_longer_held_counts_nothing() {
    let mut names = crate::gitlab::records::Names::default();
    let done = JobRecord::from_wire(
        failed(70, 1, 2, 1.0, Some("script_failure")),
        process_start(),
        &mut names,
    );
    assert!(JobEvents::of_change(None, false, &done, process_start()).is_empty());
    assert!(!JobEvents::of_change(None, true, &done, process_start()).is_empty());
}

/// The snapshot of job `id` in one of its phases. Every job starts 1 s after the process start.
fn snapshot(id: u64, phase: u8) -> JobWire {
    match phase {
        0 => manual(id),
        1 => pending(id),
        2 => running(id, 1, 2.0),
        _ => failed(id, 1, 5, 2.0, Some("script_failure")),
    }
}

proptest! {
    /// Whatever the order of snapshots (replicas lag, listings repeat), a job's queue time and
    /// failure are each recorded at most once.
    #[test]
    fn never_counts_a_job_twice(steps in proptest::collection::vec((0u64..12, 0u8..4), 0..200)) {
        let mut observer = observer();
        let mut queued: HashMap<u64, usize> = HashMap::new();
        let mut failures: HashMap<u64, usize> = HashMap::new();
        for (id, phase) in steps {
            let Some(refresh) = observer.update_job(snapshot(id, phase), process_start()) else {
                continue;
            };
            if refresh.events.queued_seconds.is_some() {
                *queued.entry(id).or_default() += 1;
            }
            if refresh.events.failure_reason.is_some() {
                *failures.entry(id).or_default() += 1;
            }
        }
        prop_assert!(queued.values().all(|n| *n == 1), "queued: {queued:?}");
        prop_assert!(failures.values().all(|n| *n == 1), "failures: {failures:?}");
    }

    /// When each job's snapshots come in the order GitLab moves it (each may repeat), every job
    /// that started (or failed) after the process start is counted exactly once.
    #[test]
    fn counts_every_job_once_in_gitlab_order(phases in proptest::collection::vec((0u64..10, 0u8..4), 0..100)) {
        let mut observer = observer();
        let mut reached: HashMap<u64, u8> = HashMap::new();
        let mut queued = 0;
        let mut failures = 0;
        for (id, phase) in phases {
            // GitLab never moves a job back: a phase below the one reached repeats it.
            let phase = phase.max(reached.get(&id).copied().unwrap_or(0));
            reached.insert(id, phase);
            let events = observer
                .update_job(snapshot(id, phase), process_start())
                .map(|r| r.events)
                .unwrap_or_default();
            queued += usize::from(events.queued_seconds.is_some());
            failures += usize::from(events.failure_reason.is_some());
        }
        prop_assert_eq!(queued, reached.values().filter(|p| **p >= 2).count());
        prop_assert_eq!(failures, reached.values().filter(|p| **p == 3).count());
    }
}
