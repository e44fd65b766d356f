//! `milter` nodes and the references to them (listeners, the local submission).

use super::*;
use crate::milter::{Address, FailureAction, MacroStage};

#[test]
fn milters_and_their_references() {
    let config = parse(
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\n\
         networks \"trusted\" \"10.0.0.0/8\"\n\
         listen \"mx\" address=\"127.0.0.1:2525\" milters=\"opendkim rspamd\" milter-skip-clients=\"trusted\"\n\
         milter \"rspamd\" \"inet:127.0.0.1:11332\" on-failure=\"shutdown\" content-timeout=\"60s\"\n\
         milter \"opendkim\" \"unix:/run/opendkim/opendkim.sock\" {\n    macros \"connect\" \"j {daemon_name}\"\n}\n\
         local-submission {\n    maildrop \"maildrop\"\n    milters \"opendkim\"\n}\n",
    );
    assert_eq!(config.listeners[0].milters, ["opendkim", "rspamd"]);
    assert_eq!(config.listeners[0].milter_skip.as_deref(), Some("trusted"));
    let rspamd = &config.milters["rspamd"];
    assert_eq!(
        rspamd.address,
        Address::Inet {
            host: "127.0.0.1".into(),
            port: 11332
        }
    );
    assert_eq!(rspamd.on_failure, FailureAction::Shutdown);
    assert_eq!(rspamd.content_timeout, Duration::from_secs(60));
    // Postfix's defaults where nothing is said
    assert_eq!(rspamd.command_timeout, Duration::from_secs(30));
    assert_eq!(rspamd.connect_timeout, Duration::from_secs(30));
    assert_eq!(
        rspamd.macros[MacroStage::Connect.index()],
        ["j", "{daemon_name}", "{daemon_addr}", "v", "_"]
    );
    let opendkim = &config.milters["opendkim"];
    assert_eq!(opendkim.on_failure, FailureAction::Tempfail);
    assert_eq!(
        opendkim.macros[MacroStage::Connect.index()],
        ["j", "{daemon_name}"]
    );
    assert_eq!(
        config.local_submission.as_ref().map(|l| l.milters.clone()),
        Some(vec!["opendkim".to_owned()])
    );

    let (errors, rendered) = check(&format!(
        "{PRELUDE}listen \"other\" address=\"127.0.0.1:10026\" milters=\"rspamd rspmd\" milter-skip-clients=\"nosuch\"\n\
         listen \"third\" address=\"127.0.0.1:10027\" milter-skip-clients=\"trusted\"\n\
         networks \"trusted\" \"10.0.0.0/8\"\n\
         milter \"rspamd\" \"inet:127.0.0.1\" on-failure=\"drop\"\n\
         milter \"a\" \"local:/x\" {{\n    macros \"conect\" \"j\"\n    macros \"mail\" \"{{nosuch}}\"\n    timeout \"1s\"\n}}\n\
         milter \"a\" \"unix:/x\"\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "no milter named `rspmd`",
        "`inet:127.0.0.1`: no port (inet:127.0.0.1:11332)",
        "on-failure is tempfail, accept, reject or shutdown, not `drop`",
        "`local:/x`: a milter is at \"inet:host:port\" or \"unix:/path\"",
        "no macro stage `conect`",
        "mtad has no macro `{nosuch}`",
        "unknown setting `timeout` in `milter`",
        "milter-skip-clients= without milters=",
    ] {
        assert!(messages.contains(&want), "missing {want:?} in:\n{rendered}");
    }
    // every error points into the file
    assert!(rendered.contains("mtad.kdl:"), "{rendered}");
}

#[test]
fn rspamd_filters_share_the_milters_namespace_and_lists() {
    let config = parse(
        "server {\n    hostname \"mx.example.test\"\n    spool \"spool\"\n}\n\
         listen \"mx\" address=\"127.0.0.1:2525\" milters=\"opendkim rspamd\"\n\
         rspamd \"rspamd\" \"http://127.0.0.1:11333\" on-failure=\"reject\" content-timeout=\"60s\" max-reply-size=\"64K\" spam-header=\"X-Spam-Flag\" score-header=\"\"\n\
         rspamd \"remote\" \"http://[::1]:8080/checkv2\"\n\
         milter \"opendkim\" \"unix:/run/opendkim/opendkim.sock\"\n\
         local-submission {\n    maildrop \"maildrop\"\n    milters \"rspamd\"\n}\n",
    );
    assert_eq!(config.listeners[0].milters, ["opendkim", "rspamd"]);
    let rspamd = &config.milters["rspamd"];
    assert_eq!(
        rspamd.address,
        Address::Http {
            host: "127.0.0.1".into(),
            port: 11333
        }
    );
    assert_eq!(rspamd.on_failure, FailureAction::Reject);
    assert_eq!(rspamd.content_timeout, Duration::from_secs(60));
    let settings = rspamd.rspamd.as_ref().expect("an rspamd filter");
    assert_eq!(settings.path, "/checkv2");
    assert_eq!(settings.max_reply, 64 << 10);
    assert_eq!(settings.spam_header, "X-Spam-Flag");
    assert_eq!(settings.score_header, None);
    let remote = config.milters["remote"].rspamd.as_ref().unwrap();
    assert_eq!(remote.score_header.as_deref(), Some("X-Rspamd-Score"));
    assert_eq!(
        config.milters["remote"].address.to_string(),
        "http://[::1]:8080"
    );
    assert!(config.milters["opendkim"].rspamd.is_none());

    let (errors, rendered) = check(&format!(
        "{PRELUDE}milter \"rspamd\" \"inet:127.0.0.1:11332\"\n\
         rspamd \"rspamd\" \"http://127.0.0.1:11333\"\n\
         rspamd \"a\" \"inet:127.0.0.1:11333\" command-timeout=\"1s\"\n\
         rspamd \"b\" \"http://h:1\" spam-header=\"Bad: name\" max-reply-size=\"1\" {{\n    macros \"mail\" \"i\"\n}}\n"
    ));
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    for want in [
        "`inet:127.0.0.1:11333`: rspamd's worker is at an http:// URL (http://127.0.0.1:11333)",
        "`Bad: name` is not a header name",
    ] {
        assert!(messages.contains(&want), "missing {want:?} in:\n{rendered}");
    }
    // a duplicate name across both kinds, an unknown property, a child block, a tiny
    // reply limit
    for want in [
        "filter `rspamd`",
        "command-timeout",
        "macros",
        "max-reply-size",
    ] {
        assert!(rendered.contains(want), "missing {want:?} in:\n{rendered}");
    }
    assert!(rendered.contains("mtad.kdl:"), "{rendered}");
}
