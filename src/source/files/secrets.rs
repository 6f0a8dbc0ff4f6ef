//! `Secret` manifests: their `data` (base64) and `stringData` read into a [`LoadedSecret`], no
//! value ever in a message, and a key of one looked up by namespace, name and key.

use super::metadata::{DEFAULT_NAMESPACE, check_namespace, check_object_name};
use super::{LoadedSecret, ManifestError, SourceLocation};
use crate::crd::SecretKeyRef;
use crate::source::secret::SecretError;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::collections::BTreeMap;

pub(super) fn load_secret(
    at: &SourceLocation,
    object: &serde_json::Map<String, Value>,
    errors: &mut Vec<ManifestError>,
) -> Option<LoadedSecret> {
    let before = errors.len();
    let metadata = object.get("metadata").and_then(Value::as_object);
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    check_object_name(at, "metadata.name", name, errors);
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned();
    check_namespace(at, &namespace, errors);

    let mut data = BTreeMap::new();
    // Messages below never include a value: these are secrets.
    if let Some(map) = section(at, object, "data", errors) {
        for (key, v) in map {
            let path = Some(format!("data.{key}"));
            let Some(encoded) = v.as_str() else {
                errors.push(ManifestError::in_document(
                    at,
                    path,
                    "must be a base64 string",
                ));
                continue;
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            match decoded {
                Some(text) => {
                    data.insert(key.clone(), SecretString::from(text));
                }
                None => errors.push(ManifestError::in_document(
                    at,
                    path,
                    "not valid base64-encoded UTF-8 text",
                )),
            }
        }
    }
    if let Some(map) = section(at, object, "stringData", errors) {
        for (key, v) in map {
            match v.as_str() {
                Some(text) => {
                    data.insert(key.clone(), SecretString::from(text.to_owned()));
                }
                None => errors.push(ManifestError::in_document(
                    at,
                    Some(format!("stringData.{key}")),
                    "must be a string",
                )),
            }
        }
    }
    (errors.len() == before).then(|| LoadedSecret {
        source: at.clone(),
        namespace,
        name: name.unwrap_or_default().to_owned(),
        data,
    })
}

fn section<'v>(
    at: &SourceLocation,
    object: &'v serde_json::Map<String, Value>,
    name: &str,
    errors: &mut Vec<ManifestError>,
) -> Option<&'v serde_json::Map<String, Value>> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            errors.push(ManifestError::in_document(
                at,
                Some(name.to_owned()),
                "must be a mapping of keys to values",
            ));
            None
        }
    }
}

/// Looks up a key of a Secret in `namespace`: `Ok(None)` when no such Secret manifest exists.
pub fn lookup_secret_key<'s>(
    secrets: &'s [LoadedSecret],
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<Option<&'s SecretString>, SecretError> {
    let Some(secret) = secrets
        .iter()
        .find(|s| s.namespace == namespace && s.name == secret_ref.name)
    else {
        return Ok(None);
    };
    let value = secret
        .get(&secret_ref.key)
        .ok_or_else(|| SecretError::KeyNotFound {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
        })?;
    if value.expose_secret().trim().is_empty() {
        return Err(SecretError::EmptyValue {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
        });
    }
    Ok(Some(value))
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
