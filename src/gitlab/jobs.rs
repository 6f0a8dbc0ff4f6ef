//! Every Jobs API endpoint of the seed documents, typed.
//!
//! Listings are lazy streams (see [`pagination`](crate::gitlab::pagination)); logs and artifacts
//! stream into an `AsyncWrite`; state-changing calls are sent once (see
//! [`client`](crate::gitlab::client) for the retry policy).

use crate::gitlab::client::{GitLabClient, decode_json};
use crate::gitlab::download::Download;
use crate::gitlab::endpoints::{Endpoint, PathParams, Query};
use crate::gitlab::error::GitLabError;
use crate::gitlab::models::{AllowedAgents, Job, JobStatus, JobVariable, ProjectRef};
use crate::gitlab::pagination::{PER_PAGE, PaginationMode, paginate};
use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWrite;

/// What `GET /projects/:id/jobs` should return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListJobsQuery {
    /// Only jobs in these statuses (`scope[]`); empty means every status.
    pub scopes: Vec<JobStatus>,
    /// How to page through the list.
    pub pagination: PaginationMode,
    /// Items a page (1–100); `None` is 100, GitLab's maximum. A smaller page costs GitLab and
    /// the client less when only the newest few jobs are wanted.
    pub per_page: Option<u32>,
}

/// What `GET /projects/:id/pipelines/:pipeline_id/jobs` should return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineJobsQuery {
    /// Only jobs in these statuses (`scope[]`); empty means every status.
    pub scopes: Vec<JobStatus>,
    /// Earlier attempts of retried jobs too (`include_retried=true`), not only the latest.
    pub include_retried: bool,
}

impl PipelineJobsQuery {
    /// The latest attempt of every job.
    pub fn latest() -> PipelineJobsQuery {
        PipelineJobsQuery::default()
    }

    /// Every attempt of every job: what counting a job's attempts needs.
    pub fn every_attempt() -> PipelineJobsQuery {
        PipelineJobsQuery {
            scopes: Vec::new(),
            include_retried: true,
        }
    }

    /// Only jobs in `scopes`.
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = JobStatus>) -> PipelineJobsQuery {
        self.scopes = scopes.into_iter().collect();
        self
    }
}

impl ListJobsQuery {
    /// Every job, offset pagination.
    pub fn all() -> ListJobsQuery {
        ListJobsQuery::default()
    }

    /// Only jobs in `scopes`, offset pagination.
    pub fn with_scopes(scopes: impl IntoIterator<Item = JobStatus>) -> ListJobsQuery {
        ListJobsQuery {
            scopes: scopes.into_iter().collect(),
            pagination: PaginationMode::Offset,
            per_page: None,
        }
    }

    /// The same query with `per_page` items a page (clamped to 1–100).
    pub fn per_page(mut self, per_page: u32) -> ListJobsQuery {
        self.per_page = Some(per_page.clamp(1, PER_PAGE));
        self
    }

    /// The same query with another pagination mode.
    pub fn paginated(mut self, pagination: PaginationMode) -> ListJobsQuery {
        self.pagination = pagination;
        self
    }
}

/// The body of `POST …/play`.
#[derive(Serialize)]
struct PlayBody<'a> {
    job_variables_attributes: &'a [JobVariable],
}

fn push_scopes(query: &mut Query, scopes: &[JobStatus]) {
    for scope in scopes {
        query.push("scope[]", scope.as_str());
    }
}

impl GitLabClient {
    /// `GET /projects/:id/jobs`: the project's jobs, newest first, retried attempts included.
    /// The stream is lazy: the next page is fetched only when the consumer polls past the current
    /// one. `per_page=100` unless the query says less; scopes are sent as `scope[]=…`.
    pub fn list_project_jobs(
        &self,
        project: &ProjectRef,
        query: &ListJobsQuery,
    ) -> impl Stream<Item = Result<Job, GitLabError>> + Send + 'static {
        self.list_project_jobs_as(project, query)
    }

    /// [`list_project_jobs`](Self::list_project_jobs), items decoded as `T` (e.g. a
    /// [`JobWire`](crate::gitlab::records::JobWire), which skips what it does not keep).
    pub fn list_project_jobs_as<T: DeserializeOwned + Send + 'static>(
        &self,
        project: &ProjectRef,
        query: &ListJobsQuery,
    ) -> impl Stream<Item = Result<T, GitLabError>> + Send + 'static {
        let mut q = Query::new();
        push_scopes(&mut q, &query.scopes);
        query
            .pagination
            .apply(&mut q, query.per_page.unwrap_or(PER_PAGE));
        let endpoint = Endpoint::LIST_PROJECT_JOBS;
        let url = self.endpoint_url(endpoint, &PathParams::project(project), &q);
        paginate(self.clone(), endpoint, url, query.pagination)
    }

    /// `GET /projects/:id/pipelines/:pipeline_id/jobs`: a pipeline's jobs (bridges excluded),
    /// newest first; with `include_retried`, earlier attempts of retried jobs too.
    pub fn list_pipeline_jobs(
        &self,
        project: &ProjectRef,
        pipeline_id: u64,
        query: &PipelineJobsQuery,
    ) -> impl Stream<Item = Result<Job, GitLabError>> + Send + 'static {
        self.list_pipeline_jobs_as(project, pipeline_id, query)
    }

    /// [`list_pipeline_jobs`](Self::list_pipeline_jobs), items decoded as `T`.
    pub fn list_pipeline_jobs_as<T: DeserializeOwned + Send + 'static>(
        &self,
        project: &ProjectRef,
        pipeline_id: u64,
        query: &PipelineJobsQuery,
    ) -> impl Stream<Item = Result<T, GitLabError>> + Send + 'static {
        let mut q = Query::new();
        push_scopes(&mut q, &query.scopes);
        if query.include_retried {
            q.push("include_retried", "true");
        }
        PaginationMode::Offset.apply(&mut q, PER_PAGE);
        let endpoint = Endpoint::LIST_PIPELINE_JOBS;
        let params = PathParams::project(project).pipeline(pipeline_id);
        let url = self.endpoint_url(endpoint, &params, &q);
        paginate(self.clone(), endpoint, url, PaginationMode::Offset)
    }

    /// `GET /projects/:id/pipelines/:pipeline_id/bridges`: a pipeline's trigger jobs, decoded as
    /// [`Job`] (with `downstream_pipeline` set).
    pub fn list_pipeline_bridges(
        &self,
        project: &ProjectRef,
        pipeline_id: u64,
        scopes: &[JobStatus],
    ) -> impl Stream<Item = Result<Job, GitLabError>> + Send + 'static {
        let mut q = Query::new();
        push_scopes(&mut q, scopes);
        PaginationMode::Offset.apply(&mut q, PER_PAGE);
        let endpoint = Endpoint::LIST_PIPELINE_BRIDGES;
        let params = PathParams::project(project).pipeline(pipeline_id);
        let url = self.endpoint_url(endpoint, &params, &q);
        paginate(self.clone(), endpoint, url, PaginationMode::Offset)
    }

    /// `GET /projects/:id/jobs/:job_id`.
    pub async fn get_job(&self, project: &ProjectRef, job_id: u64) -> Result<Job, GitLabError> {
        self.get_job_as(project, job_id).await
    }

    /// [`get_job`](Self::get_job), decoded as `T` (e.g. a
    /// [`JobWire`](crate::gitlab::records::JobWire), which skips what it does not keep).
    pub async fn get_job_as<T: DeserializeOwned>(
        &self,
        project: &ProjectRef,
        job_id: u64,
    ) -> Result<T, GitLabError> {
        let endpoint = Endpoint::GET_JOB;
        let url = self.endpoint_url(
            endpoint,
            &PathParams::project(project).job(job_id),
            &Query::new(),
        )?;
        self.get_json(endpoint, &url).await
    }

    /// `GET /projects/:id/jobs/:job_id/trace`, keeping only the last `max_bytes` bytes (as text;
    /// invalid UTF-8 is replaced). The log is streamed, never held whole.
    pub async fn job_log_tail(
        &self,
        project: &ProjectRef,
        job_id: u64,
        max_bytes: usize,
    ) -> Result<String, GitLabError> {
        self.download_tail(Download::JobLog { project, job_id }, max_bytes)
            .await
    }

    /// `GET /projects/:id/jobs/:job_id/trace`, streamed into `writer`. Returns the bytes written.
    pub async fn download_job_log<W>(
        &self,
        project: &ProjectRef,
        job_id: u64,
        writer: &mut W,
    ) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        self.download(Download::JobLog { project, job_id }, writer)
            .await
    }

    /// `POST /projects/:id/jobs/:job_id/cancel`; `force` (newer GitLab, maintainers) moves a job
    /// stuck in `canceling` to `canceled`. Canceling a finished job is a no-op that returns it.
    pub async fn cancel_job(
        &self,
        project: &ProjectRef,
        job_id: u64,
        force: bool,
    ) -> Result<Job, GitLabError> {
        let mut q = Query::new();
        if force {
            q.push("force", "true");
        }
        self.post_for_job(Endpoint::CANCEL_JOB, project, job_id, &q, None)
            .await
    }

    /// `POST /projects/:id/jobs/:job_id/retry`. Returns the NEW job (a new id); the old one keeps
    /// its status.
    pub async fn retry_job(&self, project: &ProjectRef, job_id: u64) -> Result<Job, GitLabError> {
        self.post_for_job(Endpoint::RETRY_JOB, project, job_id, &Query::new(), None)
            .await
    }

    /// `POST /projects/:id/jobs/:job_id/erase`: removes the job's artifacts and log.
    pub async fn erase_job(&self, project: &ProjectRef, job_id: u64) -> Result<Job, GitLabError> {
        self.post_for_job(Endpoint::ERASE_JOB, project, job_id, &Query::new(), None)
            .await
    }

    /// `POST /projects/:id/jobs/:job_id/play`: starts a manual job, with `variables` as
    /// `job_variables_attributes` (none are sent when the slice is empty).
    pub async fn play_job(
        &self,
        project: &ProjectRef,
        job_id: u64,
        variables: &[JobVariable],
    ) -> Result<Job, GitLabError> {
        let body = if variables.is_empty() {
            None
        } else {
            let json = serde_json::to_vec(&PlayBody {
                job_variables_attributes: variables,
            })
            .map_err(|e| GitLabError::InvalidArgument(format!("job variables: {e}")))?;
            Some(Bytes::from(json))
        };
        self.post_for_job(Endpoint::PLAY_JOB, project, job_id, &Query::new(), body)
            .await
    }

    /// `POST /projects/:id/jobs/:job_id/artifacts/keep`: keeps the artifacts from expiring.
    pub async fn keep_artifacts(
        &self,
        project: &ProjectRef,
        job_id: u64,
    ) -> Result<Job, GitLabError> {
        self.post_for_job(
            Endpoint::KEEP_ARTIFACTS,
            project,
            job_id,
            &Query::new(),
            None,
        )
        .await
    }

    /// `DELETE /projects/:id/jobs/:job_id/artifacts` (GitLab answers 204).
    pub async fn delete_artifacts(
        &self,
        project: &ProjectRef,
        job_id: u64,
    ) -> Result<(), GitLabError> {
        let endpoint = Endpoint::DELETE_ARTIFACTS;
        let params = PathParams::project(project).job(job_id);
        let url = self.endpoint_url(endpoint, &params, &Query::new())?;
        self.send_action(endpoint, &url, None).await.map(|_| ())
    }

    /// `GET /projects/:id/jobs/:job_id/artifacts`: the artifacts archive, streamed into
    /// `writer`. Returns the bytes written.
    pub async fn download_artifacts<W>(
        &self,
        project: &ProjectRef,
        job_id: u64,
        writer: &mut W,
    ) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        self.download(Download::Artifacts { project, job_id }, writer)
            .await
    }

    /// `GET /projects/:id/jobs/artifacts/:ref_name/download?job=…`: the archive of the latest
    /// successful `job_name` job on `ref_name` (a branch or tag; encoded, `/` included).
    pub async fn download_artifacts_by_ref<W>(
        &self,
        project: &ProjectRef,
        ref_name: &str,
        job_name: &str,
        writer: &mut W,
    ) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let latest = Download::ArtifactsByRef {
            project,
            ref_name,
            job_name,
        };
        self.download(latest, writer).await
    }

    /// `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`: one file of the archive
    /// (`artifact_path` like `some/release/file.pdf`; `.`/`..` segments are refused).
    pub async fn download_artifact_file<W>(
        &self,
        project: &ProjectRef,
        job_id: u64,
        artifact_path: &str,
        writer: &mut W,
    ) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let file = Download::ArtifactFile {
            project,
            job_id,
            artifact_path,
        };
        self.download(file, writer).await
    }

    /// `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=…`: one file of the
    /// archive of the latest successful `job_name` job on `ref_name`.
    pub async fn download_artifact_file_by_ref<W>(
        &self,
        project: &ProjectRef,
        ref_name: &str,
        job_name: &str,
        artifact_path: &str,
        writer: &mut W,
    ) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let file = Download::ArtifactFileByRef {
            project,
            ref_name,
            job_name,
            artifact_path,
        };
        self.download(file, writer).await
    }

    /// `GET /job`: the job whose CI job token the client uses (`Credential::JobToken`).
    pub async fn current_job(&self) -> Result<Job, GitLabError> {
        let endpoint = Endpoint::CURRENT_JOB;
        let url = self.endpoint_url(endpoint, &PathParams::none(), &Query::new())?;
        self.get_json(endpoint, &url).await
    }

    /// `GET /job/allowed_agents`: the job token's job and the agents it may use.
    pub async fn allowed_agents(&self) -> Result<AllowedAgents, GitLabError> {
        let endpoint = Endpoint::ALLOWED_AGENTS;
        let url = self.endpoint_url(endpoint, &PathParams::none(), &Query::new())?;
        self.get_json(endpoint, &url).await
    }

    /// Sends a state-changing POST to one job's `endpoint` once and decodes the job it returns.
    async fn post_for_job(
        &self,
        endpoint: Endpoint,
        project: &ProjectRef,
        job_id: u64,
        query: &Query,
        body: Option<Bytes>,
    ) -> Result<Job, GitLabError> {
        let params = PathParams::project(project).job(job_id);
        let url = self.endpoint_url(endpoint, &params, query)?;
        let (body, headers) = self.send_action(endpoint, &url, body).await?;
        decode_json(endpoint, &headers, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_builders() {
        let q = ListJobsQuery::with_scopes([JobStatus::Failed, JobStatus::Manual])
            .paginated(PaginationMode::Keyset);
        assert_eq!(q.scopes, [JobStatus::Failed, JobStatus::Manual]);
        assert_eq!(q.pagination, PaginationMode::Keyset);
        assert_eq!(ListJobsQuery::all(), ListJobsQuery::default());
        assert!(ListJobsQuery::all().scopes.is_empty());
    }

    #[test]
    fn play_body_shape() {
        let vars = [JobVariable {
            key: "DEPLOY".into(),
            value: "yes".into(),
        }];
        let json = serde_json::to_string(&PlayBody {
            job_variables_attributes: &vars,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"job_variables_attributes":[{"key":"DEPLOY","value":"yes"}]}"#
        );
    }
}
