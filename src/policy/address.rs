//! Addresses: their syntax, their one canonical form, and the domain a recipient
//! will actually be routed to.
//!
//! # The canonical form
//!
//! Every address mtad compares or looks up (aliases, virtual tables, local recipients,
//! policy conditions, hooks, logs, the queue, the dry run) is in one form, made by
//! [`parse`] and [`Parsed::canonical`]:
//!
//! - the local part is written as a dot-atom when it is one, whatever the client
//!   quoted or escaped (`"root"@host`, `"ro\ot"@host` → `root@host`: RFC 5321 §4.1.2
//!   and RFC 5322 §3.4.1 make them the same address; Postfix's internal form), and
//!   quoted with only `"` and `\` escaped when it is not (`"john doe"@host`). Its case
//!   is kept (a local part may be case-sensitive); lookups fold it;
//! - the domain is lowercased (ASCII), without a trailing dot;
//! - an address literal is `[192.0.2.1]` or `[IPv6:2001:db8::1]` (the IPv6 address in
//!   its shortest form);
//! - a source route (`<@a.test,@b.test:user@c.test>`) is dropped (RFC 5321 §3.3: a
//!   server must accept it and should ignore it).
//!
//! # Routing syntax
//!
//! Old routing syntaxes let an address name one destination in its domain and
//! another in its local part: `user%foreign.test@relay.test` (the percent hack),
//! `foreign.test!user@relay.test` (a bang path), `"user@foreign.test"@relay.test`
//! (a quoted `@`). A relay that checked only the domain after the `@` could be made to
//! forward them. Like Postfix with `allow_untrusted_routing = no`, such addresses get
//! no routing domain at all ([`routing_domain`]), so no `rcpt-domain` rule can accept
//! them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest path (as written, angle brackets included) that is an address at all:
/// RFC 5321 §4.5.3.1.3's 256 octets.
pub const MAX_ADDRESS: usize = 256;
/// The longest domain name (RFC 1035, without the trailing dot).
pub const MAX_DOMAIN: usize = 253;
/// The longest label of a domain name.
pub const MAX_LABEL: usize = 63;

/// Why an address is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    TooLong,
    /// The local part is not a dot-atom nor a quoted string.
    LocalPart(&'static str),
    /// The domain is not a domain name nor an address literal.
    Domain(&'static str),
    /// `<...` without `>`, or text after it.
    Brackets,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Empty => f.write_str("empty address"),
            AddressError::TooLong => write!(f, "longer than {MAX_ADDRESS} bytes"),
            AddressError::LocalPart(why) => write!(f, "bad local part: {why}"),
            AddressError::Domain(why) => write!(f, "bad domain: {why}"),
            AddressError::Brackets => f.write_str("unbalanced angle brackets"),
        }
    }
}

/// The part after the `@`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A domain name, lowercased, without a trailing dot.
    Name(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(name) => f.write_str(name),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

/// An address as [`parse`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The local part, unquoted (Postfix's internal form): `john doe` for
    /// `"john doe"@x`.
    pub local: String,
    /// `None`: a bare local part (`root`), to be qualified by the caller.
    pub domain: Option<Domain>,
}

impl Parsed {
    /// The canonical form (see the module documentation); a bare local part stays bare.
    pub fn canonical(&self) -> String {
        let mut out = quote_local(&self.local);
        if let Some(d) = &self.domain {
            out.push('@');
            out.push_str(&d.to_string());
        }
        out
    }
}

/// RFC 5322 `atext`, with RFC 6531's UTF-8 (any non-ASCII character).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Whether `local` can be written without quotes: atoms of `atext` joined by single
/// dots.
pub fn is_dot_atom(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A local part (unquoted) as it is written in the canonical form.
pub fn quote_local(local: &str) -> String {
    if is_dot_atom(local) {
        return local.to_owned();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads an address or an SMTP path: `user@domain`, `<user@domain>`, `"quoted
/// local"@domain`, `user@[192.0.2.1]`, a source route before it, or a bare local part
/// (`root`, `<root>`). Whatever is not RFC 5321 syntax (with RFC 6531's UTF-8) is an
/// error: an empty or badly quoted local part, an empty domain (`user@`), an empty
/// label (`a..b`, `.a`), a label longer than 63 bytes or starting or ending with `-`,
/// a character that is not a letter, digit or `-` in a name, a literal that is not an
/// IPv4 or IPv6 address.
pub fn parse(text: &str) -> Result<Parsed, AddressError> {
    if text.len() > MAX_ADDRESS {
        return Err(AddressError::TooLong);
    }
    let text = match text.strip_prefix('<') {
        Some(inner) => inner.strip_suffix('>').ok_or(AddressError::Brackets)?,
        None if text.ends_with('>') => return Err(AddressError::Brackets),
        None => text,
    };
    let text = strip_source_route(text)?;
    if text.is_empty() {
        return Err(AddressError::Empty);
    }
    let (local, rest) = local_part(text)?;
    let domain = match rest {
        None => None,
        Some(d) => Some(domain(d)?),
    };
    Ok(Parsed { local, domain })
}

/// `@a.test,@b.test:rest` → `rest` (each hop must be a domain).
fn strip_source_route(text: &str) -> Result<&str, AddressError> {
    if !text.starts_with('@') {
        return Ok(text);
    }
    let (route, rest) = text
        .split_once(':')
        .ok_or(AddressError::Domain("a source route without `:`"))?;
    for hop in route.split(',') {
        let hop = hop
            .strip_prefix('@')
            .ok_or(AddressError::Domain("a source route hop without `@`"))?;
        domain(hop)?;
    }
    Ok(rest)
}

/// The local part (unquoted) and what follows its `@` (`None`: no `@`).
fn local_part(text: &str) -> Result<(String, Option<&str>), AddressError> {
    let mut local = String::new();
    if let Some(quoted) = text.strip_prefix('"') {
        let mut chars = quoted.char_indices();
        let end = loop {
            let Some((i, c)) = chars.next() else {
                return Err(AddressError::LocalPart("an unterminated quoted string"));
            };
            match c {
                '"' => break i + 1,
                '\\' => match chars.next() {
                    Some((_, e)) if (' '..='~').contains(&e) => local.push(e),
                    _ => return Err(AddressError::LocalPart("a bad escape")),
                },
                c if c.is_control() => {
                    return Err(AddressError::LocalPart("a control character"));
                }
                c => local.push(c),
            }
        };
        let rest = &quoted[end..];
        return match rest.strip_prefix('@') {
            Some(d) => Ok((local, Some(d))),
            None if rest.is_empty() => Ok((local, None)),
            None => Err(AddressError::LocalPart("text after the quoted string")),
        };
    }
    let (dot, rest) = match text.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (text, None),
    };
    if dot.is_empty() {
        return Err(AddressError::LocalPart("empty"));
    }
    if !is_dot_atom(dot) {
        return Err(AddressError::LocalPart(
            "not a dot-atom (quote it, or remove the empty atom or the special character)",
        ));
    }
    local.push_str(dot);
    Ok((local, rest))
}

/// A domain name or an address literal.
fn domain(text: &str) -> Result<Domain, AddressError> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(AddressError::Domain("an address literal without `]`"))?;
        if let Ok(ip) = inner.parse::<Ipv4Addr>() {
            return Ok(Domain::Literal(IpAddr::V4(ip)));
        }
        let v6 = inner
            .get(..5)
            .filter(|tag| tag.eq_ignore_ascii_case("IPv6:"))
            .and_then(|_| inner[5..].parse::<Ipv6Addr>().ok());
        return match v6 {
            Some(ip) => Ok(Domain::Literal(IpAddr::V6(ip))),
            None => Err(AddressError::Domain(
                "an address literal that is not [IPv4] or [IPv6:address]",
            )),
        };
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err(AddressError::Domain("empty"));
    }
    if name.len() > MAX_DOMAIN {
        return Err(AddressError::Domain("longer than 253 bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(AddressError::Domain("an empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(AddressError::Domain("a label longer than 63 bytes"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::Domain("a label starting or ending with `-`"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_control()))
        {
            return Err(AddressError::Domain(
                "a character that is not a letter, a digit or `-`",
            ));
        }
    }
    Ok(Domain::Name(name.to_ascii_lowercase()))
}

/// The canonical form of `text` (see the module documentation), or `None` when it is
/// not an address; a bare local part stays bare.
pub fn canonical(text: &str) -> Option<String> {
    parse(text).ok().map(|p| p.canonical())
}

/// `addr` in canonical form when it parses, else as it is (for values that were
/// never checked, e.g. a queued recipient from an older version).
pub fn canonical_or_same(addr: &str) -> String {
    canonical(addr).unwrap_or_else(|| addr.to_owned())
}

/// Splits a canonical address at the `@` that ends its local part (a quoted local
/// part may hold `@`): `(local as written, domain)`.
pub fn split(addr: &str) -> (&str, &str) {
    addr.rsplit_once('@').unwrap_or((addr, ""))
}

/// The lowercased domain after the last `@`, without a trailing dot; `None` when
/// the address has no usable domain or its local part holds routing syntax
/// (`%`, `!`, `@`, including a quoted `@` or a source route).
pub fn routing_domain(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || local.contains(['%', '!', '@']) {
        return None;
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    // Only a plain DNS name can be in a domain set; an address literal
    // (`[192.0.2.1]`) or anything stranger never matches.
    if domain.is_empty()
        || domain.starts_with('.')
        || domain.contains("..")
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// The address literal an address ends with (`user@[192.0.2.1]`), if it is one.
pub fn literal(address: &str) -> Option<IpAddr> {
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || local.contains(['%', '!', '@']) {
        return None;
    }
    match self::domain(domain) {
        Ok(Domain::Literal(ip)) => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses() {
        assert_eq!(
            routing_domain("user@Example.TEST").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            routing_domain("user@example.test.").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            routing_domain("first.last+tag@mx.example.test").as_deref(),
            Some("mx.example.test")
        );
    }

    #[test]
    fn routing_syntax_has_no_domain() {
        for address in [
            "user%foreign.test@example.test",
            "foreign.test!user@example.test",
            "\"user@foreign.test\"@example.test",
            "@example.test:user@foreign.test",
            "user@foreign.test@example.test",
            "postmaster",
            "user@",
            "@example.test",
            "user@[192.0.2.1]",
            "user@exa mple.test",
            "user@example..test",
            "user@.example.test",
            "user@example.test\r\nRCPT TO:<x@evil.test>",
        ] {
            assert_eq!(routing_domain(address), None, "{address}");
        }
    }

    #[test]
    fn quoted_dot_atoms_are_the_plain_address() {
        for (given, want) in [
            ("\"root\"@subml.example1155.jp", "root@subml.example1155.jp"),
            ("<\"root\"@Host.Test>", "root@host.test"),
            ("\"first.last\"@x.test", "first.last@x.test"),
            ("\"ro\\ot\"@x.test", "root@x.test"),
            ("Root@X.Test.", "Root@x.test"),
            ("<@a.test,@b.test:u@c.test>", "u@c.test"),
            ("\"john doe\"@x.test", "\"john doe\"@x.test"),
            ("\"a\\\"b\"@x.test", "\"a\\\"b\"@x.test"),
            ("\"a..b\"@x.test", "\"a..b\"@x.test"),
            (
                "\"user@foreign.test\"@relay.test",
                "\"user@foreign.test\"@relay.test",
            ),
            ("user@[192.0.2.1]", "user@[192.0.2.1]"),
            ("user@[ipv6:2001:DB8:0::1]", "user@[IPv6:2001:db8::1]"),
            ("root", "root"),
            ("\"root\"", "root"),
            ("<root>", "root"),
            ("ユーザー@例え.jp", "ユーザー@例え.jp"),
        ] {
            assert_eq!(canonical(given).as_deref(), Some(want), "{given}");
            // canonical is a fixed point
            assert_eq!(canonical(want).as_deref(), Some(want), "{want}");
        }
    }

    #[test]
    fn invalid_addresses() {
        let long_label = format!("u@{}.test", "a".repeat(64));
        let long_domain = format!("u@{}test", "abcdefghi.".repeat(26));
        for bad in [
            "",
            "<>",
            "user@",
            "@x.test",
            "user@-bad.example",
            "user@bad-.example",
            "user@a..b",
            "a..b@x.test",
            ".a@x.test",
            "a.@x.test",
            "user@.x.test",
            "user@x_y.test",
            "user@exa mple.test",
            "user@[300.1.1.1]",
            "user@[foo]",
            "user@[192.0.2.1",
            "\"unterminated@x.test",
            "\"a\"b@x.test",
            "a b@x.test",
            "<user@x.test",
            "user@x.test>",
            "user@x.test\r\nRCPT TO:<x@evil.test>",
            "\"a\rb\"@x.test",
            long_label.as_str(),
            long_domain.as_str(),
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse(&format!("u@{}.test", "a".repeat(63))).is_ok());
        assert!(parse(&"a".repeat(MAX_ADDRESS + 1)).is_err());
    }

    #[test]
    fn literals() {
        assert_eq!(
            literal("user@[192.0.2.1]"),
            Some(IpAddr::from([192, 0, 2, 1]))
        );
        assert_eq!(literal("user@example.test"), None);
        assert_eq!(literal("a%b@[192.0.2.1]"), None);
    }
}
