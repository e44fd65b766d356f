//! Who mtad runs as (`server { user }`, `--allow-root`; docs/operations.md). These
//! tests run as root, as the whole suite does here and in CI.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

/// A configuration in a directory everyone may enter (the spool is made for `nobody`).
fn setup(server_extra: &str) -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n{server_extra}}}\nlisten \"mx\" address=\"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    (dir, config, port)
}

fn mtad(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtad"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn root_without_a_user_is_refused_unless_allowed() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests run as root"
    );
    let (_dir, config, _) = setup("");
    let out = mtad(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("mtad does not run as root"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
}

#[test]
fn root_with_a_user_binds_then_becomes_that_user() {
    let (dir, config, port) = setup("    user \"nobody\"\n");
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("mtad started")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{status}: {}", std::fs::read_to_string(&log).unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    // real, effective, saved and file-system ids: all nobody's, no way back
    assert_eq!(ids("Uid:"), vec![nobody.uid.as_raw(); 4], "{status}");
    assert_eq!(ids("Gid:"), vec![nobody.gid.as_raw(); 4], "{status}");
    let spool = std::fs::metadata(dir.path().join("spool")).unwrap();
    assert_eq!(
        spool.uid(),
        nobody.uid.as_raw(),
        "the spool is made for the user"
    );
    assert_eq!(spool.mode() & 0o777, 0o700);
    // it serves on the port bound as root
    let out = common::swaks(port, &["--to", "someone@example.test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("554 5.7.1"),
        "served (and refused the relay): {text}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_spool_of_someone_else_or_an_unknown_user_is_refused() {
    let (dir, config, _) = setup("    user \"nobody\"\n");
    std::fs::create_dir(dir.path().join("spool")).unwrap(); // root's
    let out = mtad(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the spool")
            && err.contains("not to `nobody`")
            && err.contains("chown -R nobody"),
        "{err}"
    );

    let (_dir, config, _) = setup("    user \"no-such-user-here\"\n");
    let out = mtad(&config, &["--allow-root"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no account `no-such-user-here`"), "{err}");
}

#[test]
fn another_user_cannot_become_the_configured_one() {
    let (_dir, config, _) = setup("    user \"daemon\"\n");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mtad"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("server.user is `daemon` but mtad was started as uid"),
        "{err}"
    );
}
