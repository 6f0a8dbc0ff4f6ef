//! What every fuzz test shares: the case count, the bound on each case (a soft limit that fails
//! the case, so proptest shrinks it, and a watchdog that ends the process on a case that never
//! returns), the seeds, and a harness that runs decoded jobs through `decide`.

use jiff::{SignedDuration, Timestamp};
use jobwarden::gitlab::ProjectRef;
use jobwarden::gitlab::records::JobRecord;
use jobwarden::policy::{
    Budget, CompiledPolicy, Observation, ProjectJobs, Reach, decide, earliest_action, facts_needed,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
use std::collections::HashMap;
use std::fmt::Debug;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Cases per test when `JOBWARDEN_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 512;

/// A case slower than this fails (and is shrunk): a parser that takes seconds on a small input
/// is as good as hung. `JOBWARDEN_FUZZ_CASE_MS` overrides it.
const DEFAULT_SOFT_LIMIT: Duration = Duration::from_secs(5);

/// A case still running after this long is a hang: the watchdog prints it and ends the process.
const HARD_LIMIT: Duration = Duration::from_secs(60);

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name} must be a whole number, not {value:?}"),
    }
}

/// Cases per test: `JOBWARDEN_FUZZ_CASES`, or 512.
pub fn cases() -> u32 {
    env_number("JOBWARDEN_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n.clamp(1, u32::MAX.into()) as u32)
}

/// The proptest configuration of a test whose cases cost about `weight` times a cheap one's:
/// `cases() / weight` cases (at least 16, or all of them when fewer were asked for). Failures
/// are not persisted: a failure found here becomes a named regression test.
pub fn config(weight: u32) -> ProptestConfig {
    let all = cases();
    ProptestConfig {
        cases: (all / weight.max(1)).max(all.min(16)),
        failure_persistence: None,
        // A failing case is shrunk for at most a minute.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

fn soft_limit() -> Duration {
    env_number("JOBWARDEN_FUZZ_CASE_MS").map_or(DEFAULT_SOFT_LIMIT, Duration::from_millis)
}

/// The cases running now, by token: when each started, and what it is fed.
struct Running {
    cases: Mutex<HashMap<u64, (Instant, &'static str, String)>>,
    next: AtomicU64,
}

fn running() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(|| {
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(watchdog)
            .expect("start the watchdog");
        Running {
            cases: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    })
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let cases = running()
            .cases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (started, what, input) in cases.values() {
            if started.elapsed() > HARD_LIMIT {
                // Written to the process's stderr itself: `eprintln!` would go to the output
                // the test harness captures (and never shows, as the process aborts).
                let _ = writeln!(
                    std::io::stderr(),
                    "fuzz: {what}: a case has run for over {} s: a hang. Its input:\n{input}",
                    HARD_LIMIT.as_secs()
                );
                std::process::abort();
            }
        }
    }
}

/// The start of `input`'s debug form (formatting stops after a few KB).
fn preview<I: Debug + ?Sized>(input: &I) -> String {
    struct Limited(String);
    impl std::fmt::Write for Limited {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            const LIMIT: usize = 4096;
            for c in s.chars() {
                if self.0.len() >= LIMIT {
                    self.0.push('…');
                    return Err(std::fmt::Error);
                }
                self.0.push(c);
            }
            Ok(())
        }
    }
    let mut out = Limited(String::new());
    // An error here only means the preview is cut.
    let _ = std::fmt::write(&mut out, format_args!("{input:?}"));
    out.0
}

/// Runs one case of `what` on `input` under the bounds: a panic inside `body` fails the case
/// (proptest catches it), as does taking longer than the soft limit.
pub fn bounded<I: Debug + ?Sized>(
    what: &'static str,
    input: &I,
    body: impl FnOnce(),
) -> Result<(), TestCaseError> {
    let shown = preview(input);
    let state = running();
    let token = state.next.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    state
        .cases
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(token, (started, what, shown));
    // The entry goes even when `body` panics.
    struct Done(u64);
    impl Drop for Done {
        fn drop(&mut self) {
            running()
                .cases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.0);
        }
    }
    let done = Done(token);
    body();
    drop(done);
    let took = started.elapsed();
    let limit = soft_limit();
    prop_assert!(
        took <= limit,
        "{what}: one case took {took:?} (limit {limit:?}, JOBWARDEN_FUZZ_CASE_MS)"
    );
    Ok(())
}

/// A path under the crate root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The files of a directory whose names end with one of `suffixes`, sorted, with their bytes.
pub fn read_dir(relative: &str, suffixes: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = repo_path(relative);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Moments to judge jobs at: mostly near the seeds' dates, sometimes anywhere jiff can
/// represent, including both ends.
pub fn any_now() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        6 => (1_400_000_000i64..1_900_000_000, 0..1_000_000_000i32),
        1 => (min..=max, 0..1_000_000_000i32),
        1 => prop::sample::select(vec![(min, 0), (max, 999_999_999), (0, 0), (-1, 999_999_999)]),
    ]
    .prop_map(|(s, n)| Timestamp::new(s, n).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Runs `records` of one project through everything `decide` offers for `policy` at `now`,
/// with `log` as every job's log tail. Only panics matter; the results are formatted (the
/// reasons are text built from the jobs' values) and dropped.
pub fn exercise_decide(policy: &CompiledPolicy, records: &[JobRecord], now: Timestamp, log: &str) {
    let project = ProjectRef::Id(1);
    let mut jobs = ProjectJobs::new();
    let mut pipeline_jobs: HashMap<u64, Vec<JobRecord>> = HashMap::new();
    let mut log_tails = HashMap::new();
    for record in records {
        if jobs.contains(record.id) {
            jobs.insert(record.clone());
        } else {
            jobs.insert_new(record.clone());
        }
        pipeline_jobs
            .entry(record.pipeline_id)
            .or_default()
            .push(record.clone());
        log_tails.insert(record.id, log.to_owned());
    }
    let day = SignedDuration::from_hours(24);
    let back = |d: SignedDuration| now.checked_sub(d).unwrap_or(Timestamp::MIN);
    if let Some(oldest) = records.iter().map(|r| r.created_at().get()).min() {
        jobs.set_complete_since(oldest.min(back(day)));
    }
    let observations = [Observation {
        project: &project,
        jobs: &jobs,
        pipeline_jobs: &pipeline_jobs,
        log_tails: &log_tails,
    }];
    let facts = facts_needed(policy, &observations, now);
    let budget = Budget::for_run(&policy.limits, 0);
    let decisions = decide(policy, &observations, now, &budget);
    let reach = Reach {
        now,
        history_start: back(day * 3),
        artifacts_start: back(day * 30),
    };
    let earliest: Vec<_> = records
        .iter()
        .map(|r| earliest_action(policy, &jobs, r, &reach))
        .collect();
    let _ = format!(
        "{facts:?}{decisions:?}{earliest:?}{:?}",
        policy.statuses_of_interest()
    );
    for d in &decisions {
        let _ = format!("{} {} {}", d.action, d.reason, d.rule);
    }
    for record in records {
        let _ = record.queued_seconds(now);
        let _ = jobs.attempts_of(record);
        let _ = jobs.newer_pipeline(record);
        let _ = jobs.newer_attempt_seen(record);
    }
    jobs.retain(|r| r.id % 2 == 0);
    let _ = jobs.newest_first().count();
}
