use super::*;
use crate::source::files::load_manifests;
use crate::source::files::test_manifests::{SECRET, policy_doc, write};
use tempfile::TempDir;

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
fn a_webhook_secret_has_no_environment_fallback() {
    let (mut policy, secrets) = loaded_with(SECRET);
    policy.spec.gitlab.webhook_secret_ref = Some(SecretKeyRef {
        name: "hooks".into(),
        key: "token".into(),
    });
    let err = resolve_webhook_secret(&policy, &secrets).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Secret ci/hooks (key \"token\") among the manifests"
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

/// A Secret `gitlab-ca` of `namespace` holding `value` under `ca.crt`.
fn ca_secret(namespace: &str, value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: gitlab-ca, namespace: {namespace}}}\n\
         stringData: {{ca.crt: {quoted}}}\n"
    )
}

#[test]
fn a_ca_bundle_comes_only_from_the_policy_s_namespace_and_its_problems_name_the_field() {
    let pem = crate::sim::TestPki::new().ca_pem;
    let (mut policy, secrets) =
        loaded_with(&format!("{SECRET}---\n{}", ca_secret("elsewhere", &pem)));
    assert!(
        resolve_ca_bundle(&policy, &secrets).unwrap().is_none(),
        "none named"
    );
    policy.spec.gitlab.ca_bundle_secret_ref = Some(SecretKeyRef {
        name: "gitlab-ca".into(),
        key: "ca.crt".into(),
    });
    let err = resolve_ca_bundle(&policy, &secrets).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.gitlab.caBundleSecretRef: no Secret ci/gitlab-ca (key \"ca.crt\") among the manifests"
    );

    let (_, secrets) = loaded_with(&format!("{SECRET}---\n{}", ca_secret("ci", &pem)));
    let bundle = resolve_ca_bundle(&policy, &secrets)
        .unwrap()
        .expect("a bundle");
    assert_eq!(bundle.certificate_count(), 1);

    let (_, secrets) = loaded_with(&format!("{SECRET}---\n{}", ca_secret("ci", "demo-token")));
    let err = resolve_ca_bundle(&policy, &secrets).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.gitlab.caBundleSecretRef: key \"ca.crt\" of Secret ci/gitlab-ca: holds no \
         certificate (a PEM bundle of `-----BEGIN CERTIFICATE-----` blocks)"
    );
    assert!(!format!("{err:?}").contains("demo-token"));
}
