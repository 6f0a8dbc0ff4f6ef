//! The real GitLab client against the real GitLab simulator, over loopback HTTP: every endpoint
//! of the client, both pagination schemes, every error shape the simulator produces as the
//! client reports it, the client's rate limiter against the simulator's `jobs_index` limit, and
//! the retry rules under injected faults.
//!
//! Each test starts its own simulator on 127.0.0.1:0 with a manual clock (unless it needs time
//! to pass) and no fleet, builds the scenario it needs through `SimControl`, and checks what the
//! client returns against what the simulator holds and what its request log saw.

use futures::{StreamExt, TryStreamExt};
use jobwarden::gitlab::{
    Backoff, ClientConfig, Credential, GitLabClient, GitLabError, Job, JobStatus, JobVariable,
    LimitScope, ListJobsQuery, PaginationMode, PipelineJobsQuery, ProjectRef, RateLimiter,
    RateLimiterSettings, TransportFailure,
};
use jobwarden::sim::{
    Clock, FaultConfig, FleetConfig, JobSpec, LoggedRequest, PipelineSpec, SimConfig, SimControl,
    SimHandle, SimJob, Simulator,
};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "glpat-client-sim-token";

fn t0() -> jiff::Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("a timestamp")
}

/// A simulator without a fleet, on a manual clock at [`t0`].
fn sim_config() -> SimConfig {
    SimConfig {
        projects: 0,
        clock: Clock::manual(t0()),
        fleet: FleetConfig::frozen(),
        ..SimConfig::new(TOKEN)
    }
}

/// A running simulator and the scenario helpers the tests share.
struct Lab {
    sim: SimHandle,
    control: SimControl,
}

impl Lab {
    async fn start(config: SimConfig) -> Lab {
        let sim = Simulator::start(config, "127.0.0.1:0".parse().expect("loopback"))
            .await
            .expect("the simulator starts");
        let control = sim.control();
        Lab { sim, control }
    }

    /// A client with the personal access token, short retry backoffs and a generous timeout.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.sim.base_url(),
            Some(Credential::PrivateToken(TOKEN.into())),
        );
        config.retry_backoff = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        config.timeout = Duration::from_secs(10);
        config
    }

    fn client(&self) -> GitLabClient {
        GitLabClient::new(self.config()).expect("a valid client configuration")
    }

    fn client_with(&self, change: impl FnOnce(&mut ClientConfig)) -> GitLabClient {
        let mut config = self.config();
        change(&mut config);
        GitLabClient::new(config).expect("a valid client configuration")
    }

    /// A new project at `path`: its id, and the client's reference to it by path.
    fn project(&self, path: &str) -> (u64, ProjectRef) {
        let id = self.control.add_project(path).expect("a free project path");
        (id, ProjectRef::Path(path.to_owned()))
    }

    /// A new pipeline; returns its id and its jobs' ids in the given order.
    fn pipeline(&self, project_id: u64, git_ref: &str, jobs: Vec<JobSpec>) -> (u64, Vec<u64>) {
        let pipeline = self
            .control
            .try_add_pipeline(project_id, PipelineSpec::new(git_ref, jobs))
            .expect("a valid pipeline");
        (pipeline.id, pipeline.job_ids)
    }

    fn job(&self, project_id: u64, job_id: u64) -> SimJob {
        self.control
            .job(project_id, job_id)
            .expect("the simulator holds the job")
    }

    /// The logged requests of one endpoint, e.g. `"GET /projects/:id/jobs"`.
    fn requests(&self, method_and_endpoint: &str) -> Vec<LoggedRequest> {
        self.control
            .request_log()
            .into_iter()
            .filter(|r| format!("{} {}", r.method, r.endpoint) == method_and_endpoint)
            .collect()
    }

    async fn stop(self) {
        self.sim.shutdown().await;
    }
}

/// Asserts that `error` is GitLab's answer with `status`, carrying `message`.
fn assert_api_error(error: &GitLabError, status: u16, message: &str) {
    assert_eq!(error.kind(), "api_error", "{error}");
    assert_eq!(error.status(), Some(status), "{error}");
    assert!(
        error.to_string().contains(message),
        "`{error}` does not carry `{message}`"
    );
}

fn ids(jobs: &[Job]) -> Vec<u64> {
    jobs.iter().map(|j| j.id).collect()
}

async fn list(
    client: &GitLabClient,
    project: &ProjectRef,
    query: &ListJobsQuery,
) -> Result<Vec<Job>, GitLabError> {
    client.list_project_jobs(project, query).try_collect().await
}

// --- Listings -------------------------------------------------------------------------------

/// Statuses for a large project: every listable kind, plus jobs that are not on the list.
fn mixed_jobs(prefix: &str, count: usize) -> Vec<JobSpec> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            match i % 6 {
                0 => JobSpec::new(name, "test", "success"),
                1 => JobSpec::new(name, "test", "failed").failed_with("script_failure"),
                2 => JobSpec::new(name, "deploy", "manual").manual(),
                3 => JobSpec::new(name, "test", "running"),
                4 => JobSpec::new(name, "test", "pending"),
                _ => JobSpec::new(name, "test", "canceled"),
            }
        })
        .collect()
}

#[tokio::test]
async fn both_pagination_schemes_list_every_job_the_simulator_holds() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/sub/project");
    lab.pipeline(project_id, "main", mixed_jobs("a", 150));
    let mut second = mixed_jobs("b", 100);
    second.push(JobSpec::new("trigger-docs", "deploy", "success").bridge());
    second.push(JobSpec::new("trigger-qa", "deploy", "running").bridge());
    let (_, second_ids) = lab.pipeline(project_id, "feature/login", second);
    lab.pipeline(project_id, "v1.2.3", mixed_jobs("c", 12));
    let client = lab.client();
    // A retried attempt stays on the project's list next to its retry.
    let retried = second_ids[1];
    let retry = client
        .retry_job(&project, retried)
        .await
        .expect("a failed job is retryable");

    let held = lab.control.jobs(project_id);
    let builds_newest_first = |keep: &dyn Fn(&SimJob) -> bool| -> Vec<u64> {
        held.iter()
            .rev()
            .filter(|j| !j.bridge && keep(j))
            .map(|j| j.id)
            .collect()
    };
    let every_build = builds_newest_first(&|_| true);
    assert_eq!(every_build.len(), 263, "262 builds and one retry");
    assert!(every_build.contains(&retried) && every_build.contains(&retry.id));

    lab.control.reset_log();
    let by_offset = list(&client, &project, &ListJobsQuery::all())
        .await
        .expect("offset listing");
    let offset_requests = lab.requests("GET /projects/:id/jobs");
    lab.control.reset_log();
    let by_keyset = list(
        &client,
        &project,
        &ListJobsQuery::all().paginated(PaginationMode::Keyset),
    )
    .await
    .expect("keyset listing");
    let keyset_requests = lab.requests("GET /projects/:id/jobs");

    assert_eq!(ids(&by_offset), every_build);
    assert_eq!(ids(&by_keyset), every_build);
    // Three pages of at most 100 each way, all on the URL-encoded path.
    assert_eq!(offset_requests.len(), 3, "{offset_requests:?}");
    assert_eq!(keyset_requests.len(), 3, "{keyset_requests:?}");
    for request in offset_requests.iter().chain(&keyset_requests) {
        assert_eq!(request.path, "/api/v4/projects/group%2Fsub%2Fproject/jobs");
        assert_eq!(request.status, 200);
        assert!(request.query.contains("per_page=100"), "{}", request.query);
    }
    assert!(offset_requests[1].query.contains("page=2"));
    assert!(offset_requests[2].query.contains("page=3"));
    assert!(
        keyset_requests
            .iter()
            .all(|r| r.query.contains("pagination=keyset"))
    );
    assert!(
        keyset_requests[1..]
            .iter()
            .all(|r| r.query.contains("cursor="))
    );

    // Entities agree with the simulator's state, not just ids.
    for job in &by_keyset {
        let sim = held.iter().find(|j| j.id == job.id).expect("a held job");
        assert_eq!(job.status.as_str(), sim.status);
        assert_eq!(job.name, sim.name);
        assert_eq!(job.git_ref, sim.git_ref);
        assert_eq!(job.pipeline.id, sim.pipeline_id);
    }

    // Scopes, both ways, and the same project addressed by id.
    let scopes = [JobStatus::Success, JobStatus::Failed, JobStatus::Manual];
    let want = builds_newest_first(&|j| ["success", "failed", "manual"].contains(&&*j.status));
    assert!(want.len() > 100, "the scoped list spans pages");
    for pagination in [PaginationMode::Offset, PaginationMode::Keyset] {
        let query = ListJobsQuery::with_scopes(scopes).paginated(pagination);
        let scoped = list(&client, &project, &query)
            .await
            .expect("scoped listing");
        assert_eq!(ids(&scoped), want, "{pagination:?}");
        let by_id = list(&client, &ProjectRef::Id(project_id), &query)
            .await
            .expect("listing by id");
        assert_eq!(ids(&by_id), want, "{pagination:?} by id");
    }
    lab.stop().await;
}

#[tokio::test]
async fn pipeline_jobs_hide_retried_attempts_unless_asked_and_bridges_are_listed_apart() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (pipeline_id, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("build", "build", "success"),
            JobSpec::new("rspec", "test", "failed").failed_with("script_failure"),
            JobSpec::new("trigger-docs", "test", "success").bridge(),
            JobSpec::new("deploy", "deploy", "manual").manual(),
        ],
    );
    let [build, rspec, bridge, deploy] = jobs[..] else {
        panic!("four jobs: {jobs:?}");
    };
    let client = lab.client();
    let retry = client.retry_job(&project, rspec).await.expect("retry");

    let latest: Vec<Job> = client
        .list_pipeline_jobs(&project, pipeline_id, &PipelineJobsQuery::latest())
        .try_collect()
        .await
        .expect("pipeline jobs");
    assert_eq!(ids(&latest), [retry.id, deploy, build]);
    let with_retried: Vec<Job> = client
        .list_pipeline_jobs(&project, pipeline_id, &PipelineJobsQuery::every_attempt())
        .try_collect()
        .await
        .expect("pipeline jobs with retried attempts");
    assert_eq!(ids(&with_retried), [retry.id, deploy, rspec, build]);
    let manual: Vec<Job> = client
        .list_pipeline_jobs(
            &project,
            pipeline_id,
            &PipelineJobsQuery::latest().with_scopes([JobStatus::Manual]),
        )
        .try_collect()
        .await
        .expect("scoped pipeline jobs");
    assert_eq!(ids(&manual), [deploy]);

    let bridges: Vec<Job> = client
        .list_pipeline_bridges(&project, pipeline_id, &[])
        .try_collect()
        .await
        .expect("bridges");
    assert_eq!(ids(&bridges), [bridge]);
    assert_eq!(bridges[0].name, "trigger-docs");
    assert_eq!(bridges[0].status, JobStatus::Success);
    assert_eq!(bridges[0].pipeline.id, pipeline_id);
    let running_bridges: Vec<Job> = client
        .list_pipeline_bridges(&project, pipeline_id, &[JobStatus::Running])
        .try_collect()
        .await
        .expect("scoped bridges");
    assert!(running_bridges.is_empty());

    let query = |endpoint: &str| -> Vec<String> {
        lab.requests(endpoint)
            .into_iter()
            .map(|r| r.query)
            .collect()
    };
    let pipeline_queries = query("GET /projects/:id/pipelines/:pipeline_id/jobs");
    assert!(!pipeline_queries[0].contains("include_retried"));
    assert!(pipeline_queries[1].contains("include_retried=true"));
    lab.stop().await;
}

// --- One job ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_job_and_its_log_read_as_the_simulator_holds_them() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let log: String = (1..=200)
        .map(|i| format!("step {i}: ok ✓\n"))
        .collect::<String>()
        + "ERROR: Job failed: exit code 1\n";
    let (pipeline_id, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("rspec", "test", "failed")
                .failed_with("script_failure")
                .aged(Duration::from_secs(600))
                .with_log(log.clone()),
        ],
    );
    let client = lab.client();

    let job = client.get_job(&project, jobs[0]).await.expect("get job");
    let sim = lab.job(project_id, jobs[0]);
    assert_eq!(job.id, sim.id);
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!((job.name.as_str(), job.stage.as_str()), ("rspec", "test"));
    assert_eq!(job.git_ref, "main");
    assert_eq!(job.pipeline.id, pipeline_id);
    assert_eq!(job.created_at, sim.created_at);
    assert_eq!(job.finished_at, sim.finished_at);

    let tail = client
        .job_log_tail(&project, jobs[0], 31)
        .await
        .expect("log tail");
    assert_eq!(tail, "ERROR: Job failed: exit code 1\n");
    let mut full = Vec::new();
    let written = client
        .download_job_log(&project, jobs[0], &mut full)
        .await
        .expect("full log");
    assert_eq!(full, log.as_bytes());
    assert_eq!(written, full.len() as u64);
    lab.stop().await;
}

#[tokio::test]
async fn a_project_reads_the_same_by_id_and_by_path_and_an_unknown_one_is_404() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, by_path) = lab.project("group/sub/App");
    let client = lab.client();

    let project = client.get_project(&by_path).await.expect("by path");
    assert_eq!(project.id, project_id);
    assert_eq!(project.path_with_namespace, "group/sub/App");
    assert!(!project.archived);
    let by_id = client
        .get_project(&ProjectRef::Id(project_id))
        .await
        .expect("by id");
    assert_eq!(by_id, project);
    let lowercase = ProjectRef::Path("group/sub/app".to_owned());
    assert_eq!(
        client
            .get_project(&lowercase)
            .await
            .expect("paths are case-insensitive"),
        project
    );

    for unknown in [
        ProjectRef::Id(project_id + 1),
        ProjectRef::parse("group/nope"),
    ] {
        let err = client.get_project(&unknown).await.expect_err("unknown");
        assert_api_error(&err, 404, "404 Project Not Found");
    }
    let logged = lab.requests("GET /projects/:id");
    assert_eq!(logged.len(), 5);
    assert_eq!(logged[0].path, "/api/v4/projects/group%2Fsub%2FApp");
    lab.stop().await;
}

#[tokio::test]
async fn cancel_stops_an_unfinished_job_and_leaves_a_finished_one_unchanged() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("build", "build", "success"),
            JobSpec::new("rspec", "test", "running"),
            JobSpec::new("lint", "test", "pending"),
        ],
    );
    let client = lab.client();

    let canceled = client
        .cancel_job(&project, jobs[1], false)
        .await
        .expect("cancel running");
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert_eq!(lab.job(project_id, jobs[1]).status, "canceled");

    let forced = client
        .cancel_job(&project, jobs[2], true)
        .await
        .expect("force-cancel pending");
    assert_eq!(forced.status, JobStatus::Canceled);
    let cancels = lab.requests("POST /projects/:id/jobs/:job_id/cancel");
    assert_eq!(cancels[1].query, "force=true");

    let before = lab.job(project_id, jobs[0]);
    let unchanged = client
        .cancel_job(&project, jobs[0], false)
        .await
        .expect("cancelling a finished job is not an error");
    assert_eq!(unchanged.status, JobStatus::Success);
    assert_eq!(lab.job(project_id, jobs[0]), before);
    lab.stop().await;
}

#[tokio::test]
async fn retry_makes_a_new_job_and_the_old_attempt_cannot_be_retried_again() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (pipeline_id, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("rspec", "test", "failed").failed_with("stuck_or_timeout_failure")],
    );
    let client = lab.client();

    let retry = client.retry_job(&project, jobs[0]).await.expect("retry");
    assert_ne!(retry.id, jobs[0]);
    assert_eq!(retry.name, "rspec");
    assert_eq!(retry.pipeline.id, pipeline_id);
    let new = lab.job(project_id, retry.id);
    assert_eq!(retry.status.as_str(), new.status);
    assert!(!new.retried);
    let old = lab.job(project_id, jobs[0]);
    assert!(old.retried);
    assert_eq!(old.status, "failed", "the old attempt keeps its status");

    let again = client
        .retry_job(&project, jobs[0])
        .await
        .expect_err("a retried attempt is not retryable");
    assert_api_error(&again, 403, "403 Forbidden - Job is not retryable");
    assert!(!again.is_ambiguous(), "GitLab refused: nothing happened");
    assert_eq!(lab.control.jobs(project_id).len(), 2, "no third attempt");
    lab.stop().await;
}

#[tokio::test]
async fn erase_removes_the_artifacts_and_the_log() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("build", "build", "success")
                .with_artifacts(Duration::from_secs(86_400))
                .with_log("compiled\n"),
        ],
    );
    let client = lab.client();

    let erased = client.erase_job(&project, jobs[0]).await.expect("erase");
    assert_eq!(erased.erased_at, Some(t0()));
    assert!(!erased.has_artifacts_archive());
    let sim = lab.job(project_id, jobs[0]);
    assert!(!sim.has_artifacts && !sim.has_trace);
    let mut log = Vec::new();
    let written = client
        .download_job_log(&project, jobs[0], &mut log)
        .await
        .expect("an erased job's log is empty");
    assert_eq!((written, log.len()), (0, 0));
    lab.stop().await;
}

#[tokio::test]
async fn play_starts_a_manual_job_with_its_variables() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("build", "build", "success"),
            JobSpec::new("deploy", "deploy", "manual").manual(),
        ],
    );
    let client = lab.client();
    let variables = [
        JobVariable {
            key: "DEPLOY_ENV".into(),
            value: "staging".into(),
        },
        JobVariable {
            key: "DRY_RUN".into(),
            value: "false".into(),
        },
    ];

    let played = client
        .play_job(&project, jobs[1], &variables)
        .await
        .expect("play");
    assert_eq!(played.id, jobs[1]);
    assert_eq!(played.status, JobStatus::Pending);
    let sim = lab.job(project_id, jobs[1]);
    assert_eq!(sim.status, "pending");
    assert_eq!(
        sim.variables,
        [
            ("DEPLOY_ENV".to_owned(), "staging".to_owned()),
            ("DRY_RUN".to_owned(), "false".to_owned())
        ]
    );
    lab.stop().await;
}

// --- Artifacts -------------------------------------------------------------------------------

const ZIP_SIGNATURE: &[u8] = b"PK\x03\x04";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn artifacts_are_kept_downloaded_by_id_and_by_ref_and_deleted() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "feature/login",
        vec![
            JobSpec::new("build", "build", "success")
                .with_artifacts(Duration::from_secs(86_400))
                .with_log("built\n"),
        ],
    );
    let build = jobs[0];
    let info = format!("job={build}\nname=build\nref=feature/login\n");
    let client = lab.client();

    assert!(lab.job(project_id, build).artifacts_expire_at.is_some());
    let kept = client
        .keep_artifacts(&project, build)
        .await
        .expect("keep artifacts");
    assert_eq!(kept.artifacts_expire_at, None);
    assert!(kept.has_artifacts_archive());
    let sim = lab.job(project_id, build);
    assert!(sim.has_artifacts);
    assert_eq!(sim.artifacts_expire_at, None);

    let mut by_id = Vec::new();
    let written = client
        .download_artifacts(&project, build, &mut by_id)
        .await
        .expect("archive by id");
    assert!(by_id.starts_with(ZIP_SIGNATURE), "not a ZIP archive");
    assert_eq!(written, by_id.len() as u64);
    assert!(
        contains(&by_id, info.as_bytes()),
        "stored entries hold the file"
    );

    let mut by_ref = Vec::new();
    let written = client
        .download_artifacts_by_ref(&project, "feature/login", "build", &mut by_ref)
        .await
        .expect("archive by ref");
    assert_eq!(written, by_ref.len() as u64);
    assert_eq!(by_ref, by_id, "the same job's archive");

    let mut file = Vec::new();
    let written = client
        .download_artifact_file(&project, build, "build/info.txt", &mut file)
        .await
        .expect("one file by id");
    assert_eq!(String::from_utf8(file).expect("text"), info);
    assert_eq!(written, info.len() as u64);
    let mut file = Vec::new();
    client
        .download_artifact_file_by_ref(
            &project,
            "feature/login",
            "build",
            "build/info.txt",
            &mut file,
        )
        .await
        .expect("one file by ref");
    assert_eq!(String::from_utf8(file).expect("text"), info);
    let by_ref_requests = lab.requests("GET /projects/:id/jobs/artifacts/:ref_name/download");
    assert_eq!(
        by_ref_requests[0].path,
        "/api/v4/projects/group%2Fapp/jobs/artifacts/feature%2Flogin/download"
    );
    assert_eq!(by_ref_requests[0].query, "job=build");

    client
        .delete_artifacts(&project, build)
        .await
        .expect("delete artifacts");
    let deleted = lab.requests("DELETE /projects/:id/jobs/:job_id/artifacts");
    assert_eq!(deleted[0].status, 204);
    assert!(!lab.job(project_id, build).has_artifacts);
    let gone = client
        .download_artifacts(&project, build, &mut Vec::new())
        .await
        .expect_err("no archive any more");
    assert_api_error(&gone, 404, "404 Not Found");
    lab.stop().await;
}

// --- CI job tokens ---------------------------------------------------------------------------

#[tokio::test]
async fn a_job_token_identifies_its_running_job_and_nothing_else() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, _) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("deploy", "deploy", "running")],
    );
    let token = lab.job(project_id, jobs[0]).token;
    let job_client =
        lab.client_with(|c| c.credential = Some(Credential::JobToken(token.as_str().into())));

    let current = job_client.current_job().await.expect("the token's job");
    assert_eq!(current.id, jobs[0]);
    assert_eq!(current.status, JobStatus::Running);
    let agents = job_client
        .allowed_agents()
        .await
        .expect("the token's agents");
    assert_eq!(agents.job.id, jobs[0]);
    assert!(agents.allowed_agents.is_empty());

    let personal = lab
        .client()
        .current_job()
        .await
        .expect_err("a personal token has no job");
    assert_api_error(&personal, 404, "404 Job Not Found");

    lab.control
        .set_job_status(project_id, jobs[0], "success", None)
        .expect("the job finishes");
    let expired = job_client
        .current_job()
        .await
        .expect_err("the token of a finished job");
    assert_api_error(&expired, 401, "401 Unauthorized");
    let agents = job_client
        .allowed_agents()
        .await
        .expect_err("the token of a finished job");
    assert_api_error(&agents, 401, "401 Unauthorized");
    lab.stop().await;
}

// --- Error shapes ----------------------------------------------------------------------------

#[tokio::test]
async fn gitlabs_json_error_shapes_reach_the_caller_with_status_and_message() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("build", "build", "success")],
    );
    let client = lab.client();

    // {"message": "404 Not found"}: no such job in the project.
    let missing_job = client
        .get_job(&project, jobs[0] + 1000)
        .await
        .expect_err("unknown job");
    assert_api_error(&missing_job, 404, "404 Not found");
    assert!(missing_job.is_not_found());

    // {"message": "404 Project Not Found"}, for single calls and listings alike.
    let nowhere = ProjectRef::Path("nobody/nothing".into());
    let missing_project = client
        .get_job(&nowhere, jobs[0])
        .await
        .expect_err("unknown project");
    assert_api_error(&missing_project, 404, "404 Project Not Found");
    let listing = list(&client, &nowhere, &ListJobsQuery::all())
        .await
        .expect_err("unknown project");
    assert_api_error(&listing, 404, "404 Project Not Found");

    // {"message": "400 Bad request - Unplayable Job"}: a job that is not manual.
    let unplayable = client
        .play_job(&project, jobs[0], &[])
        .await
        .expect_err("not a manual job");
    assert_api_error(&unplayable, 400, "400 Bad request - Unplayable Job");
    assert!(!unplayable.is_ambiguous());

    // {"error": "scope does not have a valid value"}: Grape's parameter validation.
    let bogus = ListJobsQuery::with_scopes([JobStatus::Other("bogus".into())]);
    let invalid = list(&client, &project, &bogus)
        .await
        .expect_err("invalid scope");
    assert_api_error(&invalid, 400, "scope does not have a valid value");

    // Each refusal was one request: 4xx answers are final.
    let log = lab.control.request_log();
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(log.iter().all(|r| (400..500).contains(&r.status)));
    lab.stop().await;
}

#[tokio::test]
async fn the_job_list_limit_429_is_reported_with_its_nested_message_and_pauses_only_listings() {
    let lab = Lab::start(SimConfig {
        jobs_list_rate_limit_per_minute: 2,
        ..sim_config()
    })
    .await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("build", "build", "success")],
    );
    let client = lab.client_with(|c| c.max_get_retries = 0);

    for _ in 0..2 {
        list(&client, &project, &ListJobsQuery::all())
            .await
            .expect("within the limit");
    }
    let throttled = list(&client, &project, &ListJobsQuery::all())
        .await
        .expect_err("over the limit");
    assert_api_error(
        &throttled,
        429,
        "This endpoint has been requested too many times. Try again later.",
    );
    assert!(throttled.is_rate_limited());
    let statuses: Vec<u16> = lab
        .requests("GET /projects/:id/jobs")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    // The limit is the job list's alone: the client holds back listings, not other calls.
    let limiter = client.rate_limiter();
    assert!(limiter.paused_for(LimitScope::ProjectJobsList).is_some());
    assert_eq!(limiter.paused_for(LimitScope::Instance), None);
    let job = client
        .get_job(&project, jobs[0])
        .await
        .expect("other endpoints go on");
    assert_eq!(job.id, jobs[0]);
    lab.stop().await;
}

#[tokio::test]
async fn a_rack_attack_429_is_reported_with_its_plain_text_message() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("rspec", "test", "running")],
    );
    lab.control.set_faults(FaultConfig {
        rate_limit_burst_every: Some(1),
        ..FaultConfig::default()
    });
    // A throttled client waits out Retry-After (a minute here) before its next request, so
    // each call gets a fresh client.
    let fresh = || lab.client_with(|c| c.max_get_retries = 0);

    let get = fresh()
        .get_job(&project, jobs[0])
        .await
        .expect_err("throttled");
    assert_api_error(&get, 429, "Retry later");
    let client = fresh();
    let cancel = client
        .cancel_job(&project, jobs[0], false)
        .await
        .expect_err("throttled");
    assert_api_error(&cancel, 429, "Retry later");
    assert!(
        !cancel.is_ambiguous(),
        "a throttled request was refused before GitLab acted on it"
    );
    assert_eq!(lab.job(project_id, jobs[0]).status, "running");
    // Rack::Attack's Retry-After pauses every request to the instance.
    assert!(
        client
            .rate_limiter()
            .paused_for(LimitScope::Instance)
            .is_some()
    );
    lab.stop().await;
}

// --- The client's rate limiter against the simulator's job-list limit ------------------------

/// A client whose budget fits the simulator's `jobs_index` limit waits for its budget instead of
/// running into 429s.
///
/// The client's token bucket refills on the wall clock (`std::time::Instant`); the simulator
/// counts the limit in fixed one-minute windows of its own clock. A manual simulator clock never
/// ends a window, so 700 requests at 600/min cannot be tested with it, and doing it at real speed
/// takes more than a minute. Instead the simulator's clock runs 40 times faster than the wall
/// clock (one simulated minute is 1.5 s), and both sides are scaled alike: the simulator allows
/// 31 list requests a (simulated) minute, the client's budget is 1,200 requests a wall minute,
/// which is 30 a simulated minute, one request every 50 ms (2 simulated seconds), without a burst
/// (a burst is a fixed number of requests, so it does not scale with the clock).
///
/// Why 30 against 31: the client sends one request at a time and GitLab counts a request when it
/// arrives, so the one request in flight when a window starts may have been granted by the
/// bucket in the previous window. Every window therefore sees at most the bucket's 30 plus that
/// one; this holds whatever the machine's load, so the test does not depend on timing. The
/// bucket guarantees its part for every 60-second window (see the limiter's unit tests).
///
/// 75 requests span more than two simulated minutes and take at least 3.7 s of wall time. A
/// client that did not wait would send them within a window or two and get 429s (checked at the
/// end with an unthrottled client against the same simulator).
#[tokio::test]
async fn a_client_within_the_job_list_limit_waits_instead_of_being_throttled() {
    const SPEED: f64 = 40.0;
    const SIM_LIMIT: u32 = 31;
    const BUDGET_PER_SIM_MINUTE: u32 = 30;
    const REQUESTS: u32 = 75;
    let lab = Lab::start(SimConfig {
        clock: Clock::real(SPEED),
        jobs_list_rate_limit_per_minute: SIM_LIMIT,
        authenticated_api_rate_limit_per_minute: 0,
        ..sim_config()
    })
    .await;
    let (project_id, project) = lab.project("group/app");
    lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("build", "build", "success")],
    );
    let bucket = RateLimiter::with_settings(RateLimiterSettings {
        burst: 1,
        ..RateLimiterSettings::new(BUDGET_PER_SIM_MINUTE * SPEED as u32)
    });
    // Without retries a 429 would surface as an error instead of being waited out.
    let client = lab.client_with(|c| {
        c.rate_limiter = Some(Arc::new(bucket));
        c.max_get_retries = 0;
    });

    let started = lab.control.now();
    for request in 0..REQUESTS {
        let jobs = list(&client, &project, &ListJobsQuery::all())
            .await
            .unwrap_or_else(|e| panic!("request {request}: {e}"));
        assert_eq!(jobs.len(), 1);
    }
    let elapsed = lab.control.now().duration_since(started);

    let log = lab.requests("GET /projects/:id/jobs");
    assert_eq!(log.len(), REQUESTS as usize, "one request per call");
    assert!(log.iter().all(|r| r.status == 200), "{log:?}");
    // The bucket spaced the requests 2 simulated seconds apart (less a millisecond of the
    // simulator's rounding): the client waited rather than failed.
    let spacing_ms = i64::from(60_000 / BUDGET_PER_SIM_MINUTE);
    let least = jiff::SignedDuration::from_millis(i64::from(REQUESTS - 1) * spacing_ms - 2);
    assert!(elapsed >= least, "{elapsed:?} < {least:?}");

    // The same requests without a budget run into the limit: the test above could fail.
    lab.control.reset_rate_limits();
    let unthrottled = lab.client_with(|c| {
        c.requests_per_minute = 1_000_000;
        c.max_get_retries = 0;
    });
    let mut first_refusal = None;
    for _ in 0..1000 {
        if let Err(error) = list(&unthrottled, &project, &ListJobsQuery::all()).await {
            first_refusal = Some(error);
            break;
        }
    }
    let refusal = first_refusal.expect("an unthrottled client hits the limit");
    assert_eq!(refusal.status(), Some(429), "{refusal}");
    lab.stop().await;
}

// --- Retries under faults --------------------------------------------------------------------

#[tokio::test]
async fn server_errors_are_retried_for_gets_and_never_for_posts() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("rspec", "test", "failed").failed_with("runner_system_failure")],
    );
    let client = lab.client_with(|c| c.max_get_retries = 2);
    lab.control.set_faults(FaultConfig {
        error_5xx_ratio: 1.0,
        ..FaultConfig::default()
    });

    let get = client
        .get_job(&project, jobs[0])
        .await
        .expect_err("every answer is a 5xx");
    assert_eq!(get.kind(), "api_error");
    assert!(matches!(get.status(), Some(500 | 502 | 503)), "{get}");
    assert!(!get.is_ambiguous(), "a GET changes nothing");
    assert_eq!(
        lab.requests("GET /projects/:id/jobs/:job_id").len(),
        3,
        "one attempt and two retries"
    );

    let listing = list(&client, &project, &ListJobsQuery::all())
        .await
        .expect_err("every page is a 5xx");
    assert!(matches!(listing.status(), Some(500 | 502 | 503)));
    assert_eq!(lab.requests("GET /projects/:id/jobs").len(), 3);

    let post = client
        .retry_job(&project, jobs[0])
        .await
        .expect_err("every answer is a 5xx");
    assert!(matches!(post.status(), Some(500 | 502 | 503)), "{post}");
    assert!(post.is_ambiguous(), "a 5xx leaves a POST's outcome unknown");
    assert_eq!(
        lab.requests("POST /projects/:id/jobs/:job_id/retry").len(),
        1,
        "a POST is sent once"
    );

    lab.control.set_faults(FaultConfig::default());
    assert_eq!(lab.control.jobs(project_id).len(), 1, "no retry happened");
    lab.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_is_retried_for_gets_and_ambiguous_for_a_cancel() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("rspec", "test", "running")],
    );
    let client = lab.client_with(|c| c.max_get_retries = 2);
    lab.control.set_faults(FaultConfig {
        drop_connection_ratio: 1.0,
        ..FaultConfig::default()
    });

    let cancel = client
        .cancel_job(&project, jobs[0], false)
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            cancel,
            GitLabError::Transport {
                failure: TransportFailure::Interrupted,
                ..
            }
        ),
        "{cancel:?}"
    );
    assert!(cancel.is_ambiguous(), "the request may have been processed");
    let cancels = lab.requests("POST /projects/:id/jobs/:job_id/cancel");
    assert_eq!(cancels.len(), 1, "sent once");
    assert_eq!(cancels[0].status, 0, "dropped without an answer");

    let get = client
        .get_job(&project, jobs[0])
        .await
        .expect_err("no answer");
    assert_eq!(get.kind(), "transport");
    assert!(!get.is_ambiguous());
    let gets = lab.requests("GET /projects/:id/jobs/:job_id");
    assert_eq!(gets.len(), 3, "one attempt and two retries");
    assert!(gets.iter().all(|r| r.status == 0));
    lab.stop().await;
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_never_a_panic() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![
            JobSpec::new("build", "build", "success"),
            JobSpec::new("rspec", "test", "running"),
        ],
    );
    let client = lab.client_with(|c| c.max_get_retries = 2);
    lab.control.set_faults(FaultConfig {
        malformed_json_ratio: 1.0,
        ..FaultConfig::default()
    });

    // A 200 answer whose body is cut off is retried like a 5xx; when every answer is cut off,
    // the client reports a decode error after its retries.
    let get = client
        .get_job(&project, jobs[0])
        .await
        .expect_err("half a job");
    assert_eq!(get.kind(), "decode", "{get}");
    assert!(get.to_string().contains("truncated JSON"), "{get}");
    assert!(!get.is_ambiguous());
    assert_eq!(lab.requests("GET /projects/:id/jobs/:job_id").len(), 3);

    // A listing yields the page's error and ends.
    let items: Vec<Result<Job, GitLabError>> = client
        .list_project_jobs(&project, &ListJobsQuery::all())
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    let page = items[0].as_ref().expect_err("half a page");
    assert_eq!(page.kind(), "decode", "{page}");

    // The cancel took effect, but its answer cannot be read: the caller must re-read the job.
    let cancel = client
        .cancel_job(&project, jobs[1], false)
        .await
        .expect_err("half a job");
    assert_eq!(cancel.kind(), "decode", "{cancel}");
    assert!(cancel.is_ambiguous());
    assert_eq!(lab.job(project_id, jobs[1]).status, "canceled");
    lab.stop().await;
}

#[tokio::test]
async fn a_request_held_past_the_client_timeout_is_a_transport_timeout() {
    let lab = Lab::start(sim_config()).await;
    let (project_id, project) = lab.project("group/app");
    let (_, jobs) = lab.pipeline(
        project_id,
        "main",
        vec![JobSpec::new("rspec", "test", "running").with_log("running\n")],
    );
    let client = lab.client_with(|c| {
        c.timeout = Duration::from_millis(200);
        c.max_get_retries = 1;
    });
    let is_timeout = |e: &GitLabError| {
        matches!(
            e,
            GitLabError::Transport {
                failure: TransportFailure::Timeout,
                ..
            }
        )
    };

    // Held requests: JSON calls time out as a whole.
    lab.control.set_faults(FaultConfig {
        timeout_ratio: 1.0,
        timeout_hold: Duration::from_secs(60),
        ..FaultConfig::default()
    });
    let get = client.get_job(&project, jobs[0]).await.expect_err("held");
    assert!(is_timeout(&get), "{get:?}");
    assert!(!get.is_ambiguous());
    let cancel = client
        .cancel_job(&project, jobs[0], false)
        .await
        .expect_err("held");
    assert!(is_timeout(&cancel), "{cancel:?}");
    assert!(cancel.is_ambiguous(), "GitLab may still act on it");

    // Slow answers: a download times out waiting for the response to start.
    lab.control.set_faults(FaultConfig {
        latency: Duration::from_secs(60),
        ..FaultConfig::default()
    });
    let tail = client
        .job_log_tail(&project, jobs[0], 100)
        .await
        .expect_err("slow");
    assert!(is_timeout(&tail), "{tail:?}");
    lab.stop().await;
}
