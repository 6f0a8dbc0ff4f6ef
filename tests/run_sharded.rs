//! `jobwarden run --policies DIR --shard-index I --shard-count N` as a process: file mode splits
//! the projects like cluster mode, so N processes (one per index) share a fleet without a
//! Kubernetes API, each listing only the projects that hash to it.

mod sim_support;

use jobwarden::engine::shard::owner_of_project;
use jobwarden::gitlab::instance_name;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROJECTS: u64 = 24;
const SHARDS: u32 = 2;

/// A policy over projects 1..=PROJECTS of the simulator at `url`, and its token Secret.
fn write_policy(dir: &std::path::Path, url: &str) {
    let projects: Vec<String> = (1..=PROJECTS).map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: fleet, namespace: ci}}
spec:
  gitlab: {{url: \"{url}\", tokenSecretRef: {{name: gitlab, key: token}}}}
  projects: [{}]
  interval: 1h
  rules:
    - name: retry-stuck
      match: {{statuses: [failed], failureReasons: [stuck_or_timeout_failure]}}
      retry: {{limit: 2}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gitlab, namespace: ci}}
stringData: {{token: {}}}
",
            projects.join(", "),
            sim_support::TOKEN
        ),
    )
    .expect("write the policy");
}

/// Runs `jobwarden run` as shard `index` until its first run of the policy is logged (on
/// stderr), at most 60 s.
fn run_shard_once(dir: &std::path::Path, index: u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobwarden"))
        .args(["run", "--policies"])
        .arg(dir)
        .args(["--metrics-listen", "127.0.0.1:0", "--allow-insecure-http"])
        .args(["--shard-index", &index.to_string()])
        .args(["--shard-count", &SHARDS.to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jobwarden starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, logged) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reconciled = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match logged.recv_timeout(left) {
            Ok(line) if line.contains("reconciled") => {
                reconciled = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(reconciled, "shard {index} logged no run within 60 s");
}

/// The project ids of the job listings in `log` made since entry `from`.
fn listed_projects(log: &[jobwarden::sim::LoggedRequest], from: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = log[from..]
        .iter()
        .filter(|r| r.method == "GET" && r.endpoint == "/projects/:id/jobs")
        .filter_map(|r| r.path.split('/').nth(4)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_file_mode_shard_lists_only_its_own_projects_and_together_they_list_all() {
    let sim = sim_support::start(sim_support::config(PROJECTS as u32)).await;
    let url = sim.handle.base_url();
    let instance = instance_name(&url);
    let dir = tempfile::tempdir().expect("temporary directory");
    write_policy(dir.path(), url.as_str());

    let mut covered = Vec::new();
    for index in 0..SHARDS {
        let from = sim.control.request_log().len();
        let dir_path = dir.path().to_owned();
        tokio::task::spawn_blocking(move || run_shard_once(&dir_path, index))
            .await
            .expect("shard run");
        let listed = listed_projects(&sim.control.request_log(), from);
        let expected: Vec<u64> = (1..=PROJECTS)
            .filter(|p| owner_of_project(&instance, *p, SHARDS) == index)
            .collect();
        assert!(
            !expected.is_empty(),
            "both shards own projects of 24 (hashing)"
        );
        assert_eq!(
            listed, expected,
            "shard {index} lists exactly the projects it owns"
        );
        covered.extend(listed);
    }
    covered.sort_unstable();
    assert_eq!(covered, (1..=PROJECTS).collect::<Vec<_>>());
    sim.stop().await;
}
