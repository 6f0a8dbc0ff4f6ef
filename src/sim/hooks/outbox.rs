//! What the state machine leaves for the webhooks: every build transition GitLab fires a Job
//! Hook on, recorded as it happens (with the job as it was then), in the world, for the hub to
//! render and send once the world lock is about to be released.

use crate::sim::clock::SimTime;
use crate::sim::machine;
use crate::sim::state::{Job, JobKind, TagList};
use crate::sim::status::Status;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Which projects have at least one hook (so which transitions are worth recording).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Scope {
    /// No hook: nothing is recorded (also while the fleet's history is generated).
    #[default]
    Off,
    /// An instance or group hook: every project.
    All,
    Projects(BTreeSet<u64>),
}

impl Scope {
    pub fn covers(&self, project_id: u64) -> bool {
        match self {
            Scope::Off => false,
            Scope::All => true,
            Scope::Projects(ids) => ids.contains(&project_id),
        }
    }
}

/// A build as it was when it moved: the fields a Job Hook payload shows.
#[derive(Debug, Clone)]
pub(crate) struct HookJob {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub name: Arc<str>,
    pub stage: Arc<str>,
    pub status: Status,
    pub failure_reason: Option<String>,
    pub allow_failure: bool,
    pub user_id: u64,
    pub created_at: SimTime,
    pub queued_at: Option<SimTime>,
    pub started_at: Option<SimTime>,
    pub finished_at: Option<SimTime>,
    pub runner_id: Option<u64>,
    pub tag_list: TagList,
    /// When it moved (the job's `updated_at`).
    pub at: SimTime,
}

impl HookJob {
    fn of(job: &Job) -> HookJob {
        HookJob {
            id: job.id,
            project_id: job.project_id,
            pipeline_id: job.pipeline_id,
            name: Arc::clone(&job.name),
            stage: Arc::clone(&job.stage),
            status: job.status,
            failure_reason: job.failure_reason.clone(),
            allow_failure: job.allow_failure,
            user_id: job.user_id,
            created_at: job.created_at,
            queued_at: job.queued_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            runner_id: job.runner_id,
            tag_list: Arc::clone(&job.tag_list),
            at: job.updated_at,
        }
    }
}

/// The transitions recorded since the world was last handed to the hub.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    scope: Scope,
    events: Vec<HookJob>,
}

impl Outbox {
    /// Records that `job` was created (`from: None`) or moved from `from` to its current status,
    /// if GitLab fires a Job Hook for that and a hook covers the project. Bridges never fire
    /// (job hooks are `Ci::Build`'s).
    pub fn record(&mut self, job: &Job, from: Option<Status>) {
        if job.kind == JobKind::Build
            && self.scope.covers(job.project_id)
            && machine::fires_hook(from, job.status)
        {
            self.events.push(HookJob::of(job));
        }
    }

    pub fn set_scope(&mut self, scope: Scope) {
        if scope == Scope::Off {
            self.events.clear();
        }
        self.scope = scope;
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Takes the recorded transitions, oldest first.
    pub fn take(&mut self) -> Vec<HookJob> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::machine::tests::job;

    #[test]
    fn records_only_hooked_builds_and_hook_transitions() {
        let mut outbox = Outbox::default();
        let mut j = job(Status::Created);
        outbox.record(&j, None);
        assert!(outbox.is_empty(), "no hook, nothing recorded");

        outbox.set_scope(Scope::Projects(BTreeSet::from([2])));
        outbox.record(&j, None);
        assert!(outbox.is_empty(), "project 1 has no hook");

        outbox.set_scope(Scope::All);
        outbox.record(&j, None);
        machine::enqueue(&mut j, SimTime(5));
        outbox.record(&j, Some(Status::Created));
        outbox.record(&j, Some(Status::Pending));
        machine::skip(&mut j, SimTime(6));
        outbox.record(&j, Some(Status::Pending));
        let mut bridge = job(Status::Pending);
        bridge.kind = JobKind::Bridge;
        outbox.record(&bridge, None);
        let recorded: Vec<(Status, SimTime)> =
            outbox.take().iter().map(|e| (e.status, e.at)).collect();
        assert_eq!(
            recorded,
            [(Status::Created, SimTime(0)), (Status::Pending, SimTime(5))]
        );
        assert!(outbox.is_empty());
    }
}
