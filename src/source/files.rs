//! Policies from files: `JobPolicy` and `Secret` manifests in YAML files or directories, for
//! running without a cluster (`jobwarden run --policies DIR`, `jobwarden check`).
//!
//! - A directory contributes its `*.yaml` and `*.yml` files (not recursively, like
//!   `kubectl apply -f DIR`; hidden files are skipped), in name order. A file named explicitly is
//!   read whatever its extension.
//! - A file holds any number of documents separated by `---` lines. Documents are numbered from
//!   1, counting only documents with content. Each document is parsed on its own, so one bad
//!   document never stops the others from loading.
//! - `jobwarden.dev/v1alpha1` `JobPolicy` documents are policies (namespace `default` when
//!   absent); `v1` `Secret` documents provide tokens; other kinds are ignored.
//! - Fields the CRD schema does not know are errors (the apiserver would drop them silently,
//!   and a misspelt condition such as `olderthan` would widen a rule to every job).

use crate::crd::{self, JobPolicy, SecretKeyRef};
use crate::policy::{CompiledPolicy, FieldError, PolicyKey, SpecErrors, compile};
use crate::source::secret::{EnvFallback, SecretError};
use base64::Engine as _;
use kube::CustomResourceExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The namespace of a manifest that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

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

/// Splits a file's text into documents and loads each one.
fn load_text(
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

/// The largest manifest file read (a JobPolicy with 10,000 project paths is about 0.5 MB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most YAML documents read from one file.
pub const MAX_DOCUMENTS: usize = 100;
/// The deepest nesting of flow collections (`[…]`, `{…}`) accepted: deeper ones take the YAML
/// parser quadratic time, and no JobPolicy needs more than a few levels.
pub const MAX_FLOW_NESTING: usize = 32;

/// Reads a manifest file, within bounds: a regular file (a FIFO or a device is never opened),
/// at most [`MAX_MANIFEST_BYTES`], UTF-8, flow collections nested at most
/// [`MAX_FLOW_NESTING`] deep. The error says which bound.
pub fn read_manifest(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(file).map_err(|err| format!("cannot read: {err}"))?;
    if !meta.is_file() {
        return Err("not a regular file: not read".to_owned());
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes: manifest files are read up to {MAX_MANIFEST_BYTES} bytes (1 MiB)",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "grew past {MAX_MANIFEST_BYTES} bytes (1 MiB) while read"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    check_manifest_text(&text)?;
    Ok(text)
}

/// The bounds on a manifest's text that keep the YAML parser's work small: at most
/// [`MAX_MANIFEST_BYTES`], flow collections nested at most [`MAX_FLOW_NESTING`] deep.
pub fn check_manifest_text(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes: manifest files are read up to {MAX_MANIFEST_BYTES} bytes (1 MiB)",
            text.len()
        ));
    }
    let depth = flow_nesting(text);
    if depth > MAX_FLOW_NESTING {
        return Err(format!(
            "flow collections nested {depth} deep: at most {MAX_FLOW_NESTING} are read"
        ));
    }
    Ok(())
}

/// The deepest nesting of `[`/`{` outside quoted scalars and comments (a close estimate: it
/// only has to bound the parser's work).
fn flow_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for line in text.lines() {
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// The files to read: explicit files as given, directories' `*.yaml`/`*.yml` in name order.
pub fn manifest_files(paths: &[PathBuf], errors: &mut Vec<ManifestError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                errors.push(ManifestError::in_file(path, format!("cannot read: {err}")));
                continue;
            }
        };
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(ManifestError::in_file(
                    path,
                    format!("cannot list directory: {err}"),
                ));
                continue;
            }
        };
        let mut in_dir: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_manifest_file(p))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files
}

/// A visible `*.yaml`/`*.yml` that is a regular file (symlinks followed, as in a mounted
/// ConfigMap; a FIFO, a device or a directory is not).
fn is_manifest_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    is_yaml && !name.starts_with('.') && path.is_file()
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

/// The compiler's verdict with the schema's violations added: a field the compiler already
/// faulted keeps the compiler's (more specific) message.
fn with_violations(
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

// Object names are DNS subdomains (the CRD's Secret name pattern), namespaces DNS labels (its
// rule name pattern).
use crate::policy::compile::{RULE_NAME as DNS_LABEL, SECRET_NAME as DNS_SUBDOMAIN};

fn check_object_name(
    at: &SourceLocation,
    path: &str,
    name: Option<&str>,
    errors: &mut Vec<ManifestError>,
) {
    match name {
        None | Some("") => errors.push(ManifestError::in_document(
            at,
            Some(path.to_owned()),
            "required",
        )),
        Some(n) if n.len() > 253 || !DNS_SUBDOMAIN.is_match(n) => {
            errors.push(ManifestError::in_document(
                at,
                Some(path.to_owned()),
                format!("{n:?} is not a valid name (lowercase letters, digits, '-' and '.')"),
            ))
        }
        Some(_) => {}
    }
}

fn check_namespace(at: &SourceLocation, namespace: &str, errors: &mut Vec<ManifestError>) {
    if namespace.len() > 63 || !DNS_LABEL.is_match(namespace) {
        errors.push(ManifestError::in_document(
            at,
            Some("metadata.namespace".into()),
            format!("{namespace:?} is not a valid namespace (lowercase letters, digits and '-')"),
        ));
    }
}

/// Where a manifest breaks the CRD's own schema, as the apiserver would tell at admission
/// (and more: it would drop unknown fields silently): fields the schema does not define, and
/// every bound the schema states on a value (`minItems`/`maxItems`, `minLength`/`maxLength`,
/// `pattern`, `enum`, `minimum`/`maximum`). The checks are read from the generated schema, so
/// the offline checks and the CRD cannot drift apart. The CEL rules are checked by `compile`.
fn schema_violations(value: &Value) -> Vec<(String, String)> {
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

fn load_secret(
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

fn policy_key(policy: &JobPolicy) -> PolicyKey {
    PolicyKey::new(
        policy
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE),
        policy.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The namespace of a policy manifest (`default` when absent).
pub fn policy_namespace(policy: &JobPolicy) -> &str {
    policy
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE)
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

/// The GitLab token of a policy: the key of its `tokenSecretRef` Secret in the policy's OWN
/// namespace, or, only when no such Secret manifest was loaded, the environment variable
/// `env_var_name` (`--token-env`, default `GITLAB_TOKEN`). Surrounding whitespace (the newline
/// of `echo token | base64`) is trimmed.
pub fn resolve_token(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
    env_var_name: &str,
) -> Result<SecretString, SecretError> {
    resolve_token_with(policy, secrets, env_var_name, |name| {
        std::env::var(name).ok()
    })
}

/// [`resolve_token`] with the environment given as a lookup function.
pub fn resolve_token_with(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
    env_var_name: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SecretString, SecretError> {
    let namespace = policy_namespace(policy);
    let secret_ref = &policy.spec.gitlab.token_secret_ref;
    if let Some(value) = lookup_secret_key(secrets, namespace, secret_ref)? {
        return Ok(SecretString::from(value.expose_secret().trim().to_owned()));
    }
    match env(env_var_name).map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => {
            let mut other_namespaces: Vec<String> = secrets
                .iter()
                .filter(|s| s.name == secret_ref.name && s.namespace != namespace)
                .map(|s| s.namespace.clone())
                .collect();
            other_namespaces.sort();
            other_namespaces.dedup();
            Err(SecretError::NotAmongManifests {
                namespace: namespace.to_owned(),
                name: secret_ref.name.clone(),
                key: secret_ref.key.clone(),
                env_fallback: Some(EnvFallback {
                    env_var: env_var_name.to_owned(),
                    other_namespaces,
                }),
            })
        }
    }
}

/// The PEM CA bundle of a policy's `caBundleSecretRef`, if it has one. Unlike the token there
/// is no environment fallback: a referenced bundle must exist in the policy's namespace.
pub fn resolve_ca_bundle(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
) -> Result<Option<SecretString>, SecretError> {
    resolve_secret_ref(
        policy,
        secrets,
        policy.spec.gitlab.ca_bundle_secret_ref.as_ref(),
    )
}

/// The webhook secret of a policy's `webhookSecretRef`, if it has one; like the CA bundle, it
/// must exist in the policy's namespace.
pub fn resolve_webhook_secret(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
) -> Result<Option<SecretString>, SecretError> {
    resolve_secret_ref(
        policy,
        secrets,
        policy.spec.gitlab.webhook_secret_ref.as_ref(),
    )
    .map(|secret| secret.map(|s| SecretString::from(s.expose_secret().trim().to_owned())))
}

/// The value a Secret manifest of the policy's namespace holds under `secret_ref`.
fn resolve_secret_ref(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
    secret_ref: Option<&SecretKeyRef>,
) -> Result<Option<SecretString>, SecretError> {
    let Some(secret_ref) = secret_ref else {
        return Ok(None);
    };
    let namespace = policy_namespace(policy);
    match lookup_secret_key(secrets, namespace, secret_ref)? {
        Some(value) => Ok(Some(value.clone())),
        None => Err(SecretError::NotAmongManifests {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
            env_fallback: None,
        }),
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
