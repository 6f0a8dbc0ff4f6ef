//! Pacing of the policy runs that share projects, so that what one run lists for the others is
//! not held long.
//!
//! A project watched by several policies has one observer, listed by whichever policy's run
//! comes to it first; the other policies decide on what that listing found. Until they have,
//! the observer holds what their rules may act on. On a first run that is the fleet's backlog
//! (on the 5,000 × 200 bench fleet, about 50 jobs per project): a policy with little to do
//! would list the whole fleet while one working through its retries acts on its first
//! projects, and every project's backlog would be held at once (about 34 MB of records there).
//!
//! So the runs in progress on one GitLab instance are paced:
//! - a run takes first the projects another run has listed and it has still to take (it
//!   decides on what was listed, without listing again);
//! - while [`Pace`]'s limit of listed projects wait for other runs, a run takes no project of
//!   its own, only those.
//!
//! A listed project waits only for runs in progress that have still to take it, and each of
//! them takes it next whatever else it waits for, so runs never wait on one another in a
//! circle. A run that ends (or stops) is waited for no more.

use crate::sync::lock;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A run in progress.
type RunId = u64;

/// The pacing of the runs on one GitLab instance.
#[derive(Debug)]
pub struct Pace {
    /// How many listed projects may wait for other runs before runs take only those.
    limit: usize,
    state: Mutex<PaceState>,
    /// Signalled when a listed project stops waiting, or a run ends.
    changed: Notify,
    next_run: AtomicU64,
}

#[derive(Debug, Default)]
struct PaceState {
    /// Per run in progress, the projects (ids) it has still to take.
    untaken: HashMap<RunId, HashSet<u64>>,
    /// Projects listed by one run, and the other runs in progress that have still to decide on
    /// them.
    waiting: HashMap<u64, Vec<RunId>>,
}

impl Pace {
    /// Pacing that lets at most `limit` listed projects wait for other runs (at least one).
    pub fn new(limit: usize) -> Pace {
        Pace {
            limit: limit.max(1),
            state: Mutex::new(PaceState::default()),
            changed: Notify::new(),
            next_run: AtomicU64::new(0),
        }
    }

    /// Starts pacing a run over `projects` (those whose id is known). Dropping the returned
    /// run ends it.
    pub fn start(self: &Arc<Pace>, projects: impl IntoIterator<Item = u64>) -> PacedRun {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        lock(&self.state)
            .untaken
            .insert(id, projects.into_iter().collect());
        PacedRun {
            pace: self.clone(),
            id,
        }
    }

    /// How many listed projects wait for other runs.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }
}

/// One run's part in its instance's [`Pace`].
#[derive(Debug)]
pub struct PacedRun {
    pace: Arc<Pace>,
    id: RunId,
}

impl PacedRun {
    /// The run takes `project` on: it is no longer among those the run has still to take.
    pub fn take(&self, project: u64) {
        if let Some(untaken) = lock(&self.pace.state).untaken.get_mut(&self.id) {
            untaken.remove(&project);
        }
    }

    /// The run listed `project`: the other runs that have still to take it now wait on it.
    pub fn listed(&self, project: u64) {
        let mut state = lock(&self.pace.state);
        let waiters: Vec<RunId> = state
            .untaken
            .iter()
            .filter(|(run, untaken)| **run != self.id && untaken.contains(&project))
            .map(|(run, _)| *run)
            .collect();
        if waiters.is_empty() {
            state.waiting.remove(&project);
        } else {
            state.waiting.insert(project, waiters);
        }
    }

    /// The run is done with `project` (decided and acted, or given up on it).
    pub fn done(&self, project: u64) {
        let mut state = lock(&self.pace.state);
        let Some(waiters) = state.waiting.get_mut(&project) else {
            return;
        };
        waiters.retain(|run| *run != self.id);
        if waiters.is_empty() {
            state.waiting.remove(&project);
            drop(state);
            self.pace.changed.notify_waiters();
        }
    }

    /// A project another run listed that this run has still to take, if any.
    pub fn next_waiting(&self) -> Option<u64> {
        let state = lock(&self.pace.state);
        let untaken = state.untaken.get(&self.id)?;
        state
            .waiting
            .iter()
            .filter(|(project, waiters)| waiters.contains(&self.id) && untaken.contains(project))
            .map(|(project, _)| *project)
            .min()
    }

    /// Whether the run may take a project of its own: fewer listed projects than the limit wait
    /// for other runs.
    pub fn may_take_own(&self) -> bool {
        lock(&self.pace.state).waiting.len() < self.pace.limit
    }

    /// Resolves at the next change that may let the run go on. Create it before looking at
    /// the state ([`Notified::enable`]), so no change in between is missed.
    pub fn changed(&self) -> Notified<'_> {
        self.pace.changed.notified()
    }
}

impl Drop for PacedRun {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.pace.state);
            state.untaken.remove(&self.id);
            state.waiting.retain(|_, waiters| {
                waiters.retain(|run| *run != self.id);
                !waiters.is_empty()
            });
        }
        self.pace.changed.notify_waiters();
    }
}

/// What a run takes next from its [`PacedQueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// This project (with its id when known).
    Take(Option<u64>, T),
    /// Nothing now: listed projects wait for other runs; take again after [`PacedRun::changed`].
    Wait,
    /// Every project has been taken.
    Done,
}

/// A run's projects in the order it takes them: first those other runs listed for it, then
/// its own in order, while its instance's [`Pace`] allows.
#[derive(Debug)]
pub struct PacedQueue<T> {
    items: Vec<(Option<u64>, T)>,
    taken: Vec<bool>,
    by_id: HashMap<u64, usize>,
    next: usize,
}

impl<T: Copy> PacedQueue<T> {
    /// The queue of `items` (a project, with its id when known), in this order.
    pub fn new(items: impl IntoIterator<Item = (Option<u64>, T)>) -> PacedQueue<T> {
        let items: Vec<(Option<u64>, T)> = items.into_iter().collect();
        let mut by_id = HashMap::new();
        for (at, (id, _)) in items.iter().enumerate() {
            if let Some(id) = id {
                by_id.entry(*id).or_insert(at);
            }
        }
        PacedQueue {
            taken: vec![false; items.len()],
            items,
            by_id,
            next: 0,
        }
    }

    /// The ids of the projects whose id is known, for [`Pace::start`].
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    /// The next project for `run` to take.
    pub fn next(&mut self, run: &PacedRun) -> Next<T> {
        if let Some(at) = run
            .next_waiting()
            .and_then(|id| self.by_id.get(&id).copied())
            && !self.taken[at]
        {
            return self.take(at, run);
        }
        while self.next < self.items.len() && self.taken[self.next] {
            self.next += 1;
        }
        if self.next == self.items.len() {
            return Next::Done;
        }
        if !run.may_take_own() {
            return Next::Wait;
        }
        self.take(self.next, run)
    }

    fn take(&mut self, at: usize, run: &PacedRun) -> Next<T> {
        self.taken[at] = true;
        let (id, item) = self.items[at];
        if let Some(id) = id {
            run.take(id);
        }
        Next::Take(id, item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_listed_by_one_run_waits_for_the_others_that_have_still_to_take_it() {
        let pace = Arc::new(Pace::new(2));
        let keep = pace.start([1, 2, 3]);
        let retry = pace.start([1, 2, 3]);
        let cancel = pace.start([1, 2, 3]);
        cancel.take(1);
        keep.take(1);
        keep.listed(1);
        // Cancel took project 1 before it was listed (it will decide on it anyway).
        assert_eq!(retry.next_waiting(), Some(1));
        assert_eq!(cancel.next_waiting(), None);
        assert_eq!(keep.next_waiting(), None);
        assert_eq!(pace.waiting(), 1);
        retry.take(1);
        // Taken, not done yet: still waited for, but not offered again.
        assert_eq!(retry.next_waiting(), None);
        assert_eq!(pace.waiting(), 1);
        retry.done(1);
        assert_eq!(pace.waiting(), 0);
    }

    #[test]
    fn at_the_limit_runs_take_only_the_projects_listed_for_them() {
        let pace = Arc::new(Pace::new(2));
        let fast = pace.start([1, 2, 3]);
        let slow = pace.start([1, 2, 3]);
        for project in [1, 2] {
            fast.take(project);
            fast.listed(project);
        }
        assert!(!fast.may_take_own());
        assert!(!slow.may_take_own());
        // The slow run takes what waits for it, lowest id first; each one done lets the fast
        // run go on.
        assert_eq!(slow.next_waiting(), Some(1));
        slow.take(1);
        slow.done(1);
        assert!(fast.may_take_own());
        assert_eq!(slow.next_waiting(), Some(2));
    }

    #[test]
    fn a_run_that_ends_is_waited_for_no_more() {
        let pace = Arc::new(Pace::new(1));
        let lister = pace.start([7]);
        let other = pace.start([7]);
        lister.take(7);
        lister.listed(7);
        assert!(!lister.may_take_own());
        drop(other);
        assert!(lister.may_take_own());
        assert_eq!(pace.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiting_run_is_woken_when_a_project_stops_waiting() {
        let pace = Arc::new(Pace::new(1));
        let lister = pace.start([7]);
        let other = pace.start([7]);
        lister.take(7);
        lister.listed(7);
        let changed = lister.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        assert!(!lister.may_take_own());
        other.take(7);
        other.done(7);
        tokio::time::timeout(std::time::Duration::from_secs(5), changed)
            .await
            .expect("woken");
        assert!(lister.may_take_own());
    }

    #[test]
    fn a_queue_takes_what_was_listed_for_it_first_and_waits_at_the_limit() {
        let pace = Arc::new(Pace::new(1));
        let mut fast_queue = PacedQueue::new([(Some(1), 'a'), (Some(2), 'b'), (None, 'p')]);
        let mut slow_queue = PacedQueue::new([(Some(1), 'a'), (Some(2), 'b'), (None, 'p')]);
        let fast = pace.start(fast_queue.ids());
        let slow = pace.start(slow_queue.ids());
        assert_eq!(fast_queue.next(&fast), Next::Take(Some(1), 'a'));
        fast.listed(1);
        assert_eq!(fast_queue.next(&fast), Next::Wait);
        // Nothing listed for the slow run but project 1, and the limit is reached.
        assert_eq!(slow_queue.next(&slow), Next::Take(Some(1), 'a'));
        assert_eq!(slow_queue.next(&slow), Next::Wait);
        slow.done(1);
        assert_eq!(fast_queue.next(&fast), Next::Take(Some(2), 'b'));
        fast.listed(2);
        assert_eq!(fast_queue.next(&fast), Next::Wait);
        assert_eq!(slow_queue.next(&slow), Next::Take(Some(2), 'b'));
        slow.done(2);
        assert_eq!(fast_queue.next(&fast), Next::Take(None, 'p'));
        assert_eq!(fast_queue.next(&fast), Next::Done);
    }
}
