//! `cluster { redis ... }` against a real redis-server on loopback and several mtad
//! nodes, each with its own spool and port (issue 23's tests): rate limits and
//! connection leases hold across the nodes, behind a real HAProxy too (send-proxy-v2);
//! a greylisted triplet first seen via one node passes on retry via another; a content
//! filter (aiosmtpd) injecting into another node than the sender does not filter twice;
//! a node killed with -9 under load loses no acknowledged message while the others
//! accept; a row added to a PostgreSQL table the nodes share is seen by all; Redis
//! killed or stopped mid-load → the fallback, no 5xx, no acknowledged message lost, one
//! log line per outage and one per recovery; `mtactl cluster status` flags a node with
//! another policy revision. (`mtactl queue evacuate`: tests/evacuate.rs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A redis-server of our own (Debian's `redis-server`), no persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `requirepass`, if any.
    password: Option<String>,
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(None)
    }

    fn start_with(password: Option<&str>) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
            password: password.map(str::to_owned),
        };
        redis.restart();
        redis
    }

    /// (Again) on the same port.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let bin = require_tool("redis-server");
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_owned(), p.clone()]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Ok("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command in RESP, its first reply line.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = String::new();
        let mut command = |args: &[&str]| {
            req.push_str(&format!("*{}\r\n", args.len()));
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        };
        if let Some(p) = &self.password {
            command(&["AUTH", p]);
        }
        command(args);
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut text = String::new();
        let lines = if self.password.is_some() { 2 } else { 1 };
        let mut buf = [0u8; 4096];
        while text.lines().count() < lines {
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("closed after {text:?}"));
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // after AUTH's own +OK, the command's reply
        Ok(text.lines().nth(lines - 1).unwrap_or("").to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn node(redis: &Redis, name: &str, extra: &str) -> Mtad {
    Node::default().start(redis, name, extra)
}

/// What a node's configuration has besides the common part.
struct Node<'a> {
    listen: &'a str,
    /// More lines in `server { }`.
    server: &'a str,
    /// More lines in `cluster { }`.
    cluster: &'a str,
    /// The rules of `stage "rcpt"`.
    rcpt: &'a str,
}

impl Default for Node<'_> {
    fn default() -> Self {
        Node {
            listen: "listen \"mx\" address=\"127.0.0.1:{port}\"",
            server: "",
            cluster: "",
            rcpt: "accept client=\"trusted\"",
        }
    }
}

impl Node<'_> {
    fn start(&self, redis: &Redis, name: &str, extra: &str) -> Mtad {
        Mtad::start(&format!(
            r#"
server {{
    hostname "{name}.example.test"
    spool "{{spool}}"
{server}
}}
{listen}
networks "trusted" "127.0.0.0/8"
stage "rcpt" {{
    {rcpt}
}}
cluster {{
    redis "{url}"
    node "{name}"
    timeout "200ms"
    lease "3s"
{cluster}
}}
{extra}
"#,
            url = redis.url(),
            listen = self.listen,
            server = self.server,
            cluster = self.cluster,
            rcpt = self.rcpt,
        ))
    }
}

/// swaks from `source` to `port`: its whole transcript.
fn swaks_from(source: &str, port: u16) -> String {
    swaks_with(source, port, &[])
}

/// swaks from `source` to `port` with `more` options: its whole transcript.
fn swaks_with(source: &str, port: u16, more: &[&str]) -> String {
    let mut args = vec![
        "--local-interface",
        source,
        "--from",
        "a@src.test",
        "--to",
        "b@dst.test",
    ];
    args.extend_from_slice(more);
    let out = swaks(port, &args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_message_rate_holds_in_total_across_the_nodes() {
    let redis = Redis::start();
    let limits = "rate-limits {\n    messages 3 per=\"1m\"\n}\n";
    let a = node(&redis, "a", limits);
    let b = node(&redis, "b", limits);
    for port in [a.port, b.port, a.port] {
        let t = swaks_from("127.0.0.2", port);
        assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    }
    // the fourth, on either node, is refused as a node alone refuses it
    for port in [b.port, a.port] {
        let t = swaks_from("127.0.0.2", port);
        assert!(
            t.contains("<** 450 4.7.1 Error: too many messages from your address; try again later"),
            "{t}"
        );
    }
    // another client has its own count, on any node
    let t = swaks_from("127.0.0.3", b.port);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(a.queued().len() + b.queued().len(), 4);
    // hooks' ctx.rate and the key in Redis agree with what was counted
    let key = redis
        .cli(&["EXISTS", "mtad:rate:messages:127.0.0.2"])
        .unwrap();
    assert_eq!(key, ":1");
}

#[test]
fn connections_per_client_are_leased_across_the_nodes() {
    let redis = Redis::start();
    let limits = "limits {\n    connections-per-ip 2\n}\n";
    let a = node(&redis, "a", limits);
    let mut b = node(&redis, "b", limits);
    let mut on_a = Client::connect_from("127.0.0.4", a.port);
    on_a.expect("220 ");
    let mut on_b = Client::connect_from("127.0.0.4", b.port);
    on_b.expect("220 ");
    // two held, one on each node: a third is refused on either
    for port in [a.port, b.port] {
        let mut c = Client::connect_from("127.0.0.4", port);
        c.expect("421 4.7.0 ");
        c.expect_closed();
    }
    let mut other = Client::connect_from("127.0.0.5", a.port);
    other.expect("220 ");
    // held past their first life (lease "3s"): renewed by the nodes that hold them
    std::thread::sleep(Duration::from_millis(4500));
    let mut c = Client::connect_from("127.0.0.4", b.port);
    c.expect("421 4.7.0 ");
    on_a.cmd("NOOP", "250");
    // a closed session gives its lease back
    on_b.cmd("QUIT", "221");
    drop(on_b);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        let mut c = Client::connect_from("127.0.0.4", a.port);
        if c.reply().starts_with("220 ") {
            break c;
        }
        assert!(Instant::now() < deadline, "the lease was never given back");
        std::thread::sleep(Duration::from_millis(50));
    };
    again.cmd("EHLO client.test", "250");
    // a node that dies holding a lease: it expires (lease "3s"), the client gets in
    drop(again);
    let mut on_b = Client::connect_from("127.0.0.6", b.port);
    on_b.expect("220 ");
    let mut on_b2 = Client::connect_from("127.0.0.6", b.port);
    on_b2.expect("220 ");
    b.kill9();
    drop((on_b, on_b2));
    let mut refused = Client::connect_from("127.0.0.6", a.port);
    refused.expect("421 4.7.0 ");
    let died = Instant::now();
    let mut c = loop {
        let mut c = Client::connect_from("127.0.0.6", a.port);
        if c.reply().starts_with("220 ") {
            break c;
        }
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "a dead node's leases never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        died.elapsed() >= Duration::from_secs(1),
        "admitted before the dead node's leases expired"
    );
    c.cmd("QUIT", "221");
}

/// One message to `port` from 127.0.0.1; `Ok` once acknowledged; a 5xx is a failure of
/// the test, whatever else goes wrong.
fn message(port: u16, n: usize) -> Result<(), String> {
    let r = try_message(port, &format!("r{n}@dst.test"), &format!("m{n}"));
    if let Err(e) = &r {
        assert!(!e.starts_with('5'), "a 5xx during the outage: {e}");
    }
    r
}

/// Whether `done` came true within `limit` (asked every 50 ms).
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn redis_killed_or_stopped_mid_load_falls_back_and_recovers() {
    let mut redis = Redis::start();
    let mport = free_port();
    let extra = "rate-limits {
    messages 10000 per=\"1m\"
    recipients 10000 per=\"1m\"
}
";
    let metrics_at = format!("    metrics \"127.0.0.1:{mport}\"");
    let a = Node {
        server: &metrics_at,
        ..Node::default()
    }
    .start(&redis, "a", extra);
    let b = node(&redis, "b", extra);
    let mut acknowledged = 0;
    let mut n = 0;
    let mut send = |count: usize, acknowledged: &mut usize| {
        for _ in 0..count {
            n += 1;
            let port = if n % 2 == 0 { a.port } else { b.port };
            if message(port, n).is_ok() {
                *acknowledged += 1;
            }
        }
    };
    send(10, &mut acknowledged);
    assert_eq!(acknowledged, 10);
    assert!(metrics(mport).contains("mtad_cluster_redis_up 1"));
    // killed: refused connections; the process's counters take over
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    send(20, &mut acknowledged);
    // stopped: no answer at all; each call times out (200ms) and falls back
    // (what the nodes hold counted ahead admits a few messages with no call, for a
    // second: past it, they call Redis, and find it answers or not)
    redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    send(4, &mut acknowledged);
    signal(redis.pid(), "STOP");
    std::thread::sleep(Duration::from_millis(1500));
    send(10, &mut acknowledged);
    signal(redis.pid(), "CONT");
    send(10, &mut acknowledged);
    assert_eq!(acknowledged, 54, "fallback \"local\" accepts all the while");
    let queued = a.queued().len() + b.queued().len();
    assert_eq!(queued, acknowledged, "every acknowledged message is queued");
    for node in [&a, &b] {
        let log = node.wait_log("cluster: Redis answers again", 2, Duration::from_secs(10));
        assert_eq!(
            log.matches("cluster: Redis unavailable").count(),
            2,
            "once per outage (killed, stopped):\n{log}"
        );
    }
    let m = metrics(mport);
    assert!(m.contains("mtad_cluster_redis_up 1"), "{m}");
    let errors: u64 = m
        .lines()
        .filter(|l| l.starts_with("mtad_cluster_redis_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(errors >= 10, "errors counted: {m}");
    // shared again: the count is in Redis
    let key = redis
        .cli(&["EXISTS", "mtad:rate:messages:127.0.0.1"])
        .unwrap();
    assert_eq!(key, ":1");
}

#[test]
fn fallback_tempfail_refuses_for_now_never_5xx() {
    let mut redis = Redis::start();
    let a = Node {
        cluster: "    fallback \"tempfail\"",
        ..Node::default()
    }
    .start(&redis, "a", "rate-limits {\n    messages 5 per=\"1m\"\n}\n");
    let mut c = a.connect();
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    redis.kill();
    // the first message was counted ahead, with the connection's own call
    c.cmd("MAIL FROM:<a@src.test>", "250");
    c.cmd("RSET", "250");
    c.cmd(
        "MAIL FROM:<a@src.test>",
        "451 4.3.0 Error: temporary failure of the shared limits; try again later",
    );
    let mut refused = a.connect();
    refused.expect("421 4.3.0 a.example.test Error: temporary failure of the shared limits");
    redis.restart();
    c.cmd("MAIL FROM:<a@src.test>", "250");
    a.wait_log("cluster: Redis answers again", 1, Duration::from_secs(5));
}

/// `mtactl config` shows the block without the password; `mtactl check --connect`
/// asks Redis.
#[test]
fn mtactl_shows_and_checks_the_cluster() {
    let redis = Redis::start();
    let a = node(&redis, "a", "");
    let out = a.mtactl(&["check", "--connect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("cluster: node a, Redis {}", redis.url())),
        "{text}"
    );
    assert!(text.contains("cluster: Redis redis://127.0.0.1:"), "{text}");
    let secret = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("redis://127.0.0.1", "redis://:hunter2@127.0.0.1");
    std::fs::write(&a.config, secret).unwrap();
    let out = a.mtactl(&["config", "-n"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cluster {\n    redis \"redis://:***@127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    // a bad URL is a configuration error with its place
    let bad = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("redis://:hunter2@127.0.0.1", "http://127.0.0.1");
    std::fs::write(&a.config, bad).unwrap();
    let out = a.mtactl(&["check"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("invalid Redis URL"), "{text}");
    assert!(text.contains("mtad.kdl:"), "{text}");
}

/// The `cluster` snippets of docs/cluster.md and docs/configuration.md are valid, and
/// say what the parser builds.
#[test]
fn documented_configuration_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for doc in ["docs/cluster.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for block in text
            .split("```kdl\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .filter(|b| b.starts_with("cluster {"))
        {
            let config = format!(
                "server {{\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n{block}"
            );
            let parsed = mtad::config::Config::parse("mtad.kdl", &config)
                .unwrap_or_else(|e| panic!("{doc}:\n{block}\n{}", mtad::config::render(&e)));
            let cluster = parsed.cluster.expect("a cluster");
            assert!(block.contains(&format!("redis \"{}\"", cluster.redis)));
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "{checked} snippets");
    // a node's own file, including the shared policy (docs/cluster.md)
    let text = std::fs::read_to_string(root.join("docs/cluster.md")).unwrap();
    let block = text
        .split("```kdl\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with("// /etc/mtad/mtad.kdl on mx1"))
        .expect("the node's file");
    // the shared policy it includes, with its PostgreSQL table (the reference deployment)
    let policy = text
        .split("```kdl\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with("// policy/mtad.kdl"))
        .expect("the shared policy");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    std::fs::write(dir.path().join("policy/mtad.kdl"), policy).unwrap();
    std::fs::write(dir.path().join("mtad.kdl"), block).unwrap();
    let config = mtad::config::Config::load(&dir.path().join("mtad.kdl"))
        .unwrap_or_else(|e| panic!("{block}\n{policy}\n{}", mtad::config::render(&e)));
    assert_eq!(config.cluster.expect("a cluster").node, "mx1");
    assert!(config.domains.contains_key("relay"));
}

/// The HAProxy configuration of docs/cluster.md's reference deployment is one HAProxy
/// accepts (`haproxy -c`).
#[test]
fn the_documented_haproxy_configuration_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/cluster.md")).unwrap();
    let block = text
        .split("```haproxy\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an haproxy block");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, block).unwrap();
    let out = Command::new(require_tool("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{block}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the parser refuses in the block, each with its place.
#[test]
fn configuration_errors_point_at_the_place() {
    let base = "server {\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";
    for (block, want) in [
        ("cluster {\n    node \"a\"\n}\n", "mtad.kdl:6:1"),
        ("cluster {\n    redis \"http://x\"\n}\n", "mtad.kdl:7:11"),
        (
            "cluster {\n    redis \"redis://x\"\n    timeout \"1ms\"\n}\n",
            "mtad.kdl:8:13",
        ),
        (
            "cluster {\n    redis \"redis://x\"\n    fallback \"open\"\n}\n",
            "mtad.kdl:8:14",
        ),
        (
            "cluster {\n    redis \"redis://x\"\n    node \"a b\"\n}\n",
            "mtad.kdl:8:10",
        ),
        (
            "cluster {\n    redis \"redis://x\"\n    lease \"1s\"\n}\n",
            "mtad.kdl:8:11",
        ),
        (
            "cluster {\n    redis \"redis://x\"\n    nodes \"a\"\n}\n",
            "mtad.kdl:8:5",
        ),
        (
            "cluster {\n    redis \"redis://x\"\n}\ncluster {\n    redis \"redis://y\"\n}\n",
            "mtad.kdl:9:1",
        ),
    ] {
        let err = mtad::config::Config::parse("mtad.kdl", &format!("{base}{block}"))
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{block}"));
        let text = mtad::config::render(&err);
        assert!(text.contains(want), "{block}\n{text}");
    }
    let ok = mtad::config::Config::parse(
        "mtad.kdl",
        &format!("{base}cluster {{\n    redis \"rediss://u:p@redis.example.test:6380/2\"\n}}\n"),
    )
    .unwrap();
    let c = ok.cluster.unwrap();
    assert_eq!(c.node, "h.example.test", "the default node is the hostname");
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert_eq!(c.redis_shown(), "rediss://u:***@redis.example.test:6380/2");
}

/// Behind a real HAProxy (send-proxy-v2, round robin): the nodes limit the real
/// client, in total, whichever node HAProxy picks; HAProxy's own address is no client.
#[test]
fn behind_haproxy_the_limit_is_the_real_clients_across_the_nodes() {
    let redis = Redis::start();
    let listen = "listen \"lb\" address=\"127.0.0.1:{port}\" proxy-protocol=#true proxies=\"lb\"\nnetworks \"lb\" \"127.0.0.1/32\"";
    let limits = "rate-limits {\n    messages 3 per=\"1m\"\n}\n";
    let behind = Node {
        listen,
        ..Node::default()
    };
    let nodes = ["a", "b", "c"].map(|name| behind.start(&redis, name, limits));
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let lb = common::peers::Haproxy::start(&ports, "send-proxy-v2");
    for _ in 0..3 {
        let t = swaks_from("127.0.0.7", lb.port);
        assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    }
    for _ in 0..3 {
        let t = swaks_from("127.0.0.7", lb.port);
        assert!(
            t.contains("<** 450 4.7.1 Error: too many messages from your address"),
            "{t}"
        );
    }
    // another client behind the same balancer has its own count
    let t = swaks_from("127.0.0.8", lb.port);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    let queued: Vec<_> = nodes.iter().map(|n| n.queued()).collect();
    assert_eq!(
        queued.iter().filter(|q| !q.is_empty()).count(),
        3,
        "round robin: every node took one"
    );
    for (m, _) in queued.iter().flatten() {
        let ip = m.envelope.client_ip.unwrap().to_string();
        assert!(ip == "127.0.0.7" || ip == "127.0.0.8", "{ip}");
    }
    // (what a connection counts ahead and leaves unused waits in its node's stash
    // for a second, then is given back)
    assert!(
        eventually(Duration::from_secs(3), || redis
            .cli(&["EXISTS", "mtad:rate:messages:127.0.0.1"])
            .unwrap()
            == ":0"),
        "the balancer is never counted"
    );
}

/// A Redis that requires a password: given in the URL, the limits are shared; a wrong
/// one is an outage like any other (the fallback, and `check --connect` says so).
#[test]
fn a_password_in_the_url() {
    let redis = Redis::start_with(Some("s3cret-pw"));
    let limits = "rate-limits {\n    messages 1 per=\"1m\"\n}\n";
    let a = node(&redis, "a", limits);
    let t = swaks_from("127.0.0.9", a.port);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(
        redis
            .cli(&["EXISTS", "mtad:rate:messages:127.0.0.9"])
            .unwrap(),
        ":1"
    );
    assert!(
        !a.log().contains("s3cret-pw"),
        "the password is never logged"
    );
    let wrong = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("s3cret-pw", "wrong-pw");
    std::fs::write(&a.config, wrong).unwrap();
    let out = a.mtactl(&["check", "--connect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cluster: Redis: "), "{text}");
    assert!(!text.contains("wrong-pw"), "{text}");
}

/// Hooks' `ctx.rate(kind)` reads the count across the nodes (what Redis answered to
/// the command), not the node's own.
#[test]
fn hooks_read_the_shared_counts() {
    let redis = Redis::start();
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("mail.rhai");
    std::fs::write(
        &hook,
        r#"fn mail(ctx) {
            let n = ctx.rate("messages");
            if ctx.rate("connections") != -1 { throw "no connection limit here"; }
            if n > 2 { return defer(450, "4.7.1", "hook: message " + n + " this hour, slow down"); }
            next()
        }"#,
    )
    .unwrap();
    let extra = format!(
        "stage \"mail\" {{\n    hook \"{}\"\n}}\nrate-limits {{\n    messages 100 per=\"1h\"\n}}\n",
        hook.display()
    );
    let a = node(&redis, "a", &extra);
    let b = node(&redis, "b", &extra);
    for port in [a.port, b.port] {
        let mut c = Client::connect_from("127.0.0.10", port);
        c.expect("220 ");
        c.cmd("EHLO client.test", "250");
        c.cmd("MAIL FROM:<a@src.test>", "250");
    }
    let mut c = Client::connect_from("127.0.0.10", a.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd(
        "MAIL FROM:<a@src.test>",
        "450 4.7.1 hook: message 3 this hour, slow down",
    );
}

/// A node greylisting with `fallback` ("local" or "tempfail") and a delay of 2 seconds.
fn greylisting_node(redis: &Redis, name: &str, fallback: &str) -> Mtad {
    let cluster = format!("    fallback \"{fallback}\"");
    Node {
        rcpt: "greylist\n    accept client=\"trusted\"",
        cluster: &cluster,
        ..Node::default()
    }
    .start(redis, name, "greylisting {\n    delay \"2s\"\n}\n")
}

/// Greylisting's state is in Redis: a triplet first seen via node A is accepted on its
/// retry via node B (a node alone would see it for the first time and greylist it);
/// while Redis is down, `fallback "local"` greylists with the node's own state and
/// `fallback "tempfail"` answers 451 4.3.0: never a 5xx, never an accept by default.
#[test]
fn a_triplet_greylisted_via_one_node_passes_on_retry_via_another() {
    let mut redis = Redis::start();
    let a = greylisting_node(&redis, "a", "local");
    let b = greylisting_node(&redis, "b", "tempfail");
    let t = swaks_from("127.0.0.2", a.port);
    assert!(
        t.contains("<** 450 4.7.1 <b@dst.test>: Recipient address rejected: Greylisted, try again in 2 seconds"),
        "{t}"
    );
    // B has never seen the client: its retry via B passes only through Redis
    std::thread::sleep(Duration::from_millis(2500));
    let t = swaks_from("127.0.0.2", b.port);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    assert_eq!(b.queued().len(), 1);
    // the triplet's record is in Redis, under a digest, expiring by itself
    let keys = redis.cli(&["KEYS", "mtad:grey:t:*"]).unwrap();
    assert_eq!(keys, "*1", "one triplet: {keys}");
    // Redis down: A greylists with its own state; B tempfails, from the connection on
    // (its lease cannot be had either: the fallback is the node's, for every feature)
    redis.kill();
    let t = swaks_from("127.0.0.7", a.port);
    assert!(t.contains("<** 450 4.7.1 "), "{t}");
    let t = swaks_from("127.0.0.7", b.port);
    assert!(t.contains("<** 421 4.3.0 "), "{t}");
    // Redis back (empty): shared again (for a new triplet: another /24, since B
    // remembers for a minute the triplet it saw pass, whatever Redis lost meanwhile)
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = swaks_from("127.0.1.8", b.port);
        if t.contains("<** 450 4.7.1 ") {
            break;
        }
        assert!(t.contains("<** 421 4.3.0 "), "{t}");
        assert!(Instant::now() < deadline, "never recovered: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let t = swaks_from("127.0.1.8", a.port);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
}

/// The script calls Redis has run so far (EVALSHA and EVAL: one round trip each).
fn script_calls(redis: &Redis) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while !text.contains("\r\n\r\n") && !text.ends_with("\r\n") || text.len() < 16 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.lines().count() > 2 && text.ends_with("\r\n") {
            break;
        }
    }
    text.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Counts ahead. The connection's call counts a message and its first recipient for
/// the first MAIL, so neither the first MAIL nor its first RCPT asks Redis; a MAIL
/// that makes a call counts its first recipient and the next message ahead; what a
/// session counted ahead and did not use is given back (RSET, QUIT). Near a limit
/// (half of it used) nothing is counted ahead for later, and the limit holds in total
/// across the nodes with its reply. A busy client's message per connection costs a
/// fraction of a call; a closed session's lease serves its next connection, or is
/// given back after a second.
#[test]
fn counts_ahead_save_calls_and_the_limit_holds() {
    let redis = Redis::start();
    let limits = "rate-limits {\n    recipients 3 per=\"1m\"\n    messages 100 per=\"1m\"\n}\n";
    let a = node(&redis, "a", limits);
    let b = node(&redis, "b", limits);
    let mut c = Client::connect_from("127.0.0.2", a.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    let before = script_calls(&redis);
    c.cmd("MAIL FROM:<a@src.test>", "250 ");
    assert_eq!(script_calls(&redis), before, "the first MAIL asked Redis");
    c.cmd("RSET", "250 ");
    // what is counted for a transaction that does not use it is given back: these
    // recipients would use the limit up (every other MAIL makes a call)
    for _ in 0..4 {
        c.cmd("MAIL FROM:<a@src.test>", "250 ");
        c.cmd("RSET", "250 ");
    }
    let before = script_calls(&redis);
    c.cmd("MAIL FROM:<a@src.test>", "250 ");
    let mail = script_calls(&redis);
    assert!(mail > before, "MAIL asked Redis nothing");
    c.cmd("RCPT TO:<r1@dst.test>", "250 ");
    assert_eq!(script_calls(&redis), mail, "the first RCPT asked Redis");
    c.cmd("RCPT TO:<r2@dst.test>", "250 ");
    assert!(
        script_calls(&redis) > mail,
        "the second RCPT is counted on its own"
    );
    c.cmd("DATA", "354 ");
    c.send("Subject: x\r\n\r\nhi\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    // one left (no recipient counted ahead past half the limit), via the other node;
    // then the limit's own reply, on either
    let mut d = Client::connect_from("127.0.0.2", b.port);
    d.expect("220 ");
    d.cmd("EHLO client.test", "250");
    d.send_message("a@src.test", &["r3@dst.test"], "Subject: y\r\n\r\nhi\r\n");
    d.cmd("MAIL FROM:<a@src.test>", "250 ");
    d.cmd(
        "RCPT TO:<r4@dst.test>",
        "450 4.7.1 Error: too many recipients from your address; try again later",
    );
    c.cmd("MAIL FROM:<a@src.test>", "250 ");
    c.cmd(
        "RCPT TO:<r5@dst.test>",
        "450 4.7.1 Error: too many recipients",
    );
    c.cmd("QUIT", "221");
    d.cmd("QUIT", "221");
    drop((c, d));
    // one message per connection from a busy client: what a call counts ahead for
    // the node (a sixteenth of a limit, 8 at most) and the leases closed sessions
    // leave serve the next connections with no call (it was 4 calls a message, then
    // 2, then 1)
    let loose = "rate-limits {\n    recipients 1000 per=\"1m\"\n    messages 1000 per=\"1m\"\n}\n";
    let e = node(&redis, "e", loose);
    let n = 20;
    let start = script_calls(&redis);
    for i in 0..n {
        let r = try_message(e.port, &format!("m{i}@dst.test"), "load");
        assert!(r.is_ok(), "{r:?}");
    }
    let calls = script_calls(&redis) - start;
    assert!(
        (1..=n / 4).contains(&calls),
        "{calls} calls for {n} messages"
    );
    // a connection that sends nothing gives its message back when it closes (a
    // limit whose count lives for minutes, so that only giving it back removes it)
    let f = node(
        &redis,
        "f",
        "rate-limits {\n    messages 10 per=\"1h\"\n}\n",
    );
    let key = "mtad:rate:messages:127.0.0.3";
    let mut idle = Client::connect_from("127.0.0.3", f.port);
    idle.expect("220 ");
    assert_eq!(redis.cli(&["EXISTS", key]).unwrap(), ":1", "counted ahead");
    idle.cmd("QUIT", "221");
    drop(idle);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(redis.cli(&["EXISTS", key]).unwrap(), ":0", "given back");
    // every lease was given back (those a node kept for the client's next
    // connection after a second)
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let key = format!("mtad:conn:{ip}");
        let given_back = || redis.cli(&["ZCARD", &key]).unwrap() == ":0";
        assert!(eventually(Duration::from_secs(3), given_back), "{key}");
    }
}

/// A busy client (its connections one after the other on a node) costs a call every
/// few messages: each call counts events ahead for the node and holds spare leases,
/// and a closed session's lease and unused counts wait a second for the client's next
/// connection. The limit still holds in total across the nodes: what a node holds is
/// counted, so the client gets in at most `messages 64`, and exactly that many once
/// what the nodes held unused has been given back.
#[test]
fn a_busy_client_is_counted_ahead_for_the_node_and_the_limit_holds_exactly() {
    let redis = Redis::start();
    let limits = "limits {\n    connections-per-ip 64\n}\n\
                  rate-limits {\n    connections 1000 per=\"1h\"\n    messages 64 per=\"1h\"\n    recipients 1000 per=\"1h\"\n}\n";
    let a = node(&redis, "a", limits);
    let b = node(&redis, "b", limits);
    let start = script_calls(&redis);
    let mut accepted = 0;
    for i in 0..24 {
        let r = try_message(a.port, &format!("m{i}@dst.test"), "busy");
        assert!(r.is_ok(), "{r:?}");
        accepted += 1;
    }
    let calls = script_calls(&redis) - start;
    assert!((1..=12).contains(&calls), "{calls} calls for 24 messages");
    let held = redis.cli(&["ZCARD", "mtad:conn:127.0.0.1"]).unwrap();
    assert_ne!(held, ":0", "spare leases are held for the node");
    // via both nodes until the limit refuses: never past it, a little before it at
    // most (what the other node holds counted ahead, for up to a second)
    let until_refused = |accepted: &mut usize| loop {
        let port = if accepted.is_multiple_of(2) {
            a.port
        } else {
            b.port
        };
        match try_message(port, &format!("m{accepted}@dst.test"), "busy") {
            Ok(()) => *accepted += 1,
            Err(e) => {
                assert!(e.starts_with("450 4.7.1 Error: too many messages"), "{e}");
                return;
            }
        }
        assert!(*accepted <= 64, "past the limit");
    };
    until_refused(&mut accepted);
    assert!(accepted >= 48, "refused at {accepted} of 64");
    // what the nodes held unused is given back: the rest get in, not one more
    std::thread::sleep(Duration::from_millis(1500));
    until_refused(&mut accepted);
    assert_eq!(accepted, 64);
    let queued = a.queued().len() + b.queued().len();
    assert_eq!(queued, 64);
    // and the spare leases are given back too
    let given_back = || redis.cli(&["ZCARD", "mtad:conn:127.0.0.1"]).unwrap() == ":0";
    assert!(eventually(Duration::from_secs(3), given_back));
}

/// `mtad_cluster_redis_round_trips_total` of the node whose metrics are at `port`.
fn round_trips(port: u16) -> u64 {
    let m = metrics(port);
    m.lines()
        .find_map(|l| l.strip_prefix("mtad_cluster_redis_round_trips_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no round-trip counter in\n{m}"))
}

/// One message from 127.0.0.2 by swaks, pipelining (`--pipeline`) or waiting for each
/// reply: its whole transcript.
fn swaks_grey(port: u16, pipelining: bool) -> String {
    let more: &[&str] = if pipelining { &["--pipeline"] } else { &[] };
    swaks_with("127.0.0.2", port, more)
}

/// With shared limits and greylisting in Redis, a one-recipient message on its own
/// connection costs two round trips at most: the connection's (its lease and rate,
/// and the message and its recipient counted ahead; for a busy client, a call every
/// few connections) and the greylisting records' read, made by MAIL when it makes a
/// call anyway and the RCPT is pipelined behind it, else by the RCPT; what
/// greylisting decides to store rides on the node's next call (or goes alone after
/// 100 ms). A node remembers the triplets it saw pass for a minute: their next
/// messages read nothing. The decisions are the same either way:
/// greylisted first, passed after the delay (via another node too), the record in
/// Redis.
#[test]
fn greylisting_reads_once_a_message_at_most_and_rides_on_calls_made_anyway() {
    let redis = Redis::start();
    let mport = free_port();
    let metrics_at = format!("    metrics \"127.0.0.1:{mport}\"");
    let extra = "rate-limits {\n    messages 1000 per=\"1m\"\n    recipients 1000 per=\"1m\"\n}\n\
                 greylisting {\n    delay \"1s\"\n}\n";
    let grey = Node {
        server: &metrics_at,
        rcpt: "greylist\n    accept client=\"trusted\"",
        ..Node::default()
    };
    let a = grey.start(&redis, "a", extra);
    let b = Node {
        rcpt: grey.rcpt,
        ..Node::default()
    }
    .start(&redis, "b", extra);
    let t = swaks_grey(a.port, true);
    assert!(
        t.contains("<** 450 4.7.1 <b@dst.test>: Recipient address rejected: Greylisted"),
        "{t}"
    );
    // the triplet's record was written with no call of its own to ride on
    std::thread::sleep(Duration::from_millis(300));
    let keys = redis.cli(&["KEYS", "mtad:grey:t:*"]).unwrap();
    assert_eq!(keys, "*1", "one triplet: {keys}");
    std::thread::sleep(Duration::from_millis(1200));
    let t = swaks_grey(a.port, true);
    assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    // its next messages: the pass is remembered, the connection's call only
    let n: u64 = 20;
    std::thread::sleep(Duration::from_millis(300));
    let before = round_trips(mport);
    for _ in 0..n {
        let t = swaks_grey(a.port, true);
        assert!(t.contains("<-  250 2.0.0 Ok: queued as"), "{t}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let remembered = round_trips(mport) - before;
    assert!(
        (1..=n / 2).contains(&remembered),
        "{remembered} round trips for {n} messages of a triplet that passed"
    );
    // triplets that passed via node b, new to node a: a reads their records
    let (one, two) = (2 * n, 4 * 10);
    let rcpts: Vec<String> = (0..one + two).map(|i| format!("r{i}@dst.test")).collect();
    // (a few recipients a connection: each refusal counts to the session's errors)
    for (pass, chunk) in [(false, 5), (true, rcpts.len())] {
        for rcpts in rcpts.chunks(chunk) {
            let mut c = Client::connect_from("127.0.0.2", b.port);
            c.expect("220 ");
            c.cmd("EHLO client.test", "250");
            c.cmd("MAIL FROM:<a@src.test>", "250 ");
            for r in rcpts {
                let want = if pass { "250 " } else { "450 4.7.1" };
                c.cmd(&format!("RCPT TO:<{r}>"), want);
            }
            c.cmd("QUIT", "221");
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    let mut rcpts = rcpts.iter();
    // MAIL, RCPT and DATA in one write (as MTAs pipeline), or each waiting for its reply
    let mut message = |c: &mut Client, pipelining: bool| {
        let rcpt = rcpts.next().unwrap();
        if pipelining {
            c.send(format!(
                "MAIL FROM:<a@src.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
            ));
            c.expect("250 ");
            c.expect("250 ");
            c.expect("354 ");
        } else {
            c.cmd("MAIL FROM:<a@src.test>", "250 ");
            c.cmd(&format!("RCPT TO:<{rcpt}>"), "250 ");
            c.cmd("DATA", "354 ");
        }
        c.send("Subject: x\r\n\r\nhi\r\n.\r\n");
        c.expect("250 2.0.0 Ok: queued as ");
    };
    // `per` messages a connection, `count` connections; the round trips they cost
    let mut measure = |per: u64, count: u64, pipelining: bool| {
        std::thread::sleep(Duration::from_millis(300));
        let before = round_trips(mport);
        for _ in 0..count {
            let mut c = Client::connect_from("127.0.0.2", a.port);
            c.expect("220 ");
            c.cmd("EHLO client.test", "250");
            for _ in 0..per {
                message(&mut c, pipelining);
            }
            c.cmd("QUIT", "221");
        }
        std::thread::sleep(Duration::from_millis(300));
        round_trips(mport) - before
    };
    // one message a connection: the read (MAIL used a message counted ahead and made
    // no call for the read to ride on), and a call every few connections
    let (piped, waited) = (measure(1, n / 2, true), measure(1, n / 2, false));
    eprintln!(
        "round trips for {} messages, a connection each: pipelined {piped}, waiting {waited}; {remembered} for {n} remembered",
        n / 2
    );
    for trips in [piped, waited] {
        assert!((n / 2..=n).contains(&trips), "{trips}");
    }
    // two messages a connection: a read each (by MAIL when the RCPT is pipelined
    // behind it, else by the RCPT: the same round trip), and a call every few
    let m = 10;
    let (piped, waited) = (measure(2, m, true), measure(2, m, false));
    eprintln!(
        "round trips for {m} connections of two messages: pipelined {piped}, waiting {waited}"
    );
    for trips in [piped, waited] {
        assert!((2 * m..=3 * m).contains(&trips), "{trips}");
    }
    assert_eq!(a.queued().len() as u64, n + 1 + n + 4 * m);
}

/// A RCPT whose greylisting records cannot be read (Redis lost after the connection
/// was admitted, no rate limits set, so nothing else asked Redis): greylisting's own
/// fallback answers (`tempfail`: 451 4.3.0 Greylisting unavailable), not the shared
/// limits' reply, since no limit was asked; and never a 5xx or an accept.
#[test]
fn greylistings_own_fallback_answers_when_its_read_fails() {
    let mut redis = Redis::start();
    let b = greylisting_node(&redis, "b", "tempfail");
    let mut c = Client::connect_from("127.0.0.3", b.port);
    c.expect("220 ");
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@src.test>", "250 ");
    redis.kill();
    c.cmd(
        "RCPT TO:<b@dst.test>",
        "451 4.3.0 Greylisting unavailable, try again later",
    );
    c.cmd("QUIT", "221");
}

/// `mtactl cluster status [--format json]` on node `m`: exit code and output.
fn cluster_status(m: &Mtad, json: bool) -> (Option<i32>, String) {
    let args: &[&str] = if json {
        &["cluster", "status", "--format", "json"]
    } else {
        &["cluster", "status"]
    };
    let out = m.mtactl(args);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Three nodes write heartbeats; each node's own file includes the shared policy, and
/// one of them another: `mtactl cluster status` lists the three, flags the odd one
/// (exit 1), and a node killed with -9 is flagged once its heartbeat stops.
#[test]
fn cluster_status_flags_a_node_with_another_policy_or_no_heartbeat() {
    let redis = Redis::start();
    let shared = tempfile::tempdir().unwrap();
    let policy = shared.path().join("policy.kdl");
    std::fs::write(&policy, "domains \"ours\" \"example.test\"\n").unwrap();
    let other = shared.path().join("other.kdl");
    std::fs::write(&other, "domains \"ours\" \"example.test\" \"new.test\"\n").unwrap();
    let include = |p: &std::path::Path| format!("include \"{}\"\n", p.display());
    let beat = "    heartbeat \"1s\"";
    let start = |name: &str, file: &std::path::Path| {
        Node {
            cluster: beat,
            ..Node::default()
        }
        .start(&redis, name, &include(file))
    };
    let a = start("a", &policy);
    let mut b = start("b", &policy);
    let wait_for = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, text) = cluster_status(&a, true);
            let report: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let up = report["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["state"] == "up")
                .count();
            if up == want {
                return (code, report);
            }
            assert!(Instant::now() < deadline, "{want} nodes never up: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (code, report) = wait_for(2);
    assert_eq!(code, Some(0), "{report}");
    let c = start("c", &other);
    let (code, report) = wait_for(3);
    assert_eq!(code, Some(1), "{report}");
    let flagged: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["flags"].as_array().unwrap().is_empty())
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, ["c"], "{report}");
    let node_a = &report["nodes"][0]["heartbeat"];
    assert_eq!(node_a["node"], "a");
    assert_eq!(node_a["addresses"][0], format!("127.0.0.1:{}", a.port));
    assert_ne!(
        node_a["revision"], report["nodes"][1]["heartbeat"]["revision"],
        "each node's own file differs"
    );
    assert_eq!(
        report["majority_policy_revision"],
        report["nodes"][1]["heartbeat"]["policy_revision"]
    );
    let (code, text) = cluster_status(&c, false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("differs from the majority's"), "{text}");
    // b dies: its heartbeat stops, and it is flagged within three heartbeats
    b.kill9();
    let (code, report) = wait_for(2);
    assert_eq!(code, Some(1));
    let b_state = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "b")
        .unwrap();
    assert_eq!(b_state["state"], "stopped", "{report}");
    assert_eq!(b_state["flags"][0], "heartbeat stopped");
    let (_, text) = cluster_status(&a, false);
    assert!(text.contains("b                stopped"), "{text}");
    // no Redis: exit 2
    drop(redis);
    let (code, text) = cluster_status(&a, false);
    assert_eq!(code, Some(2), "{text}");
}

/// The content-filter loop record in Redis. Three nodes whose main listener filters
/// everything, and no `filtered` listener anywhere: the record is all that stops a
/// second pass. A real filter (tests/peers/filter_peer.py on aiosmtpd) injects every
/// message it takes into node b, whichever node sent it (a or c): b recognises it and
/// delivers it, filtered once. With Redis down, the safe failure: the message is
/// filtered a second time (b does not know it), never delivered unfiltered, and
/// delivered once; the failed calls are counted. Redis back: once again.
#[test]
fn a_content_filter_reinjecting_into_another_node_filters_once() {
    let mut redis = Redis::start();
    let sink = common::peers::Sink::start(&[]);
    let filter_port = free_port();
    let mport = free_port();
    let extra = format!(
        r#"
content-filter "scan" "smtp:[127.0.0.1]:{filter_port}"
stage "route" {{
    transport "*" "smtp:[127.0.0.1]:{sink}"
}}
delivery {{
    backoff-min "1s"
    backoff-max "1s"
    connect-timeout "2s"
}}
"#,
        sink = sink.port()
    );
    let filtering = Node {
        listen: "listen \"mx\" address=\"127.0.0.1:{port}\" content-filter=\"scan\"",
        cluster: "    heartbeat \"1s\"",
        ..Node::default()
    };
    let metrics_at = format!("    metrics \"127.0.0.1:{mport}\"");
    let a = Node {
        server: &metrics_at,
        ..filtering
    }
    .start(&redis, "a", &extra);
    let b = filtering.start(&redis, "b", &extra);
    let c = filtering.start(&redis, "c", &extra);
    let filter = common::peers::FilterPeer::start(filter_port, b.port, &[]);
    let send = |port: u16, n: usize| {
        try_message(port, &format!("r{n}@dst.test"), &format!("m{n}"))
            .unwrap_or_else(|e| panic!("message {n} refused: {e}"));
    };
    // what the sink got for message n, once it got it
    let delivered = |n: usize| -> String {
        let dumps = sink.dumps_within(n, Duration::from_secs(20));
        let rcpt = format!("r{n}@dst.test");
        let mine: Vec<&String> = dumps
            .iter()
            .filter(|d| common::peers::dump_recipients(d) == [rcpt.as_str()])
            .collect();
        assert_eq!(mine.len(), 1, "message {n} delivered once: {dumps:?}");
        mine[0].clone()
    };
    send(a.port, 1);
    let dump = delivered(1);
    assert_eq!(
        dump.matches("X-Filtered-By: test-filter").count(),
        1,
        "{dump}"
    );
    assert!(dump.contains("Subject: [filtered] m1\n"), "{dump}");
    assert_eq!(filter.count(), 1, "filtered once, though it came back to b");
    send(c.port, 2);
    delivered(2);
    assert_eq!(filter.count(), 2);
    // Redis down: a records in its own memory, b does not know the message and
    // filters it again (b's own record then recognises it): filtered twice, delivered
    // once, never unfiltered
    redis.kill();
    send(a.port, 3);
    let dump = delivered(3);
    assert_eq!(
        dump.matches("X-Filtered-By: test-filter").count(),
        2,
        "{dump}"
    );
    assert!(
        dump.contains("Subject: [filtered] [filtered] m3\n"),
        "{dump}"
    );
    assert_eq!(filter.count(), 4);
    let m = metrics(mport);
    assert!(
        m.lines()
            .any(|l| l.starts_with("mtad_cluster_redis_errors_total{feature=\"content-filter\"}")),
        "{m}"
    );
    for node in [&a, &b] {
        let log = node.log();
        assert_eq!(
            log.matches("cluster: Redis unavailable").count(),
            1,
            "logged once:\n{log}"
        );
    }
    // back: shared again once a and b have seen it answer (their heartbeats)
    redis.restart();
    for node in [&a, &b] {
        node.wait_log("cluster: Redis answers again", 1, Duration::from_secs(10));
    }
    send(a.port, 4);
    let dump = delivered(4);
    assert_eq!(
        dump.matches("X-Filtered-By: test-filter").count(),
        1,
        "{dump}"
    );
    assert_eq!(filter.count(), 5);
    for node in [&a, &b, &c] {
        assert!(node.queued().is_empty(), "{}", node.log());
    }
}

/// A listener behind the balancer: the PROXY protocol from HAProxy (on 127.0.0.1) only.
const BEHIND_HAPROXY: &str = "listen \"lb\" address=\"127.0.0.1:{port}\" proxy-protocol=#true proxies=\"lb\"\nnetworks \"lb\" \"127.0.0.1/32\"";

/// Three nodes behind a real HAProxy (send-proxy-v2, round robin, `option redispatch`:
/// a connection the dead node refuses goes to another one), with shared limits in a
/// real Redis, under a load of four clients. Node b is killed with -9 in the middle:
/// the other two keep accepting through HAProxy, and every message any node
/// acknowledged is on a node's disk; nothing is delivered until the receiver starts
/// (so b dies holding mail), then b is started again and every acknowledged message
/// is delivered.
#[test]
fn a_node_killed_with_9_under_load_loses_no_acknowledged_message_while_the_others_accept() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let redis = Redis::start();
    let sink_port = free_port();
    let sink_addr: std::net::SocketAddr = format!("127.0.0.1:{sink_port}").parse().unwrap();
    let extra = format!(
        r#"
rate-limits {{
    messages 100000 per="1m"
    recipients 100000 per="1m"
}}
stage "route" {{
    transport "*" "smtp:[127.0.0.1]:{sink_port}"
}}
delivery {{
    backoff-min "1s"
    backoff-max "1s"
    connect-timeout "2s"
}}
"#
    );
    let behind = Node {
        listen: BEHIND_HAPROXY,
        ..Node::default()
    };
    let mut nodes = ["a", "b", "c"].map(|name| behind.start(&redis, name, &extra));
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let lb = common::peers::Haproxy::start_with(
        &ports,
        "send-proxy-v2",
        "    retries 3\n    option redispatch 1\n    timeout connect 1s\n",
    );
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            let port = lb.port;
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let rcpt = format!("r{t}-{n}@dst.test");
                    match try_message(port, &rcpt, &format!("load {t} {n}")) {
                        Ok(()) => acknowledged.lock().unwrap().push(rcpt),
                        // a session cut by the kill, or refused by the dead node
                        Err(e) => assert!(!e.starts_with('5'), "a 5xx under load: {e}"),
                    }
                }
            })
        })
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    let wait_for = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} acknowledged",
                count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(60, "before the kill");
    nodes[1].kill9();
    let at_kill = count();
    wait_for(at_kill + 60, "the other nodes after the kill");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    // every acknowledged message is in a spool (b's read while b is dead)
    let spooled = |m: &Mtad| -> Vec<String> {
        m.queued()
            .into_iter()
            .flat_map(|(q, _)| q.envelope.recipients)
            .collect()
    };
    let on_b = spooled(&nodes[1]);
    assert!(!on_b.is_empty(), "b died holding acknowledged mail");
    let mut everywhere: Vec<String> = nodes.iter().flat_map(spooled).collect();
    everywhere.sort();
    for rcpt in &acknowledged {
        assert!(
            everywhere.binary_search(rcpt).is_ok(),
            "{rcpt} acknowledged, in no spool"
        );
    }
    // the others kept accepting: what was acknowledged after the kill (but the four
    // that may have had b's 250 in hand then) is on a and c
    let mut on_others: Vec<String> = [&nodes[0], &nodes[2]]
        .iter()
        .flat_map(|n| spooled(n))
        .collect();
    on_others.sort();
    for rcpt in &acknowledged[at_kill + 4..] {
        assert!(
            on_others.binary_search(rcpt).is_ok() && !on_b.contains(rcpt),
            "{rcpt}, acknowledged after the kill, is not on a or c"
        );
    }
    // the receiver comes, b comes back: everything acknowledged is delivered
    let sink = common::peers::Sink::start_at(sink_addr, &[]);
    nodes[1].restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String>;
    loop {
        // the complete dumps so far
        let mut delivered: Vec<String> = std::fs::read_dir(sink.dir.path())
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter(|b| b.ends_with(b"\n\n"))
            .flat_map(|b| common::peers::dump_recipients(&String::from_utf8_lossy(&b)))
            .collect();
        delivered.sort();
        missing = acknowledged
            .iter()
            .filter(|r| delivered.binary_search(r).is_err())
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages never delivered: {:?}\nb's log:\n{}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(10)],
            nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The nodes read one PostgreSQL table (the relay domains, `domains table=` over an
/// SQL `table`, uncached): a row added is seen by every node at once. Through a real
/// HAProxy (send-proxy-v2, round robin), so that three messages reach three nodes.
#[test]
fn a_row_added_to_a_shared_postgresql_table_is_seen_by_every_node() {
    let test = "a_row_added_to_a_shared_postgresql_table_is_seen_by_every_node";
    let Some(pg) = common::peers::Postgres::start(test) else {
        return;
    };
    pg.sql("CREATE TABLE relay_domains (domain text PRIMARY KEY)");
    pg.sql("INSERT INTO relay_domains VALUES ('old.test')");
    let redis = Redis::start();
    let extra = format!(
        r#"
table "relay_domains" sql="postgres://postgres@127.0.0.1:{}/postgres" timeout="2s" cache-ttl="0s" negative-ttl="0s" \
    query="SELECT domain FROM relay_domains WHERE domain = $1"
domains "relay" table="relay_domains"
"#,
        pg.port
    );
    let behind = Node {
        listen: BEHIND_HAPROXY,
        rcpt: "accept rcpt-domain=\"relay\"\n    reject 554 \"5.7.1\" \"Relay access denied\"",
        ..Node::default()
    };
    let nodes = ["a", "b", "c"].map(|name| behind.start(&redis, name, &extra));
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let lb = common::peers::Haproxy::start(&ports, "send-proxy-v2");
    let rcpt_on_each = |rcpt: &str, want: &str| {
        for _ in &nodes {
            let mut c = Client::connect(lb.port);
            c.expect("220 ");
            c.cmd("EHLO client.test", "250");
            c.cmd("MAIL FROM:<a@src.test>", "250");
            c.cmd(&format!("RCPT TO:<{rcpt}>"), want);
            c.cmd("QUIT", "221");
        }
    };
    rcpt_on_each("x@old.test", "250");
    rcpt_on_each("x@new.test", "554 5.7.1");
    for n in &nodes {
        assert!(
            n.log().contains("Relay access denied"),
            "every node refused: {}",
            n.log()
        );
    }
    pg.sql("INSERT INTO relay_domains VALUES ('new.test')");
    for i in 0..nodes.len() {
        let t = swaks(
            lb.port,
            &["--from", "a@src.test", "--to", &format!("y{i}@new.test")],
        );
        let text = String::from_utf8_lossy(&t.stdout);
        assert!(text.contains("<-  250 2.0.0 Ok: queued as"), "{text}");
    }
    for n in &nodes {
        let queued = n.queued();
        assert_eq!(queued.len(), 1, "round robin: one each\n{}", n.log());
        assert!(
            queued[0].0.envelope.recipients[0].ends_with("@new.test"),
            "{:?}",
            queued[0].0.envelope
        );
    }
}
