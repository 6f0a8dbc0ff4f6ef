//! Job Hook deliveries on their way to the engine.
//!
//! A delivery is never trusted for a decision: it only says "job J of project P changed". The
//! inbox keeps, per observed project, the jobs delivered since the project's last run, and wakes
//! the policies that watch it; the run then re-reads those jobs (one `GET` each) and decides on
//! GitLab's answer. So a delivery that arrives late, twice or out of order costs a read at
//! most, and never causes a wrong action.
//!
//! The jobs are read once for all the policies watching the project (their observer is
//! shared), but each of those policies has to decide on what was read: the inbox also keeps,
//! per policy, the projects it is *due* to look at again. A policy's pass on deliveries visits
//! its due projects, whichever policy read the jobs first.

use crate::policy::PolicyKey;
use crate::sync::lock;
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

#[derive(Debug, Default)]
struct State {
    /// Jobs delivered since their project's last run, with when each was delivered.
    pending: HashMap<ObserverKey, HashMap<u64, Instant>>,
    /// When each project last got a delivery.
    last_delivery: HashMap<ObserverKey, Instant>,
    /// Delivered jobs not acted on yet, by instance and job id.
    awaiting_action: HashMap<(String, u64), Instant>,
    /// Per policy, the projects with deliveries since the policy last looked at them.
    due: HashMap<PolicyKey, HashSet<ObserverKey>>,
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

impl Inbox {
    /// Records a delivery for a job of an observed project.
    pub(crate) fn deliver(&self, key: &ObserverKey, job_id: u64, at: Instant) {
        let mut state = lock(&self.state);
        state
            .pending
            .entry(key.clone())
            .or_default()
            .entry(job_id)
            .or_insert(at);
        state.last_delivery.insert(key.clone(), at);
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
    pub(crate) fn take(&self, key: &ObserverKey) -> Vec<u64> {
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
        for (&job_id, &at) in &jobs {
            let job = (key.0.clone(), job_id);
            if state.awaiting_action.len() < MAX_AWAITING
                || state.awaiting_action.contains_key(&job)
            {
                state.awaiting_action.insert(job, at);
            }
        }
        drop(state);
        let mut jobs: Vec<(u64, Instant)> = jobs.into_iter().collect();
        jobs.sort_by_key(|(id, at)| (*at, *id));
        jobs.into_iter().map(|(id, _)| id).collect()
    }

    /// True when a project has deliveries waiting.
    #[cfg(test)]
    pub(crate) fn has_pending(&self, key: &ObserverKey) -> bool {
        lock(&self.state).pending.contains_key(key)
    }

    /// True when the project got a delivery within `within`: its hooks work, so a full listing
    /// can wait for the resync.
    pub(crate) fn hooks_healthy(&self, key: &ObserverKey, within: Duration) -> bool {
        lock(&self.state)
            .last_delivery
            .get(key)
            .is_some_and(|at| at.elapsed() < within)
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
        state.last_delivery.remove(key);
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

    #[test]
    fn deliveries_are_taken_once_oldest_first_and_a_repeat_keeps_the_first_time() {
        let inbox = Inbox::default();
        let t0 = Instant::now();
        inbox.deliver(&key(1), 30, t0 + Duration::from_millis(5));
        inbox.deliver(&key(1), 20, t0);
        inbox.deliver(&key(1), 30, t0 + Duration::from_millis(9));
        inbox.deliver(&key(2), 40, t0);
        assert!(inbox.has_pending(&key(1)));
        assert_eq!(inbox.take(&key(1)), [20, 30]);
        assert!(inbox.take(&key(1)).is_empty());
        assert!(!inbox.has_pending(&key(1)));
        assert_eq!(inbox.take(&key(2)), [40]);
    }

    #[test]
    fn a_job_is_answered_once() {
        let inbox = Inbox::default();
        inbox.deliver(&key(1), 30, Instant::now());
        assert!(
            inbox.answered("https://gitlab.example.com", 30).is_none(),
            "not read yet"
        );
        assert_eq!(inbox.take(&key(1)), [30]);
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
        inbox.deliver(&key(1), 30, Instant::now());
        inbox.mark_due(&retry, &key(1));
        inbox.mark_due(&cancel, &key(1));
        // The cancel policy reads the job first: the retry policy still has to decide on it.
        inbox.clear_due(&cancel, &key(1));
        assert_eq!(inbox.take(&key(1)), [30]);
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
        inbox.deliver(&key(1), 30, long_ago);
        assert_eq!(inbox.take(&key(1)), [30]);
        // Delivered as failed now, twice, and read: the retry answers the first of those.
        let failed = Instant::now();
        inbox.deliver(&key(1), 30, failed);
        inbox.deliver(&key(1), 30, failed + Duration::from_millis(5));
        assert_eq!(inbox.take(&key(1)), [30]);
        let latency = inbox
            .answered("https://gitlab.example.com", 30)
            .expect("awaiting");
        assert!(latency < Duration::from_secs(60), "{latency:?}");
    }

    #[test]
    fn hooks_are_healthy_while_deliveries_arrive() {
        let inbox = Inbox::default();
        assert!(!inbox.hooks_healthy(&key(1), Duration::from_secs(60)));
        inbox.deliver(&key(1), 30, Instant::now());
        assert!(inbox.hooks_healthy(&key(1), Duration::from_secs(60)));
        assert!(!inbox.hooks_healthy(&key(2), Duration::from_secs(60)));
    }
}
