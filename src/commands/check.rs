//! `jobwarden check PATH...`: validates JobPolicy manifests offline, with the same checks as
//! the controller (schema-level checks and what only code can check: regexes, time zones, …).
//!
//! Prints `ok: <file>: <namespace>/<name>` for each valid policy on stdout and one line per
//! problem (`<file>: document <n>: <field>: <reason>`) on stderr. Exit code 0 when every
//! manifest is valid and at least one policy was found, 1 otherwise.

use crate::gitlab::CaBundle;
use crate::source::files::{
    LoadedManifests, ManifestError, load_manifests, lookup_secret_key, policy_namespace,
};
use secrecy::ExposeSecret;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `jobwarden check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Manifest files or directories (a directory contributes its *.yaml and *.yml files).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Runs the check, writing results to `out` and problems to `err`.
pub fn run(
    args: &CheckArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> crate::Result<ExitCode> {
    let loaded = load_manifests(&args.paths);
    let mut problems = loaded.problems();
    problems.extend(secret_reference_problems(&loaded));
    problems.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));

    for policy in loaded.policies.iter().filter(|p| p.compiled.is_ok()) {
        let key = policy.key();
        let has_problem = problems
            .iter()
            .any(|e| e.file == policy.source.file && e.document == Some(policy.source.document));
        if !has_problem {
            writeln!(out, "ok: {}: {key}", policy.source.file.display())?;
        }
    }
    for problem in &problems {
        writeln!(err, "{problem}")?;
    }
    let found_none = loaded.policies.is_empty();
    // A file whose only policy was rejected has its errors above: "none found" would mislead.
    if found_none && problems.is_empty() {
        let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        writeln!(err, "no JobPolicy manifests found in {}", paths.join(", "))?;
    }
    out.flush()?;
    err.flush()?;
    Ok(if problems.is_empty() && !found_none {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A policy whose token or CA bundle Secret is among the manifests but lacks the key (or whose
/// CA bundle holds no valid certificate) would fail at run time; say so now. (A Secret that is
/// absent is fine: the token may come from the environment, and Secrets are often kept apart
/// from the policies.)
fn secret_reference_problems(loaded: &LoadedManifests) -> Vec<ManifestError> {
    let mut out = Vec::new();
    for p in &loaded.policies {
        let namespace = policy_namespace(&p.policy);
        let gitlab = &p.policy.spec.gitlab;
        let refs = [
            (TOKEN_REF, Some(&gitlab.token_secret_ref)),
            (CA_BUNDLE_REF, gitlab.ca_bundle_secret_ref.as_ref()),
        ];
        for (path, secret_ref) in refs {
            let Some(secret_ref) = secret_ref else {
                continue;
            };
            let problem = match lookup_secret_key(&loaded.secrets, namespace, secret_ref) {
                Err(e) => Some(e.to_string()),
                Ok(Some(pem)) if path == CA_BUNDLE_REF => {
                    CaBundle::from_pem(pem.expose_secret().as_bytes())
                        .err()
                        .map(|e| {
                            format!(
                                "key {:?} of Secret {namespace}/{}: {e}",
                                secret_ref.key, secret_ref.name
                            )
                        })
                }
                Ok(_) => None,
            };
            if let Some(message) = problem {
                out.push(ManifestError {
                    file: p.source.file.clone(),
                    document: Some(p.source.document),
                    path: Some(path.to_owned()),
                    message,
                });
            }
        }
    }
    out
}

const TOKEN_REF: &str = "spec.gitlab.tokenSecretRef";
const CA_BUNDLE_REF: &str = "spec.gitlab.caBundleSecretRef";

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn check(paths: Vec<PathBuf>) -> (ExitCode, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&CheckArgs { paths }, &mut out, &mut err).unwrap();
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const POLICY: &str = "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {name: p, namespace: ci}
spec:
  gitlab: {url: 'http://127.0.0.1:8080', tokenSecretRef: {name: gitlab, key: token}}
  projects: ['1']
  rules: [{name: r, match: {statuses: [pending]}, cancel: {}}]
";

    #[test]
    fn valid_policies_print_ok_and_exit_zero() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("p.yaml");
        fs::write(&file, POLICY).unwrap();
        let (code, out, err) = check(vec![dir.path().to_owned()]);
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        assert_eq!(out, format!("ok: {}: ci/p\n", file.display()));
        assert_eq!(err, "");
    }

    #[test]
    fn invalid_policies_print_errors_and_exit_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("p.yaml");
        let bad = POLICY.replace("match: {statuses: [pending]}", "match: {logPattern: '('}");
        fs::write(
            &file,
            format!("{POLICY}---\n{}", bad.replace("name: p,", "name: q,")),
        )
        .unwrap();
        let (code, out, err) = check(vec![file.clone()]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(out, format!("ok: {}: ci/p\n", file.display()));
        assert_eq!(
            err,
            format!(
                "{}: document 2: spec.rules[0].match.logPattern: regex parse error: unclosed group\n",
                file.display()
            )
        );
    }

    #[test]
    fn a_token_secret_without_the_key_fails_the_check() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("p.yaml");
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: gitlab, namespace: ci}\nstringData: {tokn: x}\n";
        fs::write(&file, format!("{POLICY}---\n{secret}")).unwrap();
        let (code, out, err) = check(vec![file.clone()]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!(
                "{}: document 1: spec.gitlab.tokenSecretRef: Secret ci/gitlab has no key \"token\"\n",
                file.display()
            )
        );
    }

    #[test]
    fn a_ca_bundle_secret_without_a_certificate_fails_the_check() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("p.yaml");
        let policy = POLICY.replace(
            "tokenSecretRef: {name: gitlab, key: token}}",
            "tokenSecretRef: {name: gitlab, key: token}, \
             caBundleSecretRef: {name: gitlab-ca, key: ca.crt}}",
        );
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: gitlab-ca, namespace: ci}\nstringData: {ca.crt: glpat-pasted-here}\n";
        fs::write(&file, format!("{policy}---\n{secret}")).unwrap();
        let (code, _, err) = check(vec![file.clone()]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(
            err,
            format!(
                "{}: document 1: spec.gitlab.caBundleSecretRef: key \"ca.crt\" of Secret \
                 ci/gitlab-ca: holds no certificate (a PEM bundle of `-----BEGIN CERTIFICATE-----` \
                 blocks)\n",
                file.display()
            )
        );
    }

    #[test]
    fn a_rejected_policy_is_reported_by_its_errors_not_as_missing() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(
            &path,
            "apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nmetadata: {name: bad, namespace: ci}\nspec:\n  gitlab: {url: 'https://gitlab.example.com', tokenSecretRef: {name: gitlab, key: token}}\n  projects: ['1']\n  rules:\n    - name: everything\n      match: {statuses: []}\n      cancel: {}\n",
        )
        .unwrap();
        let (code, out, err) = check(vec![path]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(out, "");
        assert!(
            err.contains("spec.rules[0].match.statuses: must have at least 1 item(s), has 0"),
            "{err}"
        );
        assert!(!err.contains("no JobPolicy manifests found"), "{err}");
    }

    #[test]
    fn nothing_to_check_is_a_failure() {
        let dir = tempfile::TempDir::new().unwrap();
        let (code, out, err) = check(vec![dir.path().to_owned()]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(out, "");
        assert!(err.starts_with("no JobPolicy manifests found in "), "{err}");
    }
}
