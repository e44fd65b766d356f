//! The configuration's settings by name, for `mtactl config` (Postfix's `postconf`):
//! every key of the settings blocks (`server`, `limits`, `rate-limits`, `reload`,
//! `delivery`) as `block.key`, read from a [`Config`], the one the daemon builds, and
//! written back as KDL. The defaults are what the parser puts in a [`Config`] when a
//! setting is not written ([`defaults`]), so `mtactl config` cannot disagree with the
//! daemon about either.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Config, Delivery, Limits, LocalRecipients, RateLimits, ReloadSettings, Server};

/// A setting's value, as it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string or a path (written quoted).
    Text(String),
    /// A count or a size in bytes.
    Int(u64),
    Bool(bool),
    Duration(Duration),
    /// `COUNT per="DURATION"` (`rate-limits`).
    Rate(u32, Duration),
    /// One argument each (`exempt`, `fallback-relay`, `require-tests`, ...).
    List(Vec<String>),
    /// Not set and off: nothing can be written for it (the block leaves it out).
    Off,
    /// Required and without a default (`hostname`, `spool` in the defaults).
    Required,
}

impl Value {
    /// The arguments of the setting's node, as KDL; `None` when the node is left out.
    pub fn kdl(&self) -> Option<String> {
        Some(match self {
            Value::Text(s) => quote(s),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => format!("#{b}"),
            Value::Duration(d) => quote(&humantime::format_duration(*d).to_string()),
            Value::Rate(n, per) => format!(
                "{n} per={}",
                quote(&humantime::format_duration(*per).to_string())
            ),
            Value::List(items) if !items.is_empty() => {
                items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(" ")
            }
            Value::List(_) | Value::Off | Value::Required => return None,
        })
    }

    /// The value as plain text, for scripts (`postconf -h`): strings unquoted, lists
    /// separated by spaces, nothing for off.
    pub fn plain(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Duration(d) => humantime::format_duration(*d).to_string(),
            Value::Rate(n, per) => format!("{n} per {}", humantime::format_duration(*per)),
            Value::List(items) => items.join(" "),
            Value::Off | Value::Required => String::new(),
        }
    }
}

/// `s` as a quoted KDL v2 string (always quoted, where KDL would allow a bare word).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One setting: `block.key` and how to read it from a configuration.
pub struct Setting {
    pub block: &'static str,
    pub key: &'static str,
    pub get: fn(&Config) -> Value,
}

impl Setting {
    /// `block.key`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.block, self.key)
    }
}

/// The settings blocks, in the order they are written.
pub const BLOCKS: [&str; 5] = ["server", "limits", "rate-limits", "reload", "delivery"];

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}
fn path(p: &std::path::Path) -> Value {
    Value::Text(p.display().to_string())
}
fn int(n: impl TryInto<u64>) -> Value {
    Value::Int(n.try_into().unwrap_or(u64::MAX))
}
fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map_or(Value::Off, f)
}
fn rate(r: Option<(u32, Duration)>) -> Value {
    opt(r, |(n, per)| Value::Rate(n, per))
}

/// Every setting, block by block, keys in the order the documentation lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        block: "server",
        key: "hostname",
        get: |c| text(&c.server.hostname),
    },
    Setting {
        block: "server",
        key: "spool",
        get: |c| path(&c.server.spool),
    },
    Setting {
        block: "server",
        key: "banner",
        get: |c| text(&c.server.banner),
    },
    Setting {
        block: "server",
        key: "origin",
        get: |c| text(&c.server.origin),
    },
    Setting {
        block: "server",
        key: "shutdown-timeout",
        get: |c| Value::Duration(c.server.shutdown_timeout),
    },
    Setting {
        block: "server",
        key: "control-socket",
        get: |c| path(&c.server.control_socket),
    },
    Setting {
        block: "server",
        key: "content-filter",
        get: |c| opt(c.server.content_filter.as_deref(), text),
    },
    Setting {
        block: "server",
        key: "tls-certificate",
        get: |c| opt(c.server.tls.as_ref(), |t| path(&t.certificate)),
    },
    Setting {
        block: "server",
        key: "tls-key",
        get: |c| opt(c.server.tls.as_ref(), |t| path(&t.key)),
    },
    Setting {
        block: "server",
        key: "metrics",
        get: |c| opt(c.server.metrics, |a| Value::Text(a.to_string())),
    },
    Setting {
        block: "limits",
        key: "message-size",
        get: |c| int(c.limits.message_size),
    },
    Setting {
        block: "limits",
        key: "recipients",
        get: |c| int(c.limits.recipients),
    },
    Setting {
        block: "limits",
        key: "line-length",
        get: |c| int(c.limits.line_length),
    },
    Setting {
        block: "limits",
        key: "text-line-length",
        get: |c| int(c.limits.text_line_length),
    },
    Setting {
        block: "limits",
        key: "header-size",
        get: |c| int(c.limits.header_size),
    },
    Setting {
        block: "limits",
        key: "junk-commands",
        get: |c| int(c.limits.junk_commands),
    },
    Setting {
        block: "limits",
        key: "data-memory",
        get: |c| int(c.limits.data_memory),
    },
    Setting {
        block: "limits",
        key: "idle-timeout",
        get: |c| Value::Duration(c.limits.idle_timeout),
    },
    Setting {
        block: "limits",
        key: "data-timeout",
        get: |c| Value::Duration(c.limits.data_timeout),
    },
    Setting {
        block: "limits",
        key: "error-limit",
        get: |c| int(c.limits.error_limit),
    },
    Setting {
        block: "limits",
        key: "connections",
        get: |c| int(c.limits.connections),
    },
    Setting {
        block: "limits",
        key: "connections-per-ip",
        get: |c| int(c.limits.connections_per_ip),
    },
    Setting {
        block: "limits",
        key: "min-free-space",
        get: |c| int(c.limits.min_free_space),
    },
    Setting {
        block: "limits",
        key: "hop-count",
        get: |c| int(c.limits.hop_count),
    },
    Setting {
        block: "limits",
        key: "tls-handshake-timeout",
        get: |c| Value::Duration(c.limits.tls_handshake_timeout),
    },
    Setting {
        block: "rate-limits",
        key: "connections",
        get: |c| rate(c.rate_limits.connections),
    },
    Setting {
        block: "rate-limits",
        key: "messages",
        get: |c| rate(c.rate_limits.messages),
    },
    Setting {
        block: "rate-limits",
        key: "recipients",
        get: |c| rate(c.rate_limits.recipients),
    },
    Setting {
        block: "rate-limits",
        key: "auth",
        get: |c| rate(c.rate_limits.auth),
    },
    Setting {
        block: "rate-limits",
        key: "auth-failures",
        get: |c| rate(c.rate_limits.auth_failures),
    },
    Setting {
        block: "rate-limits",
        key: "auth-failures-per-user",
        get: |c| rate(c.rate_limits.auth_failures_per_user),
    },
    Setting {
        block: "rate-limits",
        key: "ipv6-prefix",
        get: |c| int(c.rate_limits.ipv6_prefix),
    },
    Setting {
        block: "rate-limits",
        key: "exempt",
        get: |c| Value::List(c.rate_limits.exempt.clone()),
    },
    Setting {
        block: "reload",
        key: "watch",
        // `watch #false` is the default, and can be written
        get: |c| c.reload.watch.map_or(Value::Bool(false), Value::Duration),
    },
    Setting {
        block: "reload",
        key: "require-tests",
        get: |c| {
            Value::List(
                c.reload
                    .require_tests
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
        },
    },
    Setting {
        block: "delivery",
        key: "backoff-min",
        get: |c| Value::Duration(c.delivery.backoff_min),
    },
    Setting {
        block: "delivery",
        key: "backoff-max",
        get: |c| Value::Duration(c.delivery.backoff_max),
    },
    Setting {
        block: "delivery",
        key: "lifetime",
        get: |c| Value::Duration(c.delivery.lifetime),
    },
    Setting {
        block: "delivery",
        key: "delay-warning",
        get: |c| opt(c.delivery.delay_warning, Value::Duration),
    },
    Setting {
        block: "delivery",
        key: "concurrency",
        get: |c| int(c.delivery.concurrency),
    },
    Setting {
        block: "delivery",
        key: "connections",
        get: |c| int(c.delivery.connections),
    },
    Setting {
        block: "delivery",
        key: "recipients",
        get: |c| int(c.delivery.recipients),
    },
    Setting {
        block: "delivery",
        key: "fallback-relay",
        get: |c| {
            Value::List(
                c.delivery
                    .fallback
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            )
        },
    },
    Setting {
        block: "delivery",
        key: "tls",
        get: |c| text(c.delivery.tls.as_str()),
    },
    Setting {
        block: "delivery",
        key: "tls-ca-file",
        get: |c| opt(c.delivery.tls_ca_file.as_deref(), path),
    },
    Setting {
        block: "delivery",
        key: "auth-plaintext",
        get: |c| Value::Bool(c.delivery.auth_plaintext),
    },
    Setting {
        block: "delivery",
        key: "queue-only",
        get: |c| Value::Bool(c.delivery.queue_only),
    },
    Setting {
        block: "delivery",
        key: "dns-server",
        get: |c| opt(c.delivery.dns_server, |a| Value::Text(a.to_string())),
    },
    Setting {
        block: "delivery",
        key: "smtp-port",
        get: |c| int(c.delivery.smtp_port),
    },
    Setting {
        block: "delivery",
        key: "local-base",
        get: |c| path(&c.delivery.local_base),
    },
    Setting {
        block: "delivery",
        key: "local-recipients",
        get: |c| match &c.delivery.local_recipients {
            None => Value::List(vec!["any".to_owned()]),
            Some(sources) => Value::List(
                sources
                    .iter()
                    .map(|s| match s {
                        LocalRecipients::Passwd => "passwd".to_owned(),
                        LocalRecipients::Aliases => "aliases".to_owned(),
                        LocalRecipients::Table(name) => name.clone(),
                    })
                    .collect(),
            ),
        },
    },
    Setting {
        block: "delivery",
        key: "connect-timeout",
        get: |c| Value::Duration(c.delivery.connect_timeout),
    },
    Setting {
        block: "delivery",
        key: "command-timeout",
        get: |c| Value::Duration(c.delivery.command_timeout),
    },
    Setting {
        block: "delivery",
        key: "data-timeout",
        get: |c| Value::Duration(c.delivery.data_timeout),
    },
];

/// The setting named `block.key`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name() == name)
}

/// `config` with every setting at its default: what the parser builds when the settings
/// blocks say nothing but the required `hostname` and `spool` (whose defaults depend on
/// them: `origin`, `control-socket`, `local-base`; `data-memory` on `message-size`).
pub fn defaults(config: &Config) -> Config {
    let mut limits = Limits::default();
    limits.data_memory = Limits::default_data_memory(config.limits.message_size);
    Config {
        server: Server::new(config.server.hostname.clone(), config.server.spool.clone()),
        limits,
        rate_limits: RateLimits::default(),
        reload: ReloadSettings::default(),
        delivery: Delivery::defaults_for(&config.server.spool),
        ..config.clone()
    }
}

/// Whether a setting is required: it has no default.
fn required(s: &Setting) -> bool {
    s.block == "server" && matches!(s.key, "hostname" | "spool")
}

/// A setting's value in `config`, or its default (`Required` for those without one).
pub fn value(s: &Setting, config: &Config, default: bool) -> Value {
    if default && required(s) {
        Value::Required
    } else if default {
        (s.get)(&defaults(config))
    } else {
        (s.get)(config)
    }
}

/// Which settings [`render`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Every setting's value in this configuration (`postconf`).
    Effective,
    /// Every setting's default (`postconf -d`).
    Defaults,
    /// Only those that differ from their defaults (`postconf -n`), required ones included.
    Changed,
}

/// The settings blocks as KDL, four spaces in, one setting a line; a setting that is
/// off (nothing can be written for it) is a comment saying so, except in `Changed`.
pub fn render(config: &Config, which: Which) -> String {
    let defaults = defaults(config);
    let mut out = String::new();
    for block in BLOCKS {
        let mut lines = String::new();
        for s in SETTINGS.iter().filter(|s| s.block == block) {
            let value = match which {
                Which::Defaults if required(s) => Value::Required,
                Which::Defaults => (s.get)(&defaults),
                _ => (s.get)(config),
            };
            if which == Which::Changed && !required(s) && value == (s.get)(&defaults) {
                continue;
            }
            match (value.kdl(), &value) {
                (Some(args), _) => {
                    let _ = writeln!(lines, "    {} {args}", s.key);
                }
                (None, Value::Required) => {
                    let _ = writeln!(lines, "    // {}: required, no default", s.key);
                }
                (None, _) if which != Which::Changed => {
                    let _ = writeln!(lines, "    // {}: off", s.key);
                }
                (None, _) => {
                    let _ = writeln!(lines, "    // {}: off (the default is on)", s.key);
                }
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "{block} {{\n{lines}}}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "server { hostname \"MX.example.test\"; spool \"/var/spool/mtad\" }\nlisten \"mx\" address=\"127.0.0.1:25\"\n";

    #[test]
    fn every_key_the_parser_reads_is_a_setting_and_no_other() {
        let mut parsed: Vec<String> = crate::config::parse::setting_keys()
            .iter()
            .flat_map(|(block, keys)| keys.iter().map(move |k| format!("{block}.{k}")))
            .collect();
        let mut ours: Vec<String> = SETTINGS.iter().map(Setting::name).collect();
        parsed.sort();
        ours.sort();
        assert_eq!(ours, parsed);
        assert_eq!(
            BLOCKS.to_vec(),
            crate::config::parse::setting_keys()
                .map(|(b, _)| b)
                .to_vec()
        );
    }

    /// The defaults are the parser's: a configuration that writes nothing but what is
    /// required has every setting at its default, and nothing counts as changed.
    #[test]
    fn defaults_are_what_the_parser_builds() {
        let config = Config::parse("/etc/mtad/mtad.kdl", MINIMAL).unwrap();
        for s in SETTINGS {
            assert_eq!(
                value(s, &config, false),
                match value(s, &config, true) {
                    Value::Required => (s.get)(&config),
                    d => d,
                },
                "{}",
                s.name()
            );
        }
        assert_eq!(
            render(&config, Which::Changed),
            "server {\n    hostname \"MX.example.test\"\n    spool \"/var/spool/mtad\"\n}\n"
        );
        let defaults = render(&config, Which::Defaults);
        assert!(
            defaults.contains("    // hostname: required, no default\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    origin \"mx.example.test\"\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    message-size 10485760\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    auth-failures 10 per=\"15m\"\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    backoff-max \"1h 6m 40s\"\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    local-recipients \"passwd\" \"aliases\"\n"),
            "{defaults}"
        );
        assert!(
            defaults.contains("    // delay-warning: off\n"),
            "{defaults}"
        );
    }

    /// The effective settings, written back, are read as the same settings (a size in
    /// bytes, durations in humantime's words, rates, lists).
    #[test]
    fn the_effective_settings_read_back_the_same() {
        let text = format!(
            "{MINIMAL}networks \"trusted\" \"10.0.0.0/8\"\nlimits {{ message-size \"20M\"; idle-timeout \"90s\" }}\n\
             rate-limits {{ connections 30 per=\"1m\"; exempt \"trusted\" }}\n\
             reload {{ watch #true }}\n\
             delivery {{ lifetime \"2d 3h\"; fallback-relay \"smtp:[a.test]:587\" \"smtp:b.test\"; local-recipients \"any\"; queue-only #true }}\n"
        );
        let config = Config::parse("/etc/mtad/mtad.kdl", &text).unwrap();
        let changed = render(&config, Which::Changed);
        // data-memory follows message-size by default, so it has not changed
        assert!(
            changed
                .contains("limits {\n    message-size 20971520\n    idle-timeout \"1m 30s\"\n}\n"),
            "{changed}"
        );
        let effective = render(&config, Which::Effective);
        let again = format!(
            "listen \"mx\" address=\"127.0.0.1:25\"\nnetworks \"trusted\" \"10.0.0.0/8\"\n{effective}"
        );
        let reread = Config::parse("/etc/mtad/mtad.kdl", &again)
            .unwrap_or_else(|e| panic!("{}\n{again}", crate::config::render(&e)));
        for s in SETTINGS {
            assert_eq!((s.get)(&reread), (s.get)(&config), "{}", s.name());
        }
        assert_eq!(render(&reread, Which::Effective), effective);
    }
}
