//! Durable before 250, under fire: concurrent senders keep mtad busy, it is killed with
//! SIGKILL at a random moment, restarted, and the spool is checked:
//! - every message that got `250 ... queued as ID` is there exactly once, byte for byte;
//! - every message there is one that was sent whole (no torn or partial message);
//! - no id appears twice.
//!
//! Many rounds on the same spool, so recovery also runs over earlier crashes' leftovers.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const SENDERS: usize = 8;

fn rounds() -> usize {
    std::env::var("MTAD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// xorshift64*: enough randomness for kill timing and message sizes, reproducible by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the senders know: every body they started to send, and every id they were
/// given a 250 for (with its body).
#[derive(Default)]
struct Ledger {
    attempted: HashMap<Vec<u8>, ()>,
    acked: Vec<(String, Vec<u8>)>,
}

fn body(round: usize, sender: usize, n: usize, size: usize) -> Vec<u8> {
    let mut b =
        format!("Subject: crash {round}-{sender}-{n}\r\nX-Size: {size}\r\n\r\n").into_bytes();
    let line =
        format!("{round:04}-{sender:02}-{n:06} the quick brown fox jumps over the lazy dog\r\n");
    while b.len() < size {
        b.extend_from_slice(line.as_bytes());
    }
    b
}

fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

/// Sends messages until the connection breaks; returns when mtad is gone.
fn sender(port: u16, round: usize, id: usize, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let mut rng = Rng(seed | 1);
    let mut run = || -> std::io::Result<()> {
        let mut w = TcpStream::connect(("127.0.0.1", port))?;
        let mut r = BufReader::new(w.try_clone()?);
        read_reply(&mut r)?;
        w.write_all(b"EHLO crash.test\r\n")?;
        read_reply(&mut r)?;
        for n in 0.. {
            let size = 200 + rng.below(30_000) as usize;
            let msg = body(round, id, n, size);
            ledger.lock().unwrap().attempted.insert(msg.clone(), ());
            w.write_all(b"MAIL FROM:<crash@src.test>\r\nRCPT TO:<sink@example.test>\r\nDATA\r\n")?;
            for _ in 0..3 {
                let reply = read_reply(&mut r)?;
                if !(reply.starts_with("250") || reply.starts_with("354")) {
                    return Err(std::io::Error::other(reply));
                }
            }
            // in pieces, so kills land mid-message too
            let cut = rng.below(msg.len() as u64) as usize;
            w.write_all(&msg[..cut])?;
            w.write_all(&msg[cut..])?;
            w.write_all(b".\r\n")?;
            let reply = read_reply(&mut r)?;
            if let Some(id) = reply.trim_end().strip_prefix("250 2.0.0 Ok: queued as ") {
                ledger.lock().unwrap().acked.push((id.to_string(), msg));
            } else {
                return Err(std::io::Error::other(reply));
            }
        }
        Ok(())
    };
    let _ = run();
}

#[test]
fn kill_9_never_loses_or_tears_an_acknowledged_message() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut mtad = Mtad::start(&BASIC.replace(
        "networks \"trusted\"",
        "limits {\n connections-per-ip 100\n}\nnetworks \"trusted\"",
    ));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..rounds() {
        let threads: Vec<_> = (0..SENDERS)
            .map(|i| {
                let ledger = ledger.clone();
                let port = mtad.port;
                let s = rng.next();
                std::thread::spawn(move || sender(port, round, i, s, ledger))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        mtad.kill9();
        for t in threads {
            t.join().unwrap();
        }
        mtad.restart();
        verify(&mtad, &ledger.lock().unwrap(), round);
    }
    let acked = ledger.lock().unwrap().acked.len();
    eprintln!(
        "{} rounds, {acked} acknowledged messages, all present",
        rounds()
    );
    assert!(
        acked > rounds() * 10,
        "too little load to mean anything: {acked} messages"
    );
}

fn verify(mtad: &Mtad, ledger: &Ledger, round: usize) {
    let queued = mtad.queued();
    let mut by_id: HashMap<String, &[u8]> = HashMap::new();
    let mut seen: HashMap<&[u8], ()> = HashMap::new();
    for (m, body) in &queued {
        let content = without_received(body);
        assert!(
            ledger.attempted.contains_key(content),
            "round {round}: {} holds a message that was never sent whole ({} bytes)",
            m.id,
            content.len()
        );
        assert!(
            by_id.insert(m.id.to_string(), content).is_none(),
            "round {round}: id {} twice",
            m.id
        );
        // each body was sent once, so it may be stored at most once
        assert!(
            seen.insert(content, ()).is_none(),
            "round {round}: {} stored twice",
            m.id
        );
    }
    for (id, msg) in &ledger.acked {
        let stored = by_id
            .get(id)
            .unwrap_or_else(|| panic!("round {round}: acknowledged {id} is missing"));
        assert_eq!(*stored, msg.as_slice(), "round {round}: {id} differs");
    }
}
