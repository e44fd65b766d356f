//! Which TLS level a destination gets by configuration: the route's `tls=`, else the
//! `delivery { tls-policy-map }` table (Postfix's `smtp_tls_policy_maps`), else
//! `delivery { tls }` ([`choose`]). What DNS adds to that level for one MX host (DANE's
//! TLSA records) is decided after it, by `delivery::tls_policy`; both are the one decision
//! that delivery, `mtactl test-policy` and `mtactl tls-probe` share (docs/outbound-tls.md).
//!
//! The table is Postfix's: one `destination level [match=name:name...]` per line, the
//! destination as the transport names its next hop (`example.com`, `.example.com` for
//! its subdomains, `[relay.example.com]:587`, `[relay.example.com]`).

use std::collections::HashMap;
use std::fmt;

use super::route::{NextHop, TlsPolicy, Transport, credential_keys};
use crate::lookup::{Table, TableError};

/// A certificate name a `verify`, `secure` or DANE-TA connection accepts (Postfix's
/// `match=` words).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchName {
    /// The MX host's (or `[host]`'s) own name, as DNS gave it: `hostname`.
    Hostname,
    /// The next-hop domain (the recipient domain for MX delivery): `nexthop`.
    Nexthop,
    /// Any subdomain of the next-hop domain: `dot-nexthop`.
    DotNexthop,
    /// This name exactly (`mail.example.com`), or with a leading dot any subdomain of it
    /// (`.example.com`).
    Name(String),
}

impl MatchName {
    fn parse(word: &str) -> Result<MatchName, InvalidTlsRule> {
        let w = word.to_ascii_lowercase();
        Ok(match w.as_str() {
            "hostname" => MatchName::Hostname,
            "nexthop" => MatchName::Nexthop,
            "dot-nexthop" => MatchName::DotNexthop,
            _ => {
                let bare = w.strip_prefix('.').unwrap_or(&w);
                let valid = !bare.is_empty()
                    && bare.len() <= 253
                    && bare.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(InvalidTlsRule(format!(
                        "match=`{word}` is not hostname, nexthop, dot-nexthop nor a DNS name"
                    )));
                }
                MatchName::Name(w.trim_end_matches('.').to_owned())
            }
        })
    }

    fn as_str(&self) -> &str {
        match self {
            MatchName::Hostname => "hostname",
            MatchName::Nexthop => "nexthop",
            MatchName::DotNexthop => "dot-nexthop",
            MatchName::Name(n) => n,
        }
    }
}

/// A name a certificate must carry, with `hostname`/`nexthop` filled in for one host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertName {
    /// This DNS name (a certificate's wildcard may match it).
    Exact(String),
    /// Any name strictly under this domain (`.example.com`: `mx.example.com`, and a
    /// certificate for `*.example.com`).
    Under(String),
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertName::Exact(n) => f.write_str(n),
            CertName::Under(n) => write!(f, ".{n}"),
        }
    }
}

/// One destination's TLS level and the certificate names it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsRule {
    pub level: TlsPolicy,
    /// As written with `match=`; empty: the level's default ([`TlsRule::matches`]).
    pub match_names: Vec<MatchName>,
}

impl TlsRule {
    pub fn of(level: TlsPolicy) -> TlsRule {
        TlsRule {
            level,
            match_names: Vec::new(),
        }
    }

    /// A table value: `level [match=a:b...]`, the level in our words or Postfix's.
    /// `match=` is for the levels that check names (`verify`, `secure`, `dane`,
    /// `dane-only`, whose DANE-TA matches check them); Postfix's other attributes
    /// (`ciphers=`, `protocols=`, `exclude=`, `tafile=`) are refused: rustls speaks
    /// only TLS 1.2 and 1.3 with AEAD ciphers, and DANE's trust anchors come from DNS.
    pub fn parse(value: &str) -> Result<TlsRule, InvalidTlsRule> {
        let mut words = value.split_ascii_whitespace();
        let Some(level) = words.next() else {
            return Err(InvalidTlsRule("no TLS level".into()));
        };
        let level = TlsPolicy::parse(level).map_err(|e| InvalidTlsRule(e.to_string()))?;
        let mut rule = TlsRule::of(level);
        for w in words {
            let Some((key, names)) = w.split_once('=') else {
                return Err(InvalidTlsRule(format!(
                    "`{w}` is not `attribute=value` (only match= is known)"
                )));
            };
            match key.to_ascii_lowercase().as_str() {
                "match" => {
                    if !matches!(
                        level,
                        TlsPolicy::Verify
                            | TlsPolicy::Secure
                            | TlsPolicy::Dane
                            | TlsPolicy::DaneOnly
                    ) {
                        return Err(InvalidTlsRule(format!(
                            "match= has no effect with `{level}`: only verify, secure, dane and \
                             dane-only check names"
                        )));
                    }
                    if !rule.match_names.is_empty() {
                        return Err(InvalidTlsRule("match= given twice".into()));
                    }
                    for n in names.split(':') {
                        rule.match_names.push(MatchName::parse(n)?);
                    }
                }
                "ciphers" | "protocols" | "exclude" | "tafile" | "connection_reuse" => {
                    return Err(InvalidTlsRule(format!(
                        "`{key}=` is not supported: mtad's TLS (rustls) speaks only TLS 1.2 and 1.3 \
                         with AEAD ciphers, and DANE's trust anchors come from DNS"
                    )));
                }
                _ => {
                    return Err(InvalidTlsRule(format!(
                        "unknown attribute `{key}=` (only match= is known)"
                    )));
                }
            }
        }
        Ok(rule)
    }

    /// The names a certificate must carry (one of them) for host `host` of next hop
    /// `nexthop`: `match=` as written, else the level's default — `verify`: the host
    /// name; `secure`: the next-hop domain and its subdomains; DANE-TA (RFC 7672 3.2.2):
    /// the host name (the TLSA base domain) and the next-hop domain.
    pub fn cert_names(&self, nexthop: &str, host: &str) -> Vec<CertName> {
        let defaults: &[MatchName] = match self.level {
            TlsPolicy::Secure => &[MatchName::Nexthop, MatchName::DotNexthop],
            TlsPolicy::Dane | TlsPolicy::DaneOnly => &[MatchName::Hostname, MatchName::Nexthop],
            _ => &[MatchName::Hostname],
        };
        let names = if self.match_names.is_empty() {
            defaults
        } else {
            &self.match_names[..]
        };
        let clean = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
        let mut out: Vec<CertName> = Vec::new();
        for m in names {
            let n = match m {
                MatchName::Hostname => CertName::Exact(clean(host)),
                MatchName::Nexthop => CertName::Exact(clean(nexthop)),
                MatchName::DotNexthop => CertName::Under(clean(nexthop)),
                MatchName::Name(n) => match n.strip_prefix('.') {
                    Some(d) => CertName::Under(d.to_owned()),
                    None => CertName::Exact(n.clone()),
                },
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

impl fmt::Display for TlsRule {
    /// As a table value: `secure match=nexthop:dot-nexthop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level.as_str())?;
        for (i, m) in self.match_names.iter().enumerate() {
            f.write_str(if i == 0 { " match=" } else { ":" })?;
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

/// A TLS policy table value that cannot be used; the text says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTlsRule(String);

/// `delivery { tls-policy-map "FILE" }`: Postfix's `smtp_tls_policy_maps`, read and
/// checked whole when the configuration is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPolicyMap {
    /// Lowercase key → (rule, line in the file).
    rules: HashMap<String, (TlsRule, u32)>,
}

impl TlsPolicyMap {
    /// Reads the table (postmap's `key value` lines) and checks every value; errors
    /// point at their line.
    pub fn parse(text: &str) -> Result<TlsPolicyMap, Vec<TableError>> {
        let table: Table = crate::lookup::parse_map(text)?;
        let mut rules = HashMap::new();
        let mut errors = Vec::new();
        let keys: Vec<String> = table.map_entries().map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            let Some((value, line)) = table.lookup_with_line(&key) else {
                continue;
            };
            match TlsRule::parse(&value) {
                Ok(rule) => {
                    rules.insert(key, (rule, line));
                }
                Err(e) => errors.push(line_error(text, line, format!("`{key}`: {e}"))),
            }
        }
        if errors.is_empty() {
            Ok(TlsPolicyMap { rules })
        } else {
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }

    /// The entry for `transport`'s next hop: `[host]:port`, `[host]` for a host next
    /// hop; `domain:port`, `domain`, then `.parent` for each parent domain for an MX
    /// next hop (Postfix's order). With the key that matched and its line.
    pub fn lookup(&self, transport: &Transport) -> Option<(&str, &TlsRule, u32)> {
        let mut keys = credential_keys(transport);
        if let Transport::Smtp(NextHop::Mx { domain, .. }) = transport {
            let mut rest = domain.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                keys.push(format!(".{parent}"));
                rest = parent;
            }
        }
        keys.into_iter().find_map(|k| {
            self.rules
                .get_key_value(&k.to_ascii_lowercase())
                .map(|(k, (rule, line))| (k.as_str(), rule, *line))
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// An error covering line `line` (from 1) of `text`.
fn line_error(text: &str, line: u32, message: String) -> TableError {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
    TableError {
        line,
        column: 1,
        byte_span: start..end,
        message,
        help: None,
    }
}

/// Where a destination's TLS level came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RuleSource {
    /// The route rule's `tls=`.
    Route,
    /// The `tls-policy-map` entry with this key, at this line.
    Map { key: String, line: u32 },
    /// `delivery { tls }` (or its default, `opportunistic`).
    Default,
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::Route => f.write_str("route tls="),
            RuleSource::Map { key, line } => write!(f, "tls-policy-map {key} (line {line})"),
            RuleSource::Default => f.write_str("delivery tls"),
        }
    }
}

/// The configured level for one destination, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChosenRule {
    pub rule: TlsRule,
    pub source: RuleSource,
}

/// The configured TLS level of a delivery over `transport`: the route's `tls=` when it
/// has one (a route names its next hop explicitly, so it may raise or lower the level
/// for it), else the policy table's entry for the next hop, else `default`. The one
/// place this is decided; `delivery::tls_policy` adds what DNS says.
pub fn choose(
    route: Option<TlsPolicy>,
    map: Option<&TlsPolicyMap>,
    default: TlsPolicy,
    transport: &Transport,
) -> ChosenRule {
    if let Some(level) = route {
        return ChosenRule {
            rule: TlsRule::of(level),
            source: RuleSource::Route,
        };
    }
    if let Some((key, rule, line)) = map.and_then(|m| m.lookup(transport)) {
        return ChosenRule {
            rule: rule.clone(),
            source: RuleSource::Map {
                key: key.to_owned(),
                line,
            },
        };
    }
    ChosenRule {
        rule: TlsRule::of(default),
        source: RuleSource::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(domain: &str) -> Transport {
        Transport::Smtp(NextHop::Mx {
            domain: domain.into(),
            port: None,
        })
    }

    #[test]
    fn values_parse_in_our_words_and_postfix_s() {
        for (text, shown) in [
            ("may", "opportunistic"),
            ("encrypt", "required"),
            ("Verify", "verify"),
            (
                "secure match=nexthop:dot-nexthop",
                "secure match=nexthop:dot-nexthop",
            ),
            ("dane-only", "dane-only"),
            (
                "verify match=.Example.COM:mx.example.com",
                "verify match=.example.com:mx.example.com",
            ),
        ] {
            assert_eq!(TlsRule::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for (text, says) in [
            ("", "no TLS level"),
            ("fingerprint", "unknown TLS policy `fingerprint`"),
            (
                "may match=hostname",
                "match= has no effect with `opportunistic`",
            ),
            ("secure match=", "is not hostname, nexthop"),
            ("secure match=a..b", "is not hostname, nexthop"),
            ("secure ciphers=high", "`ciphers=` is not supported"),
            ("secure foo", "`foo` is not `attribute=value`"),
            ("secure match=hostname match=nexthop", "match= given twice"),
        ] {
            let e = TlsRule::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn names_follow_the_level_unless_match_says() {
        let names = |rule: &str| {
            TlsRule::parse(rule)
                .unwrap()
                .cert_names("Example.com.", "MX1.example.net")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("verify"), ["mx1.example.net"]);
        assert_eq!(names("secure"), ["example.com", ".example.com"]);
        assert_eq!(names("dane"), ["mx1.example.net", "example.com"]);
        assert_eq!(
            names("secure match=hostname:.example.org:nexthop"),
            ["mx1.example.net", ".example.org", "example.com"]
        );
    }

    #[test]
    fn the_route_wins_then_the_table_by_postfix_s_keys_then_the_default() {
        let text = "# comment\nexample.com secure\n.example.com dane\n[relay.test]:587 encrypt\n[relay.test] verify\n";
        let map = TlsPolicyMap::parse(text).unwrap();
        assert_eq!(map.len(), 4);
        let level = |route, t: &Transport| {
            let c = choose(route, Some(&map), TlsPolicy::Opportunistic, t);
            (c.rule.level, c.source.to_string())
        };
        assert_eq!(
            level(None, &mx("example.com")),
            (
                TlsPolicy::Secure,
                "tls-policy-map example.com (line 2)".into()
            )
        );
        assert_eq!(
            level(None, &mx("a.b.example.com")),
            (
                TlsPolicy::Dane,
                "tls-policy-map .example.com (line 3)".into()
            )
        );
        assert_eq!(
            level(None, &mx("example.org")),
            (TlsPolicy::Opportunistic, "delivery tls".into())
        );
        assert_eq!(
            level(Some(TlsPolicy::None), &mx("example.com")),
            (TlsPolicy::None, "route tls=".into())
        );
        let host = |port| {
            Transport::Smtp(NextHop::Host {
                host: "relay.test".into(),
                port,
            })
        };
        assert_eq!(level(None, &host(Some(587))).0, TlsPolicy::Required);
        assert_eq!(level(None, &host(Some(25))).0, TlsPolicy::Verify);
        assert_eq!(level(None, &host(None)).0, TlsPolicy::Verify);
    }

    #[test]
    fn bad_values_are_reported_at_their_line() {
        let errs = TlsPolicyMap::parse("a.test may\nb.test tight\nc.test secure match=hostname\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
        assert!(
            errs[0]
                .message
                .starts_with("`b.test`: unknown TLS policy `tight`")
        );
        assert_eq!(errs[0].byte_span, 11..23);
    }
}
