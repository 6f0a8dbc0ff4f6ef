//! The action ledger: what jobwarden sent to GitLab that neither a later run nor a restart may
//! forget.
//!
//! - **Budgets**: per policy, when it acted over the last hour (`maxActionsPerHour`).
//! - **Unsettled jobs**: a state-changing call to a job is *in flight* from just before it is
//!   sent until GitLab answers it clearly. When the answer is ambiguous (a timeout, a dropped
//!   connection, a 5xx) and a re-read shows no change yet, the call may still land later (a
//!   proxy or a Puma worker may hold it): the job is *in doubt* for
//!   [`Ledger::in_doubt_for`] (5 minutes by default: GitLab's Puma `worker_timeout` ends a request
//!   after 60 s, and a proxy's upstream timeout is 60 s by default, so five minutes covers both
//!   with room to spare). No rule acts on an unsettled job; once the window has passed the job is
//!   re-read before anything is decided again ([`Ledger::due_for_reread`]). So a play that lands
//!   late never meets a second play.
//!
//! With a state file (`run --state-dir`) every change is written before the call it guards is
//! sent: the whole ledger as JSON, replaced atomically (write to a temporary file, then rename),
//! so a process killed at any point finds on restart the budget it had used and every job it
//! may have acted on. Without one the ledger lives in memory and a restart starts it afresh.
//!
//! - **Reporting**: every call sent is reported (an action log line and `actions_total`) at
//!   least once. The outcome is reported before the ledger forgets the call or marks it in
//!   doubt ([`Unsettled::reported`]); a call the state file holds unreported was in flight when
//!   the process stopped, and the next process reports it as in doubt
//!   ([`Ledger::take_unreported`]) before acting on anything.

use crate::crd::ActionKind;
use crate::policy::PolicyKey;
use crate::sync::lock;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HOUR: SignedDuration = SignedDuration::from_hours(1);
/// The state file's name in `--state-dir`.
pub const STATE_FILE: &str = "ledger.json";
/// The version of the state file's format.
const FORMAT_VERSION: u32 = 1;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot write the state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A job with a state-changing call that may not have settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unsettled {
    /// The GitLab instance (its URL).
    pub instance: String,
    pub project_id: u64,
    pub job_id: u64,
    pub action: ActionKind,
    /// Until when the call may still land: while in flight, the request timeout plus the
    /// in-doubt window from when it was sent; once in doubt, the window from the ambiguous answer.
    pub until: Timestamp,
    /// The policy that sent the call (absent in state files of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<SentBy>,
    /// Whether the call's outcome has been reported (logged and counted). Only a call in
    /// flight is unreported; one that a state file holds unreported was in flight when the
    /// process that sent it stopped.
    #[serde(default)]
    pub reported: bool,
}

/// Who sent a call, and to which job: what reporting it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentBy {
    pub namespace: String,
    pub name: String,
    pub rule: String,
    pub job_name: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerState {
    version: u32,
    #[serde(default)]
    budgets: Vec<PolicyBudget>,
    #[serde(default)]
    unsettled: Vec<Unsettled>,
}

/// One policy's actions over the last hour, as the state file holds them: per second, how
/// many were sent then (a first run that acts on a backlog sends tens of thousands in a few
/// seconds, and the file is written at every action). `sent`, one time per action, is what
/// earlier versions wrote: still read, written empty (so they can read the file, without the
/// hour's actions).
#[derive(Debug, Serialize, Deserialize)]
struct PolicyBudget {
    namespace: String,
    name: String,
    #[serde(default)]
    sent: Vec<Timestamp>,
    #[serde(default, rename = "sentPerSecond")]
    sent_per_second: Vec<(Timestamp, u32)>,
}

#[derive(Debug, Default)]
struct Entries {
    budgets: HashMap<PolicyKey, SentTimes>,
    /// By (instance, job id): job ids are unique within an instance.
    unsettled: HashMap<(String, u64), Unsettled>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    entries: Mutex<Entries>,
    file: Option<PathBuf>,
    /// Serialises writes of the state file, so the newest snapshot is always the last written.
    writer: tokio::sync::Mutex<()>,
    in_doubt_for: SignedDuration,
}

impl Ledger {
    /// The default in-doubt window.
    pub const DEFAULT_IN_DOUBT_FOR: SignedDuration = SignedDuration::from_mins(5);

    /// A ledger kept in memory only.
    pub fn in_memory(in_doubt_for: SignedDuration) -> Ledger {
        Ledger {
            entries: Mutex::new(Entries::default()),
            file: None,
            writer: tokio::sync::Mutex::new(()),
            in_doubt_for,
        }
    }

    /// A ledger kept in `dir/ledger.json` (the directory is created if missing), starting from
    /// what the file holds. A file that cannot be parsed is moved aside (`ledger.json.unreadable`)
    /// with an error in the log, and the ledger starts empty: a controller that cannot start
    /// protects nothing.
    pub fn in_dir(dir: &Path, in_doubt_for: SignedDuration) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|source| LedgerError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<LedgerState>(&bytes) {
                Ok(state) => Entries::from_state(state),
                Err(err) => {
                    let aside = dir.join(format!("{STATE_FILE}.unreadable"));
                    tracing::error!(path = %path.display(), error = %err, aside = %aside.display(), "the state file cannot be parsed: moved aside, starting with an empty ledger");
                    std::fs::rename(&path, &aside).map_err(|source| LedgerError::Write {
                        path: aside,
                        source,
                    })?;
                    Entries::default()
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Entries::default(),
            Err(source) => return Err(LedgerError::Read { path, source }),
        };
        Ok(Ledger {
            entries: Mutex::new(entries),
            file: Some(path),
            writer: tokio::sync::Mutex::new(()),
            in_doubt_for,
        })
    }

    /// How long a job stays in doubt after an ambiguous answer.
    pub fn in_doubt_for(&self) -> SignedDuration {
        self.in_doubt_for
    }

    /// Actions the policy sent in the hour before `now`.
    pub fn sent_in_last_hour(&self, policy: &PolicyKey, now: Timestamp) -> u32 {
        let mut entries = lock(&self.entries);
        let Some(times) = entries.budgets.get_mut(policy) else {
            return 0;
        };
        // Sent at least an hour before `now`: no longer counted.
        times.forget_up_to(now.checked_sub(HOUR).unwrap_or(Timestamp::MIN));
        u32::try_from(times.len()).unwrap_or(u32::MAX)
    }

    /// The unsettled call on this job, if any (in flight, in doubt, or past its window but not
    /// re-read yet).
    pub fn unsettled(&self, instance: &str, job_id: u64) -> Option<Unsettled> {
        lock(&self.entries)
            .unsettled
            .get(&(instance.to_owned(), job_id))
            .cloned()
    }

    /// The jobs of a project whose window has passed: re-read them, then [`Ledger::settle`].
    pub fn due_for_reread(&self, instance: &str, project_id: u64, now: Timestamp) -> Vec<u64> {
        let mut due: Vec<u64> = lock(&self.entries)
            .unsettled
            .values()
            .filter(|u| u.instance == instance && u.project_id == project_id && u.until <= now)
            .map(|u| u.job_id)
            .collect();
        due.sort_unstable();
        due
    }

    /// Records that `policy` is about to send `action` to a job, counted in its budget and
    /// unsettled until `until`, and writes the state file. The call must not be sent when
    /// this fails.
    pub async fn begin(
        &self,
        policy: &PolicyKey,
        call: Unsettled,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        {
            let mut entries = lock(&self.entries);
            entries.budgets.entry(policy.clone()).or_default().push(now);
            entries
                .unsettled
                .insert((call.instance.clone(), call.job_id), call);
        }
        self.save().await
    }

    /// The calls that were in flight when the previous process stopped (unreported in the state
    /// file), now marked reported: the caller reports them. Meant for startup, before any call
    /// is sent: the mark is written to the state file at once (blocking), so the next restart
    /// does not report them again; should that write fail, they are reported again then (at
    /// least once, as every call).
    pub fn take_unreported(&self) -> Vec<Unsettled> {
        let (mut taken, bytes) = {
            let mut entries = lock(&self.entries);
            let taken: Vec<Unsettled> = entries
                .unsettled
                .values_mut()
                .filter(|call| !call.reported)
                .map(|call| {
                    call.reported = true;
                    call.clone()
                })
                .collect();
            (taken, entries.to_bytes())
        };
        if let (false, Some(path), Ok(_writing)) =
            (taken.is_empty(), &self.file, self.writer.try_lock())
            && let Err(err) = write_atomically(path, &bytes)
        {
            tracing::warn!(path = %path.display(), error = %err, "cannot update the state file");
        }
        taken.sort_by(|a, b| (&a.instance, a.job_id).cmp(&(&b.instance, b.job_id)));
        taken
    }

    /// Keeps a job in doubt until `until` (after an ambiguous answer that has been reported).
    pub async fn keep_in_doubt(
        &self,
        instance: &str,
        job_id: u64,
        until: Timestamp,
    ) -> Result<(), LedgerError> {
        if let Some(call) = lock(&self.entries)
            .unsettled
            .get_mut(&(instance.to_owned(), job_id))
        {
            call.until = until;
            call.reported = true;
        }
        self.save().await
    }

    /// The call on this job is settled: GitLab answered, or a re-read after the window showed
    /// where it stands.
    pub async fn settle(&self, instance: &str, job_id: u64) -> Result<(), LedgerError> {
        let removed = lock(&self.entries)
            .unsettled
            .remove(&(instance.to_owned(), job_id))
            .is_some();
        if removed { self.save().await } else { Ok(()) }
    }

    /// Forgets a policy's budget (the policy is gone). Its unsettled jobs stay: the calls
    /// were sent whatever became of the policy.
    pub async fn forget_policy(&self, policy: &PolicyKey) -> Result<(), LedgerError> {
        let removed = lock(&self.entries).budgets.remove(policy).is_some();
        if removed { self.save().await } else { Ok(()) }
    }

    /// Writes the whole ledger to the state file (no-op in memory).
    async fn save(&self) -> Result<(), LedgerError> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        let _writing = self.writer.lock().await;
        let bytes = lock(&self.entries).to_bytes();
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        result.map_err(|source| LedgerError::Write {
            path: self.file.clone().unwrap_or_default(),
            source,
        })
    }
}

/// When a policy's actions were sent, to the second: each entry is a second (rounded up) and
/// how many actions were sent in it, so a burst of thousands of actions takes a few entries.
/// An action is counted for at most one second longer than an hour, never shorter.
#[derive(Debug, Default)]
struct SentTimes(VecDeque<(i64, u32)>);

impl SentTimes {
    /// Notes an action sent at `at`.
    fn push(&mut self, at: Timestamp) {
        self.push_many(at, 1);
    }

    /// Notes `count` actions sent at `at`.
    fn push_many(&mut self, at: Timestamp, count: u32) {
        let second = second_up(at);
        match self.0.back_mut() {
            Some((last, sent)) if *last >= second => *sent = sent.saturating_add(count),
            _ => self.0.push_back((second, count)),
        }
    }

    /// Each second with actions, and how many.
    fn per_second(&self) -> impl Iterator<Item = (Timestamp, u32)> + '_ {
        self.0.iter().map(|(second, count)| {
            (
                Timestamp::from_second(*second).unwrap_or(Timestamp::MAX),
                *count,
            )
        })
    }

    /// Forgets the actions sent at or before `end`, and gives back the memory of a burst.
    fn forget_up_to(&mut self, end: Timestamp) {
        let end = end.as_second();
        while self.0.front().is_some_and(|(second, _)| *second <= end) {
            self.0.pop_front();
        }
        if self.0.capacity() > 2 * self.0.len() + 16 {
            self.0.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.0
            .iter()
            .map(|(_, count)| usize::try_from(*count).unwrap_or(usize::MAX))
            .sum()
    }
}

/// The second of `t`, rounded up.
fn second_up(t: Timestamp) -> i64 {
    let second = t.as_second();
    if t.subsec_nanosecond() > 0 {
        second.saturating_add(1)
    } else {
        second
    }
}

impl Entries {
    fn from_state(state: LedgerState) -> Entries {
        Entries {
            budgets: state
                .budgets
                .into_iter()
                .map(|b| {
                    let key = PolicyKey {
                        namespace: b.namespace,
                        name: b.name,
                    };
                    let mut sent = b.sent;
                    sent.sort_unstable();
                    let mut times = SentTimes::default();
                    for t in sent {
                        times.push(t);
                    }
                    let mut per_second = b.sent_per_second;
                    per_second.sort_unstable();
                    for (t, count) in per_second {
                        times.push_many(t, count);
                    }
                    (key, times)
                })
                .collect(),
            unsettled: state
                .unsettled
                .into_iter()
                .map(|u| ((u.instance.clone(), u.job_id), u))
                .collect(),
        }
    }

    /// The state file's content.
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_state()).unwrap_or_else(|_| b"{\"version\":1}".to_vec())
    }

    fn to_state(&self) -> LedgerState {
        let mut budgets: Vec<PolicyBudget> = self
            .budgets
            .iter()
            .filter(|(_, sent)| sent.len() > 0)
            .map(|(key, sent)| PolicyBudget {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                sent: Vec::new(),
                sent_per_second: sent.per_second().collect(),
            })
            .collect();
        budgets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut unsettled: Vec<Unsettled> = self.unsettled.values().cloned().collect();
        unsettled.sort_by(|a, b| (&a.instance, a.job_id).cmp(&(&b.instance, b.job_id)));
        LedgerState {
            version: FORMAT_VERSION,
            budgets,
            unsettled,
        }
    }
}

/// Replaces `path` with `bytes`: a reader (or a restart after a crash) sees the old file or the
/// new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_data()?;
    }
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn key() -> PolicyKey {
        PolicyKey {
            namespace: "ci".into(),
            name: "deploys".into(),
        }
    }

    fn play(job_id: u64, until: Timestamp) -> Unsettled {
        Unsettled {
            instance: "https://gitlab.example.com".into(),
            project_id: 7,
            job_id,
            action: ActionKind::Play,
            until,
            policy: Some(SentBy {
                namespace: "ci".into(),
                name: "deploys".into(),
                rule: "play-deploy".into(),
                job_name: "deploy-staging".into(),
            }),
            reported: false,
        }
    }

    #[tokio::test]
    async fn actions_leave_the_budget_after_an_hour() {
        let ledger = Ledger::in_memory(Ledger::DEFAULT_IN_DOUBT_FOR);
        let t0 = t("2026-11-23T10:00:00Z");
        ledger.begin(&key(), play(1, t0), t0).await.expect("begin");
        let later = t0 + SignedDuration::from_mins(30);
        ledger
            .begin(&key(), play(2, later), later)
            .await
            .expect("begin");
        assert_eq!(
            ledger.sent_in_last_hour(&key(), t0 + SignedDuration::from_mins(59)),
            2
        );
        assert_eq!(
            ledger.sent_in_last_hour(&key(), t0 + SignedDuration::from_mins(60)),
            1
        );
        assert_eq!(
            ledger.sent_in_last_hour(&key(), t0 + SignedDuration::from_mins(91)),
            0
        );
    }

    #[tokio::test]
    async fn a_job_stays_unsettled_until_settled_and_is_due_for_a_re_read_after_its_window() {
        let ledger = Ledger::in_memory(Ledger::DEFAULT_IN_DOUBT_FOR);
        let t0 = t("2026-11-23T10:00:00Z");
        let until = t0 + SignedDuration::from_mins(5);
        ledger
            .begin(&key(), play(42, until), t0)
            .await
            .expect("begin");
        let instance = "https://gitlab.example.com";
        assert_eq!(ledger.unsettled(instance, 42).map(|u| u.until), Some(until));
        assert!(ledger.due_for_reread(instance, 7, t0).is_empty());
        assert_eq!(ledger.due_for_reread(instance, 7, until), [42]);
        assert!(
            ledger.due_for_reread(instance, 8, until).is_empty(),
            "another project"
        );
        ledger.settle(instance, 42).await.expect("settle");
        assert_eq!(ledger.unsettled(instance, 42), None);
    }

    #[test]
    fn sent_times_count_a_burst_in_a_few_entries_and_never_forget_early() {
        let t0 = t("2026-11-23T10:00:00.250Z");
        let mut times = SentTimes::default();
        // 10,000 actions over 5 seconds.
        for n in 0..10_000 {
            times.push(t0 + SignedDuration::from_micros(n * 500));
        }
        assert_eq!(times.len(), 10_000);
        assert!(times.0.len() <= 6, "{}", times.0.len());
        assert_eq!(
            times.per_second().next(),
            Some((t("2026-11-23T10:00:01Z"), 1_501))
        );
        // The first second's actions (10:00:00.25 to 10:00:01) are forgotten only once the
        // second they were counted to has come.
        times.forget_up_to(t("2026-11-23T10:00:00.9995Z"));
        assert_eq!(times.len(), 10_000);
        times.forget_up_to(t("2026-11-23T10:00:01Z"));
        assert_eq!(times.len(), 10_000 - 1_501, "up to 10:00:01 exactly");
        times.forget_up_to(t0 + SignedDuration::from_secs(10));
        assert_eq!(times.len(), 0);
        assert!(times.0.capacity() < 100, "{}", times.0.capacity());
    }

    #[tokio::test]
    async fn a_restart_finds_the_budget_and_the_jobs_in_doubt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = t("2026-11-23T10:00:00Z");
        let until = t0 + SignedDuration::from_mins(5);
        {
            let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("open");
            ledger.begin(&key(), play(42, t0), t0).await.expect("begin");
            ledger.begin(&key(), play(43, t0), t0).await.expect("begin");
            ledger
                .keep_in_doubt("https://gitlab.example.com", 42, until)
                .await
                .expect("in doubt");
            ledger
                .settle("https://gitlab.example.com", 43)
                .await
                .expect("settled");
        }
        let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("reopen");
        assert_eq!(ledger.sent_in_last_hour(&key(), t0), 2);
        assert_eq!(
            ledger.unsettled("https://gitlab.example.com", 42),
            Some(Unsettled {
                reported: true,
                ..play(42, until)
            })
        );
        assert_eq!(ledger.unsettled("https://gitlab.example.com", 43), None);
        assert!(
            ledger.take_unreported().is_empty(),
            "the call in doubt was reported when it was marked so"
        );
    }

    /// The state file in `dir`.
    fn state_file(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .expect("the state dir")
            .map(|entry| entry.expect("an entry").path())
            .find(|path| path.extension().is_some_and(|e| e == "json"))
            .expect("the state file")
    }

    #[tokio::test]
    async fn a_burst_of_actions_takes_a_line_per_second_in_the_state_file_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = t("2026-11-23T10:00:00.5Z");
        {
            let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("open");
            for n in 0..3_000u64 {
                let at = t0 + SignedDuration::from_millis(i64::try_from(n).unwrap());
                ledger.begin(&key(), play(n, at), at).await.expect("begin");
                ledger
                    .settle("https://gitlab.example.com", n)
                    .await
                    .expect("settle");
            }
        }
        let file = state_file(dir.path());
        let bytes = std::fs::read(&file).expect("the state file").len();
        assert!(
            bytes < 1_000,
            "{bytes} bytes for 3,000 actions over 3 seconds"
        );
        let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("reopen");
        assert_eq!(ledger.sent_in_last_hour(&key(), t0), 3_000);
        // Sent from 10:00:00.5 to 10:00:03.499, counted to the second rounded up: at 11:00:02
        // the 501 actions up to 10:00:01 and the 1,000 up to 10:00:02 are an hour old.
        let later = t("2026-11-23T11:00:02Z");
        assert_eq!(ledger.sent_in_last_hour(&key(), later), 1_499);
    }

    #[tokio::test]
    async fn a_state_file_of_an_earlier_version_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("open");
        opened
            .begin(
                &key(),
                play(1, t("2026-11-23T10:00:00Z")),
                t("2026-11-23T10:00:00Z"),
            )
            .await
            .expect("begin");
        drop(opened);
        let file = state_file(dir.path());
        let key = key();
        let earlier = serde_json::json!({
            "version": 1,
            "budgets": [{"namespace": key.namespace, "name": key.name,
                "sent": ["2026-11-23T10:00:00Z", "2026-11-23T10:00:01.5Z"]}],
        });
        std::fs::write(&file, earlier.to_string()).expect("write");
        let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("reopen");
        assert_eq!(ledger.sent_in_last_hour(&key, t("2026-11-23T10:30:00Z")), 2);
    }

    #[tokio::test]
    async fn a_call_in_flight_when_the_process_stopped_is_taken_for_reporting_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = t("2026-11-23T10:00:00Z");
        {
            let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("open");
            ledger.begin(&key(), play(42, t0), t0).await.expect("begin");
            // The process stops here, before GitLab answers.
        }
        let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("reopen");
        let taken = ledger.take_unreported();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].job_id, 42);
        assert!(taken[0].reported);
        assert!(ledger.take_unreported().is_empty(), "taken once");
        let reopened = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("reopen");
        assert!(
            reopened.take_unreported().is_empty(),
            "the mark was written: the next restart does not report it again"
        );
        assert!(
            ledger.unsettled("https://gitlab.example.com", 42).is_some(),
            "still unsettled: nothing is sent to the job before a re-read"
        );
    }

    #[test]
    fn state_files_of_the_previous_format_still_load() {
        let old = r#"{"version":1,"budgets":[],"unsettled":[{"instance":"https://gitlab.example.com","projectId":7,"jobId":42,"action":"play","until":"2026-11-23T10:05:00Z"}]}"#;
        let state: LedgerState = serde_json::from_str(old).expect("parses");
        assert_eq!(state.unsettled[0].policy, None);
        assert!(!state.unsettled[0].reported);
    }

    #[tokio::test]
    async fn an_unreadable_state_file_is_moved_aside_and_the_ledger_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{\"version\": 1, \"budg").expect("write");
        let ledger = Ledger::in_dir(dir.path(), Ledger::DEFAULT_IN_DOUBT_FOR).expect("open");
        assert_eq!(
            ledger.sent_in_last_hour(&key(), t("2026-11-23T10:00:00Z")),
            0
        );
        assert!(dir.path().join("ledger.json.unreadable").exists());
    }
}
