#!/usr/bin/env python3
"""Chaos suite: `jobwarden run` against a faulty simulated GitLab, as separate processes.

Starts `jobwarden simulate` (50 live fleet projects) and `jobwarden run` (a retry, a cancel and
a play policy over those 50 projects, JSON logs to a file, a state directory), both on
127.0.0.1, then injects faults through the simulator's admin API (`PUT /-/sim/faults`) in
phases, while a background thread keeps adding work (scenario pipelines with stuck jobs, stale
pending jobs and manual deploys whose stages succeeded) and plays the part of the runners
(a retried scenario job fails again, a played deploy succeeds):

  A  5% 5xx answers
  B  1% requests held 8 s (jobwarden's client gives up after 5 s: --request-timeout-seconds 5)
  C  1% mutations applied late (the client is left without an answer, GitLab acts 3 s later)
  K  kill -9 of jobwarden under 20% apply-late and 15% held requests, aimed at a moment its
     state file shows a call in flight (typically a held POST, which GitLab carries out after
     the kill), then a restart with the same --state-dir two seconds later
  D  1% JSON bodies cut in half
  E  1% connections dropped without an answer (and not carried out)
  F  Rack::Attack 429 storm with Retry-After (every 10th request), ending half a second before
     a minute boundary (each Retry-After runs to the end of the window)
  G  429 without Retry-After: a "neighbour" with the same token exhausts the `jobs_index` limit
     (`simulate --jobs-rate-limit`, set above jobwarden's own budget so that only the neighbour
     can exhaust it) at the start of a minute; the phase lasts until jobwarden got one (<= 30 s)
  H  60 s outage (every connection dropped); more work is added half-way through
  R  faults off: recovery, then settling

Timing. The simulator's rate-limit windows are fixed one-minute windows of its clock; F is
placed in the 15 s before a minute boundary (so the Retry-After pauses it causes end with
it), G right after that boundary, and the outage right after G: jobwarden pauses job listings
for a fixed 60 s after a 429 without Retry-After, a pause that so ends inside the outage
instead of stalling the other phases. The phases before F share what time is left before
that boundary (100 to 160 s, at least 15 s each: a policy run every 10 s plus its own time).
Wall time is about 3.5 to 4.5 minutes.

Why the simulator runs at --speed 1. `jobwarden run` reads the system clock, while a
simulator at --speed N > 1 stamps jobs on a clock that runs ahead of it (it starts at the wall
clock and runs N times as fast): a job that fails after the start finishes "in the future" as
jobwarden sees it, so no retry backoff or `olderThan` ever elapses for it and the suite would
measure the clock skew, not jobwarden. (Only `jobwarden demo`, which runs the simulator in
process, follows the simulated clock.) The live fleet still moves on its own at speed 1, and
the background thread supplies the work the phases need.

Why --in-doubt-seconds 20. After an ambiguous answer (timeout, dropped connection, 5xx) to a
mutation, jobwarden leaves the job alone for the in-doubt window, then re-reads it. The window
must outlast every way the simulator can still carry a mutation out after its client gave up:
the apply-late delay (3 s here) and the hold of a "timed out" request (8 s here). 20 s covers
both with room, and keeps the suite short; the default (300 s) would not fit in five minutes.

What is checked at the end, from the simulator's request log (`GET /-/sim/requests`) and job
snapshots (`GET /-/sim/projects/:id/jobs`), and jobwarden's logs:

- no panic in any process's stderr;
- no duplicate action: no job id retried or played twice with effect (a 2xx answer, or
  `applied_late`), and no job name in a pipeline with more attempts than the retry limit allows;
- no action that no policy allows (a retry of a job that failed for another reason, a cancel
  of a job queued less than 30 minutes, a play of a job whose build or test stage failed);
- no lost action: once the faults are off, every job that a policy should act on (a failed
  stuck job with retries left and its backoff elapsed, a stale pending job, a manual job whose
  build and test stages succeeded) is acted on; a job still eligible after the grace period
  (in-doubt window + two intervals + backoff cap + request timeout) counts as lost;
- every mutation GitLab carried out has a `jobwarden::action` log line for that job id and
  action (any outcome);
- after the outage, jobwarden's first successful GET comes within 2x the client's backoff cap
  (30 s);
- `/healthz`, polled every 0.5 s, answers throughout, except while the process is dead (from
  the kill -9 to the restarted process's first answer);
- jobwarden did meet the 429 without Retry-After (else phase G tested nothing).

Every process is started in its own process group with PR_SET_PDEATHSIG, and stopped at the
end whatever happens. Loopback only. Exit status 0 when every check passes, 1 otherwise; the
working directory (logs, policies, request log) is kept on failure or with --keep.

Usage: python3 tests/chaos/chaos.py [--bin target/debug/jobwarden] [--seed 7] [--keep]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "chaos-token"
PROJECTS = 50
INTERVAL_S = 10
REQUEST_TIMEOUT_S = 5
IN_DOUBT_S = 20
HOLD_MS = 8_000
APPLY_LATE_MS = 3_000
RETRY_LIMIT = 2
BACKOFF_BASE_S, BACKOFF_FACTOR, BACKOFF_MAX_S = 2, 2, 10
CANCEL_OLDER_THAN_S = 30 * 60
# The client's GET backoff: 500 ms doubling up to 30 s (src/gitlab/backoff.rs).
CLIENT_BACKOFF_CAP_S = 30.0
# jobwarden's own request budget, and the simulator's jobs_index limit above it: only the
# neighbour of phase G ever exhausts the latter.
REQUESTS_PER_MINUTE = 900
JOBS_RATE_LIMIT = 1_000
GRACE_S = IN_DOUBT_S + 2 * INTERVAL_S + BACKOFF_MAX_S + REQUEST_TIMEOUT_S
SETTLE_MAX_S = 60.0  # > GRACE_S: a job eligible since the outage's end would count as lost
OUTAGE_S = 60.0

STUCK = {
    "stuck_or_timeout_failure",
    "stuck_pending_with_matching_runners",
    "stuck_pending_no_matching_runners",
    "no_updates_running",
    "no_updates_canceling",
}
TIMEOUT = {"job_execution_timeout", "server_timeout_running", "server_timeout_canceling"}
RETRY_REASONS = STUCK | TIMEOUT | {"runner_system_failure"}
MUTATION = re.compile(r"^/api/v4/projects/([^/]+)/jobs/(\d+)/(retry|cancel|play)$")
NEIGHBOUR_MARK = "chaos_neighbour=1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_ts(value: str | None) -> float | None:
    if not value:
        return None
    # At most microseconds for fromisoformat; GitLab and jobwarden write UTC with a Z.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(value).timestamp()


# --- processes -------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
SETPRIV = shutil.which("setpriv")


def _child_setup() -> None:
    """Fallback without setpriv: runs in the child before exec (own process group, killed when
    this script dies)."""
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Processes:
    """Every process this script started, stopped on exit whatever happens. Each runs in its
    own process group and gets SIGKILL if this script dies first (PR_SET_PDEATHSIG, set by
    util-linux's setpriv, which then execs the program under the same pid)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], stdout: Any, stderr: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if SETPRIV:
            proc = subprocess.Popen(  # noqa: S603 (our own binary, fixed arguments)
                [SETPRIV, "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        else:
            proc = subprocess.Popen(  # noqa: S603
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                preexec_fn=_child_setup,  # noqa: PLW1509
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)


# --- the simulator's admin API ---------------------------------------------------------------


class Sim:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.admin = requests.Session()
        self.lock = threading.Lock()

    def _admin(self, method: str, path: str, **kw: Any) -> Any:
        kw.setdefault("timeout", 30)
        # One session per thread would be cleaner; a lock keeps the shared one safe.
        with self.lock:
            r = self.admin.request(method, f"{self.base}/-/sim{path}", **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def faults(self, **faults: Any) -> None:
        self._admin("PUT", "/faults", json=faults)

    def requests_log(self) -> list[dict[str, Any]]:
        return list(self._admin("GET", "/requests"))

    def now(self) -> float:
        return float(parse_ts(self._admin("GET", "/now")["now"]) or 0.0)

    def jobs(self, project: int) -> list[dict[str, Any]]:
        return list(self._admin("GET", f"/projects/{project}/jobs"))

    def add_pipeline(self, project: int, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._admin("POST", f"/projects/{project}/pipelines", json={"ref": "main", "jobs": jobs}))

    def set_status(self, project: int, job: int, status: str, reason: str | None = None) -> None:
        self._admin("POST", f"/projects/{project}/jobs/{job}/status", json={"status": status, "failure_reason": reason})


# --- policies --------------------------------------------------------------------------------


def write_policies(directory: Path, gitlab_url: str) -> None:
    projects = ", ".join(f'"{i}"' for i in range(1, PROJECTS + 1))
    head = f"""  gitlab:
    url: {gitlab_url}
    tokenSecretRef: {{name: gitlab-token, key: token}}
  projects: [{projects}]
  interval: {INTERVAL_S}s
  limits: {{maxActionsPerRun: 1000, maxActionsPerHour: 100000}}
"""
    docs = {
        "retry.yaml": f"""apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: retry-transient, namespace: chaos}}
spec:
{head}  rules:
    - name: retry-transient
      match:
        statuses: [failed]
        failureReasons: [stuck_or_timeout_failure, runner_system_failure, job_execution_timeout]
      retry:
        limit: {RETRY_LIMIT}
        backoff: {{duration: {BACKOFF_BASE_S}s, factor: {BACKOFF_FACTOR}, maxDuration: {BACKOFF_MAX_S}s}}
""",
        "cancel.yaml": f"""apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: cancel-stale, namespace: chaos}}
spec:
{head}  rules:
    - name: cancel-stale-pending
      match: {{statuses: [pending], olderThan: {CANCEL_OLDER_THAN_S // 60}m}}
      cancel: {{}}
""",
        "play.yaml": f"""apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {{name: play-when-green, namespace: chaos}}
spec:
{head}  rules:
    - name: play-when-green
      match:
        statuses: [manual]
        pipeline: {{stagesSucceeded: [build, test]}}
      play:
        variables:
          - {{key: TRIGGERED_BY, value: jobwarden-chaos}}
""",
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (directory / name).write_text(text)


# --- background threads ----------------------------------------------------------------------


class Health(threading.Thread):
    """Polls /healthz every 0.5 s, each time on a new connection (as a liveness probe does),
    and records every answer."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.stop = stop
        self.samples: list[tuple[float, bool, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.time()
            try:
                r = requests.get(self.url, timeout=2, headers={"Connection": "close"})
                ok, detail = r.status_code == 200, str(r.status_code)
            except requests.RequestException as err:
                ok, detail = False, type(err).__name__
            self.samples.append((t, ok, detail))
            self.stop.wait(max(0.0, 0.5 - (time.time() - t)))

    def first_ok_after(self, t: float) -> float | None:
        return next((s[0] for s in self.samples if s[0] >= t and s[1]), None)


def retry_job(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "stage": "test", "status": "failed", "failure_reason": reason, "age_seconds": 300}


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    # Two jobs failed for a transient reason (retried, and the runner part below fails their
    # new attempts again until the limit), one failed for the code's fault (left alone).
    "retry": [
        {"name": "chaos-build", "stage": "build", "status": "success", "age_seconds": 600},
        retry_job("chaos-rspec-stuck", "stuck_or_timeout_failure"),
        retry_job("chaos-rspec-runner", "runner_system_failure"),
        retry_job("chaos-lint", "script_failure"),
    ],
    # Build and test green, deploy waiting to be played.
    "play": [
        {"name": "chaos-build", "stage": "build", "status": "success", "age_seconds": 600},
        {"name": "chaos-test", "stage": "test", "status": "success", "age_seconds": 400},
        {"name": "chaos-deploy", "stage": "deploy", "status": "manual", "when": "manual"},
    ],
    # Two jobs waiting for a runner for hours.
    "cancel": [
        {"name": "chaos-build", "stage": "build", "status": "success", "age_seconds": 9000},
        {"name": "chaos-stale-a", "stage": "test", "status": "pending", "age_seconds": 7200},
        {"name": "chaos-stale-b", "stage": "test", "status": "pending", "age_seconds": 3 * 3600},
    ],
}


class Scenario(threading.Thread):
    """Adds scenario pipelines every `every` seconds while `adding` is set, and acts as their
    runners while `driving` is set: a pending retry of a chaos-rspec job fails again with the
    same reason, a played chaos-deploy succeeds (so a second play would be a visible replay)."""

    def __init__(self, sim: Sim, stop: threading.Event, seed: int, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.stop = stop
        self.adding = threading.Event()
        self.driving = threading.Event()
        self.driving.set()
        self.rng = random.Random(seed)
        self.every = every
        self.pipelines: dict[int, set[int]] = defaultdict(set)
        self.added: Counter[str] = Counter()
        self.runner_moves: Counter[str] = Counter()
        self.kinds = list(SCENARIOS)
        self.error: BaseException | None = None

    def add(self, kind: str) -> None:
        project = self.rng.randint(1, PROJECTS)
        created = self.sim.add_pipeline(project, SCENARIOS[kind])
        self.pipelines[project].add(int(created["id"]))
        self.added[kind] += 1

    def add_batch(self, per_kind: int) -> None:
        for _ in range(per_kind):
            for kind in self.kinds:
                self.add(kind)

    def drive(self) -> None:
        now = self.sim.now()
        for project, pipelines in list(self.pipelines.items()):
            for job in self.sim.jobs(project):
                if job["pipeline_id"] not in pipelines or job["retried"] or job["status"] != "pending":
                    continue
                queued = parse_ts(job["queued_at"]) or now
                if now - queued < 1.0:
                    continue
                if job["name"].startswith("chaos-rspec"):
                    reason = "stuck_or_timeout_failure" if "stuck" in job["name"] else "runner_system_failure"
                    self.sim.set_status(project, job["id"], "failed", reason)
                    self.runner_moves["retried job failed again"] += 1
                elif job["name"] == "chaos-deploy":
                    self.sim.set_status(project, job["id"], "success")
                    self.runner_moves["played deploy succeeded"] += 1

    def run(self) -> None:
        next_add = time.monotonic()
        i = 0
        try:
            while not self.stop.is_set():
                if self.adding.is_set() and time.monotonic() >= next_add:
                    self.add(self.kinds[i % len(self.kinds)])
                    i += 1
                    next_add = time.monotonic() + self.every
                if self.driving.is_set():
                    self.drive()
                self.stop.wait(1.0)
        except BaseException as err:  # noqa: BLE001 (reported by the main thread)
            self.error = err


# --- jobwarden -------------------------------------------------------------------------------


class Jobwarden:
    def __init__(self, procs: Processes, binary: str, work: Path, policies: Path, port: int) -> None:
        self.procs = procs
        self.binary = binary
        self.work = work
        self.policies = policies
        self.port = port
        self.state = work / "state"
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        help_text = subprocess.run(  # noqa: S603
            [binary, "run", "--help"], capture_output=True, text=True, check=True
        ).stdout
        self.insecure = ["--allow-insecure-http"] if "--allow-insecure-http" in help_text else []

    def start(self) -> None:
        path = self.work / f"jobwarden-{len(self.logs) + 1}.log"
        self.logs.append(path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWARDEN_")}
        env.update(GITLAB_TOKEN=TOKEN, RUST_LOG="info", RUST_BACKTRACE="1")
        argv = [
            self.binary, "run",
            "--policies", str(self.policies),
            "--state-dir", str(self.state),
            "--metrics-listen", f"127.0.0.1:{self.port}",
            "--log-format", "json",
            "--request-timeout-seconds", str(REQUEST_TIMEOUT_S),
            "--in-doubt-seconds", str(IN_DOUBT_S),
            "--requests-per-minute", str(REQUESTS_PER_MINUTE),
            *self.insecure,
        ]  # fmt: skip
        out = open(self.work / f"jobwarden-{len(self.logs)}.stdout", "wb")  # noqa: SIM115
        err = open(path, "wb")  # noqa: SIM115
        self.proc = self.procs.start(argv, out, err, env)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait_for_call_in_flight(self, deadline: float) -> dict[str, Any] | None:
        """Polls the state file until it holds a call in flight (recorded before it was sent,
        not answered yet: its window still includes the request timeout), or `deadline`."""
        path = self.state / "ledger.json"
        while time.time() < deadline:
            try:
                calls = json.loads(path.read_text()).get("unsettled", [])
            except (OSError, ValueError):
                calls = []
            now = time.time()
            for call in calls:
                if (parse_ts(call.get("until")) or 0.0) > now + IN_DOUBT_S + 0.5:
                    return dict(call)
            time.sleep(0.05)
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def action_lines(self) -> list[dict[str, Any]]:
        lines = []
        for path in self.logs:
            for raw in path.read_text(errors="replace").splitlines():
                if '"jobwarden::action"' not in raw:
                    continue
                try:
                    entry = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if entry.get("target") == "jobwarden::action":
                    lines.append({**entry.get("fields", {}), "_timestamp": entry.get("timestamp")})
        return lines


# --- checks ----------------------------------------------------------------------------------


def is_jobs_index_429(entry: dict[str, Any]) -> bool:
    """A JSON 429 (no Retry-After) of the jobs_index limit answered to jobwarden."""
    return (
        entry["status"] == 429
        and entry["endpoint"] == "/projects/:id/jobs"
        and NEIGHBOUR_MARK not in entry["query"]
    )


def exhaust_jobs_index(base: str) -> int:
    """A neighbour with the same token uses up the current jobs_index window, fast (four
    connections in parallel); returns how many of its requests were refused."""
    refused = 0
    lock = threading.Lock()
    done = threading.Event()

    def hammer() -> None:
        nonlocal refused
        session = requests.Session()
        session.headers["PRIVATE-TOKEN"] = TOKEN
        for _ in range(JOBS_RATE_LIMIT):
            if done.is_set():
                return
            r = session.get(f"{base}/api/v4/projects/1/jobs?per_page=1&{NEIGHBOUR_MARK}", timeout=10)
            if r.status_code == 429:
                with lock:
                    refused += 1
                done.set()

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return refused


def backoff_s(attempt: int) -> float:
    return float(min(BACKOFF_BASE_S * BACKOFF_FACTOR ** (attempt - 1), BACKOFF_MAX_S))


def eligible_jobs(sim: Sim, now: float, history_start: float) -> list[dict[str, Any]]:
    """The jobs a policy should act on at `now`, each with `since` (when it became eligible)
    and `policy`. The same semantics as jobwarden's (docs/jobpolicy.md); bridges are not
    listed by GitLab's job endpoints, so jobwarden never sees them and neither does this."""
    found = []
    for project in range(1, PROJECTS + 1):
        jobs = [j for j in sim.jobs(project) if not j["bridge"]]
        by_pipeline: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for j in jobs:
            by_pipeline[j["pipeline_id"]].append(j)
        for j in jobs:
            created = parse_ts(j["created_at"]) or 0.0
            if created < history_start or j["retried"]:
                continue
            siblings = by_pipeline[j["pipeline_id"]]
            since = None
            policy = ""
            if j["status"] == "failed" and j["failure_reason"] in RETRY_REASONS:
                attempts = sum(1 for s in siblings if s["name"] == j["name"])
                if attempts - 1 < RETRY_LIMIT:
                    finished = parse_ts(j["finished_at"]) or parse_ts(j["started_at"]) or created
                    since, policy = finished + backoff_s(attempts), "retry"
            elif j["status"] == "pending":
                queued = parse_ts(j["queued_at"]) or created
                since, policy = queued + CANCEL_OLDER_THAN_S, "cancel"
            elif j["status"] == "manual":
                stages = [s for s in siblings if s["stage"] in ("build", "test")]
                if all(any(s["stage"] == st for s in stages) for st in ("build", "test")) and all(
                    s["status"] == "success" for s in stages
                ):
                    since = max(parse_ts(s["finished_at"]) or created for s in stages)
                    since, policy = max(since, created), "play"
            if since is not None and since <= now:
                found.append({**j, "since": since, "policy": policy, "project": project})
    return found


def unwarranted_actions(
    effective: dict[str, Counter[int]],
    by_id: dict[int, dict[str, Any]],
    snapshots: dict[int, list[dict[str, Any]]],
) -> list[tuple[str, int, str]]:
    """Carried-out actions that no policy allows, judged from the jobs as they stand: a retry
    of a job that did not fail for a listed reason, a cancel of a job that had not waited 30
    minutes since it was queued, a play of a job whose build or test stage did not succeed."""
    wrong = []
    for job_id in effective["retry"]:
        j = by_id.get(job_id)
        if j and not (j["status"] == "failed" and j["failure_reason"] in RETRY_REASONS):
            wrong.append(("retry", job_id, f"{j['status']} {j['failure_reason']}"))
    for job_id in effective["cancel"]:
        j = by_id.get(job_id)
        if not j:
            continue
        waited_from = parse_ts(j["queued_at"]) or parse_ts(j["created_at"]) or 0.0
        ended = parse_ts(j["finished_at"]) or waited_from
        if ended - waited_from < CANCEL_OLDER_THAN_S - 2:
            wrong.append(("cancel", job_id, f"canceled {ended - waited_from:.0f} s after it was queued"))
    for job_id in effective["play"]:
        j = by_id.get(job_id)
        if not j:
            continue
        latest = [
            s
            for s in snapshots[j["project_id"]]
            if s["pipeline_id"] == j["pipeline_id"] and s["stage"] in ("build", "test") and not s["retried"]
        ]
        if not latest or any(s["status"] != "success" for s in latest):
            wrong.append(("play", job_id, "build or test did not succeed"))
    return wrong


class Figures:
    """Named figures, each with its verdict, printed as a table; notes below it."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool | None]] = []
        self.notes: list[tuple[str, str]] = []

    def add(self, name: str, value: Any, limit: str = "", ok: bool | None = None) -> None:
        self.rows.append((name, str(value), limit, ok))

    def note(self, name: str, value: Any) -> None:
        """A figure shown under the table (text, no verdict)."""
        self.notes.append((name, str(value)))

    def failed(self) -> list[str]:
        return [name for name, _, _, ok in self.rows if ok is False]

    def print(self) -> None:
        w0 = max(len("figure"), *(len(r[0]) for r in self.rows))
        w1 = max(len("value"), *(len(r[1]) for r in self.rows))
        w2 = max(len("limit"), *(len(r[2]) for r in self.rows))
        line = f"+-{'-' * w0}-+-{'-' * w1}-+-{'-' * w2}-+------+"
        print(line)
        print(f"| {'figure'.ljust(w0)} | {'value'.ljust(w1)} | {'limit'.ljust(w2)} | ok?  |")
        print(line)
        for name, value, limit, ok in self.rows:
            verdict = "" if ok is None else ("ok" if ok else "FAIL")
            print(f"| {name.ljust(w0)} | {value.rjust(w1)} | {limit.ljust(w2)} | {verdict.ljust(4)} |")
        print(line)
        for name, value in self.notes:
            print(f"  {name}: {value}")


# --- the run ---------------------------------------------------------------------------------


class Phase:
    def __init__(self, key: str, title: str, faults: dict[str, Any]) -> None:
        self.key, self.title, self.faults = key, title, faults
        self.start = self.end = 0.0
        self.log_from = self.log_to = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bin", default=os.environ.get("JOBWARDEN_BIN", str(ROOT / "target/debug/jobwarden")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "7")))
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()

    wall_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="jobwarden-chaos-"))
    procs = Processes()
    stop = threading.Event()
    ok = False

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        ok = run(args, work, procs, stop, wall_start)
    finally:
        stop.set()
        procs.stop_all()
        print(f"wall time: {time.monotonic() - wall_start:.1f} s (limit 300 s)")
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"working directory kept: {work}")
    return 0 if ok else 1


def run(args: argparse.Namespace, work: Path, procs: Processes, stop: threading.Event, wall_start: float) -> bool:
    binary = str(Path(args.bin).resolve())
    log(f"binary {binary}, seed {args.seed}, working directory {work}")

    # The simulator: 50 live projects on the wall clock (see the docstring for --speed 1).
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWARDEN_")}
    env["RUST_LOG"] = "info"
    sim_argv = [
        binary, "simulate", "--listen", "127.0.0.1:0", "--token", TOKEN,
        "--projects", str(PROJECTS), "--seed", str(args.seed), "--speed", "1",
        "--jobs-rate-limit", str(JOBS_RATE_LIMIT),
    ]  # fmt: skip
    sim_err = open(work / "simulator.log", "wb")  # noqa: SIM115
    sim_proc = procs.start(sim_argv, subprocess.PIPE, sim_err, env)
    assert sim_proc.stdout is not None
    first = sim_proc.stdout.readline().decode()
    match = re.search(r"listening on (http://\S+)", first)
    if not match:
        raise RuntimeError(f"the simulator did not start: {first!r}")
    base = match.group(1)
    sim = Sim(base)
    log(f"simulator at {base} ({PROJECTS} projects)")

    policies = work / "policies"
    write_policies(policies, base)
    check = subprocess.run([binary, "check", str(policies)], capture_output=True, text=True)  # noqa: S603
    print(check.stdout.strip())
    if check.returncode != 0:
        raise RuntimeError(f"jobwarden check failed:\n{check.stdout}{check.stderr}")

    port = free_port()
    jw = Jobwarden(procs, binary, work, policies, port)
    health = Health(port, stop)
    scenario = Scenario(sim, stop, args.seed)
    jw_started = time.time()
    history_start = jw_started - 71 * 3600  # jobwarden reads 72 h back on its first sync
    jw.start()
    health.start()
    deadline = time.time() + 30
    while health.first_ok_after(jw_started) is None:
        if time.time() > deadline or not jw.alive():
            raise RuntimeError("jobwarden did not answer /healthz")
        time.sleep(0.2)
    log(f"jobwarden run: metrics and /healthz on 127.0.0.1:{port}" + (" (--allow-insecure-http)" if jw.insecure else ""))
    scenario.adding.set()
    scenario.start()

    # The minute boundary that F ends on and G starts at (the simulator's clock, at speed 1,
    # is the wall clock plus a constant offset).
    offset = sim.now() - time.time()
    # F starts 15 s before it; A to E (at least 15 s each: a policy run every 10 s plus its own
    # time) share what is left, 100 to 160 s.
    boundary_sim = math.ceil((time.time() + offset + 115) / 60) * 60
    boundary = boundary_sim - offset

    phases = [
        Phase("A", "5xx answers 5%", {"error_5xx_ratio": 0.05}),
        Phase("B", f"held {HOLD_MS // 1000} s (timeouts) 1%", {"timeout_ratio": 0.01, "timeout_hold_ms": HOLD_MS}),
        Phase("C", f"applied late ({APPLY_LATE_MS // 1000} s) 1%", {"apply_late_ratio": 0.01, "apply_late_after_ms": APPLY_LATE_MS}),
        Phase(
            "K",
            "kill -9 + restart; apply-late 20%, held 15%",
            {"apply_late_ratio": 0.20, "apply_late_after_ms": APPLY_LATE_MS, "timeout_ratio": 0.15, "timeout_hold_ms": HOLD_MS},
        ),
        Phase("D", "truncated JSON 1%", {"malformed_json_ratio": 0.01}),
        Phase("E", "dropped connections 1%", {"drop_connection_ratio": 0.01}),
    ]
    weights = {"A": 4, "B": 3, "C": 3, "K": 4, "D": 3, "E": 3}
    f_phase = Phase("F", "429 storm with Retry-After (every 10th)", {"rate_limit_burst_every": 10})
    g_phase = Phase("G", "429 without Retry-After (jobs_index)", {})
    h_phase = Phase("H", f"outage: every connection dropped, {OUTAGE_S:.0f} s", {"drop_connection_ratio": 1.0})
    all_phases = [*phases, f_phase, g_phase, h_phase]

    log_len = lambda: len(sim.requests_log())  # noqa: E731

    def begin(phase: Phase) -> None:
        phase.log_from = log_len()
        sim.faults(**phase.faults)
        phase.start = time.time()
        log(f"phase {phase.key}: {phase.title}")

    def finish(phase: Phase) -> None:
        phase.end = time.time()
        phase.log_to = log_len()

    def sleep_until(t: float) -> None:
        while (left := t - time.time()) > 0:
            if scenario.error:
                raise RuntimeError(f"scenario thread failed: {scenario.error!r}")
            time.sleep(min(left, 0.5))

    available = boundary - 15 - time.time()
    total_weight = sum(weights.values())
    t_kill = t_restart = 0.0
    for phase in phases:
        length = available * weights[phase.key] / total_weight
        begin(phase)
        end = phase.start + length
        if phase.key == "K":
            sleep_until(phase.start + length * 0.2)
            caught = jw.wait_for_call_in_flight(phase.start + length * 0.6)
            t_kill = time.time()
            jw.kill9()
            what = f"with a {caught['action']} of job {caught['jobId']} in flight" if caught else "(no call caught in flight)"
            log(f"  kill -9 jobwarden (pid {jw.proc.pid if jw.proc else '?'}) {what}")
            sleep_until(t_kill + 2)
            t_restart = time.time()
            jw.start()
            log(f"  restarted jobwarden with the same --state-dir (pid {jw.proc.pid if jw.proc else '?'})")
        sleep_until(end)
        finish(phase)

    # F: the 15 s before the boundary; its Retry-After pauses end on the boundary.
    # The storm stops half a second before the boundary (on the simulator's clock): a 429 of
    # the next window would carry Retry-After: 59 and rightly pause jobwarden for a minute.
    begin(f_phase)
    sleep_until(boundary - 1.5)
    while sim.now() < boundary_sim - 0.5:
        time.sleep(0.02)
    sim.faults()
    finish(f_phase)

    # G: right after the boundary a neighbour with the same token uses up the jobs_index
    # window; jobwarden's next job listings get the JSON 429 without Retry-After.
    while sim.now() < boundary_sim + 0.3:
        time.sleep(0.05)
    begin(g_phase)
    refused = exhaust_jobs_index(base)
    log(f"  neighbour: jobs_index exhausted ({refused} of its requests refused)")
    # Until jobwarden's next run lists a project and gets the 429: the outage starts then, so
    # the 60 s pause it causes ends with the outage. A run comes every 10 s plus its own time;
    # none in 30 s would be a hang.
    g_seen = 0
    while time.time() < g_phase.start + 30:
        g_seen = sum(1 for e in sim.requests_log()[g_phase.log_from :] if is_jobs_index_429(e))
        if g_seen:
            break
        time.sleep(0.25)
    log(f"  jobwarden got {g_seen} jobs_index 429(s)")
    finish(g_phase)

    # H: a 60 s outage; more work arrives half-way through.
    begin(h_phase)
    sleep_until(h_phase.start + OUTAGE_S / 2)
    scenario.add_batch(3)
    log("  added 3 scenario pipelines of each kind during the outage")
    sleep_until(h_phase.start + OUTAGE_S)
    h_phase.log_to = log_len()
    outage_end_index = h_phase.log_to
    sim.faults()
    outage_end = time.time()
    h_phase.end = outage_end
    scenario.adding.clear()
    scenario.driving.clear()  # from now on nothing new becomes eligible but the live fleet's jobs
    log("phase R: faults off; recovery")

    # Recovery: jobwarden's first successful GET after the outage.
    recovered_at = None
    while time.time() < outage_end + 2 * CLIENT_BACKOFF_CAP_S + 15:
        entries = sim.requests_log()[outage_end_index:]
        if any(e["method"] == "GET" and 200 <= e["status"] < 300 and NEIGHBOUR_MARK not in e["query"] for e in entries):
            recovered_at = time.time()
            break
        time.sleep(0.2)
    recovery_s = None if recovered_at is None else recovered_at - outage_end
    log(f"  first successful GET {recovery_s:.1f} s after the outage" if recovery_s is not None else "  no successful GET")

    # Settling: until nothing eligible is older than the grace period and everything that was
    # eligible by the end of the outage has been acted on (or SETTLE_MAX_S has passed).
    settle_deadline = outage_end + SETTLE_MAX_S
    while True:
        now = time.time()
        eligible = eligible_jobs(sim, now, history_start)
        lost = [j for j in eligible if j["since"] < now - GRACE_S]
        pending_since_outage = [j for j in eligible if j["since"] <= outage_end]
        if (not lost and not pending_since_outage) or now >= settle_deadline:
            break
        time.sleep(3)
    log(f"  settled: {len(eligible)} job(s) eligible now, {len(lost)} eligible for more than {GRACE_S} s")
    stop.set()
    scenario.join(timeout=10)
    health.join(timeout=5)
    final_now = time.time()

    # --- figures ---------------------------------------------------------------------------
    entries = sim.requests_log()
    (work / "requests.json").write_text(json.dumps(entries))
    actions = jw.action_lines()
    fig = Figures()

    print()
    print("Phases")
    print(
        f"  {'phase':<5} {'what':<44} {'s':>5} {'requests':>8} {'2xx':>6} {'429':>5} {'5xx':>5} {'no answer':>9} "
        f"{'late':>5} {'actions':>7}"
    )
    action_times = [parse_ts(a["_timestamp"]) or 0.0 for a in actions]
    for phase in all_phases:
        part = [e for e in entries[phase.log_from : phase.log_to] if NEIGHBOUR_MARK not in e["query"]]
        count = Counter()
        for e in part:
            s = e["status"]
            count["2xx"] += 200 <= s < 300
            count["429"] += s == 429
            count["5xx"] += s >= 500
            count["0"] += s == 0
            count["late"] += bool(e.get("applied_late"))
        print(
            f"  {phase.key:<5} {phase.title:<44} {phase.end - phase.start:>5.0f} {len(part):>8} {count['2xx']:>6} "
            f"{count['429']:>5} {count['5xx']:>5} {count['0']:>9} {count['late']:>5} "
            f"{sum(1 for t in action_times if phase.start <= t < phase.end):>7}"
        )
    print()

    # Panics.
    panics = []
    for path in [work / "simulator.log", *jw.logs]:
        for raw in path.read_text(errors="replace").splitlines():
            if "panicked" in raw:
                panics.append(f"{path.name}: {raw[:300]}")
    fig.add("panics (simulator + both jobwarden processes)", len(panics), "0", not panics)

    # What GitLab carried out.
    effective: dict[str, Counter[int]] = {"retry": Counter(), "cancel": Counter(), "play": Counter()}
    late = Counter()
    for e in entries:
        m = MUTATION.match(e["path"])
        if e["method"] != "POST" or not m:
            continue
        if 200 <= e["status"] < 300:
            effective[m.group(3)][int(m.group(2))] += 1
            if e.get("applied_late"):
                late[m.group(3)] += 1
    fig.add("retries carried out (2xx or applied late)", sum(effective["retry"].values()))
    fig.add("cancels carried out", sum(effective["cancel"].values()))
    fig.add("plays carried out", sum(effective["play"].values()))
    fig.add("  of which applied late (no answer to jobwarden)", sum(late.values()))

    # Duplicates.
    twice_played = {j: n for j, n in effective["play"].items() if n > 1}
    twice_retried = {j: n for j, n in effective["retry"].items() if n > 1}
    snapshots = {project: [j for j in sim.jobs(project) if not j["bridge"]] for project in range(1, PROJECTS + 1)}
    by_id = {j["id"]: j for jobs in snapshots.values() for j in jobs}
    over_limit = []
    for project, jobs in snapshots.items():
        attempts = Counter((j["pipeline_id"], j["name"]) for j in jobs)
        over_limit += [(project, p, name, n) for (p, name), n in attempts.items() if n > RETRY_LIMIT + 1]
    fig.add("jobs played twice", len(twice_played), "0", not twice_played)
    fig.add("jobs retried twice", len(twice_retried), "0", not twice_retried)
    fig.add(f"job names with more than {RETRY_LIMIT + 1} attempts", len(over_limit), "0", not over_limit)
    wrong = unwarranted_actions(effective, by_id, snapshots)
    fig.add("actions no policy allows (carried out)", len(wrong), "0", not wrong)

    # The 429s reached jobwarden (without one in G, G tested nothing: a run every 10 s should
    # have listed a project).
    fig.add("429s with Retry-After answered to jobwarden (F)", sum(1 for e in entries[f_phase.log_from : f_phase.log_to] if e["status"] == 429))
    g_429 = sum(1 for e in entries[g_phase.log_from : g_phase.log_to] if is_jobs_index_429(e))
    fig.add("429s without Retry-After answered to jobwarden (G)", g_429, ">= 1", g_429 >= 1)

    # Lost actions.
    fig.add("jobs eligible at the end", len(eligible))
    fig.add(f"lost actions (eligible for > {GRACE_S} s at the end)", len(lost), "0", not lost)

    # Every carried-out mutation is in jobwarden's action log.
    logged = {(int(a["job_id"]), a["action"]) for a in actions if "job_id" in a}
    unlogged = [(kind, j) for kind, jobs in effective.items() for j in jobs if (j, kind) not in logged]
    fig.add("carried-out actions missing from the action log", len(unlogged), "0", not unlogged)
    outcomes = Counter((a.get("action"), a.get("outcome")) for a in actions)
    fig.note(
        "action log lines (action outcome count)",
        ", ".join(f"{a} {o} {n}" for (a, o), n in sorted(outcomes.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))),
    )

    # Recovery.
    limit = 2 * CLIENT_BACKOFF_CAP_S
    fig.add(
        "recovery: outage end -> first successful GET (s)",
        "none" if recovery_s is None else f"{recovery_s:.1f}",
        f"<= {limit:.0f} (2x backoff cap)",
        recovery_s is not None and recovery_s <= limit,
    )

    # /healthz.
    restart_ok = health.first_ok_after(t_restart)
    dead_until = restart_ok if restart_ok is not None else final_now
    first_ok = health.first_ok_after(jw_started) or final_now
    outside = [
        (t, detail)
        for t, ok_, detail in health.samples
        if not ok_ and not (t_kill <= t <= dead_until) and t >= first_ok
    ]
    fig.add("/healthz polls", len(health.samples))
    fig.add(
        "dead window: kill -9 -> first /healthz of the restart (s)",
        f"{dead_until - t_kill:.1f}",
        "<= 10",
        restart_ok is not None and dead_until - t_kill <= 10,
    )
    fig.add("/healthz failures outside the dead window", len(outside), "0", not outside)

    scenario_line = ", ".join(f"{k} {n}" for k, n in sorted(scenario.added.items()))
    fig.note("scenario pipelines added", scenario_line)
    fig.note("runner moves (scenario)", ", ".join(f"{k} {n}" for k, n in sorted(scenario.runner_moves.items())))
    fig.add("requests logged by the simulator", len(entries), "< 100000", len(entries) < 100_000)
    elapsed = time.monotonic() - wall_start
    fig.add("wall time so far (s)", f"{elapsed:.0f}", "< 300", elapsed < 300)

    print(f"Figures (seed {args.seed})")
    fig.print()

    details = [
        ("panics", panics[:10]),
        ("played twice", list(twice_played.items())[:10]),
        ("retried twice", list(twice_retried.items())[:10]),
        ("over the retry limit", over_limit[:10]),
        ("no policy allows", wrong[:10]),
        ("lost", [(j["project"], j["id"], j["name"], j["status"], j["policy"], round(final_now - j["since"])) for j in lost[:10]]),
        ("not in the action log", unlogged[:10]),
        ("/healthz failures", [(time.strftime("%H:%M:%S", time.localtime(t)), d) for t, d in outside[:10]]),
    ]
    for what, items in details:
        if items:
            print(f"  {what}: {items}")
    evidence = sorted({*twice_played, *twice_retried, *(j for _, j in unlogged)})
    for job in evidence[:10]:
        hits = [e for e in entries if re.search(rf"/jobs/{job}(/|$)", e["path"])]
        print(f"  request log of job {job}: {hits[:8]}")
        print(f"  action log of job {job}: {[a for a in actions if a.get('job_id') == job][:8]}")
    failed = fig.failed()
    checks = sum(1 for r in fig.rows if r[3] is not None)
    print(f"chaos: {checks - len(failed)} passed, {len(failed)} failed")
    return not failed


if __name__ == "__main__":
    sys.exit(main())
