//! Streaming logs and artifacts: chunk by chunk into the writer, never buffered whole; retried
//! only before the first byte; a per-chunk timeout rather than a total one.

mod support;

use axum::body::Body;
use bytes::Bytes;
use jobwarden::gitlab::{GitLabClient, GitLabError, ProjectRef, TransportFailure};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use support::{MockServer, json, respond, test_client, test_config};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// The byte at `position` of the test payloads.
fn pattern(position: usize) -> u8 {
    (position % 251) as u8
}

fn payload_chunk(start: usize, len: usize) -> Bytes {
    (start..start + len)
        .map(pattern)
        .collect::<Vec<u8>>()
        .into()
}

/// A writer that keeps nothing: it counts, checks every byte against the pattern, and signals
/// once `signal_after` bytes have arrived.
struct CountingWriter {
    written: usize,
    corrupt: bool,
    signal_after: usize,
    signal: Option<oneshot::Sender<()>>,
}

impl AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let start = self.written;
        if buf
            .iter()
            .enumerate()
            .any(|(i, b)| *b != pattern(start + i))
        {
            self.corrupt = true;
        }
        self.written += buf.len();
        if self.written >= self.signal_after
            && let Some(signal) = self.signal.take()
        {
            let _ = signal.send(());
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_20_mib_archive_streams_into_the_writer_without_being_buffered() {
    // The server sends the second half only once the writer holds part of the first: a client
    // that buffered the whole body before writing would never get it (and time out).
    let (signal, first_half_written) = oneshot::channel::<()>();
    let gate = Mutex::new(Some(first_half_written));
    let server = MockServer::start(move |_, _| {
        let gate = gate.lock().unwrap().take();
        let half = 10 * MIB;
        let first = futures::stream::iter(
            (0..half)
                .step_by(CHUNK)
                .map(|start| Ok::<_, std::io::Error>(payload_chunk(start, CHUNK))),
        );
        let second = futures::stream::once(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            futures::stream::iter(
                (half..2 * half)
                    .step_by(CHUNK)
                    .map(|start| Ok::<_, std::io::Error>(payload_chunk(start, CHUNK))),
            )
        });
        use futures::StreamExt;
        let body = Body::from_stream(first.chain(second.flatten()));
        respond(200, &[("content-type", "application/zip")], body)
    })
    .await;
    let client = test_client(&server);
    let mut writer = CountingWriter {
        written: 0,
        corrupt: false,
        signal_after: MIB,
        signal: Some(signal),
    };
    let written = tokio::time::timeout(
        Duration::from_secs(120),
        client.download_artifacts(&ProjectRef::parse("g/p"), 7, &mut writer),
    )
    .await
    .expect("the download finished (a buffering client would have waited forever)")
    .unwrap();
    assert_eq!(written, 20 * MIB as u64);
    assert_eq!(writer.written, 20 * MIB);
    assert!(!writer.corrupt);
}

#[tokio::test]
async fn the_log_tail_keeps_the_last_bytes_of_a_long_log() {
    let log: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    let expected_tail = log[log.len() - 1000..].to_owned();
    let server = MockServer::start(move |_, _| {
        let chunks: Vec<Result<Bytes, std::io::Error>> = log
            .as_bytes()
            .chunks(7_777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        respond(
            200,
            &[("content-type", "text/plain")],
            Body::from_stream(futures::stream::iter(chunks)),
        )
    })
    .await;
    let tail = test_client(&server)
        .job_log_tail(&ProjectRef::Id(1), 9, 1000)
        .await
        .unwrap();
    assert_eq!(tail, expected_tail);
    assert!(tail.ends_with("line 99999\n"));
}

#[tokio::test]
async fn a_whole_log_is_written_out() {
    let server =
        MockServer::start(|_, _| respond(200, &[("content-type", "text/plain")], "$ make\nok\n"))
            .await;
    let mut out = Vec::new();
    let written = test_client(&server)
        .download_job_log(&ProjectRef::Id(1), 9, &mut out)
        .await
        .unwrap();
    assert_eq!(written, 10);
    assert_eq!(out, b"$ make\nok\n");
}

#[tokio::test]
async fn a_download_is_retried_before_its_first_byte() {
    let server = MockServer::start(|_, index| match index {
        0 => respond(503, &[], "busy"),
        _ => respond(200, &[], "archive"),
    })
    .await;
    let mut out = Vec::new();
    test_client(&server)
        .download_artifacts(&ProjectRef::Id(1), 2, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"archive");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_download_that_breaks_off_is_an_error_and_not_repeated() {
    let server = MockServer::start(|_, _| {
        use futures::StreamExt;
        let first = futures::stream::iter([Ok(Bytes::from_static(b"first part"))]);
        // The pause lets the first part reach the client before the connection breaks.
        let broken = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "gone",
            ))
        });
        respond(200, &[], Body::from_stream(first.chain(broken)))
    })
    .await;
    let mut out = Vec::new();
    let err = test_client(&server)
        .download_artifact_file(&ProjectRef::Id(1), 2, "report.xml", &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert_eq!(out, b"first part");
    assert_eq!(
        server.request_count(),
        1,
        "the writer already holds part of the body"
    );
}

#[tokio::test]
async fn a_stalled_download_times_out_per_chunk() {
    let server = MockServer::start(|_, _| {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"start"))]);
        let stall = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"never"))
        });
        use futures::StreamExt;
        respond(200, &[], Body::from_stream(first.chain(stall)))
    })
    .await;
    let mut config = test_config(&server);
    config.timeout = Duration::from_millis(300);
    let client = GitLabClient::new(config).unwrap();
    let mut out = Vec::new();
    let err = client
        .download_artifacts(&ProjectRef::Id(1), 2, &mut out)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GitLabError::Transport {
                failure: TransportFailure::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(out, b"start");
}

#[tokio::test]
async fn a_slow_but_steady_download_may_take_longer_than_the_timeout() {
    let server = MockServer::start(|_, _| {
        use futures::StreamExt;
        let chunks = futures::stream::iter(0..6).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::io::Error>(Bytes::from(format!("chunk {i};")))
        });
        respond(200, &[], Body::from_stream(chunks))
    })
    .await;
    let mut config = test_config(&server);
    config.timeout = Duration::from_secs(1);
    let client = GitLabClient::new(config).unwrap();
    let mut out = Vec::new();
    client
        .download_artifacts(&ProjectRef::Id(1), 2, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"chunk 0;chunk 1;chunk 2;chunk 3;chunk 4;chunk 5;");
}

#[tokio::test]
async fn missing_artifacts_are_not_found_and_nothing_is_written() {
    let server =
        MockServer::start(|_, _| json(404, &[], &serde_json::json!({"message": "404 Not found"})))
            .await;
    let mut out = Vec::new();
    let err = test_client(&server)
        .download_artifacts_by_ref(&ProjectRef::Id(1), "main", "build", &mut out)
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert!(out.is_empty());
    assert_eq!(server.request_count(), 1);
}

struct FailingWriter;

impl AsyncWrite for FailingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "disk full",
        )))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failing_writer_is_a_write_error() {
    let server = MockServer::start(|_, _| respond(200, &[], "data")).await;
    let err = test_client(&server)
        .download_job_log(&ProjectRef::Id(1), 2, &mut FailingWriter)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "write");
    assert!(err.to_string().contains("disk full"), "{err}");
}

#[tokio::test]
async fn downloads_can_run_on_spawned_tasks() {
    let server = MockServer::start(|_, _| respond(200, &[], "archive")).await;
    let client = test_client(&server);
    let bytes = tokio::spawn(async move {
        let mut out = Vec::new();
        client
            .download_artifacts(&ProjectRef::Id(1), 2, &mut out)
            .await
            .map(|_| out)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(bytes, b"archive");
}
