//! Every fault type is observable by a client, and the admin endpoint is never faulted.

mod sim_support;

use jobwarden::sim::FaultConfig;
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
