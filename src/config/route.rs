//! Where a recipient goes: Postfix's `transport:nexthop` values, and the lookup order
//! of a transport(5) table.
//!
//! | value | meaning |
//! |---|---|
//! | `smtp:[host]:port`, `smtp:[10.0.0.5]` | SMTP to that host's address records only (no MX lookup) |
//! | `smtp:example.com`, `smtp:example.com:2525` | SMTP to the MX hosts of that domain |
//! | `smtp:[a.example]:25, [b.example]:25` | several next hops, tried in order (Postfix ≥ 3.5) |
//! | `smtp:`, `smtp` | SMTP to the MX hosts of the recipient's domain |
//! | `:[host]`, `:example.com` | the default transport (smtp) with that next hop (seed 001) |
//! | `relay:...` | the same as `smtp:...` (Postfix's relay transport is an smtp client) |
//! | `lmtp:[host]:port`, `lmtp:host:port`, `lmtp:unix:/path`, `lmtp:inet:host:port` | LMTP |
//! | `local`, `local:` | Maildir delivery for local domains |
//! | `discard`, `discard:text` | accepted and dropped |
//! | `error:5.1.1 text`, `error:text` | bounced with that status (default 5.0.0) |

use std::fmt;
use std::path::PathBuf;

use crate::lookup::Table;

/// An SMTP next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// The recipient's own domain, by MX.
    RecipientDomain,
    /// This domain, by MX (falling back to its address records).
    Mx { domain: String, port: Option<u16> },
    /// This host's address records only: `[host]`.
    Host { host: String, port: Option<u16> },
    /// Several next hops, tried in order, each an [`NextHop::Mx`] or a
    /// [`NextHop::Host`] (Postfix ≥ 3.5: `smtp:a.example, [b.example]:25`). Never
    /// nested, never fewer than two.
    List(Vec<NextHop>),
}

impl NextHop {
    /// The destinations to try, in order: the list's, or this one alone.
    pub fn destinations(&self) -> Vec<NextHop> {
        match self {
            NextHop::List(all) => all.clone(),
            one => vec![one.clone()],
        }
    }
}

/// Where an LMTP client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LmtpTarget {
    Unix(String),
    Inet { host: String, port: u16, mx: bool },
}

/// A parsed `transport:nexthop`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Smtp(NextHop),
    Lmtp(LmtpTarget),
    Local,
    /// A virtual mailbox: the Maildir `{local-base}/PATH` (`virtual:example.com/alice/`,
    /// the path a `virtual-mailboxes` table gives, checked like a mailbox name).
    Virtual(String),
    Discard(String),
    Error {
        enhanced: [u8; 3],
        text: String,
    },
}

impl Transport {
    /// The single next hops to try, in order: one transport per destination of a
    /// next-hop list (`smtp:a.example, b.example`), else this transport alone.
    pub fn destinations(&self) -> Vec<Transport> {
        match self {
            Transport::Smtp(hop) => hop
                .destinations()
                .into_iter()
                .map(Transport::Smtp)
                .collect(),
            other => vec![other.clone()],
        }
    }

    /// The transport's kind, as written before the colon: `smtp`, `lmtp`, `local`,
    /// `discard` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Smtp(_) => "smtp",
            Transport::Lmtp(_) => "lmtp",
            Transport::Local => "local",
            Transport::Virtual(_) => "virtual",
            Transport::Discard(_) => "discard",
            Transport::Error { .. } => "error",
        }
    }

    /// Parses a `transport:nexthop` value; the error says what is wrong.
    pub fn parse(value: &str) -> Result<Transport, InvalidTransport> {
        parse_transport(value).map_err(InvalidTransport)
    }
}

/// A transport (`transport:nexthop`, or a fallback chain of them) that cannot be
/// used; the text says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTransport(String);

/// A TLS policy name that is neither ours nor Postfix's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS policy `{value}` ({})", TlsPolicy::NAMES)]
pub struct UnknownTlsPolicy {
    pub value: String,
}

/// A `dkim-sign=` value that is not one of [`DkimSign::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dkim-sign `{value}` ({})", DkimSign::NAMES)]
pub struct UnknownDkimSign {
    pub value: String,
}

/// A recipient pattern of a `transport` rule that is not one (see [`RoutePattern`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPattern {
    #[error("`{0}` is not an address")]
    NotAnAddress(String),
    #[error("`{0}` is not `.domain`")]
    NotSubdomains(String),
    #[error("`{0}` is not a domain, `.domain`, `user@domain` or `*`")]
    Unknown(String),
}

/// [`Transport::parse`], its error as text.
fn parse_transport(value: &str) -> Result<Transport, String> {
    if value.contains(char::is_control) {
        return Err("a transport must not contain control characters".into());
    }
    let value = value.trim();
    if value.is_empty() {
        return Err("a transport must be `transport:nexthop`, without control characters".into());
    }
    let (name, nexthop) = value.split_once(':').unwrap_or((value, ""));
    match name {
        "" | "smtp" | "relay" => parse_smtp(nexthop).map(Transport::Smtp),
        "lmtp" => parse_lmtp(nexthop).map(Transport::Lmtp),
        "local" => Ok(Transport::Local),
        "virtual" => match mailbox_path(nexthop) {
            Ok(_) => Ok(Transport::Virtual(nexthop.to_owned())),
            Err(e) => Err(format!("virtual:{nexthop}: {e}")),
        },
        "discard" => Ok(Transport::Discard(nexthop.to_owned())),
        "error" => {
            let (code, text) = match nexthop.split_once(' ') {
                Some((code, text)) => (code, text),
                None => (nexthop, ""),
            };
            match super::Reply::parse_enhanced(code) {
                Some(enhanced) if enhanced[0] == 4 || enhanced[0] == 5 => Ok(Transport::Error {
                    enhanced,
                    text: text.to_owned(),
                }),
                _ => Ok(Transport::Error {
                    enhanced: [5, 0, 0],
                    text: nexthop.to_owned(),
                }),
            }
        }
        other => Err(format!(
            "unknown transport `{other}` (smtp, relay, lmtp, local, virtual, discard, error)"
        )),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{port}` is not a port number"))
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
}

/// A next hop, or a list of them separated by commas or white space (Postfix ≥ 3.5).
fn parse_smtp(nexthop: &str) -> Result<NextHop, String> {
    let parts: Vec<&str> = nexthop
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [] if nexthop.is_empty() => Ok(NextHop::RecipientDomain),
        [] => Err(format!("`{nexthop}`: no next hop in the list")),
        [one] => parse_one_smtp(one),
        many => many
            .iter()
            .map(|p| parse_one_smtp(p))
            .collect::<Result<Vec<_>, _>>()
            .map(NextHop::List),
    }
}

fn parse_one_smtp(nexthop: &str) -> Result<NextHop, String> {
    if nexthop.is_empty() {
        return Ok(NextHop::RecipientDomain);
    }
    if let Some(rest) = nexthop.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{nexthop}`: `[` without `]`"))?;
        if !valid_host(host) {
            return Err(format!("`{host}` is not a host name or address"));
        }
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':').ok_or_else(|| {
                format!("`{nexthop}`: expected `:port` after `]`")
            })?)?),
        };
        return Ok(NextHop::Host {
            host: host.to_owned(),
            port,
        });
    }
    let (domain, port) = match nexthop.rsplit_once(':') {
        Some((domain, port)) => (domain, Some(parse_port(port)?)),
        None => (nexthop, None),
    };
    if !valid_host(domain) || domain.contains(':') {
        return Err(format!("`{domain}` is not a domain"));
    }
    Ok(NextHop::Mx {
        domain: domain.to_ascii_lowercase(),
        port,
    })
}

fn parse_lmtp(nexthop: &str) -> Result<LmtpTarget, String> {
    if let Some(path) = nexthop.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("`lmtp:unix:` needs a socket path".into());
        }
        return Ok(LmtpTarget::Unix(path.to_owned()));
    }
    let hop = nexthop.strip_prefix("inet:").unwrap_or(nexthop);
    match parse_smtp(hop)? {
        NextHop::List(_) => Err(format!(
            "`lmtp:{nexthop}`: a list of next hops is supported for smtp only; \
             use fallback=\"...\" for the others"
        )),
        NextHop::Host { host, port } => Ok(LmtpTarget::Inet {
            host,
            port: port.unwrap_or(24),
            mx: false,
        }),
        NextHop::Mx { domain, port } => Ok(LmtpTarget::Inet {
            host: domain,
            port: port.unwrap_or(24),
            mx: false,
        }),
        NextHop::RecipientDomain => Err("`lmtp:` needs a next hop".into()),
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |p: &Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
        match self {
            NextHop::RecipientDomain => Ok(()),
            NextHop::Mx { domain, port: p } => write!(f, "{domain}{}", port(p)),
            NextHop::Host { host, port: p } => write!(f, "[{host}]{}", port(p)),
            NextHop::List(all) => {
                for (i, hop) in all.iter().enumerate() {
                    write!(f, "{}{hop}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(hop) => write!(f, "smtp:{hop}"),
            Transport::Lmtp(LmtpTarget::Unix(path)) => write!(f, "lmtp:unix:{path}"),
            Transport::Lmtp(LmtpTarget::Inet { host, port, .. }) => {
                write!(f, "lmtp:[{host}]:{port}")
            }
            Transport::Local => f.write_str("local"),
            Transport::Virtual(path) => write!(f, "virtual:{path}"),
            Transport::Discard(text) if text.is_empty() => f.write_str("discard"),
            Transport::Discard(text) => write!(f, "discard:{text}"),
            Transport::Error {
                enhanced: [a, b, c],
                text,
            } => write!(f, "error:{a}.{b}.{c} {text}"),
        }
    }
}

/// How a route uses TLS: Postfix's `smtp_tls_security_level`, under our names where we
/// had them (`opportunistic` = `may`, `required` = `encrypt`) and Postfix's otherwise.
/// What a level means for one destination (which names a certificate must carry, what
/// DANE found) is decided in one place, [`crate::config::tls_policy`] and
/// `delivery::tls_policy` (docs/outbound-tls.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsPolicy {
    /// Never STARTTLS (`none`).
    None,
    /// STARTTLS when the server offers it, certificate not checked (`may`). The default.
    #[default]
    Opportunistic,
    /// STARTTLS must succeed, certificate not checked (`encrypt`).
    Required,
    /// STARTTLS must succeed and the certificate must be valid (a trusted CA) for the
    /// MX host's name, as DNS gave it (`verify`; Postfix's `match=hostname`).
    Verify,
    /// As `verify`, but the certificate must name the next-hop domain or one of its
    /// subdomains, which an attacker on DNS cannot change (`secure`; Postfix's
    /// `match=nexthop:dot-nexthop`).
    Secure,
    /// DANE (RFC 7672) where the MX host's TLSA records are DNSSEC-validated; plain
    /// `opportunistic` where DNSSEC says the records are not signed (`dane`).
    Dane,
    /// DANE or nothing: a destination without usable, validated TLSA records is
    /// deferred (`dane-only`).
    DaneOnly,
}

impl TlsPolicy {
    pub const NAMES: &'static str =
        "none, opportunistic (may), required (encrypt), verify, secure, dane, dane-only";

    /// Our names, and Postfix's (`may`, `encrypt`).
    pub fn parse(value: &str) -> Result<TlsPolicy, UnknownTlsPolicy> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsPolicy::None),
            "opportunistic" | "may" => Ok(TlsPolicy::Opportunistic),
            "required" | "encrypt" => Ok(TlsPolicy::Required),
            "verify" => Ok(TlsPolicy::Verify),
            "secure" => Ok(TlsPolicy::Secure),
            "dane" => Ok(TlsPolicy::Dane),
            "dane-only" => Ok(TlsPolicy::DaneOnly),
            _ => Err(UnknownTlsPolicy {
                value: value.to_owned(),
            }),
        }
    }

    /// TLS must be in place before anything but EHLO is sent, whatever DNS says.
    pub fn is_mandatory(self) -> bool {
        matches!(
            self,
            TlsPolicy::Required | TlsPolicy::Verify | TlsPolicy::Secure | TlsPolicy::DaneOnly
        )
    }

    /// DANE's TLSA records are looked up (DNSSEC-validated) for this level.
    pub fn uses_dane(self) -> bool {
        matches!(self, TlsPolicy::Dane | TlsPolicy::DaneOnly)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::Verify => "verify",
            TlsPolicy::Secure => "secure",
            TlsPolicy::Dane => "dane",
            TlsPolicy::DaneOnly => "dane-only",
        }
    }
}

impl std::str::FromStr for TlsPolicy {
    type Err = UnknownTlsPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownTlsPolicy> {
        TlsPolicy::parse(s)
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `dkim-sign=` on a route: which of its mail is DKIM-signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DkimSign {
    /// Mail that originates with us (an authenticated client, a `dkim-internal`
    /// client, mtad's own bounces); not mail from outside that we forward. The default.
    #[default]
    Internal,
    /// Every message, whatever its origin (a relay that signs for its clients).
    Always,
    /// None.
    Never,
}

impl DkimSign {
    pub const NAMES: &'static str = "internal, always, never";

    pub fn parse(value: &str) -> Result<DkimSign, UnknownDkimSign> {
        match value {
            "internal" => Ok(DkimSign::Internal),
            "always" => Ok(DkimSign::Always),
            "never" => Ok(DkimSign::Never),
            _ => Err(UnknownDkimSign {
                value: value.to_owned(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DkimSign::Internal => "internal",
            DkimSign::Always => "always",
            DkimSign::Never => "never",
        }
    }
}

/// What a route rule says besides the transport: `auth=`, `tls=`, `fallback=`, `dkim=`,
/// `dkim-sign=`, `arc-seal=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// The `credentials` set whose entry for the next hop is used for AUTH.
    pub auth: Option<String>,
    /// Overrides the `delivery { tls }` default.
    pub tls: Option<TlsPolicy>,
    /// Tried in order when the transport's hosts cannot be reached or answer 4xx
    /// (never after a 5xx); before the global `delivery { fallback-relay }` chain.
    pub fallback: Vec<Transport>,
    /// `dkim="DOMAIN"`: this route's mail is signed by the `dkim` node for DOMAIN
    /// instead of the one its From domain picks (`always` nodes sign as well).
    pub dkim: Option<String>,
    /// `dkim-sign="always|never|internal"`: which of this route's mail is signed
    /// (`None`: internal, mail that originates with us).
    pub dkim_sign: Option<DkimSign>,
    /// `arc-seal="DOMAIN"`: mail on this route is ARC-sealed at its arrival with the
    /// `dkim` node for DOMAIN (its key and selector).
    pub arc_seal: Option<String>,
}

impl RouteOptions {
    pub fn is_empty(&self) -> bool {
        self.auth.is_none()
            && self.tls.is_none()
            && self.fallback.is_empty()
            && self.dkim.is_none()
            && self.dkim_sign.is_none()
            && self.arc_seal.is_none()
    }
}

/// As the route rule writes them: `auth="NAME" tls="POLICY" fallback="T1 T2"` (only
/// those that are set).
impl fmt::Display for RouteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(auth) = &self.auth {
            write!(f, "auth=\"{auth}\"")?;
            sep = " ";
        }
        if let Some(tls) = &self.tls {
            write!(f, "{sep}tls=\"{tls}\"")?;
            sep = " ";
        }
        if !self.fallback.is_empty() {
            write!(f, "{sep}fallback=\"")?;
            for (i, t) in self.fallback.iter().enumerate() {
                write!(f, "{}{t}", if i == 0 { "" } else { " " })?;
            }
            f.write_str("\"")?;
            sep = " ";
        }
        if let Some(dkim) = &self.dkim {
            write!(f, "{sep}dkim=\"{dkim}\"")?;
            sep = " ";
        }
        if let Some(sign) = &self.dkim_sign {
            write!(f, "{sep}dkim-sign=\"{}\"", sign.as_str())?;
            sep = " ";
        }
        if let Some(domain) = &self.arc_seal {
            write!(f, "{sep}arc-seal=\"{domain}\"")?;
        }
        Ok(())
    }
}

/// Parses a fallback chain: transports separated by whitespace or commas.
pub fn parse_fallbacks(value: &str) -> Result<Vec<Transport>, InvalidTransport> {
    let mut out = Vec::new();
    for part in value.split(|c: char| c.is_whitespace() || c == ',') {
        if part.is_empty() {
            continue;
        }
        match Transport::parse(part)? {
            t @ Transport::Smtp(_) | t @ Transport::Lmtp(_) => out.push(t),
            other => {
                return Err(InvalidTransport(format!(
                    "a fallback relay must be an smtp or lmtp next hop, not `{other}`"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(InvalidTransport("no fallback relay given".into()));
    }
    Ok(out)
}

/// The key a next hop has in a Postfix `sasl_passwd` file: `[host]:port`, `[host]`,
/// `domain:port` or `domain`, as the transport wrote it. Postfix also tries the bare
/// domain for an MX next hop; so do we (see [`credential_keys`]).
pub fn credential_keys(transport: &Transport) -> Vec<String> {
    match transport {
        Transport::Smtp(NextHop::Host { host, port }) => {
            let mut keys = Vec::new();
            if let Some(p) = port {
                keys.push(format!("[{host}]:{p}"));
            }
            keys.push(format!("[{host}]"));
            keys
        }
        Transport::Smtp(NextHop::Mx { domain, port }) => {
            let mut keys = Vec::new();
            if let Some(p) = port {
                keys.push(format!("{domain}:{p}"));
            }
            keys.push(domain.clone());
            keys
        }
        Transport::Lmtp(LmtpTarget::Inet { host, port, .. }) => {
            vec![format!("[{host}]:{port}"), format!("[{host}]")]
        }
        _ => Vec::new(),
    }
}

/// What a recipient pattern of a `transport` rule matches, transport(5) style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutePattern {
    /// `user@domain`: exactly that address.
    Address(String),
    /// `domain`: exactly that domain.
    Domain(String),
    /// `.domain`: any subdomain of it (not the domain itself).
    Subdomains(String),
    /// `*`: anything.
    Any,
}

impl RoutePattern {
    pub fn parse(pattern: &str) -> Result<RoutePattern, InvalidPattern> {
        let p = pattern.trim().to_ascii_lowercase();
        if p == "*" {
            return Ok(RoutePattern::Any);
        }
        if p.contains('@') {
            return match p.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && valid_host(domain) => {
                    Ok(RoutePattern::Address(p))
                }
                _ => Err(InvalidPattern::NotAnAddress(pattern.to_owned())),
            };
        }
        if let Some(parent) = p.strip_prefix('.') {
            return if valid_host(parent) {
                Ok(RoutePattern::Subdomains(parent.to_owned()))
            } else {
                Err(InvalidPattern::NotSubdomains(pattern.to_owned()))
            };
        }
        if valid_host(&p) {
            Ok(RoutePattern::Domain(p))
        } else {
            Err(InvalidPattern::Unknown(pattern.to_owned()))
        }
    }

    /// Whether the recipient (`local@domain`) matches.
    pub fn matches(&self, rcpt: &str) -> bool {
        let (_, domain) = rcpt.rsplit_once('@').unwrap_or(("", ""));
        let domain = domain.trim_end_matches('.');
        match self {
            RoutePattern::Any => true,
            RoutePattern::Address(a) => a.eq_ignore_ascii_case(rcpt),
            RoutePattern::Domain(d) => d.eq_ignore_ascii_case(domain),
            RoutePattern::Subdomains(parent) => {
                domain.len() > parent.len() + 1
                    && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
                    && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
            }
        }
    }
}

/// Looks a recipient up in a transport(5) table in Postfix's order: `user@domain`
/// (with a `+extension` removed too), `domain`, each parent as `.parent`, then `*`.
/// Returns the value and the key that matched; an error when the table (a database)
/// gives no answer.
pub fn lookup_transport(
    table: &Table,
    rcpt: &str,
) -> Result<Option<(String, String)>, crate::lookup::LookupError> {
    let rcpt = rcpt.to_ascii_lowercase();
    let (local, domain) = rcpt.rsplit_once('@').unwrap_or((rcpt.as_str(), ""));
    let domain = domain.trim_end_matches('.');
    let mut keys = vec![format!("{local}@{domain}")];
    if let Some((user, _ext)) = local.split_once('+') {
        keys.push(format!("{user}@{domain}"));
    }
    if !domain.is_empty() {
        keys.push(domain.to_owned());
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
    }
    keys.push("*".to_owned());
    for k in keys {
        if let Some(v) = table.lookup(&k)? {
            return Ok(Some((v.into_owned(), k)));
        }
    }
    Ok(None)
}

/// The longest mailbox name, in bytes (RFC 5321's limit for a local part).
pub const MAX_MAILBOX: usize = 64;
/// Most directories in a virtual mailbox path (`example.com/alice/` is two).
pub const MAX_DEPTH: usize = 8;

/// A virtual mailbox's Maildir as a table gives it (PostfixAdmin's `maildir` column,
/// `example.com/alice/`), relative to the Maildir base: each directory follows the
/// rules of a mailbox name (no `..`, no leading `.`, no control characters), one
/// trailing `/` is allowed, an absolute path is not.
pub fn mailbox_path(value: &str) -> Result<PathBuf, &'static str> {
    let trimmed = value.strip_suffix('/').unwrap_or(value);
    if trimmed.starts_with('/') {
        return Err("is absolute");
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err("has too many directories");
    }
    let mut path = PathBuf::new();
    for part in parts {
        check_mailbox(part)?;
        path.push(part);
    }
    Ok(path)
}

/// The rules of a mailbox directory name (delivery's `mailbox_name` applies them to a
/// local part, and `deliver` to what it is given).
pub fn check_mailbox(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty")
    } else if name.len() > MAX_MAILBOX {
        Err("longer than 64 bytes")
    } else if name.contains('/') {
        Err("contains '/'")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.starts_with('.') {
        Err("starts with '.'")
    } else if name.contains("..") {
        Err("contains '..'")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_is_wrong() {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        assert_eq!(
            text(&Transport::parse("smtp:[x").unwrap_err()),
            "`[x`: `[` without `]`"
        );
        assert_eq!(
            text(&TlsPolicy::parse("tight").unwrap_err()),
            "unknown TLS policy `tight` (none, opportunistic (may), required (encrypt), verify, secure, dane, dane-only)"
        );
        assert_eq!(
            text(&DkimSign::parse("x").unwrap_err()),
            "unknown dkim-sign `x` (internal, always, never)"
        );
        assert_eq!(
            text(&RoutePattern::parse("a b").unwrap_err()),
            "`a b` is not a domain, `.domain`, `user@domain` or `*`"
        );
        assert_eq!(
            text(&parse_fallbacks(" ").unwrap_err()),
            "no fallback relay given"
        );
    }

    #[test]
    fn route_options_print_as_a_rule_writes_them() {
        let mut o = RouteOptions::default();
        assert_eq!(o.to_string(), "");
        o.fallback = parse_fallbacks("smtp:[b.test]:587, smtp:c.test").unwrap();
        assert_eq!(o.to_string(), r#"fallback="smtp:[b.test]:587 smtp:c.test""#);
        o.auth = Some("upstream".into());
        o.tls = Some(TlsPolicy::Verify);
        assert_eq!(
            o.to_string(),
            r#"auth="upstream" tls="verify" fallback="smtp:[b.test]:587 smtp:c.test""#
        );
    }

    #[test]
    fn transports() {
        let t = |s: &str| Transport::parse(s).map(|t| t.to_string());
        assert_eq!(t("smtp:[192.168.1.100]").unwrap(), "smtp:[192.168.1.100]");
        assert_eq!(
            t("smtp:[a.domain.tld]:587").unwrap(),
            "smtp:[a.domain.tld]:587"
        );
        assert_eq!(
            t(":[mailtrans.example.local]").unwrap(),
            "smtp:[mailtrans.example.local]"
        );
        assert_eq!(
            t("smtp:Sub.Example.Local").unwrap(),
            "smtp:sub.example.local"
        );
        assert_eq!(
            t("relay:example.com:2525").unwrap(),
            "smtp:example.com:2525"
        );
        assert_eq!(t("smtp:").unwrap(), "smtp:");
        assert_eq!(t("smtp").unwrap(), "smtp:");
        assert_eq!(
            t("lmtp:unix:/run/dovecot/lmtp").unwrap(),
            "lmtp:unix:/run/dovecot/lmtp"
        );
        assert_eq!(t("lmtp:[127.0.0.1]:2003").unwrap(), "lmtp:[127.0.0.1]:2003");
        assert_eq!(
            t("lmtp:inet:127.0.0.1:2003").unwrap(),
            "lmtp:[127.0.0.1]:2003"
        );
        assert_eq!(t("local").unwrap(), "local");
        assert_eq!(t("discard:silently").unwrap(), "discard:silently");
        assert_eq!(
            t("error:5.1.1 no such user").unwrap(),
            "error:5.1.1 no such user"
        );
        assert_eq!(t("error:mailbox gone").unwrap(), "error:5.0.0 mailbox gone");
        for bad in [
            "smpt:x",
            "smtp:[x",
            "smtp:[x]:99999",
            "smtp:a b:x",
            "smtp:[a], [b",
            "lmtp:[a]:24, [b]:24",
            "lmtp:",
            "lmtp:unix:",
            "smtp:x\r\n",
        ] {
            assert!(Transport::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_hop_lists() {
        let t = Transport::parse("smtp:[a.example]:25, [b.example]:25").unwrap();
        assert_eq!(t.to_string(), "smtp:[a.example]:25, [b.example]:25");
        assert_eq!(Transport::parse(&t.to_string()).unwrap(), t);
        let each: Vec<String> = t.destinations().iter().map(|d| d.to_string()).collect();
        assert_eq!(each, ["smtp:[a.example]:25", "smtp:[b.example]:25"]);
        // commas or white space, a domain (MX) among them (transport(5))
        let t = Transport::parse("smtp:bar.example foo.example,[10.0.0.1]").unwrap();
        let each: Vec<String> = t.destinations().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            each,
            ["smtp:bar.example", "smtp:foo.example", "smtp:[10.0.0.1]"]
        );
        // one destination with a trailing separator is that destination
        assert_eq!(
            Transport::parse("smtp:[a.example],").unwrap().to_string(),
            "smtp:[a.example]"
        );
        // credentials are looked up per destination
        assert!(credential_keys(&t).is_empty());
        assert_eq!(credential_keys(&t.destinations()[2]), ["[10.0.0.1]"]);
    }

    #[test]
    fn patterns() {
        let p = |s: &str| RoutePattern::parse(s).unwrap();
        assert!(p("example.local").matches("u@Example.Local"));
        assert!(!p("example.local").matches("u@sub.example.local"));
        assert!(p(".example.local").matches("u@sub.example.local"));
        assert!(!p(".example.local").matches("u@example.local"));
        assert!(!p(".example.local").matches("u@badexample.local"));
        assert!(p("root@example.local").matches("ROOT@example.local"));
        assert!(p("*").matches("anything@anywhere"));
        assert!(RoutePattern::parse("a b").is_err());
    }

    #[test]
    fn transport_table_lookup_order() {
        let table = crate::lookup::parse_map(
            "user@example.local smtp:[user-host]\nexample.local smtp:[domain-host]\n.example.local smtp:[sub-host]\n* smtp:[catch-all]\n",
        )
        .unwrap();
        let hit = |r: &str| {
            lookup_transport(&table, r)
                .unwrap()
                .map(|(v, k)| format!("{v} via {k}"))
        };
        assert_eq!(
            hit("user@example.local").unwrap(),
            "smtp:[user-host] via user@example.local"
        );
        assert_eq!(
            hit("user+tag@example.local").unwrap(),
            "smtp:[user-host] via user@example.local"
        );
        assert_eq!(
            hit("other@example.local").unwrap(),
            "smtp:[domain-host] via example.local"
        );
        assert_eq!(
            hit("x@a.b.example.local").unwrap(),
            "smtp:[sub-host] via .example.local"
        );
        assert_eq!(hit("x@elsewhere.test").unwrap(), "smtp:[catch-all] via *");
    }
}
