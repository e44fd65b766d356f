//! TLS reporting (RFC 8460) end to end, on loopback with real peers: mtad delivers by
//! MX through dnsmasq (MX, `_mta-sts`, `_smtp._tls` records); python3's HTTPS server
//! serves an enforcing MTA-STS policy under a test CA; aiosmtpd (STARTTLS with a
//! certificate from that CA) is every MX. A policy failure (an MX host the MTA-STS
//! policy does not list) and a success are counted, survive a `kill -9`, and `mtactl
//! tls-report send --now` queues one report per domain, which mtad delivers to the
//! `rua` address as mail: RFC 8460 §5.3's headers, a gzip attachment whose JSON
//! validates against RFC 8460's schema (tests/data/tlsrpt-schema.json, with Debian's
//! python3-jsonschema) and says what happened.

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::Mtad;
use common::peers::{Dnsmasq, Https, Pki};
use mail_parser::MimeHeaders as _;

/// The value of header `name` (unfolded) in `message`.
fn header(message: &mail_parser::Message<'_>, name: &str) -> String {
    message
        .header_raw(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .replace("\r\n", "")
        .trim()
        .to_owned()
}

/// The report a mail carries: its `application/tlsrpt+gzip` attachment, decompressed.
fn report_of(raw: &[u8]) -> (mail_parser::Message<'_>, Vec<u8>) {
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("the report parses as mail");
    let part = message
        .attachments()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "application" && c.subtype() == Some("tlsrpt+gzip"))
        })
        .expect("an application/tlsrpt+gzip attachment");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(part.contents())
        .read_to_end(&mut json)
        .expect("the attachment is gzip");
    (message, json)
}

#[test]
fn tls_policy_failures_are_reported_as_rfc_8460_mail() {
    let pki = Pki::for_names(&["mta-sts.sts.test", "mx.sts.test", "mx.rua.test"]);
    let aio = pki.aio(&[]);
    let www = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(www.path().join(".well-known")).unwrap();
    // enforce, but the MX that DNS gives is not in the policy
    std::fs::write(
        www.path().join(".well-known/mta-sts.txt"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx2.sts.test\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    let https = Https::start(www.path(), pki.dir.path(), false);
    let rua = Dnsmasq::txt(
        "_smtp._tls.sts.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@rua.test",
    );
    let rua_ok = Dnsmasq::txt(
        "_smtp._tls.ok.test",
        "v=TLSRPTv1;rua=mailto:tlsrpt@rua.test",
    );
    let sts = Dnsmasq::txt("_mta-sts.sts.test", "v=STSv1; id=one;");
    // bad.test publishes a policy whose HTTPS server has no certificate for it
    let bad = Dnsmasq::txt("_mta-sts.bad.test", "v=STSv1; id=one;");
    let rua_bad = Dnsmasq::txt(
        "_smtp._tls.bad.test",
        "v=TLSRPTv1;rua=mailto:tlsrpt@rua.test",
    );
    let dns = Dnsmasq::start(&[
        "--host-record=mta-sts.sts.test,127.0.0.1",
        "--host-record=mx.sts.test,127.0.0.1",
        "--host-record=mx.rua.test,127.0.0.1",
        "--mx-host=sts.test,mx.sts.test,10",
        "--mx-host=ok.test,mx.sts.test,10",
        "--mx-host=rua.test,mx.rua.test,10",
        "--mx-host=client.test,mx.rua.test,10",
        "--host-record=mta-sts.bad.test,127.0.0.1",
        "--mx-host=bad.test,mx.sts.test,10",
        &bad,
        &rua_bad,
        &sts,
        &rua,
        &rua_ok,
    ]);
    let template = format!(
        r#"server {{
    hostname "mx.sender.test"
    spool "{{spool}}"
}}
listen "in" address="127.0.0.1:{{port}}"
stage "rcpt" {{
    accept client="127.0.0.0/8"
}}
delivery {{
    dns-server "{dns}"
    smtp-port {smtp}
    tls-ca-file "{ca}"
    mta-sts #true
    mta-sts-port {https}
    backoff-min "1h"
    backoff-max "2h"
    delay-warning "1s"
    tls-rpt #true
    tls-rpt-from "tlsrpt-noreply@sender.test"
    tls-rpt-organization "Sender Test Ltd"
    tls-rpt-contact "postmaster@sender.test"
}}
"#,
        dns = dns.addr,
        smtp = aio.addr.port(),
        ca = pki.ca().display(),
        https = https.port,
    );
    let mut mtad = Mtad::start(&template);
    let mut c = mtad.session();
    c.cmd("EHLO client.test", "250");
    let data = "From: <a@client.test>\r\nSubject: hello\r\n\r\nhello\r\n";
    c.send_message("a@client.test", &["rcpt@sts.test"], data);
    c.send_message("a@client.test", &["rcpt@ok.test"], data);
    c.send_message("a@client.test", &["rcpt@bad.test"], data);
    c.cmd("QUIT", "221");
    let received = std::time::Instant::now();
    // ok.test and bad.test (without a policy) delivered over TLS, sts.test deferred
    // by its policy
    let got = aio.messages(2);
    let rcpts: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert!(
        rcpts.iter().any(|e| e.contains("RCPT <rcpt@ok.test>")),
        "{rcpts:?}"
    );
    assert!(
        rcpts.iter().any(|e| e.contains("RCPT <rcpt@bad.test>")),
        "{rcpts:?}"
    );
    mtad.wait_log(
        "mta-sts: mx mx.sts.test not in policy (id one)",
        1,
        Duration::from_secs(20),
    );
    // the two delivered messages out of the spool (so that the restart below delivers
    // nothing again), the deferred one left
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while mtad.queued().len() != 1 {
        assert!(std::time::Instant::now() < deadline, "{:?}", mtad.queued());
        std::thread::sleep(Duration::from_millis(20));
    }
    // the counts survive a kill -9 (and are not counted twice after it)
    mtad.kill9();
    mtad.restart();
    let out = mtad.mtactl(&["tls-report", "send", "--now"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("ok.test: queued "), "{said}");
    assert!(said.contains("\nsts.test: queued "), "{said}");
    assert!(said.contains("bad.test: queued "), "{said}");
    assert!(said.contains("to tlsrpt@rua.test"), "{said}");

    // three reports, delivered by our own queue to the rua's MX
    let got = aio.messages(5);
    let mut reports = std::collections::BTreeMap::new();
    for (env, raw) in &got[2..] {
        assert!(
            env.contains("MAIL <tlsrpt-noreply@sender.test>"),
            "the report's envelope sender: {env}"
        );
        assert!(env.contains("RCPT <tlsrpt@rua.test>"), "{env}");
        let (message, json) = report_of(raw);
        let domain = header(&message, "TLS-Report-Domain");
        assert_eq!(header(&message, "TLS-Report-Submitter"), "sender.test");
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let id = value["report-id"].as_str().unwrap().to_owned();
        assert_eq!(
            header(&message, "Subject"),
            format!("Report Domain: {domain} Submitter: sender.test Report-ID: <{id}>")
        );
        let ctype = header(&message, "Content-Type");
        assert!(
            ctype.starts_with("multipart/report;") && ctype.contains("report-type=\"tlsrpt\""),
            "{ctype}"
        );
        common::validate_tlsrpt(&json).unwrap_or_else(|e| {
            panic!(
                "the report does not validate: {e}\n{}",
                String::from_utf8_lossy(&json)
            )
        });
        reports.insert(domain, value);
    }
    let sts = &reports["sts.test"];
    assert_eq!(sts["organization-name"], "Sender Test Ltd");
    assert_eq!(sts["contact-info"], "postmaster@sender.test");
    let p = &sts["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], "sts.test");
    assert_eq!(p["policy"]["mx-host"][0], "mx2.sts.test");
    assert!(
        p["policy"]["policy-string"]
            .as_array()
            .unwrap()
            .contains(&"mode: enforce".into()),
        "{p}"
    );
    assert_eq!(p["summary"]["total-failure-session-count"], 1, "{sts}");
    assert_eq!(p["summary"]["total-successful-session-count"], 0, "{sts}");
    let f = &p["failure-details"][0];
    assert_eq!(f["result-type"], "validation-failure");
    assert_eq!(f["receiving-mx-hostname"], "mx.sts.test");
    assert_eq!(f["receiving-ip"], "127.0.0.1");
    assert_eq!(f["sending-mta-ip"], "127.0.0.1");
    assert_eq!(f["failed-session-count"], 1);
    let ok = &reports["ok.test"]["policies"][0];
    assert_eq!(ok["policy"]["policy-type"], "no-policy-found");
    assert_eq!(ok["summary"]["total-successful-session-count"], 1, "{ok}");
    assert_eq!(ok["summary"]["total-failure-session-count"], 0, "{ok}");
    let bad = &reports["bad.test"]["policies"][0];
    assert_eq!(bad["policy"]["policy-type"], "sts", "{bad}");
    assert_eq!(bad["summary"]["total-failure-session-count"], 1, "{bad}");
    assert_eq!(
        bad["failure-details"][0]["result-type"], "sts-webpki-invalid",
        "{bad}"
    );

    // the reports' own deliveries were not counted: the next period has nothing
    // (rua.test would show as "no TLSRPT record")
    let out = mtad.mtactl(&["tls-report", "send", "--now"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(said.trim().is_empty(), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(aio.file_count(), 10, "no more reports");

    // the deferred message tried again once it has waited `delay-warning` (on a fast
    // machine all of the above takes less): its sender's delay notice names the reason
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(received.elapsed()));
    let out = mtad.mtactl(&["queue", "flush"]);
    assert!(out.status.success(), "{out:?}");
    let got = aio.messages(6);
    let (env, notice) = &got[5];
    assert!(env.contains("RCPT <a@client.test>"), "{env}");
    let notice = String::from_utf8_lossy(notice).replace("\r\n ", " ");
    assert!(
        notice.contains(
            "Diagnostic-Code: smtp; TLS failure: mta-sts: mx mx.sts.test not in policy (id one)"
        ),
        "{notice}"
    );
    mtad.stop();
}

/// The validator the test relies on refuses what RFC 8460 does not allow.
#[test]
fn the_schema_refuses_reports_the_rfc_does_not_allow() {
    let good = r#"{"organization-name":"o","date-range":{"start-datetime":"2026-12-05T00:00:00Z","end-datetime":"2026-12-06T00:00:00Z"},"contact-info":"c","report-id":"r","policies":[{"policy":{"policy-type":"sts","policy-domain":"a.test"},"summary":{"total-successful-session-count":1,"total-failure-session-count":1},"failure-details":[{"result-type":"validation-failure","receiving-ip":"127.0.0.1","failed-session-count":1}]}]}"#;
    common::validate_tlsrpt(good.as_bytes()).unwrap();
    for (from, to) in [
        ("validation-failure", "mx-not-in-policy"),
        ("\"sts\"", "\"mta-sts\""),
        ("127.0.0.1", "not an ip"),
        ("2026-12-05T00:00:00Z", "yesterday"),
        ("\"report-id\":\"r\",", ""),
        ("total-failure-session-count", "total-failures"),
    ] {
        let bad = good.replace(from, to);
        assert!(
            common::validate_tlsrpt(bad.as_bytes()).is_err(),
            "accepted: {bad}"
        );
    }
}

/// The `delivery` snippets that set TLS reporting (docs/outbound-tls.md,
/// docs/configuration.md) are valid and say what they mean; a bad value is an error
/// with its place.
#[test]
fn documented_tls_rpt_configuration_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = "server {\n    hostname \"h.example.test\"\n    spool \"/tmp/x\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";
    let mut checked = 0;
    for doc in ["docs/outbound-tls.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for block in text
            .split("```kdl\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .filter(|b| b.contains("tls-rpt"))
        {
            // configuration.md's block names files that are not here: its tls-rpt lines
            let block = if block.contains("tls-ca-file") {
                let lines: Vec<&str> = block.lines().filter(|l| l.contains("tls-rpt")).collect();
                format!("delivery {{\n{}\n}}\n", lines.join("\n"))
            } else {
                block.to_owned()
            };
            let config = format!("{head}{block}");
            let config = mtad::config::Config::parse("mtad.kdl", &config)
                .unwrap_or_else(|e| panic!("{doc}:\n{block}\n{}", mtad::config::render(&e)));
            let d = &config.delivery;
            assert_eq!(d.tls_rpt_interval, Duration::from_secs(86_400));
            assert!(
                d.tls_rpt_from
                    .as_deref()
                    .unwrap()
                    .starts_with("tlsrpt-noreply@")
            );
            assert_eq!(d.tls_rpt_organization.as_deref(), Some("Example Ltd"));
            assert_eq!(
                (d.tls_rpt_max_domains, d.tls_rpt_max_failures),
                (10_000, 100)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
    for (bad, says) in [
        ("tls-rpt \"yes\"", "must be #true or #false"),
        ("tls-rpt-from \"nobody\"", "is not an address"),
        ("tls-rpt-interval \"10s\"", "1m or more"),
        ("tls-rpt-max-domains 0", "tls-rpt-max-domains"),
        ("tls-rpt-contact \"\"", "non-empty"),
    ] {
        let config = format!("{head}delivery {{\n    {bad}\n}}\n");
        let e = mtad::config::Config::parse("mtad.kdl", &config).unwrap_err();
        let text = mtad::config::render(&e);
        assert!(
            text.contains(says) && text.contains("mtad.kdl:7:"),
            "{bad}: {text}"
        );
    }
}
