//! MTA-STS policies of recipient domains (RFC 8461 §5.1), cached in memory and on disk
//! under the spool (`mta-sts/DOMAIN.json`), so a restart keeps them: each is used until
//! its `max_age` runs out, and fetched again when the `_mta-sts` TXT record's id
//! changes. When the fetch fails, an unexpired cached policy goes on being used; with
//! no TXT record, too (§5.1: a policy is not withdrawn by deleting the record).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::tls_rpt::ResultType;
use crate::net::dns::Resolver;
use crate::net::mta_sts::{MtaStsError, Policy, fetch, parse_txt};

/// A policy as cached: its id and when it stops being valid (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cached {
    pub id: String,
    pub policy: Policy,
    pub expires: u64,
}

/// The MTA-STS cache and fetcher, shared by deliveries.
pub struct MtaSts {
    dir: PathBuf,
    resolver: Resolver,
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    timeout: Duration,
    memory: Mutex<HashMap<String, Cached>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl MtaSts {
    /// Policies cached under `dir`, fetched from port `port` of `mta-sts.DOMAIN` over
    /// `tls` (a verifying configuration).
    pub fn new(
        dir: PathBuf,
        resolver: Resolver,
        tls: Arc<rustls::ClientConfig>,
        port: u16,
    ) -> MtaSts {
        MtaSts {
            dir,
            resolver,
            tls,
            port,
            timeout: Duration::from_secs(20),
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, domain: &str) -> Option<PathBuf> {
        // a domain as a file name: letters, digits, '-' and '.', no leading dot
        let ok = !domain.is_empty()
            && !domain.starts_with('.')
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        ok.then(|| self.dir.join(format!("{domain}.json")))
    }

    fn cached(&self, domain: &str) -> Option<Cached> {
        let now = now();
        if let Some(c) = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .filter(|c| c.expires > now)
        {
            return Some(c.clone());
        }
        let bytes = std::fs::read(self.file(domain)?).ok()?;
        if bytes.len() > 2 * crate::net::mta_sts::MAX_POLICY {
            return None;
        }
        let c: Cached = serde_json::from_slice(&bytes).ok()?;
        (c.expires > now).then(|| {
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(domain.to_owned(), c.clone());
            c
        })
    }

    fn store(&self, domain: &str, c: &Cached) {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_owned(), c.clone());
        let Some(path) = self.file(domain) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(c).unwrap_or_default())?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            warn!(%domain, error = %e, "cannot write the MTA-STS policy cache");
        }
    }

    /// The policy in force for `domain`, if any (RFC 8461 §5.1).
    pub async fn policy(&self, domain: &str) -> Option<Cached> {
        self.lookup(domain).await.0
    }

    /// [`MtaSts::policy`], and why a published policy could not be fetched when none is
    /// in force (for TLS reports: `sts-policy-fetch-error`, `sts-policy-invalid`,
    /// `sts-webpki-invalid`).
    pub async fn lookup(&self, domain: &str) -> (Option<Cached>, Option<(ResultType, String)>) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let id = match self
            .resolver
            .records(&format!("_mta-sts.{domain}"), crate::net::dns::Query::Txt)
            .await
        {
            Ok(records) => {
                let sts: Vec<&String> = records
                    .iter()
                    .filter(|r| r.starts_with("v=STSv1"))
                    .collect();
                match sts.as_slice() {
                    [one] => match parse_txt(one) {
                        Ok(id) => Some(id),
                        Err(e) => {
                            debug!(%domain, error = %e, "MTA-STS record ignored");
                            None
                        }
                    },
                    // none, or several (§3.1: then there is no record)
                    _ => None,
                }
            }
            Err(e) => {
                debug!(%domain, error = %e, "MTA-STS record lookup failed");
                None
            }
        };
        let Some(id) = id else {
            return (cached, None);
        };
        if let Some(c) = &cached
            && c.id == id
        {
            return (cached, None);
        }
        let host = format!("mta-sts.{domain}");
        let fetched = match self.resolver.addresses(&host).await {
            Ok(ips) => match ips.first() {
                Some(ip) => {
                    let addr = std::net::SocketAddr::new(*ip, self.port);
                    fetch(&domain, addr, self.tls.clone(), self.timeout).await
                }
                None => Err(MtaStsError::Fetch(format!("{host}: no address"))),
            },
            Err(e) => Err(MtaStsError::Fetch(e.to_string())),
        };
        match fetched {
            Ok(policy) => {
                let c = Cached {
                    id,
                    expires: now().saturating_add(policy.max_age),
                    policy,
                };
                self.store(&domain, &c);
                (Some(c), None)
            }
            Err(e) => {
                warn!(%domain, error = %e, "MTA-STS policy fetch failed; using the cached policy if any");
                let result = match e {
                    MtaStsError::Policy(_) => ResultType::StsPolicyInvalid,
                    MtaStsError::Webpki(_) => ResultType::StsWebpkiInvalid,
                    MtaStsError::Record(_) | MtaStsError::Fetch(_) => {
                        ResultType::StsPolicyFetchError
                    }
                };
                let failure = cached.is_none().then(|| (result, e.to_string()));
                (cached, failure)
            }
        }
    }
}
