"""Job Hook deliveries for the end-to-end tests: replicas that run the webhook receiver, and
deliveries posted to them with GitLab's headers. Shared by ``test_webhooks_e2e`` and
``test_sharding_e2e`` (no fixtures here).

On loopback a replica's identity is its own webhook address, ``127.0.0.1:<port>``, so that
``--webhook-forward-to 'http://{identity}/webhook'`` (``FORWARD_TO``) reaches any replica by the
identity its Lease names, as the headless Service ``jobwarden-peers`` does in a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import uuid
from collections.abc import Collection
from typing import Any, Final

import requests

from test_controller_e2e import REQUEST_TIMEOUT, Gitlab, Process, sim, wait_for

WEBHOOK_SECRET: Final = "e2e-webhook-secret-3f9c"
#: Where a replica forwards a delivery it does not act on itself.
FORWARD_TO: Final = "http://{identity}/webhook"


def free_port(avoid: Collection[int] = ()) -> int:
    """A loopback port nobody listens on now, other than ``avoid`` (ports already handed to
    processes that may not have bound them yet)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in avoid:
            return port


def receiver_args(address: str) -> list[str]:
    """``jobwarden run`` flags for a replica whose identity and webhook address is ``address``
    (its token goes in the environment: ``RECEIVER_ENV``)."""
    return ["--webhook-listen", address, "--webhook-forward-to", FORWARD_TO]


RECEIVER_ENV: Final = {"JOBWARDEN_WEBHOOK_TOKEN": WEBHOOK_SECRET}


@dataclasses.dataclass
class Replica:
    """A ``jobwarden run`` process with the receiver on; ``identity`` is its webhook address."""

    process: Process
    identity: str
    metrics_url: str

    @property
    def webhook_url(self) -> str:
        return f"http://{self.identity}/webhook"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        text = requests.get(f"{self.metrics_url}/metrics", timeout=REQUEST_TIMEOUT).text
        total = 0.0
        for match in re.finditer(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", text, re.M):
            sample = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1] or ""))
            if all(sample.get(k) == v for k, v in labels.items()):
                total += float(match[2])
        return total

    def deliveries(self, outcome: str) -> float:
        return self.metric("jobwarden_webhook_deliveries_total", outcome=outcome)

    def logged(self, message: str) -> bool:
        return any(message in r.get("fields", {}).get("message", "") for r in self.process.log_records())

    def wait_listening(self) -> None:
        wait_for(f"the webhook receiver of {self.identity} to listen", lambda: self.logged("listening for GitLab Job Hooks"))


def retry_requests(gitlab: Gitlab, project: int, job: int) -> list[dict[str, Any]]:
    """The simulator's log of the requests to retry ``job``."""
    path = f"/api/v4/projects/{project}/jobs/{job}/retry"
    return [r for r in sim(gitlab, "GET", "requests") if r["method"] == "POST" and r["path"] == path]


def job_hook(gitlab: Gitlab, project: int, job: int, project_name: str = "hooks / app") -> dict[str, Any]:
    """A Job Hook payload for the job as the simulator has it now (GitLab's field names)."""
    snapshot = sim(gitlab, "GET", f"projects/{project}/jobs/{job}")
    return {
        "object_kind": "build",
        "ref": "main",
        "tag": False,
        "build_id": job,
        "build_name": snapshot["name"],
        "build_stage": snapshot["stage"],
        "build_status": snapshot["status"],
        "build_failure_reason": snapshot["failure_reason"],
        "pipeline_id": snapshot["pipeline_id"],
        "project_id": project,
        "project_name": project_name,
        "retries_count": 0,
    }


def deliver(gitlab: Gitlab, url: str, payload: dict[str, Any], token: str | None) -> requests.Response:
    """POSTs ``payload`` to a receiver with the headers GitLab sends (``X-Gitlab-Instance``: the
    simulator's URL, as the policies spell it)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.5.0",
        "X-Gitlab-Event": "Job Hook",
        "X-Gitlab-Instance": gitlab.url,
        "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "Idempotency-Key": str(uuid.uuid4()),
    }
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return requests.post(url, data=json.dumps(payload), headers=headers, timeout=REQUEST_TIMEOUT)
