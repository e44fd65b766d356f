use std::sync::{Arc, Mutex};

use super::*;
use crate::maillog::Agent;

/// The records of the events `f` logs.
fn records(f: impl FnOnce()) -> Vec<Record> {
    struct Keep(Arc<Mutex<Vec<Record>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Keep {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.lock().unwrap().push(Record::of(e));
        }
    }
    let kept = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Keep(kept.clone()));
    tracing::subscriber::with_default(subscriber, f);
    std::mem::take(&mut *kept.lock().unwrap())
}

fn output(settings: &LogSettings) -> Output {
    Output {
        hostname: "mx".into(),
        pid: 42,
        ..Output::stderr(settings)
    }
}

#[test]
fn severities_follow_the_level_as_postfix_logs() {
    let events = records(|| {
        crate::mail!(Agent::Smtpd, INFO, "connect from unknown[192.0.2.1]");
        crate::mail!(
            Agent::Smtpd,
            WARN,
            "warning: unknown[192.0.2.1]: SASL PLAIN authentication failed: authentication failure"
        );
        tracing::warn!(queue_id = "4A2F", "cannot record a delivery status");
        tracing::error!(error = "disk full", "cannot queue");
    });
    let settings = LogSettings {
        facility: Facility::MAIL,
        ..LogSettings::default()
    };
    let out = output(&settings);
    let lines: Vec<String> = events.iter().map(|r| out.syslog_datagram(r)).collect();
    // mail.info = 2*8+6, mail.warning = 20, mail.err = 19; the date after `>` is 15 bytes
    let shape = |line: &str| {
        format!(
            "{}{}",
            &line[..line.find('>').unwrap() + 1],
            &line[line.find('>').unwrap() + 17..]
        )
    };
    assert_eq!(
        lines.iter().map(|l| shape(l)).collect::<Vec<_>>(),
        [
            "<22>mtad/smtpd[42]: connect from unknown[192.0.2.1]",
            "<20>mtad/smtpd[42]: warning: unknown[192.0.2.1]: SASL PLAIN authentication failed: authentication failure",
            "<20>mtad/master[42]: warning: cannot record a delivery status queue_id=4A2F",
            "<19>mtad/master[42]: error: cannot queue error=disk full",
        ]
    );
}

#[test]
fn a_journal_datagram_has_the_priority_identifier_and_every_field() {
    let events = records(|| {
        tracing::warn!(
            target: "mtad::delivery::scheduler",
            attempts = 3u64,
            reason = "line one\nline two",
            "deferred"
        );
    });
    let settings = LogSettings {
        syslog_name: "relay".into(),
        facility: Facility::from_name("local0").unwrap(),
        ..LogSettings::default()
    };
    let datagram = output(&settings).journal_datagram(&events[0]);
    // a value with a newline is sent in the binary form; MESSAGE has one too
    let mut expected = Vec::new();
    let text = "warning: deferred attempts=3 reason=line one\nline two";
    expected.extend_from_slice(b"MESSAGE\n");
    expected.extend_from_slice(&(text.len() as u64).to_le_bytes());
    expected.extend_from_slice(text.as_bytes());
    expected.extend_from_slice(
        b"\nPRIORITY=4\nSYSLOG_IDENTIFIER=relay/qmgr\nSYSLOG_PID=42\nSYSLOG_FACILITY=16\nMTAD_TARGET=mtad::delivery::scheduler\nMTAD_ATTEMPTS=3\nMTAD_REASON\n",
    );
    expected.extend_from_slice(&17u64.to_le_bytes());
    expected.extend_from_slice(b"line one\nline two\n");
    assert_eq!(
        String::from_utf8_lossy(&datagram),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(journal_key("queue.id-2"), "MTAD_QUEUE_ID_2");
}

#[test]
fn json_keeps_every_field_and_its_type() {
    let events = records(|| {
        crate::mail!(
            Agent::Smtp,
            INFO,
            rule = "mtad.kdl:7:5",
            size = 1234u64,
            tls = true,
            "4A2F: to=<a@b>, status=sent (250 ok)"
        );
    });
    let line = output(&LogSettings::default()).json_line(&events[0]);
    assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["program"], "mtad/smtp");
    assert_eq!(v["level"], "info");
    assert_eq!(v["target"], "mail");
    assert_eq!(v["message"], "4A2F: to=<a@b>, status=sent (250 ok)");
    assert_eq!(v["fields"]["rule"], "mtad.kdl:7:5");
    assert_eq!(v["fields"]["size"], 1234);
    assert_eq!(v["fields"]["tls"], true);
    assert!(v["fields"].get("agent").is_none());
}

#[test]
fn the_command_line_wins() {
    let config = LogSettings {
        output: LogOutput::Syslog,
        syslog_name: "relay".into(),
        ..LogSettings::default()
    };
    let none = Overrides::default();
    assert_eq!(none.apply(&config).unwrap(), config);
    // --log-format alone: stderr in that format, as it always meant
    let format = Overrides {
        format: Some(LogFormat::Postfix),
        ..Overrides::default()
    };
    let l = format.apply(&config).unwrap();
    assert_eq!(
        (l.output, l.format, l.syslog_name.as_str()),
        (LogOutput::Stderr, LogFormat::Postfix, "relay")
    );
    let journal = Overrides {
        output: Some(LogOutput::Journal),
        syslog_name: Some("postfix".into()),
        ..Overrides::default()
    };
    let l = journal.apply(&config).unwrap();
    assert_eq!(
        (l.output, l.syslog_name.as_str()),
        (LogOutput::Journal, "postfix")
    );
    let both = Overrides {
        output: Some(LogOutput::Syslog),
        format: Some(LogFormat::Json),
        ..Overrides::default()
    };
    assert_eq!(
        both.apply(&config).unwrap_err().to_string(),
        "--log-format is the format of stderr; syslog lines are always Postfix's"
    );
    assert_eq!(
        parse_output("sylog").unwrap_err().to_string(),
        "`sylog` is not one of: stderr, syslog, journal, auto"
    );
    assert!(parse_syslog_name("mtad smtpd").is_err());
    assert_eq!(
        parse_syslog_name("postfix/submission").unwrap(),
        "postfix/submission"
    );
}

#[test]
fn a_missing_socket_is_refused_at_start() {
    let settings = LogSettings {
        output: LogOutput::Syslog,
        syslog_socket: "/nonexistent/log".into(),
        ..LogSettings::default()
    };
    let err = Output::open(&settings).err().unwrap().to_string();
    assert!(
        err.starts_with("cannot log to syslog at /nonexistent/log: "),
        "{err}"
    );
}

#[test]
fn auto_is_the_journal_only_where_stderr_is_the_journal_and_no_format_was_asked() {
    let auto = LogSettings::default();
    assert_eq!(auto.output, LogOutput::Auto);
    assert_eq!(resolved(&auto, true).output, LogOutput::Journal);
    assert_eq!(resolved(&auto, false).output, LogOutput::Stderr);
    // a format asked for is stderr's, under systemd too
    let json = LogSettings {
        format: LogFormat::Json,
        ..LogSettings::default()
    };
    assert_eq!(
        (resolved(&json, true).output, resolved(&json, true).format),
        (LogOutput::Stderr, LogFormat::Json)
    );
    // an output chosen is kept
    for output in [LogOutput::Stderr, LogOutput::Syslog, LogOutput::Journal] {
        let chosen = LogSettings {
            output,
            ..LogSettings::default()
        };
        assert_eq!(resolved(&chosen, true).output, output);
        assert_eq!(resolved(&chosen, false).output, output);
    }
    // --log-output auto --log-format postfix: stderr in Postfix's lines
    let both = Overrides {
        output: Some(LogOutput::Auto),
        format: Some(LogFormat::Postfix),
        ..Overrides::default()
    };
    let l = resolved(&both.apply(&LogSettings::default()).unwrap(), true);
    assert_eq!(
        (l.output, l.format),
        (LogOutput::Stderr, LogFormat::Postfix)
    );
}

#[test]
fn journal_stream_names_a_device_and_an_inode() {
    assert!(names_stream("8:123456", 8, 123456));
    assert!(!names_stream("8:123456", 8, 123457));
    assert!(!names_stream("9:123456", 8, 123456));
    for bad in ["", "8", "8:", ":1", "8:1:2", "x:y", "-8:1", "8 :1"] {
        assert!(!names_stream(bad, 8, 1), "{bad}");
    }
}
