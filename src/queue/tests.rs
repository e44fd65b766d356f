use std::collections::HashSet;
use std::fs::OpenOptions;
use std::net::IpAddr;
use std::path::Path;

use super::segment::segment_path;
use super::*;

fn envelope(rcpts: usize) -> Envelope {
    Envelope {
        sender: "alice@example.org".into(),
        recipients: (0..rcpts).map(|i| format!("rcpt{i}@example.net")).collect(),
        listener: "mx".into(),
        helo: "client.example.org".into(),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        auth_user: None,
        body_8bit: false,
        smtputf8: false,
        held: false,
        expanded: false,
        filter: None,
        tls: None,
        revision: None,
        external: false,
    }
}

fn body_for(id: QueueId, size: usize) -> Vec<u8> {
    let mut body = format!("Received: from test\r\nMessage-ID: <{id}@test>\r\n\r\n").into_bytes();
    let mut i = 0u8;
    while body.len() < size {
        body.push(i);
        i = i.wrapping_add(1);
    }
    body
}

async fn commit_one(spool: &Spool, env: &Envelope, size: usize) -> (QueueId, Vec<u8>) {
    let id = spool.new_id();
    let mut rec = MessageRecord::new(id, 1_700_000_000_000, env);
    let body = body_for(id, size);
    rec.body_mut().extend_from_slice(&body);
    assert_eq!(rec.body(), &body[..]);
    let got = spool.commit(rec).await.expect("commit");
    assert_eq!(got, id);
    (id, body)
}

fn open_rotating(dir: &Path, rotate_bytes: u64) -> (Spool, Recovery) {
    Spool::open_with(dir, SpoolOptions { rotate_bytes }).expect("open spool")
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list_segments(dir).unwrap()
}

fn queued_status() -> RcptStatus {
    index::initial_status(1_700_000_000_000)
}

#[tokio::test]
async fn commit_then_reopen_keeps_envelope_and_body() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool"); // does not exist yet: open creates it
    let env = Envelope {
        sender: "jörg@exämple.org".into(),
        recipients: vec!["a@example.net".into(), "b@example.net".into()],
        listener: "submission".into(),
        helo: "[192.0.2.1]".into(),
        client_ip: Some("2001:db8::1".parse::<IpAddr>().unwrap()),
        auth_user: Some("jörg".into()),
        body_8bit: true,
        smtputf8: true,
        held: true,
        expanded: true,
        filter: Some("amavis".into()),
        tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into()),
        revision: Some("0123456789ab".into()),
        external: true,
    };
    let (spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(
        rec,
        Recovery {
            messages: 0,
            discarded_tails: 0,
            damaged: 0,
            segments: 0
        }
    );
    let (id, body) = commit_one(&spool, &env, 4096).await;
    // Visible at once, before any reopen.
    assert_eq!(spool.get(id).unwrap().envelope, env);
    assert_eq!(spool.read_body(id).unwrap(), body);
    drop(spool);

    let (spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(rec.messages, 1);
    assert_eq!(rec.discarded_tails, 0);
    let list = spool.list();
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!(m.id, id);
    assert_eq!(m.envelope, env);
    assert_eq!(m.arrival_ms, 1_700_000_000_000);
    assert_eq!(m.size, body.len() as u64);
    assert_eq!(m.rcpt_status, vec![queued_status(), queued_status()]);
    assert_eq!(spool.read_body(id).unwrap(), body);

    // The read-only view agrees while the daemon runs.
    let scanned = scan(&dir).unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].envelope, env);
    assert_eq!(read_body(&dir, &scanned[0]).unwrap(), body);

    // Null sender, no ip, no auth round-trip too.
    let env2 = Envelope {
        sender: String::new(),
        client_ip: None,
        ..envelope(1)
    };
    let (id2, body2) = commit_one(&spool, &env2, 0).await;
    drop(spool);
    let (spool, _) = Spool::open(&dir).unwrap();
    assert_eq!(spool.get(id2).unwrap().envelope, env2);
    assert_eq!(spool.read_body(id2).unwrap(), body2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_commits_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let env = envelope(1 + t % 3);
            let mut ids = Vec::new();
            for _ in 0..100 {
                ids.push(commit_one(&spool, &env, 4096).await.0);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), 2000);
    assert_eq!(spool.list().len(), 2000);
    drop(spool);

    let (spool, rec) = Spool::open(tmp.path()).unwrap();
    assert_eq!(rec.messages, 2000);
    let listed: Vec<QueueId> = spool.list().iter().map(|m| m.id).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    for id in all.iter().step_by(97) {
        assert_eq!(spool.read_body(*id).unwrap(), body_for(*id, 4096));
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    AppendGarbage,
    ZeroSecondHalfOfLastRecord,
    TruncateLastRecord,
    FlipCrcOfLastRecord,
}

async fn torn_tail(damage: Damage) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let mut msgs = Vec::new();
    for _ in 0..3 {
        msgs.push(commit_one(&spool, &envelope(2), 3000).await);
    }
    let locs: Vec<BodyLocation> = msgs
        .iter()
        .map(|(id, _)| spool.get(*id).unwrap().location)
        .collect();
    drop(spool);

    let last = locs[2];
    let path = segment_path(dir, last.segment);
    let full_len = last.record_offset + last.record_len;
    // zeros follow the records, up to the file's end
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!(file_len > full_len);
    assert_eq!(records_end(&path), full_len);
    let (survivors, good_len) = match damage {
        Damage::AppendGarbage => {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(b"\x07\x00garbage that is not a record", full_len)
                .unwrap();
            (3, full_len)
        }
        Damage::ZeroSecondHalfOfLastRecord => {
            // a write torn in the zeros ahead: the record's end never reached the disk
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            let half = last.record_len / 2;
            f.write_all_at(&vec![0; half as usize], last.record_offset + half)
                .unwrap();
            (2, last.record_offset)
        }
        Damage::TruncateLastRecord => {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(last.record_offset + last.record_len / 2).unwrap();
            (2, last.record_offset)
        }
        Damage::FlipCrcOfLastRecord => {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[last.record_offset as usize + 5] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            (2, last.record_offset)
        }
    };

    // The read-only view neither reports the torn record nor repairs anything.
    let len_before = std::fs::metadata(&path).unwrap().len();
    let scanned = scan(dir).unwrap();
    assert_eq!(scanned.len(), survivors, "{damage:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len_before);

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, survivors, "{damage:?}");
    assert_eq!(rec.discarded_tails, 1, "{damage:?}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        good_len,
        "{damage:?}"
    );
    for (id, body) in &msgs[..survivors] {
        assert_eq!(&spool.read_body(*id).unwrap(), body);
    }
    if survivors == 2 {
        assert!(spool.get(msgs[2].0).is_none());
    }
    // Writing goes on in a new segment, and the next start finds nothing torn.
    let (id, body) = commit_one(&spool, &envelope(1), 100).await;
    drop(spool);
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.discarded_tails, 0);
    assert_eq!(rec.messages, survivors + 1);
    assert_eq!(spool.read_body(id).unwrap(), body);
}

#[tokio::test]
async fn torn_tail_garbage_appended() {
    torn_tail(Damage::AppendGarbage).await;
}

#[tokio::test]
async fn torn_tail_in_the_zeros_ahead() {
    torn_tail(Damage::ZeroSecondHalfOfLastRecord).await;
}

#[tokio::test]
async fn torn_tail_last_record_cut_short() {
    torn_tail(Damage::TruncateLastRecord).await;
}

#[tokio::test]
async fn torn_tail_crc_mismatch() {
    torn_tail(Damage::FlipCrcOfLastRecord).await;
}

#[tokio::test]
async fn segment_with_interrupted_creation_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (id, body) = commit_one(&spool, &envelope(1), 500).await;
    drop(spool);
    // A crash between create and the magic reaching the disk.
    std::fs::write(segment_path(dir, 9), b"MTA").unwrap();
    std::fs::write(segment_path(dir, 10), b"").unwrap();
    assert_eq!(scan(dir).unwrap().len(), 1);
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 1);
    assert_eq!(rec.discarded_tails, 2);
    assert!(!segment_path(dir, 9).exists());
    assert!(!segment_path(dir, 10).exists());
    assert_eq!(spool.read_body(id).unwrap(), body);
    // The new segment still sorts after every segment that ever existed.
    assert!(segments(dir).contains(&11));
}

#[tokio::test]
async fn foreign_file_is_reported_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(segment_path(dir, 1), b"this is not a segment at all").unwrap();
    let err = Spool::open(dir).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("magic"), "{err}");
}

#[tokio::test]
async fn status_and_remove_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(2), 100).await;
    let (b, _) = commit_one(&spool, &envelope(1), 100).await;
    let delivered = RcptStatus {
        state: RcptState::Delivered,
        at_ms: 1_700_000_100_000,
        attempts: 1,
        next_attempt_ms: 0,
        detail: "250 2.0.0 Ok: queued as 4XyZ".into(),
    };
    let deferred = RcptStatus {
        state: RcptState::Deferred,
        at_ms: 1_700_000_100_001,
        attempts: 3,
        next_attempt_ms: 1_700_000_700_000,
        detail: "451 4.7.1 greylisted".into(),
    };
    spool.set_status(a, 1, delivered.clone()).await.unwrap();
    spool.set_status(a, 0, deferred.clone()).await.unwrap();
    spool.remove(b).await.unwrap();
    assert!(spool.get(b).is_none());
    assert_eq!(
        spool.get(a).unwrap().rcpt_status,
        vec![deferred.clone(), delivered.clone()]
    );

    let err = spool.set_status(a, 2, delivered.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::NoSuchRecipient {
                rcpt: 2,
                count: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = spool.remove(b).await.unwrap_err();
    assert!(matches!(err, SpoolError::NotFound(id) if id == b), "{err}");
    let err = spool.set_status(b, 0, delivered.clone()).await.unwrap_err();
    assert!(matches!(err, SpoolError::NotFound(_)), "{err}");
    drop(spool);

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 1);
    assert!(spool.get(b).is_none());
    assert_eq!(spool.get(a).unwrap().rcpt_status, vec![deferred, delivered]);
    assert_eq!(scan(dir).unwrap().len(), 1);
}

#[tokio::test]
async fn hold_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    let (b, _) = commit_one(&spool, &envelope(1), 100).await;
    spool.set_held(a, true).await.unwrap();
    assert!(spool.get(a).unwrap().envelope.held);
    assert!(!spool.get(b).unwrap().envelope.held);
    // Holding again is harmless.
    spool.set_held(a, true).await.unwrap();
    drop(spool);

    let held: Vec<(QueueId, bool)> = scan(dir)
        .unwrap()
        .iter()
        .map(|m| (m.id, m.envelope.held))
        .collect();
    assert_eq!(held, vec![(a, true), (b, false)]);
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 2);
    assert!(spool.get(a).unwrap().envelope.held);
    assert!(!spool.get(b).unwrap().envelope.held);
}

#[tokio::test]
async fn release_after_hold_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    // Held by policy at commit time (flag bit2), released by the operator.
    let held_env = Envelope {
        held: true,
        ..envelope(1)
    };
    let (b, _) = commit_one(&spool, &held_env, 100).await;
    spool.set_held(a, true).await.unwrap();
    drop(spool);

    let (spool, _) = Spool::open(dir).unwrap();
    assert!(spool.get(a).unwrap().envelope.held);
    assert!(spool.get(b).unwrap().envelope.held);
    spool.set_held(a, false).await.unwrap();
    spool.set_held(b, false).await.unwrap();
    assert!(!spool.get(a).unwrap().envelope.held);
    drop(spool);

    let (spool, _) = Spool::open(dir).unwrap();
    assert!(!spool.get(a).unwrap().envelope.held);
    assert!(!spool.get(b).unwrap().envelope.held);
    assert!(scan(dir).unwrap().iter().all(|m| !m.envelope.held));
}

#[tokio::test]
async fn hold_of_an_unknown_id_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    let unknown = QueueId(a.0 + 1);
    let err = spool.set_held(unknown, true).await.unwrap_err();
    assert!(
        matches!(err, SpoolError::NotFound(id) if id == unknown),
        "{err}"
    );
    spool.remove(a).await.unwrap();
    let err = spool.set_held(a, false).await.unwrap_err();
    assert!(matches!(err, SpoolError::NotFound(id) if id == a), "{err}");
}

/// Appends already sealed records to the newest segment, as a daemon would have.
/// Writes `records` after the last record of the newest segment (over the zeros the
/// committer writes ahead of its records, as it would).
fn append_records(dir: &Path, records: &[Vec<u8>]) {
    let newest = *segments(dir).last().unwrap();
    let path = segment_path(dir, newest);
    let mut at = records_end(&path);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    for r in records {
        f.write_all_at(r, at).unwrap();
        at += r.len() as u64;
    }
}

/// Where a segment's records end: the zeros after them are the committer's.
fn records_end(path: &Path) -> u64 {
    let end = segment::read_segment(path, |_| Ok(())).unwrap();
    assert_eq!(end.torn, None);
    end.good_len
}

#[tokio::test]
async fn hold_record_for_a_removed_message_is_ignored_on_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    let (b, _) = commit_one(&spool, &envelope(1), 100).await;
    spool.remove(a).await.unwrap();
    drop(spool);
    // The API refuses to write these (NotFound); replay ignores them all the same, like
    // status records for a message that is gone.
    append_records(
        dir,
        &[
            record::encode_hold(a, true),
            record::encode_hold(QueueId(b.0 + 100), true),
            record::encode_hold(b, true),
        ],
    );
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 1);
    assert_eq!(rec.discarded_tails, 0);
    assert!(spool.get(a).is_none());
    assert!(spool.get(b).unwrap().envelope.held);
}

#[tokio::test]
async fn hold_record_with_a_bad_flag_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    drop(spool);
    let mut bad = record::encode_hold(a, true);
    let last = bad.len() - 1;
    bad[last] = 2;
    let crc = record::record_crc(bad[8], &bad[9..]);
    bad[4..8].copy_from_slice(&crc.to_le_bytes());
    append_records(dir, &[bad]);
    let err = Spool::open(dir).unwrap_err();
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("held flag 2"), "{err}");
}

#[tokio::test]
async fn dead_segments_are_deleted_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Rotate after every batch: each request lands in its own segment.
    let (spool, _) = open_rotating(dir, 1);
    let (a, _) = commit_one(&spool, &envelope(1), 100).await; // seg 1
    let (b, _) = commit_one(&spool, &envelope(1), 100).await; // seg 2
    assert_eq!(spool.get(a).unwrap().location.segment, 1);
    assert_eq!(spool.get(b).unwrap().location.segment, 2);
    spool.barrier().await;
    assert_eq!(segments(dir), vec![1, 2, 3]);

    // b's segment is dead, but the older one still holds a: nothing may go.
    spool.remove(b).await.unwrap(); // record in seg 3
    spool.barrier().await;
    assert_eq!(segments(dir), vec![1, 2, 3, 4]);

    // Now everything older than the active segment is dead and goes, in order.
    spool.remove(a).await.unwrap(); // record in seg 4, then rotation to seg 5
    spool.barrier().await;
    assert_eq!(segments(dir), vec![5]);
    drop(spool);

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 0);
    assert_eq!(rec.segments, 1);
    // The empty segment from the last run is collected at start.
    assert_eq!(segments(dir), vec![6]);
    assert!(spool.list().is_empty());
}

#[tokio::test]
async fn records_spanning_many_segments_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = open_rotating(dir, 16 * 1024);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..40 {
                out.push(commit_one(&spool, &envelope(1 + t), 1024).await);
            }
            out
        }));
    }
    let mut msgs = Vec::new();
    for t in tasks {
        msgs.extend(t.await.unwrap());
    }
    // Remove a few from the middle; their segments stay (older live ones remain).
    for (id, _) in msgs.iter().skip(50).take(10) {
        spool.remove(*id).await.unwrap();
    }
    spool.barrier().await;
    let seg_count = segments(dir).len();
    assert!(seg_count >= 5, "only {seg_count} segments");
    drop(spool);

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 150);
    assert_eq!(rec.segments, seg_count);
    let removed: HashSet<QueueId> = msgs.iter().skip(50).take(10).map(|m| m.0).collect();
    for (id, body) in &msgs {
        if removed.contains(id) {
            assert!(spool.get(*id).is_none());
        } else {
            assert_eq!(&spool.read_body(*id).unwrap(), body);
        }
    }
    let in_segments: HashSet<u64> = spool.list().iter().map(|m| m.location.segment).collect();
    assert!(in_segments.len() >= 4);
}

#[tokio::test]
async fn second_open_is_refused_while_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let err = Spool::open(tmp.path()).unwrap_err();
    match &err {
        SpoolError::Locked { dir, holder } => {
            assert_eq!(dir, tmp.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("in use by another mtad"), "{text}");
    // A clone keeps the lock; dropping the last handle releases it.
    let clone = spool.clone();
    drop(spool);
    assert!(matches!(
        Spool::open(tmp.path()),
        Err(SpoolError::Locked { .. })
    ));
    drop(clone);
    Spool::open(tmp.path()).unwrap();
}

#[tokio::test]
async fn write_failure_refuses_the_batch_and_keeps_the_spool_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, body_a) = commit_one(&spool, &envelope(1), 2000).await;

    // The committer now holds a read-only handle: the next write fails with EBADF, and so
    // does the truncation, so the segment is abandoned.
    spool.break_active_segment().await.unwrap();
    let b = spool.new_id();
    let mut rec = MessageRecord::new(b, 1, &envelope(1));
    rec.body_mut().extend_from_slice(b"lost\r\n");
    let err = spool.commit(rec).await.unwrap_err();
    assert!(
        matches!(
            err,
            SpoolError::Io {
                op: "write segment",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cannot write segment"), "{err}");
    assert!(spool.get(b).is_none());

    // The next commit goes to a new segment and succeeds.
    let (c, body_c) = commit_one(&spool, &envelope(1), 2000).await;
    assert_ne!(
        spool.get(a).unwrap().location.segment,
        spool.get(c).unwrap().location.segment
    );
    assert_eq!(spool.read_body(a).unwrap(), body_a);
    drop(spool);

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 2);
    assert_eq!(rec.discarded_tails, 0);
    assert!(spool.get(b).is_none());
    assert_eq!(spool.read_body(a).unwrap(), body_a);
    assert_eq!(spool.read_body(c).unwrap(), body_c);
}

#[tokio::test]
async fn record_buffer_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let id = spool.new_id();
    let mut rec = MessageRecord::new(id, 5, &envelope(1));
    assert_eq!(rec.id(), id);
    assert_eq!(rec.body_len(), 0);
    rec.body_mut().extend_from_slice(b"refused body");
    assert_eq!(rec.body_len(), 12);
    rec.truncate_body();
    assert_eq!(rec.body_len(), 0);
    assert_eq!(rec.body(), b"");
    rec.body_mut().extend_from_slice(b"second try\r\n");
    spool.commit(rec).await.unwrap();
    assert_eq!(spool.read_body(id).unwrap(), b"second try\r\n");

    // The same id twice is a caller bug; the first message is kept.
    let mut dup = MessageRecord::new(id, 5, &envelope(1));
    dup.body_mut().extend_from_slice(b"other");
    let err = spool.commit(dup).await.unwrap_err();
    assert!(
        matches!(err, SpoolError::DuplicateId(d) if d == id),
        "{err}"
    );
    assert_eq!(spool.read_body(id).unwrap(), b"second try\r\n");

    // Clobbering the envelope prefix through body_mut is caught.
    let mut bad = MessageRecord::new(spool.new_id(), 5, &envelope(1));
    bad.body_mut().clear();
    assert!(matches!(
        spool.commit(bad).await,
        Err(SpoolError::InvalidRecord(_))
    ));
    let mut bad = MessageRecord::new(spool.new_id(), 5, &envelope(1));
    bad.body_mut()[12] ^= 1;
    bad.body_mut().extend_from_slice(b"x");
    assert!(matches!(
        spool.commit(bad).await,
        Err(SpoolError::InvalidRecord(_))
    ));

    spool.close();
    let mut late = MessageRecord::new(spool.new_id(), 5, &envelope(1));
    late.body_mut().extend_from_slice(b"late");
    assert!(matches!(spool.commit(late).await, Err(SpoolError::Closed)));
    // Reads still work after close.
    assert_eq!(spool.list().len(), 1);
}

#[tokio::test]
async fn ids_increase_and_start_above_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let mut last = spool.new_id();
    for _ in 0..10_000 {
        let next = spool.new_id();
        assert!(next > last);
        last = next;
    }
    // An id from the future (a clock that later went back): new ids must stay above it.
    let future = QueueId(last.0 + (1_000_000 << 24));
    let mut rec = MessageRecord::new(future, 1, &envelope(1));
    rec.body_mut().extend_from_slice(b"x");
    spool.commit(rec).await.unwrap();
    drop(spool);
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    assert!(spool.new_id() > future);
}

#[test]
fn queue_id_text_form() {
    let id = QueueId(0x0000_0065_A1B2_C3D4);
    assert_eq!(id.to_string(), "00000065A1B2C3D4");
    assert_eq!("00000065A1B2C3D4".parse::<QueueId>().unwrap(), id);
    assert_eq!("00000065a1b2c3d4".parse::<QueueId>().unwrap(), id);
    assert!("65A1B2C3D4".parse::<QueueId>().is_err());
    assert!("+0000065A1B2C3D4".parse::<QueueId>().is_err());
    assert!("00000065A1B2C3DG".parse::<QueueId>().is_err());
    assert_eq!(serde_json::to_string(&id).unwrap(), "\"00000065A1B2C3D4\"");
    let back: QueueId = serde_json::from_str("\"00000065A1B2C3D4\"").unwrap();
    assert_eq!(back, id);
}

#[test]
fn queued_message_serializes_without_location() {
    let msg = QueuedMessage {
        id: QueueId(1),
        arrival_ms: 2,
        size: 3,
        envelope: envelope(1),
        rcpt_status: vec![queued_status()],
        location: BodyLocation::default(),
    };
    let json = serde_json::to_value(&msg).unwrap();
    assert_eq!(json["id"], "0000000000000001");
    assert_eq!(json["envelope"]["client_ip"], "192.0.2.7");
    assert_eq!(json["rcpt_status"][0]["state"], "Queued");
    assert!(json.get("location").is_none());
}

#[tokio::test]
async fn free_space_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    assert!(spool.free_space().unwrap() > 0);
}

/// A Message record as the first release wrote it (no TLS, no revision), byte by byte.
#[test]
fn records_without_a_revision_still_read() {
    let mut payload = vec![1u8]; // version
    payload.extend_from_slice(&7u64.to_le_bytes()); // id
    payload.extend_from_slice(&1_700_000_000_000u64.to_le_bytes()); // arrival
    payload.push(0b0000_0100); // held
    for s in ["a@example.org", "mx", "client.test", "192.0.2.1", ""] {
        payload.extend_from_slice(&(s.len() as u32).to_le_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&13u32.to_le_bytes());
    payload.extend_from_slice(b"b@example.net");
    payload.extend_from_slice(&4u64.to_le_bytes());
    payload.extend_from_slice(b"hi\r\n");
    let record::Decoded::Message(meta) = record::decode(record::KIND_MESSAGE, &payload).unwrap()
    else {
        panic!("not a message");
    };
    assert_eq!(meta.id, QueueId(7));
    assert_eq!(meta.envelope.revision, None);
    assert_eq!(meta.envelope.tls, None);
    assert!(meta.envelope.held);
    assert_eq!(meta.envelope.recipients, ["b@example.net"]);
    assert_eq!(meta.body_len, 4);

    assert!(!meta.envelope.external, "old records were signed: ours");

    // the same record from an mtad that knows a flag we do not: refused, not misread
    let mut newer = payload.clone();
    newer[17] |= 0b1000_0000;
    newer.splice(18..18, 0x8000_0000u32.to_le_bytes());
    let err = record::decode(record::KIND_MESSAGE, &newer)
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer mtad"), "{err}");
}

/// Mail from outside (not DKIM-signed) is marked in a word of further flags, which
/// only such records carry: the others are byte for byte what older mtad wrote.
#[test]
fn the_external_origin_is_kept_in_the_record() {
    for external in [true, false] {
        let env = Envelope {
            external,
            ..envelope(2)
        };
        let mut record = MessageRecord::new(QueueId(9), 1, &env);
        record.body_mut().extend_from_slice(b"x\r\n");
        let sealed = record.finish().unwrap();
        let payload = &sealed.bytes[record::HEADER_LEN..];
        assert_eq!(payload[17] & 0b1000_0000 != 0, external);
        let record::Decoded::Message(meta) = record::decode(record::KIND_MESSAGE, payload).unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(meta.envelope, env);
    }
}

#[test]
fn the_revision_is_kept_in_the_record() {
    let env = Envelope {
        revision: Some("3f2a9c0d1b7e".into()),
        ..envelope(1)
    };
    let mut record = MessageRecord::new(QueueId(9), 1, &env);
    record.body_mut().extend_from_slice(b"x\r\n");
    let sealed = record.finish().unwrap();
    let payload = &sealed.bytes[record::HEADER_LEN..];
    assert_eq!(payload[17] & 0b0100_0000, 0b0100_0000);
    let record::Decoded::Message(meta) = record::decode(record::KIND_MESSAGE, payload).unwrap()
    else {
        panic!("not a message");
    };
    assert_eq!(meta.envelope, env);
}

/// How a record in the middle of a segment is damaged.
#[derive(Clone, Copy, Debug)]
enum MidDamage {
    /// A byte of the body flipped: the framing is intact, the CRC fails.
    Body,
    /// The length field flipped: the next record must be found by searching.
    Length,
    /// The whole header zeroed (a lost sector start).
    Header,
}

/// Ten messages written by the queue (with status records between them), then one
/// message record in the middle damaged while the spool is closed: every other message
/// comes back with its body and statuses, the damaged bytes are in `corrupt/`, and
/// the next start finds a clean segment.
async fn damaged_in_the_middle(damage: MidDamage) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let mut msgs = Vec::new();
    for i in 0..10 {
        let (id, body) = commit_one(&spool, &envelope(2), 2000 + 100 * i).await;
        let deferred = RcptStatus {
            state: RcptState::Deferred,
            attempts: 1,
            detail: format!("451 try later ({i})"),
            ..queued_status()
        };
        spool.set_status(id, 1, deferred.clone()).await.unwrap();
        msgs.push((id, body, deferred));
    }
    let victim = spool.get(msgs[4].0).unwrap().location;
    drop(spool);

    let path = segment_path(dir, victim.segment);
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    let at = victim.record_offset as usize;
    match damage {
        MidDamage::Body => bytes[victim.body_offset as usize + 700] ^= 0x01,
        MidDamage::Length => bytes[at + 1] ^= 0x10,
        MidDamage::Header => bytes[at..at + 9].fill(0),
    }
    std::fs::write(&path, &bytes).unwrap();
    let damaged_bytes = bytes[at..at + victim.record_len as usize].to_vec();

    // mtactl's read-only view skips the damage and changes nothing
    assert_eq!(scan(dir).unwrap().len(), 9, "{damage:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!dir.join("corrupt").exists());

    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 9, "{damage:?}");
    assert_eq!(rec.damaged, 1, "{damage:?}");
    assert_eq!(rec.discarded_tails, 0, "{damage:?}");
    for (i, (id, body, deferred)) in msgs.iter().enumerate() {
        if i == 4 {
            assert!(spool.get(*id).is_none());
            continue;
        }
        let m = spool
            .get(*id)
            .unwrap_or_else(|| panic!("{damage:?}: message {i} lost"));
        assert_eq!(&spool.read_body(*id).unwrap(), body, "{damage:?}");
        assert_eq!(m.rcpt_status, vec![queued_status(), deferred.clone()]);
    }
    // the damaged bytes, and where they came from
    let kept =
        dir.join("corrupt")
            .join(format!("{}@{}", segment::segment_name(victim.segment), at));
    assert_eq!(std::fs::read(&kept).unwrap(), damaged_bytes, "{damage:?}");
    // the segment keeps its length (offsets of later records do not move)
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        original.len() as u64
    );
    drop(spool);

    // repaired: nothing damaged at the next start, nothing lost, the copy unchanged
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!((rec.messages, rec.damaged), (9, 0), "{damage:?}");
    assert_eq!(std::fs::read(&kept).unwrap(), damaged_bytes);
    assert_eq!(std::fs::read_dir(dir.join("corrupt")).unwrap().count(), 1);
    // and the spool goes on: new mail, removal of the old
    let (id, body) = commit_one(&spool, &envelope(1), 100).await;
    for (i, (old, ..)) in msgs.iter().enumerate() {
        if i != 4 {
            spool.remove(*old).await.unwrap();
        }
    }
    drop(spool);
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 1);
    assert_eq!(spool.read_body(id).unwrap(), body);
}

#[tokio::test]
async fn damaged_body_in_the_middle_loses_nothing_else() {
    damaged_in_the_middle(MidDamage::Body).await;
}

#[tokio::test]
async fn damaged_length_in_the_middle_loses_nothing_else() {
    damaged_in_the_middle(MidDamage::Length).await;
}

#[tokio::test]
async fn zeroed_header_in_the_middle_loses_nothing_else() {
    damaged_in_the_middle(MidDamage::Header).await;
}

#[tokio::test]
async fn damaged_status_record_in_the_middle_loses_only_that_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, body_a) = commit_one(&spool, &envelope(1), 300).await;
    let bounced = RcptStatus {
        state: RcptState::Bounced,
        attempts: 1,
        detail: "550 no".into(),
        ..queued_status()
    };
    spool.set_status(a, 0, bounced).await.unwrap();
    let (b, body_b) = commit_one(&spool, &envelope(1), 300).await;
    let loc_b = spool.get(b).unwrap().location;
    drop(spool);
    // the status record sits between the two message records
    let status_at = (spool_status_offset(dir, &loc_b)) as usize;
    let path = segment_path(dir, loc_b.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[status_at + 20] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!((rec.messages, rec.damaged), (2, 1));
    assert_eq!(spool.read_body(a).unwrap(), body_a);
    assert_eq!(spool.read_body(b).unwrap(), body_b);
    // the bounce status is gone with its record: the recipient is tried again
    assert_eq!(spool.get(a).unwrap().rcpt_status, vec![queued_status()]);
}

/// Offset of the record just before message `loc` in its segment (a test layout:
/// message A, its status record, message B).
fn spool_status_offset(dir: &Path, loc: &BodyLocation) -> u64 {
    let mut offsets = Vec::new();
    segment::read_segment(&segment_path(dir, loc.segment), |rec| {
        offsets.push(rec.offset);
        Ok(())
    })
    .unwrap();
    let i = offsets
        .iter()
        .position(|&o| o == loc.record_offset)
        .unwrap();
    offsets[i - 1]
}

/// Modes of what the spool creates, whatever the umask. The umask belongs to the whole
/// process, so each run is a child process (this test binary, running only
/// [`spool_under_the_umask_of_the_environment`]) with the umask set: tests running
/// meanwhile in this process keep theirs.
#[test]
fn spool_files_and_directories_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for mask in ["000", "277", "022"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "queue::tests::spool_under_the_umask_of_the_environment",
                "--ignored",
                "--test-threads=1",
            ])
            .env("MTAD_TEST_UMASK", mask)
            .env("MTAD_TEST_DIR", tmp.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "umask {mask}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tmp.path().join("var").join("spool");
        assert_eq!(mode(&tmp.path().join("var")), 0o700, "umask {mask}");
        assert_eq!(mode(&dir), 0o700, "umask {mask}");
        assert_eq!(mode(&dir.join("lock")), 0o600, "umask {mask}");
        let corrupt = dir.join("corrupt");
        assert_eq!(mode(&corrupt), 0o700, "umask {mask}");
        let kept: Vec<_> = std::fs::read_dir(&corrupt).unwrap().collect();
        assert_eq!(kept.len(), 1);
        for entry in kept {
            assert_eq!(mode(&entry.unwrap().path()), 0o600, "umask {mask}");
        }
        // the new segment at least (the damaged one, emptied, may be deleted)
        let segs = segments(&dir);
        assert!(!segs.is_empty(), "umask {mask}");
        for seq in segs {
            assert_eq!(mode(&segment_path(&dir, seq)), 0o600, "umask {mask}");
        }
    }
}

/// The child of [`spool_files_and_directories_are_private_whatever_the_umask`]: with
/// the umask it is given, creates a spool in MTAD_TEST_DIR/var/spool, queues a message,
/// damages it and opens the spool again (which makes `corrupt/`).
#[tokio::test]
#[ignore = "run as a child process by spool_files_and_directories_are_private_whatever_the_umask"]
async fn spool_under_the_umask_of_the_environment() {
    use nix::sys::stat::{Mode, umask};
    let (Ok(mask), Ok(root)) = (
        std::env::var("MTAD_TEST_UMASK"),
        std::env::var("MTAD_TEST_DIR"),
    ) else {
        return;
    };
    umask(Mode::from_bits_truncate(
        u32::from_str_radix(&mask, 8).unwrap() as _,
    ));
    let dir = Path::new(&root).join("var").join("spool");
    let (spool, _) = Spool::open(&dir).unwrap();
    let (id, _) = commit_one(&spool, &envelope(1), 100).await;
    let loc = spool.get(id).unwrap().location;
    drop(spool);
    let path = segment_path(&dir, loc.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[loc.body_offset as usize + 10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (_spool, rec) = Spool::open(&dir).unwrap();
    assert_eq!(rec.discarded_tails, 1);
}

#[tokio::test]
async fn a_symlink_at_the_lock_path_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    std::fs::create_dir(&dir).unwrap();
    let target = tmp.path().join("precious");
    std::fs::write(&target, "do not truncate me\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("lock")).unwrap();
    let err = Spool::open(&dir).unwrap_err();
    assert!(matches!(err, SpoolError::LockIsLink { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("symbolic link") && text.contains("lock"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "do not truncate me\n"
    );
    // a dangling link is not followed to create its target either
    let dangling = tmp.path().join("created-through-the-link");
    std::fs::remove_file(dir.join("lock")).unwrap();
    std::os::unix::fs::symlink(&dangling, dir.join("lock")).unwrap();
    assert!(matches!(
        Spool::open(&dir),
        Err(SpoolError::LockIsLink { .. })
    ));
    assert!(!dangling.exists());
}

/// A spool in `dir` holding `n` one-recipient messages of 1,500 bytes, closed again:
/// the messages and where message `at` is.
async fn closed_spool_of(
    dir: &Path,
    n: usize,
    at: usize,
) -> (Vec<(QueueId, Vec<u8>)>, BodyLocation) {
    let (spool, _) = Spool::open(dir).unwrap();
    let mut msgs = Vec::new();
    for _ in 0..n {
        msgs.push(commit_one(&spool, &envelope(1), 1500).await);
    }
    let location = spool.get(msgs[at].0).unwrap().location;
    (msgs, location)
}

/// A length damaged so that the record seems to run past the end of the segment looks
/// like a torn write: the tail is cut, as after a crash (reading on there could take
/// record-shaped bytes of a message for records). But intact-looking records follow,
/// so the cut bytes are kept in `corrupt/`, not thrown away.
#[tokio::test]
async fn a_length_past_the_end_followed_by_records_is_cut_but_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (msgs, victim) = closed_spool_of(dir, 6, 3).await;
    let path = segment_path(dir, victim.segment);
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    bytes[victim.record_offset as usize + 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!((rec.messages, rec.discarded_tails, rec.damaged), (3, 1, 0));
    for (id, body) in &msgs[..3] {
        assert_eq!(&spool.read_body(*id).unwrap(), body);
    }
    let kept = dir.join("corrupt").join(format!(
        "{}@{}",
        segment::segment_name(victim.segment),
        victim.record_offset
    ));
    // the zeros ahead of the records are not kept
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(data_end < bytes.len());
    assert_eq!(
        std::fs::read(kept).unwrap(),
        bytes[victim.record_offset as usize..data_end]
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        victim.record_offset
    );
}

/// A torn write (a record cut short at the very end) is not kept: nothing follows it.
#[tokio::test]
async fn a_torn_write_is_not_kept_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    commit_one(&spool, &envelope(1), 1500).await;
    let (id, _) = commit_one(&spool, &envelope(1), 1500).await;
    let last = spool.get(id).unwrap().location;
    drop(spool);
    let path = segment_path(dir, last.segment);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(last.record_offset + last.record_len / 2).unwrap();
    let (_spool, rec) = Spool::open(dir).unwrap();
    assert_eq!((rec.messages, rec.discarded_tails), (1, 1));
    assert!(!dir.join("corrupt").exists());
}

#[tokio::test]
async fn a_fresh_body_is_the_committed_one_once_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path()).unwrap();
    let (a, body_a) = commit_one(&spool, &envelope(1), 5000).await;
    let (b, _) = commit_one(&spool, &envelope(1), 300).await;
    // what was written, from memory, once; then the spool's copy
    assert_eq!(&spool.fresh_body(a).unwrap()[..], &body_a[..]);
    assert!(spool.fresh_body(a).is_none());
    assert_eq!(spool.read_body(a).unwrap(), body_a);
    // a removed message's body goes with it
    spool.remove(b).await.unwrap();
    assert!(spool.fresh_body(b).is_none());

    // the oldest go once the bytes kept pass the bound; the newest stays
    let big = index::FRESH_MAX_BYTES / 4;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(commit_one(&spool, &envelope(1), big).await);
    }
    let kept = ids
        .iter()
        .filter(|(id, _)| {
            lock_index(&spool.inner.index)
                .fresh
                .records
                .contains_key(id)
        })
        .count();
    assert!((1..=3).contains(&kept), "{kept} kept");
    let (last, body) = ids.last().unwrap();
    assert_eq!(&spool.fresh_body(*last).unwrap()[..], &body[..]);
    assert!(spool.fresh_body(ids[0].0).is_none());
    // every one of them still reads from the spool
    for (id, body) in &ids {
        assert_eq!(&spool.read_body(*id).unwrap(), body);
    }
}

#[tokio::test]
async fn delivery_records_wait_for_the_next_fsync_and_the_rest_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let before = spool.fsyncs();
    let (a, _) = commit_one(&spool, &envelope(2), 100).await;
    assert_eq!(
        spool.fsyncs(),
        before + 1,
        "a message is fsync'd before it is answered"
    );
    let synced = spool.fsyncs();

    // delivery statuses and the removal of a delivered message: written, not fsync'd
    let sent = RcptStatus {
        state: RcptState::Delivered,
        at_ms: 1_700_000_100_000,
        attempts: 1,
        next_attempt_ms: 0,
        detail: "250 2.0.0 Ok".into(),
    };
    spool.set_status(a, 0, sent.clone()).await.unwrap();
    spool
        .set_statuses(a, vec![(1, sent.clone())])
        .await
        .unwrap();
    let (b, _) = commit_one(&spool, &envelope(1), 100).await;
    assert_eq!(
        spool.fsyncs(),
        synced + 1,
        "the statuses rode on the next message's fsync"
    );
    spool.remove_delivered(a).await.unwrap();
    assert_eq!(spool.fsyncs(), synced + 1);
    // ... and made durable a second later by the committer itself
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spool.fsyncs() == synced + 1 {
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(spool.fsyncs(), synced + 2);

    // an operator's hold and delete are fsync'd before they are answered
    spool.set_held(b, true).await.unwrap();
    assert_eq!(spool.fsyncs(), synced + 3);
    spool.remove(b).await.unwrap();
    assert_eq!(spool.fsyncs(), synced + 4);
    drop(spool);

    // what was written is what a restart reads
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!(rec.messages, 0);
    assert!(spool.get(a).is_none() && spool.get(b).is_none());
}

#[tokio::test]
async fn delivery_records_are_synced_when_the_spool_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (spool, _) = Spool::open(dir).unwrap();
    let (a, _) = commit_one(&spool, &envelope(1), 100).await;
    let synced = spool.fsyncs();
    spool.remove_delivered(a).await.unwrap();
    assert_eq!(spool.fsyncs(), synced);
    spool.close();
    assert_eq!(
        spool.fsyncs(),
        synced + 1,
        "the committer synced before it stopped"
    );
}

/// Zeros in the middle of a segment (a record wiped on disk) are damage, not its end:
/// only zeros that run to the end of the file are the committer's zeros ahead.
#[tokio::test]
async fn zeros_before_a_record_are_damage_not_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (msgs, wiped) = closed_spool_of(dir, 3, 1).await;
    let path = segment_path(dir, wiped.segment);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0; wiped.record_len as usize], wiped.record_offset)
        .unwrap();
    drop(f);
    let (spool, rec) = Spool::open(dir).unwrap();
    assert_eq!((rec.messages, rec.discarded_tails, rec.damaged), (2, 0, 1));
    for i in [0, 2] {
        assert_eq!(spool.read_body(msgs[i].0).unwrap(), msgs[i].1);
    }
    assert!(spool.get(msgs[1].0).is_none());
}
