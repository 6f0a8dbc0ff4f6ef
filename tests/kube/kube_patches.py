"""The patch formats the kube emulator accepts, applied to plain JSON objects.

* JSON merge patch (RFC 7386), also used for strategic merge and apply patches;
* JSON patch (RFC 6902), via the ``jsonpatch`` package that kmock already pulls in.

Both functions return new objects and never mutate their inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import jsonpointer  # type: ignore[import-untyped]


class PatchError(ValueError):
    """A patch that is malformed (``malformed=True``) or that cannot be applied."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch: objects merge, ``null`` deletes, the rest replaces."""
    return _merge(copy.deepcopy(target), patch)


def _merge(target: Any, patch: Any) -> Any:
    """Merge ``patch`` into ``target``, which the caller owns and lets this function reuse."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def json_patch(target: Mapping[str, Any], operations: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch (a list of operations) to an object."""
    if not isinstance(operations, list) or not all(isinstance(op, Mapping) for op in operations):
        raise PatchError("a JSON patch must be a list of operation objects", malformed=True)
    try:
        patch = jsonpatch.JsonPatch(operations)
        result = patch.apply(copy.deepcopy(dict(target)), in_place=False)
    except jsonpatch.InvalidJsonPatch as exc:
        raise PatchError(f"invalid JSON patch: {exc}", malformed=True) from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(f"the JSON patch cannot be applied: {exc}", malformed=False) from exc
    if not isinstance(result, dict):
        raise PatchError("the JSON patch replaced the whole object with a non-object", malformed=False)
    return result
