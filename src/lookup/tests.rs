use std::net::IpAddr;

use super::*;

fn nets(list: &[&str]) -> NetworkSet {
    NetworkSet::new(list.iter().map(|s| s.parse().unwrap()).collect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn domains(list: &[&str]) -> DomainSet {
    DomainSet::new(list.iter().map(|s| s.to_string()).collect())
}

#[test]
fn network_set_matches_v4_and_v6() {
    let set = nets(&["127.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    assert!(set.contains(ip("127.0.0.1")));
    assert!(set.contains(ip("127.255.255.255")));
    assert!(set.contains(ip("192.0.2.7")));
    assert!(!set.contains(ip("192.0.2.8")));
    assert!(!set.contains(ip("128.0.0.1")));
    assert!(set.contains(ip("2001:db8::1")));
    assert!(!set.contains(ip("2001:db9::1")));
    assert!(!set.contains(ip("::1")));
}

#[test]
fn network_set_matches_v4_mapped_clients_against_v4_entries() {
    let set = nets(&["127.0.0.0/8"]);
    assert!(set.contains(ip("::ffff:127.0.0.1")));
    assert!(!set.contains(ip("::ffff:10.0.0.1")));
    // The mapped prefix written in IPv6 still matches the mapped form.
    let set = nets(&["::ffff:10.0.0.0/104"]);
    assert!(set.contains(ip("::ffff:10.1.2.3")));
    // A v4-compatible (not mapped) address is not an IPv4 address.
    let set = nets(&["0.0.0.0/0"]);
    assert!(!set.contains(ip("::1")));
}

#[test]
fn network_set_aggregates_and_truncates() {
    let set = nets(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/8"]);
    assert_eq!(set.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    assert!(nets(&[]).is_empty());
    assert!(!nets(&[]).contains(ip("127.0.0.1")));
}

#[test]
fn domain_set_exact_and_subdomains() {
    let set = domains(&["example.test", ".sub.example.org"]);
    assert!(set.contains("example.test").unwrap());
    assert!(set.contains("EXAMPLE.Test").unwrap());
    assert!(set.contains("example.test.").unwrap());
    assert!(!set.contains("a.example.test").unwrap());
    assert!(!set.contains("sub.example.org").unwrap());
    assert!(set.contains("a.sub.example.org").unwrap());
    assert!(set.contains("b.a.sub.example.org").unwrap());
    assert!(set.contains("A.Sub.Example.Org.").unwrap());
    assert!(!set.contains("asub.example.org").unwrap());
    assert!(!set.contains("example.org").unwrap());
    assert!(!set.contains("").unwrap());
    assert!(!set.contains(".").unwrap());
    assert!(!set.contains(".sub.example.org").unwrap());
}

#[test]
fn domain_set_both_forms_cover_name_and_subdomains() {
    let set = domains(&["example.test", ".example.test"]);
    assert!(set.contains("example.test").unwrap());
    assert!(set.contains("mx.example.test").unwrap());
    assert!(!set.contains("example.test.evil").unwrap());
    assert!(!set.contains("notexample.test").unwrap());
    assert!(!domains(&[]).contains("example.test").unwrap());
    assert!(domains(&[]).is_empty());
}
