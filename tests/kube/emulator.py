#!/usr/bin/env python3
"""A Kubernetes API emulator for jobwarden's end-to-end tests.

:class:`JobwardenApiServer` subclasses kmock's ``KubernetesEmulator`` (pinned to
kmock 0.8: it overrides ``__call__``, ``_handle``, ``_serve_watch``, ``_serve_version``,
``_serve_server_version`` and ``_render_error`` and relies on kmock internals) so that kube-rs clients, watchers,
reflectors, controllers, event recorders and lease-based leader election behave
against it as they do against a real kube-apiserver:

* objects get ``resourceVersion`` (one global counter), ``uid``,
  ``creationTimestamp``, ``generation`` and ``namespace`` on create;
* merge, strategic-merge (as merge), JSON and apply (as merge) patches, and PUT
  with the ``resourceVersion`` precondition;
* the ``status`` subresource is kept apart from the rest of the object,
  ``generation`` moves on spec changes only, and a write that changes nothing
  keeps the resourceVersion and emits no watch event;
* lists carry the current resourceVersion and honour label and field selectors;
* watches resume from a resourceVersion out of an event log, support streaming
  lists (``sendInitialEvents``) with the ``k8s.io/initial-events-end`` bookmark,
  and honour ``timeoutSeconds``;
* failures are ``Status`` objects with the standard reasons.

Run ``python3 tests/kube/emulator.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import copy
import datetime
import importlib.metadata
import json
import os
import pathlib
import secrets
import signal
import sys
import tempfile
import traceback
import uuid
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import Any, Final

import aiohttp.web
import attrs
import kmock
import yaml
from typing_extensions import override

from kube_api import (
    KNOWN_REASONS,
    STANDARD_REASONS,
    JSONObject,
    ServedResource,
    already_exists,
    api_error,
    conflict,
    invalid,
    not_found,
    parse_bool,
    status_body,
)
from kube_patches import PatchError, json_patch, merge_patch
from kube_selectors import FieldSelector, LabelSelector, ObjectPredicate, SelectorError, object_predicate
from kube_watch import WatchEvent, WatchOptions, bookmark

KMOCK_VERSION: Final = "0.8"
if importlib.metadata.version("kmock") != KMOCK_VERSION:  # the subclass relies on kmock internals
    raise ImportError(f"the kube emulator needs kmock=={KMOCK_VERSION}, found {importlib.metadata.version('kmock')}")

ObjectKey = tuple[kmock.resource, str | None, str]

HOST: Final = "127.0.0.1"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"

#: How often an idle watch checks whether its client went away.
CLIENT_CHECK_SECONDS: Final = 5.0

_ALL_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_SUBRESOURCE_VERBS: Final = ("get", "patch", "update")
_GENERATED_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
#: Metadata only the server writes; clients' values are replaced by the stored ones.
_SERVER_METADATA: Final = (
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

DEFAULT_RESOURCES: Final[Mapping[str, Mapping[str, Any]]] = {
    "v1/secrets": {"kind": "Secret", "singular": "secret"},
    "v1/events": {"kind": "Event", "singular": "event", "shortnames": ("ev",)},
    "events.k8s.io/v1/events": {"kind": "Event", "singular": "event", "shortnames": ("ev",)},
    "coordination.k8s.io/v1/leases": {"kind": "Lease", "singular": "lease"},
    "jobwarden.dev/v1alpha1/jobpolicies": {
        "kind": "JobPolicy",
        "singular": "jobpolicy",
        "shortnames": ("jp",),
        "subresources": ("status",),
    },
}
"""The resources served out of the box (all namespaced, all verbs)."""


# --------------------------------------------------------------------------- request helpers


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _metadata(obj: JSONObject) -> JSONObject:
    """The object's metadata dict, created if absent (400 if it is not an object)."""
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise api_error(400, "metadata must be an object")
    return metadata


def _spec_part(obj: Mapping[str, Any]) -> JSONObject:
    """Everything whose change bumps ``generation``: all but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _require_object(value: Any, what: str = "the request body") -> JSONObject:
    if not isinstance(value, dict):
        raise api_error(400, f"{what} must be a JSON object")
    return value


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise api_error(400, f"the request body is not valid JSON: {exc}") from exc


def _decode_yaml(body: bytes) -> Any:
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise api_error(400, f"the request body is not valid YAML: {exc}") from exc


def _header(request: kmock.Request, name: str) -> str:
    """A request header, looked up case-insensitively."""
    wanted = name.lower()
    return next((value for key, value in request.headers.items() if key.lower() == wanted), "")


# --------------------------------------------------------------------------- the emulator


@attrs.define(kw_only=True)
class JobwardenApiServer(kmock.KubernetesEmulator):
    """A kmock ``KubernetesEmulator`` that behaves enough like a kube-apiserver for kube-rs.

    Objects live in kmock's ``objects`` array (with their history), so in-process
    tests can inspect them as with plain kmock. Every committed change takes the
    next value of one global resourceVersion counter and is appended to an event
    log that watches replay from the resourceVersion they ask for.
    """

    #: Print one line per request (method, path, status) to stderr.
    log_requests: bool = False
    #: Server-side watch duration when the client sends no ``timeoutSeconds``.
    default_watch_seconds: float = 1800.0

    _last_resource_version: int = attrs.field(default=0, init=False)
    _event_log: list[WatchEvent] = attrs.field(factory=list, init=False)
    _event_logged: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, info in DEFAULT_RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(namespaced=True, verbs=_ALL_VERBS, **info)
        for probe in ("/healthz", "/livez", "/readyz"):
            self.fallback[f"get {probe}"] << b"ok"

    # ----------------------------------------------------------------- public API

    @property
    def resource_version(self) -> int:
        """The resourceVersion of the latest committed change (0 before any)."""
        return self._last_resource_version

    def create_object(self, resource: str | kmock.resource, body: Mapping[str, Any],
                      namespace: str | None = None) -> JSONObject:
        """Create an object as a POST would (stamping metadata, emitting ADDED)."""
        served = self._served(kmock.resource(resource))
        obj = copy.deepcopy(dict(body))
        if served.namespaced:
            namespace = namespace or _metadata(obj).get("namespace") or "default"
        return self._create(served, namespace if served.namespaced else None, obj)

    def load_manifest(self, manifest: Mapping[str, Any]) -> JSONObject:
        """Create the object of a manifest, found by its ``apiVersion`` and ``kind``."""
        api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
        for resource in self.resources:
            served = self._served(resource)
            if served.api_version == api_version and served.kind == kind:
                return self.create_object(resource, manifest)
        raise ValueError(f"the emulator serves no resource for apiVersion={api_version!r} kind={kind!r}")

    def close_watches(self) -> None:
        """End every open watch stream (used on shutdown so that it stays prompt)."""
        self._closing = True
        self._wake_watches()

    # ----------------------------------------------------------------- kmock overrides

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8's URL parser fails on paths ending in /namespaces; namespaces are not served.
        if raw_request.path.rstrip("/").endswith("/namespaces"):
            return await self._render_error(api_error(404))
        return await super().__call__(raw_request)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            response = await self._dispatch(request)
        except kmock.KubernetesError as exc:
            response = await self._render_error(exc)
        if self.log_requests:
            print(f"{request.method.value} {request.url.path_qs} -> {response.status}", file=sys.stderr, flush=True)
        return response

    @override
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            code = exc.status
            standard_reason, standard_message = STANDARD_REASONS.get(code, ("InternalError", "error"))
            if exc.reason in KNOWN_REASONS:
                reason, message = str(exc.reason), exc.message or standard_message
            else:  # kmock's own errors carry prose reasons and hints for kmock users
                reason, message = standard_reason, standard_message
            details = exc.details if isinstance(exc.details, Mapping) and "traceback" not in exc.details else None
        else:
            traceback.print_exception(exc, file=sys.stderr)
            code, reason = 500, "InternalError"
            message = f"the kube emulator failed: {exc!r}"
            details = None
        return aiohttp.web.json_response(status_body(code, reason, message, details), status=code)

    @override
    async def _serve_version(self, request: kmock.Request) -> JSONObject:
        """``/api/v1`` and ``/apis/<group>/<version>``: the APIResourceList of that version."""
        if request.resource is None:
            raise api_error(404)
        group, version = request.resource.group, request.resource.version
        served = [self._served(res) for res in self.resources if res.group == group and res.version == version]
        if not served and group != "":
            raise api_error(404)
        entries: list[JSONObject] = []
        for item in sorted(served, key=lambda s: str(s.resource.plural)):
            info = self.resources[item.resource]
            entries.append({
                "name": item.resource.plural,
                "singularName": info.singular or "",
                "namespaced": item.namespaced,
                "kind": item.kind,
                "verbs": sorted(info.verbs),
                "shortNames": sorted(info.shortnames),
                "categories": sorted(info.categories),
            })
            for subresource in sorted(info.subresources):
                entries.append({
                    "name": f"{item.resource.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": item.namespaced,
                    "kind": item.kind,
                    "verbs": list(_SUBRESOURCE_VERBS),
                })
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else str(version),
            "resources": entries,
        }

    @override
    async def _serve_server_version(self, request: kmock.Request) -> JSONObject:
        return {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-jobwarden-kube-emulator",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "none",
            "compiler": "kmock",
            "platform": "linux/amd64",
        }

    @override
    async def _serve_watch(self, request: kmock.Request) -> AsyncGenerator[JSONObject | None, None]:
        """Yield the events of one watch request.

        The first item is ``None``, once the request is validated: the caller may
        then send the response headers (as kmock does with an empty first chunk).
        """
        served = self._served(request.resource)
        options = WatchOptions.parse(request.params, self.default_watch_seconds)
        selects = self._selection(request.params, name=request.name)
        namespace = request.namespace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.timeout_seconds
        yield None

        cursor = options.resource_version or 0
        if options.starts_from_current_state:
            cursor = self._last_resource_version
            for obj in self._live_objects(served, namespace):
                if selects(obj):
                    yield {"type": "ADDED", "object": obj}
            if options.send_initial_events:
                yield bookmark(served, cursor, initial_events_end=True)

        while not self._closing:
            wakeup = self._event_logged  # taken before scanning: later events set it
            for event in self._events_after(cursor):
                cursor = event.resource_version
                seen = event.as_seen_by(served.resource, namespace, selects)
                if seen is not None:
                    yield seen
            remaining = deadline - loop.time()
            if remaining <= 0 or self._client_gone(request):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=min(remaining, CLIENT_CHECK_SECONDS))

    # ----------------------------------------------------------------- routing

    async def _dispatch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None:  # not a Kubernetes path: kmock's fallbacks (/version, probes, 404)
            return await super()._handle(request)
        if resource.plural is None:  # discovery: /api, /api/v1, /apis, /apis/<group>[/<version>]
            if request.namespace is not None:  # /api/v1/namespaces/<name>: namespaces are not served
                raise api_error(404)
            if request.method.value.upper() != "GET":
                raise api_error(405)
            return await super()._handle(request)

        served = self._served(resource)
        method = request.method.value.upper()
        name, namespace, subresource = request.name, request.namespace, request.subresource
        if subresource is not None and (subresource != "status" or not served.has_status):
            raise api_error(404)
        if not served.namespaced and namespace is not None:
            raise api_error(404)
        if served.namespaced and namespace is None and name is not None:
            raise api_error(404)
        if "dryRun" in request.params:
            raise api_error(400, "dryRun is not supported by the kube emulator")

        if method == "GET":
            if parse_bool(request.params.get("watch")):
                return await self._respond_watch(request)
            if name is None:
                return aiohttp.web.json_response(self._list(served, namespace, request.params))
            return aiohttp.web.json_response(self._get(served, (served.resource, namespace, name)))
        if name is None:
            if method == "POST" and subresource is None and (namespace is not None or not served.namespaced):
                body = _require_object(_decode_json(request.body))
                return aiohttp.web.json_response(self._create(served, namespace, body), status=201)
            if method == "DELETE" and subresource is None:
                return aiohttp.web.json_response(self._delete_collection(served, namespace, request.params))
            raise api_error(405)

        key: ObjectKey = (served.resource, namespace, name)
        status_only = subresource == "status"
        if method == "PUT":
            body = _require_object(_decode_json(request.body))
            return aiohttp.web.json_response(self._replace(served, key, body, status_only=status_only))
        if method == "PATCH":
            obj, created = self._patch(served, key, request, status_only=status_only)
            return aiohttp.web.json_response(obj, status=201 if created else 200)
        if method == "DELETE" and not status_only:
            options = _require_object(_decode_json(request.body), "DeleteOptions") if request.body.strip() else {}
            return aiohttp.web.json_response(self._delete(served, key, options))
        raise api_error(405)

    async def _respond_watch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """Stream newline-delimited JSON watch events in a chunked response."""
        events = self._serve_watch(request)
        await anext(events)  # validation errors surface here, before any byte is sent
        raw_request = request._raw_request  # a kmock internal: the aiohttp request
        if raw_request is None:
            raise api_error(500, "the watch request has no underlying HTTP request")
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(raw_request)
        try:
            async for event in events:
                if event is not None:
                    await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing left to tell it
        finally:
            await events.aclose()
        return response

    # ----------------------------------------------------------------- reads

    def _get(self, served: ServedResource, key: ObjectKey) -> JSONObject:
        obj = self._stored(key)
        if obj is None:
            raise not_found(served, key[2])
        return obj

    def _list(self, served: ServedResource, namespace: str | None, params: Mapping[str, str]) -> JSONObject:
        selects = self._selection(params, name=None)
        items = [obj for obj in self._live_objects(served, namespace) if selects(obj)]
        return self._list_body(served, items)

    def _list_body(self, served: ServedResource, items: list[JSONObject]) -> JSONObject:
        return {
            "apiVersion": served.api_version,
            "kind": f"{served.kind}List",
            "metadata": {"resourceVersion": str(self._last_resource_version)},
            "items": items,
        }

    # ----------------------------------------------------------------- writes

    def _create(self, served: ServedResource, namespace: str | None, obj: JSONObject) -> JSONObject:
        obj = copy.deepcopy(obj)
        self._check_type(served, obj)
        metadata = _metadata(obj)
        name = metadata.get("name") or self._generated_name(served, namespace, metadata.get("generateName"))
        if not isinstance(name, str) or not name:
            raise invalid(served, "", "metadata.name: Required value: name or generateName is required")
        body_namespace = metadata.get("namespace")
        if served.namespaced and body_namespace and body_namespace != namespace:
            raise api_error(400, "the namespace of the provided object does not match "
                                 "the namespace sent on the request")
        if metadata.get("resourceVersion"):
            raise api_error(500, "resourceVersion should not be set on objects to be created")
        key: ObjectKey = (served.resource, namespace, name)
        if self._stored(key) is not None:
            raise already_exists(served, name)

        if served.has_status:
            obj.pop("status", None)  # the status subresource is written separately
        self._fold_secret_string_data(served, obj)
        for field in _SERVER_METADATA:
            metadata.pop(field, None)
        metadata["name"] = name
        if served.namespaced:
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1
        metadata["resourceVersion"] = str(self._allocate_resource_version())
        self._store(key, obj)
        self._log_event("ADDED", served, key, obj, previous=None)
        return copy.deepcopy(obj)

    def _replace(self, served: ServedResource, key: ObjectKey, body: JSONObject, *, status_only: bool) -> JSONObject:
        old = self._get(served, key)
        metadata = _metadata(body)
        expected = metadata.get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise conflict(served, key[2])
        return self._update(served, key, old, body, status_only=status_only)

    def _patch(self, served: ServedResource, key: ObjectKey, request: kmock.Request,
               *, status_only: bool) -> tuple[JSONObject, bool]:
        """Apply a PATCH; returns the object and whether the patch created it."""
        media_type = _header(request, "Content-Type").split(";")[0].strip().lower()
        old = self._stored(key)
        if media_type == APPLY_PATCH:
            if not request.params.get("fieldManager"):
                raise api_error(400, "PATCH, application/apply-patch+yaml requires fieldManager")
            patch = _require_object(_decode_yaml(request.body), "the apply patch")
            if old is None:
                if status_only:
                    raise not_found(served, key[2])
                patch_name = _metadata(patch).get("name")
                if patch_name != key[2]:
                    raise api_error(400, f"the name of the object ({patch_name}) does not match "
                                         f"the name on the URL ({key[2]})")
                return self._create(served, key[1], patch), True
            candidate = merge_patch(old, patch)
        elif media_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            patch = _require_object(_decode_json(request.body), "the merge patch")
            if old is None:
                raise not_found(served, key[2])
            candidate = merge_patch(old, patch)
        elif media_type == JSON_PATCH:
            operations = _decode_json(request.body)
            if old is None:
                raise not_found(served, key[2])
            try:
                candidate = json_patch(old, operations)
            except PatchError as exc:
                raise (api_error(400, str(exc)) if exc.malformed else invalid(served, key[2], str(exc))) from exc
        else:
            raise api_error(415, f"the body of the request was in an unknown format ({media_type or 'none'}) - "
                                 f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, "
                                 f"{STRATEGIC_MERGE_PATCH}")
        if not isinstance(candidate, dict):
            raise invalid(served, key[2], "the patched object is not an object")
        candidate_metadata = candidate.get("metadata")
        expected = candidate_metadata.get("resourceVersion") if isinstance(candidate_metadata, dict) else None
        if expected is not None and expected != old["metadata"]["resourceVersion"]:
            raise conflict(served, key[2])
        return self._update(served, key, old, candidate, status_only=status_only), False

    def _delete(self, served: ServedResource, key: ObjectKey, options: Mapping[str, Any]) -> JSONObject:
        old = self._get(served, key)
        preconditions = options.get("preconditions") or {}
        if not isinstance(preconditions, Mapping):
            raise api_error(400, "preconditions must be an object")
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            actual = old["metadata"].get(field)
            if wanted is not None and wanted != actual:
                raise conflict(served, key[2], f"Precondition failed: {field} in precondition: {wanted}, "
                                               f"{field} in object meta: {actual}")
        return self._delete_existing(served, key, old)

    def _delete_collection(self, served: ServedResource, namespace: str | None,
                           params: Mapping[str, str]) -> JSONObject:
        selects = self._selection(params, name=None)
        deleted = [
            self._delete_existing(served, self._key_of(served, obj), obj)
            for obj in self._live_objects(served, namespace)
            if selects(obj)
        ]
        return self._list_body(served, deleted)

    def _delete_existing(self, served: ServedResource, key: ObjectKey, old: JSONObject) -> JSONObject:
        """Delete now, or mark for deletion while finalizers remain (as the apiserver does)."""
        metadata = old["metadata"]
        if metadata.get("deletionTimestamp"):
            return old
        if metadata.get("finalizers"):
            marked = copy.deepcopy(old)
            marked_metadata = marked["metadata"]
            marked_metadata["deletionTimestamp"] = _now()
            marked_metadata["deletionGracePeriodSeconds"] = 0
            marked_metadata["generation"] = int(metadata.get("generation", 0)) + 1
            return self._commit(served, key, old, marked)
        return self._remove(served, key, old)

    def _update(self, served: ServedResource, key: ObjectKey, old: JSONObject, candidate: JSONObject,
                *, status_only: bool) -> JSONObject:
        """Turn a client's desired object into the next stored state and commit it."""
        if status_only:  # only .status moves; everything else stays as stored
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
            return self._commit(served, key, old, new)

        new = copy.deepcopy(candidate)
        self._check_type(served, new)
        metadata = _metadata(new)
        old_metadata = old["metadata"]
        for field in ("name", "namespace"):
            if metadata.get(field) not in (None, old_metadata.get(field)):
                raise api_error(400, f"metadata.{field} cannot be changed: it must match the request URL "
                                     f"({old_metadata.get(field)}), got {metadata.get(field)}")
            if field in old_metadata:
                metadata[field] = old_metadata[field]
        for field in _SERVER_METADATA:
            if field in old_metadata:
                metadata[field] = old_metadata[field]
            else:
                metadata.pop(field, None)
        if served.has_status:  # the main resource ignores .status; /status writes it
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        self._fold_secret_string_data(served, new)
        if _spec_part(new) != _spec_part(old):
            metadata["generation"] = int(old_metadata.get("generation", 0)) + 1
        return self._commit(served, key, old, new)

    def _commit(self, served: ServedResource, key: ObjectKey, old: JSONObject, new: JSONObject) -> JSONObject:
        """Store a changed object (MODIFIED); an unchanged one keeps its resourceVersion silently."""
        if new == old:
            return old
        new["metadata"]["resourceVersion"] = str(self._allocate_resource_version())
        self._store(key, new)
        self._log_event("MODIFIED", served, key, new, previous=old)
        metadata = new["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            return self._remove(served, key, new)
        return copy.deepcopy(new)

    def _remove(self, served: ServedResource, key: ObjectKey, last: JSONObject) -> JSONObject:
        final = copy.deepcopy(last)
        final["metadata"]["resourceVersion"] = str(self._allocate_resource_version())
        self.objects[key].delete()
        self._log_event("DELETED", served, key, final, previous=last)
        return final

    # ----------------------------------------------------------------- helpers

    def _served(self, resource: kmock.resource | None) -> ServedResource:
        if resource is None or resource not in self.resources:
            raise api_error(404)
        info = self.resources[resource]
        return ServedResource(
            resource=resource,
            kind=info.kind or str(resource.plural).capitalize(),
            namespaced=info.namespaced is not False,
            has_status="status" in info.subresources,
        )

    def _check_type(self, served: ServedResource, obj: JSONObject) -> None:
        """Reject a body of another type; fill in ``apiVersion`` and ``kind``."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version not in (None, served.api_version) or kind not in (None, served.kind):
            raise api_error(400, f"the object's apiVersion/kind ({api_version}/{kind}) does not match "
                                 f"the request URL ({served.api_version}/{served.kind})")
        obj["apiVersion"] = served.api_version
        obj["kind"] = served.kind

    def _fold_secret_string_data(self, served: ServedResource, obj: JSONObject) -> None:
        """Secrets store ``stringData`` base64-encoded under ``data``, as the apiserver does."""
        if not served.is_secret:
            return
        string_data = obj.pop("stringData", None)
        if string_data is None:
            return
        if not isinstance(string_data, Mapping) or not all(isinstance(v, str) for v in string_data.values()):
            raise invalid(served, str(_metadata(obj).get("name", "")), "stringData: values must be strings")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise invalid(served, str(_metadata(obj).get("name", "")), "data: must be an object")
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj["data"] = data

    def _generated_name(self, served: ServedResource, namespace: str | None, prefix: Any) -> str | None:
        if not isinstance(prefix, str) or not prefix:
            return None
        for _ in range(100):
            name = prefix + "".join(secrets.choice(_GENERATED_NAME_ALPHABET) for _ in range(5))
            if self._stored((served.resource, namespace, name)) is None:
                return name
        raise api_error(409, f"could not generate a unique name for prefix {prefix!r}", reason="AlreadyExists")

    def _selection(self, params: Mapping[str, str], *, name: str | None) -> ObjectPredicate:
        try:
            labels = LabelSelector.parse(params.get("labelSelector"))
            fields = FieldSelector.parse(params.get("fieldSelector")).with_name(name)
        except SelectorError as exc:
            raise api_error(400, f"unable to parse requirement: {exc}") from exc
        return object_predicate(labels, fields)

    @staticmethod
    def _key_of(served: ServedResource, obj: JSONObject) -> ObjectKey:
        metadata = obj["metadata"]
        return served.resource, metadata.get("namespace"), metadata["name"]

    def _stored(self, key: ObjectKey) -> JSONObject | None:
        """A copy of the live object under ``key``, or None."""
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def _live_objects(self, served: ServedResource, namespace: str | None) -> list[JSONObject]:
        """Copies of the live objects of a resource (in a namespace, or all), by namespace and name."""
        found = [
            (obj_namespace or "", name, obj)
            for (resource, obj_namespace, name), obj in self.objects.items()
            if resource == served.resource and (namespace is None or obj_namespace == namespace) and not obj.deleted
        ]
        return [copy.deepcopy(obj.raw) for _, _, obj in sorted(found, key=lambda item: item[:2])]

    def _store(self, key: ObjectKey, obj: JSONObject) -> None:
        stored = copy.deepcopy(obj)
        if key in self.objects:
            self.objects[key].history.append(stored)
        else:
            self.objects[key] = stored

    def _allocate_resource_version(self) -> int:
        self._last_resource_version += 1
        return self._last_resource_version

    def _log_event(self, event_type: str, served: ServedResource, key: ObjectKey, obj: JSONObject,
                   previous: JSONObject | None) -> None:
        self._event_log.append(WatchEvent(
            resource_version=int(obj["metadata"]["resourceVersion"]),
            type=event_type,
            resource=served.resource,
            namespace=key[1],
            obj=copy.deepcopy(obj),
            previous=copy.deepcopy(previous),
        ))
        self._wake_watches()

    def _wake_watches(self) -> None:
        wakeup, self._event_logged = self._event_logged, asyncio.Event()
        wakeup.set()

    def _events_after(self, resource_version: int) -> Sequence[WatchEvent]:
        start = bisect.bisect_right(self._event_log, resource_version, key=lambda e: e.resource_version)
        return self._event_log[start:]

    @staticmethod
    def _client_gone(request: kmock.Request) -> bool:
        raw_request = request._raw_request
        transport = raw_request.transport if raw_request is not None else None
        return transport is None or transport.is_closing()


# --------------------------------------------------------------------------- command line


class ManifestError(ValueError):
    """A preload file that is not a set of Kubernetes manifests."""


def load_manifests(path: pathlib.Path) -> list[JSONObject]:
    """All objects of a (multi-document) YAML file; ``kind: List`` documents are unpacked."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return list(_flatten_manifests(documents, path))


def _flatten_manifests(documents: Sequence[Any], path: pathlib.Path) -> Iterator[JSONObject]:
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, dict) or "apiVersion" not in document or "kind" not in document:
            raise ManifestError(f"{path}: every document must be an object with apiVersion and kind")
        if document["kind"] == "List":
            yield from _flatten_manifests(document.get("items") or [], path)
        else:
            yield document


def write_kubeconfig(path: pathlib.Path, server_url: str, namespace: str) -> None:
    """Write (atomically) a kubeconfig for the emulator: plain HTTP, no credentials."""
    name = "kube-emulator"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.replace(handle.name, path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Kubernetes API emulator for jobwarden's end-to-end tests.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--preload", type=pathlib.Path, action="append", default=[], metavar="FILE.yaml",
                        help="create the objects of these YAML manifests before serving (repeatable)")
    parser.add_argument("--kubeconfig-out", type=pathlib.Path, metavar="PATH",
                        help="write a kubeconfig pointing at the emulator to PATH")
    parser.add_argument("--namespace", default="default", help="namespace of the kubeconfig context")
    parser.add_argument("--log-requests", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, manifests: Sequence[JSONObject]) -> int:
    emulator = JobwardenApiServer(log_requests=args.log_requests)
    async with emulator, kmock.Server(emulator, host=HOST, port=args.port or None) as server:
        try:
            for manifest in manifests:
                emulator.load_manifest(manifest)
        except (ValueError, kmock.KubernetesError) as exc:
            print(f"kube emulator: cannot preload: {exc}", file=sys.stderr)
            return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # before announcing: a stop may follow at once
            loop.add_signal_handler(signum, stop.set)
        url = f"http://{HOST}:{server.port}"
        if args.kubeconfig_out is not None:
            write_kubeconfig(args.kubeconfig_out, url, args.namespace)
        print(f"kube emulator listening on {url}", flush=True)
        await stop.wait()
        emulator.close_watches()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM or SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    try:
        manifests = [manifest for path in args.preload for manifest in load_manifests(path)]
    except ManifestError as exc:
        print(f"kube emulator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, manifests))


if __name__ == "__main__":
    sys.exit(main())
