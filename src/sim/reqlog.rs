//! The record of `/api/v4` requests the simulator answered: a bounded log and per-endpoint
//! counters, for tests that count requests.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// One answered (or dropped) request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The route template without `/api/v4`, e.g. `/projects/:id/jobs`; `unknown` when no
    /// route matched.
    pub endpoint: &'static str,
    /// The raw request path (still percent-encoded), e.g. `/api/v4/projects/fleet%2Fproject-1/jobs`.
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
    /// The client's address as the simulator's socket saw it (`127.0.0.1:54321`): tells apart
    /// clients that share a token (several replicas of one controller), as GitLab's
    /// `remote_ip` in its API log does, with the port because on loopback every client has
    /// the same IP.
    pub client: String,
    /// The status answered; 0 when the connection was dropped without an answer.
    pub status: u16,
    /// When the simulator received the request: milliseconds since the Unix epoch on the
    /// simulated clock, the clock every job timestamp is read from (so it compares with a job's
    /// `finished_at`; on a real clock at speed 1 that is the wall clock, moved on by any
    /// `/-/sim/clock/advance`). The second record of an *apply late* request has the time it
    /// was carried out.
    pub at: i64,
    /// True for a request carried out after its connection was dropped (the *apply late*
    /// fault): it is logged twice, once with status 0 when the client is left without an
    /// answer, once with the status of its late answer when it takes effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub applied_late: bool,
}

/// The newest entries kept in the log.
const LOG_CAPACITY: usize = 100_000;

/// Log and counters.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<LoggedRequest>,
    counters: BTreeMap<String, u64>,
}

impl RequestLog {
    /// Logs a request; a late-applied one is counted once, when its client was left unanswered.
    pub fn record(&mut self, entry: LoggedRequest) {
        if !entry.applied_late {
            *self
                .counters
                .entry(format!("{} {}", entry.method, entry.endpoint))
                .or_insert(0) += 1;
        }
        if self.entries.len() == LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.clone()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.counters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_template() {
        let mut log = RequestLog::default();
        for status in [200, 429] {
            log.record(LoggedRequest {
                method: "GET".into(),
                endpoint: "/projects/:id/jobs",
                path: "/api/v4/projects/1/jobs".into(),
                query: String::new(),
                client: "127.0.0.1:40000".into(),
                status,
                at: 1_795_428_000_000,
                applied_late: false,
            });
        }
        assert_eq!(log.counters().get("GET /projects/:id/jobs"), Some(&2));
        assert_eq!(log.entries().len(), 2);
        log.clear();
        assert!(log.entries().is_empty() && log.counters().is_empty());
    }
}
