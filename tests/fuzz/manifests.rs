//! Policy manifests through the path `jobwarden check` and `jobwarden run --policies` take
//! once a file is read (`load_manifest_text`: the text bounds, the split into documents, YAML,
//! the schema checks, the compiler), then the checks of Secret references, and the compiled
//! policies judging the seed jobs.

use crate::gitlab_json::seed_records;
use crate::mutate::{self, Fragment, JsonOp};
use crate::support::{self, any_now, bounded, exercise_decide};
use jiff::Timestamp;
use jobwarden::source::files::{
    LoadedManifests, load_manifest_text, lookup_secret_key, policy_namespace, resolve_token_with,
    resolve_webhook_secret,
};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

/// YAML syntax and JobPolicy snippets for byte-level insertions.
const YAML_TOKENS: &[&str] = &[
    "---\n",
    "\n---\n",
    "\n...\n",
    "--- ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!Tag ",
    "? ",
    "- ",
    ": ",
    "|\n",
    ">-\n",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "\t",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "~",
    ".inf",
    ".nan",
    "0x1F",
    "0o17",
    "1e400",
    "18446744073709551616",
    "-1",
    "yes",
    "on",
    "null",
    "\n  ",
    "\n    - ",
    "\\",
    "\\u0000",
    "\u{FEFF}",
    "\r\n",
    "apiVersion: jobwarden.dev/v1alpha1\n",
    "kind: JobPolicy\n",
    "apiVersion: v1\nkind: Secret\n",
    "metadata: {name: x}\n",
    "stringData: {token: t}\n",
    "data: {token: '!!!'}\n",
    "rules: []",
    "retry: {limit: 99}",
    "olderThan: 2562048h",
    "olderThan: 99999999999999999999999999999999999999.9999999999h",
    "timeZone: Mars/Olympus",
    "timeZone: ../../../../etc/passwd",
    "logPattern: '(a*)*b'",
    "logPattern: '\\p{Greek}{1000}'",
    "refs: ['[', '{a,', '**/']",
    "from: '24:00'",
    "to: '24:00'",
];

/// The seed manifests: `deploy/examples`, the invalid fixtures of `tests/fixtures/invalid`, and
/// `tests/fuzz/corpus/policy`.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        [
            "deploy/examples",
            "tests/fixtures/invalid",
            "tests/fuzz/corpus/policy",
        ]
        .into_iter()
        .flat_map(|dir| support::read_dir(dir, &[".yaml"]))
        .map(|(path, bytes)| {
            String::from_utf8(bytes).unwrap_or_else(|_| panic!("{}: not UTF-8", path.display()))
        })
        .collect()
    })
}

/// The seed manifests' documents as JSON values (for structural edits), the documents that
/// load without a problem first: edits of a valid policy reach deeper.
fn seed_values() -> &'static (Vec<Value>, usize) {
    static VALUES: OnceLock<(Vec<Value>, usize)> = OnceLock::new();
    VALUES.get_or_init(|| {
        let (mut valid, mut others): (Vec<Value>, Vec<Value>) = seeds()
            .iter()
            .flat_map(|text| {
                serde_yaml::Deserializer::from_str(text)
                    .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
                    .filter(|v: &Value| v.is_object())
                    .collect::<Vec<_>>()
            })
            .partition(|v| {
                let loaded = load_manifest_text(Path::new("seed.json"), &v.to_string());
                loaded.problems().is_empty() && !loaded.policies.is_empty()
            });
        let count = valid.len();
        assert!(count >= 6, "{count} valid seed policies");
        valid.append(&mut others);
        (valid, count)
    })
}

/// A seed document: a valid policy four times in five.
fn seed_value() -> impl Strategy<Value = &'static Value> {
    let (values, valid) = seed_values();
    prop_oneof![
        4 => prop::sample::select((0..*valid).collect::<Vec<_>>()),
        1 => prop::sample::select((0..values.len()).collect::<Vec<_>>()),
    ]
    .prop_map(move |i| &values[i])
}

/// The jobs compiled policies are judged against.
fn records() -> &'static [jobwarden::gitlab::records::JobRecord] {
    static RECORDS: OnceLock<Vec<jobwarden::gitlab::records::JobRecord>> = OnceLock::new();
    RECORDS.get_or_init(|| seed_records("2026-11-23T10:00:00Z".parse().expect("a timestamp")))
}

/// Everything `check` and `run --policies` do with a file's text.
fn feed(text: &str, now: Timestamp) -> LoadedManifests {
    let loaded = load_manifest_text(Path::new("fuzz.yaml"), text);
    for problem in loaded.problems() {
        let _ = problem.to_string();
    }
    for secret in &loaded.secrets {
        let _ = format!("{secret:?}");
        let _ = secret.keys().count();
    }
    for policy in &loaded.policies {
        let _ = (policy.key(), policy_namespace(&policy.policy));
        let gitlab = &policy.policy.spec.gitlab;
        let namespace = policy_namespace(&policy.policy);
        let _ = lookup_secret_key(&loaded.secrets, namespace, &gitlab.token_secret_ref)
            .map_err(|e| e.to_string());
        let _ = resolve_token_with(&policy.policy, &loaded.secrets, "FUZZ_TOKEN", |_| None)
            .map_err(|e| e.to_string());
        let _ = resolve_webhook_secret(&policy.policy, &loaded.secrets).map_err(|e| e.to_string());
        if let Ok(compiled) = &policy.compiled {
            for rule in &compiled.rules {
                let _ = format!("{:?} {:?}", rule.action, rule.conditions);
                if let Some(window) = &rule.conditions.window {
                    let _ = (window.to_string(), window.contains(now));
                }
                if let jobwarden::policy::RuleAction::Retry {
                    backoff: Some(b), ..
                } = &rule.action
                {
                    for attempt in [0, 1, 2, 20, 21, u32::MAX] {
                        let _ = b.delay(attempt);
                    }
                }
            }
            exercise_decide(compiled, records(), now, "ERROR: Job failed: exit code 137");
        }
    }
    loaded
}

/// What a field of a JobPolicy holds, to give it values of its kind (near and past its rules)
/// more often than values of any kind.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Duration,
    Glob,
    Regex,
    Clock,
    Zone,
    Day,
    Name,
    Url,
    Project,
    Status,
    Reason,
    Bool,
    Count,
    Factor,
    Text,
}

/// The fields of a JobPolicy (and of a Secret) that the loader and the compiler read.
const POLICY_FIELDS: &[(&[&str], Kind)] = &[
    (&["apiVersion"], Kind::Text),
    (&["kind"], Kind::Text),
    (&["metadata", "name"], Kind::Name),
    (&["metadata", "namespace"], Kind::Name),
    (&["spec", "gitlab", "url"], Kind::Url),
    (&["spec", "gitlab", "tokenSecretRef", "name"], Kind::Name),
    (&["spec", "gitlab", "tokenSecretRef", "key"], Kind::Name),
    (&["spec", "gitlab", "caBundleSecretRef", "name"], Kind::Name),
    (&["spec", "projects", "0"], Kind::Project),
    (&["spec", "projects", "1"], Kind::Project),
    (&["spec", "interval"], Kind::Duration),
    (&["spec", "dryRun"], Kind::Bool),
    (&["spec", "suspend"], Kind::Bool),
    (&["spec", "jobs", "refs", "0"], Kind::Glob),
    (&["spec", "jobs", "names", "0"], Kind::Glob),
    (&["spec", "rules", "0", "name"], Kind::Name),
    (&["spec", "rules", "1", "name"], Kind::Name),
    (
        &["spec", "rules", "0", "match", "statuses", "0"],
        Kind::Status,
    ),
    (
        &["spec", "rules", "0", "match", "failureReasons", "0"],
        Kind::Reason,
    ),
    (&["spec", "rules", "0", "match", "refs", "0"], Kind::Glob),
    (&["spec", "rules", "0", "match", "names", "1"], Kind::Glob),
    (&["spec", "rules", "1", "match", "stages", "0"], Kind::Glob),
    (
        &["spec", "rules", "0", "match", "olderThan"],
        Kind::Duration,
    ),
    (
        &["spec", "rules", "1", "match", "olderThan"],
        Kind::Duration,
    ),
    (
        &["spec", "rules", "0", "match", "artifactsExpireWithin"],
        Kind::Duration,
    ),
    (&["spec", "rules", "0", "match", "superseded"], Kind::Bool),
    (&["spec", "rules", "0", "match", "tag"], Kind::Bool),
    (&["spec", "rules", "0", "match", "logPattern"], Kind::Regex),
    (
        &[
            "spec",
            "rules",
            "0",
            "match",
            "pipeline",
            "stagesSucceeded",
            "0",
        ],
        Kind::Text,
    ),
    (
        &["spec", "rules", "0", "match", "window", "days", "0"],
        Kind::Day,
    ),
    (
        &["spec", "rules", "0", "match", "window", "from"],
        Kind::Clock,
    ),
    (
        &["spec", "rules", "0", "match", "window", "to"],
        Kind::Clock,
    ),
    (
        &["spec", "rules", "0", "match", "window", "timeZone"],
        Kind::Zone,
    ),
    (&["spec", "rules", "0", "retry", "limit"], Kind::Count),
    (
        &["spec", "rules", "0", "retry", "backoff", "duration"],
        Kind::Duration,
    ),
    (
        &["spec", "rules", "0", "retry", "backoff", "factor"],
        Kind::Factor,
    ),
    (
        &["spec", "rules", "0", "retry", "backoff", "maxDuration"],
        Kind::Duration,
    ),
    (
        &["spec", "rules", "0", "play", "variables", "0", "key"],
        Kind::Name,
    ),
    (
        &["spec", "rules", "0", "play", "variables", "0", "value"],
        Kind::Text,
    ),
    (&["spec", "limits", "maxActionsPerRun"], Kind::Count),
    (&["spec", "limits", "maxActionsPerHour"], Kind::Count),
    (&["stringData", "token"], Kind::Text),
    (&["data", "token"], Kind::Text),
];

fn texts(values: &'static [&'static str], generated: &'static str) -> BoxedStrategy<Fragment> {
    prop_oneof![
        prop::sample::select(values).prop_map(str::to_owned),
        generated,
    ]
    .prop_map(Fragment::Text)
    .boxed()
}

/// Values of `kind`, near and past its rules.
fn value_of(kind: Kind) -> BoxedStrategy<Fragment> {
    match kind {
        Kind::Duration => texts(
            &[
                "10s", "9s", "0s", "1ns", "2562047h", "2562048h", "1.5h30m", "1d", "-1s", "",
            ],
            "[0-9]{1,40}(\\.[0-9]{1,25})?(ns|us|µs|ms|s|m|h){1,2}",
        ),
        Kind::Glob => texts(
            &["*", "**", "[", "{a,b}", "[!a-z]*", "\\*", ""],
            "[*?\\[\\]{}!,/\\\\a-c^-]{1,12}",
        ),
        Kind::Regex => texts(
            &[
                "(a*)*b",
                "\\p{Greek}{100}",
                "(?i)error",
                "[",
                "a{1000}{1000}",
                "(?-u:\\xff)",
                "",
            ],
            "[()|*+?{}\\[\\]^$\\\\.a-c0-9,pPwWdD]{1,24}",
        ),
        Kind::Clock => texts(
            &["00:00", "23:59", "24:00", "24:01", "9:00", "12:60"],
            "[0-9]{1,3}:[0-9]{1,3}",
        ),
        Kind::Zone => texts(
            &[
                "UTC",
                "Europe/Berlin",
                "Pacific/Chatham",
                "Etc/GMT+14",
                "Etc/Unknown",
                "utc",
                "Mars/Olympus",
                "../zoneinfo/UTC",
                "/etc/localtime",
                "",
            ],
            "[A-Za-z_/+0-9.-]{0,30}",
        ),
        Kind::Day => texts(
            &["Mon", "Sun", "mon", "Monday", "Funday", ""],
            "[A-Za-z]{0,4}",
        ),
        Kind::Name => texts(
            &["a", "a-b.c", "-a", "a-", "A", "", "a_b"],
            "[a-z0-9._-]{0,70}",
        ),
        Kind::Url => texts(
            &[
                "https://gitlab.example.com",
                "http://[::1",
                "file:///etc/passwd",
                "https://u:p@h/x?q#f",
                "http://h:99999",
                "https://",
                "",
            ],
            "https?://[a-z0-9.:\\[\\]@/?#%-]{0,30}",
        ),
        Kind::Project => texts(
            &[
                "1",
                "0",
                "group/project",
                "/leading",
                "a//b",
                "a/b/",
                "18446744073709551616",
                "",
            ],
            "[0-9a-z/ ]{0,12}",
        ),
        Kind::Status => texts(
            &["failed", "manual", "FAILED", "running", "unknown", ""],
            "[a-z_]{0,12}",
        ),
        Kind::Reason => texts(
            &["stuck_or_timeout_failure", "script_failure", "Bad", ""],
            "[a-z_0-9 ]{0,20}",
        ),
        Kind::Bool => prop_oneof![
            any::<bool>().prop_map(Fragment::Bool),
            Just(Fragment::Text("yes".into()))
        ]
        .boxed(),
        Kind::Count => prop_oneof![
            prop::sample::select(
                &[
                    "0",
                    "1",
                    "20",
                    "21",
                    "10000",
                    "10001",
                    "100000",
                    "100001",
                    "4294967295",
                    "4294967296",
                    "-1",
                    "1.5"
                ][..]
            )
            .prop_map(Fragment::Number),
            (0u64..200_000).prop_map(|n| Fragment::RawNumber(n.to_string())),
        ]
        .boxed(),
        Kind::Factor => {
            prop::sample::select(&["1", "10", "0.999", "10.0001", "1e308", "-1", "0", "2.5"][..])
                .prop_map(Fragment::Number)
                .boxed()
        }
        Kind::Text => prop_oneof![
            prop::sample::select(mutate::ODD_UNICODE).prop_map(|s| Fragment::Text(s.to_owned())),
            any::<String>().prop_map(Fragment::Text),
            (0usize..12_000).prop_map(|n| Fragment::Text("v".repeat(n))),
        ]
        .boxed(),
    }
}

fn policy_ops() -> impl Strategy<Value = Vec<JsonOp>> {
    let targeted = prop::sample::select(POLICY_FIELDS).prop_flat_map(|(path, kind)| {
        prop_oneof![5 => value_of(kind), 1 => mutate::fragment()]
            .prop_map(move |fragment| JsonOp::SetPath(path, fragment))
    });
    prop::collection::vec(
        prop_oneof![
            5 => targeted,
            1 => mutate::tree_op(),
        ],
        1..=4,
    )
}

/// Manifests that test the loader's bounds: flow collections nested around the limit, deep
/// block nesting, many documents, aliases of aliases, long lines.
fn pathological() -> impl Strategy<Value = String> {
    prop_oneof![
        (25usize..40, prop::bool::ANY).prop_map(|(depth, objects)| {
            let (open, close) = if objects { ("{a: ", "}") } else { ("[", "]") };
            format!("apiVersion: v1\nkind: Secret\nx: {}1{}\n", open.repeat(depth), close.repeat(depth))
        }),
        (1usize..400).prop_map(|depth| {
            let mut text = String::from("apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nspec:\n");
            for level in 0..depth {
                text.push_str(&"  ".repeat(level + 1));
                text.push_str("a:\n");
            }
            text
        }),
        (1usize..400).prop_map(|depth| format!("spec: {}x\n", "- ".repeat(depth))),
        (95usize..110).prop_map(|n| "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n".repeat(n)),
        (2usize..12, 2usize..12).prop_map(|(levels, width)| {
            let mut text = String::from("apiVersion: jobwarden.dev/v1alpha1\nkind: JobPolicy\nmetadata: {name: n}\nl0: &l0 x\n");
            for level in 1..=levels {
                let items = vec![format!("*l{}", level - 1); width].join(", ");
                text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
            }
            text.push_str(&format!("spec: {{rules: *l{levels}}}\n"));
            text
        }),
        (1usize..200_000).prop_map(|n| format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{t: {}}}\n", "x".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(support::config(8))]

    /// Seed manifests mutated byte by byte (as text: invalid UTF-8 is replaced, since a file
    /// that is not UTF-8 is refused before parsing).
    #[test]
    fn manifest_byte_mutations(
        seed in any::<prop::sample::Index>(),
        ops in mutate::byte_ops(YAML_TOKENS, 6),
        now in any_now(),
    ) {
        let texts = seeds();
        let seed = texts[seed.index(texts.len())].as_bytes();
        let partners: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let text = String::from_utf8_lossy(&mutate::apply_bytes(seed, &ops, &partners)).into_owned();
        bounded("manifest (bytes)", &(&text, &ops), || {
            feed(&text, now);
        })?;
    }

    /// Seed manifests edited as trees, mostly on the fields the compiler reads, written back as
    /// JSON (which YAML reads too).
    #[test]
    fn manifest_structural_mutations(
        seed in seed_value(),
        ops in policy_ops(),
        now in any_now(),
    ) {
        let text = String::from_utf8_lossy(&mutate::apply_json(seed, &ops)).into_owned();
        bounded("manifest (structure)", &(&text, &ops), || {
            feed(&text, now);
        })?;
    }

    /// Manifests at and past the loader's bounds end quickly, with an error or without.
    #[test]
    fn manifest_bounds(text in pathological()) {
        bounded("manifest (bounds)", &text, || {
            feed(&text, Timestamp::UNIX_EPOCH);
        })?;
    }
}

/// The seeds load as their names say: the examples cleanly, the others with errors, and the
/// alias bomb is refused.
#[test]
fn seed_manifests_load() {
    let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let examples = support::read_dir("deploy/examples", &[".yaml"]);
    for (path, bytes) in &examples {
        let loaded = feed(std::str::from_utf8(bytes).unwrap(), now);
        assert!(
            loaded.problems().is_empty(),
            "{}: {:?}",
            path.display(),
            loaded.problems()
        );
    }
    let corpus = support::read_dir("tests/fuzz/corpus/policy", &[".yaml"]);
    for (path, bytes) in &corpus {
        let text = std::str::from_utf8(bytes).unwrap();
        let loaded = feed(text, now);
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "alias-bomb.yaml" {
            assert!(!loaded.problems().is_empty());
        } else {
            assert!(
                loaded.problems().is_empty(),
                "{name}: {:?}",
                loaded.problems()
            );
            assert!(loaded.policies.iter().all(|p| p.compiled.is_ok()));
        }
    }
    assert!(!records().is_empty());
}

/// The mutations keep reaching the compiler and past it: a share of the mutated manifests
/// still loads as policies, and some still compile (and are run through `decide`).
/// Deterministic: the same inputs on every run.
#[test]
fn mutations_reach_the_compiler() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let texts = seeds();
    let partners: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    let bytes = (
        any::<prop::sample::Index>(),
        mutate::byte_ops(YAML_TOKENS, 6),
    );
    let structure = (seed_value(), policy_ops());
    let (mut loaded, mut compiled) = ([0; 2], [0; 2]);
    for _ in 0..300 {
        let (seed, ops) = bytes.new_tree(&mut runner).unwrap().current();
        let text = mutate::apply_bytes(texts[seed.index(texts.len())].as_bytes(), &ops, &partners);
        let by_bytes = feed(&String::from_utf8_lossy(&text), now);
        let (seed, ops) = structure.new_tree(&mut runner).unwrap().current();
        let by_structure = feed(
            &String::from_utf8_lossy(&mutate::apply_json(seed, &ops)),
            now,
        );
        for (i, result) in [by_bytes, by_structure].iter().enumerate() {
            loaded[i] += result.policies.len();
            compiled[i] += result
                .policies
                .iter()
                .filter(|p| p.compiled.is_ok())
                .count();
        }
    }
    assert!(
        loaded[0] >= 40 && compiled[0] >= 12,
        "bytes: {loaded:?} loaded, {compiled:?} compiled"
    );
    assert!(
        loaded[1] >= 40 && compiled[1] >= 8,
        "trees: {loaded:?} loaded, {compiled:?} compiled"
    );
}
