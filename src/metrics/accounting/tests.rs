use super::*;
use crate::gitlab::records::{JobWire, Names};
use proptest::prelude::*;

const PROJECT: &str = "platform/api";

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
) -> JobRecord {
    let wire: JobWire = serde_json::from_value(serde_json::json!({
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
    .expect("valid test job");
    JobRecord::from_wire(wire, at(0), &mut Names::default())
}

fn pending(id: u64) -> JobRecord {
    job(id, "pending", None, None, None, None)
}

fn running(id: u64, started: i64, queued: f64) -> JobRecord {
    job(id, "running", Some(started), None, Some(queued), None)
}

fn failed(id: u64, started: i64, finished: i64, queued: f64, reason: Option<&str>) -> JobRecord {
    job(
        id,
        "failed",
        Some(started),
        Some(finished),
        Some(queued),
        reason,
    )
}

fn succeeded(id: u64, started: i64, finished: i64, queued: f64) -> JobRecord {
    job(
        id,
        "success",
        Some(started),
        Some(finished),
        Some(queued),
        None,
    )
}

fn manual(id: u64) -> JobRecord {
    job(id, "manual", None, None, None, None)
}

/// Feeds the snapshots and collects every non-empty result.
fn feed(accounting: &mut JobAccounting, jobs: &[JobRecord]) -> Vec<JobEvents> {
    jobs.iter()
        .map(|j| accounting.observe(PROJECT, j, process_start()))
        .filter(|events| !events.is_empty())
        .collect()
}

#[test]
fn a_job_seen_five_times_is_counted_once() {
    let mut accounting = JobAccounting::new();
    let snapshots = [
        pending(10),
        running(10, 5, 42.0),
        running(10, 5, 42.0),
        failed(10, 5, 60, 42.0, Some("script_failure")),
        failed(10, 5, 60, 42.0, Some("script_failure")),
    ];
    let events = feed(&mut accounting, &snapshots);
    assert_eq!(
        events,
        vec![
            JobEvents {
                queued_seconds: Some(42.0),
                failure_reason: None
            },
            JobEvents {
                queued_seconds: None,
                failure_reason: Some("script_failure".into())
            },
        ]
    );
}

#[test]
fn a_job_first_seen_finished_is_counted_once_with_both_events() {
    let mut accounting = JobAccounting::new();
    let snapshot = failed(11, 5, 9, 3.5, Some("stuck_or_timeout_failure"));
    let events = feed(
        &mut accounting,
        &[snapshot.clone(), snapshot.clone(), snapshot],
    );
    assert_eq!(
        events,
        vec![JobEvents {
            queued_seconds: Some(3.5),
            failure_reason: Some("stuck_or_timeout_failure".into()),
        }]
    );
}

#[test]
fn a_job_that_started_before_the_process_is_not_counted() {
    let mut accounting = JobAccounting::new();
    let events = feed(
        &mut accounting,
        &[running(12, -30, 8.0), succeeded(12, -30, 20, 8.0)],
    );
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(accounting.tracked_ids(PROJECT), 0);
}

#[test]
fn a_job_that_failed_before_the_process_is_not_counted() {
    let mut accounting = JobAccounting::new();
    let events = feed(
        &mut accounting,
        &[failed(13, -60, -1, 8.0, Some("script_failure"))],
    );
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_job_that_started_before_but_failed_after_the_process_start_counts_only_the_failure() {
    let mut accounting = JobAccounting::new();
    let events = feed(
        &mut accounting,
        &[
            running(14, -60, 8.0),
            failed(14, -60, 30, 8.0, Some("runner_system_failure")),
        ],
    );
    assert_eq!(
        events,
        vec![JobEvents {
            queued_seconds: None,
            failure_reason: Some("runner_system_failure".into()),
        }]
    );
}

#[test]
fn a_job_starting_exactly_at_the_process_start_is_counted() {
    let mut accounting = JobAccounting::new();
    let events = feed(&mut accounting, &[running(15, 0, 1.0)]);
    assert_eq!(events.len(), 1);
}

#[test]
fn a_failure_without_reason_is_counted_as_unknown() {
    let mut accounting = JobAccounting::new();
    let events = feed(&mut accounting, &[failed(16, 1, 2, 0.5, None)]);
    assert_eq!(events[0].failure_reason.as_deref(), Some("unknown"));
}

#[test]
fn a_job_without_queued_duration_counts_no_queue_time() {
    let mut accounting = JobAccounting::new();
    // GitLab before 13.x sends no queued_duration.
    let old_gitlab_job = job(17, "running", Some(5), None, None, None);
    assert!(feed(&mut accounting, &[old_gitlab_job]).is_empty());
    let insane = job(18, "running", Some(5), None, Some(f64::NAN), None);
    assert!(feed(&mut accounting, &[insane]).is_empty());
}

#[test]
fn a_retry_is_a_new_job_and_is_counted_again() {
    let mut accounting = JobAccounting::new();
    let events = feed(
        &mut accounting,
        &[
            failed(20, 1, 5, 2.0, Some("stuck_or_timeout_failure")),
            failed(21, 10, 15, 3.0, Some("stuck_or_timeout_failure")),
        ],
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn pruning_forgets_settled_jobs_and_never_counts_them_again() {
    let mut accounting = JobAccounting::new();
    let jobs: Vec<JobRecord> = (100..110)
        .map(|id| failed(id, 1, 2, 1.0, Some("script_failure")))
        .collect();
    assert_eq!(feed(&mut accounting, &jobs).len(), 10);
    assert_eq!(accounting.tracked_ids(PROJECT), 10);

    accounting.prune_below(PROJECT, 105);
    assert_eq!(accounting.tracked_ids(PROJECT), 5);

    // A full resync lists every job again: nothing is counted twice, above or below the mark.
    assert!(feed(&mut accounting, &jobs).is_empty());
    assert_eq!(accounting.tracked_ids(PROJECT), 5);
}

#[test]
fn the_low_water_mark_never_moves_down() {
    let mut accounting = JobAccounting::new();
    accounting.prune_below(PROJECT, 200);
    accounting.prune_below(PROJECT, 150);
    // 180 is below the highest mark given, completed, never seen alive: settled.
    assert!(feed(&mut accounting, &[failed(180, 1, 2, 1.0, None)]).is_empty());
    assert_eq!(
        feed(&mut accounting, &[failed(200, 1, 2, 1.0, None)]).len(),
        1
    );
}

#[test]
fn a_manual_job_below_the_mark_is_still_counted_when_played() {
    let mut accounting = JobAccounting::new();
    // The manual job is seen alive, then newer jobs move the mark past it.
    assert!(feed(&mut accounting, &[manual(50)]).is_empty());
    accounting.prune_below(PROJECT, 90);
    assert_eq!(accounting.tracked_ids(PROJECT), 1);

    // Weeks later it is played, waits 7 s, runs and fails: both are counted, once.
    let events = feed(
        &mut accounting,
        &[
            pending(50),
            running(50, 100, 7.0),
            running(50, 100, 7.0),
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
                failure_reason: Some("script_failure".into())
            },
        ]
    );
    // Completed, it is forgotten at the next prune and never counted again.
    accounting.prune_below(PROJECT, 90);
    assert_eq!(accounting.tracked_ids(PROJECT), 0);
    assert!(feed(&mut accounting, &[failed(50, 100, 160, 7.0, None)]).is_empty());
}

#[test]
fn the_cap_bounds_memory_and_evicted_jobs_are_not_counted_twice() {
    let mut accounting = JobAccounting::with_max_ids_per_project(3);
    let jobs: Vec<JobRecord> = (1..=5).map(|id| running(id, 1, 1.0)).collect();
    assert_eq!(feed(&mut accounting, &jobs).len(), 5);
    assert_eq!(accounting.tracked_ids(PROJECT), 3);

    // Ids 1 and 2 were evicted (the smallest); the rest are remembered.
    let finished: Vec<JobRecord> = (1..=5)
        .map(|id| succeeded(id, 1, 9, 1.0))
        .chain((1..=5).map(|id| running(id, 1, 1.0)))
        .collect();
    assert!(feed(&mut accounting, &finished).is_empty());
    assert!(accounting.tracked_ids(PROJECT) <= 3);

    // A new job is still counted.
    assert_eq!(feed(&mut accounting, &[running(6, 2, 1.0)]).len(), 1);
    assert!(accounting.tracked_ids(PROJECT) <= 3);
}

#[test]
fn the_cap_holds_for_a_large_fleet() {
    let mut accounting = JobAccounting::with_max_ids_per_project(1_000);
    for id in 0..20_000 {
        accounting.observe(PROJECT, &running(id, 1, 1.0), process_start());
    }
    assert_eq!(accounting.tracked_ids(PROJECT), 1_000);
}

#[test]
fn jobs_that_count_nothing_are_not_remembered() {
    let mut accounting = JobAccounting::new();
    feed(
        &mut accounting,
        &[
            succeeded(1, -10, -5, 1.0),
            job(2, "canceled", None, Some(3), None, None),
            job(3, "skipped", None, None, None, None),
        ],
    );
    assert_eq!(accounting.tracked_ids(PROJECT), 0);
}

#[test]
fn projects_are_accounted_apart() {
    let mut accounting = JobAccounting::new();
    let snapshot = succeeded(7, 1, 2, 1.0);
    assert!(
        !accounting
            .observe("group/a", &snapshot, process_start())
            .is_empty()
    );
    assert!(
        !accounting
            .observe("group/b", &snapshot, process_start())
            .is_empty()
    );
    accounting.prune_below("group/a", 100);
    assert_eq!(accounting.tracked_ids("group/a"), 0);
    assert_eq!(accounting.tracked_ids("group/b"), 1);
    assert_eq!(accounting.total_tracked_ids(), 1);

    accounting.forget_project("group/b");
    assert_eq!(accounting.total_tracked_ids(), 0);
}

/// One step of a random history: a snapshot of one of a few jobs, or a prune.
#[derive(Debug, Clone)]
enum Step {
    Snapshot { id: u64, phase: u8 },
    Prune { below: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..12, 0u8..4).prop_map(|(id, phase)| Step::Snapshot { id, phase }),
        1 => (0u64..14).prop_map(|below| Step::Prune { below }),
    ]
}

/// The snapshot of job `id` in one of its phases. Every job starts 1 s after the process start.
fn snapshot(id: u64, phase: u8) -> JobRecord {
    match phase {
        0 => pending(id),
        1 => running(id, 1, 2.0),
        2 => failed(id, 1, 5, 2.0, Some("script_failure")),
        _ => manual(id),
    }
}

proptest! {
    /// Whatever the order of snapshots, resyncs and prunes, a job's queue time and failure are
    /// each recorded at most once, and memory stays within the cap.
    #[test]
    fn never_counts_a_job_twice(steps in proptest::collection::vec(step(), 0..200), cap in 1usize..8) {
        let mut accounting = JobAccounting::with_max_ids_per_project(cap);
        let mut queued: HashMap<u64, usize> = HashMap::new();
        let mut failures: HashMap<u64, usize> = HashMap::new();
        let mut mark = 0;
        for step in steps {
            match step {
                Step::Snapshot { id, phase } => {
                    let events = accounting.observe(PROJECT, &snapshot(id, phase), process_start());
                    if events.queued_seconds.is_some() {
                        *queued.entry(id).or_default() += 1;
                    }
                    if events.failure_reason.is_some() {
                        *failures.entry(id).or_default() += 1;
                    }
                }
                Step::Prune { below } => {
                    mark = mark.max(below);
                    accounting.prune_below(PROJECT, mark);
                }
            }
            prop_assert!(accounting.tracked_ids(PROJECT) <= cap);
        }
        prop_assert!(queued.values().all(|n| *n == 1), "queued: {queued:?}");
        prop_assert!(failures.values().all(|n| *n == 1), "failures: {failures:?}");
    }

    /// Without pruning and under the cap, every job that started (or failed) after the process
    /// start is counted exactly once.
    #[test]
    fn counts_every_job_once_without_pressure(phases in proptest::collection::vec((0u64..10, 0u8..4), 0..100)) {
        let mut accounting = JobAccounting::new();
        let mut queued = 0;
        let mut failures = 0;
        let mut started = std::collections::HashSet::new();
        let mut failed_ids = std::collections::HashSet::new();
        for (id, phase) in phases {
            let events = accounting.observe(PROJECT, &snapshot(id, phase), process_start());
            queued += usize::from(events.queued_seconds.is_some());
            failures += usize::from(events.failure_reason.is_some());
            if phase == 1 || phase == 2 {
                started.insert(id);
            }
            if phase == 2 {
                failed_ids.insert(id);
            }
        }
        prop_assert_eq!(queued, started.len());
        prop_assert_eq!(failures, failed_ids.len());
    }
}
