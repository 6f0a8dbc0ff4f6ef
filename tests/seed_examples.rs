//! Every JSON example of the four seed documents (GitLab's Jobs API page in four versions and
//! renderings) decodes into the client's models.
//!
//! The seeds are awkward on purpose: 000 is Markdown, 001 is the same Markdown squashed onto one
//! line, 002 is a blame view whose JSON blocks are interleaved with change-date lines, and 003 is
//! rendered text without code fences (where one object even repeats a key). The extractor below
//! therefore strips blame lines and then finds every balanced JSON value in the text.

use jobwarden::gitlab::{AllowedAgents, Job, JobStatus, JobVariable};
use serde_json::Value;
use std::path::Path;

const SEEDS: [&str; 4] = [
    "000_1faf019893ded073.txt",
    "001_77b598332ba4553e.txt",
    "002_be12c88584aff912.txt",
    "003_0c26834081715bbb.txt",
];

fn read_seed(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seeds")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Drops the change-date lines of a blame view (`2020-08-04 02:10:16 -04:00`).
fn strip_blame_lines(text: &str) -> String {
    let blame = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}$")
        .expect("a valid regex");
    text.lines()
        .filter(|line| !blame.is_match(line.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level JSON object or array in `text`: at each `{` or `[`, try to parse one value;
/// on success skip past it, otherwise move on by one character.
fn json_values(text: &str) -> Vec<Value> {
    let mut values = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let byte = text.as_bytes()[i];
        if byte == b'{' || byte == b'[' {
            let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
            if let Some(Ok(value)) = stream.next() {
                i += stream.byte_offset();
                values.push(value);
                continue;
            }
        }
        i += 1;
    }
    values
}

/// The bodies of the ```json fences (Markdown seeds).
fn fenced_json_blocks(text: &str) -> Vec<String> {
    text.split("```json")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

fn is_job_like(value: &Value) -> bool {
    value.get("id").is_some_and(Value::is_u64)
        && value.get("status").is_some_and(Value::is_string)
        && value.get("name").is_some_and(Value::is_string)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Single job objects (get, cancel, retry, erase, play, keep, `GET /job`).
    jobs: usize,
    /// Arrays of jobs (the three listings).
    job_lists: usize,
    /// Jobs inside those arrays.
    listed_jobs: usize,
    /// `GET /job/allowed_agents` answers.
    allowed_agents: usize,
    /// `job_variables_attributes` request bodies.
    play_bodies: usize,
}

/// Decodes every example of one seed, failing on any job-like value that does not decode.
fn decode_seed(name: &str) -> (Tally, Vec<Job>) {
    let text = strip_blame_lines(&read_seed(name));
    let mut tally = Tally::default();
    let mut jobs = Vec::new();
    for value in json_values(&text) {
        // Decoding goes through `Value`, as a real response body that repeats a key would keep
        // the last occurrence.
        if is_job_like(&value) {
            let job: Job = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{name}: job example does not decode: {e}\n{value:#}"));
            tally.jobs += 1;
            jobs.push(job);
        } else if let Some(items) = value.as_array().filter(|a| a.iter().any(is_job_like)) {
            let list: Vec<Job> = serde_json::from_value(value.clone()).unwrap_or_else(|e| {
                panic!("{name}: job list example does not decode: {e}\n{value:#}")
            });
            assert_eq!(list.len(), items.len());
            tally.job_lists += 1;
            tally.listed_jobs += list.len();
            jobs.extend(list);
        } else if value.get("allowed_agents").is_some() {
            let agents: AllowedAgents = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{name}: allowed agents do not decode: {e}"));
            assert!(!agents.allowed_agents.is_empty());
            tally.allowed_agents += 1;
        } else if let Some(vars) = value.get("job_variables_attributes") {
            let vars: Vec<JobVariable> = serde_json::from_value(vars.clone())
                .unwrap_or_else(|e| panic!("{name}: play variables do not decode: {e}"));
            assert!(!vars.is_empty());
            tally.play_bodies += 1;
        } else {
            // What is left must be trivia such as the `[]` of `scope[]=…` in a curl line.
            assert!(
                value.as_array().is_some_and(Vec::is_empty),
                "{name}: unclassified JSON example: {value}"
            );
        }
    }
    (tally, jobs)
}

#[test]
fn every_fenced_json_block_is_valid_json() {
    for name in &SEEDS[..3] {
        let text = strip_blame_lines(&read_seed(name));
        let blocks = fenced_json_blocks(&text);
        assert!(!blocks.is_empty(), "{name} has no ```json block");
        for (i, block) in blocks.iter().enumerate() {
            if let Err(e) = serde_json::from_str::<Value>(block) {
                panic!("{name}: ```json block {i} is not JSON: {e}\n{block}");
            }
        }
    }
}

#[test]
fn every_seed_example_decodes() {
    let expected = [
        // 000 (GitLab ~14.7): 3 listings, GET /job, allowed agents, get, cancel, retry, erase,
        // play.
        Tally {
            jobs: 6,
            job_lists: 3,
            listed_jobs: 5,
            allowed_agents: 1,
            play_bodies: 0,
        },
        // 001 (GitLab 15–16): the same plus the play variables body.
        Tally {
            jobs: 6,
            job_lists: 3,
            listed_jobs: 5,
            allowed_agents: 1,
            play_bodies: 1,
        },
        // 002 (blame view of the 2022 page).
        Tally {
            jobs: 6,
            job_lists: 3,
            listed_jobs: 5,
            allowed_agents: 1,
            play_bodies: 0,
        },
        // 003 (GitLab 12–13, rendered): no GET /job or agents, but keep artifacts.
        Tally {
            jobs: 6,
            job_lists: 3,
            listed_jobs: 5,
            allowed_agents: 0,
            play_bodies: 0,
        },
    ];
    for (name, want) in SEEDS.iter().zip(expected) {
        let (tally, jobs) = decode_seed(name);
        assert!(
            tally.jobs + tally.listed_jobs > 0,
            "{name}: nothing decoded"
        );
        assert_eq!(tally, want, "{name}");
        assert!(jobs.iter().all(|j| j.id > 0 && !j.name.is_empty()));
    }
}

#[test]
fn decoded_examples_carry_their_fields() {
    let (_, jobs) = decode_seed(SEEDS[1]);
    let teaspoon = jobs
        .iter()
        .find(|j| j.id == 7 && j.name == "teaspoon" && j.downstream_pipeline.is_none())
        .expect("the teaspoon job of the project list");
    assert_eq!(teaspoon.status, JobStatus::Failed);
    assert_eq!(teaspoon.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(teaspoon.pipeline.id, 6);
    assert!(teaspoon.has_artifacts_archive());
    assert_eq!(teaspoon.tag_list, ["docker runner", "ubuntu18"]);
    assert_eq!(
        teaspoon
            .project
            .as_ref()
            .and_then(|p| p.ci_job_token_scope_enabled),
        Some(false)
    );
    assert_eq!(teaspoon.duration, Some(0.173));

    let bridge = jobs
        .iter()
        .find(|j| j.downstream_pipeline.is_some())
        .expect("the bridge example");
    assert_eq!(bridge.downstream_pipeline.as_ref().map(|p| p.id), Some(5));
    assert_eq!(bridge.status, JobStatus::Pending);

    let stuck = jobs
        .iter()
        .find(|j| j.failure_reason.as_deref() == Some("stuck_or_timeout_failure"))
        .expect("the stuck job of the pipeline list");
    assert_eq!(stuck.queued_duration, Some(0.023));

    // The action examples leave out the pipeline; it decodes as the default.
    let retried = jobs
        .iter()
        .find(|j| j.name == "rubocop" && j.status == JobStatus::Pending)
        .expect("the retry example");
    assert_eq!(retried.pipeline.id, 0);
    assert!(retried.started_at.is_none());
}

#[test]
fn the_rendered_seed_repeats_a_key_and_the_last_one_wins() {
    let (_, jobs) = decode_seed(SEEDS[3]);
    // In 003 the first listed job has `"artifacts": [...4 entries...]` and later `"artifacts": []`.
    let first = jobs.iter().find(|j| j.id == 7).expect("job 7");
    assert!(first.artifacts.is_empty());
    assert!(first.artifacts_file.is_some());
}
