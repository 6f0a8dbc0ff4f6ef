"""Label and field selectors, as far as the kube emulator needs them.

Label selectors follow the kube-apiserver grammar: comma-separated requirements,
each one of ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k`` (the label exists) and ``!k`` (the label does not exist).

Field selectors accept ``path=v``, ``path==v`` and ``path!=v`` terms, where the
path is a dotted path into the object (``metadata.name``, ``type``,
``involvedObject.name``); a missing field compares as the empty string. Unlike
a real apiserver, any path is accepted, not only the fields a type indexes.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

ObjectPredicate = Callable[[Mapping[str, Any]], bool]
"""Whether an object is selected."""

_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_TERM = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY_TERM = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^=!\s]*)$")


class SelectorError(ValueError):
    """A selector string that cannot be parsed; the emulator answers 400 BadRequest."""


class Operator(enum.Enum):
    """How a label requirement compares a label against its values."""

    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclasses.dataclass(frozen=True)
class LabelRequirement:
    """One comma-separated term of a label selector."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels satisfies the requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
            case Operator.EQUALS | Operator.IN:
                return present and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or value not in self.values


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    """A conjunction of label requirements; the empty selector matches everything."""

    requirements: tuple[LabelRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the ``labelSelector`` query parameter."""
        if text is None or not text.strip():
            return cls()
        return cls(tuple(_parse_label_term(term) for term in _split_terms(text)))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected."""
        return all(requirement.matches(labels) for requirement in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's ``metadata.labels`` are selected."""
        metadata = obj.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
        return self.matches(labels if isinstance(labels, Mapping) else {})


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    """One ``path=value`` or ``path!=value`` term of a field selector."""

    path: tuple[str, ...]
    value: str
    negated: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's field at ``path`` satisfies the requirement."""
        return (_field_text(obj, self.path) == self.value) != self.negated


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field requirements; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        """Parse the ``fieldSelector`` query parameter."""
        if text is None or not text.strip():
            return cls()
        requirements: list[FieldRequirement] = []
        for term in _split_terms(text):
            match = _EQUALITY_TERM.match(term)
            if match is None:
                raise SelectorError(f"invalid field selector term {term!r}")
            path = tuple(match["key"].split("."))
            if not all(path):
                raise SelectorError(f"invalid field path in {term!r}")
            requirements.append(FieldRequirement(path, match["value"], match["op"] == "!="))
        return cls(tuple(requirements))

    def with_name(self, name: str | None) -> FieldSelector:
        """This selector narrowed to one object name (a watch on a named URL)."""
        if name is None:
            return self
        return FieldSelector((*self.requirements, FieldRequirement(("metadata", "name"), name, False)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object is selected."""
        return all(requirement.matches(obj) for requirement in self.requirements)


def object_predicate(labels: LabelSelector, fields: FieldSelector) -> ObjectPredicate:
    """One predicate that applies both selectors to an object."""
    return lambda obj: labels.matches_object(obj) and fields.matches(obj)


def _split_terms(text: str) -> Iterator[str]:
    """Split on the commas that are not inside a parenthesised value set."""
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth > 1:
                raise SelectorError("nested parentheses in selector")
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parentheses in selector")
        elif char == "," and depth == 0:
            yield _non_empty_term(text[start:index])
            start = index + 1
    if depth != 0:
        raise SelectorError("unbalanced parentheses in selector")
    yield _non_empty_term(text[start:])


def _non_empty_term(term: str) -> str:
    stripped = term.strip()
    if not stripped:
        raise SelectorError("empty term in selector")
    return stripped


def _parse_label_term(term: str) -> LabelRequirement:
    if term.startswith("!"):
        return LabelRequirement(_label_key(term[1:].strip()), Operator.DOES_NOT_EXIST)
    if set_match := _SET_TERM.match(term):
        values = frozenset(_label_value(value.strip()) for value in set_match["values"].split(","))
        operator = Operator.IN if set_match["op"] == "in" else Operator.NOT_IN
        return LabelRequirement(_label_key(set_match["key"]), operator, values)
    if equality_match := _EQUALITY_TERM.match(term):
        operator = Operator.NOT_EQUALS if equality_match["op"] == "!=" else Operator.EQUALS
        value = _label_value(equality_match["value"])
        return LabelRequirement(_label_key(equality_match["key"]), operator, frozenset({value}))
    return LabelRequirement(_label_key(term), Operator.EXISTS)


def _label_key(key: str) -> str:
    if not _LABEL_KEY.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _field_text(obj: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """The field at ``path`` as the apiserver compares it: a string, '' when absent."""
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    match current:
        case None:
            return ""
        case bool():
            return "true" if current else "false"
        case str() | int() | float():
            return str(current)
        case _:
            return ""
