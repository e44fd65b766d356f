//! The compiled policy: one immutable [`Pipeline`] that every SMTP stage consults.
//!
//! [`Pipeline::compile`] turns a validated [`Config`] into per-stage rule lists
//! (an array indexed by [`Stage`]), with set names resolved to shared sets, so that
//! evaluating a rule is a few lookups and no string matching on names. A pipeline
//! never changes once built: it is shared by `Arc` and a reload compiles a new one
//! and swaps it whole (DESIGN §5.6).
//!
//! Rules run in order and the first one whose conditions all match decides. Every
//! [`Decision`] names the rule that made it (file:line:col), which is what
//! `mtactl test-policy` and the logs show.
//!
//! Safe by default (DESIGN §5.3):
//! - with no deciding rule, a recipient is refused with
//!   `554 5.7.1 <rcpt>: Relay access denied`: an empty policy is never an open relay;
//! - `rcpt-domain` looks at the domain the address will actually be routed to, and
//!   does not match at all when the local part carries routing syntax (`%` hack,
//!   `!` bang path, a quoted `@`, a source route), like Postfix's
//!   `allow_untrusted_routing = no`;
//! - reply text is printable ASCII only, and the recipient echoed in a reply is
//!   sanitised and bounded.

pub mod address;
pub mod alias;
mod checks;
pub mod decision_log;
mod dry_run;
pub mod greylist;
pub mod lint;
pub mod local;
mod outcome;
mod panics;
mod rate;
mod relay_proof;
pub mod script;
pub mod services;
mod signing;
pub mod trace;

/// Transports and transport(5) lookups (defined in config, which parses them).
pub mod route {
    pub use crate::config::route::*;
}

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use miette::SourceSpan;
use regex::Regex;
use tracing::{debug, error, warn};

use crate::config::{
    AuthCheck, ClientRef, Condition, Config, ConfigError, ConfigErrors, RuleAction, RuleConfig,
};
use crate::logsafe::esc;
use crate::lookup::{DomainSet, LookupError, NetworkSet};
use crate::mailauth::{AuthResult, AuthResults};
pub use crate::net::tls::TlsInfo;
use script::{
    Hook, HookDecision, HookError, HookInput, HookOutput, KnownNames, Lookups, NoLookups,
    ScriptError, ScriptHost, ScriptLimits,
};

pub use crate::config::{Origin, Reply, Stage};
pub use crate::message::mime;
pub use crate::message::{
    HeaderChange, HeaderLine, Headers, NO_HEADERS, RawEdit, apply_header_edits, apply_raw_edits,
    parse_headers,
};
pub use address::routing_domain;
pub use address::{canonical as canonical_address, canonical_or_same};
pub use checks::{CheckMatch, ContentChecks};
pub use dry_run::{DryEnvelope, DryRunReport, LocalDry, StageResult};
pub use outcome::{Acceptance, RouteInput, Routed, RoutedOutcome};
pub use rate::{RateKind, RateView};
pub use relay_proof::{Envelope, RelayAnalysis, RelayFinding, WideTrust};
pub use signing::{DkimPlan, MailOrigin};

/// Longest address echoed back in a reply.
pub const MAX_ECHOED_ADDRESS: usize = 256;

/// What a stage decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead (the command is accepted).
    Accept,
    /// Refuse with this reply (4xx or 5xx).
    Reject(Reply),
    /// Refuse for now (always 4xx).
    Defer(Reply),
    /// Accept, then drop the message.
    Discard,
    /// Accept, and keep the message on hold in the queue.
    Hold,
    /// No decision: the next rule runs.
    Next,
}

impl Verdict {
    /// The verb as rules write it.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Defer(_) => "defer",
            Verdict::Discard => "discard",
            Verdict::Hold => "hold",
            Verdict::Next => "next",
        }
    }
}

/// A stage's verdict and the rule that made it (`None`: no rule decided and the
/// stage's default applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<Origin>,
    /// `mode="warn"` rules that matched on the way, with what they would have done.
    pub warned: Vec<(Origin, Verdict)>,
    /// Why the deciding rule failed closed (a hook's error with its file:line:col and
    /// cause, a table that cannot answer, a bad transport): what the log says beside
    /// the 451, and what `mtactl test-policy` shows.
    pub error: Option<String>,
    /// What the stage made besides its verdict: only the data and route stages make
    /// anything.
    pub output: Output,
    /// Header lines policy services asked to add (`PREPEND`) at mail or rcpt: the
    /// session puts them above its Received: header, as Postfix does. (At data they
    /// are header changes of [`DataOutput`]; at connect and helo they are ignored.)
    pub prepend: Vec<String>,
}

/// What a stage makes besides its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Connect, helo, mail and rcpt make nothing else.
    #[default]
    None,
    Data(DataOutput),
    Route(RouteOutput),
}

/// What the data stage made, for [`Pipeline::accept`] to turn into what becomes of the
/// message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataOutput {
    /// Header changes from the data hooks that ran, in order (applied to the message
    /// unless it is refused).
    pub header_changes: Vec<HeaderChange>,
    /// What `header-checks` / `body-checks` did: raw edits (applied before
    /// `header_changes`), REDIRECT / BCC, and every match.
    pub checks: ContentChecks,
    /// The content filter a `filter` rule or a hook chose (the last one), with its rule.
    pub filter: Option<(String, Origin)>,
}

/// What the route stage's deciding rule chose, for [`Pipeline::route`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteOutput {
    /// The transport a rule or a route hook chose (`smtp:[host]:port`); `None`: the
    /// default route.
    pub transport: Option<String>,
    /// The deciding rule's `auth=`, `tls=`, `fallback=`, `dkim=` ...
    pub options: route::RouteOptions,
}

impl Decision {
    /// A verdict no rule made (a built-in check).
    pub(crate) fn built_in(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            rule: None,
            warned: Vec::new(),
            error: None,
            output: Output::None,
            prepend: Vec::new(),
        }
    }

    /// The data stage's output (`None` at the other stages).
    pub fn data(&self) -> Option<&DataOutput> {
        match &self.output {
            Output::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The route stage's output (`None` at the other stages).
    pub fn route_output(&self) -> Option<&RouteOutput> {
        match &self.output {
            Output::Route(r) => Some(r),
            _ => None,
        }
    }

    /// A table a rule needed could not answer (a database that is down or slow):
    /// Postfix's `451 4.3.0 Temporary lookup failure`, never an accept nor a 5xx.
    fn lookup_failed(rule: Origin, why: &dyn std::fmt::Display) -> Decision {
        Decision {
            error: Some(format!("lookup failed: {why}")),
            ..Decision::deferred(
                Reply::new(451, [4, 3, 0], "Temporary lookup failure"),
                Some(rule),
            )
        }
    }

    /// A deferral by `rule`, and nothing else.
    fn deferred(reply: Reply, rule: Option<Origin>) -> Decision {
        Decision {
            rule,
            ..Decision::built_in(Verdict::Defer(reply))
        }
    }
}

/// What policy services asked for that waits for the stage's final verdict
/// (Postfix's `defer_if_permit` and `defer_if_reject` flags, and PREPEND headers).
#[derive(Default)]
struct Pending {
    defer_if_permit: Option<(Reply, Origin)>,
    defer_if_reject: Option<(Reply, Origin)>,
    /// A `HOLD`: an accepting verdict becomes a hold (a refusal stays one: a hold is
    /// never an accept where the stage would refuse, as relay-denied at rcpt).
    hold: Option<Origin>,
    prepend: Vec<String>,
}

impl Pending {
    /// The verdict once the flags are applied: an accepting verdict becomes the
    /// DEFER_IF_PERMIT deferral, a 5xx refusal the DEFER_IF_REJECT one; and the rule
    /// that made it so.
    fn settle(&self, verdict: Verdict, rule: Origin) -> (Verdict, Origin) {
        match self.apply(verdict) {
            (v, Some(origin)) => (v, origin),
            (v, None) => (v, rule),
        }
    }

    /// [`Pending::settle`] for a stage's default verdict (no rule decided).
    fn settle_default(&self, verdict: Verdict) -> (Verdict, Option<Origin>) {
        self.apply(verdict)
    }

    fn apply(&self, verdict: Verdict) -> (Verdict, Option<Origin>) {
        match (&verdict, &self.defer_if_permit, &self.defer_if_reject) {
            (Verdict::Accept | Verdict::Hold | Verdict::Discard, Some((reply, origin)), _) => {
                (Verdict::Defer(reply.clone()), Some(origin.clone()))
            }
            (Verdict::Reject(r), _, Some((reply, origin))) if r.code >= 500 => {
                (Verdict::Defer(reply.clone()), Some(origin.clone()))
            }
            (Verdict::Accept, _, _) if self.hold.is_some() => (Verdict::Hold, self.hold.clone()),
            _ => (verdict, None),
        }
    }
}

/// A stage's output from what its rules made: the data stage's, the route stage's, or
/// nothing.
fn output(
    stage: Stage,
    header_changes: Vec<HeaderChange>,
    checks: ContentChecks,
    filter: Option<(String, Origin)>,
    transport: Option<String>,
    options: &route::RouteOptions,
) -> Output {
    match stage {
        Stage::Data => Output::Data(DataOutput {
            header_changes,
            checks,
            filter,
        }),
        Stage::Route => Output::Route(RouteOutput {
            transport,
            options: options.clone(),
        }),
        _ => Output::None,
    }
}

/// Where the route stage sends one recipient ([`Pipeline::route`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Deliver with this transport. An `smtp:` next hop without a host is already
    /// resolved to the recipient's domain.
    To {
        transport: route::Transport,
        options: route::RouteOptions,
        /// The rule that decided; `None` for the default route (MX of the domain).
        rule: Option<Origin>,
    },
    /// A route hook refused (bounce) or deferred (retry later); or hold (retry later).
    Refused { reply: Reply, rule: Option<Origin> },
}

/// What a stage can see. Fields that do not exist yet at a stage are `None` / empty;
/// the configuration refuses conditions that would read them there.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub listener: &'a str,
    pub helo: Option<&'a str>,
    /// The session's TLS, if it is encrypted.
    pub tls: Option<&'a TlsInfo>,
    pub auth_user: Option<&'a str>,
    /// Who submitted the message through `sendmail` (the listener is then `local`).
    pub submitter: Option<&'a local::Submitter>,
    /// `Some("")` is the null sender.
    pub sender: Option<&'a str>,
    pub rcpt: Option<&'a str>,
    /// The recipients accepted so far (all of them at data).
    pub recipients: &'a [String],
    /// At mail, the SIZE= the client declared (if any); at data, the message size.
    pub size: Option<u64>,
    /// At data, the message's logical headers, as header_checks see them.
    pub headers: &'a Headers,
    /// At data, the whole message as received, headers and body (what content
    /// checks read; hooks get `ctx.body()`, what follows the header block, and
    /// `ctx.parts()` from all of it).
    pub body: Option<&'a [u8]>,
    /// The client's rate-limit counters (hooks' `ctx.rate(kind)`); `None` outside a
    /// session.
    pub rates: Option<&'a dyn RateView>,
    /// What the `authentication` checks found so far (SPF from mail on, the rest at
    /// data); `None`: nothing was checked (every result reads `skipped`).
    pub auth: Option<&'a AuthResults>,
    /// The transaction's identifier, the same from the first RCPT to the end of DATA
    /// (the `instance` a policy server sees, which quota servers key on; none at MAIL,
    /// as in Postfix).
    pub instance: Option<&'a str>,
    /// `ESMTP` or `SMTP`, as the client greeted (`protocol_name` for policy servers).
    pub protocol: Option<&'a str>,
    /// The SASL mechanism the client authenticated with (`PLAIN`, `LOGIN`).
    pub sasl_method: Option<&'a str>,
    /// A session run in memory (a dry run, a suite): the DNS answers it is given.
    /// DNS lists and hooks' lookups then answer from them, and policy services are
    /// not asked (see [`services`]): nothing reaches the network.
    pub dns_fixture: Option<&'a crate::mailauth::DnsFixture>,
    /// The session this decision is made in (its log id), for the decision log.
    pub session: Option<u64>,
    /// The message's queue id, once it has one (the data stage), for the decision log.
    pub queue_id: Option<&'a str>,
    /// Where `greylist` rules keep the state of triplets (the process's store, or the
    /// cluster's); `None` outside a session: such a rule then defers (451). A dry run
    /// reads its fixture instead.
    pub greylist: Option<&'a dyn greylist::Store>,
}

impl<'a> Context<'a> {
    /// A connect-stage context: only the client is known.
    pub fn new(client_ip: IpAddr, listener: &'a str) -> Self {
        Self {
            client_ip,
            client_port: 0,
            listener,
            helo: None,
            tls: None,
            auth_user: None,
            submitter: None,
            sender: None,
            rcpt: None,
            recipients: &[],
            size: None,
            headers: &NO_HEADERS,
            body: None,
            rates: None,
            auth: None,
            instance: None,
            protocol: None,
            sasl_method: None,
            dns_fixture: None,
            session: None,
            queue_id: None,
            greylist: None,
        }
    }
}

/// The context of the first policy, kept for callers that only check recipients.
#[derive(Clone, Copy, Debug)]
pub struct RcptContext<'a> {
    pub client_ip: IpAddr,
    pub rcpt: &'a str,
}

/// The compiled policy: per stage, an ordered list of rules, the script host their
/// hooks run in, and the sets and tables hooks may look into.
pub struct Pipeline {
    stages: [Vec<Rule>; Stage::COUNT],
    host: ScriptHost,
    lookups: Arc<dyn Lookups>,
    rewriter: alias::Rewriter,
    filters: Filters,
    /// A hash of every file this policy was compiled from ([`Pipeline::revision`]).
    revision: Arc<str>,
    /// Those files, for `reload { watch }`.
    sources: Arc<crate::config::Sources>,
    /// `virtual-mailboxes`: recipients checked at RCPT, routed to their mailbox.
    mailboxes: Option<Mailboxes>,
    /// `dkim` nodes: who signs what delivery sends (see [`crate::mailauth::dkim`]).
    dkim: Arc<[crate::mailauth::dkim::Signer]>,
    /// `dkim-internal`: the clients whose mail is ours; `None`: loopback.
    dkim_internal: Option<Arc<[Arc<NetworkSet>]>>,
    /// The `authentication` block: which incoming mail is checked, and how.
    authentication: Option<Arc<AuthSettings>>,
    /// Some route rule has `arc-seal=`.
    seals: bool,
    /// This server's own addresses (listeners', and the interfaces' when a listener
    /// binds them all): `user@[one of them]` is `user@hostname` (RFC 1123 §5.2.17).
    own_addresses: Arc<[IpAddr]>,
    /// `delivery { local-recipients }`, resolved; `None`: every name exists.
    local_recipients: Option<Arc<[LocalSource]>>,
    /// `delivery { tls }` and `delivery { tls-policy-map }`: the dry run shows the TLS
    /// level each SMTP route gets.
    tls_policy: (
        crate::config::route::TlsPolicy,
        Option<Arc<crate::config::tls_policy::TlsPolicyMap>>,
    ),
    /// `limits { hop-count }`: the most Received: headers a message may have.
    hop_count: usize,
    /// `local-submission`: who may submit through `sendmail`, which senders.
    local_submission: Option<Arc<crate::config::LocalSubmission>>,
    /// Policy servers and DNS lists rules and hooks ask.
    services: Arc<services::Services>,
    /// The `greylisting` block, its sets resolved: what `greylist` rules apply.
    greylisting: Arc<Greylisting>,
    /// The milters of each listener's sessions: what a replay gives the recorded
    /// milters' answers of ([`decision_log::Milters`]).
    milters: Arc<decision_log::Milters>,
}

/// The `greylisting` block with its allowlists resolved.
#[derive(Debug, Default)]
struct Greylisting {
    settings: greylist::Settings,
    allow_clients: Vec<Arc<NetworkSet>>,
    allow_recipients: Vec<Arc<DomainSet>>,
}

/// Where a recipient of the `local` transport must be found ([`crate::config::LocalRecipients`]).
#[derive(Clone, Debug)]
enum LocalSource {
    Passwd,
    Aliases,
    Table(Arc<crate::lookup::Table>),
}

/// The `authentication` block, resolved (see [`crate::mailauth`]).
#[derive(Debug)]
pub struct AuthSettings {
    /// The name our Authentication-Results headers carry (and forged ones claim).
    pub authserv_id: String,
    pub checks: crate::mailauth::Checks,
    /// Per stage (MAIL; then DATA): the budget of the checks, after which what is
    /// left is temperror.
    pub timeout: std::time::Duration,
    skip_clients: Vec<Arc<NetworkSet>>,
    skip_listeners: Vec<String>,
}

impl AuthSettings {
    /// Whether mail from this client on this listener is checked: not when the client
    /// authenticated (its mail is ours), nor for `skip-clients` and `skip-listeners`,
    /// nor on `filtered` listeners (content filters' re-injection).
    pub fn applies(&self, client: IpAddr, listener: &str, authenticated: bool) -> bool {
        !authenticated
            && !self.skip_listeners.iter().any(|l| l == listener)
            && !self.skip_clients.iter().any(|set| set.contains(client))
    }
}

/// Virtual mailbox domains, their mailboxes and transport, resolved.
#[derive(Clone, Debug)]
struct Mailboxes {
    domains: Arc<DomainSet>,
    table: Arc<crate::lookup::Table>,
    /// `None`: the Maildir the table names (`virtual:PATH`).
    transport: Option<String>,
}

/// The content filters and which mail goes through them.
#[derive(Clone, Debug, Default)]
struct Filters {
    by_name: BTreeMap<String, crate::config::ContentFilter>,
    /// Per listener: its own filter, and whether it is a `filtered` listener.
    listeners: BTreeMap<String, (Option<String>, bool)>,
    /// The first listener of the configuration: where a dry run without a listener
    /// connects, as a client reaching the server's main address would.
    first_listener: Option<String>,
    /// `server { content-filter }`.
    default: Option<String>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            stages: Default::default(),
            host: ScriptHost::default(),
            lookups: Arc::new(NoLookups),
            rewriter: alias::Rewriter::default(),
            filters: Filters::default(),
            revision: crate::config::Sources::default().revision().into(),
            sources: Arc::default(),
            mailboxes: None,
            dkim: Arc::new([]),
            dkim_internal: None,
            authentication: None,
            local_submission: None,
            seals: false,
            own_addresses: Arc::new([]),
            local_recipients: None,
            tls_policy: Default::default(),
            hop_count: crate::config::Limits::default().hop_count,
            services: Arc::default(),
            greylisting: Arc::default(),
            milters: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

struct Rule {
    action: Action,
    conditions: Box<[Test]>,
    warn: bool,
    /// `open-relay="intended"` ([`crate::config::RuleConfig::open_relay`]).
    open_relay: bool,
    origin: Origin,
    route: route::RouteOptions,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match &self.action {
            Action::Verdict(v) => v.name().to_owned(),
            Action::Hook(h) => format!("hook {}:{}", h.file(), h.function()),
            Action::Transport(p, t) => format!("transport {p:?} {t}"),
            Action::TransportTable(_) => "transport-table".to_owned(),
            Action::Checks(c) => c.content.rule_name().to_owned(),
            Action::Filter(name) => format!("filter {name}"),
            Action::PolicyService(name) => format!("check-policy-service {name}"),
            Action::RejectDnsbl(name) => format!("reject-dnsbl {name}"),
            Action::Greylist => "greylist".to_owned(),
        };
        write!(f, "{} {action}", self.origin)
    }
}

/// What a matching rule does.
enum Action {
    Verdict(Verdict),
    Hook(Hook),
    /// Route stage: recipients matching the pattern go to the transport.
    Transport(route::RoutePattern, String),
    /// Route stage: a transport(5) table.
    TransportTable(Arc<crate::lookup::Table>),
    /// Data stage: header_checks / body_checks.
    Checks(crate::config::checks::ChecksConfig),
    /// Data stage: the message goes through this content filter; the next rule runs.
    Filter(String),
    /// Ask this policy service and apply its answer.
    PolicyService(String),
    /// Refuse when this DNS list lists the client (or sender domain, or HELO name).
    RejectDnsbl(String),
    /// Greylist the triplet ([`greylist`]); defers only what the stage would accept.
    Greylist,
}

/// The policy's sets and tables, for `mta::listed` and `mta::lookup` in hooks.
struct PolicyLookups {
    networks: BTreeMap<String, Arc<NetworkSet>>,
    domains: BTreeMap<String, Arc<DomainSet>>,
    tables: BTreeMap<String, Arc<crate::lookup::Table>>,
    services: Arc<services::Services>,
}

impl Lookups for PolicyLookups {
    fn in_set(&self, name: &str, value: &str) -> Option<Result<bool, LookupError>> {
        if let Some(set) = self.networks.get(name) {
            return Some(Ok(value.parse::<IpAddr>().is_ok_and(|ip| set.contains(ip))));
        }
        if let Some(set) = self.domains.get(name) {
            return Some(set.contains(value));
        }
        self.tables
            .get(name)
            .map(|t| t.lookup(value).map(|v| v.is_some()))
    }

    fn table(&self, name: &str, key: &str) -> Option<Result<Option<String>, LookupError>> {
        self.tables
            .get(name)
            .map(|t| t.lookup(key).map(|v| v.map(|v| v.into_owned())))
    }

    fn dns(
        &self,
        name: &str,
        kind: crate::net::dns::Query,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>, String> {
        self.services.lookup(name, kind, timeout)
    }

    fn dnsbl_score(
        &self,
        list: &str,
        client: IpAddr,
        helo: Option<&str>,
        sender: Option<&str>,
    ) -> Option<Result<i64, String>> {
        if !self.services.has_dnsbl(list) {
            return None;
        }
        Some(
            self.services
                .dnsbl_for(list, client, helo, sender)
                .map(|s| s.map_or(0, |s| s.score))
                .map_err(|e| e.to_string()),
        )
    }
}

#[derive(Debug)]
struct Test {
    negate: bool,
    check: Check,
}

/// A condition with its sets resolved and its patterns compiled.
#[derive(Debug)]
enum Check {
    Client(Arc<NetworkSet>),
    Listener(String),
    Helo(String),
    HeloMatches(Regex),
    Tls(bool),
    Authenticated(bool),
    AuthUser(String),
    Sender(String),
    SenderDomain(Arc<DomainSet>),
    SenderMatches(Regex),
    SenderLogin(Arc<crate::lookup::Table>),
    Rcpt(String),
    RcptDomain(Arc<DomainSet>),
    RcptMatches(Regex),
    SizeOver(u64),
    HeaderMatches(Regex),
    Auth(AuthCheck, Vec<AuthResult>),
    DmarcPolicy(Vec<crate::mailauth::DmarcPolicy>),
    /// The DNS list of this name lists the client (asked when the rule is reached).
    Dnsbl(String),
}

impl Check {
    /// The condition's name, as rules write it (without `not-`).
    fn name(&self) -> &'static str {
        match self {
            Check::Client(_) => "client",
            Check::Listener(_) => "listener",
            Check::Helo(_) => "helo",
            Check::HeloMatches(_) => "helo-matches",
            Check::Tls(_) => "tls",
            Check::Authenticated(_) => "authenticated",
            Check::AuthUser(_) => "auth-user",
            Check::Sender(_) => "sender",
            Check::SenderDomain(_) => "sender-domain",
            Check::SenderMatches(_) => "sender-matches",
            Check::SenderLogin(_) => "sender-login",
            Check::Rcpt(_) => "rcpt",
            Check::RcptDomain(_) => "rcpt-domain",
            Check::RcptMatches(_) => "rcpt-matches",
            Check::SizeOver(_) => "size-over",
            Check::HeaderMatches(_) => "header-matches",
            Check::Auth(check, _) => check.name(),
            Check::DmarcPolicy(_) => "dmarc-policy",
            Check::Dnsbl(_) => "dnsbl",
        }
    }

    /// Whether the condition holds. A value the stage does not have never matches
    /// (and so a negated condition on it does). An error when a table it needs (a
    /// database) cannot answer.
    fn holds(&self, ctx: &Context<'_>, services: &services::Services) -> Result<bool, LookupError> {
        Ok(match self {
            Check::Client(set) => set.contains(ctx.client_ip),
            Check::Listener(name) => ctx.listener == name,
            Check::Helo(name) => ctx.helo.is_some_and(|h| h.eq_ignore_ascii_case(name)),
            Check::HeloMatches(re) => ctx.helo.is_some_and(|h| re.is_match(h)),
            Check::Tls(want) => ctx.tls.is_some() == *want,
            Check::Authenticated(want) => ctx.auth_user.is_some() == *want,
            Check::AuthUser(user) => ctx.auth_user == Some(user.as_str()),
            Check::Sender(addr) => ctx.sender.is_some_and(|s| s.eq_ignore_ascii_case(addr)),
            Check::SenderDomain(set) => match ctx.sender.and_then(|s| s.rsplit_once('@')) {
                Some((_, d)) => set.contains(d)?,
                None => false,
            },
            Check::SenderMatches(re) => ctx.sender.is_some_and(|s| re.is_match(s)),
            Check::SenderLogin(table) => match (ctx.auth_user, ctx.sender) {
                (Some(user), Some(sender)) => sender_owned_by(table, sender, user)?,
                _ => false,
            },
            Check::Rcpt(addr) => ctx.rcpt.is_some_and(|r| r.eq_ignore_ascii_case(addr)),
            Check::RcptDomain(set) => match ctx.rcpt.and_then(routing_domain) {
                Some(d) => set.contains(&d)?,
                None => false,
            },
            Check::RcptMatches(re) => ctx.rcpt.is_some_and(|r| re.is_match(r)),
            Check::SizeOver(limit) => ctx.size.is_some_and(|s| s > *limit),
            Check::HeaderMatches(re) => ctx.headers.iter().any(|h| re.is_match(&h.unfolded())),
            Check::Auth(check, results) => {
                results.contains(&ctx.auth.map_or(AuthResult::Skipped, |a| check.of(a)))
            }
            Check::DmarcPolicy(policies) => {
                policies.contains(&ctx.auth.map(|a| a.dmarc_policy).unwrap_or_default())
            }
            Check::Dnsbl(name) => match services.dnsbl(name, ctx) {
                Ok(score) => score.is_some_and(|s| s.listed),
                Err(e) => return Err(LookupError(e.to_string())),
            },
        })
    }
}

impl Pipeline {
    /// The content filter a message received on `listener` goes through: none when the
    /// listener is `filtered` (the message is back from a filter), else the one a data
    /// rule `chosen`, else the listener's, else `server { content-filter }`.
    pub fn filter_for<'a>(&'a self, listener: &str, chosen: Option<&'a str>) -> Option<&'a str> {
        let (own, filtered) = self
            .filters
            .listeners
            .get(listener)
            .map_or((None, false), |(f, filtered)| (f.as_deref(), *filtered));
        if filtered {
            return None;
        }
        chosen.or(own).or(self.filters.default.as_deref())
    }

    /// A message with more `Received:` headers than `limits { hop-count }` (ours
    /// included) is in a mail loop: `554 5.4.6 Too many hops`, before the data stage
    /// runs (Postfix's `hopcount_limit`). `Some((hops, reply))` when it is; the session
    /// and the dry run both ask here.
    pub fn too_many_hops(&self, headers: &Headers) -> Option<(usize, Reply)> {
        let hops = headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Received"))
            .count();
        (hops > self.hop_count).then(|| (hops, Reply::new(554, [5, 4, 6], "Too many hops")))
    }

    /// The listener a dry run uses when it names none: the configuration's first.
    pub fn default_listener(&self) -> &str {
        self.filters.first_listener.as_deref().unwrap_or("")
    }

    /// Whether a client at `ip` may be one of the content filters injecting mail back.
    pub fn may_be_a_filter(&self, ip: std::net::IpAddr) -> bool {
        self.filters.by_name.values().any(|f| f.may_send_from(ip))
    }

    /// Removals of the `Authentication-Results:` headers that claim our authserv-id
    /// ([`crate::mailauth::forged`]), for every message whether its checks ran or not:
    /// mail from authenticated clients, `skip-clients` and `skip-listeners` is not
    /// checked, but a header in our name on it is a forgery all the same (RFC 8601 §5).
    /// Mail on a `filtered` listener keeps them: it is back from a content filter with
    /// the header we added when it first arrived. Nothing without an `authentication`
    /// block (mtad then writes no such header, and has no authserv-id). The session and
    /// `mtactl test-policy` both call this.
    pub fn forged_auth_results(&self, listener: &str, headers: &Headers) -> Vec<RawEdit> {
        let filtered = self
            .filters
            .listeners
            .get(listener)
            .is_some_and(|(_, filtered)| *filtered);
        match &self.authentication {
            Some(a) if !filtered => crate::mailauth::forged(headers, &a.authserv_id),
            _ => Vec::new(),
        }
    }

    /// The `dkim` signers, in file order.
    /// The `authentication` block, when incoming mail is checked.
    pub fn authentication(&self) -> Option<&Arc<AuthSettings>> {
        self.authentication.as_ref()
    }

    /// The `dkim` node that ARC-seals a message: the one named by the `arc-seal=` of
    /// the first recipient route that has one (routes as they would be chosen now;
    /// the seal is made at arrival, once, for every recipient).
    pub fn arc_sealer(
        &self,
        ctx: &Context<'_>,
        recipients: &[String],
    ) -> Option<&crate::mailauth::dkim::Signer> {
        if !self.seals {
            return None;
        }
        recipients.iter().find_map(|rcpt| {
            let ctx = Context {
                rcpt: Some(rcpt),
                ..*ctx
            };
            match self.route(&ctx) {
                Route::To { options, .. } => {
                    let domain = options.arc_seal?;
                    self.dkim.iter().find(|s| s.domain == domain)
                }
                _ => None,
            }
        })
    }

    pub fn dkim_signers(&self) -> &Arc<[crate::mailauth::dkim::Signer]> {
        &self.dkim
    }

    /// The content filter of this name, as currently configured.
    pub fn content_filter(&self, name: &str) -> Option<&crate::config::ContentFilter> {
        self.filters.by_name.get(name)
    }

    /// Which exact files this policy was compiled from: 12 hex digits of a SHA-256
    /// over the bytes of the configuration, its includes, tables, certificates and
    /// hooks (see [`crate::config::Sources`]). The same files give the same revision
    /// on any machine. Shown by `mtactl check` and `mtactl status`, logged with every
    /// decision and kept in each queued message's record.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The files this policy was compiled from.
    pub fn sources(&self) -> &crate::config::Sources {
        &self.sources
    }

    /// The `local-submission` block: `None` when local submission is off.
    pub fn local_submission(&self) -> Option<&crate::config::LocalSubmission> {
        self.local_submission.as_deref()
    }

    /// The domain unqualified addresses get (`server { origin }`).
    pub fn origin(&self) -> &str {
        &self.rewriter.origin
    }

    /// Compiles a validated configuration, hooks included; every hook error (syntax,
    /// a context field used at the wrong stage, an unknown set...) is returned as a
    /// configuration error with the script's file:line:col. `mtad`, `mtactl check`
    /// and `mtactl test-policy` all compile through here.
    pub fn build(config: &Config) -> Result<Pipeline, ConfigErrors> {
        let mut errors = Vec::new();
        let pipeline = Self::assemble(config, &mut |e| errors.push(e));
        if errors.is_empty() {
            Ok(pipeline)
        } else {
            Err(ConfigErrors {
                file: config.path.display().to_string(),
                errors,
            })
        }
    }

    /// Reads the configuration at `path` (and what it includes) and compiles it: what
    /// mtad at start and on reload, `mtactl check`, `reload` and `test-policy` run.
    pub fn load(path: &std::path::Path) -> Result<(Config, Pipeline), ConfigErrors> {
        let config = Config::load(path)?;
        let pipeline = Self::build(&config)?;
        Ok((config, pipeline))
    }

    /// Like [`Pipeline::build`], but a hook that does not compile makes its rule
    /// answer 451 (fail closed) instead of an error: for tests and tools that have
    /// already validated the configuration.
    pub fn compile(config: &Config) -> Pipeline {
        Self::assemble(config, &mut |e| {
            tracing::error!(error = %e, "policy hook does not compile; its rule will tempfail");
        })
    }

    fn assemble(config: &Config, on_error: &mut dyn FnMut(ConfigError)) -> Pipeline {
        let networks: BTreeMap<String, Arc<NetworkSet>> = config
            .networks
            .iter()
            .map(|(name, set)| (name.clone(), Arc::new(set.clone())))
            .collect();
        let domains: BTreeMap<String, Arc<DomainSet>> = config
            .domains
            .iter()
            .map(|(name, set)| (name.clone(), Arc::new(set.clone())))
            .collect();
        let host = ScriptHost::new(ScriptLimits::default());
        let known = KnownNames::new(
            config.networks.keys().chain(config.domains.keys()),
            config.tables.keys(),
        );
        let mut stages: [Vec<Rule>; Stage::COUNT] = Default::default();
        let mut sources = config.sources.clone();
        for stage in Stage::ALL {
            for rule in config.rules(stage) {
                let hook = match &rule.action {
                    RuleAction::Hook(h) => {
                        let compiled = ScriptHost::read(&h.path, &h.display).and_then(|text| {
                            sources.add(&h.path, text.as_bytes());
                            host.compile_str(
                                &text,
                                &h.display,
                                h.function.as_deref(),
                                stage,
                                &known,
                            )
                        });
                        match compiled {
                            Ok(hook) => Some(Ok(hook)),
                            Err(errors) => {
                                for e in errors {
                                    on_error(script_error(e, &rule.origin));
                                }
                                Some(Err(()))
                            }
                        }
                    }
                    _ => None,
                };
                stages[stage.index()].push(compile_rule(
                    rule,
                    hook,
                    &networks,
                    &domains,
                    &config.tables,
                ));
            }
        }
        let rewriter = alias::Rewriter {
            origin: config.server.origin.clone(),
            hostname: config.server.hostname.clone(),
            local_domains: domains.get("local").cloned(),
            aliases: config.aliases.clone(),
            virtual_aliases: config.virtual_aliases.clone(),
        };
        let filters = Filters {
            by_name: config.content_filters.clone(),
            listeners: config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), (l.content_filter.clone(), l.filtered)))
                .collect(),
            first_listener: config.listeners.first().map(|l| l.name.clone()),
            default: config.server.content_filter.clone(),
        };
        let authentication = config.authentication.as_ref().map(|a| {
            Arc::new(AuthSettings {
                authserv_id: a
                    .authserv_id
                    .clone()
                    .unwrap_or_else(|| config.server.hostname.to_ascii_lowercase()),
                checks: a.checks,
                timeout: a.timeout,
                skip_clients: a
                    .skip_clients
                    .iter()
                    .filter_map(|c| match c {
                        ClientRef::Net(net) => Some(Arc::new(NetworkSet::new(vec![*net]))),
                        ClientRef::Set(name) => networks.get(name.as_str()).cloned(),
                    })
                    .collect(),
                // mail back from a content filter was checked when it first arrived;
                // checked again it would look sent by the filter's host
                skip_listeners: a
                    .skip_listeners
                    .iter()
                    .cloned()
                    .chain(
                        config
                            .listeners
                            .iter()
                            .filter(|l| l.filtered)
                            .map(|l| l.name.clone()),
                    )
                    .collect(),
            })
        });
        let seals = stages[Stage::Route.index()]
            .iter()
            .any(|r| r.route.arc_seal.is_some());
        let local_recipients = config.delivery.local_recipients.as_ref().map(|sources| {
            sources
                .iter()
                .filter_map(|s| match s {
                    crate::config::LocalRecipients::Passwd => Some(LocalSource::Passwd),
                    crate::config::LocalRecipients::Aliases => Some(LocalSource::Aliases),
                    crate::config::LocalRecipients::Table(name) => {
                        config.tables.get(name).cloned().map(LocalSource::Table)
                    }
                })
                .collect::<Arc<[LocalSource]>>()
        });
        let services = Arc::new(services::Services::new(
            &config.policy_services,
            &config.dnsbls,
            config.delivery.dns_server,
        ));
        let greylisting = {
            let settings = config.greylisting.clone().unwrap_or_default();
            Arc::new(Greylisting {
                allow_clients: settings
                    .allow_clients
                    .iter()
                    .filter_map(|n| networks.get(n).cloned())
                    .collect(),
                allow_recipients: settings
                    .allow_recipients
                    .iter()
                    .filter_map(|n| domains.get(n).cloned())
                    .collect(),
                settings,
            })
        };
        Pipeline {
            greylisting,
            milters: Arc::new(decision_log::Milters::of(config)),
            services: services.clone(),
            local_submission: config.local_submission.clone().map(Arc::new),
            own_addresses: own_addresses(config).into(),
            hop_count: config.limits.hop_count,
            local_recipients,
            tls_policy: (
                config.delivery.tls,
                config
                    .delivery
                    .tls_policy_map
                    .as_ref()
                    .map(|(_, m)| m.clone()),
            ),
            stages,
            host,
            rewriter,
            filters,
            authentication,
            seals,
            dkim: config.dkim.clone().into(),
            dkim_internal: config.dkim_internal.as_ref().map(|list| {
                list.iter()
                    .filter_map(|c| match c {
                        ClientRef::Net(net) => Some(Arc::new(NetworkSet::new(vec![*net]))),
                        ClientRef::Set(name) => networks.get(name.as_str()).cloned(),
                    })
                    .collect()
            }),
            revision: sources.revision().into(),
            sources: Arc::new(sources),
            mailboxes: config.virtual_mailboxes.as_ref().and_then(|m| {
                Some(Mailboxes {
                    domains: domains.get(&m.domains)?.clone(),
                    table: m.table.clone(),
                    transport: m.transport.clone(),
                })
            }),
            lookups: Arc::new(PolicyLookups {
                networks,
                domains,
                tables: config.tables.clone(),
                services,
            }),
        }
    }

    /// Runs one stage: the first rule whose conditions all hold and whose verdict is
    /// not `next` decides; `mode="warn"` rules only log. With no decision, rcpt
    /// refuses (`554 5.7.1 Relay access denied`: never an open relay) and every
    /// other stage accepts.
    ///
    /// How long it took is recorded in `mtad_policy_evaluation_seconds`.
    ///
    /// This is the one entry of every runner (SMTP sessions, the scheduler's route
    /// stage, `mtactl test-policy`): a panic anywhere inside is caught here and
    /// answers `451 4.3.0` for this transaction (a deferral at the route stage),
    /// logged with the rule that was running and the panic's place; the thread
    /// (a tokio worker and its other sessions, the dry run) goes on.
    ///
    /// With the decision log on ([`decision_log`]), every answer from outside the
    /// decision gets is recorded where it is asked (the tape: SQL tables, DNS, policy
    /// services, rate counters) and the decision written with them.
    pub fn evaluate(&self, stage: Stage, ctx: &Context<'_>) -> Decision {
        let (decision, (), logged) = self.evaluate_then(stage, ctx, |_| ());
        drop(logged);
        decision
    }

    /// [`Pipeline::evaluate`], the decision's record kept back for what follows the
    /// rules and belongs to the decision: the milters' answers to the command (the
    /// session adds them, [`decision_log::Logged::finish`]).
    pub fn evaluate_logged(
        &self,
        stage: Stage,
        ctx: &Context<'_>,
    ) -> (Decision, decision_log::Logged) {
        let (decision, (), logged) = self.evaluate_then(stage, ctx, |_| ());
        (decision, logged)
    }

    /// [`Pipeline::evaluate`], then `then` on the decision with the answers it asks
    /// recorded with the decision's (the route stage's built-in checks).
    fn evaluate_then<T>(
        &self,
        stage: Stage,
        ctx: &Context<'_>,
        then: impl FnOnce(&Decision) -> T,
    ) -> (Decision, T, decision_log::Logged) {
        let started = std::time::Instant::now();
        if !decision_log::wanted(ctx) {
            let decision = self.judge(stage, ctx);
            crate::metrics::get().evaluated(stage, started.elapsed());
            let after = then(&decision);
            return (decision, after, decision_log::Logged::default());
        }
        let on_tape = crate::lookup::tape::record();
        let rates = ctx.rates.map(decision_log::TapedRates);
        let taped = Context {
            rates: rates.as_ref().map(|r| r as &dyn RateView),
            ..*ctx
        };
        let decision = self.judge(stage, &taped);
        crate::metrics::get().evaluated(stage, started.elapsed());
        let after = then(&decision);
        let (recorded, _) = on_tape.finish();
        let logged = decision_log::logged(self, stage, ctx, &decision, recorded);
        (decision, after, logged)
    }

    /// The static warnings of this policy ([`lint`]), compiled from `config`: the
    /// files it was built from are read again for the names they use.
    pub fn lints(&self, config: &Config) -> Vec<lint::Lint> {
        let texts: Vec<(String, String)> = self
            .sources
            .names()
            .filter_map(|name| {
                let text = std::fs::read(self.sources.path_of(name)).ok()?;
                Some((name.to_owned(), String::from_utf8_lossy(&text).into_owned()))
            })
            .collect();
        lint::lints(config, &texts)
    }

    /// Whether the rules of `stage` may read the message body (content checks, which
    /// read MIME parts' headers too, and hooks that call `ctx.body()` or `ctx.parts()`):
    /// a replay without the body cannot decide for them.
    pub fn reads_body(&self, stage: Stage) -> bool {
        self.stages[stage.index()].iter().any(|r| match &r.action {
            Action::Checks(_) => true,
            Action::Hook(h) => h.reads_body(),
            _ => false,
        })
    }

    /// Whether any stage has a hook (the only readers of `ctx.rate(kind)`).
    pub fn has_hooks(&self) -> bool {
        self.stages
            .iter()
            .flatten()
            .any(|r| matches!(r.action, Action::Hook(_)))
    }

    /// [`Pipeline::evaluate`] without counting in the metrics: for dry runs
    /// (`mtactl test-policy`, `reload { require-tests }`), which are not traffic.
    /// The panic guard is here, so that dry runs have it too.
    pub(crate) fn judge(&self, stage: Stage, ctx: &Context<'_>) -> Decision {
        // a dry run's SQL answers and rate counters (a suite's `table`, `rate`)
        if let Some(f) = ctx.dns_fixture.filter(|f| !f.answers().is_empty()) {
            let _fixed = crate::lookup::tape::fixture(f.answers().to_vec());
            let rates = decision_log::TapedRates(ctx.rates.unwrap_or(&decision_log::NoRates));
            let fixed = Context {
                rates: Some(&rates),
                ..*ctx
            };
            let _offline = services::Offline::set(Some(f));
            return self.judge_guarded(stage, &fixed);
        }
        let _offline = ctx.dns_fixture.map(|f| services::Offline::set(Some(f)));
        self.judge_guarded(stage, ctx)
    }

    /// [`Pipeline::judge`] once its fixtures are in place: the panic guard.
    fn judge_guarded(&self, stage: Stage, ctx: &Context<'_>) -> Decision {
        let at_rule = std::cell::Cell::new(None);
        panics::catch(|| self.evaluate_unguarded(stage, ctx, &at_rule)).unwrap_or_else(|panic| {
            let rule = at_rule
                .get()
                .and_then(|i| self.stages[stage.index()].get(i));
            error!(
                %stage,
                rule = %rule.map_or_else(|| "(none)".to_owned(), |r| format!("{r:?}")),
                panic = %esc(&panic),
                "policy evaluation panicked; answering 451"
            );
            Decision {
                error: Some(format!("policy evaluation panicked: {}", esc(&panic))),
                ..Decision::deferred(HookError::tempfail_reply(), rule.map(|r| r.origin.clone()))
            }
        })
    }

    /// [`Pipeline::judge`] without the guard; `at_rule` follows the rule running.
    fn evaluate_unguarded(
        &self,
        stage: Stage,
        ctx: &Context<'_>,
        at_rule: &std::cell::Cell<Option<usize>>,
    ) -> Decision {
        let mut decision = self.decide(stage, ctx, at_rule);
        if stage == Stage::Rcpt
            && matches!(decision.verdict, Verdict::Accept | Verdict::Hold)
            && let Some(rcpt) = ctx.rcpt
        {
            match self.unknown_recipient(rcpt) {
                Ok(false) => {
                    if let Some(verdict) = self.undeliverable(ctx, rcpt) {
                        decision.verdict = verdict;
                        decision.rule = None;
                    }
                }
                Ok(true) => {
                    decision.verdict = Verdict::Reject(Reply::new(
                        550,
                        [5, 1, 1],
                        &format!(
                            "<{}>: Recipient address rejected: User unknown in virtual mailbox table",
                            echo(rcpt)
                        ),
                    ));
                    decision.rule = None;
                }
                Err(e) => {
                    error!(error = %esc(&e), "virtual mailbox lookup failed; answering 451");
                    decision.verdict =
                        Verdict::Defer(Reply::new(451, [4, 3, 0], "Temporary lookup failure"));
                    decision.rule = None;
                }
            }
        }
        decision
    }

    fn decide(
        &self,
        stage: Stage,
        ctx: &Context<'_>,
        at_rule: &std::cell::Cell<Option<usize>>,
    ) -> Decision {
        let mut warned = Vec::new();
        let mut header_changes = Vec::new();
        let mut checks = checks::CheckState::default();
        let mut filter = None;
        let mut error: Option<String> = None;
        let mut pending = Pending::default();
        let rules = &self.stages[stage.index()];
        // Postfix's defaults: mime_header_checks and nested_header_checks are
        // header_checks unless the stage has rules of their own
        let dedicated = |content: crate::config::checks::Content| {
            rules
                .iter()
                .any(|r| matches!(&r.action, Action::Checks(c) if c.content == content))
        };
        let classes = checks::Classes {
            mime: !dedicated(crate::config::checks::Content::MimeHeader),
            nested: !dedicated(crate::config::checks::Content::NestedHeader),
        };
        let mime = std::cell::OnceCell::new();
        for (index, rule) in rules.iter().enumerate() {
            at_rule.set(Some(index));
            let mut matched = true;
            for t in &rule.conditions {
                match t.check.holds(ctx, &self.services) {
                    Ok(holds) if holds != t.negate => {}
                    Ok(_) => {
                        matched = false;
                        break;
                    }
                    Err(e) => {
                        error!(%stage, rule = %rule.origin, error = %esc(&e), "lookup failed; answering 451");
                        return Decision::lookup_failed(rule.origin.clone(), &e);
                    }
                }
            }
            if !matched {
                continue;
            }
            let mut transport = None;
            let mut decided_by = rule.origin.clone();
            let verdict = match &rule.action {
                Action::Verdict(v) => v.clone(),
                Action::Checks(cfg) => {
                    // warn mode: a scratch state, so that nothing it does is kept
                    let mut scratch = checks::CheckState {
                        pass: checks.pass,
                        ..Default::default()
                    };
                    let state = if rule.warn { &mut scratch } else { &mut checks };
                    match checks::run(cfg, &rule.origin, ctx, &mime, classes, state) {
                        Some((verdict, entry)) => {
                            decided_by = entry;
                            verdict
                        }
                        None if rule.warn && scratch.hold.is_some() => Verdict::Hold,
                        None => continue,
                    }
                }
                Action::PolicyService(_) | Action::Greylist => {
                    let answer = match &rule.action {
                        Action::PolicyService(name) => {
                            let answer = self.services.ask_policy(name, stage, ctx);
                            if let Some(e) = &answer.error {
                                error!(%stage, rule = %rule.origin, service = %esc(name), action = %esc(&answer.action), error = %esc(e), "policy service: its answer was not used as is");
                            } else {
                                debug!(%stage, rule = %rule.origin, service = %esc(name), action = %esc(&answer.action), "policy service answered");
                            }
                            answer
                        }
                        _ => self.greylist(ctx, &rule.origin),
                    };
                    match answer.effect {
                        services::Effect::Decide(v) => {
                            if !matches!(v, Verdict::Accept | Verdict::Discard) {
                                error = answer.error;
                            }
                            v
                        }
                        _ if rule.warn => {
                            warn!(%stage, rule = %rule.origin, action = %esc(&answer.action), "warn-mode rule matched; not enforced");
                            continue;
                        }
                        services::Effect::Next => continue,
                        services::Effect::DeferIfPermit(reply) => {
                            pending
                                .defer_if_permit
                                .get_or_insert((reply, rule.origin.clone()));
                            continue;
                        }
                        services::Effect::DeferIfReject(reply) => {
                            pending
                                .defer_if_reject
                                .get_or_insert((reply, rule.origin.clone()));
                            continue;
                        }
                        services::Effect::Prepend(header) => {
                            match stage {
                                Stage::Data => {
                                    if let Some((name, value)) = header.split_once(':') {
                                        header_changes.push(HeaderChange::Add {
                                            name: name.to_owned(),
                                            value: value.trim_start().to_owned(),
                                        });
                                    }
                                }
                                _ => pending.prepend.push(header),
                            }
                            continue;
                        }
                        services::Effect::Hold => {
                            pending.hold.get_or_insert(rule.origin.clone());
                            continue;
                        }
                    }
                }
                Action::RejectDnsbl(name) => match self.services.dnsbl(name, ctx) {
                    Ok(Some(score)) if score.listed => {
                        Verdict::Reject(self.services.dnsbl_reply(name, &score))
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        error!(%stage, rule = %rule.origin, error = %esc(&e), "DNS list cannot answer; deferring");
                        error = Some(e.to_string());
                        Verdict::Defer(Reply::new(
                            451,
                            [4, 7, 1],
                            "Service unavailable; DNS list lookup failed, try again later",
                        ))
                    }
                },
                Action::Filter(name) => {
                    if rule.warn {
                        warn!(%stage, rule = %rule.origin, filter = %esc(name), "warn-mode rule matched; the filter is not applied");
                    } else {
                        debug!(%stage, rule = %rule.origin, filter = %esc(name), "content filter chosen");
                        filter = Some((name.clone(), rule.origin.clone()));
                    }
                    continue;
                }
                Action::Transport(pattern, t) => {
                    if !ctx.rcpt.is_some_and(|r| pattern.matches(r)) {
                        continue;
                    }
                    transport = Some(t.clone());
                    Verdict::Accept
                }
                Action::TransportTable(table) => {
                    let found = match ctx.rcpt.map(|r| route::lookup_transport(table, r)) {
                        Some(Ok(found)) => found,
                        Some(Err(e)) => {
                            error!(%stage, rule = %rule.origin, error = %esc(&e), "transport table lookup failed; deferring");
                            return Decision::lookup_failed(rule.origin.clone(), &e);
                        }
                        None => None,
                    };
                    let Some((value, key)) = found else {
                        continue;
                    };
                    match route::Transport::parse(&value) {
                        Ok(t) => {
                            debug!(rule = %rule.origin, key = %esc(&key), transport = %esc(&t), "transport table");
                            transport = Some(t.to_string());
                            Verdict::Accept
                        }
                        Err(e) => {
                            error!(rule = %rule.origin, key = %esc(&key), value = %esc(&value), error = %esc(&e), "bad transport in table; deferring");
                            error = Some(format!(
                                "bad transport {value:?} for {key:?} in the table: {e}"
                            ));
                            Verdict::Defer(HookError::tempfail_reply())
                        }
                    }
                }
                Action::Hook(hook) => match self.call(hook, stage, ctx) {
                    Ok(out) => {
                        if !rule.warn {
                            header_changes.extend(out.header_changes);
                        }
                        let unknown_filter = out
                            .filter
                            .as_ref()
                            .filter(|name| self.content_filter(name).is_none())
                            .cloned();
                        if let Some(name) = unknown_filter {
                            // fail closed, like any other hook error
                            error!(%stage, rule = %rule.origin, filter = %esc(&name), "hook chose a content filter that is not defined; answering 451");
                            error = Some(format!(
                                "the hook chose the content filter {name:?}, which is not defined"
                            ));
                            Verdict::Defer(HookError::tempfail_reply())
                        } else {
                            if !rule.warn
                                && let Some(name) = out.filter
                            {
                                filter = Some((name, rule.origin.clone()));
                            }
                            match out.decision {
                                HookDecision::Transport(t) => match route::Transport::parse(&t) {
                                    Ok(t) => {
                                        transport = Some(t.to_string());
                                        Verdict::Accept
                                    }
                                    Err(e) => {
                                        error!(%stage, rule = %rule.origin, transport = %esc(&t), error = %esc(&e), "route hook returned a bad transport; deferring");
                                        error = Some(format!(
                                            "the hook returned the bad transport {t:?}: {e}"
                                        ));
                                        Verdict::Defer(HookError::tempfail_reply())
                                    }
                                },
                                HookDecision::Verdict(v) => v,
                                HookDecision::Greylist => {
                                    match self.greylist(ctx, &rule.origin).effect {
                                        services::Effect::DeferIfPermit(reply) if !rule.warn => {
                                            pending
                                                .defer_if_permit
                                                .get_or_insert((reply, rule.origin.clone()));
                                            Verdict::Next
                                        }
                                        services::Effect::DeferIfPermit(reply) => {
                                            Verdict::Defer(reply)
                                        }
                                        services::Effect::Decide(v) => v,
                                        _ => Verdict::Next,
                                    }
                                }
                            }
                        }
                    }
                    Err(e) if rule.warn => {
                        warn!(%stage, rule = %rule.origin, error = %esc(&e), "warn-mode hook failed");
                        continue;
                    }
                    Err(e) => {
                        // fail closed: a broken hook never accepts
                        error!(%stage, rule = %rule.origin, error = %esc(&e), "policy hook failed; answering 451");
                        error = Some(e.to_string());
                        Verdict::Defer(HookError::tempfail_reply())
                    }
                },
            };
            if verdict == Verdict::Next {
                continue;
            }
            if rule.warn {
                warn!(%stage, rule = %rule.origin, would = verdict.name(), "warn-mode rule matched; not enforced");
                warned.push((rule.origin.clone(), verdict));
                continue;
            }
            debug!(%stage, rule = %decided_by, verdict = verdict.name(), "rule decided");
            // a HOLD from content checks holds what is accepted
            let (verdict, decided_by) = match (verdict, checks.hold.take()) {
                (Verdict::Accept, Some(entry)) => (Verdict::Hold, entry),
                (verdict, _) => (verdict, decided_by),
            };
            let (verdict, decided_by) = pending.settle(verdict, decided_by);
            return Decision {
                verdict,
                rule: Some(decided_by),
                warned,
                error,
                prepend: pending.prepend,
                output: output(
                    stage,
                    header_changes,
                    checks.out,
                    filter,
                    transport,
                    &rule.route,
                ),
            };
        }
        if let Some(entry) = checks.hold.take() {
            let (verdict, entry) = pending.settle(Verdict::Hold, entry);
            return Decision {
                verdict,
                rule: Some(entry),
                warned,
                error,
                prepend: pending.prepend,
                output: output(
                    stage,
                    header_changes,
                    checks.out,
                    filter,
                    None,
                    &route::RouteOptions::default(),
                ),
            };
        }
        let mut transport = None;
        let verdict = match (stage, ctx.rcpt) {
            (Stage::Rcpt, Some(rcpt)) => Verdict::Reject(relay_denied(rcpt)),
            (Stage::Rcpt, None) => Verdict::Reject(relay_denied("")),
            // no route rule decided: a virtual mailbox goes to its mailbox
            (Stage::Route, Some(rcpt)) => match self.mailbox_route(rcpt) {
                Ok(None) => Verdict::Accept,
                Ok(Some(Ok(t))) => {
                    transport = Some(t);
                    Verdict::Accept
                }
                Ok(Some(Err(reply))) => Verdict::Reject(reply),
                Err(e) => {
                    error!(error = %esc(&e), "virtual mailbox lookup failed; deferring");
                    Verdict::Defer(Reply::new(451, [4, 3, 0], "Temporary lookup failure"))
                }
            },
            _ => Verdict::Accept,
        };
        let (verdict, rule) = match pending.settle_default(verdict) {
            (verdict, Some(origin)) => (verdict, Some(origin)),
            (verdict, None) => (verdict, None),
        };
        Decision {
            verdict,
            rule,
            warned,
            error,
            prepend: pending.prepend,
            output: output(
                stage,
                header_changes,
                checks.out,
                filter,
                transport,
                &route::RouteOptions::default(),
            ),
        }
    }

    /// Whether `rcpt` is in a virtual mailbox domain and is neither a virtual alias
    /// (the address, or its domain's catch-all) nor a mailbox (with or without its
    /// `+extension`): Postfix's `smtpd_reject_unlisted_recipient` for those domains.
    fn unknown_recipient(&self, rcpt: &str) -> Result<bool, LookupError> {
        let Some(m) = &self.mailboxes else {
            return Ok(false);
        };
        let Some(domain) = routing_domain(rcpt) else {
            return Ok(false);
        };
        if !m.domains.contains(&domain)? || self.rewriter.is_virtual_alias(rcpt)? {
            return Ok(false);
        }
        Ok(self.mailbox(rcpt)?.is_none())
    }

    /// The mailbox table's value for `rcpt` (or for it without its `+extension`).
    fn mailbox(&self, rcpt: &str) -> Result<Option<String>, LookupError> {
        let Some(m) = &self.mailboxes else {
            return Ok(None);
        };
        if let Some(v) = m.table.lookup(rcpt)? {
            return Ok(Some(v.into_owned()));
        }
        match rcpt.rsplit_once('@') {
            Some((local, domain)) if local.contains('+') => {
                let user = local.split('+').next().unwrap_or(local);
                Ok(m.table
                    .lookup(&format!("{user}@{domain}"))?
                    .map(|v| v.into_owned()))
            }
            _ => Ok(None),
        }
    }

    /// Where a recipient in a virtual mailbox domain goes when no route rule decides:
    /// `None` when it is not in one; the transport (as written) of its mailbox; or a
    /// bounce when there is no such mailbox (an alias that pointed nowhere).
    fn mailbox_route(&self, rcpt: &str) -> Result<Option<Result<String, Reply>>, LookupError> {
        let Some(m) = &self.mailboxes else {
            return Ok(None);
        };
        match routing_domain(rcpt) {
            Some(domain) if m.domains.contains(&domain)? => {}
            _ => return Ok(None),
        }
        Ok(Some(match self.mailbox(rcpt)? {
            None => Err(Reply::new(
                550,
                [5, 1, 1],
                "User unknown in virtual mailbox table",
            )),
            Some(_) if m.transport.is_some() => Ok(m.transport.clone().unwrap_or_default()),
            Some(path) => match route::Transport::parse(&format!("virtual:{path}")) {
                Ok(t) => Ok(t.to_string()),
                Err(e) => {
                    error!(rcpt = %esc(rcpt), error = %esc(&e), "the virtual mailbox table gives an unusable path");
                    Err(Reply::new(
                        550,
                        [5, 3, 5],
                        "Mailbox path in the virtual mailbox table is unusable",
                    ))
                }
            },
        }))
    }

    /// The route stage for one recipient (`ctx.rcpt`), at delivery time: the
    /// deciding rule's transport and options, or the default route — the MX hosts of
    /// the recipient's domain — when no rule decides.
    pub fn route(&self, ctx: &Context<'_>) -> Route {
        self.routed(ctx, true).1
    }

    /// The one route function: the route stage's decision for `ctx.rcpt` and the route
    /// it makes ([`Pipeline::checked_route`]). `observed`: traffic, counted and
    /// written to the decision log with the route and every answer it asked (the
    /// built-in checks' too); else a dry run's ([`Pipeline::judge`]).
    pub(crate) fn routed(&self, ctx: &Context<'_>, observed: bool) -> (Decision, Route) {
        let rcpt = ctx.rcpt.unwrap_or("");
        if !observed {
            let d = self.judge(Stage::Route, ctx);
            let route = self.checked_route(d.clone(), rcpt);
            return (d, route);
        }
        let (d, route, logged) =
            self.evaluate_then(Stage::Route, ctx, |d| self.checked_route(d.clone(), rcpt));
        logged.route(&route);
        (d, route)
    }

    /// What a route-stage decision for `rcpt` means ([`Pipeline::route_of`]), with the
    /// recipients of the `local` transport checked against `local-recipients`: an
    /// unknown user is `550 5.1.1 User unknown in local recipient table`, never a new
    /// Maildir. The route the scheduler delivers by, the dry run shows, and RCPT checks.
    pub(crate) fn checked_route(&self, d: Decision, rcpt: &str) -> Route {
        let route = Self::route_of(d, rcpt);
        if let Route::To {
            transport: route::Transport::Local,
            ..
        } = &route
        {
            match self.local_recipient_exists(rcpt) {
                Ok(true) => {}
                Ok(false) => {
                    return Route::Refused {
                        reply: Reply::new(550, [5, 1, 1], "User unknown in local recipient table"),
                        rule: None,
                    };
                }
                Err(e) => {
                    error!(rcpt = %echo(rcpt), error = %e, "local recipient lookup failed; deferring");
                    return Route::Refused {
                        reply: Reply::new(451, [4, 3, 0], "Temporary lookup failure"),
                        rule: None,
                    };
                }
            }
        }
        route
    }

    /// Whether `rcpt` (canonical) is a user the `local` transport may deliver to:
    /// found in one of the `local-recipients` sources (Postfix's
    /// `local_recipient_maps`), by its local part lowercased, with and without its
    /// `+extension` (and, in a table, as `user@domain` first). `postmaster` and
    /// `mailer-daemon` always exist, as in Postfix.
    fn local_recipient_exists(&self, rcpt: &str) -> Result<bool, LookupError> {
        let Some(sources) = &self.local_recipients else {
            return Ok(true);
        };
        let (written, domain) = address::split(rcpt);
        let local = address::parse(rcpt)
            .map(|p| p.local)
            .unwrap_or_else(|_| written.to_owned())
            .to_lowercase();
        if local == "postmaster" || local == "mailer-daemon" {
            return Ok(true);
        }
        let mut names = vec![local.clone()];
        if let Some((user, _)) = local.split_once('+')
            && !user.is_empty()
        {
            names.push(user.to_owned());
        }
        let domain = domain.to_ascii_lowercase();
        for source in sources.iter() {
            for name in &names {
                let key = address::quote_local(name);
                let found = match source {
                    LocalSource::Passwd => passwd_user(name)?,
                    LocalSource::Aliases => match &self.rewriter.aliases {
                        Some(t) => t.lookup(&key)?.is_some(),
                        None => false,
                    },
                    LocalSource::Table(t) => {
                        t.lookup(&format!("{key}@{domain}"))?.is_some() || t.lookup(&key)?.is_some()
                    }
                };
                if found {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// At RCPT, for a recipient the rcpt stage accepted: the refusal it gets when it
    /// cannot be delivered, instead of a bounce later (backscatter). The recipient is
    /// expanded as delivery would expand it, and each address it becomes is routed as
    /// delivery would route it ([`Pipeline::route`]); it is refused when one of them
    /// goes to an `error:` transport (with the transport's status and text), or is
    /// refused by the built-in checks (an unknown virtual mailbox or local user, a
    /// lookup that failed: 451). Routes decided by rules otherwise (a route hook's
    /// refusal, a hold) are left to delivery.
    fn undeliverable(&self, ctx: &Context<'_>, rcpt: &str) -> Option<Verdict> {
        let finals = match self.rewriter.expand_checked(rcpt) {
            Ok(finals) => finals,
            Err(alias::ExpandError::Lookup(e)) => {
                error!(rcpt = %echo(rcpt), error = %e, "alias lookup failed; answering 451");
                return Some(Verdict::Defer(Reply::new(
                    451,
                    [4, 3, 0],
                    "Temporary lookup failure",
                )));
            }
            // too deep or too wide: delivery defers it, as it always did
            Err(alias::ExpandError::Limit(_)) => return None,
        };
        let rejected = |code: u16, enhanced: [u8; 3], text: &str| {
            let reply = Reply::new(
                code,
                enhanced,
                &format!("<{}>: Recipient address rejected: {text}", echo(rcpt)),
            );
            if code >= 500 {
                Verdict::Reject(reply)
            } else {
                Verdict::Defer(reply)
            }
        };
        for f in &finals {
            // (not counted in the route stage's metrics: those are deliveries')
            let d = self.decide(
                Stage::Route,
                &Context {
                    rcpt: Some(f),
                    ..*ctx
                },
                &std::cell::Cell::new(None),
            );
            match self.checked_route(d, f) {
                Route::To {
                    transport: route::Transport::Error { enhanced, text },
                    ..
                } => {
                    let code = if enhanced[0] == 4 { 450 } else { 550 };
                    let text = if text.trim().is_empty() {
                        "undeliverable address"
                    } else {
                        text.trim()
                    };
                    return Some(rejected(code, enhanced, text));
                }
                Route::Refused { reply, rule: None } => {
                    if reply.code >= 500 {
                        return Some(rejected(550, reply.enhanced, &reply.text));
                    }
                    return Some(Verdict::Defer(reply));
                }
                _ => {}
            }
        }
        None
    }

    /// What a route-stage decision for `rcpt` means.
    pub(crate) fn route_of(d: Decision, rcpt: &str) -> Route {
        // an address literal is its own next hop: that address, no MX lookup
        let recipient_domain = || match address::literal(rcpt) {
            Some(ip) => route::NextHop::Host {
                host: ip.to_string(),
                port: None,
            },
            None => route::NextHop::Mx {
                domain: routing_domain(rcpt)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                port: None,
            },
        };
        let (transport, options) = match d.output {
            Output::Route(r) => (r.transport, r.options),
            _ => (None, route::RouteOptions::default()),
        };
        let transport = match (&d.verdict, &transport) {
            (Verdict::Reject(reply) | Verdict::Defer(reply), _) => {
                return Route::Refused {
                    reply: reply.clone(),
                    rule: d.rule,
                };
            }
            (Verdict::Hold, _) => {
                return Route::Refused {
                    reply: Reply::new(451, [4, 3, 0], "held by the route stage"),
                    rule: d.rule,
                };
            }
            (Verdict::Discard, _) => route::Transport::Discard(String::new()),
            (_, Some(t)) => match route::Transport::parse(t) {
                Ok(t) => t,
                Err(e) => {
                    error!(rule = ?d.rule, transport = %esc(t), error = %esc(&e), "route: bad transport; deferring");
                    return Route::Refused {
                        reply: HookError::tempfail_reply(),
                        rule: d.rule,
                    };
                }
            },
            (_, None) => route::Transport::Smtp(route::NextHop::RecipientDomain),
        };
        let transport = match transport {
            route::Transport::Smtp(route::NextHop::RecipientDomain) => {
                route::Transport::Smtp(recipient_domain())
            }
            t => t,
        };
        Route::To {
            transport,
            options,
            rule: d.rule,
        }
    }

    fn call(&self, hook: &Hook, stage: Stage, ctx: &Context<'_>) -> Result<HookOutput, HookError> {
        let input = HookInput {
            helo: ctx.helo,
            tls: ctx.tls.map(|t| (t.protocol.as_str(), t.cipher.as_str())),
            auth_user: ctx.auth_user,
            submitter: ctx.submitter,
            sender: ctx.sender,
            rcpt: ctx.rcpt,
            recipients: ctx.recipients,
            size: ctx.size,
            headers: ctx.headers,
            body: ctx.body.map(|m| body_of(m, ctx.headers)),
            message: ctx.body,
            rates: ctx.rates,
            auth: ctx.auth,
            ..HookInput::new(stage, ctx.client_ip, ctx.client_port, ctx.listener)
        };
        hook.call(&self.host, &input, &self.lookups)
    }

    /// The rcpt stage for a client and one recipient.
    pub fn rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        let recipients: [String; 0] = [];
        let context = Context {
            rcpt: Some(ctx.rcpt),
            sender: Some(""),
            recipients: &recipients,
            ..Context::new(ctx.client_ip, "")
        };
        self.evaluate(Stage::Rcpt, &context)
    }

    /// A recipient as a client or a suite wrote it (an SMTP path with or without its
    /// angle brackets, or an address) in the canonical form that everything after
    /// compares and looks up ([`address`]): a quoted dot-atom unquoted
    /// (`"root"@host` is `root@host`), the domain lowercased; a bare local part
    /// qualified with the origin (`root` → `root@ORIGIN`, Postfix's
    /// `append_at_myorigin`), except `postmaster` (RFC 5321 §4.5.1), which is ours:
    /// `postmaster@HOSTNAME`; an address literal naming one of this server's addresses
    /// is `user@HOSTNAME` (RFC 1123 §5.2.17). What is not an address (`user@`,
    /// `user@-bad.example`, `a..b@x`, a label over 63 bytes, `<>`) is
    /// `501 5.1.3 Bad recipient address syntax`. The session at RCPT and the dry run
    /// both read recipients through here.
    pub fn recipient(&self, written: &str) -> Result<Recipient, Reply> {
        let parsed = address::parse(written.trim()).map_err(|e| {
            debug!(rcpt = %echo(written), error = %e, "bad recipient address syntax");
            Reply::new(501, [5, 1, 3], "Bad recipient address syntax")
        })?;
        let local = address::quote_local(&parsed.local);
        let hostname = self.rewriter.hostname.to_ascii_lowercase();
        Ok(match parsed.domain {
            None if parsed.local.eq_ignore_ascii_case("postmaster") => Recipient {
                address: format!("postmaster@{hostname}"),
                bare_postmaster: true,
            },
            None => Recipient {
                address: format!("{local}@{}", self.rewriter.origin.to_ascii_lowercase()),
                bare_postmaster: false,
            },
            Some(address::Domain::Literal(ip)) if self.own_addresses.contains(&ip) => Recipient {
                address: format!("{local}@{hostname}"),
                bare_postmaster: false,
            },
            Some(_) => Recipient {
                address: parsed.canonical(),
                bare_postmaster: false,
            },
        })
    }

    /// The final recipients for `rcpt` after qualification and alias expansion
    /// ([`alias::Rewriter`]); an error means the recipient must be deferred.
    pub fn expand(&self, rcpt: &str) -> Result<Vec<String>, String> {
        self.rewriter.expand(rcpt)
    }

    /// How many rules a stage holds.
    pub fn rule_count(&self, stage: Stage) -> usize {
        self.stages[stage.index()].len()
    }
}

/// A recipient read by [`Pipeline::recipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// In canonical form.
    pub address: String,
    /// A bare `<postmaster>`: always accepted (RFC 5321 §4.5.1), no rule applies.
    pub bare_postmaster: bool,
}

/// Whether `name` is a user of this system (getpwnam(3)).
fn passwd_user(name: &str) -> Result<bool, LookupError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(false);
    }
    nix::unistd::User::from_name(name)
        .map(|u| u.is_some())
        .map_err(|e| LookupError(format!("getpwnam({name}): {e}")))
}

/// This server's own addresses: every listener's, and, when one listens on all of
/// them (`0.0.0.0`, `[::]`), every interface's.
fn own_addresses(config: &Config) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut all = false;
    for l in &config.listeners {
        let ip = l.address.ip();
        if ip.is_unspecified() {
            all = true;
        } else if !out.contains(&ip) {
            out.push(ip);
        }
    }
    if all && let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The default refusal of the rcpt stage, Postfix's wording.
pub fn relay_denied(rcpt: &str) -> Reply {
    Reply::new(
        554,
        [5, 7, 1],
        &format!("<{}>: Relay access denied", echo(rcpt)),
    )
}

/// The body of `message`: what follows the empty line that ends its header block
/// (`headers`, parsed from it), the same for the daemon and the dry run. Without
/// headers, the whole message (less a leading empty line) is body.
fn body_of<'m>(message: &'m [u8], headers: &Headers) -> &'m [u8] {
    let end = headers.iter().next_back().map_or(0, |h| h.raw().end);
    let rest = message.get(end..).unwrap_or_default();
    rest.strip_prefix(b"\r\n")
        .or_else(|| rest.strip_prefix(b"\n"))
        .unwrap_or(rest)
}

/// `text` made safe to echo inside a reply: printable ASCII (anything else becomes
/// `?`) and at most [`MAX_ECHOED_ADDRESS`] bytes.
pub fn echo(text: &str) -> String {
    crate::config::sanitize_text(text, MAX_ECHOED_ADDRESS)
}

/// A script error as a configuration error: the script's own text, place and caret,
/// and the rule that names the hook.
fn script_error(e: ScriptError, rule: &Origin) -> ConfigError {
    let span = e.byte_offset.map(|o| SourceSpan::from(o..o + 1));
    ConfigError {
        message: e.message,
        source_code: e
            .source_text
            .map(|text| miette::NamedSource::new(e.file.clone(), text)),
        span,
        location: Some(Origin {
            file: e.file.as_str().into(),
            line: e.line,
            column: e.column,
        }),
        label: Some("here".to_owned()),
        help: Some(format!("in the hook named at {rule}")),
    }
}

fn compile_rule(
    rule: &RuleConfig,
    hook: Option<Result<Hook, ()>>,
    networks: &BTreeMap<String, Arc<NetworkSet>>,
    domains: &BTreeMap<String, Arc<DomainSet>>,
    tables: &BTreeMap<String, Arc<crate::lookup::Table>>,
) -> Rule {
    let action = match (&rule.action, hook) {
        (_, Some(Ok(hook))) => Action::Hook(hook),
        // a hook that does not compile fails closed
        (_, Some(Err(()))) => Action::Verdict(Verdict::Defer(HookError::tempfail_reply())),
        (RuleAction::Accept, None) => Action::Verdict(Verdict::Accept),
        (RuleAction::Reject(reply), None) => Action::Verdict(Verdict::Reject(reply.clone())),
        (RuleAction::Defer(reply), None) => Action::Verdict(Verdict::Defer(reply.clone())),
        (RuleAction::Discard, None) => Action::Verdict(Verdict::Discard),
        (RuleAction::Hold, None) => Action::Verdict(Verdict::Hold),
        (RuleAction::Hook(_), None) => Action::Verdict(Verdict::Defer(HookError::tempfail_reply())),
        (RuleAction::Transport { pattern, transport }, None) => {
            Action::Transport(pattern.clone(), transport.to_string())
        }
        (RuleAction::Relay(transport), None) => {
            Action::Transport(route::RoutePattern::Any, transport.to_string())
        }
        (RuleAction::Checks(cfg), None) => Action::Checks(cfg.clone()),
        (RuleAction::Filter(name), None) => Action::Filter(name.clone()),
        (RuleAction::PolicyService(name), None) => Action::PolicyService(name.clone()),
        (RuleAction::RejectDnsbl(name), None) => Action::RejectDnsbl(name.clone()),
        (RuleAction::Greylist, None) => Action::Greylist,
        (RuleAction::TransportTable(name), None) => match tables.get(name) {
            Some(table) => Action::TransportTable(table.clone()),
            None => Action::Verdict(Verdict::Defer(HookError::tempfail_reply())),
        },
    };
    let mut conditions = Vec::with_capacity(rule.conditions.len());
    for condition in &rule.conditions {
        let check = match &condition.test {
            Condition::Client(ClientRef::Net(net)) => {
                Some(Check::Client(Arc::new(NetworkSet::new(vec![*net]))))
            }
            Condition::Client(ClientRef::Set(name)) => {
                networks.get(name.as_str()).cloned().map(Check::Client)
            }
            Condition::RcptDomain(name) => {
                domains.get(name.as_str()).cloned().map(Check::RcptDomain)
            }
            Condition::SenderDomain(name) => {
                domains.get(name.as_str()).cloned().map(Check::SenderDomain)
            }
            Condition::Listener(v) => Some(Check::Listener(v.clone())),
            Condition::Helo(v) => Some(Check::Helo(v.clone())),
            Condition::HeloMatches(p) => Some(Check::HeloMatches(p.0.clone())),
            Condition::Tls(b) => Some(Check::Tls(*b)),
            Condition::Authenticated(b) => Some(Check::Authenticated(*b)),
            Condition::AuthUser(v) => Some(Check::AuthUser(v.clone())),
            Condition::Sender(v) => Some(Check::Sender(v.clone())),
            Condition::SenderMatches(p) => Some(Check::SenderMatches(p.0.clone())),
            Condition::SenderLogin(name) => tables.get(name).cloned().map(Check::SenderLogin),
            // compared in canonical form: `rcpt "\"root\"@x"` is root@x
            Condition::Rcpt(v) => Some(Check::Rcpt(address::canonical_or_same(v))),
            Condition::RcptMatches(p) => Some(Check::RcptMatches(p.0.clone())),
            Condition::SizeOver(n) => Some(Check::SizeOver(*n)),
            Condition::HeaderMatches(p) => Some(Check::HeaderMatches(p.0.clone())),
            Condition::Auth(c, results) => Some(Check::Auth(*c, results.clone())),
            Condition::DmarcPolicy(p) => Some(Check::DmarcPolicy(p.clone())),
            Condition::Dnsbl(name) => Some(Check::Dnsbl(name.clone())),
        };
        match check {
            Some(check) => conditions.push(Test {
                negate: condition.negate,
                check,
            }),
            None => {
                tracing::error!(rule = %rule.origin, ?condition, "rule refers to an undefined set; it will tempfail");
                return Rule {
                    action: Action::Verdict(Verdict::Defer(Reply::new(
                        451,
                        [4, 3, 5],
                        "Server configuration error",
                    ))),
                    conditions: Box::new([]),
                    warn: false,
                    open_relay: false,
                    origin: rule.origin.clone(),
                    route: Default::default(),
                };
            }
        }
    }
    Rule {
        action,
        conditions: conditions.into_boxed_slice(),
        warn: rule.warn,
        open_relay: rule.open_relay,
        origin: rule.origin.clone(),
        route: rule.route.clone(),
    }
}

/// Whether `table` lists `user` among the owners of `sender`: the entry for the whole
/// address, else for `@domain` (Postfix's `smtpd_sender_login_maps` lookup order); a
/// value is a list of logins separated by commas or spaces, compared without case. The
/// null sender belongs to nobody.
fn sender_owned_by(
    table: &crate::lookup::Table,
    sender: &str,
    user: &str,
) -> Result<bool, LookupError> {
    if sender.is_empty() {
        return Ok(false);
    }
    let owners = match table.lookup(sender)? {
        Some(o) => Some(o),
        None => match sender.rsplit_once('@') {
            Some((_, domain)) => table.lookup(&format!("@{domain}"))?,
            None => None,
        },
    };
    Ok(owners.is_some_and(|o| {
        o.split([',', ' ', '\t'])
            .any(|login| !login.is_empty() && login.eq_ignore_ascii_case(user))
    }))
}

#[cfg(test)]
mod tests;
