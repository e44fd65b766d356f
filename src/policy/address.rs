//! The domain a recipient address will actually be routed to, for relay checks.
//!
//! Old routing syntaxes let an address name one destination in its domain and
//! another in its local part: `user%foreign.test@relay.test` (the percent hack),
//! `foreign.test!user@relay.test` (a bang path), `"user@foreign.test"@relay.test`
//! (a quoted `@`), `@relay.test:user@foreign.test` (a source route). A relay that
//! checked only the domain after the `@` could be made to forward them. Like
//! Postfix with `allow_untrusted_routing = no`, such addresses get no routing domain
//! at all, so no `rcpt-domain` rule can accept them.

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

#[cfg(test)]
mod tests {
    use super::routing_domain;

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
}
