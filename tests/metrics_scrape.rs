//! `/metrics` scraped over HTTP while the engine watches a simulated GitLab: the values match
//! what the simulator did, each job is counted once, and a restart does not count old jobs.

use jobwarden::crd::JobPolicy;
use jobwarden::engine::{Engine, EngineConfig, RunMode};
use jobwarden::gitlab::TokenDestinations;
use jobwarden::metrics::Metrics;
use jobwarden::policy::{CompiledPolicy, PolicyKey, compile};
use jobwarden::sim::{Clock, JobSpec, PipelineSpec, SimConfig, SimControl, SimHandle, Simulator};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "metrics-test-token";

struct Watched {
    engine: Engine,
    metrics_url: String,
    stop: CancellationToken,
}

impl Watched {
    async fn start(ctl: &SimControl) -> Watched {
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
        let stop = CancellationToken::new();
        let server = jobwarden::server::spawn(
            "127.0.0.1:0".parse().expect("loopback"),
            metrics,
            stop.clone(),
        )
        .await
        .expect("metrics server starts");
        Watched {
            engine,
            metrics_url: format!("http://{}/metrics", server.local_addr),
            stop,
        }
    }

    async fn scrape(&self) -> String {
        let response = reqwest::get(&self.metrics_url).await.expect("scrape");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        response.text().await.expect("body")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sums the samples of `name` whose labels include every `key="value"` of `labels`.
fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name).then_some((rest, value))
        })
        .filter(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("sample value"))
        .sum()
}

fn policy(sim: &SimHandle) -> CompiledPolicy {
    let manifest = format!(
        "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: watch, namespace: ci}}
spec:
  gitlab: {{url: \"{}\", tokenSecretRef: {{name: gitlab, key: token}}}}
  projects: [\"team/app\"]
  interval: 10s
  rules:
    - name: keep-tagged
      match: {{statuses: [success], tag: true, artifactsExpireWithin: 1h}}
      keepArtifacts: {{}}
",
        sim.base_url()
    );
    let policy: JobPolicy = serde_yaml::from_str(&manifest).expect("manifest");
    compile(PolicyKey::new("ci", "watch"), &policy.spec).expect("policy")
}

async fn reconcile(engine: &Engine, policy: &CompiledPolicy) {
    engine
        .reconcile(
            policy,
            &SecretString::from(TOKEN.to_owned()).into(),
            RunMode::Normal,
            &CancellationToken::new(),
        )
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn metrics_match_what_the_simulator_did_and_count_each_job_once() {
    let mut config = SimConfig::new(TOKEN);
    config.projects = 0;
    config.clock = Clock::manual("2026-11-23T10:00:00Z".parse().expect("time"));
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("simulator");
    let ctl = sim.control();
    let project = ctl.add_project("team/app").expect("project");
    // The policy names the project by path; metrics label it by its id.
    let label = project.to_string();
    // History from before jobwarden started: never counted.
    ctl.add_pipeline(
        project,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("old-build", "build", "success").aged(Duration::from_secs(3600)),
                JobSpec::new("old-test", "test", "failed")
                    .failed_with("script_failure")
                    .aged(Duration::from_secs(3600)),
            ],
        ),
    );
    ctl.advance(Duration::from_secs(60));

    let watched = Watched::start(&ctl).await;
    let policy = policy(&sim);
    let fresh = ctl.add_pipeline(
        project,
        PipelineSpec::new(
            "main",
            (0..6)
                .map(|i| {
                    JobSpec::new(
                        format!("job-{i}"),
                        if i < 2 { "build" } else { "test" },
                        "pending",
                    )
                })
                .collect(),
        ),
    );
    reconcile(&watched.engine, &policy).await;
    let text = watched.scrape().await;
    assert_eq!(
        sample_sum(&text, "jobwarden_job_queued_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(sample_sum(&text, "jobwarden_job_failures_total", &[]), 0.0);
    assert_eq!(
        sample_sum(
            &text,
            "jobwarden_jobs",
            &[("project", label.as_str()), ("status", "pending")]
        ),
        6.0
    );

    // Runners pick up five jobs after queueing for 90 s; then they finish, three of them failing.
    ctl.advance(Duration::from_secs(90));
    for &job in &fresh.job_ids[..5] {
        ctl.set_job_status(project, job, "running", None);
    }
    ctl.advance(Duration::from_secs(30));
    let outcomes: [(&str, Option<&str>); 5] = [
        ("success", None),
        ("success", None),
        ("failed", Some("stuck_or_timeout_failure")),
        ("failed", Some("stuck_or_timeout_failure")),
        ("failed", Some("runner_system_failure")),
    ];
    for (&job, (status, reason)) in fresh.job_ids.iter().zip(outcomes) {
        ctl.set_job_status(project, job, status, reason);
    }
    for _ in 0..3 {
        ctl.advance(Duration::from_secs(15));
        reconcile(&watched.engine, &policy).await;
    }

    // What the simulator did, from its own record.
    let jobs = ctl.jobs(project);
    let started: Vec<_> = jobs
        .iter()
        .filter(|j| fresh.job_ids.contains(&j.id) && j.started_at.is_some())
        .collect();
    let mut failed_by_reason: BTreeMap<String, f64> = BTreeMap::new();
    for j in jobs
        .iter()
        .filter(|j| fresh.job_ids.contains(&j.id) && j.status == "failed")
    {
        *failed_by_reason
            .entry(j.failure_reason.clone().expect("a failed job has a reason"))
            .or_default() += 1.0;
    }
    assert_eq!(started.len(), 5);

    let text = watched.scrape().await;
    assert_eq!(
        sample_sum(&text, "jobwarden_job_queued_duration_seconds_count", &[]),
        started.len() as f64,
        "one queue-time observation per started job, however many syncs saw it"
    );
    assert_eq!(
        sample_sum(
            &text,
            "jobwarden_job_queued_duration_seconds_count",
            &[("stage", "build")]
        ),
        2.0
    );
    let queued_seconds = sample_sum(&text, "jobwarden_job_queued_duration_seconds_sum", &[]);
    assert!(
        (queued_seconds - 5.0 * 90.0).abs() < 1.0,
        "{queued_seconds}"
    );
    for (reason, count) in &failed_by_reason {
        assert_eq!(
            sample_sum(
                &text,
                "jobwarden_job_failures_total",
                &[("failure_reason", reason)]
            ),
            *count,
            "{reason}"
        );
    }
    assert_eq!(sample_sum(&text, "jobwarden_job_failures_total", &[]), 3.0);
    assert_eq!(
        sample_sum(
            &text,
            "jobwarden_job_failures_total",
            &[("failure_reason", "script_failure")]
        ),
        0.0,
        "a failure from before the process started is not counted"
    );
    assert_eq!(
        sample_sum(
            &text,
            "jobwarden_jobs",
            &[("project", label.as_str()), ("status", "pending")]
        ),
        1.0
    );
    assert!(
        sample_sum(
            &text,
            "jobwarden_gitlab_requests_total",
            &[("endpoint", "/projects/:id/jobs"), ("code", "200")]
        ) >= 4.0
    );
    assert!(
        sample_sum(
            &text,
            "jobwarden_reconcile_duration_seconds_count",
            &[("policy", "watch")]
        ) == 4.0
    );
    assert!(!text.contains("job-0"), "job names never become labels");

    // A restart counts nothing that happened before it.
    drop(watched);
    let restarted = Watched::start(&ctl).await;
    ctl.advance(Duration::from_secs(15));
    reconcile(&restarted.engine, &policy).await;
    let text = restarted.scrape().await;
    assert_eq!(
        sample_sum(&text, "jobwarden_job_queued_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(sample_sum(&text, "jobwarden_job_failures_total", &[]), 0.0);
    // …and counts what happens after it.
    let last = fresh.job_ids[5];
    ctl.set_job_status(project, last, "running", None);
    ctl.advance(Duration::from_secs(5));
    ctl.set_job_status(project, last, "failed", Some("job_execution_timeout"));
    ctl.advance(Duration::from_secs(15));
    reconcile(&restarted.engine, &policy).await;
    let text = restarted.scrape().await;
    assert_eq!(
        sample_sum(&text, "jobwarden_job_queued_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        sample_sum(
            &text,
            "jobwarden_job_failures_total",
            &[("failure_reason", "job_execution_timeout")]
        ),
        1.0
    );
}
