//! Failure reasons and their aliases.
//!
//! GitLab 19.1 stopped writing `stuck_or_timeout_failure` and `job_execution_timeout` for some
//! failures and writes granular reasons instead (`failure_reason_aliases`). A rule naming the
//! old reason matches the granular ones, and a rule naming a granular reason matches a job of
//! an older GitLab that reports the old one. Siblings do not match each other, and a reason
//! jobwarden does not know matches only itself.

use std::collections::BTreeSet;

/// `(umbrella reason, the granular reasons it covers)`.
pub const FAILURE_REASON_ALIASES: &[(&str, &[&str])] = &[
    (
        "stuck_or_timeout_failure",
        &[
            "stuck_pending_with_matching_runners",
            "stuck_pending_no_matching_runners",
            "no_updates_running",
            "no_updates_canceling",
        ],
    ),
    (
        "job_execution_timeout",
        &["server_timeout_running", "server_timeout_canceling"],
    ),
];

/// The reasons a rule naming `reason` matches: itself, the granular reasons it covers, and
/// the umbrella reason that covers it.
pub fn expand_failure_reason(reason: &str) -> Vec<&str> {
    let mut out = vec![reason];
    for (umbrella, granular) in FAILURE_REASON_ALIASES {
        if *umbrella == reason {
            out.extend_from_slice(granular);
        } else if granular.contains(&reason) {
            out.push(umbrella);
        }
    }
    out
}

/// A set of failure reasons with aliases expanded, for matching jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReasonSet {
    /// As the user wrote them.
    written: Vec<String>,
    /// Written plus aliases.
    expanded: BTreeSet<String>,
}

impl FailureReasonSet {
    /// Builds the set from the reasons a rule names.
    pub fn new(written: &[String]) -> FailureReasonSet {
        let expanded = written
            .iter()
            .flat_map(|r| expand_failure_reason(r))
            .map(str::to_owned)
            .collect();
        FailureReasonSet {
            written: written.to_vec(),
            expanded,
        }
    }

    /// True when a job failing with `reason` matches.
    pub fn matches(&self, reason: &str) -> bool {
        self.expanded.contains(reason)
    }

    /// The reason the user wrote that `reason` matched through, when it is an alias of it
    /// rather than the reason itself.
    pub fn matched_alias_of(&self, reason: &str) -> Option<&str> {
        if self.written.iter().any(|w| w == reason) {
            return None;
        }
        self.written
            .iter()
            .find(|w| expand_failure_reason(w).contains(&reason))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(reasons: &[&str]) -> FailureReasonSet {
        FailureReasonSet::new(&reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn umbrella_reason_matches_granular_reasons() {
        let s = set(&["stuck_or_timeout_failure"]);
        for r in [
            "stuck_or_timeout_failure",
            "stuck_pending_with_matching_runners",
            "stuck_pending_no_matching_runners",
            "no_updates_running",
            "no_updates_canceling",
        ] {
            assert!(s.matches(r), "{r}");
        }
        assert!(!s.matches("server_timeout_running"));
        assert!(!s.matches("script_failure"));
        assert_eq!(
            s.matched_alias_of("no_updates_running"),
            Some("stuck_or_timeout_failure")
        );
        assert_eq!(s.matched_alias_of("stuck_or_timeout_failure"), None);

        let t = set(&["job_execution_timeout"]);
        assert!(t.matches("server_timeout_running"));
        assert!(t.matches("server_timeout_canceling"));
        assert!(!t.matches("no_updates_running"));
    }

    #[test]
    fn granular_reason_matches_umbrella_but_not_siblings() {
        let s = set(&["no_updates_running"]);
        assert!(s.matches("no_updates_running"));
        assert!(s.matches("stuck_or_timeout_failure"));
        assert!(!s.matches("stuck_pending_no_matching_runners"));
        let t = set(&["server_timeout_canceling"]);
        assert!(t.matches("job_execution_timeout"));
        assert!(!t.matches("server_timeout_running"));
    }

    #[test]
    fn unknown_reasons_match_only_themselves() {
        let s = set(&["reason_from_gitlab_25"]);
        assert!(s.matches("reason_from_gitlab_25"));
        assert!(!s.matches("stuck_or_timeout_failure"));
        assert!(!s.matches("unknown_failure"));
    }
}
