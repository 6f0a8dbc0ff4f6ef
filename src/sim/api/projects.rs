//! `GET /projects/:id`: one project, as `Entities::Project` shows it to a member (the fields a
//! client of the Jobs API reads to know a project: its id, its full path, whether it is
//! archived). Unknown or invisible projects are 404 `Project Not Found`, like GitLab's
//! `find_project!`.

use crate::sim::api::errors::ApiError;
use crate::sim::api::{Call, json};
use crate::sim::clock::{SimTime, iso8601};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

/// `created_at` of a project without pipelines: 2020-01-01T00:00:00Z.
const NO_PIPELINE_EPOCH: SimTime = SimTime(1_577_836_800_000);

/// `Entities::Project` (the subset the simulator can fill truthfully; GitLab adds permissions,
/// links and settings).
#[derive(Serialize)]
struct ProjectEntity<'a> {
    id: u64,
    description: Option<&'a str>,
    name: &'a str,
    name_with_namespace: String,
    path: &'a str,
    path_with_namespace: &'a str,
    created_at: String,
    default_branch: &'static str,
    web_url: String,
    namespace: NamespaceEntity<'a>,
    archived: bool,
    visibility: &'static str,
    last_activity_at: String,
}

/// `Entities::NamespaceBasic` of the project's group.
#[derive(Serialize)]
struct NamespaceEntity<'a> {
    name: &'a str,
    path: &'a str,
    kind: &'static str,
    full_path: &'a str,
    web_url: String,
}

/// `GET /projects/:id` (by id or URL-encoded full path).
pub(super) fn get(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let project_id = call.project()?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let full_path = project.path.as_str();
    let (group, name) = full_path.rsplit_once('/').unwrap_or(("", full_path));
    let group_name = group.rsplit('/').next().unwrap_or(group);
    // The simulator does not record when a project was made: its first pipeline tells, or,
    // for a project without any, a fixed date, so that the entity reads the same every time.
    let created = project
        .pipelines
        .values()
        .map(|p| p.created_at)
        .min()
        .unwrap_or(NO_PIPELINE_EPOCH);
    let last_activity = project
        .pipelines
        .values()
        .map(|p| p.updated_at)
        .max()
        .unwrap_or(created);
    let base = &call.shared.links_base;
    let entity = ProjectEntity {
        id: project.id,
        description: None,
        name,
        name_with_namespace: full_path.replace('/', " / "),
        path: name,
        path_with_namespace: full_path,
        created_at: iso8601(created),
        default_branch: "main",
        web_url: format!("{base}{full_path}"),
        namespace: NamespaceEntity {
            name: group_name,
            path: group_name,
            kind: "group",
            full_path: group,
            web_url: format!("{base}groups/{group}"),
        },
        archived: false,
        visibility: "private",
        last_activity_at: iso8601(last_activity),
    };
    Ok(json(StatusCode::OK, &entity))
}
