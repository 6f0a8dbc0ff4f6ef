//! Job statuses and GitLab's status groups (`Ci::HasStatus`, `docs/gitlab-behaviour.md` §1).

use std::fmt;

/// One of GitLab's 13 job statuses (`AVAILABLE_STATUSES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Status {
    Created,
    WaitingForResource,
    Preparing,
    WaitingForCallback,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
}

impl Status {
    /// Every status, in GitLab's `AVAILABLE_STATUSES` order.
    pub const ALL: [Status; 13] = [
        Status::Created,
        Status::WaitingForResource,
        Status::Preparing,
        Status::WaitingForCallback,
        Status::Pending,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Canceling,
        Status::Canceled,
        Status::Skipped,
        Status::Manual,
        Status::Scheduled,
    ];

    /// The wire name (`waiting_for_resource`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::WaitingForResource => "waiting_for_resource",
            Status::Preparing => "preparing",
            Status::WaitingForCallback => "waiting_for_callback",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Canceling => "canceling",
            Status::Canceled => "canceled",
            Status::Skipped => "skipped",
            Status::Manual => "manual",
            Status::Scheduled => "scheduled",
        }
    }

    /// Parses a wire name; `None` for anything that is not one of the 13 statuses.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// `COMPLETED_STATUSES`: success, failed, canceled, skipped.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            Status::Success | Status::Failed | Status::Canceled | Status::Skipped
        )
    }

    /// `Ci::Build::CANCELABLE_STATUSES` plus `manual`: the statuses the `cancel` event leaves.
    pub fn is_cancelable(self) -> bool {
        matches!(
            self,
            Status::Created
                | Status::WaitingForResource
                | Status::Preparing
                | Status::WaitingForCallback
                | Status::Pending
                | Status::Running
                | Status::Canceling
                | Status::Scheduled
                | Status::Manual
        )
    }

    /// Statuses in which a job has a finish time (`success`, `failed`, `canceled`).
    pub fn sets_finished_at(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Canceled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `when:` of a job: when the pipeline processor starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    OnSuccess,
    Manual,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::Manual => "manual",
        }
    }
}

/// A pipeline's composite status from its latest jobs, after GitLab's
/// `Gitlab::Ci::Status::Composite` (failed jobs that may fail and manual jobs that may fail
/// count as "ignored"; `success_with_warnings` collapses into success).
pub(crate) fn composite(jobs: impl IntoIterator<Item = (Status, bool)>) -> Status {
    let mut seen = [false; 13];
    let mut ignored = false;
    let mut any = false;
    for (status, allow_failure) in jobs {
        any = true;
        let is_ignored = allow_failure && matches!(status, Status::Failed | Status::Manual);
        if is_ignored {
            ignored = true;
            if status == Status::Failed {
                // A failure that is allowed to fail reads as success with warnings.
                seen[Status::Success as usize] = true;
            }
            continue;
        }
        seen[status as usize] = true;
    }
    if !any {
        return Status::Created;
    }
    let has = |s: Status| seen[s as usize];
    let only_of = |allowed: &[Status]| Status::ALL.iter().all(|s| !has(*s) || allowed.contains(s));
    let none_seen = Status::ALL.iter().all(|s| !has(*s));
    if none_seen {
        // Only ignored jobs: manual jobs allowed to fail, or allowed failures.
        return if ignored {
            Status::Success
        } else {
            Status::Created
        };
    }
    if only_of(&[Status::Skipped]) {
        Status::Skipped
    } else if only_of(&[Status::Success, Status::Skipped]) {
        Status::Success
    } else if only_of(&[Status::Created]) {
        Status::Created
    } else if only_of(&[Status::Preparing]) {
        Status::Preparing
    } else if only_of(&[Status::Success, Status::Skipped, Status::Canceled]) {
        Status::Canceled
    } else if only_of(&[Status::Pending, Status::Created, Status::Skipped]) {
        Status::Pending
    } else if has(Status::Running) || has(Status::Pending) || has(Status::Canceling) {
        Status::Running
    } else if has(Status::WaitingForResource) {
        Status::WaitingForResource
    } else if has(Status::WaitingForCallback) {
        Status::WaitingForCallback
    } else if has(Status::Manual) {
        Status::Manual
    } else if has(Status::Scheduled) {
        Status::Scheduled
    } else if has(Status::Preparing) {
        Status::Preparing
    } else if has(Status::Created) {
        Status::Running
    } else {
        Status::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("succeeded"), None);
        assert_eq!(Status::parse("Success"), None);
    }

    #[test]
    fn groups_follow_gitlab() {
        let completed: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_completed())
            .collect();
        assert_eq!(
            completed,
            [
                Status::Success,
                Status::Failed,
                Status::Canceled,
                Status::Skipped
            ]
        );
        assert!(!Status::Canceling.is_completed());
        assert!(Status::Manual.is_cancelable());
        assert!(!Status::Success.is_cancelable());
    }

    #[test]
    fn composite_status() {
        use Status::*;
        assert_eq!(composite([(Success, false), (Skipped, false)]), Success);
        assert_eq!(composite([(Success, false), (Failed, true)]), Success);
        assert_eq!(composite([(Success, false), (Failed, false)]), Failed);
        assert_eq!(composite([(Success, false), (Running, false)]), Running);
        assert_eq!(composite([(Success, false), (Manual, true)]), Success);
        assert_eq!(composite([(Success, false), (Manual, false)]), Manual);
        assert_eq!(composite([(Pending, false), (Created, false)]), Pending);
        assert_eq!(composite([(Success, false), (Created, false)]), Running);
        assert_eq!(composite([(Canceled, false), (Success, false)]), Canceled);
        assert_eq!(composite([(Skipped, false)]), Skipped);
        assert_eq!(composite([(Failed, false), (Skipped, false)]), Failed);
    }
}
