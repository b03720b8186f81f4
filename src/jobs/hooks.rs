//! Running a job's shell commands: hooks (`before`, `after`, `failure`, `finally`) and the
//! notification command.
//!
//! Each runs as `sh -c COMMAND` in its own process group, standard input from /dev/null (or
//! the given bytes), standard output and error captured together, with the job's environment
//! ([`HookEnv`]) added. A command that outlives its timeout gets SIGTERM for its whole process
//! group, then SIGKILL two seconds later, and counts as failed. A command killed by a signal
//! has no exit code; it failed too. When tresor is asked to stop (SIGINT, SIGTERM, SIGHUP) while
//! a hook runs, the hook's group is ended the same way and the step fails as interrupted.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a command learns about the run from its environment.
#[derive(Clone, Debug, Default)]
pub struct HookEnv {
    /// `TRESOR_JOB`: the job's name.
    pub job: String,
    /// `TRESOR_STEP`: the hook's kind (`before`, `after`, `failure`, `finally`, `notify`).
    pub step: String,
    /// `TRESOR_SOURCE`: for a source's hook, the source (a path as written, or a command
    /// stream's name); empty for a job's hook.
    pub source: String,
    /// `TRESOR_RESULT`: `running` (before), else the run's result so far (`ok`, `warning`,
    /// `failed`).
    pub result: String,
    /// `TRESOR_FAILED_STEP`: the first step that failed (empty when none did).
    pub failed_step: String,
    /// `TRESOR_EXIT_CODE`: the run's exit code so far.
    pub exit_code: u8,
    /// `TRESOR_SNAPSHOT`: the id of the snapshot written (empty when none was).
    pub snapshot: String,
    /// `TRESOR_LOG_TAIL`: the last lines of the run's log.
    pub log_tail: String,
}

impl HookEnv {
    /// `before hook`, or for a source's hook `before hook of /var/www`.
    fn what(&self) -> String {
        if self.source.is_empty() {
            format!("{} hook", self.step)
        } else {
            format!("{} hook of {}", self.step, self.source)
        }
    }
}

/// Bytes of a command's output kept (the end of it).
const MAX_OUTPUT: usize = 64 << 10;

/// What a finished command did.
#[derive(Debug)]
pub struct HookOutcome {
    /// Its output (stdout and stderr interleaved), at most [`MAX_OUTPUT`] bytes from its end.
    pub output: String,
    /// Seconds it ran.
    pub seconds: f64,
}

/// Runs `command` with `sh -c`, `env` in its environment and `stdin` as its input; an error
/// ([`Error::Hook`]) when it cannot start, exits non-zero, dies by a signal or runs past
/// `timeout`. The error's message ends with the command's output.
pub fn run(command: &str, env: &HookEnv, stdin: &[u8], timeout: Duration) -> Result<HookOutcome> {
    let started = Instant::now();
    let (reader, writer) =
        std::io::pipe().map_err(|e| Error::io("creating a pipe for a hook's output", e))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Error::io("creating a pipe for a hook's output", e))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(writer)
        .stderr(writer2)
        .env("TRESOR_JOB", &env.job)
        .env("TRESOR_STEP", &env.step)
        .env("TRESOR_SOURCE", &env.source)
        .env("TRESOR_RESULT", &env.result)
        .env("TRESOR_FAILED_STEP", &env.failed_step)
        .env("TRESOR_EXIT_CODE", env.exit_code.to_string())
        .env("TRESOR_SNAPSHOT", &env.snapshot)
        .env("TRESOR_LOG_TAIL", &env.log_tail)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Hook(format!("{} `{command}` could not start: {e}", env.what())))?;
    // The parent's copies of the write ends went into `cmd`; drop it so EOF comes with the
    // last child.
    drop(cmd);
    let collector = std::thread::spawn(move || tail_of(reader));
    if let Some(mut input) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = input.write_all(stdin);
    }
    let deadline = started + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("waiting for hook `{command}`"), e)),
        }
        if let Some(signal) = crate::interrupt::received() {
            // Ctrl-C or SIGTERM reaches tresor, not the hook's own process group: end it.
            end_group(&mut child);
            let _ = child.wait();
            return Err(Error::Interrupted { signal });
        }
        if Instant::now() >= deadline {
            timed_out = true;
            end_group(&mut child);
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A background process of the hook may keep the pipe open; its output is not waited for
    // past a short grace.
    let output = join_with_grace(collector, Duration::from_secs(2));
    let seconds = started.elapsed().as_secs_f64();
    let with_output = |what: String| {
        if output.trim().is_empty() {
            what
        } else {
            format!("{what}; its output ends: {}", last_lines(&output, 5))
        }
    };
    if timed_out {
        return Err(Error::Hook(with_output(format!(
            "{} `{command}` ran past its timeout of {} s and was stopped",
            env.what(),
            timeout.as_secs()
        ))));
    }
    match status {
        Some(st) if st.success() => Ok(HookOutcome { output, seconds }),
        Some(st) => Err(Error::Hook(with_output(format!(
            "{} `{command}` {}",
            env.what(),
            crate::source::describe_status(&st)
        )))),
        None => Err(Error::Hook(format!(
            "{} `{command}`: its exit status is unknown",
            env.what()
        ))),
    }
}

/// SIGTERM to the command's process group, SIGKILL after two seconds.
fn end_group(child: &mut std::process::Child) {
    use rustix::process::{Pid, Signal, kill_process_group};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        let _ = child.kill();
        return;
    };
    let _ = kill_process_group(pid, Signal::TERM);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_process_group(pid, Signal::KILL);
}

fn tail_of(mut r: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
        }
    }
    if kept.len() > MAX_OUTPUT {
        kept.drain(..kept.len() - MAX_OUTPUT);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn join_with_grace(h: std::thread::JoinHandle<String>, grace: Duration) -> String {
    let until = Instant::now() + grace;
    while !h.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if h.is_finished() {
        h.join().unwrap_or_default()
    } else {
        String::from("(output still open in a background process; not collected)")
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv {
            job: "web".into(),
            step: "before".into(),
            result: "running".into(),
            ..Default::default()
        }
    }

    #[test]
    fn environment_output_and_input() {
        let o = run(
            "echo \"$TRESOR_JOB $TRESOR_STEP $TRESOR_RESULT\"; echo err >&2; cat",
            &env(),
            b"from stdin",
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(o.output.contains("web before running"), "{}", o.output);
        assert!(o.output.contains("err") && o.output.contains("from stdin"));
    }

    #[test]
    fn failures_and_timeouts_are_errors() {
        let e = run("echo why; exit 4", &env(), b"", Duration::from_secs(10)).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("exit") && m.contains('4') && m.contains("why"),
            "{m}"
        );
        let t = Instant::now();
        let e = run("sleep 30", &env(), b"", Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // A hook that leaves a background process holding the pipe still returns.
        let t = Instant::now();
        run(
            "sleep 30 & echo started",
            &env(),
            b"",
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
