//! The conditions of rules (`client=`, `sender-domain=`, `spf=`...).

use std::net::IpAddr;

use ipnet::IpNet;
use kdl::KdlEntry;

use super::{Parser, Sets, kind, suggest};
use crate::config::{AuthCheck, ClientRef, Condition, Pattern, Stage};
pub(super) const CONDITIONS: &[&str] = &[
    "client",
    "listener",
    "helo",
    "helo-matches",
    "tls",
    "authenticated",
    "auth-user",
    "sender",
    "sender-domain",
    "sender-matches",
    "sender-login",
    "rcpt",
    "rcpt-domain",
    "rcpt-matches",
    "size-over",
    "header-matches",
    "spf",
    "spf-helo",
    "dkim",
    "dmarc",
    "dmarc-policy",
    "arc",
    "iprev",
    "dnsbl",
];
/// Every condition with `not-` in front.
pub(super) const NEGATED_CONDITIONS: &[&str] = &[
    "not-client",
    "not-listener",
    "not-helo",
    "not-helo-matches",
    "not-tls",
    "not-authenticated",
    "not-auth-user",
    "not-sender",
    "not-sender-domain",
    "not-sender-matches",
    "not-sender-login",
    "not-rcpt",
    "not-rcpt-domain",
    "not-rcpt-matches",
    "not-size-over",
    "not-header-matches",
    "not-spf",
    "not-spf-helo",
    "not-dkim",
    "not-dmarc",
    "not-dmarc-policy",
    "not-arc",
    "not-iprev",
    "not-dnsbl",
];

pub(super) fn availability_help(test: &Condition) -> String {
    let stages: Vec<&str> = Stage::ALL
        .into_iter()
        .filter(|s| test.available_at(*s))
        .map(Stage::as_str)
        .collect();
    format!("`{}` can be used in: {}", test.name(), stages.join(", "))
}

impl Parser {
    pub(super) fn condition(
        &mut self,
        key: &str,
        entry: &KdlEntry,
        sets: &Sets,
    ) -> Option<Condition> {
        match key {
            "tls" | "authenticated" => {
                let Some(b) = entry.value().as_bool() else {
                    self.error(
                        entry.span(),
                        format!(
                            "`{key}` must be #true or #false, not {}",
                            kind(entry.value())
                        ),
                        "expected a boolean",
                    );
                    return None;
                };
                return Some(if key == "tls" {
                    Condition::Tls(b)
                } else {
                    Condition::Authenticated(b)
                });
            }
            "size-over" => {
                return self
                    .size(entry, "`size-over`", 0, u64::MAX)
                    .map(Condition::SizeOver);
            }
            _ => {}
        }
        let value = self.string(entry, &format!("`{key}`"))?;
        if let Some(check) = AuthCheck::ALL.into_iter().find(|c| c.name() == key) {
            let results = self.one_or_more(value, entry, key)?;
            self.auth_refs.push((entry.span(), self.cur.clone()));
            return Some(Condition::Auth(check, results));
        }
        if key == "dmarc-policy" {
            let policies = self.one_or_more(value, entry, key)?;
            self.auth_refs.push((entry.span(), self.cur.clone()));
            return Some(Condition::DmarcPolicy(policies));
        }
        match key {
            "listener" => Some(Condition::Listener(value.to_owned())),
            "helo" => Some(Condition::Helo(value.to_ascii_lowercase())),
            "auth-user" => Some(Condition::AuthUser(value.to_owned())),
            "sender" => Some(Condition::Sender(value.to_ascii_lowercase())),
            "rcpt" => Some(Condition::Rcpt(value.to_ascii_lowercase())),
            "helo-matches" | "sender-matches" | "rcpt-matches" | "header-matches" => {
                let pattern = match regex::RegexBuilder::new(value)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(re) => Pattern(re),
                    Err(e) => {
                        self.error(
                            entry.span(),
                            format!("invalid regular expression: {e}"),
                            "invalid regex",
                        );
                        return None;
                    }
                };
                Some(match key {
                    "helo-matches" => Condition::HeloMatches(pattern),
                    "sender-matches" => Condition::SenderMatches(pattern),
                    "rcpt-matches" => Condition::RcptMatches(pattern),
                    _ => Condition::HeaderMatches(pattern),
                })
            }
            "dnsbl" => self
                .service_ref(
                    entry,
                    &sets.dnsbls,
                    "dnsbl",
                    "\"zone.example=127.0.0.[2..11]\"",
                )
                .map(Condition::Dnsbl),
            "client" => self
                .client_condition(value, entry, sets)
                .map(Condition::Client),
            "sender-login" => self
                .known_table(value, entry, sets, "sender_login")
                .then(|| Condition::SenderLogin(value.to_owned())),
            "rcpt-domain" | "sender-domain" => {
                if sets.domains.contains_key(value) {
                    return Some(if key == "rcpt-domain" {
                        Condition::RcptDomain(value.to_owned())
                    } else {
                        Condition::SenderDomain(value.to_owned())
                    });
                }
                let help =
                    suggest(value, sets.domains.keys().map(String::as_str)).unwrap_or_else(|| {
                        "define it with `domains NAME \"example.test\"...`".to_owned()
                    });
                self.error(
                    entry.span(),
                    format!("undefined domain set `{value}`"),
                    "undefined domain set",
                )
                .help = Some(help);
                None
            }
            _ => unreachable!("checked against CONDITIONS"),
        }
    }

    /// Whether `name` is a defined `table`; if not, an error at `entry` (with a
    /// suggestion, or how to define one from `example_file`).
    pub(super) fn known_table(
        &mut self,
        name: &str,
        entry: &KdlEntry,
        sets: &Sets,
        example_file: &str,
    ) -> bool {
        if sets.tables.contains_key(name) {
            return true;
        }
        self.undefined_table(
            entry,
            name,
            &sets.tables,
            &format!("table NAME file=\"{example_file}\""),
        );
        false
    }

    /// `"fail"`, `"fail softfail"` or `"fail,softfail"`: the values an auth condition
    /// accepts, each checked.
    fn one_or_more<T: std::str::FromStr<Err = String>>(
        &mut self,
        value: &str,
        entry: &KdlEntry,
        key: &str,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        for word in value.split([' ', ',']).filter(|w| !w.is_empty()) {
            match word.parse() {
                Ok(v) => out.push(v),
                Err(e) => {
                    self.error(entry.span(), format!("`{key}`: {e}"), "unknown value");
                    return None;
                }
            }
        }
        if out.is_empty() {
            self.error(entry.span(), format!("`{key}` needs a value"), "empty");
            return None;
        }
        Some(out)
    }

    pub(super) fn client_condition(
        &mut self,
        value: &str,
        entry: &KdlEntry,
        sets: &Sets,
    ) -> Option<ClientRef> {
        if sets.networks.contains_key(value) {
            return Some(ClientRef::Set(value.to_owned()));
        }
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Some(ClientRef::Net(IpNet::from(ip)));
        }
        if let Ok(net) = value.parse::<IpNet>() {
            if net.trunc() != net {
                self.error(
                    entry.span(),
                    format!("network `{value}` has host bits set"),
                    "host bits set",
                )
                .help = Some(format!("did you mean `{}`?", net.trunc()));
                return None;
            }
            return Some(ClientRef::Net(net));
        }
        let help = suggest(value, sets.networks.keys().map(String::as_str)).unwrap_or_else(|| {
            "define it with `networks NAME \"CIDR\"...`, or write a CIDR or IP address".to_owned()
        });
        self.error(
            entry.span(),
            format!("`{value}` is neither a defined network set nor a CIDR or IP address"),
            "undefined network set",
        )
        .help = Some(help);
        None
    }
}
