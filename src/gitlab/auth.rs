//! Credentials and the header each one is sent in.
//!
//! Tokens are kept in [`secrecy::SecretString`] and only exposed to build the (sensitive) header
//! value. Neither `Debug` nor any error message ever shows them.

use crate::gitlab::error::GitLabError;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// How the client authenticates to GitLab.
#[derive(Clone)]
pub enum Credential {
    /// A personal, project or group access token, sent as `PRIVATE-TOKEN: <token>` (the default
    /// for access tokens).
    PrivateToken(SecretString),
    /// An OAuth token (or an access token), sent as `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// A CI job token (`CI_JOB_TOKEN`), sent as `JOB-TOKEN: <token>`. GitLab accepts it only on
    /// `GET /job`, `GET /job/allowed_agents`, the artifact downloads and (in newer versions) the
    /// project jobs list, and only while the job runs.
    JobToken(SecretString),
}

impl Credential {
    /// A short, secret-free name of the kind of credential, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::PrivateToken(_) => "private_token",
            Credential::Bearer(_) => "bearer",
            Credential::JobToken(_) => "job_token",
        }
    }

    /// The header carrying this credential. The value is marked sensitive so that HTTP tooling
    /// does not log or index it.
    pub(crate) fn header(&self) -> Result<AuthHeader, GitLabError> {
        let (name, value) = match self {
            Credential::PrivateToken(t) => (
                HeaderName::from_static("private-token"),
                t.expose_secret().to_owned(),
            ),
            Credential::Bearer(t) => (AUTHORIZATION, format!("Bearer {}", t.expose_secret())),
            Credential::JobToken(t) => (
                HeaderName::from_static("job-token"),
                t.expose_secret().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            GitLabError::Config(format!(
                "the {} credential contains characters that cannot be sent in an HTTP header",
                self.kind()
            ))
        })?;
        value.set_sensitive(true);
        Ok(AuthHeader { name, value })
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self {
            Credential::PrivateToken(_) => "PrivateToken",
            Credential::Bearer(_) => "Bearer",
            Credential::JobToken(_) => "JobToken",
        };
        write!(f, "Credential::{variant}(<redacted>)")
    }
}

/// A ready-to-send authentication header.
#[derive(Clone)]
pub(crate) struct AuthHeader {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValue,
}

impl AuthHeader {
    /// `text` with every occurrence of the token replaced by `[REDACTED]`: a GitLab (or proxy)
    /// error page that echoes the request's headers must not carry the token into a log.
    pub(crate) fn redact(&self, text: &str) -> String {
        let value = String::from_utf8_lossy(self.value.as_bytes());
        let token = value.strip_prefix("Bearer ").unwrap_or(&value);
        if token.is_empty() || !text.contains(token) {
            return text.to_owned();
        }
        text.replace(token, "[REDACTED]")
    }
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthHeader({}: <redacted>)", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "glpat-SuperSecret123";

    fn all() -> [Credential; 3] {
        [
            Credential::PrivateToken(SecretString::from(TOKEN)),
            Credential::Bearer(SecretString::from(TOKEN)),
            Credential::JobToken(SecretString::from(TOKEN)),
        ]
    }

    #[test]
    fn debug_never_shows_the_token() {
        for c in all() {
            let debug = format!("{c:?}");
            assert!(!debug.contains(TOKEN), "{debug}");
            let header = c.header().unwrap();
            assert!(!format!("{header:?}").contains(TOKEN));
            assert!(!format!("{:?}", header.value).contains(TOKEN));
        }
    }

    #[test]
    fn each_kind_uses_its_header() {
        let [private, bearer, job] = all().map(|c| c.header().unwrap());
        assert_eq!(private.name.as_str(), "private-token");
        assert_eq!(private.value.to_str().unwrap(), TOKEN);
        assert_eq!(bearer.name, AUTHORIZATION);
        assert_eq!(bearer.value.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert_eq!(job.name.as_str(), "job-token");
        assert!(job.value.is_sensitive());
    }

    #[test]
    fn a_token_with_a_newline_is_a_config_error_without_the_token() {
        let c = Credential::PrivateToken(SecretString::from("abc\ndef"));
        let err = c.header().unwrap_err();
        assert!(matches!(err, GitLabError::Config(_)));
        assert!(!err.to_string().contains("abc"));
    }
}
