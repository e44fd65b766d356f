//! DNS block and allow lists, scored the way postscreen scores
//! `postscreen_dnsbl_sites`: every site whose answer matches its filter adds its
//! weight; the key is listed when the sum reaches the threshold.
//!
//! All the zones of one list are asked in parallel (each zone once, however many
//! sites name it), within the list's `timeout`. A zone that does not answer (timeout,
//! SERVFAIL) is unknown, not "not listed": when the answers that did come decide
//! either way whatever the unknown zones would have said, that is the result;
//! otherwise the check is a temporary failure (the rule defers), never a silent pass
//! nor a hard reject.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::config::services::{Dnsbl, DnsblKey};
use crate::net::dns::{Query, Resolver, reversed};

/// What one list says about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    /// The sum of the weights of the sites that list the key.
    pub score: i64,
    /// Whether `score` reaches the list's threshold.
    pub listed: bool,
    /// The listing with the largest positive weight, for the reply: the zone, and its
    /// TXT record at the same name (empty when it has none).
    pub top: Option<(String, String)>,
    /// The name that was asked in each zone (for the reply and logs).
    pub key: String,
}

/// The zones could not say (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DNS list {list}: no answer from {zones} (known score {score}, threshold {threshold})")]
pub struct DnsblError {
    pub list: String,
    pub zones: String,
    pub score: i64,
    pub threshold: i64,
}

/// What a zone answered for one key: its A records, or nothing in time.
type Answers = BTreeMap<String, Option<Vec<Ipv4Addr>>>;
/// A score: `(score, listed, zone of the top listing)`.
type Scored = (i64, bool, Option<String>);
/// No score: `(the score known, the zones that did not answer)`.
type Unknown = (i64, Vec<String>);

/// The name asked in each zone for this key, or `None` when there is nothing to ask
/// (no sender domain for the null sender, an IPv6 client of a list that only knows
/// names, a HELO that is an address literal...).
pub fn key_of(
    dnsbl: &Dnsbl,
    client: IpAddr,
    helo: Option<&str>,
    sender: Option<&str>,
) -> Option<Key> {
    match dnsbl.key {
        // an IPv4 client on an IPv6 socket (::ffff:192.0.2.1) is asked as IPv4
        DnsblKey::Client => Some(Key::Ip(client.to_canonical())),
        DnsblKey::Helo => domain_key(helo?),
        DnsblKey::SenderDomain => domain_key(sender?.rsplit_once('@')?.1),
    }
}

/// What a list is asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Ip(IpAddr),
    Domain(String),
}

impl Key {
    fn name_in(&self, zone: &str) -> String {
        match self {
            Key::Ip(ip) => reversed(*ip, zone),
            Key::Domain(d) => format!("{d}.{zone}"),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Key::Ip(ip) => ip.to_string(),
            Key::Domain(d) => d.clone(),
        }
    }
}

fn domain_key(name: &str) -> Option<Key> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(Key::Domain(name))
}

/// One DNS answer a check got: the name, the query, the records or why none.
pub type Asked = (String, Query, Result<Vec<String>, String>);

/// Asks every zone of `dnsbl` about `key` in parallel, within its timeout, and scores;
/// with every answer that came (for the decision log: a replay scores them again).
pub async fn check(
    dnsbl: &Dnsbl,
    resolver: &Resolver,
    key: &Key,
) -> (Result<Score, DnsblError>, Vec<Asked>) {
    let mut asked = Vec::new();
    let scored = check_asked(dnsbl, resolver, key, &mut asked).await;
    (scored, asked)
}

async fn check_asked(
    dnsbl: &Dnsbl,
    resolver: &Resolver,
    key: &Key,
    asked: &mut Vec<Asked>,
) -> Result<Score, DnsblError> {
    let zones: Vec<&str> = {
        let mut z: Vec<&str> = dnsbl.sites.iter().map(|s| s.zone.as_str()).collect();
        z.sort_unstable();
        z.dedup();
        z
    };
    let mut tasks = tokio::task::JoinSet::new();
    for zone in &zones {
        let (resolver, name, zone) = (resolver.clone(), key.name_in(zone), zone.to_string());
        tasks.spawn(async move {
            let answer = resolver.records(&name, Query::A).await;
            (zone, name, answer)
        });
    }
    let mut answers = Answers::new();
    let deadline = tokio::time::Instant::now() + dnsbl.timeout;
    let metrics = crate::metrics::get();
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Ok((zone, name, answer)) = joined {
            asked.push((name, Query::A, answer.clone().map_err(|e| e.to_string())));
            metrics.dnsbl_query(
                &dnsbl.name,
                match &answer {
                    Ok(a) if a.is_empty() => "not_listed",
                    Ok(_) => "listed",
                    // the resolver's own deadline, or its upstream's
                    Err(crate::net::dns::DnsError::Temporary { message, .. })
                        if message.contains("timed out") =>
                    {
                        "timeout"
                    }
                    Err(_) => "error",
                },
            );
            let answer = answer
                .ok()
                .map(|a| a.iter().filter_map(|s| s.parse().ok()).collect());
            answers.insert(zone, answer);
        }
    }
    tasks.abort_all();
    // the zones that did not answer in time
    for _ in answers.len()..zones.len() {
        metrics.dnsbl_query(&dnsbl.name, "timeout");
    }
    let (score, listed, top) = outcome(dnsbl, &answers)?;
    let top = match top {
        Some(zone) => {
            let name = key.name_in(&zone);
            let txt = tokio::time::timeout(
                remaining(deadline).max(Duration::from_millis(500)),
                resolver.records(&name, Query::Txt),
            )
            .await;
            asked.push((
                name,
                Query::Txt,
                match &txt {
                    Ok(Ok(t)) => Ok(t.clone()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                },
            ));
            let txt = match txt {
                Ok(Ok(t)) => t.into_iter().next().unwrap_or_default(),
                _ => String::new(),
            };
            Some((zone, txt))
        }
        None => None,
    };
    Ok(Score {
        score,
        listed,
        top: if listed { top } else { None },
        key: key.display(),
    })
}

/// [`check`] with the answers of `answer` (a dry run's DNS fixture) instead of DNS.
pub fn check_with<E>(
    dnsbl: &Dnsbl,
    key: &Key,
    answer: impl Fn(&str, Query) -> Result<Vec<String>, E>,
) -> Result<Score, DnsblError> {
    let answers: Answers = dnsbl
        .sites
        .iter()
        .map(|s| {
            let got = answer(&key.name_in(&s.zone), Query::A)
                .ok()
                .map(|a| a.iter().filter_map(|s| s.parse().ok()).collect());
            (s.zone.clone(), got)
        })
        .collect();
    let (score, listed, top) = outcome(dnsbl, &answers)?;
    let top = top.filter(|_| listed).map(|zone| {
        let txt = answer(&key.name_in(&zone), Query::Txt)
            .ok()
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        (zone, txt)
    });
    Ok(Score {
        score,
        listed,
        top,
        key: key.display(),
    })
}

/// [`score`], its unknown outcome as the error.
fn outcome(dnsbl: &Dnsbl, answers: &Answers) -> Result<Scored, DnsblError> {
    score(dnsbl, answers).map_err(|(known, unknown)| DnsblError {
        list: dnsbl.name.clone(),
        zones: unknown.join(", "),
        score: known,
        threshold: dnsbl.threshold,
    })
}

fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

/// The score from the zones' answers: `(score, listed, zone of the top listing)`, or
/// when zones are missing and could change the outcome, `(known score, the zones)`.
fn score(dnsbl: &Dnsbl, answers: &Answers) -> Result<Scored, Unknown> {
    let (mut known, mut low, mut high) = (0i64, 0i64, 0i64);
    let mut unknown = Vec::new();
    let mut top: Option<(i64, &str)> = None;
    for site in &dnsbl.sites {
        match answers.get(&site.zone) {
            Some(Some(addrs)) => {
                let hit = addrs
                    .iter()
                    .any(|a| site.filter.as_ref().is_none_or(|f| f.matches(*a)));
                if hit {
                    known += site.weight;
                    if site.weight > 0 && top.is_none_or(|(w, _)| site.weight > w) {
                        top = Some((site.weight, &site.zone));
                    }
                }
            }
            _ => {
                if !unknown.contains(&site.zone) {
                    unknown.push(site.zone.clone());
                }
                if site.weight < 0 {
                    low += site.weight;
                } else {
                    high += site.weight;
                }
            }
        }
    }
    let threshold = dnsbl.threshold;
    if unknown.is_empty() || known + low >= threshold {
        Ok((known, known >= threshold, top.map(|(_, z)| z.to_owned())))
    } else if known + high < threshold {
        Ok((known, false, None))
    } else {
        Err((known, unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::services::DnsblSite;

    fn list(sites: &[&str], threshold: i64) -> Dnsbl {
        Dnsbl {
            name: "t".into(),
            sites: sites.iter().map(|s| DnsblSite::parse(s).unwrap()).collect(),
            threshold,
            timeout: Duration::from_secs(1),
            key: DnsblKey::Client,
        }
    }

    fn answers(list: &[(&str, Option<&[&str]>)]) -> Answers {
        list.iter()
            .map(|(z, a)| {
                (
                    z.to_string(),
                    a.map(|a| a.iter().map(|s| s.parse().unwrap()).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn weights_add_up_and_filters_count() {
        let l = list(
            &[
                "bl.test=127.0.0.[2..11]*3",
                "bl.test=127.0.0.3",
                "allow.test*-2",
            ],
            3,
        );
        let a = answers(&[("bl.test", Some(&["127.0.0.2"])), ("allow.test", Some(&[]))]);
        assert_eq!(score(&l, &a), Ok((3, true, Some("bl.test".into()))));
        let a = answers(&[("bl.test", Some(&["127.0.0.3"])), ("allow.test", Some(&[]))]);
        assert_eq!(score(&l, &a), Ok((4, true, Some("bl.test".into()))));
        // allowlisted
        let a = answers(&[
            ("bl.test", Some(&["127.0.0.2"])),
            ("allow.test", Some(&["127.0.10.1"])),
        ]);
        assert_eq!(score(&l, &a), Ok((1, false, Some("bl.test".into()))));
        // an answer outside the filter is not a listing
        let a = answers(&[
            ("bl.test", Some(&["127.0.0.12"])),
            ("allow.test", Some(&[])),
        ]);
        assert_eq!(score(&l, &a), Ok((0, false, None)));
    }

    #[test]
    fn missing_zones_decide_only_when_they_cannot_matter() {
        let l = list(&["bl.test*3", "slow.test*1", "allow.test*-2"], 3);
        // listed without the slow zone, and the allowlist answered: listed
        let a = answers(&[
            ("bl.test", Some(&["127.0.0.2"])),
            ("slow.test", None),
            ("allow.test", Some(&[])),
        ]);
        assert_eq!(score(&l, &a).map(|s| s.1), Ok(true));
        // the allowlist is silent and could bring the score under: unknown
        let a = answers(&[
            ("bl.test", Some(&["127.0.0.2"])),
            ("slow.test", Some(&[])),
            ("allow.test", None),
        ]);
        assert_eq!(score(&l, &a), Err((3, vec!["allow.test".to_string()])));
        // not listed anywhere, and the silent zone cannot reach 3 alone: not listed
        let a = answers(&[
            ("bl.test", Some(&[])),
            ("slow.test", None),
            ("allow.test", Some(&[])),
        ]);
        assert_eq!(score(&l, &a), Ok((0, false, None)));
        // the silent zone alone could list: unknown
        let a = answers(&[
            ("bl.test", None),
            ("slow.test", Some(&[])),
            ("allow.test", Some(&[])),
        ]);
        assert!(score(&l, &a).is_err());
    }

    #[test]
    fn keys() {
        let mut l = list(&["rhs.test"], 1);
        l.key = DnsblKey::SenderDomain;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            key_of(&l, ip, None, Some("a@Spam.Example.")),
            Some(Key::Domain("spam.example".into()))
        );
        assert_eq!(key_of(&l, ip, None, Some("")), None);
        assert_eq!(key_of(&l, ip, None, Some("a@[192.0.2.1]")), None);
        assert_eq!(
            Key::Domain("spam.example".into()).name_in("rhs.test"),
            "spam.example.rhs.test"
        );
        l.key = DnsblKey::Client;
        assert_eq!(key_of(&l, ip, None, None), Some(Key::Ip(ip)));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key_of(&l, mapped, None, None), Some(Key::Ip(ip)));
    }
}
