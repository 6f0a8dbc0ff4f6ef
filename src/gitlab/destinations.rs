//! Where a GitLab token may be sent.
//!
//! A token travels in a header of every request, so the URL a policy names decides who receives
//! it. Plain `http://` sends it in cleartext: refused unless the operator allows it
//! (`--allow-insecure-http`; the simulator, tests and the demo do). And a cluster operator may
//! list the GitLab hosts tokens may go to (`--allowed-gitlab-hosts`), so a policy cannot point
//! `gitlab.url` at a host of its author's choosing and receive the token of another tenant's
//! Secret... or its own, sent somewhere it should not be.

use url::Url;

/// The rules a GitLab URL must pass before a token is sent to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenDestinations {
    /// Allow `http://` URLs.
    pub allow_insecure_http: bool,
    /// Host names tokens may be sent to (compared case-insensitively; an entry `host:port`
    /// also pins the port). Empty: any host.
    pub allowed_hosts: Vec<String>,
}

/// Why a URL may not receive a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationRefused {
    #[error(
        "{url} is plain http: the token would travel in cleartext (use https, or start jobwarden with --allow-insecure-http)"
    )]
    InsecureHttp { url: String },
    #[error("{url} uses the scheme {scheme:?}: only https (and http when allowed) reach GitLab")]
    Scheme { url: String, scheme: String },
    #[error("{url}: the host {host:?} is not in --allowed-gitlab-hosts ({allowed})")]
    HostNotAllowed {
        url: String,
        host: String,
        allowed: String,
    },
}

impl TokenDestinations {
    /// Everything allowed, `http://` included: for the simulator, the demo and tests.
    pub fn insecure_http_allowed() -> TokenDestinations {
        TokenDestinations {
            allow_insecure_http: true,
            allowed_hosts: Vec::new(),
        }
    }

    /// Checks a GitLab URL.
    pub fn check(&self, url: &Url) -> Result<(), DestinationRefused> {
        let shown = || super::instance_name(url);
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http => {}
            "http" => return Err(DestinationRefused::InsecureHttp { url: shown() }),
            other => {
                return Err(DestinationRefused::Scheme {
                    url: shown(),
                    scheme: other.to_owned(),
                });
            }
        }
        if self.allowed_hosts.is_empty() {
            return Ok(());
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let port = url.port_or_known_default();
        let allowed = self.allowed_hosts.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            match entry.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
                    h == host && p.parse::<u16>().ok() == port
                }
                _ => entry == host,
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(DestinationRefused::HostNotAllowed {
                url: shown(),
                host,
                allowed: self.allowed_hosts.join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().expect("url")
    }

    #[test]
    fn http_is_refused_unless_allowed() {
        let strict = TokenDestinations::default();
        assert!(strict.check(&url("https://gitlab.example.com")).is_ok());
        let err = strict
            .check(&url("http://gitlab.example.com/"))
            .expect_err("cleartext");
        assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
        assert!(
            TokenDestinations::insecure_http_allowed()
                .check(&url("http://127.0.0.1:8080"))
                .is_ok()
        );
        assert!(matches!(
            strict.check(&url("ftp://gitlab.example.com")),
            Err(DestinationRefused::Scheme { .. })
        ));
    }

    #[test]
    fn only_listed_hosts_receive_tokens() {
        let rules = TokenDestinations {
            allow_insecure_http: false,
            allowed_hosts: vec!["GitLab.example.com".into(), "git.internal:8443".into()],
        };
        assert!(rules.check(&url("https://gitlab.example.com/")).is_ok());
        assert!(rules.check(&url("https://git.internal:8443")).is_ok());
        let other_port = rules
            .check(&url("https://git.internal"))
            .expect_err("another port");
        assert!(matches!(
            other_port,
            DestinationRefused::HostNotAllowed { .. }
        ));
        let err = rules
            .check(&url("https://attacker.example.net"))
            .expect_err("not listed");
        assert_eq!(
            err.to_string(),
            "https://attacker.example.net: the host \"attacker.example.net\" is not in --allowed-gitlab-hosts (GitLab.example.com, git.internal:8443)"
        );
        // A look-alike sub-domain is another host.
        assert!(
            rules
                .check(&url("https://gitlab.example.com.evil.net"))
                .is_err()
        );
    }
}
