//! The Groups API call jobwarden needs to watch a whole fleet: `GET /groups/:id/projects`, the
//! projects of a group and (with `include_subgroups`) of every group below it. See
//! `docs/gitlab-groups-api.md` for what GitLab documents about it.

use crate::gitlab::client::GitLabClient;
use crate::gitlab::endpoints::{Endpoint, PathParams, Query};
use crate::gitlab::error::GitLabError;
use crate::gitlab::models::GroupRef;
use crate::gitlab::pagination::{PER_PAGE, PaginationMode, paginate};
use crate::gitlab::projects::Project;
use futures::{Stream, StreamExt};
use std::collections::HashSet;

/// What a group's projects are ordered by (`order_by`; GitLab's default is `created_at`,
/// which GitLab orders by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectOrder {
    Id,
    Name,
    Path,
    CreatedAt,
    UpdatedAt,
    LastActivityAt,
}

impl ProjectOrder {
    /// The value of `order_by`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectOrder::Id => "id",
            ProjectOrder::Name => "name",
            ProjectOrder::Path => "path",
            ProjectOrder::CreatedAt => "created_at",
            ProjectOrder::UpdatedAt => "updated_at",
            ProjectOrder::LastActivityAt => "last_activity_at",
        }
    }
}

/// The direction of an ordering (`sort`; GitLab's default is `desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortDirection {
    Asc,
    Desc,
}

impl SortDirection {
    /// The value of `sort`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SortDirection::Asc => "asc",
            SortDirection::Desc => "desc",
        }
    }
}

/// What `GET /groups/:id/projects` should return. The default is GitLab's: the group's own
/// projects (no subgroups), archived or not, shared ones included, full entities, newest
/// first; the client always asks for 100 a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupProjectsQuery {
    /// `include_subgroups`: the projects of every group below this one too.
    pub include_subgroups: bool,
    /// `archived`: only archived projects (`Some(true)`), only active ones (`Some(false)`),
    /// or both (`None`).
    pub archived: Option<bool>,
    /// `with_shared`: projects of other groups shared with this one (GitLab's default: yes).
    /// They are told apart by their `namespace`.
    pub with_shared: Option<bool>,
    /// `simple=true`: GitLab's short entity, cheaper to produce. It does not say whether a
    /// project is archived, so a simple listing needs an `archived` filter (the listed
    /// projects then carry the filtered value); without one the listing fails with
    /// [`GitLabError::InvalidArgument`].
    pub simple: bool,
    /// `order_by` (`None`: GitLab's default, `created_at`).
    pub order_by: Option<ProjectOrder>,
    /// `sort` (`None`: GitLab's default, `desc`).
    pub sort: Option<SortDirection>,
    /// Items a page (1–100); `None` is 100.
    pub per_page: Option<u32>,
}

impl GroupProjectsQuery {
    /// GitLab's defaults (see the type).
    pub fn new() -> GroupProjectsQuery {
        GroupProjectsQuery::default()
    }

    /// The active (not archived) projects of the group and of all its subgroups, ordered by
    /// id, ascending: what jobwarden watches when a policy names a group.
    pub fn active_tree() -> GroupProjectsQuery {
        GroupProjectsQuery::new()
            .include_subgroups(true)
            .archived(false)
            .ordered(ProjectOrder::Id, SortDirection::Asc)
    }

    /// With or without the projects of the subgroups.
    pub fn include_subgroups(mut self, include: bool) -> GroupProjectsQuery {
        self.include_subgroups = include;
        self
    }

    /// Only archived (`true`) or only active (`false`) projects.
    pub fn archived(mut self, archived: bool) -> GroupProjectsQuery {
        self.archived = Some(archived);
        self
    }

    /// With or without the projects shared with the group.
    pub fn with_shared(mut self, with_shared: bool) -> GroupProjectsQuery {
        self.with_shared = Some(with_shared);
        self
    }

    /// GitLab's short entity (needs an `archived` filter, see [`GroupProjectsQuery::simple`]).
    pub fn simple(mut self) -> GroupProjectsQuery {
        self.simple = true;
        self
    }

    /// Ordered by `order_by`, in `sort` direction.
    pub fn ordered(mut self, order_by: ProjectOrder, sort: SortDirection) -> GroupProjectsQuery {
        self.order_by = Some(order_by);
        self.sort = Some(sort);
        self
    }

    /// `per_page` items a page (clamped to 1–100).
    pub fn per_page(mut self, per_page: u32) -> GroupProjectsQuery {
        self.per_page = Some(per_page.clamp(1, PER_PAGE));
        self
    }

    fn to_query(&self) -> Query {
        let mut q = Query::new();
        if self.include_subgroups {
            q.push("include_subgroups", "true");
        }
        if let Some(archived) = self.archived {
            q.push("archived", archived.to_string());
        }
        if let Some(with_shared) = self.with_shared {
            q.push("with_shared", with_shared.to_string());
        }
        if self.simple {
            q.push("simple", "true");
        }
        if let Some(order_by) = self.order_by {
            q.push("order_by", order_by.as_str());
        }
        if let Some(sort) = self.sort {
            q.push("sort", sort.as_str());
        }
        PaginationMode::Offset.apply(&mut q, self.per_page.unwrap_or(PER_PAGE));
        q
    }
}

impl GitLabClient {
    /// `GET /groups/:id/projects`: the projects of a group (by id or full path), lazily, page
    /// after page (offset pagination: GitLab has no keyset pagination here). An unknown group,
    /// or one the token cannot see, is 404 `Group Not Found`.
    ///
    /// A project is yielded once even when the list shifts between two pages (a project
    /// created meanwhile pushes the others one place down) and shows up twice; one that moves
    /// up past the page boundary can still be missed, as with any offset listing.
    pub fn list_group_projects(
        &self,
        group: &GroupRef,
        query: &GroupProjectsQuery,
    ) -> impl Stream<Item = Result<Project, GitLabError>> + Send + 'static {
        let endpoint = Endpoint::LIST_GROUP_PROJECTS;
        let refused = (query.simple && query.archived.is_none()).then(|| {
            GitLabError::InvalidArgument(
                "a simple listing of a group's projects does not say which are archived: \
                 filter by `archived` or list full entities"
                    .to_owned(),
            )
        });
        let first = match refused {
            Some(err) => Err(err),
            None => self.endpoint_url(endpoint, &PathParams::group(group), &query.to_query()),
        };
        let known_archived = query.simple.then_some(query.archived).flatten();
        let mut seen = HashSet::new();
        paginate::<Project>(self.clone(), endpoint, first, PaginationMode::Offset).filter_map(
            move |item| {
                let item = match item {
                    Ok(mut project) => {
                        if let Some(archived) = known_archived {
                            project.archived = archived;
                        }
                        seen.insert(project.id).then_some(Ok(project))
                    }
                    Err(err) => Some(Err(err)),
                };
                futures::future::ready(item)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_send_only_what_differs_from_gitlabs_defaults() {
        assert_eq!(
            GroupProjectsQuery::new().to_query().to_query_string(),
            "per_page=100"
        );
        assert_eq!(
            GroupProjectsQuery::active_tree()
                .per_page(500)
                .to_query()
                .to_query_string(),
            "include_subgroups=true&archived=false&order_by=id&sort=asc&per_page=100"
        );
        assert_eq!(
            GroupProjectsQuery::new()
                .archived(true)
                .with_shared(false)
                .simple()
                .ordered(ProjectOrder::LastActivityAt, SortDirection::Desc)
                .per_page(0)
                .to_query()
                .to_query_string(),
            "archived=true&with_shared=false&simple=true&order_by=last_activity_at&sort=desc&per_page=1"
        );
    }

    #[test]
    fn group_paths_are_one_encoded_segment() {
        let path = |group: &GroupRef| {
            Endpoint::LIST_GROUP_PROJECTS
                .path(&PathParams::group(group))
                .unwrap()
        };
        assert_eq!(
            path(&GroupRef::parse("fleet/platform")),
            "/groups/fleet%2Fplatform/projects"
        );
        assert_eq!(path(&GroupRef::Id(7)), "/groups/7/projects");
    }
}
