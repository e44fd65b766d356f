use super::*;
use crate::config::Config;

/// A configuration with these sets and rcpt rules, analysed.
fn analyse(sets: &str, rules: &str) -> RelayAnalysis {
    let text = format!(
        "server {{\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}}\n\
         listen \"mx\" address=\"127.0.0.1:2525\" starttls=\"off\"\n\
         {sets}\nstage \"rcpt\" {{\n{rules}}}\n"
    );
    let config = match Config::parse("mtad.kdl", &text) {
        Ok(config) => config,
        Err(e) => panic!("{}", crate::config::render(&e)),
    };
    Pipeline::compile(&config).relay_analysis(&config)
}

const SETS: &str = "networks \"trusted\" \"192.0.2.0/24\" \"2001:db8:1::/48\"\n\
                    domains \"relay\" \"example.test\" \".example.test\"";

/// The envelope of the one proven finding, checked against the rules it beat.
fn open(a: &RelayAnalysis) -> &RelayFinding {
    assert!(a.incomplete.is_empty(), "{:?}", a.incomplete);
    a.refuses()
        .unwrap_or_else(|| panic!("no counterexample: {a:?}"))
}

fn closed(a: &RelayAnalysis) {
    assert!(a.proved_closed(), "{a:#?}");
    assert!(a.combinations > 0 || a.findings.is_empty());
}

#[test]
fn the_usual_policy_is_proved_closed() {
    closed(&analyse(
        SETS,
        "accept client=\"trusted\"\naccept authenticated=#true\naccept rcpt-domain=\"relay\"\n",
    ));
    // nothing at all: the built-in refusal
    closed(&analyse(SETS, ""));
}

#[test]
fn accept_everything_is_open_and_the_envelope_shows_it() {
    let a = analyse(SETS, "accept\n");
    let f = open(&a);
    assert_eq!(f.action, "accept");
    assert!(!f.envelope.client.is_loopback());
    assert!(!f.envelope.rcpt.ends_with("example.test"), "{}", f.envelope);
    assert!(f.envelope.rcpt.contains('@'));
}

#[test]
fn a_trust_network_of_everyone_is_reported_and_open() {
    let a = analyse(
        "networks \"trusted\" \"0.0.0.0/0\"\ndomains \"relay\" \"example.test\"",
        "accept client=\"trusted\"\n",
    );
    assert_eq!(a.wide_trust.len(), 1);
    let f = open(&a);
    assert!(f.envelope.client.is_ipv4());
    // a /8 is still a network someone runs, not the Internet
    let a = analyse(
        "networks \"trusted\" \"10.0.0.0/8\"\ndomains \"relay\" \"example.test\"",
        "accept client=\"trusted\"\n",
    );
    assert!(a.wide_trust.is_empty());
    closed(&a);
}

#[test]
fn a_pattern_that_lets_postmaster_of_any_domain_through_is_found() {
    // docs/hooks.md's first example, written as a rule
    let a = analyse(
        SETS,
        "accept rcpt-matches=\"^postmaster@\"\naccept rcpt-domain=\"relay\"\n",
    );
    let f = open(&a);
    assert!(f.envelope.rcpt.starts_with("postmaster@"), "{}", f.envelope);
    assert!(!f.envelope.rcpt.ends_with("example.test"));
    // the same pattern held to our domains is closed
    closed(&analyse(
        SETS,
        "accept rcpt-matches=\"^postmaster@(.+\\\\.)?example\\\\.test$\"\naccept rcpt-domain=\"relay\"\n",
    ));
}

#[test]
fn earlier_refusals_close_what_a_later_accept_opens() {
    // refuse what is not ours first, then accept anything: closed
    closed(&analyse(
        SETS,
        "accept client=\"trusted\"\nreject 554 \"5.7.1\" \"no\" not-rcpt-domain=\"relay\"\naccept\n",
    ));
    // the refusal only for one sender: another gets through, and the path says why
    let a = analyse(
        SETS,
        "reject 554 \"5.7.1\" \"no\" sender-domain=\"relay\"\naccept not-client=\"trusted\"\n",
    );
    let f = open(&a);
    assert!(
        !f.envelope.sender.ends_with("example.test"),
        "{}",
        f.envelope
    );
    assert_eq!(f.passed.len(), 1, "{f}");
    assert!(f.passed[0].1.contains("sender-domain"), "{f}");
}

#[test]
fn hooks_and_policy_services_may_accept_and_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("rcpt.rhai");
    std::fs::write(&hook, "fn rcpt(ctx) { accept() }").unwrap();
    let a = analyse(
        SETS,
        &format!(
            "hook \"{}\"\naccept rcpt-domain=\"relay\"\n",
            hook.display()
        ),
    );
    assert!(a.refuses().is_none());
    assert!(!a.proved_closed());
    assert_eq!(a.findings.len(), 1);
    assert!(!a.findings[0].certain);
    assert!(
        a.findings[0].action.starts_with("hook "),
        "{:?}",
        a.findings[0]
    );
    // behind the trust check, the hook is out of the attacker's reach
    closed(&analyse(
        SETS,
        &format!(
            "reject 554 \"5.7.1\" \"no\" not-client=\"trusted\" not-rcpt-domain=\"relay\"\nhook \"{}\"\n",
            hook.display()
        ),
    ));
}

#[test]
fn the_intended_relay_is_reported_not_refused() {
    let a = analyse(SETS, "accept open-relay=\"intended\"\n");
    assert!(a.refuses().is_none());
    assert_eq!(a.findings.len(), 1);
    assert!(a.findings[0].intended && a.findings[0].certain);
}

#[test]
fn conditions_the_attacker_controls_do_not_close_a_relay() {
    for cond in [
        "tls=#true",
        "helo=\"mail.example.test\"",
        "helo-matches=\"^mail\\\\.\"",
        "sender=\"boss@example.test\"",
        "sender-domain=\"relay\"",
    ] {
        let a = analyse(SETS, &format!("accept {cond}\n"));
        assert!(a.refuses().is_some(), "{cond}: {a:#?}");
    }
    // ... but authentication and the trusted networks do
    for cond in [
        "authenticated=#true",
        "auth-user=\"alice\"",
        "client=\"trusted\"",
    ] {
        closed(&analyse(SETS, &format!("accept {cond}\n")));
    }
}

#[test]
fn a_relay_to_one_foreign_address_is_a_relay() {
    let a = analyse(SETS, "accept rcpt=\"friend@elsewhere.example\"\n");
    assert_eq!(open(&a).envelope.rcpt, "friend@elsewhere.example");
}

#[test]
fn a_network_negated_is_the_rest_of_the_internet() {
    let a = analyse(
        "networks \"bad\" \"198.51.100.0/24\"\ndomains \"relay\" \"example.test\"",
        "accept not-client=\"bad\"\n",
    );
    let f = open(&a);
    assert!(
        !"198.51.100.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&f.envelope.client)
    );
}

#[test]
fn authentication_results_are_the_attackers_to_choose() {
    let sets = format!("{SETS}\nauthentication {{\n}}");
    let a = analyse(&sets, "accept spf=\"pass\" sender-domain=\"relay\"\n");
    let f = open(&a);
    assert_eq!(f.assuming, vec!["spf=pass".to_owned()], "{f}");
    assert!(f.envelope.sender.ends_with("example.test"), "{f}");
}

#[test]
fn a_policy_beyond_the_bounds_is_said_to_be_unproved_not_closed() {
    // 20 independent patterns on the sender: 2^20 combinations
    let rules: String = (0..20)
        .map(|i| format!("reject 554 \"5.7.1\" \"no\" sender-matches=\"x{i}y\"\n"))
        .collect::<String>()
        + "accept rcpt-domain=\"relay\"\n";
    let a = analyse(SETS, &rules);
    assert!(!a.proved_closed());
    assert!(a.refuses().is_none());
    assert!(!a.incomplete.is_empty(), "{a:?}");
}
