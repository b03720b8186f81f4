//! Child commands (`--command`): running one in its own process group and storing its output,
//! checking how it ended, and [`RunningCommands`], the children running now, so that a backup
//! that stops early ends them.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::format::chunker::ChunkerSpec;
use crate::source::{Item, Sink, emit_chunks};

/// Describes how a child process ended.
pub fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

/// The `--command` children of one backup that are running now, so that a backup that stops
/// early (a signal, an error elsewhere) ends them instead of leaving a dump running with nobody
/// reading it. Once [`RunningCommands::stop`] was called, a command started later is ended at
/// once.
#[derive(Default)]
pub struct RunningCommands {
    state: std::sync::Mutex<(bool, Vec<u32>)>,
}

impl RunningCommands {
    /// Records a started command (its process group is its pid); ends it at once if the
    /// backup already stopped.
    pub(super) fn started(&self, pid: u32) {
        let stopped = match self.state.lock() {
            Ok(mut s) => {
                s.1.push(pid);
                s.0
            }
            Err(_) => false,
        };
        if stopped {
            terminate_group(pid);
        }
    }

    pub(super) fn ended(&self, pid: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.1.retain(|p| *p != pid);
        }
    }

    /// Sends SIGTERM to the process group of every command still running, and to any started
    /// from now on.
    pub fn stop(&self) {
        let pids = match self.state.lock() {
            Ok(mut s) => {
                s.0 = true;
                s.1.clone()
            }
            Err(_) => Vec::new(),
        };
        for pid in pids {
            terminate_group(pid);
        }
    }
}

fn terminate_group(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::TERM);
    }
}

/// Runs `command` with `sh -c` and stores its standard output as one file: `start`, its chunks,
/// its end, then [`Item::CommandOk`]; a command that cannot be started or read, or that fails,
/// yields [`Item::Fatal`] instead.
pub(super) fn emit_command(
    command: &str,
    start: Item,
    chunker: &ChunkerSpec,
    commands: &RunningCommands,
    sink: &mut Sink<'_>,
) -> bool {
    // Its own process group: when the backup stops early, the whole pipeline the
    // command runs (`pg_dump | gzip`, a `sleep`) is ended with it.
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return sink(Item::Fatal(Error::CommandFailed {
                command: command.to_owned(),
                status: format!("could not be started: {e}"),
            }));
        }
    };
    commands.started(child.id());
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return sink(Item::Fatal(Error::CommandFailed {
            command: command.to_owned(),
            status: "has no output pipe".into(),
        }));
    };
    if !sink(start) {
        let _ = child.kill();
        let _ = child.wait();
        commands.ended(child.id());
        return false;
    }
    let read = emit_chunks(stdout, chunker, sink);
    if !matches!(read, Ok(true)) {
        let _ = child.kill();
    }
    let status = child.wait();
    commands.ended(child.id());
    match (read, status) {
        (Ok(false), _) => false,
        (Err(e), _) => sink(Item::Fatal(Error::CommandFailed {
            command: command.to_owned(),
            status: format!("output could not be read: {e}"),
        })),
        (Ok(true), Err(e)) => sink(Item::Fatal(Error::CommandFailed {
            command: command.to_owned(),
            status: format!("could not be waited for: {e}"),
        })),
        (Ok(true), Ok(st)) if st.success() => {
            sink(Item::FileEnd { error: None }) && sink(Item::CommandOk { status: 0 })
        }
        (Ok(true), Ok(st)) => sink(Item::Fatal(Error::CommandFailed {
            command: command.to_owned(),
            status: describe_status(&st),
        })),
    }
}
