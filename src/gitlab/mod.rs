//! The GitLab Jobs API client.
//!
//! [`GitLabClient`] covers every endpoint of the Jobs API seed documents, `GET /projects/:id`
//! and `GET /groups/:id/projects` (the projects of a group tree). Build one per GitLab
//! instance (or share one [`RateLimiter`] among several) from a [`ClientConfig`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), jobwarden::gitlab::GitLabError> {
//! use futures::TryStreamExt;
//! use jobwarden::gitlab::{ClientConfig, Credential, GitLabClient, JobStatus, ListJobsQuery, ProjectRef};
//!
//! let config = ClientConfig::new(
//!     "https://gitlab.example.com".parse().expect("a URL"),
//!     Some(Credential::PrivateToken("glpat-…".into())),
//! );
//! let client = GitLabClient::new(config)?;
//! let project = ProjectRef::parse("group/project");
//! let failed: Vec<_> = client
//!     .list_project_jobs(&project, &ListJobsQuery::with_scopes([JobStatus::Failed]))
//!     .try_collect()
//!     .await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod backoff;
pub mod ca;
pub mod client;
pub mod destinations;
mod download;
pub mod endpoints;
pub mod error;
pub mod groups;
pub mod jobs;
pub mod models;
pub mod pagination;
pub mod projects;
pub mod ratelimit;
pub mod records;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod tokens;

pub use auth::Credential;
pub use backoff::Backoff;
pub use ca::{CaBundle, CaBundleError, CaDigest};
pub use client::{ClientConfig, GitLabClient, instance_key, instance_name};
pub use destinations::{DestinationRefused, TokenDestinations};
pub use download::Download;
pub use endpoints::{Endpoint, Method};
pub use error::{GitLabError, TransportFailure};
pub use groups::{GroupProjectsQuery, ProjectOrder, SortDirection};
pub use jobs::{ListJobsQuery, PipelineJobsQuery};
pub use models::{
    AllowedAgent, AllowedAgents, GroupRef, Job, JobStatus, JobVariable, PipelineBasic, ProjectRef,
};
pub use pagination::{PER_PAGE, PaginationMode};
pub use projects::{Project, ProjectNamespace};
pub use ratelimit::{LimitScope, RateLimiter, RateLimiterSettings};
pub use telemetry::{NoopObserver, RequestObserver};
