use super::*;
use crate::crd::{ActionKind, ActionOutcome, ActionRecord, kube_time};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

const T0: &str = "2026-11-23T10:00:00Z";

fn at(s: &str) -> Time {
    kube_time(s.parse().expect("test timestamp"))
}

fn now() -> Timestamp {
    T0.parse().expect("test timestamp")
}

fn shard(index: u32, count: u32) -> Shard {
    Shard::new(index, count).expect("valid shard")
}

fn ready(status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: Some(2),
        last_transition_time: at("2026-11-23T09:00:00Z"),
    }
}

fn action(job_id: u64, time: &str) -> ActionRecord {
    ActionRecord {
        time: at(time),
        project: "platform/api".into(),
        job_id,
        job_name: "rspec".into(),
        rule: "retry".into(),
        action: ActionKind::Retry,
        outcome: ActionOutcome::Succeeded,
        new_job_id: None,
        message: None,
    }
}

/// A shard's entry on generation 2, Reconciled, with `projects` and `retried` retries.
fn reconciled(projects: u64, retried: u64, synced: &str) -> ShardStatus {
    ShardStatus {
        observed_generation: Some(2),
        conditions: vec![ready(
            "True",
            "Reconciled",
            &format!("{projects} projects, 9 jobs tracked"),
        )],
        last_sync_time: Some(at(synced)),
        projects: Some(projects),
        counters: ActionCounters {
            retried,
            ..ActionCounters::default()
        },
        recent_actions: Vec::new(),
    }
}

fn entries(list: Vec<(u32, ShardStatus)>) -> BTreeMap<String, ShardStatus> {
    list.into_iter()
        .map(|(index, entry)| (entry_key(index), entry))
        .collect()
}

fn ready_condition(status: &JobPolicyStatus) -> &Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("a Ready condition")
}

#[test]
fn with_one_shard_the_whole_status_is_written_as_before() {
    let own = JobPolicyStatus {
        observed_generation: Some(2),
        projects: Some(4),
        ..JobPolicyStatus::default()
    };
    let patch = patch(Shard::ALL, &own, None, Some(2), now());
    assert_eq!(patch, serde_json::json!({"status": own}));
    assert_eq!(own_previous(Some(&own), Shard::ALL), Some(own));
}

#[test]
fn a_shard_other_than_zero_writes_its_own_entry_only() {
    let own: JobPolicyStatus = reconciled(3, 1, T0).into();
    let object = JobPolicyStatus {
        shards: entries(vec![(0, reconciled(5, 0, T0))]),
        ..JobPolicyStatus::default()
    };
    let patch = patch(shard(1, 3), &own, Some(&object), Some(2), now());
    let expected = serde_json::json!({"status": {"shards": {"1": ShardStatus::from(own)}}});
    assert_eq!(patch, expected, "no top-level field, no other shard's key");
}

#[test]
fn shard_zero_writes_its_entry_and_the_merge_with_the_entries_it_read() {
    let own: JobPolicyStatus = reconciled(5, 2, T0).into();
    let object = JobPolicyStatus {
        shards: entries(vec![
            (0, reconciled(4, 0, "2026-11-23T09:59:00Z")),
            (1, reconciled(3, 1, "2026-11-23T09:58:00Z")),
        ]),
        ..JobPolicyStatus::default()
    };
    let patch = patch(shard(0, 2), &own, Some(&object), Some(2), now());
    let status = &patch["status"];
    assert_eq!(
        status["shards"]
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>()),
        Some(vec![&"0".to_owned()]),
        "only its own entry: {status}"
    );
    assert_eq!(status["projects"], 8, "its fresh 5 and shard 1's 3");
    assert_eq!(status["counters"]["retried"], 3);
    assert_eq!(status["lastSyncTime"], "2026-11-23T09:58:00Z");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "Reconciled");
    assert_eq!(status["observedGeneration"], 2);
}

#[test]
fn the_merge_sums_projects_and_counters_and_interleaves_recent_actions() {
    let mut zero = reconciled(4, 10, "2026-11-23T09:59:00Z");
    zero.recent_actions = vec![
        action(3, "2026-11-23T09:59:30Z"),
        action(1, "2026-11-23T09:50:00Z"),
    ];
    let mut one = reconciled(6, 5, "2026-11-23T09:58:00Z");
    one.recent_actions = (0..20)
        .map(|i| action(100 + i, &format!("2026-11-23T09:{:02}:00Z", 55 - i)))
        .collect();
    // A shard of an earlier, larger count: its actions happened, its projects are gone.
    let left_behind = reconciled(7, 100, "2026-11-20T00:00:00Z");
    let merged = merge(
        &entries(vec![(0, zero), (1, one), (2, left_behind)]),
        2,
        None,
        Some(2),
        now(),
    );
    assert_eq!(merged.projects, Some(10));
    assert_eq!(merged.counters.retried, 115);
    assert_eq!(merged.last_sync_time, Some(at("2026-11-23T09:58:00Z")));
    assert_eq!(merged.recent_actions.len(), 20);
    let jobs: Vec<u64> = merged.recent_actions.iter().map(|a| a.job_id).collect();
    assert_eq!(&jobs[..3], [3, 100, 101], "newest first across shards");
    assert!(jobs.contains(&1), "09:50 is among the 20 newest");
    assert!(
        merged
            .recent_actions
            .windows(2)
            .all(|w| w[0].time.0 >= w[1].time.0)
    );
    let ready = ready_condition(&merged);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Reconciled")
    );
    assert_eq!(
        ready.message,
        "shard 0: 4 projects, 9 jobs tracked; shard 1: 6 projects, 9 jobs tracked"
    );
    assert!(
        merged.shards.is_empty(),
        "entries are written by their shards"
    );
}

#[test]
fn a_shard_that_is_not_ready_makes_the_policy_not_ready_with_its_reason() {
    let mut failing = reconciled(3, 0, T0);
    failing.conditions = vec![ready(
        "False",
        "SecretNotFound",
        "Secret ci/gitlab not found",
    )];
    let merged = merge(
        &entries(vec![(0, reconciled(4, 0, T0)), (1, failing)]),
        2,
        None,
        Some(2),
        now(),
    );
    let ready = ready_condition(&merged);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "SecretNotFound");
    assert_eq!(ready.message, "shard 1: Secret ci/gitlab not found");
}

#[test]
fn a_shard_missing_or_behind_the_generation_keeps_the_policy_pending() {
    let mut behind = reconciled(3, 0, T0);
    behind.observed_generation = Some(1);
    let merged = merge(
        &entries(vec![(0, reconciled(4, 0, T0)), (2, behind)]),
        3,
        None,
        Some(2),
        now(),
    );
    let ready = ready_condition(&merged);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "ShardsPending");
    assert_eq!(
        ready.message,
        "waiting for shard(s) 1, 2 of 3 to report on generation 2"
    );
}

#[test]
fn every_shard_suspended_is_suspended() {
    let suspended = |projects| ShardStatus {
        conditions: vec![ready("True", "Suspended", "spec.suspend is true")],
        ..reconciled(projects, 0, T0)
    };
    let merged = merge(
        &entries(vec![(0, suspended(1)), (1, suspended(2))]),
        2,
        None,
        Some(2),
        now(),
    );
    assert_eq!(ready_condition(&merged).reason, "Suspended");
    assert_eq!(ready_condition(&merged).status, "True");
}

#[test]
fn the_transition_time_moves_only_when_the_merged_readiness_flips() {
    let previous = JobPolicyStatus {
        conditions: vec![ready("True", "Reconciled", "before")],
        ..JobPolicyStatus::default()
    };
    let all_ready = entries(vec![(0, reconciled(1, 0, T0)), (1, reconciled(1, 0, T0))]);
    let merged = merge(&all_ready, 2, Some(&previous), Some(2), now());
    assert_eq!(
        ready_condition(&merged).last_transition_time,
        at("2026-11-23T09:00:00Z")
    );
    let pending = entries(vec![(0, reconciled(1, 0, T0))]);
    let merged = merge(&pending, 2, Some(&previous), Some(2), now());
    assert_eq!(ready_condition(&merged).last_transition_time, at(T0));
}

#[test]
fn each_shard_starts_from_its_own_entry_and_shard_zero_inherits_the_history() {
    let before_sharding = JobPolicyStatus {
        observed_generation: Some(2),
        counters: ActionCounters {
            retried: 40,
            ..ActionCounters::default()
        },
        recent_actions: vec![action(7, T0)],
        ..JobPolicyStatus::default()
    };
    let zero = own_previous(Some(&before_sharding), shard(0, 3)).expect("the history");
    assert_eq!(zero.counters.retried, 40);
    assert_eq!(zero.recent_actions.len(), 1);
    assert_eq!(own_previous(Some(&before_sharding), shard(1, 3)), None);

    let sharded = JobPolicyStatus {
        shards: entries(vec![(0, reconciled(2, 41, T0)), (1, reconciled(3, 4, T0))]),
        ..before_sharding
    };
    let one = own_previous(Some(&sharded), shard(1, 3)).expect("its entry");
    assert_eq!((one.projects, one.counters.retried), (Some(3), 4));
    assert!(one.shards.is_empty());
    let zero = own_previous(Some(&sharded), shard(0, 3)).expect("its entry");
    assert_eq!(zero.counters.retried, 41, "its entry, not the top level");
    assert_eq!(own_previous(None, shard(2, 3)), None);
}
