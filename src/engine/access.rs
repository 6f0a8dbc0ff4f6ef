//! What a policy's runs take from its Secrets: the token sent to GitLab and the CA certificates
//! GitLab's certificate is checked against.

use crate::gitlab::CaBundle;
use secrecy::SecretString;
use std::fmt;

/// How a policy reaches its GitLab instance: its token (`spec.gitlab.tokenSecretRef`) and,
/// when it names one, its CA bundle (`spec.gitlab.caBundleSecretRef`), trusted on top of the
/// system roots and the controller's `--ca-bundle`. A change of either gives the policy a new
/// client.
#[derive(Clone)]
pub struct GitLabAccess {
    /// The token, sent in every request's header.
    pub token: SecretString,
    /// The policy's own CA certificates, if any.
    pub ca_bundle: Option<CaBundle>,
}

impl GitLabAccess {
    /// Access with this token and no CA bundle of the policy's own.
    pub fn new(token: SecretString) -> GitLabAccess {
        GitLabAccess {
            token,
            ca_bundle: None,
        }
    }

    /// The same access, also trusting `ca_bundle` (none: the system roots and `--ca-bundle`
    /// only).
    #[must_use]
    pub fn with_ca_bundle(self, ca_bundle: Option<CaBundle>) -> GitLabAccess {
        GitLabAccess { ca_bundle, ..self }
    }
}

impl From<SecretString> for GitLabAccess {
    fn from(token: SecretString) -> Self {
        GitLabAccess::new(token)
    }
}

impl fmt::Debug for GitLabAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLabAccess")
            .field("token", &"<redacted>")
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}
