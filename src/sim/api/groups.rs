//! `GET /groups/:id/projects`: the projects of a group (and, with `include_subgroups=true`, of
//! every group below it), as GitLab's `GroupProjectsFinder` lists them to an administrator;
//! and `GET /groups/:id`, the group itself (`Entities::GroupDetail` with up to 100 of its own
//! projects, or `Entities::Group` with `with_projects=false`).
//!
//! Order of checks as in GitLab: parameters (Grape's 400), then `find_group!` (404
//! `Group Not Found`, also for a group the caller cannot see: every simulated group is
//! private, so only the personal access token sees them). Ordering is `order_by` with `id` as
//! the tie-breaker in the same direction; `created_at` orders by `id`, as GitLab does.
//! Offset pagination with counts (`X-Total`, `X-Total-Pages`, `rel="last"`) up to 10,000
//! projects, without them beyond; `pagination=keyset` is not supported on this endpoint and
//! is ignored (offset pages), as in GitLab.

use crate::sim::api::auth::Principal;
use crate::sim::api::errors::ApiError;
use crate::sim::api::pagination::OffsetRequest;
use crate::sim::api::params::Params;
use crate::sim::api::projects::{self, last_activity_at};
use crate::sim::api::{Call, json, with_headers};
use crate::sim::clock::iso8601;
use crate::sim::state::{Group, Project, World};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use std::cmp::Ordering;

/// `order_by` values GitLab accepts on this endpoint.
const ORDER_BY: [&str; 8] = [
    "id",
    "name",
    "path",
    "created_at",
    "updated_at",
    "last_activity_at",
    "similarity",
    "star_count",
];

/// GitLab leaves the counts out above this many records.
const COUNT_LIMIT: usize = 10_000;

/// The parameters of one listing, checked.
struct Query {
    archived: Option<bool>,
    include_subgroups: bool,
    simple: bool,
    starred: bool,
    /// `None` = any; the simulated projects are all private.
    visibility: Option<String>,
    search: Option<String>,
    order_by: String,
    descending: bool,
    offset: OffsetRequest,
}

/// A string parameter restricted to `allowed` values (Grape's `values:`).
fn one_of(params: &Params, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match params.scalar(name) {
        None => Ok(None),
        Some(value) if allowed.contains(&value.as_str()) => Ok(Some(value)),
        Some(_) => Err(ApiError::param(format!(
            "{name} does not have a valid value"
        ))),
    }
}

impl Query {
    fn parse(params: &Params) -> Result<Query, ApiError> {
        let archived = params.boolean("archived")?;
        // `active` (newer GitLab): neither archived nor marked for deletion (nothing is).
        let archived = match params.boolean("active")? {
            Some(active) => Some(!active).filter(|_| archived.is_none()).or(archived),
            None => archived,
        };
        let visibility = one_of(params, "visibility", &["private", "internal", "public"])?;
        let search = params.scalar("search").filter(|s| !s.is_empty());
        let order_by =
            one_of(params, "order_by", &ORDER_BY)?.unwrap_or_else(|| "created_at".to_owned());
        let sort = one_of(params, "sort", &["asc", "desc"])?.unwrap_or_else(|| "desc".to_owned());
        let simple = params.boolean("simple")?.unwrap_or(false);
        // Accepted and checked; what they filter on does not exist in the simulator (every
        // project is the administrator's, none has issues or merge requests turned off, no
        // project is shared with a group, no security reports).
        for name in [
            "owned",
            "with_issues_enabled",
            "with_merge_requests_enabled",
            "with_shared",
            "include_ancestor_groups",
            "with_custom_attributes",
            "with_security_reports",
        ] {
            params.boolean(name)?;
        }
        let starred = params.boolean("starred")?.unwrap_or(false);
        let include_subgroups = params.boolean("include_subgroups")?.unwrap_or(false);
        params.integer("min_access_level")?;
        let offset = OffsetRequest::parse(params)?;
        Ok(Query {
            archived,
            include_subgroups,
            simple,
            starred,
            visibility,
            search,
            order_by,
            descending: sort == "desc",
            offset,
        })
    }

    fn keeps(&self, project: &Project) -> bool {
        let name = project.path.rsplit('/').next().unwrap_or(&project.path);
        self.archived
            .is_none_or(|archived| project.archived == archived)
            && self.visibility.as_deref().is_none_or(|v| v == "private")
            && !self.starred
            && self.search.as_deref().is_none_or(|needle| {
                let needle = needle.to_lowercase();
                name.to_lowercase().contains(&needle)
            })
    }

    /// `order_by` then `id`, both in the `sort` direction (`similarity` orders by name,
    /// ascending, then by id in the `sort` direction, as GitLab does without a `search` to
    /// score).
    fn compare(&self, a: &Project, b: &Project) -> Ordering {
        let name = |p: &Project| p.path.rsplit('/').next().unwrap_or(&p.path).to_lowercase();
        let primary = match self.order_by.as_str() {
            "name" | "path" | "similarity" => name(a).cmp(&name(b)),
            "updated_at" | "last_activity_at" => last_activity_at(a).cmp(&last_activity_at(b)),
            // `created_at` is ordered by id, as GitLab does; no project has stars.
            _ => Ordering::Equal,
        };
        let by_id = if self.descending {
            b.id.cmp(&a.id)
        } else {
            a.id.cmp(&b.id)
        };
        // Without a `search` to score, `similarity` is `name` ascending whatever the `sort`
        // (which still orders the ids of equal names).
        if self.order_by == "similarity" || !self.descending {
            primary.then(by_id)
        } else {
            primary.reverse().then(by_id)
        }
    }
}

/// `GET /groups/:id/projects` (by id or URL-encoded full path).
pub(super) fn projects(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let query = Query::parse(call.params)?;
    let group_id = find_group(call)?;
    let groups = if query.include_subgroups {
        call.world.group_and_descendants(group_id)
    } else {
        vec![group_id]
    };
    let mut listed: Vec<&Project> = call
        .world
        .projects
        .values()
        .filter(|p| p.group_id.is_some_and(|g| groups.contains(&g)) && query.keeps(p))
        .collect();
    listed.sort_by(|a, b| query.compare(a, b));
    let total = listed.len();
    let page = &listed[query.offset.range(total)];
    let base = &call.shared.links_base;
    let body = if query.simple {
        let entities: Vec<_> = page
            .iter()
            .map(|p| projects::simple(call.world, p, base))
            .collect();
        json(StatusCode::OK, &entities)
    } else {
        let entities: Vec<_> = page
            .iter()
            .map(|p| projects::full(call.world, p, base))
            .collect();
        json(StatusCode::OK, &entities)
    };
    Ok(with_headers(
        body,
        query
            .offset
            .headers(total, total <= COUNT_LIMIT, &call.link),
    ))
}

/// `find_group!`: the group of `:id` by id or full path, 404 `Group Not Found` when unknown or
/// not visible (only the personal access token sees the private simulated groups).
fn find_group(call: &Call<'_>) -> Result<u64, ApiError> {
    let reference = call.route.group.as_deref().unwrap_or("");
    let group_id = call
        .world
        .resolve_group(reference)
        .ok_or_else(|| ApiError::not_found(Some("Group")))?;
    match call.principal {
        Principal::Token => Ok(group_id),
        Principal::Job { .. } | Principal::Anonymous => Err(ApiError::not_found(Some("Group"))),
    }
}

/// `Entities::Group` (the subset the simulator can fill truthfully), with
/// `Entities::GroupDetail`'s projects when asked.
#[derive(Serialize)]
struct GroupEntity<'a> {
    id: u64,
    web_url: String,
    name: &'a str,
    path: &'a str,
    description: &'static str,
    visibility: &'static str,
    lfs_enabled: bool,
    avatar_url: Option<&'static str>,
    request_access_enabled: bool,
    full_name: String,
    full_path: &'a str,
    created_at: String,
    parent_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_with_groups: Option<[u8; 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    projects: Option<Vec<projects::ProjectEntity<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_projects: Option<[u8; 0]>,
}

/// GitLab's `GroupDetail` shows at most this many projects.
const DETAIL_PROJECTS: usize = 100;

fn group_entity<'a>(
    world: &'a World,
    group: &'a Group,
    base: &str,
    with_projects: bool,
) -> GroupEntity<'a> {
    let own_projects = with_projects.then(|| {
        world
            .projects
            .values()
            .rev()
            .filter(|p| p.group_id == Some(group.id))
            .take(DETAIL_PROJECTS)
            .map(|p| projects::full(world, p, base))
            .collect()
    });
    GroupEntity {
        id: group.id,
        web_url: format!("{base}groups/{}", group.full_path),
        name: &group.name,
        path: &group.path,
        description: "",
        visibility: "private",
        lfs_enabled: true,
        avatar_url: None,
        request_access_enabled: true,
        full_name: projects::group_full_name(world, group.id),
        full_path: &group.full_path,
        created_at: iso8601(group.created_at),
        parent_id: group.parent_id,
        shared_with_groups: with_projects.then_some([]),
        projects: own_projects,
        shared_projects: with_projects.then_some([]),
    }
}

/// `GET /groups/:id` (by id or URL-encoded full path): the group, with up to 100 of its own
/// projects (newest first) unless `with_projects=false`.
pub(super) fn get(call: &mut Call<'_>) -> Result<Response, ApiError> {
    let with_projects = call.params.boolean("with_projects")?.unwrap_or(true);
    call.params.boolean("with_custom_attributes")?;
    let group_id = find_group(call)?;
    let group = call
        .world
        .groups
        .get(&group_id)
        .ok_or_else(|| ApiError::not_found(Some("Group")))?;
    let entity = group_entity(call.world, group, &call.shared.links_base, with_projects);
    Ok(json(StatusCode::OK, &entity))
}
