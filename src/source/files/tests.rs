use super::test_manifests::{SECRET, messages, policy_doc, write};
use super::*;
use tempfile::TempDir;

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
