//! Accept throughput with STARTTLS against plaintext, in the same run: the release
//! `mtad` on loopback (queue-only, spool under /dev/shm when it exists so the disk does
//! not hide the TLS cost), and 16 concurrent clients, each session one message, for a
//! few seconds per round; rounds alternate plain and STARTTLS. Also sessions without a
//! message (EHLO [STARTTLS EHLO] QUIT): the handshake's own cost.
//!
//!     cargo bench --bench tls_accept            [-- SECONDS_PER_ROUND]   (default 5)
//!
//! Under `cargo test --all-targets` (no `--bench`) it runs one 1-second round of each,
//! as a smoke test.
//!
//! The client side is tokio-rustls too, and runs on the same 2 cores as the server: the
//! ratio, not the absolute rate, is the figure.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 16;
const MESSAGE: &[u8] =
    b"From: a@client.test\r\nTo: b@example.test\r\nSubject: bench\r\n\r\nhello\r\n.\r\n";

/// Reads one whole reply; panics on anything but `want`'s first digit.
async fn reply<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, want: u8) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\r\n") {
            let text = &buf[..buf.len() - 2];
            let last = text.rsplit(|&b| b == b'\n').next().unwrap_or_default();
            if last.len() >= 4 && last[3] == b' ' {
                assert_eq!(buf[0], want, "{}", String::from_utf8_lossy(buf));
                return;
            }
        }
    }
}

async fn cmd<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    line: &[u8],
    want: u8,
) {
    s.write_all(line).await.unwrap();
    reply(s, buf, want).await;
}

async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    message: bool,
) {
    if message {
        cmd(s, buf, b"MAIL FROM:<a@client.test>\r\n", b'2').await;
        cmd(s, buf, b"RCPT TO:<b@example.test>\r\n", b'2').await;
        cmd(s, buf, b"DATA\r\n", b'3').await;
        cmd(s, buf, MESSAGE, b'2').await;
    }
    cmd(s, buf, b"QUIT\r\n", b'2').await;
}

async fn session(addr: SocketAddr, tls: Option<&tokio_rustls::TlsConnector>, message: bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(1024);
    reply(&mut tcp, &mut buf, b'2').await;
    cmd(&mut tcp, &mut buf, b"EHLO bench.test\r\n", b'2').await;
    match tls {
        None => transaction(&mut tcp, &mut buf, message).await,
        Some(connector) => {
            cmd(&mut tcp, &mut buf, b"STARTTLS\r\n", b'2').await;
            let name = ServerName::try_from("localhost").unwrap();
            let mut s = connector.connect(name, tcp).await.expect("handshake");
            cmd(&mut s, &mut buf, b"EHLO bench.test\r\n", b'2').await;
            transaction(&mut s, &mut buf, message).await;
        }
    }
}

/// The CPU time a process has used so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which is in parentheses
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name
    (ticks(11) + ticks(12)) / 100.0
}

/// Sessions per second for `secs`, `CLIENTS` at a time.
async fn round(
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    message: bool,
    secs: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (done, tls) = (done.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                session(addr, tls.as_ref(), message).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn start_mtad(dir: &std::path::Path, port: u16) -> Child {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let config = format!(
        r#"server {{
    hostname "tls.bench.test"
    spool "{spool}"
    tls-certificate "cert.pem"
    tls-key "key.pem"
}}
listen "bench" address="127.0.0.1:{port}"
limits {{
    connections-per-ip 1000
}}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {{
    accept client="loopback"
}}
delivery {{
    queue-only #true
}}
"#,
        spool = dir.join("spool").display()
    );
    std::fs::write(dir.join("mtad.kdl"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mtad"))
        .arg("--allow-root")
        .arg("--config")
        .arg(dir.join("mtad.kdl"))
        .env("MTAD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mtad");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mtad did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once, briefly,
    // so that it keeps working
    let bench = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 5 } else { 1 });
    let rounds = if bench { 2 } else { 1 };
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut mtad = start_mtad(base.path(), port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = mtad::delivery::TlsClient::new(None).unwrap();
    let config = client
        .config_for(mtad::delivery::TlsMode::Required)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (what, message) in [
        ("sessions with one message", true),
        ("sessions without a message", false),
    ] {
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        // the server's CPU time per session, µs: what the load generator's own share of
        // the cores cannot blur
        let (mut plain_cpu, mut tls_cpu) = (0.0, 0.0);
        let pid = mtad.id();
        for _ in 0..rounds {
            let c0 = cpu_seconds(pid);
            let rate = rt.block_on(round(addr, None, message, secs));
            plain_cpu += (cpu_seconds(pid) - c0) / (rate * secs as f64);
            plain.push(rate);
            let c0 = cpu_seconds(pid);
            let rate = rt.block_on(round(addr, Some(connector.clone()), message, secs));
            tls_cpu += (cpu_seconds(pid) - c0) / (rate * secs as f64);
            tls.push(rate);
        }
        let (plain_cpu, tls_cpu) = (
            plain_cpu * 1e6 / rounds as f64,
            tls_cpu * 1e6 / rounds as f64,
        );
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let (p, t) = (best(&plain), best(&tls));
        println!(
            "{what}: plaintext {p:.0}/s, STARTTLS {t:.0}/s, STARTTLS/plaintext = {:.2} (rounds: plain {plain:.0?}, tls {tls:.0?}); mtad CPU per session: plaintext {plain_cpu:.0} µs, STARTTLS {tls_cpu:.0} µs",
            t / p
        );
    }
    let _ = mtad.kill();
    let _ = mtad.wait();
}
