//! TLS-RPT's reports (RFC 8460 §4, §5): the JSON report of one policy domain for one
//! closed period ([`build`]), the mail that carries it ([`message`], §5.3), and the
//! [`Reporter`] that closes periods and queues the reports.
//!
//! Each domain with counts gets its `_smtp._tls` TXT record looked up (RFC 8460 §3,
//! [`crate::net::tls_rpt`]); without one it gets no report. The `mailto:` addresses
//! get one message through our own queue (the scheduler delivers it as any other;
//! listener [`LISTENER`], which delivery sends despite TLS failures and does not count,
//! §5.3); `https:` addresses are not posted to (logged).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::store::{Closed, Counts, Store};
use super::{PolicyType, ReportPolicy, ResultType};
use crate::delivery::hops::Outbound;
use crate::delivery::scheduler::SchedulerHandle;
use crate::net::tls_rpt::{Rua, parse_record};
use crate::queue::{Envelope, MessageRecord, Spool};

/// The listener name of queued reports: delivery knows them by it.
pub const LISTENER: &str = "tls-rpt";
/// How long a closed period's reports are retried when DNS fails, before they are given
/// up.
const GIVE_UP: u64 = 2 * 86_400;

/// RFC 8460 §4.4's report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    #[serde(rename = "report-id")]
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DateRange {
    #[serde(rename = "start-datetime")]
    pub start: String,
    #[serde(rename = "end-datetime")]
    pub end: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PolicyReport {
    pub policy: PolicyDesc,
    pub summary: Summary,
    #[serde(rename = "failure-details", skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PolicyDesc {
    #[serde(rename = "policy-type")]
    pub policy_type: PolicyType,
    #[serde(rename = "policy-string", skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    #[serde(rename = "mx-host", skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    #[serde(rename = "total-successful-session-count")]
    pub success: u64,
    #[serde(rename = "total-failure-session-count")]
    pub failure: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FailureDetail {
    #[serde(rename = "result-type")]
    pub result_type: ResultType,
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<std::net::IpAddr>,
    #[serde(rename = "receiving-mx-hostname")]
    pub receiving_mx_hostname: String,
    #[serde(rename = "receiving-ip", skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<std::net::IpAddr>,
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
    /// Our text of the failure (the RFC's "TLS-related error code or error message";
    /// `additional-information` is for a URI, which we have none of).
    #[serde(
        rename = "failure-reason-code",
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_reason_code: Option<String>,
}

/// Who sends reports: `delivery { tls-rpt-from, -organization, -contact }`, with
/// defaults from the hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    pub from: String,
    pub organization: String,
    pub contact: String,
    /// The domain of `from`: the report's submitter.
    pub submitter: String,
}

impl Sender {
    pub fn new(settings: &crate::config::Delivery, hostname: &str) -> Sender {
        let from = settings
            .tls_rpt_from
            .clone()
            .unwrap_or_else(|| format!("postmaster@{hostname}"));
        let submitter = from
            .rsplit_once('@')
            .map_or(hostname, |(_, d)| d)
            .to_ascii_lowercase();
        Sender {
            organization: settings
                .tls_rpt_organization
                .clone()
                .unwrap_or_else(|| hostname.to_owned()),
            contact: settings
                .tls_rpt_contact
                .clone()
                .unwrap_or_else(|| from.clone()),
            from,
            submitter,
        }
    }
}

/// RFC 3339 in UTC, as the report writes times.
fn datetime(secs: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The report of `domain` for the period `start..end` (Unix seconds).
pub fn build(
    domain: &str,
    policies: &BTreeMap<ReportPolicy, Counts>,
    start: u64,
    end: u64,
    sender: &Sender,
) -> Report {
    Report {
        organization_name: sender.organization.clone(),
        date_range: DateRange {
            start: datetime(start),
            end: datetime(end),
        },
        contact_info: sender.contact.clone(),
        report_id: format!("{start}.{end}.{domain}@{}", sender.submitter),
        policies: policies
            .iter()
            .map(|(p, c)| PolicyReport {
                policy: PolicyDesc {
                    policy_type: p.kind,
                    policy_string: p.strings.clone(),
                    policy_domain: domain.to_owned(),
                    mx_host: p.mx_host.clone(),
                },
                summary: Summary {
                    success: c.success,
                    failure: c.failure,
                },
                failure_details: c
                    .details
                    .iter()
                    .map(|(f, (n, info))| FailureDetail {
                        result_type: f.result,
                        sending_mta_ip: f.sending_ip,
                        receiving_mx_hostname: f.mx.clone(),
                        receiving_ip: f.receiving_ip,
                        failed_session_count: *n,
                        failure_reason_code: info.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The report as mail (RFC 8460 §5.3): `multipart/report; report-type="tlsrpt"`, a
/// short text and the gzip'd JSON as `application/tlsrpt+gzip`, the subject and the
/// `TLS-Report-Domain`/`TLS-Report-Submitter` fields the RFC asks for.
pub fn message(
    report: &Report,
    domain: &str,
    start: u64,
    end: u64,
    sender: &Sender,
    to: &[String],
) -> std::io::Result<Vec<u8>> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::HeaderType;
    use mail_builder::headers::address::Address;
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::headers::raw::Raw;
    use mail_builder::mime::{BodyPart, MimePart};

    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)?;
    let gz = gz.finish()?;
    let submitter = &sender.submitter;
    let id = &report.report_id;
    let text = format!(
        "This is an SMTP TLS report (RFC 8460) for {domain}, from {submitter}.\r\n\r\n\
         Report Domain: {domain}\r\nSubmitter: {submitter}\r\nReport-ID: <{id}>\r\n"
    );
    MessageBuilder::new()
        .from(Address::new_address(None::<&str>, sender.from.as_str()))
        .to(Address::new_list(
            to.iter()
                .map(|a| Address::new_address(None::<&str>, a.as_str()))
                .collect(),
        ))
        // Raw: folded, never RFC 2047-encoded (it is ASCII, and read by programs)
        .header(
            "Subject",
            HeaderType::Raw(Raw::new(format!(
                "Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>"
            ))),
        )
        .message_id(id.as_str())
        .header("TLS-Report-Domain", HeaderType::Raw(Raw::new(domain)))
        .header(
            "TLS-Report-Submitter",
            HeaderType::Raw(Raw::new(submitter.as_str())),
        )
        .header(
            "Auto-Submitted",
            HeaderType::Raw(Raw::new("auto-generated")),
        )
        .body(MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
            BodyPart::Multipart(vec![
                MimePart::new("text/plain", BodyPart::Text(text.into())),
                MimePart::new("application/tlsrpt+gzip", BodyPart::Binary(gz.into()))
                    .attachment(format!("{submitter}!{domain}!{start}!{end}.json.gz")),
            ]),
        ))
        .write_to_vec()
}

/// What one [`Reporter::send`] did: per domain, what became of its report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SendSummary {
    /// `DOMAIN: queued ID to ADDR,...`, `DOMAIN: no TLSRPT record`...
    pub lines: Vec<String>,
}

/// Closes periods when they are due and sends their reports.
pub struct Reporter {
    spool: Spool,
    handle: SchedulerHandle,
    outbound: Arc<ArcSwap<Outbound>>,
    hostname: String,
    /// One send at a time (the timer's and `mtactl tls-report send`'s).
    busy: tokio::sync::Mutex<()>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Reporter {
    pub fn new(
        spool: Spool,
        handle: SchedulerHandle,
        outbound: Arc<ArcSwap<Outbound>>,
        hostname: String,
    ) -> Reporter {
        Reporter {
            spool,
            handle,
            outbound,
            hostname,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks every minute whether the period is over, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.send(false).await {
                        warn!(error = %e, "TLS-RPT reports not sent");
                    }
                }
            }
        }
    }

    /// Closes the open period when it is due (`now`: whatever its age) and sends the
    /// reports of every closed one.
    pub async fn send(&self, now: bool) -> std::io::Result<SendSummary> {
        let _one = self.busy.lock().await;
        let out = self.outbound.load_full();
        let settings = out.settings();
        let Some(store) = out.tls_rpt() else {
            return Ok(SendSummary {
                lines: vec!["TLS reporting is off (delivery { tls-rpt #true })".into()],
            });
        };
        let at = now_secs();
        let interval = settings.tls_rpt_interval.as_secs().max(1);
        if now || at >= store.start().saturating_add(interval) {
            store.rotate(at)?;
        }
        let sender = Sender::new(settings, &self.hostname);
        let mut summary = SendSummary::default();
        for closed in store.closed()? {
            self.send_period(&out, store, &closed, &sender, at, &mut summary)
                .await?;
        }
        Ok(summary)
    }

    async fn send_period(
        &self,
        out: &Outbound,
        store: &Store,
        closed: &Closed,
        sender: &Sender,
        now: u64,
        summary: &mut SendSummary,
    ) -> std::io::Result<()> {
        let agg = closed.load(store.limits())?;
        let done = closed.done()?;
        let mut pending = false;
        for (domain, policies) in &agg {
            if done.contains(domain) {
                continue;
            }
            let rua = match self.rua(out, domain).await {
                Ok(r) => r,
                Err(e) if now.saturating_sub(closed.end) < GIVE_UP => {
                    debug!(%domain, error = %e, "TLSRPT record lookup failed; retried later");
                    summary.lines.push(format!("{domain}: retried later: {e}"));
                    pending = true;
                    continue;
                }
                Err(e) => {
                    warn!(%domain, error = %e, "TLSRPT record lookup failed for two days; the report is dropped");
                    Vec::new()
                }
            };
            if rua.is_empty() {
                summary.lines.push(format!("{domain}: no TLSRPT record"));
                closed.mark_done(domain)?;
                continue;
            }
            let report = build(domain, policies, closed.start, closed.end, sender);
            let mailto: Vec<String> = rua
                .iter()
                .filter_map(|r| match r {
                    Rua::Mailto(a) => Some(a.clone()),
                    Rua::Https(_) => None,
                })
                .collect();
            for r in &rua {
                if let Rua::Https(url) = r {
                    info!(%domain, %url, "TLS-RPT: https: report addresses are not supported; skipped");
                    summary
                        .lines
                        .push(format!("{domain}: {url} skipped (https: is not supported)"));
                }
            }
            if !mailto.is_empty() {
                let body = message(&report, domain, closed.start, closed.end, sender, &mailto)?;
                let id = self.enqueue(sender, &mailto, body).await?;
                info!(%domain, queue_id = %id, to = %mailto.join(","), report_id = %report.report_id, "TLS-RPT report queued");
                summary
                    .lines
                    .push(format!("{domain}: queued {id} to {}", mailto.join(",")));
            }
            closed.mark_done(domain)?;
        }
        if !pending {
            closed.remove()?;
        }
        Ok(())
    }

    /// The report addresses `domain` publishes (none without a usable record).
    async fn rua(
        &self,
        out: &Outbound,
        domain: &str,
    ) -> Result<Vec<Rua>, crate::net::dns::DnsError> {
        let records = out
            .resolver()
            .records(&format!("_smtp._tls.{domain}"), crate::net::dns::Query::Txt)
            .await?;
        // §3: records that do not start with v=TLSRPTv1 are discarded; not exactly
        // one left: no TLSRPT
        let ours: Vec<&String> = records
            .iter()
            .filter(|r| r.starts_with("v=TLSRPTv1"))
            .collect();
        Ok(match ours.as_slice() {
            [one] => parse_record(one).unwrap_or_else(|e| {
                info!(%domain, error = %e, "TLSRPT record not used");
                Vec::new()
            }),
            _ => Vec::new(),
        })
    }

    async fn enqueue(
        &self,
        sender: &Sender,
        to: &[String],
        body: Vec<u8>,
    ) -> std::io::Result<crate::queue::QueueId> {
        // ours (`external` false): signed as our own mail (RFC 8460 §5.3 asks for a
        // DKIM signature)
        let envelope = Envelope {
            sender: sender.from.clone(),
            recipients: to.to_vec(),
            listener: LISTENER.into(),
            helo: self.hostname.clone(),
            external: false,
            ..Envelope::default()
        };
        let id = self.spool.new_id();
        let mut record = MessageRecord::new(id, now_secs().saturating_mul(1000), &envelope);
        record.body_mut().extend_from_slice(&body);
        let id = self
            .spool
            .commit(record)
            .await
            .map_err(std::io::Error::other)?;
        self.handle.queued(id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Failure;
    use super::*;

    #[test]
    fn a_report_names_its_policies_counts_and_failures() {
        let mut policies = BTreeMap::new();
        let sts = ReportPolicy {
            kind: PolicyType::Sts,
            strings: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx_host: vec!["mx.a.test".into()],
        };
        let mut c = Counts {
            success: 3,
            failure: 2,
            ..Counts::default()
        };
        c.details.insert(
            Failure {
                result: ResultType::ValidationFailure,
                sending_ip: Some("127.0.0.1".parse().unwrap()),
                mx: "mx2.a.test".into(),
                receiving_ip: Some("127.0.0.2".parse().unwrap()),
            },
            (2, Some("mta-sts: mx mx2.a.test not in policy".into())),
        );
        policies.insert(sts, c);
        let sender = Sender {
            from: "tlsrpt@sender.test".into(),
            organization: "Sender Inc.".into(),
            contact: "postmaster@sender.test".into(),
            submitter: "sender.test".into(),
        };
        let r = build("a.test", &policies, 0, 86400, &sender);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["date-range"]["end-datetime"], "1970-01-02T00:00:00Z");
        assert_eq!(json["report-id"], "0.86400.a.test@sender.test");
        let p = &json["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "a.test");
        assert_eq!(p["summary"]["total-successful-session-count"], 3);
        assert_eq!(p["summary"]["total-failure-session-count"], 2);
        let f = &p["failure-details"][0];
        assert_eq!(f["result-type"], "validation-failure");
        assert_eq!(f["receiving-ip"], "127.0.0.2");
        assert_eq!(f["failed-session-count"], 2);

        let mail = message(&r, "a.test", 0, 86400, &sender, &["rua@a.test".into()]).unwrap();
        let text = String::from_utf8_lossy(&mail).replace("\r\n ", " ");
        assert!(
            text.contains("Subject: Report Domain: a.test Submitter: sender.test Report-ID: <0.86400.a.test@sender.test>"),
            "{text}"
        );
        assert!(text.contains("TLS-Report-Domain: a.test\r\n"), "{text}");
        assert!(
            text.contains("TLS-Report-Submitter: sender.test\r\n"),
            "{text}"
        );
        assert!(text.contains("report-type=\"tlsrpt\""), "{text}");
        assert!(text.contains("application/tlsrpt+gzip"), "{text}");
        assert!(
            text.contains("sender.test!a.test!0!86400.json.gz"),
            "{text}"
        );
    }
}
