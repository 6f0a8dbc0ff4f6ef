//! A policy's `/status` when several shards reconcile it, computed without any I/O.
//!
//! With project sharding every shard reconciles every policy, each over its own projects. So
//! that no two replicas write the same field:
//! - shard `I` writes only its own entry, `status.shards["I"]`, with a JSON merge patch naming
//!   only that key (a merge patch leaves the other keys of a map alone);
//! - shard 0 also writes the top-level fields (`conditions`, `projects`, `counters`,
//!   `recentActions`, `lastSyncTime`, `observedGeneration`), as the [`merge`] of the entries it
//!   reads from the policy and its own fresh entry.
//!
//! With one shard nothing changes: the whole status is the replica's, as before.
//!
//! Each shard computes its entry with the functions of [`super::status`], from its previous
//! entry ([`own_previous`]); shard 0 starts from the top-level status when it has no entry yet,
//! so counters and recent actions written before sharding carry over.

use super::status::{READY, ReadyReason, merge_recent_records, ready_condition_named};
use crate::crd::{ActionCounters, JobPolicyStatus, ShardStatus};
use crate::engine::Shard;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// The key of a shard's entry in `status.shards`: its index in decimal.
pub fn entry_key(index: u32) -> String {
    index.to_string()
}

/// What this shard reported last, as the status functions take it: with one shard, the
/// policy's status; with several, the shard's entry, or for shard 0 without one the top-level
/// status (its history carries over into shard 0's entry).
pub fn own_previous(object: Option<&JobPolicyStatus>, shard: Shard) -> Option<JobPolicyStatus> {
    let object = object?;
    if shard.is_everything() {
        return Some(object.clone());
    }
    match object.shards.get(&entry_key(shard.index())) {
        Some(entry) => Some(entry.clone().into()),
        None if shard.index() == 0 => Some(JobPolicyStatus {
            shards: BTreeMap::new(),
            ..object.clone()
        }),
        None => None,
    }
}

/// The JSON merge patch (for `/status`) that writes this shard's new report `own`: the whole
/// status with one shard; else its entry, plus for shard 0 the top-level fields merged from
/// the entries of `object` (the policy as last read) with `own` in place of its own.
pub fn patch(
    shard: Shard,
    own: &JobPolicyStatus,
    object: Option<&JobPolicyStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> serde_json::Value {
    if shard.is_everything() {
        return serde_json::json!({ "status": own });
    }
    let key = entry_key(shard.index());
    let entry = ShardStatus::from(JobPolicyStatus {
        shards: BTreeMap::new(),
        ..own.clone()
    });
    let mut status = if shard.index() == 0 {
        let mut entries = object.map(|o| o.shards.clone()).unwrap_or_default();
        entries.insert(key.clone(), entry.clone());
        let merged = merge(&entries, shard.count(), object, generation, now);
        serde_json::to_value(merged).unwrap_or_else(|_| serde_json::json!({}))
    } else {
        serde_json::json!({})
    };
    status["shards"] = serde_json::json!({ key: entry });
    serde_json::json!({ "status": status })
}

/// The top-level status of a policy reconciled by `count` shards, from their `entries`:
/// - `projects`: the sum over the current shards (`0..count`);
/// - `counters`: the sum over every entry, also those of shards a smaller count left behind
///   (their actions happened);
/// - `recentActions`: every entry's, newest first, at most 20;
/// - `lastSyncTime`: the oldest of the current shards' (every project was synced since);
/// - `Ready`: False with a shard's reason when a current shard is not ready on this
///   `generation` (the first by index, message prefixed `shard I: `); False `ShardsPending`
///   while a current shard has not reported on it; else True (`Reconciled`, or `Suspended`
///   when every shard is), the message listing each shard's.
pub fn merge(
    entries: &BTreeMap<String, ShardStatus>,
    count: u32,
    previous: Option<&JobPolicyStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> JobPolicyStatus {
    let previous = previous.cloned().unwrap_or_default();
    let current: Vec<(u32, Option<&ShardStatus>)> = (0..count)
        .map(|index| (index, entries.get(&entry_key(index))))
        .collect();
    let reported: Vec<(u32, &ShardStatus)> = current
        .iter()
        .filter_map(|(index, entry)| entry.map(|e| (*index, e)))
        .collect();
    let projects = reported
        .iter()
        .filter_map(|(_, e)| e.projects)
        .reduce(u64::saturating_add);
    let counters = entries
        .values()
        .fold(ActionCounters::default(), |sum, e| add(&sum, &e.counters));
    let recent_actions =
        merge_recent_records(entries.values().map(|e| e.recent_actions.as_slice()));
    let last_sync_time = reported
        .iter()
        .filter_map(|(_, e)| e.last_sync_time.clone())
        .min_by_key(|t| t.0);
    let (ready, reason, message) = ready_summary(&current, generation);
    JobPolicyStatus {
        observed_generation: generation,
        conditions: vec![ready_condition_named(
            &previous, ready, &reason, message, generation, now,
        )],
        last_sync_time,
        projects,
        counters,
        recent_actions,
        shards: BTreeMap::new(),
    }
}

/// Whether the current shards are ready on `generation`, why, and what they say.
fn ready_summary(
    current: &[(u32, Option<&ShardStatus>)],
    generation: Option<i64>,
) -> (bool, String, String) {
    let on_generation = |entry: &ShardStatus| {
        entry
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .filter(|_| entry.observed_generation == generation)
            .cloned()
    };
    let mut failing = Vec::new();
    let mut pending = Vec::new();
    let mut ready = Vec::new();
    for (index, entry) in current {
        match entry.and_then(on_generation) {
            None => pending.push(*index),
            Some(condition) if condition.status == "True" => ready.push((*index, condition)),
            Some(condition) => failing.push((*index, condition)),
        }
    }
    if let Some((index, condition)) = failing.first() {
        let more = match failing.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more shards not ready)"),
        };
        let message = format!("shard {index}: {}{more}", condition.message);
        return (false, condition.reason.clone(), message);
    }
    if !pending.is_empty() {
        let list: Vec<String> = pending.iter().map(u32::to_string).collect();
        let on = generation.map_or_else(String::new, |g| format!(" on generation {g}"));
        let message = format!(
            "waiting for shard(s) {} of {} to report{on}",
            list.join(", "),
            current.len()
        );
        return (
            false,
            ReadyReason::ShardsPending.as_str().to_owned(),
            message,
        );
    }
    let suspended = ReadyReason::Suspended.as_str();
    let reason = if ready.iter().all(|(_, c)| c.reason == suspended) {
        suspended
    } else {
        ReadyReason::Reconciled.as_str()
    };
    let parts: Vec<String> = ready
        .iter()
        .map(|(index, c)| format!("shard {index}: {}", c.message))
        .collect();
    (true, reason.to_owned(), parts.join("; "))
}

fn add(a: &ActionCounters, b: &ActionCounters) -> ActionCounters {
    ActionCounters {
        retried: a.retried.saturating_add(b.retried),
        canceled: a.canceled.saturating_add(b.canceled),
        played: a.played.saturating_add(b.played),
        artifacts_kept: a.artifacts_kept.saturating_add(b.artifacts_kept),
        skipped_over_budget: a.skipped_over_budget.saturating_add(b.skipped_over_budget),
    }
}

#[cfg(test)]
#[path = "shard_status_tests.rs"]
mod tests;
