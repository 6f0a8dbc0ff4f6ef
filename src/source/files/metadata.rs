//! Manifests' `metadata`: the namespace of a manifest that names none, what makes an object
//! name and a namespace valid, and a policy's `namespace/name` key.

use super::{ManifestError, SourceLocation};
use crate::crd::JobPolicy;
use crate::policy::PolicyKey;
// Object names are DNS subdomains (the CRD's Secret name pattern), namespaces DNS labels (its
// rule name pattern).
use crate::policy::compile::{RULE_NAME as DNS_LABEL, SECRET_NAME as DNS_SUBDOMAIN};

/// The namespace of a manifest that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A policy's `namespace/name` (namespace `default` when absent).
pub(super) fn policy_key(policy: &JobPolicy) -> PolicyKey {
    PolicyKey::new(
        policy_namespace(policy),
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

pub(super) fn check_object_name(
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
            ));
        }
        Some(_) => {}
    }
}

pub(super) fn check_namespace(
    at: &SourceLocation,
    namespace: &str,
    errors: &mut Vec<ManifestError>,
) {
    if namespace.len() > 63 || !DNS_LABEL.is_match(namespace) {
        errors.push(ManifestError::in_document(
            at,
            Some("metadata.namespace".into()),
            format!("{namespace:?} is not a valid namespace (lowercase letters, digits and '-')"),
        ));
    }
}
