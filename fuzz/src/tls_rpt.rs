//! TLS reporting's `_smtp._tls` TXT record (src/net/tls_rpt.rs), from the network: it
//! parses or is refused without a panic, and what it keeps is bounded and well formed.

use mtad::net::tls_rpt::{MAX_RUA, Rua, parse_record};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(rua) = parse_record(&text) {
        assert!(!rua.is_empty() && rua.len() <= MAX_RUA, "{rua:?}");
        for r in &rua {
            match r {
                Rua::Mailto(a) => {
                    let (local, domain) = a.rsplit_once('@').expect("an address");
                    assert!(!local.is_empty() && !domain.is_empty(), "{a:?}");
                    assert!(a.chars().all(|c| c.is_ascii_graphic()), "{a:?}");
                }
                Rua::Https(u) => assert!(u.starts_with("https://"), "{u:?}"),
            }
        }
    }
}
