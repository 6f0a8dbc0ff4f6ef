//! The in-process micro-bench of the pure decision function: `facts_needed` and `decide` over
//! every job of a frozen fleet, with every fact known, on one thread. Goal: at least 1,000,000
//! job evaluations per second on one core.

use futures::TryStreamExt;
use jobwarden::crd::JobPolicy;
use jobwarden::gitlab::models::ProjectRef;
use jobwarden::gitlab::records::{JobRecord, JobWire, Names};
use jobwarden::gitlab::{ClientConfig, Credential, GitLabClient, ListJobsQuery};
use jobwarden::policy::{
    Budget, CompiledPolicy, Observation, PolicyKey, ProjectJobs, compile, decide, facts_needed,
};
use jobwarden::sim::{Clock, FleetConfig, SimConfig, Simulator};
use secrecy::SecretString;
use std::collections::HashMap;
use std::time::Instant;

const TOKEN: &str = "decide-token";

/// Timed passes; the median is reported.
const PASSES: usize = 21;

/// A project, its jobs, and its jobs by pipeline.
type World = (ProjectRef, ProjectJobs, HashMap<u64, Vec<JobRecord>>);

/// What the micro-bench measured.
pub struct DecideFigures {
    pub projects: u32,
    pub jobs: usize,
    pub decisions: usize,
    pub median_seconds: f64,
}

impl DecideFigures {
    pub fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.median_seconds
    }

    /// The line printed under the table.
    pub fn line(&self) -> String {
        format!(
            "decide micro-bench: {} jobs of {} projects ({} decisions) in {:.3} ms (median of {PASSES}) \
             = {:.0} jobs/s on one core (goal ≥ 1,000,000)",
            self.jobs,
            self.projects,
            self.decisions,
            self.median_seconds * 1000.0,
            self.jobs_per_second()
        )
    }
}

fn policy(url: &url::Url, projects: u32) -> Result<CompiledPolicy, String> {
    let list: Vec<String> = (1..=projects).map(|p| format!("\"{p}\"")).collect();
    let manifest = format!(
        "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: decide, namespace: bench}}
spec:
  gitlab: {{url: \"{url}\", tokenSecretRef: {{name: gitlab, key: token}}}}
  projects: [{}]
  interval: 30s
  dryRun: true
  limits: {{maxActionsPerRun: 10000, maxActionsPerHour: 100000}}
  rules:
    - name: retry-transient
      match: {{statuses: [failed], failureReasons: [stuck_or_timeout_failure, runner_system_failure]}}
      retry: {{limit: 2, backoff: {{duration: 30s, factor: 2}}}}
    - name: cancel-stale
      match: {{statuses: [created, pending], olderThan: 2h}}
      cancel: {{}}
    - name: keep-release
      match: {{statuses: [success], tag: true, artifactsExpireWithin: 72h}}
      keepArtifacts: {{}}
",
        list.join(", ")
    );
    let policy: JobPolicy =
        serde_yaml::from_str(&manifest).map_err(|err| format!("decide manifest: {err}"))?;
    compile(PolicyKey::new("bench", "decide"), &policy.spec)
        .map_err(|err| format!("decide policy: {err:?}"))
}

/// Lists every job of every project once, as the engine's observers would hold them.
async fn load_worlds(
    client: &GitLabClient,
    projects: u32,
    now: jiff::Timestamp,
) -> Result<Vec<World>, String> {
    let mut worlds = Vec::new();
    for p in 1..=u64::from(projects) {
        let project = ProjectRef::Id(p);
        let wires: Vec<JobWire> = client
            .list_project_jobs_as(&project, &ListJobsQuery::default())
            .try_collect()
            .await
            .map_err(|err| format!("listing project {p}: {err}"))?;
        let mut names = Names::default();
        let records: Vec<JobRecord> = wires
            .into_iter()
            .map(|w| JobRecord::from_wire(w, now, &mut names))
            .collect();
        let mut by_pipeline: HashMap<u64, Vec<JobRecord>> = HashMap::new();
        for job in &records {
            by_pipeline
                .entry(job.pipeline_id)
                .or_default()
                .push(job.clone());
        }
        worlds.push((project, records.into_iter().collect(), by_pipeline));
    }
    Ok(worlds)
}

/// Times `facts_needed` plus `decide` over the fleet.
fn time_decide(
    policy: &CompiledPolicy,
    worlds: &[World],
    now: jiff::Timestamp,
) -> (f64, usize, usize) {
    let no_logs = HashMap::new();
    let observations: Vec<Observation<'_>> = worlds
        .iter()
        .map(|(project, jobs, pipelines)| Observation {
            project,
            jobs,
            pipeline_jobs: pipelines,
            log_tails: &no_logs,
        })
        .collect();
    let jobs: usize = worlds.iter().map(|w| w.1.len()).sum();
    let budget = Budget {
        remaining_this_run: u32::MAX,
        remaining_this_hour: u32::MAX,
    };
    let mut times = Vec::with_capacity(PASSES);
    let mut decisions = 0;
    for _ in 0..PASSES {
        let started = Instant::now();
        let _ = facts_needed(policy, &observations, now);
        decisions = decide(policy, &observations, now, &budget).len();
        times.push(started.elapsed().as_secs_f64());
    }
    let median = crate::measure::median(times.into_iter());
    (median, jobs, decisions)
}

/// Runs the micro-bench on an in-process simulator (frozen fleet, manual clock, no limits).
pub fn run(projects: u32, seed: u64) -> Result<DecideFigures, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async {
        let mut config = SimConfig::new(TOKEN);
        config.projects = projects;
        config.seed = seed;
        config.fleet = FleetConfig::frozen();
        config.jobs_list_rate_limit_per_minute = 0;
        config.authenticated_api_rate_limit_per_minute = 0;
        config.clock = Clock::manual(
            "2026-11-23T10:00:00Z"
                .parse()
                .map_err(|err| format!("{err}"))?,
        );
        let sim = Simulator::start(config, ([127, 0, 0, 1], 0).into())
            .await
            .map_err(|err| format!("in-process simulator: {err}"))?;
        let now = sim.control().now();
        let credential = Credential::PrivateToken(SecretString::from(TOKEN.to_owned()));
        let client = GitLabClient::new(ClientConfig::new(sim.base_url(), Some(credential)))
            .map_err(|err| format!("client: {err}"))?;
        let policy = policy(&sim.base_url(), projects)?;
        let worlds = load_worlds(&client, projects, now).await?;
        sim.shutdown().await;
        let (median_seconds, jobs, decisions) = time_decide(&policy, &worlds, now);
        Ok(DecideFigures {
            projects,
            jobs,
            decisions,
            median_seconds,
        })
    })
}
