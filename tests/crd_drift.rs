//! `crds/jobpolicy.yaml` must be exactly what `jobwarden crd` prints, so that what operators
//! apply is what the code expects.

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/jobpolicy.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = jobwarden::crd::crd_yaml();
    assert!(
        committed == generated,
        "crds/jobpolicy.yaml is out of date with src/crd.rs; regenerate it with:\n\n    cargo run -- crd > crds/jobpolicy.yaml\n"
    );
}

#[test]
fn crd_command_prints_the_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobwarden"))
        .arg("crd")
        .output()
        .expect("run jobwarden crd");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        jobwarden::crd::crd_yaml()
    );
}

#[test]
fn crd_has_the_promised_shape() {
    use kube::CustomResourceExt;
    let crd = jobwarden::crd::JobPolicy::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("jobpolicies.jobwarden.dev")
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["jp".to_owned()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<String> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(
        columns,
        [
            "READY",
            "REASON",
            "PROJECTS",
            "DRY-RUN",
            "RETRIED",
            "CANCELED",
            "PLAYED",
            "KEPT",
            "LAST SYNC",
            "AGE"
        ]
    );
    let column = |name: &str| {
        version
            .additional_printer_columns
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .map(|c| (c.type_.clone(), c.json_path.clone()))
    };
    assert_eq!(
        column("Projects"),
        Some(("integer".to_owned(), ".status.projects".to_owned()))
    );
    assert_eq!(
        column("Reason"),
        Some((
            "string".to_owned(),
            ".status.conditions[?(@.type==\"Ready\")].reason".to_owned()
        ))
    );
    let yaml = jobwarden::crd::crd_yaml();
    for rule in [
        "has(self.projects) || has(self.groups)",
        "[has(self.retry), has(self.cancel), has(self.play), has(self.keepArtifacts)].filter(x, x).size() == 1",
        "self.rules.all(r, self.rules.exists_one(o, o.name == r.name))",
    ] {
        assert!(yaml.contains(rule), "missing CEL rule {rule}");
    }
}
