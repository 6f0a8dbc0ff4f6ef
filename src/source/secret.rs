//! Why a policy's reference to a key of a Secret (`tokenSecretRef`, `webhookSecretRef`,
//! `caBundleSecretRef`) could not be resolved: one error for both policy sources, the cluster
//! ([`kube::secrets`](crate::source::kube::secrets), Secrets read from the apiserver) and files
//! ([`files`](crate::source::files), Secret manifests loaded with the policies).
//!
//! Every message names the namespace, the Secret and (where it matters) the key, never a value.

use crate::crd::SecretKeyRef;
use crate::gitlab::{CaBundle, CaBundleError};

/// Why a Secret reference could not be resolved. Names the Secret and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Cluster mode: the apiserver has no Secret of that name in the policy's namespace.
    #[error(
        "Secret {namespace}/{name} not found (a JobPolicy can only use Secrets in its own namespace)"
    )]
    NotFound { namespace: String, name: String },
    /// File mode: no Secret manifest of that name in the policy's namespace was loaded (and, for
    /// the GitLab token, the environment variable that stands in for it is not set either).
    #[error(
        "no Secret {namespace}/{name} (key {key:?}) among the manifests{}",
        env_fallback_hint(env_fallback.as_ref())
    )]
    NotAmongManifests {
        namespace: String,
        name: String,
        key: String,
        /// Set when the reference is the GitLab token, the only one with an environment
        /// fallback (`--token-env`).
        env_fallback: Option<EnvFallback>,
    },
    /// The Secret exists but has no such key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    KeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },
    /// The key's value is empty (or only whitespace).
    #[error("key {key:?} of Secret {namespace}/{name} is empty")]
    EmptyValue {
        namespace: String,
        name: String,
        key: String,
    },
    /// The key's value is not UTF-8 text (cluster mode: `data` is bytes).
    #[error("key {key:?} of Secret {namespace}/{name} is not UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
    },
    /// Cluster mode: the apiserver could not be asked.
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Unreadable {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why a policy's `spec.gitlab.caBundleSecretRef` gives no CA certificates to trust: the
/// policy does not run. Every message starts with the field, then names the Secret and key,
/// never a value.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleRefError {
    /// The Secret or its key cannot be read (as for the token).
    #[error("spec.gitlab.caBundleSecretRef: {0}")]
    Secret(#[source] SecretError),
    /// The key's value is not a PEM bundle of CA certificates.
    #[error("spec.gitlab.caBundleSecretRef: key {key:?} of Secret {namespace}/{name}: {source}")]
    Certificates {
        namespace: String,
        name: String,
        key: String,
        #[source]
        source: CaBundleError,
    },
}

impl CaBundleRefError {
    /// A stable, low-cardinality name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CaBundleRefError::Secret(err) => err.kind(),
            CaBundleRefError::Certificates { .. } => "ca_bundle_invalid",
        }
    }
}

/// The CA certificates of `pem`, the value of `secret_ref` (a policy's `caBundleSecretRef`)
/// in `namespace`.
pub fn parse_ca_bundle(
    pem: &[u8],
    namespace: &str,
    secret_ref: &SecretKeyRef,
) -> Result<CaBundle, CaBundleRefError> {
    CaBundle::from_pem(pem).map_err(|source| CaBundleRefError::Certificates {
        namespace: namespace.to_owned(),
        name: secret_ref.name.clone(),
        key: secret_ref.key.clone(),
        source,
    })
}

/// The environment fallback of a file-mode token that was not found either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFallback {
    /// The variable looked at (`--token-env`, default `GITLAB_TOKEN`).
    pub env_var: String,
    /// Namespaces that do have a Secret of that name (which the policy may not use).
    pub other_namespaces: Vec<String>,
}

impl SecretError {
    /// A stable, low-cardinality name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretError::NotFound { .. } | SecretError::NotAmongManifests { .. } => {
                "secret_not_found"
            }
            SecretError::KeyNotFound { .. }
            | SecretError::EmptyValue { .. }
            | SecretError::NotText { .. } => "secret_key_not_found",
            SecretError::Unreadable { .. } => "secret_unreadable",
        }
    }
}

fn env_fallback_hint(fallback: Option<&EnvFallback>) -> String {
    let Some(fallback) = fallback else {
        return String::new();
    };
    let mut hint = format!(
        ", and the environment variable {} is not set",
        fallback.env_var
    );
    if !fallback.other_namespaces.is_empty() {
        hint.push_str(&format!(
            " (a Secret of that name exists in namespace {}, but a policy may only use Secrets in its own namespace)",
            fallback.other_namespaces.join(", ")
        ));
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_among_manifests(env_fallback: Option<EnvFallback>) -> String {
        SecretError::NotAmongManifests {
            namespace: "ci".into(),
            name: "gitlab".into(),
            key: "token".into(),
            env_fallback,
        }
        .to_string()
    }

    #[test]
    fn a_missing_manifest_names_the_fallback_only_when_there_is_one() {
        assert_eq!(
            not_among_manifests(None),
            "no Secret ci/gitlab (key \"token\") among the manifests"
        );
        assert_eq!(
            not_among_manifests(Some(EnvFallback {
                env_var: "GITLAB_TOKEN".into(),
                other_namespaces: Vec::new(),
            })),
            "no Secret ci/gitlab (key \"token\") among the manifests, and the environment \
             variable GITLAB_TOKEN is not set"
        );
        assert!(
            not_among_manifests(Some(EnvFallback {
                env_var: "T".into(),
                other_namespaces: vec!["a".into(), "b".into()],
            }))
            .ends_with("is not set (a Secret of that name exists in namespace a, b, but a policy may only use Secrets in its own namespace)")
        );
    }

    #[test]
    fn both_sources_count_a_missing_secret_alike() {
        let cluster = SecretError::NotFound {
            namespace: "ci".into(),
            name: "gitlab".into(),
        };
        let files = SecretError::NotAmongManifests {
            namespace: "ci".into(),
            name: "gitlab".into(),
            key: "token".into(),
            env_fallback: None,
        };
        assert_eq!(cluster.kind(), "secret_not_found");
        assert_eq!(files.kind(), cluster.kind());
    }
}
