//! Property-based fuzzing (proptest, stable Rust) of every parser that takes data from GitLab or
//! from users: no input may make one panic or hang. Results may be `Ok` or `Err`; a panic in the
//! code under test fails the case, and so does a case slower than its bound.
//!
//! - `gitlab_json`: job JSON and job list pages, mutated from the seed documents' examples and
//!   `tests/fuzz/corpus/json` (bytes and trees), through the client's page and body decoders,
//!   into job records and the example policies' decisions; error bodies; job log tails.
//! - `manifests`: policy manifests, mutated from `deploy/examples`, `tests/fixtures/invalid` and
//!   `tests/fuzz/corpus/policy`, through the path of `jobwarden check` (text bounds, documents,
//!   YAML, schema, compile, Secret references), then judging jobs.
//! - `policy_strings`: durations, clock times, windows and time zones, globs, on any string.
//! - `headers`: `Link`, `X-Next-Page` and friends, `RateLimit-*`, `Retry-After`, any values.
//!
//! Knobs (environment variables):
//! - `JOBWARDEN_FUZZ_CASES=N`: cases per test (default 512; tests whose cases are costly run
//!   a fraction of N). `JOBWARDEN_FUZZ_CASES=20000 cargo test --release --test fuzz` is a
//!   long run.
//! - `JOBWARDEN_FUZZ_CASE_MS=N`: a case taking longer than N ms fails (default 5000); a case
//!   still running after 60 s is reported with its input and the process aborts.
//! - `PROPTEST_RNG_SEED=N`: replays a run (the inputs are random otherwise).
//!
//! A failure prints the smallest input proptest could shrink it to. Failures are not persisted
//! to files: each one found becomes a named regression test next to the code it broke.

#[path = "fuzz/gitlab_json.rs"]
mod gitlab_json;
#[path = "fuzz/headers.rs"]
mod headers;
#[path = "fuzz/manifests.rs"]
mod manifests;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/policy_strings.rs"]
mod policy_strings;
#[path = "fuzz/support.rs"]
mod support;
