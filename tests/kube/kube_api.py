"""The Kubernetes API vocabulary the kube emulator answers with.

The description of a served resource, and failures rendered as ``Status``
objects with the apiserver's standard reasons, codes and messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import kmock

JSONObject = dict[str, Any]

_TRUE_VALUES: Final = frozenset({"1", "t", "T", "true", "True", "TRUE"})

STANDARD_REASONS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    415: ("UnsupportedMediaType", "the server does not support the media type of the request body"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    500: ("InternalError", "an error on the server has prevented the request from succeeding"),
}
"""Reason and default message per HTTP status code."""

KNOWN_REASONS: Final = frozenset(
    {reason for reason, _ in STANDARD_REASONS.values()} | {"AlreadyExists", "Gone", "Expired"}
)
"""Every reason the emulator reports as is; any other reason is replaced by its code's."""


@dataclasses.dataclass(frozen=True)
class ServedResource:
    """A registered resource and what the handlers need to know about it."""

    resource: kmock.resource
    kind: str
    namespaced: bool
    has_status: bool

    @property
    def api_version(self) -> str:
        """``group/version``, or only the version for the core group."""
        group, version = self.resource.group, self.resource.version
        return f"{group}/{version}" if group else str(version)

    @property
    def qualified_name(self) -> str:
        """``plural.group`` as the apiserver names the resource in messages."""
        group, plural = self.resource.group, self.resource.plural
        return f"{plural}.{group}" if group else str(plural)

    @property
    def is_secret(self) -> bool:
        """Whether objects are core Secrets (``stringData`` folds into ``data``)."""
        return self.resource == kmock.resource("v1/secrets")


def api_error(code: int, message: str | None = None, *, reason: str | None = None,
              details: Mapping[str, Any] | None = None) -> kmock.KubernetesError:
    """A failure that renders as a ``Status`` with a standard reason for its code."""
    standard_reason, standard_message = STANDARD_REASONS.get(code, ("InternalError", "error"))
    return kmock.KubernetesError(
        status=code,
        reason=reason or standard_reason,
        message=message or standard_message,
        details=dict(details) if details is not None else None,
    )


def _details(served: ServedResource, name: str) -> JSONObject:
    return {"name": name, "group": served.resource.group, "kind": served.resource.plural}


def not_found(served: ServedResource, name: str) -> kmock.KubernetesError:
    """404 NotFound for one object."""
    return api_error(404, f'{served.qualified_name} "{name}" not found', details=_details(served, name))


def already_exists(served: ServedResource, name: str) -> kmock.KubernetesError:
    """409 AlreadyExists for a duplicate create."""
    return api_error(409, f'{served.qualified_name} "{name}" already exists',
                     reason="AlreadyExists", details=_details(served, name))


def conflict(served: ServedResource, name: str, why: str | None = None) -> kmock.KubernetesError:
    """409 Conflict for a write with a stale precondition."""
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return api_error(409, f'Operation cannot be fulfilled on {served.qualified_name} "{name}": {why}',
                     details=_details(served, name))


def invalid(served: ServedResource, name: str, why: str) -> kmock.KubernetesError:
    """422 Invalid for an object the server refuses to store."""
    qualified_kind = f"{served.kind}.{served.resource.group}" if served.resource.group else served.kind
    return api_error(422, f'{qualified_kind} "{name}" is invalid: {why}', details=_details(served, name))


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None) -> JSONObject:
    body: JSONObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter as the apiserver reads it (``true``, ``1``, ...)."""
    return value is not None and value in _TRUE_VALUES
