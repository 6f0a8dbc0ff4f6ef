"""python-gitlab 8.6.0 against jobwarden's GitLab simulator.

Every test drives the simulator the way a real client does and asserts what that client
notices: the objects and exceptions python-gitlab hands back, the pages it follows, the
requests it makes (read from the simulator's request log). Where python-gitlab itself has a
quirk, the test says so. Scenarios are pipelines added through the admin endpoint; they never
move on their own.
"""

from __future__ import annotations

import io
import threading
import time
import urllib.parse
import zipfile
from typing import Any

import gitlab
import pytest
import requests
from gitlab.exceptions import (
    GitlabAuthenticationError,
    GitlabCreateError,
    GitlabGetError,
    GitlabHttpError,
    GitlabJobEraseError,
    GitlabJobPlayError,
    GitlabJobRetryError,
    GitlabListError,
    GitlabParsingError,
)

from harness import Scenario, SimAdmin, SimulatorProcess, job

JOBS_INDEX_THROTTLED = "This endpoint has been requested too many times. Try again later."
STATUSES = ("created", "pending", "running", "success", "failed", "canceled", "skipped")


def ids(objects: Any) -> list[int]:
    return [o.id for o in objects]


def query_of(entry: dict[str, Any]) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(entry["query"], keep_blank_values=True)


def list_requests(scenario: Scenario, suffix: str = "/jobs") -> list[dict[str, Any]]:
    return [r for r in scenario.logged() if r["method"] == "GET" and r["path"].endswith(suffix)]


def zip_members(data: bytes) -> dict[str, bytes]:
    """The files of a ZIP archive; fails if it is not a sound one."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None, "a member fails its CRC check"
        return {name: archive.read(name) for name in archive.namelist()}


# =========================================================================== listing jobs


def test_offset_pagination_follows_every_page_of_project_jobs(project: Scenario) -> None:
    created = project.pipeline(*(job(f"job-{i}", STATUSES[i % 7]) for i in range(23)))
    newest_first = sorted(created.job_ids, reverse=True)

    project.admin.reset()
    jobs = project.api.jobs.list(get_all=True, per_page=5)
    assert ids(jobs) == newest_first
    pages = [query_of(r).get("page", ["1"])[0] for r in list_requests(project)]
    assert pages == ["1", "2", "3", "4", "5"], "python-gitlab follows rel=next to the end"

    # The project job list is paginated without counting: no X-Total / X-Total-Pages.
    listing = project.api.jobs.list(iterator=True, per_page=5)
    assert (listing.total, listing.total_pages) == (None, None)
    assert (listing.current_page, listing.prev_page, listing.next_page) == (1, None, 2)
    assert listing.per_page == 5
    assert ids(listing) == newest_first

    # Without get_all python-gitlab stops after one page and, lacking a total, says "many".
    with pytest.warns(UserWarning, match=r"returned 5 of many items"):
        first_page = project.api.jobs.list(per_page=5)
    assert ids(first_page) == newest_first[:5]

    # A page past the end is an empty list, not an error.
    assert project.api.jobs.list(page=9, per_page=5) == []


def test_project_job_list_has_no_last_link(gl: gitlab.Gitlab, project: Scenario) -> None:
    project.pipeline(*(job(f"job-{i}") for i in range(3)))
    response = gl.http_request("get", f"/projects/{project.id}/jobs", query_data={"per_page": 2})
    assert set(response.links) == {"next", "first"}
    assert "X-Total" not in response.headers


def test_pipeline_jobs_are_counted(project: Scenario) -> None:
    created = project.pipeline(*(job(f"job-{i}") for i in range(23)))
    pipeline = project.api.pipelines.get(created.id, lazy=True)

    listing = pipeline.jobs.list(iterator=True, per_page=5)
    assert (listing.total, listing.total_pages) == (23, 5)
    assert ids(listing) == sorted(created.job_ids, reverse=True)

    with pytest.warns(UserWarning, match=r"returned 5 of 23 items"):
        pipeline.jobs.list(per_page=5)
    assert len(pipeline.jobs.list(get_all=True, per_page=7)) == 23


def test_per_page_is_capped_at_100(project: Scenario) -> None:
    created = project.pipeline(*(job(f"job-{i}") for i in range(105)))

    project.admin.reset()
    listing = project.api.jobs.list(iterator=True, per_page=250)
    assert listing.per_page == 100
    assert ids(listing) == sorted(created.job_ids, reverse=True)
    assert len(list_requests(project)) == 2


def test_scope_filters_by_one_or_several_statuses(project: Scenario) -> None:
    created = project.pipeline(
        *(job(status, status) for status in STATUSES),
        job("deploy", "manual", when="manual"),
    )
    by_status = dict(zip((*STATUSES, "manual"), created.job_ids, strict=True))

    failed = project.api.jobs.list(scope="failed", get_all=True)
    assert ids(failed) == [by_status["failed"]]
    assert failed[0].status == "failed"

    project.admin.reset()
    active = project.api.jobs.list(scope=["pending", "running", "manual"], get_all=True)
    assert ids(active) == [by_status["manual"], by_status["running"], by_status["pending"]]
    # python-gitlab sends a list as scope[]=…, the form Rack keeps in full.
    (sent,) = list_requests(project)
    assert query_of(sent)["scope[]"] == ["pending", "running", "manual"]

    pipeline = project.api.pipelines.get(created.id, lazy=True)
    finished = pipeline.jobs.list(scope=["success", "canceled"], get_all=True)
    assert ids(finished) == [by_status["canceled"], by_status["success"]]


def test_invalid_scope_is_a_grape_400(project: Scenario) -> None:
    created = project.pipeline(job("build"))
    with pytest.raises(GitlabListError) as project_list:
        project.api.jobs.list(scope=["success", "bogus"], get_all=True)
    with pytest.raises(GitlabListError) as pipeline_list:
        project.api.pipelines.get(created.id, lazy=True).jobs.list(scope="bogus")
    for raised in (project_list.value, pipeline_list.value):
        assert raised.response_code == 400
        # Grape's validation error uses the `error` key; python-gitlab reads it all the same.
        assert raised.error_message == "scope does not have a valid value"


def test_keyset_pagination_lists_the_same_jobs_as_offset(project: Scenario) -> None:
    created = project.pipeline(*(job(f"job-{i}", STATUSES[i % 7]) for i in range(13)))
    offset = ids(project.api.jobs.list(get_all=True, per_page=4))

    project.admin.reset()
    listing = project.api.jobs.list(
        iterator=True, pagination="keyset", order_by="id", sort="desc", per_page=4
    )
    keyset = ids(listing)
    assert keyset == offset == sorted(created.job_ids, reverse=True)
    # Keyset pages carry only a Link header: no X-Page / X-Per-Page / X-Total.
    assert (listing.per_page, listing.next_page, listing.total) == (None, None, None)

    sent = [query_of(r) for r in list_requests(project)]
    assert len(sent) == 4
    assert "cursor" not in sent[0]
    assert all(q["pagination"] == ["keyset"] and q["cursor"][0] for q in sent[1:])

    everything = project.api.jobs.list(
        get_all=True, pagination="keyset", order_by="id", sort="desc", per_page=4
    )
    assert ids(everything) == offset

    failed = project.api.jobs.list(
        get_all=True, pagination="keyset", order_by="id", sort="desc", scope="failed", per_page=1
    )
    assert ids(failed) == [created.job_ids[11], created.job_ids[4]], "scope survives the cursor"


@pytest.mark.parametrize(("order_by", "sort"), [("id", "asc"), ("created_at", "desc")])
def test_unsupported_keyset_ordering_is_405(project: Scenario, order_by: str, sort: str) -> None:
    project.pipeline(job("build"))
    with pytest.raises(GitlabListError) as raised:
        project.api.jobs.list(get_all=True, pagination="keyset", order_by=order_by, sort=sort)
    assert raised.value.response_code == 405
    assert raised.value.error_message == (
        "Keyset pagination is not yet available for this type of request"
    )


# =========================================================================== pipelines


def test_pipeline_jobs_show_the_latest_attempt_unless_retried_are_included(
    project: Scenario,
) -> None:
    created = project.pipeline(
        job("build", stage="build"),
        job("rspec", "failed", failure_reason="script_failure"),
    )
    build_id, old_rspec = created.job_ids
    new_rspec = project.api.jobs.get(old_rspec, lazy=True).retry()["id"]
    pipeline = project.api.pipelines.get(created.id, lazy=True)

    latest = pipeline.jobs.list(get_all=True)
    assert ids(latest) == [new_rspec, build_id]
    with_retried = pipeline.jobs.list(get_all=True, include_retried=True)
    assert ids(with_retried) == [new_rspec, old_rspec, build_id]
    assert [j.status for j in with_retried] == ["pending", "failed", "success"]
    # The project list never filters retried attempts.
    assert ids(project.api.jobs.list(get_all=True)) == [new_rspec, old_rspec, build_id]


def test_pipeline_bridges_are_listed_apart_from_jobs(project: Scenario) -> None:
    created = project.pipeline(
        job("build", stage="build"),
        job("trigger-docs", stage="deploy", bridge=True),
        job("trigger-release", "manual", stage="deploy", when="manual", bridge=True),
    )
    build_id, docs_id, release_id = created.job_ids
    pipeline = project.api.pipelines.get(created.id, lazy=True)

    bridges = pipeline.bridges.list(get_all=True)
    assert ids(bridges) == [release_id, docs_id]
    assert [(b.name, b.status, b.stage) for b in bridges] == [
        ("trigger-release", "manual", "deploy"),
        ("trigger-docs", "success", "deploy"),
    ]
    # Entities::Ci::Bridge: JobBasic plus downstream_pipeline; none of a build's extras.
    docs = bridges[1].attributes
    assert "downstream_pipeline" in docs
    assert not {"artifacts", "artifacts_file", "runner", "tag_list"} & docs.keys()
    assert docs["pipeline"]["id"] == created.id

    assert ids(pipeline.jobs.list(get_all=True)) == [build_id]
    assert ids(project.api.jobs.list(get_all=True)) == [build_id]
    with pytest.raises(GitlabGetError) as raised:
        project.api.jobs.get(docs_id)
    assert raised.value.response_code == 404

    # Playing a manual bridge answers with the Bridge entity.
    played = project.api.jobs.get(release_id, lazy=True)
    played.play()
    assert played.attributes["name"] == "trigger-release"
    assert played.attributes["status"] == "pending"
    assert "downstream_pipeline" in played.attributes


# =========================================================================== single jobs


def test_get_a_job_by_id_and_by_url_encoded_project_path(
    gl: gitlab.Gitlab, admin: SimAdmin, project: Scenario
) -> None:
    created = project.pipeline(
        job("build", stage="build"),
        job("rspec", "failed", failure_reason="stuck_or_timeout_failure"),
    )
    build_id, rspec_id = created.job_ids

    by_id = project.api.jobs.get(rspec_id)
    # A lazy project object: python-gitlab URL-encodes the path into every job URL.
    by_path = gl.projects.get(project.path, lazy=True).jobs.get(rspec_id)
    # project_id is python-gitlab's own parent attribute; the runner manager's contacted_at
    # moves with the clock.
    moving = {"project_id", "runner_manager"}
    assert by_path.attributes.keys() == by_id.attributes.keys()
    assert {k: v for k, v in by_path.attributes.items() if k not in moving} == {
        k: v for k, v in by_id.attributes.items() if k not in moving
    }
    encoded = f"/api/v4/projects/{urllib.parse.quote(project.path, safe='')}/jobs/{rspec_id}"
    assert any(r["path"] == encoded and r["status"] == 200 for r in project.logged())

    assert (by_id.name, by_id.stage, by_id.status, by_id.ref) == ("rspec", "test", "failed", "main")
    assert by_id.failure_reason == "stuck_or_timeout_failure"
    assert by_id.pipeline["id"] == created.id
    assert by_id.web_url.endswith(f"/{project.path}/-/jobs/{rspec_id}")
    # failure_reason is exposed only while the job is failed.
    assert "failure_reason" not in project.api.jobs.get(build_id).attributes

    # A fleet project, by its full path.
    fleet_job = admin.jobs(1)[0]
    fleet = gl.projects.get("fleet/project-1", lazy=True).jobs.get(fleet_job["id"])
    assert (fleet.id, fleet.name, fleet.pipeline["id"]) == (
        fleet_job["id"],
        fleet_job["name"],
        fleet_job["pipeline_id"],
    )
    assert fleet.web_url.endswith(f"/fleet/project-1/-/jobs/{fleet_job['id']}")


def test_a_project_reads_the_same_by_id_and_by_full_path(
    gl: gitlab.Gitlab, project: Scenario
) -> None:
    by_path = gl.projects.get(project.path)
    by_id = gl.projects.get(project.id)
    assert by_path.attributes == by_id.attributes
    assert (by_path.id, by_path.path_with_namespace) == (project.id, project.path)
    assert by_path.archived is False
    assert by_path.namespace["full_path"] == project.path.rsplit("/", 1)[0]
    # GitLab finds a project by its path case-insensitively.
    assert gl.projects.get(project.path.upper()).id == project.id


@pytest.mark.parametrize("reference", [987654, "nobody/nothing"])
def test_unknown_project_itself_is_404_project_not_found(gl: gitlab.Gitlab, reference: Any) -> None:
    with pytest.raises(GitlabGetError) as raised:
        gl.projects.get(reference)
    assert raised.value.response_code == 404
    assert raised.value.error_message == "404 Project Not Found"


def test_trace_is_the_job_log(project: Scenario) -> None:
    log = "$ bundle exec rspec\n42 examples, 0 failures\n"
    created = project.pipeline(job("rspec", log=log), job("lint", "created"))
    rspec_id, lint_id = created.job_ids

    rspec = project.api.jobs.get(rspec_id, lazy=True)
    assert rspec.trace() == log.encode()
    chunks: list[bytes] = []
    rspec.trace(streamed=True, action=chunks.append)
    assert b"".join(chunks) == log.encode()
    assert project.api.jobs.get(lint_id, lazy=True).trace() == b""


# =========================================================================== job actions


def test_cancel_a_pending_job_and_a_finished_one(project: Scenario) -> None:
    created = project.pipeline(job("queued", "pending"), job("busy", "running"), job("done"))
    queued_id, busy_id, done_id = created.job_ids

    canceled = project.api.jobs.get(queued_id, lazy=True).cancel()
    assert (canceled["id"], canceled["status"]) == (queued_id, "canceled")
    refreshed = project.api.jobs.get(queued_id)
    assert refreshed.status == "canceled" and refreshed.finished_at is not None

    assert project.api.jobs.get(busy_id, lazy=True).cancel()["status"] == "canceled"

    # Canceling a finished job is no error: 201 with the job unchanged.
    unchanged = project.api.jobs.get(done_id, lazy=True).cancel()
    assert unchanged["status"] == "success"
    assert project.api.jobs.get(done_id).status == "success"
    cancels = [r["status"] for r in project.logged() if r["path"].endswith("/cancel")]
    assert cancels == [201, 201, 201]


def test_retry_creates_a_new_attempt_and_the_old_one_cannot_be_retried(
    project: Scenario,
) -> None:
    created = project.pipeline(job("rspec", "canceled"), job("lint", "created"))
    old_id, created_id = created.job_ids
    old = project.api.jobs.get(old_id)

    new = old.retry()
    assert new["id"] not in (old_id, created_id)
    assert (new["name"], new["stage"], new["status"]) == ("rspec", "test", "pending")
    assert new["user"]["username"] == "root", "the retrier owns the new attempt"
    assert old.user["username"] != "root"
    assert project.api.jobs.get(old_id).status == "canceled", "the old attempt keeps its status"
    assert project.snapshot(old_id)["retried"] is True

    for not_retryable in (old_id, created_id):
        with pytest.raises(GitlabJobRetryError) as raised:
            project.api.jobs.get(not_retryable, lazy=True).retry()
        assert raised.value.response_code == 403
        assert raised.value.error_message == "403 Forbidden - Job is not retryable"


def test_play_a_manual_job_with_variables(project: Scenario) -> None:
    created = project.pipeline(job("deploy", "manual", stage="deploy", when="manual"))
    (deploy_id,) = created.job_ids
    deploy = project.api.jobs.get(deploy_id)
    variables = [{"key": "TARGET", "value": "staging"}, {"key": "DRY_RUN", "value": "false"}]

    # python-gitlab quirk: play(**kwargs) sends kwargs as query parameters, and requests
    # flattens a list of dicts into its keys (job_variables_attributes=key&…=value), which
    # GitLab's Grape coercion refuses. The job stays manual.
    with pytest.raises(GitlabJobPlayError) as raised:
        deploy.play(job_variables_attributes=variables)
    assert raised.value.response_code == 400
    assert raised.value.error_message == "job_variables_attributes is invalid"
    assert project.snapshot(deploy_id)["status"] == "manual"

    # Passing post_data sends them as the JSON body the API documents.
    deploy.play(post_data={"job_variables_attributes": variables})
    assert (deploy.id, deploy.status) == (deploy_id, "pending")
    assert deploy.user["username"] == "root"
    snapshot = project.snapshot(deploy_id)
    assert snapshot["status"] == "pending"
    assert snapshot["variables"] == [["TARGET", "staging"], ["DRY_RUN", "false"]]


def test_play_refuses_incomplete_variables_and_unplayable_jobs(project: Scenario) -> None:
    created = project.pipeline(
        job("deploy", "manual", stage="deploy", when="manual"),
        job("rspec", "running"),
        job("build", "success"),
    )
    deploy_id, rspec_id, build_id = created.job_ids

    with pytest.raises(GitlabJobPlayError) as incomplete:
        project.api.jobs.get(deploy_id, lazy=True).play(
            post_data={"job_variables_attributes": [{"key": "TARGET"}]}
        )
    assert incomplete.value.response_code == 400
    assert incomplete.value.error_message == "job_variables_attributes[0][value] is missing"

    for unplayable in (rspec_id, build_id):
        with pytest.raises(GitlabJobPlayError) as raised:
            project.api.jobs.get(unplayable, lazy=True).play()
        assert raised.value.response_code == 400
        assert raised.value.error_message == "400 Bad request - Unplayable Job"
    assert project.snapshot(deploy_id)["status"] == "manual"


def test_playing_a_finished_manual_job_runs_it_again(project: Scenario) -> None:
    created = project.pipeline(job("deploy", "success", stage="deploy", when="manual"))
    (deploy_id,) = created.job_ids
    deploy = project.api.jobs.get(deploy_id, lazy=True)
    deploy.play()
    assert deploy.id != deploy_id
    assert (deploy.name, deploy.status) == ("deploy", "pending")
    assert project.snapshot(deploy_id)["retried"] is True


def test_erase_removes_artifacts_and_log(project: Scenario) -> None:
    created = project.pipeline(
        job("build", artifacts_expire_in_seconds=3600, log="compiled\n"),
        job("rspec", "running"),
        job("lint", "success"),
    )
    build_id, rspec_id, lint_id = created.job_ids
    build = project.api.jobs.get(build_id)
    assert build.erased_at is None and "artifacts_file" in build.attributes

    build.erase()
    build = project.api.jobs.get(build_id)
    assert build.erased_at is not None
    assert "artifacts_file" not in build.attributes
    # python-gitlab quirk: the `artifacts` attribute is shadowed by the artifacts() method.
    assert build.attributes["artifacts"] == []
    assert build.trace() == b""
    with pytest.raises(GitlabGetError) as gone:
        build.artifacts()
    assert gone.value.response_code == 404

    # Not erasable: still running, or finished with neither artifacts nor a log.
    for not_erasable in (rspec_id, lint_id):
        with pytest.raises(GitlabJobEraseError) as raised:
            project.api.jobs.get(not_erasable, lazy=True).erase()
        assert raised.value.response_code == 403
        assert raised.value.error_message == "403 Forbidden - Job is not erasable!"


def test_keep_artifacts_clears_the_expiry(project: Scenario) -> None:
    created = project.pipeline(job("build", artifacts_expire_in_seconds=3600), job("lint"))
    build_id, lint_id = created.job_ids
    build = project.api.jobs.get(build_id)
    assert build.artifacts_expire_at is not None

    build.keep_artifacts()
    build.refresh()
    assert build.artifacts_expire_at is None
    assert zip_members(build.artifacts()), "kept artifacts are still served"

    with pytest.raises(GitlabCreateError) as raised:
        project.api.jobs.get(lint_id, lazy=True).keep_artifacts()
    assert raised.value.response_code == 404


# =========================================================================== artifacts


def test_download_the_archive_and_single_files(project: Scenario) -> None:
    created = project.pipeline(job("build", artifacts_expire_in_seconds=3600))
    (build_id,) = created.job_ids
    build = project.api.jobs.get(build_id)
    assert build.artifacts_file["filename"] == "artifacts.zip"

    archive = build.artifacts()
    assert build.artifacts_file["size"] == len(archive)
    members = zip_members(archive)
    assert members, "the archive has files"
    streamed = io.BytesIO()
    build.artifacts(streamed=True, action=streamed.write)
    assert streamed.getvalue() == archive

    for path, content in members.items():
        assert build.artifact(path) == content
    with pytest.raises(GitlabGetError) as missing:
        build.artifact("no/such/file.txt")
    assert missing.value.response_code == 404


def test_download_by_ref_and_job_name_takes_the_latest_successful_pipeline(
    project: Scenario,
) -> None:
    older = project.pipeline(job("build", artifacts_expire_in_seconds=3600))
    newer = project.pipeline(job("build", artifacts_expire_in_seconds=3600))
    project.pipeline(job("build", "failed"))  # the newest pipeline did not succeed
    newer_archive = project.api.jobs.get(newer.job_ids[0], lazy=True).artifacts()
    older_archive = project.api.jobs.get(older.job_ids[0], lazy=True).artifacts()
    assert newer_archive != older_archive

    by_ref = project.api.artifacts.download(ref_name="main", job="build")
    assert by_ref == newer_archive
    for path, content in zip_members(newer_archive).items():
        assert project.api.artifacts.raw("main", path, "build") == content

    with pytest.raises(GitlabGetError) as unknown_ref:
        project.api.artifacts.download(ref_name="no-such-branch", job="build")
    assert unknown_ref.value.response_code == 404


def test_delete_artifacts(project: Scenario) -> None:
    created = project.pipeline(job("build", artifacts_expire_in_seconds=3600))
    (build_id,) = created.job_ids
    build = project.api.jobs.get(build_id, lazy=True)
    assert zip_members(build.artifacts())

    build.delete_artifacts()
    assert [r["status"] for r in project.logged() if r["method"] == "DELETE"] == [204]
    with pytest.raises(GitlabGetError) as raised:
        build.artifacts()
    assert raised.value.response_code == 404
    assert "artifacts_file" not in project.api.jobs.get(build_id).attributes


# =========================================================================== errors


def test_unknown_job_is_404_not_found(project: Scenario) -> None:
    project.pipeline(job("build"))
    with pytest.raises(GitlabGetError) as raised:
        project.api.jobs.get(987654321)
    assert raised.value.response_code == 404
    # ActiveRecord::RecordNotFound: lowercase "found".
    assert raised.value.error_message == "404 Not found"


@pytest.mark.parametrize("reference", [987654, "nobody/nothing"])
def test_unknown_project_is_404_project_not_found(gl: gitlab.Gitlab, reference: Any) -> None:
    unknown = gl.projects.get(reference, lazy=True)
    with pytest.raises(GitlabGetError) as get:
        unknown.jobs.get(1)
    with pytest.raises(GitlabListError) as listing:
        unknown.jobs.list(get_all=True)
    for raised in (get.value, listing.value):
        assert raised.response_code == 404
        assert raised.error_message == "404 Project Not Found"


def test_bad_or_missing_token_is_401(simulator: SimulatorProcess, project: Scenario) -> None:
    (build_id,) = project.pipeline(job("build")).job_ids
    for client in (
        gitlab.Gitlab(simulator.url, private_token="glpat-not-the-token"),
        gitlab.Gitlab(simulator.url),
    ):
        remote = client.projects.get(project.id, lazy=True)
        with pytest.raises(GitlabAuthenticationError) as listing:
            remote.jobs.list(get_all=True)
        with pytest.raises(GitlabAuthenticationError) as get:
            remote.jobs.get(build_id)
        for raised in (listing.value, get.value):
            assert raised.response_code == 401
            assert raised.error_message == "401 Unauthorized"


# =========================================================================== CI job tokens


def test_job_token_of_a_running_job(
    simulator: SimulatorProcess, gl: gitlab.Gitlab, project: Scenario
) -> None:
    created = project.pipeline(
        job("build", stage="build", artifacts_expire_in_seconds=3600),
        job("deploy", "running", stage="deploy"),
    )
    build_id, deploy_id = created.job_ids
    token = project.snapshot(deploy_id)["token"]
    ci = gitlab.Gitlab(simulator.url, job_token=token)

    current = ci.http_get("/job")
    assert isinstance(current, dict)
    assert (current["id"], current["name"], current["status"]) == (deploy_id, "deploy", "running")
    assert current["pipeline"]["id"] == created.id

    # Job tokens work on artifact downloads of their project...
    remote = ci.projects.get(project.id, lazy=True)
    assert zip_members(remote.jobs.get(build_id, lazy=True).artifacts())
    # ...but are ignored on GET /projects/:id/jobs/:job_id: unauthenticated, 401.
    with pytest.raises(GitlabAuthenticationError) as ignored:
        remote.jobs.get(build_id)
    assert ignored.value.response_code == 401

    # A personal token is no job token.
    with pytest.raises(GitlabHttpError) as not_a_job:
        gl.http_get("/job")
    assert not_a_job.value.response_code == 404
    assert not_a_job.value.error_message == "404 Job Not Found"

    # Once the job has finished its token no longer authenticates.
    project.set_status(deploy_id, "success")
    with pytest.raises(GitlabAuthenticationError) as finished:
        ci.http_get("/job")
    assert finished.value.response_code == 401


# =========================================================================== rate limiting


@pytest.fixture
def limited(rate_limited_simulator: SimulatorProcess) -> SimulatorProcess:
    """The rate-limited simulator with fresh counts (its clock all but stands still)."""
    rate_limited_simulator.admin.reset()
    return rate_limited_simulator


def exhaust_jobs_index(project: Any) -> None:
    for _ in range(5):
        project.jobs.list(per_page=1, get_all=False)


def test_jobs_index_limit_without_retries(limited: SimulatorProcess) -> None:
    client = limited.client(retry_transient_errors=False)
    remote = client.projects.get(1, lazy=True)
    exhaust_jobs_index(remote)

    with pytest.raises(GitlabListError) as raised:
        remote.jobs.list(per_page=1, get_all=False, obey_rate_limit=False)
    assert raised.value.response_code == 429
    # The application limit nests its text: {"message": {"error": ...}}. python-gitlab
    # passes `message` through, so error_message is a dict here (a str everywhere else).
    assert raised.value.error_message == {"error": JOBS_INDEX_THROTTLED}

    # Only the job list is limited.
    some_job = limited.admin.jobs(1)[0]
    assert remote.jobs.get(some_job["id"]).id == some_job["id"]
    pipeline = remote.pipelines.get(some_job["pipeline_id"], lazy=True)
    assert some_job["id"] in ids(pipeline.jobs.list(get_all=True, include_retried=True))

    # The next one-minute window has a fresh budget.
    limited.admin.advance(60)
    assert len(remote.jobs.list(per_page=1, get_all=False)) == 1


def test_obey_rate_limit_retries_the_429_then_gives_up(limited: SimulatorProcess) -> None:
    remote = limited.client().projects.get(1, lazy=True)
    exhaust_jobs_index(remote)
    before = len(limited.admin.requests())

    # obey_rate_limit is on by default: python-gitlab retries a 429 up to max_retries times.
    # The jobs_index 429 carries neither Retry-After nor RateLimit-Reset, so it backs off
    # exponentially (0.1 s, 0.2 s) instead of waiting for the window to end.
    with pytest.raises(GitlabListError) as raised:
        remote.jobs.list(per_page=1, get_all=False, max_retries=2)
    assert raised.value.response_code == 429
    assert [r["status"] for r in limited.admin.requests()[before:]] == [429, 429, 429]


def test_obey_rate_limit_succeeds_once_the_window_resets(limited: SimulatorProcess) -> None:
    remote = limited.client().projects.get(1, lazy=True)
    exhaust_jobs_index(remote)
    before = len(limited.admin.requests())
    advanced = threading.Event()

    def advance_after_the_first_429() -> None:
        for _ in range(500):
            if any(r["status"] == 429 for r in limited.admin.requests()[before:]):
                limited.admin.advance(60)
                advanced.set()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=advance_after_the_first_429, daemon=True)
    watcher.start()
    jobs = remote.jobs.list(per_page=1, get_all=False, max_retries=6)
    watcher.join(timeout=10)

    assert advanced.is_set()
    assert len(jobs) == 1
    statuses = [r["status"] for r in limited.admin.requests()[before:]]
    assert statuses[0] == 429 and statuses[-1] == 200 and set(statuses) == {429, 200}


# =========================================================================== faults


def test_server_errors_surface_as_5xx(
    simulator: SimulatorProcess, faults: SimAdmin, project: Scenario
) -> None:
    (build_id,) = project.pipeline(job("build")).job_ids
    faults.set_faults(error_5xx_ratio=1.0)

    with pytest.raises(GitlabListError) as listing:
        project.api.jobs.list(get_all=True)
    with pytest.raises(GitlabGetError) as get:
        project.api.jobs.get(build_id)
    for raised in (listing.value, get.value):
        assert raised.response_code in (500, 502, 503)

    # With retry_transient_errors python-gitlab retries 5xx answers max_retries times.
    retrying = simulator.client(retry_transient_errors=True)
    faults.reset()
    with pytest.raises(GitlabGetError) as retried:
        retrying.projects.get(project.id, lazy=True).jobs.get(build_id, max_retries=2)
    assert retried.value.response_code in (500, 502, 503)
    statuses = [r["status"] for r in faults.requests()]
    assert len(statuses) == 3 and all(s in (500, 502, 503) for s in statuses)

    faults.set_faults()
    assert project.api.jobs.get(build_id).status == "success"


def test_malformed_json_is_a_parsing_error(faults: SimAdmin, project: Scenario) -> None:
    (build_id,) = project.pipeline(job("build")).job_ids
    faults.set_faults(malformed_json_ratio=1.0)
    with pytest.raises(GitlabParsingError):
        project.api.jobs.list(get_all=True)
    with pytest.raises(GitlabParsingError):
        project.api.jobs.get(build_id)
    faults.set_faults()
    assert ids(project.api.jobs.list(get_all=True)) == [build_id]


def test_rack_attack_429_is_plain_text(faults: SimAdmin, project: Scenario) -> None:
    project.pipeline(job("build"))
    faults.set_faults(rate_limit_burst_every=1)
    # With obey_rate_limit python-gitlab would sleep for Retry-After (up to a minute).
    with pytest.raises(GitlabListError) as raised:
        project.api.jobs.list(get_all=True, obey_rate_limit=False)
    assert raised.value.response_code == 429
    assert raised.value.error_message == "Retry later\n"


def test_dropped_connection_is_a_connection_error(faults: SimAdmin, project: Scenario) -> None:
    project.pipeline(job("build"))
    faults.set_faults(drop_connection_ratio=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        project.api.jobs.list(get_all=True)
