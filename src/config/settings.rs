//! The configuration's settings by name, for `mtactl config` (Postfix's `postconf`):
//! every key of the settings blocks (`server`, `limits`, `rate-limits`, `reload`,
//! `log`, `delivery`) as `block.key`, read from a [`Config`], the one the daemon builds, and
//! written back as KDL. The defaults are what the parser puts in a [`Config`] when a
//! setting is not written ([`defaults`]), so `mtactl config` cannot disagree with the
//! daemon about either.

use std::fmt::Write as _;
use std::time::Duration;

use super::{
    Config, Delivery, Limits, LocalRecipients, LogSettings, RateLimits, ReloadSettings, Server,
};

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

/// `s` as a quoted KDL v2 string (always quoted, where KDL would allow a bare word):
/// `"` and `\` escaped, and line ends, control characters and the code points KDL
/// does not allow written (bidirectional controls, line separators, BOM) as escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2028}' | '\u{2029}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') =>
            {
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
pub const BLOCKS: [&str; 8] = [
    "server",
    "limits",
    "rate-limits",
    "reload",
    "log",
    "decision-log",
    "delivery",
    "cluster",
];

/// A `cluster` setting: off, every one of them, without a `cluster` block (the block
/// is then left out: a node alone).
fn cluster(c: &Config, f: impl FnOnce(&super::cluster::Cluster) -> Value) -> Value {
    c.cluster.as_ref().map_or(Value::Off, f)
}

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

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> Value {
    Value::List(items.map(|i| i.to_string()).collect())
}
/// `local-recipients`: its sources, or `"any"` for none.
fn local_recipients(c: &Config) -> Value {
    match &c.delivery.local_recipients {
        None => Value::List(vec!["any".to_owned()]),
        Some(sources) => list(sources.iter().map(|s| match s {
            LocalRecipients::Passwd => "passwd",
            LocalRecipients::Aliases => "aliases",
            LocalRecipients::Table(name) => name.as_str(),
        })),
    }
}

/// A row of [`SETTINGS`].
const fn s(block: &'static str, key: &'static str, get: fn(&Config) -> Value) -> Setting {
    Setting { block, key, get }
}

/// Every setting, block by block, keys in the order the documentation lists them.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    s("server", "hostname", |c| text(&c.server.hostname)),
    s("server", "spool", |c| path(&c.server.spool)),
    s("server", "banner", |c| text(&c.server.banner)),
    s("server", "origin", |c| text(&c.server.origin)),
    s("server", "shutdown-timeout", |c| Value::Duration(c.server.shutdown_timeout)),
    s("server", "control-socket", |c| path(&c.server.control_socket)),
    s("server", "content-filter", |c| opt(c.server.content_filter.as_deref(), text)),
    s("server", "tls-certificate", |c| opt(c.server.tls.as_ref(), |t| path(&t.certificate))),
    s("server", "tls-key", |c| opt(c.server.tls.as_ref(), |t| path(&t.key))),
    s("server", "metrics", |c| opt(c.server.metrics, |a| Value::Text(a.to_string()))),
    s("server", "user", |c| opt(c.server.user.as_deref(), text)),
    s("limits", "message-size", |c| int(c.limits.message_size)),
    s("limits", "recipients", |c| int(c.limits.recipients)),
    s("limits", "line-length", |c| int(c.limits.line_length)),
    s("limits", "text-line-length", |c| int(c.limits.text_line_length)),
    s("limits", "header-size", |c| int(c.limits.header_size)),
    s("limits", "junk-commands", |c| int(c.limits.junk_commands)),
    s("limits", "data-memory", |c| int(c.limits.data_memory)),
    s("limits", "idle-timeout", |c| Value::Duration(c.limits.idle_timeout)),
    s("limits", "data-timeout", |c| Value::Duration(c.limits.data_timeout)),
    s("limits", "error-limit", |c| int(c.limits.error_limit)),
    s("limits", "connections", |c| int(c.limits.connections)),
    s("limits", "connections-per-ip", |c| int(c.limits.connections_per_ip)),
    s("limits", "min-free-space", |c| int(c.limits.min_free_space)),
    s("limits", "hop-count", |c| int(c.limits.hop_count)),
    s("limits", "tls-handshake-timeout", |c| Value::Duration(c.limits.tls_handshake_timeout)),
    s("rate-limits", "connections", |c| rate(c.rate_limits.connections)),
    s("rate-limits", "messages", |c| rate(c.rate_limits.messages)),
    s("rate-limits", "recipients", |c| rate(c.rate_limits.recipients)),
    s("rate-limits", "auth", |c| rate(c.rate_limits.auth)),
    s("rate-limits", "auth-failures", |c| rate(c.rate_limits.auth_failures)),
    s("rate-limits", "auth-failures-per-user", |c| rate(c.rate_limits.auth_failures_per_user)),
    s("rate-limits", "ipv6-prefix", |c| int(c.rate_limits.ipv6_prefix)),
    s("rate-limits", "exempt", |c| Value::List(c.rate_limits.exempt.clone())),
    s("reload", "watch", |c| c.reload.watch.map_or(Value::Bool(false), Value::Duration)),
    s("reload", "require-tests", |c| list(c.reload.require_tests.iter().map(|p| p.display()))),
    s("reload", "replay", |c| opt(c.reload.replay.as_ref(), |r| list(r.files.iter().map(|p| p.display())))),
    s("log", "output", |c| text(c.log.output.as_str())),
    // stderr's format only: with another output, `format` is an error
    s("log", "format", |c| if c.log.output.may_be_stderr() { text(c.log.format.as_str()) } else { Value::Off }),
    s("log", "syslog-name", |c| text(&c.log.syslog_name)),
    s("log", "syslog-facility", |c| text(c.log.facility.name())),
    s("log", "syslog-socket", |c| path(&c.log.syslog_socket)),
    s("log", "journal-socket", |c| path(&c.log.journal_socket)),
    s("decision-log", "output", |c| text(c.decision_log.output.as_str())),
    s("decision-log", "path", |c| path(&c.decision_log.path)),
    s("decision-log", "max-size", |c| int(c.decision_log.max_size)),
    s("decision-log", "keep", |c| int(c.decision_log.keep)),
    s("decision-log", "body", |c| int(c.decision_log.body)),
    s("delivery", "backoff-min", |c| Value::Duration(c.delivery.backoff_min)),
    s("delivery", "backoff-max", |c| Value::Duration(c.delivery.backoff_max)),
    s("delivery", "lifetime", |c| Value::Duration(c.delivery.lifetime)),
    s("delivery", "delay-warning", |c| opt(c.delivery.delay_warning, Value::Duration)),
    s("delivery", "concurrency", |c| int(c.delivery.concurrency)),
    s("delivery", "connections", |c| int(c.delivery.connections)),
    s("delivery", "recipients", |c| int(c.delivery.recipients)),
    s("delivery", "fallback-relay", |c| list(c.delivery.fallback.iter())),
    s("delivery", "tls", |c| text(c.delivery.tls.as_str())),
    s("delivery", "tls-ca-file", |c| opt(c.delivery.tls_ca_file.as_deref(), path)),
    s("delivery", "mta-sts", |c| Value::Bool(c.delivery.mta_sts)),
    s("delivery", "mta-sts-port", |c| int(c.delivery.mta_sts_port)),
    s("delivery", "tls-rpt", |c| Value::Bool(c.delivery.tls_rpt)),
    s("delivery", "tls-rpt-from", |c| opt(c.delivery.tls_rpt_from.as_deref(), text)),
    s("delivery", "tls-rpt-organization", |c| opt(c.delivery.tls_rpt_organization.as_deref(), text)),
    s("delivery", "tls-rpt-contact", |c| opt(c.delivery.tls_rpt_contact.as_deref(), text)),
    s("delivery", "tls-rpt-interval", |c| Value::Duration(c.delivery.tls_rpt_interval)),
    s("delivery", "tls-rpt-max-domains", |c| int(c.delivery.tls_rpt_max_domains)),
    s("delivery", "tls-rpt-max-failures", |c| int(c.delivery.tls_rpt_max_failures)),
    s("delivery", "dnssec-trust-anchors", |c| opt(c.delivery.dnssec_trust_anchors.as_deref(), path)),
    s("delivery", "tls-policy-map", |c| opt(c.delivery.tls_policy_map.as_ref(), |(p, _)| path(p))),
    s("delivery", "auth-plaintext", |c| Value::Bool(c.delivery.auth_plaintext)),
    s("delivery", "queue-only", |c| Value::Bool(c.delivery.queue_only)),
    s("delivery", "dns-server", |c| opt(c.delivery.dns_server, |a| Value::Text(a.to_string()))),
    s("delivery", "smtp-port", |c| int(c.delivery.smtp_port)),
    s("delivery", "local-base", |c| path(&c.delivery.local_base)),
    s("delivery", "local-recipients", local_recipients),
    s("delivery", "connect-timeout", |c| Value::Duration(c.delivery.connect_timeout)),
    s("delivery", "command-timeout", |c| Value::Duration(c.delivery.command_timeout)),
    s("delivery", "data-timeout", |c| Value::Duration(c.delivery.data_timeout)),
    // the password is never shown
    s("cluster", "redis", |c| cluster(c, |k| Value::Text(k.redis_shown()))),
    s("cluster", "node", |c| cluster(c, |k| text(&k.node))),
    s("cluster", "timeout", |c| cluster(c, |k| Value::Duration(k.timeout))),
    s("cluster", "key-prefix", |c| cluster(c, |k| text(&k.key_prefix))),
    s("cluster", "fallback", |c| cluster(c, |k| text(k.fallback.as_str()))),
    s("cluster", "lease", |c| cluster(c, |k| Value::Duration(k.lease))),
    s("cluster", "heartbeat", |c| cluster(c, |k| Value::Duration(k.heartbeat))),
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
        log: LogSettings::default(),
        decision_log: super::decision_log::DecisionLog::defaults_for(&config.server.spool),
        delivery: Delivery::defaults_for(&config.server.spool),
        // the block's presence and its Redis are the configuration's: no default
        cluster: config.cluster.as_ref().map(|c| super::cluster::Cluster {
            redis: c.redis.clone(),
            node: config.server.hostname.clone(),
            timeout: super::cluster::Cluster::DEFAULT_TIMEOUT,
            key_prefix: super::cluster::Cluster::DEFAULT_PREFIX.to_owned(),
            fallback: super::cluster::Fallback::Local,
            lease: super::cluster::Cluster::DEFAULT_LEASE,
            heartbeat: super::cluster::Cluster::DEFAULT_HEARTBEAT,
        }),
        ..config.clone()
    }
}

/// Whether a setting is required: it has no default.
fn required(s: &Setting) -> bool {
    (s.block == "server" && matches!(s.key, "hostname" | "spool"))
        || (s.block == "cluster" && s.key == "redis")
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
        let optional_and_absent = block == "cluster" && config.cluster.is_none();
        if optional_and_absent && which != Which::Changed {
            let _ = writeln!(out, "// {block}: off (no `{block}` block)");
        } else if !lines.is_empty() && !optional_and_absent {
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
             log {{ output \"syslog\"; syslog-facility \"local1\" }}\n\
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
