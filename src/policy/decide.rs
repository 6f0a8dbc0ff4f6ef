//! The decision function: compiled policy + observed jobs + clock → decisions. Pure: no I/O,
//! no memory between calls; every decision derives from GitLab's state and `now`, so a restart
//! or a second replica decides the same.
//!
//! # Rounds
//! Some conditions need data that costs a request per pipeline or per job: the pipeline's job
//! list (retry attempt counts, the latest-attempt check, `pipeline.stagesSucceeded`) and the job
//! log (`logPattern`). The engine loops: [`facts_needed()`] → fetch → … until it returns nothing,
//! then [`decide()`]. Facts are asked for in tiers, only for the first rule still undecided for a
//! job, and only when everything cheaper already matched: first the job's own fields and the
//! project job list, then the pipeline's job list, then the log. A retry rule counts attempts
//! from the project job list when that list is known to hold every attempt
//! ([`ProjectJobs::attempts_of`]), and asks for the pipeline's job list only when it is not.
//!
//! # Semantics
//! - A job passes `spec.jobs` first, then rules are tried in order. A rule applies to a job when
//!   all its conditions hold **and** its action can apply (retry: the job is retryable, is the
//!   latest attempt and has retries left; cancel: still cancelable; play: still manual or
//!   scheduled; keepArtifacts: an expiry is still set). The first rule that applies decides; a
//!   job gets at most one decision. A rule whose action cannot apply does not claim the job.
//! - Budget: decisions that would act are ordered by rule (earlier rules first), then oldest job
//!   first (`created_at`, then id); the first `min(remaining_this_run, remaining_this_hour)` get
//!   [`Verdict::Act`] (or [`Verdict::DryRun`]), the rest [`Verdict::OverBudget`]. Dry-run
//!   decisions count against the budget too, so a dry run previews exactly what a real run
//!   would do. Decisions waiting for backoff or facts use no budget.
//! - Decisions are returned in the same order.

use super::compile::{BackoffSchedule, CompiledPolicy, CompiledRule, RuleAction};
use super::conditions;
use super::duration::HumanDuration;
use super::observation::{Observation, ProjectJobs};
use crate::crd::{ActionKind, Limits};
use crate::gitlab::models::{JobStatus, ProjectRef};
use crate::gitlab::records::JobRecord;
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A piece of data `decide` needs before it can decide about some job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FactRequest {
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true` (all pages).
    PipelineJobs {
        project: ProjectRef,
        pipeline_id: u64,
    },
    /// The tail of `GET /projects/:id/jobs/:job_id/trace`.
    LogTail { project: ProjectRef, job_id: u64 },
}

/// How many actions the policy may still take, computed by the engine from `spec.limits` and
/// its history of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub remaining_this_run: u32,
    pub remaining_this_hour: u32,
}

impl Budget {
    /// The budget of a run: the per-run limit, and what is left of the hourly limit after
    /// `actions_in_last_hour` actions.
    pub fn for_run(limits: &Limits, actions_in_last_hour: u32) -> Budget {
        Budget {
            remaining_this_run: limits.max_actions_per_run,
            remaining_this_hour: limits
                .max_actions_per_hour
                .saturating_sub(actions_in_last_hour),
        }
    }

    /// How many decisions may act.
    pub fn allowance(&self) -> u32 {
        self.remaining_this_run.min(self.remaining_this_hour)
    }
}

/// What to do to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Retry,
    Cancel,
    Play { variables: Vec<(String, String)> },
    KeepArtifacts,
}

impl Action {
    /// The kind, as recorded in status.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Retry => ActionKind::Retry,
            Action::Cancel => ActionKind::Cancel,
            Action::Play { .. } => ActionKind::Play,
            Action::KeepArtifacts => ActionKind::KeepArtifacts,
        }
    }

    fn of(rule: &RuleAction) -> Action {
        match rule {
            RuleAction::Retry { .. } => Action::Retry,
            RuleAction::Cancel => Action::Cancel,
            RuleAction::Play { variables } => Action::Play {
                variables: variables.clone(),
            },
            RuleAction::KeepArtifacts => Action::KeepArtifacts,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().as_str())
    }
}

/// Whether and when a decision acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Act now.
    Act,
    /// Would act, but the policy is in dry-run.
    DryRun,
    /// Would act, but a limit is reached; decided again next run.
    OverBudget,
    /// The retry backoff has not elapsed; act no earlier than this.
    NotBefore(Timestamp),
    /// A needed fact (pipeline job list, job log) is missing.
    AwaitingFacts,
}

/// A decision about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub project: ProjectRef,
    pub job_id: u64,
    pub job_name: String,
    pub pipeline_id: u64,
    /// The rule that decided.
    pub rule: String,
    pub action: Action,
    /// Why, for people: e.g. `failed with stuck_or_timeout_failure; attempt 2 of 4, backoff 1m elapsed`.
    pub reason: String,
    pub verdict: Verdict,
}

/// The facts still missing before [`decide()`] can decide about every job, deduplicated, in the
/// order jobs are evaluated. Empty when the policy is suspended.
pub fn facts_needed(
    policy: &CompiledPolicy,
    observations: &[Observation<'_>],
    now: Timestamp,
) -> Vec<FactRequest> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for eval in evaluate(policy, observations, now) {
        if let State::Awaiting(fact) = eval.state
            && seen.insert(fact.clone())
        {
            out.push(fact);
        }
    }
    out
}

/// Decides what to do with the observed jobs. Returns nothing when the policy is suspended.
pub fn decide(
    policy: &CompiledPolicy,
    observations: &[Observation<'_>],
    now: Timestamp,
    budget: &Budget,
) -> Vec<Decision> {
    let mut evals = evaluate(policy, observations, now);
    evals.sort_by(|a, b| {
        (a.rule_index, a.created_at, a.job_id).cmp(&(b.rule_index, b.created_at, b.job_id))
    });
    let mut allowance = budget.allowance();
    let over_budget_note = if budget.remaining_this_run <= budget.remaining_this_hour {
        "over budget: limits.maxActionsPerRun reached for this run"
    } else {
        "over budget: limits.maxActionsPerHour reached"
    };
    evals
        .into_iter()
        .map(|eval| {
            let rule = &policy.rules[eval.rule_index];
            let mut reason = eval.reason;
            let verdict = match eval.state {
                State::Awaiting(_) => Verdict::AwaitingFacts,
                State::NotBefore(t) => Verdict::NotBefore(t),
                State::Ready if allowance > 0 => {
                    allowance -= 1;
                    if policy.dry_run {
                        Verdict::DryRun
                    } else {
                        Verdict::Act
                    }
                }
                State::Ready => {
                    reason.push_str("; ");
                    reason.push_str(over_budget_note);
                    Verdict::OverBudget
                }
            };
            Decision {
                project: eval.project,
                job_id: eval.job_id,
                job_name: eval.job_name,
                pipeline_id: eval.pipeline_id,
                rule: rule.name.clone(),
                action: Action::of(&rule.action),
                reason,
                verdict,
            }
        })
        .collect()
}

/// Where the evaluation of one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The rule applies now.
    Ready,
    /// The rule applies once the backoff elapsed.
    NotBefore(Timestamp),
    /// The rule's cheaper conditions hold; this fact decides the rest.
    Awaiting(FactRequest),
}

/// The first rule that claims a job, and how far it got.
struct Evaluation {
    project: ProjectRef,
    job_id: u64,
    job_name: String,
    pipeline_id: u64,
    created_at: Timestamp,
    rule_index: usize,
    reason: String,
    state: State,
}

fn evaluate(
    policy: &CompiledPolicy,
    observations: &[Observation<'_>],
    now: Timestamp,
) -> Vec<Evaluation> {
    if policy.suspend {
        return Vec::new();
    }
    // A project observed twice (listed twice, say) has each job evaluated once: a job is
    // skipped when an earlier observation of its project holds it. Looked up per project, not
    // per job, so the common case (every project once) costs no lookup per job.
    let mut earlier: HashMap<&ProjectRef, Vec<&ProjectJobs>> = HashMap::new();
    let mut out = Vec::new();
    for obs in observations {
        let before = earlier.entry(obs.project).or_default();
        for job in obs.jobs.newest_first() {
            if before.iter().any(|jobs| jobs.get(job.id).is_some()) || !policy.filter.matches(job) {
                continue;
            }
            if let Some(eval) = evaluate_job(policy, obs, job, now) {
                out.push(eval);
            }
        }
        before.push(obs.jobs);
    }
    out
}

/// How far back jobs are looked at: rules with `artifactsExpireWithin` look back as far as
/// artifacts can live, the others over the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The moment this reach is of.
    pub now: Timestamp,
    /// Jobs created before this are out of reach of rules without `artifactsExpireWithin`.
    pub history_start: Timestamp,
    /// Jobs created before this are out of reach of every rule.
    pub artifacts_start: Timestamp,
}

impl Reach {
    /// Where `rule` stops looking back.
    fn start_for(&self, rule: &CompiledRule) -> Timestamp {
        if rule.conditions.artifacts_expire_within.is_some() {
            self.artifacts_start
        } else {
            self.history_start
        }
    }
}

/// True when some rule of `policy` may act on `job`, now or later: the job is within the rule's
/// reach, passes `spec.jobs`, the conditions of the rule that only the job's own fields decide
/// hold, `finishedWithin` (which can only stop holding) has not run out, and the rule's action
/// can still apply to it. The other conditions of time (`olderThan`, windows,
/// `artifactsExpireWithin`), of the pipeline and of the log may come to hold later and are
/// taken to hold. The engine keeps a finished job only while this is true for a policy that
/// watches its project.
pub fn may_act_on(
    policy: &CompiledPolicy,
    jobs: &ProjectJobs,
    job: &JobRecord,
    reach: &Reach,
) -> bool {
    earliest_action(policy, jobs, job, reach).is_some()
}

/// The earliest moment some rule of `policy` may act on `job`, if any may
/// ([`may_act_on`]): [`Timestamp::MIN`] when it may be at any time, and for a rule that only
/// `artifactsExpireWithin` holds back, the moment the artifacts come within that window. The
/// engine need not hold a job in memory until then.
pub fn earliest_action(
    policy: &CompiledPolicy,
    jobs: &ProjectJobs,
    job: &JobRecord,
    reach: &Reach,
) -> Option<Timestamp> {
    if policy.suspend || !policy.filter.matches(job) {
        return None;
    }
    policy
        .rules
        .iter()
        .filter(|rule| rule_may_act_on(rule, jobs, job, reach))
        // Artifacts that expired are gone for good: nothing to keep, now or later.
        .filter(|rule| {
            rule.conditions.artifacts_expire_within.is_none()
                || job
                    .artifacts_expire_at()
                    .is_some_and(|t| t.get() > reach.now)
        })
        .map(|rule| {
            match (
                rule.conditions.artifacts_expire_within,
                job.artifacts_expire_at(),
            ) {
                (Some(within), Some(expires)) => {
                    expires.get().checked_sub(within).unwrap_or(Timestamp::MIN)
                }
                _ => Timestamp::MIN,
            }
        })
        .min()
}

/// [`may_act_on`] for one rule.
fn rule_may_act_on(
    rule: &CompiledRule,
    jobs: &ProjectJobs,
    job: &JobRecord,
    reach: &Reach,
) -> bool {
    job.created_at().get() >= reach.start_for(rule)
        && conditions::fields_hold(&rule.conditions, job)
        && !conditions::finished_too_long_ago(&rule.conditions, job, reach.now)
        && action_applies_to_job(&rule.action, job, jobs)
}

/// The first rule of `policy` that claims `job`, and how far it got; `None` when no rule does.
fn evaluate_job(
    policy: &CompiledPolicy,
    obs: &Observation<'_>,
    job: &JobRecord,
    now: Timestamp,
) -> Option<Evaluation> {
    policy
        .rules
        .iter()
        .enumerate()
        .find_map(|(rule_index, rule)| {
            let (why, state) = try_rule(policy, obs, rule, job, now)?;
            Some(Evaluation {
                project: obs.project.clone(),
                job_id: job.id,
                job_name: job.name().to_string(),
                pipeline_id: job.pipeline_id,
                created_at: job.created_at().get(),
                rule_index,
                reason: why.join("; "),
                state,
            })
        })
}

/// How one tier of a rule's conditions came out for a job.
enum Tier<T> {
    /// The conditions hold; `T` is what they found out.
    Holds(T),
    /// This fact is missing to tell: the rule claims the job while it is fetched.
    Awaiting(FactRequest),
    /// The conditions do not hold: the rule does not claim the job.
    Fails,
}

/// Tries one rule on a job, tier by tier, cheapest first. `None` when the rule does not claim
/// the job; else why it does and how far it got.
fn try_rule(
    policy: &CompiledPolicy,
    obs: &Observation<'_>,
    rule: &CompiledRule,
    job: &JobRecord,
    now: Timestamp,
) -> Option<(Vec<String>, State)> {
    // Tier 0: the job's own fields, the project job list and the clock. Most jobs fail here,
    // so the notes saying why a rule claims a job are written only for those it claims.
    if !conditions::hold(&rule.conditions, job, obs.jobs, now)
        || !action_applies_to_job(&rule.action, job, obs.jobs)
    {
        return None;
    }
    let mut why = conditions::notes(&rule.conditions, job, obs.jobs, now);
    // Tier 1: the pipeline's job list.
    let attempt = match pipeline_conditions(policy, obs, rule, job, &mut why) {
        Tier::Holds(attempt) => attempt,
        Tier::Awaiting(fact) => return Some((why, State::Awaiting(fact))),
        Tier::Fails => return None,
    };
    // Tier 2: the job log.
    match log_condition(policy, obs, rule, job, &mut why) {
        Tier::Holds(()) => {}
        Tier::Awaiting(fact) => return Some((why, State::Awaiting(fact))),
        Tier::Fails => return None,
    }
    // Timing: the retry backoff.
    let state = match (&rule.action, attempt) {
        (RuleAction::Retry { backoff, .. }, Some(attempt)) => {
            retry_timing(backoff.as_ref(), attempt, job, now, &mut why)
        }
        _ => State::Ready,
    };
    Some((why, state))
}

/// Tier 1: the conditions that need the pipeline's job list: `pipeline.stagesSucceeded`, and a
/// retry's attempt count unless the project job list already counted every attempt of the job.
/// Holds with `(attempt, limit)` for a retry rule; notes what holds in `why`.
fn pipeline_conditions(
    policy: &CompiledPolicy,
    obs: &Observation<'_>,
    rule: &CompiledRule,
    job: &JobRecord,
    why: &mut Vec<String>,
) -> Tier<Option<(u32, u32)>> {
    let retry_limit = match rule.action {
        RuleAction::Retry { limit, .. } => Some(limit),
        _ => None,
    };
    let counted = retry_limit.and_then(|_| obs.jobs.attempts_of(job));
    let needs_pipeline = !rule.conditions.stages_succeeded.is_empty()
        || (retry_limit.is_some() && counted.is_none());
    let pipeline_jobs = obs.pipeline_jobs.get(&job.pipeline_id).map(Vec::as_slice);
    if needs_pipeline && pipeline_jobs.is_none() {
        why.push(format!(
            "waiting for the job list of pipeline #{}",
            job.pipeline_id
        ));
        return Tier::Awaiting(FactRequest::PipelineJobs {
            project: obs.project.clone(),
            pipeline_id: job.pipeline_id,
        });
    }
    if !rule.conditions.stages_succeeded.is_empty()
        && let Some(pipeline_jobs) = pipeline_jobs
    {
        match stages_succeeded(&rule.conditions.stages_succeeded, job, pipeline_jobs) {
            Ok(note) => why.push(note),
            Err(not) => {
                skipped(policy, rule, job, &not);
                return Tier::Fails;
            }
        }
    }
    let Some(limit) = retry_limit else {
        return Tier::Holds(None);
    };
    match attempt_within_limit(policy, rule, job, limit, counted, pipeline_jobs) {
        Some(n) => Tier::Holds(Some((n, limit))),
        None => Tier::Fails,
    }
}

/// The attempt number of a job that a retry rule with `limit` may still retry. Counted from the
/// project job list when complete (`counted`); else from the pipeline's (which is then present:
/// it was waited for). `None` when the limit is reached or a newer attempt exists.
fn attempt_within_limit(
    policy: &CompiledPolicy,
    rule: &CompiledRule,
    job: &JobRecord,
    limit: u32,
    counted: Option<u32>,
    pipeline_jobs: Option<&[JobRecord]>,
) -> Option<u32> {
    let number = match (counted, pipeline_jobs) {
        (Some(n), _) => Some(n),
        (None, Some(pipeline_jobs)) => retry_attempt(job, pipeline_jobs),
        (None, None) => return None,
    };
    match number {
        Some(n) if n - 1 < limit => Some(n),
        Some(n) => {
            skipped(
                policy,
                rule,
                job,
                &format!("retry limit {limit} reached (attempt {n})"),
            );
            None
        }
        None => {
            skipped(policy, rule, job, "a newer attempt of the job exists");
            None
        }
    }
}

/// Tier 2: `logPattern` against the job log's tail; notes the match in `why`.
fn log_condition(
    policy: &CompiledPolicy,
    obs: &Observation<'_>,
    rule: &CompiledRule,
    job: &JobRecord,
    why: &mut Vec<String>,
) -> Tier<()> {
    let Some(pattern) = &rule.conditions.log_pattern else {
        return Tier::Holds(());
    };
    let Some(log) = obs.log_tails.get(&job.id) else {
        why.push("waiting for the job log".to_owned());
        return Tier::Awaiting(FactRequest::LogTail {
            project: obs.project.clone(),
            job_id: job.id,
        });
    };
    if !pattern.is_match(log) {
        skipped(policy, rule, job, "the log does not match logPattern");
        return Tier::Fails;
    }
    why.push(format!("log matches /{}/", pattern.as_str()));
    Tier::Holds(())
}

/// When attempt `n` of a retry rule with `limit` may be retried: [`State::NotBefore`] while its
/// `backoff` (counted from when the job finished) has not elapsed. Notes the attempt and the
/// backoff in `why`.
fn retry_timing(
    backoff: Option<&BackoffSchedule>,
    (n, limit): (u32, u32),
    job: &JobRecord,
    now: Timestamp,
    why: &mut Vec<String>,
) -> State {
    let mut state = State::Ready;
    let mut note = format!("attempt {n} of {}", limit + 1);
    if let Some(backoff) = backoff {
        let delay = backoff.delay(n);
        let finished = job
            .finished_at()
            .or(job.started_at())
            .unwrap_or(job.created_at())
            .get();
        let earliest = finished.checked_add(delay).unwrap_or(Timestamp::MAX);
        if now < earliest {
            note.push_str(&format!(
                ", backoff {} until {}",
                HumanDuration(delay),
                earliest
            ));
            state = State::NotBefore(earliest);
        } else {
            note.push_str(&format!(", backoff {} elapsed", HumanDuration(delay)));
        }
    }
    why.push(note);
    state
}

/// Says (at debug level) why a rule whose cheaper conditions matched a job did not apply after
/// all: these are the cases an operator may wonder about ("why was this job not retried?").
fn skipped(policy: &CompiledPolicy, rule: &CompiledRule, job: &JobRecord, why: &str) {
    tracing::debug!(
        policy = %policy.key,
        rule = %rule.name,
        job_id = job.id,
        job_name = %job.name(),
        "rule does not apply: {why}"
    );
}

/// The action's own preconditions that the job's fields decide.
fn action_applies_to_job(action: &RuleAction, job: &JobRecord, index: &ProjectJobs) -> bool {
    match action {
        RuleAction::Retry { .. } => {
            matches!(
                job.status,
                JobStatus::Success | JobStatus::Failed | JobStatus::Canceled
            ) && !job.erased
                && !job.archived
                && !index.newer_attempt_seen(job)
                && !limit_reached(action, job, index)
        }
        RuleAction::Cancel => job.status.is_cancelable(),
        RuleAction::Play { .. } => {
            matches!(job.status, JobStatus::Manual | JobStatus::Scheduled) && !job.archived
        }
        RuleAction::KeepArtifacts => job.artifacts_expire_at().is_some(),
    }
}

/// True when the project job list tells that `job` has had every retry `action` allows.
fn limit_reached(action: &RuleAction, job: &JobRecord, index: &ProjectJobs) -> bool {
    match action {
        RuleAction::Retry { limit, .. } => index.attempts_of(job).is_some_and(|n| n > *limit),
        _ => false,
    }
}

/// The attempt number of `job` (1 for the first run), or `None` when a newer attempt exists.
/// Attempts are the jobs of the same name in the pipeline, retried ones included.
fn retry_attempt(job: &JobRecord, pipeline_jobs: &[JobRecord]) -> Option<u32> {
    let mut ids: HashSet<u64> = HashSet::from([job.id]);
    for other in pipeline_jobs {
        if other.name() == job.name() && other.pipeline_id == job.pipeline_id {
            if other.id > job.id {
                return None;
            }
            ids.insert(other.id);
        }
    }
    Some(u32::try_from(ids.len()).unwrap_or(u32::MAX))
}

/// Checks `pipeline.stagesSucceeded`: every latest job of each stage succeeded. `Err` says why
/// not (a stage without jobs does not count as succeeded).
fn stages_succeeded(
    stages: &[String],
    job: &JobRecord,
    pipeline_jobs: &[JobRecord],
) -> Result<String, String> {
    let mut latest: HashMap<&str, &JobRecord> = HashMap::new();
    for j in pipeline_jobs
        .iter()
        .filter(|j| j.pipeline_id == job.pipeline_id)
    {
        let entry = latest.entry(j.name()).or_insert(j);
        if j.id > entry.id {
            *entry = j;
        }
    }
    for stage in stages {
        let mut jobs = latest.values().filter(|j| *j.stage() == **stage).peekable();
        if jobs.peek().is_none() {
            return Err(format!(
                "stage {stage} has no jobs in pipeline #{}",
                job.pipeline_id
            ));
        }
        if let Some(not_ok) = jobs.find(|j| j.status != JobStatus::Success) {
            return Err(format!(
                "stage {stage}: job {} is {}",
                not_ok.name(),
                not_ok.status
            ));
        }
    }
    Ok(format!(
        "stages {} succeeded in pipeline #{}",
        stages.join(", "),
        job.pipeline_id
    ))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
