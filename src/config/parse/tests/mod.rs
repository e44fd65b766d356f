//! The configuration as a whole, read through [`Config::parse`] and [`Config::load`]: the
//! example, defaults, how errors are reported. The tests of one part of the grammar are
//! in the file of the same name here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::*;

const EXAMPLE: &str = r#"server {
    hostname "mx.example.test"
    spool "/tmp/mtad-demo/spool"
}
listen "mx" address="127.0.0.1:2525"
networks "trusted" "127.0.0.0/8"
domains "relay" "example.test" ".example.test"
stage "rcpt" {
    accept client="trusted"
    accept rcpt-domain="relay"
    reject 554 "5.7.1" "Relay access denied"
}
"#;

/// The minimal valid prelude, for tests about one other node.
const PRELUDE: &str = "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\n";

fn parse(text: &str) -> Config {
    match Config::parse("mtad.kdl", text) {
        Ok(config) => config,
        Err(errors) => panic!("{}", render(&errors)),
    }
}

fn check(text: &str) -> (ConfigErrors, String) {
    match Config::parse("mtad.kdl", text) {
        Ok(config) => panic!("expected errors, parsed {config:#?}"),
        Err(errors) => {
            let rendered = render(&errors);
            (errors, rendered)
        }
    }
}

fn origin(line: u32, column: u32) -> Origin {
    Origin {
        file: Arc::from("mtad.kdl"),
        line,
        column,
    }
}

fn cond(test: Condition) -> ConditionConfig {
    ConditionConfig {
        negate: false,
        test,
    }
}

mod delivery;
mod dkim;
mod filter;
mod greylisting;
mod include;
mod listen;
mod log;
mod milter;
mod rate;
mod server;
mod stages;
mod tables;

#[test]
fn example_parses_to_expected_values() {
    let config = parse(EXAMPLE);
    assert_eq!(config.path, PathBuf::from("mtad.kdl"));
    assert_eq!(
        config.server,
        Server {
            hostname: "mx.example.test".into(),
            spool: PathBuf::from("/tmp/mtad-demo/spool"),
            control_socket: PathBuf::from("/tmp/mtad-demo/spool/control.sock"),
            banner: "ESMTP".into(),
            shutdown_timeout: Duration::from_secs(30),
            origin: "mx.example.test".into(),
            content_filter: None,
            tls: None,
            metrics: None,
            user: None,
        }
    );
    assert_eq!(
        config.listeners,
        vec![Listener::plain(
            "mx",
            "127.0.0.1:2525".parse::<SocketAddr>().unwrap()
        )]
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(
        config.networks["trusted"],
        NetworkSet::new(vec!["127.0.0.0/8".parse().unwrap()])
    );
    assert!(config.domains["relay"].contains("example.test").unwrap());
    assert!(config.domains["relay"].contains("a.example.test").unwrap());
    assert_eq!(
        config.rules(Stage::Rcpt).to_vec(),
        vec![
            RuleConfig {
                action: RuleAction::Accept,
                conditions: vec![cond(Condition::Client(ClientRef::Set("trusted".into())))],
                warn: false,
                open_relay: false,
                origin: origin(9, 5),
                route: Default::default(),
            },
            RuleConfig {
                action: RuleAction::Accept,
                conditions: vec![cond(Condition::RcptDomain("relay".into()))],
                warn: false,
                open_relay: false,
                origin: origin(10, 5),
                route: Default::default(),
            },
            RuleConfig {
                action: RuleAction::Reject(Reply::new(554, [5, 7, 1], "Relay access denied")),
                conditions: vec![],
                warn: false,
                open_relay: false,
                origin: origin(11, 5),
                route: Default::default(),
            },
        ]
    );
    assert_eq!(origin(9, 5).to_string(), "mtad.kdl:9:5");
}

#[test]
fn defaults() {
    let limits = Limits::default();
    assert_eq!(limits.message_size, 10 * 1024 * 1024);
    assert_eq!(limits.recipients, 1000);
    assert_eq!(limits.line_length, 2048);
    assert_eq!(limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(limits.data_timeout, Duration::from_secs(600));
    assert_eq!(limits.error_limit, 20);
    assert_eq!(limits.connections, 1000);
    assert_eq!(limits.connections_per_ip, 50);
    assert_eq!(limits.min_free_space, 0);

    let config = parse(PRELUDE);
    assert_eq!(config.server.banner, "ESMTP");
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    assert!(config.rules(Stage::Rcpt).to_vec().is_empty());
    assert!(config.networks.is_empty() && config.domains.is_empty());
}

#[test]
fn load_reports_unreadable_file() {
    let err = Config::load(std::path::Path::new("/nonexistent/mtad.kdl")).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.to_string(), "1 error in /nonexistent/mtad.kdl");
    assert!(render(&err).contains("cannot read /nonexistent/mtad.kdl"));
}

#[test]
fn every_error_is_reported_with_its_location() {
    let text = r#"server {
    hostname "mx.example.test"
    spool "spool"
}
listn "mx" address="127.0.0.1:2525"
listen "mx" address="127.0.0.1:2525" tls="on"
listen "mx" address="127.0.0.1:2526"
networks "trusted" "127.0.0.0/33"
stage "rcpt" {
    accept client="trustd"
    accept rcpt-domain="relay"
    reject 650 "5.7.1" "Relay access denied"
    reject 554 "4.7.1" "Relay access denied"
}
"#;
    let (errors, rendered) = check(text);
    let found: Vec<(String, String)> = errors
        .errors
        .iter()
        .map(|e| (e.location.as_ref().unwrap().to_string(), e.message.clone()))
        .collect();
    let expected = [
        ("mtad.kdl:5:1", "unknown node `listn`"),
        ("mtad.kdl:6:38", "unknown property `tls` on `listen`"),
        ("mtad.kdl:7:8", "duplicate listener `mx`"),
        (
            "mtad.kdl:8:20",
            "`127.0.0.0/33` is not a CIDR network or IP address",
        ),
        (
            "mtad.kdl:10:12",
            "`trustd` is neither a defined network set nor a CIDR or IP address",
        ),
        ("mtad.kdl:11:12", "undefined domain set `relay`"),
        (
            "mtad.kdl:12:12",
            "reply code must be between 400 and 599, found 650",
        ),
        (
            "mtad.kdl:13:16",
            "enhanced status code 4.7.1 does not match reply code 554: its class must be 5",
        ),
    ];
    assert_eq!(
        found,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>(),
        "{rendered}"
    );
    assert_eq!(errors.to_string(), "8 errors in mtad.kdl");
    assert!(rendered.starts_with("8 errors in mtad.kdl\n"), "{rendered}");
    for (location, _) in expected {
        assert!(
            rendered.contains(&format!("[{location}]")),
            "{location} in {rendered}"
        );
    }
    assert!(rendered.contains("did you mean `listen`?"), "{rendered}");
    assert!(rendered.contains("did you mean `trusted`?"), "{rendered}");
    assert!(
        rendered.contains("first defined at mtad.kdl:6:1"),
        "{rendered}"
    );
    // The caret line is drawn under the offending text.
    assert!(rendered.contains("unknown node"), "{rendered}");
    assert!(rendered.contains("listn \"mx\""), "{rendered}");
}

#[test]
fn did_you_mean_for_properties_and_settings() {
    let text = PRELUDE
        .replace("address=", "adress=")
        .replace("hostname", "hostnme");
    let (errors, rendered) = check(&text);
    assert!(rendered.contains("did you mean `hostname`?"), "{rendered}");
    assert!(rendered.contains("did you mean `address`?"), "{rendered}");
    assert!(rendered.contains("[mtad.kdl:2:5]"), "{rendered}");
    assert!(rendered.contains("[mtad.kdl:5:13]"), "{rendered}");
    // And the consequences: no hostname, no address.
    assert!(
        errors
            .errors
            .iter()
            .any(|e| e.message == "`server` needs `hostname`")
    );
    assert!(
        errors
            .errors
            .iter()
            .any(|e| e.message.contains("needs `address"))
    );
}

#[test]
fn kdl_syntax_error_has_a_location() {
    let (errors, rendered) = check("server {\n    hostname \"mx.example.test\n}\n");
    assert!(!errors.errors.is_empty());
    assert!(
        errors.errors[0].message.starts_with("syntax error"),
        "{rendered}"
    );
    assert!(rendered.contains("[mtad.kdl:2:"), "{rendered}");
    let (_, rendered) = check(&format!("{PRELUDE}limits {{ message-size 1. }}\n"));
    assert!(rendered.contains("[mtad.kdl:6:"), "{rendered}");
}

#[test]
fn missing_required_settings() {
    let (errors, _) = check("// nothing\n");
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing `server` block",
            "at least one `listen` is required"
        ]
    );
    let (errors, rendered) = check("server {\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\n");
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["`server` needs `hostname`", "`server` needs `spool`"],
        "{rendered}"
    );
    assert!(rendered.contains("[mtad.kdl:1:1]"));
}

#[test]
fn bad_values() {
    let (errors, rendered) = check(
        r#"server {
    hostname "not a hostname"
    spool "spool"
    spool "again"
    banner "two\nlines"
    shutdown-timeout 30
}
listen "mx" address="127.0.0.1"
listen "b" address="127.0.0.1:25"
listen "c" address="127.0.0.1:25"
limits {
    message-size "10X"
    recipients 0
    line-length 80
    idle-timeout "soon"
    data-timeout "0s"
    error-limit #true
    connections -1
    min-free-space "1G" "2G"
    bogus 1
}
"#,
    );
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`not a hostname` is not a valid hostname",
            "duplicate `spool` in `server`",
            "banner must be printable ASCII of at most 400 bytes",
            "shutdown-timeout must be a string, found an integer",
            "`127.0.0.1` is not an IP:PORT address",
            "address 127.0.0.1:25 is already used by listener `b`",
            "invalid message-size: unknown size suffix `X` (use K, M or G)",
            "recipients must be at least 1, found 0",
            "line-length must be at least 1000, found 80",
            "invalid idle-timeout: `soon` is not a duration: expected number at 0",
            "data-timeout must be greater than zero",
            "error-limit must be an integer, found a boolean",
            "connections must be at least 1, found -1",
            "`min-free-space` takes at most 1 argument",
            "unknown node `bogus` in `limits`",
        ],
        "{rendered}"
    );
}

#[test]
fn type_annotations_and_unexpected_shapes_are_refused() {
    let (errors, rendered) = check(&format!(
        "{PRELUDE}(x)networks \"n\" \"10.0.0.0/8\"\nlisten \"y\" address=(ip)\"127.0.0.1:26\"\nlimits\nnetworks \"m\" \"10.0.0.0/8\" {{ x }}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "type annotations are not supported",
            "type annotations are not supported",
            "`limits` needs a block `{ ... }`",
            "`networks` takes no child block",
        ],
        "{rendered}"
    );
}
