//! Typed models of GitLab's Jobs API entities (`Entities::Ci::Job`, `JobBasic`, `Bridge`, …).
//!
//! The models accept every version of the entity seen in the seed documents and in real GitLab:
//! fields that some versions omit are `Option` or defaulted, unknown statuses and failure reasons
//! are kept as strings instead of failing the decode, and unknown fields are ignored.

use super::tokens::Token;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::LazyLock;

/// A job status as GitLab reports it. Unknown values from a newer GitLab are kept in `Other`,
/// as a [`Token`]: a status is 4 bytes, in each of the many job records kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
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
    Other(Token),
}

impl JobStatus {
    /// Every status GitLab knows (the 13 values of `Ci::HasStatus::AVAILABLE_STATUSES`).
    pub const KNOWN: [JobStatus; 13] = [
        JobStatus::Created,
        JobStatus::WaitingForResource,
        JobStatus::Preparing,
        JobStatus::WaitingForCallback,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Canceling,
        JobStatus::Canceled,
        JobStatus::Skipped,
        JobStatus::Manual,
        JobStatus::Scheduled,
    ];

    /// The status's name on the wire (`waiting_for_resource`).
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Other(s) => s.as_str(),
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// The name of a known status (`None` for `Other`): the one place the 13 names are spelt.
    fn known_name(&self) -> Option<&'static str> {
        Some(match self {
            JobStatus::Created => "created",
            JobStatus::WaitingForResource => "waiting_for_resource",
            JobStatus::Preparing => "preparing",
            JobStatus::WaitingForCallback => "waiting_for_callback",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceling => "canceling",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Other(_) => return None,
        })
    }

    /// The names of [`KNOWN`](Self::KNOWN), in the same order.
    pub fn known_names() -> &'static [&'static str] {
        static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
            JobStatus::KNOWN
                .iter()
                .filter_map(JobStatus::known_name)
                .collect()
        });
        &NAMES
    }

    /// Parses a status; never fails (unknown values become `Other`).
    pub fn parse(s: &str) -> JobStatus {
        JobStatus::KNOWN
            .iter()
            .find(|k| k.as_str() == s)
            .copied()
            .unwrap_or_else(|| JobStatus::Other(Token::new(s)))
    }

    /// `COMPLETED_STATUSES`: success, failed, canceled, skipped. A completed job never changes
    /// status again (a retry creates a new job).
    pub fn is_completed(&self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }

    /// The statuses whose entry fires a Job Hook (`docs/gitlab-behaviour.md` §10): besides a
    /// build's creation, only the moves into these are delivered.
    pub fn fires_job_hook(&self) -> bool {
        matches!(
            self,
            JobStatus::Pending
                | JobStatus::Running
                | JobStatus::Success
                | JobStatus::Failed
                | JobStatus::Canceled
        )
    }

    /// `BLOCKED_STATUSES`: manual and scheduled jobs, which can wait for weeks.
    pub fn is_blocked(&self) -> bool {
        matches!(self, JobStatus::Manual | JobStatus::Scheduled)
    }

    /// `Ci::Build::CANCELABLE_STATUSES`: alive statuses plus scheduled (and canceling, which
    /// only a force-cancel moves on).
    pub fn is_cancelable(&self) -> bool {
        matches!(
            self,
            JobStatus::Created
                | JobStatus::WaitingForResource
                | JobStatus::Preparing
                | JobStatus::WaitingForCallback
                | JobStatus::Pending
                | JobStatus::Running
                | JobStatus::Scheduled
        )
    }

    /// Statuses of a job that has not reached a runner yet (it is waiting in the queue).
    pub fn is_waiting_for_runner(&self) -> bool {
        matches!(
            self,
            JobStatus::Pending | JobStatus::WaitingForResource | JobStatus::Preparing
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(JobStatus::parse(s))
    }
}

impl Serialize for JobStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Parses the status from the string as it lies in the input (no copy of it).
        struct StatusVisitor;
        impl serde::de::Visitor<'_> for StatusVisitor {
            type Value = JobStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a job status")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<JobStatus, E> {
                Ok(JobStatus::parse(s))
            }
        }
        d.deserialize_str(StatusVisitor)
    }
}

/// A job as returned by `GET /projects/:id/jobs`, `GET …/jobs/:id`, retry, cancel, play, erase,
/// keep (`Entities::Ci::Job`), or by the bridges list (`Entities::Ci::Bridge`, which lacks the
/// artifact and runner fields and adds `downstream_pipeline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub status: JobStatus,
    #[serde(default)]
    pub stage: String,
    pub name: String,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub tag: bool,
    #[serde(default)]
    pub coverage: Option<f64>,
    #[serde(default)]
    pub allow_failure: bool,
    pub created_at: Timestamp,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub erased_at: Option<Timestamp>,
    /// Seconds from start to finish (or now), null before the job starts.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Seconds from entering `pending` to start (or now). Absent in GitLab before 13.x.
    #[serde(default)]
    pub queued_duration: Option<f64>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub commit: Option<Commit>,
    /// Real GitLab always sends it; some documentation examples (cancel, retry, erase, play,
    /// keep) leave it out, and then it decodes as the default, whose `id` is 0.
    #[serde(default)]
    pub pipeline: PipelineBasic,
    /// Only present when the job failed; unknown reasons are kept as they come.
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub project: Option<JobProject>,
    /// Only present when the job has a (non-expired) artifacts archive.
    #[serde(default)]
    pub artifacts_file: Option<ArtifactsFile>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub runner: Option<Runner>,
    #[serde(default)]
    pub runner_manager: Option<serde_json::Value>,
    #[serde(default)]
    pub artifacts_expire_at: Option<Timestamp>,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default)]
    pub tag_list: Vec<String>,
    /// Bridges only: the pipeline the bridge triggered.
    #[serde(default)]
    pub downstream_pipeline: Option<PipelineBasic>,
}

impl Job {
    /// True when the job has an artifacts archive that GitLab will still serve.
    pub fn has_artifacts_archive(&self) -> bool {
        self.artifacts_file.is_some() || self.artifacts.iter().any(|a| a.file_type == "archive")
    }
}

/// `Entities::Ci::PipelineBasic`. `iid` and `source` are absent in older GitLab.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineBasic {
    pub id: u64,
    #[serde(default)]
    pub iid: Option<u64>,
    #[serde(default)]
    pub project_id: Option<u64>,
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub web_url: Option<String>,
}

/// `Entities::UserBasic` and friends; only the stable fields are typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
}

/// `Entities::Commit`; newer versions add `trailers`, `extended_trailers`, `web_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    #[serde(default)]
    pub short_id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub author_name: Option<String>,
    #[serde(default)]
    pub author_email: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

/// The `project` object embedded in a job (GitLab 14.x+).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProject {
    #[serde(default)]
    pub ci_job_token_scope_enabled: Option<bool>,
}

/// `artifacts_file`: the job's archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsFile {
    pub filename: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// One entry of `artifacts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub file_type: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub file_format: Option<String>,
}

/// `Entities::Ci::Runner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runner {
    pub id: u64,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub paused: Option<bool>,
    #[serde(default)]
    pub is_shared: Option<bool>,
    #[serde(default)]
    pub runner_type: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub online: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
}

/// A CI/CD variable passed to a manual job when playing it (`job_variables_attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobVariable {
    pub key: String,
    pub value: String,
}

/// `GET /job/allowed_agents`: the job behind a CI job token and the GitLab agents it may use.
/// Older GitLab describes the job, pipeline and project fully; newer GitLab sends little more
/// than their ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgents {
    #[serde(default)]
    pub allowed_agents: Vec<AllowedAgent>,
    pub job: AllowedAgentsJob,
    #[serde(default)]
    pub pipeline: Option<PipelineBasic>,
    #[serde(default)]
    pub project: Option<AgentProject>,
    #[serde(default)]
    pub user: Option<User>,
}

/// One GitLab agent for Kubernetes a job may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgent {
    pub id: u64,
    /// The project holding the agent's configuration.
    #[serde(default)]
    pub config_project: Option<AgentProject>,
}

/// The job of an [`AllowedAgents`] answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowedAgentsJob {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub project_id: Option<u64>,
    #[serde(default)]
    pub project_name: Option<String>,
}

/// A project as embedded in an [`AllowedAgents`] answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentProject {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub name_with_namespace: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_with_namespace: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// The project's groups (newer GitLab), by id.
    #[serde(default)]
    pub groups: Vec<AgentGroup>,
}

/// A group of an [`AgentProject`], referenced by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentGroup {
    pub id: u64,
}

/// Characters kept verbatim in a path segment (RFC 3986 unreserved); everything else, `/`
/// included, is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A project reference: a numeric id or a full path (`group/sub/project`). On the wire the path
/// is URL-encoded (`group%2Fsub%2Fproject`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProjectRef {
    Id(u64),
    Path(String),
}

impl ProjectRef {
    /// Parses a user-written project: all digits is an id, anything else a path.
    pub fn parse(s: &str) -> ProjectRef {
        match s.parse::<u64>() {
            Ok(id) => ProjectRef::Id(id),
            Err(_) => ProjectRef::Path(s.to_owned()),
        }
    }

    /// The path segment as GitLab expects it (`42` or `group%2Fproject`).
    pub fn to_path_segment(&self) -> String {
        match self {
            ProjectRef::Id(id) => id.to_string(),
            ProjectRef::Path(p) => {
                percent_encoding::utf8_percent_encode(p, PATH_SEGMENT).to_string()
            }
        }
    }
}

/// A group reference: a numeric id or a full path (`group/subgroup`). On the wire the path is
/// URL-encoded (`group%2Fsubgroup`), like a [`ProjectRef`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupRef {
    Id(u64),
    Path(String),
}

impl GroupRef {
    /// Parses a user-written group: all digits is an id, anything else a full path.
    pub fn parse(s: &str) -> GroupRef {
        match s.parse::<u64>() {
            Ok(id) => GroupRef::Id(id),
            Err(_) => GroupRef::Path(s.to_owned()),
        }
    }

    /// The path segment as GitLab expects it (`42` or `group%2Fsubgroup`).
    pub fn to_path_segment(&self) -> String {
        match self {
            GroupRef::Id(id) => id.to_string(),
            GroupRef::Path(p) => percent_encoding::utf8_percent_encode(p, PATH_SEGMENT).to_string(),
        }
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupRef::Id(id) => write!(f, "{id}"),
            GroupRef::Path(p) => f.write_str(p),
        }
    }
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProjectRef::Id(id) => write!(f, "{id}"),
            ProjectRef::Path(p) => f.write_str(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_is_kept() {
        let s: JobStatus = serde_json::from_str("\"brand_new_status\"").unwrap();
        assert_eq!(s, JobStatus::Other("brand_new_status".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"brand_new_status\"");
        for k in JobStatus::KNOWN {
            assert_eq!(JobStatus::parse(k.as_str()), k);
        }
    }

    #[test]
    fn project_paths_are_url_encoded() {
        assert_eq!(ProjectRef::parse("42"), ProjectRef::Id(42));
        assert_eq!(
            ProjectRef::parse("group/sub.x/api-1").to_path_segment(),
            "group%2Fsub.x%2Fapi-1"
        );
    }

    #[test]
    fn group_paths_are_url_encoded_like_project_paths() {
        assert_eq!(GroupRef::parse("42"), GroupRef::Id(42));
        assert_eq!(GroupRef::parse("42").to_path_segment(), "42");
        let group = GroupRef::parse("fleet/platform tools");
        assert_eq!(group, GroupRef::Path("fleet/platform tools".into()));
        assert_eq!(group.to_path_segment(), "fleet%2Fplatform%20tools");
        assert_eq!(group.to_string(), "fleet/platform tools");
    }
}
