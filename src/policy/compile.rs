//! Spec → checked policy: globs and regexes compiled once, durations parsed, time zones
//! resolved, projects parsed. Every problem is reported, each with the field it is about, and
//! every check of the CRD schema is repeated here so that a policy loaded from a file (no
//! apiserver) is held to the same rules.

use super::duration::parse_go_duration;
use super::reasons::FailureReasonSet;
use super::window::{ClockTime, Window};
use crate::crd::{self, JobFilter, JobPolicySpec, Limits, RuleMatch, SecretKeyRef};
use crate::gitlab::models::{GroupRef, JobStatus, ProjectRef};
use crate::gitlab::records::JobRecord;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use jiff::SignedDuration;
use regex::{Regex, RegexBuilder};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::LazyLock;

/// Identifies a policy: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> PolicyKey {
        PolicyKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One problem with a spec, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field as the user writes it, e.g. `spec.rules[1].match.logPattern`.
    pub path: String,
    /// What is wrong, e.g. `regex parse error: …`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A list of globs; a value passes when any glob matches. `*` matches `/` too.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    set: GlobSet,
}

impl GlobList {
    /// True when any glob matches `value`.
    pub fn matches(&self, value: &str) -> bool {
        self.set.is_match(value)
    }

    /// The globs as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// A group a policy watches (`spec.groups[]`), checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupSelection {
    /// The group, by id or full path.
    pub group: GroupRef,
    /// Whether the projects of its subgroups (at any depth) are watched too.
    pub include_subgroups: bool,
}

/// Globs on a job's ref, name and stage; each list that is present must match.
#[derive(Debug, Clone, Default)]
pub struct JobGlobs {
    pub refs: Option<GlobList>,
    pub names: Option<GlobList>,
    pub stages: Option<GlobList>,
}

impl JobGlobs {
    /// True when the job passes every list.
    pub fn matches(&self, job: &JobRecord) -> bool {
        let pass =
            |list: &Option<GlobList>, value: &str| list.as_ref().is_none_or(|l| l.matches(value));
        pass(&self.refs, job.git_ref())
            && pass(&self.names, job.name())
            && pass(&self.stages, job.stage())
    }
}

/// The conditions of a rule, compiled. Empty lists and `None` impose nothing.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub statuses: Vec<JobStatus>,
    pub failure_reasons: Option<FailureReasonSet>,
    pub globs: JobGlobs,
    pub tag: Option<bool>,
    pub allow_failure: Option<bool>,
    pub older_than: Option<SignedDuration>,
    pub finished_within: Option<SignedDuration>,
    pub superseded: Option<bool>,
    pub stages_succeeded: Vec<String>,
    pub window: Option<Window>,
    pub artifacts_expire_within: Option<SignedDuration>,
    pub log_pattern: Option<Regex>,
}

/// Exponential backoff between retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSchedule {
    pub base: SignedDuration,
    pub factor: f64,
    pub max: Option<SignedDuration>,
}

impl BackoffSchedule {
    /// How long after attempt `attempt` (1-based) finished it may be retried:
    /// `base * factor^(attempt-1)`, capped by `max`.
    pub fn delay(&self, attempt: u32) -> SignedDuration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.factor.powi(exponent);
        let raw = SignedDuration::try_from_secs_f64(secs).unwrap_or(SignedDuration::MAX);
        match self.max {
            Some(max) if raw > max => max,
            _ => raw,
        }
    }
}

/// What a rule does to the jobs it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    Retry {
        limit: u32,
        backoff: Option<BackoffSchedule>,
    },
    Cancel,
    Play {
        variables: Vec<(String, String)>,
    },
    KeepArtifacts,
}

impl RuleAction {
    /// Statuses a job can have for this action to apply, `None` for any.
    pub fn applicable_statuses(&self) -> Option<Vec<JobStatus>> {
        match self {
            RuleAction::Retry { .. } => Some(vec![
                JobStatus::Success,
                JobStatus::Failed,
                JobStatus::Canceled,
            ]),
            RuleAction::Cancel => Some(
                JobStatus::KNOWN
                    .iter()
                    .filter(|s| s.is_cancelable())
                    .copied()
                    .collect(),
            ),
            RuleAction::Play { .. } => Some(vec![JobStatus::Manual, JobStatus::Scheduled]),
            RuleAction::KeepArtifacts => None,
        }
    }
}

/// A rule, compiled.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    pub conditions: Conditions,
    pub action: RuleAction,
}

/// A checked policy, ready for [`super::decide()`].
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub key: PolicyKey,
    pub gitlab_url: url::Url,
    pub token_secret_ref: SecretKeyRef,
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// `spec.gitlab.webhookSecretRef`.
    pub webhook_secret_ref: Option<SecretKeyRef>,
    pub projects: Vec<ProjectRef>,
    /// `spec.groups`: the groups whose active projects the policy watches too.
    pub groups: Vec<GroupSelection>,
    /// `spec.excludeProjects`, compiled (case-insensitive): the group projects left out, by
    /// full path.
    pub exclude_projects: Option<GlobList>,
    pub interval: std::time::Duration,
    /// `spec.resyncInterval`: with webhooks, how often a project is listed in full anyway.
    pub resync_interval: Option<std::time::Duration>,
    pub dry_run: bool,
    pub suspend: bool,
    /// `spec.jobs`: every rule sees only jobs that pass it.
    pub filter: JobGlobs,
    pub rules: Vec<CompiledRule>,
    pub limits: Limits,
    /// A digest of `spec.jobs` and `spec.rules`: what decides which jobs the policy wants. An
    /// observer lists its project again when a policy with new rules starts watching it.
    pub rules_fingerprint: u64,
}

impl CompiledPolicy {
    /// The statuses of the jobs some rule could act on, or `None` when a rule may act on any
    /// status or needs to see every job (`superseded` compares a job with newer ones of any
    /// status). The engine may use it for server-side `scope[]` filters.
    pub fn statuses_of_interest(&self) -> Option<BTreeSet<JobStatus>> {
        if self
            .rules
            .iter()
            .any(|rule| rule.conditions.superseded.is_some())
        {
            return None;
        }
        self.statuses_acted_on()
    }

    /// The statuses of the jobs some rule could act on, or `None` when a rule may act on any
    /// status. A rule with `superseded` also counts `created`: a job new to jobwarden (its first
    /// Job Hook delivery says `created`) may supersede the jobs the rule acts on.
    pub fn statuses_acted_on(&self) -> Option<BTreeSet<JobStatus>> {
        let mut all = BTreeSet::new();
        for rule in &self.rules {
            if rule.conditions.superseded.is_some() {
                all.insert(JobStatus::Created);
            }
            let applicable = rule.action.applicable_statuses();
            let statuses: Vec<JobStatus> = match (&applicable, rule.conditions.statuses.is_empty())
            {
                (None, true) => return None,
                (None, false) => rule.conditions.statuses.clone(),
                (Some(app), true) => app.clone(),
                (Some(app), false) => rule
                    .conditions
                    .statuses
                    .iter()
                    .filter(|s| app.contains(s))
                    .copied()
                    .collect(),
            };
            all.extend(statuses);
        }
        Some(all)
    }
}

/// The CRD's rule name pattern (a DNS label), compiled once for every check that needs it.
pub(crate) static RULE_NAME: LazyLock<Regex> =
    LazyLock::new(|| static_regex(crd::RULE_NAME_PATTERN));
/// The CRD's Secret name pattern (a DNS subdomain), compiled once for every check that needs it.
pub(crate) static SECRET_NAME: LazyLock<Regex> =
    LazyLock::new(|| static_regex(crd::SECRET_NAME_PATTERN));
static GROUP: LazyLock<Regex> = LazyLock::new(|| static_regex(crd::GROUP_PATTERN));
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| static_regex(crd::SECRET_KEY_PATTERN));
static VARIABLE_KEY: LazyLock<Regex> = LazyLock::new(|| static_regex(crd::VARIABLE_KEY_PATTERN));
static FAILURE_REASON: LazyLock<Regex> =
    LazyLock::new(|| static_regex(crd::FAILURE_REASON_PATTERN));

fn static_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the CRD's own patterns are valid regexes")
}

/// Upper bound of the compiled size of a `logPattern` (the regex crate's own guard against
/// patterns that explode in size).
const LOG_PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Collects errors with their paths.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Checks a spec and compiles it. On failure every problem is returned, not just the first.
pub fn compile(key: PolicyKey, spec: &JobPolicySpec) -> Result<CompiledPolicy, SpecErrors> {
    let mut errors = Errors::default();

    let gitlab_url = check_url(&spec.gitlab.url, "spec.gitlab.url", &mut errors);
    check_secret_ref(
        &spec.gitlab.token_secret_ref,
        "spec.gitlab.tokenSecretRef",
        &mut errors,
    );
    if let Some(ca) = &spec.gitlab.ca_bundle_secret_ref {
        check_secret_ref(ca, "spec.gitlab.caBundleSecretRef", &mut errors);
    }
    if let Some(webhook) = &spec.gitlab.webhook_secret_ref {
        check_secret_ref(webhook, "spec.gitlab.webhookSecretRef", &mut errors);
    }
    let projects = compile_projects(&spec.projects, &mut errors);
    let groups = compile_groups(&spec.groups, &mut errors);
    if spec.projects.is_empty() && spec.groups.is_empty() {
        errors.add(
            "spec.projects",
            "a policy needs spec.projects or spec.groups (or both): name at least one project or group",
        );
    }
    let exclude_projects = compile_globs_with(
        &spec.exclude_projects,
        "spec.excludeProjects",
        GlobCase::Insensitive,
        &mut errors,
    );
    let interval = compile_interval(&spec.interval, &mut errors);
    let resync_interval = spec
        .resync_interval
        .as_deref()
        .and_then(|raw| compile_resync_interval(raw, interval, &mut errors));
    let filter = spec
        .jobs
        .as_ref()
        .map(|jobs| compile_job_filter(jobs, "spec.jobs", &mut errors))
        .unwrap_or_default();
    let rules = compile_rules(&spec.rules, &mut errors);
    check_limits(&spec.limits, &mut errors);

    match (errors.0.is_empty(), gitlab_url, interval) {
        (true, Some(gitlab_url), Some(interval)) => Ok(CompiledPolicy {
            key,
            gitlab_url,
            token_secret_ref: spec.gitlab.token_secret_ref.clone(),
            ca_bundle_secret_ref: spec.gitlab.ca_bundle_secret_ref.clone(),
            webhook_secret_ref: spec.gitlab.webhook_secret_ref.clone(),
            projects,
            groups,
            exclude_projects,
            interval,
            resync_interval,
            dry_run: spec.dry_run,
            suspend: spec.suspend,
            filter,
            rules,
            limits: spec.limits.clone(),
            rules_fingerprint: fingerprint(&(&spec.jobs, &spec.rules)),
        }),
        _ => Err(SpecErrors { errors: errors.0 }),
    }
}

/// A stable digest of a serializable value (its JSON form).
fn fingerprint(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

fn check_url(raw: &str, path: &str, errors: &mut Errors) -> Option<url::Url> {
    if raw.len() > 2048 {
        errors.add(path, "must be at most 2048 characters");
        return None;
    }
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(err) => {
            errors.add(path, format!("invalid URL: {err}"));
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "http" | "https") {
        errors.add(
            path,
            format!("scheme must be http or https, not {:?}", url.scheme()),
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        errors.add(path, "must name a host");
        ok = false;
    }
    if url.query().is_some() || url.fragment().is_some() {
        errors.add(path, "must not have a query or fragment");
        ok = false;
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.add(path, "must not carry credentials (use tokenSecretRef)");
        ok = false;
    }
    ok.then_some(url)
}

fn check_secret_ref(r: &SecretKeyRef, path: &str, errors: &mut Errors) {
    if r.name.is_empty() || r.name.len() > 253 || !SECRET_NAME.is_match(&r.name) {
        errors.add(
            format!("{path}.name"),
            "must be a Secret name: lowercase letters, digits, '-' and '.', at most 253 characters",
        );
    }
    if r.key.is_empty() || r.key.len() > 253 || !SECRET_KEY.is_match(&r.key) {
        errors.add(
            format!("{path}.key"),
            "must be a Secret key: letters, digits, '-', '_' and '.', at most 253 characters",
        );
    }
}

fn compile_projects(projects: &[String], errors: &mut Errors) -> Vec<ProjectRef> {
    check_count(
        projects.len(),
        crd::MAX_PROJECTS,
        "spec.projects",
        "projects",
        errors,
    );
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(projects.len());
    for (i, p) in projects.iter().enumerate() {
        let path = format!("spec.projects[{i}]");
        if !seen.insert(p.as_str()) {
            errors.add(&path, format!("duplicate project {p:?}"));
            continue;
        }
        let is_full_path = |p: &str| {
            p.contains('/')
                && !p.starts_with('/')
                && !p.ends_with('/')
                && !p.contains("//")
                && !p.chars().any(char::is_whitespace)
        };
        if check_reference(p, &path, is_full_path, "group/project", errors) {
            out.push(ProjectRef::parse(p));
        }
    }
    out
}

fn compile_groups(groups: &[crd::GroupTarget], errors: &mut Errors) -> Vec<GroupSelection> {
    check_count(
        groups.len(),
        crd::MAX_GROUPS,
        "spec.groups",
        "groups",
        errors,
    );
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(groups.len());
    for (i, target) in groups.iter().enumerate() {
        let path = format!("spec.groups[{i}].path");
        let raw = target.path.as_str();
        // GitLab finds groups by full path case-insensitively.
        if !seen.insert(raw.to_ascii_lowercase()) {
            errors.add(&path, format!("duplicate group {raw:?}"));
            continue;
        }
        let is_full_path = |g: &str| GROUP.is_match(g);
        if check_reference(raw, &path, is_full_path, "group/subgroup", errors) {
            out.push(GroupSelection {
                group: GroupRef::parse(raw),
                include_subgroups: target.include_subgroups,
            });
        }
    }
    out
}

/// Reports a list of more than `max` entries.
fn check_count(len: usize, max: usize, path: &str, noun: &str, errors: &mut Errors) {
    if len > max {
        errors.add(path, format!("must name at most {max} {noun}"));
    }
}

/// Reports a list of more than `max` `noun` (`must have at most …`).
fn check_entries(len: usize, max: usize, path: &str, noun: &str, errors: &mut Errors) {
    if len > max {
        errors.add(path, format!("must have at most {max} {noun}"));
    }
}

/// Checks a project or group as written: 1 to 255 characters, and a numeric id or a full path
/// (`is_full_path`; `example` shows one in the message). True when it is fine.
fn check_reference(
    raw: &str,
    path: &str,
    is_full_path: impl Fn(&str) -> bool,
    example: &str,
    errors: &mut Errors,
) -> bool {
    if raw.is_empty() || raw.len() > 255 {
        errors.add(path, "must be 1 to 255 characters");
        return false;
    }
    let is_id = raw.bytes().all(|b| b.is_ascii_digit());
    if !is_id && !is_full_path(raw) {
        errors.add(
            path,
            format!("{raw:?} is neither a numeric id nor a full path like {example}"),
        );
        return false;
    }
    true
}

fn compile_interval(raw: &str, errors: &mut Errors) -> Option<std::time::Duration> {
    let min = SignedDuration::from_secs(10);
    match parse_go_duration(raw) {
        Ok(d) if d < min => {
            errors.add("spec.interval", "must be at least 10s");
            None
        }
        Ok(d) => std::time::Duration::try_from(d).ok(),
        Err(err) => {
            errors.add("spec.interval", err.to_string());
            None
        }
    }
}

fn compile_resync_interval(
    raw: &str,
    interval: Option<std::time::Duration>,
    errors: &mut Errors,
) -> Option<std::time::Duration> {
    match parse_go_duration(raw) {
        Ok(d) => {
            let d = std::time::Duration::try_from(d).ok()?;
            if interval.is_some_and(|i| d < i) {
                errors.add("spec.resyncInterval", "must be at least interval");
                return None;
            }
            Some(d)
        }
        Err(err) => {
            errors.add("spec.resyncInterval", err.to_string());
            None
        }
    }
}

fn compile_job_filter(filter: &JobFilter, path: &str, errors: &mut Errors) -> JobGlobs {
    compile_job_globs(&filter.refs, &filter.names, &filter.stages, path, errors)
}

/// Globs on a job's ref, name and stage, checked under `{path}.refs`, `.names` and `.stages`.
fn compile_job_globs(
    refs: &[String],
    names: &[String],
    stages: &[String],
    path: &str,
    errors: &mut Errors,
) -> JobGlobs {
    JobGlobs {
        refs: compile_globs(refs, &format!("{path}.refs"), errors),
        names: compile_globs(names, &format!("{path}.names"), errors),
        stages: compile_globs(stages, &format!("{path}.stages"), errors),
    }
}

/// Whether a glob list tells upper from lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobCase {
    /// Job refs, names and stages: as GitLab spells them.
    Sensitive,
    /// Project paths: GitLab finds them case-insensitively.
    Insensitive,
}

fn compile_globs(patterns: &[String], path: &str, errors: &mut Errors) -> Option<GlobList> {
    compile_globs_with(patterns, path, GlobCase::Sensitive, errors)
}

fn compile_globs_with(
    patterns: &[String],
    path: &str,
    case: GlobCase,
    errors: &mut Errors,
) -> Option<GlobList> {
    if patterns.is_empty() {
        return None;
    }
    check_entries(patterns.len(), crd::MAX_GLOBS, path, "entries", errors);
    let mut builder = GlobSetBuilder::new();
    let mut seen = HashSet::new();
    let mut ok = true;
    for (i, p) in patterns.iter().enumerate() {
        let item = format!("{path}[{i}]");
        if !seen.insert(p.as_str()) {
            errors.add(&item, format!("duplicate value {p:?}"));
            ok = false;
            continue;
        }
        if p.is_empty() || p.len() > 255 {
            errors.add(&item, "must be 1 to 255 characters");
            ok = false;
            continue;
        }
        match GlobBuilder::new(p)
            .case_insensitive(case == GlobCase::Insensitive)
            .build()
        {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(err) => {
                errors.add(&item, format!("invalid glob: {}", err.kind()));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    match builder.build() {
        Ok(set) => Some(GlobList {
            patterns: patterns.to_vec(),
            set,
        }),
        Err(err) => {
            errors.add(path, format!("invalid globs: {err}"));
            None
        }
    }
}

fn compile_rules(rules: &[crd::Rule], errors: &mut Errors) -> Vec<CompiledRule> {
    if rules.is_empty() {
        errors.add("spec.rules", "must have at least one rule");
    }
    if rules.len() > crd::MAX_RULES {
        errors.add(
            "spec.rules",
            format!("must have at most {} rules", crd::MAX_RULES),
        );
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        if rule.name.is_empty() || rule.name.len() > 63 || !RULE_NAME.is_match(&rule.name) {
            errors.add(
                format!("{path}.name"),
                "must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
            );
        } else if !names.insert(rule.name.as_str()) {
            errors.add(
                format!("{path}.name"),
                format!(
                    "duplicate rule name {:?}: rule names must be unique",
                    rule.name
                ),
            );
        }
        let conditions = compile_match(&rule.matches, &format!("{path}.match"), errors);
        let action = compile_action(rule, &path, errors);
        if let Some(action) = action {
            out.push(CompiledRule {
                name: rule.name.clone(),
                conditions,
                action,
            });
        }
    }
    out
}

/// A rule's `match`, checked and compiled: each condition by its own step, every problem
/// reported under `path`.
fn compile_match(m: &RuleMatch, path: &str, errors: &mut Errors) -> Conditions {
    let statuses = compile_statuses(&m.statuses, path, errors);
    let failure_reasons = compile_failure_reasons(&m.failure_reasons, &statuses, path, errors);
    let globs = compile_job_globs(&m.refs, &m.names, &m.stages, path, errors);
    let older_than = m
        .older_than
        .as_deref()
        .and_then(|d| compile_duration(d, &format!("{path}.olderThan"), errors));
    let finished_within = m
        .finished_within
        .as_deref()
        .and_then(|d| compile_duration(d, &format!("{path}.finishedWithin"), errors));
    let artifacts_expire_within = m
        .artifacts_expire_within
        .as_deref()
        .and_then(|d| compile_duration(d, &format!("{path}.artifactsExpireWithin"), errors));
    let stages_succeeded = m
        .pipeline
        .as_ref()
        .map(|p| compile_stages_succeeded(p, path, errors))
        .unwrap_or_default();
    let window = m
        .window
        .as_ref()
        .and_then(|w| compile_window(w, &format!("{path}.window"), errors));
    let log_pattern = m
        .log_pattern
        .as_deref()
        .and_then(|p| compile_log_pattern(p, &format!("{path}.logPattern"), errors));

    Conditions {
        statuses,
        failure_reasons,
        globs,
        tag: m.tag,
        allow_failure: m.allow_failure,
        older_than,
        finished_within,
        superseded: m.superseded,
        stages_succeeded,
        window,
        artifacts_expire_within,
        log_pattern,
    }
}

/// `match.statuses`, each once: a repeated status is reported and left out.
fn compile_statuses(
    names: &[crd::JobStatusName],
    path: &str,
    errors: &mut Errors,
) -> Vec<JobStatus> {
    let mut statuses = Vec::new();
    for (i, s) in names.iter().enumerate() {
        let status = s.to_status();
        if statuses.contains(&status) {
            errors.add(
                format!("{path}.statuses[{i}]"),
                format!("duplicate value {:?}", status.as_str()),
            );
        } else {
            statuses.push(status);
        }
    }
    statuses
}

/// `match.failureReasons` (`None` when there are none): each reason checked, and the rule's
/// `statuses` (already compiled) must let failed jobs through.
fn compile_failure_reasons(
    reasons: &[String],
    statuses: &[JobStatus],
    path: &str,
    errors: &mut Errors,
) -> Option<FailureReasonSet> {
    if reasons.is_empty() {
        return None;
    }
    check_entries(
        reasons.len(),
        crd::MAX_FAILURE_REASONS,
        &format!("{path}.failureReasons"),
        "entries",
        errors,
    );
    let mut seen = HashSet::new();
    for (i, r) in reasons.iter().enumerate() {
        let item = format!("{path}.failureReasons[{i}]");
        if r.is_empty() || r.len() > 128 || !FAILURE_REASON.is_match(r) {
            errors.add(
                &item,
                format!("{r:?} is not a failure reason (lowercase letters, digits and '_')"),
            );
        } else if !seen.insert(r.as_str()) {
            errors.add(&item, format!("duplicate value {r:?}"));
        }
    }
    if !statuses.is_empty() && !statuses.contains(&JobStatus::Failed) {
        errors.add(
            format!("{path}.failureReasons"),
            "failureReasons only match failed jobs: add failed to statuses (or leave statuses out)",
        );
    }
    Some(FailureReasonSet::new(reasons))
}

/// `match.pipeline.stagesSucceeded`, checked: 1 to 32 distinct stage names.
fn compile_stages_succeeded(
    p: &crd::PipelineMatch,
    path: &str,
    errors: &mut Errors,
) -> Vec<String> {
    let item = format!("{path}.pipeline.stagesSucceeded");
    if p.stages_succeeded.is_empty() {
        errors.add(&item, "must name at least one stage");
    }
    if p.stages_succeeded.len() > 32 {
        errors.add(&item, "must name at most 32 stages");
    }
    let mut seen = HashSet::new();
    for (i, s) in p.stages_succeeded.iter().enumerate() {
        if s.is_empty() || s.len() > 255 {
            errors.add(format!("{item}[{i}]"), "must be 1 to 255 characters");
        } else if !seen.insert(s.as_str()) {
            errors.add(format!("{item}[{i}]"), format!("duplicate value {s:?}"));
        }
    }
    p.stages_succeeded.clone()
}

/// `match.logPattern` (at `path`), compiled as a multi-line regex within
/// [`LOG_PATTERN_SIZE_LIMIT`].
fn compile_log_pattern(raw: &str, path: &str, errors: &mut Errors) -> Option<Regex> {
    if raw.is_empty() || raw.len() > crd::MAX_LOG_PATTERN_LEN {
        errors.add(
            path,
            format!("must be 1 to {} characters", crd::MAX_LOG_PATTERN_LEN),
        );
        return None;
    }
    match RegexBuilder::new(raw)
        .multi_line(true)
        .size_limit(LOG_PATTERN_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Some(re),
        Err(err) => {
            errors.add(path, regex_error_message(&err));
            None
        }
    }
}

/// The regex crate's messages span several lines (the pattern, a caret, the error); a field
/// error is one line.
fn regex_error_message(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => {
            let detail = text
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .map(|l| l.trim_start_matches("error:").trim())
                .unwrap_or(text.as_str());
            format!("regex parse error: {detail}")
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("regex too large: it compiles to more than {limit} bytes")
        }
        other => format!("regex error: {other}"),
    }
}

fn compile_duration(raw: &str, path: &str, errors: &mut Errors) -> Option<SignedDuration> {
    match parse_go_duration(raw) {
        Ok(d) => Some(d),
        Err(err) => {
            errors.add(path, err.to_string());
            None
        }
    }
}

fn compile_window(w: &crd::TimeWindow, path: &str, errors: &mut Errors) -> Option<Window> {
    let mut days = Vec::with_capacity(w.days.len());
    for (i, d) in w.days.iter().enumerate() {
        let day = d.to_jiff();
        if days.contains(&day) {
            errors.add(
                format!("{path}.days[{i}]"),
                format!("duplicate value {d:?}"),
            );
        } else {
            days.push(day);
        }
    }
    let from = match w.from.as_deref() {
        None => Some(ClockTime(0)),
        Some(s) => ClockTime::parse(s, false)
            .map_err(|e| errors.add(format!("{path}.from"), e))
            .ok(),
    };
    let to = match w.to.as_deref() {
        None => Some(ClockTime(super::window::MINUTES_PER_DAY)),
        Some(s) => ClockTime::parse(s, true)
            .map_err(|e| errors.add(format!("{path}.to"), e))
            .ok(),
    };
    let tz = if w.time_zone.is_empty() || w.time_zone.len() > 64 {
        errors.add(format!("{path}.timeZone"), "must be 1 to 64 characters");
        None
    } else {
        match jiff::tz::TimeZone::get(&w.time_zone) {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.add(
                    format!("{path}.timeZone"),
                    format!(
                        "unknown time zone {:?} (use an IANA name such as Europe/Berlin or UTC)",
                        w.time_zone
                    ),
                );
                None
            }
        }
    };
    let (from, to, tz) = (from?, to?, tz?);
    if from == to {
        errors.add(
            path.to_owned(),
            "from and to must differ (leave both out, or use from: \"00:00\" and to: \"24:00\", for the whole day)",
        );
        return None;
    }
    Some(Window::new(&days, from, to, tz, w.time_zone.clone()))
}

/// A rule's action, checked and compiled: exactly one must be given, and it must be valid.
fn compile_action(rule: &crd::Rule, path: &str, errors: &mut Errors) -> Option<RuleAction> {
    if !check_single_action(rule, path, errors) {
        return None;
    }
    if let Some(retry) = &rule.retry {
        return compile_retry(retry, path, errors);
    }
    if rule.cancel.is_some() {
        return Some(RuleAction::Cancel);
    }
    if let Some(play) = &rule.play {
        return compile_play(play, path, errors);
    }
    Some(RuleAction::KeepArtifacts)
}

/// Reports a rule with no action or with more than one. True when it has exactly one.
fn check_single_action(rule: &crd::Rule, path: &str, errors: &mut Errors) -> bool {
    let given: Vec<&str> = [
        rule.retry.as_ref().map(|_| "retry"),
        rule.cancel.as_ref().map(|_| "cancel"),
        rule.play.as_ref().map(|_| "play"),
        rule.keep_artifacts.as_ref().map(|_| "keepArtifacts"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() == 1 {
        return true;
    }
    let found = if given.is_empty() {
        "none".to_owned()
    } else {
        given.join(" and ")
    };
    errors.add(
        path.to_owned(),
        format!("a rule must have exactly one action: retry, cancel, play or keepArtifacts (found {found})"),
    );
    false
}

/// `retry` of the rule at `path`: its limit and, if given, its backoff. `None` when either is
/// invalid (every problem is reported).
fn compile_retry(retry: &crd::RetryAction, path: &str, errors: &mut Errors) -> Option<RuleAction> {
    let limit_ok = (1..=crd::MAX_RETRY_LIMIT).contains(&retry.limit);
    if !limit_ok {
        errors.add(
            format!("{path}.retry.limit"),
            format!("must be between 1 and {}", crd::MAX_RETRY_LIMIT),
        );
    }
    // The outer `None`: a backoff was given and is invalid.
    let backoff = match &retry.backoff {
        None => Some(None),
        Some(b) => compile_backoff(b, &format!("{path}.retry.backoff"), errors).map(Some),
    };
    match (limit_ok, backoff) {
        (true, Some(backoff)) => Some(RuleAction::Retry {
            limit: retry.limit,
            backoff,
        }),
        _ => None,
    }
}

/// `retry.backoff` (at `path`): a base duration, a factor and an optional cap no shorter than
/// the base. `None` when any part is invalid (every problem is reported).
fn compile_backoff(b: &crd::Backoff, path: &str, errors: &mut Errors) -> Option<BackoffSchedule> {
    let base = compile_duration(&b.duration, &format!("{path}.duration"), errors);
    let factor_ok = b.factor.is_finite() && (1.0..=crd::MAX_BACKOFF_FACTOR).contains(&b.factor);
    if !factor_ok {
        errors.add(
            format!("{path}.factor"),
            format!("must be between 1 and {}", crd::MAX_BACKOFF_FACTOR),
        );
    }
    // The outer `None`: a cap was given and is invalid.
    let max = match b.max_duration.as_deref() {
        None => Some(None),
        Some(raw) => compile_duration(raw, &format!("{path}.maxDuration"), errors).map(Some),
    };
    let (base, max) = (base?, max?);
    if max.is_some_and(|max| max < base) {
        errors.add(
            format!("{path}.maxDuration"),
            "maxDuration must not be shorter than duration",
        );
        return None;
    }
    factor_ok.then_some(BackoffSchedule {
        base,
        factor: b.factor,
        max,
    })
}

/// `play` of the rule at `path`: its variables, each checked. `None` when any is invalid.
fn compile_play(play: &crd::PlayAction, path: &str, errors: &mut Errors) -> Option<RuleAction> {
    let vpath = format!("{path}.play.variables");
    check_entries(
        play.variables.len(),
        crd::MAX_PLAY_VARIABLES,
        &vpath,
        "variables",
        errors,
    );
    let mut ok = true;
    let mut keys = HashSet::new();
    for (i, v) in play.variables.iter().enumerate() {
        ok &= check_play_variable(v, &format!("{vpath}[{i}]"), &mut keys, errors);
    }
    ok.then(|| RuleAction::Play {
        variables: play
            .variables
            .iter()
            .map(|v| (v.key.clone(), v.value.clone()))
            .collect(),
    })
}

/// One `play.variables[]` entry (at `path`): a valid key not in `keys` (it is added), and a
/// value of at most 10000 characters. True when it is fine.
fn check_play_variable<'a>(
    v: &'a crd::PlayVariable,
    path: &str,
    keys: &mut HashSet<&'a str>,
    errors: &mut Errors,
) -> bool {
    let mut ok = true;
    if v.key.is_empty() || v.key.len() > 255 || !VARIABLE_KEY.is_match(&v.key) {
        errors.add(
            format!("{path}.key"),
            "must be 1 to 255 letters, digits or '_'",
        );
        ok = false;
    } else if !keys.insert(v.key.as_str()) {
        errors.add(
            format!("{path}.key"),
            format!("duplicate variable {:?}", v.key),
        );
        ok = false;
    }
    if v.value.len() > 10_000 {
        errors.add(format!("{path}.value"), "must be at most 10000 characters");
        ok = false;
    }
    ok
}

fn check_limits(limits: &Limits, errors: &mut Errors) {
    if limits.max_actions_per_run > 10_000 {
        errors.add(
            "spec.limits.maxActionsPerRun",
            "must be between 0 and 10000",
        );
    }
    if limits.max_actions_per_hour > 100_000 {
        errors.add(
            "spec.limits.maxActionsPerHour",
            "must be between 0 and 100000",
        );
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
