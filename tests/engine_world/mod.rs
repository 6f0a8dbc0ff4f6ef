//! The world the engine tests run in: a simulator on loopback with a manual clock and one empty
//! project, and the engine built the way `jobwarden run` builds it.
#![allow(dead_code)] // each test binary uses a part of it

use jobwarden::crd::JobPolicy;
use jobwarden::engine::{Engine, EngineConfig, Ledger, ReconcileError, RunMode, RunReport};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::metrics::Metrics;
use jobwarden::policy::{CompiledPolicy, PolicyKey, compile};
use jobwarden::sim::{Clock, JobSpec, PipelineSpec, SimConfig, SimControl, SimHandle, Simulator};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "engine-test-token";
pub const PROJECT: &str = "team/app";
pub const RETRY: &str = "POST /projects/:id/jobs/:job_id/retry";
pub const CANCEL: &str = "POST /projects/:id/jobs/:job_id/cancel";
pub const PLAY: &str = "POST /projects/:id/jobs/:job_id/play";
pub const KEEP: &str = "POST /projects/:id/jobs/:job_id/artifacts/keep";
pub const LIST_JOBS: &str = "GET /projects/:id/jobs";
pub const TRACE: &str = "GET /projects/:id/jobs/:job_id/trace";
pub const LIST_PIPELINE_JOBS: &str = "GET /projects/:id/pipelines/:pipeline_id/jobs";

/// Monday 23 November 2026, 10:00 UTC = 11:00 in Berlin.
pub const MONDAY_MORNING: &str = "2026-11-23T10:00:00Z";

pub struct World {
    pub sim: SimHandle,
    pub ctl: SimControl,
    pub project: u64,
}

impl World {
    pub async fn start(at: &str) -> World {
        let mut config = SimConfig::new(TOKEN);
        config.projects = 0;
        config.clock = Clock::manual(at.parse().expect("valid start time"));
        let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
            .await
            .expect("simulator starts");
        let ctl = sim.control();
        let project = ctl.add_project(PROJECT).expect("project created");
        World { sim, ctl, project }
    }

    /// A new engine instance: what a restart of jobwarden gives (allowed to send the token over
    /// plain http, as the simulator speaks it).
    pub fn engine(&self) -> Engine {
        self.engine_with(EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            ..EngineConfig::default()
        })
    }

    pub fn engine_with(&self, config: EngineConfig) -> Engine {
        let ctl = self.ctl.clone();
        Engine::new(
            config,
            Arc::new(move || ctl.now()),
            Arc::new(Metrics::new()),
        )
    }

    /// An engine whose ledger is kept in `dir`, as `jobwarden run --state-dir dir` builds it.
    pub fn engine_with_state_dir(&self, dir: &std::path::Path) -> Engine {
        let ctl = self.ctl.clone();
        let config = EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            ..EngineConfig::default()
        };
        let ledger = Ledger::in_dir(dir, config.in_doubt_for).expect("state dir");
        Engine::with_ledger(
            config,
            Arc::new(move || ctl.now()),
            Arc::new(Metrics::new()),
            ledger,
        )
    }

    pub fn policy(&self, spec_body: &str) -> CompiledPolicy {
        self.named_policy("test", PROJECT, spec_body)
    }

    /// A policy named `name` on one project, spelled `project`.
    pub fn named_policy(&self, name: &str, project: &str, spec_body: &str) -> CompiledPolicy {
        self.policy_on(name, &format!("  projects: [\"{project}\"]\n"), spec_body)
    }

    /// A policy named `name` whose targets (`projects`, `groups`, `excludeProjects`: indented
    /// YAML lines of the spec) are `targets`.
    pub fn policy_on(&self, name: &str, targets: &str, spec_body: &str) -> CompiledPolicy {
        let manifest = format!(
            "apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nmetadata: {{name: {name}, namespace: ci}}\nspec:\n  gitlab:\n    url: {url}\n    tokenSecretRef: {{name: gitlab, key: token}}\n{targets}  interval: 10s\n{spec_body}",
            url = self.sim.base_url(),
        );
        let policy: JobPolicy = serde_yaml::from_str(&manifest).expect("test manifest parses");
        compile(PolicyKey::new("ci", name), &policy.spec).expect("test policy compiles")
    }

    pub async fn run(&self, engine: &Engine, policy: &CompiledPolicy) -> RunReport {
        reconcile(engine, policy, TOKEN)
            .await
            .expect("reconcile succeeds")
    }

    /// A run that must fail, with `token`; its error.
    pub async fn run_failing(
        &self,
        engine: &Engine,
        policy: &CompiledPolicy,
        token: &str,
    ) -> ReconcileError {
        reconcile(engine, policy, token)
            .await
            .expect_err("the run fails")
    }

    pub fn count(&self, endpoint: &str) -> u64 {
        self.ctl.counters().get(endpoint).copied().unwrap_or(0)
    }

    pub fn advance(&self, seconds: u64) {
        self.ctl.advance(Duration::from_secs(seconds));
    }

    /// When the job's artifacts expire, as GitLab holds it (`None`: kept or none).
    pub fn artifacts_expire_at(&self, job: u64) -> Option<jiff::Timestamp> {
        self.ctl
            .job(self.project, job)
            .expect("job exists")
            .artifacts_expire_at
    }

    pub fn status(&self, job: u64) -> String {
        self.ctl.job(self.project, job).expect("job exists").status
    }

    /// Someone plays a manual job; no runner takes it and it fails as stuck.
    pub fn play_and_fail_as_stuck(&self, job: u64) {
        self.ctl.set_job_status(self.project, job, "pending", None);
        self.ctl.set_job_status(
            self.project,
            job,
            "failed",
            Some("stuck_or_timeout_failure"),
        );
    }

    pub fn pipeline(&self, git_ref: &str, tag: bool, jobs: Vec<JobSpec>) -> Vec<u64> {
        let mut spec = PipelineSpec::new(git_ref, jobs);
        spec.tag = tag;
        self.ctl.add_pipeline(self.project, spec).job_ids
    }
}

/// One normal run of `policy` with `token`.
async fn reconcile(
    engine: &Engine,
    policy: &CompiledPolicy,
    token: &str,
) -> Result<RunReport, ReconcileError> {
    engine
        .reconcile(
            policy,
            &SecretString::from(token.to_owned()).into(),
            RunMode::Normal,
            &CancellationToken::new(),
        )
        .await
}

pub fn outcomes(report: &RunReport, action: &str) -> Vec<&'static str> {
    report
        .actions
        .iter()
        .filter(|a| a.action.as_str() == action)
        .map(|a| a.outcome.label())
        .collect()
}

/// Retries jobs that failed with `script_failure`, once.
pub const RETRY_SCRIPT_FAILURES: &str = "  rules:
    - name: retry-script-failures
      match:
        statuses: [failed]
        failureReasons: [script_failure]
      retry:
        limit: 1
";

/// Retries jobs that failed as stuck or timed out, twice.
pub const RETRY_STUCK: &str = "  rules:
    - name: retry-stuck
      match: {statuses: [failed], failureReasons: [stuck_or_timeout_failure]}
      retry: {limit: 2}
";

pub const PLAY_POLICY: &str = "  rules:
    - name: play-deploy-when-green
      match:
        statuses: [manual]
        names: [deploy-staging]
        pipeline: {stagesSucceeded: [build, test]}
        window: {days: [Mon, Tue, Wed, Thu, Fri], from: \"09:00\", to: \"17:00\", timeZone: Europe/Berlin}
      play:
        variables: [{key: TRIGGERED_BY, value: jobwarden}]
";

pub fn deploy_pipeline(test_status: &str) -> Vec<JobSpec> {
    vec![
        JobSpec::new("build", "build", "success").aged(Duration::from_secs(900)),
        JobSpec::new("rspec", "test", test_status).aged(Duration::from_secs(600)),
        JobSpec::new("deploy-staging", "deploy", "manual")
            .manual()
            .aged(Duration::from_secs(600)),
    ]
}
