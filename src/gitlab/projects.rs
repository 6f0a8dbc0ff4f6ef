//! The one Projects API call jobwarden needs: `GET /projects/:id`, to learn a project's numeric
//! id (its identity: a full path can be renamed, and the same project can be spelled by id or
//! by path) and whether it is archived. [`Project`] is also what
//! [`list_group_projects`](GitLabClient::list_group_projects) yields.

use crate::gitlab::client::GitLabClient;
use crate::gitlab::endpoints::{Endpoint, PathParams, Query};
use crate::gitlab::error::GitLabError;
use crate::gitlab::models::ProjectRef;
use serde::Deserialize;

/// What jobwarden reads of `Entities::Project` (or of `Entities::BasicProjectDetails`, the
/// `simple=true` entity of listings); every other field is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Project {
    pub id: u64,
    /// The full path, e.g. `group/sub/project`.
    pub path_with_namespace: String,
    /// Absent from the simple entity (then `false`; see
    /// [`GroupProjectsQuery::simple`](crate::gitlab::GroupProjectsQuery::simple)).
    #[serde(default)]
    pub archived: bool,
    /// The group (or user) the project belongs to. In a group's listing, a project shared
    /// with the group has another namespace than the group's.
    #[serde(default)]
    pub namespace: Option<ProjectNamespace>,
}

/// `Entities::NamespaceBasic`, as far as jobwarden reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProjectNamespace {
    pub id: u64,
    /// `group/sub`, or a user's username.
    pub full_path: String,
    /// `group` or `user`.
    #[serde(default)]
    pub kind: String,
}

impl GitLabClient {
    /// `GET /projects/:id`, by id or full path (404 `Project Not Found` when the token cannot
    /// see it).
    pub async fn get_project(&self, project: &ProjectRef) -> Result<Project, GitLabError> {
        let endpoint = Endpoint::GET_PROJECT;
        let url = self.endpoint_url(endpoint, &PathParams::project(project), &Query::new())?;
        self.get_json(endpoint, &url).await
    }
}
