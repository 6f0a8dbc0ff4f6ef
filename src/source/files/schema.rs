//! The CRD schema's checks on a JobPolicy document, read from the generated schema (so the
//! offline checks and the CRD cannot drift apart): fields it does not define and every bound it
//! states on a value, merged with the compiler's errors.

use crate::crd::JobPolicy;
use crate::policy::{CompiledPolicy, FieldError, SpecErrors};
use kube::CustomResourceExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Where a manifest breaks the CRD's own schema, as the apiserver would tell at admission
/// (and more: it would drop unknown fields silently): fields the schema does not define, and
/// every bound the schema states on a value (`minItems`/`maxItems`, `minLength`/`maxLength`,
/// `pattern`, `enum`, `minimum`/`maximum`). The checks are read from the generated schema, so
/// the offline checks and the CRD cannot drift apart. The CEL rules are checked by `compile`.
pub(super) fn schema_violations(value: &Value) -> Vec<(String, String)> {
    static SCHEMA: LazyLock<Option<Value>> = LazyLock::new(|| {
        let crd = JobPolicy::crd();
        let schema = crd
            .spec
            .versions
            .first()?
            .schema
            .as_ref()?
            .open_api_v3_schema
            .as_ref()?;
        serde_json::to_value(schema).ok()
    });
    let mut out = Vec::new();
    if let Some(schema) = SCHEMA.as_ref() {
        walk_schema(schema, value, "", &mut out);
    }
    out
}

fn walk_schema(schema: &Value, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    check_bounds(schema, value, path, out);
    match value {
        Value::Object(map) => {
            // Objects without `properties` (metadata, status conditions' free parts) are not
            // ours to police.
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (key, child) in map {
                let is_envelope =
                    path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
                match props.get(key) {
                    Some(child_schema) => walk_schema(child_schema, child, &join(key), out),
                    None if is_envelope => {}
                    None => out.push((
                        join(key),
                        "unknown field (not in the JobPolicy schema)".to_owned(),
                    )),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_schema(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The bounds `schema` sets on `value` itself.
fn check_bounds(schema: &Value, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
    let mut fail = |message: String| out.push((path.to_owned(), message));
    match value {
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = bound("minItems").filter(|min| n < *min) {
                fail(format!("must have at least {min} item(s), has {n}"));
            }
            if let Some(max) = bound("maxItems").filter(|max| n > *max) {
                fail(format!("must have at most {max} items, has {n}"));
            }
        }
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if let Some(min) = bound("minLength").filter(|min| n < *min) {
                fail(format!("must be at least {min} character(s) long"));
            }
            if let Some(max) = bound("maxLength").filter(|max| n > *max) {
                fail(format!("must be at most {max} characters long"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !matches_pattern(pattern, text)
            {
                fail(format!("must match the pattern {pattern}"));
            }
        }
        Value::Number(number) => {
            let x = number.as_f64().unwrap_or(f64::NAN);
            let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
            match (limit("minimum"), limit("maximum")) {
                (Some(min), Some(max)) if !(min..=max).contains(&x) => {
                    fail(format!("must be between {min} and {max}"));
                }
                (Some(min), None) if x < min => fail(format!("must be at least {min}")),
                (None, Some(max)) if x > max => fail(format!("must be at most {max}")),
                _ => {}
            }
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        fail(format!("must be one of {}", names.join(", ")));
    }
}

/// Whether `text` matches a schema `pattern` (compiled once per pattern).
fn matches_pattern(pattern: &str, text: &str) -> bool {
    static COMPILED: LazyLock<std::sync::Mutex<HashMap<String, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);
    let mut compiled = crate::sync::lock(&COMPILED);
    compiled
        .entry(pattern.to_owned())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .as_ref()
        // A pattern this crate cannot compile is the apiserver's to judge.
        .is_none_or(|re| re.is_match(text))
}

/// The compiler's verdict with the schema's violations added: a field the compiler already
/// faulted keeps the compiler's (more specific) message.
pub(super) fn with_violations(
    compiled: Result<CompiledPolicy, SpecErrors>,
    violations: Vec<FieldError>,
) -> Result<CompiledPolicy, SpecErrors> {
    if violations.is_empty() {
        return compiled;
    }
    let mut errors = compiled.err().map(|e| e.errors).unwrap_or_default();
    for violation in violations {
        if !errors.iter().any(|e| e.path == violation.path) {
            errors.push(violation);
        }
    }
    Err(SpecErrors { errors })
}
