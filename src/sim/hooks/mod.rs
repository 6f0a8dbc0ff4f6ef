//! Job Hooks (`docs/gitlab-behaviour.md` §10): the simulator calls registered webhooks as GitLab
//! does when a build moves.
//!
//! * **What fires** ([`crate::sim::machine::fires_hook`]): a build's creation (`after_create`,
//!   with the status it was created in), any move into `pending`, into `running`, and into
//!   `success`, `failed` or `canceled`. Bridges never fire. Every place the state machine moves
//!   a job records the move in the world's [`Outbox`] with the build as it was then.
//! * **When it is sent**: when the world lock is released ([`crate::sim::server::WorldGuard`]),
//!   the recorded moves are rendered ([`payload`]) and put on each matching hook's bounded queue
//!   (a full queue drops the delivery and counts it). One task per hook sends its queue in order
//!   with reqwest, a per-request timeout (GitLab's `webhook_timeout`, 10 s by default) and no
//!   re-send on failure. Nothing is sent while the world lock is held, and the API never waits
//!   for a delivery.
//! * **Faults** (off by default, drawn from one generator seeded with the simulator's seed, in
//!   the order of the events): a delivery dropped (never sent), duplicated (sent twice with the
//!   same `Idempotency-Key` and `X-Gitlab-Event-UUID`, a new `X-Gitlab-Webhook-UUID` each time),
//!   or held back for a while so that later deliveries of the same job overtake it.
//! * **The autopilot**: fleet jobs move lazily, when their project is looked at. While a hook
//!   covers a project, the simulator also brings it up to date when the clock is advanced
//!   through [`crate::sim::SimControl::advance`] or `/-/sim/clock/advance`, and every
//!   [`PUMP_EVERY`] on its own, so deliveries follow the clock. A catch-up applies each event at
//!   its own simulated time (the payload's times are those), but sends them all at once.

mod deliver;
pub(crate) mod outbox;
mod payload;

pub(crate) use outbox::{Outbox, Scope};

use crate::sim::autopilot;
use crate::sim::faults::FaultConfig;
use crate::sim::server::{Shared, lock};
use crate::sim::state::World;
use bytes::Bytes;
use deliver::{Delivery, HookState, Sender};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the simulator brings the projects that have hooks up to date on its own.
pub(crate) const PUMP_EVERY: Duration = Duration::from_millis(250);

/// The version the deliveries' `User-Agent` names (`GitLab/<version>`).
pub(crate) const GITLAB_VERSION: &str = "17.5.0";

/// A webhook with "Job events" enabled.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where deliveries are POSTed (`http` or `https`).
    pub url: String,
    /// The secret token sent as `X-Gitlab-Token` (none: no such header).
    pub token: Option<String>,
    /// The projects whose jobs it hears (`None`: every project, as a group or instance hook).
    pub project_ids: Option<BTreeSet<u64>>,
}

impl WebhookConfig {
    /// A hook for every project, without a secret token.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            token: None,
            project_ids: None,
        }
    }

    /// With this secret token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Only for these projects (a project hook; several ids, several projects' hooks at once).
    pub fn for_projects(mut self, ids: impl IntoIterator<Item = u64>) -> Self {
        self.project_ids = Some(ids.into_iter().collect());
        self
    }

    fn covers(&self, project_id: u64) -> bool {
        self.project_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&project_id))
    }

    /// Checks the URL (absolute, http or https) and the token (a valid header value; an empty
    /// one counts as none).
    fn validated(mut self) -> Result<(WebhookConfig, url::Url), String> {
        let url = url::Url::parse(&self.url).map_err(|err| format!("invalid URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("unsupported URL scheme {:?}", url.scheme()));
        }
        if self.token.as_deref() == Some("") {
            self.token = None;
        }
        if let Some(token) = &self.token
            && http::HeaderValue::from_str(token).is_err()
        {
            return Err("the token is not a valid header value".to_owned());
        }
        Ok((self, url))
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("project_ids", &self.project_ids)
            .finish()
    }
}

/// What happened to one hook's deliveries so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Job events that concern the hook (one per transition of a covered build).
    pub triggered: u64,
    /// Deliveries put on the hook's queue.
    pub queued: u64,
    /// Deliveries discarded because the queue was full.
    pub queue_full: u64,
    /// Deliveries never sent (the `hook_drop_ratio` fault).
    pub dropped: u64,
    /// Deliveries sent twice (the `hook_duplicate_ratio` fault).
    pub duplicated: u64,
    /// Deliveries held back (the `hook_reorder_ratio` fault).
    pub delayed: u64,
    /// HTTP requests made (duplicates count twice).
    pub sent: u64,
    /// Requests answered 2xx.
    pub delivered: u64,
    /// Requests answered otherwise, timed out or failed to connect.
    pub failed: u64,
    /// Deliveries queued, held back or being sent.
    pub pending: u64,
    /// Requests by outcome: the status code (`"200"`, `"500"`…), `"timeout"` or `"error"`.
    pub by_status: BTreeMap<String, u64>,
}

/// A registered hook and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimWebhook {
    pub id: u64,
    pub url: String,
    /// `None`: every project.
    pub project_ids: Option<Vec<u64>>,
    /// Whether deliveries carry `X-Gitlab-Token` (the token itself is never shown).
    pub has_token: bool,
    pub stats: WebhookStats,
}

/// One delivery attempt, as the hook's recent-deliveries log shows it (the newest
/// [`RECENT_DELIVERIES`] per hook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    pub job_id: u64,
    pub project_id: u64,
    pub build_status: String,
    pub event_uuid: String,
    pub idempotency_key: String,
    /// `None` when nothing was sent.
    pub webhook_uuid: Option<String>,
    /// The status code, `"timeout"`, `"error"`, or (nothing sent) `"dropped"` / `"queue_full"`.
    pub outcome: String,
    /// The second copy of a duplicated delivery.
    pub duplicate: bool,
    /// Held back by the reorder fault.
    pub delayed: bool,
}

/// How many deliveries each hook's log keeps.
pub const RECENT_DELIVERIES: usize = 256;

/// How the hub sends.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    pub timeout: Duration,
    pub queue_capacity: usize,
    pub seed: u64,
    /// The instance URL with a trailing slash.
    pub base: String,
}

/// The registered hooks and their senders.
pub(crate) struct HookHub {
    registry: Mutex<Registry>,
    client: reqwest::Client,
    settings: HubSettings,
    links: payload::Links,
    instance: String,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
}

struct Registry {
    hooks: BTreeMap<u64, Hook>,
    next_id: u64,
    rng: ChaCha8Rng,
}

struct Hook {
    config: WebhookConfig,
    queue: mpsc::Sender<Delivery>,
    state: Arc<HookState>,
    stop: CancellationToken,
}

impl fmt::Debug for HookHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookHub")
            .field("hooks", &lock(&self.registry).hooks.len())
            .finish_non_exhaustive()
    }
}

fn ratio(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// A random (version 4) UUID from the seeded generator.
fn uuid_v4(rng: &mut ChaCha8Rng) -> String {
    let mut v: u128 = rng.random();
    v = (v & !(0xf << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        v >> 96,
        (v >> 80) & 0xffff,
        (v >> 64) & 0xffff,
        (v >> 48) & 0xffff,
        v & 0xffff_ffff_ffff
    )
}

impl HookHub {
    /// A hub without hooks. Senders are spawned on `runtime` and stop with `shutdown`.
    pub fn new(
        settings: HubSettings,
        runtime: tokio::runtime::Handle,
        shutdown: CancellationToken,
    ) -> std::io::Result<HookHub> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(HookHub {
            registry: Mutex::new(Registry {
                hooks: BTreeMap::new(),
                next_id: 1,
                rng: ChaCha8Rng::seed_from_u64(settings.seed ^ 0x6007_5eed),
            }),
            client,
            links: payload::Links::new(&settings.base),
            instance: settings.base.trim_end_matches('/').to_owned(),
            settings,
            runtime,
            shutdown,
        })
    }

    /// Registers a hook and starts its sender; returns its id and the new scope. Call with the
    /// world locked (and give the world the scope) so no transition is missed or mis-scoped.
    pub fn add(&self, config: WebhookConfig) -> Result<(u64, Scope), String> {
        let (config, url) = config.validated()?;
        let state = Arc::new(HookState::default());
        let stop = self.shutdown.child_token();
        let (queue, receiver) = mpsc::channel(self.settings.queue_capacity.max(1));
        let sender = Sender::new(
            self.client.clone(),
            url,
            config.token.as_deref(),
            &self.instance,
            self.settings.timeout,
            self.settings.queue_capacity.max(1),
            Arc::clone(&state),
            stop.clone(),
        )?;
        self.runtime.spawn(sender.run(receiver));
        let mut registry = lock(&self.registry);
        let id = registry.next_id;
        registry.next_id += 1;
        registry.hooks.insert(
            id,
            Hook {
                config,
                queue,
                state,
                stop,
            },
        );
        Ok((id, scope_of(&registry.hooks)))
    }

    /// Removes a hook (its queued deliveries are not sent); the new scope, `None` if unknown.
    pub fn remove(&self, id: u64) -> Option<Scope> {
        let mut registry = lock(&self.registry);
        let hook = registry.hooks.remove(&id)?;
        hook.stop.cancel();
        Some(scope_of(&registry.hooks))
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.registry).hooks.is_empty()
    }

    /// Every hook with its counters, by id.
    pub fn list(&self) -> Vec<SimWebhook> {
        lock(&self.registry)
            .hooks
            .iter()
            .map(|(id, hook)| describe(*id, hook))
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<SimWebhook> {
        lock(&self.registry)
            .hooks
            .get(&id)
            .map(|hook| describe(id, hook))
    }

    /// The newest deliveries of a hook, oldest first.
    pub fn deliveries(&self, id: u64) -> Option<Vec<WebhookDelivery>> {
        let state = lock(&self.registry)
            .hooks
            .get(&id)
            .map(|hook| Arc::clone(&hook.state))?;
        Some(state.recent())
    }

    /// Renders the transitions recorded in `world` and queues one delivery per matching hook.
    /// Runs under the world lock; never waits.
    pub fn dispatch(&self, world: &mut World, faults: &FaultConfig) {
        let events = world.hooks.take();
        if events.is_empty() {
            return;
        }
        let mut registry = lock(&self.registry);
        let Registry { hooks, rng, .. } = &mut *registry;
        for event in &events {
            if !hooks.values().any(|h| h.config.covers(event.project_id)) {
                continue;
            }
            let Some(body) = payload::render(world, event, &self.links) else {
                continue;
            };
            let body = Bytes::from(body);
            let event_uuid = uuid_v4(rng);
            for hook in hooks.values().filter(|h| h.config.covers(event.project_id)) {
                let idempotency_key = uuid_v4(rng);
                // Three draws per delivery whatever the outcome, so one fault's ratio does not
                // shift the others' draws.
                let drop = rng.random_bool(ratio(faults.hook_drop_ratio));
                let duplicate = rng.random_bool(ratio(faults.hook_duplicate_ratio));
                let delayed = rng.random_bool(ratio(faults.hook_reorder_ratio));
                let copies = if duplicate { 2 } else { 1 };
                let webhook_uuids = (0..copies).map(|_| uuid_v4(rng)).collect();
                let delivery = Delivery {
                    body: body.clone(),
                    job_id: event.id,
                    project_id: event.project_id,
                    build_status: event.status.as_str(),
                    event_uuid: event_uuid.clone(),
                    idempotency_key,
                    webhook_uuids,
                    delay: delayed
                        .then(|| faults.hook_reorder_delay.min(crate::sim::faults::MAX_HOLD)),
                };
                hook.state.triggered();
                if drop {
                    hook.state.not_sent(&delivery, "dropped");
                    continue;
                }
                hook.state.queue(&delivery);
                if let Err(err) = hook.queue.try_send(delivery) {
                    let delivery = match err {
                        mpsc::error::TrySendError::Full(d)
                        | mpsc::error::TrySendError::Closed(d) => d,
                    };
                    hook.state.unqueue(&delivery);
                    hook.state.not_sent(&delivery, "queue_full");
                }
            }
        }
    }
}

fn describe(id: u64, hook: &Hook) -> SimWebhook {
    SimWebhook {
        id,
        url: hook.config.url.clone(),
        project_ids: hook
            .config
            .project_ids
            .as_ref()
            .map(|ids| ids.iter().copied().collect()),
        has_token: hook.config.token.is_some(),
        stats: hook.state.stats(),
    }
}

fn scope_of(hooks: &BTreeMap<u64, Hook>) -> Scope {
    let mut ids = BTreeSet::new();
    for hook in hooks.values() {
        match &hook.config.project_ids {
            None => return Scope::All,
            Some(own) => ids.extend(own.iter().copied()),
        }
    }
    if hooks.is_empty() {
        Scope::Off
    } else {
        Scope::Projects(ids)
    }
}

/// Brings every fleet project that a hook covers up to the clock, so that the autopilot's
/// transitions are delivered without waiting for someone to look at the project.
pub(crate) fn pump(shared: &Shared) {
    let now = shared.now();
    let mut world = shared.world();
    if *world.hooks.scope() == Scope::Off {
        return;
    }
    let ids: Vec<u64> = world
        .projects
        .values()
        .filter(|p| p.autopilot.is_some() && world.hooks.scope().covers(p.id))
        .map(|p| p.id)
        .collect();
    for id in ids {
        autopilot::advance(&mut world, id, now);
    }
}

/// Pumps every [`PUMP_EVERY`] while hooks exist, until the simulator shuts down.
pub(crate) async fn pump_periodically(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PUMP_EVERY) => {}
            () = shared.shutdown.cancelled() => return,
        }
        if !shared.hooks.is_empty() {
            pump(&shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_seeded() {
        let mut a = ChaCha8Rng::seed_from_u64(1);
        let mut b = ChaCha8Rng::seed_from_u64(1);
        let first = uuid_v4(&mut a);
        assert_eq!(first, uuid_v4(&mut b));
        assert_ne!(first, uuid_v4(&mut a));
        let parts: Vec<&str> = first.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{first}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{first}");
    }

    #[test]
    fn configs_are_checked() {
        assert!(WebhookConfig::new("ftp://x/").validated().is_err());
        assert!(WebhookConfig::new("not a url").validated().is_err());
        assert!(
            WebhookConfig::new("http://127.0.0.1:1/")
                .with_token("bad\ntoken")
                .validated()
                .is_err()
        );
        let (config, _) = WebhookConfig::new("http://127.0.0.1:1/hook")
            .with_token("")
            .validated()
            .expect("valid");
        assert_eq!(config.token, None);
        let debug = format!("{:?}", WebhookConfig::new("http://h/").with_token("s3cret"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn scopes_follow_the_hooks() {
        let hook = |ids: Option<&[u64]>| WebhookConfig {
            url: String::new(),
            token: None,
            project_ids: ids.map(|ids| ids.iter().copied().collect()),
        };
        let (queue, _) = mpsc::channel(1);
        let make = |config| Hook {
            config,
            queue: queue.clone(),
            state: Arc::new(HookState::default()),
            stop: CancellationToken::new(),
        };
        let mut hooks = BTreeMap::new();
        assert_eq!(scope_of(&hooks), Scope::Off);
        hooks.insert(1, make(hook(Some(&[3, 1]))));
        hooks.insert(2, make(hook(Some(&[2]))));
        assert_eq!(scope_of(&hooks), Scope::Projects(BTreeSet::from([1, 2, 3])));
        hooks.insert(3, make(hook(None)));
        assert_eq!(scope_of(&hooks), Scope::All);
    }
}
