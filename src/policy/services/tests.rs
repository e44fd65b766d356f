use super::*;
use crate::policy::Verdict;

fn rcpt_ctx() -> Context<'static> {
    Context {
        helo: Some("mx.client.test"),
        sender: Some("a@client.test"),
        rcpt: Some("user@test.local"),
        instance: Some("1.2.3.4"),
        protocol: Some("ESMTP"),
        ..Context::new("192.0.2.10".parse().unwrap(), "mx")
    }
}

#[test]
fn refusals_carry_postfix_prefix_per_stage() {
    let ctx = rcpt_ctx();
    let (effect, error) = effect_of("550 5.7.23 SPF fail", Stage::Rcpt, &ctx);
    assert_eq!(error, None);
    assert_eq!(
        effect,
        Effect::Decide(Verdict::Reject(Reply::new(
            550,
            [5, 7, 23],
            "<user@test.local>: Recipient address rejected: SPF fail"
        )))
    );
    let (effect, _) = effect_of("DEFER_IF_PERMIT Greylisted", Stage::Rcpt, &ctx);
    assert_eq!(
        effect,
        Effect::DeferIfPermit(Reply::new(
            450,
            [4, 7, 1],
            "<user@test.local>: Recipient address rejected: Greylisted"
        ))
    );
    let (effect, _) = effect_of("REJECT", Stage::Mail, &ctx);
    assert_eq!(
        effect,
        Effect::Decide(Verdict::Reject(Reply::new(
            554,
            [5, 7, 1],
            "<a@client.test>: Sender address rejected: Access denied"
        )))
    );
    let (effect, _) = effect_of("DEFER try later", Stage::Connect, &ctx);
    assert_eq!(
        effect,
        Effect::Decide(Verdict::Defer(Reply::new(
            450,
            [4, 7, 1],
            "<unknown[192.0.2.10]>: Client host rejected: try later"
        )))
    );
}

#[test]
fn other_actions() {
    let ctx = rcpt_ctx();
    let e = |a: &str, s: Stage| effect_of(a, s, &ctx);
    assert_eq!(
        e("OK", Stage::Rcpt),
        (Effect::Decide(Verdict::Accept), None)
    );
    assert_eq!(e("dunno", Stage::Rcpt), (Effect::Next, None));
    assert_eq!(e("INFO hello", Stage::Rcpt), (Effect::Next, None));
    assert_eq!(e("HOLD", Stage::Rcpt), (Effect::Hold, None));
    assert_eq!(
        e("DISCARD x", Stage::Rcpt),
        (Effect::Decide(Verdict::Discard), None)
    );
    assert_eq!(
        e("PREPEND X-Greylist: delayed", Stage::Rcpt),
        (Effect::Prepend("X-Greylist: delayed".into()), None)
    );
    // no message yet at connect: ignored, as Postfix does
    assert!(matches!(
        e("PREPEND X-A: b", Stage::Connect),
        (Effect::Next, Some(_))
    ));
    // what mtad does not apply refuses for now, never passes
    for bad in ["REDIRECT a@b", "FILTER smtp:x:1", "nonsense", "", "permit"] {
        let (effect, error) = e(bad, Stage::Rcpt);
        assert_eq!(
            effect,
            Effect::Decide(Verdict::Defer(server_error())),
            "{bad:?}"
        );
        assert!(error.is_some(), "{bad:?}");
    }
}

#[test]
fn attributes_are_postfix_names() {
    let ctx = rcpt_ctx();
    let text = String::from_utf8(protocol::encode(&attributes(Stage::Rcpt, &ctx, ""))).unwrap();
    for line in [
        "request=smtpd_access_policy\n",
        "protocol_state=RCPT\n",
        "protocol_name=ESMTP\n",
        "client_address=192.0.2.10\n",
        "helo_name=mx.client.test\n",
        "sender=a@client.test\n",
        "recipient=user@test.local\n",
        "recipient_count=0\n",
        "instance=1.2.3.4\n",
        "sasl_username=\n",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    assert!(text.ends_with("\n\n"));
}

#[test]
fn instances_differ() {
    let (a, b) = (new_instance(), new_instance());
    assert_ne!(a, b);
    assert_eq!(a.split('.').count(), 4);
}

#[test]
fn prepended_headers_are_one_line() {
    assert_eq!(header_line("X-A: b\rc\n"), "X-A: b c \r\n");
    assert!(header_line(&"x".repeat(5000)).len() <= 1000);
}
