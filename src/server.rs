//! The operational HTTP endpoints: `GET /metrics` (Prometheus text format), `GET /healthz`
//! (liveness: 200 while the process serves) and `GET /readyz` (readiness: 200 when the process
//! knows what it has to do, else 503 with the reason).
//!
//! What ready means depends on the mode of `jobwarden run`:
//!
//! - file mode (`--policies`): the policy files have been loaded once and a task started for
//!   every runnable policy ([`run_policies`](crate::source::files::runner::run_policies)); a
//!   manifest with errors does not hold readiness back (it is logged and counted as `invalid`);
//! - cluster mode: the leader election knows this replica's role, and
//!   ([`source::kube::readiness`](crate::source::kube::readiness)):
//!   - a standby that follows a known leader is ready (it serves metrics and forwards webhook
//!     deliveries to the leader);
//!   - the leader is ready once its JobPolicy watch has listed every policy (the reflector's
//!     store holds the initial list), and not ready from the moment it wins the Lease until
//!     then;
//!   - a replica still campaigning, with no leader known (the Lease cannot be read yet, or was
//!     just lost), is not ready.
//!
//! `jobwarden demo` is ready once its embedded policies are loaded, as in file mode.
//!
//! [`router`] is public so that further routes (the GitLab webhook) can be merged into the same
//! listener.

use crate::metrics::{self, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Command-line flags of the HTTP endpoints, to `#[command(flatten)]` into a subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where /metrics, /healthz and /readyz are served: loopback unless told otherwise (the
    /// Deployment passes 0.0.0.0:9090).
    #[arg(
        long,
        env = "JOBWARDEN_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub metrics_listen: SocketAddr,
}

/// Whether the process is ready to do its work, shared between the engine (which sets it) and
/// the `/readyz` endpoint (which reports it). Clones share the same state.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<RwLock<Result<(), String>>>,
}

impl Readiness {
    /// Not ready yet, for `reason` (shown by `/readyz`).
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness {
            state: Arc::new(RwLock::new(Err(reason.into()))),
        }
    }

    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.set(Ok(()));
    }

    /// Marks the process not ready, for `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(Err(reason.into()));
    }

    /// Sets the state: `Ok` when ready, else the reason it is not.
    pub fn set(&self, status: Result<(), String>) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// `Ok` when ready, else the reason it is not.
    pub fn status(&self) -> Result<(), String> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }
}

/// What the endpoints serve.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The metrics rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The readiness reported by `/readyz`.
    pub ready: Readiness,
}

impl ServerState {
    /// State serving `metrics`, not ready until the engine calls [`Readiness::set_ready`].
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ServerState {
            metrics,
            ready: Readiness::not_ready("starting"),
        }
    }
}

/// The routes `/metrics`, `/healthz` and `/readyz` over `state`.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The bounds on the connections the server holds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers before its connection is
    /// closed.
    pub header_read_timeout: Duration,
    /// The longest a connection is served; a scraper reconnects.
    pub max_age: Duration,
    /// The most connections served at once; more are closed as soon as they are accepted, so
    /// idle or slow clients cannot use up the process's file descriptors.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            max_connections: 64,
        }
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes, then finishes the requests in
/// flight and returns; with the default [`ConnectionLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_within(listener, state, shutdown, ConnectionLimits::default()).await
}

/// [`serve`], with every connection bounded by `limits`.
pub async fn serve_within(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    serve_app(
        listener,
        router(state),
        "serving /metrics, /healthz, /readyz",
        shutdown,
        limits,
    )
    .await
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then finishes the
/// requests in flight. `what` is logged once with the address.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "{what}");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let stopping = tokio_util::sync::CancellationToken::new();
    let connections = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a moment, do not spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "connection closed: {} connections open", limits.max_connections);
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stopping = stopping.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            let ends = tokio::select! {
                served = connection.as_mut() => Some(served),
                () = stopping.cancelled() => None,
                () = tokio::time::sleep(limits.max_age) => None,
            };
            let served = match ends {
                Some(served) => served,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "connection ended");
            }
            drop(slot);
        });
    }
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// `/metrics`: the exposition is sent piece by piece as it is rendered
/// ([`Metrics::render_next`]), so a scrape of a large fleet never holds the whole text.
async fn metrics_handler(State(state): State<ServerState>) -> Response {
    let pieces = futures::stream::unfold(
        (state.metrics, metrics::Exposition::default()),
        |(metrics, mut at)| async move {
            let piece = metrics.render_next(&mut at)?;
            Some((Ok::<_, std::convert::Infallible>(piece), (metrics, at)))
        },
    );
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(state): State<ServerState>) -> Response {
    match state.ready.status() {
        Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;

/// A server running in the background.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where it listens (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The readiness `/readyz` reports.
    pub ready: Readiness,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Waits until the server has stopped (after the shutdown token fired).
    pub async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "metrics server stopped with an error"),
            Err(err) => tracing::warn!(error = %err, "metrics server task failed"),
        }
    }
}

/// Binds `addr` and serves the endpoints in the background until `shutdown` is cancelled.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}"))
    })?;
    let local_addr = listener.local_addr()?;
    let state = ServerState::new(metrics);
    let ready = state.ready.clone();
    let task = tokio::spawn(serve(listener, state, async move {
        shutdown.cancelled_owned().await;
    }));
    Ok(ServerHandle {
        local_addr,
        ready,
        task,
    })
}
