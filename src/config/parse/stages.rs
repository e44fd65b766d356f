//! `stage` blocks and their rules (verdicts, route verbs, replies).

use kdl::{KdlEntry, KdlNode};

use super::conditions::{CONDITIONS, NEGATED_CONDITIONS, availability_help};
use super::{Parser, Sets, resolve, suggest};
use crate::config::checks::Content;
use crate::config::reply::{MAX_REPLY_TEXT, is_reply_char};
use crate::config::{
    ConditionConfig, HookConfig, Origin, Reply, RuleAction, RuleConfig, Stage, route,
};
const RULES: &[&str] = &[
    "accept",
    "reject",
    "defer",
    "discard",
    "hold",
    "hook",
    "transport",
    "transport-table",
    "relay",
    "header-checks",
    "mime-header-checks",
    "nested-header-checks",
    "body-checks",
    "filter",
    "check-policy-service",
    "reject-dnsbl",
    "greylist",
];
/// The verbs of the route stage (which decides transports, not replies).
const ROUTE_RULES: &[&str] = &["transport", "transport-table", "relay", "hook"];

impl Parser {
    pub(super) fn stage(
        &mut self,
        node: &KdlNode,
        sets: &Sets,
        stages: &mut [Option<(Vec<RuleConfig>, Origin)>; Stage::COUNT],
    ) {
        const USAGE: &str = "stage \"rcpt\" { accept ...; reject ... }";
        self.check_annotations(node);
        self.props(node, &[]);
        let args = self.args(node, 1, Some(1), USAGE);
        let children = self.children(node, USAGE);
        let Some(args) = args else { return };
        let Some(name) = self.string(args[0], "stage name") else {
            return;
        };
        let stage = match Stage::from_name(name) {
            Some(stage) => stage,
            None => {
                let known = Stage::ALL.map(Stage::as_str);
                let help = suggest(name, known.iter().copied())
                    .unwrap_or_else(|| format!("stages are: {}", known.join(", ")));
                self.error(
                    args[0].span(),
                    format!("unknown stage `{name}`"),
                    "unknown stage",
                )
                .help = Some(help);
                return;
            }
        };
        let here = self.origin(node.name().span().offset());
        let Some(children) = children else { return };
        let rules: Vec<RuleConfig> = children
            .nodes()
            .iter()
            .filter_map(|rule| self.rule(rule, sets, stage))
            .collect();
        // Several blocks of one stage (say, one in an included default policy) run
        // in the order they are written.
        match &mut stages[stage.index()] {
            Some((existing, _)) => existing.extend(rules),
            slot => *slot = Some((rules, here)),
        }
    }

    fn rule(&mut self, node: &KdlNode, sets: &Sets, stage: Stage) -> Option<RuleConfig> {
        self.check_annotations(node);
        let origin = self.origin(node.name().span().offset());
        let verb = node.name().value();
        if !RULES.contains(&verb) {
            self.unknown_node(node, "stage", RULES);
            return None;
        }
        let checks = match verb {
            "header-checks" => Some(Content::Header),
            "mime-header-checks" => Some(Content::MimeHeader),
            "nested-header-checks" => Some(Content::NestedHeader),
            "body-checks" => Some(Content::Body),
            _ => None,
        };
        if checks.is_none() {
            self.no_children(node);
        }
        if let Some(content) = checks
            && stage != Stage::Data
        {
            self.error(
                node.name().span(),
                format!("`{verb}` has no meaning in the {stage} stage"),
                "not here",
            )
            .help = Some(format!(
                "{} inspect the message: put them in `stage \"data\"`",
                content.rule_name()
            ));
            return None;
        }
        if (stage == Stage::Route) != ROUTE_RULES.contains(&verb) && verb != "hook" {
            let help = if stage == Stage::Route {
                "the route stage decides transports: transport, transport-table, relay, hook (refuse with `transport \"*\" \"error:5.1.1 text\"`)"
            } else {
                "transport, transport-table and relay belong in `stage \"route\"`"
            };
            self.error(
                node.name().span(),
                format!("`{verb}` has no meaning in the {stage} stage"),
                "not here",
            )
            .help = Some(help.to_owned());
            return None;
        }
        let action = match verb {
            "transport" => self
                .args(
                    node,
                    2,
                    Some(2),
                    "transport \"PATTERN\" \"transport:nexthop\" [conditions]",
                )
                .and_then(|args| {
                    let pattern = self.route_value(args[0], "pattern", route::RoutePattern::parse);
                    let transport = self.route_value(args[1], "transport", route::Transport::parse);
                    Some(RuleAction::Transport {
                        pattern: pattern?,
                        transport: transport?,
                    })
                }),
            "relay" => self
                .args(node, 1, Some(1), "relay \"smtp:[host]:port\" [conditions]")
                .and_then(|args| self.route_value(args[0], "transport", route::Transport::parse))
                .map(RuleAction::Relay),
            "transport-table" => self
                .args(node, 1, Some(1), "transport-table \"NAME\" [conditions]")
                .and_then(|args| {
                    let name = self.string(args[0], "table name")?;
                    self.known_table(name, args[0], sets, "transport")
                        .then(|| RuleAction::TransportTable(name.to_owned()))
                }),
            "accept" => self
                .args(node, 0, Some(0), "accept [conditions]")
                .map(|_| RuleAction::Accept),
            "reject" => self
                .args(
                    node,
                    3,
                    Some(3),
                    "reject CODE \"X.Y.Z\" \"text\" [conditions]",
                )
                .and_then(|args| self.reply(&args))
                .map(RuleAction::Reject),
            "defer" => self
                .args(
                    node,
                    0,
                    Some(3),
                    "defer [CODE \"X.Y.Z\" \"text\"] [conditions]",
                )
                .and_then(|args| match args.len() {
                    0 => Some(Reply::new(451, [4, 7, 1], "Try again later")),
                    3 => {
                        let reply = self.reply(&args)?;
                        if !reply.is_temporary() {
                            self.error(args[0].span(), "`defer` needs a 4xx code", "not 4xx")
                                .help = Some("use `reject` for a permanent refusal".to_owned());
                            return None;
                        }
                        Some(reply)
                    }
                    _ => {
                        self.error(
                            node.name().span(),
                            "`defer` takes no arguments or all three: CODE \"X.Y.Z\" \"text\"",
                            "wrong arguments",
                        );
                        None
                    }
                })
                .map(RuleAction::Defer),
            "discard" | "hold" => {
                let usage = if verb == "discard" {
                    "discard [conditions]"
                } else {
                    "hold [conditions]"
                };
                let args = self.args(node, 0, Some(0), usage);
                if stage == Stage::Route {
                    self.error(
                        node.name().span(),
                        format!("`{verb}` has no meaning in the route stage"),
                        "not here",
                    );
                    return None;
                }
                args.map(|_| {
                    if verb == "discard" {
                        RuleAction::Discard
                    } else {
                        RuleAction::Hold
                    }
                })
            }
            "filter" => {
                let args = self.args(node, 1, Some(1), "filter \"NAME\" [conditions]");
                if stage != Stage::Data {
                    self.error(
                        node.name().span(),
                        format!("`filter` has no meaning in the {stage} stage"),
                        "not here",
                    )
                    .help = Some(
                        "a content filter is chosen for the whole message, in `stage \"data\"`"
                            .to_owned(),
                    );
                    return None;
                }
                args.and_then(|args| self.filter_ref(args[0], &sets.filters, "filter name"))
                    .map(RuleAction::Filter)
            }
            "check-policy-service" => {
                let args = self.args(
                    node,
                    1,
                    Some(1),
                    "check-policy-service \"NAME\" [conditions]",
                );
                args.and_then(|args| {
                    self.service_ref(
                        args[0],
                        &sets.policy_services,
                        "policy-service",
                        "address=\"inet:127.0.0.1:10023\"",
                    )
                })
                .map(RuleAction::PolicyService)
            }
            "reject-dnsbl" => {
                let args = self.args(node, 1, Some(1), "reject-dnsbl \"NAME\" [conditions]");
                args.and_then(|args| {
                    let name = self.service_ref(
                        args[0],
                        &sets.dnsbls,
                        "dnsbl",
                        "\"zone.example=127.0.0.[2..11]\"",
                    )?;
                    let dnsbl = sets.dnsbls.get(&name).and_then(|(d, _)| d.as_ref());
                    self.dnsbl_key_at(args[0], dnsbl, stage).then_some(name)
                })
                .map(RuleAction::RejectDnsbl)
            }
            "greylist" => {
                let args = self.args(node, 0, Some(0), "greylist [conditions]");
                if stage != Stage::Rcpt {
                    self.error(
                        node.name().span(),
                        format!("`greylist` has no meaning in the {stage} stage"),
                        "not here",
                    )
                    .help = Some(
                        "greylisting needs the sender and the recipient: put it in `stage \"rcpt\"`"
                            .to_owned(),
                    );
                    return None;
                }
                args.map(|_| RuleAction::Greylist)
            }
            "hook" => self
                .args(
                    node,
                    1,
                    Some(1),
                    "hook \"file.rhai\" [function=\"name\"] [conditions]",
                )
                .and_then(|args| {
                    let file = self.string(args[0], "hook file")?;
                    Some(RuleAction::Hook(HookConfig {
                        path: resolve(&self.cur.path, file),
                        display: file.to_owned(),
                        function: None,
                    }))
                }),
            "header-checks" | "mime-header-checks" | "nested-header-checks" | "body-checks" => {
                checks
                    .and_then(|content| self.checks_rule(node, sets, content))
                    .map(RuleAction::Checks)
            }
            _ => unreachable!("checked against RULES"),
        };
        let mut allowed: Vec<&str> = CONDITIONS.to_vec();
        allowed.extend(NEGATED_CONDITIONS.iter());
        allowed.push("mode");
        if stage == Stage::Rcpt {
            allowed.push("open-relay");
        }
        if verb == "hook" {
            allowed.push("function");
        }
        if checks.is_some() {
            allowed.extend(["file", "table", "size-limit"]);
        }
        if stage == Stage::Route {
            allowed.extend(["auth", "fallback", "dkim", "dkim-sign", "arc-seal"]);
        }
        let mut route_options = route::RouteOptions::default();
        let mut warn = false;
        let mut open_relay = false;
        let mut function = None;
        let mut conditions = Vec::new();
        let mut ok = true;
        for (key, entry) in self.props(node, &allowed) {
            match key {
                "mode" => match self.string(entry, "`mode`") {
                    Some("warn") => warn = true,
                    Some("enforce") => warn = false,
                    Some(other) => {
                        self.error(
                            entry.span(),
                            format!("unknown mode `{other}`"),
                            "unknown mode",
                        )
                        .help = Some(
                            "mode is \"warn\" (log only) or \"enforce\" (the default)".to_owned(),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "open-relay" => match self.open_relay(entry) {
                    Some(yes) => open_relay = yes,
                    None => ok = false,
                },
                "function" => function = self.string(entry, "`function`").map(str::to_owned),
                // read by `checks_rule`
                "file" | "table" | "size-limit" if checks.is_some() => {}
                "auth" => match self.string(entry, "`auth`") {
                    Some(name) if sets.credentials.contains_key(name) => {
                        route_options.auth = Some(name.to_owned());
                    }
                    Some(name) => {
                        let help = suggest(name, sets.credentials.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                "define it with `credentials NAME file=\"sasl_passwd\"`".to_owned()
                            });
                        self.error(
                            entry.span(),
                            format!("undefined credentials `{name}`"),
                            "undefined credentials",
                        )
                        .help = Some(help);
                        ok = false;
                    }
                    None => ok = false,
                },
                "dkim" if stage == Stage::Route => match self.string(entry, "`dkim`") {
                    Some(domain) => {
                        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                        self.dkim_refs
                            .push((domain.clone(), entry.span(), self.cur.clone()));
                        route_options.dkim = Some(domain);
                    }
                    None => ok = false,
                },
                "dkim-sign" => match self.route_value(entry, "dkim-sign", route::DkimSign::parse) {
                    Some(sign) => route_options.dkim_sign = Some(sign),
                    None => ok = false,
                },
                "arc-seal" => match self.string(entry, "`arc-seal`") {
                    Some(domain) => {
                        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                        self.arc_refs
                            .push((domain.clone(), entry.span(), self.cur.clone()));
                        self.auth_refs.push((entry.span(), self.cur.clone()));
                        route_options.arc_seal = Some(domain);
                    }
                    None => ok = false,
                },
                "fallback" => match self.route_value(entry, "fallback", route::parse_fallbacks) {
                    Some(chain) => route_options.fallback = chain,
                    None => ok = false,
                },
                // in the route stage, `tls="policy"` is the route's TLS policy;
                // `tls=#true` stays the condition
                "tls" if stage == Stage::Route && entry.value().is_string() => {
                    match self.route_value(entry, "TLS policy", route::TlsPolicy::parse) {
                        Some(t) => route_options.tls = Some(t),
                        None => ok = false,
                    }
                }
                _ => {
                    let (negate, name) = match key.strip_prefix("not-") {
                        Some(name) => (true, name),
                        None => (false, key),
                    };
                    match self.condition(name, entry, sets) {
                        Some(crate::config::Condition::Dnsbl(d))
                            if !self.dnsbl_key_at(
                                entry,
                                sets.dnsbls.get(&d).and_then(|(d, _)| d.as_ref()),
                                stage,
                            ) =>
                        {
                            ok = false;
                        }
                        Some(test) if !test.available_at(stage) => {
                            self.error(
                                entry.span(),
                                format!("`{name}` does not exist at the {stage} stage"),
                                "not available here",
                            )
                            .help = Some(availability_help(&test));
                            ok = false;
                        }
                        Some(test) => conditions.push(ConditionConfig { negate, test }),
                        None => ok = false,
                    }
                }
            }
        }
        let mut action = action?;
        if let RuleAction::Hook(hook) = &mut action {
            hook.function = function;
        }
        ok.then_some(RuleConfig {
            action,
            conditions,
            warn,
            open_relay,
            origin,
            route: route_options,
        })
    }

    /// A string argument parsed by `parse`, its error reported at the argument.
    pub(super) fn route_value<T, E: std::fmt::Display>(
        &mut self,
        entry: &KdlEntry,
        what: &str,
        parse: fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.string(entry, what)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(entry.span(), e.to_string(), format!("invalid {what}"));
                None
            }
        }
    }

    /// `CODE "X.Y.Z" "text"`, checked.
    fn reply(&mut self, args: &[&KdlEntry]) -> Option<Reply> {
        let code = self.integer(args[0], "reply code", 400, 599);
        let enhanced = self
            .string(args[1], "enhanced status code")
            .and_then(|text| {
                let parsed = Reply::parse_enhanced(text);
                if parsed.is_none() {
                    self.error(
                        args[1].span(),
                        format!("`{text}` is not an enhanced status code"),
                        "invalid enhanced code",
                    )
                    .help = Some("class.subject.detail, e.g. \"5.7.1\" (RFC 3463)".to_owned());
                }
                parsed
            });
        let text = self.string(args[2], "reply text").and_then(|text| {
            if text.chars().all(is_reply_char) && text.len() <= MAX_REPLY_TEXT {
                Some(text)
            } else {
                self.error(
                    args[2].span(),
                    format!("reply text must be printable ASCII of at most {MAX_REPLY_TEXT} bytes (no CR, LF or other control characters)"),
                    "invalid reply text",
                );
                None
            }
        });
        let (code, enhanced) = (code?, enhanced?);
        let code = u16::try_from(code).ok()?;
        if let Err(e) = Reply::check_codes(code, enhanced) {
            self.error(
                args[1].span(),
                e.to_string(),
                "does not match the reply code",
            );
            return None;
        }
        Some(Reply::new(code, enhanced, text?))
    }
}
