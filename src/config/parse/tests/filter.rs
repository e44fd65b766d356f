//! `content-filter` nodes and the references to them.

use super::*;

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
