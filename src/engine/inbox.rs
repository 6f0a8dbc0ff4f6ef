//! Job Hook deliveries on their way to the engine.
//!
//! A delivery is never trusted for a decision: it only says "job J of project P changed". The
//! inbox keeps, per observed project, the jobs delivered since the project's last run (with
//! the statuses and facts they were delivered with), and wakes the policies that watch it; the
//! run then re-reads those of the jobs a rule could act on ([`crate::policy::delivery_need`]),
//! one `GET` each, and decides on GitLab's answer. So a delivery that arrives late, twice or
//! out of order costs a read at most, and never causes a wrong action.
//!
//! The jobs are read once for all the policies watching the project (their observer is
//! shared), but each of those policies has to decide on what was read: the inbox also keeps,
//! per policy, the projects it is *due* to look at again. A policy's pass on deliveries visits
//! its due projects, whichever policy read the jobs first.

use crate::gitlab::records::JobRecord;
use crate::policy::{DeliveredJob, JobDelivery, PolicyKey};
use crate::sync::lock;
use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// An observer's key: the GitLab instance and the project's id.
pub(crate) type ObserverKey = (String, u64);

/// Deliveries remembered for the delivery-to-action latency, at most.
const MAX_AWAITING: usize = 10_000;
/// A delivery whose job is not acted on within this long is forgotten for the latency.
const AWAITING_FOR: Duration = Duration::from_secs(600);
/// A project that got a delivery within this long has a hook (see [`Inbox::hooks_healthy`]).
pub(crate) const HOOKED_PROJECT_MEMORY: SignedDuration = SignedDuration::from_hours(24);
/// A change a listing found is taken as never delivered when no delivery of its job arrives
/// within this long after the listing (GitLab sends a Job Hook within seconds of the move).
pub(crate) const DELIVERY_GRACE: SignedDuration = SignedDuration::from_mins(2);

#[derive(Debug, Default)]
struct State {
    /// Jobs delivered since their project's last run, with when each was delivered.
    pending: HashMap<ObserverKey, HashMap<u64, Delivered>>,
    /// When each project last got a delivery, on the engine's clock.
    project_delivered_at: HashMap<ObserverKey, Timestamp>,
    /// When each GitLab instance last delivered anything, on the engine's clock.
    instance_delivered_at: HashMap<String, Timestamp>,
    /// Delivered jobs not acted on yet, by instance and job id.
    awaiting_action: HashMap<(String, u64), Instant>,
    /// Per policy, the projects with deliveries since the policy last looked at them.
    due: HashMap<PolicyKey, HashSet<ObserverKey>>,
    /// What the listings of each project tell about its hook.
    listed: HashMap<ObserverKey, ListingEvidence>,
}

/// What a project's listings tell about its Job Hook.
#[derive(Debug)]
struct ListingEvidence {
    /// When the project was first listed.
    first: Timestamp,
    /// The jobs delivered since its last listing.
    delivered_since: HashSet<u64>,
    /// Jobs a listing found moved, with no delivery yet, and when that listing was.
    unconfirmed: Vec<(u64, Timestamp)>,
    /// When a listing last found a move that was never delivered.
    undelivered_at: Option<Timestamp>,
}

impl ListingEvidence {
    /// Settles the moves whose delivery is overdue at `now`: the project then has a move that
    /// was never delivered, seen when that listing was.
    fn settle(&mut self, now: Timestamp) {
        let overdue = self
            .unconfirmed
            .iter()
            .filter(|(_, seen)| now.duration_since(*seen) >= DELIVERY_GRACE)
            .map(|(_, seen)| *seen)
            .max();
        if let Some(seen) = overdue {
            self.undelivered_at = Some(self.undelivered_at.map_or(seen, |at| at.max(seen)));
            self.unconfirmed
                .retain(|(_, at)| now.duration_since(*at) < DELIVERY_GRACE);
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Inbox {
    state: Mutex<State>,
    wakeups: Mutex<HashMap<crate::policy::PolicyKey, Arc<Notify>>>,
    woken: tokio::sync::broadcast::Sender<crate::policy::PolicyKey>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            state: Mutex::default(),
            wakeups: Mutex::default(),
            woken: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

/// A job delivered since its project's last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The statuses it was delivered with since then, and the facts the deliveries agree on.
    pub job: DeliveredJob,
    /// When it was first delivered since then (for the delivery-to-action latency).
    pub at: Instant,
}

/// GitLab's clock and the engine's may disagree by this much.
const CLOCK_MARGIN: SignedDuration = SignedDuration::from_mins(1);

/// The jobs among `refreshed` (what a listing found new or changed) that were created, or
/// moved into a status that fires a Job Hook, after `previous_listing`: each of them should
/// have been delivered.
pub(crate) fn hook_moves<'a>(
    refreshed: impl IntoIterator<Item = &'a JobRecord>,
    previous_listing: Timestamp,
) -> Vec<u64> {
    let since = previous_listing
        .checked_sub(CLOCK_MARGIN)
        .unwrap_or(previous_listing);
    refreshed
        .into_iter()
        .filter(|job| {
            let created = job.created_at().get() >= since;
            let moved = [job.queued_at(), job.started_at(), job.finished_at()]
                .into_iter()
                .flatten()
                .any(|at| at.get() >= since);
            created || (moved && job.status.fires_job_hook())
        })
        .map(|job| job.id)
        .collect()
}

impl Inbox {
    /// Records a delivery for a job of an observed project, received at `at` (`now` on the
    /// engine's clock).
    pub(crate) fn deliver(
        &self,
        key: &ObserverKey,
        job_id: u64,
        delivery: &JobDelivery,
        at: Instant,
        now: Timestamp,
    ) {
        let mut state = lock(&self.state);
        let delivered = state
            .pending
            .entry(key.clone())
            .or_default()
            .entry(job_id)
            .or_insert_with(|| Delivered {
                job: DeliveredJob {
                    job_id,
                    moves: Vec::new(),
                    facts: delivery.facts.clone(),
                },
                at,
            });
        delivered.job.facts.merge(&delivery.facts);
        if !delivered.job.moves.contains(&delivery.moved) {
            delivered.job.moves.push(delivery.moved.clone());
        }
        if let Some(evidence) = state.listed.get_mut(key) {
            // The project's hook works: whatever a listing found undelivered before, was lost.
            evidence.delivered_since.insert(job_id);
            evidence.unconfirmed.retain(|(id, _)| *id != job_id);
            evidence.undelivered_at = None;
        }
        state.project_delivered_at.insert(key.clone(), now);
        state.instance_delivered_at.insert(key.0.clone(), now);
    }

    /// Marks a project as due for a policy that watches it: the policy's next pass on
    /// deliveries visits it.
    pub(crate) fn mark_due(&self, policy: &PolicyKey, key: &ObserverKey) {
        lock(&self.state)
            .due
            .entry(policy.clone())
            .or_default()
            .insert(key.clone());
    }

    /// True when the project is due for the policy.
    pub(crate) fn is_due(&self, policy: &PolicyKey, key: &ObserverKey) -> bool {
        lock(&self.state)
            .due
            .get(policy)
            .is_some_and(|keys| keys.contains(key))
    }

    /// True when some project is due for the policy.
    pub(crate) fn has_due(&self, policy: &PolicyKey) -> bool {
        lock(&self.state)
            .due
            .get(policy)
            .is_some_and(|keys| !keys.is_empty())
    }

    /// The policy looks at the project now: it is no longer due for it.
    pub(crate) fn clear_due(&self, policy: &PolicyKey, key: &ObserverKey) {
        let mut state = lock(&self.state);
        if let Some(keys) = state.due.get_mut(policy) {
            keys.remove(key);
            if keys.is_empty() {
                state.due.remove(policy);
            }
        }
    }

    /// The jobs delivered for a project since it was last taken, oldest delivery first; they
    /// are about to be read. An action on one of them answers its earliest delivery since the
    /// previous read: the deliveries before that were answered by that read, which led to no
    /// action (a job delivered as `running`, then as `failed` an hour later, is retried in
    /// answer to the `failed` one).
    pub(crate) fn take(&self, key: &ObserverKey) -> Vec<Delivered> {
        let mut state = lock(&self.state);
        let Some(jobs) = state.pending.remove(key) else {
            return Vec::new();
        };
        let now = Instant::now();
        if state.awaiting_action.len() + jobs.len() > MAX_AWAITING {
            state
                .awaiting_action
                .retain(|_, delivered| now.duration_since(*delivered) < AWAITING_FOR);
        }
        for delivered in jobs.values() {
            let job = (key.0.clone(), delivered.job.job_id);
            if state.awaiting_action.len() < MAX_AWAITING
                || state.awaiting_action.contains_key(&job)
            {
                state.awaiting_action.insert(job, delivered.at);
            }
        }
        drop(state);
        let mut jobs: Vec<Delivered> = jobs.into_values().collect();
        jobs.sort_by_key(|d| (d.at, d.job.job_id));
        jobs
    }

    /// A listing of the project at `now` found `moved`: the jobs that moved in a way that fires
    /// a Job Hook since the project's previous listing (none for its first listing). Those not
    /// delivered since that listing, and not delivered within [`DELIVERY_GRACE`] either, are
    /// evidence that the project's hook does not deliver (see [`Inbox::hooks_healthy`]).
    pub(crate) fn listed(&self, key: &ObserverKey, moved: &[u64], now: Timestamp) {
        let mut state = lock(&self.state);
        let evidence = state
            .listed
            .entry(key.clone())
            .or_insert_with(|| ListingEvidence {
                first: now,
                delivered_since: HashSet::new(),
                unconfirmed: Vec::new(),
                undelivered_at: None,
            });
        let delivered = std::mem::take(&mut evidence.delivered_since);
        evidence.unconfirmed.extend(
            moved
                .iter()
                .filter(|id| !delivered.contains(id))
                .map(|id| (*id, now)),
        );
    }

    /// True when a project has deliveries waiting.
    #[cfg(test)]
    pub(crate) fn has_pending(&self, key: &ObserverKey) -> bool {
        lock(&self.state).pending.contains_key(key)
    }

    /// True when the project's hook can be relied on at `now`, so its full listing can wait for
    /// the resync. Its GitLab instance's deliveries must still flow (it delivered anything, for
    /// any project, within `resync`), and the project must have a hook as far as can be told:
    /// - it got a delivery within [`HOOKED_PROJECT_MEMORY`], or it has been listed for a whole
    ///   `resync` (a quiet project of a live instance is not listed more often than a busy
    ///   one, though it has nothing to deliver);
    /// - and no listing within `resync` found a move that was never delivered
    ///   ([`Inbox::listed`]): a project without a hook is listed at every run while it moves,
    ///   and a quiet one at the resync, which finds its first move.
    ///
    /// An instance gone silent has every project listed at every run.
    pub(crate) fn hooks_healthy(
        &self,
        key: &ObserverKey,
        resync: Duration,
        now: Timestamp,
    ) -> bool {
        let mut state = lock(&self.state);
        let within = |at: &Timestamp, span: SignedDuration| now.duration_since(*at) < span;
        let resync = SignedDuration::try_from(resync).unwrap_or(SignedDuration::MAX);
        let instance_alive = state
            .instance_delivered_at
            .get(&key.0)
            .is_some_and(|at| within(at, resync));
        let delivered = state
            .project_delivered_at
            .get(key)
            .is_some_and(|at| within(at, HOOKED_PROJECT_MEMORY));
        let (listed_long, undelivered) = match state.listed.get_mut(key) {
            Some(evidence) => {
                evidence.settle(now);
                (
                    !within(&evidence.first, resync),
                    evidence
                        .undelivered_at
                        .is_some_and(|at| within(&at, resync)),
                )
            }
            None => (false, false),
        };
        instance_alive && (delivered || listed_long) && !undelivered
    }

    /// How long ago the delivery an action on the job answers arrived (see [`Inbox::take`]),
    /// once: the action sent now answers it.
    pub(crate) fn answered(&self, instance: &str, job_id: u64) -> Option<Duration> {
        lock(&self.state)
            .awaiting_action
            .remove(&(instance.to_owned(), job_id))
            .map(|at| at.elapsed())
    }

    /// Forgets a project that is no longer observed.
    pub(crate) fn forget(&self, key: &ObserverKey) {
        let mut state = lock(&self.state);
        state.pending.remove(key);
        state.project_delivered_at.remove(key);
        state.listed.remove(key);
        state.due.retain(|_, keys| {
            keys.remove(key);
            !keys.is_empty()
        });
    }

    /// The signal that wakes a policy's loop when a delivery concerns one of its projects.
    pub(crate) fn wakeup(&self, policy: &crate::policy::PolicyKey) -> Arc<Notify> {
        lock(&self.wakeups)
            .entry(policy.clone())
            .or_default()
            .clone()
    }

    /// Wakes a policy's loop (a permit is kept if it is busy: it runs again right after), and
    /// tells the subscribers.
    pub(crate) fn wake(&self, policy: &crate::policy::PolicyKey) {
        self.wakeup(policy).notify_one();
        // No subscriber is no error: file mode listens to the per-policy signal.
        let _ = self.woken.send(policy.clone());
    }

    /// Every policy woken from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::policy::PolicyKey> {
        self.woken.subscribe()
    }

    /// Forgets a policy's wake-up signal and the projects due for it.
    pub(crate) fn forget_policy(&self, policy: &crate::policy::PolicyKey) {
        lock(&self.wakeups).remove(policy);
        lock(&self.state).due.remove(policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64) -> ObserverKey {
        ("https://gitlab.example.com".to_owned(), id)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
    }

    /// A delivery of job `job_id` of project `project` as `running`, at the engine time 0.
    fn deliver(inbox: &Inbox, project: u64, job_id: u64, when: Instant) {
        let running = JobDelivery::of_status(Some(crate::gitlab::models::JobStatus::Running));
        inbox.deliver(&key(project), job_id, &running, when, at(0));
    }

    /// The ids of the jobs taken for the project.
    fn taken(inbox: &Inbox, project: u64) -> Vec<u64> {
        inbox
            .take(&key(project))
            .iter()
            .map(|d| d.job.job_id)
            .collect()
    }

    #[test]
    fn deliveries_are_taken_once_oldest_first_and_a_repeat_keeps_the_first_time() {
        let inbox = Inbox::default();
        let t0 = Instant::now();
        deliver(&inbox, 1, 30, t0 + Duration::from_millis(5));
        deliver(&inbox, 1, 20, t0);
        deliver(&inbox, 1, 30, t0 + Duration::from_millis(9));
        deliver(&inbox, 2, 40, t0);
        assert!(inbox.has_pending(&key(1)));
        assert_eq!(taken(&inbox, 1), [20, 30]);
        assert!(taken(&inbox, 1).is_empty());
        assert!(!inbox.has_pending(&key(1)));
        assert_eq!(taken(&inbox, 2), [40]);
    }

    #[test]
    fn a_job_is_answered_once() {
        let inbox = Inbox::default();
        deliver(&inbox, 1, 30, Instant::now());
        assert!(
            inbox.answered("https://gitlab.example.com", 30).is_none(),
            "not read yet"
        );
        assert_eq!(taken(&inbox, 1), [30]);
        assert!(inbox.answered("https://gitlab.example.com", 30).is_some());
        assert!(inbox.answered("https://gitlab.example.com", 30).is_none());
        assert!(inbox.answered("https://gitlab.example.com", 31).is_none());
    }

    #[test]
    fn a_project_is_due_for_each_policy_until_that_policy_looks_at_it() {
        let inbox = Inbox::default();
        let (retry, cancel) = (
            PolicyKey::new("ci", "retry"),
            PolicyKey::new("ci", "cancel"),
        );
        deliver(&inbox, 1, 30, Instant::now());
        inbox.mark_due(&retry, &key(1));
        inbox.mark_due(&cancel, &key(1));
        // The cancel policy reads the job first: the retry policy still has to decide on it.
        inbox.clear_due(&cancel, &key(1));
        assert_eq!(taken(&inbox, 1), [30]);
        assert!(!inbox.has_due(&cancel));
        assert!(inbox.has_due(&retry) && inbox.is_due(&retry, &key(1)));
        assert!(!inbox.is_due(&retry, &key(2)));
        inbox.clear_due(&retry, &key(1));
        assert!(!inbox.has_due(&retry));
        inbox.mark_due(&retry, &key(1));
        inbox.mark_due(&cancel, &key(2));
        inbox.forget(&key(1));
        assert!(!inbox.has_due(&retry));
        inbox.forget_policy(&cancel);
        assert!(!inbox.has_due(&cancel));
    }

    #[test]
    fn an_action_answers_the_deliveries_of_the_read_that_led_to_it() {
        let inbox = Inbox::default();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(Instant::now);
        // Delivered as running an hour ago and read: nothing to do then.
        deliver(&inbox, 1, 30, long_ago);
        assert_eq!(taken(&inbox, 1), [30]);
        // Delivered as failed now, twice, and read: the retry answers the first of those.
        let failed = Instant::now();
        deliver(&inbox, 1, 30, failed);
        deliver(&inbox, 1, 30, failed + Duration::from_millis(5));
        assert_eq!(taken(&inbox, 1), [30]);
        let latency = inbox
            .answered("https://gitlab.example.com", 30)
            .expect("awaiting");
        assert!(latency < Duration::from_secs(60), "{latency:?}");
    }

    #[test]
    fn a_project_that_delivered_once_is_hooked_while_its_instance_delivers() {
        let inbox = Inbox::default();
        let resync = Duration::from_secs(300);
        let other_instance = ("https://other.example.com".to_owned(), 3);
        assert!(
            !inbox.hooks_healthy(&key(1), resync, at(0)),
            "never delivered"
        );
        inbox.deliver(&key(1), 30, &JobDelivery::default(), Instant::now(), at(0));
        assert!(inbox.hooks_healthy(&key(1), resync, at(10)));
        assert!(
            !inbox.hooks_healthy(&key(2), resync, at(10)),
            "never delivered"
        );
        // Project 1 stays quiet for an hour while project 2 of its instance delivers.
        inbox.deliver(
            &key(2),
            40,
            &JobDelivery::default(),
            Instant::now(),
            at(3500),
        );
        assert!(inbox.hooks_healthy(&key(1), resync, at(3600)));
        assert!(!inbox.hooks_healthy(&other_instance, resync, at(3600)));
        // The instance falls silent for longer than the resync: nothing is relied on.
        assert!(!inbox.hooks_healthy(&key(1), resync, at(3800)));
        assert!(!inbox.hooks_healthy(&key(2), resync, at(3800)));
        // A day after its last delivery the project is taken to have lost its hook.
        inbox.deliver(
            &key(2),
            41,
            &JobDelivery::default(),
            Instant::now(),
            at(86_400),
        );
        assert!(!inbox.hooks_healthy(&key(1), resync, at(86_400)));
        assert!(inbox.hooks_healthy(&key(2), resync, at(86_400)));
        inbox.forget(&key(2));
        assert!(!inbox.hooks_healthy(&key(2), resync, at(86_400)));
    }

    #[test]
    fn a_quiet_project_is_trusted_once_listed_for_a_resync_while_its_instance_delivers() {
        let inbox = Inbox::default();
        let resync = Duration::from_secs(300);
        inbox.listed(&key(1), &[], at(0));
        // Another project of the instance delivers all along.
        for second in [100, 299, 300] {
            inbox.deliver(
                &key(2),
                40,
                &JobDelivery::default(),
                Instant::now(),
                at(second),
            );
        }
        assert!(!inbox.hooks_healthy(&key(1), resync, at(299)));
        assert!(inbox.hooks_healthy(&key(1), resync, at(300)));
        assert!(
            !inbox.hooks_healthy(&key(1), resync, at(601)),
            "the instance fell silent"
        );
    }

    #[test]
    fn a_listed_move_that_is_never_delivered_has_the_project_listed_for_a_resync() {
        let inbox = Inbox::default();
        let resync = Duration::from_secs(300);
        let delivery = JobDelivery::default();
        inbox.listed(&key(1), &[], at(0));
        inbox.deliver(&key(1), 30, &delivery, Instant::now(), at(10));
        // Job 30 was delivered since the last listing: no evidence. Job 31 was not.
        inbox.listed(&key(1), &[30, 31], at(20));
        inbox.deliver(&key(2), 40, &delivery, Instant::now(), at(130));
        assert!(
            inbox.hooks_healthy(&key(1), resync, at(139)),
            "within the grace"
        );
        assert!(!inbox.hooks_healthy(&key(1), resync, at(140)), "overdue");
        inbox.deliver(&key(2), 41, &delivery, Instant::now(), at(310));
        assert!(!inbox.hooks_healthy(&key(1), resync, at(319)));
        assert!(
            inbox.hooks_healthy(&key(1), resync, at(320)),
            "a resync after that listing"
        );

        // A move delivered late, within the grace, is no evidence.
        inbox.listed(&key(1), &[32], at(330));
        inbox.deliver(&key(1), 32, &delivery, Instant::now(), at(400));
        assert!(inbox.hooks_healthy(&key(1), resync, at(500)));
        // A delivery after the evidence shows that the hook works.
        inbox.listed(&key(1), &[33], at(510));
        assert!(!inbox.hooks_healthy(&key(1), resync, at(640)));
        inbox.deliver(&key(1), 34, &delivery, Instant::now(), at(650));
        assert!(inbox.hooks_healthy(&key(1), resync, at(651)));
    }

    #[test]
    fn the_moves_that_fire_a_job_hook_since_the_last_listing_are_the_ones_expected() {
        use crate::gitlab::models::JobStatus;
        use crate::gitlab::records::Stamp;
        use crate::policy::test_support::{job, mins, now};
        let listing = now() - mins(10);
        let moved = |id, status, at: Timestamp| {
            let mut record = job(id, 1, "rspec", status);
            record.set_started_at(Some(Stamp::new(at)));
            record
        };
        let mut created = job(4, 1, "lint", JobStatus::Created);
        created.set_created_at(Stamp::new(now() - mins(2)));
        let refreshed = [
            moved(1, JobStatus::Running, now() - mins(5)),
            // Moved before the listing (beyond the clock margin): seen late, not news.
            moved(2, JobStatus::Running, listing - mins(2)),
            // Skipped, manual: moves GitLab does not deliver.
            moved(3, JobStatus::Skipped, now() - mins(5)),
            created,
        ];
        assert_eq!(hook_moves(&refreshed, listing), [1, 4]);
    }
}
