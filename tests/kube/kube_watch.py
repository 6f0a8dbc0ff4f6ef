"""Watch plumbing for the kube emulator: the event log entries and the watch query.

An event log entry knows how a watch with a given scope and selector sees it;
the watch query is validated as the apiserver validates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

import kmock

from kube_api import JSONObject, ServedResource, api_error, parse_bool
from kube_selectors import ObjectPredicate

INITIAL_EVENTS_END: Final = "k8s.io/initial-events-end"
"""The annotation of the bookmark that ends the initial events of a streaming list."""

#: The longest a watch stays open, whatever ``timeoutSeconds`` asks for.
MAX_WATCH_SECONDS: Final = 3600.0


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """One entry of the event log: a committed change of one object."""

    resource_version: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: kmock.resource
    namespace: str | None
    obj: JSONObject
    previous: JSONObject | None

    def as_seen_by(self, resource: kmock.resource, namespace: str | None,
                   selects: ObjectPredicate) -> JSONObject | None:
        """The event a watch with this scope and selector receives, if any.

        As on a real apiserver, an object that starts or stops matching the
        selectors is reported as ADDED or DELETED to that watch.
        """
        if self.resource != resource or (namespace is not None and self.namespace != namespace):
            return None
        matches_now = selects(self.obj)
        if self.type == "MODIFIED":
            matched_before = self.previous is not None and selects(self.previous)
            if matched_before and not matches_now:
                return {"type": "DELETED", "object": self.obj}
            if matches_now and not matched_before:
                return {"type": "ADDED", "object": self.obj}
        return {"type": self.type, "object": self.obj} if matches_now else None


@dataclasses.dataclass(frozen=True)
class WatchOptions:
    """The query parameters that shape a watch."""

    resource_version: int | None
    timeout_seconds: float
    send_initial_events: bool

    @property
    def starts_from_current_state(self) -> bool:
        """Whether the watch begins with synthetic ADDED events for current objects."""
        return self.send_initial_events or not self.resource_version

    @classmethod
    def parse(cls, params: Mapping[str, str], default_timeout: float) -> WatchOptions:
        """Validate the query as the apiserver does (400 / 422 on bad combinations)."""
        raw_version = params.get("resourceVersion") or None
        try:
            resource_version = int(raw_version) if raw_version is not None else None
            timeout = float(params.get("timeoutSeconds") or 0)
        except ValueError as exc:
            raise api_error(400, f"invalid watch parameter: {exc}") from exc
        if (resource_version is not None and resource_version < 0) or timeout < 0:
            raise api_error(400, "resourceVersion and timeoutSeconds must not be negative")
        timeout = timeout or default_timeout  # absent or 0: the server's default, as on the apiserver

        send_initial_events = parse_bool(params.get("sendInitialEvents"))
        version_match = params.get("resourceVersionMatch")
        if send_initial_events:
            if version_match != "NotOlderThan":
                raise api_error(422, "resourceVersionMatch: Forbidden: sendInitialEvents requires "
                                     "setting resourceVersionMatch to NotOlderThan")
            if not parse_bool(params.get("allowWatchBookmarks")):
                raise api_error(422, "allowWatchBookmarks: Forbidden: sendInitialEvents requires "
                                     "setting allowWatchBookmarks to true")
        elif version_match:
            raise api_error(422, "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                                 "for watch unless sendInitialEvents is provided")
        return cls(resource_version, min(timeout, MAX_WATCH_SECONDS), send_initial_events)


def bookmark(served: ServedResource, resource_version: int, *, initial_events_end: bool) -> JSONObject:
    """A BOOKMARK event at ``resource_version`` (optionally ending the initial events)."""
    metadata: JSONObject = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"type": "BOOKMARK", "object": {"apiVersion": served.api_version, "kind": served.kind, "metadata": metadata}}
