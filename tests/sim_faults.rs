//! Every fault type is observable by a client, and the admin endpoint is never faulted.

mod sim_support;

use jobwarden::sim::{FaultConfig, JobSpec, PipelineSpec};
use sim_support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn server_errors_look_like_gitlab() {
    let sim = start(config(1)).await;
    sim.control.set_faults(FaultConfig {
        error_5xx_ratio: 1.0,
        ..FaultConfig::default()
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let response = sim.get("/projects/1/jobs").await;
        let status = response.status().as_u16();
        let content_type = header(&response, "content-type").unwrap_or_default();
        let body = response.text().await.expect("body");
        match status {
            500 => assert_eq!(body, r#"{"message":"500 Internal Server Error"}"#),
            503 => assert_eq!(body, r#"{"message":"503 Service Unavailable"}"#),
            502 => assert!(content_type.starts_with("text/html") && body.contains("502")),
            other => panic!("unexpected status {other}"),
        }
        seen.insert(status);
    }
    assert_eq!(seen.len(), 3, "all of 500, 502, 503 occur: {seen:?}");
    assert!(sim.control.request_log().iter().all(|r| r.status >= 500));
    sim.stop().await;
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sim = start(config(1)).await;
    sim.control.set_faults(FaultConfig {
        latency: Duration::from_millis(250),
        ..FaultConfig::default()
    });
    let started = Instant::now();
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
    sim.stop().await;
}

#[tokio::test]
async fn held_requests_time_out_clients_and_do_not_block_shutdown() {
    let sim = start(config(1)).await;
    sim.control.set_faults(FaultConfig {
        timeout_ratio: 1.0,
        ..FaultConfig::default()
    });
    let error = sim
        .request(reqwest::Method::GET, "/projects/1/jobs")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("the request is held for 30 s");
    assert!(error.is_timeout(), "{error}");
    // Shutting down ends the held request instead of waiting 30 s.
    tokio::time::timeout(Duration::from_secs(20), sim.stop())
        .await
        .expect("shutdown is not held up");
}

fn one_manual_job(sim: &Sim) -> u64 {
    let pipeline = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![JobSpec::new("deploy", "deploy", "manual").manual()],
        ),
    );
    pipeline.job_ids[0]
}

async fn wait_for_status(sim: &Sim, job: u64, status: &str) {
    for _ in 0..100 {
        if sim.control.job(1, job).map(|j| j.status) == Some(status.to_owned()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job} never became {status}");
}

#[tokio::test]
async fn a_held_mutation_takes_effect_though_its_client_gave_up() {
    let sim = start(config(1)).await;
    let job = one_manual_job(&sim);
    sim.control.set_faults(FaultConfig {
        timeout_ratio: 1.0,
        timeout_hold: Duration::from_millis(600),
        ..FaultConfig::default()
    });
    let error = sim
        .request(
            reqwest::Method::POST,
            &format!("/projects/1/jobs/{job}/play"),
        )
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .expect_err("the request is held past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(sim.control.job(1, job).expect("job").status, "manual");
    wait_for_status(&sim, job, "pending").await;
    let log = sim.control.request_log();
    let play = log.last().expect("logged");
    assert_eq!(
        (play.endpoint, play.status),
        ("/projects/:id/jobs/:job_id/play", 200)
    );
    sim.stop().await;
}

#[tokio::test]
async fn an_apply_late_mutation_leaves_the_client_without_an_answer_and_lands_later() {
    let sim = start(config(1)).await;
    let job = one_manual_job(&sim);
    sim.control.set_faults(FaultConfig {
        apply_late_ratio: 1.0,
        apply_late_after: Duration::from_millis(300),
        ..FaultConfig::default()
    });
    // GETs are never applied late.
    assert_eq!(
        sim.get(&format!("/projects/1/jobs/{job}")).await.status(),
        200
    );
    let error = sim
        .request(
            reqwest::Method::POST,
            &format!("/projects/1/jobs/{job}/play"),
        )
        .send()
        .await
        .expect_err("no answer");
    assert!(!error.is_timeout(), "closed at once, not held: {error}");
    assert_eq!(sim.control.job(1, job).expect("job").status, "manual");
    wait_for_status(&sim, job, "pending").await;
    let plays: Vec<(u16, bool)> = sim
        .control
        .request_log()
        .iter()
        .filter(|r| r.endpoint.ends_with("/play"))
        .map(|r| (r.status, r.applied_late))
        .collect();
    assert_eq!(plays, [(0, false), (200, true)]);
    assert_eq!(
        sim.control
            .counters()
            .get("POST /projects/:id/jobs/:job_id/play"),
        Some(&1),
        "counted once"
    );
    sim.stop().await;
}

#[tokio::test]
async fn bursts_answer_rack_attack_429s() {
    let sim = start(config(1)).await;
    sim.control.set_faults(FaultConfig {
        rate_limit_burst_every: Some(2),
        ..FaultConfig::default()
    });
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);
    let throttled = sim.get("/projects/1/jobs").await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(
        header(&throttled, "content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(header(&throttled, "retry-after").as_deref(), Some("60"));
    assert_eq!(
        header(&throttled, "ratelimit-name").as_deref(),
        Some("throttle_authenticated_api")
    );
    assert_eq!(
        header(&throttled, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert!(header(&throttled, "ratelimit-resettime").is_some());
    assert_eq!(throttled.text().await.expect("text"), "Retry later\n");
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn malformed_json_is_cut_off() {
    let sim = start(config(1)).await;
    let intact = sim
        .get("/projects/1/jobs")
        .await
        .text()
        .await
        .expect("text");
    sim.control.set_faults(FaultConfig {
        malformed_json_ratio: 1.0,
        ..FaultConfig::default()
    });
    let response = sim.get("/projects/1/jobs").await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("text");
    assert!(!body.is_empty() && body.len() < intact.len());
    assert!(intact.starts_with(&body));
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    sim.stop().await;
}

#[tokio::test]
async fn dropped_connections_get_no_answer_at_all() {
    let sim = start(config(1)).await;
    sim.control.set_faults(FaultConfig {
        drop_connection_ratio: 1.0,
        ..FaultConfig::default()
    });
    let error = sim
        .request(reqwest::Method::GET, "/projects/1/jobs")
        .send()
        .await
        .expect_err("no answer");
    assert!(!error.is_timeout(), "{error}");

    // On the wire: the server closes the socket without writing a byte.
    let mut stream = tokio::net::TcpStream::connect(sim.handle.local_addr())
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "GET /api/v4/projects/1/jobs HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok() || received.is_empty());
    assert!(
        received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(sim.control.request_log().iter().all(|r| r.status == 0));

    // The admin endpoint is never faulted.
    let now = sim
        .client
        .get(sim.url("/-/sim/now"))
        .send()
        .await
        .expect("request");
    assert_eq!(now.status(), 200);
    sim.stop().await;
}
