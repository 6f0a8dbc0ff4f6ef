"""Job Hook deliveries in cluster mode, end to end (issue 9), over real HTTP and real processes.

The fixtures of ``test_controller_e2e`` (imported, so this module gets its own instances):
the GitLab simulator, the Kubernetes API emulator and ``jobwarden run --namespace ci``. Here two
replicas run with ``--webhook-listen``: a leader, and (from the second test on) a standby. On
loopback a replica's Lease identity is its own webhook address, ``127.0.0.1:<port>`` (the ports
are picked before the processes start), so ``--webhook-forward-to 'http://{identity}/webhook'``
takes a standby to the leader as the headless Service does in a cluster.

The one policy here runs every 10 minutes: anything it does within the test after its first run
was caused by a delivery, never by its interval. The scenario project's jobs never move on their
own; the tests fail them through the simulator's admin API, which fires the Job Hooks registered
with ``POST /-/sim/hooks``. Every wait is bounded, and every process stops at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest

from job_hooks import RECEIVER_ENV, WEBHOOK_SECRET, Replica, deliver, free_port, job_hook, receiver_args, retry_requests
from test_controller_e2e import (  # noqa: F401  (fixtures are used by name)
    NAMESPACE,
    POLICIES,
    TOKEN,
    Gitlab,
    Kube,
    Process,
    binary,
    gitlab,
    job_policy,
    kube,
    ready_condition,
    secret,
    sim,
    start_controller,
    wait_for,
    wait_for_holder,
    wait_ready_reason,
    workdir,
)

WRONG_SECRET: Final = "e2e-webhook-secret-xxxx"
POLICY: Final = "on-hooks"
INTERVAL: Final = "10m"
#: How long a delivery may take to lead to its retry: "a few seconds", far below the interval.
PROMPTLY: Final = 5.0
#: How long GitLab is watched for requests that must not come (a delivery is acted on within
#: a second here: see the first test).
QUIET_FOR: Final = 3.0
STUCK: Final = "stuck_or_timeout_failure"

RETRY_RULES: Final = [
    {"name": "retry-stuck", "match": {"statuses": ["failed"], "failureReasons": [STUCK]}, "retry": {"limit": 2}},
]


# --------------------------------------------------------------------------- the simulator


def hook_deliveries(gitlab: Gitlab, hook: int, job: int, status: str) -> list[dict[str, Any]]:
    return [d for d in sim(gitlab, "GET", f"hooks/{hook}/deliveries") if d["job_id"] == job and d["build_status"] == status]


def wait_for_delivery(gitlab: Gitlab, hook: int, job: int, status: str) -> dict[str, Any]:
    """The simulator's delivery of ``job`` moving into ``status``, once it has been answered."""

    def answered() -> dict[str, Any] | None:
        sent = hook_deliveries(gitlab, hook, job, status)
        return sent[0] if sent else None

    return wait_for(f"hook {hook} to deliver job {job} ({status})", answered, PROMPTLY)


@contextlib.contextmanager
def sim_hook(gitlab: Gitlab, url: str, token: str, project: int) -> Iterator[int]:
    """A Job Hook registered with the simulator for one project; removed once it has nothing
    left to send (so no delivery of one test reaches the next)."""
    hook = sim(gitlab, "POST", "hooks", {"url": url, "token": token, "project_ids": [project]})["id"]
    try:
        yield hook
    finally:
        with contextlib.suppress(AssertionError):
            wait_for(f"hook {hook} to have sent everything", lambda: sim(gitlab, "GET", f"hooks/{hook}")["stats"]["pending"] == 0, PROMPTLY)
        sim(gitlab, "DELETE", f"hooks/{hook}")


def fail_job(gitlab: Gitlab, project: int, job: int) -> float:
    """Fails ``job`` for the reason the policy retries; returns when (``time.monotonic``)."""
    at = time.monotonic()
    sim(gitlab, "POST", f"projects/{project}/jobs/{job}/status", {"status": "failed", "failure_reason": STUCK})
    return at


def wait_until_gitlab_is_quiet(gitlab: Gitlab, quiet_for: float = 1.0) -> None:
    """Waits until no request has reached the simulator for ``quiet_for`` seconds (so work in
    flight has landed before the request log is cleared)."""
    last = {"count": -1, "since": time.monotonic()}

    def settled() -> bool:
        count, now = len(sim(gitlab, "GET", "requests")), time.monotonic()
        if count != last["count"]:
            last.update(count=count, since=now)
            return False
        return now - last["since"] >= quiet_for

    wait_for("the simulator to get no more requests", settled, PROMPTLY)


# --------------------------------------------------------------------------- jobwarden


def start_replica(binary: pathlib.Path, kube: Kube, workdir: pathlib.Path, port: int) -> Replica:
    identity = f"127.0.0.1:{port}"
    process, metrics_url = start_controller(
        binary,
        kube,
        workdir,
        identity,
        extra_args=receiver_args(identity),
        extra_env=RECEIVER_ENV,
    )
    replica = Replica(process, identity, metrics_url)
    replica.wait_listening()
    return replica


@dataclasses.dataclass
class Scenario:
    project: int
    jobs: list[int]


@pytest.fixture(scope="module")
def scenario(gitlab: Gitlab) -> Scenario:
    """A project of its own with one pipeline of running jobs, which only the tests move."""
    project = sim(gitlab, "POST", "projects", {"path": "hooks/app"})["id"]
    jobs = [{"name": f"rspec {i}/4", "stage": "test", "status": "running"} for i in range(1, 5)]
    pipeline = sim(gitlab, "POST", f"projects/{project}/pipelines", {"ref": "main", "jobs": jobs})
    return Scenario(project, pipeline["job_ids"])


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    leader = free_port()
    return leader, free_port(avoid={leader})


@pytest.fixture(scope="module")
def policy(kube: Kube, gitlab: Gitlab, scenario: Scenario) -> None:
    """The token's Secret, and a policy retrying the scenario's stuck jobs every 10 minutes."""
    kube.create(f"api/v1/namespaces/{NAMESPACE}/secrets", secret(NAMESPACE, "gitlab-token", TOKEN))
    manifest = job_policy(POLICY, gitlab.url, [str(scenario.project)], RETRY_RULES)
    manifest["spec"]["interval"] = INTERVAL
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", manifest)


@pytest.fixture(scope="module")
def leader(binary: pathlib.Path, kube: Kube, policy: None, workdir: pathlib.Path, ports: tuple[int, int]) -> Iterator[Replica]:
    replica = start_replica(binary, kube, workdir, ports[0])
    try:
        wait_for_holder(kube, replica.identity)
        # The first run: the policy now observes the project, so its deliveries count.
        wait_ready_reason(kube, POLICY, "True", "Reconciled")
        yield replica
    finally:
        replica.process.stop()


@pytest.fixture(scope="module")
def standby(binary: pathlib.Path, kube: Kube, leader: Replica, workdir: pathlib.Path, ports: tuple[int, int]) -> Iterator[Replica]:
    replica = start_replica(binary, kube, workdir, ports[1])
    try:
        wait_for("the second replica to stand by", lambda: replica.logged("standing by"))
        assert kube.lease()["spec"]["holderIdentity"] == leader.identity, "the leader keeps the Lease"
        yield replica
    finally:
        replica.process.stop()


# --------------------------------------------------------------------------- checks


def status_of(kube: Kube) -> dict[str, Any]:
    return kube.policy(POLICY)["status"]


def wait_for_retry(gitlab: Gitlab, project: int, job: int, since: float) -> float:
    """Waits for GitLab to be asked to retry ``job``; returns the seconds since ``since``."""
    wait_for(f"a retry of job {job}", lambda: retry_requests(gitlab, project, job) or None, PROMPTLY)
    return time.monotonic() - since


def check_status_after_retry(kube: Kube, before: dict[str, Any], job: int) -> dict[str, Any]:
    """The policy's status once it counts the retry of ``job``: one more retry, the action on
    top of the recent ones, and no full run (``lastSyncTime`` as ``before``)."""

    def counted() -> dict[str, Any] | None:
        status = status_of(kube)
        return status if status["counters"]["retried"] == before["counters"]["retried"] + 1 else None

    status = wait_for(f"the status to count the retry of job {job}", counted, PROMPTLY)
    newest = status["recentActions"][0]
    assert (newest["action"], newest["jobId"], newest["outcome"], newest["rule"]) == ("retry", job, "Succeeded", "retry-stuck"), newest
    assert newest["newJobId"] > job, newest
    assert status["lastSyncTime"] == before["lastSyncTime"], "a delivery is not a full run"
    assert status["observedGeneration"] == before["observedGeneration"]
    ready = ready_condition({"status": status})
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Reconciled"), ready
    return status


def wait_for_retried_event(kube: Kube, job: int) -> dict[str, Any]:
    def published() -> dict[str, Any] | None:
        for event in kube.events():
            if (
                event.get("regarding", {}).get("name") == POLICY
                and event.get("reason") == "Retried"
                and event.get("note", "").startswith(f"retried job {job} ")
            ):
                return event
        return None

    return wait_for(f"a Retried event for job {job}", published, PROMPTLY)


# --------------------------------------------------------------------------- tests


def test_a_delivery_to_the_leader_leads_to_a_retry_long_before_the_interval(
    kube: Kube, gitlab: Gitlab, scenario: Scenario, leader: Replica
) -> None:
    before = status_of(kube)
    assert before["counters"]["retried"] == 0 and before["lastSyncTime"], before
    job = scenario.jobs[0]
    accepted = leader.deliveries("accepted")
    wait_until_gitlab_is_quiet(gitlab)
    sim(gitlab, "POST", "reset")

    with sim_hook(gitlab, leader.webhook_url, WEBHOOK_SECRET, scenario.project) as hook:
        failed_at = fail_job(gitlab, scenario.project, job)
        took = wait_for_retry(gitlab, scenario.project, job, failed_at)
        assert took < PROMPTLY, f"the retry came {took:.1f}s after the job failed (interval {INTERVAL})"
        delivery = wait_for_delivery(gitlab, hook, job, "failed")
        assert delivery["outcome"] == "202", delivery

    status = check_status_after_retry(kube, before, job)
    assert status["recentActions"][0]["project"] == str(scenario.project)
    event = wait_for_retried_event(kube, job)
    assert event["type"] == "Normal" and event["reportingInstance"] == leader.identity, event
    assert STUCK in event["note"], event["note"]
    assert leader.deliveries("accepted") > accepted
    assert leader.metric("jobwarden_webhook_action_latency_seconds_count") >= 1
    # The delivery was acted on by itself: the job was read, not the project's job list.
    endpoints = {f'{r["method"]} {r["endpoint"]}' for r in sim(gitlab, "GET", "requests")}
    assert "GET /projects/:id/jobs/:job_id" in endpoints, endpoints
    assert "GET /projects/:id/jobs" not in endpoints, endpoints


def test_a_delivery_to_the_standby_is_forwarded_to_the_leader(
    kube: Kube, gitlab: Gitlab, scenario: Scenario, leader: Replica, standby: Replica
) -> None:
    before = status_of(kube)
    job = scenario.jobs[1]
    accepted = leader.deliveries("accepted")
    forwarded = standby.deliveries("forwarded")

    with sim_hook(gitlab, standby.webhook_url, WEBHOOK_SECRET, scenario.project) as hook:
        failed_at = fail_job(gitlab, scenario.project, job)
        took = wait_for_retry(gitlab, scenario.project, job, failed_at)
        assert took < PROMPTLY, f"the retry came {took:.1f}s after the job failed (interval {INTERVAL})"
        delivery = wait_for_delivery(gitlab, hook, job, "failed")
        assert delivery["outcome"] == "202", f"the standby answers with the leader's status: {delivery}"

    status = check_status_after_retry(kube, before, job)
    assert status["recentActions"][0]["project"] == str(scenario.project)
    event = wait_for_retried_event(kube, job)
    assert event["reportingInstance"] == leader.identity, "the leader acted, not the standby"
    assert standby.deliveries("forwarded") > forwarded
    assert leader.deliveries("accepted") > accepted
    # The standby acted on nothing itself.
    assert standby.deliveries("accepted") == 0
    assert standby.metric("jobwarden_actions_total") == 0
    assert kube.lease()["spec"]["holderIdentity"] == leader.identity


def test_a_wrong_secret_gets_401_and_no_gitlab_request(
    kube: Kube, gitlab: Gitlab, scenario: Scenario, leader: Replica, standby: Replica
) -> None:
    before = status_of(kube)
    job = scenario.jobs[2]
    unauthorized = (leader.deliveries("unauthorized"), standby.deliveries("unauthorized"))
    forwarded = standby.deliveries("forwarded")
    wait_until_gitlab_is_quiet(gitlab)
    sim(gitlab, "POST", "reset")

    # GitLab itself, configured with the wrong secret token.
    with sim_hook(gitlab, leader.webhook_url, WRONG_SECRET, scenario.project) as hook:
        fail_job(gitlab, scenario.project, job)
        delivery = wait_for_delivery(gitlab, hook, job, "failed")
        assert delivery["outcome"] == "401", delivery
    # A caller with GitLab's headers: a wrong secret to both replicas, none to the leader.
    payload = job_hook(gitlab, scenario.project, job)
    assert payload["build_status"] == "failed"
    for url, token in [(leader.webhook_url, WRONG_SECRET), (standby.webhook_url, WRONG_SECRET), (leader.webhook_url, None)]:
        response = deliver(gitlab, url, payload, token)
        assert response.status_code == 401, (url, response.status_code, response.text)
        assert response.json() == {"error": "missing or wrong X-Gitlab-Token"}

    time.sleep(QUIET_FOR)
    assert sim(gitlab, "GET", "requests") == [], "a refused delivery reached GitLab"
    assert status_of(kube) == before
    # The simulator's delivery, the two posted to the leader and the one the standby passed on
    # (a standby knows no policy's own secret: the leader checks every token); the standby
    # counts the leader's refusal as its own.
    assert leader.deliveries("unauthorized") == unauthorized[0] + 4
    assert standby.deliveries("unauthorized") == unauthorized[1] + 1
    assert standby.deliveries("forwarded") == forwarded, "a refused delivery counted as forwarded"

    # The same delivery with the right secret is acted on: the job was actionable all along.
    response = deliver(gitlab, leader.webhook_url, payload, WEBHOOK_SECRET)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted"}
    wait_for_retry(gitlab, scenario.project, job, time.monotonic())
    check_status_after_retry(kube, before, job)


def test_the_replicas_stop_cleanly(kube: Kube, leader: Replica, standby: Replica) -> None:
    """Runs last: stops both replicas (the fixtures' stop is then a no-op)."""
    assert standby.process.stop() == 0, standby.process.stderr()
    assert leader.process.stop() == 0, leader.process.stderr()
    released = kube.lease()
    assert released is not None and not released["spec"].get("holderIdentity"), released
