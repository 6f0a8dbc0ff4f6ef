//! The simulator's Jobs API as a client sees it: entities, the state machine through the API,
//! error codes and bodies, authentication.

mod sim_support;

use jobwarden::sim::{JobSpec, PipelineSpec};
use reqwest::Method;
use serde_json::{Value, json};
use sim_support::*;
use std::time::Duration;

fn is_api_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && s.parse::<jiff::Timestamp>().is_ok()
}

#[tokio::test]
async fn job_entity_has_gitlab_fields_in_order() {
    let sim = start(config(1)).await;
    let pipeline = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("rspec", "test", "failed")
                    .failed_with("script_failure")
                    .aged(Duration::from_secs(600))
                    .with_log("boom\n")
                    .with_artifacts(Duration::from_secs(3600)),
                JobSpec::new("lint", "test", "success").aged(Duration::from_secs(600)),
            ],
        ),
    );
    let failed = pipeline.job_ids[0];
    let response = sim.get(&format!("/projects/1/jobs/{failed}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let text = response.text().await.expect("body");
    assert_eq!(
        key_order(&text),
        [
            "id",
            "status",
            "stage",
            "name",
            "ref",
            "tag",
            "coverage",
            "allow_failure",
            "created_at",
            "started_at",
            "finished_at",
            "erased_at",
            "duration",
            "queued_duration",
            "user",
            "commit",
            "pipeline",
            "failure_reason",
            "web_url",
            "project",
            "artifacts_file",
            "artifacts",
            "runner",
            "runner_manager",
            "artifacts_expire_at",
            "archived",
            "tag_list",
        ]
    );
    let job: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(job["id"], failed);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["failure_reason"], "script_failure");
    assert_eq!(job["created_at"], "2026-11-23T09:50:00.000Z");
    assert_eq!(job["started_at"], "2026-11-23T09:55:00.000Z");
    assert_eq!(job["finished_at"], "2026-11-23T10:00:00.000Z");
    assert_eq!(job["duration"], 300.0);
    assert_eq!(job["queued_duration"], 300.0);
    assert!(is_api_timestamp(&job["artifacts_expire_at"]));
    assert_eq!(job["artifacts_expire_at"], "2026-11-23T11:00:00.000Z");
    assert_eq!(job["artifacts_file"]["filename"], "artifacts.zip");
    let types: Vec<&str> = job["artifacts"]
        .as_array()
        .expect("array")
        .iter()
        .map(|a| a["file_type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["archive", "metadata", "trace"]);
    let trace = &job["artifacts"][2];
    assert_eq!(trace["filename"], "job.log");
    assert_eq!(trace["size"], 5);
    assert_eq!(
        job["web_url"],
        format!("{}fleet/project-1/-/jobs/{failed}", sim.handle.base_url())
    );
    assert_eq!(job["project"], json!({"ci_job_token_scope_enabled": false}));
    assert_eq!(job["pipeline"]["id"], pipeline.id);
    assert_eq!(job["pipeline"]["status"], "failed");
    assert_eq!(
        key_order_at(&text, &["pipeline"]),
        [
            "id",
            "iid",
            "project_id",
            "sha",
            "ref",
            "status",
            "source",
            "created_at",
            "updated_at",
            "web_url"
        ]
    );
    assert_eq!(job["commit"]["id"], job["pipeline"]["sha"]);
    assert_eq!(job["runner"]["id"], 11);
    assert_eq!(job["runner_manager"]["system_id"], "s_8a9c1f0e2b3d");
    assert_eq!(job["user"]["id"], 2);
    assert_eq!(job["archived"], false);

    let (_, success) = sim
        .get_json(&format!("/projects/1/jobs/{}", pipeline.job_ids[1]))
        .await;
    let keys: Vec<&String> = success.as_object().expect("object").keys().collect();
    assert!(
        !keys.iter().any(|k| *k == "failure_reason"),
        "failure_reason only when failed"
    );
    assert!(
        !keys.iter().any(|k| *k == "artifacts_file"),
        "artifacts_file only with an archive"
    );
    assert_eq!(success["artifacts"], json!([]));
    assert_eq!(success["artifacts_expire_at"], Value::Null);
    sim.stop().await;
}

#[tokio::test]
async fn durations_follow_the_clock_and_the_state_machine() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(
        1,
        PipelineSpec::new("main", vec![JobSpec::new("build", "build", "created")]),
    );
    let id = p.job_ids[0];
    let get = || async { sim.get_json(&format!("/projects/1/jobs/{id}")).await.1 };
    assert_eq!(get().await["queued_duration"], Value::Null);

    sim.control.set_job_status(1, id, "pending", None);
    sim.control.advance(Duration::from_secs(30));
    let pending = get().await;
    assert_eq!(pending["queued_duration"], 30.0);
    assert_eq!(pending["duration"], Value::Null);
    assert_eq!(pending["runner"], Value::Null);

    sim.control.set_job_status(1, id, "running", None);
    sim.control.advance(Duration::from_millis(90_500));
    let running = get().await;
    assert_eq!(running["queued_duration"], 30.0);
    assert_eq!(running["duration"], 90.5);
    assert_eq!(running["started_at"], "2026-11-23T10:00:30.000Z");
    assert!(running["runner"].is_object());

    sim.control.set_job_status(1, id, "failed", None);
    sim.control.advance(Duration::from_secs(60));
    let failed = get().await;
    assert_eq!(failed["duration"], 90.5);
    assert_eq!(failed["failure_reason"], "unknown_failure");
    assert_eq!(failed["finished_at"], "2026-11-23T10:02:00.500Z");
    let snapshot = sim.control.job(1, id).expect("job");
    assert_eq!(snapshot.status, "failed");
    assert!(snapshot.has_trace);
    sim.stop().await;
}

fn scenario() -> PipelineSpec {
    PipelineSpec::new(
        "main",
        vec![
            JobSpec::new("build", "build", "success").with_log("built\n"),
            JobSpec::new("rspec", "test", "failed").failed_with("stuck_or_timeout_failure"),
            JobSpec::new("lint", "test", "created"),
            JobSpec::new("deploy", "deploy", "manual").manual(),
            JobSpec::new("e2e", "test", "running"),
        ],
    )
}

#[tokio::test]
async fn retry_creates_a_new_job_and_hides_the_old_one_from_the_pipeline() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(1, scenario());
    let old = p.job_ids[1];

    let (status, new) = sim
        .post_json(&format!("/projects/1/jobs/{old}/retry"))
        .await;
    assert_eq!(status, 201);
    let new_id = new["id"].as_u64().expect("id");
    assert!(new_id > *p.job_ids.iter().max().expect("ids"));
    assert_eq!(new["status"], "pending");
    assert_eq!(new["name"], "rspec");
    assert_eq!(new["stage"], "test");
    assert_eq!(new["pipeline"]["id"], p.id);
    assert_eq!(new["user"]["id"], 1, "the retrying user");
    assert_eq!(new["started_at"], Value::Null);
    assert!(new.get("failure_reason").is_none());

    let old_snapshot = sim.control.job(1, old).expect("old");
    assert!(old_snapshot.retried);
    assert_eq!(
        old_snapshot.status, "failed",
        "the old attempt keeps its status"
    );

    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|j| j["id"].as_u64().expect("id"))
            .collect()
    };
    let (_, latest) = sim
        .get_json(&format!("/projects/1/pipelines/{}/jobs", p.id))
        .await;
    assert!(ids(&latest).contains(&new_id));
    assert!(!ids(&latest).contains(&old));
    let (_, all) = sim
        .get_json(&format!(
            "/projects/1/pipelines/{}/jobs?include_retried=true",
            p.id
        ))
        .await;
    assert!(ids(&all).contains(&old) && ids(&all).contains(&new_id));
    let (_, project) = sim.get_json("/projects/1/jobs?per_page=100").await;
    assert!(
        ids(&project).contains(&old),
        "the project list keeps retried attempts"
    );
    assert_eq!(ids(&project)[0], new_id);

    for not_retryable in [old, p.job_ids[2], new_id, p.job_ids[4]] {
        let (status, body) = sim
            .post_json(&format!("/projects/1/jobs/{not_retryable}/retry"))
            .await;
        assert_eq!(status, 403, "job {not_retryable}");
        assert_eq!(
            body,
            json!({"message": "403 Forbidden - Job is not retryable"})
        );
    }
    let (status, body) = sim
        .get_json("/projects/1/pipelines/1/jobs?include_retried=maybe")
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "include_retried is invalid"}))
    );
    sim.stop().await;
}

#[tokio::test]
async fn cancel_changes_only_unfinished_jobs() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(1, scenario());
    let before = sim
        .get_json(&format!("/projects/1/jobs/{}", p.job_ids[0]))
        .await
        .1;
    sim.control.advance(Duration::from_secs(5));
    let (status, after) = sim
        .post_json(&format!("/projects/1/jobs/{}/cancel", p.job_ids[0]))
        .await;
    assert_eq!(status, 201);
    assert_eq!(after["status"], "success");
    assert_eq!(after["finished_at"], before["finished_at"]);

    for (id, was) in [
        (p.job_ids[2], "created"),
        (p.job_ids[3], "manual"),
        (p.job_ids[4], "running"),
    ] {
        let (status, job) = sim
            .post_json(&format!("/projects/1/jobs/{id}/cancel?force=true"))
            .await;
        assert_eq!(status, 201, "{was}");
        assert_eq!(job["status"], "canceled", "{was}");
        assert_eq!(job["finished_at"], "2026-11-23T10:00:05.000Z");
    }
    let (status, body) = sim
        .post_json(&format!(
            "/projects/1/jobs/{}/cancel?force=sure",
            p.job_ids[0]
        ))
        .await;
    assert_eq!((status, body), (400, json!({"error": "force is invalid"})));
    sim.stop().await;
}

#[tokio::test]
async fn play_runs_manual_jobs_with_variables() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(1, scenario());
    let manual = p.job_ids[3];

    let response = sim
        .request(Method::POST, &format!("/projects/1/jobs/{manual}/play"))
        .json(&json!({"job_variables_attributes": [{"key": "TARGET", "value": "staging"}]}))
        .send()
        .await
        .expect("request");
    let (status, job) = json_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(job["id"], manual);
    assert_eq!(job["status"], "pending");
    assert_eq!(job["user"]["id"], 1);
    let snapshot = sim.control.job(1, manual).expect("job");
    assert_eq!(
        snapshot.variables,
        [("TARGET".to_owned(), "staging".to_owned())]
    );

    // Not manual (any more): unplayable.
    let (status, body) = sim
        .post_json(&format!("/projects/1/jobs/{manual}/play"))
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"message": "400 Bad request - Unplayable Job"}))
    );
    let (status, _) = sim
        .post_json(&format!("/projects/1/jobs/{}/play", p.job_ids[1]))
        .await;
    assert_eq!(status, 400);

    // A finished manual job is played again as a new job.
    sim.control.set_job_status(1, manual, "success", None);
    let form = sim
        .request(Method::POST, &format!("/projects/1/jobs/{manual}/play"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("job_variables_attributes[][key]=A&job_variables_attributes[][value]=1&job_variables_attributes[][key]=B&job_variables_attributes[][value]=2")
        .send()
        .await
        .expect("request");
    let (status, replayed) = json_of(form).await;
    assert_eq!(status, 200);
    let new_id = replayed["id"].as_u64().expect("id");
    assert_ne!(new_id, manual);
    assert_eq!(replayed["status"], "pending");
    let vars = sim.control.job(1, new_id).expect("job").variables;
    assert_eq!(vars, [("A".into(), "1".into()), ("B".into(), "2".into())]);
    assert!(sim.control.job(1, manual).expect("job").retried);

    // Variables are validated before anything else.
    let (status, body) = sim
        .post_json(&format!(
            "/projects/1/jobs/{manual}/play?job_variables_attributes[][value]=x"
        ))
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "job_variables_attributes[0][key] is missing"})
        )
    );
    sim.stop().await;
}

#[tokio::test]
async fn erase_keep_and_delete_artifacts() {
    let sim = start(config(1)).await;
    let p = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("build", "build", "success")
                    .with_log("log\n")
                    .with_artifacts(Duration::from_secs(3600)),
                JobSpec::new("bare", "build", "success"),
                JobSpec::new("busy", "build", "running").with_log("…"),
                JobSpec::new("keeper", "build", "success").with_artifacts(Duration::from_secs(600)),
                JobSpec::new("expiring", "build", "success")
                    .with_artifacts(Duration::from_secs(60)),
            ],
        ),
    );
    let [build, bare, busy, keeper, expiring] = p.job_ids[..] else {
        panic!("five jobs");
    };

    let (status, kept) = sim
        .post_json(&format!("/projects/1/jobs/{keeper}/artifacts/keep"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(kept["artifacts_expire_at"], Value::Null);
    assert!(kept["artifacts_file"].is_object());
    let (status, body) = sim
        .post_json(&format!("/projects/1/jobs/{bare}/artifacts/keep"))
        .await;
    assert_eq!((status, body), (404, json!({"message": "404 Not Found"})));
    sim.control.advance(Duration::from_secs(120));
    let (status, _) = sim
        .post_json(&format!("/projects/1/jobs/{expiring}/artifacts/keep"))
        .await;
    assert_eq!(status, 404, "expired artifacts cannot be kept");
    let (_, expired) = sim.get_json(&format!("/projects/1/jobs/{expiring}")).await;
    assert!(expired.get("artifacts_file").is_none());
    assert_eq!(expired["artifacts"], json!([]));
    assert_eq!(
        sim.get(&format!("/projects/1/jobs/{expiring}/artifacts"))
            .await
            .status(),
        404
    );
    let (_, still_kept) = sim.get_json(&format!("/projects/1/jobs/{keeper}")).await;
    assert!(still_kept["artifacts_file"].is_object());

    let (status, erased) = sim
        .post_json(&format!("/projects/1/jobs/{build}/erase"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(erased["erased_at"], "2026-11-23T10:02:00.000Z");
    assert_eq!(erased["artifacts"], json!([]));
    assert!(erased.get("artifacts_file").is_none());
    let trace = sim.get(&format!("/projects/1/jobs/{build}/trace")).await;
    assert_eq!(trace.text().await.expect("text"), "");
    for id in [bare, busy, build] {
        let (status, body) = sim.post_json(&format!("/projects/1/jobs/{id}/erase")).await;
        assert_eq!(
            (status, body),
            (
                403,
                json!({"message": "403 Forbidden - Job is not erasable!"})
            ),
            "{id}"
        );
    }

    let deleted = sim
        .request(
            Method::DELETE,
            &format!("/projects/1/jobs/{keeper}/artifacts"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.text().await.expect("body"), "");
    assert_eq!(
        sim.get(&format!("/projects/1/jobs/{keeper}/artifacts"))
            .await
            .status(),
        404
    );
    sim.stop().await;
}

#[tokio::test]
async fn traces_and_artifact_downloads() {
    let sim = start(config(1)).await;
    let tag = |jobs| PipelineSpec {
        git_ref: "v1.2.0".into(),
        tag: true,
        jobs,
    };
    let p = sim.control.add_pipeline(
        1,
        tag(vec![
            JobSpec::new("release", "deploy", "success")
                .with_log("line 1\nline 2\n")
                .with_artifacts(Duration::from_secs(86_400)),
            JobSpec::new("quiet", "deploy", "success"),
        ]),
    );
    let release = p.job_ids[0];
    let trace = sim.get(&format!("/projects/1/jobs/{release}/trace")).await;
    assert_eq!(trace.status(), 200);
    assert_eq!(
        header(&trace, "content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        header(&trace, "content-disposition"),
        Some(format!("infile; filename=\"{release}.log\""))
    );
    assert_eq!(trace.text().await.expect("text"), "line 1\nline 2\n");
    let empty = sim
        .get(&format!("/projects/1/jobs/{}/trace", p.job_ids[1]))
        .await;
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.text().await.expect("text"), "");

    let (_, job) = sim.get_json(&format!("/projects/1/jobs/{release}")).await;
    let archive = sim
        .get(&format!("/projects/1/jobs/{release}/artifacts"))
        .await;
    assert_eq!(archive.status(), 200);
    assert_eq!(
        header(&archive, "content-type").as_deref(),
        Some("application/zip")
    );
    let bytes = archive.bytes().await.expect("bytes");
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    assert_eq!(
        Some(bytes.len() as u64),
        job["artifacts_file"]["size"].as_u64()
    );

    let by_ref = sim
        .get("/projects/1/jobs/artifacts/v1.2.0/download?job=release")
        .await;
    assert_eq!(by_ref.status(), 200);
    assert_eq!(by_ref.bytes().await.expect("bytes"), bytes);
    let file = sim
        .get(&format!(
            "/projects/1/jobs/{release}/artifacts/dist/CHANGELOG.md"
        ))
        .await;
    assert_eq!(file.status(), 200);
    assert!(file.text().await.expect("text").starts_with("# v1.2.0"));
    let raw = sim
        .get("/projects/fleet%2Fproject-1/jobs/artifacts/v1.2.0/raw/dist/CHANGELOG.md?job=release")
        .await;
    assert_eq!(raw.status(), 200);

    let cases: Vec<(String, u16, Value)> = vec![
        (
            format!("/projects/1/jobs/{release}/artifacts/nope.txt"),
            404,
            json!({"message": "404 Not Found"}),
        ),
        (
            format!("/projects/1/jobs/{release}/artifacts/dist%2F..%2F..%2Fetc%2Fpasswd"),
            400,
            json!({"message": "400 Bad request"}),
        ),
        (
            format!("/projects/1/jobs/{}/artifacts/a.txt", p.job_ids[1]),
            404,
            json!({"message": "404 Not Found"}),
        ),
        (
            "/projects/1/jobs/artifacts/v1.2.0/download".into(),
            400,
            json!({"error": "job is missing"}),
        ),
        (
            "/projects/1/jobs/artifacts/main/download?job=release".into(),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            "/projects/1/jobs/artifacts/v1.2.0/download?job=quiet".into(),
            404,
            json!({"message": "404 Not found"}),
        ),
    ];
    for (path, status, body) in cases {
        assert_eq!(sim.get_json(&path).await, (status, body), "{path}");
    }

    // A newer pipeline that has not succeeded does not count: the latest successful one does.
    sim.control
        .add_pipeline(1, tag(vec![JobSpec::new("release", "deploy", "running")]));
    let latest = sim
        .get("/projects/1/jobs/artifacts/v1.2.0/download?job=release")
        .await;
    assert_eq!(latest.status(), 200);
    // A newer successful pipeline without that job hides it, except from the search across
    // recent successful pipelines.
    sim.control
        .add_pipeline(1, tag(vec![JobSpec::new("docs", "deploy", "success")]));
    let (status, _) = sim
        .get_json("/projects/1/jobs/artifacts/v1.2.0/download?job=release")
        .await;
    assert_eq!(status, 404);
    let recent = sim
        .get("/projects/1/jobs/artifacts/v1.2.0/download?job=release&search_recent_successful_pipelines=true")
        .await;
    assert_eq!(recent.status(), 200);
    let (status, body) = sim
        .get_json("/projects/1/jobs/artifacts/v9/download?job=release&search_recent_successful_pipelines=true")
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "404 Job Not Found"}))
    );

    // Artifact downloads tolerate anonymous callers, who see no (private) project.
    let anonymous = sim
        .client
        .get(sim.api(&format!("/projects/1/jobs/{release}/artifacts")))
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(anonymous).await,
        (404, json!({"message": "404 Project Not Found"}))
    );
    sim.stop().await;
}

#[tokio::test]
async fn error_codes_and_bodies() {
    let sim = start(config(2)).await;
    let p1 = sim.control.add_pipeline(1, scenario());
    let p2 = sim.control.add_pipeline(2, scenario());
    let cases: Vec<(Method, String, u16, Value)> = vec![
        (
            Method::GET,
            "/projects/99/jobs".into(),
            404,
            json!({"message": "404 Project Not Found"}),
        ),
        (
            Method::GET,
            "/projects/fleet%2Fnope/jobs".into(),
            404,
            json!({"message": "404 Project Not Found"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs/999999".into(),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            Method::GET,
            format!("/projects/1/jobs/{}", p2.job_ids[0]),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            Method::POST,
            format!("/projects/1/jobs/{}/retry", p2.job_ids[1]),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs/abc".into(),
            400,
            json!({"error": "job_id is invalid"}),
        ),
        (
            Method::POST,
            "/projects/1/jobs/1x/cancel".into(),
            400,
            json!({"error": "job_id is invalid"}),
        ),
        (
            Method::GET,
            "/projects/99/jobs/abc".into(),
            400,
            json!({"error": "job_id is invalid"}),
        ),
        (
            Method::GET,
            "/projects/1/pipelines/x/jobs".into(),
            400,
            json!({"error": "pipeline_id is invalid"}),
        ),
        (
            Method::GET,
            "/projects/1/pipelines/424242/jobs".into(),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?scope=bogus".into(),
            400,
            json!({"error": "scope does not have a valid value"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?scope[]=failed&scope[]=done".into(),
            400,
            json!({"error": "scope does not have a valid value"}),
        ),
        (
            Method::GET,
            format!("/projects/1/pipelines/{}/jobs?scope=nope", p1.id),
            400,
            json!({"error": "scope does not have a valid value"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?per_page=0".into(),
            400,
            json!({"error": "per_page has a value not allowed"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?page=two".into(),
            400,
            json!({"error": "page is invalid"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?pagination=keyset&sort=asc".into(),
            405,
            json!({"error": "Keyset pagination is not yet available for this type of request"}),
        ),
        (
            Method::GET,
            "/projects/1/jobs?pagination=keyset&order_by=created_at".into(),
            405,
            json!({"error": "Keyset pagination is not yet available for this type of request"}),
        ),
        (
            Method::GET,
            "/projects/1/nothing".into(),
            404,
            json!({"error": "404 Not Found"}),
        ),
        (
            Method::DELETE,
            "/projects/1/jobs".into(),
            404,
            json!({"error": "404 Not Found"}),
        ),
        (
            Method::GET,
            "/job".into(),
            404,
            json!({"message": "404 Job Not Found"}),
        ),
    ];
    for (method, path, status, body) in cases {
        let response = sim
            .request(method.clone(), &path)
            .send()
            .await
            .expect("request");
        let (got_status, got_body) = json_of(response).await;
        assert_eq!((got_status, got_body), (status, body), "{method} {path}");
    }
    let (status, body) = json_of(
        sim.client
            .get(sim.api("/projects/1/jobs"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "401 Unauthorized"}))
    );
    let (status, body) = json_of(
        sim.client
            .get(sim.api("/projects/1/jobs"))
            .header("PRIVATE-TOKEN", "wrong")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "401 Unauthorized"}))
    );
    sim.stop().await;
}

#[tokio::test]
async fn projects_by_url_encoded_path_and_token_variants() {
    let sim = start(config(1)).await;
    let id = sim
        .control
        .add_project("group/sub/project")
        .expect("new project");
    let p = sim.control.add_pipeline(
        id,
        PipelineSpec::new("main", vec![JobSpec::new("a", "test", "success")]),
    );
    let (status, jobs) = sim.get_json("/projects/group%2Fsub%2Fproject/jobs").await;
    assert_eq!(status, 200);
    assert_eq!(jobs[0]["id"], p.job_ids[0]);
    assert_eq!(
        jobs[0]["web_url"],
        format!(
            "{}group/sub/project/-/jobs/{}",
            sim.handle.base_url(),
            p.job_ids[0]
        )
    );
    let (status, _) = sim
        .get_json(&format!(
            "/projects/GROUP%2Fsub%2FProject/jobs/{}",
            p.job_ids[0]
        ))
        .await;
    assert_eq!(status, 200, "paths are case-insensitive");

    let variants = [
        sim.client
            .get(sim.api("/projects/1/jobs"))
            .header("PRIVATE-TOKEN", TOKEN),
        sim.client
            .get(sim.api("/projects/1/jobs"))
            .bearer_auth(TOKEN),
        sim.client
            .get(sim.api(&format!("/projects/1/jobs?private_token={TOKEN}"))),
        sim.client
            .get(sim.api(&format!("/projects/1/jobs?access_token={TOKEN}"))),
    ];
    for request in variants {
        assert_eq!(request.send().await.expect("request").status(), 200);
    }
    sim.stop().await;
}

#[tokio::test]
async fn job_tokens_work_only_for_running_jobs_and_allowed_endpoints() {
    let sim = start(config(2)).await;
    let p = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("deploy", "deploy", "running"),
                JobSpec::new("build", "build", "success").with_artifacts(Duration::from_secs(600)),
            ],
        ),
    );
    let running = sim.control.job(1, p.job_ids[0]).expect("job");
    let finished = sim.control.job(1, p.job_ids[1]).expect("job");
    assert!(
        !format!("{running:?}").contains(&running.token),
        "Debug hides the token"
    );
    let with_job_token = |path: &str, token: &str| {
        sim.client
            .get(sim.api(path))
            .header("JOB-TOKEN", token.to_owned())
            .send()
    };

    let (status, job) = json_of(
        with_job_token("/job", &running.token)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(job["id"], running.id);
    assert_eq!(job["status"], "running");
    let (status, agents) = json_of(
        sim.client
            .get(sim.api(&format!("/job/allowed_agents?job_token={}", running.token)))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        agents.as_object().map(|o| o.len()),
        Some(5),
        "allowed_agents, job, pipeline, project, user"
    );
    assert_eq!(agents["allowed_agents"], json!([]));
    assert_eq!(agents["job"], json!({"id": running.id}));
    assert_eq!(agents["pipeline"], json!({"id": p.id}));
    assert_eq!(agents["project"]["id"], 1);
    assert!(agents["project"]["groups"].is_array());
    assert_eq!(agents["user"]["id"], running.user_id);

    let bearer = sim
        .client
        .get(sim.api("/job"))
        .bearer_auth(&running.token)
        .send()
        .await
        .expect("request");
    assert_eq!(bearer.status(), 200);
    assert_eq!(
        with_job_token("/projects/1/jobs", &running.token)
            .await
            .expect("request")
            .status(),
        200
    );
    assert_eq!(
        with_job_token(
            &format!("/projects/1/jobs/{}/artifacts", finished.id),
            &running.token
        )
        .await
        .expect("request")
        .status(),
        200
    );
    let (status, body) = json_of(
        with_job_token("/projects/2/jobs", &running.token)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "404 Project Not Found"}))
    );
    // Endpoints without job-token support ignore it: unauthenticated.
    let (status, body) = json_of(
        with_job_token(&format!("/projects/1/jobs/{}", running.id), &running.token)
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "401 Unauthorized"}))
    );
    // A finished job's token, and a forged one, are refused.
    for token in [finished.token.as_str(), "glcbt-1_0123456789abcdef"] {
        let (status, body) = json_of(with_job_token("/job", token).await.expect("request")).await;
        assert_eq!(
            (status, body),
            (401, json!({"message": "401 Unauthorized"}))
        );
    }
    sim.control.set_job_status(1, running.id, "success", None);
    assert_eq!(
        with_job_token("/job", &running.token)
            .await
            .expect("request")
            .status(),
        401
    );
    sim.stop().await;
}

#[tokio::test]
async fn bridges_are_listed_separately() {
    let mut cfg = config(30);
    cfg.seed = 4;
    let sim = start(cfg).await;
    let bridge = sim
        .control
        .project_ids()
        .into_iter()
        .flat_map(|id| sim.control.jobs(id))
        .find(|j| j.bridge)
        .expect("the fleet has trigger jobs");
    let (status, bridges) = sim
        .get_json(&format!(
            "/projects/{}/pipelines/{}/bridges",
            bridge.project_id, bridge.pipeline_id
        ))
        .await;
    assert_eq!(status, 200);
    let listed = &bridges[0];
    assert_eq!(listed["id"], bridge.id);
    let keys: Vec<String> = listed
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert!(keys.contains(&"downstream_pipeline".to_owned()));
    assert!(!keys.contains(&"artifacts".to_owned()) && !keys.contains(&"runner".to_owned()));

    let (_, jobs) = sim
        .get_json(&format!(
            "/projects/{}/jobs?per_page=100",
            bridge.project_id
        ))
        .await;
    assert!(
        jobs.as_array()
            .expect("array")
            .iter()
            .all(|j| j["id"] != bridge.id)
    );
    let (status, _) = sim
        .get_json(&format!(
            "/projects/{}/jobs/{}",
            bridge.project_id, bridge.id
        ))
        .await;
    assert_eq!(status, 404, "bridges are not builds");
    let (_, pipeline_jobs) = sim
        .get_json(&format!(
            "/projects/{}/pipelines/{}/jobs?per_page=100",
            bridge.project_id, bridge.pipeline_id
        ))
        .await;
    assert!(
        pipeline_jobs
            .as_array()
            .expect("array")
            .iter()
            .all(|j| j["id"] != bridge.id)
    );
    sim.stop().await;
}
