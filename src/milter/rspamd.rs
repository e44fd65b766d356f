//! rspamd's own HTTP protocol (`POST /checkv2` to its normal worker), as an alternative
//! to its milter proxy: one request per message, the envelope and the client as
//! request headers, the message as the body; the JSON reply read strictly and turned
//! into what a milter would have answered (a [`Verdict`] and header changes), so that
//! the session applies it on the one path every filter's answer takes
//! (`smtp::milter`).
//!
//! The translation follows what rspamd's proxy does in milter mode with the same
//! answer (rspamd's `milter.c`), so switching between the two changes nothing a client
//! or a rule can see: `reject` → `554 5.7.1` with rspamd's `smtp_message`,
//! `soft reject` and `greylist` → `451 4.7.1`, `add header` → its spam header
//! (`X-Spam: Yes`), `rewrite subject` → the subject it gives, `discard`, `quarantine`
//! (→ held), and `milter.add_headers` / `milter.remove_headers` as header changes.
//! mtad adds one header of its own, the score (`X-Rspamd-Score` by default, any copy
//! the client sent removed first), so rules and hooks can read it whatever rspamd's
//! `milter_headers` module is set to add.
//!
//! Every reply is hostile input: its size is bounded before it is read, the JSON is
//! typed (a field of the wrong type is an error), the counts of headers are bounded,
//! header names, values and reply texts are checked as a milter's are. Any error is a
//! [`MilterError`]: the filter has failed, and its `on-failure` action applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Deserialize;
use tokio::time::{Instant, timeout_at};

use super::client::{MAX_CHANGES, MilterError, Verdict};
use super::codec::{Reply, header_name, header_value};
use super::{Address, Milter};

/// The settings of an rspamd filter over HTTP (`rspamd "NAME" "http://..."`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The request path (`/checkv2`).
    pub path: String,
    /// The header the `add header` action sets to `Yes` (rspamd proxy's
    /// `spam_header`, `X-Spam` by default).
    pub spam_header: String,
    /// The header mtad writes the score into (`None`: none written).
    pub score_header: Option<String>,
    /// The largest reply read (bytes); a longer one fails the filter.
    pub max_reply: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            path: "/checkv2".to_owned(),
            spam_header: "X-Spam".to_owned(),
            score_header: Some("X-Rspamd-Score".to_owned()),
            max_reply: 1 << 20,
        }
    }
}

/// An `http://host:port[/path]` URL (no TLS: rspamd's worker listens on loopback or a
/// private network, as its docs set it up).
pub fn parse_url(s: &str) -> Result<(Address, String), super::InvalidAddress> {
    let bad = |why: &str| super::InvalidAddress(format!("`{s}`: {why} (http://127.0.0.1:11333)"));
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| bad("rspamd's worker is at an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("not a port"))?,
        None => 11333,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic() || b == b'@') {
        return Err(bad("no host"));
    }
    let path = if path.is_empty() || path == "/" {
        "/checkv2"
    } else {
        path
    };
    if path
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
    {
        return Err(bad("not a path"));
    }
    Ok((
        Address::Http {
            host: host.to_owned(),
            port,
        },
        path.to_owned(),
    ))
}

/// What rspamd is told about a message besides its text (the request headers of its
/// protocol).
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    pub queue_id: &'a str,
    /// The client's address (`None`: a local submission).
    pub ip: Option<IpAddr>,
    pub helo: Option<&'a str>,
    /// The client's host name as the milters get it (`{client_name}`).
    pub hostname: Option<&'a str>,
    /// The SASL login.
    pub user: Option<&'a str>,
    pub from: &'a str,
    pub rcpts: &'a [String],
    /// Our host name.
    pub mta_name: &'a str,
    /// The listener's name (rspamd's `MTA-Tag`, which its settings can select on).
    pub mta_tag: &'a str,
    pub tls_version: Option<&'a str>,
    pub tls_cipher: Option<&'a str>,
}

impl Request<'_> {
    /// The request headers, in order (also what a dry run shows).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("Queue-Id", self.queue_id.to_owned())];
        if let Some(ip) = self.ip {
            h.push(("IP", ip.to_string()));
        }
        if let Some(helo) = self.helo {
            h.push(("Helo", helo.to_owned()));
        }
        if let Some(name) = self.hostname {
            h.push(("Hostname", name.to_owned()));
        }
        if let Some(user) = self.user {
            h.push(("User", user.to_owned()));
        }
        h.push(("From", format!("<{}>", self.from)));
        for r in self.rcpts {
            h.push(("Rcpt", format!("<{r}>")));
        }
        h.push(("MTA-Name", self.mta_name.to_owned()));
        h.push(("MTA-Tag", self.mta_tag.to_owned()));
        if let Some(v) = self.tls_version {
            h.push(("TLS-Version", v.to_owned()));
        }
        if let Some(c) = self.tls_cipher {
            h.push(("TLS-Cipher", c.to_owned()));
        }
        // what the client sent is checked by hyper too; a value it would refuse
        // (a control character) is made harmless here so the request still goes
        h.into_iter()
            .map(|(k, v)| {
                let v: String = v
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                (k, v)
            })
            .collect()
    }
}

/// rspamd's answer to a message: its verdict and its changes, as a milter's, and the
/// figures for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub changes: Vec<Reply>,
    pub action: Action,
    pub score: f64,
    pub required: f64,
}

/// rspamd's actions (its `actions {}` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
    Discard,
    Quarantine,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no action" => Action::NoAction,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "soft reject" => Action::SoftReject,
            "reject" => Action::Reject,
            "discard" => Action::Discard,
            "quarantine" => Action::Quarantine,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::NoAction => "no action",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::SoftReject => "soft reject",
            Action::Reject => "reject",
            Action::Discard => "discard",
            Action::Quarantine => "quarantine",
        }
    }
}

/// A reply that is not one rspamd's protocol allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
    #[error("not the JSON of a scan result: {0}")]
    Json(String),
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    #[error("score is not a finite number")]
    Score,
    #[error("bad header in the reply: {0}")]
    Header(String),
    #[error("more than {MAX_CHANGES} header changes")]
    TooManyChanges,
}

/// The reply's fields mtad reads; the others (symbols, timings, URLs...) are
/// skipped by serde unparsed beyond their JSON syntax.
#[derive(Deserialize)]
struct Wire {
    action: String,
    score: f64,
    required_score: f64,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    messages: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    milter: Option<MilterBlock>,
    #[serde(default, rename = "dkim-signature")]
    dkim_signature: Option<OneOrMany<String>>,
}

#[derive(Deserialize)]
struct MilterBlock {
    #[serde(default)]
    add_headers: BTreeMap<String, OneOrMany<HeaderValue>>,
    #[serde(default)]
    remove_headers: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValue {
    Plain(String),
    Ordered {
        value: String,
        #[serde(default)]
        order: Option<i64>,
    },
}

/// A reply text rspamd gives (`smtp_message`): printable ASCII on one line, at most
/// 400 characters; anything else is replaced, so rspamd's words reach the client but
/// nothing of them can break the reply.
fn reply_text(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
        .take(400)
        .collect();
    t.trim().to_owned()
}

/// The change that deletes the `index`-th header `name` (a milter's change to an
/// empty value).
fn deletion(name: &str, index: u32) -> Reply {
    Reply::ChangeHeader {
        index,
        name: name.to_owned(),
        value: String::new(),
    }
}

/// Reads a `/checkv2` reply body and makes it a milter's answer. `headers`: the
/// message's headers as rspamd saw them (for `remove_headers`' indexes and the score
/// header's old copies).
pub fn parse_reply(
    body: &[u8],
    settings: &Settings,
    headers: &[(String, String)],
) -> Result<Outcome, ReplyError> {
    if body.len() > settings.max_reply {
        return Err(ReplyError::TooLong(settings.max_reply));
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| ReplyError::Json(e.to_string()))?;
    let action = Action::parse(&wire.action)
        .ok_or_else(|| ReplyError::UnknownAction(reply_text(&wire.action)))?;
    if !wire.score.is_finite() || !wire.required_score.is_finite() {
        return Err(ReplyError::Score);
    }
    let message = match wire.messages.get("smtp_message") {
        Some(serde_json::Value::String(s)) => Some(reply_text(s)).filter(|s| !s.is_empty()),
        _ => None,
    };
    let bad = |e: super::codec::ProtocolError| ReplyError::Header(e.to_string());
    let count = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    let mut changes = Vec::new();
    let push = |changes: &mut Vec<Reply>, r: Reply| {
        if changes.len() >= MAX_CHANGES {
            return Err(ReplyError::TooManyChanges);
        }
        changes.push(r);
        Ok(())
    };
    // removals first, by the indexes of the message as sent (rspamd's milter.c: n ≥ 1
    // the n-th, 0 every one, -n the n-th from the end)
    let milter = wire.milter;
    if let Some(m) = &milter {
        for (name, &n) in &m.remove_headers {
            let name = header_name(b'h', name.clone()).map_err(bad)?;
            let have = count(&name) as i64;
            let indexes: Vec<i64> = match n {
                0 => (1..=have).rev().collect(),
                n if n > 0 => vec![n],
                n if -n <= have => vec![have + n + 1],
                _ => vec![],
            };
            for index in indexes {
                let index = u32::try_from(index).map_err(|_| ReplyError::TooManyChanges)?;
                push(&mut changes, deletion(&name, index))?;
            }
        }
    }
    if let Some(m) = milter {
        for (name, values) in m.add_headers {
            let name = header_name(b'h', name).map_err(bad)?;
            for v in values.into_vec() {
                let (value, order) = match v {
                    HeaderValue::Plain(value) => (value, None),
                    HeaderValue::Ordered { value, order } => (value, order),
                };
                let value = header_value(b'h', value).map_err(bad)?;
                let r = match order.and_then(|o| u32::try_from(o).ok()) {
                    Some(index) => Reply::InsertHeader {
                        index,
                        name: name.clone(),
                        value,
                    },
                    None => Reply::AddHeader {
                        name: name.clone(),
                        value,
                    },
                };
                push(&mut changes, r)?;
            }
        }
    }
    for sig in wire
        .dkim_signature
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
    {
        let value = header_value(b'h', sig).map_err(bad)?;
        push(
            &mut changes,
            Reply::InsertHeader {
                index: 0,
                name: "DKIM-Signature".to_owned(),
                value,
            },
        )?;
    }
    if let Some(name) = &settings.score_header {
        for index in (1..=count(name) as u32).rev() {
            push(&mut changes, deletion(name, index))?;
        }
        push(
            &mut changes,
            Reply::AddHeader {
                name: name.clone(),
                value: format!(
                    "{:.2} / {:.2}, action={}",
                    wire.score,
                    wire.required_score,
                    action.name()
                ),
            },
        )?;
    }
    let tempfail = || {
        Verdict::Reply(format!(
            "451 4.7.1 {}",
            message.as_deref().unwrap_or("Try again later")
        ))
    };
    let verdict = match action {
        Action::NoAction => Verdict::Continue,
        Action::AddHeader => {
            push(
                &mut changes,
                Reply::ChangeHeader {
                    index: 1,
                    name: settings.spam_header.clone(),
                    value: "Yes".to_owned(),
                },
            )?;
            Verdict::Continue
        }
        Action::RewriteSubject => {
            let change = match wire.subject {
                Some(s) => Reply::ChangeHeader {
                    index: 1,
                    name: "Subject".to_owned(),
                    value: header_value(b'h', s).map_err(bad)?,
                },
                // no subject given: marked as `add header` would be
                None => Reply::ChangeHeader {
                    index: 1,
                    name: settings.spam_header.clone(),
                    value: "Yes".to_owned(),
                },
            };
            push(&mut changes, change)?;
            Verdict::Continue
        }
        Action::Greylist | Action::SoftReject => tempfail(),
        Action::Reject => Verdict::Reply(format!(
            "554 5.7.1 {}",
            message.as_deref().unwrap_or("Spam message rejected")
        )),
        Action::Discard => Verdict::Discard,
        Action::Quarantine => {
            push(
                &mut changes,
                Reply::Quarantine(message.unwrap_or_else(|| "rspamd: quarantine".to_owned())),
            )?;
            Verdict::Continue
        }
    };
    Ok(Outcome {
        verdict,
        changes,
        action,
        score: wire.score,
        required: wire.required_score,
    })
}

/// Asks rspamd about one message: the connect timeout for the TCP connection, the
/// content timeout for the rest (sending, scanning, the reply), the reply bounded by
/// `max_reply`.
pub async fn check(
    spec: &Milter,
    settings: &Settings,
    request: &Request<'_>,
    headers: &[(String, String)],
    message: Vec<u8>,
) -> Result<Outcome, MilterError> {
    let Address::Http { host, port } = &spec.address else {
        return Err(MilterError::Unexpected("not an HTTP filter".into()));
    };
    let connect = spec.connect_timeout;
    let tcp = timeout_at(
        Instant::now() + connect,
        tokio::net::TcpStream::connect((host.as_str(), *port)),
    )
    .await
    .map_err(|_| MilterError::Timeout(connect, "connect"))?
    .map_err(MilterError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let content = spec.content_timeout;
    let deadline = Instant::now() + content;
    let work = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(http)?;
        let driver = tokio::spawn(conn);
        let host_header = match spec.address.to_string().strip_prefix("http://") {
            Some(h) => h.to_owned(),
            None => host.clone(),
        };
        let mut builder = hyper::Request::post(settings.path.as_str())
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::USER_AGENT, "mtad")
            .header(hyper::header::CONTENT_LENGTH, message.len());
        for (k, v) in request.headers() {
            builder = builder.header(k, v);
        }
        let req = builder
            .body(Full::new(Bytes::from(message)))
            .map_err(http)?;
        let response = sender.send_request(req).await.map_err(http)?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            driver.abort();
            return Err(MilterError::Rspamd(ReplyError::Status(status.as_u16())));
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > settings.max_reply as u64) {
            driver.abort();
            return Err(MilterError::Rspamd(ReplyError::TooLong(settings.max_reply)));
        }
        let body = Limited::new(response.into_body(), settings.max_reply)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    MilterError::Rspamd(ReplyError::TooLong(settings.max_reply))
                } else {
                    MilterError::Unexpected(format!("HTTP: {e}"))
                }
            })?
            .to_bytes();
        driver.abort();
        Ok(parse_reply(&body, settings, headers)?)
    };
    timeout_at(deadline, work)
        .await
        .map_err(|_| MilterError::Timeout(content, "rspamd's reply"))?
}

fn http(e: impl std::fmt::Display) -> MilterError {
    MilterError::Unexpected(format!("HTTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, headers: &[(&str, &str)]) -> Result<Outcome, ReplyError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        parse_reply(json.as_bytes(), &Settings::default(), &headers)
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:11333"),
            Ok((
                Address::Http {
                    host: "127.0.0.1".into(),
                    port: 11333
                },
                "/checkv2".into()
            ))
        );
        assert_eq!(
            parse_url("http://[::1]:8080/checkv2").map(|(a, p)| (a.to_string(), p)),
            Ok(("http://[::1]:8080".into(), "/checkv2".into()))
        );
        assert_eq!(
            parse_url("http://rspamd").map(|(a, _)| a.to_string()),
            Ok("http://rspamd:11333".into())
        );
        for bad in [
            "https://h:1",
            "inet:h:1",
            "http://:11333",
            "http://h:0",
            "http://h:x",
            "http://h/a b",
            "http://u@h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gtube_is_rejected_with_rspamds_message() {
        let o = parse(
            r#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"score":0}},"messages":{"smtp_message":"Gtube pattern"}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(o.verdict, Verdict::Reply("554 5.7.1 Gtube pattern".into()));
        assert_eq!(o.action, Action::Reject);
        let o = parse(r#"{"score":20,"required_score":15,"action":"reject"}"#, &[]).unwrap();
        assert_eq!(
            o.verdict,
            Verdict::Reply("554 5.7.1 Spam message rejected".into())
        );
    }

    #[test]
    fn actions() {
        let v = |a: &str| {
            parse(
                &format!(
                    r#"{{"score":1,"required_score":15,"action":"{a}","subject":"[SPAM] hi"}}"#
                ),
                &[],
            )
            .unwrap()
        };
        assert_eq!(v("no action").verdict, Verdict::Continue);
        assert_eq!(
            v("soft reject").verdict,
            Verdict::Reply("451 4.7.1 Try again later".into())
        );
        assert_eq!(
            v("greylist").verdict,
            Verdict::Reply("451 4.7.1 Try again later".into())
        );
        assert_eq!(v("discard").verdict, Verdict::Discard);
        let add = v("add header");
        assert!(add.changes.contains(&Reply::ChangeHeader {
            index: 1,
            name: "X-Spam".into(),
            value: "Yes".into()
        }));
        let rw = v("rewrite subject");
        assert!(rw.changes.contains(&Reply::ChangeHeader {
            index: 1,
            name: "Subject".into(),
            value: "[SPAM] hi".into()
        }));
        assert!(
            v("quarantine")
                .changes
                .iter()
                .any(|c| matches!(c, Reply::Quarantine(_)))
        );
        assert_eq!(
            parse(r#"{"score":1,"required_score":15,"action":"accept"}"#, &[]),
            Err(ReplyError::UnknownAction("accept".into()))
        );
    }

    #[test]
    fn the_score_header_replaces_the_clients() {
        let o = parse(
            r#"{"score":-0.1,"required_score":15,"action":"no action"}"#,
            &[("X-Rspamd-Score", "-100"), ("x-rspamd-score", "-50")],
        )
        .unwrap();
        assert_eq!(
            o.changes,
            vec![
                Reply::ChangeHeader {
                    index: 2,
                    name: "X-Rspamd-Score".into(),
                    value: String::new()
                },
                Reply::ChangeHeader {
                    index: 1,
                    name: "X-Rspamd-Score".into(),
                    value: String::new()
                },
                Reply::AddHeader {
                    name: "X-Rspamd-Score".into(),
                    value: "-0.10 / 15.00, action=no action".into()
                },
            ]
        );
    }

    #[test]
    fn milter_block() {
        let o = parse(
            r#"{"score":1,"required_score":15,"action":"no action","milter":{
                "add_headers":{"X-Spamd-Result":{"value":"default: False [1.00 / 15.00];\n\tMIME_GOOD(-0.10)","order":0},
                               "X-Rspamd-Server":"vm",
                               "X-Multi":[{"value":"a"},{"value":"b","order":2}]},
                "remove_headers":{"X-Spam":0,"X-Other":-1,"X-Third":2}}}"#,
            &[("X-Spam", "a"), ("X-Spam", "b"), ("X-Other", "1"), ("X-Other", "2")],
        )
        .unwrap();
        let ch = |index, name: &str| Reply::ChangeHeader {
            index,
            name: name.into(),
            value: String::new(),
        };
        assert_eq!(
            &o.changes[..4],
            &[
                ch(2, "X-Other"),
                ch(2, "X-Spam"),
                ch(1, "X-Spam"),
                ch(2, "X-Third")
            ]
        );
        assert!(o.changes.contains(&Reply::InsertHeader {
            index: 0,
            name: "X-Spamd-Result".into(),
            value: "default: False [1.00 / 15.00];\n\tMIME_GOOD(-0.10)".into()
        }));
        assert!(o.changes.contains(&Reply::AddHeader {
            name: "X-Rspamd-Server".into(),
            value: "vm".into()
        }));
        assert!(o.changes.contains(&Reply::InsertHeader {
            index: 2,
            name: "X-Multi".into(),
            value: "b".into()
        }));
    }

    #[test]
    fn hostile_replies_fail() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"score":1,"action":"no action"}"#,
            r#"{"score":"1","required_score":15,"action":"no action"}"#,
            r#"{"score":1,"required_score":15,"action":"no action","milter":{"add_headers":{"Bad Name":"x"}}}"#,
            r#"{"score":1,"required_score":15,"action":"no action","milter":{"add_headers":{"X":"a\r\nInjected: yes"}}}"#,
            r#"{"score":1,"required_score":15,"action":"rewrite subject","subject":"a\nb"}"#,
            r#"{"score":1,"required_score":15,"action":"no action","milter":{"remove_headers":{"X":"1"}}}"#,
            r#"{"score":1e999,"required_score":15,"action":"no action"}"#,
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"score":1,"required_score":15,"action":"no action","x":"{}"}}"#,
            "a".repeat(2 << 20)
        );
        assert_eq!(parse(&long, &[]), Err(ReplyError::TooLong(1 << 20)));
    }

    /// The fuzz target's seeds are replies rspamd gives, each read without error.
    #[test]
    fn the_fuzz_seeds_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/rspamd_reply");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let headers = [("X-Spam".to_owned(), "Yes".to_owned())];
            parse_reply(&body, &Settings::default(), &headers)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 8, "{n} seeds");
    }

    #[test]
    fn reply_texts_are_made_safe() {
        let o = parse(
            r#"{"score":20,"required_score":15,"action":"reject","messages":{"smtp_message":"spam\r\n250 ok\u00e9"}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(o.verdict, Verdict::Reply("554 5.7.1 spam  250 ok".into()));
    }
}
