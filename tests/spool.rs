//! The spool through the real binary: recovery on restart, torn writes discarded, a
//! failed write answered 451 with nothing half-written, graceful shutdown, and
//! `mtactl queue list`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MSG: &str = "Subject: spool\r\n\r\nbody\r\n";

#[test]
fn messages_survive_a_restart_and_are_listed() {
    let mut mtad = Mtad::start(BASIC);
    let mut ids = Vec::new();
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    for i in 0..5 {
        ids.push(s.send_message(
            &format!("s{i}@src.test"),
            &["b@example.test", "c@example.test"],
            MSG,
        ));
    }
    s.cmd("QUIT", "221");
    assert!(mtad.stop().success());
    mtad.restart();
    assert!(
        mtad.log().contains("messages=5"),
        "recovery not logged:\n{}",
        mtad.log()
    );
    let out = mtad.mtactl(&["queue", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{text}"));
        assert!(
            line.contains(&format!("s{i}@src.test -> b@example.test, c@example.test")),
            "{line}"
        );
    }
    assert!(text.contains("-- 5 messages"), "{text}");
    let json = mtad.mtactl(&["queue", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 5);
    let show = mtad.mtactl(&["queue", "show", &ids[0], "--raw"]);
    assert!(show.status.success());
    assert_eq!(without_received(&show.stdout), MSG.as_bytes());
}

#[test]
fn a_torn_record_is_discarded_on_start() {
    let mut mtad = Mtad::start(BASIC);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let id = s.send_message("a@src.test", &["b@example.test"], MSG);
    drop(s);
    mtad.kill9();
    // what a crash in the middle of a write leaves: the start of a record, cut short
    let newest = newest_segment(&mtad.spool);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    f.write_all(&4096u32.to_le_bytes()).unwrap();
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 1]).unwrap();
    f.write_all(&[b'x'; 100]).unwrap();
    drop(f);
    mtad.restart();
    let log = mtad.log();
    assert!(log.contains("discarded_incomplete=1"), "{log}");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0.id.to_string(), id);
    // the next restart finds a clean spool
    mtad.stop();
    mtad.restart();
    assert!(mtad.log().contains("discarded_incomplete=0"));
}

fn newest_segment(spool: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// A small tmpfs as the spool: the disk fills up between MAIL (which found enough
/// space) and the end of DATA, so the write itself fails. The client gets 451 4.3.0,
/// nothing half-written is ever listed, and the spool works again once there is room.
#[test]
fn a_failed_write_is_451_and_leaves_nothing_behind() {
    assert!(
        nix_is_root(),
        "this test mounts a tmpfs and must run as root (CI does; run ./run-tests with sudo)"
    );
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let _mount = Tmpfs::mount(&spool, "1m");
    let config = BASIC.replace(
        "networks \"trusted\"",
        "limits {\n message-size \"256K\"\n}\nnetworks \"trusted\"",
    );
    let mut mtad = Mtad::start_in(dir, spool.clone(), &config);
    let mut s = mtad.session();
    s.cmd("EHLO client.test", "250");
    let good = s.send_message("a@src.test", &["b@example.test"], MSG);
    s.cmd("MAIL FROM:<a@src.test>", "250");
    s.cmd("RCPT TO:<b@example.test>", "250");
    s.cmd("DATA", "354");
    // now fill the disk
    let filler = spool.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .output();
    let line = format!("{}\r\n", "q".repeat(998));
    for _ in 0..100 {
        s.send(&line);
    }
    s.send(".\r\n");
    s.expect("451 4.3.0");
    std::fs::remove_file(&filler).unwrap();
    let after = s.send_message("a@src.test", &["b@example.test"], MSG);
    s.cmd("QUIT", "221");
    mtad.stop();
    mtad.restart();
    let ids: Vec<String> = mtad
        .queued()
        .iter()
        .map(|(m, _)| m.id.to_string())
        .collect();
    assert_eq!(ids, vec![good, after]);
    for (_, body) in mtad.queued() {
        assert_eq!(without_received(&body), MSG.as_bytes());
    }
    mtad.stop();
}

fn nix_is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0"
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs failed");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn graceful_shutdown_finishes_messages_in_flight() {
    let mut mtad = Mtad::start(BASIC);
    let mut idle = mtad.session();
    idle.cmd("EHLO idle.test", "250");
    let mut busy = mtad.session();
    busy.cmd("EHLO busy.test", "250");
    busy.cmd("MAIL FROM:<a@src.test>", "250");
    busy.cmd("RCPT TO:<b@example.test>", "250");
    busy.cmd("DATA", "354");
    busy.send("Subject: in flight\r\n\r\nfirst half\r\n");
    common::signal(mtad.pid(), "TERM");
    // the idle session is told at once
    idle.expect("421 4.3.2 mx.example.test");
    idle.expect_closed();
    // no new connections
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::net::TcpStream::connect(("127.0.0.1", mtad.port)).is_err());
    // the message in flight completes and is acknowledged
    busy.send("second half\r\n.\r\n");
    busy.expect("250 2.0.0 Ok: queued as");
    busy.expect("421 4.3.2");
    let status = mtad.stop_within(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert_eq!(mtad.queued().len(), 1);
}

#[test]
fn shutdown_deadline_cuts_stalled_sessions() {
    let config = BASIC.replace(
        "spool \"{spool}\"",
        "spool \"{spool}\"\n    shutdown-timeout \"1s\"",
    );
    let mut mtad = Mtad::start(&config);
    let mut busy = mtad.session();
    busy.cmd("EHLO busy.test", "250");
    busy.cmd("MAIL FROM:<a@src.test>", "250");
    busy.cmd("RCPT TO:<b@example.test>", "250");
    busy.cmd("DATA", "354");
    busy.send("Subject: never finished\r\n");
    let start = Instant::now();
    common::signal(mtad.pid(), "INT");
    let status = mtad.stop_within(Duration::from_secs(10));
    assert!(status.success());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(mtad.queued().is_empty(), "an unfinished message was queued");
}

/// A record damaged in the middle of a segment while mtad is stopped (a flipped bit in
/// one message's body): at the next start that message's bytes are moved to
/// `corrupt/` with one warning, and every other message accepted before (by swaks) is
/// still queued and delivered to the next hop.
#[test]
fn a_damaged_record_in_the_middle_loses_no_other_message() {
    // the next hop is down at first: the messages stay queued, deferred
    let sink_port = free_port();
    let config = DAMAGE_CONFIG.replace("{sink}", &sink_port.to_string());
    let mut mtad = Mtad::start(&config);
    let subjects: Vec<String> = (0..5).map(|i| format!("damage test {i}")).collect();
    for subject in &subjects {
        let out = swaks(
            mtad.port,
            &[
                "--from",
                "alice@src.test",
                "--to",
                "bob@example.test",
                "--header",
                &format!("Subject: {subject}"),
                "--body",
                &"a line of the body of the message\n".repeat(50),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    mtad.wait_log("deferred", 5, Duration::from_secs(20));
    assert!(mtad.stop().success());

    let mut queued = mtad.queued();
    assert_eq!(queued.len(), 5);
    queued.sort_by_key(|(m, _)| m.arrival_ms);
    let victim = queued[2].0.location;
    let victim_subject = String::from_utf8_lossy(&queued[2].1)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        .unwrap();
    let segment = mtad.spool.join(format!("seg-{:016x}.log", victim.segment));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[(victim.body_offset + victim.body_len / 2) as usize] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    let sink = peers::Sink::start_at(format!("127.0.0.1:{sink_port}").parse().unwrap(), &[]);
    mtad.restart();
    let log = mtad.log();
    assert!(log.contains("moved_to_corrupt=1"), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("damaged record in the middle of a segment moved to corrupt/"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(&format!("offset={}", victim.record_offset)),
        "{}",
        warnings[0]
    );
    let kept = mtad.spool.join("corrupt").join(format!(
        "seg-{:016x}.log@{}",
        victim.segment, victim.record_offset
    ));
    let kept_bytes = std::fs::read(&kept).expect("the damaged bytes are kept");
    assert_eq!(
        kept_bytes,
        bytes[victim.record_offset as usize..(victim.record_offset + victim.record_len) as usize]
    );

    let out = mtad.mtactl(&["queue", "flush"]);
    assert!(out.status.success(), "{out:?}");
    let dumps = sink.dumps_within(4, Duration::from_secs(20));
    let mut delivered: Vec<String> = dumps
        .iter()
        .filter_map(|d| {
            d.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect();
    delivered.sort();
    let mut expected: Vec<String> = subjects
        .iter()
        .filter(|s| **s != victim_subject)
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(delivered, expected);
    // the queue is empty once they are delivered
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mtad.queued().is_empty() {
        assert!(Instant::now() < deadline, "still queued");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything relayed to `{sink}`, retried after an hour (or a flush).
const DAMAGE_CONFIG: &str = r#"
server {
    hostname "mx.example.test"
    spool "{spool}"
}
listen "mx" address="127.0.0.1:{port}"
networks "trusted" "127.0.0.0/8"
stage "rcpt" {
    accept client="trusted"
}
stage "route" {
    transport "*" "smtp:[127.0.0.1]:{sink}"
}
delivery {
    backoff-min "1h"
    backoff-max "2h"
    connect-timeout "2s"
}
"#;
