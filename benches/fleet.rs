//! Fleet benchmark: what observing GitLab costs, with and without the incremental scheme, and
//! how fast the pure decision function is. Prints its figures; asserts nothing.
//!
//!     cargo bench --bench fleet                 # 500 projects
//!     BENCH_PROJECTS=2000 cargo bench --bench fleet
//!
//! Everything runs in-process on loopback: the simulator (frozen fleet, manual clock, no rate
//! limits) and the real engine, client and policy code.

use futures::TryStreamExt;
use jobwarden::crd::JobPolicy;
use jobwarden::engine::{Engine, EngineConfig, RunMode};
use jobwarden::gitlab::models::ProjectRef;
use jobwarden::gitlab::records::{JobRecord, JobWire, Names};
use jobwarden::gitlab::{ClientConfig, Credential, GitLabClient, ListJobsQuery};
use jobwarden::metrics::Metrics;
use jobwarden::policy::{
    Budget, CompiledPolicy, Observation, PolicyKey, ProjectJobs, compile, decide, facts_needed,
};
use jobwarden::sim::{Clock, FleetConfig, SimConfig, SimControl, Simulator};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token";

/// A project, its jobs, and its jobs by pipeline.
type World = (ProjectRef, ProjectJobs, HashMap<u64, Vec<JobRecord>>);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn policy(url: &url::Url, projects: u32) -> CompiledPolicy {
    let list: Vec<String> = (1..=projects).map(|p| format!("\"{p}\"")).collect();
    let manifest = format!(
        "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: bench, namespace: ci}}
spec:
  gitlab: {{url: \"{url}\", tokenSecretRef: {{name: gitlab, key: token}}}}
  projects: [{}]
  interval: 10s
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
    let policy: JobPolicy = serde_yaml::from_str(&manifest).expect("bench manifest");
    compile(PolicyKey::new("ci", "bench"), &policy.spec).expect("bench policy compiles")
}

fn engine(ctl: &SimControl) -> Engine {
    let ctl = ctl.clone();
    let config = EngineConfig {
        requests_per_minute: 10_000_000,
        fact_concurrency: 8,
        ..EngineConfig::default()
    };
    Engine::new(
        config,
        Arc::new(move || ctl.now()),
        Arc::new(Metrics::new()),
    )
}

async fn reconcile(engine: &Engine, policy: &CompiledPolicy) -> (Duration, usize) {
    let started = Instant::now();
    let report = engine
        .reconcile(
            policy,
            &SecretString::from(TOKEN.to_owned()),
            RunMode::ForceDryRun,
            &CancellationToken::new(),
        )
        .await
        .expect("bench reconcile");
    (started.elapsed(), report.jobs_seen)
}

fn total_requests(ctl: &SimControl) -> u64 {
    ctl.counters().values().sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let projects: u32 = std::env::var("BENCH_PROJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut config = SimConfig::new(TOKEN);
    config.projects = projects;
    config.seed = 7;
    config.fleet = FleetConfig::frozen();
    config.jobs_list_rate_limit_per_minute = 0;
    config.authenticated_api_rate_limit_per_minute = 0;
    config.clock = Clock::manual("2026-11-23T10:00:00Z".parse().expect("time"));
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let ctl = sim.control();
    let policy = policy(&sim.base_url(), projects);
    let rss_before = rss_mib();

    // 1. First sync: every job of the history window.
    let incremental = engine(&ctl);
    ctl.reset_log();
    let (first_time, jobs_seen) = reconcile(&incremental, &policy).await;
    let first_requests = total_requests(&ctl);

    // 2. Steady state with the incremental observers.
    let mut steady_times = Vec::new();
    let mut steady_requests = Vec::new();
    for _ in 0..9 {
        ctl.advance(Duration::from_secs(30));
        ctl.reset_log();
        let (t, _) = reconcile(&incremental, &policy).await;
        steady_times.push(t.as_secs_f64());
        steady_requests.push(total_requests(&ctl) as f64);
    }
    let rss_after = rss_mib();

    // 3. The naive way: read every job again on every run (a fresh engine each time).
    let mut naive_times = Vec::new();
    let mut naive_requests = Vec::new();
    for _ in 0..5 {
        ctl.advance(Duration::from_secs(30));
        ctl.reset_log();
        let (t, _) = reconcile(&engine(&ctl), &policy).await;
        naive_times.push(t.as_secs_f64());
        naive_requests.push(total_requests(&ctl) as f64);
    }

    // 4. The pure decision function over every job of the fleet, with all facts known.
    let client = GitLabClient::new(ClientConfig::new(
        sim.base_url(),
        Some(Credential::PrivateToken(SecretString::from(
            TOKEN.to_owned(),
        ))),
    ))
    .expect("client");
    let mut worlds: Vec<World> = Vec::new();
    for p in 1..=u64::from(projects) {
        let project = ProjectRef::Id(p);
        let wires: Vec<JobWire> = client
            .list_project_jobs_as(&project, &ListJobsQuery::default())
            .try_collect()
            .await
            .expect("jobs");
        let mut names = Names::default();
        let records: Vec<JobRecord> = wires
            .into_iter()
            .map(|w| JobRecord::from_wire(w, ctl.now(), &mut names))
            .collect();
        let mut by_pipeline: HashMap<u64, Vec<JobRecord>> = HashMap::new();
        for job in &records {
            by_pipeline
                .entry(job.pipeline_id)
                .or_default()
                .push(job.clone());
        }
        let jobs: ProjectJobs = records.into_iter().collect();
        worlds.push((project, jobs, by_pipeline));
    }
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
    let all_jobs: usize = worlds.iter().map(|w| w.1.len()).sum();
    let now = ctl.now();
    let budget = Budget {
        remaining_this_run: u32::MAX,
        remaining_this_hour: u32::MAX,
    };
    let mut decide_times = Vec::new();
    let mut decisions = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let _ = facts_needed(&policy, &observations, now);
        decisions = decide(&policy, &observations, now, &budget).len();
        decide_times.push(started.elapsed().as_secs_f64());
    }
    sim.shutdown().await;

    let steady_t = median(steady_times);
    let naive_t = median(naive_times);
    let steady_r = median(steady_requests);
    let naive_r = median(naive_requests);
    let decide_t = median(decide_times);
    println!(
        "jobwarden fleet benchmark — {projects} projects, {jobs_seen} jobs in the 72 h window"
    );
    println!("{:<52} {:>14}", "figure", "value");
    println!(
        "{:<52} {:>14.3}",
        "first sync: wall time (s)",
        first_time.as_secs_f64()
    );
    println!(
        "{:<52} {:>14.2}",
        "first sync: requests per project",
        first_requests as f64 / f64::from(projects)
    );
    println!(
        "{:<52} {:>14.3}",
        "steady state: median wall time per run (s)", steady_t
    );
    println!(
        "{:<52} {:>14.2}",
        "steady state: median requests per project per run",
        steady_r / f64::from(projects)
    );
    println!(
        "{:<52} {:>14.3}",
        "naive full re-list: median wall time per run (s)", naive_t
    );
    println!(
        "{:<52} {:>14.2}",
        "naive full re-list: median requests per project",
        naive_r / f64::from(projects)
    );
    println!(
        "{:<52} {:>14.1}",
        "ratio naive / incremental: requests",
        naive_r / steady_r
    );
    println!(
        "{:<52} {:>14.1}",
        "ratio naive / incremental: wall time",
        naive_t / steady_t
    );
    println!(
        "{:<52} {:>14.3}",
        "decide over every job (ms, median of 21)",
        decide_t * 1000.0
    );
    println!(
        "{:<52} {:>14.0}",
        "decide throughput (jobs/s)",
        all_jobs as f64 / decide_t
    );
    println!(
        "{:<52} {:>14}",
        "decide: jobs / decisions",
        format!("{all_jobs} / {decisions}")
    );
    println!(
        "{:<52} {:>14.1}",
        "RSS before / after steady state (MiB)", rss_before
    );
    println!("{:<52} {:>14.1}", "", rss_after);
}
