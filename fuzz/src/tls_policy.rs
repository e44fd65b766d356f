//! Outbound TLS policy inputs from outside: MTA-STS's `_mta-sts` TXT record and policy
//! file (src/net/mta_sts.rs, both from the network), and the `tls-policy-map` table
//! (src/config/tls_policy.rs, an operator's file). The first byte picks the parser;
//! whatever parses answers the questions delivery asks of it without a panic.

use mtad::config::route::{NextHop, Transport};
use mtad::config::tls_policy::{TlsPolicyMap, TlsRule, choose};
use mtad::net::mta_sts::{Policy, parse_txt};

pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => {
            if let Ok(id) = parse_txt(&text) {
                assert!(!id.is_empty() && id.len() <= 32, "{id:?}");
            }
        }
        1 => {
            if let Ok(p) = Policy::parse(&text) {
                assert!(p.max_age <= mtad::net::mta_sts::MAX_AGE);
                for host in ["mx.example.com", "a.b.example.com", "", "."] {
                    let _ = p.allows(host);
                }
                for m in &p.mx {
                    let host = m.strip_prefix("*.").map_or_else(|| m.clone(), |b| format!("x.{b}"));
                    assert!(p.allows(&host), "{m} does not match {host}");
                }
            }
        }
        2 => {
            if let Ok(map) = TlsPolicyMap::parse(&text) {
                for domain in ["example.com", "a.b.example.com", "[relay.test]"] {
                    let t = Transport::Smtp(NextHop::Mx {
                        domain: domain.into(),
                        port: None,
                    });
                    let c = choose(None, Some(&map), Default::default(), &t);
                    let _ = c.rule.cert_names(domain, "mx.example.com");
                }
            }
        }
        _ => {
            if let Ok(rule) = TlsRule::parse(&text) {
                // what it shows parses back to the same rule
                assert_eq!(TlsRule::parse(&rule.to_string()), Ok(rule.clone()));
            }
        }
    }
}
