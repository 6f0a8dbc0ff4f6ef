//! Matches `/api/v4` paths to endpoints. Matching works on the raw (percent-encoded) path
//! split at `/`, and each segment is decoded afterwards, so a project path such as
//! `fleet%2Fproject-7` stays one segment.

use crate::sim::api::auth::Accepts;
use crate::sim::api::params::path_decode;
use axum::http::Method;

/// Every endpoint the simulator serves (the seeds' 17 endpoints, `GET /projects/:id`,
/// `GET /groups/:id` and `GET /groups/:id/projects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    GetProject,
    GetGroup,
    ListGroupProjects,
    ListProjectJobs,
    ListPipelineJobs,
    ListPipelineBridges,
    CurrentJob,
    CurrentJobAllowedAgents,
    GetJob,
    Trace,
    Cancel,
    Retry,
    Erase,
    Play,
    DownloadArtifacts,
    DownloadArtifactsByRef,
    ArtifactFile,
    ArtifactFileByRef,
    KeepArtifacts,
    DeleteArtifacts,
}

impl Endpoint {
    /// The route template (without `/api/v4`) used in the request log and counters.
    pub fn template(self) -> &'static str {
        match self {
            Endpoint::GetProject => "/projects/:id",
            Endpoint::GetGroup => "/groups/:id",
            Endpoint::ListGroupProjects => "/groups/:id/projects",
            Endpoint::ListProjectJobs => "/projects/:id/jobs",
            Endpoint::ListPipelineJobs => "/projects/:id/pipelines/:pipeline_id/jobs",
            Endpoint::ListPipelineBridges => "/projects/:id/pipelines/:pipeline_id/bridges",
            Endpoint::CurrentJob => "/job",
            Endpoint::CurrentJobAllowedAgents => "/job/allowed_agents",
            Endpoint::GetJob => "/projects/:id/jobs/:job_id",
            Endpoint::Trace => "/projects/:id/jobs/:job_id/trace",
            Endpoint::Cancel => "/projects/:id/jobs/:job_id/cancel",
            Endpoint::Retry => "/projects/:id/jobs/:job_id/retry",
            Endpoint::Erase => "/projects/:id/jobs/:job_id/erase",
            Endpoint::Play => "/projects/:id/jobs/:job_id/play",
            Endpoint::DownloadArtifacts | Endpoint::DeleteArtifacts => {
                "/projects/:id/jobs/:job_id/artifacts"
            }
            Endpoint::DownloadArtifactsByRef => "/projects/:id/jobs/artifacts/:ref_name/download",
            Endpoint::ArtifactFile => "/projects/:id/jobs/:job_id/artifacts/*artifact_path",
            Endpoint::ArtifactFileByRef => {
                "/projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path"
            }
            Endpoint::KeepArtifacts => "/projects/:id/jobs/:job_id/artifacts/keep",
        }
    }

    /// What authenticates on this endpoint besides a personal access token: CI job tokens
    /// (`docs/gitlab-behaviour.md` §9), and no credentials at all on the artifact downloads and the
    /// group listing (`authenticate_non_get!`: an anonymous caller sees public groups only, so it
    /// finds none of the simulator's private ones).
    pub fn accepts(self) -> Accepts {
        let download = matches!(
            self,
            Endpoint::DownloadArtifacts
                | Endpoint::DownloadArtifactsByRef
                | Endpoint::ArtifactFile
                | Endpoint::ArtifactFileByRef
        );
        Accepts {
            job_token: download
                || matches!(
                    self,
                    Endpoint::ListProjectJobs
                        | Endpoint::CurrentJob
                        | Endpoint::CurrentJobAllowedAgents
                ),
            anonymous: download || matches!(self, Endpoint::GetGroup | Endpoint::ListGroupProjects),
        }
    }
}

/// A matched route with its decoded path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub endpoint: Endpoint,
    /// `:id` (a project id or full path).
    pub project: Option<String>,
    /// `:id` of a group route (a group id or full path).
    pub group: Option<String>,
    /// `:job_id` or `:pipeline_id`, still unparsed.
    pub resource_id: Option<String>,
    /// `:ref_name`.
    pub ref_name: Option<String>,
    /// `*artifact_path`.
    pub artifact_path: Option<String>,
}

impl Route {
    fn new(endpoint: Endpoint) -> Route {
        Route {
            endpoint,
            project: None,
            group: None,
            resource_id: None,
            ref_name: None,
            artifact_path: None,
        }
    }
}

/// Matches a path below `/api/v4` (e.g. `/projects/1/jobs`).
pub(crate) fn resolve(method: &Method, path: &str) -> Option<Route> {
    let method = if *method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let raw: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if let Some(route) = instance_route(&method, &raw) {
        return Some(route);
    }
    if raw.first() != Some(&"projects") || raw.get(1).is_none_or(|s| s.is_empty()) {
        return None;
    }
    project_route(&method, &raw)
}

/// The routes outside a project (all `GET`): `/job`, `/job/allowed_agents`, `/groups/:id` and
/// `/groups/:id/projects`.
fn instance_route(method: &Method, raw: &[&str]) -> Option<Route> {
    if *method != Method::GET {
        return None;
    }
    let group = |endpoint: Endpoint| Route {
        group: segment(raw, 1),
        ..Route::new(endpoint)
    };
    match raw {
        ["job"] => Some(Route::new(Endpoint::CurrentJob)),
        ["job", "allowed_agents"] => Some(Route::new(Endpoint::CurrentJobAllowedAgents)),
        ["groups", id] if !id.is_empty() => Some(group(Endpoint::GetGroup)),
        ["groups", id, "projects"] if !id.is_empty() => Some(group(Endpoint::ListGroupProjects)),
        _ => None,
    }
}

/// The routes below `/projects/:id` (`raw` is `["projects", id, …]` with a non-empty id).
fn project_route(method: &Method, raw: &[&str]) -> Option<Route> {
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    let seg = |i: usize| segment(raw, i);
    let with = |endpoint: Endpoint| Route {
        project: seg(1),
        ..Route::new(endpoint)
    };
    let endpoint_route = match &raw[2..] {
        [] if get => with(Endpoint::GetProject),
        ["jobs"] if get => with(Endpoint::ListProjectJobs),
        ["pipelines", pid, "jobs"] if get && !pid.is_empty() => Route {
            resource_id: seg(3),
            ..with(Endpoint::ListPipelineJobs)
        },
        ["pipelines", pid, "bridges"] if get && !pid.is_empty() => Route {
            resource_id: seg(3),
            ..with(Endpoint::ListPipelineBridges)
        },
        ["jobs", "artifacts", r, "download"] if get && !r.is_empty() => Route {
            ref_name: seg(4),
            ..with(Endpoint::DownloadArtifactsByRef)
        },
        ["jobs", "artifacts", r, "raw", _, ..] if get && !r.is_empty() => Route {
            ref_name: seg(4),
            artifact_path: Some(rest(raw, 6)?),
            ..with(Endpoint::ArtifactFileByRef)
        },
        ["jobs", id] if get && !id.is_empty() => Route {
            resource_id: seg(3),
            ..with(Endpoint::GetJob)
        },
        ["jobs", id, action] if !id.is_empty() => Route {
            resource_id: seg(3),
            ..with(job_action(method, action)?)
        },
        ["jobs", id, "artifacts", "keep"] if post && !id.is_empty() => Route {
            resource_id: seg(3),
            ..with(Endpoint::KeepArtifacts)
        },
        ["jobs", id, "artifacts", _, ..] if get && !id.is_empty() => Route {
            resource_id: seg(3),
            artifact_path: Some(rest(raw, 5)?),
            ..with(Endpoint::ArtifactFile)
        },
        _ => return None,
    };
    Some(endpoint_route)
}

/// The endpoint of `/projects/:id/jobs/:job_id/<action>` for `method`, if there is one.
fn job_action(method: &Method, action: &str) -> Option<Endpoint> {
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    Some(match action {
        "trace" if get => Endpoint::Trace,
        "cancel" if post => Endpoint::Cancel,
        "retry" if post => Endpoint::Retry,
        "erase" if post => Endpoint::Erase,
        "play" if post => Endpoint::Play,
        "artifacts" if get => Endpoint::DownloadArtifacts,
        "artifacts" if *method == Method::DELETE => Endpoint::DeleteArtifacts,
        _ => return None,
    })
}

/// Segment `i` of the raw path, decoded.
fn segment(raw: &[&str], i: usize) -> Option<String> {
    raw.get(i).map(|s| path_decode(s))
}

/// The segments from `from` on, each decoded, joined with `/` (a `*path` parameter); `None`
/// when there are none or one of them is empty.
fn rest(raw: &[&str], from: usize) -> Option<String> {
    raw.get(from..)
        .filter(|tail| !tail.is_empty() && tail.iter().all(|s| !s.is_empty()))
        .map(|tail| {
            tail.iter()
                .map(|s| path_decode(s))
                .collect::<Vec<_>>()
                .join("/")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(method: Method, path: &str) -> Option<Endpoint> {
        resolve(&method, path).map(|r| r.endpoint)
    }

    #[test]
    fn every_endpoint_matches() {
        use Endpoint::*;
        let cases = [
            (Method::GET, "/projects/1", GetProject),
            (Method::GET, "/projects/group%2Fapp", GetProject),
            (Method::GET, "/groups/7/projects", ListGroupProjects),
            (Method::GET, "/groups/fleet%2Fapps", GetGroup),
            (
                Method::HEAD,
                "/groups/fleet%2Fapps/projects",
                ListGroupProjects,
            ),
            (Method::GET, "/projects/1/jobs", ListProjectJobs),
            (
                Method::GET,
                "/projects/1/pipelines/4/jobs",
                ListPipelineJobs,
            ),
            (
                Method::GET,
                "/projects/1/pipelines/4/bridges",
                ListPipelineBridges,
            ),
            (Method::GET, "/job", CurrentJob),
            (Method::GET, "/job/allowed_agents", CurrentJobAllowedAgents),
            (Method::GET, "/projects/1/jobs/9", GetJob),
            (Method::HEAD, "/projects/1/jobs/9", GetJob),
            (Method::GET, "/projects/1/jobs/9/trace", Trace),
            (Method::POST, "/projects/1/jobs/9/cancel", Cancel),
            (Method::POST, "/projects/1/jobs/9/retry", Retry),
            (Method::POST, "/projects/1/jobs/9/erase", Erase),
            (Method::POST, "/projects/1/jobs/9/play", Play),
            (
                Method::GET,
                "/projects/1/jobs/9/artifacts",
                DownloadArtifacts,
            ),
            (
                Method::DELETE,
                "/projects/1/jobs/9/artifacts",
                DeleteArtifacts,
            ),
            (
                Method::GET,
                "/projects/1/jobs/artifacts/main/download",
                DownloadArtifactsByRef,
            ),
            (
                Method::GET,
                "/projects/1/jobs/9/artifacts/build/info.txt",
                ArtifactFile,
            ),
            (
                Method::GET,
                "/projects/1/jobs/9/artifacts/keep",
                ArtifactFile,
            ),
            (
                Method::GET,
                "/projects/1/jobs/artifacts/v1.0/raw/dist/a.md",
                ArtifactFileByRef,
            ),
            (
                Method::POST,
                "/projects/1/jobs/9/artifacts/keep",
                KeepArtifacts,
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(ep(method.clone(), path), Some(expected), "{method} {path}");
        }
    }

    #[test]
    fn unknown_routes_and_methods() {
        for (method, path) in [
            (Method::GET, "/projects"),
            (Method::POST, "/projects/1"),
            (Method::DELETE, "/projects/1/jobs"),
            (Method::GET, "/projects/1/jobs/9/retry"),
            (Method::POST, "/projects/1/jobs/9"),
            (Method::GET, "/projects/1/jobs/9/artifacts/"),
            (Method::GET, "/projects//jobs"),
            (Method::GET, "/jobs"),
            (Method::GET, "/groups//projects"),
            (Method::POST, "/groups/1/projects"),
            (Method::GET, "/groups/1/projects/shared"),
        ] {
            assert_eq!(ep(method.clone(), path), None, "{method} {path}");
        }
    }

    #[test]
    fn segments_are_decoded_after_matching() {
        let route =
            resolve(&Method::GET, "/projects/group%2Fsub%2Fproject/jobs/12").expect("matches");
        assert_eq!(route.project.as_deref(), Some("group/sub/project"));
        assert_eq!(route.resource_id.as_deref(), Some("12"));
        let route = resolve(
            &Method::GET,
            "/projects/1/jobs/artifacts/feature%2Flogin/raw/dir/my%20file.txt",
        )
        .expect("matches");
        assert_eq!(route.ref_name.as_deref(), Some("feature/login"));
        assert_eq!(route.artifact_path.as_deref(), Some("dir/my file.txt"));
        let route = resolve(&Method::GET, "/groups/fleet%2Fplatform/projects").expect("matches");
        assert_eq!(route.group.as_deref(), Some("fleet/platform"));
        assert_eq!(route.project, None);
    }
}
