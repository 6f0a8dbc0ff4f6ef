//! File mode, the counterpart of cluster mode's [`controller`](crate::source::kube::controller):
//! running policies from a directory of manifests, one task per policy, each on its interval,
//! reloaded when the files change, stopped gracefully.

use super::{
    LoadedManifests, LoadedPolicy, LoadedSecret, load_manifests, manifest_files, read_manifest,
    resolve_ca_bundle, resolve_token, resolve_webhook_secret,
};
use crate::engine::{Engine, GitLabAccess, RunMode, RunReport};
use crate::metrics::PolicyState;
use crate::policy::{CompiledPolicy, PolicyKey};
use crate::server::Readiness;
use crate::source::selector::LabelSelector;
use crate::sync::lock;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Told about every finished run, to print or log it.
pub type ReportSink = Arc<dyn Fn(&RunReport) + Send + Sync>;

/// Rewrites a loaded policy before it runs (the demo points policies at its simulator).
pub type PolicyOverride = Arc<dyn Fn(&mut CompiledPolicy) + Send + Sync>;

/// Where the policies' GitLab tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// The Secret a policy's `tokenSecretRef` names, from the loaded manifests (in the policy's
    /// own namespace), else this environment variable (`--token-env`).
    SecretOrEnv(String),
    /// This token for every policy, whatever its Secret says (the demo's simulator token).
    Fixed(SecretString),
}

/// Where the policies come from and how their tokens resolve.
#[derive(Clone)]
pub struct RunnerConfig {
    pub paths: Vec<PathBuf>,
    /// Where each policy's GitLab token comes from.
    pub token: TokenSource,
    pub override_policy: Option<PolicyOverride>,
    /// How often the directory is checked for changes.
    pub reload_every: Duration,
    /// Only the policies whose `metadata.labels` match (`--selector`); all when `None`.
    pub selector: Option<LabelSelector>,
    /// What `/readyz` reports: not ready until the files have been loaded the first time (and
    /// a task started for every runnable policy), ready from then on.
    pub readiness: Option<Readiness>,
}

/// What the `policies` gauge counts in file mode: documents that cannot run (invalid, or
/// without a token), and each runnable policy's state after its latest run (`error` while its
/// runs fail, e.g. with a revoked token).
#[derive(Debug, Default)]
struct PolicyStates {
    unrunnable: HashMap<PolicyState, i64>,
    runnable: HashMap<PolicyKey, PolicyState>,
}

impl PolicyStates {
    fn publish(&self, engine: &Engine) {
        let mut counts = self.unrunnable.clone();
        for state in self.runnable.values() {
            *counts.entry(*state).or_default() += 1;
        }
        let gauge: Vec<(&str, i64)> = PolicyState::ALL
            .iter()
            .map(|s| (s.as_str(), counts.get(s).copied().unwrap_or(0)))
            .collect();
        engine.metrics().set_policies(&gauge);
    }
}

struct Running {
    fingerprint: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs every valid policy found in the paths until `shutdown` fires, reloading on change.
/// `config.readiness` turns ready once the first load is applied.
pub async fn run_policies(
    engine: Engine,
    config: RunnerConfig,
    sink: ReportSink,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<PolicyKey, Running> = HashMap::new();
    let states = Arc::new(Mutex::new(PolicyStates::default()));
    let mut last_state: Option<u64> = None;
    if let Some(readiness) = &config.readiness {
        readiness.set_not_ready("loading the policy files");
    }
    loop {
        // File reads stay off the async workers: a slow disk never stalls a reconcile,
        // /healthz or SIGTERM.
        let paths = config.paths.clone();
        let read = tokio::task::spawn_blocking(move || {
            let state = files_fingerprint(&paths);
            (last_state != Some(state)).then(|| (state, load_manifests(&paths)))
        });
        let changed = tokio::select! {
            () = shutdown.cancelled() => break,
            read = read => read.ok().flatten(),
        };
        if let Some((state, manifests)) = changed {
            last_state = Some(state);
            apply(
                &engine,
                &config,
                &sink,
                &shutdown,
                &manifests,
                &mut running,
                &states,
            );
            if let Some(readiness) = &config.readiness
                && !readiness.is_ready()
            {
                tracing::info!(policies = running.len(), "policy files loaded: ready");
                readiness.set_ready();
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.reload_every) => {}
        }
    }
    for (_, run) in running.drain() {
        run.stop.cancel();
        let _ = run.task.await;
    }
}

/// What a policy task runs, by policy: the compiled policy, its token and CA bundle, and its
/// fingerprint.
type Wanted = HashMap<PolicyKey, (CompiledPolicy, GitLabAccess, u64)>;

/// Starts, restarts or stops policy tasks to match what the files say now.
fn apply(
    engine: &Engine,
    config: &RunnerConfig,
    sink: &ReportSink,
    shutdown: &CancellationToken,
    manifests: &LoadedManifests,
    running: &mut HashMap<PolicyKey, Running>,
    states: &Arc<Mutex<PolicyStates>>,
) {
    let mut unrunnable = rejected_documents(manifests);
    let wanted = wanted_policies(engine, config, manifests, &mut unrunnable);
    publish_states(engine, states, unrunnable, &wanted);
    stop_outdated(engine, running, &wanted);
    start_new(engine, sink, shutdown, states, running, wanted);
}

/// Logs the manifest errors and counts the documents rejected before they could even be read
/// as policies: each counts as invalid (once, whatever the number of its errors).
fn rejected_documents(manifests: &LoadedManifests) -> HashMap<PolicyState, i64> {
    for error in &manifests.errors {
        tracing::error!(%error, "manifest rejected");
    }
    let rejected: std::collections::HashSet<(&std::path::Path, Option<usize>)> = manifests
        .errors
        .iter()
        .map(|e| (e.file.as_path(), e.document))
        .collect();
    HashMap::from([(
        PolicyState::Invalid,
        i64::try_from(rejected.len()).unwrap_or(i64::MAX),
    )])
}

/// The selected policies that can run; each that cannot (invalid, without a token, or with an
/// unusable CA bundle) is counted in `unrunnable`.
fn wanted_policies(
    engine: &Engine,
    config: &RunnerConfig,
    manifests: &LoadedManifests,
    unrunnable: &mut HashMap<PolicyState, i64>,
) -> Wanted {
    let mut wanted = Wanted::new();
    let selected = manifests.policies.iter().filter(|loaded| {
        config
            .selector
            .as_ref()
            .is_none_or(|selector| selector.matches(loaded.policy.metadata.labels.as_ref()))
    });
    for loaded in selected {
        match runnable(engine, config, &manifests.secrets, loaded) {
            Ok((compiled, access)) => {
                let fingerprint = policy_fingerprint(&loaded.policy.spec, &access);
                wanted.insert(compiled.key.clone(), (compiled, access, fingerprint));
            }
            Err(state) => *unrunnable.entry(state).or_default() += 1,
        }
    }
    wanted
}

/// A policy ready to run: compiled (and rewritten by the override), with its GitLab token and
/// CA bundle, its webhook secret given to the engine. Else, with its problem logged, the state
/// it counts in.
fn runnable(
    engine: &Engine,
    config: &RunnerConfig,
    secrets: &[LoadedSecret],
    loaded: &LoadedPolicy,
) -> Result<(CompiledPolicy, GitLabAccess), PolicyState> {
    let compiled = match &loaded.compiled {
        Ok(compiled) => compiled,
        Err(errors) => {
            tracing::error!(source = %loaded.source, policy = %loaded.key(), "invalid policy:\n{errors}");
            return Err(PolicyState::Invalid);
        }
    };
    let mut compiled = compiled.clone();
    if let Some(rewrite) = &config.override_policy {
        rewrite(&mut compiled);
    }
    let resolved = match &config.token {
        TokenSource::Fixed(token) => Ok(token.clone()),
        TokenSource::SecretOrEnv(env) => resolve_token(&loaded.policy, secrets, env),
    };
    let token = match resolved {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(policy = %compiled.key, error = %err, "no GitLab token");
            return Err(PolicyState::Error);
        }
    };
    let ca_bundle = match resolve_ca_bundle(&loaded.policy, secrets) {
        Ok(ca_bundle) => ca_bundle,
        Err(err) => {
            // The field leads the message: `spec.gitlab.caBundleSecretRef: …`.
            tracing::error!(policy = %compiled.key, error = %err, "no usable CA bundle: the policy does not run");
            return Err(PolicyState::Error);
        }
    };
    match resolve_webhook_secret(&loaded.policy, secrets) {
        Ok(secret) => engine.set_webhook_secret(&compiled.key, secret),
        Err(err) => {
            // Polling still works; deliveries with this secret are refused.
            tracing::error!(policy = %compiled.key, error = %err, "no webhook secret");
            engine.set_webhook_secret(&compiled.key, None);
        }
    }
    Ok((compiled, GitLabAccess::new(token).with_ca_bundle(ca_bundle)))
}

/// Sets the `policies` gauge to what the files say now: the documents that cannot run, and
/// each runnable policy in the state of its latest run (a new one `ready` or `suspended`).
fn publish_states(
    engine: &Engine,
    states: &Arc<Mutex<PolicyStates>>,
    unrunnable: HashMap<PolicyState, i64>,
    wanted: &Wanted,
) {
    let mut states = lock(states);
    states.unrunnable = unrunnable;
    // A policy that keeps running keeps the state of its latest run.
    let previous = std::mem::take(&mut states.runnable);
    for (key, (policy, _, _)) in wanted {
        let state = previous
            .get(key)
            .copied()
            .unwrap_or_else(|| healthy_state(policy));
        states.runnable.insert(key.clone(), state);
    }
    states.publish(engine);
}

/// Stops the tasks whose policy changed or is gone. The engine forgets a policy gone for good.
fn stop_outdated(engine: &Engine, running: &mut HashMap<PolicyKey, Running>, wanted: &Wanted) {
    running.retain(|key, run| {
        let keep = wanted
            .get(key)
            .is_some_and(|(_, _, fingerprint)| *fingerprint == run.fingerprint);
        if !keep {
            tracing::info!(policy = %key, "policy changed or removed: stopping its loop");
            run.stop.cancel();
        }
        if !wanted.contains_key(key) {
            // Gone for good: free its client, budget, observers and metric series.
            let (engine, key) = (engine.clone(), key.clone());
            tokio::spawn(async move { engine.forget_policy(&key).await });
        }
        keep
    });
}

/// Starts a task for each wanted policy that has none running.
fn start_new(
    engine: &Engine,
    sink: &ReportSink,
    shutdown: &CancellationToken,
    states: &Arc<Mutex<PolicyStates>>,
    running: &mut HashMap<PolicyKey, Running>,
    wanted: Wanted,
) {
    for (key, (policy, access, fingerprint)) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        let stop = shutdown.child_token();
        tracing::info!(policy = %key, interval = ?policy.interval, dry_run = policy.dry_run, "policy loaded");
        let task = tokio::spawn(policy_loop(
            engine.clone(),
            policy,
            access,
            sink.clone(),
            Arc::clone(states),
            stop.clone(),
        ));
        running.insert(
            key,
            Running {
                fingerprint,
                stop,
                task,
            },
        );
    }
}

/// The state of a policy whose runs reach GitLab: `suspended` or `ready`.
fn healthy_state(policy: &CompiledPolicy) -> PolicyState {
    if policy.suspend {
        PolicyState::Suspended
    } else {
        PolicyState::Ready
    }
}

/// Reconciles one policy on its interval until stopped.
async fn policy_loop(
    engine: Engine,
    policy: CompiledPolicy,
    access: GitLabAccess,
    sink: ReportSink,
    states: Arc<Mutex<PolicyStates>>,
    stop: CancellationToken,
) {
    let interval = policy.interval;
    let wakeup = engine.wakeup(&policy.key);
    loop {
        let started = tokio::time::Instant::now();
        let state = match engine
            .reconcile(&policy, &access, RunMode::Normal, &stop)
            .await
        {
            Ok(report) => {
                sink(&report);
                healthy_state(&policy)
            }
            Err(err) => {
                tracing::error!(policy = %policy.key, error = %err, "reconcile failed");
                PolicyState::Error
            }
        };
        {
            let mut states = lock(&states);
            if let Some(slot) = states.runnable.get_mut(&policy.key) {
                *slot = state;
            }
            states.publish(&engine);
        }
        // Until the next full run, Job Hook deliveries for the policy's projects are acted on
        // as they come.
        let next_run = next_run_at(started, interval, tokio::time::Instant::now());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_run) => break,
                () = wakeup.notified() => {
                    match engine.reconcile_delivered(&policy, &access, &stop).await {
                        Ok(report) if !report.actions.is_empty() || !report.failures.is_empty() => sink(&report),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(policy = %policy.key, error = %err, "acting on deliveries failed"),
                    }
                }
            }
        }
    }
}

/// When a policy's next run starts: `interval` after the last one started, so runs keep their
/// cadence however long each takes to reach its projects (a failure waits at most one interval
/// plus the time a run takes to reach its project); at once when the last run took longer.
fn next_run_at(
    started: tokio::time::Instant,
    interval: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    (started + interval).max(now)
}

/// A digest of the manifest files' names and contents (within the bounds of [`read_manifest`]):
/// when it changes, the manifests are loaded again. Only manifest files are opened: a FIFO or a
/// device in the directory is never read.
fn files_fingerprint(paths: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut listing_errors = Vec::new();
    for file in manifest_files(paths, &mut listing_errors) {
        file.hash(&mut h);
        match read_manifest(&file) {
            Ok(content) => content.hash(&mut h),
            Err(problem) => problem.hash(&mut h),
        }
    }
    for error in &listing_errors {
        error.to_string().hash(&mut h);
    }
    h.finish()
}

/// Identifies what a policy task runs: its spec, its token and its CA bundle. A change
/// restarts the task.
fn policy_fingerprint(spec: &crate::crd::JobPolicySpec, access: &GitLabAccess) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    access.token.expose_secret().hash(&mut h);
    access.ca_bundle.as_ref().map(|b| b.digest()).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn runs_start_every_interval_whatever_a_run_takes() {
        let started = Instant::now();
        let interval = Duration::from_secs(30);
        // A run of 2 s: the next starts 30 s after this one started, not 32.
        let after_two_seconds = started + Duration::from_secs(2);
        assert_eq!(
            next_run_at(started, interval, after_two_seconds),
            started + interval
        );
        // A run longer than the interval: the next starts at once.
        let after_forty_seconds = started + Duration::from_secs(40);
        assert_eq!(
            next_run_at(started, interval, after_forty_seconds),
            after_forty_seconds
        );
    }
}
