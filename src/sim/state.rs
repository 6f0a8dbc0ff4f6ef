//! The simulated GitLab instance's data: projects, pipelines and jobs, plus the fixed users and
//! runners they refer to. Behaviour lives elsewhere: the status machine in `machine`, the
//! API-level operations in `ops`, the self-driving fleet in `autopilot`.

use crate::sim::autopilot::Autopilot;
use crate::sim::clock::SimTime;
use crate::sim::hooks::Outbox;
use crate::sim::status::{Status, When};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The user a personal access token belongs to (retries and plays are made as this user).
pub(crate) const TOKEN_USER_ID: u64 = 1;

/// A GitLab user (the fixed cast of the simulated instance).
#[derive(Debug)]
pub(crate) struct User {
    pub id: u64,
    pub username: &'static str,
    pub name: &'static str,
    pub organization: &'static str,
    pub job_title: &'static str,
    pub bot: bool,
}

/// Every user of the simulated instance; index = id - 1.
pub(crate) const USERS: [User; 6] = [
    User {
        id: 1,
        username: "root",
        name: "Administrator",
        organization: "",
        job_title: "",
        bot: false,
    },
    User {
        id: 2,
        username: "alice",
        name: "Alice Developer",
        organization: "Fleet Inc.",
        job_title: "Backend engineer",
        bot: false,
    },
    User {
        id: 3,
        username: "bob",
        name: "Bob Maintainer",
        organization: "Fleet Inc.",
        job_title: "Release manager",
        bot: false,
    },
    User {
        id: 4,
        username: "carol",
        name: "Carol Reviewer",
        organization: "Fleet Inc.",
        job_title: "Frontend engineer",
        bot: false,
    },
    User {
        id: 5,
        username: "dave",
        name: "Dave Ops",
        organization: "Fleet Inc.",
        job_title: "SRE",
        bot: false,
    },
    User {
        id: 6,
        username: "project_bot_scheduler",
        name: "Scheduled pipelines bot",
        organization: "",
        job_title: "",
        bot: true,
    },
];

/// Looks a user up by id (unknown ids fall back to the token user).
pub(crate) fn user(id: u64) -> &'static User {
    USERS.iter().find(|u| u.id == id).unwrap_or(&USERS[0])
}

/// A CI runner that picks up jobs.
#[derive(Debug)]
pub(crate) struct Runner {
    pub id: u64,
    pub description: &'static str,
    pub runner_type: &'static str,
    pub is_shared: bool,
    pub manager_id: u64,
    pub system_id: &'static str,
}

/// The instance's runners.
pub(crate) const RUNNERS: [Runner; 4] = [
    Runner {
        id: 11,
        description: "shared-runners-manager-1.fleet.example",
        runner_type: "instance_type",
        is_shared: true,
        manager_id: 1101,
        system_id: "s_8a9c1f0e2b3d",
    },
    Runner {
        id: 12,
        description: "shared-runners-manager-2.fleet.example",
        runner_type: "instance_type",
        is_shared: true,
        manager_id: 1201,
        system_id: "s_4f5e6d7c8b9a",
    },
    Runner {
        id: 13,
        description: "shared-runners-manager-3.fleet.example",
        runner_type: "instance_type",
        is_shared: true,
        manager_id: 1301,
        system_id: "s_0b1c2d3e4f5a",
    },
    Runner {
        id: 21,
        description: "fleet-group-docker-runner",
        runner_type: "group_type",
        is_shared: false,
        manager_id: 2101,
        system_id: "r_77aa55cc33ee",
    },
];

/// Looks a runner up by id.
pub(crate) fn runner(id: u64) -> Option<&'static Runner> {
    RUNNERS.iter().find(|r| r.id == id)
}

/// The commit a pipeline runs for.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub sha: String,
    pub parent_sha: String,
    pub title: String,
    pub message: String,
    pub author_id: u64,
    pub created_at: SimTime,
    /// The committer's UTC offset, which GitLab keeps in commit dates.
    pub offset_minutes: i32,
}

/// A pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub git_ref: String,
    pub tag: bool,
    pub source: &'static str,
    pub commit: Commit,
    pub created_at: SimTime,
    pub updated_at: SimTime,
    /// Whether the autopilot runs this pipeline (fleet pipelines) or only tests drive it.
    pub autopilot: bool,
    /// Every job and bridge of the pipeline, in creation order (retries included).
    pub job_ids: Vec<u64>,
}

/// Build (runs on a runner) or bridge (triggers a downstream pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Build,
    Bridge,
}

/// Where a job's log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trace {
    /// Written by the simulator from the job's state when read.
    Generated,
    /// Given by a test.
    Custom(String),
}

/// A job's artifacts archive (its files are generated from the job when downloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Artifacts {
    pub expire_at: Option<SimTime>,
}

/// A job or bridge.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub kind: JobKind,
    pub name: Arc<str>,
    pub stage: Arc<str>,
    pub stage_idx: u32,
    pub status: Status,
    /// Kept while the job is failed; rendered only then.
    pub failure_reason: Option<String>,
    pub when: When,
    pub allow_failure: bool,
    pub retried: bool,
    pub user_id: u64,
    pub created_at: SimTime,
    pub queued_at: Option<SimTime>,
    pub started_at: Option<SimTime>,
    pub finished_at: Option<SimTime>,
    pub erased_at: Option<SimTime>,
    pub updated_at: SimTime,
    pub coverage: Option<f64>,
    pub runner_id: Option<u64>,
    /// Sorted, deduplicated runner tags.
    pub tag_list: TagList,
    pub artifacts: Option<Artifacts>,
    /// How long artifacts live once a successful run uploads them (autopilot jobs).
    pub artifacts_expire_in: Option<Duration>,
    pub trace: Option<Trace>,
    /// Variables given when the job was played.
    pub variables: Vec<(String, String)>,
    /// Bumped on every status change; scheduled autopilot events carry the epoch they expect.
    pub epoch: u64,
    /// The epoch the autopilot last planned for.
    pub planned_epoch: u64,
}

impl Job {
    /// Whether the artifacts archive exists and has not expired (`Ci::Build#artifacts?`).
    pub fn has_live_artifacts(&self, now: SimTime) -> bool {
        match self.artifacts {
            Some(Artifacts {
                expire_at: Some(at),
            }) => at > now,
            Some(Artifacts { expire_at: None }) => true,
            None => false,
        }
    }
}

/// A project's jobs in ascending id order. Ids come from one increasing counter, so new jobs
/// are appended; a dense vector costs far less than a tree for the fleet's 100 000s of jobs.
#[derive(Debug, Default)]
pub(crate) struct JobTable {
    jobs: Vec<Job>,
}

impl JobTable {
    fn position(&self, id: u64) -> Result<usize, usize> {
        self.jobs.binary_search_by_key(&id, |j| j.id)
    }

    pub fn get(&self, id: &u64) -> Option<&Job> {
        self.position(*id).ok().map(|i| &self.jobs[i])
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Job> {
        self.position(*id).ok().map(|i| &mut self.jobs[i])
    }

    /// Inserts (or replaces) the job with id `id`.
    pub fn insert(&mut self, id: u64, job: Job) {
        match self.position(id) {
            Ok(i) => self.jobs[i] = job,
            Err(i) if i == self.jobs.len() => self.jobs.push(job),
            Err(i) => self.jobs.insert(i, job),
        }
    }

    /// Every job, by ascending id.
    pub fn values(&self) -> std::slice::Iter<'_, Job> {
        self.jobs.iter()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Keeps the jobs for which `keep` holds.
    pub fn retain(&mut self, keep: impl FnMut(&Job) -> bool) {
        self.jobs.retain(keep);
    }
}

/// A shared, sorted list of runner tags.
pub(crate) type TagList = Arc<[Arc<str>]>;

/// Shares the strings that repeat across thousands of jobs (names, stages, tag lists).
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: HashSet<Arc<str>>,
    tag_lists: HashSet<TagList>,
}

impl Interner {
    pub fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    /// The sorted, deduplicated list of `tags`.
    pub fn tags(&mut self, tags: &[String]) -> TagList {
        let mut list: Vec<Arc<str>> = tags.iter().map(|t| self.str(t)).collect();
        list.sort();
        list.dedup();
        if let Some(shared) = self.tag_lists.get(list.as_slice()) {
            return Arc::clone(shared);
        }
        let shared: TagList = Arc::from(list);
        self.tag_lists.insert(Arc::clone(&shared));
        shared
    }
}

/// A group (a namespace that holds projects and subgroups).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: u64,
    /// The display name (`Platform`).
    pub name: String,
    /// The last segment of the full path (`platform`).
    pub path: String,
    /// `fleet/platform`.
    pub full_path: String,
    pub parent_id: Option<u64>,
    pub created_at: SimTime,
}

/// Why a group or project could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Empty, all digits, or with an empty segment.
    Invalid,
    /// A group or project already has that full path (GitLab's routes are unique).
    Taken,
}

/// `Platform` for `platform`, `Project 7` for `project-7`: a group's display name from its path.
pub(crate) fn display_name(path: &str) -> String {
    path.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A project with its pipelines and jobs.
#[derive(Debug)]
pub(crate) struct Project {
    pub id: u64,
    pub path: String,
    /// The group the project is in (`None` for a path without a namespace).
    pub group_id: Option<u64>,
    /// Archived projects are read-only: listed apart, no new pipelines, no job changes.
    pub archived: bool,
    pub created_at: SimTime,
    pub pipelines: BTreeMap<u64, Pipeline>,
    pub jobs: JobTable,
    pub next_iid: u64,
    /// Present while the project's fleet pipelines evolve on their own.
    pub autopilot: Option<Autopilot>,
}

impl Project {
    pub fn new(id: u64, path: String) -> Project {
        Project {
            id,
            path,
            group_id: None,
            archived: false,
            created_at: NO_PIPELINE_EPOCH,
            pipelines: BTreeMap::new(),
            jobs: JobTable::default(),
            next_iid: 1,
            autopilot: None,
        }
    }

    /// The latest (not retried) jobs of a pipeline, builds and bridges.
    pub fn latest_jobs(&self, pipeline_id: u64) -> impl Iterator<Item = &Job> {
        self.pipelines
            .get(&pipeline_id)
            .into_iter()
            .flat_map(|p| p.job_ids.iter())
            .filter_map(|id| self.jobs.get(id))
            .filter(|job| !job.retried)
    }

    /// A pipeline's composite status from its latest jobs.
    pub fn pipeline_status(&self, pipeline_id: u64) -> Status {
        crate::sim::status::composite(
            self.latest_jobs(pipeline_id)
                .map(|job| (job.status, job.allow_failure)),
        )
    }
}

/// When a project was made, unless told otherwise: 2020-01-01T00:00:00Z.
pub(crate) const NO_PIPELINE_EPOCH: SimTime = SimTime(1_577_836_800_000);

/// The whole simulated instance.
#[derive(Debug)]
pub(crate) struct World {
    pub projects: BTreeMap<u64, Project>,
    paths: HashMap<String, u64>,
    pub groups: BTreeMap<u64, Group>,
    /// Lowercased full path → group id.
    group_paths: HashMap<String, u64>,
    /// job id → project id
    job_index: HashMap<u64, u64>,
    next_job_id: u64,
    next_pipeline_id: u64,
    token_secret: u64,
    /// Jobs created longer ago than this are archived (not retryable, not playable).
    pub archive_after: Option<Duration>,
    pub interner: Interner,
    /// Build transitions waiting to be delivered to the webhooks.
    pub hooks: Outbox,
}

impl World {
    pub fn new(token_secret: u64, archive_after: Option<Duration>) -> World {
        World {
            projects: BTreeMap::new(),
            paths: HashMap::new(),
            groups: BTreeMap::new(),
            group_paths: HashMap::new(),
            job_index: HashMap::new(),
            next_job_id: 1,
            next_pipeline_id: 1,
            token_secret,
            archive_after,
            interner: Interner::default(),
            hooks: Outbox::default(),
        }
    }

    /// Adds a project; `None` if the id or the path is taken (by a project or a group). The
    /// groups of its namespace are created when missing (`a/b/app` is in group `a/b`, a
    /// subgroup of `a`).
    pub fn add_project(&mut self, id: u64, path: &str) -> Option<&mut Project> {
        let key = path.to_ascii_lowercase();
        if self.projects.contains_key(&id)
            || self.paths.contains_key(&key)
            || self.group_paths.contains_key(&key)
            || !valid_path(path)
        {
            return None;
        }
        let group_id = match path.rsplit_once('/') {
            Some((namespace, _)) => Some(self.ensure_group(namespace, NO_PIPELINE_EPOCH).ok()?),
            None => None,
        };
        self.paths.insert(key, id);
        let project = self
            .projects
            .entry(id)
            .or_insert_with(|| Project::new(id, path.to_owned()));
        project.group_id = group_id;
        Some(project)
    }

    /// The group at `full_path`, created (with its missing ancestors, made at `created_at`)
    /// when there is none. Fails when a project holds one of those paths.
    pub fn ensure_group(&mut self, full_path: &str, created_at: SimTime) -> Result<u64, PathError> {
        if !valid_path(full_path) {
            return Err(PathError::Invalid);
        }
        let mut parent_id = None;
        let mut prefix = String::new();
        for segment in full_path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(segment);
            let key = prefix.to_ascii_lowercase();
            if let Some(id) = self.group_paths.get(&key) {
                parent_id = Some(*id);
                continue;
            }
            if self.paths.contains_key(&key) {
                return Err(PathError::Taken);
            }
            let id = self.groups.keys().next_back().map_or(1, |id| id + 1);
            self.groups.insert(
                id,
                Group {
                    id,
                    name: display_name(segment),
                    path: segment.to_owned(),
                    full_path: prefix.clone(),
                    parent_id,
                    created_at,
                },
            );
            self.group_paths.insert(key, id);
            parent_id = Some(id);
        }
        parent_id.ok_or(PathError::Invalid)
    }

    /// Adds a group at `full_path` (its missing ancestors too); fails when the path is a
    /// project's or a group's already.
    pub fn add_group(&mut self, full_path: &str, created_at: SimTime) -> Result<u64, PathError> {
        let key = full_path.to_ascii_lowercase();
        if self.group_paths.contains_key(&key) || self.paths.contains_key(&key) {
            return Err(PathError::Taken);
        }
        self.ensure_group(full_path, created_at)
    }

    /// Resolves a group reference: a numeric id or a full path (case-insensitive).
    pub fn resolve_group(&self, reference: &str) -> Option<u64> {
        if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_digit()) {
            return reference
                .parse::<u64>()
                .ok()
                .filter(|id| self.groups.contains_key(id));
        }
        self.group_paths
            .get(&reference.to_ascii_lowercase())
            .copied()
    }

    /// The group and every group below it, by ascending id.
    pub fn group_and_descendants(&self, group_id: u64) -> Vec<u64> {
        let Some(group) = self.groups.get(&group_id) else {
            return Vec::new();
        };
        let prefix = format!("{}/", group.full_path.to_ascii_lowercase());
        self.groups
            .values()
            .filter(|g| g.id == group_id || g.full_path.to_ascii_lowercase().starts_with(&prefix))
            .map(|g| g.id)
            .collect()
    }

    /// The smallest unused project id.
    pub fn next_project_id(&self) -> u64 {
        self.projects.keys().next_back().map_or(1, |id| id + 1)
    }

    /// Resolves a project reference: a numeric id or a full path (case-insensitive).
    pub fn resolve_project(&self, reference: &str) -> Option<u64> {
        if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_digit()) {
            return reference
                .parse::<u64>()
                .ok()
                .filter(|id| self.projects.contains_key(id));
        }
        self.paths.get(&reference.to_ascii_lowercase()).copied()
    }

    pub fn allocate_job_id(&mut self) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        id
    }

    pub fn allocate_pipeline_id(&mut self) -> u64 {
        let id = self.next_pipeline_id;
        self.next_pipeline_id += 1;
        id
    }

    /// Inserts a job into its project and pipeline; false if either is missing.
    pub fn insert_job(&mut self, job: Job) -> bool {
        let Some(project) = self.projects.get_mut(&job.project_id) else {
            return false;
        };
        let Some(pipeline) = project.pipelines.get_mut(&job.pipeline_id) else {
            return false;
        };
        pipeline.job_ids.push(job.id);
        self.job_index.insert(job.id, job.project_id);
        project.jobs.insert(job.id, job);
        true
    }

    /// Removes a pipeline and its jobs.
    pub fn remove_pipeline(&mut self, project_id: u64, pipeline_id: u64) {
        let Some(project) = self.projects.get_mut(&project_id) else {
            return;
        };
        if let Some(pipeline) = project.pipelines.remove(&pipeline_id) {
            project.jobs.retain(|job| job.pipeline_id != pipeline_id);
            for job_id in pipeline.job_ids {
                self.job_index.remove(&job_id);
            }
        }
    }

    /// The project a job belongs to.
    pub fn project_of_job(&self, job_id: u64) -> Option<u64> {
        self.job_index.get(&job_id).copied()
    }

    pub fn job(&self, project_id: u64, job_id: u64) -> Option<&Job> {
        self.projects.get(&project_id)?.jobs.get(&job_id)
    }

    pub fn job_mut(&mut self, project_id: u64, job_id: u64) -> Option<&mut Job> {
        self.projects.get_mut(&project_id)?.jobs.get_mut(&job_id)
    }

    /// The CI job token of a job: `glcbt-<hex id>_<check>`, derived from the instance secret.
    pub fn job_token(&self, job_id: u64) -> String {
        format!(
            "glcbt-{job_id:x}_{:016x}",
            token_check(self.token_secret, job_id)
        )
    }

    /// The job a CI job token belongs to, if the token is genuine and the job exists.
    pub fn job_of_token(&self, token: &str) -> Option<(u64, u64)> {
        let rest = token.strip_prefix("glcbt-")?;
        let (id_hex, check_hex) = rest.split_once('_')?;
        let job_id = u64::from_str_radix(id_hex, 16).ok()?;
        let check = u64::from_str_radix(check_hex, 16).ok()?;
        if check_hex.len() != 16 || check != token_check(self.token_secret, job_id) {
            return None;
        }
        let project_id = self.project_of_job(job_id)?;
        Some((project_id, job_id))
    }

    /// Whether a job is archived (`archive_builds_older_than`).
    pub fn is_archived(&self, job: &Job, now: SimTime) -> bool {
        self.archive_after
            .is_some_and(|after| job.created_at < now.minus(after))
    }

    /// Records for the webhooks that a job has just been created (`from: None`) or moved from
    /// `from` to its current status.
    pub fn record_transition(&mut self, project_id: u64, job_id: u64, from: Option<Status>) {
        if let Some(job) = self
            .projects
            .get(&project_id)
            .and_then(|p| p.jobs.get(&job_id))
        {
            self.hooks.record(job, from);
        }
    }

    /// Total number of jobs (all projects).
    pub fn job_count(&self) -> usize {
        self.job_index.len()
    }
}

/// A full path GitLab could route: not empty, not all digits (that would read as an id), no
/// empty segment.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.bytes().all(|b| b.is_ascii_digit())
        && path.split('/').all(|segment| !segment.is_empty())
}

/// A keyed 64-bit mix (SplitMix64 finaliser): cheap, deterministic, good enough to make job
/// tokens unguessable by a client that does not know the secret.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn token_check(secret: u64, job_id: u64) -> u64 {
    mix64(secret ^ mix64(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_tokens_round_trip_and_reject_forgeries() {
        let mut world = World::new(42, None);
        world.add_project(1, "fleet/project-1");
        world.job_index.insert(7, 1);
        let token = world.job_token(7);
        assert_eq!(world.job_of_token(&token), Some((1, 7)));
        assert_eq!(World::new(43, None).job_of_token(&token), None);
        assert_eq!(world.job_of_token("glcbt-7_0000000000000000"), None);
        assert_eq!(world.job_of_token("not-a-token"), None);
    }

    #[test]
    fn projects_resolve_by_id_and_case_insensitive_path() {
        let mut world = World::new(1, None);
        world.add_project(3, "Group/Project");
        assert_eq!(world.resolve_project("3"), Some(3));
        assert_eq!(world.resolve_project("group/project"), Some(3));
        assert_eq!(world.resolve_project("4"), None);
        assert_eq!(world.resolve_project("group"), None);
        assert!(world.add_project(4, "group/PROJECT").is_none());
    }

    #[test]
    fn projects_make_their_groups_and_paths_stay_unique() {
        let mut world = World::new(1, None);
        let app = world.add_project(1, "Top/sub/app").expect("added").group_id;
        let top = world.resolve_group("top").expect("top made");
        let sub = world.resolve_group("TOP/SUB").expect("sub made");
        assert_eq!(app, Some(sub));
        assert_eq!(world.groups[&sub].parent_id, Some(top));
        assert_eq!(world.groups[&sub].full_path, "Top/sub");
        assert_eq!(world.groups[&top].name, "Top");
        assert_eq!(world.resolve_group(&sub.to_string()), Some(sub));
        assert_eq!(world.resolve_group("top/sub/app"), None);
        // A project's path is no group's, and the other way round.
        assert_eq!(
            world.add_group("top/sub/app", SimTime(0)),
            Err(PathError::Taken)
        );
        assert_eq!(
            world.add_group("top/sub", SimTime(0)),
            Err(PathError::Taken)
        );
        assert!(world.add_project(2, "top/sub").is_none());
        assert!(world.add_project(2, "top//x").is_none());
        assert_eq!(world.add_group("12", SimTime(0)), Err(PathError::Invalid));
        let deep = world
            .add_group("top/sub/deeper", SimTime(0))
            .expect("added");
        let other = world.add_group("topper", SimTime(0)).expect("added");
        assert_eq!(world.group_and_descendants(top), [top, sub, deep]);
        assert_eq!(world.group_and_descendants(other), [other]);
        assert!(
            world
                .add_project(3, "solo")
                .expect("no namespace")
                .group_id
                .is_none()
        );
        assert_eq!(display_name("project-7"), "Project 7");
    }
}
