//! Job logs. Fleet jobs get a runner-style log written from their state when it is read (a
//! running job's log stops mid-way, a finished one ends with the verdict); tests can give any
//! text instead.

use crate::sim::state::{Job, Pipeline, Trace, runner};
use crate::sim::status::Status;
use std::fmt::Write as _;

/// The log of a job as `GET …/trace` returns it (empty when there is none).
pub(crate) fn render(job: &Job, pipeline: Option<&Pipeline>) -> String {
    match &job.trace {
        None => String::new(),
        Some(Trace::Custom(text)) => text.clone(),
        Some(Trace::Generated) => generated(job, pipeline),
    }
}

fn generated(job: &Job, pipeline: Option<&Pipeline>) -> String {
    let mut log = String::with_capacity(1024);
    let runner = job.runner_id.and_then(runner);
    let _ = writeln!(log, "Running with gitlab-runner 17.5.0 (8ec04662)");
    if let Some(r) = runner {
        let _ = writeln!(
            log,
            "  on {} {}, system ID: {}",
            r.description,
            short_token(r.id),
            r.system_id
        );
    }
    let _ = writeln!(log, "Preparing the \"docker\" executor");
    let _ = writeln!(log, "Using Docker executor with image ruby:3.3 ...");
    let _ = writeln!(log, "Getting source from Git repository");
    let _ = writeln!(log, "Fetching changes with git depth set to 20...");
    if let Some(p) = pipeline {
        let short = p.commit.sha.get(..8).unwrap_or(&p.commit.sha);
        let _ = writeln!(
            log,
            "Checking out {short} as detached HEAD (ref is {})...",
            p.git_ref
        );
    }
    let _ = writeln!(log, "Executing \"step_script\" stage of the job script");
    let _ = writeln!(log, "$ {}", command_for(&job.name));
    for line in output_for(&job.name) {
        let _ = writeln!(log, "{line}");
    }
    match job.status {
        Status::Success => {
            let _ = writeln!(
                log,
                "Cleaning up project directory and file based variables"
            );
            let _ = writeln!(log, "Job succeeded");
        }
        Status::Failed => {
            let reason = job.failure_reason.as_deref().unwrap_or("unknown_failure");
            let verdict = match reason {
                "script_failure" => "ERROR: Job failed: exit code 1".to_owned(),
                "runner_system_failure" => {
                    "ERROR: Job failed (system failure): prepare environment: exit status 1"
                        .to_owned()
                }
                "job_execution_timeout" => {
                    "ERROR: Job failed: execution took longer than 1h0m0s seconds".to_owned()
                }
                other => format!("ERROR: Job failed: {other}"),
            };
            let _ = writeln!(log, "{verdict}");
        }
        Status::Canceled | Status::Canceling => {
            let _ = writeln!(log, "ERROR: Job failed: canceled");
        }
        _ => {}
    }
    log
}

fn short_token(runner_id: u64) -> String {
    format!("{:08x}", crate::sim::state::mix64(runner_id) as u32)
}

fn command_for(name: &str) -> &'static str {
    if name.starts_with("rspec") {
        "bundle exec rspec --format progress"
    } else if name == "lint" {
        "bundle exec rubocop"
    } else if name == "jest" {
        "yarn jest --ci"
    } else if name.starts_with("deploy") {
        "./bin/deploy staging"
    } else if name == "release" {
        "./bin/release"
    } else if name == "gpu-tests" {
        "python -m pytest tests/gpu"
    } else {
        "make build"
    }
}

fn output_for(name: &str) -> &'static [&'static str] {
    if name.starts_with("rspec") {
        &[
            "Randomized with seed 4711",
            "........................F..",
            "Finished in 4 minutes 2 seconds",
        ]
    } else if name == "lint" {
        &[
            "Inspecting 412 files",
            "412 files inspected, no offenses detected",
        ]
    } else {
        &["step 1/3", "step 2/3", "step 3/3"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::clock::SimTime;
    use crate::sim::machine;

    #[test]
    fn generated_logs_follow_the_status() {
        let mut job = machine::tests::job(Status::Running);
        job.trace = Some(Trace::Generated);
        let running = render(&job, None);
        assert!(running.contains("$ bundle exec rspec"));
        assert!(!running.contains("Job succeeded"));
        machine::drop_job(&mut job, SimTime(1), "script_failure");
        assert!(render(&job, None).ends_with("ERROR: Job failed: exit code 1\n"));
        job.trace = Some(Trace::Custom("hello\n".into()));
        assert_eq!(render(&job, None), "hello\n");
        job.trace = None;
        assert_eq!(render(&job, None), "");
    }
}
