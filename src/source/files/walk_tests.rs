use crate::source::files::test_manifests::{policy_doc, write};
use crate::source::files::{LoadedManifests, MAX_MANIFEST_BYTES, load_manifests};
use std::fs;
use std::path::Path;
use tempfile::TempDir;

#[test]
fn directories_give_their_yaml_files_in_order() {
    let dir = TempDir::new().unwrap();
    write(&dir, "b.yaml", &policy_doc("b"));
    write(&dir, "a.yml", &policy_doc("a"));
    write(&dir, ".hidden.yaml", &policy_doc("hidden"));
    write(&dir, "notes.txt", "not yaml: [");
    fs::create_dir(dir.path().join("nested")).unwrap();
    write(&dir, "nested/c.yaml", &policy_doc("c"));
    let explicit = write(&dir, "policy.conf", &policy_doc("explicit"));
    let missing = dir.path().join("missing.yaml");
    let loaded = load_manifests(&[dir.path().to_owned(), explicit, missing.clone()]);
    let keys: Vec<String> = loaded
        .policies
        .iter()
        .map(|p| p.key().to_string())
        .collect();
    assert_eq!(keys, vec!["ci/a", "ci/b", "ci/explicit"]);
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].file, missing);
    assert_eq!(loaded.errors[0].document, None);
    assert!(
        loaded.errors[0]
            .to_string()
            .contains("missing.yaml: cannot read: ")
    );
}

/// Loads `dir` on another thread; `None` when that takes over 10 s (a hang).
fn load_within_10s(dir: &Path) -> Option<LoadedManifests> {
    let dir = dir.to_owned();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(load_manifests(&[dir]));
    });
    result.recv_timeout(std::time::Duration::from_secs(10)).ok()
}

#[test]
fn odd_files_in_the_directory_neither_hang_nor_exhaust_the_loader() {
    let dir = TempDir::new().unwrap();
    write(&dir, "good.yaml", &policy_doc("good"));
    // A FIFO nobody writes to: opening it would block forever.
    let fifo = dir.path().join("notes.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // An endless device behind a name that looks like a manifest.
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
    // Too large, and too deeply nested.
    write(
        &dir,
        "huge.yaml",
        &"# padding\n".repeat((MAX_MANIFEST_BYTES as usize) / 10 + 1),
    );
    let nested = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    write(&dir, "nested.yaml", &nested);

    let loaded = load_within_10s(dir.path()).expect("the loader does not hang");
    assert_eq!(loaded.policies.len(), 1, "the good policy still loads");
    let problems: Vec<String> = loaded.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("huge.yaml") && problems[0].contains("1 MiB"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("nested.yaml") && problems[1].contains("nested 5000 deep"),
        "{problems:#?}"
    );
}
