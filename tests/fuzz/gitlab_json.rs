//! GitLab's job JSON, as the client decodes it: pages of the three job listings (split into
//! items, each decoded as a `JobWire` or a full `Job`), single jobs and action answers, the
//! allowed-agents and project answers, error bodies, and job log tails. Whatever decodes is
//! turned into job records and judged by the example policies, as the engine would.

use crate::mutate;
use crate::support::{self, any_now, bounded, exercise_decide};
use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use jiff::Timestamp;
use jobwarden::gitlab::records::{JobRecord, JobWire, Names};
use jobwarden::gitlab::testing;
use jobwarden::gitlab::{AllowedAgents, Endpoint, GitLabError, Job, Project};
use jobwarden::policy::CompiledPolicy;
use jobwarden::source::files::load_manifests;
use proptest::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;

/// JSON tokens and GitLab field snippets for byte-level insertions.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "-",
    "1e999",
    "18446744073709551616",
    "-1",
    "0.5",
    "\\u0000",
    "\\ud800",
    "\\",
    "\"id\":",
    "\"id\":0,",
    "\"status\":\"failed\",",
    "\"status\":null,",
    "\"created_at\":\"9999-12-31T23:59:59Z\",",
    "\"started_at\":\"-009999-01-01T00:00:00Z\",",
    "\"queued_duration\":1e308,",
    "\"queued_duration\":-1,",
    "\"pipeline\":{},",
    "\"pipeline\":{\"id\":18446744073709551615,\"created_at\":\"0000-01-01T00:00:00Z\"},",
    "\"failure_reason\":\"stuck_or_timeout_failure\",",
    "\"artifacts_expire_at\":\"9999-12-30T22:00:00.999999999Z\",",
    "[{}]",
    "[[[[[[[[",
    " ",
    "\n",
];

/// The seeds' JSON values: every example of the four seed documents (GitLab's Jobs API page),
/// found as `tests/seed_examples.rs` finds them, and the files of `tests/fuzz/corpus/json`.
fn seeds() -> &'static [Value] {
    static SEEDS: OnceLock<Vec<Value>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let blame =
            regex::Regex::new(r"(?m)^\s*\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}\s*$")
                .expect("a valid regex");
        let mut values = Vec::new();
        for (path, bytes) in support::read_dir("tests/fixtures/seeds", &[".txt"]) {
            let text = String::from_utf8(bytes).expect("the seeds are UTF-8");
            let text = blame.replace_all(&text, "");
            let found = json_values(text.as_bytes());
            assert!(!found.is_empty(), "{}: no JSON example", path.display());
            values.extend(found);
        }
        for (path, bytes) in support::read_dir("tests/fuzz/corpus/json", &[".json"]) {
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            values.push(value);
        }
        values
    })
}

/// Every JSON object or non-empty array in `text`: at each `{` or `[`, one value is parsed if
/// one starts there, and the search goes on after it.
fn json_values(text: &[u8]) -> Vec<Value> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < text.len() {
        if matches!(text[at], b'{' | b'[') {
            let mut stream = serde_json::Deserializer::from_slice(&text[at..]).into_iter::<Value>();
            if let Some(Ok(value)) = stream.next() {
                at += stream.byte_offset();
                if value.as_array().is_none_or(|a| !a.is_empty()) {
                    values.push(value);
                }
                continue;
            }
        }
        at += 1;
    }
    values
}

/// The seeds as the bytes GitLab would send: compact, and pretty-printed.
fn seed_texts() -> &'static [Vec<u8>] {
    static TEXTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        seeds()
            .iter()
            .flat_map(|v| {
                [
                    serde_json::to_vec(v).expect("a value renders"),
                    serde_json::to_vec_pretty(v).expect("a value renders"),
                ]
            })
            .collect()
    })
}

/// The example policies of `deploy/examples`, loaded as `jobwarden run --policies` loads them.
pub fn example_policies() -> &'static [CompiledPolicy] {
    static POLICIES: OnceLock<Vec<CompiledPolicy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let loaded = load_manifests(&[support::repo_path("deploy/examples")]);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let policies: Vec<CompiledPolicy> = loaded
            .policies
            .into_iter()
            .map(|p| p.compiled.expect("the examples compile"))
            .collect();
        assert!(policies.len() >= 5);
        policies
    })
}

/// The jobs of the seed pages as records (what a policy fuzzed elsewhere is judged against).
pub fn seed_records(now: Timestamp) -> Vec<JobRecord> {
    let mut names = Names::default();
    seeds()
        .iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        })
        .filter_map(|v| serde_json::from_value::<JobWire>(v).ok())
        .map(|wire| JobRecord::from_wire(wire, now, &mut names))
        .collect()
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(None),
        4 => Just(Some(b"application/json".to_vec())),
        1 => prop::sample::select(&[
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/vnd.gitlab+json",
            "text/html; charset=utf-8",
            "text/plain",
            "",
            ";",
            "application/json\u{0}",
        ][..])
        .prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn headers_with(content_type: &Option<Vec<u8>>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type
        && let Ok(value) = HeaderValue::from_bytes(value)
    {
        headers.insert(CONTENT_TYPE, value);
    }
    headers
}

/// Looks at an error as the engine and the logs do.
fn describe(error: &GitLabError) {
    let _ = format!("{error} {error:?}");
    let _ = (
        error.kind(),
        error.status(),
        error.is_ambiguous(),
        error.is_not_found(),
        error.is_rate_limited(),
    );
}

/// Everything the client and the engine do with a body GitLab sent.
fn feed(body: &[u8], headers: &HeaderMap, now: Timestamp, log: &str) {
    let mut names = Names::default();
    let mut records = Vec::new();
    for endpoint in [Endpoint::LIST_PROJECT_JOBS, Endpoint::LIST_PIPELINE_JOBS] {
        match testing::decode_page::<JobWire>(endpoint, headers, body) {
            Ok(items) => {
                for item in items {
                    match item {
                        Ok(wire) => records.push(JobRecord::from_wire(wire, now, &mut names)),
                        Err(e) => describe(&e),
                    }
                }
            }
            Err(e) => describe(&e),
        }
    }
    let mut full_jobs = Vec::new();
    match testing::decode_page::<Job>(Endpoint::LIST_PIPELINE_BRIDGES, headers, body) {
        Ok(items) => full_jobs.extend(items.into_iter().filter_map(Result::ok)),
        Err(e) => describe(&e),
    }
    for endpoint in [Endpoint::GET_JOB, Endpoint::RETRY_JOB, Endpoint::PLAY_JOB] {
        match testing::decode_json::<Job>(endpoint, headers, body) {
            Ok(job) => full_jobs.push(job),
            Err(e) => describe(&e),
        }
    }
    for job in &full_jobs {
        let _ = job.has_artifacts_archive();
        let _ = serde_json::to_vec(job);
        let _ = format!("{} {:?}", job.status, job.status.is_completed());
        records.push(JobRecord::from_wire(JobWire::from(job), now, &mut names));
    }
    if let Err(e) = testing::decode_json::<AllowedAgents>(Endpoint::ALLOWED_AGENTS, headers, body) {
        describe(&e);
    }
    if let Err(e) = testing::decode_json::<Project>(Endpoint::GET_PROJECT, headers, body) {
        describe(&e);
    }
    for status in [400, 401, 403, 404, 409, 422, 429, 500, 502, 0, 99, 1000] {
        let message = testing::api_message(status, body);
        assert!(!message.is_empty(), "an error message is never empty");
    }
    for pair in records.windows(2) {
        let _ = pair[0].same_state(&pair[1]);
        let _ = format!("{:?}", pair[0]);
    }
    for policy in example_policies() {
        exercise_decide(policy, &records, now, log);
    }
    drop(records);
    names.prune();
}

fn any_log() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("ERROR: Job failed: exit code 137\nconnection reset by peer".to_owned()),
        ".{0,200}",
    ]
}

proptest! {
    #![proptest_config(support::config(4))]

    /// Seeds mutated byte by byte: flips, truncation, splicing, tokens, odd Unicode.
    #[test]
    fn job_json_byte_mutations(
        seed in any::<prop::sample::Index>(),
        ops in mutate::byte_ops(JSON_TOKENS, 4),
        content_type in content_type(),
        now in any_now(),
        log in any_log(),
    ) {
        let texts = seed_texts();
        let seed = &texts[seed.index(texts.len())];
        let partners: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        let body = mutate::apply_bytes(seed, &ops, &partners);
        let headers = headers_with(&content_type);
        bounded("job JSON (bytes)", &(String::from_utf8_lossy(&body), &ops), || {
            feed(&body, &headers, now, &log);
        })?;
    }

    /// Seeds mutated as JSON trees: values replaced by other types, edge numbers and
    /// timestamps, deep nesting, odd Unicode; members removed or repeated.
    #[test]
    fn job_json_structural_mutations(
        seed in any::<prop::sample::Index>(),
        ops in mutate::job_ops(6),
        now in any_now(),
        log in any_log(),
    ) {
        let seeds = seeds();
        let seed = &seeds[seed.index(seeds.len())];
        let body = mutate::apply_json(seed, &ops);
        let headers = headers_with(&None);
        bounded("job JSON (structure)", &(String::from_utf8_lossy(&body), &ops), || {
            feed(&body, &headers, now, &log);
        })?;
    }

    /// Bytes with no seed at all.
    #[test]
    fn job_json_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512), now in any_now()) {
        bounded("job JSON (arbitrary)", &body, || feed(&body, &HeaderMap::new(), now, ""))?;
    }

    /// Job log tails: what is kept of a streamed log, matched by the examples' log patterns.
    #[test]
    fn job_log_tails(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        odd in prop::sample::select(mutate::ODD_UNICODE),
        max in prop_oneof![0usize..8, 0usize..600, Just(64 * 1024)],
    ) {
        let mut chunks = chunks;
        chunks.push(odd.as_bytes().to_vec());
        bounded("job log tail", &(&chunks, max), || {
            let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let tail = testing::log_tail(&slices, max);
            assert!(tail.chars().count() <= max, "the tail keeps at most {max} bytes' worth");
            for policy in example_policies() {
                for rule in &policy.rules {
                    if let Some(pattern) = &rule.conditions.log_pattern {
                        let _ = pattern.is_match(&tail);
                    }
                }
            }
        })?;
    }
}

/// The seeds are what the tests think they are: every seed document contributes, and the job
/// examples decode (so mutations start from inputs that reach the decoders' depths).
#[test]
fn seeds_decode() {
    let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let records = seed_records(now);
    assert!(records.len() >= 40, "{} job records", records.len());
    let pages = seeds().iter().filter(|v| v.is_array()).count();
    assert!(pages >= 12, "{pages} pages");
}

/// The mutations keep reaching past the JSON syntax: a share of the mutated inputs still
/// decodes into job records (a fuzzer whose every input is refused at the first byte tests
/// nothing). Deterministic: the same inputs on every run.
#[test]
fn mutations_reach_the_decoders() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let texts = seed_texts();
    let partners: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
    let decoded = |body: &[u8]| {
        testing::decode_page::<JobWire>(Endpoint::LIST_PROJECT_JOBS, &HeaderMap::new(), body)
            .is_ok_and(|items| items.iter().any(Result::is_ok))
            || testing::decode_json::<Job>(Endpoint::GET_JOB, &HeaderMap::new(), body).is_ok()
    };
    let bytes = (
        any::<prop::sample::Index>(),
        mutate::byte_ops(JSON_TOKENS, 4),
    );
    let structure = (any::<prop::sample::Index>(), mutate::job_ops(6));
    let (mut by_bytes, mut by_structure) = (0, 0);
    for _ in 0..500 {
        let (seed, ops) = bytes.new_tree(&mut runner).unwrap().current();
        let body = mutate::apply_bytes(&texts[seed.index(texts.len())], &ops, &partners);
        by_bytes += usize::from(decoded(&body));
        let (seed, ops) = structure.new_tree(&mut runner).unwrap().current();
        let body = mutate::apply_json(&seeds()[seed.index(seeds().len())], &ops);
        by_structure += usize::from(decoded(&body));
    }
    assert!(
        by_bytes >= 25,
        "{by_bytes} of 500 byte-mutated inputs decode"
    );
    assert!(
        by_structure >= 70,
        "{by_structure} of 500 edited trees decode"
    );
}
