//! `stage` blocks, their rules and conditions.

use super::*;

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
