//! Where a repository password comes from when nobody types it: the first line of a file, or
//! of a command's output (`sh -c`). The CLI's `--password-file`/`--password-command` and the
//! jobs of a configuration file both read it here. The bytes live in [`Zeroizing`] buffers.

#![forbid(unsafe_code)]

use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The first line of `bytes`, without its `\n` or `\r\n`.
pub fn first_line(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Zeroizing::new(line.to_vec())
}

/// The first line of `file`; `what` names it in messages ("password", "source password").
pub fn from_file(file: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(
        std::fs::read(file)
            .map_err(|e| Error::io(format!("reading {what} file {}", file.display()), e))?,
    );
    non_empty(first_line(&bytes))
}

/// The first line of what `command` (run with `sh -c`, its stderr passed through) prints; a
/// command that fails is an error naming it and how it ended.
pub fn from_command(command: &str) -> Result<Zeroizing<Vec<u8>>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running password command `{command}`"), e))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(Error::Password(format!(
            "password command `{command}` {}",
            crate::source::describe_status(&out.status)
        )));
    }
    non_empty(first_line(&stdout))
}

/// `p`, unless it is empty (an empty password is refused).
pub fn non_empty(p: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>> {
    if p.is_empty() {
        return Err(Error::Password("the password is empty".into()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_of_a_file_and_of_a_command() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pw");
        std::fs::write(&f, "secret\r\nsecond line\n").unwrap();
        assert_eq!(&from_file(&f, "password").unwrap()[..], b"secret");
        std::fs::write(&f, "\nx").unwrap();
        assert!(matches!(from_file(&f, "password"), Err(Error::Password(_))));
        let gone = from_file(&d.path().join("nope"), "password").unwrap_err();
        assert!(gone.to_string().contains("reading password file"), "{gone}");
        assert_eq!(&from_command("printf 'abc\\ndef'").unwrap()[..], b"abc");
        let failed = from_command("exit 3").unwrap_err();
        assert!(failed.to_string().contains("`exit 3`"), "{failed}");
    }
}
