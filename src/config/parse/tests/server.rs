//! The `server` and `limits` blocks.

use super::*;

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
fn user_names_an_account_and_nothing_else() {
    let config = Config::parse("/etc/mtad/mtad.kdl", PRELUDE).unwrap();
    assert_eq!(config.server.user, None);
    let with = |value: &str| {
        PRELUDE.replace(
            "    spool \"spool\"\n",
            &format!("    spool \"spool\"\n    user {value}\n"),
        )
    };
    let config = Config::parse("/etc/mtad/mtad.kdl", &with("\"mtad\"")).unwrap();
    assert_eq!(config.server.user.as_deref(), Some("mtad"));
    for bad in ["\"\"", "\"-r\"", "\"../etc\"", "\"a b\"", "7"] {
        let (_, rendered) = check(&with(bad));
        assert!(
            rendered.contains("not a user name") || rendered.contains("user"),
            "{bad}: {rendered}"
        );
    }
    let (_, rendered) = check(&with("\"../etc\""));
    assert!(
        rendered.contains("`../etc` is not a user name"),
        "{rendered}"
    );
}
