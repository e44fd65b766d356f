//! What rules ask outside the pipeline while they decide: policy servers
//! (`check-policy-service`, Postfix's `check_policy_service`) and DNS lists
//! (`reject-dnsbl`, the `dnsbl=` condition, hooks' `ctx.dnsbl_score`), and the DNS
//! lookups hooks make.
//!
//! Evaluation is synchronous, so each question is handed to the lookup runtime
//! ([`crate::lookup::sql_table::block_on`], the one SQL tables use) and waited for
//! with a deadline: inside `block_in_place` on a server worker, and never past a
//! hook's deadline. The I/O is done where the rule is reached, not before the stage
//! runs: a rule that an earlier `accept` skips asks nothing, exactly as in Postfix's
//! restriction lists. Connections to policy servers live on that runtime and are
//! reused across sessions; the DNS resolver (`delivery { dns-server }` or
//! `/etc/resolv.conf`) is one per process and keeps its cache across reloads.

pub mod client;
pub mod dnsbl;
pub mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::services::{Access, Dnsbl, PolicyService};
use crate::config::{Reply, Stage};
use crate::lookup::sql_table::block_on;
use crate::net::dns::{DnsError, Query, Resolver};

pub use client::{PolicyClient, ServiceError};
pub use dnsbl::{DnsblError, Score};

use super::Context;

thread_local! {
    /// The DNS answers of the session run in memory (a dry run, a suite) whose stage
    /// is being evaluated on this thread: DNS lists and hooks' lookups answer from it,
    /// and policy services are not asked, so a dry run never reaches the network.
    static FIXTURE: std::cell::RefCell<Option<crate::mailauth::DnsFixture>> =
        const { std::cell::RefCell::new(None) };
}

/// Puts `fixture` in force on this thread for as long as it lives (see `FIXTURE`).
pub(crate) struct Offline(Option<crate::mailauth::DnsFixture>);

impl Offline {
    pub(crate) fn set(fixture: Option<&crate::mailauth::DnsFixture>) -> Offline {
        Offline(FIXTURE.with(|f| f.replace(fixture.cloned())))
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        FIXTURE.with(|f| *f.borrow_mut() = self.0.take());
    }
}

fn offline() -> bool {
    FIXTURE.with(|f| f.borrow().is_some())
}

/// In a dry run (a fixture in force), the greylisting state it gives (`Some(None)`:
/// none, every triplet is new); `None` outside a dry run.
pub(crate) fn greylist_fixture() -> Option<Option<crate::mailauth::GreylistFixture>> {
    from_fixture(|f| f.greylist_state())
}

/// `answer` run on the fixture in force, if one is.
fn from_fixture<T>(answer: impl FnOnce(&crate::mailauth::DnsFixture) -> T) -> Option<T> {
    FIXTURE.with(|f| f.borrow().as_ref().map(answer))
}

/// The services of one compiled policy.
#[derive(Debug, Default)]
pub struct Services {
    policy: BTreeMap<String, Arc<PolicyClient>>,
    dnsbls: BTreeMap<String, Arc<Dnsbl>>,
    dns_server: Option<SocketAddr>,
}

/// The process's resolvers for policy, one per `dns-server` (or the system's): the
/// cache outlives a reload, and the resolver's connections live on the lookup
/// runtime, which outlives any session.
fn resolver(dns_server: Option<SocketAddr>) -> Result<Resolver, DnsError> {
    static RESOLVERS: OnceLock<Mutex<HashMap<Option<SocketAddr>, Resolver>>> = OnceLock::new();
    let mut all = RESOLVERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(r) = all.get(&dns_server) {
        return Ok(r.clone());
    }
    let r = match dns_server {
        Some(addr) => Resolver::with_nameserver(addr),
        None => Resolver::system()?,
    };
    all.insert(dns_server, r.clone());
    Ok(r)
}

/// What a policy server's answer does to the stage (see [`Services::ask_policy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// This rule decides.
    Decide(super::Verdict),
    /// No decision; the next rule runs.
    Next,
    /// No decision now; defer with this reply if the stage ends up accepting.
    DeferIfPermit(Reply),
    /// No decision now; defer with this reply instead of a later 5xx.
    DeferIfReject(Reply),
    /// Add this header line to the message; no decision.
    Prepend(String),
    /// Hold the message if it is accepted; no decision.
    Hold,
}

/// The answer of a policy server, or of its default action, and why the default
/// applied.
#[derive(Clone, Debug)]
pub struct PolicyAnswer {
    pub effect: Effect,
    /// The action as the server wrote it (or the default action).
    pub action: String,
    /// Why the server's answer was not used (down, slow, malformed, unsupported).
    pub error: Option<String>,
}

/// Postfix's `reject_server_error`: what an action mtad cannot apply gets.
fn server_error() -> Reply {
    Reply::new(451, [4, 3, 5], "Server configuration error")
}

impl Services {
    pub fn new(
        policy: &BTreeMap<String, PolicyService>,
        dnsbls: &BTreeMap<String, Dnsbl>,
        dns_server: Option<SocketAddr>,
    ) -> Services {
        Services {
            policy: policy
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(PolicyClient::new(v.clone()))))
                .collect(),
            dnsbls: dnsbls
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            dns_server,
        }
    }

    /// The client of a policy service (for tests and `mtactl`).
    pub fn policy_client(&self, name: &str) -> Option<&Arc<PolicyClient>> {
        self.policy.get(name)
    }

    /// Asks the policy service `name` about this stage and reads its answer as an
    /// access(5) action. A server that is down, slow or answers nonsense gets the
    /// service's `default-action` instead (itself read the same way).
    pub fn ask_policy(&self, name: &str, stage: Stage, ctx: &Context<'_>) -> PolicyAnswer {
        let Some(client) = self.policy.get(name).cloned() else {
            return PolicyAnswer {
                effect: Effect::Decide(super::Verdict::Defer(server_error())),
                action: String::new(),
                error: Some(format!("no policy service named {name:?}")),
            };
        };
        if let Some(replayed) = crate::lookup::tape::replayed_policy(name) {
            // a replay: what the service answered then (unknown: the tape has none,
            // and the rule fails closed as for a server that does not answer)
            let (action, error) = replayed.unwrap_or_else(|| {
                (
                    client.settings.default_action.clone(),
                    Some("no recorded answer (replay)".to_owned()),
                )
            });
            let (effect, unsupported) = effect_of(&action, stage, ctx);
            return PolicyAnswer {
                effect,
                action,
                error: error.or(unsupported),
            };
        }
        if offline() {
            // a dry run never reaches the network: the service is not asked; a suite
            // may say what it answers
            return match from_fixture(|f| f.policy_answer_of(name).map(str::to_owned)).flatten() {
                Some(action) => {
                    let (effect, error) = effect_of(&action, stage, ctx);
                    PolicyAnswer {
                        effect,
                        action,
                        error,
                    }
                }
                None => PolicyAnswer {
                    effect: Effect::Next,
                    action: "DUNNO (dry run: not asked)".into(),
                    error: None,
                },
            };
        }
        let request = protocol::encode(&attributes(stage, ctx, &client.settings.context));
        let limit = client.settings.timeout + Duration::from_secs(1);
        let asked = {
            let client = client.clone();
            block_on(async move { client.ask(&request).await }, limit)
        };
        let result = match &asked {
            Some(Ok(_)) => "answered",
            Some(Err(client::ServiceError::Timeout { .. })) | None => "timeout",
            Some(Err(_)) => "error",
        };
        crate::metrics::get().policy_service(name, result);
        let (action, error) = match asked {
            Some(Ok(action)) => (action, None),
            Some(Err(e)) => (client.settings.default_action.clone(), Some(e.to_string())),
            None => (
                client.settings.default_action.clone(),
                Some(format!("{}: no answer in time", client.settings.endpoint)),
            ),
        };
        crate::lookup::tape::record_policy(name, &action, error.as_deref());
        let (effect, unsupported) = effect_of(&action, stage, ctx);
        let error = match (error, unsupported) {
            (Some(e), _) => Some(e),
            (None, Some(u)) => Some(u),
            (None, None) => None,
        };
        PolicyAnswer {
            effect,
            action,
            error,
        }
    }

    /// The score of `ctx`'s client (or sender domain, or HELO name) in the list
    /// `name`: `Ok(None)` when there is nothing to ask (no sender domain for the null
    /// sender...). A list that cannot say is an error, which rules turn into a
    /// deferral.
    pub fn dnsbl(&self, name: &str, ctx: &Context<'_>) -> Result<Option<Score>, DnsblError> {
        self.dnsbl_for(name, ctx.client_ip, ctx.helo, ctx.sender)
    }

    /// Whether a `dnsbl` of this name exists.
    pub fn has_dnsbl(&self, name: &str) -> bool {
        self.dnsbls.contains_key(name)
    }

    /// [`Services::dnsbl`] for this client, HELO name and sender.
    pub fn dnsbl_for(
        &self,
        name: &str,
        client: std::net::IpAddr,
        helo: Option<&str>,
        sender: Option<&str>,
    ) -> Result<Option<Score>, DnsblError> {
        let unknown = |why: String| DnsblError {
            list: name.to_owned(),
            zones: why,
            score: 0,
            threshold: 0,
        };
        let Some(list) = self.dnsbls.get(name).cloned() else {
            return Err(unknown("the list is not defined".into()));
        };
        let Some(key) = dnsbl::key_of(&list, client, helo, sender) else {
            return Ok(None);
        };
        if let Some(scored) =
            from_fixture(|f| dnsbl::check_with(&list, &key, |name, kind| f.records(name, kind)))
        {
            return scored.map(Some);
        }
        if crate::lookup::tape::replaying() {
            // a replay: the answers recorded with the decision, scored by this policy
            return dnsbl::check_with(&list, &key, |name, kind| {
                crate::lookup::tape::dns(name, query_name(kind), || Err("not recorded".to_owned()))
            })
            .map(Some);
        }
        let resolver = resolver(self.dns_server).map_err(|e| unknown(e.to_string()))?;
        let limit = list.timeout + Duration::from_secs(2);
        let answer = {
            let list = list.clone();
            block_on(
                async move { dnsbl::check(&list, &resolver, &key).await },
                limit,
            )
        };
        match answer {
            Some((scored, asked)) => {
                for (name, kind, answer) in &asked {
                    crate::lookup::tape::record_dns(name, query_name(*kind), answer);
                }
                scored.map(Some)
            }
            None => {
                crate::metrics::get().dnsbl_query(name, "timeout");
                Err(unknown(format!("no answer within {:?}", list.timeout)))
            }
        }
    }

    /// A hook's DNS lookup, bounded by `timeout` (and the hook's deadline).
    pub fn lookup(
        &self,
        name: &str,
        kind: Query,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        if let Some(answer) = from_fixture(|f| f.records(name, kind)) {
            return answer.map_err(|e| e.to_string());
        }
        crate::lookup::tape::dns(name, query_name(kind), || {
            self.lookup_live(name, kind, timeout)
        })
    }

    fn lookup_live(
        &self,
        name: &str,
        kind: Query,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let resolver = resolver(self.dns_server).map_err(|e| e.to_string())?;
        let name = name.to_owned();
        let asked = block_on(
            async move {
                tokio::time::timeout(timeout, resolver.records(&name, kind))
                    .await
                    .unwrap_or_else(|_| {
                        Err(DnsError::Temporary {
                            domain: name,
                            message: "timed out".into(),
                        })
                    })
            },
            timeout + Duration::from_millis(200),
        );
        match asked {
            Some(r) => r.map_err(|e| e.to_string()),
            None => Err(format!("no DNS answer within {timeout:?}")),
        }
    }

    /// The reply `reject-dnsbl` refuses with: Postfix's default `reject_rbl_client`
    /// reply (`554 5.7.1 Service unavailable; Client host [IP] blocked using ZONE;
    /// TXT`), the TXT record sanitised and bounded by [`Reply::new`].
    pub fn dnsbl_reply(&self, name: &str, score: &Score) -> Reply {
        let key = self.dnsbls.get(name).map(|l| l.key).unwrap_or_default();
        let what = match key {
            crate::config::services::DnsblKey::Client => "Client host",
            crate::config::services::DnsblKey::SenderDomain => "Sender address",
            crate::config::services::DnsblKey::Helo => "Helo command",
        };
        let (zone, txt) = score.top.clone().unwrap_or_default();
        let text = if txt.is_empty() {
            format!(
                "Service unavailable; {what} [{}] blocked using {zone}",
                score.key
            )
        } else {
            format!(
                "Service unavailable; {what} [{}] blocked using {zone}; {txt}",
                score.key
            )
        };
        Reply::new(554, [5, 7, 1], &text)
    }
}

/// A DNS query's name as the decision log writes it.
pub fn query_name(kind: Query) -> &'static str {
    match kind {
        Query::A => "a",
        Query::Aaaa => "aaaa",
        Query::Txt => "txt",
        Query::Ptr => "ptr",
    }
}

/// A new transaction `instance`, in Postfix's form (`pid.seconds.microseconds.sequence`,
/// in hex): unique per message in this process and across restarts.
pub fn new_instance() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}.{:x}.{:x}.{:x}",
        PID.get_or_init(std::process::id),
        now.as_secs(),
        now.subsec_micros(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PREPEND header as it goes into the message: one line (control characters
/// become spaces), at most 998 bytes, CRLF-terminated.
pub fn header_line(header: &str) -> String {
    let mut line: String = header
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > 998 {
        let mut cut = 998;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.push_str("\r\n");
    line
}

/// What Postfix names and calls the thing a stage decides about, for the
/// `<name>: Class rejected: text` of its replies.
fn reply_name(stage: Stage, ctx: &Context<'_>) -> (String, &'static str) {
    match stage {
        Stage::Connect => (format!("unknown[{}]", ctx.client_ip), "Client host"),
        Stage::Helo => (ctx.helo.unwrap_or("").to_owned(), "Helo command"),
        Stage::Mail => (ctx.sender.unwrap_or("").to_owned(), "Sender address"),
        Stage::Rcpt | Stage::Route => (ctx.rcpt.unwrap_or("").to_owned(), "Recipient address"),
        Stage::Data => ("END-OF-MESSAGE".to_owned(), "End-of-data"),
    }
}

/// What an action does at `stage`, with Postfix's `check_table_result` semantics, and
/// why it was not applied when it is not (an unsupported verb).
pub fn effect_of(action: &str, stage: Stage, ctx: &Context<'_>) -> (Effect, Option<String>) {
    let (name, class) = reply_name(stage, ctx);
    let name = super::echo(&name);
    let refusal = |code: u16, dsn: [u8; 3], text: &str| {
        Reply::new(code, dsn, &format!("<{name}>: {class} rejected: {text}"))
    };
    match Access::parse(action) {
        Access::Ok => (Effect::Decide(super::Verdict::Accept), None),
        Access::Dunno => (Effect::Next, None),
        Access::Log(text) => {
            tracing::info!(%stage, text = %crate::logsafe::esc(&text), "policy service: info");
            (Effect::Next, None)
        }
        Access::Refuse { code, dsn, text } => {
            let reply = refusal(code, dsn, &text);
            let verdict = if code < 500 {
                super::Verdict::Defer(reply)
            } else {
                super::Verdict::Reject(reply)
            };
            (Effect::Decide(verdict), None)
        }
        Access::DeferIfPermit { dsn, text } => (
            Effect::DeferIfPermit(refusal(
                crate::config::services::ACCESS_DEFER_CODE,
                dsn,
                &text,
            )),
            None,
        ),
        Access::DeferIfReject { dsn, text } => (
            Effect::DeferIfReject(refusal(
                crate::config::services::ACCESS_DEFER_CODE,
                dsn,
                &text,
            )),
            None,
        ),
        // Postfix refuses PREPEND in client and helo restrictions (there is no message
        // yet to add it to), with a warning
        Access::Prepend(_) if matches!(stage, Stage::Connect | Stage::Helo) => (
            Effect::Next,
            Some(format!("PREPEND is ignored at the {stage} stage")),
        ),
        Access::Prepend(header) => (Effect::Prepend(header), None),
        Access::Hold(_) => (Effect::Hold, None),
        Access::Discard(_) => (Effect::Decide(super::Verdict::Discard), None),
        Access::Unsupported(what) => (
            Effect::Decide(super::Verdict::Defer(server_error())),
            Some(format!("unsupported policy action {what:?}")),
        ),
    }
}

/// The request's attributes, in the order Postfix's `check_policy_service` sends them.
fn attributes(stage: Stage, ctx: &Context<'_>, context: &str) -> Vec<(&'static str, String)> {
    let state = match stage {
        Stage::Connect => "CONNECT",
        Stage::Helo if ctx.protocol == Some("SMTP") => "HELO",
        Stage::Helo => "EHLO",
        Stage::Mail => "MAIL",
        Stage::Rcpt | Stage::Route => "RCPT",
        Stage::Data => "END-OF-MESSAGE",
    };
    let tls = ctx.tls;
    let keysize = tls.map_or(0, |t| {
        if t.cipher.contains("_128_") {
            128
        } else if t.cipher.contains("_256_") || t.cipher.contains("CHACHA20") {
            256
        } else {
            0
        }
    });
    let recipient_count = if stage == Stage::Data {
        ctx.recipients.len()
    } else {
        0
    };
    vec![
        ("request", "smtpd_access_policy".into()),
        ("protocol_state", state.into()),
        ("protocol_name", ctx.protocol.unwrap_or("SMTP").into()),
        ("client_address", ctx.client_ip.to_string()),
        ("client_name", "unknown".into()),
        ("client_port", ctx.client_port.to_string()),
        ("reverse_client_name", "unknown".into()),
        ("helo_name", ctx.helo.unwrap_or("").into()),
        ("sender", ctx.sender.unwrap_or("").into()),
        ("recipient", ctx.rcpt.unwrap_or("").into()),
        ("recipient_count", recipient_count.to_string()),
        ("queue_id", String::new()),
        ("instance", ctx.instance.unwrap_or("").into()),
        ("size", ctx.size.unwrap_or(0).to_string()),
        ("etrn_domain", String::new()),
        ("stress", String::new()),
        (
            "sasl_method",
            if ctx.auth_user.is_some() {
                ctx.sasl_method.unwrap_or("").into()
            } else {
                String::new()
            },
        ),
        ("sasl_username", ctx.auth_user.unwrap_or("").into()),
        ("sasl_sender", String::new()),
        ("ccert_subject", String::new()),
        ("ccert_issuer", String::new()),
        ("ccert_fingerprint", String::new()),
        ("ccert_pubkey_fingerprint", String::new()),
        (
            "encryption_protocol",
            tls.map_or(String::new(), |t| t.protocol.clone()),
        ),
        (
            "encryption_cipher",
            tls.map_or(String::new(), |t| t.cipher.clone()),
        ),
        ("encryption_keysize", keysize.to_string()),
        ("policy_context", context.into()),
    ]
}

#[cfg(test)]
mod tests;
