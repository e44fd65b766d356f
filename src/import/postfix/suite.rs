//! `tests/imported.kdl`: suite cases that pin what Postfix would do.
//!
//! The expected verdicts are computed here from the Postfix restriction lists with
//! Postfix's own semantics (a refusal ends everything, a permit ends its list, what no
//! list refused is accepted), independently of how the lists were joined into mtad
//! rules; routes from the transport table, the local domains and the relayhost. A
//! case whose outcome depends on something the dry run does not model the same way
//! (a table the rules look into, a content filter decision) is not generated.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::kdl::{Cond, CondValue, q};
use super::restrictions::{Action, Item, List, Rule};

/// A listener of the imported configuration.
#[derive(Clone, Debug, Default)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub filtered: bool,
}

/// What the translation learnt that the suite is made from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub hostname: String,
    pub origin: String,
    pub spool: String,
    pub listeners: Vec<Listener>,
    pub main_listener: String,
    pub mynetworks: Vec<String>,
    pub local: Vec<String>,
    pub relay: Vec<String>,
    pub destinations: Vec<String>,
    /// Whether "destinations" has a table (then domain membership is not known here).
    pub destinations_table: bool,
    pub has_virtual: bool,
    pub aliases: Vec<(String, String)>,
    /// `virtual_alias_maps` entries (key, value), the first table's where several
    /// have a key: Postfix's order.
    pub virtual_aliases: Vec<(String, String)>,
    pub transports: Vec<(String, String)>,
    pub relayhost: Option<String>,
    pub content_filter: Option<String>,
    pub header_checks: Vec<(String, String)>,
    /// The Postfix lists of the main listener, translated, before joining.
    pub main_lists: Vec<List>,
    pub main_rules: Vec<Rule>,
    pub listener_rules: Vec<(String, Vec<Rule>)>,
}

/// An envelope for the evaluator.
struct Env<'a> {
    client: IpAddr,
    authenticated: bool,
    rcpt_domain: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject(u16),
    Defer(u16),
}

impl Facts {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.mynetworks.iter().any(|n| {
            n.parse::<ipnet::IpNet>()
                .map(|net| net.contains(&ip))
                .or_else(|_| n.parse::<IpAddr>().map(|a| a == ip))
                .unwrap_or(false)
        })
    }

    fn ours(&self, domain: &str) -> Option<bool> {
        if self.destinations_table {
            return None;
        }
        Some(
            self.destinations
                .iter()
                .any(|d| d == domain || d.starts_with('.') && domain.ends_with(d.as_str())),
        )
    }

    /// A condition's truth for `env`, `None` when it depends on more than it knows.
    fn holds(&self, c: &Cond, env: &Env) -> Option<bool> {
        let v = match (&c.key[..], &c.value) {
            ("client", CondValue::Str(s)) if s == "mynetworks" => self.trusted(env.client),
            ("client", CondValue::Str(s)) => match s.parse::<ipnet::IpNet>() {
                Ok(n) => n.contains(&env.client),
                Err(_) => s.parse::<IpAddr>().ok()? == env.client,
            },
            ("authenticated", CondValue::Bool(b)) => env.authenticated == *b,
            ("rcpt-domain", CondValue::Str(s)) if s == "destinations" => {
                self.ours(env.rcpt_domain)?
            }
            _ => return None,
        };
        Some(v != c.negated)
    }

    fn all(&self, conds: &[Cond], env: &Env) -> Option<bool> {
        let mut result = true;
        for c in conds {
            result &= self.holds(c, env)?;
        }
        Some(result)
    }

    /// Postfix's answer to RCPT for `env`, from the lists as Postfix runs them.
    fn evaluate(&self, env: &Env) -> Option<Verdict> {
        'lists: for list in &self.main_lists {
            let mut flat = Vec::new();
            flatten(&list.items, &mut flat);
            for item in flat {
                match item {
                    Item::Permit { conds, .. } => {
                        if self.all(&conds, env)? {
                            continue 'lists;
                        }
                    }
                    Item::Decide { rule, .. } => {
                        if rule.warn || !self.all(&rule.conds, env)? {
                            continue;
                        }
                        match &rule.action {
                            Action::Reject { code, .. } => return Some(Verdict::Reject(*code)),
                            Action::Defer { code, .. } => return Some(Verdict::Defer(*code)),
                            Action::Unsupported(_) => return Some(Verdict::Defer(450)),
                            // a policy service answers DUNNO and DNS lists list nobody
                            // in a dry run; what they do live is not pinned here
                            Action::CheckPolicyService(_) | Action::RejectDnsbl(_) => {}
                            Action::Accept | Action::Discard | Action::Hold => return None,
                        }
                    }
                    Item::Many(_) => unreachable!("flattened"),
                }
            }
        }
        Some(Verdict::Accept)
    }

    /// The suite file.
    pub fn suite(&self) -> String {
        let mut s = String::from(
            "// Generated by `mtactl import postfix` from the Postfix configuration: what\n\
             // Postfix answers, computed from its restriction lists, routes and aliases.\n\
             // Policy services are taken to answer DUNNO and DNS lists to list nobody.\n",
        );
        let outsider: Option<IpAddr> = ["203.0.113.7", "198.51.100.7", "192.0.2.7", "100.64.0.7"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .find(|a| !self.trusted(*a));
        let foreign = "friend@elsewhere.example";
        let none = |_: &Verdict| Vec::new();
        let mut trusted_host = None;
        // each trusted network relays (or what Postfix does for it)
        for net in self.mynetworks.iter().take(8) {
            let Some(ip) = host_in(net) else { continue };
            trusted_host.get_or_insert(ip);
            let title = format!("mynetworks {net}: a client in it sends to a foreign domain");
            self.verdict_case(&mut s, &title, ip, None, foreign, none);
        }
        if let Some(ip) = outsider {
            let title = "a client outside mynetworks sends to a foreign domain";
            self.verdict_case(&mut s, title, ip, None, foreign, none);
            let title = "an authenticated client outside mynetworks sends to a foreign domain";
            self.verdict_case(&mut s, title, ip, Some("user"), foreign, none);
            let postmaster_aliased = self
                .aliases
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("postmaster"));
            for d in self.local.iter().take(8) {
                let rcpt = format!("postmaster@{d}");
                let routes = |v: &Verdict| match self.route_of(d, true) {
                    Some(r) if *v == Verdict::Accept && !postmaster_aliased => {
                        vec![(rcpt.clone(), r)]
                    }
                    _ => vec![],
                };
                let title = format!("mydestination {d}: postmaster is accepted from outside");
                self.verdict_case(&mut s, &title, ip, None, &rcpt, routes);
            }
            // a relay domain that is also local needs a user that exists: not pinned
            for d in self
                .relay
                .iter()
                .filter(|d| !self.local.contains(d))
                .take(8)
            {
                let title = format!("relay_domains {d}: accepted from outside");
                self.verdict_case(&mut s, &title, ip, None, &format!("user@{d}"), none);
            }
        }
        // routes
        if let Some(ip) = trusted_host {
            for (key, value) in self.transports.iter().take(16) {
                if key.starts_with('.') || key.contains('@') || key == "*" {
                    continue;
                }
                let Some(expected) = self.route_of(key, self.local.contains(key)) else {
                    continue;
                };
                if expected == "local" {
                    continue; // local users are looked up in passwd: not pinned here
                }
                let rcpt = format!("user@{key}");
                self.routed_case(
                    &mut s,
                    &format!("transport_maps: {key} goes to {value}"),
                    ip,
                    &rcpt,
                    (rcpt.clone(), expected),
                );
            }
            // aliases of the local domains
            if let Some(domain) = self
                .local
                .iter()
                .find(|d| **d == self.hostname)
                .or(self.local.first())
            {
                for (name, target) in self.aliases.iter().take(12) {
                    let Some((_, tdomain)) = target.rsplit_once('@') else {
                        continue;
                    };
                    let tdomain = tdomain.to_ascii_lowercase();
                    if self.local.contains(&tdomain) || name.contains(['"', ' ']) {
                        continue;
                    }
                    let Some(route) = self.route_of(&tdomain, false) else {
                        continue;
                    };
                    let rcpt = format!("{name}@{domain}");
                    self.routed_case(
                        &mut s,
                        &format!("alias_maps: {name} expands to {target}"),
                        ip,
                        &rcpt,
                        (target.to_ascii_lowercase(), route),
                    );
                }
            }
            // virtual aliases of whole addresses to one address elsewhere (not itself
            // a virtual key, so the expansion stops there)
            for (key, target) in self.virtual_aliases.iter().take(12) {
                let target = target.to_ascii_lowercase();
                let (Some((klocal, _)), Some((_, tdomain))) =
                    (key.rsplit_once('@'), target.rsplit_once('@'))
                else {
                    continue;
                };
                if klocal.is_empty()
                    || klocal.contains(['"', '+'])
                    || target.contains([',', ' ', '"'])
                    || self.local.iter().any(|d| d == tdomain)
                    || self
                        .virtual_aliases
                        .iter()
                        .any(|(k, _)| *k == target || k.strip_prefix('@') == Some(tdomain))
                {
                    continue;
                }
                let Some(route) = self.route_of(tdomain, false) else {
                    continue;
                };
                self.routed_case(
                    &mut s,
                    &format!("virtual_alias_maps: {key} expands to {target}"),
                    ip,
                    key,
                    (target.clone(), route),
                );
            }
        }
        s
    }

    /// A case: `rcpt` from `ip` (logged in with `auth`) gets what Postfix answers; none
    /// when that is not known here.
    fn verdict_case(
        &self,
        s: &mut String,
        title: &str,
        ip: IpAddr,
        auth: Option<&str>,
        rcpt: &str,
        routes: impl Fn(&Verdict) -> Vec<(String, String)>,
    ) {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let env = Env {
            client: ip,
            authenticated: auth.is_some(),
            rcpt_domain: domain,
        };
        if let Some(v) = self.evaluate(&env) {
            let routes = routes(&v);
            case(
                s,
                title,
                &self.main_listener,
                &ip.to_string(),
                auth,
                rcpt,
                &v,
                &routes,
            );
        }
    }

    /// A case: `rcpt` from the trusted client `ip`, routed as `route` says; none when
    /// Postfix would not accept it.
    fn routed_case(
        &self,
        s: &mut String,
        title: &str,
        ip: IpAddr,
        rcpt: &str,
        route: (String, String),
    ) {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let env = Env {
            client: ip,
            authenticated: false,
            rcpt_domain: domain,
        };
        if self.evaluate(&env) == Some(Verdict::Accept) {
            self.verdict_case(s, title, ip, None, rcpt, |_| vec![route.clone()]);
        }
    }

    /// Where mail for `anyone@domain` goes, as Postfix routes it: transport_maps
    /// first (the domain, then each parent as `.parent`, then `*`), else the local
    /// transport for a local domain, else the relayhost or the domain's MX. `None` when
    /// an entry could catch it in a way not modelled here (per-address entries).
    fn route_of(&self, domain: &str, local: bool) -> Option<String> {
        if self.transports.iter().any(|(k, _)| k.contains('@')) {
            return None;
        }
        let mut keys = vec![domain.to_owned()];
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
        keys.push("*".to_owned());
        for key in keys {
            if let Some((_, value)) = self.transports.iter().find(|(k, _)| *k == key) {
                match value.split_once(':') {
                    Some(("", "")) => break, // no change: the address class decides
                    Some(("", hop)) => return Some(format!("smtp:{hop}")),
                    Some(("smtp" | "lmtp", _)) => return Some(value.clone()),
                    None if value == "local" => return Some("local".to_owned()),
                    _ => return None,
                }
            }
        }
        if local {
            return Some("local".to_owned());
        }
        if self.has_virtual {
            return None;
        }
        match &self.relayhost {
            Some(r) => Some(r.clone()),
            None => Some(format!("smtp:{domain}")),
        }
    }
}

fn flatten(items: &[Item], out: &mut Vec<Item>) {
    for i in items {
        match i {
            Item::Many(inner) => flatten(inner, out),
            other => out.push(other.clone()),
        }
    }
}

/// An address inside `net` to stand for a client of it.
fn host_in(net: &str) -> Option<IpAddr> {
    if let Ok(a) = net.parse::<IpAddr>() {
        return Some(a);
    }
    let net: ipnet::IpNet = net.parse().ok()?;
    match net {
        ipnet::IpNet::V4(n) if n.prefix_len() < 31 => n.hosts().next().map(IpAddr::V4),
        ipnet::IpNet::V4(n) => Some(IpAddr::V4(n.network())),
        ipnet::IpNet::V6(n) => Some(IpAddr::V6(n.network())).map(|a| match (a, n.prefix_len()) {
            (IpAddr::V6(v6), p) if p < 128 => {
                let mut o = v6.octets();
                o[15] |= 1;
                IpAddr::V6(o.into())
            }
            (a, _) => a,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn case(
    s: &mut String,
    title: &str,
    listener: &str,
    client: &str,
    auth: Option<&str>,
    rcpt: &str,
    verdict: &Verdict,
    routes: &[(String, String)],
) {
    let _ = writeln!(s, "case {} {{", q(title));
    let _ = writeln!(s, "    listener {}", q(listener));
    let _ = writeln!(s, "    client {}", q(client));
    if let Some(a) = auth {
        let _ = writeln!(s, "    auth {}", q(a));
    }
    let _ = writeln!(s, "    from \"sender@elsewhere.example\"");
    let _ = writeln!(s, "    rcpt {}", q(rcpt));
    let (word, code) = match verdict {
        Verdict::Accept => ("accept", None),
        Verdict::Reject(c) => ("reject", Some(c)),
        Verdict::Defer(c) => ("defer", Some(c)),
    };
    match code {
        Some(c) => {
            let _ = writeln!(
                s,
                "    expect \"rcpt\" {} reply={}",
                q(word),
                q(&c.to_string())
            );
        }
        None => {
            let _ = writeln!(s, "    expect \"rcpt\" {}", q(word));
        }
    }
    for (r, t) in routes {
        let _ = writeln!(s, "    route {} {}", q(r), q(t));
    }
    s.push_str("}\n");
}
