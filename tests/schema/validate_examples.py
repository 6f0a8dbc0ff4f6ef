#!/usr/bin/env python3
"""Validates JobPolicy manifests against the generated CRD, as an apiserver would.

1. The openAPIV3Schema of crds/jobpolicy.yaml, turned into a JSON Schema (nullable → null
   allowed, unknown fields rejected as with `kubectl apply --validate=strict`), checked with the
   `jsonschema` package.
2. Every `x-kubernetes-validations` CEL rule of the schema, evaluated with `cel-python`
   (module `celpy`) on the matching part of each manifest.
3. Self-tests of the CEL rules: manifests that must be accepted and manifests that must be
   rejected with a given message, so a rule that never fires (or always fires) is caught.

Usage: python3 tests/schema/validate_examples.py [PATH...]   (default: deploy/examples)
Needs: pip install jsonschema pyyaml cel-python
Exit code 0 when everything passed; prints "N passed, M failed".
"""

import copy
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "jobpolicy.yaml"


def load_schema():
    crd = yaml.safe_load(CRD_PATH.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def to_json_schema(node):
    """OpenAPI v3 structural schema → JSON Schema (draft 2020-12)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default"):
            continue
        out[key] = to_json_schema(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node:
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def manifest_schema(openapi):
    schema = to_json_schema(openapi)
    schema["properties"].update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    return schema


def cel_errors(schema, value, path="", celpy=None):
    """Evaluates every CEL rule of `schema` that applies to `value`; returns error strings."""
    errors = []
    if value is None:
        return errors
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        try:
            ok = program.evaluate({"self": celpy.json_to_cel(value)})
        except Exception as exc:  # an evaluation error rejects the object, as in Kubernetes
            errors.append(f"{path or '<root>'}: {rule['rule']}: evaluation error: {exc}")
            continue
        if not bool(ok):
            errors.append(f"{path or '<root>'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, child in value.items():
            child_schema = schema.get("properties", {}).get(key)
            if child_schema is not None:
                errors += cel_errors(child_schema, child, f"{path}.{key}" if path else key, celpy)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{i}]", celpy)
    return errors


def validate(openapi, manifest, celpy):
    errors = []
    validator = jsonschema.Draft202012Validator(manifest_schema(openapi))
    for err in validator.iter_errors(manifest):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        errors.append(f"{where}: {err.message}")
    if celpy is not None:
        body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
        errors += cel_errors(openapi, body, "", celpy)
    return errors


def policies_in(paths):
    for path in paths:
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        for file in files:
            for i, doc in enumerate(d for d in yaml.safe_load_all(file.read_text()) if d):
                if doc.get("kind") == "JobPolicy":
                    yield f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}: document {i + 1}", doc


GOOD = {
    "apiVersion": "jobwarden.dev/v1alpha1",
    "kind": "JobPolicy",
    "metadata": {"name": "p", "namespace": "ci"},
    "spec": {
        "gitlab": {"url": "http://127.0.0.1:8080", "tokenSecretRef": {"name": "gitlab-token", "key": "token"}},
        "projects": ["1"],
        "interval": "1m",
        "rules": [
            {"name": "retry", "match": {"statuses": ["failed"], "failureReasons": ["script_failure"]},
             "retry": {"limit": 2, "backoff": {"duration": "30s", "factor": 2, "maxDuration": "10m"}}},
            {"name": "play", "match": {"window": {"from": "22:00", "to": "06:00"}}, "play": {}},
        ],
    },
}


def mutated(change):
    doc = copy.deepcopy(GOOD)
    change(doc["spec"])
    return doc


def cel_cases():
    """(description, manifest, expected message or None when it must be accepted)."""
    def two_actions(spec):
        spec["rules"][1]["cancel"] = {}

    def no_action(spec):
        del spec["rules"][1]["play"]

    def duplicate_names(spec):
        spec["rules"][1]["name"] = "retry"

    def empty_window(spec):
        spec["rules"][1]["match"]["window"] = {"from": "10:00", "to": "10:00"}

    def short_max(spec):
        spec["rules"][0]["retry"]["backoff"]["maxDuration"] = "10s"

    def fast_interval(spec):
        spec["interval"] = "5s"

    def reasons_on_success(spec):
        spec["rules"][0]["match"]["statuses"] = ["success"]

    def groups_only(spec):
        del spec["projects"]
        spec["groups"] = [{"path": "platform"}]
        spec["excludeProjects"] = ["platform/legacy-*"]

    def no_targets(spec):
        del spec["projects"]

    def go_durations(spec):
        spec["interval"] = "1h30m"
        spec["rules"][0]["retry"]["backoff"] = {"duration": "1.5m", "maxDuration": "90s"}

    return [
        ("the baseline", GOOD, None),
        ("Go durations", mutated(go_durations), None),
        ("groups without projects", mutated(groups_only), None),
        ("neither projects nor groups", mutated(no_targets), "a policy needs spec.projects or spec.groups"),
        ("two actions", mutated(two_actions), "a rule must have exactly one action"),
        ("no action", mutated(no_action), "a rule must have exactly one action"),
        ("duplicate rule names", mutated(duplicate_names), "rule names must be unique"),
        ("empty window", mutated(empty_window), "from and to must differ"),
        ("maxDuration below duration", mutated(short_max), "maxDuration must not be shorter than duration"),
        ("interval below 10s", mutated(fast_interval), "interval must be at least 10s"),
        ("failureReasons without failed", mutated(reasons_on_success), "failureReasons only match failed jobs"),
    ]


def main(argv):
    try:
        import celpy
    except ImportError:
        celpy = None
        print("note: cel-python is not installed (pip install cel-python); CEL rules not evaluated")
    openapi = load_schema()
    paths = [pathlib.Path(a).resolve() for a in argv] or [ROOT / "deploy" / "examples"]
    passed = failed = 0

    found = False
    for where, doc in policies_in(paths):
        found = True
        errors = validate(openapi, doc, celpy)
        if errors:
            failed += 1
            print(f"FAIL {where}")
            for e in errors:
                print(f"    {e}")
        else:
            passed += 1
            print(f"ok   {where}")
    if not found:
        failed += 1
        print("FAIL no JobPolicy manifests found")

    if celpy is not None:
        for description, doc, expected in cel_cases():
            errors = validate(openapi, doc, celpy)
            if expected is None:
                ok = not errors
            else:
                ok = any(expected in e for e in errors)
            if ok:
                passed += 1
                print(f"ok   CEL: {description}")
            else:
                failed += 1
                print(f"FAIL CEL: {description}: expected {expected or 'no error'}, got {errors}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
