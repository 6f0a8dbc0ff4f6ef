//! One hook's sender: takes deliveries off the hook's bounded queue in order and POSTs them,
//! each request bounded by the delivery timeout, none re-sent. A delivery held back by the
//! reorder fault is sent from its own task after its delay, so the ones queued after it go
//! first.

use crate::sim::hooks::{GITLAB_VERSION, RECENT_DELIVERIES, WebhookDelivery, WebhookStats};
use crate::sim::server::lock;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_TYPE, USER_AGENT};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One triggered delivery of one event to one hook.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub body: Bytes,
    pub job_id: u64,
    pub project_id: u64,
    pub build_status: &'static str,
    pub event_uuid: String,
    pub idempotency_key: String,
    /// One per copy sent (two for a duplicated delivery).
    pub webhook_uuids: Vec<String>,
    /// Held back this long (the reorder fault).
    pub delay: Option<Duration>,
}

impl Delivery {
    fn record(
        &self,
        webhook_uuid: Option<&str>,
        outcome: &str,
        duplicate: bool,
    ) -> WebhookDelivery {
        WebhookDelivery {
            job_id: self.job_id,
            project_id: self.project_id,
            build_status: self.build_status.to_owned(),
            event_uuid: self.event_uuid.clone(),
            idempotency_key: self.idempotency_key.clone(),
            webhook_uuid: webhook_uuid.map(str::to_owned),
            outcome: outcome.to_owned(),
            duplicate,
            delayed: self.delay.is_some(),
        }
    }
}

/// A hook's counters and recent deliveries.
#[derive(Debug, Default)]
pub(crate) struct HookState {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    stats: WebhookStats,
    recent: VecDeque<WebhookDelivery>,
}

impl Book {
    fn log(&mut self, entry: WebhookDelivery) {
        if self.recent.len() == RECENT_DELIVERIES {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }
}

impl HookState {
    pub fn stats(&self) -> WebhookStats {
        lock(&self.book).stats.clone()
    }

    pub fn recent(&self) -> Vec<WebhookDelivery> {
        lock(&self.book).recent.iter().cloned().collect()
    }

    pub fn triggered(&self) {
        lock(&self.book).stats.triggered += 1;
    }

    /// A delivery goes on the queue.
    pub fn queue(&self, delivery: &Delivery) {
        let mut book = lock(&self.book);
        book.stats.queued += 1;
        book.stats.pending += 1;
        if delivery.webhook_uuids.len() > 1 {
            book.stats.duplicated += 1;
        }
        if delivery.delay.is_some() {
            book.stats.delayed += 1;
        }
    }

    /// Undoes [`HookState::queue`] for a delivery the queue refused.
    pub fn unqueue(&self, delivery: &Delivery) {
        let mut book = lock(&self.book);
        book.stats.queued -= 1;
        book.stats.pending -= 1;
        if delivery.webhook_uuids.len() > 1 {
            book.stats.duplicated -= 1;
        }
        if delivery.delay.is_some() {
            book.stats.delayed -= 1;
        }
    }

    /// A delivery that is never sent: `"dropped"` (fault) or `"queue_full"`.
    pub fn not_sent(&self, delivery: &Delivery, why: &str) {
        let mut book = lock(&self.book);
        match why {
            "dropped" => book.stats.dropped += 1,
            _ => book.stats.queue_full += 1,
        }
        book.log(delivery.record(None, why, false));
    }

    fn sent(&self, delivery: &Delivery, webhook_uuid: &str, outcome: &str, duplicate: bool) {
        let mut book = lock(&self.book);
        book.stats.sent += 1;
        if outcome.starts_with('2') && outcome.len() == 3 {
            book.stats.delivered += 1;
        } else {
            book.stats.failed += 1;
        }
        *book.stats.by_status.entry(outcome.to_owned()).or_default() += 1;
        book.log(delivery.record(Some(webhook_uuid), outcome, duplicate));
    }

    fn done(&self) {
        let mut book = lock(&self.book);
        book.stats.pending = book.stats.pending.saturating_sub(1);
    }
}

/// Sends one hook's deliveries.
pub(crate) struct Sender {
    client: reqwest::Client,
    url: url::Url,
    token: Option<HeaderValue>,
    instance: HeaderValue,
    timeout: Duration,
    state: Arc<HookState>,
    stop: CancellationToken,
    /// Deliveries being held back, at most `max_delayed` (beyond that they are sent in turn).
    delayed: Arc<AtomicUsize>,
    max_delayed: usize,
}

impl Sender {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: reqwest::Client,
        url: url::Url,
        token: Option<&str>,
        instance: &str,
        timeout: Duration,
        max_delayed: usize,
        state: Arc<HookState>,
        stop: CancellationToken,
    ) -> Result<Sender, String> {
        let token = token
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_owned())?
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let instance = HeaderValue::from_str(instance)
            .map_err(|_| "the instance URL is not a valid header value".to_owned())?;
        Ok(Sender {
            client,
            url,
            token,
            instance,
            timeout,
            state,
            stop,
            delayed: Arc::new(AtomicUsize::new(0)),
            max_delayed,
        })
    }

    /// Works the queue off until the hook is removed or the simulator stops.
    pub async fn run(self, mut queue: mpsc::Receiver<Delivery>) {
        let this = Arc::new(self);
        loop {
            let delivery = tokio::select! {
                next = queue.recv() => match next {
                    Some(delivery) => delivery,
                    None => return,
                },
                () = this.stop.cancelled() => return,
            };
            let hold = delivery.delay.filter(|_| {
                this.delayed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < this.max_delayed).then_some(n + 1)
                    })
                    .is_ok()
            });
            match hold {
                Some(hold) => {
                    let held = Arc::clone(&this);
                    tokio::spawn(async move {
                        tokio::select! {
                            () = tokio::time::sleep(hold) => held.send_all(&delivery).await,
                            () = held.stop.cancelled() => {}
                        }
                        held.delayed.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                None => {
                    tokio::select! {
                        () = this.send_all(&delivery) => {}
                        () = this.stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Sends every copy of a delivery, one after the other.
    async fn send_all(&self, delivery: &Delivery) {
        for (i, webhook_uuid) in delivery.webhook_uuids.iter().enumerate() {
            let outcome = self.send(delivery, webhook_uuid).await;
            self.state.sent(delivery, webhook_uuid, &outcome, i > 0);
        }
        self.state.done();
    }

    /// One POST; the outcome is the status code, `"timeout"` or `"error"`.
    async fn send(&self, delivery: &Delivery, webhook_uuid: &str) -> String {
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, format!("GitLab/{GITLAB_VERSION}"))
            .header("X-Gitlab-Event", "Job Hook")
            .header("X-Gitlab-Instance", self.instance.clone())
            .header("X-Gitlab-Webhook-UUID", webhook_uuid)
            .header("X-Gitlab-Event-UUID", delivery.event_uuid.as_str())
            .header("Idempotency-Key", delivery.idempotency_key.as_str());
        if let Some(token) = &self.token {
            request = request.header("X-Gitlab-Token", token.clone());
        }
        match request.body(delivery.body.clone()).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // GitLab keeps a bit of the answer for its hook log; the simulator only reads
                // it to let the connection be reused, within the same timeout.
                let _ = tokio::time::timeout(self.timeout, response.bytes()).await;
                status.to_string()
            }
            Err(err) if err.is_timeout() => "timeout".to_owned(),
            Err(err) => {
                tracing::debug!(url = %self.url, error = %err, "webhook delivery failed");
                "error".to_owned()
            }
        }
    }
}
