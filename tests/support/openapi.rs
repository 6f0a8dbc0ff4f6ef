//! A validator for the subset of OpenAPI v3 (structural schema) that the JobPolicy CRD uses:
//! types, nullable, required, properties (unknown fields are errors, as with
//! `kubectl apply --validate=strict`), items, enum, pattern, lengths, bounds, item counts and
//! `x-kubernetes-list-type` uniqueness. CEL rules are evaluated by tests/schema/validate_examples.py.

use serde_json::Value;
use std::collections::HashSet;

/// Validates a manifest (apiVersion, kind and metadata are the apiserver's, not the schema's).
pub fn validate_manifest(schema: &Value, manifest: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(object) = manifest.as_object() else {
        return vec!["manifest is not an object".into()];
    };
    let mut body = object.clone();
    for envelope in ["apiVersion", "kind", "metadata"] {
        body.remove(envelope);
    }
    validate(schema, &Value::Object(body), "", &mut errors);
    errors
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{at}: must not be null"));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match (ty, value) {
        (Some("object"), Value::Object(map)) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = req.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    errors.push(format!("{}: required", join(path, key)));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    match props.get(key) {
                        Some(child_schema) => {
                            validate(child_schema, child, &join(path, key), errors);
                        }
                        None => errors.push(format!("{}: unknown field", join(path, key))),
                    }
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            check_count(schema, items.len(), "minItems", "maxItems", at, errors);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    let mut seen = HashSet::new();
                    for item in items {
                        if !seen.insert(item.to_string()) {
                            errors.push(format!("{at}: duplicate entry {item}"));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let mut seen = HashSet::new();
                    for item in items {
                        let id: Vec<String> = keys
                            .iter()
                            .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                            .collect();
                        if !seen.insert(id.clone()) {
                            errors.push(format!("{at}: duplicate entry for key {}", id.join(",")));
                        }
                    }
                }
                _ => {}
            }
        }
        (Some("string"), Value::String(s)) => {
            check_count(
                schema,
                s.chars().count(),
                "minLength",
                "maxLength",
                at,
                errors,
            );
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let re = regex::Regex::new(pattern).expect("schema pattern compiles");
                if !re.is_match(s) {
                    errors.push(format!("{at}: {s:?} does not match {pattern}"));
                }
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.contains(value)
            {
                errors.push(format!(
                    "{at}: {s:?} is not one of {}",
                    Value::Array(allowed.clone())
                ));
            }
        }
        (Some("integer"), Value::Number(n)) if n.is_i64() || n.is_u64() => {
            check_bounds(schema, n.as_f64(), at, errors);
        }
        (Some("number"), Value::Number(n)) => check_bounds(schema, n.as_f64(), at, errors),
        (Some("boolean"), Value::Bool(_)) => {}
        (None, _) => {}
        (Some(t), v) => errors.push(format!("{at}: expected {t}, found {v}")),
    }
}

fn check_count(schema: &Value, n: usize, min: &str, max: &str, at: &str, errors: &mut Vec<String>) {
    if let Some(lo) = schema.get(min).and_then(Value::as_u64)
        && (n as u64) < lo
    {
        errors.push(format!("{at}: {min} {lo}, found {n}"));
    }
    if let Some(hi) = schema.get(max).and_then(Value::as_u64)
        && (n as u64) > hi
    {
        errors.push(format!("{at}: {max} {hi}, found {n}"));
    }
}

fn check_bounds(schema: &Value, x: Option<f64>, at: &str, errors: &mut Vec<String>) {
    let Some(x) = x else { return };
    if let Some(lo) = schema.get("minimum").and_then(Value::as_f64)
        && x < lo
    {
        errors.push(format!("{at}: must be >= {lo}, found {x}"));
    }
    if let Some(hi) = schema.get("maximum").and_then(Value::as_f64)
        && x > hi
    {
        errors.push(format!("{at}: must be <= {hi}, found {x}"));
    }
}
