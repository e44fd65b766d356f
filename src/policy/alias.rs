//! Recipient rewriting before routing: unqualified addresses get the origin domain,
//! then virtual(5) and aliases(5) tables expand them, recursively and loop-safe.
//!
//! - qualify: `root` → `root@ORIGIN` (Postfix's `myorigin`, seed 004);
//! - virtual (every recipient): `user@domain`, then `@domain` (a catch-all);
//! - aliases (recipients in local domains — the `domains "local"` set, the origin and
//!   the hostname): the local part, then the local part without `+extension`.
//!
//! Each result is expanded again. An address that reappears on its own expansion
//! path is kept as it is (so `root: root, admin@x` delivers to both, like Postfix),
//! expansion deeper than [`MAX_DEPTH`] or wider than [`MAX_RESULTS`] is an error
//! (the recipient is deferred, never silently dropped), and duplicates are removed.

use std::sync::Arc;

use super::address::{self, canonical_or_same};
use crate::lookup::{DomainSet, Table};

/// How deep aliases may nest.
pub const MAX_DEPTH: usize = 20;
/// How many addresses one recipient may expand to.
pub const MAX_RESULTS: usize = 1000;

/// The tables and names recipient rewriting needs, from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Rewriter {
    pub origin: String,
    pub hostname: String,
    pub local_domains: Option<Arc<DomainSet>>,
    pub aliases: Option<Arc<Table>>,
    pub virtual_aliases: Option<Arc<Table>>,
}

impl Rewriter {
    /// Whether the virtual alias table has `addr` or its domain's catch-all
    /// (`@domain`): the address exists as far as RCPT is concerned.
    pub fn is_virtual_alias(&self, addr: &str) -> Result<bool, crate::lookup::LookupError> {
        let Some(t) = &self.virtual_aliases else {
            return Ok(false);
        };
        let lower = canonical_or_same(addr).to_ascii_lowercase();
        if t.lookup(&lower)?.is_some() {
            return Ok(true);
        }
        match lower.rsplit_once('@') {
            Some((_, domain)) => Ok(t.lookup(&format!("@{domain}"))?.is_some()),
            None => Ok(false),
        }
    }

    /// Whether anything can change a recipient (so callers can skip the work).
    pub fn is_identity(&self) -> bool {
        self.aliases.is_none() && self.virtual_aliases.is_none()
    }

    fn is_local(&self, domain: &str) -> Result<bool, crate::lookup::LookupError> {
        Ok(domain.eq_ignore_ascii_case(&self.origin)
            || domain.eq_ignore_ascii_case(&self.hostname)
            || match &self.local_domains {
                Some(d) => d.contains(domain)?,
                None => false,
            })
    }

    /// `addr` in canonical form ([`crate::policy::address`]), with the origin domain
    /// added when it has none. What does not parse as an address (an alias target
    /// such as `|command`) is kept as it is.
    pub fn qualify(&self, addr: &str) -> String {
        match address::parse(addr) {
            Ok(p) if p.domain.is_none() => format!(
                "{}@{}",
                address::quote_local(&p.local),
                self.origin.to_ascii_lowercase()
            ),
            Ok(p) => p.canonical(),
            Err(_) if addr.contains('@') => addr.to_owned(),
            Err(_) => format!("{addr}@{}", self.origin),
        }
    }

    /// The final recipients for `rcpt`, in order, without duplicates (compared
    /// without case, in canonical form: Postfix's duplicate filter).
    pub fn expand(&self, rcpt: &str) -> Result<Vec<String>, String> {
        self.expand_checked(rcpt).map_err(|e| e.to_string())
    }

    /// [`Rewriter::expand`], telling a table that could not answer from a limit.
    pub fn expand_checked(&self, rcpt: &str) -> Result<Vec<String>, ExpandError> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.expand_into(&self.qualify(rcpt), 0, &mut path, &mut out)?;
        let mut seen = std::collections::HashSet::new();
        out.retain(|a: &String| seen.insert(a.to_ascii_lowercase()));
        Ok(out)
    }

    fn expand_into(
        &self,
        addr: &str,
        depth: usize,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), ExpandError> {
        if out.len() >= MAX_RESULTS {
            return Err(ExpandError::Limit(format!(
                "alias expansion of more than {MAX_RESULTS} addresses"
            )));
        }
        let lower = addr.to_ascii_lowercase();
        if path.contains(&lower) {
            out.push(addr.to_owned());
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(ExpandError::Limit(format!(
                "aliases nest deeper than {MAX_DEPTH} at <{addr}> (a loop?)"
            )));
        }
        let (local, domain) = address::split(&lower);
        let failed = ExpandError::Lookup;
        let mut targets = None;
        if let Some(t) = &self.virtual_aliases {
            targets = match t.lookup(&lower).map_err(failed)? {
                Some(v) => Some(v),
                None => t.lookup(&format!("@{domain}")).map_err(failed)?,
            };
        }
        if targets.is_none()
            && let Some(aliases) = &self.aliases
            && self.is_local(domain).map_err(failed)?
        {
            targets = match aliases.lookup(local).map_err(failed)? {
                Some(v) => Some(v),
                None => match local.split_once('+') {
                    Some((user, _)) if !user.starts_with('"') => {
                        aliases.lookup(user).map_err(failed)?
                    }
                    _ => None,
                },
            };
        }
        let Some(targets) = targets else {
            out.push(addr.to_owned());
            return Ok(());
        };
        path.push(lower);
        // a comma or space inside a quoted local part does not split
        for target in crate::lookup::split_addresses(&targets) {
            let target = self.qualify(target);
            self.expand_into(&target, depth + 1, path, out)?;
        }
        path.pop();
        Ok(())
    }
}

/// Why a recipient could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandError {
    /// A table could not answer (a database that is down): try again later.
    Lookup(crate::lookup::LookupError),
    /// Too deep or too wide.
    Limit(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Lookup(e) => write!(f, "temporary lookup failure: {e}"),
            ExpandError::Limit(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::{parse_aliases, parse_map};

    fn rewriter(aliases: &str, virtual_: &str) -> Rewriter {
        Rewriter {
            origin: "example.jp".into(),
            hostname: "mail.example.jp".into(),
            local_domains: Some(Arc::new(DomainSet::new(vec!["localhost".into()]))),
            aliases: Some(Arc::new(parse_aliases(aliases).unwrap())),
            virtual_aliases: Some(Arc::new(parse_map(virtual_).unwrap())),
        }
    }

    #[test]
    fn seed_004_root_reaches_an_external_mailbox() {
        let r = rewriter("root: admin@example.com\npostmaster: root\n", "");
        assert_eq!(r.expand("root").unwrap(), ["admin@example.com"]);
        assert_eq!(
            r.expand("postmaster@localhost").unwrap(),
            ["admin@example.com"]
        );
        // not a local domain: aliases do not apply
        assert_eq!(
            r.expand("root@elsewhere.test").unwrap(),
            ["root@elsewhere.test"]
        );
    }

    #[test]
    fn virtual_then_aliases_recursively() {
        let r = rewriter(
            "team: alice, bob\nalice: alice@mail.example.jp\n",
            "sales@corp.test team@example.jp\n@old.test new@corp.test\n",
        );
        assert_eq!(
            r.expand("sales@corp.test").unwrap(),
            ["alice@mail.example.jp", "bob@example.jp"]
        );
        assert_eq!(r.expand("anyone@old.test").unwrap(), ["new@corp.test"]);
        assert_eq!(
            r.expand("ceo+news@example.jp").unwrap(),
            ["ceo+news@example.jp"]
        );
    }

    #[test]
    fn quoted_local_parts_are_one_target() {
        let r = rewriter(
            "root: \"a,b\"@example.com, other@example.com\n",
            "\"john doe\"@corp.test \"j d\"@example.com, \"x,y\"@example.com\n",
        );
        assert_eq!(
            r.expand("root").unwrap(),
            ["\"a,b\"@example.com", "other@example.com"]
        );
        assert_eq!(
            r.expand("\"john doe\"@corp.test").unwrap(),
            ["\"j d\"@example.com", "\"x,y\"@example.com"]
        );
    }

    #[test]
    fn addresses_are_canonical_and_quoted_targets_are_one_address() {
        let r = rewriter(
            "root: admin@example.com\npostmaster: \"root\"\n",
            "jd@corp.test \"jd, sales\"@Corp.Test, <bob@corp.test>\n",
        );
        // a quoted dot-atom is the plain address, in the input and in a target
        assert_eq!(
            r.expand("\"root\"@Example.JP").unwrap(),
            ["admin@example.com"]
        );
        assert_eq!(r.expand("postmaster").unwrap(), ["admin@example.com"]);
        // a comma inside quotes does not split a target
        assert_eq!(
            crate::lookup::split_addresses("\"jd, sales\"@corp.test, <bob@corp.test> \"a\\\"b\"@x")
                .collect::<Vec<_>>(),
            ["\"jd, sales\"@corp.test", "bob@corp.test", "\"a\\\"b\"@x"]
        );
        assert_eq!(
            r.expand("\"jd\"@Corp.test").unwrap(),
            ["\"jd, sales\"@corp.test", "bob@corp.test"]
        );
    }

    #[test]
    fn loops_are_safe() {
        let r = rewriter("root: root, admin@example.com\na: b\nb: a\n", "");
        assert_eq!(
            r.expand("root").unwrap(),
            ["root@example.jp", "admin@example.com"]
        );
        assert_eq!(r.expand("a").unwrap(), ["a@example.jp"]);
        let deep: String = (0..30).map(|i| format!("l{i}: l{}\n", i + 1)).collect();
        let r = rewriter(&deep, "");
        assert!(r.expand("l0").unwrap_err().contains("deeper than"));
    }
}
