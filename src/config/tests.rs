use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

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
        }
    );
    assert_eq!(
        config.listeners,
        vec![Listener {
            name: "mx".into(),
            address: "127.0.0.1:2525".parse::<SocketAddr>().unwrap(),
            content_filter: None,
            filtered: false,
            proxy: None,
            tls: ListenerTls::Off,
            certificate: None,
            auth: AuthMode::Off,
            users: None,
            auth_plaintext: false,
        }]
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
                origin: origin(9, 5),
                route: Default::default(),
            },
            RuleConfig {
                action: RuleAction::Accept,
                conditions: vec![cond(Condition::RcptDomain("relay".into()))],
                warn: false,
                origin: origin(10, 5),
                route: Default::default(),
            },
            RuleConfig {
                action: RuleAction::Reject(Reply::new(554, [5, 7, 1], "Relay access denied")),
                conditions: vec![],
                warn: false,
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
fn server_and_limits_settings() {
    let config = parse(
        r#"
server {
    hostname "mx.example.test"
    spool "var/spool"
    banner "mtad ready"
    shutdown-timeout "1m 30s"
}
listen "mx" address="0.0.0.0:25"
listen "v6" address="[::1]:587"
limits {
    message-size "25M"
    recipients 50
    line-length 4096
    idle-timeout "300s"
    data-timeout "2m"
    error-limit 5
    connections 10
    connections-per-ip 2
    min-free-space 1048576
}
"#,
    );
    assert_eq!(config.server.banner, "mtad ready");
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(90));
    // Relative to the directory of "mtad.kdl", which is "".
    assert_eq!(config.server.spool, PathBuf::from("var/spool"));
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[1].address, "[::1]:587".parse().unwrap());
    assert_eq!(
        config.limits,
        Limits {
            message_size: 25 << 20,
            recipients: 50,
            line_length: 4096,
            text_line_length: 1000,
            header_size: 100 << 10,
            junk_commands: 100,
            // 256 MiB or 4 × message-size, whichever is larger
            data_memory: 256 << 20,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(120),
            error_limit: 5,
            connections: 10,
            connections_per_ip: 2,
            min_free_space: 1 << 20,
            hop_count: 50,
            tls_handshake_timeout: Duration::from_secs(30),
        }
    );
    let config = parse(&PRELUDE.replace(
        "\n}",
        "\n}\nlimits { message-size 1000; min-free-space \"1G\" }",
    ));
    assert_eq!(config.limits.message_size, 1000);
    assert_eq!(config.limits.min_free_space, 1 << 30);
    let config = parse(&PRELUDE.replace(
        "\n}",
        "\n}\nlimits { message-size \"100M\"; header-size \"64K\"; text-line-length 2000; junk-commands 5 }",
    ));
    let l = &config.limits;
    assert_eq!(
        (
            l.data_memory,
            l.header_size,
            l.text_line_length,
            l.junk_commands
        ),
        (400 << 20, 64 << 10, 2000, 5)
    );
    let config = parse(&PRELUDE.replace(
        "\n}",
        "\n}\nlimits { message-size \"1M\"; data-memory \"3M\" }",
    ));
    assert_eq!(config.limits.data_memory, 3 << 20);
}

#[test]
fn data_memory_holds_one_message_at_least() {
    let (_, text) = check(&PRELUDE.replace(
        "\n}",
        "\n}\nlimits { message-size \"10M\"; data-memory \"1M\"; text-line-length 999 }",
    ));
    assert!(
        text.contains("data-memory must be at least message-size"),
        "{text}"
    );
    assert!(
        text.contains("text-line-length must be at least 1000"),
        "{text}"
    );
}

#[test]
fn relative_spool_resolves_against_the_config_directory() {
    let config = Config::parse("/etc/mtad/mtad.kdl", PRELUDE).unwrap();
    assert_eq!(config.server.spool, PathBuf::from("/etc/mtad/spool"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mtad.kdl");
    std::fs::write(&path, PRELUDE).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.spool, dir.path().join("spool"));
    assert_eq!(config.path, path);
}

#[test]
fn control_socket_defaults_to_the_spool_and_resolves_like_it() {
    let config = Config::parse("/etc/mtad/mtad.kdl", PRELUDE).unwrap();
    assert_eq!(
        config.server.control_socket,
        PathBuf::from("/etc/mtad/spool/control.sock")
    );
    let with = |value: &str| {
        PRELUDE.replace(
            "    spool \"spool\"\n",
            &format!("    spool \"spool\"\n    control-socket {value}\n"),
        )
    };
    let config = Config::parse("/etc/mtad/mtad.kdl", &with("\"run/mtad.sock\"")).unwrap();
    assert_eq!(
        config.server.control_socket,
        PathBuf::from("/etc/mtad/run/mtad.sock")
    );
    let config = Config::parse("/etc/mtad/mtad.kdl", &with("\"/run/mtad/ctl\"")).unwrap();
    assert_eq!(config.server.control_socket, PathBuf::from("/run/mtad/ctl"));

    let (_, rendered) = check(&with("\"\""));
    assert!(
        rendered.contains("control-socket must not be empty"),
        "{rendered}"
    );
    let (_, rendered) = check(&with("42"));
    assert!(rendered.contains("control-socket"), "{rendered}");
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
fn stages() {
    let (errors, rendered) = check(&format!(
        "{PRELUDE}stage \"mail\" {{\n}}\nstage \"rpct\" {{\n}}\nstage \"rcpt\" {{\n}}\nstage \"rcpt\" {{\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["unknown stage `rpct`"], "{rendered}");
    assert!(rendered.contains("did you mean `rcpt`?"));

    // Unknown rule, children on a rule, wrong argument counts.
    let (errors, rendered) = check(&format!(
        "{PRELUDE}stage \"rcpt\" {{\n    acept\n    accept 1\n    reject 554 \"5.7.1\"\n    reject \"554\" \"5.7.1\" \"x\"\n    reject 554 \"5.7.1\" \"bad\\ttext\"\n    reject 554 \"5.7.1.2\" \"x\"\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "unknown node `acept` in `stage`",
            "`accept` takes no arguments",
            "`reject` takes 3 arguments, found 2",
            "reply code must be an integer, found a string",
            "reply text must be printable ASCII of at most 400 bytes (no CR, LF or other control characters)",
            "`5.7.1.2` is not an enhanced status code",
        ],
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `accept`?"));
}

#[test]
fn rule_conditions() {
    let config = parse(&format!(
        "{PRELUDE}domains \"relay\" \"example.test\"\nstage \"rcpt\" {{\n    accept client=\"192.0.2.0/24\" rcpt-domain=\"relay\"\n    accept client=\"2001:db8::1\"\n    reject 450 \"4.7.1\" \"try later\" client=\"10.0.0.0/8\"\n}}\nnetworks \"late\" \"10.0.0.1\"\n"
    ));
    let rules = &config.rules(Stage::Rcpt).to_vec();
    assert_eq!(
        rules[0].conditions,
        vec![
            cond(Condition::Client(ClientRef::Net(
                "192.0.2.0/24".parse().unwrap()
            ))),
            cond(Condition::RcptDomain("relay".into())),
        ]
    );
    assert_eq!(
        rules[1].conditions,
        vec![cond(Condition::Client(ClientRef::Net(
            "2001:db8::1/128".parse().unwrap()
        )))]
    );
    assert_eq!(
        rules[2].action,
        RuleAction::Reject(Reply::new(450, [4, 7, 1], "try later"))
    );
    assert!(config.networks.contains_key("late"));

    let (errors, rendered) = check(&format!(
        "{PRELUDE}networks \"n\" \"10.0.0.1/8\"\nnetworks \"n\" \"10.0.0.0/8\"\nnetworks \"10.0.0.0/8\" \"10.0.0.0/8\"\ndomains \"d\" \"exa mple.test\" \"ok.test\"\nstage \"rcpt\" {{\n    accept client=\"x\" client=\"y\"\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "network `10.0.0.1/8` has host bits set",
            "duplicate network set `n`",
            "network set name `10.0.0.0/8` looks like an address",
            "`exa mple.test` is not a domain name",
            "`x` is neither a defined network set nor a CIDR or IP address",
            "duplicate property `client`",
        ],
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `10.0.0.0/8`?"));
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

#[test]
fn include_splits_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\ninclude \"policy/relay.kdl\"\n",
    )
    .unwrap();
    // the included file names a set defined in the main file's other include
    std::fs::write(
        dir.path().join("policy/relay.kdl"),
        "include \"sets.kdl\"\nstage \"rcpt\" {\n    accept rcpt-domain=\"relay\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "domains \"relay\" \"example.test\"\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    let rules = config.rules(Stage::Rcpt);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].origin.to_string(), "policy/relay.kdl:3:5");

    // an error inside an included file points into that file
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "domains \"relay\" \"example.test\"\nnetwork \"x\" \"10.0.0.0/8\"\n",
    )
    .unwrap();
    let errors = Config::load(&main).unwrap_err();
    let rendered = render(&errors);
    assert!(rendered.contains("[sets.kdl:2:1]"), "{rendered}");
    assert!(rendered.contains("did you mean `networks`?"), "{rendered}");

    // cycles and missing files are errors at the include
    std::fs::write(
        dir.path().join("policy/sets.kdl"),
        "include \"relay.kdl\"\n",
    )
    .unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("include cycle"), "{rendered}");
    std::fs::remove_file(dir.path().join("policy/sets.kdl")).unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("cannot read `sets.kdl`"), "{rendered}");
    assert!(rendered.contains("[policy/relay.kdl:1:9]"), "{rendered}");
}

#[test]
fn stage_blocks_concatenate_in_place_across_includes() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\nnetworks \"trusted\"\ndomains \"relay\"\nstage \"rcpt\" {\n    reject 550 \"5.7.1\" \"first\"\n}\ninclude \"default.kdl\"\nstage \"rcpt\" {\n    reject 550 \"5.7.1\" \"last\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("default.kdl"),
        "stage \"rcpt\" {\n    accept client=\"trusted\"\n}\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    let origins: Vec<String> = config
        .rules(Stage::Rcpt)
        .iter()
        .map(|r| r.origin.to_string())
        .collect();
    assert!(origins[0].ends_with("/mtad.kdl:9:5"), "{origins:?}");
    assert_eq!(origins[1], "default.kdl:2:5");
    assert!(origins[2].ends_with("/mtad.kdl:13:5"), "{origins:?}");
    // empty sets are allowed: "no trusted networks"
    assert!(config.networks["trusted"].is_empty());
}

#[test]
fn route_stage_rules() {
    let config = parse(&format!(
        "{PRELUDE}table \"transport\" {{\n    \"example.local\" \":[192.168.1.100]\"\n}}\nstage \"route\" {{\n    transport \".example.local\" \"smtp:[mailtrans.example.local]\"\n    transport-table \"transport\"\n    relay \"smtp:[a.domain.test]:587\"\n}}\n"
    ));
    let rules = config.rules(Stage::Route);
    assert_eq!(rules.len(), 3);
    assert!(
        matches!(&rules[0].action, RuleAction::Transport { transport, .. } if transport.to_string() == "smtp:[mailtrans.example.local]")
    );
    assert_eq!(
        rules[1].action,
        RuleAction::TransportTable("transport".into())
    );
    assert!(
        matches!(&rules[2].action, RuleAction::Relay(t) if t.to_string() == "smtp:[a.domain.test]:587")
    );

    let (errors, rendered) = check(&format!(
        "{PRELUDE}stage \"route\" {{\n    accept\n    transport \"a b\" \"smtp:x\"\n    relay \"smpt:[x]\"\n    transport-table \"transprot\"\n}}\nstage \"rcpt\" {{\n    relay \"smtp:[x]\"\n}}\ntable \"transport\" {{\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.contains(&"`accept` has no meaning in the route stage"),
        "{rendered}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("is not a domain, `.domain`")),
        "{rendered}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown transport `smpt`")),
        "{rendered}"
    );
    assert!(
        messages.contains(&"undefined table `transprot`"),
        "{rendered}"
    );
    assert!(
        messages.contains(&"`relay` has no meaning in the rcpt stage"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `transport`?"), "{rendered}");
}

#[test]
fn aliases_and_virtual_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mtad.kdl");
    std::fs::write(dir.path().join("aliases"), "root: admin@example.com\n").unwrap();
    std::fs::write(dir.path().join("virtual"), "@old.test new@example.com\n").unwrap();
    std::fs::write(
        &main,
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n    origin \"example.test\"\n}\nlisten \"mx\" address=\"127.0.0.1:25\"\naliases file=\"aliases\"\nvirtual file=\"virtual\"\n",
    )
    .unwrap();
    let config = Config::load(&main).unwrap();
    assert_eq!(config.server.origin, "example.test");
    assert_eq!(
        config
            .aliases
            .as_ref()
            .unwrap()
            .lookup("root")
            .unwrap()
            .unwrap(),
        "admin@example.com"
    );
    assert!(
        config
            .virtual_aliases
            .as_ref()
            .unwrap()
            .lookup("@old.test")
            .unwrap()
            .is_some()
    );

    // errors point into the aliases file; programs are refused
    std::fs::write(
        dir.path().join("aliases"),
        "root: admin@example.com\nbackup: |/usr/local/bin/backup\n",
    )
    .unwrap();
    let rendered = render(&Config::load(&main).unwrap_err());
    assert!(rendered.contains("[aliases:2:9]"), "{rendered}");
    assert!(
        rendered.contains("does not deliver to commands"),
        "{rendered}"
    );
}

#[test]
fn content_filters_and_their_references() {
    let config = parse(
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n    content-filter \"amavis\"\n}\n\
         listen \"mx\" address=\"127.0.0.1:2525\" content-filter=\"spamd\"\n\
         listen \"reinject\" address=\"127.0.0.1:10025\" filtered=#true\n\
         content-filter \"amavis\" \"smtp:[127.0.0.1]:10024\"\n\
         content-filter \"spamd\" \"lmtp:unix:/run/spamd.sock\" on-failure=\"bypass\"\n\
         stage \"data\" {\n    filter \"amavis\" sender=\"a@b.test\"\n}\n",
    );
    assert_eq!(config.server.content_filter.as_deref(), Some("amavis"));
    assert_eq!(config.listeners[0].content_filter.as_deref(), Some("spamd"));
    assert!(config.listeners[1].filtered);
    let amavis = &config.content_filters["amavis"];
    assert_eq!(amavis.transport.to_string(), "smtp:[127.0.0.1]:10024");
    assert!(!amavis.bypass);
    assert!(config.content_filters["spamd"].bypass);
    assert_eq!(
        config.rules(Stage::Data)[0].action,
        RuleAction::Filter("amavis".into())
    );

    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"back\" address=\"127.0.0.1:10025\" filtered=#true content-filter=\"amavis\"\n\
         listen \"other\" address=\"127.0.0.1:10026\" content-filter=\"amavsi\"\n\
         content-filter \"amavis\" \"smtp:[127.0.0.1]:10024\" on-failure=\"drop\"\n\
         content-filter \"null\" \"discard\"\n\
         stage \"rcpt\" {{\n    filter \"amavis\"\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "a `filtered` listener takes mail back from a filter: it cannot send it to one",
        "no content filter named `amavsi`",
        "on-failure is `retry` or `bypass`, not `drop`",
        "a content filter is an SMTP or LMTP next hop, not `discard`",
        "`filter` has no meaning in the rcpt stage",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(rendered.contains("did you mean `amavis`?"), "{rendered}");
    assert!(rendered.contains("mtad.kdl:7:42"), "{rendered}");
}

#[test]
fn proxy_protocol_listeners() {
    let config = parse(&format!(
        "{PRELUDE}listen \"lb\" address=\"127.0.0.1:2526\" proxy-protocol=#true proxies=\"lb\"\nnetworks \"lb\" \"10.0.0.5/32\"\n"
    ));
    assert_eq!(config.listeners[1].proxy.as_deref(), Some("lb"));
    assert_eq!(config.listeners[0].proxy, None);
    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"a\" address=\"127.0.0.1:2526\" proxy-protocol=#true\n\
         listen \"b\" address=\"127.0.0.1:2527\" proxies=\"lb\"\n\
         listen \"c\" address=\"127.0.0.1:2528\" proxy-protocol=#true proxies=\"lbb\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" proxy-protocol=\"yes\" proxies=\"lb\"\n\
         networks \"lb\" \"10.0.0.5/32\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "proxy-protocol=#true needs proxies=\"NETWORKS\": the load balancers' addresses",
        "proxies= without proxy-protocol=#true",
        "no networks set named `lbb`",
        "proxy-protocol is #true or #false",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(rendered.contains("did you mean `lb`?"), "{rendered}");
}

#[test]
fn rate_limits_block() {
    let config = parse(&format!(
        "{PRELUDE}networks \"office\" \"10.0.0.0/8\"\nrate-limits {{\n    connections 30 per=\"1m\"\n    recipients 500 per=\"1h\"\n    exempt \"office\"\n}}\n"
    ));
    let r = &config.rate_limits;
    assert_eq!(r.connections, Some((30, Duration::from_secs(60))));
    assert_eq!(r.messages, None);
    assert_eq!(r.recipients, Some((500, Duration::from_secs(3600))));
    assert_eq!(r.exempt, ["office"]);
    assert_eq!(r.auth, None);
    // failed AUTH attempts are limited by default, with or without the block
    assert_eq!(r.auth_failures, Some((10, Duration::from_secs(900))));
    assert_eq!(parse(PRELUDE).rate_limits, Default::default());
    let config = parse(&format!(
        "{PRELUDE}rate-limits {{
    auth 20 per=\"1h\"
    auth-failures 3 per=\"1h\"
}}
"
    ));
    assert_eq!(
        config.rate_limits.auth,
        Some((20, Duration::from_secs(3600)))
    );
    assert_eq!(
        config.rate_limits.auth_failures,
        Some((3, Duration::from_secs(3600)))
    );
    assert_eq!(config.rate_limits.ipv6_prefix, 64);
    assert_eq!(config.rate_limits.auth_failures_per_user, None);
    let config = parse(&format!(
        "{PRELUDE}rate-limits {{\n    auth-failures-per-user 20 per=\"1h\"\n    ipv6-prefix 56\n}}\n"
    ));
    assert_eq!(
        config.rate_limits.auth_failures_per_user,
        Some((20, Duration::from_secs(3600)))
    );
    assert_eq!(config.rate_limits.ipv6_prefix, 56);
    let (_, rendered) = check(&format!(
        "{PRELUDE}rate-limits {{\n    ipv6-prefix 129\n}}\n"
    ));
    assert!(
        rendered.contains("ipv6-prefix must be between 1 and 128"),
        "{rendered}"
    );

    let (errors, rendered) = check(&format!(
        "{PRELUDE}rate-limits {{\n    connections 30\n    messages 0 per=\"1h\"\n    recipients 5 per=\"2d\"\n    exempt \"ofice\"\n    mesages 3 per=\"1h\"\n}}\nnetworks \"office\" \"10.0.0.0/8\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "`connections` needs per=\"DURATION\"",
        "per must be between 1s and 24h",
        "no networks set named `ofice`",
        "unknown node `mesages` in `rate-limits`",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(
        messages.iter().any(|m| m.contains("messages")),
        "{rendered}"
    );
}

#[test]
fn tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).unwrap();
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let (c, k) = (c.to_str().unwrap(), k.to_str().unwrap());
    let users_file = dir.path().join("users");
    std::fs::write(&users_file, "alice:{PLAIN}secret\n").unwrap();
    let users = format!("users \"u\" file=\"{}\"\n", users_file.display());
    // a server certificate: STARTTLS is offered unless a listener says otherwise; the
    // server block may come after the listeners
    let config = parse(&format!(
        "listen \"mx\" address=\"127.0.0.1:25\"\n\
         listen \"sub\" address=\"127.0.0.1:587\" starttls=\"required\" auth=\"required\"\n\
         listen \"smtps\" address=\"127.0.0.1:465\" implicit-tls=#true auth=\"offered\"\n\
         listen \"plain\" address=\"127.0.0.1:2525\" starttls=\"off\"\n\
         server {{\n hostname \"mx.example.test\"\n spool \"spool\"\n tls-certificate \"{c}\"\n tls-key \"{k}\"\n}}\n{users}"
    ));
    let tls: Vec<ListenerTls> = config.listeners.iter().map(|l| l.tls).collect();
    assert_eq!(
        tls,
        [
            ListenerTls::Offered,
            ListenerTls::Required,
            ListenerTls::Implicit,
            ListenerTls::Off
        ]
    );
    assert_eq!(config.listeners[1].auth, AuthMode::Required);
    assert_eq!(config.listeners[2].auth, AuthMode::Offered);
    // the only users table is the one AUTH uses
    assert_eq!(config.listeners[1].users.as_deref(), Some("u"));
    let pair = CertKey {
        certificate: c.into(),
        key: k.into(),
    };
    assert_eq!(config.listeners[0].certificate.as_ref(), Some(&pair));
    assert_eq!(config.server.tls.as_ref(), Some(&pair));
    // no certificate: plaintext by default
    assert_eq!(parse(PRELUDE).listeners[0].tls, ListenerTls::Off);

    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"a\" address=\"127.0.0.1:2526\" starttls=\"required\"\n\
         listen \"b\" address=\"127.0.0.1:2527\" auth=\"required\"\n\
         listen \"c\" address=\"127.0.0.1:2528\" implicit-tls=#true starttls=\"offered\" certificate=\"{c}\" key=\"{k}\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" certificate=\"{c}\"\n\
         listen \"e\" address=\"127.0.0.1:2530\" certificate=\"{k}\" key=\"{k}\"\n\
         listen \"f\" address=\"127.0.0.1:2531\" certificate=\"{c}\" key=\"{c}\"\n\
         listen \"g\" address=\"127.0.0.1:2532\" starttls=\"maybe\" auth=\"yes\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "listener `a` uses TLS but has no certificate",
        "listener `b` offers AUTH but no TLS: passwords would cross the network in the clear",
        "implicit-tls=#true and starttls= exclude each other",
        "`certificate` and `key` go together",
        "starttls is \"offered\", \"required\" or \"off\", not `maybe`",
        "auth is \"offered\", \"required\" or \"off\", not `yes`",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(
        rendered.contains("no CERTIFICATE") && rendered.contains("no PRIVATE KEY"),
        "{rendered}"
    );
    // errors point at the property
    assert!(rendered.contains("mtad.kdl:6:37"), "{rendered}");
    // auth without TLS, knowingly
    let config = parse(&format!(
        "{PRELUDE}listen \"b\" address=\"127.0.0.1:2527\" auth=\"offered\" auth-plaintext=#true\n{users}"
    ));
    // which users table: named, defined, and only with AUTH
    let (errors, rendered) = check(&format!(
        "{PRELUDE}{users}users \"v\" file=\"{}\"\n\
         listen \"b\" address=\"127.0.0.1:2527\" auth=\"offered\" auth-plaintext=#true\n\
         listen \"c\" address=\"127.0.0.1:2528\" auth=\"offered\" auth-plaintext=#true users=\"w\"\n\
         listen \"d\" address=\"127.0.0.1:2529\" users=\"u\"\n",
        users_file.display()
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "listener `b` offers AUTH: say which users table",
        "no users table named `w`",
        "users= without auth=\"offered\" or \"required\"",
    ] {
        assert!(messages.contains(&want), "{want:?} missing:\n{rendered}");
    }
    assert!(config.listeners[1].auth_plaintext);
}

#[test]
fn dkim_keys_are_read_and_checked_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Rsa, 2048).unwrap();
    let (ed, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Ed25519, 0).unwrap();
    std::fs::write(dir.path().join("rsa.key"), rsa).unwrap();
    std::fs::write(dir.path().join("ed.key"), ed).unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key\n").unwrap();
    let load = |nodes: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(&path, format!("{PRELUDE}{nodes}")).unwrap();
        Config::load(&path)
    };
    let config = load(
        "dkim \"Example.COM\" selector=\"s2026\" key=\"rsa.key\"\n\
         dkim \"relay.test\" selector=\"ed\" key=\"ed.key\" headers=\"From:Subject\" always=#true\n",
    )
    .unwrap();
    assert_eq!(config.dkim.len(), 2);
    let (a, b) = (&config.dkim[0], &config.dkim[1]);
    assert_eq!(
        (a.domain.as_str(), a.selector.as_str(), a.always),
        ("example.com", "s2026", false)
    );
    assert_eq!(a.key.algorithm(), crate::mailauth::dkim::Algorithm::Rsa);
    assert_eq!(a.headers[0], "From");
    assert_eq!(
        a.headers.len(),
        crate::mailauth::dkim::DEFAULT_HEADERS.len()
    );
    assert_eq!(
        (b.key.algorithm(), b.always),
        (crate::mailauth::dkim::Algorithm::Ed25519, true)
    );
    assert_eq!(b.headers, ["From", "Subject"]);
    // the keys are part of the policy's revision
    assert!(
        config.sources.names().any(|n| n == "rsa.key"),
        "{:?}",
        config.sources.names().collect::<Vec<_>>()
    );

    let errors = load(
        "dkim \"example.com\" selector=\"s1\" key=\"missing.key\"\n\
         dkim \"example.org\" selector=\"s1\" key=\"bad.key\"\n\
         dkim \"example.net\" selector=\"bad selector\" key=\"rsa.key\"\n\
         dkim \"example.edu\" key=\"rsa.key\"\n\
         dkim \"example.info\" selector=\"s1\" key=\"rsa.key\" headers=\"To:Subject\"\n\
         dkim \"nodot\" selector=\"s1\" key=\"rsa.key\"\n",
    )
    .unwrap_err();
    let rendered = render(&errors);
    let at = |needle: &str| {
        errors
            .errors
            .iter()
            .find(|e| e.message.contains(needle))
            .and_then(|e| e.location.clone())
            .map(|o| (o.line, o.column))
            .unwrap_or_else(|| panic!("no error about {needle}: {rendered}"))
    };
    assert_eq!(at("cannot read"), (6, 34), "{rendered}");
    assert_eq!(at("bad.key: not a PEM private key"), (7, 34), "{rendered}");
    assert_eq!(at("not a valid selector"), (8, 20), "{rendered}");
    assert_eq!(at("needs selector"), (9, 1), "{rendered}");
    assert_eq!(at("must include From"), (10, 49), "{rendered}");
    assert_eq!(at("not a domain name"), (11, 6), "{rendered}");
    assert_eq!(errors.errors.len(), 6, "{rendered}");
}

#[test]
fn a_route_names_its_dkim_signer_and_an_undefined_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ed, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Ed25519, 0).unwrap();
    std::fs::write(dir.path().join("ed.key"), ed).unwrap();
    let load = |nodes: &str| {
        let path = dir.path().join("mtad.kdl");
        std::fs::write(&path, format!("{PRELUDE}{nodes}")).unwrap();
        Config::load(&path)
    };
    // the route may come before the node it names
    let config = load(
        "stage \"route\" {\n    transport \"*\" \"smtp:[192.0.2.1]\" dkim=\"Example.ORG\"\n}\n\
         dkim \"example.org\" selector=\"ed\" key=\"ed.key\"\n",
    )
    .unwrap();
    let options = &config.rules(Stage::Route)[0].route;
    assert_eq!(options.dkim.as_deref(), Some("example.org"));
    assert_eq!(options.to_string(), "dkim=\"example.org\"");

    let errors = load(
        "stage \"route\" {\n    transport \"*\" \"smtp:[192.0.2.1]\" dkim=\"example.net\"\n}\n\
         dkim \"example.org\" selector=\"ed\" key=\"ed.key\"\n",
    )
    .unwrap_err();
    let rendered = render(&errors);
    assert_eq!(errors.errors.len(), 1, "{rendered}");
    assert!(
        rendered.contains("no `dkim` node for example.net"),
        "{rendered}"
    );
    assert_eq!(
        errors.errors[0].location.as_ref().map(|o| o.line),
        Some(7),
        "{rendered}"
    );
}

#[test]
fn dkim_internal_and_dkim_sign() {
    let config = parse(&format!(
        "{PRELUDE}networks \"lan\" \"10.0.0.0/24\"\ndkim-internal \"lan\" \"192.0.2.0/24\"\nstage \"route\" {{\n    transport \"*\" \"smtp:[relay.test]\" dkim-sign=\"always\"\n}}\n"
    ));
    assert_eq!(
        config.dkim_internal,
        Some(vec![
            ClientRef::Set("lan".into()),
            ClientRef::Net("192.0.2.0/24".parse().unwrap())
        ])
    );
    let route = &config.rules(Stage::Route)[0].route;
    assert_eq!(
        route.dkim_sign,
        Some(crate::config::route::DkimSign::Always)
    );
    assert_eq!(route.to_string(), "dkim-sign=\"always\"");
    let (_, text) = check(&format!(
        "{PRELUDE}dkim-internal \"nowhere\"\nstage \"route\" {{\n    transport \"*\" \"smtp:[relay.test]\" dkim-sign=\"sometimes\"\n}}\n"
    ));
    assert!(text.contains("mtad.kdl:6:"), "{text}");
    assert!(text.contains("nowhere"), "{text}");
    assert!(
        text.contains("mtad.kdl:8:") && text.contains("unknown dkim-sign `sometimes`"),
        "{text}"
    );
}

#[test]
fn local_recipients() {
    // the default: the system's users and the aliases (Postfix's local_recipient_maps)
    let c = parse(PRELUDE);
    assert_eq!(
        c.delivery.local_recipients,
        Some(vec![LocalRecipients::Passwd, LocalRecipients::Aliases])
    );
    let c = parse(&format!(
        "{PRELUDE}table \"users\" {{\n    \"alice\" \"yes\"\n}}\ndelivery {{\n    local-recipients \"users\" \"passwd\"\n}}\n"
    ));
    assert_eq!(
        c.delivery.local_recipients,
        Some(vec![
            LocalRecipients::Table("users".into()),
            LocalRecipients::Passwd
        ])
    );
    let c = parse(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"any\"\n}}\n"
    ));
    assert_eq!(c.delivery.local_recipients, None);
    let (errors, rendered) = check(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"passwd\" \"nosuch\"\n}}\n"
    ));
    assert_eq!(errors.errors.len(), 1, "{rendered}");
    assert_eq!(errors.errors[0].location, Some(origin(7, 31)), "{rendered}");
    assert!(rendered.contains("`nosuch` is not"), "{rendered}");
    let (_, rendered) = check(&format!(
        "{PRELUDE}delivery {{\n    local-recipients \"any\" \"passwd\"\n}}\n"
    ));
    assert!(rendered.contains("cannot be combined"), "{rendered}");
}
