//! The demo's banner: where everything listens, how fast the simulated clock runs, and which
//! policy watches which projects of the simulated fleet, doing what.

use crate::commands::output::{PolicyNames, column_width};
use crate::gitlab::models::{GroupRef, ProjectRef};
use crate::policy::{CompiledPolicy, PolicyKey, RuleAction};
use crate::source::files::{LoadedPolicy, load_manifests};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The annotation that says in a line what a policy does (Kubernetes' well-known
/// `kubernetes.io/description`; the examples have one).
pub const DESCRIPTION: &str = "kubernetes.io/description";

/// The simulated fleet: projects `1..=projects`, laid out by `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub projects: u32,
    pub seed: u64,
}

impl Fleet {
    fn ids(self) -> impl Iterator<Item = u64> {
        1..=u64::from(self.projects)
    }

    /// The fleet project a policy names, if the fleet has it.
    fn project(self, project: &ProjectRef) -> Option<u64> {
        match project {
            ProjectRef::Id(id) => self.ids().find(|i| i == id),
            ProjectRef::Path(path) => self
                .ids()
                .find(|i| crate::sim::project_path(self.seed, *i).eq_ignore_ascii_case(path)),
        }
    }

    /// The fleet projects a policy's groups give it (less `excludeProjects`); `None` when a
    /// group is named by id, which the banner does not resolve.
    fn group_projects(self, policy: &CompiledPolicy) -> Option<BTreeSet<u64>> {
        let mut ids = BTreeSet::new();
        for selection in &policy.groups {
            let GroupRef::Path(group) = &selection.group else {
                return None;
            };
            let group = group.to_ascii_lowercase();
            ids.extend(self.ids().filter(|id| {
                let path = crate::sim::project_path(self.seed, *id);
                let parent = crate::sim::project_group(self.seed, *id);
                let inside = parent == group
                    || (selection.include_subgroups && parent.starts_with(&format!("{group}/")));
                let excluded = policy
                    .exclude_projects
                    .as_ref()
                    .is_some_and(|globs| globs.matches(&path));
                inside && !excluded
            }));
        }
        Some(ids)
    }
}

/// One policy as the banner shows it.
#[derive(Debug, Clone)]
pub struct PolicyOverview {
    pub key: PolicyKey,
    /// The projects and groups it watches, as its manifest names them.
    pub watches: String,
    /// The fleet projects it watches; `None` when that is not known (a group named by id).
    pub fleet_projects: Option<BTreeSet<u64>>,
    /// The projects it names that the fleet does not have.
    pub missing: Vec<String>,
    /// What it does: its description, else its rules' actions; after `dry run: ` for a
    /// dry-run policy, `suspended: ` for a suspended one.
    pub does: String,
}

/// The policies at `paths` that compile (the runner reports the others), as the banner shows
/// them: those watching the lowest fleet projects first, then by name.
pub fn overviews(paths: &[PathBuf], fleet: Fleet) -> Vec<PolicyOverview> {
    let mut overviews: Vec<PolicyOverview> = load_manifests(paths)
        .policies
        .iter()
        .filter_map(|loaded| overview(loaded, fleet))
        .collect();
    overviews.sort_by_key(|o| {
        let first = o.fleet_projects.as_ref().and_then(|p| p.first().copied());
        (first.unwrap_or(u64::MAX), o.key.clone())
    });
    overviews
}

fn overview(loaded: &LoadedPolicy, fleet: Fleet) -> Option<PolicyOverview> {
    let policy = loaded.compiled.as_ref().ok()?;
    let mut watches: Vec<String> = policy.projects.iter().map(ToString::to_string).collect();
    watches.extend(policy.groups.iter().map(|g| {
        let subgroups = if g.include_subgroups { "/**" } else { "" };
        format!("group {}{subgroups}", g.group)
    }));
    let named: BTreeSet<u64> = policy
        .projects
        .iter()
        .filter_map(|p| fleet.project(p))
        .collect();
    let missing = policy
        .projects
        .iter()
        .filter(|p| fleet.project(p).is_none())
        .map(ToString::to_string)
        .collect();
    let fleet_projects = fleet
        .group_projects(policy)
        .map(|grouped| named.union(&grouped).copied().collect());
    let description = loaded
        .policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION))
        .map_or_else(|| rule_actions(policy), |d| d.trim().to_owned());
    let mode = match (policy.suspend, policy.dry_run) {
        (true, _) => "suspended: ",
        (false, true) => "dry run: ",
        (false, false) => "",
    };
    Some(PolicyOverview {
        key: policy.key.clone(),
        watches: watches.join(", "),
        fleet_projects,
        missing,
        does: format!("{mode}{description}"),
    })
}

/// What a policy without a description does: its rules' actions, `retry, cancel (3 rules)`.
fn rule_actions(policy: &CompiledPolicy) -> String {
    let mut actions: Vec<&str> = Vec::new();
    for rule in &policy.rules {
        let action = match rule.action {
            RuleAction::Retry { .. } => "retry",
            RuleAction::Cancel => "cancel",
            RuleAction::Play { .. } => "play",
            RuleAction::KeepArtifacts => "keep artifacts",
        };
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    let rules = policy.rules.len() as u64;
    format!("{} ({rules} rule{})", actions.join(", "), plural(rules))
}

/// Where the demo's parts listen.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub gitlab: url::Url,
    pub metrics: SocketAddr,
    pub hooks: String,
}

/// How the demo runs, for the banner.
#[derive(Debug, Clone)]
pub struct Setting {
    pub fleet: Fleet,
    pub speed: f64,
    pub interval: Duration,
    pub run_for: Option<Duration>,
    /// The policies' source: the embedded examples, or the `--policies` paths.
    pub source: String,
}

/// Prints the banner: where everything is, the simulated clock, and the policies (named by
/// `names`) with the projects each watches and what each does.
pub fn print(setting: &Setting, at: &Endpoints, policies: &[PolicyOverview], names: &PolicyNames) {
    println!("jobwarden demo: JobPolicies at work on a simulated GitLab\n");
    println!(
        "  simulated GitLab : {}api/v4  (a fleet of {} projects, seed {})",
        at.gitlab, setting.fleet.projects, setting.fleet.seed
    );
    println!(
        "  simulated clock  : {}× the wall clock: {} every wall second",
        setting.speed,
        simulated(Duration::from_secs(1), setting.speed)
    );
    println!("  metrics          : http://{}/metrics", at.metrics);
    println!(
        "  Job Hooks        : {} (the simulated GitLab delivers every job transition)\n",
        at.hooks
    );
    let namespace = names
        .shared_namespace()
        .map(|n| format!(" (namespace {n})"))
        .unwrap_or_default();
    println!(
        "{}{namespace}, each reconciled every {}s:",
        setting.source,
        setting.interval.as_secs()
    );
    print_policies(policies, names);
    if let Some(line) = unwatched(setting.fleet, policies) {
        println!("{line}");
    }
    let stop = setting
        .run_for
        .map(|d| {
            format!(
                "after {}s ({} simulated) or on Ctrl-C",
                d.as_secs(),
                simulated(d, setting.speed)
            )
        })
        .unwrap_or_else(|| "on Ctrl-C".to_owned());
    println!("\nEvery action as it happens, then a summary {stop}:");
}

/// The policy table of the banner: name, projects watched, what it does.
fn print_policies(policies: &[PolicyOverview], names: &PolicyNames) {
    let name_width = column_width("policy", policies.iter().map(|p| names.show(&p.key)));
    let watch_width = column_width("projects", policies.iter().map(|p| &p.watches));
    let row = |name: &str, watches: &str, does: &str| {
        println!("  {name:<name_width$}  {watches:<watch_width$}  {does}");
    };
    row("policy", "projects", "what it does");
    for policy in policies {
        row(&names.show(&policy.key), &policy.watches, &policy.does);
    }
    for policy in policies.iter().filter(|p| !p.missing.is_empty()) {
        println!(
            "  note: {} names what the simulated fleet does not have: {}",
            names.show(&policy.key),
            policy.missing.join(", ")
        );
    }
}

/// Which fleet projects no policy watches, when that is known.
fn unwatched(fleet: Fleet, policies: &[PolicyOverview]) -> Option<String> {
    let mut watched = BTreeSet::new();
    for policy in policies {
        watched.extend(policy.fleet_projects.as_ref()?.iter().copied());
    }
    let unwatched: Vec<String> = fleet
        .ids()
        .filter(|id| !watched.contains(id))
        .map(|id| id.to_string())
        .collect();
    Some(match unwatched.as_slice() {
        [] => "  Every project of the fleet is watched.".to_owned(),
        [one] => format!("  Project {one} of the fleet is watched by none."),
        [init @ .., last] => format!(
            "  Projects {} and {last} of the fleet are watched by none.",
            init.join(", ")
        ),
    })
}

/// `d` of wall time on the simulated clock running `speed` times faster, as [`spoken`].
fn simulated(d: Duration, speed: f64) -> String {
    spoken(Duration::try_from_secs_f64(d.as_secs_f64() * speed).unwrap_or_default())
}

/// A duration as a person says it, to the second: `30 seconds`, `5 minutes`, `2m30s`, `1h30m`.
pub fn spoken(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    match secs {
        0..60 => format!("{secs} second{}", plural(secs)),
        60..3600 if secs.is_multiple_of(60) => format!("{} minute{}", secs / 60, plural(secs / 60)),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: Fleet = Fleet {
        projects: 8,
        seed: 42,
    };

    const MANIFESTS: &str = "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata:
  name: described
  namespace: demo
  annotations: {kubernetes.io/description: ' retries what failed '}
spec:
  gitlab: {url: http://127.0.0.1:8080, tokenSecretRef: {name: t, key: token}}
  projects: ['3', 'Fleet/Project-1', '42']
  rules:
    - {name: retry-any, match: {statuses: [failed]}, retry: {limit: 1}}
---
apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {name: grouped, namespace: demo}
spec:
  gitlab: {url: http://127.0.0.1:8080, tokenSecretRef: {name: t, key: token}}
  groups: [{path: fleet/platform}]
  excludeProjects: ['fleet/platform/infra/*']
  dryRun: true
  rules:
    - {name: retry-any, match: {statuses: [failed]}, retry: {limit: 1}}
    - {name: cancel-old, match: {statuses: [pending], olderThan: 2h}, cancel: {}}
    - {name: cancel-new, match: {statuses: [created]}, cancel: {}}
---
apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {name: invalid, namespace: demo}
spec:
  gitlab: {url: http://127.0.0.1:8080, tokenSecretRef: {name: t, key: token}}
  projects: ['1']
  rules: [{name: nothing, match: {}}]
";

    #[test]
    fn fleet_projects_are_found_by_id_and_by_path() {
        assert_eq!(FLEET.project(&ProjectRef::Id(8)), Some(8));
        assert_eq!(FLEET.project(&ProjectRef::Id(9)), None);
        assert_eq!(
            FLEET.project(&ProjectRef::parse("Fleet/Project-3")),
            Some(3)
        );
        let path = crate::sim::project_path(42, 6);
        assert_eq!(FLEET.project(&ProjectRef::Path(path)), Some(6));
        assert_eq!(FLEET.project(&ProjectRef::parse("fleet/project-6")), None);
    }

    #[test]
    fn the_overview_says_what_each_policy_watches_and_does() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("policies.yaml"), MANIFESTS).expect("write");
        let overviews = overviews(&[dir.path().to_path_buf()], FLEET);
        let names: Vec<&str> = overviews.iter().map(|o| o.key.name.as_str()).collect();
        assert_eq!(
            names,
            ["described", "grouped"],
            "the invalid one is left to the runner"
        );

        let described = &overviews[0];
        assert_eq!(described.watches, "3, Fleet/Project-1, 42");
        assert_eq!(described.fleet_projects, Some(BTreeSet::from([1, 3])));
        assert_eq!(described.missing, ["42"]);
        assert_eq!(described.does, "retries what failed");

        let grouped = &overviews[1];
        assert_eq!(grouped.watches, "group fleet/platform/**");
        let platform: BTreeSet<u64> = (1..=8)
            .filter(|id| {
                let group = crate::sim::project_group(42, *id);
                group.starts_with("fleet/platform") && !group.starts_with("fleet/platform/infra")
            })
            .collect();
        assert!(
            !platform.is_empty(),
            "seed 42 puts projects in fleet/platform"
        );
        assert_eq!(grouped.fleet_projects, Some(platform));
        assert_eq!(grouped.does, "dry run: retry, cancel (3 rules)");
    }

    fn watching(ids: Option<&[u64]>) -> PolicyOverview {
        PolicyOverview {
            key: PolicyKey::new("demo", "p"),
            watches: String::new(),
            fleet_projects: ids.map(|ids| ids.iter().copied().collect()),
            missing: Vec::new(),
            does: String::new(),
        }
    }

    #[test]
    fn the_projects_no_policy_watches_are_named() {
        let some = [watching(Some(&[1, 2, 3])), watching(Some(&[4, 6]))];
        assert_eq!(
            unwatched(FLEET, &some).as_deref(),
            Some("  Projects 5, 7 and 8 of the fleet are watched by none.")
        );
        let all = [watching(Some(&[1, 2, 3, 4, 5, 6, 7])), watching(Some(&[8]))];
        assert_eq!(
            unwatched(FLEET, &all).as_deref(),
            Some("  Every project of the fleet is watched.")
        );
        let unknown = [watching(Some(&[1])), watching(None)];
        assert_eq!(unwatched(FLEET, &unknown), None);
    }

    #[test]
    fn durations_are_spoken_as_people_say_them() {
        assert_eq!(spoken(Duration::from_millis(1_400)), "1 second");
        assert_eq!(spoken(Duration::from_secs(45)), "45 seconds");
        assert_eq!(spoken(Duration::from_secs(1_800)), "30 minutes");
        assert_eq!(spoken(Duration::from_secs(150)), "2m30s");
        assert_eq!(spoken(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(simulated(Duration::from_secs(30), 60.0), "30 minutes");
    }
}
