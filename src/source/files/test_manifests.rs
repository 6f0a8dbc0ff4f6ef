//! Manifests and helpers shared by the tests of the file loader.

use super::LoadedManifests;
use std::fs;
use std::path::PathBuf;
use tempfile::TempDir;

pub(super) const POLICY: &str = "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata:
  name: NAME
  namespace: ci
spec:
  gitlab:
    url: http://127.0.0.1:8080
    tokenSecretRef: {name: gitlab, key: token}
  projects: ['1']
  rules:
    - name: cancel-stale
      match: {statuses: [pending], olderThan: 30m}
      cancel: {}
";

pub(super) fn policy_doc(name: &str) -> String {
    POLICY.replace("NAME", name)
}

pub(super) const SECRET: &str = "apiVersion: v1
kind: Secret
metadata: {name: gitlab, namespace: ci}
stringData:
  token: demo-token
";

pub(super) fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path
}

pub(super) fn messages(loaded: &LoadedManifests) -> Vec<String> {
    loaded.problems().iter().map(ToString::to_string).collect()
}
