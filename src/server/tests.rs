use super::*;
use crate::gitlab::telemetry::RequestObserver;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on 127.0.0.1:0, with the handle to stop it.
struct Running {
    base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(state: ServerState) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Running { base, stop, task }
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("server stops after the shutdown signal")
            .expect("server task does not panic");
        result.expect("server returns Ok");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test]
async fn metrics_are_scraped_in_the_text_format() {
    let metrics = Arc::new(Metrics::new());
    metrics.on_request("/projects/:id/jobs", Some(200), Duration::from_millis(5));
    metrics.count_action("ci-ops", "hygiene", "retry-transient", "retry", "succeeded");
    let server = start(ServerState::new(metrics.clone())).await;

    let response = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains(
        r#"jobwarden_gitlab_requests_total{code="200",endpoint="/projects/:id/jobs"} 1"#
    ));
    assert!(body.contains("# TYPE jobwarden_actions_total counter"));

    // A later scrape sees later recordings.
    metrics.on_request("/projects/:id/jobs", Some(200), Duration::from_millis(5));
    let body = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert!(body.contains(
        r#"jobwarden_gitlab_requests_total{code="200",endpoint="/projects/:id/jobs"} 2"#
    ));

    server.shut_down().await;
}

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let server = start(ServerState::new(Arc::new(Metrics::new()))).await;
    let response = client()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "ok\n");
    server.shut_down().await;
}

#[tokio::test]
async fn readyz_follows_the_readiness_flag() {
    let state = ServerState::new(Arc::new(Metrics::new()));
    let readiness = state.ready.clone();
    let server = start(state).await;
    let readyz = || async {
        let response = client()
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("readyz");
        (response.status(), response.text().await.expect("body"))
    };

    let (status, body) = readyz().await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: starting\n");

    readiness.set_ready();
    assert_eq!(
        readyz().await,
        (reqwest::StatusCode::OK, "ready\n".to_owned())
    );

    readiness.set_not_ready("lost the connection to the Kubernetes API");
    let (status, body) = readyz().await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("lost the connection to the Kubernetes API"));

    server.shut_down().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let server = start(ServerState::new(Arc::new(Metrics::new()))).await;
    let not_found = client()
        .get(format!("{}/webhook", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(not_found.status(), reqwest::StatusCode::NOT_FOUND);
    let wrong_method = client()
        .post(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(
        wrong_method.status(),
        reqwest::StatusCode::METHOD_NOT_ALLOWED
    );
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    let server = start(ServerState::new(Arc::new(Metrics::new()))).await;
    let base = server.base.clone();
    server.shut_down().await;
    let after = client().get(format!("{base}/healthz")).send().await;
    assert!(after.is_err(), "still answering after shutdown: {after:?}");
}

#[test]
fn readiness_clones_share_state() {
    let readiness = Readiness::not_ready("starting");
    let clone = readiness.clone();
    assert_eq!(clone.status(), Err("starting".to_owned()));
    readiness.set_ready();
    assert!(clone.is_ready());
}

#[test]
fn the_listen_flag_parses_a_socket_address() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }
    let cli = Cli::try_parse_from(["jobwarden", "--metrics-listen", "0.0.0.0:9090"])
        .expect("valid address");
    assert_eq!(
        cli.server.metrics_listen,
        "0.0.0.0:9090"
            .parse::<std::net::SocketAddr>()
            .expect("address")
    );
    let default = Cli::try_parse_from(["jobwarden"]).expect("a default");
    assert!(
        default.server.metrics_listen.ip().is_loopback(),
        "loopback by default"
    );
    assert!(Cli::try_parse_from(["jobwarden", "--metrics-listen", "not-an-address"]).is_err());
}

/// A server with short connection bounds: 300 ms to send headers, two connections at most.
async fn start_bounded() -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(300),
        max_age: Duration::from_secs(60),
        max_connections: 2,
    };
    let state = ServerState::new(Arc::new(Metrics::new()));
    tokio::spawn(serve_within(
        listener,
        state,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));
    (addr, stop)
}

/// Reads until the server closes the connection (or 5 s pass); returns what was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .ok()
        .map(|_| got)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop) = start_bounded().await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert!(
        read_until_closed(&mut slow).await.is_some(),
        "the server closes a connection whose headers never end"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_healthz_answers_once_slots_free() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop) = start_bounded().await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third).await.expect("closed at once");
    assert!(answer.is_empty(), "no answer beyond the cap");

    // The idle connections time out; then /healthz answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let body = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("healthz answers")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "ok\n");
    drop(idle);
}
