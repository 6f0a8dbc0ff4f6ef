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

/// Completed jobs' log tails are cached (a finished log never changes); bounded.
const LOG_CACHE_CAPACITY: usize = 512;

/// What one sync did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Jobs read from GitLab in this sync (new or refreshed).
    pub jobs_read: usize,
    /// Jobs that were new to the cache.
    pub jobs_new: usize,
    /// Manual/scheduled jobs that left that state and were re-read one by one.
    pub blocked_rechecked: usize,
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
        }
    }

    pub fn project(&self) -> &ProjectRef {
        &self.project
    }

    /// When the last successful sync finished (on the engine's clock).
    pub fn last_sync(&self) -> Option<Timestamp> {
        self.last_sync
    }

    /// The jobs known, newest first.
    pub fn jobs_newest_first(&self) -> Vec<Job> {
        self.jobs.values().rev().cloned().collect()
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
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
            self.absorb(job, &mut stats, &mut refreshed);
        }
        drop(stream);
        if complete && let Some(mark) = mark {
            // Everything at or above the mark was listed: an unfinished job that was not is
            // gone from GitLab (deleted with its pipeline) and must not hold the mark forever.
            self.jobs.retain(|id, j| {
                *id < mark || seen.contains(id) || j.status.is_completed() || j.status.is_blocked()
            });
        }

        if follow_blocked {
            self.sync_blocked(client, &mut stats, &mut refreshed)
                .await?;
        }
        self.prune(horizon);
        self.last_sync = Some(now);
        Ok((stats, refreshed))
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
        for id in moved_on {
            match client.get_job(&self.project, id).await {
                Ok(job) => {
                    stats.blocked_rechecked += 1;
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

    fn absorb(&mut self, job: Job, stats: &mut SyncStats, refreshed: &mut Refreshed) {
        self.newest_seen = Some(self.newest_seen.map_or(job.id, |n| n.max(job.id)));
        match self.jobs.get(&job.id) {
            Some(old) if *old == job => {}
            Some(_) => {
                refreshed.push(job.clone());
                self.jobs.insert(job.id, job);
            }
            None => {
                stats.jobs_new += 1;
                refreshed.push(job.clone());
                self.jobs.insert(job.id, job);
            }
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
