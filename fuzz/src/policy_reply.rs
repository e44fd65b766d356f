//! A policy server's reply (src/policy/services/protocol.rs): `parse_reply` on the
//! bytes as they arrive, then the action read as an access(5) action
//! (`Access::parse`) and applied at every stage (`services::effect_of`), as
//! `check-policy-service` does with a server's answer. Properties: a complete reply
//! took no more than `MAX_REPLY` bytes and parses the same alone; every refusal is a
//! 4xx/5xx reply of printable text; an action mtad does not apply never accepts.

use mtad::config::services::Access;
use mtad::policy::services::protocol::{MAX_REPLY, parse_reply};
use mtad::policy::services::{Effect, effect_of};
use mtad::policy::{Context, Stage, Verdict};

pub fn run(data: &[u8]) {
    let parsed = parse_reply(data);
    if let Ok(Some((action, used))) = &parsed {
        assert!(*used <= data.len() && *used <= MAX_REPLY, "used {used}");
        assert_eq!(parse_reply(&data[..*used]), parsed, "the reply alone");
        check_action(action);
    }
    check_action(&String::from_utf8_lossy(data));
}

fn check_action(action: &str) {
    let access = Access::parse(action);
    let ctx = Context {
        helo: Some("helo.test"),
        sender: Some("a@b.test"),
        rcpt: Some("c@d.test"),
        ..Context::new("192.0.2.1".parse().expect("ip"), "mx")
    };
    for stage in Stage::ALL {
        let (effect, _) = effect_of(action, stage, &ctx);
        let reply = match &effect {
            Effect::Decide(Verdict::Reject(r) | Verdict::Defer(r))
            | Effect::DeferIfPermit(r)
            | Effect::DeferIfReject(r) => Some(r),
            _ => None,
        };
        if let Some(r) = reply {
            assert!((400..600).contains(&r.code), "{r:?}");
            assert_eq!(r.enhanced[0] as u16, r.code / 100, "{r:?}");
            assert!(r.text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{r:?}");
        }
        if matches!(access, Access::Unsupported(_)) {
            assert!(
                matches!(effect, Effect::Decide(Verdict::Defer(_))),
                "{action:?} at {stage}: {effect:?}"
            );
        }
        if matches!(effect, Effect::Decide(Verdict::Accept)) {
            assert_eq!(access, Access::Ok, "{action:?}");
        }
    }
}
