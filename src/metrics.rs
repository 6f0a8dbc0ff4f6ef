//! Prometheus metrics: one registry, every metric registered in one place, typed recording
//! methods for the engine and an implementation of the GitLab client's [`RequestObserver`].
//! The four per-project families, the only ones that grow with the fleet, are kept compactly
//! beside the registry ([`projects`]) and rendered after it.
//!
//! Every metric is named `jobwarden_<name>`. Labels are low-cardinality by construction: a label
//! takes a project (as configured in a policy), a stage, a policy, a rule, an action, an outcome,
//! a route template, an HTTP status code, a GitLab host or a status/reason token — never a job
//! name, a job id, a user or a URL.
//!
//! Values that come from GitLab and are free-form in principle (failure reasons, statuses, error
//! kinds) pass through [`bounded_token`], so a misbehaving server cannot blow up the number of
//! series: anything that is not a short `[A-Za-z0-9_]` token is recorded as `other`.
//!
//! `jobwarden_reconcile_duration_seconds` is labelled `{namespace, policy}`: operators need to find
//! the slow policy, and the number of series is bounded by the number of policies (one histogram
//! of [`RECONCILE_BUCKETS`] per policy).

pub mod accounting;
mod projects;

pub use accounting::JobEvents;

use projects::ProjectSeries;

use crate::gitlab::telemetry::RequestObserver;
use crate::sync::lock;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// The prefix of every metric name (`jobwarden_…`).
pub const PREFIX: &str = "jobwarden";

/// Where the rendering of one scrape stands ([`Metrics::render_next`]).
#[derive(Debug, Default)]
pub struct Exposition {
    registry_rendered: bool,
    projects: projects::Cursor,
}

/// The content type of [`Metrics::render`]'s output (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `job_queued_duration_seconds`: from one second to four hours, so both a healthy
/// runner fleet (seconds) and a starved one (hours) are resolved.
pub const QUEUED_DURATION_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// Buckets of `gitlab_request_duration_seconds`: 10 ms to one minute (the client's timeouts).
pub const GITLAB_REQUEST_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `reconcile_duration_seconds`: 10 ms (one cached project) to five minutes (a large
/// policy paging through many projects under a tight rate limit).
pub const RECONCILE_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of `webhook_action_latency_seconds`: 10 ms to a minute around the 250 ms goal
/// (a retry backoff shows up in the upper buckets).
pub const WEBHOOK_LATENCY_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// The state of a policy, as `jobwarden_policies{state}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyState {
    /// Its last run reached GitLab (or it has not run yet).
    Ready,
    /// Its spec or manifest is invalid.
    Invalid,
    /// `spec.suspend` is true.
    Suspended,
    /// Its runs fail (no token, GitLab unreachable, every project refused…).
    Error,
}

impl PolicyState {
    /// Every state, in the order of [`POLICY_STATES`].
    pub const ALL: [PolicyState; 4] = [
        PolicyState::Ready,
        PolicyState::Invalid,
        PolicyState::Suspended,
        PolicyState::Error,
    ];

    /// The `state` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyState::Ready => "ready",
            PolicyState::Invalid => "invalid",
            PolicyState::Suspended => "suspended",
            PolicyState::Error => "error",
        }
    }
}

/// The states of `jobwarden_policies`. All four are always exported (zero when no policy is in
/// that state), so alerts and dashboards never see a missing series.
pub const POLICY_STATES: [&str; 4] = [
    PolicyState::Ready.as_str(),
    PolicyState::Invalid.as_str(),
    PolicyState::Suspended.as_str(),
    PolicyState::Error.as_str(),
];

/// Label value used for a token that is not a short `[A-Za-z0-9_]` word.
pub const OTHER: &str = "other";

/// Label value used for a failed job without a `failure_reason`.
pub const UNKNOWN_FAILURE_REASON: &str = "unknown";

/// Label value of `code` when a GitLab request got no HTTP response (connect error, timeout).
pub const NO_RESPONSE_CODE: &str = "error";

/// The longest token kept verbatim by [`bounded_token`].
const MAX_TOKEN_LEN: usize = 64;

/// Every jobwarden metric, registered in its own [`Registry`].
///
/// Cheap to share: wrap it in an `Arc` and hand clones to the engine, the GitLab client (as its
/// [`RequestObserver`]) and the HTTP server. All methods take `&self` and never block for long.
pub struct Metrics {
    registry: Registry,
    actions: IntCounterVec,
    gitlab_requests: IntCounterVec,
    gitlab_request_duration: HistogramVec,
    gitlab_ratelimit_remaining: IntGaugeVec,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    policies: IntGaugeVec,
    webhook_deliveries: IntCounterVec,
    webhook_action_latency: Histogram,
    /// The series per project (`jobs`, `job_pending_age_seconds`, `job_queued_duration_seconds`,
    /// `job_failures_total`), kept outside the registry: see [`projects`].
    projects: ProjectSeries,
    /// Policy states ever reported (the four known ones from the start).
    policy_states: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates every metric and registers it in a new registry with the `jobwarden_` prefix.
    /// `jobwarden_build_info{version}` is set to 1 and the four `jobwarden_policies{state}`
    /// series start at 0.
    pub fn new() -> Self {
        // The definitions below are static: names, help texts, label names and buckets are
        // constants, and each name is registered once in a fresh registry. Registration can only
        // fail if one of them is edited into an invalid shape, which every test of this module
        // would catch at once.
        Self::build().expect("static metric definitions are valid and unique")
    }

    /// Creates every family and registers it in a new registry, group by group.
    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some(PREFIX.to_owned()), None)?;
        let actions = register_actions(&registry)?;
        let gitlab = GitlabFamilies::register(&registry)?;
        let reconcile = ReconcileFamilies::register(&registry)?;
        let webhooks = WebhookFamilies::register(&registry)?;
        register_build_info(&registry)?;
        Ok(Metrics {
            registry,
            actions,
            gitlab_requests: gitlab.requests,
            gitlab_request_duration: gitlab.request_duration,
            gitlab_ratelimit_remaining: gitlab.ratelimit_remaining,
            reconcile_duration: reconcile.duration,
            reconcile_errors: reconcile.errors,
            policies: reconcile.policies,
            webhook_deliveries: webhooks.deliveries,
            webhook_action_latency: webhooks.action_latency,
            projects: ProjectSeries::default(),
            policy_states: Mutex::new(POLICY_STATES.iter().map(|s| (*s).to_owned()).collect()),
        })
    }

    /// The registry holding every jobwarden metric.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text exposition format ([`CONTENT_TYPE`]): the pieces of
    /// [`render_next`](Self::render_next) put together.
    pub fn render(&self) -> String {
        let mut at = Exposition::default();
        let mut out = String::new();
        while let Some(piece) = self.render_next(&mut at) {
            out.push_str(&piece);
        }
        out
    }

    /// The next piece of the exposition, `None` after the last: first every family of the
    /// registry, then the per-project families a few projects at a time, so that a scrape can
    /// send each piece before the next one is rendered.
    pub fn render_next(&self, at: &mut Exposition) -> Option<String> {
        let encoder = TextEncoder::new();
        if !at.registry_rendered {
            at.registry_rendered = true;
            let mut out = String::new();
            for family in self.registry.gather() {
                // The registry drops empty families, the only input the encoder rejects; a
                // family it still refused is left out rather than failing the whole scrape.
                if let Err(err) = encoder.encode_utf8(std::slice::from_ref(&family), &mut out) {
                    tracing::error!(metric = family.name(), error = %err, "cannot encode metric");
                }
            }
            return Some(out);
        }
        self.projects.render_next(&encoder, &mut at.projects)
    }

    /// A job of `project` waited `seconds` for a runner. Call once per job (see
    /// [`JobEvents::of_change`]).
    pub fn observe_job_queued(&self, project: &str, stage: &str, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        self.projects.observe_queued(project, stage, seconds);
    }

    /// A job of `project` failed with `reason` (as GitLab sends it). Call once per job (see
    /// [`JobEvents::of_change`]).
    pub fn count_job_failure(&self, project: &str, stage: &str, reason: &str) {
        self.projects
            .count_failure(project, stage, &bounded_token(reason));
    }

    /// Records what [`JobEvents::of_change`] found for one job of `project` in `stage`.
    pub fn record_job_events(&self, project: &str, stage: &str, events: &JobEvents) {
        if let Some(seconds) = events.queued_seconds {
            self.observe_job_queued(project, stage, seconds);
        }
        if let Some(reason) = events.failure_reason {
            self.count_job_failure(project, stage, reason);
        }
    }

    /// Sets how many jobs of `project` are currently seen in each status. Statuses reported for
    /// the project before but absent from `counts` are set to 0; repeated statuses are summed.
    pub fn set_jobs_by_status(&self, project: &str, counts: &[(&'static str, i64)]) {
        self.projects.set_jobs(project, counts);
    }

    /// Sets the age of the oldest job of `project` still waiting for a runner; `None` (nothing
    /// waiting) exports 0.
    pub fn set_pending_age(&self, project: &str, seconds: Option<f64>) {
        let value = seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        self.projects.set_pending_age(project, value);
    }

    /// Removes the per-project gauges (`jobs`, `job_pending_age_seconds`) of a project no policy
    /// observes any more. Counters and histograms are kept: they are history.
    pub fn forget_project(&self, project: &str) {
        self.projects.forget_gauges(project);
    }

    /// A policy's rule took (or, dry-run or over budget, decided but did not take) an action.
    /// `action`: retry, cancel, play, keep_artifacts; `outcome`: succeeded, failed, dry_run,
    /// skipped_over_budget (lower snake case; the alerts rely on `succeeded`).
    pub fn count_action(
        &self,
        namespace: &str,
        policy: &str,
        rule: &str,
        action: &str,
        outcome: &str,
    ) {
        self.actions
            .with_label_values(&[
                namespace,
                policy,
                rule,
                &bounded_token(action),
                &bounded_token(outcome),
            ])
            .inc();
    }

    /// A Job Hook delivery was received; `outcome`: accepted, duplicate, unauthorized, ignored,
    /// invalid.
    pub fn count_webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries
            .with_label_values(&[&bounded_token(outcome)])
            .inc();
    }

    /// An action was sent `seconds` after the Job Hook delivery that led to it.
    pub fn observe_webhook_action_latency(&self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.webhook_action_latency.observe(seconds);
        }
    }

    /// One reconcile of a policy took `seconds`.
    pub fn observe_reconcile(&self, namespace: &str, policy: &str, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        self.reconcile_duration
            .with_label_values(&[namespace, policy])
            .observe(seconds);
    }

    /// One reconcile of a policy failed; `error_kind` is the stable name of the error variant
    /// (`ReconcileError::kind`: for example `api_error`, `transport` or `too_many_projects`), never
    /// its message.
    pub fn count_reconcile_error(&self, namespace: &str, policy: &str, error_kind: &str) {
        self.reconcile_errors
            .with_label_values(&[namespace, policy, &bounded_token(error_kind)])
            .inc();
    }

    /// Sets how many policies are in each state. The states of [`POLICY_STATES`], and any other
    /// state reported before, are set to 0 when absent from `counts`; repeated states are summed.
    pub fn set_policies(&self, counts: &[(&str, i64)]) {
        let mut known = lock(&self.policy_states);
        set_counts_by_label(&mut known, counts, |state, count| {
            self.policies.with_label_values(&[state]).set(count);
        });
    }
}

/// Registers `metric` in `registry` and hands it back.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A registered counter family.
fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// A registered gauge family.
fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// A registered histogram family with `buckets`.
fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(registry, HistogramVec::new(opts, labels)?)
}

/// `actions_total`: what the policies decided, and how it went.
fn register_actions(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    counter_vec(
        registry,
        "actions_total",
        "Actions decided by policies, by rule, action (retry, cancel, play, \
         keep_artifacts) and outcome (succeeded, noop, failed, dry_run, skipped_over_budget).",
        &["namespace", "policy", "rule", "action", "outcome"],
    )
}

/// The GitLab client's families: requests, their duration, and the rate limit left.
struct GitlabFamilies {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    ratelimit_remaining: IntGaugeVec,
}

impl GitlabFamilies {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(GitlabFamilies {
            requests: counter_vec(
                registry,
                "gitlab_requests_total",
                "HTTP requests to GitLab by route template and status code (\"error\" when no \
                 response arrived).",
                &["endpoint", "code"],
            )?,
            request_duration: histogram_vec(
                registry,
                "gitlab_request_duration_seconds",
                "Duration of HTTP requests to GitLab by route template.",
                &GITLAB_REQUEST_BUCKETS,
                &["endpoint"],
            )?,
            ratelimit_remaining: gauge_vec(
                registry,
                "gitlab_ratelimit_remaining",
                "Requests left in GitLab's current rate-limit window (RateLimit-Remaining), by \
                 GitLab host.",
                &["gitlab_host"],
            )?,
        })
    }
}

/// The families of policy runs: how long a reconcile takes, which ones fail, and the policies
/// by state (the four known states start at 0).
struct ReconcileFamilies {
    duration: HistogramVec,
    errors: IntCounterVec,
    policies: IntGaugeVec,
}

impl ReconcileFamilies {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let families = ReconcileFamilies {
            duration: histogram_vec(
                registry,
                "reconcile_duration_seconds",
                "Duration of one reconcile of a policy.",
                &RECONCILE_BUCKETS,
                &["namespace", "policy"],
            )?,
            errors: counter_vec(
                registry,
                "reconcile_errors_total",
                "Reconciles that ended in an error, by error kind.",
                &["namespace", "policy", "error"],
            )?,
            policies: gauge_vec(
                registry,
                "policies",
                "Policies by state (ready, invalid, suspended, error).",
                &["state"],
            )?,
        };
        for state in POLICY_STATES {
            families.policies.with_label_values(&[state]).set(0);
        }
        Ok(families)
    }
}

/// The families of GitLab Job Hook deliveries: by outcome, and how soon they led to an action.
struct WebhookFamilies {
    deliveries: IntCounterVec,
    action_latency: Histogram,
}

impl WebhookFamilies {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let action_latency = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_action_latency_seconds",
                "Time from a Job Hook delivery to the action it led to (the GitLab call sent).",
            )
            .buckets(WEBHOOK_LATENCY_BUCKETS.to_vec()),
        )?;
        Ok(WebhookFamilies {
            deliveries: counter_vec(
                registry,
                "webhook_deliveries_total",
                "GitLab Job Hook deliveries received, by outcome (accepted, duplicate, \
                 unauthorized, ignored, invalid; forwarded, unforwarded, misrouted).",
                &["outcome"],
            )?,
            action_latency: registered(registry, action_latency)?,
        })
    }
}

/// `build_info{version}`, set to 1 for the running version. Nothing else writes it.
fn register_build_info(registry: &Registry) -> prometheus::Result<()> {
    let build_info = gauge_vec(
        registry,
        "build_info",
        "Always 1; the version of the running jobwarden.",
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    Ok(())
}

/// Sets a gauge per label value from `counts` (repeated values summed): the values reported
/// before (`known`) and absent now are set to 0, so a series never freezes at its last count;
/// `known` grows by the new values.
fn set_counts_by_label(
    known: &mut BTreeSet<String>,
    counts: &[(&str, i64)],
    mut set: impl FnMut(&str, i64),
) {
    let mut current: BTreeMap<Cow<'_, str>, i64> = BTreeMap::new();
    for (value, count) in counts {
        *current.entry(bounded_token(value)).or_default() += count;
    }
    for value in known.iter() {
        if !current.contains_key(value.as_str()) {
            set(value, 0);
        }
    }
    for (value, count) in &current {
        set(value, *count);
        if !known.contains(value.as_ref()) {
            known.insert(value.to_string());
        }
    }
}

impl RequestObserver for Metrics {
    fn on_request(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        let code: Cow<'static, str> = match status {
            Some(status) => Cow::Owned(status.to_string()),
            None => Cow::Borrowed(NO_RESPONSE_CODE),
        };
        self.gitlab_requests
            .with_label_values(&[endpoint, &code])
            .inc();
        self.gitlab_request_duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
    }

    fn on_rate_limit_remaining(&self, instance: &str, remaining: u64) {
        let remaining = i64::try_from(remaining).unwrap_or(i64::MAX);
        self.gitlab_ratelimit_remaining
            .with_label_values(&[&gitlab_host(instance)])
            .set(remaining);
    }
}

/// `value` itself when it is a token of 1 to 64 ASCII letters, digits or underscores (every
/// GitLab status and failure reason is one), [`OTHER`] otherwise. Keeps free-form values from a
/// server out of label values.
pub fn bounded_token(value: &str) -> Cow<'_, str> {
    let is_token = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if is_token {
        Cow::Borrowed(value)
    } else {
        Cow::Borrowed(OTHER)
    }
}

/// The host (and explicit port) of a GitLab instance given by its base URL, for the
/// `gitlab_host` label: `https://user:secret@gitlab.example.com:8443/gitlab/` becomes
/// `gitlab.example.com:8443`. A bare host is accepted as is; anything unparsable is `other`.
pub fn gitlab_host(instance: &str) -> String {
    let parsed = url::Url::parse(instance)
        .ok()
        .filter(|url| url.has_host())
        .or_else(|| url::Url::parse(&format!("https://{instance}")).ok());
    match parsed
        .as_ref()
        .and_then(|url| url.host_str().map(|h| (h, url.port())))
    {
        Some((host, Some(port))) => format!("{host}:{port}"),
        Some((host, None)) => host.to_owned(),
        None => OTHER.to_owned(),
    }
}

#[cfg(test)]
mod tests;
