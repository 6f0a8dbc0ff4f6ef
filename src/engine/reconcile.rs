//! One policy run: observe → gather facts → decide → act → report.

use super::access::GitLabAccess;
use super::act::{self, Outcome};
use super::groups::GroupMemberships;
use super::inbox::{Delivered, Inbox, hook_moves};
use super::ledger::{Ledger, SentBy, Unsettled};
use super::observe::{DEFAULT_HISTORY, ProjectObserver, Refresh, SyncOptions};
use super::pacing::{Next, Pace, PacedQueue, PacedRun};
use super::report::Listing;
// The run report's types lived here before `report` was split off; kept reachable by this path.
pub use super::report::{
    ActionRecord, FailedTarget, MAX_LISTED_ACTIONS, MAX_LISTED_HELD_BACK, ProjectFailure,
    RunReport, Tally,
};
use super::shard::Shard;
use crate::gitlab::models::{GroupRef, Job, ProjectRef};
use crate::gitlab::records::{JobWire, Names};
use crate::gitlab::{
    CaDigest, ClientConfig, Credential, DestinationRefused, GitLabClient, GitLabError,
    PipelineJobsQuery, RateLimiter, RateLimiterSettings, TokenDestinations, instance_key,
};
use crate::metrics::Metrics;
use crate::policy::{
    Budget, CompiledPolicy, Decision, DeliveryNeed, FactRequest, JobDelivery, Observation,
    PolicyKey, Verdict, decide, delivery_need, facts_needed,
};
use crate::sync::lock;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// Projects synced at once per GitLab instance, over all policies.
    pub observe_concurrency: usize,
    /// How long a job stays in doubt after an ambiguous answer to a call on it (see
    /// `engine::ledger`).
    pub in_doubt_for: SignedDuration,
    /// Where policies' tokens may be sent (https only by default).
    pub destinations: TokenDestinations,
    /// How long a group's listing of projects (`spec.groups`) is used before it is listed again
    /// (`--group-refresh-interval`): projects added to a group are picked up, and archived or
    /// removed ones let go, within this long.
    pub group_refresh_interval: Duration,
    /// Most projects one policy may cover (its `projects` plus its groups' projects, less the
    /// excluded ones); a policy over it fails its run with [`ReconcileError::TooManyProjects`].
    pub max_projects_per_policy: usize,
    /// The projects this replica acts on ([`Shard::ALL`]: every one). Policies are the same on
    /// every replica; each reconciles only the projects of its shard.
    pub shard: Shard,
    /// Idle connections kept open per GitLab instance (`--idle-connections`).
    pub idle_connections: usize,
    /// Requests in flight at once per GitLab instance (`--max-requests-in-flight`).
    pub max_requests_in_flight: usize,
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
            in_doubt_for: Ledger::DEFAULT_IN_DOUBT_FOR,
            destinations: TokenDestinations::default(),
            group_refresh_interval: DEFAULT_GROUP_REFRESH_INTERVAL,
            max_projects_per_policy: crate::crd::MAX_RESOLVED_PROJECTS,
            shard: Shard::ALL,
            idle_connections: ClientConfig::DEFAULT_IDLE_CONNECTIONS,
            max_requests_in_flight: crate::gitlab::ratelimit::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// [`EngineConfig::group_refresh_interval`] when none is given: 5 minutes.
pub const DEFAULT_GROUP_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// Listed projects that may wait for other runs, per sync slot of the instance: enough that
/// runs sharing projects keep every slot busy, few enough that what they hold for each other
/// stays small.
const PACED_PROJECTS_PER_SYNC_SLOT: usize = 4;

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
    #[error("every project failed; first error: {target}: {source}")]
    AllProjectsFailed {
        /// The project (or group) of the first error.
        target: FailedTarget,
        #[source]
        source: GitLabError,
    },
    #[error("spec.gitlab.url: no token is sent to {0}")]
    DestinationRefused(#[source] DestinationRefused),
    #[error(
        "the policy covers {count} projects, more than the {limit} one policy may: \
         narrow spec.groups (name subgroups, add excludeProjects) or split the policy"
    )]
    TooManyProjects {
        /// Projects covered (counted up to one past the limit for a group too big to list).
        count: usize,
        limit: usize,
    },
}

impl ReconcileError {
    /// A stable name for metrics (`reconcile_errors_total{error}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Client { .. } => "client_config",
            ReconcileError::DestinationRefused(_) => "destination_refused",
            ReconcileError::AllProjectsFailed { source, .. } => source.kind(),
            ReconcileError::TooManyProjects { .. } => "too_many_projects",
        }
    }
}

type ObserverSlot = Arc<tokio::sync::Mutex<ProjectObserver>>;
/// An observer's key: the instance and the project's numeric id (its one identity, however the
/// policies spell it).
type ObserverKey = (String, u64);
/// A project path as written in a policy, on an instance (lowercase: GitLab finds paths
/// case-insensitively).
type AliasKey = (String, String);
/// A connection pool's key: the instance, and the digest of the CA bundle its connections trust
/// besides the system roots and `--ca-bundle` (a policy's own; `None`: no bundle of its own).
type PoolKey = (String, Option<CaDigest>);

/// A policy's client, with what it was built for: a rotated token or a changed CA bundle
/// replaces it.
struct PolicyClient {
    instance: String,
    /// A digest of the token: the token itself never leaves [`Engine::client_for`].
    token_digest: u64,
    ca_digest: Option<CaDigest>,
    client: GitLabClient,
}

impl PolicyClient {
    fn pool_key(&self) -> PoolKey {
        (self.instance.clone(), self.ca_digest)
    }
}

struct Inner {
    config: EngineConfig,
    clock: Clock,
    metrics: Arc<Metrics>,
    started_at: Timestamp,
    /// One client per policy, with its instance and digests of its token and CA bundle. A
    /// rotated token or a changed bundle replaces the policy's client; a forgotten policy drops
    /// it.
    clients: Mutex<HashMap<PolicyKey, PolicyClient>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    /// One connection pool per instance and CA bundle, shared by every policy's client of that
    /// instance trusting the same certificates (a token travels in each request's header, not
    /// in the connection): 30 policies of one instance used to keep 250–450 connections, each
    /// with its read buffer. A pool no client uses any more is dropped
    /// ([`Engine::drop_unused_pools`]): a policy never connects trusting another policy's CA.
    connections: Mutex<HashMap<PoolKey, reqwest::Client>>,
    /// Per instance, the projects being synced at once over all policies: a few projects
    /// finish their sync (and act) quickly instead of hundreds sharing the rate limit.
    sync_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Per instance, the pacing of runs that share projects (see `engine::pacing`).
    pacing: Mutex<HashMap<String, Arc<Pace>>>,
    observers: Mutex<HashMap<ObserverKey, ObserverSlot>>,
    /// The strings of every observer's jobs, stored once.
    names: Names,
    /// Project paths resolved to ids (`GET /projects/:id`), while the project is observed.
    aliases: Mutex<HashMap<AliasKey, u64>>,
    /// The observers each policy watched in its last run.
    watched: Mutex<HashMap<PolicyKey, HashSet<ObserverKey>>>,
    /// The projects of the groups policies name, listed on their own refresh interval.
    groups: GroupMemberships,
    /// Budgets and unsettled calls, kept in the state file when there is one.
    ledger: Ledger,
    /// Job Hook deliveries waiting for their projects' next run.
    inbox: Inbox,
    /// Policies' own webhook secrets (`spec.gitlab.webhookSecretRef`).
    webhook_secrets: Mutex<HashMap<PolicyKey, SecretString>>,
    /// Per policy, the decisions that sent nothing in its last run and in the current one.
    unsent: Mutex<HashMap<PolicyKey, UnsentDecisions>>,
}

/// A digest of a token, to tell a rotated one (the token itself is never kept beside it).
fn token_digest(token: &SecretString) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.expose_secret().hash(&mut h);
    h.finish()
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

impl Engine {
    /// An engine whose ledger lives in memory (a restart forgets budgets and calls in doubt).
    pub fn new(config: EngineConfig, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let ledger = Ledger::in_memory(config.in_doubt_for);
        Engine::with_ledger(config, clock, metrics, ledger)
    }

    /// An engine with this ledger (`Ledger::in_dir` keeps it across restarts). The calls the
    /// ledger holds that were in flight when the previous process stopped are reported here.
    pub fn with_ledger(
        config: EngineConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
        ledger: Ledger,
    ) -> Self {
        let started_at = clock();
        let groups = GroupMemberships::new(
            config.group_refresh_interval,
            config.max_projects_per_policy,
        );
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                clock,
                metrics,
                started_at,
                clients: Mutex::new(HashMap::new()),
                limiters: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                sync_slots: Mutex::new(HashMap::new()),
                pacing: Mutex::new(HashMap::new()),
                observers: Mutex::new(HashMap::new()),
                names: Names::default(),
                aliases: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashMap::new()),
                groups,
                ledger,
                inbox: Inbox::default(),
                webhook_secrets: Mutex::new(HashMap::new()),
                unsent: Mutex::new(HashMap::new()),
            }),
        };
        engine.report_calls_from_before_the_restart();
        engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    /// The client of a policy, for its GitLab instance, token and CA bundle. Clients of one
    /// instance share one rate limiter, whatever the token; those that also trust the same CA
    /// bundle share one connection pool.
    fn client_for(
        &self,
        key: &PolicyKey,
        url: &url::Url,
        access: &GitLabAccess,
    ) -> Result<GitLabClient, ReconcileError> {
        self.inner
            .config
            .destinations
            .check(url)
            .map_err(ReconcileError::DestinationRefused)?;
        let instance = crate::gitlab::instance_name(url);
        let token_digest = token_digest(&access.token);
        let ca_digest = access
            .ca_bundle
            .as_ref()
            .map(crate::gitlab::CaBundle::digest);
        if let Some(known) = lock(&self.inner.clients).get(key)
            && known.instance == instance
            && known.token_digest == token_digest
            && known.ca_digest == ca_digest
        {
            return Ok(known.client.clone());
        }
        let pool_key: PoolKey = (instance.clone(), ca_digest);
        let limiter = lock(&self.inner.limiters)
            .entry(instance.clone())
            .or_insert_with(|| {
                Arc::new(RateLimiter::with_settings(RateLimiterSettings {
                    max_in_flight: self.inner.config.max_requests_in_flight,
                    ..RateLimiterSettings::new(self.inner.config.requests_per_minute)
                }))
            })
            .clone();
        let mut config = ClientConfig::new(
            url.clone(),
            Some(Credential::PrivateToken(access.token.clone())),
        );
        config.timeout = self.inner.config.request_timeout;
        config.ca_bundle = self.inner.config.ca_bundle.clone();
        config.ca_certificates = access.ca_bundle.clone();
        config.idle_connections = self.inner.config.idle_connections;
        config.requests_per_minute = self.inner.config.requests_per_minute;
        config.rate_limiter = Some(limiter);
        config.observer = self.inner.metrics.clone();
        config.connections = lock(&self.inner.connections).get(&pool_key).cloned();
        let client = GitLabClient::new(config).map_err(|source| ReconcileError::Client {
            url: instance.clone(),
            source,
        })?;
        let replaced = lock(&self.inner.clients).insert(
            key.clone(),
            PolicyClient {
                instance,
                token_digest,
                ca_digest,
                client: client.clone(),
            },
        );
        lock(&self.inner.connections)
            .entry(pool_key)
            .or_insert_with(|| client.connections());
        if replaced.is_some() {
            self.drop_unused_pools();
        }
        Ok(client)
    }

    /// Drops the connection pools that no policy's client uses any more (their instance or CA
    /// bundle changed, or their policies are gone).
    fn drop_unused_pools(&self) {
        let used: HashSet<PoolKey> = lock(&self.inner.clients)
            .values()
            .map(PolicyClient::pool_key)
            .collect();
        lock(&self.inner.connections).retain(|pool, _| used.contains(pool));
    }

    /// The connection pools kept, one per instance and CA bundle in use.
    pub fn connection_pools(&self) -> usize {
        lock(&self.inner.connections).len()
    }

    /// The version of `policy` this run works with, shared with the observers it watches.
    fn watch(&self, policy: &CompiledPolicy) -> Arc<CompiledPolicy> {
        Arc::new(policy.clone())
    }

    fn observer_for(&self, instance: &str, project_id: u64) -> ObserverSlot {
        lock(&self.inner.observers)
            .entry((instance.to_owned(), project_id))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(
                    ProjectObserver::new(ProjectRef::Id(project_id), self.inner.config.history)
                        .with_names(self.inner.names.clone())
                        .counting_since(self.inner.started_at),
                ))
            })
            .clone()
    }

    /// The numeric id of a project as a policy spells it: an id is one; a path is looked up
    /// once (`GET /projects/:id`) and remembered while the project is observed.
    async fn resolve(&self, run: &PolicyRun, project: &ProjectRef) -> Result<u64, GitLabError> {
        let path = match project {
            ProjectRef::Id(id) => return Ok(*id),
            ProjectRef::Path(path) => path,
        };
        if let Some(id) = self.known_id(&run.instance, project) {
            return Ok(id);
        }
        let found = run.client.get_project(project).await?;
        lock(&self.inner.aliases)
            .insert((run.instance.clone(), path.to_ascii_lowercase()), found.id);
        Ok(found.id)
    }

    /// The id of a run's project without asking GitLab: listed with it, or known.
    fn target_id(&self, instance: &str, target: &Target) -> Option<u64> {
        target
            .id
            .or_else(|| self.known_id(instance, &target.project))
    }

    /// The id of a project without asking GitLab: an id, or a path resolved before.
    fn known_id(&self, instance: &str, project: &ProjectRef) -> Option<u64> {
        match project {
            ProjectRef::Id(id) => Some(*id),
            ProjectRef::Path(path) => lock(&self.inner.aliases)
                .get(&(instance.to_owned(), path.to_ascii_lowercase()))
                .copied(),
        }
    }

    /// Forgets a policy that is gone (deleted, or its file removed): its client and budget,
    /// and every observer no other policy watches, with their metric series.
    pub async fn forget_policy(&self, key: &PolicyKey) {
        lock(&self.inner.clients).remove(key);
        self.drop_unused_pools();
        lock(&self.inner.unsent).remove(key);
        self.inner.inbox.forget_policy(key);
        lock(&self.inner.webhook_secrets).remove(key);
        self.inner.groups.forget_policy(key);
        if let Err(err) = self.inner.ledger.forget_policy(key).await {
            tracing::warn!(policy = %key, error = %err, "cannot update the state file");
        }
        let watched = lock(&self.inner.watched).remove(key).unwrap_or_default();
        self.unwatch(key, watched).await;
    }

    /// Records which projects a policy watches after a run (those it observed, and those of
    /// its project set it did not reach but knows the id of), and lets go of those it watched
    /// before and no longer does: a project that left the policy's groups, or was archived or
    /// excluded, loses this policy as a watcher, and its observer and metric series go with
    /// the last one.
    async fn rewatch(
        &self,
        policy: &CompiledPolicy,
        instance: &str,
        observed: HashSet<u64>,
        targets: &[Target],
    ) {
        let mut ids = observed;
        ids.extend(targets.iter().filter_map(|t| self.target_id(instance, t)));
        let now: HashSet<ObserverKey> = ids
            .into_iter()
            .map(|id| (instance.to_owned(), id))
            .collect();
        let before = lock(&self.inner.watched).insert(policy.key.clone(), now.clone());
        let dropped: Vec<ObserverKey> = before
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !now.contains(k))
            .collect();
        self.unwatch(&policy.key, dropped).await;
    }

    /// Removes `key` from the watchers of these observers; an observer nobody watches any more
    /// is dropped with its metric series.
    async fn unwatch(&self, key: &PolicyKey, observers: impl IntoIterator<Item = ObserverKey>) {
        for observer_key in observers {
            let Some(slot) = lock(&self.inner.observers).get(&observer_key).cloned() else {
                continue;
            };
            if slot.lock().await.unwatch(key) {
                lock(&self.inner.observers).remove(&observer_key);
                self.inner.inbox.forget(&observer_key);
                let (instance, id) = &observer_key;
                lock(&self.inner.aliases)
                    .retain(|(i, _), aliased| !(i == instance && aliased == id));
                let label = id.to_string();
                self.inner.metrics.forget_project(&label);
            }
        }
    }

    /// A GitLab Job Hook delivery: job `job_id` of project `project_id` changed, on `instance`
    /// (the `X-Gitlab-Instance` header; `None` matches the project on any instance). The job is
    /// queued for a re-read by the next run of the policies watching the project, and they are
    /// woken (what the delivery says only tells whether the job is worth a read:
    /// [`delivery_need`]). A project no policy observes costs nothing. With project sharding, a project of
    /// another shard is ignored here (never observed by this replica): its owner acts on the
    /// job when the delivery reaches it, or at its next run.
    pub fn job_event(
        &self,
        instance: Option<&str>,
        project_id: u64,
        job_id: u64,
        delivery: &JobDelivery,
    ) -> JobEvent {
        let shard = self.inner.config.shard;
        let keys: Vec<ObserverKey> = lock(&self.inner.observers)
            .keys()
            .filter(|key| is_project(key, instance, project_id))
            .filter(|(observed_instance, id)| shard.owns_project(observed_instance, *id))
            .cloned()
            .collect();
        if keys.is_empty() {
            return JobEvent::Ignored;
        }
        let (at, now) = (std::time::Instant::now(), self.now());
        for key in &keys {
            self.inner.inbox.deliver(key, job_id, delivery, at, now);
        }
        // Every policy watching the project has to decide on the job, whichever reads it.
        let watchers: Vec<(PolicyKey, Vec<ObserverKey>)> = lock(&self.inner.watched)
            .iter()
            .map(|(policy, observed)| {
                let due = keys.iter().filter(|k| observed.contains(*k)).cloned();
                (policy.clone(), due.collect::<Vec<_>>())
            })
            .filter(|(_, due)| !due.is_empty())
            .collect();
        for (policy, due) in &watchers {
            for key in due {
                self.inner.inbox.mark_due(policy, key);
            }
            self.inner.inbox.wake(policy);
        }
        JobEvent::Accepted {
            policies: watchers.len(),
        }
    }

    /// The signal that fires when a Job Hook delivery concerns one of the policy's projects:
    /// its loop then runs [`reconcile_delivered`](Self::reconcile_delivered).
    pub fn wakeup(&self, policy: &PolicyKey) -> Arc<tokio::sync::Notify> {
        self.inner.inbox.wakeup(policy)
    }

    /// Every policy woken by a Job Hook delivery, as it happens (for a controller that runs
    /// policies from one queue). A receiver that falls behind loses the oldest wake-ups; the
    /// deliveries stay queued until the policy's next run.
    pub fn subscribe_wakeups(&self) -> tokio::sync::broadcast::Receiver<PolicyKey> {
        self.inner.inbox.subscribe()
    }

    /// Sets (or, with `None`, removes) the policy's own webhook secret.
    pub fn set_webhook_secret(&self, policy: &PolicyKey, secret: Option<SecretString>) {
        let mut secrets = lock(&self.inner.webhook_secrets);
        match secret {
            Some(secret) => secrets.insert(policy.clone(), secret),
            None => secrets.remove(policy),
        };
    }

    /// The webhook secrets of the policies that watch the project (on `instance`, or on any
    /// instance when `None`).
    pub fn webhook_secrets_for(
        &self,
        instance: Option<&str>,
        project_id: u64,
    ) -> Vec<SecretString> {
        let watchers: Vec<PolicyKey> = lock(&self.inner.watched)
            .iter()
            .filter(|(_, observed)| {
                observed
                    .iter()
                    .any(|key| is_project(key, instance, project_id))
            })
            .map(|(policy, _)| policy.clone())
            .collect();
        self.webhook_secrets_of(&watchers)
    }

    /// The webhook secrets these policies set.
    fn webhook_secrets_of(&self, policies: &[PolicyKey]) -> Vec<SecretString> {
        let secrets = lock(&self.inner.webhook_secrets);
        policies
            .iter()
            .filter_map(|policy| secrets.get(policy).cloned())
            .collect()
    }

    /// The webhook secrets of every policy of `instance` (of any instance when `None`), whatever
    /// projects they watch: what a replica can check a delivery for another shard's project
    /// against, since it does not know which policies watch that project. The owning shard
    /// checks the delivery again against the secrets of the policies watching it.
    pub fn webhook_secrets_of_instance(&self, instance: Option<&str>) -> Vec<SecretString> {
        let policies: Vec<PolicyKey> = lock(&self.inner.clients)
            .iter()
            .filter(|(_, known)| instance.is_none_or(|want| instance_key(want) == known.instance))
            .map(|(policy, _)| policy.clone())
            .collect();
        self.webhook_secrets_of(&policies)
    }

    /// This replica's shard ([`EngineConfig::shard`]).
    pub fn shard(&self) -> Shard {
        self.inner.config.shard
    }

    /// The index of the shard that owns project `project_id` of `instance`, by the same
    /// function that decides what this engine observes ([`Shard::owns_project`]). Without an
    /// instance (no `X-Gitlab-Instance` header) the candidates are the instances of the
    /// policies this engine runs: this shard when it owns the project on one of them, else the
    /// one shard that owns it on all of them; `None` when that cannot be told (no policy run
    /// yet, as on a standby, or several instances with different owners).
    pub fn owner_shard(&self, instance: Option<&str>, project_id: u64) -> Option<u32> {
        let shard = self.inner.config.shard;
        if shard.is_everything() {
            return Some(shard.index());
        }
        let count = shard.count();
        if let Some(instance) = instance {
            return Some(super::shard::owner_of_project(instance, project_id, count));
        }
        let owners: BTreeSet<u32> = lock(&self.inner.clients)
            .values()
            .map(|known| super::shard::owner_of_project(&known.instance, project_id, count))
            .collect();
        if owners.contains(&shard.index()) {
            return Some(shard.index());
        }
        match (owners.first(), owners.len()) {
            (Some(owner), 1) => Some(*owner),
            _ => None,
        }
    }

    /// True when Job Hook deliveries wait for one of the policy's projects (delivered since the
    /// policy last looked at it, even if another policy has read the jobs since).
    pub fn has_deliveries(&self, policy: &PolicyKey) -> bool {
        self.inner.inbox.has_due(policy)
    }

    /// How many projects are observed, over all instances.
    pub fn observed_projects(&self) -> usize {
        lock(&self.inner.observers).len()
    }

    /// The job records held in memory over every observed project (an observer in use by a
    /// run at this moment is not counted).
    pub fn kept_jobs(&self) -> usize {
        let slots: Vec<ObserverSlot> = lock(&self.inner.observers).values().cloned().collect();
        slots
            .iter()
            .filter_map(|slot| slot.try_lock().ok().map(|observer| observer.jobs().len()))
            .sum()
    }

    /// Runs one reconcile of a policy. Per-project failures are reported in the run report and
    /// do not stop the other projects; the run fails only when no project could be observed.
    /// `stop` is checked between actions: an action in flight is always finished.
    pub async fn reconcile(
        &self,
        policy: &CompiledPolicy,
        access: &GitLabAccess,
        mode: RunMode,
        stop: &CancellationToken,
    ) -> Result<RunReport, ReconcileError> {
        let started = std::time::Instant::now();
        let result = self
            .reconcile_scoped(policy, access, mode, Scope::All, stop)
            .await;
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
        // What the run freed (its listings, the records of the jobs it acted on) goes back to
        // the system before the next run allocates around it.
        crate::memory::release_free_memory();
        result
    }

    /// Runs a policy over only the projects with Job Hook deliveries waiting: their delivered
    /// jobs are re-read, decided on and acted on at once, without waiting for the interval.
    pub async fn reconcile_delivered(
        &self,
        policy: &CompiledPolicy,
        access: &GitLabAccess,
        stop: &CancellationToken,
    ) -> Result<RunReport, ReconcileError> {
        self.reconcile_scoped(policy, access, RunMode::Normal, Scope::Delivered, stop)
            .await
    }

    async fn reconcile_scoped(
        &self,
        policy: &CompiledPolicy,
        access: &GitLabAccess,
        mode: RunMode,
        scope: Scope,
        stop: &CancellationToken,
    ) -> Result<RunReport, ReconcileError> {
        let now = self.now();
        let dry_run = policy.dry_run || mode == RunMode::ForceDryRun;
        let instance = crate::gitlab::instance_name(&policy.gitlab_url);
        let mut report = RunReport {
            policy: policy.key.clone(),
            time: now,
            dry_run,
            suspended: policy.suspend,
            projects: 0,
            jobs_seen: 0,
            actions: Vec::new(),
            unlisted: Tally::default(),
            failures: Vec::new(),
            deliveries_only: scope == Scope::Delivered,
        };
        if policy.suspend {
            report.projects = self.suspended_projects(&instance, policy, now).await;
            return Ok(report);
        }
        let client = self.client_for(&policy.key, &policy.gitlab_url, access)?;
        let mut failures = Failures::default();
        let targets = self
            .targets(&client, &instance, policy, scope, now, &mut failures)
            .await?;
        let run = self.start_run(policy, client, instance, now, mode, scope);
        // This replica's projects only: paths are resolved first (cached) so that each has the
        // id its owner is decided by.
        let (targets, unresolvable) = self.own_targets(&run, targets, scope, stop).await;
        let unresolvable_count = unresolvable.len();
        for (project, err) in unresolvable {
            failures.add(FailedTarget::Project(project), err);
        }
        self.announce_watcher(&run, &targets);
        let observed = self
            .run_projects(&run, &targets, stop, &mut report, &mut failures)
            .await;
        let claimed = std::mem::take(&mut *lock(&run.claimed));
        if scope == Scope::All {
            self.rewatch(&run.policy, &run.instance, claimed, &targets)
                .await;
        }
        report.projects = self.count_projects(&run.instance, &targets) + unresolvable_count;
        report.failures.extend(failures.all);
        if observed == 0
            && let Some((target, source)) = failures.first
        {
            return Err(ReconcileError::AllProjectsFailed { target, source });
        }
        Ok(report)
    }

    /// How many of a suspended policy's projects are this replica's, from the last known
    /// project set: a suspended policy lists nothing.
    async fn suspended_projects(
        &self,
        instance: &str,
        policy: &CompiledPolicy,
        now: Timestamp,
    ) -> usize {
        let project_set = self.project_set(None, instance, policy, now).await;
        let own: Vec<Target> = project_set
            .targets
            .into_iter()
            .filter(|target| self.owns_as_known(instance, target))
            .collect();
        self.count_projects(instance, &own)
    }

    /// The policy's project set for this run, within the engine's limit; its groups that could
    /// not be listed go to `failures`.
    async fn targets(
        &self,
        client: &GitLabClient,
        instance: &str,
        policy: &CompiledPolicy,
        scope: Scope,
        now: Timestamp,
        failures: &mut Failures,
    ) -> Result<Vec<Target>, ReconcileError> {
        // Groups are listed on their own interval, and never for a pass on deliveries.
        let lister = (scope == Scope::All).then_some(client);
        let project_set = self.project_set(lister, instance, policy, now).await;
        let limit = self.inner.config.max_projects_per_policy;
        if project_set.targets.len() > limit {
            return Err(ReconcileError::TooManyProjects {
                count: project_set.targets.len(),
                limit,
            });
        }
        for (group, err) in project_set.group_failures {
            failures.add(FailedTarget::Group(group), err);
        }
        if scope == Scope::All {
            lock(&self.inner.unsent)
                .entry(policy.key.clone())
                .or_default()
                .next_run();
        }
        Ok(project_set.targets)
    }

    /// What every project of a policy's run shares: its client, budget, clock and scope.
    fn start_run(
        &self,
        policy: &CompiledPolicy,
        client: GitLabClient,
        instance: String,
        now: Timestamp,
        mode: RunMode,
        scope: Scope,
    ) -> PolicyRun {
        let allowance = Allowance::new(self.budget(&policy.key, &policy.limits, now));
        // Manual and scheduled jobs are followed through their own listing only for a policy
        // that may act on them (a `superseded` rule widens what is listed, not what is acted
        // on: the newer pipeline's jobs are noted when they first appear, whatever becomes of
        // them).
        let follow_blocked = policy
            .statuses_acted_on()
            .is_none_or(|statuses| statuses.iter().any(|s| s.is_blocked()));
        PolicyRun {
            client,
            instance,
            policy: self.watch(policy),
            now,
            dry_run: policy.dry_run || mode == RunMode::ForceDryRun,
            allowance,
            claimed: Mutex::new(HashSet::new()),
            follow_blocked,
            scope,
            listed_actions: match mode {
                RunMode::ForceDryRun => usize::MAX,
                RunMode::Normal => MAX_LISTED_ACTIONS,
            },
        }
    }

    /// Runs the projects of the scope (every target, or those with deliveries due), each
    /// observe → facts → decide → act on its own, a few at a time, so the first action comes as
    /// soon as its project is observed, not after the whole pass. Projects other runs listed
    /// for this one come first, and it waits while too many do (see `engine::pacing`).
    /// Returns how many were observed.
    async fn run_projects(
        &self,
        run: &PolicyRun,
        targets: &[Target],
        stop: &CancellationToken,
        report: &mut RunReport,
        failures: &mut Failures,
    ) -> usize {
        let concurrency = self.inner.config.observe_concurrency.max(1);
        let mut queue = PacedQueue::new(
            targets
                .iter()
                .map(|target| (self.target_id(&run.instance, target), target))
                .filter(|(id, _)| match run.scope {
                    Scope::All => true,
                    Scope::Delivered => id.is_some_and(|id| {
                        self.inner
                            .inbox
                            .is_due(&run.policy.key, &(run.instance.clone(), id))
                    }),
                }),
        );
        let paced = self.pace(&run.instance).start(queue.ids());
        let mut running = futures::stream::FuturesUnordered::new();
        let mut observed = 0usize;
        let mut listing = Listing::new(run.listed_actions);
        loop {
            let changed = paced.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut waiting = false;
            while running.len() < concurrency && !stop.is_cancelled() {
                match queue.next(&paced) {
                    Next::Take(id, target) => {
                        let paced = &paced;
                        running.push(async move {
                            let project_run = self.run_project(run, target, stop, paced).await;
                            if let Some(id) = id {
                                paced.done(id);
                            }
                            project_run
                        });
                    }
                    Next::Wait => {
                        waiting = true;
                        break;
                    }
                    Next::Done => break,
                }
            }
            if running.is_empty() && !waiting {
                break;
            }
            let finished = tokio::select! {
                biased;
                () = stop.cancelled(), if running.is_empty() => None,
                finished = running.next(), if !running.is_empty() => finished,
                () = &mut changed, if waiting => continue,
            };
            let Some(project_run) = finished else {
                break;
            };
            match project_run.observe_error {
                Some(err) => failures.add(FailedTarget::Project(project_run.project), err),
                None => observed += 1,
            }
            report.jobs_seen += project_run.jobs_seen;
            for record in project_run.actions {
                report.add(record, &mut listing);
            }
            failures.all.extend(project_run.fact_failures);
        }
        if stop.is_cancelled() {
            tracing::info!(policy = %run.policy.key, "stopping: remaining projects left for the next run");
        }
        observed
    }

    /// The projects a policy covers: its `projects`, then the members of its groups (listed
    /// with `lister` when their listing is due, else as last listed) not matched by
    /// `excludeProjects`, each project id once. A path not resolved yet stays a path: the
    /// run resolves it (and a group member it turns out to be is still observed once).
    async fn project_set(
        &self,
        lister: Option<&GitLabClient>,
        instance: &str,
        policy: &CompiledPolicy,
        now: Timestamp,
    ) -> ProjectSet {
        let groups = &self.inner.groups;
        groups.used_by(&policy.key, instance, &policy.groups);
        let mut set = ProjectSet::default();
        let excluded = |path: &str| {
            policy
                .exclude_projects
                .as_ref()
                .is_some_and(|globs| globs.matches(path))
        };
        let mut members = Vec::new();
        for selection in &policy.groups {
            let membership = groups.members(lister, instance, selection, now).await;
            if let Some(failure) = membership.failure {
                set.group_failures
                    .push((selection.group.clone(), failure.into_gitlab_error()));
            }
            members.extend(
                membership
                    .members
                    .iter()
                    .filter(|member| !excluded(&member.path))
                    .cloned(),
            );
        }
        // A listed project's path is known to be its id: a policy naming it by path needs no
        // lookup.
        {
            let mut aliases = lock(&self.inner.aliases);
            for member in &members {
                aliases.insert(
                    (instance.to_owned(), member.path.to_ascii_lowercase()),
                    member.id,
                );
            }
        }
        let mut ids = HashSet::new();
        for project in &policy.projects {
            let id = self.known_id(instance, project);
            if id.is_none_or(|id| ids.insert(id)) {
                set.targets.push(Target {
                    project: project.clone(),
                    id,
                });
            }
        }
        for member in members {
            if ids.insert(member.id) {
                set.targets.push(Target {
                    project: ProjectRef::Path(member.path),
                    id: Some(member.id),
                });
            }
        }
        set
    }

    /// The targets of this replica's shard ([`EngineConfig::shard`]), all of them with one
    /// shard. With several, a full run first resolves the paths whose id is not known (a few
    /// at a time; each is looked up once and remembered) and keeps the projects whose id the
    /// shard owns; a path that cannot be resolved is returned with its error by the one shard
    /// its path hashes to, and left out by the others. A pass on deliveries resolves nothing:
    /// its projects are observed, so their ids are known.
    async fn own_targets(
        &self,
        run: &PolicyRun,
        targets: Vec<Target>,
        scope: Scope,
        stop: &CancellationToken,
    ) -> (Vec<Target>, Vec<(ProjectRef, GitLabError)>) {
        let shard = self.inner.config.shard;
        if shard.is_everything() {
            return (targets, Vec::new());
        }
        let (known, unknown): (Vec<Target>, Vec<Target>) = targets
            .into_iter()
            .map(|target| Target {
                id: self.target_id(&run.instance, &target),
                project: target.project,
            })
            .partition(|target| target.id.is_some());
        let mut own: Vec<Target> = known
            .into_iter()
            .filter(|target| self.owns_as_known(&run.instance, target))
            .collect();
        let mut unresolvable = Vec::new();
        if scope == Scope::Delivered || unknown.is_empty() {
            return (own, unresolvable);
        }
        let concurrency = self.inner.config.observe_concurrency.max(1);
        let mut resolved = futures::stream::iter(unknown)
            .map(|target| async move {
                let resolved = self.resolve(run, &target.project).await;
                (target.project, resolved)
            })
            .buffer_unordered(concurrency);
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = resolved.next() => next,
            };
            let Some((project, resolved)) = next else {
                break;
            };
            match resolved {
                Ok(id) if shard.owns_project(&run.instance, id) => own.push(Target {
                    project,
                    id: Some(id),
                }),
                Ok(_) => {}
                Err(err) if shard.owns_unresolved(&run.instance, &project.to_string()) => {
                    tracing::warn!(policy = %run.policy.key, %project, error = %err, "cannot find project");
                    unresolvable.push((project, err));
                }
                Err(_) => {}
            }
        }
        (own, unresolvable)
    }

    /// Whether a target belongs to this replica's shard as far as is known without asking
    /// GitLab: by its id when known, else by its path.
    fn owns_as_known(&self, instance: &str, target: &Target) -> bool {
        let shard = self.inner.config.shard;
        match self.target_id(instance, target) {
            Some(id) => shard.owns_project(instance, id),
            None => shard.owns_unresolved(instance, &target.project.to_string()),
        }
    }

    /// How many projects `targets` are: one per id, and one per path not resolved yet.
    fn count_projects(&self, instance: &str, targets: &[Target]) -> usize {
        let mut ids = HashSet::new();
        let unresolved = targets
            .iter()
            .filter(|target| match self.target_id(instance, target) {
                Some(id) => {
                    ids.insert(id);
                    false
                }
                None => true,
            })
            .count();
        ids.len() + unresolved
    }

    /// The pacing of the runs on an instance: at most [`PACED_PROJECTS_PER_SYNC_SLOT`] listed
    /// projects per sync slot wait for other runs.
    fn pace(&self, instance: &str) -> Arc<Pace> {
        lock(&self.inner.pacing)
            .entry(instance.to_owned())
            .or_insert_with(|| {
                let slots = self.inner.config.observe_concurrency.max(1);
                Arc::new(Pace::new(slots * PACED_PROJECTS_PER_SYNC_SLOT))
            })
            .clone()
    }

    /// The sync slots of an instance ([`EngineConfig::observe_concurrency`] of them).
    fn sync_slots(&self, instance: &str) -> Arc<tokio::sync::Semaphore> {
        lock(&self.inner.sync_slots)
            .entry(instance.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.inner.config.observe_concurrency.max(1),
                ))
            })
            .clone()
    }

    /// On a policy's first run, tells the observers of its projects (those already known) that
    /// it watches them, before any is synced: policies that start together then share one first listing of a
    /// project instead of each new one having it listed again. An observer busy syncing is
    /// told in [`run_project`](Self::run_project) instead.
    fn announce_watcher(&self, run: &PolicyRun, targets: &[Target]) {
        if lock(&self.inner.watched).contains_key(&run.policy.key) {
            // Not its first run: the observers know it.
            return;
        }
        for target in targets {
            let Some(id) = self.target_id(&run.instance, target) else {
                continue;
            };
            if let Ok(mut observer) = self.observer_for(&run.instance, id).try_lock() {
                observer.watch(&run.policy);
            }
        }
    }

    /// One project of a policy run: sync its shared observer when it is older than half the
    /// policy interval, gather the facts the candidates need, decide, act. The observer stays
    /// locked throughout, so two policies never act on one project's stale view at once.
    async fn run_project(
        &self,
        run: &PolicyRun,
        target: &Target,
        stop: &CancellationToken,
        paced: &PacedRun,
    ) -> ProjectRun {
        let project = &target.project;
        let mut out = ProjectRun::new(project);
        let project_id = match self.resolve_target(run, target, stop).await {
            Some(Ok(id)) => id,
            Some(Err(err)) => {
                tracing::warn!(policy = %run.policy.key, %project, error = %err, "cannot find project");
                out.observe_error = Some(err);
                return out;
            }
            None => return out,
        };
        if !lock(&run.claimed).insert(project_id) {
            // The same project spelled twice (by id and by path): observed once per run.
            return out;
        }
        let observer_slot = self.observer_for(&run.instance, project_id);
        let mut observer = observer_slot.lock().await;
        // Syncing and reading facts take one of the instance's sync slots (taken with the
        // observer already locked, so no slot waits on another run's actions).
        let sync_slot = tokio::select! {
            biased;
            () = stop.cancelled() => return out,
            slot = self.sync_slots(&run.instance).acquire_owned() => slot.ok(),
        };
        observer.watch(&run.policy);
        match self
            .observe_project(run, project, project_id, &mut observer, stop)
            .await
        {
            Observed::Yes { listed } => {
                if listed {
                    paced.listed(project_id);
                }
            }
            Observed::Failed(err) => {
                out.observe_error = Some(err);
                return out;
            }
            Observed::Stopped => return out,
        }
        out.jobs_seen = observer.jobs().len();
        tokio::select! {
            biased;
            () = stop.cancelled() => return out,
            () = self.gather_facts(run, &mut observer, &mut out) => {}
        }
        // Observed: decisions and actions need no sync slot.
        drop(sync_slot);
        self.decide_and_act(run, project_id, &mut observer, stop, &mut out)
            .await;
        observer.shrink();
        out
    }

    /// A target's project id: as listed (a group's member), else looked up (cached). `None`
    /// when stopped while looking it up.
    async fn resolve_target(
        &self,
        run: &PolicyRun,
        target: &Target,
        stop: &CancellationToken,
    ) -> Option<Result<u64, GitLabError>> {
        match target.id {
            Some(id) => Some(Ok(id)),
            None => tokio::select! {
                biased;
                () = stop.cancelled() => None,
                resolved = self.resolve(run, &target.project) => Some(resolved),
            },
        }
    }

    /// Brings the project's observer up to date for this policy: a listing when the last one
    /// is no longer fresh for it ([`Engine::fresh_for`]), else a read of the delivered jobs a
    /// rule could act on; then the re-reads of settled and stale jobs.
    async fn observe_project(
        &self,
        run: &PolicyRun,
        project: &ProjectRef,
        project_id: u64,
        observer: &mut ProjectObserver,
        stop: &CancellationToken,
    ) -> Observed {
        // Metrics label the project by its id; decisions, logs and Events name it as the policy
        // spells it.
        let label = project_id.to_string();
        let observer_key = (run.instance.clone(), project_id);
        // Jobs delivered by Job Hooks: a listing now reads them anyway; otherwise each is read
        // (once, by whichever policy comes first: the others decide on what it read).
        self.inner.inbox.clear_due(&run.policy.key, &observer_key);
        let delivered = self.inner.inbox.take(&observer_key);
        let fresh_for = SignedDuration::try_from(self.fresh_for(run, &observer_key))
            .unwrap_or(SignedDuration::ZERO);
        let must_list = observer
            .last_sync()
            .is_none_or(|t| run.now - t >= fresh_for);
        if must_list {
            // A sync can wait long for the rate limit: it is abandoned on stop (the next sync
            // reads again whatever this one did not finish).
            let options = self.sync_options(run, &observer_key);
            let previous_listing = observer.last_sync();
            let synced = tokio::select! {
                biased;
                () = stop.cancelled() => return Observed::Stopped,
                synced = observer.sync(&run.client, run.now, &self.inner.clock, options) => synced,
            };
            match synced {
                Ok((stats, refreshed)) => {
                    tracing::debug!(%project, ?stats, "synced");
                    self.account(&label, observer, &refreshed, run.now);
                    if run.policy.resync_interval.is_some() {
                        // What the listing found tells whether the project's hook delivers.
                        let moves = previous_listing
                            .map(|at| hook_moves(refreshed.iter().map(|r| &r.job), at))
                            .unwrap_or_default();
                        self.inner.inbox.listed(&observer_key, &moves, run.now);
                    }
                }
                Err(err) => {
                    tracing::warn!(policy = %run.policy.key, %project, error = %err, "cannot observe project");
                    return Observed::Failed(err);
                }
            }
        } else {
            let refreshed = self
                .read_deliveries(run, project_id, observer, &delivered)
                .await;
            self.account(&label, observer, &refreshed, run.now);
        }
        // A job whose in-doubt window has passed is re-read before its facts and decisions.
        self.reread_settled(run, project_id, observer).await;
        // So is a held job a delivery said has moved on, when the policy would decide on it.
        self.read_stale(run, project_id, project, &label, observer)
            .await;
        Observed::Yes { listed: must_list }
    }

    /// Reads the delivered jobs a rule of a watching policy could act on now, or that supersede
    /// a held job; a held job delivered in another status is marked stale, to be read before
    /// any decision on it (see [`Engine::read_stale`]).
    async fn read_deliveries(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
        delivered: &[Delivered],
    ) -> Vec<Refresh> {
        let mut to_read = Vec::new();
        for d in delivered {
            match delivery_need(observer.watchers(), &d.job, observer.jobs(), run.now) {
                DeliveryNeed::Read => to_read.push(d.job.job_id),
                DeliveryNeed::Stale => observer.mark_stale(d.job.job_id),
                DeliveryNeed::Nothing => {}
            }
        }
        self.read_delivered(run, project_id, observer, &to_read)
            .await
    }

    /// Decides on the observed project and carries out the decisions, until stopped.
    async fn decide_and_act(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
        stop: &CancellationToken,
        out: &mut ProjectRun,
    ) {
        let decisions = {
            let observation = Observation {
                project: &out.project,
                jobs: observer.jobs(),
                pipeline_jobs: observer.pipeline_jobs(),
                log_tails: observer.log_tails(),
            };
            decide(
                &run.policy,
                &[observation],
                run.now,
                &run.allowance.budget(),
            )
        };
        // Nothing is decided on a held job a delivery said has moved on and that could not be
        // read: the next listing or read tells.
        let decisions: Vec<Decision> = decisions
            .into_iter()
            .filter(|d| !observer.is_stale(d.job_id))
            .collect();
        for decision in decisions {
            if stop.is_cancelled() {
                break;
            }
            if let Some(record) = self.carry_out(run, project_id, observer, decision).await {
                out.actions.push(record);
            }
        }
    }

    /// Feeds job metrics: queue times and failures exactly once per job, current counts.
    fn account(
        &self,
        label: &str,
        observer: &ProjectObserver,
        refreshed: &[Refresh],
        now: Timestamp,
    ) {
        let metrics = &self.inner.metrics;
        for refresh in refreshed {
            metrics.record_job_events(label, refresh.job.stage(), &refresh.events);
        }
        metrics.set_jobs_by_status(label, &observer.status_counts());
        metrics.set_pending_age(label, observer.oldest_pending_age(now));
    }

    /// Takes in a job GitLab answered with (an action's, a re-read's) and counts its change in
    /// the metrics.
    fn take_in(&self, project_id: u64, observer: &mut ProjectObserver, job: &Job) {
        if let Some(refresh) = observer.update_job(JobWire::from(job), self.now()) {
            self.inner.metrics.record_job_events(
                &project_id.to_string(),
                refresh.job.stage(),
                &refresh.events,
            );
        }
    }

    /// Fetches the facts (pipeline job lists, log tails) that the candidates of one project
    /// need, round by round, into the project's observer.
    async fn gather_facts(
        &self,
        run: &PolicyRun,
        observer: &mut ProjectObserver,
        out: &mut ProjectRun,
    ) {
        observer.forget_unfinished_log_tails();
        let mut asked: HashSet<FactRequest> = HashSet::new();
        // Each round can only move a job one rule further; the rule count bounds the rounds.
        for _ in 0..=run.policy.rules.len() {
            let wanted: Vec<FactRequest> = {
                let observation = Observation {
                    project: &out.project,
                    jobs: observer.jobs(),
                    pipeline_jobs: observer.pipeline_jobs(),
                    log_tails: observer.log_tails(),
                };
                facts_needed(&run.policy, &[observation], run.now)
                    .into_iter()
                    .filter(|f| !asked.contains(f))
                    .collect()
            };
            if wanted.is_empty() {
                return;
            }
            asked.extend(wanted.iter().cloned());
            let mut fetched: Vec<Result<Fact, GitLabError>> = Vec::with_capacity(wanted.len());
            for chunk in wanted.chunks(self.inner.config.fact_concurrency.max(1)) {
                let pending = chunk
                    .iter()
                    .map(|request| self.fetch_fact(&run.client, request));
                fetched.extend(futures::future::join_all(pending).await);
            }
            for fact in fetched {
                match fact {
                    Ok(Fact::PipelineJobs(id, jobs)) => {
                        observer.cache_pipeline_jobs(id, jobs, self.now());
                    }
                    Ok(Fact::LogTail(id, tail)) => observer.cache_log_tail(id, tail),
                    Err(err) => {
                        tracing::warn!(policy = %run.policy.key, project = %out.project, error = %err, "cannot read a fact");
                        out.fact_failures.push(ProjectFailure::new(
                            FailedTarget::Project(out.project.clone()),
                            &err,
                        ));
                    }
                }
            }
        }
    }

    async fn fetch_fact(
        &self,
        client: &GitLabClient,
        request: &FactRequest,
    ) -> Result<Fact, GitLabError> {
        match request {
            FactRequest::PipelineJobs {
                project,
                pipeline_id,
            } => {
                let jobs: Vec<JobWire> = client
                    .list_pipeline_jobs_as(
                        project,
                        *pipeline_id,
                        &PipelineJobsQuery::every_attempt(),
                    )
                    .try_collect()
                    .await?;
                Ok(Fact::PipelineJobs(*pipeline_id, jobs))
            }
            FactRequest::LogTail { project, job_id } => {
                let tail = client
                    .job_log_tail(project, *job_id, self.inner.config.log_tail_bytes)
                    .await?;
                Ok(Fact::LogTail(*job_id, tail))
            }
        }
    }

    fn budget(&self, key: &PolicyKey, limits: &crate::crd::Limits, now: Timestamp) -> Budget {
        Budget::for_run(limits, self.inner.ledger.sent_in_last_hour(key, now))
    }

    /// How long a project's last listing stays fresh for this policy: half its interval (so the
    /// policies of a project share one listing), or, while the project's hook can be relied on
    /// ([`Inbox::hooks_healthy`]), `resyncInterval` less that half (so the first run after
    /// `resyncInterval` lists).
    fn fresh_for(&self, run: &PolicyRun, key: &ObserverKey) -> Duration {
        let half = run.policy.interval / 2;
        match run.policy.resync_interval {
            Some(resync) if self.hooks_healthy(run, key) => resync.saturating_sub(half),
            _ => half,
        }
    }

    /// True when the policy resyncs on Job Hooks and the project's hook can be relied on
    /// ([`Inbox::hooks_healthy`]).
    fn hooks_healthy(&self, run: &PolicyRun, key: &ObserverKey) -> bool {
        run.policy
            .resync_interval
            .is_some_and(|resync| self.inner.inbox.hooks_healthy(key, resync, run.now))
    }

    /// What a sync of the project follows for this policy besides its listing.
    fn sync_options(&self, run: &PolicyRun, key: &ObserverKey) -> SyncOptions {
        SyncOptions {
            follow_blocked: run.follow_blocked,
            hook_healthy: self.hooks_healthy(run, key),
        }
    }

    /// Reads the jobs Job Hooks delivered, one `GET` each, into the observer (a job GitLab no
    /// longer has is forgotten; a held one that cannot be read is stale until it is).
    async fn read_delivered(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
        delivered: &[u64],
    ) -> Vec<Refresh> {
        let project = ProjectRef::Id(project_id);
        let mut refreshed = Vec::with_capacity(delivered.len());
        for &job_id in delivered {
            match run.client.get_job(&project, job_id).await {
                Ok(job) => refreshed.extend(observer.update_job(JobWire::from(&job), self.now())),
                Err(err) if err.is_not_found() => observer.forget_gone(job_id),
                Err(err) => {
                    // Nothing is decided on a held job that may have moved on until it is read.
                    observer.mark_stale(job_id);
                    tracing::warn!(policy = %run.policy.key, project_id, job_id, error = %err, "cannot read a delivered job: the next listing will");
                }
            }
        }
        refreshed
    }

    /// Reads the held jobs that deliveries said have moved on (stale, see [`DeliveryNeed`]) and
    /// that the policy would decide on as held, so it decides on GitLab's answer instead: a
    /// manual job a person played is read before a play rule could play it again, a job that
    /// finished before a cancel rule could cancel it.
    async fn read_stale(
        &self,
        run: &PolicyRun,
        project_id: u64,
        project: &ProjectRef,
        label: &str,
        observer: &mut ProjectObserver,
    ) {
        if !observer.has_stale() {
            return;
        }
        let wanted: Vec<u64> = {
            let observation = Observation {
                project,
                jobs: observer.jobs(),
                pipeline_jobs: observer.pipeline_jobs(),
                log_tails: observer.log_tails(),
            };
            let unlimited = Budget {
                remaining_this_run: u32::MAX,
                remaining_this_hour: u32::MAX,
            };
            decide(&run.policy, &[observation], run.now, &unlimited)
                .into_iter()
                .map(|d| d.job_id)
                .filter(|id| observer.is_stale(*id))
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let refreshed = self
            .read_delivered(run, project_id, observer, &wanted)
            .await;
        self.account(label, observer, &refreshed, run.now);
    }

    /// Re-reads the jobs of a project whose in-doubt window has passed, so what is decided next
    /// starts from where GitLab stands, and settles them.
    async fn reread_settled(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
    ) {
        let ledger = &self.inner.ledger;
        for job_id in ledger.due_for_reread(&run.instance, project_id, run.now) {
            let project = ProjectRef::Id(project_id);
            let settled = match run.client.get_job(&project, job_id).await {
                Ok(job) => {
                    self.take_in(project_id, observer, &job);
                    true
                }
                Err(err) if err.is_not_found() => true,
                Err(err) => {
                    tracing::warn!(policy = %run.policy.key, project_id, job_id, error = %err, "cannot re-read a job in doubt: left alone until it can be read");
                    false
                }
            };
            if settled && let Err(err) = ledger.settle(&run.instance, job_id).await {
                tracing::warn!(error = %err, "cannot update the state file");
            }
        }
    }

    /// Sends one decision's call, recorded in the ledger first: an action the ledger cannot
    /// record is not sent.
    async fn send(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
        decision: &Decision,
    ) -> Outcome {
        let ledger = &self.inner.ledger;
        let now = self.now();
        let request_window = SignedDuration::try_from(self.inner.config.request_timeout)
            .unwrap_or(SignedDuration::ZERO);
        let call = Unsettled {
            instance: run.instance.clone(),
            project_id,
            job_id: decision.job_id,
            action: decision.action.kind(),
            until: now + request_window + ledger.in_doubt_for(),
            policy: Some(SentBy {
                namespace: run.policy.key.namespace.clone(),
                name: run.policy.key.name.clone(),
                rule: decision.rule.clone(),
                job_name: decision.job_name.clone(),
            }),
            reported: false,
        };
        if let Err(err) = ledger.begin(&run.policy.key, call, now).await {
            return Outcome::Failed {
                message: format!("not sent: {err}"),
            };
        }
        if let Some(latency) = self.inner.inbox.answered(&run.instance, decision.job_id) {
            self.inner
                .metrics
                .observe_webhook_action_latency(latency.as_secs_f64());
        }
        let in_doubt_until = || self.now() + ledger.in_doubt_for();
        let (outcome, fresh) = act::execute(&run.client, decision, &in_doubt_until).await;
        if let Some(job) = fresh {
            let new_attempt = job.id != decision.job_id;
            self.take_in(project_id, observer, &job);
            if new_attempt {
                observer.judge_again(decision.job_id);
            }
        }
        outcome
    }

    /// Records in the ledger what became of a call, once its outcome has been reported: a call
    /// in doubt stays unsettled, any other is settled. Reported first, so a process that stops
    /// in between reports the call again after its restart instead of never.
    async fn record_outcome(&self, run: &PolicyRun, job_id: u64, outcome: &Outcome) {
        let ledger = &self.inner.ledger;
        let recorded = match outcome {
            Outcome::InDoubt { until, .. } => {
                ledger.keep_in_doubt(&run.instance, job_id, *until).await
            }
            _ => ledger.settle(&run.instance, job_id).await,
        };
        if let Err(err) = recorded {
            tracing::warn!(policy = %run.policy.key, error = %err, "cannot update the state file");
        }
    }

    /// Reports the calls that were in flight when the previous process stopped (found
    /// unreported in the state file): GitLab may have carried them out, so each gets an action
    /// line and is counted, `in_doubt`. They stay unsettled: no rule acts on their jobs before
    /// the window has passed and a re-read showed where they stand.
    fn report_calls_from_before_the_restart(&self) {
        for call in self.inner.ledger.take_unreported() {
            let sent_by = call.policy.clone().unwrap_or_else(|| SentBy {
                namespace: String::new(),
                name: String::new(),
                rule: String::new(),
                job_name: String::new(),
            });
            let until = call.until.strftime("%Y-%m-%dT%H:%M:%SZ");
            tracing::info!(
                target: "jobwarden::action",
                policy = %format_args!("{}/{}", sent_by.namespace, sent_by.name),
                project = call.project_id,
                job_id = call.job_id,
                job_name = %sent_by.job_name,
                rule = %sent_by.rule,
                action = call.action.as_str(),
                outcome = "in_doubt",
                reason = "sent before jobwarden stopped, with no answer recorded",
                "in doubt until {until}: sent before jobwarden stopped; GitLab may have carried it out"
            );
            if call.policy.is_some() {
                self.inner.metrics.count_action(
                    &sent_by.namespace,
                    &sent_by.name,
                    &sent_by.rule,
                    call.action.as_str(),
                    "in_doubt",
                );
            }
        }
    }

    /// Turns one decision into an outcome: sends it when the verdict says act and the run's
    /// allowance (shared by the policy's projects) still has room.
    async fn carry_out(
        &self,
        run: &PolicyRun,
        project_id: u64,
        observer: &mut ProjectObserver,
        decision: Decision,
    ) -> Option<ActionRecord> {
        let unsettled = matches!(decision.verdict, Verdict::Act | Verdict::OverBudget)
            .then(|| self.inner.ledger.unsettled(&run.instance, decision.job_id))
            .flatten();
        let wants_budget = matches!(decision.verdict, Verdict::Act | Verdict::DryRun);
        let mut sent = false;
        let outcome = if let Some(call) = unsettled {
            // A call on this job may still land: nothing more is sent until it settles.
            Outcome::Deferred {
                not_before: call.until.max(run.now),
            }
        } else if wants_budget && !run.allowance.take() {
            Outcome::SkippedOverBudget
        } else {
            match decision.verdict {
                Verdict::Act if run.dry_run => Outcome::DryRun,
                Verdict::Act => {
                    sent = true;
                    self.send(run, project_id, observer, &decision).await
                }
                Verdict::DryRun => Outcome::DryRun,
                Verdict::OverBudget => Outcome::SkippedOverBudget,
                Verdict::NotBefore(not_before) => Outcome::Deferred { not_before },
                Verdict::AwaitingFacts => return None,
            }
        };
        let record = ActionRecord {
            time: self.now(),
            project: decision.project.clone(),
            job_id: decision.job_id,
            job_name: decision.job_name.clone(),
            rule: decision.rule.clone(),
            action: decision.action.kind(),
            reason: decision.reason.clone(),
            repeat: false,
            outcome,
        };
        let record = ActionRecord {
            repeat: self.is_repeat(&run.policy.key, &record),
            ..record
        };
        record.log(&run.policy.key);
        if !record.repeat && !matches!(record.outcome, Outcome::Deferred { .. }) {
            self.inner.metrics.count_action(
                &run.policy.key.namespace,
                &run.policy.key.name,
                &record.rule,
                record.action.as_str(),
                record.outcome.label(),
            );
        }
        if sent {
            self.record_outcome(run, decision.job_id, &record.outcome)
                .await;
        }
        Some(record)
    }
}

/// Decisions that sent nothing (dry-run, over budget, deferred), by job and outcome: those of
/// the policy's previous full run and those since (the current run and the runs on deliveries).
#[derive(Default)]
struct UnsentDecisions {
    previous: HashSet<(u64, &'static str)>,
    current: HashSet<(u64, &'static str)>,
}

impl UnsentDecisions {
    fn next_run(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

impl Engine {
    /// Whether the policy's previous run reported this decision with the same outcome (only
    /// decisions that send nothing repeat).
    fn is_repeat(&self, policy: &PolicyKey, record: &ActionRecord) -> bool {
        if !matches!(
            record.outcome,
            Outcome::DryRun | Outcome::SkippedOverBudget | Outcome::Deferred { .. }
        ) {
            return false;
        }
        let key = (record.job_id, record.outcome.label());
        let mut unsent = lock(&self.inner.unsent);
        let decisions = unsent.entry(policy.clone()).or_default();
        // Runs on Job Hook deliveries add to the current run's decisions.
        let new_in_this_run = decisions.current.insert(key);
        decisions.previous.contains(&key) || !new_in_this_run
    }
}

/// True when `key` is the observer of `project_id` on `instance` (any instance when `None`;
/// a trailing slash of the instance URL does not count).
fn is_project(key: &ObserverKey, instance: Option<&str>, project_id: u64) -> bool {
    let (observed_instance, id) = key;
    *id == project_id && instance.is_none_or(|want| instance_key(want) == observed_instance)
}

/// What a Job Hook delivery led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The project is observed: its job is queued for a re-read and `policies` were woken.
    Accepted { policies: usize },
    /// No policy observes the project: nothing to do.
    Ignored,
}

/// Which projects a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every project of the policy.
    All,
    /// Only the projects with Job Hook deliveries waiting.
    Delivered,
}

/// What one policy run shares between its projects.
struct PolicyRun {
    client: GitLabClient,
    instance: String,
    policy: Arc<CompiledPolicy>,
    now: Timestamp,
    dry_run: bool,
    allowance: Allowance,
    /// The projects (ids) this run has taken on.
    claimed: Mutex<HashSet<u64>>,
    /// Whether a rule may act on manual or scheduled jobs: then syncs follow them too.
    follow_blocked: bool,
    /// Every project, or those with deliveries due.
    scope: Scope,
    /// How many actions the run's report lists one by one.
    listed_actions: usize,
}

/// The actions a run may still take, shared by the projects it runs concurrently.
struct Allowance {
    budget: Budget,
    left: AtomicU32,
}

impl Allowance {
    fn new(budget: Budget) -> Allowance {
        Allowance {
            left: AtomicU32::new(budget.allowance()),
            budget,
        }
    }

    /// The budget to decide one project with: what is left of the run's.
    fn budget(&self) -> Budget {
        let left = self.left.load(Ordering::SeqCst);
        Budget {
            remaining_this_run: self.budget.remaining_this_run.min(left),
            remaining_this_hour: self.budget.remaining_this_hour.min(left),
        }
    }

    /// Takes one action from the allowance; false when none is left.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// What one project contributed to a policy run.
/// A run's failures, in order, and the first (what the run fails with when no project could
/// be observed).
#[derive(Default)]
struct Failures {
    all: Vec<ProjectFailure>,
    first: Option<(FailedTarget, GitLabError)>,
}

impl Failures {
    fn add(&mut self, target: FailedTarget, err: GitLabError) {
        self.all.push(ProjectFailure::new(target.clone(), &err));
        self.first.get_or_insert((target, err));
    }
}

/// How a project's observation for a run went.
enum Observed {
    /// Up to date (`listed`: by a listing of this run): decide on it.
    Yes { listed: bool },
    /// Not observed: the error is the project's failure in the run.
    Failed(GitLabError),
    /// Stopped (shutdown) before it was observed.
    Stopped,
}

struct ProjectRun {
    project: ProjectRef,
    observe_error: Option<GitLabError>,
    jobs_seen: usize,
    actions: Vec<ActionRecord>,
    fact_failures: Vec<ProjectFailure>,
}

impl ProjectRun {
    fn new(project: &ProjectRef) -> ProjectRun {
        ProjectRun {
            project: project.clone(),
            observe_error: None,
            jobs_seen: 0,
            actions: Vec::new(),
            fact_failures: Vec::new(),
        }
    }
}

/// One project of a run: as the policy (or its group's listing) names it, and its id when
/// known without asking GitLab.
struct Target {
    project: ProjectRef,
    id: Option<u64>,
}

/// A policy's projects for one run, and the groups that could not be listed.
#[derive(Default)]
struct ProjectSet {
    targets: Vec<Target>,
    group_failures: Vec<(GroupRef, GitLabError)>,
}

enum Fact {
    PipelineJobs(u64, Vec<JobWire>),
    LogTail(u64, String),
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
