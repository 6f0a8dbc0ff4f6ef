"""Tests of the kube emulator itself, over real HTTP against its command-line entry point.

One emulator process serves the module; each test works in its own namespace so
that tests do not see each other's objects. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import pytest
import requests
import yaml

EMULATOR: Final = pathlib.Path(__file__).with_name("emulator.py")
STARTUP_TIMEOUT: Final = 30.0
SHUTDOWN_TIMEOUT: Final = 15.0
EVENT_TIMEOUT: Final = 15.0
REQUEST_TIMEOUT: Final = (5.0, 30.0)

JOBPOLICIES: Final = "apis/jobwarden.dev/v1alpha1"
LEASES: Final = "apis/coordination.k8s.io/v1"
MERGE: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY: Final = "application/apply-patch+yaml"

PRELOAD: Final = """\
apiVersion: v1
kind: Secret
metadata:
  name: gitlab-token
  namespace: jobwarden
type: Opaque
stringData:
  token: glpat-preloaded
---
apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata:
  name: preloaded
spec:
  projects: [group/app]
"""


# --------------------------------------------------------------------------- process fixtures


@dataclasses.dataclass
class EmulatorProcess:
    """A running emulator process and what it told us at startup."""

    process: subprocess.Popen[str]
    url: str
    kubeconfig: pathlib.Path

    def stop(self) -> int:
        """SIGTERM, then wait (bounded); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SHUTDOWN_TIMEOUT)
            raise AssertionError("the emulator did not stop on SIGTERM") from None


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"the emulator printed nothing within {timeout}s") from None


def start_emulator(workdir: pathlib.Path, *extra_args: str) -> EmulatorProcess:
    """Start ``emulator.py --port 0`` and wait (bounded) for its listening line."""
    kubeconfig = workdir / "kubeconfig"
    stderr = (workdir / "stderr.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(EMULATOR), "--port", "0", "--kubeconfig-out", str(kubeconfig), *extra_args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()  # the child keeps its own descriptor
    line = _first_line(process, STARTUP_TIMEOUT)
    match = re.fullmatch(r"kube emulator listening on (http://127\.0\.0\.1:\d+)", line.strip())
    if match is None:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT)
        raise AssertionError(f"unexpected first line {line!r}; stderr: {(workdir / 'stderr.log').read_text()}")
    return EmulatorProcess(process, match[1], kubeconfig)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    workdir = tmp_path_factory.mktemp("kube-emulator")
    preload = workdir / "preload.yaml"
    preload.write_text(PRELOAD)
    running = start_emulator(workdir, "--preload", str(preload))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- HTTP helpers


@dataclasses.dataclass
class Kube:
    """Thin HTTP helpers for the emulator's REST paths."""

    base_url: str

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(self.url(path), params=params, timeout=REQUEST_TIMEOUT)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.url(path), json=body, timeout=REQUEST_TIMEOUT)

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(self.url(path), json=body, timeout=REQUEST_TIMEOUT)

    def patch(self, path: str, body: Any, content_type: str = MERGE, **params: str) -> requests.Response:
        return requests.patch(self.url(path), data=json.dumps(body), params=params,
                              headers={"Content-Type": content_type}, timeout=REQUEST_TIMEOUT)

    def delete(self, path: str) -> requests.Response:
        return requests.delete(self.url(path), timeout=REQUEST_TIMEOUT)


@pytest.fixture
def kube(emulator: EmulatorProcess) -> Kube:
    return Kube(emulator.url)


def policies(namespace: str, name: str = "") -> str:
    return f"{JOBPOLICIES}/namespaces/{namespace}/jobpolicies" + (f"/{name}" if name else "")


def jobpolicy(name: str, *, labels: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "jobwarden.dev/v1alpha1", "kind": "JobPolicy", "metadata": metadata,
            "spec": spec or {"projects": ["group/app"]}}


def created(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    response = kube.post(policies(namespace), body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def rv(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def assert_status(response: requests.Response, code: int, reason: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    status: dict[str, Any] = response.json()
    assert status["kind"] == "Status"
    assert status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    assert status["code"] == code
    assert status["reason"] == reason
    return status


_END: Final = object()


class WatchStream:
    """A watch request read on a background thread; events are taken with bounded waits.

    Plain ``http.client`` rather than ``requests``: closing shuts the socket down,
    which ends the reader thread's blocked read at once.
    """

    def __init__(self, kube: Kube, path: str, **params: str) -> None:
        url = urllib.parse.urlsplit(kube.base_url)
        self._connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port,
                                                      timeout=REQUEST_TIMEOUT[1])
        query = urllib.parse.urlencode({"watch": "true", **params})
        self._connection.request("GET", f"/{path.lstrip('/')}?{query}")
        self._socket = self._connection.sock
        self._response = self._connection.getresponse()
        assert self._response.status == 200, self._response.read()
        self._events: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        try:
            while line := self._response.readline():
                if line.strip():
                    self._events.put(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by the test or the server
        finally:
            self._events.put(_END)

    def next_event(self) -> dict[str, Any]:
        try:
            event = self._events.get(timeout=EVENT_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no watch event within {EVENT_TIMEOUT}s") from None
        if event is _END:
            raise AssertionError("the watch stream ended")
        result: dict[str, Any] = event
        return result

    def remaining_events(self, timeout: float) -> list[dict[str, Any]]:
        """Every event until the server ends the stream (which must happen within ``timeout``)."""
        events: list[dict[str, Any]] = []
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the watch stream stayed open for more than {timeout}s") from None
            if event is _END:
                return events
            events.append(event)

    def close(self) -> None:
        """Shut the socket down, let the reader finish (bounded), then close the connection."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=EVENT_TIMEOUT)
        self._connection.close()


@pytest.fixture
def open_watch(kube: Kube) -> Iterator[Callable[..., WatchStream]]:
    streams: list[WatchStream] = []

    def opener(path: str, **params: str) -> WatchStream:
        stream = WatchStream(kube, path, **params)
        streams.append(stream)
        return stream

    yield opener
    for stream in streams:
        stream.close()


def summary(event: Mapping[str, Any]) -> tuple[str, str]:
    return event["type"], event["object"]["metadata"]["name"]


# --------------------------------------------------------------------------- create / get


def test_create_stamps_server_metadata(kube: Kube, namespace: str) -> None:
    body = jobpolicy("stamped")
    body["status"] = {"phase": "ignored on create"}
    obj = created(kube, namespace, body)

    metadata = obj["metadata"]
    assert metadata["namespace"] == namespace
    assert re.fullmatch(r"[0-9a-f-]{36}", metadata["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", metadata["creationTimestamp"])
    assert metadata["generation"] == 1
    assert rv(obj) > 0
    assert "status" not in obj, "status is written through the status subresource only"
    assert ok(kube.get(policies(namespace, "stamped"))) == obj


def test_resource_versions_come_from_one_global_counter(kube: Kube, namespace: str) -> None:
    first = created(kube, namespace, jobpolicy("first"))
    lease = kube.post(f"{LEASES}/namespaces/{namespace}/leases",
                      {"metadata": {"name": "counter"}, "spec": {"holderIdentity": "a"}})
    assert lease.status_code == 201, lease.text
    second = created(kube, namespace, jobpolicy("second"))

    assert rv(first) < rv(lease.json()) < rv(second)


def test_generate_name_creates_distinct_names(kube: Kube, namespace: str) -> None:
    body = {"metadata": {"generateName": "run-"}, "spec": {"projects": ["a"]}}
    names = {created(kube, namespace, body)["metadata"]["name"] for _ in range(3)}

    assert len(names) == 3
    assert all(re.fullmatch(r"run-[a-z0-9]{5}", name) for name in names)


def test_duplicate_create_is_already_exists(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("twice"))
    status = assert_status(kube.post(policies(namespace), jobpolicy("twice")), 409, "AlreadyExists")
    assert status["details"]["name"] == "twice"


def test_get_of_missing_object_is_not_found_status(kube: Kube, namespace: str) -> None:
    status = assert_status(kube.get(policies(namespace, "absent")), 404, "NotFound")
    assert status["message"] == 'jobpolicies.jobwarden.dev "absent" not found'
    assert status["details"] == {"name": "absent", "group": "jobwarden.dev", "kind": "jobpolicies"}


def test_unknown_resource_is_not_found(kube: Kube, namespace: str) -> None:
    assert_status(kube.get(f"apis/jobwarden.dev/v1alpha1/namespaces/{namespace}/widgets"), 404, "NotFound")
    assert_status(kube.get("api/v1/namespaces"), 404, "NotFound")


def test_create_with_mismatched_kind_is_bad_request(kube: Kube, namespace: str) -> None:
    body = jobpolicy("wrong-kind")
    body["kind"] = "Secret"
    assert_status(kube.post(policies(namespace), body), 400, "BadRequest")


def test_dry_run_is_refused_rather_than_persisted(kube: Kube, namespace: str) -> None:
    response = requests.post(kube.url(policies(namespace)), params={"dryRun": "All"}, json=jobpolicy("dry"),
                             timeout=REQUEST_TIMEOUT)
    assert_status(response, 400, "BadRequest")
    assert_status(kube.get(policies(namespace, "dry")), 404, "NotFound")


# --------------------------------------------------------------------------- patch / status


def test_spec_merge_patch_bumps_generation_and_resource_version(kube: Kube, namespace: str) -> None:
    before = created(kube, namespace, jobpolicy("spec-change", projects=["a"]))
    after = ok(kube.patch(policies(namespace, "spec-change"), {"spec": {"projects": ["a", "b"]}}))

    assert after["spec"] == {"projects": ["a", "b"]}
    assert after["metadata"]["generation"] == 2
    assert rv(after) > rv(before)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]


def test_metadata_only_patch_keeps_generation(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("labelled"))
    after = ok(kube.patch(policies(namespace, "labelled"), {"metadata": {"labels": {"team": "ci"}}}))

    assert after["metadata"]["labels"] == {"team": "ci"}
    assert after["metadata"]["generation"] == 1


def test_status_patch_changes_only_status(kube: Kube, namespace: str) -> None:
    before = created(kube, namespace, jobpolicy("with-status", projects=["a"]))
    after = ok(kube.patch(policies(namespace, "with-status") + "/status",
                          {"status": {"observedGeneration": 1, "phase": "Ready"}}))

    assert after["status"] == {"observedGeneration": 1, "phase": "Ready"}
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == 1
    assert rv(after) > rv(before)


def test_spec_sent_to_status_subresource_is_ignored(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("status-only", projects=["a"]))
    after = ok(kube.patch(policies(namespace, "status-only") + "/status",
                          {"spec": {"projects": ["hijacked"]}, "metadata": {"labels": {"x": "y"}},
                           "status": {"phase": "Ready"}}))

    assert after["spec"] == {"projects": ["a"]}
    assert "labels" not in after["metadata"]
    assert after["status"] == {"phase": "Ready"}


def test_status_sent_to_main_resource_is_ignored(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("main-only"))
    ok(kube.patch(policies(namespace, "main-only") + "/status", {"status": {"phase": "Ready"}}))
    after = ok(kube.patch(policies(namespace, "main-only"), {"status": {"phase": "Forged"}}))

    assert after["status"] == {"phase": "Ready"}


def test_unchanged_write_keeps_resource_version_and_emits_no_event(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    before = created(kube, namespace, jobpolicy("steady", projects=["a"]))
    ok(kube.patch(policies(namespace, "steady") + "/status", {"status": {"phase": "Ready"}}))
    current = ok(kube.get(policies(namespace, "steady")))
    watch = open_watch(policies(namespace), resourceVersion=str(rv(current)))

    same_spec = ok(kube.patch(policies(namespace, "steady"), {"spec": {"projects": ["a"]}}))
    same_status = ok(kube.patch(policies(namespace, "steady") + "/status", {"status": {"phase": "Ready"}}))
    same_put = ok(kube.put(policies(namespace, "steady"), current))
    changed = ok(kube.patch(policies(namespace, "steady"), {"spec": {"projects": ["b"]}}))

    assert rv(same_spec) == rv(same_status) == rv(same_put) == rv(current) > rv(before)
    event = watch.next_event()
    assert event["type"] == "MODIFIED"
    assert rv(event["object"]) == rv(changed), "the unchanged writes must not have produced events"


def test_json_patch_applies_operations(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("json-patched", projects=["a"]))
    after = ok(kube.patch(policies(namespace, "json-patched"),
                          [{"op": "add", "path": "/spec/projects/-", "value": "b"},
                           {"op": "add", "path": "/spec/dryRun", "value": True}], JSON_PATCH))
    assert after["spec"] == {"projects": ["a", "b"], "dryRun": True}

    failed = kube.patch(policies(namespace, "json-patched"),
                        [{"op": "test", "path": "/spec/dryRun", "value": False}], JSON_PATCH)
    assert_status(failed, 422, "Invalid")


def test_apply_patch_merges_and_requires_a_field_manager(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("applied", projects=["a"]))
    after = ok(kube.patch(policies(namespace, "applied"), jobpolicy("applied", projects=["c"]), APPLY,
                          fieldManager="jobwarden", force="true"))
    assert after["spec"] == {"projects": ["c"]}
    assert after["metadata"]["generation"] == 2

    status = ok(kube.patch(policies(namespace, "applied") + "/status",
                           {"apiVersion": "jobwarden.dev/v1alpha1", "kind": "JobPolicy",
                            "status": {"phase": "Ready"}}, APPLY, fieldManager="jobwarden"))
    assert status["status"] == {"phase": "Ready"}
    assert status["metadata"]["generation"] == 2

    assert_status(kube.patch(policies(namespace, "applied"), {"spec": {}}, APPLY), 400, "BadRequest")


def test_apply_patch_creates_a_missing_object(kube: Kube, namespace: str) -> None:
    response = kube.patch(policies(namespace, "upserted"), jobpolicy("upserted"), APPLY, fieldManager="jobwarden")

    assert response.status_code == 201, response.text
    assert response.json()["metadata"]["generation"] == 1
    assert ok(kube.get(policies(namespace, "upserted")))["spec"] == {"projects": ["group/app"]}


def test_patch_with_unsupported_content_type_is_rejected(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("typed"))
    response = kube.patch(policies(namespace, "typed"), {"spec": {}}, "text/plain")
    assert_status(response, 415, "UnsupportedMediaType")


def test_patch_of_missing_object_is_not_found(kube: Kube, namespace: str) -> None:
    assert_status(kube.patch(policies(namespace, "ghost"), {"spec": {}}), 404, "NotFound")


def test_merge_patch_with_stale_resource_version_is_conflict(kube: Kube, namespace: str) -> None:
    before = created(kube, namespace, jobpolicy("locked"))
    ok(kube.patch(policies(namespace, "locked"), {"spec": {"projects": ["x"]}}))

    stale = {"metadata": {"resourceVersion": before["metadata"]["resourceVersion"]}, "spec": {"projects": ["y"]}}
    assert_status(kube.patch(policies(namespace, "locked"), stale), 409, "Conflict")
    assert ok(kube.get(policies(namespace, "locked")))["spec"] == {"projects": ["x"]}


# --------------------------------------------------------------------------- replace (PUT)


def test_replace_with_stale_resource_version_is_conflict(kube: Kube, namespace: str) -> None:
    original = created(kube, namespace, jobpolicy("replaced", projects=["a"]))
    first = dict(original, spec={"projects": ["b"]})
    updated = ok(kube.put(policies(namespace, "replaced"), first))
    assert updated["spec"] == {"projects": ["b"]}
    assert updated["metadata"]["generation"] == 2

    stale = dict(original, spec={"projects": ["c"]})
    status = assert_status(kube.put(policies(namespace, "replaced"), stale), 409, "Conflict")
    assert "the object has been modified" in status["message"]
    assert ok(kube.get(policies(namespace, "replaced")))["spec"] == {"projects": ["b"]}


def test_replace_status_changes_only_status(kube: Kube, namespace: str) -> None:
    original = created(kube, namespace, jobpolicy("replace-status", projects=["a"]))
    body = dict(original, spec={"projects": ["ignored"]}, status={"phase": "Ready"})
    after = ok(kube.put(policies(namespace, "replace-status") + "/status", body))

    assert after["status"] == {"phase": "Ready"}
    assert after["spec"] == {"projects": ["a"]}
    assert after["metadata"]["generation"] == 1


def test_replace_of_missing_object_is_not_found(kube: Kube, namespace: str) -> None:
    assert_status(kube.put(policies(namespace, "nobody"), jobpolicy("nobody")), 404, "NotFound")


# --------------------------------------------------------------------------- delete


def test_delete_waits_for_finalizers(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    body = jobpolicy("finalized")
    body["metadata"]["finalizers"] = ["jobwarden.dev/cleanup"]
    obj = created(kube, namespace, body)
    watch = open_watch(policies(namespace), resourceVersion=str(rv(obj)))

    marked = ok(kube.delete(policies(namespace, "finalized")))
    assert marked["metadata"]["deletionTimestamp"]
    assert ok(kube.get(policies(namespace, "finalized")))["metadata"]["finalizers"] == ["jobwarden.dev/cleanup"]

    ok(kube.patch(policies(namespace, "finalized"), {"metadata": {"finalizers": None}}))
    assert_status(kube.get(policies(namespace, "finalized")), 404, "NotFound")
    assert [watch.next_event()["type"] for _ in range(3)] == ["MODIFIED", "MODIFIED", "DELETED"]


def test_delete_collection_removes_only_selected_objects(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("doomed-a", labels={"batch": "old"}))
    created(kube, namespace, jobpolicy("doomed-b", labels={"batch": "old"}))
    created(kube, namespace, jobpolicy("kept", labels={"batch": "new"}))

    response = requests.delete(kube.url(policies(namespace)), params={"labelSelector": "batch=old"},
                               timeout=REQUEST_TIMEOUT)
    deleted = ok(response)
    assert [item["metadata"]["name"] for item in deleted["items"]] == ["doomed-a", "doomed-b"]
    assert [item["metadata"]["name"] for item in ok(kube.get(policies(namespace)))["items"]] == ["kept"]


def test_delete_of_missing_object_is_not_found(kube: Kube, namespace: str) -> None:
    assert_status(kube.delete(policies(namespace, "never")), 404, "NotFound")


# --------------------------------------------------------------------------- list


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["web-prod", "web-test"]),
    ("app==web,env=prod", ["web-prod"]),
    ("app!=web", ["db-prod", "unlabelled"]),
    ("env", ["db-prod", "web-prod", "web-test"]),
    ("!env", ["unlabelled"]),
    ("env in (test, staging)", ["web-test"]),
    ("app notin (web),env", ["db-prod"]),
])
def test_list_honours_label_selectors(kube: Kube, namespace: str, selector: str, expected: list[str]) -> None:
    created(kube, namespace, jobpolicy("web-prod", labels={"app": "web", "env": "prod"}))
    created(kube, namespace, jobpolicy("web-test", labels={"app": "web", "env": "test"}))
    created(kube, namespace, jobpolicy("db-prod", labels={"app": "db", "env": "prod"}))
    created(kube, namespace, jobpolicy("unlabelled"))

    listed = ok(kube.get(policies(namespace), labelSelector=selector))
    assert [item["metadata"]["name"] for item in listed["items"]] == expected


def test_list_carries_the_current_resource_version(kube: Kube, namespace: str) -> None:
    one = created(kube, namespace, jobpolicy("one"))
    two = created(kube, namespace, jobpolicy("two"))
    listed = ok(kube.get(policies(namespace), limit="500"))

    assert listed["kind"] == "JobPolicyList"
    assert listed["apiVersion"] == "jobwarden.dev/v1alpha1"
    assert "continue" not in listed["metadata"]
    assert int(listed["metadata"]["resourceVersion"]) >= rv(two)
    assert [(item["metadata"]["name"], rv(item)) for item in listed["items"]] == [("one", rv(one)), ("two", rv(two))]


def test_list_honours_field_selector_on_name(kube: Kube, namespace: str) -> None:
    created(kube, namespace, jobpolicy("alpha"))
    created(kube, namespace, jobpolicy("beta"))
    listed = ok(kube.get(policies(namespace), fieldSelector="metadata.name=beta"))
    assert [item["metadata"]["name"] for item in listed["items"]] == ["beta"]


def test_invalid_label_selector_is_bad_request(kube: Kube, namespace: str) -> None:
    assert_status(kube.get(policies(namespace), labelSelector="app in (web"), 400, "BadRequest")


# --------------------------------------------------------------------------- watch


def test_watch_from_resource_version_replays_later_changes_in_order(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    earlier = created(kube, namespace, jobpolicy("earlier"))
    watch = open_watch(policies(namespace), resourceVersion=str(rv(earlier)),
                       allowWatchBookmarks="true", timeoutSeconds="290")

    created(kube, namespace, jobpolicy("watched"))
    ok(kube.patch(policies(namespace, "watched"), {"spec": {"projects": ["b"]}}))
    ok(kube.delete(policies(namespace, "watched")))

    events = [watch.next_event() for _ in range(3)]
    assert [summary(event) for event in events] == [
        ("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]
    assert events[1]["object"]["spec"] == {"projects": ["b"]}
    versions = [rv(event["object"]) for event in events]
    assert rv(earlier) < versions[0] < versions[1] < versions[2]


def test_watch_resumes_from_a_past_resource_version(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    first = created(kube, namespace, jobpolicy("first"))
    created(kube, namespace, jobpolicy("second"))
    ok(kube.patch(policies(namespace, "first"), {"spec": {"projects": ["later"]}}))

    watch = open_watch(policies(namespace), resourceVersion=str(rv(first)))
    assert [summary(watch.next_event()) for _ in range(2)] == [("ADDED", "second"), ("MODIFIED", "first")]


def test_watch_without_resource_version_starts_with_current_objects(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    created(kube, namespace, jobpolicy("existing-a"))
    created(kube, namespace, jobpolicy("existing-b"))
    watch = open_watch(policies(namespace), resourceVersion="0")

    assert [summary(watch.next_event()) for _ in range(2)] == [("ADDED", "existing-a"), ("ADDED", "existing-b")]
    created(kube, namespace, jobpolicy("new"))
    assert summary(watch.next_event()) == ("ADDED", "new")


def test_streaming_list_ends_initial_events_with_a_bookmark(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    created(kube, namespace, jobpolicy("initial-a"))
    newest = created(kube, namespace, jobpolicy("initial-b"))
    watch = open_watch(policies(namespace), sendInitialEvents="true", resourceVersionMatch="NotOlderThan",
                       resourceVersion="0", allowWatchBookmarks="true", timeoutSeconds="290")

    assert [summary(watch.next_event()) for _ in range(2)] == [("ADDED", "initial-a"), ("ADDED", "initial-b")]
    bookmark = watch.next_event()
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "JobPolicy"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= rv(newest)

    ok(kube.delete(policies(namespace, "initial-a")))
    assert summary(watch.next_event()) == ("DELETED", "initial-a")


def test_streaming_list_requires_not_older_than(kube: Kube, namespace: str) -> None:
    response = kube.get(policies(namespace), watch="true", sendInitialEvents="true", allowWatchBookmarks="true")
    assert_status(response, 422, "Invalid")


def test_watch_timeout_seconds_closes_the_stream(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    created(kube, namespace, jobpolicy("before-timeout"))
    watch = open_watch(policies(namespace), timeoutSeconds="1")

    events = watch.remaining_events(timeout=EVENT_TIMEOUT)
    assert [summary(event) for event in events] == [("ADDED", "before-timeout")]


def test_watch_with_label_selector_sees_objects_enter_and_leave(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    obj = created(kube, namespace, jobpolicy("mover", labels={"managed": "no"}))
    watch = open_watch(policies(namespace), resourceVersion=str(rv(obj)), labelSelector="managed=yes")

    ok(kube.patch(policies(namespace, "mover"), {"metadata": {"labels": {"managed": "yes"}}}))
    ok(kube.patch(policies(namespace, "mover"), {"metadata": {"labels": {"managed": "no"}}}))
    created(kube, namespace, jobpolicy("other", labels={"managed": "yes"}))

    assert [summary(watch.next_event()) for _ in range(3)] == [
        ("ADDED", "mover"), ("DELETED", "mover"), ("ADDED", "other")]


def test_watch_on_a_named_object_sees_only_that_object(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    target = created(kube, namespace, jobpolicy("target"))
    created(kube, namespace, jobpolicy("bystander"))
    watch = open_watch(policies(namespace, "target"), resourceVersion=str(rv(target)))

    ok(kube.patch(policies(namespace, "bystander"), {"spec": {"projects": ["x"]}}))
    ok(kube.patch(policies(namespace, "target"), {"spec": {"projects": ["y"]}}))
    assert summary(watch.next_event()) == ("MODIFIED", "target")


def test_watch_is_scoped_to_its_namespace(
        kube: Kube, namespace: str, open_watch: Callable[..., WatchStream]) -> None:
    start = created(kube, namespace, jobpolicy("start"))
    watch = open_watch(policies(namespace), resourceVersion=str(rv(start)))

    created(kube, f"{namespace}-other", jobpolicy("elsewhere"))
    created(kube, namespace, jobpolicy("here"))
    assert summary(watch.next_event()) == ("ADDED", "here")


# --------------------------------------------------------------------------- preload, secrets, leases


def test_preloaded_secret_is_readable(kube: Kube) -> None:
    secret = ok(kube.get("api/v1/namespaces/jobwarden/secrets/gitlab-token"))

    assert secret["kind"] == "Secret"
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["token"]) == b"glpat-preloaded"


def test_preloaded_object_without_namespace_lands_in_default(kube: Kube) -> None:
    policy = ok(kube.get(policies("default", "preloaded")))
    assert policy["metadata"]["namespace"] == "default"
    assert policy["spec"] == {"projects": ["group/app"]}


def test_lease_replace_detects_stale_writes(kube: Kube, namespace: str) -> None:
    leases = f"{LEASES}/namespaces/{namespace}/leases"
    response = kube.post(leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": "jobwarden-leader"},
                                  "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}})
    assert response.status_code == 201, response.text
    seen_by_b = ok(kube.get(f"{leases}/jobwarden-leader"))

    renewed = ok(kube.put(f"{leases}/jobwarden-leader",
                          dict(seen_by_b, spec={"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                                                "renewTime": "2025-01-01T00:00:10.000000Z"})))
    takeover = dict(seen_by_b, spec={"holderIdentity": "pod-b", "leaseDurationSeconds": 15})
    assert_status(kube.put(f"{leases}/jobwarden-leader", takeover), 409, "Conflict")

    assert ok(kube.get(f"{leases}/jobwarden-leader"))["spec"]["holderIdentity"] == "pod-a"
    assert rv(renewed) > rv(seen_by_b)


# --------------------------------------------------------------------------- discovery, kubeconfig, lifecycle


def test_discovery_describes_the_served_resources(kube: Kube) -> None:
    assert ok(kube.get("api"))["versions"] == ["v1"]
    groups = {group["name"] for group in ok(kube.get("apis"))["groups"]}
    assert {"jobwarden.dev", "events.k8s.io", "coordination.k8s.io"} <= groups

    core = ok(kube.get("api/v1"))
    assert core["groupVersion"] == "v1"
    assert {"secrets", "events"} <= {resource["name"] for resource in core["resources"]}

    jobwarden = {resource["name"]: resource for resource in ok(kube.get(JOBPOLICIES))["resources"]}
    assert jobwarden["jobpolicies"]["kind"] == "JobPolicy"
    assert jobwarden["jobpolicies"]["singularName"] == "jobpolicy"
    assert jobwarden["jobpolicies"]["shortNames"] == ["jp"]
    assert jobwarden["jobpolicies"]["namespaced"] is True
    assert "watch" in jobwarden["jobpolicies"]["verbs"]
    assert jobwarden["jobpolicies/status"]["verbs"] == ["get", "patch", "update"]


def test_kubeconfig_points_at_the_emulator(emulator: EmulatorProcess) -> None:
    config = yaml.safe_load(emulator.kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])

    assert cluster["server"] == emulator.url
    assert context["namespace"] == "default"
    assert requests.get(f"{cluster['server']}/healthz", timeout=REQUEST_TIMEOUT).text == "ok"


def test_sigterm_ends_open_watches_and_the_process(tmp_path: pathlib.Path) -> None:
    running = start_emulator(tmp_path)
    watch = WatchStream(Kube(running.url), "api/v1/secrets")
    try:
        assert running.stop() == 0
        assert watch.remaining_events(timeout=EVENT_TIMEOUT) == []
    finally:
        watch.close()
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=SHUTDOWN_TIMEOUT)


def test_bad_preload_file_fails_before_listening(tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unserved}\n")
    process = subprocess.run([sys.executable, str(EMULATOR), "--port", "0", "--preload", str(manifest)],
                             capture_output=True, text=True, timeout=STARTUP_TIMEOUT)

    assert process.returncode == 2
    assert "listening" not in process.stdout
    assert "kind='ConfigMap'" in process.stderr
