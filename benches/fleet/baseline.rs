//! The python-gitlab baseline (`benches/baseline_cron.py`) in its own process; a run is one
//! pass of its loop, which ends with a JSON line on stdout.

use crate::process::{Child, Stream};
use crate::sim::TOKEN;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// The script, next to this bench.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/baseline_cron.py");

/// What one pass reported.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Pass {
    pub candidates: u64,
    pub retried: u64,
    pub errors: u64,
}

/// A running baseline loop.
pub struct Baseline {
    child: Child,
    passes: Vec<Pass>,
}

/// Fails early, with the fix, when python-gitlab is missing.
pub fn check_python(python: &str) -> Result<(), String> {
    let output = Command::new(python)
        .args(["-c", "import gitlab; print(gitlab.__version__)"])
        .output()
        .map_err(|err| format!("cannot run {python}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{python} cannot import python-gitlab ({}); install it with \
             `python3 -m pip install -r tests/python/requirements.txt`",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Baseline {
    /// Starts the loop over projects `1..=projects`, passes `interval_secs` apart, until
    /// dropped (it keeps running after the last pass measured, so /proc still has its figures).
    pub fn start(
        python: &str,
        url: &str,
        projects: u32,
        interval_secs: u64,
        finished_within_mins: Option<u64>,
        log_dir: &Path,
    ) -> Result<Baseline, String> {
        let list = log_dir.join("baseline-projects.txt");
        let ids: Vec<String> = (1..=projects).map(|p| p.to_string()).collect();
        std::fs::write(&list, ids.join("\n") + "\n")
            .map_err(|err| format!("{}: {err}", list.display()))?;
        let mut command = Command::new(python);
        command
            .arg(SCRIPT)
            .args(["--url", url, "--projects-file"])
            .arg(&list)
            .args(["--interval", &interval_secs.to_string()])
            .args([
                "--finished-within-minutes",
                &finished_within_mins.unwrap_or(0).to_string(),
            ])
            .env("GITLAB_TOKEN", TOKEN);
        let child = Child::spawn("baseline", command, log_dir)?;
        Ok(Baseline {
            child,
            passes: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The passes reported so far.
    pub fn passes(&self) -> &[Pass] {
        &self.passes
    }

    /// Waits until `passes` passes have ended.
    pub fn wait_passes(&mut self, passes: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.passes.len() < passes {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.child.lines().recv_timeout(left) {
                Ok(line) if line.stream == Stream::Stdout => {
                    let pass = serde_json::from_str(&line.text).map_err(|err| {
                        self.child
                            .failure(&format!("unexpected output {:?}: {err}", line.text))
                    })?;
                    self.passes.push(pass);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.child.failure(&format!(
                        "pass {passes} did not end within {} s",
                        timeout.as_secs()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.child.failure("exited early"));
                }
            }
        }
        Ok(())
    }
}
