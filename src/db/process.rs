//! The child processes of the database engines (dumpers, loaders, `psql` sessions): found in
//! PATH or a given directory, started in their own process group with no prompt for a
//! password, their standard error captured on a thread so that a failure can say what the
//! tool said.

#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// At most this much of a tool's standard error is kept (the end of it).
const STDERR_KEEP: usize = 16 << 10;

/// A tool's standard error, read on its own thread until the tool closes it.
pub(crate) struct Stderr(Option<JoinHandle<Vec<u8>>>);

impl Stderr {
    /// Starts reading `child`'s standard error (it must be piped).
    pub(crate) fn capture(child: &mut Child) -> Stderr {
        let Some(mut err) = child.stderr.take() else {
            return Stderr(None);
        };
        let handle = std::thread::Builder::new()
            .name("tresor-db-stderr".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
                kept
            })
            .ok();
        Stderr(handle)
    }

    /// Everything the tool wrote (its end, when long), trimmed; waits for the tool to close it.
    pub(crate) fn text(mut self) -> String {
        let bytes = self
            .0
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let start = bytes.len().saturating_sub(STDERR_KEEP);
        String::from_utf8_lossy(&bytes[start..]).trim().to_string()
    }
}

/// A container the database tools run in: `RUNTIME exec -i NAME TOOL …` (docker, podman).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The container CLI (`docker`, `podman`, a path).
    pub runtime: String,
    /// The container.
    pub name: String,
}

impl Container {
    /// `name` run by `runtime`, or by `docker` when it is in PATH, else `podman`.
    pub fn new(name: &str, runtime: Option<&str>) -> Container {
        let runtime = runtime.map(str::to_string).unwrap_or_else(|| {
            let in_path = |n: &str| {
                std::env::var_os("PATH")
                    .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()))
            };
            if in_path("docker") || !in_path("podman") {
                "docker".into()
            } else {
                "podman".into()
            }
        });
        Container {
            runtime,
            name: name.to_string(),
        }
    }
}

/// The command for the first of `names` that exists (inside `container` when given: the
/// container's shell picks it; else from `bindir` or PATH), in its own process group.
pub(crate) fn tool_in(
    container: Option<&Container>,
    bindir: Option<&Path>,
    names: &[&str],
) -> Command {
    let Some(c) = container else {
        let dirs: Vec<std::path::PathBuf> = match bindir {
            Some(d) => vec![d.to_path_buf()],
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        let name = names
            .iter()
            .find(|n| dirs.iter().any(|d| d.join(n).is_file()))
            .or(names.first())
            .copied()
            .unwrap_or_default();
        return tool(bindir, name);
    };
    let mut cmd = Command::new(&c.runtime);
    cmd.args(["exec", "-i", &c.name]);
    match names {
        [one] => {
            cmd.arg(one);
        }
        _ => {
            let mut script = String::new();
            for n in names {
                script.push_str(&format!(
                    "command -v {n} >/dev/null 2>&1 && exec {n} \"$@\"; "
                ));
            }
            script.push_str("echo \"none of the tools is in the container\" >&2; exit 127");
            cmd.args(["sh", "-c", &script, "sh"]);
        }
    }
    cmd.process_group(0);
    cmd
}

/// The command for `tool`, from `bindir` when given (else PATH), in its own process group (a
/// Ctrl-C at the terminal reaches tresor, which ends the tool itself after cleaning up).
pub(crate) fn tool(bindir: Option<&Path>, name: &str) -> Command {
    let mut c = match bindir {
        Some(d) => Command::new(d.join(name)),
        None => Command::new(name),
    };
    c.process_group(0);
    c
}

/// Runs `cmd` to its end with no input; its standard output, or an error naming `what` and
/// what the tool wrote to standard error.
pub(crate) fn output(mut cmd: Command, what: &str) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out: Output = cmd
        .output()
        .map_err(|e| failed(what, start_error(&cmd, &e)))?;
    checked(out, what)
}

/// [`output`] with `input` (a script) on the tool's standard input.
pub(crate) fn output_fed(mut cmd: Command, input: &[u8], what: &str) -> Result<String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(what, start_error(&cmd, &e)))?;
    if let Some(mut i) = child.stdin.take() {
        // A tool that stops reading early fails with its own message, below.
        let _ = std::io::Write::write_all(&mut i, input);
    }
    let out = child.wait_with_output().map_err(|e| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        failed(what, format!("{program} could not be waited for: {e}"))
    })?;
    checked(out, what)
}

/// The standard output of a tool that ended, or the error of one that failed, with what it
/// wrote to standard error.
fn checked(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        return Err(failed(
            what,
            said(
                &crate::source::describe_status(&out.status),
                String::from_utf8_lossy(&out.stderr).trim(),
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why a tool could not be started, naming the program.
pub(crate) fn start_error(cmd: &Command, e: &std::io::Error) -> String {
    format!(
        "{} could not be started: {e}",
        cmd.get_program().to_string_lossy()
    )
}

/// A tool's end and its standard error in one line: `exited with status 1: pg_dump: error: …`.
pub(crate) fn said(status: &str, stderr: &str) -> String {
    if stderr.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {}", stderr.replace('\n', " | "))
    }
}

/// The lines of a dumper's standard error that report errors (`pg_dump: error: …`,
/// `mariadb-dump: Got error: …`), joined; `None` when it printed none. A dumper that exits 0
/// after printing one still fails its source: its dump may lack what the error was about.
pub(crate) fn printed_errors(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error:") || l.contains("got error") || l.starts_with("error")
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join(" | "))
}

/// A database error about `what`.
pub(crate) fn failed(what: &str, reason: String) -> Error {
    Error::Database {
        what: what.to_string(),
        reason,
    }
}

/// Ends a child and its process group, and reaps it.
pub(crate) fn end(child: &mut Child) {
    if let Some(p) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::TERM);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_from_warnings() {
        assert_eq!(
            printed_errors(
                "pg_dump: warning: circular keys
"
            ),
            None
        );
        assert_eq!(
            printed_errors(
                "pg_dump: warning: x
pg_dump: error: query failed
"
            )
            .as_deref(),
            Some("pg_dump: error: query failed")
        );
        assert!(printed_errors("mariadb-dump: Got error: 1044: Access denied").is_some());
        assert_eq!(printed_errors(""), None);
    }
}
