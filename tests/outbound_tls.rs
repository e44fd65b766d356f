//! The per-destination TLS policy in delivery, against aiosmtpd on loopback with
//! certificates from a test CA (tests/common/peers.rs `Pki`): `tls-policy-map` entries
//! with `secure match=`, and downgrades under an enforcing policy (the next hop stops
//! offering STARTTLS, or shows a certificate our roots do not know): nothing is
//! delivered, no credentials are sent, and the deferral names the policy.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::peers::{Aio, Pki};
use mtad::config::Delivery;
use mtad::config::route::RouteOptions;
use mtad::config::tls_policy::TlsPolicyMap;
use mtad::delivery::TlsClient;
use mtad::delivery::hops::{Outbound, Outcome};
use mtad::net::dns::Resolver;

/// An outbound with `map` as its tls-policy-map, trusting `ca` (or only the system's
/// roots), with the credentials `user:secret` for every next hop of aiosmtpd `aio`.
fn outbound(map: &str, ca: Option<&std::path::Path>, aio: &Aio) -> Outbound {
    let mut settings = Delivery::defaults_for(std::path::Path::new("/nonexistent"));
    settings.connect_timeout = Duration::from_secs(5);
    settings.command_timeout = Duration::from_secs(10);
    let map = TlsPolicyMap::parse(map).expect("a valid map");
    settings.tls_policy_map = Some(("tls_policy".into(), Arc::new(map)));
    let creds =
        mtad::lookup::parse_map(&format!("[127.0.0.1]:{} user:secret\n", aio.addr.port())).unwrap();
    let mut credentials = BTreeMap::new();
    credentials.insert("upstream".to_string(), Arc::new(creds));
    Outbound::new(
        Resolver::with_nameserver("127.0.0.1:9".parse().unwrap()),
        settings,
        "client.example.test".into(),
        Some(Arc::new(TlsClient::new(ca).unwrap())),
        credentials,
    )
}

async fn send(out: &Outbound, aio: &Aio) -> Outcome {
    let options = RouteOptions {
        auth: Some("upstream".into()),
        ..RouteOptions::default()
    };
    let transport = format!("smtp:[127.0.0.1]:{}", aio.addr.port());
    common::outbound::send(out, &transport, &options, "rcpt@example.test").await
}

#[tokio::test]
async fn secure_with_match_names_delivers_to_a_certificate_that_carries_one() {
    let pki = Pki::new();
    let aio = pki.aio(&["--auth", "user:secret"]);
    let key = format!("[127.0.0.1]:{}", aio.addr.port());
    let out = outbound(
        &format!("{key} secure match=.example.test:relay.test\n"),
        Some(&pki.ca()),
        &aio,
    );
    let o = send(&out, &aio).await;
    assert_eq!(o.status(), "sent", "{o:?}");
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.starts_with("TLS yes\nAUTH user\n"), "{env}");

    // the certificate names neither
    let out = outbound(
        &format!("{key} secure match=mx.example.test:.example.org\n"),
        Some(&pki.ca()),
        &aio,
    );
    let o = send(&out, &aio).await;
    assert_eq!(o.status(), "deferred", "{o:?}");
    assert_eq!(o.dsn(), [4, 7, 4]);
    assert!(
        o.detail()
            .contains("certificate not valid for any of: mx.example.test, .example.org")
            && o.detail().contains(&format!(
                "(TLS policy secure from tls-policy-map {key} (line 1))"
            )),
        "{}",
        o.detail()
    );
    assert_eq!(aio.file_count(), 2, "a message went through a failed check");
}

#[tokio::test]
async fn a_next_hop_that_stops_offering_starttls_gets_nothing_under_an_enforcing_policy() {
    // AUTH is offered in plaintext: a downgraded server would take the password
    let aio = Aio::start(&["--auth", "user:secret", "--auth-plaintext"]);
    let key = format!("[127.0.0.1]:{}", aio.addr.port());
    for level in ["required", "verify", "secure"] {
        let out = outbound(&format!("{key} {level}\n"), None, &aio);
        let o = send(&out, &aio).await;
        assert_eq!(o.status(), "deferred", "{level}: {o:?}");
        assert!(
            o.detail().contains("does not offer STARTTLS")
                && o.detail()
                    .contains(&format!("(TLS policy {level} from tls-policy-map")),
            "{level}: {}",
            o.detail()
        );
    }
    assert_eq!(aio.file_count(), 0, "a message went out in plaintext");

    // opportunistic goes on in plaintext, and the credentials stay home
    let out = outbound(&format!("{key} may\n"), None, &aio);
    let o = send(&out, &aio).await;
    assert_eq!(o.status(), "deferred", "{o:?}");
    assert!(
        o.detail().contains("refusing to send credentials"),
        "{}",
        o.detail()
    );
    assert_eq!(aio.file_count(), 0);
}

#[tokio::test]
async fn a_certificate_our_roots_do_not_know_gets_nothing_under_verify() {
    let pki = Pki::new();
    let aio = pki.aio(&["--auth", "user:secret"]);
    let key = format!("[127.0.0.1]:{}", aio.addr.port());
    // the test CA is not trusted: only the system's roots
    for rule in ["verify match=relay.test", "secure match=relay.test"] {
        let out = outbound(&format!("{key} {rule}\n"), None, &aio);
        let o = send(&out, &aio).await;
        assert_eq!(o.status(), "deferred", "{rule}: {o:?}");
        assert!(
            o.detail().contains("UnknownIssuer"),
            "{rule}: {}",
            o.detail()
        );
    }
    assert_eq!(aio.file_count(), 0);
    // `required` (Postfix's encrypt) takes any certificate, and sends the credentials
    let out = outbound(&format!("{key} encrypt\n"), None, &aio);
    assert_eq!(send(&out, &aio).await.status(), "sent");
    let (env, _) = aio.messages(1).remove(0);
    assert!(env.starts_with("TLS yes\nAUTH user\n"), "{env}");
}

/// `mtactl test-policy` shows each SMTP route's configured TLS level and where it came
/// from; `mtactl tls-probe [host]:port --connect` decides as delivery does and says
/// how STARTTLS went under that policy.
#[test]
fn test_policy_and_tls_probe_show_the_policy_delivery_uses() {
    let pki = Pki::new();
    let aio = pki.aio(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = aio.addr.port();
    std::fs::write(
        dir.path().join("tls_policy"),
        format!(
            "example.test secure\n[127.0.0.1]:{port} secure match=relay.test\n[localhost]:{port} secure match=other.test\n"
        ),
    )
    .unwrap();
    std::fs::copy(pki.ca(), dir.path().join("ca.pem")).unwrap();
    let config = dir.path().join("mtad.kdl");
    std::fs::write(
        &config,
        format!(
            r#"server {{
    hostname "mx.src.test"
    spool "{spool}"
}}
listen "mx" address="127.0.0.1:0"
domains "relayed" "relayed.test"
delivery {{
    tls-policy-map "tls_policy"
    tls-ca-file "ca.pem"
    dns-server "127.0.0.1:9"
}}
stage "rcpt" {{
    accept open-relay="intended"
}}
stage "route" {{
    relay "smtp:[relay.test]:587" rcpt-domain="relayed" tls="required"
}}
"#,
            spool = dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mtactl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mtactl"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, report) = mtactl(&[
        "test-policy",
        "--from",
        "a@src.test",
        "--rcpt",
        "b@example.test",
        "--rcpt",
        "c@relayed.test",
        "--rcpt",
        "d@elsewhere.test",
    ]);
    assert_eq!(code, Some(0), "{report}");
    for line in [
        "tls      secure from tls-policy-map example.test (line 1)",
        "tls      required from route tls=",
        "tls      opportunistic from delivery tls",
    ] {
        assert!(report.contains(line), "{line:?} in {report}");
    }

    let ok = format!("[127.0.0.1]:{port}");
    let (code, probe) = mtactl(&["tls-probe", &ok, "--connect"]);
    assert_eq!(code, Some(0), "{probe}");
    assert!(
        probe.contains(&format!("destination smtp:[127.0.0.1]:{port}: secure match=relay.test from tls-policy-map [127.0.0.1]:{port} (line 2)")),
        "{probe}"
    );
    assert!(
        probe.contains("tls verify policy secure from tls-policy-map")
            && probe.contains("names relay.test => ok: TLSv1_3"),
        "{probe}"
    );
    let bad = format!("[localhost]:{port}");
    let (_, probe) = mtactl(&["tls-probe", &bad, "--connect"]);
    assert!(
        probe.contains("=> failed: TLS failure: the TLS handshake failed: certificate not valid for any of: other.test"),
        "{probe}"
    );
    // a route's level, as --tls gives it, wins over the table
    let (_, probe) = mtactl(&["tls-probe", &bad, "--tls", "encrypt", "--connect"]);
    assert!(
        probe.contains("tls required policy required from route tls= => ok: TLSv1_3"),
        "{probe}"
    );
    assert_eq!(aio.file_count(), 0, "a probe sent a message");
}
