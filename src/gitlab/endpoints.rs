//! The GitLab API endpoints the client calls, as method + route template pairs, and the helpers that
//! turn user values into path segments and query strings.
//!
//! Route templates (`/projects/:id/jobs/:job_id/retry`) are what the client reports to its
//! [`RequestObserver`](crate::gitlab::telemetry::RequestObserver) and puts in errors: they are
//! low-cardinality and never contain a project path, a token or a query string. The same
//! template renders the request's path (`Endpoint::path` with `PathParams`), so the label a
//! request is counted under and the URL it is sent to come from one definition.

use crate::gitlab::error::GitLabError;
use crate::gitlab::models::{GroupRef, ProjectRef};
use std::fmt;
use std::fmt::Write as _;

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

impl Endpoint {
    /// The path of one request to this endpoint: the template with each placeholder replaced by
    /// its value from `params`, percent-encoded (`/projects/g%2Fp/jobs/7/play`). An empty
    /// `:ref_name` or `*artifact_path` is refused; so is a placeholder `params` has no value for
    /// (a mistake in the caller, reported rather than sent).
    pub(crate) fn path(self, params: &PathParams<'_>) -> Result<String, GitLabError> {
        let missing = |placeholder: &str| {
            GitLabError::InvalidArgument(format!("{self}: no value for `{placeholder}`"))
        };
        let mut path = String::with_capacity(self.template.len() + 32);
        for segment in self.template.split('/').skip(1) {
            path.push('/');
            match segment {
                ":id" => path.push_str(params.id.as_deref().ok_or_else(|| missing(segment))?),
                ":job_id" => {
                    let id = params.job_id.ok_or_else(|| missing(segment))?;
                    let _ = write!(path, "{id}");
                }
                ":pipeline_id" => {
                    let id = params.pipeline_id.ok_or_else(|| missing(segment))?;
                    let _ = write!(path, "{id}");
                }
                ":ref_name" => {
                    let ref_name = params.ref_name.ok_or_else(|| missing(segment))?;
                    if ref_name.is_empty() {
                        return Err(GitLabError::InvalidArgument("the ref name is empty".into()));
                    }
                    path.push_str(&encode_segment(ref_name));
                }
                "*artifact_path" => {
                    let raw = params.artifact_path.ok_or_else(|| missing(segment))?;
                    let encoded = encode_artifact_path(raw);
                    if encoded.is_empty() {
                        return Err(GitLabError::InvalidArgument(
                            "the artifact path is empty".into(),
                        ));
                    }
                    path.push_str(&encoded);
                }
                literal => path.push_str(literal),
            }
        }
        Ok(path)
    }
}

/// The values that fill an [`Endpoint`]'s placeholders: `:id` (a project or a group, already
/// encoded as one path segment), `:job_id`, `:pipeline_id`, `:ref_name` and `*artifact_path`
/// (both encoded when the path is rendered). Built from the project or group, then one setter a
/// further placeholder: `PathParams::project(&p).job(7)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PathParams<'a> {
    id: Option<String>,
    job_id: Option<u64>,
    pipeline_id: Option<u64>,
    ref_name: Option<&'a str>,
    artifact_path: Option<&'a str>,
}

impl<'a> PathParams<'a> {
    /// No placeholder (`/job`).
    pub(crate) fn none() -> PathParams<'a> {
        PathParams::default()
    }

    /// `:id` is `project`, by id or by encoded full path.
    pub(crate) fn project(project: &ProjectRef) -> PathParams<'a> {
        PathParams {
            id: Some(project.to_path_segment()),
            ..PathParams::default()
        }
    }

    /// `:id` is `group`, by id or by encoded full path.
    pub(crate) fn group(group: &GroupRef) -> PathParams<'a> {
        PathParams {
            id: Some(group.to_path_segment()),
            ..PathParams::default()
        }
    }

    /// `:job_id`.
    pub(crate) fn job(mut self, job_id: u64) -> PathParams<'a> {
        self.job_id = Some(job_id);
        self
    }

    /// `:pipeline_id`.
    pub(crate) fn pipeline(mut self, pipeline_id: u64) -> PathParams<'a> {
        self.pipeline_id = Some(pipeline_id);
        self
    }

    /// `:ref_name`: a branch or tag, `/` included.
    pub(crate) fn ref_name(mut self, ref_name: &'a str) -> PathParams<'a> {
        self.ref_name = Some(ref_name);
        self
    }

    /// `*artifact_path`: a path inside an artifacts archive (`some/release/file.pdf`).
    pub(crate) fn artifact_path(mut self, artifact_path: &'a str) -> PathParams<'a> {
        self.artifact_path = Some(artifact_path);
        self
    }
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
    fn every_template_renders_with_every_placeholder_filled() {
        let project = ProjectRef::parse("g/p");
        let full = PathParams::project(&project)
            .job(7)
            .pipeline(3)
            .ref_name("feature/login")
            .artifact_path("some/file 1.pdf");
        for e in Endpoint::ALL {
            let path = e.path(&full).unwrap();
            assert!(!path.contains(':') && !path.contains('*'), "{e}: {path}");
            assert_eq!(
                path.split('/').count(),
                e.template.split('/').count() + usize::from(e.template.contains('*')),
                "{e}: {path}"
            );
        }
    }

    #[test]
    fn paths_encode_their_values() {
        let p = ProjectRef::parse("g/p");
        assert_eq!(
            Endpoint::PLAY_JOB
                .path(&PathParams::project(&p).job(7))
                .unwrap(),
            "/projects/g%2Fp/jobs/7/play"
        );
        assert_eq!(
            Endpoint::LIST_PIPELINE_BRIDGES
                .path(&PathParams::project(&ProjectRef::Id(5)).pipeline(9))
                .unwrap(),
            "/projects/5/pipelines/9/bridges"
        );
        assert_eq!(
            Endpoint::DOWNLOAD_ARTIFACT_FILE_BY_REF
                .path(
                    &PathParams::project(&p)
                        .ref_name("feature/login")
                        .artifact_path("/some/file 1.pdf")
                )
                .unwrap(),
            "/projects/g%2Fp/jobs/artifacts/feature%2Flogin/raw/some/file%201.pdf"
        );
        assert_eq!(
            Endpoint::LIST_GROUP_PROJECTS
                .path(&PathParams::group(&GroupRef::parse("a/b c")))
                .unwrap(),
            "/groups/a%2Fb%20c/projects"
        );
        assert_eq!(
            Endpoint::CURRENT_JOB.path(&PathParams::none()).unwrap(),
            "/job"
        );
    }

    #[test]
    fn empty_or_missing_values_are_refused() {
        let p = ProjectRef::parse("g/p");
        let empty_ref = Endpoint::DOWNLOAD_ARTIFACTS_BY_REF
            .path(&PathParams::project(&p).ref_name(""))
            .unwrap_err();
        assert_eq!(
            empty_ref.to_string(),
            "invalid argument: the ref name is empty"
        );
        let empty_file = Endpoint::DOWNLOAD_ARTIFACT_FILE
            .path(&PathParams::project(&p).job(1).artifact_path("/"))
            .unwrap_err();
        assert_eq!(empty_file.kind(), "invalid_argument");
        let missing = Endpoint::GET_JOB
            .path(&PathParams::project(&p))
            .unwrap_err();
        assert!(missing.to_string().contains("`:job_id`"), "{missing}");
        assert!(Endpoint::GET_PROJECT.path(&PathParams::none()).is_err());
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
