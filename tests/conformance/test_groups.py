"""python-gitlab 8.6.0 against the simulator's Groups API: `GET /groups/:id` and
`GET /groups/:id/projects` (subgroups, archived, simple, ordering, pages, 404).

Each test builds its own group tree through the admin endpoint, so the shared simulator's
other projects never show up in its listings:

    <root>/alpha                 active
    <root>/bravo                 archived
    <root>/sub/charlie           active
    <root>/sub/deep/delta        archived
    <root>/sub/deep/echo         active
    <root>/other/foxtrot         active
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import urllib.parse
from typing import Any

import gitlab
import pytest
from gitlab.exceptions import GitlabGetError, GitlabListError

from harness import SimAdmin

_trees = itertools.count(1)


@dataclasses.dataclass
class Tree:
    root: str
    ids: dict[str, int]
    """Project name → id."""

    def of(self, *names: str) -> list[int]:
        return [self.ids[name] for name in names]


@pytest.fixture
def tree(admin: SimAdmin, request: pytest.FixtureRequest) -> Tree:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    root = f"tree-{slug}-{next(_trees)}"
    for group in (root, f"{root}/sub/deep", f"{root}/other"):
        admin.create_group(group)
    layout = [
        ("", "alpha", False),
        ("", "bravo", True),
        ("/sub", "charlie", False),
        ("/sub/deep", "delta", True),
        ("/sub/deep", "echo", False),
        ("/other", "foxtrot", False),
    ]
    ids = {}
    for group, name, archived in layout:
        ids[name] = admin.create_project_in(f"{root}{group}", name, archived=archived)["id"]
    return Tree(root, ids)


def ids(objects: Any) -> list[int]:
    return [o.id for o in objects]


def group_requests(admin: SimAdmin, root: str) -> list[dict[str, Any]]:
    encoded = urllib.parse.quote(root, safe="")
    return [r for r in admin.requests() if r["path"].startswith(f"/api/v4/groups/{encoded}")]


def test_a_group_reads_by_full_path_and_lists_its_own_projects(
    gl: gitlab.Gitlab, tree: Tree
) -> None:
    group = gl.groups.get(tree.root)
    assert (group.full_path, group.path, group.parent_id) == (tree.root, tree.root, None)
    assert group.name == tree.root.replace("-", " ").title()
    # GroupDetail embeds the group's own projects (not its subgroups'), newest first.
    # (python-gitlab shadows the `projects` attribute with its manager.)
    assert [p["id"] for p in group.attributes["projects"]] == tree.of("bravo", "alpha")
    assert gl.groups.get(group.id).attributes == group.attributes
    sub = gl.groups.get(f"{tree.root}/sub/deep")
    assert sub.full_name.endswith(" / Sub / Deep")
    assert sub.parent_id == gl.groups.get(f"{tree.root}/sub", with_projects=False).id


def test_projects_with_and_without_subgroups(gl: gitlab.Gitlab, admin: SimAdmin, tree: Tree) -> None:
    group = gl.groups.get(tree.root)
    direct = group.projects.list(get_all=True)
    assert ids(direct) == tree.of("bravo", "alpha")
    every = group.projects.list(include_subgroups=True, get_all=True)
    assert ids(every) == tree.of("foxtrot", "echo", "delta", "charlie", "bravo", "alpha")
    assert {p.path_with_namespace for p in every} >= {
        f"{tree.root}/sub/deep/echo",
        f"{tree.root}/other/foxtrot",
    }
    # The same through a lazy group by its full path (one URL-encoded segment).
    lazy = gl.groups.get(tree.root, lazy=True)
    assert ids(lazy.projects.list(include_subgroups=True, get_all=True)) == ids(every)
    sub = gl.groups.get(f"{tree.root}/sub", lazy=True)
    assert ids(sub.projects.list(include_subgroups=True, get_all=True)) == tree.of(
        "echo", "delta", "charlie"
    )
    # with_shared is accepted: nothing is shared with a simulated group.
    assert ids(group.projects.list(with_shared=False, get_all=True)) == ids(direct)
    encoded = urllib.parse.quote(tree.root, safe="")
    assert any(
        r["path"] == f"/api/v4/groups/{encoded}/projects" and r["status"] == 200
        for r in group_requests(admin, tree.root)
    )


def test_archived_projects_are_filtered(gl: gitlab.Gitlab, admin: SimAdmin, tree: Tree) -> None:
    group = gl.groups.get(tree.root, lazy=True)
    active = group.projects.list(include_subgroups=True, archived=False, iterator=True)
    assert ids(active) == tree.of("foxtrot", "echo", "charlie", "alpha")
    assert all(p.archived is False for p in group.projects.list(
        include_subgroups=True, archived=False, get_all=True
    ))
    archived = group.projects.list(include_subgroups=True, archived=True, get_all=True)
    assert ids(archived) == tree.of("delta", "bravo")
    assert all(p.archived is True for p in archived)
    # Unarchiving moves a project back.
    admin.set_archived(tree.ids["delta"], False)
    assert ids(group.projects.list(include_subgroups=True, archived=True, get_all=True)) == tree.of(
        "bravo"
    )


def test_the_iterator_follows_every_page(gl: gitlab.Gitlab, admin: SimAdmin, tree: Tree) -> None:
    group = gl.groups.get(tree.root, lazy=True)
    pages = group.projects.list(
        include_subgroups=True, order_by="id", sort="asc", per_page=2, iterator=True
    )
    assert (pages.total, pages.total_pages, pages.per_page, pages.current_page) == (6, 3, 2, 1)
    assert ids(pages) == tree.of("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    listed = [
        urllib.parse.parse_qs(r["query"])
        for r in group_requests(admin, tree.root)
        if r["path"].endswith("/projects")
    ]
    assert [q.get("page", ["1"])[0] for q in listed] == ["1", "2", "3"]
    assert all(q["include_subgroups"] == ["True"] and q["per_page"] == ["2"] for q in listed), listed
    # One page only, without the iterator.
    second = group.projects.list(include_subgroups=True, order_by="id", sort="asc", per_page=2, page=2)
    assert ids(second) == tree.of("charlie", "delta")


def test_ordering_by_name_and_path(gl: gitlab.Gitlab, tree: Tree) -> None:
    group = gl.groups.get(tree.root, lazy=True)
    by_name = group.projects.list(include_subgroups=True, order_by="name", sort="asc", get_all=True)
    assert [p.name for p in by_name] == ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    by_path = group.projects.list(include_subgroups=True, order_by="path", sort="desc", get_all=True)
    assert [p.path for p in by_path] == ["foxtrot", "echo", "delta", "charlie", "bravo", "alpha"]
    with pytest.raises(GitlabListError) as raised:
        group.projects.list(order_by="size", get_all=True)
    assert raised.value.response_code == 400
    assert raised.value.error_message == "order_by does not have a valid value"


def test_simple_projects_have_the_short_entity(gl: gitlab.Gitlab, tree: Tree) -> None:
    group = gl.groups.get(tree.root, lazy=True)
    simple = group.projects.list(simple=True, get_all=True)
    full = group.projects.list(get_all=True)
    assert ids(simple) == ids(full)
    assert "archived" not in simple[0].attributes
    assert full[0].attributes["archived"] is True
    assert simple[0].namespace["full_path"] == tree.root
    assert set(simple[0].attributes) < set(full[0].attributes)
    assert {"id", "path_with_namespace", "web_url", "namespace"} <= set(simple[0].attributes)


def test_the_fleet_group_holds_the_generated_projects(gl: gitlab.Gitlab) -> None:
    fleet = gl.groups.get("fleet")
    # The shared simulator generates three projects: the first three always sit in `fleet`.
    projects = fleet.projects.list(include_subgroups=True, archived=False, get_all=True)
    assert ids(projects) == [3, 2, 1]
    assert [p.path_with_namespace for p in projects] == [
        "fleet/project-3",
        "fleet/project-2",
        "fleet/project-1",
    ]
    subgroups = {"platform", "apps", "data"}
    assert subgroups <= {
        gl.groups.get(f"fleet/{name}", with_projects=False).path for name in subgroups
    }


@pytest.mark.parametrize("reference", ["no-such-group", 987654])
def test_unknown_group_is_404_group_not_found(gl: gitlab.Gitlab, reference: Any) -> None:
    with pytest.raises(GitlabGetError) as raised:
        gl.groups.get(reference)
    assert (raised.value.response_code, raised.value.error_message) == (404, "404 Group Not Found")
    with pytest.raises(GitlabListError) as listed:
        gl.groups.get(reference, lazy=True).projects.list(include_subgroups=True, get_all=True)
    assert (listed.value.response_code, listed.value.error_message) == (404, "404 Group Not Found")
