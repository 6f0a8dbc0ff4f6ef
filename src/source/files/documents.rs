//! A file's text as YAML documents: split at `---` lines, each parsed on its own and loaded as a
//! `JobPolicy` (checked against the schema, compiled, a duplicate refused), a `Secret`, or
//! ignored (another kind). A problem is reported against its document and never stops the
//! others.

use super::bounds::MAX_DOCUMENTS;
use super::metadata::{DEFAULT_NAMESPACE, check_namespace, check_object_name, policy_key};
use super::schema::{schema_violations, with_violations};
use super::secrets::load_secret;
use super::{LoadedManifests, LoadedPolicy, ManifestError, SourceLocation};
use crate::crd::{self, JobPolicy};
use crate::policy::{FieldError, PolicyKey, compile};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Splits a file's text into documents and loads each one.
pub(super) fn load_text(
    file: &Path,
    text: &str,
    loaded: &mut LoadedManifests,
    first_seen: &mut HashMap<PolicyKey, SourceLocation>,
) {
    let documents = split_documents(text);
    if documents.len() > MAX_DOCUMENTS {
        loaded.errors.push(ManifestError::in_file(
            file,
            format!(
                "{} documents: at most {MAX_DOCUMENTS} are read from one file",
                documents.len()
            ),
        ));
        return;
    }
    for (document, chunk) in documents.into_iter().enumerate() {
        let at = SourceLocation {
            file: file.to_owned(),
            document: document + 1,
        };
        load_document(&at, &chunk, loaded, first_seen);
    }
}

/// A document: its text and the line it starts on (1-based), for error locations.
struct Chunk {
    text: String,
    first_line: usize,
}

/// Splits a YAML stream at `---` lines (and drops `...` end markers), keeping only documents
/// with content (anything but blank lines and comments).
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut flush = |current: &mut String, first_line: usize| {
        let has_content = current.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if has_content {
            chunks.push(Chunk {
                text: std::mem::take(current),
                first_line,
            });
        }
        current.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker || line == "..." {
            flush(&mut current, first_line);
            first_line = i + 2;
            if let Some(rest) = line.strip_prefix("---").filter(|r| !r.trim().is_empty()) {
                // Content on the marker line (`--- !tag` or `--- {a: 1}`) belongs to the document.
                first_line = i + 1;
                current.push_str(rest.trim_start());
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, first_line);
    chunks
}

fn load_document(
    at: &SourceLocation,
    chunk: &Chunk,
    loaded: &mut LoadedManifests,
    first_seen: &mut HashMap<PolicyKey, SourceLocation>,
) {
    let value: Value = match serde_yaml::from_str(&chunk.text) {
        Ok(v) => v,
        Err(err) => {
            loaded.errors.push(ManifestError::in_document(
                at,
                None,
                yaml_error_message(&err, chunk.first_line),
            ));
            return;
        }
    };
    let Some(object) = value.as_object() else {
        loaded.errors.push(ManifestError::in_document(
            at,
            None,
            "not a Kubernetes manifest: expected a mapping with apiVersion and kind",
        ));
        return;
    };
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match (api_version, kind) {
        (crd::API_VERSION, crd::KIND) => {
            if let Some((policy, violations)) = load_policy(at, value, &mut loaded.errors) {
                let key = policy_key(&policy);
                if let Some(first) = first_seen.get(&key) {
                    loaded.errors.push(ManifestError::in_document(
                        at,
                        Some("metadata.name".into()),
                        format!("duplicate JobPolicy {key} (first defined in {first})"),
                    ));
                    return;
                }
                first_seen.insert(key.clone(), at.clone());
                let compiled = with_violations(compile(key, &policy.spec), violations);
                loaded.policies.push(LoadedPolicy {
                    source: at.clone(),
                    policy,
                    compiled,
                });
            }
        }
        (_, crd::KIND) => loaded.errors.push(ManifestError::in_document(
            at,
            Some("apiVersion".into()),
            format!(
                "unsupported apiVersion {api_version:?} for JobPolicy (expected {})",
                crd::API_VERSION
            ),
        )),
        ("v1", "Secret") => {
            if let Some(secret) = load_secret(at, object, &mut loaded.errors) {
                loaded.secrets.push(secret);
            }
        }
        ("", _) | (_, "") => loaded.errors.push(ManifestError::in_document(
            at,
            None,
            "not a Kubernetes manifest: apiVersion and kind are required",
        )),
        _ => tracing::debug!(%at, api_version, kind, "ignoring manifest of another kind"),
    }
}

/// serde_yaml's message with the line number made relative to the whole file.
fn yaml_error_message(err: &serde_yaml::Error, first_line: usize) -> String {
    let text = err.to_string();
    match err.location() {
        Some(loc) => {
            let line = loc.line() + first_line - 1;
            let base = text
                .split(" at line ")
                .next()
                .unwrap_or(text.as_str())
                .to_owned();
            format!(
                "invalid YAML at line {line} column {}: {base}",
                loc.column()
            )
        }
        None => format!("invalid YAML: {text}"),
    }
}

/// Reads a JobPolicy document. Returns the policy when it deserializes, with the schema
/// violations found in it (to be reported with the compiler's errors: one document, every
/// error); otherwise reports both and returns nothing.
fn load_policy(
    at: &SourceLocation,
    value: Value,
    errors: &mut Vec<ManifestError>,
) -> Option<(JobPolicy, Vec<FieldError>)> {
    let violations: Vec<FieldError> = schema_violations(&value)
        .into_iter()
        .map(|(path, message)| FieldError { path, message })
        .collect();
    let mut policy: JobPolicy = match serde_path_to_error::deserialize(value) {
        Ok(policy) => policy,
        Err(err) => {
            let path = err.path().to_string();
            let path = (path != ".").then_some(path);
            // Every other field the schema faults; this one in serde's words.
            for violation in violations {
                if path.as_deref() != Some(violation.path.as_str()) {
                    errors.push(ManifestError::in_document(
                        at,
                        Some(violation.path),
                        violation.message,
                    ));
                }
            }
            errors.push(ManifestError::in_document(
                at,
                path,
                err.inner().to_string(),
            ));
            return None;
        }
    };
    let before = errors.len();
    check_object_name(at, "metadata.name", policy.metadata.name.as_deref(), errors);
    let namespace = policy
        .metadata
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned())
        .clone();
    check_namespace(at, &namespace, errors);
    (errors.len() == before).then_some((policy, violations))
}
