//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, and its fetch over
//! HTTPS. Parsers are strict and bounded (every input is hostile); the fetch uses hyper
//! over tokio-rustls, verifies the certificate for `mta-sts.DOMAIN` against the roots it
//! is given, refuses redirects (RFC 8461 §3.3), and bounds time and size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;

/// The largest policy file read (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY: usize = 64 * 1024;
/// max_age's ceiling (RFC 8461 §3.2: one year).
pub const MAX_AGE: u64 = 31_557_600;

/// `v=STSv1; id=...;` (RFC 8461 §3.1): the policy's id.
pub fn parse_txt(record: &str) -> Result<String, MtaStsError> {
    let bad = |why: &str| MtaStsError::Record(why.to_owned());
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next() != Some("v=STSv1") {
        return Err(bad("does not start with v=STSv1"));
    }
    let mut id = None;
    for f in fields {
        let Some((k, v)) = f.split_once('=') else {
            return Err(bad("a field without ="));
        };
        if k.trim() == "id" {
            let v = v.trim();
            if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad("id is not 1 to 32 letters and digits"));
            }
            if id.replace(v.to_owned()).is_some() {
                return Err(bad("id given twice"));
            }
        }
    }
    id.ok_or_else(|| bad("no id"))
}

/// What a policy asks (RFC 8461 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A policy file (RFC 8461 §3.2).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// `mx:` patterns, lowercase: `mail.example.com` or `*.example.com`.
    pub mx: Vec<String>,
    pub max_age: u64,
}

impl Policy {
    /// `key: value` lines (CRLF or LF); `version: STSv1`, `mode`, `max_age` once each,
    /// `mx` one or more (not needed with mode none); unknown keys ignored (§3.2).
    pub fn parse(text: &str) -> Result<Policy, MtaStsError> {
        let bad = |why: String| MtaStsError::Policy(why);
        if text.len() > MAX_POLICY {
            return Err(bad("larger than 64 KiB".into()));
        }
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                return Err(bad(format!("line {line:?} is not key: value")));
            };
            let v = v.trim();
            match k.trim() {
                "version" if version.replace(v).is_some() => {
                    return Err(bad("version given twice".into()));
                }
                "version" => {}
                "mode" => {
                    let m = match v {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        _ => return Err(bad(format!("mode {v:?}"))),
                    };
                    if mode.replace(m).is_some() {
                        return Err(bad("mode given twice".into()));
                    }
                }
                "max_age" => {
                    let n: u64 = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_AGE && v.len() <= 10)
                        .ok_or_else(|| bad(format!("max_age {v:?}")))?;
                    if max_age.replace(n).is_some() {
                        return Err(bad("max_age given twice".into()));
                    }
                }
                "mx" => {
                    let p = v.trim_end_matches('.').to_ascii_lowercase();
                    let host = p.strip_prefix("*.").unwrap_or(&p);
                    let valid = !host.is_empty()
                        && host.len() <= 253
                        && host.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if !valid {
                        return Err(bad(format!("mx {v:?}")));
                    }
                    if mx.len() >= 100 {
                        return Err(bad("more than 100 mx patterns".into()));
                    }
                    mx.push(p);
                }
                _ => {}
            }
        }
        if version != Some("STSv1") {
            return Err(bad("version is not STSv1".into()));
        }
        let mode = mode.ok_or_else(|| bad("no mode".into()))?;
        let max_age = max_age.ok_or_else(|| bad("no max_age".into()))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(bad("no mx".into()));
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether MX host `host` matches a pattern (RFC 8461 §4.1: `*.` covers exactly one
    /// label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(base) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == base),
            None => *p == host,
        })
    }
}

/// Why there is no MTA-STS policy to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtaStsError {
    #[error("mta-sts: invalid TXT record: {0}")]
    Record(String),
    #[error("mta-sts: invalid policy: {0}")]
    Policy(String),
    #[error("mta-sts: policy fetch failed: {0}")]
    Fetch(String),
    /// The HTTPS server's certificate did not verify for `mta-sts.DOMAIN`.
    #[error("mta-sts: policy fetch failed: {0}")]
    Webpki(String),
}

/// GET `https://mta-sts.DOMAIN[:port]/.well-known/mta-sts.txt` with `tls` (which must
/// verify the certificate for the host), connecting to `addr`. Any status but 200 is an
/// error (a redirect included); the body is bounded by [`MAX_POLICY`], the whole
/// exchange by `timeout`.
pub async fn fetch(
    domain: &str,
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Policy, MtaStsError> {
    let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
    let fail = |e: String| MtaStsError::Fetch(format!("{host}: {e}"));
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| fail(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let text = format!("{host}: TLS: {e}");
                let certificate = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| {
                        matches!(
                            r,
                            rustls::Error::InvalidCertificate(_)
                                | rustls::Error::NoCertificatesPresented
                        )
                    });
                if certificate {
                    MtaStsError::Webpki(text)
                } else {
                    MtaStsError::Fetch(text)
                }
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::get("/.well-known/mta-sts.txt")
            .header(hyper::header::HOST, &host)
            .header(hyper::header::USER_AGENT, "mtad")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            driver.abort();
            return Err(fail(format!(
                "HTTP status {status} (redirects are not followed)"
            )));
        }
        let body = Limited::new(response.into_body(), MAX_POLICY)
            .collect()
            .await
            .map_err(|e| fail(format!("body: {e}")))?
            .to_bytes();
        driver.abort();
        let text = std::str::from_utf8(&body).map_err(|_| fail("not UTF-8".into()))?;
        Policy::parse(text)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail("timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records_are_read_strictly() {
        assert_eq!(
            parse_txt("v=STSv1; id=20160831085700Z;").unwrap(),
            "20160831085700Z"
        );
        assert_eq!(parse_txt("v=STSv1;id=abc").unwrap(), "abc");
        for bad in [
            "v=STSv2; id=a",
            "id=a; v=STSv1",
            "v=STSv1;",
            "v=STSv1; id=a-b",
            "v=STSv1; id=a; id=b",
        ] {
            assert!(parse_txt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_parse_and_match_mx_hosts() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\nextra: ignored\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert!(p.allows("mail.example.com") && p.allows("MX1.example.net."));
        assert!(!p.allows("a.b.example.net") && !p.allows("example.net") && !p.allows("evil.com"));
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        for bad in [
            "mode: enforce\nmx: a.b\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999\n",
            "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
            "version: STSv1\nmode enforce\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}
