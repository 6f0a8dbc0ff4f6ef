#!/usr/bin/env python3
"""Checks that every PromQL expression of the Grafana dashboard and of the alerting rules parses.

Each `expr` of the dashboard's panels (grafana-dashboard.json) and of the rule file (rules.yaml)
is sent to a running Prometheus as an instant query (GET /api/v1/query). Prometheus answers a
syntax error with HTTP 400 and errorType "bad_data"; any such answer fails the check. Grafana's
template variables are replaced first: $__rate_interval and $__interval by 1m, $__range by 1h,
and the dashboard's own variables ($project, ${namespace}, ...) by ".*" (they are only used in
regex matchers).

Usage (from the repository root):
    python3 deploy/monitoring/check_dashboard_queries.py --prometheus http://127.0.0.1:9090

Needs Python 3.9+ and PyYAML (Debian: python3-yaml; pip: pyyaml). Exits 0 when every expression
parses, 1 when one does not, 2 on a usage or connection problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent

GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}

# $name, ${name} and ${name:format}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute_variables(expr: str) -> str:
    """Replaces Grafana variables by values Prometheus accepts."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_BUILTINS.get(name, ".*")

    return VARIABLE.sub(replace, expr)


def dashboard_expressions(path: Path) -> Iterator[tuple[str, str]]:
    """(where, expr) for every query target of every panel, rows' nested panels included."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))

    def walk(panels: list[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    where = f"{path.name}: panel {panel.get('title')!r} target {target.get('refId')}"
                    yield where, expr
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


def rule_expressions(path: Path) -> Iterator[tuple[str, str]]:
    """(where, expr) for every alerting and recording rule of a Prometheus rule file."""
    try:
        import yaml
    except ImportError:
        sys.exit("error: PyYAML is needed to read the rule file (apt-get install python3-yaml or pip install pyyaml)")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            yield f"{path.name}: group {group.get('name')!r} rule {name!r}", rule["expr"]


def check(prometheus: str, expr: str, timeout: float) -> str | None:
    """None if Prometheus accepts the query, else the error it reported."""
    url = f"{prometheus.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as err:
        try:
            body = json.load(err)
        except (json.JSONDecodeError, ValueError):
            return f"HTTP {err.code}"
        return f"HTTP {err.code} {body.get('errorType')}: {body.get('error')}"
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", required=True, help="base URL of a running Prometheus, e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=HERE / "grafana-dashboard.json")
    parser.add_argument("--rules", type=Path, default=HERE / "rules.yaml")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per query")
    args = parser.parse_args()

    expressions = list(dashboard_expressions(args.dashboard)) + list(rule_expressions(args.rules))
    if not expressions:
        print("error: no expression found", file=sys.stderr)
        return 2

    failures = 0
    for where, expr in expressions:
        query = substitute_variables(expr)
        try:
            error = check(args.prometheus, query, args.timeout)
        except (urllib.error.URLError, OSError) as err:
            print(f"error: cannot reach Prometheus at {args.prometheus}: {err}", file=sys.stderr)
            return 2
        if error:
            failures += 1
            print(f"FAIL {where}\n     {query}\n     {error}")
    passed = len(expressions) - failures
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
