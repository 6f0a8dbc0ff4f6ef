//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one replica acts.
//!
//! The protocol is client-go's: the leader writes its identity into the Lease and renews
//! `renewTime` every [`LeaseSettings::renew_every`]; a Lease whose `renewTime +
//! leaseDurationSeconds` has passed is expired and any candidate may take it. Every write is a
//! PUT carrying the `resourceVersion` that was read, so of two candidates racing for the same
//! Lease exactly one wins (the other gets 409 Conflict and reads again).
//!
//! A leader that cannot confirm its Lease for [`LeaseSettings::renew_deadline`] (shorter than the
//! lease duration) steps down before anyone else may take over; one that finds another holder
//! steps down at once. Stepping down stops the controller (actions in flight finish) and the
//! replica campaigns again: it stays up, serving metrics and `/readyz`, as a standby. On
//! shutdown the leader releases the Lease so that a standby takes over without waiting for it
//! to expire.
//!
//! Expiry compares the holder's `renewTime` with the local clock, so replicas' clocks must
//! agree to well within the lease duration (NTP-synchronised nodes do).
//!
//! [`judge`] is the pure decision (take, keep or wait for a Lease) and is unit-tested; the rest
//! is the I/O around it.

use crate::webhook::{Leadership, Role};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the Lease is and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease (jobwarden's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity, written as `holderIdentity` (unique per process).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How long the leader goes on without a confirmed renewal before it steps down. Shorter
    /// than `duration`, so the leader stops before anyone else may take over.
    pub renew_deadline: Duration,
    /// How often a standby checks the Lease.
    pub retry_every: Duration,
}

/// Default `leaseDurationSeconds`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default renewal period.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);

impl LeaseSettings {
    /// Settings with the given lease duration and renewal period; the renew deadline is two
    /// thirds of the duration and a standby checks every two seconds (at most every renewal).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        duration: Duration,
        renew_every: Duration,
    ) -> Result<LeaseSettings, LeaseSettingsError> {
        if duration < Duration::from_secs(2) {
            return Err(LeaseSettingsError::TooShort);
        }
        let renew_deadline = duration * 2 / 3;
        if renew_every.is_zero() || renew_every >= renew_deadline {
            return Err(LeaseSettingsError::RenewTooSlow {
                renew_every,
                renew_deadline,
            });
        }
        Ok(LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
            renew_every,
            renew_deadline,
            retry_every: renew_every.min(Duration::from_secs(2)),
        })
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Lease timings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseSettingsError {
    #[error("the lease duration must be at least 2 seconds")]
    TooShort,
    #[error(
        "the renewal period ({renew_every:?}) must be positive and shorter than the renew deadline \
         ({renew_deadline:?}, two thirds of the lease duration)"
    )]
    RenewTooSlow {
        renew_every: Duration,
        renew_deadline: Duration,
    },
}

/// What a candidate may do with an existing Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// It is ours: renew it.
    Renew,
    /// Nobody holds it, or its holder's term has run out: take it.
    Take,
    /// Someone else holds it until `until`.
    HeldBy { holder: String, until: Timestamp },
}

/// Decides, from a Lease's spec, whether `identity` keeps it, may take it, or must wait. A
/// Lease without a holder is free; a Lease whose `renewTime` (or `acquireTime`) plus
/// `leaseDurationSeconds` is before `now` is expired; a Lease that says neither when it was
/// renewed nor for how long cannot prove it is alive and counts as expired.
pub fn judge(spec: &LeaseSpec, identity: &str, now: Timestamp) -> LeaseVerdict {
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return LeaseVerdict::Take,
        Some(holder) => holder,
    };
    if holder == identity {
        return LeaseVerdict::Renew;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(from_micro_time);
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map(|s| SignedDuration::from_secs(i64::from(s)));
    match (renewed, duration) {
        (Some(renewed), Some(duration)) => {
            let until = renewed.saturating_add(duration).unwrap_or(Timestamp::MAX);
            if until < now {
                LeaseVerdict::Take
            } else {
                LeaseVerdict::HeldBy {
                    holder: holder.to_owned(),
                    until,
                }
            }
        }
        _ => LeaseVerdict::Take,
    }
}

/// The spec a candidate writes when it takes (or creates) the Lease.
pub fn taken_spec(
    previous: Option<&LeaseSpec>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    let had_holder = previous
        .and_then(|p| p.holder_identity.as_deref())
        .is_some_and(|h| !h.is_empty() && h != settings.identity);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.duration_seconds()),
        acquire_time: Some(micro_time(now)),
        renew_time: Some(micro_time(now)),
        lease_transitions: Some(if had_holder {
            transitions.saturating_add(1)
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// The spec the holder writes when it renews.
pub fn renewed_spec(current: &LeaseSpec, settings: &LeaseSettings, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        renew_time: Some(micro_time(now)),
        lease_duration_seconds: Some(settings.duration_seconds()),
        ..current.clone()
    }
}

/// The spec the holder writes when it lets go: no holder, so a standby takes it at once.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        renew_time: Some(micro_time(now)),
        lease_duration_seconds: Some(1),
        ..current.clone()
    }
}

fn micro_time(ts: Timestamp) -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::from_nanosecond(ts.as_nanosecond()).unwrap_or_default())
}

fn from_micro_time(time: &MicroTime) -> Timestamp {
    Timestamp::from_nanosecond(time.0.as_nanosecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Why an attempt on the Lease did not settle who holds it.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the Lease {namespace}/{name} changed while it was being written (409 Conflict)")]
    Conflict { namespace: String, name: String },
    #[error("cannot read or write the Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (it was created, taken or renewed just now).
    Leading,
    /// Another replica holds it.
    Following { holder: String },
}

/// The Lease of one election, read and written through the API.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    /// The Lease `settings.name` in `settings.namespace`.
    pub fn new(client: Client, settings: LeaseSettings) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// The settings of this election.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Creates, takes over or renews the Lease as [`judge`] allows.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaseError> {
        let now = Timestamp::now();
        let Some(current) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(taken_spec(None, &self.settings, now)),
            };
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(Attempt::Leading);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let new_spec = match judge(&spec, &self.settings.identity, now) {
            LeaseVerdict::Renew => renewed_spec(&spec, &self.settings, now),
            LeaseVerdict::Take => taken_spec(Some(&spec), &self.settings, now),
            LeaseVerdict::HeldBy { holder, .. } => return Ok(Attempt::Following { holder }),
        };
        self.write(current, new_spec).await?;
        Ok(Attempt::Leading)
    }

    /// Gives the Lease up if this replica holds it.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(current) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let released = released_spec(&spec, Timestamp::now());
        self.write(current, released).await
    }

    /// Replaces the Lease's spec, on condition that it is still the version that was read.
    async fn write(&self, current: Lease, spec: LeaseSpec) -> Result<(), LeaseError> {
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(spec),
        };
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        let namespace = self.settings.namespace.clone();
        let name = self.settings.name.clone();
        match &source {
            kube::Error::Api(status) if status.is_conflict() || status.is_already_exists() => {
                LeaseError::Conflict { namespace, name }
            }
            _ => LeaseError::Api {
                namespace,
                name,
                source,
            },
        }
    }
}

/// Runs `lead` whenever this replica holds the Lease, until `shutdown` fires.
///
/// `lead` receives a token that is cancelled when leadership ends (lost, or shutdown); it must
/// return soon after. Leadership is renewed in the background while `lead` runs — including
/// while it drains after the token fired — and the Lease is released after `lead` returned on
/// shutdown.
/// `leadership` follows who leads, for the webhook receiver.
pub async fn run_elected<F, Fut>(
    lock: LeaseLock,
    shutdown: CancellationToken,
    leadership: &Leadership,
    mut lead: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let settings = lock.settings().clone();
    loop {
        if !campaign(&lock, &shutdown, leadership).await {
            return;
        }
        leadership.set(Role::Leading);
        tracing::info!(
            lease = %format!("{}/{}", settings.namespace, settings.name),
            identity = %settings.identity,
            "became the leader"
        );
        let term = shutdown.child_token();
        let keep_renewing = CancellationToken::new();
        let renewer = tokio::spawn(renew_while_leading(
            lock.clone(),
            term.clone(),
            keep_renewing.clone(),
        ));
        lead(term.clone()).await;
        leadership.set(Role::Unknown);
        // `lead` has drained: stop renewing, then let go (on shutdown) or campaign again.
        term.cancel();
        keep_renewing.cancel();
        let lost = renewer.await.unwrap_or(true);
        if shutdown.is_cancelled() {
            if !lost {
                release(&lock).await;
            }
            return;
        }
        if !lost {
            // `lead` ended on its own; give the Lease back so that another replica can lead,
            // and wait one lease duration before campaigning again.
            tracing::warn!("the controller stopped while leading; releasing the lease");
            release(&lock).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(settings.duration) => {}
            }
        }
        tracing::warn!(identity = %settings.identity, "no longer the leader: standing by");
    }
}

/// How long a replica that stops waits for the apiserver to take its Lease back; after that
/// the Lease expires on its own (a standby waits for it), and the process is not held up.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Gives the Lease up, waiting at most [`RELEASE_TIMEOUT`] for the apiserver.
async fn release(lock: &LeaseLock) {
    let identity = &lock.settings().identity;
    match tokio::time::timeout(RELEASE_TIMEOUT, lock.release()).await {
        Ok(Ok(())) => tracing::info!(%identity, "released the lease"),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "cannot release the lease; it expires on its own");
        }
        Err(_elapsed) => tracing::warn!(
            timeout = ?RELEASE_TIMEOUT,
            "the apiserver did not answer the release in time; the lease expires on its own"
        ),
    }
}

/// Waits until this replica holds the Lease (true) or `shutdown` fires (false), even while
/// the apiserver has not answered an attempt.
async fn campaign(lock: &LeaseLock, shutdown: &CancellationToken, leadership: &Leadership) -> bool {
    let settings = lock.settings();
    let mut last_holder: Option<String> = None;
    loop {
        let attempt = tokio::select! {
            biased;
            () = shutdown.cancelled() => return false,
            attempt = lock.try_acquire_or_renew() => attempt,
        };
        match attempt {
            Ok(Attempt::Leading) => return true,
            Ok(Attempt::Following { holder }) => {
                leadership.set(Role::Following {
                    leader: holder.clone(),
                });
                if last_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(%holder, identity = %settings.identity, "standing by: another replica leads");
                    last_holder = Some(holder);
                }
            }
            Err(LeaseError::Conflict { .. }) => {
                tracing::debug!("lost a race for the lease; checking again");
            }
            Err(err) => tracing::warn!(error = %err, "cannot campaign for the lease"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(settings.retry_every) => {}
        }
    }
}

/// Renews the Lease every `renew_every` until `keep_renewing` fires. Cancels `term` and returns
/// true when leadership is lost: another holder was found, or no renewal was confirmed within
/// the renew deadline.
async fn renew_while_leading(
    lock: LeaseLock,
    term: CancellationToken,
    keep_renewing: CancellationToken,
) -> bool {
    let settings = lock.settings().clone();
    let mut confirmed = tokio::time::Instant::now();
    loop {
        let wait = match confirmed.checked_add(settings.renew_every) {
            Some(at) => tokio::time::sleep_until(at),
            None => tokio::time::sleep(settings.renew_every),
        };
        tokio::select! {
            () = keep_renewing.cancelled() => return false,
            () = wait => {}
        }
        // Retry quickly until the renew deadline; each failed attempt waits a little.
        loop {
            let remaining = settings.renew_deadline.saturating_sub(confirmed.elapsed());
            if remaining.is_zero() {
                tracing::warn!(
                    deadline = ?settings.renew_deadline,
                    "the lease was not renewed in time: stepping down"
                );
                term.cancel();
                return true;
            }
            let attempt = tokio::select! {
                () = keep_renewing.cancelled() => return false,
                attempt = tokio::time::timeout(remaining, lock.try_acquire_or_renew()) => attempt,
            };
            match attempt {
                Ok(Ok(Attempt::Leading)) => {
                    confirmed = tokio::time::Instant::now();
                    break;
                }
                Ok(Ok(Attempt::Following { holder })) => {
                    tracing::warn!(%holder, "the lease was taken over by another replica");
                    term.cancel();
                    return true;
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "cannot renew the lease"),
                Err(_elapsed) => tracing::warn!("renewing the lease timed out"),
            }
            tokio::select! {
                () = keep_renewing.cancelled() => return false,
                () = tokio::time::sleep(settings.retry_every / 2) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
