//! The HTTP side: the state shared by every request, and a TCP listener whose connections can
//! be killed from a handler (the "dropped connection" fault closes the socket before a single
//! byte of the answer is written).

use crate::sim::clock::{Clock, SimTime};
use crate::sim::faults::FaultInjector;
use crate::sim::hooks::HookHub;
use crate::sim::ratelimit::FixedWindow;
use crate::sim::reqlog::RequestLog;
use crate::sim::state::World;
pub(crate) use crate::sync::lock;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Everything the handlers share.
pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub clock: Clock,
    pub token: String,
    /// The instance URL for links, with a trailing slash.
    pub links_base: String,
    pub jobs_index_limit: Mutex<FixedWindow>,
    pub authenticated_api_limit: Mutex<FixedWindow>,
    pub faults: Mutex<FaultInjector>,
    pub log: Mutex<RequestLog>,
    pub shutdown: CancellationToken,
    pub request_seq: AtomicU64,
    /// The registered Job Hooks and their senders.
    pub hooks: HookHub,
}

impl Shared {
    pub fn now(&self) -> SimTime {
        self.clock.sim_now()
    }

    /// Locks the world. The job transitions made under the lock are handed to the webhooks
    /// when it is released (see [`WorldGuard`]).
    pub fn world(&self) -> WorldGuard<'_> {
        WorldGuard {
            shared: self,
            guard: lock(&self.world),
        }
    }

    /// Sleeps for `d` unless the simulator shuts down first; false if it did.
    pub async fn sleep(&self, d: Duration) -> bool {
        if d.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// The locked world. When it is released, the build transitions recorded meanwhile are
/// rendered and queued for the webhooks (still under the lock, so the payloads show the world
/// as the change left it; no HTTP is done here, queuing never waits).
pub(crate) struct WorldGuard<'a> {
    shared: &'a Shared,
    guard: MutexGuard<'a, World>,
}

impl Deref for WorldGuard<'_> {
    type Target = World;

    fn deref(&self) -> &World {
        &self.guard
    }
}

impl DerefMut for WorldGuard<'_> {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.guard
    }
}

impl Drop for WorldGuard<'_> {
    fn drop(&mut self) {
        if self.guard.hooks.is_empty() || std::thread::panicking() {
            return;
        }
        let faults = lock(&self.shared.faults).config().clone();
        self.shared.hooks.dispatch(&mut self.guard, &faults);
    }
}

/// Closes one connection from inside a handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCP stream that fails every read and write once its kill switch is triggered, so the
/// HTTP server gives up the connection and closes the socket.
#[derive(Debug)]
pub(crate) struct KillableStream {
    stream: TcpStream,
    kill: KillSwitch,
}

impl KillableStream {
    /// The switch that closes this connection.
    pub fn kill_switch(&self) -> KillSwitch {
        self.kill.clone()
    }
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.kill.is_triggered() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.kill.is_triggered() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.kill.is_triggered() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.kill.is_triggered() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The simulator's listener: plain TCP, each connection with a kill switch.
#[derive(Debug)]
pub(crate) struct SimListener {
    inner: TcpListener,
}

impl SimListener {
    pub fn new(inner: TcpListener) -> SimListener {
        SimListener { inner }
    }
}

impl Listener for SimListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Best effort: small answers should not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let io = KillableStream {
                        stream,
                        kill: KillSwitch::default(),
                    };
                    return (io, addr);
                }
                Err(err) => {
                    let transient = matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::Interrupted
                    );
                    if !transient {
                        tracing::warn!(error = %err, "simulator accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a handler knows about its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub kill: KillSwitch,
}

impl Connected<IncomingStream<'_, SimListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        ConnInfo {
            peer: *stream.remote_addr(),
            kill: stream.io().kill.clone(),
        }
    }
}
