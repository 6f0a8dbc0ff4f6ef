"""Fixtures of the GitLab conformance suite (see README.md and harness.py).

`jobwarden simulate` runs once per session, plus a second instance with a tiny `jobs_index`
limit for the rate-limit tests. Each test gets a fresh project whose pipelines never move on
their own, so assertions are exact even though the simulated fleet evolves on the real clock.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import gitlab
import pytest

from harness import (
    MAIN_SIMULATOR_ARGS,
    RATE_LIMITED_SIMULATOR_ARGS,
    Scenario,
    SimAdmin,
    SimulatorProcess,
    start_simulator,
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    """The simulator most tests share: three fleet projects, seed 7."""
    sim = start_simulator(MAIN_SIMULATOR_ARGS)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def gl(simulator: SimulatorProcess) -> gitlab.Gitlab:
    """python-gitlab with the personal token (no transient-error retries)."""
    return simulator.client()


@pytest.fixture(scope="session")
def admin(simulator: SimulatorProcess) -> SimAdmin:
    return simulator.admin


@pytest.fixture(scope="session")
def rate_limited_simulator() -> Iterator[SimulatorProcess]:
    """A second simulator allowing 5 `GET /projects/:id/jobs` per user per minute."""
    sim = start_simulator(RATE_LIMITED_SIMULATOR_ARGS)
    try:
        yield sim
    finally:
        sim.stop()


_project_numbers = itertools.count(1)


@pytest.fixture
def project(gl: gitlab.Gitlab, admin: SimAdmin, request: pytest.FixtureRequest) -> Scenario:
    """A new, empty project named after the test (`conformance/<test>-<n>`)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    path = f"conformance/{slug}-{next(_project_numbers)}"
    project_id = admin.create_project(path)
    return Scenario(project_id, path, gl.projects.get(project_id, lazy=True), admin)


@pytest.fixture
def faults(admin: SimAdmin) -> Iterator[SimAdmin]:
    """The admin client of the shared simulator; every fault is switched off afterwards."""
    try:
        yield admin
    finally:
        admin.set_faults()
        assert admin.faults()["error_5xx_ratio"] == 0.0
