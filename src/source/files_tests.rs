use super::*;
use std::fs;
use tempfile::TempDir;

const POLICY: &str = "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata:
  name: NAME
  namespace: ci
spec:
  gitlab:
    url: http://127.0.0.1:8080
    tokenSecretRef: {name: gitlab, key: token}
  projects: ['1']
  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 30m}
      cancel: {}
";

fn policy_doc(name: &str) -> String {
    POLICY.replace("NAME", name)
}

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata: {name: gitlab, namespace: ci}
stringData:
  token: demo-token
";

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path
}

fn messages(loaded: &LoadedManifests) -> Vec<String> {
    loaded.problems().iter().map(ToString::to_string).collect()
}

#[test]
fn loads_policies_and_secrets_and_ignores_other_kinds() {
    let dir = TempDir::new().unwrap();
    let text = format!(
        "# leading comment\n---\n{}---\n{SECRET}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}",
        policy_doc("a"),
        policy_doc("b").replace("  namespace: ci\n", "")
    );
    let file = write(&dir, "all.yaml", &text);
    let loaded = load_manifests(std::slice::from_ref(&file));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let keys: Vec<String> = loaded
        .policies
        .iter()
        .map(|p| p.key().to_string())
        .collect();
    assert_eq!(keys, vec!["ci/a", "default/b"]);
    assert_eq!(
        loaded.policies[1].policy.metadata.namespace.as_deref(),
        Some("default")
    );
    assert_eq!(
        loaded.policies[1].source,
        SourceLocation {
            file: file.clone(),
            document: 4
        }
    );
    assert!(loaded.policies.iter().all(|p| p.compiled.is_ok()));
    assert_eq!(loaded.secrets.len(), 1);
    assert_eq!(
        (
            loaded.secrets[0].namespace.as_str(),
            loaded.secrets[0].name.as_str()
        ),
        ("ci", "gitlab")
    );
    assert_eq!(loaded.secrets[0].source.document, 2);
}

#[test]
fn a_bad_document_never_stops_the_others() {
    let dir = TempDir::new().unwrap();
    let bad_type = policy_doc("bad").replace("olderThan: 30m", "olderThan: [30m]");
    let bad_yaml = "apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nspec: {rules: [\n";
    let text = format!(
        "{}---\n{bad_type}---\n{bad_yaml}---\n{}",
        policy_doc("one"),
        policy_doc("two")
    );
    let file = write(&dir, "mixed.yaml", &text);
    let loaded = load_manifests(&[file]);
    let keys: Vec<String> = loaded
        .policies
        .iter()
        .map(|p| p.key().to_string())
        .collect();
    assert_eq!(keys, vec!["ci/one", "ci/two"]);
    let errs = messages(&loaded);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].ends_with(
            "mixed.yaml: document 2: spec.rules[0].match.olderThan: invalid type: sequence, expected a string"
        ),
        "{}",
        errs[0]
    );
    assert_eq!(loaded.errors[1].document, Some(3));
    assert!(
        errs[1].contains("document 3: invalid YAML at line 34"),
        "{}",
        errs[1]
    );
}

#[test]
fn field_errors_name_file_document_and_field() {
    let dir = TempDir::new().unwrap();
    let bad = policy_doc("bad").replace("cancel: {}", "retry: {limit: 25}");
    let file = write(
        &dir,
        "bad.yaml",
        &format!("{}---\n{bad}", policy_doc("good")),
    );
    let loaded = load_manifests(std::slice::from_ref(&file));
    assert_eq!(loaded.policies.len(), 2);
    assert!(
        loaded.policies[1].compiled.is_err(),
        "the second does not run"
    );
    assert_eq!(
        messages(&loaded),
        vec![format!(
            "{}: document 2: spec.rules[0].retry.limit: must be between 1 and 20",
            file.display()
        )]
    );
}

#[test]
fn unknown_fields_are_errors() {
    let dir = TempDir::new().unwrap();
    let typo = policy_doc("typo").replace("olderThan: 30m", "olderthan: 30m");
    let file = write(&dir, "typo.yaml", &typo);
    let loaded = load_manifests(&[file]);
    assert!(
        loaded.policies.iter().all(|p| p.compiled.is_err()),
        "a misspelt condition would widen the rule: the policy must not run"
    );
    let problems = loaded.problems();
    let e = &problems[0];
    assert_eq!(e.path.as_deref(), Some("spec.rules[0].match.olderthan"));
    assert_eq!(e.message, "unknown field (not in the JobPolicy schema)");
}

#[test]
fn duplicate_and_misversioned_policies_are_errors() {
    let dir = TempDir::new().unwrap();
    let v2 = policy_doc("c").replace("v1alpha1", "v1beta1");
    let nameless = policy_doc("d").replace("  name: d\n", "");
    write(&dir, "a.yaml", &policy_doc("a"));
    write(
        &dir,
        "b.yml",
        &format!("{}---\n{v2}---\n{nameless}", policy_doc("a")),
    );
    let loaded = load_manifests(&[dir.path().to_owned()]);
    assert_eq!(loaded.policies.len(), 1);
    let errs = messages(&loaded);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains(
            "b.yml: document 1: metadata.name: duplicate JobPolicy ci/a (first defined in "
        )
    );
    assert!(errs[0].ends_with("a.yaml: document 1)"), "{}", errs[0]);
    assert!(errs[1].ends_with(
        "b.yml: document 2: apiVersion: unsupported apiVersion \"jobwarden.dev/v1beta1\" for JobPolicy (expected jobwarden.dev/v1alpha1)"
    ));
    assert!(
        errs[2].ends_with("b.yml: document 3: metadata.name: required"),
        "{}",
        errs[2]
    );
}

#[test]
fn directories_give_their_yaml_files_in_order() {
    let dir = TempDir::new().unwrap();
    write(&dir, "b.yaml", &policy_doc("b"));
    write(&dir, "a.yml", &policy_doc("a"));
    write(&dir, ".hidden.yaml", &policy_doc("hidden"));
    write(&dir, "notes.txt", "not yaml: [");
    fs::create_dir(dir.path().join("nested")).unwrap();
    write(&dir, "nested/c.yaml", &policy_doc("c"));
    let explicit = write(&dir, "policy.conf", &policy_doc("explicit"));
    let missing = dir.path().join("missing.yaml");
    let loaded = load_manifests(&[dir.path().to_owned(), explicit, missing.clone()]);
    let keys: Vec<String> = loaded
        .policies
        .iter()
        .map(|p| p.key().to_string())
        .collect();
    assert_eq!(keys, vec!["ci/a", "ci/b", "ci/explicit"]);
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].file, missing);
    assert_eq!(loaded.errors[0].document, None);
    assert!(
        loaded.errors[0]
            .to_string()
            .contains("missing.yaml: cannot read: ")
    );
}

#[test]
fn not_a_manifest() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "x.yaml", "- a list\n---\nname: no kind\n");
    let errs = messages(&load_manifests(&[file]));
    assert_eq!(errs.len(), 2);
    assert!(errs[0].ends_with(
        "document 1: not a Kubernetes manifest: expected a mapping with apiVersion and kind"
    ));
    assert!(
        errs[1]
            .ends_with("document 2: not a Kubernetes manifest: apiVersion and kind are required")
    );
}

#[test]
fn secrets_from_data_and_string_data_never_show_values() {
    let dir = TempDir::new().unwrap();
    let text = "apiVersion: v1
kind: Secret
metadata: {name: s, namespace: ci}
data:
  token: ZnJvbS1kYXRhCg==
  other: ZnJvbS1kYXRh
stringData:
  other: from-string-data
---
apiVersion: v1
kind: Secret
metadata: {name: broken}
data:
  token: '%%%not-base64-secret-value%%%'
";
    let file = write(&dir, "s.yaml", text);
    let loaded = load_manifests(&[file]);
    assert_eq!(loaded.secrets.len(), 1);
    let s = &loaded.secrets[0];
    assert_eq!(s.get("token").unwrap().expose_secret(), "from-data\n");
    assert_eq!(s.get("other").unwrap().expose_secret(), "from-string-data");
    let debug = format!("{s:?}");
    assert!(
        debug.contains("token") && !debug.contains("from-data"),
        "{debug}"
    );
    let errs = messages(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].ends_with("document 2: data.token: not valid base64-encoded UTF-8 text"));
    assert!(!errs[0].contains("not-base64-secret-value"));
}

fn loaded_with(secrets: &str) -> (JobPolicy, Vec<LoadedSecret>) {
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "all.yaml",
        &format!("{}---\n{secrets}", policy_doc("p")),
    );
    let loaded = load_manifests(&[file]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    (loaded.policies[0].policy.clone(), loaded.secrets)
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn token_comes_from_a_secret_in_the_policy_namespace() {
    let (policy, secrets) = loaded_with(SECRET);
    let token = resolve_token_with(&policy, &secrets, "GITLAB_TOKEN", |_| {
        Some("from-env".into())
    })
    .unwrap();
    assert_eq!(
        token.expose_secret(),
        "demo-token",
        "the Secret wins over the environment"
    );
}

#[test]
fn a_policy_never_reads_another_namespace_secret() {
    let (policy, secrets) = loaded_with(&SECRET.replace("namespace: ci", "namespace: other"));
    let err = resolve_token_with(&policy, &secrets, "GITLAB_TOKEN", no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Secret ci/gitlab (key \"token\") among the manifests, and the environment variable GITLAB_TOKEN is not set \
         (a Secret of that name exists in namespace other, but a policy may only use Secrets in its own namespace)"
    );
    assert!(!err.to_string().contains("demo-token"));
    // The environment is the fallback when the policy's own namespace has no such Secret.
    let token = resolve_token_with(&policy, &secrets, "MY_TOKEN", |name| {
        (name == "MY_TOKEN").then(|| " env-token\n".into())
    })
    .unwrap();
    assert_eq!(token.expose_secret(), "env-token");
}

#[test]
fn a_secret_without_the_key_is_an_error_not_a_fallback() {
    let (policy, secrets) = loaded_with(&SECRET.replace("token: demo-token", "other: demo-token"));
    let err =
        resolve_token_with(&policy, &secrets, "GITLAB_TOKEN", |_| Some("env".into())).unwrap_err();
    assert_eq!(err.to_string(), "Secret ci/gitlab has no key \"token\"");
    let (policy, secrets) = loaded_with(&SECRET.replace("token: demo-token", "token: ' '"));
    let err = resolve_token_with(&policy, &secrets, "GITLAB_TOKEN", no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key \"token\" of Secret ci/gitlab is empty"
    );
}

#[test]
fn ca_bundle_has_no_environment_fallback() {
    let (mut policy, secrets) = loaded_with(SECRET);
    assert!(
        resolve_ca_bundle(&policy, &secrets).unwrap().is_none(),
        "no bundle referenced"
    );
    policy.spec.gitlab.ca_bundle_secret_ref = Some(SecretKeyRef {
        name: "ca".into(),
        key: "ca.crt".into(),
    });
    let err = resolve_ca_bundle(&policy, &secrets).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Secret ci/ca (key \"ca.crt\") among the manifests"
    );
}

#[test]
fn manifest_error_display() {
    let e = ManifestError {
        file: PathBuf::from("deploy/examples/bad.yaml"),
        document: Some(2),
        path: Some("spec.rules[0].retry.limit".into()),
        message: "must be between 1 and 20".into(),
    };
    assert_eq!(
        e.to_string(),
        "deploy/examples/bad.yaml: document 2: spec.rules[0].retry.limit: must be between 1 and 20"
    );
}

/// Loads `dir` on another thread; `None` when that takes over 10 s (a hang).
fn load_within_10s(dir: &Path) -> Option<LoadedManifests> {
    let dir = dir.to_owned();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(load_manifests(&[dir]));
    });
    result.recv_timeout(std::time::Duration::from_secs(10)).ok()
}

#[test]
fn odd_files_in_the_directory_neither_hang_nor_exhaust_the_loader() {
    let dir = TempDir::new().unwrap();
    write(&dir, "good.yaml", &policy_doc("good"));
    // A FIFO nobody writes to: opening it would block forever.
    let fifo = dir.path().join("notes.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // An endless device behind a name that looks like a manifest.
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    // Too large, and too deeply nested.
    write(
        &dir,
        "huge.yaml",
        &"# padding\n".repeat((MAX_MANIFEST_BYTES as usize) / 10 + 1),
    );
    let nested = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    write(&dir, "nested.yaml", &nested);

    let loaded = load_within_10s(dir.path()).expect("the loader does not hang");
    assert_eq!(loaded.policies.len(), 1, "the good policy still loads");
    let problems: Vec<String> = loaded.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("huge.yaml") && problems[0].contains("1 MiB"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("nested.yaml") && problems[1].contains("nested 5000 deep"),
        "{problems:#?}"
    );
}

#[test]
fn a_webhook_secret_comes_only_from_the_policys_namespace() {
    let hooks = "apiVersion: v1
kind: Secret
metadata: {name: hooks, namespace: ci}
stringData:
  token: \" team-hook-secret\\n\"
---
apiVersion: v1
kind: Secret
metadata: {name: other-hooks, namespace: elsewhere}
stringData:
  token: not-yours
";
    let (mut policy, secrets) = loaded_with(&format!("{SECRET}---\n{hooks}"));
    assert!(resolve_webhook_secret(&policy, &secrets).unwrap().is_none());
    policy.spec.gitlab.webhook_secret_ref = Some(SecretKeyRef {
        name: "hooks".into(),
        key: "token".into(),
    });
    let secret = resolve_webhook_secret(&policy, &secrets)
        .unwrap()
        .expect("found");
    assert_eq!(secret.expose_secret(), "team-hook-secret", "trimmed");
    policy.spec.gitlab.webhook_secret_ref = Some(SecretKeyRef {
        name: "other-hooks".into(),
        key: "token".into(),
    });
    let err = resolve_webhook_secret(&policy, &secrets).unwrap_err();
    assert!(err.to_string().contains("ci/other-hooks"), "{err}");
}
