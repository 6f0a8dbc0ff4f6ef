//! Groups in the simulator: the generated fleet's group tree, `GET /groups/:id/projects` over
//! HTTP (subgroups, archived, simple and full entities, ordering, counted offset pagination,
//! Grape's 400s, 404 `Group Not Found`, authentication), archived projects (read-only for job
//! changes, no new fleet pipelines) and the admin routes for groups and archiving.

mod sim_support;

use jobwarden::sim::{
    FLEET_GROUPS, FleetConfig, JobSpec, PipelineSpec, SimConfig, project_group, project_path,
};
use serde_json::{Value, json};
use sim_support::*;
use std::time::Duration;

const SEED: u64 = 42;

/// A frozen fleet of `projects` projects with seed [`SEED`].
fn fleet(projects: u32) -> SimConfig {
    SimConfig {
        seed: SEED,
        base_url_for_links: Some("https://gitlab.example.com".into()),
        ..config(projects)
    }
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|p| p["id"].as_u64().expect("an id"))
        .collect()
}

/// The fleet projects (of `1..=count`) whose group is one of `groups`, newest first.
fn expected(count: u64, groups: &[&str]) -> Vec<u64> {
    (1..=count)
        .rev()
        .filter(|id| groups.contains(&project_group(SEED, *id)))
        .collect()
}

#[tokio::test]
async fn the_fleet_is_a_group_tree_whose_first_projects_keep_their_paths() {
    let sim = start(fleet(40)).await;
    let groups = sim.control.groups();
    let paths: Vec<&str> = groups.iter().map(|g| g.full_path.as_str()).collect();
    assert_eq!(paths, FLEET_GROUPS);
    let id_of = |path: &str| {
        groups
            .iter()
            .find(|g| g.full_path == path)
            .expect("a group")
            .id
    };
    assert_eq!(groups[0].parent_id, None);
    assert_eq!(groups[0].name, "Fleet");
    for group in &groups[1..] {
        let (parent, _) = group.full_path.rsplit_once('/').expect("a subgroup");
        assert_eq!(group.parent_id, Some(id_of(parent)), "{}", group.full_path);
    }
    for id in 1..=3 {
        assert_eq!(
            sim.control.project_path(id).as_deref(),
            Some(format!("fleet/project-{id}").as_str())
        );
    }
    let mut used = std::collections::BTreeSet::new();
    for project in sim.control.projects() {
        assert_eq!(project.path, project_path(SEED, project.id));
        let group = project_group(SEED, project.id);
        assert_eq!(project.group_id, Some(id_of(group)));
        assert!(!project.archived);
        used.insert(group);
    }
    assert!(
        used.len() >= 6,
        "40 projects spread over the tree: {used:?}"
    );
    // Another seed places them elsewhere; the tree is the same.
    let moved = (4..=40).filter(|id| project_group(SEED, *id) != project_group(SEED + 1, *id));
    assert!(moved.count() > 10);

    // A fleet project in a subgroup, as GET /projects/:id shows it.
    let deep = (4..=40)
        .find(|id| project_group(SEED, *id) == "fleet/platform/tools")
        .expect("a project in fleet/platform/tools");
    let response = sim
        .get(&format!(
            "/projects/fleet%2Fplatform%2Ftools%2Fproject-{deep}"
        ))
        .await;
    let text = response.text().await.expect("body");
    let project: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(project["id"], deep);
    assert_eq!(
        project["path_with_namespace"],
        format!("fleet/platform/tools/project-{deep}")
    );
    assert_eq!(
        project["name_with_namespace"],
        format!("Fleet / Platform / Tools / project-{deep}")
    );
    assert_eq!(
        project["namespace"],
        json!({
            "id": id_of("fleet/platform/tools"),
            "name": "Tools",
            "path": "tools",
            "kind": "group",
            "full_path": "fleet/platform/tools",
            "parent_id": id_of("fleet/platform"),
            "avatar_url": null,
            "web_url": "https://gitlab.example.com/groups/fleet/platform/tools",
        })
    );
    assert_eq!(project["archived"], false);
    assert_eq!(
        project["ssh_url_to_repo"],
        format!("git@gitlab.example.com:fleet/platform/tools/project-{deep}.git")
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_groups_projects_with_and_without_its_subgroups_by_id_or_path() {
    let sim = start(fleet(40)).await;
    let platform = sim.control.resolve_group("fleet/platform").expect("group");

    let (status, direct) = sim
        .get_json("/groups/fleet%2Fplatform/projects?per_page=100")
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&direct), expected(40, &["fleet/platform"]));
    let (_, by_id) = sim
        .get_json(&format!("/groups/{platform}/projects?per_page=100"))
        .await;
    assert_eq!(by_id, direct);
    let (_, upper) = sim
        .get_json("/groups/FLEET%2FPlatform/projects?per_page=100")
        .await;
    assert_eq!(upper, direct, "full paths are case-insensitive");

    let (_, tree) = sim
        .get_json("/groups/fleet%2Fplatform/projects?per_page=100&include_subgroups=true")
        .await;
    let mut tree_ids = ids(&tree);
    assert_eq!(
        tree_ids,
        expected(
            40,
            &[
                "fleet/platform",
                "fleet/platform/tools",
                "fleet/platform/infra"
            ]
        ),
        "newest first across the subgroups"
    );
    tree_ids.sort_unstable();
    let (_, all) = sim
        .get_json("/groups/fleet/projects?per_page=100&include_subgroups=true")
        .await;
    assert_eq!(ids(&all), (1..=40).rev().collect::<Vec<_>>());
    let (_, root) = sim.get_json("/groups/fleet/projects?per_page=100").await;
    assert_eq!(ids(&root), expected(40, &["fleet"]));
    assert!(ids(&root).ends_with(&[3, 2, 1]));
    // `with_shared` is accepted either way: no project is shared with a group.
    let (_, unshared) = sim
        .get_json("/groups/fleet/projects?per_page=100&with_shared=false")
        .await;
    assert_eq!(unshared, root);
    sim.stop().await;
}

#[tokio::test]
async fn archived_projects_are_filtered_by_the_archived_parameter() {
    let sim = start(fleet(12)).await;
    let archive = |id: u64| {
        let control = sim.control.clone();
        async move { control.set_archived(id, true).expect("a project") }
    };
    assert!(archive(2).await.archived);
    let snapshot = archive(9).await;
    assert_eq!(snapshot.path, project_path(SEED, 9));
    let list = |query: &'static str| {
        let url = format!("/groups/fleet/projects?include_subgroups=true&per_page=100{query}");
        let sim = &sim;
        async move {
            let (status, body) = sim.get_json(&url).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let every = list("").await;
    assert_eq!(ids(&every), (1..=12).rev().collect::<Vec<_>>());
    let archived_flags: Vec<(u64, bool)> = every
        .as_array()
        .expect("array")
        .iter()
        .map(|p| (p["id"].as_u64().expect("id"), p["archived"] == true))
        .filter(|(_, archived)| *archived)
        .collect();
    assert_eq!(archived_flags, [(9, true), (2, true)]);
    assert_eq!(ids(&list("&archived=true").await), [9, 2]);
    let active = ids(&list("&archived=false").await);
    assert_eq!(active, [12, 11, 10, 8, 7, 6, 5, 4, 3, 1]);
    assert_eq!(ids(&list("&archived=0").await), active, "Grape's booleans");

    assert_eq!(
        ids(&list("&active=true").await),
        active,
        "newer GitLab's `active`"
    );
    assert_eq!(ids(&list("&active=false").await), [9, 2]);

    sim.control.set_archived(9, false).expect("a project");
    assert_eq!(ids(&list("&archived=true").await), [2]);
    let (status, body) = sim.get_json("/groups/fleet/projects?archived=maybe").await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "archived is invalid"}))
    );
    sim.stop().await;
}

#[tokio::test]
async fn simple_lists_basic_project_details_and_the_default_is_the_full_entity() {
    let sim = start(fleet(3)).await;
    let full = sim.get("/groups/fleet/projects").await;
    assert_eq!(full.status(), 200);
    let text = full.text().await.expect("body");
    let list: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(ids(&list), [3, 2, 1]);
    let first = &text[1..text.find("},{\"id\"").map_or(text.len() - 1, |end| end + 1)];
    let basic_keys = [
        "id",
        "description",
        "name",
        "name_with_namespace",
        "path",
        "path_with_namespace",
        "created_at",
        "default_branch",
        "tag_list",
        "topics",
        "ssh_url_to_repo",
        "http_url_to_repo",
        "web_url",
        "readme_url",
        "forks_count",
        "avatar_url",
        "star_count",
        "last_activity_at",
        "visibility",
        "namespace",
    ];
    let mut full_keys = basic_keys.to_vec();
    full_keys.extend([
        "empty_repo",
        "archived",
        "jobs_enabled",
        "builds_access_level",
    ]);
    assert_eq!(key_order(first), full_keys);
    assert_eq!(list[0]["path_with_namespace"], "fleet/project-3");
    assert_eq!(
        list[0]["web_url"],
        "https://gitlab.example.com/fleet/project-3"
    );
    assert_eq!(list[0]["visibility"], "private");
    // The whole entity equals GET /projects/:id.
    let (_, single) = sim.get_json("/projects/3").await;
    assert_eq!(list[0], single);

    let simple = sim.get("/groups/fleet/projects?simple=true").await;
    let text = simple.text().await.expect("body");
    let list: Value = serde_json::from_str(&text).expect("JSON");
    let first = &text[1..text.find("},{\"id\"").map_or(text.len() - 1, |end| end + 1)];
    assert_eq!(key_order(first), basic_keys);
    assert_eq!(list[2]["id"], 1);
    assert_eq!(list[2]["namespace"]["full_path"], "fleet");
    assert!(
        list[0].get("archived").is_none(),
        "the simple entity has no archived"
    );
    sim.stop().await;
}

#[tokio::test]
async fn ordering_sorting_and_grape_parameter_errors() {
    let sim = start(fleet(6)).await;
    for extra in ["fleet/zeta-tools", "fleet/alpha", "fleet/Mid"] {
        sim.control.add_project(extra).expect("a free path");
    }
    let order = |query: &'static str| {
        let url = format!("/groups/fleet/projects?per_page=100&{query}");
        let sim = &sim;
        async move {
            let (status, body) = sim.get_json(&url).await;
            assert_eq!(status, 200, "{query}: {body}");
            body.as_array()
                .expect("array")
                .iter()
                .map(|p| p["path"].as_str().expect("path").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let root: Vec<String> = expected(6, &["fleet"])
        .into_iter()
        .map(|id| format!("project-{id}"))
        .collect();
    let mut newest_first = vec!["Mid".to_owned(), "alpha".into(), "zeta-tools".into()];
    newest_first.extend(root.iter().cloned());
    assert_eq!(order("").await, newest_first, "created_at desc: by id");
    assert_eq!(order("order_by=created_at&sort=desc").await, newest_first);
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(order("order_by=id&sort=asc").await, oldest_first);
    assert_eq!(order("sort=asc").await, oldest_first);
    let mut by_name = newest_first.clone();
    by_name.sort_by_key(|n| n.to_lowercase());
    assert_eq!(order("order_by=name&sort=asc").await, by_name);
    assert_eq!(order("order_by=path&sort=asc").await, by_name);
    assert_eq!(order("order_by=similarity").await, by_name);
    by_name.reverse();
    assert_eq!(order("order_by=name").await, by_name);
    assert_eq!(order("search=ZETA").await, ["zeta-tools"]);
    assert_eq!(order("visibility=private").await.len(), newest_first.len());
    assert!(order("visibility=public").await.is_empty());
    assert!(order("starred=true").await.is_empty());
    assert_eq!(order("owned=true").await, newest_first);

    for (query, error) in [
        ("order_by=size", "order_by does not have a valid value"),
        ("sort=up", "sort does not have a valid value"),
        ("include_subgroups=perhaps", "include_subgroups is invalid"),
        ("simple=2", "simple is invalid"),
        ("with_shared=x", "with_shared is invalid"),
        (
            "visibility=secret",
            "visibility does not have a valid value",
        ),
        ("per_page=0", "per_page has a value not allowed"),
        ("page=x", "page is invalid"),
    ] {
        let (status, body) = sim
            .get_json(&format!("/groups/fleet/projects?{query}"))
            .await;
        assert_eq!((status, body), (400, json!({ "error": error })), "{query}");
    }
    // Parameters are checked before the group is looked up.
    let (status, _) = sim.get_json("/groups/nope/projects?sort=up").await;
    assert_eq!(status, 400);
    sim.stop().await;
}

#[tokio::test]
async fn offset_pages_are_counted_and_keyset_is_not_offered() {
    let sim = start(fleet(7)).await;
    let response = sim
        .get("/groups/fleet/projects?include_subgroups=true&per_page=3&page=2")
        .await;
    assert_eq!(response.status(), 200);
    for (name, value) in [
        ("x-page", "2"),
        ("x-per-page", "3"),
        ("x-next-page", "3"),
        ("x-prev-page", "1"),
        ("x-total", "7"),
        ("x-total-pages", "3"),
    ] {
        assert_eq!(header(&response, name).as_deref(), Some(value), "{name}");
    }
    let link = header(&response, "link").expect("link");
    assert_eq!(link_rels(&link), ["prev", "next", "first", "last"]);
    assert_eq!(
        next_link(Some(&link)).as_deref(),
        Some(
            "https://gitlab.example.com/api/v4/groups/fleet/projects?include_subgroups=true&page=3&per_page=3"
        )
    );
    let (_, page) = json_of(response).await;
    assert_eq!(ids(&page), [4, 3, 2]);

    let last = sim
        .get("/groups/fleet/projects?include_subgroups=true&per_page=3&page=3")
        .await;
    assert_eq!(header(&last, "x-next-page").as_deref(), Some(""));
    assert_eq!(ids(&json_of(last).await.1), [1]);
    let (status, past) = sim
        .get_json("/groups/fleet/projects?include_subgroups=true&per_page=3&page=9")
        .await;
    assert_eq!((status, past), (200, json!([])));

    // `pagination=keyset` is not supported here: GitLab answers with offset pages.
    let keyset = sim
        .get("/groups/fleet/projects?include_subgroups=true&pagination=keyset&order_by=id&sort=desc&per_page=3")
        .await;
    assert_eq!(keyset.status(), 200);
    assert_eq!(header(&keyset, "x-next-page").as_deref(), Some("2"));
    assert_eq!(header(&keyset, "x-total").as_deref(), Some("7"));
    assert_eq!(ids(&json_of(keyset).await.1), [7, 6, 5]);
    // Default page size: 20.
    let (_, twenty) = sim
        .get_json("/groups/fleet/projects?include_subgroups=true")
        .await;
    assert_eq!(ids(&twenty).len(), 7);
    sim.stop().await;
}

#[tokio::test]
async fn unknown_invisible_or_non_group_paths_are_404_group_not_found() {
    let sim = start(fleet(3)).await;
    let not_found = json!({"message": "404 Group Not Found"});
    for path in [
        "/groups/nope/projects",
        "/groups/999/projects",
        // A project's path is not a group's.
        "/groups/fleet%2Fproject-1/projects",
        "/groups/fleet%2Fplatform%2Fnope/projects",
    ] {
        assert_eq!(sim.get_json(path).await, (404, not_found.clone()), "{path}");
    }
    // Without credentials only public groups are visible, and none is.
    let anonymous = sim
        .client
        .get(sim.api("/groups/fleet/projects"))
        .send()
        .await
        .expect("request");
    assert_eq!(json_of(anonymous).await, (404, not_found.clone()));
    let wrong = sim
        .client
        .get(sim.api("/groups/fleet/projects"))
        .header("PRIVATE-TOKEN", "glpat-wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(
        json_of(wrong).await,
        (401, json!({"message": "401 Unauthorized"}))
    );
    let bearer = sim
        .client
        .get(sim.api("/groups/fleet/projects?per_page=1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(bearer.status(), 200);
    assert_eq!(
        sim.control.counters().get("GET /groups/:id/projects"),
        Some(&7)
    );
    sim.stop().await;
}

#[tokio::test]
async fn an_archived_project_is_read_only_and_gets_no_new_fleet_pipelines() {
    let sim = start(SimConfig {
        fleet: FleetConfig {
            new_pipeline_every: Some(Duration::from_secs(600)),
            max_pipelines_per_project: 1000,
            ..FleetConfig::default()
        },
        ..fleet(2)
    })
    .await;
    let pipeline = sim.control.add_pipeline(
        1,
        PipelineSpec::new(
            "main",
            vec![
                JobSpec::new("rspec", "test", "failed"),
                JobSpec::new("deploy", "deploy", "manual").manual(),
            ],
        ),
    );
    let (failed, manual) = (pipeline.job_ids[0], pipeline.job_ids[1]);
    sim.control.set_archived(1, true).expect("a project");
    let forbidden = json!({"message": "403 Forbidden"});
    for path in [
        format!("/projects/1/jobs/{failed}/retry"),
        format!("/projects/1/jobs/{failed}/cancel"),
        format!("/projects/1/jobs/{failed}/erase"),
        format!("/projects/1/jobs/{manual}/play"),
        format!("/projects/1/jobs/{failed}/artifacts/keep"),
    ] {
        assert_eq!(
            sim.post_json(&path).await,
            (403, forbidden.clone()),
            "{path}"
        );
    }
    let delete = sim
        .request(
            reqwest::Method::DELETE,
            &format!("/projects/1/jobs/{failed}/artifacts"),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(delete.status(), 403);
    // Reading still works, and an unknown job is still 404 first.
    assert_eq!(
        sim.get(&format!("/projects/1/jobs/{failed}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        sim.post("/projects/1/jobs/999999/retry").await.status(),
        404
    );
    let (_, project) = sim.get_json("/projects/1").await;
    assert_eq!(project["archived"], true);

    let before = [1, 2].map(|id| sim.control.pipelines(id).len());
    sim.control.advance(Duration::from_secs(6 * 3600));
    let after = [1, 2].map(|id| sim.control.pipelines(id).len());
    assert_eq!(
        after[0], before[0],
        "no new pipelines in an archived project"
    );
    assert!(
        after[1] > before[1],
        "the other project goes on: {before:?} {after:?}"
    );

    sim.control.set_archived(1, false).expect("a project");
    let (status, retried) = sim
        .post_json(&format!("/projects/1/jobs/{failed}/retry"))
        .await;
    assert_eq!(status, 201, "{retried}");
    sim.stop().await;
}

#[tokio::test]
async fn the_admin_endpoint_adds_groups_and_projects_and_archives() {
    let sim = start(fleet(1)).await;
    let admin = |path: &str| sim.url(path);
    let post = |path: &str, body: Value| {
        let request = sim.client.post(admin(path)).json(&body);
        async move { json_of(request.send().await.expect("request")).await }
    };
    let (status, group) = post("/-/sim/groups", json!({"path": "fleet/new/deeper-one"})).await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["full_path"], "fleet/new/deeper-one");
    assert_eq!(group["name"], "Deeper One");
    let new = sim
        .control
        .resolve_group("fleet/new")
        .expect("the parent was made");
    assert_eq!(group["parent_id"], new);
    let (status, _) = post("/-/sim/groups", json!({"path": "fleet/new"})).await;
    assert_eq!(status, 409);
    let (status, _) = post("/-/sim/groups", json!({"path": "fleet/project-1"})).await;
    assert_eq!(status, 409, "a project's path");
    let (status, _) = post("/-/sim/groups", json!({"name": "x"})).await;
    assert_eq!(status, 400);

    let (status, project) = post(
        "/-/sim/projects",
        json!({"group": "fleet/new", "path": "svc", "archived": true}),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    assert_eq!(project["path"], "fleet/new/svc");
    assert_eq!(project["group_id"], new);
    assert_eq!(project["archived"], true);
    let svc = project["id"].as_u64().expect("id");
    let (status, _) = post(
        "/-/sim/projects",
        json!({"group": new.to_string(), "path": "svc"}),
    )
    .await;
    assert_eq!(status, 409, "taken");
    let (status, body) = post("/-/sim/projects", json!({"group": "nope", "path": "x"})).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "unknown group nope"}))
    );
    let (status, made) = post("/-/sim/projects", json!({"path": "elsewhere/deep/app"})).await;
    assert_eq!(status, 201);
    assert!(made["group_id"].as_u64().is_some());
    assert!(sim.control.resolve_group("elsewhere/deep").is_some());

    let (status, listed) = json_of(
        sim.client
            .get(admin("/-/sim/groups"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    let full_paths: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|g| g["full_path"].as_str().expect("path"))
        .collect();
    assert!(full_paths.contains(&"fleet/new/deeper-one") && full_paths.contains(&"elsewhere"));

    let (status, unarchived) = post(&format!("/-/sim/projects/{svc}/unarchive"), json!({})).await;
    assert_eq!(
        (status, unarchived["archived"].clone()),
        (200, json!(false))
    );
    let (status, archived) = post("/-/sim/projects/fleet%2Fnew%2Fsvc/archive", json!({})).await;
    assert_eq!((status, archived["archived"].clone()), (200, json!(true)));
    let (status, _) = post("/-/sim/projects/999/archive", json!({})).await;
    assert_eq!(status, 404);
    let (_, all) = json_of(
        sim.client
            .get(admin("/-/sim/projects"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        all[0],
        json!({"id": 1, "path": "fleet/project-1", "group_id": 1, "archived": false})
    );

    let (_, in_group) = sim
        .get_json("/groups/fleet%2Fnew/projects?include_subgroups=true&archived=true")
        .await;
    assert_eq!(ids(&in_group), [svc]);
    sim.stop().await;
}

#[tokio::test]
async fn a_group_reads_with_its_own_projects_by_id_or_path() {
    let sim = start(fleet(20)).await;
    let apps = sim.control.resolve_group("fleet/apps").expect("a group");
    let fleet_id = sim.control.resolve_group("fleet").expect("a group");
    let response = sim.get("/groups/fleet%2Fapps").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert_eq!(
        key_order(&text),
        [
            "id",
            "web_url",
            "name",
            "path",
            "description",
            "visibility",
            "lfs_enabled",
            "avatar_url",
            "request_access_enabled",
            "full_name",
            "full_path",
            "created_at",
            "parent_id",
            "shared_with_groups",
            "projects",
            "shared_projects",
        ]
    );
    let group: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(group["id"], apps);
    assert_eq!(group["name"], "Apps");
    assert_eq!(group["full_name"], "Fleet / Apps");
    assert_eq!(group["full_path"], "fleet/apps");
    assert_eq!(group["parent_id"], fleet_id);
    assert_eq!(
        group["web_url"],
        "https://gitlab.example.com/groups/fleet/apps"
    );
    assert_eq!(ids(&group["projects"]), expected(20, &["fleet/apps"]));
    assert_eq!(group["shared_projects"], json!([]));
    let (_, by_id) = sim.get_json(&format!("/groups/{apps}")).await;
    assert_eq!(by_id, group);
    let (_, bare) = sim.get_json("/groups/fleet?with_projects=false").await;
    assert!(bare.get("projects").is_none() && bare.get("shared_projects").is_none());
    assert_eq!(bare["parent_id"], Value::Null);
    assert_eq!(
        sim.get_json("/groups/nope").await,
        (404, json!({"message": "404 Group Not Found"}))
    );
    assert_eq!(
        sim.get_json("/groups/fleet?with_projects=many").await,
        (400, json!({"error": "with_projects is invalid"}))
    );
    sim.stop().await;
}
