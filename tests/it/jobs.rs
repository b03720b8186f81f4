//! Jobs from a configuration file: `tresor run` (step order, the failure rules, overlapping
//! runs, pings to a real local HTTP server), `tresor status` going red and green, `config
//! check` naming the line of each mistake, `schedule`, completions and the man page. Every
//! command is the real binary; hooks are real shell commands that record what they see.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, BIN, Env, KillOnDrop, Out, exit};

/// A test's world for jobs: a repository made with the cheap KDF, a password file, and a
/// configuration file whose `[defaults]` point at them (state and cache inside the test dir).
struct Jobs {
    env: Env,
    config: PathBuf,
    log: PathBuf,
}

impl Jobs {
    fn new() -> Jobs {
        let env = Env::with_password_file();
        env.init();
        fs::create_dir_all(env.path("data/sub")).unwrap();
        fs::write(env.path("data/a.txt"), b"alpha\n").unwrap();
        fs::write(env.path("data/sub/b.txt"), b"beta\n").unwrap();
        fs::write(env.path("data/junk.tmp"), b"junk\n").unwrap();
        Jobs {
            config: env.path("tresor.toml"),
            log: env.path("hooks.log"),
            env,
        }
    }

    fn password_file(&self) -> PathBuf {
        self.env.path("password.txt")
    }

    /// Writes the file: `[defaults]` for this test's repository, then `jobs`.
    fn write(&self, jobs: &str) {
        let text = format!(
            "[defaults]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\nstate-dir = {:?}\n\n{jobs}",
            self.env.repo.display().to_string(),
            self.password_file().display().to_string(),
            self.env.cache.display().to_string(),
            self.env.path("state").display().to_string(),
        );
        fs::write(&self.config, text).unwrap();
    }

    /// A hook that appends `NAME $TRESOR_STEP $TRESOR_RESULT` and the number of snapshot
    /// objects in the repository to the hook log.
    fn hook(&self, name: &str) -> String {
        format!(
            "echo \"{name} $TRESOR_STEP $TRESOR_RESULT $TRESOR_JOB snaps=$(ls {}/snapshots 2>/dev/null | wc -l)\" >> {}",
            self.env.repo.display(),
            self.log.display()
        )
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The binary with only PATH in its environment (as cron runs it: no HOME, no TRESOR_*).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir("/");
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        harness::run_command(self.command(args), &format!("tresor {}", args.join(" ")))
    }

    /// `run --json JOB…`: the exit code and one object per job.
    fn run_json(&self, jobs: &[&str]) -> (i32, Vec<Value>) {
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(jobs);
        let out = self.run(&args);
        let objects = out
            .stdout_str()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n--- stderr\n{}", out.stderr))
            })
            .collect();
        (out.code, objects)
    }

    /// Names and contents of every file in the repository (the "untouched" fingerprint).
    fn repo_fingerprint(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<(PathBuf, Vec<u8>)> = harness::all_files(&self.env.repo)
            .into_iter()
            .map(|f| {
                let data = fs::read(&f).unwrap();
                (f, data)
            })
            .collect();
        v.sort();
        v
    }
}

fn steps(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn result_of<'a>(steps: &'a [(String, String)], step: &str) -> &'a str {
    &steps.iter().find(|(s, _)| s == step).unwrap().1
}

#[test]
fn steps_run_in_order_and_snapshots_carry_the_job_tag() {
    let j = Jobs::new();
    let data = j.env.path("data");
    j.write(&format!(
        r#"[jobs.files]
paths = [{data:?}]
exclude = ["*.tmp"]
commands = {{ "dump.sql" = "seq 1 500" }}
tags = ["nightly"]
keep = {{ last = 2 }}
prune = "always"
check = {{ read-data-max-age = "30d", budget = "1GiB" }}
hooks = {{ before = [{b:?}], after = [{a:?}], failure = [{f:?}], finally = [{z:?}] }}
"#,
        data = data.display().to_string(),
        b = j.hook("before"),
        a = j.hook("after"),
        f = j.hook("failure"),
        z = j.hook("finally"),
    ));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::OK, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["result"], "ok");
    let s = steps(r);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "before", "snapshot", "forget", "prune", "check", "drill", "copy", "after", "failure",
            "finally", "notify"
        ]
    );
    for step in [
        "before", "snapshot", "forget", "prune", "check", "after", "finally",
    ] {
        assert_eq!(result_of(&s, step), "ok", "{step}: {r}");
    }
    assert_eq!(result_of(&s, "failure"), "skipped");
    // The before hook saw no snapshot yet, after and finally saw it.
    assert_eq!(
        j.log_lines(),
        [
            "before before running files snaps=0",
            "after after ok files snaps=1",
            "finally finally ok files snaps=1",
        ]
    );
    let snaps = j.env.list();
    assert_eq!(snaps.len(), 1);
    let tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["nightly", "job:files"]);
    let paths = snaps[0]["paths"].to_string();
    assert!(paths.contains("dump.sql"), "{paths}");
    let id = snaps[0]["id"].as_str().unwrap();
    assert_eq!(r["snapshot"], id);
    assert_eq!(
        j.env.restore_stdout(id, Some("dump.sql")),
        (1..=500)
            .map(|n| format!("{n}\n"))
            .collect::<String>()
            .into_bytes()
    );
    let ls = j
        .env
        .run(&["snapshot", "ls", id, "-R"])
        .ok("ls")
        .stdout_str();
    assert!(ls.contains("a.txt") && !ls.contains("junk.tmp"), "{ls}");
    // Three more runs: `keep = { last = 2 }` leaves two snapshots of the job, and a snapshot
    // of something else is not the job's to forget.
    j.env.create(&[data.join("a.txt")]);
    for _ in 0..3 {
        assert_eq!(j.run_json(&[]).0, exit::OK);
    }
    let snaps = j.env.list();
    let job_snaps = snaps
        .iter()
        .filter(|s| s["tags"].to_string().contains("job:files"))
        .count();
    assert_eq!((snaps.len(), job_snaps), (3, 2));
    // The plan touches nothing.
    let before = j.repo_fingerprint();
    let plan = j.run(&["run", "--dry-run"]);
    plan.ok("run --dry-run");
    assert!(
        plan.stdout_str()
            .contains("forget: among the snapshots tagged job:files")
    );
    assert_eq!(before, j.repo_fingerprint());
}

#[test]
fn a_failed_snapshot_runs_the_failure_hooks_and_skips_forget_and_prune() {
    let j = Jobs::new();
    let notified = j.env.path("notified.txt");
    let jobs = |cmd: &str| {
        format!(
            r#"[jobs.db]
commands = {{ "db.sql" = {cmd:?} }}
keep = {{ last = 1 }}
prune = "always"
hooks = {{ before = [{b:?}], after = [{a:?}], failure = [{f:?}], finally = [{z:?}] }}
notify = {{ command = "cat > {n}; echo \"$TRESOR_JOB $TRESOR_RESULT $TRESOR_FAILED_STEP $TRESOR_EXIT_CODE\" >> {n}" }}
"#,
            b = j.hook("before"),
            a = j.hook("after"),
            f = j.hook("failure"),
            z = j.hook("finally"),
            n = notified.display(),
        )
    };
    j.write(&jobs("seq 1 100"));
    assert_eq!(j.run_json(&[]).0, exit::OK);
    assert!(
        !notified.exists(),
        "the command notifies failures only by default"
    );
    j.write(&jobs("seq 1 100; echo dump failed >&2; exit 3"));
    let before = j.env.list();
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::FATAL, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["result"], "failed");
    assert_eq!(r["exit_code"], exit::FATAL);
    let s = steps(r);
    assert_eq!(result_of(&s, "snapshot"), "failed");
    assert_eq!(result_of(&s, "forget"), "skipped");
    assert_eq!(result_of(&s, "prune"), "skipped");
    assert_eq!(result_of(&s, "after"), "skipped");
    assert_eq!(result_of(&s, "failure"), "ok");
    assert_eq!(result_of(&s, "finally"), "ok");
    let lines = j.log_lines();
    assert_eq!(
        &lines[3..],
        [
            "before before running db snaps=1",
            "failure failure failed db snaps=1",
            "finally finally failed db snaps=1",
        ]
    );
    // The old snapshot is still there: nothing was forgotten after the failed one.
    assert_eq!(j.env.list(), before);
    let note = fs::read_to_string(&notified).unwrap();
    assert!(note.contains("exited with status 3"), "{note}");
    assert!(note.trim_end().ends_with("db failed snapshot 1"), "{note}");
}

#[test]
fn a_failing_before_hook_leaves_the_repository_untouched() {
    let j = Jobs::new();
    j.write(&format!(
        r#"[jobs.files]
paths = [{data:?}]
keep = {{ last = 1 }}
prune = "always"
check = {{}}
hooks = {{ before = ["echo stopping app", "echo cannot stop app >&2; exit 7", {b:?}], failure = [{f:?}], finally = [{z:?}] }}
"#,
        data = j.env.path("data").display().to_string(),
        b = j.hook("before-second"),
        f = j.hook("failure"),
        z = j.hook("finally"),
    ));
    let before = j.repo_fingerprint();
    let out = j.run(&["run"]);
    out.expect_code(exit::FATAL, "a before hook failed");
    assert!(out.stderr.contains("cannot stop app"), "{}", out.stderr);
    assert!(
        out.stdout_str().starts_with("files: failed"),
        "{}",
        out.stdout_str()
    );
    assert_eq!(before, j.repo_fingerprint(), "the repository was touched");
    // The rest of the before list does not run; failure and finally do.
    assert_eq!(
        j.log_lines(),
        [
            "failure failure failed files snaps=0",
            "finally finally failed files snaps=0"
        ]
    );
}

#[test]
fn overlapping_runs_of_one_job_skip_or_wait() {
    let j = Jobs::new();
    let started = j.env.path("started");
    let jobs = |overlap: &str| {
        format!(
            r#"[jobs.slow]
paths = [{data:?}]
overlap = "{overlap}"
hooks = {{ before = ["echo start >> {log}; touch {started}; sleep 2"], finally = ["echo end >> {log}"] }}
"#,
            data = j.env.path("data").display().to_string(),
            log = j.log.display(),
            started = started.display(),
        )
    };
    for overlap in ["skip", "wait"] {
        let _ = fs::remove_file(&started);
        let _ = fs::remove_file(&j.log);
        j.write(&jobs(overlap));
        let mut cmd = j.command(&["run", "--json"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let first = KillOnDrop(Some(cmd.spawn().unwrap()));
        let t = Instant::now();
        while !started.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the first run never started"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let (code, reports) = j.run_json(&[]);
        let mut first = first;
        let first_out =
            harness::wait_with_timeout(first.0.take().unwrap(), Duration::from_secs(60), "first");
        first_out.ok("the first run");
        assert_eq!(code, exit::OK);
        if overlap == "skip" {
            assert_eq!(reports[0]["result"], "skipped", "{reports:?}");
            assert_eq!(
                j.log_lines(),
                ["start", "end"],
                "the second run ran nothing"
            );
        } else {
            assert_eq!(reports[0]["result"], "ok", "{reports:?}");
            assert_eq!(
                j.log_lines(),
                ["start", "end", "start", "end"],
                "the second run waited for the first to end"
            );
        }
    }
}

/// One HTTP request the test server received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A real HTTP/1.1 server on 127.0.0.1 that answers 200 to everything and records each
/// request.
fn http_server() -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            record.lock().unwrap().push(Request {
                method,
                path,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    (base, seen)
}

/// `tresor ARGS` as cron runs it: `env -i PATH=/usr/bin:/bin` (no HOME, no TRESOR_*), in a
/// new session without a controlling terminal, standard input /dev/null.
fn cron_run(j: &Jobs, args: &[&str]) -> Out {
    let mut cmd = Command::new("env");
    cmd.args(["-i", "PATH=/usr/bin:/bin", "setsid", "-w", BIN, "--config"])
        .arg(&j.config)
        .args(args)
        .current_dir("/");
    harness::run_command(cmd, &format!("(cron) tresor {}", args.join(" ")))
}

/// The new user's walkthrough of issue 17: two jobs (a directory tree, a PostgreSQL dump
/// through a command stream) run from cron's environment, pings to a real local HTTP server,
/// a broken password file, the failure pings, status going red, the fix, green again.
#[test]
fn two_jobs_from_cron_ping_a_local_server_and_status_goes_red_then_green() {
    let j = Jobs::new();
    let pg = harness::Pg::start();
    pg.createdb("shop");
    pg.sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 300) g",
    );
    let (base, seen) = http_server();
    j.write(&format!(
        r#"[jobs.files]
paths = [{data:?}]
max-age = "1h"
notify = {{ ping = "{base}/ping/files-secret" }}

[jobs.db]
commands = {{ "shop.sql" = {dump:?} }}
max-age = "1h"
notify = {{ ping = "{base}/ping/db-secret" }}
"#,
        data = j.env.path("data").display().to_string(),
        dump = pg.dump_command("shop"),
    ));
    let paths = |seen: &Arc<Mutex<Vec<Request>>>| -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    // Never run: stale, and the repository has no snapshot of the jobs either.
    cron_run(&j, &["status"]).expect_code(exit::STALE, "status before any run");
    let out = cron_run(&j, &["run"]);
    out.ok("the first run from cron");
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr when all is well: {}",
        out.stderr
    );
    let lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("files: ok") && lines[1].starts_with("db: ok"),
        "one summary line per job: {lines:?}"
    );
    assert_eq!(
        paths(&seen),
        [
            "POST /ping/files-secret/start",
            "POST /ping/files-secret",
            "POST /ping/db-secret/start",
            "POST /ping/db-secret"
        ]
    );
    assert!(seen.lock().unwrap()[3].body.starts_with("db: ok"));
    // The dump in the db job's snapshot is the database.
    let snaps = j.env.list();
    let db_snap = snaps
        .iter()
        .find(|s| s["tags"].to_string().contains("job:db"))
        .unwrap();
    let restored = j
        .env
        .restore_stdout(db_snap["id"].as_str().unwrap(), Some("shop.sql"));
    assert_eq!(
        crate::postgres::without_restrict_keys(&restored),
        crate::postgres::without_restrict_keys(&pg.dump("shop", &[]))
    );
    assert!(String::from_utf8_lossy(&restored).contains("300\titem 300"));
    let v = cron_run(&j, &["status", "--json"]).json();
    assert_eq!(
        (v[0]["stale"].clone(), v[1]["stale"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(v[0]["last_success_from"], "history");
    // Break the password file: both jobs fail, the fail pings carry the log tail.
    let good = fs::read(j.password_file()).unwrap();
    fs::write(j.password_file(), b"wrong password\n").unwrap();
    seen.lock().unwrap().clear();
    let out = cron_run(&j, &["run"]);
    out.expect_code(exit::WRONG_PASSWORD, "run with a broken password file");
    assert!(!out.stderr.contains("secret") && !out.stdout_str().contains("secret"));
    assert!(
        out.stdout_str()
            .contains("db: failed at snapshot: wrong password")
    );
    assert_eq!(
        paths(&seen),
        [
            "POST /ping/files-secret/start",
            "POST /ping/files-secret/fail",
            "POST /ping/db-secret/start",
            "POST /ping/db-secret/fail"
        ]
    );
    for r in seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with("/fail"))
    {
        assert!(r.body.contains("wrong password"), "{r:?}");
    }
    // The last success is recent: green for 1 h, red for a window shorter than its age.
    cron_run(&j, &["status"]).ok("status within max-age");
    thread::sleep(Duration::from_millis(2100));
    let red = cron_run(&j, &["status", "--max-age", "1s"]);
    red.expect_code(exit::STALE, "status --max-age 1s");
    assert!(red.stdout_str().contains("STALE") && red.stdout_str().contains("last run failed"));
    let prom = cron_run(&j, &["status", "--max-age", "1s", "--format", "prometheus"]);
    assert!(prom.stdout_str().contains("tresor_job_stale{job=\"db\"} 1"));
    assert!(
        prom.stdout_str()
            .contains("tresor_job_last_run_exit_code{job=\"files\"} 12")
    );
    // Fixed: green again.
    fs::write(j.password_file(), good).unwrap();
    seen.lock().unwrap().clear();
    cron_run(&j, &["run"]).ok("run after the fix");
    assert_eq!(paths(&seen).len(), 4);
    assert!(paths(&seen).iter().all(|p| !p.ends_with("/fail")));
    let green = cron_run(&j, &["status", "--max-age", "1m"]);
    green.ok("status after the fix");
    assert_eq!(
        green.stdout_str().matches(": OK: last success").count(),
        2,
        "{}",
        green.stdout_str()
    );
    // The history lost: the last success is found in the repository by its job tag.
    fs::remove_dir_all(j.env.path("state")).unwrap();
    let v = cron_run(&j, &["status", "--json"]).json();
    assert_eq!(v[0]["last_success_from"], "repository", "{v}");
    assert_eq!(v[0]["stale"], false);
    let newest_files = j
        .env
        .list()
        .iter()
        .rev()
        .find(|s| s["tags"].to_string().contains("job:files"))
        .unwrap()["id"]
        .clone();
    assert_eq!(v[0]["last_snapshot"], newest_files);
}

#[test]
fn config_check_names_the_line_of_each_mistake() {
    let j = Jobs::new();
    let data = j.env.path("data").display().to_string();
    // The defaults take 5 lines and a blank one; the jobs start on line 7.
    let cases = [
        (
            format!("[jobs.a]\npaths = [{data:?}]\nexclud = [\"*.o\"]\n"),
            9,
            "unknown field `exclud`",
        ),
        (
            format!("[jobs.a]\npaths = [{data:?}]\nmax-age = \"26 hours\"\n"),
            9,
            "duration",
        ),
        (
            format!("[jobs.a]\npaths = [{data:?}]\nprune = \"sometimes\"\n"),
            9,
            "bad schedule",
        ),
        (
            "[jobs.a]\nkeep = { daily = 7 }\n".to_string(),
            7,
            "nothing to back up",
        ),
        (
            format!("[jobs.a]\npaths = [{data:?}]\nkeep = {{ dayly = 7 }}\n"),
            9,
            "unknown field `dayly`",
        ),
    ];
    for (jobs, line, what) in cases {
        j.write(&jobs);
        let out = j.run(&["config", "check"]);
        out.expect_code(exit::USAGE, what);
        assert!(
            out.stderr.contains(&format!("tresor.toml line {line}: ")) && out.stderr.contains(what),
            "{what}: {}",
            out.stderr
        );
    }
    // No password source anywhere.
    fs::write(
        &j.config,
        format!("[defaults]\nrepository = \"/r\"\n\n[jobs.web]\npaths = [{data:?}]\n"),
    )
    .unwrap();
    let out = j.run(&["config", "check"]);
    out.expect_code(exit::USAGE, "no password source");
    assert!(
        out.stderr
            .contains("line 4: job \"web\": no password source"),
        "{}",
        out.stderr
    );
    // A valid file: the effective settings, secrets masked, and exit 0.
    j.write(&format!(
        "[jobs.web]\npaths = [{data:?}]\nnotify = {{ ping = \"https://hc.example/ping/secret-uuid\" }}\n"
    ));
    let out = j.run(&["config", "check"]);
    out.ok("config check");
    let text = out.stdout_str();
    assert!(
        text.contains("[jobs.web]") && text.contains("job:web"),
        "{text}"
    );
    assert!(
        text.contains("https://hc.example/…") && !text.contains("secret-uuid"),
        "{text}"
    );
    // A password file that is not there is named too.
    fs::remove_file(j.password_file()).unwrap();
    let out = j.run(&["config", "check"]);
    out.expect_code(exit::USAGE, "missing password file");
    assert!(
        out.stderr.contains("line 7: job \"web\": password file"),
        "{}",
        out.stderr
    );
    // Environment beats the file: TRESOR_PASSWORD replaces the missing file.
    let mut cmd = j.command(&["config", "check"]);
    cmd.env("TRESOR_PASSWORD", &j.env.password);
    harness::run_command(cmd, "config check with TRESOR_PASSWORD").ok("env override");
}

#[test]
fn schedules_completions_and_the_man_page() {
    let j = Jobs::new();
    j.write(&format!(
        "[jobs.web]\npaths = [{:?}]\n",
        j.env.path("data").display().to_string()
    ));
    let units = j.env.path("units");
    let dir = units.display().to_string();
    j.run(&[
        "schedule",
        "install",
        "web",
        "--at",
        "02:30",
        "--randomized-delay",
        "30m",
        "--dir",
        &dir,
    ])
    .ok("schedule install");
    let service = fs::read_to_string(units.join("tresor-web.service")).unwrap();
    let timer = fs::read_to_string(units.join("tresor-web.timer")).unwrap();
    assert!(service.contains(&format!("--config {} run web", j.config.display())));
    assert!(service.contains("IOSchedulingClass=idle") && service.contains("Nice=10"));
    assert!(timer.contains("OnCalendar=*-*-* 02:30:00") && timer.contains("Persistent=true"));
    assert!(timer.contains("RandomizedDelaySec=1800"));
    if harness::succeeds("systemd-analyze", &[std::ffi::OsStr::new("--version")]) {
        let out = harness::run_command(
            {
                let mut c = Command::new("systemd-analyze");
                c.arg("verify")
                    .arg(units.join("tresor-web.timer"))
                    .arg(units.join("tresor-web.service"));
                c
            },
            "systemd-analyze verify",
        );
        out.ok("systemd-analyze verify");
    } else {
        eprintln!("systemd-analyze is not installed: the unit files were not verified by systemd");
    }
    let shown = j.run(&["schedule", "show", "web", "--dir", &dir]);
    shown.ok("schedule show");
    assert!(shown.stdout_str().contains("OnCalendar"));
    j.run(&["schedule", "remove", "web", "--dir", &dir])
        .ok("schedule remove");
    assert!(!units.join("tresor-web.timer").exists());
    // cron: the line's fields, and its command runs as cron would run it (`\%` → `%`).
    j.run(&[
        "schedule",
        "install",
        "web",
        "--cron",
        "--at",
        "4:05",
        "--randomized-delay",
        "1s",
        "--dir",
        &dir,
    ])
    .ok("schedule install --cron");
    let cron = fs::read_to_string(units.join("tresor-web")).unwrap();
    let line = cron.lines().last().unwrap();
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(&fields[..6], &["5", "4", "*", "*", "*", "root"], "{line}");
    let command = fields[6].replace("\\%", "%");
    assert!(!fields[6].replace("\\%", "").contains('%'), "{line}");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&command)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    harness::run_command(sh, "the cron command").ok("the cron line's command");
    assert_eq!(j.env.list().len(), 1, "the cron command ran the job");
    for shell in ["bash", "zsh", "fish"] {
        let out = j.run(&["completions", shell]);
        out.ok(shell);
        assert!(out.stdout_str().contains("schedule"), "{shell}");
    }
    let man = j.run(&["man"]);
    man.ok("man");
    assert!(man.stdout_str().starts_with(".ie") || man.stdout_str().contains(".TH tresor"));
}

#[test]
fn prune_runs_when_due_by_period_or_by_unused_share() {
    let j = Jobs::new();
    let data = j.env.path("data");
    let big = data.join("big.bin");
    let jobs = |prune: &str| {
        format!(
            "[jobs.files]\npaths = [{:?}]\nkeep = {{ last = 1 }}\nprune = {prune:?}\n",
            data.display().to_string()
        )
    };
    let run_with = |prune: &str, seed: u64| {
        fs::write(&big, harness::Rng::new(seed).bytes(3 << 20)).unwrap();
        j.write(&jobs(prune));
        let (code, reports) = j.run_json(&[]);
        assert_eq!(code, exit::OK, "{reports:?}");
        reports[0].clone()
    };
    // daily: due on the first run, not on the second the same day.
    assert_eq!(result_of(&steps(&run_with("daily", 1)), "prune"), "ok");
    let r = run_with("daily", 2);
    assert_eq!(result_of(&steps(&r), "prune"), "not-due");
    // The forgotten snapshot's 3 MiB are now unused: over 20 %, under 90 %.
    let r = run_with("90%", 3);
    assert_eq!(result_of(&steps(&r), "prune"), "not-due", "{r}");
    let r = run_with("20%", 4);
    assert_eq!(result_of(&steps(&r), "prune"), "ok", "{r}");
    assert!(r["bytes_freed"].as_u64().unwrap() > 3 << 20, "{r}");
    j.env.run(&["check"]).ok("check after the job's prune");
}

#[test]
fn copy_targets_get_the_jobs_snapshots() {
    let j = Jobs::new();
    let offsite = j.env.path("offsite");
    j.env
        .run_with(
            &harness::init_args(),
            &[("TRESOR_REPO", offsite.as_os_str())],
        )
        .ok("init the copy target");
    j.write(&format!(
        "[jobs.files]\npaths = [{:?}]\ncopy = [{{ repository = {:?} }}]\n",
        j.env.path("data").display().to_string(),
        offsite.display().to_string()
    ));
    // A snapshot that is not the job's stays behind.
    j.env.create(&[j.env.path("data/a.txt")]);
    for n in 1..=2 {
        fs::write(j.env.path("data/a.txt"), format!("version {n}\n")).unwrap();
        let (code, reports) = j.run_json(&[]);
        assert_eq!(code, exit::OK, "{reports:?}");
        assert_eq!(result_of(&steps(&reports[0]), "copy"), "ok");
        assert_eq!(
            reports[0]["copied"], 1,
            "only the new snapshot: {}",
            reports[0]
        );
    }
    let listed = j.env.run_with(
        &["snapshot", "list", "--json"],
        &[("TRESOR_REPO", offsite.as_os_str())],
    );
    let copies = listed.ok("list the target").json();
    let copies = copies.as_array().unwrap();
    assert_eq!(copies.len(), 2);
    assert!(
        copies
            .iter()
            .all(|c| c["tags"].to_string().contains("job:files"))
    );
    let last = copies[1]["id"].as_str().unwrap();
    let out = j.env.run_with(
        &["snapshot", "ls", last, "-R"],
        &[("TRESOR_REPO", offsite.as_os_str())],
    );
    assert!(out.ok("ls the copy").stdout_str().contains("a.txt"));
}

impl Jobs {
    /// A source hook: appends `NAME $TRESOR_STEP [$TRESOR_SOURCE] $TRESOR_RESULT snaps=N`.
    fn source_hook(&self, name: &str) -> String {
        format!(
            "echo \"{name} $TRESOR_STEP [$TRESOR_SOURCE] $TRESOR_RESULT snaps=$(ls {}/snapshots 2>/dev/null | wc -l)\" >> {}",
            self.env.repo.display(),
            self.log.display()
        )
    }
}

/// The `(step, source)` of each source step of a `--json` report.
fn source_steps(report: &Value) -> Vec<(String, String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"].as_str().unwrap().starts_with("source-"))
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn source_hooks_run_around_the_snapshot_in_source_order() {
    let j = Jobs::new();
    let data = j.env.path("data").display().to_string();
    let sub = j.env.path("data/sub").display().to_string();
    let jobs = |dump: &str| {
        format!(
            r#"[jobs.mixed]
paths = [{data:?}, {{ path = {sub:?}, hooks = {{ before = [{pb:?}], after = [{pa:?}], failure = [{pf:?}], finally = [{pz:?}] }} }}]
commands = {{ "a.sql" = {{ command = {dump:?}, hooks = {{ before = [{cb:?}], after = [{ca:?}], failure = [{cf:?}], finally = [{cz:?}] }} }}, "plain.txt" = "echo plain" }}
hooks = {{ before = [{b:?}], after = [{a:?}], failure = [{f:?}], finally = [{z:?}] }}
"#,
            pb = j.source_hook("path-before"),
            pa = j.source_hook("path-after"),
            pf = j.source_hook("path-failure"),
            pz = j.source_hook("path-finally"),
            cb = j.source_hook("cmd-before"),
            ca = j.source_hook("cmd-after"),
            cf = j.source_hook("cmd-failure"),
            cz = j.source_hook("cmd-finally"),
            b = j.source_hook("job-before"),
            a = j.source_hook("job-after"),
            f = j.source_hook("job-failure"),
            z = j.source_hook("job-finally"),
        )
    };
    j.write(&jobs("seq 1 50"));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::OK, "{reports:?}");
    // Source befores after the job's before, ahead of the snapshot; the sources' after and
    // finally right after it, in source order (paths as listed, then commands by name).
    assert_eq!(
        j.log_lines(),
        [
            "job-before before [] running snaps=0".to_string(),
            format!("path-before before [{sub}] running snaps=0"),
            "cmd-before before [a.sql] running snaps=0".to_string(),
            format!("path-after after [{sub}] ok snaps=1"),
            format!("path-finally finally [{sub}] ok snaps=1"),
            "cmd-after after [a.sql] ok snaps=1".to_string(),
            "cmd-finally finally [a.sql] ok snaps=1".to_string(),
            "job-after after [] ok snaps=1".to_string(),
            "job-finally finally [] ok snaps=1".to_string(),
        ]
    );
    let r = &reports[0];
    let names: Vec<String> = steps(r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "before",
            "source-before",
            "source-before",
            "snapshot",
            "source-after",
            "source-finally",
            "source-after",
            "source-finally",
            "forget",
            "prune",
            "check",
            "drill",
            "copy",
            "after",
            "failure",
            "finally",
            "notify"
        ]
    );
    assert_eq!(
        source_steps(r)[0],
        ("source-before".into(), sub.clone(), "ok".into())
    );
    assert_eq!(source_steps(r)[1].1, "a.sql");
    // The plain forms still work beside the tables: both streams are in the snapshot.
    let id = r["snapshot"].as_str().unwrap();
    assert_eq!(j.env.restore_stdout(id, Some("plain.txt")), b"plain\n");
    assert_eq!(
        j.env.restore_stdout(id, Some("a.sql")),
        (1..=50)
            .map(|n| format!("{n}\n"))
            .collect::<String>()
            .into_bytes()
    );
    // The history keeps the source of each source step.
    let history = fs::read_to_string(j.env.path("state/history/mixed.json")).unwrap();
    assert!(history.contains("\"source\": \"a.sql\""), "{history}");
    // A failed snapshot: each source's failure hooks, then its finally hooks.
    fs::remove_file(&j.log).unwrap();
    j.write(&jobs("seq 1 50; exit 3"));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::FATAL, "{reports:?}");
    assert_eq!(
        j.log_lines(),
        [
            "job-before before [] running snaps=1".to_string(),
            format!("path-before before [{sub}] running snaps=1"),
            "cmd-before before [a.sql] running snaps=1".to_string(),
            format!("path-failure failure [{sub}] failed snaps=1"),
            format!("path-finally finally [{sub}] failed snaps=1"),
            "cmd-failure failure [a.sql] failed snaps=1".to_string(),
            "cmd-finally finally [a.sql] failed snaps=1".to_string(),
            "job-failure failure [] failed snaps=1".to_string(),
            "job-finally finally [] failed snaps=1".to_string(),
        ]
    );
    // The dry run names the source hooks.
    let plan = j.run(&["run", "--dry-run"]);
    assert!(
        plan.ok("run --dry-run")
            .stdout_str()
            .contains("source a.sql hooks"),
        "{}",
        plan.stdout_str()
    );
    // `config check` shows a source with hooks in its table form, a plain one plainly.
    let shown = j.run(&["config", "check"]);
    let text = shown.ok("config check").stdout_str();
    let effective: toml::Table = text.parse().unwrap();
    let job = &effective["jobs"]["mixed"];
    assert_eq!(job["paths"][0].as_str(), Some(data.as_str()), "{text}");
    assert_eq!(
        job["paths"][1]["path"].as_str(),
        Some(sub.as_str()),
        "{text}"
    );
    assert!(job["paths"][1]["hooks"]["before"].is_array(), "{text}");
    assert_eq!(job["commands"]["plain.txt"].as_str(), Some("echo plain"));
    assert_eq!(
        job["commands"]["a.sql"]["command"].as_str(),
        Some("seq 1 50; exit 3")
    );
}

#[test]
fn a_failing_source_before_hook_leaves_the_repository_untouched() {
    let j = Jobs::new();
    let sub = j.env.path("data/sub").display().to_string();
    j.write(&format!(
        r#"[jobs.files]
paths = [{{ path = {sub:?}, hooks = {{ before = [{pb:?}], failure = [{pf:?}], finally = [{pz:?}] }} }}]
commands = {{ "a.sql" = {{ command = "seq 1 5", hooks = {{ before = [{cb:?}, "echo cannot lock tables >&2; exit 9", {cb2:?}], failure = [{cf:?}], finally = [{cz:?}] }} }}, "b.sql" = {{ command = "seq 1 5", hooks = {{ before = [{bb:?}], finally = [{bz:?}] }} }} }}
keep = {{ last = 1 }}
prune = "always"
hooks = {{ failure = [{f:?}], finally = [{z:?}] }}
"#,
        pb = j.source_hook("path-before"),
        pf = j.source_hook("path-failure"),
        pz = j.source_hook("path-finally"),
        cb = j.source_hook("a-before"),
        cb2 = j.source_hook("a-before-second"),
        cf = j.source_hook("a-failure"),
        cz = j.source_hook("a-finally"),
        bb = j.source_hook("b-before"),
        bz = j.source_hook("b-finally"),
        f = j.source_hook("job-failure"),
        z = j.source_hook("job-finally"),
    ));
    let before = j.repo_fingerprint();
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::FATAL, "{reports:?}");
    assert_eq!(before, j.repo_fingerprint(), "the repository was touched");
    let r = &reports[0];
    assert_eq!(r["result"], "failed");
    let s = steps(r);
    assert_eq!(result_of(&s, "snapshot"), "skipped");
    let failed = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["result"] == "failed")
        .unwrap();
    assert_eq!(failed["step"], "source-before");
    assert_eq!(failed["source"], "a.sql");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("before hook of a.sql") && message.contains("cannot lock tables"),
        "{message}"
    );
    // The sources entered before the failure are undone (failure, finally), the failing one
    // too; the rest of its before list and the later source get nothing.
    assert_eq!(
        j.log_lines(),
        [
            format!("path-before before [{sub}] running snaps=0"),
            "a-before before [a.sql] running snaps=0".to_string(),
            format!("path-failure failure [{sub}] failed snaps=0"),
            format!("path-finally finally [{sub}] failed snaps=0"),
            "a-failure failure [a.sql] failed snaps=0".to_string(),
            "a-finally finally [a.sql] failed snaps=0".to_string(),
            "job-failure failure [] failed snaps=0".to_string(),
            "job-finally finally [] failed snaps=0".to_string(),
        ]
    );
    // A mistake in a source table is named with its line.
    j.write(&format!(
        "[jobs.files]\npaths = [{{ path = {sub:?}, hooks = {{ befor = [\"x\"] }} }}]\n"
    ));
    let out = j.run(&["config", "check"]);
    out.expect_code(exit::USAGE, "unknown key in a source table");
    assert!(
        out.stderr.contains("tresor.toml line 8") && out.stderr.contains("befor"),
        "{}",
        out.stderr
    );
}

/// A local port nobody listens on (bound, then closed).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_failed_notification_is_visible_and_has_its_own_exit_code() {
    let j = Jobs::new();
    let data = j.env.path("data").display().to_string();
    let port = closed_port();
    j.write(&format!(
        "[jobs.files]\npaths = [{data:?}]\nmax-age = \"1h\"\nnotify = {{ ping = \"http://127.0.0.1:{port}/ping/secret-uuid\" }}\n"
    ));
    let out = j.run(&["run"]);
    out.expect_code(exit::NOTIFY, "run with an unreachable ping");
    assert!(
        out.stderr
            .contains(&format!("start ping http://127.0.0.1:{port}/… failed"))
            && out
                .stderr
                .contains(&format!("success ping http://127.0.0.1:{port}/… failed")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("secret-uuid") && !out.stdout_str().contains("secret-uuid"));
    assert!(
        out.stdout_str().starts_with("files: ok")
            && out.stdout_str().contains("NOTIFICATION FAILED"),
        "{}",
        out.stdout_str()
    );
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::NOTIFY);
    let r = &reports[0];
    assert_eq!(r["result"], "ok", "the backup itself succeeded: {r}");
    assert_eq!(r["exit_code"], exit::NOTIFY);
    let notify = r["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(notify["step"], "notify");
    assert_eq!(notify["result"], "failed");
    assert_eq!(notify["exit_code"], exit::NOTIFY);
    assert!(
        notify["message"].as_str().unwrap().contains("ping"),
        "{notify}"
    );
    // The history has it, and status shows it (without going red: the backup is fresh).
    let st = j.run(&["status"]);
    st.ok("status after a failed notification");
    assert!(
        st.stdout_str().contains("OK")
            && st.stdout_str().contains("NOTIFICATION FAILED: start ping"),
        "{}",
        st.stdout_str()
    );
    let v = j.run(&["status", "--json"]).json();
    assert_eq!(v[0]["last_run"]["notify"], "failed", "{v}");
    assert_eq!(v[0]["last_run"]["exit_code"], exit::NOTIFY);
    assert!(
        v[0]["last_run"]["notify_error"]
            .as_str()
            .unwrap()
            .contains("ping")
    );
    assert_eq!(v[0]["stale"], false);
    let prom = j.run(&["status", "--format", "prometheus"]).stdout_str();
    assert!(
        prom.contains("tresor_job_last_run_notify_failed{job=\"files\"} 1"),
        "{prom}"
    );
    // A notification command that exits 1.
    j.write(&format!(
        "[jobs.files]\npaths = [{data:?}]\nnotify = {{ command = \"echo mail server down >&2; exit 1\", when = \"always\" }}\n"
    ));
    let out = j.run(&["run"]);
    out.expect_code(exit::NOTIFY, "run with a failing notification command");
    assert!(
        out.stderr.contains("notification command") && out.stderr.contains("mail server down"),
        "{}",
        out.stderr
    );
    let v = j.run(&["status", "--json"]).json();
    assert_eq!(v[0]["last_run"]["notify"], "failed");
    assert!(
        v[0]["last_run"]["notify_error"]
            .as_str()
            .unwrap()
            .contains("mail server down"),
        "{v}"
    );
    // A failed step outranks the failed notification.
    j.write(&format!(
        "[jobs.files]\npaths = [{data:?}]\ncommands = {{ \"x\" = \"exit 7\" }}\nnotify = {{ command = \"exit 1\" }}\n"
    ));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::FATAL, "{reports:?}");
    assert_eq!(result_of(&steps(&reports[0]), "notify"), "failed");
    // Delivered: the step is ok, the exit code 0, status no longer complains.
    j.write(&format!(
        "[jobs.files]\npaths = [{data:?}]\nnotify = {{ command = \"cat > /dev/null\", when = \"always\" }}\n"
    ));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::OK, "{reports:?}");
    assert_eq!(result_of(&steps(&reports[0]), "notify"), "ok");
    let st = j.run(&["status"]);
    assert!(!st.ok("status").stdout_str().contains("NOTIFICATION FAILED"));
}

#[test]
fn every_command_takes_the_repository_and_password_from_the_config() {
    let j = Jobs::new();
    let data = j.env.path("data").display().to_string();
    // A second repository with its own password, for the job `other`.
    let other = j.env.path("other");
    let other_pw = j.env.path("other-password.txt");
    fs::write(&other_pw, "other secret\n").unwrap();
    let mut init = Command::new(BIN);
    init.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--repo")
        .arg(&other)
        .arg("--password-file")
        .arg(&other_pw)
        .args(&harness::init_args()[..])
        .current_dir("/");
    harness::run_command(init, "init the other repository").ok("init other");
    j.write(&format!(
        "[jobs.files]\npaths = [{data:?}]\n\n[jobs.other]\nrepository = {:?}\npassword-file = {:?}\npaths = [{data:?}]\n",
        other.display().to_string(),
        other_pw.display().to_string()
    ));
    assert_eq!(j.run_json(&[]).0, exit::OK);
    let ids = |out: &Out| -> Vec<String> {
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tags"].to_string())
            .collect()
    };
    // --config FILE, no TRESOR_* at all: [defaults]'s repository and password file.
    let list = j.run(&["snapshot", "list", "--json"]);
    let tags = ids(list.ok("snapshot list from [defaults]"));
    assert_eq!(tags.len(), 1);
    assert!(tags[0].contains("job:files"), "{tags:?}");
    // --job: that job's repository and password.
    let list = j.run(&["--job", "other", "snapshot", "list", "--json"]);
    let tags = ids(list.ok("snapshot list --job other"));
    assert!(tags.len() == 1 && tags[0].contains("job:other"), "{tags:?}");
    j.run(&["--job", "nope", "snapshot", "list"])
        .expect_code(exit::FATAL, "an unknown job")
        .stderr_has("no job \"nope\"");
    // TRESOR_CONFIG instead of --config.
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TRESOR_CONFIG", &j.config)
        .args(["check"])
        .current_dir("/");
    harness::run_command(cmd, "check with TRESOR_CONFIG").ok("TRESOR_CONFIG");
    // Environment beats the file, a flag beats the environment.
    let mut cmd = j.command(&["snapshot", "list", "--json"]);
    cmd.env("TRESOR_REPO", &other)
        .env("TRESOR_PASSWORD_FILE", &other_pw);
    let out = harness::run_command(cmd, "TRESOR_REPO over the file");
    assert!(ids(out.ok("env over config"))[0].contains("job:other"));
    let mut cmd = j.command(&["--repo", j.env.repo.to_str().unwrap(), "snapshot", "list"]);
    cmd.env("TRESOR_REPO", &other);
    harness::run_command(
        cmd,
        "--repo over TRESOR_REPO: the file's password does not open it",
    )
    .ok("--repo over the environment");
    let mut cmd = j.command(&["snapshot", "list"]);
    cmd.env("TRESOR_PASSWORD_FILE", &other_pw);
    harness::run_command(cmd, "TRESOR_PASSWORD_FILE over the file")
        .expect_code(exit::WRONG_PASSWORD, "the environment's password wins");
    // An explicitly given file that is broken is an error, even when flags give everything.
    fs::write(&j.config, "[jobs.files]\npaths = 3\n").unwrap();
    let mut cmd = j.command(&["snapshot", "list"]);
    cmd.env("TRESOR_REPO", &j.env.repo)
        .env("TRESOR_PASSWORD_FILE", j.password_file());
    harness::run_command(cmd, "a broken --config")
        .expect_code(exit::USAGE, "a broken explicit config")
        .stderr_has("tresor.toml line 2");
    // The default place ($XDG_CONFIG_HOME/tresor/tresor.toml) is read when it exists …
    let xdg = j.env.path("xdg");
    fs::create_dir_all(xdg.join("tresor")).unwrap();
    fs::write(
        xdg.join("tresor/tresor.toml"),
        format!(
            "[defaults]\nrepository = {:?}\npassword-file = {:?}\ncache-dir = {:?}\n[jobs.x]\npaths = [{data:?}]\n",
            other.display().to_string(),
            other_pw.display().to_string(),
            j.env.cache.display().to_string()
        ),
    )
    .unwrap();
    let plain = |vars: &[(&str, &std::path::Path)], args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(args);
        harness::run_command(cmd, &args.join(" "))
    };
    let out = plain(
        &[("XDG_CONFIG_HOME", &xdg)],
        &["snapshot", "list", "--json"],
    );
    assert!(ids(out.ok("the default config file"))[0].contains("job:other"));
    // … and its absence is no error: the usual message about the missing repository.
    let empty = j.env.path("empty");
    fs::create_dir_all(&empty).unwrap();
    plain(&[("XDG_CONFIG_HOME", &empty)], &["snapshot", "list"])
        .expect_code(exit::FATAL, "no config, no repository")
        .stderr_has("no repository given");
    plain(
        &[
            ("XDG_CONFIG_HOME", &empty),
            ("TRESOR_REPO", &other),
            ("TRESOR_PASSWORD_FILE", &other_pw),
        ],
        &["snapshot", "list"],
    )
    .ok("no config file at all, everything from the environment");
    // `repo init` takes them from the file too.
    let third = j.env.path("third");
    fs::write(
        &j.config,
        format!(
            "[defaults]\nrepository = {:?}\npassword-file = {:?}\n[jobs.x]\npaths = [{data:?}]\n",
            third.display().to_string(),
            other_pw.display().to_string()
        ),
    )
    .unwrap();
    j.run(&harness::init_args()).ok("repo init from the config");
    j.run(&["snapshot", "list"])
        .ok("the new repository opens with the file's password");
    assert!(third.is_dir());
}

/// Removes what a test installed in the system directories, whatever happens to the test.
struct SystemFiles {
    files: Vec<PathBuf>,
    dirs_created: Vec<PathBuf>,
}

impl Drop for SystemFiles {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        for d in &self.dirs_created {
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn schedule_install_show_and_remove_use_the_system_directories() {
    use std::os::unix::fs::PermissionsExt;
    if !harness::is_root() {
        eprintln!(
            "SKIPPED: schedule install without --dir writes /etc/systemd/system and /etc/cron.d, which needs root"
        );
        return;
    }
    let j = Jobs::new();
    let job = format!("it-{}", harness::random_hex(4));
    j.write(&format!(
        "[jobs.{job}]\npaths = [{:?}]\n",
        j.env.path("data").display().to_string()
    ));
    let systemd = PathBuf::from("/etc/systemd/system");
    let crond = PathBuf::from("/etc/cron.d");
    let service = systemd.join(format!("tresor-{job}.service"));
    let timer = systemd.join(format!("tresor-{job}.timer"));
    let cron = crond.join(format!("tresor-{job}"));
    let _cleanup = SystemFiles {
        files: vec![service.clone(), timer.clone(), cron.clone()],
        dirs_created: [&systemd, &crond]
            .into_iter()
            .filter(|d| !d.exists())
            .cloned()
            .collect(),
    };
    let out = j.run(&["schedule", "install", &job, "--at", "03:45"]);
    out.ok("schedule install into /etc/systemd/system");
    let stdout = out.stdout_str();
    assert!(
        stdout.contains(&format!("wrote {}", service.display()))
            && stdout.contains(&format!("wrote {}", timer.display())),
        "{stdout}"
    );
    // systemctl runs (or, without a running systemd, is reported as a warning to act on).
    assert!(
        stdout.contains("systemctl daemon-reload: done") || out.stderr.contains("run it yourself"),
        "{stdout}{}",
        out.stderr
    );
    for f in [&service, &timer] {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
    }
    let text = fs::read_to_string(&service).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={BIN} --config {} run {job}",
            j.config.display()
        )),
        "{text}"
    );
    assert!(
        fs::read_to_string(&timer)
            .unwrap()
            .contains("OnCalendar=*-*-* 03:45:00")
    );
    if harness::succeeds("systemd-analyze", &[std::ffi::OsStr::new("--version")]) {
        let mut c = Command::new("systemd-analyze");
        c.arg("verify").arg(&timer).arg(&service);
        harness::run_command(c, "systemd-analyze verify").ok("systemd-analyze verify");
    } else {
        eprintln!("systemd-analyze is not installed: the unit files were not verified by systemd");
    }
    let out = j.run(&["schedule", "install", &job, "--cron", "--at", "03:45"]);
    out.ok("schedule install --cron into /etc/cron.d");
    assert_eq!(
        fs::metadata(&cron).unwrap().permissions().mode() & 0o777,
        0o644,
        "cron ignores group- or world-writable files"
    );
    let line = fs::read_to_string(&cron).unwrap();
    assert!(
        line.lines().last().unwrap().starts_with("45 3 * * * root "),
        "{line}"
    );
    // show and remove without --dir look in both places.
    let shown = j.run(&["schedule", "show", &job]);
    let text = shown.ok("schedule show").stdout_str();
    for f in [&service, &timer, &cron] {
        assert!(text.contains(&format!("# {}", f.display())), "{text}");
    }
    let removed = j.run(&["schedule", "remove", &job]);
    let text = removed.ok("schedule remove").stdout_str();
    for f in [&service, &timer, &cron] {
        assert!(text.contains(&format!("removed {}", f.display())), "{text}");
        assert!(!f.exists(), "{} is still there", f.display());
    }
    j.run(&["schedule", "show", &job])
        .expect_code(exit::FATAL, "show after remove")
        .stderr_has("no schedule");
    j.run(&["schedule", "remove", &job])
        .expect_code(exit::FATAL, "remove twice")
        .stderr_has("no schedule");
}

#[test]
fn a_failing_source_after_hook_fails_the_job_but_keeps_the_snapshot_and_its_retention() {
    let j = Jobs::new();
    let jobs = |after: &str| {
        format!(
            r#"[jobs.db]
commands = {{ "a.sql" = {{ command = "seq 1 5", hooks = {{ after = [{after:?}], failure = [{f:?}], finally = [{z:?}] }} }} }}
keep = {{ last = 1 }}
"#,
            f = j.source_hook("a-failure"),
            z = j.source_hook("a-finally"),
        )
    };
    j.write(&jobs("true"));
    assert_eq!(j.run_json(&[]).0, exit::OK);
    j.write(&jobs("echo cannot restart the app >&2; exit 4"));
    let (code, reports) = j.run_json(&[]);
    assert_eq!(code, exit::FATAL, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["result"], "failed");
    let s = source_steps(r);
    assert_eq!(
        s,
        [
            ("source-after".into(), "a.sql".into(), "failed".into()),
            ("source-failure".into(), "a.sql".into(), "ok".into()),
            ("source-finally".into(), "a.sql".into(), "ok".into()),
        ]
    );
    // The new snapshot is good, so the retention still runs: one snapshot is left, the new one.
    assert_eq!(result_of(&steps(r), "forget"), "ok", "{r}");
    let snaps = j.env.list();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], r["snapshot"]);
    assert_eq!(
        j.log_lines(),
        [
            "a-finally finally [a.sql] ok snaps=1",
            "a-failure failure [a.sql] failed snaps=2",
            "a-finally finally [a.sql] failed snaps=2",
        ]
    );
}
