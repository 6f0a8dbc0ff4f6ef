//! The GitLab API endpoints the client calls, as method + route template pairs, and the helpers that
//! turn user values into path segments and query strings.
//!
//! Route templates (`/projects/:id/jobs/:job_id/retry`) are what the client reports to its
//! [`RequestObserver`](crate::gitlab::telemetry::RequestObserver) and puts in errors: they are
//! low-cardinality and never contain a project path, a token or a query string.

use std::fmt;

/// The HTTP methods the Jobs API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    /// The method's name on the wire (`GET`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    /// True for methods that change state in GitLab (everything but `GET`).
    pub const fn is_state_changing(self) -> bool {
        !matches!(self, Method::Get)
    }

    pub(crate) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Jobs API endpoint: its method and its route template relative to `/api/v4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub method: Method,
    pub template: &'static str,
}

impl Endpoint {
    const fn get(template: &'static str) -> Endpoint {
        Endpoint {
            method: Method::Get,
            template,
        }
    }

    const fn post(template: &'static str) -> Endpoint {
        Endpoint {
            method: Method::Post,
            template,
        }
    }

    const fn delete(template: &'static str) -> Endpoint {
        Endpoint {
            method: Method::Delete,
            template,
        }
    }

    /// `GET /projects/:id`: the project (its numeric id, full path, `archived`).
    pub const GET_PROJECT: Endpoint = Endpoint::get("/projects/:id");
    /// `GET /groups/:id/projects`: the projects of a group (and of its subgroups).
    pub const LIST_GROUP_PROJECTS: Endpoint = Endpoint::get("/groups/:id/projects");
    /// `GET /projects/:id/jobs`: the project's jobs, newest first (subject to GitLab's
    /// `jobs_index` application rate limit).
    pub const LIST_PROJECT_JOBS: Endpoint = Endpoint::get("/projects/:id/jobs");
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs`.
    pub const LIST_PIPELINE_JOBS: Endpoint =
        Endpoint::get("/projects/:id/pipelines/:pipeline_id/jobs");
    /// `GET /projects/:id/pipelines/:pipeline_id/bridges` (trigger jobs).
    pub const LIST_PIPELINE_BRIDGES: Endpoint =
        Endpoint::get("/projects/:id/pipelines/:pipeline_id/bridges");
    /// `GET /job`: the job behind a CI job token.
    pub const CURRENT_JOB: Endpoint = Endpoint::get("/job");
    /// `GET /job/allowed_agents`.
    pub const ALLOWED_AGENTS: Endpoint = Endpoint::get("/job/allowed_agents");
    /// `GET /projects/:id/jobs/:job_id`.
    pub const GET_JOB: Endpoint = Endpoint::get("/projects/:id/jobs/:job_id");
    /// `GET /projects/:id/jobs/:job_id/trace`: the job log as plain text.
    pub const JOB_TRACE: Endpoint = Endpoint::get("/projects/:id/jobs/:job_id/trace");
    /// `POST /projects/:id/jobs/:job_id/cancel`.
    pub const CANCEL_JOB: Endpoint = Endpoint::post("/projects/:id/jobs/:job_id/cancel");
    /// `POST /projects/:id/jobs/:job_id/retry`: creates a new job.
    pub const RETRY_JOB: Endpoint = Endpoint::post("/projects/:id/jobs/:job_id/retry");
    /// `POST /projects/:id/jobs/:job_id/erase`.
    pub const ERASE_JOB: Endpoint = Endpoint::post("/projects/:id/jobs/:job_id/erase");
    /// `POST /projects/:id/jobs/:job_id/play`.
    pub const PLAY_JOB: Endpoint = Endpoint::post("/projects/:id/jobs/:job_id/play");
    /// `POST /projects/:id/jobs/:job_id/artifacts/keep`.
    pub const KEEP_ARTIFACTS: Endpoint =
        Endpoint::post("/projects/:id/jobs/:job_id/artifacts/keep");
    /// `DELETE /projects/:id/jobs/:job_id/artifacts`.
    pub const DELETE_ARTIFACTS: Endpoint = Endpoint::delete("/projects/:id/jobs/:job_id/artifacts");
    /// `GET /projects/:id/jobs/:job_id/artifacts`: the artifacts archive.
    pub const DOWNLOAD_ARTIFACTS: Endpoint = Endpoint::get("/projects/:id/jobs/:job_id/artifacts");
    /// `GET /projects/:id/jobs/artifacts/:ref_name/download?job=`: the archive of the latest
    /// successful job of that name on a ref.
    pub const DOWNLOAD_ARTIFACTS_BY_REF: Endpoint =
        Endpoint::get("/projects/:id/jobs/artifacts/:ref_name/download");
    /// `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`: one file of the archive.
    pub const DOWNLOAD_ARTIFACT_FILE: Endpoint =
        Endpoint::get("/projects/:id/jobs/:job_id/artifacts/*artifact_path");
    /// `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=`.
    pub const DOWNLOAD_ARTIFACT_FILE_BY_REF: Endpoint =
        Endpoint::get("/projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path");

    /// Every endpoint of the client (the union of the seed documents: 17 endpoints,
    /// `GET /projects/:id` to resolve a project path to its id, and `GET /groups/:id/projects`
    /// to list a group's projects).
    pub const ALL: [Endpoint; 19] = [
        Endpoint::GET_PROJECT,
        Endpoint::LIST_GROUP_PROJECTS,
        Endpoint::LIST_PROJECT_JOBS,
        Endpoint::LIST_PIPELINE_JOBS,
        Endpoint::LIST_PIPELINE_BRIDGES,
        Endpoint::CURRENT_JOB,
        Endpoint::ALLOWED_AGENTS,
        Endpoint::GET_JOB,
        Endpoint::JOB_TRACE,
        Endpoint::CANCEL_JOB,
        Endpoint::RETRY_JOB,
        Endpoint::ERASE_JOB,
        Endpoint::PLAY_JOB,
        Endpoint::KEEP_ARTIFACTS,
        Endpoint::DELETE_ARTIFACTS,
        Endpoint::DOWNLOAD_ARTIFACTS,
        Endpoint::DOWNLOAD_ARTIFACTS_BY_REF,
        Endpoint::DOWNLOAD_ARTIFACT_FILE,
        Endpoint::DOWNLOAD_ARTIFACT_FILE_BY_REF,
    ];
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

/// Characters kept verbatim in a path segment or a query value (RFC 3986 unreserved); all others,
/// `/` included, are percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one path segment: `feature/login` becomes `feature%2Flogin`.
pub(crate) fn encode_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

/// Encodes a path inside an artifacts archive: each `/`-separated part is encoded, the separators
/// stay (`some/release/file 1.pdf` becomes `some/release/file%201.pdf`), matching GitLab's
/// `*artifact_path` splat route.
pub(crate) fn encode_artifact_path(path: &str) -> String {
    path.trim_start_matches('/')
        .split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// A query string under construction. Keys are written as given (so `scope[]` stays readable on
/// the wire, as in GitLab's documentation); values are percent-encoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pairs: Vec<(&'static str, String)>,
}

impl Query {
    pub(crate) fn new() -> Query {
        Query::default()
    }

    pub(crate) fn push(&mut self, key: &'static str, value: impl AsRef<str>) -> &mut Query {
        self.pairs.push((key, encode_segment(value.as_ref())));
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub(crate) fn to_query_string(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_encode_slashes_and_spaces() {
        assert_eq!(
            encode_segment("feature/login page"),
            "feature%2Flogin%20page"
        );
        assert_eq!(encode_segment("v1.2.3_rc-1~x"), "v1.2.3_rc-1~x");
    }

    #[test]
    fn artifact_paths_keep_their_separators() {
        assert_eq!(
            encode_artifact_path("/some/release/file 1.pdf"),
            "some/release/file%201.pdf"
        );
        assert_eq!(encode_artifact_path("a?b#c"), "a%3Fb%23c");
    }

    #[test]
    fn query_keys_stay_literal_and_values_are_encoded() {
        let mut q = Query::new();
        q.push("scope[]", "pending")
            .push("scope[]", "running")
            .push("job", "build & test");
        assert_eq!(
            q.to_query_string(),
            "scope[]=pending&scope[]=running&job=build%20%26%20test"
        );
    }

    #[test]
    fn templates_are_distinct_per_method() {
        let mut seen = std::collections::HashSet::new();
        for e in Endpoint::ALL {
            assert!(e.template.starts_with('/'), "{e}");
            assert!(seen.insert((e.method, e.template)), "duplicate {e}");
        }
    }
}
