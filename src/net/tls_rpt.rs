//! SMTP TLS Reporting's DNS record (RFC 8460 §3): `_smtp._tls.DOMAIN IN TXT
//! "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/tlsrpt"`,
//! read strictly to the RFC's ABNF (every input is hostile: bounded, no panic):
//!
//! ```text
//! tlsrpt-record    = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//! field-delim      = *WSP ";" *WSP
//! tlsrpt-field     = tlsrpt-rua / tlsrpt-extension
//! tlsrpt-version   = %s"v=TLSRPTv1"
//! tlsrpt-rua       = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//! tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value
//! tlsrpt-ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//! tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
//! ```
//!
//! Extensions are ignored (§3: unknown fields SHALL be ignored); `rua` must be there
//! once. Of its URIs, `mailto:` (one address, percent-decoded, no `?` headers) and
//! `https:` are kept, others skipped; a record that leaves none is refused.

/// The longest record read (TXT strings concatenated).
pub const MAX_RECORD: usize = 4096;
/// The most report addresses kept from one record.
pub const MAX_RUA: usize = 10;

/// Where reports for a policy domain go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rua {
    /// An address for the report as mail (RFC 8460 §5.3).
    Mailto(String),
    /// An `https:` URL to POST the report to (RFC 8460 §5.4).
    Https(String),
}

/// Why a `_smtp._tls` record is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TLSRPT record: {0}")]
pub struct TlsRptRecordError(String);

fn bad(why: impl Into<String>) -> TlsRptRecordError {
    TlsRptRecordError(why.into())
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The report addresses of one `v=TLSRPTv1` record.
pub fn parse_record(record: &str) -> Result<Vec<Rua>, TlsRptRecordError> {
    if record.len() > MAX_RECORD {
        return Err(bad(format!("longer than {MAX_RECORD} bytes")));
    }
    let mut fields = record.split(';');
    if fields.next().map(|v| v.trim_end_matches(is_wsp)) != Some("v=TLSRPTv1") {
        return Err(bad("does not start with v=TLSRPTv1;"));
    }
    let fields: Vec<&str> = fields.map(|f| f.trim_matches(is_wsp)).collect();
    // 1*(field-delim tlsrpt-field) [field-delim]: only the last field may be empty
    let Some((last, body)) = fields.split_last() else {
        return Err(bad("no field after the version"));
    };
    let body: Vec<&str> = if last.is_empty() {
        body.to_vec()
    } else {
        fields.clone()
    };
    if body.is_empty() {
        return Err(bad("no field after the version"));
    }
    let mut rua = None;
    for field in body {
        let Some((name, value)) = field.split_once('=') else {
            return Err(bad(format!("{field:?} is not name=value")));
        };
        if name == "rua" {
            if rua.is_some() {
                return Err(bad("rua given twice"));
            }
            rua = Some(parse_rua(value)?);
            continue;
        }
        let name_ok = name.len() <= 32
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let value_ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| matches!(b, 0x21..=0x3a | 0x3c | 0x3e..=0x7e));
        if !name_ok || !value_ok {
            return Err(bad(format!("{field:?} is not a valid extension")));
        }
    }
    match rua {
        None => Err(bad("no rua")),
        Some(r) if r.is_empty() => Err(bad("no mailto: or https: address in rua")),
        Some(r) => Ok(r),
    }
}

/// `uri *(*WSP "," *WSP uri)`.
fn parse_rua(value: &str) -> Result<Vec<Rua>, TlsRptRecordError> {
    let mut out = Vec::new();
    for uri in value.split(',') {
        let uri = uri.trim_matches(is_wsp);
        // RFC 3986 characters only (no space, no control, nothing beyond ASCII; '!'
        // and ';' must be percent-encoded in a rua)
        let valid = !uri.is_empty()
            && uri
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@$&'()*+=%".contains(&b));
        if !valid {
            return Err(bad(format!("{uri:?} is not a URI")));
        }
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(bad(format!("{uri:?} has no scheme")));
        };
        let kept = if scheme.eq_ignore_ascii_case("mailto") {
            mailto(rest).map(Rua::Mailto)
        } else if scheme.eq_ignore_ascii_case("https") {
            https(rest).map(|_| Rua::Https(format!("https:{rest}")))
        } else {
            None // another scheme: not ours to use
        };
        if let Some(r) = kept
            && out.len() < MAX_RUA
            && !out.contains(&r)
        {
            out.push(r);
        }
    }
    Ok(out)
}

/// The address of `mailto:ADDR`: one `local@domain`, percent-decoded; `None` for
/// anything else (several addresses, `?` header fields, a bad domain).
fn mailto(rest: &str) -> Option<String> {
    if rest.contains('?') || rest.contains('#') {
        return None;
    }
    let addr = percent_decode(rest)?;
    let (local, domain) = addr.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@".contains(&b));
    (local_ok && is_domain(domain)).then(|| format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// `//host[:port]/path...` with a DNS host name.
fn https(rest: &str) -> Option<()> {
    let rest = rest.strip_prefix("//")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return None;
    }
    is_domain(host).then_some(())
}

fn is_domain(d: &str) -> bool {
    super::dns::is_hostname(d.strip_suffix('.').unwrap_or(d))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    text.chars().all(|c| c.is_ascii_graphic()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_as_the_rfc_writes_them() {
        assert_eq!(
            parse_record("v=TLSRPTv1;rua=mailto:reports@example.com"),
            Ok(vec![Rua::Mailto("reports@example.com".into())])
        );
        assert_eq!(
            parse_record(
                "v=TLSRPTv1; rua=mailto:tls%2Brpt@Example.COM , https://reporting.example.com:8443/v1/tlsrpt ;"
            ),
            Ok(vec![
                Rua::Mailto("tls+rpt@example.com".into()),
                Rua::Https("https://reporting.example.com:8443/v1/tlsrpt".into()),
            ])
        );
        assert!(parse_record("v=TLSRPTv1 ;\trua=mailto:a@b.test").is_ok());
        // extensions are ignored; other schemes skipped
        assert_eq!(
            parse_record("v=TLSRPTv1; ext.1=x; rua=ftp://x.test/,mailto:a@b.test"),
            Ok(vec![Rua::Mailto("a@b.test".into())])
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for r in [
            "",
            "v=TLSRPTv1",
            "v=TLSRPTv1;",
            " v=TLSRPTv1;rua=mailto:a@b.test",
            "v=tlsrptv1;rua=mailto:a@b.test",
            "v=TLSRPTv2;rua=mailto:a@b.test",
            "rua=mailto:a@b.test; v=TLSRPTv1",
            "v=TLSRPTv1;rua=mailto:a@b.test;rua=mailto:c@d.test",
            "v=TLSRPTv1;rua=mailto:a@b.test;;",
            "v=TLSRPTv1;;rua=mailto:a@b.test",
            "v=TLSRPTv1;rua=mailto:a b@b.test",
            "v=TLSRPTv1;rua=mailto:a@b.test!10m",
            "v=TLSRPTv1;rua=",
            "v=TLSRPTv1;rua=ftp://x.test/",
            "v=TLSRPTv1;rua=mailto:a@b.test?subject=x",
            "v=TLSRPTv1;rua=mailto:a@-b.test",
            "v=TLSRPTv1;rua=mailto:%41%4",
            "v=TLSRPTv1;rua=https://user@x.test/",
            "v=TLSRPTv1;rua=https://x.test:0/",
            "v=TLSRPTv1;rua=https:x.test",
            "v=TLSRPTv1;rua=mailto:a@b.test;_x=1",
            "v=TLSRPTv1;rua=mailto:a@b.test;x=a b",
            "v=TLSRPTv1;rua=mailto:a@b.test;x=",
            "v=TLSRPTv1;rua=mailto:a@b.test;novalue",
        ] {
            assert!(parse_record(r).is_err(), "{r:?} accepted");
        }
        let long = format!(
            "v=TLSRPTv1;rua=mailto:a@b.test;x={}",
            "a".repeat(MAX_RECORD)
        );
        assert!(parse_record(&long).is_err());
    }

    #[test]
    fn addresses_are_bounded() {
        let many: Vec<String> = (0..50).map(|i| format!("mailto:r{i}@x.test")).collect();
        let r = parse_record(&format!("v=TLSRPTv1;rua={}", many.join(","))).unwrap();
        assert_eq!(r.len(), MAX_RUA);
    }
}
