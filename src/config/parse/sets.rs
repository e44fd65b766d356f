//! The first pass: named sets (`networks`, `domains`, and the nodes `sets` reads with them).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use kdl::{KdlEntry, KdlNode};

use super::{Parser, Sets, SourceFile, is_hostname};
use crate::lookup::{DomainSet, NetworkSet};
impl Parser {
    pub(super) fn sets<'n>(&mut self, nodes: &[(Arc<SourceFile>, &'n KdlNode)]) -> Sets {
        let mut sets = Sets::default();
        // `domains NAME table="T"`: linked once every table is read
        let mut domain_tables: Vec<(String, Arc<SourceFile>, &'n KdlEntry)> = Vec::new();
        for (file, node) in nodes {
            self.cur = file.clone();
            let kind = node.name().value();
            if kind == "table" {
                self.table(node, &mut sets.tables);
                continue;
            }
            if kind == "credentials" {
                self.credentials(node, &mut sets.credentials);
                continue;
            }
            if kind == "content-filter" {
                self.content_filter(node, &mut sets.filters);
                continue;
            }
            if kind == "policy-service" {
                self.policy_service(node, &mut sets.policy_services);
                continue;
            }
            if kind == "dnsbl" {
                self.dnsbl(node, &mut sets.dnsbls);
                continue;
            }
            if kind == "milter" {
                self.milter(node, &mut sets.milters);
                continue;
            }
            if kind == "rspamd" {
                self.rspamd(node, &mut sets.milters);
                continue;
            }
            if kind == "users" {
                self.users(node, &mut sets.users);
                continue;
            }
            if kind != "networks" && kind != "domains" {
                continue;
            }
            self.check_annotations(node);
            let props = self.props(node, if kind == "domains" { &["table"] } else { &[] });
            self.no_children(node);
            let usage = if kind == "networks" {
                "networks NAME \"CIDR-or-IP\"..."
            } else {
                "domains NAME \"example.test\" \".example.test\"... [table=\"TABLE\"]"
            };
            let Some(args) = self.args(node, 1, None, usage) else {
                continue;
            };
            let set_kind = if kind == "networks" {
                "network set"
            } else {
                "domain set"
            };
            let name = self.name(args[0], &format!("{set_kind} name"));
            let here = self.origin(node.name().span().offset());
            if kind == "networks" {
                let nets: Vec<IpNet> = args[1..].iter().filter_map(|e| self.network(e)).collect();
                if let Some(name) = name {
                    if name.parse::<IpNet>().is_ok() || name.parse::<IpAddr>().is_ok() {
                        self.error(
                            args[0].span(),
                            format!("network set name `{name}` looks like an address"),
                            "ambiguous name",
                        )
                        .help = Some("`client=` would not know whether you mean the set or the address; pick a word".to_owned());
                    } else if let Some((_, first)) = sets.networks.get(name) {
                        let first = first.clone();
                        self.duplicate(args[0].span(), format!("network set `{name}`"), &first);
                    } else {
                        sets.networks
                            .insert(name.to_owned(), (NetworkSet::new(nets), here));
                    }
                }
            } else {
                let entries: Vec<String> = args[1..]
                    .iter()
                    .filter_map(|e| self.domain_entry(e))
                    .collect();
                if let Some(name) = name {
                    if let Some((_, first)) = sets.domains.get(name) {
                        let first = first.clone();
                        self.duplicate(args[0].span(), format!("domain set `{name}`"), &first);
                    } else {
                        sets.domains
                            .insert(name.to_owned(), (DomainSet::new(entries), here));
                        if let Some((_, entry)) = props.iter().find(|(k, _)| *k == "table") {
                            domain_tables.push((name.to_owned(), file.clone(), *entry));
                        }
                    }
                }
            }
        }
        for (set, file, entry) in domain_tables {
            self.cur = file;
            // None: undefined (reported); Some(None): its errors are reported
            if let Some(Some(t)) = self.table_ref(entry, &sets.tables)
                && let Some((domains, _)) = sets.domains.get_mut(&set)
            {
                *domains = domains.clone().with_table(t);
            }
        }
        sets
    }

    /// A CIDR (`10.0.0.0/8`) or a bare address (a host network).
    fn network(&mut self, entry: &KdlEntry) -> Option<IpNet> {
        let text = self.string(entry, "a network")?;
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    entry.span(),
                    format!("network `{text}` has host bits set"),
                    "host bits set",
                )
                .help = Some(format!("did you mean `{}`?", net.trunc()));
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    entry.span(),
                    format!("`{text}` is not a CIDR network or IP address"),
                    "invalid network",
                )
                .help =
                    Some("e.g. \"192.0.2.0/24\", \"2001:db8::/32\" or \"192.0.2.7\"".to_owned());
                None
            }
        }
    }

    /// A `domains` entry: a domain name, or `.domain` for its subdomains.
    fn domain_entry(&mut self, entry: &KdlEntry) -> Option<String> {
        let text = self.string(entry, "a domain")?;
        let (dot, name) = match text.strip_prefix('.') {
            Some(rest) => (".", rest),
            None => ("", text),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !is_hostname(name) {
            self.error(
                entry.span(),
                format!("`{text}` is not a domain name"),
                "invalid domain",
            )
            .help = Some(
                "write `example.test` for the name itself, `.example.test` for its subdomains (ASCII; use xn-- for IDN)"
                    .to_owned(),
            );
            return None;
        }
        Some(format!("{dot}{}", name.to_ascii_lowercase()))
    }
}
