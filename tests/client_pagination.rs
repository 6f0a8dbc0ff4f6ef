//! Paging through listings against a mock GitLab: offset and keyset, stopping early, servers
//! whose pages never end, and items that do not decode.

mod support;

use futures::{StreamExt, TryStreamExt};
use jobwarden::gitlab::{
    GitLabClient, GitLabError, Job, JobStatus, ListJobsQuery, PaginationMode, PipelineJobsQuery,
    ProjectRef,
};
use support::{MockServer, jobs_page, json, test_client, test_config};

fn page_param(request: &support::Recorded) -> u64 {
    request
        .query_values("page")
        .first()
        .map_or(1, |p| p.parse().unwrap())
}

#[tokio::test]
async fn offset_pages_follow_x_next_page_until_it_is_empty() {
    // 250 jobs, ids 250..1, newest first; no X-Total (as on the project jobs list).
    let server = MockServer::start(|request, _| {
        let page = page_param(request);
        let first = 250 - (page - 1) * 100;
        let count = first.min(100);
        let next = if page < 3 {
            (page + 1).to_string()
        } else {
            String::new()
        };
        json(
            200,
            &[
                ("x-page", &page.to_string()),
                ("x-per-page", "100"),
                ("x-next-page", &next),
                ("x-prev-page", ""),
            ],
            &jobs_page(first, count),
        )
    })
    .await;
    let client = test_client(&server);
    let query = ListJobsQuery::with_scopes([JobStatus::Failed, JobStatus::Canceled]);
    let jobs: Vec<Job> = client
        .list_project_jobs(&ProjectRef::parse("group/project"), &query)
        .try_collect()
        .await
        .unwrap();

    assert_eq!(jobs.len(), 250);
    assert!(jobs.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.path, "/api/v4/projects/group%2Fproject/jobs");
        assert_eq!(request.query_values("scope[]"), ["failed", "canceled"]);
        assert!(
            request.query_values("scope").is_empty(),
            "never a bare scope="
        );
        assert_eq!(request.query_values("per_page"), ["100"]);
        assert_eq!(page_param(request), i as u64 + 1);
    }
    // The brackets are on the wire as GitLab's documentation writes them.
    assert!(
        requests[0]
            .query
            .contains("scope[]=failed&scope[]=canceled")
    );
}

#[tokio::test]
async fn offset_pages_can_follow_link_headers_to_our_own_host() {
    // Pipeline jobs: this server only sends Link, with GitLab's external host in it.
    let server = MockServer::start(|request, _| {
        let page = page_param(request);
        let mut headers = vec![];
        let link;
        if page == 1 {
            link = format!(
                "<https://gitlab.example.com/api/v4/projects/9/pipelines/5/jobs?{}&page=2>; rel=\"next\", <https://gitlab.example.com/api/v4/projects/9/pipelines/5/jobs?page=1>; rel=\"first\"",
                request.query
            );
            headers.push(("link", link.as_str()));
        }
        json(200, &headers, &jobs_page(300 - page * 100, 100))
    })
    .await;
    let client = test_client(&server);
    let jobs: Vec<Job> = client
        .list_pipeline_jobs(
            &ProjectRef::Id(9),
            5,
            &PipelineJobsQuery::every_attempt().with_scopes([JobStatus::Success]),
        )
        .try_collect()
        .await
        .unwrap();

    assert_eq!(jobs.len(), 200);
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "the external host in Link is not contacted"
    );
    for request in &requests {
        assert_eq!(request.path, "/api/v4/projects/9/pipelines/5/jobs");
        assert_eq!(request.query_values("include_retried"), ["true"]);
        assert_eq!(request.query_values("scope[]"), ["success"]);
    }
    assert_eq!(page_param(&requests[1]), 2);
}

#[tokio::test]
async fn keyset_pages_follow_the_cursor_and_end_without_a_link() {
    let server = MockServer::start(|request, _| {
        let cursor = request.query_values("cursor");
        let (first, next_cursor) = match cursor.first().map(String::as_str) {
            None => (300, Some("eyJpZCI6IjIwMSIsIl9rZCI6Im4ifQ==")),
            Some("eyJpZCI6IjIwMSIsIl9rZCI6Im4ifQ==") => (200, Some("eyJpZCI6IjEwMSIsIl9rZCI6Im4ifQ==")),
            Some(_) => (100, None),
        };
        let link = next_cursor.map(|c| {
            format!(
                "<https://gitlab.example.com/api/v4/projects/g%2Fp/jobs?cursor={}&order_by=id&pagination=keyset&per_page=100&sort=desc>; rel=\"next\"",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            )
        });
        let headers: Vec<(&str, &str)> = link.iter().map(|l| ("link", l.as_str())).collect();
        json(200, &headers, &jobs_page(first, 100))
    })
    .await;
    let client = test_client(&server);
    let query = ListJobsQuery::all().paginated(PaginationMode::Keyset);
    let jobs: Vec<Job> = client
        .list_project_jobs(&ProjectRef::parse("g/p"), &query)
        .try_collect()
        .await
        .unwrap();

    assert_eq!(jobs.len(), 300);
    assert_eq!(jobs.first().map(|j| j.id), Some(300));
    assert_eq!(jobs.last().map(|j| j.id), Some(1));
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.path, "/api/v4/projects/g%2Fp/jobs");
        assert_eq!(request.query_values("pagination"), ["keyset"]);
        assert_eq!(request.query_values("order_by"), ["id"]);
        assert_eq!(request.query_values("sort"), ["desc"]);
        assert_eq!(request.query_values("per_page"), ["100"]);
    }
    assert!(requests[0].query_values("cursor").is_empty());
    assert_eq!(
        requests[1].query_values("cursor"),
        ["eyJpZCI6IjIwMSIsIl9rZCI6Im4ifQ=="]
    );
}

#[tokio::test]
async fn a_consumer_that_stops_early_stops_paging() {
    // A project with (practically) endless history.
    let server = MockServer::start(|request, _| {
        let page = page_param(request);
        json(
            200,
            &[("x-next-page", &(page + 1).to_string())],
            &jobs_page(1_000_000 - (page - 1) * 100, 100),
        )
    })
    .await;
    let client = test_client(&server);
    let stream = client.list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all());
    let first_150: Vec<Job> = stream.take(150).try_collect().await.unwrap();
    assert_eq!(first_150.len(), 150);
    assert_eq!(
        server.request_count(),
        2,
        "only the pages that were consumed"
    );

    // Nothing is fetched before the first poll either.
    let stream = client.list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all());
    tokio::task::yield_now().await;
    assert_eq!(server.request_count(), 2);
    let mut stream = Box::pin(stream);
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_server_that_repeats_a_page_is_caught() {
    // Every page claims the next one is page 2.
    let server =
        MockServer::start(|_, _| json(200, &[("x-next-page", "2")], &jobs_page(50, 1))).await;
    let client = test_client(&server);
    let results: Vec<Result<Job, GitLabError>> = client
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all())
        .collect()
        .await;

    assert_eq!(server.request_count(), 2);
    assert_eq!(results.len(), 3, "two jobs, then the error, then the end");
    let err = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), "pagination");
    assert!(err.to_string().contains("/projects/:id/jobs"), "{err}");
}

#[tokio::test]
async fn a_server_whose_pages_never_end_is_capped() {
    let server = MockServer::start(|request, _| {
        let page = page_param(request);
        json(
            200,
            &[("x-next-page", &(page + 1).to_string())],
            &serde_json::json!([]),
        )
    })
    .await;
    let mut config = test_config(&server);
    config.max_pages = 5;
    let client = GitLabClient::new(config).unwrap();
    let results: Vec<Result<Job, GitLabError>> = client
        .list_pipeline_bridges(&ProjectRef::Id(1), 3, &[])
        .collect()
        .await;

    assert_eq!(server.request_count(), 5);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap_err().kind(), "pagination");
    assert_eq!(
        server.requests()[0].path,
        "/api/v4/projects/1/pipelines/3/bridges"
    );
}

#[tokio::test]
async fn an_item_that_does_not_decode_is_an_error_in_its_place() {
    let server = MockServer::start(|_, _| {
        let mut page = jobs_page(3, 3);
        page[1]["id"] = serde_json::json!("not a number");
        json(200, &[("x-next-page", "")], &page)
    })
    .await;
    let client = test_client(&server);
    let results: Vec<Result<Job, GitLabError>> = client
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all())
        .collect()
        .await;

    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().id, 3);
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), "decode");
    assert!(err.to_string().contains("item 1 of page 1"), "{err}");
    assert_eq!(results[2].as_ref().unwrap().id, 1);
}

#[tokio::test]
async fn a_page_that_is_not_an_array_ends_the_listing_with_a_decode_error() {
    let server =
        MockServer::start(|_, _| json(200, &[], &serde_json::json!({"message": "surprise"}))).await;
    let client = test_client(&server);
    let results: Vec<Result<Job, GitLabError>> = client
        .list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all())
        .collect()
        .await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap_err().kind(), "decode");
}

#[tokio::test]
async fn listing_streams_can_be_spawned() {
    let server =
        MockServer::start(|_, _| json(200, &[("x-next-page", "")], &jobs_page(2, 2))).await;
    let client = test_client(&server);
    let stream = client.list_project_jobs(&ProjectRef::Id(1), &ListJobsQuery::all());
    let count = tokio::spawn(async move { stream.try_collect::<Vec<Job>>().await })
        .await
        .unwrap()
        .unwrap()
        .len();
    assert_eq!(count, 2);
}
