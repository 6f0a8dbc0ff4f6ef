//! The per-project job cache: one observer per (GitLab instance, project), shared by every policy
//! that targets the project, synced incrementally.
//!
//! GitLab lists a project's jobs newest id first, and a job's status can change only while it is
//! unfinished (a retry makes a new job). After a sync the observer keeps a low-water mark: the
//! smallest id of the jobs still unfinished, or the newest id seen when none is. The next sync
//! pages from the newest job until it passes that mark and stops, so a quiet project costs one
//! request. Jobs that can wait for weeks (`manual`, `scheduled`) do not hold the mark back: they
//! are followed through their own `scope[]` listing, and only when a policy needs them.

use crate::gitlab::models::{Job, JobStatus, ProjectRef};
use crate::gitlab::{GitLabClient, GitLabError, ListJobsQuery};
use futures::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How far back the first sync of a project reads, and how long finished jobs stay cached.
pub const DEFAULT_HISTORY: SignedDuration = SignedDuration::from_hours(72);

/// At most this many pages are read in one sync, whatever the mark says: a safety brake against
/// a project with an ancient unfinished job.
const MAX_PAGES_PER_SYNC: usize = 50;
const PER_PAGE: usize = 100;

/// At most this many jobs are re-read by id in one sync; the rest wait for the next one.
const MAX_REREADS_PER_SYNC: usize = 200;

/// Completed jobs' log tails are cached (a finished log never changes); bounded.
const LOG_CACHE_CAPACITY: usize = 512;

/// What one sync did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Jobs read from GitLab in this sync (new or refreshed).
    pub jobs_read: usize,
    /// Jobs that were new to the cache.
    pub jobs_new: usize,
    /// Jobs re-read one by one because they left a listing (played, finished, deleted).
    pub jobs_reread: usize,
}

/// A job whose snapshot changed in a sync, handed to metrics accounting.
pub type Refreshed = Vec<Job>;

/// The cache of one project's jobs.
#[derive(Debug)]
pub struct ProjectObserver {
    project: ProjectRef,
    history: SignedDuration,
    jobs: BTreeMap<u64, Job>,
    newest_seen: Option<u64>,
    last_sync: Option<Timestamp>,
    log_tails: HashMap<u64, String>,
    log_order: VecDeque<u64>,
    /// Bumped whenever a job of the pipeline appears or changes in the project list (which
    /// lists every attempt), so a pipeline's job list fetched earlier is known to be current.
    pipeline_versions: HashMap<u64, u64>,
    pipeline_jobs: HashMap<u64, (u64, Vec<Job>)>,
}

impl ProjectObserver {
    pub fn new(project: ProjectRef, history: SignedDuration) -> Self {
        ProjectObserver {
            project,
            history,
            jobs: BTreeMap::new(),
            newest_seen: None,
            last_sync: None,
            log_tails: HashMap::new(),
            log_order: VecDeque::new(),
            pipeline_versions: HashMap::new(),
            pipeline_jobs: HashMap::new(),
        }
    }

    /// When the last successful sync finished (on the engine's clock).
    pub fn last_sync(&self) -> Option<Timestamp> {
        self.last_sync
    }

    /// The jobs known, newest first.
    pub fn jobs_newest_first(&self) -> Vec<Job> {
        self.jobs.values().rev().cloned().collect()
    }

    /// The smallest id whose status may still change without a new job being created, i.e.
    /// where the next sync may stop paging.
    pub fn low_water_mark(&self) -> Option<u64> {
        self.jobs
            .values()
            .find(|j| !j.status.is_completed() && !j.status.is_blocked())
            .map(|j| j.id)
            .or(self.newest_seen)
    }

    /// Reads what changed since the last sync. `follow_blocked` also refreshes manual and
    /// scheduled jobs through their own listing. Returns the jobs whose snapshot changed.
    pub async fn sync(
        &mut self,
        client: &GitLabClient,
        now: Timestamp,
        follow_blocked: bool,
    ) -> Result<(SyncStats, Refreshed), GitLabError> {
        let mut stats = SyncStats::default();
        let mut refreshed = Vec::new();
        let mark = self.low_water_mark();
        let horizon = now - self.history;
        let behind_mark = mark.map_or(0, |m| self.jobs.range(m..).count());
        if mark.is_some() && behind_mark > PER_PAGE {
            // An old unfinished job holds the mark far back: paging down to it would re-read
            // every newer job. Read the new jobs, then the unfinished ones through their scope.
            self.sync_new_and_active(client, &mut stats, &mut refreshed)
                .await?;
        } else {
            self.sync_down_to_mark(client, mark, horizon, &mut stats, &mut refreshed)
                .await?;
        }
        if follow_blocked {
            self.sync_blocked(client, &mut stats, &mut refreshed)
                .await?;
        }
        self.prune(horizon);
        self.last_sync = Some(now);
        Ok((stats, refreshed))
    }

    /// Pages from the newest job down past the mark (or, on the first sync, the history
    /// horizon), refreshing everything on the way.
    async fn sync_down_to_mark(
        &mut self,
        client: &GitLabClient,
        mark: Option<u64>,
        horizon: Timestamp,
        stats: &mut SyncStats,
        refreshed: &mut Refreshed,
    ) -> Result<(), GitLabError> {
        let mut stream =
            Box::pin(client.list_project_jobs(&self.project, &ListJobsQuery::default()));
        let mut seen = std::collections::HashSet::new();
        let mut complete = true;
        while let Some(job) = stream.try_next().await? {
            let past_mark = mark.is_some_and(|m| job.id < m);
            let past_horizon = job.created_at < horizon;
            if past_mark || (mark.is_none() && past_horizon) {
                break;
            }
            if seen.len() >= MAX_PAGES_PER_SYNC * PER_PAGE {
                tracing::warn!(project = %self.project, "sync stopped at the page limit");
                complete = false;
                break;
            }
            seen.insert(job.id);
            stats.jobs_read += 1;
            self.absorb(job, stats, refreshed);
        }
        drop(stream);
        if complete && let Some(mark) = mark {
            // Everything at or above the mark was listed: an unfinished job that was not is
            // gone from GitLab (deleted with its pipeline) and must not hold the mark forever.
            self.jobs.retain(|id, j| {
                *id < mark || seen.contains(id) || j.status.is_completed() || j.status.is_blocked()
            });
        }

        Ok(())
    }

    /// Reads the jobs newer than any seen, then every unfinished job through a `scope[]`
    /// listing; a cached unfinished job that is no longer listed has moved on and is re-read.
    async fn sync_new_and_active(
        &mut self,
        client: &GitLabClient,
        stats: &mut SyncStats,
        refreshed: &mut Refreshed,
    ) -> Result<(), GitLabError> {
        let newest = self.newest_seen;
        let mut stream =
            Box::pin(client.list_project_jobs(&self.project, &ListJobsQuery::default()));
        let mut read = 0usize;
        while let Some(job) = stream.try_next().await? {
            if newest.is_some_and(|n| job.id <= n) || read >= MAX_PAGES_PER_SYNC * PER_PAGE {
                break;
            }
            read += 1;
            stats.jobs_read += 1;
            self.absorb(job, stats, refreshed);
        }
        drop(stream);

        // The statuses every GitLab version accepts as a scope (newer ones would be a 400 on
        // older servers); jobs in the others are re-read one by one below.
        let query = ListJobsQuery::with_scopes([
            JobStatus::Created,
            JobStatus::WaitingForResource,
            JobStatus::Preparing,
            JobStatus::Pending,
            JobStatus::Running,
        ]);
        let active: Vec<Job> = client
            .list_project_jobs(&self.project, &query)
            .try_collect()
            .await?;
        let listed: std::collections::HashSet<u64> = active.iter().map(|j| j.id).collect();
        for job in active {
            stats.jobs_read += 1;
            self.absorb(job, stats, refreshed);
        }
        let moved_on: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| !j.status.is_completed() && !j.status.is_blocked())
            .filter(|j| !listed.contains(&j.id))
            .map(|j| j.id)
            .take(MAX_REREADS_PER_SYNC)
            .collect();
        self.reread(client, moved_on, stats, refreshed).await
    }

    /// Re-reads jobs by id; a job GitLab no longer has is forgotten.
    async fn reread(
        &mut self,
        client: &GitLabClient,
        ids: Vec<u64>,
        stats: &mut SyncStats,
        refreshed: &mut Refreshed,
    ) -> Result<(), GitLabError> {
        for id in ids {
            match client.get_job(&self.project, id).await {
                Ok(job) => {
                    stats.jobs_reread += 1;
                    self.absorb(job, stats, refreshed);
                }
                Err(err) if err.is_not_found() => {
                    self.jobs.remove(&id);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Lists manual and scheduled jobs; any cached job that was blocked and is no longer listed
    /// has moved on (played, canceled) and is re-read by id.
    async fn sync_blocked(
        &mut self,
        client: &GitLabClient,
        stats: &mut SyncStats,
        refreshed: &mut Refreshed,
    ) -> Result<(), GitLabError> {
        let query = ListJobsQuery {
            scopes: vec![JobStatus::Manual, JobStatus::Scheduled],
            ..ListJobsQuery::default()
        };
        let listed: Vec<Job> = client
            .list_project_jobs(&self.project, &query)
            .try_collect()
            .await?;
        let listed_ids: std::collections::HashSet<u64> = listed.iter().map(|j| j.id).collect();
        let moved_on: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.status.is_blocked() && !listed_ids.contains(&j.id))
            .map(|j| j.id)
            .collect();
        for job in listed {
            stats.jobs_read += 1;
            self.absorb(job, stats, refreshed);
        }
        self.reread(client, moved_on, stats, refreshed).await
    }

    fn absorb(&mut self, job: Job, stats: &mut SyncStats, refreshed: &mut Refreshed) {
        self.newest_seen = Some(self.newest_seen.map_or(job.id, |n| n.max(job.id)));
        match self.jobs.get(&job.id) {
            Some(old) if *old == job => return,
            Some(_) => {}
            None => stats.jobs_new += 1,
        }
        *self.pipeline_versions.entry(job.pipeline.id).or_default() += 1;
        refreshed.push(job.clone());
        self.jobs.insert(job.id, job);
    }

    /// The job list of a pipeline (every attempt) read earlier, if no job of the pipeline has
    /// appeared or changed since.
    pub fn cached_pipeline_jobs(&self, pipeline_id: u64) -> Option<&Vec<Job>> {
        let current = self.pipeline_versions.get(&pipeline_id)?;
        match self.pipeline_jobs.get(&pipeline_id) {
            Some((version, jobs)) if version == current => Some(jobs),
            _ => None,
        }
    }

    /// Remembers a pipeline's job list as of the current state of the cache.
    pub fn cache_pipeline_jobs(&mut self, pipeline_id: u64, jobs: &[Job]) {
        if let Some(version) = self.pipeline_versions.get(&pipeline_id) {
            self.pipeline_jobs
                .insert(pipeline_id, (*version, jobs.to_vec()));
        }
    }

    /// Forgets finished jobs older than the history horizon; unfinished ones stay (they hold
    /// the mark) and so do blocked ones (they are followed separately).
    fn prune(&mut self, horizon: Timestamp) {
        self.jobs
            .retain(|_, j| j.created_at >= horizon || !j.status.is_completed());
        let jobs = &self.jobs;
        self.log_tails.retain(|id, _| jobs.contains_key(id));
        self.log_order.retain(|id| jobs.contains_key(id));
        let pipelines: std::collections::HashSet<u64> =
            jobs.values().map(|j| j.pipeline.id).collect();
        self.pipeline_versions
            .retain(|id, _| pipelines.contains(id));
        self.pipeline_jobs.retain(|id, _| pipelines.contains(id));
    }

    /// A cached log tail of a completed job.
    pub fn cached_log_tail(&self, job_id: u64) -> Option<&String> {
        self.log_tails.get(&job_id)
    }

    /// Caches the log tail of a job if it is completed (its log can no longer change).
    pub fn cache_log_tail(&mut self, job_id: u64, tail: &str) {
        let completed = self
            .jobs
            .get(&job_id)
            .is_some_and(|j| j.status.is_completed());
        if !completed || self.log_tails.contains_key(&job_id) {
            return;
        }
        if self.log_order.len() >= LOG_CACHE_CAPACITY
            && let Some(oldest) = self.log_order.pop_front()
        {
            self.log_tails.remove(&oldest);
        }
        self.log_order.push_back(job_id);
        self.log_tails.insert(job_id, tail.to_owned());
    }

    /// Replaces a cached job by a fresher snapshot (after an action).
    pub fn update_job(&mut self, job: Job) {
        self.newest_seen = Some(self.newest_seen.map_or(job.id, |n| n.max(job.id)));
        *self.pipeline_versions.entry(job.pipeline.id).or_default() += 1;
        self.jobs.insert(job.id, job);
    }

    /// Jobs per status, for the `jobs` gauge.
    pub fn status_counts(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for job in self.jobs.values() {
            *counts.entry(job.status.as_str().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// Seconds the oldest job still waiting for a runner has waited, if any waits.
    pub fn oldest_pending_age(&self, now: Timestamp) -> Option<f64> {
        self.jobs
            .values()
            .filter(|j| j.status.is_waiting_for_runner())
            .map(|j| {
                j.queued_duration
                    .unwrap_or_else(|| (now - j.created_at).as_secs_f64())
            })
            .fold(None, |acc: Option<f64>, age| {
                Some(acc.map_or(age, |a| a.max(age)))
            })
    }
}
