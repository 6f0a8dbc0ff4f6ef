//! The GitLab client's Groups API call, `list_group_projects`, against the simulator over
//! loopback HTTP: a group by id and by URL-encoded path, with and without its subgroups,
//! archived projects filtered, the simple entity, offset pages followed lazily, each project
//! once when the list shifts between pages, and 404 `Group Not Found` as a typed error.

use futures::{StreamExt, TryStreamExt};
use jobwarden::gitlab::{
    ClientConfig, Credential, GitLabClient, GitLabError, GroupProjectsQuery, GroupRef, Project,
    ProjectOrder, SortDirection,
};
use jobwarden::sim::{LoggedRequest, SimConfig, SimControl, SimHandle, project_group};
use std::time::Duration;

mod sim_support;

use sim_support::TOKEN;

const SEED: u64 = 7;

/// A frozen fleet of `projects` projects on a manual clock.
fn fleet(projects: u32) -> SimConfig {
    SimConfig {
        seed: SEED,
        ..sim_support::config(projects)
    }
}

struct Lab {
    sim: SimHandle,
    control: SimControl,
}

impl Lab {
    async fn start(config: SimConfig) -> Lab {
        let sim_support::Sim {
            handle, control, ..
        } = sim_support::start(config).await;
        Lab {
            sim: handle,
            control,
        }
    }

    fn client(&self) -> GitLabClient {
        let mut config = ClientConfig::new(
            self.sim.base_url(),
            Some(Credential::PrivateToken(TOKEN.into())),
        );
        config.timeout = Duration::from_secs(10);
        GitLabClient::new(config).expect("a valid client configuration")
    }

    /// The logged `GET /groups/:id/projects` requests.
    fn listings(&self) -> Vec<LoggedRequest> {
        self.control
            .request_log()
            .into_iter()
            .filter(|r| r.endpoint == "/groups/:id/projects")
            .collect()
    }

    async fn stop(self) {
        self.sim.shutdown().await;
    }
}

async fn list(
    client: &GitLabClient,
    group: &GroupRef,
    query: &GroupProjectsQuery,
) -> Result<Vec<Project>, GitLabError> {
    client.list_group_projects(group, query).try_collect().await
}

fn ids(projects: &[Project]) -> Vec<u64> {
    projects.iter().map(|p| p.id).collect()
}

/// The fleet projects (of `1..=count`) in one of `groups`, by ascending id.
fn fleet_ids(count: u64, groups: &[&str]) -> Vec<u64> {
    (1..=count)
        .filter(|id| groups.contains(&project_group(SEED, *id)))
        .collect()
}

#[tokio::test]
async fn subgroups_are_included_only_when_asked_and_a_group_reads_the_same_by_id_and_path() {
    let lab = Lab::start(fleet(30)).await;
    let client = lab.client();
    let apps = GroupRef::parse("fleet/apps");
    let by_id = GroupRef::Id(lab.control.resolve_group("fleet/apps").expect("a group"));
    let ascending = GroupProjectsQuery::new().ordered(ProjectOrder::Id, SortDirection::Asc);

    let direct = list(&client, &apps, &ascending).await.expect("listed");
    assert_eq!(ids(&direct), fleet_ids(30, &["fleet/apps"]));
    for project in &direct {
        assert_eq!(
            project.path_with_namespace,
            format!("fleet/apps/project-{}", project.id)
        );
        let namespace = project.namespace.as_ref().expect("a namespace");
        assert_eq!(namespace.full_path, "fleet/apps");
        assert_eq!(namespace.kind, "group");
        assert!(!project.archived);
    }
    assert_eq!(
        list(&client, &by_id, &ascending).await.expect("listed"),
        direct
    );

    let tree = list(&client, &apps, &ascending.clone().include_subgroups(true))
        .await
        .expect("listed");
    let expected = fleet_ids(30, &["fleet/apps", "fleet/apps/web", "fleet/apps/mobile"]);
    assert_eq!(ids(&tree), expected);
    assert!(tree.len() > direct.len(), "the subgroups hold projects too");

    // GitLab's default order (newest first), the whole fleet from the top group.
    let everything = list(
        &client,
        &GroupRef::parse("fleet"),
        &GroupProjectsQuery::new().include_subgroups(true),
    )
    .await
    .expect("listed");
    assert_eq!(ids(&everything), (1..=30).rev().collect::<Vec<_>>());

    let logged = lab.listings();
    assert_eq!(logged.len(), 4, "one page each");
    assert_eq!(logged[0].path, "/api/v4/groups/fleet%2Fapps/projects");
    assert_eq!(logged[0].query, "order_by=id&sort=asc&per_page=100");
    assert_eq!(
        logged[2].query,
        "include_subgroups=true&order_by=id&sort=asc&per_page=100"
    );
    lab.stop().await;
}

#[tokio::test]
async fn archived_projects_are_filtered_out_or_in() {
    let lab = Lab::start(fleet(10)).await;
    for id in [3, 8] {
        lab.control.set_archived(id, true).expect("a project");
    }
    let client = lab.client();
    let fleet = GroupRef::parse("fleet");
    let tree = GroupProjectsQuery::new().include_subgroups(true);

    let every = list(&client, &fleet, &tree).await.expect("listed");
    let archived: Vec<u64> = every.iter().filter(|p| p.archived).map(|p| p.id).collect();
    assert_eq!(archived, [8, 3]);
    let only_archived = list(&client, &fleet, &tree.clone().archived(true))
        .await
        .expect("listed");
    assert_eq!(ids(&only_archived), [8, 3]);
    assert!(only_archived.iter().all(|p| p.archived));
    let active = list(&client, &fleet, &GroupProjectsQuery::active_tree())
        .await
        .expect("listed");
    assert_eq!(ids(&active), [1, 2, 4, 5, 6, 7, 9, 10]);
    assert!(active.iter().all(|p| !p.archived));

    // The simple entity says nothing of `archived`: the filter does.
    let simple = list(&client, &fleet, &tree.clone().archived(true).simple())
        .await
        .expect("listed");
    assert_eq!(ids(&simple), [8, 3]);
    assert!(simple.iter().all(|p| p.archived));
    let simple_active = list(&client, &fleet, &GroupProjectsQuery::active_tree().simple())
        .await
        .expect("listed");
    assert_eq!(ids(&simple_active), ids(&active));
    assert!(simple_active.iter().all(|p| !p.archived));
    let queries: Vec<String> = lab.listings().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries[3],
        "include_subgroups=true&archived=true&simple=true&per_page=100"
    );

    // Without a filter a simple listing could not tell: refused before any request.
    let requests = lab.control.request_log().len();
    let err = list(&client, &fleet, &tree.clone().simple())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "invalid_argument", "{err}");
    assert_eq!(lab.control.request_log().len(), requests);
    lab.stop().await;
}

#[tokio::test]
async fn pages_are_followed_lazily_across_the_whole_listing() {
    let lab = Lab::start(fleet(11)).await;
    let client = lab.client();
    let fleet = GroupRef::parse("fleet");
    let query = GroupProjectsQuery::new()
        .include_subgroups(true)
        .ordered(ProjectOrder::Id, SortDirection::Asc)
        .per_page(3);

    // Two items need one page.
    let first_two: Vec<Project> = client
        .list_group_projects(&fleet, &query)
        .take(2)
        .try_collect()
        .await
        .expect("listed");
    assert_eq!(ids(&first_two), [1, 2]);
    assert_eq!(lab.listings().len(), 1);

    lab.control.reset_log();
    let all = list(&client, &fleet, &query).await.expect("listed");
    assert_eq!(ids(&all), (1..=11).collect::<Vec<_>>());
    let pages: Vec<String> = lab.listings().into_iter().map(|r| r.query).collect();
    assert_eq!(
        pages,
        [
            "include_subgroups=true&order_by=id&sort=asc&per_page=3",
            "include_subgroups=true&order_by=id&sort=asc&per_page=3&page=2",
            "include_subgroups=true&order_by=id&sort=asc&per_page=3&page=3",
            "include_subgroups=true&order_by=id&sort=asc&per_page=3&page=4",
        ]
    );
    lab.stop().await;
}

#[tokio::test]
async fn a_project_created_between_two_pages_does_not_repeat_one() {
    let lab = Lab::start(fleet(0)).await;
    for name in ["a", "b", "c", "d", "e"] {
        lab.control
            .add_project(&format!("team/{name}"))
            .expect("free");
    }
    let client = lab.client();
    // Newest first: a project created now goes to the front and pushes the others down, so
    // the second page starts with the last project of the first one.
    let mut stream = Box::pin(client.list_group_projects(
        &GroupRef::parse("team"),
        &GroupProjectsQuery::new().per_page(2),
    ));
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(stream.next().await.expect("an item").expect("a project").id);
    }
    assert_eq!(seen, [5, 4]);
    let newest = lab.control.add_project("team/f").expect("free");
    while let Some(project) = stream.next().await {
        seen.push(project.expect("a project").id);
    }
    assert_eq!(
        seen,
        [5, 4, 3, 2, 1],
        "4 came again on page 2 and was skipped"
    );
    assert_eq!(newest, 6);
    assert_eq!(lab.listings().len(), 3);
    lab.stop().await;
}

#[tokio::test]
async fn an_unknown_group_is_a_typed_404_with_gitlabs_message() {
    let lab = Lab::start(fleet(3)).await;
    let client = lab.client();
    for group in [
        GroupRef::parse("nope"),
        GroupRef::Id(999),
        GroupRef::parse("fleet/project-1"),
    ] {
        let err = list(&client, &group, &GroupProjectsQuery::new())
            .await
            .expect_err("unknown");
        assert_eq!(err.kind(), "api_error", "{err}");
        assert_eq!(err.status(), Some(404), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("GET /groups/:id/projects") && text.contains("404 Group Not Found"),
            "{text}"
        );
    }
    // A token GitLab does not know: 401, the same typed error.
    let mut config = ClientConfig::new(
        lab.sim.base_url(),
        Some(Credential::PrivateToken("glpat-wrong".into())),
    );
    config.timeout = Duration::from_secs(10);
    let stranger = GitLabClient::new(config).expect("a client");
    let err = list(
        &stranger,
        &GroupRef::parse("fleet"),
        &GroupProjectsQuery::new(),
    )
    .await
    .expect_err("unauthorized");
    assert_eq!(err.status(), Some(401), "{err}");
    // A listing of an empty group is empty, not an error.
    lab.control.add_group("empty").expect("a new group");
    let none = list(
        &client,
        &GroupRef::parse("empty"),
        &GroupProjectsQuery::new(),
    )
    .await
    .expect("listed");
    assert!(none.is_empty());
    lab.stop().await;
}
