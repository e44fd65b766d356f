//! The `log` block.

use super::*;

fn located(text: &str) -> Vec<(String, String)> {
    let (errors, _) = check(text);
    errors
        .errors
        .iter()
        .map(|e| (e.location.as_ref().unwrap().to_string(), e.message.clone()))
        .collect()
}

#[test]
fn log_settings_and_their_defaults() {
    assert_eq!(parse(PRELUDE).log, LogSettings::default());
    let default = LogSettings::default();
    assert_eq!(
        (
            default.output,
            default.format,
            default.syslog_name.as_str(),
            default.facility.name(),
            default.syslog_socket.to_str(),
        ),
        (
            LogOutput::Auto,
            LogFormat::Text,
            "mtad",
            "mail",
            Some("/dev/log")
        )
    );
    let config = parse(&format!(
        r#"{PRELUDE}
log {{
    output "syslog"
    syslog-name "postfix/submission"
    syslog-facility "local3"
    syslog-socket "run/log.sock"
    journal-socket "/run/j.sock"
}}"#
    ));
    assert_eq!(
        config.log,
        LogSettings {
            output: LogOutput::Syslog,
            format: LogFormat::Text,
            syslog_name: "postfix/submission".into(),
            facility: Facility(19),
            // relative to the configuration's directory, "" here
            syslog_socket: PathBuf::from("run/log.sock"),
            journal_socket: PathBuf::from("/run/j.sock"),
        }
    );
    let config = parse(&format!("{PRELUDE}log {{ format \"json\" }}"));
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn log_errors_point_at_the_value() {
    let errors = located(&format!(
        r#"{PRELUDE}log {{
    output "sylog"
    format "xml"
    syslog-facility "kern"
    syslog-name "mtad smtpd"
    colour "red"
}}
"#
    ));
    assert_eq!(
        errors,
        [
            ("mtad.kdl:7:12", "`sylog` is not a log output"),
            ("mtad.kdl:8:12", "`xml` is not a log format"),
            ("mtad.kdl:9:21", "`kern` is not a log facility"),
            ("mtad.kdl:10:17", "`mtad smtpd` is not a syslog name"),
            ("mtad.kdl:11:5", "unknown node `colour` in `log`"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let (_, rendered) = check(&format!("{PRELUDE}log {{ output \"sylog\" }}"));
    assert!(rendered.contains("did you mean `syslog`?"), "{rendered}");
    let errors = located(&format!(
        "{PRELUDE}log {{\n    output \"journal\"\n    format \"json\"\n}}\nlog {{ }}\n"
    ));
    assert_eq!(
        errors,
        [
            (
                "mtad.kdl:8:12",
                "`format` is the format of stderr; journal lines are always Postfix's"
            ),
            ("mtad.kdl:10:1", "duplicate `log` block"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}
