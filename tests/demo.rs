//! `jobwarden demo` as a newcomer sees it: the binary run for a few seconds, its output read.
//! The banner names which policy watches which projects, a header stands over the action
//! lines, every action is one line (no log line repeats it), no two policies act on the same
//! job, and the summary ends the story.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the demo printed.
struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `jobwarden demo --for <seconds>s` with `args`, its settings all defaults (no
/// `JOBWARDEN_*` or `RUST_LOG` from the environment), metrics on a free port.
fn demo(seconds: u64, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobwarden"));
    command
        .args(["demo", "--for", &format!("{seconds}s")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JOBWARDEN_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("run jobwarden demo");
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("jobwarden demo --for {seconds}s still runs after {seconds}s + 60s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("output");
    assert!(output.status.success(), "exit {:?}", output.status);
    Output {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One action line: its columns (time, policy, project, job, name, action, outcome, why),
/// separated by two spaces or more.
struct ActionLine {
    policy: String,
    job: u64,
    action: String,
    outcome: String,
}

/// The action lines: those after the header that start with a time (`+h:mm:ss`).
fn action_lines(stdout: &str) -> Vec<ActionLine> {
    let columns = regex::Regex::new(r"\s{2,}").expect("regex");
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("sim time"))
        .filter(|l| l.starts_with('+'))
        .map(|l| {
            let cells: Vec<&str> = columns.split(l).collect();
            assert!(
                cells.len() >= 7,
                "an action line of 7 columns or more: {l:?}"
            );
            ActionLine {
                policy: cells[1].to_owned(),
                job: cells[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("a job id: {l:?}")),
                action: cells[5].to_owned(),
                outcome: cells[6].to_owned(),
            }
        })
        .collect()
}

/// The example policies the demo embeds: name → the projects it names.
fn example_projects() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (file, text) in jobwarden::commands::demo::EXAMPLES {
        let loaded = jobwarden::source::files::load_manifest_text(Path::new(file), text);
        assert!(loaded.errors.is_empty(), "{file}: {:?}", loaded.errors);
        for example in loaded.policies {
            out.insert(example.key().name, example.policy.spec.projects);
        }
    }
    out
}

/// The banner names each example with the projects it watches, and the fleet's other projects.
fn assert_banner_names_the_watched_projects(stdout: &str) {
    let examples = example_projects();
    let mut watched = BTreeSet::new();
    for (name, projects) in &examples {
        let listed = format!("  {name} ");
        let line = stdout.lines().find(|l| l.starts_with(&listed));
        let line = line.unwrap_or_else(|| panic!("no banner line for {name}:\n{stdout}"));
        assert!(
            line.contains(&projects.join(", ")),
            "{name} watches {projects:?}: {line}"
        );
        for project in projects {
            let id = project.trim_start_matches("fleet/project-");
            watched.insert(id.parse::<u64>().expect("a fleet project"));
        }
    }
    let fleet = u64::from(jobwarden::commands::demo::FLEET_PROJECTS);
    let unwatched: Vec<String> = (1..=fleet)
        .filter(|id| !watched.contains(id))
        .map(|id| id.to_string())
        .collect();
    if let [init @ .., last] = unwatched.as_slice() {
        let line = format!(
            "{} and {last} of the fleet are watched by none",
            init.join(", ")
        );
        assert!(stdout.contains(&line), "{line:?} in:\n{stdout}");
    }
}

/// No job is acted on (or previewed) by two policies, a retry's new job counting as the job it
/// retried.
fn assert_no_job_has_lines_of_two_policies(lines: &[ActionLine], stdout: &str) {
    let new_job = regex::Regex::new(r"new job (\d+)").expect("regex");
    let mut first_attempt: HashMap<u64, u64> = HashMap::new();
    let mut policies: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for l in lines {
        let first = first_attempt.get(&l.job).copied().unwrap_or(l.job);
        if let Some(new) = new_job.captures(&l.outcome) {
            first_attempt.insert(new[1].parse().expect("an id"), first);
        }
        policies.entry(first).or_default().insert(&l.policy);
    }
    let shared: Vec<_> = policies.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "jobs two policies acted on: {shared:?}\n{stdout}"
    );
}

#[test]
fn a_newcomer_sees_who_watches_what_a_header_and_one_line_per_action() {
    let Output { stdout, stderr } = demo(7, &[]);
    assert_banner_names_the_watched_projects(&stdout);

    // A header over the action lines, and one line per action: no log line repeats one.
    let header: Vec<usize> = stdout
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("sim time  policy"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(header.len(), 1, "one header:\n{stdout}");
    let first_action = stdout.lines().position(|l| l.starts_with('+'));
    assert!(
        first_action > Some(header[0]),
        "the header comes first:\n{stdout}"
    );
    assert!(!stderr.contains("INFO"), "no info log lines:\n{stderr}");
    let lines = action_lines(&stdout);
    assert!(!lines.is_empty(), "actions within 7 s:\n{stdout}");
    let mut seen = BTreeSet::new();
    for l in &lines {
        let key = (&l.policy, l.job, &l.action, &l.outcome);
        assert!(
            seen.insert(key),
            "one line per action: {key:?} twice:\n{stdout}"
        );
    }
    assert_no_job_has_lines_of_two_policies(&lines, &stdout);

    // The summary ends the story.
    let summary = stdout.split("\nSummary: ").nth(1).expect("a summary");
    let span = regex::Regex::new(r"^\d+s of demo, [^\n]+ on the simulated clock\n").expect("regex");
    assert!(span.is_match(summary), "{summary}");
    assert!(summary.contains("\nCarried out: "), "{summary}");
    assert!(
        summary.trim_end().ends_with("none undid another's work."),
        "{summary}"
    );
}

#[test]
fn the_demo_runs_a_users_own_policies() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("mine.yaml"),
        "apiVersion: jobwarden.dev/v1alpha1
kind: JobPolicy
metadata: {name: retry-failed, namespace: team-a}
spec:
  gitlab: {url: http://127.0.0.1:8080, tokenSecretRef: {name: gitlab-token, key: token}}
  projects: [\"2\", \"fleet/project-3\"]
  rules:
    - name: retry-any
      match: {statuses: [failed]}
      retry: {limit: 1}
",
    )
    .expect("write a policy");
    let path = dir.path().to_str().expect("a UTF-8 path");
    let Output { stdout, .. } = demo(3, &["--policies", path]);
    let source = format!(
        "The policies of {} (namespace team-a)",
        Path::new(path).display()
    );
    assert!(stdout.contains(&source), "{source:?} in:\n{stdout}");
    assert!(
        stdout.contains("  retry-failed  2, fleet/project-3  retry (1 rule)"),
        "{stdout}"
    );
    assert!(stdout.contains("\nsim time  policy"), "{stdout}");
    let lines = action_lines(&stdout);
    assert!(lines.iter().all(|l| l.policy == "retry-failed"), "{stdout}");
    assert!(stdout.contains("\nSummary: 3s of demo"), "{stdout}");
}
