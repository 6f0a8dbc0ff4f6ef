//! `GET /projects/:id`: one project, as `Entities::Project` shows it to a member (the fields a
//! client of the Jobs API reads to know a project: its id, its full path, whether it is
//! archived). Unknown or invisible projects are 404 `Project Not Found`, like GitLab's
//! `find_project!`.
//!
//! The entities are shared with `GET /groups/:id/projects`, which renders the same
//! `Entities::Project`, or `Entities::BasicProjectDetails` with `simple=true`.

use crate::sim::api::errors::ApiError;
use crate::sim::api::{Call, json};
use crate::sim::clock::{SimTime, iso8601};
use crate::sim::state::{Project, World};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

/// `Entities::BasicProjectDetails` (what `simple=true` lists), the subset the simulator can
/// fill truthfully. It has no `archived`.
#[derive(Serialize)]
pub(super) struct SimpleProjectEntity<'a> {
    id: u64,
    description: Option<&'a str>,
    name: &'a str,
    name_with_namespace: String,
    path: &'a str,
    path_with_namespace: &'a str,
    created_at: String,
    default_branch: &'static str,
    tag_list: [&'static str; 0],
    topics: [&'static str; 0],
    ssh_url_to_repo: String,
    http_url_to_repo: String,
    web_url: String,
    readme_url: Option<String>,
    forks_count: u64,
    avatar_url: Option<&'static str>,
    star_count: u64,
    last_activity_at: String,
    visibility: &'static str,
    namespace: NamespaceEntity<'a>,
}

/// `Entities::Project`: the basic details, then (of the many fields GitLab adds: links,
/// settings, permissions) the ones the simulator knows.
#[derive(Serialize)]
pub(super) struct ProjectEntity<'a> {
    #[serde(flatten)]
    basic: SimpleProjectEntity<'a>,
    empty_repo: bool,
    archived: bool,
    jobs_enabled: bool,
    builds_access_level: &'static str,
}

/// `Entities::NamespaceBasic` of the project's group (or, for a project outside any group,
/// of the token user's own namespace).
#[derive(Serialize)]
struct NamespaceEntity<'a> {
    id: u64,
    name: &'a str,
    path: &'a str,
    kind: &'static str,
    full_path: &'a str,
    parent_id: Option<u64>,
    avatar_url: Option<&'static str>,
    web_url: String,
}

/// When a project was made as the API tells it: its own date, or its first pipeline's when
/// a test scenario backdated one.
pub(super) fn created_at(project: &Project) -> SimTime {
    project
        .pipelines
        .values()
        .map(|p| p.created_at)
        .chain([project.created_at])
        .min()
        .unwrap_or(project.created_at)
}

/// The newest change of any of the project's pipelines, else its creation.
pub(super) fn last_activity_at(project: &Project) -> SimTime {
    project
        .pipelines
        .values()
        .map(|p| p.updated_at)
        .max()
        .unwrap_or_else(|| created_at(project))
}

/// `user.example:2222`-style host of the instance URL, for `ssh_url_to_repo`.
fn ssh_host(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "gitlab.example.com".to_owned())
}

/// The simple entity of a project.
pub(super) fn simple<'a>(
    world: &'a World,
    project: &'a Project,
    base: &str,
) -> SimpleProjectEntity<'a> {
    let full_path = project.path.as_str();
    let name = full_path.rsplit('/').next().unwrap_or(full_path);
    let namespace = match project.group_id.and_then(|id| world.groups.get(&id)) {
        Some(group) => NamespaceEntity {
            id: group.id,
            name: &group.name,
            path: &group.path,
            kind: "group",
            full_path: &group.full_path,
            parent_id: group.parent_id,
            avatar_url: None,
            web_url: format!("{base}groups/{}", group.full_path),
        },
        None => NamespaceEntity {
            id: 1,
            name: "Administrator",
            path: "root",
            kind: "user",
            full_path: "root",
            parent_id: None,
            avatar_url: None,
            web_url: format!("{base}root"),
        },
    };
    let name_with_namespace = match project.group_id.and_then(|id| world.groups.get(&id)) {
        Some(group) => format!("{} / {name}", group_full_name(world, group.id)),
        None => format!("Administrator / {name}"),
    };
    SimpleProjectEntity {
        id: project.id,
        description: None,
        name,
        name_with_namespace,
        path: name,
        path_with_namespace: full_path,
        created_at: iso8601(created_at(project)),
        default_branch: "main",
        tag_list: [],
        topics: [],
        ssh_url_to_repo: format!("git@{}:{full_path}.git", ssh_host(base)),
        http_url_to_repo: format!("{base}{full_path}.git"),
        web_url: format!("{base}{full_path}"),
        readme_url: None,
        forks_count: 0,
        avatar_url: None,
        star_count: 0,
        last_activity_at: iso8601(last_activity_at(project)),
        visibility: "private",
        namespace,
    }
}

/// The full entity of a project.
pub(super) fn full<'a>(world: &'a World, project: &'a Project, base: &str) -> ProjectEntity<'a> {
    ProjectEntity {
        basic: simple(world, project, base),
        empty_repo: false,
        archived: project.archived,
        jobs_enabled: true,
        builds_access_level: "enabled",
    }
}

/// `Fleet / Platform / Tools`: the names of a group and its ancestors.
pub(super) fn group_full_name(world: &World, group_id: u64) -> String {
    let mut names = Vec::new();
    let mut next = Some(group_id);
    while let Some(group) = next.and_then(|id| world.groups.get(&id)) {
        names.push(group.name.as_str());
        next = group.parent_id;
    }
    names.reverse();
    names.join(" / ")
}

/// `GET /projects/:id` (by id or URL-encoded full path).
pub(super) fn get(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let project_id = call.project()?;
    let project = call
        .world
        .projects
        .get(&project_id)
        .ok_or_else(|| ApiError::not_found(Some("Project")))?;
    let entity = full(call.world, project, &call.shared.links_base);
    Ok(json(StatusCode::OK, &entity))
}
