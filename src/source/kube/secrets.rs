//! Reading a policy's GitLab token from the Secret its `spec.gitlab.tokenSecretRef` names, and
//! its CA certificates from the one `spec.gitlab.caBundleSecretRef` names — in the policy's OWN
//! namespace, never another: a policy must not be able to borrow the token of a team it does
//! not belong to, nor make another team's policies trust its CA. The namespace is the
//! policy's, not a parameter a caller could get wrong: [`read_token`] and [`read_access`] take
//! the policy's namespace and build the namespaced `Api` themselves.
//!
//! Only `get` is used (no list, no watch), matching the RBAC in `deploy/core/rbac.yaml`.
//! Errors name the Secret and the key, never a value.

use crate::crd::SecretKeyRef;
use crate::engine::GitLabAccess;
use crate::gitlab::CaBundle;
use crate::source::secret::parse_ca_bundle;
pub use crate::source::secret::{CaBundleRefError, SecretError};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};

/// Why a policy's Secrets give it no access to GitLab.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The token (`spec.gitlab.tokenSecretRef`) cannot be read.
    #[error(transparent)]
    Token(#[from] SecretError),
    /// The CA bundle (`spec.gitlab.caBundleSecretRef`) cannot be read or holds no certificate.
    #[error(transparent)]
    CaBundle(#[from] CaBundleRefError),
}

impl AccessError {
    /// A stable, low-cardinality name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AccessError::Token(err) => err.kind(),
            AccessError::CaBundle(err) => err.kind(),
        }
    }
}

/// What a policy in `policy_namespace` reaches GitLab with: the token of `token_ref` and, when
/// it names one, the CA bundle of `ca_bundle_ref`, both read from Secrets of that namespace.
pub async fn read_access(
    client: &Client,
    policy_namespace: &str,
    token_ref: &SecretKeyRef,
    ca_bundle_ref: Option<&SecretKeyRef>,
) -> Result<GitLabAccess, AccessError> {
    let token = read_token(client, policy_namespace, token_ref).await?;
    let ca_bundle = match ca_bundle_ref {
        Some(secret_ref) => Some(read_ca_bundle(client, policy_namespace, secret_ref).await?),
        None => None,
    };
    Ok(GitLabAccess::new(token).with_ca_bundle(ca_bundle))
}

/// The CA certificates (a PEM bundle) under `secret_ref.key` of the Secret `secret_ref.name` in
/// `policy_namespace`: a policy's `caBundleSecretRef`. Errors name that field.
pub async fn read_ca_bundle(
    client: &Client,
    policy_namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<CaBundle, CaBundleRefError> {
    // Read as a token is (the same checks: found, has the key, text, not blank), then parsed.
    let pem = read_token(client, policy_namespace, secret_ref)
        .await
        .map_err(CaBundleRefError::Secret)?;
    parse_ca_bundle(pem.expose_secret().as_bytes(), policy_namespace, secret_ref)
}

/// The token under `secret_ref.key` of the Secret `secret_ref.name` in `policy_namespace`,
/// with surrounding whitespace (the newline of `echo token | base64`) trimmed.
pub async fn read_token(
    client: &Client,
    policy_namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<SecretString, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), policy_namespace);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|source| SecretError::Unreadable {
            namespace: policy_namespace.to_owned(),
            name: secret_ref.name.clone(),
            source,
        })?
        .ok_or_else(|| SecretError::NotFound {
            namespace: policy_namespace.to_owned(),
            name: secret_ref.name.clone(),
        })?;
    token_from_secret(&secret, policy_namespace, secret_ref)
}

/// The token under `secret_ref.key` of a Secret already read.
pub fn token_from_secret(
    secret: &Secret,
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<SecretString, SecretError> {
    let key_error = |make: fn(String, String, String) -> SecretError| {
        make(
            namespace.to_owned(),
            secret_ref.name.clone(),
            secret_ref.key.clone(),
        )
    };
    // `stringData` is write-only on a real apiserver (folded into `data`); a Secret built by
    // hand may still carry it, and it means the same.
    let raw: Vec<u8> = match (
        secret.data.as_ref().and_then(|d| d.get(&secret_ref.key)),
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&secret_ref.key)),
    ) {
        (Some(bytes), _) => bytes.0.clone(),
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => {
            return Err(key_error(|namespace, name, key| SecretError::KeyNotFound {
                namespace,
                name,
                key,
            }));
        }
    };
    let text = String::from_utf8(raw).map_err(|_| {
        key_error(|namespace, name, key| SecretError::NotText {
            namespace,
            name,
            key,
        })
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(key_error(|namespace, name, key| SecretError::EmptyValue {
            namespace,
            name,
            key,
        }));
    }
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn reference() -> SecretKeyRef {
        SecretKeyRef {
            name: "gitlab".into(),
            key: "token".into(),
        }
    }

    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(value.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn the_value_is_trimmed() {
        let token = token_from_secret(&secret("token", b"glpat-abc\n"), "ci", &reference())
            .expect("a token");
        assert_eq!(token.expose_secret(), "glpat-abc");
    }

    #[test]
    fn string_data_counts_when_data_lacks_the_key() {
        let secret = Secret {
            string_data: Some(BTreeMap::from([("token".to_owned(), "glpat-x".to_owned())])),
            ..Secret::default()
        };
        let token = token_from_secret(&secret, "ci", &reference()).expect("a token");
        assert_eq!(token.expose_secret(), "glpat-x");
    }

    #[test]
    fn a_missing_key_names_the_secret_and_key() {
        let err = token_from_secret(&secret("other", b"glpat-secret-value"), "ci", &reference())
            .expect_err("no such key");
        assert!(matches!(err, SecretError::KeyNotFound { .. }));
        let text = err.to_string();
        assert_eq!(text, "Secret ci/gitlab has no key \"token\"");
        assert_eq!(err.kind(), "secret_key_not_found");
    }

    #[test]
    fn empty_and_binary_values_are_refused_without_showing_them() {
        let empty =
            token_from_secret(&secret("token", b" \n"), "ci", &reference()).expect_err("empty");
        assert!(matches!(empty, SecretError::EmptyValue { .. }));
        let binary = token_from_secret(&secret("token", b"glpat-HIDDEN\xff"), "ci", &reference())
            .expect_err("not UTF-8");
        assert!(matches!(binary, SecretError::NotText { .. }));
        assert!(!format!("{binary} {binary:?}").contains("HIDDEN"));
    }
}
