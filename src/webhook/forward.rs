//! Deliveries that reach a standby replica.
//!
//! In a cluster only the replica holding the Lease observes projects and acts; a standby's
//! engine would ignore every delivery. So a standby forwards each well-formed delivery to the
//! leader, which checks its token (a standby runs no policy, so it does not know the secrets
//! of the policies' own `webhookSecretRef`). The URL comes from `--webhook-forward-to`, a
//! template in which `{identity}` is the leader's identity in the Lease (its Pod name), e.g.
//! `http://{identity}.jobwarden-peers.jobwarden-system.svc:9443/webhook` with the headless
//! Service `jobwarden-peers` of `deploy/webhook/`. The forwarded request carries
//! `X-Jobwarden-Forwarded: 1` and is never forwarded again. With project sharding the same
//! forwarder also takes deliveries for another shard's project to that shard's leader
//! ([`super::route`]).

use std::time::Duration;
use tokio::sync::watch;

/// The header marking a forwarded delivery.
pub const FORWARDED_HEADER: &str = "x-jobwarden-forwarded";
/// How long a forward may take (the leader answers within milliseconds).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether this replica acts, as the leader election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica acts on deliveries (file mode always; cluster mode while holding the Lease).
    Leading,
    /// Another replica holds the Lease.
    Following { leader: String },
    /// No leader known yet (campaigning).
    Unknown,
}

/// The current [`Role`], set by the leader election and read by the webhook receiver.
#[derive(Debug, Clone)]
pub struct Leadership {
    tx: watch::Sender<Role>,
}

impl Leadership {
    /// Starts in `role`.
    pub fn new(role: Role) -> Leadership {
        Leadership {
            tx: watch::channel(role).0,
        }
    }

    /// Always leading (file mode, or a single replica without election).
    pub fn always_leading() -> Leadership {
        Leadership::new(Role::Leading)
    }

    pub fn set(&self, role: Role) {
        self.tx.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
    }

    pub fn get(&self) -> Role {
        self.tx.borrow().clone()
    }

    /// A receiver told of every change of role (readiness follows it in cluster mode).
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.tx.subscribe()
    }
}

/// Where a standby sends deliveries.
#[derive(Debug, Clone)]
pub struct Forwarder {
    template: String,
    http: reqwest::Client,
}

impl Forwarder {
    /// A forwarder to the URL `template`, in which `{identity}` stands for the leader's identity.
    pub fn new(template: impl Into<String>) -> Forwarder {
        Forwarder {
            template: template.into(),
            http: reqwest::Client::builder()
                .timeout(FORWARD_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// The leader's receiver URL.
    pub fn url_for(&self, leader: &str) -> String {
        self.template.replace("{identity}", leader)
    }

    /// Sends the delivery on to the leader; its status, or the reason it could not be reached.
    pub async fn forward(
        &self,
        leader: &str,
        headers: &axum::http::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<u16, String> {
        let url = self.url_for(leader);
        let mut request = self.http.post(&url).header(FORWARDED_HEADER, "1");
        for name in [
            "content-type",
            "x-gitlab-event",
            "x-gitlab-token",
            "x-gitlab-instance",
            "x-gitlab-event-uuid",
            "x-gitlab-webhook-uuid",
            "idempotency-key",
            "user-agent",
        ] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.clone());
            }
        }
        match request.body(body).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(err) => Err(format!("cannot reach the leader at {url}: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_url_comes_from_its_identity() {
        let forwarder =
            Forwarder::new("http://{identity}.jobwarden-peers.jobwarden-system.svc:9443/webhook");
        assert_eq!(
            forwarder.url_for("jobwarden-7d9f-abcde"),
            "http://jobwarden-7d9f-abcde.jobwarden-peers.jobwarden-system.svc:9443/webhook"
        );
    }

    #[test]
    fn a_role_change_is_seen_by_readers() {
        let leadership = Leadership::new(Role::Unknown);
        let reader = leadership.clone();
        leadership.set(Role::Following {
            leader: "pod-a".into(),
        });
        assert_eq!(
            reader.get(),
            Role::Following {
                leader: "pod-a".into()
            }
        );
        leadership.set(Role::Leading);
        assert_eq!(reader.get(), Role::Leading);
    }
}
