"""jobwarden in cluster mode, end to end, over real HTTP and real processes.

Three processes per module, all on loopback and all stopped at the end:
- the GitLab simulator (``jobwarden simulate``, a fleet of 3 projects, seed 7);
- the Kubernetes API emulator (``emulator.py``), which writes the kubeconfig jobwarden uses;
- ``jobwarden run --namespace ci`` (cluster mode), as a Deployment would run it.

The test builds nothing: it runs ``target/debug/jobwarden`` (``cargo build`` first), or the binary
``JOBWARDEN_BIN`` names. It is run by CI with ``python3 -m pytest -q tests/kube``, never by
``cargo test``. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

import pytest
import requests

HERE: Final = pathlib.Path(__file__).resolve().parent
REPO: Final = HERE.parents[1]
#: ``JOBWARDEN_BIN`` (as in tests/conformance), else the debug build of this checkout.
BINARY: Final = pathlib.Path(os.environ.get("JOBWARDEN_BIN") or REPO / "target" / "debug" / "jobwarden")
EMULATOR: Final = HERE / "emulator.py"

TOKEN: Final = "glpat-e2e-simulated"
NAMESPACE: Final = "ci"
OTHER_NAMESPACE: Final = "other-team"
LEASE_NAMESPACE: Final = "jobwarden-system"
IDENTITY: Final = "jobwarden-e2e-0"
STANDBY_IDENTITY: Final = "jobwarden-e2e-1"

STARTUP_TIMEOUT: Final = 30.0
WAIT_TIMEOUT: Final = 60.0
SHUTDOWN_TIMEOUT: Final = 20.0
POLL_EVERY: Final = 0.25
REQUEST_TIMEOUT: Final = (5.0, 15.0)

POLICIES: Final = "apis/jobwarden.dev/v1alpha1"
EVENTS: Final = "apis/events.k8s.io/v1"
LEASES: Final = "apis/coordination.k8s.io/v1"

ACTION_REASONS: Final = {"retried": "Retried", "canceled": "Canceled", "played": "Played", "artifactsKept": "ArtifactsKept"}

T = TypeVar("T")


# --------------------------------------------------------------------------- waiting


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_TIMEOUT) -> T:
    """Polls ``probe`` until it returns something other than None/False (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (requests.RequestException, KeyError, IndexError, TypeError) as err:
            last = err
        else:
            if last is not None and last is not False:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(POLL_EVERY)


# --------------------------------------------------------------------------- processes


@dataclasses.dataclass
class Process:
    """A child process with its stderr in a file; stopped with SIGTERM (then SIGKILL)."""

    name: str
    popen: subprocess.Popen[str]
    stderr_path: pathlib.Path
    lines: queue.Queue[str] = dataclasses.field(default_factory=queue.Queue)

    @classmethod
    def start(cls, name: str, argv: list[str], workdir: pathlib.Path, env: dict[str, str] | None = None) -> Process:
        stderr_path = workdir / f"{name}.stderr.log"
        with stderr_path.open("w") as stderr:
            popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        process = cls(name, popen, stderr_path)
        threading.Thread(target=process._pump, daemon=True).start()
        return process

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def first_line(self, timeout: float = STARTUP_TIMEOUT) -> str:
        try:
            return self.lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.stop()
            raise AssertionError(f"{self.name} printed nothing within {timeout}s; stderr:\n{self.stderr()}") from None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        """jobwarden's JSON log lines (``--log-format json``)."""
        records = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (release a Lease, close sockets)."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=SHUTDOWN_TIMEOUT)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=SHUTDOWN_TIMEOUT)
            raise AssertionError(f"{self.name} did not stop on SIGTERM; stderr:\n{self.stderr()}") from None


@pytest.fixture(scope="module")
def binary() -> pathlib.Path:
    if not BINARY.is_file():
        pytest.fail(
            f"{BINARY} is missing: run `cargo build` in {REPO} first, or point JOBWARDEN_BIN at the binary "
            "(this test builds nothing)"
        )
    return BINARY


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("controller-e2e")


@dataclasses.dataclass
class Gitlab:
    url: str

    def counters(self) -> dict[str, int]:
        return requests.get(f"{self.url}/-/sim/counters", timeout=REQUEST_TIMEOUT).json()

    def requested_paths(self) -> list[str]:
        return [r["path"] for r in requests.get(f"{self.url}/-/sim/requests", timeout=REQUEST_TIMEOUT).json()]


def sim(gitlab: Gitlab, method: str, path: str, body: Any = None) -> Any:
    """A call to the simulator's admin API (``/-/sim/...``)."""
    response = requests.request(method, f"{gitlab.url}/-/sim/{path}", json=body, timeout=REQUEST_TIMEOUT)
    assert response.ok, f"{method} /-/sim/{path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


@contextlib.contextmanager
def simulator(binary: pathlib.Path, workdir: pathlib.Path, extra_args: Sequence[str] = ()) -> Iterator[Gitlab]:
    """``jobwarden simulate`` on a free loopback port with the module's token (plus
    ``extra_args``), stopped on exit."""
    process = Process.start(
        "simulator",
        [str(binary), "simulate", "--listen", "127.0.0.1:0", "--token", TOKEN, *extra_args],
        workdir,
    )
    try:
        line = process.first_line()
        match = re.fullmatch(r"jobwarden simulator listening on (http://127\.0\.0\.1:\d+)/?", line)
        assert match, f"unexpected first line {line!r}"
        yield Gitlab(match[1])
    finally:
        process.stop()


@pytest.fixture(scope="module")
def gitlab(binary: pathlib.Path, workdir: pathlib.Path) -> Iterator[Gitlab]:
    with simulator(binary, workdir, ["--projects", "3", "--seed", "7"]) as started:
        yield started


@dataclasses.dataclass
class Kube:
    """HTTP helpers for the emulator's REST paths."""

    url: str
    kubeconfig: pathlib.Path
    requests_log: pathlib.Path

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/{path}", timeout=REQUEST_TIMEOUT)
        response.raise_for_status()
        return response.json()

    def get_opt(self, path: str) -> dict[str, Any] | None:
        response = requests.get(f"{self.url}/{path}", timeout=REQUEST_TIMEOUT)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.url}/{path}", json=body, timeout=REQUEST_TIMEOUT)
        assert response.status_code == 201, response.text
        return response.json()

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.patch(
            f"{self.url}/{path}",
            data=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def policy(self, name: str) -> dict[str, Any]:
        return self.get(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies/{name}")

    def events(self, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return self.get(f"{EVENTS}/namespaces/{namespace}/events")["items"]

    def lease(self, name: str = "jobwarden") -> dict[str, Any] | None:
        return self.get_opt(f"{LEASES}/namespaces/{LEASE_NAMESPACE}/leases/{name}")

    def logged_requests(self) -> list[str]:
        return self.requests_log.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def kube(workdir: pathlib.Path) -> Iterator[Kube]:
    kubeconfig = workdir / "kubeconfig"
    process = Process.start(
        "kube-emulator",
        [sys.executable, str(EMULATOR), "--port", "0", "--kubeconfig-out", str(kubeconfig), "--log-requests"],
        workdir,
    )
    try:
        line = process.first_line()
        match = re.fullmatch(r"kube emulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"unexpected first line {line!r}; stderr:\n{process.stderr()}"
        yield Kube(match[1], kubeconfig, process.stderr_path)
    finally:
        process.stop()


def secret(namespace: str, name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def job_policy(name: str, gitlab_url: str, projects: list[str], rules: list[dict[str, Any]], secret_name: str = "gitlab-token") -> dict[str, Any]:
    return {
        "apiVersion": "jobwarden.dev/v1alpha1",
        "kind": "JobPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "gitlab": {"url": gitlab_url, "tokenSecretRef": {"name": secret_name, "key": "token"}},
            "projects": projects,
            "interval": "10s",
            "rules": rules,
        },
    }


HYGIENE_RULES: Final = [
    {
        "name": "retry-stuck",
        "match": {"statuses": ["failed"], "failureReasons": ["stuck_or_timeout_failure", "job_execution_timeout"]},
        "retry": {"limit": 2},
    },
    {"name": "cancel-stale-pending", "match": {"statuses": ["created", "pending"], "olderThan": "30m"}, "cancel": {}},
    {
        "name": "keep-release-artifacts",
        "match": {"statuses": ["success"], "tag": True, "artifactsExpireWithin": "72h"},
        "keepArtifacts": {},
    },
]

#: The project only the policy with a borrowed Secret targets: GitLab must never hear of it.
BORROWER_PROJECT: Final = "3"


@pytest.fixture(scope="module")
def policies(kube: Kube, gitlab: Gitlab) -> None:
    """The cluster as an operator leaves it before jobwarden starts."""
    kube.create(f"api/v1/namespaces/{NAMESPACE}/secrets", secret(NAMESPACE, "gitlab-token", TOKEN))
    # A valid token, but in another team's namespace: a policy in `ci` must not be able to use it.
    kube.create(f"api/v1/namespaces/{OTHER_NAMESPACE}/secrets", secret(OTHER_NAMESPACE, "borrowed-token", TOKEN))
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", job_policy("ci-hygiene", gitlab.url, ["1", "2"], HYGIENE_RULES))
    kube.create(
        f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies",
        job_policy("borrower", gitlab.url, [BORROWER_PROJECT], HYGIENE_RULES, secret_name="borrowed-token"),
    )
    # The emulator does no schema validation: this regex reaches jobwarden, which must refuse it.
    bad_rules = [{"name": "retry-logs", "match": {"statuses": ["failed"], "logPattern": "(unclosed"}, "retry": {"limit": 1}}]
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", job_policy("bad-regex", gitlab.url, ["1"], bad_rules))


def start_controller(
    binary: pathlib.Path,
    kube: Kube,
    workdir: pathlib.Path,
    identity: str,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    on_start: Callable[[Process], None] | None = None,
) -> tuple[Process, str]:
    """``jobwarden run --namespace ci`` against the emulator (plus ``extra_args``, with
    ``extra_env`` added to its environment); returns it and its metrics URL. ``on_start`` is
    called with the process as soon as it is started, before it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBWARDEN_", "POD_", "GITLAB_"))}
    env.update({"KUBECONFIG": str(kube.kubeconfig), "RUST_LOG": "info", "JOBWARDEN_LOG_FORMAT": "json"})
    env.update(extra_env or {})
    process = Process.start(
        f"jobwarden-{identity}",
        [
            str(binary), "run",
            "--namespace", NAMESPACE,
            "--metrics-listen", "127.0.0.1:0",
            "--lease-namespace", LEASE_NAMESPACE,
            "--identity", identity,
            # The GitLab simulator speaks plain http on loopback.
            "--allow-insecure-http",
            *extra_args,
        ],
        workdir,
        env,
    )
    if on_start is not None:
        on_start(process)

    def metrics_address() -> str | None:
        if not process.running():
            raise AssertionError(f"jobwarden exited with {process.popen.returncode}; stderr:\n{process.stderr()}")
        for record in process.log_records():
            addr = record.get("fields", {}).get("addr")
            if addr and "serving" in record.get("fields", {}).get("message", ""):
                return f"http://{addr}"
        return None

    return process, wait_for("jobwarden to serve its metrics", metrics_address, STARTUP_TIMEOUT)


@dataclasses.dataclass
class Controller:
    process: Process
    metrics_url: str


@pytest.fixture(scope="module")
def controller(binary: pathlib.Path, kube: Kube, gitlab: Gitlab, policies: None, workdir: pathlib.Path) -> Iterator[Controller]:
    process, metrics_url = start_controller(binary, kube, workdir, IDENTITY)
    try:
        yield Controller(process, metrics_url)
    finally:
        process.stop()


# --------------------------------------------------------------------------- helpers


def ready_condition(policy: dict[str, Any]) -> dict[str, Any] | None:
    for condition in policy.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return condition
    return None


def wait_ready_reason(kube: Kube, name: str, status: str, reason: str, generation: int | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        policy = kube.policy(name)
        ready = ready_condition(policy)
        if ready is None or (ready["status"], ready["reason"]) != (status, reason):
            return None
        if generation is not None and policy["status"].get("observedGeneration") != generation:
            return None
        return policy

    return wait_for(f"{name} to be Ready={status} ({reason})", probe)


def action_counters_total(policy: dict[str, Any]) -> int:
    counters = policy.get("status", {}).get("counters", {})
    return sum(counters.get(k, 0) for k in ACTION_REASONS)


def wait_for_actions(kube: Kube, name: str) -> dict[str, Any]:
    """The policy once it is Ready and its status counts at least one action taken."""

    def probe() -> dict[str, Any] | None:
        policy = kube.policy(name)
        return policy if ready_condition(policy) and action_counters_total(policy) > 0 else None

    return wait_for(f"{name} to report actions", probe)


def wait_for_holder(kube: Kube, identity: str, lease_name: str = "jobwarden", timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        lease = kube.lease(lease_name)
        return lease if lease and lease["spec"].get("holderIdentity") == identity else None

    return wait_for(f"the Lease {lease_name} to be held by {identity}", probe, timeout)


# --------------------------------------------------------------------------- tests


def test_a_policy_is_reconciled_and_reports_what_it_did(kube: Kube, controller: Controller) -> None:
    policy = wait_for_actions(kube, "ci-hygiene")
    status = policy["status"]
    ready = ready_condition(policy)
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled"), ready
    assert re.fullmatch(r"2 projects, \d+ jobs tracked", ready["message"]), ready["message"]
    assert ready["lastTransitionTime"]
    assert status["observedGeneration"] == policy["metadata"]["generation"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["lastSyncTime"])
    recent = status["recentActions"]
    assert 0 < len(recent) <= 20
    assert all(a["outcome"] in {"Succeeded", "Noop", "Failed", "DryRun", "SkippedOverBudget"} for a in recent)
    assert all(a["project"] in {"1", "2"} for a in recent), recent
    assert {a["rule"] for a in recent} <= {r["name"] for r in HYGIENE_RULES}
    times = [a["time"] for a in recent]
    assert times == sorted(times, reverse=True), "newest first"
    retries = [a for a in recent if a["action"] == "retry" and a["outcome"] == "Succeeded"]
    assert all(a["newJobId"] > a["jobId"] for a in retries), retries


def test_every_action_kind_taken_has_events_on_the_policy(kube: Kube, controller: Controller) -> None:
    policy = wait_for_actions(kube, "ci-hygiene")
    counters = policy["status"]["counters"]
    expected = {reason for key, reason in ACTION_REASONS.items() if counters.get(key, 0) > 0}

    def action_events() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in kube.events()
            if e.get("regarding", {}).get("name") == "ci-hygiene" and e.get("reason") in ACTION_REASONS.values()
        ]
        return events if expected <= {e["reason"] for e in events} else None

    events = wait_for(f"events {sorted(expected)} on ci-hygiene", action_events)
    for event in events:
        assert event["type"] == "Normal"
        assert event["regarding"]["kind"] == "JobPolicy"
        assert event["regarding"]["namespace"] == NAMESPACE
        assert event["regarding"]["uid"] == policy["metadata"]["uid"]
        assert event["reportingController"] == "jobwarden.dev/controller"
        assert event["reportingInstance"] == IDENTITY
        assert re.match(r"(retried|canceled|played|kept the artifacts of) job \d+ \(.+\) of project [12] by rule [a-z-]+", event["note"]), event["note"]
    # Different jobs are different Events, not one series.
    notes = [e["note"] for e in events]
    assert len(set(notes)) == len(notes)


def test_the_simulated_gitlab_received_the_actions(kube: Kube, gitlab: Gitlab, controller: Controller) -> None:
    policy = wait_for_actions(kube, "ci-hygiene")
    counters = policy["status"]["counters"]
    sent = gitlab.counters()
    for key, endpoint in [
        ("retried", "POST /projects/:id/jobs/:job_id/retry"),
        ("canceled", "POST /projects/:id/jobs/:job_id/cancel"),
        ("artifactsKept", "POST /projects/:id/jobs/:job_id/artifacts/keep"),
    ]:
        assert sent.get(endpoint, 0) >= counters.get(key, 0), (key, sent, counters)
    assert sum(v for k, v in sent.items() if k.startswith("POST ")) >= action_counters_total(policy) > 0


def test_the_leader_holds_the_lease(kube: Kube, controller: Controller) -> None:
    lease = wait_for_holder(kube, IDENTITY)
    spec = lease["spec"]
    assert spec["holderIdentity"] == IDENTITY
    assert spec["leaseDurationSeconds"] == 15
    assert spec["renewTime"] and spec["acquireTime"]


def test_a_secret_of_another_namespace_is_never_used(kube: Kube, gitlab: Gitlab, controller: Controller) -> None:
    policy = wait_ready_reason(kube, "borrower", "False", "SecretNotFound")
    message = ready_condition(policy)["message"]
    assert f"{NAMESPACE}/borrowed-token" in message, message
    # jobwarden read nothing from the other namespace (checked before this test reads there).
    assert not [line for line in kube.logged_requests() if f"/namespaces/{OTHER_NAMESPACE}/" in line and line.startswith("GET")]
    # The Secret does exist, one namespace over.
    assert kube.get_opt(f"api/v1/namespaces/{OTHER_NAMESPACE}/secrets/borrowed-token") is not None
    warnings = wait_for(
        "a SecretNotFound event",
        lambda: [e for e in kube.events() if e.get("reason") == "SecretNotFound" and e["regarding"]["name"] == "borrower"] or None,
    )
    assert warnings[0]["type"] == "Warning"
    # GitLab never heard of the project only this policy targets.
    paths = gitlab.requested_paths()
    assert paths, "the simulator logged the other policy's requests"
    assert not [p for p in paths if p.startswith(f"/api/v4/projects/{BORROWER_PROJECT}/")]


def test_an_invalid_spec_names_the_field_and_is_not_retried(kube: Kube, controller: Controller) -> None:
    policy = wait_ready_reason(kube, "bad-regex", "False", "InvalidSpec", generation=1)
    message = ready_condition(policy)["message"]
    assert "spec.rules[0].match.logPattern" in message, message
    events = wait_for(
        "an InvalidSpec event",
        lambda: [e for e in kube.events() if e.get("reason") == "InvalidSpec" and e["regarding"]["name"] == "bad-regex"] or None,
    )
    assert events[0]["type"] == "Warning"
    assert "spec.rules[0].match.logPattern" in events[0]["note"]


def test_a_spec_change_is_picked_up(kube: Kube, gitlab: Gitlab, controller: Controller) -> None:
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", job_policy("to-suspend", gitlab.url, ["1"], HYGIENE_RULES))
    wait_ready_reason(kube, "to-suspend", "True", "Reconciled", generation=1)
    patched = kube.merge_patch(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies/to-suspend", {"spec": {"suspend": True}})
    assert patched["metadata"]["generation"] == 2
    policy = wait_ready_reason(kube, "to-suspend", "True", "Suspended", generation=2)
    assert ready_condition(policy)["status"] == "True"
    # The counters and the last sync survive a suspension.
    assert "lastSyncTime" in policy["status"]


def test_status_patches_do_not_wake_the_controller(kube: Kube, controller: Controller) -> None:
    """With a 10 s interval, a policy's status is patched at most once per run; a controller
    woken by its own patches would patch many times a second. Noise only lowers the count."""
    wait_ready_reason(kube, "ci-hygiene", "True", "Reconciled")
    route = f"PATCH /{POLICIES}/namespaces/{NAMESPACE}/jobpolicies/ci-hygiene/status"

    def patches() -> int:
        return sum(1 for line in kube.logged_requests() if line.startswith(route))

    started, before = time.monotonic(), patches()
    time.sleep(12)
    elapsed, after = time.monotonic() - started, patches()
    runs_possible = int(elapsed // 10) + 1
    assert after - before <= runs_possible, f"{after - before} status patches in {elapsed:.1f}s"


def test_metrics_and_readiness(controller: Controller, kube: Kube) -> None:
    assert requests.get(f"{controller.metrics_url}/readyz", timeout=REQUEST_TIMEOUT).status_code == 200
    wait_ready_reason(kube, "bad-regex", "False", "InvalidSpec")
    wait_ready_reason(kube, "borrower", "False", "SecretNotFound")

    def gauge(text: str, state: str) -> float | None:
        match = re.search(rf'^jobwarden_policies\{{state="{state}"\}} (\S+)$', text, re.M)
        return float(match[1]) if match else None

    def scrape() -> str | None:
        text = requests.get(f"{controller.metrics_url}/metrics", timeout=REQUEST_TIMEOUT).text
        states = [gauge(text, state) or 0 for state in ("ready", "invalid", "error")]
        return text if all(n >= 1 for n in states) else None

    text = wait_for("the policies gauge to count ready, invalid and failing policies", scrape)
    assert re.search(r'^jobwarden_actions_total\{.*namespace="ci".*outcome="succeeded".*\} [1-9]', text, re.M), text
    assert re.search(r'^jobwarden_reconcile_errors_total\{error="secret_not_found",namespace="ci",policy="borrower"\} [1-9]', text, re.M), text


def test_a_standby_takes_over_when_the_leader_stops(binary: pathlib.Path, kube: Kube, controller: Controller, workdir: pathlib.Path) -> None:
    """Runs last: it stops the module's controller."""
    wait_for_holder(kube, IDENTITY)
    standby, _ = start_controller(binary, kube, workdir, STANDBY_IDENTITY)
    try:
        wait_for(
            "the second replica to stand by",
            lambda: any("standing by" in r.get("fields", {}).get("message", "") for r in standby.log_records()),
        )
        assert kube.lease()["spec"]["holderIdentity"] == IDENTITY, "the leader keeps the Lease"

        assert controller.process.stop() == 0, controller.process.stderr()
        # The leader released the Lease on SIGTERM, so the standby need not wait for it to expire.
        lease = wait_for_holder(kube, STANDBY_IDENTITY)
        assert lease["spec"]["leaseTransitions"] == 0, "a released Lease is taken without a transition"
        wait_for(
            "the standby to lead",
            lambda: any(r.get("fields", {}).get("message") == "became the leader" for r in standby.log_records()),
        )
    finally:
        assert standby.stop() == 0, standby.stderr()
    released = kube.lease()
    assert released is not None and not released["spec"].get("holderIdentity"), released
