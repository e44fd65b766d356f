//! Rhai hooks: a random hook source compiled as a configuration's `hook` is compiled
//! (`ScriptHost::compile_str` with the default limits and the policy's set and table
//! names, as `Pipeline::build` does for `mtactl check` and the daemon), then called
//! with a random envelope under the normal limits. A hook error is a fine outcome (the
//! session answers 451); a panic, a hang (afl's `-t`) or unbounded memory is not.
//!
//! Input: one byte for the stage (and TLS, AUTH), the hook source, NUL, then the
//! envelope as NUL-separated fields: HELO, sender, recipient, other recipients (one a
//! line), the header block (`Name: value` lines), the body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use mtad::lookup::{LookupError, NetworkSet, Table, parse_map};
use mtad::policy::Stage;
use mtad::policy::script::{HookInput, KnownNames, Lookups, ScriptHost, ScriptLimits};

use crate::Bytes;

/// One network set and one table, as a policy's would be.
struct FuzzLookups {
    trusted: NetworkSet,
    table: Table,
}

impl Lookups for FuzzLookups {
    fn in_set(&self, name: &str, value: &str) -> Option<Result<bool, LookupError>> {
        match name {
            "trusted" => Some(Ok(value
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.trusted.contains(ip)))),
            "senders" => Some(self.table.lookup(value).map(|v| v.is_some())),
            _ => None,
        }
    }

    fn table(&self, name: &str, key: &str) -> Option<Result<Option<String>, LookupError>> {
        (name == "senders").then(|| {
            self.table
                .lookup(key)
                .map(|v| v.map(std::borrow::Cow::into_owned))
        })
    }
}

struct Fixed {
    host: ScriptHost,
    known: KnownNames,
    lookups: Arc<dyn Lookups>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        host: ScriptHost::new(ScriptLimits::default()),
        known: KnownNames::new(["trusted"], ["senders"]),
        lookups: Arc::new(FuzzLookups {
            trusted: NetworkSet::new(vec!["127.0.0.0/8".parse().expect("net")]),
            table: parse_map("spam@example.org REJECT\nexample.net OK\n").expect("table"),
        }),
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let flags = b.u8();
    let stage = Stage::ALL[usize::from(flags) % Stage::COUNT];
    let source = text(b.field());
    let helo = text(b.field());
    let sender = text(b.field());
    let rcpt = text(b.field());
    let mut recipients: Vec<String> = text(b.field()).lines().map(str::to_owned).collect();
    if !rcpt.is_empty() {
        recipients.push(rcpt.clone());
    }
    // the message as the data stage has it: a header block, parsed as the daemon
    // parses it, then the body
    let mut message = b.field().to_vec();
    message.extend_from_slice(b"\r\n");
    message.extend_from_slice(b.rest());
    let (headers, body_start) = mtad::message::parse_headers(&message);
    let body = message.get(body_start..).unwrap_or_default();

    let f = fixed();
    let hook = match f
        .host
        .compile_str(&source, "fuzz.rhai", None, stage, &f.known)
    {
        Ok(hook) => hook,
        Err(errors) => {
            for e in errors {
                let _ = e.to_string();
            }
            return;
        }
    };
    let client_ip = if flags & 0x40 != 0 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(flags),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, flags))
    };
    let mut input = HookInput::new(stage, client_ip, 40_000 + u16::from(flags), "mx");
    input.helo = Some(&helo);
    input.tls = (flags & 0x80 != 0).then_some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384"));
    input.auth_user = (flags & 0x20 != 0).then_some("alice");
    input.sender = Some(&sender);
    input.rcpt = (!rcpt.is_empty()).then_some(rcpt.as_str());
    input.recipients = &recipients;
    input.size = Some(body.len() as u64);
    input.headers = &headers;
    input.body = Some(body);
    input.message = Some(&message);
    match hook.call(&f.host, &input, &f.lookups) {
        Ok(out) => {
            let _ = format!("{:?}", out.decision);
            let _ = out.header_changes.len();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
