//! Named sets that policy rules refer to: networks (`networks` nodes, like Postfix's
//! `mynetworks`) and domains (`domains` nodes, like `relay_domains`).
//!
//! Sets are built once from validated configuration and never change afterwards: a
//! reload builds new sets inside a new policy and swaps the whole policy. Matching is
//! deliberately conservative, because these sets decide who may relay:
//!
//! - [`NetworkSet`] matches an IPv4-mapped IPv6 client (`::ffff:192.0.2.1`, which is
//!   what a dual-stack socket reports for an IPv4 peer) against IPv4 entries, so that
//!   `127.0.0.0/8` means the same thing whichever socket accepted the connection.
//! - [`DomainSet`] follows Postfix's table convention: `example.test` matches exactly
//!   that name, `.example.test` matches any subdomain of it but not the name itself.
//!   Matching ignores ASCII case and one trailing dot.
//!
//! Key → value tables (`table` nodes: inline maps and Postfix-format map, regexp and
//! CIDR files) are in [`table`]; [`sql`] holds the database connections SQL-backed
//! lookups share (the `users` SQL backend today).

pub mod sql;
pub mod sql_table;
mod table;
pub mod tape;

mod alias;
pub use alias::{parse_aliases, split_addresses};
pub use sql_table::{LookupError, SqlTable};
pub use table::{
    PatternLine, ResultLine, Table, TableError, TableKind, inline_map, parse_cidr, parse_map,
    parse_regexp,
};

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A set of IP networks, for `client=` conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSet {
    /// Aggregated (sorted, overlaps merged) networks: the scan stays short however
    /// the operator wrote the list.
    nets: Vec<IpNet>,
}

impl NetworkSet {
    /// Builds a set from networks; a host address is a `/32` or `/128` network.
    pub fn new(nets: Vec<IpNet>) -> Self {
        let trunc: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
        Self {
            nets: IpNet::aggregate(&trunc),
        }
    }

    /// Whether `ip` lies in one of the networks.
    ///
    /// An IPv4-mapped IPv6 address is tried both as itself and as the IPv4 address
    /// it carries, so it matches IPv4 entries (and `::ffff:0:0/96`-style entries).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }

    /// The networks, aggregated.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether the set holds no network (it then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// A set of domain names, for `rcpt-domain=` conditions: the names written, and
/// optionally a table (a database, like Postfix's `relay_domains = mysql:...`) whose
/// keys are more of them.
#[derive(Clone, Debug)]
pub struct DomainSet {
    /// Names that match exactly (lowercased, without trailing dot).
    exact: HashSet<String>,
    /// Parents whose proper subdomains match: `.example.test` is stored as
    /// `example.test`.
    parents: HashSet<String>,
    /// `table=`: a domain is in the set when the table has it as a key.
    table: Option<Arc<Table>>,
}

impl PartialEq for DomainSet {
    fn eq(&self, other: &Self) -> bool {
        self.exact == other.exact
            && self.parents == other.parents
            && match (&self.table, &other.table) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for DomainSet {}

impl DomainSet {
    /// Builds a set from entries: `name` matches exactly, `.name` matches every
    /// subdomain of `name` (but not `name`). Entries are normalised like queries:
    /// ASCII-lowercased, one trailing dot removed. Empty entries are ignored.
    pub fn new(entries: Vec<String>) -> Self {
        let mut exact = HashSet::new();
        let mut parents = HashSet::new();
        for entry in entries {
            let entry = normalize(&entry);
            if let Some(parent) = entry.strip_prefix('.') {
                if !parent.is_empty() {
                    parents.insert(parent.to_owned());
                }
            } else if !entry.is_empty() {
                exact.insert(entry);
            }
        }
        Self {
            exact,
            parents,
            table: None,
        }
    }

    /// The set with `table`'s keys as more names (exact matches).
    pub fn with_table(mut self, table: Arc<Table>) -> Self {
        self.table = Some(table);
        self
    }

    /// Whether `domain` is in the set. Case-insensitive; one trailing dot is ignored.
    /// Allocates nothing unless `domain` has upper-case letters. An error only when
    /// the set has a table that cannot answer (a database that is down): callers
    /// answer "try again later", never "no".
    pub fn contains(&self, domain: &str) -> Result<bool, LookupError> {
        let domain = normalize_query(domain);
        if domain.is_empty() || domain.starts_with('.') {
            return Ok(false);
        }
        if self.exact.contains(domain.as_ref()) {
            return Ok(true);
        }
        // Every proper suffix that starts after a dot: for a.b.c, try b.c then c.
        if !self.parents.is_empty()
            && domain
                .match_indices('.')
                .any(|(i, _)| self.parents.contains(&domain[i + 1..]))
        {
            return Ok(true);
        }
        match &self.table {
            Some(table) => Ok(table.lookup(&domain)?.is_some()),
            None => Ok(false),
        }
    }

    /// Whether the set holds no entry (it then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.parents.is_empty() && self.table.is_none()
    }

    /// The names that match exactly (lowercased), the parents whose proper subdomains
    /// match, and the table whose keys are more names: what the static analysis of a
    /// policy reads ([`crate::policy::Pipeline::relay_analysis`]).
    pub fn parts(
        &self,
    ) -> (
        impl Iterator<Item = &str>,
        impl Iterator<Item = &str>,
        Option<&Table>,
    ) {
        (
            self.exact.iter().map(String::as_str),
            self.parents.iter().map(String::as_str),
            self.table.as_deref(),
        )
    }
}

/// Like [`normalize`], borrowing when nothing needs lowercasing.
fn normalize_query(domain: &str) -> Cow<'_, str> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(domain.to_ascii_lowercase())
    } else {
        Cow::Borrowed(domain)
    }
}

/// Lowercases ASCII and strips one trailing dot.
fn normalize(domain: &str) -> String {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    domain.to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
