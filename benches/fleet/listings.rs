//! What jobwarden's job listings of the steady runs were for, from the simulator's request log:
//! full listings (every status, newest first), listings of unfinished jobs through `scope[]`,
//! of manual and scheduled jobs, and of a pipeline's jobs; and how often each project was
//! listed in full, which tells projects listed only at the resync (webhook mode) from projects
//! listed at every run.

use crate::sim::LoggedRequest;
use std::collections::BTreeMap;

/// The project jobs listing's route template.
const PROJECT_JOBS: &str = "/projects/:id/jobs";
/// The pipeline jobs listing's route template.
const PIPELINE_JOBS: &str = "/projects/:id/pipelines/:pipeline_id/jobs";

/// The steady runs' listings, by purpose, and the projects by their number of full listings.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    /// Listings by purpose: `full`, `unfinished`, `blocked`, `pipeline`.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// How many projects had 0, 1, 2, … full listings (the last bucket: that many or more).
    pub full_per_project: Vec<u64>,
    /// False when the log no longer holds the window's beginning (it keeps the newest
    /// requests only): the figures then cover part of the window.
    pub complete: bool,
}

/// The last bucket of [`Listings::full_per_project`].
const MOST_BUCKETS: usize = 6;

impl Listings {
    /// The `GET` listings of `log` received in `[from_ms, to_ms)` (simulated clock), for a
    /// fleet of `projects` projects with ids 1..=projects.
    pub fn of(log: &[LoggedRequest], from_ms: i64, to_ms: i64, projects: u32) -> Listings {
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut full: BTreeMap<&str, u64> = BTreeMap::new();
        let in_window = |r: &&LoggedRequest| r.method == "GET" && r.at >= from_ms && r.at < to_ms;
        for request in log.iter().filter(in_window) {
            let kind = match request.endpoint.as_str() {
                PIPELINE_JOBS => "pipeline",
                PROJECT_JOBS if !request.query.contains("scope") => {
                    *full.entry(project_of(&request.path)).or_default() += 1;
                    "full"
                }
                PROJECT_JOBS if request.query.contains("manual") => "blocked",
                PROJECT_JOBS => "unfinished",
                _ => continue,
            };
            *by_kind.entry(kind).or_default() += 1;
        }
        let mut full_per_project = vec![0u64; MOST_BUCKETS + 1];
        let listed = u64::try_from(full.len()).unwrap_or(u64::MAX);
        full_per_project[0] = u64::from(projects).saturating_sub(listed);
        for count in full.values() {
            let bucket = usize::try_from(*count)
                .unwrap_or(usize::MAX)
                .min(MOST_BUCKETS);
            full_per_project[bucket] += 1;
        }
        Listings {
            by_kind,
            full_per_project,
            complete: log.first().is_none_or(|r| r.at <= from_ms),
        }
    }

    /// One line: listings per project-hour by purpose over `seconds`, and the projects by
    /// their number of full listings.
    pub fn describe(&self, projects: u32, seconds: f64) -> String {
        let per_hour = |n: u64| n as f64 * 3600.0 / seconds / f64::from(projects);
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(kind, n)| format!("{kind} {:.2}", per_hour(*n)))
            .collect();
        let buckets: Vec<String> = self
            .full_per_project
            .iter()
            .enumerate()
            .map(|(listed, n)| {
                let plus = if listed == MOST_BUCKETS { "+" } else { "" };
                format!("{listed}{plus}×: {n}")
            })
            .collect();
        format!(
            "listings per project-hour: {}; projects by full listings in the steady runs: {}{}",
            kinds.join(", "),
            buckets.join(", "),
            if self.complete {
                ""
            } else {
                " (the request log holds only the end of the steady runs)"
            }
        )
    }
}

/// The project part of a raw `/api/v4/projects/<id>/…` path.
fn project_of(path: &str) -> &str {
    path.trim_start_matches("/api/v4/projects/")
        .split('/')
        .next()
        .unwrap_or("")
}
