//! Each manifest in tests/fixtures/invalid lists, in `# expect:` comments, the errors
//! `jobwarden check` must report for it: every error names its document and field, every
//! expected error is reported, and nothing else is.

use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4);
    files
}

fn check(path: &Path) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobwarden"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run jobwarden check");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_error_names_its_field() {
    for file in fixtures() {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| format!("{}: {e}", file.display()))
            .collect();
        assert!(!expected.is_empty(), "{}: no expectations", file.display());
        let (ok, stdout, stderr) = check(&file);
        assert!(!ok, "{}: check passed", file.display());
        assert_eq!(stdout, "", "{}: no policy in it is valid", file.display());
        let reported: Vec<&str> = stderr.lines().collect();
        for want in &expected {
            assert!(
                reported.iter().any(|line| line.starts_with(want.as_str())),
                "missing error {want:?}; reported:\n{stderr}"
            );
        }
        for line in &reported {
            assert!(
                expected.iter().any(|want| line.starts_with(want.as_str())),
                "unexpected error {line:?}"
            );
        }
    }
}

#[test]
fn a_directory_with_invalid_manifests_fails() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let (ok, _, stderr) = check(&dir);
    assert!(!ok);
    assert!(stderr.lines().count() >= fixtures().len(), "{stderr}");
}
