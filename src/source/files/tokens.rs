//! What a policy takes from the Secrets loaded with it, only ever from its own namespace: its
//! GitLab token (the environment as fallback), its CA bundle and its webhook secret.

use super::LoadedSecret;
use super::metadata::policy_namespace;
use super::secrets::lookup_secret_key;
use crate::crd::{JobPolicy, SecretKeyRef};
use crate::gitlab::CaBundle;
use crate::source::secret::{CaBundleRefError, EnvFallback, SecretError, parse_ca_bundle};
use secrecy::{ExposeSecret, SecretString};

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

/// The webhook secret of a policy's `webhookSecretRef`, if it has one. Unlike the token there
/// is no environment fallback: a referenced secret must exist in the policy's namespace.
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

/// The CA certificates of a policy's `caBundleSecretRef`, if it names one: the PEM bundle under
/// that key of the Secret manifest in the policy's own namespace (no environment fallback).
/// Errors name the field.
pub fn resolve_ca_bundle(
    policy: &JobPolicy,
    secrets: &[LoadedSecret],
) -> Result<Option<CaBundle>, CaBundleRefError> {
    let Some(secret_ref) = &policy.spec.gitlab.ca_bundle_secret_ref else {
        return Ok(None);
    };
    let namespace = policy_namespace(policy);
    let pem =
        required_secret_key(namespace, secrets, secret_ref).map_err(CaBundleRefError::Secret)?;
    parse_ca_bundle(pem.expose_secret().as_bytes(), namespace, secret_ref).map(Some)
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
    required_secret_key(policy_namespace(policy), secrets, secret_ref).map(Some)
}

/// The value of `secret_ref` among the Secret manifests of `namespace`, which must be there.
fn required_secret_key(
    namespace: &str,
    secrets: &[LoadedSecret],
    secret_ref: &SecretKeyRef,
) -> Result<SecretString, SecretError> {
    match lookup_secret_key(secrets, namespace, secret_ref)? {
        Some(value) => Ok(value.clone()),
        None => Err(SecretError::NotAmongManifests {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
            env_fallback: None,
        }),
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
