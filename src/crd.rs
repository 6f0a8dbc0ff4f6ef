//! The `JobPolicy` custom resource (`jobwarden.dev/v1alpha1`): what an operator writes (spec)
//! and what jobwarden reports back (status).
//!
//! The OpenAPI schema generated from these types checks at admission everything that can be
//! checked without running code: types, enums, patterns, bounds, list uniqueness and CEL rules
//! (`x-kubernetes-validations`). What the schema cannot check (a regex that does not compile, an
//! unknown time zone) is checked by [`crate::policy::compile()`], which also repeats every schema
//! check so that file mode without an apiserver is equally safe.

use crate::gitlab::models::JobStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The API group of jobwarden's resources.
pub const GROUP: &str = "jobwarden.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of a `JobPolicy` manifest.
pub const API_VERSION: &str = "jobwarden.dev/v1alpha1";
/// `kind` of a `JobPolicy` manifest.
pub const KIND: &str = "JobPolicy";

/// Go/Kubernetes duration syntax, e.g. `90s`, `5m`, `1h30m`, `1.5h`, `300ms` (no sign, at least
/// one unit).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// A wall-clock time `HH:MM` from `00:00` to `23:59`.
pub const CLOCK_TIME_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// A wall-clock time `HH:MM` from `00:00` to `24:00` (`24:00` is the end of the day).
pub const CLOCK_END_PATTERN: &str = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$";
/// A rule name: lowercase letters, digits and `-`, like a Kubernetes name (it is a metric label).
pub const RULE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A CI/CD variable key as GitLab accepts it.
pub const VARIABLE_KEY_PATTERN: &str = r"^[A-Za-z0-9_]+$";
/// A failure reason as GitLab spells them (unknown reasons of a newer GitLab are accepted).
pub const FAILURE_REASON_PATTERN: &str = r"^[a-z0-9_]+$";
/// A Kubernetes Secret name (DNS subdomain).
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key of a Secret's `data`.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// An http(s) base URL without query or fragment.
pub const GITLAB_URL_PATTERN: &str = r"^https?://[^\s/?#]+(/[^\s?#]*)?$";
/// A project: a numeric id or a full path (`group/sub/project`).
pub const PROJECT_PATTERN: &str = r"^([0-9]+|[^/\s]+(/[^/\s]+)+)$";
/// A group: a numeric id or a full path (`group` or `group/subgroup`).
pub const GROUP_PATTERN: &str = r"^([0-9]+|[^/\s]+(/[^/\s]+)*)$";

/// Most rules a policy may have.
pub const MAX_RULES: usize = 32;
/// Most projects a policy may target. With paths of ~40 characters a full list is ~0.5 MB, a
/// third of the 1.5 MiB that etcd stores per object.
pub const MAX_PROJECTS: usize = 10_000;
/// Most groups a policy may target.
pub const MAX_GROUPS: usize = 100;
/// Most projects one policy may cover once its groups are listed: `projects` plus every
/// project of `groups`, less `excludeProjects`. A policy over more fails its run with a clear
/// error (the engine keeps one observer per project: ~20,000 is what one replica is sized for).
pub const MAX_RESOLVED_PROJECTS: usize = 20_000;
/// Most globs in one list (`refs`, `names`, `stages`, `excludeProjects`).
pub const MAX_GLOBS: usize = 64;
/// Most failure reasons one rule may name.
pub const MAX_FAILURE_REASONS: usize = 64;
/// Most variables a `play` action may pass.
pub const MAX_PLAY_VARIABLES: usize = 50;
/// Longest `logPattern`.
pub const MAX_LOG_PATTERN_LEN: usize = 1024;
/// Highest `retry.limit`.
pub const MAX_RETRY_LIMIT: u32 = 20;
/// Highest `retry.backoff.factor`.
pub const MAX_BACKOFF_FACTOR: f64 = 10.0;
/// Most entries of `status.recentActions`.
pub const MAX_RECENT_ACTIONS: usize = 20;
/// Shortest `interval` (a faster loop would only burn the GitLab rate limit).
pub const MIN_INTERVAL: &str = "10s";
/// `interval` when none is given.
pub const DEFAULT_INTERVAL: &str = "1m";
/// `limits.maxActionsPerRun` when none is given.
pub const DEFAULT_MAX_ACTIONS_PER_RUN: u32 = 20;
/// `limits.maxActionsPerHour` when none is given.
pub const DEFAULT_MAX_ACTIONS_PER_HOUR: u32 = 200;

/// Which GitLab jobs to remediate, and how.
///
/// Rules are evaluated in order for every job of the listed projects; the first rule that
/// matches a job (and whose action can apply to it) decides what happens to it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "jobwarden.dev",
    version = "v1alpha1",
    kind = "JobPolicy",
    plural = "jobpolicies",
    namespaced,
    shortname = "jp",
    status = "JobPolicyStatus",
    derive = "PartialEq",
    doc = "A JobPolicy keeps the GitLab CI jobs of some projects healthy: it retries transient failures, cancels stale jobs, plays manual jobs and keeps artifacts, by ordered rules.",
    // Printer columns in kube's raw JSON form: the `printcolumn(type_ = …)` form trips clippy's
    // `duplicated_attributes` lint when two columns share a type.
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Projects", "type": "integer", "jsonPath": ".status.projects"}"#,
    printcolumn = r#"{"name": "Dry-Run", "type": "boolean", "jsonPath": ".spec.dryRun"}"#,
    printcolumn = r#"{"name": "Retried", "type": "integer", "jsonPath": ".status.counters.retried"}"#,
    printcolumn = r#"{"name": "Canceled", "type": "integer", "jsonPath": ".status.counters.canceled"}"#,
    printcolumn = r#"{"name": "Played", "type": "integer", "jsonPath": ".status.counters.played"}"#,
    printcolumn = r#"{"name": "Kept", "type": "integer", "jsonPath": ".status.counters.artifactsKept"}"#,
    printcolumn = r#"{"name": "Last Sync", "type": "date", "jsonPath": ".status.lastSyncTime"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.projects) || has(self.groups)",
        "message": "a policy needs spec.projects or spec.groups (or both)"
    },
    {
        "rule": "self.rules.all(r, self.rules.exists_one(o, o.name == r.name))",
        "message": "rule names must be unique"
    },
    {
        "rule": "!has(self.interval) || duration(self.interval) >= duration('10s')",
        "message": "interval must be at least 10s"
    },
    {
        "rule": "!has(self.resyncInterval) || duration(self.resyncInterval) >= duration(has(self.interval) ? self.interval : '1m')",
        "message": "resyncInterval must be at least interval"
    }
]))]
pub struct JobPolicySpec {
    /// The GitLab instance and the credentials to use.
    pub gitlab: GitlabConnection,

    /// Projects to watch: numeric ids (`"42"`) or full paths (`"group/project"`). Optional
    /// when `groups` is given; a policy needs at least one of the two.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = MAX_PROJECTS),
        inner(length(min = 1, max = 255), regex(pattern = PROJECT_PATTERN))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub projects: Vec<String>,

    /// GitLab groups whose projects to watch: every project of the group that is not archived
    /// (and, with `includeSubgroups`, of every group below it), listed again every
    /// `--group-refresh-interval` (default 5m). Projects shared with the group from elsewhere
    /// are not included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = MAX_GROUPS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["path"]))]
    pub groups: Vec<GroupTarget>,

    /// Globs on the full path of the projects listed from `groups` (`platform/legacy-*`;
    /// `*` matches `/` too, case-insensitive): a matching project is left out. Projects named
    /// in `projects` are always watched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exclude_projects: Vec<String>,

    /// How often the policy is reconciled (Go duration, at least 10s).
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,

    /// With GitLab Job Hooks delivered to jobwarden (`--webhook-listen`): how often a project
    /// whose hook can be relied on is listed in full anyway, to catch a lost delivery (Go
    /// duration, at least `interval`; e.g. ten times it). A hook is relied on when the project
    /// had a delivery within 24 h and its GitLab instance delivered anything within this
    /// interval. Between those listings a delivery is followed by at most one read of its job.
    /// Without it, or for a project without a delivery, every run lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub resync_interval: Option<String>,

    /// Decide and report, but never act.
    #[serde(default)]
    pub dry_run: bool,

    /// Stop reconciling; the status is kept.
    #[serde(default)]
    pub suspend: bool,

    /// A filter shared by every rule: a job must pass it before any rule looks at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobFilter>,

    /// Ordered rules; a job is handled by the first rule that matches it.
    #[schemars(length(min = 1, max = 32))]
    pub rules: Vec<Rule>,

    /// Safety brakes against runaway remediation.
    #[serde(default)]
    pub limits: Limits,
}

fn default_interval() -> String {
    DEFAULT_INTERVAL.to_owned()
}

/// A GitLab group whose projects a policy watches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupTarget {
    /// The group: its numeric id (`"42"`) or its full path (`"platform"`, `"platform/tools"`).
    #[schemars(length(min = 1, max = 255), regex(pattern = GROUP_PATTERN))]
    pub path: String,
    /// Also watch the projects of every subgroup, at any depth (default true).
    #[serde(default = "default_include_subgroups")]
    pub include_subgroups: bool,
}

fn default_include_subgroups() -> bool {
    true
}

/// Where GitLab is and how to authenticate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitlabConnection {
    /// Base URL of the instance, e.g. `https://gitlab.example.com` (the API is `<url>/api/v4`).
    #[schemars(
        regex(pattern = GITLAB_URL_PATTERN),
        length(max = 2048)
    )]
    pub url: String,

    /// The Secret (in the policy's own namespace) holding a GitLab API token with the `api` scope.
    pub token_secret_ref: SecretKeyRef,

    /// A Secret (in the policy's own namespace) holding PEM CA certificates to trust for `url`,
    /// on top of the system roots and the controller's `--ca-bundle` (for a private CA). The
    /// policy does not run while the Secret or key is missing or holds no valid certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,

    /// A Secret (in the policy's own namespace) holding the secret token of the GitLab
    /// webhook that delivers Job Hooks for this policy's projects (`X-Gitlab-Token`), so that
    /// each team configures its own. Deliveries are also accepted with the controller's token
    /// (`JOBWARDEN_WEBHOOK_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the policy's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = SECRET_NAME_PATTERN),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(min = 1, max = 253))]
    pub key: String,
}

/// Globs on job fields; every list that is given must match (a job passes a list when any glob
/// in it matches). `*` matches any run of characters, `/` included; `?`, `[abc]` and `{a,b}`
/// work as in shell globs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobFilter {
    /// Globs on the job's ref (branch or tag name), e.g. `main`, `release/*`, `v1.*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub refs: Vec<String>,
    /// Globs on the job's name, e.g. `rspec*`, `deploy-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
    /// Globs on the job's stage, e.g. `test`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub stages: Vec<String>,
}

/// One rule: a match and exactly one action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.retry), has(self.cancel), has(self.play), has(self.keepArtifacts)].filter(x, x).size() == 1",
        "message": "a rule must have exactly one action: retry, cancel, play or keepArtifacts"
    }
]))]
pub struct Rule {
    /// Name of the rule, unique in the policy; it appears in status, events and metrics.
    #[schemars(
        regex(pattern = RULE_NAME_PATTERN),
        length(min = 1, max = 63)
    )]
    pub name: String,

    /// Conditions that must all hold. `match: {}` matches every job that passes `spec.jobs`.
    #[serde(rename = "match")]
    pub matches: RuleMatch,

    /// Retry the job (only its latest attempt, at most `limit` times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryAction>,

    /// Cancel the job (only while it is still cancelable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelAction>,

    /// Play the job (only while it is still manual or scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play: Option<PlayAction>,

    /// Keep the job's artifacts from expiring (only while an expiry is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_artifacts: Option<KeepArtifactsAction>,
}

/// The conditions of a rule; every condition that is given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.failureReasons) || !has(self.statuses) || self.statuses.exists(s, s == 'failed')",
        "message": "failureReasons only match failed jobs: add failed to statuses (or leave statuses out)"
    }
]))]
pub struct RuleMatch {
    /// The job's status is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 13))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub statuses: Vec<JobStatusName>,

    /// The job failed with one of these reasons. Aliases match both ways:
    /// `stuck_or_timeout_failure` covers `stuck_pending_with_matching_runners`,
    /// `stuck_pending_no_matching_runners`, `no_updates_running`, `no_updates_canceling`, and
    /// `job_execution_timeout` covers `server_timeout_running`, `server_timeout_canceling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 64),
        inner(regex(pattern = FAILURE_REASON_PATTERN), length(min = 1, max = 128))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub failure_reasons: Vec<String>,

    /// Globs on the job's ref (in addition to `spec.jobs.refs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub refs: Vec<String>,

    /// Globs on the job's name (in addition to `spec.jobs.names`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,

    /// Globs on the job's stage (in addition to `spec.jobs.stages`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub stages: Vec<String>,

    /// `true`: only jobs of tag pipelines; `false`: only jobs of branch pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<bool>,

    /// `true`: only jobs allowed to fail; `false`: only jobs not allowed to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,

    /// The job has been in its current state at least this long (Go duration): a pending job
    /// since it was queued, a running job since it started, any other since it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub older_than: Option<String>,

    /// The job finished at most this long ago (Go duration; `finished_at` is within it). A job
    /// that has not finished does not match. On a retry rule it keeps a first run, or a restart
    /// after an outage, from re-running pipelines that failed long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub finished_within: Option<String>,

    /// `true`: a newer pipeline on the same ref already has a job of the same name;
    /// `false`: no such newer job exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<bool>,

    /// Conditions on the job's pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineMatch>,

    /// Only while the clock is inside this weekly window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,

    /// The job's artifacts expire within this duration from now (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub artifacts_expire_within: Option<String>,

    /// A regular expression (Rust `regex` syntax) searched in the tail of the job log. The log
    /// is read only for jobs that already match every other condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub log_pattern: Option<String>,
}

/// A job status, as GitLab names it.
///
/// One of GitLab's known statuses ([`JobStatus::KNOWN`],
/// where the statuses and their names are defined once): a rule cannot name a status GitLab
/// does not have, so an unknown name is refused when the policy is read, and the CRD schema lists
/// the known names as its `enum`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobStatusName(JobStatus);

impl JobStatusName {
    /// The name of `status`, if GitLab knows it (`None` for `JobStatus::Other`).
    pub fn new(status: JobStatus) -> Option<JobStatusName> {
        (!matches!(status, JobStatus::Other(_))).then_some(JobStatusName(status))
    }

    /// The model status this name stands for.
    pub fn to_status(&self) -> JobStatus {
        self.0
    }
}

impl Serialize for JobStatusName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for JobStatusName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        JobStatusName::new(JobStatus::parse(&name))
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, JobStatus::known_names()))
    }
}

impl JsonSchema for JobStatusName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JobStatusName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = serde_json::Map::new();
        schema.insert(
            "description".into(),
            "A job status, as GitLab names it.".into(),
        );
        schema.insert("type".into(), "string".into());
        schema.insert("enum".into(), JobStatus::known_names().into());
        schemars::Schema::from(schema)
    }
}

/// Conditions on the job's pipeline (read from the pipeline's job list).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMatch {
    /// Every latest job of each of these stages succeeded. A stage without jobs does not count
    /// as succeeded.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub stages_succeeded: Vec<String>,
}

/// A weekly time window: on each of `days`, from `from` (inclusive) to `to` (exclusive) in
/// `timeZone`. When `to` is earlier than `from` the window wraps past midnight into the next
/// day (a Fri 22:00–06:00 window includes Saturday 05:00). `24:00` as `to` is the end of the day.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.from) || !has(self.to) || self.from != self.to",
        "message": "from and to must differ (leave both out, or use from: \"00:00\" and to: \"24:00\", for the whole day)"
    }
]))]
pub struct TimeWindow {
    /// The days the window opens on (all seven when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 7))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,
    /// Opening time `HH:MM`, inclusive (`00:00` when absent). Quote it in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CLOCK_TIME_PATTERN))]
    pub from: Option<String>,
    /// Closing time `HH:MM` or `24:00`, exclusive (`24:00` when absent). Quote it in YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CLOCK_END_PATTERN))]
    pub to: Option<String>,
    /// An IANA time zone such as `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
}

/// The time zone of a window that names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.to_owned()
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The jiff weekday this name stands for.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as W;
        match self {
            Weekday::Mon => W::Monday,
            Weekday::Tue => W::Tuesday,
            Weekday::Wed => W::Wednesday,
            Weekday::Thu => W::Thursday,
            Weekday::Fri => W::Friday,
            Weekday::Sat => W::Saturday,
            Weekday::Sun => W::Sunday,
        }
    }
}

/// Retry the job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryAction {
    /// Retries beyond the first attempt (1–20). Attempts are counted from GitLab (jobs with the
    /// same name in the same pipeline), so a restart never retries twice.
    #[schemars(range(min = 1, max = 20))]
    pub limit: u32,
    /// Wait before each retry; without it a job is retried as soon as it is seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Exponential backoff: attempt n is retried no earlier than
/// `finished_at + duration * factor^(n-1)`, capped by `maxDuration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.maxDuration) || duration(self.maxDuration) >= duration(self.duration)",
        "message": "maxDuration must not be shorter than duration"
    }
]))]
pub struct Backoff {
    /// Wait after the first attempt finished (Go duration).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    /// Growth per attempt (1–10; 1 is a constant wait).
    #[serde(default = "default_backoff_factor")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub factor: f64,
    /// The longest wait (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_duration: Option<String>,
}

fn default_backoff_factor() -> f64 {
    2.0
}

/// Cancel the job. No options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct CancelAction {}

/// Play (trigger) a manual job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlayAction {
    /// CI/CD variables passed to the job (`job_variables_attributes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub variables: Vec<PlayVariable>,
}

/// One CI/CD variable of a played job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PlayVariable {
    /// Variable name: letters, digits and `_`.
    #[schemars(regex(pattern = VARIABLE_KEY_PATTERN), length(min = 1, max = 255))]
    pub key: String,
    /// Variable value.
    #[schemars(length(max = 10000))]
    pub value: String,
}

/// Keep the job's artifacts (they no longer expire). No options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KeepArtifactsAction {}

/// Safety brakes. Decisions beyond a limit are reported as skipped and decided again next run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most actions in one reconcile (0 stops all actions).
    #[serde(default = "default_max_actions_per_run")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_actions_per_run: u32,
    /// Most actions in any rolling hour (0 stops all actions).
    #[serde(default = "default_max_actions_per_hour")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_actions_per_hour: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_actions_per_run: DEFAULT_MAX_ACTIONS_PER_RUN,
            max_actions_per_hour: DEFAULT_MAX_ACTIONS_PER_HOUR,
        }
    }
}

fn default_max_actions_per_run() -> u32 {
    DEFAULT_MAX_ACTIONS_PER_RUN
}

fn default_max_actions_per_hour() -> u32 {
    DEFAULT_MAX_ACTIONS_PER_HOUR
}

/// What jobwarden reports back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPolicyStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (reasons `Reconciled`, `InvalidSpec`, `GitLabError`, `Suspended`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the policy was last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// How many projects the policy covered at its last reconcile: `projects` and the projects
    /// of its `groups`, less `excludeProjects`, each counted once (a count, not the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<u64>,
    /// Actions taken since the policy was created.
    #[serde(default)]
    pub counters: ActionCounters,
    /// The latest actions, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent_actions: Vec<ActionRecord>,
    /// With project sharding (`--shard-count` above 1): each shard's own report, under its
    /// index (`"0"`, `"1"`, …), written by that shard only. The fields above are then the
    /// merge of these entries, written by shard 0 only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub shards: BTreeMap<String, ShardStatus>,
}

/// One shard's report on a policy: the same fields as the policy's status, over the projects of
/// that shard. (A separate type: a CRD schema cannot nest a type in itself.)
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// The `metadata.generation` this shard last worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// This shard's `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When this shard last reconciled the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// How many of the policy's projects are this shard's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<u64>,
    /// Actions this shard took.
    #[serde(default)]
    pub counters: ActionCounters,
    /// This shard's latest actions, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent_actions: Vec<ActionRecord>,
}

impl From<JobPolicyStatus> for ShardStatus {
    /// A shard's report as the status functions compute it (its `shards` are dropped).
    fn from(status: JobPolicyStatus) -> ShardStatus {
        ShardStatus {
            observed_generation: status.observed_generation,
            conditions: status.conditions,
            last_sync_time: status.last_sync_time,
            projects: status.projects,
            counters: status.counters,
            recent_actions: status.recent_actions,
        }
    }
}

impl From<ShardStatus> for JobPolicyStatus {
    /// A shard's report as the status functions take it.
    fn from(entry: ShardStatus) -> JobPolicyStatus {
        JobPolicyStatus {
            observed_generation: entry.observed_generation,
            conditions: entry.conditions,
            last_sync_time: entry.last_sync_time,
            projects: entry.projects,
            counters: entry.counters,
            recent_actions: entry.recent_actions,
            shards: BTreeMap::new(),
        }
    }
}

/// Totals of actions taken.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionCounters {
    /// Jobs retried.
    #[serde(default)]
    pub retried: u64,
    /// Jobs canceled.
    #[serde(default)]
    pub canceled: u64,
    /// Jobs played.
    #[serde(default)]
    pub played: u64,
    /// Jobs whose artifacts were kept.
    #[serde(default)]
    pub artifacts_kept: u64,
    /// Decisions skipped because a limit was reached.
    #[serde(default)]
    pub skipped_over_budget: u64,
}

/// One action jobwarden took (or would have taken, in dry-run).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// When the action was taken.
    pub time: Time,
    /// The project, as written in `spec.projects`.
    pub project: String,
    /// The job acted on.
    pub job_id: u64,
    /// Its name.
    pub job_name: String,
    /// The rule that decided.
    pub rule: String,
    /// What was done.
    pub action: ActionKind,
    /// How it went.
    pub outcome: ActionOutcome,
    /// The new job a retry (or play of a finished job) created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_job_id: Option<u64>,
    /// Details, e.g. GitLab's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The kinds of action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Retry,
    Cancel,
    Play,
    KeepArtifacts,
}

impl ActionKind {
    /// Every kind, in declaration order.
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Retry,
        ActionKind::Cancel,
        ActionKind::Play,
        ActionKind::KeepArtifacts,
    ];

    /// The name used in status, events, logs and the `action` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Retry => "retry",
            ActionKind::Cancel => "cancel",
            ActionKind::Play => "play",
            ActionKind::KeepArtifacts => "keep_artifacts",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of an action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ActionOutcome {
    /// GitLab accepted the call.
    Succeeded,
    /// GitLab accepted the call, but the job did not change (it had already finished).
    Noop,
    /// GitLab refused or failed the call.
    Failed,
    /// GitLab gave no clear answer and the job showed no change yet: the call may still land,
    /// so the job is left alone for a while and then re-read.
    InDoubt,
    /// Not acted on: the policy is in dry-run.
    DryRun,
    /// Not acted on: a limit was reached; decided again next run.
    SkippedOverBudget,
}

impl ActionOutcome {
    /// The name used in status, events, logs and the `outcome` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Succeeded => "Succeeded",
            ActionOutcome::Noop => "Noop",
            ActionOutcome::Failed => "Failed",
            ActionOutcome::InDoubt => "InDoubt",
            ActionOutcome::DryRun => "DryRun",
            ActionOutcome::SkippedOverBudget => "SkippedOverBudget",
        }
    }
}

impl fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Converts a timestamp of the crate's clock into the Kubernetes `Time` of the status.
pub fn kube_time(ts: jiff::Timestamp) -> Time {
    // k8s-openapi carries its own jiff major version; the nanosecond count is the bridge.
    let nanos = ts.as_nanosecond();
    Time(k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).unwrap_or_default())
}

/// Renders the `CustomResourceDefinition` of `JobPolicy` as YAML (what `jobwarden crd` prints
/// and `crds/jobpolicy.yaml` holds).
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&JobPolicy::crd())
        .expect("a CustomResourceDefinition built from static types always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_status_is_a_name_and_round_trips() {
        for status in JobStatus::KNOWN {
            let name = JobStatusName::new(status).expect("a known status");
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            let back: JobStatusName = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_status(), status);
        }
    }

    #[test]
    fn an_unknown_status_cannot_be_named() {
        assert_eq!(JobStatusName::new(JobStatus::Other("bogus".into())), None);
        let err = serde_json::from_str::<JobStatusName>("\"bogus\"").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown variant `bogus`, expected one of `created`, `waiting_for_resource`"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_schema_lists_the_known_names() {
        let schema = schemars::schema_for!(JobStatusName);
        let names: Vec<&str> = schema
            .get("enum")
            .and_then(serde_json::Value::as_array)
            .expect("an enum")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        let known: Vec<&str> = JobStatus::KNOWN.iter().map(JobStatus::as_str).collect();
        assert_eq!(names, known);
    }
}
