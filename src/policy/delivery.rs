//! Which Job Hook deliveries are worth a read of their job (`GET /projects/:id/jobs/:job_id`).
//!
//! A delivery is authenticated but never trusted for a decision: what it says only spares
//! reads. Sparing one is safe because nothing is ever decided on what was not read, and the
//! resync (a full listing every `resyncInterval`) catches whatever a skipped delivery told:
//! - a job that is not held is decided on only once a read or a listing brings it in;
//! - a held job whose delivery said something else than what is held is marked *stale*
//!   ([`DeliveryNeed::Stale`]): the engine reads it before any decision on it, so a person's
//!   play of a manual job is seen before a play rule could play it again.
//!
//! A delivery is read at once ([`DeliveryNeed::Read`]) when some rule of a policy watching the
//! project could act on the job *now* as the delivery describes it ([`delivery_need`]), or when
//! the job would make a held unfinished job `superseded`.

use super::compile::{CompiledPolicy, CompiledRule, GlobList, JobGlobs};
use super::observation::ProjectJobs;
use crate::gitlab::models::JobStatus;
use crate::gitlab::records::JobRecord;
use jiff::Timestamp;
use std::sync::Arc;

/// One status a job was delivered with, and the failure reason delivered with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveredMove {
    /// `build_status`; `None` when the delivery named none.
    pub status: Option<JobStatus>,
    /// `build_failure_reason`.
    pub failure_reason: Option<String>,
}

/// What a delivery says about the job that does not change while it lives: name, stage, ref,
/// tag, `allow_failure`, creation, pipeline. Each is `None` when not delivered (or when two
/// deliveries disagreed): nothing is then spared on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveredFacts {
    pub name: Option<String>,
    pub stage: Option<String>,
    pub git_ref: Option<String>,
    pub tag: Option<bool>,
    pub allow_failure: Option<bool>,
    pub created_at: Option<Timestamp>,
    pub pipeline_id: Option<u64>,
}

impl DeliveredFacts {
    /// Keeps what both deliveries agree on.
    pub fn merge(&mut self, other: &DeliveredFacts) {
        fn agree<T: PartialEq>(mine: &mut Option<T>, theirs: &Option<T>) {
            if mine != theirs {
                *mine = None;
            }
        }
        agree(&mut self.name, &other.name);
        agree(&mut self.stage, &other.stage);
        agree(&mut self.git_ref, &other.git_ref);
        agree(&mut self.tag, &other.tag);
        agree(&mut self.allow_failure, &other.allow_failure);
        agree(&mut self.created_at, &other.created_at);
        agree(&mut self.pipeline_id, &other.pipeline_id);
    }
}

/// One Job Hook delivery, as the engine is told of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDelivery {
    pub moved: DeliveredMove,
    pub facts: DeliveredFacts,
}

impl JobDelivery {
    /// A delivery that says only the job's status.
    pub fn of_status(status: Option<JobStatus>) -> JobDelivery {
        JobDelivery {
            moved: DeliveredMove {
                status,
                failure_reason: None,
            },
            facts: DeliveredFacts::default(),
        }
    }
}

/// A job delivered since its project was last looked at: every status it was delivered with,
/// and the facts the deliveries agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredJob {
    pub job_id: u64,
    pub moves: Vec<DeliveredMove>,
    pub facts: DeliveredFacts,
}

/// What a delivered job costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNeed {
    /// Read it now: a rule could act on it, or on a job it supersedes.
    Read,
    /// Not read now, but jobwarden holds it in another status: read it before any decision on
    /// it (or wait for the next listing, which refreshes it).
    Stale,
    /// Nothing to do: the delivery tells nothing a rule could act on, and nothing about a held
    /// job that is not known.
    Nothing,
}

/// Whether a delivered job must be read, given the policies watching its project, what
/// jobwarden holds about the project (`jobs`) and the clock.
///
/// Read when, for some status it was delivered with:
/// - the status is missing or unknown to jobwarden;
/// - a rule of a watching policy could act on the job now as delivered: `spec.jobs`, the rule's
///   `statuses` and the action's own statuses, `failureReasons`, `refs`/`names`/`stages`,
///   `tag`, `allowFailure`, `window` (open now), `olderThan` (a job created less than that ago
///   has not been in any state that long) and `superseded` (a newer pipeline of the same
///   name and ref is known, or, for `false`, is not) hold for what was delivered, with the
///   held record filling in what the delivery left out; conditions of the pipeline, the log
///   and the artifacts are taken to hold;
/// - a rule with `superseded` watches and the job, not held and of a pipeline newer than any
///   known for its name and ref, would supersede a held unfinished job.
///
/// Otherwise a held job delivered in a status other than the held one is
/// [`Stale`](DeliveryNeed::Stale), and anything else costs [`Nothing`](DeliveryNeed::Nothing).
pub fn delivery_need(
    policies: &[Arc<CompiledPolicy>],
    delivered: &DeliveredJob,
    jobs: &ProjectJobs,
    now: Timestamp,
) -> DeliveryNeed {
    let unknown = |m: &DeliveredMove| matches!(m.status, None | Some(JobStatus::Other(_)));
    if delivered.moves.is_empty() || delivered.moves.iter().any(unknown) {
        return DeliveryNeed::Read;
    }
    let held = jobs.get(delivered.job_id);
    if let Some(held) = held
        && delivered
            .moves
            .iter()
            .all(|m| m.status.as_ref() == Some(&held.status))
    {
        // Nothing GitLab said since is news (a late or repeated delivery).
        return DeliveryNeed::Nothing;
    }
    let facts = Facts::of(delivered, jobs);
    let actionable = delivered.moves.iter().any(|moved| {
        policies.iter().any(|policy| {
            !policy.suspend
                && facts.pass(&policy.filter)
                && policy
                    .rules
                    .iter()
                    .any(|rule| rule_could_act(rule, moved, &facts, jobs, now))
        })
    });
    if actionable || (held.is_none() && supersedes_held(policies, &facts, jobs)) {
        return DeliveryNeed::Read;
    }
    if held.is_some() {
        DeliveryNeed::Stale
    } else {
        DeliveryNeed::Nothing
    }
}

/// The facts of a delivered job: the held record's when it is held (they never change), else
/// the delivery's.
struct Facts<'a> {
    name: Option<&'a str>,
    stage: Option<&'a str>,
    git_ref: Option<&'a str>,
    tag: Option<bool>,
    allow_failure: Option<bool>,
    created_at: Option<Timestamp>,
    pipeline_id: Option<u64>,
}

impl<'a> Facts<'a> {
    fn of(delivered: &'a DeliveredJob, jobs: &'a ProjectJobs) -> Facts<'a> {
        let d = &delivered.facts;
        match jobs.get(delivered.job_id) {
            Some(held) => Facts {
                name: Some(held.name()),
                stage: Some(held.stage()),
                git_ref: Some(held.git_ref()),
                tag: Some(held.tag),
                allow_failure: Some(held.allow_failure),
                created_at: Some(held.created_at().get()),
                pipeline_id: Some(held.pipeline_id),
            },
            None => Facts {
                name: d.name.as_deref(),
                stage: d.stage.as_deref(),
                git_ref: d.git_ref.as_deref(),
                tag: d.tag,
                allow_failure: d.allow_failure,
                created_at: d.created_at,
                pipeline_id: d.pipeline_id,
            },
        }
    }

    /// False only when a glob list that is present matches none of the known values.
    fn pass(&self, globs: &JobGlobs) -> bool {
        let pass = |list: &Option<GlobList>, value: Option<&str>| match (list, value) {
            (Some(list), Some(value)) => list.matches(value),
            _ => true,
        };
        pass(&globs.refs, self.git_ref)
            && pass(&globs.names, self.name)
            && pass(&globs.stages, self.stage)
    }

    /// The newest pipeline of the job's name and ref that jobwarden knows of, when the facts
    /// name them.
    fn key(&self) -> Option<(bool, &'a str, &'a str)> {
        Some((self.tag?, self.git_ref?, self.name?))
    }
}

/// True when `rule` could act now on a job delivered as `moved` with `facts`.
fn rule_could_act(
    rule: &CompiledRule,
    moved: &DeliveredMove,
    facts: &Facts<'_>,
    jobs: &ProjectJobs,
    now: Timestamp,
) -> bool {
    let Some(status) = &moved.status else {
        return true;
    };
    let c = &rule.conditions;
    if !c.statuses.is_empty() && !c.statuses.contains(status) {
        return false;
    }
    if rule
        .action
        .applicable_statuses()
        .is_some_and(|statuses| !statuses.contains(status))
    {
        return false;
    }
    if let Some(reasons) = &c.failure_reasons {
        let reason_ok = moved
            .failure_reason
            .as_deref()
            .is_none_or(|r| reasons.matches(r));
        if *status != JobStatus::Failed || !reason_ok {
            return false;
        }
    }
    if !facts.pass(&c.globs) {
        return false;
    }
    let differs =
        |want: Option<bool>, got: Option<bool>| want.zip(got).is_some_and(|(w, g)| w != g);
    if differs(c.tag, facts.tag) || differs(c.allow_failure, facts.allow_failure) {
        return false;
    }
    // Every state of a job begins at or after its creation: one created less than `olderThan`
    // ago has not been in any state that long.
    if let (Some(min_age), Some(created)) = (c.older_than, facts.created_at)
        && now.duration_since(created) < min_age
    {
        return false;
    }
    if let (Some(want), Some((tag, git_ref, name)), Some(pipeline)) =
        (c.superseded, facts.key(), facts.pipeline_id)
    {
        let superseded = jobs
            .newest_pipeline_of(tag, git_ref, name)
            .is_some_and(|newest| newest > pipeline);
        if superseded != want {
            return false;
        }
    }
    if c.window.as_ref().is_some_and(|w| !w.contains(now)) {
        return false;
    }
    true
}

/// True when the job, of a pipeline newer than any known for its name and ref, would supersede
/// a held unfinished job that a rule with `superseded` could act on but for that condition (or
/// when the delivery does not tell its name, ref or pipeline).
fn supersedes_held(
    policies: &[Arc<CompiledPolicy>],
    facts: &Facts<'_>,
    jobs: &ProjectJobs,
) -> bool {
    let rules: Vec<(&CompiledPolicy, &CompiledRule)> = policies
        .iter()
        .filter(|p| !p.suspend)
        .flat_map(|p| p.rules.iter().map(move |r| (&**p, r)))
        .filter(|(_, r)| r.conditions.superseded.is_some())
        .collect();
    if rules.is_empty() {
        return false;
    }
    let (Some((tag, git_ref, name)), Some(pipeline)) = (facts.key(), facts.pipeline_id) else {
        return true;
    };
    if jobs
        .newest_pipeline_of(tag, git_ref, name)
        .is_some_and(|newest| newest >= pipeline)
    {
        // Whatever it supersedes is superseded already.
        return false;
    }
    jobs.newest_first().any(|held| {
        !held.status.is_completed()
            && held.pipeline_id < pipeline
            && held.tag == tag
            && *held.git_ref() == *git_ref
            && *held.name() == *name
            && rules
                .iter()
                .any(|(policy, rule)| policy.filter.matches(held) && held_may_match(rule, held))
    })
}

/// The conditions of `rule` that a held job's own fields decide, and the action's statuses.
fn held_may_match(rule: &CompiledRule, held: &JobRecord) -> bool {
    let c = &rule.conditions;
    let reason_ok = c
        .failure_reasons
        .as_ref()
        .is_none_or(|reasons| held.failure_reason().is_some_and(|r| reasons.matches(r)));
    (c.statuses.is_empty() || c.statuses.contains(&held.status))
        && rule
            .action
            .applicable_statuses()
            .is_none_or(|statuses| statuses.contains(&held.status))
        && reason_ok
        && c.globs.matches(held)
        && c.tag.is_none_or(|tag| held.tag == tag)
        && c.allow_failure.is_none_or(|a| held.allow_failure == a)
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
