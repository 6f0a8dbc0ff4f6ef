//! Pagination (offset and keyset), scope forms and rate limits, as a client sees them.

mod sim_support;

use jobwarden::sim::SimConfig;
use serde_json::{Value, json};
use sim_support::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|j| j["id"].as_u64().expect("id"))
        .collect()
}

/// A fleet with enough jobs for several pages.
fn fleet() -> SimConfig {
    let mut cfg = config(2);
    cfg.fleet.pipelines_per_project = 8;
    cfg
}

#[tokio::test]
async fn offset_pages_of_the_project_list_cover_every_build_once() {
    let sim = start(fleet()).await;
    let expected: Vec<u64> = sim
        .control
        .jobs(1)
        .into_iter()
        .rev()
        .filter(|j| !j.bridge)
        .map(|j| j.id)
        .collect();
    assert!(expected.len() > 30);

    let mut url = sim.api("/projects/1/jobs?per_page=7");
    let mut seen = Vec::new();
    for page in 1.. {
        assert!(page < 100, "pagination does not end");
        let response = sim
            .client
            .get(&url)
            .header("PRIVATE-TOKEN", TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-page"), Some(page.to_string()));
        assert_eq!(header(&response, "x-per-page").as_deref(), Some("7"));
        assert_eq!(
            header(&response, "x-total"),
            None,
            "no counts on the project list"
        );
        assert_eq!(header(&response, "x-total-pages"), None);
        let expected_prev = if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        };
        assert_eq!(header(&response, "x-prev-page"), Some(expected_prev));
        let link = header(&response, "link").expect("link");
        let rels = link_rels(&link);
        assert!(!rels.contains(&"last".to_owned()));
        assert!(rels.contains(&"first".to_owned()));
        let next = next_link(Some(&link));
        assert_eq!(
            header(&response, "x-next-page")
                .expect("x-next-page")
                .is_empty(),
            next.is_none()
        );
        let (_, body) = json_of(response).await;
        seen.extend(ids(&body));
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(seen, expected);

    let (status, past) = sim.get_json("/projects/1/jobs?page=999").await;
    assert_eq!((status, past), (200, json!([])));
    let clamped = sim.get("/projects/1/jobs?per_page=500").await;
    assert_eq!(header(&clamped, "x-per-page").as_deref(), Some("100"));
    sim.stop().await;
}

#[tokio::test]
async fn keyset_pages_of_the_project_list() {
    let sim = start(fleet()).await;
    let expected: Vec<u64> = sim
        .control
        .jobs(2)
        .into_iter()
        .rev()
        .filter(|j| !j.bridge && j.status == "success")
        .map(|j| j.id)
        .collect();
    assert!(expected.len() > 10);
    let mut url =
        sim.api("/projects/fleet%2Fproject-2/jobs?pagination=keyset&per_page=4&scope[]=success");
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 100, "pagination does not end");
        let response = sim
            .client
            .get(&url)
            .header("PRIVATE-TOKEN", TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        for absent in [
            "x-page",
            "x-per-page",
            "x-next-page",
            "x-prev-page",
            "x-total",
        ] {
            assert_eq!(header(&response, absent), None, "{absent}");
        }
        let link = header(&response, "link");
        if let Some(l) = &link {
            assert_eq!(link_rels(l), ["next"]);
            assert!(l.contains("cursor="));
        }
        let next = next_link(link.as_deref());
        let (_, body) = json_of(response).await;
        seen.extend(ids(&body));
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(seen, expected);
    sim.stop().await;
}

#[tokio::test]
async fn pipeline_lists_are_counted() {
    let sim = start(fleet()).await;
    let pipeline = sim
        .control
        .pipelines(1)
        .into_iter()
        .last()
        .expect("pipelines");
    let builds = sim
        .control
        .jobs(1)
        .into_iter()
        .filter(|j| j.pipeline_id == pipeline.id && !j.bridge && !j.retried)
        .count();
    let response = sim
        .get(&format!(
            "/projects/1/pipelines/{}/jobs?per_page=2&page=2",
            pipeline.id
        ))
        .await;
    assert_eq!(header(&response, "x-total"), Some(builds.to_string()));
    assert_eq!(
        header(&response, "x-total-pages"),
        Some(builds.div_ceil(2).to_string())
    );
    let link = header(&response, "link").expect("link");
    assert_eq!(link_rels(&link), ["prev", "next", "first", "last"]);
    assert!(link.contains(&format!(
        "page={}&per_page=2>; rel=\"last\"",
        builds.div_ceil(2)
    )));
    let (_, page) = json_of(response).await;
    let ids = ids(&page);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "id DESC");

    let response = sim
        .get(&format!("/projects/1/pipelines/{}/bridges", pipeline.id))
        .await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-total").is_some());
    sim.stop().await;
}

#[tokio::test]
async fn scope_accepts_string_array_and_hash_forms() {
    let sim = start(fleet()).await;
    let all = sim.control.jobs(1);
    let wanted = |statuses: &[&str]| -> BTreeSet<u64> {
        all.iter()
            .filter(|j| !j.bridge && statuses.contains(&j.status.as_str()))
            .map(|j| j.id)
            .collect()
    };
    let got = |v: Value| -> BTreeSet<u64> { ids(&v).into_iter().collect() };
    let (_, single) = sim
        .get_json("/projects/1/jobs?scope=failed&per_page=100")
        .await;
    assert_eq!(got(single), wanted(&["failed"]));
    let (_, array) = sim
        .get_json("/projects/1/jobs?scope%5B%5D=failed&scope%5B%5D=success&per_page=100")
        .await;
    assert_eq!(got(array), wanted(&["failed", "success"]));
    let (_, hash) = sim
        .get_json("/projects/1/jobs?scope[0]=skipped&scope[1]=manual&per_page=100")
        .await;
    assert_eq!(got(hash), wanted(&["skipped", "manual"]));
    sim.stop().await;
}

#[tokio::test]
async fn the_jobs_list_limit_answers_429_without_headers_until_the_minute_passes() {
    let mut cfg = config(1);
    cfg.jobs_list_rate_limit_per_minute = 5;
    let sim = start(cfg).await;
    for _ in 0..5 {
        assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);
    }
    let throttled = sim.get("/projects/1/jobs").await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(header(&throttled, "retry-after"), None);
    assert!(
        throttled
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("ratelimit"))
    );
    let (_, body) = json_of(throttled).await;
    assert_eq!(
        body,
        json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}})
    );
    // The limit is checked before the project is looked up.
    assert_eq!(sim.get("/projects/404/jobs").await.status(), 429);
    // Only the list endpoint is limited.
    assert_eq!(sim.get("/projects/1/pipelines/1/jobs").await.status(), 200);
    sim.control.advance(Duration::from_secs(60));
    assert_eq!(sim.get("/projects/1/jobs").await.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn the_instance_throttle_sends_rate_limit_headers_and_plain_text_429() {
    let mut cfg = config(1);
    cfg.authenticated_api_rate_limit_per_minute = 3;
    let sim = start(cfg).await;
    let reset = (t0().as_second() / 60 + 1) * 60;
    for observed in 1..=3 {
        let response = sim.get("/projects/1/jobs").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-name").as_deref(),
            Some("throttle_authenticated_api")
        );
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "ratelimit-observed"),
            Some(observed.to_string())
        );
        assert_eq!(
            header(&response, "ratelimit-remaining"),
            Some((3 - observed).to_string())
        );
        assert_eq!(
            header(&response, "ratelimit-reset"),
            Some(reset.to_string())
        );
        assert_eq!(header(&response, "retry-after"), None);
    }
    let throttled = sim.get("/projects/1/jobs/1").await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(
        header(&throttled, "content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(header(&throttled, "retry-after").as_deref(), Some("60"));
    assert_eq!(
        header(&throttled, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&throttled, "ratelimit-resettime").as_deref(),
        Some("Mon, 23 Nov 2026 10:01:00 GMT")
    );
    assert_eq!(throttled.text().await.expect("text"), "Retry later\n");
    // Unauthenticated answers carry no rate-limit headers.
    let anonymous = sim
        .client
        .get(sim.api("/projects/1/jobs"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(header(&anonymous, "ratelimit-limit"), None);
    sim.stop().await;
}
