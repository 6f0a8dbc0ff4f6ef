//! The autopilot: what makes the generated fleet behave like a busy GitLab instance.
//!
//! Each fleet project owns a queue of future events on the simulated clock (a runner picks a
//! job up, a job finishes, a stuck job is dropped, a developer plays a manual job or cancels a
//! pipeline, a new pipeline is pushed). Nothing runs in the background: the queue is worked off
//! lazily up to "now" whenever the project is looked at, applying each event at its own time,
//! so the result does not depend on when anyone looks. Every draw comes from the project's
//! seeded `ChaCha8Rng`, so a seed always produces the same history.
//!
//! After every change to an autopilot pipeline the pipeline is processed the way GitLab's
//! pipeline processor does it, stage by stage: `created` jobs are queued (or made `manual`) once
//! the earlier stages have completed successfully, and skipped once one of them failed.

use crate::sim::clock::{SimTime, duration_millis};
use crate::sim::fleet::{self, FleetConfig, ProjectShape};
use crate::sim::hooks::Outbox;
use crate::sim::machine;
use crate::sim::ops::{self, NewJob, NewPipeline};
use crate::sim::state::{Job, JobKind, Project, RUNNERS, Trace, World, mix64};
use crate::sim::status::{Status, When};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// One project's self-driving state.
pub(crate) struct Autopilot {
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    shape: ProjectShape,
    new_pipeline_every: Option<Duration>,
    /// When the next pushed pipeline (churn) appears.
    next_churn: Option<SimTime>,
    max_pipelines: usize,
}

impl fmt::Debug for Autopilot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Autopilot")
            .field("pending_events", &self.queue.len())
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Scheduled {
    at: SimTime,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// One of the project's initial pipelines is pushed.
    NewPipeline,
    /// A runner picks a pending job up.
    Pickup { job_id: u64, epoch: u64 },
    /// A running job ends.
    Finish {
        job_id: u64,
        epoch: u64,
        outcome: Outcome,
    },
    /// A pending job is dropped by the stuck-jobs worker.
    DropStuck {
        job_id: u64,
        epoch: u64,
        reason: &'static str,
    },
    /// A developer plays a manual job.
    Play {
        job_id: u64,
        epoch: u64,
        user_id: u64,
    },
    /// A developer cancels a whole pipeline.
    CancelPipeline { pipeline_id: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failed(&'static str),
}

impl Autopilot {
    fn schedule(&mut self, at: SimTime, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Moves the churn past the pipelines that would be dropped by the cap before `now`.
    fn skip_churn_beyond_cap(&mut self, now: SimTime) {
        let (Some(every), Some(at)) = (self.new_pipeline_every, self.next_churn) else {
            return;
        };
        // Churn intervals are at most 1.5 × `every`, so this window holds more than a cap.
        let window = duration_millis(every)
            .saturating_mul(3)
            .saturating_div(2)
            .saturating_mul(
                i64::try_from(self.max_pipelines)
                    .unwrap_or(i64::MAX)
                    .saturating_add(1),
            );
        self.next_churn = Some(at.max(now.plus_millis(-window)));
    }

    fn next_due(&mut self, now: SimTime) -> Option<(SimTime, Event)> {
        if self.queue.peek()?.0.at > now {
            return None;
        }
        self.queue.pop().map(|Reverse(s)| (s.at, s.event))
    }
}

/// Gives a project its fleet history: the initial pipelines (created in the past and worked
/// off up to `now`) and, when the config asks for it, the chain of future pipelines.
pub(crate) fn install(
    world: &mut World,
    project_id: u64,
    seed: u64,
    config: &FleetConfig,
    now: SimTime,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(project_id)));
    let times =
        fleet::initial_pipeline_times(&mut rng, config.pipelines_per_project, config.history, now);
    let mut autopilot = Autopilot {
        rng,
        queue: BinaryHeap::new(),
        seq: 0,
        shape: ProjectShape::of(seed, project_id),
        new_pipeline_every: config.new_pipeline_every.filter(|d| !d.is_zero()),
        next_churn: None,
        max_pipelines: usize::try_from(config.max_pipelines_per_project.max(1))
            .unwrap_or(usize::MAX),
    };
    for t in times {
        autopilot.schedule(t, Event::NewPipeline);
    }
    if let Some(every) = autopilot.new_pipeline_every {
        autopilot.next_churn = Some(next_churn(&mut autopilot.rng, now, every));
    }
    let Some(project) = world.projects.get_mut(&project_id) else {
        return;
    };
    project.autopilot = Some(autopilot);
    advance(world, project_id, now);
    if !config.evolve {
        freeze(world, project_id);
    }
}

/// Stops a project's evolution: its pipelines become test-driven only.
fn freeze(world: &mut World, project_id: u64) {
    if let Some(project) = world.projects.get_mut(&project_id) {
        project.autopilot = None;
        for pipeline in project.pipelines.values_mut() {
            pipeline.autopilot = false;
        }
    }
}

/// Works off every event of the project due at or before `now`, and pushes the pipelines due
/// by then. After a long jump of the clock, pipelines that the cap would drop again at once
/// are never created (so a jump costs at most one cap's worth of pipelines).
pub(crate) fn advance(world: &mut World, project_id: u64, now: SimTime) {
    let Some(mut autopilot) = world
        .projects
        .get_mut(&project_id)
        .and_then(|p| p.autopilot.take())
    else {
        return;
    };
    autopilot.skip_churn_beyond_cap(now);
    loop {
        let event_at = autopilot.queue.peek().map(|s| s.0.at);
        match autopilot.next_churn {
            Some(churn_at) if churn_at <= now && event_at.is_none_or(|e| churn_at < e) => {
                new_pipeline(world, project_id, &mut autopilot, churn_at);
                if let Some(every) = autopilot.new_pipeline_every {
                    autopilot.next_churn = Some(next_churn(&mut autopilot.rng, churn_at, every));
                }
            }
            _ => match autopilot.next_due(now) {
                Some((at, event)) => apply(world, project_id, &mut autopilot, at, event),
                None => break,
            },
        }
    }
    if let Some(project) = world.projects.get_mut(&project_id) {
        project.autopilot = Some(autopilot);
    }
}

/// Reacts to a change made by the API or a test in an autopilot pipeline.
pub(crate) fn after_change(world: &mut World, project_id: u64, pipeline_id: u64, t: SimTime) {
    let Some(project) = world.projects.get_mut(&project_id) else {
        return;
    };
    if !project
        .pipelines
        .get(&pipeline_id)
        .is_some_and(|p| p.autopilot)
    {
        return;
    }
    let Some(mut autopilot) = project.autopilot.take() else {
        return;
    };
    process_pipeline(world, project_id, &mut autopilot, pipeline_id, t);
    if let Some(project) = world.projects.get_mut(&project_id) {
        project.autopilot = Some(autopilot);
    }
}

/// Applies one due event at its own time `at`.
fn apply(world: &mut World, project_id: u64, ap: &mut Autopilot, at: SimTime, event: Event) {
    match event {
        Event::NewPipeline => new_pipeline(world, project_id, ap, at),
        Event::Pickup { job_id, epoch } => pickup(world, project_id, ap, at, job_id, epoch),
        Event::Finish {
            job_id,
            epoch,
            outcome,
        } => finish_job(world, project_id, ap, at, job_id, epoch, outcome),
        Event::DropStuck {
            job_id,
            epoch,
            reason,
        } => {
            with_current_job(world, project_id, ap, at, job_id, epoch, |job| {
                if job.status == Status::Pending {
                    machine::drop_job(job, at, reason);
                }
            });
        }
        Event::Play {
            job_id,
            epoch,
            user_id,
        } => {
            with_current_job(world, project_id, ap, at, job_id, epoch, |job| {
                if job.status == Status::Manual {
                    job.user_id = user_id;
                    machine::enqueue(job, at);
                }
            });
        }
        Event::CancelPipeline { pipeline_id } => {
            cancel_pipeline(world, project_id, ap, at, pipeline_id);
        }
    }
}

/// A runner (drawn from the fleet's runners) picks a pending job up; a build gets the runner
/// and a generated log.
fn pickup(
    world: &mut World,
    project_id: u64,
    ap: &mut Autopilot,
    at: SimTime,
    job_id: u64,
    epoch: u64,
) {
    let runner_id = RUNNERS[ap.rng.random_range(0..RUNNERS.len())].id;
    with_current_job(world, project_id, ap, at, job_id, epoch, |job| {
        if !machine::run(job, at) {
            return;
        }
        if job.kind == JobKind::Build {
            job.runner_id = Some(runner_id);
            job.trace.get_or_insert(Trace::Generated);
        }
    });
}

/// A running job ends with `outcome` (the coverage an `rspec` job reports is drawn first,
/// whether or not it is used).
fn finish_job(
    world: &mut World,
    project_id: u64,
    ap: &mut Autopilot,
    at: SimTime,
    job_id: u64,
    epoch: u64,
    outcome: Outcome,
) {
    let coverage = 70.0 + f64::from(ap.rng.random_range(0..2500u32)) / 100.0;
    with_current_job(world, project_id, ap, at, job_id, epoch, |job| {
        end_job(job, at, outcome, coverage);
    });
}

/// Ends a job: a success gets its artifacts (when the job keeps any, until
/// `artifacts_expire_in` has passed) and, for `rspec` jobs, `coverage`; a failure drops it
/// with its reason.
fn end_job(job: &mut Job, at: SimTime, outcome: Outcome, coverage: f64) {
    match outcome {
        Outcome::Success => {
            if machine::succeed(job, at) {
                if let Some(keep) = job.artifacts_expire_in {
                    job.artifacts = Some(crate::sim::state::Artifacts {
                        expire_at: Some(at.plus(keep)),
                    });
                }
                if job.name.starts_with("rspec") {
                    job.coverage = Some(coverage);
                }
            }
        }
        Outcome::Failed(reason) => {
            machine::drop_job(job, at, reason);
        }
    }
}

/// A developer cancels a whole pipeline: every cancelable job but the manual ones.
fn cancel_pipeline(
    world: &mut World,
    project_id: u64,
    ap: &mut Autopilot,
    at: SimTime,
    pipeline_id: u64,
) {
    let Some(project) = world.projects.get_mut(&project_id) else {
        return;
    };
    let ids: Vec<u64> = project
        .latest_jobs(pipeline_id)
        .filter(|j| j.status.is_cancelable() && j.status != Status::Manual)
        .map(|j| j.id)
        .collect();
    for id in ids {
        if let Some(job) = project.jobs.get_mut(&id) {
            let from = job.status;
            if machine::cancel(job, at) {
                world.hooks.record(job, Some(from));
            }
        }
    }
    stamp(world, project_id, pipeline_id, at);
    process_pipeline(world, project_id, ap, pipeline_id, at);
}

/// Runs `change` on a job if it still exists and has not moved since the event was planned,
/// then processes its pipeline.
fn with_current_job(
    world: &mut World,
    project_id: u64,
    ap: &mut Autopilot,
    at: SimTime,
    job_id: u64,
    epoch: u64,
    change: impl FnOnce(&mut Job),
) {
    let Some(job) = world.job_mut(project_id, job_id) else {
        return;
    };
    if job.epoch != epoch || job.retried {
        return;
    }
    let from = job.status;
    change(job);
    let moved = job.epoch != epoch;
    let pipeline_id = job.pipeline_id;
    if moved {
        world.record_transition(project_id, job_id, Some(from));
    }
    stamp(world, project_id, pipeline_id, at);
    process_pipeline(world, project_id, ap, pipeline_id, at);
}

fn stamp(world: &mut World, project_id: u64, pipeline_id: u64, at: SimTime) {
    if let Some(pipeline) = world
        .projects
        .get_mut(&project_id)
        .and_then(|p| p.pipelines.get_mut(&pipeline_id))
    {
        pipeline.updated_at = pipeline.updated_at.max(at);
    }
}

fn next_churn(rng: &mut ChaCha8Rng, from: SimTime, every: Duration) -> SimTime {
    let mean = duration_millis(every).max(1_000);
    from.plus_millis(rng.random_range(mean / 2..=mean + mean / 2))
}

fn new_pipeline(world: &mut World, project_id: u64, ap: &mut Autopilot, at: SimTime) {
    let Some(project) = world.projects.get(&project_id) else {
        return;
    };
    // An archived project is read-only: nothing pushes to it, its schedules do not run. The
    // pipelines it has still finish.
    if project.archived {
        return;
    }
    let template = fleet::draw_pipeline(&mut ap.rng, &ap.shape, project.next_iid, at);
    let jobs = template
        .jobs
        .into_iter()
        .map(|j| NewJob {
            name: j.name,
            stage: j.stage.to_owned(),
            stage_idx: j.stage_idx,
            kind: j.kind,
            when: j.when,
            allow_failure: j.allow_failure,
            tags: j.tags,
            status: Status::Created,
            failure_reason: None,
            created_at: at,
            queued_at: None,
            started_at: None,
            finished_at: None,
            runner_id: None,
            artifacts: None,
            artifacts_expire_in: j.artifacts_expire_in,
            trace: None,
            user_id: template.user_id,
        })
        .collect();
    let created = ops::create_pipeline(
        world,
        project_id,
        NewPipeline {
            git_ref: template.git_ref,
            tag: template.tag,
            source: template.source,
            commit: template.commit,
            created_at: at,
            autopilot: true,
            jobs,
        },
    );
    let Some((pipeline_id, _)) = created else {
        return;
    };
    if ap.rng.random_bool(0.03) {
        let after = ap.rng.random_range(MINUTE..20 * MINUTE);
        ap.schedule(at.plus_millis(after), Event::CancelPipeline { pipeline_id });
    }
    process_pipeline(world, project_id, ap, pipeline_id, at);
    enforce_cap(world, project_id, ap.max_pipelines);
}

/// Drops the oldest fleet pipelines beyond `max` (pipelines added by tests are kept).
fn enforce_cap(world: &mut World, project_id: u64, max: usize) {
    let Some(project) = world.projects.get(&project_id) else {
        return;
    };
    let fleet: Vec<u64> = project
        .pipelines
        .values()
        .filter(|p| p.autopilot)
        .map(|p| p.id)
        .collect();
    let excess = fleet.len().saturating_sub(max);
    for pipeline_id in fleet.into_iter().take(excess) {
        world.remove_pipeline(project_id, pipeline_id);
    }
}

/// GitLab's stage-by-stage processing of one pipeline, then planning for jobs that moved.
fn process_pipeline(
    world: &mut World,
    project_id: u64,
    ap: &mut Autopilot,
    pipeline_id: u64,
    t: SimTime,
) {
    let Some(project) = world.projects.get_mut(&project_id) else {
        return;
    };
    let mut latest: Vec<(u32, u64)> = project
        .latest_jobs(pipeline_id)
        .map(|j| (j.stage_idx, j.id))
        .collect();
    latest.sort_unstable();
    let changed = process_stages(project, &mut world.hooks, &latest, t);
    if changed && let Some(pipeline) = project.pipelines.get_mut(&pipeline_id) {
        pipeline.updated_at = pipeline.updated_at.max(t);
    }
    plan_moved(project, ap, &latest, t);
}

/// Walks the pipeline's latest jobs (`(stage_idx, id)`, sorted) stage by stage: a `created`
/// job moves once every earlier stage has completed. Returns whether any job moved.
fn process_stages(
    project: &mut Project,
    hooks: &mut Outbox,
    latest: &[(u32, u64)],
    t: SimTime,
) -> bool {
    let mut earlier_complete = true;
    let mut earlier_ok = true;
    let mut changed = false;
    for stage in latest.chunk_by(|a, b| a.0 == b.0) {
        let mut stage_complete = true;
        let mut stage_ok = true;
        for &(_, id) in stage {
            let Some(job) = project.jobs.get_mut(&id) else {
                continue;
            };
            if job.status == Status::Created && earlier_complete {
                changed |= release(job, hooks, earlier_ok, t);
            }
            let ignored_manual = job.status == Status::Manual && job.allow_failure;
            stage_complete &= job.status.is_completed() || ignored_manual;
            stage_ok &= match job.status {
                Status::Success | Status::Skipped => true,
                Status::Failed => job.allow_failure,
                Status::Manual => job.allow_failure,
                _ => false,
            };
        }
        earlier_complete &= stage_complete;
        earlier_ok &= stage_ok;
    }
    changed
}

/// Moves a `created` job whose earlier stages have completed: skipped when one of them failed
/// (`!earlier_ok`), else made manual or queued, and records the Job Hook. Returns whether it
/// moved.
fn release(job: &mut Job, hooks: &mut Outbox, earlier_ok: bool, t: SimTime) -> bool {
    let moved = if !earlier_ok {
        machine::skip(job, t)
    } else if job.when == When::Manual {
        machine::actionize(job, t)
    } else {
        machine::enqueue(job, t)
    };
    if moved {
        hooks.record(job, Some(Status::Created));
    }
    moved
}

/// Plans what happens next to each of the pipeline's latest jobs that moved since it was last
/// planned, in `latest`'s order (so the draws stay in order).
fn plan_moved(project: &mut Project, ap: &mut Autopilot, latest: &[(u32, u64)], t: SimTime) {
    for &(_, id) in latest {
        let Some(job) = project.jobs.get_mut(&id) else {
            continue;
        };
        if job.planned_epoch == job.epoch {
            continue;
        }
        job.planned_epoch = job.epoch;
        let planned = Planned {
            job_id: id,
            epoch: job.epoch,
            status: job.status,
            kind: job.kind,
            needs_gpu: job.tag_list.iter().any(|tag| &**tag == "gpu"),
            // Build-stage jobs (compiling) fail less often than tests.
            failure_scale: if job.stage_idx == 0 { 0.35 } else { 1.0 },
        };
        let name = std::sync::Arc::clone(&job.name);
        plan(ap, t, planned, &name);
    }
}

/// A job that moved, as the planner sees it.
#[derive(Debug, Clone, Copy)]
struct Planned {
    job_id: u64,
    epoch: u64,
    status: Status,
    kind: JobKind,
    needs_gpu: bool,
    failure_scale: f64,
}

/// Decides what happens next to a job that just moved.
fn plan(ap: &mut Autopilot, t: SimTime, job: Planned, name: &str) {
    let rng = &mut ap.rng;
    let next = match (job.status, job.kind) {
        (Status::Pending, JobKind::Bridge) => Some(pending_bridge(rng, job)),
        (Status::Pending, JobKind::Build) => Some(pending_build(rng, job)),
        (Status::Running, JobKind::Bridge) => Some(running_bridge(rng, job)),
        (Status::Running, JobKind::Build) => Some(running_build(rng, job, name)),
        (Status::Manual, _) => manual_play(rng, job),
        _ => None,
    };
    if let Some((after, event)) = next {
        ap.schedule(t.plus_millis(after), event);
    }
}

/// A pending bridge: triggered within seconds. Returns the delay (milliseconds) and the event.
fn pending_bridge(rng: &mut ChaCha8Rng, job: Planned) -> (i64, Event) {
    let after = rng.random_range(1_000..5_000);
    let Planned { job_id, epoch, .. } = job;
    (after, Event::Pickup { job_id, epoch })
}

/// A pending build: picked up by a runner (usually within a minute, sometimes after many), or
/// dropped as stuck when no runner takes it.
fn pending_build(rng: &mut ChaCha8Rng, job: Planned) -> (i64, Event) {
    let Planned {
        job_id,
        epoch,
        needs_gpu,
        failure_scale: scale,
        ..
    } = job;
    let roll: f64 = rng.random();
    if needs_gpu {
        // No online runner has the tag: dropped after an hour (GitLab ≥ 17 reason).
        (
            HOUR,
            Event::DropStuck {
                job_id,
                epoch,
                reason: "stuck_pending_no_matching_runners",
            },
        )
    } else if roll < 0.085 * scale {
        // Runners exist but never take it: dropped after a day.
        (
            24 * HOUR,
            Event::DropStuck {
                job_id,
                epoch,
                reason: "stuck_or_timeout_failure",
            },
        )
    } else if roll < 0.12 {
        (
            rng.random_range(3 * MINUTE..45 * MINUTE),
            Event::Pickup { job_id, epoch },
        )
    } else {
        (
            rng.random_range(1_000..60_000),
            Event::Pickup { job_id, epoch },
        )
    }
}

/// A running bridge: its downstream pipeline is created within minutes, or fails to be.
fn running_bridge(rng: &mut ChaCha8Rng, job: Planned) -> (i64, Event) {
    let after = rng.random_range(MINUTE..8 * MINUTE);
    let outcome = if rng.random_bool(0.92) {
        Outcome::Success
    } else {
        Outcome::Failed("downstream_pipeline_creation_failed")
    };
    (after, finish(job, outcome))
}

/// A running build: succeeds after its usual run time, or fails with one of GitLab's reasons.
fn running_build(rng: &mut ChaCha8Rng, job: Planned, name: &str) -> (i64, Event) {
    let scale = job.failure_scale;
    let normal = run_time(rng, name);
    let roll: f64 = rng.random();
    let (after, outcome) = if roll < 0.075 * scale {
        (HOUR, Outcome::Failed("stuck_or_timeout_failure"))
    } else if roll < 0.082 * scale {
        (HOUR, Outcome::Failed("job_execution_timeout"))
    } else if roll < 0.085 * scale {
        (30 * MINUTE, Outcome::Failed("no_updates_running"))
    } else if roll < 0.10 * scale {
        (normal, Outcome::Failed("script_failure"))
    } else if roll < 0.11 * scale {
        (
            rng.random_range(5_000..normal.max(5_001)),
            Outcome::Failed("runner_system_failure"),
        )
    } else {
        (normal, Outcome::Success)
    };
    (after, finish(job, outcome))
}

/// A manual job: about a third are played by a developer, minutes to hours later.
fn manual_play(rng: &mut ChaCha8Rng, job: Planned) -> Option<(i64, Event)> {
    if !rng.random_bool(0.35) {
        return None;
    }
    let after = rng.random_range(10 * MINUTE..3 * HOUR);
    let user_id = rng.random_range(2..=5);
    let Planned { job_id, epoch, .. } = job;
    Some((
        after,
        Event::Play {
            job_id,
            epoch,
            user_id,
        },
    ))
}

/// The event that ends a running job with `outcome`.
fn finish(job: Planned, outcome: Outcome) -> Event {
    Event::Finish {
        job_id: job.job_id,
        epoch: job.epoch,
        outcome,
    }
}

/// How long a job of this name usually runs (milliseconds).
fn run_time(rng: &mut ChaCha8Rng, name: &str) -> i64 {
    let (min, max) = if name.starts_with("rspec") {
        (3 * MINUTE, 12 * MINUTE)
    } else if name == "lint" {
        (20_000, 90_000)
    } else if name.starts_with("deploy") || name == "release" {
        (MINUTE, 4 * MINUTE)
    } else {
        (MINUTE, 6 * MINUTE)
    };
    rng.random_range(min..max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_world(projects: u64, seed: u64, config: &FleetConfig, now: SimTime) -> World {
        let mut world = World::new(seed, None);
        for id in 1..=projects {
            world.add_project(id, &format!("fleet/project-{id}"));
            install(&mut world, id, seed, config, now);
        }
        world
    }

    /// A job by project and position, name, status, reason, finish time.
    type JobSummary = (u64, usize, String, Status, Option<String>, Option<SimTime>);

    /// Every job by project and position (ids depend on the order projects are evaluated in).
    fn summary(world: &World) -> Vec<JobSummary> {
        world
            .projects
            .values()
            .flat_map(|p| p.jobs.values().enumerate())
            .map(|(i, j)| {
                (
                    j.project_id,
                    i,
                    j.name.to_string(),
                    j.status,
                    j.failure_reason.clone(),
                    j.finished_at,
                )
            })
            .collect()
    }

    #[test]
    fn same_seed_same_history() {
        let now = SimTime(1_795_000_000_000);
        let config = FleetConfig::default();
        let a = fleet_world(5, 7, &config, now);
        let b = fleet_world(5, 7, &config, now);
        assert_eq!(summary(&a), summary(&b));
        let c = fleet_world(5, 8, &config, now);
        assert_ne!(summary(&a), summary(&c));
    }

    #[test]
    fn evaluating_lazily_gives_the_same_result_as_at_once() {
        let start = SimTime(1_795_000_000_000);
        let config = FleetConfig::default();
        let mut stepwise = fleet_world(3, 11, &config, start);
        let mut at_once = fleet_world(3, 11, &config, start);
        for step in 1..=12 {
            for id in 1..=3 {
                advance(&mut stepwise, id, start.plus_millis(step * 10 * MINUTE));
            }
        }
        for id in 1..=3 {
            advance(&mut at_once, id, start.plus_millis(120 * MINUTE));
        }
        assert_eq!(summary(&stepwise), summary(&at_once));
    }

    #[test]
    fn fleet_statuses_look_like_a_real_instance() {
        let now = SimTime(1_795_000_000_000);
        let world = fleet_world(300, 1, &FleetConfig::default(), now);
        let jobs: Vec<_> = world
            .projects
            .values()
            .flat_map(|p| p.jobs.values())
            .filter(|j| j.kind == JobKind::Build)
            .collect();
        let total = jobs.len() as f64;
        let share = |pred: &dyn Fn(&&crate::sim::state::Job) -> bool| {
            jobs.iter().filter(|j| pred(j)).count() as f64 / total
        };
        let success = share(&|j| j.status == Status::Success);

        let stuck = share(&|j| j.failure_reason.as_deref() == Some("stuck_or_timeout_failure"));
        assert!((0.6..0.8).contains(&success), "success share {success}");
        assert!((0.05..0.11).contains(&stuck), "stuck share {stuck}");
        for status in [
            Status::Pending,
            Status::Running,
            Status::Manual,
            Status::Skipped,
            Status::Canceled,
            Status::Failed,
        ] {
            assert!(share(&|j| j.status == status) > 0.0, "no {status} jobs");
        }
        for reason in [
            "script_failure",
            "runner_system_failure",
            "job_execution_timeout",
            "stuck_pending_no_matching_runners",
        ] {
            assert!(
                share(&|j| j.failure_reason.as_deref() == Some(reason)) > 0.0,
                "no {reason} failures"
            );
        }
        let long_pending = jobs.iter().any(|j| {
            j.status == Status::Pending
                && j.queued_at.is_some_and(|q| q < now.plus_millis(-2 * HOUR))
        });
        assert!(long_pending, "no job pending for hours");
        let retried = jobs.iter().filter(|j| j.retried).count();
        assert_eq!(retried, 0, "the fleet itself never retries");
    }

    #[test]
    fn churn_adds_pipelines_and_the_cap_drops_the_oldest() {
        let now = SimTime(1_795_000_000_000);
        let config = FleetConfig {
            pipelines_per_project: 3,
            max_pipelines_per_project: 4,
            new_pipeline_every: Some(Duration::from_secs(600)),
            ..FleetConfig::default()
        };
        let mut world = fleet_world(1, 3, &config, now);
        let first_ids: Vec<u64> = world.projects[&1].pipelines.keys().copied().collect();
        assert_eq!(first_ids.len(), 3);
        advance(&mut world, 1, now.plus_millis(10 * HOUR));
        let project = &world.projects[&1];
        assert_eq!(project.pipelines.len(), 4);
        assert!(project.pipelines.keys().all(|id| !first_ids.contains(id)));
        let job_count: usize = project.pipelines.values().map(|p| p.job_ids.len()).sum();
        assert_eq!(project.jobs.len(), job_count);
        assert_eq!(world.job_count(), job_count);
    }

    #[test]
    fn a_long_clock_jump_costs_one_cap_of_pipelines() {
        let now = SimTime(1_795_000_000_000);
        let mut world = fleet_world(1, 3, &FleetConfig::default(), now);
        let ids_before = world.allocate_job_id();
        advance(&mut world, 1, now.plus_millis(365 * 24 * HOUR));
        let created = world.allocate_job_id() - ids_before;
        let project = &world.projects[&1];
        assert_eq!(project.pipelines.len(), 10);
        assert!(
            created < 12 * 12,
            "{created} jobs created for a year's jump"
        );
        assert!(
            project
                .pipelines
                .values()
                .all(|p| p.created_at > now.plus_millis(364 * 24 * HOUR))
        );
    }

    #[test]
    fn frozen_fleet_does_not_move() {
        let now = SimTime(1_795_000_000_000);
        let mut world = fleet_world(4, 5, &FleetConfig::frozen(), now);
        let before = summary(&world);
        for id in 1..=4 {
            advance(&mut world, id, now.plus_millis(48 * HOUR));
        }
        assert_eq!(summary(&world), before);
    }

    #[test]
    fn a_retried_failure_runs_again_and_unblocks_later_stages() {
        let now = SimTime(1_795_000_000_000);
        let config = FleetConfig {
            pipelines_per_project: 40,
            max_pipelines_per_project: 40,
            new_pipeline_every: None,
            ..FleetConfig::default()
        };
        let mut world = fleet_world(1, 21, &config, now);
        let project = &world.projects[&1];
        let failed_build = project
            .jobs
            .values()
            .find(|j| &*j.name == "build" && j.status == Status::Failed)
            .map(|j| (j.id, j.pipeline_id))
            .expect("40 pipelines contain a failed build");
        let new_id = ops::retry(&mut world, 1, failed_build.0, 1, None, now).expect("retryable");
        let skipped_reset = world.projects[&1]
            .latest_jobs(failed_build.1)
            .filter(|j| j.stage_idx > 0)
            .all(|j| j.status == Status::Created);
        assert!(skipped_reset);
        advance(&mut world, 1, now.plus_millis(30 * HOUR));
        let retried = world.job(1, new_id).expect("new job exists");
        assert!(retried.status.is_completed(), "{}", retried.status);
        assert!(world.job(1, failed_build.0).is_some_and(|j| j.retried));
    }
}
