//! CA certificates to trust for GitLab's TLS certificate besides the system roots: the
//! controller's `--ca-bundle` file and a policy's `spec.gitlab.caBundleSecretRef`. Both are PEM
//! bundles, read by the one parser here ([`CaBundle::from_pem`]).
//!
//! Messages never quote the PEM text: a key that holds a token by mistake is not echoed.

use crate::gitlab::error::GitLabError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};

/// Why PEM text gives no CA certificate to trust. Says where the problem is, never what the
/// text holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaBundleError {
    /// The text is not PEM: a block is malformed, unterminated or not base64.
    #[error("not a valid PEM bundle: {0}")]
    InvalidPem(&'static str),
    /// The text holds no `CERTIFICATE` block (it is empty, or holds only keys, say).
    #[error("holds no certificate (a PEM bundle of `-----BEGIN CERTIFICATE-----` blocks)")]
    NoCertificate,
    /// A `CERTIFICATE` block does not hold an X.509 certificate that can be a trust root.
    #[error("certificate {index} of the bundle is not a valid X.509 certificate: {reason}")]
    InvalidCertificate {
        /// 1-based, in the order of the bundle.
        index: usize,
        reason: String,
    },
}

/// The SHA-256 digest of a bundle's certificates: the identity of the connection pools and
/// clients that trust it (two bundles with the same certificates are the same bundle).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaDigest([u8; 32]);

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes are enough to tell bundles apart in a log line.
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One or more CA certificates, checked to be usable as trust roots. Cheap to clone.
#[derive(Clone)]
pub struct CaBundle {
    certificates: Arc<[CertificateDer<'static>]>,
    digest: CaDigest,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("certificates", &self.certificates.len())
            .field("digest", &self.digest)
            .finish()
    }
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for CaBundle {}

impl CaBundle {
    /// The certificates of a PEM bundle (blocks other than `CERTIFICATE`, such as keys, are
    /// skipped). Fails on malformed PEM, on a bundle without a certificate, and on a
    /// certificate that cannot be a trust root.
    pub fn from_pem(pem: &[u8]) -> Result<CaBundle, CaBundleError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaBundleError::InvalidPem(pem_problem(&e)))?;
        if certificates.is_empty() {
            return Err(CaBundleError::NoCertificate);
        }
        let mut roots = RootCertStore::empty();
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for (index, certificate) in certificates.iter().enumerate() {
            roots
                .add(certificate.clone())
                .map_err(|e| CaBundleError::InvalidCertificate {
                    index: index + 1,
                    reason: e.to_string(),
                })?;
            // Length-prefixed, so that no two lists of certificates digest alike.
            context.update(&(certificate.len() as u64).to_be_bytes());
            context.update(certificate.as_ref());
        }
        let mut digest = [0; 32];
        digest.copy_from_slice(context.finish().as_ref());
        Ok(CaBundle {
            certificates: certificates.into(),
            digest: CaDigest(digest),
        })
    }

    /// The bundle in the PEM file at `path` (`--ca-bundle`); the error names the file.
    pub fn read(path: &Path) -> Result<CaBundle, GitLabError> {
        let pem = std::fs::read(path).map_err(|e| {
            GitLabError::Config(format!("cannot read CA bundle {}: {e}", path.display()))
        })?;
        CaBundle::from_pem(&pem)
            .map_err(|e| GitLabError::Config(format!("the CA bundle {}: {e}", path.display())))
    }

    /// How many certificates the bundle holds (at least one).
    pub fn certificate_count(&self) -> usize {
        self.certificates.len()
    }

    /// The bundle's identity: equal for bundles of the same certificates.
    pub fn digest(&self) -> CaDigest {
        self.digest
    }

    /// The certificates, as the HTTP client takes them.
    pub(crate) fn reqwest_certificates(&self) -> impl Iterator<Item = reqwest::Certificate> + '_ {
        self.certificates
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
    }
}

/// What is wrong with PEM text, without quoting it (a line of it could be a secret).
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a `-----BEGIN` line has no matching `-----END`",
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "it cannot be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isrg_root() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ca/isrg-root-x1.pem");
        std::fs::read(path).expect("the fixture")
    }

    #[test]
    fn a_bundle_holds_every_certificate_and_skips_other_blocks() {
        let root = isrg_root();
        let one = CaBundle::from_pem(&root).expect("one certificate");
        assert_eq!(one.certificate_count(), 1);
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let mixed = [root.as_slice(), key, b"# a comment\n", root.as_slice()].concat();
        let two = CaBundle::from_pem(&mixed).expect("two certificates");
        assert_eq!(two.certificate_count(), 2);
        assert_ne!(one.digest(), two.digest());
        // Whitespace around the blocks does not make another bundle.
        let padded = [b"\n\n".as_slice(), root.as_slice(), b"\n"].concat();
        assert_eq!(
            CaBundle::from_pem(&padded).expect("padded").digest(),
            one.digest()
        );
    }

    #[test]
    fn problems_are_named_without_quoting_the_text() {
        let no_certificate = |text: &str| CaBundle::from_pem(text.as_bytes()).unwrap_err();
        assert_eq!(no_certificate(""), CaBundleError::NoCertificate);
        assert_eq!(
            no_certificate("glpat-SECRET-TOKEN\n"),
            CaBundleError::NoCertificate
        );
        let unterminated = no_certificate("-----BEGIN CERTIFICATE-----\nglpat-SECRET\n");
        assert!(matches!(unterminated, CaBundleError::InvalidPem(_)));
        let not_base64 = no_certificate(
            "-----BEGIN CERTIFICATE-----\nglpat-SECRET!\n-----END CERTIFICATE-----\n",
        );
        assert!(
            matches!(not_base64, CaBundleError::InvalidPem(_)),
            "{not_base64:?}"
        );
        let not_x509 =
            no_certificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(
            matches!(not_x509, CaBundleError::InvalidCertificate { index: 1, .. }),
            "{not_x509:?}"
        );
        for err in [unterminated, not_base64, not_x509] {
            assert!(!format!("{err} {err:?}").contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn a_file_s_problem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n").unwrap();
        let err = CaBundle::read(&empty).unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(
            err.to_string().contains("empty.pem: holds no certificate"),
            "{err}"
        );
        let err = CaBundle::read(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("cannot read CA bundle"), "{err}");
    }
}
