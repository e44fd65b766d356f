//! MTA-STS (RFC 8461) end to end on loopback: dnsmasq answers the `_mta-sts` TXT
//! record and the MX, python3's http.server with ssl serves the policy under a test CA
//! (tests/peers/https_peer.py), aiosmtpd is the MX with a certificate from that CA.
//! Enforce with a matching MX delivers over verified TLS; an MX not in the policy is
//! deferred; testing delivers; a changed id is fetched again; the cache on disk
//! survives a restart (a new cache over the same directory with the server gone);
//! a redirect is refused. A missing peer fails the test.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::peers::{Dnsmasq, Https, Pki};
use mtad::config::Delivery;
use mtad::config::route::RouteOptions;
use mtad::delivery::hops::{Outbound, Outcome};
use mtad::delivery::mta_sts::MtaSts;
use mtad::delivery::{TlsClient, TlsMode};
use mtad::net::dns::Resolver;

fn dns(id: &str) -> Dnsmasq {
    let txt = Dnsmasq::txt("_mta-sts.sts.test", &format!("v=STSv1; id={id};"));
    Dnsmasq::start(&[
        "--host-record=mta-sts.sts.test,127.0.0.1",
        "--host-record=mx.sts.test,127.0.0.1",
        "--mx-host=sts.test,mx.sts.test,10",
        &txt,
    ])
}

fn policy(root: &Path, mode: &str, mx: &str) {
    std::fs::create_dir_all(root.join(".well-known")).unwrap();
    std::fs::write(
        root.join(".well-known/mta-sts.txt"),
        format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"),
    )
    .unwrap();
}

fn outbound(dns: &Dnsmasq, ca: &Path, cache: &Path, https: u16, smtp: u16) -> Outbound {
    let mut settings = Delivery::defaults_for(Path::new("/nonexistent"));
    settings.connect_timeout = Duration::from_secs(5);
    settings.command_timeout = Duration::from_secs(10);
    settings.smtp_port = smtp;
    let resolver = Resolver::with_nameserver(dns.addr);
    let tls = Arc::new(TlsClient::new(Some(ca)).unwrap());
    let sts = MtaSts::new(
        cache.to_owned(),
        resolver.clone(),
        tls.config_for(TlsMode::Verify).unwrap(),
        https,
    );
    Outbound::new(
        resolver,
        settings,
        "client.example.test".into(),
        Some(tls),
        BTreeMap::new(),
    )
    .with_mta_sts(Some(Arc::new(sts)))
}

async fn send(out: &Outbound) -> Outcome {
    common::outbound::send(
        out,
        "smtp:sts.test",
        &RouteOptions::default(),
        "rcpt@sts.test",
    )
    .await
}

#[tokio::test]
async fn mta_sts_policies_are_fetched_cached_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("www"), dir.path().join("spool/mta-sts"));
    let pki = Pki::for_names(&["mta-sts.sts.test", "mx.sts.test"]);
    let certs_dir = pki.dir.path().to_owned();
    let ca = pki.ca();
    let aio = pki.aio(&[]);
    let smtp = aio.addr.port();
    let https = Https::start(&root, &certs_dir, false);

    // enforce, the MX in the policy: delivered over verified TLS
    policy(&root, "enforce", "mx.sts.test");
    let d = dns("one");
    let o = send(&outbound(&d, &ca, &cache, https.port, smtp)).await;
    assert_eq!(o.status(), "sent", "{o:?}");
    assert!(
        matches!(
            o,
            Outcome::Sent {
                tls: Some("mta-sts"),
                ..
            }
        ),
        "{o:?}"
    );
    assert!(
        cache.join("sts.test.json").exists(),
        "no policy cached on disk"
    );

    // a new id: fetched again; the MX is no longer in the policy: deferred
    policy(&root, "enforce", "mx2.sts.test");
    drop(d);
    let d = dns("two");
    let o = send(&outbound(&d, &ca, &cache, https.port, smtp)).await;
    assert_eq!(o.status(), "deferred", "{o:?}");
    assert!(
        o.detail()
            .contains("mta-sts: mx mx.sts.test not in policy (id two)"),
        "{}",
        o.detail()
    );

    // a restart (a new cache over the same directory) with the HTTPS server gone: the
    // cached policy still applies
    drop(https);
    let o = send(&outbound(&d, &ca, &cache, 9, smtp)).await;
    assert!(
        o.detail()
            .contains("mta-sts: mx mx.sts.test not in policy (id two)"),
        "{}",
        o.detail()
    );

    // testing: delivered all the same
    let https = Https::start(&root, &certs_dir, false);
    policy(&root, "testing", "mx2.sts.test");
    drop(d);
    let d = dns("three");
    let o = send(&outbound(&d, &ca, &cache, https.port, smtp)).await;
    assert_eq!(o.status(), "sent", "{o:?}");
    assert!(
        matches!(
            o,
            Outcome::Sent {
                tls: Some("mta-sts-testing"),
                ..
            }
        ),
        "{o:?}"
    );
    drop(https);

    // a redirect is not followed: the fetch fails, the cached (testing) policy stays
    let https = Https::start(&root, &certs_dir, true);
    policy(&root, "enforce", "mx2.sts.test");
    drop(d);
    let d = dns("four");
    let o = send(&outbound(&d, &ca, &cache, https.port, smtp)).await;
    assert_eq!(o.status(), "sent", "the redirect was followed: {o:?}");
    let cached = std::fs::read_to_string(cache.join("sts.test.json")).unwrap();
    assert!(
        cached.contains("\"three\"") && cached.contains("testing"),
        "{cached}"
    );
    assert_eq!(aio.messages(3).len(), 3);
    for (env, _) in aio.messages(3) {
        assert!(env.starts_with("TLS yes\n"), "{env}");
    }
}
