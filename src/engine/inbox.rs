//! Job Hook deliveries on their way to the engine.
//!
//! A delivery is never trusted for a decision: it only says "job J of project P changed". The
//! inbox keeps, per observed project, the jobs delivered since the project's last run, and wakes
//! the policies that watch it; the run then re-reads those jobs (one `GET` each) and decides on
//! GitLab's answer. So a delivery that arrives late, twice or out of order costs a read at
//! most, and never causes a wrong action.

use crate::sync::lock;
use std::collections::HashMap;
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
        if state.awaiting_action.len() >= MAX_AWAITING {
            state
                .awaiting_action
                .retain(|_, delivered| at.duration_since(*delivered) < AWAITING_FOR);
        }
        if state.awaiting_action.len() < MAX_AWAITING {
            state
                .awaiting_action
                .entry((key.0.clone(), job_id))
                .or_insert(at);
        }
    }

    /// The jobs delivered for a project since it was last taken, oldest delivery first.
    pub(crate) fn take(&self, key: &ObserverKey) -> Vec<u64> {
        let Some(jobs) = lock(&self.state).pending.remove(key) else {
            return Vec::new();
        };
        let mut jobs: Vec<(u64, Instant)> = jobs.into_iter().collect();
        jobs.sort_by_key(|(id, at)| (*at, *id));
        jobs.into_iter().map(|(id, _)| id).collect()
    }

    /// True when a project has deliveries waiting.
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

    /// How long ago the job's (earliest unanswered) delivery arrived, once: the action sent
    /// now answers it.
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

    /// Forgets a policy's wake-up signal.
    pub(crate) fn forget_policy(&self, policy: &crate::policy::PolicyKey) {
        lock(&self.wakeups).remove(policy);
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
        assert!(inbox.answered("https://gitlab.example.com", 30).is_some());
        assert!(inbox.answered("https://gitlab.example.com", 30).is_none());
        assert!(inbox.answered("https://gitlab.example.com", 31).is_none());
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
