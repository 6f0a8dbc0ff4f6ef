//! Project sharding against the simulator: two engines, shard 0 of 2 and shard 1 of 2, run the
//! same policy (a group and projects named by path). Together they act on every eligible job
//! exactly once, no project is listed by both (the simulator's request log), a path that cannot
//! be resolved is reported by one of them, and a Job Hook delivery is taken only by the owner.

mod engine_world;

use engine_world::*;
use jobwarden::engine::{Engine, EngineConfig, FailedTarget, JobEvent, RunReport, Shard};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::gitlab::models::ProjectRef;
use jobwarden::policy::CompiledPolicy;
use jobwarden::sim::{JobSpec, PipelineSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Projects in group `fleet` besides the world's `team/app`.
const FLEET_PROJECTS: usize = 24;

fn engine_of(w: &World, index: u32) -> Engine {
    w.engine_with(EngineConfig {
        destinations: TokenDestinations::insecure_http_allowed(),
        shard: Shard::new(index, 2).expect("valid shard"),
        ..EngineConfig::default()
    })
}

/// The world's project and `fleet/svc-N`, each with one failed job to retry; their ids and
/// failed jobs.
fn fleet(w: &World) -> BTreeMap<u64, u64> {
    let mut projects = vec![w.project];
    for n in 0..FLEET_PROJECTS {
        projects.push(
            w.ctl
                .add_project(&format!("fleet/svc-{n}"))
                .expect("project created"),
        );
    }
    projects
        .into_iter()
        .map(|project| {
            let job = JobSpec::new("rspec", "test", "failed")
                .failed_with("script_failure")
                .aged(Duration::from_secs(300));
            let ids = w
                .ctl
                .add_pipeline(project, PipelineSpec::new("main", vec![job]))
                .job_ids;
            (project, ids[0])
        })
        .collect()
}

/// The jobs a run retried, by job id.
fn retried_jobs(report: &RunReport) -> Vec<u64> {
    report
        .actions
        .iter()
        .filter(|a| a.action.as_str() == "retry" && a.outcome.label() == "succeeded")
        .map(|a| a.job_id)
        .collect()
}

/// The projects whose jobs were listed (`GET /projects/:id/jobs`) since the log was reset.
fn listed_projects(w: &World) -> BTreeSet<u64> {
    w.ctl
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.endpoint == "/projects/:id/jobs")
        .map(|r| {
            let id = r
                .path
                .trim_start_matches("/api/v4/projects/")
                .trim_end_matches("/jobs");
            id.parse()
                .unwrap_or_else(|_| panic!("listed by id: {}", r.path))
        })
        .collect()
}

/// The policy both shards run: group `fleet` and `projects` (a YAML flow list's items).
fn fleet_policy(w: &World, projects: &str) -> CompiledPolicy {
    let targets = format!("  groups: [{{path: fleet}}]\n  projects: [{projects}]\n");
    w.policy_on("fleet", &targets, RETRY_SCRIPT_FAILURES)
}

/// What one run of each engine did, one after the other.
struct Runs {
    reports: Vec<RunReport>,
    /// Per engine, the projects it listed.
    listed: Vec<BTreeSet<u64>>,
    /// Retry requests the engines sent, together.
    retries_sent: u64,
}

async fn run_each(w: &World, engines: &[Engine], policy: &CompiledPolicy) -> Runs {
    let mut runs = Runs {
        reports: Vec::new(),
        listed: Vec::new(),
        retries_sent: 0,
    };
    for engine in engines {
        w.ctl.reset_log();
        runs.reports.push(w.run(engine, policy).await);
        runs.listed.push(listed_projects(w));
        runs.retries_sent += w.count(RETRY);
    }
    runs
}

#[tokio::test]
async fn two_shards_act_on_every_job_once_and_never_list_a_project_twice() {
    let w = World::start(MONDAY_MORNING).await;
    let failed = fleet(&w);
    let policy = fleet_policy(&w, "team/app, team/missing");
    let engines = [engine_of(&w, 0), engine_of(&w, 1)];
    let Runs {
        reports,
        listed,
        retries_sent,
    } = run_each(&w, &engines, &policy).await;

    // Every eligible job acted on exactly once, by one of the two.
    let mut acted: Vec<u64> = reports.iter().flat_map(retried_jobs).collect();
    acted.sort_unstable();
    let expected: Vec<u64> = {
        let mut jobs: Vec<u64> = failed.values().copied().collect();
        jobs.sort_unstable();
        jobs
    };
    assert_eq!(acted, expected, "each failed job retried once");
    assert_eq!(
        retries_sent,
        failed.len() as u64,
        "one retry request per job"
    );

    // No project listed by both; together, every project; each a real share.
    assert!(
        listed[0].is_disjoint(&listed[1]),
        "listed by both: {:?}",
        listed[0].intersection(&listed[1]).collect::<Vec<_>>()
    );
    let all: BTreeSet<u64> = listed[0].union(&listed[1]).copied().collect();
    assert_eq!(all, failed.keys().copied().collect::<BTreeSet<u64>>());
    for (index, share) in listed.iter().enumerate() {
        assert!(share.len() >= 5, "shard {index} of 2 listed {share:?}");
    }

    // Each reports its own projects: the counts add up to the policy's (the missing path is
    // counted by the shard that reports it).
    let counted: usize = reports.iter().map(|r| r.projects).sum();
    assert_eq!(counted, failed.len() + 1);

    // The path that does not exist is reported by exactly one shard.
    let missing: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.failures
                .iter()
                .any(|f| f.target == FailedTarget::Project(ProjectRef::parse("team/missing")))
        })
        .map(|(index, _)| index)
        .collect();
    assert_eq!(missing.len(), 1, "reported by shards {missing:?}");
    for report in &reports {
        assert!(report.failures.len() <= 1, "{:?}", report.failures);
    }

    // A Job Hook delivery is taken by the replica owning the project, ignored by the other.
    for (project, job) in &failed {
        let owner = usize::from(!listed[0].contains(project));
        let events: Vec<JobEvent> = engines
            .iter()
            .map(|engine| engine.job_event(None, *project, *job, &Default::default()))
            .collect();
        assert!(
            matches!(events[owner], JobEvent::Accepted { policies: 1 }),
            "project {project}: {events:?}"
        );
        assert_eq!(events[1 - owner], JobEvent::Ignored, "project {project}");
    }
}

#[tokio::test]
async fn a_second_run_of_each_shard_lists_only_its_own_projects_again() {
    let w = World::start(MONDAY_MORNING).await;
    let failed = fleet(&w);
    let policy = fleet_policy(&w, "team/app");
    let engines = [engine_of(&w, 0), engine_of(&w, 1)];
    let first = run_each(&w, &engines, &policy).await;
    assert_eq!(first.retries_sent, failed.len() as u64);
    w.advance(60);
    for (engine, owned) in engines.iter().zip(&first.listed) {
        w.ctl.reset_log();
        let report = w.run(engine, &policy).await;
        assert!(retried_jobs(&report).is_empty(), "nothing left to retry");
        assert_eq!(
            &listed_projects(&w),
            owned,
            "the same share as the first run"
        );
        assert_eq!(engine.observed_projects(), owned.len());
        assert_eq!(w.count(RETRY), 0);
    }
}

#[tokio::test]
async fn every_shard_names_the_owner_of_a_delivered_project_as_the_one_that_observes_it() {
    let w = World::start(MONDAY_MORNING).await;
    let failed = fleet(&w);
    let engines = [engine_of(&w, 0), engine_of(&w, 1)];
    let instance = w.sim.base_url().as_str().trim_end_matches('/').to_owned();
    // Before any run, an engine knows no instance: a delivery without one cannot be placed.
    assert_eq!(engines[0].owner_shard(None, w.project), None);
    let policy = fleet_policy(&w, "\"team/app\"");
    let Runs { listed, .. } = run_each(&w, &engines, &policy).await;
    for project in failed.keys() {
        let observer = u32::from(!listed[0].contains(project));
        assert!(listed[observer as usize].contains(project));
        for engine in &engines {
            assert_eq!(
                engine.owner_shard(Some(&instance), *project),
                Some(observer),
                "project {project}, asked of shard {}",
                engine.shard()
            );
            assert_eq!(
                engine.owner_shard(Some(&format!("{instance}/")), *project),
                Some(observer),
                "a trailing slash does not count"
            );
            assert_eq!(
                engine.owner_shard(None, *project),
                Some(observer),
                "the instance of the policies run"
            );
        }
    }
}
