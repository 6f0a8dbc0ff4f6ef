//! The JobPolicies jobwarden runs in the bench, written to a directory for `jobwarden run`.
//!
//! Three policies per slice of at most `BENCH_PROJECTS_PER_POLICY` projects, after the
//! examples in `deploy/examples/`:
//! * `retry-stuck-<n>`: retry jobs that failed as `stuck_or_timeout_failure` (and the GitLab
//!   19.1+ reasons it covers) and finished within the last `BENCH_RETRY_FINISHED_WITHIN_MINS`
//!   (`finishedWithin`; no window when 0), at most 2 retries, no backoff: exactly what the
//!   Python baseline does;
//! * `cancel-stale-<n>`: superseded build/test jobs, and jobs created, pending or waiting for a
//!   resource for more than 30 minutes (`cancel-stale.yaml`'s rules as they were before the
//!   example left `created` jobs out);
//! * `keep-release-artifacts-<n>`: `keep-release-artifacts.yaml`'s rule.
//!
//! In webhook mode every policy also gets `resyncInterval` (`BENCH_RESYNC_FACTOR` intervals).
//!
//! Limits scale with the slice (20 actions per project and run, 200 per project and hour, at
//! most the schema's 10,000 and 100,000): a brake against a runaway policy that does not hold
//! back the three days of failures the simulated fleet starts with (the baseline has no brake).

use std::path::Path;

/// The fields of a policy that vary; the rules come from [`RULES`].
struct Slice<'a> {
    url: &'a str,
    index: usize,
    projects: &'a [u32],
    interval_secs: u64,
    /// `resyncInterval` (webhook mode).
    resync_secs: Option<u64>,
    /// The retry rule's `finishedWithin`, in minutes.
    retry_window_mins: Option<u64>,
}

/// `(policy name prefix, rules)`.
const RULES: [(&str, &str); 3] = [
    (
        "retry-stuck",
        "    - name: retry-stuck-or-timed-out
      match:
        statuses: [failed]
        failureReasons: [stuck_or_timeout_failure]
{retry_window}      retry:
        limit: 2
",
    ),
    (
        "cancel-stale",
        "    - name: cancel-superseded
      match:
        statuses: [pending, running]
        superseded: true
        stages: [build, test]
      cancel: {}
    - name: cancel-stale-pending
      match:
        statuses: [created, pending, waiting_for_resource]
        olderThan: 30m
      cancel: {}
",
    ),
    (
        "keep-release-artifacts",
        "    - name: keep-release-artifacts
      match:
        statuses: [success]
        tag: true
        refs: [\"v1.*\"]
        names: [\"release\"]
        artifactsExpireWithin: 72h
      keepArtifacts: {}
",
    ),
];

impl Slice<'_> {
    fn manifest(&self, prefix: &str, rules: &str) -> String {
        let retry_window = self
            .retry_window_mins
            .map(|m| format!("        finishedWithin: {m}m\n"))
            .unwrap_or_default();
        let rules = rules.replace("{retry_window}", &retry_window);
        let projects: Vec<String> = self.projects.iter().map(|p| format!("\"{p}\"")).collect();
        let n = u32::try_from(self.projects.len()).unwrap_or(u32::MAX);
        let per_run = n.saturating_mul(20).min(10_000);
        let per_hour = n.saturating_mul(200).min(100_000);
        format!(
            "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata:
  name: {prefix}-{index}
  namespace: bench
spec:
  gitlab:
    url: \"{url}\"
    tokenSecretRef: {{name: gitlab-token, key: token}}
  projects: [{projects}]
  interval: {interval}s
{resync}  rules:
{rules}  limits:
    maxActionsPerRun: {per_run}
    maxActionsPerHour: {per_hour}
",
            index = self.index,
            url = self.url,
            projects = projects.join(", "),
            interval = self.interval_secs,
            resync = self
                .resync_secs
                .map(|r| format!("  resyncInterval: {r}s\n"))
                .unwrap_or_default(),
        )
    }
}

/// Writes the policies for projects `1..=projects` into `dir`; returns their names.
/// `resync_secs` gives them a `resyncInterval` (webhook mode), `retry_window_mins` the retry
/// rule a `finishedWithin`.
pub fn write(
    dir: &Path,
    url: &str,
    projects: u32,
    per_policy: u32,
    interval_secs: u64,
    resync_secs: Option<u64>,
    retry_window_mins: Option<u64>,
) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let ids: Vec<u32> = (1..=projects).collect();
    let mut names = Vec::new();
    for (index, chunk) in ids.chunks(per_policy as usize).enumerate() {
        let slice = Slice {
            url,
            index,
            projects: chunk,
            interval_secs,
            resync_secs,
            retry_window_mins,
        };
        for (prefix, rules) in RULES {
            let name = format!("{prefix}-{index}");
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, slice.manifest(prefix, rules))
                .map_err(|err| format!("{}: {err}", path.display()))?;
            names.push(name);
        }
    }
    Ok(names)
}
