//! Outside services that rules consult: policy servers (Postfix's
//! `check_policy_service`, SMTPD_POLICY_README) and DNS block/allowlists (Postfix's
//! `reject_rbl_client`, postscreen's weighted `postscreen_dnsbl_sites`).
//!
//! ```kdl
//! policy-service "postgrey" address="inet:127.0.0.1:10023" timeout="100s" \
//!     max-idle="300s" max-ttl="1000s" default-action="451 4.3.5 Server configuration problem"
//! dnsbl "spam" "zen.example=127.0.0.[2..11]*3" "allow.example*-2" threshold=3
//! stage "rcpt" {
//!     check-policy-service "postgrey"
//!     reject-dnsbl "spam"
//! }
//! ```
//!
//! Here are the settings as written (parsed and checked); [`crate::policy`] asks the
//! services. The site syntax of postscreen is parsed by [`DnsblSite::parse`].

use std::path::PathBuf;
use std::time::Duration;

use super::Reply;

/// Where a policy server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `inet:host:port` (or `inet:[v6]:port`); a bare `host:port` is inet too, as in
    /// Postfix.
    Inet { host: String, port: u16 },
    /// `unix:/path`.
    Unix(PathBuf),
}

impl Endpoint {
    /// Postfix's forms: `inet:host:port`, `inet:[::1]:port`, `unix:/path`, `host:port`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path".into());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = text.strip_prefix("inet:").unwrap_or(text);
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, port) = v6
                    .split_once("]:")
                    .ok_or_else(|| format!("`{text}`: expected inet:[address]:port"))?;
                (host, port)
            }
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| format!("`{text}`: expected inet:host:port or unix:/path"))?,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{text}`: no host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{text}`: `{port}` is not a port number"))?;
        Ok(Endpoint::Inet {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            Endpoint::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `policy-service NAME address=...`: a policy server, with Postfix's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyService {
    pub name: String,
    pub endpoint: Endpoint,
    /// Per request (connect, write, read): `smtpd_policy_service_timeout`, 100 s.
    pub timeout: Duration,
    /// A kept connection unused this long is closed: `smtpd_policy_service_max_idle`,
    /// 300 s.
    pub max_idle: Duration,
    /// A kept connection is closed after this long, used or not:
    /// `smtpd_policy_service_max_ttl`, 1000 s.
    pub max_ttl: Duration,
    /// How many times a request is tried (a new connection each time) before the
    /// default action: `smtpd_policy_service_try_limit`, 2.
    pub try_limit: u32,
    /// The action when the server cannot be asked or answers nonsense:
    /// `smtpd_policy_service_default_action`, `451 4.3.5 Server configuration problem`.
    pub default_action: String,
    /// Sent as `policy_context` (`smtpd_policy_service_policy_context`), empty by default.
    pub context: String,
}

impl PolicyService {
    pub const DEFAULT_ACTION: &'static str = "451 4.3.5 Server configuration problem";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(100);
    pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(1000);
    pub const DEFAULT_TRY_LIMIT: u32 = 2;
}

/// What a DNS list is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DnsblKey {
    /// The client's address, reversed (`2.0.0.127.zone`; IPv6 by nibbles): DNSBL.
    #[default]
    Client,
    /// The envelope sender's domain (`domain.zone`): Postfix's
    /// `reject_rhsbl_sender`. Not asked for the null sender.
    SenderDomain,
    /// The HELO name (`helo.zone`): `reject_rhsbl_helo`.
    Helo,
}

impl DnsblKey {
    pub fn parse(text: &str) -> Option<DnsblKey> {
        match text {
            "client" => Some(DnsblKey::Client),
            "sender-domain" => Some(DnsblKey::SenderDomain),
            "helo" => Some(DnsblKey::Helo),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DnsblKey::Client => "client",
            DnsblKey::SenderDomain => "sender-domain",
            DnsblKey::Helo => "helo",
        }
    }
}

/// `dnsbl NAME "site"... threshold=N`: weighted lists, scored as postscreen does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnsbl {
    pub name: String,
    pub sites: Vec<DnsblSite>,
    /// Listed when the score is at least this (`postscreen_dnsbl_threshold`, 1).
    pub threshold: i64,
    /// For all the queries of one check, in parallel (`postscreen_dnsbl_timeout`, 10 s).
    pub timeout: Duration,
    pub key: DnsblKey,
}

impl Dnsbl {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// One `zone[=filter][*weight]` of postscreen's `postscreen_dnsbl_sites`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsblSite {
    /// Lowercase, no trailing dot.
    pub zone: String,
    /// Which A records count; `None`: any.
    pub filter: Option<AddressFilter>,
    /// Added to the score when the site lists the key (negative: an allowlist).
    pub weight: i64,
}

/// Longest `[...]` list in an address filter, and largest weight: bounds on what a
/// configuration may write, so that scoring cannot overflow.
const MAX_FILTER_ITEMS: usize = 64;
const MAX_WEIGHT: i64 = 1_000_000;

/// postscreen's reply filter: `127.0.0.[2..11]`, `127.0.0.[1;3;5..7]`, `127.0.0.2`:
/// four octets, each a number or a bracketed list of numbers and `low..high` ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressFilter {
    octets: [Vec<(u8, u8)>; 4],
    text: String,
}

impl AddressFilter {
    pub fn parse(text: &str) -> Result<AddressFilter, String> {
        let bad = |why: &str| format!("`{text}`: {why}");
        let mut octets: [Vec<(u8, u8)>; 4] = Default::default();
        let mut rest = text;
        for (i, slot) in octets.iter_mut().enumerate() {
            let (part, after) = if let Some(inner) = rest.strip_prefix('[') {
                let end = inner.find(']').ok_or_else(|| bad("a `[` is not closed"))?;
                (&inner[..end], &inner[end + 1..])
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            let items: Vec<&str> = part.split(';').collect();
            if items.len() > MAX_FILTER_ITEMS {
                return Err(bad("too many values in one octet"));
            }
            for item in items {
                let number = |s: &str| -> Result<u8, String> {
                    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad(&format!("`{s}` is not a number from 0 to 255")));
                    }
                    s.parse()
                        .map_err(|_| bad(&format!("`{s}` is not a number from 0 to 255")))
                };
                let range = match item.split_once("..") {
                    Some((lo, hi)) => (number(lo)?, number(hi)?),
                    None => {
                        let n = number(item)?;
                        (n, n)
                    }
                };
                if range.0 > range.1 {
                    return Err(bad(&format!("the range `{item}` is empty")));
                }
                slot.push(range);
            }
            rest = after;
            if i < 3 {
                rest = rest
                    .strip_prefix('.')
                    .ok_or_else(|| bad("expected four octets, like 127.0.0.[2..11]"))?;
            }
        }
        if !rest.is_empty() {
            return Err(bad("expected four octets, like 127.0.0.[2..11]"));
        }
        Ok(AddressFilter {
            octets,
            text: text.to_owned(),
        })
    }

    pub fn matches(&self, addr: std::net::Ipv4Addr) -> bool {
        addr.octets()
            .iter()
            .zip(&self.octets)
            .all(|(o, ranges)| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&o)))
    }
}

impl std::fmt::Display for AddressFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl DnsblSite {
    /// `zone`, `zone=filter`, `zone*weight`, `zone=filter*weight` (postscreen's syntax;
    /// the weight may be negative: `list.dnswl.example*-2`).
    pub fn parse(text: &str) -> Result<DnsblSite, String> {
        let (rest, weight) = match text.rsplit_once('*') {
            Some((rest, w)) => {
                let weight: i64 = w
                    .parse()
                    .map_err(|_| format!("`{text}`: the weight `{w}` is not an integer"))?;
                if weight.abs() > MAX_WEIGHT {
                    return Err(format!("`{text}`: the weight is out of range"));
                }
                (rest, weight)
            }
            None => (text, 1),
        };
        let (zone, filter) = match rest.split_once('=') {
            Some((zone, filter)) => (zone, Some(AddressFilter::parse(filter)?)),
            None => (rest, None),
        };
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if zone.len() > 200 || !zone.split('.').all(label_ok) {
            return Err(format!("`{text}`: `{zone}` is not a DNS zone name"));
        }
        Ok(DnsblSite {
            zone,
            filter,
            weight,
        })
    }
}

/// An access(5) action, as a policy server answers it (`action=...`) or a
/// `default-action` writes it, with Postfix's meaning (`check_table_result` in
/// smtpd_check.c). Verbs are case-insensitive; a text after the verb may begin with
/// an enhanced status code (`REJECT 5.7.0 go away`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// `OK`, `RELAY`, or all digits: accept (this rule decides).
    Ok,
    /// `DUNNO`: no decision, the next rule runs.
    Dunno,
    /// `REJECT`, `DEFER`, `4xx text`, `5xx text`: refuse with this reply (the code's
    /// class decides between reject and defer). The text is the server's, without
    /// Postfix's `<name>: Recipient address rejected: ` prefix.
    Refuse {
        code: u16,
        dsn: [u8; 3],
        text: String,
    },
    /// `DEFER_IF_PERMIT text`: defer (450) if a later rule accepts.
    DeferIfPermit { dsn: [u8; 3], text: String },
    /// `DEFER_IF_REJECT text`: defer (450) instead of a later 5xx refusal.
    DeferIfReject { dsn: [u8; 3], text: String },
    /// `PREPEND Header: value`: add this header to the message; no decision.
    Prepend(String),
    /// `HOLD [text]`: keep an accepted message on hold; no decision.
    Hold(String),
    /// `DISCARD [text]`: accept and drop the message (this rule decides).
    Discard(String),
    /// `INFO text` / `WARN text`: logged; no decision.
    Log(String),
    /// A verb Postfix knows and mtad does not apply (`FILTER`, `REDIRECT`, `BCC`,
    /// `HANGUP`, `DELAY`), or a restriction name: `451 4.3.5 Server configuration
    /// error`, never ignored.
    Unsupported(String),
}

/// Postfix's `access_map_reject_code` and `access_map_defer_code`.
pub const ACCESS_REJECT_CODE: u16 = 554;
pub const ACCESS_DEFER_CODE: u16 = 450;

impl Access {
    /// Reads an action. Anything Postfix would not take as one of the actions above
    /// (an unknown verb, `PREPEND` without a header, a code without text) is
    /// [`Access::Unsupported`], which refuses with a 451: a bad answer never accepts.
    pub fn parse(action: &str) -> Access {
        let action = action.trim_matches(|c: char| c == ' ' || c == '\t');
        let (verb, text) = match action.split_once([' ', '\t']) {
            Some((v, t)) => (v, t.trim_start_matches([' ', '\t'])),
            None => (action, ""),
        };
        let is = |name: &str| verb.eq_ignore_ascii_case(name);
        // `dsn_split`: a leading enhanced status code, else the default
        let split = |default: [u8; 3]| match text.split_once(' ') {
            Some((code, rest)) => match Reply::parse_enhanced(code) {
                Some(dsn) => (dsn, rest.to_owned()),
                None => (default, text.to_owned()),
            },
            None => match Reply::parse_enhanced(text) {
                Some(dsn) => (dsn, String::new()),
                None => (default, text.to_owned()),
            },
        };
        let or_denied = |t: String| {
            if t.is_empty() {
                "Access denied".to_owned()
            } else {
                t
            }
        };
        if is("DUNNO") {
            Access::Dunno
        } else if is("OK") || is("RELAY") || all_digits_but_a_code(verb, text) {
            Access::Ok
        } else if is("REJECT") || is("DEFER") {
            let (code, default) = if is("REJECT") {
                (ACCESS_REJECT_CODE, [5, 7, 1])
            } else {
                (ACCESS_DEFER_CODE, [4, 7, 1])
            };
            let (dsn, text) = split(default);
            Access::Refuse {
                code,
                dsn: class_of(code, dsn),
                text: or_denied(text),
            }
        } else if is("DEFER_IF_PERMIT") || is("DEFER_IF_REJECT") {
            let (dsn, text) = split([4, 7, 1]);
            let (dsn, text) = (class_of(ACCESS_DEFER_CODE, dsn), or_denied(text));
            if is("DEFER_IF_PERMIT") {
                Access::DeferIfPermit { dsn, text }
            } else {
                Access::DeferIfReject { dsn, text }
            }
        } else if is("PREPEND") {
            match text.split_once(':') {
                Some((name, _))
                    if !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
                {
                    Access::Prepend(text.to_owned())
                }
                _ => Access::Unsupported(format!("PREPEND without a header: {text:?}")),
            }
        } else if is("HOLD") {
            Access::Hold(text.to_owned())
        } else if is("DISCARD") {
            Access::Discard(text.to_owned())
        } else if is("INFO") || is("WARN") {
            Access::Log(text.to_owned())
        } else if verb.len() == 3
            && !text.is_empty()
            && matches!(verb.as_bytes()[0], b'4' | b'5')
            && verb.bytes().all(|b| b.is_ascii_digit())
        {
            let code: u16 = verb.parse().unwrap_or(451);
            let (dsn, text) = split([verb.as_bytes()[0] - b'0', 7, 1]);
            Access::Refuse {
                code,
                dsn: class_of(code, dsn),
                text,
            }
        } else {
            Access::Unsupported(verb.to_owned())
        }
    }
}

/// Postfix accepts an all-digit action (a time stamp some servers answer with); a
/// bare `4xx`/`5xx` (a refusal whose text went missing) is not taken as an accept.
fn all_digits_but_a_code(verb: &str, text: &str) -> bool {
    text.is_empty()
        && !verb.is_empty()
        && verb.bytes().all(|b| b.is_ascii_digit())
        && !(verb.len() == 3 && matches!(verb.as_bytes()[0], b'4' | b'5'))
}

/// The enhanced code with the reply code's class (Postfix forces it the same way).
fn class_of(code: u16, mut dsn: [u8; 3]) -> [u8; 3] {
    dsn[0] = (code / 100) as u8;
    dsn
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn postscreen_sites() {
        let s = DnsblSite::parse("zen.spamhaus.org=127.0.0.[2..11]*3").unwrap();
        assert_eq!(s.zone, "zen.spamhaus.org");
        assert_eq!(s.weight, 3);
        let f = s.filter.unwrap();
        assert!(f.matches(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(f.matches(Ipv4Addr::new(127, 0, 0, 11)));
        assert!(!f.matches(Ipv4Addr::new(127, 0, 0, 12)));
        assert!(!f.matches(Ipv4Addr::new(127, 0, 1, 2)));

        let s = DnsblSite::parse("List.DNSWL.org.*-2").unwrap();
        assert_eq!(
            (s.zone.as_str(), s.weight, s.filter),
            ("list.dnswl.org", -2, None)
        );

        let s = DnsblSite::parse("bl.example=127.0.[0..255].[1;3;5..7]").unwrap();
        assert_eq!(s.weight, 1);
        let f = s.filter.unwrap();
        for ok in [1, 3, 5, 6, 7] {
            assert!(f.matches(Ipv4Addr::new(127, 0, 200, ok)), "{ok}");
        }
        for no in [0, 2, 4, 8] {
            assert!(!f.matches(Ipv4Addr::new(127, 0, 200, no)), "{no}");
        }
        assert_eq!(f.to_string(), "127.0.[0..255].[1;3;5..7]");
        let exact = DnsblSite::parse("b.example=127.0.0.2")
            .unwrap()
            .filter
            .unwrap();
        assert!(exact.matches(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(!exact.matches(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn bad_sites() {
        for bad in [
            "",
            "zone*x",
            "zone*99999999999",
            "zone=127.0.0",
            "zone=127.0.0.[2..11",
            "zone=127.0.0.[11..2]",
            "zone=127.0.0.256",
            "zone=127.0.0.2.1",
            "zone=127.0.0.[]",
            "bad zone",
            "a..b",
            "zone=127.0.0.-1",
        ] {
            assert!(DnsblSite::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn access_actions_as_postfix_reads_them() {
        let refuse = |code, dsn, text: &str| Access::Refuse {
            code,
            dsn,
            text: text.into(),
        };
        for (action, read) in [
            ("dunno", Access::Dunno),
            ("OK", Access::Ok),
            ("1234567", Access::Ok),
            ("REJECT", refuse(554, [5, 7, 1], "Access denied")),
            ("reject 5.7.0 go away", refuse(554, [5, 7, 0], "go away")),
            ("DEFER later", refuse(450, [4, 7, 1], "later")),
            (
                "550 5.7.23 Message rejected due to: SPF fail",
                refuse(550, [5, 7, 23], "Message rejected due to: SPF fail"),
            ),
            // the class follows the code
            ("451 5.7.1 x", refuse(451, [4, 7, 1], "x")),
            (
                "DEFER_IF_PERMIT Greylisted, see http://x/",
                Access::DeferIfPermit {
                    dsn: [4, 7, 1],
                    text: "Greylisted, see http://x/".into(),
                },
            ),
            (
                "PREPEND X-Greylist: delayed 2 seconds",
                Access::Prepend("X-Greylist: delayed 2 seconds".into()),
            ),
            (
                "prepend Received-SPF: Pass",
                Access::Prepend("Received-SPF: Pass".into()),
            ),
            ("HOLD", Access::Hold(String::new())),
            ("DISCARD spam", Access::Discard("spam".into())),
        ] {
            assert_eq!(Access::parse(action), read, "{action:?}");
        }
        for bad in [
            "",
            "FILTER smtp:[127.0.0.1]:10025",
            "REDIRECT a@b",
            "BCC a@b",
            "HANGUP",
            "permit",
            "reject_unknown_client_hostname",
            "PREPEND",
            "PREPEND no header",
            "550",
            "250 ok",
            "600 x",
        ] {
            assert!(
                matches!(Access::parse(bad), Access::Unsupported(_)),
                "{bad:?} -> {:?}",
                Access::parse(bad)
            );
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("inet:127.0.0.1:10023").unwrap(),
            Endpoint::Inet {
                host: "127.0.0.1".into(),
                port: 10023
            }
        );
        assert_eq!(
            Endpoint::parse("localhost:10023").unwrap().to_string(),
            "inet:localhost:10023"
        );
        assert_eq!(
            Endpoint::parse("inet:[::1]:9").unwrap().to_string(),
            "inet:[::1]:9"
        );
        assert_eq!(
            Endpoint::parse("unix:/run/p.sock").unwrap(),
            Endpoint::Unix("/run/p.sock".into())
        );
        for bad in [
            "inet:host",
            "inet::25",
            "inet:h:0",
            "inet:h:x",
            "unix:",
            "[::1:9",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
