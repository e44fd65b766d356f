//! `policy-service` and `dnsbl` nodes and the references to them (rules'
//! `check-policy-service`, `reject-dnsbl` and the `dnsbl=` condition); see
//! [`crate::config::services`].
//!
//! Read in the first pass, with the sets, so rules may refer to them before they are
//! defined.

use std::collections::BTreeMap;

use kdl::{KdlEntry, KdlNode};

use super::{Parser, suggest};
use crate::config::Origin;
use crate::config::services::{Dnsbl, DnsblKey, DnsblSite, Endpoint, PolicyService};

/// `policy-service` nodes by name (`None`: it had errors).
pub(super) type PolicyServices = BTreeMap<String, (Option<PolicyService>, Origin)>;
/// `dnsbl` nodes by name (`None`: it had errors).
pub(super) type Dnsbls = BTreeMap<String, (Option<Dnsbl>, Origin)>;

const POLICY_USAGE: &str = "policy-service NAME address=\"inet:127.0.0.1:10023\" [timeout=\"100s\"] [max-idle=\"300s\"] [max-ttl=\"1000s\"] [try-limit=2] [default-action=\"451 4.3.5 Server configuration problem\"] [context=\"text\"]";
const DNSBL_USAGE: &str = "dnsbl NAME \"zone[=127.0.0.[2..11]][*weight]\"... [threshold=1] [timeout=\"10s\"] [lookup=\"client\"]";

impl Parser {
    /// Reads one `policy-service` node into `all`.
    pub(super) fn policy_service(&mut self, node: &KdlNode, all: &mut PolicyServices) {
        self.check_annotations(node);
        self.no_children(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 1, Some(1), POLICY_USAGE);
        let props = self.props(
            node,
            &[
                "address",
                "timeout",
                "max-idle",
                "max-ttl",
                "try-limit",
                "default-action",
                "context",
            ],
        );
        let Some(args) = args else { return };
        let name = self.name(args[0], "policy service name");
        let mut ok = true;
        let mut endpoint = None;
        let mut service = PolicyService {
            name: String::new(),
            endpoint: Endpoint::Unix("".into()),
            timeout: PolicyService::DEFAULT_TIMEOUT,
            max_idle: PolicyService::DEFAULT_MAX_IDLE,
            max_ttl: PolicyService::DEFAULT_MAX_TTL,
            try_limit: PolicyService::DEFAULT_TRY_LIMIT,
            default_action: PolicyService::DEFAULT_ACTION.to_owned(),
            context: String::new(),
        };
        for (key, entry) in props {
            let mut set_duration = |p: &mut Parser, slot: &mut std::time::Duration| match p
                .duration(entry, &format!("`{key}`"))
            {
                Some(d) => *slot = d,
                None => ok = false,
            };
            match key {
                "address" => {
                    match self.route_value(entry, "policy service address", Endpoint::parse) {
                        Some(e) => endpoint = Some(e),
                        None => ok = false,
                    }
                }
                "timeout" => set_duration(self, &mut service.timeout),
                "max-idle" => set_duration(self, &mut service.max_idle),
                "max-ttl" => set_duration(self, &mut service.max_ttl),
                "try-limit" => match self.integer(entry, "`try-limit`", 1, 10) {
                    Some(n) => service.try_limit = n as u32,
                    None => ok = false,
                },
                "default-action" | "context" => match self.string(entry, &format!("`{key}`")) {
                    Some(text)
                        if text.len() <= 400
                            && text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) =>
                    {
                        if key == "context" {
                            service.context = text.to_owned();
                        } else {
                            service.default_action = text.to_owned();
                        }
                    }
                    Some(_) => {
                        self.error(
                            entry.span(),
                            format!("`{key}` must be printable ASCII of at most 400 bytes"),
                            "invalid text",
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                _ => unreachable!("checked by props"),
            }
        }
        if endpoint.is_none() && ok {
            self.node_error(node, "`policy-service` needs `address=`", "no address")
                .help = Some(format!("usage: {POLICY_USAGE}"));
        }
        let Some(name) = name else { return };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(args[0].span(), format!("policy service `{name}`"), &first);
            return;
        }
        let service = match endpoint {
            Some(endpoint) if ok => Some(PolicyService {
                name: name.to_owned(),
                endpoint,
                ..service
            }),
            _ => None,
        };
        all.insert(name.to_owned(), (service, here));
    }

    /// Reads one `dnsbl` node into `all`.
    pub(super) fn dnsbl(&mut self, node: &KdlNode, all: &mut Dnsbls) {
        self.check_annotations(node);
        self.no_children(node);
        let here = self.origin(node.name().span().offset());
        let args = self.args(node, 2, None, DNSBL_USAGE);
        let props = self.props(node, &["threshold", "timeout", "lookup"]);
        let Some(args) = args else { return };
        let name = self.name(args[0], "dnsbl name");
        let mut ok = true;
        let sites: Vec<DnsblSite> = args[1..]
            .iter()
            .filter_map(|e| {
                let site = self.route_value(e, "dnsbl site", DnsblSite::parse);
                ok &= site.is_some();
                site
            })
            .collect();
        let mut dnsbl = Dnsbl {
            name: String::new(),
            sites,
            threshold: 1,
            timeout: Dnsbl::DEFAULT_TIMEOUT,
            key: DnsblKey::Client,
        };
        for (key, entry) in props {
            match key {
                "threshold" => match self.integer(entry, "`threshold`", 1, 1_000_000) {
                    Some(n) => dnsbl.threshold = n as i64,
                    None => ok = false,
                },
                "timeout" => match self.duration(entry, "`timeout`") {
                    Some(d) => dnsbl.timeout = d,
                    None => ok = false,
                },
                "lookup" => match self
                    .string(entry, "`lookup`")
                    .map(|s| (s, DnsblKey::parse(s)))
                {
                    Some((_, Some(k))) => dnsbl.key = k,
                    Some((other, None)) => {
                        self.error(
                            entry.span(),
                            format!("unknown lookup `{other}`"),
                            "unknown lookup",
                        )
                        .help = Some(
                            "lookup is \"client\" (the client's address, a DNSBL), \"sender-domain\" or \"helo\" (an RHSBL)"
                                .to_owned(),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                _ => unreachable!("checked by props"),
            }
        }
        let Some(name) = name else { return };
        if let Some((_, first)) = all.get(name) {
            let first = first.clone();
            self.duplicate(args[0].span(), format!("dnsbl `{name}`"), &first);
            return;
        }
        let dnsbl = ok.then(|| Dnsbl {
            name: name.to_owned(),
            ..dnsbl
        });
        all.insert(name.to_owned(), (dnsbl, here));
    }

    /// A string naming a defined `policy-service` or `dnsbl` (`kind`), reported at
    /// `entry` when it is not.
    pub(super) fn service_ref<T>(
        &mut self,
        entry: &KdlEntry,
        defined: &BTreeMap<String, (Option<T>, Origin)>,
        kind: &str,
        example: &str,
    ) -> Option<String> {
        let name = self.string(entry, &format!("{kind} name"))?;
        if defined.contains_key(name) {
            return Some(name.to_owned());
        }
        let help = suggest(name, defined.keys().map(String::as_str))
            .unwrap_or_else(|| format!("define it: {kind} \"{name}\" {example}"));
        self.error(
            entry.span(),
            format!("no {kind} named `{name}`"),
            "undefined",
        )
        .help = Some(help);
        None
    }

    /// The key of a `dnsbl` used at `stage` must exist there: an RHSBL of sender
    /// domains from mail on, of HELO names from helo on.
    pub(super) fn dnsbl_key_at(
        &mut self,
        entry: &KdlEntry,
        dnsbl: Option<&Dnsbl>,
        stage: crate::config::Stage,
    ) -> bool {
        use crate::config::Stage::*;
        let Some(d) = dnsbl else { return true };
        let known = match d.key {
            DnsblKey::Client => stage != Route,
            DnsblKey::Helo => !matches!(stage, Connect | Route),
            DnsblKey::SenderDomain => matches!(stage, Mail | Rcpt | Data),
        };
        if !known {
            self.error(
                entry.span(),
                format!(
                    "dnsbl `{}` looks up the {}, which the {stage} stage does not know",
                    d.name,
                    d.key.as_str()
                ),
                "not available here",
            );
        }
        known
    }
}
