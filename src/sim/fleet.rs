//! The deterministic fleet generator: what projects look like (stages, job names, refs,
//! commits). The autopilot decides when and how jobs move; this module decides what exists.
//!
//! The fleet is a group tree ([`FLEET_GROUPS`]): `fleet` with the subgroups `fleet/platform`
//! (and its `tools` and `infra`), `fleet/apps` (and its `web` and `mobile`) and `fleet/data`.
//! Project `N` is `<group>/project-N`: projects 1–3 are always in `fleet` itself (so
//! `fleet/project-1` … `fleet/project-3` are stable paths), every later one in a group drawn
//! from the seed ([`project_group`]). Its pipelines run on `main`, feature branches or
//! release tags (`v1.x.y`) with three stages:
//! * `build`: `build` (artifacts kept a week), sometimes `compile-assets`;
//! * `test`: `rspec 1/3` … `rspec 3/3` (with coverage), `lint`, sometimes `jest`, and in a few
//!   projects `gpu-tests`, tagged `gpu`, which no runner serves;
//! * `deploy`: `deploy-staging` (`when: manual`, may fail) on `main`, `release` on tags
//!   (artifacts expiring within 24–72 h), and in some projects the `trigger-docs` bridge on `main`.

use crate::sim::clock::SimTime;
use crate::sim::state::{Commit, JobKind, mix64};
use crate::sim::status::When;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// How the generated fleet looks and evolves.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Pipelines each project has when the simulator starts.
    pub pipelines_per_project: u32,
    /// The most fleet pipelines a project keeps; the oldest are dropped beyond it, which bounds
    /// memory (about 100 MB for 2000 projects at the default of 10). Pipelines added by tests
    /// are never dropped.
    pub max_pipelines_per_project: u32,
    /// Mean interval between new pipelines in one project (`None` = no new pipelines).
    pub new_pipeline_every: Option<Duration>,
    /// How far back the initial pipelines reach.
    pub history: Duration,
    /// Whether fleet jobs keep moving after start (runners pick up pending jobs, running jobs
    /// finish, manual jobs get played). `false` freezes the generated history.
    pub evolve: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            pipelines_per_project: 5,
            max_pipelines_per_project: 10,
            new_pipeline_every: Some(Duration::from_secs(15 * 60)),
            history: Duration::from_secs(72 * 3600),
            evolve: true,
        }
    }
}

impl FleetConfig {
    /// A fleet that never changes after generation: no new pipelines, no job movement.
    pub fn frozen() -> Self {
        FleetConfig {
            new_pipeline_every: None,
            evolve: false,
            ..FleetConfig::default()
        }
    }
}

/// The groups of the generated fleet, parents before their subgroups (the tree is the same
/// for every seed; only the projects' places in it are drawn).
pub const FLEET_GROUPS: [&str; 8] = [
    "fleet",
    "fleet/platform",
    "fleet/platform/tools",
    "fleet/platform/infra",
    "fleet/apps",
    "fleet/apps/web",
    "fleet/apps/mobile",
    "fleet/data",
];

/// How many fleet projects (the first ones) always sit in `fleet` itself.
const ROOT_PROJECTS: u64 = 3;

/// The full path of the group of fleet project `project_id` in the fleet of `seed`.
pub fn project_group(seed: u64, project_id: u64) -> &'static str {
    if project_id <= ROOT_PROJECTS {
        return FLEET_GROUPS[0];
    }
    let draw = mix64(seed ^ mix64(project_id ^ 0x4752_4f55_5053));
    let index = usize::try_from(draw % FLEET_GROUPS.len() as u64).unwrap_or(0);
    FLEET_GROUPS[index]
}

/// The full path of fleet project `project_id` in the fleet of `seed`
/// (`fleet/project-1`, `fleet/apps/web/project-9`, …).
pub fn project_path(seed: u64, project_id: u64) -> String {
    format!("{}/project-{project_id}", project_group(seed, project_id))
}

/// The stable traits of one project's pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProjectShape {
    pub compile_assets: bool,
    pub jest: bool,
    pub gpu_tests: bool,
    pub docs_trigger: bool,
    pub rspec_nodes: u32,
}

impl ProjectShape {
    /// The shape of project `project_id` in the fleet of `seed`.
    pub fn of(seed: u64, project_id: u64) -> ProjectShape {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ mix64(project_id ^ 0x5348_4150)));
        ProjectShape {
            compile_assets: rng.random_bool(0.5),
            jest: rng.random_bool(0.4),
            gpu_tests: rng.random_bool(0.08),
            docs_trigger: rng.random_bool(0.3),
            rspec_nodes: rng.random_range(2..=4),
        }
    }
}

/// One job of a pipeline to be created.
#[derive(Debug, Clone)]
pub(crate) struct JobTemplate {
    pub name: String,
    pub stage: &'static str,
    pub stage_idx: u32,
    pub kind: JobKind,
    pub when: When,
    pub allow_failure: bool,
    pub tags: Vec<String>,
    pub artifacts_expire_in: Option<Duration>,
}

/// A pipeline to be created.
#[derive(Debug, Clone)]
pub(crate) struct PipelineTemplate {
    pub git_ref: String,
    pub tag: bool,
    pub source: &'static str,
    pub user_id: u64,
    pub commit: Commit,
    pub jobs: Vec<JobTemplate>,
}

const FEATURE_BRANCHES: [&str; 8] = [
    "feature/login-page",
    "feature/api-pagination",
    "fix/flaky-spec",
    "feature/dark-mode",
    "chore/bump-deps",
    "fix/n-plus-one",
    "feature/metrics",
    "refactor/jobs-service",
];

const COMMIT_TITLES: [&str; 10] = [
    "Add pagination to the jobs endpoint",
    "Fix flaky spec in the scheduler",
    "Bump dependencies",
    "Refactor pipeline processing",
    "Improve error messages",
    "Add metrics for queue time",
    "Update README",
    "Speed up the test suite",
    "Handle empty responses",
    "Release preparation",
];

const DEVELOPERS: [u64; 4] = [2, 3, 4, 5];
const SCHEDULE_BOT: u64 = 6;
const COMMIT_OFFSETS_MINUTES: [i32; 5] = [0, 60, 120, -300, 330];

/// Draws the next pipeline of a project created at `t`.
pub(crate) fn draw_pipeline(
    rng: &mut ChaCha8Rng,
    shape: &ProjectShape,
    iid: u64,
    t: SimTime,
) -> PipelineTemplate {
    let roll: f64 = rng.random();
    let (git_ref, tag) = if roll < 0.55 {
        ("main".to_owned(), false)
    } else if roll < 0.85 {
        let branch = FEATURE_BRANCHES[rng.random_range(0..FEATURE_BRANCHES.len())];
        (branch.to_owned(), false)
    } else {
        (format!("v1.{}.{}", iid / 4, iid % 4), true)
    };
    let scheduled = git_ref == "main" && rng.random_bool(0.1);
    let (source, user_id) = if scheduled {
        ("schedule", SCHEDULE_BOT)
    } else {
        (
            if tag {
                "push"
            } else {
                pick(rng, &["push", "push", "push", "web"])
            },
            DEVELOPERS[rng.random_range(0..DEVELOPERS.len())],
        )
    };
    let commit = draw_commit(rng, t, &git_ref, tag);
    let jobs = pipeline_jobs(rng, shape, &git_ref, tag);
    PipelineTemplate {
        git_ref,
        tag,
        source,
        user_id,
        commit,
        jobs,
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn draw_commit(rng: &mut ChaCha8Rng, t: SimTime, git_ref: &str, tag: bool) -> Commit {
    let sha = hex40(rng);
    let parent_sha = hex40(rng);
    let title = if tag {
        format!("Release {git_ref}")
    } else {
        COMMIT_TITLES[rng.random_range(0..COMMIT_TITLES.len())].to_owned()
    };
    let message = format!("{title}\n\nSigned-off-by: fleet developers\n");
    Commit {
        sha,
        parent_sha,
        title,
        message,
        author_id: DEVELOPERS[rng.random_range(0..DEVELOPERS.len())],
        created_at: t.plus_millis(-rng.random_range(60_000..1_800_000)),
        offset_minutes: COMMIT_OFFSETS_MINUTES[rng.random_range(0..COMMIT_OFFSETS_MINUTES.len())],
    }
}

fn hex40(rng: &mut ChaCha8Rng) -> String {
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    let c: u32 = rng.random();
    format!("{a:016x}{b:016x}{c:08x}")
}

fn pipeline_jobs(
    rng: &mut ChaCha8Rng,
    shape: &ProjectShape,
    git_ref: &str,
    tag: bool,
) -> Vec<JobTemplate> {
    let docker = || vec!["docker".to_owned(), "linux".to_owned()];
    let build = |name: &str, stage: &'static str, stage_idx: u32| JobTemplate {
        name: name.to_owned(),
        stage,
        stage_idx,
        kind: JobKind::Build,
        when: When::OnSuccess,
        allow_failure: false,
        tags: docker(),
        artifacts_expire_in: None,
    };
    let mut jobs = vec![JobTemplate {
        artifacts_expire_in: Some(Duration::from_secs(7 * 24 * 3600)),
        ..build("build", "build", 0)
    }];
    if shape.compile_assets {
        jobs.push(build("compile-assets", "build", 0));
    }
    for node in 1..=shape.rspec_nodes {
        jobs.push(JobTemplate {
            artifacts_expire_in: Some(Duration::from_secs(24 * 3600)),
            ..build(&format!("rspec {node}/{}", shape.rspec_nodes), "test", 1)
        });
    }
    jobs.push(build("lint", "test", 1));
    if shape.jest {
        jobs.push(build("jest", "test", 1));
    }
    if shape.gpu_tests && !tag {
        jobs.push(JobTemplate {
            tags: vec!["gpu".to_owned()],
            ..build("gpu-tests", "test", 1)
        });
    }
    if git_ref == "main" {
        jobs.push(JobTemplate {
            when: When::Manual,
            allow_failure: true,
            ..build("deploy-staging", "deploy", 2)
        });
        if shape.docs_trigger {
            jobs.push(JobTemplate {
                kind: JobKind::Bridge,
                tags: Vec::new(),
                ..build("trigger-docs", "deploy", 2)
            });
        }
    }
    if tag {
        let hours = rng.random_range(24..=72);
        jobs.push(JobTemplate {
            artifacts_expire_in: Some(Duration::from_secs(hours * 3600)),
            ..build("release", "deploy", 2)
        });
    }
    jobs
}

/// When the initial pipelines of a project were created: the newest in the last 90 minutes,
/// the others spread over the history window, oldest first.
pub(crate) fn initial_pipeline_times(
    rng: &mut ChaCha8Rng,
    count: u32,
    history: Duration,
    now: SimTime,
) -> Vec<SimTime> {
    if count == 0 {
        return Vec::new();
    }
    let history_ms = crate::sim::clock::duration_millis(history).max(3 * 3_600_000);
    let mut ages: Vec<i64> = (1..count)
        .map(|_| rng.random_range(2 * 3_600_000..history_ms))
        .collect();
    ages.push(rng.random_range(120_000..90 * 60_000));
    ages.sort_unstable_by(|a, b| b.cmp(a));
    ages.into_iter().map(|age| now.plus_millis(-age)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_deterministic_per_seed_and_project() {
        assert_eq!(ProjectShape::of(1, 7), ProjectShape::of(1, 7));
        let differs = (1..50).any(|p| ProjectShape::of(1, p) != ProjectShape::of(2, p));
        assert!(differs);
    }

    #[test]
    fn pipelines_have_three_ordered_stages_and_ref_specific_jobs() {
        let shape = ProjectShape {
            compile_assets: true,
            jest: false,
            gpu_tests: false,
            docs_trigger: true,
            rspec_nodes: 3,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut saw_main = false;
        let mut saw_tag = false;
        for iid in 1..200 {
            let p = draw_pipeline(&mut rng, &shape, iid, SimTime(1_000_000_000));
            let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
            assert!(names.contains(&"rspec 3/3"));
            assert!(p.jobs.windows(2).all(|w| w[0].stage_idx <= w[1].stage_idx));
            assert_eq!(p.commit.sha.len(), 40);
            if p.git_ref == "main" {
                saw_main = true;
                assert!(names.contains(&"deploy-staging"));
                assert!(p.jobs.iter().any(|j| j.kind == JobKind::Bridge));
            }
            if p.tag {
                saw_tag = true;
                assert!(p.git_ref.starts_with("v1."));
                let release = p.jobs.iter().find(|j| j.name == "release");
                let expiry = release.and_then(|j| j.artifacts_expire_in);
                assert!(expiry.is_some_and(|d| (24 * 3600..=72 * 3600).contains(&d.as_secs())));
            }
        }
        assert!(saw_main && saw_tag);
    }

    #[test]
    fn initial_times_are_ascending_and_inside_the_history() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let now = SimTime(10_000_000_000);
        let times = initial_pipeline_times(&mut rng, 6, Duration::from_secs(72 * 3600), now);
        assert_eq!(times.len(), 6);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            times
                .iter()
                .all(|t| *t < now && *t >= now.plus_millis(-72 * 3_600_000))
        );
        assert!(times[5] >= now.plus_millis(-90 * 60_000));
    }
}
