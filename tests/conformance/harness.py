"""The harness of the GitLab conformance suite: jobwarden's simulator as a child process.

`start_simulator` runs `jobwarden simulate` on a free loopback port, reads the address from
its first stdout line and waits (bounded) until it answers. `SimAdmin` drives the
simulator's admin endpoint under `/-/sim/` (scenario pipelines, job statuses, the clock, the
request log, faults); `Scenario` is one fresh project of it, with its python-gitlab object.

The binary is `target/debug/jobwarden` (override with `JOBWARDEN_BIN`). Every wait is
bounded and only loopback addresses are used.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import re
import secrets
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import IO, Any, Final, NoReturn

import gitlab
import pytest
import requests
from gitlab.v4.objects import Project

REPO_ROOT: Final = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_BINARY: Final = REPO_ROOT / "target" / "debug" / "jobwarden"
LISTENING: Final = re.compile(r"^jobwarden simulator listening on (http://\S+)$")
STARTUP_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
REQUEST_TIMEOUT: Final = (5.0, 30.0)

MAIN_SIMULATOR_ARGS: Final = ("--projects", "3", "--seed", "7")
# The rate-limit simulator: 5 job-list requests per minute, no instance-wide Rack::Attack
# throttle (so no RateLimit-* headers steer python-gitlab's waits), and a clock that is all
# but frozen (1 simulated second per 10 000 real ones) so a one-minute window never ends
# unless a test advances the clock through the admin API.
RATE_LIMITED_SIMULATOR_ARGS: Final = (
    "--projects",
    "1",
    "--seed",
    "7",
    "--jobs-rate-limit",
    "5",
    "--api-rate-limit",
    "0",
    "--speed",
    "0.0001",
)


def simulator_binary() -> pathlib.Path:
    """The jobwarden binary to run; stops the whole run with one clear message if missing."""
    configured = os.environ.get("JOBWARDEN_BIN")
    path = pathlib.Path(configured) if configured else DEFAULT_BINARY
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"no jobwarden binary at {path}: run cargo build first "
            "(or point JOBWARDEN_BIN at the binary)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    return path


# --------------------------------------------------------------------------- admin client


class AdminError(AssertionError):
    """The admin endpoint refused a scenario request (a broken test, not a finding)."""


class SimAdmin:
    """A client of the simulator's admin endpoint (`/-/sim/…`, no GitLab authentication)."""

    def __init__(self, base_url: str) -> None:
        self.base = f"{base_url}/-/sim"
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _call(
        self, method: str, path: str, expected: int, **kwargs: Any
    ) -> requests.Response:
        response = self.session.request(
            method, f"{self.base}{path}", timeout=REQUEST_TIMEOUT, **kwargs
        )
        if response.status_code != expected:
            raise AdminError(
                f"admin {method} {path} answered {response.status_code}: {response.text}"
            )
        return response

    def now(self) -> str:
        """The simulated time (`2026-11-23T10:00:00.000Z`)."""
        return self._call("GET", "/now", 200).json()["now"]

    def advance(self, seconds: float) -> str:
        """Moves the simulated clock forward; returns the new time."""
        return self._call(
            "POST", "/clock/advance", 200, params={"seconds": seconds}
        ).json()["now"]

    def requests(self) -> list[dict[str, Any]]:
        """The `/api/v4` request log, oldest first."""
        return self._call("GET", "/requests", 200).json()

    def counters(self) -> dict[str, int]:
        """Requests per `"<METHOD> <route template>"`."""
        return self._call("GET", "/counters", 200).json()

    def reset(self) -> None:
        """Clears the request log, the counters and every rate-limit count."""
        self._call("POST", "/reset", 204)

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/faults", 200).json()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replaces the fault configuration (fields left out are off)."""
        return self._call("PUT", "/faults", 200, json=faults).json()

    def create_project(self, path: str) -> int:
        return self._call("POST", "/projects", 201, json={"path": path}).json()["id"]

    def create_group(self, path: str) -> dict[str, Any]:
        """A group at a full path (missing parents too): `{"id", "full_path", "name", "parent_id"}`."""
        return self._call("POST", "/groups", 201, json={"path": path}).json()

    def create_project_in(self, group: int | str, path: str, archived: bool = False) -> dict[str, Any]:
        """A project `path` in an existing group: `{"id", "path", "group_id", "archived"}`."""
        body = {"group": str(group), "path": path, "archived": archived}
        return self._call("POST", "/projects", 201, json=body).json()

    def set_archived(self, project: int | str, archived: bool) -> dict[str, Any]:
        action = "archive" if archived else "unarchive"
        return self._call("POST", f"/projects/{_segment(project)}/{action}", 200).json()

    def add_pipeline(
        self,
        project: int | str,
        jobs: Sequence[dict[str, Any]],
        ref: str = "main",
        tag: bool = False,
    ) -> dict[str, Any]:
        """Adds a pipeline whose jobs stay as given; returns `{"id", "job_ids"}`."""
        body = {"ref": ref, "tag": tag, "jobs": list(jobs)}
        return self._call(
            "POST", f"/projects/{_segment(project)}/pipelines", 201, json=body
        ).json()

    def jobs(self, project: int | str) -> list[dict[str, Any]]:
        """Snapshots of every job of a project (with `token`, `retried`, `variables`)."""
        return self._call("GET", f"/projects/{_segment(project)}/jobs", 200).json()

    def job(self, project: int | str, job_id: int) -> dict[str, Any]:
        return self._call(
            "GET", f"/projects/{_segment(project)}/jobs/{job_id}", 200
        ).json()

    def set_status(
        self,
        project: int | str,
        job_id: int,
        status: str,
        failure_reason: str | None = None,
    ) -> dict[str, Any]:
        body = {"status": status, "failure_reason": failure_reason}
        return self._call(
            "POST", f"/projects/{_segment(project)}/jobs/{job_id}/status", 200, json=body
        ).json()


def _segment(project: int | str) -> str:
    return urllib.parse.quote(str(project), safe="")


# --------------------------------------------------------------------------- the process


@dataclasses.dataclass
class SimulatorProcess:
    """A running `jobwarden simulate` and how to reach it."""

    process: subprocess.Popen[str]
    stderr: IO[bytes]
    url: str
    token: str
    admin: SimAdmin

    def client(self, **options: Any) -> gitlab.Gitlab:
        """A python-gitlab client authenticated with the simulator's personal token."""
        return gitlab.Gitlab(self.url, private_token=self.token, **options)

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL if it is still running."""
        self.admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


def _stderr_tail(stderr: IO[bytes], limit: int = 4000) -> str:
    stderr.flush()
    stderr.seek(0)
    return stderr.read().decode("utf-8", "replace")[-limit:]


def start_simulator(extra_args: Sequence[str]) -> SimulatorProcess:
    """Starts `jobwarden simulate` on a free loopback port and waits until it answers."""
    binary = simulator_binary()
    token = f"glpat-{secrets.token_hex(12)}"
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [str(binary), "simulate", "--listen", "127.0.0.1:0", "--token", token, *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump_stdout() -> None:
        # The first line is the address; anything after it is drained so the pipe never fills.
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump_stdout, name="simulator-stdout", daemon=True).start()

    def fail(reason: str) -> NoReturn:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        tail = _stderr_tail(stderr)
        stderr.close()
        pytest.fail(f"jobwarden simulate {reason}\n--- stderr ---\n{tail}", pytrace=False)

    try:
        first = lines.get(timeout=STARTUP_TIMEOUT)
    except queue.Empty:
        fail(f"printed nothing within {STARTUP_TIMEOUT:.0f} s")
    match = LISTENING.match(first.strip()) if first is not None else None
    if match is None:
        fail(f"exited or printed an unexpected first line: {first!r}")
    url = match.group(1).rstrip("/")
    admin = SimAdmin(url)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            admin.now()
            break
        except (requests.RequestException, AdminError):
            if process.poll() is not None or time.monotonic() > deadline:
                admin.close()
                fail(f"did not answer on {url}")
            time.sleep(0.05)
    return SimulatorProcess(process, stderr, url, token, admin)


# --------------------------------------------------------------------------- scenarios


@dataclasses.dataclass
class Pipeline:
    id: int
    job_ids: list[int]


@dataclasses.dataclass
class Scenario:
    """A fresh project of the shared simulator, reachable through python-gitlab and admin."""

    id: int
    path: str
    api: Project
    admin: SimAdmin

    def pipeline(self, *jobs: dict[str, Any], ref: str = "main", tag: bool = False) -> Pipeline:
        created = self.admin.add_pipeline(self.id, jobs, ref=ref, tag=tag)
        return Pipeline(created["id"], created["job_ids"])

    def snapshot(self, job_id: int) -> dict[str, Any]:
        return self.admin.job(self.id, job_id)

    def set_status(self, job_id: int, status: str) -> dict[str, Any]:
        return self.admin.set_status(self.id, job_id, status)

    def logged(self) -> list[dict[str, Any]]:
        """The logged `/api/v4` requests about this project."""
        prefixes = (
            f"/api/v4/projects/{self.id}/",
            f"/api/v4/projects/{_segment(self.path)}/",
        )
        return [r for r in self.admin.requests() if r["path"].startswith(prefixes)]


def job(name: str, status: str = "success", stage: str = "test", **extra: Any) -> dict[str, Any]:
    """One job of an admin pipeline body."""
    return {"name": name, "stage": stage, "status": status, **extra}
