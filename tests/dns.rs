//! Next-hop resolution against a real nameserver: a `dnsmasq` started by each test on
//! loopback with the records it needs (`--mx-host`, `--host-record`, `--local`). A
//! missing dnsmasq fails the tests (./run-tests installs Debian's dnsmasq-base).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use mtad::net::dns::{DnsError, DnsTimeouts, MailHost, Resolver};

mod common;

use common::peers::{Dnsmasq, dnsmasq_binary, free_udp_tcp_port as free_port};

trait Resolve {
    fn resolver(&self) -> Resolver;
}

impl Resolve for Dnsmasq {
    fn resolver(&self) -> Resolver {
        Resolver::with_nameserver_and(
            self.addr,
            DnsTimeouts {
                query_timeout: Duration::from_secs(2),
                attempts: 1,
            },
        )
    }
}

fn names(hosts: &[MailHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

#[tokio::test]
async fn mx_records_come_by_preference() {
    let dns = Dnsmasq::start(&[
        "--mx-host=pref.test,mx20.pref.test,20",
        "--mx-host=pref.test,mx5.pref.test,5",
        "--mx-host=pref.test,mx10.pref.test,10",
    ]);
    let resolver = dns.resolver();
    // Any case, with or without the trailing dot.
    for query in ["pref.test", "PREF.Test.", "pref.test."] {
        let hosts = resolver.mail_hosts(query).await.unwrap();
        assert_eq!(
            hosts,
            [
                MailHost {
                    name: "mx5.pref.test".into(),
                    preference: 5
                },
                MailHost {
                    name: "mx10.pref.test".into(),
                    preference: 10
                },
                MailHost {
                    name: "mx20.pref.test".into(),
                    preference: 20
                },
            ],
            "{query}"
        );
    }
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    let dns = Dnsmasq::start(&[
        "--mx-host=eq.test,a.eq.test,10",
        "--mx-host=eq.test,b.eq.test,10",
        "--mx-host=eq.test,backup.eq.test,20",
    ]);
    let resolver = dns.resolver();
    let mut orders = HashSet::new();
    for _ in 0..50 {
        let hosts = resolver.mail_hosts("eq.test").await.unwrap();
        let hosts = names(&hosts).join(",");
        assert!(
            hosts == "a.eq.test,b.eq.test,backup.eq.test"
                || hosts == "b.eq.test,a.eq.test,backup.eq.test",
            "{hosts}"
        );
        orders.insert(hosts);
    }
    assert_eq!(orders.len(), 2, "only one order in 50 lookups: {orders:?}");
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_mail_host() {
    let dns = Dnsmasq::start(&["--host-record=only-a.test,192.0.2.7"]);
    let resolver = dns.resolver();
    let hosts = resolver.mail_hosts("Only-A.test.").await.unwrap();
    assert_eq!(
        hosts,
        [MailHost {
            name: "only-a.test".into(),
            preference: 0
        }]
    );
    let ips = resolver.addresses(&hosts[0].name).await.unwrap();
    assert_eq!(ips, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn nxdomain_is_a_permanent_no_such_domain() {
    let dns = Dnsmasq::start(&["--host-record=exists.test,192.0.2.1"]);
    let resolver = dns.resolver();
    let err = resolver.mail_hosts("nowhere.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NoSuchDomain {
            domain: "nowhere.test".into()
        }
    );
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_code(), [5, 1, 2]);
    let err = resolver.addresses("nowhere.test").await.unwrap_err();
    assert!(matches!(err, DnsError::NoSuchDomain { .. }), "{err:?}");
}

#[tokio::test]
async fn addresses_ipv4_first_then_ipv6() {
    let dns = Dnsmasq::start(&[
        "--host-record=dual.test,192.0.2.10,2001:db8::10",
        "--host-record=v6.test,2001:db8::6",
        "--host-record=v4.test,192.0.2.4",
        "--mx-host=nomx-addr.test,mx.nomx-addr.test,10",
    ]);
    let resolver = dns.resolver();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        resolver.addresses("DUAL.test.").await.unwrap(),
        [ip("192.0.2.10"), ip("2001:db8::10")]
    );
    assert_eq!(
        resolver.addresses("v6.test").await.unwrap(),
        [ip("2001:db8::6")]
    );
    assert_eq!(
        resolver.addresses("v4.test").await.unwrap(),
        [ip("192.0.2.4")]
    );
    // An address literal needs no lookup.
    assert_eq!(
        resolver.addresses("198.51.100.1").await.unwrap(),
        [ip("198.51.100.1")]
    );
    // A name that exists (it has an MX) but has no A or AAAA.
    let err = resolver.addresses("nomx-addr.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NoAddresses {
            host: "nomx-addr.test".into()
        }
    );
    assert!(err.is_permanent());
}

#[tokio::test]
async fn null_mx_bounces_with_5_1_10() {
    // dnsmasq writes `--mx-host=name,.,0` as an MX whose exchange is the root.
    let dns = Dnsmasq::start(&["--mx-host=nullmx.test,.,0"]);
    let resolver = dns.resolver();
    let err = resolver.mail_hosts("nullmx.test").await.unwrap_err();
    assert_eq!(
        err,
        DnsError::NullMx {
            domain: "nullmx.test".into()
        }
    );
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_code(), [5, 1, 10]);
}

#[tokio::test]
async fn an_unreachable_nameserver_is_temporary() {
    // Nothing listens there: queries time out (UDP) or are refused (TCP).
    let port = free_port();
    let resolver = Resolver::with_nameserver_and(
        SocketAddr::from(([127, 0, 0, 1], port)),
        DnsTimeouts {
            query_timeout: Duration::from_millis(300),
            attempts: 1,
        },
    );
    let started = Instant::now();
    let err = resolver.mail_hosts("any.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary { .. }), "{err:?}");
    assert!(!err.is_permanent());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_helper_finds_dnsmasq() {
    assert!(Path::new(&dnsmasq_binary()).is_file());
}
