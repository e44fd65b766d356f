//! What the running daemon counts, for Prometheus: sessions, policy decisions and how
//! long they took, deliveries, reloads, and the queue (see the table in
//! `docs/operations.md`).
//!
//! The counters are process-wide, like the process they describe: one [`Metrics`]
//! behind [`get`], so that the SMTP sessions, the policy, the scheduler and the reloader
//! each record with one call and none of them has to be handed a registry. What is
//! measured at scrape time (the queue, the policy revision) is set by whoever serves
//! the scrape ([`crate::control::status::Observer`]) just before [`Metrics::encode`].
//! [`http`] is the endpoint, `server { metrics "IP:PORT" }`.
//!
//! Labels never carry addresses or other client input: `listener` is a configured
//! name, `stage` one of the stages, `rule` the file:line:col of a configured rule (or
//! `default`), `transport` a transport kind, `status`, `state` and `direction` fixed
//! words; `service`, `list` and `milter` (policy services, DNS lists, filters) configured
//! names. The one exception, `domain` of `mtad_deferrals_total`, is bounded: the first
//! [`MAX_DEFERRAL_DOMAINS`] recipient domains deferred get a label of their own (a
//! domain name's characters only), every later one counts as `other`.

pub mod http;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Stage;

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which
/// Prometheus reads; it also reads it when asking for its older text format).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    stage: &'static str,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    status: &'static str,
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    check: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabel {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsPolicyLabel {
    policy: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabel {
    feature: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsblLabels {
    list: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MilterLabel {
    milter: String,
}

/// How many recipient domains `mtad_deferrals_total` names; the rest are `other`.
pub const MAX_DEFERRAL_DOMAINS: usize = 50;

type Latency = Family<StageLabel, Histogram, fn() -> Histogram>;

/// Every metric mtad exposes, registered once.
pub struct Metrics {
    registry: Registry,
    sessions_open: Family<ListenerLabel, Gauge>,
    sessions: Family<ListenerLabel, Counter>,
    accepted: Family<DecisionLabels, Counter>,
    refused: Family<DecisionLabels, Counter>,
    evaluation: Latency,
    deliveries: Family<DeliveryLabels, Counter>,
    queue: Family<StateLabel, Gauge>,
    revision: Family<RevisionLabel, Gauge>,
    reloads: Counter,
    reload_failures: Counter,
    authentication: Family<AuthLabels, Counter>,
    oldest: Gauge,
    spool_fsyncs: Counter,
    deferrals: Family<DomainLabel, Counter>,
    /// The domains with a label of their own in `deferrals`.
    deferral_domains: std::sync::Mutex<std::collections::HashSet<String>>,
    received_bytes: Family<ListenerLabel, Counter>,
    delivered_bytes: Family<TransportLabel, Counter>,
    tls_failures: Family<DirectionLabel, Counter>,
    tls_policy: Family<TlsPolicyLabel, Counter>,
    auth_failures: Family<ListenerLabel, Counter>,
    cluster_errors: Family<FeatureLabel, Counter>,
    cluster_round_trips: Counter,
    greylist: Family<ResultLabel, Counter>,
    cluster_up: Gauge,
    policy_services: Family<ServiceLabels, Counter>,
    dnsbl_queries: Family<DnsblLabels, Counter>,
    milter_failures: Family<MilterLabel, Counter>,
}

/// The process's metrics; on a thread that [`detach_thread`] detached, a scratch set
/// nobody reads.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    static SCRATCH: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    if DETACHED.get() { &SCRATCH } else { &METRICS }
}

thread_local! {
    static DETACHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From now on, what this thread counts is not the process's: a test suite's sessions,
/// run in memory on a thread of their own (with a single-threaded runtime), are not
/// traffic.
pub fn detach_thread() {
    DETACHED.set(true);
}

/// Policy evaluation buckets, in seconds: 10µs × 4ⁿ up to about 2.6s (a declarative
/// stage takes microseconds; a hook with a SQL lookup, milliseconds).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set (tests use their own; the daemon uses [`get`]).
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("mtad"),
            sessions_open: Family::default(),
            sessions: Family::default(),
            accepted: Family::default(),
            refused: Family::default(),
            evaluation: Family::new_with_constructor(latency_histogram),
            deliveries: Family::default(),
            queue: Family::default(),
            revision: Family::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            authentication: Family::default(),
            oldest: Gauge::default(),
            spool_fsyncs: Counter::default(),
            deferrals: Family::default(),
            deferral_domains: std::sync::Mutex::default(),
            received_bytes: Family::default(),
            delivered_bytes: Family::default(),
            tls_failures: Family::default(),
            tls_policy: Family::default(),
            auth_failures: Family::default(),
            cluster_errors: Family::default(),
            cluster_round_trips: Counter::default(),
            greylist: Family::default(),
            cluster_up: Gauge::default(),
            policy_services: Family::default(),
            dnsbl_queries: Family::default(),
            milter_failures: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "sessions_open",
            "SMTP sessions open now, per listener",
            m.sessions_open.clone(),
        );
        r.register(
            "sessions",
            "SMTP sessions started, per listener",
            m.sessions.clone(),
        );
        r.register(
            "policy_accepted",
            "Policy decisions that let the command through (accept, discard, hold, or no rule), per stage and deciding rule; at rcpt, one per recipient",
            m.accepted.clone(),
        );
        r.register(
            "policy_refused",
            "Policy decisions that refused the command (reject, defer), per stage and deciding rule; at rcpt, one per recipient",
            m.refused.clone(),
        );
        r.register(
            "policy_evaluation_seconds",
            "How long evaluating a policy stage took, hooks included",
            m.evaluation.clone(),
        );
        r.register(
            "deliveries",
            "Delivery attempts per recipient, by status (sent, deferred, bounced) and transport",
            m.deliveries.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the queue, by state (active, deferred, hold)",
            m.queue.clone(),
        );
        r.register(
            "policy_revision_info",
            "The running policy's revision (value 1)",
            m.revision.clone(),
        );
        r.register(
            "reloads",
            "Policy reloads that took effect",
            m.reloads.clone(),
        );
        r.register(
            "authentication_results",
            "Results of the checks of incoming messages, by check (spf, dkim, dmarc, arc, iprev) and result",
            m.authentication.clone(),
        );
        r.register(
            "reload_failures",
            "Policy reloads refused (the running policy stayed)",
            m.reload_failures.clone(),
        );
        r.register(
            "queue_oldest_message_age_seconds",
            "How long the oldest message in the queue has been there (0 when it is empty)",
            m.oldest.clone(),
        );
        r.register(
            "spool_fsyncs",
            "fdatasync calls on the spool's segments (one per group commit of messages, \
             plus the delayed ones of delivery records)",
            m.spool_fsyncs.clone(),
        );
        r.register(
            "deferrals",
            "Recipients deferred, by recipient domain (the first 50 domains; the rest as other)",
            m.deferrals.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of the messages queued, per listener (local submission: pickup)",
            m.received_bytes.clone(),
        );
        r.register(
            "delivered_bytes",
            "Bytes delivered, a message's size once per recipient sent, by transport",
            m.delivered_bytes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by direction (inbound: a client of ours, outbound: a next hop)",
            m.tls_failures.clone(),
        );
        r.register(
            "outbound_tls_policy",
            "Outbound connections by TLS policy level (none, opportunistic, required, verify, secure, dane, dane-only) and result (satisfied, plaintext: opportunistic without STARTTLS, failed, refused: deferred before connecting)",
            m.tls_policy.clone(),
        );
        r.register(
            "auth_failures",
            "SMTP AUTH attempts that failed (wrong credentials), per listener",
            m.auth_failures.clone(),
        );
        r.register(
            "cluster_redis_errors",
            "Calls to the cluster's Redis that failed or timed out, by feature (rate-limits, leases, greylisting, heartbeats, content-filter); each one fell back",
            m.cluster_errors.clone(),
        );
        r.register(
            "cluster_redis_round_trips",
            "Requests sent to the cluster's Redis (a command, a script call or a pipeline: one network round trip each), answered or not",
            m.cluster_round_trips.clone(),
        );
        r.register(
            "greylist",
            "Recipients a greylist rule or hook looked at, by result (greylisted; passed: retried after the delay or known; auto-allowlisted; allowlisted: allow-clients, allow-recipients; unavailable: no state, 451)",
            m.greylist.clone(),
        );
        r.register(
            "cluster_redis_up",
            "1 when the cluster's last call to Redis succeeded, 0 when it failed or no cluster is configured",
            m.cluster_up.clone(),
        );
        r.register(
            "policy_service",
            "Requests to policy services (check-policy-service), per service and result (answered; timeout, error: the service's default-action applied)",
            m.policy_services.clone(),
        );
        r.register(
            "dnsbl_queries",
            "DNS list queries, one per zone asked, per list and result (listed: an A record, not_listed, timeout: no answer within the list's timeout, error: the resolver failed)",
            m.dnsbl_queries.clone(),
        );
        r.register(
            "milter_failures",
            "Filters (milters, rspamd over HTTP) that could not be used (refused connection, timeout, broken protocol or reply), per filter; its on-failure action applied",
            m.milter_failures.clone(),
        );
        m
    }

    /// One request sent to the cluster's Redis (see [`crate::cluster`]).
    pub fn cluster_round_trip(&self) {
        self.cluster_round_trips.inc();
    }

    /// A call to the cluster's Redis for `feature` failed (see [`crate::cluster`]).
    pub fn cluster_redis_error(&self, feature: &'static str) {
        self.cluster_errors
            .get_or_create(&FeatureLabel { feature })
            .inc();
    }

    /// A `greylist` rule or hook looked at a recipient: `result` is `greylisted`,
    /// `passed`, `auto-allowlisted`, `allowlisted` or `unavailable`.
    pub fn greylist(&self, result: &'static str) {
        self.greylist.get_or_create(&ResultLabel { result }).inc();
    }

    /// Whether the cluster's Redis answers.
    pub fn cluster_up(&self, up: bool) {
        self.cluster_up.set(i64::from(up));
    }

    /// A policy service was asked: `result` is `answered`, `timeout` or `error`.
    pub fn policy_service(&self, service: &str, result: &'static str) {
        self.policy_services
            .get_or_create(&ServiceLabels {
                service: service.to_owned(),
                result,
            })
            .inc();
    }

    /// A DNS list's zone was asked: `result` is `listed`, `not_listed`, `timeout` or
    /// `error`.
    pub fn dnsbl_query(&self, list: &str, result: &'static str) {
        self.dnsbl_queries
            .get_or_create(&DnsblLabels {
                list: list.to_owned(),
                result,
            })
            .inc();
    }

    /// The filter `milter` failed.
    pub fn milter_failed(&self, milter: &str) {
        self.milter_failures
            .get_or_create(&MilterLabel {
                milter: milter.to_owned(),
            })
            .inc();
    }

    /// A session started on `listener`; it counts as open until the guard drops.
    pub fn session(&self, listener: &str) -> SessionGuard {
        let label = ListenerLabel {
            listener: listener.to_owned(),
        };
        self.sessions.get_or_create(&label).inc();
        let open = self.sessions_open.get_or_create_owned(&label);
        open.inc();
        SessionGuard { open }
    }

    /// Sessions open now on `listener`.
    pub fn open_sessions(&self, listener: &str) -> u64 {
        let label = ListenerLabel {
            listener: listener.to_owned(),
        };
        self.sessions_open
            .get(&label)
            .map_or(0, |g| u64::try_from(g.get()).unwrap_or(0))
    }

    /// A stage decided: `rule` is the deciding rule's place (`default` when none did).
    pub fn decision(&self, stage: Stage, rule: &str, refused: bool) {
        let labels = DecisionLabels {
            stage: stage.as_str(),
            rule: rule.to_owned(),
        };
        let family = if refused {
            &self.refused
        } else {
            &self.accepted
        };
        family.get_or_create(&labels).inc();
    }

    /// Evaluating `stage` took `took`.
    pub fn evaluated(&self, stage: Stage, took: Duration) {
        self.evaluation
            .get_or_create(&StageLabel {
                stage: stage.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// One recipient's delivery attempt ended with `status` (`sent`, `deferred`,
    /// `bounced`) through a `transport` kind (`smtp`, `lmtp`, `local`, ...).
    pub fn delivery(&self, status: &'static str, transport: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels { status, transport })
            .inc();
    }

    /// A checked message's results (checks that did not run are left out).
    pub fn authenticated(&self, results: &crate::mailauth::AuthResults) {
        use crate::mailauth::AuthResult;
        for (check, result) in [
            ("spf", results.spf),
            ("dkim", results.dkim),
            ("dmarc", results.dmarc),
            ("arc", results.arc),
            ("iprev", results.iprev),
        ] {
            if result != AuthResult::Skipped {
                self.authentication
                    .get_or_create(&AuthLabels {
                        check,
                        result: result.as_str(),
                    })
                    .inc();
            }
        }
    }

    /// A recipient at `domain` was deferred.
    pub fn deferral(&self, domain: &str) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let named = !domain.is_empty()
            && domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            && {
                let mut known = self
                    .deferral_domains
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                known.contains(&domain)
                    || (known.len() < MAX_DEFERRAL_DOMAINS && known.insert(domain.clone()))
            };
        let domain = if named { domain } else { "other".to_owned() };
        self.deferrals.get_or_create(&DomainLabel { domain }).inc();
    }

    /// A message of `bytes` was queued from `listener`.
    pub fn received(&self, listener: &str, bytes: u64) {
        self.received_bytes
            .get_or_create(&ListenerLabel {
                listener: listener.to_owned(),
            })
            .inc_by(bytes);
    }

    /// A message of `bytes` was delivered to one recipient over `transport`.
    pub fn delivered(&self, transport: &'static str, bytes: u64) {
        self.delivered_bytes
            .get_or_create(&TransportLabel { transport })
            .inc_by(bytes);
    }

    /// A TLS handshake failed: `inbound` with a client, else with a next hop.
    pub fn tls_failed(&self, inbound: bool) {
        let direction = if inbound { "inbound" } else { "outbound" };
        self.tls_failures
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    /// An outbound connection under TLS policy `policy` ended as `result`.
    pub fn tls_policy(&self, policy: &'static str, result: &'static str) {
        self.tls_policy
            .get_or_create(&TlsPolicyLabel { policy, result })
            .inc();
    }

    /// An AUTH attempt on `listener` failed.
    pub fn auth_failed(&self, listener: &str) {
        self.auth_failures
            .get_or_create(&ListenerLabel {
                listener: listener.to_owned(),
            })
            .inc();
    }

    /// A reload was tried: `ok` when the new policy took effect.
    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads.inc();
        } else {
            self.reload_failures.inc();
        }
    }

    /// Sets what is measured at scrape time: the spool's facts and the running
    /// policy's revision.
    pub fn scraped(&self, spool: &SpoolFacts, revision: &str) {
        let SpoolFacts {
            queue,
            oldest,
            fsyncs,
        } = spool;
        self.oldest
            .set(i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
        // a counter kept by the spool: add what it counted since the last scrape
        self.spool_fsyncs
            .inc_by(fsyncs.saturating_sub(self.spool_fsyncs.get()));
        for &(state, n) in queue.iter() {
            self.queue
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let label = RevisionLabel {
            revision: revision.to_owned(),
        };
        if self.revision.get(&label).is_none() {
            self.revision.clear();
            self.revision.get_or_create(&label).set(1);
        }
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the metrics read from the spool at scrape time.
#[derive(Debug, Default)]
pub struct SpoolFacts {
    /// Messages per queue state.
    pub queue: Vec<(&'static str, usize)>,
    /// The age of the oldest message (zero when the queue is empty).
    pub oldest: Duration,
    /// fdatasync calls on the spool since it was opened.
    pub fsyncs: u64,
}

/// Holds a session open in `mtad_sessions_open`.
pub struct SessionGuard {
    open: Gauge,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferral_domains_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_DEFERRAL_DOMAINS + 10 {
            m.deferral(&format!("d{i}.example"));
        }
        m.deferral("D0.Example.");
        m.deferral("bad\"domain");
        m.deferral("");
        let text = m.encode();
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mtad_deferrals_total{"))
            .collect();
        assert_eq!(labels.len(), MAX_DEFERRAL_DOMAINS + 1, "{text}");
        assert!(text.contains("mtad_deferrals_total{domain=\"d0.example\"} 2\n"));
        // 10 past the cap, and two that are no domain names
        assert!(
            text.contains("mtad_deferrals_total{domain=\"other\"} 12\n"),
            "{text}"
        );
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"))
    }

    #[test]
    fn outbound_tls_is_counted_by_policy_and_result() {
        let m = Metrics::new();
        m.tls_policy("dane", "satisfied");
        m.tls_policy("dane", "satisfied");
        m.tls_policy("dane-only", "refused");
        let text = m.encode();
        assert!(
            text.contains(r#"mtad_outbound_tls_policy_total{policy="dane",result="satisfied"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mtad_outbound_tls_policy_total{policy="dane-only",result="refused"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn counts_what_it_is_told() {
        let m = Metrics::new();
        let a = m.session("mx");
        let b = m.session("mx");
        drop(a);
        m.decision(Stage::Rcpt, "mtad.kdl:7:5", true);
        m.decision(Stage::Rcpt, "mtad.kdl:7:5", true);
        m.decision(Stage::Mail, "default", false);
        m.evaluated(Stage::Rcpt, Duration::from_micros(50));
        m.delivery("sent", "smtp");
        m.reloaded(true);
        m.reloaded(false);
        m.reloaded(false);
        m.scraped(
            &SpoolFacts {
                queue: vec![("active", 3), ("hold", 0)],
                oldest: Duration::from_secs(90),
                fsyncs: 7,
            },
            "0123456789ab",
        );
        m.received("mx", 1000);
        m.received("mx", 24);
        m.delivered("smtp", 1024);
        m.tls_failed(true);
        m.auth_failed("mx");
        m.authenticated(&crate::mailauth::AuthResults {
            dmarc: crate::mailauth::AuthResult::Fail,
            ..Default::default()
        });
        let text = m.encode();
        assert_eq!(
            line(&text, "mtad_authentication_results_total{"),
            "mtad_authentication_results_total{check=\"dmarc\",result=\"fail\"} 1",
            "only the checks that ran"
        );
        assert_eq!(m.open_sessions("mx"), 1);
        assert_eq!(
            line(&text, "mtad_sessions_open{"),
            "mtad_sessions_open{listener=\"mx\"} 1"
        );
        assert_eq!(
            line(&text, "mtad_sessions_total{"),
            "mtad_sessions_total{listener=\"mx\"} 2"
        );
        assert_eq!(
            line(&text, "mtad_policy_refused_total{"),
            "mtad_policy_refused_total{stage=\"rcpt\",rule=\"mtad.kdl:7:5\"} 2"
        );
        assert_eq!(
            line(&text, "mtad_policy_accepted_total{"),
            "mtad_policy_accepted_total{stage=\"mail\",rule=\"default\"} 1"
        );
        assert_eq!(
            line(&text, "mtad_policy_evaluation_seconds_count{"),
            "mtad_policy_evaluation_seconds_count{stage=\"rcpt\"} 1"
        );
        // 50µs lands in the 160µs bucket, not the 40µs one
        assert!(
            text.contains("mtad_policy_evaluation_seconds_bucket{le=\"0.00004\",stage=\"rcpt\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mtad_policy_evaluation_seconds_bucket{le=\"0.00016\",stage=\"rcpt\"} 1"),
            "{text}"
        );
        assert_eq!(
            line(&text, "mtad_deliveries_total{"),
            "mtad_deliveries_total{status=\"sent\",transport=\"smtp\"} 1"
        );
        assert_eq!(line(&text, "mtad_reloads_total"), "mtad_reloads_total 1");
        assert_eq!(
            line(&text, "mtad_reload_failures_total"),
            "mtad_reload_failures_total 2"
        );
        assert!(
            text.contains("mtad_queue_messages{state=\"active\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("mtad_policy_revision_info{revision=\"0123456789ab\"} 1\n"));
        for sample in [
            "mtad_queue_oldest_message_age_seconds 90\n",
            "mtad_spool_fsyncs_total 7\n",
            "mtad_received_bytes_total{listener=\"mx\"} 1024\n",
            "mtad_delivered_bytes_total{transport=\"smtp\"} 1024\n",
            "mtad_tls_handshake_failures_total{direction=\"inbound\"} 1\n",
            "mtad_auth_failures_total{listener=\"mx\"} 1\n",
        ] {
            assert!(text.contains(sample), "{sample} in {text}");
        }
        assert!(text.ends_with("# EOF\n"));
        drop(b);
        assert_eq!(m.open_sessions("mx"), 0);
        // a new revision replaces the old one
        m.scraped(
            &SpoolFacts {
                fsyncs: 9,
                ..SpoolFacts::default()
            },
            "ba9876543210",
        );
        assert!(m.encode().contains("mtad_spool_fsyncs_total 9\n"));
        let text = m.encode();
        assert!(!text.contains("0123456789ab"));
        assert!(text.contains("revision=\"ba9876543210\""));
    }
}
