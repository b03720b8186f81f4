//! Nothing a user backs up appears in the repository in the clear: contents, names, link
//! targets, tags, stream names, command lines.

use std::fs;
use std::os::unix::fs::symlink;

use crate::harness::{self, Env, all_files, contains};

#[test]
fn repository_holds_no_plaintext() {
    let marker = harness::random_hex(16); // 32 hex digits, unique to this run
    let env = Env::new();
    env.init();

    let src = env.path(format!("dir-{marker}"));
    fs::create_dir(&src).unwrap();
    let content = format!("the secret is {marker}\n").repeat(100);
    fs::write(src.join(format!("file-{marker}.txt")), &content).unwrap();
    fs::write(src.join("plain.txt"), format!("short {marker}")).unwrap();
    fs::create_dir(src.join(format!("sub-{marker}"))).unwrap();
    symlink(format!("../target-{marker}"), src.join("link")).unwrap();

    env.create(&[src.to_str().unwrap(), "--tag", &format!("tag-{marker}")]);
    env.run_stdin(
        &[
            "snapshot",
            "create",
            "--stdin",
            "--stdin-name",
            &format!("stream-{marker}.sql"),
            "--tag",
            &format!("t2-{marker}"),
        ],
        format!("-- dump {marker}\n").as_bytes(),
    )
    .ok("snapshot create --stdin");
    env.create(&[
        "--command",
        &format!("printf '%s' cmd-{marker}"),
        "--stdin-name",
        &format!("cmd-{marker}.out"),
    ]);

    // The data really is in there: it comes back.
    let stored = env.stored(&src);
    let back = env.restore_stdout("latest", Some(&format!("cmd-{marker}.out")));
    assert_eq!(back, format!("cmd-{marker}").as_bytes());
    let back = env.restore_stdout(
        &env.list()[0]["id"].as_str().unwrap()[..12],
        Some(&format!("{stored}/file-{marker}.txt")),
    );
    assert_eq!(back, content.as_bytes());
    let listed = serde_json::to_string(&env.list()).unwrap();
    assert!(
        listed.contains(&format!("tag-{marker}")),
        "the tag should be listed: {listed}"
    );

    // No object in the repository, and no file name, contains the marker in any form.
    let needles: Vec<(String, Vec<u8>)> = vec![
        ("marker".into(), marker.as_bytes().to_vec()),
        (
            "marker upper-case".into(),
            marker.to_uppercase().into_bytes(),
        ),
        ("marker bytes".into(), hex::decode(&marker).unwrap()),
        ("half marker".into(), marker.as_bytes()[..16].to_vec()),
    ];
    let files = all_files(&env.repo);
    let snapshots = files
        .iter()
        .filter(|p| p.parent().unwrap().ends_with("snapshots"))
        .count();
    assert_eq!(snapshots, 3, "expected 3 snapshot objects among {files:?}");
    assert!(
        files.len() >= 8,
        "expected config, keys, packs, index and snapshot objects, found {files:?}"
    );
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&env.repo).unwrap();
        let bytes = fs::read(f).unwrap();
        for (what, n) in &needles {
            if contains(rel.as_os_str().as_encoded_bytes(), n) {
                found.push(format!("{what} in the name {}", rel.display()));
            }
            if contains(&bytes, n) {
                found.push(format!("{what} inside {}", rel.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "plaintext leaked into the repository:\n{}",
        found.join("\n")
    );
}
