//! Kubernetes Events (`events.k8s.io/v1`) on a policy: one per action that succeeded or failed,
//! and one per problem a user should see (`kubectl describe jobpolicy …`).
//!
//! Events go through kube's [`Recorder`], which folds a repeat of an event into a `series`
//! (count and last time) instead of creating a new object. The Recorder recognises a repeat by
//! type, reason, action and object — not by the note — so two different jobs retried by the
//! same rule would become one event that shows the first job only. [`EventPublisher`] therefore
//! keeps one Recorder per distinct event (note included): a different job or a different error
//! message is a new Event, the same error again is a repeat.
//!
//! Publishing is best effort: a failure is logged and never fails a reconcile.

use super::status::truncate;
use crate::crd::ActionKind;
use crate::engine::{ActionRecord, Outcome};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `reportingController` of jobwarden's Events.
pub const REPORTING_CONTROLLER: &str = "jobwarden.dev/controller";

/// The longest note of an Event (the API allows 1 kB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// How long a published event is remembered as "seen" so that a repeat joins its series. Kept
/// below the Recorder's own cache lifetime (6 minutes), after which it starts a new Event.
const REPEAT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// An Event to publish, before it is attached to an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    pub type_: EventType,
    /// Why, in `PascalCase` (`Retried`, `ActionFailed`, `InvalidSpec`, …).
    pub reason: String,
    /// What jobwarden did or tried, in `PascalCase` (`Retry`, `Reconcile`, …).
    pub action: String,
    /// The human-readable text.
    pub note: String,
}

impl PolicyEvent {
    /// A warning about the policy as a whole (reason = the `Ready` reason).
    pub fn warning(reason: &str, note: impl AsRef<str>) -> PolicyEvent {
        PolicyEvent {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            action: "Reconcile".to_owned(),
            note: note_text(note.as_ref()),
        }
    }

    /// A normal event about the policy as a whole.
    pub fn normal(reason: &str, note: impl AsRef<str>) -> PolicyEvent {
        PolicyEvent {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            action: "Reconcile".to_owned(),
            note: note_text(note.as_ref()),
        }
    }
}

fn note_text(text: &str) -> String {
    if text.len() <= MAX_NOTE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The Event for one engine record: `Normal` with reason `Retried`, `Canceled`, `Played` or
/// `ArtifactsKept` for a success, `Warning` `ActionFailed` for a failure, and none for the
/// other outcomes (dry-run, over budget, deferred), which the status reports.
pub fn action_event(record: &ActionRecord) -> Option<PolicyEvent> {
    let kind = record.action;
    let (verb, reason, action) = match kind {
        ActionKind::Retry => ("retried", "Retried", "Retry"),
        ActionKind::Cancel => ("canceled", "Canceled", "Cancel"),
        ActionKind::Play => ("played", "Played", "Play"),
        ActionKind::KeepArtifacts => ("kept the artifacts of", "ArtifactsKept", "KeepArtifacts"),
    };
    let job = format!(
        "job {} ({}) of project {}",
        record.job_id,
        truncate(&record.job_name, 120),
        record.project
    );
    match &record.outcome {
        Outcome::Succeeded { new_job_id } => {
            let new_job = new_job_id
                .map(|id| format!(", new job {id}"))
                .unwrap_or_default();
            Some(PolicyEvent {
                type_: EventType::Normal,
                reason: reason.to_owned(),
                action: action.to_owned(),
                note: note_text(&format!(
                    "{verb} {job} by rule {}{new_job}: {}",
                    record.rule, record.reason
                )),
            })
        }
        Outcome::Failed { message } => Some(PolicyEvent {
            type_: EventType::Warning,
            reason: "ActionFailed".to_owned(),
            action: action.to_owned(),
            note: note_text(&format!(
                "{} {job} by rule {} failed: {message}",
                kind.as_str(),
                record.rule
            )),
        }),
        Outcome::InDoubt { until, message } => Some(PolicyEvent {
            type_: EventType::Warning,
            reason: "ActionInDoubt".to_owned(),
            action: action.to_owned(),
            note: note_text(&format!(
                "{} {job} by rule {}: no clear answer from GitLab ({message}); the job is left alone until {} and then re-read",
                kind.as_str(),
                record.rule,
                until.strftime("%Y-%m-%dT%H:%M:%SZ")
            )),
        }),
        Outcome::Noop { .. }
        | Outcome::DryRun
        | Outcome::SkippedOverBudget
        | Outcome::Deferred { .. } => None,
    }
}

/// Publishes Events on policies through kube's [`Recorder`], one Recorder per distinct event
/// so that only true repeats are folded into a series.
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    recorders: Mutex<HashMap<u64, (Recorder, Instant)>>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// Publishes as `instance` of [`REPORTING_CONTROLLER`].
    pub fn new(client: Client, instance: &str) -> EventPublisher {
        EventPublisher {
            client,
            reporter: Reporter {
                controller: REPORTING_CONTROLLER.to_owned(),
                instance: Some(instance.to_owned()),
            },
            recorders: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `event` on the object `regarding`; a failure is logged, not returned.
    pub async fn publish(&self, regarding: &ObjectReference, event: &PolicyEvent) {
        let recorder = self.recorder_for(regarding, event);
        let published = recorder
            .publish(
                &Event {
                    type_: event.type_,
                    reason: event.reason.clone(),
                    note: Some(event.note.clone()),
                    action: event.action.clone(),
                    secondary: None,
                },
                regarding,
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(
                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                policy = regarding.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                error = %err,
                "cannot record an Event"
            );
        }
    }

    fn recorder_for(&self, regarding: &ObjectReference, event: &PolicyEvent) -> Recorder {
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            regarding.uid.hash(&mut h);
            regarding.namespace.hash(&mut h);
            regarding.name.hash(&mut h);
            event.reason.hash(&mut h);
            event.action.hash(&mut h);
            event.note.hash(&mut h);
            matches!(event.type_, EventType::Warning).hash(&mut h);
            h.finish()
        };
        let now = Instant::now();
        let mut recorders = crate::sync::lock(&self.recorders);
        recorders.retain(|_, (_, last_used)| now.duration_since(*last_used) < REPEAT_WINDOW);
        let (recorder, last_used) = recorders.entry(key).or_insert_with(|| {
            (
                Recorder::new(self.client.clone(), self.reporter.clone()),
                now,
            )
        });
        *last_used = now;
        recorder.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::models::ProjectRef;

    fn record(action: ActionKind, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            time: "2026-11-23T10:00:00Z".parse().expect("timestamp"),
            project: ProjectRef::parse("platform/api"),
            job_id: 8812,
            job_name: "rspec 3/8".into(),
            rule: "retry-transient".into(),
            action,
            reason: "failed with stuck_or_timeout_failure; attempt 1 of 3".into(),
            outcome,
            repeat: false,
        }
    }

    #[test]
    fn a_successful_retry_is_a_normal_event_naming_project_job_and_rule() {
        let event = action_event(&record(
            ActionKind::Retry,
            Outcome::Succeeded {
                new_job_id: Some(8830),
            },
        ))
        .expect("an event");
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.reason, "Retried");
        assert_eq!(event.action, "Retry");
        assert_eq!(
            event.note,
            "retried job 8812 (rspec 3/8) of project platform/api by rule retry-transient, \
             new job 8830: failed with stuck_or_timeout_failure; attempt 1 of 3"
        );
    }

    #[test]
    fn each_action_kind_has_its_reason() {
        let ok = || Outcome::Succeeded { new_job_id: None };
        let reasons: Vec<String> = [
            ActionKind::Retry,
            ActionKind::Cancel,
            ActionKind::Play,
            ActionKind::KeepArtifacts,
        ]
        .into_iter()
        .map(|a| action_event(&record(a, ok())).expect("an event").reason)
        .collect();
        assert_eq!(reasons, ["Retried", "Canceled", "Played", "ArtifactsKept"]);
    }

    #[test]
    fn a_failed_action_is_a_warning_with_gitlab_s_message() {
        let event = action_event(&record(
            ActionKind::Cancel,
            Outcome::Failed {
                message:
                    "POST /projects/:id/jobs/:job_id/cancel failed with HTTP 403: 403 Forbidden"
                        .into(),
            },
        ))
        .expect("an event");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "ActionFailed");
        assert_eq!(event.action, "Cancel");
        assert!(
            event.note.starts_with(
                "cancel job 8812 (rspec 3/8) of project platform/api by rule retry-transient failed: POST"
            ) && event.note.ends_with("HTTP 403: 403 Forbidden"),
            "{}",
            event.note
        );
    }

    #[test]
    fn outcomes_that_did_not_reach_gitlab_make_no_event() {
        for outcome in [
            Outcome::DryRun,
            Outcome::SkippedOverBudget,
            Outcome::Deferred {
                not_before: "2026-11-23T10:05:00Z".parse().expect("timestamp"),
            },
        ] {
            assert_eq!(
                action_event(&record(ActionKind::Retry, outcome.clone())),
                None,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn notes_stay_within_one_kilobyte() {
        let event = PolicyEvent::warning("GitLabError", "é".repeat(2000));
        assert!(event.note.len() <= MAX_NOTE_BYTES, "{}", event.note.len());
        assert!(event.note.ends_with('…'));
        let short = PolicyEvent::normal("Suspended", "paused");
        assert_eq!(short.note, "paused");
    }
}
