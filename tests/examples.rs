//! The examples in deploy/examples are what newcomers copy: they must pass `jobwarden check`,
//! validate against the generated CRD schema, and together show every action and condition.

#[path = "support/openapi.rs"]
mod openapi;

use jobwarden::crd::JobPolicy;
use kube::CustomResourceExt;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

fn schema() -> Value {
    let crd = JobPolicy::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).unwrap()
}

/// Every JobPolicy document of the examples, as JSON.
fn example_policies() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.get("kind") == Some(&Value::String("JobPolicy".into())) {
                out.push((file.clone(), value));
            }
        }
    }
    out
}

#[test]
fn jobwarden_check_accepts_the_examples() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobwarden"))
        .arg("check")
        .arg(examples_dir())
        .output()
        .expect("run jobwarden check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert_eq!(stderr, "");
    assert_eq!(stdout.lines().count(), example_policies().len(), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("ok: ")), "{stdout}");
}

#[test]
fn examples_validate_against_the_crd_schema() {
    let schema = schema();
    let policies = example_policies();
    assert!(policies.len() >= 5);
    for (file, policy) in policies {
        let errors = openapi::validate_manifest(&schema, &policy);
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn the_schema_rejects_what_it_should() {
    let schema = schema();
    let (_, base) = example_policies().into_iter().next().unwrap();
    let cases: [(&str, Value, &str); 6] = [
        (
            "/spec/rules/0/retry",
            serde_json::json!({"limit": 25}),
            "spec.rules[0].retry.limit: must be <= 20",
        ),
        (
            "/spec/rules/0/match/statuses",
            serde_json::json!(["faild"]),
            "spec.rules[0].match.statuses[0]: \"faild\" is not one of",
        ),
        (
            "/spec/interval",
            serde_json::json!("1 minute"),
            "spec.interval: \"1 minute\" does not match",
        ),
        (
            "/spec/rules/0/match/olderthan",
            serde_json::json!("2h"),
            "spec.rules[0].match.olderthan: unknown field",
        ),
        (
            "/spec/projects",
            serde_json::json!([]),
            "spec.projects: minItems 1, found 0",
        ),
        (
            "/spec/rules/0/match/window",
            serde_json::json!({"to": "25:00"}),
            "spec.rules[0].match.window.to: \"25:00\" does not match",
        ),
    ];
    for (pointer, replacement, expected) in cases {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), replacement);
        let errors = openapi::validate_manifest(&schema, &doc);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{pointer}: expected {expected:?} in {errors:#?}"
        );
    }
}

/// The spec fields (besides rules) that some example must show.
const SPEC_FIELDS_TO_SHOW: [&str; 7] = [
    "dryRun",
    "suspend",
    "jobs",
    "limits",
    "interval",
    "groups",
    "excludeProjects",
];

#[test]
fn examples_show_every_action_and_condition() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, policy) in example_policies() {
        let spec = &policy["spec"];
        for key in SPEC_FIELDS_TO_SHOW {
            if spec.get(key).is_some() {
                seen.insert(key.to_owned());
            }
        }
        for rule in spec["rules"].as_array().unwrap() {
            for action in ["retry", "cancel", "play", "keepArtifacts"] {
                if rule.get(action).is_some() {
                    seen.insert(action.to_owned());
                }
            }
            if rule.pointer("/retry/backoff").is_some() {
                seen.insert("backoff".into());
            }
            if rule.pointer("/play/variables").is_some() {
                seen.insert("variables".into());
            }
            for condition in rule["match"].as_object().unwrap().keys() {
                seen.insert(condition.clone());
            }
        }
    }
    for expected in [
        "retry",
        "cancel",
        "play",
        "keepArtifacts",
        "backoff",
        "variables",
        "statuses",
        "failureReasons",
        "refs",
        "names",
        "stages",
        "tag",
        "allowFailure",
        "olderThan",
        "superseded",
        "pipeline",
        "window",
        "artifactsExpireWithin",
        "logPattern",
    ]
    .into_iter()
    .chain(SPEC_FIELDS_TO_SHOW)
    {
        assert!(seen.contains(expected), "no example shows {expected}");
    }
}
