//! The generated fleet (determinism, size, evolution), the admin endpoint, the request log and
//! the `jobwarden simulate` command.

mod sim_support;

use jobwarden::sim::{FleetConfig, JobSpec, PipelineSpec, SimConfig};
use serde_json::{Value, json};
use sim_support::*;
use std::time::Duration;

fn seeded(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        base_url_for_links: Some("https://gitlab.example.com".into()),
        ..config(4)
    }
}

async fn jobs_json(seed: u64) -> String {
    let sim = start(seeded(seed)).await;
    let mut bodies = String::new();
    for project in 1..=4 {
        let body = sim
            .get(&format!("/projects/{project}/jobs?per_page=100"))
            .await
            .text()
            .await
            .expect("text");
        bodies.push_str(&body);
    }
    sim.stop().await;
    bodies
}

#[tokio::test]
async fn the_same_seed_gives_the_same_jobs() {
    let a = jobs_json(42).await;
    let b = jobs_json(42).await;
    assert!(a.contains("https://gitlab.example.com/fleet/project-1/-/jobs/"));
    assert_eq!(a, b);
    assert_ne!(a, jobs_json(43).await);
}

#[tokio::test]
async fn two_thousand_projects_are_generated() {
    let sim = start(SimConfig {
        projects: 2000,
        ..config(0)
    })
    .await;
    let ids = sim.control.project_ids();
    assert_eq!(ids.len(), 2000);
    // Beyond the first three, projects live in the fleet's group tree, placed by the seed.
    let path = jobwarden::sim::project_path(1, 2000);
    assert_eq!(sim.control.project_path(2000), Some(path.clone()));
    assert!(path.starts_with("fleet/") && path.ends_with("/project-2000"));
    let encoded = path.replace('/', "%2F");
    let (status, jobs) = sim.get_json(&format!("/projects/{encoded}/jobs")).await;
    assert_eq!(status, 200);
    assert!(!jobs.as_array().expect("array").is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn the_fleet_moves_on_the_simulated_clock() {
    let sim = start(SimConfig {
        projects: 3,
        fleet: FleetConfig {
            new_pipeline_every: Some(Duration::from_secs(600)),
            max_pipelines_per_project: 50,
            ..FleetConfig::default()
        },
        ..config(0)
    })
    .await;
    let before: Vec<_> = (1..=3).flat_map(|p| sim.control.jobs(p)).collect();
    let unfinished = before
        .iter()
        .filter(|j| matches!(j.status.as_str(), "created" | "pending" | "running"))
        .count();
    assert!(unfinished > 0, "some jobs are still going");
    let pipelines_before = sim.control.pipelines(1).len();
    sim.control.advance(Duration::from_secs(3 * 3600));
    let after: Vec<_> = (1..=3).flat_map(|p| sim.control.jobs(p)).collect();
    assert!(after.len() > before.len(), "new pipelines appeared");
    assert!(sim.control.pipelines(1).len() > pipelines_before);
    let moved = before
        .iter()
        .filter(|old| {
            after
                .iter()
                .find(|new| new.id == old.id)
                .is_some_and(|new| new.status != old.status)
        })
        .count();
    assert!(moved > 0, "pending and running jobs moved on");
    sim.stop().await;
}

#[tokio::test]
async fn the_admin_endpoint_drives_scenarios_over_http() {
    let sim = start(config(1)).await;
    let admin = |path: &str| sim.url(path);
    let (status, now) = json_of(
        sim.client
            .get(admin("/-/sim/now"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, now),
        (200, json!({"now": "2026-11-23T10:00:00.000Z"}))
    );

    let created = sim
        .client
        .post(admin("/-/sim/projects/fleet%2Fproject-1/pipelines"))
        .json(&json!({
            "ref": "main",
            "jobs": [
                {"name": "build", "stage": "build", "status": "pending"},
                {"name": "deploy", "stage": "deploy", "status": "manual", "when": "manual",
                 "artifacts_expire_in_seconds": 60, "log": "hi\n", "age_seconds": 30}
            ]
        }))
        .send()
        .await
        .expect("request");
    let (status, pipeline) = json_of(created).await;
    assert_eq!(status, 201);
    let job_ids: Vec<u64> = pipeline["job_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect();
    assert_eq!(job_ids.len(), 2);

    let advanced = sim
        .client
        .post(admin("/-/sim/clock/advance?seconds=12.5"))
        .send()
        .await
        .expect("request");
    let (_, now) = json_of(advanced).await;
    assert_eq!(now["now"], "2026-11-23T10:00:12.500Z");

    let set = sim
        .client
        .post(admin(&format!(
            "/-/sim/projects/1/jobs/{}/status",
            job_ids[0]
        )))
        .json(&json!({"status": "running"}))
        .send()
        .await
        .expect("request");
    let (status, job) = json_of(set).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "running");
    let token = job["token"].as_str().expect("token").to_owned();
    let current = sim
        .client
        .get(sim.api("/job"))
        .header("JOB-TOKEN", token)
        .send()
        .await
        .expect("request");
    assert_eq!(current.status(), 200);

    let bad = sim
        .client
        .post(admin(&format!(
            "/-/sim/projects/1/jobs/{}/status",
            job_ids[0]
        )))
        .json(&json!({"status": "done"}))
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 400);

    let (_, snapshot) = json_of(
        sim.client
            .get(admin(&format!("/-/sim/projects/1/jobs/{}", job_ids[1])))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(snapshot["when"], "manual");
    assert_eq!(snapshot["created_at"], "2026-11-23T09:59:30Z");

    let (_, log) = json_of(
        sim.client
            .get(admin("/-/sim/requests"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    let mut log = log;
    let client = log[0]
        .as_object_mut()
        .and_then(|entry| entry.remove("client"))
        .expect("the client's address is logged");
    assert!(
        client.as_str().is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{client}"
    );
    assert_eq!(
        log,
        json!([{"method": "GET", "endpoint": "/job", "path": "/api/v4/job", "query": "", "status": 200,
                // 10:00:12.5, after the clock was advanced by 12.5 s.
                "at": 1_795_428_012_500_i64}])
    );
    let (_, counters) = json_of(
        sim.client
            .get(admin("/-/sim/counters"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(counters, json!({"GET /job": 1}));
    let reset = sim
        .client
        .post(admin("/-/sim/reset"))
        .send()
        .await
        .expect("request");
    assert_eq!(reset.status(), 204);
    assert!(sim.control.request_log().is_empty());

    let faults = sim
        .client
        .put(admin("/-/sim/faults"))
        .json(&json!({"rate_limit_burst_every": 1}))
        .send()
        .await
        .expect("request");
    assert_eq!(faults.status(), 200);
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 429);
    let refused = sim
        .client
        .put(admin("/-/sim/faults"))
        .json(&json!({"drop_connection_ratio": 2.0}))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    let cleared = sim
        .client
        .put(admin("/-/sim/faults"))
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(cleared.status(), 200);
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);

    let (status, project) = json_of(
        sim.client
            .post(admin("/-/sim/projects"))
            .json(&json!({"path": "group/project"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(project["path"], "group/project");
    assert_eq!(
        sim.get("/projects/group%2Fproject/jobs").await.status(),
        200
    );
    sim.stop().await;
}

#[tokio::test]
async fn the_request_log_records_templates_and_statuses() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(
        1,
        PipelineSpec::new("main", vec![JobSpec::new("a", "test", "failed")]),
    );
    sim.get("/projects/fleet%2Fproject-1/jobs?scope[]=failed")
        .await;
    sim.post(&format!("/projects/1/jobs/{}/retry", p.job_ids[0]))
        .await;
    sim.get("/projects/1/unknown").await;
    let log = sim.control.request_log();
    let summary: Vec<(&str, &str, u16)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.endpoint, r.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/projects/:id/jobs", 200),
            ("POST", "/projects/:id/jobs/:job_id/retry", 201),
            ("GET", "unknown", 404),
        ]
    );
    assert_eq!(log[0].path, "/api/v4/projects/fleet%2Fproject-1/jobs");
    assert_eq!(log[0].query, "scope[]=failed");
    let counters = sim.control.counters();
    assert_eq!(counters.get("GET /projects/:id/jobs"), Some(&1));
    assert_eq!(
        counters.get("POST /projects/:id/jobs/:job_id/retry"),
        Some(&1)
    );
    sim.control.reset_log();
    assert!(sim.control.counters().is_empty());
    sim.stop().await;
}

/// Clients sharing one token (replicas of one controller) are told apart by their address:
/// each of two connections is logged with its own local `ip:port`, in the log and on
/// `GET /-/sim/requests`.
#[tokio::test]
async fn the_request_log_records_each_clients_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(config(1)).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(sim.handle.local_addr())
            .await
            .expect("connect");
        let request = format!(
            "GET /api/v4/projects/1/jobs HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        clients.push(stream.local_addr().expect("local address").to_string());
    }
    assert_ne!(clients[0], clients[1]);
    let logged: Vec<String> = sim
        .control
        .request_log()
        .into_iter()
        .map(|r| r.client)
        .collect();
    assert_eq!(logged, clients);
    let wire: Value = sim
        .client
        .get(sim.url("/-/sim/requests"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(wire[1]["client"], clients[1].as_str());
    sim.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_simulate_command_prints_its_address_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;

    let mut child = Command::new(env!("CARGO_BIN_EXE_jobwarden"))
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--projects",
            "2",
            "--churn-secs",
            "0",
        ])
        .env("JOBWARDEN_SIM_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the first line comes")
        .expect("readable")
        .expect("a line");
    let url = first
        .strip_prefix("jobwarden simulator listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    let addr: std::net::SocketAddr = url.parse().expect("an address");
    assert_ne!(addr.port(), 0);

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let response = client
        .get(format!(
            "http://{addr}/api/v4/projects/fleet%2Fproject-2/jobs"
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body.as_array().is_some_and(|a| !a.is_empty()));

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("it stops")
        .expect("exit status");
    assert!(status.success(), "{status}");
}
