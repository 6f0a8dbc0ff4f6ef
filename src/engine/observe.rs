//! The per-project job cache: one observer per (GitLab instance, project), shared by every policy
//! that targets the project, synced incrementally, holding compact records.
//!
//! GitLab lists a project's jobs newest id first, and a job's status can change only while it is
//! unfinished (a retry makes a new job). After a sync the observer keeps a low-water mark: the
//! smallest id of the jobs still unfinished, or the newest id seen when none is. The next sync
//! pages from the newest job until it has read the mark's job and stops (a page that ends with
//! it is the last), so a quiet project costs one request. Jobs that can wait for weeks
//! (`manual`, `scheduled`) are played or canceled under the id they have, so only a listing
//! that reaches them sees them move: they hold the mark while the jobs above them fit in one
//! page (the listing then reaches them at no extra request, every [`REACHED_BLOCKED_EVERY`]:
//! the syncs between stop at the oldest unfinished job, and read a few jobs instead of up to a
//! page of old ones), and further back they are followed through their own `scope[]` listing,
//! at every sync when a policy targets blocked statuses, else at most every
//! [`UNREACHED_BLOCKED_EVERY`] (both every [`UNREACHED_BLOCKED_EVERY_WITH_HOOKS`] while the
//! project's Job Hook is healthy: a played job is delivered).
//!
//! # What is kept
//! - Every unfinished job, whatever its age: the first sync lists the unfinished statuses through
//!   `scope[]` besides reading back to the history horizon, so a job pending for 100 h is seen.
//! - Finished jobs that a policy watching the project may act on
//!   ([`may_act_on`](crate::policy::may_act_on)), until they fall behind the history horizon
//!   (or, for a policy with `artifactsExpireWithin`, the artifacts horizon).
//! - Nothing else: a finished job no rule can touch only updates the lookups of
//!   [`ProjectJobs`] (newest pipeline per ref, newest attempt per pipeline) and is dropped; its id
//!   is remembered (the newest [`MAX_SETTLED`]), so it is not taken for news at the next listing.
//!
//! # Attempts
//! Every job is counted once, when first seen, as an attempt of its name in its pipeline. After
//! the first sync every job created since its horizon has been seen, so the attempts of every
//! pipeline created since then are known without listing the pipeline
//! ([`ProjectJobs::attempts_of`]). Only a listing that completed moves the point where the next
//! sync stops, so a sync cut short by an error leaves no gap.

use super::dropped::{SettledIds, Wakeups};
use super::reconcile::Clock;
use crate::gitlab::models::{JobStatus, ProjectRef};
use crate::gitlab::records::{JobRecord, JobWire, Names};
use crate::gitlab::{GitLabClient, GitLabError, ListJobsQuery, PipelineJobsQuery};
use crate::metrics::JobEvents;
use crate::policy::{CompiledPolicy, PolicyKey, ProjectJobs, Reach, earliest_action};
use futures::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock};

/// How far back a project's first sync reads, and how long finished jobs stay cached.
pub const DEFAULT_HISTORY: SignedDuration = SignedDuration::from_hours(72);

/// How far back jobs are looked at for a policy with an `artifactsExpireWithin` rule: GitLab's
/// default `expire_in` is 30 days, so a job's artifacts can expire that long after it ran.
pub const ARTIFACTS_HISTORY: SignedDuration = SignedDuration::from_hours(30 * 24);

const PER_PAGE: usize = 100;
/// GitLab's largest page.
const PER_PAGE_MAX: u32 = crate::gitlab::PER_PAGE;
/// The smallest page asked for.
const MIN_PAGE: u32 = 5;

/// Jobs are listed by id and their pipelines' creation is compared by time: a pipeline created
/// this soon after the first sync's horizon is not taken as completely seen.
const COMPLETENESS_MARGIN: SignedDuration = SignedDuration::from_mins(5);

/// At most this many settled ids are remembered (the newest ones): enough to know that more
/// than a page of jobs lies above the mark, when the next sync reads only newer jobs, which
/// the settled ids cannot be. They are kept when the mark passes them: a retry can re-open a
/// job far below the mark (see `retried_pipelines`), and the count of the jobs above it then
/// tells one page from several (not knowing it, a sync read three pages at every run while
/// such a job ran), and an old job listed again is not taken for news.
pub(super) const MAX_SETTLED: usize = PER_PAGE + 1;

/// At most this many jobs are re-read by id in one sync; the rest wait for the next one.
const MAX_REREADS_PER_SYNC: usize = 200;

/// A finished job that a rule may act on within this long is kept; one that a rule may act
/// on only later (artifacts expiring in weeks) is dropped and re-read when the time comes.
const WAKE_AHEAD: SignedDuration = SignedDuration::from_hours(1);

/// How often blocked jobs beyond the listing's reach are listed through their own `scope[]`
/// when no watching policy targets blocked statuses: only to see one played (and finished)
/// weeks after it was created, which may wait this long.
pub const UNREACHED_BLOCKED_EVERY: SignedDuration = SignedDuration::from_mins(10);

/// How often a sync's listing goes down to the blocked jobs within its reach, when no watching
/// policy targets blocked statuses: only to see one played (and finished) under the id it had.
/// The syncs between stop at the oldest unfinished job. On a busy project that spares reading
/// up to a page of old jobs (about 240 KB of JSON) at every sync to find that a manual job of a
/// day ago is still manual.
pub const REACHED_BLOCKED_EVERY: SignedDuration = SignedDuration::from_mins(2);

/// The same while the project's Job Hook is healthy: a played job's delivery already marks its
/// held record stale (nothing is decided on it before it is read again), so the listing only
/// lets the record go.
pub const UNREACHED_BLOCKED_EVERY_WITH_HOOKS: SignedDuration = SignedDuration::from_hours(1);

/// What a sync follows besides the jobs its listing reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    /// A watching policy may act on manual or scheduled jobs: they are listed through their own
    /// `scope[]` at every sync. Otherwise only those beyond the listing's reach are, at most
    /// every [`UNREACHED_BLOCKED_EVERY`].
    pub follow_blocked: bool,
    /// The project's Job Hook can be relied on: a job that moves is delivered, so the listings
    /// that only look for jobs changing under an old id come less often
    /// ([`UNREACHED_BLOCKED_EVERY_WITH_HOOKS`]) or not at all (jobs re-opened by a retry).
    pub hook_healthy: bool,
}

impl SyncOptions {
    /// How often blocked jobs beyond the listing's reach are listed.
    fn unreached_blocked_every(self) -> SignedDuration {
        if self.hook_healthy {
            UNREACHED_BLOCKED_EVERY_WITH_HOOKS
        } else {
            UNREACHED_BLOCKED_EVERY
        }
    }

    /// How often the listing goes down to the blocked jobs within its reach.
    fn reached_blocked_every(self) -> SignedDuration {
        if self.hook_healthy {
            UNREACHED_BLOCKED_EVERY_WITH_HOOKS
        } else {
            REACHED_BLOCKED_EVERY
        }
    }
}

/// A job created this long after its pipeline is a retry (GitLab creates a pipeline's jobs with
/// it; only a retry adds one later), which may have re-opened later jobs of the pipeline.
const RETRY_AFTER_PIPELINE: SignedDuration = SignedDuration::from_mins(1);

/// At most this many retried pipelines are listed for re-opened jobs in one sync; the rest wait.
const MAX_REOPEN_LISTINGS_PER_SYNC: usize = 20;

/// How long before its first sync a project counts as having listed its blocked jobs: a
/// second of `period` chosen by a hash of the project (stable, spread).
fn blocked_listing_offset(project: &ProjectRef, period: SignedDuration) -> SignedDuration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    project.to_string().hash(&mut hasher);
    let period = period.as_secs().max(1) as u64;
    SignedDuration::from_secs((hasher.finish() % period) as i64)
}

/// Completed jobs' log tails are cached (a finished log never changes); bounded.
const LOG_CACHE_CAPACITY: usize = 512;

/// The statuses every GitLab version accepts as a scope that an unfinished, unblocked job can
/// be in (newer ones would be a 400 on older servers); jobs in others are re-read one by one.
const ACTIVE_SCOPES: [JobStatus; 5] = [
    JobStatus::Created,
    JobStatus::WaitingForResource,
    JobStatus::Preparing,
    JobStatus::Pending,
    JobStatus::Running,
];

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

/// A job whose snapshot changed, and what the change counts in the metrics.
#[derive(Debug, Clone)]
pub struct Refresh {
    pub job: JobRecord,
    pub events: JobEvents,
}

/// The jobs whose snapshot changed in a sync.
pub type Refreshed = Vec<Refresh>;

/// What an observer read for rules beyond the listings: most projects never need any, so it is
/// held apart (8 bytes in the observer), only while there is some.
#[derive(Debug, Default)]
struct Facts {
    log_tails: HashMap<u64, String>,
    log_order: VecDeque<u64>,
    /// Pipeline job lists (every attempt) read since no job of the pipeline changed.
    pipeline_jobs: HashMap<u64, Vec<JobRecord>>,
}

impl Facts {
    fn is_empty(&self) -> bool {
        self.log_tails.is_empty() && self.pipeline_jobs.is_empty()
    }
}

/// The cache of one project's jobs.
#[derive(Debug)]
pub struct ProjectObserver {
    project: ProjectRef,
    history: SignedDuration,
    jobs: ProjectJobs,
    names: Names,
    /// The newest finished jobs that were dropped: listed again, they are not news.
    settled: SettledIds,
    newest_seen: Option<u64>,
    last_sync: Option<Timestamp>,
    /// Pipeline job lists and log tails, while there are some.
    facts: Option<Box<Facts>>,
    /// The policies that watch this project, as of their last run.
    watchers: Vec<Arc<CompiledPolicy>>,
    /// Jobs created between the last two syncs: how many the next one may expect.
    recent_arrivals: usize,
    /// How far back jobs are looked at, as of the last sync.
    reach: Reach,
    /// Jobs that started or failed before this moment are not counted in the metrics (see
    /// [`JobEvents::of_change`]).
    counting_since: Timestamp,
    /// Finished jobs a rule may act on only later, to re-read then.
    wakeups: Wakeups,
    /// A policy with new rules watches the project: list it again back to the horizon.
    relist: bool,
    /// When manual and scheduled jobs were last listed through their own `scope[]`.
    blocked_listed_at: Option<Timestamp>,
    /// When a sync's listing last went down to the blocked jobs within its reach.
    blocked_reached_at: Option<Timestamp>,
    /// Blocked jobs below this id are beyond the listing's reach: they no longer hold the mark
    /// (how many jobs lie above them is not known any more once the mark has passed them).
    blocked_reach_floor: u64,
    /// Held jobs that a Job Hook delivery said have moved on, not read since: nothing is decided
    /// on them before they are read (or listed) again.
    stale: HashSet<u64>,
    /// Pipelines whose retried job succeeded since the last sync. A retry re-opens the jobs of
    /// later stages that the failure had skipped (`skipped` → `created`, under their old ids,
    /// with no Job Hook), and they are queued once it succeeds: below the low-water mark no
    /// listing reaches them, so the next sync lists the pipeline's jobs (every status), and the
    /// re-opened ones are then kept and followed.
    retried_pipelines: Vec<u64>,
}

impl ProjectObserver {
    pub fn new(project: ProjectRef, history: SignedDuration) -> Self {
        ProjectObserver {
            project,
            history,
            jobs: ProjectJobs::new(),
            names: Names::default(),
            settled: SettledIds::default(),
            newest_seen: None,
            last_sync: None,
            facts: None,
            watchers: Vec::new(),
            recent_arrivals: 0,
            reach: Reach {
                now: Timestamp::MIN,
                history_start: Timestamp::MIN,
                artifacts_start: Timestamp::MIN,
            },
            wakeups: Wakeups::default(),
            counting_since: Timestamp::MIN,
            relist: false,
            blocked_listed_at: None,
            blocked_reached_at: None,
            blocked_reach_floor: 0,
            stale: HashSet::new(),
            retried_pipelines: Vec::new(),
        }
    }

    /// The observer with its strings in `names`, shared with other observers.
    pub fn with_names(mut self, names: Names) -> Self {
        self.names = names;
        self
    }

    /// The observer counting in the metrics only the jobs that start or fail from `start` on
    /// (when this process began observing).
    pub fn counting_since(mut self, start: Timestamp) -> Self {
        self.counting_since = start;
        self
    }

    /// Marks a held job as moved on, by what a delivery said: it is read before anything is
    /// decided on it. A job not held is left alone (it is decided on only once read or listed).
    pub fn mark_stale(&mut self, id: u64) {
        if self.jobs.contains(id) {
            self.stale.insert(id);
        }
    }

    /// True when the held record of job `id` is stale ([`mark_stale`](Self::mark_stale)).
    pub fn is_stale(&self, id: u64) -> bool {
        self.stale.contains(&id)
    }

    /// True when some held job is stale.
    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Forgets a job GitLab no longer has.
    pub fn forget_gone(&mut self, id: u64) {
        self.stale.remove(&id);
        self.jobs.remove(id);
    }

    pub fn project(&self) -> &ProjectRef {
        &self.project
    }

    /// When the last successful sync finished (on the engine's clock).
    pub fn last_sync(&self) -> Option<Timestamp> {
        self.last_sync
    }

    /// The jobs kept.
    pub fn jobs(&self) -> &ProjectJobs {
        &self.jobs
    }

    /// The pipeline job lists known to be current.
    pub fn pipeline_jobs(&self) -> &HashMap<u64, Vec<JobRecord>> {
        static NONE: LazyLock<HashMap<u64, Vec<JobRecord>>> = LazyLock::new(HashMap::new);
        self.facts.as_ref().map_or(&NONE, |f| &f.pipeline_jobs)
    }

    /// The cached log tails of completed jobs.
    pub fn log_tails(&self) -> &HashMap<u64, String> {
        static NONE: LazyLock<HashMap<u64, String>> = LazyLock::new(HashMap::new);
        self.facts.as_ref().map_or(&NONE, |f| &f.log_tails)
    }

    /// The facts, made when there are none yet.
    fn facts_mut(&mut self) -> &mut Facts {
        self.facts.get_or_insert_default()
    }

    /// Forgets the pipeline job list of `pipeline_id`: one of its jobs changed.
    fn forget_pipeline_jobs(&mut self, pipeline_id: u64) {
        if let Some(facts) = &mut self.facts {
            facts.pipeline_jobs.remove(&pipeline_id);
        }
    }

    /// Gives back the facts' memory when none is left.
    fn drop_empty_facts(&mut self) {
        if self.facts.as_ref().is_some_and(|f| f.is_empty()) {
            self.facts = None;
        }
    }

    /// Records that `policy` watches this project (replacing its earlier version).
    ///
    /// A policy new to the project, or one whose rules changed, may want finished jobs that
    /// were dropped: the next sync lists the project again back to the horizon.
    pub fn watch(&mut self, policy: &Arc<CompiledPolicy>) {
        let wants_more = match self.watchers.iter_mut().find(|w| w.key == policy.key) {
            Some(slot) => {
                let changed = slot.rules_fingerprint != policy.rules_fingerprint;
                *slot = policy.clone();
                changed
            }
            None => {
                self.watchers.push(policy.clone());
                true
            }
        };
        if wants_more && self.last_sync.is_some() {
            self.relist = true;
        }
    }

    /// The policies that watch this project, as of their last run.
    pub fn watchers(&self) -> &[Arc<CompiledPolicy>] {
        &self.watchers
    }

    /// Forgets a policy; returns true when no policy watches the project any more.
    pub fn unwatch(&mut self, key: &PolicyKey) -> bool {
        self.watchers.retain(|w| &w.key != key);
        self.watchers.is_empty()
    }

    /// The smallest id whose status may still change without a new job being created, i.e.
    /// where the next sync may stop paging: the oldest unfinished job that is not blocked (or
    /// the newest id seen when none is), or an older blocked job that lies within one page of
    /// the newest jobs known. A blocked job further back does not hold the mark, then or ever
    /// after: paging down to it would re-read every newer job at each sync.
    pub fn low_water_mark(&self) -> Option<u64> {
        let alive = self.unfinished_mark();
        let blocked_in_reach = self
            .jobs
            .from_id(self.blocked_reach_floor)
            .filter(|j| j.status.is_blocked())
            .map(|j| j.id)
            .find(|&id| self.known_from(id) <= PER_PAGE);
        match (alive, blocked_in_reach) {
            (Some(alive), Some(blocked)) => Some(alive.min(blocked)),
            (alive, blocked) => alive.or(blocked),
        }
    }

    /// The low-water mark without the blocked jobs: the oldest unfinished job that is not
    /// blocked, or the newest id a listing saw when that is older. A held unfinished job can be
    /// newer than every listed one (a retry's new attempt, a job read for a delivery): a sync
    /// that stopped at it would never list the jobs created between the last listing and it.
    /// A sync whose listing need not go down to the blocked jobs in its reach stops here.
    fn unfinished_mark(&self) -> Option<u64> {
        let oldest_unfinished = self
            .jobs
            .from_id(0)
            .find(|j| !j.status.is_completed() && !j.status.is_blocked())
            .map(|j| j.id);
        match (oldest_unfinished, self.newest_seen) {
            (Some(unfinished), Some(listed)) => Some(unfinished.min(listed)),
            (unfinished, listed) => unfinished.or(listed),
        }
    }

    /// How many jobs with an id of at least `id` are known (kept or settled).
    fn known_from(&self, id: u64) -> usize {
        self.jobs.from_id(id).count() + self.settled.count_from(id)
    }

    /// How far back jobs are looked at, at `now`: the history for every rule, and as far back
    /// as artifacts can live for rules with `artifactsExpireWithin`.
    fn reach_at(&self, now: Timestamp) -> Reach {
        let back = |span: SignedDuration| now.checked_sub(span).unwrap_or(Timestamp::MIN);
        Reach {
            now,
            history_start: back(self.history),
            artifacts_start: back(self.history.max(ARTIFACTS_HISTORY)),
        }
    }

    /// How far back finished jobs are listed and kept: the history, or the artifacts history
    /// when a watching policy has an `artifactsExpireWithin` rule.
    fn horizon(&self) -> Timestamp {
        let wants_artifacts = self.watchers.iter().any(|p| {
            p.rules
                .iter()
                .any(|r| r.conditions.artifacts_expire_within.is_some())
        });
        if wants_artifacts {
            self.reach.artifacts_start
        } else {
            self.reach.history_start
        }
    }

    /// Reads what changed since the last sync, and what `options` says to follow besides.
    /// Returns the jobs whose snapshot changed.
    ///
    /// `now` is when the sync started; `clock` tells when each page was answered, which a
    /// pending job's wait is counted back from (a page may come long after the start, after a
    /// rate limit: counting back from the start would make the wait look longer than it is).
    pub async fn sync(
        &mut self,
        client: &GitLabClient,
        now: Timestamp,
        clock: &Clock,
        options: SyncOptions,
    ) -> Result<(SyncStats, Refreshed), GitLabError> {
        let mut run = Sync {
            clock: clock.clone(),
            newest_before: self.newest_seen,
            arrivals: 0,
            stats: SyncStats::default(),
            refreshed: Vec::new(),
        };
        let first = self.last_sync.is_none();
        if first {
            // The first listing of blocked jobs beyond the listing's reach falls due within
            // its period at a point fixed by the project, so a fleet's projects do not all pay
            // for it in the same run.
            let offset = blocked_listing_offset(&self.project, options.unreached_blocked_every());
            self.blocked_listed_at = now.checked_sub(offset).ok();
            let offset = blocked_listing_offset(&self.project, options.reached_blocked_every());
            self.blocked_reached_at = now.checked_sub(offset).ok();
        }
        let relist = !first && std::mem::take(&mut self.relist);
        if relist {
            // Jobs dropped before may be wanted now: none is skipped as settled.
            self.settled = SettledIds::default();
        }
        self.reach = self.reach_at(now);
        let listed_down_to = if first || relist {
            self.list_to_horizon(client, first, &mut run).await?
        } else {
            self.list_changes(client, now, options, &mut run).await?
        };
        self.follow_beyond_listing(client, listed_down_to, now, options, &mut run)
            .await?;
        self.wake_due(client, &mut run).await?;
        self.prune();
        self.last_sync = Some(now);
        self.recent_arrivals = run.arrivals;
        Ok((run.stats, run.refreshed))
    }

    /// Lists every job back to the horizon, then (on the `first` sync) the unfinished ones
    /// older than it: after that they are followed until they finish. Returns the smallest id
    /// the listing covered.
    async fn list_to_horizon(
        &mut self,
        client: &GitLabClient,
        first: bool,
        run: &mut Sync,
    ) -> Result<u64, GitLabError> {
        let horizon = self.horizon();
        let (reached, seen) = self
            .list_down(client, Until::OlderThan(horizon), PER_PAGE_MAX, run)
            .await?;
        let listed_down_to = match reached {
            Reached::Until => seen.iter().min().copied().unwrap_or(u64::MAX),
            Reached::End => 0,
        };
        // Every job since the horizon has now been seen once: so has every attempt of the
        // pipelines created since (with a margin for ids and clocks that disagree).
        self.jobs.set_complete_since(match reached {
            Reached::Until => horizon
                .checked_add(COMPLETENESS_MARGIN)
                .unwrap_or(Timestamp::MAX),
            Reached::End => Timestamp::MIN,
        });
        if first {
            self.sync_active(client, run).await?;
        }
        Ok(listed_down_to)
    }

    /// Lists what changed since the last sync: down to the low-water mark when the jobs above
    /// it fit in a page, else the new jobs and the unfinished ones through their scope. Returns
    /// the smallest id the listing covered: a blocked job that holds the mark counts as covered
    /// between the syncs that go down to it ([`REACHED_BLOCKED_EVERY`]), which stop at the
    /// oldest unfinished job instead (sooner when a delivery said a held job moved).
    async fn list_changes(
        &mut self,
        client: &GitLabClient,
        now: Timestamp,
        options: SyncOptions,
        run: &mut Sync,
    ) -> Result<u64, GitLabError> {
        let mark = self.low_water_mark();
        let behind_mark = mark.map_or(0, |m| self.known_from(m));
        let arrivals = page_for(self.recent_arrivals);
        match mark {
            Some(mark) if behind_mark <= PER_PAGE => {
                let reach_blocked = self.has_stale()
                    || self
                        .blocked_reached_at
                        .is_none_or(|at| now.duration_since(at) >= options.reached_blocked_every());
                let (stop, behind_stop) = match self.unfinished_mark() {
                    Some(unfinished) if !reach_blocked && unfinished > mark => {
                        (unfinished, self.known_from(unfinished))
                    }
                    _ => (mark, behind_mark),
                };
                let first_page = page_for(behind_stop + self.recent_arrivals);
                self.sync_down_to_mark(client, stop, first_page, run)
                    .await?;
                if reach_blocked {
                    self.blocked_reached_at = Some(now);
                }
                Ok(mark)
            }
            Some(_) => {
                // An old unfinished job holds the mark far back: paging down to it would
                // re-read every newer job. Read the new jobs, then the unfinished ones
                // through their scope.
                let known = self.newest_seen.unwrap_or(0);
                self.list_down(client, Until::Known(known), arrivals, run)
                    .await?;
                self.sync_active(client, run).await?;
                Ok(known.saturating_add(1))
            }
            // Nothing listed yet: every job is new.
            None => {
                self.list_down(client, Until::Known(0), arrivals, run)
                    .await?;
                Ok(0)
            }
        }
    }

    /// Follows what the listing (down to `listed_down_to`) cannot show: the pipelines a retry
    /// may have re-opened, and the blocked jobs beyond its reach when they are due.
    async fn follow_beyond_listing(
        &mut self,
        client: &GitLabClient,
        listed_down_to: u64,
        now: Timestamp,
        options: SyncOptions,
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        // A blocked job the listing did not reach may have been played: without a policy that
        // targets blocked statuses it is still looked for, only less often.
        let blocked_unreached = self
            .jobs
            .from_id(0)
            .take_while(|j| j.id < listed_down_to)
            .any(|j| j.status.is_blocked());
        let due = options.follow_blocked
            || (blocked_unreached
                && self
                    .blocked_listed_at
                    .is_none_or(|at| now.duration_since(at) >= options.unreached_blocked_every()));
        self.follow_reopened(client, options, run).await?;
        if due {
            self.sync_blocked(client, run).await?;
            self.blocked_listed_at = Some(now);
        }
        Ok(())
    }

    /// Pages from the newest job down until `until`, refreshing everything on the way. Says
    /// whether it stopped there or at the end of the list, and which jobs it read.
    ///
    /// The first page asks for `first_page` jobs (a quiet project's sync reads a handful of
    /// jobs, not a hundred); when that page fills before `until`, the project is busier than
    /// expected and is listed again from the top with full pages.
    async fn list_down(
        &mut self,
        client: &GitLabClient,
        until: Until,
        first_page: u32,
        run: &mut Sync,
    ) -> Result<(Reached, HashSet<u64>), GitLabError> {
        let mut per_page = first_page.clamp(MIN_PAGE, PER_PAGE_MAX);
        let mut seen = HashSet::new();
        let mut newest: Option<u64> = None;
        let reached = 'listing: loop {
            let query = ListJobsQuery::default().per_page(per_page);
            let mut stream =
                Box::pin(client.list_project_jobs_as::<JobWire>(&self.project, &query));
            let mut read = 0u32;
            while let Some(job) = stream.try_next().await? {
                if until.reached(&job) {
                    break 'listing Reached::Until;
                }
                newest = Some(newest.map_or(job.id, |n| n.max(job.id)));
                seen.insert(job.id);
                let last = until.is_last(&job);
                self.absorb(job, run);
                if last {
                    // Every job the listing was for has been read: no page more.
                    break 'listing Reached::Until;
                }
                read += 1;
                if read == per_page && per_page < PER_PAGE_MAX {
                    per_page = PER_PAGE_MAX;
                    continue 'listing;
                }
            }
            break Reached::End;
        };
        self.listed_down_from(newest);
        Ok((reached, seen))
    }

    /// Pages down past the low-water mark, and forgets the unfinished jobs at or above it that
    /// are no longer listed.
    async fn sync_down_to_mark(
        &mut self,
        client: &GitLabClient,
        mark: u64,
        first_page: u32,
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        let (_, seen) = self
            .list_down(client, Until::Below(mark), first_page, run)
            .await?;
        // Everything at or above the mark was listed: an unfinished job that was not is gone
        // from GitLab (deleted with its pipeline) and must not hold the mark forever.
        let gone: Vec<u64> = self
            .jobs
            .from_id(mark)
            .filter(|j| !seen.contains(&j.id))
            .filter(|j| !j.status.is_completed())
            .map(|j| j.id)
            .collect();
        for id in gone {
            self.jobs.remove(id);
        }
        Ok(())
    }

    /// Every job from `newest` down to where the last listing stopped has been read: the next
    /// sync may stop there. Only a listing that completed moves this mark, so a listing cut
    /// short by an error is read again, and no job between two listings is skipped.
    fn listed_down_from(&mut self, newest: Option<u64>) {
        if let Some(newest) = newest {
            self.newest_seen = Some(self.newest_seen.map_or(newest, |n| n.max(newest)));
        }
    }

    /// Lists every unfinished job through a `scope[]` listing, whatever its age; a cached
    /// unfinished job that is no longer listed has moved on and is re-read.
    async fn sync_active(
        &mut self,
        client: &GitLabClient,
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        let unfinished = self
            .jobs
            .newest_first()
            .filter(|j| !j.status.is_completed() && !j.status.is_blocked())
            .count();
        let query = ListJobsQuery::with_scopes(ACTIVE_SCOPES).per_page(page_for(unfinished));
        let active: Vec<JobWire> = client
            .list_project_jobs_as(&self.project, &query)
            .try_collect()
            .await?;
        let listed: HashSet<u64> = active.iter().map(|j| j.id).collect();
        for job in active {
            self.absorb(job, run);
        }
        let moved_on: Vec<u64> = self
            .jobs
            .newest_first()
            .filter(|j| !j.status.is_completed() && !j.status.is_blocked())
            .filter(|j| !listed.contains(&j.id))
            .map(|j| j.id)
            .take(MAX_REREADS_PER_SYNC)
            .collect();
        self.reread(client, moved_on, run).await
    }

    /// Lists the jobs of the pipelines whose retry succeeded since the last sync (see
    /// `retried_pipelines`), so that the jobs the retry re-opened are kept and followed. With a
    /// healthy hook nothing is listed: a re-opened job is delivered as soon as it is queued.
    async fn follow_reopened(
        &mut self,
        client: &GitLabClient,
        options: SyncOptions,
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        if options.hook_healthy {
            self.retried_pipelines.clear();
            return Ok(());
        }
        let count = self
            .retried_pipelines
            .len()
            .min(MAX_REOPEN_LISTINGS_PER_SYNC);
        let pipelines: Vec<u64> = self.retried_pipelines.drain(..count).collect();
        // Every status: a re-opened job may have been queued and have finished (failed, say)
        // before this sync, and a job remembered as settled (`skipped`) is news again.
        let query = PipelineJobsQuery::latest();
        for pipeline_id in pipelines {
            let latest: Vec<JobWire> = client
                .list_pipeline_jobs_as(&self.project, pipeline_id, &query)
                .try_collect()
                .await?;
            for job in latest {
                self.settled.remove(job.id);
                self.absorb(job, run);
            }
        }
        Ok(())
    }

    /// Notes the pipeline of `job` when the job is a retry (created well after its pipeline)
    /// seen finishing in a way that lets the later stages run: the jobs its retry re-opened are
    /// queued now, and may fail. (Until then they wait in `created`, where no rule acts on them;
    /// a retry that fails again skips them again.) `first_sight` says the job was never seen
    /// before, so a finished one finished since the last sync.
    fn note_retry(&mut self, job: &JobRecord, first_sight: bool) {
        let lets_later_stages_run = job.status == JobStatus::Success
            || (job.status == JobStatus::Failed && job.allow_failure);
        let finished_now = match self.jobs.get(job.id) {
            Some(held) => !held.status.is_completed(),
            None => first_sight,
        };
        let Some(pipeline_created) = job.pipeline_created_at() else {
            return;
        };
        let late = job
            .created_at()
            .get()
            .duration_since(pipeline_created.get());
        if lets_later_stages_run
            && finished_now
            && late > RETRY_AFTER_PIPELINE
            && !self.retried_pipelines.contains(&job.pipeline_id)
        {
            self.retried_pipelines.push(job.pipeline_id);
        }
    }

    /// Re-reads jobs by id; a job GitLab no longer has is forgotten.
    async fn reread(
        &mut self,
        client: &GitLabClient,
        ids: Vec<u64>,
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        for id in ids {
            match client.get_job_as::<JobWire>(&self.project, id).await {
                Ok(job) => {
                    run.stats.jobs_reread += 1;
                    self.absorb(job, run);
                }
                Err(err) if err.is_not_found() => {
                    self.jobs.remove(id);
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
        run: &mut Sync,
    ) -> Result<(), GitLabError> {
        let blocked = self
            .jobs
            .newest_first()
            .filter(|j| j.status.is_blocked())
            .count();
        let query = ListJobsQuery::with_scopes([JobStatus::Manual, JobStatus::Scheduled])
            .per_page(page_for(blocked));
        let listed: Vec<JobWire> = client
            .list_project_jobs_as(&self.project, &query)
            .try_collect()
            .await?;
        let listed_ids: HashSet<u64> = listed.iter().map(|j| j.id).collect();
        let moved_on: Vec<u64> = self
            .jobs
            .newest_first()
            .filter(|j| j.status.is_blocked() && !listed_ids.contains(&j.id))
            .map(|j| j.id)
            .collect();
        for job in listed {
            self.absorb(job, run);
        }
        self.reread(client, moved_on, run).await
    }

    /// Takes in one listed job: new or changed jobs are reported for accounting, kept if a rule
    /// may still use them, and invalidate their pipeline's cached job list.
    fn absorb(&mut self, wire: JobWire, run: &mut Sync) {
        run.stats.jobs_read += 1;
        self.stale.remove(&wire.id);
        if self.settled.contains(wire.id) && wire.status.is_completed() {
            return;
        }
        let first_sight = self.is_first_sight(wire.id, run.newest_before);
        if first_sight && run.newest_before.is_some() {
            run.arrivals += 1;
        }
        // After the answer arrived: a pending job's wait is never overstated.
        let record = JobRecord::from_wire(wire, (run.clock)(), &mut self.names);
        // (The first sync lists every unfinished job anyway.)
        if run.newest_before.is_some() {
            self.note_retry(&record, first_sight);
        }
        let held = self.jobs.contains(record.id);
        let Some(events) = self.change(&record, first_sight) else {
            return;
        };
        if !held {
            run.stats.jobs_new += 1;
        }
        self.forget_pipeline_jobs(record.pipeline_id);
        run.refreshed.push(Refresh {
            job: record.clone(),
            events,
        });
        self.keep_or_settle(record, first_sight);
    }

    /// What a fresh snapshot of a job counts in the metrics; `None` when it brings nothing new
    /// (the held snapshot is the same, or newer: see [`JobRecord::goes_back_from`]).
    fn change(&self, record: &JobRecord, first_sight: bool) -> Option<JobEvents> {
        let held = self.jobs.get(record.id);
        if held.is_some_and(|h| h.same_state(record) || record.goes_back_from(h)) {
            return None;
        }
        Some(JobEvents::of_change(
            held,
            first_sight,
            record,
            self.counting_since,
        ))
    }

    /// True when job `id` has never been seen: newer than every job the listings before this
    /// sync read, and neither kept nor settled (a listing cut short may have read it already).
    fn is_first_sight(&self, id: u64, newest_before: Option<u64>) -> bool {
        newest_before.is_none_or(|n| id > n)
            && !self.jobs.contains(id)
            && !self.settled.contains(id)
    }

    /// Keeps a job, or, when it is finished and no watching policy may act on it, only notes it
    /// in the lookups and remembers its id as settled. `first_sight` counts it as an attempt.
    fn keep_or_settle(&mut self, record: JobRecord, first_sight: bool) {
        match self.fate(&record) {
            Fate::Keep => {
                self.settled.remove(record.id);
                if first_sight {
                    self.jobs.insert_new(record);
                } else {
                    self.jobs.insert(record);
                }
            }
            fate => {
                self.jobs.note(&record, first_sight);
                self.let_go(record.id, fate);
            }
        }
    }

    /// Stops keeping job `id` (a fate other than [`Fate::Keep`]): settled, and re-read when
    /// its wake-up time comes.
    fn let_go(&mut self, id: u64, fate: Fate) {
        if let Fate::WakeAt(at) = fate {
            self.wakeups.insert(at, id);
        }
        self.jobs.remove(id);
        self.settled.insert(id);
    }

    /// What to do with a job: unfinished jobs are kept; a finished one is kept while a watching
    /// policy may act on it soon, re-read when one may act on it later, and dropped otherwise.
    fn fate(&self, job: &JobRecord) -> Fate {
        if !job.status.is_completed() || self.watchers.is_empty() {
            return Fate::Keep;
        }
        let earliest = self
            .watchers
            .iter()
            .filter_map(|policy| earliest_action(policy, &self.jobs, job, &self.reach))
            .min();
        match earliest {
            None => Fate::Drop,
            Some(at)
                if at
                    > self
                        .reach
                        .now
                        .saturating_add(WAKE_AHEAD)
                        .unwrap_or(Timestamp::MAX) =>
            {
                Fate::WakeAt(at)
            }
            Some(_) => Fate::Keep,
        }
    }

    /// Re-reads the jobs whose wake-up time has come (at most a sync's share of re-reads).
    async fn wake_due(&mut self, client: &GitLabClient, run: &mut Sync) -> Result<(), GitLabError> {
        let due = self.wakeups.take_due(self.reach.now, MAX_REREADS_PER_SYNC);
        for id in &due {
            self.settled.remove(*id);
        }
        self.reread(client, due, run).await
    }

    /// Remembers a pipeline's job list (every attempt), valid until a job of it changes.
    pub fn cache_pipeline_jobs(&mut self, pipeline_id: u64, jobs: Vec<JobWire>, now: Timestamp) {
        let records = jobs
            .into_iter()
            .map(|wire| JobRecord::from_wire(wire, now, &mut self.names))
            .collect();
        self.facts_mut().pipeline_jobs.insert(pipeline_id, records);
    }

    /// Forgets finished jobs behind the horizon and those no watching policy may act on any
    /// more, and every cache entry that belonged to them.
    fn prune(&mut self) {
        if self.jobs.complete_since().is_some() {
            self.jobs.set_complete_since(self.reach.history_start);
        }
        let horizon = self.horizon();
        let mut drop = HashSet::new();
        for job in self.jobs.newest_first().filter(|j| j.status.is_completed()) {
            let fate = if job.created_at().get() < horizon {
                Fate::Drop
            } else {
                self.fate(job)
            };
            match fate {
                Fate::Keep => continue,
                Fate::WakeAt(at) => self.wakeups.insert(at, job.id),
                Fate::Drop => {}
            }
            drop.insert(job.id);
        }
        // Also when no kept job goes: the lookups still hold the jobs settled in this sync.
        self.jobs.retain(|j| !drop.contains(&j.id));
        if let Some(mark) = self.low_water_mark() {
            self.blocked_reach_floor = self.blocked_reach_floor.max(mark);
        }
        let jobs = &self.jobs;
        self.stale.retain(|id| jobs.contains(*id));
        if let Some(facts) = &mut self.facts {
            facts.log_tails.retain(|id, _| jobs.contains(*id));
            facts.log_order.retain(|id| jobs.contains(*id));
            let pipelines: HashSet<u64> = jobs.newest_first().map(|j| j.pipeline_id).collect();
            facts.pipeline_jobs.retain(|id, _| pipelines.contains(id));
        }
        self.drop_empty_facts();
        self.names.prune();
    }

    /// Caches the log tail of a job. The tail of a completed job is kept (its log can no longer
    /// change); that of an unfinished one only until [`forget_unfinished_log_tails`](Self::forget_unfinished_log_tails).
    pub fn cache_log_tail(&mut self, job_id: u64, tail: String) {
        let facts = self.facts_mut();
        if facts.log_tails.contains_key(&job_id) {
            return;
        }
        if facts.log_order.len() >= LOG_CACHE_CAPACITY
            && let Some(oldest) = facts.log_order.pop_front()
        {
            facts.log_tails.remove(&oldest);
        }
        facts.log_order.push_back(job_id);
        facts.log_tails.insert(job_id, tail);
    }

    /// Forgets the log tails of jobs still running (their logs grow): read again when asked.
    pub fn forget_unfinished_log_tails(&mut self) {
        let jobs = &self.jobs;
        if let Some(facts) = &mut self.facts {
            facts
                .log_tails
                .retain(|id, _| jobs.get(*id).is_some_and(|j| j.status.is_completed()));
            let tails = &facts.log_tails;
            facts.log_order.retain(|id| tails.contains_key(id));
        }
        self.drop_empty_facts();
    }

    /// Replaces a cached job by a fresher snapshot (after an action, or read after a
    /// delivery); `None` when it brings nothing new. The job may be new (the attempt a retry
    /// created): it is counted once, and the next listing, which reads it again, does not
    /// count it twice.
    pub fn update_job(&mut self, wire: JobWire, now: Timestamp) -> Option<Refresh> {
        self.stale.remove(&wire.id);
        let first_sight = self.is_first_sight(wire.id, self.newest_seen);
        self.reach = self.reach_at(now);
        let record = JobRecord::from_wire(wire, now, &mut self.names);
        if self.last_sync.is_some() {
            self.note_retry(&record, first_sight);
        }
        let events = self.change(&record, first_sight)?;
        self.forget_pipeline_jobs(record.pipeline_id);
        self.keep_or_settle(record.clone(), first_sight);
        Some(Refresh {
            job: record,
            events,
        })
    }

    /// Judges a kept job again after an action on it brought news the job itself does not
    /// show: a retry's new attempt leaves the failed one for no rule to act on. It is dropped
    /// (or left to wake up) now, not held until the next sync: a first run that retries a
    /// backlog of 80,000 failures would otherwise hold every one of them next to its new
    /// attempt until the next sync.
    pub fn judge_again(&mut self, id: u64) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        if !job.status.is_completed() {
            return;
        }
        match self.fate(job) {
            Fate::Keep => {}
            fate => self.let_go(id, fate),
        }
    }

    /// Gives back the memory of the jobs let go since the last sync (acted on: retried,
    /// canceled), so a project holds its new size until the next sync, not its largest.
    pub fn shrink(&mut self) {
        self.jobs.shrink();
    }

    /// Jobs kept per status, for the `jobs` gauge.
    pub fn status_counts(&self) -> Vec<(&'static str, i64)> {
        let mut counts: Vec<(&str, i64)> = Vec::new();
        for job in self.jobs.newest_first() {
            match counts.iter_mut().find(|(s, _)| *s == job.status.as_str()) {
                Some((_, n)) => *n += 1,
                None => counts.push((job.status.as_str(), 1)),
            }
        }
        counts
    }

    /// Seconds the oldest job still waiting for a runner has waited, if any waits.
    pub fn oldest_pending_age(&self, now: Timestamp) -> Option<f64> {
        self.jobs
            .newest_first()
            .filter(|j| j.status.is_waiting_for_runner())
            .map(|j| {
                j.queued_seconds(now)
                    .unwrap_or_else(|| now.duration_since(j.created_at().get()).as_secs_f64())
            })
            .fold(None, |acc: Option<f64>, age| {
                Some(acc.map_or(age, |a| a.max(age)))
            })
    }
}

/// Where a listing from the newest job down stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// At the first job created before this time (the first sync's horizon).
    OlderThan(Timestamp),
    /// At the first job below the low-water mark.
    Below(u64),
    /// At the first job an earlier listing read.
    Known(u64),
}

impl Until {
    /// True when `job` is past where the listing stops: it is not read.
    fn reached(self, job: &JobWire) -> bool {
        match self {
            Until::OlderThan(horizon) => job.created_at < horizon,
            Until::Below(mark) => job.id < mark,
            Until::Known(newest) => job.id <= newest,
        }
    }

    /// True when `job` is the last one the listing needs: it is read, and no page after it
    /// (a page that ends with the low-water mark's job covers every job at or above it).
    fn is_last(self, job: &JobWire) -> bool {
        match self {
            Until::Below(mark) => job.id <= mark,
            Until::OlderThan(_) | Until::Known(_) => false,
        }
    }
}

/// Where a listing from the newest job down stopped.
enum Reached {
    /// Where it was told to.
    Until,
    /// At the end of the list: the project has no older job.
    End,
}

/// The page size for a listing expected to read `expected` jobs: room for twice as many, and
/// a few more, up to GitLab's maximum.
fn page_for(expected: usize) -> u32 {
    let wanted = expected.saturating_mul(2).saturating_add(MIN_PAGE as usize);
    u32::try_from(wanted)
        .unwrap_or(PER_PAGE_MAX)
        .min(PER_PAGE_MAX)
}

/// The state of one sync in progress.
struct Sync {
    /// The time as each page is taken in.
    clock: Clock,
    /// The newest job id the listings before this sync read.
    newest_before: Option<u64>,
    /// Jobs created since the last sync.
    arrivals: usize,
    stats: SyncStats,
    refreshed: Refreshed,
}

/// What becomes of a job after a listing.
enum Fate {
    Keep,
    /// Dropped now, re-read at this time.
    WakeAt(Timestamp),
    Drop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_blocked_listings_are_spread_over_the_period() {
        let offsets: Vec<i64> = (1..=600)
            .map(|id| {
                blocked_listing_offset(&ProjectRef::Id(id), UNREACHED_BLOCKED_EVERY).as_secs()
            })
            .collect();
        let period = UNREACHED_BLOCKED_EVERY.as_secs();
        assert!(offsets.iter().all(|s| (0..period).contains(s)));
        // Ten one-minute slots: each gets some of 600 projects, none most of them.
        let mut slots = [0usize; 10];
        for s in &offsets {
            slots[(*s * 10 / period) as usize] += 1;
        }
        assert!(slots.iter().all(|n| (20..=120).contains(n)), "{slots:?}");
        assert_eq!(
            blocked_listing_offset(&ProjectRef::Id(7), UNREACHED_BLOCKED_EVERY),
            blocked_listing_offset(&ProjectRef::Id(7), UNREACHED_BLOCKED_EVERY)
        );
    }
}
