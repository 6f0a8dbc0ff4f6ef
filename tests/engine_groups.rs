//! Policies on GitLab groups (`spec.groups`, `excludeProjects`) against the simulator: the
//! projects of a group and its subgroups are acted on, the membership is listed again on its
//! own refresh interval (not every run), projects that leave are forgotten with their metric
//! series, and a group that cannot be listed is a failure naming it.

mod engine_world;

use engine_world::*;
use jobwarden::engine::{EngineConfig, FailedTarget, ReconcileError, RunReport};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::gitlab::models::GroupRef;
use jobwarden::policy::CompiledPolicy;
use jobwarden::sim::{JobSpec, PipelineSpec};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const LIST_GROUP_PROJECTS: &str = "GET /groups/:id/projects";

/// `team/app` (the world's project, outside `fleet`) and two projects in subgroups of
/// `fleet`, each with one failed job to retry.
struct Fleet {
    w: World,
    api: u64,
    web: u64,
}

impl Fleet {
    async fn start() -> Fleet {
        let w = World::start(MONDAY_MORNING).await;
        let api = w
            .ctl
            .add_project("fleet/platform/api")
            .expect("project created");
        let web = w
            .ctl
            .add_project("fleet/apps/web/site")
            .expect("project created");
        let fleet = Fleet { w, api, web };
        for project in [fleet.w.project, api, web] {
            fleet.failed_job(project);
        }
        fleet
    }

    fn failed_job(&self, project: u64) {
        let job = JobSpec::new("rspec", "test", "failed")
            .failed_with("script_failure")
            .aged(Duration::from_secs(300));
        self.w
            .ctl
            .add_pipeline(project, PipelineSpec::new("main", vec![job]));
    }

    fn policy(&self, name: &str, targets: &str) -> CompiledPolicy {
        self.w.policy_on(name, targets, RETRY_SCRIPT_FAILURES)
    }

    /// A sim admin route (`POST /-/sim/…`), as a test script would call it.
    async fn admin(&self, route: &str, body: serde_json::Value) -> serde_json::Value {
        let url = self.w.sim.base_url().join(route).expect("admin URL");
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("the simulator answers");
        assert!(response.status().is_success(), "{route}: {response:?}");
        response.json().await.expect("JSON")
    }
}

/// The projects a run retried a job of, by path.
fn retried(report: &RunReport) -> BTreeSet<String> {
    report
        .actions
        .iter()
        .filter(|a| a.action.as_str() == "retry" && a.outcome.label() == "succeeded")
        .map(|a| a.project.to_string())
        .collect()
}

/// The `jobwarden_jobs` series of a project in a scrape.
fn job_series(scrape: &str, project: u64) -> usize {
    let label = format!("project=\"{project}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with("jobwarden_jobs{") && l.contains(&label))
        .count()
}

#[tokio::test]
async fn a_group_policy_acts_on_the_projects_of_its_subgroups_only() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let policy = f.policy("fleet", "  groups: [{path: fleet}]\n");
    assert!(policy.projects.is_empty());

    let report = f.w.run(&engine, &policy).await;
    assert_eq!(
        retried(&report),
        BTreeSet::from([
            "fleet/apps/web/site".to_owned(),
            "fleet/platform/api".to_owned()
        ])
    );
    assert_eq!(report.projects, 2);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(engine.observed_projects(), 2);
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 1);
    assert_eq!(
        f.w.count("GET /projects/:id"),
        0,
        "listed projects come with their ids"
    );

    // Without subgroups, `fleet` itself holds no project.
    let direct = f.policy(
        "fleet-direct",
        "  groups: [{path: fleet, includeSubgroups: false}]\n  projects: [team/app]\n",
    );
    let report = f.w.run(&engine, &direct).await;
    assert_eq!(report.projects, 1);
    assert_eq!(retried(&report), BTreeSet::from(["team/app".to_owned()]));
}

#[tokio::test]
async fn a_project_named_and_listed_is_one_project_and_two_policies_share_one_listing() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let both = f.policy(
        "both",
        &format!(
            "  projects: [\"{}\", fleet/platform/api]\n  groups: [{{path: fleet}}]\n",
            f.web
        ),
    );
    let also = f.policy("also", "  groups: [{path: FLEET}]\n");
    let report = f.w.run(&engine, &both).await;
    assert_eq!(
        report.projects, 2,
        "web by id, api by path, both listed too"
    );
    assert_eq!(retried(&report).len(), 2);
    assert_eq!(
        f.w.count("GET /projects/:id"),
        0,
        "the listing told api's id"
    );
    f.w.run(&engine, &also).await;
    assert_eq!(engine.observed_projects(), 2);
    assert_eq!(
        f.w.count(LIST_GROUP_PROJECTS),
        1,
        "one listing for both policies"
    );
}

#[tokio::test]
async fn a_project_added_to_the_group_is_picked_up_at_the_next_refresh_not_before() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let policy = f.policy("fleet", "  groups: [{path: fleet}]\n");
    assert_eq!(f.w.run(&engine, &policy).await.projects, 2);

    let added = f
        .admin(
            "/-/sim/projects",
            json!({"path": "billing", "group": "fleet/platform"}),
        )
        .await;
    let added = added["id"].as_u64().expect("the new project's id");
    f.failed_job(added);

    // Runs within the refresh interval (5 minutes) use the listing they have.
    for _ in 0..2 {
        f.w.advance(120);
        let report = f.w.run(&engine, &policy).await;
        assert_eq!(report.projects, 2);
        assert!(retried(&report).is_empty());
    }
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 1);
    assert_eq!(engine.observed_projects(), 2);

    f.w.advance(60);
    let report = f.w.run(&engine, &policy).await;
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 2);
    assert_eq!(report.projects, 3);
    assert_eq!(
        retried(&report),
        BTreeSet::from(["fleet/platform/billing".to_owned()])
    );
    assert_eq!(engine.observed_projects(), 3);
}

#[tokio::test]
async fn the_refresh_interval_is_the_engines_to_set() {
    let f = Fleet::start().await;
    let engine = f.w.engine_with(EngineConfig {
        destinations: TokenDestinations::insecure_http_allowed(),
        group_refresh_interval: Duration::from_secs(30),
        ..EngineConfig::default()
    });
    let policy = f.policy("fleet", "  groups: [{path: fleet}]\n");
    for _ in 0..3 {
        f.w.run(&engine, &policy).await;
        f.w.advance(10);
    }
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 1, "0 s, 10 s, 20 s");
    f.w.run(&engine, &policy).await;
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 2, "30 s");
}

#[tokio::test]
async fn an_archived_project_is_forgotten_at_the_next_refresh_with_its_series() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let policy = f.policy("fleet", "  groups: [{path: fleet}]\n");
    f.w.run(&engine, &policy).await;
    assert_eq!(engine.observed_projects(), 2);
    assert!(job_series(&engine.metrics().render(), f.api) > 0);

    f.admin(&format!("/-/sim/projects/{}/archive", f.api), json!({}))
        .await;
    f.w.advance(60);
    f.w.run(&engine, &policy).await;
    assert_eq!(engine.observed_projects(), 2, "not before the refresh");

    f.w.advance(300);
    let report = f.w.run(&engine, &policy).await;
    assert_eq!(report.projects, 1);
    assert_eq!(engine.observed_projects(), 1);
    let scrape = engine.metrics().render();
    assert_eq!(job_series(&scrape, f.api), 0, "{scrape}");
    assert!(job_series(&scrape, f.web) > 0, "{scrape}");
}

#[tokio::test]
async fn excluded_projects_are_left_out_and_a_new_exclusion_forgets_them() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let excluding = f.policy(
        "fleet",
        "  groups: [{path: fleet}]\n  excludeProjects: [\"Fleet/Apps/*\"]\n",
    );
    let report = f.w.run(&engine, &excluding).await;
    assert_eq!(
        retried(&report),
        BTreeSet::from(["fleet/platform/api".to_owned()])
    );
    assert_eq!(report.projects, 1);
    assert_eq!(engine.observed_projects(), 1);
    assert_eq!(job_series(&engine.metrics().render(), f.web), 0);

    // The same policy edited to exclude api too: api is let go at once (the listing is kept).
    let more = f.policy(
        "fleet",
        "  groups: [{path: fleet}]\n  excludeProjects: [\"fleet/apps/*\", \"*/api\"]\n",
    );
    let report = f.w.run(&engine, &more).await;
    assert_eq!(report.projects, 0);
    assert_eq!(engine.observed_projects(), 0);
    assert_eq!(job_series(&engine.metrics().render(), f.api), 0);
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 1);
}

#[tokio::test]
async fn an_unknown_group_is_a_failure_naming_it_with_gitlabs_404() {
    let f = Fleet::start().await;
    let engine = f.w.engine();

    // Beside a project that can be observed: a failure in the run's report.
    let mixed = f.policy(
        "mixed",
        "  projects: [team/app]\n  groups: [{path: fleet/nope}]\n",
    );
    let report = f.w.run(&engine, &mixed).await;
    assert_eq!(report.projects, 1);
    assert_eq!(retried(&report), BTreeSet::from(["team/app".to_owned()]));
    let [failure] = report.failures.as_slice() else {
        panic!("one failure: {:?}", report.failures);
    };
    assert_eq!(
        failure.target,
        FailedTarget::Group(GroupRef::parse("fleet/nope"))
    );
    assert!(failure.message.contains("HTTP 404"), "{}", failure.message);
    assert!(
        failure.message.contains("404 Group Not Found"),
        "{}",
        failure.message
    );

    // Alone: nothing could be observed, and the run's error names the group.
    let alone = f.policy("alone", "  groups: [{path: fleet/nope}]\n");
    let err = f.w.run_failing(&engine, &alone, TOKEN).await;
    let message = err.to_string();
    assert!(message.contains("group fleet/nope"), "{message}");
    assert!(message.contains("404 Group Not Found"), "{message}");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_membership() {
    let f = Fleet::start().await;
    let engine = f.w.engine();
    let policy = f.policy("fleet", "  groups: [{path: fleet}]\n");
    f.w.run(&engine, &policy).await;
    assert_eq!(engine.observed_projects(), 2);

    // The token is revoked: the refresh fails (401), and so does every project.
    f.w.advance(300);
    let err = f.w.run_failing(&engine, &policy, "revoked").await;
    assert!(err.to_string().contains("group fleet"), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(
        engine.observed_projects(),
        2,
        "the projects of the last good listing are still watched"
    );

    // With the token back, the listing is tried again at once.
    let report = f.w.run(&engine, &policy).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.projects, 2);
    assert_eq!(f.w.count(LIST_GROUP_PROJECTS), 3);
}

#[tokio::test]
async fn a_policy_over_the_project_cap_fails_with_a_clear_error() {
    let f = Fleet::start().await;
    let engine = f.w.engine_with(EngineConfig {
        destinations: TokenDestinations::insecure_http_allowed(),
        max_projects_per_policy: 2,
        ..EngineConfig::default()
    });
    let within = f.policy("within", "  groups: [{path: fleet}]\n");
    assert_eq!(f.w.run(&engine, &within).await.projects, 2);

    let over = f.policy(
        "over",
        "  groups: [{path: fleet}]\n  projects: [team/app]\n",
    );
    // team/app is not resolved yet: counted as one more project all the same.
    let err = f.w.run_failing(&engine, &over, TOKEN).await;
    assert!(
        matches!(err, ReconcileError::TooManyProjects { count: 3, limit: 2 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("more than the 2 one policy may"),
        "{err}"
    );
    assert_eq!(err.kind(), "too_many_projects");
}
