//! The `rate-limits` block.

use super::*;

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
