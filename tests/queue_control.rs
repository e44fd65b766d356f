//! The control socket end to end: a real spool in a tempdir, the server in-process, a
//! fake scheduler that records what it was told, and the client (`request`, or the real
//! `mtactl` binary).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use mtad::control::socket::{
    ControlSocket, DeliveryControl, QueueAction, Request, Response, request,
};
use mtad::queue::{Envelope, MessageRecord, QueueId, RcptState, RcptStatus, Spool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Flush(Vec<QueueId>),
    Forget(QueueId),
}

#[derive(Default)]
struct FakeScheduler {
    calls: Mutex<Vec<Call>>,
}

impl FakeScheduler {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl DeliveryControl for FakeScheduler {
    fn flush(&self, ids: &[QueueId]) {
        self.calls.lock().unwrap().push(Call::Flush(ids.to_vec()));
    }
    fn forget(&self, id: QueueId) {
        self.calls.lock().unwrap().push(Call::Forget(id));
    }
}

struct Daemon {
    dir: tempfile::TempDir,
    spool: Spool,
    socket: PathBuf,
    scheduler: Arc<FakeScheduler>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Daemon {
    /// A spool with `messages` messages (two recipients each) and the control socket at
    /// its default place, served in-process.
    async fn start(messages: usize) -> (Daemon, Vec<QueueId>) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(&dir.path().join("spool")).unwrap();
        let mut ids = Vec::new();
        for _ in 0..messages {
            ids.push(commit(&spool).await);
        }
        let socket = dir.path().join("spool").join("control.sock");
        let scheduler = Arc::new(FakeScheduler::default());
        let (stop, stopped) = watch::channel(false);
        let mut daemon = Daemon {
            dir,
            spool,
            socket,
            scheduler,
            stop,
            server: None,
        };
        daemon.serve(stopped);
        (daemon, ids)
    }

    fn serve(&mut self, stopped: watch::Receiver<bool>) {
        let bound = ControlSocket::bind(&self.socket).expect("bind the control socket");
        let delivery: Arc<dyn DeliveryControl> = self.scheduler.clone();
        self.server = Some(tokio::spawn(bound.serve(
            self.spool.clone(),
            delivery,
            stopped,
        )));
    }

    async fn ask(&self, queue: QueueAction, ids: &[QueueId], all: bool) -> Response {
        let req = Request {
            queue,
            ids: ids.to_vec(),
            all,
        };
        let path = self.socket.clone();
        tokio::task::spawn_blocking(move || request(&path, &req))
            .await
            .unwrap()
            .expect("a response")
    }

    fn held(&self, id: QueueId) -> bool {
        self.spool.get(id).unwrap().envelope.held
    }

    /// Stops the server; returns what a restart needs.
    async fn shutdown(mut self) -> (tempfile::TempDir, Spool) {
        self.stop.send(true).unwrap();
        self.server.take().unwrap().await.unwrap().unwrap();
        assert!(
            !self.socket.exists(),
            "the socket file is removed on shutdown"
        );
        (self.dir, self.spool)
    }

    fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("mtad.kdl");
        std::fs::write(
            &path,
            format!(
                "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n{extra}}}\n\
                 listen \"mx\" address=\"127.0.0.1:2525\"\n"
            ),
        )
        .unwrap();
        path
    }
}

async fn commit(spool: &Spool) -> QueueId {
    let envelope = Envelope {
        sender: "alice@example.org".into(),
        recipients: vec!["bob@example.net".into(), "carol@example.net".into()],
        listener: "mx".into(),
        helo: "client.example.org".into(),
        ..Envelope::default()
    };
    let id = spool.new_id();
    let mut record = MessageRecord::new(id, 1_700_000_000_000, &envelope);
    record
        .body_mut()
        .extend_from_slice(b"Subject: test\r\n\r\nhello\r\n");
    spool.commit(record).await.unwrap()
}

fn ok(done: &[QueueId], missing: &[QueueId]) -> Response {
    Response {
        done: done.to_vec(),
        missing: missing.to_vec(),
        ..Response::default()
    }
}

#[tokio::test]
async fn hold_release_delete_and_flush_through_the_socket() {
    let (d, ids) = Daemon::start(3).await;
    let [a, b, c] = ids[..] else { unreachable!() };
    let unknown = QueueId(c.0 + 1000);

    assert_eq!(d.ask(QueueAction::Hold, &[a], false).await, ok(&[a], &[]));
    assert!(d.held(a) && !d.held(b));
    assert_eq!(d.scheduler.take(), [Call::Forget(a)]);
    // Already held: reported done, nothing written, nothing told.
    assert_eq!(d.ask(QueueAction::Hold, &[a], false).await, ok(&[a], &[]));
    assert_eq!(d.scheduler.take(), []);

    // Flush everything: the held message is skipped and said so.
    let flushed = d.ask(QueueAction::Flush, &[], false).await;
    assert_eq!(
        flushed,
        Response {
            held: vec![a],
            ..ok(&[b, c], &[])
        }
    );
    assert_eq!(d.scheduler.take(), [Call::Flush(vec![b, c])]);
    let flushed = d.ask(QueueAction::Flush, &[c, unknown], false).await;
    assert_eq!(flushed, ok(&[c], &[unknown]));
    assert_eq!(d.scheduler.take(), [Call::Flush(vec![c])]);

    // Release: written, then attempted at once.
    let released = d.ask(QueueAction::Release, &[unknown, a], false).await;
    assert_eq!(released, ok(&[a], &[unknown]));
    assert!(!d.held(a));
    assert_eq!(d.scheduler.take(), [Call::Flush(vec![a])]);

    // Hold everything, release everything.
    assert_eq!(
        d.ask(QueueAction::Hold, &[], true).await,
        ok(&[a, b, c], &[])
    );
    assert_eq!(
        d.scheduler.take(),
        [Call::Forget(a), Call::Forget(b), Call::Forget(c)]
    );
    d.spool.set_held(b, false).await.unwrap();
    assert_eq!(
        d.ask(QueueAction::Release, &[], false).await,
        ok(&[a, c], &[])
    );
    assert_eq!(d.scheduler.take(), [Call::Flush(vec![a, c])]);

    // Delete needs ids or "all".
    let refused = d.ask(QueueAction::Delete, &[], false).await;
    assert!(!refused.is_ok());
    assert!(refused.error.unwrap().contains("\"all\":true"));
    assert_eq!(d.spool.list().len(), 3);
    let both = d.ask(QueueAction::Delete, &[a], true).await;
    assert!(!both.is_ok(), "{both:?}");
    assert_eq!(d.spool.list().len(), 3);

    assert_eq!(
        d.ask(QueueAction::Delete, &[b, unknown], false).await,
        ok(&[b], &[unknown])
    );
    assert!(d.spool.get(b).is_none());
    assert_eq!(d.scheduler.take(), [Call::Forget(b)]);
    assert_eq!(
        d.ask(QueueAction::Delete, &[], true).await,
        ok(&[a, c], &[])
    );
    assert!(d.spool.list().is_empty());
    assert_eq!(d.scheduler.take(), [Call::Forget(a), Call::Forget(c)]);
    assert_eq!(d.ask(QueueAction::Hold, &[a], false).await, ok(&[], &[a]));
    d.shutdown().await;
}

#[tokio::test]
async fn holds_made_through_the_socket_survive_a_restart() {
    let (d, ids) = Daemon::start(2).await;
    assert_eq!(
        d.ask(QueueAction::Hold, &ids[..1], false).await,
        ok(&ids[..1], &[])
    );
    let spool_dir = d.spool.dir().to_path_buf();
    let (_dir, spool) = d.shutdown().await;
    drop(spool); // the last handle: the committer stops, the lock is released
    let (spool, recovery) = Spool::open(&spool_dir).unwrap();
    assert_eq!(recovery.messages, 2);
    assert!(spool.get(ids[0]).unwrap().envelope.held);
    assert!(!spool.get(ids[1]).unwrap().envelope.held);
}

/// Sends raw lines on one connection and reads one response line per request.
fn raw_exchange(path: &Path, lines: &[&[u8]]) -> Vec<serde_json::Value> {
    let mut stream = StdUnixStream::connect(path).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answers = Vec::new();
    for line in lines {
        stream.write_all(line).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        answers.push(serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}")));
    }
    answers
}

#[tokio::test]
async fn malformed_requests_get_an_error_response() {
    let (d, ids) = Daemon::start(1).await;
    let path = d.socket.clone();
    let id = ids[0].to_string();
    let valid = format!("{{\"queue\":\"hold\",\"ids\":[\"{id}\"]}}\r\n");
    let answers = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &path,
            &[
                b"this is not json\n",
                b"{\"queue\":\"explode\"}\n",
                b"{\"queue\":\"hold\",\"ids\":[\"not-an-id\"]}\n",
                b"{\"queue\":\"hold\",\"force\":true}\n",
                b"[1,2,3]\n",
                b"\n{\"queue\":\"flush\"}\n",
                valid.as_bytes(),
            ],
        )
    })
    .await
    .unwrap();
    for bad in &answers[..5] {
        assert_eq!(bad["ok"], false, "{bad}");
        assert!(
            bad["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed request"),
            "{bad}"
        );
    }
    // A blank line is skipped; the connection still works after errors.
    assert_eq!(answers[5]["ok"], true, "{}", answers[5]);
    assert_eq!(answers[5]["done"][0], id.as_str());
    assert_eq!(answers[6]["ok"], true, "{}", answers[6]);
    assert_eq!(answers[6]["done"][0], id.as_str());
    assert_eq!(answers[6]["missing"], serde_json::json!([]));
    assert!(d.held(ids[0]));

    // Over-long line: an error, then the connection is closed.
    let path = d.socket.clone();
    let (answer, rest) = tokio::task::spawn_blocking(move || {
        let mut stream = StdUnixStream::connect(&path).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // The server stops reading at the limit, so the write may be cut short.
        let _ = stream.write_all(&vec![b'x'; (1 << 20) + 10]);
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        let mut rest = String::new();
        let _ = reader.read_line(&mut rest);
        (answer, rest)
    })
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"].as_str().unwrap().contains("longer than"),
        "{answer}"
    );
    assert_eq!(rest, "");
    d.shutdown().await;
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    // A daemon that died without cleaning up: the file stays, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (spool, _) = Spool::open(&dir.path().join("spool")).unwrap();
    let bound = ControlSocket::bind(&path).expect("stale socket replaced");
    let (stop, stopped) = watch::channel(false);
    let scheduler: Arc<dyn DeliveryControl> = Arc::new(FakeScheduler::default());
    let server = tokio::spawn(bound.serve(spool, scheduler, stopped));
    let p = path.clone();
    let answer = tokio::task::spawn_blocking(move || {
        request(
            &p,
            &Request {
                queue: QueueAction::Flush,
                ids: vec![],
                all: false,
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer, ok(&[], &[]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists());

    // Something that is not a socket is never deleted.
    std::fs::write(&path, "precious").unwrap();
    let err = ControlSocket::bind(&path).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn a_second_server_is_refused() {
    let (d, ids) = Daemon::start(1).await;
    let err = ControlSocket::bind(&d.socket).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("another mtad"), "{err}");
    // The first one still answers.
    assert_eq!(d.ask(QueueAction::Hold, &ids, false).await, ok(&ids, &[]));
    d.shutdown().await;
}

async fn mtactl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn mtactl_acts_on_the_queue_through_the_socket() {
    let (d, ids) = Daemon::start(3).await;
    let config = d.config("");
    let config = config.to_str().unwrap();
    let [a, b, c] = ids[..] else { unreachable!() };
    let (a_s, b_s) = (a.to_string(), b.to_string());

    let out = mtactl(&["queue", "hold", "-c", config, &a_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{a}: placed on hold\nPlaced on hold: 1 message\n")
    );
    assert!(d.held(a));
    let list = mtactl(&["queue", "list", "-c", config]).await;
    let list = text(&list.stdout);
    assert_eq!(list.matches("(held)").count(), 1, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&a_s) && l.ends_with("(held)")),
        "{list}"
    );

    // Flush with an explicit held id: not done, exit 1.
    let out = mtactl(&["queue", "flush", "-c", config, &a_s, &b_s]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(&format!("{b}: delivery requested")));
    assert!(
        text(&out.stderr).contains(&format!("{a}: on hold, not flushed")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(d.scheduler.take(), [Call::Forget(a), Call::Flush(vec![b])]);

    // Release with one unknown id: the other is released, exit 1.
    let unknown = QueueId(c.0 + 1).to_string();
    let out = mtactl(&["queue", "release", "--config", config, &a_s, &unknown]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(&format!("{a}: released from hold")));
    assert!(
        text(&out.stderr).contains(&format!("{unknown}: no such message in the queue")),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.held(a));

    // Bad ids are refused before asking the daemon.
    let out = mtactl(&["queue", "hold", "-c", config, "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a queue id"));

    // delete without ids is refused by the command line; ALL deletes everything.
    let out = mtactl(&["queue", "delete", "-c", config]).await;
    assert!(!out.status.success());
    assert_eq!(d.spool.list().len(), 3);
    let out = mtactl(&["queue", "delete", "-c", config, &b_s]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{b}: removed\nDeleted: 1 message\n")
    );
    let out = mtactl(&["queue", "delete", "-c", config, "ALL"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{a}: removed\n{c}: removed\nDeleted: 2 messages\n")
    );
    assert!(d.spool.list().is_empty());
    d.shutdown().await;
}

#[tokio::test]
async fn mtactl_uses_the_configured_control_socket() {
    let (mut d, ids) = Daemon::start(1).await;
    // Move the daemon to another socket path, named in the configuration.
    d.stop.send(true).unwrap();
    d.server.take().unwrap().await.unwrap().unwrap();
    d.socket = d.dir.path().join("ctl.sock");
    let (stop, stopped) = watch::channel(false);
    d.stop = stop;
    d.serve(stopped);
    let config = d.config("    control-socket \"ctl.sock\"\n");
    let out = mtactl(&["queue", "hold", "-c", config.to_str().unwrap(), "ALL"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.held(ids[0]));
    d.shutdown().await;
}

#[tokio::test]
async fn mtactl_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\n\
         listen \"mx\" address=\"127.0.0.1:2525\"\n",
    )
    .unwrap();
    let out = mtactl(&["queue", "hold", "-c", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "mtactl: mtad is not running (no control socket at {})\n",
        dir.path().join("spool").join("control.sock").display()
    );
    assert_eq!(text(&out.stderr), expected);
    assert_eq!(text(&out.stdout), "");
}

#[tokio::test]
async fn queue_list_and_show_report_each_recipients_state() {
    let (d, ids) = Daemon::start(1).await;
    let id = ids[0];
    let deferred = RcptStatus {
        state: RcptState::Deferred,
        at_ms: 1_700_000_060_000,
        attempts: 3,
        next_attempt_ms: 1_700_000_900_000,
        detail: "451 4.7.1 greylisted".into(),
    };
    let delivered = RcptStatus {
        state: RcptState::Delivered,
        at_ms: 1_700_000_030_000,
        attempts: 1,
        next_attempt_ms: 0,
        detail: "250 2.0.0 Ok".into(),
    };
    d.spool.set_status(id, 0, deferred).await.unwrap();
    d.spool.set_status(id, 1, delivered).await.unwrap();
    d.spool.set_held(id, true).await.unwrap();
    let config = d.config("");
    let config = config.to_str().unwrap();

    let out = mtactl(&["queue", "list", "-c", config]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = format!(
        "ID                    SIZE ARRIVAL (UTC)        SENDER -> RECIPIENTS\n\
         {id}        24 2023-11-14 22:13:20  alice@example.org -> bob@example.net, carol@example.net (held)\n\
         \x20   bob@example.net: deferred, 3 attempts, next 2023-11-14 22:28:20\n\
         \x20       (451 4.7.1 greylisted)\n\
         \x20   carol@example.net: delivered 2023-11-14 22:13:50, 1 attempt\n\
         \x20       (250 2.0.0 Ok)\n\
         -- 1 message\n"
    );
    assert_eq!(text(&out.stdout), expected);

    let out = mtactl(&["queue", "list", "-c", config, "--format", "json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &list[0];
    assert_eq!(m["id"], id.to_string());
    assert_eq!(m["envelope"]["held"], true);
    assert_eq!(m["rcpt_status"][0]["state"], "Deferred");
    assert_eq!(m["rcpt_status"][0]["attempts"], 3);
    assert_eq!(m["rcpt_status"][0]["next_attempt_ms"], 1_700_000_900_000u64);
    assert_eq!(m["rcpt_status"][0]["detail"], "451 4.7.1 greylisted");
    assert_eq!(m["rcpt_status"][1]["state"], "Delivered");

    let out = mtactl(&[
        "queue",
        "show",
        "-c",
        config,
        &id.to_string(),
        "--format",
        "json",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&shown, m);

    let out = mtactl(&["queue", "show", "-c", config, &id.to_string()]).await;
    let shown = text(&out.stdout);
    for line in [
        "held: yes\n",
        "recipient: <bob@example.net> deferred, 3 attempts, next 2023-11-14 22:28:20\n    (451 4.7.1 greylisted)\n",
        "recipient: <carol@example.net> delivered 2023-11-14 22:13:50, 1 attempt\n",
        "\nSubject: test\r\n",
    ] {
        assert!(shown.contains(line), "{line:?} not in:\n{shown}");
    }
    d.shutdown().await;
}
