//! Child processes of the bench, and what /proc says about them.
//!
//! Every child is killed (SIGKILL) and reaped when its [`Child`] guard is dropped, including
//! when the bench panics, and the kernel kills it if the bench itself dies first
//! (`PR_SET_PDEATHSIG`), so no simulator, jobwarden or Python process outlives a run.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::Instant;

/// Which stream of a child a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a child wrote.
#[derive(Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

/// A running child: killed and reaped on drop. Both of its output streams are copied to
/// `<log_dir>/<name>.log` and forwarded line by line through [`Child::lines`].
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
    lines: Receiver<Line>,
}

impl Child {
    /// Starts `command` with piped output; `name` names the log file and error messages.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Result<Child, String> {
        let parent = std::process::id();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only makes two
        // async-signal-safe system calls.
        // `pre_exec` is unsafe by nature; the bench needs it so that its children die with it.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    libc::_exit(1); // the bench died before the signal was armed
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {name}: {err}"))?;
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).map_err(|err| format!("{}: {err}", log.display()))?;
        let (tx, lines) = channel();
        forward(child.stdout.take(), Stream::Stdout, &file, &tx)?;
        forward(child.stderr.take(), Stream::Stderr, &file, &tx)?;
        Ok(Child {
            name: name.to_owned(),
            child,
            log,
            started,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The lines the child writes, in order per stream.
    pub fn lines(&self) -> &Receiver<Line> {
        &self.lines
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(err.to_string()),
        }
    }

    /// An error message about this child, with the end of its log.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "{}: {what}\n--- last lines of {} ---\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, 30)
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a child's stream to the shared log file and the line channel, on its own thread.
fn forward(
    stream: Option<impl Read + Send + 'static>,
    kind: Stream,
    file: &File,
    tx: &Sender<Line>,
) -> Result<(), String> {
    let Some(stream) = stream else {
        return Err("child stream not piped".to_owned());
    };
    let mut file = file.try_clone().map_err(|err| err.to_string())?;
    let tx = tx.clone();
    thread::spawn(move || {
        for text in BufReader::new(stream).lines().map_while(Result::ok) {
            // One write per line, so the two streams interleave by whole lines.
            let _ = file.write_all(format!("{text}\n").as_bytes());
            // Nobody listening any more is fine: the log file still gets the line.
            let _ = tx.send(Line { stream: kind, text });
        }
    });
    Ok(())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// User plus system CPU seconds a process has used so far (`/proc/PID/stat`, every thread,
/// living or gone; the kernel counts in clock ticks, usually 10 ms).
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("/proc/{pid}/stat: {err}"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

/// The resolution of [`cpu_seconds`]: one clock tick.
pub fn cpu_tick() -> f64 {
    1.0 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)] // no safe wrapper in the standard library; only the bench reads it
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Peak resident set size in MiB (`VmHWM` of `/proc/PID/status`).
pub fn peak_rss_mib(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("/proc/{pid}/status: {err}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
}
