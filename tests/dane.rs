//! DANE (RFC 7672) end to end on loopback: a DNSSEC-signed `test.` zone served by knot
//! (signed by knot itself) with a secure delegation to `dane.test` (signed, TLSA
//! records; an MX host whose address is a CNAME into plain.test) and an insecure one to
//! `plain.test` (unsigned); a second knotd serving a
//! copy whose signatures were tampered with; aiosmtpd offering STARTTLS with a
//! certificate from a CA made here. mtad validates from the `test.` zone's keys.
//!
//! A missing knotd, kdig, keymgr or aiosmtpd fails the test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::peers::{Pki, free_udp_tcp_port};
use mtad::config::Delivery;
use mtad::config::route::{RouteOptions, TlsPolicy};
use mtad::delivery::TlsClient;
use mtad::delivery::hops::{Outbound, Outcome};
use mtad::delivery::tls_rpt::PolicyType;
use mtad::delivery::tls_rpt::report::{Sender, build};
use mtad::delivery::tls_rpt::store::{Limits, Store};
use mtad::net::dns::Resolver;
use mtad::net::dnssec::Dnssec;
use sha2::Digest;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: apt-get install knot knot-dnsutils (or run ./run-tests)");
}

/// A knotd on 127.0.0.1:`port` serving the zone files in `dir/zones`, signing the
/// zones in `signed`.
struct Knot {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Knot {
    fn start(dir: &Path, zones: &[&str], signed: &[&str]) -> Knot {
        let port = free_udp_tcp_port();
        for d in ["zones", "db", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {run}\n\
             log:\n  - target: {run}/knot.log\n    any: info\n\
             database:\n    storage: {db}\n\
             policy:\n  - id: testpolicy\n    algorithm: ecdsap256sha256\n    ksk-lifetime: 0\n    zsk-lifetime: 0\n    nsec3: off\n\
             template:\n  - id: default\n    storage: {zones}\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: all\n\
             zone:\n",
            run = dir.join("run").display(),
            db = dir.join("db").display(),
            zones = dir.join("zones").display(),
        );
        for z in zones {
            conf.push_str(&format!("  - domain: {z}\n"));
            if signed.contains(z) {
                conf.push_str("    dnssec-signing: on\n    dnssec-policy: testpolicy\n");
            }
        }
        std::fs::write(dir.join("knot.conf"), conf).unwrap();
        let child = Command::new(tool("knotd"))
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting knotd");
        let knot = Knot {
            child,
            dir: dir.to_owned(),
            port,
        };
        knot.wait_for(zones[0], "SOA", |out| !out.is_empty());
        knot
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn dig(&self, name: &str, kind: &str) -> String {
        let out = Command::new(tool("kdig"))
            .args(["@127.0.0.1", "-p", &self.port.to_string()])
            .args([name, kind, "+short", "+timeout=1", "+retry=0"])
            .output()
            .expect("kdig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, name: &str, kind: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.dig(name, kind);
            if done(&out) {
                return out;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "knotd never answered {name} {kind}: {}",
                std::fs::read_to_string(self.dir.join("run/knot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn knotc(&self, args: &[&str]) -> String {
        let out = Command::new(tool("knotc"))
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .args(args)
            .output()
            .expect("knotc");
        assert!(out.status.success(), "knotc {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ds(&self, zone: &str) -> String {
        let out = Command::new(tool("keymgr"))
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .args([zone, "ds"])
            .output()
            .expect("keymgr");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // `dane.test. DS 1234 13 2 ABC...`: the SHA-256 one
        text.lines()
            .find(|l| l.contains(" DS ") && l.split_whitespace().nth(4) == Some("2"))
            .unwrap_or_else(|| panic!("no DS from keymgr: {text}"))
            .to_owned()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zones and both servers: `good` signs and serves them, `tampered` serves a copy
/// whose MX signatures in `dane.test` were changed; `anchors` holds `test.`'s keys.
struct Zones {
    _dir: tempfile::TempDir,
    good: Knot,
    tampered: Knot,
    anchors: PathBuf,
}

fn zones(port: u16, certs: &Pki) -> Zones {
    let dir = tempfile::tempdir().unwrap();
    let good_dir = dir.path().join("good");
    std::fs::create_dir_all(good_dir.join("zones")).unwrap();
    let soa = "@ 300 SOA ns1.test. hostmaster.test. 1 3600 600 86400 300\n@ 300 NS ns1.test.\n";
    let test_zone = |serial: u32, ds: &str| {
        format!(
            "$ORIGIN test.\n$TTL 300\n@ SOA ns1 hostmaster {serial} 3600 600 86400 300\n@ NS ns1\nns1 A 127.0.0.1\n\
             dane NS ns1.dane\nns1.dane A 127.0.0.1\n{ds}\nplain NS ns1.plain\nns1.plain A 127.0.0.1\n"
        )
    };
    std::fs::write(good_dir.join("zones/test.zone"), test_zone(1, "")).unwrap();
    let ee = hex(&sha2::Sha256::digest(&certs.leaf_spki));
    let ee512 = hex(&sha2::Sha512::digest(&certs.leaf_spki));
    let ta = hex(&sha2::Sha256::digest(&certs.ca_der));
    let wrong = hex(&sha2::Sha256::digest(b"not the key"));
    let mut dane = format!("$ORIGIN dane.test.\n$TTL 300\n{soa}ns1 A 127.0.0.1\n");
    for (name, tlsa) in [
        ("ee", format!("3 1 1 {ee}")),
        ("ee512", format!("3 1 2 {ee512}")),
        ("ta", format!("2 0 1 {ta}")),
        ("wrong", format!("3 1 1 {wrong}")),
        ("unusable", format!("1 1 1 {ee}")),
        ("notlsa", String::new()),
    ] {
        dane.push_str(&format!("{name} MX 10 mx-{name}\nmx-{name} A 127.0.0.1\n"));
        if !tlsa.is_empty() {
            dane.push_str(&format!("_{port}._tcp.mx-{name} TLSA {tlsa}\n"));
        }
    }
    // an MX host in the signed zone whose addresses come from the unsigned one (a CNAME
    // into plain.test), with a (wrong) TLSA record that is itself secure
    dane.push_str(&format!(
        "cname MX 10 mx-cname\nmx-cname CNAME mx.plain.test.\n_{port}._tcp.mx-cname TLSA 3 1 1 {wrong}\n"
    ));
    std::fs::write(good_dir.join("zones/dane.test.zone"), dane).unwrap();
    let plain = format!(
        "$ORIGIN plain.test.\n$TTL 300\n{soa}ns1 A 127.0.0.1\n@ MX 10 mx\nmx A 127.0.0.1\n_{port}._tcp.mx TLSA 3 1 1 {wrong}\n"
    );
    std::fs::write(good_dir.join("zones/plain.test.zone"), plain).unwrap();

    let good = Knot::start(
        &good_dir,
        &["test", "dane.test", "plain.test"],
        &["test", "dane.test"],
    );
    // the secure delegation: dane.test's DS in test.
    let ds = good.ds("dane.test");
    std::fs::write(good_dir.join("zones/test.zone"), test_zone(2, &ds)).unwrap();
    good.knotc(&["zone-reload", "test"]);
    good.wait_for("dane.test", "DS", |out| !out.is_empty());

    let anchors = dir.path().join("anchors");
    let keys: String = good
        .dig("test", "DNSKEY")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("test. 3600 IN DNSKEY {l}\n"))
        .collect();
    assert!(keys.contains("257 3 13"), "no KSK for test.: {keys}");
    std::fs::write(&anchors, keys).unwrap();

    // the tampered copy: knotd serves the signed records as they are
    let bad_dir = dir.path().join("tampered");
    std::fs::create_dir_all(bad_dir.join("zones")).unwrap();
    for zone in ["test", "dane.test"] {
        let signed = good.knotc(&["zone-read", zone]);
        let mut text = String::new();
        for line in signed.lines() {
            let line = line.split_once("] ").map_or(line, |(_, rest)| rest);
            let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if zone == "dane.test" && words.len() > 4 && words[2] == "RRSIG" && words[3] == "MX" {
                let sig = words.last_mut().unwrap();
                let c = if sig.as_bytes()[10] == b'A' { "B" } else { "A" };
                sig.replace_range(10..11, c);
            }
            text.push_str(&words.join(" "));
            text.push('\n');
        }
        std::fs::write(bad_dir.join(format!("zones/{zone}.zone")), text).unwrap();
    }
    let tampered = Knot::start(&bad_dir, &["test", "dane.test"], &[]);
    Zones {
        _dir: dir,
        good,
        tampered,
        anchors,
    }
}

fn outbound(dns: SocketAddr, anchors: &Path, port: u16) -> Outbound {
    let mut settings = Delivery::defaults_for(Path::new("/nonexistent"));
    settings.connect_timeout = Duration::from_secs(5);
    settings.command_timeout = Duration::from_secs(10);
    settings.smtp_port = port;
    Outbound::new(
        Resolver::with_nameserver(dns),
        settings,
        "client.example.test".into(),
        Some(Arc::new(TlsClient::new(None).unwrap())),
        BTreeMap::new(),
    )
    .with_dnssec(Some(
        Dnssec::new(Some(dns), Some(anchors), Duration::from_secs(2)).unwrap(),
    ))
}

async fn send(out: &Outbound, domain: &str, level: TlsPolicy) -> Outcome {
    let options = RouteOptions {
        tls: Some(level),
        ..RouteOptions::default()
    };
    common::outbound::send(
        out,
        &format!("smtp:{domain}"),
        &options,
        &format!("rcpt@{domain}"),
    )
    .await
}

#[tokio::test]
async fn dane_over_a_signed_zone_served_by_knot() {
    let certs = Pki::for_names(&["*.dane.test", "*.plain.test"]);
    let aio = certs.aio(&[]);
    let port = aio.addr.port();
    let z = zones(port, &certs);
    let out = outbound(z.good.addr(), &z.anchors, port);
    let mut delivered = 0;
    let mut expect_sent = |o: &Outcome, what: &str| {
        assert_eq!(o.status(), "sent", "{what}: {o:?}");
        delivered += 1;
    };

    // DANE-EE (SPKI, SHA-256 and SHA-512) and DANE-TA (the CA certificate, SHA-256):
    // delivered, with a CA no root store knows
    for domain in ["ee.dane.test", "ee512.dane.test", "ta.dane.test"] {
        for level in [TlsPolicy::Dane, TlsPolicy::DaneOnly] {
            let o = send(&out, domain, level).await;
            expect_sent(&o, domain);
            // the log line's tls=
            assert!(
                matches!(
                    o,
                    Outcome::Sent {
                        tls: Some("dane"),
                        ..
                    }
                ),
                "{o:?}"
            );
        }
    }
    // TLSA records that are all unusable (PKIX-EE): TLS required, not authenticated;
    // dane-only defers
    expect_sent(
        &send(&out, "unusable.dane.test", TlsPolicy::Dane).await,
        "unusable",
    );
    let o = send(&out, "unusable.dane.test", TlsPolicy::DaneOnly).await;
    assert_eq!(o.status(), "deferred");
    assert!(
        o.detail()
            .contains("dane-only: none of the 1 TLSA records of mx-unusable.dane.test is usable"),
        "{}",
        o.detail()
    );
    // provably no TLSA record: opportunistic; dane-only defers
    expect_sent(
        &send(&out, "notlsa.dane.test", TlsPolicy::Dane).await,
        "notlsa",
    );
    let o = send(&out, "notlsa.dane.test", TlsPolicy::DaneOnly).await;
    assert!(
        o.detail()
            .contains("dane-only: no TLSA records for mx-notlsa.dane.test"),
        "{}",
        o.detail()
    );
    // the wrong TLSA record: deferred, nothing sent
    let before = aio.file_count();
    let o = send(&out, "wrong.dane.test", TlsPolicy::Dane).await;
    assert_eq!(o.status(), "deferred", "{o:?}");
    assert_eq!(o.dsn(), [4, 7, 4]);
    assert!(
        o.detail().contains("dane: TLSA mismatch")
            && o.detail()
                .contains("(TLS policy dane (1 TLSA record(s)) from route tls=)"),
        "{}",
        o.detail()
    );
    assert_eq!(
        aio.file_count(),
        before,
        "a message went out past a TLSA mismatch"
    );
    // an unsigned zone (an insecure delegation): not DANE, whatever its TLSA records
    // say (this one's is wrong): opportunistic TLS; dane-only defers
    let o = send(&out, "plain.test", TlsPolicy::Dane).await;
    expect_sent(&o, "plain");
    assert!(
        matches!(
            o,
            Outcome::Sent {
                tls: Some("opportunistic"),
                ..
            }
        ),
        "{o:?}"
    );
    let o = send(&out, "plain.test", TlsPolicy::DaneOnly).await;
    assert!(
        o.detail()
            .contains("dane-only: MX records not DNSSEC-signed"),
        "{}",
        o.detail()
    );

    // RFC 7672 §2.2.2: the MX host's addresses are insecure (a CNAME into the unsigned
    // zone), so its TLSA records are not looked up, secure as they are: not DANE
    expect_sent(
        &send(&out, "cname.dane.test", TlsPolicy::Dane).await,
        "addresses insecure",
    );
    let o = send(&out, "cname.dane.test", TlsPolicy::DaneOnly).await;
    assert_eq!(o.status(), "deferred", "{o:?}");
    assert!(
        o.detail()
            .contains("dane-only: address records of mx-cname.dane.test not DNSSEC-signed"),
        "{}",
        o.detail()
    );

    // bogus signatures (the tampered server): deferred, nothing sent
    let before = aio.file_count();
    let bad = outbound(z.tampered.addr(), &z.anchors, port);
    for level in [TlsPolicy::Dane, TlsPolicy::DaneOnly] {
        let o = send(&bad, "ee.dane.test", level).await;
        assert_eq!(o.status(), "deferred", "{o:?}");
        assert!(
            o.detail().contains("dane: MX records are bogus"),
            "{}",
            o.detail()
        );
    }
    assert_eq!(
        aio.file_count(),
        before,
        "a message went out past bogus DNSSEC"
    );
    let files = aio.messages(delivered);
    assert!(files.iter().all(|(env, _)| env.starts_with("TLS yes\n")));

    // TLS reports: each outcome counted with its RFC 8460 result type, under the
    // tlsa policy (its records), and the report validates
    let rpt = tempfile::tempdir().unwrap();
    let limits = Limits {
        domains: 100,
        details: 100,
    };
    let store = Arc::new(Store::open(rpt.path(), limits).unwrap());
    let out = outbound(z.good.addr(), &z.anchors, port).with_tls_rpt(Some(store.clone()));
    let bad = outbound(z.tampered.addr(), &z.anchors, port).with_tls_rpt(Some(store.clone()));
    send(&out, "ee.dane.test", TlsPolicy::Dane).await;
    send(&out, "wrong.dane.test", TlsPolicy::Dane).await;
    send(&out, "unusable.dane.test", TlsPolicy::DaneOnly).await;
    send(&out, "notlsa.dane.test", TlsPolicy::DaneOnly).await;
    send(&bad, "ee.dane.test", TlsPolicy::Dane).await;
    let counts = store.snapshot();
    let result = |domain: &str| -> Vec<(PolicyType, u64, u64, Vec<&'static str>)> {
        counts[domain]
            .iter()
            .map(|(p, c)| {
                (
                    p.kind,
                    c.success,
                    c.failure,
                    c.details.keys().map(|f| f.result.as_str()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(
        result("ee.dane.test"),
        vec![
            (PolicyType::Tlsa, 0, 1, vec!["dnssec-invalid"]),
            (PolicyType::Tlsa, 1, 0, vec![]),
        ]
    );
    assert_eq!(
        result("wrong.dane.test"),
        vec![(PolicyType::Tlsa, 0, 1, vec!["tlsa-invalid"])]
    );
    assert_eq!(
        result("unusable.dane.test"),
        vec![(PolicyType::Tlsa, 0, 1, vec!["tlsa-invalid"])]
    );
    assert_eq!(
        result("notlsa.dane.test"),
        vec![(PolicyType::Tlsa, 0, 1, vec!["dane-required"])]
    );
    let wrong = counts["wrong.dane.test"].keys().next().unwrap();
    assert_eq!(
        wrong.strings,
        vec![format!(
            "3 1 1 {}",
            hex(&sha2::Sha256::digest(b"not the key"))
        )],
        "the policy-string is the TLSA records"
    );
    assert_eq!(wrong.mx_host, vec!["mx-wrong.dane.test"]);
    let sender = Sender {
        from: "tlsrpt@client.example.test".into(),
        organization: "test".into(),
        contact: "postmaster@client.example.test".into(),
        submitter: "client.example.test".into(),
    };
    for (domain, policies) in &counts {
        let report = build(domain, policies, 0, 86_400, &sender);
        let json = serde_json::to_vec(&report).unwrap();
        common::validate_tlsrpt(&json).unwrap_or_else(|e| {
            panic!("{e}\n{}", String::from_utf8_lossy(&json));
        });
    }
}
