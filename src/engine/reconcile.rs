//! One policy run: observe → gather facts → decide → act → report.

use super::act::{self, Outcome};
use super::budget::ActionHistory;
use super::observe::{DEFAULT_HISTORY, ProjectObserver};
use crate::gitlab::models::{Job, ProjectRef};
use crate::gitlab::{ClientConfig, Credential, GitLabClient, GitLabError, RateLimiter};
use crate::metrics::{JobAccounting, Metrics};
use crate::policy::{
    Budget, CompiledPolicy, Decision, FactRequest, Observation, PolicyKey, Verdict, decide,
    facts_needed,
};
use futures::TryStreamExt;
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The engine's notion of "now". Production uses the system clock; tests use the simulator's.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// How the engine talks to GitLab and how much it remembers.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How far back a project's first sync reads.
    pub history: SignedDuration,
    /// How much of a job log's tail `logPattern` reads.
    pub log_tail_bytes: usize,
    /// The request budget per GitLab instance (token bucket, per minute).
    pub requests_per_minute: u32,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Extra CA bundle (PEM) for GitLab's TLS certificate.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Fact requests (pipeline job lists, logs) fetched concurrently within one run.
    pub fact_concurrency: usize,
    /// Projects observed concurrently within one run.
    pub observe_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            history: DEFAULT_HISTORY,
            log_tail_bytes: 64 * 1024,
            requests_per_minute: 600,
            request_timeout: Duration::from_secs(30),
            ca_bundle: None,
            fact_concurrency: 4,
            observe_concurrency: 8,
        }
    }
}

/// Whether a run may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Act as the policy says (its own `dryRun` still applies).
    Normal,
    /// Decide and report only, whatever the policy says (`jobwarden plan`).
    ForceDryRun,
}

/// Why a run failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot build a GitLab client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: GitLabError,
    },
    #[error("every project failed; first error: {0}")]
    AllProjectsFailed(#[source] GitLabError),
}

impl ReconcileError {
    /// A stable name for metrics (`reconcile_errors_total{error}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Client { .. } => "client_config",
            ReconcileError::AllProjectsFailed(e) => e.kind(),
        }
    }
}

/// One decision and what became of it.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub time: Timestamp,
    pub project: ProjectRef,
    pub job_id: u64,
    pub job_name: String,
    pub rule: String,
    pub action: &'static str,
    pub reason: String,
    pub outcome: Outcome,
}

/// A project that could not be observed in this run; the others went on.
#[derive(Debug, Clone)]
pub struct ProjectFailure {
    pub project: ProjectRef,
    pub kind: &'static str,
    pub message: String,
}

/// What one run of a policy saw and did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub policy: PolicyKey,
    pub time: Timestamp,
    pub dry_run: bool,
    pub suspended: bool,
    pub projects: usize,
    pub jobs_seen: usize,
    pub actions: Vec<ActionRecord>,
    pub failures: Vec<ProjectFailure>,
}

impl RunReport {
    /// Logs the run: one structured line per action (deferred ones are not news), then one
    /// for the run.
    pub fn log(&self) {
        for record in &self.actions {
            if matches!(record.outcome, Outcome::Deferred { .. }) {
                continue;
            }
            tracing::info!(
                target: "jobwarden::action",
                policy = %self.policy,
                project = %record.project,
                job_id = record.job_id,
                job_name = %record.job_name,
                rule = %record.rule,
                action = record.action,
                outcome = record.outcome.label(),
                reason = %record.reason,
                "{}",
                record.outcome
            );
        }
        tracing::info!(
            policy = %self.policy,
            projects = self.projects,
            jobs = self.jobs_seen,
            actions = self.actions.len(),
            failures = self.failures.len(),
            "reconciled"
        );
    }

    /// Count of records with this outcome label.
    pub fn count(&self, action: &str, outcome: &str) -> usize {
        self.actions
            .iter()
            .filter(|a| a.action == action && a.outcome.label() == outcome)
            .count()
    }
}

type ObserverSlot = Arc<tokio::sync::Mutex<ProjectObserver>>;

struct Inner {
    config: EngineConfig,
    clock: Clock,
    metrics: Arc<Metrics>,
    started_at: Timestamp,
    clients: Mutex<HashMap<(String, String), GitLabClient>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    observers: Mutex<HashMap<(String, ProjectRef), ObserverSlot>>,
    budgets: Mutex<HashMap<PolicyKey, ActionHistory>>,
    accounting: Mutex<JobAccounting>,
}

/// The reconciler's context: GitLab clients (one rate limiter per instance), the shared project
/// observers, budgets and metrics. Cheap to clone; every policy run goes through one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    pub fn new(config: EngineConfig, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let started_at = clock();
        Engine {
            inner: Arc::new(Inner {
                config,
                clock,
                metrics,
                started_at,
                clients: Mutex::new(HashMap::new()),
                limiters: Mutex::new(HashMap::new()),
                observers: Mutex::new(HashMap::new()),
                budgets: Mutex::new(HashMap::new()),
                accounting: Mutex::new(JobAccounting::new()),
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    /// The client for a GitLab instance and token. Clients of one instance share one rate
    /// limiter, whatever the token.
    fn client_for(
        &self,
        url: &url::Url,
        token: &SecretString,
    ) -> Result<GitLabClient, ReconcileError> {
        let instance = url.as_str().trim_end_matches('/').to_owned();
        // The token is part of the key only as a digest: it never leaves this function.
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            token.expose_secret().hash(&mut h);
            format!("{:x}", h.finish())
        };
        let key = (instance.clone(), digest);
        if let Some(client) = lock(&self.inner.clients).get(&key) {
            return Ok(client.clone());
        }
        let limiter = lock(&self.inner.limiters)
            .entry(instance.clone())
            .or_insert_with(|| Arc::new(RateLimiter::new(self.inner.config.requests_per_minute)))
            .clone();
        let mut config =
            ClientConfig::new(url.clone(), Some(Credential::PrivateToken(token.clone())));
        config.timeout = self.inner.config.request_timeout;
        config.ca_bundle = self.inner.config.ca_bundle.clone();
        config.requests_per_minute = self.inner.config.requests_per_minute;
        config.rate_limiter = Some(limiter);
        config.observer = self.inner.metrics.clone();
        let client = GitLabClient::new(config).map_err(|source| ReconcileError::Client {
            url: instance.clone(),
            source,
        })?;
        lock(&self.inner.clients).insert(key, client.clone());
        Ok(client)
    }

    fn observer_for(&self, instance: &str, project: &ProjectRef) -> ObserverSlot {
        lock(&self.inner.observers)
            .entry((instance.to_owned(), project.clone()))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(ProjectObserver::new(
                    project.clone(),
                    self.inner.config.history,
                )))
            })
            .clone()
    }

    /// Runs one reconcile of a policy. Per-project failures are reported in the run report and
    /// do not stop the other projects; the run fails only when no project could be observed.
    /// `stop` is checked between actions: an action in flight is always finished.
    pub async fn reconcile(
        &self,
        policy: &CompiledPolicy,
        token: &SecretString,
        mode: RunMode,
        stop: &CancellationToken,
    ) -> Result<RunReport, ReconcileError> {
        let started = std::time::Instant::now();
        let result = self.reconcile_inner(policy, token, mode, stop).await;
        let key = &policy.key;
        let metrics = &self.inner.metrics;
        metrics.observe_reconcile(&key.namespace, &key.name, started.elapsed().as_secs_f64());
        match &result {
            Ok(report) => {
                for failure in &report.failures {
                    metrics.count_reconcile_error(&key.namespace, &key.name, failure.kind);
                }
            }
            Err(err) => metrics.count_reconcile_error(&key.namespace, &key.name, err.kind()),
        }
        result
    }

    async fn reconcile_inner(
        &self,
        policy: &CompiledPolicy,
        token: &SecretString,
        mode: RunMode,
        stop: &CancellationToken,
    ) -> Result<RunReport, ReconcileError> {
        let now = self.now();
        let dry_run = policy.dry_run || mode == RunMode::ForceDryRun;
        let mut report = RunReport {
            policy: policy.key.clone(),
            time: now,
            dry_run,
            suspended: policy.suspend,
            projects: policy.projects.len(),
            jobs_seen: 0,
            actions: Vec::new(),
            failures: Vec::new(),
        };
        if policy.suspend {
            return Ok(report);
        }
        let client = self.client_for(&policy.gitlab_url, token)?;
        let instance = policy.gitlab_url.as_str().trim_end_matches('/').to_owned();

        // Observe.
        let mut observed: Vec<ProjectFacts> = Vec::new();
        let mut first_error = None;
        // Projects are observed a few at a time: over a real network a fleet observed one
        // project after another would take a round trip per project per run.
        for chunk in policy
            .projects
            .chunks(self.inner.config.observe_concurrency.max(1))
        {
            let mut pending = Vec::with_capacity(chunk.len());
            for project in chunk {
                pending.push(self.observe(&client, &instance, project, policy, now));
            }
            let results = futures::future::join_all(pending).await;
            for (project, result) in chunk.iter().zip(results) {
                match result {
                    Ok(jobs) => observed.push(ProjectFacts::new(project.clone(), jobs)),
                    Err(err) => {
                        tracing::warn!(policy = %policy.key, %project, error = %err, "cannot observe project");
                        report.failures.push(ProjectFailure {
                            project: project.clone(),
                            kind: err.kind(),
                            message: err.to_string(),
                        });
                        first_error.get_or_insert(err);
                    }
                }
            }
        }
        if observed.is_empty()
            && let Some(err) = first_error
        {
            return Err(ReconcileError::AllProjectsFailed(err));
        }
        report.jobs_seen = observed.iter().map(|p| p.jobs.len()).sum();

        // Gather the facts that the candidates need, round by round.
        self.gather_facts(&client, &instance, policy, &mut observed, now, &mut report)
            .await;

        // Decide.
        let budget = self.budget(policy, now);
        let observations: Vec<Observation<'_>> = observed.iter().map(ProjectFacts::view).collect();
        let decisions = decide(policy, &observations, now, &budget);
        drop(observations);

        // Act.
        for decision in decisions {
            if stop.is_cancelled() {
                tracing::info!(policy = %policy.key, "stopping: remaining decisions left for the next run");
                break;
            }
            if let Some(record) = self
                .carry_out(&client, &instance, policy, decision, dry_run)
                .await
            {
                report.actions.push(record);
            }
        }
        Ok(report)
    }

    /// Syncs the shared observer of a project when it is older than half the policy interval,
    /// feeds metrics, and returns the project's jobs, newest first.
    async fn observe(
        &self,
        client: &GitLabClient,
        instance: &str,
        project: &ProjectRef,
        policy: &CompiledPolicy,
        now: Timestamp,
    ) -> Result<Vec<Job>, GitLabError> {
        let slot = self.observer_for(instance, project);
        let mut observer = slot.lock().await;
        let fresh_for =
            SignedDuration::try_from(policy.interval / 2).unwrap_or(SignedDuration::ZERO);
        let stale = observer.last_sync().is_none_or(|t| now - t >= fresh_for);
        if stale {
            let follow_blocked = policy
                .statuses_of_interest()
                .is_none_or(|statuses| statuses.iter().any(|s| s.is_blocked()));
            let (stats, refreshed) = observer.sync(client, now, follow_blocked).await?;
            tracing::debug!(%project, ?stats, "synced");
            self.account(project, &observer, &refreshed, now);
        }
        Ok(observer.jobs_newest_first())
    }

    /// Feeds job metrics: queue times and failures exactly once per job, current counts.
    fn account(
        &self,
        project: &ProjectRef,
        observer: &ProjectObserver,
        refreshed: &[Job],
        now: Timestamp,
    ) {
        let label = project.to_string();
        let metrics = &self.inner.metrics;
        {
            let mut accounting = lock(&self.inner.accounting);
            for job in refreshed {
                let events = accounting.observe(&label, job, self.inner.started_at);
                if let Some(seconds) = events.queued_seconds {
                    metrics.observe_job_queued(&label, &job.stage, seconds);
                }
                if let Some(reason) = events.failure_reason.as_deref() {
                    metrics.count_job_failure(&label, &job.stage, reason);
                }
            }
            if let Some(mark) = observer.low_water_mark() {
                accounting.prune_below(&label, mark);
            }
        }
        let counts = observer.status_counts();
        let counts: Vec<(&str, i64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        metrics.set_jobs_by_status(&label, &counts);
        metrics.set_pending_age(&label, observer.oldest_pending_age(now));
    }

    async fn gather_facts(
        &self,
        client: &GitLabClient,
        instance: &str,
        policy: &CompiledPolicy,
        observed: &mut [ProjectFacts],
        now: Timestamp,
        report: &mut RunReport,
    ) {
        let mut asked: HashSet<FactRequest> = HashSet::new();
        // Each round can only move a job one rule further; the rule count bounds the rounds.
        for _ in 0..=policy.rules.len() {
            let wanted: Vec<FactRequest> = {
                let observations: Vec<Observation<'_>> =
                    observed.iter().map(ProjectFacts::view).collect();
                facts_needed(policy, &observations, now)
                    .into_iter()
                    .filter(|f| !asked.contains(f))
                    .collect()
            };
            if wanted.is_empty() {
                return;
            }
            asked.extend(wanted.iter().cloned());
            let mut fetched: Vec<(FactRequest, Result<Fact, GitLabError>)> = Vec::new();
            for chunk in wanted.chunks(self.inner.config.fact_concurrency.max(1)) {
                let mut pending = Vec::with_capacity(chunk.len());
                for request in chunk {
                    pending.push(self.fetch_fact(client, instance, request));
                }
                let results = futures::future::join_all(pending).await;
                fetched.extend(chunk.iter().cloned().zip(results));
            }
            for (request, fact) in fetched {
                let project = match &request {
                    FactRequest::PipelineJobs { project, .. }
                    | FactRequest::LogTail { project, .. } => project,
                };
                let Some(slot) = observed.iter_mut().find(|p| &p.project == project) else {
                    continue;
                };
                match fact {
                    Ok(Fact::PipelineJobs(id, jobs)) => {
                        slot.pipeline_jobs.insert(id, jobs);
                    }
                    Ok(Fact::LogTail(id, tail)) => {
                        slot.log_tails.insert(id, tail);
                    }
                    Err(err) => {
                        tracing::warn!(policy = %policy.key, %project, error = %err, "cannot read a fact");
                        report.failures.push(ProjectFailure {
                            project: project.clone(),
                            kind: err.kind(),
                            message: err.to_string(),
                        });
                    }
                }
            }
        }
    }

    async fn fetch_fact(
        &self,
        client: &GitLabClient,
        instance: &str,
        request: &FactRequest,
    ) -> Result<Fact, GitLabError> {
        match request {
            FactRequest::PipelineJobs {
                project,
                pipeline_id,
            } => {
                let slot = self.observer_for(instance, project);
                if let Some(jobs) = slot.lock().await.cached_pipeline_jobs(*pipeline_id) {
                    return Ok(Fact::PipelineJobs(*pipeline_id, jobs.clone()));
                }
                let jobs: Vec<Job> = client
                    .list_pipeline_jobs(project, *pipeline_id, &[], true)
                    .try_collect()
                    .await?;
                slot.lock().await.cache_pipeline_jobs(*pipeline_id, &jobs);
                Ok(Fact::PipelineJobs(*pipeline_id, jobs))
            }
            FactRequest::LogTail { project, job_id } => {
                let slot = self.observer_for(instance, project);
                if let Some(tail) = slot.lock().await.cached_log_tail(*job_id) {
                    return Ok(Fact::LogTail(*job_id, tail.clone()));
                }
                let tail = client
                    .job_log_tail(project, *job_id, self.inner.config.log_tail_bytes)
                    .await?;
                slot.lock().await.cache_log_tail(*job_id, &tail);
                Ok(Fact::LogTail(*job_id, tail))
            }
        }
    }

    fn budget(&self, policy: &CompiledPolicy, now: Timestamp) -> Budget {
        let used = lock(&self.inner.budgets)
            .entry(policy.key.clone())
            .or_default()
            .in_last_hour(now);
        Budget {
            remaining_this_run: policy.limits.max_actions_per_run,
            remaining_this_hour: policy.limits.max_actions_per_hour.saturating_sub(used),
        }
    }

    /// Turns one decision into an outcome: sends it when the verdict says act.
    async fn carry_out(
        &self,
        client: &GitLabClient,
        instance: &str,
        policy: &CompiledPolicy,
        decision: Decision,
        dry_run: bool,
    ) -> Option<ActionRecord> {
        let outcome = match decision.verdict {
            Verdict::Act if dry_run => Outcome::DryRun,
            Verdict::Act => {
                let (outcome, fresh) = act::execute(client, &decision).await;
                if outcome.was_attempted() {
                    lock(&self.inner.budgets)
                        .entry(policy.key.clone())
                        .or_default()
                        .record(self.now());
                }
                if let Some(job) = fresh {
                    let slot = self.observer_for(instance, &decision.project);
                    slot.lock().await.update_job(job);
                }
                outcome
            }
            Verdict::DryRun => Outcome::DryRun,
            Verdict::OverBudget => Outcome::SkippedOverBudget,
            Verdict::NotBefore(not_before) => Outcome::Deferred { not_before },
            Verdict::AwaitingFacts => return None,
        };
        let record = ActionRecord {
            time: self.now(),
            project: decision.project.clone(),
            job_id: decision.job_id,
            job_name: decision.job_name.clone(),
            rule: decision.rule.clone(),
            action: decision.action.name(),
            reason: decision.reason.clone(),
            outcome,
        };
        if !matches!(record.outcome, Outcome::Deferred { .. }) {
            self.inner.metrics.count_action(
                &policy.key.namespace,
                &policy.key.name,
                &record.rule,
                record.action,
                record.outcome.label(),
            );
        }
        Some(record)
    }
}

enum Fact {
    PipelineJobs(u64, Vec<Job>),
    LogTail(u64, String),
}

/// What is known of one project during a run.
struct ProjectFacts {
    project: ProjectRef,
    jobs: Vec<Job>,
    pipeline_jobs: HashMap<u64, Vec<Job>>,
    log_tails: HashMap<u64, String>,
}

impl ProjectFacts {
    fn new(project: ProjectRef, jobs: Vec<Job>) -> Self {
        ProjectFacts {
            project,
            jobs,
            pipeline_jobs: HashMap::new(),
            log_tails: HashMap::new(),
        }
    }

    fn view(&self) -> Observation<'_> {
        Observation {
            project: &self.project,
            jobs: &self.jobs,
            pipeline_jobs: &self.pipeline_jobs,
            log_tails: &self.log_tails,
        }
    }
}
