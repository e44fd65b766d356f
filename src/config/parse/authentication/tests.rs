//! The `authentication` block, the conditions on its results and `arc-seal=`.

use std::time::Duration;

use crate::config::{AuthCheck, ClientRef, Condition, Config, render};
use crate::mailauth::{AuthResult, Checks, DmarcPolicy};

const PRELUDE: &str = "server {\n    hostname \"MX.example.test\"\n    spool \"spool\"\n}\nlisten \"mx\" address=\"127.0.0.1:2525\"\nlisten \"submission\" address=\"127.0.0.1:2587\"\nnetworks \"lan\" \"10.0.0.0/8\"\n";

fn parse(text: &str) -> Config {
    match Config::parse("mtad.kdl", &format!("{PRELUDE}{text}")) {
        Ok(config) => config,
        Err(errors) => panic!("{}", render(&errors)),
    }
}

fn errors(text: &str) -> String {
    match Config::parse("mtad.kdl", &format!("{PRELUDE}{text}")) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(errors) => render(&errors),
    }
}

#[test]
fn an_empty_block_checks_everything_with_defaults() {
    let config = parse("authentication {\n}\n");
    let auth = config.authentication.expect("the block");
    assert_eq!(auth.authserv_id, None);
    assert_eq!(auth.checks, Checks::default());
    assert_eq!(auth.timeout, Duration::from_secs(10));
    assert!(auth.skip_clients.is_empty() && auth.skip_listeners.is_empty());
    assert!(parse("").authentication.is_none());
}

#[test]
fn every_setting() {
    let config = parse(
        "authentication {\n    authserv-id \"MX1.Example.test\"\n    checks \"spf\" \"dkim\" \"dmarc\"\n    skip-clients \"lan\" \"192.0.2.0/24\"\n    skip-listeners \"submission\"\n    timeout \"3s\"\n}\n",
    );
    let auth = config.authentication.unwrap();
    assert_eq!(auth.authserv_id.as_deref(), Some("mx1.example.test"));
    assert_eq!(
        auth.checks,
        Checks {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: false,
            iprev: false
        }
    );
    assert_eq!(auth.skip_clients.len(), 2);
    assert!(matches!(&auth.skip_clients[0], ClientRef::Set(n) if n == "lan"));
    assert_eq!(auth.skip_listeners, ["submission"]);
    assert_eq!(auth.timeout, Duration::from_secs(3));
}

#[test]
fn bad_settings_are_errors_with_their_place() {
    let e = errors("authentication {\n    checks \"spf\" \"dkmi\"\n}\n");
    assert!(
        e.contains("mtad.kdl:9:18") && e.contains("unknown check `dkmi`"),
        "{e}"
    );
    let e = errors("authentication {\n    checks \"dmarc\"\n}\n");
    assert!(e.contains("DMARC needs the SPF or the DKIM check"), "{e}");
    let e = errors("authentication {\n    skip-listeners \"submision\"\n}\n");
    assert!(
        e.contains("no listener is named `submision`") && e.contains("submission"),
        "{e}"
    );
    let e = errors("authentication {\n    skip-clients \"wan\"\n}\n");
    assert!(e.contains("neither a defined network set"), "{e}");
    let e = errors("authentication {\n    timeout \"500ms\"\n}\n");
    assert!(e.contains("between 1s and 5m"), "{e}");
    let e = errors("authentication {\n    authserv-id \"not a host\"\n}\n");
    assert!(e.contains("not a host name"), "{e}");
    let e = errors("authentication {\n}\nauthentication {\n}\n");
    assert!(
        e.contains("duplicate") || e.contains("more than once"),
        "{e}"
    );
}

#[test]
fn conditions_on_the_results() {
    let config = parse(
        "authentication {\n}\nstage \"mail\" {\n    reject 550 \"5.7.1\" \"SPF\" spf=\"fail\" not-spf-helo=\"pass\"\n}\nstage \"data\" {\n    reject 550 \"5.7.1\" \"DMARC\" dmarc=\"fail\" dmarc-policy=\"reject\"\n    hold dkim=\"fail, permerror\" arc=\"none\" iprev=\"fail temperror\"\n}\n",
    );
    let mail = &config.stages[crate::config::Stage::Mail.index()][0];
    assert_eq!(
        mail.conditions[0].test,
        Condition::Auth(AuthCheck::Spf, vec![AuthResult::Fail])
    );
    assert!(mail.conditions[1].negate);
    let data = &config.stages[crate::config::Stage::Data.index()];
    assert_eq!(
        data[0].conditions[1].test,
        Condition::DmarcPolicy(vec![DmarcPolicy::Reject])
    );
    assert_eq!(
        data[1].conditions[0].test,
        Condition::Auth(
            AuthCheck::Dkim,
            vec![AuthResult::Fail, AuthResult::PermError]
        )
    );
}

#[test]
fn conditions_are_checked() {
    // a result that does not exist
    let e = errors(
        "authentication {\n}\nstage \"data\" {\n    reject 550 \"5.7.1\" \"x\" dmarc=\"failed\"\n}\n",
    );
    assert!(
        e.contains("mtad.kdl:11:") && e.contains("`failed` is not a result"),
        "{e}"
    );
    let e =
        errors("authentication {\n}\nstage \"data\" {\n    hold dmarc-policy=\"quarantined\"\n}\n");
    assert!(e.contains("not a DMARC policy"), "{e}");
    // DKIM is checked at the end of DATA: not at rcpt
    let e = errors(
        "authentication {\n}\nstage \"rcpt\" {\n    reject 550 \"5.7.1\" \"x\" dkim=\"fail\"\n}\n",
    );
    assert!(e.contains("`dkim` does not exist at the rcpt stage"), "{e}");
    // nor SPF at helo
    let e = errors(
        "authentication {\n}\nstage \"helo\" {\n    reject 550 \"5.7.1\" \"x\" spf=\"fail\"\n}\n",
    );
    assert!(e.contains("`spf` does not exist at the helo stage"), "{e}");
    // without the block the results would always be `skipped`
    let e = errors("stage \"data\" {\n    reject 550 \"5.7.1\" \"x\" dmarc=\"fail\"\n}\n");
    assert!(
        e.contains("mtad.kdl:9:") && e.contains("`authentication` checks, which are off"),
        "{e}"
    );
}

#[test]
fn arc_seal_names_a_dkim_node() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, _) =
        crate::mailauth::dkim::generate(crate::mailauth::dkim::Algorithm::Ed25519, 0).unwrap();
    let key = dir.path().join("k.pem");
    std::fs::write(&key, pem).unwrap();
    let text = format!(
        "authentication {{\n}}\ndkim \"lists.example.net\" selector=\"arc1\" key=\"{}\"\nstage \"route\" {{\n    transport \"*\" \"smtp:[127.0.0.1]:2600\" arc-seal=\"Lists.Example.net\"\n}}\n",
        key.display()
    );
    let config = parse(&text);
    let route = &config.stages[crate::config::Stage::Route.index()][0];
    assert_eq!(route.route.arc_seal.as_deref(), Some("lists.example.net"));
    assert!(
        route
            .route
            .to_string()
            .contains("arc-seal=\"lists.example.net\"")
    );
    let e = errors(&text.replace(
        "arc-seal=\"Lists.Example.net\"",
        "arc-seal=\"other.example\"",
    ));
    assert!(e.contains("no `dkim` node for other.example"), "{e}");
    let e = errors(&text.replace("authentication {\n}\n", ""));
    assert!(e.contains("`authentication` checks, which are off"), "{e}");
}
