//! The JobPolicy controller: a `kube::runtime::Controller` whose reconcile compiles the spec,
//! reads the token and CA bundle from the policy's own namespace, runs the engine and reports
//! through `/status` and Events.
//!
//! Wake-ups: the watch is filtered with `predicates::generation`, so only spec changes (and new
//! policies) trigger a reconcile — jobwarden's own status patches do not. Each successful run
//! requeues the policy after its `interval`; an invalid or suspended spec waits for the next
//! change; errors requeue with a bounded exponential backoff ([`ErrorBackoff`]).

use super::events::{EventPublisher, PolicyEvent, action_event};
use super::secrets::{self, AccessError, CaBundleRefError, SecretError};
use super::shard_status;
use super::status::{self, ReadyReason};
use crate::crd::Limits;
use crate::crd::{JobPolicy, JobPolicyStatus};
use crate::engine::{Engine, GitLabAccess, ReconcileError, RunMode, RunReport, Shard};
use crate::metrics::PolicyState;
use crate::policy::{CompiledPolicy, PolicyKey, SpecErrors, compile};
use crate::source::selector::LabelSelector;
use futures::{FutureExt, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The field manager of jobwarden's status patches.
pub const FIELD_MANAGER: &str = "jobwarden";

/// Policies reconciled at the same time (one policy is never reconciled twice at once).
pub const MAX_CONCURRENT_RECONCILES: u16 = 16;

/// Requeue delays after consecutive errors of one policy: `base * 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        ErrorBackoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(120),
        }
    }
}

impl ErrorBackoff {
    /// The delay after the `failures`-th consecutive error (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Why a reconcile failed. Every variant is also reported in the policy's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    CaBundle(#[from] CaBundleRefError),
    #[error(transparent)]
    GitLab(ReconcileError),
    #[error("cannot patch the status of JobPolicy {policy}: {source}")]
    StatusPatch {
        policy: PolicyKey,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A stable name for `jobwarden_reconcile_errors_total{error}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Secret(err) => err.kind(),
            Error::CaBundle(err) => err.kind(),
            Error::GitLab(err) => err.kind(),
            Error::StatusPatch { .. } => "status_patch",
        }
    }

    /// True when the engine already counted this error in `reconcile_errors_total`.
    fn counted_by_engine(&self) -> bool {
        matches!(self, Error::GitLab(_))
    }
}

/// What this replica remembers between reconciles.
#[derive(Debug, Default)]
struct Memory {
    /// The status last computed per policy, with the uid of the object it was computed for.
    /// Right after a patch the watch cache may still hold the older status; this one is never
    /// older, so counters are never lost.
    statuses: HashMap<PolicyKey, (String, JobPolicyStatus)>,
    /// Consecutive failed reconciles per policy.
    failures: HashMap<PolicyKey, u32>,
    /// The state of each policy, for the `policies` gauge.
    states: HashMap<PolicyKey, PolicyState>,
    /// With several shards, the status patch last written per policy (an equal one is not
    /// sent again).
    patches: HashMap<PolicyKey, serde_json::Value>,
}

/// Everything a reconcile needs. One context per leadership term.
pub struct Context {
    /// The engine shared by every policy (GitLab clients, caches, budgets, metrics).
    pub engine: Engine,
    /// The Kubernetes client.
    pub client: Client,
    /// Where Events go.
    pub events: Arc<EventPublisher>,
    /// This replica's shard: which entry of a policy's `status.shards` it writes (and, as
    /// shard 0, whether it writes the merged top-level status).
    pub shard: Shard,
    /// Fires when this term ends (leadership lost or shutdown); the engine stops between
    /// actions.
    pub stop: CancellationToken,
    /// Requeue delays after errors.
    pub backoff: ErrorBackoff,
    memory: Mutex<Memory>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("shard", &self.shard)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        engine: Engine,
        client: Client,
        events: Arc<EventPublisher>,
        shard: Shard,
        stop: CancellationToken,
    ) -> Context {
        Context {
            engine,
            client,
            events,
            shard,
            stop,
            backoff: ErrorBackoff::default(),
            memory: Mutex::new(Memory::default()),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        crate::sync::lock(&self.memory)
    }

    /// This shard's latest status of the policy: the one this replica computed last, else the
    /// object's (with several shards, this shard's entry in it: see
    /// [`shard_status::own_previous`]).
    fn previous_status(&self, key: &PolicyKey, policy: &JobPolicy) -> Option<JobPolicyStatus> {
        let remembered = match (&policy.metadata.uid, self.memory().statuses.get(key)) {
            // A policy deleted and created again under the same name starts afresh.
            (Some(uid), Some((remembered_uid, status))) if uid == remembered_uid => {
                Some(status.clone())
            }
            _ => None,
        };
        remembered.or_else(|| shard_status::own_previous(policy.status.as_ref(), self.shard))
    }

    /// Remembers `status` (this shard's) and patches it unless nothing changed: with one shard
    /// the whole status, unless it equals `previous`; with several, this shard's entry (and,
    /// for shard 0, the merged top-level fields), unless the patch equals the last one sent.
    async fn write_status(
        &self,
        policy: &JobPolicy,
        key: &PolicyKey,
        previous: Option<&JobPolicyStatus>,
        status: JobPolicyStatus,
    ) -> Result<(), Error> {
        if let Some(uid) = &policy.metadata.uid {
            self.memory()
                .statuses
                .insert(key.clone(), (uid.clone(), status.clone()));
        }
        if self.shard.is_everything() && previous == Some(&status) {
            return Ok(());
        }
        let patch = shard_status::patch(
            self.shard,
            &status,
            policy.status.as_ref(),
            policy.metadata.generation,
            self.engine.now(),
        );
        if !self.shard.is_everything() && self.memory().patches.get(key) == Some(&patch) {
            return Ok(());
        }
        let api: Api<JobPolicy> = Api::namespaced(self.client.clone(), &key.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::StatusPatch {
                policy: key.clone(),
                source,
            })?;
        if !self.shard.is_everything() {
            self.memory().patches.insert(key.clone(), patch);
        }
        Ok(())
    }

    async fn publish(&self, policy: &JobPolicy, event: &PolicyEvent) {
        self.events.publish(&policy.object_ref(&()), event).await;
    }

    /// Records the outcome of a reconcile for the error backoff and the `policies` gauge.
    fn settle(&self, key: &PolicyKey, state: PolicyState) {
        let counts = {
            let mut memory = self.memory();
            if state != PolicyState::Error {
                memory.failures.remove(key);
            }
            memory.states.insert(key.clone(), state);
            state_counts(&memory.states)
        };
        self.set_policies_gauge(&counts);
    }

    /// Counts one more consecutive failure of `key` and returns the delay before the retry.
    fn next_retry(&self, key: &PolicyKey) -> Duration {
        let mut memory = self.memory();
        let failures = memory.failures.entry(key.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        self.backoff.delay(*failures)
    }

    /// Forgets policies that no longer exist (deleted), in this
    /// controller and in the engine (observers, clients, budgets and metric series only they
    /// used).
    fn retain_policies(&self, exists: impl Fn(&PolicyKey) -> bool) {
        let counts = {
            let mut memory = self.memory();
            let before = memory.states.len();
            let gone: Vec<PolicyKey> = memory
                .states
                .keys()
                .filter(|key| !exists(key))
                .cloned()
                .collect();
            self.forget_in_engine(gone);
            memory.states.retain(|key, _| exists(key));
            memory.failures.retain(|key, _| exists(key));
            memory.statuses.retain(|key, _| exists(key));
            memory.patches.retain(|key, _| exists(key));
            if memory.states.len() == before {
                return;
            }
            state_counts(&memory.states)
        };
        self.set_policies_gauge(&counts);
    }

    /// Forgets every policy (this replica no longer leads).
    fn forget_all(&self) {
        let mut memory = self.memory();
        self.forget_in_engine(memory.states.keys().cloned().collect());
        *memory = Memory::default();
        drop(memory);
        self.set_policies_gauge(&[]);
    }

    /// Has the engine forget these policies, in the background (it waits for their projects'
    /// observers to be free).
    fn forget_in_engine(&self, keys: Vec<PolicyKey>) {
        if keys.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        tokio::spawn(async move {
            for key in keys {
                engine.forget_policy(&key).await;
            }
        });
    }

    fn set_policies_gauge(&self, counts: &[(&'static str, i64)]) {
        self.engine.metrics().set_policies(counts);
    }
}

fn state_counts(states: &HashMap<PolicyKey, PolicyState>) -> Vec<(&'static str, i64)> {
    let mut counts: HashMap<&'static str, i64> = HashMap::new();
    for state in states.values() {
        *counts.entry(state.as_str()).or_default() += 1;
    }
    counts.into_iter().collect()
}

fn policy_key(policy: &JobPolicy) -> Result<PolicyKey, Error> {
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("metadata.name"))?;
    Ok(PolicyKey::new(namespace, name))
}

/// What one reconcile of a policy came to, before anything is reported. [`reconcile`] finds it
/// ([`run_policy`]: validate → suspended? → due? → read the token and CA bundle → run);
/// [`report`] turns it into the status patch, the Events, the `policies` gauge and the requeue.
#[derive(Debug)]
enum Outcome {
    /// The spec does not compile: nothing runs until it changes.
    Invalid(SpecErrors),
    /// `spec.suspend` is true: nothing runs until it changes.
    Suspended,
    /// The last run is more recent than `spec.interval`: the next one comes after `wait`.
    /// Job Hook deliveries for the policy's projects were acted on meanwhile, if any: see
    /// [`act_on_deliveries`].
    NotDue {
        wait: Duration,
        delivered: Option<Delivered>,
    },
    /// The token Secret, or the CA bundle Secret, could not be read or used.
    SecretFailed(AccessError),
    /// A run reached GitLab.
    Ran {
        report: RunReport,
        interval: Duration,
        limits: Limits,
    },
    /// The run failed as a whole (no client, every project refused, too many projects…).
    RunFailed(ReconcileError),
}

/// The actions taken on Job Hook deliveries between two runs.
#[derive(Debug)]
struct Delivered {
    report: RunReport,
    limits: Limits,
}

/// Reconciles one JobPolicy: see the module documentation.
pub async fn reconcile(policy: Arc<JobPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = policy_key(&policy)?;
    let previous = ctx.previous_status(&key, &policy);
    let outcome = run_policy(&ctx, &policy, &key, previous.as_ref()).await;
    report(&ctx, &policy, &key, previous.as_ref(), outcome).await
}

/// Validates the spec, and runs the policy when it is due and its token (and CA bundle) can be
/// read.
async fn run_policy(
    ctx: &Context,
    policy: &JobPolicy,
    key: &PolicyKey,
    previous: Option<&JobPolicyStatus>,
) -> Outcome {
    let generation = policy.metadata.generation;
    let compiled = match compile(key.clone(), &policy.spec) {
        Ok(compiled) => compiled,
        Err(errors) => return Outcome::Invalid(errors),
    };
    if compiled.suspend {
        return Outcome::Suspended;
    }
    let now = ctx.engine.now();
    if let Some(wait) = status::not_due_for(previous, generation, compiled.interval, now) {
        let delivered = if ctx.engine.has_deliveries(key) {
            act_on_deliveries(ctx, key, &compiled).await
        } else {
            tracing::debug!(policy = %key, ?wait, "not due yet");
            None
        };
        return Outcome::NotDue { wait, delivered };
    }
    read_webhook_secret(ctx, key, &compiled).await;
    let access = match read_access(ctx, key, &compiled).await {
        Ok(access) => access,
        Err(err) => return Outcome::SecretFailed(err),
    };
    match ctx
        .engine
        .reconcile(&compiled, &access, RunMode::Normal, &ctx.stop)
        .await
    {
        Ok(report) => Outcome::Ran {
            report,
            interval: compiled.interval,
            limits: compiled.limits,
        },
        Err(err) => Outcome::RunFailed(err),
    }
}

/// Reports `outcome`: the status (written unless unchanged), the Events, the policy's state in
/// the `policies` gauge, and when to reconcile again. A failed run returns its error, so that
/// [`error_policy`] counts it and backs off.
async fn report(
    ctx: &Context,
    policy: &JobPolicy,
    key: &PolicyKey,
    previous: Option<&JobPolicyStatus>,
    outcome: Outcome,
) -> Result<Action, Error> {
    let generation = policy.metadata.generation;
    let now = ctx.engine.now();
    match outcome {
        Outcome::Invalid(errors) => {
            report_invalid(ctx, policy, key, previous, &errors).await?;
            Ok(Action::await_change())
        }
        Outcome::Suspended => {
            report_suspended(ctx, policy, key, previous).await?;
            Ok(Action::await_change())
        }
        Outcome::NotDue { wait, delivered } => {
            if let Some(Delivered { report, limits }) = delivered {
                let status = status::with_actions(previous, &report);
                let written = ctx.write_status(policy, key, previous, status).await;
                publish_run_events(ctx, policy, &limits, &report).await;
                written?;
            }
            ctx.settle(key, PolicyState::Ready);
            Ok(Action::requeue(wait))
        }
        Outcome::SecretFailed(err) => {
            report_failure(
                ctx,
                policy,
                key,
                previous,
                ReadyReason::of_access_error(&err),
                err.to_string(),
            )
            .await;
            Err(match err {
                AccessError::Token(err) => Error::Secret(err),
                AccessError::CaBundle(err) => Error::CaBundle(err),
            })
        }
        Outcome::Ran {
            report,
            interval,
            limits,
        } => {
            report.log();
            let status = status::reconciled(previous, &report, generation, now);
            let written = ctx.write_status(policy, key, previous, status).await;
            publish_run_events(ctx, policy, &limits, &report).await;
            written?;
            ctx.settle(key, PolicyState::Ready);
            // The next run starts `interval` after this one started, whatever this one took.
            let took = Duration::try_from(now.duration_since(report.time)).unwrap_or_default();
            Ok(Action::requeue(interval.saturating_sub(took)))
        }
        Outcome::RunFailed(err) => {
            report_failure(
                ctx,
                policy,
                key,
                previous,
                ReadyReason::of_run_error(&err),
                err.to_string(),
            )
            .await;
            Err(Error::GitLab(err))
        }
    }
}

/// Writes `Ready=False` (`InvalidSpec`) with the spec's errors, and a Warning Event.
async fn report_invalid(
    ctx: &Context,
    policy: &JobPolicy,
    key: &PolicyKey,
    previous: Option<&JobPolicyStatus>,
    errors: &SpecErrors,
) -> Result<(), Error> {
    tracing::warn!(policy = %key, "invalid spec:\n{errors}");
    let status = status::invalid_spec(
        previous,
        errors,
        policy.metadata.generation,
        ctx.engine.now(),
    );
    let written = ctx.write_status(policy, key, previous, status).await;
    let reason = ReadyReason::InvalidSpec.as_str();
    ctx.publish(policy, &PolicyEvent::warning(reason, errors.to_string()))
        .await;
    written?;
    ctx.settle(key, PolicyState::Invalid);
    Ok(())
}

/// Writes `Ready=True` (`Suspended`), and a Normal Event when the policy was not suspended
/// already.
async fn report_suspended(
    ctx: &Context,
    policy: &JobPolicy,
    key: &PolicyKey,
    previous: Option<&JobPolicyStatus>,
) -> Result<(), Error> {
    let was_suspended = previous
        .and_then(status::ready_of)
        .is_some_and(|c| c.reason == ReadyReason::Suspended.as_str());
    let status = status::suspended(previous, policy.metadata.generation, ctx.engine.now());
    let written = ctx.write_status(policy, key, previous, status).await;
    if !was_suspended {
        tracing::info!(policy = %key, "suspended");
        let note = "spec.suspend is true: reconciling stops until it is false";
        let reason = ReadyReason::Suspended.as_str();
        ctx.publish(policy, &PolicyEvent::normal(reason, note))
            .await;
    }
    written?;
    ctx.settle(key, PolicyState::Suspended);
    Ok(())
}

/// Reads the policy's own webhook secret (`spec.gitlab.webhookSecretRef`, in its namespace)
/// for the webhook receiver. A missing one is logged: polling goes on, and deliveries signed
/// with it are refused until it exists.
async fn read_webhook_secret(ctx: &Context, key: &PolicyKey, compiled: &CompiledPolicy) {
    let secret = match &compiled.webhook_secret_ref {
        None => None,
        Some(secret_ref) => {
            match secrets::read_token(&ctx.client, &key.namespace, secret_ref).await {
                Ok(secret) => Some(secret),
                Err(err) => {
                    tracing::warn!(policy = %key, error = %err, "no webhook secret");
                    None
                }
            }
        }
    };
    ctx.engine.set_webhook_secret(key, secret);
}

/// The policy's token and CA bundle, from Secrets of its own namespace.
async fn read_access(
    ctx: &Context,
    key: &PolicyKey,
    compiled: &CompiledPolicy,
) -> Result<GitLabAccess, AccessError> {
    secrets::read_access(
        &ctx.client,
        &key.namespace,
        &compiled.token_secret_ref,
        compiled.ca_bundle_secret_ref.as_ref(),
    )
    .await
}

/// Between two runs of a policy, acts on the Job Hook deliveries for its projects. Their
/// actions are reported like a run's (counters, recent actions, Events; `lastSyncTime` stays the
/// last full run's); `None` when nothing was done. A failure is logged and left to the next
/// full run.
async fn act_on_deliveries(
    ctx: &Context,
    key: &PolicyKey,
    compiled: &CompiledPolicy,
) -> Option<Delivered> {
    let access = match read_access(ctx, key, compiled).await {
        Ok(access) => access,
        Err(err) => {
            tracing::warn!(policy = %key, error = %err, "deliveries left for the next run");
            return None;
        }
    };
    match ctx
        .engine
        .reconcile_delivered(compiled, &access, &ctx.stop)
        .await
    {
        Ok(report) if report.actions.is_empty() && report.failures.is_empty() => None,
        Ok(report) => Some(Delivered {
            report,
            limits: compiled.limits.clone(),
        }),
        Err(err) => {
            tracing::warn!(policy = %key, error = %err, "acting on deliveries failed; the next run reads again");
            None
        }
    }
}

/// Writes `Ready=False` with `reason` and the error's text, and a Warning Event. A failure to
/// write the status is logged: the caller returns the error that caused all this.
async fn report_failure(
    ctx: &Context,
    policy: &JobPolicy,
    key: &PolicyKey,
    previous: Option<&JobPolicyStatus>,
    reason: ReadyReason,
    message: String,
) {
    let generation = policy.metadata.generation;
    let status = status::not_reconciled(previous, reason, &message, generation, ctx.engine.now());
    if let Err(err) = ctx.write_status(policy, key, previous, status).await {
        tracing::warn!(policy = %key, error = %err, "cannot report the failure in the status");
    }
    ctx.publish(policy, &PolicyEvent::warning(reason.as_str(), &message))
        .await;
    ctx.settle(key, PolicyState::Error);
}

/// An Event per action that reached GitLab, per project that could not be read, and one for
/// decisions skipped over budget.
async fn publish_run_events(
    ctx: &Context,
    policy: &JobPolicy,
    limits: &Limits,
    report: &RunReport,
) {
    for event in report.actions.iter().filter_map(action_event) {
        ctx.publish(policy, &event).await;
    }
    for failure in &report.failures {
        let note = format!("{}: {}", failure.target, failure.message);
        ctx.publish(
            policy,
            &PolicyEvent::warning(ReadyReason::GitLabError.as_str(), note),
        )
        .await;
    }
    let over_budget = report.over_budget_total();
    if over_budget > 0 {
        let note = format!(
            "{over_budget} decision(s) skipped: limits reached (maxActionsPerRun {}, \
             maxActionsPerHour {}); decided again next run",
            limits.max_actions_per_run, limits.max_actions_per_hour
        );
        ctx.publish(policy, &PolicyEvent::warning("OverBudget", note))
            .await;
    }
}

/// After a failed reconcile: count it, and retry after a growing, bounded delay.
pub fn error_policy(policy: Arc<JobPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = policy_key(&policy).unwrap_or_else(|_| {
        PolicyKey::new(policy.namespace().unwrap_or_default(), policy.name_any())
    });
    if !error.counted_by_engine() {
        ctx.engine
            .metrics()
            .count_reconcile_error(&key.namespace, &key.name, error.kind());
    }
    let delay = ctx.next_retry(&key);
    tracing::warn!(policy = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Watches JobPolicies through `api` (with `config`: see [`watcher_config`]) and reconciles
/// every one of them (over the projects of `ctx.shard`, which the engine filters) until
/// `ctx.stop` fires; then lets the reconciles in flight finish and returns.
///
/// `synced` turns true once the watch has listed every JobPolicy (the reflector's store is
/// ready: the initial list is complete), and false again when this returns.
pub async fn run(
    ctx: Arc<Context>,
    api: Api<JobPolicy>,
    config: watcher::Config,
    synced: watch::Sender<bool>,
) {
    synced.send_replace(false);
    let (reader, writer) = reflector::store::<JobPolicy>();
    let policies = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let stop = ctx.stop.clone();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = stopped_tx.send(());
    });
    let config = controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES);
    // A Job Hook delivery for a policy's project triggers a reconcile of that policy, which
    // acts on the delivered jobs at once (see `act_on_deliveries`).
    let woken = futures::stream::unfold(ctx.engine.subscribe_wakeups(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(key) => {
                    let policy = ObjectRef::<JobPolicy>::new(&key.name).within(&key.namespace);
                    return Some((policy, rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let controller = Controller::for_stream(policies, reader.clone())
        .with_config(config)
        .reconcile_on(woken)
        .graceful_shutdown_on(async move {
            let _ = stopped_rx.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            log_result(&result);
            ctx.retain_policies(|key| exists_in(&reader, key));
            futures::future::ready(())
        });
    // kube's runner starts no reconcile before the store has listed the policies, and the
    // graceful shutdown stops the watch that would finish the list: a term that ends before
    // the list (a SIGTERM just after the Lease was won) would wait forever. Nothing has been
    // reconciled then, so it stops at once.
    let term = ctx.stop.clone();
    let listed = async {
        tokio::select! {
            ready = reader.wait_until_ready() => if ready.is_ok() {
                tracing::info!(policies = reader.len(), "listed the JobPolicies");
                synced.send_replace(true);
            },
            () = term.cancelled() => if reader.wait_until_ready().now_or_never().is_none() {
                return;
            },
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = controller => {}
        () = listed => {}
    }
    synced.send_replace(false);
    ctx.forget_all();
}

/// The watch of JobPolicies: every one, or with `selector` only those carrying its labels
/// (the apiserver filters: the others are never sent).
pub fn watcher_config(selector: Option<&LabelSelector>) -> watcher::Config {
    match selector {
        Some(selector) => watcher::Config::default().labels(&selector.to_string()),
        None => watcher::Config::default(),
    }
}

fn exists_in(store: &Store<JobPolicy>, key: &PolicyKey) -> bool {
    store
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
        .is_some()
}

type RunResult = Result<(ObjectRef<JobPolicy>, Action), controller::Error<Error, watcher::Error>>;

fn log_result(result: &RunResult) {
    match result {
        Ok((policy, action)) => tracing::debug!(%policy, ?action, "reconciled"),
        // error_policy has logged it.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(controller::Error::ObjectNotFound(policy)) => {
            tracing::debug!(%policy, "policy gone before its turn");
        }
        Err(err @ controller::Error::QueueError(_)) => {
            tracing::warn!(error = %err, "watching JobPolicies failed; retrying");
        }
        Err(err) => tracing::warn!(error = %err, "controller error"),
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
