//! `tresor schedule`: a systemd service + timer pair, or a cron.d file, that runs one job daily.
//!
//! systemd: `tresor-JOB.service` (oneshot, `Nice=10`, `IOSchedulingClass=idle`) and
//! `tresor-JOB.timer` (`OnCalendar=*-*-* HH:MM:00`, `Persistent=true` so a run missed while
//! the machine was off happens at boot, `RandomizedDelaySec=` on request). cron:
//! `/etc/cron.d/tresor-JOB` with one line (cron has no randomized delay: a `sleep` of a random
//! number of seconds up to it comes first). Files are written crash-safely, 0644.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How the job is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A systemd timer.
    Systemd,
    /// A cron.d file.
    Cron,
}

impl Kind {
    /// The system directory its files go to.
    pub fn system_dir(self) -> PathBuf {
        match self {
            Kind::Systemd => PathBuf::from("/etc/systemd/system"),
            Kind::Cron => PathBuf::from("/etc/cron.d"),
        }
    }
}

/// A schedule to install.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The job.
    pub job: String,
    /// Hour and minute (local time).
    pub at: (u8, u8),
    /// Up to this many seconds of random delay.
    pub randomized_delay: Option<u64>,
    /// The tresor binary to run.
    pub binary: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The user cron runs it as.
    pub user: String,
}

/// `02:30` → (2, 30).
pub fn parse_at(s: &str) -> Result<(u8, u8)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "bad time {s:?}: give HH:MM in 24-hour time, like 02:30"
        ))
    };
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let h: u8 = h.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// The names of the files a schedule of `job` consists of.
pub fn file_names(job: &str, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Systemd => vec![
            format!("tresor-{job}.service"),
            format!("tresor-{job}.timer"),
        ],
        // cron.d ignores names with a dot.
        Kind::Cron => vec![format!("tresor-{job}")],
    }
}

/// Quotes `p` for a systemd `ExecStart=` or a shell line when it needs it.
fn quoted(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The files (name, content) of `s`.
pub fn render(s: &Schedule, kind: Kind) -> Vec<(String, String)> {
    let names = file_names(&s.job, kind);
    let command = format!(
        "{} --config {} run {}",
        quoted(&s.binary),
        quoted(&s.config),
        s.job
    );
    match kind {
        Kind::Systemd => {
            let service = format!(
                "# Installed by `tresor schedule install {job}`.\n\
                 [Unit]\n\
                 Description=tresor backup job {job}\n\
                 Wants=network-online.target\n\
                 After=network-online.target\n\
                 \n\
                 [Service]\n\
                 Type=oneshot\n\
                 ExecStart={command}\n\
                 Nice=10\n\
                 IOSchedulingClass=idle\n",
                job = s.job,
            );
            let delay = s
                .randomized_delay
                .map(|d| format!("RandomizedDelaySec={d}\n"))
                .unwrap_or_default();
            let timer = format!(
                "# Installed by `tresor schedule install {job}`.\n\
                 [Unit]\n\
                 Description=Daily tresor backup job {job}\n\
                 \n\
                 [Timer]\n\
                 OnCalendar=*-*-* {h:02}:{m:02}:00\n\
                 Persistent=true\n\
                 {delay}\
                 Unit={service}\n\
                 \n\
                 [Install]\n\
                 WantedBy=timers.target\n",
                job = s.job,
                h = s.at.0,
                m = s.at.1,
                service = names[0],
            );
            vec![(names[0].clone(), service), (names[1].clone(), timer)]
        }
        Kind::Cron => {
            // `%` ends a cron command line unless escaped.
            let delay = s
                .randomized_delay
                .filter(|d| *d > 0)
                .map(|d| {
                    format!(
                        "sleep $(( $(od -An -N4 -tu4 /dev/urandom) \\% {} )); ",
                        d + 1
                    )
                })
                .unwrap_or_default();
            let text = format!(
                "# Installed by `tresor schedule install {job} --cron`.\n\
                 SHELL=/bin/sh\n\
                 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                 {m} {h} * * * {user} {delay}nice -n 10 ionice -c 3 {command} --quiet\n",
                job = s.job,
                h = s.at.0,
                m = s.at.1,
                user = s.user,
            );
            vec![(names[0].clone(), text)]
        }
    }
}

/// Writes the files of `s` into `dir`; returns their paths.
pub fn install(s: &Schedule, kind: Kind, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut out = Vec::new();
    for (name, text) in render(s, kind) {
        let p = dir.join(name);
        crate::backend::local::write_atomic_mode(&p, text.as_bytes(), 0o644)?;
        out.push(p);
    }
    Ok(out)
}

/// The installed files of `job` in `dir` (systemd and cron alike), with their content.
pub fn show(job: &str, dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for kind in [Kind::Systemd, Kind::Cron] {
        for name in file_names(job, kind) {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => out.push((p, t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("reading {}", p.display()), e)),
            }
        }
    }
    Ok(out)
}

/// Removes the installed files of `job` from `dir`; returns those removed.
pub fn remove(job: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let found = show(job, dir)?;
    if let Some((p, _)) = found
        .iter()
        .find(|(_, text)| !text.contains("tresor schedule install"))
    {
        return Err(Error::InvalidArgument(format!(
            "{} was not written by `tresor schedule install`; leaving the schedule alone",
            p.display()
        )));
    }
    let mut out = Vec::new();
    for (p, _) in found {
        std::fs::remove_file(&p).map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Schedule {
        Schedule {
            job: "web".into(),
            at: parse_at("02:30").unwrap(),
            randomized_delay: Some(1800),
            binary: "/usr/local/bin/tresor".into(),
            config: "/etc/tresor/tresor.toml".into(),
            user: "root".into(),
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_at("2:05").unwrap(), (2, 5));
        for bad in ["24:00", "12:60", "noon", "12", "-1:00"] {
            assert!(parse_at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units_and_cron_lines() {
        let files = render(&sched(), Kind::Systemd);
        assert_eq!(files[0].0, "tresor-web.service");
        assert!(
            files[0].1.contains(
                "ExecStart=/usr/local/bin/tresor --config /etc/tresor/tresor.toml run web"
            )
        );
        assert!(files[0].1.contains("IOSchedulingClass=idle") && files[0].1.contains("Nice=10"));
        assert!(files[1].1.contains("OnCalendar=*-*-* 02:30:00"));
        assert!(
            files[1].1.contains("Persistent=true")
                && files[1].1.contains("RandomizedDelaySec=1800")
        );
        let cron = &render(&sched(), Kind::Cron)[0];
        assert_eq!(cron.0, "tresor-web");
        let line = cron.1.lines().last().unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&fields[..6], &["30", "2", "*", "*", "*", "root"]);
        // Quiet: cron mails whatever a job prints, so only a failure (on stderr) sends mail.
        assert!(line.ends_with("run web --quiet"), "{line}");
        // Every % is escaped, or cron would cut the command there.
        assert!(!line.replace("\\%", "").contains('%'), "{line}");
        let d = tempfile::tempdir().unwrap();
        install(&sched(), Kind::Cron, d.path()).unwrap();
        assert_eq!(show("web", d.path()).unwrap().len(), 1);
        std::fs::write(d.path().join("tresor-web.timer"), "mine").unwrap();
        assert!(
            remove("web", d.path()).is_err(),
            "a file tresor did not write stays"
        );
        std::fs::remove_file(d.path().join("tresor-web.timer")).unwrap();
        assert_eq!(remove("web", d.path()).unwrap().len(), 1);
        assert!(show("web", d.path()).unwrap().is_empty());
    }
}
