"""Project sharding across replicas, end to end (issue 10), over real HTTP and real processes.

The fixtures of ``test_controller_e2e`` (imported, so this module gets its own instances): the
Kubernetes API emulator and the helpers that start ``jobwarden run --namespace ci``. Here:
- one GitLab simulator with a frozen fleet of ``PROJECTS`` projects, all in the ``fleet`` group
  tree (``src/sim/fleet.rs``), on the real clock at speed 1, with its per-user limits (job lists
  and all API requests) set to ``BUDGET`` requests per minute;
- ONE JobPolicy over the group ``fleet`` (subgroups included) retrying the jobs that failed with
  ``stuck_or_timeout_failure``, every 10 s; for the last tests, a second one (``HOOK_POLICY``,
  every 10 minutes) over a project of its own outside the fleet, acted on through Job Hook
  deliveries, and a third (``LATE_POLICY``, every 10 s) whose spec changes while shard 2 has no
  replica;
- three replicas, ``--shard-count 3 --shard-index 0/1/2``, each with ``--requests-per-minute
  BUDGET`` (so ``BUDGET / 3`` each), and later a fourth process standing by for shard 1. Every
  replica runs the webhook receiver (``--webhook-listen``, the secret in
  ``JOBWARDEN_WEBHOOK_TOKEN``); its identity is its webhook address ``127.0.0.1:<port>``, so
  that ``--webhook-forward-to 'http://{identity}/webhook'`` reaches the leader of any shard on
  loopback, as the headless Service ``jobwarden-peers`` does in a cluster. The tests name the
  replicas ``jobwarden-shard-<I>`` (and ``jobwarden-shard-1-standby``, ``jobwarden-shard-2-late``).

All replicas share the policy's one token, so the simulator cannot tell them apart by user; its
request log records each request's client address (``client``: ``127.0.0.1:<port>``), and a
background thread maps the local ports of each replica's connections to the simulator (from
``/proc/<pid>/fd`` and ``/proc/net/tcp``; jobwarden keeps its connections pooled) to the
replica. Every wait is bounded; every process is stopped by its fixture. Linux only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pathlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from job_hooks import RECEIVER_ENV, WEBHOOK_SECRET, Replica, deliver, free_port, job_hook, receiver_args, retry_requests
from test_controller_e2e import (  # noqa: F401  (fixtures are used by name)
    NAMESPACE,
    POLICIES,
    TOKEN,
    Gitlab,
    Kube,
    binary,
    job_policy,
    kube,
    ready_condition,
    secret,
    sim,
    simulator,
    start_controller,
    wait_for,
    wait_for_holder,
    workdir,
)

PROJECTS: Final = 300
SHARDS: Final = 3
#: Requests per minute to the simulator for all replicas together: jobwarden's
#: ``--requests-per-minute`` (divided by the shard count in each replica) and the simulator's
#: per-user limits. A shard polls its ~100 projects every 10 s (600 a minute) and its first
#: run adds ~120 retries: its third of the budget (500) paces it, and with the whole budget
#: each the three replicas would exceed the simulator's limits together.
BUDGET: Final = 1500
SHARE: Final = BUDGET // SHARDS
#: jobwarden's token bucket lets a twentieth of the budget go back to back (gitlab/ratelimit.rs).
BURST: Final = max(SHARE // 20, 1)
#: Fleet pipelines per project (the simulator's default is 5): fewer retries to pace.
PIPELINES_PER_PROJECT: Final = 2
#: The shortest Lease the flags allow: at least 2 s, renewed in whole seconds below ⅔ of it.
LEASE_DURATION: Final = 2
LEASE_RENEW: Final = 1
#: How often a standby checks the Lease (the renewal period, at most 2 s: leader.rs).
LEASE_RETRY: Final = min(LEASE_RENEW, 2)
POLICY: Final = "fleet-retry"
STUCK: Final = "stuck_or_timeout_failure"
#: The reasons ``failureReasons: [stuck_or_timeout_failure]`` matches (docs/jobpolicy.md).
STUCK_ALIASES: Final = {
    STUCK,
    "stuck_pending_with_matching_runners",
    "stuck_pending_no_matching_runners",
    "no_updates_running",
    "no_updates_canceling",
}
RETRY_LIMIT: Final = 2
#: Every job of the fleet (72 h of history) is within jobwarden's horizon.
HISTORY_HOURS: Final = 100
#: The shard whose replica is killed.
VICTIM: Final = 1
#: How long the standby's first run may take to reach a failed job: a full run over ~100
#: projects at BUDGET / 3 requests a minute takes about 10 s on an idle machine.
FAILOVER_ACTION_TIMEOUT: Final = 90.0
#: The first runs of three shards sharing one budget.
FIRST_RUN_TIMEOUT: Final = 90.0

#: A second policy, over one project outside the fleet, acting on Job Hook deliveries: it runs
#: every 10 minutes, so after its first run nothing but a delivery makes it act within the test.
HOOK_POLICY: Final = "hooks-retry"
HOOK_INTERVAL: Final = "10m"
#: How long a delivery may take to lead to its retry: "a few seconds" (the owner's GitLab
#: budget is busy with the fleet policy), far below the hook policy's interval.
PROMPTLY: Final = 10.0
#: How long GitLab is watched for a second retry of a delivered job.
QUIET_FOR: Final = 3.0
#: A third policy, for the merged status: its spec changes while shard ``LATE_SHARD`` has no
#: replica, and a new replica of that shard comes later.
LATE_POLICY: Final = "late-shard"
LATE_SHARD: Final = 2
LATE_NAME: Final = f"jobwarden-shard-{LATE_SHARD}-late"

JOB_LIST: Final = "/projects/:id/jobs"
RETRY: Final = "/projects/:id/jobs/:job_id/retry"

RETRY_RULES: Final = [
    {"name": "retry-stuck", "match": {"statuses": ["failed"], "failureReasons": [STUCK]}, "retry": {"limit": RETRY_LIMIT}},
]


def lease_name(shard: int) -> str:
    return f"jobwarden-shard-{shard}-of-{SHARDS}"


# --------------------------------------------------------------------------- who sent a request


class ConnectionOwners:
    """Which process owns which local port of a TCP connection to ``server_port``: sampled
    every 20 ms from ``/proc/<pid>/fd`` (socket inodes) and ``/proc/net/tcp`` (inode → local
    port) while the module runs. A port seen in two processes (reused by the kernel) is
    remembered as ambiguous."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.pids: dict[str, int] = {}
        self.owner: dict[int, str] = {}
        self.ambiguous: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self.lock:
            self.pids[name] = pid
        self.sample()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            with contextlib.suppress(OSError, ValueError):
                self.sample()

    def _ports_by_inode(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(remote.split(":")[1], 16) == self.server_port:
                    ports[inode] = int(local.split(":")[1], 16)
        return ports

    def sample(self) -> None:
        with self.lock:
            pids = dict(self.pids)
        ports = self._ports_by_inode()
        for name, pid in pids.items():
            fd_dir = pathlib.Path(f"/proc/{pid}/fd")
            try:
                fds = list(fd_dir.iterdir())
            except OSError:
                continue  # gone
            for fd in fds:
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    match = re.fullmatch(r"socket:\[(\d+)\]", target)
                    if match and match[1] in ports:
                        port = ports[match[1]]
                        with self.lock:
                            if self.owner.setdefault(port, name) != name:
                                self.ambiguous.add(port)

    def of(self, client: str) -> str | None:
        """The process that sent a request logged with ``client`` (``ip:port``)."""
        port = int(client.rsplit(":", 1)[1])
        with self.lock:
            assert port not in self.ambiguous, f"local port {port} was used by two processes"
            return self.owner.get(port)


# --------------------------------------------------------------------------- fixtures


@dataclasses.dataclass
class Fleet:
    gitlab: Gitlab
    owners: ConnectionOwners
    #: The group's projects (all of the fleet, none archived).
    project_ids: set[int]
    #: (project, job) of every job the policy must retry once: the latest attempt, failed with a
    #: stuck reason, with retries left.
    eligible: set[tuple[int, int]]
    #: Full path → id (jobwarden names a project by id or by its percent-encoded path).
    ids_by_path: dict[str, int]

    def project_of(self, path: str) -> int:
        """The project of a ``/api/v4/projects/:id/jobs[/:job_id/retry]`` path."""
        match = re.fullmatch(r"/api/v4/projects/([^/]+)/jobs(?:/\d+/retry)?", path)
        assert match, path
        project = urllib.parse.unquote(match[1])
        return int(project) if project.isdigit() else self.ids_by_path[project]

    def log(self) -> list[dict[str, Any]]:
        return sim(self.gitlab, "GET", "requests")


def eligible_jobs(jobs: list[dict[str, Any]]) -> set[int]:
    attempts = collections.Counter((j["pipeline_id"], j["name"]) for j in jobs)
    return {
        j["id"]
        for j in jobs
        if not j["bridge"]
        and not j["retried"]
        and j["erased_at"] is None
        and j["status"] == "failed"
        and j["failure_reason"] in STUCK_ALIASES
        and attempts[(j["pipeline_id"], j["name"])] - 1 < RETRY_LIMIT
    }


@pytest.fixture(scope="module")
def fleet(binary: pathlib.Path, workdir: pathlib.Path) -> Iterator[Fleet]:
    args = [
        "--projects", str(PROJECTS), "--seed", "7", "--frozen",
        "--pipelines-per-project", str(PIPELINES_PER_PROJECT),
        "--jobs-rate-limit", str(BUDGET), "--api-rate-limit", str(BUDGET),
    ]
    with simulator(binary, workdir, args) as gitlab:
        projects = sim(gitlab, "GET", "projects")
        project_ids = {p["id"] for p in projects if p["path"].startswith("fleet/") and not p["archived"]}
        ids_by_path = {p["path"]: p["id"] for p in projects}
        assert len(project_ids) == PROJECTS, f"{len(project_ids)} projects in the fleet tree"
        eligible = {(p, job) for p in sorted(project_ids) for job in eligible_jobs(sim(gitlab, "GET", f"projects/{p}/jobs"))}
        assert len(eligible) >= 20, f"the fleet has only {len(eligible)} stuck jobs to retry"
        print(f"\n{len(project_ids)} projects, {len(eligible)} jobs to retry")
        owners = ConnectionOwners(int(gitlab.url.rsplit(":", 1)[1]))
        owners.start()
        try:
            yield Fleet(gitlab, owners, project_ids, eligible, ids_by_path)
        finally:
            owners.stop()


@pytest.fixture(scope="module")
def policy(kube: Kube, fleet: Fleet) -> None:
    kube.create(f"api/v1/namespaces/{NAMESPACE}/secrets", secret(NAMESPACE, "gitlab-token", TOKEN))
    manifest = job_policy(POLICY, fleet.gitlab.url, [], RETRY_RULES)
    del manifest["spec"]["projects"]
    manifest["spec"]["groups"] = [{"path": "fleet", "includeSubgroups": True}]
    # Every eligible job in one run: the budgets must not be what holds retries back.
    manifest["spec"]["limits"] = {"maxActionsPerRun": 10000, "maxActionsPerHour": 100000}
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", manifest)


def start_shard(binary: pathlib.Path, kube: Kube, workdir: pathlib.Path, fleet: Fleet, shard: int, name: str) -> Replica:
    """A replica of ``shard``, called ``name`` in the simulator's request log, with the webhook
    receiver on a free port, which is also its identity; returns once the receiver listens (so
    the next port picked is another one)."""
    address = f"127.0.0.1:{free_port()}"
    process, metrics_url = start_controller(
        binary,
        kube,
        workdir,
        address,
        extra_args=[
            "--shard-index", str(shard),
            "--shard-count", str(SHARDS),
            "--requests-per-minute", str(BUDGET),
            "--history-hours", str(HISTORY_HOURS),
            "--lease-duration-seconds", str(LEASE_DURATION),
            "--lease-renew-seconds", str(LEASE_RENEW),
            # Requests are told apart by their connection's process (sampled from /proc every
            # 20 ms): connections must outlive a sample, so none is closed for being idle.
            "--idle-connections", "1000",
            *receiver_args(address),
        ],
        extra_env=RECEIVER_ENV,
        # Watched from the start: its first GitLab request may come before it serves /metrics.
        on_start=lambda started: fleet.owners.watch(name, started.popen.pid),
    )
    replica = Replica(process, address, metrics_url)
    replica.wait_listening()
    return replica


def replica_name(shard: int) -> str:
    """The name of shard ``shard``'s first replica (its identity is its webhook address)."""
    return f"jobwarden-shard-{shard}"


STANDBY: Final = f"jobwarden-shard-{VICTIM}-standby"


@pytest.fixture(scope="module")
def replicas(binary: pathlib.Path, kube: Kube, workdir: pathlib.Path, fleet: Fleet, policy: None) -> Iterator[dict[str, Replica]]:
    started: dict[str, Replica] = {}
    try:
        for shard in range(SHARDS):
            started[replica_name(shard)] = start_shard(binary, kube, workdir, fleet, shard, replica_name(shard))
        for shard in range(SHARDS):
            wait_for_holder(kube, started[replica_name(shard)].identity, lease_name(shard))
        yield started
    finally:
        for replica in started.values():
            replica.process.stop()


@pytest.fixture(scope="module")
def standby(binary: pathlib.Path, kube: Kube, workdir: pathlib.Path, fleet: Fleet, replicas: dict[str, Replica]) -> Iterator[Replica]:
    replica = start_shard(binary, kube, workdir, fleet, VICTIM, STANDBY)
    try:
        wait_for(f"the standby of shard {VICTIM} to stand by", lambda: replica.logged("standing by"))
        yield replica
    finally:
        replica.process.stop()


@dataclasses.dataclass
class HookProject:
    project: int
    #: Its running jobs.
    jobs: list[int]
    #: The shard that owns it.
    owner: int


@pytest.fixture(scope="module")
def hook_project(kube: Kube, fleet: Fleet, replicas: dict[str, Replica]) -> HookProject:
    """A project outside the fleet (the fleet policy never polls it) with a pipeline of running
    jobs, and ``HOOK_POLICY`` over it, every ``HOOK_INTERVAL``; returned once every shard has
    run that policy (its owner has observed the running jobs)."""
    project = sim(fleet.gitlab, "POST", "projects", {"path": "hooks/app"})["id"]
    specs = [{"name": f"rspec {i}/2", "stage": "test", "status": "running"} for i in (1, 2)]
    jobs = sim(fleet.gitlab, "POST", f"projects/{project}/pipelines", {"ref": "main", "jobs": specs})["job_ids"]
    manifest = job_policy(HOOK_POLICY, fleet.gitlab.url, [str(project)], RETRY_RULES)
    manifest["spec"]["interval"] = HOOK_INTERVAL
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", manifest)
    entries = wait_for(f"every shard to run {HOOK_POLICY}", lambda: shard_entries_on_generation(kube.policy(HOOK_POLICY)))
    owners = [int(index) for index, entry in entries.items() if entry.get("projects", 0) == 1]
    assert len(owners) == 1 and sum(e.get("projects", 0) for e in entries.values()) == 1, entries
    return HookProject(project, jobs, owners[0])


# --------------------------------------------------------------------------- checks


def shard_entries_on_generation(policy: dict[str, Any]) -> dict[str, Any] | None:
    """``status.shards`` once every shard has an entry on the policy's current generation."""
    shards = policy.get("status", {}).get("shards", {})
    generation = policy["metadata"]["generation"]
    if sorted(shards) != [str(i) for i in range(SHARDS)]:
        return None
    if any(entry.get("observedGeneration") != generation or not entry.get("lastSyncTime") for entry in shards.values()):
        return None
    return shards


def leader_of(kube: Kube, shard: int, running: dict[str, Replica]) -> str:
    """The name of the replica among ``running`` that holds ``shard``'s Lease."""
    holder = kube.lease(lease_name(shard))["spec"]["holderIdentity"]
    names = [name for name, replica in running.items() if replica.identity == holder and replica.process.running()]
    assert len(names) == 1, f"shard {shard}'s Lease is held by {holder!r}, none of {sorted(running)}"
    return names[0]



def shards_reported(policy: dict[str, Any]) -> bool:
    """Every shard has an entry on the current generation, and shard 0 merged them."""
    status = policy.get("status", {})
    generation = policy["metadata"]["generation"]
    shards = status.get("shards", {})
    if sorted(shards) != [str(i) for i in range(SHARDS)]:
        return False
    if any(entry.get("observedGeneration") != generation for entry in shards.values()):
        return False
    ready = ready_condition(policy)
    return ready is not None and ready["status"] == "True"


def wait_all_shards(kube: Kube) -> dict[str, Any]:
    def reported() -> dict[str, Any] | None:
        policy = kube.policy(POLICY)
        return policy if shards_reported(policy) else None

    return wait_for("every shard to report on the current generation", reported, FIRST_RUN_TIMEOUT)


def job_of(path: str) -> int:
    match = re.fullmatch(r"/api/v4/projects/[^/]+/jobs/(\d+)/retry", path)
    assert match, path
    return int(match[1])


def pollers(fleet: Fleet, log: list[dict[str, Any]]) -> dict[int, set[str]]:
    """Project id → the processes that listed its jobs."""
    polled: dict[int, set[str]] = collections.defaultdict(set)
    unattributed = []
    for entry in log:
        if entry["method"] == "GET" and entry["endpoint"] == JOB_LIST:
            owner = fleet.owners.of(entry["client"])
            if owner is None:
                unattributed.append(entry)
            polled[fleet.project_of(entry["path"])].add(owner or "?")
    if unattributed:
        clients = {e["client"] for e in unattributed}
        same = [e for e in log if e["client"] in clients]
        raise AssertionError(f"{len(unattributed)} job lists from unknown clients; their connections' requests: {same[:10]}")
    return polled


def retries(fleet: Fleet, log: list[dict[str, Any]]) -> collections.Counter[tuple[int, int]]:
    return collections.Counter(
        (fleet.project_of(e["path"]), job_of(e["path"]))
        for e in log
        if e["method"] == "POST" and e["endpoint"] == RETRY and 200 <= e["status"] < 300
    )


def assert_no_429(log: list[dict[str, Any]]) -> None:
    throttled = [e for e in log if e["status"] == 429]
    assert not throttled, f"{len(throttled)} answers 429, e.g. {throttled[:3]}"
    per_minute = collections.Counter(e["at"] // 60_000 for e in log)
    assert max(per_minute.values()) <= BUDGET, per_minute


# --------------------------------------------------------------------------- tests


def test_the_shards_status_adds_up_to_the_group(kube: Kube, fleet: Fleet, replicas: dict[str, Replica]) -> None:
    policy = wait_all_shards(kube)
    status = policy["status"]
    per_shard = {index: entry["projects"] for index, entry in status["shards"].items()}
    assert all(count > 0 for count in per_shard.values()), per_shard
    assert sum(per_shard.values()) == PROJECTS, per_shard
    # Shard 0 writes the top level at the end of its runs: it catches up within one interval.
    def merged() -> dict[str, Any] | None:
        policy = kube.policy(POLICY)
        return policy if policy["status"].get("projects") == PROJECTS and shards_reported(policy) else None

    policy = wait_for("shard 0 to merge every shard's report", merged, 30)
    ready = ready_condition(policy)
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled"), ready
    for index in per_shard:
        assert f"shard {index}: " in ready["message"], ready["message"]
    # A rendezvous hash of 300 projects over 3 shards: each near 100.
    assert all(60 <= count <= 140 for count in per_shard.values()), per_shard


def test_every_eligible_job_is_retried_exactly_once(kube: Kube, fleet: Fleet, replicas: dict[str, Replica]) -> None:
    wait_for(
        f"the {len(fleet.eligible)} eligible jobs to be retried",
        lambda: fleet.eligible <= set(retries(fleet, fleet.log())),
        FIRST_RUN_TIMEOUT,
    )
    # One more full run of every shard after that: nothing is retried a second time.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))

    def rerun() -> bool:
        shards = kube.policy(POLICY)["status"]["shards"]
        return all(shards[str(i)]["lastSyncTime"] > since for i in range(SHARDS))

    wait_for("every shard to run again", rerun, FIRST_RUN_TIMEOUT)
    counted = retries(fleet, fleet.log())
    twice = {job: n for job, n in counted.items() if n != 1}
    assert not twice, f"retried more than once: {twice}"
    assert set(counted) == fleet.eligible, (
        f"not eligible but retried: {sorted(set(counted) - fleet.eligible)[:10]}; "
        f"eligible, not retried: {sorted(fleet.eligible - set(counted))[:10]}"
    )
    status = kube.policy(POLICY)["status"]
    assert status["counters"]["retried"] == len(fleet.eligible), status["counters"]
    assert sum(e["counters"]["retried"] for e in status["shards"].values()) == len(fleet.eligible)


def test_no_project_is_polled_by_two_replicas(kube: Kube, fleet: Fleet, replicas: dict[str, Replica]) -> None:
    log = fleet.log()
    polled = pollers(fleet, log)
    shared = {project: sorted(who) for project, who in polled.items() if len(who) > 1}
    assert not shared, f"projects polled by two replicas: {dict(list(shared.items())[:10])}"
    assert set(polled) == fleet.project_ids, f"never polled: {sorted(fleet.project_ids - set(polled))[:10]}"
    # Each replica polls as many projects as its shard reports, and acts on its own projects only.
    owned = collections.Counter(next(iter(who)) for who in polled.values())
    shards = kube.policy(POLICY)["status"]["shards"]
    assert {name: owned[name] for name in replicas} == {replica_name(i): shards[str(i)]["projects"] for i in range(SHARDS)}
    owner_of = {project: next(iter(who)) for project, who in polled.items()}
    for entry in log:
        if entry["method"] == "POST":
            assert fleet.owners.of(entry["client"]) == owner_of[fleet.project_of(entry["path"])], entry


def busiest(times: list[int], window_ms: int) -> int:
    """The most requests received within any ``window_ms`` (sliding) of ``times`` (ms)."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_the_shards_together_stay_inside_the_budget(fleet: Fleet, replicas: dict[str, Replica]) -> None:
    log = fleet.log()
    assert_no_429(log)
    by_replica: dict[str, list[int]] = collections.defaultdict(list)
    for entry in log:
        by_replica[fleet.owners.of(entry["client"]) or "?"].append(entry["at"])
    assert set(by_replica) == set(replicas), sorted(by_replica)
    minute = {name: busiest(times, 60_000) for name, times in by_replica.items()}
    ten = {name: busiest(times, 10_000) for name, times in by_replica.items()}
    print(
        f"\nbusiest minute per replica {minute}, all {busiest([e['at'] for e in log], 60_000)}; "
        f"busiest 10 s {ten} (share {SHARE}/min, burst {BURST})"
    )
    # Each replica keeps to its share of the budget, plus the token bucket's burst.
    assert all(peak <= SHARE + BURST + 1 for peak in minute.values()), minute
    assert all(peak <= SHARE / 6 + BURST + 1 for peak in ten.values()), ten
    # ... and that share is what paced their first runs (a third of what one replica would
    # send with the whole budget).
    assert max(ten.values()) >= SHARE / 6 * 0.7, ten


def test_a_standby_takes_over_a_killed_shard_within_the_lease_duration(
    kube: Kube, fleet: Fleet, replicas: dict[str, Replica], standby: Replica
) -> None:
    victim = replica_name(VICTIM)
    before = wait_for_holder(kube, replicas[victim].identity, lease_name(VICTIM))
    assert kube.lease(lease_name(VICTIM))["spec"]["holderIdentity"] == replicas[victim].identity, "the replica keeps its Lease"
    assert before["spec"]["leaseDurationSeconds"] == LEASE_DURATION
    log = fleet.log()
    owner_of = {project: next(iter(who)) for project, who in pollers(fleet, log).items()}
    victims = sorted(p for p, who in owner_of.items() if who == victim)[:3]
    jobs = {}
    for project in victims:
        specs = [{"name": f"stuck {i}/2", "stage": "test", "status": "running"} for i in (1, 2)]
        jobs[project] = sim(fleet.gitlab, "POST", f"projects/{project}/pipelines", {"ref": "main", "jobs": specs})["job_ids"]

    replicas[victim].process.kill()
    killed_at = time.monotonic()
    lease = wait_for_holder(kube, standby.identity, lease_name(VICTIM), timeout=LEASE_DURATION + LEASE_RETRY + 10)
    took = time.monotonic() - killed_at
    # The Lease expires at most LEASE_DURATION after the kill (the last renewal came before
    # it), and the standby looks every LEASE_RETRY; one more second for the emulator and polling.
    assert took <= LEASE_DURATION + LEASE_RETRY + 1.0, f"the standby took the Lease {took:.1f}s after the kill"
    print(f"\nstandby took shard {VICTIM}'s Lease {took:.2f}s after SIGKILL (lease duration {LEASE_DURATION}s)")
    assert lease["spec"]["leaseTransitions"] == before["spec"].get("leaseTransitions", 0) + 1, lease
    for shard in set(range(SHARDS)) - {VICTIM}:
        assert kube.lease(lease_name(shard))["spec"]["holderIdentity"] == replicas[replica_name(shard)].identity

    # New failures in the dead replica's projects: its standby retries them.
    failed = {(project, job) for project, ids in jobs.items() for job in ids}
    for project, job in sorted(failed):
        sim(fleet.gitlab, "POST", f"projects/{project}/jobs/{job}/status", {"status": "failed", "failure_reason": STUCK})
    wait_for(f"the standby to retry {sorted(failed)}", lambda: failed <= set(retries(fleet, fleet.log())), FAILOVER_ACTION_TIMEOUT)

    log = fleet.log()
    counted = retries(fleet, log)
    assert all(counted[job] == 1 for job in failed), {job: counted[job] for job in failed}
    for entry in log:
        if entry["method"] == "POST" and entry["endpoint"] == RETRY and (fleet.project_of(entry["path"]), job_of(entry["path"])) in failed:
            assert fleet.owners.of(entry["client"]) == STANDBY, entry
    # The standby polls the dead replica's share, and still no project is polled by two shards.
    share = {p for p, who in owner_of.items() if who == victim}
    wait_for(
        "the standby to poll the dead replica's projects",
        lambda: {p for p, who in pollers(fleet, fleet.log()).items() if STANDBY in who} == share,
        FAILOVER_ACTION_TIMEOUT,
    )
    log = fleet.log()
    after = pollers(fleet, log)
    by_shard = {p: {victim if w == STANDBY else w for w in who} for p, who in after.items()}
    shared = {p: sorted(who) for p, who in by_shard.items() if len(who) > 1}
    assert not shared, shared
    assert_no_429(log)


def test_a_delivery_to_another_shard_is_forwarded_to_the_owner_and_acted_on_at_once(
    kube: Kube, fleet: Fleet, replicas: dict[str, Replica], standby: Replica, hook_project: HookProject
) -> None:
    """Behind one Service, two Job Hook deliveries in three reach a replica of a shard that does
    not own the job's project. That replica forwards the delivery to the leader of the owning
    shard, and GitLab hears 202 ``forwarded``: the owner retries the job once, within seconds,
    not at its policy's next run 10 minutes later."""
    running = {**replicas, STANDBY: standby}
    owner_name = leader_of(kube, hook_project.owner, running)
    other_shard = next(shard for shard in range(SHARDS) if shard != hook_project.owner)
    other_name = leader_of(kube, other_shard, running)
    owner, other = running[owner_name], running[other_name]
    project, job = hook_project.project, hook_project.jobs[0]
    before = kube.policy(HOOK_POLICY)["status"]["shards"][str(hook_project.owner)]
    counts = {"accepted": owner.deliveries("accepted"), "forwarded": other.deliveries("forwarded")}
    acted = {name: replica.deliveries("accepted") for name, replica in running.items() if name != owner_name and replica.process.running()}

    sim(fleet.gitlab, "POST", f"projects/{project}/jobs/{job}/status", {"status": "failed", "failure_reason": STUCK})
    payload = job_hook(fleet.gitlab, project, job)
    assert (payload["build_status"], payload["build_failure_reason"]) == ("failed", STUCK), payload
    delivered_at = time.monotonic()
    response = deliver(fleet.gitlab, other.webhook_url, payload, WEBHOOK_SECRET)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "forwarded"}

    wait_for(f"a retry of job {job}", lambda: retry_requests(fleet.gitlab, project, job) or None, PROMPTLY)
    took = time.monotonic() - delivered_at
    print(f"\njob {job} (shard {hook_project.owner}) delivered to shard {other_shard}, retried {took:.2f}s later")
    assert took < PROMPTLY, f"the retry came {took:.1f}s after the delivery (interval {HOOK_INTERVAL})"
    time.sleep(QUIET_FOR)
    sent = retry_requests(fleet.gitlab, project, job)
    assert len(sent) == 1, f"job {job} retried {len(sent)} times: {sent}"
    assert fleet.owners.of(sent[0]["client"]) == owner_name, "the owner's leader retried it"

    # Received once by each: forwarded by the other shard's leader, accepted by the owner's.
    assert other.deliveries("forwarded") == counts["forwarded"] + 1
    assert owner.deliveries("accepted") == counts["accepted"] + 1
    assert {name: running[name].deliveries("accepted") for name in acted} == acted, "only the owner accepted it"
    # The owner's report counts the retry; its last full run is still the first one.
    def counted() -> dict[str, Any] | None:
        entry = kube.policy(HOOK_POLICY)["status"]["shards"][str(hook_project.owner)]
        return entry if entry["counters"]["retried"] == before["counters"]["retried"] + 1 else None

    entry = wait_for(f"shard {hook_project.owner}'s status to count the retry", counted, PROMPTLY)
    assert entry["recentActions"][0]["jobId"] == job, entry["recentActions"][0]
    assert entry["lastSyncTime"] == before["lastSyncTime"], "a delivery is not a full run"


def test_the_status_is_shards_pending_until_every_shard_reports_on_the_generation(
    binary: pathlib.Path, kube: Kube, workdir: pathlib.Path, fleet: Fleet, replicas: dict[str, Replica], standby: Replica
) -> None:
    """After a spec change, a policy is not Ready until every shard has run it: while shard
    ``LATE_SHARD`` has no replica, the status shard 0 writes says Ready=False, reason
    ``ShardsPending``, naming that shard (its report on the previous generation does not
    count); once a new replica of that shard reports, Ready turns True (``Reconciled``, naming
    every shard) at shard 0's next run."""
    assert LATE_SHARD not in (0, VICTIM)
    project = sim(fleet.gitlab, "POST", "projects", {"path": "late/app"})["id"]
    kube.create(f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies", job_policy(LATE_POLICY, fleet.gitlab.url, [str(project)], RETRY_RULES))
    wait_for(f"every shard to run {LATE_POLICY}", lambda: shard_entries_on_generation(kube.policy(LATE_POLICY)))
    running = {**replicas, STANDBY: standby}
    stopped = leader_of(kube, LATE_SHARD, running)
    assert running[stopped].process.stop() == 0, running[stopped].process.stderr()

    path = f"{POLICIES}/namespaces/{NAMESPACE}/jobpolicies/{LATE_POLICY}"
    generation = kube.merge_patch(path, {"spec": {"limits": {"maxActionsPerRun": 50}}})["metadata"]["generation"]
    assert generation == 2

    def with_ready(key: str, value: str) -> Callable[[], dict[str, Any] | None]:
        """The late policy, once its status is on `generation` with `Ready.<key>` = `value`."""

        def check() -> dict[str, Any] | None:
            policy = kube.policy(LATE_POLICY)
            ready = ready_condition(policy)
            on_generation = policy["status"].get("observedGeneration") == generation
            return policy if on_generation and ready is not None and ready[key] == value else None

        return check

    policy = wait_for(f"shard 0 to report {LATE_POLICY} pending on generation {generation}", with_ready("reason", "ShardsPending"))
    ready = ready_condition(policy)
    assert ready["status"] == "False", ready
    # Shard 1 may not have run the new spec yet either when shard 0 wrote; shard 0 always has.
    expected = rf"waiting for shard\(s\) (1, )?{LATE_SHARD} of {SHARDS} to report on generation {generation}"
    assert re.fullmatch(expected, ready["message"]), ready["message"]
    assert policy["status"]["shards"][str(LATE_SHARD)]["observedGeneration"] == generation - 1

    late = start_shard(binary, kube, workdir, fleet, LATE_SHARD, LATE_NAME)
    try:
        wait_for_holder(kube, late.identity, lease_name(LATE_SHARD))

        policy = wait_for(f"{LATE_POLICY} to be Ready once shard {LATE_SHARD} reports", with_ready("status", "True"))
        ready = ready_condition(policy)
        assert ready["reason"] == "Reconciled", ready
        assert all(f"shard {index}: " in ready["message"] for index in range(SHARDS)), ready["message"]
        assert shard_entries_on_generation(policy), policy["status"]["shards"]
        assert policy["status"]["projects"] == 1
    finally:
        late.process.stop()
