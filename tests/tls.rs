//! A GitLab behind a private CA, in file mode: the simulator serves HTTPS with a certificate of
//! a throwaway CA made here. A policy whose `spec.gitlab.caBundleSecretRef` names a Secret
//! holding that CA retries a failed job over HTTPS; without the reference its runs fail with a
//! certificate error, reported, and nothing is retried; a bundle without a certificate is
//! refused, naming the field, before any request.

mod pki;

use jobwarden::engine::{Engine, EngineConfig, OutcomeKind, RunReport};
use jobwarden::metrics::Metrics;
use jobwarden::sim::{
    Clock, JobSpec, PipelineSpec, SimConfig, SimControl, SimHandle, SimTls, Simulator,
};
use jobwarden::source::files::runner::{RunnerConfig, TokenSource, run_policies};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "glpat-tls-test-token";
const RETRY: &str = "POST /projects/:id/jobs/:job_id/retry";

/// A CA made for one test, and a server certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: String,
    tls: SimTls,
}

fn throwaway_pki() -> Pki {
    let pem = pki::generate();
    let tls = SimTls::from_pem(pem.cert.as_bytes(), pem.key.as_bytes())
        .expect("a usable certificate and key");
    Pki {
        ca_pem: pem.ca,
        tls,
    }
}

/// The simulator over HTTPS, on a manual clock, with one project whose job failed as stuck.
struct Gitlab {
    sim: SimHandle,
    ctl: SimControl,
    project: u64,
    job: u64,
}

async fn gitlab_over_https(tls: SimTls) -> Gitlab {
    let mut config = SimConfig::new(TOKEN);
    config.projects = 0;
    config.clock = Clock::manual("2026-11-23T10:00:00Z".parse().expect("time"));
    config.tls = Some(tls);
    let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("the simulator starts");
    assert_eq!(sim.base_url().scheme(), "https");
    let ctl = sim.control();
    let project = ctl.add_project("team/app").expect("project");
    let job = ctl
        .add_pipeline(
            project,
            PipelineSpec::new(
                "main",
                vec![
                    JobSpec::new("rspec", "test", "failed")
                        .failed_with("stuck_or_timeout_failure")
                        .aged(Duration::from_secs(600)),
                ],
            ),
        )
        .job_ids[0];
    Gitlab {
        sim,
        ctl,
        project,
        job,
    }
}

/// A retry policy of namespace `ci` for the simulator at `url`, trusting the CA of the Secret
/// `ca_secret` (key `ca.crt`) when one is named.
fn policy_manifest(url: &str, ca_secret: Option<&str>) -> String {
    let ca_ref = ca_secret
        .map(|name| format!(", caBundleSecretRef: {{name: {name}, key: ca.crt}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: retry-stuck, namespace: ci}}
spec:
  gitlab: {{url: \"{url}\", tokenSecretRef: {{name: gitlab, key: token}}{ca_ref}}}
  projects: [\"team/app\"]
  interval: 10s
  rules:
    - name: retry-stuck
      match: {{statuses: [failed], failureReasons: [stuck_or_timeout_failure]}}
      retry: {{limit: 2}}
"
    )
}

/// A Secret of namespace `ci` holding `value` under `key`.
fn secret_manifest(name: &str, key: &str, value: &str) -> String {
    let quoted = serde_json::to_string(value).expect("a JSON string");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: ci}}\n\
         stringData: {{{key}: {quoted}}}\n"
    )
}

/// A log sink for the runner's `tracing` events.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// File mode over `manifests` (one file each) until `done` holds (at most 10 s), with the
/// runner's reports, log and metrics.
struct Run {
    reports: Arc<Mutex<Vec<RunReport>>>,
    logs: Logs,
    metrics: Arc<Metrics>,
}

async fn run_until(gitlab: &Gitlab, manifests: &[String], done: impl Fn(&Run) -> bool) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    for (n, manifest) in manifests.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{n}.yaml")), manifest).expect("write");
    }
    let run = Run {
        reports: Arc::default(),
        logs: Logs::default(),
        metrics: Arc::new(Metrics::new()),
    };
    // The test runs on one thread (`#[tokio::test]`): the runner's tasks log here.
    let writer = run.logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let clock = gitlab.ctl.clone();
    // https only, as in production.
    let engine = Engine::new(
        EngineConfig::default(),
        Arc::new(move || clock.now()),
        run.metrics.clone(),
    );
    let sink = run.reports.clone();
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(run_policies(
        engine,
        RunnerConfig {
            paths: vec![dir.path().to_path_buf()],
            token: TokenSource::SecretOrEnv("JOBWARDEN_TLS_TEST_TOKEN_THAT_IS_NOT_SET".into()),
            override_policy: None,
            reload_every: Duration::from_millis(100),
            selector: None,
            readiness: None,
        },
        Arc::new(move |r: &RunReport| sink.lock().expect("lock").push(r.clone())),
        shutdown.clone(),
    ));
    let mut waited = 0;
    while !done(&run) {
        assert!(waited < 200, "timed out; the log:\n{}", run.logs.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("the runner stops when asked")
        .expect("the runner ends without panicking");
    run
}

fn retries(gitlab: &Gitlab) -> u64 {
    gitlab.ctl.counters().get(RETRY).copied().unwrap_or(0)
}

#[tokio::test]
async fn with_the_ca_of_its_secret_a_policy_retries_a_job_over_https() {
    let pki = throwaway_pki();
    let gitlab = gitlab_over_https(pki.tls.clone()).await;
    let url = gitlab.sim.base_url().to_string();
    let manifests = [
        policy_manifest(&url, Some("gitlab-ca")),
        secret_manifest("gitlab", "token", TOKEN),
        secret_manifest("gitlab-ca", "ca.crt", &pki.ca_pem),
    ];
    let run = run_until(&gitlab, &manifests, |run| {
        run.reports.lock().expect("lock").iter().any(|r| {
            r.tally()
                .count(jobwarden::crd::ActionKind::Retry, OutcomeKind::Succeeded)
                > 0
        })
    })
    .await;
    assert_eq!(retries(&gitlab), 1);
    let job = gitlab.ctl.job(gitlab.project, gitlab.job).expect("the job");
    assert!(job.retried, "the failed job has a new attempt");
    let rendered = run.metrics.render();
    assert!(
        rendered.contains("jobwarden_policies{state=\"ready\"} 1"),
        "{rendered}"
    );
    assert!(!run.logs.text().contains(TOKEN));
    gitlab.sim.shutdown().await;
}

#[tokio::test]
async fn without_the_ca_the_certificate_error_is_reported_and_nothing_is_retried() {
    let pki = throwaway_pki();
    let gitlab = gitlab_over_https(pki.tls).await;
    let url = gitlab.sim.base_url().to_string();
    let manifests = [
        policy_manifest(&url, None),
        secret_manifest("gitlab", "token", TOKEN),
    ];
    let run = run_until(&gitlab, &manifests, |run| {
        run.logs.text().contains("reconcile failed")
    })
    .await;
    let logs = run.logs.text();
    let failure = logs
        .lines()
        .find(|line| line.contains("reconcile failed"))
        .expect("the failure is logged");
    assert!(failure.contains("ERROR"), "{failure}");
    assert!(
        failure.contains("invalid peer certificate") && failure.contains("UnknownIssuer"),
        "the log says why: {failure}"
    );
    assert!(!logs.contains(TOKEN));
    assert!(
        run.reports.lock().expect("lock").is_empty(),
        "no run reached GitLab"
    );
    assert_eq!(retries(&gitlab), 0);
    assert!(gitlab.ctl.counters().is_empty(), "no request got through");
    let rendered = run.metrics.render();
    assert!(
        rendered.contains("jobwarden_policies{state=\"error\"} 1"),
        "{rendered}"
    );
    gitlab.sim.shutdown().await;
}

#[tokio::test]
async fn a_ca_bundle_without_a_certificate_is_refused_naming_the_field() {
    let pki = throwaway_pki();
    let gitlab = gitlab_over_https(pki.tls).await;
    let url = gitlab.sim.base_url().to_string();
    let manifests = [
        policy_manifest(&url, Some("gitlab-ca")),
        secret_manifest("gitlab", "token", TOKEN),
        // The token pasted where the CA belongs.
        secret_manifest("gitlab-ca", "ca.crt", TOKEN),
    ];
    let run = run_until(&gitlab, &manifests, |run| {
        run.metrics
            .render()
            .contains("jobwarden_policies{state=\"error\"} 1")
    })
    .await;
    let logs = run.logs.text();
    assert!(
        logs.contains(
            "spec.gitlab.caBundleSecretRef: key \"ca.crt\" of Secret ci/gitlab-ca: holds no \
             certificate"
        ),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
    assert!(run.reports.lock().expect("lock").is_empty());
    assert!(gitlab.ctl.counters().is_empty(), "the policy never ran");
    gitlab.sim.shutdown().await;
}
