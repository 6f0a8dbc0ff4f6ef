//! Runs that share projects are paced: a policy with nothing to do does not list a whole fleet
//! ahead of one working through a backlog (here, naming the projects in the opposite order),
//! so what one listing holds for the other policies is held for a few projects at a time, not
//! for every project at once. Without the pacing, 40 of the 48 projects were held at once.

mod engine_world;

use engine_world::*;
use jobwarden::engine::{Engine, EngineConfig};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::sim::{JobSpec, PipelineSpec};
use std::collections::{BTreeMap, BTreeSet};

const PROJECTS: usize = 48;
const FAILURES_PER_PROJECT: usize = 12;
/// Projects synced at once (`--observe-concurrency`); the pacing lets 4 per slot wait.
const SYNC_SLOTS: usize = 2;

/// Keeps the artifacts of release tags: nothing in this fleet to act on.
const WATCH_ONLY: &str = "  rules:
    - name: keep-release-artifacts
      match: {statuses: [success], tag: true, names: [release], artifactsExpireWithin: 72h}
      keepArtifacts: {}
";

fn engine(w: &World) -> Engine {
    w.engine_with(EngineConfig {
        destinations: TokenDestinations::insecure_http_allowed(),
        observe_concurrency: SYNC_SLOTS,
        requests_per_minute: 1_000_000,
        ..EngineConfig::default()
    })
}

/// `PROJECTS` projects, each with a pipeline of `FAILURES_PER_PROJECT` jobs failed as stuck;
/// their ids.
fn backlog(w: &World) -> Vec<u64> {
    (0..PROJECTS)
        .map(|n| {
            let id = w
                .ctl
                .add_project(&format!("fleet/svc-{n}"))
                .expect("project created");
            let jobs = (0..FAILURES_PER_PROJECT)
                .map(|j| {
                    JobSpec::new(format!("test-{j}"), "test", "failed")
                        .failed_with("stuck_or_timeout_failure")
                })
                .collect();
            w.ctl.add_pipeline(id, PipelineSpec::new("main", jobs));
            id
        })
        .collect()
}

/// The project id in a request path `/api/v4/projects/<id>/…`.
fn project_of(path: &str) -> u64 {
    path.split('/')
        .nth(4)
        .and_then(|id| id.parse().ok())
        .expect("a numeric project id in the path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_nothing_to_do_does_not_list_the_fleet_ahead_of_one_working_through_a_backlog()
 {
    let w = World::start(MONDAY_MORNING).await;
    let projects = backlog(&w);
    // The two policies name the projects in opposite orders.
    let targets = |ids: &mut dyn Iterator<Item = &u64>| {
        let quoted: Vec<String> = ids.map(|id| format!("\"{id}\"")).collect();
        format!("  projects: [{}]\n", quoted.join(", "))
    };
    let retry = w.policy_on(
        "retry",
        &targets(&mut projects.iter().rev()),
        &format!("  limits: {{maxActionsPerRun: 1000, maxActionsPerHour: 1000}}\n{RETRY_STUCK}"),
    );
    let watch = w.policy_on("watch", &targets(&mut projects.iter()), WATCH_ONLY);
    let engine = engine(&w);
    let (_, watched) = tokio::join!(w.run(&engine, &retry), w.run(&engine, &watch));
    assert_eq!(
        w.count(RETRY),
        (PROJECTS * FAILURES_PER_PROJECT) as u64,
        "every failure retried"
    );
    assert!(watched.actions.is_empty());
    let log = w.ctl.request_log();
    // Each project listed once (its jobs, then its unfinished ones by `scope[]`), by whichever
    // run came first; the other decided on that listing.
    let listings: Vec<u64> = log
        .iter()
        .filter(|r| r.endpoint == "/projects/:id/jobs" && !r.query.contains("scope"))
        .map(|r| project_of(&r.path))
        .collect();
    assert_eq!(listings.len(), PROJECTS, "{listings:?}");

    // Walk the request log: how many projects had been listed, at most, whose failures were
    // not all retried yet (what the shared observers held for the retry policy).
    let mut retries_left: BTreeMap<u64, usize> = BTreeMap::new();
    let mut held = BTreeSet::new();
    let mut most_held = 0;
    for request in &log {
        let project = match request.endpoint {
            "/projects/:id/jobs" if !request.query.contains("scope") => project_of(&request.path),
            "/projects/:id/jobs/:job_id/retry" => project_of(&request.path),
            _ => continue,
        };
        if request.method == "GET" {
            held.insert(project);
            retries_left.insert(project, FAILURES_PER_PROJECT);
        } else {
            let left = retries_left
                .get_mut(&project)
                .expect("listed before retried");
            *left -= 1;
            if *left == 0 {
                held.remove(&project);
            }
        }
        most_held = most_held.max(held.len());
    }
    eprintln!("at most {most_held} projects held");
    // The pacing lets 4 listed projects per sync slot wait for the other run, plus what each
    // run has in flight (a sync slot's worth each) when the limit is reached.
    let bound = 4 * SYNC_SLOTS + 2 * SYNC_SLOTS;
    assert!(
        most_held <= bound,
        "{most_held} projects were listed with their failures not yet retried (at most {bound} expected)"
    );
}
