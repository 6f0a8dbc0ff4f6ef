use crate::source::files::load_manifests;
use crate::source::files::test_manifests::{messages, write};
use secrecy::ExposeSecret;
use tempfile::TempDir;

#[test]
fn secrets_from_data_and_string_data_never_show_values() {
    let dir = TempDir::new().unwrap();
    let text = "apiVersion: v1
kind: Secret
metadata: {name: s, namespace: ci}
data:
  token: ZnJvbS1kYXRhCg==
  other: ZnJvbS1kYXRh
stringData:
  other: from-string-data
---
apiVersion: v1
kind: Secret
metadata: {name: broken}
data:
  token: '%%%not-base64-secret-value%%%'
";
    let file = write(&dir, "s.yaml", text);
    let loaded = load_manifests(&[file]);
    assert_eq!(loaded.secrets.len(), 1);
    let s = &loaded.secrets[0];
    assert_eq!(s.get("token").unwrap().expose_secret(), "from-data\n");
    assert_eq!(s.get("other").unwrap().expose_secret(), "from-string-data");
    let debug = format!("{s:?}");
    assert!(
        debug.contains("token") && !debug.contains("from-data"),
        "{debug}"
    );
    let errs = messages(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].ends_with("document 2: data.token: not valid base64-encoded UTF-8 text"));
    assert!(!errs[0].contains("not-base64-secret-value"));
}
