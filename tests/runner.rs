//! File mode (`jobwarden run --policies DIR`): policies run from a directory, a bad manifest does
//! not stop the others, a changed file is picked up, a Secret is read only from the policy's
//! namespace, and the loop stops when asked.

use jobwarden::engine::{Engine, EngineConfig, OutcomeKind, RunReport};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::metrics::Metrics;
use jobwarden::sim::{Clock, JobSpec, PipelineSpec, SimConfig, SimControl, SimHandle, Simulator};
use jobwarden::source::files::runner::{RunnerConfig, TokenSource, run_policies};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "runner-test-token";

fn policy_manifest(name: &str, url: &str, secret_namespace_note: &str, dry_run: bool) -> String {
    format!(
        "# {secret_namespace_note}
apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: {name}, namespace: ci}}
spec:
  gitlab: {{url: \"{url}\", tokenSecretRef: {{name: gitlab, key: token}}}}
  projects: [\"team/app\"]
  interval: 10s
  dryRun: {dry_run}
  rules:
    - name: cancel-stale
      match: {{statuses: [pending], olderThan: 1h}}
      cancel: {{}}
"
    )
}

/// The Secret `ci/gitlab` with the simulator's token, in `dir`.
fn write_token_secret(dir: &std::path::Path) {
    std::fs::write(
        dir.join("secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: gitlab, namespace: ci}}\nstringData: {{token: {TOKEN}}}\n"),
    )
    .expect("write");
}

/// A simulator without a fleet on a manual clock.
async fn start_simulator() -> (SimHandle, SimControl) {
    let mut config = SimConfig::new(TOKEN);
    config.projects = 0;
    config.clock = Clock::manual("2026-11-23T10:00:00Z".parse().expect("time"));
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("simulator");
    let ctl = sim.control();
    (sim, ctl)
}

/// An engine on the simulator's clock, and its metrics.
fn engine_on(ctl: &SimControl) -> (Engine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let clock = ctl.clone();
    let engine = Engine::new(
        EngineConfig {
            destinations: TokenDestinations::insecure_http_allowed(),
            ..EngineConfig::default()
        },
        Arc::new(move || clock.now()),
        metrics.clone(),
    );
    (engine, metrics)
}

/// The runner's configuration for `dir`, tokens from its Secrets only.
fn runner_config(dir: &std::path::Path) -> RunnerConfig {
    RunnerConfig {
        paths: vec![dir.to_path_buf()],
        token: TokenSource::SecretOrEnv("JOBWARDEN_TEST_TOKEN_THAT_IS_NOT_SET".into()),
        override_policy: None,
        reload_every: Duration::from_millis(100),
        selector: None,
        readiness: None,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_policy_directory_runs_reloads_and_stops() {
    let (sim, ctl) = start_simulator().await;
    let project = ctl.add_project("team/app").expect("project");
    let stale = ctl.add_pipeline(
        project,
        PipelineSpec::new(
            "main",
            vec![JobSpec::new("build", "build", "pending").aged(Duration::from_secs(7200))],
        ),
    );
    let url = sim.base_url().to_string();

    let dir = tempfile::tempdir().expect("temp dir");
    write_token_secret(dir.path());
    std::fs::write(
        dir.path().join("cleanup.yaml"),
        policy_manifest("cleanup", &url, "dry-run first", true),
    )
    .expect("write");
    // A policy in another namespace cannot use the Secret of namespace `ci`.
    std::fs::write(
        dir.path().join("elsewhere.yaml"),
        policy_manifest("elsewhere", &url, "other namespace", false)
            .replace("namespace: ci", "namespace: other"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nmetadata: {name: broken}\nspec:\n  projects: [1]\n  rules: []\n",
    )
    .expect("write");

    let (engine, metrics) = engine_on(&ctl);
    let reports: Arc<Mutex<Vec<RunReport>>> = Arc::default();
    let sink_reports = reports.clone();
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(run_policies(
        engine,
        runner_config(dir.path()),
        Arc::new(move |r: &RunReport| sink_reports.lock().expect("lock").push(r.clone())),
        shutdown.clone(),
    ));

    let count = |policy: &str, outcome: OutcomeKind| {
        reports
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.policy.name == policy)
            .map(|r| r.tally().count(jobwarden::crd::ActionKind::Cancel, outcome))
            .sum::<u64>()
    };
    wait_until("a dry run of the valid policy", || {
        count("cleanup", OutcomeKind::DryRun) >= 1
    })
    .await;
    assert_eq!(
        ctl.job(project, stale.job_ids[0]).expect("job").status,
        "pending"
    );
    let rendered = metrics.render();
    assert!(
        rendered.contains("jobwarden_policies{state=\"ready\"} 1"),
        "{rendered}"
    );
    assert!(
        rendered.contains("jobwarden_policies{state=\"invalid\"} 1"),
        "{rendered}"
    );
    assert!(
        rendered.contains("jobwarden_policies{state=\"error\"} 1"),
        "{rendered}"
    );
    assert!(
        reports
            .lock()
            .expect("lock")
            .iter()
            .all(|r| r.policy.name == "cleanup"),
        "the policy without a readable Secret never ran"
    );

    // The operator turns dry-run off: the change is picked up and the stale job is cancelled.
    std::fs::write(
        dir.path().join("cleanup.yaml"),
        policy_manifest("cleanup", &url, "now for real", false),
    )
    .expect("write");
    wait_until("the reloaded policy to cancel", || {
        count("cleanup", OutcomeKind::Succeeded) == 1
    })
    .await;
    assert_eq!(
        ctl.job(project, stale.job_ids[0]).expect("job").status,
        "canceled"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("the runner stops when asked")
        .expect("the runner task ends cleanly");
}

/// A policy whose runs keep failing (its token is wrong) is counted as `error`, not `ready`.
#[tokio::test]
async fn a_policy_whose_runs_fail_counts_as_error() {
    let (sim, ctl) = start_simulator().await;
    ctl.add_project("team/app").expect("project");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: gitlab, namespace: ci}\nstringData: {token: revoked-token}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("cleanup.yaml"),
        policy_manifest("cleanup", sim.base_url().as_ref(), "wrong token", false),
    )
    .expect("write");
    let (engine, metrics) = engine_on(&ctl);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(run_policies(
        engine,
        runner_config(dir.path()),
        Arc::new(|_: &RunReport| {}),
        shutdown.clone(),
    ));
    wait_until("the failing policy counted as error", || {
        let rendered = metrics.render();
        rendered.contains("jobwarden_policies{state=\"error\"} 1")
            && rendered.contains("jobwarden_policies{state=\"ready\"} 0")
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("the runner stops")
        .expect("no panic");
    sim.shutdown().await;
}

#[tokio::test]
async fn with_a_selector_only_the_policies_carrying_its_labels_run() {
    let (sim, ctl) = start_simulator().await;
    ctl.add_project("team/app").expect("project");
    let url = sim.base_url().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    write_token_secret(dir.path());
    let labelled = |name: &str, labels: &str| {
        policy_manifest(name, &url, "labelled", true).replace(
            &format!("{{name: {name}, namespace: ci}}"),
            &format!("{{name: {name}, namespace: ci, labels: {{{labels}}}}}"),
        )
    };
    for (name, labels) in [
        ("platform", "team: platform, tier: prod"),
        ("web", "team: web, tier: prod"),
        ("platform-staging", "team: platform, tier: staging"),
    ] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            labelled(name, labels),
        )
        .expect("write");
    }
    std::fs::write(
        dir.path().join("unlabelled.yaml"),
        policy_manifest("unlabelled", &url, "no labels", true),
    )
    .expect("write");

    let (engine, _) = engine_on(&ctl);
    let reports: Arc<Mutex<Vec<RunReport>>> = Arc::default();
    let sink_reports = reports.clone();
    let shutdown = CancellationToken::new();
    let config = RunnerConfig {
        selector: Some("team=platform,tier=prod".parse().expect("a valid selector")),
        ..runner_config(dir.path())
    };
    let runner = tokio::spawn(run_policies(
        engine,
        config,
        Arc::new(move |r: &RunReport| sink_reports.lock().expect("lock").push(r.clone())),
        shutdown.clone(),
    ));
    wait_until("a run of the selected policy", || {
        !reports.lock().expect("lock").is_empty()
    })
    .await;
    // Reloads come every 100 ms: give the others time to run, were they selected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    runner.await.expect("the runner stops");
    let ran: std::collections::BTreeSet<String> = reports
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.policy.name.clone())
        .collect();
    assert_eq!(
        ran,
        std::collections::BTreeSet::from(["platform".to_owned()])
    );
}

/// `/readyz` says 503 with the reason until the policy files are loaded, then 200.
#[test]
fn readyz_turns_ready_once_the_policy_files_are_loaded() {
    // One blocking thread, held until the test lets go: the runner reads the files there, so
    // it cannot load them before the test has seen `/readyz` say so.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(readyz_until_loaded());
}

async fn readyz_until_loaded() {
    let (sim, ctl) = start_simulator().await;
    ctl.add_project("team/app").expect("project");
    let dir = tempfile::tempdir().expect("temp dir");
    write_token_secret(dir.path());
    std::fs::write(
        dir.path().join("cleanup.yaml"),
        policy_manifest("cleanup", sim.base_url().as_str(), "dry run", true),
    )
    .expect("write");
    let (engine, metrics) = engine_on(&ctl);
    let shutdown = CancellationToken::new();
    let server = jobwarden::server::spawn(
        "127.0.0.1:0".parse().expect("loopback"),
        metrics,
        shutdown.clone(),
    )
    .await
    .expect("the server listens");
    let readyz = format!("http://{}/readyz", server.local_addr);
    let get_readyz = || async {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(&readyz)
            .send()
            .await
            .expect("readyz answers");
        (response.status(), response.text().await.expect("body"))
    };

    let (release, held) = std::sync::mpsc::channel::<()>();
    let blocker = tokio::task::spawn_blocking(move || held.recv());
    let runner = tokio::spawn(run_policies(
        engine,
        RunnerConfig {
            readiness: Some(server.ready.clone()),
            ..runner_config(dir.path())
        },
        Arc::new(|_: &RunReport| {}),
        shutdown.clone(),
    ));
    let ready = server.ready.clone();
    wait_until("the runner to start loading", || {
        ready.status() == Err("loading the policy files".to_owned())
    })
    .await;
    assert_eq!(
        get_readyz().await,
        (
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading the policy files\n".to_owned()
        )
    );
    release.send(()).expect("the blocker waits");
    blocker.await.expect("the blocker ends").expect("released");
    wait_until("ready", || ready.is_ready()).await;
    assert_eq!(
        get_readyz().await,
        (reqwest::StatusCode::OK, "ready\n".to_owned())
    );

    shutdown.cancel();
    runner.await.expect("the runner stops");
    server.join().await;
}
