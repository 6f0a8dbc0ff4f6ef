//! HTTPS for the simulator (`simulate --tls-cert PATH --tls-key PATH`): the same API over TLS,
//! for testing a GitLab behind a private CA. rustls with its ring provider, as reqwest and kube
//! use it.
//!
//! Handshakes run beside the accept loop, not in it: a client that connects and says nothing
//! holds up no one, and is dropped after [`HANDSHAKE_TIMEOUT`]. At most
//! [`MAX_HANDSHAKES`] run at once.

use crate::sim::server::{ConnInfo, KillableStream, SimListener};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the accept loop waits for a free slot.
pub const MAX_HANDSHAKES: usize = 64;

/// The certificate chain and private key the simulator serves HTTPS with. Cheap to clone.
#[derive(Clone)]
pub struct SimTls {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTls").finish_non_exhaustive()
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl SimTls {
    /// From PEM: the server certificate first, then any intermediates (`cert_chain`), and its
    /// private key (PKCS#8, PKCS#1 or SEC1). Fails when either is missing or malformed, or when
    /// they do not belong together.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<SimTls> {
        let certificates = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("the TLS certificate is not valid PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(invalid(
                "the TLS certificate file holds no certificate".into(),
            ));
        }
        // The key's own error could quote a line of it: say only that it is missing or bad.
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| invalid("the TLS key file holds no valid PEM private key".into()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("no TLS protocol version: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(|e| invalid(format!("the TLS certificate and key are unusable: {e}")))?;
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(SimTls {
            config: Arc::new(config),
        })
    }

    /// From the PEM files `cert_chain` and `key` (`--tls-cert`, `--tls-key`); errors name them.
    pub fn from_files(cert_chain: &Path, key: &Path) -> io::Result<SimTls> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })
        };
        SimTls::from_pem(&read(cert_chain)?, &read(key)?)
            .map_err(|e| invalid(format!("{e} ({}, {})", cert_chain.display(), key.display())))
    }
}

/// A connection whose handshake succeeded, and its peer.
type Handshaken = (TlsStream<KillableStream>, SocketAddr);

/// The simulator's HTTPS listener: TCP connections (each with its kill switch, as over plain
/// HTTP), handed to the server once their TLS handshake succeeded.
pub(crate) struct TlsSimListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<Handshaken>,
    acceptor: JoinHandle<()>,
}

impl fmt::Debug for TlsSimListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSimListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsSimListener {
    /// Starts accepting on `listener`, bound to `local_addr` (the accept loop stops when this
    /// is dropped).
    pub fn new(listener: TcpListener, local_addr: SocketAddr, tls: &SimTls) -> TlsSimListener {
        let (send, ready) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tokio::spawn(accept_loop(
            SimListener::new(listener),
            TlsAcceptor::from(Arc::clone(&tls.config)),
            send,
        ));
        TlsSimListener {
            local_addr,
            ready,
            acceptor,
        }
    }
}

impl Drop for TlsSimListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Accepts TCP connections and runs each one's handshake in a task of its own.
async fn accept_loop(mut tcp: SimListener, tls: TlsAcceptor, ready: mpsc::Sender<Handshaken>) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (io, peer) = tcp.accept().await;
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io)).await {
                Ok(Ok(stream)) => {
                    // The server is gone when this fails: the connection just closes.
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "simulator TLS handshake failed");
                }
                Err(_) => tracing::debug!(%peer, "simulator TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsSimListener {
    type Io = TlsStream<KillableStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // Never: the accept loop holds a sender until this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl Connected<IncomingStream<'_, TlsSimListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TlsSimListener>) -> Self {
        let (tcp, _) = stream.io().get_ref();
        ConnInfo {
            peer: *stream.remote_addr(),
            kill: tcp.kill_switch(),
        }
    }
}

/// A throwaway PKI for tests: a CA, and a server certificate it signed for `127.0.0.1` and
/// `localhost`.
#[cfg(test)]
pub(crate) struct TestPki {
    /// The CA's certificate (PEM): what a client must trust.
    pub ca_pem: String,
    /// The server's certificate (PEM).
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
}

/// The PKI generator shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/pki/mod.rs"]
mod pki;

#[cfg(test)]
impl TestPki {
    pub fn new() -> TestPki {
        let pem = pki::generate();
        TestPki {
            ca_pem: pem.ca,
            cert_pem: pem.cert,
            key_pem: pem.key,
        }
    }

    /// What the simulator serves HTTPS with.
    pub fn sim_tls(&self) -> SimTls {
        SimTls::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).expect("usable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};

    async fn project_status(client: &reqwest::Client, base: &url::Url) -> reqwest::Result<u16> {
        let url = base.join("api/v4/projects/1").expect("a URL");
        let response = client.get(url).header("PRIVATE-TOKEN", "t").send().await?;
        Ok(response.status().as_u16())
    }

    #[tokio::test]
    async fn the_api_is_served_over_https_to_clients_that_trust_the_ca() {
        let pki = TestPki::new();
        let config = SimConfig {
            tls: Some(pki.sim_tls()),
            ..SimConfig::new("t")
        };
        let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
            .await
            .expect("the simulator starts");
        let base = sim.base_url();
        assert_eq!(base.scheme(), "https");
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("the CA");
        let trusting = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("a client");
        assert_eq!(
            project_status(&trusting, &base).await.expect("an answer"),
            200
        );
        let mut localhost = base.clone();
        localhost.set_host(Some("localhost")).expect("a host");
        assert_eq!(
            project_status(&trusting, &localhost)
                .await
                .expect("an answer"),
            200
        );

        let err = project_status(&reqwest::Client::new(), &base)
            .await
            .expect_err("an unknown CA");
        let chain = format!("{:?}", err);
        assert!(chain.contains("UnknownIssuer"), "{chain}");
        // A client that hangs up mid-handshake does not stop the next one.
        let stalled = tokio::net::TcpStream::connect(sim.local_addr()).await;
        assert_eq!(
            project_status(&trusting, &base).await.expect("an answer"),
            200
        );
        drop(stalled);
        sim.shutdown().await;
    }

    #[test]
    fn a_key_that_does_not_match_or_is_missing_is_refused_without_quoting_it() {
        let (one, other) = (TestPki::new(), TestPki::new());
        let err = SimTls::from_pem(one.cert_pem.as_bytes(), other.key_pem.as_bytes())
            .expect_err("another key");
        assert!(err.to_string().contains("unusable"), "{err}");
        let err = SimTls::from_pem(
            one.cert_pem.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nSECRET",
        )
        .expect_err("no key");
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let err = SimTls::from_pem(b"", one.key_pem.as_bytes()).expect_err("no certificate");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
