//! Policies from files: `JobPolicy` and `Secret` manifests in YAML files or directories, for
//! running without a cluster (`jobwarden run --policies DIR`, file mode: [`runner`]) and for
//! `jobwarden check`.
//!
//! - A directory contributes its `*.yaml` and `*.yml` files (not recursively, like
//!   `kubectl apply -f DIR`; hidden files are skipped), in name order. A file named explicitly is
//!   read whatever its extension.
//! - A file holds any number of documents separated by `---` lines. Documents are numbered from
//!   1, counting only documents with content. Each document is parsed on its own, so one bad
//!   document never stops the others from loading.
//! - `jobwarden.dev/v1alpha1` `JobPolicy` documents are policies (namespace `default` when
//!   absent); `v1` `Secret` documents provide tokens, CA bundles and webhook secrets; other kinds
//!   are ignored.
//! - Fields the CRD schema does not know are errors (the apiserver would drop them silently,
//!   and a misspelt condition such as `olderthan` would widen a rule to every job).
//!
//! | Module | Concern |
//! |---|---|
//! | `walk` | the files to read: the files named, the manifests of the directories named |
//! | `bounds` | the limits on what is read: a file's size, its documents, its nesting |
//! | `documents` | a file's text split into documents, each loaded as a policy, a Secret or ignored |
//! | `metadata` | manifests' names and namespaces, and a policy's key |
//! | `schema` | the CRD schema's checks on a JobPolicy document |
//! | `secrets` | `Secret` manifests, and a key looked up in them |
//! | `tokens` | a policy's GitLab token, CA bundle and webhook secret, from its own namespace |
//! | [`runner`] | file mode: one task per policy, reloaded when the files change |

mod bounds;
mod documents;
mod metadata;
pub mod runner;
mod schema;
mod secrets;
mod tokens;
mod walk;

pub use bounds::{MAX_DOCUMENTS, MAX_FLOW_NESTING, MAX_MANIFEST_BYTES, check_manifest_text};
pub use metadata::{DEFAULT_NAMESPACE, policy_namespace};
pub use secrets::lookup_secret_key;
pub use tokens::{resolve_ca_bundle, resolve_token, resolve_token_with, resolve_webhook_secret};
pub use walk::{manifest_files, read_manifest};

use crate::crd::JobPolicy;
use crate::policy::{CompiledPolicy, PolicyKey, SpecErrors};
use documents::load_text;
use metadata::policy_key;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceLocation {
    pub file: PathBuf,
    /// 1-based, counting documents with content.
    pub document: usize,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)
    }
}

/// A problem with a file or one of its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// The document, when the problem is inside one.
    pub document: Option<usize>,
    /// The field, when known, e.g. `spec.rules[0].retry.limit`.
    pub path: Option<String>,
    pub message: String,
}

impl ManifestError {
    fn in_file(file: &Path, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: file.to_owned(),
            document: None,
            path: None,
            message: message.into(),
        }
    }

    fn in_document(
        at: &SourceLocation,
        path: Option<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        ManifestError {
            file: at.file.clone(),
            document: Some(at.document),
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(doc) = self.document {
            write!(f, ": document {doc}")?;
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// A `JobPolicy` read from a file, with the result of compiling it.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub source: SourceLocation,
    /// The manifest; `metadata.namespace` is filled in (`default` when absent).
    pub policy: JobPolicy,
    pub compiled: Result<CompiledPolicy, SpecErrors>,
}

impl LoadedPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> PolicyKey {
        policy_key(&self.policy)
    }
}

/// A `Secret` read from a file. Its values never appear in `Debug` output.
#[derive(Clone)]
pub struct LoadedSecret {
    pub source: SourceLocation,
    pub namespace: String,
    pub name: String,
    data: BTreeMap<String, SecretString>,
}

impl LoadedSecret {
    /// The value of `key` (`stringData` wins over `data`, as in Kubernetes).
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.data.get(key)
    }

    /// The keys it holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }
}

impl fmt::Debug for LoadedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedSecret")
            .field("source", &self.source)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Everything read from the given paths.
#[derive(Debug, Default)]
pub struct LoadedManifests {
    pub policies: Vec<LoadedPolicy>,
    pub secrets: Vec<LoadedSecret>,
    /// Files and documents that could not be read as manifests.
    pub errors: Vec<ManifestError>,
}

impl LoadedManifests {
    /// Every problem: unreadable files and documents, then each field error of each policy
    /// that does not compile.
    pub fn problems(&self) -> Vec<ManifestError> {
        let mut out = self.errors.clone();
        for p in &self.policies {
            if let Err(spec_errors) = &p.compiled {
                out.extend(spec_errors.errors.iter().map(|e| {
                    ManifestError::in_document(&p.source, Some(e.path.clone()), &e.message)
                }));
            }
        }
        out
    }
}

/// Reads every manifest under `paths` (files or directories). Never fails as a whole: what
/// cannot be read is in [`LoadedManifests::errors`].
pub fn load_manifests(paths: &[PathBuf]) -> LoadedManifests {
    let mut loaded = LoadedManifests::default();
    let mut first_seen: HashMap<PolicyKey, SourceLocation> = HashMap::new();
    for file in manifest_files(paths, &mut loaded.errors) {
        match read_manifest(&file) {
            Ok(text) => load_text(&file, &text, &mut loaded, &mut first_seen),
            Err(problem) => loaded.errors.push(ManifestError::in_file(&file, problem)),
        }
    }
    loaded
}

/// Reads the manifests of one file's `text` as [`load_manifests`] does once it has read the
/// file: the same bounds ([`check_manifest_text`], [`MAX_DOCUMENTS`]), then each document
/// parsed, checked against the schema and compiled. `file` only names the text in errors.
pub fn load_manifest_text(file: &Path, text: &str) -> LoadedManifests {
    let mut loaded = LoadedManifests::default();
    match check_manifest_text(text) {
        Ok(()) => load_text(file, text, &mut loaded, &mut HashMap::new()),
        Err(problem) => loaded.errors.push(ManifestError::in_file(file, problem)),
    }
    loaded
}

#[cfg(test)]
mod test_manifests;
#[cfg(test)]
mod tests;
