//! Key management: `key list`, `key add`, `key remove`, `key passwd`.
//!
//! Every key file wraps the same master key under its own password, so adding or removing one
//! never touches data. Rotation after a leaked password: `key passwd` (and `key remove` any
//! other key file that used it). A leaked *master key* (someone had the password and a copy
//! of a key file, or of a decrypted key) cannot be rotated this way: every object is sealed
//! under it; README.md says what to do then.

use super::*;
use tresor::repo::KeyListing;

/// The new password: `--new-password-file`, else `$TRESOR_NEW_PASSWORD`, else asked twice on a
/// terminal.
fn new_password(a: &NewPasswordArgs) -> Result<Zeroizing<Vec<u8>>> {
    password_from(
        a.new_password_file.as_deref(),
        "TRESOR_NEW_PASSWORD",
        ("new password", "new password"),
        true,
        "use --new-password-file or TRESOR_NEW_PASSWORD",
    )
}

/// KDF parameters for a new key file: the flags over `base`.
fn new_params(a: &NewPasswordArgs, base: KdfParams) -> KdfParams {
    KdfParams {
        memory_kib: a.kdf_memory_kib.unwrap_or(base.memory_kib),
        iterations: a.kdf_iterations.unwrap_or(base.iterations),
        parallelism: base.parallelism,
    }
}

fn print_key(k: &tresor::repo::keys::KeyInfo, what: &str) {
    println!(
        "{what} key file {} (host {}, user {}, argon2id {} KiB × {} passes)",
        &k.id[..12],
        k.host,
        if k.user.is_empty() { "?" } else { &k.user },
        k.memory_kib,
        k.iterations
    );
}

pub(super) fn key_list(g: &Global, a: JsonArg) -> Result<u8> {
    let repo = open(g)?;
    let keys: Vec<KeyListing> = repo.keys()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(exit::OK);
    }
    println!(
        "{:<3} {:<12}  {:<20}  {:<16}  {:<12}  kdf",
        "", "id", "created", "host", "user"
    );
    for k in &keys {
        let mark = if k.in_use { "*" } else { "" };
        match &k.info {
            Some(i) => println!(
                "{mark:<3} {:<12}  {:<20}  {:<16}  {:<12}  argon2id {} KiB × {} passes × {} lanes",
                &k.name[..12.min(k.name.len())],
                i.created.get(..19).unwrap_or(&i.created).replace('T', " "),
                i.host,
                if i.user.is_empty() { "?" } else { &i.user },
                i.memory_kib,
                i.iterations,
                i.parallelism
            ),
            None => println!(
                "{mark:<3} {:<12}  not a usable key file: {}",
                &k.name[..12.min(k.name.len())],
                k.problem.as_deref().unwrap_or("")
            ),
        }
    }
    if !g.quiet {
        println!("{} key files; * opened the repository now", keys.len());
    }
    Ok(exit::OK)
}

pub(super) fn key_add(g: &Global, a: KeyAddArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock(g, &mut repo, "key add", false)?;
    let pw = new_password(&a.new)?;
    let params = new_params(&a.new, KdfParams::default());
    let host = a.host.unwrap_or_else(repo::hostname);
    let user = a.user.unwrap_or_else(repo::username);
    let k = repo.add_key(&pw, params, &host, &user)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&k)?);
    } else if !g.quiet {
        print_key(&k, "added");
    }
    Ok(exit::OK)
}

pub(super) fn key_remove(g: &Global, a: KeyRemoveArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock(g, &mut repo, "key remove", true)?;
    let k = repo.remove_key(&a.id, a.force)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&k)?);
    } else if !g.quiet {
        println!("removed key file {}", k.name);
    }
    Ok(exit::OK)
}

pub(super) fn key_passwd(g: &Global, a: KeyPasswdArgs) -> Result<u8> {
    let mut repo = open(g)?;
    lock(g, &mut repo, "key passwd", true)?;
    let pw = new_password(&a.new)?;
    let current = repo
        .keys()?
        .into_iter()
        .find(|k| k.in_use)
        .and_then(|k| k.info)
        .map(|i| i.params())
        .unwrap_or_default();
    let (new, old) = repo.change_password(&pw, Some(new_params(&a.new, current)))?;
    if a.json {
        let v = serde_json::json!({ "added": new, "removed": old });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !g.quiet {
        print_key(&new, "password changed: new");
        println!("removed the old key file {old}");
    }
    Ok(exit::OK)
}
